//! Every suite on every backend, one test each, through the same runner as the binary.

use strata_conformance::{run_for_test, BackendKind};

fn exe() -> Option<std::path::PathBuf> {
    Some(env!("CARGO_BIN_EXE_strata-conformance").into())
}

macro_rules! matrix {
    ($($suite:ident),* $(,)?) => {
        mod memory { $( #[test] fn $suite() { strata_conformance::run_for_test(strata_conformance::BackendKind::Memory, stringify!($suite), super::exe()); } )* }
        mod redb { $( #[test] fn $suite() { strata_conformance::run_for_test(strata_conformance::BackendKind::Redb, stringify!($suite), super::exe()); } )* }
        mod sqlite { $( #[test] fn $suite() { strata_conformance::run_for_test(strata_conformance::BackendKind::Sqlite, stringify!($suite), super::exe()); } )* }
    };
}

matrix!(
    kv,
    limits,
    mvcc,
    transactions,
    watch,
    feed,
    expiry,
    queues,
    databases,
    group_commit,
    crash,
    multi_writer,
    sql,
    sql_crash,
    typed
);

#[test]
fn every_suite_is_in_the_matrix() {
    let listed = [
        "kv",
        "limits",
        "mvcc",
        "transactions",
        "watch",
        "feed",
        "expiry",
        "queues",
        "databases",
        "group_commit",
        "crash",
        "multi_writer",
        "sql",
        "sql_crash",
        "typed",
    ];
    let all: Vec<&str> = strata_conformance::suites::all()
        .iter()
        .filter(|s| !s.external)
        .map(|s| s.name)
        .collect();
    assert_eq!(all, listed, "add new suites to the matrix! macro");
    let _ = (run_for_test, BackendKind::Memory);
}
