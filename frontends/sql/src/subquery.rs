//! Correlated subqueries that DataFusion cannot turn into joins, evaluated row by row.
//!
//! DataFusion decorrelates subqueries whose correlation is an equality. Others — such as
//! `(SELECT count(*) FROM t1 AS x WHERE x.c > t1.c)` — survive optimization and would fail
//! physical planning. The rule here runs last and replaces each surviving correlated
//! `(scalar subquery)`, `EXISTS` and `IN (subquery)` by a function of the outer columns it
//! names: for each distinct combination of their values, the function substitutes them into
//! the subquery's plan, runs it, and caches the answer (an "apply" join, one outer row at a
//! time). A scalar subquery yields its first row's value (NULL for none), as SQLite does.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr::{Exists, InSubquery, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, Filter, LogicalPlan, Projection, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Subquery, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::planner::Context;

/// The optimizer rule; add it after DataFusion's own.
#[derive(Debug)]
pub struct ApplySubqueries {
    ctx: std::sync::Weak<Context>,
}

impl ApplySubqueries {
    pub fn new(ctx: &Arc<Context>) -> Self {
        ApplySubqueries {
            ctx: Arc::downgrade(ctx),
        }
    }
}

fn correlated(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        found |= match x {
            Expr::ScalarSubquery(s) => !s.outer_ref_columns.is_empty(),
            Expr::Exists(Exists { subquery, .. })
            | Expr::InSubquery(InSubquery { subquery, .. }) => {
                !subquery.outer_ref_columns.is_empty()
            }
            _ => false,
        };
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

impl OptimizerRule for ApplySubqueries {
    fn name(&self) -> &str {
        "strata_apply_correlated_subqueries"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let Some(ctx) = self.ctx.upgrade() else {
            return Ok(Transformed::no(plan));
        };
        match plan {
            LogicalPlan::Projection(p) if p.expr.iter().any(correlated) => {
                let mut exprs = Vec::with_capacity(p.expr.len());
                for e in p.expr {
                    if !correlated(&e) {
                        exprs.push(e);
                        continue;
                    }
                    let (qualifier, name) = e.qualified_name();
                    let new = e.transform_up(|x| replace(&ctx, x))?.data;
                    exprs.push(match new {
                        Expr::Alias(_) => new,
                        other => other.alias_qualified(qualifier, name),
                    });
                }
                Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(exprs, p.input)?,
                )))
            }
            LogicalPlan::Filter(f) if correlated(&f.predicate) => {
                let predicate = f.predicate.transform_up(|x| replace(&ctx, x))?.data;
                Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                    predicate, f.input,
                )?)))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

fn replace(ctx: &Arc<Context>, e: Expr) -> DfResult<Transformed<Expr>> {
    let (kind, subquery, mut args) = match e {
        Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty() => (Kind::Scalar, s, vec![]),
        Expr::Exists(Exists { subquery, negated }) if !subquery.outer_ref_columns.is_empty() => {
            (Kind::Exists { negated }, subquery, vec![])
        }
        Expr::InSubquery(InSubquery {
            expr,
            subquery,
            negated,
        }) if !subquery.outer_ref_columns.is_empty() => {
            (Kind::In { negated }, subquery, vec![*expr])
        }
        other => return Ok(Transformed::no(other)),
    };
    let mut outer = Vec::new();
    for r in &subquery.outer_ref_columns {
        if let Expr::OuterReferenceColumn(_, c) = r {
            outer.push(c.clone());
            args.push(Expr::Column(c.clone()));
        }
    }
    let returns = match kind {
        Kind::Scalar => subquery
            .subquery
            .schema()
            .fields()
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null),
        _ => DataType::Boolean,
    };
    static IDS: AtomicU64 = AtomicU64::new(0);
    let udf = Apply {
        id: IDS.fetch_add(1, Ordering::Relaxed),
        kind,
        subquery,
        outer,
        returns,
        signature: Signature::variadic_any(Volatility::Volatile),
        ctx: Arc::downgrade(ctx),
        cache: Mutex::new(HashMap::new()),
    };
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(udf)), args),
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    Exists { negated: bool },
    In { negated: bool },
}

/// One correlated subquery as a function of the outer values it reads.
#[derive(Debug)]
struct Apply {
    id: u64,
    kind: Kind,
    subquery: Subquery,
    outer: Vec<Column>,
    returns: DataType,
    signature: Signature,
    ctx: std::sync::Weak<Context>,
    cache: Mutex<HashMap<Vec<ScalarValue>, ScalarValue>>,
}

