//! Typed KV trees (`strata-typed`) on every backend: records round-trip and read in place,
//! ids are unique under concurrent inserts (through separate handles, each reserving blocks), released revisions never change, a record
//! written at another schema version or with corrupt bytes is a typed error,
//! everything survives a restart, and records are shown, edited and migrated through their
//! stored schemas without the types.

use std::time::Duration;
use strata_engine::Value;

use strata_typed::{record, Error, EventKind, Events, Key, NameIndex, RevisionState, Tree, Wait};

const HOUR: Duration = Duration::from_secs(3600);

use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "typed",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            records_round_trip_and_read_in_place,
            concurrent_inserts_get_distinct_ids,
            released_revisions_never_change,
            other_schema_versions_and_corrupt_bytes_are_typed_errors,
            records_survive_a_restart,
            check_outs_are_exclusive_and_survive_a_restart,
            indexes_follow_writes,
            events_follow_commits_and_resume_after_a_restart,
            records_are_shown_edited_and_migrated_without_their_types,
        ],
    }
}

#[record(tree = "stock", version = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct Stock {
    pub part: String,
    pub quantity: i64,
    pub serials: Vec<u64>,
}

#[record(tree = "drawings", version = 1, versioned)]
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    pub title: String,
    pub sheets: u16,
}

/// The `stock` tree as code at a later schema version sees it.
mod later {
    use strata_typed::record;

    #[record(tree = "stock", version = 2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Stock {
        pub part: String,
        pub quantity: i64,
        pub serials: Vec<u64>,
        pub bin: String,
    }
}

fn stock(part: &str, quantity: i64) -> Stock {
    Stock {
        part: part.into(),
        quantity,
        serials: (0..quantity.clamp(0, 5) as u64).collect(),
    }
}

async fn records_round_trip_and_read_in_place(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let tree = Tree::<Stock>::open(db).as_user("ann");
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(
            tree.insert(&stock(&format!("p{i}"), i))
                .await
                .step("insert")?,
        );
    }
    ensure_eq!(tree.get(keys[3]).await.step("get")?, Some(stock("p3", 3)));
    let quantity = tree
        .with(keys[7], |s| s.quantity.to_native())
        .await
        .step("with")?;
    ensure_eq!(quantity, Some(7));
    for k in [keys[0], keys[7]] {
        tree.check_out(k.id(), HOUR, Wait::No)
            .await
            .step("check out")?;
    }
    tree.update(keys[7], &stock("p7", 70))
        .await
        .step("update")?;
    ensure!(tree.remove(keys[0]).await.step("remove")?, "removed");
    let mut total = 0;
    tree.for_each(|_, s| {
        total += s.quantity.to_native();
        true
    })
    .await
    .step("for_each")?;
    ensure_eq!(total, (1..20).sum::<i64>() - 7 + 70);
    ensure_eq!(tree.keys().await.step("keys")?, keys[1..].to_vec());
    Ok(())
}

