//! The engine's error type: one enum, each variant a condition a caller can act on.

use crate::backend::BackendError;

/// Everything the engine can refuse or fail with.
///
/// Variants are grouped by what the caller should do: fix the request (`InvalidName`,
/// `LimitExceeded`, `InvalidMutation`, `InvalidRequest`), retry (`Conflict`,
/// `TransactionTooOld`, a transient [`BackendError`]), or look elsewhere (`DatabaseNotFound`,
/// `VersionTooOld`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid database name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("database {0:?} does not exist")]
    DatabaseNotFound(String),

    #[error("database {0:?} already exists")]
    DatabaseExists(String),

    #[error("{what} of {actual} exceeds the {limit} limit of {max}")]
    LimitExceeded {
        /// The name of the limit, as in [`crate::Limits`] docs (e.g. "write key size").
        limit: &'static str,
        /// What was measured ("key of 3000 bytes" reads as `what` = "key", `actual` = "3000 bytes").
        what: &'static str,
        actual: String,
        max: String,
    },

    /// A mutation that cannot be applied to the value it meets (e.g. `sum` on a non-U64).
    #[error("{0}")]
    InvalidMutation(String),

    /// A request that is malformed in a way no limit describes.
    #[error("{0}")]
    InvalidRequest(String),

    /// A stored record that the engine cannot decode: the store holds something it did not write.
    #[error("corrupt record in database {database:?}: {detail}")]
    Corrupt { database: String, detail: String },

    /// The transaction read data that a later commit changed. Retry the whole transaction.
    #[error("transaction conflict: a key range it read was written by a later commit; retry the transaction")]
    Conflict,

    /// A transaction's commit-time check ([`crate::Transaction::check`]) failed: a key it
    /// required unchanged (or absent) was written. Retry the whole transaction.
    #[error("transaction check failed: a key it required unchanged or absent at commit was written; retry the transaction")]
    CheckFailed,

    /// The transaction's read version is older than the conflict history the engine keeps.
    #[error("transaction too old: read version {read_version} predates the conflict window; retry the transaction")]
    TransactionTooOld { read_version: u64 },

    #[error("version {requested} is older than the oldest readable version {oldest} (history retention window)")]
    VersionTooOld { requested: u64, oldest: u64 },

    /// A change-feed consumer fell further behind than the feed keeps.
    #[error("the changes after version {after} are no longer kept (the feed starts after version {oldest}); read a snapshot and follow the feed from its version")]
    ChangesTruncated { after: u64, oldest: u64 },

    #[error("version {requested} has not been committed yet (latest is {latest})")]
    VersionInFuture { requested: u64, latest: u64 },

    #[error("queue message {0} is not leased by this lease (acked, nacked, or its lease expired)")]
    LeaseLost(String),

    /// A commit whose batch reached a shared store but whose answer was lost, and the store
    /// could not be asked whether it applied. It may have: read before retrying.
    #[error("commit result unknown in database {database:?}: it may or may not have been applied ({detail}); read the affected keys before retrying")]
    CommitResultUnknown { database: String, detail: String },

    #[error("the database is shutting down")]
    ShuttingDown,

    /// An error of the process that resolved this commit for this one (a cluster's leader,
    /// see [`crate::Store::forward_commit`]), with its class and message.
    #[error("{message}")]
    Forwarded { class: ErrorClass, message: String },

    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What kind of answer an error is, for a frontend that maps errors to protocol statuses:
/// each frontend turns a class into its own status in one place, so that every frontend
/// answers the same condition the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorClass {
    /// The request is wrong: fix it before sending it again.
    Invalid,
    /// The request is over a limit of the database.
    TooLarge,
    /// What the request names does not exist.
    NotFound,
    /// What the request would create exists already.
    Exists,
    /// Another writer got there first: retry the transaction from its start.
    Conflict,
    /// The commit may or may not have been applied: read before retrying.
    InDoubt,
    /// The store is locked by another process.
    Locked,
    /// The store cannot answer now (shutting down, unreachable): retry later.
    Unavailable,
    /// The store's disk has no room for the write, which was not applied: retry once room
    /// is freed.
    Full,
    /// The store failed or holds corrupt data.
    Internal,
}

impl EngineError {
    /// What kind of answer this error is.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::InvalidName { .. }
            | EngineError::InvalidMutation(_)
            | EngineError::InvalidRequest(_)
            | EngineError::VersionTooOld { .. }
            | EngineError::ChangesTruncated { .. }
            | EngineError::VersionInFuture { .. } => ErrorClass::Invalid,
            EngineError::LimitExceeded { .. } => ErrorClass::TooLarge,
            EngineError::DatabaseNotFound(_) => ErrorClass::NotFound,
            EngineError::DatabaseExists(_) => ErrorClass::Exists,
            EngineError::Conflict
            | EngineError::CheckFailed
            | EngineError::TransactionTooOld { .. }
            | EngineError::LeaseLost(_) => ErrorClass::Conflict,
            EngineError::CommitResultUnknown { .. } => ErrorClass::InDoubt,
            EngineError::ShuttingDown => ErrorClass::Unavailable,
            EngineError::Forwarded { class, .. } => *class,
            EngineError::Backend(BackendError::InDoubt(_)) => ErrorClass::InDoubt,
            EngineError::Backend(BackendError::Locked(_)) => ErrorClass::Locked,
            EngineError::Backend(BackendError::Full(_)) => ErrorClass::Full,
            EngineError::Backend(b) if b.is_transient() => ErrorClass::Unavailable,
            EngineError::Backend(_) | EngineError::Corrupt { .. } => ErrorClass::Internal,
        }
    }

    /// Whether retrying the same operation (a transaction from its start) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Conflict
            | EngineError::CheckFailed
            | EngineError::TransactionTooOld { .. } => true,
            EngineError::Forwarded { class, .. } => {
                matches!(class, ErrorClass::Conflict | ErrorClass::Unavailable)
            }
            EngineError::Backend(e) => e.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn limit(
        limit: &'static str,
        what: &'static str,
        actual: impl ToString,
        max: impl ToString,
    ) -> Self {
        EngineError::LimitExceeded {
            limit,
            what,
            actual: actual.to_string(),
            max: max.to_string(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
