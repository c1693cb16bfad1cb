//! Interactive transactions: snapshot reads, read-your-writes, optimistic conflicts, and the
//! anomalies strict serializability rules out, under real concurrency.

use std::sync::Arc;

use strata_engine::{AtomicWrite, CommitOutcome, Database, EngineError, Value};

use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Pace, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "transactions",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            reads_see_own_writes,
            own_writes_expire_like_committed_ones,
            rollback_discards,
            reads_see_a_snapshot,
            a_later_write_to_a_read_key_conflicts,
            phantoms_conflict,
            read_only_transactions_never_conflict,
            blind_writes_do_not_conflict,
            commit_checks_see_the_state_the_commit_lands_on,
            sums_add_at_commit_without_conflicts,
            write_skew_is_prevented,
            concurrent_check_and_set_increments_lose_nothing,
            concurrent_transaction_increments_lose_nothing,
            concurrent_bank_transfers_keep_the_total,
        ],
    }
}

fn n(v: Option<Value>) -> u64 {
    v.and_then(|v| v.as_u64()).unwrap_or(0)
}

async fn reads_see_own_writes(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"a".to_vec(), Value::u64(1))
            .set(b"b".to_vec(), Value::u64(2)),
    )
    .await
    .step("seed")?;
    let mut t = db.begin().await.step("begin")?;
    t.set(b"c", Value::u64(3)).step("set")?;
    t.delete(b"a").step("delete")?;
    ensure_eq!(t.get(b"a").await.step("get")?, None);
    ensure_eq!(n(t.get(b"c").await.step("get")?), 3);
    let all = t.scan(b"", b"", false, 10).await.step("scan")?;
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    ensure_eq!(keys, vec![&b"b"[..], b"c"]);
    let rev = t.scan(b"", b"", true, 1).await.step("scan")?;
    ensure_eq!(rev[0].0, b"c".to_vec());
    ensure!(
        db.get(b"c").await.step("get")?.is_none(),
        "uncommitted writes are invisible outside"
    );
    let vs = t
        .commit()
        .await
        .step("commit")?
        .ok_or("a writing commit has a versionstamp")?;
    ensure_eq!(
        db.get(b"c").await.step("get")?.map(|e| e.versionstamp),
        Some(vs)
    );
    ensure!(
        db.get(b"a").await.step("get")?.is_none(),
        "delete committed"
    );
    Ok(())
}

/// A write whose deadline has passed is invisible to the transaction that made it, exactly as
/// it would be once committed.
async fn own_writes_expire_like_committed_ones(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"b".to_vec(), Value::u64(2)))
        .await
        .step("seed")?;
    let mut t = db.begin().await.step("begin")?;
    // Deadlines computed now: one already passed, one an hour away.
    let now = strata_engine::now_ms();
    t.set_with_expiry(b"a", Value::u64(1), now - 1)
        .step("set expired")?;
    t.set_with_expiry(b"b", Value::u64(3), now - 1)
        .step("overwrite with expired")?;
    t.set_with_expiry(b"c", Value::u64(4), now + 3_600_000)
        .step("set live")?;
    ensure_eq!(t.get(b"a").await.step("get a")?, None);
    ensure_eq!(t.get(b"b").await.step("get b")?, None);
    ensure_eq!(n(t.get(b"c").await.step("get c")?), 4);
    let all = t.scan(b"", b"", false, 10).await.step("scan")?;
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    ensure_eq!(keys, vec![&b"c"[..]]);
    t.commit().await.step("commit")?;
    ensure!(
        db.get(b"a").await.step("get")?.is_none(),
        "expired once committed"
    );
    ensure!(
        db.get(b"b").await.step("get")?.is_none(),
        "expired once committed"
    );
    Ok(())
}

async fn rollback_discards(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut t = db.begin().await.step("begin")?;
    t.set(b"x", Value::u64(1)).step("set")?;
    t.rollback();
    let mut t = db.begin().await.step("begin")?;
    t.set(b"y", Value::u64(1)).step("set")?;
    drop(t);
    ensure!(
        db.get(b"x").await.step("get")?.is_none(),
        "rolled back write visible"
    );
    ensure!(
        db.get(b"y").await.step("get")?.is_none(),
        "dropped transaction's write visible"
    );
    Ok(())
}

