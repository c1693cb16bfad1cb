//! A disk that fills up under the redb file. A failed write into redb makes redb refuse
//! every later read and write until it is reopened; the store reopens it at the next write
//! and replays the journal into it. While the disk is full, writes and reads fail with the
//! disk's error; once it has room again, the store serves again without a restart, and
//! every acknowledged batch is there, now and after a reopen.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::StorageBackend;
use strata_backend_redb::{RedbBackend, Storage};
use strata_engine::{Backend, BatchOp, Durability, Store};

/// The redb file, on a disk that refuses writes (`ENOSPC`) while `full` is set. Reads go on.
#[derive(Debug)]
struct FillingDisk {
    file: FileBackend,
    full: Arc<AtomicBool>,
}

impl FillingDisk {
    fn room(&self) -> io::Result<()> {
        match self.full.load(Ordering::SeqCst) {
            true => Err(io::Error::from_raw_os_error(28)),
            false => Ok(()),
        }
    }
}

impl StorageBackend for FillingDisk {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.room()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.room()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.room()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(a, b)
    }
    fn try_lock_shared_range(
        &self,
        a: Bound<u64>,
        b: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(a, b)
    }
    fn lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.lock_range(a, b)
    }
    fn lock_shared_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(a, b)
    }
    fn unlock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.unlock_range(a, b)
    }
    fn query_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(a, b)
    }
}

fn filling_disk(full: Arc<AtomicBool>) -> Storage {
    Arc::new(move |path: &Path| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Box::new(FillingDisk {
            file,
            full: full.clone(),
        }) as Box<dyn StorageBackend>)
    })
}

/// Single-put batches, each acknowledged one recorded in a model.
struct Writes {
    store: Arc<dyn Store>,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    next: u64,
}

impl Writes {
    async fn one(&mut self) -> Result<(), strata_engine::BackendError> {
        let (k, v) = (
            format!("k{:04}", self.next).into_bytes(),
            self.next.to_be_bytes().to_vec(),
        );
        self.next += 1;
        let op = BatchOp::Put(k.clone(), v.clone());
        self.store.apply(vec![op], Durability::Sync, None).await?;
        self.model.insert(k, v);
        Ok(())
    }

    /// The store's contents match the acknowledged writes.
    async fn check(&self) {
        let all = self.store.scan(b"", b"", false, usize::MAX).await.unwrap();
        let want: Vec<_> = self
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(all, want);
    }
}

/// The disk's error, as a full disk (which every frontend answers as such, e.g. HTTP 507).
fn no_space(e: strata_engine::BackendError) {
    assert!(
        matches!(e, strata_engine::BackendError::Full(_)),
        "not a full disk: {e:?}"
    );
    let e = e.to_string();
    assert!(e.contains("No space left on device"), "{e}");
}

#[tokio::test]
async fn a_full_disk_under_redb_fails_writes_until_it_has_room_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let backend = RedbBackend::new(dir.path())
        .with_flush_ops(4)
        .with_storage(filling_disk(full.clone()));
    let mut w = Writes {
        store: backend.open("db", true).await.unwrap(),
        model: BTreeMap::new(),
        next: 0,
    };
    for _ in 0..10 {
        w.one().await.unwrap();
    }
    w.check().await;

    // The disk fills. A checkpoint must write into redb, and fails with the disk's error.
    full.store(true, Ordering::SeqCst);
    no_space(w.store.sync().await.unwrap_err());
    // The next write tries to reopen redb, which needs room too: refused, with the reason.
    no_space(w.one().await.unwrap_err());
    // Reads fail while redb is closed, and say why.
    no_space(w.store.get(b"k0000").await.unwrap_err());
    no_space(w.one().await.unwrap_err());

    // Room again: the next write reopens redb and goes through; nothing acknowledged is
    // missing and nothing refused appears.
    full.store(false, Ordering::SeqCst);
    for _ in 0..10 {
        w.one().await.unwrap();
    }
    assert_eq!(w.model.len(), 20);
    assert_eq!(w.store.get(b"k0010").await.unwrap(), None);
    w.check().await;

    // The disk fills while writes keep coming: each either is acknowledged (it reached
    // the journal, whether or not its flush into redb failed) or refused, and a checkpoint
    // fails. With room again, every acknowledged write is there, and after a reopen too.
    full.store(true, Ordering::SeqCst);
    for _ in 0..12 {
        let _ = w.one().await;
    }
    no_space(w.store.sync().await.unwrap_err());
    full.store(false, Ordering::SeqCst);
    w.one().await.unwrap();
    w.check().await;
    w.store.sync().await.unwrap();
    let model = std::mem::take(&mut w.model);
    drop(w);
    let w = Writes {
        store: RedbBackend::new(dir.path())
            .open("db", false)
            .await
            .unwrap(),
        model,
        next: 0,
    };
    w.check().await;
}
