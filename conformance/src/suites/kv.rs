//! Point reads, ordered range reads, atomic writes: checks, set, delete, sum/min/max,
//! versionstamped keys.

use strata_engine::{
    AtomicWrite, CommitOutcome, Encoding, EngineError, Mutation, MutationKind, ReadAt, ReadRange,
    Value, Versionstamp, VersionstampSuffix,
};

use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "kv",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            set_get_delete,
            versionstamps_increase_and_are_shared_by_a_commit,
            scans_follow_byte_order,
            snapshot_read_takes_many_ranges,
            get_many_returns_each_key,
            sum_min_max_on_u64,
            sum_min_max_type_errors_write_nothing,
            checks_pass_and_fail_with_indexes,
            versionstamped_keys,
            malformed_u64_is_refused,
            unknown_database_is_an_error,
            long_keys_keep_their_order,
            a_commit_of_1000_mutations_is_all_or_nothing,
        ],
    }
}

pub(crate) fn committed(o: CommitOutcome) -> Result<Versionstamp, String> {
    match o {
        CommitOutcome::Committed(v) => Ok(v),
        CommitOutcome::CheckFailed(f) => Err(format!("unexpected check failure {f:?}")),
    }
}

async fn set_get_delete(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    ensure!(
        db.get(b"k").await.step("get")?.is_none(),
        "a new database is empty"
    );
    let vs = committed(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::bytes(b"v".to_vec())))
            .await
            .step("set")?,
    )?;
    let e = db
        .get(b"k")
        .await
        .step("get")?
        .ok_or("key missing after set")?;
    ensure_eq!(e.value, Value::bytes(b"v".to_vec()));
    ensure_eq!(e.versionstamp, vs);
    ensure_eq!(e.expires_at, None);
    let v8 = Value {
        encoding: Encoding::V8,
        data: vec![0xff, 0x0f, 0x22],
    };
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), v8.clone()))
        .await
        .step("overwrite")?;
    ensure_eq!(db.get(b"k").await.step("get")?.map(|e| e.value), Some(v8));
    db.atomic_write(AtomicWrite::new().delete(b"k".to_vec()))
        .await
        .step("delete")?;
    ensure!(
        db.get(b"k").await.step("get")?.is_none(),
        "deleted key still visible"
    );
    db.atomic_write(AtomicWrite::new().delete(b"never".to_vec()))
        .await
        .step("delete missing")?;
    Ok(())
}

async fn versionstamps_increase_and_are_shared_by_a_commit(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut last = Versionstamp::ZERO;
    for i in 0..20u8 {
        let w = AtomicWrite::new()
            .set(vec![b'a', i], Value::u64(i as u64))
            .set(vec![b'b', i], Value::u64(i as u64));
        let vs = committed(db.atomic_write(w).await.step("write")?)?;
        ensure!(vs > last, "versionstamp {vs} does not follow {last}");
        ensure!(vs.to_hex() > last.to_hex(), "hex form must order too");
        let a = db.get(&[b'a', i]).await.step("get")?.ok_or("missing")?;
        let b = db.get(&[b'b', i]).await.step("get")?.ok_or("missing")?;
        ensure_eq!(a.versionstamp, vs);
        ensure_eq!(b.versionstamp, vs);
        last = vs;
    }
    ensure_eq!(db.version(), last.version());
    Ok(())
}

