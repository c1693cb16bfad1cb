//! Schema evolution with real type changes: code at a later version reads what earlier code
//! wrote through migrations declared next to the type; code at an earlier version reading
//! later data gets an error naming both versions; `migrate` rewrites a tree.

use strata_typed::{record, Error, Key, RevisionState, Tree};

mod common;
use common::database;

/// Version 1: a part with a name and a count.
mod v1 {
    use strata_typed::record;

    #[record(tree = "parts", version = 1, versioned)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Part {
        pub name: String,
        pub count: u32,
    }
}

/// Version 2 adds where the part is kept.
mod v2 {
    use strata_typed::record;

    #[record(tree = "parts", version = 2, versioned, previous = super::v1::Part)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Part {
        pub name: String,
        pub count: u32,
        pub bin: Option<String>,
    }

    impl From<super::v1::Part> for Part {
        fn from(old: super::v1::Part) -> Self {
            Part {
                name: old.name,
                count: old.count,
                bin: None,
            }
        }
    }
}

/// Version 3 splits the name into a number and a description, and widens the count.
#[record(tree = "parts", version = 3, versioned, previous = v2::Part)]
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub number: String,
    pub description: String,
    pub count: i64,
    pub bin: String,
}

impl From<v2::Part> for Part {
    fn from(old: v2::Part) -> Self {
        let (number, description) = match old.name.split_once(' ') {
            Some((n, d)) => (n.to_string(), d.to_string()),
            None => (old.name, String::new()),
        };
        Part {
            number,
            description,
            count: i64::from(old.count),
            bin: old.bin.unwrap_or_else(|| "unassigned".into()),
        }
    }
}

#[tokio::test]
async fn later_code_reads_earlier_records_through_the_declared_migrations() {
    let db = database().await;
    let old = Tree::<v1::Part>::open(db.clone());
    let mid = Tree::<v2::Part>::open(db.clone());
    let new = Tree::<Part>::open(db.clone());
    let a = old
        .insert(&v1::Part {
            name: "M6 bolt".into(),
            count: 40,
        })
        .await
        .unwrap();
    let b = mid
        .insert(&v2::Part {
            name: "washer".into(),
            count: 7,
            bin: Some("A3".into()),
        })
        .await
        .unwrap();
    let a3 = Key::<Part>::new(a.id(), a.revision());
    let b3 = Key::<Part>::new(b.id(), b.revision());
    // v1 → v2 → v3, and v2 → v3.
    assert_eq!(
        new.get(a3).await.unwrap(),
        Some(Part {
            number: "M6".into(),
            description: "bolt".into(),
            count: 40,
            bin: "unassigned".into(),
        })
    );
    assert_eq!(
        new.with(b3, |p| (p.number.to_string(), p.bin.to_string()))
            .await
            .unwrap(),
        Some(("washer".to_string(), "A3".to_string()))
    );
    // v2 reads v1 too.
    let a2 = Key::<v2::Part>::new(a.id(), a.revision());
    assert_eq!(mid.get(a2).await.unwrap().unwrap().bin, None);
    let mut seen = Vec::new();
    new.for_each(|k, p| {
        seen.push((k.id(), p.count.to_native()));
        true
    })
    .await
    .unwrap();
    assert_eq!(seen, vec![(a.id(), 40), (b.id(), 7)]);
}

#[tokio::test]
async fn earlier_code_gets_a_typed_error_for_later_records() {
    let db = database().await;
    let new = Tree::<Part>::open(db.clone());
    let k = new
        .insert(&Part {
            number: "X1".into(),
            description: "bracket".into(),
            count: 1,
            bin: "B1".into(),
        })
        .await
        .unwrap();
    let old = Tree::<v1::Part>::open(db.clone()).as_user("ann");
    let k1 = Key::<v1::Part>::new(k.id(), k.revision());
    old.check_out(
        k.id(),
        std::time::Duration::from_secs(3600),
        strata_typed::Wait::No,
    )
    .await
    .unwrap();
    for result in [
        old.get(k1).await.map(|_| ()),
        old.with(k1, |_| ()).await.map(|_| ()),
        old.update(
            k1,
            &v1::Part {
                name: "x".into(),
                count: 0,
            },
        )
        .await,
        old.remove(k1).await.map(|_| ()),
    ] {
        match result {
            Err(Error::SchemaVersion { key, stored, code }) => {
                assert_eq!((key, stored, code), (k1.raw(), 3, 1));
            }
            other => panic!("{other:?}"),
        }
    }
    let message = old.get(k1).await.unwrap_err().to_string();
    assert!(
        message.contains("schema version 3") && message.contains("version 1"),
        "{message}"
    );
}

#[tokio::test]
async fn migrate_rewrites_a_tree_at_the_current_version() {
    let db = database().await;
    let old = Tree::<v1::Part>::open(db.clone()).as_user("ann");
    let mut keys = Vec::new();
    for i in 0..600 {
        keys.push(
            old.insert(&v1::Part {
                name: format!("P{i} part"),
                count: i,
            })
            .await
            .unwrap(),
        );
    }
    old.check_out(
        keys[5].id(),
        std::time::Duration::from_secs(3600),
        strata_typed::Wait::No,
    )
    .await
    .unwrap();
    old.release(keys[5]).await.unwrap();
    let new = Tree::<Part>::open(db.clone());
    let mut reports = Vec::new();
    let rewritten = new
        .migrate(|done, total| reports.push((done, total)))
        .await
        .unwrap();
    assert_eq!(rewritten, 600);
    assert_eq!(reports, vec![(256, 600), (512, 600), (600, 600)]);
    // Now stored at version 3, and read back as before; the release is kept.
    let k5 = Key::<Part>::new(keys[5].id(), keys[5].revision());
    let meta = new.meta(k5).await.unwrap().unwrap();
    assert_eq!(
        (meta.schema_version, meta.state),
        (3, RevisionState::Released)
    );
    assert_eq!(new.get(k5).await.unwrap().unwrap().number, "P5");
    // Older code now gets the typed error; a second migration has nothing to do.
    assert!(matches!(
        old.get(keys[0]).await,
        Err(Error::SchemaVersion {
            stored: 3,
            code: 1,
            ..
        })
    ));
    assert_eq!(new.migrate(|_, _| {}).await.unwrap(), 0);
}
