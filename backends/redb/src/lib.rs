//! # strata-backend-redb
//!
//! The embedded default backend: one redb file per database (`<dir>/<name>.redb`), one
//! table of byte keys to byte values. Each engine batch is one redb write transaction, so it
//! is atomic. Durability comes from a commit journal beside the file
//! (`<name>.redb-journal`, see [`journal`]): a batch is written to the journal, synced
//! there for `Durability::Sync` (at least once a second for `Async`) while it is written
//! into redb, and committed to redb without a sync of its own. Checkpoints commit redb durably and empty the journal; opening
//! a store replays it.
//!
//! Reads run inline on the caller's thread: a redb point read is a few page-cache lookups,
//! cheaper than a hop to a blocking thread. Writes (which may fsync) run on tokio's blocking
//! pool. redb locks its file, so a second process gets [`BackendError::Locked`].

mod journal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use journal::Journal;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use strata_engine::files::{database_path, list_databases, remove_database_files, DatabaseLock};
use strata_engine::{
    range_is_empty, Backend, BackendError, BatchOp, Capabilities, Durability, Precondition,
    ReadView, Store,
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
    writer: Arc<Writer>,
    _lock: DatabaseLock,
}

/// The write side: the journal, locked for the whole of each write.
struct Writer {
    journal: Arc<tokio::sync::Mutex<Journal>>,
    /// A journal sync failed (redb may hold a batch that is not durable), or a batch reached
    /// the journal but redb did not commit it and the journal could not forget it: reads
    /// could see, and writes build on, a state that differs from what a reopen replays, so
    /// both are refused until the database is reopened.
    broken: Arc<AtomicBool>,
}

/// `Async` batches are synced to the journal at least this often (while commits keep
/// coming; closing the database checkpoints).
const ASYNC_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A checkpoint (a durable redb commit that empties the journal) follows a write once the
/// journal holds this many bytes ...
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// ... or once this long has passed since the last one.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A read snapshot shared by reads until a write commits. Opening a read transaction and
/// its table costs more than a point read itself, so reads between writes share one.
///
/// Every write drops the cached snapshot before `apply` returns. A snapshot is opened and
/// cached under the same lock, so it is either opened after the write's commit or dropped
/// by it: a read that starts after a write returned sees the write. Dropping it also keeps
/// a snapshot from pinning the pages later writes free.
struct Reader {
    cached: std::sync::Mutex<Option<Snapshot>>,
    /// Shared with the writer (see [`Writer::broken`]).
    broken: Arc<AtomicBool>,
}

type Snapshot = Arc<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;

