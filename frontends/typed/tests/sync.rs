//! Sync in one process, over loopback TCP: a server and two followed replicas; a record
//! inserted on one becomes an event on the other, one after another.

#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::Duration;

use strata_engine::{Database, Engine, EngineConfig};
use strata_typed::sync::{serve, Replica, ReplicaOptions, Tokens};
use strata_typed::{record, EventKind};

#[record(tree = "bins", version = 1)]
#[derive(Debug, Clone, PartialEq)]
struct Bin {
    label: String,
}

async fn database() -> Database {
    let engine: &'static Engine = Box::leak(Box::new(Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::new()),
        EngineConfig::default(),
    )));
    engine.open_or_create("typed").await.unwrap()
}

async fn replica(url: &str, token: &str) -> Replica {
    let r = Replica::open(database().await, ReplicaOptions::new(url, token))
        .await
        .unwrap();
    r.tree::<Bin>();
    r.sync().await.unwrap();
    r
}

/// A server on a free loopback port, and Ann's and Bob's replicas of it, synced once.
async fn two_replicas() -> (Replica, Replica) {
    let tokens = Tokens::parse(&["ann:ann-token-1234", "bob:bob-token-5678"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        database().await,
        tokens,
        listener,
        std::future::pending(),
    ));
    (
        replica(&url, "ann-token-1234").await,
        replica(&url, "bob-token-5678").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_replicas_hear_each_other() {
    let (ann, bob) = two_replicas().await;
    let theirs = bob.tree::<Bin>();
    let mut events = theirs.events(theirs.cursor().await.unwrap());
    let following = [ann.follow(), bob.follow()];
    let mine = ann.tree::<Bin>();
    for i in 0..20 {
        let id = mine
            .insert(&Bin {
                label: format!("B{i}"),
            })
            .await
            .unwrap()
            .id();
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap_or_else(|_| panic!("insert {i} (id {id}) never reached the other replica"))
            .unwrap();
        assert_eq!((e.id, e.kind), (id, EventKind::Created { revision: 0 }));
    }
    // Once any push in flight is settled, nothing is left to push.
    let report = ann.sync().await.unwrap();
    assert!(report.refused.is_empty());
    assert_eq!(ann.dirty().await.unwrap(), 0);
    for f in following {
        f.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_in_publishes_the_changes_first() {
    let (ann, bob) = two_replicas().await;
    let mine = ann.tree::<Bin>();
    let k = mine.insert(&Bin { label: "A1".into() }).await.unwrap();
    ann.sync().await.unwrap();
    mine.check_out(k.id(), Duration::from_secs(60), strata_typed::Wait::No)
        .await
        .unwrap();
    mine.update(k, &Bin { label: "A2".into() }).await.unwrap();
    // No sync in between: the check-in pushes the change while the record is still held.
    mine.check_in(k.id()).await.unwrap();
    assert_eq!(ann.dirty().await.unwrap(), 0);
    bob.sync().await.unwrap();
    assert_eq!(
        bob.tree::<Bin>().get(k).await.unwrap(),
        Some(Bin { label: "A2".into() })
    );
    // Without the check-out, the change is refused on the replica itself.
    let err = mine
        .update(k, &Bin { label: "A3".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(err, strata_typed::Error::NotCheckedOut { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_indexes_what_it_pulls() {
    let (ann, bob) = two_replicas().await;
    let labels = strata_typed::NameIndex::<Bin>::new("label", |b| b.label.as_str());
    bob.index(labels.clone());
    let mine = ann.tree::<Bin>();
    let k = mine
        .insert(&Bin {
            label: "Shelf A1".into(),
        })
        .await
        .unwrap();
    ann.sync().await.unwrap();
    bob.sync().await.unwrap();
    let theirs = bob.tree::<Bin>();
    assert_eq!(labels.loose(&theirs, "shelf a1").await.unwrap(), vec![k]);
    // A change pulled later moves the entry.
    mine.check_out(k.id(), Duration::from_secs(60), strata_typed::Wait::No)
        .await
        .unwrap();
    mine.update(
        k,
        &Bin {
            label: "Shelf B2".into(),
        },
    )
    .await
    .unwrap();
    mine.check_in(k.id()).await.unwrap();
    bob.sync().await.unwrap();
    assert!(labels.loose(&theirs, "shelf a1").await.unwrap().is_empty());
    assert_eq!(labels.loose(&theirs, "shelf b2").await.unwrap(), vec![k]);
    // Bob's own writes keep it too.
    let own = theirs
        .insert(&Bin {
            label: "Shelf C3".into(),
        })
        .await
        .unwrap();
    assert_eq!(labels.exact(&theirs, "Shelf C3").await.unwrap(), vec![own]);
}
