//! `strata-kv-load`: a load generator that speaks KV Connect directly over many connections.
//!
//! ```text
//! strata-kv-load --url http://127.0.0.1:4512 --token T --mode read --connections 32 --seconds 10
//! ```
//!
//! Modes: `read` (point gets over `--keys` preloaded keys), `write` (single-key sets),
//! `cas` (read then check-and-set increments on `--counters` contended counters; only
//! successful commits count), `list` (100-entry ranges from random starts). `--eventual` sends
//! reads to a cluster node's eventual endpoint. Prints ops/s and
//! p50/p99 latency, and one machine-readable line starting with `result`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use strata_kv_connect::proto::{self, ValueEncoding as VE};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// `--eventual`: reads go to the server's eventual endpoint (a cluster node's own copy).
static EVENTUAL: AtomicBool = AtomicBool::new(false);

struct Args {
    url: String,
    token: String,
    mode: String,
    connections: usize,
    seconds: u64,
    keys: u64,
    counters: u64,
    preload: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: strata-kv-load --url URL [--token T] --mode read|write|cas|list \
         [--connections 32] [--seconds 10] [--keys 10000] [--counters 16] [--no-preload] [--eventual]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        token: std::env::var("DENO_KV_ACCESS_TOKEN").unwrap_or_default(),
        mode: String::new(),
        connections: 32,
        seconds: 10,
        keys: 10_000,
        counters: 16,
        preload: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => a.url = val(),
            "--token" => a.token = val(),
            "--mode" => a.mode = val(),
            "--connections" => a.connections = val().parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--keys" => a.keys = val().parse().unwrap_or_else(|_| usage()),
            "--counters" => a.counters = val().parse().unwrap_or_else(|_| usage()),
            "--no-preload" => a.preload = false,
            "--eventual" => EVENTUAL.store(true, Ordering::Relaxed),
            _ => usage(),
        }
    }
    if a.url.is_empty()
        || !["read", "write", "cas", "list"].contains(&a.mode.as_str())
        || a.connections == 0
    {
        usage();
    }
    a
}

/// A key as the tuple encoding writes `["bench", n]` (a string part and a bigint part).
fn key(prefix: &str, n: u64) -> Vec<u8> {
    let mut k = vec![0x02];
    k.extend_from_slice(prefix.as_bytes());
    k.push(0x00);
    if n == 0 {
        k.push(0x14);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        k.push(0x14 + (8 - skip) as u8);
        k.extend_from_slice(&bytes[skip..]);
    }
    k
}

struct Conn {
    http: Http,
    base: String,
    token: String,
    db_id: String,
}

impl Conn {
    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let req = hyper::Request::post(format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("x-denokv-database-id", &self.db_id)
            .header("x-denokv-version", "3")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }

    async fn read(
        &self,
        ranges: Vec<proto::ReadRange>,
    ) -> Result<proto::SnapshotReadOutput, String> {
        let path = if EVENTUAL.load(Ordering::Relaxed) {
            "/v2/eventual/snapshot_read"
        } else {
            "/v2/snapshot_read"
        };
        let out = self
            .post(path, proto::SnapshotRead { ranges }.encode_to_vec())
            .await?;
        proto::SnapshotReadOutput::decode(out.as_slice()).map_err(|e| e.to_string())
    }

    async fn write(&self, w: proto::AtomicWrite) -> Result<proto::AtomicWriteOutput, String> {
        let out = self.post("/v2/atomic_write", w.encode_to_vec()).await?;
        proto::AtomicWriteOutput::decode(out.as_slice()).map_err(|e| e.to_string())
    }
}

fn point(k: Vec<u8>) -> proto::ReadRange {
    let mut end = k.clone();
    end.push(0);
    proto::ReadRange {
        start: k,
        end,
        limit: 1,
        reverse: false,
    }
}

fn set(k: Vec<u8>, data: Vec<u8>, encoding: VE) -> proto::Mutation {
    proto::Mutation {
        key: k,
        value: Some(proto::KvValue {
            data,
            encoding: encoding as i32,
        }),
        mutation_type: proto::MutationType::MSet as i32,
        ..Default::default()
    }
}

