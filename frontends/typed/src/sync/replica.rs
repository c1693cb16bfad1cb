//! The client side: a replica of a server's typed trees in a local database.
//!
//! Reads are local (and work offline). Writes are local too, marked dirty, and pushed to
//! the server when the replica syncs; inserts take ids the server reserved for this
//! replica, so they need no server either. Changing an existing record needs its check-out,
//! which only the server gives: the replica stores the server's check-out records, so a
//! change without one is refused locally, before anything is sent.
//!
//! The replica remembers its server's identity (the server database's id) on first contact
//! and refuses any other server afterwards.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use strata_engine::{Database, ReadAt, ReadRange, Transaction, Value};
use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::proto::sync_client::SyncClient;
use super::proto::{
    CheckInRequest, CheckOutRequest, Entry, HelloRequest, PullBatch, PullRequest, PushRequest,
    ReserveIdsRequest,
};
use super::server::{MAX_BATCH_BYTES, MAX_PUSH};
use crate::layout;
use crate::tree::{record_value, Reindexer};
use crate::upstream::{read_grants, write_grants, BoxFuture, Upstream};
use crate::{Error, Indexer, Lease, Record, Result, Tree};

/// Where a replica's server is and how it signs in.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// `http://host:port`
    pub server: String,
    pub token: String,
    /// This replica's name, for the server's log.
    pub client: String,
    /// Ids reserved per tree at a time for offline inserts (a new reservation is made when
    /// fewer than half are left).
    pub reserve: u64,
}

impl ReplicaOptions {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        ReplicaOptions {
            server: server.into(),
            token: token.into(),
            client: String::from("replica"),
            reserve: 256,
        }
    }
}

/// What one [`Replica::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Records pushed and accepted.
    pub pushed: usize,
    /// Records the server refused; the replica holds the server's value of each again.
    pub refused: Vec<Error>,
    /// Server entries applied to the replica.
    pub pulled: usize,
    /// The server version the replica holds everything through.
    pub through: u64,
}

type Client = SyncClient<InterceptedService<Channel, Bearer>>;

/// One tree's registered indexers (a `Vec<Arc<dyn Indexer<T>>>`), and what keeps their
/// entries for records the server sends.
type Registered = (Box<dyn Any + Send + Sync>, Reindexer);

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A local replica of a typed server. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    options: ReplicaOptions,
    bearer: Bearer,
    /// The open connection, if any (dropped when a call finds it broken).
    conn: tokio::sync::Mutex<Option<Client>>,
    /// The server's user for this token, once known.
    user: RwLock<Option<Arc<str>>>,
    /// Trees opened on this replica: ids are reserved for them.
    trees: Mutex<BTreeSet<&'static str>>,
    /// Indexers registered per tree: each tree's typed list (a `Vec<Arc<dyn Indexer<T>>>`)
    /// and what keeps its entries for records the server sends.
    indexers: Mutex<HashMap<&'static str, Registered>>,
    /// One push or pull at a time.
    syncing: tokio::sync::Mutex<()>,
}

