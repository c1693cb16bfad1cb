//! The embedded queue consumer: `db.listen(options, handler)` leases ready messages, runs the
//! handler on each, and acks it on `Ok` or nacks it on `Err` (or on a panic in the handler).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::database::Database;
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
                if *stopped.borrow() || *shutdown.borrow() {
                    break;
                }
                let notified = db.queue_notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let free = slots.available_permits();
                let leased = if free > 0 {
                    db.lease(free, options.visibility).await
                } else {
                    Ok(vec![])
                };
                let msgs = match leased {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(database = %db.name(), error = %e, "queue lease failed");
                        vec![]
                    }
                };
                if msgs.is_empty() {
                    let wait = match db.next_ready_at().await {
                        Ok(Some(t)) => Duration::from_millis(t.saturating_sub(now_ms()))
                            .min(options.poll_interval),
                        _ => options.poll_interval,
                    };
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                        r = stopped.changed() => if r.is_err() { break },
                        r = shutdown.changed() => if r.is_err() { break },
                    }
                    continue;
                }
                for msg in msgs {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
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
