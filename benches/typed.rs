//! Typed KV benchmarks: reads of one record from a tree (in place, and deserialized) side by
//! side with a raw redb point read of the same bytes, and durable insert throughput.
//!
//! Run with `cargo bench --bench typed` (see `docs/benchmarks.md`). Knobs, from the
//! environment: `TYPED_BENCH_SECONDS` (default 3) per read workload, `TYPED_BENCH_RECORDS`
//! (default 10000) records in the tree.
//!
//! Workloads, each over the same records with random ids:
//!
//! * `raw redb point read`: a read transaction, the table, one `get`, the bytes touched
//!   (what the record's bytes cost straight from redb, with no engine above it); and the
//!   same `get` in a read transaction and table held open (redb's floor).
//! * `Tree::with`: the record validated (bytecheck) and read in place, one field summed.
//! * `Tree::get`: the record validated and deserialized.
//! * `insert`: one durable insert per transaction, one client.
//! * `commit to event`: a subscriber waits on the tree's events while a writer inserts, one
//!   durable insert at a time; the time from the start of each insert, and from its
//!   acknowledgement, to the subscriber holding its event (p50 and p99).
//! * `commit to event between replicas`: a sync server and two replicas (each its own redb
//!   store) in this process, talking gRPC over loopback TCP, both following the server. One
//!   replica inserts, one record at a time; the time from the start of the insert to the
//!   other replica's subscriber holding its event (p50 and p99).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, TableDefinition};
use strata_backend_redb::RedbBackend;
use strata_engine::{Engine, EngineConfig, XorShift};
use strata_typed::{record, Key, Tree};

#[record(tree = "parts", version = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub number: String,
    pub description: String,
    pub stock: u32,
    pub serials: Vec<u64>,
}

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn part(i: u64) -> Part {
    Part {
        number: format!("P-{i:06}"),
        description: format!("part number {i}, steel, zinc plated"),
        stock: (i % 1000) as u32,
        serials: (0..8).map(|s| i * 8 + s).collect(),
    }
}

/// One read of a record from a tree, giving a number from it.
type ReadFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = u64> + 'a>>;

/// The median time of one read of a random record through `read`.
fn tree_reads<'t>(
    secs: f64,
    rt: &tokio::runtime::Runtime,
    random_key: &mut impl FnMut() -> Key<Part>,
    read: impl Fn(Key<Part>) -> ReadFuture<'t>,
) -> Duration {
    per_op(secs, 1000, |batch| {
        rt.block_on(async {
            let mut sum = 0u64;
            for _ in 0..batch {
                sum += read(random_key()).await;
            }
            std::hint::black_box(sum);
        })
    })
}

/// The length of record `k`'s bytes in the raw table.
fn raw_len(t: &redb::ReadOnlyTable<&[u8], &[u8]>, k: Key<Part>) -> u64 {
    let v = t
        .get(k.id().to_be_bytes().as_slice())
        .expect("get")
        .expect("present");
    v.value().len() as u64
}