impl Replica {
    /// A replica kept in `db` (an embedded database of its own), of the server in
    /// `options`. Opening needs no server.
    pub async fn open(db: Database, options: ReplicaOptions) -> Result<Replica> {
        let bearer = MetadataValue::try_from(format!("Bearer {}", options.token))
            .map_err(|_| Error::Sync("the token is not valid in a header".into()))?;
        crate::events::ensure_feed(&db).await?;
        let user = read_state(&db, "user")
            .await?
            .and_then(|u| String::from_utf8(u).ok())
            .map(Arc::from);
        Ok(Replica {
            inner: Arc::new(Inner {
                db,
                options,
                bearer: Bearer(bearer),
                conn: tokio::sync::Mutex::new(None),
                user: RwLock::new(user),
                trees: Mutex::new(BTreeSet::new()),
                indexers: Mutex::new(HashMap::new()),
                syncing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The replica's local database.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The server's name for this replica's user (known after the first contact).
    pub fn user(&self) -> Option<String> {
        self.inner
            .user
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .map(str::to_string)
    }

    /// Keep `indexer`'s index of `T`'s tree on this replica: for every write through this
    /// replica's trees, and for every record pulled from the server. Register indexers
    /// before the first sync (or `rebuild_index` after registering).
    pub fn index<T: Record>(&self, indexer: impl Indexer<T>) {
        let mut all = self
            .inner
            .indexers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Arc<dyn Indexer<T>>> = all
            .get(T::TREE)
            .and_then(|(typed, _)| typed.downcast_ref::<Vec<Arc<dyn Indexer<T>>>>())
            .cloned()
            .unwrap_or_default();
        list.push(Arc::new(indexer));
        let reindex = Tree::<T>::open(self.inner.db.clone())
            .with_indexers(list.clone())
            .reindexer();
        all.insert(T::TREE, (Box::new(list), reindex));
    }

    /// The tree of `T` on this replica, acting for the replica's user, keeping the indexes
    /// registered with [`Replica::index`].
    pub fn tree<T: Record>(&self) -> Tree<T> {
        self.inner
            .trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(T::TREE);
        let indexers = self
            .inner
            .indexers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(T::TREE)
            .and_then(|(typed, _)| typed.downcast_ref::<Vec<Arc<dyn Indexer<T>>>>())
            .cloned()
            .unwrap_or_default();
        let tree = Tree::open(self.inner.db.clone())
            .with_indexers(indexers)
            .with_upstream(Arc::new(self.clone()));
        match self.user() {
            Some(u) => tree.as_user(&u),
            None => tree,
        }
    }

    /// Records written here and not yet accepted by the server.
    pub async fn dirty(&self) -> Result<usize> {
        let (s, e) = layout::dirty_range();
        let mut tx = self.inner.db.begin().await?;
        let markers = tx.scan(&s, &e, false, usize::MAX).await?;
        Ok(markers
            .iter()
            .filter_map(|(m, _)| layout::dirty_record(m))
            .filter(|k| layout::parse_schema(k).is_none())
            .count())
    }

    /// Dirty records, counted up to `limit`.
    async fn count_dirty(&self, limit: usize) -> Result<usize> {
        let (s, e) = layout::dirty_range();
        let mut tx = self.inner.db.begin().await?;
        Ok(tx.scan(&s, &e, false, limit).await?.len())
    }

    /// Exchange changes with the server: push what was written here, reserve ids for the
    /// trees opened here, and pull what the server has that the replica does not.
    pub async fn sync(&self) -> Result<SyncReport> {
        let _one = self.inner.syncing.lock().await;
        let mut client = self.connect().await?;
        let mut report = SyncReport::default();
        self.push(&mut client, &mut report).await?;
        self.reserve(&mut client).await?;
        let after = self.cursor().await?;
        let stream = client
            .pull(PullRequest {
                after,
                follow: false,
            })
            .await
            .map_err(|s| self.failed(s))?;
        let mut stream = stream.into_inner();
        report.through = after;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|s| self.failed(s))?;
            report.pulled += batch.entries.len();
            if batch.through > 0 {
                report.through = batch.through;
            }
            self.apply(batch).await?;
        }
        Ok(report)
    }

    /// Keep the replica in step with the server until the returned task is aborted: pull
    /// every server change as it commits, push local writes as they are made, and
    /// reconnect (with backoff) whenever the server is unreachable.
    pub fn follow(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                match me.follow_once().await {
                    Ok(()) => pause = Duration::from_millis(50),
                    Err(e) => {
                        tracing::debug!(error = %e, "typed replica: sync interrupted");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
        })
    }

    async fn follow_once(&self) -> Result<()> {
        // Read before the first sync: a write committed after it wakes the loop below.
        let mut local = self.inner.db.version();
        self.sync().await?;
        let mut client = self.connect().await?;
        let after = self.cursor().await?;
        let mut stream = client
            .pull(PullRequest {
                after,
                follow: true,
            })
            .await
            .map_err(|s| self.failed(s))?
            .into_inner();
        loop {
            tokio::select! {
                batch = stream.next() => match batch {
                    Some(b) => self.apply(b.map_err(|s| self.failed(s))?).await?,
                    None => return Err(Error::Sync("the server ended the stream".into())),
                },
                r = self.inner.db.wait_for_version(local + 1) => {
                    r?;
                    local = self.inner.db.version();
                    // After every local commit (pulled ones too): one key read.
                    if self.count_dirty(1).await? > 0 {
                        let _one = self.inner.syncing.lock().await;
                        self.push(&mut client, &mut SyncReport::default()).await?;
                        self.reserve(&mut client).await?;
                    }
                }
            }
        }
    }

    /// The connection, opened (and the server checked) if there is none.
    async fn connect(&self) -> Result<Client> {
        let mut conn = self.inner.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(self.inner.options.server.clone())
            .map_err(|e| Error::Sync(format!("server address: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            Error::Sync(format!(
                "server {} unreachable: {e}",
                self.inner.options.server
            ))
        })?;
        let mut client = SyncClient::with_interceptor(channel, self.inner.bearer.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let hello = client
            .hello(HelloRequest {
                client: self.inner.options.client.clone(),
            })
            .await
            .map_err(from_status)?
            .into_inner();
        match read_state(&self.inner.db, "server").await? {
            Some(id) if id != hello.server_id.as_bytes() => {
                return Err(Error::WrongServer {
                    expected: String::from_utf8_lossy(&id).into_owned(),
                    found: hello.server_id,
                })
            }
            Some(_) => {}
            None => write_state(&self.inner.db, "server", hello.server_id.as_bytes()).await?,
        }
        if self.user().as_deref() != Some(hello.user.as_str()) {
            write_state(&self.inner.db, "user", hello.user.as_bytes()).await?;
            *self.inner.user.write().unwrap_or_else(|p| p.into_inner()) =
                Some(Arc::from(hello.user.as_str()));
        }
        *conn = Some(client.clone());
        Ok(client)
    }

    /// A call failed: forget the connection if it is broken, and say what happened.
    fn failed(&self, s: Status) -> Error {
        if matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) {
            if let Ok(mut conn) = self.inner.conn.try_lock() {
                *conn = None;
            }
            return Error::Sync(format!(
                "server {} unreachable: {}",
                self.inner.options.server,
                s.message()
            ));
        }
        from_status(s)
    }

    async fn cursor(&self) -> Result<u64> {
        Ok(read_state(&self.inner.db, "cursor")
            .await?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Push every dirty record; settle what the server said.
    async fn push(&self, client: &mut Client, report: &mut SyncReport) -> Result<()> {
        let db = &self.inner.db;
        loop {
            let (s, e) = layout::dirty_range();
            let mut tx = db.begin().await?;
            // Schemas first, so the server judges a type's schema before its records.
            let (ss, se) = layout::dirty_schemas_range();
            let mut markers = tx.scan(&ss, &se, false, MAX_PUSH).await?;
            let rest = tx.scan(&s, &e, false, MAX_PUSH).await?;
            let full = rest.len() == MAX_PUSH;
            let room = MAX_PUSH - markers.len();
            markers.extend(
                rest.into_iter()
                    .filter(|(k, _)| !k.starts_with(&ss))
                    .take(room),
            );
            if markers.is_empty() {
                return Ok(());
            }
            // One push is applied in one server transaction: keep it within its limit.
            let mut records = Vec::with_capacity(markers.len());
            let mut bytes = 0;
            for (marker, _) in &markers {
                // Every key of the scanned range has the marker prefix.
                let Some(key) = layout::dirty_record(marker) else {
                    continue;
                };
                let value = tx.get(key).await?;
                let size = key.len() + value.as_ref().map_or(0, |v| v.data.len()) + 16;
                if !records.is_empty() && bytes + size > MAX_BATCH_BYTES {
                    break;
                }
                bytes += size;
                records.push(Entry {
                    key: key.to_vec(),
                    deleted: value.is_none(),
                    value: value.map(|v| v.data).unwrap_or_default(),
                });
            }
            drop(tx);
            let partial = records.len() < markers.len();
            let reply = client
                .push(PushRequest {
                    records: records.clone(),
                })
                .await
                .map_err(|s| self.failed(s))?
                .into_inner();
            let refused: std::collections::HashMap<Vec<u8>, _> = reply
                .refused
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect();
            let settled = in_transaction!(db, |tx| {
                let mut out = (0usize, Vec::new());
                for r in &records {
                    // Unless the record was written again meanwhile (that write is pushed
                    // next time).
                    let now = tx.get(&r.key).await?;
                    let same = match &now {
                        None => r.deleted,
                        Some(v) => !r.deleted && v.data == r.value,
                    };
                    match refused.get(&r.key) {
                        Some(no) => {
                            if same {
                                // The server's value wins.
                                self.write_shared(tx, &r.key, no.exists.then_some(&no.current))
                                    .await?;
                                tx.delete(&layout::dirty(&r.key))?;
                            }
                            out.1.push(match layout::parse_schema(&r.key) {
                                Some((tree, version)) => Error::SchemaConflict {
                                    tree: tree.to_string(),
                                    version,
                                },
                                None => Error::Refused {
                                    key: layout::raw_key(&r.key),
                                    reason: no.reason.clone(),
                                },
                            });
                        }
                        None => {
                            // Accepted: clean.
                            if same {
                                tx.delete(&layout::dirty(&r.key))?;
                            }
                            // Records are counted; a schema goes with them.
                            out.0 += usize::from(layout::parse_schema(&r.key).is_none());
                        }
                    }
                }
                Ok::<_, Error>(out)
            })?;
            report.pushed += settled.0;
            report.refused.extend(settled.1);
            if !partial && !full && markers.len() < MAX_PUSH {
                return Ok(());
            }
        }
    }

    /// Reserve ids for every tree opened here that is running low.
    async fn reserve(&self, client: &mut Client) -> Result<()> {
        let trees: Vec<&'static str> = self
            .inner
            .trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let want = self.inner.options.reserve.max(1);
        for tree in trees {
            let db = &self.inner.db;
            let mut tx = db.begin().await?;
            let left: u64 = read_grants(&mut tx, tree)
                .await?
                .iter()
                .map(|(s, e)| e.saturating_sub(*s))
                .sum();
            drop(tx);
            if left * 2 >= want {
                continue;
            }
            let got = client
                .reserve_ids(ReserveIdsRequest {
                    tree: tree.to_string(),
                    count: want,
                })
                .await
                .map_err(|s| self.failed(s))?
                .into_inner();
            in_transaction!(db, |tx| {
                let mut ranges = read_grants(tx, tree).await?;
                ranges.push((got.start, got.end));
                write_grants(tx, tree, &ranges)?;
                Ok::<_, Error>(())
            })?;
        }
        Ok(())
    }

    /// Apply one pulled batch: the server's entries, except records written here and not
    /// yet pushed (those are the replica's until the server answers them).
    async fn apply(&self, batch: PullBatch) -> Result<()> {
        let db = &self.inner.db;
        // A reset: the server's whole state follows. Entries it does not carry are dropped
        // once it is all here (those not written since the reset began), so that a
        // replica cut off half-way keeps its old state rather than half of the new one.
        let reset_from = db.version();
        in_transaction!(db, |tx| {
            if batch.reset {
                set_state(tx, "cursor", &0u64.to_be_bytes())?;
                set_state(tx, "reset", &reset_from.to_be_bytes())?;
            }
            for e in &batch.entries {
                if !layout::is_shared(&e.key) {
                    continue;
                }
                if let Some(guard) = layout::dirty_guard(&e.key) {
                    if tx.get(&guard).await?.is_some() {
                        continue;
                    }
                }
                self.write_shared(tx, &e.key, (!e.deleted).then_some(&e.value))
                    .await?;
            }
            if batch.through > 0 {
                set_state(tx, "cursor", &batch.through.to_be_bytes())?;
            }
            Ok::<_, Error>(())
        })?;
        if batch.through > 0 {
            self.finish_reset().await?;
        }
        Ok(())
    }

    /// After the last batch of a reset: drop the server entries the reset did not carry.
    async fn finish_reset(&self) -> Result<()> {
        let db = &self.inner.db;
        let Some(from) = read_state(db, "reset")
            .await?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
        else {
            return Ok(());
        };
        for (start, end) in layout::shared_ranges() {
            let mut at = start;
            loop {
                let read = db
                    .snapshot_read(
                        &[ReadRange::new(at.clone(), end.clone(), 512)],
                        ReadAt::Latest,
                    )
                    .await?;
                let entries = read.ranges.into_iter().next().unwrap_or_default();
                let full = entries.len() == 512;
                let stale: Vec<Vec<u8>> = entries
                    .iter()
                    .filter(|e| e.versionstamp.version() <= from)
                    .map(|e| e.key.clone())
                    .collect();
                if let Some(last) = entries.last() {
                    at = last.key.clone();
                    at.push(0);
                }
                in_transaction!(db, |tx| {
                    for key in &stale {
                        if let Some(guard) = layout::dirty_guard(key) {
                            if tx.get(&guard).await?.is_some() {
                                continue;
                            }
                        }
                        // Only if not written since it was read.
                        let now = db.get(key).await?;
                        if now.is_some_and(|e| e.versionstamp.version() <= from) {
                            self.write_shared(tx, key, None).await?;
                        }
                    }
                    Ok::<_, Error>(())
                })?;
                if !full {
                    break;
                }
            }
        }
        in_transaction!(db, |tx| {
            tx.delete(&layout::replica_state("reset"))?;
            Ok::<_, Error>(())
        })
    }

    /// Write a server entry (`None`: delete it), keeping the replica's indexes of a record.
    async fn write_shared(
        &self,
        tx: &mut Transaction,
        key: &[u8],
        value: Option<&Vec<u8>>,
    ) -> Result<()> {
        let reindex = match layout::parse_any(key) {
            Some(layout::Parsed {
                tree,
                id,
                kind: layout::Kind::Record { revision },
            }) => self
                .inner
                .indexers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(tree)
                .map(|(_, r)| (r.clone(), id, revision)),
            _ => None,
        };
        let old = match &reindex {
            Some(_) => tx.get(key).await?.map(|v| v.data),
            None => None,
        };
        match value {
            Some(v) => set_shared(tx, key, v.clone())?,
            None => tx.delete(key)?,
        }
        if let Some((reindex, id, revision)) = reindex {
            reindex(tx, id, revision, old.as_deref(), value.map(Vec::as_slice))?;
        }
        Ok(())
    }

    /// Store the check-out record the server sent, and with it `records` (the record's
    /// revisions), in one transaction.
    async fn store_lease(&self, lease: Option<Entry>, mut records: Vec<Entry>) -> Result<()> {
        let Some(e) = lease.filter(|e| layout::is_shared(&e.key)) else {
            return Err(Error::Sync("the server sent no check-out record".into()));
        };
        records.push(e);
        self.apply(PullBatch {
            through: 0,
            reset: false,
            entries: records,
        })
        .await
    }
}

impl Upstream for Replica {
    fn check_out<'a>(
        &'a self,
        tree: &'a str,
        id: u64,
        lease_ms: u64,
        wait_ms: u64,
    ) -> BoxFuture<'a, Result<Lease>> {
        Box::pin(async move {
            let mut client = self.connect().await?;
            let reply = client
                .check_out(CheckOutRequest {
                    tree: tree.to_string(),
                    id,
                    lease_ms,
                    wait_ms,
                })
                .await
                .map_err(|s| self.failed(s))?
                .into_inner();
            // With the server's latest revisions: what the check-out's edits start from.
            self.store_lease(reply.lease, reply.records).await?;
            Ok(Lease {
                holder: reply.holder,
                until_ms: reply.until_ms,
            })
        })
    }

    fn check_in<'a>(&'a self, tree: &'a str, id: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut client = self.connect().await?;
            // What was changed under the check-out goes to the server while it is still
            // held; giving it back first would have the server refuse the changes.
            let mut pushed = SyncReport::default();
            {
                let _one = self.inner.syncing.lock().await;
                self.push(&mut client, &mut pushed).await?;
            }
            let reply = client
                .check_in(CheckInRequest {
                    tree: tree.to_string(),
                    id,
                })
                .await
                .map_err(|s| self.failed(s))?
                .into_inner();
            self.store_lease(reply.lease, Vec::new()).await?;
            // A refusal of this record's changes is the check-in's answer.
            match pushed.refused.into_iter().find(
                |e| matches!(e, Error::Refused { key, .. } if key.tree == tree && key.id == id),
            ) {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            }
        })
    }
}

