//! Calling other nodes: one gRPC client per peer, every call carrying the cluster id and the
//! shared secret, with openraft's messages as postcard payloads.

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
    credentials: Credentials,
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
            credentials,
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
        let mut req = tonic::Request::new(Payload { data: body });
        req.set_timeout(timeout);
        let md = req.metadata_mut();
        let cluster = self.credentials.cluster_id.parse().map_err(|_| {
            ReplicationError::Invalid("the cluster id is not a valid header".into())
        })?;
        md.insert(CLUSTER_HEADER, cluster);
        let auth = format!("Bearer {}", self.credentials.secret)
            .parse()
            .map_err(|_| {
                ReplicationError::Invalid("the cluster secret is not a valid header".into())
            })?;
        md.insert("authorization", auth);
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
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    ReplicationError::Refused {
                        addr: self.addr.clone(),
                        detail: status.message().to_string(),
                    }
                }
                tonic::Code::InvalidArgument => {
                    ReplicationError::Invalid(status.message().to_string())
                }
                _ if never_connected(&status) => ReplicationError::NotSent {
                    node: self.node,
                    addr: self.addr.clone(),
                    detail: status.message().to_string(),
                },
                _ => self.unreachable(status.message()),
            }),
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
}

impl Peers {
    /// Clients with `credentials`; peers in `dial_via` are reached at the address given
    /// there rather than the one they advertise.
    pub fn new(credentials: Credentials, dial_via: BTreeMap<NodeId, String>) -> Arc<Self> {
        Arc::new(Peers {
            credentials,
            dial_via,
            clients: Mutex::new(BTreeMap::new()),
        })
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
        }
    }
}

/// Raft's view of one peer.
pub struct Peer {
    client: PeerClient,
}

type RpcResult<T, E> = std::result::Result<T, RPCError<NodeId, Member, E>>;

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
        let reply = self
            .client
            .call(method, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                ReplicationError::Unreachable { .. } => {
                    RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
                }
                other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
            })?;
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
        self.rpc(Method::AppendEntries, &rpc, &option).await
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
