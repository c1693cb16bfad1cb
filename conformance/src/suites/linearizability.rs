//! Linearizability: every operation on a key appears to take effect at one instant between
//! its call and its return, as if on one copy of the data.
//!
//! Concurrent clients run a random mix of gets, sets, deletes and compare-and-sets (a read,
//! then a write checked on the versionstamp the read saw) on a few keys, and record each
//! call with its interval; the checker in [`crate::linearizability`] then searches for an
//! order that explains every result, and a violation fails the case with a few operations
//! that contradict each other. The clients are tasks on one engine, engines sharing one
//! store, processes sharing one DynamoDB table, KV Connect clients over HTTP, and an engine
//! whose DynamoDB connection loses answers, cuts requests and is throttled. Transfers between
//! bank accounts check what one key cannot: transactions over several keys, against
//! auditors that must always see the same total.
//!
//! Reads of several keys (a snapshot read, `get_many`) are recorded as one read per key with
//! the same interval: each is held to its interval, though not to the others.

mod bank;
pub(crate) mod kv_connect;
pub(crate) mod workload;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::process::Command;

use strata_engine::{Database, Engine, EngineConfig};

use crate::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::linearizability::{History, Recorder};
use crate::{cases, ensure, open_backend, BackendKind, CaseResult, Harness, Step, Suite};
use workload::{judge, run_clients, EngineClient, KvClient, Tally, Workload};

pub fn suite() -> Suite {
    Suite {
        name: "linearizability",
        needs_persistence: false,
        needs_multi_writer: false,
        // One case runs this crate's binary as child processes.
        external: true,
        cases: cases![
            tasks_on_one_engine,
            engines_sharing_a_store,
            processes_sharing_a_store,
            bank_transfers,
            over_kv_connect,
            faults_on_dynamodb,
        ],
    }
}

/// Operations per client: DynamoDB's emulator serves one request at a time.
fn ops_per_client(h: &Harness, embedded: usize, dynamodb: usize) -> usize {
    if h.kind == BackendKind::Dynamodb {
        dynamodb
    } else {
        embedded
    }
}

/// Settings for engines sharing a store: they look for each other's commits often.
fn shared_config() -> EngineConfig {
    EngineConfig {
        follow_interval_ms: 20,
        ..Harness::config()
    }
}

fn client(db: &Database) -> Arc<dyn KvClient> {
    Arc::new(EngineClient(db.clone()))
}

/// Enough calls succeeded for the history to mean something.
fn enough(tally: &Tally) -> CaseResult {
    ensure!(
        tally.ok >= 2 * (tally.failed + tally.unknown) && tally.ok > 0,
        "too many calls failed to judge the history: {tally:?}"
    );
    Ok(())
}

async fn tasks_on_one_engine(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("lin").await.step("open")?;
    let rec = Recorder::monotonic();
    let workload = Workload::new(ops_per_client(h, 400, 40));
    let clients = (0..8).map(|c| (client(&db), c)).collect();
    let tally = run_clients(clients, &rec, &workload).await?;
    enough(&tally)?;
    judge(
        "8 tasks on one engine",
        &rec.history(),
        &rec.dropped(),
        &tally,
    )
}

async fn engines_sharing_a_store(h: &Harness) -> CaseResult {
    if !h.kind.multi_writer() {
        return Err("SKIP: one engine per store on this backend".into());
    }
    let engines: Vec<Engine> = (0..3)
        .map(|_| Engine::new(h.shared_backend(), shared_config()))
        .collect();
    let mut dbs = Vec::new();
    for e in &engines {
        dbs.push(e.open_or_create("lin").await.step("open")?);
    }
    let rec = Recorder::monotonic();
    let workload = Workload::new(ops_per_client(h, 300, 12));
    let clients = (0..9).map(|c| (client(&dbs[c % 3]), c as u64)).collect();
    let tally = run_clients(clients, &rec, &workload).await?;
    enough(&tally)?;
    judge(
        "9 clients on 3 engines sharing a store",
        &rec.history(),
        &rec.dropped(),
        &tally,
    )
}

