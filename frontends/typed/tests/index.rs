//! Indexers: entries kept with their records through insert, update, remove and new
//! revisions; the name index's exact, loose and similar lookups; a user indexer; rebuilding
//! an index after writes through a handle without it; the latest revision.

use std::time::Duration;

use strata_typed::{record, Indexer, NameIndex, Tree, Wait};

mod common;
use common::database;

#[record(tree = "items", version = 1, versioned)]
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub stock: u32,
}

const HOUR: Duration = Duration::from_secs(3600);

fn names() -> NameIndex<Item> {
    NameIndex::new("name", |item: &ArchivedItem| item.name.as_str())
}

/// A user indexer: items by whether they need reordering.
struct LowStock;

impl Indexer<Item> for LowStock {
    fn name(&self) -> &str {
        "low"
    }

    fn terms(&self, item: &ArchivedItem) -> Vec<Vec<u8>> {
        if item.stock.to_native() < 5 {
            vec![b"low".to_vec()]
        } else {
            Vec::new()
        }
    }
}

fn item(name: &str, stock: u32) -> Item {
    Item {
        name: name.into(),
        stock,
    }
}

#[tokio::test]
async fn indexes_follow_every_write() {
    let db = database().await;
    let tree = Tree::<Item>::open(db)
        .as_user("ann")
        .with_indexer(names())
        .with_indexer(LowStock);
    let ix = names();
    let bolt = tree.insert(&item("M6 Hex Bolt", 100)).await.unwrap();
    let nut = tree.insert(&item("M6 nut", 2)).await.unwrap();
    let washer = tree.insert(&item("Washer", 3)).await.unwrap();

    assert_eq!(ix.exact(&tree, "M6 Hex Bolt").await.unwrap(), vec![bolt]);
    assert!(ix.exact(&tree, "m6 hex bolt").await.unwrap().is_empty());
    assert_eq!(
        ix.loose(&tree, "  m6   HEX bolt ").await.unwrap(),
        vec![bolt]
    );
    assert_eq!(ix.similar(&tree, "m6").await.unwrap(), vec![bolt, nut]);
    assert_eq!(ix.similar(&tree, "HE").await.unwrap(), vec![bolt]);
    assert_eq!(ix.similar(&tree, "wash").await.unwrap(), vec![washer]);
    assert!(ix.similar(&tree, "   ").await.unwrap().is_empty());
    assert_eq!(tree.find("low", b"low").await.unwrap(), vec![nut, washer]);

    // An update moves the record's terms, in the same transaction.
    tree.check_out(nut.id(), HOUR, Wait::No).await.unwrap();
    tree.update(nut, &item("Lock nut", 50)).await.unwrap();
    assert_eq!(ix.similar(&tree, "m6").await.unwrap(), vec![bolt]);
    assert_eq!(ix.loose(&tree, "lock nut").await.unwrap(), vec![nut]);
    assert_eq!(tree.find("low", b"low").await.unwrap(), vec![washer]);

    // A removal takes them away.
    tree.check_out(washer.id(), HOUR, Wait::No).await.unwrap();
    assert!(tree.remove(washer).await.unwrap());
    assert!(ix.similar(&tree, "wash").await.unwrap().is_empty());
    assert!(tree.find("low", b"low").await.unwrap().is_empty());

    // A new revision is indexed beside the released one.
    tree.check_out(bolt.id(), HOUR, Wait::No).await.unwrap();
    tree.release(bolt).await.unwrap();
    let bolt2 = tree
        .draft_next(bolt, &item("M6 Hex Bolt, stainless", 4))
        .await
        .unwrap();
    assert_eq!(
        ix.similar(&tree, "m6 hex").await.unwrap(),
        vec![bolt, bolt2]
    );
    assert_eq!(tree.find("low", b"low").await.unwrap(), vec![bolt2]);
    assert_eq!(tree.latest(bolt.id()).await.unwrap(), Some(bolt2));
    assert_eq!(tree.latest(999).await.unwrap(), None);
}

#[tokio::test]
async fn an_index_is_rebuilt_after_writes_without_it() {
    let db = database().await;
    // Written through a handle that lacks the index.
    let plain = Tree::<Item>::open(db.clone()).as_user("ann");
    let mut keys = Vec::new();
    for i in 0..300 {
        keys.push(plain.insert(&item(&format!("Part {i}"), i)).await.unwrap());
    }
    let indexed = Tree::<Item>::open(db).as_user("ann").with_indexer(names());
    let ix = names();
    assert!(ix.exact(&indexed, "Part 7").await.unwrap().is_empty());
    assert_eq!(indexed.rebuild_index("name").await.unwrap(), 300);
    assert_eq!(ix.exact(&indexed, "Part 7").await.unwrap(), vec![keys[7]]);
    assert_eq!(ix.similar(&indexed, "part").await.unwrap().len(), 300);
    // Rebuilding again drops entries of records that changed meanwhile.
    plain.check_out(keys[7].id(), HOUR, Wait::No).await.unwrap();
    plain.update(keys[7], &item("Renamed", 7)).await.unwrap();
    assert_eq!(ix.exact(&indexed, "Part 7").await.unwrap(), vec![keys[7]]);
    indexed.rebuild_index("name").await.unwrap();
    assert!(ix.exact(&indexed, "Part 7").await.unwrap().is_empty());
    assert_eq!(ix.exact(&indexed, "Renamed").await.unwrap(), vec![keys[7]]);
    assert!(matches!(
        indexed.rebuild_index("nope").await,
        Err(strata_typed::Error::UnknownIndex { tree: "items", .. })
    ));
}

#[tokio::test]
async fn terms_with_nul_bytes_and_prefixes_stay_apart() {
    struct Raw;
    impl Indexer<Item> for Raw {
        fn name(&self) -> &str {
            "raw"
        }
        fn terms(&self, item: &ArchivedItem) -> Vec<Vec<u8>> {
            vec![item.name.as_bytes().to_vec()]
        }
    }
    let tree = Tree::<Item>::open(database().await).with_indexer(Raw);
    let a = tree.insert(&item("a\0b", 1)).await.unwrap();
    let b = tree.insert(&item("a", 1)).await.unwrap();
    let c = tree.insert(&item("ab", 1)).await.unwrap();
    assert_eq!(tree.find("raw", b"a").await.unwrap(), vec![b]);
    assert_eq!(tree.find("raw", b"a\0b").await.unwrap(), vec![a]);
    assert_eq!(tree.find("raw", b"ab").await.unwrap(), vec![c]);
    assert_eq!(tree.find_prefix("raw", b"a").await.unwrap(), vec![b, a, c]);
    assert_eq!(tree.find_prefix("raw", b"a\0").await.unwrap(), vec![a]);
}