async fn concurrent_inserts_get_distinct_ids(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let tree = Tree::<Stock>::open(db.clone());
        tasks.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            for i in 0..10 {
                keys.push(tree.insert(&stock(&format!("t{t}-{i}"), i)).await?);
            }
            Ok::<_, Error>(keys)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        for k in t.await.map_err(|e| e.to_string())?.step("insert")? {
            ids.push(k.id());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ensure_eq!(ids.len(), 40);
    Ok(())
}

async fn released_revisions_never_change(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let tree = Tree::<Drawing>::open(db).as_user("ann");
    let draft = Drawing {
        title: "frame".into(),
        sheets: 2,
    };
    let v1 = tree.insert(&draft).await.step("insert")?;
    tree.check_out(v1.id(), HOUR, Wait::No)
        .await
        .step("check out")?;
    tree.release(v1).await.step("release")?;
    let changed = Drawing {
        title: "frame".into(),
        sheets: 3,
    };
    ensure!(
        matches!(tree.update(v1, &changed).await, Err(Error::Released(_))),
        "update of a released revision"
    );
    ensure!(
        matches!(tree.remove(v1).await, Err(Error::Released(_))),
        "removal of a released revision"
    );
    let v2 = tree.draft_next(v1, &changed).await.step("draft next")?;
    ensure_eq!(tree.get(v1).await.step("get v1")?, Some(draft));
    ensure_eq!(tree.get(v2).await.step("get v2")?, Some(changed));
    ensure_eq!(
        tree.meta(v2).await.step("meta")?.map(|m| m.state),
        Some(RevisionState::Draft)
    );
    ensure_eq!(
        tree.revisions(v1.id()).await.step("revisions")?,
        vec![v1, v2]
    );
    // The latest-revision index: another record with one revision, listed beside v2.
    let other = tree
        .insert(&Drawing {
            title: "shelf".into(),
            sheets: 1,
        })
        .await
        .step("insert another")?;
    ensure_eq!(
        tree.latest_keys().await.step("latest keys")?,
        vec![v2, other]
    );
    Ok(())
}

async fn other_schema_versions_and_corrupt_bytes_are_typed_errors(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let tree = Tree::<Stock>::open(db.clone());
    let k = tree.insert(&stock("bolt", 2)).await.step("insert")?;
    let newer = Tree::<later::Stock>::open(db.clone());
    match newer.get(Key::new(k.id(), k.revision())).await {
        Err(Error::SchemaVersion {
            stored: 1, code: 2, ..
        }) => {}
        other => return Err(format!("read at version 2: {other:?}")),
    }
    // Overwrite the record with bytes that are no record.
    let mut at = vec![strata_typed::layout::PREFIX, 0x01];
    at.extend_from_slice(b"stock\0");
    at.extend_from_slice(&k.id().to_be_bytes());
    at.extend_from_slice(&k.revision().to_be_bytes());
    let mut tx = db.begin().await.step("begin")?;
    tx.set(&at, Value::bytes(b"STRT\x01garbage".to_vec()))
        .step("set")?;
    tx.commit().await.step("commit")?;
    match tree.get(k).await {
        Err(Error::Corrupt { key, .. }) => ensure_eq!(key, k.raw()),
        other => return Err(format!("corrupt record: {other:?}")),
    }
    Ok(())
}

async fn records_survive_a_restart(h: &Harness) -> CaseResult {
    if !h.kind.persistent() {
        return Ok(());
    }
    let (k, created) = {
        let engine = h.engine();
        let db = engine.open_or_create("typed").await.step("open")?;
        let tree = Tree::<Stock>::open(db);
        let k = tree.insert(&stock("kept", 4)).await.step("insert")?;
        let created = tree.meta(k).await.step("meta")?.ok_or("no meta")?.created;
        engine.close().await;
        (k, created)
    };
    let engine = h.engine();
    let db = engine.database("typed").await.step("reopen")?;
    let tree = Tree::<Stock>::open(db);
    ensure_eq!(tree.get(k).await.step("get")?, Some(stock("kept", 4)));
    ensure_eq!(
        tree.meta(k).await.step("meta")?.map(|m| m.created),
        Some(created)
    );
    let next = tree.insert(&stock("next", 1)).await.step("insert")?;
    ensure!(
        next.id() > k.id(),
        "ids are never reused: {next:?} after {k:?}"
    );
    Ok(())
}

async fn check_outs_are_exclusive_and_survive_a_restart(h: &Harness) -> CaseResult {
    let k = {
        let engine = h.engine();
        let db = engine.open_or_create("typed").await.step("open")?;
        let ann = Tree::<Stock>::open(db.clone()).as_user("ann");
        let bob = Tree::<Stock>::open(db).as_user("bob");
        let k = ann.insert(&stock("held", 1)).await.step("insert")?;
        ann.check_out(k.id(), HOUR, Wait::No)
            .await
            .step("ann checks out")?;
        match bob.check_out(k.id(), HOUR, Wait::No).await {
            Err(Error::CheckedOut { holder, .. }) => ensure_eq!(holder, "ann"),
            other => return Err(format!("bob's check-out: {other:?}")),
        }
        ensure!(
            matches!(
                bob.update(k, &stock("held", 2)).await,
                Err(Error::NotCheckedOut { .. })
            ),
            "bob's update without the check-out"
        );
        if !h.kind.persistent() {
            ann.check_in(k.id()).await.step("ann checks in")?;
            bob.check_out(k.id(), HOUR, Wait::No)
                .await
                .step("bob checks out")?;
            bob.update(k, &stock("held", 3)).await.step("bob updates")?;
            return Ok(());
        }
        engine.close().await;
        k
    };
    // The lease outlives the server process.
    let engine = h.engine();
    let db = engine.database("typed").await.step("reopen")?;
    let ann = Tree::<Stock>::open(db.clone()).as_user("ann");
    let bob = Tree::<Stock>::open(db).as_user("bob");
    ensure!(
        bob.check_out(k.id(), HOUR, Wait::No).await.is_err(),
        "the lease was lost in the restart"
    );
    ann.update(k, &stock("held", 2)).await.step("ann updates")?;
    ann.check_in(k.id()).await.step("ann checks in")?;
    bob.check_out(k.id(), HOUR, Wait::No)
        .await
        .step("bob checks out")?;
    bob.update(k, &stock("held", 3)).await.step("bob updates")?;
    ensure_eq!(tree_quantity(&bob, k).await?, 3);
    Ok(())
}

async fn tree_quantity(tree: &Tree<Stock>, k: Key<Stock>) -> Result<i64, String> {
    Ok(tree.get(k).await.step("get")?.ok_or("missing")?.quantity)
}

async fn indexes_follow_writes(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let parts = || NameIndex::<Stock>::new("part", |s: &ArchivedStock| s.part.as_str());
    let tree = Tree::<Stock>::open(db).as_user("ann").with_indexer(parts());
    let ix = parts();
    let a = tree.insert(&stock("Hex Bolt M6", 1)).await.step("insert")?;
    let b = tree.insert(&stock("hex nut M6", 1)).await.step("insert")?;
    ensure_eq!(ix.loose(&tree, "HEX BOLT m6").await.step("loose")?, vec![a]);
    ensure_eq!(ix.similar(&tree, "hex").await.step("similar")?, vec![a, b]);
    tree.check_out(b.id(), HOUR, Wait::No)
        .await
        .step("check out")?;
    tree.update(b, &stock("Lock nut M6", 1))
        .await
        .step("update")?;
    ensure_eq!(ix.similar(&tree, "hex").await.step("similar")?, vec![a]);
    ensure!(tree.remove(b).await.step("remove")?, "removed");
    ensure_eq!(ix.similar(&tree, "m6").await.step("similar")?, vec![a]);
    ensure_eq!(tree.rebuild_index("part").await.step("rebuild")?, 1);
    ensure_eq!(ix.exact(&tree, "Hex Bolt M6").await.step("exact")?, vec![a]);
    Ok(())
}

async fn events_follow_commits_and_resume_after_a_restart(h: &Harness) -> CaseResult {
    let (k, seen, cursor) = {
        let engine = h.engine();
        let db = engine.open_or_create("typed").await.step("open")?;
        let tree = Tree::<Drawing>::open(db.clone()).as_user("ann");
        let from = tree.cursor().await.step("cursor")?;
        let mut events = tree.events(from);
        let k = tree
            .insert(&Drawing {
                title: "frame".into(),
                sheets: 2,
            })
            .await
            .step("insert")?;
        tree.check_out(k.id(), HOUR, Wait::No)
            .await
            .step("check out")?;
        tree.release(k).await.step("release")?;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .map_err(|_| "an event did not arrive")?
                .step("next")?;
            seen.push(e);
        }
        let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind.clone()).collect();
        ensure_eq!(kinds[0], EventKind::Created { revision: 1 });
        ensure!(
            matches!(&kinds[1], EventKind::CheckOut { holder: Some(h), .. } if h == "ann"),
            "check-out event: {:?}",
            kinds[1]
        );
        ensure_eq!(kinds[2], EventKind::Released { revision: 1 });
        ensure!(
            events.try_next().await.step("more")?.is_none(),
            "three commits, three events"
        );
        let cursor = seen[2].cursor;
        engine.close().await;
        (k, seen, cursor)
    };
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("reopen")?;
    let tree = Tree::<Drawing>::open(db.clone()).as_user("ann");
    let next = tree
        .draft_next(
            k,
            &Drawing {
                title: "frame r2".into(),
                sheets: 3,
            },
        )
        .await
        .step("draft next")?;
    let mut resumed = Events::all(db, cursor);
    let e = resumed
        .try_next()
        .await
        .step("resume")?
        .ok_or("missed the new draft")?;
    if h.kind.persistent() {
        ensure_eq!(e.key::<Drawing>(), Some(next));
        ensure!(e.cursor > seen[2].cursor, "after the stored cursor");
    }
    Ok(())
}

