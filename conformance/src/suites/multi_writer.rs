//! Several engines — separate processes in production, separate engine instances here —
//! committing to one shared store. The engine's guarantees must hold across them: strictly
//! increasing versionstamps, no lost update, conflicts between their transactions, reads that
//! see every commit that completed before them, and exclusive queue leases.

use std::collections::HashSet;
use std::time::Duration;

use strata_engine::{
    AtomicWrite, CommitOutcome, Engine, EngineConfig, EngineError, Enqueue, Mutation, ReadAt,
    Value, Versionstamp,
};

use crate::gate::{Gate, Point};
use crate::ordered::OrderedLog;
use crate::{cases, ensure, ensure_eq, eventually, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "multi_writer",
        needs_persistence: false,
        needs_multi_writer: true,
        external: false,
        cases: cases![
            versionstamps_increase_across_writers,
            concurrent_increments_from_two_writers_lose_nothing,
            reads_see_the_other_writers_commits,
            transactions_conflict_across_writers,
            watchers_hear_the_other_writer,
            one_feed_orders_both_writers_commits,
            queue_leases_are_exclusive_across_writers,
            another_writers_collection_fails_old_reads_clearly,
            snapshots_never_mix_states_across_writers,
            collections_never_move_the_horizon_back,
            concurrent_creation_agrees_on_one_database,
            sweeps_never_undo_another_writers_expiry,
            a_group_in_flight_never_applies_after_one_that_lost_the_race,
            groups_in_flight_lose_nothing_under_concurrent_writers,
            a_lost_answer_in_flight_is_settled_not_applied_twice,
            a_group_lingers_for_the_commits_just_answered,
        ],
    }
}

fn engine(h: &Harness) -> Engine {
    Engine::new(
        h.shared_backend(),
        EngineConfig {
            follow_interval_ms: 20,
            ..Harness::config()
        },
    )
}

fn vs(o: CommitOutcome) -> Result<Versionstamp, String> {
    o.versionstamp().ok_or_else(|| format!("unexpected {o:?}"))
}

async fn versionstamps_increase_across_writers(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    let mut last = Versionstamp::ZERO;
    for i in 0..20u64 {
        let d = if i % 2 == 0 { &da } else { &db };
        let v = vs(d
            .atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(i)))
            .await
            .step("write")?)?;
        ensure!(v > last, "versionstamp {v} after {last}");
        last = v;
    }
    let e = da.get(b"k").await.step("get")?.ok_or("missing")?;
    ensure_eq!(e.value.as_u64(), Some(19));
    ensure_eq!(e.versionstamp, last);
    Ok(())
}

async fn concurrent_increments_from_two_writers_lose_nothing(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let dbs = [
        a.open_or_create("shared").await.step("open a")?,
        b.open_or_create("shared").await.step("open b")?,
    ];
    let mut tasks = Vec::new();
    for (w, d) in dbs.iter().enumerate() {
        for t in 0..4u64 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20u64 {
                    let key = format!("counter/{}", (t + i + w as u64) % 3).into_bytes();
                    loop {
                        let cur = d.get(&key).await?;
                        let (check, n) = match &cur {
                            Some(e) => (Some(e.versionstamp), e.value.as_u64().unwrap_or(0)),
                            None => (None, 0),
                        };
                        let w = AtomicWrite::new()
                            .check(key.clone(), check)
                            .set(key.clone(), Value::u64(n + 1));
                        if let CommitOutcome::Committed(_) = d.atomic_write(w).await? {
                            break;
                        }
                    }
                }
                Ok::<(), EngineError>(())
            }));
        }
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?.step("increment task")?;
    }
    let got = dbs[1]
        .get_many(
            &(0..3)
                .map(|i| format!("counter/{i}").into_bytes())
                .collect::<Vec<_>>(),
            ReadAt::Latest,
        )
        .await
        .step("read")?;
    let total: u64 = got.iter().flatten().filter_map(|e| e.value.as_u64()).sum();
    ensure_eq!(total, 2 * 4 * 20);
    Ok(())
}

