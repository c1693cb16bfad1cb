//! Group commit: concurrent commits that resolve cleanly share one backend write.
//!
//! The backend is wrapped so that every batch write takes a little longer and is counted;
//! commits that arrive while one write is in progress must share the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{
    AtomicWrite, Backend, BackendError, BatchOp, Capabilities, CommitOutcome, Durability, Engine,
    Precondition, Store, Value,
};

use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "group_commit",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![concurrent_commits_share_writes],
    }
}

struct CountingBackend {
    inner: Arc<dyn Backend>,
    applies: Arc<AtomicUsize>,
}

struct CountingStore {
    inner: Arc<dyn Store>,
    applies: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(key).await
    }
    async fn scan(
        &self,
        s: &[u8],
        e: &[u8],
        r: bool,
        l: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        self.inner.scan(s, e, r, l).await
    }
    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        d: Durability,
        p: Option<Precondition>,
    ) -> Result<(), BackendError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.inner.apply(ops, d, p).await
    }
}

#[async_trait::async_trait]
impl Backend for CountingBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let inner = self.inner.open(name, create).await?;
        Ok(Arc::new(CountingStore {
            inner,
            applies: self.applies.clone(),
        }))
    }
    async fn list(&self) -> Result<Vec<String>, BackendError> {
        self.inner.list().await
    }
    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        self.inner.drop_database(name).await
    }
}

async fn concurrent_commits_share_writes(h: &Harness) -> CaseResult {
    let applies = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(CountingBackend {
        inner: h.backend(),
        applies: applies.clone(),
    });
    let engine = Engine::new(
        backend,
        strata_engine::EngineConfig {
            background_tasks: false,
            ..Harness::config()
        },
    );
    let db = engine.open_or_create("default").await.step("open")?;
    let before = applies.load(Ordering::SeqCst);
    let commits = 64u64;
    let mut handles = Vec::new();
    for i in 0..commits {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            db.atomic_write(AtomicWrite::new().set(i.to_be_bytes().to_vec(), Value::u64(i)))
                .await
        }));
    }
    let mut stamps = Vec::new();
    for h in handles {
        match h.await.map_err(|e| e.to_string())?.step("commit")? {
            CommitOutcome::Committed(vs) => stamps.push(vs),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    let writes = applies.load(Ordering::SeqCst) - before;
    ensure!(
        writes < commits as usize / 2,
        "{commits} concurrent commits took {writes} backend writes"
    );
    stamps.sort();
    stamps.dedup();
    ensure_eq!(stamps.len(), commits as usize);
    for i in 0..commits {
        ensure_eq!(u64_at(&db, &i.to_be_bytes()).await?, Some(i));
    }
    Ok(())
}
