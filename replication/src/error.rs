//! The replication crate's errors. At the engine boundary they become
//! [`BackendError`](strata_engine::BackendError)s: whether a retry may help decides which.

use strata_engine::BackendError;

use crate::NodeId;

pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// No leader is known right now (an election is under way, or no quorum is reachable).
    #[error("the cluster has no leader right now: {0}")]
    NoLeader(String),
    /// A peer could not be reached, or did not answer in time. The request may or may not
    /// have taken effect.
    #[error("node {node} ({addr}) is unreachable: {detail}")]
    Unreachable {
        node: NodeId,
        addr: String,
        detail: String,
    },
    /// A peer could not be connected to: the request was never sent, so it is safe to
    /// send again (to this node once it is back, or to another).
    #[error("cannot connect to node {node} ({addr}): {detail}")]
    NotSent {
        node: NodeId,
        addr: String,
        detail: String,
    },
    /// A peer refused us: another cluster, or the wrong secret.
    #[error("refused by {addr}: {detail}")]
    Refused { addr: String, detail: String },
    #[error("invalid cluster request: {0}")]
    Invalid(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("storage: {0}")]
    Storage(#[from] BackendError),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node's Raft stopped on a failure of its own (its storage failed: a full disk,
    /// say). It serves nothing that needs the cluster until it is restarted.
    #[error(
        "this node has stopped taking part in the cluster (restart it once the cause is \
         fixed; the other nodes serve meanwhile): {0}"
    )]
    Halted(String),
}

impl From<ReplicationError> for BackendError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Storage(b) => b,
            // Transient: the engine settles whether a batch applied and retries.
            ReplicationError::NoLeader(_)
            | ReplicationError::Unreachable { .. }
            | ReplicationError::NotSent { .. }
            | ReplicationError::ShuttingDown => BackendError::Unavailable(e.to_string()),
            // Not cured by asking again: the node's storage failed.
            ReplicationError::Halted(_) => BackendError::Io(e.to_string()),
            other => BackendError::Other(other.to_string()),
        }
    }
}

/// Encode a message for the wire (postcard).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| ReplicationError::Invalid(format!("encode: {e}")))
}

/// Decode a message from the wire; a malformed one is an error, never a panic.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| ReplicationError::Invalid(format!("malformed message: {e}")))
}