/// `drawings` at version 2: an upgrade declared as data.
mod drawings_v2 {
    #[strata_typed::record(tree = "drawings", version = 2, versioned, previous = super::Drawing, upgrade)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Drawing {
        pub title: String,
        pub sheets: u16,
        #[upgrade(default)]
        pub revised_by: Option<String>,
    }
}

async fn records_are_shown_edited_and_migrated_without_their_types(h: &Harness) -> CaseResult {
    use strata_typed::inspect;
    let engine = h.engine();
    let db = engine.open_or_create("typed").await.step("open")?;
    let tree = Tree::<Drawing>::open(db.clone()).as_user("ann");
    let mut keys = Vec::new();
    for i in 0..40u16 {
        let d = Drawing {
            title: format!("sheet set {i}"),
            sheets: i,
        };
        keys.push(tree.insert(&d).await.step("insert")?);
    }
    let shown = inspect::records(&db, "drawings", Some(keys[3].id()), 10)
        .await
        .step("show")?;
    ensure_eq!(
        shown[0].value.as_ref().map(|v| v.get().to_string()),
        Some(r#"{"title":"sheet set 3","sheets":3}"#.to_string())
    );
    let edited = serde_json::json!({"title": "sheet set 3, revised", "sheets": 30});
    let change = inspect::Edit {
        tree: "drawings",
        id: keys[3].id(),
        revision: None,
        user: "bob",
        value: &edited,
        stale_indexes: false,
        expected: None,
    };
    inspect::edit(&db, &change).await.step("edit")?;
    ensure_eq!(
        tree.get(keys[3]).await.step("get")?.map(|d| d.sheets),
        Some(30)
    );
    tree.check_out(keys[0].id(), HOUR, Wait::No)
        .await
        .step("check out")?;
    tree.release(keys[0]).await.step("release")?;

    Tree::<drawings_v2::Drawing>::open(db.clone())
        .store_schema()
        .await
        .step("store the version 2 schema")?;
    let done = inspect::migrate(&db, "drawings", None, false, |_, _| {})
        .await
        .step("migrate")?;
    ensure_eq!((done.to, done.rewritten, done.current), (2, 40, 0));
    let newer = Tree::<drawings_v2::Drawing>::open(db.clone());
    for (i, k) in keys.iter().enumerate() {
        let k = Key::<drawings_v2::Drawing>::new(k.id(), k.revision());
        let got = newer.get(k).await.step("get at version 2")?.ok_or("gone")?;
        let meta = newer.meta(k).await.step("meta")?.ok_or("no meta")?;
        ensure_eq!(meta.schema_version, 2);
        ensure_eq!(got.revised_by, None);
        ensure_eq!(got.sheets, if i == 3 { 30 } else { i as u16 });
        ensure_eq!(
            meta.state == RevisionState::Released,
            i == 0,
            "release states are kept"
        );
    }
    Ok(())
}
