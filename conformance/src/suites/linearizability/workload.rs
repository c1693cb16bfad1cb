//! The register workload: clients that get, set, delete and compare-and-set a few keys at
//! random (from a fixed seed), recording every call, over any [`KvClient`] — an engine's
//! database in this process, or a KV Connect server over HTTP.
//!
//! The engine's check-and-set compares versionstamps; the model's compares values. Every
//! value written is unique (`c<client>-<n>`), so a key's versionstamp is unchanged exactly
//! when its value is: a check on the versionstamp a read returned is a compare-and-set
//! expecting the value that read returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_engine::{AtomicWrite, CommitOutcome, Database, EngineError, ReadAt, ReadRange, Value};

use crate::linearizability::{self, Call, Dropped, History, Output, Recorder, Verdict};

/// A key's value and the token that identifies its current version (the versionstamp).
pub(crate) struct Read {
    pub value: Vec<u8>,
    pub version: Vec<u8>,
}

/// How a write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Provably not applied (a conflict, a rejected request).
    NotApplied(String),
    /// Maybe applied.
    Unknown(String),
}

/// What the workload needs of a store.
#[async_trait::async_trait]
pub(crate) trait KvClient: Send + Sync {
    async fn get(&self, key: &[u8]) -> Result<Option<Read>, String>;
    /// Several keys read at one version: by one snapshot read of one range per key
    /// (`snapshot`), or by one `get_many`.
    async fn read_keys(
        &self,
        keys: &[Vec<u8>],
        snapshot: bool,
    ) -> Result<Vec<Option<Read>>, String>;
    /// Write `value` (`None`: delete) to `key`; with `check`, only if the key's version is
    /// still that (`None`: absent). `Ok(false)`: the check failed, nothing written.
    async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        check: Option<Option<Vec<u8>>>,
    ) -> Result<bool, WriteError>;
}

/// The engine's answer to a failed write, as the history records it. The engine promises
/// that a retryable error means the write did not apply (a write in doubt fails with
/// `CommitResultUnknown` instead), so such a write is recorded as not applied: the checker
/// then holds the engine to that promise.
pub(crate) fn engine_write_error(e: EngineError) -> WriteError {
    match e {
        EngineError::CommitResultUnknown { .. } => WriteError::Unknown(e.to_string()),
        e if e.is_retryable() => WriteError::NotApplied(e.to_string()),
        EngineError::InvalidName { .. }
        | EngineError::LimitExceeded { .. }
        | EngineError::InvalidMutation(_)
        | EngineError::InvalidRequest(_)
        | EngineError::DatabaseNotFound(_) => WriteError::NotApplied(e.to_string()),
        // Any other failure of a commit under way may have reached the store.
        other => WriteError::Unknown(other.to_string()),
    }
}

/// A database of an engine in this process.
pub(crate) struct EngineClient(pub Database);

fn entry_read(e: strata_engine::Entry) -> Read {
    Read {
        value: e.value.data,
        version: e.versionstamp.0.to_vec(),
    }
}

/// The range that holds exactly `key`.
pub(crate) fn key_range(key: &[u8]) -> ReadRange {
    let mut end = key.to_vec();
    end.push(0);
    ReadRange::new(key.to_vec(), end, 1)
}

#[async_trait::async_trait]
impl KvClient for EngineClient {
    async fn get(&self, key: &[u8]) -> Result<Option<Read>, String> {
        Ok(self
            .0
            .get(key)
            .await
            .map_err(|e| e.to_string())?
            .map(entry_read))
    }

    async fn read_keys(
        &self,
        keys: &[Vec<u8>],
        snapshot: bool,
    ) -> Result<Vec<Option<Read>>, String> {
        if snapshot {
            let ranges: Vec<ReadRange> = keys.iter().map(|k| key_range(k)).collect();
            let read = self
                .0
                .snapshot_read(&ranges, ReadAt::Latest)
                .await
                .map_err(|e| e.to_string())?;
            Ok(read
                .ranges
                .into_iter()
                .map(|r| r.into_iter().next().map(entry_read))
                .collect())
        } else {
            let got = self
                .0
                .get_many(keys, ReadAt::Latest)
                .await
                .map_err(|e| e.to_string())?;
            Ok(got.into_iter().map(|e| e.map(entry_read)).collect())
        }
    }

