//! # strata-rest
//!
//! The multi-database REST API over SQL sessions: create, list and drop databases, run
//! writes and OLTP queries against one database, cross-database queries through DataFusion,
//! tables and schemas, transactions over HTTP, KV access beside SQL, Prometheus metrics and
//! an OpenAPI document generated from the handlers.
//!
//! The paths and JSON shapes of the compatible endpoints (`/db`, `/db/{name}/execute`,
//! `/db/{name}/query/oltp`, `/query`, `/db/{name}/tables`, `/db/{name}/schema/{table}`,
//! `/health`) are those of the HTAP server this API replaces, so its scripts work
//! unchanged.
//!
//! Two invariants:
//!
//! * **Input never causes a 5xx.** Every error maps to one status in one place
//!   ([`error`]), every input rule is checked before anything runs ([`statement`]), and a
//!   request changes nothing unless it succeeds.
//! * **A request sees what every other client sees.** Handlers call the same SQL sessions
//!   and engine as PostgreSQL clients and the embedded API ([`routes`]).
//!
//! Where to look next: [`routes`] (the endpoints), [`sessions`] (pooled sessions and HTTP
//! transactions), [`result`] (rows as JSON).

mod client;
pub mod config;
mod console;
pub mod error;
mod kv;
mod metrics;
mod openapi;
mod queue;
pub mod result;
pub mod routes;
mod sessions;
pub mod statement;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use strata_engine::Engine;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub use client::{Client, ClientError, ClientResult};
pub use error::{RestError, Result};
pub use kv::{KvEntry, KvPage, KvSet, KvWritten};
pub use queue::{QueueView, QueuedMessage};
pub use result::{Column, ResultSet};
pub use routes::{Affected, DbName, Dropped, Health, SqlRequest, TxEnded, TxOpened};

/// The address the server this API follows listens on.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4200";

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer token every request but `/health` must carry; `None` serves without
    /// authentication.
    pub access_token: Option<String>,
    /// How long an HTTP transaction may go without a request before it is rolled back.
    pub transaction_idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            access_token: None,
            transaction_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
pub struct App {
    sessions: Arc<sessions::Sessions>,
    metrics: metrics::Metrics,
    config: Config,
    next_request: AtomicU64,
}

impl App {
    pub fn engine(&self) -> &Arc<Engine> {
        self.sessions.engine()
    }
}

/// The REST server.
pub struct Server {
    app: Arc<App>,
}

impl Server {
    pub fn new(engine: Arc<Engine>, config: Config) -> Server {
        let sessions = sessions::Sessions::new(engine, config.transaction_idle_timeout);
        Server {
            app: Arc::new(App {
                sessions,
                metrics: metrics::Metrics::new(),
                config,
                next_request: AtomicU64::new(1),
            }),
        }
    }

    /// The routes, with authentication, tracing and metrics.
    pub fn router(&self) -> Router {
        let open = Router::new()
            .route("/health", get(routes::health))
            .route("/ui", get(console::index))
            .route("/ui/", get(console::index))
            .route("/ui/console.js", get(console::script))
            .route("/ui/console.css", get(console::style));
        let guarded = Router::new()
            .route(
                "/db",
                get(routes::list_databases).post(routes::create_database),
            )
            .route("/db/{*rest}", any(routes::db_dispatch))
            .route("/query", post(routes::query))
            .route("/tx/{id}/commit", post(routes::commit))
            .route("/tx/{id}/rollback", post(routes::rollback))
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(openapi::document))
            .route_layer(middleware::from_fn_with_state(self.app.clone(), authorize));
        open.merge(guarded)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.app.clone(), observe))
            .with_state(self.app.clone())
    }

    /// Serve on `listener` until `shutdown` completes; requests in flight are let finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.app.sessions.spawn_reaper();
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The OpenAPI document of this server, as JSON.
pub fn openapi_json() -> String {
    openapi::json()
}

async fn not_found(req: Request) -> Response {
    RestError::not_found(format!("no endpoint at {}", req.uri().path())).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let text = app
        .metrics
        .render(app.engine(), app.sessions.open_count())
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Refuse requests without the configured bearer token (compared in constant time).
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(expected) = &app.config.access_token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let refusal = match given {
        None => "missing access token: send 'Authorization: Bearer <token>'",
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => {
            return next.run(req).await
        }
        Some(_) => "invalid access token",
    };
    let mut res = RestError::Unauthorized(refusal.into()).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"strata\""),
    );
    res
}

/// Trace, count and time every request; each answer carries its request id.
async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let id = app.next_request.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A path under /db/ is routed once, here: the label needs the route, and
    // `routes::db_dispatch` takes it from the request.
    let db_route = path.strip_prefix("/db/").map(routes::DbRoute::parse);
    let (route, database) = label(&path, db_route.as_ref());
    if let Some(Ok(r)) = db_route {
        req.extensions_mut().insert(r);
    }
    let started = Instant::now();
    // At DEBUG, as a request's span costs a formatting of its fields on every request
    // whenever it is enabled: `STRATA_LOG=strata_rest=debug` traces requests.
    let span = tracing::debug_span!("request", id, %method, path = %path);
    let mut res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let elapsed = started.elapsed();
    let status = res.status();
    // Label by database only when the answer shows it exists, so that requests naming
    // random databases cannot grow the metrics without bound.
    let database = if status.is_success() {
        database
    } else {
        String::new()
    };
    app.metrics
        .observe(route, &database, status.as_u16(), elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The metrics label of a path: its route and database.
fn label(path: &str, db_route: Option<&Result<routes::DbRoute>>) -> (&'static str, String) {
    match db_route {
        Some(Ok(r)) => {
            let (route, db) = r.label();
            return (route, db.to_string());
        }
        Some(Err(_)) => return ("/db/{name}", String::new()),
        None => {}
    }
    let route = match path {
        "/health" => "/health",
        "/db" => "/db",
        "/query" => "/query",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        p if p == "/ui" || p.starts_with("/ui/") => "/ui",
        p if p.starts_with("/tx/") && p.ends_with("/commit") => "/tx/{id}/commit",
        p if p.starts_with("/tx/") && p.ends_with("/rollback") => "/tx/{id}/rollback",
        _ => "other",
    };
    (route, String::new())
}