async fn scans_follow_byte_order(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xff],
        vec![0x01],
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0xff],
        vec![0xff, 0xff, 0xff],
    ];
    let mut w = AtomicWrite::new();
    for k in keys.iter().rev() {
        w = w.set(k.clone(), Value::bytes(k.clone()));
    }
    db.atomic_write(w).await.step("write")?;
    let all = db
        .snapshot_read(&[ReadRange::new(vec![], vec![], 100)], ReadAt::Latest)
        .await
        .step("scan")?;
    let got: Vec<Vec<u8>> = all.ranges[0].iter().map(|e| e.key.clone()).collect();
    ensure_eq!(got, keys);
    let mut rev = ReadRange::new(vec![], vec![], 100);
    rev.reverse = true;
    let r = db
        .snapshot_read(&[rev], ReadAt::Latest)
        .await
        .step("reverse scan")?;
    let got: Vec<Vec<u8>> = r.ranges[0].iter().map(|e| e.key.clone()).collect();
    let mut expected = keys.clone();
    expected.reverse();
    ensure_eq!(got, expected);
    // Limits, bounds and prefixes.
    let r = db
        .snapshot_read(
            &[ReadRange::new(b"a".to_vec(), b"b".to_vec(), 2)],
            ReadAt::Latest,
        )
        .await
        .step("limit")?;
    let got: Vec<Vec<u8>> = r.ranges[0].iter().map(|e| e.key.clone()).collect();
    ensure_eq!(got, vec![b"a".to_vec(), b"a\x00".to_vec()]);
    let mut rl = ReadRange::new(b"a".to_vec(), b"b".to_vec(), 2);
    rl.reverse = true;
    let r = db
        .snapshot_read(&[rl], ReadAt::Latest)
        .await
        .step("reverse limit")?;
    let got: Vec<Vec<u8>> = r.ranges[0].iter().map(|e| e.key.clone()).collect();
    ensure_eq!(got, vec![b"ab".to_vec(), b"a\x00".to_vec()]);
    let r = db
        .snapshot_read(&[ReadRange::prefix(&[0xff], 10)], ReadAt::Latest)
        .await
        .step("prefix")?;
    ensure_eq!(r.ranges[0].len(), 2);
    let r = db
        .snapshot_read(
            &[ReadRange::new(b"b".to_vec(), b"a".to_vec(), 10)],
            ReadAt::Latest,
        )
        .await
        .step("empty")?;
    ensure!(r.ranges[0].is_empty(), "start after end is an empty range");
    Ok(())
}

async fn snapshot_read_takes_many_ranges(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut w = AtomicWrite::new();
    for i in 0..50u8 {
        w = w.set(vec![i], Value::u64(i as u64));
    }
    db.atomic_write(w).await.step("write")?;
    let ranges: Vec<ReadRange> = (0..10u8)
        .map(|i| ReadRange::new(vec![i * 5], vec![i * 5 + 5], 3))
        .collect();
    let r = db
        .snapshot_read(&ranges, ReadAt::Latest)
        .await
        .step("read")?;
    ensure_eq!(r.ranges.len(), 10);
    for (i, entries) in r.ranges.iter().enumerate() {
        let keys: Vec<u8> = entries.iter().map(|e| e.key[0]).collect();
        let base = i as u8 * 5;
        ensure_eq!(keys, vec![base, base + 1, base + 2]);
    }
    ensure_eq!(r.version, db.version());
    Ok(())
}

async fn get_many_returns_each_key(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(
        AtomicWrite::new()
            .set(b"a".to_vec(), Value::u64(1))
            .set(b"c".to_vec(), Value::u64(3)),
    )
    .await
    .step("write")?;
    let got = db
        .get_many(
            &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            ReadAt::Latest,
        )
        .await
        .step("get_many")?;
    let values: Vec<Option<u64>> = got
        .iter()
        .map(|e| e.as_ref().and_then(|e| e.value.as_u64()))
        .collect();
    ensure_eq!(values, vec![Some(1), None, Some(3)]);
    Ok(())
}

async fn sum_min_max_on_u64(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let op = |k: &[u8], kind: MutationKind| {
        AtomicWrite::new().mutate(Mutation {
            key: k.to_vec(),
            kind,
        })
    };
    db.atomic_write(op(b"s", MutationKind::Sum(Value::u64(5))))
        .await
        .step("sum on missing")?;
    ensure_eq!(u64_at(&db, b"s").await?, Some(5));
    db.atomic_write(op(b"s", MutationKind::Sum(Value::u64(u64::MAX))))
        .await
        .step("sum wraps")?;
    ensure_eq!(u64_at(&db, b"s").await?, Some(4));
    db.atomic_write(op(b"m", MutationKind::Min(Value::u64(10))))
        .await
        .step("min on missing")?;
    db.atomic_write(op(b"m", MutationKind::Min(Value::u64(u64::MAX))))
        .await
        .step("min")?;
    ensure_eq!(u64_at(&db, b"m").await?, Some(10));
    db.atomic_write(op(b"m", MutationKind::Min(Value::u64(3))))
        .await
        .step("min")?;
    ensure_eq!(u64_at(&db, b"m").await?, Some(3));
    db.atomic_write(op(b"x", MutationKind::Max(Value::u64(7))))
        .await
        .step("max on missing")?;
    db.atomic_write(op(b"x", MutationKind::Max(Value::u64(1u64 << 63))))
        .await
        .step("max unsigned")?;
    ensure_eq!(u64_at(&db, b"x").await?, Some(1u64 << 63));
    // A sum's result carries no expiry, even over an expiring value.
    let exp = strata_engine::now_ms() + 60_000;
    db.atomic_write(AtomicWrite::new().mutate(Mutation {
        key: b"e".to_vec(),
        kind: MutationKind::Set {
            value: Value::u64(1),
            expires_at: Some(exp),
        },
    }))
    .await
    .step("set expiring")?;
    db.atomic_write(op(b"e", MutationKind::Sum(Value::u64(1))))
        .await
        .step("sum")?;
    let e = db.get(b"e").await.step("get")?.ok_or("missing")?;
    ensure_eq!(e.value.as_u64(), Some(2));
    ensure_eq!(e.expires_at, None);
    Ok(())
}

