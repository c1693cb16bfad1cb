//! Expiry: a key is invisible from its deadline on, and the sweeper deletes it through an
//! ordinary commit.

use std::time::Duration;

use strata_engine::{AtomicWrite, EngineConfig, Mutation, MutationKind, ReadAt, ReadRange, Value};

use crate::{cases, ensure, ensure_eq, eventually, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "expiry",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            invisible_from_the_deadline,
            sweeper_deletes_through_a_commit,
            overwrite_clears_expiry
        ],
    }
}

fn expiring(key: &[u8], ms: u64) -> AtomicWrite {
    AtomicWrite::new().mutate(Mutation {
        key: key.to_vec(),
        kind: MutationKind::Set {
            value: Value::u64(1),
            expires_at: Some(strata_engine::now_ms() + ms),
        },
    })
}

async fn invisible_from_the_deadline(h: &Harness) -> CaseResult {
    // No sweeper: invisibility must not depend on it.
    let engine = h.engine_with(EngineConfig {
        background_tasks: false,
        ..Harness::config()
    });
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(expiring(b"e/1", 200)).await.step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"e/2".to_vec(), Value::u64(2)))
        .await
        .step("set")?;
    let e = db
        .get(b"e/1")
        .await
        .step("get")?
        .ok_or("visible before the deadline")?;
    ensure!(e.expires_at.is_some(), "entry reports its expiry");
    tokio::time::sleep(Duration::from_millis(250)).await;
    ensure!(
        db.get(b"e/1").await.step("get")?.is_none(),
        "get after the deadline"
    );
    let s = db
        .snapshot_read(&[ReadRange::prefix(b"e/", 10)], ReadAt::Latest)
        .await
        .step("scan")?;
    ensure_eq!(s.ranges[0].len(), 1);
    let many = db
        .get_many(&[b"e/1".to_vec()], ReadAt::Latest)
        .await
        .step("get_many")?;
    ensure!(many[0].is_none(), "get_many after the deadline");
    // An expired key counts as absent for checks and for sum.
    let ok = db
        .atomic_write(AtomicWrite::new().check(b"e/1".to_vec(), None))
        .await
        .step("check")?;
    ensure!(
        ok.versionstamp().is_some(),
        "absent check on an expired key passes"
    );
    ensure_eq!(db.sweep_expired().await.step("sweep")?, 1);
    Ok(())
}

async fn sweeper_deletes_through_a_commit(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(expiring(b"k", 100)).await.step("set")?;
    let before = db.version();
    let swept = eventually(Duration::from_secs(10), || {
        let db = db.clone();
        async move { db.version() > before }
    })
    .await;
    ensure!(swept, "the sweeper committed nothing");
    ensure!(db.get(b"k").await.step("get")?.is_none(), "swept key gone");
    ensure_eq!(db.sweep_expired().await.step("sweep")?, 0);
    Ok(())
}

async fn overwrite_clears_expiry(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(expiring(b"k", 150)).await.step("set")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(7)))
        .await
        .step("overwrite")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = db
        .get(b"k")
        .await
        .step("get")?
        .ok_or("an overwrite without expiry must not expire")?;
    ensure_eq!(e.value.as_u64(), Some(7));
    ensure_eq!(e.expires_at, None);
    Ok(())
}
