//! PostgreSQL's system catalogs, so that tools written for PostgreSQL (psql's `\d`, `\l`,
//! `\dt`, `\di`, drivers' type lookups) can read what a database holds.
//!
//! Every database has a `pg_catalog` schema beside `public`. Its tables are built from the
//! SQL catalog the statement's transaction reads — tables, columns, defaults, primary keys,
//! indexes, checks, foreign keys, views — once per statement and schema version, and served
//! as in-memory tables. Unqualified `pg_…` names fall back to them when no table of that
//! name exists, since PostgreSQL searches `pg_catalog` implicitly.
//!
//! Object ids are stable across statements, so a tool may read an oid in one query and use
//! it in the next: a table's oid is derived from its catalog id, its primary key's index
//! from the same id, other objects from their names.
//!
//! Catalogs of features Strata does not have (policies, triggers, publications, inheritance,
//! extended statistics, collations, comments) exist and are empty. A query that reads one of
//! them through an inner join can return no rows, whatever else it says; [`prune_empty`]
//! replaces such a query by an empty one with the same column names before planning, so
//! PostgreSQL-only syntax in it (arrays, set-returning functions) never reaches the planner.
//!
//! The functions psql calls are here too ([`functions`]): `format_type`, `pg_get_indexdef`,
//! `pg_get_constraintdef`, `pg_get_expr`, `pg_get_userbyid`, `pg_table_is_visible`, the
//! `::regclass`-style casts (rewritten to calls by [`rewrite_expr`]), and a few more.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor,
    VisitMut, VisitorMut,
};

use crate::catalog::TableDef;
use crate::codec::Key;
use crate::error::{Result, SqlError};
use crate::planner::Context;
use crate::types::SqlType;

/// The schema name.
pub const SCHEMA: &str = "pg_catalog";

/// The role every object belongs to, and its oid.
const OWNER: &str = "strata";
const OWNER_OID: i64 = 10;
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const HEAP_AM: i64 = 2;
const BTREE_AM: i64 = 403;
/// PostgreSQL's first oid for user objects.
const FIRST_USER_OID: i64 = 16384;
/// Oids derived from names live above this (below it: ids from the SQL catalog).
const NAMED_OIDS: i64 = 0x4000_0000;

fn table_oid(id: u64) -> i64 {
    FIRST_USER_OID + 2 * id as i64
}

/// The primary key's index (and constraint) shares its table's id.
fn pk_oid(id: u64) -> i64 {
    table_oid(id) + 1
}

/// An oid for an object known by name only (views, checks, foreign keys, defaults,
/// databases): stable for as long as the name is.
fn named_oid(kind: &str, parts: &[&str]) -> i64 {
    // FNV-1a: fixed across processes and versions, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in std::iter::once(kind).chain(parts.iter().copied()) {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    NAMED_OIDS + (h & 0x3fff_ffff) as i64
}

// ---------------------------------------------------------------------------------------
// Types

/// A PostgreSQL type: oid, name, length, category.
struct PgType {
    oid: i64,
    name: &'static str,
    len: i64,
    category: &'static str,
}

const TYPES: &[PgType] = &[
    PgType {
        oid: 16,
        name: "bool",
        len: 1,
        category: "B",
    },
    PgType {
        oid: 17,
        name: "bytea",
        len: -1,
        category: "U",
    },
    PgType {
        oid: 18,
        name: "char",
        len: 1,
        category: "Z",
    },
    PgType {
        oid: 19,
        name: "name",
        len: 64,
        category: "S",
    },
    PgType {
        oid: 20,
        name: "int8",
        len: 8,
        category: "N",
    },
    PgType {
        oid: 21,
        name: "int2",
        len: 2,
        category: "N",
    },
    PgType {
        oid: 23,
        name: "int4",
        len: 4,
        category: "N",
    },
    PgType {
        oid: 25,
        name: "text",
        len: -1,
        category: "S",
    },
    PgType {
        oid: 26,
        name: "oid",
        len: 4,
        category: "N",
    },
    PgType {
        oid: 700,
        name: "float4",
        len: 4,
        category: "N",
    },
    PgType {
        oid: 701,
        name: "float8",
        len: 8,
        category: "N",
    },
    PgType {
        oid: 1042,
        name: "bpchar",
        len: -1,
        category: "S",
    },
    PgType {
        oid: 1043,
        name: "varchar",
        len: -1,
        category: "S",
    },
    PgType {
        oid: 1082,
        name: "date",
        len: 4,
        category: "D",
    },
    PgType {
        oid: 1083,
        name: "time",
        len: 8,
        category: "D",
    },
    PgType {
        oid: 1114,
        name: "timestamp",
        len: 8,
        category: "D",
    },
    PgType {
        oid: 1184,
        name: "timestamptz",
        len: 8,
        category: "D",
    },
    PgType {
        oid: 1186,
        name: "interval",
        len: 16,
        category: "T",
    },
    PgType {
        oid: 1700,
        name: "numeric",
        len: -1,
        category: "N",
    },
    PgType {
        oid: 2950,
        name: "uuid",
        len: 16,
        category: "U",
    },
    PgType {
        oid: 3802,
        name: "jsonb",
        len: -1,
        category: "U",
    },
    PgType {
        oid: 114,
        name: "json",
        len: -1,
        category: "U",
    },
];

/// The oid and type modifier of a column type.
fn sql_type(ty: &SqlType) -> (i64, i64) {
    match ty {
        SqlType::Boolean => (16, -1),
        SqlType::SmallInt => (21, -1),
        SqlType::Integer => (23, -1),
        SqlType::BigInt => (20, -1),
        SqlType::Real => (700, -1),
        SqlType::Double => (701, -1),
        SqlType::Decimal { precision, scale } => (
            1700,
            (((*precision as i64) << 16) | (*scale as i64 & 0xffff)) + 4,
        ),
        SqlType::Text => (25, -1),
        SqlType::Varchar(n) => (1043, *n as i64 + 4),
        SqlType::Char(n) => (1042, *n as i64 + 4),
        SqlType::Blob => (17, -1),
        SqlType::Date => (1082, -1),
        SqlType::Timestamp => (1114, -1),
    }
}