async fn reads_see_the_other_writers_commits(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    for i in 0..10u64 {
        let w = AtomicWrite::new()
            .set(b"x".to_vec(), Value::u64(i))
            .set(b"y".to_vec(), Value::u64(i));
        let v = vs(db.atomic_write(w).await.step("write b")?)?;
        // Completed before the reads start: every read must see it.
        let single = da.get(b"x").await.step("get")?.ok_or("missing")?;
        ensure_eq!(single.versionstamp, v);
        let many = da
            .get_many(&[b"x".to_vec(), b"y".to_vec()], ReadAt::Latest)
            .await
            .step("get_many")?;
        ensure_eq!(many[1].as_ref().map(|e| e.versionstamp), Some(v));
        ensure!(
            da.version() >= v.version(),
            "the reader's version caught up"
        );
        let mut t = da.begin().await.step("begin")?;
        ensure_eq!(
            t.get(b"y").await.step("txn get")?.and_then(|v| v.as_u64()),
            Some(i)
        );
        t.rollback();
    }
    Ok(())
}

async fn transactions_conflict_across_writers(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    da.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("seed")?;
    let mut t = da.begin().await.step("begin")?;
    t.get(b"k").await.step("read")?;
    t.set(b"derived", Value::u64(1)).step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(2)))
        .await
        .step("other writer")?;
    let r = t.commit().await;
    ensure!(
        matches!(r, Err(EngineError::Conflict)),
        "a write by the other process to a read key must conflict: {r:?}"
    );
    ensure!(
        db.get(b"derived").await.step("get")?.is_none(),
        "nothing written"
    );
    Ok(())
}

async fn watchers_hear_the_other_writer(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    let mut w = da.watch(vec![b"w".to_vec()]).step("watch")?;
    ensure!(
        w.next().await.step("first")?[0].is_none(),
        "absent at first"
    );
    db.atomic_write(AtomicWrite::new().set(b"w".to_vec(), Value::u64(5)))
        .await
        .step("write")?;
    let next = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .map_err(|_| "no notification")?
        .step("next")?;
    ensure_eq!(next[0].as_ref().and_then(|e| e.value.as_u64()), Some(5));
    Ok(())
}

async fn one_feed_orders_both_writers_commits(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    let start = da.version();
    let mut written = Vec::new();
    for i in 0..10u64 {
        let d = if i % 2 == 0 { &da } else { &db };
        let key = format!("f{i}").into_bytes();
        let v = vs(d
            .atomic_write(AtomicWrite::new().set(key.clone(), Value::u64(i)))
            .await
            .step("write")?)?;
        written.push((v.version(), key));
    }
    // Each process's feed holds both processes' commits, in one order.
    for d in [&da, &db] {
        let page = d.changes(start, 1_000).await.step("changes")?;
        let seen: Vec<(u64, Vec<u8>)> = page
            .changes
            .into_iter()
            .map(|c| (c.version, c.key))
            .collect();
        ensure_eq!(seen, written);
    }
    Ok(())
}

async fn queue_leases_are_exclusive_across_writers(h: &Harness) -> CaseResult {
    let (a, b) = (engine(h), engine(h));
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    let mut w = AtomicWrite::new();
    for i in 0..40u8 {
        w = w.enqueue(Enqueue::now(Value::bytes(vec![i])));
    }
    da.atomic_write(w).await.step("enqueue")?;
    let mut tasks = Vec::new();
    for d in [da.clone(), db.clone(), da.clone(), db.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let m = d.lease(3, Duration::from_secs(60)).await?;
                if m.is_empty() {
                    return Ok::<_, EngineError>(got);
                }
                got.extend(m.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?.step("lease task")?);
    }
    let unique: HashSet<_> = all.iter().collect();
    ensure_eq!(unique.len(), all.len());
    ensure_eq!(all.len(), 40);
    Ok(())
}

