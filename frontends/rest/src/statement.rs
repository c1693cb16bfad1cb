//! The input rules for SQL sent over HTTP, checked before anything runs.
//!
//! A request carries exactly one statement (a trailing `;` is fine), at most
//! [`MAX_SQL_BYTES`] long. Statements that would reach outside the database (COPY to or
//! from files, ATTACH, LOAD, INSTALL, …) are refused, and so are the ones that would change
//! a pooled session for the next request (USE, SET, BEGIN outside a transaction). Each
//! statement is a read or a write, read from its syntax tree: the query endpoints take reads
//! only and `execute` takes writes only.

use strata_sql::datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement};
use strata_sql::Prepared;

use crate::error::{RestError, Result};

/// The longest SQL text a request may carry.
pub const MAX_SQL_BYTES: usize = 10 * 1024 * 1024;

/// What a statement does, as far as the endpoints care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Returns rows and changes nothing.
    Read,
    /// Changes data or schema.
    Write,
    /// SET, SHOW of a setting and the like: allowed inside an HTTP transaction only.
    SessionSetting,
}

/// Check the text's size before parsing it.
pub fn check_text(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(RestError::TooLarge(format!(
            "the SQL text is {} bytes; the limit is {MAX_SQL_BYTES} bytes (10 MiB)",
            sql.len()
        )));
    }
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(RestError::bad("the SQL text is empty"));
    }
    Ok(())
}

/// The one statement of `prepared`, classified; every rule but the endpoint's is checked.
pub fn classify(prepared: &Prepared) -> Result<Kind> {
    match prepared.len() {
        0 => return Err(RestError::bad("the SQL text is empty")),
        1 => {}
        n => {
            return Err(RestError::bad(format!(
                "one statement per request: the text holds {n}; send them one by one, in a \
                 transaction (POST /db/{{name}}/tx) if they belong together"
            )))
        }
    }
    // `REINDEX name`, which sqlparser does not parse, is the only statement without a tree.
    let Some(stmt) = prepared.statement(0) else {
        return Ok(Kind::Write);
    };
    statement_kind(stmt)
}

fn statement_kind(stmt: &Statement) -> Result<Kind> {
    let outside = |what: &str| {
        Err(RestError::bad(format!(
            "{what} reaches outside the database and is not allowed over HTTP"
        )))
    };
    Ok(match stmt {
        Statement::Query(q) => {
            if query_writes(q) {
                Kind::Write
            } else {
                Kind::Read
            }
        }
        Statement::Explain {
            statement, analyze, ..
        } => match statement_kind(statement)? {
            Kind::Write if *analyze => Kind::Write,
            _ => Kind::Read,
        },
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowFunctions { .. } => Kind::Read,
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::Set(_)
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Kind::SessionSetting,
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => outside("COPY")?,
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => {
            outside("ATTACH")?
        }
        Statement::DetachDuckDBDatabase { .. } => outside("DETACH")?,
        Statement::Load { .. } | Statement::LoadData { .. } => outside("LOAD")?,
        Statement::Install { .. } => outside("INSTALL")?,
        Statement::CreateExtension(_) => outside("CREATE EXTENSION")?,
        Statement::Unload { .. } | Statement::ExportData(_) => outside("UNLOAD")?,
        Statement::Directory { .. } => outside("INSERT OVERWRITE DIRECTORY")?,
        Statement::Pragma { .. } => outside("PRAGMA")?,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => {
            return Err(RestError::bad(
                "transactions over HTTP are opened with POST /db/{name}/tx and ended with \
                 POST /tx/{id}/commit or /tx/{id}/rollback; statements inside one carry \
                 its \"tx\"",
            ))
        }
        Statement::Use(_) => {
            return Err(RestError::bad(
                "USE is not needed over HTTP: the path names the database, and /query \
                 reads any database as db.public.table",
            ))
        }
        Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Prepare { .. }
        | Statement::Execute { .. }
        | Statement::Deallocate { .. }
        | Statement::Discard { .. } => {
            return Err(RestError::bad(
                "cursors and prepared statements do not outlive an HTTP request: send \
                 the statement itself, with \"params\" for its placeholders",
            ))
        }
        _ => Kind::Write,
    })
}