impl Reader {
    fn snapshot(&self, db: &redb::Database) -> Result<Snapshot, BackendError> {
        check_broken(&self.broken)?;
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

/// A read transaction's table, as a [`ReadView`].
struct FrozenTable(Snapshot);

#[async_trait::async_trait]
impl ReadView for FrozenTable {
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        scan_table(&self.0, start, end, false, limit)
    }
}

/// Entries copied out of the store.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to `limit` entries of `[start, end)` in a snapshot, copied out, in key order or
/// reversed.
fn scan_table(
    table: &Snapshot,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
) -> Result<Pairs, BackendError> {
    if limit == 0 || range_is_empty(start, end) {
        return Ok(vec![]);
    }
    let range = range_of(table, start, end)?;
    let copy = |(k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>)| {
        (k.value().to_vec(), v.value().to_vec())
    };
    if reverse {
        range
            .rev()
            .take(limit)
            .map(|r| r.map(copy).map_err(err))
            .collect()
    } else {
        range
            .take(limit)
            .map(|r| r.map(copy).map_err(err))
            .collect()
    }
}

/// The entries of `[start, end)` in a snapshot; an empty `end` is unbounded.
fn range_of<'a>(
    table: &'a Snapshot,
    start: &[u8],
    end: &[u8],
) -> Result<redb::Range<'a, &'static [u8], &'static [u8]>, BackendError> {
    if end.is_empty() {
        table.range(start..)
    } else {
        table.range(start..end)
    }
    .map_err(err)
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
        let (mut journal, batches) = Journal::open(path)?;
        // Replay the journal: the batches since the last checkpoint, in order, made durable
        // in redb by this commit.
        let mut tx = db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(err)?;
            for ops in &batches {
                write_ops(&mut table, ops)?;
            }
        }
        tx.commit().map_err(err)?;
        journal.clear()?;
        let broken = Arc::new(AtomicBool::new(false));
        Ok(RedbStore {
            db: Arc::new(db),
            reader: Arc::new(Reader {
                cached: Default::default(),
                broken: broken.clone(),
            }),
            writer: Arc::new(Writer {
                journal: Arc::new(tokio::sync::Mutex::new(journal)),
                broken,
            }),
            _lock: lock,
        })
    }

    /// Bytes of batches the journal holds: written since the last checkpoint.
    pub async fn journaled_bytes(&self) -> Result<u64, BackendError> {
        Ok(self.writer.lock().await?.len())
    }

    /// The underlying redb database (for benchmarks that compare against raw redb).
    pub fn raw(&self) -> &redb::Database {
        &self.db
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn read_view(&self) -> Result<Option<Arc<dyn ReadView>>, BackendError> {
        // A read transaction is a snapshot: it keeps the pages it sees until it is dropped.
        Ok(Some(Arc::new(FrozenTable(self.reader.snapshot(&self.db)?))))
    }

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
        scan_table(&self.reader.snapshot(&self.db)?, start, end, reverse, limit)
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
        let range = range_of(&table, start, end)?;
        let mut shown = 0;
        for r in range.take(limit) {
            // Borrowed where it lies: moving the pair of guards out of the result copied
            // them, a measurable part of a scan's time per entry.
            let (k, v) = match &r {
                Ok(pair) => pair,
                Err(e) => return Err(err(e)),
            };
            shown += 1;
            prefetch_ahead(k.value());
            prefetch_ahead(v.value());
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
        let mut journal = self.writer.lock().await?;
        let before = journal.len();
        // On this thread: a journal write and redb's in-memory work, no waiting on the disk.
        let (syncing, committed) =
            self.writer
                .write(&self.db, &mut journal, &ops, durability, precondition)?;
        // Whatever the outcome, the next read opens a new snapshot.
        self.reader.invalidate();
        let synced = match syncing {
            Some(pending) => journal.wait_sync(pending).await.inspect_err(|_| {
                // What reached the disk is unknown, and redb may hold the batch: only a
                // reopen, which replays the journal, tells what is durable. Until then the
                // store refuses reads and writes.
                self.writer.broken.store(true, Ordering::SeqCst);
            }),
            None => Ok(()),
        };
        if let Err(e) = synced.and(committed) {
            // The batch failed: the journal must forget it too (a write and a sync on this
            // thread; only on this failure path).
            if journal.cut(before).is_err() {
                self.writer.broken.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        if journal.len() >= CHECKPOINT_BYTES
            || journal.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
        {
            // The batch is durable in the journal already; a failed checkpoint is retried
            // after the next write.
            let db = self.db.clone();
            let _ = tokio::task::spawn_blocking(move || checkpoint(&db, &mut journal)).await;
        }
        Ok(())
    }

    async fn sync(&self) -> Result<(), BackendError> {
        let db = self.db.clone();
        let mut journal = self.writer.lock().await?;
        tokio::task::spawn_blocking(move || checkpoint(&db, &mut journal))
            .await
            .map_err(|e| BackendError::Other(format!("redb writer task failed: {e}")))?
    }
}

/// The journal, locked for the whole of a write (its sync included) or a checkpoint.
type JournalGuard = tokio::sync::OwnedMutexGuard<Journal>;

impl Writer {
    async fn lock(&self) -> Result<JournalGuard, BackendError> {
        check_broken(&self.broken)?;
        Ok(self.journal.clone().lock_owned().await)
    }

    /// Write a batch's journal record, start its sync, and write and commit the batch in
    /// redb, without durability, while the record syncs: redb makes a batch durable only
    /// at a checkpoint, which follows a write only once its record is synced. `Err`:
    /// nothing was written. Otherwise the sync in progress, if the batch is synced now,
    /// and whether the journal write and the redb commit succeeded.
    fn write(
        &self,
        db: &redb::Database,
        journal: &mut Journal,
        ops: &[BatchOp],
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<WriteStarted, BackendError> {
        let mut tx = db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::None).map_err(err)?;
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
        let sync =
            durability == Durability::Sync || journal.last_sync.elapsed() >= ASYNC_SYNC_INTERVAL;
        let syncing = journal.append(ops).and_then(|()| match sync {
            true => journal.start_sync(),
            false => Ok(None),
        });
        Ok(match syncing {
            Ok(pending) => {
                let written = write_ops(&mut table, ops);
                drop(table);
                (pending, written.and_then(|()| tx.commit().map_err(err)))
            }
            Err(e) => (None, Err(e)),
        })
    }
}

/// A write under way: its journal sync, and the outcome of the rest.
type WriteStarted = (Option<journal::PendingSync>, Result<(), BackendError>);

/// Refuse reads and writes once a write failed in a way only a reopen can settle.
fn check_broken(broken: &AtomicBool) -> Result<(), BackendError> {
    match broken.load(Ordering::SeqCst) {
        false => Ok(()),
        true => Err(BackendError::Io(
            "an earlier write failed after reaching the journal; reopen the database".into(),
        )),
    }
}

/// Commit redb durably (everything committed so far becomes durable in the file), then
/// empty the journal.
fn checkpoint(db: &redb::Database, journal: &mut Journal) -> Result<(), BackendError> {
    let mut tx = db.begin_write().map_err(err)?;
    tx.set_durability(redb::Durability::Immediate)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    journal.clear()
}

fn write_ops(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    ops: &[BatchOp],
) -> Result<(), BackendError> {
    for op in ops {
        match op {
            BatchOp::Put(k, v) => {
                table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            }
            BatchOp::Delete(k) => {
                table.remove(k.as_slice()).map_err(err)?;
            }
        }
    }
    Ok(())
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
        remove_database_files(&database_path(&self.dir, name, EXT), &[journal::SUFFIX])
    }
}

/// Ask the CPU to load the memory a little past `entry`. A leaf holds its keys one after
/// another, and its values likewise, so a range scan reads on from there: loading ahead
/// keeps the scan from stalling on each entry. A hint only, never a read (it cannot fault).
#[inline(always)]
fn prefetch_ahead(entry: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = entry.as_ptr().wrapping_add(PREFETCH_DISTANCE);
        // SAFETY: a prefetch is a hint; it does not dereference the pointer.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
}

/// How far ahead of an entry [`prefetch_ahead`] loads, in bytes.
const PREFETCH_DISTANCE: usize = 320;
