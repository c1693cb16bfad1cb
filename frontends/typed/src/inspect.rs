//! What is stored in a database's typed trees, read without the record types: the trees,
//! and each record's revision, schema version, state, size and check-out. (Field values
//! need the application's types.)

use std::collections::BTreeMap;

use serde::Serialize;
use strata_engine::Database;

use crate::checkout::LeaseRecord;
use crate::layout::{self, Kind, RELEASED};
use crate::Result;

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
}

/// One stored revision of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
            problem: None,
        };
        match layout::open_all(v) {
            Ok(((h, _), compat)) => {
                info.schema_version = Some(h.schema_version);
                info.released = h.flags & RELEASED != 0;
                info.compatible_with = compat.map(|(v, _)| v);
            }
            Err(e) => info.problem = Some(e),
        }
        out.push(info);
    })
    .await?;
    let now = strata_engine::now_ms();
    for info in &mut out {
        if let Some(e) = db.get(&layout::lease(tree, info.id)).await? {
            info.checked_out_by = holder(&e.value.data, now);
        }
    }
    Ok(out)
}
