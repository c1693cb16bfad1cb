//! What is stored in a database's typed trees, read and written without the record types:
//! the trees, each record's revision, schema version, state, size and check-out, and its
//! value as JSON, read and edited through the schema stored for its version (see
//! [`crate::schema`] and [`crate::json`]).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use strata_engine::{Database, Transaction};

use crate::checkout::LeaseRecord;
use crate::json::{self, View};
use crate::layout::{self, Header, Kind, RELEASED};
use crate::{Error, RawKey, Result, Schema};

/// Entries read per request.
const PAGE: usize = 1024;

/// One tree, summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TreeSummary {
    pub tree: String,
    pub records: u64,
    pub released: u64,
    /// Records per schema version.
    pub schema_versions: BTreeMap<u32, u64>,
    /// Records whose bytes are not a typed record.
    pub corrupt: u64,
    pub bytes: u64,
    /// Records checked out now.
    pub checked_out: u64,
    /// The schema versions whose schema is stored (values can be shown at those).
    pub schemas: Vec<u32>,
}

/// One stored revision of a record.
#[derive(Debug, Clone, Serialize)]
pub struct RecordInfo {
    pub id: u64,
    pub revision: u32,
    /// `None` when the bytes are not a typed record (then `problem` says why).
    pub schema_version: Option<u32>,
    pub released: bool,
    /// The earlier schema version the record is also stored at (declared compatible).
    pub compatible_with: Option<u32>,
    pub bytes: usize,
    /// Who holds the record's check-out now.
    pub checked_out_by: Option<String>,
    /// The value as JSON, read through the schema stored for its version; `None` when there
    /// is no such schema or the bytes do not fit it (then `problem` says why).
    pub value: Option<Box<RawValue>>,
    pub problem: Option<String>,
}

