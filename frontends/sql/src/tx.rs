//! A SQL transaction on one database: the engine transaction, the catalog as this
//! transaction sees it, and the statement savepoint.
//!
//! Reads go through [`Source`]: either the transaction (its snapshot plus its own writes,
//! with every read recorded for the commit's conflict check) or a fixed older version of
//! the database (`AS OF`), which is read-only by construction.

use std::collections::HashMap;
use std::sync::Arc;

use strata_engine::{Database, ReadAt, ReadRange, Transaction, Value, Versionstamp};
use tokio::sync::Mutex;

use crate::catalog::{TableDef, ViewDef};
use crate::codec::Key;
use crate::error::{Result, SqlError};

/// How many entries one scan step reads.
pub const SCAN_CHUNK: usize = 1024;

pub struct Tx {
    txn: Transaction,
    read_only: bool,
    tables: Tables,
    schema_version: Option<u64>,
    /// Definitions decoded by earlier transactions, and this database's name in it.
    /// The session's definitions cache, and this database's id (a database dropped and made
    /// again under its name starts its schema versions anew, so its name would not do).
    shared: Option<(Arc<CatalogCache>, String)>,
    /// This transaction changed the catalog: its definitions are its own, not the version's.
    catalog_written: bool,
    /// The transaction may check at commit what it would otherwise read (see
    /// [`Tx::deferring`]).
    deferring: bool,
    /// The versionstamp of the schema version it assumed instead of reading it, if it did.
    schema_assumed: Option<Option<Versionstamp>>,
    /// How many keys it took as free instead of reading them.
    deferred_keys: usize,
    /// Rows added (or removed, negative) per table id, added to their row counts at
    /// commit; and the same as of the statement savepoint.
    row_delta: HashMap<u64, i64>,
    saved_delta: HashMap<u64, i64>,
}

/// Table definitions as of a schema version, shared by a session's transactions: every
/// catalog change bumps the version, so a transaction that read version `v` (a read that is
/// in its conflict set) can take a definition decoded at `v` instead of reading and decoding
/// the definition again. Entries are kept per database *id*: a database made again under a
/// dropped one's name counts its versions from the start again.
///
/// It also remembers, per database, the schema version read at the newest snapshot: a
/// committed version's state never changes, so a transaction at the same read version (a
/// run of reads with no write in between) takes it without reading it from the store again,
/// and a deferring one takes it whatever its read version, checking it at commit.
#[derive(Default)]
pub struct CatalogCache {
    by_db: std::sync::Mutex<HashMap<String, (u64, Tables)>>,
    /// Per database id: the newest snapshot's schema version.
    schema_at: std::sync::Mutex<HashMap<String, SchemaAt>>,
}

/// The schema version a snapshot read, and the versionstamp of the commit that wrote it.
#[derive(Clone, Copy)]
struct SchemaAt {
    read_version: u64,
    schema: u64,
    written: Option<Versionstamp>,
}

/// Definitions by table name; `None`: no such table.
type Tables = HashMap<String, Option<Arc<TableDef>>>;

impl CatalogCache {
    /// The schema version of the newest snapshot read, whatever its version.
    fn newest_schema(&self, db: &str) -> Option<SchemaAt> {
        let at = self.schema_at.lock().unwrap_or_else(|p| p.into_inner());
        at.get(db).copied()
    }

    fn put_schema_at(&self, db: &str, known: SchemaAt) {
        let mut at = self.schema_at.lock().unwrap_or_else(|p| p.into_inner());
        match at.get_mut(db) {
            // Only the newest snapshot is worth keeping.
            Some(held) if held.read_version >= known.read_version => {}
            Some(held) => *held = known,
            None => {
                at.insert(db.to_string(), known);
            }
        }
    }

    fn get(&self, db: &str, version: u64, name: &str) -> Option<Option<Arc<TableDef>>> {
        let by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        match by_db.get(db) {
            Some((v, tables)) if *v == version => tables.get(name).cloned(),
            _ => None,
        }
    }

