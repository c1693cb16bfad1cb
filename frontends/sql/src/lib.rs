//! # strata-sql
//!
//! SQL over the engine: tables, secondary indexes and the catalog are key encodings in an
//! engine database (a layer in the FoundationDB sense), statements run in engine
//! transactions, and queries run through DataFusion over table providers that read the
//! transaction's snapshot.
//!
//! Two invariants carry the layer:
//!
//! * **Everything is keys** ([`codec`]): catalog entries, rows and index entries are tuples
//!   encoded by one order-preserving codec, so a key range is a value range, every backend
//!   works, and conflict detection covers schema, rows and indexes alike.
//! * **A statement is all or nothing** ([`session`]): a statement's writes go to its
//!   transaction only when it succeeds, and a row and its index entries are written in the
//!   same transaction.
//!
//! Where to look next: [`Session`] (the embedded API), `catalog.rs` (the schema as keys),
//! `table.rs` (the scan side of DataFusion), `dml.rs` (writes), `fastpath.rs` (point
//! statements that skip planning).

mod access;
mod catalog;
pub mod codec;
mod column_copy;
mod ddl;
mod describe;
mod dml;
mod error;
mod eval;
mod explain;
mod fastpath;
mod index;
mod pg_catalog;
mod plan_cache;
mod planner;
mod session;
pub mod shape;
pub mod stats;
mod subquery;
mod table;
mod tx;
mod types;

pub use catalog::{ColumnDef, IndexDef, TableDef};
pub use column_copy::{column_copy_bytes, set_column_copy_budget};
pub use describe::Description;
pub use error::{Result, SqlError};
pub use index::CheckReport;
pub use session::{Output, PlanCacheCounts, Prepared, QueryRows, Session};
pub use types::{parse_date, parse_timestamp, Datum, DatumRef, SqlType};

pub use datafusion;
/// The Arrow and DataFusion versions this crate speaks, for embedders that consume batches
/// or run DataFusion themselves next to it.
pub use datafusion::arrow;
