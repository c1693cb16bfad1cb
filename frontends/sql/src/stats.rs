//! Row counts for the planner.
//!
//! A transaction that writes a table's rows adds its net change in rows to the table's
//! *counter* in the same commit as the rows (0 when the count did not change), with the
//! engine's [`Transaction::sum`]: the commit adds to whatever the counter holds when it
//! lands, without reading it, so concurrent inserters never conflict over it. The counter
//! at any version is the table's exact row count at that version, and its versionstamp
//! changes with every commit that changes the table's rows (which column copies rely on:
//! see `column_copy.rs`). Readers read it outside their transaction (statistics
//! must not add conflicts).
//!
//! Databases written before the counter existed hold the same count spread over *shards*:
//! one key per committing transaction, under the same prefix as the counter (the counter
//! is the first key there). A reader sums every key under the prefix, so old shards still
//! count; when it finds many, it folds them into the counter on a task of its own, a
//! bounded number per transaction, so that the query that found them does not wait.
//!
//! A table created before row counts existed has no counter: its count is unknown until
//! `ANALYZE` counts it.
//!
//! [`Transaction::sum`]: strata_engine::Transaction::sum

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_engine::{Database, Encoding, Value};

use crate::codec::Key;
use crate::error::{Result, SqlError};
use crate::tx::{resume_after, SCAN_CHUNK};

/// Fold a table's shards into its counter when a read finds more than this many.
pub const FOLD_AT: usize = 64;

/// A fold replaces at most this many shards per transaction (each is a delete, plus the
/// history the engine keeps of it), far inside the engine's limits on a transaction.
pub const FOLD_CHUNK: usize = 4096;

/// How long a session reuses a count it read before reading it again.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// The key of `table`'s row counter: the first key under its row-count prefix.
pub fn counter_key(table: u64) -> Vec<u8> {
    Key::RowCountShard(table, 0, 0).encode()
}

/// The counter's value for `rows` rows.
pub fn counter_value(rows: u64) -> Value {
    Value::u64(rows)
}

/// Add `rows` (negative: removed) to `table`'s counter when `txn` commits.
pub fn add_rows(txn: &mut strata_engine::Transaction, table: u64, rows: i64) -> Result<()> {
    txn.sum(&counter_key(table), rows as u64)?;
    Ok(())
}

/// What one key under the row-count prefix adds: the counter holds a u64 (a two's
/// complement sum of deltas), an older shard a big-endian i64.
fn delta(v: &Value) -> Result<i64> {
    let corrupt = || SqlError::Internal("corrupt row count in the SQL catalog".into());
    match v.encoding {
        Encoding::U64 => v.as_u64().map(|n| n as i64).ok_or_else(corrupt),
        _ => {
            let b: [u8; 8] = v.data.as_slice().try_into().map_err(|_| corrupt())?;
            Ok(i64::from_be_bytes(b))
        }
    }
}

/// A table's counter and shards as of `txn`'s version: their keys and their sum.
pub(crate) async fn shards(
    txn: &mut strata_engine::Transaction,
    table: u64,
) -> Result<(Vec<Vec<u8>>, i64)> {
    first_shards(txn, &Key::RowCounts(table).encode(), table, usize::MAX).await
}

/// The first `most` keys from `start` under a table's row-count prefix, in key order, and
/// their sum. Only the part of the range up to the last one returned is read (for
/// conflicts), when there were more.
async fn first_shards(
    txn: &mut strata_engine::Transaction,
    start: &[u8],
    table: u64,
    most: usize,
) -> Result<(Vec<Vec<u8>>, i64)> {
    let end = strata_engine::prefix_end(&Key::RowCounts(table).encode());
    let mut start = start.to_vec();
    let (mut keys, mut sum) = (Vec::new(), 0i64);
    loop {
        let want = SCAN_CHUNK.min(most - keys.len());
        let chunk = txn.scan(&start, &end, false, want).await?;
        for (k, v) in &chunk {
            sum = sum.wrapping_add(delta(v)?);
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

/// Fold a table's shards into its counter, `chunk` shards per transaction (at least one),
/// until none is left or a transaction fails. The counter is not read but added to, so a
/// fold does not conflict with the commits adding to it meanwhile.
pub async fn fold(db: &Database, table: u64, chunk: usize) -> Result<()> {
    let chunk = chunk.max(1);
    // The first key after the counter.
    let mut after_counter = counter_key(table);
    after_counter.push(0);
    loop {
        let mut txn = db.begin().await?;
        let (keys, sum) = first_shards(&mut txn, &after_counter, table, chunk).await?;
        if keys.is_empty() {
            return Ok(());
        }
        for k in &keys {
            txn.delete(k)?;
        }
        txn.sum(&counter_key(table), sum as u64)?;
        txn.commit().await?;
        if keys.len() < chunk {
            return Ok(());
        }
    }
}

/// Replace a table's counter and shards with `rows`, counted at `txn`'s read version, in
/// `txn`: its read of them makes it conflict with any commit that changed the table since.
pub async fn reset(txn: &mut strata_engine::Transaction, table: u64, rows: u64) -> Result<()> {
    let (keys, _) = shards(txn, table).await?;
    for k in &keys {
        txn.delete(k)?;
    }
    txn.set(&counter_key(table), counter_value(rows))?;
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
