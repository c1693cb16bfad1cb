//! The seam below the engine: a durable, ordered byte-key map with atomic batch writes.
//!
//! A backend knows nothing of versions, expiry or queues; the engine lays all of that out as
//! keys (see [`crate::layout`]). What a backend must guarantee:
//!
//! * **Atomic batches.** [`Store::apply`] makes every op of a batch visible at once, or none.
//!   A reader never observes half a batch, and a crash never leaves half a batch behind.
//! * **Durability on request.** With [`Durability::Sync`] the batch is on stable storage when
//!   `apply` returns.
//! * **Ordered scans** by unsigned byte order of keys.
//! * **Exclusive access** where the backend cannot share a database between processes: a second
//!   process gets [`BackendError::Locked`], never a corrupt file.
//!
//! Reads may be served from any state at least as new as the last applied batch: the engine
//! never needs a multi-call snapshot from the backend, because every record carries its own
//! version and older versions live under their own keys.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatchOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl BatchOp {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put(k, _) | BatchOp::Delete(k) => k,
        }
    }

    /// The value a put writes (`None` for a delete).
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            BatchOp::Put(_, v) => Some(v),
            BatchOp::Delete(_) => None,
        }
    }
}

/// Whether a batch must be on stable storage before `apply` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Synced before the commit is acknowledged (the default).
    Sync,
    /// Written, but synced later by the backend; a crash may lose the newest commits, never
    /// corrupt the store or expose part of a commit.
    Async,
}

/// Whether `[start, end)` holds no key (an empty `end` is unbounded).
pub fn range_is_empty(start: &[u8], end: &[u8]) -> bool {
    !end.is_empty() && start >= end
}

/// The entries of `map` with keys in `[start, end)` (an empty `end` is unbounded), in order;
/// nothing for an empty range.
pub fn keys_in<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    start: &'a [u8],
    end: &'a [u8],
) -> impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    let bounds = (!range_is_empty(start, end)).then_some((Bound::Included(start), upper));
    bounds
        .into_iter()
        .flat_map(move |b| map.range::<[u8], _>(b))
}

/// Refuse the batch unless `key` currently holds `expected` (`None`: is absent).
///
/// Single-writer backends check it inside their write transaction; a multi-writer backend
/// uses it to refuse a batch when another process advanced the log first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Precondition {
    pub key: Vec<u8>,
    pub expected: Option<Vec<u8>>,
}

/// What a backend can do; the engine adapts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether several processes may write the same database at once.
    pub multi_process: bool,
    /// Whether data survives the process.
    pub persistent: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("database is in use by another process: {0}")]
    Locked(String),
    #[error("database not found in the store")]
    NotFound,
    #[error("precondition failed: the store was changed by another writer")]
    PreconditionFailed,
    #[error("storage temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The disk (or the file system's quota) has no room for the write. Nothing of it was
    /// applied; it may succeed once room is freed.
    #[error("storage is full: {0}")]
    Full(String),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Other(String),
    /// A request reached another process, and its answer was lost: it may or may not have
    /// taken effect.
    #[error("the answer was lost: {0}")]
    InDoubt(String),
}

impl BackendError {
    /// Whether a retry of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Unavailable(_) | BackendError::PreconditionFailed
        )
    }

    /// An I/O error, `context` (what was being done, or the file) first: [`BackendError::Full`]
    /// when the disk or a quota has no room, [`BackendError::Io`] otherwise.
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Self::of_io(e, format!("{context}: {e}"))
    }

    /// `what` went wrong, as the kind of `e` says.
    fn of_io(e: &std::io::Error, what: String) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                BackendError::Full(what)
            }
            _ => BackendError::Io(what),
        }
    }
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        Self::of_io(&e, e.to_string())
    }
}

/// Show `f` each pair until it returns false; how many it was shown (for
/// [`Store::scan_each`] over pairs already in memory).
pub fn show_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
) -> usize {
    let mut shown = 0;
    for (k, v) in pairs {
        shown += 1;
        if !f(k, v) {
            break;
        }
    }
    shown
}

