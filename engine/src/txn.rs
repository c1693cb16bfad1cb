//! Interactive transactions: read at one version, buffer writes, commit optimistically.
//!
//! Reads see the database at the transaction's read version plus the transaction's own
//! writes. Each read records the key range it depended on; commit sends those ranges with
//! the writes to the pipeline, which refuses the commit with [`EngineError::Conflict`] if any
//! of them was written after the read version. A transaction that wrote nothing commits
//! without entering the pipeline and never conflicts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::atomic::{check_expiry, check_key, check_value, Check};
use crate::clock::now_ms;
use crate::database::{Database, ReadGuard};
use crate::error::{EngineError, Result};
use crate::layout::Record;
use crate::mvcc::{self, key_after};
use crate::pipeline::{CommitOp, CommitReply, TxnWrite};
use crate::resolve::not_u64;
use crate::value::{Value, Versionstamp};
use crate::CommitOutcome;

/// What [`Transaction::scan_each`] shows entries to.
pub trait Visitor: Send {
    /// One entry, in key order. Return false to stop the scan after it.
    fn visit(&mut self, key: &[u8], value: crate::ValueRef<'_>) -> bool;

    /// Forget every entry shown so far: the scan starts again from its first key.
    fn restart(&mut self);
}

pub struct Transaction {
    db: Database,
    read_version: u64,
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    writes: BTreeMap<Vec<u8>, TxnWrite>,
    /// Keys required unchanged (or absent) when the commit lands: see [`Transaction::check`].
    checks: Vec<Check>,
    /// Amounts added to keys when the commit lands, unread: see [`Transaction::sum`]. A key
    /// is here or in `writes`, never in both.
    sums: BTreeMap<Vec<u8>, u64>,
    write_bytes: usize,
    /// Writes since the last [`Transaction::savepoint`]: each key with what it had before.
    undo: Option<Undo>,
    started: std::time::Instant,
    /// Keeps the snapshot's history, for the transaction and its [`SnapshotReader`]s.
    guard: Arc<ReadGuard>,
}

/// What a savepoint needs to put the buffered writes back.
#[derive(Default)]
struct Undo {
    write_bytes: usize,
    checks: usize,
    previous: Vec<(Vec<u8>, Option<TxnWrite>)>,
    previous_sums: Vec<(Vec<u8>, Option<u64>)>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("database", &self.db.name())
            .field("read_version", &self.read_version)
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// A read version that history no longer covers is the transaction's age, not the caller's
/// request: retrying from `begin` works, so say so.
fn too_old(e: EngineError, read_version: u64) -> EngineError {
    match e {
        EngineError::VersionTooOld { .. } => EngineError::TransactionTooOld { read_version },
        other => other,
    }
}

/// A transaction's snapshot, readable apart from the transaction (see
/// [`Transaction::snapshot_reader`]). It keeps the snapshot's history while it lives.
#[derive(Clone)]
pub struct SnapshotReader {
    db: Database,
    version: u64,
    _guard: Arc<ReadGuard>,
}

impl SnapshotReader {
    /// [`Transaction::scan_each`] at the snapshot, without the transaction's own writes and
    /// without recording the read: the caller records it with [`Transaction::note_read`].
    pub async fn scan_each(
        &self,
        start: &[u8],
        end: &[u8],
        visitor: &mut dyn Visitor,
    ) -> Result<Option<Vec<u8>>> {
        let shared = &self.db.shared;
        let v = self.version;
        loop {
            let precise = shared.needs_precise(v);
            let resume = mvcc::scan_each(
                &*shared.store,
                &shared.name,
                start,
                end,
                v,
                precise,
                now_ms(),
                visitor,
            )
            .await
            .map_err(|e| too_old(e, v))?;
            if precise {
                return Ok(resume);
            }
            shared.refresh().await?;
            if !shared.needs_precise(v) {
                return Ok(resume);
            }
            visitor.restart();
        }
    }

