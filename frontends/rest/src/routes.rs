//! The endpoints. Handlers are thin: each reads its input, checks the input rules, and calls
//! into a SQL session or the engine, so the embedded API, PostgreSQL clients and HTTP
//! clients get the same answer to the same question.
//!
//! Database names may hold `/` (`project/mydb`), so every path under `/db/` is routed here
//! by its last segments ([`DbRoute::parse`]); the name is the rest, percent-decoded.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use strata_sql::{Datum, Output, Session, SqlError};

use crate::error::{ErrorBody, RestError, Result};
use crate::kv::{self, KvEntry, KvList, KvPage, KvSet, KvWritten};
use crate::queue::{self, DeadLettersPurged, PurgeQuery, QueueQuery, QueueView};
use crate::result::{self, JsonRows, ResultSet};
use crate::statement::{self, Kind};
use crate::App;

/// The largest request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The request header that chooses how a read outside a transaction is served: `strong`
/// (the default: the newest commit, on a cluster confirmed with the leader) or `eventual`
/// (this node's own copy as it is; on a cluster's follower it may be a little behind).
pub const READ_CONSISTENCY: &str = "strata-read-consistency";

/// Whether the request asks for eventual reads ([`READ_CONSISTENCY`]).
fn eventual(headers: &HeaderMap) -> Result<bool> {
    let Some(v) = headers.get(READ_CONSISTENCY) else {
        return Ok(false);
    };
    match v
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "eventual" => Ok(true),
        "strong" => Ok(false),
        _ => Err(RestError::bad(format!(
            "{READ_CONSISTENCY} is `strong` or `eventual`, not {v:?}"
        ))),
    }
}

/// `{"name": …}`: a database to create.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DbName {
    /// Letters, digits, `-`, `_` and `/` between segments; at most 128 characters.
    #[schema(pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128)]
    pub name: String,
}

/// `{"dropped": …}`
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dropped {
    pub dropped: String,
}

/// A statement to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SQL statement (a trailing `;` is fine), at most 10 MiB.
    #[schema(min_length = 1)]
    pub sql: String,
    /// Values for the placeholders `$1`, `$2`, … (or `?`), in order: null, booleans,
    /// numbers and strings.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub params: Vec<serde_json::Value>,
    /// Run inside this open transaction (from `POST /db/{name}/tx`).
    #[serde(default)]
    #[schema(pattern = r"^[0-9a-f]{32}$")]
    pub tx: Option<String>,
}

/// `{"affected": n}`
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Affected {
    /// Rows inserted, updated or deleted (0 for DDL).
    pub affected: u64,
    /// The commit version, when the statement committed writes: `AS OF` reads of it see
    /// the database as this statement left it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `{"status": "ok"}`
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// An open transaction.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TxOpened {
    /// Pass as `tx` with each statement, then commit or roll back.
    pub tx: String,
    /// The transaction is rolled back after this long without a request.
    pub idle_timeout_ms: u64,
}

/// How a transaction ended.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TxEnded {
    pub tx: String,
    /// `committed` or `rolled_back`.
    pub outcome: String,
    /// The commit version, when the commit wrote anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// How much of an over-limit body is read and dropped before the 413 is sent. A server
/// that answers and closes while the client is still sending makes the client's kernel
/// discard the answer when the close resets the connection; past this much, it may.
const OVER_LIMIT_DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Read a JSON body, with the body limit and clear errors.
pub async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = Vec::new();
    let mut over = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| RestError::bad(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if over > 0 || bytes.len() + data.len() > MAX_BODY_BYTES {
            over += data.len();
            bytes = Vec::new();
            if over > OVER_LIMIT_DRAIN_BYTES {
                break;
            }
        } else {
            bytes.extend_from_slice(&data);
        }
    }
    if over > 0 {
        return Err(RestError::TooLarge(format!(
            "the request body is over the {MAX_BODY_BYTES}-byte (16 MiB) limit"
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| RestError::bad(format!("the request body is not the expected JSON: {e}")))
}

fn params(values: &[serde_json::Value]) -> Result<Vec<Datum>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| result::param(v).map_err(|e| RestError::bad(format!("params[{i}]: {e}"))))
        .collect()
}

