//! Clusters of real nodes on loopback (gRPC over TCP), each running the engine over its own
//! copy: writes from any node, strong and eventual reads, a leader lost, a node joining
//! through a snapshot, and a node from another cluster refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{AtomicWrite, Database, Engine, EngineConfig, Mutation, Value};
use strata_replication::network::{
    CommitAnswer, CommitRequest, Credentials, Forwarded, Method, PeerClient, StreamLink,
    StreamMethod,
};
use strata_replication::{ClusterConfig, Node, ReplicationError};

struct Member {
    node: Arc<Node>,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

fn credentials(secret: &str) -> Credentials {
    Credentials {
        cluster_id: "test-cluster".into(),
        secret: secret.into(),
    }
}

async fn start(id: u64, secret: &str, snapshot_every: u64) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClusterConfig::new(
        id,
        "127.0.0.1:0",
        credentials(secret),
        dir.path().join("snapshots"),
    );
    config.snapshot_every = snapshot_every;
    config.keep_after_snapshot = 0;
    config.log_dir = Some(dir.path().join("raft-log"));
    let backend = Arc::new(strata_backend_redb::RedbBackend::new(
        dir.path().join("data"),
    ));
    let node = Node::start(backend, config).await.expect("the node starts");
    let engine = Arc::new(Engine::new(node.backend(), EngineConfig::default()));
    Member {
        node,
        engine,
        _dir: dir,
    }
}

/// Start `n` nodes, each resolving the commits the others forward while it leads, and make
/// the first the leader of a cluster of all of them.
async fn cluster(n: u64, snapshot_every: u64) -> Vec<Member> {
    let members = cluster_of(n, snapshot_every).await;
    for m in &members {
        m.node.serve_commits(&m.engine);
    }
    members
}

/// [`cluster`], with no node serving forwarded commits.
async fn cluster_of(n: u64, snapshot_every: u64) -> Vec<Member> {
    let mut members = Vec::new();
    for id in 1..=n {
        members.push(start(id, "s3cret", snapshot_every).await);
    }
    let others: BTreeMap<u64, strata_replication::Member> = members[1..]
        .iter()
        .map(|m| (m.node.id(), m.node.member().clone()))
        .collect();
    members[0]
        .node
        .initialize(others)
        .await
        .expect("initialize");
    for m in &members {
        m.node
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|x| x.current_leader.is_some(), "a leader is known")
            .await
            .expect("a leader is elected");
    }
    members
}

async fn add(db: &Database, key: &str, n: u64) {
    let w = AtomicWrite::new().mutate(Mutation::sum(key.as_bytes().to_vec(), n));
    db.atomic_write(w).await.expect("the write commits");
}

async fn counter(db: &Database, key: &str) -> u64 {
    db.get(key.as_bytes())
        .await
        .expect("the read succeeds")
        .and_then(|e| e.value.as_u64())
        .unwrap_or(0)
}

/// Create database `name` through `member` and add 1 to its counter `k`.
async fn counter_on(member: &Member, name: &str) -> Database {
    member.engine.create_database(name, None).await.unwrap();
    let db = member.engine.database(name).await.unwrap();
    add(&db, "k", 1).await;
    db
}

/// A follower, and an engine of its own over its replicated backend.
async fn follower_engine(members: &[Member]) -> (&Member, Arc<Engine>) {
    let leader = leader_index(members).await;
    let follower = &members[(leader + 1) % members.len()];
    let engine = Arc::new(Engine::new(
        follower.node.backend(),
        EngineConfig::default(),
    ));
    (follower, engine)
}

async fn stop_all(members: &[Member]) {
    for m in members {
        m.node.shutdown().await;
    }
}

