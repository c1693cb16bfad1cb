//! One database in the table: reads that see only committed data, and atomic batch writes
//! of any size.
//!
//! A batch that fits one `TransactWriteItems` call (100 items, 4 MB) is that call. Every item
//! write is conditioned on the item carrying no provisional write (`attribute_not_exists(t)`),
//! buckets on their content being what was read, and — when the engine passes one — the
//! version record on holding the expected version: if another process committed first, the
//! whole call fails and the engine learns of it (`PreconditionFailed`).
//!
//! A larger batch is committed in three phases under a transaction record `x#<db>`/txid:
//! 1. **stage**: every item gets the new content as a provisional write (`t` = txid, `n` =
//!    new content), in chunks that each also check the record is still `pending`;
//! 2. **commit**: one conditional update flips the record from `pending` to `committed` — the
//!    single atomic point;
//! 3. **roll forward**: each item's `n` becomes its content and `t` is removed.
//!
//! Readers that meet a provisional write look up its record: `committed` → the new content,
//! anything else → the old. So no reader sees part of a batch. A writer that meets another's
//! provisional write helps: it rolls a committed batch forward, cleans an aborted one, and
//! aborts a pending one whose holder made no progress (its heartbeat counter did not move)
//! for a while *as measured by the waiting process's own clock* — no wall-clock deadline is
//! shared between machines, and a crashed holder is recovered from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use strata_engine::{BackendError, BatchOp, Durability, Precondition, Store};

use crate::keys::{decode_bucket, encode_bucket, is_bucket, sort_key, Bucket};
use crate::Table;

const MAX_TX_ITEMS: usize = 100;
const MAX_TX_BYTES: usize = 3_500_000;
const MAX_ITEM_BYTES: usize = 390 * 1024;
/// New bytes staged per transaction (an item's old content counts too, so half the limit).
const MAX_STAGE_BYTES: usize = 1_500_000;
/// Items settled at once when a large commit is rolled forward or back.
const CLEANUP_PARALLELISM: usize = 16;
/// How long a writer waits for a pending batch's heartbeat to move before aborting it.
const ABORT_AFTER: Duration = Duration::from_secs(3);
/// The longest a writer waits for a live batch of another writer.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub struct DynamoStore {
    pub(crate) table: Arc<Table>,
    /// Partition of the data items.
    pub(crate) pk: String,
    /// Partition of the transaction records.
    pub(crate) xk: String,
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);
/// A suffix in a bucket and what it becomes (`None`: removed).
type BucketOp = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    Pending(u64),
    Committed,
    Aborted,
    Gone,
}

/// What one item becomes.
#[derive(Debug, Clone)]
struct ItemWrite {
    sk: Vec<u8>,
    /// New content (`None`: delete the item).
    new: Option<Vec<u8>>,
    /// For buckets: the content this write was computed from.
    expect: Option<Option<Vec<u8>>>,
    /// For the version record: the precondition's expected content.
    version_check: Option<Option<Vec<u8>>>,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}

fn blob(item: &HashMap<String, AttributeValue>, name: &str) -> Option<Vec<u8>> {
    match item.get(name) {
        Some(AttributeValue::B(b)) => Some(b.as_ref().to_vec()),
        _ => None,
    }
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub(crate) fn sdk_err<E: std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> BackendError {
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            BackendError::Unavailable(format!(
                "DynamoDB unreachable: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ))
        }
        SdkError::ServiceError(se) => {
            let msg = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&e));
            let status = se.raw().status().as_u16();
            if status >= 500
                || msg.contains("Throttling")
                || msg.contains("ProvisionedThroughputExceeded")
                || msg.contains("RequestLimitExceeded")
                || msg.contains("InternalServerError")
                || msg.contains("TransactionConflict")
            {
                BackendError::Unavailable(msg)
            } else {
                BackendError::Other(msg)
            }
        }
        _ => BackendError::Other(format!(
            "{}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        )),
    }
}

/// `Ok(false)` for a failed condition, the error otherwise.
fn condition_held<T>(r: Result<T, BackendError>) -> Result<bool, BackendError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("ConditionalCheckFailed") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Exponential backoff between retries of one call.
struct Backoff(Duration);

impl Backoff {
    fn new(first_ms: u64) -> Self {
        Backoff(Duration::from_millis(first_ms))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(500));
    }
}

