//! End-to-end behaviour of a session over the in-memory backend.

use std::sync::Arc;

use strata_engine::Engine;
use strata_sql::{Datum, Output, Session};

mod common;
use common::{engine, rows};

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

/// CREATE INDEX outside a transaction fills the index in chunks, each its own transaction,
/// while other sessions keep writing: the build pauses after every chunk (a hook, not a
/// sleep), a writer changes rows behind and ahead of it, and at the end the index matches
/// the table exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_index_builds_online_while_writers_change_rows() {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.execute("CREATE TABLE big (id BIGINT PRIMARY KEY, k BIGINT, pad TEXT)")
        .await
        .unwrap();
    const ROWS: i64 = 5000;
    for c in 0..ROWS / 500 {
        let values: Vec<String> = (c * 500..(c + 1) * 500)
            .map(|i| format!("({i}, {}, 'row {i}')", i % 97))
            .collect();
        s.execute(&format!("INSERT INTO big VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
    let (at_chunk_tx, mut at_chunk) = tokio::sync::mpsc::channel::<u64>(1);
    let (resume_tx, resume) = tokio::sync::mpsc::channel::<()>(1);
    let resume = Arc::new(tokio::sync::Mutex::new(resume));
    s.on_index_build_chunk(move |n| {
        let (at, resume) = (at_chunk_tx.clone(), resume.clone());
        Box::pin(async move {
            let _ = at.send(n).await;
            resume.lock().await.recv().await;
        })
    });
    let mut build = tokio::spawn(async move {
        let r = s.execute("CREATE INDEX big_k ON big (k)").await;
        (s, r)
    });
    let mut w = Session::new(engine.clone());
    let mut paused = 0;
    let (mut s, result) = loop {
        tokio::select! {
            done = &mut build => break done.unwrap(),
            Some(n) = at_chunk.recv() => {
                paused += 1;
                let n = n as i64;
                // Behind the build, ahead of it, a delete and a new row.
                w.execute(&format!("UPDATE big SET k = k + 1000 WHERE id = {}", n * 7)).await.unwrap();
                w.execute(&format!("UPDATE big SET k = 42 WHERE id = {}", ROWS - 1 - n)).await.unwrap();
                w.execute(&format!("DELETE FROM big WHERE id = {}", n * 13 + 1)).await.unwrap();
                w.execute(&format!("INSERT INTO big VALUES ({}, 42, 'new')", 10_000 + n)).await.unwrap();
                // Queries stay right while the index is incomplete (they do not use it yet).
                let by_scan = rows(&mut w, "SELECT count(*) FROM big WHERE k + 0 = 42").await;
                let by_k = rows(&mut w, "SELECT count(*) FROM big WHERE k = 42").await;
                assert_eq!(by_scan, by_k);
                resume_tx.send(()).await.unwrap();
            }
        }
    };
    result.unwrap();
    s.on_index_build_chunk(|_| Box::pin(async {}));
    assert!(
        paused >= 5,
        "5,000 rows are built in several chunks ({paused})"
    );
    let reports = s.check().await.unwrap();
    let big = reports.iter().find(|r| r.table == "big").unwrap();
    assert!(big.problems.is_empty(), "{:?}", big.problems);
    assert_eq!(big.entries, big.rows, "one entry per row");
    for k in [42, 0, 1005, 96] {
        let sql = format!("SELECT id FROM big WHERE k = {k} ORDER BY id");
        let scan = format!("SELECT id FROM big WHERE k + 0 = {k} ORDER BY id");
        assert_eq!(
            rows(&mut s, &sql).await,
            rows(&mut s, &scan).await,
            "k = {k}"
        );
    }
    let plan = rows(&mut s, "EXPLAIN SELECT id FROM big WHERE k = 42").await;
    assert!(
        format!("{plan:?}").contains("big_k"),
        "the index serves queries: {plan:?}"
    );

    // A UNIQUE index over duplicate values fails, and takes itself out again.
    let e = s
        .execute("CREATE UNIQUE INDEX big_k_unique ON big (k)")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    let reports = s.check().await.unwrap();
    let big = reports.iter().find(|r| r.table == "big").unwrap();
    assert_eq!(
        big.entries, big.rows,
        "only big_k's entries are left: {big:?}"
    );
    s.execute("CREATE UNIQUE INDEX big_k_unique ON big (id, k)")
        .await
        .unwrap();
    // Inside a transaction the index is filled in the transaction and rolls back with it.
    s.execute("BEGIN").await.unwrap();
    s.execute("CREATE INDEX big_pad ON big (pad)")
        .await
        .unwrap();
    s.execute("ROLLBACK").await.unwrap();
    s.execute("CREATE INDEX big_pad ON big (pad)")
        .await
        .unwrap();
    let reports = s.check().await.unwrap();
    let big = reports.iter().find(|r| r.table == "big").unwrap();
    assert!(big.problems.is_empty(), "{:?}", big.problems);
    assert_eq!(big.entries, 3 * big.rows);
}

/// Rows leave a scan in key order, so ORDER BY on a key prefix needs no sort, and a LIMIT
/// on top reads only that many rows; other orders still sort, and all agree with a sort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_the_key_reads_in_key_order_without_a_sort() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE o (a INTEGER, b TEXT, c DOUBLE, d INTEGER, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    s.execute("CREATE INDEX o_d ON o (d)").await.unwrap();
    let values: Vec<String> = (0..300)
        .map(|i| {
            let d = if i % 7 == 0 {
                "NULL".to_string()
            } else {
                ((i * 37) % 101 - 50).to_string()
            };
            format!(
                "({}, 'k{}', {}, {d})",
                (i * 13) % 50 - 25,
                i % 9,
                i as f64 / 3.0
            )
        })
        .collect();
    s.execute(&format!(
        "INSERT OR IGNORE INTO o VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    let plan = |rows: Vec<Vec<Datum>>| format!("{rows:?}");
    for (sql, sorted_by_key) in [
        ("SELECT a, b FROM o ORDER BY a, b", true),
        ("SELECT a FROM o ORDER BY a LIMIT 5", true),
        (
            "SELECT a, b FROM o WHERE a BETWEEN -3 AND 7 ORDER BY a, b",
            true,
        ),
        (
            "SELECT a, b FROM o WHERE a IN (9, -4, 3) ORDER BY a, b",
            true,
        ),
        ("SELECT d, a, b FROM o WHERE d > -20 ORDER BY d, a, b", true),
        ("SELECT a, b FROM o ORDER BY b, a", false),
        ("SELECT c, a FROM o ORDER BY c LIMIT 4", false),
        ("SELECT a, b FROM o ORDER BY a DESC, b DESC LIMIT 7", false),
    ] {
        let explained = plan(rows(&mut s, &format!("EXPLAIN {sql}")).await);
        assert_eq!(
            !explained.contains("SortExec"),
            sorted_by_key,
            "{sql}: {explained}"
        );
        // The same query, forced through a sort (an expression key), gives the same rows.
        let forced = sql
            .replace("ORDER BY a", "ORDER BY a + 0")
            .replace("ORDER BY d", "ORDER BY d + 0")
            .replace("ORDER BY b", "ORDER BY b || ''")
            .replace("ORDER BY c", "ORDER BY c + 0");
        assert_ne!(forced, sql);
        assert_eq!(
            rows(&mut s, sql).await,
            rows(&mut s, &forced).await,
            "{sql}"
        );
    }
}

/// EXPLAIN names the fast path for point statements, and how INSERT, UPDATE and DELETE
/// find their rows; EXPLAIN ANALYZE of a point read reports the rows it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_fast_path_and_how_writes_find_rows() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, email TEXT UNIQUE, n INTEGER)")
        .await
        .unwrap();
    s.execute("INSERT INTO e VALUES (1, 'a@x', 10), (2, 'b@x', 20)")
        .await
        .unwrap();
    let text = |rows: Vec<Vec<Datum>>| {
        rows.iter()
            .map(|r| match (&r[0], &r[1]) {
                (Datum::Text(k), Datum::Text(p)) => format!("{k}: {p}"),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let t = text(rows(&mut s, "EXPLAIN SELECT n FROM e WHERE id = 2").await);
    assert_eq!(
        t,
        "physical_plan: FastPath: table=e, access=point read by primary key (id)"
    );
    let t = text(rows(&mut s, "EXPLAIN SELECT id FROM e WHERE email = 'b@x'").await);
    assert!(t.contains("point read by unique index"), "{t}");
    let t = text(rows(&mut s, "EXPLAIN ANALYZE SELECT n FROM e WHERE id = 2").await);
    assert!(t.starts_with("Plan with Metrics: FastPath"), "{t}");
    assert!(t.contains("output_rows=1"), "{t}");
    let t = text(rows(&mut s, "EXPLAIN UPDATE e SET n = n + 1 WHERE id = 1").await);
    assert_eq!(
        t,
        "physical_plan: Update: table=e, rows by FastPath: table=e, access=point read by primary key (id)"
    );
    let t = text(rows(&mut s, "EXPLAIN DELETE FROM e WHERE n > 5").await);
    assert!(
        t.starts_with("physical_plan: Delete: table=e, rows from:"),
        "{t}"
    );
    assert!(t.contains("StrataScan: table=e, access=full scan"), "{t}");
    let t = text(
        rows(
            &mut s,
            "EXPLAIN INSERT INTO e VALUES (3, 'c@x', 30), (4, 'd@x', 40)",
        )
        .await,
    );
    assert_eq!(
        t,
        "physical_plan: Insert: table=e, 2 rows of values (no planning)"
    );
    let t = text(
        rows(
            &mut s,
            "EXPLAIN INSERT INTO e SELECT id + 10, email || '.org', n FROM e WHERE id < 3",
        )
        .await,
    );
    assert!(
        t.contains("rows from:") && t.contains("StrataScan: table=e, access=primary key (id)"),
        "{t}"
    );
    // Explaining changed nothing.
    assert_eq!(
        rows(&mut s, "SELECT count(*), sum(n) FROM e").await,
        vec![vec![Datum::Int(2), Datum::Int(30)]]
    );
    // A query that is planned normally is explained by the planner.
    let t = text(rows(&mut s, "EXPLAIN SELECT sum(n) FROM e WHERE id >= 1").await);
    assert!(t.contains("StrataScan"), "{t}");
    let e = s
        .execute("EXPLAIN ANALYZE DELETE FROM e")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "0A000", "{e}");
}

/// Table definitions shared between a session's transactions follow the schema version:
/// another session's ALTER is seen by the next statement, and a rolled-back ALTER leaves
/// no trace in the shared definitions.
#[tokio::test]
async fn shared_table_definitions_follow_schema_changes() {
    let engine = Arc::new(engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine.clone());
    a.execute("CREATE TABLE d (id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    a.execute("INSERT INTO d VALUES (1, 10)").await.unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM d WHERE id = 1").await,
        vec![vec![Datum::Int(1), Datum::Int(10)]]
    );
    b.execute("ALTER TABLE d ADD COLUMN y INTEGER DEFAULT 7")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM d WHERE id = 1").await,
        vec![vec![Datum::Int(1), Datum::Int(10), Datum::Int(7)]]
    );
    a.execute("BEGIN").await.unwrap();
    a.execute("ALTER TABLE d DROP COLUMN x").await.unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM d WHERE id = 1").await,
        vec![vec![Datum::Int(1), Datum::Int(7)]]
    );
    a.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM d WHERE id = 1").await,
        vec![vec![Datum::Int(1), Datum::Int(10), Datum::Int(7)]]
    );
}

