//! The frontend's errors and the one place they become HTTP statuses.
//!
//! KV Connect clients show a 4xx body to the user and retry a 5xx with backoff, forever. So a
//! deterministic failure — bad input, a limit, a type error, a missing database — is always a
//! 4xx with a message naming the problem; only conditions a retry may cure are 5xx.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_engine::{EngineError, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Engine(e) => match e.class() {
                ErrorClass::Invalid | ErrorClass::TooLarge => StatusCode::BAD_REQUEST,
                ErrorClass::NotFound => StatusCode::NOT_FOUND,
                // Clients retry 5xx on their own, which could apply a commit twice: an
                // in-doubt commit is a 4xx, so the caller reads before it retries.
                ErrorClass::Exists
                | ErrorClass::Conflict
                | ErrorClass::InDoubt
                | ErrorClass::Locked => StatusCode::CONFLICT,
                ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                // Not applied, and retrying may succeed once room is freed.
                ErrorClass::Full => StatusCode::INSUFFICIENT_STORAGE,
                ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}
