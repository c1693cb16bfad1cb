//! Rows and their index entries, written together.
//!
//! A row lives at `Row(table, pk)`; each index has one entry per row at
//! `IndexEntry(table, index, indexed values, pk)` with an empty value. Writing or removing a
//! row always writes or removes its entries in the same transaction, so an index can never
//! disagree with its table in a committed state; `strata sql check` verifies exactly that.
//!
//! Uniqueness is checked by reading: the primary key by a point read of the row key, a
//! unique index by a range read of the entries with the same values. Those reads are part
//! of the transaction's conflict set, so two concurrent inserts of one value cannot both
//! commit.

use std::sync::Arc;

use strata_engine::prefix_end;

use crate::catalog::{IndexDef, TableDef};
use crate::codec::{self, Key};
use crate::error::{Result, SqlError};
use crate::tx::{resume_after, Tx, SCAN_CHUNK};
use crate::types::Datum;

/// The values an index holds for `row`.
pub fn index_values(def: &TableDef, index: &IndexDef, row: &[Datum]) -> Vec<Datum> {
    def.index_positions(index)
        .into_iter()
        .map(|i| row[i].clone())
        .collect()
}

pub fn row_key(def: &TableDef, pk: &[Datum]) -> Vec<u8> {
    Key::Row(def.id, pk).encode()
}

pub fn entry_key(def: &TableDef, index: &IndexDef, row: &[Datum], pk: &[Datum]) -> Vec<u8> {
    Key::IndexEntry(def.id, index.id, &index_values(def, index, row), pk).encode()
}

/// Write `row` and its index entries (no checks).
pub fn put_row(tx: &mut Tx, def: &TableDef, row: &[Datum], pk: &[Datum]) -> Result<()> {
    tx.put(&row_key(def, pk), def.encode_row(row))?;
    tx.count_rows(def.id, 1);
    for index in &def.indexes {
        tx.put(&entry_key(def, index, row, pk), Vec::new())?;
    }
    Ok(())
}

/// Remove `row` and its index entries.
pub fn remove_row(tx: &mut Tx, def: &TableDef, row: &[Datum], pk: &[Datum]) -> Result<()> {
    tx.delete(&row_key(def, pk))?;
    tx.count_rows(def.id, -1);
    for index in &def.indexes {
        tx.delete(&entry_key(def, index, row, pk))?;
    }
    Ok(())
}

/// The row stored under `pk`, if any.
pub async fn get_row(tx: &mut Tx, def: &TableDef, pk: &[Datum]) -> Result<Option<Vec<Datum>>> {
    match tx.get(&row_key(def, pk)).await? {
        Some(bytes) => Ok(Some(def.decode_row(&bytes)?)),
        None => Ok(None),
    }
}

/// A unique constraint a row would break, and the row that holds the value already.
#[derive(Debug)]
pub struct Conflict {
    pub constraint: String,
    pub pk: Vec<Datum>,
}

/// The first unique constraint `row` (with key `pk`) would violate against stored rows.
///
/// With `may_defer`, a deferring transaction ([`Tx::deferring`]) does not read the
/// primary key: it checks at commit that the key is still free. Only for a caller that
/// fails on a conflict (a plain INSERT), since a deferred conflict is found only at commit.
pub async fn conflict(
    tx: &mut Tx,
    def: &TableDef,
    row: &[Datum],
    pk: &[Datum],
    may_defer: bool,
) -> Result<Option<Conflict>> {
    if !def.has_rowid() && tx.row_exists(&row_key(def, pk), may_defer).await? {
        return Ok(Some(Conflict {
            constraint: def.pk_name.clone(),
            pk: pk.to_vec(),
        }));
    }
    for index in def.indexes.iter().filter(|i| i.unique) {
        let values = index_values(def, index, row);
        // NULLs are distinct from each other: a row with a NULL never conflicts.
        if values.iter().any(Datum::is_null) {
            continue;
        }
        let prefix = Key::IndexEntry(def.id, index.id, &values, &[]).encode();
        let found = tx.scan(&prefix, &prefix_end(&prefix), false, 2).await?;
        for (key, _) in found {
            let all = codec::index_key_values(&key, def.id, index.id)?;
            let other = all[index.columns.len().min(all.len())..].to_vec();
            if other != pk {
                return Ok(Some(Conflict {
                    constraint: index.name.clone(),
                    pk: other,
                }));
            }
        }
    }
    Ok(None)
}