async fn another_writers_collection_fails_old_reads_clearly(h: &Harness) -> CaseResult {
    // B holds an old snapshot that A cannot know about; once A's garbage collection passes
    // it, B's reads must fail with VersionTooOld, never return a wrong answer.
    let config = EngineConfig {
        follow_interval_ms: 20,
        transaction_window_ms: 100,
        background_tasks: false,
        ..Harness::config()
    };
    let a = Engine::new(h.shared_backend(), config.clone());
    let b = Engine::new(h.shared_backend(), config);
    let opts = strata_engine::DatabaseOptions {
        history_retention_ms: 100,
        ..Default::default()
    };
    let da = a.create_database("gc", Some(opts)).await.step("create")?;
    da.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("w1")?;
    let db = b.database("gc").await.step("open b")?;
    let snapshot = db.snapshot().await.step("snapshot")?;
    let old = snapshot.version();
    let mut old_txn = db.begin().await.step("begin")?;
    ensure_eq!(snapshot.entries(b"", b"", 10).await.step("read")?.len(), 1);
    for i in 2..5 {
        da.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(i)))
            .await
            .step("w")?;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    da.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(9)))
        .await
        .step("w")?;
    da.collect_garbage().await.step("gc")?;
    ensure!(
        da.oldest_readable_version() > old,
        "A's horizon moved past B's snapshot"
    );
    let r = snapshot.entries(b"", b"", 10).await;
    ensure!(
        matches!(r, Err(EngineError::VersionTooOld { .. })),
        "B's old snapshot must fail clearly: {r:?}"
    );
    let r = db.get_many(&[b"k".to_vec()], ReadAt::Version(old)).await;
    ensure!(
        matches!(r, Err(EngineError::VersionTooOld { .. })),
        "an explicit old read too: {r:?}"
    );
    // Through a transaction that old, the same is retryable: it works again from `begin`.
    let r = old_txn.get(b"k").await;
    ensure!(
        matches!(&r, Err(e @ EngineError::TransactionTooOld { .. }) if e.is_retryable()),
        "an old transaction's read must be a retryable TransactionTooOld: {r:?}"
    );
    ensure_eq!(u64_at(&db, b"k").await?, Some(9));
    Ok(())
}

/// A reader on one writer, racing the other writer's commit that overwrites `j` and deletes
/// `k`, sees both keys before it or both after it — never the new `j` with the old `k`, nor
/// the old `j` without `k` — through snapshots, explicit versions and transactions.
async fn snapshots_never_mix_states_across_writers(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let config = EngineConfig {
        follow_interval_ms: 60_000,
        ..Harness::config()
    };
    let a = Engine::new(gate.wrap(h.shared_backend()), config.clone());
    let b = Engine::new(h.shared_backend(), config);
    let da = a.open_or_create("shared").await.step("open a")?;
    let db = b.open_or_create("shared").await.step("open b")?;
    let (j, k) = (b"j".to_vec(), b"k".to_vec());
    let mut round = 0u64;
    let mut reset = || {
        round += 1;
        AtomicWrite::new()
            .set(j.clone(), Value::u64(round))
            .set(k.clone(), Value::u64(round))
    };
    let race = || {
        AtomicWrite::new()
            .set(j.clone(), Value::u64(1000))
            .delete(k.clone())
    };
    let consistent = |j: Option<u64>, k: Option<u64>| -> CaseResult {
        match (j, k) {
            (Some(1000), None) => Ok(()),
            (Some(x), Some(y)) if x == y && x < 1000 => Ok(()),
            other => Err(format!("a state that never existed: (j, k) = {other:?}")),
        }
    };

    // A snapshot read paused between its two ranges.
    db.atomic_write(reset()).await.step("reset")?;
    u64_at(&da, b"j").await?;
    let mut held = gate.hold(Point::ReadAfter, |key| key == b"lj");
    let reader = {
        let da = da.clone();
        tokio::spawn(async move {
            da.snapshot_read(
                &[
                    strata_engine::ReadRange::new(b"j".to_vec(), b"j\0".to_vec(), 1),
                    strata_engine::ReadRange::new(b"k".to_vec(), b"k\0".to_vec(), 1),
                ],
                ReadAt::Latest,
            )
            .await
        })
    };
    held.reached().await;
    db.atomic_write(race()).await.step("race")?;
    held.release();
    let snap = reader.await.map_err(|e| e.to_string())?.step("snapshot")?;
    let first = |i: usize| snap.ranges[i].first().and_then(|e| e.value.as_u64());
    consistent(first(0), first(1)).map_err(|e| format!("snapshot read: {e}"))?;

    // A transaction and an explicit version, each reading j before the race and k after it.
    db.atomic_write(reset()).await.step("reset")?;
    let mut txn = da.begin().await.step("begin")?;
    let v = txn.read_version();
    let tj = txn
        .get(b"j")
        .await
        .step("txn get j")?
        .and_then(|v| v.as_u64());
    let ej = da
        .get_many(std::slice::from_ref(&j), ReadAt::Version(v))
        .await
        .step("get j at version")?[0]
        .as_ref()
        .and_then(|e| e.value.as_u64());
    db.atomic_write(race()).await.step("race")?;
    let tk = txn
        .get(b"k")
        .await
        .step("txn get k")?
        .and_then(|v| v.as_u64());
    consistent(tj, tk).map_err(|e| format!("read-only transaction: {e}"))?;
    let ek = da
        .get_many(std::slice::from_ref(&k), ReadAt::Version(v))
        .await
        .step("get k at version")?[0]
        .as_ref()
        .and_then(|e| e.value.as_u64());
    consistent(ej, ek).map_err(|e| format!("reads at version {v}: {e}"))?;
    Ok(())
}

