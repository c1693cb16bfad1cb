//! The workload over KV Connect: a server in this process on a loopback port, and a
//! protocol client speaking to it over real HTTP (metadata exchange, `snapshot_read`,
//! `atomic_write`), as Deno's remote client does.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use strata_engine::Engine;
use strata_kv_connect::{proto, Server, ServerConfig};

use super::workload::{KvClient, Read, WriteError};
use crate::suites::clients::TOKEN;

/// How an error starts when the request never left: no connection could be made.
const NOT_SENT: &str = "request: not sent:";

/// How long a request may go unanswered.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A KV Connect server over an engine, serving until stopped.
pub(crate) struct KvConnectServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl KvConnectServer {
    pub async fn start(engine: Arc<Engine>) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let server = Server::new(
            engine,
            ServerConfig {
                access_token: Some(TOKEN.into()),
                ..ServerConfig::default()
            },
        );
        server
            .prepare()
            .await
            .map_err(|e| format!("prepare: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(KvConnectServer {
            url,
            stop: Some(stop),
            task,
        })
    }

    /// Stop taking requests and wait for the server to finish.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("server: {e}"))
    }
}

/// A client of the default database of a KV Connect server.
pub(crate) struct HttpKv {
    http: Http,
    url: String,
    database_id: String,
    /// Read through the server's `eventual` endpoint (a cluster node's own copy).
    eventual: bool,
}

impl HttpKv {
    /// Exchange metadata with the server at `url`.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        let mut client = HttpKv {
            http,
            url: url.to_string(),
            database_id: String::new(),
            eventual: false,
        };
        let (status, body) = client
            .post("/", br#"{"supportedVersions":[3]}"#.to_vec())
            .await?;
        if status != 200 {
            return Err(format!(
                "metadata exchange: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("metadata: {e}"))?;
        client.database_id = meta["databaseId"]
            .as_str()
            .ok_or("metadata without a databaseId")?
            .to_string();
        Ok(client)
    }

    /// The same client, reading through the `eventual` endpoint.
    pub fn eventual(mut self) -> Self {
        self.eventual = true;
        self
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let mut req = hyper::Request::post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {TOKEN}"));
        if !self.database_id.is_empty() {
            req = req
                .header("x-denokv-database-id", &self.database_id)
                .header("x-denokv-version", "3");
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        // A node cut off without a word (its cable pulled) never answers: give up after a
        // while, as a client would, and say so as a request that got no answer.
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    format!("{NOT_SENT} {e}")
                } else {
                    format!("request: {e}")
                }
            })?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?
                .to_bytes()
                .to_vec();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("request: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    pub(crate) async fn snapshot_read(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Read>>, String> {
        let ranges = keys
            .iter()
            .map(|k| {
                let mut end = k.clone();
                end.push(0);
                proto::ReadRange {
                    start: k.clone(),
                    end,
                    limit: 1,
                    reverse: false,
                }
            })
            .collect();
        let path = if self.eventual {
            "/v2/eventual/snapshot_read"
        } else {
            "/v2/snapshot_read"
        };
        let (status, body) = self
            .post(path, proto::SnapshotRead { ranges }.encode_to_vec())
            .await?;
        if status != 200 {
            return Err(format!(
                "snapshot_read: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let out = proto::SnapshotReadOutput::decode(body.as_slice())
            .map_err(|e| format!("snapshot_read output: {e}"))?;
        if out.ranges.len() != keys.len() {
            return Err(format!(
                "snapshot_read: {} ranges for {} keys",
                out.ranges.len(),
                keys.len()
            ));
        }
        Ok(out
            .ranges
            .into_iter()
            .map(|r| {
                r.values.into_iter().next().map(|e| Read {
                    value: e.value,
                    version: e.versionstamp,
                })
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl KvClient for HttpKv {
    async fn get(&self, key: &[u8]) -> Result<Option<Read>, String> {
        let mut reads = self.snapshot_read(&[key.to_vec()]).await?;
        Ok(reads.pop().flatten())
    }

    async fn read_keys(
        &self,
        keys: &[Vec<u8>],
        _snapshot: bool,
    ) -> Result<Vec<Option<Read>>, String> {
        // The protocol has one kind of read: a snapshot of ranges.
        self.snapshot_read(keys).await
    }

    async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        check: Option<Option<Vec<u8>>>,
    ) -> Result<bool, WriteError> {
        let checks = check
            .map(|version| proto::Check {
                key: key.to_vec(),
                versionstamp: version.unwrap_or_default(),
            })
            .into_iter()
            .collect();
        let mutation = match value {
            Some(data) => proto::Mutation {
                key: key.to_vec(),
                value: Some(proto::KvValue {
                    data,
                    encoding: proto::ValueEncoding::VeBytes as i32,
                }),
                mutation_type: proto::MutationType::MSet as i32,
                ..Default::default()
            },
            None => proto::Mutation {
                key: key.to_vec(),
                mutation_type: proto::MutationType::MDelete as i32,
                ..Default::default()
            },
        };
        self.atomic_write(checks, vec![mutation]).await
    }
}

impl HttpKv {
    /// One atomic write: `Ok(false)` when a check failed.
    pub(crate) async fn atomic_write(
        &self,
        checks: Vec<proto::Check>,
        mutations: Vec<proto::Mutation>,
    ) -> Result<bool, WriteError> {
        let write = proto::AtomicWrite {
            checks,
            mutations,
            enqueues: Vec::new(),
        };
        // A request that may have reached the server but whose answer was lost may have
        // been applied; one that found no server to connect to was not.
        let (status, body) = self
            .post("/v2/atomic_write", write.encode_to_vec())
            .await
            .map_err(|e| match e.starts_with(NOT_SENT) {
                true => WriteError::NotApplied(e),
                false => WriteError::Unknown(e),
            })?;
        let text = || String::from_utf8_lossy(&body).to_string();
        match status {
            200 => {
                let out = proto::AtomicWriteOutput::decode(body.as_slice())
                    .map_err(|e| WriteError::Unknown(format!("atomic_write output: {e}")))?;
                match proto::AtomicWriteStatus::try_from(out.status) {
                    Ok(proto::AtomicWriteStatus::AwSuccess) => Ok(true),
                    Ok(proto::AtomicWriteStatus::AwCheckFailure) => Ok(false),
                    other => Err(WriteError::Unknown(format!(
                        "atomic_write status {other:?}"
                    ))),
                }
            }
            // Refused before anything was written.
            400 | 401 | 404 => Err(WriteError::NotApplied(format!("HTTP {status}: {}", text()))),
            // A conflict, or a commit whose result is unknown (the server answers both
            // with 409), or a server error.
            _ => Err(WriteError::Unknown(format!("HTTP {status}: {}", text()))),
        }
    }
}