    async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        check: Option<Option<Vec<u8>>>,
    ) -> Result<bool, WriteError> {
        let mut w = AtomicWrite::new();
        if let Some(version) = check {
            let vs = match version {
                Some(bytes) => Some(strata_engine::Versionstamp::from_slice(&bytes).ok_or_else(
                    || WriteError::NotApplied("a versionstamp of the wrong length".into()),
                )?),
                None => None,
            };
            w = w.check(key.to_vec(), vs);
        }
        w = match value {
            Some(v) => w.set(key.to_vec(), Value::bytes(v)),
            None => w.delete(key.to_vec()),
        };
        match self.0.atomic_write(w).await {
            Ok(CommitOutcome::Committed(_)) => Ok(true),
            Ok(CommitOutcome::CheckFailed(_)) => Ok(false),
            Err(e) => Err(engine_write_error(e)),
        }
    }
}

/// A tiny deterministic generator (xorshift64*), so that a workload is the same each run
/// (the interleaving is not).
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero, and different seeds diverge at once.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// What one client does.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub keys: Vec<Vec<u8>>,
    pub ops_per_client: usize,
    pub seed: u64,
}

impl Workload {
    pub fn new(ops_per_client: usize) -> Self {
        Workload {
            keys: (0..4).map(|i| format!("lin/{i}").into_bytes()).collect(),
            ops_per_client,
            seed: 0x5eed,
        }
    }
}

/// Counts of what a client's calls came to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub ok: u64,
    pub unknown: u64,
    pub failed: u64,
    /// The errors of the calls that failed or whose outcome is unknown, counted.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.unknown += other.unknown;
        self.failed += other.failed;
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    fn failed(&mut self, why: &str) {
        self.failed += 1;
        self.note("failed", why);
    }

    fn unknown(&mut self, why: &str) {
        self.unknown += 1;
        self.note("unknown", why);
    }

    fn note(&mut self, what: &str, why: &str) {
        let short: String = why.chars().take(100).collect();
        *self.errors.entry(format!("{what}: {short}")).or_default() += 1;
    }
}

/// Run `workload` as client `client`, recording into `rec`.
pub(crate) async fn run_client(
    store: Arc<dyn KvClient>,
    rec: Recorder,
    client: u64,
    workload: Workload,
) -> Tally {
    let mut rng = Rng::new(workload.seed ^ client.wrapping_mul(0x1000_0000_01b3));
    let mut tally = Tally::default();
    let keys = &workload.keys;
    for i in 0..workload.ops_per_client {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let fresh = format!("c{client}-{i}").into_bytes();
        match rng.below(100) {
            0..=29 => {
                get(&*store, &rec, client, &key, &mut tally).await;
            }
            30..=44 => {
                let call = Call::Set {
                    key: key.clone(),
                    value: fresh.clone(),
                };
                write(&*store, &rec, client, call, None, &mut tally).await;
            }
            45..=69 => {
                // Read, then write if nothing changed since: a compare-and-set expecting
                // what the read saw.
                let Some(seen) = get(&*store, &rec, client, &key, &mut tally).await else {
                    continue;
                };
                let new = (rng.below(5) != 0).then_some(fresh);
                let (expected, version) = match seen {
                    Some(r) => (Some(r.value), Some(r.version)),
                    None => (None, None),
                };
                let call = Call::CompareAndSet {
                    key: key.clone(),
                    expected,
                    new,
                };
                write(&*store, &rec, client, call, Some(version), &mut tally).await;
            }
            70..=79 => {
                let call = Call::Delete { key: key.clone() };
                write(&*store, &rec, client, call, None, &mut tally).await;
            }
            r => {
                let snapshot = r < 90;
                let chosen: Vec<Vec<u8>> = if snapshot {
                    let other = &keys[rng.below(keys.len() as u64) as usize];
                    if *other == key {
                        vec![key]
                    } else {
                        vec![key, other.clone()]
                    }
                } else {
                    keys.clone()
                };
                let pending: Vec<_> = chosen
                    .iter()
                    .map(|k| rec.invoke(client, Call::Get { key: k.clone() }))
                    .collect();
                match store.read_keys(&chosen, snapshot).await {
                    Ok(reads) if reads.len() == pending.len() => {
                        for (p, r) in pending.into_iter().zip(reads) {
                            p.ok(Output::Read(r.map(|r| r.value)));
                        }
                        tally.ok += 1;
                    }
                    Ok(reads) => {
                        let why = format!("{} answers to {} keys", reads.len(), chosen.len());
                        pending.into_iter().for_each(|p| p.failed(&why));
                        tally.failed(&why);
                    }
                    Err(e) => {
                        pending.into_iter().for_each(|p| p.failed(&e));
                        tally.failed(&e);
                    }
                }
            }
        }
    }
    tally
}