    /// The value of `key` at the snapshot with the versionstamp of the commit that wrote
    /// it, without the transaction's own writes and without recording the read: for what a
    /// caller needs to know about the snapshot but does not answer from (which cached copy
    /// of the snapshot's data it may use, say).
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<(Value, Versionstamp)>> {
        check_key(&self.db.shared.options.limits, key, false)?;
        let rec = record_at(&self.db, self.version, key).await?;
        Ok(rec.map(|r| (r.value, r.versionstamp)))
    }
}

/// The live record of `key` in `db` at version `v` (a transaction's snapshot).
async fn record_at(db: &Database, v: u64, key: &[u8]) -> Result<Option<Record>> {
    let shared = db.shared.clone();
    let (_, rec) = db
        .read_at(v, |v, precise| {
            let shared = shared.clone();
            async move { mvcc::get(&*shared.store, &shared.name, key, v, precise, now_ms()).await }
        })
        .await
        .map_err(|e| too_old(e, v))?;
    Ok(rec)
}

impl Transaction {
    pub(crate) fn new(db: Database, read_version: u64, guard: ReadGuard) -> Self {
        Transaction {
            db,
            read_version,
            reads: Vec::new(),
            writes: BTreeMap::new(),
            checks: Vec::new(),
            sums: BTreeMap::new(),
            write_bytes: 0,
            undo: None,
            started: std::time::Instant::now(),
            guard: Arc::new(guard),
        }
    }

    /// A transaction older than half the conflict window may outlive the history other
    /// processes keep for it: check that its version is still readable.
    async fn still_readable(&self) -> Result<()> {
        let window =
            std::time::Duration::from_millis(self.db.shared.config.transaction_window_ms / 2);
        if self.started.elapsed() > window {
            self.db
                .shared
                .check_horizon(self.read_version)
                .await
                .map_err(|e| self.retryable(e))?;
        }
        Ok(())
    }

    /// See [`too_old`].
    fn retryable(&self, e: EngineError) -> EngineError {
        too_old(e, self.read_version)
    }

    /// A buffered write as this transaction's own reads see it: gone once its expiry passed.
    fn own_value(write: &TxnWrite, now: u64) -> Option<&Value> {
        match write {
            Some((v, expires_at)) if expires_at.is_none_or(|t| t > now) => Some(v),
            _ => None,
        }
    }

    pub fn read_version(&self) -> u64 {
        self.read_version
    }

    /// The value of `key` as this transaction sees it, with the versionstamp of the commit
    /// that wrote it (`None` for a value this transaction wrote itself).
    pub async fn get_versioned(
        &mut self,
        key: &[u8],
    ) -> Result<Option<(Value, Option<Versionstamp>)>> {
        check_key(&self.db.shared.options.limits, key, false)?;
        if self.sums.contains_key(key) {
            self.settle_sum(key).await?;
        }
        if let Some(w) = self.writes.get(key) {
            return Ok(Self::own_value(w, now_ms()).map(|v| (v.clone(), None)));
        }
        self.stored_versioned(key).await
    }

    /// The value of `key` at the snapshot, with its versionstamp; records the read.
    async fn stored_versioned(
        &mut self,
        key: &[u8],
    ) -> Result<Option<(Value, Option<Versionstamp>)>> {
        let rec = record_at(&self.db, self.read_version, key).await?;
        self.still_readable().await?;
        self.reads.push((key.to_vec(), key_after(key)));
        Ok(rec.map(|r| (r.value, Some(r.versionstamp))))
    }

    /// What this transaction wrote to `key` itself: `Some(Some(value))` for a set,
    /// `Some(None)` for a delete (or a set that expired), `None` if it did not write it (or
    /// only added to it with [`Transaction::sum`], whose result is not known before a read).
    /// Reads nothing and records no read.
    pub fn own_write(&self, key: &[u8]) -> Option<Option<&Value>> {
        self.writes.get(key).map(|w| Self::own_value(w, now_ms()))
    }

