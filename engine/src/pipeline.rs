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

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::atomic::{AtomicWrite, CommitOutcome, MutationKind};
use crate::backend::{BackendError, Precondition};
use crate::clock::now_ms;
use crate::conflict::ConflictTracker;
use crate::database::Shared;
use crate::error::{EngineError, Result};
use crate::layout::{self, Record, GC, READY, TIMES};
use crate::log::LogEntry;
use crate::mvcc::{decode, Cursor};
use crate::overlay::Overlay;
use crate::queue::{MessageId, MessageRecord, QueueMessage, RestoreMessage, DEFAULT_BACKOFF};
use crate::value::{Entry, Value, Versionstamp};

/// History records one garbage-collection commit removes at most.
const GC_BATCH: usize = 10_000;

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
    shared: Arc<Shared>,
    rx: mpsc::Receiver<CommitRequest>,
    conflicts: ConflictTracker,
    next_version: u64,
    /// The version record as this process last saw it in the store (`None`: absent).
    stored_version: Option<u64>,
}

/// What resolving one op did.
struct Resolved {
    reply: CommitReply,
    /// Whether the op consumed a version (it wrote, or it is an atomic write that passed).
    sequenced: bool,
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
        if group.iter().any(|r| matches!(r.op, CommitOp::CatchUp)) {
            self.catch_up().await.map_err(GroupError::Failed)?;
        }
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
            let first_version = self.next_version;
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

        let last_version = self.next_version - 1;
        let versioned = last_version >= start_version;
        if ov.is_empty() && !versioned {
            return Ok(results);
        }
        let mut precondition = None;
        if versioned {
            ov.put(
                layout::META_VERSION.to_vec(),
                last_version.to_be_bytes().to_vec(),
            );
            ov.put(layout::times(last_version), now.to_be_bytes().to_vec());
            if shared.multi_process {
                for (chunk, record) in
                    WriteRecord::encode(start_version, deleted_at > 0, queue_changed, &touched)
                        .into_iter()
                        .enumerate()
                {
                    ov.put(layout::writes(last_version, chunk as u16), record);
                }
                precondition = Some(Precondition {
                    key: layout::META_VERSION.to_vec(),
                    expected: self.stored_version.map(|v| v.to_be_bytes().to_vec()),
                });
            }
        }
        if let Some(h) = new_horizon {
            ov.put(layout::META_HORIZON.to_vec(), h.to_be_bytes().to_vec());
            if shared.multi_process && !versioned {
                // Collection by several processes: order it with their commits and each
                // other's collections through the version record, so the stored horizon only
                // moves forward.
                if let Some(v) = self.stored_version {
                    ov.put(layout::META_VERSION.to_vec(), v.to_be_bytes().to_vec());
                    precondition = Some(Precondition {
                        key: layout::META_VERSION.to_vec(),
                        expected: Some(v.to_be_bytes().to_vec()),
                    });
                }
            }
        }
        if deleted_at > 0 {
            shared.last_delete.fetch_max(deleted_at, Ordering::SeqCst);
        }
        let entry = LogEntry {
            version: last_version,
            ops: ov.into_ops(),
            durability: shared.options.durability,
            precondition,
        };
        match shared.log.append(entry).await {
            Ok(()) => {}
            Err(EngineError::Backend(BackendError::PreconditionFailed)) if shared.multi_process => {
                self.next_version = start_version;
                return Err(GroupError::Stale);
            }
            Err(e) => return Err(GroupError::Failed(e)),
        }
        self.conflicts.merge(pending);
        if versioned {
            self.stored_version = Some(last_version);
            shared.applied.send_replace(last_version);
        }
        shared.publish(&touched, queue_changed);
        Ok(results)
    }

    /// Learn what other processes committed since the version this process knows: their
    /// written keys (for conflict checks and watchers) and the new head version.
    async fn catch_up(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let store = shared.store.clone();
        let head = match store.get(layout::META_VERSION).await? {
            Some(b) => layout::be_u64(&b).ok_or_else(|| EngineError::Corrupt {
                database: shared.name.clone(),
                detail: "bad version record".into(),
            })?,
            None => 0,
        };
        let known = *shared.applied.borrow();
        if head <= known {
            self.stored_version = (head > 0).then_some(head).or(self.stored_version);
            return Ok(());
        }
        let (s, e) = layout::int_range(layout::WRITES, known + 1, head + 1);
        let mut cursor = Cursor::new(&*store, s, e, false, 256);
        let mut touched = Vec::new();
        let mut queue_changed = false;
        let mut covered_from = None;
        while let Some((k, v)) = cursor.next().await? {
            let Some((version, _)) = layout::parse_versioned(&k) else {
                continue;
            };
            let Some(rec) = WriteRecord::decode(&v) else {
                return Err(EngineError::Corrupt {
                    database: shared.name.clone(),
                    detail: "bad write record".into(),
                });
            };
            covered_from = covered_from.or(Some(rec.first_version));
            if rec.deleted {
                shared.last_delete.fetch_max(version, Ordering::SeqCst);
            }
            queue_changed |= rec.queue_changed;
            self.conflicts.record(version, rec.keys.clone());
            touched.extend(rec.keys);
        }
        if covered_from.is_none_or(|f| f > known + 1) {
            // Some commits' write sets are gone (garbage-collected): nothing older can be
            // checked for conflicts, and any of them may have deleted keys.
            self.conflicts.forget_before(head);
            shared.last_delete.fetch_max(head, Ordering::SeqCst);
        }
        self.next_version = self.next_version.max(head + 1);
        self.stored_version = Some(head);
        shared.applied.send_replace(head);
        shared.publish(&touched, queue_changed);
        Ok(())
    }
}

