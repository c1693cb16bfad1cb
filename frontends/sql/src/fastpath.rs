//! The OLTP fast path: statements about one row, found by its primary key or a unique
//! index, answered without DataFusion planning.
//!
//! A statement qualifies when its WHERE clause is a conjunction of `column = literal` (or
//! `= $n`) that pins every column of the primary key or of a unique index, over one table
//! without joins. SELECT must also have a plain column list (or `*`) and no grouping,
//! ordering, DISTINCT or LIMIT. Anything else plans normally; the answer is the same
//! either way, only cheaper here (one point read instead of planning and a scan).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, Statement, TableFactor,
};

use crate::catalog::TableDef;
use crate::codec::{self, Key};
use crate::error::{Result, SqlError};
use crate::eval;
use crate::session::{normalize, Output, QueryRows, Session};
use crate::tx::Tx;
use crate::types::{single, ColumnBuilder, Datum};

/// Show `f` both sides of each equality of `e`, a conjunction (AND, parentheses) of
/// equalities only; `None` as soon as `e` holds anything else or `f` refuses a pair.
pub(crate) fn each_equality<'e>(
    e: &'e Expr,
    f: &mut impl FnMut(&'e Expr, &'e Expr) -> Option<()>,
) -> Option<()> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            each_equality(left, f)?;
            each_equality(right, f)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => f(left, right),
        Expr::Nested(inner) => each_equality(inner, f),
        _ => None,
    }
}

/// `column = value` pairs of a WHERE clause that is only such a conjunction.
fn equalities(
    def: &TableDef,
    e: &Expr,
    params: &[Datum],
    out: &mut Vec<(usize, Datum)>,
) -> Option<()> {
    each_equality(e, &mut |left, right| {
        let (col, val) = match (column(def, left), column(def, right)) {
            (Some(c), None) => (c, right),
            (None, Some(c)) => (c, left),
            _ => return None,
        };
        let v = eval::literal(val, params).ok()??;
        // Only values that keep their meaning in the column's type: a float compared
        // with an integer column, say, goes through the planner's rules instead.
        let ty = &def.columns[col].ty;
        let exact = match (&v, ty) {
            (Datum::Int(_), t) if t.is_integer() => true,
            (
                Datum::Int(_) | Datum::Float(_),
                crate::types::SqlType::Real | crate::types::SqlType::Double,
            ) => true,
            (
                Datum::Text(_),
                crate::types::SqlType::Text
                | crate::types::SqlType::Varchar(_)
                | crate::types::SqlType::Char(_),
            ) => true,
            (Datum::Bool(_), crate::types::SqlType::Boolean) => true,
            _ => false,
        };
        if !exact {
            return None;
        }
        let v = ty.coerce(v, &def.columns[col].name).ok()?;
        out.push((col, v));
        Some(())
    })
}

/// The column `e` names: `c`, or `t.c` with the table's own name (any other qualifier is
/// left to the planner, which names what is wrong with it).
fn column(def: &TableDef, e: &Expr) -> Option<usize> {
    match e {
        Expr::Identifier(i) => def.column_index(&normalize(i)),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 && normalize(&parts[0]) == def.name => {
            def.column_index(&normalize(&parts[1]))
        }
        _ => None,
    }
}

/// A row's primary key and its values.
pub type KeyAndRow = (Vec<Datum>, Vec<Datum>);

/// How a point statement finds its row, decided from the statement alone (no reads).
pub struct PointPlan<'a> {
    /// The `column = value` pairs of the WHERE clause.
    eqs: Vec<(usize, Datum)>,
    /// The key the equalities pin, with its values; `None`: an equality with NULL, no row.
    key: Option<PointKey<'a>>,
}

enum PointKey<'a> {
    Primary(Vec<Datum>),
    Unique(&'a crate::catalog::IndexDef, Vec<Datum>),
}

impl PointPlan<'_> {
    /// What EXPLAIN says of it.
    pub fn describe(&self, def: &TableDef) -> String {
        match &self.key {
            None => "no row can match (an equality with NULL)".to_string(),
            Some(PointKey::Primary(_)) => {
                let names: Vec<&str> = def
                    .pk_positions()
                    .iter()
                    .map(|&i| def.columns[i].name.as_str())
                    .collect();
                format!("point read by primary key ({})", names.join(", "))
            }
            Some(PointKey::Unique(index, _)) => {
                format!("point read by unique index {}", index.name)
            }
        }
    }
}

/// The point plan of `selection`: a conjunction of equalities that pins the primary key or
/// a unique index. `None`: not a point statement (plan it normally).
pub fn plan_point<'a>(
    def: &'a TableDef,
    selection: Option<&Expr>,
    params: &[Datum],
) -> Option<PointPlan<'a>> {
    let selection = selection?;
    let mut eqs = Vec::new();
    equalities(def, selection, params, &mut eqs)?;
    let value_of = |pos: usize| -> Option<&Datum> {
        let mut found = eqs.iter().filter(|(c, _)| *c == pos).map(|(_, v)| v);
        let first = found.next()?;
        // `a = 1 AND a = 2` has no row; leave contradictions to the planner.
        found.all(|v| v == first).then_some(first)
    };
    let values = |positions: &[usize]| -> Option<Vec<Datum>> {
        positions.iter().map(|&p| value_of(p).cloned()).collect()
    };
    let key = if eqs.iter().any(|(_, v)| v.is_null()) {
        None
    } else if let Some(pk) = (!def.has_rowid())
        .then(|| values(&def.pk_positions()))
        .flatten()
    {
        Some(PointKey::Primary(pk))
    } else {
        let (index, vals) = def
            .indexes
            .iter()
            .filter(|i| i.unique && i.ready)
            .find_map(|i| Some((i, values(&def.index_positions(i))?)))?;
        Some(PointKey::Unique(index, vals))
    };
    Some(PointPlan { eqs, key })
}