/// Validate a database name by the engine's rules.
fn db_name(name: &str) -> Result<()> {
    strata_engine::validate_name(name)
        .map(|_| ())
        .map_err(RestError::Engine)
}

/// Validate a table name: letters, digits and `_`, at most 128 characters.
fn table_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(RestError::bad("a table name is 1 to 128 characters long"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(RestError::bad(
            "a table name holds only letters, digits and '_'",
        ));
    }
    Ok(())
}

/// Run one statement of the wanted kind, in a pooled session or the request's transaction.
/// Returns its output and, when it committed writes, the commit version.
async fn run(
    app: &App,
    database: Option<&str>,
    req: SqlRequest,
    want: Kind,
    eventual: bool,
) -> Result<(Output, Option<u64>)> {
    statement::check_text(&req.sql)?;
    let params = params(&req.params)?;
    match &req.tx {
        Some(_) if eventual => Err(RestError::bad(format!(
            "a transaction reads its own snapshot: {READ_CONSISTENCY} applies to reads outside one"
        ))),
        Some(id) => {
            let tx = app.sessions.transaction(id)?;
            if let Some(db) = database {
                if db != tx.database {
                    return Err(RestError::bad(format!(
                        "transaction {id:?} is on database {:?}, not {db:?}",
                        tx.database
                    )));
                }
            }
            let mut session = tx.session.lock().await;
            let out = execute(&mut session, &req.sql, &params, want, true).await?;
            Ok((out, None))
        }
        None => {
            let db = database.unwrap_or("default");
            let mut session = app.sessions.session(db).await?;
            session.set_eventual_reads(eventual);
            let before = session.last_commit_version();
            let out = execute(&mut session, &req.sql, &params, want, false).await?;
            let after = session.last_commit_version();
            Ok((out, after.filter(|_| after != before)))
        }
    }
}

async fn execute(
    session: &mut Session,
    sql: &str,
    params: &[Datum],
    want: Kind,
    in_transaction: bool,
) -> Result<Output> {
    let prepared = if params.is_empty() {
        session.prepare_once(sql)?
    } else {
        session.prepare(sql)?
    };
    let kind = statement::classify(&prepared)?;
    statement::require(kind, want, in_transaction)?;
    Ok(session.execute_prepared(&prepared, 0, params).await?)
}