/// How many times a group is resolved again after other processes committed first.
const MAX_STALE_RETRIES: u32 = 64;

enum GroupError {
    /// Another process advanced the database first.
    Stale,
    Failed(EngineError),
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

/// The keys one commit group wrote, stored under `w` version chunk when several processes
/// share a database, so that the others can learn them.
struct WriteRecord {
    first_version: u64,
    deleted: bool,
    queue_changed: bool,
    keys: Vec<Vec<u8>>,
}

/// Bytes of keys per write-record chunk (a store item holds at most a few hundred KiB).
const WRITE_CHUNK: usize = 256 * 1024;

impl WriteRecord {
    fn encode(
        first_version: u64,
        deleted: bool,
        queue_changed: bool,
        keys: &[Vec<u8>],
    ) -> Vec<Vec<u8>> {
        let header = |b: &mut Vec<u8>| {
            b.push(u8::from(deleted) | (u8::from(queue_changed) << 1));
            b.extend_from_slice(&first_version.to_be_bytes());
        };
        let mut chunks = Vec::new();
        let mut cur = Vec::new();
        header(&mut cur);
        for k in keys {
            if cur.len() + k.len() + 4 > WRITE_CHUNK && cur.len() > 9 {
                chunks.push(std::mem::take(&mut cur));
                header(&mut cur);
            }
            cur.extend_from_slice(&(k.len() as u32).to_be_bytes());
            cur.extend_from_slice(k);
        }
        chunks.push(cur);
        chunks
    }

