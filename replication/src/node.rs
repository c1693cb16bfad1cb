//! A cluster node: Raft over the node's own backend, its gRPC listener, and the operations
//! the engine and the operator need — propose a batch, pass a read barrier, change the
//! membership, report status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use strata_engine::{Backend, BackendError, Engine};
use tokio::sync::watch;

use crate::backend::ReplicatedBackend;
use crate::command::{Command, Member};
use crate::error::{decode, encode, ReplicationError, Result};
use crate::network::{
    AdminReply, AdminRequest, CommitAnswer, CommitRequest, Credentials, Forwarded, Method, Network,
    PeerClient, Peers, Proposed, StreamLink, StreamMethod,
};
use crate::state_machine::{Replica, StateMachine};
use crate::store::{LogStore, RAFT_DB};
use crate::{NodeId, Raft};

/// How long a proposal or a read barrier keeps trying (through elections) before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long adding a learner waits for it to copy what the cluster holds before answering
/// that it is still copying (within the timeout of an admin call forwarded to the leader,
/// `REQUEST_TIMEOUT * 6`).
const LEARNER_CATCH_UP: Duration = Duration::from_secs(50);

/// How a node is set up: `strata serve --cluster …` or `[cluster]` in `db.toml`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Where the Raft listener binds (`host:port`; port 0 picks one).
    pub listen: String,
    /// The address other nodes reach this one at; the bound address if `None`.
    pub advertise: Option<String>,
    pub credentials: Credentials,
    /// Where snapshot files are kept.
    pub snapshot_dir: PathBuf,
    /// Where the Raft log's entries are kept (see [`crate::log_file`]); `None` keeps them in
    /// the backend, beside the vote (a node whose backend is memory).
    pub log_dir: Option<PathBuf>,
    /// This node's client-facing endpoints (`kv-connect` → `http://…`).
    pub endpoints: BTreeMap<String, String>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// A snapshot is built after this many log entries, and the log compacted behind it.
    pub snapshot_every: u64,
    /// How many entries before the snapshot the log keeps, so that a follower a little
    /// behind catches up from the log rather than with a whole snapshot.
    pub keep_after_snapshot: u64,
    /// Reach these peers at these addresses instead of the ones they advertise (a tunnel,
    /// a NAT, or the fault-injecting proxies of the replication tests).
    pub dial_via: BTreeMap<NodeId, String>,
}

impl ClusterConfig {
    pub fn new(
        node_id: NodeId,
        listen: &str,
        credentials: Credentials,
        snapshot_dir: PathBuf,
    ) -> Self {
        ClusterConfig {
            node_id,
            listen: listen.to_string(),
            advertise: None,
            credentials,
            snapshot_dir,
            log_dir: None,
            endpoints: BTreeMap::new(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            dial_via: BTreeMap::new(),
        }
    }
}

/// One node's view of the cluster (`strata cluster status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// The node that answered.
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The answering node's state: leader, follower, candidate or learner; or `stopped (…)`
    /// with why, once its Raft has stopped on a failure of its own (see [`Node::halted`]).
    pub state: String,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub nodes: Vec<NodeStatus>,
}

/// One member, as the leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub raft_addr: String,
    pub endpoints: BTreeMap<String, String>,
    pub voter: bool,
    /// The last log index the leader knows this node holds (the leader reports it).
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's log.
    pub lag: Option<u64>,
    /// While the answering node leads: how long, in milliseconds, this node has not
    /// answered its Raft calls (down, cut off, or stopped), and the last failure.
    #[serde(default)]
    pub unanswered_ms: Option<u64>,
    #[serde(default)]
    pub unanswered_error: Option<String>,
}

/// A running node.
pub struct Node {
    id: NodeId,
    raft: Raft,
    replica: Arc<Replica>,
    member: Mutex<Member>,
    credentials: Credentials,
    peers: Arc<Peers>,
    /// Read barriers passed (strong reads), for status and tests.
    barriers: std::sync::atomic::AtomicU64,
    /// Callers waiting for the next read-barrier round, and the signal that there are some.
    barrier_waiters: Mutex<Vec<tokio::sync::oneshot::Sender<std::result::Result<(), String>>>>,
    barrier_wake: tokio::sync::Notify,
    shutdown: watch::Sender<bool>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The engine that resolves commits other nodes forward while this node leads (see
    /// [`Node::serve_commits`]).
    committer: std::sync::OnceLock<std::sync::Weak<Engine>>,
    /// Commits waiting to be forwarded to the leader, and the signal that there are some.
    forward_waiting: Mutex<Vec<PendingCommit>>,
    forward_wake: tokio::sync::Notify,
}

/// A commit waiting to be forwarded, and where its answer goes.
struct PendingCommit {
    commit: CommitRequest,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Option<Vec<u8>>, BackendError>>,
}

/// How many rounds of forwarded commits a node keeps in flight to the leader. Commits that
/// arrive while they are out wait and go together in the next round.
const FORWARD_ROUNDS: usize = 2;

/// The most commits one forwarding round carries.
const FORWARD_BATCH: usize = 256;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("raft_addr", &self.member().raft_addr)
            .finish()
    }
}

