//! Every limit is checked before anything is written, and each violation names its limit.

use strata_engine::{
    AtomicWrite, DatabaseOptions, EngineError, Enqueue, Limits, Mutation, MutationKind, ReadAt,
    ReadRange, Value,
};

use crate::{cases, ensure, ensure_eq, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "limits",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            key_and_value_sizes,
            read_limits,
            atomic_write_counts_and_size,
            queue_limits,
            watch_limits,
            transaction_limits,
            limits_are_per_database_and_persist,
            restores_check_limits_and_write_nothing,
        ],
    }
}

fn expect_limit<T: std::fmt::Debug>(r: Result<T, EngineError>, limit: &str) -> CaseResult {
    match r {
        Err(EngineError::LimitExceeded { limit: l, .. }) if l == limit => Ok(()),
        other => Err(format!("expected the '{limit}' limit, got {other:?}")),
    }
}

async fn key_and_value_sizes(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let before = db.version();
    expect_limit(
        db.atomic_write(AtomicWrite::new().set(vec![1; 2049], Value::u64(1)))
            .await,
        "write key size",
    )?;
    expect_limit(
        db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::bytes(vec![0; 65537])))
            .await,
        "value size",
    )?;
    expect_limit(
        db.atomic_write(AtomicWrite::new().delete(vec![1; 2049]))
            .await,
        "write key size",
    )?;
    expect_limit(
        db.atomic_write(AtomicWrite::new().mutate(Mutation::sum(vec![1; 2049], 1)))
            .await,
        "write key size",
    )?;
    ensure_eq!(db.version(), before);
    db.atomic_write(AtomicWrite::new().set(vec![1; 2048], Value::bytes(vec![0; 65536])))
        .await
        .step("at the limits")?;
    let e = db.get(&[1; 2048]).await.step("get")?.ok_or("missing")?;
    ensure_eq!(e.value.data.len(), 65536);
    // The error names the limit in words a user can act on.
    let msg = db
        .atomic_write(AtomicWrite::new().set(vec![1; 3000], Value::u64(1)))
        .await
        .err()
        .map(|e| e.to_string());
    ensure_eq!(
        msg,
        Some("key of 3000 bytes exceeds the write key size limit of 2048 bytes".to_string())
    );
    Ok(())
}

async fn read_limits(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    expect_limit(db.get(&[0; 2050]).await, "read key size")?;
    ensure!(
        db.get(&[0; 2049])
            .await
            .step("2049-byte read key")?
            .is_none(),
        "absent"
    );
    let eleven: Vec<ReadRange> = (0..11u8)
        .map(|i| ReadRange::new(vec![i], vec![i + 1], 1))
        .collect();
    expect_limit(
        db.snapshot_read(&eleven, ReadAt::Latest).await,
        "ranges per read",
    )?;
    let big = vec![
        ReadRange::new(vec![0], vec![1], 600),
        ReadRange::new(vec![1], vec![2], 401),
    ];
    expect_limit(
        db.snapshot_read(&big, ReadAt::Latest).await,
        "entries per read",
    )?;
    let r = db
        .snapshot_read(&[ReadRange::new(vec![0], vec![1], 0)], ReadAt::Latest)
        .await;
    ensure!(
        matches!(r, Err(EngineError::InvalidRequest(_))),
        "limit 0: {r:?}"
    );
    expect_limit(
        db.snapshot_read(&[ReadRange::new(vec![0; 2050], vec![], 1)], ReadAt::Latest)
            .await,
        "read key size",
    )?;
    expect_limit(
        db.get_many(&[vec![0; 2050]], ReadAt::Latest).await,
        "read key size",
    )?;
    Ok(())
}

async fn atomic_write_counts_and_size(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let before = db.version();
    let mut w = AtomicWrite::new();
    for i in 0..101u32 {
        w = w.check(i.to_be_bytes().to_vec(), None);
    }
    expect_limit(db.atomic_write(w).await, "checks per atomic write")?;
    let mut w = AtomicWrite::new();
    for i in 0..1001u32 {
        w = w.set(i.to_be_bytes().to_vec(), Value::u64(1));
    }
    expect_limit(db.atomic_write(w).await, "mutations per atomic write")?;
    let mut w = AtomicWrite::new();
    for i in 0..900u32 {
        w = w.set(i.to_be_bytes().to_vec(), Value::u64(1));
    }
    for _ in 0..101 {
        w = w.enqueue(Enqueue::now(Value::bytes(vec![1])));
    }
    expect_limit(db.atomic_write(w).await, "mutations per atomic write")?;
    let mut w = AtomicWrite::new();
    for i in 0..13u32 {
        w = w.set(i.to_be_bytes().to_vec(), Value::bytes(vec![0; 65536]));
    }
    expect_limit(db.atomic_write(w).await, "total atomic write size")?;
    ensure_eq!(db.version(), before);
    let mut w = AtomicWrite::new();
    for i in 0..100u32 {
        w = w.check(i.to_be_bytes().to_vec(), None);
    }
    for i in 0..1000u32 {
        w = w.set(i.to_be_bytes().to_vec(), Value::u64(1));
    }
    db.atomic_write(w)
        .await
        .step("100 checks and 1000 mutations")?;
    Ok(())
}