/// The median time of one operation: `batch` operations timed together, repeated for
/// `secs`.
fn per_op(secs: f64, batch: u64, mut run: impl FnMut(u64)) -> Duration {
    run(batch); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        run(batch);
        times.push(t.elapsed() / batch as u32);
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let secs: f64 = env_or("TYPED_BENCH_SECONDS", 3.0);
    let n: u64 = env_or("TYPED_BENCH_RECORDS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::new(
        Arc::new(RedbBackend::new(dir.path().join("strata"))),
        EngineConfig::default(),
    );
    let db = rt
        .block_on(engine.open_or_create("typed"))
        .expect("database");
    let tree = Tree::<Part>::open(db);

    println!("inserting {n} records (durable, one per transaction) ...");
    let start = Instant::now();
    let keys: Vec<Key<Part>> = rt.block_on(async {
        let mut keys = Vec::with_capacity(n as usize);
        for i in 0..n {
            keys.push(tree.insert(&part(i)).await.expect("insert"));
        }
        keys
    });
    let insert = start.elapsed() / n as u32;

    // The same records' archives in a plain redb table, under the same ids.
    let raw_db = redb::Database::create(dir.path().join("raw.redb")).expect("raw redb");
    {
        let w = raw_db.begin_write().expect("write");
        {
            let mut t = w.open_table(RAW).expect("table");
            for (i, k) in keys.iter().enumerate() {
                let value = strata_typed::rkyv::to_bytes::<strata_typed::rkyv::rancor::Error>(
                    &part(i as u64),
                )
                .expect("archive");
                t.insert(k.id().to_be_bytes().as_slice(), value.as_slice())
                    .expect("insert");
            }
        }
        w.commit().expect("commit");
    }

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut random_key = move || keys[rng.below(n) as usize];
    // Each read returns a number from the record, summed so that no read is optimized away.
    let raw = per_op(secs, 1000, |batch| {
        let sum: u64 = (0..batch)
            .map(|_| {
                let r = raw_db.begin_read().expect("read");
                let t = r.open_table(RAW).expect("table");
                raw_len(&t, random_key())
            })
            .sum();
        std::hint::black_box(sum);
    });
    let held = {
        let r = raw_db.begin_read().expect("read");
        let t = r.open_table(RAW).expect("table");
        per_op(secs, 1000, |batch| {
            let sum: u64 = (0..batch).map(|_| raw_len(&t, random_key())).sum();
            std::hint::black_box(sum);
        })
    };
    let tree = &tree;
    let with = tree_reads(secs, &rt, &mut random_key, |k| {
        Box::pin(async move {
            let stock = tree.with(k, |p| p.stock.to_native()).await;
            u64::from(stock.expect("with").expect("present"))
        })
    });
    let get = tree_reads(secs, &rt, &mut random_key, |k| {
        Box::pin(async move {
            let part = tree.get(k).await.expect("get").expect("present");
            u64::from(part.stock)
        })
    });

    let (from_start, from_ack) = rt.block_on(commit_to_event(tree, (secs * 300.0) as usize));
    let across = rt.block_on(between_replicas((secs * 100.0) as usize));

    let ratio = |d: Duration| d.as_secs_f64() / raw.as_secs_f64();
    println!();
    println!("| workload | time per operation | vs raw redb read | floor |");
    println!("|---|---:|---:|---|");
    println!(
        "| raw redb point read | {:.2} µs | 1.00× | |",
        raw.as_secs_f64() * 1e6
    );
    println!(
        "| raw redb get, read transaction and table held open | {:.2} µs | {:.2}× | |",
        held.as_secs_f64() * 1e6,
        ratio(held)
    );
    println!(
        "| `Tree::with` (validated, in place) | {:.2} µs | {:.2}× | ≤ 1.5× a raw redb read: {} |",
        with.as_secs_f64() * 1e6,
        ratio(with),
        if ratio(with) <= 1.5 {
            "met"
        } else {
            "**not met**"
        }
    );
    println!(
        "| `Tree::get` (validated, deserialized) | {:.2} µs | {:.2}× | |",
        get.as_secs_f64() * 1e6,
        ratio(get)
    );
    println!(
        "| insert (durable, one per transaction) | {:.1} µs, {:.0}/s | | |",
        insert.as_secs_f64() * 1e6,
        1.0 / insert.as_secs_f64()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| commit to event, from the insert's start (p50 / p99) | {:.3} / {:.3} ms | | p50 ≤ 5 ms: {} |",
        ms(from_start[0]),
        ms(from_start[1]),
        if ms(from_start[0]) <= 5.0 { "met" } else { "**not met**" }
    );
    println!(
        "| commit to event, from its acknowledgement (p50 / p99) | {:.3} / {:.3} ms | | |",
        ms(from_ack[0]),
        ms(from_ack[1])
    );
    println!(
        "| commit on one replica to the event on another, over loopback (p50 / p99) | {:.3} / {:.3} ms | | p50 ≤ 5 ms: {} |",
        ms(across[0]),
        ms(across[1]),
        if ms(across[0]) <= 5.0 { "met" } else { "**not met**" }
    );
}