    fn put(&self, db: &str, version: u64, name: &str, def: Option<Arc<TableDef>>) {
        let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        let entry = by_db
            .entry(db.to_string())
            .or_insert_with(|| (version, HashMap::new()));
        if entry.0 != version {
            // Only the newest version is worth keeping.
            if entry.0 > version {
                return;
            }
            *entry = (version, HashMap::new());
        }
        entry.1.insert(name.to_string(), def);
    }
}

impl Tx {
    pub async fn begin(db: Database, read_only: bool) -> Result<Tx> {
        let txn = db.begin().await?;
        Ok(Tx {
            txn,
            read_only,
            tables: HashMap::new(),
            schema_version: None,
            shared: None,
            catalog_written: false,
            deferring: false,
            schema_assumed: None,
            deferred_keys: 0,
            row_delta: HashMap::new(),
            saved_delta: HashMap::new(),
        })
    }

    /// Share decoded table definitions through `cache` (`db` names this database in it).
    pub fn with_catalog_cache(mut self, cache: Arc<CatalogCache>) -> Tx {
        let id = self.database_id().to_string();
        self.shared = Some((cache, id));
        self
    }

    /// Let this transaction check at commit what it would otherwise read first: the schema
    /// version (the one the session last read, checked unchanged) and, through
    /// [`Tx::row_exists`], that a row it creates did not exist. Each saves a read of the
    /// store; the price is that a statement run on a stale assumption fails at commit
    /// (or with an error caused by the stale schema) and must run again without deferring.
    /// Only for a statement that is its own transaction, which the session can run again
    /// (see [`Tx::deferred`]).
    pub fn deferring(mut self, on: bool) -> Tx {
        self.deferring = on;
        self
    }

    /// Whether this transaction deferred a read to a commit-time check: its outcome, if an
    /// error, may come from a stale assumption.
    pub fn deferred(&self) -> bool {
        self.schema_assumed.is_some() || self.deferred_keys > 0
    }

    /// Whether a row is stored under `key`. With `may_defer`, a deferring transaction
    /// that has not written the key takes it as absent and checks that at commit.
    pub async fn row_exists(&mut self, key: &[u8], may_defer: bool) -> Result<bool> {
        if may_defer && self.deferring {
            match self.txn.own_write(key) {
                Some(own) => return Ok(own.is_some()),
                None => {
                    self.txn.check(key, None)?;
                    self.deferred_keys += 1;
                    return Ok(false);
                }
            }
        }
        Ok(self.get(key).await?.is_some())
    }

    /// The id of the database this transaction reads, fixed when it was created: with the
    /// schema version, it names one catalog (see [`CatalogCache`]).
    pub fn database_id(&self) -> &str {
        self.txn.database().id()
    }

    pub fn has_writes(&self) -> bool {
        self.txn.has_writes()
    }

