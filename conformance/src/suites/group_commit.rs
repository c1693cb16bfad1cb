//! Group commit: concurrent commits that resolve cleanly share one backend write.
//!
//! The backend is wrapped (a [`Gate`]) so that every batch write takes a little longer and is
//! counted; commits that arrive while one write is in progress must share the next. On a
//! store one process writes alone, the next group is resolved while the previous one's batch
//! is being written, over that batch; if the batch then fails, the group must be resolved
//! again over what the store really holds.

use std::time::Duration;

use strata_engine::{
    AtomicWrite, CommitOutcome, Database, Engine, EngineError, ReadAt, Transaction, Value,
    Versionstamp,
};

use crate::gate::{Gate, Point};
use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "group_commit",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            concurrent_commits_share_writes,
            a_group_resolved_over_a_failed_batch_is_resolved_again,
            sums_in_one_group_leave_one_version
        ],
    }
}

/// An engine whose backend passes `gate`, without background tasks (so that every batch
/// write is the test's), and its "default" database (which lives as long as the engine).
async fn gated_database(h: &Harness, gate: &Gate) -> Result<(Engine, Database), String> {
    let engine = Engine::new(
        gate.wrap(h.backend()),
        strata_engine::EngineConfig {
            background_tasks: false,
            ..Harness::config()
        },
    );
    let db = engine.open_or_create("default").await.step("open")?;
    Ok((engine, db))
}

/// Commit `write` on a task of its own (so that the test can hold it at the gate).
fn spawn_write(
    db: &Database,
    write: AtomicWrite,
) -> tokio::task::JoinHandle<strata_engine::Result<CommitOutcome>> {
    let db = db.clone();
    tokio::spawn(async move { db.atomic_write(write).await })
}

