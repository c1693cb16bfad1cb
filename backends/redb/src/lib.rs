//! # strata-backend-redb
//!
//! The embedded default backend: one redb file per database (`<dir>/<name>.redb`), one
//! table of byte keys to byte values. Each engine batch is one redb write transaction, so it
//! is atomic. Durability comes from a commit journal beside the file
//! (`<name>.redb-journal`, see [`journal`]): a batch is written to the journal and synced
//! there for `Durability::Sync` (at least once a second for `Async`), while it goes into
//! the memtable (below); redb commits without a sync of its own. Checkpoints commit redb
//! durably and empty the journal; opening a store replays it.
//!
//! Batches reach redb through a *memtable*: an applied batch goes into an in-memory ordered
//! map that reads consult before redb, and the map is written into redb in one transaction
//! once it holds [`FLUSH_OPS`] writes (or at a checkpoint, or before a frozen read view). A redb write transaction costs
//! about the same for one small batch as for a hundred: its commit, and a copy of every
//! page it changes. Taking many groups' batches in one cuts the store's CPU per commit.
//! The journal holds every batch until a checkpoint, so a crash loses nothing the memtable
//! held.
//!
//! Reads run inline on the caller's thread: a redb point read is a few page-cache lookups,
//! cheaper than a hop to a blocking thread. So do a write's journal record, its memtable
//! insert and (when the memtable fills) the flush; the journal's sync runs on a thread of
//! its own, and checkpoints, which sync redb, on tokio's blocking pool. redb locks its file,
//! so a second process gets [`BackendError::Locked`].
//!
//! After a failed write of its own (a full disk), redb refuses everything until it is
//! reopened; the store reopens it before the next write and replays the journal into it
//! (see `RedbStore::reopen`), so it serves again once the disk has room, losing nothing.

mod journal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use journal::Journal;

use redb::{ReadableDatabase, TableDefinition};
use strata_engine::files::{database_path, list_databases, remove_database_files, DatabaseLock};
use strata_engine::{
    keys_in, range_is_empty, Backend, BackendError, BatchOp, Capabilities, Durability,
    Precondition, ReadView, Store,
};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("strata");
const EXT: &str = "redb";

pub struct RedbBackend {
    dir: PathBuf,
    flush_ops: usize,
    storage: Option<Storage>,
}

/// Opens the storage under a database's redb file, given the file's path: for storage that
/// is not a plain file, or that fails on demand in tests. The default opens the file.
pub type Storage =
    Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn redb::StorageBackend>> + Send + Sync>;

