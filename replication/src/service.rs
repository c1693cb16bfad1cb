//! The gRPC service every node serves to the others. Handlers are thin: check who is
//! calling, decode, hand the message to Raft or the node, encode the answer. A call from
//! another cluster or with the wrong secret is refused before it is decoded.

use std::pin::Pin;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::command::Command;
use crate::error::{decode, encode};
use crate::network::{AdminRequest, CommitRequest, CLUSTER_HEADER, MAX_MESSAGE};
use crate::node::Node;
use crate::proto::raft_server::{Raft as RaftRpc, RaftServer};
use crate::proto::Payload;
use crate::{NodeId, TypeConfig};

pub(crate) struct RaftService {
    node: Arc<Node>,
}

/// Serve the Raft service on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = RaftServer::new(RaftService { node })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // No Nagle on accepted connections: a gRPC answer is several writes (headers, data,
    // trailers), and holding the later ones for the peer's delayed ACK costs 40 ms a call.
    // (The builder's `tcp_nodelay` reaches only listeners it binds itself.)
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
    {
        tracing::error!(error = %e, "the Raft listener stopped");
    }
}

/// Constant-time comparison, so that the secret cannot be guessed byte by byte from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl RaftService {
    fn admit(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let creds = self.node.credentials();
        let cluster = metadata
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if cluster != creds.cluster_id {
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster {:?}, not {cluster:?}",
                creds.cluster_id
            )));
        }
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(token.as_bytes(), creds.secret.as_bytes()) {
            return Err(Status::unauthenticated("wrong cluster secret"));
        }
        Ok(())
    }

    fn open<T: serde::de::DeserializeOwned>(&self, req: Request<Payload>) -> Result<T, Status> {
        self.admit(req.metadata())?;
        decoded(&req.into_inner().data)
    }

    /// [`RaftService::open`] for a call that takes part in the cluster's work: refused while
    /// this node's Raft has stopped (see [`in_service`]), once the caller is admitted.
    fn open_raft<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Payload>,
    ) -> Result<T, Status> {
        let message = self.open(req)?;
        in_service(&self.node)?;
        Ok(message)
    }

    /// A stream of exchanges whose requests (each a `T`) `handle` answers, once the caller is
    /// admitted (see [`exchanges`]).
    fn stream<T, F, Fut>(
        &self,
        req: Request<Streaming<Payload>>,
        handle: F,
    ) -> Result<Response<Answers>, Status>
    where
        T: serde::de::DeserializeOwned + Send,
        F: Fn(Arc<Node>, T) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Payload, Status>> + Send,
    {
        self.admit(req.metadata())?;
        in_service(&self.node)?;
        Ok(Response::new(exchanges(
            self.node.clone(),
            req.into_inner(),
            handle,
        )))
    }
}

/// A node whose Raft stopped on a storage failure answers the others' Raft traffic with why,
/// rather than hand it to a Raft that fails (and logs) every message: they then back off
/// from it as from a node that is down. (Its admin calls are still served, so `strata
/// cluster status` shows it.)
fn in_service(node: &Node) -> Result<(), Status> {
    match node.halted() {
        None => Ok(()),
        Some(why) => Err(Status::unavailable(format!(
            "node {} has stopped taking part in the cluster: {why}",
            node.id()
        ))),
    }
}

fn decoded<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, Status> {
    decode(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    payload(value).map(Response::new)
}

fn payload<T: serde::Serialize>(value: &T) -> Result<Payload, Status> {
    encode(value)
        .map(|data| Payload { data })
        .map_err(|e| Status::internal(e.to_string()))
}

/// The answers of a stream of exchanges.
type Answers = Pin<Box<dyn futures_util::Stream<Item = Result<Payload, Status>> + Send>>;

/// The answers to a stream of requests: each request is decoded and handled once the answer
/// to the one before it has been sent, so answers keep the requests' order. A request that
/// fails (one that does not decode) ends the stream with its error (the caller opens a new
/// one); so does this node's shutdown, which would otherwise wait for the caller to close
/// the stream.
fn exchanges<T, F, Fut>(node: Arc<Node>, requests: Streaming<Payload>, handle: F) -> Answers
where
    T: serde::de::DeserializeOwned + Send,
    F: Fn(Arc<Node>, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Payload, Status>> + Send,
{
    let stopping = node.stopping();
    let handle = Arc::new(handle);
    let state = Some((node, requests, stopping, handle));
    Box::pin(futures_util::stream::unfold(state, |state| async move {
        let (node, mut requests, mut stopping, handle) = state?;
        let next = tokio::select! {
            next = requests.message() => next,
            _ = stopping.wait_for(|s| *s) => {
                return Some((Err(Status::unavailable("the node is shutting down")), None));
            }
        };
        let msg = match next {
            Ok(Some(msg)) => msg,
            Ok(None) => return None,
            Err(status) => return Some((Err(status), None)),
        };
        let answer = match in_service(&node).and_then(|()| decoded(&msg.data)) {
            Ok(req) => handle(node.clone(), req).await,
            Err(status) => Err(status),
        };
        match answer {
            Ok(answer) => Some((Ok(answer), Some((node, requests, stopping, handle)))),
            Err(status) => Some((Err(status), None)),
        }
    }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open_raft(req)?;
        reply(&self.node.raft().append_entries(rpc).await)
    }

    type ReplicateStream = Answers;

    /// Log entries, one `AppendEntries` after another (see [`exchanges`]).
    async fn replicate(
        &self,
        req: Request<Streaming<Payload>>,
    ) -> Result<Response<Answers>, Status> {
        self.stream(
            req,
            |node, rpc: AppendEntriesRequest<TypeConfig>| async move {
                payload(&node.raft().append_entries(rpc).await)
            },
        )
    }

    type ForwardStream = Answers;

    /// Rounds of forwarded commits, one after another (see [`exchanges`]).
    async fn forward(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        self.stream(req, |node, commits: Vec<CommitRequest>| async move {
            payload(&node.commit_forwarded(commits).await)
        })
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = self.open_raft(req)?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.open_raft(req)?;
        let res: Result<_, RaftError<NodeId, InstallSnapshotError>> =
            self.node.raft().install_snapshot(rpc).await;
        reply(&res)
    }

    async fn propose(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let cmd: Command = self.open_raft(req)?;
        reply(&self.node.propose_forwarded(cmd).await)
    }

    async fn commit(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let commits: Vec<CommitRequest> = self.open_raft(req)?;
        reply(&self.node.commit_forwarded(commits).await)
    }

    async fn read_index(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.admit(req.metadata())?;
        in_service(&self.node)?;
        reply(&self.node.read_index_forwarded().await)
    }

    async fn admin(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let admin: AdminRequest = self.open(req)?;
        // Run here, or passed on to the leader when it must run there.
        let out = self.node.admin(admin).await.map_err(|e| e.to_string());
        reply(&out)
    }
}
