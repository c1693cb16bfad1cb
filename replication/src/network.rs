//! Calling other nodes: one gRPC client per peer, every call carrying the cluster id and the
//! shared secret, with openraft's messages as postcard payloads.
//!
//! Calls made over and over to one peer go on long-lived streams rather than a call each:
//! log entries to a follower (`Replicate`: openraft sends a peer one `AppendEntries` at a
//! time and waits for its answer) and a follower's rounds of commits to the leader
//! (`Forward`: each round task waits for its round's answer). A stream carries request,
//! answer, request, answer, in order, and each exchange costs one message each way instead
//! of a whole gRPC call (headers, a new HTTP/2 stream, trailers, routing and the secret
//! checked again). The stream is checked once, when it opens; any error or timeout closes
//! it, and the next exchange opens a new one, so an answer is never paired with the wrong
//! request. A peer that does not serve the stream (an older version) gets unary calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::command::{Applied, Member};
use crate::error::{decode, encode, ReplicationError, Result};
use crate::proto::raft_client::RaftClient;
use crate::proto::Payload;
use crate::{NodeId, TypeConfig};

/// The metadata key naming the cluster a call is meant for.
pub const CLUSTER_HEADER: &str = "x-strata-cluster";

/// Messages up to this size pass between nodes (a batch of large values, a snapshot chunk).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long a call waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who may talk to this cluster: its id, and the secret every member shares.
#[derive(Clone)]
pub struct Credentials {
    pub cluster_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// A leader's answer to a forwarded proposal or read-index request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded<T> {
    Ok(T),
    /// The callee is not the leader; it names the one it knows of.
    NotLeader(Option<(NodeId, Member)>),
    /// The request failed on the leader; whether a proposal took effect is unknown.
    Failed(String),
}

/// A commit forwarded to the leader's engine ([`strata_engine::forward`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub database: String,
    /// The engine's encoded commit.
    pub request: Vec<u8>,
}

/// The leader's answer to a forwarded commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommitAnswer {
    /// The engine's encoded answers, in the order of the requests, and the log index the
    /// leader had applied once it had them all: the caller's copy holds the commits once it
    /// has applied that far.
    Done { index: u64, replies: Vec<Vec<u8>> },
    /// No engine serves forwarded commits on the leader: resolve the commit where it was
    /// made, as before.
    NotServing,
}

/// A proposal's result, as the leader saw it applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Proposed {
    pub index: u64,
    pub applied: Applied,
}

/// What `strata cluster …` asks of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    Initialize {
        members: BTreeMap<NodeId, Member>,
    },
    AddLearner {
        id: NodeId,
        member: Member,
    },
    ChangeVoters {
        voters: BTreeSet<NodeId>,
    },
    Status,
    /// Who the called node is: its id and how it describes itself.
    Describe,
    /// Take nodes out of the cluster, voters and learners alike.
    Remove {
        ids: BTreeSet<NodeId>,
    },
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminReply {
    Done,
    Status(crate::node::ClusterStatus),
    Member { id: NodeId, member: Member },
}

/// A gRPC client for one peer address. Connects lazily; a call to a node that is down fails
/// fast with [`ReplicationError::Unreachable`].
#[derive(Clone)]
pub struct PeerClient {
    pub node: NodeId,
    pub addr: String,
    client: Option<RaftClient<Channel>>,
    /// The metadata every call carries (cluster id, `Bearer` secret), or why it cannot.
    metadata: std::result::Result<CallMetadata, String>,
}

