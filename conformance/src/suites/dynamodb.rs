//! DynamoDB-specific failure modes: a process dies half-way through a commit too large for
//! one transaction; the endpoint goes away and comes back under a client; two processes
//! increment the same counters; three processes run SQL transactions on one table.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use strata_engine::{
    AtomicWrite, CommitOutcome, Engine, EngineConfig, EngineError, ReadAt, ReadRange, Value,
};

use crate::{
    cases, ensure, ensure_eq, open_backend, u64_at, BackendKind, CaseResult, Harness, Step, Suite,
};

pub fn suite() -> Suite {
    Suite {
        name: "dynamodb",
        needs_persistence: true,
        needs_multi_writer: true,
        external: true,
        cases: cases![
            a_process_killed_mid_large_commit_leaves_nothing_partial,
            the_endpoint_going_away_gives_clear_errors_then_recovers,
            two_processes_increment_the_same_counters,
            sql_transactions_from_three_processes_keep_the_total,
            the_command_copies_lists_and_drops_on_a_table,
            requests_per_operation,
            sql_requests_per_statement,
            missing_and_misshaped_tables_are_clear_errors,
            a_commit_whose_answer_is_lost_applies_once,
        ],
    }
}

fn only_dynamodb(h: &Harness) -> CaseResult {
    if h.kind != BackendKind::Dynamodb {
        return Err("SKIP: DynamoDB only".into());
    }
    Ok(())
}

const BIG: usize = 300;

/// Child mode `large-commit`: one commit of [`BIG`] keys, dying half-way through it.
pub async fn die_in_large_commit(dir: &std::path::Path) -> Result<(), String> {
    strata_backend_dynamodb::EXIT_DURING_LARGE_COMMIT.store(true, Ordering::SeqCst);
    let engine = Engine::new(
        open_backend(BackendKind::Dynamodb, dir).await?,
        EngineConfig::default(),
    );
    let db = engine.open_or_create("crash").await.step("open")?;
    let mut w = AtomicWrite::new();
    for i in 0..BIG {
        w = w.set(
            format!("big/{i:04}").into_bytes(),
            Value::bytes(vec![1; 100]),
        );
    }
    db.atomic_write(w).await.step("large commit")?;
    Err("the process should have died during the commit".into())
}

/// Child mode `increment`: `n` check-and-set increments over 3 counters.
pub async fn increment(dir: &std::path::Path, n: u64) -> Result<(), String> {
    let engine = Engine::new(
        open_backend(BackendKind::Dynamodb, dir).await?,
        EngineConfig::default(),
    );
    let db = engine.open_or_create("counters").await.step("open")?;
    for i in 0..n {
        let key = format!("c/{}", i % 3).into_bytes();
        loop {
            let cur = db.get(&key).await.step("get")?;
            let (check, v) = match &cur {
                Some(e) => (Some(e.versionstamp), e.value.as_u64().unwrap_or(0)),
                None => (None, 0),
            };
            let w = AtomicWrite::new()
                .check(key.clone(), check)
                .set(key.clone(), Value::u64(v + 1));
            if let CommitOutcome::Committed(_) = db.atomic_write(w).await.step("commit")? {
                break;
            }
        }
    }
    engine.close().await;
    Ok(())
}

/// Accounts of the multi-process SQL case, each starting at 100.
const SQL_ACCOUNTS: u64 = 6;

/// Child mode `sql-transfers`: `n` transfers between accounts, each an explicit SQL
/// transaction retried on serialization failures (40001) and followed by an audit of the
/// total. Prints how many committed.
pub async fn sql_transfers(dir: &std::path::Path, process: u64, n: u64) -> Result<(), String> {
    use strata_sql::{Datum, Output, Session};
    let engine = Arc::new(Engine::new(
        open_backend(BackendKind::Dynamodb, dir).await?,
        EngineConfig::default(),
    ));
    let mut s = Session::new(engine.clone());
    s.execute("USE bank").await.step("use bank")?;
    let mut committed = 0;
    for i in 0..n {
        let from = (process * 5 + i * 3) % SQL_ACCOUNTS;
        let to = (from + 1 + (i + process) % (SQL_ACCOUNTS - 1)) % SQL_ACCOUNTS;
        if crate::suites::sql::transfer(&mut s, from as i64, to as i64, 5).await? {
            committed += 1;
        }
        let total = match s.execute("SELECT sum(balance) FROM accounts").await {
            Ok(Output::Rows(r)) => r.rows().map_err(|e| e.to_string())?,
            other => return Err(format!("audit: {other:?}")),
        };
        if total != vec![vec![Datum::Int(SQL_ACCOUNTS as i64 * 100)]] {
            return Err(format!("process {process} audited {total:?}"));
        }
    }
    println!("{committed}");
    engine.close().await;
    Ok(())
}

