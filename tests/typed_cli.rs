//! `strata typed trees | show | edit | schema`: a store written by an application's types,
//! looked into and changed by the command, which has none of them.

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

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Shelf(u16),
    Bin { row: u8, col: u8 },
}

#[record(tree = "stock", version = 3)]
#[derive(Debug, Clone, PartialEq)]
struct Stock {
    part: String,
    count: u32,
    place: Option<Place>,
}

fn engine_at(dir: &std::path::Path) -> Engine {
    Engine::new(
        Arc::new(strata_backend_redb::RedbBackend::new(
            dir.join("strata-data"),
        )),
        EngineConfig::default(),
    )
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
    assert_eq!(cols[5], "v2", "schemas stored: {line}");
    assert!(line.ends_with("v2: 2"), "records per version: {line}");

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
    assert_eq!(rec["value"], serde_json::json!({"title": "frame"}));

    let (ok, _, err) = strata(dir.path(), &["typed", "show", "nothing"]);
    assert!(!ok);
    assert!(err.contains("no records of tree \"nothing\""), "{err}");
}

#[test]
fn a_record_is_edited_without_its_type_from_a_value_a_file_or_an_editor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = rt.block_on(async {
        let engine = engine_at(dir.path());
        let db = engine.open_or_create("typed").await.unwrap();
        let key = Tree::<Stock>::open(db)
            .insert(&Stock {
                part: "bolt".into(),
                count: 10,
                place: Some(Place::Shelf(4)),
            })
            .await
            .unwrap();
        engine.close().await;
        key
    });
    let id = key.id().to_string();
    let (ok, out, err) = strata(dir.path(), &["typed", "show", "stock", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains(r#""value":{"part":"bolt","count":10,"place":{"Shelf":4}}"#),
        "{out}"
    );

    // From --value.
    let v = r#"{"part": "bolt", "count": 12, "place": {"Bin": {"row": 2, "col": 7}}}"#;
    let (ok, out, err) = strata(dir.path(), &["typed", "edit", "stock", &id, "--value", v]);
    assert!(ok, "{err}");
    assert!(out.contains("written at schema version 3"), "{out}");

    // A value that does not fit is refused, saying where.
    let bad = r#"{"part": "bolt", "count": -1, "place": null}"#;
    let (ok, _, err) = strata(dir.path(), &["typed", "edit", "stock", &id, "--value", bad]);
    assert!(!ok);
    assert!(
        err.contains("at .count: expected an integer from 0 to 4294967295"),
        "{err}"
    );

    // From an editor: a script that changes the file it is given.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/\"count\": 12/\"count\": 13/' \"$1\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir.path())
        .env_remove("STRATA_STORE")
        .env_remove("VISUAL")
        .env("EDITOR", format!("sh {}", editor.display()))
        .args(["typed", "edit", "stock", &format!("{id}@0")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The application reads what the command wrote.
    let got = rt.block_on(async {
        let engine = engine_at(dir.path());
        let db = engine.open_or_create("typed").await.unwrap();
        let got = Tree::<Stock>::open(db).get(key).await.unwrap();
        engine.close().await;
        got
    });
    assert_eq!(
        got,
        Some(Stock {
            part: "bolt".into(),
            count: 13,
            place: Some(Place::Bin { row: 2, col: 7 }),
        })
    );

    let (ok, out, err) = strata(dir.path(), &["typed", "schema", "stock"]);
    assert!(ok, "{err}");
    let schema: strata_typed::Schema = serde_json::from_str(&out).unwrap();
    assert_eq!(schema, strata_typed::Schema::of::<Stock>());
}

mod g1 {
    #[strata_typed::record(tree = "gauges", version = 1)]
    #[derive(Debug, Clone)]
    pub struct Gauge {
        pub name: String,
    }
}

#[record(tree = "gauges", version = 2, previous = g1::Gauge, upgrade)]
#[derive(Debug, Clone, PartialEq)]
struct Gauge {
    name: String,
    #[upgrade(default)]
    max: u32,
}

#[test]
fn a_tree_is_migrated_through_its_declared_upgrades_by_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = engine_at(dir.path());
        let db = engine.open_or_create("typed").await.unwrap();
        let old = Tree::<g1::Gauge>::open(db.clone());
        for i in 0..5 {
            old.insert(&g1::Gauge {
                name: format!("g{i}"),
            })
            .await
            .unwrap();
        }
        // The application at version 2 has run, and written nothing yet.
        Tree::<Gauge>::open(db).store_schema().await.unwrap();
        engine.close().await;
    });
    let (ok, out, err) = strata(dir.path(), &["typed", "migrate", "gauges"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("5 records rewritten at schema version 2, 0 already at it"),
        "{out}"
    );
    assert!(err.contains("migrating gauges ["), "progress: {err}");
    let (ok, out, err) = strata(dir.path(), &["typed", "show", "gauges"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 5);
    for line in out.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(rec["schema_version"], 2, "{line}");
        assert_eq!(rec["value"]["max"], 0, "{line}");
    }
}