async fn sum_min_max_type_errors_write_nothing(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"text".to_vec(), Value::bytes(b"hi".to_vec())))
        .await
        .step("set")?;
    let before = db.version();
    for (name, kind) in [
        ("sum", MutationKind::Sum(Value::u64(1))),
        ("min", MutationKind::Min(Value::u64(1))),
        ("max", MutationKind::Max(Value::u64(1))),
    ] {
        let w = AtomicWrite::new()
            .set(b"other".to_vec(), Value::u64(9))
            .mutate(Mutation {
                key: b"text".to_vec(),
                kind,
            });
        match db.atomic_write(w).await {
            Err(EngineError::InvalidMutation(m)) => ensure_eq!(
                m,
                format!("Failed to perform '{name}' mutation on a non-U64 value in the database")
            ),
            other => {
                return Err(format!(
                    "{name} on bytes: expected InvalidMutation, got {other:?}"
                ))
            }
        }
    }
    let w = AtomicWrite::new().mutate(Mutation {
        key: b"n".to_vec(),
        kind: MutationKind::Sum(Value::bytes(vec![1; 8])),
    });
    match db.atomic_write(w).await {
        Err(EngineError::InvalidMutation(m)) => {
            ensure_eq!(m, "Failed to perform 'sum' mutation on a non-U64 operand")
        }
        other => {
            return Err(format!(
                "bytes operand: expected InvalidMutation, got {other:?}"
            ))
        }
    }
    ensure!(
        db.get(b"other").await.step("get")?.is_none(),
        "a failed write must write nothing"
    );
    ensure_eq!(db.version(), before);
    Ok(())
}

async fn checks_pass_and_fail_with_indexes(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let vs = committed(
        db.atomic_write(AtomicWrite::new().set(b"a".to_vec(), Value::u64(1)))
            .await
            .step("set")?,
    )?;
    let ok = db
        .atomic_write(
            AtomicWrite::new()
                .check(b"a".to_vec(), Some(vs))
                .check(b"b".to_vec(), None)
                .set(b"b".to_vec(), Value::u64(2)),
        )
        .await
        .step("passing checks")?;
    let vs2 = committed(ok)?;
    let bad = db
        .atomic_write(
            AtomicWrite::new()
                .check(b"a".to_vec(), Some(vs))
                .check(b"a".to_vec(), Some(vs2))
                .check(b"b".to_vec(), None)
                .set(b"c".to_vec(), Value::u64(3)),
        )
        .await
        .step("failing checks")?;
    ensure_eq!(bad, CommitOutcome::CheckFailed(vec![1, 2]));
    ensure!(
        db.get(b"c").await.step("get")?.is_none(),
        "a failed check must write nothing"
    );
    let only_checks = db
        .atomic_write(AtomicWrite::new().check(b"zz".to_vec(), None))
        .await
        .step("check only")?;
    ensure!(
        only_checks.versionstamp().is_some(),
        "a check-only write commits"
    );
    Ok(())
}

async fn versionstamped_keys(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut keys = Vec::new();
    for suffix in [VersionstampSuffix::TupleHex, VersionstampSuffix::Raw] {
        let w = AtomicWrite::new().mutate(Mutation {
            key: b"log/".to_vec(),
            kind: MutationKind::SetVersionstampedKey {
                value: Value::u64(1),
                expires_at: None,
                suffix,
            },
        });
        let vs = committed(db.atomic_write(w).await.step("write")?)?;
        let mut key = b"log/".to_vec();
        match suffix {
            VersionstampSuffix::TupleHex => {
                key.push(0x02);
                key.extend_from_slice(vs.to_hex().as_bytes());
                key.push(0x00);
            }
            VersionstampSuffix::Raw => key.extend_from_slice(&vs.0),
        }
        let e = db
            .get(&key)
            .await
            .step("get")?
            .ok_or_else(|| format!("no entry at {key:?}"))?;
        ensure_eq!(e.versionstamp, vs);
        keys.push(key);
    }
    Ok(())
}

