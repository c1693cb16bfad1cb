//! INSERT, UPDATE and DELETE.
//!
//! A write finds its target rows first and changes them after, so a statement never sees
//! its own changes half-done. UPDATE and DELETE find rows with a DataFusion query over the
//! table that also returns each row's key (a hidden column only this query sees), so a
//! WHERE on the primary key or an index is a key-range read like any query's. Every row
//! is then checked (types, NOT NULL, CHECK, uniqueness, foreign keys) and written with its
//! index entries; the first violation fails the statement, and the session undoes it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, Expr, FromTable, OnConflictAction, OnInsert, SelectItem, SetExpr,
    SqliteOnConflict, Statement, TableFactor, TableObject,
};

use crate::catalog::TableDef;
use crate::error::{Result, SqlError};
use crate::eval::{self, Columns};
use crate::index;
use crate::session::{normalize, Output, QueryRows, Session};
use crate::tx::Tx;
use crate::types::Datum;

/// The hidden column that carries a row's key to UPDATE and DELETE.
pub const KEY_COLUMN: &str = "__strata_key";

/// What an INSERT does with a row whose key or unique value exists already.
enum OnDuplicate {
    Fail,
    Skip,
    Replace,
    Update {
        assignments: Vec<ast::Assignment>,
        selection: Option<Box<Expr>>,
    },
}

pub async fn insert(s: &mut Session, ins: &ast::Insert, params: &[Datum]) -> Result<Output> {
    let name = match &ins.table {
        TableObject::TableName(n) => n.clone(),
        other => return Err(SqlError::Unsupported(format!("INSERT INTO {other}"))),
    };
    let (db, table) = s.table_name(&name).await?;
    let tx = s.ctx.tx(&db).await?;
    let def = load(&mut *tx.lock().await, &table).await?;
    let targets: Vec<usize> = if ins.columns.is_empty() {
        (0..def.columns.len()).collect()
    } else {
        let mut t = Vec::new();
        for c in &ins.columns {
            let col = match c.0.last() {
                Some(ast::ObjectNamePart::Identifier(i)) => normalize(i),
                _ => c.to_string(),
            };
            let pos = def
                .column_index(&col)
                .ok_or_else(|| SqlError::UndefinedColumn {
                    table: def.name.clone(),
                    column: col.clone(),
                })?;
            if t.contains(&pos) {
                return Err(SqlError::Syntax(format!(
                    "column {col:?} specified more than once"
                )));
            }
            t.push(pos);
        }
        t
    };
    let on_duplicate = match (&ins.on, ins.or, ins.replace_into) {
        (_, _, true) | (_, Some(SqliteOnConflict::Replace), _) => OnDuplicate::Replace,
        (_, Some(SqliteOnConflict::Ignore), _) => OnDuplicate::Skip,
        (Some(OnInsert::OnConflict(c)), _, _) => match &c.action {
            OnConflictAction::DoNothing => OnDuplicate::Skip,
            OnConflictAction::DoUpdate(u) => OnDuplicate::Update {
                assignments: u.assignments.clone(),
                selection: u.selection.clone().map(Box::new),
            },
        },
        (Some(other), _, _) => return Err(SqlError::Unsupported(format!("{other}"))),
        _ => OnDuplicate::Fail,
    };
    // The rows to insert, as values of the target columns.
    let (given, targets) = match &ins.source {
        None => (vec![Vec::new()], Vec::new()),
        Some(query) => (source_rows(s, query, params).await?, targets),
    };
    let mut rows = Vec::with_capacity(given.len());
    let mut next_key: Option<i64> = None;
    for values in given {
        if values.len() != targets.len() {
            return Err(SqlError::Syntax(format!(
                "INSERT has {} expressions but {} target columns",
                values.len(),
                targets.len()
            )));
        }
        let mut row = vec![Datum::Null; def.columns.len()];
        let mut set = vec![false; def.columns.len()];
        for (pos, v) in targets.iter().zip(values) {
            row[*pos] = v;
            set[*pos] = true;
        }
        for (i, c) in def.columns.iter().enumerate() {
            if !set[i] {
                if let Some(d) = &c.default {
                    row[i] = eval::constant(&s.state, &eval::parse_stored(d)?)?;
                }
            }
        }
        let rowid = fill_keys(&mut *tx.lock().await, &def, &mut row, &mut next_key).await?;
        coerce_row(&def, &mut row)?;
        rows.push((row, rowid));
    }
    check_constraints(s, &def, rows.iter().map(|(r, _)| r)).await?;
    let mut written = Vec::new();
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    for (row, rowid) in rows {
        check_parents(tx, &def, &row).await?;
        let pk = def.pk_of(&row, rowid);
        let may_defer = matches!(on_duplicate, OnDuplicate::Fail);
        match index::conflict(tx, &def, &row, &pk, may_defer).await? {
            None => {
                index::put_row(tx, &def, &row, &pk)?;
                written.push(row);
            }
            Some(c) => match &on_duplicate {
                OnDuplicate::Fail => return Err(index::unique_violation(&def, &c)),
                OnDuplicate::Skip => {}
                OnDuplicate::Replace => {
                    let mut conflict = Some(c);
                    while let Some(c) = conflict {
                        if let Some(old) = index::get_row(tx, &def, &c.pk).await? {
                            check_children(tx, &def, &old, None).await?;
                            index::remove_row(tx, &def, &old, &c.pk)?;
                        }
                        conflict = index::conflict(tx, &def, &row, &pk, false).await?;
                    }
                    index::put_row(tx, &def, &row, &pk)?;
                    written.push(row);
                }
                OnDuplicate::Update {
                    assignments,
                    selection,
                } => {
                    let Some(old) = index::get_row(tx, &def, &c.pk).await? else {
                        return Err(SqlError::Internal("conflicting row vanished".into()));
                    };
                    let names: Vec<String> = def.columns.iter().map(|c| c.name.clone()).collect();
                    let types: Vec<_> = def.columns.iter().map(|c| c.ty.clone()).collect();
                    let groups = [
                        Columns {
                            qualifier: &def.name,
                            names: names.clone(),
                            types: types.clone(),
                        },
                        Columns {
                            qualifier: "excluded",
                            names,
                            types,
                        },
                    ];
                    let both: Vec<Datum> = old.iter().chain(row.iter()).cloned().collect();
                    let (batch, schema) = eval::batch(&groups, &[both])?;
                    if let Some(sel) = selection {
                        let keep = eval::eval(&s.state, sel, &batch, &schema)?;
                        if !matches!(keep.first(), Some(Datum::Bool(true))) {
                            continue;
                        }
                    }
                    let mut new = old.clone();
                    for a in assignments {
                        let pos = assignment_column(&def, &a.target)?;
                        new[pos] = eval::eval(&s.state, &a.value, &batch, &schema)?
                            .pop()
                            .unwrap_or(Datum::Null);
                    }
                    coerce_row(&def, &mut new)?;
                    check_constraints(s, &def, std::iter::once(&new)).await?;
                    replace_row(tx, &def, &old, &c.pk, &new, rowid_of(&def, &c.pk)).await?;
                    written.push(new);
                }
            },
        }
    }
    drop(guard);
    finish(s, &def, written, ins.returning.as_deref(), &table).await
}

