//! Change events: each once, in commit order, for one tree or all, resumable from a cursor
//! (even inside a commit), and delivered to a subscriber that is already waiting.

use std::time::Duration;

use strata_typed::{record, Cursor, Error, Event, EventKind, Events, Tree, Wait};

mod common;
use common::database;

const HOUR: Duration = Duration::from_secs(3600);

#[record(tree = "boards", version = 1, versioned)]
#[derive(Debug, Clone, PartialEq)]
struct Board {
    name: String,
    layers: u8,
}

#[record(tree = "bins", version = 1)]
#[derive(Debug, Clone, PartialEq)]
struct Bin {
    label: String,
}

mod v1 {
    use strata_typed::record;

    #[record(tree = "gadgets", version = 1)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Gadget {
        pub name: String,
    }
}

#[record(tree = "gadgets", version = 2, previous = v1::Gadget)]
#[derive(Debug, Clone, PartialEq)]
struct Gadget {
    name: String,
    grams: u32,
}

impl From<v1::Gadget> for Gadget {
    fn from(old: v1::Gadget) -> Self {
        Gadget {
            name: old.name,
            grams: 0,
        }
    }
}

fn board(name: &str) -> Board {
    Board {
        name: name.into(),
        layers: 4,
    }
}

/// Every event committed so far, without waiting.
async fn drain(events: &mut Events) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = events.try_next().await.unwrap() {
        out.push(e);
    }
    out
}

fn kinds(events: &[Event]) -> Vec<(String, u64, EventKind)> {
    events
        .iter()
        .map(|e| (e.tree.clone(), e.id, e.kind.clone()))
        .collect()
}

#[tokio::test]
async fn a_record_s_life_in_events() {
    let db = database().await;
    let boards = Tree::<Board>::open(db.clone()).as_user("ann");
    let bins = Tree::<Bin>::open(db.clone()).as_user("ann");
    let start = boards.cursor().await.unwrap();
    let k = boards.insert(&board("main")).await.unwrap();
    let id = k.id();
    bins.insert(&Bin { label: "A1".into() }).await.unwrap();
    boards.check_out(id, HOUR, Wait::No).await.unwrap();
    let until = boards.checked_out_by(id).await.unwrap().unwrap().until_ms;
    boards.update(k, &board("main v2")).await.unwrap();
    boards.release(k).await.unwrap();
    let k2 = boards.draft_next(k, &board("main r2")).await.unwrap();
    boards.remove(k2).await.unwrap();
    boards.check_in(id).await.unwrap();

    let mine = drain(&mut boards.events(start)).await;
    let t = |kind| ("boards".to_string(), id, kind);
    assert_eq!(
        kinds(&mine),
        vec![
            t(EventKind::Created { revision: 1 }),
            t(EventKind::CheckOut {
                holder: Some("ann".into()),
                until_ms: until
            }),
            t(EventKind::Changed { revision: 1 }),
            t(EventKind::Released { revision: 1 }),
            t(EventKind::Created { revision: 2 }),
            t(EventKind::Removed { revision: 2 }),
            t(EventKind::CheckOut {
                holder: None,
                until_ms: 0
            }),
        ]
    );
    assert!(mine.windows(2).all(|p| p[0].cursor < p[1].cursor));
    assert_eq!(mine[0].key::<Board>(), Some(k));
    assert_eq!(mine[0].key::<Bin>(), None, "a key of another tree");
    assert_eq!(
        mine[1].key::<Board>(),
        None,
        "a check-out is not a revision"
    );

    let all = drain(&mut Events::all(db.clone(), start)).await;
    assert_eq!(all.len(), mine.len() + 1, "every tree's events: {all:?}");
    assert_eq!(all[1].tree, "bins");
    assert_eq!(all[1].kind, EventKind::Created { revision: 0 });

    // From the middle: exactly the rest.
    let rest = drain(&mut boards.events(mine[3].cursor)).await;
    assert_eq!(rest, mine[4..]);
    let none = drain(&mut boards.events(mine.last().unwrap().cursor)).await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn waiting_in_a_queue_is_not_an_event_but_taking_over_is() {
    let db = database().await;
    let ann = Tree::<Board>::open(db.clone()).as_user("ann");
    let bob = Tree::<Board>::open(db.clone()).as_user("bob");
    let k = ann.insert(&board("x")).await.unwrap();
    ann.check_out(k.id(), HOUR, Wait::No).await.unwrap();
    let from = ann.cursor().await.unwrap();
    let waiter = tokio::spawn({
        let bob = bob.clone();
        async move { bob.check_out(k.id(), HOUR, Wait::Up(HOUR)).await }
    });
    // Bob is queued once the queue names him; his wait wrote the check-out record.
    while ann.queue(k.id()).await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    assert!(drain(&mut ann.events(from)).await.is_empty());
    ann.check_in(k.id()).await.unwrap();
    let lease = waiter.await.unwrap().unwrap();
    let got = drain(&mut ann.events(from)).await;
    let holders: Vec<Option<String>> = got
        .iter()
        .map(|e| match &e.kind {
            EventKind::CheckOut { holder, .. } => holder.clone(),
            other => panic!("only check-out events: {other:?}"),
        })
        .collect();
    assert_eq!(holders.last(), Some(&Some("bob".to_string())));
    assert_eq!(lease.holder, "bob");
}

#[tokio::test]
async fn a_subscriber_resumes_inside_a_commit() {
    let db = database().await;
    let old = Tree::<v1::Gadget>::open(db.clone()).as_user("ann");
    for name in ["a", "b", "c"] {
        old.insert(&v1::Gadget { name: name.into() }).await.unwrap();
    }
    let new = Tree::<Gadget>::open(db.clone()).as_user("ann");
    let from = new.cursor().await.unwrap();
    // One migration transaction rewrites all three: three events of one commit.
    assert_eq!(new.migrate(|_, _| {}).await.unwrap(), 3);
    let all = drain(&mut new.events(from)).await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.version == all[0].version));
    assert!(all
        .iter()
        .all(|e| matches!(e.kind, EventKind::Changed { revision: 0 })));
    assert_eq!(all[0].cursor.within, 1);
    let rest = drain(&mut new.events(all[0].cursor)).await;
    assert_eq!(rest, all[1..]);
    let stored: Cursor = all[1].cursor.to_string().parse().unwrap();
    assert_eq!(drain(&mut new.events(stored)).await, all[2..]);
}

#[tokio::test]
async fn a_waiting_subscriber_hears_each_commit() {
    let db = database().await;
    let tree = Tree::<Bin>::open(db.clone()).as_user("ann");
    let mut events = tree.events(tree.cursor().await.unwrap());
    let listener = tokio::spawn(async move {
        let mut labels = Vec::new();
        for _ in 0..20 {
            labels.push(events.next().await.unwrap().id);
        }
        labels
    });
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            tree.insert(&Bin {
                label: format!("B{i}"),
            })
            .await
            .unwrap()
            .id(),
        );
    }
    assert_eq!(listener.await.unwrap(), ids);
}

#[test]
fn cursors_print_and_parse() {
    let c = Cursor {
        version: 42,
        within: 3,
    };
    assert_eq!(c.to_string(), "42.3");
    assert_eq!("42.3".parse::<Cursor>().unwrap(), c);
    for bad in ["", "42", "x.1", "1.y", "1.2.3"] {
        assert!(
            matches!(bad.parse::<Cursor>(), Err(Error::BadCursor(_))),
            "{bad:?}"
        );
    }
}
