//! Resolving one commit: checks, conflicts, and the key writes it makes, as seen by its group.
//!
//! A [`Resolve`] is one commit's view while its group is being resolved: the store plus the
//! writes of earlier commits in the group (the [`Overlay`]), the version it will commit at,
//! and what it touched. Every kind of commit ends in [`Resolve::write_key`], which keeps the
//! replaced record as history and maintains the expiry index. Maintenance commits (expiry
//! sweep, garbage collection) live in [`crate::maintenance`], restores in [`crate::restore`].

use crate::atomic::{AtomicWrite, Check, CommitOutcome, MutationKind};
use crate::conflict::ConflictTracker;
use crate::database::Shared;
use crate::error::{EngineError, Result};
use crate::feed::{Before, Mark, FEED_OFF};
use crate::layout::{self, Record, READY};
use crate::mvcc::decode;
use crate::overlay::Overlay;
use crate::pipeline::{CommitOp, CommitReply, PendingWrites, Resolved};
use crate::queue::{MessageId, MessageRecord, QueueMessage, DEFAULT_BACKOFF};
use crate::value::{Value, Versionstamp};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// One commit being resolved within its group.
pub(crate) struct Resolve<'o, 's> {
    pub(crate) ov: &'o mut Overlay<'s>,
    pub(crate) shared: &'o Shared,
    pub(crate) version: u64,
    pub(crate) now: u64,
    pub(crate) touched: Vec<Vec<u8>>,
    /// For the change feed: each key's first write in this commit, by its place in
    /// `touched`.
    pub(crate) marks: Vec<Mark>,
    /// Whether the database keeps a change feed (else no marks are made).
    pub(crate) feed: bool,
    pub(crate) deleted: bool,
    pub(crate) queue_changed: bool,
    pub(crate) horizon: Option<u64>,
    /// The group's keys whose latest record a sum wrote, with that record's version.
    pub(crate) summed: &'o mut HashMap<Vec<u8>, u64>,
}

impl Resolve<'_, '_> {
    pub(crate) fn vs(&self) -> Versionstamp {
        Versionstamp::from_version(self.version)
    }

