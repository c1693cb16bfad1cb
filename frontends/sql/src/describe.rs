//! What a statement takes and returns, found without running it: the types of its
//! parameters and the columns of its result.
//!
//! Network clients ask this of a prepared statement before they bind values (the
//! PostgreSQL protocol's Describe): a driver encodes each parameter in the type the server
//! names, and decodes result columns by the types it announced.
//!
//! * A query (and EXPLAIN) is planned by DataFusion, unexecuted: the plan's schema is the
//!   result, and DataFusion infers a placeholder's type from what it is compared with.
//! * INSERT, UPDATE and DELETE take a parameter's type from the column it is written to or
//!   compared with (`VALUES ($1, $2)`, `SET a = $1`, `WHERE id = $2`, `x IN ($3, $4)`,
//!   `x BETWEEN $5 AND $6`). RETURNING is planned as a query over the table.
//! * LIMIT and OFFSET parameters are BIGINT.
//!
//! A parameter nothing determines is `None`: the caller decides (PostgreSQL reports
//! "unknown" and takes the value as text).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, BinaryOperator, Expr, FromTable, SetExpr, Statement, TableFactor,
    TableObject, Visit, Visitor,
};

use crate::catalog::TableDef;
use crate::error::Result;
use crate::planner;
use crate::session::{normalize, Session};

/// A statement's parameters and result, as a client sees them before running it.
#[derive(Debug, Clone)]
pub struct Description {
    /// The type of each parameter `$1`, `$2`, …, where the statement determines it.
    pub params: Vec<Option<DataType>>,
    /// The result's columns, or `None` when the statement returns no rows.
    pub columns: Option<SchemaRef>,
}

/// The highest placeholder number in `stmt` (`?` placeholders are numbered by then).
pub fn param_count(stmt: &Statement) -> usize {
    struct Count(usize);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e {
                if let ast::Value::Placeholder(p) = &v.value {
                    if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                        self.0 = self.0.max(n);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut count = Count(0);
    let _ = stmt.visit(&mut count);
    count.0
}

pub(crate) async fn describe(s: &mut Session, stmt: &Statement) -> Result<Description> {
    let count = param_count(stmt);
    let mut params: Vec<Option<DataType>> = vec![None; count];
    casts(stmt, &mut params);
    let columns = match stmt {
        Statement::Query(_) | Statement::Explain { .. } => {
            let plan = planner::plan_statement(&s.state, stmt.clone()).await?;
            for (name, ty) in plan.get_parameter_types()? {
                if let (Some(n), Some(ty)) = (placeholder_index(&name), ty) {
                    if n < count {
                        params[n] = Some(ty);
                    }
                }
            }
            if let Statement::Query(q) = stmt {
                limit_params(q, &mut params);
            }
            Some(Arc::new(plan.schema().as_arrow().clone()))
        }
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &ins.table else {
                return Ok(Description {
                    params,
                    columns: None,
                });
            };
            let def = table(s, name).await?;
            let targets: Vec<usize> = if ins.columns.is_empty() {
                (0..def.columns.len()).collect()
            } else {
                ins.columns
                    .iter()
                    .filter_map(|c| match c.0.last() {
                        Some(ast::ObjectNamePart::Identifier(i)) => def.column_index(&normalize(i)),
                        _ => None,
                    })
                    .collect()
            };
            if let Some(source) = &ins.source {
                if let SetExpr::Values(values) = source.body.as_ref() {
                    for row in &values.rows {
                        for (pos, e) in row.iter().enumerate() {
                            if let (Some(n), Some(&col)) = (placeholder(e), targets.get(pos)) {
                                set(&mut params, n, def.columns[col].ty.arrow_type());
                            }
                        }
                    }
                }
            }
            if let Some(ast::OnInsert::OnConflict(c)) = &ins.on {
                if let ast::OnConflictAction::DoUpdate(u) = &c.action {
                    assignments(&def, &u.assignments, &mut params);
                    if let Some(w) = &u.selection {
                        comparisons(&def, w, &mut params);
                    }
                }
            }
            returning(s, name, ins.returning.as_deref()).await?
        }
        Statement::Update(update) => {
            let TableFactor::Table { name, .. } = &update.table.relation else {
                return Ok(Description {
                    params,
                    columns: None,
                });
            };
            let def = table(s, name).await?;
            assignments(&def, &update.assignments, &mut params);
            if let Some(w) = &update.selection {
                comparisons(&def, w, &mut params);
            }
            returning(s, name, update.returning.as_deref()).await?
        }
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let Some(TableFactor::Table { name, .. }) = from.first().map(|t| &t.relation) else {
                return Ok(Description {
                    params,
                    columns: None,
                });
            };
            let def = table(s, name).await?;
            if let Some(w) = &delete.selection {
                comparisons(&def, w, &mut params);
            }
            returning(s, name, delete.returning.as_deref()).await?
        }
        Statement::ShowDatabases { .. } => Some(one_text_column("database")),
        Statement::ShowTables { .. } => Some(one_text_column("table")),
        _ => None,
    };
    Ok(Description { params, columns })
}

