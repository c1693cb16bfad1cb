//! [`Tree<T>`]: the records of one type.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strata_engine::{Database, Encoding, Transaction, Value, Versionstamp};

use crate::checkout::ensure_held;
use crate::index::{self, Indexer};
use crate::layout::{self, Header, RELEASED};
use crate::upstream::{take_granted_id, Upstream};
use crate::{Error, Key, Lease, Record, Result};

/// Keeps one tree's indexes for a record written by other means: `(tx, id, revision, old
/// bytes, new bytes)`.
pub(crate) type Reindexer = Arc<
    dyn Fn(&mut Transaction, u64, u32, Option<&[u8]>, Option<&[u8]>) -> Result<()> + Send + Sync,
>;

/// The value encoding of typed records.
pub(crate) const ENCODING: Encoding = Encoding::Custom(0x20);

/// How often a write is tried again after losing a conflict to a concurrent one.
pub(crate) const RETRIES: usize = 32;

/// Records rewritten per transaction by [`Tree::migrate`].
pub const MIGRATE_CHUNK: usize = 256;

/// Ids a tree handle reserves at a time (see [`Tree::insert`]).
const ID_BLOCK: u64 = 32;

/// The records of type `T` in one database.
///
/// A handle and its clones share a block of reserved ids, so inserts through it do not
/// contend on the tree's id counter: only reserving the next block does.
pub struct Tree<T> {
    db: Database,
    /// Reserved ids not yet used: `[next, end)`.
    ids: Arc<Mutex<(u64, u64)>>,
    /// Who changes records through this handle (check-outs are theirs).
    user: Option<Arc<str>>,
    /// Milliseconds since the epoch, for leases.
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Kept on every write through this handle.
    indexers: Arc<Vec<Arc<dyn Indexer<T>>>>,
    /// On a replica: its server (check-outs, and ids from its reservations).
    upstream: Option<Arc<dyn Upstream>>,
    /// Whether `T`'s schema is known to be stored (see [`crate::schema`]).
    schema_stored: Arc<AtomicBool>,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Tree<T> {
    fn clone(&self) -> Self {
        Tree {
            db: self.db.clone(),
            ids: self.ids.clone(),
            user: self.user.clone(),
            clock: self.clock.clone(),
            indexers: self.indexers.clone(),
            upstream: self.upstream.clone(),
            schema_stored: self.schema_stored.clone(),
            kind: PhantomData,
        }
    }
}

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionState {
    /// In a tree without revisions: the one record there is.
    Current,
    /// May change.
    Draft,
    /// Never changes again.
    Released,
}

/// What is known about a record besides its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The commit that created it.
    pub created: Versionstamp,
    /// The commit that last wrote it.
    pub modified: Versionstamp,
    /// The schema version it was written at.
    pub schema_version: u32,
    pub state: RevisionState,
    /// Who holds the record's check-out, and until when, at the moment it was read (on a
    /// replica: as last heard from the server).
    pub checked_out: Option<Lease>,
}

impl<T: Record> Tree<T> {
    /// The tree of `T` in `db`.
    pub fn open(db: Database) -> Self {
        Tree {
            db,
            ids: Arc::new(Mutex::new((0, 0))),
            user: None,
            clock: Arc::new(strata_engine::now_ms),
            indexers: Arc::new(Vec::new()),
            upstream: None,
            schema_stored: Arc::new(AtomicBool::new(false)),
            kind: PhantomData,
        }
    }

