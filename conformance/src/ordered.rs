//! A backend wrapper whose stores *order appends*, as a cluster node's do: every batch is
//! queued the moment its `apply` is first polled and applied by one task per store, in
//! queue order. So an engine over it keeps several groups in flight
//! ([`strata_engine::Store::orders_appends`]), and a test can stop the queue to choose
//! what lands first (another process's commit ahead of two groups in flight) or make a
//! batch's answer go missing after it applied.
//!
//! ```text
//! let log = OrderedLog::new();
//! let a = Engine::new(log.wrap(h.shared_backend()), config);
//! log.pause();
//! // ... start two commits on `a`, wait until log.queued() says both are queued ...
//! // ... commit through another engine over the unwrapped backend ...
//! log.resume();
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_engine::{
    Backend, BackendError, BatchOp, Capabilities, Durability, Precondition, Store,
};
use tokio::sync::{oneshot, watch, Notify};

type Answer = oneshot::Sender<Result<(), BackendError>>;

struct Queued {
    ops: Vec<BatchOp>,
    durability: Durability,
    precondition: Option<Precondition>,
    answer: Answer,
}

#[derive(Default)]
struct Shared {
    /// Batches queued so far (ever), and a wake-up for those waiting on the count.
    queued: AtomicUsize,
    queued_changed: Notify,
    /// The most batches queued and not yet applied at one moment.
    most_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
    /// Answers to lose, after their batch applied.
    lose: AtomicUsize,
}

/// Wraps backends so that their stores order appends (see the module docs).
#[derive(Clone)]
pub struct OrderedLog {
    shared: Arc<Shared>,
    running: Arc<watch::Sender<bool>>,
}

impl Default for OrderedLog {
    fn default() -> Self {
        OrderedLog {
            shared: Arc::default(),
            running: Arc::new(watch::channel(true).0),
        }
    }
}

impl OrderedLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn wrap(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(OrderedBackend {
            inner,
            log: self.clone(),
        })
    }

    /// Stop applying queued batches (they keep queueing).
    pub fn pause(&self) {
        self.running.send_replace(false);
    }

    pub fn resume(&self) {
        self.running.send_replace(true);
    }

    /// Wait until `n` batches have been queued in all, or fail after `limit`.
    pub async fn wait_queued(&self, n: usize, limit: Duration) -> Result<(), String> {
        let wait = async {
            loop {
                let changed = self.shared.queued_changed.notified();
                if self.shared.queued.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| {
            format!(
                "{} batches queued, {n} expected",
                self.shared.queued.load(Ordering::SeqCst)
            )
        })
    }

    /// Batches queued so far, in all.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// The most batches that were in the log, unapplied, at one moment.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    /// Apply the next `n` batches, but answer each as unavailable (an answer lost on the way).
    pub fn lose_answers(&self, n: usize) {
        self.shared.lose.store(n, Ordering::SeqCst);
    }
}

struct OrderedBackend {
    inner: Arc<dyn Backend>,
    log: OrderedLog,
}

#[async_trait::async_trait]
impl Backend for OrderedBackend {
    fn describe(&self) -> String {
        format!("{} (appends ordered)", self.inner.describe())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let inner = self.inner.open(name, create).await?;
        let queue: Arc<Mutex<VecDeque<Queued>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(apply_in_order(
            inner.clone(),
            queue.clone(),
            wake.clone(),
            closed.clone(),
            self.log.clone(),
        ));
        Ok(Arc::new(OrderedStore {
            inner,
            queue,
            wake,
            closed,
            log: self.log.clone(),
        }))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        self.inner.list().await
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        self.inner.drop_database(name).await
    }
}

/// The store's applier: queued batches, one at a time, in order, while the log runs.
async fn apply_in_order(
    inner: Arc<dyn Store>,
    queue: Arc<Mutex<VecDeque<Queued>>>,
    wake: Arc<Notify>,
    closed: Arc<AtomicBool>,
    log: OrderedLog,
) {
    let mut running = log.running.subscribe();
    loop {
        let notified = wake.notified();
        if running.wait_for(|r| *r).await.is_err() {
            return;
        }
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(q) = next else {
            if closed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
            continue;
        };
        let mut r = inner.apply(q.ops, q.durability, q.precondition).await;
        log.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let lose = &log.shared.lose;
        if r.is_ok()
            && lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            r = Err(BackendError::Unavailable("the answer was lost".into()));
        }
        let _ = q.answer.send(r);
    }
}

struct OrderedStore {
    inner: Arc<dyn Store>,
    queue: Arc<Mutex<VecDeque<Queued>>>,
    wake: Arc<Notify>,
    closed: Arc<AtomicBool>,
    log: OrderedLog,
}

impl Drop for OrderedStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

#[async_trait::async_trait]
impl Store for OrderedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(key).await
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        self.inner.scan(start, end, reverse, limit).await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner.get_many(keys).await
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        // Queued before the first wait: the order of the calls is the order of the log.
        let (answer, answered) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Queued {
                ops,
                durability,
                precondition,
                answer,
            });
        let shared = &self.log.shared;
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
        shared.queued.fetch_add(1, Ordering::SeqCst);
        shared.queued_changed.notify_waiters();
        self.wake.notify_one();
        answered
            .await
            .unwrap_or_else(|_| Err(BackendError::Unavailable("the log stopped".into())))
    }

    async fn sync(&self) -> Result<(), BackendError> {
        self.inner.sync().await
    }

    fn orders_appends(&self) -> bool {
        true
    }
}
