//! Evaluating SQL expressions over rows the layer holds in memory: DEFAULT and CHECK
//! expressions, UPDATE assignments of ON CONFLICT, and RETURNING lists.
//!
//! Rows become one Arrow batch, expressions become DataFusion physical expressions over
//! it, so these expressions mean exactly what they mean in a query.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast::{self, Expr};

use crate::error::{Result, SqlError};
use crate::types::{ColumnBuilder, Datum, SqlType};

/// One group of columns of the batch expressions see, with the name that qualifies them.
pub struct Columns<'a> {
    pub qualifier: &'a str,
    pub names: Vec<String>,
    pub types: Vec<SqlType>,
}

/// A batch of rows, each the concatenation of the groups' values.
pub fn batch(groups: &[Columns<'_>], rows: &[Vec<Datum>]) -> Result<(RecordBatch, DFSchema)> {
    let mut fields = Vec::new();
    let mut qualified = Vec::new();
    let mut types = Vec::new();
    for g in groups {
        for (n, t) in g.names.iter().zip(&g.types) {
            let f = Arc::new(Field::new(n, t.arrow_type(), true));
            fields.push(f.clone());
            qualified.push((Some(g.qualifier.into()), f));
            types.push(t.clone());
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut builders: Vec<ColumnBuilder> = types
        .iter()
        .map(|t| ColumnBuilder::new(t, rows.len()))
        .collect();
    for row in rows {
        for (b, v) in builders.iter_mut().zip(row) {
            b.push(v)?;
        }
    }
    let columns = builders
        .into_iter()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    let dfschema = DFSchema::new_with_metadata(
        qualified
            .into_iter()
            .map(|(q, f): (Option<String>, _)| (q.map(Into::into), f))
            .collect(),
        Default::default(),
    )?;
    Ok((batch, dfschema))
}

/// Parse a stored expression (a DEFAULT or CHECK) with the dialect rewrites applied.
pub fn parse_stored(sql: &str) -> Result<ast::Expr> {
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let mut expr = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)?
        .parse_expr()?;
    let mut placeholder = 0;
    let _ = ast::visit_expressions_mut(&mut expr, |e: &mut ast::Expr| {
        crate::planner::rewrite_expr(e, &mut placeholder);
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(expr)
}

/// Evaluate `expr` (already rewritten) on every row of `batch`: one value per row.
pub fn eval(
    state: &SessionState,
    expr: &ast::Expr,
    batch: &RecordBatch,
    schema: &DFSchema,
) -> Result<Vec<Datum>> {
    let mut logical = state.create_logical_expr(&expr.to_string(), schema)?;
    use datafusion::common::tree_node::TreeNode;
    if logical.exists(|e| {
        Ok(matches!(
            e,
            datafusion::logical_expr::Expr::ScalarFunction(_)
        ))
    })? {
        // Functions such as now() only have a value once simplified against the statement's
        // start time; the planner does that for queries, this does it for expressions.
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(state.config_options().clone());
        let context = match state.execution_props().query_execution_start_time {
            Some(t) => context.with_query_execution_start_time(Some(t)),
            None => context.with_current_time(),
        }
        .build();
        logical = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
            .simplify(logical)?;
    }
    let physical = state.create_physical_expr(logical, schema)?;
    let value = physical.evaluate(batch)?;
    let array = value.into_array(batch.num_rows())?;
    (0..batch.num_rows())
        .map(|r| Datum::from_array(&array, r))
        .collect()
}

/// Evaluate an expression that refers to no column (a DEFAULT, a VALUES item).
pub fn constant(state: &SessionState, expr: &ast::Expr) -> Result<Datum> {
    if let Some(d) = literal(expr, &[])? {
        return Ok(d);
    }
    let (batch, schema) = batch(&[], &[vec![]])?;
    Ok(eval(state, expr, &batch, &schema)?
        .pop()
        .unwrap_or(Datum::Null))
}

/// The value of a literal expression (numbers, strings, NULL, booleans, a sign, a
/// parameter) without planning, or `None` for anything else.
pub fn literal(expr: &ast::Expr, params: &[Datum]) -> Result<Option<Datum>> {
    use ast::{Expr, UnaryOperator, Value};
    Ok(match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(number(n)?),
            Value::SingleQuotedString(s) => Some(Datum::Text(s.clone())),
            Value::Null => Some(Datum::Null),
            Value::Boolean(b) => Some(Datum::Bool(*b)),
            Value::Placeholder(p) => Some(param(p, params)?),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr, params)? {
            Some(Datum::Int(i)) => Some(match i.checked_neg() {
                Some(n) => Datum::Int(n),
                None => Datum::Float(-(i as f64)),
            }),
            Some(Datum::Float(f)) => Some(Datum::Float(-f)),
            Some(Datum::Decimal(v, s)) => Some(Datum::Decimal(-v, s)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => match literal(expr, params)? {
            Some(d @ (Datum::Int(_) | Datum::Float(_) | Datum::Decimal(..))) => Some(d),
            _ => None,
        },
        Expr::Nested(inner) => literal(inner, params)?,
        _ => None,
    })
}

/// A numeric literal: an integer if it fits, else a double.
pub fn number(n: &str) -> Result<Datum> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Datum::Int(i));
    }
    n.parse::<f64>()
        .map(Datum::Float)
        .map_err(|_| SqlError::Syntax(format!("invalid number {n}")))
}

/// The value of placeholder `$n` (or `?`, already numbered by the caller's order).
pub fn param(p: &str, params: &[Datum]) -> Result<Datum> {
    let n: usize = p
        .strip_prefix('$')
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SqlError::InvalidParameter(format!("unknown placeholder {p}")))?;
    params.get(n.wrapping_sub(1)).cloned().ok_or_else(|| {
        SqlError::InvalidParameter(format!(
            "placeholder {p} has no value ({} given)",
            params.len()
        ))
    })
}

/// A value as SQL text that means exactly it.
pub fn literal_expr(d: &Datum) -> Expr {
    let text = |s: String| Expr::value(ast::Value::SingleQuotedString(s));
    let cast = |s: String, t: &str| {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        datafusion::sql::sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&format!("CAST('{}' AS {t})", s.replace('\'', "''")))
            .and_then(|mut p| p.parse_expr())
            .unwrap_or(Expr::value(ast::Value::Null))
    };
    match d {
        Datum::Null => Expr::value(ast::Value::Null),
        Datum::Bool(b) => Expr::value(ast::Value::Boolean(*b)),
        Datum::Int(i) => Expr::value(ast::Value::Number(i.to_string(), false)),
        Datum::Float(f) if f.is_finite() => cast(format!("{f:?}"), "DOUBLE"),
        Datum::Float(f) => cast(
            if f.is_nan() {
                "NaN".into()
            } else if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            },
            "DOUBLE",
        ),
        Datum::Decimal(..) => cast(d.to_string(), "DECIMAL(38, 10)"),
        Datum::Text(s) => text(s.clone()),
        Datum::Bytes(_) => cast(d.to_string(), "BYTEA"),
        Datum::Date(_) => cast(d.to_string(), "DATE"),
        Datum::Timestamp(_) => cast(d.to_string(), "TIMESTAMP"),
    }
}