/// An autocommit INSERT, UPDATE or DELETE checks at commit, instead of reading first, that
/// the schema it last saw still stands (and an INSERT, that its new keys are free).
/// Whatever another session changed meanwhile, it answers as if it had read: a changed
/// table is written as it is now, a taken key is a unique violation, and a table dropped
/// is gone.
#[tokio::test]
async fn writes_that_check_at_commit_answer_as_if_they_had_read() {
    let engine = Arc::new(engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine.clone());
    a.execute("CREATE TABLE k (id INTEGER PRIMARY KEY, v INTEGER)")
        .await
        .unwrap();
    a.execute("INSERT INTO k VALUES (1, 1)").await.unwrap();

    // A column added by another session is there for the next insert.
    b.execute("ALTER TABLE k ADD COLUMN w INTEGER DEFAULT 5")
        .await
        .unwrap();
    a.execute("INSERT INTO k (id, v, w) VALUES (2, 2, 9)")
        .await
        .unwrap();
    a.execute("INSERT INTO k (id, v) VALUES (3, 3)")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut b, "SELECT id, v, w FROM k ORDER BY id").await,
        vec![
            vec![Datum::Int(1), Datum::Int(1), Datum::Int(5)],
            vec![Datum::Int(2), Datum::Int(2), Datum::Int(9)],
            vec![Datum::Int(3), Datum::Int(3), Datum::Int(5)],
        ]
    );

    // A table made again under the same name, with other columns.
    make_k_again(&mut b).await;
    a.execute("INSERT INTO k VALUES (1, 'x')").await.unwrap();
    assert_eq!(
        rows(&mut b, "SELECT * FROM k").await,
        vec![vec![Datum::Int(1), Datum::Text("x".into())]]
    );

    // Made again with the same columns: the insert runs without an error on the old
    // definition (another table, other keys), and only the commit's check of the schema
    // version sends it to the new table.
    make_k_again(&mut b).await;
    a.execute("INSERT INTO k VALUES (1, 'x')").await.unwrap();
    assert_eq!(
        rows(&mut b, "SELECT * FROM k").await,
        vec![vec![Datum::Int(1), Datum::Text("x".into())]]
    );

    // Keys taken before the commit: by this session, by another, within the statement.
    let e = a
        .execute("INSERT INTO k VALUES (1, 'y')")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    b.execute("INSERT INTO k VALUES (5, 'b')").await.unwrap();
    let e = a
        .execute("INSERT INTO k VALUES (5, 'a')")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    let e = a
        .execute("INSERT INTO k VALUES (7, 'a'), (7, 'b')")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    assert_eq!(
        rows(&mut b, "SELECT id, name FROM k ORDER BY id").await,
        vec![
            vec![Datum::Int(1), Datum::Text("x".into())],
            vec![Datum::Int(5), Datum::Text("b".into())],
        ]
    );

    // Updates and deletes check the schema at commit too: made again with the same
    // columns, the table they change is the new one, and a change of no rows reads.
    make_k_again(&mut b).await;
    b.execute("INSERT INTO k VALUES (1, 'new'), (2, 'two')")
        .await
        .unwrap();
    let changed = |out: strata_sql::Output| match out {
        strata_sql::Output::Affected { rows } => rows,
        other => panic!("not a count: {other:?}"),
    };
    let out = a.execute("UPDATE k SET name = 'updated' WHERE id = 1");
    assert_eq!(changed(out.await.unwrap()), 1);
    let out = a.execute("DELETE FROM k WHERE id = 2");
    assert_eq!(changed(out.await.unwrap()), 1);
    let out = a.execute("UPDATE k SET name = 'none' WHERE id = 99");
    assert_eq!(changed(out.await.unwrap()), 0);
    assert_eq!(
        rows(&mut b, "SELECT id, name FROM k ORDER BY id").await,
        vec![vec![Datum::Int(1), Datum::Text("updated".into())]]
    );
    b.execute("ALTER TABLE k ADD COLUMN n INTEGER DEFAULT 3")
        .await
        .unwrap();
    a.execute("UPDATE k SET n = n + 1").await.unwrap();
    assert_eq!(
        rows(&mut b, "SELECT id, n FROM k").await,
        vec![vec![Datum::Int(1), Datum::Int(4)]]
    );
    // A column dropped and added again under its name is another column: an update made
    // on the definition from before runs cleanly, and only the commit's check sends it
    // to the new column.
    b.execute("ALTER TABLE k DROP COLUMN n").await.unwrap();
    b.execute("ALTER TABLE k ADD COLUMN n INTEGER DEFAULT 0")
        .await
        .unwrap();
    a.execute("UPDATE k SET n = 7 WHERE id = 1").await.unwrap();
    assert_eq!(
        rows(&mut b, "SELECT id, n FROM k").await,
        vec![vec![Datum::Int(1), Datum::Int(7)]]
    );

    // An insert of no rows into a table dropped since writes nothing to check: it reads,
    // and finds the table gone.
    b.execute("DROP TABLE k").await.unwrap();
    let e = a
        .execute("INSERT INTO k SELECT 9, 'z' WHERE 1 = 0")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "42P01", "{e}");
}