/// Two writers collecting garbage at once: one (holding an old reader) resolves a lower
/// horizon, the other commits a higher one first. The stored horizon never moves back, and
/// the old reader fails clearly instead of reading collected history.
async fn collections_never_move_the_horizon_back(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let config = EngineConfig {
        follow_interval_ms: 20,
        transaction_window_ms: 100,
        background_tasks: false,
        ..Harness::config()
    };
    let a = Engine::new(gate.wrap(h.shared_backend()), config.clone());
    let b = Engine::new(h.shared_backend(), config);
    let opts = strata_engine::DatabaseOptions {
        history_retention_ms: 100,
        ..Default::default()
    };
    let da = a.create_database("gc", Some(opts)).await.step("create")?;
    let set = |v: u64| AtomicWrite::new().set(b"k".to_vec(), Value::u64(v));
    da.atomic_write(set(1)).await.step("w1")?;
    da.atomic_write(set(2)).await.step("w2")?;
    // A's reader keeps A's own collection at version 2 (it still removes k's first version).
    let mut old_txn = da.begin().await.step("begin")?;
    let old = old_txn.read_version();
    for i in 3..6 {
        da.atomic_write(set(i)).await.step("w")?;
    }
    // Let the commits age past the retention window.
    tokio::time::sleep(Duration::from_millis(250)).await;
    da.atomic_write(set(9)).await.step("w")?;
    let db = b.database("gc").await.step("open b")?;
    u64_at(&db, b"k").await?;

    let mut held = gate.hold(Point::ApplyBefore, |_| true);
    let collector = {
        let da = da.clone();
        tokio::spawn(async move { da.collect_garbage().await })
    };
    held.reached().await;
    db.collect_garbage().await.step("b collects")?;
    let higher = db.oldest_readable_version();
    ensure!(
        higher > old,
        "B's collection passes A's reader ({higher} vs {old})"
    );
    held.release();
    collector
        .await
        .map_err(|e| e.to_string())?
        .step("a collects")?;
    let store = h
        .shared_backend()
        .open("gc", false)
        .await
        .step("open store")?;
    let stored = store
        .get(strata_engine::layout::META_HORIZON)
        .await
        .step("read horizon")?
        .and_then(|b| strata_engine::layout::be_u64(&b))
        .unwrap_or(0);
    ensure!(
        stored >= higher,
        "the stored horizon moved back from {higher} to {stored}"
    );
    let r = old_txn.get(b"k").await;
    ensure!(
        matches!(r, Err(EngineError::TransactionTooOld { .. })),
        "a reader below the horizon fails clearly: {r:?}"
    );
    Ok(())
}

/// Two writers opening a new database at once agree on its id and options.
async fn concurrent_creation_agrees_on_one_database(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let a = Engine::new(gate.wrap(h.shared_backend()), Harness::config());
    let b = Engine::new(
        h.shared_backend(),
        EngineConfig {
            default_database: strata_engine::DatabaseOptions {
                history_retention_ms: 5678,
                ..Default::default()
            },
            ..Harness::config()
        },
    );
    let mut held = gate.hold(Point::ApplyBefore, |_| true);
    let opening = tokio::spawn(async move {
        let opts = strata_engine::DatabaseOptions {
            history_retention_ms: 1234,
            ..Default::default()
        };
        let d = a.create_database("born", Some(opts)).await;
        (a, d)
    });
    held.reached().await;
    let db = b.open_or_create("born").await.step("b creates")?;
    held.release();
    let (_a, da) = opening.await.map_err(|e| e.to_string())?;
    let da = da.step("a opens")?;
    ensure_eq!(da.id(), db.id());
    ensure_eq!(
        da.options().history_retention_ms,
        db.options().history_retention_ms
    );
    let c = Engine::new(h.shared_backend(), Harness::config());
    let dc = c.database("born").await.step("c opens")?;
    ensure_eq!(dc.id(), db.id());
    Ok(())
}

