//! Real PostgreSQL clients against `strata serve`: psql (Debian's postgresql-client),
//! psycopg 3 (PyPI), node-postgres `pg` (npm) and tokio-postgres (crates.io, in this
//! process). Each runs the same scenario:
//!
//! * DDL: a table with a column of every supported type and a unique index;
//! * parameterised inserts and selects of every type, NULLs and Unicode included;
//! * transactions that commit and roll back;
//! * a serialization conflict between two connections surfacing as SQLSTATE 40001;
//! * a cross-database join;
//! * the error paths: bad SQL (42601), a unique violation (23505), a NOT NULL violation
//!   (23502), an unknown database (3D000), a wrong password (28P01) and no password.
//!
//! psql also connects over TLS (a certificate made when the case runs), verifying the
//! server's certificate and sending the token as a cleartext password inside TLS.
//!
//! The scripts live in `conformance/clients/pg/`. psql's is a golden script: its output
//! must equal `psql.expected` (regenerate with `STRATA_REGENERATE=1`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::suites::clients::{clients_dir, skip_or_fail, start_server, ServerProcess, TOKEN};
use crate::{BackendKind, Case, CaseResult, Harness, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "pg_clients",
        needs_persistence: false,
        needs_multi_writer: false,
        external: true,
        cases: vec![
            Case {
                name: "tokio_postgres",
                run: |h| Box::pin(tokio_postgres_case(h)),
            },
            Case {
                name: "psycopg",
                run: |h| Box::pin(script_case(h, "psycopg")),
            },
            Case {
                name: "node_pg",
                run: |h| Box::pin(script_case(h, "node_pg")),
            },
            Case {
                name: "psql",
                run: |h| Box::pin(script_case(h, "psql")),
            },
            Case {
                name: "psql_tls",
                run: |h| Box::pin(psql_tls_case(h)),
            },
        ],
    }
}

fn pg_dir() -> PathBuf {
    clients_dir().join("pg")
}

/// The external clients run on the embedded backends; on DynamoDB the server code they
/// drive is the same, and tokio-postgres covers it.
fn embedded_only(h: &Harness, client: &str) -> Result<(), String> {
    if h.kind == BackendKind::Dynamodb {
        return Err(format!(
            "SKIP: on DynamoDB the PostgreSQL server is driven by tokio-postgres; {client} runs on the embedded backends"
        ));
    }
    Ok(())
}

fn split_addr(addr: &str) -> Result<(String, String), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("not host:port: {addr}"))?;
    Ok((host.to_string(), port.to_string()))
}