/// Drop table `k` and make it again as `(id INTEGER PRIMARY KEY, name TEXT NOT NULL)`: a
/// new table under the old name, which other sessions' cached definitions do not know.
async fn make_k_again(s: &mut Session) {
    s.execute("DROP TABLE k").await.unwrap();
    s.execute("CREATE TABLE k (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .await
        .unwrap();
}

/// Row counts follow every kind of change, undo with failed statements and rolled-back
/// transactions, stay one key however many commits add to them, and `check` catches a
/// wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_follow_changes_and_rollbacks() {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER)")
        .await
        .unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(0));
    s.execute("INSERT INTO c VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
        .await
        .unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(3));
    s.execute("DELETE FROM c WHERE id = 1").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(2));
    // Replacing, moving a key and updating keep the count.
    s.execute("INSERT OR REPLACE INTO c VALUES (2, 'c', 20)")
        .await
        .unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(1));
    s.execute("INSERT INTO c VALUES (5, 'e', 5)").await.unwrap();
    s.execute("UPDATE c SET id = id + 100").await.unwrap();
    s.execute("INSERT INTO c VALUES (7, 'g', 7) ON CONFLICT DO NOTHING")
        .await
        .unwrap();
    s.execute("INSERT INTO c VALUES (7, 'g', 8) ON CONFLICT (id) DO UPDATE SET n = 9")
        .await
        .unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(3));
    // A failed statement inside a transaction leaves no count behind, a committed one does.
    s.execute("BEGIN").await.unwrap();
    s.execute("INSERT INTO c VALUES (10, 'x', 0)")
        .await
        .unwrap();
    let e = s
        .execute("INSERT INTO c VALUES (11, 'y', 0), (12, 'x', 0)")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    s.execute("COMMIT").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(4));
    s.execute("BEGIN").await.unwrap();
    s.execute("DELETE FROM c").await.unwrap();
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(4));
    // Many small commits add to one counter: the count stays exact and stays one key.
    for i in 0..(2 * 64) {
        s.execute_with(
            "INSERT INTO c VALUES ($1, $2, 0)",
            &[Datum::Int(1000 + i), Datum::Text(format!("k{i}"))],
        )
        .await
        .unwrap();
    }
    assert_eq!(s.row_count("c").await.unwrap(), Some(4 + 128));
    let shards = all_shard_keys(&engine).await;
    assert_eq!(shards.len(), 1, "one counter");
    let reports = s.check().await.unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty()), "{reports:?}");

    // A wrong count is a problem `check` reports, and ANALYZE repairs it.
    let db = engine.database("default").await.unwrap();
    let mut txn = db.begin().await.unwrap();
    for k in &shards {
        txn.delete(k).unwrap();
    }
    txn.set(
        &[shards[0].as_slice(), b"x"].concat(),
        strata_engine::Value::bytes(7i64.to_be_bytes().to_vec()),
    )
    .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(7));
    let reports = s.check().await.unwrap();
    let problems: Vec<&String> = reports.iter().flat_map(|r| &r.problems).collect();
    assert!(
        problems.len() == 1 && problems[0].contains("row count says 7 rows, the table has 132"),
        "{problems:?}"
    );
    s.execute("ANALYZE c").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(132));
    // A table without a count (as one made before row counts) has none until analyzed.
    let mut txn = db.begin().await.unwrap();
    for k in all_shard_keys(&engine).await {
        txn.delete(&k).unwrap();
    }
    txn.commit().await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), None);
    s.execute("ANALYZE").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(132));
    // Dropping the table drops its count; a new table of that name counts from zero.
    s.execute("DROP TABLE c").await.unwrap();
    assert!(all_shard_keys(&engine).await.is_empty());
    s.execute("CREATE TABLE c (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(0));
    let e = s.execute("ANALYZE nosuch").await.unwrap_err();
    assert_eq!(e.sqlstate(), "42P01", "{e}");
    // ANALYZE writes: a read-only transaction refuses it.
    s.execute("INSERT INTO c VALUES (1)").await.unwrap();
    s.execute("BEGIN READ ONLY").await.unwrap();
    let e = s.execute("ANALYZE c").await.unwrap_err();
    assert!(e.sqlstate().starts_with("25"), "{e}");
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(s.row_count("c").await.unwrap(), Some(1));
}

