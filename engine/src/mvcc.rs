//! Reading a database at a version.
//!
//! The newest version of every key lives under `l` key (see [`crate::layout`]); each version a
//! commit replaced lives under `h` key superseded-version. So the state of a key at version
//! `v` is its latest record if that record's version is `<= v`; otherwise the first history
//! record superseded after `v`, if that record's own version is `<= v`; otherwise the key did
//! not exist at `v`.
//!
//! A key that is absent from `l` may still have existed at `v` (deleted later). Such reads
//! are *precise* and also walk history. Reads at the newest version skip that walk when no
//! commit newer than `v` reached the store while they ran — the reader checks the pipeline's
//! in-flight version after reading ([`crate::database`]) and reads again precisely if it moved.

use std::collections::VecDeque;

use crate::backend::Store;
use crate::error::{EngineError, Result};
use crate::layout::{self, Record};
use crate::txn::Visitor;

/// A chunked, ordered walk over one backend range.
pub(crate) struct Cursor<'a> {
    store: &'a dyn Store,
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    chunk: usize,
    buf: VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(
        store: &'a dyn Store,
        start: Vec<u8>,
        end: Vec<u8>,
        reverse: bool,
        first_chunk: usize,
    ) -> Self {
        Cursor {
            store,
            start,
            end,
            reverse,
            chunk: first_chunk.clamp(1, 4096),
            buf: VecDeque::new(),
            done: false,
        }
    }

    async fn fill(&mut self) -> Result<()> {
        if !self.buf.is_empty() || self.done {
            return Ok(());
        }
        if self.start >= self.end {
            self.done = true;
            return Ok(());
        }
        let items = self
            .store
            .scan(&self.start, &self.end, self.reverse, self.chunk)
            .await?;
        if items.len() < self.chunk {
            self.done = true;
        }
        if let Some((last, _)) = items.last() {
            if self.reverse {
                self.end = last.clone();
            } else {
                let mut next = last.clone();
                next.push(0);
                self.start = next;
            }
        }
        self.buf.extend(items);
        self.chunk = (self.chunk * 2).min(4096);
        Ok(())
    }

    pub(crate) async fn peek(&mut self) -> Result<Option<&(Vec<u8>, Vec<u8>)>> {
        self.fill().await?;
        Ok(self.buf.front())
    }

    pub(crate) async fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.fill().await?;
        Ok(self.buf.pop_front())
    }
}

pub(crate) fn decode(db: &str, raw: &[u8]) -> Result<Record> {
    Record::decode(raw).ok_or_else(|| EngineError::Corrupt {
        database: db.to_string(),
        detail: "undecodable record".into(),
    })
}

pub(crate) fn decode_owned(db: &str, raw: Vec<u8>) -> Result<Record> {
    Record::decode_owned(raw).ok_or_else(|| EngineError::Corrupt {
        database: db.to_string(),
        detail: "undecodable record".into(),
    })
}

/// The record of `key` that was newest at version `v`, given the key's latest record.
pub(crate) async fn at_version(
    store: &dyn Store,
    db: &str,
    key: &[u8],
    latest: Option<Record>,
    v: u64,
    precise: bool,
) -> Result<Option<Record>> {
    match latest {
        Some(r) if r.version() <= v => return Ok(Some(r)),
        None if !precise => return Ok(None),
        _ => {}
    }
    let start = layout::history(key, v.saturating_add(1));
    let mut end = layout::history_prefix(key);
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    let found = store.scan(&start, &end, false, 1).await?;
    match found.first() {
        Some((_, raw)) => {
            let r = decode(db, raw)?;
            Ok((r.version() <= v).then_some(r))
        }
        None => Ok(None),
    }
}

/// A point read at version `v`.
pub(crate) async fn get(
    store: &dyn Store,
    db: &str,
    key: &[u8],
    v: u64,
    precise: bool,
    now: u64,
) -> Result<Option<Record>> {
    let latest = match store.get(&layout::latest(key)).await? {
        Some(raw) => Some(decode_owned(db, raw)?),
        None => None,
    };
    let r = at_version(store, db, key, latest, v, precise).await?;
    Ok(r.filter(|r| r.is_live(now)))
}

