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
    /// The log's entries in log files rather than in the store.
    files: bool,
}

impl Builder {
    /// As a node on redb builds them: the log's entries in files.
    async fn on_redb() -> (tempfile::TempDir, LogStore, StateMachine) {
        Builder {
            redb: true,
            files: true,
        }
        .build()
        .await
        .expect("a log store and a state machine")
    }
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
        let log = match self.files {
            true => LogStore::with_files(raft_db.clone(), &dir.path().join("raft-log")).await?,
            false => LogStore::new(raft_db.clone()),
        };
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
    Suite::test_all(Builder {
        redb: false,
        files: false,
    })
    .expect("the storage suite passes");
}

#[test]
fn openraft_storage_suite_on_redb() {
    Suite::test_all(Builder {
        redb: true,
        files: false,
    })
    .expect("the storage suite passes");
}

#[test]
fn openraft_storage_suite_on_redb_with_log_files() {
    Suite::test_all(Builder {
        redb: true,
        files: true,
    })
    .expect("the storage suite passes");
}

/// A received snapshot that ends early is refused whole: nothing of it is installed, and the
/// state machine keeps what it had.
#[tokio::test]
async fn a_truncated_snapshot_is_refused_and_changes_nothing() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use strata_engine::{BatchOp, Durability};
    use strata_replication::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_g1, _log1, mut source) = Builder::on_redb().await;
    let (_g2, _log2, mut target) = Builder::on_redb().await;
    let entry = |index: u64, cmd: Command| openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(cmd),
    };
    let batch = |k: &[u8]| Command::Batch {
        database: "d".into(),
        ops: vec![BatchOp::Put(k.to_vec(), b"v".to_vec())],
        durability: Durability::Sync,
        precondition: None,
    };
    source
        .apply(vec![
            entry(1, Command::CreateDatabase { name: "d".into() }),
            entry(2, batch(b"from-the-snapshot")),
        ])
        .await
        .unwrap();
    target
        .apply(vec![
            entry(1, Command::CreateDatabase { name: "d".into() }),
            entry(2, batch(b"already-here")),
        ])
        .await
        .unwrap();
    let before = target.applied_state().await.unwrap();

    let mut snap = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    snap.snapshot.read_to_end(&mut bytes).await.unwrap();
    let mut received = target.begin_receiving_snapshot().await.unwrap();
    received.write_all(&bytes[..bytes.len() - 7]).await.unwrap();
    let refused = target.install_snapshot(&snap.meta, received).await;
    assert!(refused.is_err(), "a truncated snapshot was installed");
    assert!(
        format!("{:?}", refused.unwrap_err()).contains("truncated"),
        "the error says why"
    );
    assert_eq!(target.applied_state().await.unwrap(), before);
    let store = target.replica().store("d", false).await.unwrap().unwrap();
    assert!(store.get(b"already-here").await.unwrap().is_some());
    assert!(store.get(b"from-the-snapshot").await.unwrap().is_none());

    // The whole file installs.
    let mut received = target.begin_receiving_snapshot().await.unwrap();
    received.write_all(&bytes).await.unwrap();
    target.install_snapshot(&snap.meta, received).await.unwrap();
    let store = target.replica().store("d", false).await.unwrap().unwrap();
    assert!(store.get(b"from-the-snapshot").await.unwrap().is_some());
    assert!(store.get(b"already-here").await.unwrap().is_none());
}

