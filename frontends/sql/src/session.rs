//! The embedded API: a [`Session`] runs SQL statements against an [`Engine`].
//!
//! The life of a statement:
//!
//! 1. It is parsed by sqlparser (the version DataFusion re-exports, so there is one AST).
//! 2. Transaction control, database commands and DDL run here and in `ddl.rs`; writes run in
//!    `dml.rs`; point statements may take the fast path (`fastpath.rs`); queries are planned
//!    by DataFusion over the providers of `planner.rs` and `table.rs`.
//! 3. Everything reads and writes through the session's transaction on each database it
//!    touches ([`Tx`]). Outside BEGIN … COMMIT every statement is its own transaction
//!    (autocommit), retried automatically when it loses a conflict since nothing it did is
//!    visible yet. Inside, a failing statement is undone (a savepoint per statement) and the
//!    transaction goes on; a conflict at COMMIT is SQLSTATE 40001.
//! 4. A transaction writes to one database at most: strict serializability is a property of
//!    one database's commit pipeline. Reads may span databases (cross-database joins).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{
    self, Expr, ObjectName, Statement, TransactionAccessMode, TransactionMode,
};
use strata_engine::Engine;

use crate::error::{Result, SqlError};
use crate::planner::{self, catalog_name, AsOf, Catalogs, Context, Scope, SCHEMA};
use crate::tx::Tx;
use crate::types::Datum;

/// How often an autocommit statement is retried after losing a conflict.
const AUTOCOMMIT_RETRIES: usize = 8;

/// What a statement returns.
#[derive(Debug)]
pub enum Output {
    /// A query's rows.
    Rows(QueryRows),
    /// INSERT, UPDATE or DELETE without RETURNING: how many rows it changed.
    Affected { rows: u64 },
    /// Anything else that succeeded.
    Done,
}

