//! What a history is made of: operations on a key-value register, each with the client that
//! made it, the interval in which it ran, and what it returned — and the JSON-lines form in
//! which separate processes write their parts of one history.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a client asked for. Every call touches one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Read the key's value.
    Get {
        #[serde(with = "hex")]
        key: Vec<u8>,
    },
    /// Write a value.
    Set {
        #[serde(with = "hex")]
        key: Vec<u8>,
        #[serde(with = "hex")]
        value: Vec<u8>,
    },
    /// Remove the key.
    Delete {
        #[serde(with = "hex")]
        key: Vec<u8>,
    },
    /// Write `new` (`None`: remove the key) if and only if the key's value is `expected`
    /// (`None`: the key is absent).
    CompareAndSet {
        #[serde(with = "hex")]
        key: Vec<u8>,
        #[serde(with = "hex_opt")]
        expected: Option<Vec<u8>>,
        #[serde(with = "hex_opt")]
        new: Option<Vec<u8>>,
    },
}

impl Call {
    pub fn key(&self) -> &[u8] {
        match self {
            Call::Get { key }
            | Call::Set { key, .. }
            | Call::Delete { key }
            | Call::CompareAndSet { key, .. } => key,
        }
    }

    /// Whether `output` is the kind of answer this call gives.
    fn accepts(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Call::Get { .. }, Output::Read(_))
                | (Call::Set { .. } | Call::Delete { .. }, Output::Written)
                | (Call::CompareAndSet { .. }, Output::Swapped(_))
        )
    }
}

/// What a call returned, when it returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A `Get` saw this value (`None`: the key was absent).
    Read(#[serde(with = "hex_opt")] Option<Vec<u8>>),
    /// A `Set` or `Delete` took effect.
    Written,
    /// Whether a `CompareAndSet` found the expected value and wrote.
    Swapped(bool),
}

/// How an operation ended.
///
/// An operation that failed in a way that proves it had no effect (a conflict, a rejected
/// request, a retryable error raised before anything was sent) is not part of a history at
/// all: the recorder drops it (see [`crate::linearizability::Pending::failed`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It returned this.
    Ok(Output),
    /// No answer (a timeout, a lost response, "commit result unknown"): the operation may
    /// have taken effect at any moment after its invocation, or never. The checker treats
    /// its completion as infinitely late. An unknown `Get` tells nothing and is ignored.
    Unknown,
}

/// One operation of a history.
///
/// Times are nanoseconds on one clock shared by every client of the history: the recorder's
/// own monotonic clock within a process, or the system clock (ns since the Unix epoch) for
/// histories merged from several processes — `Instant`s of different processes cannot be
/// compared. Invocation is taken before the request leaves, completion after the answer
/// arrived, so the interval contains the moment the operation took effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client (process, task) that made the call; a client makes one call at a time.
    pub client: u64,
    pub invoked: u64,
    /// When the outcome was known (for an unknown outcome: when the client gave up).
    pub completed: u64,
    pub call: Call,
    pub outcome: Outcome,
}

impl Operation {
    pub fn key(&self) -> &[u8] {
        self.call.key()
    }

    /// The completion the checker uses: infinitely late for an unknown outcome.
    pub(crate) fn effective_completion(&self) -> u64 {
        match self.outcome {
            Outcome::Ok(_) => self.completed,
            Outcome::Unknown => u64::MAX,
        }
    }
}

/// A history is malformed: the checker cannot judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// Line `line` (from 1) of a JSON-lines history is not an operation.
    Json { line: usize, message: String },
    /// Operation `index` is impossible as recorded.
    Malformed { index: usize, reason: String },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Json { line, message } => {
                write!(f, "history line {line} is not an operation: {message}")
            }
            HistoryError::Malformed { index, reason } => {
                write!(f, "history operation {index} is malformed: {reason}")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// A list of operations, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    /// Add every operation of `other` (another process's part of the same history).
    pub fn merge(&mut self, other: History) {
        self.ops.extend(other.ops);
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Every operation as one JSON object per line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            // An operation is plain data (strings, numbers, enums): it always serializes.
            if let Ok(line) = serde_json::to_string(op) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Parse what [`History::to_json_lines`] wrote (blank lines are skipped).
    pub fn from_json_lines(text: &str) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(line).map_err(|e| HistoryError::Json {
                line: i + 1,
                message: e.to_string(),
            })?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Check that every operation is possible as recorded: it completed no earlier than it
    /// was invoked, and its output is the kind its call gives.
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (index, op) in self.ops.iter().enumerate() {
            if op.completed < op.invoked {
                return Err(HistoryError::Malformed {
                    index,
                    reason: format!(
                        "completed at {} ns, before its invocation at {} ns",
                        op.completed, op.invoked
                    ),
                });
            }
            if let Outcome::Ok(output) = &op.outcome {
                if !op.call.accepts(output) {
                    return Err(HistoryError::Malformed {
                        index,
                        reason: format!("{output:?} is not an answer to {:?}", op.call),
                    });
                }
            }
        }
        Ok(())
    }
}

