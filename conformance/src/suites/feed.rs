//! The change feed: every commit's created, changed and deleted keys, once each, in commit
//! order, resumable from any version the feed still keeps.

use std::collections::BTreeMap;

use strata_engine::{
    AtomicWrite, Change, ChangeKind, Database, DatabaseOptions, EngineConfig, EngineError,
    Mutation, MutationKind, Value,
};

use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "feed",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            each_commit_s_keys_in_order_with_their_kind,
            a_commit_s_writes_to_one_key_net_out,
            pages_split_between_groups_and_resume_exactly,
            a_follower_sees_every_commit_once,
            swept_keys_are_deleted_changes,
            a_consumer_behind_the_retention_window_is_told,
            the_feed_survives_a_restart,
            a_feed_starts_when_asked,
        ],
    }
}

/// Every change after `after`, page by page.
async fn all_after(db: &Database, after: u64, limit: usize) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    let mut at = after;
    loop {
        let page = db.changes(at, limit).await.step("changes")?;
        ensure!(
            page.through >= at,
            "the cursor went back: {at} -> {}",
            page.through
        );
        if page.changes.is_empty() {
            ensure_eq!(page.through, db.version());
            return Ok(out);
        }
        ensure!(
            page.changes
                .iter()
                .all(|c| c.version > at && c.version <= page.through),
            "a page holds exactly the versions after its cursor, up to its end"
        );
        at = page.through;
        out.extend(page.changes);
    }
}

fn kinds(changes: &[Change]) -> Vec<(&[u8], ChangeKind)> {
    changes.iter().map(|c| (c.key.as_slice(), c.kind)).collect()
}

async fn set(db: &Database, key: &[u8], v: u64) -> Result<u64, String> {
    let o = db
        .atomic_write(AtomicWrite::new().set(key.to_vec(), Value::u64(v)))
        .await
        .step("set")?;
    Ok(o.versionstamp().ok_or("set did not commit")?.version())
}

async fn each_commit_s_keys_in_order_with_their_kind(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.enable_change_feed().await.step("enable")?;
    let start = db.version();
    let v1 = set(&db, b"a", 1).await?;
    let v2 = set(&db, b"a", 2).await?;
    let mut tx = db.begin().await.step("begin")?;
    tx.set(b"b", Value::u64(3)).step("tx set")?;
    tx.delete(b"a").step("tx delete")?;
    tx.delete(b"never").step("tx delete absent")?;
    let v3 = tx
        .commit()
        .await
        .step("commit")?
        .ok_or("no commit")?
        .version();
    let changes = all_after(&db, start, 100).await?;
    ensure_eq!(
        kinds(&changes),
        vec![
            (&b"a"[..], ChangeKind::Created),
            (&b"a"[..], ChangeKind::Changed),
            (&b"a"[..], ChangeKind::Deleted),
            (&b"b"[..], ChangeKind::Created),
        ]
    );
    let versions: Vec<u64> = changes.iter().map(|c| c.version).collect();
    ensure_eq!(versions, vec![v1, v2, v3, v3]);
    // Following from the middle gives the rest only.
    ensure_eq!(all_after(&db, v2, 100).await?.len(), 2);
    ensure_eq!(all_after(&db, v3, 100).await?.len(), 0);
    match db.changes(v3 + 1_000, 10).await {
        Err(EngineError::VersionInFuture { .. }) => {}
        other => return Err(format!("a future cursor must be refused: {other:?}")),
    }
    Ok(())
}

