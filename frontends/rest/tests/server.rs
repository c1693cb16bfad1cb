//! The REST server in this process over a real socket: what needs a configuration the
//! `strata` binary does not expose cheaply (a short transaction idle timeout), and
//! bootstrap from a `db.toml`, run twice.

use std::sync::Arc;
use std::time::Duration;

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
