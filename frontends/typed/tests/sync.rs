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

/// A server for Ann and Bob on a free loopback port: its URL.
async fn server() -> String {
    server_of(database().await).await
}

/// A server of `db` for Ann and Bob on a free loopback port: its URL.
async fn server_of(db: Database) -> String {
    let tokens = Tokens::parse(&["ann:ann-token-1234", "bob:bob-token-5678"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(db, tokens, listener, std::future::pending()));
    url
}

/// A server, and Ann's and Bob's replicas of it, synced once.
async fn two_replicas() -> (Replica, Replica) {
    let url = server().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses() {
    use strata_typed::sync::proto::{
        sync_client::SyncClient, CheckOutRequest, Entry, HelloRequest, PushRequest,
        ReserveIdsRequest,
    };
    use tonic::Code;

    let url = server().await;
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = SyncClient::new(channel);
    fn signed<M>(msg: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", "Bearer ann-token-1234".parse().unwrap());
        r
    }

    // No token, a wrong one, a malformed header.
    let e = raw.hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(HelloRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope-nope-nope".parse().unwrap());
    assert_eq!(
        raw.hello(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut basic = tonic::Request::new(HelloRequest::default());
    basic
        .metadata_mut()
        .insert("authorization", "Basic YW5uOng=".parse().unwrap());
    assert_eq!(
        raw.hello(basic).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        raw.hello(signed(HelloRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .user,
        "ann"
    );

    // Reservations: no ids, too many, a tree name with NUL, an empty one.
    for (tree, count) in [("bins", 0), ("bins", u64::MAX), ("a\0b", 1), ("", 1)] {
        let e = raw
            .reserve_ids(signed(ReserveIdsRequest {
                tree: tree.into(),
                count,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{tree:?} {count}: {e}");
    }

    // Check-outs: no lease time, a wait beyond the limit.
    for (lease_ms, wait_ms) in [(0, 0), (1000, u64::MAX)] {
        let e = raw
            .check_out(signed(CheckOutRequest {
                tree: "bins".into(),
                id: 1,
                lease_ms,
                wait_ms,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }

    // Pushes: each bad record is refused on its own, with a reason; nothing is written.
    let garbage = vec![
        Entry {
            key: b"not a typed key".to_vec(),
            value: b"x".to_vec(),
            deleted: false,
        },
        Entry {
            key: vec![0xF1, 0x04, b'b', 0, 0, 0, 0, 0, 0, 0, 0, 1],
            value: b"{}".to_vec(),
            deleted: false,
        },
        Entry {
            key: vec![0xF1, 0x01, b'b', 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0],
            value: b"STRT but not a record".to_vec(),
            deleted: false,
        },
        Entry {
            key: vec![0xF1, 0x01, b'b', 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0],
            value: {
                let mut v = b"STRT\x01\x00\x00\x01\x00\x00\x00".to_vec();
                v.resize(32, 0);
                v
            },
            deleted: false,
        },
    ];
    let reply = raw
        .push(signed(PushRequest {
            records: garbage.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let reasons: Vec<&str> = reply.refused.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), garbage.len(), "{reasons:?}");
    assert!(reasons[0].contains("not a record key"), "{reasons:?}");
    assert!(reasons[1].contains("check-outs change only"), "{reasons:?}");
    assert!(reasons[2].contains("not a record"), "{reasons:?}");
    assert!(reasons[3].contains("was not reserved"), "{reasons:?}");
    assert!(reply.refused.iter().all(|r| !r.exists));

    // More records than one push may carry.
    let e = raw
        .push(signed(PushRequest {
            records: vec![garbage[0].clone(); strata_typed::sync::MAX_PUSH + 1],
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_changes_travel_in_pieces_within_a_transaction() {
    let (ann, bob) = two_replicas().await;
    let mine = ann.tree::<Bin>();
    // 12 MiB of records: more than one transaction may write (10 MiB), three times what
    // one push or one pull batch carries.
    let big = "x".repeat(60_000);
    let mut keys = Vec::new();
    for i in 0..200 {
        keys.push(
            mine.insert(&Bin {
                label: format!("{i}{big}"),
            })
            .await
            .unwrap(),
        );
    }
    let pushed = ann.sync().await.unwrap();
    assert_eq!((pushed.pushed, pushed.refused.len()), (200, 0));
    assert_eq!(ann.dirty().await.unwrap(), 0);
    let pulled = bob.sync().await.unwrap();
    assert!(pulled.pulled >= 200, "{pulled:?}");
    let theirs = bob.tree::<Bin>();
    for (i, k) in keys.iter().enumerate() {
        let label = theirs.with(*k, |b| b.label.len()).await.unwrap();
        assert_eq!(label, Some(format!("{i}").len() + big.len()));
    }
}

mod changed {
    /// Tree "bins" at version 1 again, with another type.
    #[strata_typed::record(tree = "bins", version = 1)]
    #[derive(Debug)]
    pub struct Bin {
        pub slot: u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_travel_with_records_and_a_changed_type_is_refused_with_its_records() {
    let server_db = database().await;
    let url = server_of(server_db.clone()).await;
    // Bob's code has another type for the same tree and version; his replica reserves ids
    // before Ann writes anything.
    let bob = Replica::open(
        database().await,
        ReplicaOptions::new(&url, "bob-token-5678"),
    )
    .await
    .unwrap();
    let theirs = bob.tree::<changed::Bin>();
    bob.sync().await.unwrap();

    let ann = replica(&url, "ann-token-1234").await;
    ann.tree::<Bin>()
        .insert(&Bin { label: "A1".into() })
        .await
        .unwrap();
    let report = ann.sync().await.unwrap();
    assert_eq!((report.pushed, report.refused.len()), (1, 0));
    // The server can show the record without the type.
    let shown = strata_typed::inspect::records(&server_db, "bins", None, 10)
        .await
        .unwrap();
    assert_eq!(shown[0].value.as_ref().unwrap().get(), r#"{"label":"A1"}"#);

    // Offline, Bob's replica knows no schema yet, so his insert is written locally; the
    // server refuses his schema, and the record with it.
    theirs.insert(&changed::Bin { slot: 9 }).await.unwrap();
    let report = bob.sync().await.unwrap();
    assert_eq!(report.pushed, 0);
    assert_eq!(report.refused.len(), 2, "{:?}", report.refused);
    assert!(
        report
            .refused
            .iter()
            .any(|e| matches!(e, strata_typed::Error::SchemaConflict { version: 1, .. })),
        "{:?}",
        report.refused
    );
    assert_eq!(
        strata_typed::inspect::records(&server_db, "bins", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Now his replica holds the server's schema, and his type is refused at once.
    let err = theirs.insert(&changed::Bin { slot: 9 }).await.unwrap_err();
    assert!(
        matches!(err, strata_typed::Error::SchemaConflict { version: 1, .. }),
        "{err}"
    );
    assert_eq!(bob.dirty().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_edited_only_under_its_check_out_and_migrated_only_on_its_server() {
    let url = server().await;
    let local = database().await;
    let ann = Replica::open(local.clone(), ReplicaOptions::new(&url, "ann-token-1234"))
        .await
        .unwrap();
    ann.tree::<Bin>();
    ann.sync().await.unwrap();
    // Opened after the first sync, the handle acts for the replica's user.
    let bins = ann.tree::<Bin>();
    let k = bins.insert(&Bin { label: "A1".into() }).await.unwrap();
    ann.sync().await.unwrap();
    let value = serde_json::json!({"label": "A2"});
    let change = strata_typed::inspect::Edit {
        tree: "bins",
        id: k.id(),
        revision: None,
        user: "ann",
        value: &value,
        stale_indexes: false,
        expected: None,
    };
    // Its server would refuse the change without the check-out: so does the edit.
    let err = strata_typed::inspect::edit(&local, &change)
        .await
        .unwrap_err();
    assert!(
        matches!(err, strata_typed::Error::NotCheckedOut { .. }),
        "{err}"
    );
    bins.check_out(k.id(), Duration::from_secs(60), strata_typed::Wait::No)
        .await
        .unwrap();
    strata_typed::inspect::edit(&local, &change).await.unwrap();
    let report = ann.sync().await.unwrap();
    assert_eq!((report.pushed, report.refused.len()), (1, 0));
    assert_eq!(bins.get(k).await.unwrap(), Some(Bin { label: "A2".into() }));

    let err = strata_typed::inspect::migrate(&local, "bins", None, false, |_, _| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("this database is a replica"),
        "{err}"
    );
}
