//! The SQL layer's error: one enum, each variant carrying the SQLSTATE a client sees.
//!
//! Every error names the object it concerns where there is one. Nothing that reaches this
//! type has changed the database: statements apply their writes only when they succeed.

use strata_engine::{EngineError, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not SQL we can parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Parsed, but not something this database does.
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{kind} {name:?} does not exist")]
    UndefinedObject { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    DuplicateObject { kind: &'static str, name: String },
    #[error("column {column:?} does not exist{}", if table.is_empty() { String::new() } else { format!(" in {table:?}") })]
    UndefinedColumn { table: String, column: String },
    /// A value that does not fit its column or operator.
    #[error("{0}")]
    DataType(String),
    #[error("value too long for {column:?}: {detail}")]
    ValueTooLong { column: String, detail: String },
    #[error("duplicate key value violates unique constraint {constraint:?} on {table:?}")]
    UniqueViolation { table: String, constraint: String },
    #[error("null value in column {column:?} of {table:?} violates not-null constraint")]
    NotNullViolation { table: String, column: String },
    #[error("new row for {table:?} violates check constraint {constraint:?}")]
    CheckViolation { table: String, constraint: String },
    #[error("{detail} violates foreign key constraint {constraint:?} on {table:?}")]
    ForeignKeyViolation {
        table: String,
        constraint: String,
        detail: String,
    },
    #[error("division by zero")]
    DivisionByZero,
    /// Transaction state: COMMIT without BEGIN, BEGIN twice, a write in READ ONLY.
    #[error("{0}")]
    InvalidTransactionState(String),
    /// A statement inside a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// Conflicts and too-old transactions: retry the transaction from BEGIN.
    #[error("could not serialize access: {0}")]
    Serialization(String),
    /// A limit of the engine (key, value or transaction size).
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidParameter(String),
    /// The catalog changed under a prepared plan in a way that cannot be re-planned.
    #[error("cached plan must be re-planned: {0}")]
    SchemaChanged(String),
    /// A failure of the engine or its store that the statement could not avoid.
    #[error(transparent)]
    Engine(EngineError),
    /// An error from the query engine.
    #[error("{0}")]
    Query(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// The five-character SQLSTATE of this error, as PostgreSQL would report it.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Syntax(_) => "42601",
            SqlError::Unsupported(_) => "0A000",
            SqlError::UndefinedObject { kind, .. } => match *kind {
                "database" => "3D000",
                "function" => "42883",
                _ => "42P01",
            },
            SqlError::DuplicateObject { kind, .. } => match *kind {
                "database" => "42P04",
                "column" => "42701",
                _ => "42P07",
            },
            SqlError::UndefinedColumn { .. } => "42703",
            SqlError::DataType(_) => "22000",
            SqlError::ValueTooLong { .. } => "22001",
            SqlError::UniqueViolation { .. } => "23505",
            SqlError::NotNullViolation { .. } => "23502",
            SqlError::CheckViolation { .. } => "23514",
            SqlError::ForeignKeyViolation { .. } => "23503",
            SqlError::DivisionByZero => "22012",
            SqlError::InvalidTransactionState(_) => "25000",
            SqlError::InFailedTransaction => "25P02",
            SqlError::Serialization(_) => "40001",
            SqlError::LimitExceeded(_) => "54000",
            SqlError::InvalidParameter(_) => "22023",
            SqlError::SchemaChanged(_) => "0A000",
            // PostgreSQL's statement_completion_unknown: it may or may not have committed.
            SqlError::Engine(EngineError::CommitResultUnknown { .. }) => "40003",
            SqlError::Engine(e) if e.is_retryable() => "40001",
            SqlError::Engine(EngineError::DatabaseNotFound(_)) => "3D000",
            SqlError::Engine(EngineError::LimitExceeded { .. }) => "54000",
            SqlError::Engine(e) if e.class() == ErrorClass::Full => "53100",
            SqlError::Engine(_) => "58000",
            SqlError::Query(_) => "42000",
            SqlError::Internal(_) => "XX000",
        }
    }

    /// Whether running the whole transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.sqlstate() == "40001"
    }
}

impl From<EngineError> for SqlError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Conflict
            | EngineError::CheckFailed
            | EngineError::TransactionTooOld { .. } => SqlError::Serialization(e.to_string()),
            EngineError::LimitExceeded { .. } => SqlError::LimitExceeded(e.to_string()),
            EngineError::DatabaseNotFound(name) => SqlError::UndefinedObject {
                kind: "database",
                name,
            },
            other => SqlError::Engine(other),
        }
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::types::from_datafusion(e)
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for SqlError {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        SqlError::Syntax(e.to_string())
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::BackendError;

    #[test]
    fn a_full_disk_is_disk_full_and_other_storage_failures_are_system_errors() {
        let enospc = std::io::Error::from_raw_os_error(28);
        let full = SqlError::Engine(EngineError::Backend(BackendError::io("t.redb", &enospc)));
        assert_eq!(full.sqlstate(), "53100");
        assert!(!full.is_retryable());
        let eio = std::io::Error::from_raw_os_error(5);
        let failed = SqlError::Engine(EngineError::Backend(BackendError::io("t.redb", &eio)));
        assert_eq!(failed.sqlstate(), "58000");
    }
}