impl RedbBackend {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RedbBackend {
            dir: dir.into(),
            flush_ops: FLUSH_OPS,
            storage: None,
        }
    }

    /// Open each database's redb file through `storage` instead of as a plain file.
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Write the memtable into redb once it holds `n` writes (default [`FLUSH_OPS`]; 0
    /// writes every batch into redb as it is applied). Small values exercise the flush in
    /// tests.
    pub fn with_flush_ops(mut self, n: usize) -> Self {
        self.flush_ops = n;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

pub struct RedbStore {
    path: PathBuf,
    storage: Option<Storage>,
    /// The redb database, the memtable and the read snapshot reads share until the next
    /// flush.
    reader: Arc<Reader>,
    writer: Arc<Writer>,
    flush_ops: usize,
    _lock: DatabaseLock,
}

/// The memtable is written into redb once it holds this many writes. At 32 concurrent
/// inserters a group carries 15–20 writes, so a flush takes about a hundred groups.
pub const FLUSH_OPS: usize = 2048;

/// Past this many bytes the memtable is flushed whatever its count.
const FLUSH_BYTES: usize = 8 << 20;

/// Batches written since the last flush, newest per key (`None`: deleted).
type Memtable = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A memtable entry copied out (`None`: a delete).
type OverEntry = (Vec<u8>, Option<Vec<u8>>);

/// The memtable's entries of a range, copied out, in key order.
type Over = Vec<OverEntry>;

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

/// What reads see: the memtable over a redb read snapshot.
///
/// Opening a read transaction and its table costs more than a point read itself, so reads
/// share one snapshot until a flush commits to redb. A flush first moves the memtable to
/// `flushing`, where reads still find it while it is written; once redb has committed it,
/// both `flushing` and the snapshot are dropped in one step under the lock. A read takes
/// the maps' entries and the snapshot under that lock, so it sees every batch exactly
/// once, from the maps or from redb. Dropping the snapshot also keeps it from pinning the
/// pages later writes free.
struct Reader {
    state: std::sync::Mutex<ReadState>,
    /// Shared with the writer (see [`Writer::broken`]).
    broken: Arc<AtomicBool>,
}

struct ReadState {
    /// `None` from a failed write into redb until it is reopened (see [`RedbStore::reopen`]).
    db: Option<Arc<redb::Database>>,
    /// Why redb must be reopened: a write into it failed, after which redb refuses every
    /// read and write until it is reopened.
    failed: Option<BackendError>,
    memtable: Memtable,
    /// Bytes of keys and values put into the memtable since it was last emptied.
    bytes: usize,
    /// The memtable being written into redb.
    flushing: Option<Arc<Memtable>>,
    snapshot: Option<Snapshot>,
}

type Snapshot = Arc<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;

impl ReadState {
    fn new(db: redb::Database) -> Self {
        ReadState {
            db: Some(Arc::new(db)),
            failed: None,
            memtable: Memtable::new(),
            bytes: 0,
            flushing: None,
            snapshot: None,
        }
    }

    /// The redb database, refused after a write into it failed: it answers nothing until
    /// it is reopened.
    fn db(&self) -> Result<Arc<redb::Database>, BackendError> {
        let why = match (&self.failed, &self.db) {
            (None, Some(db)) => return Ok(db.clone()),
            (why, _) => format!(
                "the database file must be reopened after a failed write ({}); the next write reopens it",
                why.as_ref().map_or("unknown error".into(), reason)
            ),
        };
        // A full disk stays the reason until the reopen succeeds.
        Err(match self.failed {
            Some(BackendError::Full(_)) => BackendError::Full(why),
            _ => BackendError::Io(why),
        })
    }

    /// The shared read snapshot. One taken before a failed write still serves (redb's pages
    /// it holds are what redb held then, and the memtable the rest); a new one waits for
    /// the reopen.
    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        if let Some(table) = self.snapshot.as_ref() {
            return Ok(table.clone());
        }
        let table = Arc::new(
            self.db()?
                .begin_read()
                .map_err(err)?
                .open_table(TABLE)
                .map_err(err)?,
        );
        self.snapshot = Some(table.clone());
        Ok(table)
    }

    /// A point read's answer from the maps (`Some(None)`: deleted there), if they have it.
    fn find(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.memtable.get(key) {
            return Some(v.clone());
        }
        self.flushing.as_ref()?.get(key).cloned()
    }

    /// The maps' entries in `[start, end)`, newest per key, in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Over {
        let mut out: Over = keys_in(&self.memtable, start, end)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(f) = &self.flushing {
            let older = keys_in(f, start, end)
                .filter(|(k, _)| !self.memtable.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()));
            out.extend(older);
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    /// Whether the memtable holds at least `ops` writes or `bytes` bytes.
    fn holds(&self, ops: usize, bytes: usize) -> bool {
        self.memtable.len() >= ops || self.bytes >= bytes
    }

    fn take_in(&mut self, ops: Vec<BatchOp>) {
        for op in ops {
            match op {
                BatchOp::Put(k, v) => {
                    self.bytes += k.len() + v.len();
                    self.memtable.insert(k, Some(v));
                }
                BatchOp::Delete(k) => {
                    self.bytes += k.len();
                    self.memtable.insert(k, None);
                }
            }
        }
    }
}

impl Reader {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ReadState>, BackendError> {
        check_broken(&self.broken)?;
        Ok(self.state())
    }

    /// The state, whether or not the store is broken.
    fn state(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A point read: from the maps, or else from the snapshot under them.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let table = {
            let mut state = self.lock()?;
            if let Some(found) = state.find(key) {
                return Ok(found);
            }
            state.snapshot()?
        };
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// The maps' entries of a range, and the snapshot under them.
    fn view(&self, start: &[u8], end: &[u8]) -> Result<(Over, Snapshot), BackendError> {
        let mut state = self.lock()?;
        Ok((state.range(start, end), state.snapshot()?))
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
        scan_table(&self.0, &[], start, end, false, limit)
    }
}

/// Entries copied out of the store.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to `limit` entries of `[start, end)` in a snapshot under the maps' entries `over`
/// (sorted by key), copied out, in key order or reversed.
fn scan_table(
    table: &Snapshot,
    over: &[OverEntry],
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
) -> Result<Pairs, BackendError> {
    let mut out = Vec::new();
    merge(table, over, start, end, reverse, limit, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// Show `f` the live entries of `[start, end)`, in key order or reversed, until it returns
/// false or `limit` were shown: the maps' entries `over` (sorted by key) where they have
/// the key, the snapshot's elsewhere. How many were shown.
fn merge(
    table: &Snapshot,
    over: &[OverEntry],
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
    f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
) -> Result<usize, BackendError> {
    if limit == 0 || range_is_empty(start, end) {
        return Ok(0);
    }
    let range = range_of(table, start, end)?;
    match (over.is_empty(), reverse) {
        (true, false) => show_table(range, limit, f),
        (true, true) => show_table(range.rev(), limit, f),
        (false, false) => merge_in(range, over.iter(), false, limit, f),
        (false, true) => merge_in(range.rev(), over.iter().rev(), true, limit, f),
    }
}

/// One entry of a redb range.
type Guarded<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// [`merge`] with nothing over the snapshot: the scan path of a store at rest.
fn show_table<'a>(
    range: impl Iterator<Item = Guarded<'a>>,
    limit: usize,
    f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
) -> Result<usize, BackendError> {
    let mut shown = 0;
    for r in range.take(limit) {
        // Borrowed where it lies: moving the pair of guards out of the result copied
        // them, a measurable part of a scan's time per entry.
        let (k, v) = match &r {
            Ok(pair) => pair,
            Err(redb::StorageError::Io(e)) => {
                return Err(BackendError::io("reading the database file", e))
            }
            Err(e) => return Err(BackendError::Io(e.to_string())),
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

/// [`merge`] of a snapshot's range and the maps' entries, both in the scan's direction.
fn merge_in<'a, 'o>(
    mut base: impl Iterator<Item = Guarded<'a>>,
    mut over: impl Iterator<Item = &'o OverEntry>,
    reverse: bool,
    limit: usize,
    f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
) -> Result<usize, BackendError> {
    let mut next_base = base.next().transpose().map_err(err)?;
    let mut next_over = over.next();
    let mut shown = 0;
    while shown < limit {
        let from_over = match (next_over, &next_base) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ok, _)), Some((bk, _))) => {
                let order = ok.as_slice().cmp(bk.value());
                if order == std::cmp::Ordering::Equal {
                    // The map's entry replaces the snapshot's.
                    next_base = base.next().transpose().map_err(err)?;
                }
                (order == std::cmp::Ordering::Less) != reverse || order == std::cmp::Ordering::Equal
            }
        };
        if from_over {
            if let Some((k, v)) = next_over {
                next_over = over.next();
                if let Some(v) = v {
                    shown += 1;
                    if !f(k, v) {
                        break;
                    }
                }
            }
        } else if let Some((k, v)) = next_base.take() {
            shown += 1;
            if !f(k.value(), v.value()) {
                break;
            }
            next_base = base.next().transpose().map_err(err)?;
        }
    }
    Ok(shown)
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

/// A redb error: [`BackendError::Full`] when the disk has no room.
fn err(e: impl Into<redb::Error>) -> BackendError {
    match e.into() {
        redb::Error::Io(e) => BackendError::from(e),
        other => BackendError::Io(other.to_string()),
    }
}

impl RedbStore {
    /// Open (or create) the redb file at `path`, with the default memtable size.
    pub fn open_path(path: &Path) -> Result<Self, BackendError> {
        Self::open_with(path, FLUSH_OPS, None)
    }

    fn open_with(
        path: &Path,
        flush_ops: usize,
        storage: Option<Storage>,
    ) -> Result<Self, BackendError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let lock = DatabaseLock::acquire(path)?;
        let (db, journal) = open_replayed(path, storage.as_ref())?;
        let broken = Arc::new(AtomicBool::new(false));
        Ok(RedbStore {
            path: path.to_path_buf(),
            storage,
            reader: Arc::new(Reader {
                state: std::sync::Mutex::new(ReadState::new(db)),
                broken: broken.clone(),
            }),
            writer: Arc::new(Writer {
                journal: Arc::new(tokio::sync::Mutex::new(journal)),
                broken,
            }),
            flush_ops,
            _lock: lock,
        })
    }

    /// Lock the journal for a write, a checkpoint or a frozen view, after reopening redb if
    /// a write into it failed.
    async fn write_lock(&self) -> Result<JournalGuard, BackendError> {
        let mut journal = self.writer.lock().await?;
        if self.reader.lock()?.failed.is_none() {
            return Ok(journal);
        }
        let (path, storage, reader) =
            (self.path.clone(), self.storage.clone(), self.reader.clone());
        let reopened = tokio::task::spawn_blocking(move || {
            let reopened = Self::reopen(&path, storage.as_ref(), &reader, &mut journal);
            reopened.map(|()| journal)
        })
        .await
        .map_err(|e| BackendError::Other(format!("reopening the database file failed: {e}")))?;
        reopened
    }

    /// After a failed write redb refuses every later read and write (it latches the I/O
    /// error; a full disk is the usual cause). Close it, open it again and replay the
    /// journal into it, as opening the store does: the journal holds every batch since the
    /// last checkpoint, so redb then holds everything the memtable held, and the memtable
    /// is emptied. Until this succeeds reads fail, and so do writes, each of which tries it
    /// again first; nothing acknowledged is lost, since the journal is untouched.
    fn reopen(
        path: &Path,
        storage: Option<&Storage>,
        reader: &Reader,
        journal: &mut Journal,
    ) -> Result<(), BackendError> {
        let failed = {
            let mut state = reader.state();
            state.snapshot = None;
            state.db.take()
        };
        // Closing it releases the file's lock, which the new one takes.
        drop(failed);
        let (db, replayed) = open_replayed(path, storage).inspect_err(|e| {
            reader.state().failed = Some(e.clone());
        })?;
        *journal = replayed;
        let mut state = reader.state();
        state.db = Some(Arc::new(db));
        state.failed = None;
        state.memtable.clear();
        state.bytes = 0;
        Ok(())
    }

    /// Bytes of batches the journal holds: written since the last checkpoint.
    pub async fn journaled_bytes(&self) -> Result<u64, BackendError> {
        Ok(self.write_lock().await?.len())
    }

    /// The underlying redb database (for benchmarks that compare against raw redb). It
    /// holds what the memtable had when it was last flushed.
    pub fn raw(&self) -> Result<Arc<redb::Database>, BackendError> {
        self.reader.lock()?.db()
    }
}

/// Open the redb file at `path` and replay its journal into it: the batches since the last
/// checkpoint, in order, made durable in redb by one commit; then empty the journal.
fn open_replayed(
    path: &Path,
    storage: Option<&Storage>,
) -> Result<(redb::Database, Journal), BackendError> {
    let opened = match storage {
        None => redb::Database::create(path),
        Some(open) => {
            let backend = open(path).map_err(|e| journal::io(path, e))?;
            redb::Builder::new().create_with_backend(Boxed(backend))
        }
    };
    let db = opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => BackendError::Locked(format!(
            "{} is already open in another process",
            path.display()
        )),
        other => journal::io(path, other),
    })?;
    let (mut journal, batches) = Journal::open(path)?;
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
    Ok((db, journal))
}

