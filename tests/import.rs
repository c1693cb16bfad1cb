//! `strata import denokv` on a file written by the real reference server
//! (`tests/fixtures/denokv-0.14.0.sqlite`, made by `scripts/make-denokv-fixture`): every key,
//! value, encoding, versionstamp, expiry and queued message arrives unchanged.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{Encoding, Engine, EngineConfig, ReadAt, Versionstamp};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/denokv-0.14.0.sqlite")
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An engine over the redb store the import wrote, without background work.
fn engine_at(store: &Path) -> Engine {
    let backend = Arc::new(strata::redb::RedbBackend::new(store));
    Engine::new(
        backend,
        EngineConfig {
            background_tasks: false,
            ..EngineConfig::default()
        },
    )
}

/// `strata --store <store> import denokv <file>`.
fn import(store: &str, file: &Path) -> std::process::Output {
    strata(&["--store", store, "import", "denokv", file.to_str().unwrap()])
}

/// Every queued message of `db`, as a copy would carry it.
async fn queued(db: &strata_engine::Database) -> Vec<strata_engine::RestoreMessage> {
    db.snapshot().await.unwrap().messages().await.unwrap()
}

struct Row {
    key: Vec<u8>,
    value: Vec<u8>,
    encoding: i64,
    versionstamp: Versionstamp,
    expiration: i64,
}

/// A queued message: payload, backoff schedule, dead-letter keys (as the source stores them),
/// and when it becomes ready (ms since the epoch).
type QueueRow = (Vec<u8>, String, String, u64);

