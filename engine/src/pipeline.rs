//! The commit pipeline: **resolve → sequence → apply → publish**, one task per database.
//!
//! Every write — atomic writes, transactions, expiry sweeps, queue leases, acks and nacks,
//! garbage collection — is a [`CommitOp`] sent to the database's pipeline task. The task
//! takes whatever requests are waiting (a *group*), and for each in turn:
//!
//! 1. **resolve**: checks versionstamps and read conflicts against the store as the group
//!    sees it (the applied state plus earlier commits of the group, see [`Overlay`]), and
//!    computes the key writes, history records and index updates;
//! 2. **sequence**: gives every commit that writes its own version, strictly increasing;
//!
//! then, for the whole group at once:
//!
//! 3. **apply**: hands one batch to the [`CommitLog`] — one backend write and one sync for
//!    every commit in the group (group commit);
//! 4. **publish**: advances the applied version, wakes watchers and queue consumers, and only
//!    then answers each request.
//!
//! A commit that fails to resolve is rolled back to its savepoint and answered with its
//! error; it does not disturb the rest of its group. If the apply fails, every commit of the
//! group fails: none is acknowledged, none is visible.
//!
//! The rest lives beside it: what each kind of commit writes in [`crate::resolve`]; the
//! expiry sweep and garbage collection in [`crate::maintenance`]; restores in
//! [`crate::restore`]; and, when several processes share the store, catching up with their
//! commits and settling a batch whose answer was lost in [`crate::multi_writer`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::atomic::{AtomicWrite, CommitOutcome, MutationKind};
use crate::backend::{BackendError, Precondition};
use crate::clock::now_ms;
use crate::conflict::ConflictTracker;
use crate::database::Shared;
use crate::error::{EngineError, Result};
use crate::layout;
use crate::log::LogEntry;
use crate::multi_writer::{group_token, Settled, WriteRecord};
use crate::overlay::Overlay;
use crate::queue::{MessageId, QueueMessage, RestoreMessage};
use crate::resolve::Resolve;
use crate::value::{Entry, Value};

/// A buffered transaction write: a value with optional expiry, or a delete.
pub(crate) type TxnWrite = Option<(Value, Option<u64>)>;

pub(crate) enum CommitOp {
    Atomic(AtomicWrite),
    Transaction {
        read_version: u64,
        reads: Vec<(Vec<u8>, Vec<u8>)>,
        writes: Vec<(Vec<u8>, TxnWrite)>,
    },
    Sweep(Vec<(u64, Vec<u8>)>),
    Lease {
        max: usize,
        visibility_ms: u64,
    },
    Ack {
        id: MessageId,
        lease: u64,
    },
    Nack {
        id: MessageId,
        lease: u64,
    },
    Gc,
    /// Learn commits other processes made (multi-process stores).
    CatchUp,
    Restore {
        entries: Vec<Entry>,
        messages: Vec<RestoreMessage>,
        newer_than: u64,
    },
}

impl CommitOp {
    /// The latest-record keys resolving this op reads (checks and written keys).
    fn latest_keys(&self) -> Vec<Vec<u8>> {
        match self {
            CommitOp::Atomic(w) => w
                .checks
                .iter()
                .map(|c| &c.key)
                .chain(
                    w.mutations
                        .iter()
                        .filter(|m| !matches!(m.kind, MutationKind::SetVersionstampedKey { .. }))
                        .map(|m| &m.key),
                )
                .map(|k| layout::latest(k))
                .collect(),
            CommitOp::Transaction { writes, .. } => {
                writes.iter().map(|(k, _)| layout::latest(k)).collect()
            }
            _ => Vec::new(),
        }
    }
}

pub(crate) enum CommitReply {
    Outcome(CommitOutcome),
    Leased(Vec<QueueMessage>),
    Done,
    /// Maintenance that stopped at its batch size: run it again.
    More(bool),
}

pub(crate) struct CommitRequest {
    pub op: CommitOp,
    pub reply: oneshot::Sender<Result<CommitReply>>,
}

pub(crate) struct Pipeline {
    pub(crate) shared: Arc<Shared>,
    rx: mpsc::Receiver<CommitRequest>,
    pub(crate) conflicts: ConflictTracker,
    pub(crate) next_version: u64,
    /// The version record as this process last saw it in the store (`None`: absent).
    pub(crate) stored_version: Option<u64>,
}

/// What resolving one op did.
pub(crate) struct Resolved {
    pub(crate) reply: CommitReply,
    /// Whether the op consumed a version (it wrote, or it is an atomic write that passed).
    pub(crate) sequenced: bool,
}

