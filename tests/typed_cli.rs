//! `strata typed trees | show`: a store written by an application's types, looked into by
//! the command, which has none of them.

#![cfg(feature = "typed")]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{Engine, EngineConfig};
use strata_typed::{record, Tree, Wait};

#[record(tree = "drawings", version = 2, versioned)]
#[derive(Debug, Clone)]
struct Drawing {
    title: String,
}

fn strata(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir)
        .env_remove("STRATA_STORE")
        .args(args)
        .output()
        .expect("run strata");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn trees_and_records_are_shown_without_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(async {
        let engine = Engine::new(
            Arc::new(strata_backend_redb::RedbBackend::new(
                dir.path().join("strata-data"),
            )),
            EngineConfig::default(),
        );
        let db = engine.open_or_create("typed").await.unwrap();
        let tree = Tree::<Drawing>::open(db).as_user("ann");
        let a = tree
            .insert(&Drawing {
                title: "frame".into(),
            })
            .await
            .unwrap();
        tree.insert(&Drawing {
            title: "hinge".into(),
        })
        .await
        .unwrap();
        tree.check_out(a.id(), Duration::from_secs(3600), Wait::No)
            .await
            .unwrap();
        tree.release(a).await.unwrap();
        engine.close().await;
        a
    });
    let (ok, out, err) = strata(dir.path(), &["typed", "trees"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("drawings")).expect(&out);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["2", "1", "1"],
        "records, released, checked out: {line}"
    );
    assert!(line.ends_with("v2: 2"), "{line}");

    let (ok, out, err) = strata(
        dir.path(),
        &["typed", "show", "drawings", &first.id().to_string()],
    );
    assert!(ok, "{err}");
    let rec: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(rec["revision"], 1);
    assert_eq!(rec["schema_version"], 2);
    assert_eq!(rec["released"], true);
    assert_eq!(rec["checked_out_by"], "ann");

    let (ok, _, err) = strata(dir.path(), &["typed", "show", "nothing"]);
    assert!(!ok);
    assert!(err.contains("no records of tree \"nothing\""), "{err}");
}