    /// This handle on a replica of `upstream`'s trees.
    #[cfg_attr(not(feature = "sync"), allow(dead_code))]
    pub(crate) fn with_upstream(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    pub(crate) fn upstream(&self) -> Option<&Arc<dyn Upstream>> {
        self.upstream.as_ref()
    }

    /// This handle with `indexers` (a replica's registered ones).
    #[cfg_attr(not(feature = "sync"), allow(dead_code))]
    pub(crate) fn with_indexers(mut self, indexers: Vec<Arc<dyn Indexer<T>>>) -> Self {
        self.indexers = Arc::new(indexers);
        self
    }

    /// Keeps this handle's indexes for a record written by other means (a replica applying
    /// its server's changes): the record `(id, revision)` went from `old` to `new` bytes.
    /// A record this code cannot read (a later schema version, corrupt bytes) has no terms.
    #[cfg_attr(not(feature = "sync"), allow(dead_code))]
    pub(crate) fn reindexer(&self) -> Reindexer {
        let me = self.clone();
        Arc::new(move |tx, id, revision, old, new| {
            let key = Key::<T>::new(id, revision);
            let terms = |b: Option<&[u8]>| {
                b.and_then(|b| me.index_entries(key, b).ok())
                    .unwrap_or_default()
            };
            Self::reindex(tx, &terms(old), &terms(new))
        })
    }

    /// On a replica: mark the record at `at` as written here, to be pushed.
    fn touch(&self, tx: &mut Transaction, at: &[u8]) -> Result<()> {
        if self.upstream.is_some() {
            tx.set(&layout::dirty(at), Value::bytes(Vec::new()))?;
        }
        Ok(())
    }

    /// Store `T`'s schema at its schema version unless it is there; refuse to write records
    /// when a different one is.
    async fn ensure_schema(&self, tx: &mut Transaction) -> Result<()> {
        if self.schema_stored.load(Ordering::Relaxed) {
            return Ok(());
        }
        let at = layout::schema(T::TREE, T::SCHEMA_VERSION);
        let ours = T::schema().to_json();
        match tx.get(&at).await? {
            Some(stored) if stored.data == ours => {
                // A replica's schema can be replaced by its server's (when the server
                // refuses ours), so a replica checks on every write.
                if self.upstream.is_none() {
                    self.schema_stored.store(true, Ordering::Relaxed);
                }
            }
            Some(_) => {
                return Err(Error::SchemaConflict {
                    tree: T::TREE.to_string(),
                    version: T::SCHEMA_VERSION,
                })
            }
            None => {
                tx.set(&at, Value::bytes(ours))?;
                self.touch(tx, &at)?;
            }
        }
        Ok(())
    }

    /// Store `T`'s schema at its version now (the first write at a version stores it
    /// anyway), so tools that work without the type see this version before anything is
    /// written at it: `strata typed migrate` to it, for one.
    pub async fn store_schema(&self) -> Result<()> {
        in_transaction!(self.db, |tx| { self.ensure_schema(tx).await })
    }

    /// This handle acting for `user`: the check-outs it takes are theirs, and its changes
    /// need them.
    pub fn as_user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// This handle reading lease times from `clock` (milliseconds since the epoch) instead
    /// of the system clock: for simulations and tests that move time themselves.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub(crate) fn user(&self) -> Result<&str> {
        self.user.as_deref().ok_or(Error::NoUser(T::TREE))
    }

    pub(crate) fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The key and header of record `key`, read in `tx`, which `user` has checked out.
    async fn held_record(
        &self,
        tx: &mut Transaction,
        key: Key<T>,
        user: &str,
    ) -> Result<(Vec<u8>, Header, Vec<u8>)> {
        let at = layout::record(T::TREE, key.id(), key.revision());
        let (header, stored) = stored_record::<T>(tx, key, &at).await?;
        ensure_held(tx, key, user, self.now_ms()).await?;
        Ok((at, header, stored))
    }

    /// This handle maintaining `indexer`'s entries on every write (see [`crate::index`]).
    /// Every handle that writes the tree should carry the same indexers;
    /// [`Tree::rebuild_index`] repairs an index after writes without it.
    pub fn with_indexer(mut self, indexer: impl Indexer<T>) -> Self {
        let mut all = (*self.indexers).clone();
        all.push(Arc::new(indexer));
        self.indexers = Arc::new(all);
        self
    }

