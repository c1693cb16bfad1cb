//! SQL under concurrency: what serializable transactions promise, from concurrent
//! sessions on one engine, on every backend.
//!
//! Interleavings that matter are forced by running two sessions' statements in a fixed
//! order (no sleeps); throughput cases run real concurrent tasks and check invariants
//! that any correct interleaving keeps.

use std::sync::Arc;

use strata_engine::Engine;
use strata_sql::{Datum, Output, Session, SqlError};

use crate::gate::{Gate, Point};
use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "sql",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            bank_transfers_keep_the_total,
            write_skew_is_prevented,
            two_inserts_of_one_unique_value_cannot_both_commit,
            concurrent_inserts_of_one_unique_value_one_wins,
            a_failed_statement_leaves_its_transaction_intact,
            time_travel_reads_an_older_version,
            indexes_match_their_tables_after_concurrent_writes,
            a_scan_reads_its_snapshot_when_a_delete_lands_during_it,
            a_parallel_scan_reads_one_snapshot_and_every_part_is_checked_at_commit,
        ],
    }
}

async fn exec(s: &mut Session, sql: &str) -> Result<Output, String> {
    s.execute(sql).await.map_err(|e| format!("{sql}: {e}"))
}

async fn int(s: &mut Session, sql: &str) -> Result<i64, String> {
    match exec(s, sql).await? {
        Output::Rows(r) => match r.rows().step("rows")?.first().and_then(|r| r.first()) {
            Some(Datum::Int(i)) => Ok(*i),
            other => Err(format!("{sql}: expected one integer, got {other:?}")),
        },
        other => Err(format!("{sql}: expected rows, got {other:?}")),
    }
}

fn is_serialization(e: &SqlError) -> bool {
    e.sqlstate() == "40001"
}

/// The later of two conflicting transactions must fail at COMMIT with 40001.
async fn second_commit_conflicts(s: &mut Session) -> CaseResult {
    match s.execute("COMMIT").await {
        Err(e) if is_serialization(&e) => Ok(()),
        other => Err(format!(
            "the second commit must fail with 40001, got {other:?}"
        )),
    }
}

async fn bank_transfers_keep_the_total(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut setup = Session::new(engine.clone());
    exec(&mut setup, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))").await?;
    let accounts = 8i64;
    let values: Vec<String> = (0..accounts).map(|i| format!("({i}, 100)")).collect();
    exec(
        &mut setup,
        &format!("INSERT INTO accounts VALUES {}", values.join(", ")),
    )
    .await?;
    let mut tasks = Vec::new();
    for worker in 0..4i64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(engine);
            let mut committed = 0;
            let mut audits = Vec::new();
            for i in 0..12i64 {
                let from = (worker * 3 + i) % accounts;
                let to = (worker * 5 + i * 7 + 1) % accounts;
                if from == to {
                    continue;
                }
                if transfer(&mut s, from, to, 7).await? {
                    committed += 1;
                }
                match s.execute("SELECT sum(balance) FROM accounts").await {
                    Ok(Output::Rows(r)) => audits.push(r.rows().map_err(|e| e.to_string())?),
                    Ok(other) => return Err(format!("audit: {other:?}")),
                    Err(e) => return Err(format!("audit: {e}")),
                }
            }
            Ok::<_, String>((committed, audits))
        }));
    }
    let mut committed = 0;
    for t in tasks {
        let (c, audits) = t.await.map_err(|e| e.to_string())??;
        committed += c;
        for a in audits {
            ensure_eq!(a, vec![vec![Datum::Int(accounts * 100)]]);
        }
    }
    ensure!(committed > 0, "no transfer committed");
    ensure_eq!(
        int(&mut setup, "SELECT sum(balance) FROM accounts").await?,
        accounts * 100
    );
    Ok(())
}

