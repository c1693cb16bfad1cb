//! The embedded queue consumer: `db.listen(options, handler)` leases ready messages, runs the
//! handler on each, and acks it on `Ok` or nacks it on `Err` (or on a panic in the handler).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::database::Database;
use crate::error::EngineError;
use crate::queue::QueueMessage;

#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// How long a handler may take before its message is redelivered.
    pub visibility: Duration,
    /// Longest wait between checks for ready messages.
    pub poll_interval: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            concurrency: 16,
            visibility: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A running listener; `stop` waits for handlers in progress to finish.
pub struct Listener {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

impl Database {
    /// Consume this database's queue with `handler` until [`Listener::stop`].
    pub fn listen<F, Fut, E>(&self, options: ListenOptions, handler: F) -> Listener
    where
        F: Fn(QueueMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let db = self.clone();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            let concurrency = options.concurrency.clamp(1, 10_000);
            let slots = Arc::new(Semaphore::new(concurrency));
            let mut shutdown = db.shutdown_signal();
            loop {
                // A free slot first, so that every message leased has a handler to run it.
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                let want = slots.available_permits() + 1;
                let msgs = db
                    .lease(want, options.visibility)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(database = %db.name(), error = %e, "queue lease failed");
                        vec![]
                    });
                if msgs.is_empty() {
                    drop(permit);
                    let waited = tokio::select! {
                        r = db.wait_for_queue(options.poll_interval) => Some(r),
                        _ = stopped.wait_for(|s| *s) => None,
                    };
                    match waited {
                        None | Some(Err(EngineError::ShuttingDown)) => break,
                        // The store failed: do not spin on it.
                        Some(Err(_)) => tokio::time::sleep(options.poll_interval).await,
                        Some(Ok(())) => {}
                    }
                    continue;
                }
                let mut first = Some(permit);
                for msg in msgs {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    let db = db.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let (id, lease) = (msg.id, msg.lease);
                        let outcome = tokio::spawn(handler(msg)).await;
                        let result = match outcome {
                            Ok(Ok(())) => db.ack(id, lease).await,
                            Ok(Err(e)) => {
                                tracing::debug!(message = %id, error = %e, "queue handler failed");
                                db.nack(id, lease).await
                            }
                            Err(_) => db.nack(id, lease).await,
                        };
                        if let Err(e) = result {
                            tracing::debug!(message = %id, error = %e, "queue ack/nack not applied");
                        }
                        drop(permit);
                    });
                }
            }
            // Let handlers in progress finish.
            let _ = slots.acquire_many(concurrency as u32).await;
        });
        Listener { stop, task }
    }
}