/// The oid and type modifier of a result column (a view's).
fn arrow_type(ty: &DataType) -> (i64, i64) {
    match ty {
        DataType::Boolean => (16, -1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (21, -1),
        DataType::Int32 | DataType::UInt16 => (23, -1),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (20, -1),
        DataType::Float16 | DataType::Float32 => (700, -1),
        DataType::Float64 => (701, -1),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (1700, (((*p as i64) << 16) | (*s as i64 & 0xffff)) + 4)
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => (17, -1),
        DataType::Date32 | DataType::Date64 => (1082, -1),
        DataType::Timestamp(_, None) => (1114, -1),
        DataType::Timestamp(_, Some(_)) => (1184, -1),
        _ => (25, -1),
    }
}

/// `format_type(oid, typmod)`: the name psql shows for a column's type.
fn format_type(oid: i64, typmod: i64) -> Option<String> {
    let with_length = |name: &str| {
        if typmod >= 4 {
            format!("{name}({})", typmod - 4)
        } else {
            name.to_string()
        }
    };
    Some(match oid {
        16 => "boolean".into(),
        17 => "bytea".into(),
        18 => "\"char\"".into(),
        19 => "name".into(),
        20 => "bigint".into(),
        21 => "smallint".into(),
        23 => "integer".into(),
        25 => "text".into(),
        26 => "oid".into(),
        114 => "json".into(),
        700 => "real".into(),
        701 => "double precision".into(),
        1042 => with_length("character"),
        1043 => with_length("character varying"),
        1082 => "date".into(),
        1083 => "time without time zone".into(),
        1114 => "timestamp without time zone".into(),
        1184 => "timestamp with time zone".into(),
        1186 => "interval".into(),
        1700 if typmod >= 4 => {
            let m = typmod - 4;
            format!("numeric({},{})", m >> 16, m & 0xffff)
        }
        1700 => "numeric".into(),
        2950 => "uuid".into(),
        3802 => "jsonb".into(),
        0 => "-".into(),
        _ => "???".into(),
    })
}

// ---------------------------------------------------------------------------------------
// Tables

/// One value of a catalog row.
#[derive(Clone)]
enum V {
    I(i64),
    S(String),
    B(bool),
    F(f64),
    N,
}

fn s(text: impl Into<String>) -> V {
    V::S(text.into())
}

/// A catalog table being filled: its columns (`i` int8, `s` text, `b` bool, `f` float8)
/// and its rows.
struct Builder {
    fields: Vec<(String, char)>,
    rows: Vec<Vec<V>>,
}

impl Builder {
    fn new(columns: &str) -> Builder {
        let fields = columns
            .split_whitespace()
            .map(|c| {
                let (name, ty) = c.split_once(':').unwrap_or((c, "s"));
                (name.to_string(), ty.chars().next().unwrap_or('s'))
            })
            .collect();
        Builder {
            fields,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<V>) {
        self.rows.push(row);
    }

    /// The table. Rows are written in this file; one of the wrong width is a bug, reported
    /// as an internal error rather than a short table.
    fn finish(self, table: &str) -> Result<RecordBatch> {
        if let Some(row) = self.rows.iter().find(|r| r.len() != self.fields.len()) {
            return Err(SqlError::Internal(format!(
                "{table}: a row of {} values for {} columns",
                row.len(),
                self.fields.len()
            )));
        }
        let schema = Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|(name, ty)| Field::new(name.as_str(), dtype(*ty), true))
                .collect::<Vec<_>>(),
        ));
        let columns = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                let null = ScalarValue::try_from(&dtype(*ty))?;
                let cells = self.rows.iter().map(|r| match &r[i] {
                    V::I(n) => ScalarValue::Int64(Some(*n)),
                    V::S(t) => ScalarValue::Utf8(Some(t.clone())),
                    V::B(b) => ScalarValue::Boolean(Some(*b)),
                    V::F(f) => ScalarValue::Float64(Some(*f)),
                    V::N => null.clone(),
                });
                if self.rows.is_empty() {
                    Ok(datafusion::arrow::array::new_empty_array(&dtype(*ty)))
                } else {
                    ScalarValue::iter_to_array(cells)
                }
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        RecordBatch::try_new(schema, columns)
            .map_err(|e| SqlError::Internal(format!("{table}: {e}")))
    }
}

fn dtype(ty: char) -> DataType {
    match ty {
        'i' => DataType::Int64,
        'b' => DataType::Boolean,
        'f' => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// The columns of each catalog table (`name:type`, type `s` when left out).
const COLUMNS: &[(&str, &str)] = &[
    ("pg_namespace", "oid:i nspname nspowner:i nspacl"),
    (
        "pg_class",
        "oid:i relname relnamespace:i reltype:i reloftype:i relowner:i relam:i relfilenode:i \
         reltablespace:i relpages:i reltuples:f relallvisible:i reltoastrelid:i relhasindex:b \
         relisshared:b relpersistence relkind relnatts:i relchecks:i relhasrules:b \
         relhastriggers:b relhassubclass:b relrowsecurity:b relforcerowsecurity:b \
         relispopulated:b relreplident relispartition:b relrewrite:i relfrozenxid:i \
         relminmxid:i relacl reloptions relpartbound",
    ),
    (
        "pg_attribute",
        "attrelid:i attname atttypid:i attstattarget:i attlen:i attnum:i attndims:i \
         attcacheoff:i atttypmod:i attbyval:b attalign attstorage attcompression attnotnull:b \
         atthasdef:b atthasmissing:b attidentity attgenerated attisdropped:b attislocal:b \
         attinhcount:i attcollation:i attacl attoptions attfdwoptions attmissingval",
    ),
    ("pg_attrdef", "oid:i adrelid:i adnum:i adbin"),
    (
        "pg_index",
        "indexrelid:i indrelid:i indnatts:i indnkeyatts:i indisunique:b \
         indnullsnotdistinct:b indisprimary:b indisexclusion:b indimmediate:b \
         indisclustered:b indisvalid:b indcheckxmin:b indisready:b indislive:b \
         indisreplident:b indkey indcollation indclass indoption indexprs indpred",
    ),
    (
        "pg_constraint",
        "oid:i conname connamespace:i contype condeferrable:b condeferred:b convalidated:b \
         conrelid:i contypid:i conindid:i conparentid:i confrelid:i confupdtype confdeltype \
         confmatchtype conislocal:b coninhcount:i connoinherit:b conkey confkey conbin",
    ),
    (
        "pg_type",
        "oid:i typname typnamespace:i typowner:i typlen:i typbyval:b typtype typcategory \
         typispreferred:b typisdefined:b typdelim typrelid:i typsubscript typelem:i \
         typarray:i typinput typoutput typreceive typsend typalign typstorage typnotnull:b \
         typbasetype:i typtypmod:i typndims:i typcollation:i typdefault typacl",
    ),
    ("pg_am", "oid:i amname amhandler amtype"),
    (
        "pg_database",
        "oid:i datname datdba:i encoding:i datlocprovider datistemplate:b datallowconn:b \
         datconnlimit:i datfrozenxid:i datminmxid:i dattablespace:i datcollate datctype \
         daticulocale datcollversion datacl",
    ),
    (
        "pg_roles",
        "oid:i rolname rolsuper:b rolinherit:b rolcreaterole:b rolcreatedb:b rolcanlogin:b \
         rolreplication:b rolconnlimit:i rolpassword rolvaliduntil rolbypassrls:b rolconfig",
    ),
    (
        "pg_user",
        "usename usesysid:i usecreatedb:b usesuper:b userepl:b usebypassrls:b",
    ),
    (
        "pg_tablespace",
        "oid:i spcname spcowner:i spcacl spcoptions",
    ),
    (
        "pg_tables",
        "schemaname tablename tableowner tablespace hasindexes:b hasrules:b hastriggers:b \
         rowsecurity:b",
    ),
    ("pg_views", "schemaname viewname viewowner definition"),
    (
        "pg_indexes",
        "schemaname tablename indexname tablespace indexdef",
    ),
    (
        "pg_settings",
        "name setting unit category short_desc context vartype source",
    ),
    // Always empty: features Strata does not have.
    (
        "pg_description",
        "objoid:i classoid:i objsubid:i description",
    ),
    (
        "pg_collation",
        "oid:i collname collnamespace:i collowner:i collprovider collencoding:i",
    ),
    (
        "pg_policy",
        "oid:i polname polrelid:i polcmd polpermissive:b polroles polqual polwithcheck",
    ),
    (
        "pg_statistic_ext",
        "oid:i stxrelid:i stxname stxnamespace:i stxowner:i stxstattarget:i stxkeys stxkind",
    ),
    ("pg_publication", "oid:i pubname pubowner:i puballtables:b"),
    (
        "pg_publication_rel",
        "oid:i prpubid:i prrelid:i prqual prattrs",
    ),
    ("pg_publication_namespace", "oid:i pnpubid:i pnnspid:i"),
    (
        "pg_inherits",
        "inhrelid:i inhparent:i inhseqno:i inhdetachpending:b",
    ),
    (
        "pg_trigger",
        "oid:i tgrelid:i tgparentid:i tgname tgfoid:i tgtype:i tgenabled tgisinternal:b",
    ),
    (
        "pg_rewrite",
        "oid:i rulename ev_class:i ev_type ev_enabled is_instead:b",
    ),
    (
        "pg_proc",
        "oid:i proname pronamespace:i proowner:i prokind prorettype:i",
    ),
    ("pg_partitioned_table", "partrelid:i partstrat partnatts:i"),
    ("pg_foreign_table", "ftrelid:i ftserver:i"),
    (
        "pg_extension",
        "oid:i extname extowner:i extnamespace:i extversion",
    ),
    (
        "pg_sequence",
        "seqrelid:i seqtypid:i seqstart:i seqincrement:i seqmax:i seqmin:i",
    ),
    // The SQL standard's views, for tools that read them instead.
    (
        "information_schema.schemata",
        "catalog_name schema_name schema_owner",
    ),
    (
        "information_schema.tables",
        "table_catalog table_schema table_name table_type is_insertable_into",
    ),
    (
        "information_schema.columns",
        "table_catalog table_schema table_name column_name ordinal_position:i column_default \
         is_nullable data_type character_maximum_length:i numeric_precision:i numeric_scale:i \
         datetime_precision:i udt_name is_identity is_generated",
    ),
    (
        "information_schema.views",
        "table_catalog table_schema table_name view_definition",
    ),
    (
        "information_schema.table_constraints",
        "constraint_catalog constraint_schema constraint_name table_catalog table_schema \
         table_name constraint_type",
    ),
    (
        "information_schema.key_column_usage",
        "constraint_catalog constraint_schema constraint_name table_catalog table_schema \
         table_name column_name ordinal_position:i",
    ),
];

/// The other schema of system views, and the prefix its tables have in [`COLUMNS`].
pub const INFORMATION_SCHEMA: &str = "information_schema";
const INFO: &str = "information_schema.";

/// The catalogs that are always empty (see the module comment).
const EMPTY: &[&str] = &[
    "pg_description",
    "pg_collation",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_inherits",
    "pg_trigger",
    "pg_rewrite",
    "pg_partitioned_table",
    "pg_foreign_table",
    "pg_extension",
];

/// Whether `name` is a table of `pg_catalog` (or, written `information_schema.name`, of
/// `information_schema`).
pub fn is_table(name: &str) -> bool {
    COLUMNS.iter().any(|(t, _)| *t == name)
}

/// The standard's name for a column type (`information_schema.columns.data_type`).
fn standard_type(oid: i64) -> &'static str {
    match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1114 => "timestamp without time zone",
        1700 => "numeric",
        _ => "text",
    }
}

