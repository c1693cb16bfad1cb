//! Reads at older versions (time travel) inside the retention window, and the garbage
//! collection of versions outside it.

use std::time::Duration;

use strata_engine::{
    AtomicWrite, DatabaseOptions, EngineError, ReadAt, ReadRange, Transaction, Value, ValueRef,
    Visitor,
};

use crate::gate::{Gate, Point};
use crate::suites::kv::committed;
use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Pace, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "mvcc",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            point_reads_at_old_versions,
            scans_at_old_versions,
            future_versions_are_refused,
            versions_outside_the_window_are_collected,
            open_transactions_hold_their_version,
            latest_reads_stay_consistent_under_deletes,
            transaction_reads_stay_consistent_under_deletes,
            reads_never_go_back_in_time,
            restores_never_change_the_past,
            malformed_restored_versions_are_refused,
            visiting_scans_see_what_copied_scans_see,
            visiting_scans_restart_when_a_delete_lands_during_them,
            visiting_scans_report_corrupt_records,
            frozen_read_views_miss_later_writes,
        ],
    }
}

fn val(e: &Option<strata_engine::Entry>) -> Option<u64> {
    e.as_ref().and_then(|e| e.value.as_u64())
}

async fn point_reads_at_old_versions(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let v1 = committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
            .await
            .step("w1")?,
    )?
    .version();
    let v2 = committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(2)))
            .await
            .step("w2")?,
    )?
    .version();
    let v3 = committed(
        db.atomic_write(AtomicWrite::new().delete(b"k".to_vec()))
            .await
            .step("w3")?,
    )?
    .version();
    let v4 = committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(4)))
            .await
            .step("w4")?,
    )?
    .version();
    let keys = [b"k".to_vec()];
    let at = |v| db.get_many(&keys, ReadAt::Version(v));
    ensure_eq!(val(&at(v1 - 1).await.step("read")?[0]), None);
    ensure_eq!(val(&at(v1).await.step("read")?[0]), Some(1));
    ensure_eq!(val(&at(v2).await.step("read")?[0]), Some(2));
    ensure_eq!(val(&at(v3).await.step("read")?[0]), None);
    ensure_eq!(val(&at(v4).await.step("read")?[0]), Some(4));
    let e = at(v2).await.step("read")?[0].clone().ok_or("missing")?;
    ensure_eq!(e.versionstamp.version(), v2);
    Ok(())
}

async fn scans_at_old_versions(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let w = AtomicWrite::new()
        .set(b"a".to_vec(), Value::u64(1))
        .set(b"b".to_vec(), Value::u64(1))
        .set(b"c".to_vec(), Value::u64(1));
    let v1 = committed(db.atomic_write(w).await.step("w1")?)?.version();
    let w = AtomicWrite::new()
        .delete(b"b".to_vec())
        .set(b"c".to_vec(), Value::u64(2))
        .set(b"d".to_vec(), Value::u64(2));
    let v2 = committed(db.atomic_write(w).await.step("w2")?)?.version();
    let scan = |v: u64, reverse: bool, limit: usize| {
        let mut r = ReadRange::new(vec![], vec![], limit);
        r.reverse = reverse;
        let db = db.clone();
        async move {
            db.snapshot_read(&[r], ReadAt::Version(v)).await.map(|s| {
                s.ranges[0]
                    .iter()
                    .map(|e| (e.key.clone(), e.value.as_u64().unwrap_or(0)))
                    .collect::<Vec<_>>()
            })
        }
    };
    let p = |k: &str, v: u64| (k.as_bytes().to_vec(), v);
    ensure_eq!(
        scan(v1, false, 10).await.step("scan v1")?,
        vec![p("a", 1), p("b", 1), p("c", 1)]
    );
    ensure_eq!(
        scan(v1, true, 10).await.step("scan v1 rev")?,
        vec![p("c", 1), p("b", 1), p("a", 1)]
    );
    ensure_eq!(
        scan(v1, false, 2).await.step("scan v1 lim")?,
        vec![p("a", 1), p("b", 1)]
    );
    ensure_eq!(
        scan(v2, false, 10).await.step("scan v2")?,
        vec![p("a", 1), p("c", 2), p("d", 2)]
    );
    ensure_eq!(scan(v1 - 1, false, 10).await.step("scan v0")?, vec![]);
    let latest = db
        .snapshot_read(&[ReadRange::new(vec![], vec![], 10)], ReadAt::Latest)
        .await
        .step("latest")?;
    ensure_eq!(latest.ranges[0].len(), 3);
    Ok(())
}

