//! The commit-log seam: where a resolved, sequenced batch goes to become durable and visible.
//!
//! Single-node, the log *is* the backend: [`LocalLog`] applies the batch to the store in one
//! atomic write. A replicated deployment substitutes a log that proposes the batch to its
//! consensus group and returns once the local replica has applied it; every replica applies
//! the same ops at the same version, so the engine above never knows the difference.

use std::sync::Arc;

use crate::backend::{BatchOp, Durability, Precondition, Store};
use crate::error::Result;

/// One sequenced batch: the ops of every commit in a group, and the database version after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The database version once this entry is applied (unchanged for maintenance-only entries).
    pub version: u64,
    pub ops: Vec<BatchOp>,
    pub durability: Durability,
    /// Apply only if the store still holds what this process last saw (several processes
    /// sharing a store); `None` for single-writer stores.
    pub precondition: Option<Precondition>,
}

#[async_trait::async_trait]
pub trait CommitLog: Send + Sync + 'static {
    /// Make `entry` durable (as its durability says) and visible to readers of the store,
    /// atomically. Entries arrive in version order: one at a time, unless the store orders
    /// appends ([`crate::Store::orders_appends`]), when the next may arrive (conditioned on
    /// this one's version record) while this one is still being applied.
    async fn append(&self, entry: LogEntry) -> Result<()>;
}

/// Builds the commit log of a database from its name and store.
pub type CommitLogFactory = Arc<dyn Fn(&str, Arc<dyn Store>) -> Arc<dyn CommitLog> + Send + Sync>;

/// The single-node log: the backend's own atomic batch write.
pub struct LocalLog {
    store: Arc<dyn Store>,
}

impl LocalLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        LocalLog { store }
    }
}

#[async_trait::async_trait]
impl CommitLog for LocalLog {
    async fn append(&self, entry: LogEntry) -> Result<()> {
        self.store
            .apply(entry.ops, entry.durability, entry.precondition)
            .await?;
        Ok(())
    }
}
