//! KV access beside SQL: get, set, delete and list printable keys of a database.
//!
//! A key is the UTF-8 bytes of its text, the keys `strata kv` reads and writes. Keys
//! starting at byte `0xF0` (a character from U+10000 up) belong to the SQL and typed layers,
//! which keep their tables and trees in the same keyspace, so they are refused here and never
//! listed: a KV write cannot reach a table's rows.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use strata_engine::{
    AtomicWrite, Database, Encoding, Entry, Mutation, MutationKind, ReadAt, ReadRange, Value,
};

use crate::error::{RestError, Result};

/// The first key byte the layers above KV use (SQL tables; typed trees sit above it too).
const LAYER_KEYS: u8 = strata_sql::codec::SQL_PREFIX;

/// A key and its value.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KvEntry {
    pub key: String,
    /// A string (`text`, or base64 for `bytes`), or a number (`u64`).
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// `text` (UTF-8), `bytes` (base64 in `value`), `u64`, or `v8` (base64; written by Deno).
    pub encoding: String,
    /// The 10-byte versionstamp of the key's last write, in hex.
    pub versionstamp: String,
    /// When the key expires, in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// The body of a KV set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvSet {
    /// A string, or a non-negative integer with `encoding: "u64"`.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// `text` (the default), `bytes` (`value` is base64) or `u64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Delete the key this many milliseconds from now.
    #[serde(default)]
    pub expire_in_ms: Option<u64>,
}

/// The answer to a KV write.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KvWritten {
    /// The versionstamp of the commit.
    pub versionstamp: String,
}

/// A page of a KV listing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KvPage {
    pub entries: Vec<KvEntry>,
    /// Pass as `cursor` for the next page; absent on the last page. It names the last key
    /// exactly, whatever its bytes (base64url), so paging never skips or repeats a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The query of a KV listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KvList {
    /// Only keys starting with this text.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Continue after this key, given as text.
    #[serde(default)]
    pub after: Option<String>,
    /// Continue after the last key of the previous page: its `next`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// At most this many entries (default 100, at most the database's read limit).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Largest keys first.
    #[serde(default)]
    pub reverse: Option<bool>,
}

/// A key from its text: printable and below the layers' keys.
pub fn key(text: &str) -> Result<Vec<u8>> {
    if text.is_empty() {
        return Err(RestError::bad("a key cannot be empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(RestError::bad(
            "a key over HTTP is printable text: control characters are not allowed",
        ));
    }
    if text.as_bytes()[0] >= LAYER_KEYS {
        return Err(RestError::bad(
            "keys starting with a character from U+10000 up are kept for SQL tables and \
             typed trees",
        ));
    }
    Ok(text.as_bytes().to_vec())
}

/// A value as JSON, and the name of its encoding: text as a string, a `u64` as a number,
/// anything else base64.
pub(crate) fn value_json(v: &Value) -> (serde_json::Value, &'static str) {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    match v.encoding {
        Encoding::U64 => match v.as_u64() {
            Some(n) => (serde_json::Value::from(n), "u64"),
            None => (serde_json::Value::String(b64(&v.data)), "bytes"),
        },
        Encoding::Bytes => match std::str::from_utf8(&v.data) {
            Ok(s) => (serde_json::Value::String(s.to_string()), "text"),
            Err(_) => (serde_json::Value::String(b64(&v.data)), "bytes"),
        },
        Encoding::V8 => (serde_json::Value::String(b64(&v.data)), "v8"),
        Encoding::Custom(_) => (serde_json::Value::String(b64(&v.data)), "bytes"),
    }
}

