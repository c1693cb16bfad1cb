//! Row counts for the planner.
//!
//! A transaction that adds or removes rows writes its net change per table under a key of
//! its own (a *shard*: the table id, a per-process random id, a per-process counter), in the
//! same commit as the rows. Writes to distinct keys never conflict, so concurrent
//! inserters stay independent, and the sum of a table's shards is its exact row count at
//! any version. Readers sum the shards outside their transaction (statistics must not add
//! conflicts), and fold them into one when there are many: on a task of its own, so that
//! the query that found them does not wait, and a bounded number per transaction, so that
//! a table written by a million autocommit statements folds like one written by a hundred.
//!
//! A table created before row counts existed has no shards: its count is unknown until
//! `ANALYZE` counts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_engine::{Database, Value};

use crate::codec::Key;
use crate::error::Result;
use crate::tx::{decode_u64, resume_after, SCAN_CHUNK};

/// Fold a table's shards into one when a read finds more than this many.
pub const FOLD_AT: usize = 64;

/// A fold replaces at most this many shards per transaction (each is a delete, plus the
/// history the engine keeps of it), far inside the engine's limits on a transaction.
pub const FOLD_CHUNK: usize = 4096;

/// How long a session reuses a count it read before reading it again.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// A fresh shard key for `table`: unique within the process by the counter, and across
/// processes by the random id.
pub fn shard_key(table: u64) -> Vec<u8> {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    Key::RowCountShard(table, process, NEXT.fetch_add(1, Ordering::Relaxed)).encode()
}

pub fn encode_delta(n: i64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn decode_delta(b: &[u8]) -> Result<i64> {
    Ok(decode_u64(b)? as i64)
}

/// A table's shards as of `txn`'s version: their keys and their sum.
pub(crate) async fn shards(
    txn: &mut strata_engine::Transaction,
    table: u64,
) -> Result<(Vec<Vec<u8>>, i64)> {
    first_shards(txn, table, usize::MAX).await
}

/// The first `most` of a table's shards in key order, and their sum. Only the part of the
/// range up to the last one returned is read (for conflicts), when there were more.
async fn first_shards(
    txn: &mut strata_engine::Transaction,
    table: u64,
    most: usize,
) -> Result<(Vec<Vec<u8>>, i64)> {
    let prefix = Key::RowCounts(table).encode();
    let end = strata_engine::prefix_end(&prefix);
    let mut start = prefix;
    let (mut keys, mut sum) = (Vec::new(), 0i64);
    loop {
        let want = SCAN_CHUNK.min(most - keys.len());
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = txn
            .scan(&start, &end, false, want)
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.data))
            .collect();
        for (k, v) in &chunk {
            sum = sum.wrapping_add(decode_delta(v)?);
            keys.push(k.clone());
        }
        if keys.len() >= most {
            return Ok((keys, sum));
        }
        match resume_after(&chunk) {
            Some(next) => start = next,
            None => return Ok((keys, sum)),
        }
    }
}

/// The number of rows of table `table` in the newest version of `db`; `None` when the
/// table has no count (created before row counts existed, and never analyzed).
pub async fn row_count(db: &Database, table: u64) -> Result<Option<u64>> {
    let mut txn = db.begin().await?;
    let (keys, sum) = shards(&mut txn, table).await?;
    drop(txn);
    if keys.len() > FOLD_AT {
        fold_in_background(db, table);
    }
    Ok((!keys.is_empty()).then_some(sum.max(0) as u64))
}

/// The folds running on tasks of their own, by database id and table id.
type Folds = HashMap<(String, u64), tokio::task::JoinHandle<()>>;

fn folds() -> std::sync::MutexGuard<'static, Folds> {
    static FOLDS: OnceLock<std::sync::Mutex<Folds>> = OnceLock::new();
    FOLDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Fold `table`'s shards on a task of its own, unless this process is folding them
/// already. Best effort: a fold that fails (a concurrent commit to the table made it
/// conflict) leaves the shards to the next reader.
fn fold_in_background(db: &Database, table: u64) {
    let mut folds = folds();
    // (Finished folds of dropped tables would otherwise stay.)
    folds.retain(|_, task| !task.is_finished());
    let key = (db.id().to_string(), table);
    if folds.contains_key(&key) {
        return;
    }
    // (Outside a runtime there is no task to fold on; the next reader folds.)
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let db = db.clone();
    let task = runtime.spawn(async move {
        if let Err(e) = fold(&db, table, FOLD_CHUNK).await {
            tracing::debug!(database = %db.name(), table, error = %e, "row-count fold stopped");
        }
    });
    folds.insert(key, task);
}

/// Wait for the fold of `table`'s shards started in the background, if one was, to end.
pub async fn fold_settled(db: &Database, table: u64) {
    let running = folds().remove(&(db.id().to_string(), table));
    if let Some(task) = running {
        let _ = task.await;
    }
}

/// Replace a table's shards with one holding their sum, `chunk` shards per transaction
/// (at least two), until no more than one is left or a transaction fails.
pub async fn fold(db: &Database, table: u64, chunk: usize) -> Result<()> {
    let chunk = chunk.max(2);
    loop {
        let mut txn = db.begin().await?;
        let (keys, sum) = first_shards(&mut txn, table, chunk).await?;
        if keys.len() <= 1 {
            return Ok(());
        }
        for k in &keys {
            txn.delete(k)?;
        }
        txn.set(&shard_key(table), Value::bytes(encode_delta(sum)))?;
        txn.commit().await?;
        if keys.len() < chunk {
            return Ok(());
        }
    }
}

/// Replace a table's shards with `rows`, counted at `txn`'s read version, in `txn`: its
/// read of the shards makes it conflict with any commit that changed the table since.
pub async fn reset(txn: &mut strata_engine::Transaction, table: u64, rows: u64) -> Result<()> {
    let (keys, _) = shards(txn, table).await?;
    for k in &keys {
        txn.delete(k)?;
    }
    txn.set(&shard_key(table), Value::bytes(encode_delta(rows as i64)))?;
    Ok(())
}

/// One database's counts by table id, with when each was read.
type Counts = HashMap<u64, (Instant, Option<u64>)>;

/// Row counts a session read recently, by database and table id.
#[derive(Default)]
pub struct CountCache {
    by_db: std::sync::Mutex<HashMap<String, Counts>>,
}

impl CountCache {
    /// The row count of `table` in `db`, read again when the one held is older than
    /// [`CACHE_FOR`]. A failure to read is an unknown count: statistics never fail a query.
    pub async fn get(&self, db: &Database, table: u64) -> Option<u64> {
        let held = self
            .lock()
            .get(db.id())
            .and_then(|counts| counts.get(&table).copied());
        if let Some((at, n)) = held {
            if at.elapsed() < CACHE_FOR {
                return n;
            }
        }
        let n = row_count(db, table).await.ok().flatten();
        self.lock()
            .entry(db.id().to_string())
            .or_default()
            .insert(table, (Instant::now(), n));
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counts>> {
        self.by_db.lock().unwrap_or_else(|p| p.into_inner())
    }
}
