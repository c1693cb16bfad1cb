//! The REST API of `strata serve`, over real sockets, through `strata_rest::Client` and raw
//! requests: every endpoint with the JSON shapes of the HTAP server it replaces, the input
//! rules (one statement, nothing outside the database, size limits, names), each error's
//! status, transactions over HTTP, KV beside SQL, auth, metrics and the OpenAPI document.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use strata_rest::{Client, ClientError};

use crate::suites::clients::{skip_or_fail, start_server, ServerProcess, TOKEN};
use crate::{cases, ensure, ensure_eq, BackendKind, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "rest",
        needs_persistence: false,
        needs_multi_writer: false,
        external: true,
        cases: cases![
            databases_are_created_listed_and_dropped,
            statements_run_with_the_compatible_shapes,
            reads_and_writes_keep_to_their_endpoints,
            errors_have_their_statuses,
            cross_database_queries_join,
            transactions_commit_roll_back_and_conflict,
            kv_sits_beside_sql,
            limits_answer_413,
            auth_metrics_and_openapi,
            concurrent_inserts_all_succeed,
            schemathesis_finds_nothing,
            the_console_works_in_a_browser,
        ],
    }
}

async fn server(h: &Harness) -> Result<(ServerProcess, Client), String> {
    let server = start_server(h, &[]).await?;
    let client = Client::new(&server.rest, Some(TOKEN.into())).step("client")?;
    Ok((server, client))
}

/// Create `db` and run `statements` in it.
async fn database_with(c: &Client, db: &str, statements: &[&str]) -> Result<(), String> {
    c.create_database(db).await.step(db)?;
    for sql in statements {
        c.execute(db, sql, &[]).await.step(sql)?;
    }
    Ok(())
}

/// A raw request's status and JSON body.
async fn raw(
    c: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let (status, value) = c.request(method, path, body.as_ref()).await.step(path)?;
    Ok((status.as_u16(), value))
}

fn refused_status(e: &ClientError) -> u16 {
    match e {
        ClientError::Refused { status, .. } => *status,
        ClientError::Transport(_) => 0,
    }
}

async fn databases_are_created_listed_and_dropped(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    ensure_eq!(
        raw(&c, Method::POST, "/db", Some(json!({"name": "shop"}))).await?,
        (201, json!({"name": "shop"}))
    );
    let (status, body) = raw(&c, Method::POST, "/db", Some(json!({"name": "shop"}))).await?;
    ensure_eq!(status, 409, "{body}");
    ensure!(
        body["error"].as_str().is_some_and(|e| e.contains("exists")),
        "{body}"
    );
    // Nested names work in paths, encoded or not.
    database_with(&c, "project/mydb", &[]).await?;
    let list = c.list_databases().await.step("list")?;
    ensure!(
        list.contains(&"shop".to_string()) && list.contains(&"project/mydb".to_string()),
        "{list:?}"
    );
    c.execute(
        "project/mydb",
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        &[],
    )
    .await
    .step("table in a nested database")?;
    ensure_eq!(
        raw(&c, Method::GET, "/db/project%2Fmydb/tables", None).await?,
        (200, json!(["t"]))
    );
    ensure_eq!(
        raw(&c, Method::DELETE, "/db/project/mydb", None).await?,
        (200, json!({"dropped": "project/mydb"}))
    );
    ensure_eq!(
        raw(&c, Method::DELETE, "/db/project/mydb", None).await?.0,
        404
    );
    for bad in ["", "../etc", "/abs", "a b", "x//y", "ends/"] {
        let (status, body) = raw(&c, Method::POST, "/db", Some(json!({"name": bad}))).await?;
        ensure_eq!(status, 400, "{bad:?}: {body}");
    }
    let long = "n".repeat(129);
    ensure_eq!(
        raw(&c, Method::POST, "/db", Some(json!({"name": long})))
            .await?
            .0,
        400
    );
    ensure_eq!(
        raw(&c, Method::GET, "/health", None).await?,
        (200, json!({"status": "ok"}))
    );
    Ok(())
}