#[utoipa::path(get, path = "/health", tag = "server", security(()),
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/db", tag = "databases",
    responses((status = 200, description = "Every database, by name", body = Vec<String>),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn list_databases(State(app): State<Arc<App>>) -> Result<Json<Vec<String>>> {
    Ok(Json(app.engine().list_databases().await?))
}

#[utoipa::path(post, path = "/db", tag = "databases", request_body = DbName,
    responses((status = 201, description = "Created", body = DbName),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "It exists", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn create_database(State(app): State<Arc<App>>, body: Body) -> Result<Response> {
    let req: DbName = json_body(body).await?;
    db_name(&req.name)?;
    app.engine().create_database(&req.name, None).await?;
    Ok((StatusCode::CREATED, Json(req)).into_response())
}

#[utoipa::path(delete, path = "/db/{name}", tag = "databases",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128)),
    responses((status = 200, description = "Dropped", body = Dropped),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn drop_database(app: &App, name: &str) -> Result<Response> {
    db_name(name)?;
    app.engine().drop_database(name).await?;
    // After the drop: a session a request gives back meanwhile is forgotten too.
    app.sessions.forget(name);
    Ok(Json(Dropped {
        dropped: name.to_string(),
    })
    .into_response())
}

#[utoipa::path(post, path = "/db/{name}/execute", tag = "sql", request_body = SqlRequest,
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128)),
    responses((status = 200, description = "The statement ran", body = Affected),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A conflict; `retryable` says whether to retry", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn execute_sql(app: &App, name: &str, body: Body) -> Result<Response> {
    db_name(name)?;
    let req: SqlRequest = json_body(body).await?;
    let (out, version) = run(app, Some(name), req, Kind::Write, false).await?;
    let affected = match out {
        Output::Affected { rows } => rows,
        Output::Rows(rows) => rows.num_rows() as u64,
        Output::Done => 0,
    };
    Ok(Json(Affected { affected, version }).into_response())
}

#[utoipa::path(post, path = "/db/{name}/query/oltp", tag = "sql", request_body = SqlRequest,
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128),
        ("strata-read-consistency" = Option<String>, Header, description = "`strong` (the default) or `eventual`: this node's own copy, no round to a cluster's leader")),
    responses((status = 200, description = "The rows", body = ResultSet),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn query_oltp(
    app: &App,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    db_name(name)?;
    let eventual = eventual(headers)?;
    let req: SqlRequest = json_body(body).await?;
    let (out, _) = run(app, Some(name), req, Kind::Read, eventual).await?;
    rows(&out)
}

#[utoipa::path(post, path = "/query", tag = "sql", request_body = SqlRequest,
    params(("strata-read-consistency" = Option<String>, Header, description = "`strong` (the default) or `eventual`: this node's own copy, no round to a cluster's leader")),
    responses((status = 200, description = "The rows; tables are named db.public.table", body = ResultSet),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn query(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let eventual = eventual(&headers)?;
    let req: SqlRequest = json_body(body).await?;
    let (out, _) = run(&app, None, req, Kind::Read, eventual).await?;
    rows(&out)
}

/// A statement's rows as the response body (no rows for a statement without any).
fn rows(out: &Output) -> Result<Response> {
    let body = match out {
        Output::Rows(rows) => serde_json::to_vec(&JsonRows(rows)),
        _ => serde_json::to_vec(&ResultSet::default()),
    }
    .map_err(|e| SqlError::Internal(format!("encoding the result as JSON: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[utoipa::path(get, path = "/db/{name}/tables", tag = "sql",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128)),
    responses((status = 200, description = "The tables, by name", body = Vec<String>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn tables(app: &App, name: &str) -> Result<Response> {
    db_name(name)?;
    let mut session = app.sessions.session(name).await?;
    Ok(Json(session.tables().await?).into_response())
}

#[utoipa::path(get, path = "/db/{name}/schema/{table}", tag = "sql",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128),
        ("table" = String, Path, description = "The table", pattern = r"^[A-Za-z0-9_]{1,128}$")),
    responses((status = 200, description = "A row (name, type) per column", body = ResultSet),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn schema(app: &App, name: &str, table: &str) -> Result<Response> {
    db_name(name)?;
    table_name(table)?;
    let mut session = app.sessions.session(name).await?;
    let Some(def) = session.table_def(table).await? else {
        return Err(RestError::not_found(format!(
            "table {table:?} does not exist in database {name:?}"
        )));
    };
    let text = |s: &str| serde_json::Value::String(s.to_string());
    let columns = ["name", "type"]
        .iter()
        .map(|n| result::Column {
            name: n.to_string(),
            ty: "Utf8".into(),
        })
        .collect();
    let rows = def
        .columns
        .iter()
        .map(|c| vec![text(&c.name), text(&c.ty.name())])
        .collect();
    Ok(Json(ResultSet { columns, rows }).into_response())
}

#[utoipa::path(post, path = "/db/{name}/tx", tag = "transactions",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128)),
    responses((status = 201, description = "Opened", body = TxOpened),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn begin(app: &App, name: &str) -> Result<Response> {
    db_name(name)?;
    let tx = app.sessions.begin(name).await?;
    let opened = TxOpened {
        tx,
        idle_timeout_ms: app.sessions.idle_timeout().as_millis() as u64,
    };
    Ok((StatusCode::CREATED, Json(opened)).into_response())
}

#[utoipa::path(post, path = "/tx/{id}/commit", tag = "transactions",
    params(("id" = String, Path, description = "The transaction", pattern = r"^[0-9a-f]{32}$")),
    responses((status = 200, description = "Committed", body = TxEnded),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Not open (ended, or rolled back when idle)", body = ErrorBody),
        (status = 409, description = "A conflict: retry the transaction", body = ErrorBody),
        (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn commit(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<TxEnded>> {
    end(&app, id, "COMMIT").await
}

#[utoipa::path(post, path = "/tx/{id}/rollback", tag = "transactions",
    params(("id" = String, Path, description = "The transaction", pattern = r"^[0-9a-f]{32}$")),
    responses((status = 200, description = "Rolled back", body = TxEnded),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<TxEnded>> {
    end(&app, id, "ROLLBACK").await
}

async fn end(app: &App, id: String, how: &str) -> Result<Json<TxEnded>> {
    let tx = app.sessions.take(&id)?;
    let mut session = tx.session.lock().await;
    let failed = session.transaction_failed();
    let before = session.last_commit_version();
    session.execute(how).await?;
    let committed = how == "COMMIT" && !failed;
    let version = session
        .last_commit_version()
        .filter(|v| committed && Some(*v) != before);
    Ok(Json(TxEnded {
        tx: id,
        outcome: if committed {
            "committed"
        } else {
            "rolled_back"
        }
        .into(),
        version,
    }))
}

#[utoipa::path(get, path = "/db/{name}/kv/{key}", tag = "kv",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128),
        ("key" = String, Path, description = "The key (percent-encode `/`)", min_length = 1),
        ("strata-read-consistency" = Option<String>, Header, description = "`strong` (the default) or `eventual`: this node's own copy, no round to a cluster's leader")),
    responses((status = 200, description = "The entry", body = KvEntry),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn kv_get(app: &App, name: &str, key: &str, headers: &HeaderMap) -> Result<Response> {
    db_name(name)?;
    let db = reader(app, name, headers).await?;
    Ok(Json(kv::get(&db, key).await?).into_response())
}

/// The database to read from, strong or eventual as the request asks.
async fn reader(app: &App, name: &str, headers: &HeaderMap) -> Result<strata_engine::Database> {
    let eventual = eventual(headers)?;
    let db = app.engine().database(name).await?;
    Ok(if eventual { db.eventual() } else { db })
}

#[utoipa::path(put, path = "/db/{name}/kv/{key}", tag = "kv", request_body = KvSet,
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128),
        ("key" = String, Path, description = "The key (percent-encode `/`)", min_length = 1)),
    responses((status = 200, description = "Written", body = KvWritten),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn kv_set(app: &App, name: &str, key: &str, body: Body) -> Result<Response> {
    db_name(name)?;
    let req: KvSet = json_body(body).await?;
    let db = app.engine().database(name).await?;
    Ok(Json(kv::set(&db, key, req).await?).into_response())
}

#[utoipa::path(delete, path = "/db/{name}/kv/{key}", tag = "kv",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128),
        ("key" = String, Path, description = "The key (percent-encode `/`)", min_length = 1)),
    responses((status = 200, description = "Deleted (or was not set)", body = KvWritten),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn kv_delete(app: &App, name: &str, key: &str) -> Result<Response> {
    db_name(name)?;
    let db = app.engine().database(name).await?;
    Ok(Json(kv::delete(&db, key).await?).into_response())
}

#[utoipa::path(get, path = "/db/{name}/kv", tag = "kv",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128), KvList,
        ("strata-read-consistency" = Option<String>, Header, description = "`strong` (the default) or `eventual`: this node's own copy, no round to a cluster's leader")),
    responses((status = 200, description = "A page of entries", body = KvPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn kv_list(app: &App, name: &str, q: KvList, headers: &HeaderMap) -> Result<Response> {
    db_name(name)?;
    let db = reader(app, name, headers).await?;
    Ok(Json(kv::list(&db, q).await?).into_response())
}

#[utoipa::path(get, path = "/db/{name}/queue", tag = "queue",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128), QueueQuery),
    responses((status = 200, description = "The queue's depth, first messages and newest dead letters", body = QueueView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn queue_view(app: &App, name: &str, q: QueueQuery) -> Result<Response> {
    db_name(name)?;
    let db = app.engine().database(name).await?;
    Ok(Json(queue::view(&db, q).await?).into_response())
}

#[utoipa::path(delete, path = "/db/{name}/queue/dead-letters", tag = "queue",
    params(("name" = String, Path, description = "The database", pattern = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length = 128), PurgeQuery),
    responses((status = 200, description = "How many dead letters were forgotten; their payloads stay at their dead-letter keys", body = DeadLettersPurged),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn purge_dead_letters(app: &App, name: &str, q: PurgeQuery) -> Result<Response> {
    db_name(name)?;
    let db = app.engine().database(name).await?;
    Ok(Json(queue::purge(&db, q).await?).into_response())
}

/// What a path under `/db/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbRoute {
    Database(String),
    Execute(String),
    QueryOltp(String),
    Tables(String),
    Schema(String, String),
    Begin(String),
    KvList(String),
    KvItem(String, String),
    Queue(String),
    DeadLetters(String),
}

impl DbRoute {
    /// Route `rest`, the raw (still percent-encoded) path after `/db/`.
    pub fn parse(rest: &str) -> Result<DbRoute> {
        let segments: Vec<&str> = rest.split('/').collect();
        let decode = |s: &[&str]| -> Result<String> {
            let joined = s.join("/");
            percent_decode_str(&joined)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| RestError::bad("the path is not UTF-8"))
        };
        let n = segments.len();
        let tail = |k: usize| &segments[n - k..];
        let name = |k: usize| decode(&segments[..n - k]);
        let route = match segments.as_slice() {
            [_, .., "execute"] => DbRoute::Execute(name(1)?),
            [_, .., "query", "oltp"] => DbRoute::QueryOltp(name(2)?),
            [_, .., "tables"] => DbRoute::Tables(name(1)?),
            [_, .., "tx"] => DbRoute::Begin(name(1)?),
            [_, .., "schema", _] => DbRoute::Schema(name(2)?, decode(&tail(1)[..1])?),
            [_, .., "kv"] => DbRoute::KvList(name(1)?),
            [_, .., "queue"] => DbRoute::Queue(name(1)?),
            [_, .., "queue", "dead-letters"] => DbRoute::DeadLetters(name(2)?),
            [_, .., "kv", _] => DbRoute::KvItem(name(2)?, decode(&tail(1)[..1])?),
            _ => DbRoute::Database(decode(&segments)?),
        };
        Ok(route)
    }

    /// The methods the route answers.
    pub fn allow(&self) -> &'static str {
        match self {
            DbRoute::Database(_) | DbRoute::DeadLetters(_) => "DELETE",
            DbRoute::Execute(_) | DbRoute::QueryOltp(_) | DbRoute::Begin(_) => "POST",
            DbRoute::Tables(_) | DbRoute::Schema(..) | DbRoute::KvList(_) | DbRoute::Queue(_) => {
                "GET"
            }
            DbRoute::KvItem(..) => "GET, PUT, DELETE",
        }
    }

    /// The route's label in metrics, and its database.
    pub fn label(&self) -> (&'static str, &str) {
        match self {
            DbRoute::Database(n) => ("/db/{name}", n),
            DbRoute::Execute(n) => ("/db/{name}/execute", n),
            DbRoute::QueryOltp(n) => ("/db/{name}/query/oltp", n),
            DbRoute::Tables(n) => ("/db/{name}/tables", n),
            DbRoute::Schema(n, _) => ("/db/{name}/schema/{table}", n),
            DbRoute::Begin(n) => ("/db/{name}/tx", n),
            DbRoute::KvList(n) => ("/db/{name}/kv", n),
            DbRoute::KvItem(n, _) => ("/db/{name}/kv/{key}", n),
            DbRoute::Queue(n) => ("/db/{name}/queue", n),
            DbRoute::DeadLetters(n) => ("/db/{name}/queue/dead-letters", n),
        }
    }
}

/// The query string of `uri` as `T`; a 400 naming what is wrong with it.
fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| RestError::bad(format!("bad query string: {}", e.body_text())))
}

/// Every request under `/db/`: routed by path, then by method.
pub async fn db_dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    // Routed by the `observe` middleware already, unless the path did not parse.
    let parsed = match parts.extensions.remove::<DbRoute>() {
        Some(r) => Ok(r),
        None => DbRoute::parse(parts.uri.path().strip_prefix("/db/").unwrap_or_default()),
    };
    let route = match parsed {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let m = &parts.method;
    let answer = match (&route, m) {
        (DbRoute::Database(n), &Method::DELETE) => drop_database(&app, n).await,
        (DbRoute::Execute(n), &Method::POST) => execute_sql(&app, n, body).await,
        (DbRoute::QueryOltp(n), &Method::POST) => query_oltp(&app, n, &parts.headers, body).await,
        (DbRoute::Tables(n), &Method::GET) => tables(&app, n).await,
        (DbRoute::Schema(n, t), &Method::GET) => schema(&app, n, t).await,
        (DbRoute::Begin(n), &Method::POST) => begin(&app, n).await,
        (DbRoute::KvList(n), &Method::GET) => match query_of(&parts.uri) {
            Ok(q) => kv_list(&app, n, q, &parts.headers).await,
            Err(e) => Err(e),
        },
        (DbRoute::Queue(n), &Method::GET) => match query_of(&parts.uri) {
            Ok(q) => queue_view(&app, n, q).await,
            Err(e) => Err(e),
        },
        (DbRoute::DeadLetters(n), &Method::DELETE) => match query_of(&parts.uri) {
            Ok(q) => purge_dead_letters(&app, n, q).await,
            Err(e) => Err(e),
        },
        (DbRoute::KvItem(n, k), &Method::GET) => kv_get(&app, n, k, &parts.headers).await,
        (DbRoute::KvItem(n, k), &Method::PUT) => kv_set(&app, n, k, body).await,
        (DbRoute::KvItem(n, k), &Method::DELETE) => kv_delete(&app, n, k).await,
        (r, m) => Err(RestError::MethodNotAllowed {
            message: format!("{m} is not an operation of {}", r.label().0),
            allow: r.allow(),
        }),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_consistency_header_is_strong_eventual_or_refused() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(READ_CONSISTENCY, v.parse().unwrap());
            eventual(&h)
        };
        assert!(!eventual(&HeaderMap::new()).unwrap(), "strong by default");
        assert!(with("eventual").unwrap());
        assert!(with(" Eventual ").unwrap());
        assert!(!with("strong").unwrap());
        match with("sometimes") {
            Err(e) => {
                let r = e.into_response();
                assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            }
            Ok(v) => panic!("an unknown consistency is refused, not {v}"),
        }
    }

    #[test]
    fn paths_under_db_are_routed_by_their_last_segments() {
        let p = |s: &str| DbRoute::parse(s).unwrap();
        assert_eq!(p("mydb"), DbRoute::Database("mydb".into()));
        assert_eq!(p("project/mydb"), DbRoute::Database("project/mydb".into()));
        assert_eq!(
            p("project%2Fmydb"),
            DbRoute::Database("project/mydb".into())
        );
        assert_eq!(p("a/b/execute"), DbRoute::Execute("a/b".into()));
        assert_eq!(p("a/query/oltp"), DbRoute::QueryOltp("a".into()));
        assert_eq!(p("a/tables"), DbRoute::Tables("a".into()));
        assert_eq!(
            p("a/b/schema/t1"),
            DbRoute::Schema("a/b".into(), "t1".into())
        );
        assert_eq!(p("a/tx"), DbRoute::Begin("a".into()));
        assert_eq!(p("a/kv"), DbRoute::KvList("a".into()));
        assert_eq!(
            p("a/kv/users%2Fann"),
            DbRoute::KvItem("a".into(), "users/ann".into())
        );
        // A name alone that looks like an endpoint word is a database.
        assert_eq!(p("execute"), DbRoute::Database("execute".into()));
    }
}