async fn leader_index(members: &[Member]) -> usize {
    for _ in 0..100 {
        for (i, m) in members.iter().enumerate() {
            if m.node.raft().current_leader().await == Some(m.node.id()) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_writes_and_strong_reads_see_every_acknowledged_write() {
    let members = cluster(3, 10_000).await;
    // Created through a follower: the command goes to the leader.
    let follower = (leader_index(&members).await + 1) % 3;
    members[follower]
        .engine
        .create_database("bank", None)
        .await
        .expect("create through a follower");
    let dbs: Vec<Database> = {
        let mut v = Vec::new();
        for m in &members {
            v.push(m.engine.database("bank").await.expect("every node has it"));
        }
        v
    };
    // Writers on every node at once, all adding to one counter: the followers' engines
    // forward their writes to the leader's; every acknowledged add must count exactly once.
    let mut tasks = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                add(&db, "total", 1).await;
                add(&db, &format!("node{i}"), 1).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for db in &dbs {
        assert_eq!(
            counter(db, "total").await,
            60,
            "a strong read on every node"
        );
        for i in 0..3 {
            assert_eq!(counter(db, &format!("node{i}")).await, 20);
        }
    }
    // Eventual reads are local: after the strong reads above every node has applied it all.
    for db in &dbs {
        assert_eq!(counter(&db.eventual(), "total").await, 60);
    }
    // A write on one node is seen by a strong read on another at once.
    add(&dbs[0], "total", 5).await;
    assert_eq!(counter(&dbs[2], "total").await, 65);
    assert_eq!(counter(&dbs[1], "total").await, 65);
    stop_all(&members).await;
}

/// Move `n` from account `from` to `to` in one transaction, retried while it conflicts.
async fn transfer(db: &Database, from: &str, to: &str, n: u64) {
    loop {
        let mut txn = db.begin().await.expect("begin");
        let balance = |v: Option<Value>| v.and_then(|v| v.as_u64()).unwrap_or(0);
        let a = balance(txn.get(from.as_bytes()).await.expect("read"));
        let b = balance(txn.get(to.as_bytes()).await.expect("read"));
        txn.set(from.as_bytes(), Value::u64(a - n)).unwrap();
        txn.set(to.as_bytes(), Value::u64(b + n)).unwrap();
        match txn.commit().await {
            Ok(_) => return,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("transfer: {e}"),
        }
    }
}

/// The leader's index, and database `bank` (created through the leader) on every node.
async fn bank_on_every_node(members: &[Member]) -> (usize, Vec<Database>) {
    let leader = leader_index(members).await;
    members[leader]
        .engine
        .create_database("bank", None)
        .await
        .unwrap();
    let mut dbs = Vec::new();
    for m in members {
        dbs.push(m.engine.database("bank").await.expect("every node has it"));
    }
    (leader, dbs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_made_on_followers_are_resolved_by_the_leaders_pipeline() {
    let members = cluster(3, 10_000).await;
    let (leader, dbs) = bank_on_every_node(&members).await;
    add(&dbs[leader], "a", 300).await;
    // Read-modify-write transactions on every node at once, all on the same two keys: they
    // conflict, and each is retried until it commits; money is neither made nor lost.
    let mut tasks = Vec::new();
    for db in &dbs {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                transfer(&db, "a", "b", 2).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for db in &dbs {
        assert_eq!(counter(db, "a").await, 300 - 90);
        assert_eq!(counter(db, "b").await, 90);
    }
    // Only the leader's pipeline resolved them: the followers' engines sent theirs on.
    for (i, db) in dbs.iter().enumerate() {
        let commits = db.pipeline_stats().commits;
        if i == leader {
            assert!(commits >= 46, "the leader resolved {commits} commits");
        } else {
            assert_eq!(commits, 0, "node {i} resolved commits itself");
        }
    }
    // A follower's write is in its own copy when the commit returns: an eventual read
    // there (no round to the leader) sees it.
    let follower = &dbs[(leader + 1) % 3];
    let w = AtomicWrite::new().mutate(Mutation::set(b"mine".to_vec(), Value::u64(7)));
    let stamp = follower.atomic_write(w).await.unwrap().versionstamp();
    let seen = follower
        .eventual()
        .get(b"mine")
        .await
        .unwrap()
        .expect("seen");
    assert_eq!(seen.value.as_u64(), Some(7));
    assert_eq!(Some(seen.versionstamp), stamp);
    // An atomic write's check is made by the leader, against the newest state.
    let stale = AtomicWrite::new()
        .check(b"mine".to_vec(), None)
        .mutate(Mutation::set(b"mine".to_vec(), Value::u64(8)));
    let out = dbs[(leader + 2) % 3].atomic_write(stale).await.unwrap();
    assert!(out.versionstamp().is_none(), "the check failed: {out:?}");
    stop_all(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn where_the_leader_serves_no_forwarded_commits_followers_resolve_their_own() {
    let members = cluster_of(3, 10_000).await;
    let (leader, dbs) = bank_on_every_node(&members).await;
    let follower = dbs[(leader + 1) % 3].clone();
    add(&follower, "a", 10).await;
    transfer(&follower, "a", "b", 4).await;
    assert!(
        follower.pipeline_stats().commits >= 2,
        "the follower's own pipeline resolved its commits"
    );
    assert_eq!(counter(&dbs[leader], "a").await, 6);
    assert_eq!(counter(&dbs[leader], "b").await, 4);
    stop_all(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_keeps_serving_when_its_leader_stops() {
    let members = cluster(3, 10_000).await;
    let leader = leader_index(&members).await;
    counter_on(&members[leader], "d").await;
    members[leader].node.shutdown().await;
    let rest: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, m)| m)
        .collect();
    for m in &rest {
        let db = m.engine.database("d").await.expect("the database survives");
        add(&db, "k", 1).await;
    }
    for m in &rest {
        let db = m.engine.database("d").await.unwrap();
        assert_eq!(counter(&db, "k").await, 3);
    }
    // The new leader reports the stopped node as not answering, and the other as fine.
    let stopped = members[leader].node.id();
    let new_leader = rest
        .iter()
        .find(|m| m.node.is_leader())
        .expect("a new leader");
    let unanswered = |id| {
        let status = new_leader.node.status();
        let n = status
            .nodes
            .into_iter()
            .find(|n| n.id == id)
            .expect("a member");
        n.unanswered_ms
            .map(|_| n.unanswered_error.unwrap_or_default())
    };
    let mut why = None;
    for _ in 0..200 {
        why = unanswered(stopped);
        if why.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let why = why.expect("the stopped node is reported as not answering");
    assert!(!why.is_empty());
    let other = rest
        .iter()
        .find(|m| !m.node.is_leader())
        .expect("a follower");
    assert_eq!(
        unanswered(other.node.id()),
        None,
        "the live follower answers"
    );
    for m in &rest {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_catches_up_through_a_snapshot() {
    let members = cluster(3, 20).await;
    let leader = leader_index(&members).await;
    let engine = &members[leader].engine;
    engine.create_database("big", None).await.unwrap();
    let db = engine.database("big").await.unwrap();
    for i in 0..120u64 {
        let w = AtomicWrite::new().set(format!("key{i:03}").into_bytes(), Value::u64(i));
        db.atomic_write(w).await.unwrap();
    }
    // The log behind the snapshot is purged, so the new node can only be sent the snapshot.
    let raft = members[leader].node.raft();
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some(), "the log is compacted")
        .await
        .expect("a snapshot was taken and the log purged");

    let joining = start(4, "s3cret", 20).await;
    joining.node.serve_commits(&joining.engine);
    let status = members[leader]
        .node
        .admin(strata_replication::network::AdminRequest::AddLearner {
            id: 4,
            member: joining.node.member().clone(),
        })
        .await;
    assert!(status.is_ok(), "adding a learner: {status:?}");
    // Adding it answers once it holds what the cluster held (here, past the snapshot: it
    // was sent one), as the leader has seen.
    let status = members[leader].node.status();
    let matched = status
        .nodes
        .iter()
        .find(|n| n.id == 4)
        .and_then(|n| n.matched_index);
    assert!(
        matched > status.purged_index,
        "the learner is not past the compacted log: {status:?}"
    );
    let voters = [1u64, 2, 3, 4].into_iter().collect();
    members[leader]
        .node
        .admin(strata_replication::network::AdminRequest::ChangeVoters { voters })
        .await
        .expect("promote");
    let db4 = joining
        .engine
        .database("big")
        .await
        .expect("the snapshot carried the database");
    for i in [0u64, 57, 119] {
        let e = db4
            .get(format!("key{i:03}").as_bytes())
            .await
            .unwrap()
            .expect("present");
        assert_eq!(e.value.as_u64(), Some(i));
    }
    // And it keeps up with new writes after the snapshot.
    add(&db, "after", 7).await;
    assert_eq!(counter(&db4, "after").await, 7);
    let status = members[leader].node.status();
    assert_eq!(status.nodes.len(), 4);
    assert!(status.nodes.iter().all(|n| n.voter));

    // Taking nodes out: never the last voter; node 4 leaves and the rest serve on.
    let all = [1u64, 2, 3, 4].into_iter().collect();
    let refused = members[leader]
        .node
        .admin(strata_replication::network::AdminRequest::Remove { ids: all })
        .await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("without voters")),
        "{refused:?}"
    );
    members[leader]
        .node
        .admin(strata_replication::network::AdminRequest::Remove {
            ids: [4].into_iter().collect(),
        })
        .await
        .expect("remove node 4");
    let status = members[leader].node.status();
    assert_eq!(
        status.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    add(&db, "after", 1).await;
    assert_eq!(counter(&db, "after").await, 8);
    joining.node.shutdown().await;
    stop_all(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_or_with_the_wrong_secret_is_refused() {
    let members = cluster(1, 10_000).await;
    let addr = members[0].node.member().raft_addr.clone();
    let wrong_secret = PeerClient::new(1, &addr, credentials("guess"));
    let err = wrong_secret
        .call(Method::ReadIndex, Vec::new(), Duration::from_secs(5))
        .await
        .expect_err("a wrong secret is refused");
    assert!(
        matches!(&err, ReplicationError::Refused { detail, .. } if detail.contains("secret")),
        "{err}"
    );
    let other_cluster = PeerClient::new(
        1,
        &addr,
        Credentials {
            cluster_id: "another".into(),
            secret: "s3cret".into(),
        },
    );
    let err = other_cluster
        .call(Method::ReadIndex, Vec::new(), Duration::from_secs(5))
        .await
        .expect_err("another cluster is refused");
    assert!(
        matches!(&err, ReplicationError::Refused { detail, .. } if detail.contains("another")),
        "{err}"
    );
    // A malformed message from a member is an error, not a crash.
    let member = PeerClient::new(1, &addr, credentials("s3cret"));
    let err = member
        .call(
            Method::AppendEntries,
            vec![0xff, 0xff, 0xff],
            Duration::from_secs(5),
        )
        .await
        .expect_err("garbage is refused");
    assert!(matches!(err, ReplicationError::Invalid(_)), "{err}");
    // The same on the streams: a wrong secret is refused when one opens, garbage on one is
    // refused (and ends it), and the next exchange, on a new stream, is answered.
    let mut link = StreamLink::new(StreamMethod::Replicate);
    let err = link
        .send(&wrong_secret, vec![0], Duration::from_secs(5))
        .await
        .expect_err("a wrong secret is refused on a stream");
    assert!(
        matches!(&err, ReplicationError::Refused { detail, .. } if detail.contains("secret")),
        "{err}"
    );
    let mut link = StreamLink::new(StreamMethod::Forward);
    let err = link
        .send(&member, vec![0xff, 0xff, 0xff], Duration::from_secs(5))
        .await
        .expect_err("garbage is refused on a stream");
    assert!(matches!(err, ReplicationError::Invalid(_)), "{err}");
    let no_commits = postcard::to_allocvec(&Vec::<CommitRequest>::new()).unwrap();
    let reply = link
        .send(&member, no_commits, Duration::from_secs(5))
        .await
        .expect("the next round is answered");
    let reply: Forwarded<CommitAnswer> = postcard::from_bytes(&reply).unwrap();
    assert!(matches!(reply, Forwarded::Ok(_)), "{reply:?}");
    // A vote request from a stale term is answered, and refused: the term only moves on.
    let term = members[0].node.status().term;
    let stale = openraft::raft::VoteRequest::new(openraft::Vote::new(0, 9), None);
    let reply = member
        .call(
            Method::Vote,
            postcard::to_allocvec(&stale).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .expect("a member's vote request is answered");
    let reply: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        postcard::from_bytes(&reply).unwrap();
    assert!(
        !reply.expect("answered").vote_granted,
        "a stale candidate gets no vote"
    );
    assert_eq!(members[0].node.status().term, term);
    // The node still serves.
    members[0].engine.create_database("ok", None).await.unwrap();
    members[0].node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_reads_are_strong_unless_the_session_asks_for_eventual() {
    let members = cluster(3, 10_000).await;
    let (follower, engine) = follower_engine(&members).await;
    let mut s = strata_sql::Session::new(engine.clone());
    s.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (1, 10)").await.unwrap();

    let before = follower.node.read_barriers();
    s.execute("SELECT v FROM t WHERE id = 1").await.unwrap();
    let strong = follower.node.read_barriers() - before;
    assert!(strong > 0, "a default read passes the read barrier");

    s.execute("SET read_consistency = eventual").await.unwrap();
    let before = follower.node.read_barriers();
    s.execute("SELECT v FROM t WHERE id = 1").await.unwrap();
    s.execute("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(
        follower.node.read_barriers(),
        before,
        "eventual reads stay local"
    );
    // A transaction reads its own snapshot, strongly, whatever the session's setting.
    s.execute("BEGIN").await.unwrap();
    let before = follower.node.read_barriers();
    s.execute("SELECT v FROM t WHERE id = 1").await.unwrap();
    assert!(
        follower.node.read_barriers() > before,
        "a read in a transaction passes the read barrier"
    );
    s.execute("COMMIT").await.unwrap();
    let before = follower.node.read_barriers();
    s.execute("SELECT v FROM t WHERE id = 1").await.unwrap();
    assert_eq!(
        follower.node.read_barriers(),
        before,
        "eventual again after it"
    );

    s.execute("SET read_consistency = 'strong'").await.unwrap();
    let before = follower.node.read_barriers();
    s.execute("SELECT v FROM t WHERE id = 1").await.unwrap();
    assert!(follower.node.read_barriers() > before);
    assert!(s.execute("SET read_consistency = sometimes").await.is_err());
    engine.close().await;
    stop_all(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_reads_are_strong_unless_the_request_asks_for_eventual() {
    let members = cluster(3, 10_000).await;
    let (follower, engine) = follower_engine(&members).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        strata_rest::Server::new(engine.clone(), strata_rest::Config::default()).serve(
            listener,
            async {
                let _ = stopped.await;
            },
        ),
    );
    let strong = strata_rest::Client::new(&url, None).unwrap();
    let eventual = strong.eventual();
    strong.create_database("app").await.unwrap();
    strong
        .execute("app", "CREATE TABLE t (id INT PRIMARY KEY, v INT)", &[])
        .await
        .unwrap();
    strong
        .execute("app", "INSERT INTO t VALUES (1, 10)", &[])
        .await
        .unwrap();
    strong.kv_set("app", "greeting", "hello").await.unwrap();

    // Each read, and whether it must pass the read barrier (a round to the leader).
    let barriers = || follower.node.read_barriers();
    let before = barriers();
    let rows = strong
        .query_oltp("app", "SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![serde_json::json!(10)]]);
    assert!(barriers() > before, "a default SQL read passes the barrier");
    let before = barriers();
    strong.kv_get("app", "greeting").await.unwrap();
    assert!(barriers() > before, "a default KV read passes the barrier");

    let before = barriers();
    let rows = eventual
        .query_oltp("app", "SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![serde_json::json!(10)]]);
    eventual
        .query("SELECT count(*) FROM app.public.t", &[])
        .await
        .unwrap();
    assert_eq!(
        eventual.kv_get("app", "greeting").await.unwrap().value,
        serde_json::json!("hello")
    );
    eventual.kv_list("app", "", 100).await.unwrap();
    assert_eq!(barriers(), before, "eventual reads stay on the node");

    // The session an eventual request used goes back to the pool strong.
    let before = barriers();
    strong
        .query_oltp("app", "SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert!(
        barriers() > before,
        "a pooled session does not keep eventual reads"
    );

    // Eventual reads inside a transaction are refused with a 400.
    let tx = strong.begin("app").await.unwrap();
    match eventual
        .query_oltp_in("app", "SELECT v FROM t", &[], Some(&tx.tx))
        .await
    {
        Err(strata_rest::ClientError::Refused {
            status: 400, error, ..
        }) => {
            assert!(error.contains("strata-read-consistency"), "{error}")
        }
        other => panic!("an eventual read in a transaction is refused: {other:?}"),
    }
    strong.rollback(&tx.tx).await.unwrap();

    let _ = stop.send(());
    let _ = server.await;
    engine.close().await;
    stop_all(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_dropped_through_one_node_is_gone_from_every_node() {
    let members = cluster(3, 10_000).await;
    let (a, b) = (&members[0], &members[1]);
    // Open on both nodes, with a value in it.
    let on_a = counter_on(a, "temp").await;
    let on_b = b
        .engine
        .database("temp")
        .await
        .expect("open on the other node");
    assert_eq!(counter(&on_b, "k").await, 1);

    a.engine.drop_database("temp").await.expect("drop");
    b.node.read_barrier().await.expect("catch up");
    assert!(on_b.dropped_elsewhere(), "the other node's handle knows");
    assert!(
        on_b.get(b"k").await.is_err(),
        "the old handle reads nothing"
    );
    // Dropping it again through the node that still holds a handle: gone, as anywhere.
    assert!(matches!(
        b.engine.drop_database("temp").await,
        Err(strata_engine::EngineError::DatabaseNotFound(_))
    ));
    assert!(!b
        .engine
        .list_databases()
        .await
        .unwrap()
        .contains(&"temp".to_string()));
    assert!(!b.engine.exists("temp").await.unwrap());
    assert!(matches!(
        b.engine.database("temp").await,
        Err(strata_engine::EngineError::DatabaseNotFound(_))
    ));

    // Made again, through the other node: a new, empty database, on every node.
    let again = b
        .engine
        .create_database("temp", None)
        .await
        .expect("create again");
    assert_eq!(counter(&again, "k").await, 0);
    assert!(on_b.get(b"k").await.is_err(), "the old handle stays gone");
    drop(on_a);
    a.node.read_barrier().await.expect("catch up");
    let on_a = a.engine.database("temp").await.expect("open again");
    assert_eq!(counter(&on_a, "k").await, 0);
    for m in &members {
        m.engine.close().await;
    }
    stop_all(&members).await;
}

/// A store whose disk can fill up: every write fails with ENOSPC while `full` is set. With
/// a gate, reading a frozen view waits until the gate opens.
struct FullDisk {
    inner: Arc<dyn strata_engine::Backend>,
    full: Arc<std::sync::atomic::AtomicBool>,
    gate: Option<Arc<Gate>>,
}

struct FullStore {
    inner: Arc<dyn strata_engine::Store>,
    full: Arc<std::sync::atomic::AtomicBool>,
    gate: Option<Arc<Gate>>,
}

/// Holds scans of frozen views until opened, and says when one is waiting.
struct Gate {
    waiting: tokio::sync::Notify,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            waiting: tokio::sync::Notify::new(),
            open: tokio::sync::watch::channel(false).0,
        })
    }
}

struct GatedView {
    inner: Arc<dyn strata_engine::ReadView>,
    gate: Arc<Gate>,
}

#[async_trait::async_trait]
impl strata_engine::ReadView for GatedView {
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, strata_engine::BackendError> {
        self.gate.waiting.notify_one();
        let mut open = self.gate.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        self.inner.scan(start, end, limit).await
    }
}

fn no_space() -> strata_engine::BackendError {
    strata_engine::BackendError::Io("No space left on device (os error 28)".into())
}

#[async_trait::async_trait]
impl strata_engine::Backend for FullDisk {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> strata_engine::Capabilities {
        self.inner.capabilities()
    }
    async fn open(
        &self,
        name: &str,
        create: bool,
    ) -> Result<Arc<dyn strata_engine::Store>, strata_engine::BackendError> {
        Ok(Arc::new(FullStore {
            inner: self.inner.open(name, create).await?,
            full: self.full.clone(),
            gate: self.gate.clone(),
        }))
    }
    async fn list(&self) -> Result<Vec<String>, strata_engine::BackendError> {
        self.inner.list().await
    }
    async fn drop_database(&self, name: &str) -> Result<bool, strata_engine::BackendError> {
        self.inner.drop_database(name).await
    }
}

#[async_trait::async_trait]
impl strata_engine::Store for FullStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, strata_engine::BackendError> {
        self.inner.get(key).await
    }
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, strata_engine::BackendError> {
        self.inner.scan(start, end, reverse, limit).await
    }
    async fn apply(
        &self,
        ops: Vec<strata_engine::BatchOp>,
        durability: strata_engine::Durability,
        precondition: Option<strata_engine::Precondition>,
    ) -> Result<(), strata_engine::BackendError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(no_space());
        }
        self.inner.apply(ops, durability, precondition).await
    }
    async fn sync(&self) -> Result<(), strata_engine::BackendError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(no_space());
        }
        self.inner.sync().await
    }
    async fn read_view(
        &self,
    ) -> Result<Option<Arc<dyn strata_engine::ReadView>>, strata_engine::BackendError> {
        let view = self.inner.read_view().await?;
        Ok(match (view, &self.gate) {
            (Some(inner), Some(gate)) => Some(Arc::new(GatedView {
                inner,
                gate: gate.clone(),
            })),
            (view, _) => view,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_apply_while_a_snapshot_is_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let backend = Arc::new(FullDisk {
        inner: Arc::new(strata_backend_redb::RedbBackend::new(
            dir.path().join("data"),
        )),
        full: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        gate: Some(gate.clone()),
    });
    let config = ClusterConfig::new(
        1,
        "127.0.0.1:0",
        credentials("s3cret"),
        dir.path().join("snapshots"),
    );
    let node = Node::start(backend, config).await.unwrap();
    node.initialize(BTreeMap::new()).await.unwrap();
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "it leads")
        .await
        .unwrap();
    let engine = Engine::new(node.backend(), EngineConfig::default());
    engine.create_database("d", None).await.unwrap();
    let db = engine.database("d").await.unwrap();
    add(&db, "k", 1).await;

    node.raft().trigger().snapshot().await.unwrap();
    // The snapshot is being written from its frozen views, and held there.
    tokio::time::timeout(Duration::from_secs(60), gate.waiting.notified())
        .await
        .expect("the snapshot reads frozen views");
    let before = node.raft().metrics().borrow().last_applied;
    // Meanwhile writes commit and apply. (Before frozen views, applying waited for the
    // whole snapshot; the guard turns such a hang into a failure.)
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..3 {
            add(&db, "k", 1).await;
        }
    })
    .await
    .expect("writes apply while the snapshot is written");
    gate.open.send_replace(true);
    node.raft()
        .wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.snapshot.is_some(), "the snapshot is done")
        .await
        .unwrap();
    let m = node.raft().metrics().borrow().clone();
    // Frozen before the writes (the leader's upkeep may commit too, so not necessarily at
    // `before` itself).
    assert!(m.snapshot <= before, "the snapshot is the state it froze");
    assert!(m.last_applied > before);
    assert_eq!(counter(&db, "k").await, 4);
    engine.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_fills_stops_cleanly_and_recovers_once_there_is_room() {
    let members = cluster(3, 10_000).await;
    let leader = leader_index(&members).await;
    let db = counter_on(&members[leader], "d").await;

    // A fourth node whose disk we control joins, then its disk fills.
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backend = Arc::new(FullDisk {
        inner: Arc::new(strata_backend_memory::MemoryBackend::new()),
        full: full.clone(),
        gate: None,
    });
    let config = |listen: &str| {
        ClusterConfig::new(
            4,
            listen,
            credentials("s3cret"),
            dir.path().join("snapshots"),
        )
    };
    let node = Node::start(backend.clone(), config("127.0.0.1:0"))
        .await
        .unwrap();
    let addr = node.member().raft_addr;
    members[leader]
        .node
        .admin(strata_replication::network::AdminRequest::AddLearner {
            id: 4,
            member: node.member(),
        })
        .await
        .unwrap();
    full.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        add(&db, "k", 1).await; // the voters carry on
    }
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.running_state.is_err(),
            "raft stopped on the storage error",
        )
        .await
        .expect("the node stops rather than run on a log it cannot write");
    // The stopped node refuses writes with an error instead of taking them.
    let engine4 = Engine::new(node.backend(), EngineConfig::default());
    let refused = async {
        let db4 = engine4.database("d").await?;
        let w = AtomicWrite::new().mutate(Mutation::sum(b"k".to_vec(), 1));
        db4.atomic_write(w).await.map(|_| ())
    }
    .await;
    let err = refused.expect_err("a stopped node takes no writes");
    assert!(
        err.to_string().contains("No space left"),
        "the error says why: {err}"
    );
    // The others' Raft traffic is answered with why (they back off from it as from a node
    // that is down) — but only once the caller is admitted.
    let peer = PeerClient::new(4, &addr, credentials("s3cret"));
    match peer
        .call(Method::ReadIndex, Vec::new(), Duration::from_secs(10))
        .await
    {
        Err(ReplicationError::Unreachable { detail, .. }) => assert!(
            detail.contains("stopped taking part") && detail.contains("No space left"),
            "{detail}"
        ),
        other => panic!("a stopped node answers Raft traffic with why: {other:?}"),
    }
    let stranger = PeerClient::new(4, &addr, credentials("guess"));
    match stranger
        .call(Method::ReadIndex, Vec::new(), Duration::from_secs(10))
        .await
    {
        Err(ReplicationError::Refused { detail, .. }) => {
            assert!(!detail.contains("No space left"), "{detail}")
        }
        other => panic!("a wrong secret is refused first: {other:?}"),
    }
    engine4.close().await;
    node.shutdown().await;
    drop(node);

    // Room again: the node restarts on the same store and address and catches up.
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    let node = Node::start(backend, config(&addr)).await.unwrap();
    let engine4 = Engine::new(node.backend(), EngineConfig::default());
    let db4 = engine4.database("d").await.unwrap();
    assert_eq!(
        counter(&db4, "k").await,
        6,
        "nothing lost, nothing applied twice"
    );
    add(&db, "k", 1).await;
    assert_eq!(counter(&db4, "k").await, 7);
    engine4.close().await;
    node.shutdown().await;
    stop_all(&members).await;
}
