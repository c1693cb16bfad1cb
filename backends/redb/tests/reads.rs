//! Reads share a snapshot between writes: every read that starts after a write returned
//! sees it, and reads in between agree.

use strata_backend_redb::RedbStore;
use strata_engine::{BackendError, BatchOp, Durability, Precondition, Store};

#[tokio::test]
async fn a_read_after_a_write_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_path(&dir.path().join("t.redb")).unwrap();
    let (k, k2) = (b"k".to_vec(), b"k2".to_vec());
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(store.scan(b"", b"", false, 10).await.unwrap().is_empty());

    store
        .apply(
            vec![BatchOp::Put(k.clone(), b"1".to_vec())],
            Durability::Sync,
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Some(b"1".to_vec()));
    store
        .apply(
            vec![BatchOp::Put(k2.clone(), b"2".to_vec())],
            Durability::Async,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.scan(b"", b"", false, 10).await.unwrap(),
        vec![(k.clone(), b"1".to_vec()), (k2.clone(), b"2".to_vec())]
    );

    // A write refused by its precondition changes nothing, and reads still agree.
    let refused = store
        .apply(
            vec![BatchOp::Put(k.clone(), b"x".to_vec())],
            Durability::Sync,
            Some(Precondition {
                key: k2.clone(),
                expected: None,
            }),
        )
        .await;
    assert!(
        matches!(refused, Err(BackendError::PreconditionFailed)),
        "{refused:?}"
    );
    assert_eq!(store.get(&k).await.unwrap(), Some(b"1".to_vec()));

    store
        .apply(vec![BatchOp::Delete(k.clone())], Durability::Sync, None)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(
        store.scan(b"", b"", true, 10).await.unwrap(),
        vec![(k2, b"2".to_vec())]
    );
}
