//! The server over a memory engine, driven by tokio-postgres and by hand-made protocol
//! messages: describe and parameter types, transaction status, cancellation, clients that
//! vanish mid-transaction, and malformed input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{Engine, EngineConfig};
use strata_pgwire::{Auth, Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

const TOKEN: &str = "protocol-test-token";

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A server on a free port; panics anywhere in the process are counted.
async fn server(auth: Auth) -> String {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let engine = Arc::new(Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::new()),
        EngineConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(engine, Config { auth, tls: None });
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    addr
}

async fn connect(addr: &str, password: Option<&str>) -> Result<Client, tokio_postgres::Error> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port.parse().unwrap())
        .user("tester")
        .dbname("default");
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> &str {
    e.code().map(|c| c.code()).unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_describe_their_parameters_and_columns() {
    let addr = server(Auth::Scram(TOKEN.into())).await;
    let c = connect(&addr, Some(TOKEN)).await.unwrap();
    c.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score DOUBLE, born DATE)")
        .await
        .unwrap();
    let insert = c
        .prepare("INSERT INTO t VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        &[Type::INT8, Type::TEXT, Type::FLOAT8, Type::DATE]
    );
    assert!(insert.columns().is_empty());
    let select = c
        .prepare("SELECT name, score FROM t WHERE id = $1 OR name LIKE $2 LIMIT $3")
        .await
        .unwrap();
    assert_eq!(select.params(), &[Type::INT8, Type::TEXT, Type::INT8]);
    let columns: Vec<(&str, &Type)> = select
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_()))
        .collect();
    assert_eq!(columns, [("name", &Type::TEXT), ("score", &Type::FLOAT8)]);
    let update = c
        .prepare("UPDATE t SET score = $1 WHERE id IN ($2, $3) RETURNING id")
        .await
        .unwrap();
    assert_eq!(update.params(), &[Type::FLOAT8, Type::INT8, Type::INT8]);
    assert_eq!(update.columns()[0].type_(), &Type::INT8);

    // One statement, run many times with different values.
    for i in 0..20i64 {
        let born = chrono::NaiveDate::from_ymd_opt(2024, 1, 1 + (i % 28) as u32).unwrap();
        c.execute(&insert, &[&i, &format!("n{i}"), &(i as f64 / 2.0), &born])
            .await
            .unwrap();
    }
    let rows = c.query(&select, &[&7i64, &"n1%", &100i64]).await.unwrap();
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    assert_eq!(
        names,
        ["n1", "n10", "n11", "n12", "n13", "n14", "n15", "n16", "n17", "n18", "n19", "n7"]
    );
    let updated = c.query(&update, &[&9.5f64, &1i64, &2i64]).await.unwrap();
    assert_eq!(updated.len(), 2);
    // A parameter of the wrong type is refused by the client before it reaches us; a
    // wrong count is refused by the server.
    assert!(c.query(&select, &[&1i64]).await.is_err());
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_aborts_the_transaction_and_the_status_says_so() {
    let addr = server(Auth::Trust).await;
    let c = connect(&addr, None).await.unwrap();
    c.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    // COMMIT of an aborted transaction rolls it back.
    let msgs = c.simple_query("COMMIT").await.unwrap();
    let tag = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(tag, Some(0));
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing of the aborted transaction was kept");
    // Several statements in one simple query: answers up to the first error.
    let e = c
        .simple_query("INSERT INTO t VALUES (5); SELEC; INSERT INTO t VALUES (6)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a text that does not parse runs nothing");
    c.simple_query("INSERT INTO t VALUES (5); INSERT INTO t VALUES (5); INSERT INTO t VALUES (6)")
        .await
        .unwrap_err();
    let ids: Vec<i64> = c
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [5], "statements after the failing one do not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_transaction_leaves_nothing_behind() {
    let addr = server(Auth::Trust).await;
    let c = connect(&addr, None).await.unwrap();
    c.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    {
        let gone = connect(&addr, None).await.unwrap();
        gone.batch_execute(
            "BEGIN; INSERT INTO t VALUES (1, 'never committed'); UPDATE t SET v = 'x'",
        )
        .await
        .unwrap();
        drop(gone);
    }
    // The same key is free to write at once, and nothing of the vanished one shows.
    c.batch_execute("INSERT INTO t VALUES (1, 'mine')")
        .await
        .unwrap();
    let v: String = c
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_can_be_cancelled() {
    let addr = server(Auth::Trust).await;
    let c = connect(&addr, None).await.unwrap();
    c.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute(&format!(
        "INSERT INTO t VALUES {}",
        (0..400)
            .map(|i| format!("({i})"))
            .collect::<Vec<_>>()
            .join(",")
    ))
    .await
    .unwrap();
    let token = c.cancel_token();
    // Far longer than the test. Cancel until the query answers: a cancel that arrives
    // before the query starts is ignored, so keep sending.
    let query = tokio::spawn(async move {
        let r = c
            .query_one(
                "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 9",
                &[],
            )
            .await;
        (c, r)
    });
    let mut query = query;
    let (c, result) = loop {
        tokio::select! {
            done = &mut query => break done.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                token.cancel_query(NoTls).await.unwrap();
            }
        }
    };
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    // The connection goes on.
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked() {
    for auth in [Auth::Scram(TOKEN.into()), Auth::Password(TOKEN.into())] {
        let addr = server(auth).await;
        assert!(connect(&addr, Some(TOKEN)).await.is_ok());
        let e = connect(&addr, Some("wrong")).await.unwrap_err();
        assert_eq!(sqlstate(&e), "28P01");
        assert!(connect(&addr, None).await.is_err());
    }
}

/// A message: type byte, length, body.
fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup() -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for s in ["user", "raw", "database", "default", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Send `bytes` after a valid startup, then read until the server closes or goes quiet.
async fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// The SQLSTATEs of the ErrorResponses in `bytes`.
fn error_codes(bytes: &[u8]) -> Vec<String> {
    let mut codes = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let ty = bytes[i];
        let len = u32::from_be_bytes(bytes[i + 1..i + 5].try_into().unwrap()) as usize;
        let end = (i + 1 + len).min(bytes.len());
        if ty == b'E' {
            let body = &bytes[i + 5..end];
            let mut j = 0;
            while j < body.len() && body[j] != 0 {
                let field = body[j];
                let rest = &body[j + 1..];
                let n = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                if field == b'C' {
                    codes.push(String::from_utf8_lossy(&rest[..n]).into_owned());
                }
                j += 1 + n + 1;
            }
        }
        i += 1 + len;
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_extended_protocol_input_gets_error_responses() {
    let addr = server(Auth::Trust).await;
    let sync = msg(b'S', &[]);
    // Bind to a statement that was never parsed.
    let mut bind = cstr("");
    bind.extend(cstr("nope"));
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let got = exchange(&addr, &[msg(b'B', &bind), sync.clone()].concat()).await;
    assert_eq!(error_codes(&got), ["26000"]);
    // Execute a portal that does not exist.
    let mut exec = cstr("noportal");
    exec.extend_from_slice(&0u32.to_be_bytes());
    let got = exchange(&addr, &[msg(b'E', &exec), sync.clone()].concat()).await;
    assert_eq!(error_codes(&got), ["34000"]);
    // Parse one parameter, bind none.
    let mut parse = cstr("s1");
    parse.extend(cstr("SELECT $1::BIGINT"));
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut bind = cstr("");
    bind.extend(cstr("s1"));
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut exec = cstr("");
    exec.extend_from_slice(&0u32.to_be_bytes());
    let got = exchange(
        &addr,
        &[
            msg(b'P', &parse),
            msg(b'B', &bind),
            msg(b'E', &exec),
            sync.clone(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(error_codes(&got), ["08P01"]);
    // A parameter that is not what its type says.
    let mut parse = cstr("s2");
    parse.extend(cstr("SELECT $1"));
    parse.extend_from_slice(&1u16.to_be_bytes());
    parse.extend_from_slice(&20u32.to_be_bytes()); // int8
    let mut bind = cstr("");
    bind.extend(cstr("s2"));
    bind.extend_from_slice(&0u16.to_be_bytes());
    bind.extend_from_slice(&1u16.to_be_bytes());
    bind.extend_from_slice(&3u32.to_be_bytes());
    bind.extend_from_slice(b"abc");
    bind.extend_from_slice(&0u16.to_be_bytes());
    let got = exchange(
        &addr,
        &[
            msg(b'P', &parse),
            msg(b'B', &bind),
            msg(b'E', &exec),
            sync.clone(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(error_codes(&got), ["22P02"]);
    // Two statements in one Parse.
    let mut parse = cstr("s3");
    parse.extend(cstr("SELECT 1; SELECT 2"));
    parse.extend_from_slice(&0u16.to_be_bytes());
    let got = exchange(&addr, &[msg(b'P', &parse), sync].concat()).await;
    assert_eq!(error_codes(&got), ["42601"]);
    // A message longer than the limit is refused from its header, before its body.
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&((64u32 << 20) + 5).to_be_bytes());
    huge.extend_from_slice(b"SELECT 1");
    assert_eq!(error_codes(&exchange(&addr, &huge).await), ["54000"]);
    // A message whose fields do not fit its length is refused, not decoded.
    let mut short = vec![b'E'];
    short.extend_from_slice(&6u32.to_be_bytes());
    short.extend_from_slice(b"\0\0");
    assert_eq!(error_codes(&exchange(&addr, &short).await), ["08P01"]);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_truncated_messages_never_hurt_the_server() {
    let addr = server(Auth::Trust).await;
    let bystander = connect(&addr, None).await.unwrap();
    bystander
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // The same "random" bytes on every run.
    let mut rng = strata_engine::XorShift(0x5eed_1234_abcd_0042);
    let valid: Vec<Vec<u8>> = vec![
        msg(b'Q', &cstr("SELECT * FROM t")),
        {
            let mut p = cstr("x");
            p.extend(cstr("SELECT $1"));
            p.extend_from_slice(&0u16.to_be_bytes());
            msg(b'P', &p)
        },
        msg(b'S', &[]),
        msg(b'D', &[b'S', b'x', 0]),
    ];
    for round in 0..60u32 {
        let mut bytes = Vec::new();
        for _ in 0..(rng.next_u64() % 4 + 1) {
            let mut m = valid[(rng.next_u64() % valid.len() as u64) as usize].clone();
            match rng.next_u64() % 5 {
                // Truncated.
                0 => m.truncate((rng.next_u64() % m.len() as u64) as usize),
                // A byte flipped.
                1 => {
                    let i = (rng.next_u64() % m.len() as u64) as usize;
                    m[i] ^= (rng.next_u64() % 255 + 1) as u8;
                }
                // A length that lies (huge or too small).
                2 => {
                    let len = if rng.next_u64().is_multiple_of(2) {
                        0x7fff_fff0u32
                    } else {
                        (rng.next_u64() % 4) as u32
                    };
                    m[1..5].copy_from_slice(&len.to_be_bytes());
                }
                // Garbage.
                3 => {
                    m = (0..rng.next_u64() % 64)
                        .map(|_| rng.next_u64() as u8)
                        .collect()
                }
                _ => {}
            }
            bytes.extend(m);
        }
        if round.is_multiple_of(3) {
            // Garbage before the startup message, too.
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let _ = s.write_all(&bytes).await;
            drop(s);
        } else {
            exchange(&addr, &bytes).await;
        }
    }
    // The bystander's connection, and new ones, are unaffected.
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let fresh = connect(&addr, None).await.unwrap();
    fresh
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_return_rows_in_the_batches_the_client_asks_for() {
    let addr = server(Auth::Trust).await;
    let mut client = connect(&addr, None).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind(
            "SELECT x FROM generate_series(1, 5) AS t(x) ORDER BY x",
            &[],
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut batches = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        batches.push(rows.len());
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_eq!(batches, vec![2, 2, 1, 0]);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_and_pipelined_statements_arrive_whole() {
    let addr = server(Auth::Trust).await;
    let client = connect(&addr, None).await.unwrap();
    // Far more than the server buffers before writing.
    let rows = client
        .query(
            "SELECT x, repeat('y', 1000) AS pad FROM generate_series(1, 2000) AS t(x) ORDER BY x",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2000);
    assert_eq!(rows[1999].get::<_, i64>(0), 2000);
    assert_eq!(rows[0].get::<_, String>(1).len(), 1000);
    // Many statements in flight at once on one connection: every answer comes back.
    // A parameter cast to a type takes that type.
    let statement = client.prepare("SELECT $1::BIGINT + 1").await.unwrap();
    assert_eq!(statement.params(), &[tokio_postgres::types::Type::INT8]);
    let answers = futures::future::join_all((0..200i64).map(|i| {
        let (client, statement) = (&client, &statement);
        async move {
            client
                .query_one(statement, &[&i])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    }))
    .await;
    assert_eq!(answers, (1..=200).collect::<Vec<i64>>());
}