async fn reads_see_a_snapshot(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"a".to_vec(), Value::u64(1))
            .set(b"gone".to_vec(), Value::u64(1)),
    )
    .await
    .step("seed")?;
    let mut t = db.begin().await.step("begin")?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"a".to_vec(), Value::u64(2))
            .delete(b"gone".to_vec())
            .set(b"new".to_vec(), Value::u64(1)),
    )
    .await
    .step("concurrent write")?;
    ensure_eq!(n(t.get(b"a").await.step("get")?), 1);
    ensure_eq!(n(t.get(b"gone").await.step("get")?), 1);
    ensure_eq!(t.get(b"new").await.step("get")?, None);
    let keys: Vec<Vec<u8>> = t
        .scan(b"", b"", false, 10)
        .await
        .step("scan")?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ensure_eq!(keys, vec![b"a".to_vec(), b"gone".to_vec()]);
    ensure!(
        t.commit().await.step("read-only commit")?.is_none(),
        "read-only commit has no versionstamp"
    );
    Ok(())
}

async fn a_later_write_to_a_read_key_conflicts(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut t = db.begin().await.step("begin")?;
    t.get(b"k").await.step("get")?;
    t.set(b"other", Value::u64(1)).step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("concurrent write")?;
    match t.commit().await {
        Err(e @ EngineError::Conflict) => ensure!(e.is_retryable(), "conflicts are retryable"),
        other => return Err(format!("expected a conflict, got {other:?}")),
    }
    ensure!(
        db.get(b"other").await.step("get")?.is_none(),
        "a conflicting commit writes nothing"
    );
    Ok(())
}

async fn phantoms_conflict(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut t = db.begin().await.step("begin")?;
    let rows = t
        .scan(b"orders/", b"orders0", false, 100)
        .await
        .step("scan")?;
    t.set(b"count", Value::u64(rows.len() as u64)).step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"orders/1".to_vec(), Value::u64(1)))
        .await
        .step("insert")?;
    ensure!(
        matches!(t.commit().await, Err(EngineError::Conflict)),
        "an insert into a scanned range must conflict"
    );
    // A write outside a limited scan's reach does not.
    db.atomic_write(AtomicWrite::new().set(b"orders/2".to_vec(), Value::u64(1)))
        .await
        .step("insert")?;
    let mut t = db.begin().await.step("begin")?;
    let first = t
        .scan(b"orders/", b"orders0", false, 1)
        .await
        .step("scan")?;
    ensure_eq!(first.len(), 1);
    t.set(b"first", Value::u64(1)).step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"orders/3".to_vec(), Value::u64(1)))
        .await
        .step("insert")?;
    t.commit()
        .await
        .step("a write past the scanned prefix must not conflict")?;
    Ok(())
}

async fn read_only_transactions_never_conflict(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut t = db.begin().await.step("begin")?;
    t.get(b"k").await.step("get")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("write")?;
    ensure!(
        t.commit().await.step("commit")?.is_none(),
        "read-only commit"
    );
    Ok(())
}

async fn blind_writes_do_not_conflict(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut a = db.begin().await.step("begin")?;
    let mut b = db.begin().await.step("begin")?;
    a.set(b"k", Value::u64(1)).step("set")?;
    b.set(b"k", Value::u64(2)).step("set")?;
    a.commit().await.step("first blind write")?;
    b.commit().await.step("second blind write")?;
    ensure_eq!(u64_at(&db, b"k").await?, Some(2));
    Ok(())
}