/// Point reads of several keys at version `v`: their newest records in one store request,
/// then history for the few that are newer than `v`.
pub(crate) async fn get_many(
    store: &dyn Store,
    db: &str,
    keys: &[Vec<u8>],
    v: u64,
    precise: bool,
    now: u64,
) -> Result<Vec<Option<Record>>> {
    let latest_keys: Vec<Vec<u8>> = keys.iter().map(|k| layout::latest(k)).collect();
    let found = store.get_many(&latest_keys).await?;
    let mut out = Vec::with_capacity(keys.len());
    for (key, raw) in keys.iter().zip(found) {
        let latest = match raw {
            Some(raw) => Some(decode_owned(db, raw)?),
            None => None,
        };
        let r = at_version(store, db, key, latest, v, precise).await?;
        out.push(r.filter(|r| r.is_live(now)));
    }
    Ok(out)
}

/// History lookups one fast scan makes, one per key newer than the read version, before it
/// reads the range precisely instead (one history range read per chunk of keys). Bounds what
/// a latest-version scan costs while many of its keys are being rewritten.
pub const MAX_HISTORY_LOOKUPS: usize = 8;

/// Entries a visiting scan asks the store for at a time.
const VISIT_CHUNK: usize = 4096;

/// The first key after `key`.
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// A forward range read `[start, end)` at version `v` that shows each live entry to
/// `visitor` in key order, borrowed from the store where the store lends it. Returns the
/// key to resume from when the visitor stopped early, `None` when the range is done.
///
/// Keys newer than `v` are resolved one by one from history, as in [`scan`]; after
/// [`MAX_HISTORY_LOOKUPS`] of them, or from the start when `precise`, the rest of the range is
/// read precisely. Entries already shown stay valid either way: each was resolved at `v`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan_each(
    store: &dyn Store,
    db: &str,
    start: &[u8],
    end: &[u8],
    v: u64,
    precise: bool,
    now: u64,
    visitor: &mut dyn Visitor,
) -> Result<Option<Vec<u8>>> {
    if crate::backend::range_is_empty(start, end) {
        return Ok(None);
    }
    let mut from = start.to_vec();
    let mut lookups = 0;
    if !precise {
        let hi = layout::latest_end(end);
        let mut lo = layout::latest(start);
        // The latest-family key the walk stopped at, or the last of a full chunk: where it
        // resumes (reused, and copied only then, not for every entry).
        let mut last: Vec<u8> = Vec::new();
        loop {
            let mut newer: Option<Vec<u8>> = None;
            let mut corrupt = false;
            let mut stopped = false;
            let mut seen = 0;
            let shown = store
                .scan_each(&lo, &hi, VISIT_CHUNK, &mut |k, raw| {
                    seen += 1;
                    let go_on = match Record::peek(raw, now) {
                        None => {
                            corrupt = true;
                            false
                        }
                        Some(rec) if rec.version > v => {
                            newer = Some(raw.to_vec());
                            false
                        }
                        Some(rec) if !rec.live => true,
                        Some(rec) => {
                            stopped = !visitor.visit(&k[1..], rec.value);
                            !stopped
                        }
                    };
                    if !go_on || seen == VISIT_CHUNK {
                        last.clear();
                        last.extend_from_slice(k);
                    }
                    go_on
                })
                .await?;
            if corrupt {
                return Err(EngineError::Corrupt {
                    database: db.to_string(),
                    detail: "undecodable record".into(),
                });
            }
            let key = last.get(1..).unwrap_or_default();
            if stopped {
                return Ok(Some(key_after(key)));
            }
            if let Some(raw) = newer {
                lookups += 1;
                if lookups > MAX_HISTORY_LOOKUPS {
                    from = key.to_vec();
                    break;
                }
                let key = key.to_vec();
                let rec = decode_owned(db, raw)?;
                let rec = at_version(store, db, &key, Some(rec), v, false).await?;
                if let Some(rec) = rec.filter(|r| r.is_live(now)) {
                    if !visitor.visit(&key, rec.value.as_ref()) {
                        return Ok(Some(key_after(&key)));
                    }
                }
                lo = layout::latest(&key_after(&key));
                continue;
            }
            if shown < VISIT_CHUNK {
                return Ok(None);
            }
            lo = last.clone();
            lo.push(0);
        }
    }
    // Precise: chunks of the merged read, shown one by one.
    loop {
        let chunk = scan(store, db, &from, end, false, VISIT_CHUNK, v, true, now).await?;
        for (key, rec) in &chunk {
            if !visitor.visit(key, rec.value.as_ref()) {
                return Ok(Some(key_after(key)));
            }
        }
        match chunk.last() {
            Some((key, _)) if chunk.len() == VISIT_CHUNK => from = key_after(key),
            _ => return Ok(None),
        }
    }
}

