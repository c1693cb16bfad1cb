//! `/openapi.json`, generated from the handlers' annotations: never written by hand.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::kv::{KvEntry, KvPage, KvSet, KvWritten};
use crate::queue::{DeadLettersPurged, QueueView, QueuedMessage};
use crate::result::{Column, ResultSet};
use crate::routes::{self, Affected, DbName, Dropped, Health, SqlRequest, TxEnded, TxOpened};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata REST API",
        description = "Databases, SQL, transactions and KV over HTTP. Every endpoint but \
                       /health takes `Authorization: Bearer <token>` when the server has one."
    ),
    paths(
        routes::health,
        routes::list_databases,
        routes::create_database,
        routes::drop_database,
        routes::execute_sql,
        routes::query_oltp,
        routes::query,
        routes::tables,
        routes::schema,
        routes::begin,
        routes::commit,
        routes::rollback,
        routes::kv_get,
        routes::kv_set,
        routes::kv_delete,
        routes::kv_list,
        routes::queue_view,
        routes::purge_dead_letters,
    ),
    components(schemas(
        ErrorBody, Column, ResultSet, DbName, Dropped, SqlRequest, Affected, Health,
        TxOpened, TxEnded, KvEntry, KvSet, KvWritten, KvPage, QueueView, QueuedMessage,
        DeadLettersPurged
    )),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct Api;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON text.
pub fn json() -> String {
    Api::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}