async fn a_commit_s_writes_to_one_key_net_out(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.enable_change_feed().await.step("enable")?;
    set(&db, b"old", 1).await?;
    set(&db, b"replaced", 1).await?;
    let start = db.version();
    let sum = |k: &[u8]| Mutation {
        key: k.to_vec(),
        kind: MutationKind::Sum(Value::u64(1)),
    };
    // Created twice over, changed twice over, deleted then set again, created then deleted:
    // one change each for the first three, none for the last.
    let w = AtomicWrite::new()
        .mutate(sum(b"fresh"))
        .mutate(sum(b"fresh"))
        .mutate(sum(b"old"))
        .mutate(sum(b"old"))
        .delete(b"replaced".to_vec())
        .set(b"replaced".to_vec(), Value::u64(2))
        .set(b"gone".to_vec(), Value::u64(1))
        .delete(b"gone".to_vec());
    db.atomic_write(w).await.step("write")?;
    let changes = all_after(&db, start, 100).await?;
    ensure_eq!(
        kinds(&changes),
        vec![
            (&b"fresh"[..], ChangeKind::Created),
            (&b"old"[..], ChangeKind::Changed),
            (&b"replaced"[..], ChangeKind::Changed),
        ]
    );
    ensure_eq!(
        db.get(b"fresh")
            .await
            .step("get")?
            .and_then(|e| e.value.as_u64()),
        Some(2)
    );
    Ok(())
}

async fn pages_split_between_groups_and_resume_exactly(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.enable_change_feed().await.step("enable")?;
    let start = db.version();
    // Many concurrent writers, so that groups hold several commits.
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let key = format!("w{w}/{i:03}");
                let mut tx = db.begin().await?;
                tx.set(key.as_bytes(), Value::u64(i))?;
                tx.set(format!("{key}/shadow").as_bytes(), Value::u64(i))?;
                tx.commit().await?;
            }
            Ok::<_, EngineError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?.step("writer")?;
    }
    let whole = all_after(&db, start, usize::MAX).await?;
    ensure_eq!(whole.len(), 400);
    ensure!(
        whole.windows(2).all(|p| p[0].version <= p[1].version),
        "commit order"
    );
    let mut by_version: BTreeMap<u64, Vec<&[u8]>> = BTreeMap::new();
    for c in &whole {
        by_version.entry(c.version).or_default().push(&c.key);
    }
    ensure_eq!(by_version.len(), 200);
    ensure!(
        by_version
            .values()
            .all(|keys| keys.len() == 2 && keys[1].ends_with(b"/shadow")),
        "each commit's two keys, together"
    );
    for limit in [1, 3, 7] {
        let paged = all_after(&db, start, limit).await?;
        ensure_eq!(paged, whole);
    }
    Ok(())
}

async fn a_follower_sees_every_commit_once(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.enable_change_feed().await.step("enable")?;
    let start = db.version();
    let follower = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut at = start;
            let mut seen = Vec::new();
            while seen.len() < 50 {
                db.wait_for_version(at + 1).await?;
                let page = db.changes(at, 16).await?;
                at = page.through;
                seen.extend(page.changes.into_iter().map(|c| c.key));
            }
            Ok::<_, EngineError>(seen)
        })
    };
    for i in 0..50u64 {
        set(&db, format!("k{i:02}").as_bytes(), i).await?;
    }
    let seen = follower
        .await
        .map_err(|e| e.to_string())?
        .step("follower")?;
    let expected: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i:02}").into_bytes()).collect();
    ensure_eq!(seen, expected);
    Ok(())
}

async fn swept_keys_are_deleted_changes(h: &Harness) -> CaseResult {
    let engine = h.engine_with(EngineConfig {
        background_tasks: false,
        ..Harness::config()
    });
    let db = engine.open_or_create("default").await.step("open")?;
    db.enable_change_feed().await.step("enable")?;
    let start = db.version();
    let deadline = strata_engine::now_ms() + 50;
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
    while strata_engine::now_ms() <= deadline {
        tokio::time::sleep(std::time::Duration::from_millis(
            deadline + 1 - strata_engine::now_ms().min(deadline),
        ))
        .await;
    }
    ensure_eq!(db.sweep_expired().await.step("sweep")?, 1);
    // Set again after expiry: it is created anew.
    set(&db, b"t", 2).await?;
    let changes = all_after(&db, start, 100).await?;
    ensure_eq!(
        kinds(&changes),
        vec![
            (&b"t"[..], ChangeKind::Created),
            (&b"t"[..], ChangeKind::Deleted),
            (&b"t"[..], ChangeKind::Created),
        ]
    );
    Ok(())
}

