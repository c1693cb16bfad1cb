//! A database's queue as an operator inspects it: how many messages wait or are leased, the
//! first of them, and the messages the queue gave up on (dead letters), newest first.
//!
//! Messages are enqueued and consumed through KV Connect or the engine API; here an operator
//! only looks, and forgets dead letters ([`purge`]).

use serde::{Deserialize, Serialize};
use strata_engine::{Database, QueueEntry};

use crate::error::{RestError, Result};
use crate::kv::{show_key, value_json};

/// How many messages of each list a view shows unless asked.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// The query of a queue view.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// At most this many messages in each list (default 50, at most 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The query of a dead-letter purge.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    /// Forget only the dead letters given up on before this time, ms since the Unix epoch
    /// (default: all of them).
    #[serde(default)]
    pub before: Option<u64>,
}

/// What a purge did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLettersPurged {
    /// Dead letters forgotten.
    pub purged: u64,
}

/// Forget a database's dead letters (those given up on before `before`, or all), oldest
/// first. Their payloads stay at their dead-letter keys.
pub async fn purge(db: &Database, q: PurgeQuery) -> Result<DeadLettersPurged> {
    let before = q.before.unwrap_or(u64::MAX);
    Ok(DeadLettersPurged {
        purged: db.purge_dead_letters(before).await? as u64,
    })
}

/// A database's queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    /// Messages waiting or leased.
    pub depth: u64,
    /// The first of them, in the order they were enqueued.
    pub messages: Vec<QueuedMessage>,
    /// Messages given up on after their last delivery attempt.
    pub dead_letter_count: u64,
    /// The newest of them.
    pub dead_letters: Vec<QueuedMessage>,
}

/// One message.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueuedMessage {
    /// The message's id (hex).
    pub id: String,
    /// When it is next deliverable, ms since the Unix epoch; for a dead letter, when it was
    /// given up on.
    pub ready_at: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// Delivered, with its lease still running.
    pub leased: bool,
    /// `ready`, `scheduled` (ready later), `leased`, or `dead` (a dead letter), by the
    /// server's clock: a client's clock may differ.
    pub state: String,
    /// `text`, `bytes` (base64), `u64` or `v8` (base64; written by Deno).
    pub encoding: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The keys its payload is written to when delivery is given up on (`\xNN` for bytes
    /// that are not printable).
    pub dead_letter_keys: Vec<String>,
}

impl QueuedMessage {
    fn new(m: QueueEntry, dead: bool, now_ms: u64) -> Self {
        let (payload, encoding) = value_json(&m.payload);
        let state = match (dead, m.leased) {
            (true, _) => "dead",
            (false, true) => "leased",
            (false, false) if m.ready_at > now_ms => "scheduled",
            (false, false) => "ready",
        };
        QueuedMessage {
            id: m.id.to_hex(),
            ready_at: m.ready_at,
            attempts: m.attempts,
            leased: m.leased,
            state: state.to_string(),
            encoding: encoding.to_string(),
            payload,
            dead_letter_keys: m.dead_letter_keys.iter().map(|k| show_key(k)).collect(),
        }
    }
}

pub async fn view(db: &Database, q: QueueQuery) -> Result<QueueView> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(RestError::bad(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let now = strata_engine::now_ms();
    let list = |messages: Vec<QueueEntry>, dead: bool| {
        messages
            .into_iter()
            .map(|m| QueuedMessage::new(m, dead, now))
            .collect()
    };
    Ok(QueueView {
        depth: db.queue_len().await? as u64,
        messages: list(db.queued(limit).await?, false),
        dead_letter_count: db.dead_letter_count().await? as u64,
        dead_letters: list(db.dead_letters(limit).await?, true),
    })
}
