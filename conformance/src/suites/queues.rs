//! Durable queues: transactional enqueue, leases, redelivery, backoff, dead-lettering,
//! restarts, and the embedded listener.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{
    AtomicWrite, CommitOutcome, EngineError, Enqueue, ListenOptions, QueueMessage, Value,
};

use crate::{cases, ensure, ensure_eq, eventually, BackendKind, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "queues",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![
            enqueue_lease_ack,
            enqueue_is_part_of_the_commit,
            delayed_messages_wait,
            expired_leases_are_redelivered,
            nack_waits_out_the_backoff_then_dead_letters,
            expired_leases_exhaust_the_schedule_too,
            messages_survive_restart,
            listener_retries_then_acks,
            queued_and_dead_lettered_messages_are_listed,
            dead_letters_are_purged_oldest_first,
            a_purge_larger_than_one_commit_removes_them_all,
        ],
    }
}

fn msg(payload: &[u8]) -> Enqueue {
    Enqueue::now(Value::bytes(payload.to_vec()))
}

const SHORT: Duration = Duration::from_millis(150);

/// A message given up on at its first failed delivery, its payload then written to `key`.
fn poison(payload: &[u8], key: &[u8]) -> Enqueue {
    let mut e = msg(payload);
    e.backoff_schedule = Some(vec![]);
    e.dead_letter_keys = vec![key.to_vec()];
    e
}

/// Lease the next ready message, if there is one, for 30 seconds.
async fn lease_one(db: &strata_engine::Database) -> Result<Option<QueueMessage>, String> {
    Ok(db
        .lease(1, Duration::from_secs(30))
        .await
        .step("lease")?
        .pop())
}

async fn enqueue_lease_ack(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().enqueue(msg(b"one")).enqueue(msg(b"two")))
        .await
        .step("enqueue")?;
    ensure_eq!(db.queue_len().await.step("len")?, 2);
    let leased = db.lease(10, Duration::from_secs(30)).await.step("lease")?;
    ensure_eq!(leased.len(), 2);
    let payloads: Vec<Vec<u8>> = leased.iter().map(|m| m.payload.data.clone()).collect();
    ensure_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
    ensure!(
        leased.iter().all(|m| m.attempt == 1),
        "first delivery is attempt 1"
    );
    ensure!(
        db.lease(10, Duration::from_secs(30))
            .await
            .step("lease")?
            .is_empty(),
        "leased messages are not handed out twice"
    );
    for m in &leased {
        db.ack(m.id, m.lease).await.step("ack")?;
    }
    ensure_eq!(db.queue_len().await.step("len")?, 0);
    let again = db.ack(leased[0].id, leased[0].lease).await;
    ensure!(
        matches!(again, Err(EngineError::LeaseLost(_))),
        "double ack: {again:?}"
    );
    Ok(())
}

async fn enqueue_is_part_of_the_commit(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().set(b"k".to_vec(), Value::u64(1)))
        .await
        .step("seed")?;
    let r = db
        .atomic_write(
            AtomicWrite::new()
                .check(b"k".to_vec(), None)
                .enqueue(msg(b"x")),
        )
        .await
        .step("write")?;
    ensure!(matches!(r, CommitOutcome::CheckFailed(_)), "check fails");
    ensure_eq!(db.queue_len().await.step("len")?, 0);
    Ok(())
}