/// A redb-backed database in `dir`.
async fn redb_database(dir: &std::path::Path) -> strata_engine::Database {
    let engine = Box::leak(Box::new(Engine::new(
        Arc::new(RedbBackend::new(dir)),
        EngineConfig::default(),
    )));
    engine.open_or_create("typed").await.expect("database")
}

/// `inserts` records inserted on one replica, one at a time, each waited for as an event on
/// another replica: p50 and p99 of the time from the insert's start to the event.
async fn between_replicas(inserts: usize) -> [Duration; 2] {
    use strata_typed::sync::{serve, Replica, ReplicaOptions, Tokens};
    let dir = tempfile::tempdir().expect("temp dir");
    let server_db = redb_database(&dir.path().join("server")).await;
    let tokens = Tokens::parse(&["ann:ann-token-1234", "bob:bob-token-5678"]).expect("tokens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(serve(server_db, tokens, listener, std::future::pending()));
    let replica = |name: &'static str, token: &'static str| {
        let (url, path) = (url.clone(), dir.path().join(name));
        async move {
            let mut options = ReplicaOptions::new(url, token);
            options.reserve = inserts as u64 + 16;
            let r = Replica::open(redb_database(&path).await, options)
                .await
                .expect("replica");
            r.tree::<Part>();
            r.sync().await.expect("first sync");
            r
        }
    };
    let ann = replica("ann", "ann-token-1234").await;
    let bob = replica("bob", "bob-token-5678").await;
    let theirs = bob.tree::<Part>();
    let mut events = theirs.events(theirs.cursor().await.expect("cursor"));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = events.next().await {
            let _ = arrived_tx.send((e.id, Instant::now()));
        }
    });
    let following = [ann.follow(), bob.follow()];
    let mine = ann.tree::<Part>();
    let mut times = Vec::with_capacity(inserts);
    for i in 0..inserts {
        let start = Instant::now();
        let id = mine.insert(&part(i as u64)).await.expect("insert").id();
        loop {
            let (got, at) = arrived.recv().await.expect("events");
            if got == id {
                times.push(at - start);
                break;
            }
        }
    }
    for f in following {
        f.abort();
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    [pct(0.5), pct(0.99)]
}

/// `inserts` durable inserts, one at a time, while a subscriber follows the tree's events:
/// p50 and p99 of the time from each insert's start, and from its acknowledgement, to the
/// subscriber receiving its event (zero when the event came first).
async fn commit_to_event(tree: &Tree<Part>, inserts: usize) -> ([Duration; 2], [Duration; 2]) {
    let mut events = tree.events(tree.cursor().await.expect("cursor"));
    let listener = tokio::spawn(async move {
        let mut arrived = Vec::with_capacity(inserts);
        while arrived.len() < inserts {
            let e = events.next().await.expect("event");
            arrived.push((e.id, Instant::now()));
        }
        arrived
    });
    let mut sent = std::collections::HashMap::new();
    for i in 0..inserts {
        let start = Instant::now();
        let k = tree.insert(&part(i as u64)).await.expect("insert");
        sent.insert(k.id(), (start, Instant::now()));
    }
    let arrived = listener.await.expect("listener");
    let (mut from_start, mut from_ack): (Vec<Duration>, Vec<Duration>) = arrived
        .iter()
        .map(|(id, at)| {
            let (start, ack) = sent[id];
            (
                at.saturating_duration_since(start),
                at.saturating_duration_since(ack),
            )
        })
        .unzip();
    from_start.sort();
    from_ack.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (
        [pct(&from_start, 0.5), pct(&from_start, 0.99)],
        [pct(&from_ack, 0.5), pct(&from_ack, 0.99)],
    )
}
