//! # strata-typed
//!
//! Rust types stored as they are, with rkyv, in named trees of a Strata database.
//!
//! A record type is marked with [`record`]: `#[record(tree = "parts", version = 1)]`. That
//! gives it the rkyv and serde derives and implements [`Record`]: the tree it lives in, its
//! schema version, and whether its tree keeps released revisions. A [`Tree<T>`] reads and
//! writes records of `T`, each under a [`Key<T>`]: an id and a revision. A key of one tree
//! cannot be used with another (`Key<Part>` is not `Key<Stock>`), and a key that travelled
//! without its type ([`RawKey`]) is checked against the tree's name when it comes back.
//!
//! Reads of one record hand the archived form to a closure without deserializing it
//! ([`Tree::with`]); the bytes are validated first (bytecheck), since storage is not trusted:
//! a corrupt record is [`Error::Corrupt`], never garbage or a panic. Every record carries its
//! type's schema version; a record of another version than the code's is
//! [`Error::SchemaVersion`], naming both.
//!
//! ## Layout
//!
//! Every key starts with [`layout::PREFIX`] (`0xF1`), which no KV Connect or SQL key starts
//! with, so typed trees share a database with the other frontends:
//!
//! ```text
//! F1 01 <tree> 00 <id: u64 BE> <revision: u32 BE>   the record (envelope + rkyv archive)
//! F1 02 <tree> 00 <id> <revision>                   written once, when it was created
//! F1 03 <tree> 00                                   the tree's next id
//! F1 04 <tree> 00 <id>                              the record's check-out (JSON)
//! F1 05 <tree> 00 <index> 00 <term> 00 01 <id> <rev>  an index entry (see [`index`])
//! ```
//!
//! ## Check-out
//!
//! Changing a record (update, remove, release, next draft) needs its check-out: a lease
//! held by the tree handle's user ([`Tree::as_user`]), stored in the database like the
//! record, so it survives restarts. [`Tree::check_out`] takes it, or queues for it (first
//! come, first served) and waits; [`Tree::check_in`] gives it back; a lease not given back
//! expires and passes to the next in line. The write and the lease check are one
//! transaction, so a change commits only while its writer holds the record.
//!
//! The record's value is a 16-byte envelope header (magic `STRT`, format, flags, schema
//! version) followed by the archive, so the archive starts 16-byte aligned.

/// Run `body` (a block using `tx: &mut Transaction`, ending in a `Result`) in a
/// transaction and commit it; again from the start when the commit loses a conflict.
macro_rules! in_transaction {
    ($db:expr, |$tx:ident| $body:block) => {{
        let mut attempt = 0usize;
        $crate::events::ensure_feed(&$db).await?;
        loop {
            let mut txn = $db.begin().await?;
            let out = {
                let $tx = &mut txn;
                async { $body }.await?
            };
            match txn.commit().await {
                Ok(_) => break Ok::<_, $crate::Error>(out),
                Err(strata_engine::EngineError::Conflict) if attempt < $crate::tree::RETRIES => {
                    attempt += 1;
                    $crate::tree::backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }};
}

mod checkout;
mod error;
pub mod events;
pub mod index;
pub mod inspect;
pub mod json;
mod key;
pub mod layout;
pub mod schema;
#[cfg(feature = "sync")]
pub mod sync;
mod tree;
mod upstream;

pub use checkout::{Lease, Wait};
pub use error::{Error, Result};
pub use events::{Cursor, Event, EventKind, Events};
pub use index::{Indexer, NameIndex};
pub use key::{Key, RawKey};
pub use schema::{Describe, Schema};
pub use strata_typed_derive::{field_type, record, Describe};
pub use tree::{Meta, RevisionState, Tree, MIGRATE_CHUNK};

#[doc(hidden)]
pub use rkyv;
#[doc(hidden)]
pub use serde;

/// A type stored in a tree. Implemented by [`record`]; not by hand.
pub trait Record: Describe + Sized + Send + Sync + 'static {
    /// The tree's name.
    const TREE: &'static str;
    /// The version of the type's schema, stored with every record.
    const SCHEMA_VERSION: u32;
    /// Whether the tree keeps revisions: drafts, released (immutable) revisions, and new
    /// drafts from released ones. Otherwise every record is revision 0.
    const VERSIONED: bool;
    /// The archived form, read in place.
    type Archived;

    #[doc(hidden)]
    fn to_archive(&self) -> std::result::Result<rkyv::util::AlignedVec, rkyv::rancor::Error>;
    #[doc(hidden)]
    fn access(bytes: &[u8]) -> std::result::Result<&Self::Archived, rkyv::rancor::Error>;
    #[doc(hidden)]
    fn from_archived(archived: &Self::Archived) -> std::result::Result<Self, rkyv::rancor::Error>;

    /// With `compatible`: the record in the previous version's form, and that version, stored
    /// beside its own archive for code at that version to read.
    #[doc(hidden)]
    #[allow(clippy::type_complexity)]
    fn compat_archive(
        &self,
    ) -> Option<std::result::Result<(u32, rkyv::util::AlignedVec), rkyv::rancor::Error>> {
        None
    }

    /// The schema stored for this version (see [`schema`]).
    #[doc(hidden)]
    fn schema() -> Schema {
        Schema::of::<Self>()
    }

    /// `archive` (aligned), written at schema version `stored`, as a `Self`: read directly
    /// at this version, through the declared previous versions (`previous = Type`, and
    /// `From<Type>`) at an older one. `None`: no declared way from that version.
    fn read_version(
        stored: u32,
        archive: &[u8],
    ) -> Option<std::result::Result<Self, rkyv::rancor::Error>> {
        (stored == Self::SCHEMA_VERSION)
            .then(|| Self::access(archive).and_then(Self::from_archived))
    }
}