#[derive(Clone)]
struct CallMetadata {
    cluster: MetadataValue<tonic::metadata::Ascii>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl CallMetadata {
    fn new(credentials: &Credentials) -> std::result::Result<Self, String> {
        let cluster = credentials
            .cluster_id
            .parse()
            .map_err(|_| "the cluster id is not a valid header".to_string())?;
        let authorization = format!("Bearer {}", credentials.secret)
            .parse()
            .map_err(|_| "the cluster secret is not a valid header".to_string())?;
        Ok(CallMetadata {
            cluster,
            authorization,
        })
    }
}

/// An open stream of exchanges with one peer: requests go out through `requests`, answers
/// come back on `answers` in the same order.
struct CallStream {
    requests: mpsc::Sender<Payload>,
    answers: tonic::Streaming<Payload>,
}

/// Which stream of exchanges to open.
#[derive(Debug, Clone, Copy)]
pub enum StreamMethod {
    /// `AppendEntries`, one after another.
    Replicate,
    /// Rounds of forwarded commits, one after another.
    Forward,
}

impl StreamMethod {
    /// The unary call that does the same, for peers without the stream.
    fn unary(self) -> Method {
        match self {
            StreamMethod::Replicate => Method::AppendEntries,
            StreamMethod::Forward => Method::Commit,
        }
    }
}

/// The outcome of one exchange on a stream.
enum Exchanged {
    Answer(Vec<u8>),
    /// The peer does not serve the stream: nothing was sent.
    Unsupported,
}

/// One caller's way to one peer for calls made one after another: a stream, kept while the
/// peer stays the same, or the unary call for a peer that does not serve the stream.
pub struct StreamLink {
    method: StreamMethod,
    /// The node and address the stream goes to.
    to: Option<(NodeId, String)>,
    stream: Option<CallStream>,
    unary: bool,
}

impl StreamLink {
    pub fn new(method: StreamMethod) -> Self {
        StreamLink {
            method,
            to: None,
            stream: None,
            unary: false,
        }
    }

    /// One request to `peer`: its answer, or the error the unary call would have had.
    pub async fn send(
        &mut self,
        peer: &PeerClient,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let to = (peer.node, peer.addr.clone());
        if self.to.as_ref() != Some(&to) {
            *self = StreamLink {
                to: Some(to),
                ..StreamLink::new(self.method)
            };
        }
        if !self.unary {
            match peer
                .exchange(self.method, &mut self.stream, body.clone(), timeout)
                .await?
            {
                Exchanged::Answer(answer) => return Ok(answer),
                Exchanged::Unsupported => {
                    tracing::info!(
                        node = peer.node,
                        "the peer does not serve {:?} streams; using single calls",
                        self.method
                    );
                    self.unary = true;
                }
            }
        }
        peer.call(self.method.unary(), body, timeout).await
    }
}

/// Which call of the Raft service to make.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Propose,
    Commit,
    ReadIndex,
    Admin,
}

impl PeerClient {
    pub fn new(node: NodeId, addr: &str, credentials: Credentials) -> Self {
        let client = Endpoint::from_shared(format!("http://{addr}"))
            .ok()
            .map(|e| e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
            .map(|e| {
                RaftClient::new(e.connect_lazy())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            });
        PeerClient {
            node,
            addr: addr.to_string(),
            client,
            metadata: CallMetadata::new(&credentials),
        }
    }

    /// A request carrying the cluster's metadata.
    fn request<T>(&self, body: T) -> Result<tonic::Request<T>> {
        let metadata = self
            .metadata
            .as_ref()
            .map_err(|e| ReplicationError::Invalid(e.clone()))?;
        let mut req = tonic::Request::new(body);
        let md = req.metadata_mut();
        md.insert(CLUSTER_HEADER, metadata.cluster.clone());
        md.insert("authorization", metadata.authorization.clone());
        Ok(req)
    }

    /// The error a failed call reports.
    fn status_error(&self, status: tonic::Status) -> ReplicationError {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                ReplicationError::Refused {
                    addr: self.addr.clone(),
                    detail: status.message().to_string(),
                }
            }
            tonic::Code::InvalidArgument => ReplicationError::Invalid(status.message().to_string()),
            _ if never_connected(&status) => ReplicationError::NotSent {
                node: self.node,
                addr: self.addr.clone(),
                detail: status.message().to_string(),
            },
            _ => self.unreachable(status.message()),
        }
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> ReplicationError {
        ReplicationError::Unreachable {
            node: self.node,
            addr: self.addr.clone(),
            detail: detail.to_string(),
        }
    }

