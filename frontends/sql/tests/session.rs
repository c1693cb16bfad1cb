//! End-to-end behaviour of a session over the in-memory backend.

use std::sync::Arc;

use strata_engine::{Engine, EngineConfig};
use strata_sql::{Datum, Output, Session};

fn engine() -> Engine {
    Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::new()),
        EngineConfig::default(),
    )
}

async fn rows(s: &mut Session, sql: &str) -> Vec<Vec<Datum>> {
    match s.execute(sql).await {
        Ok(Output::Rows(r)) => r.rows().unwrap(),
        other => panic!("{sql}: {other:?}"),
    }
}

#[tokio::test]
async fn create_insert_select_update_delete() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score DOUBLE)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0)")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT id, name FROM t WHERE id = 2").await,
        vec![vec![Datum::Int(2), Datum::Text("b".into())]]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE id >= 2").await,
        vec![vec![Datum::Int(2)]]
    );
    match s
        .execute("UPDATE t SET score = score * 2 WHERE id <> 2")
        .await
        .unwrap()
    {
        Output::Affected { rows } => assert_eq!(rows, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rows(&mut s, "SELECT sum(score) FROM t").await,
        vec![vec![Datum::Float(9.0)]]
    );
    s.execute("DELETE FROM t WHERE name = 'a'").await.unwrap();
    assert_eq!(
        rows(&mut s, "SELECT id FROM t ORDER BY id").await,
        vec![vec![Datum::Int(2)], vec![Datum::Int(3)]]
    );
    let e = s
        .execute("INSERT INTO t VALUES (2, 'x', 0)")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    let e = s
        .execute("INSERT INTO t (id) VALUES (9)")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23502", "{e}");
    s.execute("INSERT INTO t (name) VALUES ('auto')")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT id FROM t WHERE name = 'auto'").await,
        vec![vec![Datum::Int(4)]]
    );
}

#[tokio::test]
async fn indexes_transactions_and_rollback() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE u (a INTEGER, b TEXT)")
        .await
        .unwrap();
    s.execute("INSERT INTO u VALUES (1, 'x'), (2, 'y'), (NULL, 'z')")
        .await
        .unwrap();
    s.execute("CREATE UNIQUE INDEX u_a ON u (a)").await.unwrap();
    let e = s
        .execute("INSERT INTO u VALUES (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505");
    s.execute("INSERT INTO u VALUES (NULL, 'another null')")
        .await
        .unwrap();
    s.execute("BEGIN").await.unwrap();
    s.execute("INSERT INTO u VALUES (10, 'in txn')")
        .await
        .unwrap();
    assert!(s
        .execute("INSERT INTO u VALUES (11, 'ok'), (1, 'dup')")
        .await
        .is_err());
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM u").await,
        vec![vec![Datum::Int(5)]]
    );
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows(&mut s, "SELECT b FROM u WHERE a = 2").await,
        vec![vec![Datum::Text("y".into())]]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM u WHERE a IS NULL").await,
        vec![vec![Datum::Int(2)]]
    );
}

#[tokio::test]
async fn oversized_values_keys_and_transactions_are_refused_and_change_nothing() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let big = "x".repeat(70_000);
    let e = s
        .execute(&format!("INSERT INTO t VALUES ('a', '{big}')"))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    let long_key = "k".repeat(3_000);
    let e = s
        .execute(&format!("INSERT INTO t VALUES ('{long_key}', 'v')"))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    // 200 rows of 60 KB: over the 10 MiB a transaction may write.
    let e = s
        .execute("INSERT INTO t SELECT CAST(value AS TEXT), repeat('x', 60000) FROM generate_series(1, 200)")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(0)]]
    );
}