/// One writer's expiry sweep, resolved against a key another writer then deletes and sets
/// again with the same deadline, must not remove the new expiry entry: the key still goes.
async fn sweeps_never_undo_another_writers_expiry(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let config = EngineConfig {
        background_tasks: false,
        follow_interval_ms: 60_000,
        ..Harness::config()
    };
    let a = Engine::new(gate.wrap(h.shared_backend()), config.clone());
    let b = Engine::new(h.shared_backend(), config);
    let da = a.open_or_create("exp").await.step("open a")?;
    let db = b.open_or_create("exp").await.step("open b")?;
    // A deadline long past: the key is invisible at once and due for the sweep.
    let deadline = 5;
    let set = || {
        AtomicWrite::new().mutate(strata_engine::Mutation {
            key: b"k".to_vec(),
            kind: strata_engine::MutationKind::Set {
                value: Value::u64(1),
                expires_at: Some(deadline),
            },
        })
    };
    db.atomic_write(set()).await.step("set")?;

    let mut scanned = gate.hold(Point::ReadAfter, |key| key.first() == Some(&b'x'));
    let sweep = {
        let da = da.clone();
        tokio::spawn(async move { da.sweep_expired().await })
    };
    scanned.reached().await;
    db.atomic_write(AtomicWrite::new().delete(b"k".to_vec()))
        .await
        .step("delete")?;
    let mut applying = gate.hold(Point::ApplyBefore, |_| true);
    scanned.release();
    applying.reached().await;
    db.atomic_write(set()).await.step("set again")?;
    applying.release();
    sweep.await.map_err(|e| e.to_string())?.step("a sweeps")?;
    db.sweep_expired().await.step("b sweeps")?;
    da.sweep_expired().await.step("a sweeps again")?;
    let store = h
        .shared_backend()
        .open("exp", false)
        .await
        .step("open store")?;
    let left = store
        .get(&strata_engine::layout::latest(b"k"))
        .await
        .step("read")?;
    ensure!(
        left.is_none(),
        "the expired key stayed in storage: its expiry entry was removed"
    );
    Ok(())
}

/// An engine over `log`: a store that orders appends, so that several of its groups are in
/// flight at once (as on a cluster's leader).
fn pipelined_engine(h: &Harness, log: &OrderedLog) -> Engine {
    Engine::new(
        log.wrap(h.shared_backend()),
        EngineConfig {
            follow_interval_ms: 20,
            max_groups_in_flight: 4,
            ..Harness::config()
        },
    )
}

/// Long enough for anything here to happen on a loaded machine; reaching it is a hang.
const PATIENCE: Duration = Duration::from_secs(20);

/// Writer A has two groups in its log, the second resolved over the first (a counter at 1,
/// then 2). Writer B's commit lands first, taking the very version A's first group wanted.
/// A's first group then fails its condition — and so must the second, although the version
/// it expects is now the store's: it names A's first group, not B's. Both are resolved
/// again, and the counter counts all three increments.
async fn a_group_in_flight_never_applies_after_one_that_lost_the_race(h: &Harness) -> CaseResult {
    let log = OrderedLog::new();
    let a = pipelined_engine(h, &log);
    let b = engine(h);
    let da = a.open_or_create("race").await.step("open a")?;
    da.atomic_write(AtomicWrite::new().set(b"n".to_vec(), Value::u64(0)))
        .await
        .step("a sets n")?;
    let db = b.open_or_create("race").await.step("open b")?;
    ensure_eq!(
        db.get(b"n")
            .await
            .step("b reads n")?
            .and_then(|e| e.value.as_u64()),
        Some(0)
    );
    let incr = |tag: &str| {
        AtomicWrite::new()
            .mutate(Mutation::sum(b"n".to_vec(), 1))
            .set(tag.as_bytes().to_vec(), Value::u64(1))
    };
    let before = log.queued();
    log.pause();
    let queued = {
        let d = da.clone();
        let first = tokio::spawn(async move { d.atomic_write(incr("a1")).await });
        log.wait_queued(before + 1, PATIENCE)
            .await
            .map_err(|e| format!("a's first group: {e}"))?;
        let d = da.clone();
        let second = tokio::spawn(async move { d.atomic_write(incr("a2")).await });
        log.wait_queued(before + 2, PATIENCE).await.map_err(|e| {
            format!("a's second group never reached the log while the first was in it: {e}")
        })?;
        (first, second)
    };
    let vb = vs(db.atomic_write(incr("b1")).await.step("b increments")?)?;
    log.resume();
    let va1 = vs(queued.0.await.map_err(|e| e.to_string())?.step("a1")?)?;
    let va2 = vs(queued.1.await.map_err(|e| e.to_string())?.step("a2")?)?;
    ensure!(
        vb < va1 && va1 < va2,
        "versionstamps b {vb}, a1 {va1}, a2 {va2}"
    );
    for d in [&da, &db] {
        let n = d
            .get(b"n")
            .await
            .step("read n")?
            .and_then(|e| e.value.as_u64());
        ensure_eq!(n, Some(3));
        for tag in ["a1", "a2", "b1"] {
            ensure!(
                d.get(tag.as_bytes()).await.step("read tag")?.is_some(),
                "{tag} is missing"
            );
        }
    }
    Ok(())
}