async fn sql_transactions_from_three_processes_keep_the_total(h: &Harness) -> CaseResult {
    use strata_sql::{Output, Session};
    only_dynamodb(h)?;
    let engine = Arc::new(h.engine());
    let mut s = Session::new(engine.clone());
    for sql in [
        "CREATE DATABASE bank".to_string(),
        "USE bank".to_string(),
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL \
         CHECK (balance >= 0))"
            .to_string(),
        format!(
            "INSERT INTO accounts VALUES {}",
            (0..SQL_ACCOUNTS)
                .map(|i| format!("({i}, 100)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ] {
        s.execute(&sql).await.step(&sql)?;
    }
    let n = 5u64;
    let count = n.to_string();
    let args: Vec<[&str; 4]> = ["0", "1", "2"]
        .into_iter()
        .map(|p| ["--count", count.as_str(), "--process", p])
        .collect();
    // No lock is shared: the three processes meet only in the table's conditional writes.
    let (a, b, c) = tokio::join!(
        child(h, "sql-transfers", &args[0]),
        child(h, "sql-transfers", &args[1]),
        child(h, "sql-transfers", &args[2])
    );
    let mut committed = 0u64;
    for out in [a?, b?, c?] {
        ensure!(
            out.status.success(),
            "a SQL process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        committed += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .step("committed count")?;
    }
    ensure!(committed > 0, "no transfer committed");
    match s
        .execute("SELECT sum(balance), count(*) FROM accounts")
        .await
    {
        Ok(Output::Rows(r)) => ensure_eq!(
            r.rows().step("rows")?,
            vec![vec![
                strata_sql::Datum::Int(SQL_ACCOUNTS as i64 * 100),
                strata_sql::Datum::Int(SQL_ACCOUNTS as i64)
            ]]
        ),
        other => return Err(format!("total: {other:?}")),
    }
    let reports = s.check().await.step("check")?;
    for r in reports {
        ensure!(r.problems.is_empty(), "{}: {:?}", r.table, r.problems);
    }
    Ok(())
}

async fn child(h: &Harness, mode: &str, extra: &[&str]) -> Result<std::process::Output, String> {
    let exe = h.exe.as_ref().ok_or("the runner binary is unknown")?;
    Command::new(exe)
        .args([mode, "--dir"])
        .arg(h.dir())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| e.to_string())
}

async fn a_process_killed_mid_large_commit_leaves_nothing_partial(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let engine = h.engine();
    let db = engine.open_or_create("crash").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"before".to_vec(), Value::u64(1)))
        .await
        .step("seed")?;
    let out = child(h, "large-commit", &[]).await?;
    ensure!(
        !out.status.success(),
        "the child was meant to die: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("fault injection"),
        "died elsewhere: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Readers see none of the dead commit.
    let read = db
        .snapshot_read(&[ReadRange::prefix(b"big/", 1000)], ReadAt::Latest)
        .await
        .step("read")?;
    ensure_eq!(read.ranges[0].len(), 0);
    // The next writer recovers (aborting the stalled commit) and commits.
    let w = AtomicWrite::new()
        .set(b"after".to_vec(), Value::u64(2))
        .set(b"big/0000".to_vec(), Value::u64(3));
    db.atomic_write(w).await.step("next writer")?;
    let read = db
        .snapshot_read(&[ReadRange::prefix(b"big/", 1000)], ReadAt::Latest)
        .await
        .step("read")?;
    ensure_eq!(read.ranges[0].len(), 1);
    ensure_eq!(read.ranges[0][0].value.as_u64(), Some(3));
    ensure!(
        db.get(b"before").await.step("get")?.is_some(),
        "earlier data intact"
    );
    Ok(())
}

/// A TCP proxy in front of the endpoint that can be stopped (connections refused and cut)
/// and started again, as a server restart looks to a client.
struct Proxy {
    up: Arc<AtomicBool>,
    port: u16,
}

impl Proxy {
    async fn start(target: String) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (target, flag) = (target.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async { while flag.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
                    }
                });
            }
        });
        Ok(Proxy { up, port })
    }
}

