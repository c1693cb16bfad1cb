//! The REST frontend's error, and the one place errors become HTTP statuses.
//!
//! Every answer that is not a success is `{"error": "…"}` with its status; a conflict also
//! says `"retryable": true` when running the same request (or transaction) again may
//! succeed. Input never causes a 5xx: a 5xx means the store failed or is unavailable.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use strata_engine::{EngineError, ErrorClass};
use strata_sql::SqlError;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The request is malformed or breaks an input rule.
    #[error("{0}")]
    BadRequest(String),
    /// No token, or the wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// The path names nothing we serve, or an object that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The body or the SQL text is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// The method is not one this path answers; `allow` lists the ones it does.
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        allow: &'static str,
    },
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The body of an error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
    /// Present on conflicts: whether the same request (or transaction) may succeed if run
    /// again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl RestError {
    pub fn bad(msg: impl Into<String>) -> Self {
        RestError::BadRequest(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        RestError::NotFound(msg.into())
    }

    /// The status of this error: the only place a status is chosen for an error.
    pub fn status(&self) -> StatusCode {
        match self {
            RestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RestError::NotFound(_) => StatusCode::NOT_FOUND,
            RestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RestError::Engine(e) => class_status(e.class()),
            RestError::Sql(e) => match e {
                SqlError::Engine(e) => class_status(e.class()),
                SqlError::UndefinedObject { .. } => StatusCode::NOT_FOUND,
                SqlError::DuplicateObject { .. }
                | SqlError::UniqueViolation { .. }
                | SqlError::ForeignKeyViolation { .. }
                | SqlError::Serialization(_) => StatusCode::CONFLICT,
                SqlError::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
                SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                SqlError::Syntax(_)
                | SqlError::Unsupported(_)
                | SqlError::UndefinedColumn { .. }
                | SqlError::DataType(_)
                | SqlError::ValueTooLong { .. }
                | SqlError::NotNullViolation { .. }
                | SqlError::CheckViolation { .. }
                | SqlError::DivisionByZero
                | SqlError::InvalidTransactionState(_)
                | SqlError::InFailedTransaction
                | SqlError::InvalidParameter(_)
                | SqlError::SchemaChanged(_)
                | SqlError::Query(_) => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// Whether the same request may succeed if sent again (only said on conflicts).
    fn retryable(&self) -> Option<bool> {
        if self.status() != StatusCode::CONFLICT {
            return None;
        }
        Some(match self {
            RestError::Sql(e) => e.is_retryable(),
            RestError::Engine(e) => e.is_retryable(),
            _ => false,
        })
    }
}

fn class_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Invalid => StatusCode::BAD_REQUEST,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Exists | ErrorClass::Conflict | ErrorClass::InDoubt | ErrorClass::Locked => {
            StatusCode::CONFLICT
        }
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Full => StatusCode::INSUFFICIENT_STORAGE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            retryable: self.retryable(),
        };
        let mut res = (status, Json(body)).into_response();
        // A body refused before it was read whole leaves the rest of it on the connection:
        // close it, so that no client sends its next request after the unread bytes.
        if matches!(self, RestError::TooLarge(_)) {
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let RestError::MethodNotAllowed { allow, .. } = self {
            res.headers_mut().insert(
                axum::http::header::ALLOW,
                axum::http::HeaderValue::from_static(allow),
            );
        }
        res
    }
}

pub type Result<T, E = RestError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::BackendError;

    #[test]
    fn each_kind_of_error_has_its_status() {
        let syntax = RestError::Sql(SqlError::Syntax("near x".into()));
        assert_eq!(syntax.status(), StatusCode::BAD_REQUEST);
        let conflict = RestError::Sql(SqlError::Serialization("retry".into()));
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert_eq!(conflict.retryable(), Some(true));
        let unique = RestError::Sql(SqlError::UniqueViolation {
            table: "t".into(),
            constraint: "t_pkey".into(),
        });
        assert_eq!(unique.status(), StatusCode::CONFLICT);
        assert_eq!(unique.retryable(), Some(false));
        let missing = RestError::Engine(EngineError::DatabaseNotFound("x".into()));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.retryable(), None);
        let down = RestError::Engine(EngineError::ShuttingDown);
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let big = RestError::Sql(SqlError::LimitExceeded("key".into()));
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let enospc = std::io::Error::from_raw_os_error(28);
        let full = RestError::Engine(EngineError::Backend(BackendError::io("db.redb", &enospc)));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        let through_sql = RestError::Sql(SqlError::Engine(EngineError::Backend(enospc.into())));
        assert_eq!(through_sql.status(), StatusCode::INSUFFICIENT_STORAGE);
    }
}
