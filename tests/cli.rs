//! The `strata` command as a newcomer uses it: real processes over a real data directory.

use std::process::{Command, Output};

fn strata(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir)
        .env_remove("STRATA_STORE")
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