    /// Require that when this transaction commits, the newest version of `key` is the one
    /// `expected` names (`None`: the key is absent, or expired).
    ///
    /// This is a check made against the state the commit lands on, as an atomic write's
    /// check is, not a read of this transaction's snapshot: it records no read range, and
    /// costs the commit one lookup of a key it often fetches anyway. A caller that only
    /// needs to know a key is unchanged or still absent when its writes land (a layer's
    /// metadata it read earlier, a key it is about to create) checks it instead of
    /// reading it. A failed check fails the commit with [`EngineError::CheckFailed`],
    /// retryable. Checks guard writes: a transaction that wrote nothing commits without
    /// making them.
    pub fn check(&mut self, key: &[u8], expected: Option<Versionstamp>) -> Result<()> {
        check_key(&self.db.shared.options.limits, key, false)?;
        self.checks.push(Check {
            key: key.to_vec(),
            versionstamp: expected,
        });
        Ok(())
    }

    /// The value of `key` as this transaction sees it.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        Ok(self.get_versioned(key).await?.map(|(v, _)| v))
    }

    /// Up to `limit` entries of `[start, end)` (an empty `end` is unbounded) as this
    /// transaction sees them, forward or reverse.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let limits = &self.db.shared.options.limits;
        check_key(limits, start, false)?;
        check_key(limits, end, false)?;
        let in_range =
            |k: &Vec<u8>| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end);
        let summed: Vec<Vec<u8>> = self.sums.keys().filter(|k| in_range(k)).cloned().collect();
        for key in summed {
            self.settle_sum(&key).await?;
        }
        let own: Vec<(&Vec<u8>, &TxnWrite)> =
            self.writes.iter().filter(|(k, _)| in_range(k)).collect();
        let now = now_ms();
        let own_deletes = own
            .iter()
            .filter(|(_, w)| Self::own_value(w, now).is_none())
            .count();
        let fetch = limit.saturating_add(own_deletes);
        let shared = self.db.shared.clone();
        let (_, stored) = self
            .db
            .read_at(self.read_version, |v, precise| {
                let shared = shared.clone();
                async move {
                    mvcc::scan(
                        &*shared.store,
                        &shared.name,
                        start,
                        end,
                        reverse,
                        fetch,
                        v,
                        precise,
                        now_ms(),
                    )
                    .await
                }
            })
            .await
            .map_err(|e| self.retryable(e))?;
        self.still_readable().await?;
        let mut merged: BTreeMap<Vec<u8>, Value> =
            stored.into_iter().map(|(k, r)| (k, r.value)).collect();
        for (k, w) in own {
            match Self::own_value(w, now) {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let mut out: Vec<(Vec<u8>, Value)> = if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        };
        // The result depends only on the part of the range up to the last key returned.
        let range = match out.last() {
            Some((last, _)) if out.len() >= limit => {
                if reverse {
                    (last.clone(), end.to_vec())
                } else {
                    (start.to_vec(), key_after(last))
                }
            }
            _ => (start.to_vec(), end.to_vec()),
        };
        self.reads.push(range);
        out.truncate(limit);
        Ok(out)
    }

    /// Show `visitor` the entries of `[start, end)` (an empty `end` is unbounded) in key
    /// order, as this transaction sees them, until it declines one. Entries are lent from
    /// the store where it can, so long scans copy nothing. Returns the key to resume from
    /// when the visitor stopped early, `None` once the range is done.
    ///
    /// The visitor may be told to [`Visitor::restart`]: a commit that deleted keys landed
    /// while the range was read, and the range is read again, precisely.
    pub async fn scan_each(
        &mut self,
        start: &[u8],
        end: &[u8],
        visitor: &mut dyn Visitor,
    ) -> Result<Option<Vec<u8>>> {
        let Some(reader) = self.snapshot_reader(start, end)? else {
            return self.scan_each_merged(start, end, visitor).await;
        };
        let resume = reader.scan_each(start, end, visitor).await?;
        self.note_read(start, resume.as_deref().unwrap_or(end))
            .await?;
        Ok(resume)
    }