async fn metadata(http: &Http, url: &str, token: &str) -> Result<(String, String), String> {
    let req = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"supportedVersions":[2,3]}"#,
        )))
        .map_err(|e| e.to_string())?;
    let resp = http
        .request(req)
        .await
        .map_err(|e| format!("metadata: {e}"))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let m: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("metadata: {e}"))?;
    let id = m["databaseId"]
        .as_str()
        .ok_or("metadata without databaseId")?
        .to_string();
    let endpoint = m["endpoints"][0]["url"]
        .as_str()
        .ok_or("metadata without endpoints")?;
    let base = url.trim_end_matches('/');
    let origin = match base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(cut) => &base[..cut],
        None => base,
    };
    let ep = if endpoint.starts_with("http") {
        endpoint.to_string()
    } else {
        format!("{origin}{endpoint}")
    };
    Ok((ep.trim_end_matches("/v2").to_string(), id))
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(a.connections * 2)
        .build_http();
    let (base, db_id) = match metadata(&http, &a.url, &a.token).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let conn = Arc::new(Conn {
        http,
        base,
        token: a.token.clone(),
        db_id,
    });
    if a.preload && (a.mode == "read" || a.mode == "list") {
        let start = Instant::now();
        let mut n = 0;
        while n < a.keys {
            let batch: Vec<proto::Mutation> = (n..(n + 500).min(a.keys))
                .map(|i| set(key("bench", i), vec![7; 100], VE::VeBytes))
                .collect();
            n += batch.len() as u64;
            if let Err(e) = conn
                .write(proto::AtomicWrite {
                    mutations: batch,
                    ..Default::default()
                })
                .await
            {
                eprintln!("error: preload: {e}");
                std::process::exit(1);
            }
        }
        eprintln!("preloaded {} keys in {:.1?}", a.keys, start.elapsed());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..a.connections {
        let (conn, stop, errors, conflicts) = (
            conn.clone(),
            stop.clone(),
            errors.clone(),
            conflicts.clone(),
        );
        let (mode, keys, counters) = (a.mode.clone(), a.keys, a.counters);
        tasks.push(tokio::spawn(async move {
            let mut rng =
                strata_engine::XorShift(0x2545_f491_4f6c_dd1d ^ ((c as u64 + 1) * 0x9e37_79b9));
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match mode.as_str() {
                    "read" => conn
                        .read(vec![point(key("bench", rng.below(keys)))])
                        .await
                        .map(|_| true),
                    "list" => {
                        let s = rng.below(keys.saturating_sub(100).max(1));
                        let r = proto::ReadRange {
                            start: key("bench", s),
                            end: key("bench", keys),
                            limit: 100,
                            reverse: false,
                        };
                        conn.read(vec![r]).await.map(|_| true)
                    }
                    "write" => {
                        seq += 1;
                        let k = key(&format!("w{c}"), seq);
                        conn.write(proto::AtomicWrite {
                            mutations: vec![set(k, vec![7; 100], VE::VeBytes)],
                            ..Default::default()
                        })
                        .await
                        .map(|_| true)
                    }
                    _ => {
                        let k = key("counter", rng.below(counters));
                        match conn.read(vec![point(k.clone())]).await {
                            Ok(r) => {
                                let (n, vs) = match r.ranges.first().and_then(|r| r.values.first())
                                {
                                    Some(e) => (
                                        e.value
                                            .as_slice()
                                            .try_into()
                                            .map(u64::from_le_bytes)
                                            .unwrap_or(0),
                                        e.versionstamp.clone(),
                                    ),
                                    None => (0, vec![]),
                                };
                                let w = proto::AtomicWrite {
                                    checks: vec![proto::Check {
                                        key: k.clone(),
                                        versionstamp: vs,
                                    }],
                                    mutations: vec![set(
                                        k,
                                        (n + 1).to_le_bytes().to_vec(),
                                        VE::VeLe64,
                                    )],
                                    ..Default::default()
                                };
                                conn.write(w)
                                    .await
                                    .map(|o| o.status == proto::AtomicWriteStatus::AwSuccess as i32)
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                match ok {
                    Ok(true) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Ok(false) => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let ops = all.len() as f64 / elapsed;
    println!(
        "{} x{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms ({} ops, {} check failures, {} errors, {:.1} s)",
        a.mode,
        a.connections,
        ops,
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        all.len(),
        conflicts.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        elapsed
    );
    println!(
        "result mode={} connections={} ops={} ops_per_sec={:.0} p50_us={} p99_us={} check_failures={} errors={}",
        a.mode,
        a.connections,
        all.len(),
        ops,
        pct(0.5),
        pct(0.99),
        conflicts.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
}
