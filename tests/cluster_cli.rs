//! A three-node cluster of real `strata serve --cluster` processes on redb stores: formed
//! with `strata cluster init`, written and read through different nodes' REST APIs, its
//! leader SIGKILLed mid-life and restarted, and inspected with `strata cluster status`.
#![cfg(all(feature = "replication", feature = "rest", unix))]

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};

const SECRET: &str = "a-cluster-secret-for-tests";

struct Proc {
    child: Child,
    rest: String,
    raft: String,
    kv: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_STORE")
        .env_remove("STRATA_RUN_DIR")
        .env_remove("STRATA_ACCESS_TOKEN")
        .env("STRATA_CLUSTER_SECRET", SECRET)
        .args(args)
        .output()
        .expect("run strata")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Start node `id` over `dir`, on `raft` (`127.0.0.1:0` the first time, its own address on
/// restart); wait until every listener is up.
fn start(dir: &std::path::Path, id: u64, raft: &str) -> Proc {
    let store = format!("redb:{}", dir.join("data").display());
    let id = id.to_string();
    spawn(
        dir,
        &[("STRATA_CLUSTER_SECRET", SECRET)],
        &serve_args(&store, &["--cluster", "--node-id", &id, "--raft", raft]),
    )
}

/// `strata --store STORE serve` with KV Connect and REST on free ports, then `extra`.
fn serve_args<'a>(store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--store",
        store,
        "serve",
        "--no-auth",
        "--kv-connect",
        "127.0.0.1:0",
        "--no-pgwire",
        "--rest",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args
}

/// Run `strata` with `args` and `envs` (its log in `dir`); wait until every listener is up.
fn spawn(dir: &std::path::Path, envs: &[(&str, &str)], args: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_ACCESS_TOKEN")
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .env_remove("STRATA_CLUSTER_SECRET")
        .envs(envs.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut rest, mut raft, mut kv) = (String::new(), String::new(), String::new());
    while raft.is_empty() {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!(
                "{args:?} exited: {}",
                std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
            );
        }
        let line = line.trim();
        if let Some(a) = line.strip_prefix("REST on ") {
            rest = a.to_string();
        } else if let Some(a) = line.strip_prefix("Raft on ") {
            raft = a.to_string();
        } else if let Some(a) = line.strip_prefix("Listening on ") {
            kv = a.to_string();
        }
    }
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    Proc {
        child,
        rest,
        raft,
        kv,
    }
}

/// KV Connect metadata of the default database, over a plain HTTP/1.1 request.
fn metadata(kv: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let addr = kv.trim_start_matches("http://");
    let body = r#"{"supportedVersions":[2,3]}"#;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let json = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(json).unwrap()
}

fn sql(node: &Proc, statement: &str) -> String {
    ok(strata(&[
        "sql",
        "--url",
        &node.rest,
        "--database",
        "bank",
        "-e",
        statement,
    ]))
}

