//! The sequential specification: one register per key, starting absent.
//!
//! A key's operations are compiled once into [`Step`]s over small integers: each distinct
//! value of the key gets a number, and the register's state is [`ABSENT`] or a value's
//! number. Every step is deterministic — from a state it either cannot happen, or it leads to
//! exactly one next state — which keeps the search a plain depth-first walk.

use std::collections::HashMap;

use super::history::{Call, Operation, Outcome, Output};

/// A register state: [`ABSENT`], or the number of a value.
pub(crate) type State = u32;

/// The state of a key that has no value; every key starts so.
pub(crate) const ABSENT: State = 0;

/// One operation as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A read that saw this state.
    Read(State),
    /// A write (a set, or a delete writing [`ABSENT`]) that took effect.
    Write(State),
    /// A compare-and-set that found `expected` and wrote `new`.
    Swapped { expected: State, new: State },
    /// A compare-and-set that did not find `expected`.
    NotSwapped { expected: State },
    /// A write of unknown outcome. Applying it is optional (it may never have happened), so
    /// the search is free to leave it out.
    MaybeWrite(State),
    /// A compare-and-set of unknown outcome: if it happened it found `expected`. (Had it
    /// happened and failed it changed nothing, as if it had not happened.)
    MaybeSwapped { expected: State, new: State },
}

impl Step {
    /// The state after this step from `state`, or `None` if it cannot happen there.
    pub(crate) fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(v) | Step::MaybeWrite(v) => Some(v),
            Step::Swapped { expected, new } | Step::MaybeSwapped { expected, new } => {
                (expected == state).then_some(new)
            }
            Step::NotSwapped { expected } => (expected != state).then_some(state),
        }
    }

    /// Whether the operation must be part of every linearization.
    pub(crate) fn required(self) -> bool {
        !matches!(self, Step::MaybeWrite(_) | Step::MaybeSwapped { .. })
    }
}

/// Numbers for the values of one key.
#[derive(Default)]
pub(crate) struct Values {
    numbers: HashMap<Vec<u8>, State>,
}

impl Values {
    fn number(&mut self, value: Option<&[u8]>) -> State {
        let Some(v) = value else { return ABSENT };
        if let Some(n) = self.numbers.get(v) {
            return *n;
        }
        let n = State::try_from(self.numbers.len() + 1).unwrap_or(State::MAX);
        self.numbers.insert(v.to_vec(), n);
        n
    }

    /// The step of `op`, or `None` for an operation that constrains nothing (an unknown
    /// read). A history is validated before it is compiled; an output that does not fit
    /// its call yields a read of a value nobody wrote, which no order explains.
    pub(crate) fn step(&mut self, op: &Operation) -> Option<Step> {
        let known = match &op.outcome {
            Outcome::Ok(o) => Some(o),
            Outcome::Unknown => None,
        };
        Some(match (&op.call, known) {
            (Call::Get { .. }, None) => return None,
            (Call::Get { .. }, Some(Output::Read(v))) => Step::Read(self.number(v.as_deref())),
            (Call::Set { value, .. }, Some(Output::Written)) => {
                Step::Write(self.number(Some(value)))
            }
            (Call::Set { value, .. }, None) => Step::MaybeWrite(self.number(Some(value))),
            (Call::Delete { .. }, Some(Output::Written)) => Step::Write(ABSENT),
            (Call::Delete { .. }, None) => Step::MaybeWrite(ABSENT),
            (Call::CompareAndSet { expected, new, .. }, known) => {
                let expected = self.number(expected.as_deref());
                let new = self.number(new.as_deref());
                match known {
                    Some(Output::Swapped(true)) => Step::Swapped { expected, new },
                    Some(Output::Swapped(false)) => Step::NotSwapped { expected },
                    None => Step::MaybeSwapped { expected, new },
                    Some(_) => Step::Read(State::MAX),
                }
            }
            (_, Some(_)) => Step::Read(State::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_register() {
        let (a, b) = (1, 2);
        assert_eq!(Step::Read(ABSENT).apply(ABSENT), Some(ABSENT));
        assert_eq!(Step::Read(a).apply(ABSENT), None);
        assert_eq!(Step::Write(a).apply(b), Some(a));
        assert_eq!(
            Step::Swapped {
                expected: a,
                new: b
            }
            .apply(a),
            Some(b)
        );
        assert_eq!(
            Step::Swapped {
                expected: a,
                new: b
            }
            .apply(b),
            None
        );
        assert_eq!(Step::NotSwapped { expected: a }.apply(a), None);
        assert_eq!(Step::NotSwapped { expected: a }.apply(b), Some(b));
        assert_eq!(
            Step::MaybeSwapped {
                expected: ABSENT,
                new: a
            }
            .apply(ABSENT),
            Some(a)
        );
        assert!(!Step::MaybeWrite(a).required());
        assert!(Step::Write(a).required());
    }
}
