//! The state machine: the engine's apply step, run by every replica over its own backend.
//!
//! Applying an entry is deterministic: a batch's precondition is checked against this
//! replica's copy, which holds exactly the log prefix before the entry, so every replica
//! decides the same. Each database records the last log index applied to it
//! (`mraft-applied`) in the same atomic write as the batch. Writes are not synced here: the
//! Raft log already is, so after a crash the log is applied again from the last point known
//! durable, and the per-database record skips what had reached the disk — every entry takes
//! effect exactly once.
//!
//! The durable point (`sapplied`, with the membership) is written only after every database
//! has been synced: when a snapshot is built or installed. Raft purges the log only up to a
//! snapshot, so the entries after the durable point are always still in the log.
//!
//! Installing a snapshot is redone after a crash: the received file is verified, kept, and
//! named in `sinstalling` before any database is touched, and only a finished install clears
//! that record.
//!
//! **When to snapshot** ([`SnapshotSchedule`]). A snapshot copies every database, so its cost
//! grows with the data, while what it saves — log kept on disk and replayed after a crash —
//! grows with the writes since the last one. A snapshot is due once both hold: at least
//! `every` entries applied since the last snapshot, and at least a quarter of the last
//! snapshot's size written by them. Small databases snapshot every `every` entries; a large
//! one waits until the log since its last snapshot is worth a quarter of it, so building
//! snapshots costs at most about four bytes read and written per byte logged, whatever the
//! size of the data.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StoredMembership,
};
use strata_engine::{Backend, BackendError, BatchOp, Durability, ReadView, Store};
use tokio::io::{AsyncSeekExt, BufReader, BufWriter};
use tokio::sync::watch;

use crate::command::{Applied, Command, Member};
use crate::snapshot::{Record, SnapshotReader, SnapshotWriter};
use crate::store::{decode_or, encode_or, io_error, RAFT_DB};
use crate::{NodeId, TypeConfig};

/// The last log index applied to a database, kept in the database itself.
pub const APPLIED_MARKER: &[u8] = b"mraft-applied";

const SM_APPLIED: &[u8] = b"sapplied";
const SM_MEMBERSHIP: &[u8] = b"smembership";
const SM_SNAPSHOT: &[u8] = b"ssnapshot";
const SM_INSTALLING: &[u8] = b"sinstalling";

const CURRENT_FILE: &str = "snapshot-current";
const INSTALLING_FILE: &str = "snapshot-installing";

/// Pairs per batch when a snapshot is loaded or a database cleared.
const LOAD_BATCH: usize = 1024;

/// This node's copy of every database, shared by the state machine (which writes it) and
/// the engine's stores (which read it).
pub struct Replica {
    backend: Arc<dyn Backend>,
    stores: RwLock<HashMap<String, Arc<dyn Store>>>,
    applied: watch::Sender<u64>,
    open_lock: tokio::sync::Mutex<()>,
    /// Per database: the flag its open handles share, set when it is dropped here (a drop
    /// takes the flag out, so a database made again under the name gets a new one).
    dropped: RwLock<HashMap<String, Arc<AtomicBool>>>,
}

