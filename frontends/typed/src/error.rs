//! The typed layer's errors: each names the tree and, where there is one, the key.

use crate::key::RawKey;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] strata_engine::EngineError),

    /// The stored bytes are not a valid record of the tree's type.
    #[error("record {key} is corrupt: {detail}")]
    Corrupt { key: RawKey, detail: String },

    /// The record was written by code at another schema version.
    #[error(
        "record {key} was written at schema version {stored} of tree {:?}; this code reads version {code}",
        key.tree
    )]
    SchemaVersion { key: RawKey, stored: u32, code: u32 },

    /// A key of one tree used with another.
    #[error("key {key} belongs to tree {:?}, not {expected:?}", key.tree)]
    WrongTree { key: RawKey, expected: &'static str },

    #[error("record {0} does not exist")]
    NotFound(RawKey),

    /// A released revision never changes and is never removed.
    #[error("record {0} is released: it cannot change; draft the next revision instead")]
    Released(RawKey),

    /// Releases and new revisions need a versioned tree, or the right state.
    #[error("{0}")]
    Revision(String),

    /// Someone else holds the record's check-out (or is ahead in the queue for it).
    #[error("record {key} is checked out by {holder:?} until {until_ms} ms since the epoch")]
    CheckedOut {
        key: RawKey,
        holder: String,
        until_ms: u64,
    },

    /// A change to a record needs its check-out, held by the tree handle's user.
    #[error("record {key} is not checked out by {user:?}: check it out before changing it")]
    NotCheckedOut { key: RawKey, user: String },

    /// Check-outs belong to a user: open the tree with [`crate::Tree::as_user`].
    #[error("tree {0:?} was opened without a user; check-outs need one (Tree::as_user)")]
    NoUser(&'static str),

    /// No indexer of that name was given to this tree handle.
    #[error("this handle of tree {tree:?} has no index {index:?} (see Tree::with_indexer)")]
    UnknownIndex { tree: &'static str, index: String },

    /// A replica inserts with ids its server reserved for it, and has none left.
    #[error("this replica has no ids left for new records of tree {0:?}: connect to the server (sync) to reserve more")]
    NoIds(&'static str),

    /// A replica's server is not the one it was made from.
    #[error("the server is {found}, but this replica belongs to server {expected}: refusing to sync with another server")]
    WrongServer { expected: String, found: String },

    /// The server could not be reached, or refused a call.
    #[error("sync: {0}")]
    Sync(String),

    /// The server refused a record this replica wrote (its local copy was replaced by the
    /// server's).
    #[error("the server refused record {key}: {reason}")]
    Refused { key: RawKey, reason: String },

    /// An event cursor that is not `version.within`.
    #[error("{0:?} is not an event cursor (expected version.within, as Cursor displays it)")]
    BadCursor(String),

    /// The record type's schema differs from the one stored for its schema version.
    #[error("tree {tree:?} already has a different schema stored at version {version}: the record type changed without a new schema version (raise `version`, and declare `previous`)")]
    SchemaConflict { tree: String, version: u32 },

    /// A record written without its type (`strata typed edit`) does not fit its schema, or
    /// cannot be written that way.
    #[error("{0}")]
    Edit(String),

    #[error("could not encode a record of tree {tree:?}: {detail}")]
    Encode { tree: &'static str, detail: String },
}
