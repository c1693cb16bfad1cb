//! The real KV Connect clients against `strata serve`: Deno's built-in remote client
//! (`Deno.openKv(url)`) and the `@deno/kv` npm client on Node, each running the shared cases in
//! `conformance/clients/cases.mjs`, one group per case here.
//!
//! The clients are installed from the npm registry into `conformance/clients/node_modules`
//! (`npm ci` there; the test command does it). Where they are absent the cases are skipped
//! and say so, unless `STRATA_REQUIRE_CLIENTS` is set, which makes absence a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{BackendKind, Case, CaseResult, Harness, Suite};

/// One case per group of the shared client cases (`GROUPS` in `clients/cases.mjs`).
macro_rules! client_cases {
    ($client:literal) => {
        client_cases!($client; values, keys, atomic, watch, limits)
    };
    ($client:literal; $($group:ident),*) => {
        vec![$(Case {
            name: concat!($client, "_", stringify!($group)),
            run: |h| Box::pin(run_client(h, $client, stringify!($group))),
        }),*]
    };
}

pub fn deno_suite() -> Suite {
    Suite {
        name: "deno_client",
        needs_persistence: false,
        needs_multi_writer: false,
        external: true,
        cases: client_cases!("deno"),
    }
}

pub fn node_suite() -> Suite {
    Suite {
        name: "node_client",
        needs_persistence: false,
        needs_multi_writer: false,
        external: true,
        cases: client_cases!("node"),
    }
}

pub const TOKEN: &str = "conformance-token-0123456789";

pub(crate) fn clients_dir() -> PathBuf {
    std::env::var_os("STRATA_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("clients"))
}

/// The `strata` binary: `STRATA_BIN`, or beside this executable (or one directory up, for
/// test executables in `deps/`).
pub fn strata_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STRATA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let name = format!("strata{}", std::env::consts::EXE_SUFFIX);
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "the strata binary was not found beside {}; build it with `cargo build --all-features` or set STRATA_BIN",
        exe.display()
    ))
}

pub(crate) fn skip_or_fail(what: String) -> CaseResult {
    if std::env::var_os("STRATA_REQUIRE_CLIENTS").is_some() {
        Err(what)
    } else {
        Err(format!("SKIP: {what}"))
    }
}

/// A running `strata serve` that is killed when dropped.
pub struct ServerProcess {
    _child: Child,
    pub url: String,
    /// The PostgreSQL server's `host:port`.
    pub pg: String,
    /// The REST API's `http://host:port`.
    pub rest: String,
}

/// Start `strata serve` over the harness's store on a free port.
pub async fn start_server(h: &Harness, extra: &[&str]) -> Result<ServerProcess, String> {
    let bin = strata_bin()?;
    let store = match h.kind {
        BackendKind::Memory => "memory:".to_string(),
        BackendKind::Dynamodb => crate::dynamodb_store_url(h.dir())?,
        kind => format!("{}:{}", kind.name(), h.dir().display()),
    };
    let mut child = Command::new(&bin)
        .args([
            "--store",
            &store,
            "--create-table",
            "serve",
            "--kv-connect",
            "127.0.0.1:0",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--access-token",
            TOKEN,
            "--create-databases",
        ])
        .args(extra)
        .env_remove("STRATA_ACCESS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() < 4096 {
                    log.push_str(&l);
                    log.push('\n');
                }
            }
        });
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "strata serve did not start within 30 s".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            format!(
                "strata serve exited before listening: {}",
                log.lock().unwrap_or_else(|e| e.into_inner()).trim()
            )
        })?;
    let url = line
        .strip_prefix("Listening on ")
        .ok_or_else(|| format!("unexpected first line from strata serve: {line:?}"))?
        .to_string();
    // Then one line per further server, in this order.
    let pg = address(&mut lines, "PostgreSQL on ").await?;
    let rest = address(&mut lines, "REST on ").await?;
    Ok(ServerProcess {
        _child: child,
        url,
        pg,
        rest,
    })
}

/// The address on the next line `strata serve` prints, which starts with `prefix`.
async fn address(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> Result<String, String> {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| format!("strata serve did not print {prefix:?} within 30 s"))?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    line.strip_prefix(prefix)
        .map(str::to_string)
        .ok_or_else(|| format!("expected {prefix:?} from strata serve, got {line:?}"))
}

async fn run_client(h: &Harness, client: &str, group: &str) -> CaseResult {
    // Both clients drive the same server code; on DynamoDB one of them is enough, and the
    // emulator's time is better spent on the engine suites.
    if client == "deno" && h.kind == BackendKind::Dynamodb {
        return Err(
            "SKIP: on DynamoDB the server is driven by the @deno/kv client (node_client); \
             the Deno client runs on the embedded backends"
                .into(),
        );
    }
    let (program, args): (PathBuf, Vec<String>) = match client {
        "deno" => match deno_program() {
            Ok(deno) => (
                deno,
                vec![
                    "test".into(),
                    "-A".into(),
                    "--unstable-kv".into(),
                    "deno/kv_test.mjs".into(),
                ],
            ),
            Err(e) => return e,
        },
        _ => {
            let dir = clients_dir();
            if !dir.join("node_modules/@deno/kv/package.json").is_file() {
                return skip_or_fail(format!(
                    "@deno/kv is not installed in {} (run npm ci there)",
                    dir.display()
                ));
            }
            (
                PathBuf::from("node"),
                vec!["--test".into(), "node/kv.test.mjs".into()],
            )
        }
    };
    let server = start_server(h, &[]).await?;
    run_tests(
        &program,
        &args,
        &[("STRATA_KV_URL", &server.url), ("STRATA_GROUP", group)],
        &format!("{client} client, group {group}"),
    )
    .await
}

/// Deno from the clients directory's `node_modules`, or the case's skip (or failure, when
/// the clients are required).
pub(crate) fn deno_program() -> Result<PathBuf, CaseResult> {
    let dir = clients_dir();
    let deno = dir.join("node_modules/.bin/deno");
    if deno.is_file() {
        Ok(deno)
    } else {
        Err(skip_or_fail(format!(
            "deno is not installed in {} (run npm ci there)",
            dir.display()
        )))
    }
}

/// Run a client's test program in the clients directory, with the access token and `envs`
/// set; on failure, the lines of its output that say what failed.
pub(crate) async fn run_tests(
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    what: &str,
) -> CaseResult {
    let out = Command::new(program)
        .args(args)
        .current_dir(clients_dir())
        .envs(envs.iter().copied())
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .env("DENO_NO_UPDATE_CHECK", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .map_err(|_| format!("{what}: the tests did not finish in 90 s"))?
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let interesting: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("FAILED")
                || l.contains("error")
                || l.contains("Error")
                || l.contains("not ok")
                || l.contains("expected")
        })
        .take(12)
        .collect();
    Err(format!("{what}: {}", interesting.join(" | ")))
}