/// Move `amount` from one account to another in an explicit transaction, again after a
/// serialization failure. `Ok(false)`: refused by the accounts' CHECK (an overdraft).
pub(crate) async fn transfer(
    s: &mut Session,
    from: i64,
    to: i64,
    amount: i64,
) -> Result<bool, String> {
    loop {
        let attempt: Result<(), SqlError> = async {
            s.execute("BEGIN").await?;
            s.execute(&format!(
                "UPDATE accounts SET balance = balance - {amount} WHERE id = {from}"
            ))
            .await?;
            s.execute(&format!(
                "UPDATE accounts SET balance = balance + {amount} WHERE id = {to}"
            ))
            .await?;
            s.execute("COMMIT").await?;
            Ok(())
        }
        .await;
        match attempt {
            Ok(()) => return Ok(true),
            Err(e) => {
                if s.in_transaction() {
                    let _ = s.execute("ROLLBACK").await;
                }
                if is_serialization(&e) {
                    continue;
                }
                if e.sqlstate() == "23514" {
                    return Ok(false);
                }
                return Err(format!("transfer: {e}"));
            }
        }
    }
}

async fn write_skew_is_prevented(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine.clone());
    exec(
        &mut a,
        "CREATE TABLE doctors (name TEXT PRIMARY KEY, on_call BOOLEAN NOT NULL)",
    )
    .await?;
    exec(
        &mut a,
        "INSERT INTO doctors VALUES ('alice', true), ('bob', true)",
    )
    .await?;
    // Both see two doctors on call, each takes one off: together they leave nobody.
    exec(&mut a, "BEGIN").await?;
    exec(&mut b, "BEGIN").await?;
    ensure_eq!(
        int(&mut a, "SELECT count(*) FROM doctors WHERE on_call").await?,
        2
    );
    ensure_eq!(
        int(&mut b, "SELECT count(*) FROM doctors WHERE on_call").await?,
        2
    );
    exec(
        &mut a,
        "UPDATE doctors SET on_call = false WHERE name = 'alice'",
    )
    .await?;
    exec(
        &mut b,
        "UPDATE doctors SET on_call = false WHERE name = 'bob'",
    )
    .await?;
    exec(&mut a, "COMMIT").await?;
    second_commit_conflicts(&mut b).await?;
    ensure_eq!(
        int(&mut a, "SELECT count(*) FROM doctors WHERE on_call").await?,
        1
    );
    Ok(())
}

async fn two_inserts_of_one_unique_value_cannot_both_commit(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine.clone());
    exec(
        &mut a,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)",
    )
    .await?;
    exec(&mut a, "BEGIN").await?;
    exec(&mut b, "BEGIN").await?;
    exec(&mut a, "INSERT INTO users VALUES (1, 'x@example.com')").await?;
    exec(&mut b, "INSERT INTO users VALUES (2, 'x@example.com')").await?;
    exec(&mut a, "COMMIT").await?;
    second_commit_conflicts(&mut b).await?;
    ensure_eq!(int(&mut a, "SELECT count(*) FROM users").await?, 1);
    Ok(())
}

async fn concurrent_inserts_of_one_unique_value_one_wins(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut setup = Session::new(engine.clone());
    exec(
        &mut setup,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)",
    )
    .await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(engine);
            s.execute(&format!(
                "INSERT INTO users VALUES ({i}, 'same@example.com')"
            ))
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok(_) => wins += 1,
            Err(e) if e.sqlstate() == "23505" => {}
            Err(e) => return Err(format!("unexpected error: {e}")),
        }
    }
    ensure_eq!(wins, 1);
    ensure_eq!(int(&mut setup, "SELECT count(*) FROM users").await?, 1);
    Ok(())
}

async fn a_failed_statement_leaves_its_transaction_intact(h: &Harness) -> CaseResult {
    let engine: Arc<Engine> = Arc::new(h.engine());
    let mut s = Session::new(engine);
    exec(&mut s, "CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)").await?;
    exec(&mut s, "CREATE INDEX t_v ON t (v)").await?;
    exec(&mut s, "BEGIN").await?;
    exec(&mut s, "INSERT INTO t VALUES (1, 10)").await?;
    ensure!(
        s.execute("INSERT INTO t VALUES (2, 20), (1, 30)")
            .await
            .is_err(),
        "duplicate key accepted"
    );
    exec(&mut s, "COMMIT").await?;
    ensure_eq!(int(&mut s, "SELECT count(*) FROM t").await?, 1);
    ensure_eq!(int(&mut s, "SELECT count(*) FROM t WHERE v = 20").await?, 0);
    let reports = s.check().await.step("check")?;
    for r in reports {
        ensure!(r.problems.is_empty(), "index problems: {:?}", r.problems);
    }
    Ok(())
}

