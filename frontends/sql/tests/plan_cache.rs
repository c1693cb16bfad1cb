//! The plan cache: a query run again reuses its plan, and a reused plan answers exactly as a
//! fresh one would: other parameter values, new data, a changed schema, another
//! transaction.

use strata_sql::{Datum, Output, PlanCacheCounts, Session};

mod common;
use common::{engine, rows};

async fn with(s: &mut Session, sql: &str, params: &[Datum]) -> Vec<Vec<Datum>> {
    match s.execute_with(sql, params).await {
        Ok(Output::Rows(r)) => r.rows().unwrap(),
        other => panic!("{sql}: {other:?}"),
    }
}

fn ints(rows: &[Vec<Datum>]) -> Vec<i64> {
    rows.iter()
        .map(|r| match r[0] {
            Datum::Int(i) => i,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

async fn session_with_rows(n: i64) -> Session {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, note TEXT)")
        .await
        .unwrap();
    s.execute("CREATE INDEX t_k ON t (k)").await.unwrap();
    let values: Vec<String> = (1..=n)
        .map(|i| format!("({i}, {}, 'n{i}')", i % 10))
        .collect();
    s.execute(&format!("INSERT INTO t VALUES {}", values.join(",")))
        .await
        .unwrap();
    s
}

const RANGE: &str = "SELECT id FROM t WHERE id >= $1 AND id < $2 ORDER BY id";

#[tokio::test]
async fn a_range_query_is_planned_once_and_bound_to_each_runs_values() {
    let mut s = session_with_rows(100).await;
    let before = s.plan_cache_counts();
    for (lo, hi) in [(10, 15), (90, 200), (50, 50), (-5, 3)] {
        let got = ints(&with(&mut s, RANGE, &[Datum::Int(lo), Datum::Int(hi)]).await);
        let want: Vec<i64> = (lo.max(1)..hi.min(101)).collect();
        assert_eq!(got, want, "[{lo}, {hi})");
    }
    let after = s.plan_cache_counts();
    assert_eq!(after.planned - before.planned, 1, "{after:?}");
    assert_eq!(after.hits - before.hits, 3, "{after:?}");
}

#[tokio::test]
async fn a_cached_plan_reads_each_runs_own_transaction() {
    let mut s = session_with_rows(10).await;
    let count = "SELECT count(*) FROM t WHERE k = $1";
    assert_eq!(
        with(&mut s, count, &[Datum::Int(3)]).await[0][0],
        Datum::Int(1)
    );
    // Committed since: the next run sees it.
    s.execute("INSERT INTO t VALUES (13, 3, 'x'), (23, 3, 'y')")
        .await
        .unwrap();
    assert_eq!(
        with(&mut s, count, &[Datum::Int(3)]).await[0][0],
        Datum::Int(3)
    );
    // Inside a transaction, its own writes; COMMIT is not held up by the cached plan.
    s.execute("BEGIN").await.unwrap();
    s.execute("DELETE FROM t WHERE id = 13").await.unwrap();
    assert_eq!(
        with(&mut s, count, &[Datum::Int(3)]).await[0][0],
        Datum::Int(2)
    );
    s.execute("COMMIT").await.unwrap();
    s.execute("BEGIN").await.unwrap();
    s.execute("INSERT INTO t VALUES (33, 3, 'z')")
        .await
        .unwrap();
    assert_eq!(
        with(&mut s, count, &[Datum::Int(3)]).await[0][0],
        Datum::Int(3)
    );
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        with(&mut s, count, &[Datum::Int(3)]).await[0][0],
        Datum::Int(2)
    );
    assert!(
        s.plan_cache_counts().hits >= 4,
        "{:?}",
        s.plan_cache_counts()
    );
}

#[tokio::test]
async fn a_schema_change_plans_again() {
    let mut s = session_with_rows(5).await;
    let all = "SELECT * FROM t WHERE id >= $1 ORDER BY id";
    assert_eq!(with(&mut s, all, &[Datum::Int(1)]).await[0].len(), 3);
    s.execute("ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 7")
        .await
        .unwrap();
    let got = with(&mut s, all, &[Datum::Int(1)]).await;
    assert_eq!(
        got[0],
        vec![
            Datum::Int(1),
            Datum::Int(1),
            Datum::Text("n1".into()),
            Datum::Int(7)
        ]
    );
    // A table dropped and made again with another shape.
    s.execute("DROP TABLE t").await.unwrap();
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    let got = with(&mut s, all, &[Datum::Int(1)]).await;
    assert_eq!(
        got,
        vec![
            vec![Datum::Int(1), Datum::Text("one".into())],
            vec![Datum::Int(2), Datum::Text("two".into())],
        ]
    );
    assert_eq!(s.plan_cache_counts().planned, 3);
}

#[tokio::test]
async fn values_of_another_type_are_planned_for_as_before() {
    let mut s = session_with_rows(20).await;
    let below = "SELECT id FROM t WHERE id < $1 ORDER BY id";
    assert_eq!(
        ints(&with(&mut s, below, &[Datum::Int(3)]).await),
        vec![1, 2]
    );
    // 2.5 is no integer key: the cached plan does not fit, and a fresh plan compares as
    // SQL does.
    assert_eq!(
        ints(&with(&mut s, below, &[Datum::Float(2.5)]).await),
        vec![1, 2]
    );
    assert_eq!(
        ints(&with(&mut s, below, &[Datum::Null]).await),
        Vec::<i64>::new()
    );
    let before = s.plan_cache_counts();
    assert_eq!(
        ints(&with(&mut s, below, &[Datum::Int(4)]).await),
        vec![1, 2, 3]
    );
    // The plan kept for integers is still used after a value that needed another.
    assert_eq!(s.plan_cache_counts().hits, before.hits + 1);
    // Through an index, with an IN list.
    let by_k = "SELECT id FROM t WHERE k IN ($1, $2) ORDER BY id";
    assert_eq!(
        ints(&with(&mut s, by_k, &[Datum::Int(1), Datum::Int(2)]).await),
        vec![1, 2, 11, 12]
    );
    assert_eq!(
        ints(&with(&mut s, by_k, &[Datum::Int(9), Datum::Int(9)]).await),
        vec![9, 19]
    );
}

#[tokio::test]
async fn what_a_plan_fixes_when_planned_is_not_cached() {
    let mut s = session_with_rows(5).await;
    let start = s.plan_cache_counts();
    for sql in [
        // now() is folded into the plan.
        "SELECT count(*) FROM t WHERE now() > TIMESTAMP '2000-01-01 00:00:00'",
        // An uncorrelated subquery is run while planning.
        "SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE k = 1)",
        // Catalog tables are snapshots.
        "SELECT count(*) FROM pg_catalog.pg_class",
    ] {
        for _ in 0..3 {
            rows(&mut s, sql).await;
        }
    }
    // A placeholder outside the pushed-down predicates cannot be bound later.
    for i in 0..3 {
        let got = with(
            &mut s,
            "SELECT id + $1 FROM t WHERE id = 2",
            &[Datum::Int(i)],
        )
        .await;
        assert_eq!(got, vec![vec![Datum::Int(2 + i)]]);
    }
    assert_eq!(s.plan_cache_counts(), start);
    // Inserts made since are seen by the uncached ones too.
    s.execute("INSERT INTO t VALUES (101, 1, 'n')")
        .await
        .unwrap();
    assert_eq!(
        ints(
            &with(
                &mut s,
                "SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE k = 1) ORDER BY id",
                &[]
            )
            .await
        ),
        vec![1, 101]
    );
}

#[tokio::test]
async fn a_cached_parallel_scan_covers_rows_added_since() {
    let mut s = session_with_rows(40).await;
    s.set_parallel_scan(10, 2);
    let total = "SELECT count(*), sum(id) FROM t";
    let plan = format!("{:?}", with(&mut s, &format!("EXPLAIN {total}"), &[]).await);
    assert!(plan.contains("parts=2"), "the scan is not parallel: {plan}");
    assert_eq!(with(&mut s, total, &[]).await[0][0], Datum::Int(40));
    s.execute("INSERT INTO t VALUES (1000, 0, 'far'), (-1000, 0, 'before')")
        .await
        .unwrap();
    assert_eq!(
        with(&mut s, total, &[]).await[0],
        vec![Datum::Int(42), Datum::Int(820)]
    );
    // The one shaped text is the setup's INSERT (the second holds `-1000`: not a shape).
    assert_eq!(
        s.plan_cache_counts(),
        PlanCacheCounts {
            hits: 1,
            planned: 1,
            shaped: 1
        }
    );
}

/// `sql` run from its own text, never from a shape.
async fn parsed(s: &mut Session, sql: &str) -> Vec<Vec<Datum>> {
    let prepared = s.prepare(sql).unwrap();
    match s.execute_prepared(&prepared, 0, &[]).await {
        Ok(Output::Rows(r)) => r.rows().unwrap(),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn shaped(s: &mut Session, sql: &str) -> (Vec<Vec<Datum>>, bool) {
    let before = s.plan_cache_counts().shaped;
    let got = with(s, sql, &[]).await;
    (got, s.plan_cache_counts().shaped == before + 1)
}

/// Single- and many-row inserts that differ only in their literals run as one parsed
/// shape, and store exactly what their own texts store: the same values, the same
/// coercions into the columns' types, the same errors.
#[tokio::test]
async fn inserts_with_new_literals_run_as_their_shape() {
    let mut s = Session::new(engine());
    s.execute(
        "CREATE TABLE w (id INTEGER PRIMARY KEY, n INTEGER, f DOUBLE, t TEXT NOT NULL, m DECIMAL(10,2))",
    )
    .await
    .unwrap();
    let texts = [
        "INSERT INTO w VALUES (1, 10, 1.5, 'a', 1.25)",
        "INSERT INTO w VALUES (2, 20, 2.5, 'it''s', 2.5)",
        // Kinds that differ from the column's: coerced as the text's own run coerces them.
        "INSERT INTO w VALUES (3, '30', 3, 'c', 3)",
        "INSERT INTO w VALUES (4, '40', 4, 'd', 4)",
        "INSERT INTO w VALUES (5, 50, 5.5, 'e', 5.5), (6, 60, 6.5, 'f', 6.5)",
        "INSERT INTO w VALUES (7, 70, 7.5, 'g', 7.5), (8, 80, 8.5, 'h', 8.5)",
        "INSERT INTO w (t, id) VALUES ('i', 9)",
        "INSERT INTO w (t, id) VALUES ('j', 10)",
    ];
    let mut shaped_runs = 0;
    for sql in texts {
        let before = s.plan_cache_counts().shaped;
        s.execute(sql).await.unwrap();
        shaped_runs += s.plan_cache_counts().shaped - before;
    }
    // Every text ran as its shape's statement (four shapes, each learned from its first).
    assert_eq!(shaped_runs, 8);
    // The same texts, each parsed on its own, in a second table: the same rows.
    let mut p = Session::new(engine());
    p.execute(
        "CREATE TABLE w (id INTEGER PRIMARY KEY, n INTEGER, f DOUBLE, t TEXT NOT NULL, m DECIMAL(10,2))",
    )
    .await
    .unwrap();
    for sql in texts {
        let prepared = p.prepare(sql).unwrap();
        p.execute_prepared(&prepared, 0, &[]).await.unwrap();
    }
    assert_eq!(p.plan_cache_counts().shaped, 0);
    let all = "SELECT * FROM w ORDER BY id";
    let stored = parsed(&mut s, all).await;
    assert_eq!(stored.len(), 10);
    assert_eq!(stored, parsed(&mut p, all).await);
    // Errors are the text's own: a duplicate key, a NULL into NOT NULL.
    for sql in [
        "INSERT INTO w VALUES (1, 10, 1.5, 'a', 1.25)",
        "INSERT INTO w (t, id) VALUES (NULL, 11)",
    ] {
        let shaped_error = s.execute(sql).await.unwrap_err().to_string();
        let prepared = p.prepare(sql).unwrap();
        let own_error = p
            .execute_prepared(&prepared, 0, &[])
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(shaped_error, own_error, "{sql}");
    }
    assert_eq!(parsed(&mut s, all).await, stored);
}

/// Point queries that differ only in their literals run as one parsed shape with the
/// literals as parameters, and answer exactly as their own texts do.
#[tokio::test]
async fn point_queries_with_new_literals_run_as_their_shape() {
    let mut s = session_with_rows(20).await;
    let q = |id: &str| format!("SELECT note, id AS n FROM t WHERE id = {id}");
    // The first text of a shape is learned (and parsed); the rest are not parsed.
    let (first, _) = shaped(&mut s, &q("3")).await;
    assert_eq!(first, vec![vec![Datum::Text("n3".into()), Datum::Int(3)]]);
    for id in [7, 20, 1] {
        let (got, was_shaped) = shaped(&mut s, &q(&id.to_string())).await;
        assert!(was_shaped, "id {id}");
        assert_eq!(
            got,
            vec![vec![Datum::Text(format!("n{id}")), Datum::Int(id)]]
        );
    }
    let (none, was_shaped) = shaped(&mut s, &q("999")).await;
    assert!(was_shaped && none.is_empty());
    // A literal of another kind is another shape, with the answer its text gives.
    let (text_id, _) = shaped(&mut s, &q("'4'")).await;
    assert_eq!(text_id, parsed(&mut s, &q("'4'")).await);
    // The result's column names are the text's.
    match s.execute(&q("5")).await.unwrap() {
        Output::Rows(r) => assert_eq!(r.column_names(), vec!["note", "n"]),
        other => panic!("{other:?}"),
    }
    // In a transaction, a shaped query reads the transaction's own writes.
    s.execute("BEGIN").await.unwrap();
    s.execute("UPDATE t SET note = 'mine' WHERE id = 6")
        .await
        .unwrap();
    let (mine, was_shaped) = shaped(&mut s, &q("6")).await;
    assert!(was_shaped);
    assert_eq!(mine, vec![vec![Datum::Text("mine".into()), Datum::Int(6)]]);
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        shaped(&mut s, &q("6")).await.0[0][0],
        Datum::Text("n6".into())
    );
}

/// A shape the fast path does not take (no key pinned, a dropped table) runs from its own
/// text, with the text's answer or error, and inside a transaction leaves it usable.
#[tokio::test]
async fn shapes_the_fast_path_does_not_take_run_from_their_text() {
    let mut s = session_with_rows(20).await;
    s.set_abort_on_error(true);
    s.execute("BEGIN").await.unwrap();
    for k in [3, 4, 3] {
        let (got, was_shaped) = shaped(
            &mut s,
            &format!("SELECT id FROM t WHERE k = {k} ORDER BY id"),
        )
        .await;
        assert!(!was_shaped);
        assert_eq!(
            ints(&got),
            vec![k, k + 10, k + 20]
                .into_iter()
                .filter(|&i| i <= 20)
                .collect::<Vec<_>>()
        );
    }
    let (got, _) = shaped(&mut s, "SELECT id FROM t WHERE note = 'n2'").await;
    assert_eq!(ints(&got), vec![2]);
    assert!(!s.transaction_failed());
    s.execute("COMMIT").await.unwrap();

    shaped(&mut s, "SELECT id FROM t WHERE id = 1").await;
    assert!(shaped(&mut s, "SELECT id FROM t WHERE id = 2").await.1);
    s.execute("DROP TABLE t").await.unwrap();
    let err = s
        .execute("SELECT id FROM t WHERE id = 3")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42P01", "{err}");
    assert!(err.to_string().contains("\"default.public.t\""), "{err}");
}

#[tokio::test]
async fn a_database_made_again_under_its_name_is_not_read_with_the_old_ones_definitions() {
    let engine = std::sync::Arc::new(engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine);
    a.execute("CREATE DATABASE x").await.unwrap();
    a.execute("USE x").await.unwrap();
    a.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .await
        .unwrap();
    a.execute("INSERT INTO t VALUES (1, 10)").await.unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM t").await,
        vec![vec![Datum::Int(1), Datum::Int(10)]]
    );
    b.execute("DROP DATABASE x").await.unwrap();
    b.execute("CREATE DATABASE x").await.unwrap();
    b.execute("USE x").await.unwrap();
    b.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, w INTEGER)")
        .await
        .unwrap();
    b.execute("INSERT INTO t VALUES (1, 'one', 5)")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM t").await,
        vec![vec![
            Datum::Int(1),
            Datum::Text("one".into()),
            Datum::Int(5)
        ]]
    );
    assert_eq!(
        rows(&mut a, "SELECT w FROM t WHERE id = 1").await,
        vec![vec![Datum::Int(5)]]
    );
}