/// Batches of one apply call are written together, but each is still judged in turn: a
/// precondition sees the writes of the batches before it in the same call, a batch whose
/// precondition fails writes nothing (and so neither does one conditioned on it), and
/// replaying the same entries after they applied changes nothing.
#[tokio::test]
async fn batches_applied_together_are_each_checked_in_turn() {
    use openraft::storage::RaftStateMachine;
    use strata_engine::{BatchOp, Durability, Precondition};
    use strata_replication::{Applied, Command};

    let (_g, _log, mut sm) = Builder::on_redb().await;
    let entry = |index: u64, cmd: Command| openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(cmd),
    };
    // Writes `key` and moves "head" from `after` to `to`.
    let batch = |key: &[u8], after: Option<&[u8]>, to: &[u8]| Command::Batch {
        database: "d".into(),
        ops: vec![
            BatchOp::Put(b"head".to_vec(), to.to_vec()),
            BatchOp::Put(key.to_vec(), b"v".to_vec()),
        ],
        durability: Durability::Sync,
        precondition: Some(Precondition {
            key: b"head".to_vec(),
            expected: after.map(<[u8]>::to_vec),
        }),
    };
    let entries = vec![
        entry(1, Command::CreateDatabase { name: "d".into() }),
        entry(2, batch(b"a", None, b"1")),
        entry(3, batch(b"b", Some(b"1"), b"2")),
        entry(4, batch(b"lost", Some(b"1"), b"x")),
        entry(5, batch(b"after-lost", Some(b"x"), b"y")),
        entry(6, batch(b"c", Some(b"2"), b"3")),
    ];
    let applied = sm.apply(entries.clone()).await.unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Done,
            Applied::Done,
            Applied::Done,
            Applied::PreconditionFailed,
            Applied::PreconditionFailed,
            Applied::Done,
        ]
    );
    let store = sm.replica().store("d", false).await.unwrap().unwrap();
    assert_eq!(store.get(b"head").await.unwrap(), Some(b"3".to_vec()));
    for (key, present) in [
        (&b"a"[..], true),
        (b"b", true),
        (b"c", true),
        (b"lost", false),
        (b"after-lost", false),
    ] {
        assert_eq!(store.get(key).await.unwrap().is_some(), present, "{key:?}");
    }
    // A replay of entries already applied (a restart before the log's end was recorded).
    store
        .apply(vec![BatchOp::Delete(b"a".to_vec())], Durability::Sync, None)
        .await
        .unwrap();
    sm.apply(entries[1..].to_vec()).await.unwrap();
    assert_eq!(
        store.get(b"a").await.unwrap(),
        None,
        "entry 2 was applied twice"
    );
    assert_eq!(store.get(b"head").await.unwrap(), Some(b"3".to_vec()));
}

/// A snapshot is due after `every` entries while the data is small, but once the last
/// snapshot is large, only when the entries since it wrote a quarter of its size: building a
/// snapshot of a large database after every few small writes would cost more than the log it
/// saves. Applied entries count toward the next snapshot from the moment one is taken.
#[tokio::test]
async fn a_snapshot_is_due_by_entries_and_by_bytes_written_since_the_last() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use strata_engine::{BatchOp, Durability};
    use strata_replication::Command;

    let (_g, _log, mut sm) = Builder::on_redb().await;
    let due = sm.snapshot_due();
    assert!(
        !sm.snapshot_schedule().is_due(),
        "never due until scheduled"
    );
    sm.snapshot_every(3);
    let mut index = 0;
    let mut entry = |cmd: Command| {
        index += 1;
        openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(cmd),
        }
    };
    // One put of `n` bytes of value under key `k`.
    let put = |k: u32, n: usize| Command::Batch {
        database: "d".into(),
        ops: vec![BatchOp::Put(k.to_be_bytes().to_vec(), vec![7; n])],
        durability: Durability::Sync,
        precondition: None,
    };

    sm.apply(vec![entry(Command::CreateDatabase { name: "d".into() })])
        .await
        .unwrap();
    sm.apply(vec![entry(put(0, 10))]).await.unwrap();
    assert!(!sm.snapshot_schedule().is_due(), "two entries of three");
    sm.apply(vec![entry(put(1, 10))]).await.unwrap();
    assert!(
        sm.snapshot_schedule().is_due(),
        "no snapshot yet: entries alone decide"
    );
    tokio::time::timeout(std::time::Duration::from_secs(20), due.notified())
        .await
        .expect("the node is told a snapshot is due");

    // 400 KB of data, then a snapshot of it.
    let big: Vec<_> = (2..402).map(|k| entry(put(k, 1000))).collect();
    sm.apply(big).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(snapshot);
    let schedule = sm.snapshot_schedule();
    assert_eq!((schedule.entries, schedule.bytes), (0, 0));
    assert!(schedule.last_size > 400_000, "{schedule:?}");

    // Many small entries are not worth a new copy of 400 KB…
    let small: Vec<_> = (1000..1100).map(|k| entry(put(k, 10))).collect();
    sm.apply(small).await.unwrap();
    let schedule = sm.snapshot_schedule();
    assert!(
        schedule.entries >= 100 && !schedule.is_due(),
        "{schedule:?}"
    );
    // …until they add up to a quarter of it.
    let more: Vec<_> = (2000..2100).map(|k| entry(put(k, 1000))).collect();
    sm.apply(more).await.unwrap();
    assert!(
        sm.snapshot_schedule().is_due(),
        "{:?}",
        sm.snapshot_schedule()
    );
}
