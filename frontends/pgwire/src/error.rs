//! The one place where errors become PostgreSQL ErrorResponses.
//!
//! A SQL error keeps the SQLSTATE the SQL layer gave it (40001 for a serialization
//! conflict, 23505 for a unique violation …) and its message. Protocol errors (a bad
//! parameter, an unknown statement) get the codes PostgreSQL uses for them.

use pgwire::error::{ErrorInfo, PgWireError};
use strata_sql::SqlError;

/// An `ERROR` with `code` and `message`.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// A `FATAL` error: the server closes the connection after sending it.
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// The ErrorResponse fields of a SQL error.
pub fn sql_error_info(e: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_owned(), e.sqlstate().to_owned(), e.to_string());
    match e {
        SqlError::UniqueViolation { table, constraint }
        | SqlError::CheckViolation { table, constraint }
        | SqlError::ForeignKeyViolation {
            table, constraint, ..
        } => {
            info.table = Some(table.clone());
            info.constraint = Some(constraint.clone());
        }
        SqlError::NotNullViolation { table, column }
        | SqlError::UndefinedColumn { table, column } => {
            if !table.is_empty() {
                info.table = Some(table.clone());
            }
            info.column = Some(column.clone());
        }
        SqlError::Serialization(_) => {
            info.hint = Some("retry the transaction from its start".to_owned());
        }
        _ => {}
    }
    info
}

pub fn sql_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(sql_error_info(&e)))
}

/// Protocol errors with the codes PostgreSQL gives them where the library's differ.
pub fn protocol(e: PgWireError, user: Option<&str>) -> PgWireError {
    match e {
        PgWireError::InvalidPassword(_) => fatal(
            "28P01",
            format!(
                "password authentication failed for user \"{}\"",
                user.unwrap_or_default()
            ),
        ),
        PgWireError::PortalNotFound(name) => {
            user_error("34000", format!("portal \"{name}\" does not exist"))
        }
        PgWireError::StatementNotFound(name) => user_error(
            "26000",
            format!("prepared statement \"{name}\" does not exist"),
        ),
        other => other,
    }
}
