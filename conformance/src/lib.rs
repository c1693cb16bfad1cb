//! # strata-conformance
//!
//! The behaviour every backend must show, written once against the engine API and run over
//! each backend. A suite is a list of named cases; a case gets a fresh [`Harness`] (a new
//! store in a new temporary directory) and returns `Ok(())` or a message saying what it saw.
//!
//! Suites that need a capability (a persistent store, for restarts and crashes) declare it,
//! and the matrix shows `n/a` where a backend lacks it. The runner binary
//! (`strata-conformance`) prints the backend × suite matrix and ends with `N passed, M failed`;
//! `cargo test` runs the same cases, one test per backend and suite.
//!
//! The runner's last suite, `sqllogictest` ([`sql_logic`]), is not a list of cases: it runs
//! SQL logic test files (SQLite's corpus and our own `conformance/slt/`) through the SQL layer
//! and counts records.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_engine::{Backend, Engine, EngineConfig};

pub mod fault_proxy;
pub mod gate;
pub mod linearizability;
pub mod ordered;
pub mod sql_logic;
pub mod suites;

/// Which backend a harness builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Memory,
    Redb,
    Sqlite,
    Dynamodb,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Memory,
        BackendKind::Redb,
        BackendKind::Sqlite,
        BackendKind::Dynamodb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redb => "redb",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Dynamodb => "dynamodb",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn persistent(self) -> bool {
        !matches!(self, BackendKind::Memory)
    }

    /// Whether several engines (processes) may share one store.
    pub fn multi_writer(self) -> bool {
        matches!(self, BackendKind::Memory | BackendKind::Dynamodb)
    }
}

/// A fresh store for one case, and the means to reopen it.
pub struct Harness {
    pub kind: BackendKind,
    dir: tempfile::TempDir,
    memory: Arc<strata_backend_memory::MemoryBackend>,
    shared_memory: Arc<strata_backend_memory::MemoryBackend>,
    dynamodb: Option<Arc<strata_backend_dynamodb::DynamoBackend>>,
    /// The runner binary, for cases that run a child process.
    pub exe: Option<PathBuf>,
}

