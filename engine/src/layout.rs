//! How the engine lays a database out as backend keys.
//!
//! Every concept is a key family under a one-byte prefix, so that each is one ordered range:
//!
//! | family | key | value |
//! | --- | --- | --- |
//! | latest | `l` key | [`Record`] of the newest version |
//! | history | `h` esc(key) `00 00` superseded-version | [`Record`] that was newest until that version |
//! | gc index | `g` superseded-version key | empty: which history keys a version made obsolete |
//! | expiry index | `x` expires-at-ms key | empty |
//! | queue message | `q` message-id | [`crate::queue`] message record |
//! | queue ready index | `r` ready-at-ms message-id | empty |
//! | dead letters | `d` version message-id | the message record as it was dead-lettered, `ready_at` = when |
//! | commit times | `t` version | commit time in ms |
//! | write sets | `w` version chunk | keys a group's commits wrote, how, and at which version: the change feed ([`crate::feed`]) |
//! | meta | `m` name | version, horizon, database id, options, where the change feed starts |
//!
//! Integers are big-endian so that byte order is numeric order. History keys escape the user
//! key (`00` → `00 ff`) and end it with `00 00`, so that all versions of one key are
//! contiguous, newer supersessions after older ones, and no key's history interleaves another's.
//!
//! Reading the newest version is one point lookup of `l` key. Reading at an older version `v`
//! finds the first history record superseded after `v`: it is the record that was newest at
//! `v`, provided its own version is `<= v` (else the key did not exist at `v`).

use crate::value::{Encoding, Value, ValueRef, Versionstamp};

pub const LATEST: u8 = b'l';
pub const HISTORY: u8 = b'h';
pub const GC: u8 = b'g';
pub const EXPIRY: u8 = b'x';
pub const QUEUE: u8 = b'q';
pub const READY: u8 = b'r';
pub const TIMES: u8 = b't';
pub const META: u8 = b'm';
pub const WRITES: u8 = b'w';
pub const DEAD: u8 = b'd';

/// The version record: the database's version, 8 bytes big-endian. On a store several
/// processes share, each group's batch also names itself in it (8 more bytes, the group's
/// token), so that a batch conditioned on the record of the batch before it applies only
/// right after that very batch (see [`version_record`]).
pub const META_VERSION: &[u8] = b"mversion";
pub const META_HORIZON: &[u8] = b"mhorizon";
pub const META_ID: &[u8] = b"mid";
pub const META_OPTIONS: &[u8] = b"moptions";
/// The version the change feed starts after (databases created before it had none).
pub const META_FEED: &[u8] = b"mfeed";

fn prefixed(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn latest(key: &[u8]) -> Vec<u8> {
    prefixed(LATEST, &[key])
}

/// The end of the latest family for a user range end (exclusive).
pub fn latest_end(end: &[u8]) -> Vec<u8> {
    if end.is_empty() {
        vec![LATEST + 1]
    } else {
        latest(end)
    }
}

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// The first history key of `key` superseded at or after `version`.
pub fn history(key: &[u8], version: u64) -> Vec<u8> {
    let mut k = history_prefix(key);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// All history keys of `key` start with this.
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 12);
    k.push(HISTORY);
    escape_into(&mut k, key);
    k.extend_from_slice(&[0, 0]);
    k
}

/// The user key and superseded version of a history key.
pub fn parse_history(raw: &[u8]) -> Option<(Vec<u8>, u64)> {
    let body = raw.strip_prefix(&[HISTORY])?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0 {
            match body.get(i + 1) {
                Some(0xff) => {
                    key.push(0);
                    i += 2;
                }
                Some(0) => {
                    let v: [u8; 8] = body.get(i + 2..i + 10)?.try_into().ok()?;
                    return Some((key, u64::from_be_bytes(v)));
                }
                _ => return None,
            }
        } else {
            key.push(b);
            i += 1;
        }
    }
    None
}

/// The history family's range covering user keys in `[start, end)`.
pub fn history_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut s = vec![HISTORY];
    escape_into(&mut s, start);
    let e = if end.is_empty() {
        vec![HISTORY + 1]
    } else {
        let mut e = vec![HISTORY];
        escape_into(&mut e, end);
        e
    };
    (s, e)
}

pub fn gc(version: u64, key: &[u8]) -> Vec<u8> {
    prefixed(GC, &[&version.to_be_bytes(), key])
}

pub fn parse_versioned(raw: &[u8]) -> Option<(u64, &[u8])> {
    let v: [u8; 8] = raw.get(1..9)?.try_into().ok()?;
    Some((u64::from_be_bytes(v), &raw[9..]))
}