fn one_text_column(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

async fn table(s: &mut Session, name: &ast::ObjectName) -> Result<Arc<TableDef>> {
    let (db, table) = s.table_name(name).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    crate::dml::load(&mut guard, &table).await
}

/// The columns RETURNING gives: its items planned as a query over the table.
async fn returning(
    s: &mut Session,
    table: &ast::ObjectName,
    items: Option<&[ast::SelectItem]>,
) -> Result<Option<SchemaRef>> {
    let Some(items) = items else {
        return Ok(None);
    };
    let list = items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = planner::parse_one(&format!("SELECT {list} FROM {table}"))?;
    planner::rewrite(&mut stmt);
    let plan = planner::plan_statement(&s.state, stmt).await?;
    Ok(Some(Arc::new(plan.schema().as_arrow().clone())))
}

/// `$3` → 2.
fn placeholder_index(name: &str) -> Option<usize> {
    name.strip_prefix('$')?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

fn placeholder(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => placeholder_index(p),
            _ => None,
        },
        Expr::Nested(inner) => placeholder(inner),
        Expr::Cast { expr, .. } => placeholder(expr),
        _ => None,
    }
}

fn set(params: &mut [Option<DataType>], n: usize, ty: DataType) {
    if let Some(slot) = params.get_mut(n) {
        if slot.is_none() {
            *slot = Some(ty);
        }
    }
}

fn column_type(def: &TableDef, e: &Expr) -> Option<DataType> {
    let name = match e {
        Expr::Identifier(i) => normalize(i),
        Expr::CompoundIdentifier(parts) => normalize(parts.last()?),
        Expr::Nested(inner) => return column_type(def, inner),
        _ => return None,
    };
    let pos = def.column_index(&name)?;
    Some(def.columns[pos].ty.arrow_type())
}

fn assignments(def: &TableDef, list: &[ast::Assignment], params: &mut [Option<DataType>]) {
    for a in list {
        let AssignmentTarget::ColumnName(col) = &a.target else {
            continue;
        };
        let Some(ast::ObjectNamePart::Identifier(i)) = col.0.last() else {
            continue;
        };
        if let (Some(n), Some(pos)) = (placeholder(&a.value), def.column_index(&normalize(i))) {
            set(params, n, def.columns[pos].ty.arrow_type());
        }
        comparisons(def, &a.value, params);
    }
}

/// A parameter cast to a type (`$1::BIGINT`, `CAST($1 AS DATE)`) has that type, as in
/// PostgreSQL: the client's own declaration of it.
fn casts(stmt: &Statement, params: &mut [Option<DataType>]) {
    let _ = ast::visit_expressions(stmt, |e: &Expr| {
        if let Expr::Cast {
            expr, data_type, ..
        } = e
        {
            if let (Some(n), Ok(ty)) = (
                placeholder(expr),
                crate::types::SqlType::from_ast(data_type),
            ) {
                set(params, n, ty.arrow_type());
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Parameters compared with a column of `def` anywhere in `e`.
fn comparisons(def: &TableDef, e: &Expr, params: &mut [Option<DataType>]) {
    struct Compared<'a> {
        def: &'a TableDef,
        params: &'a mut [Option<DataType>],
    }
    impl Visitor for Compared<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::BinaryOp { left, op, right } if comparison(op) => {
                    if let (Some(n), Some(ty)) = (placeholder(right), column_type(self.def, left)) {
                        set(self.params, n, ty);
                    }
                    if let (Some(n), Some(ty)) = (placeholder(left), column_type(self.def, right)) {
                        set(self.params, n, ty);
                    }
                }
                Expr::InList { expr, list, .. } => {
                    if let Some(ty) = column_type(self.def, expr) {
                        for item in list {
                            if let Some(n) = placeholder(item) {
                                set(self.params, n, ty.clone());
                            }
                        }
                    }
                }
                Expr::Between {
                    expr, low, high, ..
                } => {
                    if let Some(ty) = column_type(self.def, expr) {
                        for bound in [low, high] {
                            if let Some(n) = placeholder(bound) {
                                set(self.params, n, ty.clone());
                            }
                        }
                    }
                }
                Expr::Like { pattern, .. } | Expr::ILike { pattern, .. } => {
                    if let Some(n) = placeholder(pattern) {
                        set(self.params, n, DataType::Utf8);
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let _ = e.visit(&mut Compared { def, params });
}

fn comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
            | BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
    )
}

/// LIMIT $n and OFFSET $n are counts.
fn limit_params(q: &ast::Query, params: &mut [Option<DataType>]) {
    let mut exprs: Vec<&Expr> = Vec::new();
    match &q.limit_clause {
        Some(ast::LimitClause::LimitOffset { limit, offset, .. }) => {
            exprs.extend(limit.as_ref());
            exprs.extend(offset.as_ref().map(|o| &o.value));
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
            exprs.push(offset);
            exprs.push(limit);
        }
        None => {}
    }
    for e in exprs {
        if let Some(n) = placeholder(e) {
            set(params, n, DataType::Int64);
        }
    }
}
