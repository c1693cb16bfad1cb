//! The pull API for queue consumers in any language: lease a batch (long-polling when the
//! queue is empty), then ack or nack each message by its lease.
//!
//! ```text
//! POST /queue/lease {"max": 10, "visibility_ms": 30000, "wait_ms": 20000}
//!   -> {"messages": [{"id": "...", "lease": "...", "attempt": 1,
//!                     "lease_expires_at": 1700000000000, "encoding": "v8", "payload": "<base64>"}]}
//! POST /queue/ack  {"id": "...", "lease": "..."}   -> 204
//! POST /queue/nack {"id": "...", "lease": "..."}   -> 204
//! ```

use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use strata_engine::{Database, Encoding, MessageId};

use crate::error::ApiError;

const MAX_WAIT_MS: u64 = 60_000;
const MAX_LEASE: usize = 1000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    #[serde(default = "one")]
    max: usize,
    #[serde(default = "thirty_seconds")]
    visibility_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

fn one() -> usize {
    1
}

fn thirty_seconds() -> u64 {
    30_000
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleRequest {
    id: String,
    lease: String,
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("expected JSON {shape}: {e}")))
}

pub(crate) fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::V8 => "v8",
        Encoding::U64 => "u64",
        Encoding::Bytes | Encoding::Custom(_) => "bytes",
    }
}

pub(crate) async fn lease(db: &Database, body: &[u8]) -> Result<Response, ApiError> {
    let req: LeaseRequest = json(body, r#"{"max": N, "visibility_ms": MS, "wait_ms": MS}"#)?;
    if req.max == 0 || req.max > MAX_LEASE {
        return Err(ApiError::bad(format!(
            "max must be between 1 and {MAX_LEASE}, got {}",
            req.max
        )));
    }
    if req.visibility_ms == 0 || req.visibility_ms > 12 * 3600 * 1000 {
        return Err(ApiError::bad(
            "visibility_ms must be between 1 and 43200000 (12 hours)",
        ));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad(format!(
            "wait_ms must be at most {MAX_WAIT_MS}"
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms);
    let visibility = Duration::from_millis(req.visibility_ms);
    let messages = loop {
        let got = db.lease(req.max, visibility).await?;
        let now = Instant::now();
        if !got.is_empty() || now >= deadline {
            break got;
        }
        db.wait_for_queue(deadline - now).await?;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let out: Vec<serde_json::Value> = messages
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id.to_hex(),
                "lease": m.lease.to_string(),
                "attempt": m.attempt,
                "lease_expires_at": m.lease_expires_at,
                "encoding": encoding_name(m.payload.encoding),
                "payload": b64.encode(&m.payload.data),
            })
        })
        .collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "messages": out }).to_string(),
    )
        .into_response())
}

pub(crate) async fn settle(db: &Database, body: &[u8], ack: bool) -> Result<Response, ApiError> {
    let req: SettleRequest = json(body, r#"{"id": "...", "lease": "..."}"#)?;
    let id = MessageId::from_hex(&req.id)
        .ok_or_else(|| ApiError::bad(format!("invalid message id {:?}", req.id)))?;
    let lease: u64 = req
        .lease
        .parse()
        .map_err(|_| ApiError::bad(format!("invalid lease {:?}", req.lease)))?;
    if ack {
        db.ack(id, lease).await?;
    } else {
        db.nack(id, lease).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
