//! Typed KV sync with real processes: `strata serve --typed` over the harness's store, and
//! client processes (this runner's `typed-client`), each with its own redb replica.
//!
//! Covered: records reach the other client; inserts made while the server is down sync when
//! it is back; check-out contention between two clients (fail fast, wait in line, a change
//! without the check-out refused locally); events arriving at the other client; a server
//! restart keeping the leases; a client killed with writes not yet pushed; a replica
//! refusing another server; a wrong token.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use strata_typed::sync::{Replica, ReplicaOptions};
use strata_typed::{EventKind, Tree, Wait};

use crate::suites::clients::strata_bin;
use crate::suites::typed::Stock;
use crate::{cases, ensure, ensure_eq, BackendKind, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "typed_sync",
        needs_persistence: true,
        needs_multi_writer: false,
        external: true,
        cases: cases![
            records_reach_the_other_client,
            inserts_made_offline_sync_when_the_server_is_back,
            check_outs_contend_between_clients,
            a_check_out_edits_the_latest_revision,
            events_arrive_at_the_other_client,
            a_server_restart_keeps_the_leases,
            a_killed_client_keeps_its_unpushed_writes,
            a_replica_refuses_another_server_and_a_wrong_token,
        ],
    }
}

const ANN: &str = "ann:ann-token-1234";
const BOB: &str = "bob:bob-token-5678";
const WAIT: Duration = Duration::from_secs(30);

fn token(spec: &str) -> &str {
    spec.split_once(':').map_or(spec, |(_, t)| t)
}

/// A `strata serve --typed` process, killed (SIGKILL) when dropped.
struct TypedServer {
    _child: Child,
    url: String,
}

/// Start the server over the harness's store; on `at` (`host:port`), or a free port.
async fn start(h: &Harness, store_dir: &Path, at: Option<&str>) -> Result<TypedServer, String> {
    let bin = strata_bin()?;
    let store = match h.kind {
        BackendKind::Dynamodb => crate::dynamodb_store_url(store_dir)?,
        kind => format!("{}:{}", kind.name(), store_dir.display()),
    };
    let mut child = Command::new(&bin)
        .args(["--store", &store, "--create-table", "serve"])
        .args([
            "--kv-connect",
            "127.0.0.1:0",
            "--no-auth",
            "--no-pgwire",
            "--no-rest",
        ])
        .args(["--typed", at.unwrap_or("127.0.0.1:0")])
        .args(["--typed-token", &format!("{ANN},{BOB}")])
        .env_remove("STRATA_ACCESS_TOKEN")
        .env_remove("STRATA_TYPED_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .map_err(|_| "strata serve did not start within 30 s".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("strata serve exited before serving typed sync")?;
        if let Some(url) = line.strip_prefix("Typed sync on ") {
            return Ok(TypedServer {
                _child: child,
                url: url.to_string(),
            });
        }
    }
}

/// A `typed-client` process, driven line by line.
struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    async fn start(h: &Harness, replica: &Path, url: &str, user: &str) -> Result<Self, String> {
        let exe = h.exe.clone().ok_or("the runner's executable is unknown")?;
        let mut child = Command::new(exe)
            .arg("typed-client")
            .arg("--replica")
            .arg(replica)
            .args(["--server", url, "--token", token(user)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start typed-client: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        Ok(ClientProcess { child, stdin, out })
    }

    /// Send one command; its answer (`Ok` value, or `Err` message).
    async fn ask(&mut self, command: &str) -> Result<Result<Json, String>, String> {
        self.send(command).await?;
        self.answer(command).await
    }

    async fn send(&mut self, command: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .step("write to client")?;
        self.stdin.flush().await.step("flush")
    }

    async fn answer(&mut self, command: &str) -> Result<Result<Json, String>, String> {
        let line = tokio::time::timeout(WAIT, self.out.next_line())
            .await
            .map_err(|_| format!("no answer to {command:?} within 30 s"))?
            .step("read from client")?
            .ok_or_else(|| format!("the client exited on {command:?}"))?;
        let v: Json = serde_json::from_str(&line).map_err(|e| format!("{line:?}: {e}"))?;
        Ok(match v.get("err") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(v.get("ok").cloned().unwrap_or(Json::Null)),
        })
    }

    /// The command's value; its failure fails the case.
    async fn ok(&mut self, command: &str) -> Result<Json, String> {
        self.ask(command)
            .await?
            .map_err(|e| format!("{command:?} failed: {e}"))
    }

    async fn err(&mut self, command: &str) -> Result<String, String> {
        match self.ask(command).await? {
            Err(e) => Ok(e),
            Ok(v) => Err(format!("{command:?} should have failed, gave {v}")),
        }
    }

    async fn kill(mut self) -> Result<(), String> {
        self.child.kill().await.step("kill client")
    }
}