/// Whether a query changes data: a data-modifying body or CTE, or SELECT … INTO.
fn query_writes(q: &Query) -> bool {
    if let Some(with) = &q.with {
        if with.cte_tables.iter().any(|cte| query_writes(&cte.query)) {
            return true;
        }
    }
    set_expr_writes(&q.body)
}

fn set_expr_writes(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => query_writes(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_writes(left) || set_expr_writes(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        _ => false,
    }
}

/// The refusal when a statement of `kind` reaches an endpoint for the other kind.
pub fn require(kind: Kind, want: Kind, in_transaction: bool) -> Result<()> {
    match (kind, want) {
        (Kind::SessionSetting, _) if in_transaction => Ok(()),
        (Kind::SessionSetting, _) => Err(RestError::bad(
            "session settings do not outlive an HTTP request: open a transaction \
             (POST /db/{name}/tx) to run statements under a setting",
        )),
        (k, w) if k == w => Ok(()),
        (Kind::Write, _) => Err(RestError::bad(
            "this endpoint reads; send writes to POST /db/{name}/execute",
        )),
        _ => Err(RestError::bad(
            "execute is for writes; send queries to POST /db/{name}/query/oltp or POST /query",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Result<Kind> {
        classify(&Prepared::parse(sql).unwrap())
    }

    #[test]
    fn reads_and_writes_are_told_apart_by_their_syntax() {
        assert_eq!(kind("SELECT 1").unwrap(), Kind::Read);
        assert_eq!(kind("select * from t where id = 1;").unwrap(), Kind::Read);
        assert_eq!(
            kind("WITH a AS (SELECT 1) SELECT * FROM a").unwrap(),
            Kind::Read
        );
        assert_eq!(kind("EXPLAIN SELECT 1").unwrap(), Kind::Read);
        assert_eq!(kind("SHOW TABLES").unwrap(), Kind::Read);
        assert_eq!(kind("INSERT INTO t VALUES (1)").unwrap(), Kind::Write);
        assert_eq!(kind("UPDATE t SET a = 1").unwrap(), Kind::Write);
        assert_eq!(kind("DELETE FROM t").unwrap(), Kind::Write);
        assert_eq!(kind("CREATE TABLE t (id INT)").unwrap(), Kind::Write);
        assert_eq!(kind("DROP TABLE t").unwrap(), Kind::Write);
        assert_eq!(kind("SELECT * INTO t2 FROM t").unwrap(), Kind::Write);
        assert_eq!(kind("SET x = 1").unwrap(), Kind::SessionSetting);
    }

    #[test]
    fn several_statements_and_outside_access_are_refused() {
        let e = kind("SELECT 1; DROP TABLE users").unwrap_err();
        assert!(e.to_string().contains("one statement per request"), "{e}");
        assert!(kind("SELECT 1;").is_ok());
        for sql in [
            "COPY t TO '/tmp/out.csv'",
            "COPY t FROM '/etc/passwd'",
            "ATTACH DATABASE '/etc/passwd' AS pw",
            "LOAD 'evil.so'",
            "INSTALL httpfs",
        ] {
            let e = match Prepared::parse(sql) {
                Ok(p) => classify(&p).unwrap_err(),
                Err(e) => RestError::Sql(e),
            };
            assert_eq!(
                e.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{sql}: {e}"
            );
        }
        for sql in ["BEGIN", "COMMIT", "ROLLBACK", "USE other"] {
            assert!(kind(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn endpoints_take_their_own_kind() {
        assert!(require(Kind::Read, Kind::Read, false).is_ok());
        assert!(require(Kind::Write, Kind::Read, false).is_err());
        assert!(require(Kind::Read, Kind::Write, false).is_err());
        assert!(require(Kind::SessionSetting, Kind::Write, false).is_err());
        assert!(require(Kind::SessionSetting, Kind::Write, true).is_ok());
    }

    #[test]
    fn text_limits() {
        assert!(check_text("  ;  ").is_err());
        let big = "x".repeat(MAX_SQL_BYTES + 1);
        assert_eq!(
            check_text(&big).unwrap_err().status(),
            axum::http::StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
