//! What the typed tests share.

use std::sync::Arc;

use strata_engine::{Database, Engine, EngineConfig};

/// A database of a fresh in-memory engine; the engine lives as long as the test process (a
/// dropped engine shuts its databases down).
pub async fn database() -> Database {
    let engine: &'static Engine = Box::leak(Box::new(Engine::new(
        Arc::new(strata_backend_memory::MemoryBackend::new()),
        EngineConfig::default(),
    )));
    engine.open_or_create("typed").await.unwrap()
}