pub fn unique_violation(def: &TableDef, c: &Conflict) -> SqlError {
    SqlError::UniqueViolation {
        table: def.name.clone(),
        constraint: c.constraint.clone(),
    }
}

/// The next value of a table's auto-assigned key: one more than the largest stored (as
/// SQLite assigns rowids), so explicit and assigned keys never collide.
pub async fn next_key(tx: &mut Tx, def: &TableDef) -> Result<i64> {
    let prefix = Key::Rows(def.id).encode();
    let last = tx.scan(&prefix, &prefix_end(&prefix), true, 1).await?;
    let max = match last.first() {
        Some((key, _)) => match codec::row_key_pk(key, def.id)?.first() {
            Some(Datum::Int(i)) => *i,
            _ => 0,
        },
        None => 0,
    };
    max.checked_add(1)
        .ok_or_else(|| SqlError::DataType(format!("table {:?} has run out of row ids", def.name)))
}

/// Fill a new index from the table's rows, in this transaction, checking uniqueness.
pub async fn backfill(tx: &mut Tx, def: &TableDef, index: &IndexDef) -> Result<u64> {
    let prefix = Key::Rows(def.id).encode();
    let end = prefix_end(&prefix);
    let mut start = prefix.clone();
    let mut count = 0u64;
    loop {
        let chunk = tx.scan(&start, &end, false, SCAN_CHUNK).await?;
        for (key, value) in &chunk {
            let pk = codec::row_key_pk(key, def.id)?;
            let row = def.decode_row(value)?;
            let values = index_values(def, index, &row);
            if index.unique && !values.iter().any(Datum::is_null) {
                let p = Key::IndexEntry(def.id, index.id, &values, &[]).encode();
                if !tx.scan(&p, &prefix_end(&p), false, 1).await?.is_empty() {
                    return Err(SqlError::UniqueViolation {
                        table: def.name.clone(),
                        constraint: index.name.clone(),
                    });
                }
            }
            tx.put(
                &Key::IndexEntry(def.id, index.id, &values, &pk).encode(),
                Vec::new(),
            )?;
            count += 1;
        }
        match resume_after(&chunk) {
            Some(next) => start = next,
            None => return Ok(count),
        }
    }
}

/// Where one step of an online index build left off.
pub enum BuildStep {
    /// More rows remain, from this key on.
    More(Vec<u8>),
    /// Every row has its entry.
    Done,
    /// The table or the index was dropped meanwhile: nothing left to build.
    Gone,
}

/// One chunk of an online CREATE INDEX: index up to [`SCAN_CHUNK`] rows from `from` (the
/// table's first row when `None`) in this transaction. Writers maintain the (not yet ready)
/// index themselves, and every row read here is in this transaction's read set, so a
/// concurrent change to one of them makes this chunk conflict and run again rather than
/// write a stale entry.
pub async fn backfill_chunk(
    tx: &mut Tx,
    table: &str,
    index: &str,
    from: Option<&[u8]>,
) -> Result<BuildStep> {
    let Some(def) = tx.table(table).await? else {
        return Ok(BuildStep::Gone);
    };
    let Some(idx) = def.indexes.iter().find(|i| i.name == index) else {
        return Ok(BuildStep::Gone);
    };
    if idx.ready {
        return Ok(BuildStep::Done);
    }
    let prefix = Key::Rows(def.id).encode();
    let end = prefix_end(&prefix);
    let start = from.map(<[u8]>::to_vec).unwrap_or(prefix);
    let chunk = tx.scan(&start, &end, false, SCAN_CHUNK).await?;
    for (key, value) in &chunk {
        let pk = codec::row_key_pk(key, def.id)?;
        let row = def.decode_row(value)?;
        let values = index_values(&def, idx, &row);
        let entry = Key::IndexEntry(def.id, idx.id, &values, &pk).encode();
        if idx.unique && !values.iter().any(Datum::is_null) {
            let p = Key::IndexEntry(def.id, idx.id, &values, &[]).encode();
            let found = tx.scan(&p, &prefix_end(&p), false, 2).await?;
            if found.iter().any(|(k, _)| *k != entry) {
                return Err(SqlError::UniqueViolation {
                    table: def.name.clone(),
                    constraint: idx.name.clone(),
                });
            }
        }
        tx.put(&entry, Vec::new())?;
    }
    Ok(match resume_after(&chunk) {
        Some(next) => BuildStep::More(next),
        None => BuildStep::Done,
    })
}

