//! The sync server: a database's typed trees, served to replicas over gRPC.
//!
//! The server does not know the record types; it keeps the rules that need none. A record
//! a replica pushes is applied only when the replica's user holds its check-out here (or,
//! for a new record, when its id is one this server reserved for that user), a released
//! revision is never replaced, and a next revision needs the previous one released. Each
//! pushed record is applied or refused on its own, and a refusal carries the server's
//! value, which the replica takes back.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_engine::{Database, EngineError, ReadAt, Transaction, Value};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::proto::sync_server::{Sync, SyncServer};
use super::proto::{
    CheckInReply, CheckInRequest, CheckOutReply, CheckOutRequest, Entry, HelloReply, HelloRequest,
    PullBatch, PullRequest, PushReply, PushRequest, Refused, ReserveIdsReply, ReserveIdsRequest,
};
use crate::checkout::{self, read_lease};
use crate::layout::{self, Kind};
use crate::tree::{record_value, reserve_ids};
use crate::Error;

/// Most ids one reservation may ask for.
pub const MAX_RESERVATION: u64 = 1 << 20;
/// Most records one push may carry.
pub const MAX_PUSH: usize = 10_000;
/// Entries per pull batch at most.
const BATCH: usize = 256;
/// Bytes of keys and values per pull batch or push at most (each is applied in one
/// transaction, which may write 10 MiB by default).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// The longest check-out lease a replica may ask for (a week).
pub const MAX_LEASE_MS: u64 = 7 * 24 * 3600 * 1000;
/// The longest a replica may wait in line for a check-out (ten minutes).
pub const MAX_WAIT_MS: u64 = 600_000;
/// How long a replica may take to receive one batch before its pull is ended.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Who may sync: each token names its user.
#[derive(Clone, Default)]
pub struct Tokens(HashMap<String, String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("Tokens")
            .field("users", &self.0.values().collect::<Vec<_>>())
            .finish()
    }
}

impl Tokens {
    /// Tokens from `USER:TOKEN` specifications.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> std::result::Result<Self, String> {
        let mut map = HashMap::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (user, token) = spec
                .split_once(':')
                .ok_or_else(|| "a typed token is USER:TOKEN".to_string())?;
            if user.is_empty() || token.len() < 8 {
                return Err(format!(
                    "typed token for {user:?}: the user must be named and the token at least 8 characters"
                ));
            }
            if map.insert(token.to_string(), user.to_string()).is_some() {
                return Err(format!(
                    "two users share one typed token (the second is {user:?})"
                ));
            }
        }
        if map.is_empty() {
            return Err("typed sync needs at least one USER:TOKEN".into());
        }
        Ok(Tokens(map))
    }

    fn user(&self, token: &str) -> Option<&str> {
        self.0.get(token).map(String::as_str)
    }
}

/// The gRPC service over one database.
#[derive(Clone)]
pub struct SyncService {
    db: Database,
    tokens: Arc<Tokens>,
}

impl SyncService {
    pub fn new(db: Database, tokens: Tokens) -> Self {
        SyncService {
            db,
            tokens: Arc::new(tokens),
        }
    }

    /// The service, ready to add to a tonic server.
    pub fn into_server(self) -> SyncServer<Self> {
        SyncServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    fn user<T>(&self, req: &Request<T>) -> std::result::Result<String, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization is not Bearer <token>"))?;
        self.tokens
            .user(token)
            .map(str::to_string)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

/// Serve `db`'s typed trees on `addr` until `shutdown` completes.
pub async fn serve(
    db: Database,
    tokens: Tokens,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), String> {
    crate::events::ensure_feed(&db)
        .await
        .map_err(|e| e.to_string())?;
    // Small messages both ways: without TCP_NODELAY, delayed acknowledgements add tens of
    // milliseconds to some round trips.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            if let Ok(s) = &s {
                let _ = s.set_nodelay(true);
            }
            s
        },
    );
    tonic::transport::Server::builder()
        .add_service(SyncService::new(db, tokens).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("typed sync server: {e}"))
}

