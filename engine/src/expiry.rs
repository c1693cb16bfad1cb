//! Background work of a database: the expiry sweeper, the version garbage collector, and
//! (with other processes sharing the store) the follower of their commits.
//!
//! Expired keys are already invisible to reads from their deadline on; the sweeper deletes
//! them through ordinary commits (so watchers, history and replicas see the deletion). The
//! collector removes history records no read inside the retention window can need. Each
//! task is one step, repeated until the database shuts down; the steps are also what
//! [`crate::Database::sweep_expired`] and [`crate::Database::collect_garbage`] run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::database::Shared;
use crate::error::Result;
use crate::layout::{self, EXPIRY};
use crate::pipeline::{CommitOp, CommitReply};

/// Expired keys one sweep commit deletes at most.
pub(crate) const SWEEP_BATCH: usize = 1000;

impl Shared {
    /// Delete up to [`SWEEP_BATCH`] expired keys in one commit; how many expiry entries it
    /// handled (a full batch means there may be more).
    pub(crate) async fn sweep_once(&self) -> Result<usize> {
        let (s, e) = layout::int_range(EXPIRY, 0, now_ms() + 1);
        let items: Vec<(u64, Vec<u8>)> = self
            .store
            .scan(&s, &e, false, SWEEP_BATCH)
            .await?
            .iter()
            .filter_map(|(k, _)| layout::parse_expiry(k))
            .collect();
        let n = items.len();
        if n > 0 {
            self.commit(CommitOp::Sweep(items)).await?;
        }
        Ok(n)
    }

    /// Garbage-collect until nothing older than the retention window is left.
    pub(crate) async fn collect_all(&self) -> Result<()> {
        while let CommitReply::More(true) = self.commit(CommitOp::Gc).await? {}
        Ok(())
    }
}

/// Sleep `interval`; `false` if the database shut down meanwhile.
async fn pause(shutdown: &mut watch::Receiver<bool>, interval: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(interval) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

fn interval(ms: u64) -> Duration {
    Duration::from_millis(ms.max(10))
}

pub(crate) async fn sweeper(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let every = interval(shared.config.sweep_interval_ms);
    loop {
        if shared.store.runs_upkeep() {
            match shared.sweep_once().await {
                Ok(SWEEP_BATCH) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(database = %shared.name, error = %e, "expiry sweep failed")
                }
            }
        }
        if !pause(&mut shutdown, every).await {
            return;
        }
    }
}

pub(crate) async fn collector(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let every = interval(shared.config.gc_interval_ms);
    while pause(&mut shutdown, every).await {
        if !shared.store.runs_upkeep() {
            continue;
        }
        if let Err(e) = shared.collect_all().await {
            tracing::warn!(database = %shared.name, error = %e, "garbage collection failed");
        }
    }
}

/// With other processes sharing the store: poll the version record and catch up with their
/// commits, so that watchers and queue consumers here hear of them.
pub(crate) async fn follower(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let every = interval(shared.config.follow_interval_ms);
    while pause(&mut shutdown, every).await {
        if let Err(e) = shared.refresh().await {
            tracing::debug!(database = %shared.name, error = %e, "catching up with other writers failed");
        }
    }
}