    /// One call: `body` out, the reply's bytes back.
    pub async fn call(&self, method: Method, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let Some(mut client) = self.client.clone() else {
            return Err(self.unreachable("not a valid address"));
        };
        let mut req = self.request(Payload { data: body })?;
        req.set_timeout(timeout);
        let call = async {
            match method {
                Method::AppendEntries => client.append_entries(req).await,
                Method::Vote => client.vote(req).await,
                Method::InstallSnapshot => client.install_snapshot(req).await,
                Method::Propose => client.propose(req).await,
                Method::Commit => client.commit(req).await,
                Method::ReadIndex => client.read_index(req).await,
                Method::Admin => client.admin(req).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(self.unreachable(format!("no answer within {timeout:?}"))),
            Ok(Ok(resp)) => Ok(resp.into_inner().data),
            Ok(Err(status)) => Err(self.status_error(status)),
        }
    }

    /// One exchange on the stream in `stream` (a `method` stream, opened first if there is
    /// none): `body` out, its answer back. Any failure closes the stream, so that a late
    /// answer is never taken for the next request's. An error opening the stream is the
    /// error a call would have had (`NotSent` if no connection could be made); once it is
    /// open, a failure is `Unreachable`: the request may have arrived.
    async fn exchange(
        &self,
        method: StreamMethod,
        stream: &mut Option<CallStream>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Exchanged> {
        let run = async {
            let request = Payload { data: body };
            let open = match stream.take() {
                Some(open) => {
                    if open.requests.send(request).await.is_err() {
                        return Err(self.unreachable("the stream closed"));
                    }
                    open
                }
                None => match self.open_stream(method, request).await? {
                    Some(open) => open,
                    None => return Ok(Exchanged::Unsupported),
                },
            };
            let open = stream.insert(open);
            match open.answers.message().await {
                Ok(Some(answer)) => Ok(Exchanged::Answer(answer.data)),
                Ok(None) => Err(self.unreachable("the stream closed")),
                Err(status) => Err(self.status_error(status)),
            }
        };
        let out = match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(self.unreachable(format!("no answer within {timeout:?}"))),
            Ok(out) => out,
        };
        if out.is_err() {
            *stream = None;
        }
        out
    }

    /// Open a `method` stream with `first` as its first request, sent with the call's
    /// headers rather than a round trip after them; `None` if the peer does not serve the
    /// stream (then nothing was handled).
    async fn open_stream(
        &self,
        method: StreamMethod,
        first: Payload,
    ) -> Result<Option<CallStream>> {
        let Some(mut client) = self.client.clone() else {
            return Err(self.unreachable("not a valid address"));
        };
        // One request in the channel at a time: each waits for its answer anyway.
        let (requests, rx) = mpsc::channel(1);
        if requests.try_send(first).is_err() {
            return Err(self.unreachable("the stream closed"));
        }
        let req = self.request(tokio_stream::wrappers::ReceiverStream::new(rx))?;
        let opened = match method {
            StreamMethod::Replicate => client.replicate(req).await,
            StreamMethod::Forward => client.forward(req).await,
        };
        match opened {
            Ok(resp) => Ok(Some(CallStream {
                requests,
                answers: resp.into_inner(),
            })),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(self.status_error(status)),
        }
    }
}

/// Ask the node at `addr` (any member) to run an admin request, passed on to the leader
/// when it must run there: what `strata cluster …` does.
pub async fn admin(
    addr: &str,
    credentials: &Credentials,
    req: &AdminRequest,
    timeout: Duration,
) -> Result<AdminReply> {
    let reply = PeerClient::new(0, addr, credentials.clone())
        .call(Method::Admin, encode(req)?, timeout)
        .await?;
    match decode::<std::result::Result<AdminReply, String>>(&reply)? {
        Ok(r) => Ok(r),
        Err(e) => Err(ReplicationError::Raft(e)),
    }
}

/// Whether a call failed because no connection could be made (so nothing was sent).
fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A node's clients to its peers, one per peer, shared by Raft's network and the node's own
/// calls (forwarded proposals, read indexes, admin requests).
pub struct Peers {
    credentials: Credentials,
    dial_via: BTreeMap<NodeId, String>,
    clients: Mutex<BTreeMap<NodeId, PeerClient>>,
    /// Whether each peer answers Raft's calls (for `strata cluster status`).
    answers: Mutex<BTreeMap<NodeId, Arc<Answers>>>,
}

/// Whether a peer answers Raft's calls. Answered calls — one per log entry sent — only read
/// a flag; the lock is taken when a call fails, and on the first answer after.
#[derive(Default)]
struct Answers {
    failing: std::sync::atomic::AtomicBool,
    /// Since when the calls have failed, and the last failure.
    unanswered: Mutex<Option<(std::time::Instant, String)>>,
}

impl Answers {
    fn record(&self, failure: Option<&ReplicationError>) {
        use std::sync::atomic::Ordering;
        if failure.is_none() && !self.failing.load(Ordering::Acquire) {
            return;
        }
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        match failure {
            None => *unanswered = None,
            Some(e) => {
                let since = unanswered.take().map(|(since, _)| since);
                *unanswered = Some((since.unwrap_or_else(std::time::Instant::now), e.to_string()));
            }
        }
        self.failing.store(unanswered.is_some(), Ordering::Release);
    }
}

impl Peers {
    /// Clients with `credentials`; peers in `dial_via` are reached at the address given
    /// there rather than the one they advertise.
    pub fn new(credentials: Credentials, dial_via: BTreeMap<NodeId, String>) -> Arc<Self> {
        Arc::new(Peers {
            credentials,
            dial_via,
            clients: Mutex::new(BTreeMap::new()),
            answers: Mutex::new(BTreeMap::new()),
        })
    }

