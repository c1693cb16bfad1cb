//! The bridge to DataFusion: engine databases as catalogs, tables bound to the statement's
//! transaction, and the dialect rewrites applied to every statement before planning.
//!
//! Every engine database is a DataFusion catalog with one schema, `public`; a nested name
//! maps to a catalog with `/` replaced by `_` (`project/mydb` → `project_mydb`). Catalog
//! lookups are synchronous in DataFusion, so a catalog exists for every name; the table
//! lookup (async) opens the database, begins the statement's transaction on it if there is
//! none yet, and reads the definition through that transaction.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart, Statement,
};
use strata_engine::{Database, Engine};
use tokio::sync::Mutex;

use crate::error::{Result, SqlError};
use crate::table::{external, SqlTable};
use crate::tx::{Source, Tx};

/// The schema every database has.
pub const SCHEMA: &str = "public";

/// The catalog name of an engine database.
pub fn catalog_name(db: &str) -> String {
    db.replace('/', "_")
}

fn find_database(databases: &[String], catalog: &str) -> Option<String> {
    databases
        .iter()
        .find(|k| *k == catalog)
        .or_else(|| databases.iter().find(|k| catalog_name(k) == catalog))
        .cloned()
}

/// What the statement being run reads and writes through, shared with the providers.
#[derive(Default)]
pub struct Scope {
    /// Open transactions, by engine database name.
    pub txns: HashMap<String, Arc<Mutex<Tx>>>,
    /// `AS OF`: read this version of every database instead.
    pub as_of: Option<AsOf>,
    /// Transactions begun in this scope are read-only.
    pub read_only: bool,
    /// The scope is an explicit transaction (BEGIN … COMMIT): it reads its own snapshot,
    /// strongly, whatever `read_consistency` says.
    pub explicit: bool,
    /// Transactions begun in this scope defer reads to commit-time checks
    /// ([`Tx::deferring`]): the statement is its own transaction and is run again, reading,
    /// if it fails after deferring.
    pub deferring: bool,
    /// The (database, table) whose provider also returns each row's key (UPDATE, DELETE).
    pub keyed: Option<(String, String)>,
    /// Values for the placeholders of a statement planned with them in place (the plan
    /// cache): the providers push down predicates on them.
    pub params: Arc<[crate::types::Datum]>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsOf {
    Version(u64),
    /// Milliseconds since the epoch: the newest version committed at or before it.
    Time(u64),
}

/// State shared by a session and its DataFusion providers.
pub struct Context {
    pub engine: Arc<Engine>,
    pub scope: StdMutex<Scope>,
    /// Engine database names seen, to map catalog names back.
    known: StdMutex<Vec<String>>,
    /// The session's planner state, for planning view definitions.
    template: OnceLock<SessionState>,
    /// Table definitions by schema version, for the session's transactions.
    catalog_cache: Arc<crate::tx::CatalogCache>,
    /// Row counts for the planner's statistics.
    counts: crate::stats::CountCache,
    /// Full scans of tables with at least this many rows read in parallel parts...
    pub parallel_scan_rows: std::sync::atomic::AtomicU64,
    /// ... this many.
    pub scan_parts: std::sync::atomic::AtomicUsize,
    /// The `pg_catalog` tables of the statement running (built on first use).
    pub(crate) pg: StdMutex<Option<Arc<crate::pg_catalog::Snapshot>>>,
    /// `SET read_consistency = eventual`: reads outside explicit transactions take this
    /// node's newest version without the store's read barrier (on a cluster node, no round
    /// trip to the leader).
    pub eventual: std::sync::atomic::AtomicBool,
}

impl Context {
    pub fn new(engine: Arc<Engine>) -> Arc<Context> {
        Arc::new(Context {
            engine,
            scope: StdMutex::new(Scope::default()),
            known: StdMutex::new(Vec::new()),
            template: OnceLock::new(),
            catalog_cache: Arc::default(),
            counts: Default::default(),
            parallel_scan_rows: crate::table::PARALLEL_SCAN_ROWS.into(),
            scan_parts: crate::table::scan_workers().into(),
            pg: StdMutex::new(None),
            eventual: Default::default(),
        })
    }