pub(crate) fn status(e: Error) -> Status {
    match &e {
        Error::Engine(EngineError::Conflict) => Status::aborted(e.to_string()),
        Error::Engine(EngineError::ShuttingDown) => Status::unavailable(e.to_string()),
        Error::Engine(EngineError::Backend(b)) if b.is_transient() => {
            Status::unavailable(e.to_string())
        }
        Error::Engine(EngineError::LimitExceeded { .. } | EngineError::InvalidRequest(_)) => {
            Status::invalid_argument(e.to_string())
        }
        Error::Engine(EngineError::ChangesTruncated { .. }) => Status::out_of_range(e.to_string()),
        Error::Engine(_) | Error::Corrupt { .. } | Error::Encode { .. } => {
            Status::internal(e.to_string())
        }
        Error::CheckedOut {
            key,
            holder,
            until_ms,
        } => {
            let mut s = Status::failed_precondition(e.to_string());
            let meta = s.metadata_mut();
            for (name, value) in [
                ("x-strata-key", key.to_string()),
                ("x-strata-holder", holder.clone()),
                ("x-strata-until-ms", until_ms.to_string()),
            ] {
                if let Ok(v) = value.parse() {
                    meta.insert(name, v);
                }
            }
            s
        }
        Error::NotCheckedOut { .. } => Status::permission_denied(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

fn check_tree(tree: &str) -> std::result::Result<(), Status> {
    if tree.is_empty() || tree.len() > 255 || tree.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{tree:?} is not a tree name (1 to 255 bytes, no NUL)"
        )));
    }
    Ok(())
}

/// Which ids a server reserved for whom.
#[derive(Debug, Serialize, Deserialize)]
struct Grant {
    user: String,
    end: u64,
}

