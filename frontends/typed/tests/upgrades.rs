//! Upgrades declared as data (`#[record(..., previous = P, upgrade)]`): the declaration
//! generates the application's `From<P>` and is stored in the schema, so a tree is migrated
//! without the types (`inspect::migrate`, `strata typed migrate`) exactly as the
//! application's own `Tree::migrate` would; a step that is the application's code is
//! refused before anything is written.

use std::time::Duration;

use strata_typed::{inspect, record, Error, Tree, Wait};

mod common;
use common::database;

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bought,
    Made { shop: String },
}

/// Not the first variant: the stored default is the type's own.
impl Default for Kind {
    fn default() -> Self {
        Kind::Made {
            shop: "main shop".into(),
        }
    }
}

mod u1 {
    #[strata_typed::record(tree = "bins", version = 1, versioned)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Bin {
        pub label: String,
        pub shelf: String,
        pub count: u32,
        pub obsolete: bool,
    }
}

mod u2 {
    /// Renames `shelf` to `place`, drops `obsolete`, adds three fields.
    #[strata_typed::record(tree = "bins", version = 2, versioned, previous = super::u1::Bin, upgrade)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Bin {
        pub label: String,
        #[upgrade(from = shelf)]
        pub place: String,
        #[upgrade(default)]
        pub tags: Vec<String>,
        pub count: u32,
        #[upgrade(default)]
        pub kind: super::Kind,
        #[upgrade(default)]
        pub note: Option<String>,
    }
}

/// Version 3 is made by the application's code.
#[record(tree = "bins", version = 3, versioned, previous = u2::Bin)]
#[derive(Debug, Clone, PartialEq)]
struct Bin {
    label: String,
    count: i64,
}

impl From<u2::Bin> for Bin {
    fn from(old: u2::Bin) -> Self {
        Bin {
            label: format!("{} ({})", old.label, old.place),
            count: i64::from(old.count),
        }
    }
}

fn old_bin(i: u32) -> u1::Bin {
    u1::Bin {
        label: format!("B{i}"),
        shelf: format!("shelf {}", i % 7),
        count: i * 3,
        obsolete: i.is_multiple_of(2),
    }
}

/// A database with `n` version-1 bins, every tenth released.
async fn filled(n: u32) -> strata_engine::Database {
    let db = database().await;
    let tree = Tree::<u1::Bin>::open(db.clone()).as_user("ann");
    for i in 0..n {
        let key = tree.insert(&old_bin(i)).await.unwrap();
        if i.is_multiple_of(10) {
            tree.check_out(key.id(), Duration::from_secs(3600), Wait::No)
                .await
                .unwrap();
            tree.release(key).await.unwrap();
        }
    }
    db
}

/// Every record as `show` has it: id, revision, version, released, value.
async fn shown(db: &strata_engine::Database) -> Vec<(u64, u32, Option<u32>, bool, String)> {
    inspect::records(db, "bins", None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let value = r.value.map(|v| v.get().to_string()).unwrap_or_default();
            (r.id, r.revision, r.schema_version, r.released, value)
        })
        .collect()
}

#[test]
fn the_declaration_generates_the_from() {
    let new = u2::Bin::from(old_bin(4));
    assert_eq!(
        new,
        u2::Bin {
            label: "B4".into(),
            place: "shelf 4".into(),
            tags: vec![],
            count: 12,
            kind: Kind::default(),
            note: None,
        }
    );
}

#[tokio::test]
async fn a_tree_migrated_without_the_types_is_the_one_the_application_migrates() {
    let by_app = filled(300).await;
    let by_tool = filled(300).await;

    let rewritten = Tree::<u2::Bin>::open(by_app.clone())
        .migrate(|_, _| {})
        .await
        .unwrap();
    assert_eq!(rewritten, 300);

    Tree::<u2::Bin>::open(by_tool.clone())
        .store_schema()
        .await
        .unwrap();
    let mut calls = Vec::new();
    let done = inspect::migrate(&by_tool, "bins", None, false, |d, t| calls.push((d, t)))
        .await
        .unwrap();
    assert_eq!(
        done,
        inspect::Migrated {
            to: 2,
            rewritten: 300,
            current: 0,
            later: 0,
        }
    );
    assert_eq!(calls.first(), Some(&(256, 300)));
    assert_eq!(calls.last(), Some(&(300, 300)));

    let (app, tool) = (shown(&by_app).await, shown(&by_tool).await);
    assert_eq!(app.len(), 300);
    assert_eq!(app, tool, "same versions, release states and values");
    assert!(tool.iter().all(|r| r.2 == Some(2)));
    assert_eq!(tool.iter().filter(|r| r.3).count(), 30);
    // The application reads what the tool wrote.
    let tree = Tree::<u2::Bin>::open(by_tool.clone());
    let first = tree.keys().await.unwrap()[7];
    let got = tree.get(first).await.unwrap().unwrap();
    assert_eq!(got, u2::Bin::from(old_bin(7)));

    // Again: nothing left to do.
    let again = inspect::migrate(&by_tool, "bins", None, false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.rewritten, again.current), (0, 300));
}

#[tokio::test]
async fn a_step_that_is_the_application_s_code_is_refused_before_anything_is_written() {
    let db = filled(20).await;
    Tree::<u2::Bin>::open(db.clone())
        .store_schema()
        .await
        .unwrap();
    Tree::<Bin>::open(db.clone()).store_schema().await.unwrap();
    let before = shown(&db).await;
    let err = inspect::migrate(&db, "bins", None, false, |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Edit(m) if m.contains("version 3 of tree \"bins\" is made from version 2 by the application's code")),
        "{err}"
    );
    assert_eq!(shown(&db).await, before, "nothing was written");

    // As far as the declared upgrade goes, it can.
    let done = inspect::migrate(&db, "bins", Some(2), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(done.rewritten, 20);
    // A record written by a later version is left as it is.
    Tree::<Bin>::open(db.clone())
        .insert(&Bin {
            label: "new".into(),
            count: 1,
        })
        .await
        .unwrap();
    let done = inspect::migrate(&db, "bins", Some(2), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((done.rewritten, done.current, done.later), (0, 20, 1));
}

#[tokio::test]
async fn a_version_without_a_stored_schema_is_named() {
    let db = filled(3).await;
    let err = inspect::migrate(&db, "bins", Some(2), false, |_, _| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no schema is stored for version 2"),
        "{err}"
    );
}