async fn future_versions_are_refused(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("w")?;
    let r = db
        .get_many(&[b"k".to_vec()], ReadAt::Version(db.version() + 5))
        .await;
    ensure!(
        matches!(r, Err(EngineError::VersionInFuture { .. })),
        "got {r:?}"
    );
    Ok(())
}

async fn versions_outside_the_window_are_collected(h: &Harness) -> CaseResult {
    // With several writers, history is kept at least as long as a transaction may live.
    let engine = h.engine_with(strata_engine::EngineConfig {
        transaction_window_ms: 100,
        ..Harness::config()
    });
    let opts = DatabaseOptions {
        history_retention_ms: 1500,
        ..DatabaseOptions::default()
    };
    let db = engine
        .create_database("short", Some(opts))
        .await
        .step("create")?;
    let v1 = committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
            .await
            .step("w1")?,
    )?
    .version();
    for i in 2..5 {
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(i)))
            .await
            .step("w")?;
    }
    ensure_eq!(
        val(&db
            .get_many(&[b"k".to_vec()], ReadAt::Version(v1))
            .await
            .step("in window")?[0]),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // A commit after the window so that the horizon can move past every old version.
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(99)))
        .await
        .step("w")?;
    db.collect_garbage().await.step("gc")?;
    ensure!(
        db.oldest_readable_version() > v1,
        "horizon did not advance: {}",
        db.oldest_readable_version()
    );
    let r = db.get_many(&[b"k".to_vec()], ReadAt::Version(v1)).await;
    ensure!(
        matches!(r, Err(EngineError::VersionTooOld { .. })),
        "got {r:?}"
    );
    let h_ = db.oldest_readable_version();
    ensure_eq!(
        val(&db
            .get_many(&[b"k".to_vec()], ReadAt::Version(h_))
            .await
            .step("at horizon")?[0]),
        Some(4)
    );
    ensure_eq!(u64_at(&db, b"k").await?, Some(99));
    Ok(())
}

async fn open_transactions_hold_their_version(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let opts = DatabaseOptions {
        history_retention_ms: 50,
        ..DatabaseOptions::default()
    };
    let db = engine
        .create_database("short", Some(opts))
        .await
        .step("create")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("w1")?;
    let mut t = db.begin().await.step("begin")?;
    for i in 2..10 {
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(i)))
            .await
            .step("w")?;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    db.atomic_write(AtomicWrite::new().set(b"z".to_vec(), Value::u64(0)))
        .await
        .step("w")?;
    db.collect_garbage().await.step("gc")?;
    ensure!(
        db.oldest_readable_version() <= t.read_version(),
        "GC passed an open transaction"
    );
    ensure_eq!(
        t.get(b"k").await.step("txn get")?.and_then(|v| v.as_u64()),
        Some(1)
    );
    t.rollback();
    Ok(())
}

