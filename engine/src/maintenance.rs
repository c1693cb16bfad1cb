//! Maintenance commits: the expiry sweep, garbage collection of history, and the purge of
//! dead letters an operator asks for.
//!
//! Both are ordinary commits through the pipeline, so watchers see swept keys go, and on a
//! shared store both are ordered with every other process's writes by the version record.
//! The collector's horizon — the oldest version a read may ask for — is stored with the
//! collection that passes it, and only ever moves forward.

use crate::error::Result;
use crate::layout::{self, GC, TIMES};
use crate::mvcc::decode;
use crate::pipeline::{CommitReply, Resolved};
use crate::queue::MessageRecord;
use crate::resolve::Resolve;

/// History records one garbage-collection commit removes at most.
const GC_BATCH: usize = 10_000;

/// Dead letters one purge commit removes at most.
pub(crate) const PURGE_BATCH: usize = 1_000;

impl Resolve<'_, '_> {
    pub(crate) async fn sweep(&mut self, items: &[(u64, Vec<u8>)]) -> Result<Resolved> {
        for (t, key) in items {
            let lk = layout::latest(key);
            let cur = match self.ov.get(&lk).await? {
                Some(raw) => Some(decode(&self.shared.name, &raw)?),
                None => None,
            };
            match cur {
                Some(r) if r.expires_at == Some(*t) => {
                    if *t <= self.now {
                        self.write_key(key, None).await?;
                    }
                }
                _ => self.ov.delete(layout::expiry(*t, key)),
            }
        }
        let sequenced = !self.touched.is_empty();
        Ok(Resolved {
            reply: CommitReply::Done,
            sequenced,
        })
    }

    /// Remove the dead letters given up on before `given_up_before`, in the order the queue
    /// gave up on them (their keys hold the commit version), stopping at the first one given
    /// up on later. The payloads written to their dead-letter keys stay.
    pub(crate) async fn purge_dead_letters(&mut self, given_up_before: u64) -> Result<Resolved> {
        let (start, end) = layout::family(layout::DEAD);
        let batch = self.ov.scan(&start, &end, PURGE_BATCH).await?;
        let full = batch.len() == PURGE_BATCH;
        let mut count = 0;
        for (key, raw) in batch {
            let rec = MessageRecord::decode(&raw)
                .ok_or_else(|| self.corrupt("undecodable dead letter"))?;
            if rec.ready_at >= given_up_before {
                return Ok(removed(count, false));
            }
            self.ov.delete(key);
            count += 1;
        }
        Ok(removed(count, full))
    }

    pub(crate) async fn gc(&mut self) -> Result<Resolved> {
        // With other processes sharing the store, their open transactions are unknown here:
        // keep history at least as long as a transaction may live.
        let keep = if self.shared.multi_process {
            self.shared
                .options
                .history_retention_ms
                .max(self.shared.config.transaction_window_ms)
        } else {
            self.shared.options.history_retention_ms
        };
        let cutoff = self.now.saturating_sub(keep);
        let (ts, te) = layout::family(TIMES);
        let times = self.ov.scan(&ts, &te, 4096).await?;
        let mut by_time = None;
        for (k, v) in &times {
            let (Some((version, _)), Some(t)) = (layout::parse_versioned(k), layout::be_u64(v))
            else {
                return Err(self.corrupt("bad commit-time record"));
            };
            if t <= cutoff {
                by_time = Some(version);
            } else {
                break;
            }
        }
        let Some(candidate) = by_time else {
            return Ok(Resolved {
                reply: CommitReply::Done,
                sequenced: false,
            });
        };
        // Never below the horizon another process already collected to.
        let stored = match self.ov.get(layout::META_HORIZON).await? {
            Some(b) => layout::be_u64(&b).unwrap_or(0),
            None => 0,
        };
        let horizon = self.shared.advance_horizon(candidate).max(stored);
        if stored > 0 {
            self.shared.raise_horizon(stored);
        }
        for (k, _) in &times {
            match layout::parse_versioned(k) {
                Some((v, _)) if v < horizon => self.ov.delete(k.clone()),
                _ => break,
            }
        }
        let (ws, we) = layout::int_range(layout::WRITES, 0, horizon);
        let mut write_sets = self.ov.scan(&ws, &we, GC_BATCH).await?;
        if write_sets.len() == GC_BATCH {
            // Never part of one version's write set: a process catching up must find each
            // version's chunks whole, or not at all.
            let last = write_sets
                .last()
                .and_then(|(k, _)| layout::parse_versioned(k))
                .map(|(v, _)| v);
            write_sets.retain(|(k, _)| layout::parse_versioned(k).map(|(v, _)| v) != last);
        }
        for (wk, _) in write_sets {
            self.ov.delete(wk);
        }
        let (gs, ge) = layout::int_range(GC, 0, horizon.saturating_add(1));
        let batch = self.ov.scan(&gs, &ge, GC_BATCH).await?;
        let more = batch.len() == GC_BATCH;
        for (gk, _) in batch {
            if let Some((superseded, key)) = layout::parse_versioned(&gk) {
                self.ov.delete(layout::history(key, superseded));
            }
            self.ov.delete(gk);
        }
        self.horizon = Some(horizon);
        Ok(Resolved {
            reply: CommitReply::More(more),
            sequenced: false,
        })
    }
}

fn removed(count: usize, more: bool) -> Resolved {
    Resolved {
        reply: CommitReply::Removed { count, more },
        sequenced: false,
    }
}