/// A sum adds to what the key holds when the commit lands, unread: transactions summing
/// one key at once all commit and none is lost. Reading the key turns the sum into a read
/// and a set, which conflicts like any other read.
async fn sums_add_at_commit_without_conflicts(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"n".to_vec(), Value::u64(10)))
        .await
        .step("seed")?;

    // Two transactions from one snapshot both add: neither read, so neither conflicts.
    let mut a = db.begin().await.step("begin a")?;
    let mut b = db.begin().await.step("begin b")?;
    a.sum(b"n", 5).step("sum a")?;
    a.sum(b"n", 1).step("sum a again")?;
    b.sum(b"n", 100).step("sum b")?;
    b.sum(b"fresh", 7).step("sum absent")?;
    ensure!(b.has_writes(), "a sum is a write");
    ensure_eq!(b.own_write(b"n"), None);
    a.commit().await.step("commit a")?;
    b.commit().await.step("commit b")?;
    ensure_eq!(n(db.get(b"n").await.step("get")?.map(|e| e.value)), 116);
    ensure_eq!(n(db.get(b"fresh").await.step("get")?.map(|e| e.value)), 7);

    // Wrapping: adding the two's complement of 6 takes 6 away.
    let mut t = db.begin().await.step("begin")?;
    t.sum(b"n", 6u64.wrapping_neg()).step("sum negative")?;
    t.commit().await.step("commit")?;
    ensure_eq!(n(db.get(b"n").await.step("get")?.map(|e| e.value)), 110);

    // A sum after a set adds to what was set; a set after a sum replaces it.
    let mut t = db.begin().await.step("begin")?;
    t.set(b"s", Value::u64(40)).step("set")?;
    t.sum(b"s", 2).step("sum onto own set")?;
    ensure_eq!(n(t.get(b"s").await.step("get own")?), 42);
    t.sum(b"r", 9).step("sum")?;
    t.set(b"r", Value::u64(1)).step("set over sum")?;
    t.commit().await.step("commit")?;
    ensure_eq!(n(db.get(b"s").await.step("get")?.map(|e| e.value)), 42);
    ensure_eq!(n(db.get(b"r").await.step("get")?.map(|e| e.value)), 1);

    // Reading a summed key reads the snapshot: a commit to the key since then conflicts.
    let mut t = db.begin().await.step("begin")?;
    t.sum(b"n", 1).step("sum")?;
    ensure_eq!(n(t.get(b"n").await.step("get summed")?), 111);
    let scanned = t.scan(b"n", b"o", false, 10).await.step("scan")?;
    ensure_eq!(scanned.len(), 1);
    ensure_eq!(scanned[0].1.as_u64(), Some(111));
    db.atomic_write(AtomicWrite::new().mutate(strata_engine::Mutation::sum(b"n".to_vec(), 1)))
        .await
        .step("concurrent sum")?;
    match t.commit().await {
        Err(EngineError::Conflict) => {}
        other => return Err(format!("expected a conflict, got {other:?}")),
    }
    ensure_eq!(n(db.get(b"n").await.step("get")?.map(|e| e.value)), 111);

    // A sum undoes with a savepoint.
    let mut t = db.begin().await.step("begin")?;
    t.sum(b"n", 1).step("sum kept")?;
    t.savepoint();
    t.sum(b"n", 1000).step("sum undone")?;
    t.sum(b"gone", 3).step("sum undone")?;
    t.rollback_to_savepoint();
    t.commit().await.step("commit")?;
    ensure_eq!(n(db.get(b"n").await.step("get")?.map(|e| e.value)), 112);
    ensure!(db.get(b"gone").await.step("get")?.is_none(), "undone sum");

    // A value of another kind: the commit fails and writes nothing.
    db.atomic_write(AtomicWrite::new().set(b"text".to_vec(), Value::bytes(b"x".to_vec())))
        .await
        .step("seed text")?;
    let mut t = db.begin().await.step("begin")?;
    t.sum(b"text", 1).step("sum")?;
    t.set(b"other", Value::u64(1)).step("set")?;
    match t.commit().await {
        Err(EngineError::InvalidMutation(_)) => {}
        other => return Err(format!("expected an invalid mutation, got {other:?}")),
    }
    ensure!(
        db.get(b"other").await.step("get")?.is_none(),
        "nothing written"
    );

    // A key over the limit is refused when summed.
    let mut t = db.begin().await.step("begin")?;
    let long = vec![b'k'; db.options().limits.max_write_key_bytes + 1];
    match t.sum(&long, 1) {
        Err(EngineError::LimitExceeded { .. }) => {}
        other => return Err(format!("expected a limit error, got {other:?}")),
    }
    Ok(())
}

