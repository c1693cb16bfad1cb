//! Column copies: a full scan that comes again over an unchanged table reads the copy the
//! scan before it made, and any change to the table sends scans back to the store. Which
//! one a scan read shows in EXPLAIN ANALYZE as `column_copy_rows`; the answers are the
//! same either way.

use std::sync::Arc;

use strata_sql::{Datum, Session};

mod common;
use common::{engine, rows};

/// One row of the test table as the test keeps it: `(id, a, b, c)`.
type Row = (i64, Option<i64>, String, f64);

/// What a statement does to the test's model of the table.
type Change = dyn Fn(&mut Vec<Row>);

const QUERY: &str = "SELECT count(*), sum(a), min(b), max(c) FROM t WHERE a >= 3 AND c < 80.0";

/// What [`QUERY`] answers over `model`.
fn answer(model: &[Row]) -> Vec<Vec<Datum>> {
    let kept: Vec<&Row> = model
        .iter()
        .filter(|(_, a, _, c)| a.is_some_and(|a| a >= 3) && *c < 80.0)
        .collect();
    let or_null = |d: Option<Datum>| d.unwrap_or(Datum::Null);
    vec![vec![
        Datum::Int(kept.len() as i64),
        or_null((!kept.is_empty()).then(|| Datum::Int(kept.iter().filter_map(|r| r.1).sum()))),
        or_null(kept.iter().map(|r| r.2.clone()).min().map(Datum::Text)),
        or_null(kept.iter().map(|r| r.3).reduce(f64::max).map(Datum::Float)),
    ]]
}

fn row(id: i64) -> Row {
    let a = (id % 11 != 0).then_some(id % 17);
    (id, a, format!("s{}", id % 5), id as f64 / 3.0)
}

fn insert_sql(r: &Row) -> String {
    let a = r.1.map_or("NULL".to_string(), |a| a.to_string());
    format!("INSERT INTO t VALUES ({}, {a}, '{}', {:?})", r.0, r.2, r.3)
}

/// A session whose full scans run in three parts, over a table of 300 rows.
async fn setup() -> (Arc<strata_engine::Engine>, Session, Vec<Row>) {
    let engine = Arc::new(engine());
    let mut s = Session::new(engine.clone());
    s.set_parallel_scan(1, 3);
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c DOUBLE)")
        .await
        .unwrap();
    let model: Vec<Row> = (1..=300).map(row).collect();
    for chunk in model.chunks(100) {
        let values: Vec<String> = chunk
            .iter()
            .map(|r| {
                insert_sql(r)
                    .trim_start_matches("INSERT INTO t VALUES ")
                    .to_string()
            })
            .collect();
        s.execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    (engine, s, model)
}