/// The rows of a source that is a plain `VALUES` list (no `WITH`, `ORDER BY` or `LIMIT`):
/// the one an insert reads value by value, without planning, when each is a literal.
pub(crate) fn plain_values(query: &ast::Query) -> Option<&ast::Values> {
    match query.body.as_ref() {
        SetExpr::Values(values)
            if query.order_by.is_none() && query.limit_clause.is_none() && query.with.is_none() =>
        {
            Some(values)
        }
        _ => None,
    }
}

/// The values an INSERT's source produces, each row as many values as target columns.
async fn source_rows(
    s: &mut Session,
    query: &ast::Query,
    params: &[Datum],
) -> Result<Vec<Vec<Datum>>> {
    if let Some(values) = plain_values(query) {
        let mut rows = Vec::with_capacity(values.rows.len());
        let mut needs_planning = false;
        for exprs in &values.rows {
            let mut row = Vec::with_capacity(exprs.content.len());
            for e in &exprs.content {
                match eval::literal(e, params)? {
                    Some(d) => row.push(d),
                    None => {
                        needs_planning = true;
                        break;
                    }
                }
            }
            if needs_planning {
                break;
            }
            rows.push(row);
        }
        if !needs_planning {
            return Ok(rows);
        }
    }
    let (_, batches) = s
        .query_batches(Statement::Query(Box::new(query.clone())), params)
        .await?;
    QueryRows {
        schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        batches,
    }
    .rows()
}