fn builder(table: &str) -> Builder {
    let columns = COLUMNS
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, c)| *c)
        .unwrap_or("");
    Builder::new(columns)
}

/// The catalog tables of one database, as one statement (at one schema version) sees them,
/// and what the catalog functions look up.
pub struct Snapshot {
    catalog: String,
    version: u64,
    tables: HashMap<String, RecordBatch>,
    /// Relation names by oid.
    relations: HashMap<i64, String>,
    /// `pg_get_viewdef` by view oid.
    view_defs: HashMap<i64, String>,
    /// `pg_get_indexdef` by index oid: the statement and the key columns.
    index_defs: HashMap<i64, (String, Vec<String>)>,
    /// `pg_get_constraintdef` by constraint oid.
    constraint_defs: HashMap<i64, String>,
    types: HashMap<i64, String>,
    namespaces: HashMap<i64, String>,
}

impl Snapshot {
    fn table(&self, name: &str) -> Option<RecordBatch> {
        self.tables.get(name).cloned()
    }

    fn oid_of(&self, relation: &str) -> Option<i64> {
        oid_named(&self.relations, relation)
    }
}

/// The oid of `name` (schema-qualified or quoted, as casts write it) in `names`.
fn oid_named(names: &HashMap<i64, String>, name: &str) -> Option<i64> {
    let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    names
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .map(|(o, _)| *o)
}

