//! Strata's SQL layer and dkdc-db-core 0.3.1 (the core of the HTAP server Strata's REST API
//! replaces), in one process, on the same schema and rows, each from a file-backed store:
//!
//! - OLTP point selects: their `query_oltp` (straight to turso) against our session (its
//!   fast path);
//! - point selects through DataFusion: their `query` against ours (`db.public.table`);
//! - single-row inserts: their `execute` against ours;
//! - a cross-database join through DataFusion;
//! - point selects from 32 concurrent tasks.
//!
//! Every statement is SQL text, as their API takes it. Prints a Markdown table with both
//! sides and their ratio. `DKDC_BENCH_SECONDS` sets each row's length (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dkdc_db_core::DbManager;
use strata_backend_redb::RedbBackend;
use strata_engine::{Engine, EngineConfig};
use strata_sql::Session;

const USERS: u64 = 10_000;
const ORDERS: u64 = 30_000;
const TASKS: usize = 32;

/// A small deterministic generator: the same ids on both sides, run after run.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % USERS + 1
    }
}

struct Figures {
    ops: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn of(mut samples: Vec<Duration>, elapsed: Duration) -> Figures {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Figures {
            ops: samples.len(),
            elapsed,
            p50: at(0.5),
            p99: at(0.99),
        }
    }

    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `op` for `secs` seconds after a short warm-up, timing each call; errors are counted.
async fn measure<F, Fut>(secs: f64, mut op: F) -> (Figures, usize)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut i = 0u64;
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < (secs / 10.0).min(1.0) {
        let _ = op(i).await;
        i += 1;
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        if op(i).await.is_err() {
            errors += 1;
        }
        samples.push(t.elapsed());
        i += 1;
    }
    (Figures::of(samples, start.elapsed()), errors)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, theirs: &(Figures, usize), ours: &(Figures, usize)) {
    let errors = |e: usize| {
        if e == 0 {
            String::new()
        } else {
            format!(" ({e} failed)")
        }
    };
    println!(
        "| {name} | {:.0}{} | {} | {} | {:.0}{} | {} | {} | {:.1}× |",
        theirs.0.per_second(),
        errors(theirs.1),
        ms(theirs.0.p50),
        ms(theirs.0.p99),
        ours.0.per_second(),
        errors(ours.1),
        ms(ours.0.p50),
        ms(ours.0.p99),
        ours.0.per_second() / theirs.0.per_second().max(f64::MIN_POSITIVE),
    );
}

fn users_chunk(from: u64, to: u64) -> String {
    let values: Vec<String> = (from..to)
        .map(|i| format!("({i}, 'user {i}', 'u{i}@example.com')"))
        .collect();
    format!("INSERT INTO users VALUES {}", values.join(","))
}

fn orders_chunk(from: u64, to: u64) -> String {
    let values: Vec<String> = (from..to)
        .map(|i| format!("({i}, {}, {})", (i - 1) % USERS + 1, i % 97))
        .collect();
    format!("INSERT INTO orders VALUES {}", values.join(","))
}

const SCHEMA: [(&str, &str); 3] = [
    (
        "bench",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)",
    ),
    (
        "shop",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total INTEGER)",
    ),
    ("shop", "CREATE INDEX orders_user ON orders (user_id)"),
];