/// A store frozen at one moment: scans of it see no later write, however long they take.
#[async_trait::async_trait]
pub trait ReadView: Send + Sync {
    /// Up to `limit` pairs with `start <= key < end` (an empty `end` is unbounded), ascending.
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError>;
}

/// One database in a backend: an ordered byte-key map.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value under `key`.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Up to `limit` pairs with `start <= key < end`, ascending, or descending if `reverse`.
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError>;

    /// Show `f` up to `limit` pairs with `start <= key < end`, ascending, until it returns
    /// false; returns how many it was shown. A store that reads in place overrides this to
    /// lend each pair instead of copying it, which is what makes long scans cheap.
    async fn scan_each(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
    ) -> Result<usize, BackendError> {
        let pairs = self.scan(start, end, false, limit).await?;
        Ok(show_pairs(
            pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            f,
        ))
    }

    /// Several values at once (a network store answers in one request).
    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Apply every op atomically; with a precondition, only if it holds.
    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        durability: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError>;

    /// Make every applied batch durable, including those applied with `Durability::Async`.
    async fn sync(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Return once reads of this store see every batch whose `apply` returned anywhere
    /// before the call. A store whose reads already do (every local store, DynamoDB with
    /// consistent reads) keeps this default; a replica waits for its copy to catch up
    /// (a linearizable read). The engine calls it before a read takes its version, unless
    /// the read asked to be eventual.
    async fn read_barrier(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether this process should run the store's background upkeep (the expiry sweep and
    /// garbage collection) now. Processes sharing a store may all run it — their commits
    /// settle through the version record like any others — but a replica runs it only
    /// while its node leads, so that a cluster does the work once.
    fn runs_upkeep(&self) -> bool {
        true
    }

    /// Whether batches this process hands to [`Store::apply`] while earlier ones are still
    /// being applied take effect in the order their calls began (each call's first poll). A
    /// replica does: its proposals enter one Raft log in that order. On a store several
    /// processes share, the engine then keeps several groups in flight, each conditioned on
    /// the version record of the one before it; an append that overtakes another only fails
    /// its condition and is resolved again. The default, `false`, sends one batch at a time.
    fn orders_appends(&self) -> bool {
        false
    }

    /// Whether [`Store::forward_commit`] may take this process's commits now (a cheap
    /// check made before a commit is encoded for it).
    fn forwards_commits(&self) -> bool {
        false
    }

    /// Where this process's atomic writes and transactions are resolved. A store shared by
    /// writers that would otherwise race for its version record (a cluster's nodes) may
    /// carry an encoded commit ([`crate::forward`]) to the one process that resolves every
    /// commit, run it there ([`crate::Engine::commit_forwarded`]), and return its encoded
    /// answer once this process's copy holds the commit. `None`: resolve it here (this
    /// process is that one, or no process serves forwarded commits). A request that may
    /// have run but whose answer was lost is [`BackendError::InDoubt`].
    async fn forward_commit(&self, _request: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(None)
    }

    /// The store as it is now, for reading at leisure while writes go on (a replica copies
    /// a whole database into a snapshot this way); `None` where the store cannot freeze a
    /// view, and the caller then keeps writes out while it reads.
    async fn read_view(&self) -> Result<Option<std::sync::Arc<dyn ReadView>>, BackendError> {
        Ok(None)
    }

    /// Whether this handle's database was dropped since the handle was opened, by another
    /// process sharing the backend (on a cluster node: a drop made through another node).
    /// The engine then closes and forgets its own handle, so the name is free again.
    fn dropped(&self) -> bool {
        false
    }
}

/// A family of databases: a directory of files, a table, or memory.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// How to name this backend in messages and in `--store` URLs (`redb:./strata-data`).
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities;

    /// Open a database; with `create`, make it if missing, else a missing database is
    /// [`BackendError::NotFound`]. Names are already validated by the engine.
    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError>;

    /// Every database in the backend, opened or not, sorted.
    async fn list(&self) -> Result<Vec<String>, BackendError>;

    /// Remove a database and its data. Returns whether it existed. The engine closes its own
    /// handle first.
    async fn drop_database(&self, name: &str) -> Result<bool, BackendError>;
}
