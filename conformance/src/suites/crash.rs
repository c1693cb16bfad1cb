//! Crash safety and exclusive access, for backends that persist.
//!
//! A child process (this crate's runner binary, `crash-writer` mode) commits under load and
//! prints every acknowledged commit; the parent kills it with SIGKILL at an arbitrary moment,
//! reopens the store, and checks that every acknowledged commit is there and that no commit
//! is partly there. The writer's commits keep invariants the checker can verify: each writes
//! a pair of keys and increments a counter, some write a block of fifty keys at once.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use strata_engine::{AtomicWrite, BackendError, Engine, EngineError, Mutation, Value};

use crate::{
    cases, ensure, ensure_eq, open_backend, u64_at, BackendKind, CaseResult, Harness, Step, Suite,
};

pub fn suite() -> Suite {
    Suite {
        name: "crash",
        needs_persistence: true,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            second_open_is_refused,
            killed_writer_loses_no_acknowledged_commit
        ],
    }
}

async fn second_open_is_refused(h: &Harness) -> CaseResult {
    if h.kind.multi_writer() {
        return Err(
            "SKIP: several processes may share this backend by design (see multi_writer)".into(),
        );
    }
    let first = h.engine();
    let db = first.open_or_create("shared").await.step("first open")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("write")?;
    let second = h.engine();
    match second.database("shared").await {
        Err(EngineError::Backend(BackendError::Locked(msg))) => {
            ensure!(!msg.is_empty(), "the error says why")
        }
        other => {
            return Err(format!(
                "a second opener must be refused with Locked, got {other:?}"
            ))
        }
    }
    ensure_eq!(u64_at(&db, b"k").await?, Some(1));
    first.close().await;
    drop(db);
    let db = second
        .database("shared")
        .await
        .step("open after the first closed")?;
    ensure_eq!(u64_at(&db, b"k").await?, Some(1));
    Ok(())
}

const WRITERS: u64 = 8;
const BLOCK: u64 = 50;

/// The child: commit until killed, printing `ack <round> <writer> <i>` after each commit.
pub async fn crash_writer(kind: BackendKind, dir: &Path, round: u64) -> Result<(), String> {
    let backend = open_backend(kind, dir).await?;
    let engine = Engine::new(backend, strata_engine::EngineConfig::default());
    let db = engine.open_or_create("crash").await.step("open")?;
    let out = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (db, out) = (db.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let mut write = AtomicWrite::new()
                    .set(
                        format!("a/{round}/{w}/{i}").into_bytes(),
                        Value::bytes(vec![7; 100]),
                    )
                    .set(
                        format!("b/{round}/{w}/{i}").into_bytes(),
                        Value::bytes(vec![8; 100]),
                    )
                    .mutate(Mutation::sum(b"total".to_vec(), 1));
                if i % 10 == 0 {
                    for j in 0..BLOCK {
                        write = write.set(
                            format!("block/{round}/{w}/{i}/{j:03}").into_bytes(),
                            Value::bytes(vec![9; 200]),
                        );
                    }
                }
                db.atomic_write(write).await.map_err(|e| e.to_string())?;
                let mut o = out.lock().await;
                o.write_all(format!("ack {round} {w} {i}\n").as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                o.flush().await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Start this crate's runner binary in a child `mode` on the harness's backend and
/// directory, with its stdout piped to the caller; it is killed if dropped.
pub(crate) fn spawn_child(
    h: &Harness,
    mode: &str,
    extra: &[&str],
) -> Result<tokio::process::Child, String> {
    let exe = h
        .exe
        .as_ref()
        .ok_or("the runner binary is unknown; cannot start a child process")?;
    Command::new(exe)
        .args([mode, "--backend", h.kind.name(), "--dir"])
        .arg(h.dir())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))
}

async fn run_and_kill(
    h: &Harness,
    round: u64,
    acks_wanted: usize,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let mut child = spawn_child(h, "crash-writer", &["--round", &round.to_string()])?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    // A guard against a writer that stopped, not a speed requirement: the writer only has
    // to keep committing, however slowly the machine lets it.
    let stall = Duration::from_secs(120);
    while acks.len() < acks_wanted {
        match tokio::time::timeout(stall, lines.next_line()).await {
            Ok(Ok(Some(line))) => acks.push(parse_ack(&line)?),
            Ok(Ok(None)) => return Err(format!("writer exited early after {} acks", acks.len())),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "the writer stalled: no commit acknowledged for {stall:?} after {} acks",
                    acks.len()
                ))
            }
        }
    }
    child.start_kill().map_err(|e| e.to_string())?; // SIGKILL
    child.wait().await.map_err(|e| e.to_string())?;
    // Acks printed before the kill are still in the pipe.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(a) = parse_ack(&line) {
            acks.push(a);
        }
    }
    Ok(acks)
}

fn parse_ack(line: &str) -> Result<(u64, u64, u64), String> {
    let p: Vec<&str> = line.split_whitespace().collect();
    match p.as_slice() {
        ["ack", r, w, i] => Ok((
            r.parse().map_err(|_| format!("bad line {line:?}"))?,
            w.parse().map_err(|_| format!("bad line {line:?}"))?,
            i.parse().map_err(|_| format!("bad line {line:?}"))?,
        )),
        _ => Err(format!("unexpected writer output {line:?}")),
    }
}

async fn killed_writer_loses_no_acknowledged_commit(h: &Harness) -> CaseResult {
    let mut acked = Vec::new();
    for round in 0..2u64 {
        let wanted = if h.kind == BackendKind::Dynamodb {
            12 + 8 * round as usize
        } else {
            150 + 100 * round as usize
        };
        acked.extend(run_and_kill(h, round, wanted).await?);
        let engine = h.engine();
        let db = engine
            .database("crash")
            .await
            .step("reopen after SIGKILL")?;
        let mut t = db.begin().await.step("begin")?;
        let keys = |rows: Vec<(Vec<u8>, Value)>, prefix: &str| -> HashSet<String> {
            rows.into_iter()
                .filter_map(|(k, _)| String::from_utf8(k).ok())
                .map(|k| k[prefix.len()..].to_string())
                .collect()
        };
        let a = keys(
            t.scan(b"a/", b"a0", false, usize::MAX)
                .await
                .step("scan a")?,
            "a/",
        );
        let b = keys(
            t.scan(b"b/", b"b0", false, usize::MAX)
                .await
                .step("scan b")?,
            "b/",
        );
        ensure!(
            a == b,
            "a commit is partly visible: {} a-keys vs {} b-keys",
            a.len(),
            b.len()
        );
        for (r, w, i) in &acked {
            ensure!(
                a.contains(&format!("{r}/{w}/{i}")),
                "acknowledged commit {r}/{w}/{i} lost"
            );
        }
        let total = t
            .get(b"total")
            .await
            .step("total")?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        ensure_eq!(total, a.len() as u64);
        let blocks = t
            .scan(b"block/", b"block0", false, usize::MAX)
            .await
            .step("scan blocks")?;
        let mut per_block: std::collections::HashMap<String, u64> = Default::default();
        for (k, _) in blocks {
            let k = String::from_utf8(k).map_err(|e| e.to_string())?;
            let id = k
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            *per_block.entry(id).or_default() += 1;
        }
        for (id, n) in &per_block {
            ensure_eq!((id.as_str(), *n), (id.as_str(), BLOCK));
        }
        ensure!(
            a.len() >= acked.len(),
            "fewer commits than acknowledgements"
        );
        t.rollback();
        engine.close().await;
    }
    Ok(())
}