async fn latest_reads_stay_consistent_under_deletes(h: &Harness) -> CaseResult {
    // Two keys are always written together (set both, or delete both); a reader must never
    // see one without the other.
    let rounds: u64 = if h.kind == crate::BackendKind::Dynamodb {
        40
    } else {
        200
    };
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let pace = Pace::default();
    let writer = {
        let db = db.clone();
        let mut paced = pace.writer();
        tokio::spawn(async move {
            for i in 0..rounds {
                paced.every(i, 10).await;
                let w = if i % 2 == 0 {
                    AtomicWrite::new()
                        .set(b"p/a".to_vec(), Value::u64(i))
                        .set(b"p/b".to_vec(), Value::u64(i))
                } else {
                    AtomicWrite::new()
                        .delete(b"p/a".to_vec())
                        .delete(b"p/b".to_vec())
                };
                db.atomic_write(w).await?;
            }
            Ok::<_, EngineError>(())
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let got = db
            .get_many(&[b"p/a".to_vec(), b"p/b".to_vec()], ReadAt::Latest)
            .await
            .step("get_many")?;
        ensure_eq!(val(&got[0]), val(&got[1]));
        let s = db
            .snapshot_read(&[ReadRange::prefix(b"p/", 10)], ReadAt::Latest)
            .await
            .step("scan")?;
        ensure!(
            s.ranges[0].len() != 1,
            "scan saw half a commit: {:?}",
            s.ranges[0]
        );
        reads += 1;
        pace.pass();
    }
    writer.await.map_err(|e| e.to_string())?.step("writer")?;
    ensure!(reads > 0, "no reads overlapped the writes");
    Ok(())
}

async fn transaction_reads_stay_consistent_under_deletes(h: &Harness) -> CaseResult {
    // As above, through transactions: each one reads at its own snapshot while pairs of
    // keys are created and deleted together, some of them before the snapshot.
    let rounds: u64 = if h.kind == crate::BackendKind::Dynamodb {
        40
    } else {
        200
    };
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().delete(b"seed".to_vec()))
        .await
        .step("seed")?;
    let pace = Pace::default();
    let writer = {
        let db = db.clone();
        let mut paced = pace.writer();
        tokio::spawn(async move {
            for i in 0..rounds * 3 / 2 {
                paced.every(i, 10).await;
                let k = i % 5;
                let (a, b) = (
                    format!("p/{k}/a").into_bytes(),
                    format!("p/{k}/b").into_bytes(),
                );
                let w = if (i / 5) % 2 == 0 {
                    AtomicWrite::new()
                        .set(a, Value::u64(i))
                        .set(b, Value::u64(i))
                } else {
                    AtomicWrite::new().delete(a).delete(b)
                };
                db.atomic_write(w).await?;
            }
            Ok::<_, EngineError>(())
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let mut t = db.begin().await.step("begin")?;
        let rows = t.scan(b"p/", b"p0", false, 100).await.step("scan")?;
        for k in 0..5 {
            let a = format!("p/{k}/a").into_bytes();
            let b = format!("p/{k}/b").into_bytes();
            let in_scan = |key: &Vec<u8>| {
                rows.iter()
                    .find(|(rk, _)| rk == key)
                    .map(|(_, v)| v.as_u64())
            };
            ensure_eq!(in_scan(&a), in_scan(&b));
            let ga = t.get(&a).await.step("get")?.and_then(|v| v.as_u64());
            let gb = t.get(&b).await.step("get")?.and_then(|v| v.as_u64());
            ensure_eq!(ga, gb);
            ensure_eq!(ga, in_scan(&a).flatten());
        }
        t.rollback();
        reads += 1;
        pace.pass();
    }
    writer.await.map_err(|e| e.to_string())?.step("writer")?;
    ensure!(reads > 0, "no reads overlapped the writes");
    Ok(())
}

/// A commit that has reached the store but is not yet published must not leak: once a read
/// returned some version, every later read — point, snapshot, transaction, explicit version —
/// sees at least that version.
async fn reads_never_go_back_in_time(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let backend = gate.wrap(h.backend());
    if backend.capabilities().multi_process {
        // A shared store's reader learns commits through its own pipeline, which this case
        // holds; multi_writer/snapshots_never_mix_states_across_writers covers it there.
        return Err(
            "SKIP: single-process stores (a shared store is covered by multi_writer)".into(),
        );
    }
    let engine = strata_engine::Engine::new(backend, Harness::config());
    let db = engine.open_or_create("default").await.step("open")?;
    committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
            .await
            .step("w1")?,
    )?;
    let mut held = gate.hold(Point::ApplyAfter, |_| true);
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(2)))
                .await
        })
    };
    held.reached().await;
    // k = 2 is in the store; its commit is not acknowledged yet.
    let seen = db.get(b"k").await.step("get")?.ok_or("k missing")?;
    let v = seen.versionstamp.version();
    let snap = db
        .snapshot_read(
            &[ReadRange::new(b"k".to_vec(), b"l".to_vec(), 10)],
            ReadAt::Latest,
        )
        .await
        .step("snapshot read")?;
    ensure!(
        snap.version >= v,
        "a snapshot read at version {} after a point read returned version {v}",
        snap.version
    );
    let newest = snap.ranges[0]
        .first()
        .ok_or("k missing from the snapshot")?;
    ensure!(
        newest.versionstamp >= seen.versionstamp,
        "the snapshot went back in time"
    );
    let mut txn = db.begin().await.step("begin")?;
    ensure!(
        txn.read_version() >= v,
        "a transaction began before version {v}"
    );
    let in_txn = txn.get(b"k").await.step("txn get")?;
    ensure!(in_txn.is_some(), "k missing in the transaction");
    txn.rollback();
    let at = db
        .get_many(&[b"k".to_vec()], ReadAt::Version(v))
        .await
        .step("read at the version just returned")?;
    ensure_eq!(val(&at[0]), seen.value.as_u64());
    held.release();
    let v2 = committed(writer.await.map_err(|e| e.to_string())?.step("w2")?)?;
    ensure_eq!(u64_at(&db, b"k").await?, Some(2));
    ensure!(
        v2.version() > v,
        "the held commit landed after what was read"
    );
    Ok(())
}