/// Write a server entry: records with the typed encoding, the rest as bytes.
fn set_shared(tx: &mut Transaction, key: &[u8], value: Vec<u8>) -> Result<()> {
    let value = match layout::parse_any(key) {
        Some(layout::Parsed {
            kind: layout::Kind::Record { .. },
            ..
        }) => record_value(value),
        _ => Value::bytes(value),
    };
    tx.set(key, value)?;
    Ok(())
}

fn set_state(tx: &mut Transaction, name: &str, value: &[u8]) -> Result<()> {
    tx.set(&layout::replica_state(name), Value::bytes(value.to_vec()))?;
    Ok(())
}

async fn read_state(db: &Database, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(db
        .get(&layout::replica_state(name))
        .await?
        .map(|e| e.value.data))
}

async fn write_state(db: &Database, name: &str, value: &[u8]) -> Result<()> {
    in_transaction!(db, |tx| {
        set_state(tx, name, value)?;
        Ok::<_, Error>(())
    })
}

/// A server's refusal as a typed error.
fn from_status(s: Status) -> Error {
    let meta = |k: &str| {
        s.metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match s.code() {
        Code::FailedPrecondition => match (meta("x-strata-holder"), meta("x-strata-key")) {
            (Some(holder), Some(key)) => Error::CheckedOut {
                key: key.parse().unwrap_or(crate::RawKey {
                    tree: String::new(),
                    id: 0,
                    revision: 0,
                }),
                holder,
                until_ms: meta("x-strata-until-ms")
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0),
            },
            _ => Error::Sync(s.message().to_string()),
        },
        Code::Unauthenticated => Error::Sync(format!("the server refused: {}", s.message())),
        Code::Unavailable => Error::Sync(format!("server unreachable: {}", s.message())),
        _ => Error::Sync(format!("{}: {}", code_name(s.code()), s.message())),
    }
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::PermissionDenied => "refused",
        Code::InvalidArgument => "invalid request",
        Code::NotFound => "not found",
        Code::Aborted => "conflict",
        _ => "server error",
    }
}
