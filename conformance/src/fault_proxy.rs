//! A fault-injecting HTTP/1.1 proxy, for testing what a client does when the network between
//! it and a server misbehaves: a request that was applied but whose answer never came back,
//! a connection cut before the request was sent on, a throttling error.
//!
//! The proxy sits between a client (the engine's DynamoDB client) and a server (the
//! emulator). It reads each request off the client's keep-alive connection — request line,
//! headers, a body framed by `Content-Length` or chunked — and asks its [`FaultRule`]s what
//! to do with it ([`Fault`]). A request it forwards goes to the server on a fresh connection,
//! and the whole response is read before anything else happens, so "forward, then drop the
//! response" means the server really did process the request.
//!
//! Rules are deterministic: each counts the requests that match it (optionally only those
//! whose `X-Amz-Target` header names one operation) and fires on every Nth of them, or on
//! the next K, or always. The first rule that fires decides; a request no rule fires on is
//! forwarded. Every rule counts every matching request, whether or not an earlier rule
//! decided it. [`FaultProxy::counts`] says what was done, per operation.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Send it on and relay the answer.
    Forward,
    /// Send it on, read the whole answer, then close the client's connection without
    /// answering: the request was applied but the client cannot know.
    DropResponse,
    /// Close the client's connection without sending the request on: nothing was applied.
    CloseWithoutForwarding,
    /// Answer with DynamoDB's throttling error (HTTP 400, `ThrottlingException`) without
    /// sending the request on.
    Throttle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Always,
    EveryNth(u64),
    NextK(u64),
}

/// When to inject which fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    fault: Fault,
    target: Option<String>,
    when: When,
}

impl FaultRule {
    /// `fault` on every request (narrow it with the other methods).
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            target: None,
            when: When::Always,
        }
    }

    /// Only requests whose `X-Amz-Target` is `target` or ends with `.target`
    /// (`"TransactWriteItems"` matches `DynamoDB_20120810.TransactWriteItems`).
    pub fn on_target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Fire on the Nth matching request, the 2Nth, and so on (`n` of 0 is taken as 1).
    pub fn every_nth(mut self, n: u64) -> Self {
        self.when = When::EveryNth(n.max(1));
        self
    }

    /// Fire on the next `k` matching requests, then never again.
    pub fn next(mut self, k: u64) -> Self {
        self.when = When::NextK(k);
        self
    }

    fn matches(&self, target: &str) -> bool {
        match &self.target {
            None => true,
            Some(t) => {
                target == t
                    || target
                        .strip_suffix(t.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
        }
    }
}

/// What the proxy did with requests of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultTally {
    pub forwarded: u64,
    pub responses_dropped: u64,
    pub closed_unforwarded: u64,
    pub throttled: u64,
}

impl FaultTally {
    fn add(&mut self, fault: Fault) {
        match fault {
            Fault::Forward => self.forwarded += 1,
            Fault::DropResponse => self.responses_dropped += 1,
            Fault::CloseWithoutForwarding => self.closed_unforwarded += 1,
            Fault::Throttle => self.throttled += 1,
        }
    }

    /// Requests that met a fault.
    pub fn faults(&self) -> u64 {
        self.responses_dropped + self.closed_unforwarded + self.throttled
    }
}

/// What the proxy did, in total and per `X-Amz-Target` (`""` for requests without one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub total: FaultTally,
    pub by_target: BTreeMap<String, FaultTally>,
}

struct RuleState {
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

#[derive(Default)]
struct State {
    rules: Vec<RuleState>,
    counts: FaultCounts,
}

impl State {
    fn decide(&mut self, target: &str) -> Fault {
        let mut decision = None;
        for r in &mut self.rules {
            if !r.rule.matches(target) {
                continue;
            }
            r.matched += 1;
            let fires = match r.rule.when {
                When::Always => true,
                When::EveryNth(n) => r.matched % n == 0,
                When::NextK(k) => r.fired < k,
            };
            if fires && decision.is_none() {
                r.fired += 1;
                decision = Some(r.rule.fault);
            }
        }
        decision.unwrap_or(Fault::Forward)
    }

    fn count(&mut self, target: &str, fault: Fault) {
        self.counts.total.add(fault);
        self.counts
            .by_target
            .entry(short_target(target).to_string())
            .or_default()
            .add(fault);
    }
}

/// `DynamoDB_20120810.GetItem` → `GetItem`.
fn short_target(target: &str) -> &str {
    target.rsplit('.').next().unwrap_or(target)
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running proxy on a loopback port; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Shared,
    stop: watch::Sender<bool>,
}

impl FaultProxy {
    /// Start a proxy to `upstream` (`host:port`, or an `http://` URL), forwarding everything
    /// until rules are added.
    pub async fn start(upstream: &str) -> io::Result<FaultProxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let accept_state = state.clone();
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped_accept.changed() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let (upstream, state, mut stopped) =
                    (upstream.clone(), accept_state.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(client, &upstream, &state) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(FaultProxy { addr, state, stop })
    }