async fn the_endpoint_going_away_gives_clear_errors_then_recovers(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let target = crate::emulator_endpoint()?
        .trim_start_matches("http://")
        .to_string();
    let proxy = Proxy::start(target).await?;
    let backend = crate::dynamodb_through(h, &format!("http://127.0.0.1:{}", proxy.port)).await?;
    let engine = Engine::new(
        backend,
        EngineConfig {
            background_tasks: false,
            ..Harness::config()
        },
    );
    let db = engine.open_or_create("flaky").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("write")?;

    proxy.up.store(false, Ordering::SeqCst);
    let failed = db
        .atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(2)))
        .await;
    match &failed {
        Err(e @ EngineError::Backend(_)) => ensure!(
            e.is_retryable(),
            "an unreachable endpoint is a retryable error: {e}"
        ),
        other => {
            return Err(format!(
                "a write while the endpoint is down must fail clearly, got {other:?}"
            ))
        }
    }
    let read = db.get(b"k").await;
    ensure!(
        read.is_err(),
        "a read while the endpoint is down fails: {read:?}"
    );

    proxy.up.store(true, Ordering::SeqCst);
    // Recovery: the first call after the restart may still find the write in doubt; the
    // write either applied entirely or not at all.
    let after = u64_at(&db, b"k").await?;
    ensure!(
        after == Some(1) || after == Some(2),
        "the value is one of the two writes: {after:?}"
    );
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(3)))
        .await
        .step("write after restart")?;
    ensure_eq!(u64_at(&db, b"k").await?, Some(3));
    Ok(())
}