/// Assign automatic keys: the hidden rowid, or a NULL auto-increment column.
async fn fill_keys(
    tx: &mut Tx,
    def: &TableDef,
    row: &mut [Datum],
    next: &mut Option<i64>,
) -> Result<Option<i64>> {
    let auto = def
        .columns
        .iter()
        .position(|c| c.auto_increment)
        .filter(|&i| row[i].is_null());
    if !def.has_rowid() && auto.is_none() {
        return Ok(None);
    }
    let key = match *next {
        Some(k) => k,
        None => index::next_key(tx, def).await?,
    };
    if let Some(i) = auto {
        row[i] = Datum::Int(key);
        *next = Some(key + 1);
        return Ok(None);
    }
    *next = Some(key + 1);
    Ok(Some(key))
}

fn rowid_of(def: &TableDef, pk: &[Datum]) -> Option<i64> {
    match (def.has_rowid(), pk.first()) {
        (true, Some(Datum::Int(i))) => Some(*i),
        _ => None,
    }
}

/// Types and NOT NULL.
fn coerce_row(def: &TableDef, row: &mut [Datum]) -> Result<()> {
    for (c, v) in def.columns.iter().zip(row.iter_mut()) {
        let d = std::mem::replace(v, Datum::Null);
        *v = c.ty.coerce(d, &c.name)?;
        if v.is_null() && !c.nullable {
            return Err(SqlError::NotNullViolation {
                table: def.name.clone(),
                column: c.name.clone(),
            });
        }
    }
    Ok(())
}

/// CHECK constraints: a row passes unless an expression is false.
async fn check_constraints<'a>(
    s: &Session,
    def: &TableDef,
    rows: impl Iterator<Item = &'a Vec<Datum>>,
) -> Result<()> {
    if def.checks.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Datum>> = rows.cloned().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let (batch, schema) = eval::batch(&[table_columns(def, &def.name)], &rows)?;
    for check in &def.checks {
        let expr = eval::parse_stored(&check.expr)?;
        for v in eval::eval(&s.state, &expr, &batch, &schema)? {
            if v == Datum::Bool(false) {
                return Err(SqlError::CheckViolation {
                    table: def.name.clone(),
                    constraint: check.name.clone(),
                });
            }
        }
    }
    Ok(())
}

fn table_columns<'a>(def: &TableDef, qualifier: &'a str) -> Columns<'a> {
    Columns {
        qualifier,
        names: def.columns.iter().map(|c| c.name.clone()).collect(),
        types: def.columns.iter().map(|c| c.ty.clone()).collect(),
    }
}

/// A child row's foreign keys must point at existing parent rows.
async fn check_parents(tx: &mut Tx, def: &TableDef, row: &[Datum]) -> Result<()> {
    for fk in &def.foreign_keys {
        let values: Vec<Datum> = fk
            .columns
            .iter()
            .filter_map(|id| def.column_by_id(*id).map(|(i, _)| row[i].clone()))
            .collect();
        if values.iter().any(Datum::is_null) {
            continue;
        }
        let Some(parent) = related(tx, def, &fk.parent).await? else {
            return Err(SqlError::UndefinedObject {
                kind: "table",
                name: fk.parent.clone(),
            });
        };
        if !row_with_values(tx, &parent, &fk.parent_columns, &values).await? {
            return Err(SqlError::ForeignKeyViolation {
                table: def.name.clone(),
                constraint: fk.name.clone(),
                detail: format!("key {values:?} is not present in table {:?}", fk.parent),
            });
        }
    }
    Ok(())
}

/// The definition of `name` as this statement sees it: `def` itself for a self-reference.
async fn related(tx: &mut Tx, def: &TableDef, name: &str) -> Result<Option<Arc<TableDef>>> {
    if name == def.name {
        return Ok(Some(Arc::new(def.clone())));
    }
    tx.table(name).await
}

