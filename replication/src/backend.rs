//! What the engine runs over on a cluster node: every database, as a store shared with the
//! other nodes' engines.
//!
//! Reads go to this node's copy. A batch ([`Store::apply`]) becomes a Raft proposal and
//! returns once it is committed and applied here, with the state machine's verdict on its
//! precondition. Creating and dropping a database are proposals too, so every node holds
//! the same databases.

use std::sync::Arc;

use strata_engine::{
    Backend, BackendError, BatchOp, Capabilities, Durability, Precondition, Store,
};

use crate::command::{Applied, Command};
use crate::node::Node;

pub struct ReplicatedBackend {
    node: Arc<Node>,
}

impl ReplicatedBackend {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        ReplicatedBackend { node }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    async fn local(&self, name: &str) -> Result<Option<Arc<dyn Store>>, BackendError> {
        self.node.replica().store(name, false).await
    }
}

#[async_trait::async_trait]
impl Backend for ReplicatedBackend {
    fn describe(&self) -> String {
        format!(
            "{} (replicated: node {})",
            self.node.replica().backend().describe(),
            self.node.id()
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Every node's engine writes: to each, the others are other processes.
            multi_process: true,
            persistent: self.node.replica().backend().capabilities().persistent,
        }
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        if self.local(name).await?.is_none() {
            if create {
                self.node
                    .propose(Command::CreateDatabase {
                        name: name.to_string(),
                    })
                    .await?;
            } else {
                // Created elsewhere a moment ago, perhaps: catch up before saying no.
                self.node.read_barrier().await?;
            }
            if self.local(name).await?.is_none() {
                return Err(BackendError::NotFound);
            }
        }
        // The flag is taken once the database exists (names that never do get none), and
        // the database looked up again after it: a drop in between is then either seen here
        // or marked on the flag.
        let dropped = self.node.replica().dropped_flag(name);
        if self.local(name).await?.is_none() {
            return Err(BackendError::NotFound);
        }
        Ok(Arc::new(ReplicatedStore {
            node: self.node.clone(),
            name: name.to_string(),
            dropped,
        }))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        self.node.replica().names().await
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        let existed = self.local(name).await?.is_some();
        self.node
            .propose(Command::DropDatabase {
                name: name.to_string(),
            })
            .await?;
        Ok(existed)
    }
}

/// One database as the engine sees it on a cluster node.
pub struct ReplicatedStore {
    node: Arc<Node>,
    name: String,
    /// Set once the database this handle opened is dropped ([`crate::Replica::dropped_flag`]).
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl ReplicatedStore {
    /// The local copy, looked up on every call: a snapshot install or a drop may replace it.
    /// Once the database was dropped, this handle finds nothing, even if a database of the
    /// same name was made since.
    async fn local(&self) -> Result<Arc<dyn Store>, BackendError> {
        if self.dropped() {
            return Err(BackendError::NotFound);
        }
        self.node
            .replica()
            .store(&self.name, false)
            .await?
            .ok_or(BackendError::NotFound)
    }
}

#[async_trait::async_trait]
impl Store for ReplicatedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.local().await?.get(key).await
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        self.local().await?.scan(start, end, reverse, limit).await
    }

    async fn scan_each(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
    ) -> Result<usize, BackendError> {
        self.local().await?.scan_each(start, end, limit, f).await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.local().await?.get_many(keys).await
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        let proposed = self
            .node
            .propose(Command::Batch {
                database: self.name.clone(),
                ops,
                durability,
                precondition,
            })
            .await?;
        match proposed.applied {
            Applied::Done => Ok(()),
            Applied::PreconditionFailed => Err(BackendError::PreconditionFailed),
            Applied::NoDatabase => Err(BackendError::NotFound),
        }
    }

    async fn sync(&self) -> Result<(), BackendError> {
        // Everything applied came through the Raft log, which a quorum has synced.
        Ok(())
    }

    async fn read_barrier(&self) -> Result<(), BackendError> {
        self.node.read_barrier().await.map_err(Into::into)
    }

    fn dropped(&self) -> bool {
        self.dropped.load(std::sync::atomic::Ordering::Acquire)
    }

    fn orders_appends(&self) -> bool {
        // Proposals enter the Raft log in the order `propose` is first polled (openraft
        // queues a client write before it first waits); one forwarded from a follower may
        // overtake another, which then fails its condition and is resolved again.
        true
    }

    fn forwards_commits(&self) -> bool {
        self.node.forwards_commits()
    }

    async fn forward_commit(&self, request: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if self.dropped() {
            return Err(BackendError::NotFound);
        }
        self.node.forward_commit(&self.name, request).await
    }

    fn runs_upkeep(&self) -> bool {
        // The leader sweeps and collects for the whole cluster; the others would only race
        // it on the version record.
        self.node.is_leader()
    }
}
