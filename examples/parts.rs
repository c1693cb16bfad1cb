//! A small parts-and-stock tracker on Strata's typed KV.
//!
//! A server keeps the trees; two workstations (Ann's and Bob's) each keep a replica in a
//! local redb file, read it locally, and sync. Shown: record types and schema versions,
//! inserts with server-reserved ids, released revisions and next drafts, check-outs, a
//! name index, zero-copy reads, change events, and sync.
//!
//! Run it with `cargo run --example parts`.

use std::sync::Arc;
use std::time::Duration;

use strata_backend_redb::RedbBackend;
use strata_engine::{Database, Engine, EngineConfig};
use strata_typed::sync::{serve, Replica, ReplicaOptions, Tokens};
use strata_typed::{record, EventKind, NameIndex, Tree, Wait};

/// A part: revisions are drafted, released (then never change), and drafted again.
#[record(tree = "parts", version = 1, versioned)]
#[derive(Debug, Clone)]
struct Part {
    number: String,
    name: String,
    unit: String,
}

/// How many of a part lie in one bin.
#[record(tree = "stock", version = 1)]
#[derive(Debug, Clone)]
struct Stock {
    part: u64,
    bin: String,
    quantity: i64,
}

const TEN_MINUTES: Duration = Duration::from_secs(600);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A database in its own redb file (open while its engine lives).
async fn database(path: std::path::PathBuf) -> Result<(Engine, Database), Error> {
    let engine = Engine::new(Arc::new(RedbBackend::new(path)), EngineConfig::default());
    let db = engine.open_or_create("typed").await?;
    Ok((engine, db))
}

/// A workstation: a replica of the server, signed in with `token`.
async fn workstation(
    dir: &std::path::Path,
    name: &str,
    token: &str,
    url: &str,
) -> Result<(Engine, Replica), Error> {
    let mut options = ReplicaOptions::new(url, token);
    options.client = name.to_string();
    let (engine, db) = database(dir.join(name)).await?;
    let replica = Replica::open(db, options).await?;
    // Opening the trees before the first sync reserves ids for offline inserts.
    replica.tree::<Part>();
    replica.tree::<Stock>();
    replica.sync().await?;
    Ok((engine, replica))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;

    // The server: the trees in a store of its own, served over gRPC to two users.
    let tokens = Tokens::parse(&["ann:ann-secret-1", "bob:bob-secret-2"])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (_server_engine, server) = database(dir.path().join("server")).await?;
    tokio::spawn(serve(server, tokens, listener, std::future::pending()));
    println!("server on {url}");

    let (_ann_engine, ann) = workstation(dir.path(), "ann", "ann-secret-1", &url).await?;
    let (_bob_engine, bob) = workstation(dir.path(), "bob", "bob-secret-2", &url).await?;

    // Ann records a part. The name index lives on her replica, kept with every write, hers
    // or pulled from the server.
    let names = NameIndex::<Part>::new("name", |p| p.name.as_str());
    ann.index(names.clone());
    let parts: Tree<Part> = ann.tree::<Part>();
    let bolt = parts
        .insert(&Part {
            number: "B-0620".into(),
            name: "Hex bolt M6x20".into(),
            unit: "pcs".into(),
        })
        .await?;
    println!("ann drafted part {bolt}");

    // Releasing needs the check-out; a released revision never changes again, and the
    // next revision is drafted from it.
    parts.check_out(bolt.id(), TEN_MINUTES, Wait::No).await?;
    parts.release(bolt).await?;
    let bolt2 = parts
        .draft_next(
            bolt,
            &Part {
                number: "B-0620".into(),
                name: "Hex bolt M6x20, zinc plated".into(),
                unit: "pcs".into(),
            },
        )
        .await?;
    parts.check_in(bolt.id()).await?;
    println!("ann released {bolt} and drafted {bolt2}");

    // A bin of stock, then everything to the server.
    let bin = ann
        .tree::<Stock>()
        .insert(&Stock {
            part: bolt.id(),
            bin: "A1".into(),
            quantity: 250,
        })
        .await?;
    let report = ann.sync().await?;
    println!("ann pushed {} records", report.pushed);

    // Bob follows the server and listens for stock changes.
    let stock = bob.tree::<Stock>();
    let mut events = stock.events(stock.cursor().await?);
    let following = bob.follow();
    let seen = events.next().await?;
    println!("bob saw {:?} of stock {}", seen.kind, seen.id);

    // Bob takes 40 bolts out of the bin: check out, change, give back. While he holds the
    // bin, Ann cannot take it, and her replica refuses her changes to it.
    stock.check_out(bin.id(), TEN_MINUTES, Wait::No).await?;
    let ann_stock = ann.tree::<Stock>();
    if let Err(e) = ann_stock.check_out(bin.id(), TEN_MINUTES, Wait::No).await {
        println!("ann: {e}");
    }
    let mut taken = stock.get(bin).await?.ok_or("the bin is gone")?;
    taken.quantity -= 40;
    stock.update(bin, &taken).await?;
    stock.check_in(bin.id()).await?;
    // His replica's events: his check-out, his change, his check-in.
    while !matches!(events.next().await?.kind, EventKind::Changed { .. }) {}

    // Bob's change reaches Ann once both have synced.
    bob.sync().await?;
    ann.sync().await?;
    let left = ann_stock.with(bin, |s| s.quantity.to_native()).await?;
    println!("ann sees {left:?} bolts left in A1");

    // Reads on the replica are local: by name (case and spacing ignored), and in place.
    let found = names
        .loose(&parts, "  hex BOLT m6x20, ZINC plated ")
        .await?;
    for key in &found {
        let name = parts.with(*key, |p| p.name.to_string()).await?;
        println!("found {key}: {name:?}");
    }
    for key in parts.revisions(bolt.id()).await? {
        let meta = parts.meta(key).await?.ok_or("no metadata")?;
        println!("revision {key} is {:?}", meta.state);
    }

    following.abort();
    Ok(())
}
