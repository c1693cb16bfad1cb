//! The plan cache: a query run again (a prepared statement, or the same text) reuses its
//! physical plan instead of planning it again.
//!
//! Planning is most of a small query's cost: analysis and optimization, then physical
//! planning, each take longer than running a 100-row range scan. So a query that can be
//! cached is planned once with its placeholders in place. The providers push down
//! predicates on placeholders like those on literals, using the values of the run that
//! plans, so a predicate on a key becomes a key range as before. The plan is kept with
//! its scans unbound ([`ScanExec::unbound`]); each later run binds them to its own
//! transaction and parameter values ([`ScanExec::bind`]), and every other node is reset
//! to its initial state.
//!
//! A plan is used again only while it is still right:
//!
//! - every database it reads is the one it was planned over (not another made since under
//!   its name), at the same schema version (DDL bumps it, and reading it makes the version
//!   part of the transaction's reads);
//! - the current database and the parallel-scan settings are the ones it was planned
//!   under;
//! - the new values state the same access path shape: a value of another type, or one that
//!   would change the scan's partitions or promised order, plans again.
//!
//! Only what a plan fixes at planning time is kept out: a statement with subqueries (the
//! uncorrelated ones are run while planning), with functions that are not immutable
//! (`now()` is folded into a constant), reading anything but tables (catalog tables are
//! snapshots), or with placeholders outside pushed-down predicates. Those are planned on
//! every run, as before; the statement is remembered as uncacheable.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr as LogicalExpr, LogicalPlan, Volatility};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{self, Expr, Statement};

use crate::error::Result;
use crate::planner;
use crate::session::{Output, QueryRows, Session};
use crate::table::{ScanExec, SqlTable};
use crate::tx::Source;
use crate::types::{from_datafusion, Datum};

/// The plan cache's entries for the statements of one parsed text.
#[derive(Default)]
pub(crate) struct Plans(Mutex<Vec<Slot>>);

/// What the cache knows of one statement.
#[derive(Clone, Default)]
enum Slot {
    #[default]
    Untried,
    /// Planned on every run (see the module documentation).
    Uncacheable,
    Cached(Arc<CachedPlan>),
}

struct CachedPlan {
    /// The physical plan with its scans unbound.
    plan: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    /// The session's current database when it was planned.
    current: String,
    /// Each database the plan reads: its name, its id and its schema version.
    versions: Vec<(String, String, u64)>,
    /// The parallel-scan settings it was planned with.
    scan: (u64, usize),
}

impl Plans {
    fn get(&self, i: usize) -> Slot {
        let slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(i).cloned().unwrap_or_default()
    }

    fn set(&self, i: usize, slot: Slot) {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= i {
            slots.resize(i + 1, Slot::Untried);
        }
        slots[i] = slot;
    }
}

impl Session {
    /// Run query `stmt`, statement `i` of a text whose plans `plans` keeps: from its cached
    /// plan when that plan still holds, else planned (and cached when it can be).
    pub(crate) async fn query_cached(
        &mut self,
        plans: &Plans,
        i: usize,
        stmt: &Statement,
        params: &[Datum],
    ) -> Result<Output> {
        let tried = match plans.get(i) {
            Slot::Uncacheable => return self.query(stmt.clone(), params).await,
            Slot::Cached(cached) => {
                if let Some(plan) = self.bind(&cached, params).await? {
                    self.plan_cache.hits += 1;
                    return self.run_plan(plan, cached.schema.clone()).await;
                }
                true
            }
            Slot::Untried => false,
        };
        if !cacheable(stmt) {
            plans.set(i, Slot::Uncacheable);
            return self.query(stmt.clone(), params).await;
        }
        match self.plan_to_cache(stmt, params).await {
            Ok(Some((plan, cached))) => {
                let schema = cached.schema.clone();
                plans.set(i, Slot::Cached(Arc::new(cached)));
                self.plan_cache.planned += 1;
                self.run_plan(plan, schema).await
            }
            // Not cacheable, or failed: planned the usual way, which also gives the error
            // the statement deserves. It is remembered as uncacheable unless it was cached
            // before (it keeps that plan for the values it fits) or the failure may pass (a
            // conflict is no property of the statement).
            planned => {
                let transient = matches!(&planned, Err(e) if e.is_retryable());
                let out = self.query(stmt.clone(), params).await;
                if out.is_ok() && !tried && !transient {
                    plans.set(i, Slot::Uncacheable);
                }
                out
            }
        }
    }