/// Build the catalog tables of `catalog` (a DataFusion catalog name).
async fn build(ctx: &Context, catalog: &str) -> Result<Snapshot> {
    let db = ctx.resolve(catalog).await?;
    let source = ctx.source(&db).await?;
    let version = source.schema_version().await?;
    let mut defs: Vec<Arc<TableDef>> = Vec::new();
    for name in source.names(Key::Table("")).await? {
        if let Some(def) = source.table(&name).await? {
            defs.push(def);
        }
    }
    let mut views = Vec::new();
    for name in source.names(Key::View("")).await? {
        if let Some(view) = source.view(&name).await? {
            // A view's columns are its query's; a view that no longer plans has none.
            let schema = match ctx.lookup(catalog, &name).await {
                Ok(Some(p)) => Some(p.schema()),
                _ => None,
            };
            views.push((view, schema));
        }
    }
    let databases = ctx.engine.list_databases().await?;

    let mut snap = Snapshot {
        catalog: catalog.to_string(),
        version,
        tables: HashMap::new(),
        relations: HashMap::new(),
        view_defs: HashMap::new(),
        index_defs: HashMap::new(),
        constraint_defs: HashMap::new(),
        types: TYPES.iter().map(|t| (t.oid, t.name.to_string())).collect(),
        namespaces: [(PG_CATALOG_OID, SCHEMA), (PUBLIC_OID, "public")]
            .into_iter()
            .map(|(o, n)| (o, n.to_string()))
            .collect(),
    };
    let by_name: HashMap<&str, &TableDef> = defs.iter().map(|d| (d.name.as_str(), &**d)).collect();

    let mut class = builder("pg_class");
    let mut attribute = builder("pg_attribute");
    let mut attrdef = builder("pg_attrdef");
    let mut index = builder("pg_index");
    let mut constraint = builder("pg_constraint");
    let mut tables = builder("pg_tables");
    let mut indexes = builder("pg_indexes");
    let mut pg_views = builder("pg_views");

    let class_row =
        |oid: i64, name: &str, kind: &str, am: i64, natts: usize, t: Option<&TableDef>| {
            let (has_index, checks, triggers) = match t {
                Some(t) => (
                    !t.primary_key.is_empty() || !t.indexes.is_empty(),
                    t.checks.len() as i64,
                    !t.foreign_keys.is_empty() || !t.referenced_by.is_empty(),
                ),
                None => (false, 0, false),
            };
            vec![
                V::I(oid),
                s(name),
                V::I(PUBLIC_OID),
                V::I(0),
                V::I(0),
                V::I(OWNER_OID),
                V::I(am),
                V::I(oid),
                V::I(0),
                V::I(0),
                V::F(-1.0),
                V::I(0),
                V::I(0),
                V::B(has_index),
                V::B(false),
                s("p"),
                s(kind),
                V::I(natts as i64),
                V::I(checks),
                V::B(false),
                V::B(triggers),
                V::B(false),
                V::B(false),
                V::B(false),
                V::B(true),
                s("d"),
                V::B(false),
                V::I(0),
                V::I(0),
                V::I(0),
                V::N,
                V::N,
                V::N,
            ]
        };
    let attribute_row = |rel: i64,
                         name: &str,
                         num: usize,
                         (ty, typmod): (i64, i64),
                         not_null: bool,
                         has_default: bool| {
        let len = TYPES.iter().find(|t| t.oid == ty).map_or(-1, |t| t.len);
        let collation = if matches!(ty, 25 | 1042 | 1043) {
            100
        } else {
            0
        };
        vec![
            V::I(rel),
            s(name),
            V::I(ty),
            V::I(-1),
            V::I(len),
            V::I(num as i64),
            V::I(0),
            V::I(-1),
            V::I(typmod),
            V::B(len > 0 && len <= 8),
            s(if len == 8 { "d" } else { "i" }),
            s(if len < 0 { "x" } else { "p" }),
            s(""),
            V::B(not_null),
            V::B(has_default),
            V::B(false),
            s(""),
            s(""),
            V::B(false),
            V::B(true),
            V::I(0),
            V::I(collation),
            V::N,
            V::N,
            V::N,
            V::N,
        ]
    };

    for t in &defs {
        let oid = table_oid(t.id);
        snap.relations.insert(oid, t.name.clone());
        class.push(class_row(
            oid,
            &t.name,
            "r",
            HEAP_AM,
            t.columns.len(),
            Some(t),
        ));
        for (i, c) in t.columns.iter().enumerate() {
            attribute.push(attribute_row(
                oid,
                &c.name,
                i + 1,
                sql_type(&c.ty),
                !c.nullable,
                c.default.is_some(),
            ));
            if let Some(d) = &c.default {
                attrdef.push(vec![
                    V::I(named_oid("default", &[&t.name, &c.name])),
                    V::I(oid),
                    V::I(i as i64 + 1),
                    s(d.clone()),
                ]);
            }
        }
        let column_name = |id: u32| {
            t.column_by_id(id)
                .map(|(_, c)| c.name.clone())
                .unwrap_or_default()
        };
        // The primary key, then the secondary indexes: each an index relation, its
        // columns, a pg_index row.
        let mut keyed = Vec::new();
        if !t.primary_key.is_empty() {
            keyed.push(IndexRel {
                oid: pk_oid(t.id),
                name: &t.pk_name,
                columns: &t.primary_key,
                unique: true,
                primary: true,
                ready: true,
            });
        }
        for ix in &t.indexes {
            keyed.push(IndexRel {
                oid: table_oid(ix.id),
                name: &ix.name,
                columns: &ix.columns,
                unique: ix.unique,
                primary: false,
                ready: ix.ready,
            });
        }
        for IndexRel {
            oid: ix_oid,
            name,
            columns,
            unique,
            primary,
            ready,
        } in keyed
        {
            snap.relations.insert(ix_oid, name.to_string());
            class.push(class_row(ix_oid, name, "i", BTREE_AM, columns.len(), None));
            let mut names = Vec::new();
            let mut key = Vec::new();
            for (k, id) in columns.iter().enumerate() {
                let Some((pos, c)) = t.column_by_id(*id) else {
                    continue;
                };
                attribute.push(attribute_row(
                    ix_oid,
                    &c.name,
                    k + 1,
                    sql_type(&c.ty),
                    false,
                    false,
                ));
                names.push(quote_ident(&c.name));
                key.push((pos + 1).to_string());
            }
            let def = format!(
                "CREATE {}INDEX {} ON public.{} USING btree ({})",
                if unique { "UNIQUE " } else { "" },
                quote_ident(name),
                quote_ident(&t.name),
                names.join(", ")
            );
            indexes.push(vec![
                s("public"),
                s(t.name.clone()),
                s(name),
                V::N,
                s(def.clone()),
            ]);
            snap.index_defs.insert(ix_oid, (def, names.clone()));
            index.push(vec![
                V::I(ix_oid),
                V::I(oid),
                V::I(columns.len() as i64),
                V::I(columns.len() as i64),
                V::B(unique),
                V::B(false),
                V::B(primary),
                V::B(false),
                V::B(true),
                V::B(false),
                V::B(ready),
                V::B(false),
                V::B(ready),
                V::B(true),
                V::B(false),
                s(key.join(" ")),
                V::N,
                V::N,
                V::N,
                V::N,
                V::N,
            ]);
            if primary {
                let def = format!("PRIMARY KEY ({})", names.join(", "));
                snap.constraint_defs.insert(ix_oid, def);
                constraint.push(constraint_row(
                    ix_oid,
                    name,
                    "p",
                    oid,
                    ix_oid,
                    0,
                    &key,
                    &[],
                    None,
                ));
            }
        }
        for check in &t.checks {
            let c_oid = named_oid("check", &[&t.name, &check.name]);
            snap.constraint_defs
                .insert(c_oid, format!("CHECK ({})", check.expr));
            constraint.push(constraint_row(
                c_oid,
                &check.name,
                "c",
                oid,
                0,
                0,
                &[],
                &[],
                Some(&check.expr),
            ));
        }
        for fk in &t.foreign_keys {
            let c_oid = named_oid("fkey", &[&t.name, &fk.name]);
            let parent = by_name.get(fk.parent.as_str());
            let parent_oid = parent.map_or(0, |p| table_oid(p.id));
            let key: Vec<String> = fk
                .columns
                .iter()
                .filter_map(|id| t.column_by_id(*id).map(|(p, _)| (p + 1).to_string()))
                .collect();
            let parent_key: Vec<String> = fk
                .parent_columns
                .iter()
                .filter_map(|c| {
                    parent
                        .and_then(|p| p.column_index(c))
                        .map(|p| (p + 1).to_string())
                })
                .collect();
            let cols: Vec<String> = fk
                .columns
                .iter()
                .map(|id| quote_ident(&column_name(*id)))
                .collect();
            let parent_cols: Vec<String> =
                fk.parent_columns.iter().map(|c| quote_ident(c)).collect();
            snap.constraint_defs.insert(
                c_oid,
                format!(
                    "FOREIGN KEY ({}) REFERENCES {}({})",
                    cols.join(", "),
                    quote_ident(&fk.parent),
                    parent_cols.join(", ")
                ),
            );
            constraint.push(constraint_row(
                c_oid,
                &fk.name,
                "f",
                oid,
                0,
                parent_oid,
                &key,
                &parent_key,
                None,
            ));
        }
        tables.push(vec![
            s("public"),
            s(t.name.clone()),
            s(OWNER),
            V::N,
            V::B(!t.primary_key.is_empty() || !t.indexes.is_empty()),
            V::B(false),
            V::B(!t.foreign_keys.is_empty() || !t.referenced_by.is_empty()),
            V::B(false),
        ]);
    }
    let mut info_tables = builder("information_schema.tables");
    let mut info_columns = builder("information_schema.columns");
    let mut info_views = builder("information_schema.views");
    let mut info_constraints = builder("information_schema.table_constraints");
    let mut info_keys = builder("information_schema.key_column_usage");
    let public = || s("public");
    for t in &defs {
        info_tables.push(vec![
            s(db.clone()),
            public(),
            s(t.name.clone()),
            s("BASE TABLE"),
            s("YES"),
        ]);
        for (i, c) in t.columns.iter().enumerate() {
            let (oid, _) = sql_type(&c.ty);
            let (length, precision, scale) = match &c.ty {
                SqlType::Varchar(n) | SqlType::Char(n) => (V::I(*n as i64), V::N, V::N),
                SqlType::Decimal { precision, scale } => {
                    (V::N, V::I(*precision as i64), V::I(*scale as i64))
                }
                SqlType::SmallInt => (V::N, V::I(16), V::I(0)),
                SqlType::Integer => (V::N, V::I(32), V::I(0)),
                SqlType::BigInt => (V::N, V::I(64), V::I(0)),
                SqlType::Real => (V::N, V::I(24), V::N),
                SqlType::Double => (V::N, V::I(53), V::N),
                _ => (V::N, V::N, V::N),
            };
            let udt = TYPES
                .iter()
                .find(|ty| ty.oid == oid)
                .map_or("text", |ty| ty.name);
            info_columns.push(vec![
                s(db.clone()),
                public(),
                s(t.name.clone()),
                s(c.name.clone()),
                V::I(i as i64 + 1),
                c.default.clone().map_or(V::N, s),
                s(if c.nullable { "YES" } else { "NO" }),
                s(standard_type(oid)),
                length,
                precision,
                scale,
                if matches!(c.ty, SqlType::Timestamp) {
                    V::I(6)
                } else {
                    V::N
                },
                s(udt),
                s("NO"),
                s("NEVER"),
            ]);
        }
        let mut constraint = |name: &str, kind: &str, columns: &[u32]| {
            // Both catalogs start with the constraint's and the table's qualified names.
            let names = vec![
                s(db.clone()),
                public(),
                s(name),
                s(db.clone()),
                public(),
                s(t.name.clone()),
            ];
            info_constraints.push([names.clone(), vec![s(kind)]].concat());
            for (k, id) in columns.iter().enumerate() {
                if let Some((_, c)) = t.column_by_id(*id) {
                    info_keys.push(
                        [names.clone(), vec![s(c.name.clone()), V::I(k as i64 + 1)]].concat(),
                    );
                }
            }
        };
        if !t.primary_key.is_empty() {
            constraint(&t.pk_name, "PRIMARY KEY", &t.primary_key);
        }
        for ix in t.indexes.iter().filter(|ix| ix.unique) {
            constraint(&ix.name, "UNIQUE", &ix.columns);
        }
        for check in &t.checks {
            constraint(&check.name, "CHECK", &[]);
        }
        for fk in &t.foreign_keys {
            constraint(&fk.name, "FOREIGN KEY", &fk.columns);
        }
    }
    for (view, _) in &views {
        info_tables.push(vec![
            s(db.clone()),
            public(),
            s(view.name.clone()),
            s("VIEW"),
            s("NO"),
        ]);
        info_views.push(vec![
            s(db.clone()),
            public(),
            s(view.name.clone()),
            s(view.sql.clone()),
        ]);
    }
    let mut info_schemata = builder("information_schema.schemata");
    for schema in ["public", SCHEMA, INFORMATION_SCHEMA] {
        info_schemata.push(vec![s(db.clone()), s(schema), s(OWNER)]);
    }

    for (view, schema) in &views {
        let oid = named_oid("view", &[&view.name]);
        snap.relations.insert(oid, view.name.clone());
        snap.view_defs.insert(oid, view.sql.clone());
        let fields = schema
            .as_ref()
            .map(|s| s.fields().to_vec())
            .unwrap_or_default();
        class.push(class_row(oid, &view.name, "v", 0, fields.len(), None));
        for (i, f) in fields.iter().enumerate() {
            attribute.push(attribute_row(
                oid,
                f.name(),
                i + 1,
                arrow_type(f.data_type()),
                false,
                false,
            ));
        }
        pg_views.push(vec![
            s("public"),
            s(view.name.clone()),
            s(OWNER),
            s(view.sql.clone()),
        ]);
    }

    let mut namespace = builder("pg_namespace");
    for (oid, name) in [(PG_CATALOG_OID, SCHEMA), (PUBLIC_OID, "public")] {
        namespace.push(vec![V::I(oid), s(name), V::I(OWNER_OID), V::N]);
    }
    let mut types = builder("pg_type");
    for t in TYPES {
        let collation = if matches!(t.oid, 25 | 1042 | 1043 | 19) {
            100
        } else {
            0
        };
        types.push(vec![
            V::I(t.oid),
            s(t.name),
            V::I(PG_CATALOG_OID),
            V::I(OWNER_OID),
            V::I(t.len),
            V::B(t.len > 0 && t.len <= 8),
            s("b"),
            s(t.category),
            V::B(false),
            V::B(true),
            s(","),
            V::I(0),
            s("-"),
            V::I(0),
            V::I(0),
            s(format!("{}in", t.name)),
            s(format!("{}out", t.name)),
            s(format!("{}recv", t.name)),
            s(format!("{}send", t.name)),
            s(if t.len == 8 { "d" } else { "i" }),
            s(if t.len < 0 { "x" } else { "p" }),
            V::B(false),
            V::I(0),
            V::I(-1),
            V::I(0),
            V::I(collation),
            V::N,
            V::N,
        ]);
    }
    let mut am = builder("pg_am");
    am.push(vec![
        V::I(HEAP_AM),
        s("heap"),
        s("heap_tableam_handler"),
        s("t"),
    ]);
    am.push(vec![V::I(BTREE_AM), s("btree"), s("bthandler"), s("i")]);
    let mut database = builder("pg_database");
    for name in &databases {
        database.push(vec![
            V::I(named_oid("database", &[name])),
            s(name.clone()),
            V::I(OWNER_OID),
            V::I(6),
            s("c"),
            V::B(false),
            V::B(true),
            V::I(-1),
            V::I(0),
            V::I(0),
            V::I(1663),
            s("C"),
            s("C"),
            V::N,
            V::N,
            V::N,
        ]);
    }
    let mut roles = builder("pg_roles");
    roles.push(vec![
        V::I(OWNER_OID),
        s(OWNER),
        V::B(true),
        V::B(true),
        V::B(true),
        V::B(true),
        V::B(true),
        V::B(false),
        V::I(-1),
        s("********"),
        V::N,
        V::B(true),
        V::N,
    ]);
    let mut user = builder("pg_user");
    user.push(vec![
        s(OWNER),
        V::I(OWNER_OID),
        V::B(true),
        V::B(true),
        V::B(false),
        V::B(true),
    ]);
    let mut tablespace = builder("pg_tablespace");
    tablespace.push(vec![
        V::I(1663),
        s("pg_default"),
        V::I(OWNER_OID),
        V::N,
        V::N,
    ]);
    tablespace.push(vec![
        V::I(1664),
        s("pg_global"),
        V::I(OWNER_OID),
        V::N,
        V::N,
    ]);
    let mut settings = builder("pg_settings");
    for (name, value) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("max_identifier_length", "63"),
    ] {
        settings.push(vec![
            s(name),
            s(value),
            V::N,
            s("Preset Options"),
            s(""),
            s("internal"),
            s("string"),
            s("default"),
        ]);
    }

    for (name, b) in [
        ("pg_class", class),
        ("pg_attribute", attribute),
        ("pg_attrdef", attrdef),
        ("pg_index", index),
        ("pg_constraint", constraint),
        ("pg_tables", tables),
        ("pg_indexes", indexes),
        ("pg_views", pg_views),
        ("pg_namespace", namespace),
        ("pg_type", types),
        ("pg_am", am),
        ("pg_database", database),
        ("pg_roles", roles),
        ("pg_user", user),
        ("pg_tablespace", tablespace),
        ("pg_settings", settings),
        ("information_schema.schemata", info_schemata),
        ("information_schema.tables", info_tables),
        ("information_schema.columns", info_columns),
        ("information_schema.views", info_views),
        ("information_schema.table_constraints", info_constraints),
        ("information_schema.key_column_usage", info_keys),
    ] {
        snap.tables.insert(name.to_string(), b.finish(name)?);
    }
    for name in EMPTY.iter().chain(["pg_proc", "pg_sequence"].iter()) {
        snap.tables
            .insert(name.to_string(), builder(name).finish(name)?);
    }
    Ok(snap)
}