/// A query result: Arrow batches with their schema.
#[derive(Debug, Clone)]
pub struct QueryRows {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryRows {
    /// The rows as values.
    pub fn rows(&self) -> Result<Vec<Vec<Datum>>> {
        let mut out = Vec::new();
        for batch in &self.batches {
            for r in 0..batch.num_rows() {
                let row = batch
                    .columns()
                    .iter()
                    .map(|c| Datum::from_array(c, r))
                    .collect::<Result<Vec<_>>>()?;
                out.push(row);
            }
        }
        Ok(out)
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

/// Statement text parsed once: to run statement by statement (a network client wants one
/// answer per statement of a multi-statement text), and to describe before running.
#[derive(Clone)]
pub struct Prepared {
    kind: PreparedKind,
}

#[derive(Clone)]
enum PreparedKind {
    Statements(Arc<Parsed>),
    /// SQLite's `REINDEX <name>`, which sqlparser does not parse.
    Reindex(String),
    /// A point query matched by its shape ([`crate::shape`]).
    Shaped(Arc<ShapedText>),
}

/// A text run as its shape's statement, with its literals as the parameters.
struct ShapedText {
    /// The shape's statement (placeholders where the text has literals).
    template: Arc<Parsed>,
    params: Vec<Datum>,
    /// The text itself, parsed after all if the fast path does not take the statement.
    sql: String,
    /// The shape's key in the session's shapes.
    key: String,
}

impl Prepared {
    /// Parse `sql` (one or more statements) outside any session.
    pub fn parse(sql: &str) -> Result<Prepared> {
        if let Some(name) = reindex_target(sql) {
            return Ok(Prepared {
                kind: PreparedKind::Reindex(name.to_string()),
            });
        }
        Ok(Prepared {
            kind: PreparedKind::Statements(Arc::new(Parsed::new(sql)?)),
        })
    }

    /// How many statements the text holds (0 for an empty text).
    pub fn len(&self) -> usize {
        match &self.kind {
            PreparedKind::Statements(p) => p.statements.len(),
            PreparedKind::Reindex(_) | PreparedKind::Shaped(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Statement `i`, as parsed and rewritten (`None` for REINDEX).
    pub fn statement(&self, i: usize) -> Option<&Statement> {
        match &self.kind {
            PreparedKind::Statements(p) => p.statements.get(i),
            PreparedKind::Shaped(s) => s.template.statements.get(i),
            PreparedKind::Reindex(_) => None,
        }
    }

    /// How many parameters (`$1` … `$n`) statement `i` takes.
    pub fn param_count(&self, i: usize) -> usize {
        if let PreparedKind::Shaped(_) = self.kind {
            // The text has literals where its shape has placeholders.
            return 0;
        }
        self.statement(i)
            .map(crate::describe::param_count)
            .unwrap_or(0)
    }

    /// The command statement `i` is, named as PostgreSQL names it in a command tag:
    /// `SELECT`, `INSERT`, `CREATE TABLE`, `BEGIN` …
    pub fn command(&self, i: usize) -> &'static str {
        match self.statement(i) {
            None => "REINDEX",
            Some(stmt) => command_name(stmt),
        }
    }
}

/// `REINDEX name` (SQLite's, which sqlparser does not parse): the name.
fn reindex_target(sql: &str) -> Option<&str> {
    let trimmed = sql.trim_start();
    let head = trimmed.get(..8)?;
    head.eq_ignore_ascii_case("reindex ")
        .then(|| trimmed[8..].trim().trim_end_matches(';').trim())
}

/// The name of a statement's command, as PostgreSQL's command tags give it.
fn command_name(stmt: &Statement) -> &'static str {
    use ast::ObjectType as O;
    match stmt {
        Statement::Query(_) => "SELECT",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Explain { .. } => "EXPLAIN",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        Statement::Rollback { .. } => "ROLLBACK",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::Drop { object_type, .. } => match object_type {
            O::Table => "DROP TABLE",
            O::Index => "DROP INDEX",
            O::View => "DROP VIEW",
            O::Database => "DROP DATABASE",
            O::Schema => "DROP SCHEMA",
            _ => "DROP",
        },
        Statement::Analyze(_) => "ANALYZE",
        Statement::ShowDatabases { .. } | Statement::ShowTables { .. } => "SHOW",
        Statement::Use(_) | Statement::Set(_) => "SET",
        _ => "OK",
    }
}

/// An explicit transaction (BEGIN … COMMIT).
struct Explicit {
    read_only: bool,
    /// A statement failed and the session aborts transactions on errors: only COMMIT
    /// (which rolls back) and ROLLBACK are accepted.
    failed: bool,
}

/// One connection's worth of SQL state: current database, open transaction, planner.
pub struct Session {
    pub(crate) ctx: Arc<Context>,
    pub(crate) state: SessionState,
    current: String,
    explicit: Option<Explicit>,
    /// Table data to delete once the transaction that dropped the table commits.
    pub(crate) purges: Vec<(String, Vec<u8>)>,
    /// Indexes created by the transaction about to commit, to fill once it has.
    pub(crate) builds: Vec<crate::ddl::IndexBuild>,
    build_hook: Option<BuildHook>,
    statements: std::collections::HashMap<String, Arc<Parsed>>,
    /// Point queries' shapes ([`crate::shape`]): the shape's statement, or `None` for a
    /// shape that does not stand for its texts.
    shapes: std::collections::HashMap<String, Option<Arc<Parsed>>>,
    /// Set while a shaped statement runs: only the fast path may answer it, and
    /// `fast_path_declined` says it did not.
    /// The result schema of the last fast-path SELECT, made again only when its table or
    /// columns change (a pooled session usually runs one statement shape).
    pub(crate) point_schema: Option<crate::fastpath::PointSchema>,
    fast_path_only: bool,
    fast_path_declined: bool,
    last_commit: Option<u64>,
    /// Set while a statement runs. Still set when the next one starts, it means the last
    /// was abandoned part way (its future dropped: a cancelled query, a client gone).
    running: bool,
    /// PostgreSQL's rule: an error inside BEGIN … COMMIT aborts the transaction.
    abort_on_error: bool,
    /// The statement running, as the plan cache finds it (statement `i` of a parsed text),
    /// unless it reads `AS OF`.
    cache_slot: Option<(Arc<Parsed>, usize)>,
    /// Queries run from a cached plan, and plans made to be cached.
    pub(crate) plan_cache: PlanCacheCounts,
}

/// What the plan cache did in a session: runs from a cached plan (`hits`), plans made to
/// be kept (`planned`), and point queries run as their shape's statement without parsing
/// their text (`shaped`; see [`Session::prepare_once`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCacheCounts {
    pub hits: u64,
    pub planned: u64,
    pub shaped: u64,
}

/// Called after each committed chunk of an online index build, with the chunk's number.
type BuildHook = Arc<dyn Fn(u64) -> BoxFuture<()> + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Statements parsed and rewritten, ready to run.
struct Parsed {
    statements: Vec<Statement>,
    as_of: Option<AsOf>,
    /// The cached plans of the statements that are queries.
    plans: crate::plan_cache::Plans,
}

impl Parsed {
    fn new(sql: &str) -> Result<Parsed> {
        let (text, as_of) = split_as_of(sql)?;
        let mut statements = planner::parse(text)?;
        for stmt in &mut statements {
            planner::rewrite(stmt);
        }
        Ok(Parsed {
            statements,
            as_of,
            plans: Default::default(),
        })
    }
}

/// The statement cache keeps this many texts (then starts over), each at most this long:
/// enough for an application's prepared statements, not for bulk literal INSERTs.
const STATEMENT_CACHE_ENTRIES: usize = 256;
const STATEMENT_CACHE_MAX_TEXT: usize = 4096;

/// The transaction, once nothing else holds it. The parts of a parallel scan run as tasks
/// that the end of their statement aborts; the runtime drops them, and their hold on the
/// transaction, moments after the statement's result is complete.
async fn sole(mut tx: Arc<tokio::sync::Mutex<Tx>>) -> Result<tokio::sync::Mutex<Tx>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(tx) {
            Ok(tx) => return Ok(tx),
            Err(held) if std::time::Instant::now() < deadline => {
                tx = held;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(_) => {
                return Err(SqlError::Internal(
                    "transaction still in use at commit".into(),
                ))
            }
        }
    }
}

/// Attempts per transaction of an online index build before it gives up on conflicts.
const BUILD_RETRIES: usize = 64;

impl Session {
    /// A session on `engine` (an `Engine` or an `Arc<Engine>` shared by many sessions),
    /// using database `default` (created on first use).
    pub fn new(engine: impl Into<Arc<Engine>>) -> Session {
        let ctx = Context::new(engine.into());
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false)
            .with_default_catalog_and_schema(catalog_name("default"), SCHEMA)
            .with_create_default_catalog_and_schema(false);
        {
            let opts = config.options_mut();
            opts.sql_parser.default_null_ordering = "nulls_min".to_string();
            opts.sql_parser.map_string_types_to_utf8view = false;
            // One optimizer pass: OLTP statements are small, and generated predicates can be
            // large enough that repeated passes cost more than they save.
            opts.optimizer.max_passes = 1;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_catalog_list(Arc::new(Catalogs(ctx.clone())))
            .with_optimizer_rule(Arc::new(crate::subquery::ApplySubqueries::new(&ctx)))
            .build();
        for f in crate::pg_catalog::functions(&ctx) {
            // Replaces a built-in of the same name (`version`): PostgreSQL's answer.
            let _ = state.register_udf(Arc::new(f));
        }
        ctx.set_template(state.clone());
        Session {
            ctx,
            state,
            current: "default".to_string(),
            explicit: None,
            purges: Vec::new(),
            builds: Vec::new(),
            build_hook: None,
            statements: Default::default(),
            shapes: Default::default(),
            fast_path_only: false,
            fast_path_declined: false,
            point_schema: None,
            last_commit: None,
            running: false,
            abort_on_error: false,
            cache_slot: None,
            plan_cache: PlanCacheCounts::default(),
        }
    }

    /// Read full scans of tables with at least `rows` rows in up to `parts` parts at once.
    /// The default is 100,000 rows and one part per core; `parts` below 2 turns it off.
    /// Each part returns its rows in key order, the parts together do not: only an ORDER
    /// BY orders a result.
    pub fn set_parallel_scan(&mut self, rows: u64, parts: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ctx.parallel_scan_rows.store(rows, Relaxed);
        self.ctx.scan_parts.store(parts.min(64), Relaxed);
    }

    /// What the plan cache has done in this session.
    pub fn plan_cache_counts(&self) -> PlanCacheCounts {
        self.plan_cache
    }

    /// The database unqualified names resolve against.
    pub fn current_database(&self) -> &str {
        &self.current
    }

    /// The commit version of the last transaction this session committed with writes: the
    /// version `SELECT … AS OF` takes to read the database as that commit left it.
    pub fn last_commit_version(&self) -> Option<u64> {
        self.last_commit
    }