async fn statements_run_with_the_compatible_shapes(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(&c, "app", &[]).await?;
    let ddl = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score DOUBLE, photo BLOB)";
    let (status, body) = raw(
        &c,
        Method::POST,
        "/db/app/execute",
        Some(json!({"sql": ddl})),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body["affected"], json!(0));
    let (status, body) = raw(
        &c,
        Method::POST,
        "/db/app/execute",
        Some(json!({"sql": "INSERT INTO users VALUES (42, 'ann', 1.5, X'010203'), (43, NULL, NULL, NULL)"})),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body["affected"], json!(2));
    ensure!(
        body["version"].as_u64().is_some(),
        "a committed write reports its version: {body}"
    );
    let (status, body) = raw(
        &c,
        Method::POST,
        "/db/app/query/oltp",
        Some(json!({"sql": "SELECT id, name, score, photo FROM users ORDER BY id"})),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(
        body,
        json!({
            "columns": [
                {"name": "id", "type": "Int64"},
                {"name": "name", "type": "Utf8"},
                {"name": "score", "type": "Float64"},
                {"name": "photo", "type": "Binary"}
            ],
            "rows": [[42, "ann", 1.5, "AQID"], [43, null, null, null]]
        })
    );
    // Parameters.
    let rows = c
        .query_oltp("app", "SELECT name FROM users WHERE id = $1", &[json!(42)])
        .await
        .step("params")?;
    ensure_eq!(rows.rows, vec![vec![json!("ann")]]);
    let affected = c
        .execute(
            "app",
            "INSERT INTO users (id, name) VALUES ($1, $2)",
            &[json!(44), json!("bob")],
        )
        .await
        .step("insert with params")?;
    ensure_eq!(affected.affected, 1);
    // An empty result.
    ensure_eq!(
        raw(
            &c,
            Method::POST,
            "/db/app/query/oltp",
            Some(json!({"sql": "SELECT * FROM users WHERE id = 0"}))
        )
        .await?,
        (200, json!({"columns": [], "rows": []}))
    );
    // Tables and a table's schema.
    ensure_eq!(
        raw(&c, Method::GET, "/db/app/tables", None).await?,
        (200, json!(["users"]))
    );
    ensure_eq!(
        raw(&c, Method::GET, "/db/app/schema/users", None).await?,
        (
            200,
            json!({
                "columns": [{"name": "name", "type": "Utf8"}, {"name": "type", "type": "Utf8"}],
                "rows": [["id", "INTEGER"], ["name", "TEXT"], ["score", "DOUBLE"], ["photo", "BLOB"]]
            })
        )
    );
    // AS OF: the version an execute reported reads the database as it was then.
    let before = c
        .execute("app", "UPDATE users SET name = 'ann2' WHERE id = 42", &[])
        .await
        .step("update")?;
    let version = before.version.ok_or("an update reports its version")?;
    c.execute("app", "UPDATE users SET name = 'ann3' WHERE id = 42", &[])
        .await
        .step("update again")?;
    let old = c
        .query_oltp(
            "app",
            &format!("SELECT name FROM users WHERE id = 42 AS OF {version}"),
            &[],
        )
        .await
        .step("as of")?;
    ensure_eq!(old.rows, vec![vec![json!("ann2")]]);
    Ok(())
}

