//! Check-out and check-in: changes need the record's check-out; a check-out is exclusive,
//! waiters are served first come first served, and an expired lease passes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_typed::{record, Error, Tree, Wait};

mod common;
use common::database;

#[record(tree = "machines", version = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub name: String,
    pub hours: u64,
}

const HOUR: Duration = Duration::from_secs(3600);
const LONG_WAIT: Wait = Wait::Up(Duration::from_secs(600));

fn machine(hours: u64) -> Machine {
    Machine {
        name: "lathe".into(),
        hours,
    }
}

/// Until `probe` holds; the state it waits for is reached by other tasks' progress, not by
/// time passing.
async fn until<F: std::future::Future<Output = bool>>(mut probe: impl FnMut() -> F) {
    for _ in 0..100_000 {
        if probe().await {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached");
}

#[tokio::test]
async fn changes_need_the_check_out_and_it_is_exclusive() {
    let db = database().await;
    let ann = Tree::<Machine>::open(db.clone()).as_user("ann");
    let bob = Tree::<Machine>::open(db.clone()).as_user("bob");
    let k = ann.insert(&machine(1)).await.unwrap();
    // Nobody holds it: nobody may change it.
    for tree in [&ann, &bob] {
        match tree.update(k, &machine(2)).await {
            Err(Error::NotCheckedOut { key, .. }) => assert_eq!(key, k.raw()),
            other => panic!("{other:?}"),
        }
    }
    let lease = ann.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    assert_eq!(lease.holder, "ann");
    assert_eq!(
        ann.checked_out_by(k.id()).await.unwrap(),
        Some(lease.clone())
    );
    match bob.check_out(k.id(), HOUR, Wait::No).await {
        Err(Error::CheckedOut {
            holder, until_ms, ..
        }) => {
            assert_eq!((holder.as_str(), until_ms), ("ann", lease.until_ms))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bob.update(k, &machine(3)).await,
        Err(Error::NotCheckedOut { .. })
    ));
    assert!(matches!(
        bob.remove(k).await,
        Err(Error::NotCheckedOut { .. })
    ));
    ann.update(k, &machine(2)).await.unwrap();
    // Checking out again renews; checking in gives it back.
    ann.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    assert!(matches!(
        bob.check_in(k.id()).await,
        Err(Error::NotCheckedOut { .. })
    ));
    ann.check_in(k.id()).await.unwrap();
    assert_eq!(ann.checked_out_by(k.id()).await.unwrap(), None);
    assert!(matches!(
        ann.update(k, &machine(9)).await,
        Err(Error::NotCheckedOut { .. })
    ));
    bob.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    bob.update(k, &machine(4)).await.unwrap();
    assert_eq!(bob.get(k).await.unwrap().unwrap().hours, 4);
    // A handle without a user cannot check out or change.
    let nobody = Tree::<Machine>::open(db);
    assert!(matches!(
        nobody.check_out(k.id(), HOUR, Wait::No).await,
        Err(Error::NoUser("machines"))
    ));
    assert!(matches!(
        nobody.update(k, &machine(5)).await,
        Err(Error::NoUser(_))
    ));
}

#[tokio::test]
async fn an_expired_lease_passes_on() {
    let db = database().await;
    // Both users' handles read one clock that the test moves.
    let now = Arc::new(AtomicU64::new(strata_engine::now_ms()));
    let clock = |now: &Arc<AtomicU64>| {
        let now = now.clone();
        move || now.load(Ordering::SeqCst)
    };
    let ann = Tree::<Machine>::open(db.clone())
        .as_user("ann")
        .with_clock(clock(&now));
    let bob = Tree::<Machine>::open(db.clone())
        .as_user("bob")
        .with_clock(clock(&now));
    let k = ann.insert(&machine(1)).await.unwrap();
    ann.check_out(k.id(), Duration::from_secs(10), Wait::No)
        .await
        .unwrap();
    now.fetch_add(9_000, Ordering::SeqCst);
    assert!(bob.check_out(k.id(), HOUR, Wait::No).await.is_err());
    ann.update(k, &machine(2)).await.unwrap();
    now.fetch_add(2_000, Ordering::SeqCst);
    // Ann's client crashed and never checked in: the lease ran out.
    assert_eq!(ann.checked_out_by(k.id()).await.unwrap(), None);
    assert!(matches!(
        ann.update(k, &machine(3)).await,
        Err(Error::NotCheckedOut { .. })
    ));
    let lease = bob.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    assert_eq!(lease.holder, "bob");
    bob.update(k, &machine(4)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order() {
    let db = database().await;
    let ann = Tree::<Machine>::open(db.clone()).as_user("ann");
    let bob = Tree::<Machine>::open(db.clone()).as_user("bob");
    let carol = Tree::<Machine>::open(db.clone()).as_user("carol");
    let k = ann.insert(&machine(1)).await.unwrap();
    ann.check_out(k.id(), HOUR, Wait::No).await.unwrap();

    let bob_waits = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.check_out(k.id(), HOUR, LONG_WAIT).await })
    };
    until(|| async { ann.queue(k.id()).await.unwrap() == ["bob"] }).await;
    let carol_waits = {
        let carol = carol.clone();
        tokio::spawn(async move { carol.check_out(k.id(), HOUR, LONG_WAIT).await })
    };
    until(|| async { ann.queue(k.id()).await.unwrap() == ["bob", "carol"] }).await;
    // Queued waiters leave the check-out record alone: were each to rewrite its place when
    // woken, they would wake each other without end.
    let mut lease_key = vec![strata_typed::layout::PREFIX, 0x04];
    lease_key.extend_from_slice(b"machines\0");
    lease_key.extend_from_slice(&k.id().to_be_bytes());
    let written = db.get(&lease_key).await.unwrap().unwrap().versionstamp;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        db.get(&lease_key).await.unwrap().unwrap().versionstamp,
        written
    );
    // A newcomer that does not wait is refused.
    let dave = Tree::<Machine>::open(db.clone()).as_user("dave");
    assert!(dave.check_out(k.id(), HOUR, Wait::No).await.is_err());

    ann.check_in(k.id()).await.unwrap();
    let lease = bob_waits.await.unwrap().unwrap();
    assert_eq!(lease.holder, "bob");
    assert!(!carol_waits.is_finished());
    assert_eq!(ann.queue(k.id()).await.unwrap(), ["carol"]);
    bob.update(k, &machine(2)).await.unwrap();
    bob.check_in(k.id()).await.unwrap();
    let lease = carol_waits.await.unwrap().unwrap();
    assert_eq!(lease.holder, "carol");
    carol.update(k, &machine(3)).await.unwrap();
    assert_eq!(ann.queue(k.id()).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_wait_that_runs_out_fails_and_leaves_the_queue() {
    let db = database().await;
    let ann = Tree::<Machine>::open(db.clone()).as_user("ann");
    let bob = Tree::<Machine>::open(db.clone()).as_user("bob");
    let k = ann.insert(&machine(1)).await.unwrap();
    ann.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    match bob
        .check_out(k.id(), HOUR, Wait::Up(Duration::from_millis(20)))
        .await
    {
        Err(Error::CheckedOut { holder, .. }) => assert_eq!(holder, "ann"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ann.queue(k.id()).await.unwrap(), Vec::<String>::new());
    ann.check_in(k.id()).await.unwrap();
    bob.check_out(k.id(), HOUR, Wait::No).await.unwrap();
}
