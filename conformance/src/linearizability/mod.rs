//! # A linearizability checker for key-value histories
//!
//! History in, verdict out. Clients of a store — tasks, engines, processes, later the nodes
//! of a replicated log — record what they asked and what they got, with the interval in
//! which each call ran. The store is *linearizable* if one total order of the operations
//! exists that (1) puts each operation somewhere inside its own interval, so an operation
//! that completed before another was invoked comes first, and (2) explains every result by
//! running the operations one at a time on a plain register per key.
//!
//! ```text
//!  client 1   |--- set k = a ---|
//!  client 2           |------ get k -> a ------|        linearizable: set, then get
//!  client 3                          |-- get k -> absent --|   ...not: the set completed
//!                                                                before this get began
//! ```
//!
//! The pieces, in the order data flows through them:
//!
//! * [`history`](self::history): [`Call`] (get, set, delete, compare-and-set on byte keys),
//!   [`Outcome`] — a result, or [`Outcome::Unknown`] for a call whose answer never came (it
//!   may have taken effect at any time after its invocation, or never) — and [`History`],
//!   which separate processes write as JSON lines for a parent to merge.
//! * [`Recorder`]: the clients' side — `invoke` before a call leaves, settle the
//!   [`Pending`] when it returns. A call that provably had no effect is dropped.
//! * [`check`]: split the history by key (the register of one key is independent of every
//!   other, and a linearizable history is linearizable key by key — Herlihy & Wing's
//!   locality), then search each key for a linearization (Wing & Gong's depth-first search
//!   with Lowe's cache of visited configurations; see `search.rs`) within a step budget.
//! * [`Verdict`]: linearizable; not, with a [`Violation`] shrunk to a few operations that
//!   contradict each other (`shrink.rs`), printed one per line; or inconclusive when the
//!   budget ran out.
//!
//! Every key starts absent. Reads of several keys at one snapshot are checked as separate
//! reads, one per key: weaker than checking the snapshot as a whole, but each read is still
//! held to its own interval.

mod history;
mod model;
mod recorder;
mod search;
mod shrink;
mod verdict;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use history::{Call, History, HistoryError, Operation, Outcome, Output};
pub use recorder::{Dropped, Pending, Recorder};
pub use verdict::{Verdict, Violation};

/// Limits on the checker's work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps per key before the verdict is [`Verdict::Inconclusive`].
    pub max_steps: u64,
    /// Search steps for each candidate while shrinking a violation (a candidate that needs
    /// more is kept as if it were linearizable).
    pub max_shrink_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: 2_000_000,
            max_shrink_steps: 200_000,
        }
    }
}

/// Check `history` with the default limits.
pub fn check(history: &History) -> Result<Verdict, HistoryError> {
    check_with(history, &CheckOptions::default())
}

/// Check `history`: the first key (in byte order) found not linearizable, else the first on
/// which the search gave up, else linearizable.
pub fn check_with(history: &History, options: &CheckOptions) -> Result<Verdict, HistoryError> {
    history.validate()?;
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history.ops() {
        by_key.entry(op.key()).or_default().push(op);
    }
    let mut inconclusive = None;
    for (key, ops) in by_key {
        let mut ops: Vec<Operation> = ops.into_iter().cloned().collect();
        ops.sort_by_key(|o| (o.invoked, o.completed, o.client));
        let (found, steps) = search::search(&shrink::timed(&ops), options.max_steps);
        match found {
            search::Found::Linearizable => {}
            search::Found::NotLinearizable => {
                let of = ops.len();
                return Ok(Verdict::NotLinearizable(Violation {
                    key: key.to_vec(),
                    ops: shrink::shrink(ops, options.max_shrink_steps),
                    of,
                }));
            }
            search::Found::GaveUp => {
                inconclusive.get_or_insert(Verdict::Inconclusive {
                    key: key.to_vec(),
                    ops: ops.len(),
                    steps,
                });
            }
        }
    }
    Ok(inconclusive.unwrap_or(Verdict::Linearizable))
}