async fn a_consumer_behind_the_retention_window_is_told(h: &Harness) -> CaseResult {
    let engine = h.engine_with(EngineConfig {
        background_tasks: false,
        // A shared store keeps history as long as a transaction may live, too.
        transaction_window_ms: 0,
        ..Harness::config()
    });
    let db = engine
        .create_database(
            "brief",
            Some(DatabaseOptions {
                history_retention_ms: 0,
                change_feed: true,
                ..DatabaseOptions::default()
            }),
        )
        .await
        .step("create")?;
    let first = set(&db, b"a", 1).await?;
    for i in 0..5 {
        set(&db, b"a", i).await?;
    }
    ensure_eq!(db.oldest_change_cursor(), Some(0));
    // Commit times have millisecond resolution: let the clock pass the last commit.
    let last = db.version();
    let t = strata_engine::now_ms();
    while strata_engine::now_ms() <= t {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    db.collect_garbage().await.step("collect")?;
    let oldest = db.oldest_change_cursor().ok_or("feed off")?;
    ensure!(
        oldest >= first,
        "collection moved the feed's start ({oldest})"
    );
    match db.changes(0, 10).await {
        Err(EngineError::ChangesTruncated {
            after: 0,
            oldest: o,
        }) => ensure_eq!(o, oldest),
        other => {
            return Err(format!(
                "a cursor before the window must be refused: {other:?}"
            ))
        }
    }
    // From the oldest cursor on, the feed is whole.
    let rest = all_after(&db, oldest, 100).await?;
    ensure!(
        rest.iter().all(|c| c.version > oldest && c.version <= last),
        "what is kept is exact"
    );
    ensure_eq!(rest.len() as u64, last - oldest);
    Ok(())
}

async fn the_feed_survives_a_restart(h: &Harness) -> CaseResult {
    let start;
    let expected;
    {
        let engine = h.engine();
        let db = engine.open_or_create("default").await.step("open")?;
        db.enable_change_feed().await.step("enable")?;
        start = db.version();
        set(&db, b"x", 1).await?;
        set(&db, b"y", 1).await?;
        expected = all_after(&db, start, 100).await?;
        engine.close().await;
    }
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("reopen")?;
    if h.kind.persistent() {
        ensure_eq!(all_after(&db, start, 100).await?, expected);
        ensure!(
            db.oldest_change_cursor().is_some_and(|o| o <= start),
            "the feed starts where it did"
        );
    }
    let v = set(&db, b"z", 1).await?;
    let after = all_after(&db, v - 1, 100).await?;
    ensure_eq!(kinds(&after), vec![(&b"z"[..], ChangeKind::Created)]);
    Ok(())
}

async fn a_feed_starts_when_asked(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("late").await.step("open")?;
    set(&db, b"before", 1).await?;
    if !matches!(h.kind, crate::BackendKind::Dynamodb) {
        // A store only this process writes keeps no feed until asked.
        ensure_eq!(db.oldest_change_cursor(), None);
        match db.changes(0, 10).await {
            Err(EngineError::InvalidRequest(m)) => {
                ensure!(m.contains("change feed"), "the error says why: {m}")
            }
            other => return Err(format!("no feed, no changes: {other:?}")),
        }
    }
    let from = db.enable_change_feed().await.step("enable")?;
    ensure!(from <= db.version(), "the feed starts at or before now");
    ensure_eq!(db.enable_change_feed().await.step("again")?, from);
    let v = set(&db, b"after", 1).await?;
    let changes = all_after(&db, from, 100).await?;
    ensure_eq!(
        changes.last().map(|c| (c.version, c.key.clone())),
        Some((v, b"after".to_vec()))
    );
    if h.kind.persistent() {
        engine.close().await;
        drop((db, engine));
        let engine = h.engine();
        let db = engine.open_or_create("late").await.step("reopen")?;
        ensure_eq!(db.oldest_change_cursor(), Some(from));
        ensure_eq!(all_after(&db, from, 100).await?, changes);
    }
    Ok(())
}