type PullStream = Pin<Box<dyn Stream<Item = std::result::Result<PullBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Sync for SyncService {
    async fn hello(
        &self,
        req: Request<HelloRequest>,
    ) -> std::result::Result<Response<HelloReply>, Status> {
        let user = self.user(&req)?;
        let client = req.into_inner().client;
        tracing::info!(%user, %client, "typed replica connected");
        Ok(Response::new(HelloReply {
            server_id: self.db.id().to_string(),
            user,
            version: self.db.version(),
        }))
    }

    async fn reserve_ids(
        &self,
        req: Request<ReserveIdsRequest>,
    ) -> std::result::Result<Response<ReserveIdsReply>, Status> {
        let user = self.user(&req)?;
        let ReserveIdsRequest { tree, count } = req.into_inner();
        check_tree(&tree)?;
        if count == 0 || count > MAX_RESERVATION {
            return Err(Status::invalid_argument(format!(
                "reserve 1 to {MAX_RESERVATION} ids at a time, not {count}"
            )));
        }
        let db = &self.db;
        let start = async {
            in_transaction!(db, |tx| {
                let start = reserve_ids(tx, &tree, count).await?;
                let grant = Grant {
                    user: user.clone(),
                    end: start + count,
                };
                let bytes = serde_json::to_vec(&grant).map_err(|e| Error::Encode {
                    tree: "grant",
                    detail: e.to_string(),
                })?;
                tx.set(&layout::granted(&tree, start), Value::bytes(bytes))?;
                Ok::<_, Error>(start)
            })
        }
        .await
        .map_err(status)?;
        Ok(Response::new(ReserveIdsReply {
            start,
            end: start + count,
        }))
    }

    type PullStream = PullStream;

    async fn pull(
        &self,
        req: Request<PullRequest>,
    ) -> std::result::Result<Response<Self::PullStream>, Status> {
        self.user(&req)?;
        let PullRequest { after, follow } = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(e) = stream_changes(&db, after, follow, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn push(
        &self,
        req: Request<PushRequest>,
    ) -> std::result::Result<Response<PushReply>, Status> {
        let user = self.user(&req)?;
        let records = req.into_inner().records;
        if records.len() > MAX_PUSH {
            return Err(Status::invalid_argument(format!(
                "push at most {MAX_PUSH} records at a time, not {}",
                records.len()
            )));
        }
        let db = &self.db;
        let refused = async {
            in_transaction!(db, |tx| {
                let mut refused = Vec::new();
                // Schemas first: records written by a type whose schema is refused are
                // refused with it, since their bytes would not read as the stored one.
                let mut conflicting = std::collections::HashSet::new();
                let (schemas, rest): (Vec<&Entry>, Vec<&Entry>) = records
                    .iter()
                    .partition(|r| layout::parse_schema(&r.key).is_some());
                for r in schemas.into_iter().chain(rest) {
                    let reason = match layout::parse_schema(&r.key) {
                        Some((tree, version)) => {
                            let reason = apply_pushed(tx, &user, r).await?;
                            if reason.is_some() {
                                conflicting.insert((tree.to_string(), version));
                            }
                            reason
                        }
                        None => match of_refused_schema(r, &conflicting) {
                            Some(reason) => Some(reason),
                            None => apply_pushed(tx, &user, r).await?,
                        },
                    };
                    if let Some(reason) = reason {
                        let current = tx.get(&r.key).await?;
                        refused.push(Refused {
                            key: r.key.clone(),
                            reason,
                            exists: current.is_some(),
                            current: current.map(|v| v.data).unwrap_or_default(),
                        });
                    }
                }
                Ok::<_, Error>(refused)
            })
        }
        .await
        .map_err(status)?;
        Ok(Response::new(PushReply {
            version: self.db.version(),
            refused,
        }))
    }

    async fn check_out(
        &self,
        req: Request<CheckOutRequest>,
    ) -> std::result::Result<Response<CheckOutReply>, Status> {
        let user = self.user(&req)?;
        let CheckOutRequest {
            tree,
            id,
            lease_ms,
            wait_ms,
        } = req.into_inner();
        check_tree(&tree)?;
        if lease_ms == 0 || lease_ms > MAX_LEASE_MS || wait_ms > MAX_WAIT_MS {
            return Err(Status::invalid_argument(format!(
                "a check-out lease is 1 to {MAX_LEASE_MS} ms, and a wait at most {MAX_WAIT_MS} ms"
            )));
        }
        let clock = |_: ()| strata_engine::now_ms();
        // A replica that goes away while waiting leaves the queue, rather than holding its
        // place (and the record) until its wait runs out.
        let mut leave = LeaveQueue {
            db: self.db.clone(),
            tree: tree.clone(),
            id,
            user: user.clone(),
            armed: wait_ms > 0,
        };
        let lease = checkout::check_out(&self.db, &tree, id, &user, lease_ms, wait_ms, &clock)
            .await
            .map_err(status)?;
        leave.armed = false;
        let (entry, version, records) = lease_entry(&self.db, &tree, id, true)
            .await
            .map_err(status)?;
        Ok(Response::new(CheckOutReply {
            holder: lease.holder,
            until_ms: lease.until_ms,
            lease: Some(entry),
            version,
            records,
        }))
    }

    async fn check_in(
        &self,
        req: Request<CheckInRequest>,
    ) -> std::result::Result<Response<CheckInReply>, Status> {
        let user = self.user(&req)?;
        let CheckInRequest { tree, id } = req.into_inner();
        check_tree(&tree)?;
        checkout::check_in(&self.db, &tree, id, &user, strata_engine::now_ms())
            .await
            .map_err(status)?;
        let (entry, version, _) = lease_entry(&self.db, &tree, id, false)
            .await
            .map_err(status)?;
        Ok(Response::new(CheckInReply {
            lease: Some(entry),
            version,
        }))
    }
}

/// The check-out record of `id` as stored now, the version it was read at, and (with
/// `records`) every revision of the record and its creation markers at that version.
async fn lease_entry(
    db: &Database,
    tree: &str,
    id: u64,
    records: bool,
) -> crate::Result<(Entry, u64, Vec<Entry>)> {
    let key = layout::lease(tree, id);
    let mut tx = db.begin().await?;
    let value = tx.get(&key).await?;
    let mut revisions = Vec::new();
    if records {
        for (start, end) in [layout::revisions(tree, id), layout::creations(tree, id)] {
            for (key, v) in tx.scan(&start, &end, false, usize::MAX).await? {
                revisions.push(Entry {
                    key,
                    value: v.data,
                    deleted: false,
                });
            }
        }
    }
    Ok((
        Entry {
            key,
            deleted: value.is_none(),
            value: value.map(|v| v.data).unwrap_or_default(),
        },
        tx.read_version(),
        revisions,
    ))
}

/// Takes a waiter that went away out of a check-out's queue.
struct LeaveQueue {
    db: Database,
    tree: String,
    id: u64,
    user: String,
    armed: bool,
}

impl Drop for LeaveQueue {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (db, tree, id, user) = (
            self.db.clone(),
            std::mem::take(&mut self.tree),
            self.id,
            std::mem::take(&mut self.user),
        );
        tokio::spawn(async move {
            if let Err(e) = checkout::leave_queue(&db, &tree, id, &user).await {
                tracing::warn!(%tree, id, %user, error = %e, "could not take a waiter out of a queue");
            }
        });
    }
}

/// Why a pushed record is refused along with its schema, if it is.
fn of_refused_schema(
    r: &Entry,
    conflicting: &std::collections::HashSet<(String, u32)>,
) -> Option<String> {
    let tree = layout::parse_any(&r.key)?.tree;
    let (header, _) = layout::open(&r.value).ok()?;
    conflicting
        .contains(&(tree.to_string(), header.schema_version))
        .then(|| {
            format!(
                "written by a type whose schema differs from the one stored for version {}",
                header.schema_version
            )
        })
}

/// Store a pushed schema unless one is stored for that version already (then it must be
/// the same), or say why not.
async fn apply_schema(
    tx: &mut Transaction,
    tree: &str,
    version: u32,
    r: &Entry,
) -> crate::Result<Option<String>> {
    if r.deleted {
        return Ok(Some("schemas are never removed".into()));
    }
    if let Err(e) = crate::Schema::from_json(&r.value) {
        return Ok(Some(e));
    }
    match tx.get(&r.key).await? {
        Some(cur) if cur.data == r.value => Ok(None),
        Some(_) => Ok(Some(format!(
            "tree {tree:?} has a different schema at version {version}: the record type changed without a new schema version"
        ))),
        None => {
            tx.set(&r.key, strata_engine::Value::bytes(r.value.clone()))?;
            Ok(None)
        }
    }
}

/// Apply one pushed record for `user`, or say why not.
async fn apply_pushed(
    tx: &mut Transaction,
    user: &str,
    r: &Entry,
) -> crate::Result<Option<String>> {
    if let Some((tree, version)) = layout::parse_schema(&r.key) {
        return apply_schema(tx, tree, version, r).await;
    }
    let Some(parsed) = layout::parse_any(&r.key) else {
        return Ok(Some("not a record key".into()));
    };
    let Kind::Record { revision } = parsed.kind else {
        return Ok(Some(
            "check-outs change only through check-out and check-in".into(),
        ));
    };
    let (tree, id) = (parsed.tree, parsed.id);
    if !r.deleted {
        let (header, archive) = match layout::open(&r.value) {
            Ok(opened) => opened,
            Err(e) => return Ok(Some(format!("not a record: {e}"))),
        };
        // Where the type's schema is known here, the record must read as it.
        let version = header.schema_version;
        if let Some(schema) = tx.get(&layout::schema(parsed.tree, version)).await? {
            if let Ok(schema) = crate::Schema::from_json(&schema.data) {
                if let Err(e) = crate::json::View::new(&schema, archive).to_value() {
                    return Ok(Some(format!(
                        "it does not read as the schema stored for version {version}: {e}"
                    )));
                }
            }
        }
    }
    let now = strata_engine::now_ms();
    let holds = |rec: &checkout::LeaseRecord| rec.held_by(now) == Some(user);
    let current = tx.get(&r.key).await?;
    match &current {
        // Already so (a push sent again after its answer was lost).
        Some(cur) if !r.deleted && cur.data == r.value => return Ok(None),
        Some(cur) => {
            if !holds(&read_lease(tx, tree, id).await?) {
                return Ok(Some(format!("not checked out by {user:?}")));
            }
            if layout::is_released(&cur.data) {
                return Ok(Some("the revision is released".into()));
            }
        }
        None if r.deleted => return Ok(None),
        None if revision >= 2 => {
            // The next revision of a released one.
            let prev = tx.get(&layout::record(tree, id, revision - 1)).await?;
            if !prev.is_some_and(|p| layout::is_released(&p.data)) {
                return Ok(Some(format!(
                    "revision {} is not released, so revision {revision} cannot be drafted",
                    revision - 1
                )));
            }
            if !holds(&read_lease(tx, tree, id).await?) {
                return Ok(Some(format!("not checked out by {user:?}")));
            }
        }
        None => {
            // A new record: its id must be one reserved for this user, and nobody else may
            // hold it (the holder may have removed it).
            let lease = read_lease(tx, tree, id).await?;
            if lease.held_by(now).is_some_and(|h| h != user) {
                return Ok(Some(format!("record {id} is checked out by someone else")));
            }
            let (start, end) = layout::granted_through(tree, id);
            let grant = tx.scan(&start, &end, true, 1).await?;
            let mine = grant.first().and_then(|(k, v)| {
                let g: Grant = serde_json::from_slice(&v.data).ok()?;
                let from = u64::from_be_bytes(k.get(k.len().checked_sub(8)?..)?.try_into().ok()?);
                (from <= id && id < g.end && g.user == user).then_some(())
            });
            if mine.is_none() {
                return Ok(Some(format!(
                    "id {id} of tree {tree:?} was not reserved for {user:?}"
                )));
            }
        }
    }
    let created = layout::created(tree, id, revision);
    if r.deleted {
        tx.delete(&r.key)?;
        tx.delete(&created)?;
    } else {
        tx.set(&r.key, record_value(r.value.clone()))?;
        if current.is_none() {
            tx.set(&created, Value::bytes(Vec::new()))?;
        }
    }
    Ok(None)
}

/// Batches of entries for a replica, each within [`BATCH`] entries and
/// [`MAX_BATCH_BYTES`]; every batch but a step's last has `through` 0.
struct Sender<'a> {
    out: &'a mpsc::Sender<std::result::Result<PullBatch, Status>>,
    entries: Vec<Entry>,
    bytes: usize,
    reset: bool,
}