async fn time_travel_reads_an_older_version(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut s = Session::new(engine);
    exec(
        &mut s,
        "CREATE TABLE prices (item TEXT PRIMARY KEY, cents INTEGER)",
    )
    .await?;
    exec(&mut s, "INSERT INTO prices VALUES ('tea', 300)").await?;
    let before = s.last_commit_version().ok_or("no commit version")?;
    // A time after the insert committed and before the update begins: wait for the clock
    // (milliseconds) to move past it, so the update's commit time is later.
    let between = strata_engine::now_ms();
    while strata_engine::now_ms() <= between {
        tokio::task::yield_now().await;
    }
    exec(&mut s, "UPDATE prices SET cents = 350 WHERE item = 'tea'").await?;
    ensure_eq!(
        int(&mut s, "SELECT cents FROM prices WHERE item = 'tea'").await?,
        350
    );
    ensure_eq!(
        int(
            &mut s,
            &format!("SELECT cents FROM prices WHERE item = 'tea' AS OF {before}")
        )
        .await?,
        300
    );
    let at = Datum::Timestamp(between as i64 * 1000).to_string();
    ensure_eq!(
        int(
            &mut s,
            &format!("SELECT cents FROM prices WHERE item = 'tea' AS OF '{at}'")
        )
        .await?,
        300
    );
    // A time before the database existed: no version is readable there.
    match s
        .execute("SELECT cents FROM prices AS OF '2000-01-01 00:00:00'")
        .await
    {
        Err(e) => ensure_eq!(e.sqlstate(), "22023"),
        Ok(o) => return Err(format!("a read before any version answered {o:?}")),
    }
    ensure!(
        s.execute(&format!("UPDATE prices SET cents = 1 AS OF {before}"))
            .await
            .is_err(),
        "AS OF on a write must be refused"
    );
    Ok(())
}

async fn indexes_match_their_tables_after_concurrent_writes(h: &Harness) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut setup = Session::new(engine.clone());
    exec(
        &mut setup,
        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER, w TEXT)",
    )
    .await?;
    exec(&mut setup, "CREATE INDEX kv_v ON kv (v)").await?;
    exec(&mut setup, "CREATE UNIQUE INDEX kv_w ON kv (w)").await?;
    let mut tasks = Vec::new();
    for worker in 0..4i64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(engine);
            for i in 0..25i64 {
                let k = (worker * 7 + i) % 30;
                let sql = match i % 3 {
                    0 => format!("INSERT INTO kv VALUES ({k}, {i}, 'w{k}') ON CONFLICT (k) DO UPDATE SET v = excluded.v"),
                    1 => format!("UPDATE kv SET v = v + 1, k = k + 100 WHERE k = {k}"),
                    _ => format!("DELETE FROM kv WHERE v = {}", i - 1),
                };
                match s.execute(&sql).await {
                    Ok(_) => {}
                    Err(e) if e.sqlstate() == "23505" => {}
                    Err(e) => return Err(format!("{sql}: {e}")),
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    for r in setup.check().await.step("check")? {
        ensure!(r.problems.is_empty(), "table {}: {:?}", r.table, r.problems);
    }
    Ok(())
}

/// A table scan that a delete overtakes mid-read (forced with the gate) is read again at its
/// snapshot: every row once, the deleted one included. A scan that kept the rows it had
/// already decoded would count some twice.
async fn a_scan_reads_its_snapshot_when_a_delete_lands_during_it(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    let engine = Arc::new(Engine::new(gate.wrap(h.backend()), Harness::config()));
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine);
    exec(
        &mut a,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    )
    .await?;
    let values: Vec<String> = (1..=50).map(|i| format!("({i}, {i})")).collect();
    exec(
        &mut a,
        &format!("INSERT INTO t VALUES {}", values.join(", ")),
    )
    .await?;
    // The row family of every table starts with this prefix; the table id follows it.
    let rows = strata_sql::codec::Key::Rows(0).encode();
    let prefix = strata_engine::layout::latest(&rows[..rows.len() - 9]);
    let mut held = gate.hold(Point::ReadAfter, move |key| key.starts_with(&prefix));
    let scan = tokio::spawn(async move {
        let r = int(&mut a, "SELECT count(*) * 10000 + sum(v) FROM t").await;
        (a, r)
    });
    held.reached().await;
    exec(&mut b, "DELETE FROM t WHERE id = 7").await?;
    held.release();
    let (mut a, seen) = scan.await.map_err(|e| e.to_string())?;
    ensure_eq!(seen?, 50 * 10000 + 50 * 51 / 2);
    ensure_eq!(
        int(&mut a, "SELECT count(*) * 10000 + sum(v) FROM t").await?,
        49 * 10000 + 50 * 51 / 2 - 7
    );
    Ok(())
}