const JOIN: &str = "SELECT u.name, o.total FROM bench.public.users u \
                    JOIN shop.public.orders o ON o.user_id = u.id WHERE u.id = ";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let secs: f64 = std::env::var("DKDC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Their databases live under $HOME/.dkdc/db: a home of their own, here.
    let home = dir.path().join("theirs-home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    std::env::set_var("HOME", &home);

    eprintln!("loading {USERS} users and {ORDERS} orders into both ...");
    let theirs = Arc::new(DbManager::new().await.map_err(|e| e.to_string())?);
    let engine = Arc::new(Engine::new(
        Arc::new(RedbBackend::new(dir.path().join("ours"))),
        EngineConfig::default(),
    ));
    let mut ours = Session::new(engine.clone());
    for db in ["bench", "shop"] {
        theirs.create_db(db).await.map_err(|e| e.to_string())?;
        engine.open_or_create(db).await.map_err(|e| e.to_string())?;
    }
    for (db, sql) in SCHEMA {
        theirs.execute(db, sql).await.map_err(|e| e.to_string())?;
        ours.set_database(db).await.map_err(|e| e.to_string())?;
        ours.execute(sql).await.map_err(|e| e.to_string())?;
    }
    for (db, total, chunk) in [
        ("bench", USERS, users_chunk as fn(u64, u64) -> String),
        ("shop", ORDERS, orders_chunk),
    ] {
        ours.set_database(db).await.map_err(|e| e.to_string())?;
        for from in (1..=total).step_by(1000) {
            let sql = chunk(from, (from + 1000).min(total + 1));
            theirs.execute(db, &sql).await.map_err(|e| e.to_string())?;
            ours.execute(&sql).await.map_err(|e| e.to_string())?;
        }
    }
    ours.set_database("bench")
        .await
        .map_err(|e| e.to_string())?;
    let session = Arc::new(tokio::sync::Mutex::new(ours));

    println!(
        "| statement | theirs /s | theirs p50 ms | theirs p99 ms | ours /s | ours p50 ms | ours p99 ms | ours ÷ theirs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");

    let point = |id: u64| format!("SELECT id, name, email FROM users WHERE id = {id}");
    let side = Sides {
        secs,
        theirs: theirs.clone(),
        ours: session,
    };
    side.by_side(
        "point select (their query_oltp, our fast path)",
        Their::Oltp,
        |i| point(pick(1, i)),
    )
    .await;
    side.by_side(
        "point select through DataFusion (their query, ours)",
        Their::Query,
        |i| {
            format!(
                "SELECT id, name, email FROM bench.public.users WHERE id = {}",
                pick(2, i)
            )
        },
    )
    .await;
    side.by_side("cross-database join (3 rows)", Their::Query, |i| {
        format!("{JOIN}{}", pick(3, i))
    })
    .await;
    side.by_side("single-row insert", Their::Execute, |i| {
        let id = 1_000_000 + i;
        format!("INSERT INTO users VALUES ({id}, 'user {id}', 'u{id}@example.com')")
    })
    .await;

    let t = concurrent(|task| {
        let theirs = theirs.clone();
        async move {
            let sql = |i: u64| point(pick(100 + task as u64, i));
            repeat(secs, |i| {
                let theirs = theirs.clone();
                let sql = sql(i);
                async move { run_theirs(&theirs, Their::Oltp, &sql).await }
            })
            .await
        }
    })
    .await;
    let o = concurrent(|task| {
        let engine = engine.clone();
        async move {
            let s = Arc::new(tokio::sync::Mutex::new(Session::new(engine)));
            if s.lock().await.set_database("bench").await.is_err() {
                return (0, 1);
            }
            let sql = |i: u64| point(pick(100 + task as u64, i));
            repeat(secs, |i| {
                let s = s.clone();
                let sql = sql(i);
                async move { run_ours(&s, &sql).await }
            })
            .await
        }
    })
    .await;
    let failed = |n: u64| {
        if n > 0 {
            format!(" ({n} failed)")
        } else {
            String::new()
        }
    };
    println!(
        "| point select, {TASKS} concurrent tasks | {:.0}{} | | | {:.0}{} | | | {:.1}× |",
        t.0,
        failed(t.1),
        o.0,
        failed(o.1),
        o.0 / t.0.max(f64::MIN_POSITIVE),
    );
    engine.close().await;
    Ok(())
}

/// Which of their entry points a statement goes to.
#[derive(Clone, Copy)]
enum Their {
    Oltp,
    Query,
    Execute,
}

async fn run_theirs(m: &DbManager, how: Their, sql: &str) -> Result<(), String> {
    match how {
        Their::Oltp => m.query_oltp("bench", sql).await.map(|_| ()),
        Their::Query => m.query(sql).await.map(|_| ()),
        Their::Execute => m.execute("bench", sql).await.map(|_| ()),
    }
    .map_err(|e| e.to_string())
}

async fn run_ours(s: &tokio::sync::Mutex<Session>, sql: &str) -> Result<(), String> {
    s.lock()
        .await
        .execute(sql)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The `i`-th user id of stream `seed`: the same ids on both sides, run after run.
fn pick(seed: u64, i: u64) -> u64 {
    let mut ids = Ids(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i);
    ids.next()
}

struct Sides {
    secs: f64,
    theirs: Arc<DbManager>,
    /// One session, one call at a time (the lock is never contended).
    ours: Arc<tokio::sync::Mutex<Session>>,
}

impl Sides {
    /// The statements `sql(0)`, `sql(1)`, … for `secs` on each side, then a row of both.
    async fn by_side(&self, name: &str, how: Their, sql: impl Fn(u64) -> String) {
        let t = measure(self.secs, |i| {
            let theirs = self.theirs.clone();
            let sql = sql(i);
            async move { run_theirs(&theirs, how, &sql).await }
        })
        .await;
        let o = measure(self.secs, |i| {
            let s = self.ours.clone();
            let sql = sql(i);
            async move { run_ours(&s, &sql).await }
        })
        .await;
        row(name, &t, &o);
    }
}

/// Run `op` until `secs` have passed: (successes, failures).
async fn repeat<F, Fut>(secs: f64, mut op: F) -> (u64, u64)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let (mut done, mut failed, mut i) = (0, 0, 0);
    while Instant::now() < stop {
        match op(i).await {
            Ok(()) => done += 1,
            Err(_) => failed += 1,
        }
        i += 1;
    }
    (done, failed)
}

/// `TASKS` tasks at once, each running for as long as it is told: (successes per second,
/// failures).
async fn concurrent<F, Fut>(task: F) -> (f64, u64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (u64, u64)> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS).map(|i| tokio::spawn(task(i))).collect();
    let (mut done, mut failed) = (0, 0);
    for h in handles {
        let (d, f) = h.await.unwrap_or((0, 1));
        done += d;
        failed += f;
    }
    (done as f64 / start.elapsed().as_secs_f64(), failed)
}
