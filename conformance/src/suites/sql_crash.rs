//! SQL crash safety, for backends that persist: a process killed with SIGKILL in the middle
//! of a large multi-row INSERT leaves all of it or none of it, and every index still
//! matches its table (`Session::check`, what `strata sql check` runs).
//!
//! The child (this crate's runner binary, `sql-bulk-writer` mode) creates the table, prints
//! `ready`, and runs one INSERT of [`ROWS`] rows, printing `done` if it ever finishes. The
//! parent kills it as soon as it reads `ready`: whether the kill lands during the insert or
//! after it, the outcome must be all or nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use strata_engine::Engine;
use strata_sql::{Datum, Output, Session};

use crate::{cases, ensure, open_backend, BackendKind, CaseResult, Harness, Step, Suite};

/// Rows in the killed INSERT.
pub const ROWS: i64 = 20_000;

pub fn suite() -> Suite {
    Suite {
        name: "sql_crash",
        needs_persistence: true,
        needs_multi_writer: false,
        external: false,
        cases: cases![a_killed_bulk_insert_leaves_all_or_nothing],
    }
}

/// The child: create the table, say `ready`, insert [`ROWS`] rows in one statement.
pub async fn sql_bulk_writer(kind: BackendKind, dir: &Path) -> Result<(), String> {
    let backend = open_backend(kind, dir).await?;
    let engine = Arc::new(Engine::new(backend, strata_engine::EngineConfig::default()));
    let mut s = Session::new(engine);
    s.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, tag TEXT)")
        .await
        .map_err(|e| e.to_string())?;
    s.execute("CREATE INDEX bulk_v ON bulk (v)")
        .await
        .map_err(|e| e.to_string())?;
    println!("ready");
    s.execute(&format!(
        "INSERT INTO bulk SELECT value, value % 97, 'row ' || value FROM generate_series(1, {ROWS})"
    ))
    .await
    .map_err(|e| e.to_string())?;
    println!("done");
    Ok(())
}

async fn a_killed_bulk_insert_leaves_all_or_nothing(h: &Harness) -> CaseResult {
    if h.kind == BackendKind::Dynamodb {
        return Err("SKIP: the DynamoDB crash behaviour is covered by the dynamodb suite".into());
    }
    let mut child = super::crash::spawn_child(h, "sql-bulk-writer", &[])?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => {}
        other => return Err(format!("the writer did not get ready: {other:?}")),
    }
    child.start_kill().map_err(|e| e.to_string())?; // SIGKILL
    child.wait().await.map_err(|e| e.to_string())?;
    let engine = Arc::new(h.engine());
    let mut s = Session::new(engine);
    let count = match s.execute("SELECT count(*) FROM bulk").await.step("count")? {
        Output::Rows(r) => r.rows().step("rows")?,
        other => return Err(format!("count: {other:?}")),
    };
    ensure!(
        count == vec![vec![Datum::Int(0)]] || count == vec![vec![Datum::Int(ROWS)]],
        "a killed INSERT is partly there: {count:?}"
    );
    for r in s.check().await.step("check")? {
        ensure!(r.problems.is_empty(), "table {}: {:?}", r.table, r.problems);
    }
    // The database goes on: the insert can run again, to completion.
    s.execute("DELETE FROM bulk").await.step("delete")?;
    s.execute(&format!(
        "INSERT INTO bulk SELECT value, value % 97, 'row ' || value FROM generate_series(1, {ROWS})"
    ))
    .await
    .step("insert again")?;
    for r in s.check().await.step("check")? {
        ensure!(r.problems.is_empty(), "table {}: {:?}", r.table, r.problems);
    }
    Ok(())
}