    pub(crate) fn corrupt(&self, detail: &str) -> EngineError {
        EngineError::Corrupt {
            database: self.shared.name.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) async fn resolve(
        &mut self,
        op: &CommitOp,
        conflicts: &ConflictTracker,
        pending: &PendingWrites,
    ) -> Result<Resolved> {
        match op {
            CommitOp::Atomic(w) => self.atomic(w).await,
            CommitOp::Transaction {
                read_version,
                reads,
                writes,
                checks,
                sums,
            } => {
                conflicts.check(*read_version, reads)?;
                if reads.iter().any(|(a, b)| pending.touches(a, b)) {
                    return Err(EngineError::Conflict);
                }
                if !self.failed_checks(checks).await?.is_empty() {
                    return Err(EngineError::CheckFailed);
                }
                let vs = self.vs();
                for (key, w) in writes {
                    let rec = w
                        .as_ref()
                        .map(|(value, expires_at)| Record::new(value.clone(), vs, *expires_at));
                    self.write_key(key, rec).await?;
                }
                for (key, n) in sums {
                    let current = self.current(key).await?;
                    let total = combine_u64(current.as_ref(), "sum", u64::wrapping_add, *n)?;
                    self.write_sum(key, current, total).await?;
                }
                Ok(Resolved {
                    reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
                    sequenced: true,
                })
            }
            CommitOp::Sweep(items) => self.sweep(items).await,
            CommitOp::Lease { max, visibility_ms } => self.lease(*max, *visibility_ms).await,
            CommitOp::Ack { id, lease } => {
                let rec = self.leased(id, *lease).await?;
                self.ov.delete(layout::queue_message(&id.0));
                self.ov.delete(layout::ready(rec.ready_at, &id.0));
                Ok(Resolved {
                    reply: CommitReply::Done,
                    sequenced: true,
                })
            }
            CommitOp::Nack { id, lease } => {
                let mut rec = self.leased(id, *lease).await?;
                self.ov.delete(layout::ready(rec.ready_at, &id.0));
                if rec.may_deliver_again() {
                    let step = rec
                        .backoff
                        .get(rec.attempts.saturating_sub(1) as usize)
                        .copied()
                        .unwrap_or(0);
                    rec.ready_at = self.now.saturating_add(step as u64);
                    rec.lease = 0;
                    self.store_message(id, &rec);
                    self.queue_changed = true;
                } else {
                    self.dead_letter(id, rec).await?;
                }
                Ok(Resolved {
                    reply: CommitReply::Done,
                    sequenced: true,
                })
            }
            CommitOp::Gc => self.gc().await,
            CommitOp::PurgeDeadLetters { given_up_before } => {
                self.purge_dead_letters(*given_up_before).await
            }
            CommitOp::EnableFeed => {
                // Resolved in the pipeline's order: every group sealed after this one
                // records its changes, and none before it did (past this version).
                let from = self.version - 1;
                let shared = self.shared;
                if shared
                    .feed_from
                    .compare_exchange(FEED_OFF, from, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.ov
                        .put(layout::META_FEED.to_vec(), from.to_be_bytes().to_vec());
                }
                Ok(Resolved {
                    reply: CommitReply::Done,
                    sequenced: false,
                })
            }
            CommitOp::CatchUp { .. } => Ok(Resolved {
                reply: CommitReply::Done,
                sequenced: false,
            }),
            CommitOp::Restore {
                entries, messages, ..
            } => self.restore(entries, messages).await,
        }
    }

    /// The live latest record of a key as the group sees it.
    pub(crate) async fn current(&self, key: &[u8]) -> Result<Option<Record>> {
        match self.ov.get(&layout::latest(key)).await? {
            Some(raw) => Ok(Some(decode(&self.shared.name, &raw)?).filter(|r| r.is_live(self.now))),
            None => Ok(None),
        }
    }

    /// The places of the checks that do not hold: each key's live version, as this
    /// commit finds it, against the versionstamp the check expects (`None`: absent).
    async fn failed_checks(&self, checks: &[Check]) -> Result<Vec<usize>> {
        let mut failed = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            if self.current(&c.key).await?.map(|r| r.versionstamp) != c.versionstamp {
                failed.push(i);
            }
        }
        Ok(failed)
    }

    /// Write a sum's total over the key's `current` record. If a sum earlier in the group
    /// wrote that record, the total replaces its value in place, keeping its versionstamp:
    /// one version (and no history) per group for a counter many commits add to. Not while
    /// a change feed is kept, which must see each commit's write.
    async fn write_sum(&mut self, key: &[u8], current: Option<Record>, total: u64) -> Result<()> {
        let summed_here = self.summed.get(key).filter(|_| !self.feed);
        // `summed` may still name a sum whose commit failed later and was undone: the
        // record is then an older one, of another version. (A write that is not a sum
        // takes the key out of `summed`.)
        if let (Some(&v), Some(old)) = (summed_here, current) {
            if old.version() == v {
                let rec = Record::new(Value::u64(total), old.versionstamp, None);
                self.ov.put(layout::latest(key), rec.encode());
                self.touched.push(key.to_vec());
                return Ok(());
            }
        }
        let rec = Record::new(Value::u64(total), self.vs(), None);
        self.write_key(key, Some(rec)).await?;
        self.summed.insert(key.to_vec(), self.version);
        Ok(())
    }