/// A range read `[start, end)` at version `v`: up to `limit` live entries, in key order (or
/// reverse key order).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan(
    store: &dyn Store,
    db: &str,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
    v: u64,
    precise: bool,
    now: u64,
) -> Result<Vec<(Vec<u8>, Record)>> {
    let mut out = Vec::new();
    if limit == 0 || crate::backend::range_is_empty(start, end) {
        return Ok(out);
    }
    if !precise {
        let mut latest = Cursor::new(
            store,
            layout::latest(start),
            layout::latest_end(end),
            reverse,
            limit,
        );
        let mut lookups = 0;
        while out.len() < limit {
            let Some((mut key, raw)) = latest.next().await? else {
                return Ok(out);
            };
            key.remove(0);
            let rec = decode_owned(db, raw)?;
            if rec.version() > v {
                lookups += 1;
                if lookups > MAX_HISTORY_LOOKUPS {
                    break;
                }
            }
            let rec = at_version(store, db, &key, Some(rec), v, false).await?;
            if let Some(rec) = rec.filter(|r| r.is_live(now)) {
                out.push((key, rec));
            }
        }
        if out.len() >= limit {
            return Ok(out);
        }
        // Too many keys newer than `v`: read the range precisely, merging history by range.
        out.clear();
    }

    // Precise: merge the latest family with the history family, key by key. Each round reads a
    // chunk of latest records first, then every history record of the keys that chunk spans.
    // History only grows at the top (a commit adds records superseded at versions above all
    // existing ones), so a history read taken after the latest read can only add candidates
    // that no read at `v` needs: the pairing stays exact even while commits land.
    let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
    let mut chunk = limit.clamp(1, 4096);
    while out.len() < limit {
        let mut latest: VecDeque<(Vec<u8>, Vec<u8>)> = store
            .scan(
                &layout::latest(&lo),
                &layout::latest_end(&hi),
                reverse,
                chunk,
            )
            .await?
            .into();
        let done = latest.len() < chunk;
        chunk = (chunk * 2).min(4096);
        // The user keys this round covers: [wlo, whi).
        let (wlo, whi) = match (done, latest.back()) {
            (false, Some((last, _))) => {
                let last = last[1..].to_vec();
                if reverse {
                    (last, hi.clone())
                } else {
                    let mut after = last;
                    after.push(0);
                    (lo.clone(), after)
                }
            }
            _ => (lo.clone(), hi.clone()),
        };
        let (hs, he) = layout::history_range(&wlo, &whi);
        let mut history = Cursor::new(store, hs, he, reverse, 64);
        while out.len() < limit {
            let next_latest = latest.front().map(|(k, _)| k[1..].to_vec());
            let next_hist = match history.peek().await? {
                Some((k, _)) => Some(
                    layout::parse_history(k)
                        .ok_or_else(|| EngineError::Corrupt {
                            database: db.into(),
                            detail: "bad history key".into(),
                        })?
                        .0,
                ),
                None => None,
            };
            let key = match (next_latest, next_hist) {
                (None, None) => break,
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (Some(a), Some(b)) => {
                    if (a <= b) != reverse || a == b {
                        a
                    } else {
                        b
                    }
                }
            };
            let mut latest_rec = None;
            if latest.front().is_some_and(|(k, _)| k[1..] == key[..]) {
                if let Some((_, raw)) = latest.pop_front() {
                    latest_rec = Some(decode(db, &raw)?);
                }
            }
            // The history record newest at v: the one with the smallest superseded version > v.
            let mut candidate: Option<(u64, Vec<u8>)> = None;
            while let Some((k, _)) = history.peek().await? {
                let Some((hk, superseded)) = layout::parse_history(k) else {
                    break;
                };
                if hk != key {
                    break;
                }
                let (_, raw) = history.next().await?.unwrap_or_default();
                if superseded > v && candidate.as_ref().is_none_or(|(s, _)| superseded < *s) {
                    candidate = Some((superseded, raw));
                }
            }
            let state = match latest_rec {
                Some(r) if r.version() <= v => Some(r),
                _ => match candidate {
                    Some((_, raw)) => Some(decode(db, &raw)?).filter(|r| r.version() <= v),
                    None => None,
                },
            };
            if let Some(rec) = state.filter(|r| r.is_live(now)) {
                out.push((key, rec));
            }
        }
        if done {
            break;
        }
        if reverse {
            hi = wlo;
        } else {
            lo = whi;
        }
    }
    Ok(out)
}
