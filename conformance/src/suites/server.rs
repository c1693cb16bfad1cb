//! `strata serve` as a process: remote queue consumers survive a crash of the server.
//!
//! A message is enqueued over KV Connect and leased over HTTP; the server is killed with
//! SIGKILL before the ack; after a restart on the same store the message is delivered again
//! (its lease expired), acked, and gone.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use strata_kv_connect::proto;

use crate::suites::clients::{start_server, ServerProcess, TOKEN};
use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "serve_queues",
        needs_persistence: true,
        needs_multi_writer: false,
        external: true,
        cases: cases![queue_messages_survive_a_server_crash],
    }
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(
    http: &Http,
    url: String,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut req = hyper::Request::post(url).header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http
        .request(
            req.body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?,
        )
        .await
        .step("request")?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .step("body")?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

async fn lease(
    http: &Http,
    server: &ServerProcess,
    wait_ms: u64,
) -> Result<Vec<serde_json::Value>, String> {
    let body = serde_json::json!({"max": 1, "visibility_ms": 1000, "wait_ms": wait_ms})
        .to_string()
        .into_bytes();
    let (status, body) = post(http, format!("{}/queue/lease", server.url), &[], body).await?;
    ensure_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).step("lease json")?;
    Ok(v["messages"].as_array().cloned().unwrap_or_default())
}

async fn queue_messages_survive_a_server_crash(h: &Harness) -> CaseResult {
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let server = start_server(h, &[]).await?;
    let (status, meta) = post(
        &http,
        format!("{}/", server.url),
        &[],
        br#"{"supportedVersions":[3]}"#.to_vec(),
    )
    .await?;
    ensure_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_slice(&meta).step("metadata")?;
    let id = meta["databaseId"]
        .as_str()
        .ok_or("no databaseId")?
        .to_string();
    let write = proto::AtomicWrite {
        enqueues: vec![proto::Enqueue {
            payload: b"survivor".to_vec(),
            backoff_schedule: vec![100, 100],
            ..Default::default()
        }],
        ..Default::default()
    };
    let headers = [
        ("x-denokv-database-id", id.as_str()),
        ("x-denokv-version", "3"),
    ];
    let (status, _) = post(
        &http,
        format!("{}/v2/atomic_write", server.url),
        &headers,
        write.encode_to_vec(),
    )
    .await?;
    ensure_eq!(status, 200);
    let first = lease(&http, &server, 0).await?;
    ensure_eq!(first.len(), 1);
    ensure_eq!(first[0]["attempt"].as_u64(), Some(1));
    drop(server); // SIGKILL, before the ack
    tokio::time::sleep(Duration::from_millis(100)).await;

    let server = start_server(h, &[]).await?;
    let again = lease(&http, &server, 10_000).await?;
    ensure_eq!(again.len(), 1);
    ensure_eq!(again[0]["id"], first[0]["id"]);
    ensure_eq!(again[0]["attempt"].as_u64(), Some(2));
    let settle = serde_json::json!({"id": again[0]["id"], "lease": again[0]["lease"]})
        .to_string()
        .into_bytes();
    let (status, _) = post(&http, format!("{}/queue/ack", server.url), &[], settle).await?;
    ensure_eq!(status, 204);
    ensure!(
        lease(&http, &server, 0).await?.is_empty(),
        "acked message is gone"
    );
    Ok(())
}
