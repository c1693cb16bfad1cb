//! What the checker concludes, and how a violation reads.

use std::fmt;

use super::history::{Operation, Outcome, Shown};

/// The checker's conclusion about a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, each placed inside its own interval, explains every
    /// result.
    Linearizable,
    /// No order does; the violation holds a small sub-history that shows it.
    NotLinearizable(Violation),
    /// The search for some key ran out of its step budget before finding an answer (and no
    /// other key was found not linearizable).
    Inconclusive {
        key: Vec<u8>,
        /// How many operations the key has.
        ops: usize,
        /// The steps spent on it.
        steps: u64,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// A key whose operations no order explains, shrunk to a witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// A sub-history of the key that is not linearizable, and from which no single
    /// operation can be removed without it becoming so (in real-time order).
    pub ops: Vec<Operation>,
    /// How many operations the key had in the whole history.
    pub of: usize,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(v) => v.fmt(f),
            Verdict::Inconclusive { key, ops, steps } => write!(
                f,
                "inconclusive: the search over the {ops} operations of key {} gave up after {steps} steps",
                Shown(key)
            ),
        }
    }
}

impl fmt::Display for Violation {
    /// One operation per line: client, interval in µs after the first invocation (`?` for
    /// the end of an operation of unknown outcome), call and outcome.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: key {}: no order of its {} operations explains what the {} below returned",
            Shown(&self.key),
            self.of,
            self.ops.len()
        )?;
        writeln!(
            f,
            "  (times in µs after the first invocation; '?': the outcome is unknown)"
        )?;
        let origin = self.ops.iter().map(|o| o.invoked).min().unwrap_or(0);
        let micros = |t: u64| t.saturating_sub(origin) as f64 / 1000.0;
        let calls: Vec<String> = self.ops.iter().map(|o| o.call.to_string()).collect();
        let width = calls.iter().map(String::len).max().unwrap_or(0);
        for (op, call) in self.ops.iter().zip(&calls) {
            let end = match op.outcome {
                Outcome::Ok(_) => format!("{:.1}", micros(op.completed)),
                Outcome::Unknown => "?".to_string(),
            };
            writeln!(
                f,
                "  client {:>4}  [{:>10.1} .. {:>10}]  {call:<width$}  -> {}",
                op.client,
                micros(op.invoked),
                end,
                op.outcome
            )?;
        }
        Ok(())
    }
}
