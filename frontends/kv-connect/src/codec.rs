//! Between the wire (`proto`) and the engine: decoding requests with every check a client
//! can fail, and encoding results.

use strata_engine::{
    AtomicWrite, Check, Encoding, Enqueue, Entry, Mutation, MutationKind, ReadRange, Value,
    Versionstamp, VersionstampSuffix,
};

use crate::error::ApiError;
use crate::proto;

pub fn encoding_from_wire(e: i32) -> Result<Encoding, ApiError> {
    match proto::ValueEncoding::try_from(e) {
        Ok(proto::ValueEncoding::VeV8) => Ok(Encoding::V8),
        Ok(proto::ValueEncoding::VeLe64) => Ok(Encoding::U64),
        Ok(proto::ValueEncoding::VeBytes) => Ok(Encoding::Bytes),
        _ => Err(ApiError::bad(format!("unknown value encoding {e}"))),
    }
}

pub fn encoding_to_wire(e: Encoding) -> i32 {
    match e {
        Encoding::V8 => proto::ValueEncoding::VeV8 as i32,
        Encoding::U64 => proto::ValueEncoding::VeLe64 as i32,
        Encoding::Bytes | Encoding::Custom(_) => proto::ValueEncoding::VeBytes as i32,
    }
}

pub fn entry_to_wire(e: Entry) -> proto::KvEntry {
    proto::KvEntry {
        key: e.key,
        encoding: encoding_to_wire(e.value.encoding),
        value: e.value.data,
        versionstamp: e.versionstamp.0.to_vec(),
    }
}

pub fn read_ranges(req: proto::SnapshotRead) -> Result<Vec<ReadRange>, ApiError> {
    req.ranges
        .into_iter()
        .map(|r| {
            if r.limit <= 0 {
                return Err(ApiError::bad(format!(
                    "a read range's limit must be at least 1, got {}",
                    r.limit
                )));
            }
            Ok(ReadRange {
                start: r.start,
                end: r.end,
                limit: r.limit as usize,
                reverse: r.reverse,
            })
        })
        .collect()
}

fn value(v: Option<proto::KvValue>, what: &str) -> Result<Value, ApiError> {
    let v = v.ok_or_else(|| ApiError::bad(format!("{what} mutation without a value")))?;
    let encoding = encoding_from_wire(v.encoding)?;
    if encoding == Encoding::U64 && v.data.len() != 8 {
        return Err(ApiError::bad(format!(
            "a KvU64 (LE64) value must be 8 bytes, got {}",
            v.data.len()
        )));
    }
    Ok(Value {
        encoding,
        data: v.data,
    })
}

fn expiry(ms: i64) -> Result<Option<u64>, ApiError> {
    match ms {
        0 | -1 => Ok(None),
        ms if ms < 0 => Err(ApiError::bad(format!(
            "invalid expire_at_ms {ms}: use 0 for no expiry"
        ))),
        ms => Ok(Some(ms as u64)),
    }
}

