//! # strata-backend-memory
//!
//! The reference backend: each database is a `BTreeMap` behind a read-write lock. Batches
//! apply under the write lock, so they are atomic; nothing survives the process. Used by
//! tests, and by anyone who wants the engine's semantics without a disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use strata_engine::{
    keys_in, show_pairs, Backend, BackendError, BatchOp, Capabilities, Durability, Precondition,
    ReadView, Store,
};

#[derive(Default)]
pub struct MemoryBackend {
    databases: Mutex<HashMap<String, Arc<MemoryStore>>>,
    multi_process: bool,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that several engines in this process share as if they were separate
    /// processes: each learns the others' commits through the store, and a commit applies
    /// only if no other engine committed since (the multi-writer protocol, testable in memory).
    pub fn shared_by_engines() -> Self {
        MemoryBackend {
            databases: Mutex::default(),
            multi_process: true,
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// Up to `limit` entries of `[start, end)` of `map`, copied, in key order or reversed.
fn scan_map(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let range = keys_in(map, start, end);
    let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    if reverse {
        range.rev().take(limit).map(clone).collect()
    } else {
        range.take(limit).map(clone).collect()
    }
}

/// A copy of a database's map, as a [`ReadView`].
struct MemoryView(BTreeMap<Vec<u8>, Vec<u8>>);

#[async_trait::async_trait]
impl ReadView for MemoryView {
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        Ok(scan_map(&self.0, start, end, false, limit))
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn read_view(&self) -> Result<Option<Arc<dyn ReadView>>, BackendError> {
        // Nothing to freeze in place: a copy is the view.
        let map = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Some(Arc::new(MemoryView(map))))
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned())
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(scan_map(&map, start, end, reverse, limit))
    }

    async fn scan_each(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        f: &mut (dyn for<'k, 'v> FnMut(&'k [u8], &'v [u8]) -> bool + Send),
    ) -> Result<usize, BackendError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let pairs = keys_in(&map, start, end).take(limit);
        Ok(show_pairs(
            pairs.map(|(k, v)| (k.as_slice(), v.as_slice())),
            f,
        ))
    }

    async fn apply(
        &self,
        ops: Vec<BatchOp>,
        _d: Durability,
        precondition: Option<Precondition>,
    ) -> Result<(), BackendError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = precondition {
            if map.get(&p.key) != p.expected.as_ref() {
                return Err(BackendError::PreconditionFailed);
            }
        }
        for op in ops {
            match op {
                BatchOp::Put(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory:".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_process: self.multi_process,
            persistent: false,
        }
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let mut dbs = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = dbs.get(name) {
            return Ok(s.clone());
        }
        if !create {
            return Err(BackendError::NotFound);
        }
        let s = Arc::new(MemoryStore::default());
        dbs.insert(name.to_string(), s.clone());
        Ok(s)
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = self
            .databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self
            .databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some())
    }
}