    /// The index entries of record `key` holding `bytes` (a stored record), by every
    /// indexer of this handle.
    fn index_entries(&self, key: Key<T>, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.indexers.is_empty() {
            return Ok(Vec::new());
        }
        with_stored::<T, _>(key, bytes, |archived| {
            let mut entries = Vec::new();
            for ix in self.indexers.iter() {
                for term in ix.terms(archived) {
                    entries.push(index::entry(ix.name(), &term, key));
                }
            }
            entries
        })
    }

    /// Replace index entries `old` with `new` in `tx`.
    fn reindex(tx: &mut Transaction, old: &[Vec<u8>], new: &[Vec<u8>]) -> Result<()> {
        for e in old.iter().filter(|e| !new.contains(e)) {
            tx.delete(e)?;
        }
        for e in new.iter().filter(|e| !old.contains(e)) {
            tx.set(e, Value::bytes(Vec::new()))?;
        }
        Ok(())
    }

    /// The records whose `index` holds exactly `term`, in key order.
    pub async fn find(&self, index: &str, term: &[u8]) -> Result<Vec<Key<T>>> {
        let start = index::term_prefix(T::TREE, index, term, true);
        let end = strata_engine::prefix_end(&start);
        self.keys_in(&start, &end, index::entry_key::<T>).await
    }

    /// The records whose `index` holds a term starting with `prefix`, each once per
    /// matching term, in term order.
    pub async fn find_prefix(&self, index: &str, prefix: &[u8]) -> Result<Vec<Key<T>>> {
        let start = index::term_prefix(T::TREE, index, prefix, false);
        let end = strata_engine::prefix_end(&start);
        self.keys_in(&start, &end, index::entry_key::<T>).await
    }