    /// Whether reads outside a transaction take this node's own copy as it is (`eventual`:
    /// on a replica, no round to the leader, possibly behind it) rather than the cluster's
    /// newest commit (`strong`, the default). `SET read_consistency` sets the same switch.
    pub fn set_eventual_reads(&self, on: bool) {
        self.ctx
            .eventual
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Follow PostgreSQL's rule for errors inside BEGIN … COMMIT: the transaction is
    /// aborted, later statements fail with SQLSTATE 25P02 until ROLLBACK, and COMMIT rolls
    /// back. By default a failed statement is undone and the transaction goes on.
    pub fn set_abort_on_error(&mut self, on: bool) {
        self.abort_on_error = on;
    }

    /// Whether the open transaction was aborted by an error (see
    /// [`Session::set_abort_on_error`]): COMMIT will roll it back.
    pub fn transaction_failed(&self) -> bool {
        self.explicit.as_ref().is_some_and(|e| e.failed)
    }

    /// Whether a BEGIN is open.
    pub fn in_transaction(&self) -> bool {
        self.explicit.is_some()
    }

    /// Run one or more statements; returns the last one's output.
    pub async fn execute(&mut self, sql: &str) -> Result<Output> {
        self.execute_with(sql, &[]).await
    }

    /// Run statements with parameters for `$1`/`?` placeholders.
    pub async fn execute_with(&mut self, sql: &str, params: &[Datum]) -> Result<Output> {
        let prepared = if params.is_empty() {
            self.prepare_once(sql)?
        } else {
            self.prepare(sql)?
        };
        let mut last = Output::Done;
        for i in 0..prepared.len() {
            last = self.execute_prepared(&prepared, i, params).await?;
        }
        Ok(last)
    }

    /// Parse `sql` (one or more statements) without running it.
    /// Statements parsed before (the same text) come from the session's cache.
    pub fn prepare(&mut self, sql: &str) -> Result<Prepared> {
        if reindex_target(sql).is_some() {
            return Prepared::parse(sql);
        }
        Ok(Prepared {
            kind: PreparedKind::Statements(self.parsed(sql)?),
        })
    }

    /// [`Session::prepare`] for a text to run now, without parameters: a point query that
    /// did not run before may be matched by its shape ([`crate::shape`]) and run as the
    /// shape's statement, without parsing the text. Anything else is parsed as
    /// [`Session::prepare`] parses it.
    pub fn prepare_once(&mut self, sql: &str) -> Result<Prepared> {
        if !self.statements.contains_key(sql) {
            if let Some(shaped) = self.shaped(sql) {
                return Ok(Prepared {
                    kind: PreparedKind::Shaped(Arc::new(shaped)),
                });
            }
        }
        self.prepare(sql)
    }

    /// `sql` as its shape's statement, if its shape stands for it (learned on first sight).
    fn shaped(&mut self, sql: &str) -> Option<ShapedText> {
        if sql.len() > STATEMENT_CACHE_MAX_TEXT {
            return None;
        }
        let shape = crate::shape::of(sql)?;
        let template = match self.shapes.get(&shape.key) {
            Some(known) => known.clone()?,
            None => {
                let learned = crate::shape::learn(sql, &shape).map(|stmt| {
                    Arc::new(Parsed {
                        statements: vec![stmt],
                        as_of: None,
                        plans: Default::default(),
                    })
                });
                if self.shapes.len() >= STATEMENT_CACHE_ENTRIES {
                    self.shapes.clear();
                }
                self.shapes.insert(shape.key.clone(), learned.clone());
                learned?
            }
        };
        Some(ShapedText {
            template,
            params: shape.params()?,
            sql: sql.to_string(),
            key: shape.key,
        })
    }

    /// Run statement `i` of `prepared` with `params`.
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        i: usize,
        params: &[Datum],
    ) -> Result<Output> {
        self.recover().await;
        if self.explicit.is_none() {
            // now() and CURRENT_TIMESTAMP are the transaction's start (BEGIN's, inside one).
            let config = self.state.config_options().clone();
            self.state
                .execution_props_mut()
                .mark_start_execution(config);
        }
        self.running = true;
        let out = match &prepared.kind {
            PreparedKind::Reindex(name) => self.reindex(name).await,
            PreparedKind::Statements(parsed) => self.run_parsed(parsed, i, params).await,
            PreparedKind::Shaped(shaped) => match self.run_shaped(shaped, params).await {
                Some(out) => out,
                None => match self.parsed(&shaped.sql) {
                    Ok(parsed) => self.run_parsed(&parsed, 0, params).await,
                    Err(e) => Err(e),
                },
            },
        };
        self.running = false;
        out
    }

    async fn run_parsed(
        &mut self,
        parsed: &Arc<Parsed>,
        i: usize,
        params: &[Datum],
    ) -> Result<Output> {
        let Some(stmt) = parsed.statements.get(i) else {
            return Err(SqlError::Internal(format!("no statement {i}")));
        };
        // A shaped run abandoned part way (its future dropped) left the flag set.
        self.fast_path_only = false;
        if parsed.as_of.is_none() {
            self.cache_slot = Some((parsed.clone(), i));
        }
        let out = self.run(stmt, params, parsed.as_of).await;
        self.cache_slot = None;
        out
    }

    /// A shaped text run as its shape's statement through the fast path; `None` when the
    /// fast path does not take it (nothing ran), and its shape is forgotten: such texts are
    /// parsed from then on.
    async fn run_shaped(
        &mut self,
        shaped: &ShapedText,
        params: &[Datum],
    ) -> Option<Result<Output>> {
        // Parameters for a text without placeholders: let the text's own statement answer.
        let stmt = shaped.template.statements.first()?;
        if !params.is_empty() {
            return None;
        }
        self.fast_path_only = true;
        self.fast_path_declined = false;
        let out = self.run(stmt, &shaped.params, None).await;
        self.fast_path_only = false;
        if self.fast_path_declined {
            self.shapes.insert(shaped.key.clone(), None);
            return None;
        }
        self.plan_cache.shaped += 1;
        Some(out)
    }

