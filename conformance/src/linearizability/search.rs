//! The search for a linearization of one key's operations (Wing & Gong's algorithm, with
//! Lowe's cache of visited configurations).
//!
//! The operations become a list of events in real-time order: a *call* at each invocation
//! and a *return* at each completion (an operation of unknown outcome has no return — it may
//! take effect arbitrarily late, or never). Walking the list from its head, the search
//! picks the first call it can apply to the register and *linearizes* it: the operation is
//! taken out of the list (call and return), pushed on a stack with the state before it, and
//! the walk starts again from the head. A return met during the walk belongs to an operation
//! not yet linearized that every later operation follows in real time — the current prefix
//! cannot be extended, so the search pops the last linearized operation, puts it back, and
//! tries the next call after it instead.
//!
//! The history is linearizable once every operation of known outcome is linearized, and not
//! linearizable when a return is met with nothing left to pop. A configuration — which
//! operations are linearized, and the register's state — determines everything that can
//! follow, so one reached before is never explored twice (Lowe's "just-in-time"
//! linearization with caching). Even so the search is exponential in the worst case; it
//! counts its steps and gives up past a budget.

use std::collections::HashSet;

use super::model::{State, Step, ABSENT};

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timed {
    pub step: Step,
    pub invoked: u64,
    /// `u64::MAX` for an operation of unknown outcome.
    pub completed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Linearizable,
    NotLinearizable,
    /// The budget ran out first.
    GaveUp,
}

/// Search for a linearization of `ops`, in at most `budget` steps; returns what it found
/// and the steps it took.
pub(crate) fn search(ops: &[Timed], budget: u64) -> (Found, u64) {
    // First without the unknown writes whose value nobody saw: leaving an operation of
    // unknown outcome out is always allowed (it never happened), and each one kept doubles
    // the configurations to explore. Only if that fails are they all let in.
    let seen: HashSet<State> = ops
        .iter()
        .filter_map(|o| match o.step {
            Step::Read(v) => Some(v),
            Step::Swapped { expected, .. } | Step::MaybeSwapped { expected, .. } => Some(expected),
            _ => None,
        })
        .collect();
    let needed = |o: &&Timed| match o.step {
        Step::MaybeWrite(v) | Step::MaybeSwapped { new: v, .. } => seen.contains(&v),
        _ => true,
    };
    let trimmed: Vec<Timed> = ops.iter().filter(needed).copied().collect();
    let mut spent = 0;
    if trimmed.len() < ops.len() {
        let (found, steps) = Search::new(&trimmed).run(budget);
        spent = steps;
        if found == Found::Linearizable {
            return (found, spent);
        }
    }
    let (found, steps) = Search::new(ops).run(budget.saturating_sub(spent));
    (found, spent + steps)
}

const HEAD: usize = 0;

struct Search<'a> {
    ops: &'a [Timed],
    /// Events 1..=n between the sentinels `HEAD` (0) and `tail` (n + 1).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each event.
    op_of: Vec<usize>,
    /// For a call event, its return event (none for an unknown outcome); for a return event,
    /// `None`, and `is_call` false.
    return_of: Vec<Option<usize>>,
    is_call: Vec<bool>,
    tail: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Timed]) -> Self {
        // (time, 0 for a call / 1 for a return, operation): calls sort before returns at the
        // same instant, so operations that touch in time count as concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoked, 0, i));
            if op.step.required() {
                events.push((op.completed, 1, i));
            }
        }
        events.sort_unstable();
        let n = events.len();
        let tail = n + 1;
        let mut op_of = vec![usize::MAX; n + 2];
        let mut is_call = vec![false; n + 2];
        let mut return_of = vec![None; n + 2];
        let mut call_event = vec![0; ops.len()];
        for (slot, (_, kind, op)) in events.iter().enumerate() {
            let e = slot + 1;
            op_of[e] = *op;
            if *kind == 0 {
                is_call[e] = true;
                call_event[*op] = e;
            } else {
                return_of[call_event[*op]] = Some(e);
            }
        }
        Search {
            ops,
            next: (1..=n + 2).collect(),
            prev: (0..n + 2).map(|e| e.saturating_sub(1)).collect(),
            op_of,
            return_of,
            is_call,
            tail,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// Take an operation's call and return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(r) = self.return_of[call] {
            self.unlink(r);
        }
    }

    /// Undo the last [`Search::lift`] (in reverse order, so the links are intact).
    fn unlift(&mut self, call: usize) {
        if let Some(r) = self.return_of[call] {
            self.relink(r);
        }
        self.relink(call);
    }

    fn run(mut self, budget: u64) -> (Found, u64) {
        let words = self.ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut required_left = self.ops.iter().filter(|o| o.step.required()).count();
        let mut state = ABSENT;
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut entry = self.next[HEAD];
        let mut steps = 0u64;
        loop {
            if required_left == 0 {
                return (Found::Linearizable, steps);
            }
            if steps >= budget {
                return (Found::GaveUp, steps);
            }
            steps += 1;
            if entry != self.tail && self.is_call[entry] {
                let op = self.op_of[entry];
                if let Some(after) = self.ops[op].step.apply(state) {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((entry, state));
                        state = after;
                        self.lift(entry);
                        if self.ops[op].step.required() {
                            required_left -= 1;
                        }
                        entry = self.next[HEAD];
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                entry = self.next[entry];
            } else {
                // A return (or the end of the list): the prefix cannot be extended.
                let Some((call, before)) = stack.pop() else {
                    return (Found::NotLinearizable, steps);
                };
                let op = self.op_of[call];
                linearized[op / 64] &= !(1 << (op % 64));
                state = before;
                self.unlift(call);
                if self.ops[op].step.required() {
                    required_left += 1;
                }
                entry = self.next[call];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(step: Step, invoked: u64, completed: u64) -> Timed {
        Timed {
            step,
            invoked,
            completed,
        }
    }

    #[test]
    fn empty_and_trivial_histories_are_linearizable() {
        assert_eq!(search(&[], 10).0, Found::Linearizable);
        assert_eq!(
            search(&[t(Step::Read(ABSENT), 0, 1)], 10).0,
            Found::Linearizable
        );
        assert_eq!(
            search(&[t(Step::Read(1), 0, 1)], 10).0,
            Found::NotLinearizable
        );
    }

    #[test]
    fn the_budget_is_kept() {
        // Many concurrent writes and one impossible read: the search must explore orders of
        // the writes before it can tell, and stops at the budget.
        let mut ops: Vec<Timed> = (1..=20).map(|v| t(Step::Write(v), 0, 100)).collect();
        ops.push(t(Step::Read(99), 0, 100));
        let (found, steps) = search(&ops, 1000);
        assert_eq!(found, Found::GaveUp);
        assert_eq!(steps, 1000);
    }
}
