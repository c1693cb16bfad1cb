//! Watches: current entries first, then a notification on every change to a watched key.

use std::time::Duration;

use strata_engine::{AtomicWrite, Mutation, MutationKind, Value};

use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "watch",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            first_entries_then_changes,
            unrelated_writes_do_not_notify,
            expiry_notifies_at_the_deadline
        ],
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn first_entries_then_changes(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"a".to_vec(), Value::u64(1)))
        .await
        .step("seed")?;
    let mut w = db.watch(vec![b"a".to_vec(), b"b".to_vec()]).step("watch")?;
    let first = w.next().await.step("first")?;
    ensure_eq!(first[0].as_ref().and_then(|e| e.value.as_u64()), Some(1));
    ensure!(first[1].is_none(), "b is absent");
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            db.atomic_write(AtomicWrite::new().set(b"b".to_vec(), Value::u64(2)))
                .await
        })
    };
    let second = tokio::time::timeout(WAIT, w.next())
        .await
        .map_err(|_| "no notification")?
        .step("second")?;
    writer.await.map_err(|e| e.to_string())?.step("writer")?;
    ensure_eq!(second[1].as_ref().and_then(|e| e.value.as_u64()), Some(2));
    db.atomic_write(AtomicWrite::new().delete(b"a".to_vec()))
        .await
        .step("delete")?;
    let third = tokio::time::timeout(WAIT, w.next())
        .await
        .map_err(|_| "no notification of delete")?
        .step("third")?;
    ensure!(third[0].is_none(), "delete is reported");
    Ok(())
}

async fn unrelated_writes_do_not_notify(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut w = db.watch(vec![b"a".to_vec()]).step("watch")?;
    w.next().await.step("first")?;
    db.atomic_write(AtomicWrite::new().set(b"b".to_vec(), Value::u64(2)))
        .await
        .step("unrelated")?;
    let r = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    ensure!(r.is_err(), "a write to another key must not notify: {r:?}");
    Ok(())
}

async fn expiry_notifies_at_the_deadline(h: &Harness) -> CaseResult {
    let engine = h.engine_with(strata_engine::EngineConfig {
        background_tasks: false,
        ..Harness::config()
    });
    let db = engine.open_or_create("default").await.step("open")?;
    let deadline = strata_engine::now_ms() + 300;
    let m = Mutation {
        key: b"t".to_vec(),
        kind: MutationKind::Set {
            value: Value::u64(1),
            expires_at: Some(deadline),
        },
    };
    db.atomic_write(AtomicWrite::new().mutate(m))
        .await
        .step("set")?;
    let mut w = db.watch(vec![b"t".to_vec()]).step("watch")?;
    ensure!(
        w.next().await.step("first")?[0].is_some(),
        "visible before its deadline"
    );
    let next = tokio::time::timeout(WAIT, w.next())
        .await
        .map_err(|_| "no notification at expiry")?
        .step("next")?;
    ensure!(next[0].is_none(), "expired key reported absent");
    ensure!(
        strata_engine::now_ms() >= deadline,
        "notified before the deadline"
    );
    Ok(())
}
