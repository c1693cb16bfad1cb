//! Several processes committing to one shared store (DynamoDB, or memory shared by engines).
//!
//! Each process runs its own pipeline. What keeps them one strictly serializable database:
//!
//! * **The version record orders every write.** Each group's batch is conditioned on the
//!   version record still holding what this process last saw (or, with several groups in
//!   flight, what the group before it writes), and moves it to the group's last version,
//!   naming the group by its token. A process that lost the race learns the winners' commits
//!   ([`Pipeline::catch_up`]) and resolves its group again.
//! * **Write sets.** Each batch also stores the keys it wrote under `w` version, with the
//!   group's token, so that others can check conflicts, wake watchers and learn of deletes.
//! * **Commits in doubt are settled, never applied twice.** When a batch's answer is lost
//!   (a dropped connection, a retried request whose retry then fails its condition), the
//!   pipeline reads the version record and the write set at its own version: carrying its
//!   own token, the batch applied; written by someone else, it never can; unchanged, the same
//!   batch is sent again (only one copy can ever apply). If the store cannot be asked, the
//!   commit fails with [`EngineError::CommitResultUnknown`] rather than a retryable error.

use std::sync::atomic::Ordering;

use crate::backend::BackendError;
use crate::error::{EngineError, Result};
use crate::feed::WriteRecord;
use crate::layout;
use crate::log::LogEntry;
use crate::mvcc::Cursor;
use crate::pipeline::Pipeline;

/// How many times a batch whose answer was lost is sent again before the commit is reported
/// as in doubt.
const RESEND_ATTEMPTS: u32 = 4;

/// A random token naming one group's batch in its write set.
pub(crate) fn group_token() -> u64 {
    let t = uuid::Uuid::new_v4().as_u64_pair().0;
    t.max(1)
}

/// What became of a batch sent to a shared store.
pub(crate) enum Settled {
    Applied,
    /// It did not apply and never will: another process took its version.
    NotApplied,
    /// It failed for a reason that is not about other writers.
    Failed(EngineError),
    /// It may or may not have applied, and the store cannot tell now.
    Unknown(EngineError),
}

impl Pipeline {
    /// Learn what other processes committed since the version this process knows: their
    /// written keys (for conflict checks and watchers) and the new head version.
    pub(crate) async fn catch_up(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let store = shared.store.clone();
        let record = store.get(layout::META_VERSION).await?;
        let head = match &record {
            Some(b) => layout::record_version(b).ok_or_else(|| EngineError::Corrupt {
                database: shared.name.clone(),
                detail: "bad version record".into(),
            })?,
            None => 0,
        };
        let known = *shared.applied.borrow();
        if head <= known {
            if record.is_some() {
                self.stored = record;
            }
            return Ok(());
        }
        let (s, e) = layout::int_range(layout::WRITES, known + 1, head.saturating_add(1));
        let mut cursor = Cursor::new(&*store, s, e, false, 256);
        let mut touched = Vec::new();
        let mut queue_changed = false;
        let mut covered_from = None;
        while let Some((k, v)) = cursor.next().await? {
            let Some((version, _)) = layout::parse_versioned(&k) else {
                continue;
            };
            let Some(rec) = WriteRecord::decode(&v, version) else {
                return Err(EngineError::Corrupt {
                    database: shared.name.clone(),
                    detail: "bad write record".into(),
                });
            };
            covered_from = covered_from.or(Some(rec.first_version));
            if rec.deleted {
                shared.last_delete.fetch_max(version, Ordering::SeqCst);
            }
            queue_changed |= rec.queue_changed;
            let keys: Vec<Vec<u8>> = rec.entries.into_iter().map(|w| w.key).collect();
            self.conflicts.record(version, keys.clone());
            touched.extend(keys);
        }
        if covered_from.is_none_or(|f| f > known + 1) {
            // Some commits' write sets are gone (garbage-collected): nothing older can be
            // checked for conflicts, and any of them may have deleted keys.
            self.conflicts.forget_before(head);
            shared.last_delete.fetch_max(head, Ordering::SeqCst);
        }
        self.next_version = self.next_version.max(head.saturating_add(1));
        self.stored = record;
        shared.applied.send_replace(head);
        shared.publish(&touched, queue_changed);
        Ok(())
    }

    /// Append a group's batch to a shared store, settling a lost answer (see the module docs).
    pub(crate) async fn append_shared(
        &mut self,
        entry: LogEntry,
        token: u64,
        last_version: u64,
    ) -> Settled {
        let first = self.shared.log.append(entry.clone()).await;
        self.settle_shared(entry, token, last_version, first).await
    }

    /// What became of a batch sent once with answer `first`, sending the same batch again
    /// while nothing has applied at its version (see the module docs).
    pub(crate) async fn settle_shared(
        &self,
        entry: LogEntry,
        token: u64,
        last_version: u64,
        first: Result<()>,
    ) -> Settled {
        let expected = entry.precondition.as_ref().and_then(|p| p.expected.clone());
        let mut sent = 1;
        let mut outcome = first;
        loop {
            let err = match outcome {
                Ok(()) => return Settled::Applied,
                Err(e) => e,
            };
            let in_doubt = matches!(&err, EngineError::Backend(b) if b.is_transient());
            if !in_doubt {
                // After an earlier send was in doubt, that send may still apply.
                return if sent > 1 {
                    Settled::Unknown(err)
                } else {
                    Settled::Failed(err)
                };
            }
            match self
                .own_batch_applied(token, last_version, expected.as_deref())
                .await
            {
                Ok(Some(true)) => return Settled::Applied,
                Ok(Some(false)) => return Settled::NotApplied,
                Ok(None) if sent < RESEND_ATTEMPTS => {
                    // Nothing applied at our version yet: the same batch, conditioned on the
                    // same version record, may be sent again.
                    let pause = 20u64 << sent;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Ok(None) => return Settled::Unknown(err),
                Err(check) => {
                    return Settled::Unknown(EngineError::Backend(BackendError::Unavailable(
                        format!("{err}; then checking whether it applied failed: {check}"),
                    )))
                }
            }
            sent += 1;
            outcome = self.shared.log.append(entry.clone()).await;
        }
    }

    /// Whether this process's batch with `token` holds `last_version`: `Some(true)` it does,
    /// `Some(false)` another process's batch moved the version record, `None` the record
    /// still holds what the batch expected (nothing applied yet).
    async fn own_batch_applied(
        &self,
        token: u64,
        last_version: u64,
        expected: Option<&[u8]>,
    ) -> Result<Option<bool>> {
        let store = &self.shared.store;
        if store.get(layout::META_VERSION).await?.as_deref() == expected {
            return Ok(None);
        }
        let own = match store.get(&layout::writes(last_version, 0)).await? {
            Some(raw) => WriteRecord::decode(&raw, last_version).is_some_and(|r| r.token == token),
            None => false,
        };
        Ok(Some(own))
    }
}