    /// Plan `stmt` with its placeholders in place: the plan to run now (bound to this
    /// statement's transaction and `params`), and the entry to keep. `None` when the plan
    /// cannot be kept.
    async fn plan_to_cache(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
    ) -> Result<Option<(Arc<dyn ExecutionPlan>, CachedPlan)>> {
        // The providers, made while the statement is turned into a logical plan, take the
        // values for pushing down predicates on placeholders.
        self.set_plan_params(params.into());
        let planned = async {
            let logical = planner::plan_statement(&self.state, stmt.clone()).await?;
            if !reusable(&logical) {
                return Ok(None);
            }
            let schema = Arc::new(logical.schema().as_arrow().clone());
            let physical = self.state.create_physical_plan(&logical).await?;
            Ok::<_, crate::SqlError>(Some((schema, physical)))
        }
        .await;
        self.set_plan_params(Arc::new([]));
        let Some((schema, physical)) = planned? else {
            return Ok(None);
        };
        let Some(dbs) = scanned_databases(&physical) else {
            return Ok(None);
        };
        let mut versions = Vec::with_capacity(dbs.len());
        for db in dbs {
            let (id, version) = self.catalog_of(&db).await?;
            versions.push((db, id, version));
        }
        let template = physical
            .clone()
            .transform_up(|node| {
                Ok(match node.downcast_ref::<ScanExec>() {
                    Some(scan) => {
                        Transformed::yes(Arc::new(scan.unbound()) as Arc<dyn ExecutionPlan>)
                    }
                    None => Transformed::no(node),
                })
            })
            .map_err(from_datafusion)?
            .data;
        Ok(Some((
            physical,
            CachedPlan {
                plan: template,
                schema,
                current: self.current_database().to_string(),
                versions,
                scan: self.scan_settings(),
            },
        )))
    }

    /// `cached`'s plan bound to this statement's transactions and `params`, or `None` when
    /// it no longer holds.
    async fn bind(
        &mut self,
        cached: &CachedPlan,
        params: &[Datum],
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if cached.current != self.current_database() || cached.scan != self.scan_settings() {
            return Ok(None);
        }
        let mut sources = Vec::with_capacity(cached.versions.len());
        for (db, id, version) in &cached.versions {
            let tx = self.ctx.tx(db).await?;
            let mut held = tx.lock().await;
            if held.database_id() != id || held.schema_version().await? != *version {
                return Ok(None);
            }
            drop(held);
            sources.push((db.as_str(), Source::Txn(tx)));
        }
        let mut bound = true;
        let plan = cached
            .plan
            .clone()
            .transform_up(|node| {
                let Some(scan) = node.downcast_ref::<ScanExec>() else {
                    return Ok(Transformed::yes(node.reset_state()?));
                };
                let source = sources
                    .iter()
                    .find(|(db, _)| Some(*db) == scan.database())
                    .map(|(_, s)| s.clone());
                match source.and_then(|s| scan.bind(s, params)) {
                    Some(scan) => Ok(Transformed::yes(Arc::new(scan) as Arc<dyn ExecutionPlan>)),
                    None => {
                        bound = false;
                        Ok(Transformed::new(node, false, TreeNodeRecursion::Stop))
                    }
                }
            })
            .map_err(from_datafusion)?
            .data;
        Ok(bound.then_some(plan))
    }

    /// The id and schema version of `db` as this statement's transaction reads it.
    async fn catalog_of(&mut self, db: &str) -> Result<(String, u64)> {
        let tx = self.ctx.tx(db).await?;
        let mut tx = tx.lock().await;
        Ok((tx.database_id().to_string(), tx.schema_version().await?))
    }

    fn set_plan_params(&self, params: Arc<[Datum]>) {
        self.ctx
            .scope
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .params = params;
    }

    fn scan_settings(&self) -> (u64, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.ctx.parallel_scan_rows.load(Relaxed),
            self.ctx.scan_parts.load(Relaxed),
        )
    }

    async fn run_plan(&self, plan: Arc<dyn ExecutionPlan>, schema: SchemaRef) -> Result<Output> {
        let batches = self.collect_plan(plan).await?;
        Ok(Output::Rows(QueryRows { schema, batches }))
    }
}

/// Whether a query may be cached at all: no subqueries (uncorrelated ones are run, and
/// their results put in their place, while planning).
fn cacheable(stmt: &Statement) -> bool {
    if !matches!(stmt, Statement::Query(_)) {
        return false;
    }
    let found = ast::visit_expressions(stmt, |e: &Expr| match e {
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    found.is_continue()
}

/// Whether a logical plan may be kept: it reads only tables of ours (catalog tables are
/// snapshots; statistics can even fold a count of one into a constant) and views over
/// them, and calls only immutable functions (a stable one such as `now()` is folded into a
/// constant when the plan is optimized).
fn reusable(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            ok &= match scan.source.table_type() {
                TableType::View => scan
                    .source
                    .get_logical_plan()
                    .is_some_and(|view| reusable(&view)),
                _ => source_as_provider(&scan.source).is_ok_and(|p| p.is::<SqlTable>()),
            };
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let LogicalExpr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        ok = false;
                    }
                }
                Ok(continue_while(ok))
            })
        })?;
        Ok(continue_while(ok))
    });
    ok
}

fn continue_while(ok: bool) -> TreeNodeRecursion {
    if ok {
        TreeNodeRecursion::Continue
    } else {
        TreeNodeRecursion::Stop
    }
}

/// The databases a physical plan's scans read, or `None` when it reads anything else
/// than tables (catalog tables and VALUES lists hold their rows in the plan).
fn scanned_databases(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<String>> {
    let mut dbs: Vec<String> = Vec::new();
    let mut ok = true;
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<ScanExec>() {
            match scan.database() {
                Some(db) if !dbs.iter().any(|d| d == db) => dbs.push(db.to_string()),
                Some(_) => {}
                None => ok = false,
            }
        } else if node.children().is_empty()
            && !node.is::<EmptyExec>()
            && !node.is::<PlaceholderRowExec>()
        {
            ok = false;
        }
        Ok(continue_while(ok))
    });
    ok.then_some(dbs)
}