/// Child processes of this suite, one per `role`, on the DynamoDB table of `h`; their
/// outputs once all have exited.
async fn children(
    h: &Harness,
    role: &str,
    count: u64,
    ops: u64,
) -> Result<Vec<std::process::Output>, String> {
    let exe = h.exe.as_ref().ok_or("the runner binary is unknown")?;
    let runs: Vec<_> = (1..=count)
        .map(|p| {
            let mut cmd = Command::new(exe);
            cmd.args(["linearizability-client", "--role", role, "--dir"])
                .arg(h.dir())
                .args(["--process", &p.to_string(), "--ops", &ops.to_string()])
                .arg("--out")
                .arg(h.dir().join(format!("{role}-{p}.jsonl")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            tokio::spawn(async move { cmd.output().await })
        })
        .collect();
    let mut outputs = Vec::new();
    for r in runs {
        outputs.push(r.await.map_err(|e| e.to_string())?);
    }
    let mut out = Vec::new();
    for (p, o) in outputs.into_iter().enumerate() {
        let o = o.map_err(|e| format!("start child {}: {e}", p + 1))?;
        ensure!(
            o.status.success(),
            "child {} ({role}) failed: {}",
            p + 1,
            String::from_utf8_lossy(&o.stderr)
        );
        out.push(o);
    }
    Ok(out)
}

/// Clients per child process.
const CHILD_CLIENTS: u64 = 2;

/// Child mode `linearizability-client`: as process `process`, run `role` on the DynamoDB
/// table of `dir` — `register`: [`CHILD_CLIENTS`] register clients of `ops` operations,
/// writing their history (system-clock times) as JSON lines to `out`; `bank`: as many
/// transfer tasks of `ops` transfers.
pub async fn child(
    role: &str,
    dir: &Path,
    process: u64,
    ops: u64,
    out: Option<&Path>,
) -> Result<(), String> {
    let engine = Engine::new(
        open_backend(BackendKind::Dynamodb, dir).await?,
        shared_config(),
    );
    let result = match role {
        "register" => {
            let out = out.ok_or("--out is required")?;
            let db = engine.database("lin").await.step("open")?;
            let rec = Recorder::system_clock();
            let workload = Workload::new(ops as usize);
            let clients = (0..CHILD_CLIENTS)
                .map(|c| (client(&db), process * 100 + c))
                .collect();
            let tally = run_clients(clients, &rec, &workload).await?;
            // For the parent's report.
            println!("calls {} {} {}", tally.ok, tally.unknown, tally.failed);
            std::fs::write(out, rec.history().to_json_lines())
                .map_err(|e| format!("write {}: {e}", out.display()))
        }
        "bank" => {
            let db = engine.database("bank").await.step("open")?;
            let tasks: Vec<_> = (0..CHILD_CLIENTS)
                .map(|c| {
                    tokio::spawn(bank::transfers(
                        db.clone(),
                        process * 100 + c,
                        ops as usize,
                        None,
                    ))
                })
                .collect();
            let mut done = 0;
            for t in tasks {
                done += t.await.map_err(|e| e.to_string())??;
            }
            println!("transfers {done}");
            Ok(())
        }
        other => Err(format!("unknown role {other:?}")),
    };
    engine.close().await;
    result
}

fn only_dynamodb(h: &Harness) -> CaseResult {
    if h.kind != BackendKind::Dynamodb {
        return Err("SKIP: DynamoDB only".into());
    }
    Ok(())
}

async fn processes_sharing_a_store(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let engine = Engine::new(h.shared_backend(), shared_config());
    let db = engine.open_or_create("lin").await.step("open")?;
    // This process is a client too, on the same clock as the children.
    let rec = Recorder::system_clock();
    let workload = Workload::new(20);
    let (outputs, tally) = tokio::join!(
        children(h, "register", 3, 20),
        run_clients(vec![(client(&db), 0)], &rec, &workload)
    );
    let (outputs, mut tally) = (outputs?, tally?);
    for o in &outputs {
        let text = String::from_utf8_lossy(&o.stdout);
        let counts: Vec<u64> = text
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [ok, unknown, failed] = counts[..] {
            tally.add(Tally {
                ok,
                unknown,
                failed,
                ..Tally::default()
            });
        }
    }
    let mut history = rec.history();
    for p in 1..=outputs.len() {
        let file = h.dir().join(format!("register-{p}.jsonl"));
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        history.merge(History::from_json_lines(&text).map_err(|e| e.to_string())?);
    }
    enough(&tally)?;
    judge(
        "3 processes x 2 clients and this one sharing a table",
        &history,
        &rec.dropped(),
        &tally,
    )
}

async fn bank_transfers(h: &Harness) -> CaseResult {
    let shared = h.kind.multi_writer();
    // Transfers from three engines over a shared store (or one, where a store has one
    // engine); on DynamoDB from two child processes as well.
    let engines: Vec<Engine> = if shared {
        (0..3)
            .map(|_| Engine::new(h.shared_backend(), shared_config()))
            .collect()
    } else {
        vec![h.engine()]
    };
    let mut dbs = Vec::new();
    for e in &engines {
        dbs.push(e.open_or_create("bank").await.step("open")?);
    }
    bank::open_accounts(&dbs[0]).await?;
    let dynamodb = h.kind == BackendKind::Dynamodb;
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(tokio::sync::watch::Sender::new(0u64));
    let auditors: Vec<_> = [false, true]
        .into_iter()
        .enumerate()
        .map(|(i, by_txn)| {
            let db = dbs[(i + 1) % dbs.len()].clone();
            let pace = if dynamodb {
                bank::Pace::OnCommit {
                    commits: progress.subscribe(),
                    heartbeat: std::time::Duration::from_millis(250),
                }
            } else {
                bank::Pace::Continuous
            };
            tokio::spawn(bank::audit(db, by_txn, done.clone(), pace))
        })
        .collect();
    let (tasks, n) = if dynamodb { (3, 4) } else { (6, 150) };
    let transfers: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let db = dbs[t as usize % dbs.len()].clone();
            tokio::spawn(bank::transfers(db, t, n, Some(progress.clone())))
        })
        .collect();
    let processes = async {
        if dynamodb {
            children(h, "bank", 2, 4).await.map(|_| ())
        } else {
            Ok(())
        }
    };
    let (processes, transferred) = tokio::join!(processes, async {
        let mut total = 0;
        for t in transfers {
            total += t.await.map_err(|e| e.to_string())??;
        }
        Ok::<u64, String>(total)
    });
    done.store(true, Ordering::SeqCst);
    progress.send_modify(|n| *n += 1);
    let mut audits = Vec::new();
    for a in auditors {
        audits.push(a.await.map_err(|e| e.to_string())?);
    }
    processes?;
    let transferred = transferred?;
    let final_balances = bank::balances(&dbs[0], false).await.step("final read")?;
    eprintln!(
        "  bank: {transferred} transfers here; audits {:?}; final balances {final_balances:?}",
        audits
            .iter()
            .map(|a| (a.reads, a.errors))
            .collect::<Vec<_>>()
    );
    for a in &audits {
        ensure!(
            a.wrong.is_empty(),
            "money appeared or vanished: {}",
            a.wrong.join("; ")
        );
        ensure!(
            a.reads > 0,
            "an auditor never read successfully ({} errors)",
            a.errors
        );
    }
    ensure!(
        final_balances.iter().sum::<u64>() == bank::TOTAL,
        "final balances {final_balances:?} do not hold {}",
        bank::TOTAL
    );
    ensure!(transferred > 0, "no transfer committed");
    Ok(())
}

