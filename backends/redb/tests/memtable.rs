//! The memtable: batches are read from memory until a flush writes them into redb. Reads
//! must agree with a plain ordered map after every batch, whether the keys they meet sit in
//! the memtable, in redb, or in both (a newer write or a delete over a flushed one); and a
//! reopen, which replays the journal, must find the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_backend_redb::{RedbBackend, RedbStore, FLUSH_OPS};
use strata_engine::{Backend, BatchOp, Durability, Store, XorShift as Rng};

fn key(i: u64) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Every read the store offers, against the model.
async fn agree(store: &Arc<dyn Store>, model: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut Rng) {
    for i in 0..60 {
        assert_eq!(
            store.get(&key(i)).await.unwrap(),
            model.get(&key(i)).cloned()
        );
    }
    let (a, b) = (rng.below(60), rng.below(60));
    let (start, end) = (key(a.min(b)), key(a.max(b)));
    let limit = 1 + rng.below(40) as usize;
    for reverse in [false, true] {
        let want: Vec<(Vec<u8>, Vec<u8>)> = {
            let range = model.range(start.clone()..end.clone());
            let all: Vec<_> = match reverse {
                true => range.rev().take(limit).collect(),
                false => range.take(limit).collect(),
            };
            all.into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let got = store.scan(&start, &end, reverse, limit).await.unwrap();
        assert_eq!(got, want, "scan [{a}, {b}) reverse {reverse} limit {limit}");
    }
    // Unbounded, and a callback that stops early.
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(store.scan(b"", b"", false, usize::MAX).await.unwrap(), all);
    let stop = rng.below(all.len() as u64 + 1) as usize;
    let mut seen = Vec::new();
    let shown = store
        .scan_each(b"", b"", usize::MAX, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            seen.len() < stop
        })
        .await
        .unwrap();
    let want = all.len().min(stop.max(1));
    assert_eq!(shown, want);
    assert_eq!(seen, all[..want].to_vec());
}

#[tokio::test]
async fn reads_agree_with_a_map_across_flushes_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Seven writes to a flush: most reads meet keys in both the memtable and redb. A fixed
    // seed: the same operations on every run.
    let backend = RedbBackend::new(dir.path()).with_flush_ops(7);
    let mut store = backend.open("db", true).await.unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut ops = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let k = key(rng.below(60));
            if rng.below(3) == 0 {
                model.remove(&k);
                ops.push(BatchOp::Delete(k));
            } else {
                let v = format!("v{round}-{}", rng.next_u64()).into_bytes();
                model.insert(k.clone(), v.clone());
                ops.push(BatchOp::Put(k, v));
            }
        }
        let durability = match round % 2 {
            0 => Durability::Sync,
            _ => Durability::Async,
        };
        store.apply(ops, durability, None).await.unwrap();
        agree(&store, &model, &mut rng).await;
        if round % 97 == 96 {
            // Whatever the memtable held comes back from the journal.
            drop(store);
            store = backend.open("db", true).await.unwrap();
            agree(&store, &model, &mut rng).await;
        }
    }

    // A frozen view holds the memtable's writes too, and no later one.
    drop(store);
    let store = backend.open("db", true).await.unwrap();
    store
        .apply(
            vec![BatchOp::Put(key(59), b"fresh".to_vec())],
            Durability::Sync,
            None,
        )
        .await
        .unwrap();
    model.insert(key(59), b"fresh".to_vec());
    let view = store
        .read_view()
        .await
        .unwrap()
        .expect("redb freezes views");
    let frozen: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    store
        .apply(
            vec![
                BatchOp::Delete(key(0)),
                BatchOp::Put(key(1), b"later".to_vec()),
            ],
            Durability::Sync,
            None,
        )
        .await
        .unwrap();
    assert_eq!(view.scan(b"", b"", usize::MAX).await.unwrap(), frozen);

    // A checkpoint writes the memtable into the file durably.
    store.sync().await.unwrap();
    model.remove(&key(0));
    model.insert(key(1), b"later".to_vec());
    drop(store);
    let store = backend.open("db", true).await.unwrap();
    agree(&store, &model, &mut rng).await;
}

#[tokio::test]
async fn a_memtable_of_one_write_flushes_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::new(dir.path()).with_flush_ops(0);
    let store = backend.open("db", true).await.unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(7);
    for i in 0..40u64 {
        let k = key(i % 25);
        let v = i.to_be_bytes().to_vec();
        model.insert(k.clone(), v.clone());
        store
            .apply(vec![BatchOp::Put(k, v)], Durability::Sync, None)
            .await
            .unwrap();
        agree(&store, &model, &mut rng).await;
    }
}

/// Whether redb's own table (not the memtable) holds `key`.
fn in_file(store: &RedbStore, key: &[u8]) -> bool {
    use redb::{ReadableDatabase, TableDefinition};
    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("strata");
    let tx = store.raw().unwrap().begin_read().unwrap();
    let table = tx.open_table(TABLE).unwrap();
    table.get(key).unwrap().is_some()
}

/// Apply one put and say whether it went to the file at once: it filled the memtable
/// (`full`, which the caller counts), or a checkpoint (every few seconds, and it empties
/// the journal) wrote it there. Checked against the file itself.
async fn put_and_see(store: &RedbStore, key: &[u8], value: &[u8], full: bool) -> bool {
    store
        .apply(
            vec![BatchOp::Put(key.to_vec(), value.to_vec())],
            Durability::Async,
            None,
        )
        .await
        .unwrap();
    let checkpointed = store.journaled_bytes().await.unwrap() == 0;
    assert_eq!(in_file(store, key), full || checkpointed, "key {key:?}");
    full || checkpointed
}

#[tokio::test]
async fn batches_reach_the_file_once_the_memtable_holds_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_path(&dir.path().join("t.redb")).unwrap();
    // Writes are read from memory and reach the file only with the one that fills the
    // memtable, all together (or at a checkpoint, which cannot be timed here).
    let mut held = Vec::new();
    let mut filled = 0;
    for i in 0..2 * FLUSH_OPS as u64 + 10 {
        let key = i.to_be_bytes().to_vec();
        held.push(key.clone());
        let full = held.len() == FLUSH_OPS;
        if put_and_see(&store, &key, b"v", full).await {
            assert!(held.iter().all(|k| in_file(&store, k)));
            filled += usize::from(full);
            held.clear();
        }
        assert_eq!(store.get(&key).await.unwrap(), Some(b"v".to_vec()));
    }
    assert!(filled >= 1, "no write filled the memtable");

    // Few writes of large values fill it by their bytes: 3 MiB each, against 8 MiB.
    store.sync().await.unwrap();
    let big = vec![7u8; 3 << 20];
    let mut held = 0;
    for i in 0..6u64 {
        held += 1;
        let key = format!("big{i}").into_bytes();
        if put_and_see(&store, &key, &big, held == 3).await {
            held = 0;
        }
    }
}