/// A restore into a database with history: restored keys keep their versionstamps, but every
/// read at a version before the restore commit sees exactly what it saw before.
async fn restores_never_change_the_past(h: &Harness) -> CaseResult {
    use strata_engine::{Entry, Versionstamp};
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let set = |k: &[u8], v: u64| AtomicWrite::new().set(k.to_vec(), Value::u64(v));
    committed(db.atomic_write(set(b"a", 1)).await.step("w")?)?;
    committed(db.atomic_write(set(b"b", 2)).await.step("w")?)?;
    committed(
        db.atomic_write(AtomicWrite::new().delete(b"a".to_vec()))
            .await
            .step("w")?,
    )?;
    let last = db.version();
    let all = || [ReadRange::new(vec![], vec![], 100)];
    let mut before = Vec::new();
    for v in 1..=last {
        before.push(
            db.snapshot_read(&all(), ReadAt::Version(v))
                .await
                .step("read")?,
        );
    }
    let entry = |k: &[u8], value: u64, version: u64| Entry {
        key: k.to_vec(),
        value: Value::u64(value),
        versionstamp: Versionstamp::from_version(version),
        expires_at: None,
    };
    let restored = vec![entry(b"a", 10, 1), entry(b"b", 20, 1), entry(b"c", 30, 2)];
    let r = db
        .restore(restored.clone(), vec![], 0)
        .await
        .step("restore")?;
    ensure!(
        r.version() > last,
        "the restore commit is newer than the history"
    );
    for (v, seen) in (1..=last).zip(&before) {
        let now = db
            .snapshot_read(&all(), ReadAt::Version(v))
            .await
            .step("read")?;
        ensure_eq!(&now.ranges, &seen.ranges);
    }
    let latest = db
        .snapshot_read(&all(), ReadAt::Latest)
        .await
        .step("read")?;
    ensure_eq!(&latest.ranges[0], &restored);
    Ok(())
}

/// Versions no source can have handed out (zero, or within 2^32 of the top, as a negative signed
/// version becomes) are refused with nothing written, and the database keeps committing.
async fn malformed_restored_versions_are_refused(h: &Harness) -> CaseResult {
    use strata_engine::{Entry, Versionstamp};
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let entry = |version: u64| Entry {
        key: b"k".to_vec(),
        value: Value::u64(1),
        versionstamp: Versionstamp::from_version(version),
        expires_at: None,
    };
    let before = db.version();
    for (entries, newer_than) in [
        (vec![entry(u64::MAX)], 0),
        (vec![entry(0)], 0),
        (vec![entry(strata_engine::MAX_RESTORED_VERSION + 1)], 0),
        (vec![entry(5)], u64::MAX),
    ] {
        let r = db.restore(entries, vec![], newer_than).await;
        ensure!(
            matches!(r, Err(EngineError::InvalidRequest(ref m)) if m.contains("out of range")),
            "{r:?}"
        );
    }
    ensure_eq!(db.version(), before);
    ensure!(db.get(b"k").await.step("get")?.is_none(), "nothing written");
    let ok = db
        .restore(vec![entry(strata_engine::MAX_RESTORED_VERSION)], vec![], 0)
        .await
        .step("restore at the largest version")?;
    ensure!(
        ok.version() > strata_engine::MAX_RESTORED_VERSION,
        "restore commit {ok}"
    );
    let next = committed(
        db.atomic_write(AtomicWrite::new().set(b"after".to_vec(), Value::u64(1)))
            .await
            .step("commit after")?,
    )?;
    ensure!(next > ok, "commits go on after the restore");
    Ok(())
}

/// Collects what a visiting scan shows; optionally stops after every `stop_every` entries.
#[derive(Default)]
struct Collect {
    seen: Vec<(Vec<u8>, Option<u64>)>,
    /// Entries collected before the current call: a restart forgets only the call's own.
    mark: usize,
    stop_every: usize,
    restarts: usize,
}

impl Visitor for Collect {
    fn visit(&mut self, key: &[u8], value: ValueRef<'_>) -> bool {
        let v = Value {
            encoding: value.encoding,
            data: value.data.to_vec(),
        };
        self.seen.push((key.to_vec(), v.as_u64()));
        self.stop_every == 0 || !(self.seen.len() - self.mark).is_multiple_of(self.stop_every)
    }