async fn concurrent_commits_share_writes(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    gate.slow_applies(Duration::from_millis(5));
    let (_engine, db) = gated_database(h, &gate).await?;
    let before = gate.applies();
    let commits = 64u64;
    let mut handles = Vec::new();
    for i in 0..commits {
        let write = AtomicWrite::new().set(i.to_be_bytes().to_vec(), Value::u64(i));
        handles.push(spawn_write(&db, write));
    }
    let mut stamps = Vec::new();
    for h in handles {
        match h.await.map_err(|e| e.to_string())?.step("commit")? {
            CommitOutcome::Committed(vs) => stamps.push(vs),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    let writes = gate.applies() - before;
    ensure!(
        writes < commits as usize / 2,
        "{commits} concurrent commits took {writes} backend writes"
    );
    stamps.sort();
    stamps.dedup();
    ensure_eq!(stamps.len(), commits as usize);
    for i in 0..commits {
        ensure_eq!(u64_at(&db, &i.to_be_bytes()).await?, Some(i));
    }
    Ok(())
}

async fn a_group_resolved_over_a_failed_batch_is_resolved_again(h: &Harness) -> CaseResult {
    if h.backend().capabilities().multi_process {
        // Shared stores resolve each group only after the one before it applied.
        return Ok(());
    }
    let gate = Gate::new();
    let (_engine, db) = gated_database(h, &gate).await?;
    db.atomic_write(AtomicWrite::new().set(b"a".to_vec(), Value::u64(1)))
        .await
        .step("first write")?;

    // The first group's batch stops before the store, and will fail.
    let mut writing = gate.hold(Point::ApplyBefore, |_| true);
    gate.fail_applies(1);
    let first = spawn_write(&db, AtomicWrite::new().set(b"b".to_vec(), Value::u64(1)));
    writing.reached().await;

    // The next commit is resolved while that batch is being written: over it, "b" exists
    // and the check fails. Its read of "c" shows it is being resolved.
    let mut resolving = gate.hold(Point::ReadAfter, |key| key.ends_with(b"c"));
    let second = spawn_write(
        &db,
        AtomicWrite::new()
            .check(b"b".to_vec(), None)
            .set(b"c".to_vec(), Value::u64(2)),
    );
    resolving.reached().await;
    resolving.release();
    writing.release();

    let first = first.await.map_err(|e| e.to_string())?;
    ensure!(
        first.is_err(),
        "the failed batch's commit answered {first:?}"
    );
    // Resolved again over the store, where "b" never appeared, the check passes.
    let second = second.await.map_err(|e| e.to_string())?.step("second")?;
    ensure!(
        matches!(second, CommitOutcome::Committed(_)),
        "the commit after the failed batch answered {second:?}"
    );
    ensure_eq!(u64_at(&db, b"b").await?, None);
    ensure_eq!(u64_at(&db, b"c").await?, Some(2));
    ensure_eq!(u64_at(&db, b"a").await?, Some(1));
    Ok(())
}

/// Commit `txns` in one group, in order: the group before them is held before the store
/// while each is resolved into the next. Transaction `i` must write the key `a{i}` (its
/// read of it shows that it is being resolved; it sorts before the keys the tests share,
/// so that it leads the group's prefetch). The commits' results, in order.
async fn commit_in_one_group(
    db: &Database,
    gate: &Gate,
    txns: Vec<Transaction>,
) -> Result<Vec<strata_engine::Result<Option<Versionstamp>>>, String> {
    let mut writing = gate.hold(Point::ApplyBefore, |_| true);
    let before = spawn_write(
        db,
        AtomicWrite::new().set(b"before".to_vec(), Value::u64(1)),
    );
    writing.reached().await;
    let mut commits = Vec::new();
    for (i, t) in txns.into_iter().enumerate() {
        let trigger = format!("a{i}").into_bytes();
        let mut resolving = gate.hold(Point::ReadAfter, move |key| key.ends_with(&trigger));
        commits.push(tokio::spawn(t.commit()));
        resolving.reached().await;
        resolving.release();
    }
    writing.release();
    before
        .await
        .map_err(|e| e.to_string())?
        .step("the commit before the group")?;
    let mut results = Vec::new();
    for c in commits {
        results.push(c.await.map_err(|e| e.to_string())?);
    }
    Ok(results)
}

/// Commits of one group that sum to one key leave one version of it, stamped with the
/// first of them; a commit that sets the key in between, or a summing commit that fails,
/// keeps every read at the versions outside the group exact.
async fn sums_in_one_group_leave_one_version(h: &Harness) -> CaseResult {
    if h.backend().capabilities().multi_process {
        // Shared stores keep every commit's writes for the other processes: no collapse.
        return Ok(());
    }
    let gate = Gate::new();
    let (_engine, db) = gated_database(h, &gate).await?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"n".to_vec(), Value::u64(0))
            .set(b"text".to_vec(), Value::bytes(b"x".to_vec())),
    )
    .await
    .step("seed")?;
    let seeded = db.version();
    let at = |v: u64| {
        let db = db.clone();
        async move {
            let got = db
                .get_many(&[b"n".to_vec()], ReadAt::Version(v))
                .await
                .step("read at a version")?;
            Ok::<_, String>(got[0].as_ref().and_then(|e| e.value.as_u64()))
        }
    };
    let summing = |i: usize, n: u64, fails: bool| {
        let db = db.clone();
        async move {
            let mut t = db.begin().await.step("begin")?;
            t.set(format!("a{i}").as_bytes(), Value::u64(1))
                .step("set")?;
            t.sum(b"n", n).step("sum")?;
            if fails {
                t.sum(b"text", 1).step("sum onto text")?;
            }
            Ok::<_, String>(t)
        }
    };

    // Three sums, the second of which fails after summing: one version, the first's.
    let txns = vec![
        summing(0, 1, false).await?,
        summing(1, 10, true).await?,
        summing(2, 100, false).await?,
    ];
    let results = commit_in_one_group(&db, &gate, txns).await?;
    let first = match &results[0] {
        Ok(Some(vs)) => *vs,
        other => return Err(format!("the first sum answered {other:?}")),
    };
    ensure!(
        matches!(results[1], Err(EngineError::InvalidMutation(_))),
        "the failing sum answered {:?}",
        results[1]
    );
    let last = match &results[2] {
        Ok(Some(vs)) => *vs,
        other => return Err(format!("the last sum answered {other:?}")),
    };
    ensure!(last > first, "each commit keeps its own versionstamp");
    let entry = db.get(b"n").await.step("get")?.ok_or("n is gone")?;
    ensure_eq!(entry.value.as_u64(), Some(101));
    ensure_eq!(entry.versionstamp, first);
    ensure_eq!(at(seeded).await?, Some(0));
    ensure_eq!(at(last.version()).await?, Some(101));

    // A sum that fails, a set, then a sum: the set's version is exact, and the last sum
    // is a version of its own.
    let set_between = {
        let mut t = db.begin().await.step("begin")?;
        t.set(b"a1", Value::u64(1)).step("set")?;
        t.set(b"n", Value::u64(1000)).step("set n")?;
        t
    };
    let txns = vec![
        summing(0, 1, true).await?,
        set_between,
        summing(2, 5, false).await?,
    ];
    let results = commit_in_one_group(&db, &gate, txns).await?;
    ensure!(
        results[0].is_err(),
        "the failing sum answered {:?}",
        results[0]
    );
    let set = match &results[1] {
        Ok(Some(vs)) => *vs,
        other => return Err(format!("the set answered {other:?}")),
    };
    let last = match &results[2] {
        Ok(Some(vs)) => *vs,
        other => return Err(format!("the last sum answered {other:?}")),
    };
    let entry = db.get(b"n").await.step("get")?.ok_or("n is gone")?;
    ensure_eq!(entry.value.as_u64(), Some(1005));
    ensure_eq!(entry.versionstamp, last);
    ensure_eq!(at(set.version()).await?, Some(1000));
    ensure_eq!(at(set.version() - 1).await?, Some(101));
    Ok(())
}