    /// A reader of this transaction's snapshot over `[start, end)` that works without the
    /// transaction, so that several parts of one range can be read at once (a parallel
    /// scan). `None` when the transaction has written in the range: its reads there must
    /// see its own writes, through [`Transaction::scan_each`].
    ///
    /// What a reader reads must be recorded with [`Transaction::note_read`] before the
    /// transaction commits; otherwise the commit is not checked against it.
    pub fn snapshot_reader(&self, start: &[u8], end: &[u8]) -> Result<Option<SnapshotReader>> {
        let limits = &self.db.shared.options.limits;
        check_key(limits, start, false)?;
        check_key(limits, end, false)?;
        let in_range = |first: Option<&Vec<u8>>| {
            first.is_some_and(|k: &Vec<u8>| end.is_empty() || k.as_slice() < end)
        };
        let from = (std::ops::Bound::Included(start), std::ops::Bound::Unbounded);
        let own_write_in_range = in_range(self.writes.range::<[u8], _>(from).next().map(|e| e.0))
            || in_range(self.sums.range::<[u8], _>(from).next().map(|e| e.0));
        Ok((!own_write_in_range).then(|| SnapshotReader {
            db: self.db.clone(),
            version: self.read_version,
            _guard: self.guard.clone(),
        }))
    }

    /// Record that `[start, end)` was read at this transaction's snapshot (by a
    /// [`SnapshotReader`]): the commit fails if another transaction wrote there since.
    pub async fn note_read(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        self.still_readable().await?;
        self.reads.push((start.to_vec(), end.to_vec()));
        Ok(())
    }

    /// [`Transaction::scan_each`] over a range holding this transaction's own writes: chunks
    /// of [`Transaction::scan`], which merges them.
    async fn scan_each_merged(
        &mut self,
        start: &[u8],
        end: &[u8],
        visitor: &mut dyn Visitor,
    ) -> Result<Option<Vec<u8>>> {
        const CHUNK: usize = 1024;
        let mut from = start.to_vec();
        loop {
            let chunk = self.scan(&from, end, false, CHUNK).await?;
            for (key, value) in &chunk {
                if !visitor.visit(key, value.as_ref()) {
                    return Ok(Some(key_after(key)));
                }
            }
            match chunk.last() {
                Some((key, _)) if chunk.len() == CHUNK => from = key_after(key),
                _ => return Ok(None),
            }
        }
    }

    /// Count `size` more bytes of writes, within the transaction's limit.
    fn charge(&mut self, size: usize) -> Result<()> {
        let max = self.db.shared.options.limits.max_transaction_bytes;
        if self.write_bytes + size > max {
            return Err(EngineError::limit(
                "transaction size",
                "transaction writes",
                format!("{} bytes", self.write_bytes + size),
                format!("{max} bytes"),
            ));
        }
        self.write_bytes += size;
        Ok(())
    }

    fn buffer(&mut self, key: &[u8], write: TxnWrite) -> Result<()> {
        let limits = &self.db.shared.options.limits;
        check_key(limits, key, true)?;
        let size = key.len() + write.as_ref().map_or(0, |(v, _)| v.data.len());
        if let Some((v, exp)) = &write {
            check_value(limits, v)?;
            check_expiry(*exp)?;
        }
        self.charge(size)?;
        let previous = self.writes.insert(key.to_vec(), write);
        let previous_sum = self.sums.remove(key);
        if let Some(undo) = &mut self.undo {
            undo.previous.push((key.to_vec(), previous));
            if previous_sum.is_some() {
                undo.previous_sums.push((key.to_vec(), previous_sum));
            }
        }
        Ok(())
    }

    /// Add `n` (wrapping) to the u64 under `key` when the commit lands, without reading it:
    /// a counter that many transactions add to at once, none of them conflicting with the
    /// others. The commit writes the sum of the value it finds (none counts as 0) and `n`,
    /// as a u64; a value of another kind there fails the commit with
    /// [`EngineError::InvalidMutation`]. Adding to a key this transaction set or deleted
    /// adds to what it wrote. Reading the key later in the transaction reads the stored
    /// value (recording the read) and turns the sum into a set of the result; a set or
    /// delete of the key replaces the sum.
    ///
    /// Sums suit counters read at the newest version. Commits that land in one group and
    /// sum to the same key leave one version of it, stamped with the first of them: no
    /// snapshot falls inside a group, and only an `AS OF` read at a version inside it sees
    /// the group's later sums early. With a change feed on, each commit's sum is a version
    /// of its own.
    pub fn sum(&mut self, key: &[u8], n: u64) -> Result<()> {
        if let Some(w) = self.writes.get(key) {
            let total = match Self::own_value(w, now_ms()) {
                None => n,
                Some(v) => v.as_u64().ok_or_else(|| not_u64("sum"))?.wrapping_add(n),
            };
            return self.buffer(key, Some((Value::u64(total), None)));
        }
        check_key(&self.db.shared.options.limits, key, true)?;
        let previous = self.sums.get(key).copied();
        if previous.is_none() {
            self.charge(key.len() + 8)?;
        }
        self.sums
            .insert(key.to_vec(), previous.unwrap_or(0).wrapping_add(n));
        if let Some(undo) = &mut self.undo {
            undo.previous_sums.push((key.to_vec(), previous));
        }
        Ok(())
    }

