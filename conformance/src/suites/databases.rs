//! Many named databases per engine: create, list (opened or not), lazy open, drop, names;
//! data and versions survive a restart.

use strata_engine::{AtomicWrite, DatabaseOptions, Durability, EngineError, Value};

use crate::suites::kv::committed;
use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "databases",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            create_list_drop,
            names_are_validated,
            databases_are_independent,
            unopened_databases_are_listed_and_open_lazily,
            data_and_versions_survive_restart,
            async_durability_survives_a_clean_close,
        ],
    }
}

async fn create_list_drop(h: &Harness) -> CaseResult {
    let engine = h.engine();
    ensure_eq!(
        engine.list_databases().await.step("list")?,
        Vec::<String>::new()
    );
    engine.create_database("b", None).await.step("create b")?;
    engine.create_database("a", None).await.step("create a")?;
    engine
        .create_database("team/x", None)
        .await
        .step("create nested")?;
    ensure_eq!(
        engine.list_databases().await.step("list")?,
        vec!["a".to_string(), "b".into(), "team/x".into()]
    );
    let dup = engine.create_database("a", None).await;
    ensure!(
        matches!(dup, Err(EngineError::DatabaseExists(_))),
        "duplicate create: {dup:?}"
    );
    let a = engine.database("a").await.step("open a")?;
    a.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("write")?;
    engine.drop_database("a").await.step("drop")?;
    ensure_eq!(
        engine.list_databases().await.step("list")?,
        vec!["b".to_string(), "team/x".into()]
    );
    let gone = a
        .atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(2)))
        .await;
    ensure!(
        matches!(gone, Err(EngineError::ShuttingDown)),
        "a dropped database refuses writes: {gone:?}"
    );
    let missing = engine.drop_database("a").await;
    ensure!(
        matches!(missing, Err(EngineError::DatabaseNotFound(_))),
        "dropping twice: {missing:?}"
    );
    let a = engine.create_database("a", None).await.step("recreate")?;
    ensure!(
        a.get(b"k").await.step("get")?.is_none(),
        "a recreated database starts empty"
    );
    Ok(())
}

async fn names_are_validated(h: &Harness) -> CaseResult {
    let engine = h.engine();
    for bad in [
        "",
        "/abs",
        ".hidden",
        "a//b",
        "a/../b",
        "white space",
        "x".repeat(129).as_str(),
    ] {
        let r = engine.create_database(bad, None).await;
        ensure!(
            matches!(r, Err(EngineError::InvalidName { .. })),
            "{bad:?} accepted: {r:?}"
        );
    }
    engine
        .create_database(&"x".repeat(128), None)
        .await
        .step("128 characters")?;
    Ok(())
}

async fn databases_are_independent(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let a = engine.open_or_create("a").await.step("a")?;
    let b = engine.open_or_create("b").await.step("b")?;
    a.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("write a")?;
    ensure!(
        b.get(b"k").await.step("get b")?.is_none(),
        "databases share no keys"
    );
    ensure!(a.id() != b.id(), "each database has its own id");
    Ok(())
}

async fn unopened_databases_are_listed_and_open_lazily(h: &Harness) -> CaseResult {
    {
        let engine = h.engine();
        let db = engine.create_database("later", None).await.step("create")?;
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(5)))
            .await
            .step("write")?;
        engine.close().await;
    }
    let engine = h.engine();
    ensure_eq!(
        engine.list_databases().await.step("list")?,
        vec!["later".to_string()]
    );
    ensure!(
        engine.exists("later").await.step("exists")?,
        "exists before opening"
    );
    let db = engine.database("later").await.step("lazy open")?;
    ensure_eq!(u64_at(&db, b"k").await?, Some(5));
    Ok(())
}

async fn data_and_versions_survive_restart(h: &Harness) -> CaseResult {
    let (last, id) = {
        let engine = h.engine();
        let db = engine.open_or_create("default").await.step("open")?;
        let mut last = None;
        for i in 0..10u64 {
            last = Some(committed(
                db.atomic_write(
                    AtomicWrite::new().set(format!("k{i}").into_bytes(), Value::u64(i)),
                )
                .await
                .step("w")?,
            )?);
        }
        let id = db.id().to_string();
        engine.close().await;
        (last.ok_or("no commit")?, id)
    };
    let engine = h.engine();
    let db = engine.database("default").await.step("reopen")?;
    ensure_eq!(db.id(), id.as_str());
    ensure_eq!(db.version(), last.version());
    ensure_eq!(
        db.get(b"k9").await.step("get")?.map(|e| e.versionstamp),
        Some(last)
    );
    let next = committed(
        db.atomic_write(AtomicWrite::new().set(b"after".to_vec(), Value::u64(1)))
            .await
            .step("w")?,
    )?;
    ensure!(
        next > last,
        "versionstamps keep increasing across restarts: {next} after {last}"
    );
    Ok(())
}

async fn async_durability_survives_a_clean_close(h: &Harness) -> CaseResult {
    {
        let engine = h.engine();
        let opts = DatabaseOptions {
            durability: Durability::Async,
            ..DatabaseOptions::default()
        };
        let db = engine
            .create_database("fast", Some(opts))
            .await
            .step("create")?;
        for i in 0..20u64 {
            db.atomic_write(AtomicWrite::new().set(i.to_be_bytes().to_vec(), Value::u64(i)))
                .await
                .step("w")?;
        }
        engine.close().await;
    }
    let engine = h.engine();
    let db = engine.database("fast").await.step("reopen")?;
    ensure_eq!(db.options().durability, Durability::Async);
    ensure_eq!(u64_at(&db, &19u64.to_be_bytes()).await?, Some(19));
    Ok(())
}