    /// The types of statement `i`'s parameters and its result columns, found without
    /// running it. In a transaction it reads the transaction's snapshot (the schema it
    /// sees); outside, a snapshot of its own.
    pub async fn describe(
        &mut self,
        prepared: &Prepared,
        i: usize,
    ) -> Result<crate::describe::Description> {
        let (stmt, as_of) = match &prepared.kind {
            PreparedKind::Reindex(_) => {
                return Ok(crate::describe::Description {
                    params: Vec::new(),
                    columns: None,
                })
            }
            PreparedKind::Statements(parsed) => match parsed.statements.get(i) {
                Some(stmt) => (stmt, parsed.as_of),
                None => return Err(SqlError::Internal(format!("no statement {i}"))),
            },
            PreparedKind::Shaped(shaped) => {
                let parsed = self.parsed(&shaped.sql)?;
                let prepared = Prepared {
                    kind: PreparedKind::Statements(parsed),
                };
                return Box::pin(self.describe(&prepared, 0)).await;
            }
        };
        if !matches!(
            stmt,
            Statement::Query(_)
                | Statement::Explain { .. }
                | Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
        ) {
            return crate::describe::describe(self, stmt).await;
        }
        self.recover().await;
        if self.current == "default" {
            self.ensure_default().await?;
        }
        self.running = true;
        let out = if self.explicit.is_some() {
            crate::describe::describe(self, stmt).await
        } else {
            self.reset_scope(as_of, false);
            let out = crate::describe::describe(self, stmt).await;
            self.reset_scope(None, false);
            out
        };
        self.running = false;
        out
    }

    /// Undo what an abandoned statement left: inside a transaction, its writes (the
    /// transaction goes on as before it); outside, its scope.
    async fn recover(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        if self.explicit.is_some() {
            self.rollback_statement().await;
            if self.abort_on_error {
                if let Some(e) = self.explicit.as_mut() {
                    e.failed = true;
                }
            }
        } else {
            self.reset_scope(None, false);
            self.purges.clear();
            self.builds.clear();
        }
    }

    /// `sql` parsed and rewritten to our dialect, from the session's statement cache when
    /// the same text ran before (prepared statements and repeated queries skip the parser).
    /// Parsing does not depend on the schema, so entries never go stale.
    fn parsed(&mut self, sql: &str) -> Result<Arc<Parsed>> {
        if let Some(p) = self.statements.get(sql) {
            return Ok(p.clone());
        }
        let parsed = Arc::new(Parsed::new(sql)?);
        if sql.len() <= STATEMENT_CACHE_MAX_TEXT {
            if self.statements.len() >= STATEMENT_CACHE_ENTRIES {
                self.statements.clear();
            }
            self.statements.insert(sql.to_string(), parsed.clone());
        }
        Ok(parsed)
    }

