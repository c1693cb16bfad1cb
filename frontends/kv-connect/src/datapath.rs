//! The data path: `snapshot_read`, `atomic_write` and the streaming `watch`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use prost::Message;
use strata_engine::{CommitOutcome, Database, Entry, ReadAt, Watch};

use crate::codec;
use crate::error::ApiError;
use crate::proto;

fn decode<M: Message + Default>(body: &[u8], what: &str) -> Result<M, ApiError> {
    M::decode(body).map_err(|e| ApiError::bad(format!("malformed {what} request: {e}")))
}

fn protobuf(msg: impl Message) -> Result<Response, ApiError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Body::from(msg.encode_to_vec()))
        .map_err(|e| ApiError::bad(e.to_string()))
}

pub(crate) async fn snapshot_read(db: &Database, body: &[u8]) -> Result<Response, ApiError> {
    let req: proto::SnapshotRead = decode(body, "snapshot_read")?;
    let ranges = codec::read_ranges(req)?;
    let read = db.snapshot_read(&ranges, ReadAt::Latest).await?;
    protobuf(proto::SnapshotReadOutput {
        ranges: read
            .ranges
            .into_iter()
            .map(|entries| proto::ReadRangeOutput {
                values: entries.into_iter().map(codec::entry_to_wire).collect(),
            })
            .collect(),
        read_disabled: false,
        read_is_strongly_consistent: !db.is_eventual(),
        status: proto::SnapshotReadStatus::SrSuccess as i32,
    })
}

pub(crate) async fn atomic_write(db: &Database, body: &[u8]) -> Result<Response, ApiError> {
    let req: proto::AtomicWrite = decode(body, "atomic_write")?;
    let write = codec::atomic_write(req)?;
    let out = match db.atomic_write(write).await? {
        CommitOutcome::Committed(vs) => proto::AtomicWriteOutput {
            status: proto::AtomicWriteStatus::AwSuccess as i32,
            versionstamp: vs.0.to_vec(),
            failed_checks: vec![],
        },
        CommitOutcome::CheckFailed(failed) => proto::AtomicWriteOutput {
            status: proto::AtomicWriteStatus::AwCheckFailure as i32,
            versionstamp: vec![],
            failed_checks: failed.into_iter().map(|i| i as u32).collect(),
        },
    };
    protobuf(out)
}

/// One frame of the watch stream: `u32` little-endian length, then the message.
fn frame(msg: Option<proto::WatchOutput>) -> Vec<u8> {
    let body = msg.map(|m| m.encode_to_vec()).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

struct WatchStream {
    watch: Watch,
    keepalive: Duration,
}

impl WatchStream {
    /// The next frame: changes (all keys the first time), or a keepalive.
    async fn next_frame(&mut self) -> Option<Result<Vec<u8>, std::io::Error>> {
        let entries: Vec<Option<Entry>> = tokio::select! {
            r = self.watch.next() => match r {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, "watch ended");
                    return None;
                }
            },
            _ = tokio::time::sleep(self.keepalive) => return Some(Ok(frame(None))),
        };
        // Every frame reports every key as changed with its current entry: Deno's built-in
        // client reads an unchanged key as deleted, and all clients de-duplicate by versionstamp.
        let keys = entries
            .into_iter()
            .map(|e| proto::WatchKeyOutput {
                changed: true,
                entry_if_changed: e.map(codec::entry_to_wire),
            })
            .collect();
        Some(Ok(frame(Some(proto::WatchOutput {
            status: proto::SnapshotReadStatus::SrSuccess as i32,
            keys,
        }))))
    }
}

pub(crate) fn watch(db: &Database, body: &[u8], keepalive: Duration) -> Result<Response, ApiError> {
    let req: proto::Watch = decode(body, "watch")?;
    let keys: Vec<Vec<u8>> = req.keys.into_iter().map(|k| k.key).collect();
    let watch = db.watch(keys)?;
    let stream =
        futures_util::stream::unfold(WatchStream { watch, keepalive }, |mut s| async move {
            s.next_frame().await.map(|f| (f, s))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::bad(e.to_string()))
}