    /// Turn the pending sum on `key` into a set of its result, read at the snapshot.
    async fn settle_sum(&mut self, key: &[u8]) -> Result<()> {
        let Some(&n) = self.sums.get(key) else {
            return Ok(());
        };
        let total = match self.stored_versioned(key).await? {
            None => n,
            Some((v, _)) => v.as_u64().ok_or_else(|| not_u64("sum"))?.wrapping_add(n),
        };
        self.buffer(key, Some((Value::u64(total), None)))
    }

    /// Mark the current writes: [`Transaction::rollback_to_savepoint`] undoes every write
    /// buffered after this point (a failed statement inside a larger transaction). Reads
    /// made since stay recorded: the commit still depends on them, which is only stricter.
    /// A new savepoint replaces the previous one.
    pub fn savepoint(&mut self) {
        self.undo = Some(Undo {
            write_bytes: self.write_bytes,
            checks: self.checks.len(),
            previous: Vec::new(),
            previous_sums: Vec::new(),
        });
    }

    /// Undo every write (and check) since the last savepoint (nothing without one).
    pub fn rollback_to_savepoint(&mut self) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        for (key, previous) in undo.previous.into_iter().rev() {
            match previous {
                Some(w) => self.writes.insert(key, w),
                None => self.writes.remove(&key),
            };
        }
        for (key, previous) in undo.previous_sums.into_iter().rev() {
            match previous {
                Some(n) => self.sums.insert(key, n),
                None => self.sums.remove(&key),
            };
        }
        self.write_bytes = undo.write_bytes;
        self.checks.truncate(undo.checks);
        self.undo = Some(Undo {
            write_bytes: self.write_bytes,
            checks: self.checks.len(),
            previous: Vec::new(),
            previous_sums: Vec::new(),
        });
    }

    /// Whether the transaction has buffered any write (a sum included).
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || !self.sums.is_empty()
    }

    /// The database this transaction runs in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn set(&mut self, key: &[u8], value: Value) -> Result<()> {
        self.buffer(key, Some((value, None)))
    }

    /// Set with an expiry deadline in ms since the epoch.
    pub fn set_with_expiry(&mut self, key: &[u8], value: Value, expires_at: u64) -> Result<()> {
        self.buffer(key, Some((value, Some(expires_at))))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.buffer(key, None)
    }

    /// Commit; returns the commit's versionstamp, or `None` for a transaction that wrote
    /// nothing. A conflict is [`EngineError::Conflict`]: retry the transaction from `begin`.
    pub async fn commit(mut self) -> Result<Option<Versionstamp>> {
        if !self.has_writes() {
            return Ok(None);
        }
        let op = CommitOp::Transaction {
            read_version: self.read_version,
            reads: std::mem::take(&mut self.reads),
            writes: std::mem::take(&mut self.writes).into_iter().collect(),
            checks: std::mem::take(&mut self.checks),
            sums: std::mem::take(&mut self.sums).into_iter().collect(),
        };
        match self.db.shared.commit(op).await? {
            CommitReply::Outcome(CommitOutcome::Committed(vs)) => Ok(Some(vs)),
            _ => Err(EngineError::InvalidRequest(
                "unexpected pipeline reply".into(),
            )),
        }
    }

    /// Discard every write.
    pub fn rollback(self) {}
}
