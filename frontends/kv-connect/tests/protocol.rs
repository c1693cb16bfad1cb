//! The KV Connect protocol over a real socket: metadata, data path, watch, and every kind of
//! bad input answered with a clear 4xx and nothing written.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use strata_kv_connect::proto::{self, ValueEncoding as VE};
use strata_kv_connect::ServerConfig;

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test]
async fn metadata_exchange() {
    let s = TestServer::start(TestServer::with_token()).await;
    let r = s
        .post(
            "/",
            &[("authorization", &auth())],
            br#"{"supportedVersions":[1,2,3]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type, "application/json",
        "exactly, without a charset"
    );
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["databaseId", "endpoints", "expiresAt", "token", "version"]
    );
    assert_eq!(m["version"], 3);
    assert_eq!(m["endpoints"][0]["url"], "/v2");
    assert_eq!(m["endpoints"][0]["consistency"], "strong");
    assert_eq!(m["token"], TOKEN);
    let id = m["databaseId"].as_str().unwrap();
    assert!(
        id.len() == 36
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase() || c == '-'),
        "{id}"
    );
    let exp = m["expiresAt"].as_str().unwrap();
    assert!(
        exp.ends_with('Z') && exp.len() == 24 && &exp[10..11] == "T",
        "{exp}"
    );

    let v2 = s
        .post(
            "/",
            &[("authorization", &auth())],
            br#"{"supportedVersions":[1,2]}"#.to_vec(),
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&v2.body).unwrap()["version"],
        2
    );
    let v1 = s
        .post(
            "/",
            &[("authorization", &auth())],
            br#"{"supportedVersions":[1]}"#.to_vec(),
        )
        .await;
    assert_eq!(v1.status, 400);
    assert!(v1.text().contains("2 and 3"), "{}", v1.text());
    let junk = s
        .post("/", &[("authorization", &auth())], b"not json".to_vec())
        .await;
    assert_eq!(junk.status, 400);

    let named = s.metadata("/db/team/orders").await;
    assert_eq!(named["endpoints"][0]["url"], "/db/team/orders/v2");
    assert_ne!(named["databaseId"], m["databaseId"]);
    s.stop().await;
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let s = TestServer::start(TestServer::with_token()).await;
    let none = s
        .post("/", &[], br#"{"supportedVersions":[3]}"#.to_vec())
        .await;
    assert_eq!(none.status, 401);
    assert!(none.text().contains("missing access token"));
    let wrong = s
        .post(
            "/",
            &[("authorization", "Bearer nope-nope-nope")],
            br#"{"supportedVersions":[3]}"#.to_vec(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.text(), "invalid access token");
    let meta = s.metadata("/").await;
    let id = meta["databaseId"].as_str().unwrap();
    let data = s
        .post(
            "/v2/snapshot_read",
            &[
                ("authorization", "Bearer nope"),
                ("x-denokv-database-id", id),
                ("x-denokv-version", "3"),
            ],
            vec![],
        )
        .await;
    assert_eq!(data.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn databases_are_created_only_when_allowed() {
    let s = TestServer::start(ServerConfig {
        access_token: Some(TOKEN.into()),
        ..ServerConfig::default()
    })
    .await;
    let r = s
        .post(
            "/db/nope",
            &[("authorization", &auth())],
            br#"{"supportedVersions":[3]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("--create-databases"), "{}", r.text());
    let bad = s
        .post(
            "/db/../x",
            &[("authorization", &auth())],
            br#"{"supportedVersions":[3]}"#.to_vec(),
        )
        .await;
    assert!(bad.status == 400 || bad.status == 404, "{}", bad.status);
    s.metadata("/").await;
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_are_4xx_and_write_nothing() {
    let s = TestServer::start(TestServer::with_token()).await;
    let meta = s.metadata("/").await;
    let id = meta["databaseId"].as_str().unwrap().to_string();
    let a = auth();
    let full = [
        ("authorization", a.as_str()),
        ("x-denokv-database-id", id.as_str()),
        ("x-denokv-version", "3"),
    ];
    let valid = proto::AtomicWrite {
        mutations: vec![set(b"\x02k\x00", VE::VeBytes, b"v".to_vec())],
        ..Default::default()
    }
    .encode_to_vec();

    let no_version = s.post("/v2/atomic_write", &full[..2], valid.clone()).await;
    assert_eq!(no_version.status, 400);
    assert!(no_version.text().contains("x-denokv-version"));
    let no_id = s
        .post("/v2/atomic_write", &[full[0], full[2]], valid.clone())
        .await;
    assert_eq!(no_id.status, 400);
    let wrong_id = s
        .post(
            "/v2/atomic_write",
            &[
                full[0],
                (
                    "x-denokv-database-id",
                    "00000000-0000-0000-0000-000000000000",
                ),
                full[2],
            ],
            valid.clone(),
        )
        .await;
    assert_eq!(wrong_id.status, 400);
    assert!(wrong_id.text().contains("fetch the metadata again"));
    let v9 = s
        .post(
            "/v2/atomic_write",
            &[full[0], full[1], ("x-denokv-version", "9")],
            valid.clone(),
        )
        .await;
    assert_eq!(v9.status, 400);
    let garbage = s
        .post("/v2/atomic_write", &full, vec![0xff, 0xff, 0xff, 0x01])
        .await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.text().contains("malformed atomic_write"),
        "{}",
        garbage.text()
    );
    let truncated = s
        .post("/v2/atomic_write", &full, valid[..valid.len() - 2].to_vec())
        .await;
    assert_eq!(truncated.status, 400);
    let unknown = s.post("/v2/nothing", &full, vec![]).await;
    assert_eq!(unknown.status, 404);
    let get = s.request("GET", "/v2/snapshot_read", &full, vec![]).await;
    assert_eq!(get.status, 405);
    let huge = s
        .post("/v2/atomic_write", &full, vec![0; 5 * 1024 * 1024])
        .await;
    assert_eq!(huge.status, 413);

    let short_u64 = proto::AtomicWrite {
        mutations: vec![set(b"n", VE::VeLe64, vec![1, 2, 3])],
        ..Default::default()
    };
    let r = s.write("", short_u64).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("8 bytes"), "{}", r.text());
    let long_key = proto::AtomicWrite {
        mutations: vec![set(&[1; 2049], VE::VeBytes, vec![])],
        ..Default::default()
    };
    let r = s.write("", long_key).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("write key size limit of 2048 bytes"),
        "{}",
        r.text()
    );
    let big_value = proto::AtomicWrite {
        mutations: vec![set(b"k", VE::VeBytes, vec![0; 65537])],
        ..Default::default()
    };
    let r = s.write("", big_value).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("value size limit"), "{}", r.text());

    let out = s.read("", vec![range(b"", b"\xff", 100)]).await;
    assert!(
        out.ranges[0].values.is_empty(),
        "nothing was written by any bad request"
    );

    let too_many = (0..11)
        .map(|i| range(&[i], &[i + 1], 1))
        .collect::<Vec<_>>();
    let r = s
        .data(
            "",
            "snapshot_read",
            proto::SnapshotRead { ranges: too_many }.encode_to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("ranges per read"), "{}", r.text());
    let zero = s
        .data(
            "",
            "snapshot_read",
            proto::SnapshotRead {
                ranges: vec![range(b"a", b"b", 0)],
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(zero.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn atomic_writes_checks_and_mutations() {
    let s = TestServer::start(TestServer::with_token()).await;
    let w = proto::AtomicWrite {
        mutations: vec![set(b"a", VE::VeBytes, b"1".to_vec())],
        ..Default::default()
    };
    let r = s.write("", w).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/x-protobuf");
    let out = proto::AtomicWriteOutput::decode(r.body.as_slice()).unwrap();
    assert_eq!(out.status, proto::AtomicWriteStatus::AwSuccess as i32);
    assert_eq!(out.versionstamp.len(), 10);

    let checks = vec![
        proto::Check {
            key: b"a".to_vec(),
            versionstamp: out.versionstamp.clone(),
        },
        proto::Check {
            key: b"a".to_vec(),
            versionstamp: vec![],
        },
        proto::Check {
            key: b"b".to_vec(),
            versionstamp: vec![0; 10],
        },
    ];
    let r = s
        .write(
            "",
            proto::AtomicWrite {
                checks,
                mutations: vec![set(b"c", VE::VeBytes, vec![])],
                ..Default::default()
            },
        )
        .await;
    let failed = proto::AtomicWriteOutput::decode(r.body.as_slice()).unwrap();
    assert_eq!(
        failed.status,
        proto::AtomicWriteStatus::AwCheckFailure as i32
    );
    assert_eq!(failed.failed_checks, vec![1, 2]);

    // sum on a non-U64 value: a 400 with the message clients show.
    let sum = proto::Mutation {
        key: b"a".to_vec(),
        value: Some(proto::KvValue {
            data: 1u64.to_le_bytes().to_vec(),
            encoding: VE::VeLe64 as i32,
        }),
        mutation_type: proto::MutationType::MSum as i32,
        ..Default::default()
    };
    let r = s
        .write(
            "",
            proto::AtomicWrite {
                mutations: vec![sum],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Failed to perform 'sum' mutation on a non-U64 value in the database"
    );

    // A versionstamped key gets the tuple-encoded hex versionstamp appended.
    let vsk = proto::Mutation {
        key: b"\x02log\x00".to_vec(),
        value: Some(proto::KvValue {
            data: b"x".to_vec(),
            encoding: VE::VeBytes as i32,
        }),
        mutation_type: proto::MutationType::MSetSuffixVersionstampedKey as i32,
        ..Default::default()
    };
    let r = s
        .write(
            "",
            proto::AtomicWrite {
                mutations: vec![vsk],
                ..Default::default()
            },
        )
        .await;
    let out = proto::AtomicWriteOutput::decode(r.body.as_slice()).unwrap();
    let hex: String = out
        .versionstamp
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut expected = b"\x02log\x00\x02".to_vec();
    expected.extend_from_slice(hex.as_bytes());
    expected.push(0);
    let read = s
        .read("", vec![range(b"\x02log\x00", b"\x02log\x01", 10)])
        .await;
    assert_eq!(read.ranges[0].values.len(), 1);
    assert_eq!(read.ranges[0].values[0].key, expected);
    assert!(read.read_is_strongly_consistent);
    assert_eq!(read.status, proto::SnapshotReadStatus::SrSuccess as i32);
    s.stop().await;
}

/// Read length-prefixed watch frames from a streaming response.
struct Frames {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Frames {
    async fn next(&mut self) -> Option<proto::WatchOutput> {
        use http_body_util::BodyExt;
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + n {
                    let msg: Vec<u8> = self.buf.drain(..4 + n).skip(4).collect();
                    return Some(proto::WatchOutput::decode(msg.as_slice()).unwrap());
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

#[tokio::test]
async fn watch_streams_changes_and_keepalives() {
    let config = ServerConfig {
        watch_keepalive: Duration::from_millis(100),
        ..TestServer::with_token()
    };
    let s = TestServer::start(config).await;
    let meta = s.metadata("/").await;
    let id = meta["databaseId"].as_str().unwrap().to_string();
    let a = auth();
    let headers = [
        ("authorization", a.as_str()),
        ("x-denokv-database-id", id.as_str()),
        ("x-denokv-version", "3"),
    ];
    let empty = s
        .post(
            "/v2/watch",
            &headers,
            proto::Watch { keys: vec![] }.encode_to_vec(),
        )
        .await;
    assert_eq!(empty.status, 400, "zero keys");
    let eleven = proto::Watch {
        keys: (0..11u8)
            .map(|i| proto::WatchKey { key: vec![i] })
            .collect(),
    };
    assert_eq!(
        s.post("/v2/watch", &headers, eleven.encode_to_vec())
            .await
            .status,
        400
    );
    let v2 = s
        .post(
            "/v2/watch",
            &[headers[0], headers[1], ("x-denokv-version", "2")],
            vec![],
        )
        .await;
    assert_eq!(v2.status, 400, "watch needs version 3");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let body = proto::Watch {
        keys: vec![proto::WatchKey { key: b"w".to_vec() }],
    }
    .encode_to_vec();
    let mut req = hyper::Request::post(format!("{}/v2/watch", s.base));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(
            req.body(http_body_util::Full::new(axum::body::Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let mut frames = Frames {
        body: resp.into_body(),
        buf: vec![],
    };
    let first = frames.next().await.unwrap();
    assert_eq!(first.keys.len(), 1);
    assert!(first.keys[0].changed && first.keys[0].entry_if_changed.is_none());
    let keepalive = tokio::time::timeout(Duration::from_secs(5), frames.next())
        .await
        .unwrap()
        .unwrap();
    assert!(keepalive.keys.is_empty(), "an empty frame is a keepalive");
    s.write(
        "",
        proto::AtomicWrite {
            mutations: vec![set(b"w", VE::VeBytes, b"hi".to_vec())],
            ..Default::default()
        },
    )
    .await;
    let changed = loop {
        let f = tokio::time::timeout(Duration::from_secs(5), frames.next())
            .await
            .unwrap()
            .unwrap();
        if !f.keys.is_empty() {
            break f;
        }
    };
    assert_eq!(
        changed.keys[0].entry_if_changed.as_ref().unwrap().value,
        b"hi"
    );
    drop(frames);
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_requests_finish() {
    use http_body_util::BodyExt;
    let s = TestServer::start(TestServer::with_token()).await;
    // A request still in flight when shutdown begins: a long-poll lease waiting 1 s.
    let url = format!("{}/queue/lease", s.base);
    let in_flight = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = hyper::Request::post(url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Full::new(axum::body::Bytes::from_static(
                br#"{"max": 1, "wait_ms": 1000}"#,
            )))
            .unwrap();
        let resp = client
            .request(req)
            .await
            .expect("the in-flight request is answered, not cut off");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("its whole body arrives")
            .to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "shutdown waited for the request in flight"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], br#"{"messages":[]}"#);
}