impl<'a> Sender<'a> {
    fn new(out: &'a mpsc::Sender<std::result::Result<PullBatch, Status>>) -> Self {
        Sender {
            out,
            entries: Vec::new(),
            bytes: 0,
            reset: false,
        }
    }

    async fn push(&mut self, e: Entry) -> std::result::Result<(), Status> {
        let size = e.key.len() + e.value.len() + 16;
        if !self.entries.is_empty()
            && (self.entries.len() == BATCH || self.bytes + size > MAX_BATCH_BYTES)
        {
            self.flush(0).await?;
        }
        self.bytes += size;
        self.entries.push(e);
        Ok(())
    }

    /// Send what is gathered (even nothing, when `through` ends a step).
    async fn flush(&mut self, through: u64) -> std::result::Result<(), Status> {
        let batch = PullBatch {
            through,
            reset: std::mem::take(&mut self.reset),
            entries: std::mem::take(&mut self.entries),
        };
        self.bytes = 0;
        match tokio::time::timeout(SEND_TIMEOUT, self.out.send(Ok(batch))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Status::cancelled("the replica went away")),
            Err(_) => Err(Status::deadline_exceeded(
                "the replica did not take a batch within a minute",
            )),
        }
    }
}

/// Send the shared keys changed after `after` (everything, when the feed no longer reaches
/// back that far), then, when `follow`, every later change as it commits.
async fn stream_changes(
    db: &Database,
    after: u64,
    follow: bool,
    out: &mpsc::Sender<std::result::Result<PullBatch, Status>>,
) -> std::result::Result<(), Status> {
    let reachable = |at: u64| {
        at > 0 && at <= db.version() && db.oldest_change_cursor().is_some_and(|o| at >= o)
    };
    let mut send = Sender::new(out);
    let mut at = after;
    if !reachable(at) {
        at = snapshot(db, &mut send).await?;
    }
    let mut sent = at;
    loop {
        let page = match db.changes(at, BATCH).await {
            Ok(page) => page,
            Err(EngineError::ChangesTruncated { .. }) => {
                at = snapshot(db, &mut send).await?;
                sent = at;
                continue;
            }
            Err(e) => return Err(status(e.into())),
        };
        let mut keys: Vec<Vec<u8>> = page
            .changes
            .into_iter()
            .map(|c| c.key)
            .filter(|k| layout::is_shared(k))
            .collect();
        keys.sort();
        keys.dedup();
        let caught_up = page.through == at;
        if !keys.is_empty() || (caught_up && sent < page.through) {
            // The changed keys as of the page's end: one consistent state.
            for chunk in keys.chunks(BATCH) {
                let values = db
                    .get_many(chunk, ReadAt::Version(page.through))
                    .await
                    .map_err(|e| status(e.into()))?;
                for (key, v) in chunk.iter().zip(values) {
                    send.push(Entry {
                        key: key.clone(),
                        deleted: v.is_none(),
                        value: v.map(|e| e.value.data).unwrap_or_default(),
                    })
                    .await?;
                }
            }
            send.flush(page.through).await?;
            sent = page.through;
        }
        at = page.through;
        if caught_up {
            if !follow {
                return Ok(());
            }
            tokio::select! {
                r = db.wait_for_version(at + 1) => r.map_err(|e| status(e.into()))?,
                _ = out.closed() => return Ok(()),
            }
        }
    }
}

/// Send every shared key as of one version, marked as the whole state; that version.
async fn snapshot(db: &Database, send: &mut Sender<'_>) -> std::result::Result<u64, Status> {
    let fail = |e: EngineError| status(e.into());
    let mut tx = db.begin().await.map_err(fail)?;
    let version = tx.read_version();
    send.reset = true;
    for (start, end) in layout::shared_ranges() {
        let mut from = start;
        loop {
            let rows = tx.scan(&from, &end, false, BATCH).await.map_err(fail)?;
            let full = rows.len() == BATCH;
            for (key, v) in rows {
                from = key.clone();
                from.push(0);
                send.push(Entry {
                    key,
                    value: v.data,
                    deleted: false,
                })
                .await?;
            }
            if !full {
                break;
            }
        }
    }
    send.flush(version).await?;
    Ok(version)
}
