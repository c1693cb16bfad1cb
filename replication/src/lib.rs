//! Replication: one engine instance copied onto every node of a Raft group (openraft over
//! tonic).
//!
//! Every node runs the whole engine over a [`ReplicatedBackend`]. To the engine that backend
//! is a store *shared with other writers* — exactly what DynamoDB is to several processes —
//! so the engine already does the right thing: each node resolves its commits against its
//! own copy, conditions each batch on the database's version record, and when another node
//! won the race it learns that node's commits and resolves again. What replication adds is
//! where a batch goes: [`Store::apply`](strata_engine::Store::apply) on a replicated store
//! proposes the batch through Raft (from a follower, via the leader), and the **state
//! machine** ([`state_machine`]) applies it on every node, at the same log position, with
//! the same precondition check. So every replica applies the same batches in the same order,
//! the engine above never knows it is replicated, and a batch whose answer was lost (a
//! leader change mid-commit) is settled by the engine's own write-set check: retried at most
//! once-effective, never applied twice.
//!
//! The invariants:
//!
//! * **One order.** The Raft log orders every batch of every database; a replica's state is
//!   a function of the log prefix it has applied. Each database remembers the last log index
//!   applied to it in the same atomic write as the data, so replaying the log after a crash
//!   applies each entry exactly once.
//! * **Acknowledged means replicated.** A batch is acknowledged only after a quorum has it
//!   in its log (fsynced), and after the proposing node has applied it, so that node's next
//!   read sees it.
//!
//! Reads: a *strong* read ([`Store::read_barrier`](strata_engine::Store::read_barrier)) asks
//! the leader for its commit index after the leader confirmed its leadership with a quorum
//! (Raft's read-index), then waits until this node has applied that far: linearizable from
//! any node. An *eventual* read ([`Database::eventual`](strata_engine::Database::eventual))
//! reads this node's copy as it is.
//!
//! Where to look next: [`store`] (the Raft log and vote) and [`log_file`] (the log's entries on
//! disk), [`state_machine`] and
//! [`snapshot`] (applying, and copying a whole node), [`network`] and [`service`] (gRPC
//! between nodes, with the cluster secret), [`node`] (starting a node, membership, status),
//! [`backend`] (what the engine sees).

// openraft's storage traits fix `StorageError` (a large enum) as the error type of every
// storage call; boxing it here would only add a conversion at each trait boundary.
#![allow(clippy::result_large_err)]

pub mod backend;
pub mod command;
pub mod error;
pub mod log_file;
pub mod network;
pub mod node;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod store;

mod proto {
    tonic::include_proto!("strata.raft.v1");
}

pub use backend::ReplicatedBackend;
pub use command::{Applied, Command, Member};
pub use error::{ReplicationError, Result};
pub use node::{ClusterConfig, ClusterStatus, Node, NodeStatus};

/// Nodes are numbered by the operator: `--node-id 1`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The types Raft is instantiated with: Strata's commands and nodes, snapshots as files.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig>;
