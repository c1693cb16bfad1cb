//! SQL benchmarks: Strata SQL (redb backend) side by side with SQLite (rusqlite, WAL,
//! `synchronous=FULL`, prepared statements), in one run on one machine.
//!
//! Run with `cargo bench --bench sql` (see `docs/benchmarks.md`). Knobs, from the
//! environment:
//!
//! * `SQL_BENCH_SECONDS` (default 3): measuring time per point/range/insert/update workload.
//! * `SQL_BENCH_LINEITEM_ROWS` (default 1000000): rows in the lineitem-like table.
//! * `SQL_BENCH_ONLY` (default all): a comma-separated subset of `oltp`, `concurrent`,
//!   `analytic`, of the single OLTP workloads `point`, `range`, `insert`, `update`, or of
//!   the single aggregates `q1`, `q6`, `scan`.
//! * `SQL_BENCH_RUNS` (default 3): timed runs of each aggregate (the median is reported);
//!   raise it to profile one aggregate (`SQL_BENCH_ONLY=q6 SQL_BENCH_RUNS=100`).
//!
//! Workloads:
//!
//! * `point select`: `SELECT v FROM kv WHERE id = $1` over 100,000 rows, random ids.
//! * `range select (100 rows)`: `SELECT id, v FROM kv WHERE id >= $1 AND id < $1 + 100`.
//! * `insert (durable, autocommit)`: one single-row INSERT per transaction, one client.
//! * `update by primary key`: `UPDATE kv SET v = $2 WHERE id = $1`, one client.
//! * `32 concurrent inserters`: 32 clients, each inserting its own rows, one row per
//!   durable transaction; throughput is all commits over the wall time.
//! * `Q1` and `Q6`: TPC-H-like aggregates over the lineitem table, also run by DataFusion
//!   over an in-memory Arrow table of the same rows (the cost of our scan path), and
//!   `full scan`: `SELECT sum(l_quantity) FROM lineitem`, in rows per second. Each is timed
//!   twice for Strata: from the store (column copies off), and from the column copy that
//!   repeated scans of the unchanged table make (the first run with copies on, which makes
//!   the copy or adds its columns to it, is shown apart).
//!
//! Every workload's results are compared across the engines before anything is timed, so
//! a fast wrong answer cannot pass as a figure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use strata_backend_redb::RedbBackend;
use strata_engine::{Engine, EngineConfig, XorShift};
use strata_sql::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use strata_sql::arrow::datatypes::{DataType, Field, Schema};
use strata_sql::datafusion::datasource::MemTable;
use strata_sql::datafusion::prelude::SessionContext;
use strata_sql::{Datum, Output, Session};

const KV_ROWS: i64 = 100_000;
const RANGE: i64 = 100;
const LOAD_CHUNK: usize = 1_000;
const INSERTERS: usize = 32;
/// The single-client workloads.
const OLTP: [&str; 4] = ["point", "range", "insert", "update"];
/// The aggregates over the lineitem table, by their `SQL_BENCH_ONLY` names.
const AGGREGATES: [&str; 3] = ["q1", "q6", "scan"];
/// The column copies' budget the aggregates run with (the default).
const COLUMN_COPY_BUDGET: usize = 512 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn value(i: i64) -> String {
    format!("value-{i:012}-{}", "x".repeat(64))
}

/// Per-operation latencies of one workload.
struct Figures {
    ops: usize,
    elapsed: Duration,
    median: Duration,
}