/// Every key of `[start, end)`, page by page, each handed to `f`.
async fn each(
    db: &Database,
    start: Vec<u8>,
    end: Vec<u8>,
    mut f: impl FnMut(&[u8], &[u8]),
) -> Result<()> {
    let mut from = start;
    loop {
        let mut tx = db.begin().await?;
        let rows = tx.scan(&from, &end, false, PAGE).await?;
        let full = rows.len() == PAGE;
        for (k, v) in &rows {
            f(k, &v.data);
        }
        match rows.last() {
            Some((k, _)) if full => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

fn holder(bytes: &[u8], now: u64) -> Option<String> {
    let rec: LeaseRecord = serde_json::from_slice(bytes).ok()?;
    rec.held_by(now).map(str::to_string)
}

/// Every typed tree in `db`.
pub async fn trees(db: &Database) -> Result<Vec<TreeSummary>> {
    let mut by_tree: BTreeMap<String, TreeSummary> = BTreeMap::new();
    let now = strata_engine::now_ms();
    let ranges = layout::shared_ranges();
    let (records, leases) = (&ranges[0], &ranges[2]);
    each(db, records.0.clone(), records.1.clone(), |k, v| {
        let Some(p) = layout::parse_any(k) else {
            return;
        };
        let t = by_tree
            .entry(p.tree.to_string())
            .or_insert_with(|| TreeSummary {
                tree: p.tree.to_string(),
                ..TreeSummary::default()
            });
        t.records += 1;
        t.bytes += v.len() as u64;
        match layout::open(v) {
            Ok((h, _)) => {
                *t.schema_versions.entry(h.schema_version).or_default() += 1;
                t.released += u64::from(h.flags & RELEASED != 0);
            }
            Err(_) => t.corrupt += 1,
        }
    })
    .await?;
    each(db, leases.0.clone(), leases.1.clone(), |k, v| {
        if let (Some(p), Some(_)) = (layout::parse_any(k), holder(v, now)) {
            if let Some(t) = by_tree.get_mut(p.tree) {
                t.checked_out += 1;
            }
        }
    })
    .await?;
    let (start, end) = layout::schemas();
    each(db, start, end, |k, _| {
        if let Some((tree, version)) = layout::parse_schema(k) {
            if let Some(t) = by_tree.get_mut(tree) {
                t.schemas.push(version);
            }
        }
    })
    .await?;
    Ok(by_tree.into_values().collect())
}

/// The revisions of `tree`'s records (of record `id` only, with one), up to `limit`.
pub async fn records(
    db: &Database,
    tree: &str,
    id: Option<u64>,
    limit: usize,
) -> Result<Vec<RecordInfo>> {
    let (start, end) = match id {
        Some(id) => layout::revisions(tree, id),
        None => layout::records(tree),
    };
    let mut out = Vec::new();
    let mut archives = Vec::new();
    each(db, start, end, |k, v| {
        if out.len() >= limit {
            return;
        }
        let Some(layout::Parsed {
            id,
            kind: Kind::Record { revision },
            ..
        }) = layout::parse_any(k)
        else {
            return;
        };
        let mut info = RecordInfo {
            id,
            revision,
            schema_version: None,
            released: false,
            compatible_with: None,
            bytes: v.len(),
            checked_out_by: None,
            value: None,
            problem: None,
        };
        match layout::open_all(v) {
            Ok(((h, archive), compat)) => {
                info.schema_version = Some(h.schema_version);
                info.released = h.flags & RELEASED != 0;
                info.compatible_with = compat.map(|(v, _)| v);
                archives.push((out.len(), h.schema_version, archive.to_vec()));
            }
            Err(e) => info.problem = Some(e),
        }
        out.push(info);
    })
    .await?;
    let mut schemas: BTreeMap<u32, std::result::Result<Schema, String>> = BTreeMap::new();
    for (at, version, archive) in archives {
        if let std::collections::btree_map::Entry::Vacant(slot) = schemas.entry(version) {
            slot.insert(schema(db, tree, version).await?);
        }
        match &schemas[&version] {
            Ok(schema) => match shown(schema, &archive) {
                Ok(value) => out[at].value = Some(value),
                Err(e) => out[at].problem = Some(format!("the value does not fit its schema: {e}")),
            },
            Err(e) => out[at].problem = Some(e.clone()),
        }
    }
    let now = strata_engine::now_ms();
    for info in &mut out {
        if let Some(e) = db.get(&layout::lease(tree, info.id)).await? {
            info.checked_out_by = holder(&e.value.data, now);
        }
    }
    Ok(out)
}

/// An archive as JSON text through `schema`.
fn shown(schema: &Schema, archive: &[u8]) -> std::result::Result<Box<RawValue>, String> {
    let text = serde_json::to_string(&View::new(schema, archive)).map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

/// The schema stored for `tree` at `version`, or why there is none to use.
pub async fn schema(
    db: &Database,
    tree: &str,
    version: u32,
) -> Result<std::result::Result<Schema, String>> {
    let mut tx = db.begin().await?;
    schema_in(&mut tx, tree, version).await
}

/// How [`edit`] left a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edited {
    pub key: String,
    pub schema_version: u32,
    /// False when the value was the one stored (nothing was written).
    pub changed: bool,
}

/// A change [`edit`] makes: record `id` of `tree` (revision `revision`, or its latest)
/// gets `value` (JSON, as [`records`] shows it), acting for `user`.
#[derive(Debug, Clone, Copy)]
pub struct Edit<'a> {
    pub tree: &'a str,
    pub id: u64,
    pub revision: Option<u32>,
    pub user: &'a str,
    pub value: &'a serde_json::Value,
    /// Change a tree with index entries anyway (its indexes go stale until rebuilt).
    pub stale_indexes: bool,
    /// The value the change was made from: refused if the record holds another by now.
    pub expected: Option<&'a serde_json::Value>,
}

/// Make the change `e` describes, at the schema version the record is stored at.
///
/// Refused, with nothing written: a value that does not fit the schema (naming where), a
/// record that no longer holds `expected`, a released revision, a record someone else
/// holds checked out (on a replica: one `user` does not hold, as its server requires), a
/// record also stored in an earlier version's form (only the application's code can write
/// that), a schema whose values do not survive JSON, and, unless `stale_indexes`, a tree
/// with index entries (its indexers are the application's code).
pub async fn edit(db: &Database, e: &Edit<'_>) -> Result<Edited> {
    let Edit {
        tree,
        id,
        revision,
        user,
        value,
        stale_indexes,
        expected,
    } = *e;
    if !stale_indexes {
        refuse_indexed(db, tree, "edit").await?;
    }
    let now = strata_engine::now_ms();
    in_transaction!(db, |tx| {
        let (key, at, stored) = latest(tx, tree, id, revision).await?;
        let ((header, archive), compat) =
            layout::open_all(&stored).map_err(|detail| Error::Corrupt {
                key: key.clone(),
                detail,
            })?;
        if header.flags & RELEASED != 0 {
            return Err(Error::Released(key));
        }
        if let Some((older, _)) = compat {
            return Err(Error::Edit(format!(
                "record {key} is also stored in version {older}'s form for code at that version, which only the application can write: edit it through the application"
            )));
        }
        let replica = is_replica(tx).await?;
        let lease = match tx.get(&layout::lease(tree, id)).await? {
            Some(l) => {
                serde_json::from_slice::<LeaseRecord>(&l.data).map_err(|_| Error::Corrupt {
                    key: key.clone(),
                    detail: "its check-out record is unreadable".into(),
                })?
            }
            None => LeaseRecord::default(),
        };
        match lease.held_by(now) {
            Some(holder) if holder != user => {
                return Err(Error::CheckedOut {
                    key,
                    holder: holder.to_string(),
                    until_ms: lease.holding().1,
                })
            }
            None if replica => {
                return Err(Error::NotCheckedOut {
                    key,
                    user: user.to_string(),
                })
            }
            _ => {}
        }
        let version = header.schema_version;
        let schema = schema_in(tx, tree, version).await?.map_err(Error::Edit)?;
        if let Some(why) = schema.lossy() {
            return Err(Error::Edit(format!(
                "values of tree {tree:?} at version {version} do not survive JSON unchanged ({why}): edit them through the application"
            )));
        }
        if let Some(expected) = expected {
            let now_value =
                View::new(&schema, archive)
                    .to_value()
                    .map_err(|detail| Error::Corrupt {
                        key: key.clone(),
                        detail,
                    })?;
            if &now_value != expected {
                return Err(Error::Edit(format!(
                    "record {key} changed while it was being edited; nothing was written"
                )));
            }
        }
        let archive_new = json::encode(&schema, value).map_err(|m| {
            Error::Edit(format!(
                "the value does not fit tree {tree:?}'s schema at version {version}: {m}"
            ))
        })?;
        // What was written must read back (the encoder is checked against rkyv's bytes;
        // this is the last guard before storing).
        View::new(&schema, &archive_new)
            .to_value()
            .map_err(|e| Error::Edit(format!("the encoded value does not read back: {e}")))?;
        let changed = archive_new != archive;
        if changed {
            let bytes = layout::envelope_with(
                Header {
                    flags: header.flags,
                    schema_version: version,
                },
                &archive_new,
                None,
            );
            tx.set(&at, crate::tree::record_value(bytes))?;
            if replica {
                tx.set(&layout::dirty(&at), strata_engine::Value::bytes(Vec::new()))?;
            }
        }
        Ok::<_, Error>(Edited {
            key: key.to_string(),
            schema_version: version,
            changed,
        })
    })
}

/// Whether the database is a replica of a sync server.
async fn is_replica(tx: &mut Transaction) -> Result<bool> {
    Ok(tx.get(&layout::replica_state("server")).await?.is_some())
}

async fn schema_in(
    tx: &mut Transaction,
    tree: &str,
    version: u32,
) -> Result<std::result::Result<Schema, String>> {
    Ok(match tx.get(&layout::schema(tree, version)).await? {
        Some(v) => Schema::from_json(&v.data)
            .map_err(|e| format!("the schema stored for version {version} is unreadable: {e}")),
        None => Err(format!(
            "no schema is stored for version {version} of tree {tree:?} (the application's next write at that version stores it)"
        )),
    })
}

/// The record `id` at `revision` (its latest without one): its key, where it is, its bytes.
async fn latest(
    tx: &mut Transaction,
    tree: &str,
    id: u64,
    revision: Option<u32>,
) -> Result<(RawKey, Vec<u8>, Vec<u8>)> {
    let raw = |revision| RawKey {
        tree: tree.to_string(),
        id,
        revision,
    };
    let at = match revision {
        Some(r) => layout::record(tree, id, r),
        None => {
            let (start, end) = layout::revisions(tree, id);
            match tx.scan(&start, &end, true, 1).await?.pop() {
                Some((k, _)) => k,
                None => return Err(Error::NotFound(raw(0))),
            }
        }
    };
    let revision = layout::parse_record(tree, &at).map_or(0, |(_, r)| r);
    match tx.get(&at).await? {
        Some(v) => Ok((raw(revision), at, v.data)),
        None => Err(Error::NotFound(raw(revision))),
    }
}

/// Refuse to change a tree with index entries: they are kept by the application's
/// indexers, which `what` cannot run.
async fn refuse_indexed(db: &Database, tree: &str, what: &str) -> Result<()> {
    let base = layout::index_base(tree);
    let end = strata_engine::prefix_end(&base);
    let mut tx = db.begin().await?;
    if tx.scan(&base, &end, false, 1).await?.is_empty() {
        return Ok(());
    }
    Err(Error::Edit(format!(
        "tree {tree:?} has index entries, kept by the application's indexers, which {what} here cannot run: do it through the application, or pass --stale-indexes and rebuild its indexes after (Tree::rebuild_index)"
    )))
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// The schema version records were rewritten at.
    pub to: u32,
    pub rewritten: u64,
    /// Records at that version already.
    pub current: u64,
    /// Records written by later versions, left as they are.
    pub later: u64,
}

/// The schemas stored for `tree`, by version.
async fn schemas_of(db: &Database, tree: &str) -> Result<BTreeMap<u32, Schema>> {
    let (start, end) = layout::tree_schemas(tree);
    let mut raw = Vec::new();
    each(db, start, end, |k, v| raw.push((k.to_vec(), v.to_vec()))).await?;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        if let Some((_, version)) = layout::parse_schema(&k) {
            let schema = Schema::from_json(&v).map_err(|e| {
                Error::Edit(format!(
                    "the schema stored for version {version} of tree {tree:?} is unreadable: {e}"
                ))
            })?;
            out.insert(version, schema);
        }
    }
    Ok(out)
}

/// The versions a record at `from` passes through to reach `to`, each made by a declared
/// upgrade (ascending, `to` last); or why there is no such way.
fn upgrade_path(
    schemas: &BTreeMap<u32, Schema>,
    tree: &str,
    from: u32,
    to: u32,
) -> std::result::Result<Vec<u32>, String> {
    let mut steps = Vec::new();
    let mut at = to;
    while at != from {
        let schema = &schemas[&at];
        match (schema.previous, &schema.upgrade) {
            (Some(prev), _) if prev >= at => {
                return Err(format!(
                    "the schema of version {at} of tree {tree:?} names version {prev} as its previous one"
                ))
            }
            (Some(prev), Some(_)) if prev >= from && schemas.contains_key(&prev) => {
                steps.push(at);
                at = prev;
            }
            (Some(prev), Some(_)) if prev >= from => {
                return Err(format!(
                    "no schema is stored for version {prev} of tree {tree:?}, which version {at} upgrades (the application's next write at version {prev} stores it)"
                ))
            }
            (Some(prev), None) if prev >= from => {
                return Err(format!(
                    "version {at} of tree {tree:?} is made from version {prev} by the application's code (`From<Previous>`), which this command cannot run: migrate through the application (Tree::migrate), or declare the step with `upgrade`"
                ))
            }
            _ => {
                return Err(format!(
                    "tree {tree:?} has records at version {from}, and no declared way leads from it to version {to}"
                ))
            }
        }
    }
    steps.reverse();
    Ok(steps)
}

/// A record's JSON at one version made into its JSON at the next, by that version's
/// declared upgrade.
fn upgrade_value(
    schema: &Schema,
    old: serde_json::Value,
) -> std::result::Result<serde_json::Value, String> {
    let serde_json::Value::Object(mut old) = old else {
        return Err("the record is not a struct".into());
    };
    let mut new = serde_json::Map::new();
    for field in schema.upgrade.iter().flatten() {
        let value = match &field.source {
            crate::schema::Source::Carried { from } => old
                .remove(from)
                .ok_or_else(|| format!("the record has no field {from:?} to carry"))?,
            crate::schema::Source::Default { value } => value.clone(),
        };
        new.insert(field.name.clone(), value);
    }
    Ok(serde_json::Value::Object(new))
}

/// Rewrite every record of `tree` written at an earlier schema version at version `to` (the
/// newest whose schema is stored, without one), through the upgrades the versions declare
/// (`#[record(..., previous = P, upgrade)]`), exactly as the application's generated
/// `From` would; in transactions of [`crate::MIGRATE_CHUNK`] records, calling
/// `progress(done, total)` after each. Release states are kept.
///
/// Nothing is written when any record's way to `to` has a step that is the application's
/// code (or lacks a stored schema), when `to` is declared `compatible` (its records carry
/// the earlier form, which the application's code writes), or, unless `stale_indexes`,
/// when the tree has index entries.
pub async fn migrate(
    db: &Database,
    tree: &str,
    to: Option<u32>,
    stale_indexes: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Migrated> {
    let schemas = schemas_of(db, tree).await?;
    let to = match to.or_else(|| schemas.keys().last().copied()) {
        Some(v) => v,
        None => {
            return Err(Error::Edit(format!(
                "no schema is stored for tree {tree:?}: nothing says what its records are"
            )))
        }
    };
    let Some(target) = schemas.get(&to) else {
        return Err(Error::Edit(format!(
            "no schema is stored for version {to} of tree {tree:?} (the application stores it with its first write at that version, or Tree::store_schema)"
        )));
    };
    if target.compatible {
        return Err(Error::Edit(format!(
            "version {to} of tree {tree:?} is declared compatible: its records also carry version {}'s form, which the application's code writes; migrate through the application (Tree::migrate)",
            target.previous.unwrap_or_default()
        )));
    }
    if !stale_indexes {
        refuse_indexed(db, tree, "migrate").await?;
    }
    {
        let mut tx = db.begin().await?;
        if is_replica(&mut tx).await? {
            return Err(Error::Edit(format!(
                "this database is a replica: its records change through its server; migrate tree {tree:?} in the server's store, and the replicas pull the result"
            )));
        }
    }
    // Every record's version first: refuse before writing anything.
    let mut keys = Vec::new();
    let mut versions = BTreeMap::<u32, u64>::new();
    let (start, end) = layout::records(tree);
    each(db, start, end, |k, v| {
        if let Ok((h, _)) = layout::open(v) {
            *versions.entry(h.schema_version).or_default() += 1;
        }
        keys.push(k.to_vec());
    })
    .await?;
    let mut paths = BTreeMap::new();
    for &v in versions.keys().filter(|&&v| v < to) {
        let Some(schema) = schemas.get(&v) else {
            return Err(Error::Edit(format!(
                "no schema is stored for version {v} of tree {tree:?}, so its records cannot be read without the type: migrate through the application (Tree::migrate)"
            )));
        };
        if let Some(why) = schema.lossy().or_else(|| target.lossy()) {
            return Err(Error::Edit(format!(
                "values of tree {tree:?} do not survive JSON unchanged ({why}): migrate through the application (Tree::migrate)"
            )));
        }
        paths.insert(v, upgrade_path(&schemas, tree, v, to).map_err(Error::Edit)?);
    }
    // Then every record converted, without writing: a record that cannot be (corrupt, or
    // with a value the declared steps cannot carry) stops the migration before it starts.
    let mut failed = None;
    let (start, end) = layout::records(tree);
    each(db, start, end, |k, v| {
        if failed.is_none() {
            if let Err(e) = upgraded(&schemas, &paths, target, to, k, v) {
                failed = Some(e);
            }
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut out = Migrated {
        to,
        ..Migrated::default()
    };
    let total = keys.len() as u64;
    let mut done = 0;
    for chunk in keys.chunks(crate::MIGRATE_CHUNK) {
        let step = in_transaction!(db, |tx| {
            let mut step = Migrated::default();
            for at in chunk {
                let Some(stored) = tx.get(at).await? else {
                    continue;
                };
                match upgraded(&schemas, &paths, target, to, at, &stored.data)? {
                    Upgrade::Current => step.current += 1,
                    Upgrade::Later => step.later += 1,
                    Upgrade::To(bytes) => {
                        tx.set(at, crate::tree::record_value(bytes))?;
                        step.rewritten += 1;
                    }
                }
            }
            Ok::<_, Error>(step)
        })?;
        out.rewritten += step.rewritten;
        out.current += step.current;
        out.later += step.later;
        done += chunk.len() as u64;
        progress(done, total);
    }
    Ok(out)
}

/// What a record becomes in a migration.
enum Upgrade {
    /// At the target version already.
    Current,
    /// Written by a later version: left as it is.
    Later,
    /// The record at the target version.
    To(Vec<u8>),
}

/// The record stored at `at` (bytes `stored`) migrated to version `to` along `paths`.
fn upgraded(
    schemas: &BTreeMap<u32, Schema>,
    paths: &BTreeMap<u32, Vec<u32>>,
    target: &Schema,
    to: u32,
    at: &[u8],
    stored: &[u8],
) -> Result<Upgrade> {
    let key = layout::raw_key(at);
    let ((header, archive), _) = layout::open_all(stored).map_err(|detail| Error::Corrupt {
        key: key.clone(),
        detail,
    })?;
    let v = header.schema_version;
    if v == to {
        return Ok(Upgrade::Current);
    }
    if v > to {
        return Ok(Upgrade::Later);
    }
    let Some(path) = paths.get(&v) else {
        // Written meanwhile at a version not seen before.
        return Err(Error::Edit(format!(
            "record {key} was written at version {v} while migrating; run the migration again"
        )));
    };
    let mut value = View::new(&schemas[&v], archive)
        .to_value()
        .map_err(|e| Error::Corrupt {
            key: key.clone(),
            detail: format!("it does not read as version {v}'s schema: {e}"),
        })?;
    for version in path {
        value = upgrade_value(&schemas[version], value).map_err(|e| Error::Corrupt {
            key: key.clone(),
            detail: e,
        })?;
    }
    let archive = json::encode(target, &value).map_err(|m| {
        Error::Edit(format!(
            "record {key} upgraded does not fit version {to}: {m}"
        ))
    })?;
    Ok(Upgrade::To(layout::envelope_with(
        Header {
            flags: header.flags & RELEASED,
            schema_version: to,
        },
        &archive,
        None,
    )))
}
