//! The seam between a replica's trees and its server: what a tree on a replica cannot do
//! alone. Check-outs are the server's to give (they are what keeps two users from editing
//! one record); everything else a replica does locally and pushes later.

use std::future::Future;
use std::pin::Pin;

use strata_engine::Transaction;

use crate::{layout, Error, Lease, Result};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replica's server, as its trees see it.
pub(crate) trait Upstream: Send + Sync + 'static {
    /// Check record `id` of `tree` out on the server (waiting up to `wait_ms`, 0: not at
    /// all), and store the server's check-out record in the replica.
    fn check_out<'a>(
        &'a self,
        tree: &'a str,
        id: u64,
        lease_ms: u64,
        wait_ms: u64,
    ) -> BoxFuture<'a, Result<Lease>>;

    /// Give record `id` of `tree` back on the server, and store the server's check-out
    /// record in the replica.
    fn check_in<'a>(&'a self, tree: &'a str, id: u64) -> BoxFuture<'a, Result<()>>;
}

/// The unused id ranges a replica holds for `tree`.
pub(crate) async fn read_grants(tx: &mut Transaction, tree: &str) -> Result<Vec<(u64, u64)>> {
    match tx.get(&layout::grants(tree)).await? {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_slice(&v.data).map_err(|e| Error::Corrupt {
            key: crate::RawKey {
                tree: tree.to_string(),
                id: 0,
                revision: 0,
            },
            detail: format!("the replica's id reservations: {e}"),
        }),
    }
}

pub(crate) fn write_grants(tx: &mut Transaction, tree: &str, ranges: &[(u64, u64)]) -> Result<()> {
    let bytes = serde_json::to_vec(ranges).map_err(|e| Error::Encode {
        tree: "replica",
        detail: e.to_string(),
    })?;
    tx.set(&layout::grants(tree), strata_engine::Value::bytes(bytes))?;
    Ok(())
}

/// Take the next id the server reserved for this replica's inserts into `tree`.
pub(crate) async fn take_granted_id(tx: &mut Transaction, tree: &'static str) -> Result<u64> {
    let mut ranges = read_grants(tx, tree).await?;
    ranges.retain(|(s, e)| s < e);
    let Some(first) = ranges.first_mut() else {
        return Err(Error::NoIds(tree));
    };
    let id = first.0;
    first.0 += 1;
    ranges.retain(|(s, e)| s < e);
    write_grants(tx, tree, &ranges)?;
    Ok(id)
}
