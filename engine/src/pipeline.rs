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
//! On a store this process writes alone, groups overlap: while one group's batch is being
//! applied (written, synced), the commits that arrive meanwhile are resolved into the next
//! group, against the store plus that batch (the overlay's *base*), and checked for
//! conflicts against its writes. The next group goes to the log as soon as the previous one
//! is published (after giving the tasks ready to run one turn, so that commits a moment
//! away join it), so the log is kept busy and each group's resolution costs no extra
//! latency. Batches still reach the log one at a time, in version order, and no commit is
//! answered before the group ahead of it. Should a batch fail to apply, the group resolved
//! over it is resolved again from the store.
//!
//! On a store shared with other processes each group is applied and published before the
//! next is resolved, since another process may commit in between — unless the store
//! *orders appends* (a cluster node: its batches enter one Raft log in the order they were
//! sent). There up to `max_groups_in_flight` groups are in the log at once, each resolved
//! over the batches of those before it and conditioned on the version record the one
//! before it writes. That record names its group (a random token beside the version), so
//! a batch applies only directly after the very batch it was resolved over: if another
//! process's commit lands first, the first group in flight fails its condition and every
//! later one fails too, and [`Pipeline::recover`] resolves them again after learning the
//! other commit. A read's catch-up waits for the groups in flight instead of reading
//! their commits back as another process's. There a group may also *linger* before it goes,
//! for the commits that the answers just sent will bring back ([`crate::linger`]).
//!
//! The rest lives beside it: what each kind of commit writes in [`crate::resolve`]; the
//! expiry sweep and garbage collection in [`crate::maintenance`]; restores in
//! [`crate::restore`]; and, when several processes share the store, catching up with their
//! commits and settling a batch whose answer was lost in [`crate::multi_writer`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::atomic::{AtomicWrite, Check, CommitOutcome, MutationKind};
use crate::backend::{BackendError, BatchOp, Precondition, Store};
use crate::clock::now_ms;
use crate::conflict::ConflictTracker;
use crate::database::Shared;
use crate::error::{EngineError, Result};
use crate::feed::{ChangeKind, WriteRecord, Written, FEED_OFF};
use crate::layout;
use crate::linger::Linger;
use crate::log::LogEntry;
use crate::multi_writer::{group_token, Settled};
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
        /// Checked against the state the commit lands on, before it writes.
        checks: Vec<Check>,
        /// Added (wrapping) to the u64 under each key as the commit lands, unread.
        sums: Vec<(Vec<u8>, u64)>,
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
    /// Forget dead letters given up on before this time (ms since the epoch), oldest first,
    /// at most [`crate::maintenance::PURGE_BATCH`] a commit.
    PurgeDeadLetters {
        given_up_before: u64,
    },
    /// Start the change feed (see [`crate::feed`]).
    EnableFeed,
    /// Learn commits other processes made (multi-process stores): the store's version
    /// record held `seen` when the reader looked.
    CatchUp {
        seen: u64,
    },
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
            CommitOp::Transaction {
                writes,
                checks,
                sums,
                ..
            } => checks
                .iter()
                .map(|c| &c.key)
                .chain(writes.iter().map(|(k, _)| k))
                .chain(sums.iter().map(|(k, _)| k))
                .map(|k| layout::latest(k))
                .collect(),
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
    /// Records removed, and whether the commit stopped at its batch size.
    Removed {
        count: usize,
        more: bool,
    },
}

impl CommitReply {
    /// The outcome of an atomic write or a transaction.
    pub(crate) fn into_outcome(self) -> Result<CommitOutcome> {
        match self {
            CommitReply::Outcome(o) => Ok(o),
            _ => Err(EngineError::InvalidRequest(
                "unexpected pipeline reply".into(),
            )),
        }
    }
}

pub(crate) struct CommitRequest {
    pub op: CommitOp,
    pub reply: oneshot::Sender<Result<CommitReply>>,
    /// Forwarded by another process (which groups its own callers' commits): its answer
    /// does not bring a commit straight back, so no group lingers for it.
    pub forwarded: bool,
}

