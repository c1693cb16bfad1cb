//! `strata import denokv FILE`: migrate a database written by the reference KV Connect
//! server (its SQLite file) into a Strata database, losslessly: keys, values and their
//! encodings, versionstamps, expiries, and queued messages (including ones that were being
//! delivered, which become ready again: delivery is at least once).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use strata_engine::{Database, Encoding, Entry, RestoreMessage, Value, Versionstamp};

/// Entries and messages per restore commit.
const BATCH: usize = 500;

#[derive(Debug, Default)]
pub struct ImportReport {
    pub keys: usize,
    pub messages: usize,
    pub newest_versionstamp: Option<Versionstamp>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A column denokv declares as either text or blob, as text.
fn text(v: rusqlite::types::Value) -> String {
    match v {
        rusqlite::types::Value::Text(s) => s,
        rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Real(f) => f.to_string(),
        rusqlite::types::Value::Null => String::new(),
    }
}

/// The source file's rows, read in full before anything is written.
pub struct DenoKvFile {
    pub entries: Vec<Entry>,
    pub messages: Vec<RestoreMessage>,
    /// The newest version the source handed out (its `data_version`).
    pub version: u64,
}

pub fn read_denokv(path: &Path) -> Result<DenoKvFile, String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("{} is not a SQLite database: {e}", path.display()))?;
    for t in ["kv", "data_version", "queue"] {
        if !tables.iter().any(|n| n == t) {
            return Err(format!(
                "{} is not a denokv database (no table {t})",
                path.display()
            ));
        }
    }
    let mut entries = Vec::new();
    let mut st = conn
        .prepare("SELECT k, v, v_encoding, version, seq, expiration_ms FROM kv ORDER BY k")
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (key, data, encoding, version, seq, expiration) = row.map_err(err)?;
        let encoding = match encoding {
            1 => Encoding::V8,
            2 => Encoding::U64,
            3 => Encoding::Bytes,
            other => return Err(format!("key {key:?}: unknown value encoding {other}")),
        };
        // Checked here, before anything is written: a malformed file imports nothing.
        if version < 1 {
            return Err(format!(
                "key {key:?}: version {version} is not a version the server hands out (must be at least 1)"
            ));
        }
        let seq = u16::try_from(seq).map_err(|_| {
            format!("key {key:?}: versionstamp sequence {seq} is out of range (0 to 65535)")
        })?;
        let mut vs = [0u8; 10];
        vs[..8].copy_from_slice(&(version as u64).to_be_bytes());
        vs[8..].copy_from_slice(&seq.to_be_bytes());
        entries.push(Entry {
            key,
            value: Value { encoding, data },
            versionstamp: Versionstamp(vs),
            expires_at: (expiration > 0).then_some(expiration as u64),
        });
    }
    let mut messages = Vec::new();
    let running = tables.iter().any(|n| n == "queue_running");
    let mut sql = "SELECT ts, data, backoff_schedule, keys_if_undelivered FROM queue".to_string();
    if running {
        sql.push_str(" UNION ALL SELECT deadline, data, backoff_schedule, keys_if_undelivered FROM queue_running");
    }
    let mut st = conn.prepare(&sql).map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                text(r.get(2)?),
                text(r.get(3)?),
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (ts, data, backoff, dead) = row.map_err(err)?;
        let backoff_schedule: Vec<u32> = serde_json::from_str(&backoff)
            .map_err(|e| format!("queue message: bad backoff schedule {backoff:?}: {e}"))?;
        let dead_letter_keys: Vec<Vec<u8>> = serde_json::from_str(&dead)
            .map_err(|e| format!("queue message: bad keys_if_undelivered: {e}"))?;
        messages.push(RestoreMessage {
            given_up_at: None,
            payload: Value {
                encoding: Encoding::V8,
                data,
            },
            ready_at: ts.max(0) as u64,
            attempts: 0,
            dead_letter_keys,
            backoff_schedule,
        });
    }
    let version: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM data_version",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if version < 0 {
        return Err(format!(
            "data_version {version} is negative: the file is damaged"
        ));
    }
    Ok(DenoKvFile {
        entries,
        messages,
        version: version as u64,
    })
}

/// Write everything read from a denokv file into `db` (which should be empty).
pub async fn import(db: &Database, file: DenoKvFile) -> Result<ImportReport, String> {
    let mut report = ImportReport::default();
    let total = file.entries.len();
    let mut entries = file.entries.into_iter().peekable();
    while entries.peek().is_some() {
        let batch: Vec<Entry> = entries.by_ref().take(BATCH).collect();
        report.keys += batch.len();
        report.newest_versionstamp = report
            .newest_versionstamp
            .max(batch.iter().map(|e| e.versionstamp).max());
        db.restore(batch, vec![], file.version).await.map_err(err)?;
        eprintln!("  {}/{} keys", report.keys, total);
    }
    let mut messages = file.messages.into_iter().peekable();
    if messages.peek().is_none() {
        // Even with nothing queued, move past every version the source handed out.
        db.restore(vec![], vec![], file.version)
            .await
            .map_err(err)?;
    }
    while messages.peek().is_some() {
        let batch: Vec<RestoreMessage> = messages.by_ref().take(BATCH).collect();
        report.messages += batch.len();
        db.restore(vec![], batch, file.version).await.map_err(err)?;
    }
    Ok(report)
}