    fn restart(&mut self) {
        self.seen.truncate(self.mark);
        self.restarts += 1;
    }
}

/// Every entry of `[start, end)` through `scan_each`, resuming wherever the visitor stopped.
async fn visit_all(
    t: &mut Transaction,
    start: &[u8],
    end: &[u8],
    stop_every: usize,
) -> Result<Collect, EngineError> {
    let mut c = Collect {
        stop_every,
        ..Collect::default()
    };
    let mut from = start.to_vec();
    loop {
        c.mark = c.seen.len();
        match t.scan_each(&from, end, &mut c).await? {
            Some(resume) => from = resume,
            None => return Ok(c),
        }
    }
}

async fn copied(
    t: &mut Transaction,
    start: &[u8],
    end: &[u8],
) -> Result<Vec<(Vec<u8>, Option<u64>)>, EngineError> {
    Ok(t.scan(start, end, false, 10_000)
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.as_u64()))
        .collect())
}

fn skey(i: u64) -> Vec<u8> {
    format!("s/{i:03}").into_bytes()
}

/// `Transaction::scan_each` (entries lent by the store) shows exactly what `scan` returns:
/// with keys rewritten after the snapshot (looked up one by one, then too many to look up),
/// keys deleted after it (a precise read), expired keys, its own writes, and a visitor that
/// stops every few entries and resumes.
async fn visiting_scans_see_what_copied_scans_see(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut w = AtomicWrite::new();
    for i in 0..100 {
        w = w.set(skey(i), Value::u64(i));
    }
    w = w.mutate(strata_engine::Mutation {
        key: skey(50),
        kind: strata_engine::MutationKind::Set {
            value: Value::u64(50),
            expires_at: Some(5),
        },
    });
    db.atomic_write(w).await.step("load")?;
    db.atomic_write(AtomicWrite::new().set(b"s0".to_vec(), Value::u64(0)))
        .await
        .step("past the range")?;
    let expected: Vec<(Vec<u8>, Option<u64>)> = (0..100)
        .filter(|&i| i != 50)
        .map(|i| (skey(i), Some(i)))
        .collect();
    let mut t = db.begin().await.step("begin")?;
    let check = async |t: &mut Transaction, what: &str| -> CaseResult {
        for stop_every in [0, 1, 7, 98, 99] {
            // (A restart may happen: the expiry sweeper deletes the expired key meanwhile.)
            let c = visit_all(t, b"s/", b"s0", stop_every).await.step(what)?;
            ensure_eq!(c.seen, expected);
        }
        ensure_eq!(copied(t, b"s/", b"s0").await.step(what)?, expected);
        let tail = visit_all(t, &skey(95), b"", 0).await.step(what)?;
        ensure_eq!(tail.seen.len(), 6);
        Ok(())
    };
    check(&mut t, "unchanged").await?;

    let mut w = AtomicWrite::new().set(skey(200), Value::u64(200));
    for i in 1..4 {
        w = w.set(skey(i), Value::u64(1000 + i));
    }
    db.atomic_write(w).await.step("rewrite a few")?;
    check(&mut t, "a few keys newer").await?;

    let mut w = AtomicWrite::new();
    for i in 10..40 {
        w = w.set(skey(i), Value::u64(1000 + i));
    }
    db.atomic_write(w).await.step("rewrite many")?;
    check(&mut t, "many keys newer").await?;

    let mut w = AtomicWrite::new();
    for i in 60..70 {
        w = w.delete(skey(i));
    }
    db.atomic_write(w).await.step("delete")?;
    check(&mut t, "keys deleted").await?;

    t.set(&skey(5), Value::u64(5000)).step("own write")?;
    t.delete(&skey(70)).step("own delete")?;
    t.set(b"s/0505", Value::u64(505)).step("own insert")?;
    let own = copied(&mut t, b"s/", b"s0").await.step("own scan")?;
    ensure_eq!(own.len(), expected.len());
    for stop_every in [0, 3] {
        let c = visit_all(&mut t, b"s/", b"s0", stop_every)
            .await
            .step("own visit")?;
        ensure_eq!(c.seen, own);
    }
    Ok(())
}