impl From<Vec<Operation>> for History {
    fn from(ops: Vec<Operation>) -> Self {
        History { ops }
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        History {
            ops: iter.into_iter().collect(),
        }
    }
}

/// Bytes as they read best: a quoted string when printable ASCII, otherwise `0x` and hex.
pub(crate) struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "\"{}\"", String::from_utf8_lossy(self.0))
        } else {
            write!(f, "0x")?;
            for b in self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

/// A value or its absence.
pub(crate) struct ShownValue<'a>(pub Option<&'a [u8]>);

impl fmt::Display for ShownValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => Shown(v).fmt(f),
            None => write!(f, "absent"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get { key } => write!(f, "get {}", Shown(key)),
            Call::Set { key, value } => write!(f, "set {} = {}", Shown(key), Shown(value)),
            Call::Delete { key } => write!(f, "delete {}", Shown(key)),
            Call::CompareAndSet { key, expected, new } => write!(
                f,
                "cas {} {} -> {}",
                Shown(key),
                ShownValue(expected.as_deref()),
                ShownValue(new.as_deref())
            ),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Output::Read(v)) => write!(f, "read {}", ShownValue(v.as_deref())),
            Outcome::Ok(Output::Written) => write!(f, "ok"),
            Outcome::Ok(Output::Swapped(true)) => write!(f, "swapped"),
            Outcome::Ok(Output::Swapped(false)) => write!(f, "not swapped"),
            Outcome::Unknown => write!(f, "unknown (may or may not have applied)"),
        }
    }
}

/// Bytes as a hex string in JSON.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(serde::de::Error::custom)
    }

    pub fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        if !text.len().is_multiple_of(2) {
            return Err(format!("odd-length hex {text:?}"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| format!("not hex: {text:?}"))
            })
            .collect()
    }
}

/// An optional value as a hex string or `null` in JSON.
mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&super::hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::hex::decode(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History::from(vec![
            Operation {
                client: 1,
                invoked: 10,
                completed: 20,
                call: Call::Set {
                    key: b"k".to_vec(),
                    value: vec![0, 255],
                },
                outcome: Outcome::Ok(Output::Written),
            },
            Operation {
                client: 2,
                invoked: 15,
                completed: 30,
                call: Call::CompareAndSet {
                    key: b"k".to_vec(),
                    expected: None,
                    new: Some(b"x".to_vec()),
                },
                outcome: Outcome::Unknown,
            },
            Operation {
                client: 3,
                invoked: 40,
                completed: 50,
                call: Call::Get { key: b"k".to_vec() },
                outcome: Outcome::Ok(Output::Read(None)),
            },
        ])
    }

    #[test]
    fn json_lines_round_trip() {
        let h = sample();
        let text = h.to_json_lines();
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains(r#""value":"00ff""#), "{text}");
        assert_eq!(History::from_json_lines(&text).unwrap(), h);
    }

    #[test]
    fn parts_merge_into_one_history() {
        let mut a = sample();
        let b = History::from_json_lines(&sample().to_json_lines()).unwrap();
        a.merge(b);
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = format!("{}\nnot json\n", sample().to_json_lines());
        match History::from_json_lines(&text) {
            Err(HistoryError::Json { line, .. }) => assert_eq!(line, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_operations_are_refused() {
        let mut h = sample();
        h.push(Operation {
            client: 1,
            invoked: 100,
            completed: 90,
            call: Call::Get { key: b"k".to_vec() },
            outcome: Outcome::Ok(Output::Read(None)),
        });
        assert!(matches!(
            h.validate(),
            Err(HistoryError::Malformed { index: 3, .. })
        ));
        let mismatched = History::from(vec![Operation {
            client: 1,
            invoked: 1,
            completed: 2,
            call: Call::Get { key: b"k".to_vec() },
            outcome: Outcome::Ok(Output::Written),
        }]);
        assert!(mismatched.validate().is_err());
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(Shown(b"c1-7").to_string(), "\"c1-7\"");
        assert_eq!(Shown(&[0, 1]).to_string(), "0x0001");
        assert_eq!(ShownValue(None).to_string(), "absent");
    }
}