async fn reads_and_writes_keep_to_their_endpoints(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(&c, "rw", &["CREATE TABLE t (id INTEGER PRIMARY KEY)"]).await?;
    let cases: &[(&str, &str, &str)] = &[
        ("/db/rw/query/oltp", "INSERT INTO t VALUES (1)", "execute"),
        ("/query", "DELETE FROM rw.public.t", "execute"),
        ("/db/rw/query/oltp", "CREATE TABLE u (id INT)", "execute"),
        ("/db/rw/execute", "SELECT * FROM t", "query"),
        ("/db/rw/execute", "SELECT 1; DROP TABLE t", "one statement"),
        ("/db/rw/query/oltp", "SELECT 1; SELECT 2", "one statement"),
        (
            "/db/rw/execute",
            "COPY t TO '/tmp/out.csv'",
            "outside the database",
        ),
        ("/db/rw/execute", "BEGIN", "POST /db/{name}/tx"),
        ("/db/rw/execute", "USE other", "USE"),
        ("/db/rw/execute", "SET x = 1", "session settings"),
    ];
    for (path, sql, says) in cases {
        let (status, body) = raw(&c, Method::POST, path, Some(json!({"sql": sql}))).await?;
        ensure_eq!(status, 400, "{path} {sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        ensure!(error.contains(says), "{path} {sql}: {error}");
    }
    // Nothing of the refused writes happened.
    ensure_eq!(c.tables("rw").await.step("tables")?, vec!["t".to_string()]);
    let rows = c
        .query_oltp("rw", "SELECT count(*) AS n FROM t", &[])
        .await
        .step("count")?;
    ensure_eq!(rows.rows, vec![vec![json!(0)]]);
    Ok(())
}

async fn errors_have_their_statuses(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(
        &c,
        "err",
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
            "INSERT INTO t VALUES (1, 'a')",
        ],
    )
    .await?;
    let post = |path: &'static str, body: Value| {
        let c = c.clone();
        async move { raw(&c, Method::POST, path, Some(body)).await }
    };
    // A syntax error is 400 with the parser's message.
    let (status, body) = post("/db/err/execute", json!({"sql": "INSRT INTO t VALUES (2)"})).await?;
    ensure_eq!(status, 400, "{body}");
    ensure!(
        body["error"].as_str().is_some_and(|e| e.contains("syntax")),
        "{body}"
    );
    let expect: &[(&str, Value, u16)] = &[
        (
            "/db/err/execute",
            json!({"sql": "INSERT INTO t VALUES (1, 'dup')"}),
            409,
        ),
        (
            "/db/err/execute",
            json!({"sql": "INSERT INTO t VALUES (3, NULL)"}),
            400,
        ),
        (
            "/db/err/query/oltp",
            json!({"sql": "SELECT * FROM missing"}),
            404,
        ),
        ("/db/nope/query/oltp", json!({"sql": "SELECT 1"}), 404),
        (
            "/db/nope/execute",
            json!({"sql": "CREATE TABLE x (id INT)"}),
            404,
        ),
        (
            "/db/err/query/oltp",
            json!({"sql": "SELECT nocolumn FROM t"}),
            400,
        ),
        ("/db/err/query/oltp", json!({"sql": ""}), 400),
        (
            "/db/err/query/oltp",
            json!({"sql": "SELECT $1", "params": [[1, 2]]}),
            400,
        ),
        ("/db/err/query/oltp", json!({"sql": 5}), 400),
        ("/db/err/query/oltp", json!({"query": "SELECT 1"}), 400),
        ("/db/err/nothing", json!({}), 405),
    ];
    for (path, body, want) in expect {
        let (status, answer) = raw(&c, Method::POST, path, Some(body.clone())).await?;
        ensure_eq!(status, *want, "{path} {body}: {answer}");
        ensure!(
            answer["error"].is_string(),
            "{path}: an error body: {answer}"
        );
    }
    // The unique violation says it is not worth retrying as it is.
    let (_, answer) = post(
        "/db/err/execute",
        json!({"sql": "INSERT INTO t VALUES (1, 'dup')"}),
    )
    .await?;
    ensure_eq!(answer["retryable"], json!(false), "{answer}");
    // A body that is not JSON, and a path that is nothing.
    let (status, _) = c
        .request(Method::GET, "/nothing/here", None)
        .await
        .step("unknown path")?;
    ensure_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = raw(&c, Method::GET, "/db/err/schema/bad-name", None).await?;
    ensure_eq!(status, 400, "{answer}");
    let (status, _) = raw(&c, Method::GET, "/db/err/schema/missing", None).await?;
    ensure_eq!(status, 404);
    let long = "t".repeat(129);
    ensure_eq!(
        raw(&c, Method::GET, &format!("/db/err/schema/{long}"), None)
            .await?
            .0,
        400
    );
    Ok(())
}

