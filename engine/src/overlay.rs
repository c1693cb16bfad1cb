//! The commit pipeline's view of the store while it resolves a group: the store as applied,
//! plus the batches of the groups before it that are still being applied (the *base*, one
//! sorted batch: see [`stacked`]), plus
//! the writes of commits earlier in the same group, with savepoints so that a commit that
//! fails half-way leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{BatchOp, Store};
use crate::error::Result;

/// A key and what `pending` held for it before a change (`None`: nothing pending).
type UndoRecord = (Vec<u8>, Option<Option<Vec<u8>>>);

pub(crate) struct Overlay<'a> {
    store: &'a dyn Store,
    /// The previous groups' batches, stacked and sorted by key, if the store may not hold
    /// them yet.
    base: Option<Arc<Vec<BatchOp>>>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    undo: Vec<UndoRecord>,
    /// Values read ahead from the store in one request (see [`Overlay::prefetch`]).
    fetched: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Two sorted batches as one: every key of either, with the newer batch's op where both
/// write a key. The base of a group resolved while several groups before it are in flight.
pub(crate) fn stacked(older: &[BatchOp], newer: &[BatchOp]) -> Vec<BatchOp> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut o, mut n) = (older.iter().peekable(), newer.iter().peekable());
    loop {
        let next = match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.key().cmp(b.key()) {
                std::cmp::Ordering::Less => o.next(),
                std::cmp::Ordering::Greater => n.next(),
                std::cmp::Ordering::Equal => {
                    o.next();
                    n.next()
                }
            },
            (Some(_), None) => o.next(),
            (None, Some(_)) => n.next(),
            (None, None) => break,
        };
        out.extend(next.cloned());
    }
    out
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(store: &'a dyn Store, base: Option<Arc<Vec<BatchOp>>>) -> Self {
        Overlay {
            store,
            base,
            pending: BTreeMap::new(),
            undo: Vec::new(),
            fetched: Default::default(),
        }
    }

    /// The base's ops in `[start, end)` (an empty `end` is unbounded).
    fn base_in(&self, start: &[u8], end: &[u8]) -> &[BatchOp] {
        let Some(base) = &self.base else { return &[] };
        let from = base.partition_point(|op| op.key() < start);
        let to = match end.is_empty() {
            true => base.len(),
            false => base.partition_point(|op| op.key() < end),
        };
        &base[from..to.max(from)]
    }

    fn base_get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let base = self.base.as_ref()?;
        let at = base.binary_search_by(|op| op.key().cmp(key)).ok()?;
        Some(base[at].value().map(<[u8]>::to_vec))
    }

    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.base_get(key) {
            return Ok(v);
        }
        if let Some(v) = self.fetched.get(key) {
            return Ok(v.clone());
        }
        Ok(self.store.get(key).await?)
    }

    /// Read these keys from the store in one request, for the `get`s that follow.
    pub(crate) async fn prefetch(&mut self, mut keys: Vec<Vec<u8>>) -> Result<()> {
        // Commits of one group often read the same key (a layer's metadata): fetch it once.
        keys.sort_unstable();
        keys.dedup();
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| {
                !self.pending.contains_key(k)
                    && !self.fetched.contains_key(k)
                    && self.base_get(k).is_none()
            })
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let values = self.store.get_many(&keys).await?;
        self.fetched.extend(keys.into_iter().zip(values));
        Ok(())
    }

    /// Up to `limit` pairs in `[start, end)`, ascending, as the group sees them.
    pub(crate) async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let local: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
            crate::backend::keys_in(&self.pending, start, end).collect();
        let base = self.base_in(start, end);
        let deletes = local.iter().filter(|(_, v)| v.is_none()).count()
            + base.iter().filter(|op| op.value().is_none()).count();
        let stored = self.store.scan(start, end, false, limit + deletes).await?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for op in base {
            match op {
                BatchOp::Put(k, v) => merged.insert(k.clone(), v.clone()),
                BatchOp::Delete(k) => merged.remove(k),
            };
        }
        for (k, v) in local {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn record(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let prev = self.pending.insert(key.to_vec(), value);
        self.undo.push((key.to_vec(), prev));
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.record(&key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.record(&key, None);
    }

    pub(crate) fn savepoint(&self) -> usize {
        self.undo.len()
    }

    pub(crate) fn rollback(&mut self, savepoint: usize) {
        while self.undo.len() > savepoint {
            if let Some((k, prev)) = self.undo.pop() {
                match prev {
                    Some(p) => self.pending.insert(k, p),
                    None => self.pending.remove(&k),
                };
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn into_ops(self) -> Vec<BatchOp> {
        self.pending
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => BatchOp::Put(k, v),
                None => BatchOp::Delete(k),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> BatchOp {
        BatchOp::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn a_stacked_base_keeps_every_key_once_with_the_newer_op() {
        let older = vec![put("a", "1"), put("c", "1"), BatchOp::Delete(b"e".to_vec())];
        let newer = vec![
            put("b", "2"),
            BatchOp::Delete(b"c".to_vec()),
            put("e", "2"),
            put("f", "2"),
        ];
        assert_eq!(
            stacked(&older, &newer),
            vec![
                put("a", "1"),
                put("b", "2"),
                BatchOp::Delete(b"c".to_vec()),
                put("e", "2"),
                put("f", "2"),
            ]
        );
        assert_eq!(stacked(&[], &newer), newer);
        assert_eq!(stacked(&older, &[]), older);
    }
}