async fn two_processes_increment_the_same_counters(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let n = 30u64;
    let count = n.to_string();
    let args = ["--count", count.as_str()];
    let (a, b) = tokio::join!(child(h, "increment", &args), child(h, "increment", &args));
    for out in [a?, b?] {
        ensure!(
            out.status.success(),
            "incrementer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let engine = h.engine();
    let db = engine.database("counters").await.step("open")?;
    let keys: Vec<Vec<u8>> = (0..3).map(|i| format!("c/{i}").into_bytes()).collect();
    let total: u64 = db
        .get_many(&keys, ReadAt::Latest)
        .await
        .step("read")?
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_u64())
        .sum();
    ensure_eq!(total, 2 * n);
    Ok(())
}

async fn the_command_copies_lists_and_drops_on_a_table(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let engine = h.engine();
    let db = engine.open_or_create("app").await.step("open")?;
    let mut w = AtomicWrite::new().enqueue(strata_engine::Enqueue::now(Value::v8(vec![1])));
    for i in 0..50u32 {
        w = w.set(format!("k/{i:03}").into_bytes(), Value::u64(i as u64));
    }
    db.atomic_write(w).await.step("seed")?;
    let bin = crate::suites::clients::strata_bin()?;
    let store = crate::dynamodb_store_url(h.dir())?;
    let out_dir = h.dir().join("copy");
    let target = format!("sqlite:{}", out_dir.display());
    let run = |args: Vec<String>| {
        let bin = bin.clone();
        async move {
            Command::new(bin)
                .args(args)
                .output()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let copied = run(vec!["copy".into(), store.clone(), target]).await?;
    let log = String::from_utf8_lossy(&copied.stderr).to_string();
    ensure!(copied.status.success(), "copy failed: {log}");
    ensure!(
        log.contains("copied app: 50 entries, 1 queued messages; verified"),
        "{log}"
    );
    let listed = run(vec![
        "--store".into(),
        store.clone(),
        "db".into(),
        "list".into(),
    ])
    .await?;
    ensure_eq!(
        String::from_utf8_lossy(&listed.stdout).to_string(),
        "app\n".to_string()
    );
    let dropped = run(vec![
        "--store".into(),
        store.clone(),
        "db".into(),
        "drop".into(),
        "app".into(),
    ])
    .await?;
    ensure!(
        dropped.status.success(),
        "drop failed: {}",
        String::from_utf8_lossy(&dropped.stderr)
    );
    let listed = run(vec!["--store".into(), store, "db".into(), "list".into()]).await?;
    ensure_eq!(
        String::from_utf8_lossy(&listed.stdout).to_string(),
        String::new()
    );
    Ok(())
}

/// Cost is part of performance: the DynamoDB requests each engine operation makes (printed
/// for docs/benchmarks.md, and held to the targets).
/// The requests made since `before` (a snapshot of `counts`), by operation.
fn requests_since(
    counts: &strata_backend_dynamodb::RequestCounts,
    before: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    counts
        .snapshot()
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

async fn requests_per_operation(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let backend = h.dynamodb().ok_or("no DynamoDB backend")?.clone();
    let config = EngineConfig {
        background_tasks: false,
        follow_interval_ms: 3_600_000,
        ..Harness::config()
    };
    let engine = Engine::new(backend.clone(), config);
    let db = engine.open_or_create("cost").await.step("open")?;
    let mut seed = AtomicWrite::new();
    for i in 0..20u32 {
        seed = seed.set(format!("k/{i:02}").into_bytes(), Value::u64(0));
    }
    db.atomic_write(seed).await.step("seed")?;
    let counts = backend.request_counts();
    let measure = |before| requests_since(counts, before);
    let before = counts.snapshot();
    db.get(b"k/07").await.step("get")?;
    let get = measure(before);
    let before = counts.snapshot();
    let mut w = AtomicWrite::new();
    for i in 0..20u32 {
        w = w.set(format!("k/{i:02}").into_bytes(), Value::u64(1));
    }
    db.atomic_write(w).await.step("20-key commit")?;
    let commit20 = measure(before);
    let before = counts.snapshot();
    db.atomic_write(AtomicWrite::new().mutate(strata_engine::Mutation::sum(b"k/00".to_vec(), 1)))
        .await
        .step("1-key commit")?;
    let commit1 = measure(before);
    let before = counts.snapshot();
    let mut t = db.begin().await.step("begin")?;
    for i in 0..5u32 {
        let k = format!("k/{i:02}").into_bytes();
        let v = t
            .get(&k)
            .await
            .step("txn get")?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        t.set(&k, Value::u64(v + 1)).step("txn set")?;
    }
    t.commit().await.step("txn commit")?;
    let txn5 = measure(before);
    let before = counts.snapshot();
    db.snapshot_read(&[ReadRange::prefix(b"k/", 100)], ReadAt::Latest)
        .await
        .step("range")?;
    let range = measure(before);
    let keys: Vec<Vec<u8>> = (0..150u32)
        .map(|i| format!("k/{i:02}").into_bytes())
        .collect();
    let before = counts.snapshot();
    let found = db.get_many(&keys, ReadAt::Latest).await.step("get_many")?;
    let many = measure(before);
    ensure_eq!(found.iter().filter(|e| e.is_some()).count(), 20);
    // A range whose every key was rewritten after the read version: history lookups are
    // bounded, then the range is read precisely.
    let old = db.version();
    let mut w = AtomicWrite::new();
    for i in 0..20u32 {
        w = w.set(format!("k/{i:02}").into_bytes(), Value::u64(7));
    }
    db.atomic_write(w).await.step("rewrite")?;
    let before = counts.snapshot();
    let at_old = db
        .snapshot_read(&[ReadRange::prefix(b"k/", 100)], ReadAt::Version(old))
        .await
        .step("range at an old version")?;
    let old_range = measure(before);
    ensure_eq!(at_old.ranges[0].len(), 20);
    ensure!(
        at_old.ranges[0].iter().all(|e| e.value.as_u64() != Some(7)),
        "the old version's values"
    );
    eprintln!("requests: get {get:?}; 20-key commit {commit20:?}; 1-key commit {commit1:?}; 5-key transaction {txn5:?}; 20-entry range {range:?}; 150-key get_many {many:?}; 20-entry range, all rewritten since {old_range:?}");
    // get_many: one version-record check before and one after, one BatchGetItem per 100 keys.
    ensure_eq!(many.get("BatchGetItem").copied(), Some(2));
    ensure!(
        many.get("GetItem").copied().unwrap_or(0) <= 2 && !many.contains_key("Query"),
        "get_many reads no key alone: {many:?}"
    );
    // A latest range: the version record before and after, one Query.
    ensure_eq!(range.get("Query").copied(), Some(1));
    ensure!(
        range.get("GetItem").copied().unwrap_or(0) <= 2,
        "a range read costs at most two point reads: {range:?}"
    );
    let bound = strata_engine::MAX_HISTORY_LOOKUPS as u64 + 1 + 4;
    ensure!(
        old_range.get("Query").copied().unwrap_or(0) <= bound,
        "history lookups per scan are bounded ({bound}): {old_range:?}"
    );
    ensure_eq!(
        get,
        std::collections::BTreeMap::from([("GetItem".to_string(), 1)])
    );
    ensure_eq!(commit20.get("TransactWriteItems").copied(), Some(1));
    let reads20: u64 = commit20
        .iter()
        .filter(|(k, _)| k.as_str() != "TransactWriteItems")
        .map(|(_, v)| v)
        .sum();
    ensure!(
        reads20 <= 1,
        "a 20-key commit makes at most one read: {commit20:?}"
    );
    ensure_eq!(commit1.get("TransactWriteItems").copied(), Some(1));
    Ok(())
}

/// What one SQL statement costs in DynamoDB requests (documented in docs/backends/dynamodb.md).
async fn sql_requests_per_statement(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let backend = h.dynamodb().ok_or("no DynamoDB backend")?.clone();
    let config = EngineConfig {
        background_tasks: false,
        follow_interval_ms: 3_600_000,
        ..Harness::config()
    };
    let engine = std::sync::Arc::new(Engine::new(backend.clone(), config));
    let mut s = strata_sql::Session::new(engine.clone());
    let run = |r: Result<strata_sql::Output, strata_sql::SqlError>, what: &str| {
        r.map_err(|e| format!("{what}: {e}"))
    };
    run(
        s.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
            .await,
        "create",
    )?;
    run(
        s.execute("INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)")
            .await,
        "seed",
    )?;
    // Warm the session (the database is open, the version known), as a server's would be.
    run(
        s.execute("SELECT name FROM items WHERE id = 2").await,
        "warm",
    )?;
    let counts = backend.request_counts();
    let measure = |before| requests_since(counts, before);
    let before = counts.snapshot();
    run(
        s.execute("SELECT name FROM items WHERE id = 2").await,
        "point select",
    )?;
    let select = measure(before);
    let before = counts.snapshot();
    run(
        s.execute("UPDATE items SET qty = qty + 1 WHERE id = 2")
            .await,
        "point update",
    )?;
    let update = measure(before);
    let values: Vec<String> = (100..200).map(|i| format!("({i}, 'n{i}', {i})")).collect();
    let before = counts.snapshot();
    run(
        s.execute(&format!("INSERT INTO items VALUES {}", values.join(", ")))
            .await,
        "100-row insert",
    )?;
    let insert100 = measure(before);
    eprintln!("sql requests: point select {select:?}; point update {update:?}; 100-row insert {insert100:?}");
    let total = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
    ensure!(
        !select.contains_key("Query") && !select.contains_key("TransactWriteItems"),
        "a point select reads points only: {select:?}"
    );
    // Measured: select 5 GetItem; update 5 GetItem + 1 BatchGetItem + 1 TransactWriteItems
    // (table definitions shared by schema version, one row read per point statement);
    // 100-row insert 322 requests (two reads per key check, and a commit of the rows and
    // their row-count shard, over the 100-item
    // transaction limit staged item by item). The bounds catch regressions;
    // docs/backends/dynamodb.md says where the reads go.
    ensure!(
        total(&select) <= 5,
        "a point select costs at most 5 requests: {select:?}"
    );
    ensure_eq!(update.get("TransactWriteItems").copied(), Some(1));
    ensure!(
        total(&update) <= 7,
        "a point update costs at most 7 requests: {update:?}"
    );
    ensure!(
        insert100.get("TransactWriteItems").copied().unwrap_or(0) <= 2,
        "a 100-row insert commits in at most two transactions: {insert100:?}"
    );
    ensure!(total(&insert100) <= 330, "a 100-row insert: {insert100:?}");
    Ok(())
}

async fn missing_and_misshaped_tables_are_clear_errors(h: &Harness) -> CaseResult {
    use strata_backend_dynamodb::aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    only_dynamodb(h)?;
    let url = std::env::var(crate::DYNAMODB_ENV).map_err(|e| e.to_string())?;
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let base = crate::dynamodb_table_for(h.dir());
    let connect = |table: String| {
        let rest = format!("{table}?{query}");
        async move {
            let config = strata_backend_dynamodb::DynamoConfig::parse(&rest)?;
            strata_backend_dynamodb::DynamoBackend::connect(config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let missing = connect(format!("{base}-missing")).await;
    ensure!(
        matches!(&missing, Err(e) if e.contains("does not exist") && e.contains("--create-table")),
        "missing table: {missing:?}"
    );

    let odd = format!("{base}-odd");
    let client = h.dynamodb().ok_or("no DynamoDB backend")?.client();
    let build = |e: strata_backend_dynamodb::aws_sdk_dynamodb::error::BuildError| e.to_string();
    client
        .create_table()
        .table_name(&odd)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .map_err(build)?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)?,
        )
        .send()
        .await
        .map_err(|e| format!("create a table of another shape: {e}"))?;
    let wrong = connect(odd).await;
    ensure!(
        matches!(&wrong, Err(e) if e.contains("wrong key schema")),
        "misshaped table: {wrong:?}"
    );
    Ok(())
}

/// A commit whose `TransactWriteItems` reached the table but whose answer was dropped on the
/// way back (through a proxy that forwards the request, reads the answer and closes the
/// connection): the SDK retries, the retry fails its condition, and the engine must still
/// see that the batch applied — once. Sums are not applied twice, messages not enqueued
/// twice, passed checks not reported failed, acks not turned into `LeaseLost`.
async fn a_commit_whose_answer_is_lost_applies_once(h: &Harness) -> CaseResult {
    use crate::fault_proxy::{Fault, FaultProxy, FaultRule};
    only_dynamodb(h)?;
    let proxy = FaultProxy::start(&crate::emulator_endpoint()?)
        .await
        .map_err(|e| format!("start the proxy: {e}"))?;
    let backend = crate::dynamodb_through(h, &proxy.endpoint()).await?;
    let engine = Engine::new(
        backend,
        EngineConfig {
            background_tasks: false,
            follow_interval_ms: 3_600_000,
            ..Harness::config()
        },
    );
    let db = engine.open_or_create("in-doubt").await.step("open")?;
    let seeded = db
        .atomic_write(AtomicWrite::new().set(b"checked".to_vec(), Value::u64(1)))
        .await
        .step("seed")?
        .versionstamp()
        .ok_or("seed did not commit")?;
    let lose_next_commit = || {
        proxy.add_rule(
            FaultRule::new(Fault::DropResponse)
                .on_target("DynamoDB_20120810.TransactWriteItems")
                .next(1),
        )
    };

    lose_next_commit();
    let outcome = db
        .atomic_write(
            AtomicWrite::new()
                .check(b"checked".to_vec(), Some(seeded))
                .mutate(strata_engine::Mutation::sum(b"counter".to_vec(), 5))
                .enqueue(strata_engine::Enqueue::now(Value::bytes(b"job".to_vec()))),
        )
        .await
        .step("the commit whose answer is lost")?;
    let dropped = proxy.counts();
    ensure!(
        dropped.total.faults() >= 1,
        "the proxy dropped an answer: {dropped:?}"
    );
    ensure!(
        matches!(outcome, CommitOutcome::Committed(_)),
        "a check that passed is reported as passed: {outcome:?}"
    );
    ensure_eq!(u64_at(&db, b"counter").await?, Some(5));
    ensure_eq!(db.queue_len().await.step("queue length")?, 1);

    let leased = db
        .lease(1, std::time::Duration::from_secs(60))
        .await
        .step("lease")?;
    let m = leased.first().ok_or("the message was not leased")?;
    lose_next_commit();
    db.ack(m.id, m.lease)
        .await
        .step("ack whose answer is lost")?;
    ensure_eq!(db.queue_len().await.step("queue length")?, 0);
    let next = db
        .atomic_write(
            AtomicWrite::new().mutate(strata_engine::Mutation::sum(b"counter".to_vec(), 1)),
        )
        .await
        .step("a commit after")?;
    ensure!(matches!(next, CommitOutcome::Committed(_)), "{next:?}");
    ensure_eq!(u64_at(&db, b"counter").await?, Some(6));

    // The answer is lost and the table cannot be asked afterwards (every point read cut):
    // the outcome is unknown, and the error says so instead of inviting a blind retry.
    lose_next_commit();
    proxy.add_rule(
        FaultRule::new(Fault::CloseWithoutForwarding)
            .on_target("DynamoDB_20120810.GetItem")
            .next(1000),
    );
    let unknown = db
        .atomic_write(
            AtomicWrite::new().mutate(strata_engine::Mutation::sum(b"counter".to_vec(), 1)),
        )
        .await;
    ensure!(
        matches!(&unknown, Err(e @ EngineError::CommitResultUnknown { .. }) if !e.is_retryable()),
        "a commit that cannot be settled is in doubt, not retryable: {unknown:?}"
    );
    proxy.clear_rules();
    // It did apply (the answer was only lost), exactly once, and the database goes on.
    ensure_eq!(u64_at(&db, b"counter").await?, Some(7));
    db.atomic_write(
        AtomicWrite::new().mutate(strata_engine::Mutation::sum(b"counter".to_vec(), 1)),
    )
    .await
    .step("a commit after an unknown one")?;
    ensure_eq!(u64_at(&db, b"counter").await?, Some(8));
    Ok(())
}
