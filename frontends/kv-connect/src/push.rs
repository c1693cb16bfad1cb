//! Push consumers: every message of every database the server opens is POSTed to one URL;
//! a 2xx response acks it, anything else (or no answer in time) nacks it into its backoff.
//!
//! The request body is the raw payload; headers carry `x-strata-database`,
//! `x-strata-message-id`, `x-strata-attempt` and `x-strata-encoding`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_engine::{Database, ListenOptions, Listener, QueueMessage};

use crate::queue_http::encoding_name;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// How long a push endpoint may take before the message counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct QueuePush {
    url: String,
    client: HttpClient,
    listeners: Mutex<Vec<(String, Listener)>>,
}

impl QueuePush {
    pub fn new(url: String) -> Self {
        QueuePush {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Start pushing `db`'s messages (once per database).
    pub fn attach(&self, db: &Database) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if listeners.iter().any(|(n, _)| n == db.name()) {
            return;
        }
        let (client, url, name) = (
            self.client.clone(),
            Arc::new(self.url.clone()),
            db.name().to_string(),
        );
        let options = ListenOptions {
            visibility: PUSH_TIMEOUT + Duration::from_secs(5),
            ..ListenOptions::default()
        };
        let listener = db.listen(options, move |m: QueueMessage| {
            let (client, url, name) = (client.clone(), url.clone(), name.clone());
            async move { deliver(&client, &url, &name, m).await }
        });
        listeners.push((db.name().to_string(), listener));
    }

    /// Stop every push consumer, letting deliveries in progress finish.
    pub async fn stop(&self) {
        let all = std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, l) in all {
            l.stop().await;
        }
    }
}

async fn deliver(
    client: &HttpClient,
    url: &str,
    database: &str,
    m: QueueMessage,
) -> Result<(), String> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/octet-stream")
        .header("x-strata-database", database)
        .header("x-strata-message-id", m.id.to_hex())
        .header("x-strata-attempt", m.attempt.to_string())
        .header("x-strata-encoding", encoding_name(m.payload.encoding))
        .body(Full::new(Bytes::from(m.payload.data)))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(PUSH_TIMEOUT, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("push endpoint answered {}", resp.status())),
        Ok(Err(e)) => Err(format!("push endpoint unreachable: {e}")),
        Err(_) => Err("push endpoint timed out".into()),
    }
}
