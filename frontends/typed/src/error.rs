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

    #[error("could not encode a record of tree {tree:?}: {detail}")]
    Encode { tree: &'static str, detail: String },
}