impl Node {
    /// Start a node over `backend` (its own copy of every database): open the Raft log and
    /// state machine in it, bind the Raft listener, start Raft. A new node waits to be
    /// initialized (`strata cluster init`) or added by the leader.
    pub async fn start(backend: Arc<dyn Backend>, config: ClusterConfig) -> Result<Arc<Node>> {
        let raft_db = backend.open(RAFT_DB, true).await?;
        let replica = Replica::new(backend);
        let log = match &config.log_dir {
            Some(dir) => LogStore::with_files(raft_db.clone(), dir)
                .await
                .map_err(|e| ReplicationError::Raft(e.to_string()))?,
            None => LogStore::new(raft_db.clone()),
        };
        let sm = StateMachine::open(replica.clone(), raft_db, &config.snapshot_dir)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        sm.snapshot_every(config.snapshot_every);
        let snapshot_due = sm.snapshot_due();

        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| {
                ReplicationError::Invalid(format!(
                    "cannot listen for Raft on {}: {e}",
                    config.listen
                ))
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| ReplicationError::Invalid(e.to_string()))?;
        let member = Member {
            raft_addr: config
                .advertise
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            endpoints: config.endpoints.clone(),
        };

        let raft_config = openraft::Config {
            cluster_name: config.credentials.cluster_id.clone(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            // Snapshots are asked for when the state machine finds one due: by entries and
            // by size (see `state_machine`), where openraft's policy counts entries only.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 5_000,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| ReplicationError::Invalid(format!("cluster settings: {e}")))?,
        );
        let peers = Peers::new(config.credentials.clone(), config.dial_via.clone());
        let network = Network(peers.clone());
        let raft = Raft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;

        let node = Arc::new(Node {
            id: config.node_id,
            raft,
            replica,
            member: Mutex::new(member),
            credentials: config.credentials.clone(),
            peers,
            barriers: Default::default(),
            barrier_waiters: Mutex::new(Vec::new()),
            barrier_wake: tokio::sync::Notify::new(),
            shutdown: watch::channel(false).0,
            server: Mutex::new(None),
            committer: std::sync::OnceLock::new(),
            forward_waiting: Mutex::new(Vec::new()),
            forward_wake: tokio::sync::Notify::new(),
        });
        tokio::spawn(node.clone().barrier_rounds());
        tokio::spawn(node.clone().snapshots_when_due(snapshot_due));
        for _ in 0..FORWARD_ROUNDS {
            tokio::spawn(node.clone().forward_rounds());
        }
        let server = crate::service::serve(node.clone(), listener, node.shutdown.subscribe());
        *node.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::spawn(server));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node as it describes itself to the cluster (its Raft address and endpoints).
    /// Members record it when the node is added, so set the endpoints before that.
    pub fn member(&self) -> Member {
        self.member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record this node's client-facing endpoints (once its frontends are listening).
    pub fn set_endpoints(&self, endpoints: BTreeMap<String, String>) {
        self.member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .endpoints = endpoints;
    }

    /// Every member's endpoints for one frontend (`kv-connect`), as the membership records
    /// them, by node id.
    pub fn endpoints(&self, frontend: &str) -> Vec<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter_map(|(id, node)| node.endpoints.get(frontend).map(|e| (*id, e.clone())))
            .collect()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub(crate) fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The backend the engine runs over on this node.
    pub fn backend(self: &Arc<Self>) -> Arc<ReplicatedBackend> {
        Arc::new(ReplicatedBackend::new(self.clone()))
    }

    fn peer(&self, id: NodeId, addr: &str) -> PeerClient {
        self.peers.get(id, addr)
    }

    /// The leader as far as this node knows, if it is another node.
    fn remote_leader(
        &self,
        hint: Option<&ForwardToLeader<NodeId, Member>>,
    ) -> Option<(NodeId, Member)> {
        let from_hint = hint.and_then(|f| f.leader_id.zip(f.leader_node.clone()));
        let known = from_hint.or_else(|| {
            let m = self.raft.metrics().borrow().clone();
            let id = m.current_leader?;
            let node = m.membership_config.membership().get_node(&id)?.clone();
            Some((id, node))
        });
        known.filter(|(id, _)| *id != self.id)
    }

    /// Wait a little for an election (or for a lost leader to be noticed).
    async fn await_leader(&self, deadline: Instant) -> Result<()> {
        if Instant::now() >= deadline {
            return Err(ReplicationError::NoLeader(format!(
                "none was elected within {REQUEST_TIMEOUT:?}"
            )));
        }
        if *self.shutdown.borrow() {
            return Err(ReplicationError::ShuttingDown);
        }
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
        Ok(())
    }

    /// Put `cmd` in the log and return once it is committed and applied on this node.
    ///
    /// On a follower the command goes to the leader. If the answer is lost (the leader fails
    /// mid-request), the error says so and the command may or may not have taken effect:
    /// the engine's batches are conditioned on the version record, so the engine settles
    /// that from the store and never applies one twice.
    pub async fn propose(&self, cmd: Command) -> Result<Proposed> {
        self.in_service()?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let hint = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => {
                    return Ok(Proposed {
                        index: resp.log_id.index,
                        applied: resp.data,
                    })
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(ReplicationError::Raft(e.to_string()))
                }
                Err(RaftError::Fatal(f)) => return Err(fatal(f)),
            };
            if let Some((id, leader)) = self.remote_leader(Some(&hint)) {
                let peer = self.peer(id, &leader.raft_addr);
                let left = deadline.saturating_duration_since(Instant::now());
                let reply = match peer.call(Method::Propose, encode(&cmd)?, left).await {
                    Ok(r) => r,
                    // The old leader is gone and nothing was sent: wait for the next one.
                    Err(ReplicationError::NotSent { .. }) => {
                        self.await_leader(deadline).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match decode::<Forwarded<Proposed>>(&reply)? {
                    Forwarded::Ok(p) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if !self.replica.wait_applied(p.index, left).await {
                            return Err(ReplicationError::Unreachable {
                                node: self.id,
                                addr: self.member().raft_addr,
                                detail: format!(
                                    "committed at index {} but not applied on this node in time",
                                    p.index
                                ),
                            });
                        }
                        return Ok(p);
                    }
                    Forwarded::NotLeader(_) => {}
                    Forwarded::Failed(detail) => {
                        return Err(ReplicationError::Unreachable {
                            node: id,
                            addr: leader.raft_addr,
                            detail,
                        })
                    }
                }
            }
            self.await_leader(deadline).await?;
        }
    }

    /// Let `engine` (the engine over [`Node::backend`]) resolve the atomic writes and
    /// transactions the other nodes' engines forward while this node leads, so that one
    /// pipeline resolves every commit instead of each node racing the others for the
    /// version record ([`strata_engine::forward`]). Until it is called, this node answers
    /// that it does not serve them, and other nodes resolve their commits themselves.
    pub fn serve_commits(&self, engine: &Arc<Engine>) {
        let _ = self.committer.set(Arc::downgrade(engine));
    }

    /// Why this node's Raft has stopped, if it has: a storage failure (a full disk, say)
    /// stops it for good, and the node then takes no part in the cluster until it is
    /// restarted.
    pub fn halted(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.running_state.as_ref().err().map(|f| f.to_string())
    }

    /// [`ReplicationError::Halted`] if this node's Raft has stopped: asked of Raft, every
    /// call would fail the same way (and be logged by it as a fatal error, each time).
    fn in_service(&self) -> Result<()> {
        match self.halted() {
            Some(why) => Err(ReplicationError::Halted(why)),
            None => Ok(()),
        }
    }

    /// Whether this node's engine should forward its commits: it does not lead, but some
    /// node does, and its own Raft runs (a node stopped by a storage failure could not
    /// apply what it forwarded; its own proposals fail with the failure instead).
    pub fn forwards_commits(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.running_state.is_ok() && m.current_leader.is_some_and(|l| l != self.id)
    }

    /// A commit (encoded by the engine) for `database`, resolved by the leader's engine:
    /// its encoded answer, once this node has applied the commit; `None` when the commit is
    /// to be resolved here (this node leads, or the leader serves no forwarded commits).
    /// A request that may have reached the leader but got no answer is
    /// [`BackendError::InDoubt`]; nothing is ever sent twice. Commits forwarded at the same
    /// time travel together, a round of them per call to the leader.
    pub async fn forward_commit(
        &self,
        database: &str,
        request: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, BackendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let commit = CommitRequest {
            database: database.to_string(),
            request: request.to_vec(),
        };
        self.forward_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PendingCommit { commit, reply });
        self.forward_wake.notify_one();
        // Dropped unanswered: its round was cut short by shutdown, perhaps after sending.
        answer.await.unwrap_or_else(|_| {
            Err(BackendError::InDoubt(
                "the node shut down while the commit was being forwarded".into(),
            ))
        })
    }

