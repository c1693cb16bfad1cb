//! # strata-engine
//!
//! The engine core of Strata: one ordered, strictly serializable keyspace per database, with
//! MVCC, versionstamps, watches, expiry and durable queues, over any [`Backend`].
//!
//! Two invariants carry everything else:
//!
//! * **One commit pipeline per database** ([`pipeline`](crate::pipeline)): every write — an
//!   atomic write, an interactive transaction, an expiry sweep, a queue lease — is resolved,
//!   given a strictly increasing version, applied to the store in a group batch, and published
//!   in that order. Versions are the order of commits and of real time.
//! * **Every record carries its version** ([`layout`](crate::layout)): the newest version of a
//!   key is one point lookup; older versions live under history keys, so a read at any version
//!   inside the retention window is exact without any snapshot support from the backend.
//!
//! Where to look next: [`Engine`] (databases), [`Database`] (reads, atomic writes, watches,
//! queues), [`Transaction`] (interactive transactions), [`Backend`]/[`Store`] (the seam for
//! storage), [`CommitLog`] (the seam for replication).

mod atomic;
mod backend;
mod clock;
mod conflict;
mod database;
mod engine;
mod error;
mod expiry;
mod feed;
pub mod files;
pub mod forward;
pub mod layout;
mod limits;
mod linger;
mod listener;
mod log;
mod maintenance;
mod multi_writer;
mod mvcc;
mod names;
mod overlay;
mod pipeline;
mod queue;
mod resolve;
mod restore;
mod rng;
mod txn;
mod value;
mod watch;

pub use atomic::{
    AtomicWrite, Check, CommitOutcome, Enqueue, Mutation, MutationKind, VersionstampSuffix,
};
pub use backend::{
    keys_in, range_is_empty, show_pairs, Backend, BackendError, BatchOp, Capabilities, Durability,
    Precondition, ReadView, Store,
};
pub use clock::now_ms;
pub use database::{
    prefix_end, Database, PipelineStats, QueueEntry, ReadAt, ReadRange, Snapshot, SnapshotRead,
    MAX_VISIBILITY_MS,
};
pub use engine::Engine;
pub use error::{EngineError, ErrorClass, Result};
pub use feed::{Change, ChangeKind, Changes};
pub use limits::{DatabaseOptions, EngineConfig, Limits};
pub use listener::{ListenOptions, Listener};
pub use log::{CommitLog, CommitLogFactory, LocalLog, LogEntry};
pub use mvcc::MAX_HISTORY_LOOKUPS;
pub use names::{validate_name, MAX_NAME_LEN};
pub use queue::{MessageId, QueueMessage, RestoreMessage, DEFAULT_BACKOFF};
pub use restore::MAX_RESTORED_VERSION;
pub use rng::XorShift;
pub use txn::{SnapshotReader, Transaction, Visitor};
pub use value::{Encoding, Entry, Value, ValueRef, Versionstamp};
pub use watch::Watch;