async fn over_kv_connect(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let server = kv_connect::KvConnectServer::start(engine.clone()).await?;
    let mut clients: Vec<(Arc<dyn KvClient>, u64)> = Vec::new();
    for c in 0..6 {
        let http = kv_connect::HttpKv::connect(&server.url).await?;
        clients.push((Arc::new(http), c));
    }
    let rec = Recorder::monotonic();
    let workload = Workload::new(ops_per_client(h, 250, 25));
    let tally = run_clients(clients, &rec, &workload).await;
    server.stop().await?;
    let tally = tally?;
    enough(&tally)?;
    judge(
        "6 KV Connect clients over HTTP",
        &rec.history(),
        &rec.dropped(),
        &tally,
    )
}

/// An engine whose DynamoDB requests pass through a [`FaultProxy`]: answers to commits
/// lost (the SDK retries; the retry finds its conditions failed, as the first attempt
/// applied), commits never sent, reads throttled — and, once, a commit's answer lost on all
/// six of the SDK's attempts, so that the engine itself must find out whether it applied.
/// That burst costs the SDK's exponential backoff (some 15-30 s), during which the
/// database's commits wait.
async fn faults_on_dynamodb(h: &Harness) -> CaseResult {
    only_dynamodb(h)?;
    let proxy = FaultProxy::start(&crate::emulator_endpoint()?)
        .await
        .step("start the proxy")?;
    let faulty = crate::dynamodb_through(h, &proxy.endpoint()).await?;
    // One engine behind the faulty connection, one (another process, in effect) on a clean
    // one: both commit, both read. They follow each other's commits less often than
    // elsewhere: the emulator serves one request at a time, and every faulted request costs
    // the SDK a backoff.
    let config = EngineConfig {
        follow_interval_ms: 100,
        ..Harness::config()
    };
    let behind = Engine::new(faulty, config.clone());
    let clean = Engine::new(h.shared_backend(), config);
    let db = behind.open_or_create("lin").await.step("open")?;
    let other = clean.open_or_create("lin").await.step("open clean")?;
    for rule in [
        // Applied, answer lost: the SDK retries, and the retry fails its condition.
        FaultRule::new(Fault::DropResponse)
            .on_target("TransactWriteItems")
            .every_nth(3),
        FaultRule::new(Fault::DropResponse)
            .on_target("UpdateItem")
            .every_nth(4),
        FaultRule::new(Fault::DropResponse)
            .on_target("BatchGetItem")
            .every_nth(6),
        // Never sent.
        FaultRule::new(Fault::CloseWithoutForwarding)
            .on_target("TransactWriteItems")
            .every_nth(5),
        FaultRule::new(Fault::Throttle)
            .on_target("GetItem")
            .every_nth(20),
        FaultRule::new(Fault::Throttle)
            .on_target("Query")
            .every_nth(25),
    ] {
        proxy.add_rule(rule);
    }
    let proxy = Arc::new(proxy);
    // Part-way through, every answer to a commit lost for as many attempts as the SDK
    // makes (six): the engine itself must find out whether the commit applied.
    let burst = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let warm = crate::eventually(std::time::Duration::from_secs(60), || {
                let forwarded = proxy.counts().total.forwarded;
                async move { forwarded >= 100 }
            })
            .await;
            if warm {
                proxy.add_rule(
                    FaultRule::new(Fault::DropResponse)
                        .on_target("TransactWriteItems")
                        .next(6),
                );
            }
        })
    };
    let rec = Recorder::monotonic();
    let workload = Workload::new(10);
    let clients = (0..6u64)
        .map(|c| (client(if c < 4 { &db } else { &other }), c))
        .collect();
    let tally = run_clients(clients, &rec, &workload).await?;
    burst.abort();
    let bursts = proxy.rule_counts().get(6).map_or(0, |(_, fired)| *fired);
    proxy.clear_rules();
    let counts = proxy.counts();
    eprintln!(
        "  faults: {:?} in total; by operation {:?}",
        counts.total, counts.by_target
    );
    ensure!(
        bursts == 6,
        "the burst of lost commit answers fired {bursts} of 6 times: {counts:?}"
    );
    judge(
        "4 clients behind a faulty connection and 2 on a clean one",
        &rec.history(),
        &rec.dropped(),
        &tally,
    )
}
