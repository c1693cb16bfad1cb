//! # strata-backend-sqlite
//!
//! One SQLite file per database (`<dir>/<name>.sqlite3`, WAL mode), holding one table
//! `kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`; SQLite compares blobs with `memcmp`, so
//! its order is the engine's byte order. Each engine batch is one SQLite transaction:
//! `Durability::Sync` runs it with `synchronous=FULL` (the WAL is fsynced at commit),
//! `Async` with `synchronous=NORMAL` (synced at checkpoints; a crash loses recent commits but
//! never exposes part of one).
//!
//! Reads use a small pool of read connections inline on the caller's thread (WAL readers
//! never wait for the writer); writes go through the single writer connection on tokio's
//! blocking pool. A lock file keeps a second process out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use strata_engine::files::{database_path, list_databases, remove_database_files, DatabaseLock};
use strata_engine::{
    range_is_empty, Backend, BackendError, BatchOp, Capabilities, Durability, Precondition,
    ReadView, Store,
};

const EXT: &str = "sqlite3";
const MAX_IDLE_READERS: usize = 8;

pub struct SqliteBackend {
    dir: PathBuf,
}

impl SqliteBackend {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SqliteBackend { dir: dir.into() }
    }
}

struct Writer {
    conn: Connection,
    sync: Option<Durability>,
}

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
    readers: Mutex<Vec<Connection>>,
    _lock: DatabaseLock,
}

fn err(e: rusqlite::Error) -> BackendError {
    let msg = e.to_string();
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            BackendError::Unavailable(msg)
        }
        Some(rusqlite::ErrorCode::DiskFull) => BackendError::Full(msg),
        _ => BackendError::Io(msg),
    }
}

impl SqliteStore {
    pub fn open_path(path: &Path) -> Result<Self, BackendError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let lock = DatabaseLock::acquire(path)?;
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .map_err(err)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(Writer {
                conn,
                sync: Some(Durability::Sync),
            })),
            readers: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    /// A new read-only connection.
    fn reader_connection(&self) -> Result<Connection, BackendError> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(c)
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.reader_connection()?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.with_reader(|c| {
            let mut st = c
                .prepare_cached("SELECT v FROM kv WHERE k = ?1")
                .map_err(err)?;
            st.query_row(params![key], |r| r.get::<_, Vec<u8>>(0))
                .optional()
                .map_err(err)
        })
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        if limit == 0 || range_is_empty(start, end) {
            return Ok(vec![]);
        }
        self.with_reader(|c| scan_on(c, start, end, reverse, limit))
    }

    async fn read_view(&self) -> Result<Option<Arc<dyn ReadView>>, BackendError> {
        // A read transaction on a connection of its own: in WAL mode it keeps the snapshot
        // its first read took while writers go on.
        let c = self.reader_connection()?;
        c.execute_batch("BEGIN").map_err(err)?;
        c.query_row(
            "SELECT count(*) FROM (SELECT 1 FROM kv LIMIT 1)",
            [],
            |_| Ok(()),
        )
        .map_err(err)?;
        Ok(Some(Arc::new(HeldRead(Mutex::new(c)))))
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if w.sync != Some(durability) {
                let mode = if durability == Durability::Sync {
                    "FULL"
                } else {
                    "NORMAL"
                };
                w.conn
                    .pragma_update(None, "synchronous", mode)
                    .map_err(err)?;
                w.sync = Some(durability);
            }
            let tx = w.conn.transaction().map_err(err)?;
            if let Some(p) = precondition {
                let cur: Option<Vec<u8>> = tx
                    .query_row("SELECT v FROM kv WHERE k = ?1", params![p.key], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(err)?;
                if cur != p.expected {
                    return Err(BackendError::PreconditionFailed);
                }
            }
            {
                let mut put = tx
                    .prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")
                    .map_err(err)?;
                let mut del = tx
                    .prepare_cached("DELETE FROM kv WHERE k = ?1")
                    .map_err(err)?;
                for op in &ops {
                    match op {
                        BatchOp::Put(k, v) => put.execute(params![k, v]).map_err(err)?,
                        BatchOp::Delete(k) => del.execute(params![k]).map_err(err)?,
                    };
                }
            }
            tx.commit().map_err(err)
        })
        .await
        .map_err(|e| BackendError::Other(format!("sqlite writer task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.dir.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_process: false,
            persistent: true,
        }
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let path = database_path(&self.dir, name, EXT);
        if !create && !path.exists() {
            return Err(BackendError::NotFound);
        }
        let store = tokio::task::spawn_blocking(move || SqliteStore::open_path(&path))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))??;
        Ok(Arc::new(store))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        list_databases(&self.dir, EXT)
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        remove_database_files(&database_path(&self.dir, name, EXT), &["-wal", "-shm"])
    }
}

/// Key-value pairs, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to `limit` pairs of `[start, end)` (an empty `end` is unbounded) on connection `c`.
fn scan_on(
    c: &Connection,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
) -> Result<Pairs, BackendError> {
    let order = if reverse { "DESC" } else { "ASC" };
    let limit = limit.min(i64::MAX as usize) as i64;

    let row = |r: &rusqlite::Row<'_>| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?));
    let rows: Result<Vec<_>, _> = if end.is_empty() {
        let sql = format!("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k {order} LIMIT ?2");
        let mut st = c.prepare_cached(&sql).map_err(err)?;
        let rows = st
            .query_map(params![start, limit], row)
            .map_err(err)?
            .collect();
        rows
    } else {
        let sql =
            format!("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k {order} LIMIT ?3");
        let mut st = c.prepare_cached(&sql).map_err(err)?;
        let rows = st
            .query_map(params![start, end, limit], row)
            .map_err(err)?
            .collect();
        rows
    };
    rows.map_err(err)
}

/// A read transaction held open (see [`SqliteStore::read_view`]).
struct HeldRead(Mutex<Connection>);

#[async_trait::async_trait]
impl ReadView for HeldRead {
    async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Pairs, BackendError> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        scan_on(&c, start, end, false, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite out of room (here its page limit, which it reports as a full disk) is a full
    /// disk to the engine, and a locked file is a retryable unavailability.
    #[test]
    fn sqlite_errors_keep_their_kind() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 8;")
            .unwrap();
        let full = (0..1000)
            .find_map(|_| c.execute("INSERT INTO t VALUES (zeroblob(4096))", []).err())
            .expect("the page limit is never reached");
        assert!(matches!(err(full), BackendError::Full(_)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (a, b) = (
            Connection::open(&path).unwrap(),
            Connection::open(&path).unwrap(),
        );
        a.execute_batch("CREATE TABLE t (v); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
            .unwrap();
        b.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = b.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert!(matches!(err(busy), BackendError::Unavailable(_)));
        assert!(matches!(
            err(rusqlite::Error::QueryReturnedNoRows),
            BackendError::Io(_)
        ));
    }
}