/// Run `sql` under EXPLAIN ANALYZE: the rows its scan read from a column copy, `None` if
/// it read the store.
async fn copy_rows(s: &mut Session, sql: &str) -> Option<u64> {
    let plan: String = rows(s, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .into_iter()
        .map(|r| format!("{:?}\n", r))
        .collect();
    assert!(plan.contains("StrataScan"), "{plan}");
    let at = plan.find("column_copy_rows=")?;
    let digits: String = plan[at + "column_copy_rows=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some(digits.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_read_a_copy_only_while_the_table_is_unchanged() {
    let (engine, mut s, mut model) = setup().await;
    let mut w = Session::new(engine.clone());

    // The first scan at a state reads the store; the second makes a copy and reads it; the
    // third reads it too.
    assert_eq!(copy_rows(&mut s, QUERY).await, None);
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));
    assert_eq!(rows(&mut s, QUERY).await, answer(&model));
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));
    assert!(strata_sql::column_copy_bytes() > 0);

    // A scan that needs no column counts the copy's rows.
    let count = "SELECT count(*) FROM t";
    assert_eq!(copy_rows(&mut s, count).await, Some(300));
    assert_eq!(rows(&mut s, count).await, vec![vec![Datum::Int(300)]]);

    // A column the copy lacks is added to it.
    assert_eq!(copy_rows(&mut s, "SELECT sum(id) FROM t").await, Some(300));
    assert_eq!(
        rows(&mut s, "SELECT sum(id) FROM t").await,
        vec![vec![Datum::Int(300 * 301 / 2)]]
    );

    // Each kind of write, from another session, sends the next scan to the store; the
    // answer is the new one, and the scan after it makes a new copy.
    let writes: Vec<(String, Box<Change>)> = vec![
        (
            "UPDATE t SET a = 16 WHERE id = 33".into(),
            Box::new(|m: &mut Vec<Row>| m[32].1 = Some(16)),
        ),
        (
            insert_sql(&row(301)),
            Box::new(|m: &mut Vec<Row>| m.push(row(301))),
        ),
        (
            "DELETE FROM t WHERE id = 20".into(),
            Box::new(|m: &mut Vec<Row>| m.retain(|r| r.0 != 20)),
        ),
        (
            "UPDATE t SET c = 1.5 WHERE id = 299".into(),
            Box::new(|m: &mut Vec<Row>| {
                if let Some(r) = m.iter_mut().find(|r| r.0 == 299) {
                    r.3 = 1.5;
                }
            }),
        ),
    ];
    for (sql, apply) in writes {
        w.execute(&sql).await.unwrap();
        apply(&mut model);
        assert_eq!(copy_rows(&mut s, QUERY).await, None, "after {sql}");
        assert_eq!(rows(&mut s, QUERY).await, answer(&model), "after {sql}");
        let n = model.len() as u64;
        assert_eq!(copy_rows(&mut s, QUERY).await, Some(n), "after {sql}");
        assert_eq!(rows(&mut s, QUERY).await, answer(&model), "after {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_its_own_writes_and_conflicts_as_it_would_reading_the_store() {
    let (engine, mut s, model) = setup().await;
    let mut w = Session::new(engine.clone());
    s.execute("CREATE TABLE log (n INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(copy_rows(&mut s, QUERY).await, None);
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));

    // Its own writes to the table: the scan reads them through the transaction.
    s.execute("BEGIN").await.unwrap();
    s.execute("UPDATE t SET a = 50 WHERE id = 1").await.unwrap();
    let mut mine = model.clone();
    mine[0].1 = Some(50);
    assert_eq!(copy_rows(&mut s, QUERY).await, None);
    assert_eq!(rows(&mut s, QUERY).await, answer(&mine));
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));

    // A scan of the copy counts as a read of the table: a commit that lands on the table
    // after it makes the transaction fail, as a scan of the store would.
    s.execute("BEGIN").await.unwrap();
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));
    assert_eq!(rows(&mut s, QUERY).await, answer(&model));
    // (A row in the middle of the table: a parallel scan reads the table's first and last
    // keys to cut it into parts.)
    w.execute("UPDATE t SET a = 4 WHERE id = 150")
        .await
        .unwrap();
    s.execute("INSERT INTO log VALUES (1)").await.unwrap();
    let e = s.execute("COMMIT").await.unwrap_err();
    assert_eq!(e.sqlstate(), "40001", "{e}");

    // The same, with no commit in between: it commits.
    let mut after = model.clone();
    after[149].1 = Some(4);
    assert_eq!(copy_rows(&mut s, QUERY).await, None);
    assert_eq!(copy_rows(&mut s, QUERY).await, Some(300));
    s.execute("BEGIN").await.unwrap();
    assert_eq!(rows(&mut s, QUERY).await, answer(&after));
    s.execute("INSERT INTO log VALUES (2)").await.unwrap();
    s.execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_is_not_read_from_a_copy_of_the_old_one() {
    let (_engine, mut s, model) = setup().await;
    let all = "SELECT sum(a), min(b), max(c) FROM t";
    let total: i64 = model.iter().filter_map(|r| r.1).sum();
    let answer = vec![vec![
        Datum::Int(total),
        Datum::Text("s0".into()),
        Datum::Float(100.0),
    ]];
    assert_eq!(copy_rows(&mut s, all).await, None);
    assert_eq!(copy_rows(&mut s, all).await, Some(300));
    assert_eq!(rows(&mut s, all).await, answer);

    // The same rows (none was written), other columns at the copy's positions: only the
    // definition tells that the copy is not of this table any more.
    s.execute("ALTER TABLE t DROP COLUMN a").await.unwrap();
    let rest = "SELECT min(b), max(c) FROM t";
    let answer = vec![answer[0][1..].to_vec()];
    for _ in 0..3 {
        assert_eq!(rows(&mut s, rest).await, answer);
    }
    assert_eq!(copy_rows(&mut s, rest).await, Some(300));
    s.execute("ALTER TABLE t ADD COLUMN a INTEGER DEFAULT 2")
        .await
        .unwrap();
    let sum_a = "SELECT sum(a) FROM t";
    for _ in 0..3 {
        assert_eq!(rows(&mut s, sum_a).await, vec![vec![Datum::Int(600)]]);
    }
    assert_eq!(copy_rows(&mut s, sum_a).await, Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_needs_no_column_counts_the_rows_it_read() {
    let (_engine, mut s, _model) = setup().await;
    let count = "SELECT count(*) FROM t";
    assert_eq!(copy_rows(&mut s, count).await, None);
    assert_eq!(copy_rows(&mut s, count).await, Some(300));
    assert_eq!(rows(&mut s, count).await, vec![vec![Datum::Int(300)]]);
    s.execute("DELETE FROM t WHERE id > 250").await.unwrap();
    assert_eq!(copy_rows(&mut s, count).await, None);
    assert_eq!(rows(&mut s, count).await, vec![vec![Datum::Int(250)]]);
    assert_eq!(copy_rows(&mut s, count).await, Some(250));
    assert_eq!(rows(&mut s, count).await, vec![vec![Datum::Int(250)]]);
}