async fn cross_database_queries_join(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    for db in ["users", "orders"] {
        c.create_database(db).await.step(db)?;
    }
    c.execute(
        "users",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
        &[],
    )
    .await
    .step("customers")?;
    c.execute(
        "users",
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob')",
        &[],
    )
    .await
    .step("customers rows")?;
    c.execute(
        "orders",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, total INTEGER)",
        &[],
    )
    .await
    .step("orders")?;
    c.execute(
        "orders",
        "INSERT INTO orders VALUES (10, 1, 5), (11, 1, 7), (12, 2, 1)",
        &[],
    )
    .await
    .step("orders rows")?;
    let (status, body) = raw(
        &c,
        Method::POST,
        "/query",
        Some(
            json!({"sql": "SELECT c.name, sum(o.total) AS total FROM users.public.customers c \
                            JOIN orders.public.orders o ON o.customer = c.id \
                            GROUP BY c.name ORDER BY c.name"}),
        ),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body["rows"], json!([["ann", 12], ["bob", 1]]));
    ensure_eq!(body["columns"][0], json!({"name": "name", "type": "Utf8"}));
    Ok(())
}

async fn transactions_commit_roll_back_and_conflict(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(
        &c,
        "bank",
        &[
            "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER)",
            "INSERT INTO acct VALUES (1, 100), (2, 0)",
        ],
    )
    .await?;
    let count = |sql: &'static str| {
        let c = c.clone();
        async move {
            c.query_oltp("bank", sql, &[])
                .await
                .map(|r| r.rows)
                .map_err(|e| e.to_string())
        }
    };

    // Commit: both writes appear at once.
    let tx = c.begin("bank").await.step("begin")?;
    ensure!(tx.idle_timeout_ms > 0, "{tx:?}");
    c.execute_in(
        "bank",
        "UPDATE acct SET bal = bal - 10 WHERE id = 1",
        &[],
        Some(&tx.tx),
    )
    .await
    .step("debit")?;
    c.execute_in(
        "bank",
        "UPDATE acct SET bal = bal + 10 WHERE id = 2",
        &[],
        Some(&tx.tx),
    )
    .await
    .step("credit")?;
    let inside = c
        .query_oltp_in(
            "bank",
            "SELECT bal FROM acct ORDER BY id",
            &[],
            Some(&tx.tx),
        )
        .await
        .step("read inside")?;
    ensure_eq!(inside.rows, vec![vec![json!(90)], vec![json!(10)]]);
    ensure_eq!(
        count("SELECT bal FROM acct ORDER BY id").await?,
        vec![vec![json!(100)], vec![json!(0)]]
    );
    let ended = c.commit(&tx.tx).await.step("commit")?;
    ensure_eq!(ended.outcome, "committed");
    ensure!(ended.version.is_some(), "{ended:?}");
    ensure_eq!(
        count("SELECT bal FROM acct ORDER BY id").await?,
        vec![vec![json!(90)], vec![json!(10)]]
    );
    // The transaction is gone.
    let e = c
        .commit(&tx.tx)
        .await
        .err()
        .ok_or("a second commit is refused")?;
    ensure_eq!(refused_status(&e), 404);

    // Rollback: nothing appears.
    let tx = c.begin("bank").await.step("begin 2")?;
    c.execute_in("bank", "DELETE FROM acct", &[], Some(&tx.tx))
        .await
        .step("delete")?;
    ensure_eq!(
        c.rollback(&tx.tx).await.step("rollback")?.outcome,
        "rolled_back"
    );
    ensure_eq!(
        count("SELECT count(*) FROM acct").await?,
        vec![vec![json!(2)]]
    );

    // Two transactions that read and write the same row: the second commit conflicts.
    let a = c.begin("bank").await.step("begin a")?;
    let b = c.begin("bank").await.step("begin b")?;
    for t in [&a, &b] {
        c.query_oltp_in(
            "bank",
            "SELECT bal FROM acct WHERE id = 1",
            &[],
            Some(&t.tx),
        )
        .await
        .step("read")?;
        c.execute_in(
            "bank",
            "UPDATE acct SET bal = bal + 1 WHERE id = 1",
            &[],
            Some(&t.tx),
        )
        .await
        .step("write")?;
    }
    c.commit(&a.tx).await.step("commit a")?;
    match c.commit(&b.tx).await {
        Err(ClientError::Refused {
            status: 409,
            retryable: true,
            ..
        }) => {}
        other => {
            return Err(format!(
                "the second commit conflicts (409, retryable): {other:?}"
            ))
        }
    }
    ensure_eq!(
        count("SELECT bal FROM acct WHERE id = 1").await?,
        vec![vec![json!(91)]]
    );
    // A transaction on one database cannot run statements on another.
    database_with(&c, "other", &[]).await?;
    let t = c.begin("bank").await.step("begin t")?;
    let e = c
        .query_oltp_in("other", "SELECT 1", &[], Some(&t.tx))
        .await
        .err()
        .ok_or("a statement for another database is refused")?;
    ensure_eq!(refused_status(&e), 400);
    let e = c
        .commit("no-such-transaction")
        .await
        .err()
        .ok_or("unknown tx")?;
    ensure_eq!(refused_status(&e), 404);
    Ok(())
}