/// A recorded get; `None` if it failed.
async fn get(
    store: &dyn KvClient,
    rec: &Recorder,
    client: u64,
    key: &[u8],
    tally: &mut Tally,
) -> Option<Option<Read>> {
    let pending = rec.invoke(client, Call::Get { key: key.to_vec() });
    match store.get(key).await {
        Ok(r) => {
            pending.ok(Output::Read(r.as_ref().map(|r| r.value.clone())));
            tally.ok += 1;
            Some(r)
        }
        Err(e) => {
            tally.failed(&e);
            pending.failed(e);
            None
        }
    }
}

/// A recorded write: a set, a delete, or (with `check`) a compare-and-set.
async fn write(
    store: &dyn KvClient,
    rec: &Recorder,
    client: u64,
    call: Call,
    check: Option<Option<Vec<u8>>>,
    tally: &mut Tally,
) {
    let (key, value) = match &call {
        Call::Set { key, value } => (key.clone(), Some(value.clone())),
        Call::Delete { key } => (key.clone(), None),
        Call::CompareAndSet { key, new, .. } => (key.clone(), new.clone()),
        Call::Get { .. } => return,
    };
    let swap = matches!(call, Call::CompareAndSet { .. });
    let pending = rec.invoke(client, call);
    match store.write(&key, value, check).await {
        Ok(done) if swap => {
            pending.ok(Output::Swapped(done));
            tally.ok += 1;
        }
        Ok(true) => {
            pending.ok(Output::Written);
            tally.ok += 1;
        }
        Ok(false) => {
            let why = "an unconditional write reported a failed check";
            pending.failed(why);
            tally.failed(why);
        }
        Err(WriteError::NotApplied(e)) => {
            tally.failed(&e);
            pending.failed(e);
        }
        Err(WriteError::Unknown(e)) => {
            pending.unknown();
            tally.unknown(&e);
        }
    }
}

/// Run `clients` (each with its store and client id) concurrently; their tallies summed.
pub(crate) async fn run_clients(
    clients: Vec<(Arc<dyn KvClient>, u64)>,
    rec: &Recorder,
    workload: &Workload,
) -> Result<Tally, String> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(store, id)| tokio::spawn(run_client(store, rec.clone(), id, workload.clone())))
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        total.add(t.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    Ok(total)
}

/// Check a recorded history; a violation fails the case with its witness, and with the
/// calls that reported failure although a value they wrote was seen.
pub(crate) fn judge(
    what: &str,
    history: &History,
    dropped: &[Dropped],
    tally: &Tally,
) -> Result<(), String> {
    let start = std::time::Instant::now();
    let verdict = linearizability::check(history).map_err(|e| e.to_string())?;
    eprintln!(
        "  {what}: {} operations ({} ok, {} unknown, {} failed calls; each overlaps {:.1} others on average), checked in {:.2?}: {}",
        history.len(),
        tally.ok,
        tally.unknown,
        tally.failed,
        mean_overlap(history),
        start.elapsed(),
        match &verdict {
            Verdict::NotLinearizable(_) => "NOT linearizable",
            Verdict::Linearizable => "linearizable",
            Verdict::Inconclusive { .. } => "inconclusive",
        }
    );
    for (e, n) in &tally.errors {
        eprintln!("    {n} x {e}");
    }
    match verdict {
        Verdict::Linearizable => Ok(()),
        Verdict::NotLinearizable(v) => {
            let mut message = format!("{what}: {v}");
            // What the witness's reads saw, absence included.
            let seen: Vec<&Option<Vec<u8>>> = v
                .ops
                .iter()
                .filter_map(|o| match &o.outcome {
                    linearizability::Outcome::Ok(Output::Read(value)) => Some(value),
                    _ => None,
                })
                .collect();
            let last_read = v.ops.iter().map(|o| o.completed).max().unwrap_or(0);
            for d in dropped {
                let wrote = match &d.call {
                    Call::Set { value, .. } => Some(Some(value.clone())),
                    Call::Delete { .. } => Some(None),
                    Call::CompareAndSet { new, .. } => Some(new.clone()),
                    Call::Get { .. } => None,
                };
                let explains = d.call.key() == v.key.as_slice()
                    && d.invoked <= last_read
                    && wrote.is_some_and(|w| seen.contains(&&w));
                if explains {
                    message.push_str(&format!(
                        "  note: client {} reported `{}` as failed, which promises it had no effect ({}); had it applied, it would explain a read above\n",
                        d.client, d.call, d.reason
                    ));
                }
            }
            Err(message)
        }
        inconclusive @ Verdict::Inconclusive { .. } => Err(format!("{what}: {inconclusive}")),
    }
}