#[test]
fn a_cluster_of_processes_serves_through_every_node_and_survives_a_killed_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| start(dirs[i].path(), i as u64 + 1, "127.0.0.1:0"))
        .collect();

    // Before init there is no cluster to write to, and a wrong secret is refused.
    let wrong = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_CLUSTER_SECRET", "not-the-cluster-secret")
        .args(["cluster", "status", "--via", &nodes[0].raft])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("secret"));

    let init = ok(strata(&[
        "cluster",
        "init",
        &nodes[0].raft,
        &nodes[1].raft,
        &nodes[2].raft,
    ]));
    assert!(init.contains("leader"), "{init}");

    // Written through one node, read (strongly) through the others.
    ok(strata(&["db", "--url", &nodes[1].rest, "create", "bank"]));
    sql(
        &nodes[1],
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)",
    );
    sql(&nodes[2], "INSERT INTO accounts VALUES (1, 100), (2, 50)");
    for n in &nodes {
        let out = sql(n, "SELECT sum(balance) FROM accounts");
        assert!(out.contains("150"), "{out}");
    }

    // KV Connect metadata lists every node as an eventual endpoint.
    let status = ok(strata(&[
        "cluster",
        "status",
        "--via",
        &nodes[2].raft,
        "--json",
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let leader = status["leader"].as_u64().expect("a leader") as usize - 1;
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    for n in status["nodes"].as_array().unwrap() {
        assert!(n["voter"].as_bool().unwrap());
        assert!(n["endpoints"]["kv-connect"]
            .as_str()
            .unwrap()
            .starts_with("http://"));
    }
    let meta = metadata(&nodes[0].kv);
    let eventual: Vec<&str> = meta["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["consistency"] == "eventual")
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(eventual.len(), 3, "{meta}");
    assert!(
        eventual.iter().any(|u| u.starts_with(nodes[2].kv.as_str())),
        "{meta}"
    );

    // SIGKILL the leader: the others elect a new one and keep serving writes.
    let killed_raft = nodes[leader].raft.clone();
    nodes[leader].child.kill().unwrap();
    nodes[leader].child.wait().unwrap();
    let other = (leader + 1) % 3;
    sql(
        &nodes[other],
        "UPDATE accounts SET balance = balance - 10 WHERE id = 1",
    );
    sql(
        &nodes[other],
        "UPDATE accounts SET balance = balance + 10 WHERE id = 2",
    );
    let out = sql(
        &nodes[(leader + 2) % 3],
        "SELECT balance FROM accounts ORDER BY id",
    );
    assert!(out.contains("90") && out.contains("60"), "{out}");

    // Restarted on its own address, it recovers its log and catches up.
    nodes[leader] = start(dirs[leader].path(), leader as u64 + 1, &killed_raft);
    let out = sql(&nodes[leader], "SELECT balance FROM accounts ORDER BY id");
    assert!(out.contains("90") && out.contains("60"), "{out}");
    let out = sql(&nodes[leader], "SELECT sum(balance) FROM accounts");
    assert!(out.contains("150"), "{out}");

    let text = ok(strata(&["cluster", "status", "--via", &nodes[leader].raft]));
    assert!(text.contains("term"), "{text}");
}

#[test]
fn cluster_settings_that_cannot_work_are_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("redb:{}", dir.path().join("data").display());
    let serve = |extra: &[&str]| {
        let mut args = vec!["--store", &store, "serve", "--no-auth", "--cluster"];
        args.extend_from_slice(extra);
        let o = strata(&args);
        assert!(!o.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(serve(&["--raft", "127.0.0.1:0"]).contains("--node-id"));
    // Cluster settings without --cluster (or a [cluster] section) are a mistake, not ignored.
    let o = strata(&["--store", &store, "serve", "--no-auth", "--node-id", "1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("add --cluster"));
    assert!(serve(&["--node-id", "0"]).contains("at least 1"));
    assert!(serve(&["--node-id", "1", "--cluster-secret", "short"]).contains("16 characters"));
    assert!(serve(&["--node-id", "1", "--raft-peer-via", "two=127.0.0.1:1"]).contains("ID=ADDR"));
    assert!(serve(&["--node-id", "1", "--raft-groups-in-flight", "0"]).contains("1..=64"));
    assert!(serve(&["--node-id", "1", "--raft-groups-in-flight", "65"]).contains("1..=64"));
    assert!(serve(&["--node-id", "1", "--raft-group-linger", "1001"]).contains("0..=1000"));
    // The same limits for db.toml, which clap does not check.
    let config = dir.path().join("db.toml");
    let serve_file = |cluster: &str| {
        std::fs::write(&config, format!("[cluster]\nnode_id = 1\n{cluster}\n")).unwrap();
        let o = strata(&[
            "--store",
            &store,
            "serve",
            "--no-auth",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{cluster} was accepted");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(serve_file("groups_in_flight = 0").contains("from 1 to 64"));
    assert!(serve_file("group_linger_ms = 5000").contains("from 0 to 1000 ms"));
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_CLUSTER_SECRET")
        .args(["cluster", "status", "--via", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("shared secret"));
}

/// Three nodes, each given only a db.toml with a `[cluster]` section naming its peers: they
/// form the cluster themselves (no `strata cluster init`), with the cluster id and the
/// secret (from the variable `secret_env` names) the file gives.
#[test]
fn nodes_configured_in_db_toml_with_their_peers_form_the_cluster_themselves() {
    const FILE_SECRET: &str = "the-secret-from-a-db-toml";
    // Three free addresses, known before any node starts, as a deployment's would be.
    let addrs: Vec<String> = {
        let held: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        held.iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Proc> = (0..3)
        .map(|i| {
            // Every node gets the same list, itself included, as one shared file would.
            let peers: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            let config = dirs[i].path().join("db.toml");
            std::fs::write(
                &config,
                format!(
                    "[cluster]\nnode_id = {}\nraft = \"{}\"\npeers = [{}]\n\
                     cluster_id = \"from-file\"\nsecret_env = \"TEST_CLUSTER_SECRET\"\n",
                    i + 1,
                    addrs[i],
                    peers.join(", ")
                ),
            )
            .unwrap();
            let store = format!("redb:{}", dirs[i].path().join("data").display());
            let config = config.to_str().unwrap().to_string();
            spawn(
                dirs[i].path(),
                &[("TEST_CLUSTER_SECRET", FILE_SECRET)],
                &serve_args(&store, &["--config", &config]),
            )
        })
        .collect();
    assert_eq!(nodes[0].raft, addrs[0]);

    // Poll the status until the nodes have formed the cluster and elected a leader.
    let status = |via: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_strata"))
            .env("STRATA_CLUSTER_SECRET", FILE_SECRET)
            .args([
                "cluster",
                "status",
                "--cluster-id",
                "from-file",
                "--json",
                "--via",
                via,
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).ok()
    };
    let mut formed = None;
    for _ in 0..300 {
        if let Some(s) = status(&nodes[2].raft) {
            if s["leader"].is_u64() && s["nodes"].as_array().map_or(0, Vec::len) == 3 {
                formed = Some(s);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let formed = formed.unwrap_or_else(|| {
        let logs: Vec<String> = dirs
            .iter()
            .map(|d| std::fs::read_to_string(d.path().join("node.log")).unwrap_or_default())
            .collect();
        panic!(
            "the nodes did not form a cluster:\n{}",
            logs.join("\n---\n")
        )
    });
    for n in formed["nodes"].as_array().unwrap() {
        assert!(n["voter"].as_bool().unwrap(), "{formed}");
    }

    // It serves: written through one node, read through another.
    ok(strata(&["db", "--url", &nodes[0].rest, "create", "bank"]));
    sql(&nodes[1], "CREATE TABLE t (id INT PRIMARY KEY)");
    sql(&nodes[2], "INSERT INTO t VALUES (20), (22)");
    let out = sql(&nodes[0], "SELECT sum(id) FROM t");
    assert!(out.contains("42"), "{out}");

    // The file's cluster id is the cluster's: another id is refused.
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_CLUSTER_SECRET", FILE_SECRET)
        .args(["cluster", "status", "--via", &nodes[0].raft])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the default cluster id was accepted");
}