    pub fn set_template(&self, state: SessionState) {
        let _ = self.template.set(state);
    }

    /// The session's planner state (set once the session is built).
    pub fn template(&self) -> Option<&SessionState> {
        self.template.get()
    }

    pub(crate) fn scope(&self) -> std::sync::MutexGuard<'_, Scope> {
        self.scope.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn remember(&self, db: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|k| k == db) {
            known.push(db.to_string());
        }
    }

    pub fn forget(&self, db: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|k| k != db);
    }

    /// The engine database a catalog name stands for, among those seen so far: the database
    /// of that very name (`"team/app"`), else the one it is the catalog name of (`team_app`).
    pub fn known_database(&self, catalog: &str) -> Option<String> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        find_database(&known, catalog)
    }

    /// The engine database a catalog name stands for.
    pub async fn resolve(&self, catalog: &str) -> Result<String> {
        if let Some(db) = self.known_database(catalog) {
            return Ok(db);
        }
        let all = self.engine.list_databases().await?;
        let found = find_database(&all, catalog);
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            *known = all;
        }
        found.ok_or_else(|| SqlError::UndefinedObject {
            kind: "database",
            name: catalog.to_string(),
        })
    }

    pub async fn open(&self, db: &str) -> Result<Database> {
        let db = self.engine.database(db).await?;
        Ok(
            if self.eventual.load(std::sync::atomic::Ordering::Relaxed) && !self.scope().explicit {
                db.eventual()
            } else {
                db
            },
        )
    }

    /// The transaction this statement uses on `db`, begun on first use.
    pub async fn tx(&self, db: &str) -> Result<Arc<Mutex<Tx>>> {
        let (read_only, deferring) = {
            let scope = self.scope();
            if let Some(tx) = scope.txns.get(db) {
                return Ok(tx.clone());
            }
            (scope.read_only, scope.deferring)
        };
        let database = self.open(db).await?;
        let mut tx = Tx::begin(database, read_only)
            .await?
            .with_catalog_cache(self.catalog_cache.clone())
            .deferring(deferring);
        tx.savepoint();
        let tx = Arc::new(Mutex::new(tx));
        let mut scope = self.scope();
        Ok(scope.txns.entry(db.to_string()).or_insert(tx).clone())
    }

    /// Where this statement reads `db` from.
    pub async fn source(&self, db: &str) -> Result<Source> {
        let as_of = self.scope().as_of;
        match as_of {
            None => Ok(Source::Txn(self.tx(db).await?)),
            Some(at) => {
                let database = self.open(db).await?;
                let version = match at {
                    AsOf::Version(v) => v,
                    AsOf::Time(ms) => version_at(&database, ms).await?,
                };
                Ok(Source::Version(database, version))
            }
        }
    }

    pub(crate) async fn lookup(
        &self,
        catalog: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let db = self.resolve(catalog).await?;
        let source = self.source(&db).await?;
        if let Some(def) = source.table(name).await? {
            let (keyed, params) = {
                let scope = self.scope();
                let keyed = scope
                    .keyed
                    .as_ref()
                    .is_some_and(|(d, t)| *d == db && t == name);
                (keyed, scope.params.clone())
            };
            let rows = self.counts.get(&self.open(&db).await?, def.id).await;
            return Ok(Some(Arc::new(
                SqlTable::new(def, source, keyed)
                    .with_params(params)
                    .with_database(&db)
                    .with_rows(rows)
                    .with_parallel_scan(
                        self.parallel_scan_rows.load(Relaxed),
                        self.scan_parts.load(Relaxed),
                    ),
            )));
        }
        if let Some(view) = source.view(name).await? {
            let Some(template) = self.template.get() else {
                return Err(SqlError::Internal("planner not ready".into()));
            };
            let mut state = template.clone();
            state.config_mut().options_mut().catalog.default_catalog = catalog.to_string();
            let mut stmt = parse_one(&view.sql)?;
            rewrite(&mut stmt);
            let plan = plan_statement(&state, stmt).await?;
            return Ok(Some(Arc::new(ViewTable::new(plan, Some(view.sql)))));
        }
        Ok(None)
    }
}

