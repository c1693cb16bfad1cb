//! Lingering: on a store whose appends take a long round (a cluster node's Raft log), the
//! next group waits a moment for the commits that the answers just sent will bring back.
//!
//! With one group in the log at a time, clients that commit one after another (a
//! connection pool, a load generator, most application servers) fall into two halves: while
//! one half's group is in the log, the other half's answers go out and their next commits
//! arrive and wait. The moment the group in the log is answered, the waiting half's group
//! would go at once, and the half just answered would wait a whole round for the next
//! group. So each round carries half the clients, and every Raft entry — a log write and
//! sync on every node, a message to each follower, an apply everywhere — serves half as
//! many commits as it could.
//!
//! Lingering closes the gap: after a group is answered, the next group is held until as
//! many more commits have joined it as that group answered (the clients it let go, back
//! with their next commit), or until [`EngineConfig::group_linger`] has passed, whichever
//! comes first. With closed-loop clients the held group then carries all of them. Clients
//! that do not come back (each commits once, at random moments) would make every group wait
//! out the limit; so a group that goes because time ran out turns lingering off for the
//! next groups, twice as many after each miss in a row (up to [`MAX_SKIP`]), and the first
//! group that fills up turns it fully back on.
//!
//! Commits another node forwarded are not counted as answered: that node groups its own
//! callers' commits into rounds, and its callers see their answers only after the round
//! comes back and the node has applied it, too late for a linger to catch their next
//! commits (measured: writes through a follower fell by a fifth when they were counted).
//!
//! [`EngineConfig::group_linger`]: crate::EngineConfig::group_linger

use std::time::Duration;

use tokio::time::Instant;

/// The most groups sent without lingering after misses in a row.
pub(crate) const MAX_SKIP: u32 = 64;

/// When the next group may go (see the module docs).
#[derive(Debug)]
pub(crate) struct Linger {
    /// The longest a group is held; zero: never.
    limit: Duration,
    /// While a group is held: how many commits it waits for, and until when.
    hold: Option<(usize, Instant)>,
    /// Groups still to go without lingering, after a miss.
    skip: u32,
    /// Misses in a row.
    misses: u32,
}

impl Linger {
    pub(crate) fn new(limit: Duration) -> Self {
        Linger {
            limit,
            hold: None,
            skip: 0,
            misses: 0,
        }
    }

    /// A group's answers went out to `answered` commits while `waiting` commits were in the
    /// next group: hold that group for the answered ones (at most `max` in all). The clock
    /// (`now`) is read only if it is held, so the commit pipeline pays nothing when off.
    pub(crate) fn answered(
        &mut self,
        answered: usize,
        waiting: usize,
        max: usize,
        now: impl FnOnce() -> Instant,
    ) {
        if self.limit.is_zero() || answered == 0 {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        let target = waiting.saturating_add(answered).min(max);
        self.hold = Some((target, now() + self.limit));
    }

    /// Whether a group of `waiting` commits must still wait (the clock is read only while a
    /// group is held short of its target).
    pub(crate) fn holds(&self, waiting: usize, now: impl FnOnce() -> Instant) -> bool {
        matches!(self.hold, Some((target, until)) if waiting < target && now() < until)
    }

    /// When the held group goes even if it has not filled up.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.hold.map(|(_, until)| until)
    }

    /// A group of `waiting` commits goes to the log.
    pub(crate) fn sent(&mut self, waiting: usize) {
        let Some((target, _)) = self.hold.take() else {
            return;
        };
        if waiting >= target {
            self.misses = 0;
            return;
        }
        self.misses = self.misses.saturating_add(1);
        self.skip = 1u32
            .checked_shl(self.misses)
            .map_or(MAX_SKIP, |s| s.min(MAX_SKIP));
    }
}

#[cfg(test)]
mod tests {
    //! The policy alone, on a clock the tests move by hand.

    use super::*;

    const LIMIT: Duration = Duration::from_millis(2);

    #[test]
    fn a_held_group_goes_once_the_answered_are_back() {
        let t = Instant::now();
        let mut l = Linger::new(LIMIT);
        // 16 answered while 16 others waited: hold for 32.
        l.answered(16, 16, 256, || t);
        assert!(l.holds(16, || t));
        assert!(l.holds(31, || t + Duration::from_micros(500)));
        assert!(!l.holds(32, || t + Duration::from_micros(600)));
        l.sent(32);
        // Filled up: the next group lingers too.
        l.answered(32, 0, 256, || t + LIMIT);
        assert!(l.holds(0, || t + LIMIT));
        assert_eq!(l.deadline(), Some(t + LIMIT + LIMIT));
    }

    #[test]
    fn a_group_never_waits_past_the_limit_or_beyond_the_largest_group() {
        let t = Instant::now();
        let mut l = Linger::new(LIMIT);
        l.answered(200, 100, 256, || t);
        assert!(l.holds(255, || t));
        assert!(!l.holds(256, || t), "a group at its largest goes");
        assert!(l.holds(1, || t + LIMIT - Duration::from_micros(1)));
        assert!(!l.holds(1, || t + LIMIT), "the limit has passed");
    }

    #[test]
    fn nothing_lingers_when_off_or_when_nobody_was_answered() {
        let t = Instant::now();
        let mut off = Linger::new(Duration::ZERO);
        off.answered(16, 16, 256, || t);
        assert!(!off.holds(0, || t));
        assert_eq!(off.deadline(), None);
        // Off, the commit pipeline does not even read the clock.
        off.answered(16, 16, 256, || panic!("the clock was read"));
        assert!(!off.holds(0, || panic!("the clock was read")));
        let mut l = Linger::new(LIMIT);
        l.answered(0, 5, 256, || t);
        assert!(!l.holds(0, || t));
    }

    /// How many answered groups go by without a hold, until one is held.
    fn skipped(l: &mut Linger, t: Instant) -> usize {
        let mut n = 0;
        loop {
            l.answered(4, 0, 256, || t);
            if l.deadline().is_some() {
                return n;
            }
            n += 1;
        }
    }

    #[test]
    fn misses_in_a_row_turn_lingering_off_for_longer_and_a_full_group_turns_it_back_on() {
        let mut t = Instant::now();
        let mut l = Linger::new(LIMIT);
        // Each miss: the group went at the limit with fewer than it waited for.
        let mut after_each_miss = Vec::new();
        for _ in 0..8 {
            l.answered(4, 0, 256, || t);
            assert!(l.holds(1, || t));
            t += LIMIT;
            assert!(!l.holds(1, || t));
            l.sent(1);
            after_each_miss.push(skipped(&mut l, t));
        }
        assert_eq!(after_each_miss, [2, 4, 8, 16, 32, 64, 64, 64]);
        // The hold after the last skip fills up: misses are forgotten.
        l.sent(4);
        l.answered(4, 0, 256, || t);
        t += LIMIT;
        l.sent(1);
        assert_eq!(
            skipped(&mut l, t),
            2,
            "one miss after a full group skips two, as the first did"
        );
    }
}