    /// How long node `id` has not answered Raft's calls, and the last failure; `None` if
    /// its last call was answered (or none was made).
    pub fn unanswered(&self, id: NodeId) -> Option<(Duration, String)> {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)?
            .clone();
        let unanswered = answers.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        unanswered
            .as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }

    /// Where Raft's calls to node `id` record whether they were answered.
    fn answers(&self, id: NodeId) -> Arc<Answers> {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.entry(id).or_default().clone()
    }

    /// The client for node `id`, which advertises `addr`; a new one if the address changed.
    pub fn get(&self, id: NodeId, addr: &str) -> PeerClient {
        let addr = self.dial_via.get(&id).map(String::as_str).unwrap_or(addr);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&id) {
            Some(c) if c.addr == addr => c.clone(),
            _ => {
                let c = PeerClient::new(id, addr, self.credentials.clone());
                clients.insert(id, c.clone());
                c
            }
        }
    }
}

/// Makes Raft's clients to peers.
pub struct Network(pub Arc<Peers>);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            client: self.0.get(target, &node.raft_addr),
            link: StreamLink::new(StreamMethod::Replicate),
            answers: self.0.answers(target),
        }
    }
}

/// Raft's view of one peer.
pub struct Peer {
    client: PeerClient,
    /// Log entries go on a `Replicate` stream.
    link: StreamLink,
    /// Whether it answers (for `strata cluster status`).
    answers: Arc<Answers>,
}

type RpcResult<T, E> = std::result::Result<T, RPCError<NodeId, Member, E>>;