/// How many other operations each operation overlaps in time, on average: how concurrent a
/// history is.
fn mean_overlap(history: &History) -> f64 {
    let ops = history.ops();
    if ops.is_empty() {
        return 0.0;
    }
    let mut starts: Vec<u64> = ops.iter().map(|o| o.invoked).collect();
    let mut ends: Vec<u64> = ops.iter().map(|o| o.completed).collect();
    starts.sort_unstable();
    ends.sort_unstable();
    let total: usize = ops
        .iter()
        .map(|o| {
            // Those invoked before it completed, less those completed before it began.
            let begun = starts.partition_point(|&s| s <= o.completed);
            let over = ends.partition_point(|&e| e < o.invoked);
            begun.saturating_sub(over + 1)
        })
        .sum();
    total as f64 / ops.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that answers every third get with the value the key had before its latest
    /// write: stale.
    struct Stale {
        inner: EngineClient,
        gets: std::sync::Mutex<u64>,
        previous: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
    }

    #[async_trait::async_trait]
    impl KvClient for Stale {
        async fn get(&self, key: &[u8]) -> Result<Option<Read>, String> {
            let n = {
                let mut g = self.gets.lock().unwrap();
                *g += 1;
                *g
            };
            let stale = self.previous.lock().unwrap().get(key).cloned();
            match stale {
                Some(old) if n % 3 == 0 => Ok(old.map(|value| Read {
                    value,
                    version: vec![0; 10],
                })),
                _ => self.inner.get(key).await,
            }
        }

        async fn read_keys(
            &self,
            keys: &[Vec<u8>],
            snapshot: bool,
        ) -> Result<Vec<Option<Read>>, String> {
            self.inner.read_keys(keys, snapshot).await
        }

        async fn write(
            &self,
            key: &[u8],
            value: Option<Vec<u8>>,
            check: Option<Option<Vec<u8>>>,
        ) -> Result<bool, WriteError> {
            let before = self.inner.get(key).await.map_err(WriteError::Unknown)?;
            let done = self.inner.write(key, value, check).await?;
            if done {
                self.previous
                    .lock()
                    .unwrap()
                    .insert(key.to_vec(), before.map(|r| r.value));
            }
            Ok(done)
        }
    }

    #[tokio::test]
    async fn the_workload_and_the_checker_catch_stale_reads() {
        let engine = strata_engine::Engine::new(
            Arc::new(strata_backend_memory::MemoryBackend::new()),
            strata_engine::EngineConfig::default(),
        );
        let db = engine.open_or_create("lin").await.unwrap();
        let honest: Arc<dyn KvClient> = Arc::new(EngineClient(db.clone()));
        let stale: Arc<dyn KvClient> = Arc::new(Stale {
            inner: EngineClient(db),
            gets: Default::default(),
            previous: Default::default(),
        });

        let rec = Recorder::monotonic();
        let tally = run_clients(vec![(honest, 1)], &rec, &Workload::new(200))
            .await
            .unwrap();
        judge("honest", &rec.history(), &rec.dropped(), &tally).unwrap();

        let rec = Recorder::monotonic();
        let tally = run_clients(vec![(stale, 1)], &rec, &Workload::new(200))
            .await
            .unwrap();
        let err = judge("stale", &rec.history(), &rec.dropped(), &tally).unwrap_err();
        assert!(err.contains("not linearizable"), "{err}");
        eprintln!("{err}");
    }
}