fn id_of(v: &Json) -> Result<u64, String> {
    v.get("id")
        .and_then(Json::as_u64)
        .ok_or_else(|| format!("no id in {v}"))
}

struct Setup {
    server: TypedServer,
    store: PathBuf,
    ann: ClientProcess,
    bob: ClientProcess,
}

async fn setup(h: &Harness) -> Result<Setup, String> {
    let store = h.dir().join("server");
    std::fs::create_dir_all(&store).step("store dir")?;
    let server = start(h, &store, None).await?;
    let mut ann = ClientProcess::start(h, &h.dir().join("ann"), &server.url, ANN).await?;
    let mut bob = ClientProcess::start(h, &h.dir().join("bob"), &server.url, BOB).await?;
    ann.ok("sync").await?;
    bob.ok("sync").await?;
    Ok(Setup {
        server,
        store,
        ann,
        bob,
    })
}

/// Ann inserts a record (`insert PART QTY`) and both sync: its id.
async fn shared_record(
    ann: &mut ClientProcess,
    bob: &mut ClientProcess,
    insert: &str,
) -> Result<u64, String> {
    let id = id_of(&ann.ok(insert).await?)?;
    ann.ok("sync").await?;
    bob.ok("sync").await?;
    Ok(id)
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

async fn records_reach_the_other_client(h: &Harness) -> CaseResult {
    let Setup {
        server: _server,
        mut ann,
        mut bob,
        ..
    } = setup(h).await?;
    let id = id_of(&ann.ok("insert bolt 12").await?)?;
    ensure_eq!(ann.ok("dirty").await?, json!(1));
    let report = ann.ok("sync").await?;
    ensure_eq!(report["pushed"], json!(1));
    ensure_eq!(ann.ok("dirty").await?, json!(0));
    bob.ok("sync").await?;
    let got = bob.ok(&format!("get {id}")).await?;
    ensure_eq!(got["part"], json!("bolt"));
    ensure_eq!(got["quantity"], json!(12));
    Ok(())
}

async fn inserts_made_offline_sync_when_the_server_is_back(h: &Harness) -> CaseResult {
    let Setup {
        server,
        store,
        mut ann,
        mut bob,
    } = setup(h).await?;
    let at = addr(&server.url).to_string();
    drop(server);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(id_of(&ann.ok(&format!("insert nut{i} {i}")).await?)?);
    }
    ensure_eq!(ann.ok("dirty").await?, json!(3));
    let e = ann.err("sync").await?;
    ensure!(e.contains("unreachable"), "offline sync says so: {e}");
    ensure_eq!(
        ann.ok(&format!("get {}", ids[1])).await?["part"],
        json!("nut1")
    );
    let _server = start(h, &store, Some(&at)).await?;
    ensure_eq!(ann.ok("sync").await?["pushed"], json!(3));
    bob.ok("sync").await?;
    for (i, id) in ids.iter().enumerate() {
        ensure_eq!(
            bob.ok(&format!("get {id}")).await?["part"],
            json!(format!("nut{i}"))
        );
    }
    Ok(())
}

