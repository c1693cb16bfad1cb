//! One connection's queries: the simple and the extended protocol over one SQL session.
//!
//! Each connection owns a [`Session`] (its current database and its transaction). The
//! handlers are thin: they parse through the session, run each statement through it, and
//! turn outputs into protocol responses. The session follows PostgreSQL's transaction
//! rule (an error inside BEGIN aborts the transaction), so what clients see is what a
//! PostgreSQL server would show them, ReadyForQuery status included.
//!
//! The session sits behind an async mutex only because the protocol library hands each
//! handler `&self`; one connection runs one message at a time, so it is never contended.

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::{stream, Sink};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use strata_sql::arrow::datatypes::SchemaRef;
use strata_sql::{Datum, Output, Prepared, Session};
use tokio::sync::Mutex;

use crate::error::{sql_error, sql_error_info, user_error};
use crate::values;

/// A statement prepared by Parse: the parsed text, the parameter types the client
/// declared, and (once asked) its description.
pub struct Statement {
    prepared: Prepared,
    declared: Vec<Option<Type>>,
    described: OnceLock<Described>,
}

impl Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statement")
            .field("declared", &self.declared)
            .finish()
    }
}

/// What Describe answers: parameter types and result columns.
#[derive(Clone)]
struct Described {
    params: Vec<Type>,
    columns: Option<SchemaRef>,
}

/// Parses a Parse message's text into one statement.
#[derive(Debug, Default)]
pub struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Statement>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Arc<Statement>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let prepared = Prepared::parse(sql).map_err(sql_error)?;
        if prepared.is_empty() {
            return Ok(None);
        }
        if prepared.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        Ok(Some(Arc::new(Statement {
            prepared,
            declared: types
                .iter()
                .map(|t| t.clone().filter(|t| *t != Type::UNKNOWN))
                .collect(),
            described: OnceLock::new(),
        })))
    }

    fn get_parameter_types(&self, stmt: &Arc<Statement>) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .described
            .get()
            .map(|d| d.params.clone())
            .unwrap_or_default())
    }

    fn get_result_schema(
        &self,
        _stmt: &Arc<Statement>,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

/// The SQL state of one connection.
struct Conn {
    session: Session,
    /// The startup message's database, selected before the first statement.
    database_chosen: bool,
}

/// The query handlers of one connection.
pub struct Handler {
    conn: Mutex<Conn>,
    parser: Arc<Parser>,
}

impl Handler {
    pub fn new(session: Session) -> Handler {
        let mut session = session;
        session.set_abort_on_error(true);
        Handler {
            conn: Mutex::new(Conn {
                session,
                database_chosen: false,
            }),
            parser: Arc::new(Parser),
        }
    }

    async fn conn<C: ClientInfo>(
        &self,
        client: &C,
    ) -> PgWireResult<tokio::sync::MutexGuard<'_, Conn>> {
        let mut conn = self.conn.lock().await;
        if !conn.database_chosen {
            let db = crate::startup_database(|k| client.metadata().get(k));
            conn.session.set_database(&db).await.map_err(sql_error)?;
            conn.database_chosen = true;
        }
        Ok(conn)
    }
}

/// How a statement moved the connection's transaction.
#[derive(Clone, Copy)]
enum Change {
    Began,
    Ended,
    Stayed,
}

/// What a statement that succeeded is called in its command tag, and how it moved the
/// transaction. `COMMIT` of an aborted transaction rolled it back and says so.
fn effect(
    prepared: &Prepared,
    i: usize,
    was: bool,
    now: bool,
    failed_before: bool,
) -> (&'static str, Change) {
    let command = if failed_before && !now {
        "ROLLBACK"
    } else {
        prepared.command(i)
    };
    let change = match (was, now) {
        (false, true) => Change::Began,
        (true, false) => Change::Ended,
        _ => Change::Stayed,
    };
    (command, change)
}

/// The response to one statement that succeeded.
fn response(
    command: &str,
    out: Output,
    change: Change,
    format: &Format,
    described: Option<&SchemaRef>,
) -> PgWireResult<Response> {
    let tag = match out {
        Output::Rows(rows) => {
            let schema = described.cloned().unwrap_or(rows.schema.clone());
            let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(
                &schema, format, None,
            )?);
            let mut encoded = Vec::new();
            for batch in rows.batches {
                let batch = conform(batch, &schema)?;
                encoded.extend(arrow_pg::encode_recordbatch(fields.clone(), batch));
            }
            let mut response = QueryResponse::new(fields, stream::iter(encoded));
            if command == "INSERT" {
                response.set_command_tag("INSERT 0");
            } else if command != "SELECT" {
                response.set_command_tag(command);
            }
            return Ok(Response::Query(response));
        }
        Output::Affected { rows } => {
            let tag = Tag::new(command);
            let tag = if command == "INSERT" {
                tag.with_oid(0)
            } else {
                tag
            };
            tag.with_rows(rows as usize)
        }
        Output::Done => Tag::new(command),
    };
    Ok(match change {
        Change::Began => Response::TransactionStart(tag),
        Change::Ended => Response::TransactionEnd(tag),
        Change::Stayed => Response::Execution(tag),
    })
}

