//! Routing, metadata exchange, and the server's lifecycle.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use strata_engine::{Database, Engine, EngineError};
use tokio::net::TcpListener;

use crate::auth::{authorize, bearer};
use crate::error::ApiError;
use crate::push::QueuePush;
use crate::{datapath, queue_http, time};

/// The database behind `POST /`.
pub const DEFAULT_DATABASE: &str = "default";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Bearer token clients must send; `None` turns authentication off.
    pub access_token: Option<String>,
    /// Create a database on its first metadata request (the default database always is).
    pub create_databases: bool,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How often an idle watch stream sends a keepalive frame.
    pub watch_keepalive: Duration,
    /// How long metadata stays valid before clients fetch it again.
    pub metadata_ttl: Duration,
    /// POST every queue message to this URL (push consumers).
    pub queue_push: Option<String>,
    /// On a cluster node: the KV Connect base URLs of every replica (this node's included),
    /// listed to clients as `eventual` endpoints.
    pub replicas: Option<Replicas>,
}

/// Where a cluster's replicas serve KV Connect, asked afresh for each metadata request
/// (membership changes at runtime).
#[derive(Clone)]
pub struct Replicas(pub Arc<dyn Fn() -> Vec<String> + Send + Sync>);

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries((self.0)()).finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            access_token: None,
            create_databases: false,
            body_limit: 4 * 1024 * 1024,
            watch_keepalive: Duration::from_secs(5),
            metadata_ttl: Duration::from_secs(3600),
            queue_push: None,
            replicas: None,
        }
    }
}

pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub config: ServerConfig,
    pub push: Option<QueuePush>,
}

/// A KV Connect server over one engine. Clones share it.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Self {
        let push = config.queue_push.clone().map(QueuePush::new);
        Server {
            state: Arc::new(AppState {
                engine,
                config,
                push,
            }),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .fallback(dispatch)
            .layer(DefaultBodyLimit::max(self.state.config.body_limit))
            .with_state(self.state.clone())
    }

    /// Open the default database (and start its push consumer) before taking requests.
    pub async fn prepare(&self) -> Result<(), EngineError> {
        let db = self.state.engine.open_or_create(DEFAULT_DATABASE).await?;
        if let Some(p) = &self.state.push {
            p.attach(&db);
        }
        Ok(())
    }

    /// Serve on `listener` until `shutdown` completes; requests in flight are let finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // A cluster node may start before its cluster has a leader: there the default
        // database is made on its first request instead.
        if self.state.config.replicas.is_none() {
            self.prepare().await.map_err(std::io::Error::other)?;
        }
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Some(p) = &self.state.push {
            p.stop().await;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metadata,
    Op(Op),
}

/// What a request to an open database asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op {
    SnapshotRead,
    /// A read served from this node's copy as it is (a replica's `eventual` endpoint).
    EventualRead,
    AtomicWrite,
    Watch,
    QueueLease,
    QueueAck,
    QueueNack,
}

/// The eventual endpoint (`/v2/eventual`) serves reads only; clients write and watch
/// through the strong one.
const EVENTUAL_READ: &str = "/v2/eventual/snapshot_read";

/// Split a path into (database, route).
pub(crate) fn route(path: &str) -> Option<(String, Route)> {
    const OPS: [(&str, Route); 7] = [
        ("/v2/snapshot_read", Route::Op(Op::SnapshotRead)),
        (EVENTUAL_READ, Route::Op(Op::EventualRead)),
        ("/v2/atomic_write", Route::Op(Op::AtomicWrite)),
        ("/v2/watch", Route::Op(Op::Watch)),
        ("/queue/lease", Route::Op(Op::QueueLease)),
        ("/queue/ack", Route::Op(Op::QueueAck)),
        ("/queue/nack", Route::Op(Op::QueueNack)),
    ];
    let (db, rest) = match path.strip_prefix("/db/") {
        Some(named) => {
            for (suffix, _) in &OPS {
                if let Some(name) = named.strip_suffix(suffix) {
                    return OPS
                        .into_iter()
                        .find(|(s, _)| s == suffix)
                        .map(|(_, r)| (name.to_string(), r));
                }
            }
            return Some((named.trim_end_matches('/').to_string(), Route::Metadata));
        }
        None => (DEFAULT_DATABASE.to_string(), path),
    };
    if rest.is_empty() || rest == "/" {
        return Some((db, Route::Metadata));
    }
    OPS.into_iter()
        .find(|(s, _)| *s == rest)
        .map(|(_, r)| (db, r))
}

async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((db, route)) = route(uri.path()) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", uri.path()),
        )
            .into_response();
    };
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "KV Connect endpoints take POST",
        )
            .into_response();
    }
    match handle(&state, &db, route, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &Arc<AppState>,
    db_name: &str,
    route: Route,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(state.config.access_token.as_deref(), headers)?;
    let op = match route {
        Route::Metadata => return metadata(state, db_name, headers, &body).await,
        Route::Op(op) => op,
    };
    let db = open(state, db_name, false).await?;
    match op {
        Op::SnapshotRead | Op::EventualRead | Op::AtomicWrite | Op::Watch => {
            check_data_headers(&db, headers, op == Op::Watch)?;
            match op {
                Op::SnapshotRead => datapath::snapshot_read(&db, &body).await,
                Op::EventualRead => datapath::snapshot_read(&db.eventual(), &body).await,
                Op::AtomicWrite => datapath::atomic_write(&db, &body).await,
                _ => datapath::watch(&db, &body, state.config.watch_keepalive),
            }
        }
        Op::QueueLease => queue_http::lease(&db, &body).await,
        Op::QueueAck => queue_http::settle(&db, &body, true).await,
        Op::QueueNack => queue_http::settle(&db, &body, false).await,
    }
}