async fn commit_checks_see_the_state_the_commit_lands_on(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"meta".to_vec(), Value::u64(1)))
        .await
        .step("write meta")?;
    let mut t = db.begin().await.step("begin")?;
    let (_, vs) = t
        .get_versioned(b"meta")
        .await
        .step("get meta")?
        .ok_or("meta is missing")?;
    let first = vs.ok_or("a committed value has a versionstamp")?;
    t.rollback();

    // Unchanged and absent as required: the commit lands.
    let mut t = db.begin().await.step("begin")?;
    t.check(b"meta", Some(first)).step("check meta")?;
    t.check(b"row/1", None).step("check row")?;
    t.set(b"row/1", Value::u64(1)).step("set")?;
    t.commit().await.step("checks that hold")?;

    // Checked at commit, not at the snapshot: a version written after the transaction
    // began is the one it may require, and requiring it is no read that conflicts.
    let mut t = db.begin().await.step("begin")?;
    let second = match db
        .atomic_write(AtomicWrite::new().set(b"meta".to_vec(), Value::u64(2)))
        .await
        .step("write meta again")?
    {
        CommitOutcome::Committed(vs) => vs,
        other => return Err(format!("expected a commit, got {other:?}")),
    };
    t.check(b"meta", Some(second)).step("check meta")?;
    t.set(b"row/2", Value::u64(2)).step("set")?;
    t.commit().await.step("a check of the newest version")?;

    // A stale requirement fails the commit, which writes nothing.
    let mut t = db.begin().await.step("begin")?;
    t.check(b"meta", Some(first)).step("check meta")?;
    t.set(b"row/3", Value::u64(3)).step("set")?;
    match t.commit().await {
        Err(e @ EngineError::CheckFailed) => ensure!(e.is_retryable(), "retryable"),
        other => return Err(format!("expected a failed check, got {other:?}")),
    }
    ensure!(
        db.get(b"row/3").await.step("get")?.is_none(),
        "nothing written"
    );

    // A key created after the snapshot, which the snapshot cannot see, is not absent.
    let mut t = db.begin().await.step("begin")?;
    db.atomic_write(AtomicWrite::new().set(b"row/4".to_vec(), Value::u64(4)))
        .await
        .step("create row/4")?;
    t.check(b"row/4", None).step("check row/4")?;
    t.set(b"row/4", Value::u64(40)).step("set")?;
    ensure!(
        matches!(t.commit().await, Err(EngineError::CheckFailed)),
        "a key created before the commit landed is not absent"
    );
    ensure_eq!(u64_at(&db, b"row/4").await?, Some(4));

    // A check of a key no write could make is refused when it is made.
    let mut t = db.begin().await.step("begin")?;
    match t.check(&vec![b'k'; 100_000], None) {
        Err(EngineError::LimitExceeded { .. }) => {}
        other => return Err(format!("expected the key limit, got {other:?}")),
    }

    // A check made after a savepoint goes with the statement rolled back to it.
    let mut t = db.begin().await.step("begin")?;
    t.savepoint();
    t.check(b"meta", Some(first)).step("check meta")?;
    t.rollback_to_savepoint();
    t.set(b"row/5", Value::u64(5)).step("set")?;
    t.commit().await.step("a rolled-back check is not made")?;
    ensure_eq!(u64_at(&db, b"row/5").await?, Some(5));
    Ok(())
}

async fn write_skew_is_prevented(h: &Harness) -> CaseResult {
    // Two doctors on call; each may go off call only if the other stays on.
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"alice".to_vec(), Value::u64(1))
            .set(b"bob".to_vec(), Value::u64(1)),
    )
    .await
    .step("seed")?;
    let mut t1 = db.begin().await.step("begin")?;
    let mut t2 = db.begin().await.step("begin")?;
    for (t, me) in [(&mut t1, &b"alice"[..]), (&mut t2, &b"bob"[..])] {
        let on = n(t.get(b"alice").await.step("get")?) + n(t.get(b"bob").await.step("get")?);
        ensure_eq!(on, 2);
        t.set(me, Value::u64(0)).step("set")?;
    }
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    ensure!(r1.is_ok(), "the first commit succeeds: {r1:?}");
    ensure!(
        matches!(r2, Err(EngineError::Conflict)),
        "the second must conflict, got {r2:?}"
    );
    let on = u64_at(&db, b"alice").await?.unwrap_or(0) + u64_at(&db, b"bob").await?.unwrap_or(0);
    ensure_eq!(on, 1);
    Ok(())
}