pub(crate) struct Pipeline {
    pub(crate) shared: Arc<Shared>,
    rx: mpsc::Receiver<CommitRequest>,
    pub(crate) conflicts: ConflictTracker,
    pub(crate) next_version: u64,
    /// On a store shared with other processes: the version record as it will be once every
    /// batch this process sent has applied (`None`: absent) — what the next batch is
    /// conditioned on.
    pub(crate) stored: Option<Vec<u8>>,
    /// Catch-ups waiting for the groups in flight (see [`Pipeline::run_pipelined`]).
    parked: Vec<CommitRequest>,
    /// On a store that orders appends: tells the next batch's task that the previous one's
    /// append has begun, so that they reach the store in version order.
    started: Option<oneshot::Receiver<()>>,
}

/// What resolving one op did.
pub(crate) struct Resolved {
    pub(crate) reply: CommitReply,
    /// Whether the op consumed a version (it wrote, or it is an atomic write that passed).
    pub(crate) sequenced: bool,
}

impl Pipeline {
    /// `stored`: the version record as the database was opened.
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<CommitRequest>,
        stored: Option<Vec<u8>>,
    ) -> Self {
        let current = *shared.applied.borrow();
        let window = std::time::Duration::from_millis(shared.config.transaction_window_ms);
        Pipeline {
            shared,
            rx,
            conflicts: ConflictTracker::new(current, window),
            next_version: current + 1,
            stored,
            parked: Vec::new(),
            started: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let shutdown = self.shared.shutdown.subscribe();
        if self.shared.multi_process && !self.shared.store.orders_appends() {
            self.run_serial(shutdown).await;
        } else {
            self.run_pipelined(shutdown).await;
        }
        self.rx.close();
        for r in std::mem::take(&mut self.parked) {
            let _ = r.reply.send(Err(EngineError::ShuttingDown));
        }
        while let Ok(r) = self.rx.try_recv() {
            let _ = r.reply.send(Err(EngineError::ShuttingDown));
        }
    }

    /// Wait for a request; `None` once the database shuts down or every sender is gone.
    async fn next_request(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<CommitRequest> {
        tokio::select! {
            biased;
            r = self.rx.recv() => r,
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

    /// Up to `room` more requests that are already waiting, after `first`.
    fn take_waiting(&mut self, first: CommitRequest, room: usize) -> Vec<CommitRequest> {
        let mut taken = vec![first];
        while taken.len() < room {
            match self.rx.try_recv() {
                Ok(r) => taken.push(r),
                Err(_) => break,
            }
        }
        taken
    }

    /// A store shared with other processes: each group is resolved, applied and published
    /// before the next one starts, since another process may commit in between.
    async fn run_serial(&mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let max = self.shared.config.max_group_commits.max(1);
        loop {
            let Some(first) = self.next_request(&mut shutdown).await else {
                break;
            };
            let group = self.take_waiting(first, max);
            self.run_group(group).await;
        }
    }

    /// A store this process writes alone, or one that orders appends: the next group is
    /// resolved while the groups before it are being applied (their batches are its
    /// [`Overlay`] base), and handed to the log as soon as there is room — after the one
    /// before it is published on a store of this process's own, while up to
    /// `max_groups_in_flight` are in the log of one that orders appends. Every group is
    /// answered after the ones before it.
    ///
    /// On a shared store that orders appends (a cluster node), each batch is conditioned on
    /// the version record the batch before it writes, which names that batch's group: so a
    /// batch applies only right after the batch it was resolved over, and if one does not
    /// apply, none after it does ([`Pipeline::recover`] sorts out what did). A read's
    /// catch-up waits for the groups in flight when it came (the record the reader saw is
    /// then usually this process's own); one that saw another process's commit stops new
    /// groups until those in flight are answered, then learns it.
    async fn run_pipelined(&mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let store = self.shared.store.clone();
        let max = self.shared.config.max_group_commits.max(1);
        let depth = if self.shared.multi_process {
            self.shared.config.max_groups_in_flight.max(1)
        } else {
            1
        };
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut next: Option<Waiting<'_>> = None;
        let mut closing = false;
        let mut linger = Linger::new(match self.shared.multi_process {
            true => self.shared.config.group_linger,
            false => Duration::ZERO,
        });
        let mut lingering_since: Option<Instant> = None;
        loop {
            // The newest version this process sent to the log.
            let through = flights
                .iter()
                .rev()
                .find_map(|f| f.sealed.version)
                .unwrap_or_else(|| *self.shared.applied.borrow());
            self.answer_published_catch_ups();
            if flights.is_empty() && !self.parked.is_empty() {
                // A reader saw another process's commit: learn it, and resolve the waiting
                // group again over it, at the versions it would have taken.
                let waiting = next.take();
                if let Some(w) = &waiting {
                    self.next_version = w.group.tally.start_version;
                }
                let caught_up = self.catch_up().await;
                answer_catch_ups(std::mem::take(&mut self.parked), &caught_up);
                if let Some(w) = waiting {
                    next = Some(self.resolve_again(&*store, w).await);
                }
                continue;
            }
            let hold = self.parked.iter().any(|r| seen(r) > through);
            let waiting = next.as_ref().map_or(0, |w| w.requests.len());
            let stats = &self.shared.stats;
            stats.waiting.store(waiting as u64, Ordering::Relaxed);
            let lingers = waiting > 0
                && !closing
                && flights.len() < depth
                && linger.holds(waiting, tokio::time::Instant::now);
            match (lingers, lingering_since) {
                (true, None) => lingering_since = Some(Instant::now()),
                (false, Some(since)) => {
                    let held = since.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
                    stats.linger_ns.fetch_add(held, Ordering::Relaxed);
                    lingering_since = None;
                }
                _ => {}
            }
            if next.is_some() && flights.len() < depth && !hold && !lingers {
                let Some(mut waiting) = next.take() else {
                    continue;
                };
                self.gather(&mut waiting, max).await;
                linger.sent(waiting.requests.len());
                if let Some(flight) = self.dispatch(waiting, &flights, depth > 1) {
                    flights.push_back(flight);
                }
                continue;
            }
            if flights.is_empty() && next.is_none() {
                if closing {
                    break;
                }
                let Some(first) = self.next_request(&mut shutdown).await else {
                    break;
                };
                let requests = self.take_waiting(first, max);
                let mut waiting = Waiting::new(Group::new(&*store, None, self.next_version));
                self.join(&mut waiting, requests).await;
                next = Some(waiting);
                continue;
            }
            let room = max.saturating_sub(next.as_ref().map_or(0, |w| w.requests.len()));
            let base = flights.back().map(|f| f.merged.clone());
            // With nothing in flight, a group is waiting that may not go yet: it lingers (a
            // catch-up is answered once nothing is in flight).
            let head = flights.front_mut();
            let until = linger.deadline().filter(|_| lingers);
            tokio::select! {
                biased;
                outcome = async {
                    match head {
                        Some(head) => appended(&mut head.task).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(done) = flights.pop_front() else { continue };
                    if done.task.is_none() {
                        answer(done.requests, done.sealed.tally.results);
                        continue;
                    }
                    if outcome.is_ok() {
                        let results = self.publish(done.sealed, done.dispatched.elapsed());
                        let waiting = next.as_ref().map_or(0, |w| w.requests.len());
                        linger.answered(
                            done.requests.iter().filter(|r| !r.forwarded).count(),
                            waiting,
                            max,
                            tokio::time::Instant::now,
                        );
                        answer(done.requests, results);
                        continue;
                    }
                    if self.shared.multi_process {
                        self.recover(done, outcome, std::mem::take(&mut flights)).await;
                    } else if let Err(e) = outcome {
                        tracing::error!(database = %self.shared.name, error = %e, "commit group failed to apply");
                        answer_each(done.requests, || Err(group_failure(&e)));
                    }
                    // The next group was resolved over a batch that did not apply.
                    if let Some(waiting) = next.take() {
                        next = Some(self.resolve_again(&*store, waiting).await);
                    }
                }
                r = self.rx.recv(), if room > 0 && !closing => match r {
                    Some(first) => {
                        let requests = self.take_waiting(first, room);
                        let version = self.next_version;
                        let waiting = next.get_or_insert_with(|| {
                            Waiting::new(Group::new(&*store, base, version))
                        });
                        self.join(waiting, requests).await;
                    }
                    None => closing = true,
                },
                () = async {
                    match until {
                        Some(until) => tokio::time::sleep_until(until).await,
                        None => std::future::pending().await,
                    }
                }, if until.is_some() => {}
                // (The watch guard it returns must not live on into the other arms' awaits.)
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() }, if !closing => closing = true,
            }
        }
    }

    /// Answer the parked catch-ups whose reader saw a version this process has published.
    fn answer_published_catch_ups(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let applied = *self.shared.applied.borrow();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|r| seen(r) <= applied);
        for r in done {
            let _ = r.reply.send(Ok(CommitReply::Done));
        }
        self.parked = waiting;
    }

    /// Before a group goes to the log: let every task that is ready to run have its turn
    /// first, and take in the commits they send. On a busy server, requests whose commit is
    /// a few microseconds of work away (parsed, planned, waiting for the CPU) then share
    /// this group's write and sync instead of waiting for the next one: measured with 32
    /// REST clients on one core, groups twice as large and 14% more commits per second. On
    /// an idle one nothing else is ready and the group goes at once.
    async fn gather(&mut self, waiting: &mut Waiting<'_>, max: usize) {
        tokio::task::yield_now().await;
        let room = max.saturating_sub(waiting.requests.len());
        if room == 0 {
            return;
        }
        if let Ok(first) = self.rx.try_recv() {
            let requests = self.take_waiting(first, room);
            self.join(waiting, requests).await;
        }
    }

    /// Resolve requests into the waiting group. If the store cannot be read, they are
    /// answered with the error at once and the group is left as it was.
    async fn join<'s>(&mut self, waiting: &mut Waiting<'s>, requests: Vec<CommitRequest>) {
        let (catch_ups, requests): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|r| matches!(r.op, CommitOp::CatchUp { .. }));
        for r in catch_ups {
            if self.shared.multi_process {
                self.parked.push(r);
            } else {
                // Alone on its store, this process has nothing to learn.
                let _ = r.reply.send(Ok(CommitReply::Done));
            }
        }
        let ops: Vec<&CommitOp> = requests.iter().map(|r| &r.op).collect();
        match self.resolve(&mut waiting.group, &ops).await {
            Ok(()) => waiting.requests.extend(requests),
            Err(e) => {
                for r in requests {
                    let _ = r.reply.send(Err(group_failure(&e)));
                }
            }
        }
    }

    /// Resolve a waiting group again from the store alone.
    async fn resolve_again<'s>(
        &mut self,
        store: &'s dyn Store,
        waiting: Waiting<'s>,
    ) -> Waiting<'s> {
        let mut again = Waiting::new(Group::new(store, None, self.next_version));
        self.join(&mut again, waiting.requests).await;
        again
    }

    /// Seal a group and hand its batch to the log, on its own task (after the previous
    /// group's append has begun, if `ordered`). A group that writes nothing is answered at
    /// once if nothing is in flight; otherwise it follows the groups before it (its answers
    /// — a failed check, say — were resolved over their batches, and stand only if those
    /// apply).
    fn dispatch(
        &mut self,
        waiting: Waiting<'_>,
        in_flight: &VecDeque<Flight>,
        ordered: bool,
    ) -> Option<Flight> {
        let Waiting { requests, group } = waiting;
        let token = self.shared.multi_process.then(group_token);
        let mut sealed = self.seal(group, token);
        let Some(entry) = sealed.entry.take() else {
            let Some(previous) = in_flight.back() else {
                answer(requests, sealed.tally.results);
                return None;
            };
            return Some(Flight {
                task: None,
                requests,
                sealed,
                ops: Arc::new(Vec::new()),
                merged: previous.merged.clone(),
                template: previous.template.clone(),
                dispatched: Instant::now(),
            });
        };
        // The next group is checked against this one's writes before they apply.
        self.track(std::mem::take(&mut sealed.tally.pending));
        let ops = Arc::new(entry.ops.clone());
        // The batches still in flight, then this one (not their own stacks: those hold
        // batches long applied).
        let merged = match in_flight.is_empty() {
            true => ops.clone(),
            false => Arc::new(
                in_flight
                    .iter()
                    .map(|f| f.ops.as_slice())
                    .chain([ops.as_slice()])
                    .fold(Vec::new(), |base, batch| {
                        crate::overlay::stacked(&base, batch)
                    }),
            ),
        };
        let template = LogEntry {
            version: entry.version,
            ops: Vec::new(),
            durability: entry.durability,
            precondition: entry.precondition.clone(),
        };
        let log = self.shared.log.clone();
        let task = if ordered {
            let after = self.started.take();
            let (started, next) = oneshot::channel();
            self.started = Some(next);
            tokio::spawn(async move {
                if let Some(after) = after {
                    let _ = after.await;
                }
                let mut append = log.append(entry);
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(append.as_mut().poll(cx)))
                        .await;
                let _ = started.send(());
                match first {
                    std::task::Poll::Ready(r) => r,
                    std::task::Poll::Pending => append.await,
                }
            })
        } else {
            tokio::spawn(async move { log.append(entry).await })
        };
        Some(Flight {
            task: Some(task),
            requests,
            sealed,
            ops,
            merged,
            template,
            dispatched: Instant::now(),
        })
    }

    /// On a shared store, the group at the head of the log did not simply apply: settle it
    /// and every group sent after it (each conditioned on the one before), then learn what
    /// other processes wrote. What is known to have applied is published; a group whose
    /// batch can no longer apply is resolved again (as the serial pipeline does); a group
    /// that may yet apply is answered as in doubt, and so is every group after it.
    async fn recover(&mut self, head: Flight, outcome: Result<()>, rest: VecDeque<Flight>) {
        let mut settled = vec![(head, outcome)];
        for mut f in rest {
            let outcome = appended(&mut f.task).await;
            settled.push((f, outcome));
        }
        self.started = None;
        // A batch applies only right after the one before it: so every group up to the last
        // one that applied did, whatever its own answer said.
        let applied_through = settled
            .iter()
            .rposition(|(f, o)| f.task.is_some() && o.is_ok());
        self.stored = settled[0].0.sealed.expected.clone();
        let mut retry = Vec::new();
        #[derive(PartialEq)]
        enum Chain {
            /// Every group so far applied.
            Whole,
            /// A group did not apply and never will: the rest cannot.
            Broken,
            /// A group may yet apply: so may the rest.
            InDoubt,
        }
        let mut chain = Chain::Whole;
        for (i, (f, outcome)) in settled.into_iter().enumerate() {
            let Flight {
                task,
                requests,
                sealed,
                ops,
                template,
                dispatched,
                ..
            } = f;
            if task.is_none() {
                // Wrote nothing: its answers stand if every group before it applied, and
                // otherwise it is simply resolved again.
                let stands = chain == Chain::Whole || applied_through.is_some_and(|l| i <= l);
                match stands {
                    true => answer(requests, sealed.tally.results),
                    false => retry.extend(requests),
                }
                continue;
            }
            let known = applied_through.is_some_and(|last| i <= last);
            let settled = match chain {
                _ if known => Settled::Applied,
                Chain::Whole => match sealed.token {
                    Some(token) => {
                        let entry = LogEntry {
                            ops: ops.to_vec(),
                            ..template
                        };
                        let version = entry.version;
                        self.settle_shared(entry, token, version, outcome).await
                    }
                    None => match outcome {
                        Ok(()) => Settled::Applied,
                        Err(e) => Settled::Failed(e),
                    },
                },
                Chain::Broken => Settled::NotApplied,
                Chain::InDoubt => {
                    Settled::Unknown(EngineError::Backend(BackendError::Unavailable(
                        "a commit group before this one may or may not have applied".into(),
                    )))
                }
            };
            match settled {
                Settled::Applied => {
                    let record = sealed.record.clone();
                    let results = self.publish(sealed, dispatched.elapsed());
                    self.stored = record;
                    answer(requests, results);
                }
                Settled::NotApplied => {
                    chain = Chain::Broken;
                    retry.extend(requests);
                }
                Settled::Failed(e) => {
                    tracing::error!(database = %self.shared.name, error = %e, "commit group failed to apply");
                    chain = Chain::Broken;
                    answer_each(requests, || Err(group_failure(&e)));
                }
                Settled::Unknown(e) => {
                    if chain == Chain::Whole {
                        tracing::error!(database = %self.shared.name, error = %e, "commit group result unknown");
                    }
                    chain = Chain::InDoubt;
                    answer_each(requests, || Err(self.in_doubt(&e)));
                }
            }
        }
        // No gap in the versions: other processes would read one as collected history.
        self.next_version = *self.shared.applied.borrow() + 1;
        if let Err(e) = self.catch_up().await {
            tracing::warn!(database = %self.shared.name, error = %e, "catching up after a failed group");
        }
        if !retry.is_empty() {
            self.run_group(retry).await;
        }
    }

    /// The error of a commit whose batch may or may not have applied.
    fn in_doubt(&self, e: &EngineError) -> EngineError {
        EngineError::CommitResultUnknown {
            database: self.shared.name.clone(),
            detail: e.to_string(),
        }
    }

    async fn run_group(&mut self, group: Vec<CommitRequest>) {
        // Catching up is a read's request: answer it on its own, so that a read never waits
        // for (or fails with) the batch of the writes it happened to be grouped with.
        let (catch_ups, group): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|r| matches!(r.op, CommitOp::CatchUp { .. }));
        if !catch_ups.is_empty() {
            let caught_up = self.catch_up().await;
            answer_catch_ups(catch_ups, &caught_up);
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
                    break group.iter().map(|_| Err(self.in_doubt(&e))).collect();
                }
            }
        };
        answer(group, results);
    }

    /// Resolve, sequence and apply a group once. Check failures and invalid ops are part of
    /// the results; `Err` means the group as a whole did not apply.
    async fn try_group(
        &mut self,
        group: &[CommitRequest],
    ) -> Result<Vec<Result<CommitReply>>, GroupError> {
        let shared = self.shared.clone();
        let store = shared.store.clone();
        let mut resolving = Group::new(&*store, None, self.next_version);
        let ops: Vec<&CommitOp> = group.iter().map(|r| &r.op).collect();
        self.resolve(&mut resolving, &ops)
            .await
            .map_err(GroupError::Failed)?;
        let token = shared.multi_process.then(group_token);
        let mut sealed = self.seal(resolving, token);
        let Some(entry) = sealed.entry.take() else {
            return Ok(sealed.tally.results);
        };
        let appending = Instant::now();
        match (token, sealed.version) {
            (Some(token), Some(last_version)) => {
                let start_version = sealed.tally.start_version;
                let settled = self.append_shared(entry, token, last_version).await;
                if !matches!(settled, Settled::Applied) {
                    // Nothing applied: leave no gap in the versions, which other processes
                    // would read as collected history. (If it applied after all, the next
                    // group's batch fails its condition and this process learns it like
                    // any other writer's.)
                    self.next_version = start_version;
                    self.stored = sealed.expected.clone();
                }
                match settled {
                    Settled::Applied => {}
                    Settled::NotApplied => return Err(GroupError::Stale),
                    Settled::Failed(e) => return Err(GroupError::Failed(e)),
                    Settled::Unknown(e) => return Err(GroupError::Unknown(e)),
                }
            }
            _ => shared.log.append(entry).await.map_err(GroupError::Failed)?,
        }
        Ok(self.publish(sealed, appending.elapsed()))
    }

    /// Resolve more commits into a group: every latest record they read in one store
    /// request, then each commit in turn, at the next version. A commit that fails is
    /// rolled back to its savepoint, with its error as its result. `Err`: the store could
    /// not be read, and nothing was resolved.
    async fn resolve(&mut self, group: &mut Group<'_>, ops: &[&CommitOp]) -> Result<()> {
        let started = Instant::now();
        let shared = self.shared.clone();
        group
            .ov
            .prefetch(ops.iter().flat_map(|op| op.latest_keys()).collect())
            .await?;
        for op in ops {
            let first_version = self.next_version;
            if let CommitOp::Restore {
                entries,
                newer_than,
                ..
            } = op
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
            let savepoint = group.ov.savepoint();
            // Read per commit: an EnableFeed earlier in this group turns it on.
            let feed = shared.multi_process || shared.feed_from.load(Ordering::Relaxed) != FEED_OFF;
            let mut cx = Resolve {
                ov: &mut group.ov,
                shared: &shared,
                version: self.next_version,
                now: group.now,
                touched: Vec::new(),
                marks: Vec::new(),
                feed,
                deleted: false,
                queue_changed: false,
                horizon: None,
                summed: &mut group.summed,
            };
            match cx.resolve(op, &self.conflicts, &group.tally.pending).await {
                Ok(r) => {
                    let Resolve {
                        touched,
                        marks,
                        deleted,
                        queue_changed,
                        horizon,
                        version,
                        ..
                    } = cx;
                    if r.sequenced {
                        let offset = group.tally.touched.len();
                        group.tally.feed.extend(
                            marks
                                .iter()
                                .filter_map(|m| Some((offset + m.at, m.kind()?, version))),
                        );
                        group.tally.pending.record(version, touched.clone());
                        self.next_version += 1;
                        if deleted {
                            group.deleted_at = version;
                        }
                    }
                    group.tally.touched.extend(touched);
                    group.tally.queue_changed |= queue_changed;
                    group.horizon = group.horizon.or(horizon);
                    group.tally.results.push(Ok(r.reply));
                }
                Err(e) => {
                    group.ov.rollback(savepoint);
                    self.next_version = first_version;
                    group.tally.results.push(Err(e));
                }
            }
        }
        group.tally.resolving += started.elapsed();
        Ok(())
    }

    /// Close a group: its version record, commit time and (on a shared store) write
    /// record, and the batch for the log (none if the group writes nothing).
    fn seal(&mut self, group: Group<'_>, token: Option<u64>) -> Sealed {
        let Group {
            mut ov,
            now,
            deleted_at,
            horizon,
            tally,
            ..
        } = group;
        let start_version = tally.start_version;
        let mut sealed = Sealed {
            entry: None,
            version: None,
            token,
            expected: token.and_then(|_| self.stored.clone()),
            record: None,
            tally,
        };
        if ov.is_empty() && self.next_version == start_version {
            return sealed;
        }
        // Only commits are timed: the collector's clock, which must not see its own
        // collections as new commits (that would keep it collecting forever).
        let commits = self.next_version > start_version;
        if self.shared.multi_process && !commits {
            // On a shared store every write — maintenance included — takes a version, so
            // that the version record orders it with every other process's writes (two
            // collectors cannot both move the horizon, a sweep cannot undo a newer write).
            self.next_version += 1;
        }
        let last_version = self.next_version - 1;
        let versioned = last_version >= start_version;
        if let Some(h) = horizon {
            ov.put(layout::META_HORIZON.to_vec(), h.to_be_bytes().to_vec());
        }
        let mut precondition = None;
        if versioned {
            sealed.version = Some(last_version);
            let record = layout::version_record(last_version, token);
            ov.put(layout::META_VERSION.to_vec(), record.clone());
            sealed.record = Some(record);
            if commits {
                ov.put(layout::times(last_version), now.to_be_bytes().to_vec());
            }
            let feed_on = self.shared.feed_from.load(Ordering::SeqCst) != FEED_OFF;
            if token.is_some() || (feed_on && !sealed.tally.feed.is_empty()) {
                // The change feed, and on a shared store how other processes learn this
                // group's writes.
                let touched = &sealed.tally.touched;
                let record = WriteRecord {
                    first_version: start_version,
                    deleted: deleted_at > 0,
                    queue_changed: sealed.tally.queue_changed,
                    token: token.unwrap_or(0),
                    entries: sealed
                        .tally
                        .feed
                        .iter()
                        .map(|&(at, kind, version)| Written {
                            key: touched[at].clone(),
                            kind,
                            version,
                        })
                        .collect(),
                };
                for (chunk, bytes) in record.encode().into_iter().enumerate() {
                    ov.put(layout::writes(last_version, chunk as u16), bytes);
                }
            }
            if token.is_some() {
                precondition = Some(Precondition {
                    key: layout::META_VERSION.to_vec(),
                    expected: self.stored.clone(),
                });
                // The next batch is conditioned on this one's record (undone if it fails).
                self.stored = sealed.record.clone();
            }
        }
        if deleted_at > 0 {
            // Before the batch reaches the store: readers at older versions read precisely
            // from the moment the delete may be visible.
            self.shared
                .last_delete
                .fetch_max(deleted_at, Ordering::SeqCst);
        }
        sealed.entry = Some(LogEntry {
            version: last_version,
            ops: ov.into_ops(),
            durability: self.shared.options.durability,
            precondition,
        });
        sealed
    }

    /// Take a group's writes into the conflict tracker, and let it forget what no open
    /// transaction can need any more.
    fn track(&mut self, pending: PendingWrites) {
        if pending.is_empty() {
            return;
        }
        self.conflicts.merge(pending);
        self.conflicts.forget_through(self.shared.read_floor());
    }

    /// A group's batch applied: count it, take in its writes for conflict checks (if they
    /// are not already), advance the applied version and wake watchers. Its results.
    fn publish(&mut self, sealed: Sealed, applying: Duration) -> Vec<Result<CommitReply>> {
        let stats = &self.shared.stats;
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .commits
            .fetch_add(sealed.tally.results.len() as u64, Ordering::Relaxed);
        let conflicts = sealed
            .tally
            .results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(EngineError::Conflict | EngineError::TransactionTooOld { .. })
                )
            })
            .count();
        if conflicts > 0 {
            stats
                .conflicts
                .fetch_add(conflicts as u64, Ordering::Relaxed);
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stats
            .resolve_ns
            .fetch_add(nanos(sealed.tally.resolving), Ordering::Relaxed);
        stats
            .append_ns
            .fetch_add(nanos(applying), Ordering::Relaxed);
        self.track(sealed.tally.pending);
        if let Some(version) = sealed.version {
            self.shared.applied.send_replace(version);
        }
        self.shared
            .publish(&sealed.tally.touched, sealed.tally.queue_changed);
        sealed.tally.results
    }
}