    /// Send rounds of waiting commits to the leader until shutdown (one of
    /// [`FORWARD_ROUNDS`] such loops).
    async fn forward_rounds(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let mut link = StreamLink::new(StreamMethod::Forward);
        loop {
            tokio::select! {
                _ = self.forward_wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => {
                    // Never sent: the callers may try again elsewhere.
                    let left = std::mem::take(
                        &mut *self.forward_waiting.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    for p in left {
                        let _ = p.reply.send(Err(BackendError::Unavailable(
                            "the node is shutting down".into(),
                        )));
                    }
                    return;
                }
            }
            loop {
                let round: Vec<PendingCommit> = {
                    let mut waiting = self
                        .forward_waiting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let n = waiting.len().min(FORWARD_BATCH);
                    waiting.drain(..n).collect()
                };
                if round.is_empty() {
                    break;
                }
                let (commits, replies): (Vec<_>, Vec<_>) =
                    round.into_iter().map(|p| (p.commit, p.reply)).unzip();
                match self.forward_round(&mut link, commits).await {
                    Ok(Some(answers)) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(Some(answer)));
                        }
                    }
                    Ok(None) => {
                        for reply in replies {
                            let _ = reply.send(Ok(None));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }

    /// One round: `commits` sent to the leader, its answers (in order) once this node has
    /// applied them, or `None` to resolve them here.
    async fn forward_round(
        &self,
        link: &mut StreamLink,
        commits: Vec<CommitRequest>,
    ) -> std::result::Result<Option<Vec<Vec<u8>>>, BackendError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let count = commits.len();
        let body = encode(&commits)?;
        loop {
            if self.is_leader() {
                return Ok(None);
            }
            let Some((id, leader)) = self.remote_leader(None) else {
                self.await_leader(deadline).await?;
                continue;
            };
            let peer = self.peer(id, &leader.raft_addr);
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match link.send(&peer, body.clone(), left).await {
                Ok(r) => r,
                // Nothing reached the leader: wait for one that answers.
                Err(ReplicationError::NotSent { .. }) => {
                    self.await_leader(deadline).await?;
                    continue;
                }
                Err(e @ ReplicationError::Unreachable { .. }) => {
                    return Err(BackendError::InDoubt(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            match decode::<Forwarded<CommitAnswer>>(&answer)? {
                Forwarded::Ok(CommitAnswer::Done { index, replies }) => {
                    if replies.len() != count {
                        return Err(BackendError::InDoubt(format!(
                            "the leader answered {} of {count} forwarded commits",
                            replies.len()
                        )));
                    }
                    // Committed. Wait (within the deadline) for this node's copy to hold
                    // them, so that each caller's next read sees its write; a strong read
                    // would wait for them anyway, so a slow copy delays, never hides, them.
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.replica.wait_applied(index, left).await;
                    return Ok(Some(replies));
                }
                Forwarded::Ok(CommitAnswer::NotServing) => return Ok(None),
                // Nothing ran there: try the leader it names, or the next one.
                Forwarded::NotLeader(_) => self.await_leader(deadline).await?,
                Forwarded::Failed(detail) => return Err(BackendError::InDoubt(detail)),
            }
        }
    }

    /// Commits another node forwarded: resolved by this node's engine if it leads, all at
    /// once (so that its pipeline groups them), answered in order.
    pub(crate) async fn commit_forwarded(
        &self,
        commits: Vec<CommitRequest>,
    ) -> Forwarded<CommitAnswer> {
        if !self.is_leader() {
            return Forwarded::NotLeader(self.remote_leader(None));
        }
        let Some(engine) = self.committer.get().and_then(|w| w.upgrade()) else {
            return Forwarded::Ok(CommitAnswer::NotServing);
        };
        let mut running = tokio::task::JoinSet::new();
        let count = commits.len();
        for (i, c) in commits.into_iter().enumerate() {
            let engine = engine.clone();
            running.spawn(async move {
                let reply = engine.commit_forwarded(&c.database, &c.request).await;
                (i, reply)
            });
        }
        let mut replies = vec![Vec::new(); count];
        while let Some(done) = running.join_next().await {
            match done {
                Ok((i, reply)) => replies[i] = reply,
                Err(e) => return Forwarded::Failed(format!("a forwarded commit failed: {e}")),
            }
        }
        Forwarded::Ok(CommitAnswer::Done {
            index: self.replica.applied(),
            replies,
        })
    }

    /// Whether this node leads the cluster right now (as far as it knows).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// How many read barriers (strong reads) this node has been asked for.
    pub fn read_barriers(&self) -> u64 {
        self.barriers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A proposal from another node, run here if this node leads.
    pub(crate) async fn propose_forwarded(&self, cmd: Command) -> Forwarded<Proposed> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Forwarded::Ok(Proposed {
                index: resp.log_id.index,
                applied: resp.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Forwarded::NotLeader(f.leader_id.zip(f.leader_node))
            }
            Err(e) => Forwarded::Failed(e.to_string()),
        }
    }

    /// Return once this node has applied every entry committed before the call: after this,
    /// reads of the local copy are linearizable.
    ///
    /// Concurrent callers share rounds: a caller joins the next round to start, whose
    /// read-index request is made after the caller arrived, so one round serves every read
    /// waiting for it. At most one round is in flight per node.
    pub async fn read_barrier(&self) -> Result<()> {
        self.barriers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if *self.shutdown.borrow() {
            return Err(ReplicationError::ShuttingDown);
        }
        self.in_service()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.barrier_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        self.barrier_wake.notify_one();
        // A shutdown after the check above may have cleared the waiters before this one
        // joined them: then nothing would ever answer it.
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            r = rx => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ReplicationError::NoLeader(e)),
                Err(_) => Err(ReplicationError::ShuttingDown),
            },
            _ = shutdown.wait_for(|s| *s) => Err(ReplicationError::ShuttingDown),
        }
    }

    /// Run read-barrier rounds for the callers of [`Node::read_barrier`] until shutdown.
    async fn barrier_rounds(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = self.barrier_wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => {
                    // Callers still waiting hear that the node is going away.
                    self.barrier_waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                    return;
                }
            }
            loop {
                let waiters = std::mem::take(
                    &mut *self
                        .barrier_waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                );
                if waiters.is_empty() {
                    break;
                }
                let result = self.barrier_round().await.map_err(|e| e.to_string());
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        }
    }

    /// One read barrier: the read index (here if leading, else from the leader), then
    /// applying up to it.
    async fn barrier_round(&self) -> Result<()> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let hint = match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Some(f),
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => None,
                Err(RaftError::Fatal(f)) => return Err(fatal(f)),
            };
            if let Some((id, leader)) = self.remote_leader(hint.as_ref()) {
                let peer = self.peer(id, &leader.raft_addr);
                let left = deadline.saturating_duration_since(Instant::now());
                let reply = match peer.call(Method::ReadIndex, Vec::new(), left).await {
                    Ok(r) => r,
                    // A read can always be asked again, of whichever node leads next.
                    Err(
                        ReplicationError::NotSent { .. } | ReplicationError::Unreachable { .. },
                    ) => {
                        self.await_leader(deadline).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match decode::<Forwarded<u64>>(&reply)? {
                    Forwarded::Ok(index) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if self.replica.wait_applied(index, left).await {
                            return Ok(());
                        }
                        return Err(ReplicationError::NoLeader(format!(
                            "this node did not catch up to index {index} in time"
                        )));
                    }
                    Forwarded::NotLeader(_) | Forwarded::Failed(_) => {}
                }
            }
            self.await_leader(deadline).await?;
        }
    }