async fn concurrent_check_and_set_increments_lose_nothing(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    // The emulator serves one request at a time: fewer rounds there, as contended.
    let (tasks, per_task) = match h.kind {
        crate::BackendKind::Dynamodb => (16u64, 8u64),
        _ => (16u64, 25u64),
    };
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut retries = 0u64;
            for _ in 0..per_task {
                loop {
                    let cur = db.get(b"counter").await?;
                    let (vs, n) = match &cur {
                        Some(e) => (Some(e.versionstamp), e.value.as_u64().unwrap_or(0)),
                        None => (None, 0),
                    };
                    let w = AtomicWrite::new()
                        .check(b"counter".to_vec(), vs)
                        .set(b"counter".to_vec(), Value::u64(n + 1));
                    match db.atomic_write(w).await? {
                        CommitOutcome::Committed(_) => break,
                        CommitOutcome::CheckFailed(_) => retries += 1,
                    }
                }
            }
            Ok::<u64, EngineError>(retries)
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?.step("increment task")?;
    }
    ensure_eq!(u64_at(&db, b"counter").await?, Some(tasks * per_task));
    Ok(())
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    loop {
        match f().await {
            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
            other => return other,
        }
    }
}

async fn concurrent_transaction_increments_lose_nothing(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    // The emulator answers one request at a time and every conflict costs a retry: as
    // contended there, with fewer rounds.
    let (tasks, per_task) = match h.kind {
        crate::BackendKind::Dynamodb => (8u64, 6u64),
        _ => (8u64, 25u64),
    };
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                retry(|| {
                    let db = db.clone();
                    async move {
                        let mut t = db.begin().await?;
                        let cur = n(t.get(b"counter").await?);
                        t.set(b"counter", Value::u64(cur + 1))?;
                        t.commit().await
                    }
                })
                .await?;
            }
            Ok::<(), EngineError>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?.step("increment task")?;
    }
    ensure_eq!(u64_at(&db, b"counter").await?, Some(tasks * per_task));
    Ok(())
}

async fn concurrent_bank_transfers_keep_the_total(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let accounts = 10u64;
    let mut w = AtomicWrite::new();
    for a in 0..accounts {
        w = w.set(format!("acct/{a}").into_bytes(), Value::u64(100));
    }
    db.atomic_write(w).await.step("seed")?;
    let db = Arc::new(db);
    let total = |db: Arc<Database>| async move {
        let mut t = db.begin().await?;
        let rows = t.scan(b"acct/", b"acct0", false, 100).await?;
        Ok::<u64, EngineError>(rows.iter().map(|(_, v)| v.as_u64().unwrap_or(0)).sum())
    };
    let rounds = match h.kind {
        crate::BackendKind::Dynamodb => 8,
        _ => 30,
    };
    let pace = Pace::default();
    let mut handles = Vec::new();
    for task in 0..8u64 {
        let db = db.clone();
        let mut paced = pace.writer();
        handles.push(tokio::spawn(async move {
            let mut x = task * 7919 + 1;
            for step in 0..rounds {
                paced.every(step, 10).await;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (from, to, amount) = (x % accounts, (x / 7) % accounts, x % 30);
                if from == to {
                    continue;
                }
                retry(|| {
                    let db = db.clone();
                    async move {
                        let mut t = db.begin().await?;
                        let fk = format!("acct/{from}").into_bytes();
                        let tk = format!("acct/{to}").into_bytes();
                        let f = n(t.get(&fk).await?);
                        let g = n(t.get(&tk).await?);
                        if f < amount {
                            return t.commit().await;
                        }
                        t.set(&fk, Value::u64(f - amount))?;
                        t.set(&tk, Value::u64(g + amount))?;
                        t.commit().await
                    }
                })
                .await?;
            }
            Ok::<(), EngineError>(())
        }));
    }
    let mut audits = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        let sum = total(db.clone()).await.step("audit")?;
        ensure_eq!(sum, accounts * 100);
        audits += 1;
        pace.pass();
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?.step("transfer task")?;
    }
    ensure_eq!(total(db.clone()).await.step("final audit")?, accounts * 100);
    ensure!(audits > 0, "no audit overlapped the transfers");
    Ok(())
}