pub fn expiry(expires_at: u64, key: &[u8]) -> Vec<u8> {
    prefixed(EXPIRY, &[&expires_at.to_be_bytes(), key])
}

/// The deadline and user key of an expiry index key.
pub fn parse_expiry(raw: &[u8]) -> Option<(u64, Vec<u8>)> {
    if raw.first() != Some(&EXPIRY) {
        return None;
    }
    parse_versioned(raw).map(|(t, k)| (t, k.to_vec()))
}

pub fn times(version: u64) -> Vec<u8> {
    prefixed(TIMES, &[&version.to_be_bytes()])
}

/// A chunk of the keys a commit group wrote (multi-process stores only).
pub fn writes(version: u64, chunk: u16) -> Vec<u8> {
    prefixed(WRITES, &[&version.to_be_bytes(), &chunk.to_be_bytes()])
}

pub fn queue_message(id: &[u8]) -> Vec<u8> {
    prefixed(QUEUE, &[id])
}

/// A dead-lettered message, under the version of the commit that gave up on it.
pub fn dead_letter(version: u64, id: &[u8]) -> Vec<u8> {
    prefixed(DEAD, &[&version.to_be_bytes(), id])
}

pub fn ready(ready_at: u64, id: &[u8]) -> Vec<u8> {
    prefixed(READY, &[&ready_at.to_be_bytes(), id])
}

/// The key range `[prefix ++ from, prefix ++ to)` over an integer-first family.
pub fn int_range(prefix: u8, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
    (
        prefixed(prefix, &[&from.to_be_bytes()]),
        prefixed(prefix, &[&to.to_be_bytes()]),
    )
}

pub fn family(prefix: u8) -> (Vec<u8>, Vec<u8>) {
    (vec![prefix], vec![prefix + 1])
}

pub fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The version record's value for `version`, naming the group with `token` if given.
pub fn version_record(version: u64, token: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&version.to_be_bytes());
    if let Some(t) = token {
        v.extend_from_slice(&t.to_be_bytes());
    }
    v
}

/// The version in a version record (with or without its group's token).
pub fn record_version(b: &[u8]) -> Option<u64> {
    match b.len() {
        8 | 16 => be_u64(&b[..8]),
        _ => None,
    }
}

/// A stored version of a key: value, versionstamp, expiry, and — for restored records —
/// the version from which it is visible.
///
/// A record is visible from the version of its versionstamp, except a restored one: it
/// keeps the versionstamp its source gave it but becomes visible only with the restore
/// commit, so that reads at versions before the restore never change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Value,
    pub versionstamp: Versionstamp,
    pub expires_at: Option<u64>,
    /// The commit that made it visible, when that is not its versionstamp's version.
    pub visible_at: Option<u64>,
}

/// A stored record as [`Record::peek`] sees it.
pub(crate) struct Peek<'a> {
    pub version: u64,
    pub live: bool,
    pub value: ValueRef<'a>,
}

/// Format 1: format, versionstamp (10), encoding, expires-at (8), value.
const RECORD_FORMAT: u8 = 1;
/// Format 2: format 1's header, then the visible-at version (8), then the value.
const RESTORED_RECORD_FORMAT: u8 = 2;
const RECORD_HEADER: usize = 20;
const RESTORED_RECORD_HEADER: usize = 28;

impl Record {
    pub fn new(value: Value, versionstamp: Versionstamp, expires_at: Option<u64>) -> Self {
        Record {
            value,
            versionstamp,
            expires_at,
            visible_at: None,
        }
    }

    fn header_len(&self) -> usize {
        match self.visible_at {
            Some(_) => RESTORED_RECORD_HEADER,
            None => RECORD_HEADER,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.header_len() + self.value.data.len());
        b.push(match self.visible_at {
            Some(_) => RESTORED_RECORD_FORMAT,
            None => RECORD_FORMAT,
        });
        b.extend_from_slice(&self.versionstamp.0);
        b.push(self.value.encoding.tag());
        b.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        if let Some(v) = self.visible_at {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.value.data);
        b
    }

