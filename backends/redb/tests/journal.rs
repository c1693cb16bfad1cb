//! Durable batches go through the commit journal: a store that was not closed (no
//! checkpoint) replays it on open, and a checkpoint empties it.

use strata_backend_redb::RedbStore;
use strata_engine::{BatchOp, Durability, Store};

#[tokio::test]
async fn unclosed_stores_replay_their_journal_and_checkpoints_empty_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let store = RedbStore::open_path(&path).unwrap();
    for i in 0..10u8 {
        let ops = vec![
            BatchOp::Put(vec![b'k', i], vec![i]),
            BatchOp::Delete(vec![b'k', i.wrapping_sub(1)]),
        ];
        let durability = if i % 2 == 0 {
            Durability::Sync
        } else {
            Durability::Async
        };
        store.apply(ops, durability, None).await.unwrap();
    }
    assert!(
        store.journaled_bytes().await.unwrap() > 0,
        "durable batches are journaled"
    );
    drop(store);

    // Reopened without a close: the journal is replayed into redb and emptied.
    let store = RedbStore::open_path(&path).unwrap();
    assert_eq!(store.journaled_bytes().await.unwrap(), 0);
    let all = store.scan(b"", b"", false, 100).await.unwrap();
    assert_eq!(all, vec![(vec![b'k', 9], vec![9])]);

    // A checkpoint (what closing a database does) empties the journal as well.
    store
        .apply(
            vec![BatchOp::Put(b"z".to_vec(), b"z".to_vec())],
            Durability::Sync,
            None,
        )
        .await
        .unwrap();
    assert!(store.journaled_bytes().await.unwrap() > 0);
    store.sync().await.unwrap();
    assert_eq!(store.journaled_bytes().await.unwrap(), 0);
    drop(store);
    let store = RedbStore::open_path(&path).unwrap();
    assert_eq!(store.get(b"z").await.unwrap(), Some(b"z".to_vec()));
    drop(store);

    // A batch only the journal holds (a crash after its sync, before redb wrote anything):
    // one record in the documented format, then a torn one that must be ignored.
    let record = |key: &[u8], epoch: Option<u64>| {
        let mut payload = vec![1u8];
        for b in [key, b"v"] {
            payload.extend_from_slice(&(b.len() as u32).to_le_bytes());
            payload.extend_from_slice(b);
        }
        let mut checked = match epoch {
            Some(e) => e.to_le_bytes().to_vec(),
            None => Vec::new(),
        };
        checked.extend_from_slice(&payload);
        let mut record = (payload.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        record.extend_from_slice(&checked);
        let torn = record[..record.len() - 1].to_vec();
        record.extend_from_slice(&torn);
        record
    };
    let mut file = b"strata-journal\0\x02".to_vec();
    file.extend_from_slice(&7u64.to_le_bytes());
    file.extend_from_slice(&record(b"only-journaled", Some(7)));
    // A whole record of another epoch after the torn one is not reached either.
    file.extend_from_slice(&record(b"stale", Some(6)));
    std::fs::write(dir.path().join("t.redb-journal"), &file).unwrap();
    let store = RedbStore::open_path(&path).unwrap();
    assert_eq!(
        store.get(b"only-journaled").await.unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(store.get(b"stale").await.unwrap(), None);
    assert_eq!(store.get(b"z").await.unwrap(), Some(b"z".to_vec()));
    assert_eq!(store.journaled_bytes().await.unwrap(), 0);
    drop(store);

    // A journal of the earlier format (no header, records without an epoch) is replayed.
    std::fs::write(dir.path().join("t.redb-journal"), record(b"earlier", None)).unwrap();
    let store = RedbStore::open_path(&path).unwrap();
    assert_eq!(store.get(b"earlier").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        store.get(b"only-journaled").await.unwrap(),
        Some(b"v".to_vec())
    );
}

/// After a checkpoint the journal is written again from its start, over the old records. A
/// record of the old epoch that lines up exactly after the new ones must not be replayed:
/// here it would bring back a key deleted since.
#[tokio::test]
async fn records_from_before_a_checkpoint_are_not_replayed_after_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let store = RedbStore::open_path(&path).unwrap();
    let put = |k: &[u8], v: &[u8]| vec![BatchOp::Put(k.to_vec(), v.to_vec())];
    // Two records: a put of "a" (payload 1 + 4 + 1 + 4 bytes), then a put of "kkkkk".
    store
        .apply(put(b"a", b""), Durability::Sync, None)
        .await
        .unwrap();
    store
        .apply(put(b"kkkkk", b"1"), Durability::Sync, None)
        .await
        .unwrap();
    store.sync().await.unwrap();
    // One record of the same length as the first: the second old one follows it exactly.
    store
        .apply(
            vec![BatchOp::Delete(b"kkkkk".to_vec())],
            Durability::Sync,
            None,
        )
        .await
        .unwrap();
    drop(store);

    let store = RedbStore::open_path(&path).unwrap();
    assert_eq!(store.get(b"kkkkk").await.unwrap(), None);
    assert_eq!(store.get(b"a").await.unwrap(), Some(Vec::new()));
}