    async fn run(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        as_of: Option<AsOf>,
    ) -> Result<Output> {
        if as_of.is_some() && !matches!(stmt, Statement::Query(_) | Statement::Explain { .. }) {
            return Err(SqlError::Syntax("AS OF applies to queries only".into()));
        }
        match stmt {
            Statement::StartTransaction { modes, .. } => return self.begin(modes),
            Statement::Commit { .. } if self.transaction_failed() => return self.rollback(),
            Statement::Commit { .. } => return self.commit().await,
            Statement::Rollback {
                savepoint: None, ..
            } => return self.rollback(),
            _ => {}
        }
        if self.current == "default" {
            self.ensure_default().await?;
        }
        if self.transaction_failed() {
            return Err(SqlError::InFailedTransaction);
        }
        if self.explicit.is_some() {
            if as_of.is_some() {
                return Err(SqlError::InvalidTransactionState(
                    "AS OF reads run outside a transaction".into(),
                ));
            }
            self.savepoint_all().await;
            let out = self.dispatch(stmt, params).await;
            let out = match out {
                Ok(o) => self.check_single_writer().await.map(|_| o),
                Err(e) => Err(e),
            };
            if out.is_err() {
                self.rollback_statement().await;
                if self.abort_on_error {
                    if let Some(e) = self.explicit.as_mut() {
                        e.failed = true;
                    }
                }
            }
            return out;
        }
        let mut attempt = 0;
        // An INSERT, UPDATE or DELETE runs first with its transaction checking at commit
        // what it would otherwise read first (the schema version; for an INSERT, that a new
        // row's key is free), and if that fails for any reason, again with reads: a unique
        // violation or a changed schema is then reported as such.
        let mut deferring = as_of.is_none()
            && matches!(
                stmt,
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
            );
        loop {
            self.reset_scope(as_of, false);
            if deferring {
                self.ctx.scope().deferring = true;
            }
            let ran = self.dispatch(stmt, params).await;
            let deferred = deferring && self.deferred_reads().await;
            let failed_before_commit = ran.is_err();
            let out = match ran {
                Ok(o) => match self.check_single_writer().await {
                    Ok(()) => self.commit_scope().await.map(|_| o),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            self.reset_scope(None, false);
            match out {
                // Nothing was written (a failure whose outcome is unknown is neither).
                Err(e) if deferred && (failed_before_commit || e.is_retryable()) => {
                    deferring = false;
                    self.purges.clear();
                    self.builds.clear();
                    if !failed_before_commit {
                        // As for any retry: a commit that conflicted with one still
                        // landing is given a turn to land first.
                        tokio::task::yield_now().await;
                    }
                }
                Err(e) if e.is_retryable() && attempt < AUTOCOMMIT_RETRIES => {
                    attempt += 1;
                    self.purges.clear();
                    self.builds.clear();
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    self.purges.clear();
                    self.builds.clear();
                    return Err(e);
                }
                Ok(o) => {
                    self.run_purges().await;
                    self.run_builds().await?;
                    return Ok(o);
                }
            }
        }
    }

    /// SQLite's REINDEX: rebuild an index, or every index of a table, from the rows.
    async fn reindex(&mut self, name: &str) -> Result<Output> {
        let name = match planner::parse_one(&format!("SELECT * FROM {name}")) {
            Ok(Statement::Query(q)) => match q.body.as_ref() {
                ast::SetExpr::Select(s) => match s.from.first().map(|f| &f.relation) {
                    Some(ast::TableFactor::Table { name, .. }) => match name.0.last() {
                        Some(p) => ident_text(p),
                        None => return Err(SqlError::Syntax("REINDEX <name>".into())),
                    },
                    _ => return Err(SqlError::Syntax("REINDEX <name>".into())),
                },
                _ => return Err(SqlError::Syntax("REINDEX <name>".into())),
            },
            _ => return Err(SqlError::Syntax("REINDEX <name>".into())),
        };
        if self.current == "default" {
            self.ensure_default().await?;
        }
        let db = self.current.clone();
        let explicit = self.explicit.is_some();
        if explicit {
            self.savepoint_all().await;
        } else {
            self.reset_scope(None, false);
        }
        let result = async {
            let tx = self.ctx.tx(&db).await?;
            let mut guard = tx.lock().await;
            crate::ddl::reindex(&mut guard, &name).await
        }
        .await;
        let result = match (result, explicit) {
            (Ok(()), false) => self.commit_scope().await,
            (Err(e), true) => {
                self.rollback_statement().await;
                Err(e)
            }
            (r, _) => r,
        };
        if !explicit {
            self.reset_scope(None, false);
        }
        result.map(|_| Output::Done)
    }

    async fn ensure_default(&mut self) -> Result<()> {
        self.ctx.engine.open_or_create("default").await?;
        self.ctx.remember("default");
        Ok(())
    }

    fn reset_scope(&self, as_of: Option<AsOf>, read_only: bool) {
        self.ctx.pg_forget();
        let mut scope = self.ctx.scope.lock().unwrap_or_else(|p| p.into_inner());
        *scope = Scope {
            as_of,
            read_only,
            ..Scope::default()
        };
    }

    /// Whether a transaction of the statement deferred a read to a commit-time check.
    async fn deferred_reads(&self) -> bool {
        for (_, tx) in self.open_txns() {
            if tx.lock().await.deferred() {
                return true;
            }
        }
        false
    }

    fn open_txns(&self) -> Vec<(String, Arc<tokio::sync::Mutex<Tx>>)> {
        let scope = self.ctx.scope.lock().unwrap_or_else(|p| p.into_inner());
        scope
            .txns
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    async fn savepoint_all(&self) {
        for (_, tx) in self.open_txns() {
            tx.lock().await.savepoint();
        }
    }

    async fn rollback_statement(&self) {
        for (_, tx) in self.open_txns() {
            tx.lock().await.rollback_statement();
        }
    }

    /// Refuse a transaction that wrote to more than one database.
    async fn check_single_writer(&self) -> Result<()> {
        let mut writers = Vec::new();
        for (db, tx) in self.open_txns() {
            if tx.lock().await.has_writes() {
                writers.push(db);
            }
        }
        if writers.len() > 1 {
            writers.sort();
            return Err(SqlError::InvalidTransactionState(format!(
                "a transaction may write to one database only; this one writes to {}",
                writers.join(" and ")
            )));
        }
        Ok(())
    }

    /// Commit every transaction of the scope (at most one has writes).
    async fn commit_scope(&mut self) -> Result<()> {
        let txns = {
            let mut scope = self.ctx.scope.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut scope.txns)
        };
        for (_, tx) in txns {
            let tx = sole(tx).await?.into_inner();
            if let Some(v) = tx.commit().await? {
                self.last_commit = Some(v);
            }
        }
        Ok(())
    }

    fn begin(&mut self, modes: &[TransactionMode]) -> Result<Output> {
        if self.explicit.is_some() {
            return Err(SqlError::InvalidTransactionState(
                "there is already a transaction in progress".into(),
            ));
        }
        let read_only = modes.iter().any(|m| {
            matches!(
                m,
                TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
            )
        });
        self.reset_scope(None, read_only);
        self.ctx.scope().explicit = true;
        self.explicit = Some(Explicit {
            read_only,
            failed: false,
        });
        Ok(Output::Done)
    }

    async fn commit(&mut self) -> Result<Output> {
        if self.explicit.take().is_none() {
            return Err(SqlError::InvalidTransactionState(
                "there is no transaction in progress".into(),
            ));
        }
        let out = self.commit_scope().await;
        self.reset_scope(None, false);
        match out {
            Ok(()) => {
                self.run_purges().await;
                Ok(Output::Done)
            }
            Err(e) => {
                self.purges.clear();
                Err(e)
            }
        }
    }

    fn rollback(&mut self) -> Result<Output> {
        if self.explicit.is_none() && self.abort_on_error {
            // PostgreSQL only warns: a client may roll back after a COMMIT that failed.
            return Ok(Output::Done);
        }
        if self.explicit.take().is_none() {
            return Err(SqlError::InvalidTransactionState(
                "there is no transaction in progress".into(),
            ));
        }
        self.reset_scope(None, false);
        self.purges.clear();
        Ok(Output::Done)
    }

    /// Delete the data of dropped tables, in chunks of their own transactions.
    /// Testing hook: `hook(n)` runs after the n-th chunk of every online index build of
    /// this session has committed (from 1), and the build waits for it. Tests use it to
    /// interleave writers with a build deterministically.
    #[doc(hidden)]
    pub fn on_index_build_chunk(
        &mut self,
        hook: impl Fn(u64) -> BoxFuture<()> + Send + Sync + 'static,
    ) {
        self.build_hook = Some(Arc::new(hook));
    }

    /// Fill the indexes the committed statement created (online CREATE INDEX). A build that
    /// fails (a duplicate in a UNIQUE index, say) takes its index out again, so that no
    /// half-built index stays behind, and the statement reports the failure.
    async fn run_builds(&mut self) -> Result<()> {
        for build in std::mem::take(&mut self.builds) {
            if let Err(e) = self.build_index(&build).await {
                let undone = self
                    .in_build_txn(&build.db, |tx| {
                        let (table, index) = (build.table.clone(), build.index.clone());
                        Box::pin(
                            async move { crate::index::abandon_build(tx, &table, &index).await },
                        )
                    })
                    .await;
                match undone {
                    Ok(Some(prefix)) => {
                        self.purges.push((build.db.clone(), prefix));
                        self.run_purges().await;
                    }
                    Ok(None) => {}
                    Err(undo) => tracing_warn(&format!(
                        "index {} could not be removed after its build failed ({undo}); \
                         run CREATE INDEX again to finish it or DROP INDEX to remove it",
                        build.index
                    )),
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn build_index(&mut self, build: &crate::ddl::IndexBuild) -> Result<()> {
        use crate::index::BuildStep;
        let mut from: Option<Vec<u8>> = None;
        let mut chunks = 0u64;
        loop {
            let start = from.clone();
            let step = self
                .in_build_txn(&build.db, |tx| {
                    let (table, index, start) =
                        (build.table.clone(), build.index.clone(), start.clone());
                    Box::pin(async move {
                        crate::index::backfill_chunk(tx, &table, &index, start.as_deref()).await
                    })
                })
                .await?;
            chunks += 1;
            if let Some(hook) = &self.build_hook {
                hook(chunks).await;
            }
            match step {
                BuildStep::More(next) => from = Some(next),
                BuildStep::Gone => return Ok(()),
                BuildStep::Done => break,
            }
        }
        self.in_build_txn(&build.db, |tx| {
            let (table, index) = (build.table.clone(), build.index.clone());
            Box::pin(async move { crate::index::finish_build(tx, &table, &index).await })
        })
        .await?;
        Ok(())
    }

    /// Run `f` in a transaction of its own on `db` and commit it, again on conflicts.
    async fn in_build_txn<T>(
        &mut self,
        db: &str,
        f: impl for<'a> Fn(
            &'a mut Tx,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>,
        >,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            self.reset_scope(None, false);
            let out = async {
                let tx = self.ctx.tx(db).await?;
                let mut guard = tx.lock().await;
                f(&mut guard).await
            }
            .await;
            let out = match out {
                Ok(v) => self.commit_scope().await.map(|_| v),
                Err(e) => Err(e),
            };
            self.reset_scope(None, false);
            match out {
                Err(e) if e.is_retryable() && attempt < BUILD_RETRIES => {
                    attempt += 1;
                    tokio::task::yield_now().await;
                }
                other => return other,
            }
        }
    }

    async fn run_purges(&mut self) {
        for (db, prefix) in std::mem::take(&mut self.purges) {
            if let Err(e) = crate::ddl::purge_table(&self.ctx, &db, &prefix).await {
                tracing_warn(&format!(
                    "could not delete the data of a dropped table: {e}"
                ));
            }
        }
    }

    /// Run one statement in the current scope. Only the fast path runs inline: every
    /// other kind is boxed, so the future of a point statement stays small (it is moved
    /// on every call).
    async fn dispatch(&mut self, stmt: &Statement, params: &[Datum]) -> Result<Output> {
        if self.explicit.as_ref().is_some_and(|e| e.read_only) && is_write(stmt) {
            return Err(SqlError::InvalidTransactionState(
                "cannot execute a write in a read-only transaction".into(),
            ));
        }
        if let Statement::Explain {
            statement, analyze, ..
        } = stmt
        {
            let as_of = self
                .ctx
                .scope
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_of
                .is_some();
            if !as_of {
                if let Some(out) =
                    Box::pin(crate::explain::explain(self, statement, *analyze, params)).await?
                {
                    return Ok(out);
                }
            }
        }
        match stmt {
            Statement::Query(_) => {
                if let Some(out) = crate::fastpath::select(self, stmt, params).await? {
                    return Ok(out);
                }
                if self.fast_path_only {
                    // Nothing ran: the caller runs the statement from its own text.
                    self.fast_path_declined = true;
                    return Ok(Output::Done);
                }
                match self.cache_slot.clone() {
                    Some((parsed, i)) => {
                        Box::pin(self.query_cached(&parsed.plans, i, stmt, params)).await
                    }
                    None => Box::pin(self.query(stmt.clone(), params)).await,
                }
            }
            Statement::Explain { .. } => Box::pin(self.query(stmt.clone(), params)).await,
            Statement::Insert(insert) => Box::pin(crate::dml::insert(self, insert, params)).await,
            Statement::Update(update) => {
                Box::pin(crate::dml::update(self, update.clone(), params)).await
            }
            Statement::Delete(delete) => {
                Box::pin(crate::dml::delete(self, delete.clone(), params)).await
            }
            Statement::CreateTable(ct) => {
                Box::pin(crate::ddl::create_table(self, ct.clone())).await
            }
            Statement::CreateIndex(ci) => {
                Box::pin(crate::ddl::create_index(self, ci.clone())).await
            }
            Statement::CreateView(cv) => Box::pin(crate::ddl::create_view(self, cv.clone())).await,
            Statement::AlterTable(at) => Box::pin(crate::ddl::alter_table(self, at.clone())).await,
            Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => {
                Box::pin(crate::ddl::drop(
                    self,
                    *object_type,
                    *if_exists,
                    names.clone(),
                ))
                .await
            }
            Statement::Analyze(a) => Box::pin(crate::ddl::analyze(self, a.clone())).await,
            Statement::CreateDatabase {
                db_name,
                if_not_exists,
                ..
            } => Box::pin(self.create_database(db_name, *if_not_exists)).await,
            Statement::ShowDatabases { .. } => Box::pin(self.show_databases()).await,
            Statement::ShowTables { .. } => Box::pin(self.show_tables()).await,
            Statement::Use(u) => {
                let name = match u {
                    ast::Use::Object(n) | ast::Use::Database(n) | ast::Use::Schema(n) => n,
                    other => return Err(SqlError::Unsupported(format!("{other}"))),
                };
                Box::pin(self.use_database(&object_name_text(name))).await
            }
            Statement::Set(ast::Set::SingleAssignment {
                variable, values, ..
            }) if is_read_consistency(&object_name_text(variable)) => {
                let value = match values.first() {
                    Some(Expr::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                            s.clone()
                        }
                        other => other.to_string(),
                    },
                    Some(Expr::Identifier(i)) => i.value.clone(),
                    _ => String::new(),
                };
                let eventual = match value.to_ascii_lowercase().as_str() {
                    "eventual" => true,
                    "strong" | "default" => false,
                    _ => {
                        return Err(SqlError::Syntax(
                            "SET read_consistency = strong | eventual".into(),
                        ))
                    }
                };
                self.set_eventual_reads(eventual);
                Ok(Output::Done)
            }
            Statement::Set(ast::Set::SingleAssignment {
                variable, values, ..
            }) if object_name_text(variable).eq_ignore_ascii_case("database") => {
                match values.first() {
                    Some(Expr::Value(v)) => {
                        let name = match &v.value {
                            ast::Value::SingleQuotedString(s)
                            | ast::Value::DoubleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        };
                        Box::pin(self.use_database(&name)).await
                    }
                    Some(Expr::Identifier(i)) => Box::pin(self.use_database(&i.value)).await,
                    _ => Err(SqlError::Syntax("SET database = <name>".into())),
                }
            }
            other => Err(SqlError::Unsupported(format!(
                "statement: {}",
                first_words(&other.to_string())
            ))),
        }
    }

    /// Plan and run a query through DataFusion.
    pub(crate) async fn query(&mut self, stmt: Statement, params: &[Datum]) -> Result<Output> {
        let (schema, batches) = self.query_batches(stmt, params).await?;
        Ok(Output::Rows(QueryRows { schema, batches }))
    }

    pub(crate) async fn query_batches(
        &mut self,
        stmt: Statement,
        params: &[Datum],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut stmt = stmt;
        planner::inline_uncorrelated(&self.state, &mut stmt).await?;
        let mut plan = planner::plan_statement(&self.state, stmt).await?;
        if !params.is_empty() {
            let values: Vec<_> = params.iter().map(|d| d.to_scalar()).collect();
            plan = plan.with_param_values(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            ))?;
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let physical = self.state.create_physical_plan(&plan).await?;
        Ok((schema, self.collect_plan(physical).await?))
    }

    /// Run a physical plan to the end, on the statement's own task.
    ///
    /// Handing the plan to a task of its own costs a thread wake-up each way, more than a
    /// short query takes (a 100-row range select, embedded: 136 µs that way, 36 µs here).
    /// Dropping the statement's future (a cancelled query, a client gone) still stops the
    /// plan at its next yield point, which DataFusion's scans reach cooperatively, and the
    /// parts of a parallel plan run on tasks DataFusion aborts with it. A panic inside the
    /// plan is the statement's error, not its caller's.
    pub(crate) async fn collect_plan(
        &self,
        physical: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>> {
        use futures::FutureExt;
        let run = std::panic::AssertUnwindSafe(collect(physical, self.state.task_ctx()));
        match run.catch_unwind().await {
            Ok(result) => Ok(result?),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(SqlError::Internal(format!("the query failed: {what}")))
            }
        }
    }

    async fn create_database(&mut self, name: &ObjectName, if_not_exists: bool) -> Result<Output> {
        let name = object_name_text(name);
        if self.explicit.is_some() {
            return Err(SqlError::InvalidTransactionState(
                "CREATE DATABASE cannot run inside a transaction block".into(),
            ));
        }
        match self.ctx.engine.create_database(&name, None).await {
            Ok(_) => {}
            Err(strata_engine::EngineError::DatabaseExists(_)) if if_not_exists => {}
            Err(strata_engine::EngineError::DatabaseExists(n)) => {
                return Err(SqlError::DuplicateObject {
                    kind: "database",
                    name: n,
                })
            }
            Err(e) => return Err(e.into()),
        }
        self.ctx.remember(&name);
        Ok(Output::Done)
    }

    pub(crate) async fn drop_database(&mut self, name: &str, if_exists: bool) -> Result<Output> {
        if self.explicit.is_some() {
            return Err(SqlError::InvalidTransactionState(
                "DROP DATABASE cannot run inside a transaction block".into(),
            ));
        }
        if name == self.current {
            return Err(SqlError::InvalidTransactionState(format!(
                "cannot drop the current database {name:?}; USE another first"
            )));
        }
        self.reset_scope(None, false);
        match self.ctx.engine.drop_database(name).await {
            Ok(()) => {}
            Err(strata_engine::EngineError::DatabaseNotFound(_)) if if_exists => {}
            Err(e) => return Err(e.into()),
        }
        self.ctx.forget(name);
        Ok(Output::Done)
    }

    async fn show_databases(&mut self) -> Result<Output> {
        let names = self.ctx.engine.list_databases().await?;
        for n in &names {
            self.ctx.remember(n);
        }
        single_column("database", names.into_iter().map(Datum::Text).collect())
    }

    async fn show_tables(&mut self) -> Result<Output> {
        let db = self.current.clone();
        let tx = self.ctx.tx(&db).await?;
        let names = tx.lock().await.table_names().await?;
        single_column("table", names.into_iter().map(Datum::Text).collect())
    }

    /// Make `name` the current database (as `USE name`). `default` is created on first
    /// use; any other database must exist.
    pub async fn set_database(&mut self, name: &str) -> Result<()> {
        if name == "default" {
            self.ensure_default().await?;
        }
        self.use_database(name).await.map(|_| ())
    }

    async fn use_database(&mut self, name: &str) -> Result<Output> {
        let db = if self.ctx.engine.exists(name).await? {
            name.to_string()
        } else {
            self.ctx.resolve(name).await?
        };
        self.ctx.remember(&db);
        self.current = db.clone();
        self.state
            .config_mut()
            .options_mut()
            .catalog
            .default_catalog = catalog_name(&db);
        Ok(Output::Done)
    }

    /// The tables of the current database, by name, read now.
    pub async fn tables(&mut self) -> Result<Vec<String>> {
        if self.current == "default" {
            self.ensure_default().await?;
        }
        let database = self.ctx.open(&self.current).await?;
        let mut tx = Tx::begin(database, true).await?;
        tx.table_names().await
    }

    /// The definition of `table` in the current database, read now; `None` if it has none.
    pub async fn table_def(&mut self, table: &str) -> Result<Option<crate::catalog::TableDef>> {
        if self.current == "default" {
            self.ensure_default().await?;
        }
        let database = self.ctx.open(&self.current).await?;
        let mut tx = Tx::begin(database, true).await?;
        Ok(tx.table(table).await?.map(|def| (*def).clone()))
    }

    /// The row count the planner sees for `table` in the current database, read now;
    /// `None` when the table has none (created before row counts, never analyzed).
    pub async fn row_count(&mut self, table: &str) -> Result<Option<u64>> {
        if self.current == "default" {
            self.ensure_default().await?;
        }
        let database = self.ctx.open(&self.current).await?;
        let mut tx = Tx::begin(database.clone(), true).await?;
        let Some(def) = tx.table(table).await? else {
            return Err(SqlError::UndefinedObject {
                kind: "table",
                name: table.to_string(),
            });
        };
        crate::stats::row_count(&database, def.id).await
    }

    /// Verify every table of the current database: each index entry matches its row and
    /// each row has its entries. Reads one consistent snapshot.
    pub async fn check(&mut self) -> Result<Vec<crate::index::CheckReport>> {
        if self.explicit.is_some() {
            return Err(SqlError::InvalidTransactionState(
                "run check outside a transaction".into(),
            ));
        }
        if self.current == "default" {
            self.ensure_default().await?;
        }
        let db = self.ctx.open(&self.current).await?;
        let mut tx = Tx::begin(db, true).await?;
        let mut reports = Vec::new();
        for name in tx.table_names().await? {
            if let Some(def) = tx.table(&name).await? {
                reports.push(crate::index::check_table(&mut tx, def).await?);
            }
        }
        Ok(reports)
    }

    /// The engine database and table a (possibly qualified) table name names.
    pub(crate) async fn table_name(&self, name: &ObjectName) -> Result<(String, String)> {
        let parts: Vec<String> = name.0.iter().map(ident_text).collect();
        if crate::pg_catalog::names_catalog(name) {
            return Err(SqlError::Unsupported(format!(
                "{name} is a system catalog: it can be read, not changed"
            )));
        }
        match parts.as_slice() {
            [t] => Ok((self.current.clone(), t.clone())),
            [s, t] if s == SCHEMA => Ok((self.current.clone(), t.clone())),
            [db, t] => Ok((self.ctx.resolve(db).await?, t.clone())),
            [db, s, t] if s == SCHEMA => Ok((self.ctx.resolve(db).await?, t.clone())),
            _ => Err(SqlError::UndefinedObject {
                kind: "table",
                name: name.to_string(),
            }),
        }
    }
}

/// The normalized text of one name part: unquoted names are case-insensitive (lowercase).
pub(crate) fn ident_text(p: &ast::ObjectNamePart) -> String {
    match p {
        ast::ObjectNamePart::Identifier(i) => normalize(i),
        other => other.to_string(),
    }
}

pub(crate) fn normalize(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// A database name as written: parts joined by `/` would be ambiguous, so a database name
/// is one identifier or a quoted string (`"project/mydb"`).
/// `read_consistency` (also `strata.read_consistency`, the PostgreSQL custom-setting form).
fn is_read_consistency(name: &str) -> bool {
    name.eq_ignore_ascii_case("read_consistency")
        || name.eq_ignore_ascii_case("strata.read_consistency")
}

pub(crate) fn object_name_text(n: &ObjectName) -> String {
    n.0.iter()
        .map(|p| match p {
            ast::ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn single_column(name: &str, values: Vec<Datum>) -> Result<Output> {
    let n = values.len();
    rows_output(vec![name.to_string()], vec![values], n)
}

/// Rows built here (RETURNING, SHOW): each column's type is that of its values.
pub(crate) fn rows_output(
    names: Vec<String>,
    columns: Vec<Vec<Datum>>,
    rows: usize,
) -> Result<Output> {
    use datafusion::arrow::array::{new_null_array, RecordBatchOptions};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::ScalarValue;
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (name, values) in names.into_iter().zip(columns) {
        let scalars: Vec<ScalarValue> = values.iter().map(Datum::to_scalar).collect();
        let ty = scalars
            .iter()
            .map(|s| s.data_type())
            .find(|t| *t != DataType::Null)
            .unwrap_or(DataType::Utf8);
        let array = if scalars.is_empty() {
            new_null_array(&ty, 0)
        } else {
            let typed = scalars
                .into_iter()
                .map(|s| {
                    if s.is_null() {
                        ScalarValue::try_from(&ty)
                    } else {
                        Ok(s)
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            ScalarValue::iter_to_array(typed)?
        };
        fields.push(Field::new(name, ty, true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(Output::Rows(QueryRows {
        schema,
        batches: vec![batch],
    }))
}

fn is_write(stmt: &Statement) -> bool {
    !matches!(
        stmt,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowTables { .. }
            | Statement::Use(_)
            | Statement::Set(_)
    )
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn tracing_warn(msg: &str) {
    eprintln!("warning: {msg}");
}

/// Split a trailing `AS OF <version | 'timestamp'>` off a query.
///
/// A version is the commit version (an integer) or a 20-hex-digit versionstamp; a
/// timestamp is `'YYYY-MM-DD HH:MM:SS[.ffffff]'` (UTC) and reads the newest version
/// committed at or before it.
pub(crate) fn split_as_of(sql: &str) -> Result<(&str, Option<AsOf>)> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let trimmed = sql.trim_end().trim_end_matches(';').trim_end();
    // Cheap test first: only statements that end in a literal after `OF` can have it.
    let upper = trimmed.to_ascii_uppercase();
    if !upper.contains(" OF ") && !upper.contains("\nOF ") {
        return Ok((sql, None));
    }
    let tokens = match Tokenizer::new(&GenericDialect {}, trimmed).tokenize_with_location() {
        Ok(t) => t,
        Err(_) => return Ok((sql, None)),
    };
    let words: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    if words.len() < 4 {
        return Ok((sql, None));
    }
    let n = words.len();
    let is_kw = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k);
    if !(is_kw(&words[n - 3].token, Keyword::AS) && is_kw(&words[n - 2].token, Keyword::OF)) {
        return Ok((sql, None));
    }
    let at = match &words[n - 1].token {
        Token::Number(s, _) => AsOf::Version(s.parse().map_err(|_| {
            SqlError::InvalidParameter(format!("AS OF version {s} is not a version number"))
        })?),
        Token::SingleQuotedString(s) => {
            if s.len() == 20 && s.chars().all(|c| c.is_ascii_hexdigit()) {
                match strata_engine::Versionstamp::from_hex(s) {
                    Some(vs) => AsOf::Version(vs.version()),
                    None => {
                        return Err(SqlError::InvalidParameter(format!(
                            "AS OF {s:?} is not a versionstamp"
                        )))
                    }
                }
            } else {
                match crate::types::parse_timestamp(s.trim()) {
                    Some(micros) if micros >= 0 => AsOf::Time((micros / 1000) as u64),
                    _ => {
                        return Err(SqlError::InvalidParameter(format!(
                            "AS OF {s:?} is neither a versionstamp nor a timestamp 'YYYY-MM-DD HH:MM:SS'"
                        )))
                    }
                }
            }
        }
        _ => return Ok((sql, None)),
    };
    // Cut the text at the `AS` token.
    let loc = words[n - 3].span.start;
    let mut offset = 0usize;
    for (i, line) in trimmed.split_inclusive('\n').enumerate() {
        if i + 1 == loc.line as usize {
            let col: usize = line
                .char_indices()
                .nth(loc.column as usize - 1)
                .map(|(b, _)| b)
                .unwrap_or(line.len());
            offset += col;
            break;
        }
        offset += line.len();
    }
    Ok((&trimmed[..offset], Some(at)))
}