    /// The header fields and the header's length.
    pub(crate) fn decode_header(b: &[u8]) -> Option<(Record, usize)> {
        let header = match *b.first()? {
            RECORD_FORMAT => RECORD_HEADER,
            RESTORED_RECORD_FORMAT => RESTORED_RECORD_HEADER,
            _ => return None,
        };
        if b.len() < header {
            return None;
        }
        let versionstamp = Versionstamp::from_slice(&b[1..11])?;
        let encoding = Encoding::from_tag(b[11])?;
        let expires = be_u64(&b[12..20])?;
        let visible_at = match header {
            RESTORED_RECORD_HEADER => Some(be_u64(&b[20..28])?),
            _ => None,
        };
        let rec = Record {
            value: Value {
                encoding,
                data: Vec::new(),
            },
            versionstamp,
            expires_at: (expires != 0).then_some(expires),
            visible_at,
        };
        Some((rec, header))
    }

    /// What a reader at a version needs of a stored record, without building one: the
    /// version it is visible from, whether it is live at `now_ms`, and its value in place.
    /// The scan path calls this once per entry.
    #[inline]
    pub(crate) fn peek(b: &[u8], now_ms: u64) -> Option<Peek<'_>> {
        let header = match *b.first()? {
            RECORD_FORMAT => RECORD_HEADER,
            RESTORED_RECORD_FORMAT => RESTORED_RECORD_HEADER,
            _ => return None,
        };
        let fixed: &[u8; RECORD_HEADER] = b.get(..RECORD_HEADER)?.try_into().ok()?;
        let encoding = Encoding::from_tag(fixed[11])?;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&fixed[at..at + 8]);
            u64::from_be_bytes(w)
        };
        let version = match header {
            RESTORED_RECORD_HEADER => be_u64(b.get(20..28)?)?,
            _ => word(1),
        };
        let expires = word(12);
        Some(Peek {
            version,
            live: expires == 0 || expires > now_ms,
            value: ValueRef {
                encoding,
                data: b.get(header..)?,
            },
        })
    }

    pub fn decode(b: &[u8]) -> Option<Record> {
        let (mut rec, header) = Record::decode_header(b)?;
        rec.value.data = b[header..].to_vec();
        Some(rec)
    }

    /// Decode, reusing the buffer for the value.
    pub fn decode_owned(mut b: Vec<u8>) -> Option<Record> {
        let (mut rec, header) = Record::decode_header(&b)?;
        b.drain(..header);
        rec.value.data = b;
        Some(rec)
    }

    /// The version from which this record is visible.
    pub fn version(&self) -> u64 {
        self.visible_at
            .unwrap_or_else(|| self.versionstamp.version())
    }

    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|t| t > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_records_read_back_with_or_without_a_token() {
        assert_eq!(record_version(&version_record(7, None)), Some(7));
        assert_eq!(record_version(&version_record(7, Some(99))), Some(7));
        assert_ne!(version_record(7, Some(1)), version_record(7, Some(2)));
        assert_eq!(record_version(b"short"), None);
        assert_eq!(record_version(&[0; 12]), None);
    }

    #[test]
    fn history_keys_keep_each_keys_versions_together_and_in_order() {
        let keys: [&[u8]; 5] = [b"", b"a", b"a\x00", b"a\x00b", b"b"];
        let mut all = Vec::new();
        for k in keys {
            for v in [1u64, 2, 0xff00_0000_0000_0000] {
                all.push((history(k, v), k.to_vec(), v));
            }
        }
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted, all, "history keys sort by user key, then version");
        for (raw, k, v) in &all {
            assert_eq!(parse_history(raw), Some((k.clone(), *v)));
        }
    }

    #[test]
    fn history_range_covers_exactly_the_user_range() {
        let (s, e) = history_range(b"a", b"b");
        for (k, inside) in [
            (&b"a"[..], true),
            (b"a\x00", true),
            (b"az", true),
            (b"b", false),
            (b"", false),
        ] {
            let h = history(k, 5);
            assert_eq!(h >= s && h < e, inside, "{k:?}");
        }
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let r = Record::new(Value::u64(9), Versionstamp::from_version(3), Some(77));
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert_eq!(Record::decode_owned(r.encode()), Some(r.clone()));
        assert_eq!(r.version(), 3);
        let restored = Record {
            visible_at: Some(40),
            ..r
        };
        assert_eq!(Record::decode(&restored.encode()), Some(restored.clone()));
        assert_eq!(
            Record::decode_owned(restored.encode()),
            Some(restored.clone())
        );
        assert_eq!(restored.version(), 40, "visible from the restore commit");
        assert_eq!(Record::decode(&restored.encode()[..27]), None);
        assert_eq!(Record::decode(b"short"), None);
        let mut bad = Record::new(Value::bytes(vec![]), Versionstamp::ZERO, None).encode();
        bad[11] = 0;
        assert_eq!(Record::decode(&bad), None);
    }
}
