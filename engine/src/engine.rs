//! An engine instance: many named databases over one backend, opened lazily on first use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::backend::{Backend, BackendError};
use crate::database::Database;
use crate::error::{EngineError, Result};
use crate::limits::{DatabaseOptions, EngineConfig};
use crate::log::{CommitLog, CommitLogFactory, LocalLog};
use crate::names::validate_name;

pub struct Engine {
    backend: Arc<dyn Backend>,
    config: EngineConfig,
    log_factory: Option<CommitLogFactory>,
    open: RwLock<HashMap<String, Database>>,
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend.describe())
            .finish()
    }
}

impl Engine {
    pub fn new(backend: Arc<dyn Backend>, config: EngineConfig) -> Self {
        Engine {
            backend,
            config,
            log_factory: None,
            open: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Route every database's commits through logs made by `factory` (replication).
    pub fn with_commit_log(mut self, factory: CommitLogFactory) -> Self {
        self.log_factory = Some(factory);
        self
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The open handle for `name`, unless its database was dropped elsewhere since it was
    /// opened: that handle is closed and forgotten.
    async fn live(&self, name: &str) -> Option<Database> {
        let db = self.cached(name)?;
        if !db.dropped_elsewhere() {
            return Some(db);
        }
        let gone = {
            let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
            match open.get(name) {
                Some(d) if d.dropped_elsewhere() => open.remove(name),
                _ => None,
            }
        };
        if let Some(d) = gone {
            d.close().await;
        }
        None
    }

    fn cached(&self, name: &str) -> Option<Database> {
        self.open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    async fn open_db(&self, name: &str, create: Option<DatabaseOptions>) -> Result<Database> {
        validate_name(name)?;
        if let Some(db) = self.live(name).await {
            return Ok(db);
        }
        let _opening = self.opening.lock().await;
        if let Some(db) = self.live(name).await {
            return Ok(db);
        }
        let store = match self.backend.open(name, create.is_some()).await {
            Ok(s) => s,
            Err(BackendError::NotFound) => {
                return Err(EngineError::DatabaseNotFound(name.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let log: Arc<dyn CommitLog> = match &self.log_factory {
            Some(f) => f(name, store.clone()),
            None => Arc::new(LocalLog::new(store.clone())),
        };
        let options = create.unwrap_or_else(|| self.config.default_database.clone());
        options.limits.validate()?;
        let multi_process = self.backend.capabilities().multi_process;
        let db = Database::open(
            name,
            store,
            log,
            options,
            self.config.clone(),
            multi_process,
        )
        .await?;
        self.open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// The databases open in this engine now (opened by a request, not merely stored), by
    /// name: what a metrics scrape reports on without opening anything.
    pub fn open_databases(&self) -> Vec<Database> {
        let mut dbs: Vec<Database> = self
            .open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|d| !d.dropped_elsewhere())
            .cloned()
            .collect();
        dbs.sort_by(|a, b| a.name().cmp(b.name()));
        dbs
    }

    /// An existing database, opened on first use.
    pub async fn database(&self, name: &str) -> Result<Database> {
        self.open_db(name, None).await
    }

    /// A database, created with the default options if it does not exist.
    pub async fn open_or_create(&self, name: &str) -> Result<Database> {
        self.open_db(name, Some(self.config.default_database.clone()))
            .await
    }

    /// Create a new database; fails if it exists.
    pub async fn create_database(
        &self,
        name: &str,
        options: Option<DatabaseOptions>,
    ) -> Result<Database> {
        validate_name(name)?;
        if self.exists(name).await? {
            return Err(EngineError::DatabaseExists(name.to_string()));
        }
        self.open_db(
            name,
            Some(options.unwrap_or_else(|| self.config.default_database.clone())),
        )
        .await
    }

    /// Whether a database exists, opened or not.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        if self.live(name).await.is_some() {
            return Ok(true);
        }
        Ok(self.backend.list().await?.iter().any(|n| n == name))
    }

    /// Every database in the backend, including ones not opened yet.
    pub async fn list_databases(&self) -> Result<Vec<String>> {
        let mut names = self.backend.list().await?;
        for (n, db) in self.open.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if !names.contains(n) && !db.dropped_elsewhere() {
                names.push(n.clone());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Close and delete a database.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let _opening = self.opening.lock().await;
        let db = self
            .open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(db) = &db {
            db.close().await;
        }
        // A handle to a database dropped through another node does not make it exist.
        let held = db.is_some_and(|d| !d.dropped_elsewhere());
        let existed = self.backend.drop_database(name).await?;
        if !existed && !held {
            return Err(EngineError::DatabaseNotFound(name.to_string()));
        }
        Ok(())
    }

    /// Close every open database, letting queued commits finish.
    pub async fn close(&self) {
        let dbs: Vec<Database> = self
            .open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, d)| d)
            .collect();
        for db in dbs {
            db.close().await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for db in self.open.read().unwrap_or_else(|e| e.into_inner()).values() {
            db.shared.shutdown.send_replace(true);
        }
    }
}