impl Figures {
    fn from_samples(mut samples: Vec<Duration>, elapsed: Duration) -> Figures {
        samples.sort();
        let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
        Figures {
            ops: samples.len(),
            elapsed,
            median,
        }
    }
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op` repeatedly for `secs` seconds (after a short warm-up) and times each call.
fn measure(secs: f64, mut op: impl FnMut(u64)) -> Figures {
    let warm = Instant::now();
    let mut i = 0u64;
    while warm.elapsed().as_secs_f64() < secs.min(1.0) / 4.0 {
        op(i);
        i += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        op(i);
        samples.push(t.elapsed());
        i += 1;
    }
    Figures::from_samples(samples, start.elapsed())
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(&mut self, name: &str, ours: String, sqlite: String, ratio: String, note: &str) {
        println!("  {name}: strata {ours}, sqlite {sqlite}, {ratio} {note}");
        self.rows
            .push([name.into(), ours, sqlite, ratio, note.to_string()]);
    }
    fn print(&self) {
        println!();
        println!("| workload | Strata (redb) | SQLite | Strata vs SQLite | |");
        println!("|---|---:|---:|---:|---|");
        for r in &self.rows {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
}

fn sqlite_open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.busy_timeout(Duration::from_secs(60))
        .expect("busy timeout");
    conn
}

fn query_text(out: Output) -> Option<String> {
    match out {
        Output::Rows(rows) => match rows.rows().expect("rows").into_iter().next() {
            Some(row) => match row.into_iter().next() {
                Some(Datum::Text(s)) => Some(s),
                _ => None,
            },
            None => None,
        },
        _ => panic!("expected rows"),
    }
}

fn main() {
    let secs: f64 = env_or("SQL_BENCH_SECONDS", 3.0);
    let lineitem_rows: usize = env_or("SQL_BENCH_LINEITEM_ROWS", 1_000_000);
    let only: String = env_or("SQL_BENCH_ONLY", "oltp,concurrent,analytic".to_string());
    let mut only: Vec<&str> = only.split(',').map(str::trim).collect();
    if only.contains(&"oltp") {
        only.extend(OLTP);
    }
    if only.contains(&"analytic") {
        only.extend(AGGREGATES);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(Engine::new(
        Arc::new(RedbBackend::new(dir.path().join("strata"))),
        EngineConfig::default(),
    ));
    let lite = sqlite_open(&dir.path().join("sqlite.db"));
    let mut table = Table { rows: Vec::new() };
    let mut s = Session::new(engine.clone());

    if OLTP.iter().any(|w| only.contains(w)) {
        oltp(&rt, &mut s, &lite, secs, &only, &mut table);
    }
    if only.contains(&"concurrent") {
        concurrent(&rt, &engine, dir.path(), secs, &mut table);
    }
    if AGGREGATES.iter().any(|w| only.contains(w)) {
        let runs: usize = env_or("SQL_BENCH_RUNS", 3);
        analytic(
            &rt,
            &mut s,
            &lite,
            lineitem_rows,
            &only,
            runs.max(1),
            &mut table,
        );
    }
    table.print();
}

fn oltp(
    rt: &tokio::runtime::Runtime,
    s: &mut Session,
    lite: &Connection,
    secs: f64,
    only: &[&str],
    t: &mut Table,
) {
    println!("loading {KV_ROWS} rows into kv ...");
    rt.block_on(async {
        s.execute("CREATE TABLE kv (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .expect("create");
        s.execute("CREATE TABLE ins (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .expect("create");
        let ids: Vec<i64> = (0..KV_ROWS).collect();
        for chunk in ids.chunks(LOAD_CHUNK) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| format!("({i}, '{}')", value(*i)))
                .collect();
            s.execute(&format!("INSERT INTO kv VALUES {}", values.join(",")))
                .await
                .expect("load");
        }
    });
    lite.execute_batch(
        "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE ins (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )
    .expect("sqlite create");
    {
        lite.execute_batch("BEGIN").expect("begin");
        let mut ins = lite
            .prepare("INSERT INTO kv VALUES (?1, ?2)")
            .expect("prepare");
        for i in 0..KV_ROWS {
            ins.execute(params![i, value(i)]).expect("sqlite load");
        }
        lite.execute_batch("COMMIT").expect("commit");
    }

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    if only.contains(&"point") {
        // Point select.
        let probe = 4242i64;
        let ours = rt
            .block_on(s.execute_with("SELECT v FROM kv WHERE id = $1", &[Datum::Int(probe)]))
            .expect("point select");
        let theirs: String = lite
            .query_row("SELECT v FROM kv WHERE id = ?1", [probe], |r| r.get(0))
            .expect("sqlite point select");
        assert_eq!(
            query_text(ours).as_deref(),
            Some(theirs.as_str()),
            "point select differs"
        );
        let a = measure(secs, |_| {
            let id = rng.below(KV_ROWS as u64) as i64;
            let out = rt
                .block_on(s.execute_with("SELECT v FROM kv WHERE id = $1", &[Datum::Int(id)]))
                .expect("point select");
            std::hint::black_box(out);
        });
        let mut stmt = lite
            .prepare("SELECT v FROM kv WHERE id = ?1")
            .expect("prepare");
        let b = measure(secs, |_| {
            let id = rng.below(KV_ROWS as u64) as i64;
            let v: String = stmt.query_row([id], |r| r.get(0)).expect("sqlite");
            std::hint::black_box(v);
        });
        latency_row(
            t,
            "point select by primary key",
            &a,
            &b,
            "floor: ≤ 3× SQLite's time",
        );
    }
    if only.contains(&"range") {
        // Range select of 100 rows.
        let range_sql = "SELECT id, v FROM kv WHERE id >= $1 AND id < $2";
        let lo = 5000i64;
        let n = match rt
            .block_on(s.execute_with(range_sql, &[Datum::Int(lo), Datum::Int(lo + RANGE)]))
            .expect("range")
        {
            Output::Rows(r) => r.num_rows(),
            _ => 0,
        };
        assert_eq!(n as i64, RANGE, "range select row count");
        let a = measure(secs, |_| {
            let lo = rng.below((KV_ROWS - RANGE) as u64) as i64;
            let out = rt
                .block_on(s.execute_with(range_sql, &[Datum::Int(lo), Datum::Int(lo + RANGE)]))
                .expect("range select");
            std::hint::black_box(out);
        });
        let mut stmt = lite
            .prepare("SELECT id, v FROM kv WHERE id >= ?1 AND id < ?2")
            .expect("prepare");
        let b = measure(secs, |_| {
            let lo = rng.below((KV_ROWS - RANGE) as u64) as i64;
            let rows: Vec<(i64, String)> = stmt
                .query_map([lo, lo + RANGE], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("sqlite")
                .collect::<Result<_, _>>()
                .expect("sqlite rows");
            assert_eq!(rows.len() as i64, RANGE);
        });
        latency_row(t, "range select (100 rows)", &a, &b, "");
    }
    if only.contains(&"insert") {
        // Durable single-row insert, autocommit.
        let a = measure(secs, |i| {
            rt.block_on(s.execute_with(
                "INSERT INTO ins VALUES ($1, $2)",
                &[Datum::Int(i as i64), Datum::Text(value(i as i64))],
            ))
            .expect("insert");
        });
        let mut stmt = lite
            .prepare("INSERT INTO ins VALUES (?1, ?2)")
            .expect("prepare");
        let b = measure(secs, |i| {
            stmt.execute(params![i as i64, value(i as i64)])
                .expect("sqlite insert");
        });
        latency_row(t, "insert (durable, autocommit)", &a, &b, "");
    }
    if only.contains(&"update") {
        // Update by primary key.
        let a = measure(secs, |i| {
            let id = rng.below(KV_ROWS as u64) as i64;
            rt.block_on(s.execute_with(
                "UPDATE kv SET v = $2 WHERE id = $1",
                &[Datum::Int(id), Datum::Text(value(i as i64))],
            ))
            .expect("update");
        });
        let mut stmt = lite
            .prepare("UPDATE kv SET v = ?2 WHERE id = ?1")
            .expect("prepare");
        let b = measure(secs, |i| {
            let id = rng.below(KV_ROWS as u64) as i64;
            stmt.execute(params![id, value(i as i64)])
                .expect("sqlite update");
        });
        latency_row(t, "update by primary key (durable)", &a, &b, "");
    }
}

fn latency_row(t: &mut Table, name: &str, ours: &Figures, theirs: &Figures, note: &str) {
    let ratio = ours.median.as_secs_f64() / theirs.median.as_secs_f64();
    t.row(
        name,
        format!("{} median, {:.0}/s", us(ours.median), ours.per_second()),
        format!("{} median, {:.0}/s", us(theirs.median), theirs.per_second()),
        format!("{ratio:.2}× the time"),
        note,
    );
}

fn concurrent(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    dir: &std::path::Path,
    secs: f64,
    t: &mut Table,
) {
    println!("{INSERTERS} concurrent durable inserters ...");
    rt.block_on(async {
        let mut s = Session::new(engine.clone());
        s.execute("CREATE TABLE conc (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .expect("create");
    });
    let db = rt
        .block_on(engine.open_or_create("default"))
        .expect("default database");
    let before = db.pipeline_stats();
    let ours = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..INSERTERS {
            let (engine, stop, done) = (engine.clone(), stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = Session::new(engine);
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let id = (c as i64) << 32 | i;
                    s.execute_with(
                        "INSERT INTO conc VALUES ($1, $2)",
                        &[Datum::Int(id), Datum::Text(value(id))],
                    )
                    .await
                    .expect("concurrent insert");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("inserter");
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    });
    let after = db.pipeline_stats();
    let groups = (after.groups - before.groups).max(1);
    println!(
        "  strata commit pipeline: {:.1} commits per group; per group {:.0} µs resolving, {:.0} µs appending (write and sync)",
        (after.commits - before.commits) as f64 / groups as f64,
        (after.resolve - before.resolve).as_micros() as f64 / groups as f64,
        (after.append - before.append).as_micros() as f64 / groups as f64,
    );
    let path = dir.join("sqlite-conc.db");
    sqlite_open(&path)
        .execute_batch("CREATE TABLE conc (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("sqlite create");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..INSERTERS)
        .map(|c| {
            let (path, stop, done) = (path.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let conn = sqlite_open(&path);
                let mut stmt = conn
                    .prepare("INSERT INTO conc VALUES (?1, ?2)")
                    .expect("prepare");
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let id = (c as i64) << 32 | i;
                    stmt.execute(params![id, value(id)]).expect("sqlite insert");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().expect("sqlite inserter");
    }
    let theirs = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    t.row(
        "32 concurrent durable inserters",
        format!("{ours:.0} rows/s"),
        format!("{theirs:.0} rows/s"),
        format!("{:.2}× the throughput", ours / theirs),
        "floor: ≥ 3× SQLite's throughput",
    );
}

/// One lineitem row: orderkey, linenumber, quantity, extendedprice, discount, tax,
/// returnflag, linestatus, shipdate (days since 1970-01-01).
struct Line {
    orderkey: i64,
    linenumber: i64,
    quantity: f64,
    price: f64,
    discount: f64,
    tax: f64,
    returnflag: &'static str,
    linestatus: &'static str,
    shipdate: i32,
}

/// 1992-01-02 and 1998-12-01 as days since the epoch.
const SHIP_FIRST: i32 = 8036;
const SHIP_LAST: i32 = 10561;

fn lines(n: usize) -> Vec<Line> {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    (0..n)
        .map(|i| {
            let quantity = (1 + rng.below(50)) as f64;
            let unit = 900.0 + rng.below(20_000) as f64 / 100.0;
            let shipdate = SHIP_FIRST + rng.below((SHIP_LAST - SHIP_FIRST) as u64) as i32;
            Line {
                orderkey: (i / 4) as i64,
                linenumber: (i % 4) as i64 + 1,
                quantity,
                price: quantity * unit,
                discount: rng.below(11) as f64 / 100.0,
                tax: rng.below(9) as f64 / 100.0,
                returnflag: ["A", "N", "R"][rng.below(3) as usize],
                linestatus: if shipdate > 9_300 { "O" } else { "F" },
                shipdate,
            }
        })
        .collect()
}

fn date_text(days: i32) -> String {
    Datum::Date(days).to_string()
}

const Q1: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
    sum(l_extendedprice) AS sum_base_price, \
    sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, \
    avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, \
    avg(l_discount) AS avg_disc, count(*) AS count_order \
    FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";
const Q6: &str = "SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem \
    WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
    AND l_discount >= 0.05 AND l_discount <= 0.07 AND l_quantity < 24";
const SCAN: &str = "SELECT sum(l_quantity) AS q FROM lineitem";

/// SQLite stores dates as ISO text, so its date literals are plain strings.
fn for_sqlite(sql: &str) -> String {
    sql.replace("DATE '", "'")
}

/// A query's result as rows of rounded numbers and text, comparable across engines.
fn canonical(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    use strata_sql::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("fmt"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| round_text(&f.value(r).to_string()))
                    .collect(),
            );
        }
    }
    out
}

fn round_text(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) => format!("{:.6e}", x),
        Err(_) => v.to_string(),
    }
}

fn sqlite_rows(conn: &Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            let mut row = Vec::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                row.push(match v {
                    rusqlite::types::Value::Integer(x) => round_text(&x.to_string()),
                    rusqlite::types::Value::Real(x) => round_text(&x.to_string()),
                    rusqlite::types::Value::Text(s) => s,
                    other => format!("{other:?}"),
                });
            }
            Ok(row)
        })
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// The median of `runs` timed runs of `f`, after one untimed run.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn analytic(
    rt: &tokio::runtime::Runtime,
    s: &mut Session,
    lite: &Connection,
    n: usize,
    only: &[&str],
    runs: usize,
    t: &mut Table,
) {
    println!("generating {n} lineitem rows ...");
    let data = lines(n);
    let load = Instant::now();
    rt.block_on(async {
        s.execute(
            "CREATE TABLE lineitem (l_orderkey BIGINT, l_linenumber INTEGER, \
             l_quantity DOUBLE NOT NULL, l_extendedprice DOUBLE NOT NULL, \
             l_discount DOUBLE NOT NULL, l_tax DOUBLE NOT NULL, l_returnflag TEXT NOT NULL, \
             l_linestatus TEXT NOT NULL, l_shipdate DATE NOT NULL, \
             PRIMARY KEY (l_orderkey, l_linenumber))",
        )
        .await
        .expect("create lineitem");
        for (k, chunk) in data.chunks(LOAD_CHUNK).enumerate() {
            let values: Vec<String> = chunk
                .iter()
                .map(|l| {
                    format!(
                        "({}, {}, {:?}, {:?}, {:?}, {:?}, '{}', '{}', DATE '{}')",
                        l.orderkey,
                        l.linenumber,
                        l.quantity,
                        l.price,
                        l.discount,
                        l.tax,
                        l.returnflag,
                        l.linestatus,
                        date_text(l.shipdate)
                    )
                })
                .collect();
            s.execute(&format!("INSERT INTO lineitem VALUES {}", values.join(",")))
                .await
                .expect("load lineitem");
            if (k + 1) % 100 == 0 {
                println!("  {} rows", (k + 1) * LOAD_CHUNK);
            }
        }
    });
    let ours_load = load.elapsed();
    let load = Instant::now();
    lite.execute_batch(
        "CREATE TABLE lineitem (l_orderkey INTEGER, l_linenumber INTEGER, \
         l_quantity REAL NOT NULL, l_extendedprice REAL NOT NULL, l_discount REAL NOT NULL, \
         l_tax REAL NOT NULL, l_returnflag TEXT NOT NULL, l_linestatus TEXT NOT NULL, \
         l_shipdate TEXT NOT NULL, PRIMARY KEY (l_orderkey, l_linenumber)) WITHOUT ROWID; BEGIN",
    )
    .expect("sqlite lineitem");
    {
        let mut ins = lite
            .prepare("INSERT INTO lineitem VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
            .expect("prepare");
        for l in &data {
            ins.execute(params![
                l.orderkey,
                l.linenumber,
                l.quantity,
                l.price,
                l.discount,
                l.tax,
                l.returnflag,
                l.linestatus,
                date_text(l.shipdate)
            ])
            .expect("sqlite load");
        }
    }
    lite.execute_batch("COMMIT").expect("commit");
    let theirs_load = load.elapsed();
    t.row(
        &format!("load {n} lineitem rows"),
        format!("{:.1} s ({:.0} rows/s)", ours_load.as_secs_f64(), n as f64 / ours_load.as_secs_f64()),
        format!("{:.1} s ({:.0} rows/s)", theirs_load.as_secs_f64(), n as f64 / theirs_load.as_secs_f64()),
        format!("{:.2}× the time", ours_load.as_secs_f64() / theirs_load.as_secs_f64()),
        "Strata: 1,000-row INSERT statements, each its own durable transaction; SQLite: one transaction",
    );

    // DataFusion over an in-memory Arrow table of the same rows.
    let schema = Arc::new(Schema::new(vec![
        Field::new("l_orderkey", DataType::Int64, false),
        Field::new("l_linenumber", DataType::Int64, false),
        Field::new("l_quantity", DataType::Float64, false),
        Field::new("l_extendedprice", DataType::Float64, false),
        Field::new("l_discount", DataType::Float64, false),
        Field::new("l_tax", DataType::Float64, false),
        Field::new("l_returnflag", DataType::Utf8, false),
        Field::new("l_linestatus", DataType::Utf8, false),
        Field::new("l_shipdate", DataType::Date32, false),
    ]));
    let batches: Vec<RecordBatch> = data
        .chunks(8192)
        .map(|c| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(c.iter().map(|l| l.orderkey))),
                Arc::new(Int64Array::from_iter_values(c.iter().map(|l| l.linenumber))),
                Arc::new(Float64Array::from_iter_values(c.iter().map(|l| l.quantity))),
                Arc::new(Float64Array::from_iter_values(c.iter().map(|l| l.price))),
                Arc::new(Float64Array::from_iter_values(c.iter().map(|l| l.discount))),
                Arc::new(Float64Array::from_iter_values(c.iter().map(|l| l.tax))),
                Arc::new(StringArray::from_iter_values(
                    c.iter().map(|l| l.returnflag),
                )),
                Arc::new(StringArray::from_iter_values(
                    c.iter().map(|l| l.linestatus),
                )),
                Arc::new(Date32Array::from_iter_values(c.iter().map(|l| l.shipdate))),
            ];
            RecordBatch::try_new(schema.clone(), cols).expect("batch")
        })
        .collect();
    drop(data);
    let df = SessionContext::new_with_config(
        strata_sql::datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    df.register_table(
        "lineitem",
        Arc::new(MemTable::try_new(schema, vec![batches]).expect("mem table")),
    )
    .expect("register");

    for (id, name, sql, note) in [
        (
            "q1",
            "TPC-H Q1-like aggregate",
            Q1,
            "floor: faster than SQLite",
        ),
        (
            "q6",
            "TPC-H Q6-like aggregate",
            Q6,
            "floor: faster than SQLite",
        ),
        (
            "scan",
            "full scan, sum of one column",
            SCAN,
            "floor: ≥ 1,000,000 rows/s",
        ),
    ] {
        if !only.contains(&id) {
            continue;
        }
        let ours_rows = match rt.block_on(s.execute(sql)).expect("strata query") {
            Output::Rows(r) => canonical(&r.batches),
            _ => panic!("expected rows"),
        };
        let df_rows = rt.block_on(async {
            canonical(
                &df.sql(sql)
                    .await
                    .expect("plan")
                    .collect()
                    .await
                    .expect("run"),
            )
        });
        let lite_sql = for_sqlite(sql);
        let lite_rows = sqlite_rows(lite, &lite_sql);
        assert_eq!(ours_rows, df_rows, "{name}: Strata and DataFusion differ");
        assert_eq!(ours_rows, lite_rows, "{name}: Strata and SQLite differ");
        // From the store (column copies off), then from a column copy: the first run with
        // copies on makes it, or adds this query's columns to the one an earlier aggregate
        // made (the first run above noted the table's state).
        strata_sql::set_column_copy_budget(0);
        let ours_store = median_of(runs, || {
            std::hint::black_box(rt.block_on(s.execute(sql)).expect("strata query"));
        });
        strata_sql::set_column_copy_budget(COLUMN_COPY_BUDGET);
        let made = Instant::now();
        rt.block_on(s.execute(sql)).expect("strata query");
        let making = made.elapsed();
        let ours = median_of(runs, || {
            std::hint::black_box(rt.block_on(s.execute(sql)).expect("strata query"));
        });
        match rt.block_on(s.execute(sql)).expect("strata query") {
            Output::Rows(r) => assert_eq!(
                canonical(&r.batches),
                lite_rows,
                "{name}: Strata from a column copy and SQLite differ"
            ),
            _ => panic!("expected rows"),
        }
        let arrow = median_of(runs, || {
            rt.block_on(async {
                std::hint::black_box(
                    df.sql(sql)
                        .await
                        .expect("plan")
                        .collect()
                        .await
                        .expect("run"),
                );
            })
        });
        let mut stmt = lite.prepare(&lite_sql).expect("prepare");
        let theirs = median_of(runs, || {
            let rows = stmt
                .query_map([], |r| r.get::<_, rusqlite::types::Value>(0))
                .expect("query")
                .count();
            std::hint::black_box(rows);
        });
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let extra = if sql == SCAN {
            format!("; Strata scans {:.0} rows/s", n as f64 / ours.as_secs_f64())
        } else {
            String::new()
        };
        let store_extra = if sql == SCAN {
            format!(
                "; Strata scans {:.0} rows/s",
                n as f64 / ours_store.as_secs_f64()
            )
        } else {
            String::new()
        };
        t.row(
            &format!("{name}, from the store"),
            format!(
                "{} (DataFusion on Arrow in memory: {})",
                ms(ours_store),
                ms(arrow)
            ),
            ms(theirs),
            format!(
                "{:.2}× the time; {:.2}× DataFusion-in-memory",
                ours_store.as_secs_f64() / theirs.as_secs_f64(),
                ours_store.as_secs_f64() / arrow.as_secs_f64()
            ),
            &format!("{note}{store_extra}; column copies off"),
        );
        t.row(
            &format!("{name}, from a column copy"),
            format!(
                "{} (the first run with copies on: {})",
                ms(ours),
                ms(making)
            ),
            ms(theirs),
            format!(
                "{:.2}× the time; {:.2}× DataFusion-in-memory",
                ours.as_secs_f64() / theirs.as_secs_f64(),
                ours.as_secs_f64() / arrow.as_secs_f64()
            ),
            &format!("{note}{extra}; the table unchanged since the scans before"),
        );
    }
}
