//! The catalog: table, index and view definitions, stored as keys in the database they
//! describe.
//!
//! A definition is JSON under its [`Key`](crate::codec::Key) (`Table(name)`, `View(name)`),
//! read and written inside the statement's transaction like any row. DDL is therefore
//! transactional, and a statement that read a definition conflicts with a concurrent DDL
//! statement that changed it: the engine's conflict check covers the schema too. Every DDL
//! statement also bumps [`Key::SchemaVersion`](crate::codec::Key::SchemaVersion), which is
//! what cached plans of prepared statements are checked against.
//!
//! Columns, tables and indexes have ids that never change. Rows refer to columns by id, so
//! renaming or dropping a column rewrites no row.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::types::{Datum, SqlType};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnDef {
    pub id: u32,
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// The DEFAULT expression, as SQL text.
    #[serde(default)]
    pub default: Option<String>,
    /// Filled from the table's sequence when the insert leaves it out (or gives NULL).
    #[serde(default)]
    pub auto_increment: bool,
    /// The value rows written before this column existed have.
    #[serde(default)]
    pub added_default: Option<StoredDatum>,
}

/// A datum as the catalog stores it (JSON-friendly).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredDatum(#[serde(with = "stored_datum")] pub Datum);

mod stored_datum {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Datum;

