//! A backend wrapper that stops one chosen store call until the test lets it go: how the
//! suites force an interleaving (a read paused between two of its requests, a commit paused
//! after its batch reached the store but before it was published) without sleeping. It also
//! counts batch writes and can make each one slower (a slow disk, for group commit) or fail
//! (a disk error).
//!
//! ```text
//! let gate = Gate::new();
//! let backend = gate.wrap(h.shared_backend());
//! let held = gate.hold(Point::ReadAfter, |key| key.starts_with(b"x"));
//! // ... start the operation in a task ...
//! held.reached().await;   // it is stopped inside the store call
//! // ... do what must happen in between ...
//! held.release();
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_engine::{
    Backend, BackendError, BatchOp, Capabilities, Durability, Precondition, Store,
};
use tokio::sync::oneshot;

/// Where a call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A read (`get`, `get_many`, `scan`) that has read, before it returns.
    ReadAfter,
    /// A batch write before it reaches the store.
    ApplyBefore,
    /// A batch write that has reached the store, before it returns.
    ApplyAfter,
}

type Filter = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

struct Armed {
    point: Point,
    filter: Filter,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// Stops the next matching store call of the backends it wraps.
#[derive(Default, Clone)]
pub struct Gate {
    armed: Arc<Mutex<Vec<Armed>>>,
    applies: Arc<AtomicUsize>,
    apply_delay_us: Arc<AtomicU64>,
    failing_applies: Arc<AtomicUsize>,
}

/// One armed stop: wait for a call to reach it, then let it go.
pub struct Held {
    reached: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl Held {
    /// Wait until a matching call is stopped here.
    pub async fn reached(&mut self) {
        if let Some(r) = self.reached.take() {
            let _ = r.await;
        }
    }

    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wrap a backend: every store it opens passes this gate.
    pub fn wrap(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(GatedBackend {
            inner,
            gate: self.clone(),
        })
    }

    /// Batch writes made through the wrapped backends so far.
    pub fn applies(&self) -> usize {
        self.applies.load(Ordering::SeqCst)
    }

    /// Make every batch write take at least `delay` longer.
    pub fn slow_applies(&self, delay: Duration) {
        self.apply_delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Make the next `n` batch writes fail (with an I/O error) without reaching the store.
    pub fn fail_applies(&self, n: usize) {
        self.failing_applies.store(n, Ordering::SeqCst);
    }

    /// Stop the next call at `point` whose key (a read's key or range start; ignored for
    /// writes) passes `filter`.
    pub fn hold(
        &self,
        point: Point,
        filter: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    ) -> Held {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Armed {
                point,
                filter: Box::new(filter),
                reached: reached_tx,
                release: release_rx,
            });
        Held {
            reached: Some(reached_rx),
            release: release_tx,
        }
    }

    /// If a stop is armed for this call, take it.
    fn take(&self, point: Point, key: &[u8]) -> Option<Armed> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let i = armed
            .iter()
            .position(|a| a.point == point && (point != Point::ReadAfter || (a.filter)(key)))?;
        Some(armed.remove(i))
    }

    async fn pass(&self, point: Point, key: &[u8]) {
        if let Some(a) = self.take(point, key) {
            let _ = a.reached.send(());
            let _ = a.release.await;
        }
    }
}

struct GatedBackend {
    inner: Arc<dyn Backend>,
    gate: Gate,
}

struct GatedStore {
    inner: Arc<dyn Store>,
    gate: Gate,
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let r = self.inner.get(key).await;
        self.gate.pass(Point::ReadAfter, key).await;
        r
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        let r = self.inner.scan(start, end, reverse, limit).await;
        self.gate.pass(Point::ReadAfter, start).await;
        r
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let r = self.inner.get_many(keys).await;
        let first = keys.first().map(Vec::as_slice).unwrap_or_default();
        self.gate.pass(Point::ReadAfter, first).await;
        r
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        self.gate.pass(Point::ApplyBefore, &[]).await;
        self.gate.applies.fetch_add(1, Ordering::SeqCst);
        let failing = &self.gate.failing_applies;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::Io("injected write failure".into()));
        }
        let delay = self.gate.apply_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let r = self.inner.apply(ops, durability, precondition).await;
        self.gate.pass(Point::ApplyAfter, &[]).await;
        r
    }

    async fn sync(&self) -> Result<(), BackendError> {
        self.inner.sync().await
    }
}

#[async_trait::async_trait]
impl Backend for GatedBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let inner = self.inner.open(name, create).await?;
        Ok(Arc::new(GatedStore {
            inner,
            gate: self.gate.clone(),
        }))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        self.inner.list().await
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        self.inner.drop_database(name).await
    }
}