/// A parent row may not go away while children point at it, nor change the columns they
/// point with (`new`: the row after an update; `None`: the row goes away).
async fn check_children(
    tx: &mut Tx,
    def: &TableDef,
    old: &[Datum],
    new: Option<&[Datum]>,
) -> Result<()> {
    for (child_name, fk_name) in &def.referenced_by {
        let Some(child) = related(tx, def, child_name).await? else {
            continue;
        };
        let Some(fk) = child.foreign_keys.iter().find(|f| &f.name == fk_name) else {
            continue;
        };
        if let Some(new) = new {
            let changed = fk
                .parent_columns
                .iter()
                .filter_map(|n| def.column_index(n))
                .any(|i| old[i] != new[i]);
            if !changed {
                continue;
            }
        }
        let values: Vec<Datum> = fk
            .parent_columns
            .iter()
            .filter_map(|n| def.column_index(n).map(|i| old[i].clone()))
            .collect();
        if values.iter().any(Datum::is_null) {
            continue;
        }
        let child_cols: Vec<String> = fk
            .columns
            .iter()
            .filter_map(|id| child.column_by_id(*id).map(|(_, c)| c.name.clone()))
            .collect();
        if row_with_values(tx, &child, &child_cols, &values).await? {
            return Err(SqlError::ForeignKeyViolation {
                table: def.name.clone(),
                constraint: fk.name.clone(),
                detail: format!(
                    "key {values:?} is still referenced from table {:?}",
                    child.name
                ),
            });
        }
    }
    Ok(())
}

/// Whether `def` has a row whose `columns` hold `values`: by primary key, by an index
/// whose leading columns they are, or by a scan.
async fn row_with_values(
    tx: &mut Tx,
    def: &TableDef,
    columns: &[String],
    values: &[Datum],
) -> Result<bool> {
    use crate::codec::Key;
    let positions: Vec<usize> = columns.iter().filter_map(|n| def.column_index(n)).collect();
    if positions.len() != values.len() {
        return Err(SqlError::Internal(format!(
            "foreign key columns of {:?} changed",
            def.name
        )));
    }
    let values: Vec<Datum> = positions
        .iter()
        .zip(values)
        .map(|(&i, v)| def.columns[i].ty.coerce(v.clone(), &def.columns[i].name))
        .collect::<Result<_>>()?;
    if !def.has_rowid() && def.pk_positions() == positions {
        return Ok(index::get_row(tx, def, &values).await?.is_some());
    }
    for idx in def.indexes.iter().filter(|i| i.ready) {
        let ip = def.index_positions(idx);
        if ip.len() >= positions.len() && ip[..positions.len()] == positions[..] {
            let prefix = Key::IndexEntry(def.id, idx.id, &values, &[]).encode();
            let end = strata_engine::prefix_end(&prefix);
            return Ok(!tx.scan(&prefix, &end, false, 1).await?.is_empty());
        }
    }
    let prefix = Key::Rows(def.id).encode();
    let end = strata_engine::prefix_end(&prefix);
    let mut start = prefix.clone();
    loop {
        let chunk = tx.scan(&start, &end, false, crate::tx::SCAN_CHUNK).await?;
        for (_, v) in &chunk {
            let row = def.decode_row(v)?;
            if positions
                .iter()
                .zip(&values)
                .all(|(&i, v)| !row[i].is_null() && crate::access::compare(&row[i], v).is_eq())
            {
                return Ok(true);
            }
        }
        match crate::tx::resume_after(&chunk) {
            Some(next) => start = next,
            None => return Ok(false),
        }
    }
}

/// Replace `old` (at `old_pk`) by `new`: entries that change move, uniqueness is checked
/// against every other row.
async fn replace_row(
    tx: &mut Tx,
    def: &TableDef,
    old: &[Datum],
    old_pk: &[Datum],
    new: &[Datum],
    rowid: Option<i64>,
) -> Result<()> {
    let new_pk = def.pk_of(new, rowid);
    check_children(tx, def, old, Some(new)).await?;
    index::remove_row(tx, def, old, old_pk)?;
    if let Some(c) = index::conflict(tx, def, new, &new_pk, false).await? {
        return Err(index::unique_violation(def, &c));
    }
    check_parents(tx, def, new).await?;
    index::put_row(tx, def, new, &new_pk)
}

fn assignment_column(def: &TableDef, target: &AssignmentTarget) -> Result<usize> {
    let name = match target {
        AssignmentTarget::ColumnName(n) => match n.0.last() {
            Some(ast::ObjectNamePart::Identifier(i)) => normalize(i),
            _ => n.to_string(),
        },
        AssignmentTarget::Tuple(_) => {
            return Err(SqlError::Unsupported("tuple assignment in SET".into()))
        }
    };
    def.column_index(&name).ok_or(SqlError::UndefinedColumn {
        table: def.name.clone(),
        column: name,
    })
}

pub async fn load(tx: &mut Tx, table: &str) -> Result<Arc<TableDef>> {
    tx.table(table)
        .await?
        .ok_or_else(|| SqlError::UndefinedObject {
            kind: "table",
            name: table.to_string(),
        })
}