/// Shards left by a database written before the counter existed still count, and fold
/// into the counter a bounded number per transaction; the count stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_fold_old_shards_in_bounded_transactions() {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.execute("CREATE TABLE f (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    for i in 0..100 {
        s.execute_with("INSERT INTO f VALUES ($1)", &[Datum::Int(i)])
            .await
            .unwrap();
    }
    // The count as the earlier layout kept it: a zero shard from CREATE TABLE, then one
    // shard per insert, each a big-endian i64 under a key of its own.
    let db = engine.database("default").await.unwrap();
    let table = shard_tables(&engine).await[0];
    let mut txn = db.begin().await.unwrap();
    txn.delete(&strata_sql::stats::counter_key(table)).unwrap();
    for i in 0..101u64 {
        let key = strata_sql::codec::Key::RowCountShard(table, 77, i).encode();
        let delta = if i == 0 { 0i64 } else { 1 };
        txn.set(
            &key,
            strata_engine::Value::bytes(delta.to_be_bytes().to_vec()),
        )
        .unwrap();
    }
    txn.commit().await.unwrap();
    assert_eq!(all_shard_keys(&engine).await.len(), 101);
    let version = db.version();
    strata_sql::stats::fold(&db, table, 16).await.unwrap();
    assert_eq!(all_shard_keys(&engine).await.len(), 1);
    // 101 shards, 16 at a time: seven commits.
    assert_eq!(db.version() - version, 7);
    assert_eq!(s.row_count("f").await.unwrap(), Some(100));
    // With nothing left to fold, a fold commits nothing.
    strata_sql::stats::fold(&db, table, 16).await.unwrap();
    assert_eq!(db.version() - version, 7);
    // Inserts go on adding to the counter the shards were folded into.
    s.execute("INSERT INTO f VALUES (1000)").await.unwrap();
    assert_eq!(s.row_count("f").await.unwrap(), Some(101));
    assert_eq!(all_shard_keys(&engine).await.len(), 1);
    let reports = s.check().await.unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty()), "{reports:?}");
}

