//! Shrinking a non-linearizable history to a small witness.
//!
//! A key may have thousands of operations; the few that contradict each other are what a
//! reader needs. Shrinking removes operations — large chunks first, then halves of those,
//! down to single operations (Zeller's delta debugging) — keeping each removal after which
//! the rest is still not linearizable, until no single operation can go.
//!
//! A removal must not invent a violation: the witness has to be one that the whole history
//! contains. Removing a read never does (take any linearization of the whole and drop the
//! read). Removing a write can: a read that saw its value is left unexplained, a failed
//! compare-and-set loses the write that made it fail, a read of absence loses its delete.
//! So with every removed write go the operations that may have depended on it — each kept
//! operation that saw the value it wrote (absence included), and each kept failed
//! compare-and-set — unless real time rules the dependency out: the write began after the
//! operation completed, or another write of known outcome lies wholly between the two (then
//! in any linearization the removed write is not the last one before the operation). The
//! operations so removed may be writes themselves, and the rule applies again, to a fixed
//! point. What remains is linearizable whenever the whole history is. And for the reader's
//! sake, an operation that saw a value stays only with a write of that value.

use std::collections::HashSet;

use super::history::{Operation, Outcome};
use super::model::{State, Step, Values, ABSENT};
use super::search::{search, Found, Timed};

/// One key's operations as the search takes them.
pub(crate) fn timed(ops: &[Operation]) -> Vec<Timed> {
    let mut values = Values::default();
    ops.iter()
        .filter_map(|op| {
            values.step(op).map(|step| Timed {
                step,
                invoked: op.invoked,
                completed: op.effective_completion(),
            })
        })
        .collect()
}

/// The state a step may write.
fn writes(step: Step) -> Option<State> {
    match step {
        Step::Write(v) | Step::MaybeWrite(v) => Some(v),
        Step::Swapped { new, .. } | Step::MaybeSwapped { new, .. } => Some(new),
        Step::Read(_) | Step::NotSwapped { .. } => None,
    }
}

/// What a step needs the state to be; `Err(e)` for "anything but `e`".
fn needs(step: Step) -> Option<Result<State, State>> {
    match step {
        Step::Read(v) => Some(Ok(v)),
        Step::Swapped { expected, .. } | Step::MaybeSwapped { expected, .. } => Some(Ok(expected)),
        Step::NotSwapped { expected } => Some(Err(expected)),
        Step::Write(_) | Step::MaybeWrite(_) => None,
    }
}

/// Remove from `keep` (indexes into `ops`) what may have depended on a write not in it.
fn close(ops: &[Timed], ever_written: &HashSet<State>, mut keep: Vec<bool>) -> Vec<bool> {
    loop {
        // Kept writes of known outcome by invocation, with the earliest completion among
        // each one and those invoked after it.
        let mut shields: Vec<(u64, u64)> = (0..ops.len())
            .filter(|&w| keep[w] && ops[w].step.required() && writes(ops[w].step).is_some())
            .map(|w| (ops[w].invoked, ops[w].completed))
            .collect();
        shields.sort_unstable();
        for i in (0..shields.len().saturating_sub(1)).rev() {
            shields[i].1 = shields[i].1.min(shields[i + 1].1);
        }
        // For each removed write: the earliest completion of a kept write of known outcome
        // invoked after it completed (a kept operation invoked after that is shielded).
        let removed: Vec<(usize, u64)> = (0..ops.len())
            .filter(|&x| !keep[x] && writes(ops[x].step).is_some())
            .map(|x| {
                let first = shields.partition_point(|(invoked, _)| *invoked <= ops[x].completed);
                (x, shields.get(first).map_or(u64::MAX, |s| s.1))
            })
            .collect();
        let written: HashSet<State> = (0..ops.len())
            .filter(|&w| keep[w])
            .filter_map(|w| writes(ops[w].step))
            .collect();
        let depends = |d: usize| {
            let Some(need) = needs(ops[d].step) else {
                return false;
            };
            // Keep the write a kept operation saw, so that the witness shows where the value
            // came from (a value nobody wrote at all is a violation by itself).
            if let Ok(v) = need {
                if v != ABSENT && ever_written.contains(&v) && !written.contains(&v) {
                    return true;
                }
            }
            removed.iter().any(|&(x, shield)| {
                let relevant = match need {
                    Ok(v) => writes(ops[x].step) == Some(v),
                    Err(_) => true,
                };
                let after = ops[x].invoked > ops[d].completed;
                let shielded = shield < ops[d].invoked;
                relevant && !after && !shielded
            })
        };
        let orphans: Vec<usize> = (0..ops.len()).filter(|&d| keep[d] && depends(d)).collect();
        if orphans.is_empty() {
            return keep;
        }
        for d in orphans {
            keep[d] = false;
        }
    }
}

/// Whether the kept operations are definitely not linearizable within `budget` steps.
fn fails(ops: &[Timed], keep: &[bool], budget: u64) -> bool {
    let sub: Vec<Timed> = ops
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(o, _)| *o)
        .collect();
    search(&sub, budget).0 == Found::NotLinearizable
}

/// Shrink the non-linearizable `ops` of one key (in real-time order), spending at most
/// `budget` steps on each candidate.
pub(crate) fn shrink(ops: Vec<Operation>, budget: u64) -> Vec<Operation> {
    // Unknown reads constrain nothing: they are not part of a witness.
    let ops: Vec<Operation> = ops
        .into_iter()
        .filter(|o| !(matches!(o.call, super::Call::Get { .. }) && o.outcome == Outcome::Unknown))
        .collect();
    let timed = timed(&ops);
    if timed.len() != ops.len() {
        return ops;
    }
    let ever_written: HashSet<State> = timed.iter().filter_map(|o| writes(o.step)).collect();
    let mut keep = vec![true; ops.len()];
    let kept = |keep: &[bool]| keep.iter().filter(|k| **k).count();
    let mut chunk = (ops.len() / 2).max(1);
    loop {
        let mut progress = false;
        // Walk the kept operations in chunks of `chunk`.
        let mut start = 0;
        loop {
            let positions: Vec<usize> = (0..ops.len()).filter(|&i| keep[i]).collect();
            if start >= positions.len() {
                break;
            }
            let end = (start + chunk).min(positions.len());
            let mut candidate = keep.clone();
            for &i in &positions[start..end] {
                candidate[i] = false;
            }
            let candidate = close(&timed, &ever_written, candidate);
            if fails(&timed, &candidate, budget) {
                keep = candidate;
                progress = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !progress {
            break;
        }
        chunk = if progress {
            chunk.min((kept(&keep) / 2).max(1))
        } else {
            (chunk / 2).max(1)
        };
    }
    ops.into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(o, _)| o)
        .collect()
}
