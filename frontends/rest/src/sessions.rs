//! SQL sessions for HTTP requests: a pool per database, and the transactions clients open.
//!
//! A request without a transaction borrows an idle session of its database (planning a
//! session costs far more than a point query, and each session keeps its plan cache), runs
//! one statement in autocommit, and gives it back. The input rules keep a pooled session
//! clean: nothing a request runs may leave a transaction open or a setting changed.
//!
//! A transaction (`POST /db/{name}/tx`) owns a session of its own until COMMIT or ROLLBACK.
//! If no request touches it for the idle timeout it is rolled back: a reaper drops it, and
//! a request that names it afterwards learns that it is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_engine::Engine;
use strata_sql::Session;

use crate::error::{RestError, Result};

/// Idle sessions kept per database; more are made when needed and dropped when returned.
const IDLE_PER_DATABASE: usize = 64;

pub struct Sessions {
    engine: Arc<Engine>,
    /// Boxed: a session is kilobytes, and every request moves it out of the pool, through
    /// its handler's future, and back.
    #[allow(clippy::vec_box)]
    idle: Mutex<HashMap<String, Vec<Box<Session>>>>,
    open: Mutex<HashMap<String, Arc<OpenTx>>>,
    idle_timeout: Duration,
}

/// A transaction opened over HTTP.
pub struct OpenTx {
    pub database: String,
    pub session: tokio::sync::Mutex<Session>,
    touched: Mutex<Instant>,
}

impl OpenTx {
    fn touch(&self) {
        *self.touched.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// A pooled session, given back when dropped.
pub struct Pooled<'a> {
    pool: &'a Sessions,
    database: String,
    session: Option<Box<Session>>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // A session left inside a transaction (never by the input rules, but a cancelled
        // request may stop anywhere) is not given to the next request.
        if session.in_transaction() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(std::mem::take(&mut self.database)).or_default();
        if list.len() < IDLE_PER_DATABASE {
            list.push(session);
        }
    }
}

impl Sessions {
    pub fn new(engine: Arc<Engine>, idle_timeout: Duration) -> Arc<Sessions> {
        Arc::new(Sessions {
            engine,
            idle: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            idle_timeout,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A session whose current database is `database` (404 if it does not exist).
    pub async fn session(&self, database: &str) -> Result<Pooled<'_>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(database)
            .and_then(Vec::pop);
        let session = match idle {
            Some(s) => {
                // Reads are strong unless this request asks otherwise.
                s.set_eventual_reads(false);
                s
            }
            None => {
                let mut s = Box::new(Session::new(self.engine.clone()));
                s.set_database(database).await?;
                s
            }
        };
        Ok(Pooled {
            pool: self,
            database: database.to_string(),
            session: Some(session),
        })
    }

    /// Forget the idle sessions of a dropped database.
    pub fn forget(&self, database: &str) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(database);
    }

    /// Open a transaction on `database`; returns its id.
    pub async fn begin(&self, database: &str) -> Result<String> {
        let mut session = Session::new(self.engine.clone());
        session.set_database(database).await?;
        session.execute("BEGIN").await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tx = Arc::new(OpenTx {
            database: database.to_string(),
            session: tokio::sync::Mutex::new(session),
            touched: Mutex::new(Instant::now()),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        Ok(id)
    }

    /// The open transaction `id`, if it has not ended or timed out.
    pub fn transaction(&self, id: &str) -> Result<Arc<OpenTx>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = open.get(id).cloned() else {
            return Err(self.gone(id));
        };
        if tx.idle_for() >= self.idle_timeout {
            open.remove(id);
            return Err(self.gone(id));
        }
        tx.touch();
        Ok(tx)
    }

    /// End transaction `id`: it is no longer found by later requests. Removed under one
    /// lock, so that of two requests ending the same transaction only one gets it.
    pub fn take(&self, id: &str) -> Result<Arc<OpenTx>> {
        let tx = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .ok_or_else(|| self.gone(id))?;
        if tx.idle_for() >= self.idle_timeout {
            return Err(self.gone(id));
        }
        Ok(tx)
    }

    fn gone(&self, id: &str) -> RestError {
        RestError::not_found(format!(
            "transaction {id:?} is not open: it was committed, rolled back, or idle for more \
             than {} ms and rolled back",
            self.idle_timeout.as_millis()
        ))
    }

    /// Roll back the transactions idle past the timeout; returns how many.
    pub fn reap(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let before = open.len();
        open.retain(|_, tx| tx.idle_for() < self.idle_timeout);
        before - open.len()
    }

    /// Transactions open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Roll back idle transactions every so often until `self` is the last holder.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                let n = sessions.reap();
                if n > 0 {
                    tracing::info!(transactions = n, "rolled back idle transactions");
                }
            }
        });
    }
}
