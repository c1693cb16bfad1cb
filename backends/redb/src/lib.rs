//! # strata-backend-redb
//!
//! The embedded default backend: one redb file per database (`<dir>/<name>.redb`), one
//! table of byte keys to byte values. Each engine batch is one redb write transaction, so it
//! is atomic and crash-safe by redb's own commit protocol; `Durability::Sync` commits with
//! `Durability::Immediate` (fsync before returning), `Async` with `Durability::None`.
//!
//! Reads run inline on the caller's thread: a redb point read is a few page-cache lookups,
//! cheaper than a hop to a blocking thread. Writes (which may fsync) run on tokio's blocking
//! pool. redb locks its file, so a second process gets [`BackendError::Locked`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use strata_engine::files::{database_path, list_databases, remove_database_files, DatabaseLock};
use strata_engine::{
    range_is_empty, Backend, BackendError, BatchOp, Capabilities, Durability, Precondition, Store,
};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("strata");
const EXT: &str = "redb";

pub struct RedbBackend {
    dir: PathBuf,
}

impl RedbBackend {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RedbBackend { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

pub struct RedbStore {
    db: Arc<redb::Database>,
    /// The read snapshot reads share until the next write.
    reader: Arc<Reader>,
    /// When an `Async` batch was last followed by a durable commit.
    last_sync: Arc<std::sync::Mutex<std::time::Instant>>,
    _lock: DatabaseLock,
}

/// `Async` batches are made durable at least this often (while commits keep coming; a final
/// sync happens when the database is closed).
const ASYNC_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A read snapshot shared by reads until a write commits. Opening a read transaction and
/// its table costs more than a point read itself, so reads between writes share one.
///
/// Every write drops the cached snapshot before `apply` returns. A snapshot is opened and
/// cached under the same lock, so it is either opened after the write's commit or dropped
/// by it: a read that starts after a write returned sees the write. Dropping it also keeps
/// a snapshot from pinning the pages later writes free.
#[derive(Default)]
struct Reader {
    cached: std::sync::Mutex<Option<Snapshot>>,
}

type Snapshot = Arc<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;

impl Reader {
    fn snapshot(&self, db: &redb::Database) -> Result<Snapshot, BackendError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = cached.as_ref() {
            return Ok(table.clone());
        }
        let table = Arc::new(
            db.begin_read()
                .map_err(err)?
                .open_table(TABLE)
                .map_err(err)?,
        );
        *cached = Some(table.clone());
        Ok(table)
    }

    /// A write committed: later reads need a new snapshot.
    fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Io(e.to_string())
}

impl RedbStore {
    /// Open (or create) the redb file at `path`.
    pub fn open_path(path: &Path) -> Result<Self, BackendError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let lock = DatabaseLock::acquire(path)?;
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => BackendError::Locked(format!(
                "{} is already open in another process",
                path.display()
            )),
            other => BackendError::Io(format!("{}: {other}", path.display())),
        })?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(TABLE).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbStore {
            db: Arc::new(db),
            reader: Arc::default(),
            last_sync: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
            _lock: lock,
        })
    }

    /// The underlying redb database (for benchmarks that compare against raw redb).
    pub fn raw(&self) -> &redb::Database {
        &self.db
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let table = self.reader.snapshot(&self.db)?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
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
        let table = self.reader.snapshot(&self.db)?;
        let range = if end.is_empty() {
            table.range(start..)
        } else {
            table.range(start..end)
        }
        .map_err(err)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let pair = |r: Result<
            (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>),
            redb::StorageError,
        >| {
            r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(err)
        };
        if reverse {
            for r in range.rev().take(limit) {
                out.push(pair(r)?);
            }
        } else {
            for r in range.take(limit) {
                out.push(pair(r)?);
            }
        }
        Ok(out)
    }

    async fn scan_each(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
    ) -> Result<usize, BackendError> {
        if limit == 0 || range_is_empty(start, end) {
            return Ok(0);
        }
        let table = self.reader.snapshot(&self.db)?;
        let range = if end.is_empty() {
            table.range(start..)
        } else {
            table.range(start..end)
        }
        .map_err(err)?;
        let mut shown = 0;
        for r in range.take(limit) {
            let (k, v) = r.map_err(err)?;
            shown += 1;
            if !f(k.value(), v.value()) {
                break;
            }
        }
        Ok(shown)
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        let db = self.db.clone();
        let last_sync = self.last_sync.clone();
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut tx = db.begin_write().map_err(err)?;
            let mut synced = last_sync.lock().unwrap_or_else(|e| e.into_inner());
            let immediate =
                durability == Durability::Sync || synced.elapsed() >= ASYNC_SYNC_INTERVAL;
            tx.set_durability(if immediate {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            })
            .map_err(err)?;
            if immediate {
                *synced = std::time::Instant::now();
            }
            {
                let mut table = tx.open_table(TABLE).map_err(err)?;
                if let Some(p) = precondition {
                    let cur = table
                        .get(p.key.as_slice())
                        .map_err(err)?
                        .map(|v| v.value().to_vec());
                    if cur != p.expected {
                        return Err(BackendError::PreconditionFailed);
                    }
                }
                for op in &ops {
                    match op {
                        BatchOp::Put(k, v) => {
                            table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                        }
                        BatchOp::Delete(k) => {
                            table.remove(k.as_slice()).map_err(err)?;
                        }
                    }
                }
            }
            // Whatever the outcome, the next read opens a new snapshot.
            let committed = tx.commit().map_err(err);
            reader.invalidate();
            committed
        })
        .await
        .map_err(|e| BackendError::Other(format!("redb writer task failed: {e}")))?
    }

    async fn sync(&self) -> Result<(), BackendError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut tx = db.begin_write().map_err(err)?;
            tx.set_durability(redb::Durability::Immediate)
                .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
        .map_err(|e| BackendError::Other(format!("redb writer task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Backend for RedbBackend {
    fn describe(&self) -> String {
        format!("redb:{}", self.dir.display())
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
        let store = tokio::task::spawn_blocking(move || RedbStore::open_path(&path))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))??;
        Ok(Arc::new(store))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        list_databases(&self.dir, EXT)
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        remove_database_files(&database_path(&self.dir, name, EXT), &[])
    }
}