/// A reader that finds many old shards folds them on a task of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_finds_many_old_shards_folds_them() {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.execute("CREATE TABLE g (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    let db = engine.database("default").await.unwrap();
    let table = shard_tables(&engine).await[0];
    let mut txn = db.begin().await.unwrap();
    let shards = strata_sql::stats::FOLD_AT as u64 + 1;
    for i in 0..shards {
        let key = strata_sql::codec::Key::RowCountShard(table, 5, i).encode();
        txn.set(
            &key,
            strata_engine::Value::bytes(2i64.to_be_bytes().to_vec()),
        )
        .unwrap();
    }
    txn.commit().await.unwrap();
    assert_eq!(s.row_count("g").await.unwrap(), Some(2 * shards));
    strata_sql::stats::fold_settled(&db, table).await;
    assert_eq!(all_shard_keys(&engine).await.len(), 1);
    assert_eq!(s.row_count("g").await.unwrap(), Some(2 * shards));
}

/// The keys of the row-count shards of every table of database `default`, found by the
/// layout's prefix (the table ids of these tests are small).
async fn all_shard_keys(engine: &Engine) -> Vec<Vec<u8>> {
    let db = engine.database("default").await.unwrap();
    let mut txn = db.begin().await.unwrap();
    let mut keys = Vec::new();
    for id in 0..64u64 {
        let prefix = strata_sql::codec::Key::RowCounts(id).encode();
        let end = strata_engine::prefix_end(&prefix);
        for (k, _) in txn.scan(&prefix, &end, false, 10_000).await.unwrap() {
            keys.push(k);
        }
    }
    keys
}