    /// The URL clients use instead of the upstream's (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Add a rule after the existing ones.
    pub fn add_rule(&self, rule: FaultRule) {
        lock(&self.state).rules.push(RuleState {
            rule,
            matched: 0,
            fired: 0,
        });
    }

    /// Remove every rule: forward everything from now on.
    pub fn clear_rules(&self) {
        lock(&self.state).rules.clear();
    }

    pub fn counts(&self) -> FaultCounts {
        lock(&self.state).counts.clone()
    }

    /// How many requests each rule (in the order added, since the last
    /// [`FaultProxy::clear_rules`]) matched and fired on: `(matched, fired)`.
    pub fn rule_counts(&self) -> Vec<(u64, u64)> {
        lock(&self.state)
            .rules
            .iter()
            .map(|r| (r.matched, r.fired))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The largest request or response head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// One HTTP/1.1 message as read off the wire: its bytes, unchanged, and what the proxy
/// needs to know about it.
struct Message {
    raw: Vec<u8>,
    headers: Vec<(String, String)>,
    /// The start line (`POST / HTTP/1.1`, `HTTP/1.1 200 OK`).
    start: String,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the sender will close the connection after this message.
    fn closes(&self) -> bool {
        match self.header("connection") {
            Some(c) => c.eq_ignore_ascii_case("close"),
            None => self.start.starts_with("HTTP/1.0") || self.start.ends_with("HTTP/1.0"),
        }
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Read a start line and headers; `None` at a clean end of stream before any byte.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(bad("the stream ended inside a message head"))
            };
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            return Err(bad("message head too large"));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            if lines.is_empty() {
                // Stray line breaks between messages are allowed; skip them.
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(text);
    }
    let start = lines.first().cloned().unwrap_or_default();
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Message {
        raw,
        headers,
        start,
    }))
}

/// Append a body framed as `head` says to `head.raw`. `until_close`: a response with
/// neither length nor chunking runs to the end of the stream.
async fn read_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    head: &mut Message,
    until_close: bool,
) -> io::Result<()> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await? == 0 {
                return Err(bad("the stream ended inside a chunked body"));
            }
            head.raw.extend_from_slice(&line);
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t).await? == 0 {
                        return Err(bad("the stream ended inside chunk trailers"));
                    }
                    head.raw.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(());
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            head.raw.extend_from_slice(&chunk);
        }
    }
    if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        head.raw.extend_from_slice(&body);
        return Ok(());
    }
    if until_close {
        r.read_to_end(&mut head.raw).await?;
    }
    Ok(())
}

/// Serve one client connection until it closes or a fault closes it.
async fn serve(client: TcpStream, upstream: &str, state: &Shared) -> io::Result<()> {
    let (read, mut write) = client.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Some(mut request) = read_head(&mut read).await? else {
            return Ok(());
        };
        read_body(&mut read, &mut request, false).await?;
        let target = request.header("x-amz-target").unwrap_or("").to_string();
        let fault = lock(state).decide(&target);
        match fault {
            Fault::CloseWithoutForwarding => {
                lock(state).count(&target, fault);
                return Ok(());
            }
            Fault::Throttle => {
                write.write_all(&throttling_response()).await?;
                lock(state).count(&target, fault);
            }
            Fault::Forward | Fault::DropResponse => {
                let (response, upstream_closes) = forward(upstream, &request).await?;
                lock(state).count(&target, fault);
                if fault == Fault::DropResponse {
                    return Ok(());
                }
                write.write_all(&response).await?;
                if upstream_closes {
                    return Ok(());
                }
            }
        }
        if request.closes() {
            return Ok(());
        }
    }
}

/// Send `request` to `upstream` on a new connection and read the whole response (and any
/// interim `1xx` ones before it); also whether the client must see the connection close.
async fn forward(upstream: &str, request: &Message) -> io::Result<(Vec<u8>, bool)> {
    let mut conn = BufReader::new(TcpStream::connect(upstream).await?);
    conn.get_mut().write_all(&request.raw).await?;
    let mut out = Vec::new();
    loop {
        let mut response = read_head(&mut conn)
            .await?
            .ok_or_else(|| bad("the server closed the connection without answering"))?;
        let status: u16 = response
            .start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {:?}", response.start)))?;
        let framed = response.header("content-length").is_some()
            || response.header("transfer-encoding").is_some();
        let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
        if !bodiless {
            read_body(&mut conn, &mut response, true).await?;
        }
        let closes = response.closes() || (!bodiless && !framed);
        out.extend_from_slice(&response.raw);
        if !(100..200).contains(&status) {
            return Ok((out, closes));
        }
    }
}