impl Pipeline {
    pub(crate) fn new(shared: Arc<Shared>, rx: mpsc::Receiver<CommitRequest>) -> Self {
        let current = *shared.applied.borrow();
        let window = std::time::Duration::from_millis(shared.config.transaction_window_ms);
        Pipeline {
            shared,
            rx,
            conflicts: ConflictTracker::new(current, window),
            next_version: current + 1,
            stored_version: (current > 0).then_some(current),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let max = self.shared.config.max_group_commits.max(1);
        loop {
            let first = tokio::select! {
                biased;
                r = self.rx.recv() => r,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(first) = first else { break };
            let mut group = vec![first];
            while group.len() < max {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.run_group(group).await;
        }
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            let _ = r.reply.send(Err(EngineError::ShuttingDown));
        }
    }

    async fn run_group(&mut self, group: Vec<CommitRequest>) {
        // Catching up is a read's request: answer it on its own, so that a read never waits
        // for (or fails with) the batch of the writes it happened to be grouped with.
        let (catch_ups, group): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|r| matches!(r.op, CommitOp::CatchUp));
        if !catch_ups.is_empty() {
            let caught_up = self.catch_up().await;
            for req in catch_ups {
                let reply = match &caught_up {
                    Ok(()) => Ok(CommitReply::Done),
                    Err(e) => Err(group_failure(e)),
                };
                let _ = req.reply.send(reply);
            }
        }
        if group.is_empty() {
            return;
        }
        let mut stale = 0u32;
        let results = loop {
            match self.try_group(&group).await {
                Ok(results) => break results,
                Err(GroupError::Stale) if stale < MAX_STALE_RETRIES => {
                    // Another process committed first: learn its commits, then resolve the
                    // whole group again against the new state.
                    stale += 1;
                    if let Err(e) = self.catch_up().await {
                        break group.iter().map(|_| Err(group_failure(&e))).collect();
                    }
                    let jitter = (now_ms() % 7) * u64::from(stale.min(10));
                    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                }
                Err(GroupError::Stale) => {
                    let e = EngineError::Backend(BackendError::Unavailable(format!(
                        "gave up after {MAX_STALE_RETRIES} attempts: other processes keep committing first"
                    )));
                    break group.iter().map(|_| Err(group_failure(&e))).collect();
                }
                Err(GroupError::Failed(e)) => {
                    tracing::error!(database = %self.shared.name, error = %e, "commit group failed to apply");
                    break group.iter().map(|_| Err(group_failure(&e))).collect();
                }
                Err(GroupError::Unknown(e)) => {
                    tracing::error!(database = %self.shared.name, error = %e, "commit group result unknown");
                    break group
                        .iter()
                        .map(|_| {
                            Err(EngineError::CommitResultUnknown {
                                database: self.shared.name.clone(),
                                detail: e.to_string(),
                            })
                        })
                        .collect();
                }
            }
        };
        for (req, res) in group.into_iter().zip(results) {
            let _ = req.reply.send(res);
        }
    }

    /// Resolve, sequence and apply a group once. Check failures and invalid ops are part of
    /// the results; `Err` means the group as a whole did not apply.
    async fn try_group(
        &mut self,
        group: &[CommitRequest],
    ) -> Result<Vec<Result<CommitReply>>, GroupError> {
        let started = std::time::Instant::now();
        let shared = self.shared.clone();
        let store = shared.store.clone();
        let mut ov = Overlay::new(&*store);
        let now = now_ms();
        let mut results: Vec<Result<CommitReply>> = Vec::with_capacity(group.len());
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut queue_changed = false;
        let mut deleted_at = 0u64;
        let mut new_horizon = None;
        let start_version = self.next_version;
        let mut pending = PendingWrites::default();
        // Every latest record the group will read, in one store request.
        ov.prefetch(group.iter().flat_map(|r| r.op.latest_keys()).collect())
            .await
            .map_err(GroupError::Failed)?;

        for req in group {
            let first_version = self.next_version;
            if let CommitOp::Restore {
                entries,
                newer_than,
                ..
            } = &req.op
            {
                // Restored records keep their versionstamps; the commit that writes them
                // must be newer than all of them.
                let newest = entries
                    .iter()
                    .map(|e| e.versionstamp.version())
                    .max()
                    .unwrap_or(0)
                    .max(*newer_than);
                self.next_version = self.next_version.max(newest.saturating_add(1));
            }
            let savepoint = ov.savepoint();
            let mut cx = Resolve {
                ov: &mut ov,
                shared: &shared,
                version: self.next_version,
                now,
                touched: Vec::new(),
                deleted: false,
                queue_changed: false,
                horizon: None,
            };
            match cx.resolve(&req.op, &self.conflicts, &pending).await {
                Ok(r) => {
                    let Resolve {
                        touched: t,
                        deleted,
                        queue_changed: q,
                        horizon,
                        version,
                        ..
                    } = cx;
                    if r.sequenced {
                        pending.record(version, t.clone());
                        self.next_version += 1;
                        if deleted {
                            deleted_at = version;
                        }
                    }
                    touched.extend(t);
                    queue_changed |= q;
                    new_horizon = new_horizon.or(horizon);
                    results.push(Ok(r.reply));
                }
                Err(e) => {
                    ov.rollback(savepoint);
                    self.next_version = first_version;
                    results.push(Err(e));
                }
            }
        }

        if ov.is_empty() && self.next_version == start_version {
            return Ok(results);
        }
        // Only commits are timed: the collector's clock, which must not see its own
        // collections as new commits (that would keep it collecting forever).
        let commits = self.next_version > start_version;
        if shared.multi_process && !commits {
            // On a shared store every write — maintenance included — takes a version, so
            // that the version record orders it with every other process's writes (two
            // collectors cannot both move the horizon, a sweep cannot undo a newer write).
            self.next_version += 1;
        }
        let last_version = self.next_version - 1;
        let versioned = last_version >= start_version;
        if let Some(h) = new_horizon {
            ov.put(layout::META_HORIZON.to_vec(), h.to_be_bytes().to_vec());
        }
        let mut precondition = None;
        let token = shared.multi_process.then(group_token);
        if versioned {
            ov.put(
                layout::META_VERSION.to_vec(),
                last_version.to_be_bytes().to_vec(),
            );
            if commits {
                ov.put(layout::times(last_version), now.to_be_bytes().to_vec());
            }
            if let Some(token) = token {
                let record = WriteRecord {
                    first_version: start_version,
                    deleted: deleted_at > 0,
                    queue_changed,
                    token,
                    keys: touched.clone(),
                };
                for (chunk, bytes) in record.encode().into_iter().enumerate() {
                    ov.put(layout::writes(last_version, chunk as u16), bytes);
                }
                precondition = Some(Precondition {
                    key: layout::META_VERSION.to_vec(),
                    expected: self.stored_version.map(|v| v.to_be_bytes().to_vec()),
                });
            }
        }
        if deleted_at > 0 {
            // Before the batch reaches the store: readers at older versions read precisely
            // from the moment the delete may be visible.
            shared.last_delete.fetch_max(deleted_at, Ordering::SeqCst);
        }
        let resolved = std::time::Instant::now();
        let entry = LogEntry {
            version: last_version,
            ops: ov.into_ops(),
            durability: shared.options.durability,
            precondition,
        };
        match token {
            None => shared.log.append(entry).await.map_err(GroupError::Failed)?,
            Some(token) => match self.append_shared(entry, token, last_version).await {
                Settled::Applied => {}
                Settled::NotApplied => {
                    self.next_version = start_version;
                    return Err(GroupError::Stale);
                }
                Settled::Failed(e) => {
                    // Nothing applied: leave no gap in the versions, which other processes
                    // would read as collected history.
                    self.next_version = start_version;
                    return Err(GroupError::Failed(e));
                }
                Settled::Unknown(e) => {
                    // If it applied after all, the next group's batch fails its condition
                    // and this process learns it like any other writer's commit.
                    self.next_version = start_version;
                    return Err(GroupError::Unknown(e));
                }
            },
        }
        let stats = &shared.stats;
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .commits
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stats
            .resolve_ns
            .fetch_add(nanos(resolved - started), Ordering::Relaxed);
        stats
            .append_ns
            .fetch_add(nanos(resolved.elapsed()), Ordering::Relaxed);
        self.conflicts.merge(pending);
        if versioned {
            self.stored_version = Some(last_version);
            shared.applied.send_replace(last_version);
        }
        shared.publish(&touched, queue_changed);
        Ok(results)
    }
}

/// How many times a group is resolved again after other processes committed first.
const MAX_STALE_RETRIES: u32 = 64;

pub(crate) enum GroupError {
    /// Another process advanced the database first.
    Stale,
    Failed(EngineError),
    /// The batch was sent to a shared store and may or may not have been applied.
    Unknown(EngineError),
}

/// Writes of commits earlier in the group being resolved (not yet applied).
#[derive(Default)]
pub(crate) struct PendingWrites {
    keys: std::collections::BTreeMap<Vec<u8>, u64>,
    log: Vec<(u64, Vec<Vec<u8>>)>,
}

impl PendingWrites {
    fn record(&mut self, version: u64, keys: Vec<Vec<u8>>) {
        for k in &keys {
            self.keys.insert(k.clone(), version);
        }
        self.log.push((version, keys));
    }

    pub(crate) fn touches(&self, start: &[u8], end: &[u8]) -> bool {
        crate::backend::keys_in(&self.keys, start, end)
            .next()
            .is_some()
    }

    pub(crate) fn into_log(self) -> Vec<(u64, Vec<Vec<u8>>)> {
        self.log
    }
}

/// The error each commit of a failed group receives (the original goes to the log).
fn group_failure(e: &EngineError) -> EngineError {
    match e {
        EngineError::Backend(b) if b.is_transient() => {
            EngineError::Backend(BackendError::Unavailable(b.to_string()))
        }
        EngineError::ShuttingDown => EngineError::ShuttingDown,
        other => EngineError::Backend(BackendError::Other(other.to_string())),
    }
}
