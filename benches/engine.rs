//! Engine benchmarks on the redb and SQLite backends.
//!
//! Run with `cargo bench --bench engine --features sqlite` (see `docs/benchmarks.md`).
//!
//! * `point_get/<backend>`: `Database::get` of the newest version of one of 10,000 keys.
//! * `raw_redb_point_get`: the same read straight against a redb file (one read transaction,
//!   open table, get, copy the value), the floor for `point_get/redb`.
//! * `scan_100/<backend>`: a 100-entry `snapshot_read` at the newest version.
//! * `commit_1/<backend>`: one durable single-key atomic write at a time.
//! * `commit_32/<backend>`: 32 concurrent committers of durable single-key atomic writes.
//!
//! Both commit benchmarks report throughput in commits per second.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use redb::{ReadableDatabase, TableDefinition};
use strata_backend_redb::RedbBackend;
use strata_backend_sqlite::SqliteBackend;
use strata_engine::{
    AtomicWrite, Backend, Database, Engine, EngineConfig, ReadAt, ReadRange, Value, XorShift,
};
use tokio::runtime::Runtime;

const KEYS: usize = 10_000;
const VALUE_LEN: usize = 100;
const LOAD_BATCH: usize = 500;
const SCAN_LIMIT: usize = 100;
/// A scan's range spans this many preloaded keys (more than its limit).
const SCAN_SPAN: usize = 2 * SCAN_LIMIT;
const COMMITTERS: u64 = 32;

const RAW_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

/// A 16-byte key; keys sort in index order.
fn key(prefix: u8, i: u64) -> Vec<u8> {
    let k = format!("{}{:015}", prefix as char, i).into_bytes();
    debug_assert_eq!(k.len(), 16);
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_add(j) as u8;
    }
    v
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

struct Bench {
    name: &'static str,
    _dir: tempfile::TempDir,
    engine: Engine,
    db: Database,
    /// Distinct keys for the commit benchmarks.
    next_write: Arc<AtomicU64>,
}

fn open(rt: &Runtime, name: &'static str, make: impl FnOnce(&Path) -> Arc<dyn Backend>) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::new(make(dir.path()), EngineConfig::default());
    let db = rt.block_on(async {
        let db = engine.open_or_create("bench").await.expect("open database");
        for chunk in (0..KEYS as u64).collect::<Vec<_>>().chunks(LOAD_BATCH) {
            let mut w = AtomicWrite::new();
            for &i in chunk {
                w = w.set(key(b'k', i), Value::bytes(value(i)));
            }
            db.atomic_write(w).await.expect("preload");
        }
        db
    });
    Bench {
        name,
        _dir: dir,
        engine,
        db,
        next_write: Arc::new(AtomicU64::new(0)),
    }
}

fn preloaded_keys() -> Vec<Vec<u8>> {
    (0..KEYS as u64).map(|i| key(b'k', i)).collect()
}

fn point_get(c: &mut Criterion, rt: &Runtime, dbs: &[Bench]) {
    let keys = preloaded_keys();
    let mut g = c.benchmark_group("point_get");
    g.throughput(Throughput::Elements(1));
    for b in dbs {
        // Sanity: every key is there.
        rt.block_on(async {
            assert!(b.db.get(&keys[0]).await.unwrap().is_some());
            assert!(b.db.get(&keys[KEYS - 1]).await.unwrap().is_some());
        });
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let db = &b.db;
        let keys = &keys;
        g.bench_function(b.name, |bench| {
            bench.to_async(rt).iter(|| {
                let k = &keys[rng.below(KEYS as u64) as usize];
                async move { db.get(k).await.unwrap().expect("key present") }
            })
        });
    }
    g.finish();
}

fn raw_redb_point_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = redb::Database::create(dir.path().join("raw.redb")).expect("redb file");
    let keys = preloaded_keys();
    for (n, chunk) in keys.chunks(LOAD_BATCH).enumerate() {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(RAW_TABLE).unwrap();
            for (j, k) in chunk.iter().enumerate() {
                let i = (n * LOAD_BATCH + j) as u64;
                t.insert(k.as_slice(), value(i).as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    c.bench_function("raw_redb_point_get", |bench| {
        bench.iter(|| {
            let k = &keys[rng.below(KEYS as u64) as usize];
            let tx = db.begin_read().unwrap();
            let t = tx.open_table(RAW_TABLE).unwrap();
            let v: Vec<u8> = t
                .get(k.as_slice())
                .unwrap()
                .expect("key present")
                .value()
                .to_vec();
            v
        })
    });
}

fn scan_100(c: &mut Criterion, rt: &Runtime, dbs: &[Bench]) {
    let keys = preloaded_keys();
    let mut g = c.benchmark_group("scan_100");
    g.throughput(Throughput::Elements(1));
    for b in dbs {
        rt.block_on(async {
            let range = [ReadRange::new(
                keys[0].clone(),
                keys[SCAN_SPAN].clone(),
                SCAN_LIMIT,
            )];
            let r = b.db.snapshot_read(&range, ReadAt::Latest).await.unwrap();
            assert_eq!(r.ranges[0].len(), SCAN_LIMIT);
        });
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let db = &b.db;
        let keys = &keys;
        g.bench_function(b.name, |bench| {
            bench.to_async(rt).iter(|| {
                let s = rng.below((KEYS - SCAN_SPAN) as u64) as usize;
                let range = [ReadRange::new(
                    keys[s].clone(),
                    keys[s + SCAN_SPAN].clone(),
                    SCAN_LIMIT,
                )];
                async move {
                    let r = db.snapshot_read(&range, ReadAt::Latest).await.unwrap();
                    debug_assert_eq!(r.ranges[0].len(), SCAN_LIMIT);
                    r
                }
            })
        });
    }
    g.finish();
}

fn commit_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g
}

async fn commit_one(db: &Database, next: &AtomicU64) {
    let i = next.fetch_add(1, Ordering::Relaxed);
    db.atomic_write(AtomicWrite::new().set(key(b'w', i), Value::bytes(value(i))))
        .await
        .expect("commit");
}

fn commit_1(c: &mut Criterion, rt: &Runtime, dbs: &[Bench]) {
    let mut g = commit_group(c, "commit_1");
    for b in dbs {
        let db = &b.db;
        let next = &*b.next_write;
        g.bench_function(b.name, |bench| {
            bench.to_async(rt).iter(|| commit_one(db, next))
        });
    }
    g.finish();
}

fn commit_32(c: &mut Criterion, rt: &Runtime, dbs: &[Bench]) {
    let mut g = commit_group(c, "commit_32");
    for b in dbs {
        g.bench_function(b.name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..COMMITTERS)
                        .map(|t| {
                            let n = iters / COMMITTERS + u64::from(t < iters % COMMITTERS);
                            let db = b.db.clone();
                            let next = b.next_write.clone();
                            tokio::spawn(async move {
                                for _ in 0..n {
                                    commit_one(&db, &next).await;
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("committer");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let dbs = vec![
        open(&rt, "redb", |d| {
            Arc::new(RedbBackend::new(d)) as Arc<dyn Backend>
        }),
        open(&rt, "sqlite", |d| {
            Arc::new(SqliteBackend::new(d)) as Arc<dyn Backend>
        }),
    ];
    point_get(c, &rt, &dbs);
    raw_redb_point_get(c);
    scan_100(c, &rt, &dbs);
    commit_1(c, &rt, &dbs);
    commit_32(c, &rt, &dbs);
    rt.block_on(async {
        for b in &dbs {
            b.engine.close().await;
        }
    });
}

criterion_group! {
    name = engine;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(engine);