/// A primary key or secondary index, as an index relation.
struct IndexRel<'a> {
    oid: i64,
    name: &'a str,
    columns: &'a [u32],
    unique: bool,
    primary: bool,
    ready: bool,
}

#[allow(clippy::too_many_arguments)]
fn constraint_row(
    oid: i64,
    name: &str,
    kind: &str,
    rel: i64,
    index: i64,
    parent: i64,
    key: &[String],
    parent_key: &[String],
    expr: Option<&str>,
) -> Vec<V> {
    let array = |k: &[String]| {
        if k.is_empty() {
            V::N
        } else {
            s(format!("{{{}}}", k.join(",")))
        }
    };
    let fk = kind == "f";
    vec![
        V::I(oid),
        s(name),
        V::I(PUBLIC_OID),
        s(kind),
        V::B(false),
        V::B(false),
        V::B(true),
        V::I(rel),
        V::I(0),
        V::I(index),
        V::I(0),
        V::I(parent),
        s(if fk { "a" } else { " " }),
        s(if fk { "a" } else { " " }),
        s(if fk { "s" } else { " " }),
        V::B(true),
        V::I(0),
        V::B(false),
        array(key),
        array(parent_key),
        expr.map_or(V::N, s),
    ]
}

/// An identifier as PostgreSQL prints it: quoted unless lower-case and plain.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl Context {
    /// The catalog tables of `catalog` as this statement sees them (built once per
    /// statement and schema version).
    pub(crate) async fn pg_snapshot(&self, catalog: &str) -> Result<Arc<Snapshot>> {
        let db = self.resolve(catalog).await?;
        let version = self.source(&db).await?.schema_version().await?;
        if let Some(s) = self.pg_cached() {
            if s.catalog == catalog && s.version == version {
                return Ok(s);
            }
        }
        let snap = Arc::new(build(self, catalog).await?);
        *self.pg.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        Ok(snap)
    }

    fn pg_cached(&self) -> Option<Arc<Snapshot>> {
        self.pg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forget the catalog tables (at the end of each statement or transaction).
    pub(crate) fn pg_forget(&self) {
        *self.pg.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

// ---------------------------------------------------------------------------------------
// The schema

/// `pg_catalog` (or `information_schema`) in one database.
pub struct PgSchema {
    pub ctx: Arc<Context>,
    pub catalog: String,
    /// `pg_catalog` or `information_schema`.
    pub schema: &'static str,
}

impl PgSchema {
    /// The key of `name` of this schema in [`COLUMNS`].
    fn key(&self, name: &str) -> String {
        if self.schema == INFORMATION_SCHEMA {
            format!("{INFO}{name}")
        } else if name.contains('.') {
            // Not a name of this schema.
            String::new()
        } else {
            name.to_string()
        }
    }
}

impl std::fmt::Debug for PgSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgSchema({})", self.catalog)
    }
}

