//! The REST server in this process over a real socket: what needs a configuration the
//! `strata` binary does not expose cheaply (a short transaction idle timeout), bootstrap
//! from a `db.toml`, run twice, and dead letters made through the engine, then purged.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use strata_engine::{Engine, EngineConfig};
use strata_rest::config::{bootstrap, DbToml};
use strata_rest::{Client, ClientError, Config, Server};

fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::default()),
        EngineConfig::default(),
    ))
}

async fn serve(engine: Arc<Engine>, config: Config) -> (Client, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::new(engine, config).serve(listener, async {
        let _ = stopped.await;
    }));
    (Client::new(&url, None).unwrap(), stop)
}

#[tokio::test]
async fn an_idle_transaction_is_rolled_back() {
    let idle = Duration::from_millis(50);
    let config = Config {
        transaction_idle_timeout: idle,
        ..Config::default()
    };
    let (c, _stop) = serve(engine(), config).await;
    c.create_database("app").await.unwrap();
    c.execute("app", "CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    let tx = c.begin("app").await.unwrap();
    assert_eq!(tx.idle_timeout_ms, 50);
    c.execute_in("app", "INSERT INTO t VALUES (1)", &[], Some(&tx.tx))
        .await
        .unwrap();
    // Longer than the idle timeout: sleeping at least this long is certain, whatever the
    // machine's speed.
    tokio::time::sleep(idle * 3).await;
    match c.commit(&tx.tx).await {
        Err(ClientError::Refused {
            status: 404, error, ..
        }) => {
            assert!(error.contains("idle"), "{error}")
        }
        other => panic!("an idle transaction is gone: {other:?}"),
    }
    let rows = c
        .query_oltp("app", "SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![json!(0)]], "its write was rolled back");
}

const SAMPLE: &str = r#"
[server]
host = "127.0.0.1"
port = 4200

[databases.users]
durability = "async"

[databases.users.tables.customers]
sql = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT)"
indexes = { by_email = "CREATE UNIQUE INDEX customers_email ON customers (email)" }

[databases."project/orders".tables.orders]
sql = "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER)"
"#;

#[tokio::test]
async fn bootstrap_twice_changes_nothing_the_second_time() {
    let engine = engine();
    let config = DbToml::parse(SAMPLE, None).unwrap();
    let first = bootstrap(&engine, &config).await.unwrap();
    assert_eq!(first.databases_created, vec!["project/orders", "users"]);
    assert_eq!(
        first.statements,
        vec![
            "project/orders.orders",
            "users.customers",
            "users.customers.by_email"
        ]
    );
    let users = engine.database("users").await.unwrap();
    assert_eq!(users.options().durability, strata_engine::Durability::Async);
    let versions = |e: &Arc<Engine>| {
        let e = e.clone();
        async move {
            let mut v = Vec::new();
            for name in ["users", "project/orders"] {
                v.push(e.database(name).await.unwrap().version());
            }
            v
        }
    };
    let before = versions(&engine).await;
    let second = bootstrap(&engine, &config).await.unwrap();
    assert_eq!(second, Default::default(), "the second run creates nothing");
    assert_eq!(versions(&engine).await, before, "and commits nothing");
    // The index works.
    let mut s = strata_sql::Session::new(engine.clone());
    s.set_database("users").await.unwrap();
    s.execute("INSERT INTO customers VALUES (1, 'ann', 'a@x')")
        .await
        .unwrap();
    assert!(s
        .execute("INSERT INTO customers VALUES (2, 'bob', 'a@x')")
        .await
        .is_err());
}

#[tokio::test]
async fn dead_letters_are_purged_over_http() {
    let engine = engine();
    let (c, _stop) = serve(engine.clone(), Config::default()).await;
    c.create_database("jobs").await.unwrap();
    let db = engine.database("jobs").await.unwrap();
    // Two messages the queue gives up on at their first failed delivery.
    for payload in [&b"one"[..], b"two"] {
        let mut e = strata_engine::Enqueue::now(strata_engine::Value::bytes(payload.to_vec()));
        e.backoff_schedule = Some(vec![]);
        e.dead_letter_keys = vec![[b"dead/", payload].concat()];
        db.atomic_write(strata_engine::AtomicWrite::new().enqueue(e))
            .await
            .unwrap();
    }
    for m in db.lease(2, Duration::from_secs(60)).await.unwrap() {
        db.nack(m.id, m.lease).await.unwrap();
    }
    let view = c.queue("jobs", 10).await.unwrap();
    assert_eq!(view.dead_letter_count, 2);
    let oldest = view.dead_letters.iter().map(|m| m.ready_at).min().unwrap();
    // Nothing was given up on before the oldest; then all of them go.
    assert_eq!(
        c.purge_dead_letters("jobs", Some(oldest))
            .await
            .unwrap()
            .purged,
        0
    );
    assert_eq!(c.purge_dead_letters("jobs", None).await.unwrap().purged, 2);
    assert_eq!(c.queue("jobs", 10).await.unwrap().dead_letter_count, 0);
    assert!(
        c.kv_get("jobs", "dead/one").await.is_ok(),
        "the payload stays at its dead-letter key"
    );
    // Bad input: an unknown database, a time that is not a number, an unknown parameter,
    // a method the path does not take.
    for (method, path, status) in [
        (Method::DELETE, "/db/nope/queue/dead-letters", 404),
        (
            Method::DELETE,
            "/db/jobs/queue/dead-letters?before=soon",
            400,
        ),
        (Method::DELETE, "/db/jobs/queue/dead-letters?limit=3", 400),
        (Method::GET, "/db/jobs/queue/dead-letters", 405),
    ] {
        let (got, body) = c.request(method.clone(), path, None).await.unwrap();
        assert_eq!(got.as_u16(), status, "{method} {path}: {body}");
    }
}