async fn malformed_u64_is_refused(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let bad = Value {
        encoding: Encoding::U64,
        data: vec![1, 2, 3],
    };
    let r = db
        .atomic_write(AtomicWrite::new().set(b"k".to_vec(), bad))
        .await;
    ensure!(
        matches!(r, Err(EngineError::InvalidRequest(_))),
        "got {r:?}"
    );
    ensure!(db.get(b"k").await.step("get")?.is_none(), "nothing written");
    Ok(())
}

async fn unknown_database_is_an_error(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let r = engine.database("nope").await;
    ensure!(
        matches!(r, Err(EngineError::DatabaseNotFound(_))),
        "got {r:?}"
    );
    let r = engine.database("../etc").await;
    ensure!(
        matches!(r, Err(EngineError::InvalidName { .. })),
        "got {r:?}"
    );
    Ok(())
}

async fn long_keys_keep_their_order(h: &Harness) -> CaseResult {
    // Keys up to the 2048-byte limit, many sharing their first 1024+ bytes.
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for len in [1000usize, 1023, 1024, 1025, 1500, 2048] {
        for fill in [0u8, 1, 0xff] {
            let mut k = vec![b'k'; len];
            k[len - 1] = fill;
            keys.push(k);
        }
    }
    keys.push([vec![b'k'; 1024], vec![0x00; 1024]].concat());
    keys.push([vec![b'k'; 1100], vec![b'a'; 900]].concat());
    keys.push(vec![b'j'; 2048]);
    keys.push(vec![b'l'; 3]);
    let mut w = AtomicWrite::new();
    for (i, k) in keys.iter().enumerate() {
        w = w.set(k.clone(), Value::u64(i as u64));
    }
    db.atomic_write(w).await.step("write")?;
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    let all = db
        .snapshot_read(&[ReadRange::new(vec![], vec![], 1000)], ReadAt::Latest)
        .await
        .step("scan")?;
    let got: Vec<Vec<u8>> = all.ranges[0].iter().map(|e| e.key.clone()).collect();
    ensure!(
        got == sorted,
        "long keys out of order ({} keys read, {} written)",
        got.len(),
        sorted.len()
    );
    let mut rev = ReadRange::new(vec![b'k'; 1024], vec![b'k'; 1025], 1000);
    rev.reverse = true;
    let r = db
        .snapshot_read(&[rev], ReadAt::Latest)
        .await
        .step("reverse scan")?;
    let expected: Vec<Vec<u8>> = sorted
        .iter()
        .filter(|k| k.as_slice() >= &[b'k'; 1024][..] && k.as_slice() < &[b'k'; 1025][..])
        .rev()
        .cloned()
        .collect();
    let got: Vec<Vec<u8>> = r.ranges[0].iter().map(|e| e.key.clone()).collect();
    ensure!(
        got == expected,
        "reverse scan over long keys: {} vs {}",
        got.len(),
        expected.len()
    );
    for (i, k) in keys.iter().enumerate() {
        let e = db.get(k).await.step("get")?.ok_or("long key missing")?;
        ensure_eq!(e.value.as_u64(), Some(i as u64));
    }
    db.atomic_write(AtomicWrite::new().delete(keys[3].clone()))
        .await
        .step("delete")?;
    ensure!(
        db.get(&keys[3]).await.step("get")?.is_none(),
        "deleted long key"
    );
    ensure!(
        db.get(&keys[4]).await.step("get")?.is_some(),
        "its neighbour stays"
    );
    Ok(())
}

async fn a_commit_of_1000_mutations_is_all_or_nothing(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let reader = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let r = db
                    .snapshot_read(&[ReadRange::prefix(b"bulk/", 1000)], ReadAt::Latest)
                    .await?;
                seen.insert(r.ranges[0].len());
                if r.ranges[0].len() == 1000 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, EngineError>(seen)
        })
    };
    let mut w = AtomicWrite::new();
    for i in 0..1000u32 {
        w = w.set(
            format!("bulk/{i:04}").into_bytes(),
            Value::bytes(vec![7; 200]),
        );
    }
    let vs = committed(db.atomic_write(w).await.step("1000 mutations")?)?;
    let seen = reader.await.map_err(|e| e.to_string())?.step("reader")?;
    ensure!(
        seen.iter().all(|&n| n == 0 || n == 1000),
        "a reader saw part of the commit: {seen:?}"
    );
    let all = db
        .snapshot_read(&[ReadRange::prefix(b"bulk/", 1000)], ReadAt::Latest)
        .await
        .step("read")?;
    ensure_eq!(all.ranges[0].len(), 1000);
    ensure!(
        all.ranges[0].iter().all(|e| e.versionstamp == vs),
        "one versionstamp for the whole commit"
    );
    Ok(())
}
