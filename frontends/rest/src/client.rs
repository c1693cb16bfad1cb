//! A small typed client of the REST API, with the method names of the embedded API
//! (`create_database`, `list_databases`, `drop_database`, `execute`, …): what
//! `strata db … --url` and `strata sql --url http://…` use against a running server.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::kv::{KvEntry, KvPage, KvWritten};
use crate::queue::{DeadLettersPurged, QueueView};
use crate::result::ResultSet;
use crate::routes::{Affected, DbName, Dropped, Health, TxEnded, TxOpened};

/// What a call to the server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or answered something that is not this API.
    #[error("{0}")]
    Transport(String),
    /// The server refused the request.
    #[error("{error} (HTTP {status})")]
    Refused {
        status: u16,
        error: String,
        /// Whether the same request (or transaction) may succeed if sent again.
        retryable: bool,
    },
}

pub type ClientResult<T> = std::result::Result<T, ClientError>;

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// Ask for eventual reads ([`Client::eventual`]).
    eventual: bool,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

/// Percent-encode one path segment (a key or a table name); database names keep their `/`.
fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn db_path(name: &str) -> String {
    name.split('/').map(segment).collect::<Vec<_>>().join("/")
}

impl Client {
    /// A client of the server at `url` (`http://host:port`), sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> ClientResult<Client> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ClientError::Transport(format!(
                "{url}: the REST client speaks http:// (put TLS in front of the server with a proxy)"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            base,
            token,
            eventual: false,
            http,
        })
    }

    /// The same client, asking for eventual reads: each read outside a transaction takes
    /// the server's own copy as it is (on a cluster's follower, no round to the leader).
    pub fn eventual(&self) -> Client {
        Client {
            eventual: true,
            ..self.clone()
        }
    }

    /// Send a request; the status and the JSON body (`null` when the body is not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<(StatusCode, Value)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if self.eventual {
            req = req.header(crate::routes::READ_CONSISTENCY, "eventual");
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(
                    serde_json::to_vec(b).map_err(|e| ClientError::Transport(e.to_string()))?,
                )
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let res = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("{}: {e}", self.base)))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> ClientResult<T> {
        let (status, value) = self.request(method, path, body.as_ref()).await?;
        if !status.is_success() {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| status.to_string());
            let retryable = value
                .get("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error,
                retryable,
            });
        }
        serde_json::from_value(value)
            .map_err(|e| ClientError::Transport(format!("unexpected answer to {path}: {e}")))
    }

    pub async fn health(&self) -> ClientResult<Health> {
        self.call(Method::GET, "/health", None).await
    }

    pub async fn create_database(&self, name: &str) -> ClientResult<DbName> {
        self.call(Method::POST, "/db", Some(json!({ "name": name })))
            .await
    }

    pub async fn list_databases(&self) -> ClientResult<Vec<String>> {
        self.call(Method::GET, "/db", None).await
    }

    pub async fn drop_database(&self, name: &str) -> ClientResult<Dropped> {
        self.call(Method::DELETE, &format!("/db/{}", db_path(name)), None)
            .await
    }

    /// Run a write (or DDL) in `database`.
    pub async fn execute(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> ClientResult<Affected> {
        self.execute_in(database, sql, params, None).await
    }

    /// Run a write inside transaction `tx` (from [`Client::begin`]), or in autocommit.
    pub async fn execute_in(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
        tx: Option<&str>,
    ) -> ClientResult<Affected> {
        let body = json!({ "sql": sql, "params": params, "tx": tx });
        self.call(
            Method::POST,
            &format!("/db/{}/execute", db_path(database)),
            Some(body),
        )
        .await
    }

    /// Run a query against `database` (its tables unqualified).
    pub async fn query_oltp(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> ClientResult<ResultSet> {
        self.query_oltp_in(database, sql, params, None).await
    }

    pub async fn query_oltp_in(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
        tx: Option<&str>,
    ) -> ClientResult<ResultSet> {
        let body = json!({ "sql": sql, "params": params, "tx": tx });
        self.call(
            Method::POST,
            &format!("/db/{}/query/oltp", db_path(database)),
            Some(body),
        )
        .await
    }

    /// Run a query across databases (tables named `db.public.table`).
    pub async fn query(&self, sql: &str, params: &[Value]) -> ClientResult<ResultSet> {
        self.call(
            Method::POST,
            "/query",
            Some(json!({ "sql": sql, "params": params })),
        )
        .await
    }

    pub async fn tables(&self, database: &str) -> ClientResult<Vec<String>> {
        self.call(
            Method::GET,
            &format!("/db/{}/tables", db_path(database)),
            None,
        )
        .await
    }

    pub async fn schema(&self, database: &str, table: &str) -> ClientResult<ResultSet> {
        let path = format!("/db/{}/schema/{}", db_path(database), segment(table));
        self.call(Method::GET, &path, None).await
    }

    /// Open a transaction on `database`.
    pub async fn begin(&self, database: &str) -> ClientResult<TxOpened> {
        self.call(Method::POST, &format!("/db/{}/tx", db_path(database)), None)
            .await
    }

    pub async fn commit(&self, tx: &str) -> ClientResult<TxEnded> {
        self.call(Method::POST, &format!("/tx/{}/commit", segment(tx)), None)
            .await
    }

    pub async fn rollback(&self, tx: &str) -> ClientResult<TxEnded> {
        self.call(Method::POST, &format!("/tx/{}/rollback", segment(tx)), None)
            .await
    }

    pub async fn kv_get(&self, database: &str, key: &str) -> ClientResult<KvEntry> {
        let path = format!("/db/{}/kv/{}", db_path(database), segment(key));
        self.call(Method::GET, &path, None).await
    }

    /// Set a text value.
    pub async fn kv_set(&self, database: &str, key: &str, value: &str) -> ClientResult<KvWritten> {
        let path = format!("/db/{}/kv/{}", db_path(database), segment(key));
        self.call(Method::PUT, &path, Some(json!({ "value": value })))
            .await
    }

    pub async fn kv_delete(&self, database: &str, key: &str) -> ClientResult<KvWritten> {
        let path = format!("/db/{}/kv/{}", db_path(database), segment(key));
        self.call(Method::DELETE, &path, None).await
    }

    /// A database's queue: its depth, its first `limit` messages and its newest dead
    /// letters.
    pub async fn queue(&self, database: &str, limit: usize) -> ClientResult<QueueView> {
        let path = format!("/db/{}/queue?limit={limit}", db_path(database));
        self.call(Method::GET, &path, None).await
    }

    /// Forget a database's dead letters given up on before `before` (ms since the Unix
    /// epoch), or all of them; how many were forgotten.
    pub async fn purge_dead_letters(
        &self,
        database: &str,
        before: Option<u64>,
    ) -> ClientResult<DeadLettersPurged> {
        let mut path = format!("/db/{}/queue/dead-letters", db_path(database));
        if let Some(t) = before {
            path.push_str(&format!("?before={t}"));
        }
        self.call(Method::DELETE, &path, None).await
    }

    /// Keys starting with `prefix`, a page of at most `limit`.
    pub async fn kv_list(
        &self,
        database: &str,
        prefix: &str,
        limit: usize,
    ) -> ClientResult<KvPage> {
        self.kv_list_from(database, prefix, limit, None).await
    }

    /// A page of keys starting with `prefix`, after the page whose `next` is `cursor`.
    pub async fn kv_list_from(
        &self,
        database: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> ClientResult<KvPage> {
        let mut path = format!(
            "/db/{}/kv?prefix={}&limit={limit}",
            db_path(database),
            segment(prefix)
        );
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", segment(c)));
        }
        self.call(Method::GET, &path, None).await
    }
}