/// Any key as text: a printable UTF-8 key as it is; otherwise printable ASCII bytes as they
/// are and every other byte as `\xNN` (a Deno key `["failed", "job"]` shows as
/// `\x02failed\x00\x02job\x00`).
pub(crate) fn show_key(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => bytes
            .iter()
            .map(|&b| match b {
                b'\\' => "\\\\".to_string(),
                0x20..=0x7e => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect(),
    }
}

fn entry(e: Entry) -> KvEntry {
    let (value, encoding) = value_json(&e.value);
    KvEntry {
        key: show_key(&e.key),
        value,
        encoding: encoding.to_string(),
        versionstamp: e.versionstamp.to_string(),
        expires_at: e.expires_at,
    }
}

pub async fn get(db: &Database, text: &str) -> Result<KvEntry> {
    let k = key(text)?;
    match db.get(&k).await? {
        Some(e) => Ok(entry(e)),
        None => Err(RestError::not_found(format!("key {text:?} is not set"))),
    }
}

pub async fn set(db: &Database, text: &str, body: KvSet) -> Result<KvWritten> {
    let k = key(text)?;
    let value = match (body.encoding.as_deref().unwrap_or("text"), &body.value) {
        ("text", serde_json::Value::String(s)) => Value::bytes(s.as_bytes().to_vec()),
        ("bytes", serde_json::Value::String(s)) => Value::bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| RestError::bad(format!("value is not base64: {e}")))?,
        ),
        ("u64", serde_json::Value::Number(n)) => match n.as_u64() {
            Some(n) => Value::u64(n),
            None => return Err(RestError::bad("a u64 value is an integer from 0 to 2^64-1")),
        },
        ("text" | "bytes", _) => return Err(RestError::bad("value is a string")),
        ("u64", _) => return Err(RestError::bad("a u64 value is a JSON integer")),
        (other, _) => {
            return Err(RestError::bad(format!(
                "unknown encoding {other:?}: text, bytes or u64"
            )))
        }
    };
    let expires_at = match body.expire_in_ms {
        Some(ms) => Some(
            strata_engine::now_ms()
                .checked_add(ms.max(1))
                .ok_or_else(|| RestError::bad("expire_in_ms is too large"))?,
        ),
        None => None,
    };
    let m = Mutation {
        key: k,
        kind: MutationKind::Set { value, expires_at },
    };
    written(db.atomic_write(AtomicWrite::new().mutate(m)).await?)
}

pub async fn delete(db: &Database, text: &str) -> Result<KvWritten> {
    let k = key(text)?;
    written(db.atomic_write(AtomicWrite::new().delete(k)).await?)
}

fn written(outcome: strata_engine::CommitOutcome) -> Result<KvWritten> {
    match outcome.versionstamp() {
        Some(vs) => Ok(KvWritten {
            versionstamp: vs.to_string(),
        }),
        None => Err(RestError::Engine(strata_engine::EngineError::Conflict)),
    }
}

pub async fn list(db: &Database, q: KvList) -> Result<KvPage> {
    let max = db.options().limits.max_read_entries;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(RestError::bad(format!("limit is from 1 to {max}")));
    }
    let prefix = match q.prefix.as_deref() {
        None | Some("") => Vec::new(),
        Some(p) => key(p)?,
    };
    let reverse = q.reverse.unwrap_or(false);
    let mut start = prefix.clone();
    let mut end = prefix_end(&prefix);
    let after = match (q.after.as_deref(), q.cursor.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(RestError::bad(
                "give `after` (a key) or `cursor` (a page's `next`), not both",
            ))
        }
        (Some(text), None) => Some(key(text)?),
        (None, Some(cursor)) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cursor)
                .map_err(|_| RestError::bad("cursor is not a `next` from a listing"))?,
        ),
        (None, None) => None,
    };
    // Within the prefix and below the layers' keys, whatever a cursor says.
    if let Some(mut after) = after {
        if reverse {
            end = end.min(after);
        } else {
            after.push(0);
            start = start.max(after);
        }
    }
    // One more than asked, to know whether a next page exists.
    let mut range = ReadRange::new(start, end, (limit + 1).min(max));
    range.reverse = reverse;
    let read = db.snapshot_read(&[range], ReadAt::Latest).await?;
    let mut entries: Vec<Entry> = read.ranges.into_iter().flatten().collect();
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next = match (more, entries.last()) {
        (true, Some(e)) => Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&e.key)),
        _ => None,
    };
    Ok(KvPage {
        entries: entries.into_iter().map(entry).collect(),
        next,
    })
}

