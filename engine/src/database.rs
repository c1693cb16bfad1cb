//! One database: its shared state, its read API, and the doors into its commit pipeline.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::atomic::{self, AtomicWrite, CommitOutcome};
use crate::backend::{BackendError, BatchOp, Durability, Precondition, Store};
use crate::clock::now_ms;
use crate::error::{EngineError, Result};
use crate::layout::{self, READY};
use crate::limits::{DatabaseOptions, EngineConfig};
use crate::log::CommitLog;
use crate::mvcc;
use crate::pipeline::{CommitOp, CommitReply, CommitRequest, Pipeline};
use crate::queue::{MessageId, QueueMessage, RestoreMessage};
use crate::txn::Transaction;
use crate::value::{Entry, Value, Versionstamp};
use crate::watch::Watch;

/// How far an `async` database's version jumps when it is reopened: more commits than can
/// be acknowledged between two syncs.
pub const ASYNC_RESTART_GAP: u64 = 1 << 24;

/// The longest a queue lease may last.
pub const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;

/// Which version a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadAt {
    /// The newest committed version.
    #[default]
    Latest,
    /// An older version inside the history retention window.
    Version(u64),
}

/// One range of a snapshot read: `[start, end)` (an empty `end` is unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: usize,
    pub reverse: bool,
}

impl ReadRange {
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>, limit: usize) -> Self {
        ReadRange {
            start: start.into(),
            end: end.into(),
            limit,
            reverse: false,
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8], limit: usize) -> Self {
        ReadRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
            limit,
            reverse: false,
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (empty: unbounded).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The result of a snapshot read: every range's entries, all at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRead {
    pub version: u64,
    pub ranges: Vec<Vec<Entry>>,
}

/// Read versions held by open transactions and in-progress reads, with counts.
pub(crate) struct ReadRegistry {
    pub active: BTreeMap<u64, usize>,
}

pub(crate) struct Shared {
    pub name: String,
    pub id: String,
    pub options: DatabaseOptions,
    pub config: EngineConfig,
    pub store: Arc<dyn Store>,
    pub log: Arc<dyn CommitLog>,
    /// Other processes may commit to the same store: commits carry a precondition on the
    /// version record, and this process learns the others' commits from the store.
    pub multi_process: bool,
    /// The newest version applied to the store and published.
    pub applied: watch::Sender<u64>,
    /// The newest version whose commit removed a key's latest record.
    pub last_delete: AtomicU64,
    pub reads: Mutex<ReadRegistry>,
    /// The oldest version a read may ask for. Changed only with `reads` locked, so that a
    /// hold and a collection never pass each other; read without the lock by point reads,
    /// which check it after reading instead of holding.
    pub horizon: AtomicU64,
    /// The change feed is complete after this version; [`crate::feed::FEED_OFF`] while the
    /// database has none.
    pub feed_from: AtomicU64,
    pub watchers: Mutex<HashMap<Vec<u8>, Vec<Weak<Notify>>>>,
    pub queue_ready: Notify,
    pub commits: mpsc::Sender<CommitRequest>,
    pub shutdown: watch::Sender<bool>,
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
    pub stats: PipelineCounters,
    /// State that layers keep per open database ([`Database::layer_state`]), by type.
    pub layers: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

/// Running totals of the commit pipeline, read through [`Database::pipeline_stats`].
#[derive(Default)]
pub(crate) struct PipelineCounters {
    pub groups: AtomicU64,
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    pub resolve_ns: AtomicU64,
    pub append_ns: AtomicU64,
    pub linger_ns: AtomicU64,
    pub waiting: AtomicU64,
}

/// A queued or dead-lettered message, for inspection.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: MessageId,
    /// When it is (next) deliverable, ms since the epoch; for a dead letter, when the queue
    /// gave up on it.
    pub ready_at: u64,
    /// Deliveries made so far.
    pub attempts: u32,
    /// Delivered and not yet acknowledged, with its lease running.
    pub leased: bool,
    pub payload: Value,
    /// Where the payload goes (went, for a dead letter) once deliveries are exhausted.
    pub dead_letter_keys: Vec<Vec<u8>>,
}

/// What the commit pipeline of a database has done since it opened: how well commits share
/// a group, and where a group's time goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Groups written to the commit log (each one backend write, and one sync when durable).
    pub groups: u64,
    /// Commit requests those groups carried, failed checks and conflicts included.
    pub commits: u64,
    /// Commit requests refused with a retryable conflict.
    pub conflicts: u64,
    /// Time spent resolving groups: conflict checks, atomic checks, building the batch.
    pub resolve: std::time::Duration,
    /// Time spent appending groups to the log: the backend write and its sync.
    pub append: std::time::Duration,
    /// Time groups were held back, lingering for the commits just answered to come back
    /// (a cluster node's leader, see [`EngineConfig::group_linger`](crate::EngineConfig)).
    pub linger: std::time::Duration,
    /// Commits resolved into the next group and waiting for it to go to the log, now.
    pub waiting: u64,
}