/// Many clients of a writer whose log holds several groups at once, and another writer
/// beside it: every increment counts once, and each client's commits keep their order.
async fn groups_in_flight_lose_nothing_under_concurrent_writers(h: &Harness) -> CaseResult {
    let log = OrderedLog::new();
    let a = pipelined_engine(h, &log);
    let b = engine(h);
    let dbs = [
        a.open_or_create("busy").await.step("open a")?,
        b.open_or_create("busy").await.step("open b")?,
    ];
    // A's first commit is held in the log until the others have sent a group after it, so
    // that the log holds two groups at once whatever the machine's speed.
    let before = log.queued();
    log.pause();
    let (go, ready) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (w, d) in dbs.iter().enumerate() {
        let clients = if w == 0 { 16 } else { 2 };
        for c in 0..clients {
            let d = d.clone();
            let mut ready = ready.clone();
            let waits = w == 0 && c > 0;
            tasks.push(tokio::spawn(async move {
                if waits {
                    let _ = ready.wait_for(|go| *go).await;
                }
                let mut last = Versionstamp::ZERO;
                for i in 0..25u64 {
                    let write = AtomicWrite::new()
                        .mutate(Mutation::sum(format!("n/{}", i % 3).into_bytes(), 1))
                        .set(format!("c/{w}/{c}").into_bytes(), Value::u64(i));
                    let v = match d.atomic_write(write).await? {
                        CommitOutcome::Committed(v) => v,
                        other => return Err(EngineError::InvalidRequest(format!("{other:?}"))),
                    };
                    if v <= last {
                        return Err(EngineError::InvalidRequest(format!(
                            "versionstamp {v} after {last}"
                        )));
                    }
                    last = v;
                }
                Ok::<(), EngineError>(())
            }));
        }
    }
    log.wait_queued(before + 1, PATIENCE)
        .await
        .map_err(|e| format!("a's first group: {e}"))?;
    go.send_replace(true);
    log.wait_queued(before + 2, PATIENCE).await.map_err(|e| {
        format!("a's next group never reached the log while the first was in it: {e}")
    })?;
    log.resume();
    for t in tasks {
        t.await.map_err(|e| e.to_string())?.step("client")?;
    }
    let keys: Vec<Vec<u8>> = (0..3).map(|i| format!("n/{i}").into_bytes()).collect();
    for d in &dbs {
        let got = d.get_many(&keys, ReadAt::Latest).await.step("read")?;
        let total: u64 = got.iter().flatten().filter_map(|e| e.value.as_u64()).sum();
        ensure_eq!(total, (16 + 2) * 25);
    }
    ensure!(
        log.most_in_flight() >= 2,
        "the log never held two groups at once (most: {})",
        log.most_in_flight()
    );
    Ok(())
}

