//! The suites. Each module is one suite: `pub fn suite() -> Suite`.

use crate::Suite;

pub mod clients;
pub mod crash;
pub mod databases;
pub mod dynamodb;
pub mod expiry;
pub mod feed;
pub mod group_commit;
pub mod kv;
pub mod limits;
pub mod linearizability;
pub mod multi_writer;
pub mod mvcc;
pub mod pg_clients;
pub mod queues;
pub mod replication;
pub mod rest;
pub mod server;
pub mod sql;
pub mod sql_crash;
pub mod transactions;
pub mod typed;
pub mod typed_sync;
pub mod watch;

/// Build a case list from async fns `fn(&Harness) -> CaseResult`.
#[macro_export]
macro_rules! cases {
    ($($f:ident),* $(,)?) => {
        vec![$($crate::Case { name: stringify!($f), run: |h| Box::pin($f(h)) }),*]
    };
}

pub fn all() -> Vec<Suite> {
    vec![
        kv::suite(),
        limits::suite(),
        mvcc::suite(),
        transactions::suite(),
        watch::suite(),
        feed::suite(),
        expiry::suite(),
        queues::suite(),
        databases::suite(),
        group_commit::suite(),
        crash::suite(),
        multi_writer::suite(),
        sql::suite(),
        sql_crash::suite(),
        typed::suite(),
        clients::deno_suite(),
        clients::node_suite(),
        server::suite(),
        typed_sync::suite(),
        pg_clients::suite(),
        rest::suite(),
        dynamodb::suite(),
        linearizability::suite(),
        replication::suite(),
    ]
}
