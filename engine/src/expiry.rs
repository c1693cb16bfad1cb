//! Background work of a database: the expiry sweeper and the version garbage collector.
//!
//! Expired keys are already invisible to reads from their deadline on; the sweeper deletes
//! them through ordinary commits (so watchers, history and replicas see the deletion). The
//! collector removes history records no read inside the retention window can need.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::database::Shared;
use crate::layout::{self, EXPIRY};
use crate::pipeline::{parse_expiry, CommitOp, CommitReply};

const SWEEP_BATCH: usize = 1000;

pub(crate) async fn sweeper(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let interval = Duration::from_millis(shared.config.sweep_interval_ms.max(10));
    loop {
        let (s, e) = layout::int_range(EXPIRY, 0, now_ms() + 1);
        let mut full = false;
        match shared.store.scan(&s, &e, false, SWEEP_BATCH).await {
            Ok(raw) => {
                full = raw.len() == SWEEP_BATCH;
                let items: Vec<(u64, Vec<u8>)> =
                    raw.iter().filter_map(|(k, _)| parse_expiry(k)).collect();
                if !items.is_empty() {
                    if let Err(e) = shared.commit(CommitOp::Sweep(items)).await {
                        tracing::warn!(database = %shared.name, error = %e, "expiry sweep failed");
                        full = false;
                    }
                }
            }
            Err(e) => tracing::warn!(database = %shared.name, error = %e, "expiry scan failed"),
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

pub(crate) async fn collector(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let interval = Duration::from_millis(shared.config.gc_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        loop {
            match shared.commit(CommitOp::Gc).await {
                Ok(CommitReply::More(true)) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(database = %shared.name, error = %e, "garbage collection failed");
                    break;
                }
            }
        }
    }
}

/// With other processes sharing the store: poll the version record and catch up with their
/// commits, so that watchers and queue consumers here hear of them.
pub(crate) async fn follower(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let interval = Duration::from_millis(shared.config.follow_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = shared.refresh().await {
            tracing::debug!(database = %shared.name, error = %e, "catching up with other writers failed");
        }
    }
}