/// What a group's commits did, from its first resolution to its answers.
struct Tally {
    start_version: u64,
    results: Vec<Result<CommitReply>>,
    touched: Vec<Vec<u8>>,
    /// The change feed's entries: a key (by its place in `touched`), what its commit did
    /// to it, and the commit's version.
    feed: Vec<(usize, ChangeKind, u64)>,
    queue_changed: bool,
    pending: PendingWrites,
    resolving: Duration,
}

/// A group of commits being resolved: the store as the group sees it, and what its
/// commits did so far.
struct Group<'s> {
    ov: Overlay<'s>,
    now: u64,
    deleted_at: u64,
    horizon: Option<u64>,
    /// Keys whose latest record a sum in this group wrote (see `Resolve::write_sum`).
    summed: HashMap<Vec<u8>, u64>,
    tally: Tally,
}

impl<'s> Group<'s> {
    fn new(store: &'s dyn Store, base: Option<Arc<Vec<BatchOp>>>, start_version: u64) -> Self {
        Group {
            ov: Overlay::new(store, base),
            now: now_ms(),
            deleted_at: 0,
            horizon: None,
            summed: HashMap::new(),
            tally: Tally {
                start_version,
                results: Vec::new(),
                touched: Vec::new(),
                feed: Vec::new(),
                queue_changed: false,
                pending: PendingWrites::default(),
                resolving: Duration::ZERO,
            },
        }
    }
}