async fn kv_sits_beside_sql(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(
        &c,
        "mixed",
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY)",
            "INSERT INTO t VALUES (1)",
        ],
    )
    .await?;
    c.kv_set("mixed", "users/ann", "admin").await.step("set")?;
    c.kv_set("mixed", "users/bob", "viewer").await.step("set")?;
    c.kv_set("mixed", "config", "on").await.step("set")?;
    let e = c.kv_get("mixed", "users/ann").await.step("get")?;
    ensure_eq!(
        (e.key.as_str(), e.value.clone(), e.encoding.as_str()),
        ("users/ann", json!("admin"), "text")
    );
    ensure_eq!(e.versionstamp.len(), 20);
    let (status, body) = raw(
        &c,
        Method::PUT,
        "/db/mixed/kv/hits",
        Some(json!({"value": 7, "encoding": "u64"})),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(c.kv_get("mixed", "hits").await.step("u64")?.value, json!(7));
    // An expiry is relative to the write: computed from the clock when the test runs.
    let before = strata_engine::now_ms();
    let (status, body) = raw(
        &c,
        Method::PUT,
        "/db/mixed/kv/session%2F1",
        Some(json!({"value": "token", "expire_in_ms": 3_600_000})),
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    let expires = c
        .kv_get("mixed", "session/1")
        .await
        .step("expiring")?
        .expires_at
        .ok_or("an expiry")?;
    let after = strata_engine::now_ms();
    ensure!(
        expires >= before + 3_600_000 && expires <= after + 3_600_000,
        "expires at {expires}, written between {before} and {after}"
    );
    c.kv_delete("mixed", "session/1").await.step("delete")?;
    // Listing sees the KV keys only: never the table's rows.
    let page = c.kv_list("mixed", "", 100).await.step("list")?;
    let keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    ensure_eq!(keys, vec!["config", "hits", "users/ann", "users/bob"]);
    let page = c.kv_list("mixed", "users/", 1).await.step("page")?;
    ensure_eq!(page.entries.len(), 1);
    let next = page.next.clone().ok_or("a next page")?;
    let page = c
        .kv_list_from("mixed", "users/", 1, Some(&next))
        .await
        .step("the next page")?;
    ensure_eq!(page.entries[0].key, "users/bob");
    ensure!(page.next.is_none(), "users/bob is the last key");
    // A key given as text continues the same way.
    let (status, body) = raw(
        &c,
        Method::GET,
        "/db/mixed/kv?prefix=users%2F&after=users%2Fann",
        None,
    )
    .await?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body["entries"][0]["key"], json!("users/bob"));
    let (status, _) = raw(&c, Method::GET, "/db/mixed/kv?cursor=%21%21", None).await?;
    ensure_eq!(status, 400, "a cursor that is not base64url");
    c.kv_delete("mixed", "config").await.step("delete")?;
    let e = c.kv_get("mixed", "config").await.err().ok_or("deleted")?;
    ensure_eq!(refused_status(&e), 404);
    // Keys that would reach the SQL layer's keyspace, and unprintable keys, are refused.
    for key in ["%F0%9F%98%80", "a%0Ab"] {
        let (status, body) = raw(
            &c,
            Method::PUT,
            &format!("/db/mixed/kv/{key}"),
            Some(json!({"value": "x"})),
        )
        .await?;
        ensure_eq!(status, 400, "{key}: {body}");
    }
    let (status, _) = raw(&c, Method::PUT, "/db/mixed/kv/k", Some(json!({"value": 1}))).await?;
    ensure_eq!(status, 400);
    let (status, _) = raw(&c, Method::GET, "/db/mixed/kv?limit=0", None).await?;
    ensure_eq!(status, 400);
    let (status, _) = raw(&c, Method::GET, "/db/mixed/kv?bogus=1", None).await?;
    ensure_eq!(status, 400);
    // The table is intact.
    let rows = c
        .query_oltp("mixed", "SELECT id FROM t", &[])
        .await
        .step("rows")?;
    ensure_eq!(rows.rows, vec![vec![json!(1)]]);
    Ok(())
}