pub fn atomic_write(req: proto::AtomicWrite) -> Result<AtomicWrite, ApiError> {
    let mut w = AtomicWrite::new();
    for c in req.checks {
        let versionstamp = match c.versionstamp.len() {
            0 => None,
            10 => Versionstamp::from_slice(&c.versionstamp),
            n => {
                return Err(ApiError::bad(format!(
                    "a check's versionstamp must be 10 bytes or empty, got {n}"
                )))
            }
        };
        w.checks.push(Check {
            key: c.key,
            versionstamp,
        });
    }
    for m in req.mutations {
        let kind = match proto::MutationType::try_from(m.mutation_type) {
            Ok(proto::MutationType::MSet) => MutationKind::Set {
                value: value(m.value, "set")?,
                expires_at: expiry(m.expire_at_ms)?,
            },
            Ok(proto::MutationType::MDelete) => MutationKind::Delete,
            Ok(
                t @ (proto::MutationType::MSum
                | proto::MutationType::MMin
                | proto::MutationType::MMax),
            ) => {
                let name = match t {
                    proto::MutationType::MSum => "sum",
                    proto::MutationType::MMin => "min",
                    _ => "max",
                };
                let v = m
                    .value
                    .ok_or_else(|| ApiError::bad(format!("{name} mutation without an operand")))?;
                let encoding = encoding_from_wire(v.encoding)?;
                if encoding != Encoding::U64 {
                    return Err(ApiError::bad(format!(
                        "Failed to perform '{name}' mutation on a non-U64 operand"
                    )));
                }
                if v.data.len() != 8 {
                    return Err(ApiError::bad(format!(
                        "a KvU64 (LE64) operand must be 8 bytes, got {}",
                        v.data.len()
                    )));
                }
                let operand = Value {
                    encoding,
                    data: v.data,
                };
                match t {
                    proto::MutationType::MSum => MutationKind::Sum(operand),
                    proto::MutationType::MMin => MutationKind::Min(operand),
                    _ => MutationKind::Max(operand),
                }
            }
            Ok(proto::MutationType::MSetSuffixVersionstampedKey) => {
                MutationKind::SetVersionstampedKey {
                    value: value(m.value, "set")?,
                    expires_at: expiry(m.expire_at_ms)?,
                    suffix: VersionstampSuffix::TupleHex,
                }
            }
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown mutation type {}",
                    m.mutation_type
                )))
            }
        };
        w.mutations.push(Mutation { key: m.key, kind });
    }
    for e in req.enqueues {
        if e.deadline_ms < 0 {
            return Err(ApiError::bad(format!(
                "invalid enqueue deadline {}",
                e.deadline_ms
            )));
        }
        w.enqueues.push(Enqueue {
            payload: Value {
                encoding: Encoding::V8,
                data: e.payload,
            },
            deliver_at: e.deadline_ms as u64,
            dead_letter_keys: e.keys_if_undelivered,
            backoff_schedule: if e.backoff_schedule.is_empty() {
                None
            } else {
                Some(e.backoff_schedule)
            },
        });
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &[u8], encoding: i32, data: Vec<u8>) -> proto::Mutation {
        proto::Mutation {
            key: key.to_vec(),
            value: Some(proto::KvValue { data, encoding }),
            mutation_type: proto::MutationType::MSet as i32,
            ..Default::default()
        }
    }

    #[test]
    fn malformed_writes_are_refused() {
        let bad = |m: proto::Mutation| {
            atomic_write(proto::AtomicWrite {
                mutations: vec![m],
                ..Default::default()
            })
        };
        assert!(bad(set(b"k", 2, vec![1, 2, 3])).is_err(), "short LE64");
        assert!(bad(set(b"k", 0, vec![])).is_err(), "unspecified encoding");
        assert!(bad(set(b"k", 77, vec![])).is_err(), "unknown encoding");
        let mut m = set(b"k", 3, vec![]);
        m.expire_at_ms = -5;
        assert!(bad(m).is_err(), "negative expiry");
        let mut m = set(b"k", 3, vec![]);
        m.mutation_type = 42;
        assert!(bad(m).is_err(), "unknown mutation");
        let mut m = set(b"k", 3, vec![]);
        m.value = None;
        assert!(bad(m).is_err(), "missing value");
        let mut m = set(b"k", 1, vec![1]);
        m.mutation_type = proto::MutationType::MSum as i32;
        assert!(bad(m).is_err(), "V8 sum");
        let c = proto::Check {
            key: b"k".to_vec(),
            versionstamp: vec![1; 3],
        };
        assert!(atomic_write(proto::AtomicWrite {
            checks: vec![c],
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn expiry_conventions() {
        assert_eq!(expiry(0).ok(), Some(None));
        assert_eq!(expiry(-1).ok(), Some(None));
        assert_eq!(expiry(1234).ok(), Some(Some(1234)));
        assert!(expiry(-2).is_err());
    }
}
