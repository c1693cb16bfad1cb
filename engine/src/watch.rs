//! Watches: a set of keys whose entries are returned first as they are, then again after
//! every change to any of them — writes, deletes, and expiry (from the deadline on, without
//! waiting for the sweeper).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::database::{Database, ReadAt};
use crate::error::{EngineError, Result};
use crate::value::{Entry, Versionstamp};

pub struct Watch {
    db: Database,
    keys: Vec<Vec<u8>>,
    notify: Arc<Notify>,
    last: Option<Vec<Option<Versionstamp>>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("database", &self.db.name())
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Watch {
    pub(crate) fn new(db: Database, keys: Vec<Vec<u8>>) -> Self {
        let notify = Arc::new(Notify::new());
        {
            let mut w = db.shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
            for k in &keys {
                w.entry(k.clone())
                    .or_default()
                    .push(Arc::downgrade(&notify));
            }
        }
        Watch {
            db,
            keys,
            notify,
            last: None,
        }
    }

    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The watched keys' entries: at once the first time, afterwards once any changed.
    pub async fn next(&mut self) -> Result<Vec<Option<Entry>>> {
        let mut shutdown = self.db.shutdown_signal();
        loop {
            let entries = self.db.get_many(&self.keys, ReadAt::Latest).await?;
            let stamps: Vec<Option<Versionstamp>> = entries
                .iter()
                .map(|e| e.as_ref().map(|e| e.versionstamp))
                .collect();
            if self.last.as_ref() != Some(&stamps) {
                self.last = Some(stamps);
                return Ok(entries);
            }
            let next_expiry = entries.iter().flatten().filter_map(|e| e.expires_at).min();
            let sleep = match next_expiry {
                Some(t) => Duration::from_millis(t.saturating_sub(now_ms()) + 1),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|s| *s) => return Err(EngineError::ShuttingDown),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = self
            .db
            .shared
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            if let Some(list) = w.get_mut(k) {
                list.retain(|n| n.upgrade().is_some_and(|n| !Arc::ptr_eq(&n, &self.notify)));
                if list.is_empty() {
                    w.remove(k);
                }
            }
        }
    }
}