async fn check_outs_contend_between_clients(h: &Harness) -> CaseResult {
    let Setup {
        server: _server,
        mut ann,
        mut bob,
        ..
    } = setup(h).await?;
    let id = shared_record(&mut ann, &mut bob, "insert washer 100").await?;
    ann.ok(&format!("checkout {id} 0")).await?;
    let e = bob.err(&format!("checkout {id} 0")).await?;
    ensure!(
        e.contains("checked out by \"ann\""),
        "names the holder: {e}"
    );
    let e = bob.err(&format!("update {id} 1")).await?;
    ensure!(e.contains("not checked out"), "refused locally: {e}");
    ensure_eq!(bob.ok("dirty").await?, json!(0));
    // Bob waits in line; Ann gives the record back; Bob gets it.
    bob.send(&format!("checkout {id} 20000")).await?;
    // Bob is queued on the server once the queue names him.
    let mut queued = false;
    for _ in 0..600 {
        if ann.ok(&format!("queue {id}")).await? == json!(["bob"]) {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(queued, "bob never appeared in the queue");
    ann.ok(&format!("checkin {id}")).await?;
    let lease = bob
        .answer("checkout")
        .await?
        .map_err(|e| format!("bob's wait: {e}"))?;
    ensure_eq!(lease["holder"], json!("bob"));
    bob.ok(&format!("update {id} 99")).await?;
    ensure_eq!(bob.ok("sync").await?["pushed"], json!(1));
    ann.ok("sync").await?;
    ensure_eq!(ann.ok(&format!("get {id}")).await?["quantity"], json!(99));
    Ok(())
}

async fn a_check_out_edits_the_latest_revision(h: &Harness) -> CaseResult {
    let Setup {
        server: _server,
        mut ann,
        mut bob,
        ..
    } = setup(h).await?;
    let id = shared_record(&mut ann, &mut bob, "insert bolt 1").await?;
    bob.ok(&format!("checkout {id} 0")).await?;
    bob.ok(&format!("rename {id} bolt-m6")).await?;
    bob.ok("sync").await?;
    bob.ok(&format!("checkin {id}")).await?;
    // Ann has not pulled since: her check-out brings Bob's revision, and her edit keeps it.
    ann.ok(&format!("checkout {id} 0")).await?;
    ann.ok(&format!("update {id} 7")).await?;
    ensure_eq!(ann.ok("sync").await?["pushed"], json!(1));
    bob.ok("sync").await?;
    let got = bob.ok(&format!("get {id}")).await?;
    ensure_eq!(
        (got["part"].clone(), got["quantity"].clone()),
        (json!("bolt-m6"), json!(7))
    );
    Ok(())
}

async fn events_arrive_at_the_other_client(h: &Harness) -> CaseResult {
    let Setup {
        server: _server,
        mut ann,
        mut bob,
        ..
    } = setup(h).await?;
    // From now: what bob's first sync brought (other cases' records on a shared store)
    // is not what this case waits for.
    bob.ok("subscribe").await?;
    bob.ok("follow").await?;
    let id = id_of(&ann.ok("insert gear 5").await?)?;
    ann.ok("sync").await?;
    let e = bob.ok("event").await?;
    ensure_eq!(e["id"], json!(id));
    ensure_eq!(e["kind"], json!("created"));
    ann.ok(&format!("checkout {id} 0")).await?;
    let e = bob.ok("event").await?;
    ensure_eq!(e["kind"], json!("check-out ann"));
    ann.ok(&format!("update {id} 6")).await?;
    ann.ok("sync").await?;
    let e = bob.ok("event").await?;
    ensure_eq!(
        (e["id"].clone(), e["kind"].clone()),
        (json!(id), json!("changed"))
    );
    ensure_eq!(bob.ok(&format!("get {id}")).await?["quantity"], json!(6));
    Ok(())
}

async fn a_server_restart_keeps_the_leases(h: &Harness) -> CaseResult {
    let Setup {
        server,
        store,
        mut ann,
        mut bob,
    } = setup(h).await?;
    let id = id_of(&ann.ok("insert frame 1").await?)?;
    ann.ok("sync").await?;
    ann.ok(&format!("checkout {id} 0")).await?;
    let at = addr(&server.url).to_string();
    drop(server);
    let _server = start(h, &store, Some(&at)).await?;
    let e = bob.err(&format!("checkout {id} 0")).await?;
    ensure!(
        e.contains("checked out by \"ann\""),
        "the lease survived: {e}"
    );
    ann.ok(&format!("update {id} 2")).await?;
    ensure_eq!(ann.ok("sync").await?["pushed"], json!(1));
    Ok(())
}

async fn a_killed_client_keeps_its_unpushed_writes(h: &Harness) -> CaseResult {
    let Setup {
        server,
        mut bob,
        ann,
        ..
    } = setup(h).await?;
    let mut ann = ann;
    let id = id_of(&ann.ok("insert spring 3").await?)?;
    ann.kill().await?;
    let mut ann = ClientProcess::start(h, &h.dir().join("ann"), &server.url, ANN).await?;
    ensure_eq!(ann.ok("dirty").await?, json!(1));
    ensure_eq!(ann.ok(&format!("get {id}")).await?["part"], json!("spring"));
    ensure_eq!(ann.ok("sync").await?["pushed"], json!(1));
    bob.ok("sync").await?;
    ensure_eq!(bob.ok(&format!("get {id}")).await?["part"], json!("spring"));
    Ok(())
}

async fn a_replica_refuses_another_server_and_a_wrong_token(h: &Harness) -> CaseResult {
    let Setup {
        server: _server,
        mut ann,
        ..
    } = setup(h).await?;
    let other_store = h.dir().join("other");
    std::fs::create_dir_all(&other_store).step("other store")?;
    let other = start(h, &other_store, None).await?;
    ann.ok(&format!("server {}", other.url)).await?;
    let e = ann.err("sync").await?;
    ensure!(
        e.contains("belongs to server"),
        "another server is refused: {e}"
    );
    // A fresh replica with a wrong token.
    let mut eve =
        ClientProcess::start(h, &h.dir().join("eve"), &other.url, "eve:wrong-token-0").await?;
    let e = eve.err("sync").await?;
    ensure!(e.contains("unknown token"), "a wrong token is refused: {e}");
    Ok(())
}

/// The `typed-client` process: a replica in `replica` (redb) of the server at `server`,
/// driven by one command per line on stdin, one JSON answer per line on stdout.
pub async fn client(replica: &Path, server: &str, token: &str) -> Result<(), String> {
    let engine = strata_engine::Engine::new(
        std::sync::Arc::new(strata_backend_redb::RedbBackend::new(replica)),
        strata_engine::EngineConfig::default(),
    );
    let db = engine.open_or_create("replica").await.step("replica")?;
    let open = |url: &str| {
        let mut o = ReplicaOptions::new(url, token);
        o.client = replica.display().to_string();
        o.reserve = 16;
        Replica::open(db.clone(), o)
    };
    let mut rep = open(server).await.step("open replica")?;
    let cursor = Tree::<Stock>::open(db.clone())
        .cursor()
        .await
        .step("cursor")?;
    let mut events = Tree::<Stock>::open(db.clone()).events(cursor);
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await.step("stdin")? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, strata_typed::Error> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| strata_typed::Error::Sync(format!("argument {i} of {line:?}")))
        };
        let tree = rep.tree::<Stock>();
        let key = |id: u64| strata_typed::Key::<Stock>::new(id, 0);
        let answer: Result<Json, strata_typed::Error> = async {
            Ok(match words.first().copied().unwrap_or("") {
                "sync" => {
                    let r = rep.sync().await?;
                    json!({"pushed": r.pushed, "pulled": r.pulled, "through": r.through,
                           "refused": r.refused.iter().map(|e| e.to_string()).collect::<Vec<_>>()})
                }
                "follow" => {
                    if let Some(f) = follower.replace(rep.follow()) {
                        f.abort();
                    }
                    json!(true)
                }
                "server" => {
                    let url = words.get(1).copied().unwrap_or_default();
                    rep = open(url).await?;
                    json!(true)
                }
                "insert" => {
                    let k = tree
                        .insert(&Stock {
                            part: words.get(1).copied().unwrap_or_default().to_string(),
                            quantity: num(2)? as i64,
                            serials: Vec::new(),
                        })
                        .await?;
                    json!({"id": k.id()})
                }
                "get" => match tree.get(key(num(1)?)).await? {
                    Some(s) => json!({"part": s.part, "quantity": s.quantity}),
                    None => Json::Null,
                },
                "update" => {
                    let k = key(num(1)?);
                    let mut s = tree
                        .get(k)
                        .await?
                        .ok_or(strata_typed::Error::NotFound(k.raw()))?;
                    s.quantity = num(2)? as i64;
                    tree.update(k, &s).await?;
                    json!(true)
                }
                "rename" => {
                    let k = key(num(1)?);
                    let mut s = tree
                        .get(k)
                        .await?
                        .ok_or(strata_typed::Error::NotFound(k.raw()))?;
                    s.part = words.get(2).copied().unwrap_or_default().to_string();
                    tree.update(k, &s).await?;
                    json!(true)
                }
                "checkout" => {
                    let wait = match num(2)? {
                        0 => Wait::No,
                        ms => Wait::Up(Duration::from_millis(ms)),
                    };
                    let l = tree
                        .check_out(num(1)?, Duration::from_secs(3600), wait)
                        .await?;
                    json!({"holder": l.holder, "until_ms": l.until_ms})
                }
                "checkin" => {
                    tree.check_in(num(1)?).await?;
                    json!(true)
                }
                "queue" => {
                    // The server's queue, as this replica last pulled it.
                    rep.sync().await?;
                    json!(tree.queue(num(1)?).await?)
                }
                "dirty" => json!(rep.dirty().await?),
                "subscribe" => {
                    let t = Tree::<Stock>::open(db.clone());
                    events = t.events(t.cursor().await?);
                    json!(true)
                }
                "event" => {
                    let e = tokio::time::timeout(WAIT, events.next())
                        .await
                        .map_err(|_| strata_typed::Error::Sync("no event within 30 s".into()))??;
                    let kind = match e.kind {
                        EventKind::Created { .. } => "created".to_string(),
                        EventKind::Changed { .. } => "changed".to_string(),
                        EventKind::Removed { .. } => "removed".to_string(),
                        EventKind::Released { .. } => "released".to_string(),
                        EventKind::CheckOut { holder, .. } => {
                            format!("check-out {}", holder.unwrap_or_default())
                        }
                    };
                    json!({"id": e.id, "kind": kind})
                }
                other => {
                    return Err(strata_typed::Error::Sync(format!(
                        "unknown command {other:?}"
                    )))
                }
            })
        }
        .await;
        let reply = match answer {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "err": e.to_string() }),
        };
        out.write_all(format!("{reply}\n").as_bytes())
            .await
            .step("stdout")?;
        out.flush().await.step("flush")?;
    }
    if let Some(f) = follower {
        f.abort();
    }
    engine.close().await;
    Ok(())
}
