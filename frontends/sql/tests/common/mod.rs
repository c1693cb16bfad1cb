//! What the session tests share: an in-memory engine and a query's rows.

use std::sync::Arc;

use strata_engine::{Engine, EngineConfig};
use strata_sql::{Datum, Output, Session};

pub fn engine() -> Engine {
    Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::new()),
        EngineConfig::default(),
    )
}

pub async fn rows(s: &mut Session, sql: &str) -> Vec<Vec<Datum>> {
    match s.execute(sql).await {
        Ok(Output::Rows(r)) => r.rows().unwrap(),
        other => panic!("{sql}: {other:?}"),
    }
}