/// The end of the keys starting with `prefix`, never past the KV keys.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match strata_engine::prefix_end(prefix) {
        end if end.is_empty() => vec![LAYER_KEYS],
        end => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_shows_as_text() {
        assert_eq!(show_key(b"users/1"), "users/1");
        assert_eq!(show_key(b"\x02job\x00"), "\\x02job\\x00");
        assert_eq!(show_key(b"a\\\xff"), "a\\\\\\xff");
    }

    /// Keys of any bytes (as Deno writes them) page through `next`/`cursor` exactly: every
    /// key once, in order, forwards and backwards.
    #[tokio::test]
    async fn paging_by_cursor_visits_every_key_of_any_bytes_once() {
        let engine = strata_engine::Engine::new(
            std::sync::Arc::new(strata_backend_memory::MemoryBackend::default()),
            strata_engine::EngineConfig::default(),
        );
        let db = engine.create_database("app", None).await.unwrap();
        let keys: Vec<Vec<u8>> = vec![
            b"\x02failed\x00\x02job\x00".to_vec(),
            b"\x02failed\x00\x02job\x00\x00".to_vec(),
            b"a\xffb".to_vec(),
            b"plain".to_vec(),
            "\u{e9}t\u{e9}".as_bytes().to_vec(),
        ];
        let mut w = AtomicWrite::new();
        for k in &keys {
            w = w.set(k.clone(), Value::bytes(b"v".to_vec()));
        }
        db.atomic_write(w).await.unwrap();
        let mut sorted = keys.clone();
        sorted.sort();
        for reverse in [false, true] {
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let page = list(
                    &db,
                    KvList {
                        limit: Some(1),
                        cursor: cursor.clone(),
                        reverse: Some(reverse),
                        ..KvList::default()
                    },
                )
                .await
                .unwrap();
                seen.extend(page.entries.iter().map(|e| e.key.clone()));
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            let mut want: Vec<String> = sorted.iter().map(|k| show_key(k)).collect();
            if reverse {
                want.reverse();
            }
            assert_eq!(seen, want);
        }
        // A made-up cursor past the KV keys lists no SQL or typed key, nor one outside the
        // prefix.
        let mut w = AtomicWrite::new();
        w = w.set(vec![LAYER_KEYS, 1, 2], Value::bytes(b"layer".to_vec()));
        db.atomic_write(w).await.unwrap();
        let beyond = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff]);
        for (prefix, reverse) in [(None, true), (Some("pl"), true), (Some("pl"), false)] {
            let page = list(
                &db,
                KvList {
                    prefix: prefix.map(Into::into),
                    cursor: Some(if reverse { beyond.clone() } else { "AA".into() }),
                    reverse: Some(reverse),
                    ..KvList::default()
                },
            )
            .await
            .unwrap();
            let got: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
            match prefix {
                None => assert_eq!(got.len(), keys.len(), "{got:?}"),
                Some(_) => assert_eq!(got, ["plain"]),
            }
        }
        let bad = KvList {
            cursor: Some("not base64!".into()),
            ..KvList::default()
        };
        assert!(list(&db, bad).await.is_err());
        let both = KvList {
            after: Some("plain".into()),
            cursor: Some("cGxhaW4".into()),
            ..KvList::default()
        };
        match list(&db, both).await {
            Err(e) => assert_eq!(axum::response::IntoResponse::into_response(e).status(), 400),
            Ok(_) => panic!("after and cursor together are refused"),
        }
        engine.close().await;
    }

    #[test]
    fn keys_are_printable_and_below_the_layers() {
        assert_eq!(key("users/alice").unwrap(), b"users/alice");
        assert!(key("").is_err());
        assert!(key("a\nb").is_err());
        assert!(key("\u{1F600}smile").is_err());
        assert!(key("é").is_ok());
        assert_eq!(prefix_end(b""), vec![LAYER_KEYS]);
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
    }
}