#[tokio::test]
async fn a_schema_change_by_another_session_is_seen_at_the_next_snapshot() {
    let engine = std::sync::Arc::new(engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine);
    a.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .await
        .unwrap();
    a.execute("INSERT INTO t VALUES (1, 10)").await.unwrap();
    // Read twice at one snapshot: the second takes the schema version the first read.
    for _ in 0..2 {
        assert_eq!(
            rows(&mut a, "SELECT * FROM t WHERE id = 1").await,
            vec![vec![Datum::Int(1), Datum::Int(10)]]
        );
    }
    b.execute("ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 7")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut a, "SELECT * FROM t WHERE id = 1").await,
        vec![vec![Datum::Int(1), Datum::Int(10), Datum::Int(7)]]
    );
    // Inside a transaction begun before another session's change, the change conflicts
    // with this transaction's reads at commit, as any catalog read does.
    a.execute("BEGIN").await.unwrap();
    rows(&mut a, "SELECT * FROM t WHERE id = 1").await;
    a.execute("UPDATE t SET v = 11 WHERE id = 1").await.unwrap();
    b.execute("ALTER TABLE t ADD COLUMN x INTEGER")
        .await
        .unwrap();
    let err = a.execute("COMMIT").await.expect_err("a conflict");
    assert!(err.is_retryable(), "{err}");
}