async fn delayed_messages_wait(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut e = msg(b"later");
    e.deliver_at = strata_engine::now_ms() + 300;
    db.atomic_write(AtomicWrite::new().enqueue(e))
        .await
        .step("enqueue")?;
    ensure!(
        db.lease(1, SHORT).await.step("lease")?.is_empty(),
        "not ready yet"
    );
    ensure!(
        db.next_ready_at().await.step("next")?.is_some(),
        "next ready time known"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    ensure_eq!(db.lease(1, SHORT).await.step("lease")?.len(), 1);
    Ok(())
}

async fn expired_leases_are_redelivered(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(AtomicWrite::new().enqueue(msg(b"m")))
        .await
        .step("enqueue")?;
    let first = db
        .lease(1, SHORT)
        .await
        .step("lease")?
        .pop()
        .ok_or("no message")?;
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let second = db
        .lease(1, SHORT)
        .await
        .step("lease")?
        .pop()
        .ok_or("not redelivered")?;
    ensure_eq!(second.id, first.id);
    ensure_eq!(second.attempt, 2);
    let stale = db.ack(first.id, first.lease).await;
    ensure!(
        matches!(stale, Err(EngineError::LeaseLost(_))),
        "stale lease ack: {stale:?}"
    );
    db.ack(second.id, second.lease).await.step("ack")?;
    ensure_eq!(db.queue_len().await.step("len")?, 0);
    Ok(())
}

async fn nack_waits_out_the_backoff_then_dead_letters(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut e = msg(b"payload");
    e.backoff_schedule = Some(vec![300]);
    e.dead_letter_keys = vec![b"dlq/1".to_vec(), b"dlq/2".to_vec()];
    db.atomic_write(AtomicWrite::new().enqueue(e))
        .await
        .step("enqueue")?;
    let m = lease_one(&db).await?.ok_or("no message")?;
    db.nack(m.id, m.lease).await.step("nack")?;
    ensure!(
        db.lease(1, SHORT).await.step("lease")?.is_empty(),
        "a nacked message waits out its backoff"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let m2 = lease_one(&db).await?.ok_or("no retry after backoff")?;
    ensure_eq!(m2.attempt, 2);
    db.nack(m2.id, m2.lease).await.step("nack")?;
    ensure_eq!(db.queue_len().await.step("len")?, 0);
    for k in [&b"dlq/1"[..], b"dlq/2"] {
        let e = db
            .get(k)
            .await
            .step("get")?
            .ok_or("payload not dead-lettered")?;
        ensure_eq!(e.value.data, b"payload".to_vec());
    }
    Ok(())
}

async fn expired_leases_exhaust_the_schedule_too(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let mut e = msg(b"poison");
    e.backoff_schedule = Some(vec![]);
    e.dead_letter_keys = vec![b"dead".to_vec()];
    db.atomic_write(AtomicWrite::new().enqueue(e))
        .await
        .step("enqueue")?;
    ensure_eq!(db.lease(1, SHORT).await.step("lease")?.len(), 1);
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    ensure!(
        db.lease(1, SHORT).await.step("lease")?.is_empty(),
        "no second delivery with an empty schedule"
    );
    ensure!(
        db.get(b"dead").await.step("get")?.is_some(),
        "dead-lettered after the lease expired"
    );
    ensure_eq!(db.queue_len().await.step("len")?, 0);
    Ok(())
}

async fn messages_survive_restart(h: &Harness) -> CaseResult {
    {
        let engine = h.engine();
        let db = engine.open_or_create("default").await.step("open")?;
        db.atomic_write(AtomicWrite::new().enqueue(msg(b"a")).enqueue(msg(b"b")))
            .await
            .step("enqueue")?;
        let leased = db.lease(1, Duration::from_secs(600)).await.step("lease")?;
        ensure_eq!(leased.len(), 1);
        engine.close().await;
    }
    let engine = h.engine();
    let db = engine.database("default").await.step("reopen")?;
    ensure_eq!(db.queue_len().await.step("len")?, 2);
    let leased = db.lease(10, SHORT).await.step("lease")?;
    ensure_eq!(leased.len(), 1);
    ensure_eq!(leased[0].payload.data, b"b".to_vec());
    Ok(())
}

async fn listener_retries_then_acks(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    let calls = Arc::new(AtomicU32::new(0));
    let ok = Arc::new(AtomicU32::new(0));
    let listener = {
        let (calls, ok) = (calls.clone(), ok.clone());
        db.listen(
            ListenOptions {
                poll_interval: Duration::from_millis(50),
                ..ListenOptions::default()
            },
            move |m| {
                let (calls, ok) = (calls.clone(), ok.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if m.payload.data == b"flaky" && m.attempt == 1 {
                        return Err("first attempt fails");
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
    };
    let mut flaky = msg(b"flaky");
    flaky.backoff_schedule = Some(vec![50]);
    db.atomic_write(AtomicWrite::new().enqueue(flaky).enqueue(msg(b"steady")))
        .await
        .step("enqueue")?;
    let done = eventually(Duration::from_secs(10), || {
        let ok = ok.clone();
        async move { ok.load(Ordering::SeqCst) == 2 }
    })
    .await;
    ensure!(done, "listener handled {} of 2", ok.load(Ordering::SeqCst));
    let drained = eventually(Duration::from_secs(5), || {
        let db = db.clone();
        async move { db.queue_len().await.map(|n| n == 0).unwrap_or(false) }
    })
    .await;
    ensure!(drained, "acked messages are removed");
    listener.stop().await;
    ensure_eq!(calls.load(Ordering::SeqCst), 3);
    Ok(())
}

/// What an operator inspects: the messages waiting or leased, in enqueue order, and the
/// messages the queue gave up on, newest first, with their attempts and dead-letter keys.
async fn queued_and_dead_lettered_messages_are_listed(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    db.atomic_write(
        AtomicWrite::new()
            .enqueue(poison(b"first", b"dead/1"))
            .enqueue(poison(b"second", b"dead/2")),
    )
    .await
    .step("enqueue")?;
    let queued = db.queued(10).await.step("queued")?;
    ensure_eq!(queued.len(), 2);
    ensure_eq!(queued[0].payload.data, b"first".to_vec());
    ensure_eq!(queued[1].payload.data, b"second".to_vec());
    ensure!(
        queued.iter().all(|m| m.attempts == 0 && !m.leased),
        "none delivered yet"
    );
    ensure_eq!(
        db.queued(1).await.step("queued")?.len(),
        1,
        "the limit holds"
    );

    let leased = db.lease(2, Duration::from_secs(30)).await.step("lease")?;
    ensure_eq!(leased.len(), 2);
    let queued = db.queued(10).await.step("queued")?;
    ensure!(
        queued.iter().all(|m| m.attempts == 1 && m.leased),
        "both show their running lease"
    );
    ensure_eq!(db.dead_letter_count().await.step("count")?, 0);
    for m in &leased {
        db.nack(m.id, m.lease).await.step("nack")?;
    }
    ensure!(
        db.queued(10).await.step("queued")?.is_empty(),
        "nothing left queued"
    );
    let dead = db.dead_letters(10).await.step("dead letters")?;
    ensure_eq!(dead.len(), 2);
    ensure_eq!(db.dead_letter_count().await.step("count")?, 2);
    ensure_eq!(dead[0].payload.data, b"second".to_vec(), "newest first");
    ensure_eq!(dead[0].dead_letter_keys, vec![b"dead/2".to_vec()]);
    ensure_eq!(dead[1].payload.data, b"first".to_vec());
    ensure!(
        dead.iter().all(|m| m.attempts == 1 && !m.leased),
        "one delivery each"
    );
    ensure_eq!(dead[1].id, leased[0].id);
    // The payloads went to their keys as before.
    ensure!(
        db.get(b"dead/1").await.step("get")?.is_some(),
        "the payload is at its key"
    );
    Ok(())
}

/// An operator forgets dead letters given up on before a time, oldest first; the payloads
/// stay at their dead-letter keys and the queue goes on.
async fn dead_letters_are_purged_oldest_first(h: &Harness) -> CaseResult {
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    ensure_eq!(db.purge_dead_letters(u64::MAX).await.step("purge none")?, 0);
    // Three messages given up on one after another, each at a later millisecond than the
    // one before (the clock is read, not slept on).
    let mut given_up = Vec::new();
    for i in 0..3u8 {
        db.atomic_write(AtomicWrite::new().enqueue(poison(&[i], &[b'd', i])))
            .await
            .step("enqueue")?;
        let m = lease_one(&db).await?.ok_or("no message")?;
        db.nack(m.id, m.lease).await.step("nack")?;
        let at = db.dead_letters(1).await.step("dead letters")?[0].ready_at;
        given_up.push(at);
        while strata_engine::now_ms() <= at {
            tokio::task::yield_now().await;
        }
    }
    ensure_eq!(db.dead_letter_count().await.step("count")?, 3);
    ensure_eq!(
        db.purge_dead_letters(given_up[0])
            .await
            .step("purge before the first")?,
        0,
        "nothing was given up on before the first"
    );
    ensure_eq!(
        db.purge_dead_letters(given_up[1] + 1)
            .await
            .step("purge two")?,
        2
    );
    let left = db.dead_letters(10).await.step("dead letters")?;
    ensure_eq!(left.len(), 1);
    ensure_eq!(left[0].payload.data, vec![2u8], "the newest is kept");
    for i in 0..3u8 {
        ensure!(
            db.get(&[b'd', i]).await.step("get")?.is_some(),
            "a purged dead letter's payload stays at its key"
        );
    }
    // The queue still works, and a purge of everything empties the dead letters.
    db.atomic_write(AtomicWrite::new().enqueue(msg(b"live")))
        .await
        .step("enqueue")?;
    ensure_eq!(db.purge_dead_letters(u64::MAX).await.step("purge all")?, 1);
    ensure_eq!(db.dead_letter_count().await.step("count")?, 0);
    ensure_eq!(db.queue_len().await.step("len")?, 1);
    Ok(())
}

/// A purge removes at most a thousand dead letters a commit and goes on until none is left:
/// 1,001 of them take two commits and are all gone.
async fn a_purge_larger_than_one_commit_removes_them_all(h: &Harness) -> CaseResult {
    if h.kind == BackendKind::Dynamodb {
        return Err(
            "SKIP: the purge's batching is engine code, the same on every backend; \
                    1,001 dead letters take minutes of emulator requests"
                .into(),
        );
    }
    let engine = h.engine();
    let db = engine.open_or_create("default").await.step("open")?;
    const N: usize = 1_001;
    for chunk in [500, N - 500] {
        let mut w = AtomicWrite::new();
        for _ in 0..chunk {
            let mut e = msg(b"poison");
            e.backoff_schedule = Some(vec![]);
            w = w.enqueue(e);
        }
        db.atomic_write(w).await.step("enqueue")?;
    }
    let mut given_up = 0;
    while given_up < N {
        let leased = db
            .lease(1000, Duration::from_secs(60))
            .await
            .step("lease")?;
        ensure!(
            !leased.is_empty(),
            "{given_up} of {N} given up on, none left to lease"
        );
        for m in leased {
            db.nack(m.id, m.lease).await.step("nack")?;
            given_up += 1;
        }
    }
    ensure_eq!(db.dead_letter_count().await.step("count")?, N);
    ensure_eq!(db.purge_dead_letters(u64::MAX).await.step("purge")?, N);
    ensure_eq!(db.dead_letter_count().await.step("count")?, 0);
    Ok(())
}