/// A full scan read in three parts at once returns what one scan returns, its own writes
/// included, orders by the key when asked; and a commit is checked against the rows of
/// every part: a write another transaction commits into any one part fails it with 40001.
async fn a_parallel_scan_reads_one_snapshot_and_every_part_is_checked_at_commit(
    h: &Harness,
) -> CaseResult {
    let engine = Arc::new(h.engine());
    let mut a = Session::new(engine.clone());
    let mut b = Session::new(engine);
    a.set_parallel_scan(30, 3);
    exec(
        &mut a,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    )
    .await?;
    exec(&mut a, "CREATE TABLE log (id INTEGER PRIMARY KEY)").await?;
    let n = 300i64;
    for first in (1..=n).step_by(100) {
        let values: Vec<String> = (first..first + 100)
            .map(|i| format!("({i}, {i})"))
            .collect();
        exec(
            &mut a,
            &format!("INSERT INTO big VALUES {}", values.join(", ")),
        )
        .await?;
    }
    let plan = match exec(&mut a, "EXPLAIN SELECT sum(v) FROM big").await? {
        Output::Rows(r) => format!("{:?}", r.rows().step("plan")?),
        other => return Err(format!("EXPLAIN: {other:?}")),
    };
    ensure!(plan.contains("parts=3"), "not read in three parts: {plan}");
    let total = "SELECT count(*) * 1000000 + sum(v) FROM big";
    ensure_eq!(int(&mut a, total).await?, n * 1_000_000 + n * (n + 1) / 2);
    let ids = match exec(&mut a, "SELECT id FROM big ORDER BY id").await? {
        Output::Rows(r) => r.rows().step("ids")?,
        other => return Err(format!("ORDER BY: {other:?}")),
    };
    let expected: Vec<Vec<Datum>> = (1..=n).map(|i| vec![Datum::Int(i)]).collect();
    ensure!(
        ids == expected,
        "ORDER BY id over three parts is not in key order"
    );
    // The merge of the parts stops after three rows.
    let first = match exec(&mut a, "SELECT id FROM big ORDER BY id LIMIT 3").await? {
        Output::Rows(r) => r.rows().step("first ids")?,
        other => return Err(format!("ORDER BY … LIMIT: {other:?}")),
    };
    ensure!(
        first == expected[..3],
        "ORDER BY id LIMIT 3 over three parts: {first:?}"
    );

    exec(&mut a, "BEGIN").await?;
    exec(&mut a, "DELETE FROM big WHERE id = 5").await?;
    exec(&mut a, "UPDATE big SET v = v + 1 WHERE id = 30").await?;
    exec(&mut a, "INSERT INTO big VALUES (1000, 1000)").await?;
    ensure_eq!(
        int(&mut a, total).await?,
        n * 1_000_000 + n * (n + 1) / 2 - 5 + 1 + 1000
    );
    exec(&mut a, "ROLLBACK").await?;

    for (round, id) in [5, 30, 55].into_iter().enumerate() {
        exec(&mut a, "BEGIN").await?;
        int(&mut a, "SELECT sum(v) FROM big").await?;
        exec(&mut b, &format!("UPDATE big SET v = v + 1 WHERE id = {id}")).await?;
        exec(&mut a, &format!("INSERT INTO log VALUES ({round})")).await?;
        second_commit_conflicts(&mut a)
            .await
            .map_err(|e| format!("a write to row {id}: {e}"))?;
    }
    Ok(())
}