/// The rows a table's UPDATE or DELETE targets, with their keys, in the session's
/// transaction: `SELECT key, columns…, extra… FROM relation WHERE selection`.
#[allow(clippy::too_many_arguments)] // the parts of one statement, passed through as they are
async fn target_rows(
    s: &mut Session,
    db: &str,
    table: &str,
    relation: &TableFactor,
    def: &TableDef,
    extra: &[Expr],
    selection: Option<&Expr>,
    params: &[Datum],
) -> Result<Vec<(Vec<u8>, Vec<Datum>, Vec<Datum>)>> {
    // One row by its key: read it directly and evaluate the extra expressions on it.
    if matches!(
        relation,
        TableFactor::Table {
            alias: None,
            args: None,
            ..
        }
    ) {
        let tx = s.ctx.tx(db).await?;
        let mut guard = tx.lock().await;
        if let Some(found) = crate::fastpath::point(&mut guard, def, selection, params).await? {
            let Some((pk, row)) = found else {
                return Ok(Vec::new());
            };
            drop(guard);
            let mut values = Vec::with_capacity(extra.len());
            if !extra.is_empty() {
                let (batch, schema) =
                    eval::batch(&[table_columns(def, table)], std::slice::from_ref(&row))?;
                for e in extra {
                    let v = match eval::literal(e, params)? {
                        Some(v) => v,
                        None => {
                            let mut e = e.clone();
                            bind_params(&mut e, params)?;
                            eval::eval(&s.state, &e, &batch, &schema)?
                                .pop()
                                .unwrap_or(Datum::Null)
                        }
                    };
                    values.push(v);
                }
            }
            return Ok(vec![(index::row_key(def, &pk), row, values)]);
        }
    }
    let mut sql = format!("SELECT \"{KEY_COLUMN}\"");
    for c in &def.columns {
        sql.push_str(&format!(", \"{}\"", c.name.replace('"', "\"\"")));
    }
    for e in extra {
        sql.push_str(&format!(", ({e})"));
    }
    sql.push_str(&format!(" FROM {relation}"));
    if let Some(sel) = selection {
        sql.push_str(&format!(" WHERE {sel}"));
    }
    let stmt = crate::planner::parse_one(&sql)?;
    {
        let mut scope = s.ctx.scope.lock().unwrap_or_else(|p| p.into_inner());
        scope.keyed = Some((db.to_string(), table.to_string()));
    }
    let result = s.query_batches(stmt, params).await;
    {
        let mut scope = s.ctx.scope.lock().unwrap_or_else(|p| p.into_inner());
        scope.keyed = None;
    }
    let (schema, batches) = result?;
    let rows = QueryRows { schema, batches }.rows()?;
    let n = def.columns.len();
    rows.into_iter()
        .map(|mut r| {
            let extra = r.split_off(n + 1);
            let key = match r.remove(0) {
                Datum::Bytes(b) => b,
                _ => return Err(SqlError::Internal("row key missing".into())),
            };
            Ok((key, r, extra))
        })
        .collect()
}