/// The in-memory table `name` of `catalog`'s `pg_catalog`.
pub async fn provider(
    ctx: &Context,
    catalog: &str,
    name: &str,
) -> Result<Option<Arc<dyn TableProvider>>> {
    if !is_table(name) {
        return Ok(None);
    }
    let snap = ctx.pg_snapshot(catalog).await?;
    let Some(batch) = snap.table(name) else {
        return Ok(None);
    };
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    Ok(Some(Arc::new(table)))
}

#[async_trait]
impl SchemaProvider for PgSchema {
    fn table_names(&self) -> Vec<String> {
        COLUMNS
            .iter()
            .filter_map(
                |(t, _)| match (self.schema == INFORMATION_SCHEMA, t.strip_prefix(INFO)) {
                    (true, Some(name)) => Some(name.to_string()),
                    (false, None) => Some(t.to_string()),
                    _ => None,
                },
            )
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        provider(&self.ctx, &self.catalog, &self.key(name))
            .await
            .map_err(DataFusionError::from)
    }

    fn table_exist(&self, name: &str) -> bool {
        is_table(&self.key(name))
    }
}

// ---------------------------------------------------------------------------------------
// Functions

/// What a catalog function runs with: the session, and the catalog its statement reads by
/// default (the current database's).
struct Call<'a> {
    ctx: &'a Context,
    catalog: &'a str,
}

impl Call<'_> {
    /// The catalog tables the function reads: the statement's, or ones built now.
    fn snapshot(&self) -> DfResult<Arc<Snapshot>> {
        if let Some(s) = self.ctx.pg_cached().filter(|s| s.catalog == self.catalog) {
            return Ok(s);
        }
        crate::subquery::block_on(self.ctx.pg_snapshot(self.catalog))?
            .map_err(DataFusionError::from)
    }

    /// The current database.
    fn database(&self) -> String {
        self.ctx
            .known_database(self.catalog)
            .unwrap_or_else(|| self.catalog.to_string())
    }
}

type Body = dyn Fn(&Call<'_>, &[ScalarValue]) -> DfResult<ScalarValue> + Send + Sync;

/// A catalog function, evaluated one row at a time (catalog results are small).
struct PgFn {
    name: &'static str,
    signature: Signature,
    returns: fn(&[DataType]) -> DataType,
    body: Box<Body>,
    ctx: Weak<Context>,
}

impl std::fmt::Debug for PgFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgFn({})", self.name)
    }
}

impl PartialEq for PgFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFn {}

impl Hash for PgFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for PgFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok((self.returns)(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let ctx = self
            .ctx
            .upgrade()
            .ok_or_else(|| DataFusionError::Execution("session closed".into()))?;
        let call = Call {
            ctx: &ctx,
            catalog: &args.config_options.catalog.default_catalog,
        };
        let returns = args.return_field.data_type().clone();
        let mut out = Vec::with_capacity(args.number_rows);
        for r in 0..args.number_rows {
            let v = (self.body)(&call, &crate::subquery::row_args(&args.args, r)?)?;
            out.push(if v.is_null() { v } else { v.cast_to(&returns)? });
        }
        crate::subquery::column(out, &returns)
    }
}

fn int(v: &ScalarValue) -> Option<i64> {
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(n)) => n,
        _ => None,
    }
}

fn text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(t) | ScalarValue::LargeUtf8(t) | ScalarValue::Utf8View(t) => t.clone(),
        v if v.is_null() => None,
        v => Some(v.to_string()),
    }
}

fn utf8(t: Option<String>) -> ScalarValue {
    ScalarValue::Utf8(t)
}

fn texts(_: &[DataType]) -> DataType {
    DataType::Utf8
}

fn boolean(_: &[DataType]) -> DataType {
    DataType::Boolean
}

fn int8(_: &[DataType]) -> DataType {
    DataType::Int64
}

/// `::regclass` and its kin: an oid becomes a name, a name (or an oid written as text)
/// becomes an oid.
fn reg_returns(args: &[DataType]) -> DataType {
    match args.first() {
        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => DataType::Int64,
        _ => DataType::Utf8,
    }
}

/// A `::regclass`-style cast of a name: its oid, or the oid written as text.
fn reg_lookup(
    v: &ScalarValue,
    kind: &'static str,
    find: impl Fn(&str) -> Option<i64>,
) -> DfResult<ScalarValue> {
    let Some(t) = text(v) else {
        return Ok(ScalarValue::Int64(None));
    };
    if let Ok(n) = t.trim().parse::<i64>() {
        return Ok(ScalarValue::Int64(Some(n)));
    }
    match find(t.trim()) {
        Some(oid) => Ok(ScalarValue::Int64(Some(oid))),
        None => Err(DataFusionError::External(Box::new(
            SqlError::UndefinedObject { kind, name: t },
        ))),
    }
}

/// `::regclass` and its kin over one table of names: a name (or an oid written as text)
/// becomes its oid, an oid its name (or itself, written as text, when it has none).
fn reg(v: &ScalarValue, kind: &'static str, names: &HashMap<i64, String>) -> DfResult<ScalarValue> {
    if is_text(v) {
        return reg_lookup(v, kind, |n| oid_named(names, n));
    }
    Ok(utf8(int(v).map(|o| {
        names.get(&o).cloned().unwrap_or_else(|| o.to_string())
    })))
}

fn is_text(v: &ScalarValue) -> bool {
    matches!(
        v,
        ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Utf8View(_)
    )
}