impl Shared {
    /// Wake watchers of the touched keys and, if messages moved, queue consumers.
    pub(crate) fn publish(&self, touched: &[Vec<u8>], queue_changed: bool) {
        if !touched.is_empty() {
            let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            if !watchers.is_empty() {
                for k in touched {
                    if let Some(list) = watchers.get_mut(k) {
                        list.retain(|w| match w.upgrade() {
                            Some(n) => {
                                n.notify_one();
                                true
                            }
                            None => false,
                        });
                        if list.is_empty() {
                            watchers.remove(k);
                        }
                    }
                }
            }
        }
        if queue_changed {
            self.queue_ready.notify_waiters();
        }
    }

    /// Move the horizon up to `candidate`, but never past a version a reader holds.
    pub(crate) fn advance_horizon(&self, candidate: u64) -> u64 {
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let oldest_reader = reads.active.keys().next().copied().unwrap_or(u64::MAX);
        let applied = *self.applied.borrow();
        let h = candidate
            .min(oldest_reader)
            .min(applied)
            .max(self.horizon.load(Ordering::SeqCst));
        self.horizon.store(h, Ordering::SeqCst);
        h
    }

    /// Another process collected history up to `h`: reads below it are refused from now on.
    pub(crate) fn raise_horizon(&self, h: u64) {
        let _reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        self.horizon.fetch_max(h, Ordering::SeqCst);
    }

    /// Hold `version` readable until the guard drops.
    pub(crate) fn hold(self: &Arc<Self>, version: u64) -> Result<ReadGuard> {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        self.hold_locked(&mut reads, version)
    }

    /// Hold the newest published version readable: it and its guard, taken under one lock
    /// so that [`Shared::read_floor`] never passes a transaction being begun.
    pub(crate) fn hold_latest(self: &Arc<Self>) -> Result<(u64, ReadGuard)> {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.latest();
        Ok((version, self.hold_locked(&mut reads, version)?))
    }

    /// The oldest version a transaction of this process may still read at, and so commit
    /// from: the oldest read held, or with none, the newest published version (where the
    /// next transaction begins). Conflict checks need no commit at or below it.
    pub(crate) fn read_floor(&self) -> u64 {
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.latest();
        reads
            .active
            .keys()
            .next()
            .map_or(latest, |&v| v.min(latest))
    }

    fn hold_locked(self: &Arc<Self>, reads: &mut ReadRegistry, version: u64) -> Result<ReadGuard> {
        let horizon = self.horizon.load(Ordering::SeqCst);
        if version < horizon {
            return Err(EngineError::VersionTooOld {
                requested: version,
                oldest: horizon,
            });
        }
        *reads.active.entry(version).or_insert(0) += 1;
        Ok(ReadGuard {
            shared: self.clone(),
            version,
        })
    }

    /// With other processes sharing the store: catch up with their commits, so that what
    /// this process reads next is at least as new as the store. One read when nothing changed.
    pub(crate) async fn refresh(&self) -> Result<()> {
        if !self.multi_process {
            return Ok(());
        }
        let head = match self.store.get(layout::META_VERSION).await? {
            Some(b) => layout::record_version(&b).ok_or_else(|| EngineError::Corrupt {
                database: self.name.clone(),
                detail: "bad version record".into(),
            })?,
            None => 0,
        };
        if head > self.latest() {
            self.commit(CommitOp::CatchUp { seen: head }).await?;
        }
        Ok(())
    }

    /// With other processes sharing the store: fail a read at `v` if some process's garbage
    /// collection has passed `v` (its history may be gone). Called after long reads.
    pub(crate) async fn check_horizon(&self, v: u64) -> Result<()> {
        if !self.multi_process {
            return Ok(());
        }
        let stored = match self.store.get(layout::META_HORIZON).await? {
            Some(b) => layout::be_u64(&b).unwrap_or(0),
            None => 0,
        };
        if stored > v {
            return Err(EngineError::VersionTooOld {
                requested: v,
                oldest: stored,
            });
        }
        Ok(())
    }