    /// The database this transaction reads and writes.
    pub fn database(&self) -> &Database {
        self.txn.database()
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.txn.get(key).await?.map(|v| v.data))
    }

    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .txn
            .scan(start, end, reverse, limit)
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.data))
            .collect())
    }

    /// Show `visitor` the entries of `[start, end)` as this transaction sees them, lent
    /// rather than copied ([`Transaction::scan_each`]).
    pub async fn scan_each(
        &mut self,
        start: &[u8],
        end: &[u8],
        visitor: &mut dyn strata_engine::Visitor,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.txn.scan_each(start, end, visitor).await?)
    }

    /// A reader of this transaction's snapshot over `[start, end)` that runs without the
    /// transaction's lock, or `None` if the transaction wrote there
    /// ([`Transaction::snapshot_reader`]). Record what it read with [`Tx::note_read`].
    pub fn snapshot_reader(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<strata_engine::SnapshotReader>> {
        Ok(self.txn.snapshot_reader(start, end)?)
    }

    /// Record a range a [`Tx::snapshot_reader`] read, for the commit's conflict check.
    pub async fn note_read(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        Ok(self.txn.note_read(start, end).await?)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(SqlError::InvalidTransactionState(
                "cannot write in a read-only transaction".into(),
            ));
        }
        Ok(())
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.writable()?;
        self.txn.set(key, Value::bytes(value))?;
        Ok(())
    }

    /// [`Tx::put`] of a value of any encoding.
    pub fn put_value(&mut self, key: &[u8], value: Value) -> Result<()> {
        self.writable()?;
        self.txn.set(key, value)?;
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.writable()?;
        self.txn.delete(key)?;
        Ok(())
    }

    pub fn savepoint(&mut self) {
        self.txn.savepoint();
        self.saved_delta.clone_from(&self.row_delta);
    }

    /// Undo the failed statement's writes, and forget catalog entries it may have cached.
    pub fn rollback_statement(&mut self) {
        self.txn.rollback_to_savepoint();
        self.row_delta.clone_from(&self.saved_delta);
        self.tables.clear();
        self.schema_version = None;
    }

    /// Count `n` rows added to table `table` (negative: removed).
    pub fn count_rows(&mut self, table: u64, n: i64) {
        *self.row_delta.entry(table).or_default() += n;
    }

    /// Commit, with the row counts' changes; returns the commit version (`None`: nothing
    /// was written).
    pub async fn commit(mut self) -> Result<Option<u64>> {
        if self.deferred() && !self.txn.has_writes() {
            // Checks guard writes, so none would be made. A statement that only assumed
            // the schema version confirms it by reading it now, at the snapshot its rows
            // were read at, as it would have at its start. Anything else it assumed is
            // never confirmed: the caller runs it again, reading instead.
            let confirmed = match self.schema_assumed {
                Some(assumed) if self.deferred_keys == 0 => {
                    let key = Key::SchemaVersion.encode();
                    let found = self.txn.get_versioned(&key).await?;
                    found.and_then(|(_, written)| written) == assumed
                }
                _ => false,
            };
            if !confirmed {
                return Err(SqlError::Serialization(
                    "a statement that deferred its reads to commit wrote nothing; run it again"
                        .into(),
                ));
            }
        }
        if self.txn.has_writes() {
            // Every table whose rows changed, even with its count unchanged (an UPDATE):
            // the counter's versionstamp tells column copies that the rows changed.
            for (table, n) in std::mem::take(&mut self.row_delta) {
                crate::stats::add_rows(&mut self.txn, table, n)?;
            }
        }
        Ok(self.txn.commit().await?.map(|vs| vs.version()))
    }

    /// The engine transaction underneath.
    pub fn engine_txn(&mut self) -> &mut Transaction {
        &mut self.txn
    }

    /// A table's definition as this transaction sees it.
    pub async fn table(&mut self, name: &str) -> Result<Option<Arc<TableDef>>> {
        if let Some(t) = self.tables.get(name) {
            return Ok(t.clone());
        }
        let shared = match (&self.shared, self.catalog_written) {
            (Some((cache, db)), false) => Some((cache.clone(), db.clone())),
            _ => None,
        };
        let version = match &shared {
            Some(_) => Some(self.schema_version().await?),
            None => None,
        };
        if let (Some((cache, db)), Some(v)) = (&shared, version) {
            if let Some(def) = cache.get(db, v, name) {
                self.tables.insert(name.to_string(), def.clone());
                return Ok(def);
            }
        }
        let def = match self.get(&Key::Table(name).encode()).await? {
            Some(bytes) => Some(Arc::new(parse_json::<TableDef>(&bytes, name)?)),
            None => None,
        };
        if let (Some((cache, db)), Some(v)) = (&shared, version) {
            cache.put(db, v, name, def.clone());
        }
        self.tables.insert(name.to_string(), def.clone());
        Ok(def)
    }

    pub async fn view(&mut self, name: &str) -> Result<Option<ViewDef>> {
        match self.get(&Key::View(name).encode()).await? {
            Some(bytes) => Ok(Some(parse_json::<ViewDef>(&bytes, name)?)),
            None => Ok(None),
        }
    }

    /// Store a table's definition and bump the schema version.
    pub async fn put_table(&mut self, def: TableDef) -> Result<()> {
        let bytes = serde_json::to_vec(&def).map_err(|e| SqlError::Internal(e.to_string()))?;
        self.put(&Key::Table(&def.name).encode(), bytes)?;
        self.tables.insert(def.name.clone(), Some(Arc::new(def)));
        self.bump_schema_version().await
    }

    pub async fn remove_table(&mut self, name: &str) -> Result<()> {
        self.delete(&Key::Table(name).encode())?;
        self.tables.insert(name.to_string(), None);
        self.bump_schema_version().await
    }

    pub async fn put_view(&mut self, def: &ViewDef) -> Result<()> {
        let bytes = serde_json::to_vec(def).map_err(|e| SqlError::Internal(e.to_string()))?;
        self.put(&Key::View(&def.name).encode(), bytes)?;
        self.bump_schema_version().await
    }

    pub async fn remove_view(&mut self, name: &str) -> Result<()> {
        self.delete(&Key::View(name).encode())?;
        self.bump_schema_version().await
    }

    /// Names of every table, in order.
    pub async fn table_names(&mut self) -> Result<Vec<String>> {
        names_of(self, Key::Table("")).await
    }

    /// The session's cache and this database's id in it, while this transaction's catalog
    /// is the snapshot's (it made no catalog change).
    fn shared_catalog(&self) -> Option<(&CatalogCache, &str)> {
        match &self.shared {
            Some((cache, db)) if !self.catalog_written => Some((cache, db)),
            _ => None,
        }
    }

    pub async fn schema_version(&mut self) -> Result<u64> {
        if let Some(v) = self.schema_version {
            return Ok(v);
        }
        let key = Key::SchemaVersion.encode();
        let read_version = self.txn.read_version();
        // Only a catalog change writes the version, and it sets `schema_version` as it
        // does: with none made, the version is the snapshot's, which the session may know.
        let newest = self
            .shared_catalog()
            .and_then(|(cache, db)| cache.newest_schema(db));
        let v = match newest {
            Some(known) if known.read_version == read_version => {
                // Still a read of this transaction: a concurrent catalog change conflicts.
                let mut end = key.clone();
                end.push(0);
                self.note_read(&key, &end).await?;
                known.schema
            }
            Some(newest) if self.deferring => {
                // The schema the session last saw, required unchanged when the commit lands.
                self.txn.check(&key, newest.written)?;
                self.schema_assumed = Some(newest.written);
                newest.schema
            }
            _ => {
                let (v, written) = match self.txn.get_versioned(&key).await? {
                    Some((b, written)) => (decode_u64(&b.data)?, written),
                    None => (0, None),
                };
                // (Only a catalog change writes the version, and then the cache is not
                // this transaction's to fill: what it read here is a snapshot's.)
                if let Some((cache, db)) = self.shared_catalog() {
                    cache.put_schema_at(
                        db,
                        SchemaAt {
                            read_version,
                            schema: v,
                            written,
                        },
                    );
                }
                v
            }
        };
        self.schema_version = Some(v);
        Ok(v)
    }

    async fn bump_schema_version(&mut self) -> Result<()> {
        self.catalog_written = true;
        let v = self.schema_version().await? + 1;
        self.put(&Key::SchemaVersion.encode(), v.to_be_bytes().to_vec())?;
        self.schema_version = Some(v);
        Ok(())
    }

    /// A fresh id for a table or index.
    pub async fn next_object_id(&mut self) -> Result<u64> {
        let key = Key::NextObjectId.encode();
        let id = match self.get(&key).await? {
            Some(b) => decode_u64(&b)?,
            None => 1,
        };
        self.put(&key, (id + 1).to_be_bytes().to_vec())?;
        Ok(id)
    }
}