async fn queue_limits(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let now = strata_engine::now_ms();
    let mk = |f: &dyn Fn(&mut Enqueue)| {
        let mut e = Enqueue::now(Value::bytes(vec![1]));
        f(&mut e);
        AtomicWrite::new().enqueue(e)
    };
    expect_limit(
        db.atomic_write(mk(&|e| e.deliver_at = now + 31 * 24 * 3600 * 1000))
            .await,
        "enqueue delay",
    )?;
    expect_limit(
        db.atomic_write(mk(&|e| e.dead_letter_keys = vec![b"k".to_vec(); 11]))
            .await,
        "dead-letter keys per message",
    )?;
    expect_limit(
        db.atomic_write(mk(&|e| e.backoff_schedule = Some(vec![1; 11])))
            .await,
        "backoff schedule length",
    )?;
    expect_limit(
        db.atomic_write(mk(&|e| e.backoff_schedule = Some(vec![3_600_001])))
            .await,
        "backoff step",
    )?;
    expect_limit(
        db.atomic_write(mk(&|e| e.dead_letter_keys = vec![vec![0; 2049]]))
            .await,
        "write key size",
    )?;
    expect_limit(
        db.atomic_write(mk(&|e| e.payload = Value::bytes(vec![0; 65537])))
            .await,
        "value size",
    )?;
    ensure_eq!(db.queue_len().await.step("queue_len")?, 0);
    db.atomic_write(mk(&|e| {
        e.deliver_at = now + 29 * 24 * 3600 * 1000;
        e.dead_letter_keys = vec![b"k".to_vec(); 10];
        e.backoff_schedule = Some(vec![3_600_000; 10]);
    }))
    .await
    .step("at the limits")?;
    ensure_eq!(db.queue_len().await.step("queue_len")?, 1);
    Ok(())
}

async fn watch_limits(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    expect_limit(
        db.watch((0..11u8).map(|i| vec![i]).collect()),
        "watched keys",
    )?;
    ensure!(
        matches!(db.watch(vec![]), Err(EngineError::InvalidRequest(_))),
        "zero keys is a clear error"
    );
    expect_limit(db.watch(vec![vec![0; 2050]]), "read key size")?;
    db.watch((0..10u8).map(|i| vec![i]).collect())
        .step("ten keys")?;
    Ok(())
}

async fn transaction_limits(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut t = db.begin().await.step("begin")?;
    expect_limit(t.set(&[0; 2049], Value::u64(1)), "write key size")?;
    expect_limit(t.set(b"k", Value::bytes(vec![0; 65537])), "value size")?;
    expect_limit(t.get(&[0; 2050]).await, "read key size")?;
    for i in 0..159u32 {
        t.set(&i.to_be_bytes(), Value::bytes(vec![0; 65536]))
            .step("set")?;
    }
    expect_limit(
        t.set(b"one more", Value::bytes(vec![0; 65536])),
        "transaction size",
    )?;
    // A sum counts its key and eight bytes against the same budget.
    expect_limit(t.sum(&[0; 2049], 1), "write key size")?;
    let used = 159 * (4 + 65536);
    let left = db.options().limits.max_transaction_bytes - used;
    t.set(b"fill", Value::bytes(vec![0; left - 4 - 10]))
        .step("fill to ten bytes short")?;
    expect_limit(t.sum(b"counter", 1), "transaction size")?;
    t.sum(b"c", 1).step("a sum that fits")?;
    t.rollback();
    Ok(())
}

async fn limits_are_per_database_and_persist(h: &Harness) -> CaseResult {
    let options = DatabaseOptions {
        limits: Limits {
            max_value_bytes: 10,
            ..Limits::default()
        },
        ..DatabaseOptions::default()
    };
    {
        let engine = h.engine();
        engine
            .create_database("small", Some(options))
            .await
            .step("create")?;
        let db = engine.database("small").await.step("open")?;
        expect_limit(
            db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::bytes(vec![0; 11])))
                .await,
            "value size",
        )?;
        let other = engine.open_or_create("big").await.step("open big")?;
        other
            .atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::bytes(vec![0; 11])))
            .await
            .step("default limits")?;
        engine.close().await;
    }
    let engine = h.engine();
    let db = engine.database("small").await.step("reopen")?;
    ensure_eq!(db.options().limits.max_value_bytes, 10);
    let w = AtomicWrite::new().mutate(Mutation {
        key: b"k".to_vec(),
        kind: MutationKind::Set {
            value: Value::bytes(vec![0; 11]),
            expires_at: None,
        },
    });
    expect_limit(db.atomic_write(w).await, "value size")?;
    Ok(())
}

async fn restores_check_limits_and_write_nothing(h: &Harness) -> CaseResult {
    use strata_engine::{Entry, Versionstamp};
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let entry = |key: Vec<u8>, len: usize| Entry {
        key,
        value: Value::bytes(vec![0; len]),
        versionstamp: Versionstamp::from_version(7),
        expires_at: None,
    };
    let before = db.version();
    let many: Vec<Entry> = (0..1001u32)
        .map(|i| entry(i.to_be_bytes().to_vec(), 1))
        .collect();
    expect_limit(
        db.restore(many, vec![], 0).await,
        "mutations per atomic write",
    )?;
    expect_limit(
        db.restore(vec![entry(vec![1; 2049], 1)], vec![], 0).await,
        "write key size",
    )?;
    expect_limit(
        db.restore(vec![entry(b"k".to_vec(), 65537)], vec![], 0)
            .await,
        "value size",
    )?;
    ensure_eq!(db.version(), before);
    ensure!(db.get(b"k").await.step("get")?.is_none(), "nothing written");
    let e = Entry {
        key: b"k".to_vec(),
        ..entry(b"k".to_vec(), 3)
    };
    db.restore(vec![e.clone()], vec![], 0)
        .await
        .step("restore at the limits")?;
    ensure_eq!(
        db.get(b"k").await.step("get")?.map(|e| e.versionstamp),
        Some(e.versionstamp)
    );
    Ok(())
}