/// The newest version of `db` committed at or before `ms`.
async fn version_at(db: &Database, ms: u64) -> Result<u64> {
    match db.version_at_time(ms).await? {
        Some(v) => Ok(v),
        None => Err(SqlError::InvalidParameter(format!(
            "no version of database {:?} inside the retention window was committed at or before that time",
            db.name()
        ))),
    }
}

/// Parse exactly one statement.
pub fn parse_one(sql: &str) -> Result<Statement> {
    let mut stmts = parse(sql)?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        0 => Err(SqlError::Syntax("empty statement".into())),
        _ => Err(SqlError::Syntax("expected one statement".into())),
    }
}

/// Parse SQL text into statements, in our dialect.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let text = mark_empty_in_lists(sql);
    Ok(datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .try_with_sql(&text)?
        .parse_statements()?)
}

/// How deeply expressions may nest (sqlparser's default, 50, refuses generated predicates
/// that SQLite accepts).
pub const PARSER_RECURSION_LIMIT: usize = 1000;

/// Stands in for the empty list of `x IN ()` (SQLite accepts it; the parser does not).
const EMPTY_IN_LIST: &str = "__strata_empty_in_list__";

/// `IN ()` becomes `IN (<marker>)`, which [`rewrite`] turns into FALSE (`NOT IN ()`: TRUE).
fn mark_empty_in_lists(sql: &str) -> std::borrow::Cow<'_, str> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let bytes = sql.as_bytes();
    let has_empty_parens = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'(' && bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b')')
    });
    if !has_empty_parens {
        return std::borrow::Cow::Borrowed(sql);
    }
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return std::borrow::Cow::Borrowed(sql);
    };
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let mut insert_after = Vec::new();
    for w in significant.windows(3) {
        if matches!(&tokens[w[0]], Token::Word(k) if k.keyword == Keyword::IN)
            && tokens[w[1]] == Token::LParen
            && tokens[w[2]] == Token::RParen
        {
            insert_after.push(w[1]);
        }
    }
    if insert_after.is_empty() {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 32);
    for (i, t) in tokens.iter().enumerate() {
        out.push_str(&t.to_string());
        if insert_after.contains(&i) {
            out.push_str(EMPTY_IN_LIST);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Run uncorrelated `IN (subquery)` and `EXISTS (subquery)` first and put their results in
/// their place: DataFusion decorrelates them in WHERE clauses only.
pub async fn inline_uncorrelated(state: &SessionState, stmt: &mut Statement) -> Result<()> {
    let mut found: Vec<ast::Query> = Vec::new();
    // Collected in the order the replacing pass below visits them (children first).
    let mut probe = stmt.clone();
    let _ = ast::visit_expressions_mut(&mut probe, |e: &mut Expr| {
        match e {
            Expr::InSubquery { subquery, .. } | Expr::Exists { subquery, .. } => {
                found.push((**subquery).clone())
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    if found.is_empty() {
        return Ok(());
    }
    let mut results: Vec<Option<Vec<crate::types::Datum>>> = Vec::with_capacity(found.len());
    for q in found {
        let plan = match state
            .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
                Box::new(q),
            ))))
            .await
        {
            Ok(p) => p,
            // Correlated (it names outer columns): leave it to the planner.
            Err(_) => {
                results.push(None);
                continue;
            }
        };
        let physical = state.create_physical_plan(&plan).await?;
        let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
        let mut values = Vec::new();
        for b in &batches {
            if b.num_columns() != 1 {
                return Err(SqlError::Query("subquery has too many columns".into()));
            }
            for r in 0..b.num_rows() {
                values.push(crate::types::Datum::from_array(b.column(0), r)?);
            }
        }
        results.push(Some(values));
    }
    let mut i = 0;
    let _ = ast::visit_expressions_mut(stmt, |e: &mut Expr| {
        let replacement = match e {
            Expr::InSubquery { expr, negated, .. } => {
                let r = results.get(i).cloned().flatten();
                i += 1;
                r.map(|values| {
                    if values.is_empty() {
                        Expr::value(ast::Value::Boolean(*negated))
                    } else {
                        Expr::InList {
                            expr: expr.clone(),
                            list: values.iter().map(crate::eval::literal_expr).collect(),
                            negated: *negated,
                        }
                    }
                })
            }
            Expr::Exists { negated, .. } => {
                let r = results.get(i).cloned().flatten();
                i += 1;
                r.map(|values| Expr::value(ast::Value::Boolean(values.is_empty() == *negated)))
            }
            _ => None,
        };
        if let Some(r) = replacement {
            *e = Expr::Nested(Box::new(r));
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

/// Plan a statement DataFusion runs (queries); the caller applied [`rewrite`].
pub async fn plan_statement(state: &SessionState, stmt: Statement) -> Result<LogicalPlan> {
    Ok(state
        .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
        .await?)
}

/// The dialect rules that differ from DataFusion's defaults (listed in docs/sql.md):
/// division and modulo by zero give NULL (as in SQLite); `INTEGER` casts are 64-bit and
/// `REAL`/`FLOAT` casts are double precision (our column types); `?` placeholders are
/// numbered `$1`, `$2`, … in order.
pub fn rewrite(stmt: &mut Statement) {
    crate::pg_catalog::prune_empty(stmt);
    match stmt {
        Statement::Query(q) => name_columns(&mut q.body),
        // An INSERT takes its source's columns by position: their names only have to be
        // unique (`INSERT INTO t SELECT x, x FROM …`).
        Statement::Insert(ins) => {
            if let Some(q) = ins.source.as_mut() {
                name_columns(&mut q.body);
            }
        }
        _ => {}
    }
    let mut placeholder = 0usize;
    let _ = ast::visit_expressions_mut(stmt, |e: &mut Expr| {
        rewrite_expr(e, &mut placeholder);
        ControlFlow::<()>::Continue(())
    });
}

/// Name a query's result columns as written (`SELECT a + 1` is column `a + 1`), and make
/// repeated names unique (`x`, `x:1`): DataFusion refuses two output columns of one name.
fn name_columns(body: &mut ast::SetExpr) {
    match body {
        ast::SetExpr::Select(select) => {
            let mut seen: Vec<String> = Vec::new();
            for item in &mut select.projection {
                let (name, plain) = match item {
                    ast::SelectItem::UnnamedExpr(Expr::Identifier(i)) => (i.value.clone(), true),
                    ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => (
                        parts.last().map(|i| i.value.clone()).unwrap_or_default(),
                        true,
                    ),
                    ast::SelectItem::UnnamedExpr(e) => (e.to_string(), false),
                    ast::SelectItem::ExprWithAlias { alias, .. } => (alias.value.clone(), true),
                    _ => continue,
                };
                let mut unique = name.clone();
                let mut n = 0;
                while seen.iter().any(|s| s.eq_ignore_ascii_case(&unique)) {
                    n += 1;
                    unique = format!("{name}:{n}");
                }
                seen.push(unique.clone());
                if plain && n == 0 {
                    continue;
                }
                let expr =
                    match std::mem::replace(item, ast::SelectItem::Wildcard(Default::default())) {
                        ast::SelectItem::UnnamedExpr(e) => e,
                        ast::SelectItem::ExprWithAlias { expr, .. } => expr,
                        other => {
                            *item = other;
                            continue;
                        }
                    };
                *item = ast::SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', unique),
                };
            }
        }
        ast::SetExpr::SetOperation { left, right, .. } => {
            name_columns(left);
            name_columns(right);
        }
        ast::SetExpr::Query(q) => name_columns(&mut q.body),
        _ => {}
    }
}

pub fn rewrite_expr(e: &mut Expr, placeholder: &mut usize) {
    crate::pg_catalog::rewrite_expr(e);
    match e {
        // Unary plus does nothing, on any type (SQLite).
        Expr::UnaryOp {
            op: ast::UnaryOperator::Plus,
            expr,
        } => {
            let inner = std::mem::replace(expr.as_mut(), Expr::value(ast::Value::Null));
            *e = Expr::Nested(Box::new(inner));
        }
        Expr::InList { list, negated, .. }
            if list.len() == 1
                && matches!(&list[0], Expr::Identifier(i) if i.value == EMPTY_IN_LIST) =>
        {
            *e = Expr::value(ast::Value::Boolean(*negated));
        }
        Expr::BinaryOp {
            op: BinaryOperator::Divide | BinaryOperator::Modulo,
            right,
            ..
        } => {
            let zero = Expr::value(ast::Value::Number("0".into(), false));
            let inner = std::mem::replace(right.as_mut(), zero.clone());
            **right = Expr::Function(Function {
                name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new("nullif"))]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(inner)),
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(zero)),
                    ],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        // A scalar subquery yields its first row (SQLite's rule): saying so lets the
        // planner accept a correlated one that does not aggregate.
        Expr::Subquery(q)
            if q.limit_clause.is_none()
                && q.fetch.is_none()
                && matches!(q.body.as_ref(), ast::SetExpr::Select(s) if !crate::pg_catalog::aggregates(s)) =>
        {
            q.limit_clause = Some(ast::LimitClause::LimitOffset {
                limit: Some(Expr::value(ast::Value::Number("1".into(), false))),
                offset: None,
                limit_by: vec![],
            });
        }
        Expr::Cast { data_type, .. } => {
            if let Some(t) = widen(data_type) {
                *data_type = t;
            }
        }
        Expr::Value(v) => {
            if let ast::Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    *placeholder += 1;
                    *p = format!("${placeholder}");
                }
            }
        }
        _ => {}
    }
}

fn widen(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Int(_)
        | DataType::Integer(_)
        | DataType::Int4(_)
        | DataType::SmallInt(_)
        | DataType::TinyInt(_)
        | DataType::MediumInt(_)
        | DataType::Int2(_) => Some(DataType::BigInt(None)),
        DataType::Real | DataType::Float(_) | DataType::Float4 => {
            Some(DataType::Double(ast::ExactNumberInfo::None))
        }
        _ => None,
    }
}