/// The answers to two groups' batches in flight are lost after they applied: each commit is
/// settled as applied (from the version record and its write set), answered once as
/// committed, and counted once.
async fn a_lost_answer_in_flight_is_settled_not_applied_twice(h: &Harness) -> CaseResult {
    let log = OrderedLog::new();
    let a = pipelined_engine(h, &log);
    let da = a.open_or_create("lost").await.step("open")?;
    da.atomic_write(AtomicWrite::new().set(b"n".to_vec(), Value::u64(0)))
        .await
        .step("set n")?;
    let before = log.queued();
    let queued_before = {
        log.pause();
        let d = da.clone();
        let first = tokio::spawn(async move {
            d.atomic_write(AtomicWrite::new().mutate(Mutation::sum(b"n".to_vec(), 1)))
                .await
        });
        log.wait_queued(before + 1, PATIENCE)
            .await
            .map_err(|e| format!("first: {e}"))?;
        let d = da.clone();
        let second = tokio::spawn(async move {
            d.atomic_write(AtomicWrite::new().mutate(Mutation::sum(b"n".to_vec(), 10)))
                .await
        });
        log.wait_queued(before + 2, PATIENCE)
            .await
            .map_err(|e| format!("second: {e}"))?;
        (first, second)
    };
    log.lose_answers(2);
    log.resume();
    let v1 = vs(queued_before
        .0
        .await
        .map_err(|e| e.to_string())?
        .step("first")?)?;
    let v2 = vs(queued_before
        .1
        .await
        .map_err(|e| e.to_string())?
        .step("second")?)?;
    ensure!(v1 < v2, "versionstamps {v1} then {v2}");
    let n = da
        .get(b"n")
        .await
        .step("read n")?
        .and_then(|e| e.value.as_u64());
    ensure_eq!(n, Some(11));
    Ok(())
}

/// A commit is in the log and two more wait behind it. When it is answered, the two wait on
/// for one more commit (the client just answered, back with its next one), and the three go
/// as one batch. With a short limit and nobody coming back, the waiting commits go anyway
/// once it has passed.
async fn a_group_lingers_for_the_commits_just_answered(h: &Harness) -> CaseResult {
    let log = OrderedLog::new();
    let lingering = |limit| {
        Engine::new(
            log.wrap(h.shared_backend()),
            EngineConfig {
                follow_interval_ms: 20,
                // No sweep or collection may join a group here.
                background_tasks: false,
                group_linger: limit,
                ..Harness::config()
            },
        )
    };
    let set = |k: &str| AtomicWrite::new().set(k.as_bytes().to_vec(), Value::u64(1));
    for (limit, comes_back) in [(PATIENCE, true), (Duration::from_millis(50), false)] {
        let engine = lingering(limit);
        let name = format!("linger-{}", limit.as_millis());
        let d = engine.open_or_create(&name).await.step("open")?;
        d.atomic_write(set("w")).await.step("first write")?;
        let before = log.queued();
        log.pause();
        let first = {
            let d = d.clone();
            tokio::spawn(async move { d.atomic_write(set("a")).await })
        };
        log.wait_queued(before + 1, PATIENCE)
            .await
            .map_err(|e| format!("a never reached the log: {e}"))?;
        let behind: Vec<_> = ["b", "c"]
            .into_iter()
            .map(|k| {
                let d = d.clone();
                tokio::spawn(async move { d.atomic_write(set(k)).await })
            })
            .collect();
        ensure!(
            eventually(PATIENCE, || async { d.pipeline_stats().waiting == 2 }).await,
            "b and c never waited behind a (waiting: {})",
            d.pipeline_stats().waiting
        );
        log.resume();
        first.await.map_err(|e| e.to_string())?.step("a")?;
        if comes_back {
            d.atomic_write(set("d")).await.step("d")?;
        }
        for t in behind {
            t.await.map_err(|e| e.to_string())?.step("b or c")?;
        }
        ensure_eq!(log.queued(), before + 2);
        let stats = d.pipeline_stats();
        ensure!(
            stats.linger > Duration::ZERO && stats.waiting == 0,
            "lingered {:?}, {} still waiting",
            stats.linger,
            stats.waiting
        );
        if !comes_back {
            // (Held from the loop's first look after a's answer; the limit runs from the
            // answer itself.)
            ensure!(
                stats.linger >= limit / 2,
                "b and c went after {:?}, long before the limit of {limit:?}",
                stats.linger
            );
        }
        for k in ["a", "b", "c", "w"] {
            ensure!(
                d.get(k.as_bytes()).await.step("read")?.is_some(),
                "{k} is missing"
            );
        }
        engine.close().await;
    }
    Ok(())
}