impl DynamoStore {
    fn key(&self, pk: &str, sk: &[u8]) -> HashMap<String, AttributeValue> {
        HashMap::from([("p".to_string(), s(pk)), ("s".to_string(), b(sk))])
    }

    async fn get_item(
        &self,
        pk: &str,
        sk: &[u8],
    ) -> Result<Option<HashMap<String, AttributeValue>>, BackendError> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(self.key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item)
    }

    async fn tx_state(&self, txid: &str) -> Result<TxState, BackendError> {
        let Some(item) = self.get_item(&self.xk, txid.as_bytes()).await? else {
            return Ok(TxState::Gone);
        };
        Ok(match text(&item, "state") {
            Some("committed") => TxState::Committed,
            Some("aborted") => TxState::Aborted,
            Some("pending") => {
                let hb = match item.get("hb") {
                    Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                    _ => 0,
                };
                TxState::Pending(hb)
            }
            _ => TxState::Gone,
        })
    }

    /// The committed content of an item, looking through a provisional write.
    async fn content(
        &self,
        item: &HashMap<String, AttributeValue>,
        states: &mut HashMap<String, TxState>,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let mut owned;
        let mut item = item;
        for _ in 0..4 {
            let Some(t) = text(item, "t").map(str::to_string) else {
                return Ok(blob(item, "c"));
            };
            let state = match states.get(&t) {
                Some(s) => *s,
                None => {
                    let s = self.tx_state(&t).await?;
                    states.insert(t.clone(), s);
                    s
                }
            };
            match state {
                TxState::Committed => return Ok(blob(item, "n")),
                TxState::Pending(_) | TxState::Aborted => return Ok(blob(item, "c")),
                TxState::Gone => {
                    // The record is gone: its batch finished (settled every item) after this
                    // item was read. Read the item again for its settled content.
                    let (Some(p), Some(sk)) =
                        (text(item, "p").map(str::to_string), blob(item, "s"))
                    else {
                        return Ok(blob(item, "c"));
                    };
                    states.remove(&t);
                    match self.get_item(&p, &sk).await? {
                        Some(fresh) if text(&fresh, "t") != Some(t.as_str()) => {
                            owned = fresh;
                            item = &owned;
                        }
                        // Still marked by a batch with no record: it never reached its commit
                        // point (an abandoned stage), so the old content stands.
                        Some(fresh) => return Ok(blob(&fresh, "c")),
                        None => return Ok(None),
                    }
                }
            }
        }
        Err(BackendError::Unavailable(
            "an item kept changing while it was read".into(),
        ))
    }

    fn corrupt(&self, what: &str) -> BackendError {
        BackendError::Corrupt(format!("{} in {}: {what}", self.pk, self.table.name))
    }

    /// The entries an item holds: `(key, value)` in key order.
    fn expand(&self, sk: &[u8], content: Vec<u8>) -> Result<Vec<Pair>, BackendError> {
        if !is_bucket(sk) {
            return Ok(vec![(sk.to_vec(), content)]);
        }
        let bucket = decode_bucket(&content).ok_or_else(|| self.corrupt("undecodable bucket"))?;
        Ok(bucket
            .into_iter()
            .map(|(suffix, v)| ([sk, suffix.as_slice()].concat(), v))
            .collect())
    }

    // ------------------------------------------------------------------ writes

    /// Compute each item's new content: short keys directly, buckets from their current
    /// content. Fails over to resolving another writer's provisional write when met.
    async fn plan(
        &self,
        ops: &[BatchOp],
        precondition: &Option<Precondition>,
    ) -> Result<Option<Vec<ItemWrite>>, BackendError> {
        let mut short: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut buckets: BTreeMap<Vec<u8>, Vec<BucketOp>> = BTreeMap::new();
        for op in ops {
            let (key, value) = match op {
                BatchOp::Put(k, v) => (k, Some(v.clone())),
                BatchOp::Delete(k) => (k, None),
            };
            let (sk, bucket) = sort_key(key);
            if bucket {
                buckets
                    .entry(sk.to_vec())
                    .or_default()
                    .push((key[sk.len()..].to_vec(), value));
            } else {
                short.insert(key.clone(), value);
            }
        }
        let mut writes = Vec::with_capacity(short.len() + buckets.len() + 1);
        for (sk, ops) in buckets {
            let item = self.get_item(&self.pk, &sk).await?;
            let current = match &item {
                Some(i) => {
                    if let Some(t) = text(i, "t") {
                        self.resolve_foreign(t).await?;
                        return Ok(None);
                    }
                    blob(i, "c")
                }
                None => None,
            };
            let mut bucket: Bucket = match &current {
                Some(c) => decode_bucket(c).ok_or_else(|| self.corrupt("undecodable bucket"))?,
                None => Bucket::new(),
            };
            for (suffix, v) in ops {
                match v {
                    Some(v) => bucket.insert(suffix, v),
                    None => bucket.remove(&suffix),
                };
            }
            let new = (!bucket.is_empty()).then(|| encode_bucket(&bucket));
            if new.as_ref().is_some_and(|n| n.len() > MAX_ITEM_BYTES / 2) {
                return Err(BackendError::Other(format!(
                    "too many long keys share their first {} bytes: their bucket would exceed a DynamoDB item",
                    crate::keys::SORT_KEY_MAX
                )));
            }
            writes.push(ItemWrite {
                sk,
                new,
                expect: Some(current),
                version_check: None,
            });
        }
        for (sk, new) in short {
            if new.as_ref().is_some_and(|n| n.len() > MAX_ITEM_BYTES) {
                return Err(BackendError::Other(
                    "value too large for a DynamoDB item".into(),
                ));
            }
            let version_check = precondition
                .as_ref()
                .filter(|p| p.key == sk)
                .map(|p| p.expected.clone());
            writes.push(ItemWrite {
                sk,
                new,
                expect: None,
                version_check,
            });
        }
        if let Some(p) = precondition {
            if !writes.iter().any(|w| w.sk == p.key) {
                // Check the version record by writing back what it must hold.
                writes.push(ItemWrite {
                    sk: p.key.clone(),
                    new: p.expected.clone(),
                    expect: None,
                    version_check: Some(p.expected.clone()),
                });
            }
        }
        Ok(Some(writes))
    }

    fn condition(w: &ItemWrite, values: &mut HashMap<String, AttributeValue>) -> String {
        let mut cond = vec!["attribute_not_exists(t)".to_string()];
        for (expected, name) in [(&w.expect, ":old"), (&w.version_check, ":ver")] {
            match expected {
                Some(Some(v)) => {
                    values.insert(name.to_string(), b(v));
                    cond.push(format!("c = {name}"));
                }
                Some(None) => cond.push("attribute_not_exists(c)".into()),
                None => {}
            }
        }
        cond.join(" AND ")
    }

    fn transact_item(&self, w: &ItemWrite) -> Result<TransactWriteItem, BackendError> {
        let mut values = HashMap::new();
        let cond = Self::condition(w, &mut values);
        let vals = (!values.is_empty()).then_some(values);
        let build = |e: aws_sdk_dynamodb::error::BuildError| BackendError::Other(e.to_string());
        let item = {
            match &w.new {
                Some(content) => {
                    let mut item = self.key(&self.pk, &w.sk);
                    item.insert("c".into(), b(content));
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table.name)
                                .set_item(Some(item))
                                .condition_expression(cond)
                                .set_expression_attribute_values(vals)
                                .build()
                                .map_err(build)?,
                        )
                        .build()
                }
                None => TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table.name)
                            .set_key(Some(self.key(&self.pk, &w.sk)))
                            .condition_expression(cond)
                            .set_expression_attribute_values(vals)
                            .build()
                            .map_err(build)?,
                    )
                    .build(),
            }
        };
        Ok(item)
    }

    /// One `TransactWriteItems`. `Ok(None)` when applied; `Ok(Some(i))` when item `i`'s
    /// condition failed; `Err` for anything else.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<usize>>, BackendError> {
        let mut backoff = Backoff::new(10);
        for _ in 0..8 {
            let r = self
                .table
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(None),
                Err(SdkError::ServiceError(se)) => {
                    if let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc) =
                        se.err()
                    {
                        let reasons = tc.cancellation_reasons();
                        let failed: Vec<usize> = reasons
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                            .map(|(i, _)| i)
                            .collect();
                        if !failed.is_empty() {
                            return Ok(Some(failed));
                        }
                        let permanent: Vec<String> = reasons
                            .iter()
                            .filter_map(|r| r.code())
                            .filter(|c| !matches!(*c, "None" | "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"))
                            .map(|c| c.to_string())
                            .collect();
                        if !permanent.is_empty() {
                            return Err(BackendError::Other(format!("DynamoDB refused the transaction: {}", permanent.join(", "))));
                        }
                        // TransactionConflict (another transaction on the same items), throttling.
                        backoff.wait().await;
                        continue;
                    }
                    if matches!(
                        se.err(),
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionInProgressException(_)
                    ) {
                        backoff.wait().await;
                        continue;
                    }
                    return Err(sdk_err(SdkError::ServiceError(se)));
                }
                Err(e) => return Err(sdk_err(e)),
            }
        }
        Err(BackendError::Unavailable(
            "DynamoDB kept refusing the transaction (contention)".into(),
        ))
    }

    async fn apply_small(&self, writes: &[ItemWrite]) -> Result<Option<Vec<usize>>, BackendError> {
        let items = writes
            .iter()
            .map(|w| self.transact_item(w))
            .collect::<Result<Vec<_>, _>>()?;
        self.transact(items).await
    }

    /// After a failed condition: resolve provisional writes on the failed items. Returns
    /// `Err(PreconditionFailed)` when the version record moved.
    async fn after_conflict(
        &self,
        writes: &[ItemWrite],
        failed: &[usize],
    ) -> Result<(), BackendError> {
        for &i in failed {
            let Some(w) = writes.get(i) else { continue };
            let item = self.get_item(&self.pk, &w.sk).await?;
            if let Some(t) = item.as_ref().and_then(|i| text(i, "t")) {
                self.resolve_foreign(t).await?;
                continue;
            }
            if let Some(expected) = &w.version_check {
                if item.as_ref().and_then(|i| blob(i, "c")) != *expected {
                    return Err(BackendError::PreconditionFailed);
                }
            }
        }
        Ok(())
    }

    async fn apply_large(
        &self,
        writes: &[ItemWrite],
    ) -> Result<Result<(), Vec<usize>>, BackendError> {
        let txid = uuid::Uuid::new_v4().to_string();
        let client = &self.table.client;
        // The transaction record, then the list of items it will touch.
        let mut record = self.key(&self.xk, txid.as_bytes());
        record.insert("state".into(), s("pending"));
        record.insert("hb".into(), AttributeValue::N("0".into()));
        client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(record))
            .send()
            .await
            .map_err(sdk_err)?;
        let mut chunk = Vec::new();
        let mut chunks = 0u32;
        let flush = |chunk: Vec<u8>, n: u32| {
            let mut item = self.key(&self.xk, format!("{txid}#{n}").as_bytes());
            item.insert("keys".into(), AttributeValue::B(Blob::new(chunk)));
            client
                .put_item()
                .table_name(&self.table.name)
                .set_item(Some(item))
                .send()
        };
        for w in writes {
            if chunk.len() + w.sk.len() + 4 > MAX_ITEM_BYTES {
                flush(std::mem::take(&mut chunk), chunks)
                    .await
                    .map_err(sdk_err)?;
                chunks += 1;
            }
            chunk.extend_from_slice(&(w.sk.len() as u32).to_be_bytes());
            chunk.extend_from_slice(&w.sk);
        }
        flush(chunk, chunks).await.map_err(sdk_err)?;

        // Stage, in chunks that each re-check that the record is still pending.
        let mut staged = 0;
        for group in stage_chunks(writes) {
            let mut items = vec![self.pending_check(&txid)?];
            for w in group {
                items.push(self.stage_item(w, &txid)?);
            }
            match self.transact(items).await? {
                None => {
                    staged += group.len();
                    if crate::EXIT_DURING_LARGE_COMMIT.load(std::sync::atomic::Ordering::SeqCst) {
                        eprintln!("fault injection: exiting in the middle of a large commit");
                        std::process::exit(9);
                    }
                }
                Some(failed) => {
                    let aborted = failed.contains(&0);
                    let failed_items: Vec<usize> = failed
                        .iter()
                        .filter(|&&i| i > 0)
                        .map(|&i| staged + i - 1)
                        .collect();
                    if !aborted {
                        self.abort_own(&txid).await?;
                    }
                    self.cleanup(&txid, false).await?;
                    if aborted {
                        return Err(BackendError::PreconditionFailed);
                    }
                    return Ok(Err(failed_items));
                }
            }
            let alive = self.update_record(&txid, "SET hb = hb + :one", None).await;
            if !matches!(alive, Ok(true)) {
                self.cleanup(&txid, false).await?;
                return Err(BackendError::PreconditionFailed);
            }
        }
        // The commit point.
        let commit = self
            .update_record(&txid, "SET #st = :committed", None)
            .await;
        if !matches!(commit, Ok(true)) {
            // The answer was lost or the record was aborted: settle which, before undoing.
            tracing::debug!(outcome = ?commit, "large commit point in doubt");
            let committed = match self.tx_state(&txid).await? {
                TxState::Committed => true,
                TxState::Pending(_) => {
                    if self.abort_own(&txid).await? {
                        false
                    } else {
                        self.tx_state(&txid).await? == TxState::Committed
                    }
                }
                TxState::Aborted | TxState::Gone => false,
            };
            if !committed {
                self.cleanup(&txid, false).await?;
                return Err(BackendError::PreconditionFailed);
            }
        }
        // Committed. Whatever of the roll-forward fails here, readers and other writers finish.
        if let Err(e) = self.cleanup(&txid, true).await {
            tracing::warn!(error = %e, "rolling a committed batch forward is unfinished; others will finish it");
        }
        Ok(Ok(()))
    }

    fn pending_check(&self, txid: &str) -> Result<TransactWriteItem, BackendError> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table.name)
                    .set_key(Some(self.key(&self.xk, txid.as_bytes())))
                    .condition_expression("#st = :pending")
                    .expression_attribute_names("#st", "state")
                    .expression_attribute_values(":pending", s("pending"))
                    .build()
                    .map_err(|e| BackendError::Other(e.to_string()))?,
            )
            .build())
    }

    fn stage_item(&self, w: &ItemWrite, txid: &str) -> Result<TransactWriteItem, BackendError> {
        let mut values = HashMap::from([(":t".to_string(), s(txid))]);
        let cond = Self::condition(w, &mut values);
        let update = match &w.new {
            Some(n) => {
                values.insert(":n".into(), b(n));
                "SET t = :t, n = :n"
            }
            None => "SET t = :t REMOVE n",
        };
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table.name)
                    .set_key(Some(self.key(&self.pk, &w.sk)))
                    .update_expression(update)
                    .condition_expression(cond)
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(|e| BackendError::Other(e.to_string()))?,
            )
            .build())
    }

    /// Apply `update` to a transaction record if it is still pending (and, with `hb`, its
    /// heartbeat is still that); `false` if it was not.
    async fn update_record(
        &self,
        txid: &str,
        update: &str,
        hb: Option<u64>,
    ) -> Result<bool, BackendError> {
        let mut values = HashMap::from([(":pending".to_string(), s("pending"))]);
        for state in ["committed", "aborted"] {
            if update.contains(&format!(":{state}")) {
                values.insert(format!(":{state}"), s(state));
            }
        }
        if update.contains(":one") {
            values.insert(":one".into(), AttributeValue::N("1".into()));
        }
        let mut cond = "#st = :pending".to_string();
        if let Some(hb) = hb {
            values.insert(":hb".into(), AttributeValue::N(hb.to_string()));
            cond.push_str(" AND hb = :hb");
        }
        let r = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(self.key(&self.xk, txid.as_bytes())))
            .update_expression(update)
            .condition_expression(cond)
            .expression_attribute_names("#st", "state")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(sdk_err);
        condition_held(r)
    }

    /// Flip our own record from pending to aborted; `false` if it was no longer pending.
    async fn abort_own(&self, txid: &str) -> Result<bool, BackendError> {
        self.update_record(txid, "SET #st = :aborted", None).await
    }

    /// The items a transaction record lists.
    async fn intents(&self, txid: &str) -> Result<Vec<Vec<u8>>, BackendError> {
        let mut out = Vec::new();
        for n in 0u32.. {
            let Some(item) = self
                .get_item(&self.xk, format!("{txid}#{n}").as_bytes())
                .await?
            else {
                break;
            };
            let mut rest = blob(&item, "keys").unwrap_or_default();
            let mut slice = rest.as_mut_slice() as &[u8];
            while slice.len() >= 4 {
                let len = u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]) as usize;
                let Some(k) = slice.get(4..4 + len) else {
                    break;
                };
                out.push(k.to_vec());
                slice = &slice[4 + len..];
            }
        }
        Ok(out)
    }

    /// Roll a committed transaction's items forward, or an aborted one's back; then remove
    /// its record. Idempotent: several writers may do it at once.
    async fn cleanup(&self, txid: &str, committed: bool) -> Result<(), BackendError> {
        let client = &self.table.client;
        let items = self.intents(txid).await?;
        for chunk in items.chunks(CLEANUP_PARALLELISM) {
            let settled = futures_util::future::join_all(
                chunk.iter().map(|sk| self.settle(sk, txid, committed)),
            )
            .await;
            for r in settled {
                r?;
            }
        }
        for n in 0u32.. {
            let sk = format!("{txid}#{n}");
            if self.get_item(&self.xk, sk.as_bytes()).await?.is_none() {
                break;
            }
            client
                .delete_item()
                .table_name(&self.table.name)
                .set_key(Some(self.key(&self.xk, sk.as_bytes())))
                .send()
                .await
                .map_err(sdk_err)?;
        }
        client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(self.key(&self.xk, txid.as_bytes())))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    /// Make one item's content final: the provisional content if `committed`, else the old
    /// one; an item left with no content is deleted. One request when nothing raced.
    async fn settle(&self, sk: &[u8], txid: &str, committed: bool) -> Result<(), BackendError> {
        let mut backoff = Backoff::new(10);
        for _ in 0..8 {
            match self.settle_once(sk, txid, committed).await {
                Err(e) if e.is_transient() => backoff.wait().await,
                other => return other,
            }
        }
        self.settle_once(sk, txid, committed).await
    }

    async fn settle_once(
        &self,
        sk: &[u8],
        txid: &str,
        committed: bool,
    ) -> Result<(), BackendError> {
        let client = &self.table.client;
        let (keep, update) = if committed {
            ("n", "SET c = n REMOVE t, n")
        } else {
            ("c", "REMOVE t, n")
        };
        let r = client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(self.key(&self.pk, sk)))
            .update_expression(update)
            .condition_expression(format!("t = :t AND attribute_exists({keep})"))
            .expression_attribute_values(":t", s(txid))
            .send()
            .await
            .map_err(sdk_err);
        if condition_held(r)? {
            return Ok(());
        }
        let r = client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(self.key(&self.pk, sk)))
            .condition_expression(format!("t = :t AND attribute_not_exists({keep})"))
            .expression_attribute_values(":t", s(txid))
            .send()
            .await
            .map_err(sdk_err);
        // A failed condition: someone else settled it.
        condition_held(r).map(|_| ())
    }

    /// Another writer's provisional write is in the way: finish, undo, or (if its writer
    /// stopped making progress) abort its batch.
    async fn resolve_foreign(&self, txid: &str) -> Result<(), BackendError> {
        let started = Instant::now();
        let mut watched: Option<(u64, Instant)> = None;
        loop {
            match self.tx_state(txid).await? {
                TxState::Committed => return self.cleanup(txid, true).await,
                TxState::Aborted | TxState::Gone => return self.cleanup(txid, false).await,
                TxState::Pending(hb) => {
                    match watched {
                        Some((seen, since)) if seen == hb => {
                            if since.elapsed() >= ABORT_AFTER {
                                let aborted = self
                                    .update_record(txid, "SET #st = :aborted", Some(hb))
                                    .await;
                                if matches!(aborted, Ok(true)) {
                                    tracing::warn!(
                                        txid,
                                        "aborted a stalled batch of another writer"
                                    );
                                }
                                continue;
                            }
                        }
                        _ => watched = Some((hb, Instant::now())),
                    }
                    if started.elapsed() > GIVE_UP_AFTER {
                        return Err(BackendError::Unavailable(format!(
                            "another writer's batch {txid} is still in progress"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Split writes into staging transactions: at most 99 items (one slot checks the record)
/// and [`MAX_STAGE_BYTES`] of new content each.
fn stage_chunks(writes: &[ItemWrite]) -> Vec<&[ItemWrite]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, w) in writes.iter().enumerate() {
        let size = w.sk.len() + w.new.as_ref().map_or(0, |n| n.len()) + 100;
        if i > start && (i - start >= MAX_TX_ITEMS - 1 || bytes + size > MAX_STAGE_BYTES) {
            out.push(&writes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < writes.len() {
        out.push(&writes[start..]);
    }
    out
}

#[async_trait::async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let (sk, bucket) = sort_key(key);
        let Some(item) = self.get_item(&self.pk, sk).await? else {
            return Ok(None);
        };
        let Some(content) = self.content(&item, &mut HashMap::new()).await? else {
            return Ok(None);
        };
        if !bucket {
            return Ok(Some(content));
        }
        let b = decode_bucket(&content).ok_or_else(|| self.corrupt("undecodable bucket"))?;
        Ok(b.get(&key[sk.len()..]).cloned())
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        let mut out = Vec::new();
        if limit == 0 || strata_engine::range_is_empty(start, end) {
            return Ok(out);
        }
        let lo = sort_key(start).0.to_vec();
        let hi = (!end.is_empty()).then(|| sort_key(end).0.to_vec());
        let mut states = HashMap::new();
        let mut exclusive_start = None;
        loop {
            let mut q = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .consistent_read(true)
                .scan_index_forward(!reverse)
                .limit((limit - out.len()).min(998) as i32 + 2)
                .expression_attribute_values(":p", s(&self.pk))
                .expression_attribute_values(":lo", b(&lo))
                .set_exclusive_start_key(exclusive_start.take());
            q = match &hi {
                Some(hi) => q
                    .key_condition_expression("p = :p AND s BETWEEN :lo AND :hi")
                    .expression_attribute_values(":hi", b(hi)),
                None => q.key_condition_expression("p = :p AND s >= :lo"),
            };
            let page = q.send().await.map_err(sdk_err)?;
            for item in page.items() {
                let sk = blob(item, "s").ok_or_else(|| self.corrupt("item without a sort key"))?;
                let Some(content) = self.content(item, &mut states).await? else {
                    continue;
                };
                let mut entries = self.expand(&sk, content)?;
                if reverse {
                    entries.reverse();
                }
                for (k, v) in entries {
                    if k.as_slice() >= start && (end.is_empty() || k.as_slice() < end) {
                        out.push((k, v));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => exclusive_start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut found: HashMap<Vec<u8>, HashMap<String, AttributeValue>> = HashMap::new();
        let mut sks: Vec<Vec<u8>> = keys.iter().map(|k| sort_key(k).0.to_vec()).collect();
        sks.sort();
        sks.dedup();
        for chunk in sks.chunks(100) {
            let mut request = KeysAndAttributes::builder().consistent_read(true);
            for sk in chunk {
                request = request.keys(self.key(&self.pk, sk));
            }
            let mut pending = Some(HashMap::from([(
                self.table.name.clone(),
                request
                    .build()
                    .map_err(|e| BackendError::Other(e.to_string()))?,
            )]));
            let mut backoff = Backoff::new(5);
            let mut rounds = 0;
            while let Some(req) = pending.take().filter(|r| !r.is_empty()) {
                rounds += 1;
                if rounds > 50 {
                    return Err(BackendError::Unavailable(
                        "DynamoDB kept leaving keys unprocessed".into(),
                    ));
                }
                let out = self
                    .table
                    .client
                    .batch_get_item()
                    .set_request_items(Some(req))
                    .send()
                    .await
                    .map_err(sdk_err)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table.name))
                    .unwrap_or_default()
                {
                    if let Some(sk) = blob(&item, "s") {
                        found.insert(sk, item);
                    }
                }
                pending = out.unprocessed_keys.filter(|u| !u.is_empty());
                if pending.is_some() {
                    backoff.wait().await;
                }
            }
        }
        let mut states = HashMap::new();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let (sk, bucket) = sort_key(k);
            let value = match found.get(sk) {
                Some(item) => match self.content(item, &mut states).await? {
                    Some(c) if bucket => decode_bucket(&c)
                        .ok_or_else(|| self.corrupt("undecodable bucket"))?
                        .remove(&k[sk.len()..]),
                    other => other,
                },
                None => None,
            };
            out.push(value);
        }
        Ok(out)
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        _durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        // DynamoDB acknowledges a write only once it is durable: both durabilities are `Sync`.
        for _attempt in 0..50 {
            let Some(writes) = self.plan(&ops, &precondition).await? else {
                continue;
            };
            let bytes: usize = writes
                .iter()
                .map(|w| w.sk.len() + w.new.as_ref().map_or(0, |n| n.len()) + 64)
                .sum();
            let failed = if writes.len() <= MAX_TX_ITEMS && bytes <= MAX_TX_BYTES {
                self.apply_small(&writes).await?
            } else {
                self.apply_large(&writes).await?.err()
            };
            match failed {
                None => return Ok(()),
                Some(failed) => self.after_conflict(&writes, &failed).await?,
            }
        }
        Err(BackendError::Unavailable(
            "could not apply the batch: other writers kept changing the same items".into(),
        ))
    }
}