impl Harness {
    pub async fn new(kind: BackendKind, exe: Option<PathBuf>) -> Result<Self, String> {
        let dir =
            tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let dynamodb = match kind {
            BackendKind::Dynamodb => Some(connect_dynamodb(dir.path()).await?),
            _ => None,
        };
        Ok(Harness {
            kind,
            dir,
            memory: Arc::new(Default::default()),
            shared_memory: Arc::new(strata_backend_memory::MemoryBackend::shared_by_engines()),
            dynamodb,
            exe,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A backend over this harness's store (the same data each time).
    pub fn backend(&self) -> Arc<dyn Backend> {
        match (&self.dynamodb, self.kind) {
            (Some(d), _) => d.clone(),
            (None, BackendKind::Memory) => self.memory.clone(),
            // A small memtable: the suites' reads meet keys both in memory and in the file,
            // and flushes happen in the middle of their commits.
            (None, BackendKind::Redb) => Arc::new(
                strata_backend_redb::RedbBackend::new(self.dir.path())
                    .with_flush_ops(REDB_FLUSH_OPS),
            ),
            (None, _) => Arc::new(strata_backend_sqlite::SqliteBackend::new(self.dir.path())),
        }
    }

    /// The DynamoDB backend of a `dynamodb` harness (for request counts).
    pub fn dynamodb(&self) -> Option<&Arc<strata_backend_dynamodb::DynamoBackend>> {
        self.dynamodb.as_ref()
    }

    /// Engine settings for tests: background work runs often so that cases stay short.
    pub fn config() -> EngineConfig {
        EngineConfig {
            sweep_interval_ms: 50,
            gc_interval_ms: 100,
            ..EngineConfig::default()
        }
    }

    /// A backend over this harness's store that several engines may share concurrently, as
    /// separate processes would (for backends where [`BackendKind::multi_writer`]).
    pub fn shared_backend(&self) -> Arc<dyn Backend> {
        match self.kind {
            BackendKind::Memory => self.shared_memory.clone(),
            _ => self.backend(),
        }
    }

    pub fn engine(&self) -> Engine {
        Engine::new(self.backend(), Self::config())
    }

    pub fn engine_with(&self, config: EngineConfig) -> Engine {
        Engine::new(self.backend(), config)
    }
}

/// The environment variable naming the DynamoDB-compatible store the `dynamodb` cases use
/// (`dynamodb:<table prefix>?endpoint=<url>&region=<r>`); each case gets its own table.
pub const DYNAMODB_ENV: &str = "STRATA_TEST_DYNAMODB";

/// The table a harness directory maps to (a child process finds the same one).
pub fn dynamodb_table_for(dir: &std::path::Path) -> String {
    let tag: String = dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .unwrap_or_default();
    format!("strata-test-{tag}")
}

/// Connect to the test DynamoDB (from [`DYNAMODB_ENV`]) with this directory's table.
pub async fn connect_dynamodb(
    dir: &std::path::Path,
) -> Result<Arc<strata_backend_dynamodb::DynamoBackend>, String> {
    let url = std::env::var(DYNAMODB_ENV).map_err(|_| {
        format!("{DYNAMODB_ENV} is not set: point it at a DynamoDB-compatible endpoint, or let the runner start one")
    })?;
    let rest = url
        .strip_prefix("dynamodb:")
        .ok_or_else(|| format!("{DYNAMODB_ENV} must be a dynamodb: store URL"))?;
    let mut config = strata_backend_dynamodb::DynamoConfig::parse(rest)?;
    config.table = dynamodb_table_for(dir);
    config.create_table = true;
    let backend = strata_backend_dynamodb::DynamoBackend::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(backend))
}

/// The store URL of this directory's DynamoDB table, for `strata --store`.
/// The endpoint of the DynamoDB emulator or service the suites use (`http://host:port`).
pub fn emulator_endpoint() -> Result<String, String> {
    let url = std::env::var(DYNAMODB_ENV).map_err(|e| format!("{DYNAMODB_ENV}: {e}"))?;
    let endpoint = url
        .split("endpoint=")
        .nth(1)
        .and_then(|e| e.split('&').next())
        .ok_or("no endpoint in the DynamoDB URL")?;
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// A DynamoDB backend on this harness's table, reached through `endpoint` (`http://host:port`,
/// for instance a proxy in front of the emulator).
pub async fn dynamodb_through(
    h: &Harness,
    endpoint: &str,
) -> Result<Arc<strata_backend_dynamodb::DynamoBackend>, String> {
    let mut config = strata_backend_dynamodb::DynamoConfig::parse(&format!(
        "{}?endpoint={endpoint}&region=us-east-1",
        dynamodb_table_for(h.dir())
    ))?;
    config.create_table = true;
    strata_backend_dynamodb::DynamoBackend::connect(config)
        .await
        .map(Arc::new)
        .map_err(|e| format!("connect through {endpoint}: {e}"))
}

pub fn dynamodb_store_url(dir: &std::path::Path) -> Result<String, String> {
    let url = std::env::var(DYNAMODB_ENV).map_err(|_| format!("{DYNAMODB_ENV} is not set"))?;
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    Ok(format!("dynamodb:{}?{query}", dynamodb_table_for(dir)))
}

/// Start a DynamoDB emulator (moto's server from PyPI's `moto[server]`, run one request at a
/// time by `conformance/dynamodb_emulator.py`) on a free loopback port and point
/// [`DYNAMODB_ENV`] (and dummy credentials, if none are set) at it.
pub fn start_dynamodb_emulator() -> Result<std::process::Child, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let launcher = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dynamodb_emulator.py");
    let child = std::process::Command::new("python3")
        .arg(&launcher)
        .args(["127.0.0.1", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start the DynamoDB emulator (pip install 'moto[server]'): {e}")
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err("moto_server did not start listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::env::set_var(
        DYNAMODB_ENV,
        format!("dynamodb:strata-test?endpoint=http://127.0.0.1:{port}&region=us-east-1"),
    );
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    Ok(child)
}

/// The redb backend's memtable size in the suites (see [`Harness::backend`]).
const REDB_FLUSH_OPS: usize = 64;

/// A backend of `kind` over `dir` (memory: a fresh one), for child processes.
pub async fn open_backend(
    kind: BackendKind,
    dir: &std::path::Path,
) -> Result<Arc<dyn Backend>, String> {
    Ok(match kind {
        BackendKind::Memory => Arc::new(strata_backend_memory::MemoryBackend::new()),
        BackendKind::Redb => {
            Arc::new(strata_backend_redb::RedbBackend::new(dir).with_flush_ops(REDB_FLUSH_OPS))
        }
        BackendKind::Sqlite => Arc::new(strata_backend_sqlite::SqliteBackend::new(dir)),
        BackendKind::Dynamodb => connect_dynamodb(dir).await?,
    })
}

pub type CaseResult = Result<(), String>;
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;
pub type CaseFn = for<'a> fn(&'a Harness) -> CaseFuture<'a>;

pub struct Case {
    pub name: &'static str,
    pub run: CaseFn,
}

pub struct Suite {
    pub name: &'static str,
    /// Only backends that keep data across processes run it.
    pub needs_persistence: bool,
    /// Only backends that several processes may write at once run it.
    pub needs_multi_writer: bool,
    /// Drives external programs (real clients, the `strata` binary): run by the runner
    /// binary, not by `cargo test`.
    pub external: bool,
    pub cases: Vec<Case>,
}

impl Suite {
    pub fn applies_to(&self, kind: BackendKind) -> bool {
        (!self.needs_persistence || kind.persistent())
            && (!self.needs_multi_writer || kind.multi_writer())
    }
}

/// Fail the case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{} (at {}:{})", format!($($fmt)+), file!(), line!()));
        }
    };
}

