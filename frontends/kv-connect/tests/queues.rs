//! Remote queues end to end over HTTP: enqueue over KV Connect, consume with the pull API
//! (lease, ack, nack, long-poll) or a push endpoint; backoff and dead-lettering.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use strata_kv_connect::proto::{self, ValueEncoding as VE};
use strata_kv_connect::ServerConfig;

fn enqueue(payload: &[u8], backoff: Vec<u32>, dead: Vec<Vec<u8>>) -> proto::AtomicWrite {
    proto::AtomicWrite {
        enqueues: vec![proto::Enqueue {
            payload: payload.to_vec(),
            deadline_ms: 0,
            keys_if_undelivered: dead,
            backoff_schedule: backoff,
        }],
        ..Default::default()
    }
}

async fn lease(s: &TestServer, body: serde_json::Value) -> Vec<serde_json::Value> {
    let r = s.json("/queue/lease", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn pull_lease_ack() {
    let s = TestServer::start(TestServer::with_token()).await;
    let r = s.write("", enqueue(b"payload-1", vec![], vec![])).await;
    assert_eq!(r.status, 200);
    let msgs = lease(&s, serde_json::json!({"max": 10, "visibility_ms": 30000})).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["attempt"], 1);
    assert_eq!(m["encoding"], "v8");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(m["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload, b"payload-1");
    assert!(
        lease(&s, serde_json::json!({"max": 10})).await.is_empty(),
        "a leased message is not handed out twice"
    );
    let ack = s
        .json(
            "/queue/ack",
            serde_json::json!({"id": m["id"], "lease": m["lease"]}),
        )
        .await;
    assert_eq!(ack.status, 204);
    let again = s
        .json(
            "/queue/ack",
            serde_json::json!({"id": m["id"], "lease": m["lease"]}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    let bad = s
        .json("/queue/ack", serde_json::json!({"id": "zz", "lease": "1"}))
        .await;
    assert_eq!(bad.status, 400);
    let bad = s.json("/queue/lease", serde_json::json!({"max": 0})).await;
    assert_eq!(bad.status, 400);
    let bad = s
        .json("/queue/lease", serde_json::json!({"unknown": 1}))
        .await;
    assert_eq!(bad.status, 400);
    for (body, why) in [
        (serde_json::json!({"max": 1001}), "max"),
        (serde_json::json!({"visibility_ms": 0}), "visibility_ms"),
        (
            serde_json::json!({"visibility_ms": 43_200_001u64}),
            "visibility_ms",
        ),
        (serde_json::json!({"wait_ms": 60_001}), "wait_ms"),
    ] {
        let r = s.json("/queue/lease", body).await;
        assert_eq!(r.status, 400, "{why}");
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }
    let bad_lease = s
        .json(
            "/queue/nack",
            serde_json::json!({"id": m["id"], "lease": "not-a-number"}),
        )
        .await;
    assert_eq!(bad_lease.status, 400);
    let unauth = s.post("/queue/lease", &[], b"{}".to_vec()).await;
    assert_eq!(unauth.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_on_enqueue() {
    let s = Arc::new(TestServer::start(TestServer::with_token()).await);
    let started = Instant::now();
    let waiter = {
        let s = s.clone();
        tokio::spawn(
            async move { lease(&s, serde_json::json!({"max": 1, "wait_ms": 10000})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write("", enqueue(b"late", vec![], vec![])).await;
    let got = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long poll returned when the message arrived"
    );
    let empty_start = Instant::now();
    assert!(lease(&s, serde_json::json!({"max": 1, "wait_ms": 300}))
        .await
        .is_empty());
    assert!(
        empty_start.elapsed() >= Duration::from_millis(290),
        "an empty long poll waits its time"
    );
}

#[tokio::test]
async fn nack_backoff_then_dead_letter_over_http() {
    let s = TestServer::start(TestServer::with_token()).await;
    s.write(
        "/db/jobs",
        enqueue(b"job", vec![200], vec![b"\x02dead\x00".to_vec()]),
    )
    .await;
    let m = lease(&s, serde_json::json!({"max": 1})).await;
    assert!(m.is_empty(), "queues are per database");
    let m = s
        .json("/db/jobs/queue/lease", serde_json::json!({"max": 1}))
        .await;
    let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    let m = m["messages"][0].clone();
    assert_eq!(
        s.json(
            "/db/jobs/queue/nack",
            serde_json::json!({"id": m["id"], "lease": m["lease"]})
        )
        .await
        .status,
        204
    );
    let soon = s
        .json("/db/jobs/queue/lease", serde_json::json!({"max": 1}))
        .await;
    let soon: serde_json::Value = serde_json::from_slice(&soon.body).unwrap();
    assert!(
        soon["messages"].as_array().unwrap().is_empty(),
        "backoff not yet over"
    );
    let retry = s
        .json(
            "/db/jobs/queue/lease",
            serde_json::json!({"max": 1, "wait_ms": 5000}),
        )
        .await;
    let retry: serde_json::Value = serde_json::from_slice(&retry.body).unwrap();
    let r = retry["messages"][0].clone();
    assert_eq!(r["attempt"], 2);
    assert_eq!(
        s.json(
            "/db/jobs/queue/nack",
            serde_json::json!({"id": r["id"], "lease": r["lease"]})
        )
        .await
        .status,
        204
    );
    let read = s
        .read("/db/jobs", vec![range(b"\x02dead\x00", b"\x02dead\x01", 1)])
        .await;
    assert_eq!(read.ranges[0].values.len(), 1, "payload dead-lettered");
    assert_eq!(read.ranges[0].values[0].value, b"job");
    assert_eq!(read.ranges[0].values[0].encoding, VE::VeV8 as i32);
    s.stop().await;
}

#[tokio::test]
async fn push_mode_acks_2xx_and_retries_the_rest() {
    // A worker that fails the first delivery of each message and accepts the second.
    let hits = Arc::new(AtomicU32::new(0));
    let worker = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/work",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let hits = hits.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(body.as_ref(), b"push-me");
                        let attempt: u32 = headers["x-strata-attempt"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        if attempt == 1 {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/work", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, worker).await });

    let s = TestServer::start(ServerConfig {
        queue_push: Some(url),
        ..TestServer::with_token()
    })
    .await;
    s.write("", enqueue(b"push-me", vec![50], vec![])).await;
    let db = s.engine.database("default").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.queue_len().await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "message not acknowledged by push; {} deliveries",
            hits.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one failed delivery, one acknowledged"
    );
    s.stop().await;
}