/// The catalog functions, for registration in a session.
pub fn functions(ctx: &Arc<Context>) -> Vec<ScalarUDF> {
    let any = |counts: &[usize]| {
        Signature::one_of(
            counts
                .iter()
                .map(|&n| {
                    if n == 0 {
                        TypeSignature::Nullary
                    } else {
                        TypeSignature::Any(n)
                    }
                })
                .collect(),
            Volatility::Stable,
        )
    };
    let f = |name: &'static str,
             counts: &[usize],
             returns: fn(&[DataType]) -> DataType,
             body: Box<Body>| {
        ScalarUDF::new_from_impl(PgFn {
            name,
            signature: any(counts),
            returns,
            body,
            ctx: Arc::downgrade(ctx),
        })
    };
    vec![
        f(
            "pg_table_is_visible",
            &[1],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(true)))),
        ),
        f(
            "pg_type_is_visible",
            &[1],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(true)))),
        ),
        f(
            "pg_relation_is_publishable",
            &[1],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(false)))),
        ),
        f(
            "pg_get_userbyid",
            &[1],
            texts,
            Box::new(|_, a| {
                Ok(utf8(int(&a[0]).map(|o| {
                    if o == OWNER_OID {
                        OWNER.into()
                    } else {
                        format!("unknown (OID={o})")
                    }
                })))
            }),
        ),
        f(
            "pg_encoding_to_char",
            &[1],
            texts,
            Box::new(|_, a| {
                Ok(utf8(int(&a[0]).map(|e| {
                    if e == 6 {
                        "UTF8".into()
                    } else {
                        String::new()
                    }
                })))
            }),
        ),
        f(
            "format_type",
            &[2],
            texts,
            Box::new(|_, a| {
                Ok(utf8(
                    int(&a[0]).and_then(|o| format_type(o, int(&a[1]).unwrap_or(-1))),
                ))
            }),
        ),
        f(
            "pg_get_expr",
            &[2, 3],
            texts,
            Box::new(|_, a| Ok(utf8(text(&a[0])))),
        ),
        f(
            "pg_get_indexdef",
            &[1, 3],
            texts,
            Box::new(|call, a| {
                let Some(oid) = int(&a[0]) else {
                    return Ok(utf8(None));
                };
                let snap = call.snapshot()?;
                let column = a.get(1).and_then(int).unwrap_or(0);
                Ok(utf8(snap.index_defs.get(&oid).and_then(|(def, cols)| {
                    if column == 0 {
                        Some(def.clone())
                    } else {
                        cols.get(column as usize - 1).cloned()
                    }
                })))
            }),
        ),
        f(
            "pg_get_constraintdef",
            &[1, 2],
            texts,
            Box::new(|call, a| {
                let Some(oid) = int(&a[0]) else {
                    return Ok(utf8(None));
                };
                Ok(utf8(call.snapshot()?.constraint_defs.get(&oid).cloned()))
            }),
        ),
        f(
            "pg_get_viewdef",
            &[1, 2],
            texts,
            Box::new(|call, a| {
                let snap = call.snapshot()?;
                let oid = if is_text(&a[0]) {
                    text(&a[0]).and_then(|t| snap.oid_of(&t))
                } else {
                    int(&a[0])
                };
                Ok(utf8(oid.and_then(|o| snap.view_defs.get(&o)).cloned()))
            }),
        ),
        f(
            "pg_partition_ancestors",
            &[1],
            int8,
            Box::new(|_, a| Ok(ScalarValue::Int64(int(&a[0])))),
        ),
        f(
            "obj_description",
            &[1, 2],
            texts,
            Box::new(|_, _| Ok(utf8(None))),
        ),
        f(
            "col_description",
            &[2],
            texts,
            Box::new(|_, _| Ok(utf8(None))),
        ),
        f(
            "shobj_description",
            &[2],
            texts,
            Box::new(|_, _| Ok(utf8(None))),
        ),
        f(
            "pg_get_triggerdef",
            &[1, 2],
            texts,
            Box::new(|_, _| Ok(utf8(None))),
        ),
        f(
            "pg_get_statisticsobjdef_columns",
            &[1],
            texts,
            Box::new(|_, _| Ok(utf8(None))),
        ),
        f(
            "pg_table_size",
            &[1],
            int8,
            Box::new(|_, _| Ok(ScalarValue::Int64(Some(0)))),
        ),
        f(
            "pg_relation_size",
            &[1, 2],
            int8,
            Box::new(|_, _| Ok(ScalarValue::Int64(Some(0)))),
        ),
        f(
            "pg_total_relation_size",
            &[1],
            int8,
            Box::new(|_, _| Ok(ScalarValue::Int64(Some(0)))),
        ),
        f(
            "pg_size_pretty",
            &[1],
            texts,
            Box::new(|_, a| Ok(utf8(int(&a[0]).map(size_pretty)))),
        ),
        f(
            "has_table_privilege",
            &[2, 3],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(true)))),
        ),
        f(
            "has_schema_privilege",
            &[2, 3],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(true)))),
        ),
        f(
            "has_database_privilege",
            &[2, 3],
            boolean,
            Box::new(|_, _| Ok(ScalarValue::Boolean(Some(true)))),
        ),
        f(
            "current_schema",
            &[0],
            texts,
            Box::new(|_, _| Ok(utf8(Some("public".into())))),
        ),
        f(
            "current_user",
            &[0],
            texts,
            Box::new(|_, _| Ok(utf8(Some(OWNER.into())))),
        ),
        f(
            "session_user",
            &[0],
            texts,
            Box::new(|_, _| Ok(utf8(Some(OWNER.into())))),
        ),
        f(
            "current_database",
            &[0],
            texts,
            Box::new(|call, _| Ok(utf8(Some(call.database())))),
        ),
        f(
            "version",
            &[0],
            texts,
            Box::new(|_, _| {
                Ok(utf8(Some(format!(
                    "PostgreSQL 15.0 (Strata {}) on Rust",
                    env!("CARGO_PKG_VERSION")
                ))))
            }),
        ),
        // Arrays are text here (`{a,b}`): joining one is printing it.
        f(
            "array_to_string",
            &[2, 3],
            texts,
            Box::new(|_, a| {
                let sep = text(&a[1]).unwrap_or_default();
                Ok(utf8(text(&a[0]).map(|t| {
                    t.trim_start_matches('{')
                        .trim_end_matches('}')
                        .split(',')
                        .collect::<Vec<_>>()
                        .join(&sep)
                })))
            }),
        ),
        f(
            "regclass",
            &[1],
            reg_returns,
            Box::new(|call, a| reg(&a[0], "relation", &call.snapshot()?.relations)),
        ),
        f(
            "to_regclass",
            &[1],
            int8,
            Box::new(|call, a| {
                let snap = call.snapshot()?;
                Ok(ScalarValue::Int64(
                    text(&a[0]).and_then(|t| snap.oid_of(&t)),
                ))
            }),
        ),
        f(
            "regtype",
            &[1],
            reg_returns,
            Box::new(|call, a| {
                let snap = call.snapshot()?;
                if is_text(&a[0]) {
                    return reg_lookup(&a[0], "type", |n| oid_named(&snap.types, n));
                }
                Ok(utf8(int(&a[0]).and_then(|o| format_type(o, -1))))
            }),
        ),
        f(
            "regnamespace",
            &[1],
            reg_returns,
            Box::new(|call, a| reg(&a[0], "schema", &call.snapshot()?.namespaces)),
        ),
        f(
            "regrole",
            &[1],
            reg_returns,
            Box::new(|_, a| {
                reg(
                    &a[0],
                    "role",
                    &HashMap::from([(OWNER_OID, OWNER.to_string())]),
                )
            }),
        ),
        f(
            "regproc",
            &[1],
            reg_returns,
            Box::new(|_, a| {
                if is_text(&a[0]) {
                    return reg_lookup(&a[0], "function", |_| None);
                }
                Ok(utf8(int(&a[0]).map(|o| {
                    if o == 0 {
                        "-".into()
                    } else {
                        o.to_string()
                    }
                })))
            }),
        ),
    ]
}

fn size_pretty(bytes: i64) -> String {
    let mut v = bytes as f64;
    for unit in ["bytes", "kB", "MB", "GB", "TB"] {
        if v.abs() < 10240.0 || unit == "TB" {
            return format!("{} {unit}", v.round() as i64);
        }
        v /= 1024.0;
    }
    unreachable!("the loop returns at TB")
}

// ---------------------------------------------------------------------------------------
// Syntax

/// The type casts that become function calls.
const REG_TYPES: &[&str] = &[
    "regclass",
    "regtype",
    "regnamespace",
    "regrole",
    "regproc",
    "regprocedure",
];

fn is_pg_catalog(part: &ObjectNamePart) -> bool {
    part.as_ident()
        .is_some_and(|i| i.value.eq_ignore_ascii_case(SCHEMA))
}