/// Fail the case unless the two sides are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "expected {:?} == {:?}: {} vs {} (at {}:{})",
                a,
                b,
                stringify!($a),
                stringify!($b),
                file!(),
                line!()
            ));
        }
    }};
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "expected {:?} == {:?}: {} (at {}:{})",
                a,
                b,
                format!($($fmt)+),
                file!(),
                line!()
            ));
        }
    }};
}

/// Turn an engine result into a case error that names the step.
pub trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The U64 value of `key` in `db` (`None`: absent, or not a U64).
pub async fn u64_at(db: &strata_engine::Database, key: &[u8]) -> Result<Option<u64>, String> {
    Ok(db
        .get(key)
        .await
        .step("get")?
        .and_then(|e| e.value.as_u64()))
}

/// Makes writers and a reader overlap on any machine: the reader counts each pass
/// ([`Pace::pass`]), and each writer, every few steps, waits for a pass newer than the last
/// it saw ([`Pace::every`]). Without it a fast store can finish every write before the
/// reader's first pass. A writer never waits on a reader that is gone.
pub struct Pace {
    passes: tokio::sync::watch::Sender<u64>,
}

/// A writer's side of a [`Pace`].
pub struct Paced {
    passes: tokio::sync::watch::Receiver<u64>,
    seen: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            passes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Pace {
    /// One more reader pass done.
    pub fn pass(&self) {
        self.passes.send_modify(|n| *n += 1);
    }

    /// A writer's handle.
    pub fn writer(&self) -> Paced {
        Paced {
            passes: self.passes.subscribe(),
            seen: 0,
        }
    }
}

impl Paced {
    /// At every `every`-th `step` (the first included), wait for a reader pass newer than
    /// the last one seen.
    pub async fn every(&mut self, step: u64, every: u64) {
        if !step.is_multiple_of(every.max(1)) {
            return;
        }
        let seen = self.seen;
        if let Ok(n) = self.passes.wait_for(|n| *n > seen).await {
            self.seen = *n;
        }
    }
}

/// Wait up to `timeout` for `probe` to return true.
pub async fn eventually<F, Fut>(timeout: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub backend: BackendKind,
    pub suite: &'static str,
    pub case: &'static str,
    pub result: CaseResult,
    pub elapsed: Duration,
}

/// The longest a case may run: a guard against a hung case, not a speed requirement, so it
/// is generous (several runners share two cores in CI, and the DynamoDB emulator answers one
/// request at a time).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Run every case of `suite` on `kind`, each on a fresh harness.
pub async fn run_suite(kind: BackendKind, suite: &Suite, exe: Option<PathBuf>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for case in &suite.cases {
        let start = Instant::now();
        let result = match Harness::new(kind, exe.clone()).await {
            Ok(h) => {
                let fut = (case.run)(&h);
                match tokio::time::timeout(CASE_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
                }
            }
            Err(e) => Err(e),
        };
        out.push(Outcome {
            backend: kind,
            suite: suite.name,
            case: case.name,
            result,
            elapsed: start.elapsed(),
        });
    }
    out
}

/// For `cargo test`: run one suite on one backend and panic listing every failed case.
pub fn run_for_test(kind: BackendKind, suite_name: &str, exe: Option<PathBuf>) {
    let suites = suites::all();
    let suite = suites
        .iter()
        .find(|s| s.name == suite_name)
        .unwrap_or_else(|| panic!("no suite {suite_name}"));
    if !suite.applies_to(kind) {
        eprintln!("suite {suite_name} does not apply to {}", kind.name());
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcomes = rt.block_on(run_suite(kind, suite, exe));
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("{}/{}/{}: {e}", o.backend.name(), o.suite, o.case))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}
