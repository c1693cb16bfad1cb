//! A real server on a loopback port and a minimal HTTP client for the protocol tests.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use strata_engine::{Engine, EngineConfig};
use strata_kv_connect::proto;
use strata_kv_connect::{Server, ServerConfig};

pub const TOKEN: &str = "test-token-0123456789";

pub struct TestServer {
    pub base: String,
    pub engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> TestServer {
        let engine = Arc::new(Engine::new(
            Arc::new(strata_backend_memory::MemoryBackend::new()),
            EngineConfig {
                sweep_interval_ms: 50,
                ..EngineConfig::default()
            },
        ));
        Self::start_on(engine, config).await
    }

    pub async fn start_on(engine: Arc<Engine>, config: ServerConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::new(engine.clone(), config);
        server.prepare().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            engine,
            stop: Some(tx),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn with_token() -> ServerConfig {
        ServerConfig {
            access_token: Some(TOKEN.into()),
            create_databases: true,
            ..ServerConfig::default()
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        self.request("POST", path, headers, body).await
    }

    /// The metadata of a database (`""` for the default), as JSON.
    pub async fn metadata(&self, db_path: &str) -> serde_json::Value {
        let auth = format!("Bearer {TOKEN}");
        let r = self
            .post(
                db_path,
                &[("authorization", &auth)],
                br#"{"supportedVersions":[2,3]}"#.to_vec(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// A data-path call with the right headers for the database at `db_path`.
    pub async fn data(&self, db_path: &str, op: &str, body: Vec<u8>) -> Reply {
        let meta = self
            .metadata(if db_path.is_empty() { "/" } else { db_path })
            .await;
        let id = meta["databaseId"].as_str().unwrap().to_string();
        let auth = format!("Bearer {TOKEN}");
        self.post(
            &format!("{db_path}/v2/{op}"),
            &[
                ("authorization", &auth),
                ("x-denokv-database-id", &id),
                ("x-denokv-version", "3"),
            ],
            body,
        )
        .await
    }

    pub async fn write(&self, db_path: &str, w: proto::AtomicWrite) -> Reply {
        self.data(db_path, "atomic_write", w.encode_to_vec()).await
    }

    pub async fn read(
        &self,
        db_path: &str,
        ranges: Vec<proto::ReadRange>,
    ) -> proto::SnapshotReadOutput {
        let r = self
            .data(
                db_path,
                "snapshot_read",
                proto::SnapshotRead { ranges }.encode_to_vec(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        proto::SnapshotReadOutput::decode(r.body.as_slice()).unwrap()
    }

    pub async fn json(&self, path: &str, body: serde_json::Value) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        self.post(
            path,
            &[("authorization", &auth)],
            body.to_string().into_bytes(),
        )
        .await
    }
}

pub fn set(key: &[u8], encoding: proto::ValueEncoding, data: Vec<u8>) -> proto::Mutation {
    proto::Mutation {
        key: key.to_vec(),
        value: Some(proto::KvValue {
            data,
            encoding: encoding as i32,
        }),
        mutation_type: proto::MutationType::MSet as i32,
        ..Default::default()
    }
}

pub fn range(start: &[u8], end: &[u8], limit: i32) -> proto::ReadRange {
    proto::ReadRange {
        start: start.to_vec(),
        end: end.to_vec(),
        limit,
        reverse: false,
    }
}