/// The ids of the tables of database `default` that have row-count shards.
async fn shard_tables(engine: &Engine) -> Vec<u64> {
    let db = engine.database("default").await.unwrap();
    let mut txn = db.begin().await.unwrap();
    let mut ids = Vec::new();
    for id in 0..64u64 {
        let prefix = strata_sql::codec::Key::RowCounts(id).encode();
        let end = strata_engine::prefix_end(&prefix);
        if !txn.scan(&prefix, &end, false, 1).await.unwrap().is_empty() {
            ids.push(id);
        }
    }
    ids
}

/// Transactions that insert into one table concurrently do not conflict over its count.
#[tokio::test]
async fn concurrent_inserters_do_not_conflict_over_the_row_count() {
    let engine = Arc::new(engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine.clone());
    a.execute("CREATE TABLE w (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    a.execute("BEGIN").await.unwrap();
    b.execute("BEGIN").await.unwrap();
    a.execute("INSERT INTO w VALUES (1)").await.unwrap();
    b.execute("INSERT INTO w VALUES (2), (3)").await.unwrap();
    a.execute("COMMIT").await.unwrap();
    b.execute("COMMIT").await.unwrap();
    assert_eq!(a.row_count("w").await.unwrap(), Some(3));
}

/// The planner gets row counts: a hash join builds on the smaller table whichever way
/// the query names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_joins_build_on_the_smaller_table() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, k INTEGER)")
        .await
        .unwrap();
    s.execute("CREATE TABLE small (id INTEGER PRIMARY KEY, k INTEGER)")
        .await
        .unwrap();
    let values: Vec<String> = (0..500).map(|i| format!("({i}, {})", i % 7)).collect();
    s.execute(&format!("INSERT INTO big VALUES {}", values.join(",")))
        .await
        .unwrap();
    s.execute("INSERT INTO small VALUES (1, 1), (2, 2), (3, 3)")
        .await
        .unwrap();
    for sql in [
        "EXPLAIN SELECT count(*) FROM big JOIN small ON big.k = small.k",
        "EXPLAIN SELECT count(*) FROM small JOIN big ON big.k = small.k",
    ] {
        let plan: String = rows(&mut s, sql)
            .await
            .iter()
            .map(|r| format!("{:?}\n", r[1]))
            .collect();
        let physical = &plan[plan.find("HashJoinExec").expect(&plan)..];
        let small = physical.find("table=small").expect(&plan);
        let big = physical.find("table=big").expect(&plan);
        assert!(
            small < big,
            "{sql}: the build side is not the small table:\n{plan}"
        );
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM big JOIN small ON big.k = small.k"
        )
        .await,
        vec![vec![Datum::Int(
            (0..500).filter(|i| (1..=3).contains(&(i % 7))).count() as i64
        )]]
    );
}