/// Mark a built index ready for queries; false when it is gone.
pub async fn finish_build(tx: &mut Tx, table: &str, index: &str) -> Result<bool> {
    let Some(def) = tx.table(table).await? else {
        return Ok(false);
    };
    let mut def = (*def).clone();
    let Some(idx) = def.indexes.iter_mut().find(|i| i.name == index) else {
        return Ok(false);
    };
    idx.ready = true;
    tx.put_table(def).await?;
    Ok(true)
}

/// Take a failed build's index out of the catalog; the key prefix of its entries, to purge.
pub async fn abandon_build(tx: &mut Tx, table: &str, index: &str) -> Result<Option<Vec<u8>>> {
    let Some(def) = tx.table(table).await? else {
        return Ok(None);
    };
    let mut def = (*def).clone();
    let Some(pos) = def.indexes.iter().position(|i| i.name == index && !i.ready) else {
        return Ok(None);
    };
    let idx = def.indexes.remove(pos);
    let prefix = Key::IndexEntries(def.id, idx.id).encode();
    tx.put_table(def).await?;
    Ok(Some(prefix))
}

/// What `strata sql check` found wrong with one table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckReport {
    pub table: String,
    pub rows: u64,
    pub entries: u64,
    pub problems: Vec<String>,
}

/// Verify that every index entry matches its row and every row has its entries.
pub async fn check_table(tx: &mut Tx, def: Arc<TableDef>) -> Result<CheckReport> {
    let mut report = CheckReport {
        table: def.name.clone(),
        ..Default::default()
    };
    let prefix = Key::Rows(def.id).encode();
    let end = prefix_end(&prefix);
    let mut start = prefix.clone();
    loop {
        let chunk = tx.scan(&start, &end, false, SCAN_CHUNK).await?;
        for (key, value) in &chunk {
            report.rows += 1;
            let pk = codec::row_key_pk(key, def.id)?;
            let row = match def.decode_row(value) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(format!("row {pk:?}: {e}"));
                    continue;
                }
            };
            // An index still being built (CREATE INDEX interrupted) lacks rows it has not
            // reached; its entries must still match their rows (checked below).
            for index in def.indexes.iter().filter(|i| i.ready) {
                if tx.get(&entry_key(&def, index, &row, &pk)).await?.is_none() {
                    report
                        .problems
                        .push(format!("row {pk:?} has no entry in index {}", index.name));
                }
            }
        }
        match resume_after(&chunk) {
            Some(next) => start = next,
            None => break,
        }
    }
    for index in &def.indexes {
        let prefix = Key::IndexEntries(def.id, index.id).encode();
        let end = prefix_end(&prefix);
        let mut start = prefix.clone();
        loop {
            let chunk = tx.scan(&start, &end, false, SCAN_CHUNK).await?;
            for (key, _) in &chunk {
                report.entries += 1;
                let all = codec::index_key_values(key, def.id, index.id)?;
                let split = index.columns.len().min(all.len());
                let (values, pk) = all.split_at(split);
                match get_row(tx, &def, pk).await? {
                    None => report.problems.push(format!(
                        "index {} has an entry for missing row {pk:?}",
                        index.name
                    )),
                    Some(row) if index_values(&def, index, &row) != values => {
                        report.problems.push(format!(
                            "index {} entry for row {pk:?} holds {values:?}, the row holds {:?}",
                            index.name,
                            index_values(&def, index, &row)
                        ))
                    }
                    Some(_) => {}
                }
            }
            match resume_after(&chunk) {
                Some(next) => start = next,
                None => break,
            }
        }
    }
    // The row count the planner reads must be the number of rows (where the table has one).
    let (shards, counted) = crate::stats::shards(tx.engine_txn(), def.id).await?;
    if !shards.is_empty() && counted != report.rows as i64 {
        report.problems.push(format!(
            "the row count says {counted} rows, the table has {}",
            report.rows
        ));
    }
    Ok(report)
}