async fn limits_answer_413(h: &Harness) -> CaseResult {
    if h.kind == BackendKind::Dynamodb {
        return Err("SKIP: the limits are checked before the store is reached; the embedded backends cover them".into());
    }
    let (_s, c) = server(h).await?;
    database_with(&c, "big", &[]).await?;
    // SQL text over 10 MiB in a body under 16 MiB.
    let sql = format!("SELECT '{}'", "x".repeat(10 * 1024 * 1024 + 1));
    let (status, body) = raw(
        &c,
        Method::POST,
        "/db/big/query/oltp",
        Some(json!({"sql": sql})),
    )
    .await?;
    ensure_eq!(status, 413, "{}", body["error"]);
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("10485760")),
        "names the limit: {body}"
    );
    // A body over 16 MiB.
    let sql = format!("SELECT '{}'", "x".repeat(17 * 1024 * 1024));
    let (status, body) = raw(
        &c,
        Method::POST,
        "/db/big/query/oltp",
        Some(json!({"sql": sql})),
    )
    .await?;
    ensure_eq!(status, 413, "{}", body["error"]);
    ensure!(
        body["error"].as_str().is_some_and(|e| e.contains("16 MiB")),
        "names the limit: {body}"
    );
    // A value over the engine's limit.
    c.execute(
        "big",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        &[],
    )
    .await
    .step("ddl")?;
    let v = "y".repeat(200 * 1024);
    let e = c
        .execute("big", "INSERT INTO t VALUES (1, $1)", &[json!(v)])
        .await
        .err()
        .ok_or("an oversized value is refused")?;
    ensure_eq!(refused_status(&e), 413, "{e}");
    // The server is still fine.
    c.health().await.step("health")?;
    Ok(())
}