/// A point SELECT answered by the fast path has the columns, types and values the planner
/// gives for the same row, for every stored type, for NULLs, for a missing row, and for
/// one projection after another in the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_selects_answer_with_the_planners_columns_and_types() {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.execute(
        "CREATE TABLE every (id INTEGER PRIMARY KEY, b BIGINT, d DOUBLE, r REAL, t TEXT, \
         v VARCHAR(8), ok BOOLEAN, y BLOB, m DECIMAL(10,2), day DATE, ts TIMESTAMP)",
    )
    .await
    .unwrap();
    s.execute(
        "INSERT INTO every VALUES (1, -9, 2.5, 3, 'ann é', '', true, x'00ff', 123.45, \
         '2024-02-29', '2024-02-29 12:00:00'), \
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    let batches = |out: Output| match out {
        Output::Rows(r) => (r.schema, r.batches),
        other => panic!("{other:?}"),
    };
    for (fast, planned) in [
        (
            "SELECT * FROM every WHERE id = 1",
            "SELECT * FROM every WHERE id + 0 = 1",
        ),
        (
            "SELECT * FROM every WHERE id = 2",
            "SELECT * FROM every WHERE id + 0 = 2",
        ),
        (
            "SELECT t AS name, id, t FROM every WHERE id = 1",
            "SELECT t AS name, id, t FROM every WHERE id + 0 = 1",
        ),
        (
            "SELECT m, day FROM every WHERE id = 3",
            "SELECT m, day FROM every WHERE id + 0 = 3",
        ),
        (
            "SELECT * FROM every WHERE id = 1",
            "SELECT * FROM every WHERE id + 0 = 1",
        ),
    ] {
        let explained = format!("{:?}", s.execute(&format!("EXPLAIN {fast}")).await.unwrap());
        assert!(explained.contains("FastPath"), "{fast}: {explained}");
        let (fast_schema, fast_rows) = batches(s.execute(fast).await.unwrap());
        let (schema, rows) = batches(s.execute(planned).await.unwrap());
        assert_eq!(fast_schema.fields().len(), schema.fields().len(), "{fast}");
        for (f, p) in fast_schema.fields().iter().zip(schema.fields()) {
            assert_eq!(
                (f.name(), f.data_type()),
                (p.name(), p.data_type()),
                "{fast}"
            );
        }
        let values = |b: &[strata_sql::arrow::record_batch::RecordBatch]| {
            b.iter()
                .flat_map(|b| (0..b.num_rows()).map(move |r| (b, r)))
                .map(|(b, r)| {
                    b.columns()
                        .iter()
                        .map(|c| Datum::from_array(c, r).unwrap())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(values(&fast_rows), values(&rows), "{fast}");
    }
}
