//! Atomic writes (the Deno KV model): checks, mutations and enqueues, all or nothing, under
//! one versionstamp. Validation here runs before the commit enters the pipeline, so a
//! request that breaks a limit never reaches the store.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::limits::Limits;
use crate::value::{Encoding, Value, Versionstamp};

/// "This key's versionstamp is `versionstamp`" (`None`: the key does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub key: Vec<u8>,
    pub versionstamp: Option<Versionstamp>,
}

/// How a versionstamped key is completed when its commit is sequenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionstampSuffix {
    /// The 10 raw bytes.
    Raw,
    /// A tuple-encoded string part: `0x02`, 20 lowercase hex characters, `0x00` (KV Connect).
    TupleHex,
}

impl VersionstampSuffix {
    pub(crate) fn append(self, key: &mut Vec<u8>, vs: Versionstamp) {
        match self {
            VersionstampSuffix::Raw => key.extend_from_slice(&vs.0),
            VersionstampSuffix::TupleHex => {
                key.push(0x02);
                key.extend_from_slice(vs.to_hex().as_bytes());
                key.push(0x00);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutationKind {
    /// Upsert; `expires_at` in ms since the epoch, `None` never.
    Set {
        value: Value,
        expires_at: Option<u64>,
    },
    Delete,
    /// Add (wrapping) a U64 operand; a missing key becomes the operand.
    Sum(Value),
    /// Keep the smaller (unsigned) of the stored U64 and the operand.
    Min(Value),
    /// Keep the larger (unsigned) of the stored U64 and the operand.
    Max(Value),
    /// Set the key made of this key plus the commit's versionstamp.
    SetVersionstampedKey {
        value: Value,
        expires_at: Option<u64>,
        suffix: VersionstampSuffix,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub key: Vec<u8>,
    pub kind: MutationKind,
}

impl Mutation {
    pub fn set(key: impl Into<Vec<u8>>, value: Value) -> Self {
        Mutation {
            key: key.into(),
            kind: MutationKind::Set {
                value,
                expires_at: None,
            },
        }
    }
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Mutation {
            key: key.into(),
            kind: MutationKind::Delete,
        }
    }
    pub fn sum(key: impl Into<Vec<u8>>, n: u64) -> Self {
        Mutation {
            key: key.into(),
            kind: MutationKind::Sum(Value::u64(n)),
        }
    }
}

/// A queue message to enqueue with the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueue {
    pub payload: Value,
    /// When the message becomes deliverable, ms since the epoch (0: now).
    pub deliver_at: u64,
    /// Where the payload is written if every delivery attempt fails.
    pub dead_letter_keys: Vec<Vec<u8>>,
    /// Delays between attempts, in ms; `None` uses [`crate::queue::DEFAULT_BACKOFF`].
    pub backoff_schedule: Option<Vec<u32>>,
}

impl Enqueue {
    pub fn now(payload: Value) -> Self {
        Enqueue {
            payload,
            deliver_at: 0,
            dead_letter_keys: vec![],
            backoff_schedule: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicWrite {
    pub checks: Vec<Check>,
    pub mutations: Vec<Mutation>,
    pub enqueues: Vec<Enqueue>,
}

impl AtomicWrite {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn check(mut self, key: impl Into<Vec<u8>>, versionstamp: Option<Versionstamp>) -> Self {
        self.checks.push(Check {
            key: key.into(),
            versionstamp,
        });
        self
    }
    pub fn mutate(mut self, m: Mutation) -> Self {
        self.mutations.push(m);
        self
    }
    pub fn set(self, key: impl Into<Vec<u8>>, value: Value) -> Self {
        self.mutate(Mutation::set(key, value))
    }
    pub fn delete(self, key: impl Into<Vec<u8>>) -> Self {
        self.mutate(Mutation::delete(key))
    }
    pub fn enqueue(mut self, e: Enqueue) -> Self {
        self.enqueues.push(e);
        self
    }
}

/// The outcome of an atomic write that the engine accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitOutcome {
    Committed(Versionstamp),
    /// Nothing was written; the indexes of the checks that failed.
    CheckFailed(Vec<usize>),
}

impl CommitOutcome {
    pub fn versionstamp(&self) -> Option<Versionstamp> {
        match self {
            CommitOutcome::Committed(v) => Some(*v),
            CommitOutcome::CheckFailed(_) => None,
        }
    }
}

pub(crate) fn check_key(limits: &Limits, key: &[u8], write: bool) -> Result<()> {
    let (max, limit) = if write {
        (limits.max_write_key_bytes, "write key size")
    } else {
        (limits.max_read_key_bytes, "read key size")
    };
    if key.len() > max {
        return Err(EngineError::limit(
            limit,
            "key",
            format!("{} bytes", key.len()),
            format!("{max} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn check_value(limits: &Limits, value: &Value) -> Result<()> {
    if value.data.len() > limits.max_value_bytes {
        return Err(EngineError::limit(
            "value size",
            "value",
            format!("{} bytes", value.data.len()),
            format!("{} bytes", limits.max_value_bytes),
        ));
    }
    if value.encoding == Encoding::U64 && value.data.len() != 8 {
        return Err(EngineError::InvalidRequest(format!(
            "a U64 value must be exactly 8 bytes, got {}",
            value.data.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_expiry(expires_at: Option<u64>) -> Result<()> {
    if expires_at == Some(0) {
        return Err(EngineError::InvalidRequest(
            "expiry time 0 is not a valid deadline; use no expiry".into(),
        ));
    }
    Ok(())
}

/// Check every limit of an atomic write; nothing is written if this fails.
pub(crate) fn validate(limits: &Limits, w: &AtomicWrite, now: u64) -> Result<()> {
    if w.checks.len() > limits.max_checks {
        return Err(EngineError::limit(
            "checks per atomic write",
            "checks",
            w.checks.len(),
            limits.max_checks,
        ));
    }
    let ops = w.mutations.len() + w.enqueues.len();
    if ops > limits.max_mutations {
        return Err(EngineError::limit(
            "mutations per atomic write",
            "mutations and enqueues",
            ops,
            limits.max_mutations,
        ));
    }
    let mut total = 0usize;
    for c in &w.checks {
        check_key(limits, &c.key, false)?;
        total += c.key.len();
    }
    for m in &w.mutations {
        check_key(limits, &m.key, true)?;
        total += m.key.len();
        match &m.kind {
            MutationKind::Set { value, expires_at }
            | MutationKind::SetVersionstampedKey {
                value, expires_at, ..
            } => {
                check_value(limits, value)?;
                check_expiry(*expires_at)?;
                total += value.data.len();
            }
            MutationKind::Delete => {}
            MutationKind::Sum(v) | MutationKind::Min(v) | MutationKind::Max(v) => {
                let name = match &m.kind {
                    MutationKind::Sum(_) => "sum",
                    MutationKind::Min(_) => "min",
                    _ => "max",
                };
                if v.as_u64().is_none() {
                    return Err(EngineError::InvalidMutation(format!(
                        "Failed to perform '{name}' mutation on a non-U64 operand"
                    )));
                }
                total += v.data.len();
            }
        }
    }
    for e in &w.enqueues {
        check_value(limits, &e.payload)?;
        total += e.payload.data.len();
        if e.deliver_at > now.saturating_add(limits.max_enqueue_delay_ms) {
            return Err(EngineError::limit(
                "enqueue delay",
                "delay",
                format!("{} ms", e.deliver_at - now),
                format!("{} ms", limits.max_enqueue_delay_ms),
            ));
        }
        if e.dead_letter_keys.len() > limits.max_dead_letter_keys {
            return Err(EngineError::limit(
                "dead-letter keys per message",
                "keys_if_undelivered",
                e.dead_letter_keys.len(),
                limits.max_dead_letter_keys,
            ));
        }
        for k in &e.dead_letter_keys {
            check_key(limits, k, true)?;
            total += k.len();
        }
        if let Some(b) = &e.backoff_schedule {
            if b.len() > limits.max_backoff_entries {
                return Err(EngineError::limit(
                    "backoff schedule length",
                    "backoff_schedule entries",
                    b.len(),
                    limits.max_backoff_entries,
                ));
            }
            if let Some(big) = b.iter().find(|&&d| d > limits.max_backoff_ms) {
                return Err(EngineError::limit(
                    "backoff step",
                    "backoff step",
                    format!("{big} ms"),
                    format!("{} ms", limits.max_backoff_ms),
                ));
            }
            total += 4 * b.len();
        }
    }
    if total > limits.max_write_bytes {
        return Err(EngineError::limit(
            "total atomic write size",
            "atomic write",
            format!("{total} bytes"),
            format!("{} bytes", limits.max_write_bytes),
        ));
    }
    Ok(())
}
