//! openraft's own storage test suite, run against Strata's Raft log store and state machine
//! (over the memory backend, and over redb files).

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_engine::Backend;
use strata_replication::state_machine::{Replica, StateMachine};
use strata_replication::store::{LogStore, RAFT_DB};
use strata_replication::{NodeId, TypeConfig};

struct Builder {
    redb: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let backend: Arc<dyn Backend> = if self.redb {
            Arc::new(strata_backend_redb::RedbBackend::new(
                dir.path().join("data"),
            ))
        } else {
            Arc::new(strata_backend_memory::MemoryBackend::new())
        };
        let raft_db = backend.open(RAFT_DB, true).await.expect("the raft store");
        let log = LogStore::new(raft_db.clone());
        let sm = StateMachine::open(
            Replica::new(backend),
            raft_db,
            &dir.path().join("snapshots"),
        )
        .await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_the_memory_backend() {
    Suite::test_all(Builder { redb: false }).expect("the storage suite passes");
}

#[test]
fn openraft_storage_suite_on_redb() {
    Suite::test_all(Builder { redb: true }).expect("the storage suite passes");
}