/// PostgreSQL spellings the planner does not know, in any statement:
/// `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, casts to `pg_catalog.text` or
/// `regclass`, and functions qualified with `pg_catalog.`.
pub fn rewrite_expr(e: &mut Expr) {
    match e {
        Expr::BinaryOp {
            op: BinaryOperator::PGCustomBinaryOperator(parts),
            ..
        } => {
            let op = match parts.last().map(String::as_str) {
                Some("~") => Some(BinaryOperator::PGRegexMatch),
                Some("~*") => Some(BinaryOperator::PGRegexIMatch),
                Some("!~") => Some(BinaryOperator::PGRegexNotMatch),
                Some("!~*") => Some(BinaryOperator::PGRegexNotIMatch),
                Some("=") => Some(BinaryOperator::Eq),
                Some("<>") | Some("!=") => Some(BinaryOperator::NotEq),
                Some("<") => Some(BinaryOperator::Lt),
                Some("<=") => Some(BinaryOperator::LtEq),
                Some(">") => Some(BinaryOperator::Gt),
                Some(">=") => Some(BinaryOperator::GtEq),
                Some("||") => Some(BinaryOperator::StringConcat),
                _ => None,
            };
            if let (Some(op), Expr::BinaryOp { op: slot, .. }) = (op, &mut *e) {
                *slot = op;
            }
        }
        Expr::Collate { collation, expr } => {
            let last = collation
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase());
            if matches!(last.as_deref(), Some("default" | "c" | "posix")) {
                let inner = std::mem::replace(expr.as_mut(), Expr::value(ast::Value::Null));
                *e = inner;
            }
        }
        Expr::Cast {
            data_type: ast::DataType::Custom(name, modifiers),
            expr,
            ..
        } if modifiers.is_empty() => {
            let parts = &name.0;
            let (schema_ok, last) = match parts.as_slice() {
                [t] => (true, t),
                [s, t] => (is_pg_catalog(s), t),
                _ => (false, &parts[0]),
            };
            let Some(last) = last.as_ident().map(|i| i.value.to_ascii_lowercase()) else {
                return;
            };
            if !schema_ok {
                return;
            }
            if REG_TYPES.contains(&last.as_str()) {
                let arg = std::mem::replace(expr.as_mut(), Expr::value(ast::Value::Null));
                *e = call(&last, vec![arg]);
            } else if let Some(t) = plain_type(&last) {
                if let Expr::Cast { data_type, .. } = e {
                    *data_type = t;
                }
            }
        }
        Expr::Cast {
            data_type: ast::DataType::Regclass,
            expr,
            ..
        } => {
            let arg = std::mem::replace(expr.as_mut(), Expr::value(ast::Value::Null));
            *e = call("regclass", vec![arg]);
        }
        Expr::Function(f) if f.name.0.len() == 2 && is_pg_catalog(&f.name.0[0]) => {
            f.name.0.remove(0);
        }
        _ => {}
    }
}

/// A `pg_catalog` type name as a type the planner knows.
fn plain_type(name: &str) -> Option<ast::DataType> {
    use ast::DataType as D;
    Some(match name {
        "oid" | "int8" | "xid" | "cid" => D::BigInt(None),
        "int2" | "int4" | "smallint" | "integer" => D::BigInt(None),
        "text" | "name" | "char" | "bpchar" | "varchar" => D::Text,
        "bool" | "boolean" => D::Boolean,
        "float4" | "float8" => D::Double(ast::ExactNumberInfo::None),
        _ => return None,
    })
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    use ast::{
        Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    };
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Replace every query (subqueries included) that reads an always-empty catalog through
/// inner joins by an empty query with the same column names.
pub fn prune_empty(stmt: &mut Statement) {
    struct Pruner;
    impl VisitorMut for Pruner {
        type Break = ();
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let Some(names) = empty_names(&q.body) {
                if let Some(body) = empty_select(&names) {
                    *q.body = body;
                    q.order_by = None;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Pruner);
}

/// The output column names of `body` when it can have no rows.
fn empty_names(body: &SetExpr) -> Option<Vec<String>> {
    match body {
        SetExpr::Select(s) => {
            if !reads_empty(s) {
                return None;
            }
            s.projection.iter().map(item_name).collect()
        }
        SetExpr::SetOperation {
            op: ast::SetOperator::Union,
            left,
            right,
            ..
        } => {
            let names = empty_names(left)?;
            empty_names(right)?;
            Some(names)
        }
        SetExpr::Query(q) => empty_names(&q.body),
        _ => None,
    }
}

fn grouped(s: &ast::Select) -> bool {
    !matches!(&s.group_by, ast::GroupByExpr::Expressions(v, _) if v.is_empty())
}

/// Whether `s` groups or aggregates its input.
pub fn aggregates(s: &ast::Select) -> bool {
    grouped(s) || s.having.is_some() || s.projection.iter().any(has_aggregate)
}

fn reads_empty(s: &ast::Select) -> bool {
    let empty_input = s.from.iter().any(|twj| {
        let mut empty = is_empty_table(&twj.relation);
        for j in &twj.joins {
            use ast::JoinOperator as J;
            let this = is_empty_table(&j.relation);
            empty = match &j.join_operator {
                J::Join(_) | J::Inner(_) | J::CrossJoin(_) => empty || this,
                J::Left(_) | J::LeftOuter(_) => empty,
                J::Right(_) | J::RightOuter(_) => this,
                J::FullOuter(_) => empty && this,
                _ => false,
            };
        }
        empty
    });
    // Groups of no rows are no groups; an aggregate without GROUP BY has one row even over
    // no input.
    empty_input && (grouped(s) || !aggregates(s))
}

/// Whether `name` is qualified with `pg_catalog` or `information_schema` (`pg_catalog.t`,
/// `db.information_schema.t`).
pub fn names_catalog(name: &ObjectName) -> bool {
    let parts = &name.0;
    parts.len() >= 2
        && parts[parts.len() - 2].as_ident().is_some_and(|i| {
            i.value.eq_ignore_ascii_case(SCHEMA) || i.value.eq_ignore_ascii_case(INFORMATION_SCHEMA)
        })
}

fn is_empty_table(t: &TableFactor) -> bool {
    let TableFactor::Table { name, .. } = t else {
        return false;
    };
    let parts = &name.0;
    parts.len() >= 2
        && is_pg_catalog(&parts[parts.len() - 2])
        && name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| EMPTY.contains(&i.value.to_ascii_lowercase().as_str()))
}

/// Whether a result column aggregates (not counting subqueries, which aggregate their own
/// input).
fn has_aggregate(item: &ast::SelectItem) -> bool {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "string_agg",
        "array_agg",
        "bool_and",
        "bool_or",
        "every",
        "group_concat",
        "total",
        "json_agg",
    ];
    struct Finder {
        depth: usize,
        found: bool,
    }
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = f.name.0.last().and_then(|p| p.as_ident());
                if self.depth == 0
                    && f.over.is_none()
                    && name.is_some_and(|i| {
                        AGGREGATES.contains(&i.value.to_ascii_lowercase().as_str())
                    })
                {
                    self.found = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder {
        depth: 0,
        found: false,
    };
    let _ = ast::Visit::visit(item, &mut finder);
    finder.found
}

/// The name PostgreSQL gives a result column.
fn item_name(item: &ast::SelectItem) -> Option<String> {
    fn of(e: &Expr) -> String {
        match e {
            Expr::Identifier(i) => i.value.clone(),
            Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()).unwrap_or_default(),
            Expr::Function(f) => f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.clone())
                .unwrap_or_default(),
            Expr::Cast { expr, .. } | Expr::Nested(expr) => of(expr),
            _ => "?column?".into(),
        }
    }
    match item {
        ast::SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        ast::SelectItem::UnnamedExpr(e) => Some(of(e)),
        _ => None,
    }
}

/// `SELECT CAST(NULL AS TEXT) AS "a", … WHERE FALSE`.
fn empty_select(names: &[String]) -> Option<SetExpr> {
    let columns: Vec<String> = names
        .iter()
        .map(|n| format!("CAST(NULL AS TEXT) AS \"{}\"", n.replace('"', "\"\"")))
        .collect();
    let sql = format!("SELECT {} WHERE FALSE", columns.join(", "));
    match crate::planner::parse_one(&sql).ok()? {
        Statement::Query(q) => Some(*q.body),
        _ => None,
    }
}