/// A sealed group: its batch, and what publishing it takes.
struct Sealed {
    entry: Option<LogEntry>,
    /// The database version once the batch applies (`None`: it takes no version).
    version: Option<u64>,
    /// On a shared store: the token naming the group's batch.
    token: Option<u64>,
    /// On a shared store: the version record the batch is conditioned on.
    expected: Option<Vec<u8>>,
    /// The version record the batch writes.
    record: Option<Vec<u8>>,
    tally: Tally,
}

/// The requests of the group being resolved while the one before it applies.
struct Waiting<'s> {
    requests: Vec<CommitRequest>,
    group: Group<'s>,
}

impl<'s> Waiting<'s> {
    fn new(group: Group<'s>) -> Self {
        Waiting {
            requests: Vec::new(),
            group,
        }
    }
}

/// A group whose batch the log is applying.
struct Flight {
    /// The append (`None`: the group writes nothing).
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    requests: Vec<CommitRequest>,
    sealed: Sealed,
    /// The batch, to send again if its answer is lost.
    ops: Arc<Vec<BatchOp>>,
    /// The batch stacked on those of the groups in flight when it was sent: the base of the
    /// group resolved next.
    merged: Arc<Vec<BatchOp>>,
    /// The batch's entry without its ops.
    template: LogEntry,
    dispatched: Instant,
}

