//! Conflict detection for interactive transactions (optimistic, as FoundationDB does it).
//!
//! The pipeline remembers, for a window of recent commits, the newest version that wrote
//! each key. A transaction that read the ranges `R` at version `v` may commit only if no key
//! in `R` was written at a version `> v`. Commits are sequenced one at a time, so a
//! transaction that passes is serializable at its commit version, and since versions follow
//! real time, strictly serializable.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::backend::keys_in;
use crate::error::{EngineError, Result};

pub(crate) struct ConflictTracker {
    newest_write: BTreeMap<Vec<u8>, u64>,
    log: VecDeque<(u64, Instant, Vec<Vec<u8>>)>,
    /// Transactions that read before this version cannot be checked any more.
    oldest_checkable: u64,
    window: Duration,
    tracked_keys: usize,
}

/// Most keys the tracker holds before it forgets the oldest commits early.
const MAX_TRACKED_KEYS: usize = 2_000_000;

impl ConflictTracker {
    pub(crate) fn new(current_version: u64, window: Duration) -> Self {
        ConflictTracker {
            newest_write: BTreeMap::new(),
            log: VecDeque::new(),
            oldest_checkable: current_version,
            window,
            tracked_keys: 0,
        }
    }

    /// Whether a transaction that read `ranges` at `read_version` may commit now.
    pub(crate) fn check(&self, read_version: u64, ranges: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if read_version < self.oldest_checkable {
            return Err(EngineError::TransactionTooOld { read_version });
        }
        for (start, end) in ranges {
            if keys_in(&self.newest_write, start, end).any(|(_, &v)| v > read_version) {
                return Err(EngineError::Conflict);
            }
        }
        Ok(())
    }

    /// Take in the writes of a group that applied.
    pub(crate) fn merge(&mut self, pending: crate::pipeline::PendingWrites) {
        for (version, keys) in pending.into_log() {
            self.record(version, keys);
        }
    }

    /// Refuse every transaction that read before `version` (its conflicts are unknowable).
    pub(crate) fn forget_before(&mut self, version: u64) {
        self.oldest_checkable = self.oldest_checkable.max(version);
    }

    pub(crate) fn record(&mut self, version: u64, keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        for k in &keys {
            self.newest_write.insert(k.clone(), version);
        }
        self.tracked_keys += keys.len();
        self.log.push_back((version, Instant::now(), keys));
        self.prune();
    }

    /// Forget commits no transaction can still be checked against: those at or below
    /// `floor`, the oldest version a transaction of this process may still read at (see
    /// `Shared::read_floor`). With short transactions that keeps the tracker to the commits
    /// of the last few moments, however long the window.
    pub(crate) fn forget_through(&mut self, floor: u64) {
        while self.log.front().is_some_and(|(v, _, _)| *v <= floor) {
            self.pop_oldest();
        }
    }

    fn prune(&mut self) {
        let now = Instant::now();
        while let Some((_, at, _)) = self.log.front() {
            let expired = now.duration_since(*at) > self.window;
            if !expired && self.tracked_keys <= MAX_TRACKED_KEYS {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Forget the oldest commit: transactions that read before it cannot be checked now.
    fn pop_oldest(&mut self) {
        if let Some((version, _, keys)) = self.log.pop_front() {
            self.tracked_keys -= keys.len();
            for k in keys {
                if self.newest_write.get(&k) == Some(&version) {
                    self.newest_write.remove(&k);
                }
            }
            self.oldest_checkable = self.oldest_checkable.max(version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &[u8], b: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (a.to_vec(), b.to_vec())
    }

    #[test]
    fn a_later_write_in_a_read_range_conflicts() {
        let mut t = ConflictTracker::new(0, Duration::from_secs(60));
        t.record(5, vec![b"b".to_vec()]);
        assert!(matches!(
            t.check(4, &[r(b"a", b"c")]),
            Err(EngineError::Conflict)
        ));
        assert!(
            t.check(5, &[r(b"a", b"c")]).is_ok(),
            "the write is part of the snapshot"
        );
        assert!(t.check(4, &[r(b"c", b"d")]).is_ok(), "outside the range");
        assert!(t.check(4, &[r(b"a", b"b")]).is_ok(), "end is exclusive");
    }

    #[test]
    fn commits_at_or_below_the_read_floor_are_forgotten() {
        let mut t = ConflictTracker::new(0, Duration::from_secs(60));
        t.record(5, vec![b"b".to_vec()]);
        t.record(6, vec![b"c".to_vec()]);
        t.record(7, vec![b"b".to_vec()]);
        t.forget_through(6);
        assert_eq!(t.tracked_keys, 1);
        assert!(
            matches!(t.check(5, &[]), Err(EngineError::TransactionTooOld { .. })),
            "a transaction that read before a forgotten commit cannot be checked"
        );
        assert!(
            t.check(6, &[r(b"a", b"z")]).is_err(),
            "the write at 7 is kept"
        );
        assert!(t.check(7, &[r(b"a", b"z")]).is_ok());
    }

    #[test]
    fn forgotten_history_makes_old_transactions_too_old() {
        let mut t = ConflictTracker::new(10, Duration::from_millis(0));
        std::thread::sleep(Duration::from_millis(2));
        t.record(11, vec![b"k".to_vec()]);
        std::thread::sleep(Duration::from_millis(2));
        t.record(12, vec![b"j".to_vec()]);
        assert!(matches!(
            t.check(10, &[]),
            Err(EngineError::TransactionTooOld { .. })
        ));
    }
}