async fn auth_metrics_and_openapi(h: &Harness) -> CaseResult {
    let (s, c) = server(h).await?;
    let anonymous = Client::new(&s.rest, None).step("anonymous")?;
    let wrong = Client::new(&s.rest, Some("not-the-token-at-all".into())).step("wrong")?;
    ensure_eq!(
        anonymous
            .health()
            .await
            .step("health needs no token")?
            .status,
        "ok"
    );
    for (who, client) in [("no token", &anonymous), ("wrong token", &wrong)] {
        for path in ["/db", "/metrics", "/openapi.json", "/db/default/tables"] {
            let (status, body) = raw(client, Method::GET, path, None).await?;
            ensure_eq!(status, 401, "{who} {path}: {body}");
        }
        let (status, _) = raw(client, Method::POST, "/db", Some(json!({"name": "x"}))).await?;
        ensure_eq!(status, 401, "{who}");
    }
    ensure!(
        !c.list_databases()
            .await
            .step("list")?
            .contains(&"x".to_string()),
        "an unauthorized create did nothing"
    );

    database_with(
        &c,
        "m",
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY)",
            "INSERT INTO t VALUES (1)",
        ],
    )
    .await?;
    let (status, _) = c
        .request(Method::GET, "/metrics", None)
        .await
        .step("metrics")?;
    ensure_eq!(status, StatusCode::OK);
    let text = metrics_text(&s.rest).await?;
    for needle in [
        "strata_http_requests_total{route=\"/db/{name}/execute\",database=\"m\",status=\"200\"} 2",
        "strata_commits_total{database=\"m\"}",
        "strata_conflicts_total{database=\"m\"} 0",
        "strata_queue_depth{database=\"m\"} 0",
        "strata_queue_dead_letters{database=\"m\"} 0",
        "strata_http_request_duration_seconds_bucket",
        "strata_http_open_transactions 0",
    ] {
        ensure!(text.contains(needle), "/metrics has {needle}:\n{text}");
    }
    // Two writes were made durable, which takes time: the summed times are positive.
    for name in [
        "strata_commit_resolve_seconds_total",
        "strata_commit_append_seconds_total",
    ] {
        let prefix = format!("{name}{{database=\"m\"}} ");
        let seconds = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok());
        ensure!(
            seconds.is_some_and(|s| s > 0.0),
            "/metrics has {name} above zero for m:\n{text}"
        );
    }

    // The queue view, empty here (the console suite fills one).
    let q = c.queue("m", 5).await.step("queue")?;
    ensure_eq!((q.depth, q.dead_letter_count), (0, 0));
    ensure!(
        q.messages.is_empty() && q.dead_letters.is_empty(),
        "no messages"
    );
    for limit in ["0", "1001"] {
        let (status, body) =
            raw(&c, Method::GET, &format!("/db/m/queue?limit={limit}"), None).await?;
        ensure_eq!(status, 400, "limit {limit}: {body}");
    }

    // Every answer names its request, each with its own id.
    let (first, _) = get_text(&s.rest, "/health").await?;
    let (second, _) = get_text(&s.rest, "/db").await?;
    let id = |h: &hyper::HeaderMap| {
        h.get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    ensure!(
        id(&first).is_some() && id(&second).is_some() && id(&first) != id(&second),
        "x-request-id: {:?} then {:?}",
        id(&first),
        id(&second)
    );
    // The console's page is served, with a policy that keeps it to this server.
    let (headers, page) = get_text(&s.rest, "/ui").await?;
    ensure!(page.contains("/ui/console.js"), "the console page");
    ensure!(
        headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.contains("default-src 'self'")),
        "the console's policy: {headers:?}"
    );

    let (status, doc) = raw(&c, Method::GET, "/openapi.json", None).await?;
    ensure_eq!(status, 200);
    ensure!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/db",
        "/db/{name}",
        "/db/{name}/execute",
        "/db/{name}/query/oltp",
        "/query",
        "/db/{name}/tables",
        "/db/{name}/schema/{table}",
        "/health",
        "/db/{name}/tx",
        "/tx/{id}/commit",
        "/db/{name}/kv/{key}",
        "/db/{name}/queue",
        "/db/{name}/queue/dead-letters",
    ] {
        ensure!(doc["paths"].get(path).is_some(), "the document has {path}");
    }
    Ok(())
}

/// The metrics text, fetched raw (it is not JSON).
async fn metrics_text(base: &str) -> Result<String, String> {
    Ok(get_text(base, "/metrics").await?.1)
}

