//! The column copies' memory budget (a setting of the whole process, so these scenarios run
//! in a test binary of their own): a copy that does not fit is not made, and a budget of 0
//! makes none; the scans answer from the store all the same.

use strata_sql::{Datum, Session};

mod common;
use common::{engine, rows};

/// Whether `sql`'s scan read a column copy, by EXPLAIN ANALYZE.
async fn read_a_copy(s: &mut Session, sql: &str) -> bool {
    let plan: String = rows(s, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .into_iter()
        .map(|r| format!("{r:?}\n"))
        .collect();
    assert!(plan.contains("StrataScan"), "{plan}");
    plan.contains("column_copy_rows=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_stay_within_the_budget() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .await
        .unwrap();
    let values: Vec<String> = (1..=200).map(|i| format!("({i}, {i})")).collect();
    s.execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let q = "SELECT sum(v) FROM t WHERE v > 100";
    let answer = vec![vec![Datum::Int((101..=200).sum())]];

    // Room for less than the column's 200 values: the store answers every time.
    strata_sql::set_column_copy_budget(800);
    for _ in 0..3 {
        assert!(!read_a_copy(&mut s, q).await);
    }
    assert_eq!(rows(&mut s, q).await, answer);
    assert_eq!(strata_sql::column_copy_bytes(), 0);

    // Copies off.
    strata_sql::set_column_copy_budget(0);
    s.execute("INSERT INTO t VALUES (1000, 0)").await.unwrap();
    for _ in 0..3 {
        assert!(!read_a_copy(&mut s, q).await);
    }

    // Room enough: the second scan at a new state makes one (a state found too big stays
    // so until the table changes).
    strata_sql::set_column_copy_budget(1 << 20);
    s.execute("DELETE FROM t WHERE id = 1000").await.unwrap();
    assert!(!read_a_copy(&mut s, q).await);
    assert!(read_a_copy(&mut s, q).await);
    assert_eq!(rows(&mut s, q).await, answer);
    assert!(strata_sql::column_copy_bytes() > 0);
}
