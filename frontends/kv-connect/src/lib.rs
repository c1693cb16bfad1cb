//! # strata-kv-connect
//!
//! A KV Connect server: the protocol Deno KV's remote backend speaks (`Deno.openKv(url)` and
//! the `@deno/kv` npm client), over the Strata engine — plus the half the protocol lacks,
//! HTTP queue consumers (pull: lease/ack/nack; push: POST to a worker).
//!
//! Paths (every request is a `POST`):
//!
//! | path | what |
//! | --- | --- |
//! | `/` | metadata exchange for the `default` database |
//! | `/v2/snapshot_read`, `/v2/atomic_write`, `/v2/watch` | its data path |
//! | `/db/<name>` and `/db/<name>/v2/<op>` | the same for database `<name>` |
//! | `/queue/lease`, `/queue/ack`, `/queue/nack` | queue consumers (also under `/db/<name>`) |
//!
//! Invariants: a deterministic failure is never a 5xx (clients retry those forever), and
//! nothing is written unless the whole request was valid. Start with [`Server`].

mod auth;
mod codec;
mod datapath;
mod error;
pub mod proto;
mod push;
mod queue_http;
mod server;
mod time;

pub use error::ApiError;
pub use push::QueuePush;
pub use server::{Replicas, Server, ServerConfig, DEFAULT_DATABASE};