/// A GET with the token: the answer's headers and its body as text.
async fn get_text(base: &str, path: &str) -> Result<(hyper::HeaderMap, String), String> {
    use http_body_util::{BodyExt, Full};
    let http: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = hyper::Request::get(format!("{base}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(bytes::Bytes::new()))
        .step("request")?;
    let res = http.request(req).await.step(path)?;
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.step("body")?.to_bytes();
    Ok((headers, String::from_utf8(body.to_vec()).step("utf-8")?))
}

async fn concurrent_inserts_all_succeed(h: &Harness) -> CaseResult {
    let (_s, c) = server(h).await?;
    database_with(
        &c,
        "ins",
        &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"],
    )
    .await?;
    let clients = 32;
    let each = if h.kind == BackendKind::Dynamodb {
        2
    } else {
        10
    };
    let mut tasks = Vec::new();
    for w in 0..clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let id = w * 1000 + i;
                c.execute("ins", "INSERT INTO t VALUES ($1, 'x')", &[json!(id)])
                    .await
                    .map_err(|e| format!("insert {id}: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.step("task")??;
    }
    let rows = c
        .query_oltp("ins", "SELECT count(*) FROM t", &[])
        .await
        .step("count")?;
    ensure_eq!(rows.rows, vec![vec![json!(clients * each)]]);
    Ok(())
}

/// schemathesis (PyPI, pinned by the test command) generates requests for every operation of
/// `/openapi.json`, valid and invalid, with a fixed seed: no answer may be a 5xx, and every
/// answer must be declared by the document and match its schema.
async fn schemathesis_finds_nothing(h: &Harness) -> CaseResult {
    if h.kind == BackendKind::Dynamodb {
        return Err("SKIP: schemathesis checks the HTTP layer, which is the same on every backend; the embedded backends run it".into());
    }
    let program = match std::env::var_os("STRATA_SCHEMATHESIS") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from("schemathesis"),
    };
    let (s, c) = server(h).await?;
    // Something for the generated requests to find.
    database_with(&c, "0", &["CREATE TABLE t (id INTEGER PRIMARY KEY)"]).await?;
    let run = || {
        tokio::process::Command::new(&program)
            // Its cache of earlier findings stays in the case's directory: every run starts
            // from the seed alone.
            .current_dir(h.dir())
            .args(["run", &format!("{}/openapi.json", s.rest)])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance,response_headers_conformance",
            ])
            .args(["--max-examples", "30", "--seed", "1", "--no-color"])
            .arg("--generation-deterministic")
            // Hypothesis's health checks judge the generator (how many examples the name
            // patterns filter out, how fast it runs on a busy machine), not the server.
            .args(["--suppress-health-check", "all"])
            .output()
    };
    // A failed check is a finding, at once. A run that ends in an error of the generator
    // itself (hypothesis has raised an internal IndexError in its optimiser) and no
    // failed check is run again, at most twice; an error the server causes repeats.
    let mut attempt = 0;
    let (out, text) = loop {
        attempt += 1;
        let out = match run().await {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return skip_or_fail(format!(
                    "{} is not installed (pip install schemathesis==4.32.5)",
                    program.display()
                ))
            }
            Err(e) => return Err(format!("run {}: {e}", program.display())),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let generator_error = !out.status.success()
            && !text.contains("Failures:")
            && text.contains("site-packages/hypothesis/internal");
        if generator_error && attempt < 3 {
            continue;
        }
        break (out, text);
    };
    ensure!(
        out.status.success(),
        "schemathesis found failures:\n{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains("18/18"),
        "every operation was selected:\n{text}"
    );
    // The server is still fine.
    c.health().await.step("health")?;
    Ok(())
}

/// The web console at `/ui`, in Debian's Chromium driven by playwright-core (npm, pinned in
/// `conformance/clients`): `clients/console/console.mjs` signs in, creates a database and a
/// table, inserts, queries, explains, browses rows, KV and a queue with a dead letter,
/// watches the metrics and drops a database. Its screenshots are kept in
/// `STRATA_ARTIFACTS` (default `target/artifacts/console-<backend>`).
async fn the_console_works_in_a_browser(h: &Harness) -> CaseResult {
    if h.kind == BackendKind::Dynamodb {
        return Err(
            "SKIP: the console is the same page over the same API on every backend; \
                    the embedded backends drive it in a browser"
                .into(),
        );
    }
    let dir = crate::suites::clients::clients_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return skip_or_fail(format!(
            "playwright-core is not installed in {} (run npm ci there)",
            dir.display()
        ));
    }
    let chromium = std::env::var_os("CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    if !chromium.is_file() {
        return skip_or_fail(format!(
            "{} is not installed (apt-get install chromium)",
            chromium.display()
        ));
    }
    let artifacts = match std::env::var_os("STRATA_ARTIFACTS") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"),
    }
    .join(format!("console-{}", h.kind.name()));
    let (s, _) = server(h).await?;
    let out = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("console/console.mjs")
        .env("STRATA_REST_URL", &s.rest)
        .env("STRATA_KV_URL", &s.url)
        .env("STRATA_TOKEN", TOKEN)
        .env("STRATA_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("run node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("console: all steps passed"),
        "the console failed in the browser:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        artifacts.join("console-table.png").is_file(),
        "the screenshot is kept"
    );
    Ok(())
}