fn rpc_error<E: std::error::Error>(e: ReplicationError) -> RPCError<NodeId, Member, E> {
    match e {
        ReplicationError::Unreachable { .. } => {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
        }
        other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
    }
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self.client.call(method, body, option.hard_ttl()).await;
        self.answer(reply)
    }

    /// A peer's encoded answer, or the error it carries; whether it answered is recorded.
    fn answer<Resp, E>(&self, reply: crate::Result<Vec<u8>>) -> RpcResult<Resp, E>
    where
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        self.answers.record(reply.as_ref().err());
        let reply = reply.map_err(rpc_error)?;
        let decoded: std::result::Result<Resp, E> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.client.node, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let body = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self.link.send(&self.client, body, option.hard_ttl()).await;
        self.answer(reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.rpc(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.rpc(Method::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    //! Log entries over the `Replicate` stream, against a peer that answers by hand: answers
    //! keep the requests' order, a request left unanswered closes the stream (so its late
    //! answer is never taken for the next request's), and a peer without the stream gets
    //! unary calls.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::{CommittedLeaderId, LogId, Vote};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::proto::raft_server::{Raft as RaftRpc, RaftServer};

    type Answers =
        Pin<Box<dyn futures_util::Stream<Item = std::result::Result<Payload, Status>> + Send>>;

    /// The request for entries after index `after`.
    fn request(after: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), after)),
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    /// The answer the peer gives `req`: it names the request's index back.
    fn echo(req: &[u8]) -> Payload {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req).expect("a request");
        let answer: std::result::Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::PartialSuccess(rpc.prev_log_id));
        Payload {
            data: encode(&answer).expect("an answer"),
        }
    }

    fn index_of(req: &[u8]) -> Option<u64> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req).ok()?;
        rpc.prev_log_id.map(|l| l.index)
    }

    /// Index 99 is answered only once the stream's next request arrives, before that one.
    const HELD: u64 = 99;

    #[derive(Default)]
    struct Fake {
        unary_only: bool,
        streams_opened: AtomicUsize,
        unary_calls: AtomicUsize,
    }

    impl Fake {
        /// A stream whose answers `respond` gives: for each request, what to send now.
        fn stream_of(
            &self,
            req: Request<Streaming<Payload>>,
            mut respond: impl FnMut(Payload) -> Vec<Payload> + Send + 'static,
        ) -> std::result::Result<Response<Answers>, Status> {
            if self.unary_only {
                return Err(Status::unimplemented("an older node"));
            }
            self.streams_opened.fetch_add(1, Ordering::SeqCst);
            let mut requests = req.into_inner();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(msg)) = requests.message().await {
                    for answer in respond(msg) {
                        let _ = tx.send(Ok(answer)).await;
                    }
                }
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    #[tonic::async_trait]
    impl RaftRpc for Arc<Fake> {
        async fn append_entries(
            &self,
            req: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            self.unary_calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(echo(&req.into_inner().data)))
        }

        type ReplicateStream = Answers;

        async fn replicate(
            &self,
            req: Request<Streaming<Payload>>,
        ) -> std::result::Result<Response<Answers>, Status> {
            let mut held = None;
            self.stream_of(req, move |msg| {
                let mut out: Vec<Payload> = held.take().into_iter().collect();
                if index_of(&msg.data) == Some(HELD) {
                    held = Some(echo(&msg.data));
                } else {
                    out.push(echo(&msg.data));
                }
                out
            })
        }

        type ForwardStream = Answers;

        /// Each round's answer is the round itself.
        async fn forward(
            &self,
            req: Request<Streaming<Payload>>,
        ) -> std::result::Result<Response<Answers>, Status> {
            self.stream_of(req, |msg| vec![msg])
        }

        async fn vote(
            &self,
            _: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            Err(Status::unimplemented("not here"))
        }
        async fn install_snapshot(
            &self,
            _: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            Err(Status::unimplemented("not here"))
        }
        async fn propose(
            &self,
            _: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            Err(Status::unimplemented("not here"))
        }
        async fn commit(
            &self,
            req: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            self.unary_calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(req.into_inner()))
        }
        async fn read_index(
            &self,
            _: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            Err(Status::unimplemented("not here"))
        }
        async fn admin(
            &self,
            _: Request<Payload>,
        ) -> std::result::Result<Response<Payload>, Status> {
            Err(Status::unimplemented("not here"))
        }
    }

    /// Serve `fake` on a loopback port; a client for it, as node `id`.
    #[test]
    fn a_peer_is_not_answering_from_its_first_failure_until_it_answers_again() {
        let peers = Peers::new(credentials(), BTreeMap::new());
        let answers = peers.answers(2);
        let failure = |detail: &str| ReplicationError::Unreachable {
            node: 2,
            addr: "127.0.0.1:1".into(),
            detail: detail.into(),
        };
        answers.record(None);
        assert!(peers.unanswered(2).is_none(), "answered from the start");
        let since = || answers.unanswered.lock().unwrap().as_ref().map(|(s, _)| *s);
        answers.record(Some(&failure("refused")));
        let first = since().expect("not answering");
        answers.record(Some(&failure("timed out")));
        assert_eq!(since(), Some(first), "counted from the first failure");
        let (_, why) = peers.unanswered(2).expect("still not answering");
        assert!(why.contains("timed out"), "the last failure: {why}");
        // Another client for the same node (Raft makes one after errors) shares the record.
        peers.answers(2).record(None);
        assert!(peers.unanswered(2).is_none(), "answering again");
        assert!(peers.unanswered(3).is_none(), "a node never called");
    }

    async fn client_of(fake: Arc<Fake>, id: NodeId) -> PeerClient {
        let peer = peer_of(fake).await;
        PeerClient::new(id, &peer.client.addr, credentials())
    }

    fn credentials() -> Credentials {
        Credentials {
            cluster_id: "c".into(),
            secret: "s".into(),
        }
    }

    /// Serve `fake` on a loopback port; Raft's client for it.
    async fn peer_of(fake: Arc<Fake>) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address").to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(fake))
                .serve_with_incoming(incoming),
        );
        let credentials = credentials();
        let member = Member {
            raft_addr: addr,
            endpoints: BTreeMap::new(),
        };
        Network(Peers::new(credentials, BTreeMap::new()))
            .new_client(2, &member)
            .await
    }

    async fn send(peer: &mut Peer, after: u64, ttl: Duration) -> Option<u64> {
        let answer = peer
            .append_entries(request(after), RPCOption::new(ttl))
            .await;
        match answer {
            Ok(AppendEntriesResponse::PartialSuccess(Some(log))) => Some(log.index),
            _ => None,
        }
    }

    const TTL: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn answers_come_back_in_order_and_a_late_answer_never_pairs_with_the_next_request() {
        let fake = Arc::new(Fake::default());
        let mut peer = peer_of(fake.clone()).await;
        for after in [1, 2, 3] {
            assert_eq!(send(&mut peer, after, TTL).await, Some(after));
        }
        assert_eq!(
            fake.streams_opened.load(Ordering::SeqCst),
            1,
            "one stream serves every exchange"
        );

        // No answer until the stream's next request: the exchange gives up…
        assert_eq!(
            send(&mut peer, HELD, Duration::from_millis(200)).await,
            None
        );
        // …and the next request goes on a new stream, so it gets its own answer, not 99's.
        assert_eq!(send(&mut peer, 5, TTL).await, Some(5));
        assert_eq!(fake.streams_opened.load(Ordering::SeqCst), 2);
        assert_eq!(fake.unary_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_single_calls() {
        let fake = Arc::new(Fake {
            unary_only: true,
            ..Fake::default()
        });
        let mut peer = peer_of(fake.clone()).await;
        for after in [1, 2] {
            assert_eq!(send(&mut peer, after, TTL).await, Some(after));
        }
        assert_eq!(fake.unary_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn rounds_of_commits_share_a_stream_while_the_leader_stays_the_same() {
        let (a, b) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
        let (leader_a, leader_b) = (client_of(a.clone(), 1).await, client_of(b.clone(), 2).await);
        let mut link = StreamLink::new(StreamMethod::Forward);
        for round in [&b"one"[..], b"two", b"three"] {
            let answer = link
                .send(&leader_a, round.to_vec(), TTL)
                .await
                .expect("answered");
            assert_eq!(answer, round);
        }
        assert_eq!(a.streams_opened.load(Ordering::SeqCst), 1);
        // A new leader: a stream to it.
        let answer = link
            .send(&leader_b, b"four".to_vec(), TTL)
            .await
            .expect("answered");
        assert_eq!(answer, b"four");
        assert_eq!(b.streams_opened.load(Ordering::SeqCst), 1);
        assert_eq!(
            a.unary_calls.load(Ordering::SeqCst) + b.unary_calls.load(Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn a_leader_without_the_stream_gets_single_commit_calls() {
        let fake = Arc::new(Fake {
            unary_only: true,
            ..Fake::default()
        });
        let leader = client_of(fake.clone(), 1).await;
        let mut link = StreamLink::new(StreamMethod::Forward);
        for round in [&b"one"[..], b"two"] {
            let answer = link
                .send(&leader, round.to_vec(), TTL)
                .await
                .expect("answered");
            assert_eq!(answer, round);
        }
        assert_eq!(fake.unary_calls.load(Ordering::SeqCst), 2);
    }
}
