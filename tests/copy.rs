//! `strata copy` between real stores: everything arrives — keys, values, versionstamps,
//! expiries, queued messages — and the copy is verified; non-empty targets are protected.
#![cfg(feature = "sqlite")]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{
    AtomicWrite, Engine, EngineConfig, Enqueue, Mutation, MutationKind, ReadAt, ReadRange, Value,
};

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn config() -> EngineConfig {
    EngineConfig {
        background_tasks: false,
        ..EngineConfig::default()
    }
}

#[test]
fn copies_between_stores_preserve_everything_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let expires = strata_engine::now_ms() + 3_600_000;
    let (source_entries, given_up_at) = rt.block_on(async {
        let engine = Engine::new(Arc::new(strata::redb::RedbBackend::new(&src)), config());
        for name in ["app", "team/logs"] {
            let db = engine.open_or_create(name).await.unwrap();
            for chunk in 0..3u32 {
                let mut w = AtomicWrite::new();
                for i in 0..400u32 {
                    w = w.set(
                        format!("k/{:05}", chunk * 400 + i).into_bytes(),
                        Value::bytes(vec![chunk as u8; 50]),
                    );
                }
                db.atomic_write(w).await.unwrap();
            }
            db.atomic_write(AtomicWrite::new().mutate(Mutation {
                key: b"ttl".to_vec(),
                kind: MutationKind::Set {
                    value: Value::u64(9),
                    expires_at: Some(expires),
                },
            }))
            .await
            .unwrap();
            db.atomic_write(
                AtomicWrite::new()
                    .mutate(Mutation::sum(b"n".to_vec(), 5))
                    .enqueue(Enqueue::now(Value::v8(vec![1, 2]))),
            )
            .await
            .unwrap();
        }
        // A message the queue gives up on at once: it becomes a dead letter, kept for an
        // operator to look at; the copy carries it too.
        let jobs = engine.open_or_create("jobs").await.unwrap();
        jobs.atomic_write(AtomicWrite::new().enqueue(Enqueue {
            dead_letter_keys: vec![b"failed".to_vec()],
            backoff_schedule: Some(vec![]),
            ..Enqueue::now(Value::bytes(b"poison".to_vec()))
        }))
        .await
        .unwrap();
        let leased = jobs.lease(10, Duration::from_secs(5)).await.unwrap();
        jobs.nack(leased[0].id, leased[0].lease).await.unwrap();
        assert_eq!(jobs.dead_letter_count().await.unwrap(), 1);
        let given_up_at = jobs.dead_letters(1).await.unwrap()[0].ready_at;
        let db = engine.database("app").await.unwrap();
        let all = db
            .snapshot_read(&[ReadRange::new(vec![], vec![], 1000)], ReadAt::Latest)
            .await
            .unwrap();
        let first = all.ranges[0].clone();
        engine.close().await;
        (first, given_up_at)
    });

    let src_url = format!("redb:{}", src.display());
    let dst_url = format!("sqlite:{}", dst.display());
    let out = strata(&["copy", &src_url, &dst_url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("copied app: 1202 entries, 1 queued messages; verified"),
        "{log}"
    );
    assert!(
        log.contains("copied jobs: 1 entries, 0 queued messages, 1 dead letters; verified"),
        "{log}"
    );
    assert!(log.contains("copied team/logs"), "{log}");
    assert!(log.contains("ETA"), "progress is shown: {log}");

    rt.block_on(async {
        let engine = Engine::new(Arc::new(strata::sqlite::SqliteBackend::new(&dst)), config());
        assert_eq!(
            engine.list_databases().await.unwrap(),
            vec![
                "app".to_string(),
                "jobs".to_string(),
                "team/logs".to_string()
            ]
        );
        let db = engine.database("app").await.unwrap();
        let all = db
            .snapshot_read(&[ReadRange::new(vec![], vec![], 1000)], ReadAt::Latest)
            .await
            .unwrap();
        assert_eq!(
            all.ranges[0], source_entries,
            "keys, values, versionstamps and expiries"
        );
        assert_eq!(
            db.get(b"ttl").await.unwrap().unwrap().expires_at,
            Some(expires)
        );
        let jobs = engine.database("jobs").await.unwrap();
        let dead = jobs.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1, "the dead letter came along");
        assert_eq!(dead[0].payload, Value::bytes(b"poison".to_vec()));
        assert_eq!(dead[0].dead_letter_keys, vec![b"failed".to_vec()]);
        assert_eq!(dead[0].ready_at, given_up_at, "given up on when it was");
        assert_eq!(
            jobs.queue_len().await.unwrap(),
            0,
            "and stays a dead letter"
        );
        let leased = db.lease(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].payload, Value::v8(vec![1, 2]));
        let next = db
            .atomic_write(AtomicWrite::new().set(b"new".to_vec(), Value::u64(1)))
            .await
            .unwrap();
        let newest_source = source_entries.iter().map(|e| e.versionstamp).max().unwrap();
        assert!(
            next.versionstamp().unwrap() > newest_source,
            "new commits follow the copied versionstamps"
        );
        engine.close().await;
    });

    let again = strata(&["copy", &src_url, &dst_url, "--database", "app"]);
    assert!(!again.status.success(), "a non-empty target is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let forced = strata(&[
        "copy",
        &src_url,
        &dst_url,
        "--database",
        "app",
        "--overwrite",
    ]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let same = strata(&["copy", &src_url, &src_url]);
    assert!(!same.status.success());
    let missing = strata(&["copy", &src_url, &dst_url, "--database", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}