pub(crate) async fn open(state: &AppState, name: &str, create: bool) -> Result<Database, ApiError> {
    match state.engine.database(name).await {
        Ok(db) => Ok(db),
        Err(EngineError::DatabaseNotFound(_)) if create || name == DEFAULT_DATABASE => {
            let db = state.engine.open_or_create(name).await?;
            if let Some(p) = &state.push {
                p.attach(&db);
            }
            Ok(db)
        }
        Err(EngineError::DatabaseNotFound(_)) => Err(ApiError::NotFound(format!(
            "database {name:?} does not exist (start the server with --create-databases to create databases on first use)"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn check_data_headers(db: &Database, headers: &HeaderMap, watch: bool) -> Result<(), ApiError> {
    let version = headers
        .get("x-denokv-version")
        .ok_or_else(|| ApiError::bad("missing x-denokv-version header"))?
        .to_str()
        .map_err(|_| ApiError::bad("x-denokv-version is not text"))?;
    match version.trim() {
        "2" if watch => return Err(ApiError::bad("watch needs protocol version 3")),
        "2" | "3" => {}
        other => {
            return Err(ApiError::bad(format!(
                "unsupported protocol version {other:?}: this server speaks 2 and 3"
            )))
        }
    }
    let id = headers
        .get("x-denokv-database-id")
        .ok_or_else(|| ApiError::bad("missing x-denokv-database-id header"))?
        .to_str()
        .map_err(|_| ApiError::bad("x-denokv-database-id is not text"))?;
    if !id.trim().eq_ignore_ascii_case(db.id()) {
        return Err(ApiError::bad(format!(
            "database id {id:?} does not match this database ({}); fetch the metadata again",
            db.id()
        )));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataRequest {
    supported_versions: Vec<u64>,
}

async fn metadata(
    state: &AppState,
    db_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: MetadataRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "metadata request must be JSON {{\"supportedVersions\":[...]}}: {e}"
        ))
    })?;
    let version = if req.supported_versions.contains(&3) {
        3
    } else if req.supported_versions.contains(&2) {
        2
    } else {
        return Err(ApiError::bad(format!(
            "no supported protocol version in {:?}: this server speaks KV Connect 2 and 3",
            req.supported_versions
        )));
    };
    let db = open(state, db_name, state.config.create_databases).await?;
    let base = if db_name == DEFAULT_DATABASE {
        String::new()
    } else {
        format!("/db/{db_name}")
    };
    let token = state
        .config
        .access_token
        .clone()
        .or_else(|| bearer(headers).map(str::to_string))
        .unwrap_or_default();
    let expires = strata_engine::now_ms() + state.config.metadata_ttl.as_millis() as u64;
    let mut endpoints =
        vec![serde_json::json!({ "url": format!("{base}/v2"), "consistency": "strong" })];
    if let Some(replicas) = &state.config.replicas {
        for url in (replicas.0)() {
            let url = url.trim_end_matches('/');
            endpoints.push(serde_json::json!({
                "url": format!("{url}{base}/v2/eventual"),
                "consistency": "eventual",
            }));
        }
    }
    let body = serde_json::json!({
        "version": version,
        "databaseId": db.id().to_ascii_lowercase(),
        "endpoints": endpoints,
        "token": token,
        "expiresAt": time::iso8601(expires),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| ApiError::bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_databases_and_ops() {
        let r = |p: &str| route(p);
        assert_eq!(r("/"), Some(("default".into(), Route::Metadata)));
        assert_eq!(r(""), Some(("default".into(), Route::Metadata)));
        assert_eq!(
            r("/v2/snapshot_read"),
            Some(("default".into(), Route::Op(Op::SnapshotRead)))
        );
        assert_eq!(
            r("/v2/watch"),
            Some(("default".into(), Route::Op(Op::Watch)))
        );
        assert_eq!(
            r("/db/shop/v2/eventual/snapshot_read"),
            Some(("shop".into(), Route::Op(Op::EventualRead)))
        );
        assert_eq!(
            r("/queue/lease"),
            Some(("default".into(), Route::Op(Op::QueueLease)))
        );
        assert_eq!(r("/db/orders"), Some(("orders".into(), Route::Metadata)));
        assert_eq!(
            r("/db/team/a/v2/atomic_write"),
            Some(("team/a".into(), Route::Op(Op::AtomicWrite)))
        );
        assert_eq!(
            r("/db/x/queue/nack"),
            Some(("x".into(), Route::Op(Op::QueueNack)))
        );
        assert_eq!(r("/v3/snapshot_read"), None);
        assert_eq!(r("/nope"), None);
    }
}