/// Replace `$n` placeholders by their values, for expressions evaluated outside a plan.
fn bind_params(e: &mut Expr, params: &[Datum]) -> Result<()> {
    let mut failed = None;
    let _ = ast::visit_expressions_mut(e, |x: &mut Expr| {
        if let Expr::Value(v) = x {
            if let ast::Value::Placeholder(p) = &v.value {
                match eval::param(p, params) {
                    Ok(d) => *x = eval::literal_expr(&d),
                    Err(err) => failed = Some(err),
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn single_table(t: &ast::TableWithJoins) -> Result<(&TableFactor, &ast::ObjectName)> {
    if !t.joins.is_empty() {
        return Err(SqlError::Unsupported("joins in UPDATE or DELETE".into()));
    }
    match &t.relation {
        TableFactor::Table { name, .. } => Ok((&t.relation, name)),
        other => Err(SqlError::Unsupported(format!(
            "UPDATE or DELETE of {other}"
        ))),
    }
}

pub async fn update(s: &mut Session, upd: ast::Update, params: &[Datum]) -> Result<Output> {
    if upd.from.is_some() {
        return Err(SqlError::Unsupported("UPDATE … FROM".into()));
    }
    let (relation, name) = single_table(&upd.table)?;
    let (db, table) = s.table_name(name).await?;
    let tx = s.ctx.tx(&db).await?;
    let def = load(&mut *tx.lock().await, &table).await?;
    let mut positions = Vec::new();
    let mut exprs = Vec::new();
    for a in &upd.assignments {
        positions.push(assignment_column(&def, &a.target)?);
        exprs.push(a.value.clone());
    }
    let targets = target_rows(
        s,
        &db,
        &table,
        relation,
        &def,
        &exprs,
        upd.selection.as_ref(),
        params,
    )
    .await?;
    let mut news = Vec::with_capacity(targets.len());
    for (key, old, values) in targets {
        let mut new = old.clone();
        for (&pos, v) in positions.iter().zip(values) {
            new[pos] = v;
        }
        coerce_row(&def, &mut new)?;
        news.push((key, old, new));
    }
    check_constraints(s, &def, news.iter().map(|(_, _, n)| n)).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    let mut written = Vec::with_capacity(news.len());
    // Remove every old row first, then write the new ones: a key that moves onto another
    // updated row's old key is not a conflict.
    let mut moved = HashMap::new();
    for (key, old, new) in &news {
        let old_pk = crate::codec::row_key_pk(key, def.id)?;
        if old != new {
            let new_pk = def.pk_of(new, rowid_of(&def, &old_pk));
            check_children(tx, &def, old, Some(new)).await?;
            index::remove_row(tx, &def, old, &old_pk)?;
            moved.insert(key.clone(), new_pk);
        }
    }
    for (key, _, new) in news {
        if let Some(new_pk) = moved.get(&key) {
            if let Some(c) = index::conflict(tx, &def, &new, new_pk, false).await? {
                return Err(index::unique_violation(&def, &c));
            }
            check_parents(tx, &def, &new).await?;
            index::put_row(tx, &def, &new, new_pk)?;
        }
        written.push(new);
    }
    drop(guard);
    finish(s, &def, written, upd.returning.as_deref(), &table).await
}

pub async fn delete(s: &mut Session, del: ast::Delete, params: &[Datum]) -> Result<Output> {
    let tables = match &del.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [t] = tables.as_slice() else {
        return Err(SqlError::Unsupported("DELETE from several tables".into()));
    };
    if del.using.is_some() {
        return Err(SqlError::Unsupported("DELETE … USING".into()));
    }
    let (relation, name) = single_table(t)?;
    let (db, table) = s.table_name(name).await?;
    let tx = s.ctx.tx(&db).await?;
    let def = load(&mut *tx.lock().await, &table).await?;
    let targets = target_rows(
        s,
        &db,
        &table,
        relation,
        &def,
        &[],
        del.selection.as_ref(),
        params,
    )
    .await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    let mut removed = Vec::with_capacity(targets.len());
    for (key, old, _) in targets {
        let pk = crate::codec::row_key_pk(&key, def.id)?;
        index::remove_row(tx, &def, &old, &pk)?;
        removed.push(old);
    }
    // Children are checked after every row is gone, so deleting a parent together with
    // its children (a self-referencing table) works.
    for old in &removed {
        check_children(tx, &def, old, None).await?;
    }
    drop(guard);
    finish(s, &def, removed, del.returning.as_deref(), &table).await
}

/// The statement's answer: the count, or the RETURNING list over the changed rows.
async fn finish(
    s: &Session,
    def: &TableDef,
    rows: Vec<Vec<Datum>>,
    returning: Option<&[SelectItem]>,
    table: &str,
) -> Result<Output> {
    let Some(items) = returning else {
        return Ok(Output::Affected {
            rows: rows.len() as u64,
        });
    };
    let (batch, schema) = eval::batch(&[table_columns(def, table)], &rows)?;
    let mut names = Vec::new();
    let mut columns: Vec<Vec<Datum>> = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for (i, c) in def.columns.iter().enumerate() {
                    names.push(c.name.clone());
                    columns.push(rows.iter().map(|r| r[i].clone()).collect());
                }
            }
            SelectItem::UnnamedExpr(e) => {
                names.push(match e {
                    Expr::Identifier(i) => normalize(i),
                    Expr::CompoundIdentifier(parts) => {
                        parts.last().map(normalize).unwrap_or_default()
                    }
                    other => other.to_string(),
                });
                columns.push(eval::eval(&s.state, e, &batch, &schema)?);
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                names.push(normalize(alias));
                columns.push(eval::eval(&s.state, expr, &batch, &schema)?);
            }
            other => return Err(SqlError::Unsupported(format!("RETURNING {other}"))),
        }
    }
    crate::session::rows_output(names, columns, rows.len())
}