/// The primary key and the row of the one row `selection` can match, looked up through a
/// unique index when it names one; `Ok(None)`: not a point statement; `Ok(Some(None))`: no
/// such row.
pub async fn point(
    tx: &mut Tx,
    def: &TableDef,
    selection: Option<&Expr>,
    params: &[Datum],
) -> Result<Option<Option<KeyAndRow>>> {
    let Some(plan) = plan_point(def, selection, params) else {
        return Ok(None);
    };
    // Every equality must be on a key column, or the row must be checked against it too.
    let check = |row: &[Datum]| {
        plan.eqs
            .iter()
            .all(|(c, v)| !row[*c].is_null() && crate::access::compare(&row[*c], v).is_eq())
    };
    let pk = match &plan.key {
        None => return Ok(Some(None)),
        Some(PointKey::Primary(pk)) => pk.clone(),
        Some(PointKey::Unique(index, values)) => {
            let prefix = Key::IndexEntry(def.id, index.id, values, &[]).encode();
            let found = tx
                .scan(&prefix, &strata_engine::prefix_end(&prefix), false, 1)
                .await?;
            let Some((key, _)) = found.first() else {
                return Ok(Some(None));
            };
            let all = codec::index_key_values(key, def.id, index.id)?;
            all[index.columns.len().min(all.len())..].to_vec()
        }
    };
    Ok(Some(match crate::index::get_row(tx, def, &pk).await? {
        Some(row) if check(&row) => Some((pk, row)),
        _ => None,
    }))
}

/// A point SELECT answered without planning, or `None` to plan it.
pub async fn select(s: &mut Session, stmt: &Statement, params: &[Datum]) -> Result<Option<Output>> {
    let Statement::Query(q) = stmt else {
        return Ok(None);
    };
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Ok(None);
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Ok(None);
    };
    let plain_group =
        matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if sel.distinct.is_some()
        || sel.from.len() != 1
        || !sel.from[0].joins.is_empty()
        || !plain_group
        || sel.having.is_some()
        || sel.selection.is_none()
        || sel.top.is_some()
        || sel.into.is_some()
        || !sel.named_window.is_empty()
        || sel.qualify.is_some()
    {
        return Ok(None);
    }
    // An aliased table is left to the planner: its columns are qualified by the alias.
    let TableFactor::Table {
        name,
        args: None,
        alias: None,
        ..
    } = &sel.from[0].relation
    else {
        return Ok(None);
    };
    if crate::pg_catalog::names_catalog(name)
        || s.ctx
            .scope
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_of
            .is_some()
    {
        return Ok(None);
    }
    let (db, table) = s.table_name(name).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let Some(def) = guard.table(&table).await? else {
        return Ok(None);
    };
    // The output columns: plain column names or `*` only.
    let mut cols: Vec<(&str, usize)> = Vec::new();
    for item in &sel.projection {
        match item {
            SelectItem::Wildcard(_) => cols.extend(
                def.columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.as_str(), i)),
            ),
            SelectItem::UnnamedExpr(e) => match column(&def, e) {
                Some(i) => cols.push((def.columns[i].name.as_str(), i)),
                None => return Ok(None),
            },
            SelectItem::ExprWithAlias { expr, alias } => match column(&def, expr) {
                Some(i) => cols.push((alias.value.as_str(), i)),
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    let Some(found) = point(&mut guard, &def, sel.selection.as_ref(), params).await? else {
        return Ok(None);
    };
    let row = found.map(|(_, row)| row);
    drop(guard);
    let schema = PointSchema::of(&mut s.point_schema, &def, &cols);
    Ok(Some(Output::Rows(one_row(&def, schema, &cols, row)?)))
}

/// A fast-path SELECT's result schema, kept with the table definition and output columns
/// it was made for.
pub(crate) struct PointSchema {
    def: Arc<TableDef>,
    cols: Vec<(String, usize)>,
    schema: SchemaRef,
}

impl PointSchema {
    /// The schema of `cols` of `def`: `kept`'s if it was made for them, else a new one
    /// (kept instead).
    fn of(
        kept: &mut Option<PointSchema>,
        def: &Arc<TableDef>,
        cols: &[(&str, usize)],
    ) -> SchemaRef {
        if let Some(k) = kept {
            // The same definition object: the table's columns have not changed since.
            if Arc::ptr_eq(&k.def, def)
                && k.cols.len() == cols.len()
                && k.cols
                    .iter()
                    .zip(cols)
                    .all(|((n, i), (m, j))| n == m && i == j)
            {
                return k.schema.clone();
            }
        }
        let schema = Arc::new(Schema::new(
            cols.iter()
                .map(|(n, i)| {
                    Field::new(
                        *n,
                        def.columns[*i].ty.arrow_type(),
                        def.columns[*i].nullable,
                    )
                })
                .collect::<Vec<_>>(),
        ));
        *kept = Some(PointSchema {
            def: def.clone(),
            cols: cols.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            schema: schema.clone(),
        });
        schema
    }
}

fn one_row(
    def: &TableDef,
    schema: SchemaRef,
    cols: &[(&str, usize)],
    row: Option<Vec<Datum>>,
) -> Result<QueryRows> {
    let n = usize::from(row.is_some());
    let mut arrays = Vec::with_capacity(cols.len());
    for (_, i) in cols {
        let ty = &def.columns[*i].ty;
        arrays.push(match &row {
            Some(r) => single(ty, &r[*i])?,
            None => ColumnBuilder::new(ty, 0).finish()?,
        });
    }
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(QueryRows {
        schema,
        batches: vec![batch],
    })
}
