//! Group commit: concurrent commits that resolve cleanly share one backend write.
//!
//! The backend is wrapped (a [`Gate`]) so that every batch write takes a little longer and is
//! counted; commits that arrive while one write is in progress must share the next. On a
//! store one process writes alone, the next group is resolved while the previous one's batch
//! is being written, over that batch; if the batch then fails, the group must be resolved
//! again over what the store really holds.

use std::time::Duration;

use strata_engine::{AtomicWrite, CommitOutcome, Database, Engine, Value};

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
            a_group_resolved_over_a_failed_batch_is_resolved_again
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

async fn concurrent_commits_share_writes(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    gate.slow_applies(Duration::from_millis(5));
    let (_engine, db) = gated_database(h, &gate).await?;
    let before = gate.applies();
    let commits = 64u64;
    let mut handles = Vec::new();
    for i in 0..commits {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            db.atomic_write(AtomicWrite::new().set(i.to_be_bytes().to_vec(), Value::u64(i)))
                .await
        }));
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
    let first = {
        let db = db.clone();
        tokio::spawn(async move {
            db.atomic_write(AtomicWrite::new().set(b"b".to_vec(), Value::u64(1)))
                .await
        })
    };
    writing.reached().await;

    // The next commit is resolved while that batch is being written: over it, "b" exists
    // and the check fails. Its read of "c" shows it is being resolved.
    let mut resolving = gate.hold(Point::ReadAfter, |key| key.ends_with(b"c"));
    let second = {
        let db = db.clone();
        tokio::spawn(async move {
            db.atomic_write(
                AtomicWrite::new()
                    .check(b"b".to_vec(), None)
                    .set(b"c".to_vec(), Value::u64(2)),
            )
            .await
        })
    };
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
