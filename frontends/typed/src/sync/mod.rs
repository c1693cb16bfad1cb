//! Client/server sync over gRPC (tonic): [`serve`] a database's typed trees, and keep a
//! [`Replica`] of them in a client's own database (see `docs/typed.md`, "Sync").

/// The generated protocol (`proto/sync.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("strata.typed.v1");
}

mod replica;
mod server;

pub use replica::{Replica, ReplicaOptions, SyncReport};
pub use server::{serve, SyncService, Tokens, MAX_PUSH, MAX_RESERVATION};