/// How a flight's append ended.
async fn appended(task: &mut Option<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    let Some(task) = task else { return Ok(()) };
    task.await.unwrap_or_else(|e| {
        Err(EngineError::Backend(BackendError::Other(format!(
            "the commit log's task failed: {e}"
        ))))
    })
}

/// The version record a parked catch-up's reader saw.
fn seen(r: &CommitRequest) -> u64 {
    match r.op {
        CommitOp::CatchUp { seen } => seen,
        _ => 0,
    }
}

fn answer(requests: Vec<CommitRequest>, results: Vec<Result<CommitReply>>) {
    for (req, res) in requests.into_iter().zip(results) {
        let _ = req.reply.send(res);
    }
}

/// Answer every request alike.
fn answer_each(requests: Vec<CommitRequest>, reply: impl Fn() -> Result<CommitReply>) {
    for req in requests {
        let _ = req.reply.send(reply());
    }
}

/// Answer catch-ups with how catching up went.
fn answer_catch_ups(requests: Vec<CommitRequest>, caught_up: &Result<()>) {
    answer_each(requests, || match caught_up {
        Ok(()) => Ok(CommitReply::Done),
        Err(e) => Err(group_failure(e)),
    });
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
    fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

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
        EngineError::Backend(full @ BackendError::Full(_)) => EngineError::Backend(full.clone()),
        other => EngineError::Backend(BackendError::Other(other.to_string())),
    }
}