/// Every engine database, as DataFusion catalogs.
#[derive(Clone)]
pub struct Catalogs(pub Arc<Context>);

impl std::fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalogs")
    }
}

impl CatalogProviderList for Catalogs {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let known = self.0.known.lock().unwrap_or_else(|p| p.into_inner());
        known.iter().map(|k| catalog_name(k)).collect()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        Some(Arc::new(DbCatalog {
            ctx: self.0.clone(),
            name: name.to_string(),
        }))
    }
}

struct DbCatalog {
    ctx: Arc<Context>,
    name: String,
}

impl std::fmt::Debug for DbCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbCatalog({})", self.name)
    }
}

impl CatalogProvider for DbCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![
            SCHEMA.to_string(),
            crate::pg_catalog::SCHEMA.to_string(),
            crate::pg_catalog::INFORMATION_SCHEMA.to_string(),
        ]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SCHEMA {
            Some(Arc::new(DbSchema {
                ctx: self.ctx.clone(),
                catalog: self.name.clone(),
            }))
        } else if name.eq_ignore_ascii_case(crate::pg_catalog::SCHEMA) {
            Some(Arc::new(crate::pg_catalog::PgSchema {
                ctx: self.ctx.clone(),
                catalog: self.name.clone(),
                schema: crate::pg_catalog::SCHEMA,
            }))
        } else if name.eq_ignore_ascii_case(crate::pg_catalog::INFORMATION_SCHEMA) {
            Some(Arc::new(crate::pg_catalog::PgSchema {
                ctx: self.ctx.clone(),
                catalog: self.name.clone(),
                schema: crate::pg_catalog::INFORMATION_SCHEMA,
            }))
        } else {
            None
        }
    }
}

struct DbSchema {
    ctx: Arc<Context>,
    catalog: String,
}

impl std::fmt::Debug for DbSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbSchema({})", self.catalog)
    }
}

#[async_trait]
impl SchemaProvider for DbSchema {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self
            .ctx
            .lookup(&self.catalog, name)
            .await
            .map_err(external)?
        {
            // PostgreSQL finds the system catalogs without a schema name.
            None if crate::pg_catalog::is_table(name) => {
                crate::pg_catalog::provider(&self.ctx, &self.catalog, name)
                    .await
                    .map_err(external)
            }
            found => Ok(found),
        }
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}

impl From<SqlError> for DataFusionError {
    fn from(e: SqlError) -> Self {
        external(e)
    }
}