    fn decode(b: &[u8]) -> Option<WriteRecord> {
        let flags = *b.first()?;
        let first_version = layout::be_u64(b.get(1..9)?)?;
        let mut keys = Vec::new();
        let mut rest = &b[9..];
        while !rest.is_empty() {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            keys.push(rest.get(4..4 + n)?.to_vec());
            rest = &rest[4 + n..];
        }
        Some(WriteRecord {
            first_version,
            deleted: flags & 1 != 0,
            queue_changed: flags & 2 != 0,
            keys,
        })
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

struct Resolve<'o, 's> {
    ov: &'o mut Overlay<'s>,
    shared: &'o Shared,
    version: u64,
    now: u64,
    touched: Vec<Vec<u8>>,
    deleted: bool,
    queue_changed: bool,
    horizon: Option<u64>,
}

impl Resolve<'_, '_> {
    fn vs(&self) -> Versionstamp {
        Versionstamp::from_version(self.version)
    }

    fn corrupt(&self, detail: &str) -> EngineError {
        EngineError::Corrupt {
            database: self.shared.name.clone(),
            detail: detail.into(),
        }
    }

    async fn resolve(
        &mut self,
        op: &CommitOp,
        conflicts: &ConflictTracker,
        pending: &PendingWrites,
    ) -> Result<Resolved> {
        match op {
            CommitOp::Atomic(w) => self.atomic(w).await,
            CommitOp::Transaction {
                read_version,
                reads,
                writes,
            } => {
                conflicts.check(*read_version, reads)?;
                if reads.iter().any(|(a, b)| pending.touches(a, b)) {
                    return Err(EngineError::Conflict);
                }
                let vs = self.vs();
                for (key, w) in writes {
                    let rec = w.as_ref().map(|(value, expires_at)| Record {
                        value: value.clone(),
                        versionstamp: vs,
                        expires_at: *expires_at,
                    });
                    self.write_key(key, rec).await?;
                }
                Ok(Resolved {
                    reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
                    sequenced: true,
                })
            }
            CommitOp::Sweep(items) => self.sweep(items).await,
            CommitOp::Lease { max, visibility_ms } => self.lease(*max, *visibility_ms).await,
            CommitOp::Ack { id, lease } => {
                let rec = self.leased(id, *lease).await?;
                self.ov.delete(layout::queue_message(&id.0));
                self.ov.delete(layout::ready(rec.ready_at, &id.0));
                Ok(Resolved {
                    reply: CommitReply::Done,
                    sequenced: true,
                })
            }
            CommitOp::Nack { id, lease } => {
                let mut rec = self.leased(id, *lease).await?;
                self.ov.delete(layout::ready(rec.ready_at, &id.0));
                if rec.may_deliver_again() {
                    let step = rec
                        .backoff
                        .get(rec.attempts.saturating_sub(1) as usize)
                        .copied()
                        .unwrap_or(0);
                    rec.ready_at = self.now.saturating_add(step as u64);
                    rec.lease = 0;
                    self.store_message(id, &rec);
                    self.queue_changed = true;
                } else {
                    self.dead_letter(id, rec).await?;
                }
                Ok(Resolved {
                    reply: CommitReply::Done,
                    sequenced: true,
                })
            }
            CommitOp::Gc => self.gc().await,
            CommitOp::CatchUp => Ok(Resolved {
                reply: CommitReply::Done,
                sequenced: false,
            }),
            CommitOp::Restore {
                entries, messages, ..
            } => self.restore(entries, messages).await,
        }
    }

    /// The live latest record of a key as the group sees it.
    async fn current(&self, key: &[u8]) -> Result<Option<Record>> {
        match self.ov.get(&layout::latest(key)).await? {
            Some(raw) => Ok(Some(decode(&self.shared.name, &raw)?).filter(|r| r.is_live(self.now))),
            None => Ok(None),
        }
    }

    /// Replace a key's latest record, keeping the replaced one as history.
    async fn write_key(&mut self, key: &[u8], new: Option<Record>) -> Result<()> {
        let lk = layout::latest(key);
        let old = match self.ov.get(&lk).await? {
            Some(raw) => Some((decode(&self.shared.name, &raw)?, raw)),
            None => None,
        };
        if old.is_none() && new.is_none() {
            return Ok(());
        }
        if let Some((old, raw)) = &old {
            // A key written twice by one commit keeps only its pre-commit version as history.
            if old.version() != self.version {
                self.ov.put(layout::history(key, self.version), raw.clone());
                self.ov.put(layout::gc(self.version, key), vec![]);
            }
            if let Some(t) = old.expires_at {
                self.ov.delete(layout::expiry(t, key));
            }
        }
        match new {
            Some(r) => {
                if let Some(t) = r.expires_at {
                    self.ov.put(layout::expiry(t, key), vec![]);
                }
                self.ov.put(lk, r.encode());
            }
            None => {
                self.ov.delete(lk);
                self.deleted = true;
            }
        }
        self.touched.push(key.to_vec());
        Ok(())
    }

    async fn atomic(&mut self, w: &AtomicWrite) -> Result<Resolved> {
        let mut failed = Vec::new();
        for (i, c) in w.checks.iter().enumerate() {
            let cur = self.current(&c.key).await?.map(|r| r.versionstamp);
            if cur != c.versionstamp {
                failed.push(i);
            }
        }
        if !failed.is_empty() {
            return Ok(Resolved {
                reply: CommitReply::Outcome(CommitOutcome::CheckFailed(failed)),
                sequenced: false,
            });
        }
        let vs = self.vs();
        for m in &w.mutations {
            match &m.kind {
                MutationKind::Set { value, expires_at } => {
                    let rec = Record {
                        value: value.clone(),
                        versionstamp: vs,
                        expires_at: *expires_at,
                    };
                    self.write_key(&m.key, Some(rec)).await?;
                }
                MutationKind::Delete => self.write_key(&m.key, None).await?,
                MutationKind::Sum(op) | MutationKind::Min(op) | MutationKind::Max(op) => {
                    let (name, f): (&str, fn(u64, u64) -> u64) = match &m.kind {
                        MutationKind::Sum(_) => ("sum", u64::wrapping_add),
                        MutationKind::Min(_) => ("min", u64::min),
                        _ => ("max", u64::max),
                    };
                    let operand = op.as_u64().ok_or_else(|| {
                        EngineError::InvalidMutation(format!(
                            "Failed to perform '{name}' mutation on a non-U64 operand"
                        ))
                    })?;
                    let result = match self.current(&m.key).await? {
                        None => operand,
                        Some(r) => {
                            let stored = r.value.as_u64().ok_or_else(|| {
                                EngineError::InvalidMutation(format!(
                                    "Failed to perform '{name}' mutation on a non-U64 value in the database"
                                ))
                            })?;
                            f(stored, operand)
                        }
                    };
                    let rec = Record {
                        value: Value::u64(result),
                        versionstamp: vs,
                        expires_at: None,
                    };
                    self.write_key(&m.key, Some(rec)).await?;
                }
                MutationKind::SetVersionstampedKey {
                    value,
                    expires_at,
                    suffix,
                } => {
                    let mut key = m.key.clone();
                    suffix.append(&mut key, vs);
                    let rec = Record {
                        value: value.clone(),
                        versionstamp: vs,
                        expires_at: *expires_at,
                    };
                    self.write_key(&key, Some(rec)).await?;
                }
            }
        }
        let now = self.now;
        self.store_new_messages(w.enqueues.iter().map(|e| {
            MessageRecord {
                ready_at: e.deliver_at.max(now),
                attempts: 0,
                lease: 0,
                payload: e.payload.clone(),
                dead_letter_keys: e.dead_letter_keys.clone(),
                backoff: e
                    .backoff_schedule
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKOFF.to_vec()),
            }
        }));
        Ok(Resolved {
            reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
            sequenced: true,
        })
    }

    async fn restore(
        &mut self,
        entries: &[Entry],
        messages: &[RestoreMessage],
    ) -> Result<Resolved> {
        for e in entries {
            let rec = Record {
                value: e.value.clone(),
                versionstamp: e.versionstamp,
                expires_at: e.expires_at,
            };
            self.write_key(&e.key, Some(rec)).await?;
        }
        let vs = self.vs();
        self.store_new_messages(messages.iter().map(|m| MessageRecord {
            ready_at: m.ready_at,
            attempts: m.attempts,
            lease: 0,
            payload: m.payload.clone(),
            dead_letter_keys: m.dead_letter_keys.clone(),
            backoff: m.backoff_schedule.clone(),
        }));
        Ok(Resolved {
            reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
            sequenced: true,
        })
    }

    /// A message's record and its entry in the ready index.
    fn store_message(&mut self, id: &MessageId, rec: &MessageRecord) {
        self.ov.put(layout::ready(rec.ready_at, &id.0), vec![]);
        self.ov.put(layout::queue_message(&id.0), rec.encode());
    }

    /// Messages this commit adds: each is named by the commit's versionstamp and its index.
    fn store_new_messages(&mut self, records: impl Iterator<Item = MessageRecord>) {
        let vs = self.vs();
        for (i, rec) in records.enumerate() {
            self.store_message(&MessageId::new(vs, i as u16), &rec);
            self.queue_changed = true;
        }
    }

    async fn sweep(&mut self, items: &[(u64, Vec<u8>)]) -> Result<Resolved> {
        for (t, key) in items {
            let lk = layout::latest(key);
            let cur = match self.ov.get(&lk).await? {
                Some(raw) => Some(decode(&self.shared.name, &raw)?),
                None => None,
            };
            match cur {
                Some(r) if r.expires_at == Some(*t) => {
                    if *t <= self.now {
                        self.write_key(key, None).await?;
                    }
                }
                _ => self.ov.delete(layout::expiry(*t, key)),
            }
        }
        let sequenced = !self.touched.is_empty();
        Ok(Resolved {
            reply: CommitReply::Done,
            sequenced,
        })
    }

    async fn leased(&self, id: &MessageId, lease: u64) -> Result<MessageRecord> {
        let raw = self.ov.get(&layout::queue_message(&id.0)).await?;
        let rec = match raw {
            Some(raw) => MessageRecord::decode(&raw)
                .ok_or_else(|| self.corrupt("undecodable queue message"))?,
            None => return Err(EngineError::LeaseLost(id.to_hex())),
        };
        if rec.lease != lease || lease == 0 {
            return Err(EngineError::LeaseLost(id.to_hex()));
        }
        Ok(rec)
    }

    async fn dead_letter(&mut self, id: &MessageId, rec: MessageRecord) -> Result<()> {
        let vs = self.vs();
        for k in &rec.dead_letter_keys {
            let r = Record {
                value: rec.payload.clone(),
                versionstamp: vs,
                expires_at: None,
            };
            self.write_key(k, Some(r)).await?;
        }
        self.ov.delete(layout::queue_message(&id.0));
        tracing::debug!(database = %self.shared.name, message = %id, "queue message dead-lettered");
        Ok(())
    }

    async fn lease(&mut self, max: usize, visibility_ms: u64) -> Result<Resolved> {
        let (start, end) = layout::int_range(READY, 0, self.now + 1);
        let due = self
            .ov
            .scan(&start, &end, max.saturating_mul(2).max(1))
            .await?;
        let mut out = Vec::new();
        let mut wrote = false;
        for (rk, _) in due {
            if out.len() >= max {
                break;
            }
            let Some((ready_at, id_bytes)) = layout::parse_versioned(&rk) else {
                continue;
            };
            let Ok(id) = <[u8; 12]>::try_from(id_bytes).map(MessageId) else {
                self.ov.delete(rk);
                continue;
            };
            self.ov.delete(rk.clone());
            wrote = true;
            let raw = self.ov.get(&layout::queue_message(&id.0)).await?;
            let Some(mut rec) = raw.and_then(|r| MessageRecord::decode(&r)) else {
                continue;
            };
            if rec.ready_at != ready_at {
                // A stale index entry; the record's own entry is elsewhere.
                self.ov.put(layout::ready(rec.ready_at, &id.0), vec![]);
                continue;
            }
            if !rec.may_deliver_again() {
                self.dead_letter(&id, rec).await?;
                continue;
            }
            rec.attempts += 1;
            rec.lease = self.version;
            rec.ready_at = self.now.saturating_add(visibility_ms);
            self.store_message(&id, &rec);
            out.push(QueueMessage {
                id,
                payload: rec.payload.clone(),
                attempt: rec.attempts,
                lease: rec.lease,
                lease_expires_at: rec.ready_at,
            });
        }
        Ok(Resolved {
            reply: CommitReply::Leased(out),
            sequenced: wrote,
        })
    }

    async fn gc(&mut self) -> Result<Resolved> {
        // With other processes sharing the store, their open transactions are unknown here:
        // keep history at least as long as a transaction may live.
        let keep = if self.shared.multi_process {
            self.shared
                .options
                .history_retention_ms
                .max(self.shared.config.transaction_window_ms)
        } else {
            self.shared.options.history_retention_ms
        };
        let cutoff = self.now.saturating_sub(keep);
        let (ts, te) = layout::family(TIMES);
        let times = self.ov.scan(&ts, &te, 4096).await?;
        let mut by_time = None;
        for (k, v) in &times {
            let (Some((version, _)), Some(t)) = (layout::parse_versioned(k), layout::be_u64(v))
            else {
                return Err(self.corrupt("bad commit-time record"));
            };
            if t <= cutoff {
                by_time = Some(version);
            } else {
                break;
            }
        }
        let Some(candidate) = by_time else {
            return Ok(Resolved {
                reply: CommitReply::Done,
                sequenced: false,
            });
        };
        // Never below the horizon another process already collected to.
        let stored = match self.ov.get(layout::META_HORIZON).await? {
            Some(b) => layout::be_u64(&b).unwrap_or(0),
            None => 0,
        };
        let horizon = self.shared.advance_horizon(candidate).max(stored);
        if stored > 0 {
            self.shared.raise_horizon(stored);
        }
        for (k, _) in &times {
            match layout::parse_versioned(k) {
                Some((v, _)) if v < horizon => self.ov.delete(k.clone()),
                _ => break,
            }
        }
        let (ws, we) = layout::int_range(layout::WRITES, 0, horizon);
        for (wk, _) in self.ov.scan(&ws, &we, GC_BATCH).await? {
            self.ov.delete(wk);
        }
        let (gs, ge) = layout::int_range(GC, 0, horizon.saturating_add(1));
        let batch = self.ov.scan(&gs, &ge, GC_BATCH).await?;
        let more = batch.len() == GC_BATCH;
        for (gk, _) in batch {
            if let Some((superseded, key)) = layout::parse_versioned(&gk) {
                self.ov.delete(layout::history(key, superseded));
            }
            self.ov.delete(gk);
        }
        self.horizon = Some(horizon);
        Ok(Resolved {
            reply: CommitReply::More(more),
            sequenced: false,
        })
    }
}