impl PartialEq for Apply {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Apply {}

impl Hash for Apply {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl ScalarUDFImpl for Apply {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Scalar => "correlated_subquery",
            Kind::Exists { .. } => "correlated_exists",
            Kind::In { .. } => "correlated_in",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let mut out = Vec::with_capacity(rows);
        for r in 0..rows {
            let values = row_args(&args.args, r)?;
            let cached = self
                .cache
                .lock()
                .map_err(|_| DataFusionError::Internal("subquery cache poisoned".into()))?
                .get(&values)
                .cloned();
            let v = match cached {
                Some(v) => v,
                None => {
                    let v = self.evaluate(&values)?;
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(values, v.clone());
                    }
                    v
                }
            };
            out.push(v);
        }
        column(out, &self.returns)
    }
}

/// The arguments of a function for row `r`, as scalars.
pub(crate) fn row_args(args: &[ColumnarValue], r: usize) -> DfResult<Vec<ScalarValue>> {
    args.iter()
        .map(|a| match a {
            ColumnarValue::Scalar(s) => Ok(s.clone()),
            ColumnarValue::Array(arr) => ScalarValue::try_from_array(arr, r),
        })
        .collect()
}

/// A function's values, one per row, as a column of type `returns` (NULLs of that type).
pub(crate) fn column(values: Vec<ScalarValue>, returns: &DataType) -> DfResult<ColumnarValue> {
    let null = ScalarValue::try_from(returns)?;
    let typed: Vec<ScalarValue> = values
        .into_iter()
        .map(|v| if v.is_null() { null.clone() } else { v })
        .collect();
    if typed.is_empty() {
        return Ok(ColumnarValue::Array(
            datafusion::arrow::array::new_empty_array(returns),
        ));
    }
    Ok(ColumnarValue::Array(ScalarValue::iter_to_array(typed)?))
}

impl Apply {
    /// The subquery's answer for one combination of outer values.
    fn evaluate(&self, values: &[ScalarValue]) -> DfResult<ScalarValue> {
        let (probe, outer_values) = match self.kind {
            Kind::In { .. } => (values.first().cloned(), &values[1.min(values.len())..]),
            _ => (None, values),
        };
        let bound: HashMap<&Column, &ScalarValue> = self.outer.iter().zip(outer_values).collect();
        let plan = (*self.subquery.subquery)
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform(|x| match x {
                        Expr::OuterReferenceColumn(field, c) => match bound.get(&&c) {
                            Some(v) => Ok(Transformed::yes(Expr::Literal(
                                v.cast_to(field.data_type())?,
                                None,
                            ))),
                            None => Ok(Transformed::no(Expr::OuterReferenceColumn(field, c))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data;
        let ctx = self
            .ctx
            .upgrade()
            .ok_or_else(|| DataFusionError::Execution("the session is gone".into()))?;
        let batches = run_blocking(&ctx, plan)?;
        let mut column = Vec::new();
        for b in &batches {
            if b.num_columns() == 0 {
                continue;
            }
            for r in 0..b.num_rows() {
                column.push(ScalarValue::try_from_array(b.column(0), r)?);
                if matches!(self.kind, Kind::Scalar | Kind::Exists { .. }) {
                    break;
                }
            }
        }
        let rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        Ok(match self.kind {
            Kind::Scalar => column.into_iter().next().unwrap_or(ScalarValue::Null),
            Kind::Exists { negated } => ScalarValue::Boolean(Some((rows > 0) != negated)),
            Kind::In { negated } => {
                let probe = probe.unwrap_or(ScalarValue::Null);
                let found = if column.is_empty() {
                    Some(false)
                } else if probe.is_null() {
                    None
                } else if column.iter().any(|v| !v.is_null() && *v == probe) {
                    Some(true)
                } else if column.iter().any(|v| v.is_null()) {
                    None
                } else {
                    Some(false)
                };
                ScalarValue::Boolean(found.map(|f| f != negated))
            }
        })
    }
}

/// Run a plan to completion from inside a synchronous function evaluation.
fn run_blocking(
    ctx: &Context,
    plan: LogicalPlan,
) -> DfResult<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    let state = ctx
        .template()
        .ok_or_else(|| DataFusionError::Internal("planner not ready".into()))?
        .clone();
    block_on(async move {
        let physical = state.create_physical_plan(&plan).await?;
        datafusion::physical_plan::collect(physical, state.task_ctx()).await
    })?
}

/// Run `work` to completion from inside a synchronous function evaluation (a correlated
/// subquery, a catalog function that reads the catalog).
pub(crate) fn block_on<F: std::future::Future>(work: F) -> DfResult<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| DataFusionError::NotImplemented("this query needs a tokio runtime".into()))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(DataFusionError::NotImplemented(
            "this query (a correlated subquery or a catalog function) needs a multi-threaded tokio runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(work)))
}