    /// Replace a key's latest record, keeping the replaced one as history.
    pub(crate) async fn write_key(&mut self, key: &[u8], new: Option<Record>) -> Result<()> {
        if !self.summed.is_empty() {
            self.summed.remove(key);
        }
        let lk = layout::latest(key);
        let old = match self.ov.get(&lk).await? {
            Some(raw) => Some((decode(&self.shared.name, &raw)?, raw)),
            None => None,
        };
        if old.is_none() && new.is_none() {
            return Ok(());
        }
        // For the change feed (only while one is kept: this is the commit path): whether
        // this commit wrote the key before, as its record is this commit's or this commit
        // deleted something (perhaps this key) already.
        let earlier = if !self.feed {
            None
        } else if old
            .as_ref()
            .is_some_and(|(r, _)| r.version() == self.version)
            || (old.is_none() && self.deleted)
        {
            let touched = &self.touched;
            self.marks.iter().rposition(|m| touched[m.at] == key)
        } else {
            None
        };
        let rewrite = earlier.is_some();
        if let Some(i) = earlier {
            // Its first write's mark says how the commit found it.
            self.marks[i].after = new.is_some();
        } else if self.feed {
            let before = match &old {
                None => Before::Absent,
                Some((r, _)) if r.is_live(self.now) => Before::Live,
                Some(_) => Before::Expired,
            };
            self.marks.push(Mark {
                at: self.touched.len(),
                before,
                after: new.is_some(),
            });
        }
        if let Some((old, raw)) = &old {
            // A key written twice by one commit keeps only its pre-commit version as history.
            if old.version() != self.version {
                self.ov.put(layout::history(key, self.version), raw.clone());
                self.ov.put(layout::gc(self.version, key), vec![]);
            }
            if let Some(t) = old.expires_at {
                self.ov.delete(layout::expiry(t, key));
            }
        }
        match new {
            Some(r) => {
                if let Some(t) = r.expires_at {
                    self.ov.put(layout::expiry(t, key), vec![]);
                }
                self.ov.put(lk, r.encode());
            }
            None => {
                self.ov.delete(lk);
                self.deleted = true;
            }
        }
        if !rewrite {
            self.touched.push(key.to_vec());
        }
        Ok(())
    }