    pub(crate) fn latest(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether reads at `v` must also walk history to find keys deleted after `v`.
    pub(crate) fn needs_precise(&self, v: u64) -> bool {
        self.last_delete.load(Ordering::SeqCst) > v
    }

    /// Commit `op`: an atomic write or a transaction goes to the process that resolves
    /// commits for a shared store, if the store names one (see [`crate::forward`]); anything
    /// else, and everything on other stores, goes through this database's own pipeline.
    pub(crate) async fn commit(&self, op: CommitOp) -> Result<CommitReply> {
        if *self.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        if self.multi_process && self.store.forwards_commits() {
            if let Some(request) = crate::forward::request(&op) {
                match self.store.forward_commit(&request).await {
                    Ok(Some(reply)) => {
                        return crate::forward::outcome(&reply).map(CommitReply::Outcome)
                    }
                    Ok(None) => {}
                    Err(BackendError::InDoubt(detail)) => {
                        return Err(EngineError::CommitResultUnknown {
                            database: self.name.clone(),
                            detail,
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.commit_here(op, false).await
    }

    /// Commit `op` through this database's own pipeline; `forwarded`: for another process.
    pub(crate) async fn commit_here(&self, op: CommitOp, forwarded: bool) -> Result<CommitReply> {
        if *self.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        self.commits
            .send(CommitRequest {
                op,
                reply: tx,
                forwarded,
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }
}

/// Keeps a read version from being garbage-collected.
pub(crate) struct ReadGuard {
    shared: Arc<Shared>,
    version: u64,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut reads = self.shared.reads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = reads.active.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                reads.active.remove(&self.version);
            }
        }
    }
}

/// A handle to one open database. Cheap to clone; every clone is the same database.
#[derive(Clone)]
pub struct Database {
    pub(crate) shared: Arc<Shared>,
    /// Reads through this handle skip the store's read barrier (see [`Database::eventual`]).
    eventual: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.shared.name)
            .field("version", &self.version())
            .finish()
    }
}

impl Database {
    /// Open a database over its store: read (or, for a new database, write) its metadata,
    /// then start its pipeline and background tasks.
    pub(crate) async fn open(
        name: &str,
        store: Arc<dyn Store>,
        log: Arc<dyn CommitLog>,
        new_options: DatabaseOptions,
        config: EngineConfig,
        multi_process: bool,
    ) -> Result<Database> {
        let corrupt = |detail: &str| EngineError::Corrupt {
            database: name.to_string(),
            detail: detail.into(),
        };
        let read_u64 = |raw: Option<Vec<u8>>| -> Result<u64> {
            match raw {
                Some(b) => layout::be_u64(&b).ok_or_else(|| corrupt("bad version record")),
                None => Ok(0),
            }
        };
        // Creating is conditional on the id being absent, so that of several processes
        // creating one database at once, exactly one writes its id and options and every
        // other one reads them.
        let mut created = false;
        if store.get(layout::META_ID).await?.is_none() {
            let id = uuid::Uuid::new_v4().to_string();
            let opts = serde_json::to_vec(&new_options).map_err(|e| corrupt(&e.to_string()))?;
            let write = store
                .apply(
                    vec![
                        BatchOp::Put(layout::META_ID.to_vec(), id.into_bytes()),
                        BatchOp::Put(layout::META_OPTIONS.to_vec(), opts),
                    ],
                    Durability::Sync,
                    Some(Precondition {
                        key: layout::META_ID.to_vec(),
                        expected: None,
                    }),
                )
                .await;
            match write {
                Ok(()) => created = true,
                Err(BackendError::PreconditionFailed) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let id = store
            .get(layout::META_ID)
            .await?
            .ok_or_else(|| corrupt("database id missing"))?;
        let id = String::from_utf8(id).map_err(|_| corrupt("database id is not UTF-8"))?;
        let options: DatabaseOptions = match store.get(layout::META_OPTIONS).await? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|e| corrupt(&format!("options: {e}")))?
            }
            None => DatabaseOptions::default(),
        };
        let read_record = |raw: Option<Vec<u8>>| -> Result<(u64, Option<Vec<u8>>)> {
            match raw {
                Some(b) => match layout::record_version(&b) {
                    Some(v) => Ok((v, Some(b))),
                    None => Err(corrupt("bad version record")),
                },
                None => Ok((0, None)),
            }
        };
        let (mut version, mut record) = read_record(store.get(layout::META_VERSION).await?)?;
        while !created && options.durability == Durability::Async && version > 0 {
            // Commits acknowledged after the last sync may have been lost in a crash; their
            // versionstamps must never be handed out again, so skip past any that could
            // exist. Conditional: another process may be committing or reopening too.
            let bumped = layout::version_record(version.saturating_add(ASYNC_RESTART_GAP), None);
            let write = store
                .apply(
                    vec![BatchOp::Put(layout::META_VERSION.to_vec(), bumped.clone())],
                    Durability::Sync,
                    Some(Precondition {
                        key: layout::META_VERSION.to_vec(),
                        expected: record.clone(),
                    }),
                )
                .await;
            match write {
                Ok(()) => {
                    version = version.saturating_add(ASYNC_RESTART_GAP);
                    record = Some(bumped);
                    break;
                }
                Err(BackendError::PreconditionFailed) => {
                    (version, record) = read_record(store.get(layout::META_VERSION).await?)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let horizon = read_u64(store.get(layout::META_HORIZON).await?)?;
        let feed_from = match store.get(layout::META_FEED).await? {
            Some(b) => layout::be_u64(&b).ok_or_else(|| corrupt("bad change-feed record"))?,
            None if !(multi_process || created && options.change_feed) => crate::feed::FEED_OFF,
            None => {
                // On a shared store every group's write record is kept anyway, so the feed
                // is always on: a new database's from its beginning, one created before the
                // feed existed from now. Conditional, as another process may be opening it
                // too.
                let from = if created { 0 } else { version };
                let write = store
                    .apply(
                        vec![BatchOp::Put(
                            layout::META_FEED.to_vec(),
                            from.to_be_bytes().to_vec(),
                        )],
                        Durability::Sync,
                        Some(Precondition {
                            key: layout::META_FEED.to_vec(),
                            expected: None,
                        }),
                    )
                    .await;
                match write {
                    Ok(()) => from,
                    Err(BackendError::PreconditionFailed) => {
                        read_u64(store.get(layout::META_FEED).await?)?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };

        let (tx, rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            id,
            options,
            config,
            store,
            log,
            multi_process,
            applied: watch::channel(version).0,
            // After a restart, nothing is known about deletes: treat every older version as
            // possibly affected.
            last_delete: AtomicU64::new(version),
            stats: PipelineCounters::default(),
            layers: Mutex::new(HashMap::new()),
            horizon: AtomicU64::new(horizon),
            feed_from: AtomicU64::new(feed_from),
            reads: Mutex::new(ReadRegistry {
                active: BTreeMap::new(),
            }),
            watchers: Mutex::new(HashMap::new()),
            queue_ready: Notify::new(),
            commits: tx,
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![tokio::spawn(
            Pipeline::new(shared.clone(), rx, record).run(),
        )];
        if shared.config.background_tasks {
            tasks.push(tokio::spawn(crate::expiry::sweeper(shared.clone())));
            tasks.push(tokio::spawn(crate::expiry::collector(shared.clone())));
        }
        if shared.multi_process {
            tasks.push(tokio::spawn(crate::expiry::follower(shared.clone())));
        }
        *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(Database {
            shared,
            eventual: false,
        })
    }

    /// Stop the pipeline and background tasks; commits in the channel are answered first.
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.queue_ready.notify_waiters();
        let tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let had_tasks = !tasks.is_empty();
        for t in tasks {
            let _ = t.await;
        }
        if had_tasks {
            if let Err(e) = self.shared.store.sync().await {
                tracing::error!(database = %self.shared.name, error = %e, "final sync failed");
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the commit pipeline has done since the database opened.
    pub fn pipeline_stats(&self) -> PipelineStats {
        let c = &self.shared.stats;
        PipelineStats {
            groups: c.groups.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            resolve: std::time::Duration::from_nanos(c.resolve_ns.load(Ordering::Relaxed)),
            append: std::time::Duration::from_nanos(c.append_ns.load(Ordering::Relaxed)),
            linger: std::time::Duration::from_nanos(c.linger_ns.load(Ordering::Relaxed)),
            waiting: c.waiting.load(Ordering::Relaxed),
        }
    }

    /// This database, read *eventually*: reads through the returned handle take the newest
    /// version this process already holds instead of first asking the store for one at
    /// least as new as every commit acknowledged anywhere ([`Store::read_barrier`]). On a
    /// replicated store that makes reads local to this node and possibly stale by its
    /// replication lag; elsewhere it changes nothing. Writes are unaffected.
    pub fn eventual(&self) -> Database {
        Database {
            shared: self.shared.clone(),
            eventual: true,
        }
    }

    /// Commit `op`, which another process forwarded here, through this process's own
    /// pipeline (for [`crate::Engine::commit_forwarded`]).
    pub(crate) async fn commit_forwarded(&self, op: CommitOp) -> Result<CommitOutcome> {
        self.shared.commit_here(op, true).await?.into_outcome()
    }

    /// Whether reads through this handle are eventual (see [`Database::eventual`]).
    pub fn is_eventual(&self) -> bool {
        self.eventual
    }

    /// Whether another process dropped this database since this handle was opened (see
    /// [`crate::Store::dropped`]); its reads and writes then fail.
    pub fn dropped_elsewhere(&self) -> bool {
        self.shared.store.dropped()
    }

    /// Before a read takes its version: on a shared store, pass the store's read barrier
    /// (unless this handle reads eventually), then learn other writers' commits.
    pub(crate) async fn refresh_for_read(&self) -> Result<()> {
        if self.shared.multi_process && !self.eventual {
            self.shared.store.read_barrier().await?;
        }
        self.shared.refresh().await
    }

    /// A UUID fixed when the database was created.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The state of type `T` that a layer keeps for this database while it is open (a
    /// cache of what it derived from the database's contents, say): made with
    /// `T::default()` on first use, shared by every handle of this database, dropped with
    /// the database. One per type: a layer keeps its state under a type of its own.
    pub fn layer_state<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut layers = self.shared.layers.lock().unwrap_or_else(|p| p.into_inner());
        let any = layers
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        // The entry under `T`'s type id holds a `T`.
        any.downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }

    pub fn options(&self) -> &DatabaseOptions {
        &self.shared.options
    }

    /// The newest committed version.
    pub fn version(&self) -> u64 {
        self.shared.latest()
    }

    /// The oldest version that reads may still ask for.
    pub fn oldest_readable_version(&self) -> u64 {
        self.shared.horizon.load(Ordering::SeqCst)
    }

    /// The newest published version committed at or before `ms` (milliseconds since the
    /// epoch) that reads may still ask for, or `None` if every such version is older than
    /// the retention window. Versions committed in one group share its commit time.
    pub async fn version_at_time(&self, ms: u64) -> Result<Option<u64>> {
        self.refresh_for_read().await?;
        let published = self.shared.latest();
        let oldest = self.oldest_readable_version();
        let (start, mut end) = layout::family(layout::TIMES);
        end = end.min(layout::times(published.saturating_add(1)));
        loop {
            let chunk = self.shared.store.scan(&start, &end, true, 256).await?;
            let Some((last, _)) = chunk.last() else {
                // No commit time at or before `ms` is kept: before the first commit, the
                // empty database (version 0) is the answer if it is still readable.
                return Ok((oldest == 0 && published == 0).then_some(0));
            };
            end = last.clone();
            for (key, value) in &chunk {
                let (Some(version), Some(at)) =
                    (key.get(1..).and_then(layout::be_u64), layout::be_u64(value))
                else {
                    return Err(EngineError::Corrupt {
                        database: self.shared.name.clone(),
                        detail: "malformed commit-time record".into(),
                    });
                };
                if version < oldest {
                    return Ok(None);
                }
                if at <= ms {
                    return Ok(Some(version));
                }
            }
        }
    }

    /// Wait until `version` is committed and visible.
    pub async fn wait_for_version(&self, version: u64) -> Result<()> {
        let mut rx = self.shared.applied.subscribe();
        rx.wait_for(|v| *v >= version)
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        Ok(())
    }

    fn check_read_key(&self, key: &[u8]) -> Result<()> {
        atomic::check_key(&self.shared.options.limits, key, false)
    }

    /// The newest version of one key: one backend point lookup.
    ///
    /// What it returns is never newer than what later reads see: a record whose commit this
    /// process has not published yet is read at the published version instead, and one that
    /// another process committed makes this process catch up before returning it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.check_read_key(key)?;
        let shared = &self.shared;
        if !shared.multi_process {
            // A point read is short: instead of holding its version against the collector
            // (two lock round trips), it checks afterwards that the collector did not pass it.
            for _ in 0..3 {
                let v = shared.latest();
                let (_, rec) = self
                    .read_at(v, |v, precise| {
                        mvcc::get(&*shared.store, &shared.name, key, v, precise, now_ms())
                    })
                    .await?;
                if shared.horizon.load(Ordering::SeqCst) <= v {
                    return Ok(rec.map(|r| r.into_entry(key.to_vec())));
                }
            }
            let mut found = self.get_many(&[key.to_vec()], ReadAt::Latest).await?;
            return Ok(found.pop().flatten());
        }
        // One key's newest record, read alone, is exact: no snapshot to keep consistent. On a
        // replicated store the barrier first makes this node's copy new enough.
        if !self.eventual {
            shared.store.read_barrier().await?;
        }
        let rec = mvcc::get(&*shared.store, &shared.name, key, u64::MAX, false, now_ms()).await?;
        match &rec {
            // Another process's commit: learn it, so that later reads see it too.
            Some(r) if r.version() > shared.latest() => shared.refresh().await?,
            Some(_) => {}
            // Absent may be another process's delete (or an expiry) newer than what this
            // process knows: the version record, read after the key, says.
            None => shared.refresh().await?,
        }
        Ok(rec.map(|r| r.into_entry(key.to_vec())))
    }

    /// Several keys at one consistent version: one backend request for their newest records
    /// (one `BatchGetItem` per 100 keys on DynamoDB), history only for keys newer than it.
    pub async fn get_many(&self, keys: &[Vec<u8>], at: ReadAt) -> Result<Vec<Option<Entry>>> {
        for k in keys {
            self.check_read_key(k)?;
        }
        self.at_version(at, |v, precise| async move {
            let found = mvcc::get_many(
                &*self.shared.store,
                &self.shared.name,
                keys,
                v,
                precise,
                now_ms(),
            )
            .await?;
            Ok(keys
                .iter()
                .zip(found)
                .map(|(k, r)| r.map(|r| r.into_entry(k.clone())))
                .collect())
        })
        .await
        .map(|(_, r)| r)
    }

    /// Several ranges at one consistent version, each forward or reverse with a limit.
    pub async fn snapshot_read(&self, ranges: &[ReadRange], at: ReadAt) -> Result<SnapshotRead> {
        let limits = &self.shared.options.limits;
        if ranges.len() > limits.max_read_ranges {
            return Err(EngineError::limit(
                "ranges per read",
                "ranges",
                ranges.len(),
                limits.max_read_ranges,
            ));
        }
        let mut total = 0usize;
        for r in ranges {
            self.check_read_key(&r.start)?;
            self.check_read_key(&r.end)?;
            if r.limit == 0 {
                return Err(EngineError::InvalidRequest(
                    "a read range's limit must be at least 1".into(),
                ));
            }
            total = total.saturating_add(r.limit);
        }
        if total > limits.max_read_entries {
            return Err(EngineError::limit(
                "entries per read",
                "sum of range limits",
                total,
                limits.max_read_entries,
            ));
        }
        let (version, ranges) = self
            .at_version(at, |v, precise| async move {
                let now = now_ms();
                let mut out = Vec::with_capacity(ranges.len());
                for r in ranges {
                    let found = mvcc::scan(
                        &*self.shared.store,
                        &self.shared.name,
                        &r.start,
                        &r.end,
                        r.reverse,
                        r.limit,
                        v,
                        precise,
                        now,
                    )
                    .await?;
                    out.push(
                        found
                            .into_iter()
                            .map(|(k, rec)| rec.into_entry(k))
                            .collect(),
                    );
                }
                Ok(out)
            })
            .await?;
        Ok(SnapshotRead { version, ranges })
    }

    /// Run a read at the version `at` names, precisely when deletes may have passed it.
    ///
    /// `Latest` is the newest published version (after catching up with other processes on
    /// a shared store), never a commit still on its way: so a read never returns a version
    /// that a later read could not see.
    pub(crate) async fn at_version<T, F, Fut>(&self, at: ReadAt, read: F) -> Result<(u64, T)>
    where
        F: Fn(u64, bool) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match at {
            ReadAt::Latest => {
                self.refresh_for_read().await?;
                let v = self.shared.latest();
                let _guard = self.shared.hold(v)?;
                self.read_at(v, read).await
            }
            ReadAt::Version(v) => {
                if v > self.shared.latest() {
                    // Another process may have committed it: learn its commits first.
                    self.refresh_for_read().await?;
                }
                let latest = self.shared.latest();
                if v > latest {
                    return Err(EngineError::VersionInFuture {
                        requested: v,
                        latest,
                    });
                }
                let _guard = self.shared.hold(v)?;
                let out = self.read_at(v, read).await?;
                self.shared.check_horizon(v).await?;
                Ok(out)
            }
        }
    }

    /// Read at `v` (already held): fast unless a commit newer than `v` removed a key.
    ///
    /// A fast read trusts that no key it found absent was deleted after `v`. That is checked
    /// again once the read is done, since such a commit may land while it runs: this
    /// process's own deletes are known before they reach the store; on a shared store, the
    /// version record is read again and any newer commits learned (their write sets say
    /// whether they deleted) — so a read never mixes states across another process's commit.
    pub(crate) async fn read_at<T, F, Fut>(&self, v: u64, read: F) -> Result<(u64, T)>
    where
        F: Fn(u64, bool) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if !self.shared.needs_precise(v) {
            let fast = read(v, false).await?;
            self.shared.refresh().await?;
            if !self.shared.needs_precise(v) {
                return Ok((v, fast));
            }
        }
        Ok((v, read(v, true).await?))
    }

    /// Commit checks, mutations and enqueues atomically.
    pub async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitOutcome> {
        atomic::validate(&self.shared.options.limits, &write, now_ms())?;
        self.shared
            .commit(CommitOp::Atomic(write))
            .await?
            .into_outcome()
    }

    /// Begin an interactive transaction at the newest version.
    pub async fn begin(&self) -> Result<Transaction> {
        if *self.shared.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        self.refresh_for_read().await?;
        let (v, guard) = self.shared.hold_latest()?;
        Ok(Transaction::new(self.clone(), v, guard))
    }

    /// Watch up to `max_watched_keys` keys: the first `next()` returns their entries, each
    /// later one returns them again after any of them changed.
    pub fn watch(&self, keys: Vec<Vec<u8>>) -> Result<Watch> {
        let limits = &self.shared.options.limits;
        if keys.is_empty() {
            return Err(EngineError::InvalidRequest(
                "a watch needs at least one key".into(),
            ));
        }
        if keys.len() > limits.max_watched_keys {
            return Err(EngineError::limit(
                "watched keys",
                "keys",
                keys.len(),
                limits.max_watched_keys,
            ));
        }
        for k in &keys {
            self.check_read_key(k)?;
        }
        Ok(Watch::new(self.clone(), keys))
    }

    /// Lease up to `max` ready messages for `visibility`; ack or nack each before it ends.
    pub async fn lease(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>> {
        if max == 0 {
            return Ok(vec![]);
        }
        let visibility_ms = visibility.as_millis().clamp(1, MAX_VISIBILITY_MS as u128) as u64;
        match self
            .shared
            .commit(CommitOp::Lease {
                max: max.min(1000),
                visibility_ms,
            })
            .await?
        {
            CommitReply::Leased(m) => Ok(m),
            _ => Err(EngineError::InvalidRequest(
                "unexpected pipeline reply".into(),
            )),
        }
    }

    /// Delivery succeeded: remove the message.
    pub async fn ack(&self, id: MessageId, lease: u64) -> Result<()> {
        self.shared
            .commit(CommitOp::Ack { id, lease })
            .await
            .map(|_| ())
    }

    /// Delivery failed: retry after the next backoff step, or dead-letter.
    pub async fn nack(&self, id: MessageId, lease: u64) -> Result<()> {
        self.shared
            .commit(CommitOp::Nack { id, lease })
            .await
            .map(|_| ())
    }

    /// Messages waiting or leased.
    pub async fn queue_len(&self) -> Result<usize> {
        self.count_family(layout::QUEUE).await
    }

    /// Forget the dead letters the queue gave up on before `given_up_before` (ms since the
    /// epoch; `u64::MAX` for all of them), oldest first; how many were removed. Their
    /// payloads stay at their dead-letter keys. Runs as commits of at most a thousand
    /// removals each, so any number can be purged; an error stops it after the commits
    /// already made.
    pub async fn purge_dead_letters(&self, given_up_before: u64) -> Result<usize> {
        let mut total = 0;
        loop {
            match self
                .shared
                .commit(CommitOp::PurgeDeadLetters { given_up_before })
                .await?
            {
                CommitReply::Removed { count, more } => {
                    total += count;
                    if !more {
                        return Ok(total);
                    }
                }
                _ => {
                    return Err(EngineError::InvalidRequest(
                        "unexpected pipeline reply".into(),
                    ))
                }
            }
        }
    }

    /// Messages the queue gave up on (kept until they are purged or the database is
    /// dropped).
    pub async fn dead_letter_count(&self) -> Result<usize> {
        self.count_family(layout::DEAD).await
    }

    async fn count_family(&self, prefix: u8) -> Result<usize> {
        let (s, e) = layout::family(prefix);
        let mut n = 0;
        let mut cursor = mvcc::Cursor::new(&*self.shared.store, s, e, false, 1024);
        while cursor.next().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Up to `limit` queued messages, in the order they were enqueued.
    pub async fn queued(&self, limit: usize) -> Result<Vec<QueueEntry>> {
        self.queue_entries(layout::QUEUE, false, limit).await
    }

    /// Up to `limit` dead-lettered messages, the newest first; `ready_at` is when each was
    /// given up on.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<QueueEntry>> {
        self.queue_entries(layout::DEAD, true, limit).await
    }

    async fn queue_entries(
        &self,
        prefix: u8,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<QueueEntry>> {
        let (s, e) = layout::family(prefix);
        let mut cursor =
            mvcc::Cursor::new(&*self.shared.store, s, e, newest_first, limit.min(1024));
        let now = now_ms();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((key, raw)) = cursor.next().await? else {
                break;
            };
            let corrupt = || EngineError::Corrupt {
                database: self.shared.name.clone(),
                detail: "undecodable queue message".into(),
            };
            let rec = crate::queue::MessageRecord::decode(&raw).ok_or_else(corrupt)?;
            let id = key
                .len()
                .checked_sub(12)
                .and_then(|at| <[u8; 12]>::try_from(&key[at..]).ok())
                .map(MessageId)
                .ok_or_else(corrupt)?;
            out.push(QueueEntry {
                id,
                leased: prefix == layout::QUEUE && rec.lease != 0 && rec.ready_at > now,
                ready_at: rec.ready_at,
                attempts: rec.attempts,
                payload: rec.payload,
                dead_letter_keys: rec.dead_letter_keys,
            });
        }
        Ok(out)
    }

    /// When the next message becomes ready (ms since the epoch), if any is queued.
    pub async fn next_ready_at(&self) -> Result<Option<u64>> {
        let (s, e) = layout::family(READY);
        let first = self.shared.store.scan(&s, &e, false, 1).await?;
        Ok(first
            .first()
            .and_then(|(k, _)| layout::parse_versioned(k))
            .map(|(t, _)| t))
    }

    /// Wait until a message may be ready: an enqueue or nack happened, the next scheduled
    /// message came due, or `max_wait` passed — whichever is first.
    pub async fn wait_for_queue(&self, max_wait: Duration) -> Result<()> {
        let notified = self.shared.queue_ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering for the notification, so an enqueue in between is seen here.
        let wait = match self.next_ready_at().await? {
            Some(t) => Duration::from_millis(t.saturating_sub(now_ms())).min(max_wait),
            None => max_wait,
        };
        let mut shutdown = self.shutdown_signal();
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            _ = shutdown.wait_for(|s| *s) => return Err(EngineError::ShuttingDown),
        }
        Ok(())
    }

    /// Delete every expired key now (the background sweeper does this on its own).
    pub async fn sweep_expired(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.shared.sweep_once().await?;
            total += n;
            if n < crate::expiry::SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// Write entries exactly as given — keys, values, versionstamps, expiries — and queue
    /// messages, in one commit newer than every restored versionstamp and than version
    /// `newer_than` (so that versionstamps the source handed out are never handed out again).
    /// For copying and importing databases; the entries replace any existing ones with the
    /// same keys. At most `max_mutations` entries and 65535 messages per call.
    ///
    /// The past does not change: restored entries keep their versionstamps but are visible
    /// only at the restore commit's version and later. Versions must be between 1 and
    /// [`crate::MAX_RESTORED_VERSION`]; anything else is refused with nothing written.
    pub async fn restore(
        &self,
        entries: Vec<Entry>,
        messages: Vec<RestoreMessage>,
        newer_than: u64,
    ) -> Result<Versionstamp> {
        let limits = &self.shared.options.limits;
        if entries.len() > limits.max_mutations {
            return Err(EngineError::limit(
                "mutations per atomic write",
                "restored entries",
                entries.len(),
                limits.max_mutations,
            ));
        }
        if messages.len() > u16::MAX as usize {
            return Err(EngineError::limit(
                "messages per restore",
                "restored messages",
                messages.len(),
                u16::MAX,
            ));
        }
        crate::restore::validate(&entries, newer_than)?;
        for e in &entries {
            atomic::check_key(limits, &e.key, true)?;
            atomic::check_value(limits, &e.value)?;
        }
        for m in &messages {
            atomic::check_value(limits, &m.payload)?;
            for k in &m.dead_letter_keys {
                atomic::check_key(limits, k, true)?;
            }
        }
        match self
            .shared
            .commit(CommitOp::Restore {
                entries,
                messages,
                newer_than,
            })
            .await?
        {
            CommitReply::Outcome(CommitOutcome::Committed(vs)) => Ok(vs),
            _ => Err(EngineError::InvalidRequest(
                "unexpected pipeline reply".into(),
            )),
        }
    }

    /// Garbage-collect versions older than the retention window now.
    pub async fn collect_garbage(&self) -> Result<()> {
        self.shared.collect_all().await
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }
}

impl layout::Record {
    pub(crate) fn into_entry(self, key: Vec<u8>) -> Entry {
        Entry {
            key,
            value: self.value,
            versionstamp: self.versionstamp,
            expires_at: self.expires_at,
        }
    }
}

/// A consistent view of a whole database at one version, held readable for as long as it
/// lives: for exports and copies that read everything.
pub struct Snapshot {
    db: Database,
    version: u64,
    _guard: ReadGuard,
}

impl Database {
    /// Hold the newest version for a long read.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.refresh_for_read().await?;
        let version = self.shared.latest();
        let guard = self.shared.hold(version)?;
        Ok(Snapshot {
            db: self.clone(),
            version,
            _guard: guard,
        })
    }
}

impl Snapshot {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Up to `limit` live entries with `start <= key < end` (empty `end`: unbounded), in key
    /// order, with their versionstamps and expiries. No entry limit beyond `limit`.
    pub async fn entries(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>> {
        let shared = &self.db.shared;
        let (_, found) = self
            .db
            .read_at(self.version, |v, precise| async move {
                mvcc::scan(
                    &*shared.store,
                    &shared.name,
                    start,
                    end,
                    false,
                    limit,
                    v,
                    precise,
                    now_ms(),
                )
                .await
            })
            .await?;
        shared.check_horizon(self.version).await?;
        Ok(found.into_iter().map(|(k, r)| r.into_entry(k)).collect())
    }

    /// Every queued message (waiting or leased), as a copy carries it.
    pub async fn messages(&self) -> Result<Vec<RestoreMessage>> {
        let mut out = Vec::new();
        for family in [layout::QUEUE, layout::DEAD] {
            let (s, e) = layout::family(family);
            let mut cursor = mvcc::Cursor::new(&*self.db.shared.store, s, e, false, 1024);
            while let Some((_, raw)) = cursor.next().await? {
                let rec = crate::queue::MessageRecord::decode(&raw).ok_or_else(|| {
                    EngineError::Corrupt {
                        database: self.db.shared.name.clone(),
                        detail: "undecodable queue message".into(),
                    }
                })?;
                out.push(RestoreMessage {
                    payload: rec.payload,
                    ready_at: rec.ready_at,
                    attempts: rec.attempts,
                    dead_letter_keys: rec.dead_letter_keys,
                    backoff_schedule: rec.backoff,
                    // A dead letter's `ready_at` is when it was given up on.
                    given_up_at: (family == layout::DEAD).then_some(rec.ready_at),
                });
            }
        }
        Ok(out)
    }
}
