//! What the Raft log carries: the engine's batches, and the creation and removal of
//! databases, all in one order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_engine::{BatchOp, Durability, Precondition};

/// One entry's request, applied by every replica's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Make the database if it does not exist (idempotent).
    CreateDatabase { name: String },
    /// Remove the database and its data (idempotent).
    DropDatabase { name: String },
    /// The engine's batch for one database: applied only if the precondition holds.
    Batch {
        database: String,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    },
}

/// What applying a command did, the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// The batch's precondition did not hold; nothing was written.
    PreconditionFailed,
    /// The batch names a database that does not exist (dropped meanwhile).
    NoDatabase,
}

/// A cluster member as the others see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the node's Raft listener.
    pub raft_addr: String,
    /// The node's client-facing endpoints by frontend (`kv-connect` → `http://…`), so that
    /// any node can list every replica to clients.
    pub endpoints: BTreeMap<String, String>,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raft_addr)
    }
}