/// What went wrong, without the error kind's prefix.
fn reason(e: &BackendError) -> String {
    match e {
        BackendError::Io(why) | BackendError::Full(why) => why.clone(),
        other => other.to_string(),
    }
}

/// A [`Storage`]'s backend, as redb takes it.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

type Bound = std::ops::Bound<u64>;

impl redb::StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn read_view(&self) -> Result<Option<Arc<dyn ReadView>>, BackendError> {
        // A read transaction is a snapshot: it keeps the pages it sees until it is dropped.
        // The memtable goes into redb first, so that the snapshot holds everything.
        let _journal = self.write_lock().await?;
        flush(&self.reader, redb::Durability::None)?;
        let snapshot = self.reader.lock()?.snapshot()?;
        Ok(Some(Arc::new(FrozenTable(snapshot))))
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.reader.get(key)
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
        let (over, table) = self.reader.view(start, end)?;
        scan_table(&table, &over, start, end, reverse, limit)
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
        let (over, table) = self.reader.view(start, end)?;
        merge(&table, &over, start, end, false, limit, f)
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        let mut journal = self.write_lock().await?;
        if let Some(p) = &precondition {
            if self.reader.get(&p.key)? != p.expected {
                return Err(BackendError::PreconditionFailed);
            }
        }
        let before = journal.len();
        // On this thread: a journal write, then (while it syncs) the batch into the
        // memtable, and redb's in-memory work if the memtable is full.
        let sync =
            durability == Durability::Sync || journal.last_sync.elapsed() >= ASYNC_SYNC_INTERVAL;
        let syncing = journal.append(&ops).and_then(|()| match sync {
            true => journal.start_sync(),
            false => Ok(None),
        });
        let syncing = match syncing {
            Ok(s) => s,
            Err(e) => {
                if journal.cut(before).is_err() {
                    self.writer.broken.store(true, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        let full = {
            let mut state = self.reader.lock()?;
            state.take_in(ops);
            state.holds(self.flush_ops, FLUSH_BYTES)
        };
        // A failed flush leaves the batches in the memtable (and the journal), and the next
        // write reopens redb first (see `RedbStore::reopen`).
        let flushed = if full {
            flush(&self.reader, redb::Durability::None)
        } else {
            Ok(())
        };
        if let Some(pending) = syncing {
            if let Err(e) = journal.wait_sync(pending).await {
                // What reached the disk is unknown, and the memtable holds the batch: only
                // a reopen, which replays the journal, tells what is durable. Until then
                // the store refuses reads and writes. The journal tries to forget it.
                self.writer.broken.store(true, Ordering::SeqCst);
                let _ = journal.cut(before);
                return Err(e);
            }
        }
        if flushed.is_ok()
            && (journal.len() >= CHECKPOINT_BYTES
                || journal.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL)
        {
            // The batch is durable in the journal already; a failed checkpoint is retried
            // after the next write.
            let reader = self.reader.clone();
            let _ = tokio::task::spawn_blocking(move || checkpoint(&reader, &mut journal)).await;
        }
        Ok(())
    }

    async fn sync(&self) -> Result<(), BackendError> {
        let reader = self.reader.clone();
        let mut journal = self.write_lock().await?;
        tokio::task::spawn_blocking(move || checkpoint(&reader, &mut journal))
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
}

/// Refuse reads and writes once a write failed in a way only a reopen can settle.
fn check_broken(broken: &AtomicBool) -> Result<(), BackendError> {
    match broken.load(Ordering::SeqCst) {
        false => Ok(()),
        true => Err(BackendError::Io(
            "an earlier write failed after reaching the journal; reopen the database".into(),
        )),
    }
}

/// Write the memtable into redb in one transaction (called with the journal locked, so no
/// batch joins it meanwhile). Reads find its entries in `flushing` until redb has
/// committed them; then both go at once, with the snapshot that lacked them. On failure
/// the entries go back into the memtable, and redb is marked for a reopen (see
/// [`RedbStore::reopen`]).
fn flush(reader: &Reader, durability: redb::Durability) -> Result<(), BackendError> {
    let (db, entries) = {
        let mut state = reader.lock()?;
        if state.memtable.is_empty() && matches!(durability, redb::Durability::None) {
            return Ok(());
        }
        let db = state.db()?;
        let entries = Arc::new(std::mem::take(&mut state.memtable));
        state.bytes = 0;
        state.flushing = Some(entries.clone());
        (db, entries)
    };
    let written = (|| {
        let mut tx = db.begin_write().map_err(err)?;
        tx.set_durability(durability).map_err(err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(err)?;
            for (k, v) in entries.iter() {
                match v {
                    Some(v) => table.insert(k.as_slice(), v.as_slice()).map_err(err)?,
                    None => table.remove(k.as_slice()).map_err(err)?,
                };
            }
        }
        tx.commit().map_err(err)
    })();
    let mut state = reader.state();
    state.flushing = None;
    match &written {
        Ok(()) => state.snapshot = None,
        Err(e) => {
            state.failed = Some(e.clone());
            // Newer batches (none, while the journal is locked) would win over these.
            let newer = std::mem::take(&mut state.memtable);
            let mut back = Arc::unwrap_or_clone(entries);
            back.extend(newer);
            state.bytes = back
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            state.memtable = back;
        }
    }
    written
}

/// Commit redb durably, the memtable with it (everything applied so far becomes durable in
/// the file), then empty the journal.
fn checkpoint(reader: &Reader, journal: &mut Journal) -> Result<(), BackendError> {
    flush(reader, redb::Durability::Immediate)?;
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
        let flush_ops = self.flush_ops;
        let storage = self.storage.clone();
        let store =
            tokio::task::spawn_blocking(move || RedbStore::open_with(&path, flush_ops, storage))
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