/// The fixture as the reference server left it, read independently of the importer.
fn rows() -> (Vec<Row>, Vec<QueueRow>, u64) {
    let c = rusqlite::Connection::open_with_flags(
        fixture(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = c
        .prepare("SELECT k, v, v_encoding, version, seq, expiration_ms FROM kv")
        .unwrap();
    let kv = st
        .query_map([], |r| {
            let version: i64 = r.get(3)?;
            let seq: i64 = r.get(4)?;
            let mut vs = [0u8; 10];
            vs[..8].copy_from_slice(&(version as u64).to_be_bytes());
            vs[8..].copy_from_slice(&(seq as u16).to_be_bytes());
            Ok(Row {
                key: r.get(0)?,
                value: r.get(1)?,
                encoding: r.get(2)?,
                versionstamp: Versionstamp(vs),
                expiration: r.get(5)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut st = c
        .prepare("SELECT data, backoff_schedule, CAST(keys_if_undelivered AS TEXT), ts FROM queue")
        .unwrap();
    let queue = st
        .query_map([], |r| {
            let ts: i64 = r.get(3)?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, ts as u64))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let version: i64 = c
        .query_row("SELECT MAX(version) FROM data_version", [], |r| r.get(0))
        .unwrap();
    (kv, queue, version as u64)
}

#[test]
fn a_denokv_database_imports_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("redb:{}", dir.path().display());
    let fixture = fixture();
    let import = [
        "--store",
        &store,
        "import",
        "denokv",
        fixture.to_str().unwrap(),
    ];
    let out = strata(&import);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (kv, queue, source_version) = rows();
    assert!(
        kv.len() > 600 && queue.len() == 3,
        "fixture: {} keys, {} messages",
        kv.len(),
        queue.len()
    );

    runtime().block_on(async {
        let engine = engine_at(dir.path());
        let db = engine.database("default").await.unwrap();
        let now = strata_engine::now_ms() as i64;
        let mut live = 0;
        for row in &kv {
            let got = db.get(&row.key).await.unwrap();
            if row.expiration > 0 && row.expiration <= now {
                assert!(got.is_none(), "an expired key stays invisible");
                continue;
            }
            live += 1;
            let e = got.unwrap_or_else(|| panic!("key {:?} missing", row.key));
            assert_eq!(e.value.data, row.value, "value of {:?}", row.key);
            let enc = match e.value.encoding {
                Encoding::V8 => 1,
                Encoding::U64 => 2,
                Encoding::Bytes => 3,
                Encoding::Custom(t) => t as i64,
            };
            assert_eq!(enc, row.encoding, "encoding of {:?}", row.key);
            assert_eq!(
                e.versionstamp, row.versionstamp,
                "versionstamp of {:?}",
                row.key
            );
            assert_eq!(
                e.expires_at,
                (row.expiration > 0).then_some(row.expiration as u64)
            );
        }
        assert!(live >= 600);
        let all = db
            .snapshot_read(
                &[strata_engine::ReadRange::new(vec![], vec![], 1000)],
                ReadAt::Latest,
            )
            .await
            .unwrap();
        assert_eq!(all.ranges[0].len(), live, "no extra keys");

        assert_eq!(db.queue_len().await.unwrap(), queue.len());
        // Every message keeps the deadline the source gave it.
        let mut imported: Vec<(Vec<u8>, u64)> = queued(&db)
            .await
            .into_iter()
            .map(|m| (m.payload.data, m.ready_at))
            .collect();
        let mut source: Vec<(Vec<u8>, u64)> =
            queue.iter().map(|(d, _, _, t)| (d.clone(), *t)).collect();
        imported.sort();
        source.sort();
        assert_eq!(imported, source, "payloads and ready times");
        // Which of them are ready depends on when this runs: exactly those whose deadline has
        // passed by the time of the lease.
        let before = strata_engine::now_ms();
        let ready = db.lease(10, Duration::from_secs(60)).await.unwrap();
        let after = strata_engine::now_ms();
        let due_by = |t: u64| queue.iter().filter(|(_, _, _, ts)| *ts <= t).count();
        assert!(
            (due_by(before)..=due_by(after)).contains(&ready.len()),
            "{} messages leased; {} were due before the lease, {} after",
            ready.len(),
            due_by(before),
            due_by(after)
        );
        for m in &ready {
            let (data, _, _, ts) = queue
                .iter()
                .find(|(d, _, _, _)| *d == m.payload.data)
                .expect("payload from the source");
            assert_eq!(&m.payload.data, data);
            assert!(*ts <= after, "a message leased before its deadline");
            assert_eq!(m.payload.encoding, Encoding::V8);
        }
        let with_dlq = queue.iter().find(|(_, _, dead, _)| dead != "[]").unwrap();
        assert!(
            with_dlq.2.starts_with("[["),
            "dead-letter keys are byte arrays: {}",
            with_dlq.2
        );

        let next = db
            .atomic_write(
                strata_engine::AtomicWrite::new()
                    .set(b"after".to_vec(), strata_engine::Value::u64(1)),
            )
            .await
            .unwrap();
        assert!(
            next.versionstamp().unwrap().version() > source_version,
            "new versionstamps follow the source's"
        );
        engine.close().await;
    });

    let again = strata(&import);
    assert!(
        !again.status.success(),
        "importing over an existing database is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn files_that_are_not_denokv_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"this is not a database").unwrap();
    let store = format!("redb:{}", dir.path().join("s").display());
    let out = strata(&[
        "--store",
        &store,
        "import",
        "denokv",
        junk.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = strata(&[
        "--store",
        &store,
        "import",
        "denokv",
        "/nonexistent/kv.sqlite",
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

/// The ready/delayed split with deadlines computed when the test runs: the reference server's
/// file, with its messages rescheduled to one that came due a second ago and two that come
/// due in a day, imports with exactly one message ready.
#[test]
fn imported_messages_become_ready_at_their_source_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kv.sqlite");
    std::fs::copy(fixture(), &copy).unwrap();
    let now = strata_engine::now_ms();
    let day = 24 * 3600 * 1000;
    {
        let c = rusqlite::Connection::open(&copy).unwrap();
        let ids: Vec<String> = c
            .prepare("SELECT id FROM queue ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            let ts = if i == 0 { now - 1000 } else { now + day };
            c.execute(
                "UPDATE queue SET ts = ?1 WHERE id = ?2",
                rusqlite::params![ts as i64, id],
            )
            .unwrap();
        }
    }
    let store = format!("redb:{}", dir.path().join("store").display());
    let out = import(&store, &copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runtime().block_on(async {
        let engine = engine_at(&dir.path().join("store"));
        let db = engine.database("default").await.unwrap();
        assert_eq!(db.queue_len().await.unwrap(), 3);
        let ready = db.lease(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(ready.len(), 1, "one message came due, two wait a day");
        let waiting: Vec<u64> = queued(&db)
            .await
            .into_iter()
            .filter(|m| m.attempts == 0)
            .map(|m| m.ready_at)
            .collect();
        assert_eq!(
            waiting,
            vec![now + day; 2],
            "the delayed ones keep their deadline"
        );
        engine.close().await;
    });
}

/// A file with a version no server hands out (negative, as a damaged file may hold) is
/// refused with a message naming the key, and nothing is written.
#[test]
fn a_file_with_malformed_versions_is_refused_whole() {
    for (column_update, expect) in [
        (
            "UPDATE kv SET version = -1 WHERE k = (SELECT MIN(k) FROM kv)",
            "version -1",
        ),
        (
            "UPDATE kv SET seq = 70000 WHERE k = (SELECT MAX(k) FROM kv)",
            "sequence 70000",
        ),
        ("UPDATE data_version SET version = -5", "data_version -5"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("kv.sqlite");
        std::fs::copy(fixture(), &copy).unwrap();
        rusqlite::Connection::open(&copy)
            .unwrap()
            .execute(column_update, [])
            .unwrap();
        let store = format!("redb:{}", dir.path().join("store").display());
        let out = import(&store, &copy);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{column_update}: import succeeded");
        assert!(stderr.contains(expect), "{column_update}: {stderr}");
        let list = strata(&["--store", &store, "db", "list"]);
        let listed = String::from_utf8_lossy(&list.stdout);
        assert!(
            !listed.contains("default"),
            "{column_update}: a database was created: {listed}"
        );
    }
}