    /// Write index `name` again from every record of the tree (with this handle's indexer
    /// of that name), in transactions of [`MIGRATE_CHUNK`] records; how many records were
    /// indexed.
    pub async fn rebuild_index(&self, name: &str) -> Result<u64> {
        let Some(ix) = self.indexers.iter().find(|ix| ix.name() == name).cloned() else {
            return Err(Error::UnknownIndex {
                tree: T::TREE,
                index: name.to_string(),
            });
        };
        // Clear the old entries, a chunk per transaction.
        let start = index::index_prefix(T::TREE, name);
        let end = strata_engine::prefix_end(&start);
        loop {
            let cleared = in_transaction!(self.db, |tx| {
                let chunk = tx.scan(&start, &end, false, 1024).await?;
                for (k, _) in &chunk {
                    tx.delete(k)?;
                }
                Ok::<_, Error>(chunk.len())
            })?;
            if cleared < 1024 {
                break;
            }
        }
        let only = Tree::<T> {
            indexers: Arc::new(vec![ix]),
            ..self.clone()
        };
        let keys = self.keys().await?;
        for chunk in keys.chunks(MIGRATE_CHUNK) {
            in_transaction!(self.db, |tx| {
                for &key in chunk {
                    let at = layout::record(T::TREE, key.id(), key.revision());
                    let Some(stored) = tx.get(&at).await? else {
                        continue;
                    };
                    for e in only.index_entries(key, &stored.data)? {
                        tx.set(&e, Value::bytes(Vec::new()))?;
                    }
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok(keys.len() as u64)
    }

    /// The newest revision of record `id`, if it has any.
    pub async fn latest(&self, id: u64) -> Result<Option<Key<T>>> {
        let (start, end) = layout::revisions(T::TREE, id);
        let mut tx = self.db.begin().await?;
        let last = tx.scan(&start, &end, true, 1).await?;
        Ok(last.first().and_then(|(k, _)| record_key::<T>(k)))
    }

    /// The newest revision of every record, in id order, at one snapshot: the tree's
    /// latest-revision index. The key layout keeps an id's revisions together and in order,
    /// so this costs two short reads per id (its first key, then its last revision)
    /// however many revisions each has, and is exact with no index entries to keep.
    pub async fn latest_keys(&self) -> Result<Vec<Key<T>>> {
        let (mut from, end) = layout::records(T::TREE);
        let mut tx = self.db.begin().await?;
        let mut out = Vec::new();
        loop {
            let first = tx.scan(&from, &end, false, 1).await?;
            let Some((k, _)) = first.first() else {
                return Ok(out);
            };
            let id = record_key::<T>(k)
                .map(|k| k.id())
                .ok_or_else(|| Error::Corrupt {
                    key: layout::raw_key(k),
                    detail: "not a record key".into(),
                })?;
            let (start, id_end) = layout::revisions(T::TREE, id);
            let last = tx.scan(&start, &id_end, true, 1).await?;
            out.extend(last.first().and_then(|(k, _)| record_key::<T>(k)));
            from = id_end;
        }
    }

    /// A fresh id: from the handle's reserved block, reserving the next block of the tree's
    /// counter when it is used up. Ids are unique and never reused; ids reserved by a handle
    /// that goes away are skipped.
    async fn fresh_id(&self) -> Result<u64> {
        {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.0 < ids.1 {
                ids.0 += 1;
                return Ok(ids.0 - 1);
            }
        }
        let first = in_transaction!(self.db, |tx| { reserve_ids(tx, T::TREE, ID_BLOCK).await })?;
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 < ids.1 {
            // Another insert through this handle reserved a block meanwhile: use that one
            // (the block just reserved is skipped).
            ids.0 += 1;
            return Ok(ids.0 - 1);
        }
        *ids = (first + 1, first + ID_BLOCK);
        Ok(first)
    }

    /// Store `value` as a new record; its key. In a versioned tree it is draft revision 1.
    pub async fn insert(&self, value: &T) -> Result<Key<T>> {
        let bytes = encode(value, 0)?;
        let revision = u32::from(T::VERSIONED);
        // A replica takes its server's reserved ids, in the insert's own transaction.
        let reserved = match self.upstream {
            None => Some(self.fresh_id().await?),
            Some(_) => None,
        };
        in_transaction!(self.db, |tx| {
            let id = match reserved {
                Some(id) => id,
                None => take_granted_id(tx, T::TREE).await?,
            };
            self.ensure_schema(tx).await?;
            let entries = self.index_entries(Key::new(id, revision), &bytes)?;
            let at = layout::record(T::TREE, id, revision);
            tx.set(&at, record_value(bytes.clone()))?;
            self.touch(tx, &at)?;
            Self::reindex(tx, &[], &entries)?;
            tx.set(
                &layout::created(T::TREE, id, revision),
                Value::bytes(Vec::new()),
            )?;
            Ok::<_, Error>(Key::new(id, revision))
        })
    }

    /// The record under `key`, deserialized.
    pub async fn get(&self, key: Key<T>) -> Result<Option<T>> {
        self.with(key, |archived| T::from_archived(archived))
            .await?
            .transpose()
            .map_err(|e| Error::Corrupt {
                key: key.raw(),
                detail: e.to_string(),
            })
    }

    /// This tree's events after `from` (see [`crate::events`]). To follow the tree from
    /// its current state, read it, then subscribe from [`Tree::cursor`] taken before.
    pub fn events(&self, from: crate::Cursor) -> crate::Events {
        crate::Events::new(self.db.clone(), Some(T::TREE.to_string()), from)
    }

    /// A cursor at the database's current version: events after it are those of commits
    /// not yet made.
    pub async fn cursor(&self) -> Result<crate::Cursor> {
        crate::events::ensure_feed(&self.db).await?;
        Ok(crate::Cursor::after(self.db.version()))
    }

    /// Call `f` with the record under `key` in its archived form, validated but not
    /// deserialized.
    pub async fn with<R>(
        &self,
        key: Key<T>,
        f: impl FnOnce(&T::Archived) -> R,
    ) -> Result<Option<R>> {
        let Some(entry) = self
            .db
            .get(&layout::record(T::TREE, key.id(), key.revision()))
            .await?
        else {
            return Ok(None);
        };
        with_stored::<T, R>(key, &entry.value.data, f).map(Some)
    }

    /// Replace the record under `key`. Needs its check-out; a released revision is
    /// refused.
    pub async fn update(&self, key: Key<T>, value: &T) -> Result<()> {
        let bytes = encode(value, 0)?;
        let user = self.user()?;
        let entries = self.index_entries(key, &bytes)?;
        in_transaction!(self.db, |tx| {
            let (at, header, old) = self.held_record(tx, key, user).await?;
            if header.flags & RELEASED != 0 {
                return Err(Error::Released(key.raw()));
            }
            self.ensure_schema(tx).await?;
            Self::reindex(tx, &self.index_entries(key, &old)?, &entries)?;
            tx.set(&at, record_value(bytes.clone()))?;
            self.touch(tx, &at)?;
            Ok::<_, Error>(())
        })
    }

    /// Remove the record under `key`; false if there was none. Needs its check-out; a
    /// released revision is refused.
    pub async fn remove(&self, key: Key<T>) -> Result<bool> {
        let user = self.user()?;
        in_transaction!(self.db, |tx| {
            let at = layout::record(T::TREE, key.id(), key.revision());
            let (header, old) = match stored_record::<T>(tx, key, &at).await {
                Ok(found) => found,
                Err(Error::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            ensure_held(tx, key, user, self.now_ms()).await?;
            if header.flags & RELEASED != 0 {
                return Err(Error::Released(key.raw()));
            }
            Self::reindex(tx, &self.index_entries(key, &old)?, &[])?;
            tx.delete(&at)?;
            self.touch(tx, &at)?;
            tx.delete(&layout::created(T::TREE, key.id(), key.revision()))?;
            Ok::<_, Error>(true)
        })
    }

    /// Release draft `key`: from now on it never changes. Needs a versioned tree and the
    /// record's check-out.
    pub async fn release(&self, key: Key<T>) -> Result<()> {
        versioned::<T>()?;
        let user = self.user()?;
        in_transaction!(self.db, |tx| {
            let at = layout::record(T::TREE, key.id(), key.revision());
            let Some(stored) = tx.get(&at).await? else {
                return Err(Error::NotFound(key.raw()));
            };
            ensure_held(tx, key, user, self.now_ms()).await?;
            let (header, _) = open::<T>(key, &stored.data)?;
            if header.flags & RELEASED != 0 {
                return Ok(());
            }
            // Released as stored, at the schema version it was written at.
            let released = layout::with_flags(&stored.data, header.flags | RELEASED);
            tx.set(&at, record_value(released))?;
            self.touch(tx, &at)?;
            Ok::<_, Error>(())
        })
    }

    /// Draft revision n + 1 of released revision `key` (n), holding `value`. Needs the
    /// record's check-out. Revision n stays as it is, so whatever points at it stays valid.
    pub async fn draft_next(&self, key: Key<T>, value: &T) -> Result<Key<T>> {
        versioned::<T>()?;
        let bytes = encode(value, 0)?;
        let user = self.user()?;
        in_transaction!(self.db, |tx| {
            let (_, header, _) = self.held_record(tx, key, user).await?;
            if header.flags & RELEASED == 0 {
                return Err(Error::Revision(format!(
                    "record {} is a draft: release it before drafting the next revision",
                    key.raw()
                )));
            }
            let next = key.revision().checked_add(1).ok_or_else(|| {
                Error::Revision(format!("record {} has no next revision", key.raw()))
            })?;
            let next_at = layout::record(T::TREE, key.id(), next);
            if tx.get(&next_at).await?.is_some() {
                return Err(Error::Revision(format!(
                    "revision {next} of {}/{} exists already",
                    T::TREE,
                    key.id()
                )));
            }
            let next_key = Key::new(key.id(), next);
            self.ensure_schema(tx).await?;
            Self::reindex(tx, &[], &self.index_entries(next_key, &bytes)?)?;
            tx.set(&next_at, record_value(bytes.clone()))?;
            self.touch(tx, &next_at)?;
            tx.set(
                &layout::created(T::TREE, key.id(), next),
                Value::bytes(Vec::new()),
            )?;
            Ok::<_, Error>(Key::new(key.id(), next))
        })
    }

    /// Every revision of record `id`, oldest first.
    pub async fn revisions(&self, id: u64) -> Result<Vec<Key<T>>> {
        let (start, end) = layout::revisions(T::TREE, id);
        self.keys_in(&start, &end, record_key::<T>).await
    }

    /// Every key of the tree, in key order.
    pub async fn keys(&self) -> Result<Vec<Key<T>>> {
        let (start, end) = layout::records(T::TREE);
        self.keys_in(&start, &end, record_key::<T>).await
    }

    /// Call `f` with every record of the tree, in key order, archived and validated, at
    /// one snapshot; `f` returns false to stop.
    pub async fn for_each(
        &self,
        mut f: impl FnMut(Key<T>, &T::Archived) -> bool + Send,
    ) -> Result<()> {
        let (start, end) = layout::records(T::TREE);
        let mut tx = self.db.begin().await?;
        let mut visitor = Each::<T, _> {
            f: &mut f,
            error: None,
            kind: PhantomData,
        };
        tx.scan_each(&start, &end, &mut visitor).await?;
        match visitor.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Rewrite every record written at an older schema version at this one, through the
    /// declared migrations; how many were rewritten. Records keep their release state.
    /// Works in transactions of [`MIGRATE_CHUNK`] records, calling `progress(done, total)`
    /// after each; a record written by newer code stops it with [`Error::SchemaVersion`].
    pub async fn migrate(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64> {
        let keys = self.keys().await?;
        let total = keys.len() as u64;
        let mut rewritten = 0;
        let mut done = 0;
        for chunk in keys.chunks(MIGRATE_CHUNK) {
            rewritten += in_transaction!(self.db, |tx| {
                self.ensure_schema(tx).await?;
                let mut n = 0u64;
                for &key in chunk {
                    let at = layout::record(T::TREE, key.id(), key.revision());
                    let Some(stored) = tx.get(&at).await? else {
                        continue;
                    };
                    let (header, archive) = open::<T>(key, &stored.data)?;
                    if header.schema_version == T::SCHEMA_VERSION {
                        continue;
                    }
                    let value = upgraded::<T>(key, header.schema_version, archive)?;
                    tx.set(&at, record_value(encode(&value, header.flags & RELEASED)?))?;
                    self.touch(tx, &at)?;
                    n += 1;
                }
                Ok::<_, Error>(n)
            })?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        Ok(rewritten)
    }

    /// The record's metadata, if it exists.
    pub async fn meta(&self, key: Key<T>) -> Result<Option<Meta>> {
        let keys = [
            layout::record(T::TREE, key.id(), key.revision()),
            layout::created(T::TREE, key.id(), key.revision()),
            layout::lease(T::TREE, key.id()),
        ];
        let mut found = self
            .db
            .get_many(&keys, strata_engine::ReadAt::Latest)
            .await?
            .into_iter();
        let (Some(Some(record)), Some(created), Some(lease)) =
            (found.next(), found.next(), found.next())
        else {
            return Ok(None);
        };
        let checked_out = match lease {
            Some(e) => {
                crate::checkout::decode_lease(T::TREE, key.id(), &e.value.data)?.held(self.now_ms())
            }
            None => None,
        };
        let (header, _) = open_any(key.raw(), &record.value.data)?;
        let state = match (T::VERSIONED, header.flags & RELEASED != 0) {
            (false, _) => RevisionState::Current,
            (true, false) => RevisionState::Draft,
            (true, true) => RevisionState::Released,
        };
        Ok(Some(Meta {
            created: created.map_or(record.versionstamp, |c| c.versionstamp),
            modified: record.versionstamp,
            schema_version: header.schema_version,
            state,
            checked_out,
        }))
    }

    /// The record keys that `parse` reads from the entries of `[start, end)` (records or
    /// index entries), in key order, at one snapshot.
    async fn keys_in(
        &self,
        start: &[u8],
        end: &[u8],
        parse: fn(&[u8]) -> Option<Key<T>>,
    ) -> Result<Vec<Key<T>>> {
        let mut tx = self.db.begin().await?;
        let mut out = Vec::new();
        let mut from = start.to_vec();
        loop {
            let chunk = tx.scan(&from, end, false, 1024).await?;
            out.extend(chunk.iter().filter_map(|(k, _)| parse(k)));
            match chunk.last() {
                Some((k, _)) if chunk.len() == 1024 => {
                    from = k.clone();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

/// The key of a record entry of `T`'s tree.
fn record_key<T: Record>(entry: &[u8]) -> Option<Key<T>> {
    layout::parse_record(T::TREE, entry).map(|(id, revision)| Key::new(id, revision))
}

/// Visits the records of a scan, validating each.
struct Each<'f, T, F> {
    f: &'f mut F,
    error: Option<Error>,
    kind: PhantomData<fn() -> T>,
}

impl<T: Record, F: FnMut(Key<T>, &T::Archived) -> bool + Send> strata_engine::Visitor
    for Each<'_, T, F>
{
    fn visit(&mut self, key: &[u8], value: strata_engine::ValueRef<'_>) -> bool {
        let Some(key) = record_key::<T>(key) else {
            return true;
        };
        let step = with_stored::<T, bool>(key, value.data, |a| (self.f)(key, a));
        match step {
            Ok(go_on) => go_on,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn restart(&mut self) {}
}

fn versioned<T: Record>() -> Result<()> {
    if T::VERSIONED {
        Ok(())
    } else {
        Err(Error::Revision(format!(
            "tree {:?} keeps no revisions (declare it `versioned`)",
            T::TREE
        )))
    }
}

fn encode<T: Record>(value: &T, flags: u8) -> Result<Vec<u8>> {
    let archive = value.to_archive().map_err(|e| Error::Encode {
        tree: T::TREE,
        detail: e.to_string(),
    })?;
    let header = Header {
        flags,
        schema_version: T::SCHEMA_VERSION,
    };
    let compat = match value.compat_archive() {
        None => None,
        Some(c) => Some(c.map_err(|e| Error::Encode {
            tree: T::TREE,
            detail: format!("as the compatible earlier version: {e}"),
        })?),
    };
    Ok(layout::envelope_with(
        header,
        &archive,
        compat.as_ref().map(|(v, a)| (*v, a.as_slice())),
    ))
}

pub(crate) fn record_value(bytes: Vec<u8>) -> Value {
    Value {
        encoding: ENCODING,
        data: bytes,
    }
}

/// The header of a stored record, whatever its schema version.
fn open_any(key: crate::RawKey, bytes: &[u8]) -> Result<(Header, &[u8])> {
    layout::open(bytes).map_err(|detail| Error::Corrupt { key, detail })
}

/// The header and archive of a stored record of `T`, written at `T`'s schema version or an
/// older one (code never writes over what newer code wrote: it would lose what it cannot
/// see).
fn open<T: Record>(key: Key<T>, bytes: &[u8]) -> Result<(Header, &[u8])> {
    let (header, archive) = open_any(key.raw(), bytes)?;
    if header.schema_version > T::SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            key: key.raw(),
            stored: header.schema_version,
            code: T::SCHEMA_VERSION,
        });
    }
    Ok((header, archive))
}

/// The header and bytes of the record at `at` read in `tx`, or `NotFound`.
async fn stored_record<T: Record>(
    tx: &mut Transaction,
    key: Key<T>,
    at: &[u8],
) -> Result<(Header, Vec<u8>)> {
    let Some(stored) = tx.get(at).await? else {
        return Err(Error::NotFound(key.raw()));
    };
    let header = open::<T>(key, &stored.data)?.0;
    Ok((header, stored.data))
}

/// Call `f` with a stored record as a `T`: in place when it was written at `T`'s schema
/// version, else upgraded through the declared migrations (and archived again).
fn with_stored<T: Record, R>(
    key: Key<T>,
    bytes: &[u8],
    f: impl FnOnce(&T::Archived) -> R,
) -> Result<R> {
    let ((header, archive), compat) = layout::open_all(bytes).map_err(|detail| Error::Corrupt {
        key: key.raw(),
        detail,
    })?;
    if header.schema_version == T::SCHEMA_VERSION {
        return with_archive::<T, R>(key, archive, f);
    }
    // Written by later code that declared itself compatible with this version.
    if let Some((_, older)) = compat.filter(|(v, _)| *v == T::SCHEMA_VERSION) {
        return with_archive::<T, R>(key, older, f);
    }
    let value = upgraded::<T>(key, header.schema_version, archive)?;
    let again = value.to_archive().map_err(|e| Error::Encode {
        tree: T::TREE,
        detail: e.to_string(),
    })?;
    with_archive::<T, R>(key, &again, f)
}

/// A record written at schema version `stored` (not `T`'s), as a `T` through the declared
/// migrations; a typed error naming both versions when there is no way.
fn upgraded<T: Record>(key: Key<T>, stored: u32, archive: &[u8]) -> Result<T> {
    let read = if (archive.as_ptr() as usize).is_multiple_of(16) {
        T::read_version(stored, archive)
    } else {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        T::read_version(stored, &aligned)
    };
    match read {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(Error::Corrupt {
            key: key.raw(),
            detail: format!("as schema version {stored}: {e}"),
        }),
        None => Err(Error::SchemaVersion {
            key: key.raw(),
            stored,
            code: T::SCHEMA_VERSION,
        }),
    }
}

/// Validate `archive` as a `T` and call `f` with it. The archive is read in place when it
/// lies 16-byte aligned (as stored records do), else from an aligned copy.
fn with_archive<T: Record, R>(
    key: Key<T>,
    archive: &[u8],
    f: impl FnOnce(&T::Archived) -> R,
) -> Result<R> {
    let corrupt = |e: rkyv::rancor::Error| Error::Corrupt {
        key: key.raw(),
        detail: e.to_string(),
    };
    if (archive.as_ptr() as usize).is_multiple_of(16) {
        return T::access(archive).map(f).map_err(corrupt);
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    T::access(&aligned).map(f).map_err(corrupt)
}

/// Reserve `count` ids of the tree's counter; the first.
pub(crate) async fn reserve_ids(tx: &mut Transaction, tree: &str, count: u64) -> Result<u64> {
    let at = layout::next_id(tree);
    let id = match tx.get(&at).await? {
        Some(v) if v.data.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v.data);
            u64::from_le_bytes(b)
        }
        Some(_) => {
            return Err(Error::Corrupt {
                key: crate::RawKey {
                    tree: tree.to_string(),
                    id: 0,
                    revision: 0,
                },
                detail: "the tree's id counter is not 8 bytes".into(),
            })
        }
        None => 1,
    };
    let next = id.checked_add(count).ok_or_else(|| Error::Corrupt {
        key: crate::RawKey {
            tree: tree.to_string(),
            id,
            revision: 0,
        },
        detail: "the tree's ids are exhausted".into(),
    })?;
    tx.set(&at, Value::bytes(next.to_le_bytes().to_vec()))?;
    Ok(id)
}

/// Wait a little before attempt `attempt` again: longer after each conflict, with jitter so
/// that writers that collided do not collide again.
pub(crate) async fn backoff(attempt: usize) {
    use std::hash::{BuildHasher, Hasher};
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 1000;
    let base = 100u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_micros(base + jitter)).await;
}