async fn script_case(h: &Harness, client: &str) -> CaseResult {
    embedded_only(h, client)?;
    let dir = pg_dir();
    let python = std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "python3".into());
    let (program, args): (String, Vec<String>) = match client {
        "psycopg" => {
            let ok = Command::new(&python)
                .args(["-c", "import psycopg"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return skip_or_fail(
                    "psycopg is not installed (pip install 'psycopg[binary]')".into(),
                );
            }
            (python, vec!["psycopg_client.py".into()])
        }
        "node_pg" => {
            if !dir.join("../node_modules/pg/package.json").is_file() {
                return skip_or_fail(format!(
                    "pg is not installed in {} (run npm ci there)",
                    dir.join("..").display()
                ));
            }
            ("node".into(), vec!["node_pg.mjs".into()])
        }
        _ => {
            if !psql_installed().await {
                return skip_or_fail("psql is not installed (Debian postgresql-client)".into());
            }
            return psql_case(h, &dir).await;
        }
    };
    let server = start_server(h, &[]).await?;
    let (host, port) = split_addr(&server.pg)?;
    let out = Command::new(&program)
        .args(&args)
        .current_dir(&dir)
        .env("PGHOST", &host)
        .env("PGPORT", &port)
        .env("PGUSER", "strata")
        .env("PGPASSWORD", TOKEN)
        .env("PGDATABASE", "default")
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .map_err(|_| format!("{client} did not finish in 120 s"))?
        .map_err(|e| format!("run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{client}: {}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

async fn run_psql(
    server: &ServerProcess,
    dir: &std::path::Path,
    args: &[&str],
    password: Option<&str>,
) -> Result<String, String> {
    let (host, port) = split_addr(&server.pg)?;
    // One stream for output and errors, so that errors appear where they happen.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec psql \"$@\" 2>&1", "psql"])
        .args(["-X", "-h", &host, "-p", &port, "-U", "strata"])
        .args(args)
        .current_dir(dir)
        .env_remove("PGPASSWORD")
        .env("PGHOST", &host)
        .env("PGPORT", &port)
        .env("PGUSER", "strata")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGTZ", "UTC")
        .env("PSQL_PAGER", "")
        .env("PAGER", "")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| "psql did not finish in 60 s".to_string())?
        .map_err(|e| format!("run psql: {e}"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// psql runs `psql.sql` and its output must equal `psql.expected`; then the connection
/// errors.
async fn psql_case(h: &Harness, dir: &std::path::Path) -> CaseResult {
    let server = start_server(h, &[]).await?;
    let got = run_psql(
        &server,
        dir,
        &["-d", "default", "-f", "psql.sql"],
        Some(TOKEN),
    )
    .await?;
    let expected_path = dir.join("psql.expected");
    if std::env::var_os("STRATA_REGENERATE").is_some() {
        std::fs::write(&expected_path, &got).map_err(|e| e.to_string())?;
    }
    let expected = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("read {}: {e}", expected_path.display()))?;
    if got != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}: expected {a:?}, got {b:?}", i + 1))
            .collect();
        return Err(format!(
            "psql output differs from psql.expected ({} vs {} lines): {}",
            expected.lines().count(),
            got.lines().count(),
            diff.join(" | ")
        ));
    }
    let wrong = run_psql(
        &server,
        dir,
        &["-d", "default", "-c", "SELECT 1"],
        Some("not-the-token-at-all"),
    )
    .await?;
    if !wrong.contains("password authentication failed") {
        return Err(format!("a wrong password: {wrong}"));
    }
    let missing = run_psql(
        &server,
        dir,
        &["-d", "default", "-w", "-c", "SELECT 1"],
        None,
    )
    .await?;
    if !missing.contains("no password supplied") {
        return Err(format!("no password: {missing}"));
    }
    let unknown = run_psql(
        &server,
        dir,
        &["-d", "nosuchdb", "-c", "SELECT 1"],
        Some(TOKEN),
    )
    .await?;
    if !unknown.contains("database \"nosuchdb\" does not exist") {
        return Err(format!("an unknown database: {unknown}"));
    }
    Ok(())
}

async fn psql_installed() -> bool {
    Command::new("psql")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

/// psql over TLS: `sslmode=verify-full` against a certificate for 127.0.0.1 made now, with
/// the cleartext password authentication TLS makes safe.
async fn psql_tls_case(h: &Harness) -> CaseResult {
    embedded_only(h, "psql")?;
    if !psql_installed().await {
        return skip_or_fail("psql is not installed (Debian postgresql-client)".into());
    }
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .map_err(|e| format!("make a certificate: {e}"))?;
    let dir = h.dir().join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    let server = start_server(
        h,
        &[
            "--tls-cert",
            &cert_path.to_string_lossy(),
            "--tls-key",
            &key_path.to_string_lossy(),
            "--pg-auth",
            "password",
        ],
    )
    .await?;
    let verified = format!(
        "dbname=default sslmode=verify-full sslrootcert={}",
        cert_path.display()
    );
    let out = run_psql(
        &server,
        &pg_dir(),
        &[
            "-d",
            &verified,
            "-A",
            "-t",
            "-c",
            "SELECT 'over tls'",
            "-c",
            "\\conninfo",
        ],
        Some(TOKEN),
    )
    .await?;
    if !out.contains("over tls") || !out.contains("SSL connection (protocol: TLSv1.3") {
        return Err(format!("psql over TLS: {out}"));
    }
    let wrong = run_psql(
        &server,
        &pg_dir(),
        &["-d", &verified, "-c", "SELECT 1"],
        Some("not-the-token-at-all"),
    )
    .await?;
    if !wrong.contains("password authentication failed") {
        return Err(format!("a wrong password over TLS: {wrong}"));
    }
    // A client that trusts another certificate authority refuses the server.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .map_err(|e| format!("make a certificate: {e}"))?;
    let other_path = dir.join("other.crt");
    std::fs::write(&other_path, other.cert.pem()).map_err(|e| e.to_string())?;
    let untrusted = run_psql(
        &server,
        &pg_dir(),
        &[
            "-d",
            &format!(
                "dbname=default sslmode=verify-full sslrootcert={}",
                other_path.display()
            ),
            "-c",
            "SELECT 1",
        ],
        Some(TOKEN),
    )
    .await?;
    if !untrusted.contains("certificate verify failed") {
        return Err(format!("an untrusted certificate: {untrusted}"));
    }
    Ok(())
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE ({e})"))
}

async fn connect(
    server: &ServerProcess,
    database: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    // The server printed its own address: host:port.
    let (host, port) = server.pg.rsplit_once(':').unwrap_or((&server.pg, "5433"));
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port.parse().unwrap_or(5433))
        .user("strata")
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn tokio_postgres_case(h: &Harness) -> CaseResult {
    use rust_decimal::Decimal;
    let server = start_server(h, &[]).await?;
    let e = |step: &'static str| {
        move |err: tokio_postgres::Error| format!("{step}: {err} ({})", code(&err))
    };
    let c = connect(&server, "default", TOKEN)
        .await
        .map_err(e("connect"))?;

    // DDL.
    c.batch_execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, flag BOOLEAN, small SMALLINT, big BIGINT, \
         real_v REAL, dbl DOUBLE PRECISION, price DECIMAL(10,2), name TEXT NOT NULL, \
         code VARCHAR(8), data BYTEA, day DATE, at TIMESTAMP); \
         CREATE UNIQUE INDEX items_code ON items (code)",
    )
    .await
    .map_err(e("create table"))?;

    // Every type through parameters, and NULLs.
    let day = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).ok_or("date")?;
    let at = day
        .and_hms_micro_opt(12, 34, 56, 789_000)
        .ok_or("timestamp")?;
    let price = Decimal::new(-1234, 2);
    let name = "Grüße, 世界 🚀 'quoted'";
    let data: Vec<u8> = vec![0, 1, 2, 255];
    let insert = c
        .prepare("INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .await
        .map_err(e("prepare insert"))?;
    let n = c
        .execute(
            &insert,
            &[
                &1i64,
                &true,
                &-7i64,
                &(i64::MIN + 1),
                &1.5f64,
                &-2.25e300f64,
                &price,
                &name,
                &"A-1",
                &data,
                &day,
                &at,
            ],
        )
        .await
        .map_err(e("insert all types"))?;
    if n != 1 {
        return Err(format!("insert reported {n} rows"));
    }
    let none: Option<i64> = None;
    c.execute(
        &insert,
        &[
            &2i64,
            &None::<bool>,
            &none,
            &none,
            &None::<f64>,
            &None::<f64>,
            &None::<Decimal>,
            &"",
            &None::<&str>,
            &None::<Vec<u8>>,
            &None::<chrono::NaiveDate>,
            &None::<chrono::NaiveDateTime>,
        ],
    )
    .await
    .map_err(e("insert NULLs"))?;
    let row = c
        .query_one("SELECT id, flag, small, big, real_v, dbl, price, name, code, data, day, at FROM items WHERE id = $1", &[&1i64])
        .await
        .map_err(e("select all types"))?;
    let got = (
        row.try_get::<_, i64>(0).map_err(e("id"))?,
        row.try_get::<_, bool>(1).map_err(e("flag"))?,
        row.try_get::<_, i64>(2).map_err(e("small"))?,
        row.try_get::<_, i64>(3).map_err(e("big"))?,
        row.try_get::<_, f64>(4).map_err(e("real"))?,
        row.try_get::<_, f64>(5).map_err(e("double"))?,
    );
    if got != (1, true, -7, i64::MIN + 1, 1.5, -2.25e300) {
        return Err(format!("numbers came back as {got:?}"));
    }
    let texts = (
        row.try_get::<_, Decimal>(6).map_err(e("decimal"))?,
        row.try_get::<_, String>(7).map_err(e("text"))?,
        row.try_get::<_, String>(8).map_err(e("varchar"))?,
        row.try_get::<_, Vec<u8>>(9).map_err(e("bytea"))?,
        row.try_get::<_, chrono::NaiveDate>(10).map_err(e("date"))?,
        row.try_get::<_, chrono::NaiveDateTime>(11)
            .map_err(e("timestamp"))?,
    );
    if texts
        != (
            price,
            name.to_string(),
            "A-1".to_string(),
            data.clone(),
            day,
            at,
        )
    {
        return Err(format!("values came back as {texts:?}"));
    }
    let nulls = c
        .query_one(
            "SELECT flag, small, price, code, data, day, at FROM items WHERE id = $1",
            &[&2i64],
        )
        .await
        .map_err(e("select NULLs"))?;
    for i in 0..7 {
        let v: Option<String> = match i {
            0 => nulls
                .try_get::<_, Option<bool>>(i)
                .map_err(e("null"))?
                .map(|v| v.to_string()),
            1 => nulls
                .try_get::<_, Option<i64>>(i)
                .map_err(e("null"))?
                .map(|v| v.to_string()),
            2 => nulls
                .try_get::<_, Option<Decimal>>(i)
                .map_err(e("null"))?
                .map(|v| v.to_string()),
            3 => nulls.try_get::<_, Option<String>>(i).map_err(e("null"))?,
            4 => nulls
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(e("null"))?
                .map(|v| format!("{v:?}")),
            5 => nulls
                .try_get::<_, Option<chrono::NaiveDate>>(i)
                .map_err(e("null"))?
                .map(|v| v.to_string()),
            _ => nulls
                .try_get::<_, Option<chrono::NaiveDateTime>>(i)
                .map_err(e("null"))?
                .map(|v| v.to_string()),
        };
        if let Some(v) = v {
            return Err(format!("column {i} of the NULL row came back as {v}"));
        }
    }
    // A text parameter compared with text, a range with two parameters.
    let rows = c
        .query(
            "SELECT id FROM items WHERE name = $1 AND id BETWEEN $2 AND $3",
            &[&name, &0i64, &10i64],
        )
        .await
        .map_err(e("select by text"))?;
    if rows.len() != 1 {
        return Err(format!("select by text found {} rows", rows.len()));
    }

    // Transactions.
    c.batch_execute("BEGIN; INSERT INTO items (id, name) VALUES (3, 'rolled back'); ROLLBACK")
        .await
        .map_err(e("rollback"))?;
    let mut t = connect(&server, "default", TOKEN)
        .await
        .map_err(e("connect"))?;
    {
        let tx = t.transaction().await.map_err(e("begin"))?;
        tx.execute(
            "INSERT INTO items (id, name) VALUES ($1, $2)",
            &[&4i64, &"committed"],
        )
        .await
        .map_err(e("insert in transaction"))?;
        tx.commit().await.map_err(e("commit"))?;
    }
    let ids: Vec<i64> = c
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .map_err(e("select ids"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids != [1, 2, 4] {
        return Err(format!(
            "after one rollback and one commit the ids are {ids:?}"
        ));
    }

    // A serialization conflict: t reads a row, c changes it, t's commit fails with 40001.
    {
        let tx = t.transaction().await.map_err(e("begin"))?;
        tx.query_one("SELECT big FROM items WHERE id = 1", &[])
            .await
            .map_err(e("read in transaction"))?;
        c.execute("UPDATE items SET big = 7 WHERE id = 1", &[])
            .await
            .map_err(e("concurrent update"))?;
        tx.execute("UPDATE items SET big = 8 WHERE id = 1", &[])
            .await
            .map_err(e("update in transaction"))?;
        match tx.commit().await {
            Err(err) if code(&err) == "40001" => {}
            other => return Err(format!("a conflicting commit: {other:?}")),
        }
    }
    let big: i64 = c
        .query_one("SELECT big FROM items WHERE id = 1", &[])
        .await
        .map_err(e("select after conflict"))?
        .get(0);
    if big != 7 {
        return Err(format!("after the conflict big is {big}"));
    }
    // The connection is usable after the failed commit.
    t.query_one("SELECT 1", &[])
        .await
        .map_err(e("after a failed commit"))?;

    // Cross-database join.
    c.batch_execute("CREATE DATABASE other")
        .await
        .map_err(e("create database"))?;
    let o = connect(&server, "other", TOKEN)
        .await
        .map_err(e("connect to other"))?;
    o.batch_execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, item INTEGER, note TEXT)")
        .await
        .map_err(e("create notes"))?;
    o.execute(
        "INSERT INTO notes VALUES ($1, $2, $3)",
        &[&1i64, &4i64, &"see item four"],
    )
    .await
    .map_err(e("insert note"))?;
    let row = o
        .query_one(
            "SELECT n.note, i.name FROM notes n JOIN \"default\".public.items i ON i.id = n.item",
            &[],
        )
        .await
        .map_err(e("cross-database join"))?;
    let joined: (String, String) = (row.get(0), row.get(1));
    if joined != ("see item four".into(), "committed".into()) {
        return Err(format!("the join returned {joined:?}"));
    }

    // Errors.
    for (sql, want) in [
        ("SELEC 1", "42601"),
        (
            "INSERT INTO items (id, name, code) VALUES (9, 'x', 'A-1')",
            "23505",
        ),
        ("INSERT INTO items (id) VALUES (10)", "23502"),
        ("SELECT * FROM no_such_table", "42P01"),
    ] {
        match c.batch_execute(sql).await {
            Err(err) if code(&err) == want => {}
            other => return Err(format!("{sql}: expected SQLSTATE {want}, got {other:?}")),
        }
    }
    match connect(&server, "default", "not-the-token-at-all").await {
        Err(err) if code(&err) == "28P01" => {}
        other => return Err(format!("a wrong password: {:?}", other.map(|_| ()))),
    }
    match connect(&server, "nosuchdb", TOKEN).await {
        Err(err) if code(&err) == "3D000" => {}
        other => return Err(format!("an unknown database: {:?}", other.map(|_| ()))),
    }
    // After all that, the first connection still works.
    c.query_one("SELECT count(*) FROM items", &[])
        .await
        .map_err(e("still usable"))?;
    Ok(())
}
