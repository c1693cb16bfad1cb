//! EXPLAIN for what DataFusion does not plan: point statements on the fast path, and
//! INSERT, UPDATE and DELETE (how they find their rows).
//!
//! The output has DataFusion's EXPLAIN columns (`plan_type`, `plan`), so clients read every
//! EXPLAIN the same way. Queries that are planned normally are explained by DataFusion, with
//! our scans shown as `StrataScan` lines.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{self, FromTable, SetExpr, Statement, TableFactor};

use crate::error::{Result, SqlError};
use crate::session::{Output, QueryRows, Session};
use crate::types::Datum;

/// The explanation of `stmt`, or `None` when DataFusion should explain it (a query that is
/// not a point read).
pub async fn explain(
    s: &mut Session,
    stmt: &Statement,
    analyze: bool,
    params: &[Datum],
) -> Result<Option<Output>> {
    match stmt {
        Statement::Query(q) => {
            let started = Instant::now();
            let Some(out) = crate::fastpath::select(s, stmt, params).await? else {
                return Ok(None);
            };
            let elapsed = started.elapsed();
            let SetExpr::Select(sel) = q.body.as_ref() else {
                return Ok(None);
            };
            let TableFactor::Table { name, .. } = &sel.from[0].relation else {
                return Ok(None);
            };
            let (line, _) = point_line(s, name, sel.selection.as_ref(), params).await?;
            let line = line.unwrap_or_default();
            let out = if analyze {
                let rows = match &out {
                    Output::Rows(r) => r.num_rows(),
                    _ => 0,
                };
                lines(&[(
                    "Plan with Metrics",
                    format!(
                        "{line}, metrics=[output_rows={rows}, rows_read={rows}, elapsed={elapsed:.2?}]"
                    ),
                )])?
            } else {
                lines(&[("physical_plan", line)])?
            };
            Ok(Some(out))
        }
        Statement::Update(_) | Statement::Delete(_) | Statement::Insert(_) if analyze => {
            Err(SqlError::Unsupported(
                "EXPLAIN ANALYZE of INSERT, UPDATE or DELETE (EXPLAIN shows how it finds its rows)"
                    .into(),
            ))
        }
        Statement::Update(u) => {
            let TableFactor::Table { name, .. } = &u.table.relation else {
                return Ok(None);
            };
            dml(
                s,
                "Update",
                name,
                &u.table.relation,
                u.selection.as_ref(),
                params,
            )
            .await
            .map(Some)
        }
        Statement::Delete(d) => {
            let tables = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let Some(t) = tables.first() else {
                return Ok(None);
            };
            let TableFactor::Table { name, .. } = &t.relation else {
                return Ok(None);
            };
            dml(s, "Delete", name, &t.relation, d.selection.as_ref(), params)
                .await
                .map(Some)
        }
        Statement::Insert(ins) => {
            let target = ins.table.to_string();
            let head = format!("Insert: table={target}");
            let Some(source) = &ins.source else {
                return Ok(Some(lines(&[(
                    "physical_plan",
                    format!("{head}, default values (no planning)"),
                )])?));
            };
            if let SetExpr::Values(v) = source.body.as_ref() {
                if source.with.is_none() {
                    return Ok(Some(lines(&[(
                        "physical_plan",
                        format!("{head}, {} rows of values (no planning)", v.rows.len()),
                    )])?));
                }
            }
            let plan = planned(s, Statement::Query(source.clone()), params).await?;
            let mut out = vec![("physical_plan".to_string(), format!("{head}, rows from:"))];
            out.extend(plan);
            Ok(Some(owned_lines(out)?))
        }
        _ => Ok(None),
    }
}

/// The fast-path line for a point statement on `name`, and whether it is one.
async fn point_line(
    s: &mut Session,
    name: &ast::ObjectName,
    selection: Option<&ast::Expr>,
    params: &[Datum],
) -> Result<(Option<String>, Arc<crate::catalog::TableDef>)> {
    let (db, table) = s.table_name(name).await?;
    let tx = s.ctx.tx(&db).await?;
    let def = crate::dml::load(&mut *tx.lock().await, &table).await?;
    let line = crate::fastpath::plan_point(&def, selection, params)
        .map(|p| format!("FastPath: table={table}, access={}", p.describe(&def)));
    Ok((line, def))
}

/// UPDATE or DELETE: a point read on the fast path, or the plan of the query that finds
/// the rows.
async fn dml(
    s: &mut Session,
    verb: &str,
    name: &ast::ObjectName,
    relation: &TableFactor,
    selection: Option<&ast::Expr>,
    params: &[Datum],
) -> Result<Output> {
    let plain = matches!(
        relation,
        TableFactor::Table {
            alias: None,
            args: None,
            ..
        }
    );
    let (point, def) = point_line(s, name, selection, params).await?;
    let head = format!("{verb}: table={}", def.name);
    if let (true, Some(line)) = (plain, point) {
        return lines(&[("physical_plan", format!("{head}, rows by {line}"))]);
    }
    let mut sql = format!("SELECT * FROM {relation}");
    if let Some(sel) = selection {
        sql.push_str(&format!(" WHERE {sel}"));
    }
    let mut stmt = crate::planner::parse_one(&sql)?;
    crate::planner::rewrite(&mut stmt);
    let plan = planned(s, stmt, params).await?;
    let mut out = vec![("physical_plan".to_string(), format!("{head}, rows from:"))];
    out.extend(plan);
    owned_lines(out)
}

/// DataFusion's physical plan of a query, as `(plan_type, plan)` lines, indented one step.
async fn planned(
    s: &mut Session,
    query: Statement,
    params: &[Datum],
) -> Result<Vec<(String, String)>> {
    let explain = Statement::Explain {
        describe_alias: ast::DescribeAlias::Explain,
        analyze: false,
        verbose: false,
        query_plan: false,
        estimate: false,
        statement: Box::new(query),
        format: None,
        options: None,
    };
    let out = s.query(explain, params).await?;
    let Output::Rows(rows) = out else {
        return Ok(Vec::new());
    };
    Ok(rows
        .rows()?
        .into_iter()
        .filter_map(|r| match (r.first(), r.get(1)) {
            (Some(Datum::Text(kind)), Some(Datum::Text(plan))) if kind == "physical_plan" => Some(
                plan.lines()
                    .map(|l| (kind.clone(), format!("  {l}")))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect())
}

fn lines(rows: &[(&str, String)]) -> Result<Output> {
    owned_lines(
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn owned_lines(rows: Vec<(String, String)>) -> Result<Output> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let kinds = StringArray::from_iter_values(rows.iter().map(|(k, _)| k.as_str()));
    let plans = StringArray::from_iter_values(rows.iter().map(|(_, p)| p.as_str()));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(kinds), Arc::new(plans)])
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(Output::Rows(QueryRows {
        schema,
        batches: vec![batch],
    }))
}