    /// The leader's read index for another node, after confirming leadership with a quorum.
    pub(crate) async fn read_index_forwarded(&self) -> Forwarded<u64> {
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Forwarded::Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Forwarded::NotLeader(f.leader_id.zip(f.leader_node))
            }
            Err(e) => Forwarded::Failed(e.to_string()),
        }
    }

    /// Run a membership change or status request here, or on the leader when it must run
    /// there.
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminReply> {
        if matches!(
            req,
            AdminRequest::Initialize { .. } | AdminRequest::Describe
        ) {
            // Only ever this node: initializing is what makes a leader in the first place.
            return self.admin_local(req).await.map_err(|e| match e {
                AdminError::Failed(e) => e,
                AdminError::NotLeader(_) => {
                    ReplicationError::Invalid("the cluster is already initialized".into())
                }
            });
        }
        match self.admin_local(req.clone()).await {
            Err(AdminError::NotLeader(hint)) => {
                let Some((id, leader)) = self.remote_leader(hint.as_ref()) else {
                    return Err(ReplicationError::NoLeader(
                        "retry once one is elected".into(),
                    ));
                };
                let reply = self
                    .peer(id, &leader.raft_addr)
                    .call(Method::Admin, encode(&req)?, REQUEST_TIMEOUT * 6)
                    .await?;
                match decode::<std::result::Result<AdminReply, String>>(&reply)? {
                    Ok(r) => Ok(r),
                    Err(e) => Err(ReplicationError::Raft(e)),
                }
            }
            Err(AdminError::Failed(e)) => Err(e),
            Ok(r) => Ok(r),
        }
    }

    /// An admin request run on this node only.
    pub(crate) async fn admin_local(
        &self,
        req: AdminRequest,
    ) -> std::result::Result<AdminReply, AdminError> {
        let write_err = |e: RaftError<NodeId, ClientWriteError<NodeId, Member>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                AdminError::NotLeader(Some(f))
            }
            other => AdminError::Failed(ReplicationError::Raft(other.to_string())),
        };
        match req {
            AdminRequest::Initialize { members } => {
                let mut members = members;
                members.entry(self.id).or_insert_with(|| self.member());
                match self.raft.initialize(members).await {
                    Ok(()) => Ok(AdminReply::Done),
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                        Err(AdminError::Failed(ReplicationError::Invalid(
                            "the cluster is already initialized".into(),
                        )))
                    }
                    Err(e) => Err(AdminError::Failed(ReplicationError::Raft(e.to_string()))),
                }
            }
            AdminRequest::AddLearner { id, member } => {
                let added = self
                    .raft
                    .add_learner(id, member, false)
                    .await
                    .map_err(write_err)?;
                self.learner_caught_up(id, added.log_id.index).await?;
                Ok(AdminReply::Done)
            }
            AdminRequest::ChangeVoters { voters } => {
                if voters.is_empty() {
                    return Err(AdminError::Failed(ReplicationError::Invalid(
                        "a cluster needs at least one voter".into(),
                    )));
                }
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(write_err)?;
                Ok(AdminReply::Done)
            }
            AdminRequest::Status => Ok(AdminReply::Status(self.status())),
            AdminRequest::Remove { ids } => {
                let membership = self.raft.metrics().borrow().membership_config.clone();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let remaining: BTreeSet<NodeId> = voters.difference(&ids).copied().collect();
                if remaining.is_empty() {
                    return Err(AdminError::Failed(ReplicationError::Invalid(
                        "that would leave the cluster without voters".into(),
                    )));
                }
                if remaining.len() != voters.len() {
                    self.raft
                        .change_membership(remaining, false)
                        .await
                        .map_err(write_err)?;
                }
                let learners: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .learner_ids()
                    .filter(|id| ids.contains(id))
                    .collect();
                if !learners.is_empty() {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                        .map_err(write_err)?;
                }
                Ok(AdminReply::Done)
            }
            AdminRequest::Describe => Ok(AdminReply::Member {
                id: self.id,
                member: self.member(),
            }),
        }
    }

    /// Wait until learner `id` holds the log up to `upto` (the entry that added it), so that
    /// it has copied everything from before it joined (from the log or as a snapshot).
    /// openraft's own wait for a new learner ends once the learner is within
    /// `replication_lag_threshold` entries (thousands) of the leader, which a learner that
    /// holds nothing yet is, in a young cluster: a promotion right after would make a voter
    /// that still has everything to copy.
    async fn learner_caught_up(&self, id: NodeId, upto: u64) -> Result<(), AdminError> {
        let holds = |m: &openraft::RaftMetrics<NodeId, Member>| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .flatten()
                .map(|l| l.index)
        };
        let waited = self
            .raft
            .wait(Some(LEARNER_CATCH_UP))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.membership_config.membership().get_node(&id).is_none()
                        || holds(m).is_some_and(|i| i >= upto)
                },
                "the new learner caught up",
            )
            .await;
        let fail = |why: String| Err(AdminError::Failed(ReplicationError::Raft(why)));
        match waited {
            Ok(m) if holds(&m).is_some_and(|i| i >= upto) => Ok(()),
            Ok(m) if m.state != ServerState::Leader => fail(format!(
                "node {id} is a learner, but this node stopped leading while it caught up: \
                 `strata cluster status` shows its progress"
            )),
            Ok(_) => fail(format!(
                "node {id} was removed from the cluster while it caught up"
            )),
            Err(openraft::metrics::WaitError::ShuttingDown) => {
                Err(AdminError::Failed(ReplicationError::ShuttingDown))
            }
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                let at = holds(&self.raft.metrics().borrow());
                fail(format!(
                    "node {id} is a learner, but has not caught up within {}s (it holds the \
                     log up to {}, and joined at {upto}); it goes on copying: `strata cluster \
                     status` shows its progress, promote it once its lag is small",
                    LEARNER_CATCH_UP.as_secs(),
                    at.map_or("nothing".into(), |i| format!("entry {i}")),
                ))
            }
        }
    }

    /// This node's view of the cluster. Replication progress is known to the leader only.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let leads = m.state == ServerState::Leader;
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|l| l.map(|l| l.index).unwrap_or(0));
                // Only the leader calls every other node all the time.
                let unanswered = match leads && *id != self.id {
                    true => self.peers.unanswered(*id),
                    false => None,
                };
                NodeStatus {
                    id: *id,
                    raft_addr: node.raft_addr.clone(),
                    endpoints: node.endpoints.clone(),
                    voter: voters.contains(id),
                    matched_index: matched,
                    lag: matched.map(|i| last.saturating_sub(i)),
                    unanswered_ms: unanswered
                        .as_ref()
                        .map(|(d, _)| d.as_millis().try_into().unwrap_or(u64::MAX)),
                    unanswered_error: unanswered.map(|(_, why)| why),
                }
            })
            .collect();
        let state = match (&m.running_state, m.state) {
            // Raft's last role no longer holds once it has stopped.
            (Err(why), _) => format!("stopped ({why})"),
            (Ok(()), ServerState::Leader) => "leader".into(),
            (Ok(()), ServerState::Follower) => "follower".into(),
            (Ok(()), ServerState::Candidate) => "candidate".into(),
            (Ok(()), ServerState::Learner) => "learner".into(),
            (Ok(()), ServerState::Shutdown) => "shutdown".into(),
        };
        ClusterStatus {
            cluster_id: self.credentials.cluster_id.clone(),
            node: self.id,
            leader: m.current_leader,
            term: m.current_term,
            state,
            last_log_index: last,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            nodes,
        }
    }

    /// Initialize a new cluster with this node (and `others`) as its voters.
    pub async fn initialize(&self, others: BTreeMap<NodeId, Member>) -> Result<()> {
        self.admin(AdminRequest::Initialize { members: others })
            .await
            .map(|_| ())
    }

    /// Wait until this node knows a leader (after `strata cluster init`, or once it has
    /// been added to a cluster).
    pub async fn leader_known(&self) {
        let _ = self
            .raft
            .wait(None)
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
    }

    /// Whether this node is part of an initialized cluster.
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Ask Raft for a snapshot each time the state machine finds one due, until shutdown.
    /// (Raft ignores the request while a snapshot is being built; the next applied entry
    /// finds it due again.)
    async fn snapshots_when_due(self: Arc<Self>, due: Arc<tokio::sync::Notify>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = due.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if self.raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }

    /// Turns true when the node begins to shut down.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stop Raft and the listener. The backend's stores stay open for the engine to close.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let _ = self.raft.shutdown().await;
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = server {
            let _ = s.await;
        }
    }
}

/// Why an admin request did not run here.
#[derive(Debug)]
pub(crate) enum AdminError {
    NotLeader(Option<ForwardToLeader<NodeId, Member>>),
    Failed(ReplicationError),
}

fn fatal(f: openraft::error::Fatal<NodeId>) -> ReplicationError {
    match f {
        openraft::error::Fatal::Stopped => ReplicationError::ShuttingDown,
        other => ReplicationError::Halted(other.to_string()),
    }
}