/// A batch in exactly the types its columns were described with (a client decodes by
/// the description).
fn conform(
    batch: strata_sql::arrow::record_batch::RecordBatch,
    schema: &SchemaRef,
) -> PgWireResult<strata_sql::arrow::record_batch::RecordBatch> {
    use strata_sql::arrow::compute::cast;
    use strata_sql::arrow::record_batch::RecordBatch;
    if batch.schema().fields().len() != schema.fields().len() {
        return Err(user_error(
            "0A000",
            "the statement's result changed shape since it was described; prepare it again",
        ));
    }
    let same = batch
        .schema()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    if same {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| user_error("XX000", e.to_string()))?;
    let relaxed = Arc::new(strata_sql::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(relaxed, columns).map_err(|e| user_error("XX000", e.to_string()))
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut conn = match self.conn(client).await {
            Ok(c) => c,
            Err(e) => return Ok(vec![error_response(e)]),
        };
        let prepared = match conn.session.prepare_once(query) {
            Ok(p) => p,
            Err(e) => return Ok(vec![Response::Error(Box::new(sql_error_info(&e)))]),
        };
        let mut responses = Vec::with_capacity(prepared.len());
        for i in 0..prepared.len() {
            let was = conn.session.in_transaction();
            let rolled_back = conn.session.transaction_failed();
            match conn.session.execute_prepared(&prepared, i, &[]).await {
                Ok(out) => {
                    let now = conn.session.in_transaction();
                    let (command, change) = effect(&prepared, i, was, now, rolled_back);
                    responses.push(response(command, out, change, &Format::UnifiedText, None)?);
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(sql_error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

fn error_response(e: PgWireError) -> Response {
    match e {
        PgWireError::UserError(info) => Response::Error(info),
        other => Response::Error(Box::new(pgwire::error::ErrorInfo::new(
            "ERROR".into(),
            "XX000".into(),
            other.to_string(),
        ))),
    }
}

impl Handler {
    /// The statement's parameter types and result columns, found once.
    async fn describe(&self, conn: &mut Conn, stmt: &Statement) -> PgWireResult<Described> {
        if let Some(d) = stmt.described.get() {
            return Ok(d.clone());
        }
        let found = conn
            .session
            .describe(&stmt.prepared, 0)
            .await
            .map_err(sql_error)?;
        let count = found.params.len().max(stmt.declared.len());
        let params = (0..count)
            .map(|n| {
                stmt.declared
                    .get(n)
                    .cloned()
                    .flatten()
                    .or_else(|| {
                        found
                            .params
                            .get(n)
                            .cloned()
                            .flatten()
                            .map(|t| values::pg_type(&t))
                    })
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let described = Described {
            params,
            columns: found.columns,
        };
        let _ = stmt.described.set(described.clone());
        Ok(described)
    }

    fn fields(columns: &Option<SchemaRef>, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        match columns {
            Some(schema) => Ok(arrow_pg::datatypes::arrow_schema_to_pg_fields(
                schema, format, None,
            )?),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Arc<Statement>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        stmt: &StoredStatement<Arc<Statement>>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut conn = self.conn(client).await?;
        let d = self.describe(&mut conn, &stmt.statement).await?;
        let fields = Self::fields(&d.columns, &Format::UnifiedText)?;
        Ok(DescribeStatementResponse::new(d.params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Statement>>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut conn = self.conn(client).await?;
        let d = self
            .describe(&mut conn, &portal.statement.statement)
            .await?;
        let fields = Self::fields(&d.columns, &portal.result_column_format)?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Statement>>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut conn = self.conn(client).await?;
        let stmt = &portal.statement.statement;
        let expected = stmt.prepared.param_count(0);
        if portal.parameters.len() != expected {
            return Err(user_error(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {expected}",
                    portal.parameters.len()
                ),
            ));
        }
        // Parameter types: what the client declared, else what the statement determines.
        // Without either, a value is taken as text.
        let needs_description = expected > 0
            && (0..expected).any(|n| stmt.declared.get(n).cloned().flatten().is_none());
        let described = if needs_description || stmt.described.get().is_some() {
            Some(self.describe(&mut conn, stmt).await?)
        } else {
            None
        };
        let mut params = Vec::with_capacity(expected);
        for (n, value) in portal.parameters.iter().enumerate() {
            let ty = stmt
                .declared
                .get(n)
                .cloned()
                .flatten()
                .or_else(|| described.as_ref().and_then(|d| d.params.get(n).cloned()))
                .unwrap_or(Type::TEXT);
            params.push(values::decode_param(
                n,
                &ty,
                portal.parameter_format.is_binary(n),
                value.as_deref(),
            )?);
        }
        let out = run_one(
            &mut conn.session,
            &stmt.prepared,
            &params,
            &portal.result_column_format,
            described.as_ref().and_then(|d| d.columns.as_ref()),
        )
        .await;
        if out.is_err() {
            settle_status(client, &conn.session);
        }
        out
    }
}

async fn run_one(
    session: &mut Session,
    prepared: &Prepared,
    params: &[Datum],
    format: &Format,
    described: Option<&SchemaRef>,
) -> PgWireResult<Response> {
    let was = session.in_transaction();
    let rolled_back = session.transaction_failed();
    match session.execute_prepared(prepared, 0, params).await {
        Ok(out) => {
            let now = session.in_transaction();
            let (command, change) = effect(prepared, 0, was, now, rolled_back);
            response(command, out, change, format, described)
        }
        Err(e) => Err(sql_error(e)),
    }
}

/// After a failed Execute, the status ReadyForQuery reports: a failed COMMIT ended the
/// transaction (Idle), an error inside one aborted it (the library marks it failed).
fn settle_status<C: ClientInfo>(client: &mut C, session: &Session) {
    if !session.in_transaction() {
        client.set_transaction_status(pgwire::messages::response::TransactionStatus::Idle);
    }
}