/// Where a chunked scan goes on: just after the last key of a full chunk of
/// [`SCAN_CHUNK`] entries; `None` once a chunk came back short (the range is done).
pub fn resume_after<V>(chunk: &[(Vec<u8>, V)]) -> Option<Vec<u8>> {
    match chunk.last() {
        Some((k, _)) if chunk.len() == SCAN_CHUNK => {
            let mut next = k.clone();
            next.push(0);
            Some(next)
        }
        _ => None,
    }
}

pub fn decode_u64(b: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| SqlError::Internal("corrupt counter in the SQL catalog".into()))?;
    Ok(u64::from_be_bytes(arr))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| SqlError::Internal(format!("corrupt catalog entry {name:?}: {e}")))
}

/// The key range holding every catalog entry of `empty`'s kind (`Key::Table("")`: tables):
/// the kind prefix is everything before the empty name's text tag.
fn names_range(empty: Key<'_>) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = empty.encode();
    prefix.truncate(prefix.len() - 2);
    let end = strata_engine::prefix_end(&prefix);
    (prefix, end)
}

/// Reads a key range a chunk at a time: a transaction, or a source.
trait ChunkScan {
    async fn chunk(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

impl ChunkScan for Tx {
    async fn chunk(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(start, end, false, SCAN_CHUNK).await
    }
}

impl ChunkScan for &Source {
    async fn chunk(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(start, end, false, SCAN_CHUNK).await
    }
}

/// The names of the catalog entries of `empty`'s kind, in order.
async fn names_of(scan: &mut impl ChunkScan, empty: Key<'_>) -> Result<Vec<String>> {
    let (prefix, end) = names_range(empty);
    let mut out = Vec::new();
    let mut start = prefix.clone();
    loop {
        let chunk = scan.chunk(&start, &end).await?;
        for (k, _) in &chunk {
            let mut rest = &k[prefix.len()..];
            if let crate::Datum::Text(name) = crate::codec::decode_one(&mut rest)? {
                out.push(name);
            }
        }
        match resume_after(&chunk) {
            Some(next) => start = next,
            None => return Ok(out),
        }
    }
}

/// Where a statement reads a database from.
#[derive(Clone)]
pub enum Source {
    /// The open transaction: its snapshot and its own writes.
    Txn(Arc<Mutex<Tx>>),
    /// A committed version inside the retention window (`AS OF`).
    Version(Database, u64),
}

impl Source {
    /// Up to `limit` entries of `[start, end)`.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self {
            Source::Txn(tx) => tx.lock().await.scan(start, end, reverse, limit).await,
            Source::Version(db, v) => {
                // One snapshot read returns at most the database's entries-per-read limit.
                let step = db.options().limits.max_read_entries.max(1);
                let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
                let mut out = Vec::new();
                while out.len() < limit {
                    let want = (limit - out.len()).min(step);
                    let mut range = ReadRange::new(lo.clone(), hi.clone(), want);
                    range.reverse = reverse;
                    let read = db.snapshot_read(&[range], ReadAt::Version(*v)).await?;
                    let entries: Vec<_> = read.ranges.into_iter().flatten().collect();
                    let n = entries.len();
                    if let Some(last) = entries.last() {
                        if reverse {
                            hi = last.key.clone();
                        } else {
                            lo = last.key.clone();
                            lo.push(0);
                        }
                    }
                    out.extend(entries.into_iter().map(|e| (e.key, e.value.data)));
                    if n < want {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Source::Txn(tx) => tx.lock().await.get(key).await,
            Source::Version(db, v) => {
                let got = db.get_many(&[key.to_vec()], ReadAt::Version(*v)).await?;
                Ok(got.into_iter().flatten().next().map(|e| e.value.data))
            }
        }
    }

    pub async fn table(&self, name: &str) -> Result<Option<Arc<TableDef>>> {
        match self {
            Source::Txn(tx) => tx.lock().await.table(name).await,
            Source::Version(..) => match self.get(&Key::Table(name).encode()).await? {
                Some(bytes) => Ok(Some(Arc::new(parse_json::<TableDef>(&bytes, name)?))),
                None => Ok(None),
            },
        }
    }

    /// Names of every table (`Key::Table("")`) or view (`Key::View("")`), in order.
    pub async fn names(&self, kind: Key<'_>) -> Result<Vec<String>> {
        names_of(&mut &*self, kind).await
    }

    /// The schema version this source reads.
    pub async fn schema_version(&self) -> Result<u64> {
        match self {
            Source::Txn(tx) => tx.lock().await.schema_version().await,
            Source::Version(..) => match self.get(&Key::SchemaVersion.encode()).await? {
                Some(b) => decode_u64(&b),
                None => Ok(0),
            },
        }
    }

    pub async fn view(&self, name: &str) -> Result<Option<ViewDef>> {
        match self {
            Source::Txn(tx) => tx.lock().await.view(name).await,
            Source::Version(..) => match self.get(&Key::View(name).encode()).await? {
                Some(bytes) => Ok(Some(parse_json::<ViewDef>(&bytes, name)?)),
                None => Ok(None),
            },
        }
    }
}