fn throttling_response() -> Vec<u8> {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\n\
         x-amzn-RequestId: fault-proxy-throttle\r\n\
         x-amzn-ErrorType: ThrottlingException\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         Content-Length: {}\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every request with its body echoed back (keep-alive), and
    /// counts the requests it saw.
    async fn echo_server() -> (String, Arc<Mutex<u64>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(0u64));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    while let Ok(Some(mut req)) = read_head(&mut conn).await {
                        if read_body(&mut conn, &mut req, false).await.is_err() {
                            return;
                        }
                        *counter.lock().unwrap() += 1;
                        let head_len =
                            req.raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let body = req.raw[head_len..].to_vec();
                        let mut resp =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        resp.extend_from_slice(&body);
                        if conn.get_mut().write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn request(target: &str, body: &str) -> Vec<u8> {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.{target}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Send one request on `conn`; the response head and body, or `None` if the proxy
    /// closed the connection.
    async fn exchange(conn: &mut BufReader<TcpStream>, raw: &[u8]) -> Option<(String, String)> {
        conn.get_mut().write_all(raw).await.ok()?;
        let mut resp = read_head(conn).await.ok()??;
        read_body(conn, &mut resp, false).await.ok()?;
        let text = String::from_utf8_lossy(&resp.raw).to_string();
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some((resp.start.clone(), body.to_string()))
    }

    async fn connect(proxy: &FaultProxy) -> BufReader<TcpStream> {
        BufReader::new(TcpStream::connect(proxy.addr()).await.unwrap())
    }

    #[tokio::test]
    async fn forwards_requests_on_one_keep_alive_connection() {
        let (upstream, seen) = echo_server().await;
        let proxy = FaultProxy::start(&format!("http://{upstream}/"))
            .await
            .unwrap();
        let mut conn = connect(&proxy).await;
        for i in 0..3 {
            let (status, body) = exchange(&mut conn, &request("GetItem", &format!("hello {i}")))
                .await
                .unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(body, format!("hello {i}"));
        }
        assert_eq!(*seen.lock().unwrap(), 3);
        assert_eq!(proxy.counts().total.forwarded, 3);
        assert_eq!(proxy.counts().by_target["GetItem"].forwarded, 3);
    }

    #[tokio::test]
    async fn every_nth_matching_request_meets_its_fault() {
        let (upstream, seen) = echo_server().await;
        let proxy = FaultProxy::start(&upstream).await.unwrap();
        proxy.add_rule(
            FaultRule::new(Fault::DropResponse)
                .on_target("TransactWriteItems")
                .every_nth(2),
        );
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let mut conn = connect(&proxy).await;
            // Requests to another operation do not count toward the rule.
            assert!(exchange(&mut conn, &request("GetItem", "r"))
                .await
                .is_some());
            outcomes.push(
                exchange(&mut conn, &request("TransactWriteItems", "w"))
                    .await
                    .is_some(),
            );
        }
        assert_eq!(outcomes, [true, false, true, false]);
        assert_eq!(proxy.rule_counts(), [(4, 2)]);
        // Dropped responses were still applied upstream.
        assert_eq!(*seen.lock().unwrap(), 8);
        let counts = proxy.counts();
        assert_eq!(counts.by_target["TransactWriteItems"].responses_dropped, 2);
        assert_eq!(counts.by_target["TransactWriteItems"].forwarded, 2);
        assert_eq!(counts.total.faults(), 2);
    }

    #[tokio::test]
    async fn the_next_k_requests_are_throttled_or_cut_off() {
        let (upstream, seen) = echo_server().await;
        let proxy = FaultProxy::start(&upstream).await.unwrap();
        proxy.add_rule(FaultRule::new(Fault::Throttle).next(2));
        let mut conn = connect(&proxy).await;
        for _ in 0..2 {
            let (status, body) = exchange(&mut conn, &request("PutItem", "x")).await.unwrap();
            assert_eq!(status, "HTTP/1.1 400 Bad Request");
            assert!(body.contains("ThrottlingException"), "{body}");
        }
        assert!(exchange(&mut conn, &request("PutItem", "x"))
            .await
            .is_some());
        assert_eq!(
            *seen.lock().unwrap(),
            1,
            "throttled requests never reach the server"
        );

        proxy.clear_rules();
        proxy.add_rule(FaultRule::new(Fault::CloseWithoutForwarding).next(1));
        assert!(exchange(&mut conn, &request("PutItem", "y"))
            .await
            .is_none());
        let mut conn = connect(&proxy).await;
        assert!(exchange(&mut conn, &request("PutItem", "z"))
            .await
            .is_some());
        assert_eq!(*seen.lock().unwrap(), 2);
        let counts = proxy.counts().total;
        assert_eq!(
            (
                counts.throttled,
                counts.closed_unforwarded,
                counts.forwarded
            ),
            (2, 1, 2)
        );
    }

    #[tokio::test]
    async fn chunked_bodies_are_relayed_whole() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(&upstream).await.unwrap();
        let mut conn = connect(&proxy).await;
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        // The echo server reads the chunked body; it answers with the raw chunks as body.
        let (status, body) = exchange(&mut conn, raw).await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
    }
}