    pub fn serialize<S: Serializer>(d: &Datum, s: S) -> Result<S::Ok, S::Error> {
        let bytes = crate::codec::encode(std::slice::from_ref(d));
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Datum, D::Error> {
        let bytes: Vec<u8> = Vec::deserialize(d)?;
        let mut values = crate::codec::decode(&bytes).map_err(serde::de::Error::custom)?;
        values
            .pop()
            .ok_or_else(|| serde::de::Error::custom("empty stored datum"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexDef {
    pub id: u64,
    pub name: String,
    /// Column ids, in index order.
    pub columns: Vec<u32>,
    pub unique: bool,
    /// False while CREATE INDEX is still filling it: writers maintain it, readers skip it.
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckDef {
    pub name: String,
    /// The boolean expression, as SQL text.
    pub expr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForeignKeyDef {
    pub name: String,
    pub columns: Vec<u32>,
    pub parent: String,
    /// The parent's columns, by name (its primary key or a unique index).
    pub parent_columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableDef {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column ids of the primary key; empty means a hidden rowid (as in SQLite).
    pub primary_key: Vec<u32>,
    pub indexes: Vec<IndexDef>,
    #[serde(default)]
    pub checks: Vec<CheckDef>,
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKeyDef>,
    pub next_column_id: u32,
    /// The name of the primary key constraint, for error messages.
    pub pk_name: String,
    /// Foreign keys of other tables (or this one) that point here: (table, constraint).
    #[serde(default)]
    pub referenced_by: Vec<(String, String)>,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn column_by_id(&self, id: u32) -> Option<(usize, &ColumnDef)> {
        self.columns.iter().enumerate().find(|(_, c)| c.id == id)
    }

    /// Positions (in `columns`) of the primary-key columns.
    pub fn pk_positions(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|id| self.column_by_id(*id).map(|(i, _)| i))
            .collect()
    }

    pub fn has_rowid(&self) -> bool {
        self.primary_key.is_empty()
    }

    /// Positions of an index's columns.
    pub fn index_positions(&self, index: &IndexDef) -> Vec<usize> {
        index
            .columns
            .iter()
            .filter_map(|id| self.column_by_id(*id).map(|(i, _)| i))
            .collect()
    }

    /// The Arrow schema DataFusion sees (visible columns only).
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.arrow_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The primary-key tuple of a full row (`rowid` for tables without a declared key).
    pub fn pk_of(&self, row: &[Datum], rowid: Option<i64>) -> Vec<Datum> {
        if self.has_rowid() {
            vec![Datum::Int(rowid.unwrap_or_default())]
        } else {
            self.pk_positions()
                .into_iter()
                .map(|i| row[i].clone())
                .collect()
        }
    }

    /// Encode a full row as stored.
    pub fn encode_row(&self, row: &[Datum]) -> Vec<u8> {
        let pairs: Vec<(u32, &Datum)> = self.columns.iter().map(|c| c.id).zip(row).collect();
        crate::codec::encode_row(&pairs)
    }

    /// Decode a stored row into the table's current columns.
    pub fn decode_row(&self, bytes: &[u8]) -> crate::Result<Vec<Datum>> {
        let mut row: Vec<Datum> = self
            .columns
            .iter()
            .map(|c| {
                c.added_default
                    .as_ref()
                    .map(|d| d.0.clone())
                    .unwrap_or(Datum::Null)
            })
            .collect();
        crate::codec::decode_row_into(bytes, |id| self.column_by_id(id).map(|(i, _)| i), &mut row)?;
        Ok(row)
    }
}

/// Decodes stored rows of a table, only the columns a reader needs: the others are
/// stepped over and read as NULL.
pub struct RowDecoder {
    /// Position in the row of each column id that is decoded.
    slots: Vec<Option<usize>>,
    /// A row before its stored values: added defaults, NULL elsewhere.
    defaults: Vec<Datum>,
    /// The positions that are decoded; a fresh row holds NULL at the others.
    wanted: Vec<usize>,
}

impl RowDecoder {
    pub fn new(def: &TableDef, wanted: impl Fn(usize) -> bool) -> Self {
        let max_id = def.columns.iter().map(|c| c.id).max().unwrap_or(0) as usize;
        let mut slots = vec![None; max_id + 1];
        let mut defaults = vec![Datum::Null; def.columns.len()];
        let mut decoded = Vec::new();
        for (i, c) in def.columns.iter().enumerate() {
            if wanted(i) {
                decoded.push(i);
                slots[c.id as usize] = Some(i);
                if let Some(d) = &c.added_default {
                    defaults[i] = d.0.clone();
                }
            }
        }
        RowDecoder {
            slots,
            defaults,
            wanted: decoded,
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> crate::Result<Vec<Datum>> {
        let mut row = Vec::new();
        self.decode_into(bytes, &mut row)?;
        Ok(row)
    }

    /// Decode into `row`, reusing its allocation. A row of the table's width keeps what it
    /// holds at the positions this decoder skips (callers read only the decoded ones);
    /// another row is first reset to the defaults.
    pub fn decode_into(&self, bytes: &[u8], row: &mut Vec<Datum>) -> crate::Result<()> {
        if row.len() == self.defaults.len() {
            for &i in &self.wanted {
                row[i].clone_from(&self.defaults[i]);
            }
        } else {
            row.clone_from(&self.defaults);
        }
        crate::codec::decode_some_into(
            bytes,
            |id| self.slots.get(id as usize).copied().flatten(),
            self.wanted.len(),
            row,
        )
    }

    /// [`RowDecoder::decode_into`] reading the values in place: `row` becomes the row's
    /// values (NULL at the positions this decoder skips). Each value read is shown to
    /// `check` with its position, and the first it refuses ends the read: see
    /// [`crate::codec::read_checked_into`] for what the answer means.
    pub fn read_checked<'a>(
        &'a self,
        bytes: &'a [u8],
        row: &mut Vec<crate::types::DatumRef<'a>>,
        check: impl FnMut(usize, crate::types::DatumRef<'a>) -> bool,
    ) -> crate::Result<Option<bool>> {
        row.clear();
        row.resize(self.defaults.len(), crate::types::DatumRef::Null);
        for &i in &self.wanted {
            row[i] = self.defaults[i].as_ref();
        }
        crate::codec::read_checked_into(
            bytes,
            |id| self.slots.get(id as usize).copied().flatten(),
            self.wanted.len(),
            row,
            check,
        )
    }
}

/// A view: a name for a query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ViewDef {
    pub name: String,
    pub sql: String,
}