impl Replica {
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Replica {
            backend,
            stores: RwLock::new(HashMap::new()),
            applied: watch::channel(0).0,
            open_lock: tokio::sync::Mutex::new(()),
            dropped: RwLock::new(HashMap::new()),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The database's local store, opened once; `None` if it does not exist (and `create`
    /// is false).
    pub async fn store(
        &self,
        name: &str,
        create: bool,
    ) -> Result<Option<Arc<dyn Store>>, BackendError> {
        if let Some(s) = self.cached(name) {
            return Ok(Some(s));
        }
        let _one = self.open_lock.lock().await;
        if let Some(s) = self.cached(name) {
            return Ok(Some(s));
        }
        match self.backend.open(name, create).await {
            Ok(s) => {
                self.stores
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), s.clone());
                Ok(Some(s))
            }
            Err(BackendError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<dyn Store>> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    async fn drop_database(&self, name: &str) -> Result<(), BackendError> {
        let _one = self.open_lock.lock().await;
        let store = self
            .stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        drop(store);
        self.backend.drop_database(name).await?;
        let flag = self
            .dropped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(flag) = flag {
            flag.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The flag a handle to database `name` opened now watches: set once the database is
    /// dropped here. Take it, then look the database up again: a drop in between is then
    /// either seen by the lookup or marked on the flag. (Taken when a handle opens, which is
    /// rare: one write lock.)
    pub fn dropped_flag(&self, name: &str) -> Arc<AtomicBool> {
        self.dropped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The user databases this node holds.
    pub async fn names(&self) -> Result<Vec<String>, BackendError> {
        let mut names = self.backend.list().await?;
        names.retain(|n| n != RAFT_DB);
        Ok(names)
    }

    /// The last log index applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Wait until the log is applied here up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct State {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    /// Per database: the last log index applied to it, as read from (or written to) it.
    markers: HashMap<String, u64>,
    current: Option<SnapshotMeta<NodeId, Member>>,
}

struct Inner {
    replica: Arc<Replica>,
    meta: Arc<dyn Store>,
    dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    schedule: std::sync::Mutex<SnapshotSchedule>,
    /// Signalled when a snapshot is due (see [`StateMachine::snapshot_due`]).
    due: Arc<tokio::sync::Notify>,
}

/// What decides when the next snapshot is due (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSchedule {
    /// The fewest entries between snapshots (`u64::MAX`: never due).
    pub every: u64,
    /// Entries applied since the last snapshot was taken.
    pub entries: u64,
    /// Bytes of keys and values those entries wrote.
    pub bytes: u64,
    /// The size of the last snapshot file, 0 if there is none.
    pub last_size: u64,
}

impl SnapshotSchedule {
    fn new(last_size: u64) -> Self {
        SnapshotSchedule {
            every: u64::MAX,
            entries: 0,
            bytes: 0,
            last_size,
        }
    }

    /// Count applied entries that wrote `bytes`; whether a snapshot is now due.
    fn applied(&mut self, entries: u64, bytes: u64) -> bool {
        self.entries = self.entries.saturating_add(entries);
        self.bytes = self.bytes.saturating_add(bytes);
        self.is_due()
    }

    pub fn is_due(&self) -> bool {
        self.entries >= self.every && self.bytes >= self.last_size / 4
    }

    /// A snapshot was taken at the state applied now: count afresh.
    fn taken(&mut self) {
        self.entries = 0;
        self.bytes = 0;
    }
}

/// A snapshot file's size, 0 if it cannot be read (the schedule then counts entries only).
async fn file_size(path: &Path) -> u64 {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The key and value bytes a command writes.
fn written_bytes(cmd: &Command) -> u64 {
    match cmd {
        Command::Batch { ops, .. } => ops
            .iter()
            .map(|op| match op {
                BatchOp::Put(k, v) => k.len() + v.len(),
                BatchOp::Delete(k) => k.len(),
            })
            .sum::<usize>() as u64,
        Command::CreateDatabase { .. } | Command::DropDatabase { .. } => 0,
    }
}

/// Batches of one database, from consecutive entries of one [`RaftStateMachine::apply`] call,
/// gathered into one write of the database's copy: every key's last write, and the last
/// entry's index as the applied marker. Atomic as one entry's batch was, so a crash leaves
/// all of them or none, and the replay after it skips exactly what the marker covers.
struct Pending {
    database: String,
    store: Arc<dyn Store>,
    /// What the gathered batches write (`None`: delete), which later preconditions read.
    writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The last entry gathered (`None`: none yet).
    index: Option<u64>,
}

impl Pending {
    async fn write(self) -> SmResult<()> {
        let Some(index) = self.index else {
            return Ok(());
        };
        let mut batch: Vec<BatchOp> = self
            .writes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => BatchOp::Put(k, v),
                None => BatchOp::Delete(k),
            })
            .collect();
        batch.push(BatchOp::Put(
            APPLIED_MARKER.to_vec(),
            index.to_be_bytes().to_vec(),
        ));
        // The Raft log is synced; the copy here need not be (see the module docs).
        self.store
            .apply(batch, Durability::Async, None)
            .await
            .map_err(|e| io_error("applying a batch", true, e))
    }
}

/// The state machine. Cheap to clone; a clone is also its snapshot builder.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

type SmResult<T> = Result<T, StorageError<NodeId>>;

fn be_u64(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

impl StateMachine {
    /// Open the state machine of `replica`, with Raft's records in `meta` and snapshot files
    /// in `dir`. Finishes a snapshot install that a crash interrupted.
    pub async fn open(replica: Arc<Replica>, meta: Arc<dyn Store>, dir: &Path) -> SmResult<Self> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_error("creating the snapshot directory", true, e))?;
        let read = |key: &'static [u8]| {
            let meta = meta.clone();
            async move {
                meta.get(key)
                    .await
                    .map_err(|e| io_error("state machine record", false, e))
            }
        };
        let last_applied = match read(SM_APPLIED).await? {
            Some(raw) => decode_or("applied log id", &raw)?,
            None => None,
        };
        let membership = match read(SM_MEMBERSHIP).await? {
            Some(raw) => decode_or("membership", &raw)?,
            None => StoredMembership::default(),
        };
        let current = match read(SM_SNAPSHOT).await? {
            Some(raw) => Some(decode_or("snapshot meta", &raw)?),
            None => None,
        };
        let installing: Option<SnapshotMeta<NodeId, Member>> = match read(SM_INSTALLING).await? {
            Some(raw) => Some(decode_or("snapshot being installed", &raw)?),
            None => None,
        };
        let index = last_applied.map(|l: LogId<NodeId>| l.index).unwrap_or(0);
        replica.applied.send_replace(index);
        let last_size = match current {
            Some(_) => file_size(&dir.join(CURRENT_FILE)).await,
            None => 0,
        };
        let sm = StateMachine {
            inner: Arc::new(Inner {
                replica,
                meta,
                dir: dir.to_path_buf(),
                state: tokio::sync::Mutex::new(State {
                    last_applied,
                    membership,
                    markers: HashMap::new(),
                    current,
                }),
                schedule: std::sync::Mutex::new(SnapshotSchedule::new(last_size)),
                due: Arc::default(),
            }),
        };
        if let Some(meta) = installing {
            tracing::warn!(snapshot = %meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
            let mut st = sm.inner.state.lock().await;
            sm.install_from_file(&mut st, &meta).await?;
        }
        Ok(sm)
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.inner.replica
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, SnapshotSchedule> {
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Make a snapshot due after at least `every` entries (and see the module docs); until
    /// this is called, none is ever due.
    pub fn snapshot_every(&self, every: u64) {
        self.schedule().every = every.max(1);
    }

    /// Signalled each time a snapshot becomes due: the node then asks Raft for one.
    pub fn snapshot_due(&self) -> Arc<tokio::sync::Notify> {
        self.inner.due.clone()
    }

    /// Where the schedule stands.
    pub fn snapshot_schedule(&self) -> SnapshotSchedule {
        self.schedule().clone()
    }

    /// Apply one command. Batches for one database in a row are gathered in `pending` and
    /// written together ([`Pending::write`]); anything else writes them first.
    async fn apply_command(
        &self,
        st: &mut State,
        index: u64,
        cmd: Command,
        pending: &mut Option<Pending>,
    ) -> SmResult<Applied> {
        let replica = &self.inner.replica;
        let fail = |what, e: BackendError| io_error(what, true, e);
        let same_database = matches!((&cmd, &*pending), (Command::Batch { database, .. }, Some(p)) if *database == p.database);
        if !same_database {
            if let Some(p) = pending.take() {
                p.write().await?;
            }
        }
        match cmd {
            Command::CreateDatabase { name } => {
                replica
                    .store(&name, true)
                    .await
                    .map_err(|e| fail("creating a database", e))?;
                Ok(Applied::Done)
            }
            Command::DropDatabase { name } => {
                st.markers.remove(&name);
                replica
                    .drop_database(&name)
                    .await
                    .map_err(|e| fail("dropping a database", e))?;
                Ok(Applied::Done)
            }
            Command::Batch {
                database,
                ops,
                durability: _,
                precondition,
            } => {
                let gathering = match pending.as_mut() {
                    Some(p) => p,
                    None => {
                        let Some(store) = replica
                            .store(&database, false)
                            .await
                            .map_err(|e| fail("opening a database", e))?
                        else {
                            return Ok(Applied::NoDatabase);
                        };
                        pending.insert(Pending {
                            database: database.clone(),
                            store,
                            writes: std::collections::BTreeMap::new(),
                            index: None,
                        })
                    }
                };
                let store = gathering.store.clone();
                let marker = match st.markers.get(&database) {
                    Some(m) => *m,
                    None => store
                        .get(APPLIED_MARKER)
                        .await
                        .map_err(|e| io_error("reading a database's applied index", false, e))?
                        .and_then(|raw| be_u64(&raw))
                        .unwrap_or(0),
                };
                if marker >= index {
                    // Applied before a crash, and durable: replaying the log skips it.
                    st.markers.insert(database, marker);
                    return Ok(Applied::Done);
                }
                let holds = match &precondition {
                    None => true,
                    Some(p) => {
                        let now = match gathering.writes.get(&p.key) {
                            Some(written) => written.clone(),
                            None => store
                                .get(&p.key)
                                .await
                                .map_err(|e| io_error("checking a precondition", false, e))?,
                        };
                        now == p.expected
                    }
                };
                if holds {
                    for op in ops {
                        match op {
                            BatchOp::Put(k, v) => gathering.writes.insert(k, Some(v)),
                            BatchOp::Delete(k) => gathering.writes.insert(k, None),
                        };
                    }
                }
                gathering.index = Some(index);
                st.markers.insert(database, index);
                Ok(if holds {
                    Applied::Done
                } else {
                    Applied::PreconditionFailed
                })
            }
        }
    }

    /// Sync every database, then record the durable point (and, if given, the current
    /// snapshot) — in that order, so the record never claims more than the disk has.
    async fn persist(
        &self,
        st: &State,
        snapshot: Option<&SnapshotMeta<NodeId, Member>>,
    ) -> SmResult<()> {
        let replica = &self.inner.replica;
        for name in replica
            .names()
            .await
            .map_err(|e| io_error("listing databases", false, e))?
        {
            if let Some(store) = replica
                .store(&name, false)
                .await
                .map_err(|e| io_error("opening a database", false, e))?
            {
                store
                    .sync()
                    .await
                    .map_err(|e| io_error("syncing a database", true, e))?;
            }
        }
        let mut ops = vec![
            BatchOp::Put(
                SM_APPLIED.to_vec(),
                encode_or("applied log id", &st.last_applied)?,
            ),
            BatchOp::Put(
                SM_MEMBERSHIP.to_vec(),
                encode_or("membership", &st.membership)?,
            ),
        ];
        if let Some(meta) = snapshot {
            ops.push(BatchOp::Put(
                SM_SNAPSHOT.to_vec(),
                encode_or("snapshot meta", meta)?,
            ));
        }
        ops.push(BatchOp::Delete(SM_INSTALLING.to_vec()));
        self.inner
            .meta
            .apply(ops, Durability::Sync, None)
            .await
            .map_err(|e| io_error("recording the applied point", true, e))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.inner.dir.join(file)
    }

    async fn open_current(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
    ) -> SmResult<Snapshot<TypeConfig>> {
        let file = tokio::fs::File::open(self.path(CURRENT_FILE))
            .await
            .map_err(|e| io_error("opening the snapshot", false, e))?;
        Ok(Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(file),
        })
    }

    /// Replace every database with the contents of `snapshot-installing`, then make it the
    /// current snapshot.
    async fn install_from_file(
        &self,
        st: &mut State,
        meta: &SnapshotMeta<NodeId, Member>,
    ) -> SmResult<()> {
        let replica = &self.inner.replica;
        let file = tokio::fs::File::open(self.path(INSTALLING_FILE))
            .await
            .map_err(|e| io_error("opening the received snapshot", false, e))?;
        let mut reader = SnapshotReader::new(BufReader::new(file))
            .await
            .map_err(|e| io_error("reading the received snapshot", false, e))?;
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let mut kept = Vec::new();
        let mut current: Option<Arc<dyn Store>> = None;
        let mut batch = Vec::new();
        let flush = |store: Option<Arc<dyn Store>>, batch: Vec<BatchOp>| async move {
            if let (Some(s), false) = (store, batch.is_empty()) {
                s.apply(batch, Durability::Async, None)
                    .await
                    .map_err(|e| io_error("loading the snapshot", true, e))?;
            }
            Ok::<_, StorageError<NodeId>>(())
        };
        while let Some(rec) = reader
            .next()
            .await
            .map_err(|e| io_error("reading the received snapshot", false, e))?
        {
            match rec {
                Record::Database(name) => {
                    flush(current.take(), std::mem::take(&mut batch)).await?;
                    let store = replica
                        .store(&name, true)
                        .await
                        .map_err(|e| io_error("creating a database", true, e))?
                        .ok_or_else(|| io_error("creating a database", true, "not created"))?;
                    clear(&*store).await?;
                    kept.push(name);
                    current = Some(store);
                }
                Record::Pair(k, v) => {
                    if k.as_slice() == APPLIED_MARKER {
                        continue;
                    }
                    batch.push(BatchOp::Put(k, v));
                    if batch.len() >= LOAD_BATCH {
                        flush(current.clone(), std::mem::take(&mut batch)).await?;
                    }
                }
            }
        }
        flush(current.take(), std::mem::take(&mut batch)).await?;
        for name in replica
            .names()
            .await
            .map_err(|e| io_error("listing databases", false, e))?
        {
            if !kept.contains(&name) {
                replica
                    .drop_database(&name)
                    .await
                    .map_err(|e| io_error("dropping a database", true, e))?;
            }
        }
        st.markers.clear();
        for name in &kept {
            if let Some(store) = replica
                .store(name, false)
                .await
                .map_err(|e| io_error("opening a database", false, e))?
            {
                store
                    .apply(
                        vec![BatchOp::Put(
                            APPLIED_MARKER.to_vec(),
                            index.to_be_bytes().to_vec(),
                        )],
                        Durability::Async,
                        None,
                    )
                    .await
                    .map_err(|e| io_error("loading the snapshot", true, e))?;
                st.markers.insert(name.clone(), index);
            }
        }
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        tokio::fs::rename(self.path(INSTALLING_FILE), self.path(CURRENT_FILE))
            .await
            .map_err(|e| io_error("keeping the snapshot", true, e))?;
        self.persist(st, Some(meta)).await?;
        st.current = Some(meta.clone());
        let size = file_size(&self.path(CURRENT_FILE)).await;
        let mut schedule = self.schedule();
        schedule.taken();
        schedule.last_size = size;
        drop(schedule);
        replica.applied.send_replace(index);
        Ok(())
    }
}

/// Delete every key of a store.
async fn clear(store: &dyn Store) -> SmResult<()> {
    loop {
        let keys = store
            .scan(&[], &[], false, LOAD_BATCH)
            .await
            .map_err(|e| io_error("clearing a database", false, e))?;
        if keys.is_empty() {
            return Ok(());
        }
        let ops = keys.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect();
        store
            .apply(ops, Durability::Async, None)
            .await
            .map_err(|e| io_error("clearing a database", true, e))?;
    }
}

/// Where a snapshot reads a database from.
enum Source {
    /// A view frozen when the snapshot was started: applying goes on meanwhile.
    Frozen(Arc<dyn ReadView>),
    /// The store itself, read while applying waits (a store that cannot freeze a view).
    Live(Arc<dyn Store>),
}

impl Source {
    async fn scan(&self, from: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        match self {
            Source::Frozen(v) => v.scan(from, &[], LOAD_BATCH).await,
            Source::Live(s) => s.scan(from, &[], false, LOAD_BATCH).await,
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<TypeConfig>> {
        // One consistent state: the applied position and every database as of it. Where
        // every store can freeze a view, applying goes on while the views are written out;
        // otherwise it waits for the whole snapshot.
        let st = self.inner.state.lock().await;
        let replica = self.inner.replica.clone();
        let (last, membership) = (st.last_applied, st.membership.clone());
        // Entries applied from here on count toward the next snapshot.
        self.schedule().taken();
        let mut sources = Vec::new();
        let mut frozen = true;
        for name in replica
            .names()
            .await
            .map_err(|e| io_error("listing databases", false, e))?
        {
            let Some(store) = replica
                .store(&name, false)
                .await
                .map_err(|e| io_error("opening a database", false, e))?
            else {
                continue;
            };
            let view = if frozen {
                store
                    .read_view()
                    .await
                    .map_err(|e| io_error("reading a database", false, e))?
            } else {
                None
            };
            match view {
                Some(v) => sources.push((name, Source::Frozen(v))),
                None => {
                    frozen = false;
                    sources.push((name, Source::Live(store)));
                }
            }
        }
        // Frozen views need no lock; a live store is read under it, for one consistent state.
        let held = if frozen {
            drop(st);
            None
        } else {
            Some(st)
        };

        let tmp = self.path(&format!("snapshot-building-{}", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_error("creating a snapshot", true, e))?;
        let mut w = SnapshotWriter::new(BufWriter::new(file))
            .await
            .map_err(|e| io_error("writing a snapshot", true, e))?;
        let werr = |e| io_error("writing a snapshot", true, e);
        for (name, source) in &sources {
            w.database(name).await.map_err(werr)?;
            let mut from = Vec::new();
            loop {
                let chunk = source
                    .scan(&from)
                    .await
                    .map_err(|e| io_error("reading a database", false, e))?;
                let full = chunk.len() == LOAD_BATCH;
                for (k, v) in &chunk {
                    w.pair(k, v).await.map_err(werr)?;
                }
                match chunk.last() {
                    Some((k, _)) if full => {
                        from = k.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        drop(sources);
        let file = w.finish().await.map_err(werr)?.into_inner();
        file.sync_all()
            .await
            .map_err(|e| io_error("syncing a snapshot", true, e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| io_error("syncing a snapshot", true, e))?
            .len();
        drop(file);

        let mut st = match held {
            Some(st) => st,
            None => self.inner.state.lock().await,
        };
        // A snapshot installed meanwhile (from the leader) is newer than this one: keep it.
        if let Some(current) = st.current.clone() {
            if current.last_log_id >= last {
                let _ = tokio::fs::remove_file(&tmp).await;
                return self.open_current(&current).await;
            }
        }
        tokio::fs::rename(&tmp, self.path(CURRENT_FILE))
            .await
            .map_err(|e| io_error("keeping the snapshot", true, e))?;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                uuid::Uuid::new_v4().simple()
            ),
        };
        // Records what is applied now (every database synced first), and the snapshot.
        self.persist(&st, Some(&meta)).await?;
        st.current = Some(meta.clone());
        self.schedule().last_size = size;
        self.open_current(&meta).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> SmResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let st = self.inner.state.lock().await;
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<Applied>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.inner.state.lock().await;
        let mut out = Vec::new();
        let mut pending = None;
        let mut bytes = 0;
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::Done,
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied::Done
                }
                EntryPayload::Normal(cmd) => {
                    bytes += written_bytes(&cmd);
                    self.apply_command(&mut st, entry.log_id.index, cmd, &mut pending)
                        .await?
                }
            };
            out.push(applied);
        }
        if let Some(p) = pending {
            p.write().await?;
        }
        if let Some(l) = st.last_applied {
            self.inner.replica.applied.send_replace(l.index);
        }
        if self.schedule().applied(out.len() as u64, bytes) {
            self.inner.due.notify_one();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<tokio::fs::File>> {
        let path = self.path(&format!("snapshot-receiving-{}", uuid::Uuid::new_v4()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error("receiving a snapshot", true, e))?;
        // The name is only needed while it is written: unlinked now, the data lives as long
        // as the handle, and nothing is left behind if the transfer is abandoned.
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> SmResult<()> {
        // Check the whole file before anything is touched, and keep it durable, named, so
        // that a crash in the middle of installing finishes the install on restart.
        snapshot
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| io_error("reading the received snapshot", false, e))?;
        let reader = SnapshotReader::new(BufReader::new(&mut *snapshot))
            .await
            .map_err(|e| io_error("checking the received snapshot", false, e))?;
        reader
            .verify()
            .await
            .map_err(|e| io_error("checking the received snapshot", false, e))?;
        snapshot
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| io_error("reading the received snapshot", false, e))?;
        let mut kept = tokio::fs::File::create(self.path(INSTALLING_FILE))
            .await
            .map_err(|e| io_error("keeping the received snapshot", true, e))?;
        tokio::io::copy(&mut *snapshot, &mut kept)
            .await
            .map_err(|e| io_error("keeping the received snapshot", true, e))?;
        kept.sync_all()
            .await
            .map_err(|e| io_error("keeping the received snapshot", true, e))?;
        drop(kept);
        let mut st = self.inner.state.lock().await;
        self.inner
            .meta
            .apply(
                vec![BatchOp::Put(
                    SM_INSTALLING.to_vec(),
                    encode_or("snapshot meta", meta)?,
                )],
                Durability::Sync,
                None,
            )
            .await
            .map_err(|e| io_error("recording a snapshot install", true, e))?;
        self.install_from_file(&mut st, meta).await
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<TypeConfig>>> {
        // Opened under the lock: a snapshot being built replaces the file and its meta
        // together, so the two always match.
        let st = self.inner.state.lock().await;
        match &st.current {
            Some(meta) => Ok(Some(self.open_current(meta).await?)),
            None => Ok(None),
        }
    }
}