/// A delete that commits while a visiting scan reads could hide a key the snapshot still
/// holds: the scan tells its visitor to restart and reads the range again precisely.
async fn visiting_scans_restart_when_a_delete_lands_during_them(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let engine = strata_engine::Engine::new(gate.wrap(h.backend()), Harness::config());
    let db = engine.open_or_create("default").await.step("open")?;
    let mut w = AtomicWrite::new();
    for i in 0..10 {
        w = w.set(skey(i), Value::u64(i));
    }
    db.atomic_write(w).await.step("load")?;
    let mut t = db.begin().await.step("begin")?;
    let start = strata_engine::layout::latest(b"s/");
    let mut held = gate.hold(Point::ReadAfter, move |key| key == start);
    let scan = tokio::spawn(async move {
        let c = visit_all(&mut t, b"s/", b"s0", 0).await;
        (t, c)
    });
    held.reached().await;
    db.atomic_write(AtomicWrite::new().delete(skey(4)))
        .await
        .step("delete")?;
    held.release();
    let (mut t, c) = scan.await.map_err(|e| e.to_string())?;
    let c = c.step("visit")?;
    ensure!(
        c.restarts >= 1,
        "the scan did not restart after a delete landed"
    );
    let expected: Vec<_> = (0..10).map(|i| (skey(i), Some(i))).collect();
    ensure_eq!(c.seen, expected);
    ensure_eq!(copied(&mut t, b"s/", b"s0").await.step("copied")?, expected);
    Ok(())
}

/// A latest record that does not decode is a `Corrupt` error for a visiting scan, as for a
/// copied one, never a skipped entry. The record is written to the store directly while the
/// database is closed.
async fn visiting_scans_report_corrupt_records(h: &Harness) -> CaseResult {
    {
        let engine = h.engine();
        let db = engine.open_or_create("default").await.step("open")?;
        let mut w = AtomicWrite::new();
        for i in 0..5 {
            w = w.set(skey(i), Value::u64(i));
        }
        db.atomic_write(w).await.step("load")?;
        db.close().await;
    }
    {
        let store = h.backend().open("default", false).await.step("store")?;
        store
            .apply(
                vec![strata_engine::BatchOp::Put(
                    strata_engine::layout::latest(&skey(2)),
                    b"not a record".to_vec(),
                )],
                strata_engine::Durability::Sync,
                None,
            )
            .await
            .step("corrupt")?;
        store.sync().await.step("sync")?;
    }
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("reopen")?;
    let mut t = db.begin().await.step("begin")?;
    let visited = visit_all(&mut t, b"s/", b"s0", 0).await;
    ensure!(
        matches!(visited, Err(EngineError::Corrupt { .. })),
        "a visiting scan over a corrupt record: {:?}",
        visited.map(|c| c.seen)
    );
    let copied = copied(&mut t, b"s/", b"s0").await;
    ensure!(
        matches!(copied, Err(EngineError::Corrupt { .. })),
        "a copied scan over a corrupt record: {copied:?}"
    );
    Ok(())
}

/// A store's frozen read view (what a cluster node writes a snapshot from while applying
/// goes on) keeps seeing the store as it was when taken, however it changes after.
async fn frozen_read_views_miss_later_writes(h: &Harness) -> CaseResult {
    use strata_engine::{BatchOp, Durability};
    let store = h.backend().open("frozen", true).await.step("open")?;
    if store.read_view().await.step("read view")?.is_none() {
        return Err("SKIP: this store does not freeze read views".into());
    }
    let put = |k: &str| BatchOp::Put(k.as_bytes().to_vec(), b"v".to_vec());
    store
        .apply(vec![put("a"), put("b")], Durability::Sync, None)
        .await
        .step("first write")?;
    let view = store
        .read_view()
        .await
        .step("read view")?
        .ok_or("the store froze a view before")?;
    store
        .apply(
            vec![BatchOp::Delete(b"a".to_vec()), put("c")],
            Durability::Sync,
            None,
        )
        .await
        .step("later write")?;
    let keys = |pairs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        pairs.into_iter().map(|(k, _)| k).collect()
    };
    let frozen = keys(view.scan(b"", b"", 10).await.step("scan the view")?);
    ensure_eq!(frozen, vec![b"a".to_vec(), b"b".to_vec()]);
    // Bounded and limited scans of the view, as a snapshot reads it in chunks.
    let first = keys(view.scan(b"", b"", 1).await.step("scan one")?);
    ensure_eq!(first, vec![b"a".to_vec()]);
    let rest = keys(view.scan(b"a\0", b"z", 10).await.step("scan the rest")?);
    ensure_eq!(rest, vec![b"b".to_vec()]);
    let now = keys(
        store
            .scan(b"", b"", false, 10)
            .await
            .step("scan the store")?,
    );
    ensure_eq!(now, vec![b"b".to_vec(), b"c".to_vec()]);
    Ok(())
}
