//! Records in typed trees over the in-memory backend: keys, reads in place, updates,
//! revisions and releases, metadata, and stored bytes that are not what the code expects.

use std::time::Duration;
use strata_engine::{Database, Value};

use strata_typed::{record, Error, Key, RawKey, RevisionState, Tree, Wait};

mod common;
use common::database;

const HOUR: Duration = Duration::from_secs(3600);

#[record(tree = "parts", version = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub stock: u32,
    pub tags: Vec<String>,
}

#[record(tree = "boms", version = 1, versioned)]
#[derive(Debug, Clone, PartialEq)]
pub struct Bom {
    pub product: String,
    pub lines: Vec<(u64, u32)>,
}

/// The same tree read by code at a later schema version.
mod later {
    use strata_typed::record;

    #[record(tree = "parts", version = 2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Part {
        pub name: String,
        pub stock: u32,
        pub tags: Vec<String>,
        pub location: Option<String>,
    }
}

fn part(name: &str, stock: u32) -> Part {
    Part {
        name: name.into(),
        stock,
        tags: vec!["raw".into()],
    }
}

#[tokio::test]
async fn insert_get_update_remove() {
    let parts = Tree::<Part>::open(database().await).as_user("ann");
    let a = parts.insert(&part("bolt", 10)).await.unwrap();
    let b = parts.insert(&part("nut", 20)).await.unwrap();
    assert_ne!(a, b);
    assert_eq!((a.id(), a.revision()), (1, 0));
    assert_eq!((b.id(), b.revision()), (2, 0));
    assert_eq!(parts.get(a).await.unwrap(), Some(part("bolt", 10)));
    // Read in place: the archived form, no deserialization.
    let stock = parts.with(b, |p| p.stock.to_native()).await.unwrap();
    assert_eq!(stock, Some(20));
    let name_len = parts.with(b, |p| p.name.len()).await.unwrap();
    assert_eq!(name_len, Some(3));

    parts.check_out(a.id(), HOUR, Wait::No).await.unwrap();
    parts.check_out(b.id(), HOUR, Wait::No).await.unwrap();
    parts.update(a, &part("bolt", 9)).await.unwrap();
    assert_eq!(parts.get(a).await.unwrap().unwrap().stock, 9);
    assert!(parts.remove(b).await.unwrap());
    assert!(!parts.remove(b).await.unwrap());
    assert_eq!(parts.get(b).await.unwrap(), None);
    assert!(matches!(
        parts.update(b, &part("nut", 1)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(parts.keys().await.unwrap(), vec![a]);
    // Ids are never reused.
    let c = parts.insert(&part("washer", 5)).await.unwrap();
    assert_eq!(c.id(), 3);
}

#[tokio::test]
async fn iterate_in_place_and_stop_early() {
    let parts = Tree::<Part>::open(database().await);
    for i in 0..50 {
        parts.insert(&part(&format!("p{i:02}"), i)).await.unwrap();
    }
    let mut total = 0u32;
    let mut seen = 0;
    parts
        .for_each(|_, p| {
            total += p.stock.to_native();
            seen += 1;
            true
        })
        .await
        .unwrap();
    assert_eq!((seen, total), (50, (0..50).sum()));
    let mut first = Vec::new();
    parts
        .for_each(|k, p| {
            first.push((k.id(), p.name.to_string()));
            first.len() < 3
        })
        .await
        .unwrap();
    assert_eq!(
        first,
        vec![(1, "p00".into()), (2, "p01".into()), (3, "p02".into())]
    );
}

#[tokio::test]
async fn released_revisions_never_change() {
    let db = database().await;
    let boms = Tree::<Bom>::open(db.clone()).as_user("ann");
    let v1 = boms
        .insert(&Bom {
            product: "table".into(),
            lines: vec![(1, 4)],
        })
        .await
        .unwrap();
    assert_eq!(v1.revision(), 1);
    boms.check_out(v1.id(), HOUR, Wait::No).await.unwrap();
    assert_eq!(
        boms.meta(v1).await.unwrap().unwrap().state,
        RevisionState::Draft
    );
    // A draft changes; the next revision needs a released one.
    boms.update(
        v1,
        &Bom {
            product: "table".into(),
            lines: vec![(1, 4), (2, 8)],
        },
    )
    .await
    .unwrap();
    let next = Bom {
        product: "table".into(),
        lines: vec![(1, 4), (2, 16)],
    };
    assert!(matches!(
        boms.draft_next(v1, &next).await,
        Err(Error::Revision(_))
    ));
    boms.release(v1).await.unwrap();
    assert_eq!(
        boms.meta(v1).await.unwrap().unwrap().state,
        RevisionState::Released
    );
    assert!(matches!(
        boms.update(v1, &next).await,
        Err(Error::Released(_))
    ));
    assert!(matches!(boms.remove(v1).await, Err(Error::Released(_))));
    let v2 = boms.draft_next(v1, &next).await.unwrap();
    assert_eq!((v2.id(), v2.revision()), (v1.id(), 2));
    // Revision 1 is as released.
    assert_eq!(
        boms.get(v1).await.unwrap().unwrap().lines,
        vec![(1, 4), (2, 8)]
    );
    assert_eq!(boms.revisions(v1.id()).await.unwrap(), vec![v1, v2]);
    assert!(matches!(
        boms.draft_next(v1, &next).await,
        Err(Error::Revision(_))
    ));
    // Revisions need a versioned tree.
    let parts = Tree::<Part>::open(db).as_user("ann");
    let k = parts.insert(&part("bolt", 1)).await.unwrap();
    assert!(matches!(parts.release(k).await, Err(Error::Revision(_))));
}

#[tokio::test]
async fn the_latest_revision_of_every_record_is_listed_in_id_order() {
    let db = database().await;
    let boms = Tree::<Bom>::open(db.clone()).as_user("ann");
    assert_eq!(boms.latest_keys().await.unwrap(), vec![]);
    let bom = |n: u32| Bom {
        product: format!("product {n}"),
        lines: vec![(u64::from(n), n)],
    };
    // Record i gets i more revisions, each drafted from the previous one once released.
    let mut expected = Vec::new();
    for i in 0..4u32 {
        let mut k = boms.insert(&bom(i)).await.unwrap();
        boms.check_out(k.id(), HOUR, Wait::No).await.unwrap();
        for _ in 0..i {
            boms.release(k).await.unwrap();
            k = boms.draft_next(k, &bom(i)).await.unwrap();
        }
        expected.push(k);
    }
    assert_eq!(
        expected.iter().map(|k| k.revision()).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(boms.latest_keys().await.unwrap(), expected);
    for k in &expected {
        assert_eq!(boms.latest(k.id()).await.unwrap(), Some(*k));
    }
    // Removing a draft leaves its released predecessor the latest.
    boms.remove(expected[3]).await.unwrap();
    let mut after = expected.clone();
    after[3] = Key::new(expected[3].id(), 3);
    assert_eq!(boms.latest_keys().await.unwrap(), after);
}

#[tokio::test]
async fn metadata_names_the_commits() {
    let db = database().await;
    let parts = Tree::<Part>::open(db.clone()).as_user("ann");
    let k = parts.insert(&part("bolt", 1)).await.unwrap();
    parts.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    let m1 = parts.meta(k).await.unwrap().unwrap();
    assert_eq!(m1.created, m1.modified);
    let lease = m1
        .checked_out
        .as_ref()
        .expect("the check-out is in the metadata");
    assert_eq!(lease.holder, "ann");
    assert!(lease.until_ms > strata_engine::now_ms());
    assert_eq!(m1.schema_version, 1);
    assert_eq!(m1.state, RevisionState::Current);
    parts.update(k, &part("bolt", 2)).await.unwrap();
    let m2 = parts.meta(k).await.unwrap().unwrap();
    assert_eq!(m2.created, m1.created);
    assert!(m2.modified > m1.modified);
    assert_eq!(m2.checked_out.map(|l| l.holder).as_deref(), Some("ann"));
    parts.check_in(k.id()).await.unwrap();
    let m3 = parts.meta(k).await.unwrap().unwrap();
    assert_eq!(m3.checked_out, None);
    assert_eq!(m3.modified, m2.modified);
    assert_eq!(parts.meta(Key::new(99, 0)).await.unwrap(), None);
}

#[tokio::test]
async fn keys_are_checked_against_their_tree() {
    let parts = Tree::<Part>::open(database().await);
    let k = parts.insert(&part("bolt", 1)).await.unwrap();
    let raw = k.raw();
    assert_eq!(raw.to_string(), "parts/1@0");
    let back: RawKey = "parts/1@0".parse().unwrap();
    assert_eq!(Key::<Part>::try_from(&back).unwrap(), k);
    match Key::<Bom>::try_from(&back) {
        Err(Error::WrongTree { key, expected }) => {
            assert_eq!((key.tree.as_str(), expected), ("parts", "boms"))
        }
        other => panic!("{other:?}"),
    }
    assert!("parts/x@0".parse::<RawKey>().is_err());
    assert!("parts1@0".parse::<RawKey>().is_err());
}

#[tokio::test]
async fn corrupt_or_foreign_bytes_are_typed_errors() {
    let db = database().await;
    let parts = Tree::<Part>::open(db.clone());
    let k = parts.insert(&part("bolt", 1)).await.unwrap();
    let at = raw_record_key("parts", k.id(), k.revision());
    let stored = db.get(&at).await.unwrap().unwrap().value.data;

    // Flip bytes inside the archive: bytecheck refuses it (or it decodes to a valid value);
    // never a panic. Truncations and a bad header are always refused.
    for cut in [0, 5, 16, stored.len() - 1] {
        put(&db, &at, stored[..cut].to_vec()).await;
        match parts.get(k).await {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, k.raw()),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    for i in 16..stored.len() {
        let mut bad = stored.clone();
        bad[i] ^= 0xFF;
        put(&db, &at, bad).await;
        match parts.get(k).await {
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(other) => panic!("byte {i}: {other:?}"),
        }
        let _ = parts.with(k, |p| p.name.len()).await;
    }
    let mut bad_magic = stored.clone();
    bad_magic[0] = b'X';
    put(&db, &at, bad_magic).await;
    assert!(matches!(parts.get(k).await, Err(Error::Corrupt { .. })));
    put(&db, &at, stored).await;
    assert_eq!(parts.get(k).await.unwrap().unwrap().name, "bolt");
}

#[tokio::test]
async fn another_schema_version_is_named_not_misread() {
    let db = database().await;
    let old = Tree::<Part>::open(db.clone());
    let k = old.insert(&part("bolt", 1)).await.unwrap();
    let new = Tree::<later::Part>::open(db.clone());
    let same = Key::<later::Part>::new(k.id(), k.revision());
    match new.get(same).await {
        Err(Error::SchemaVersion { key, stored, code }) => {
            assert_eq!(
                (key.to_string().as_str(), stored, code),
                ("parts/1@0", 1, 2)
            );
        }
        other => panic!("{other:?}"),
    }
    let k2 = new
        .insert(&later::Part {
            name: "nut".into(),
            stock: 2,
            tags: vec![],
            location: Some("A1".into()),
        })
        .await
        .unwrap();
    let from_old = Key::<Part>::new(k2.id(), k2.revision());
    assert!(matches!(
        old.get(from_old).await,
        Err(Error::SchemaVersion {
            stored: 2,
            code: 1,
            ..
        })
    ));
}

fn raw_record_key(tree: &str, id: u64, revision: u32) -> Vec<u8> {
    let mut k = vec![strata_typed::layout::PREFIX, 0x01];
    k.extend_from_slice(tree.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

async fn put(db: &Database, key: &[u8], bytes: Vec<u8>) {
    let mut tx = db.begin().await.unwrap();
    tx.set(
        key,
        Value {
            encoding: strata_engine::Encoding::Custom(0x20),
            data: bytes,
        },
    )
    .unwrap();
    tx.commit().await.unwrap();
}