    async fn atomic(&mut self, w: &AtomicWrite) -> Result<Resolved> {
        let failed = self.failed_checks(&w.checks).await?;
        if !failed.is_empty() {
            return Ok(Resolved {
                reply: CommitReply::Outcome(CommitOutcome::CheckFailed(failed)),
                sequenced: false,
            });
        }
        let vs = self.vs();
        for m in &w.mutations {
            match &m.kind {
                MutationKind::Set { value, expires_at } => {
                    let rec = Record::new(value.clone(), vs, *expires_at);
                    self.write_key(&m.key, Some(rec)).await?;
                }
                MutationKind::Delete => self.write_key(&m.key, None).await?,
                MutationKind::Sum(op) | MutationKind::Min(op) | MutationKind::Max(op) => {
                    let (name, f): (&str, fn(u64, u64) -> u64) = match &m.kind {
                        MutationKind::Sum(_) => ("sum", u64::wrapping_add),
                        MutationKind::Min(_) => ("min", u64::min),
                        _ => ("max", u64::max),
                    };
                    let operand = op.as_u64().ok_or_else(|| {
                        EngineError::InvalidMutation(format!(
                            "Failed to perform '{name}' mutation on a non-U64 operand"
                        ))
                    })?;
                    let current = self.current(&m.key).await?;
                    let result = combine_u64(current.as_ref(), name, f, operand)?;
                    let rec = Record::new(Value::u64(result), vs, None);
                    self.write_key(&m.key, Some(rec)).await?;
                }
                MutationKind::SetVersionstampedKey {
                    value,
                    expires_at,
                    suffix,
                } => {
                    let mut key = m.key.clone();
                    suffix.append(&mut key, vs);
                    let rec = Record::new(value.clone(), vs, *expires_at);
                    self.write_key(&key, Some(rec)).await?;
                }
            }
        }
        let now = self.now;
        self.store_new_messages(w.enqueues.iter().map(|e| {
            MessageRecord {
                ready_at: e.deliver_at.max(now),
                attempts: 0,
                lease: 0,
                payload: e.payload.clone(),
                dead_letter_keys: e.dead_letter_keys.clone(),
                backoff: e
                    .backoff_schedule
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKOFF.to_vec()),
            }
        }));
        Ok(Resolved {
            reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
            sequenced: true,
        })
    }

    /// A message's record and its entry in the ready index.
    fn store_message(&mut self, id: &MessageId, rec: &MessageRecord) {
        self.ov.put(layout::ready(rec.ready_at, &id.0), vec![]);
        self.ov.put(layout::queue_message(&id.0), rec.encode());
    }

    /// Messages this commit adds: each is named by the commit's versionstamp and its index.
    pub(crate) fn store_new_messages(&mut self, records: impl Iterator<Item = MessageRecord>) {
        let vs = self.vs();
        for (i, rec) in records.enumerate() {
            self.store_message(&MessageId::new(vs, i as u16), &rec);
            self.queue_changed = true;
        }
    }

    async fn leased(&self, id: &MessageId, lease: u64) -> Result<MessageRecord> {
        let raw = self.ov.get(&layout::queue_message(&id.0)).await?;
        let rec = match raw {
            Some(raw) => MessageRecord::decode(&raw)
                .ok_or_else(|| self.corrupt("undecodable queue message"))?,
            None => return Err(EngineError::LeaseLost(id.to_hex())),
        };
        if rec.lease != lease || lease == 0 {
            return Err(EngineError::LeaseLost(id.to_hex()));
        }
        Ok(rec)
    }

    /// A restored dead letter, the `i`th message of this commit.
    pub(crate) fn restore_dead_letter(&mut self, i: usize, rec: MessageRecord) {
        let id = MessageId::new(self.vs(), i as u16);
        self.ov
            .put(layout::dead_letter(self.version, &id.0), rec.encode());
    }

    pub(crate) async fn dead_letter(&mut self, id: &MessageId, rec: MessageRecord) -> Result<()> {
        let vs = self.vs();
        for k in &rec.dead_letter_keys {
            let r = Record::new(rec.payload.clone(), vs, None);
            self.write_key(k, Some(r)).await?;
        }
        self.ov.delete(layout::queue_message(&id.0));
        // Kept so that an operator can see what failed, how often, and where it went.
        let logged = MessageRecord {
            ready_at: self.now,
            lease: 0,
            ..rec
        };
        self.ov
            .put(layout::dead_letter(self.version, &id.0), logged.encode());
        tracing::debug!(database = %self.shared.name, message = %id, "queue message dead-lettered");
        Ok(())
    }

    async fn lease(&mut self, max: usize, visibility_ms: u64) -> Result<Resolved> {
        let (start, end) = layout::int_range(READY, 0, self.now + 1);
        let due = self
            .ov
            .scan(&start, &end, max.saturating_mul(2).max(1))
            .await?;
        let mut out = Vec::new();
        let mut wrote = false;
        for (rk, _) in due {
            if out.len() >= max {
                break;
            }
            let Some((ready_at, id_bytes)) = layout::parse_versioned(&rk) else {
                continue;
            };
            let Ok(id) = <[u8; 12]>::try_from(id_bytes).map(MessageId) else {
                self.ov.delete(rk);
                continue;
            };
            self.ov.delete(rk.clone());
            wrote = true;
            let raw = self.ov.get(&layout::queue_message(&id.0)).await?;
            let Some(mut rec) = raw.and_then(|r| MessageRecord::decode(&r)) else {
                continue;
            };
            if rec.ready_at != ready_at {
                // A stale index entry; the record's own entry is elsewhere.
                self.ov.put(layout::ready(rec.ready_at, &id.0), vec![]);
                continue;
            }
            if !rec.may_deliver_again() {
                self.dead_letter(&id, rec).await?;
                continue;
            }
            rec.attempts += 1;
            rec.lease = self.version;
            rec.ready_at = self.now.saturating_add(visibility_ms);
            self.store_message(&id, &rec);
            out.push(QueueMessage {
                id,
                payload: rec.payload.clone(),
                attempt: rec.attempts,
                lease: rec.lease,
                lease_expires_at: rec.ready_at,
            });
        }
        Ok(Resolved {
            reply: CommitReply::Leased(out),
            sequenced: wrote,
        })
    }
}

/// `f(stored, operand)` for the u64 in the key's `current` record as the commit lands
/// (`operand` where there is none); `name` names the operation in the error for a value of
/// another kind.
fn combine_u64(
    current: Option<&Record>,
    name: &str,
    f: fn(u64, u64) -> u64,
    operand: u64,
) -> Result<u64> {
    Ok(match current {
        None => operand,
        Some(r) => f(r.value.as_u64().ok_or_else(|| not_u64(name))?, operand),
    })
}

/// A `sum`, `min` or `max` (`name`) onto a stored value that is not a u64.
pub(crate) fn not_u64(name: &str) -> EngineError {
    EngineError::InvalidMutation(format!(
        "Failed to perform '{name}' mutation on a non-U64 value in the database"
    ))
}
