//! The `strata` command as a newcomer uses it: real processes over a real data directory.

use std::process::{Command, Output};

/// Run `strata` in `dir`, with none of the environment variables that would choose another
/// store, run directory or token.
fn strata(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir)
        .env_remove("STRATA_STORE")
        .env_remove("STRATA_RUN_DIR")
        .env_remove("STRATA_ACCESS_TOKEN")
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .args(args)
        .output()
        .expect("run strata")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn keys_round_trip_through_the_default_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = strata(d, &["kv", "get", "greeting"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );

    assert!(strata(d, &["kv", "set", "greeting", "hello"])
        .status
        .success());
    assert!(strata(d, &["kv", "set", "count", "41", "--u64"])
        .status
        .success());
    assert!(strata(d, &["kv", "set", "greet2", "hi"]).status.success());
    assert!(
        d.join("strata-data/default.redb").exists(),
        "the embedded default is redb in ./strata-data"
    );

    let got = strata(d, &["kv", "get", "greeting"]);
    assert_eq!(stdout(&got), "hello\n");
    assert_eq!(stdout(&strata(d, &["kv", "get", "count"])), "41\n");
    assert_eq!(
        stdout(&strata(d, &["kv", "list", "greet"])),
        "greet2\thi\ngreeting\thello\n"
    );
    assert_eq!(
        stdout(&strata(d, &["kv", "list", "--reverse", "--limit", "1"])),
        "greeting\thello\n"
    );

    assert!(strata(d, &["kv", "delete", "greeting"]).status.success());
    let gone = strata(d, &["kv", "get", "greeting"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("not found"));

    let bad = strata(d, &["kv", "set", "n", "forty", "--u64"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not an unsigned 64-bit integer"));
    let big = "k".repeat(3000);
    let too_long = strata(d, &["kv", "set", &big, "v"]);
    assert!(!too_long.status.success());
    assert!(
        stderr(&too_long).contains("write key size limit"),
        "{}",
        stderr(&too_long)
    );
}

#[test]
fn databases_are_created_listed_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(strata(d, &["db", "create", "orders"]).status.success());
    assert!(
        strata(d, &["db", "create", "team/a", "--durability", "async"])
            .status
            .success()
    );
    assert_eq!(stdout(&strata(d, &["db", "list"])), "orders\nteam/a\n");
    let dup = strata(d, &["db", "create", "orders"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"));
    let bad = strata(d, &["db", "create", "../escape"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid database name"));
    assert!(strata(d, &["kv", "set", "k", "v", "--db", "orders"])
        .status
        .success());
    assert!(strata(d, &["db", "drop", "orders"]).status.success());
    assert_eq!(stdout(&strata(d, &["db", "list"])), "team/a\n");
    assert!(!strata(d, &["db", "drop", "orders"]).status.success());
}

#[test]
fn store_urls_choose_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = strata(d, &["--store", "ftp://x", "db", "list"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid store URL"));
    let store = format!("redb:{}", d.join("elsewhere").display());
    assert!(strata(d, &["--store", &store, "kv", "set", "a", "1"])
        .status
        .success());
    assert!(d.join("elsewhere/default.redb").exists());
    if cfg!(feature = "sqlite") {
        let store = format!("sqlite:{}", d.join("lite").display());
        assert!(strata(d, &["--store", &store, "kv", "set", "a", "1"])
            .status
            .success());
        assert_eq!(
            stdout(&strata(d, &["--store", &store, "kv", "get", "a"])),
            "1\n"
        );
        assert!(d.join("lite/default.sqlite3").exists());
    }
}

/// Start `strata serve`, return the process and its first stdout line.
#[cfg(feature = "kv-connect")]
fn serve(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.current_dir(dir)
        .env_remove("STRATA_ACCESS_TOKEN")
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .env_remove("STRATA_STORE")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[cfg(feature = "kv-connect")]
#[test]
fn serve_needs_a_token_or_an_explicit_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let refused = strata(
        d,
        &[
            "serve",
            "--kv-connect",
            "127.0.0.1:0",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--no-auth"),
        "{}",
        stderr(&refused)
    );
    let short = strata(
        d,
        &[
            "serve",
            "--kv-connect",
            "127.0.0.1:0",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--access-token",
            "short",
        ],
    );
    assert!(!short.status.success());
    assert!(stderr(&short).contains("at least 12"));

    let (mut open, line) = serve(
        d,
        &[
            "serve",
            "--kv-connect",
            "127.0.0.1:0",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--no-auth",
        ],
        &[],
    );
    assert!(line.starts_with("Listening on http://127.0.0.1:"), "{line}");
    assert!(
        !line.trim().ends_with(":0"),
        "the real bound port is printed: {line}"
    );
    open.kill().unwrap();
    open.wait().unwrap();
    assert!(
        d.join("strata-data/default.redb").exists(),
        "serves the embedded default store"
    );
}

#[cfg(all(feature = "kv-connect", feature = "sqlite"))]
#[test]
fn reference_server_flags_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut child, line) = serve(
        d,
        &[
            "--sqlite-path",
            "kvdata",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
        ],
        &[("DENO_KV_ACCESS_TOKEN", "reference-token-123")],
    );
    assert!(line.starts_with("Listening on http://"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(d.join("kvdata/default.sqlite3").exists());

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/denokv-0.14.0.sqlite");
    let old = strata(
        d,
        &[
            "--sqlite-path",
            fixture.to_str().unwrap(),
            "serve",
            "--pgwire",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--access-token",
            "reference-token-123",
        ],
    );
    assert!(!old.status.success());
    assert!(stderr(&old).contains("import denokv"), "{}", stderr(&old));
}

#[test]
fn a_database_open_in_another_process_is_refused_clearly() {
    use strata_engine::{AtomicWrite, Engine, EngineConfig, Value};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = std::sync::Arc::new(strata::redb::RedbBackend::new(d.join("strata-data")));
        let engine = Engine::new(backend, EngineConfig::default());
        let db = engine.open_or_create("default").await.unwrap();
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::bytes(b"v".to_vec())))
            .await
            .unwrap();
        // This process holds the database; a second process must get a clear refusal.
        let other = strata(d, &["kv", "get", "k"]);
        assert!(!other.status.success());
        assert!(
            stderr(&other).contains("in use by another process"),
            "{}",
            stderr(&other)
        );
        engine.close().await;
    });
    drop(rt);
    assert_eq!(
        stdout(&strata(d, &["kv", "get", "k"])),
        "v\n",
        "free again once the holder closed it"
    );
}

#[cfg(feature = "sql")]
#[test]
fn sql_import_loads_a_csv_in_chunks_and_reports_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let create = strata(
        d,
        &[
            "sql",
            "-e",
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price DECIMAL(10,2), \
             on_sale BOOLEAN, added DATE)",
            "-e",
            "CREATE INDEX items_name ON items (name)",
        ],
    );
    assert!(create.status.success(), "{}", stderr(&create));

    // 2,500 rows in chunks of 1,000: three transactions. Columns in another order than the
    // table's, quoted fields with the delimiter inside, and an empty field as NULL.
    let mut csv = String::from("name,id,on_sale,price,added\n");
    for i in 0..2500 {
        let sale = if i % 2 == 0 { "true" } else { "f" };
        let price = if i % 10 == 0 {
            String::new()
        } else {
            format!("{i}.25")
        };
        csv.push_str(&format!(
            "\"item, no. {i}\",{i},{sale},{price},2026-01-{:02}\n",
            1 + i % 28
        ));
    }
    std::fs::write(d.join("items.csv"), &csv).unwrap();
    let out = strata(
        d,
        &["sql", "import", "items.csv", "--table", "items", "--header"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2500 rows imported into items"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("import items ["),
        "a progress line: {}",
        stderr(&out)
    );

    let q = strata(
        d,
        &[
            "sql",
            "-e",
            "SELECT count(*), count(price), sum(CASE WHEN on_sale THEN 1 ELSE 0 END) FROM items",
            "-e",
            "SELECT name, price, added FROM items WHERE id = 1234",
        ],
    );
    let text = stdout(&q);
    assert!(text.contains(" 2500 "), "{text}");
    assert!(text.contains(" 2250 "), "{text}");
    assert!(text.contains(" 1250"), "{text}");
    assert!(
        text.contains("item, no. 1234 | 1234.25 | 2026-01-03"),
        "{text}"
    );
    let check = strata(d, &["sql", "check"]);
    assert!(check.status.success(), "{}", stdout(&check));

    // A bad value in the second chunk: the first chunk stays, the error names the line and
    // how to resume, and resuming after fixing the file loads the rest.
    let mut bad = String::new();
    for i in 0..1500 {
        let id = 10_000 + i;
        let price = if i == 1200 {
            "lots".to_string()
        } else {
            "1.50".to_string()
        };
        bad.push_str(&format!("{id},n{id},{price},,\n"));
    }
    std::fs::write(d.join("bad.csv"), &bad).unwrap();
    let out = strata(d, &["sql", "import", "bad.csv", "--table", "items"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR 22000") && err.contains("lots"), "{err}");
    assert!(err.contains("at line 1201 of"), "{err}");
    assert!(err.contains("1000 rows were committed"), "{err}");
    assert!(err.contains("--skip 1000"), "{err}");
    std::fs::write(d.join("bad.csv"), bad.replace(",lots,", ",2.50,")).unwrap();
    let out = strata(
        d,
        &[
            "sql", "import", "bad.csv", "--table", "items", "--skip", "1000",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("500 rows imported"),
        "{}",
        stdout(&out)
    );
    let q = strata(
        d,
        &["sql", "-e", "SELECT count(*) FROM items WHERE id >= 10000"],
    );
    assert!(stdout(&q).contains(" 1500"), "{}", stdout(&q));

    // A row with too few fields is refused with its line.
    std::fs::write(d.join("short.csv"), "1,a,1.00,true\n").unwrap();
    let out = strata(d, &["sql", "import", "short.csv", "--table", "items"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected"), "{}", stderr(&out));
}

/// `strata init` writes a starter db.toml; `strata bootstrap` creates what it declares and,
/// run again, nothing; `strata serve` loads it, bootstraps, and serves its tables over REST
/// at the address it names.
#[cfg(all(feature = "rest", feature = "kv-connect"))]
#[test]
fn db_toml_is_initialised_bootstrapped_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(strata(d, &["init"]).status.success());
    let again = strata(d, &["init"]);
    assert!(!again.status.success() && stderr(&again).contains("--force"));
    let text = std::fs::read_to_string(d.join("db.toml")).unwrap();
    let text = text
        .replace("port = 4200", "port = 0")
        .replace("127.0.0.1:4512", "127.0.0.1:0")
        .replace("127.0.0.1:5433", "127.0.0.1:0");
    std::fs::write(d.join("db.toml"), text).unwrap();

    let first = strata(d, &["bootstrap"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("created app.users"),
        "{}",
        stderr(&first)
    );
    let second = strata(d, &["bootstrap"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("everything declared exists already"),
        "{}",
        stderr(&second)
    );

    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[databases.a.tables.t]\nsql = \"DROP TABLE t\"\n").unwrap();
    let refused = strata(d, &["bootstrap", "--config", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("line 2")
            && stderr(&refused).contains("databases.a.tables.t.sql"),
        "{}",
        stderr(&refused)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(d)
        .env_remove("STRATA_STORE")
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .env("STRATA_ACCESS_TOKEN", "db-toml-token-123")
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rest = rest_url(&mut child);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tables = rt.block_on(async {
        let c = strata::rest::Client::new(&rest, Some("db-toml-token-123".into())).unwrap();
        c.tables("app").await
    });
    // `strata db … --url` manages the running server's databases.
    let remote = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .current_dir(d)
            .env("STRATA_ACCESS_TOKEN", "db-toml-token-123")
            .args(["db", "--url", &rest])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(remote(&["create", "remote1"]).status.success());
    let listed = remote(&["list"]);
    let dropped = remote(&["drop", "remote1"]);
    let missing = remote(&["drop", "remote1"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(tables.unwrap(), vec!["users".to_string()]);
    let listed = stdout(&listed);
    let names: Vec<&str> = listed.lines().collect();
    assert!(
        names.contains(&"app") && names.contains(&"remote1"),
        "{names:?}"
    );
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));
}

/// The REST address a starting `strata serve` prints, read from its standard output.
#[cfg(all(feature = "rest", feature = "kv-connect"))]
fn rest_url(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child
        .stdout
        .take()
        .expect("serve's standard output is piped");
    let mut lines = std::io::BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line.expect("serve's standard output");
        if let Some(url) = line.strip_prefix("REST on ") {
            // Whatever it prints later is read too, so that it never writes to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return url.to_string();
        }
    }
    panic!("serve ended without printing its REST address");
}

/// `strata serve --detach` returns once the server is ready and leaves it running in the
/// background; `status` finds it through the pid file in the data directory, `logs` prints
/// its output, `stop` ends it gracefully, and the data is there on the next start.
#[cfg(all(feature = "rest", feature = "kv-connect"))]
#[test]
fn a_detached_server_is_found_logged_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| strata(d, args);
    /// Stops the server if the test ends early.
    struct Stop<'a>(&'a std::path::Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            strata(self.0, &["stop", "--timeout", "20"]);
        }
    }
    let detach = [
        "serve",
        "--detach",
        "--no-auth",
        "--kv-connect",
        "127.0.0.1:0",
        "--pgwire",
        "127.0.0.1:0",
        "--rest",
        "127.0.0.1:0",
    ];
    let rest_of = |status: &str| -> String {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with("REST "))
            .unwrap_or_else(|| panic!("no REST address in {status}"));
        line.split_whitespace().last().unwrap().to_string()
    };

    let none = run(&["status"]);
    assert_eq!(none.status.code(), Some(3), "{}", stdout(&none));
    assert!(stdout(&none).contains("not running"));

    let started = run(&detach);
    assert!(started.status.success(), "{}", stderr(&started));
    let _stop = Stop(d);
    assert!(stdout(&started).contains("in the background (pid"));
    let pid: u32 = std::fs::read_to_string(d.join("strata-data/strata.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, 0);

    let status = run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    assert!(text.contains(&format!("running (pid {pid}")), "{text}");
    assert!(text.contains("health      ok"), "{text}");
    let rest = rest_of(&text);

    let twice = run(&detach);
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("already running"),
        "{}",
        stderr(&twice)
    );

    let created = run(&["db", "--url", &rest, "create", "kept"]);
    assert!(created.status.success(), "{}", stderr(&created));

    // `strata sql --url http://…` speaks the REST API: a request per statement, BEGIN …
    // ROLLBACK as an HTTP transaction.
    let sql = run(&[
        "sql",
        "--url",
        &rest,
        "--database",
        "kept",
        "-e",
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one')",
        "-e",
        "BEGIN; DELETE FROM t; ROLLBACK; SELECT v FROM t",
    ]);
    assert!(sql.status.success(), "{}", stderr(&sql));
    let out = stdout(&sql);
    for expected in ["INSERT 0 1", "DELETE 1", "ROLLBACK", " one", "(1 row)"] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    let bad = run(&[
        "sql",
        "--url",
        &rest,
        "--database",
        "kept",
        "-e",
        "SELECT nope",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("HTTP 400"), "{}", stderr(&bad));

    let logs = run(&["logs"]);
    assert!(
        stdout(&logs).contains("REST on http://"),
        "{}",
        stdout(&logs)
    );
    let last = run(&["logs", "-n", "1"]);
    assert_eq!(stdout(&last).lines().count(), 1, "{}", stdout(&last));

    let stopped = run(&["stop"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains(&format!("pid {pid}")));
    assert!(!d.join("strata-data/strata.pid").exists());
    assert_eq!(run(&["status"]).status.code(), Some(3));
    assert!(stdout(&run(&["logs"])).contains("shut down"));
    let again = run(&["stop"]);
    assert!(again.status.success() && stderr(&again).contains("no server is running"));

    // The database created over REST is there after the restart.
    let restarted = run(&detach);
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    let rest = rest_of(&stdout(&restarted));
    let listed = run(&["db", "--url", &rest, "list"]);
    assert!(
        stdout(&listed).lines().any(|l| l == "kept"),
        "{}",
        stdout(&listed)
    );
    assert!(run(&["stop"]).status.success());

    // A store without a data directory needs --run-dir for its run files.
    let memory = run(&["--store", "memory:", "serve", "--detach", "--no-auth"]);
    assert!(!memory.status.success());
    assert!(stderr(&memory).contains("--run-dir"), "{}", stderr(&memory));
}

/// Requests are traced only when `STRATA_LOG` asks for it (a span per request costs every
/// request its formatting), and a `STRATA_LOG` that does not parse is named, not obeyed.
#[cfg(all(feature = "rest", feature = "kv-connect"))]
#[test]
fn strata_log_turns_request_tracing_on_and_a_bad_value_is_named() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(d)
        .env_remove("STRATA_STORE")
        .env("STRATA_LOG", "a=b=c")
        .args(["db", "list"])
        .output()
        .unwrap();
    assert!(bad.status.success(), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains(r#"STRATA_LOG="a=b=c" is ignored"#),
        "{}",
        stderr(&bad)
    );
    // A server's log with `STRATA_LOG` as given, after one request to /health.
    let log_of_a_request = |log: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.current_dir(d)
            .env_remove("STRATA_STORE")
            .env_remove("STRATA_LOG")
            .args(["serve", "--no-auth", "--kv-connect", "127.0.0.1:0"])
            .args(["--pgwire", "127.0.0.1:0", "--rest", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(l) = log {
            cmd.env("STRATA_LOG", l);
        }
        let mut child = cmd.spawn().unwrap();
        let rest = rest_url(&mut child);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let health = rt.block_on(async {
            strata::rest::Client::new(&rest, None)
                .unwrap()
                .health()
                .await
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(health.is_ok(), "{health:?}");
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        log
    };
    let traced = log_of_a_request(Some("strata_rest=debug"));
    assert!(
        traced.contains("path=/health") && traced.contains("answered status=200"),
        "{traced}"
    );
    let quiet = log_of_a_request(None);
    assert!(!quiet.contains("answered"), "{quiet}");
}
