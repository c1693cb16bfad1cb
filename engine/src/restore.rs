//! Restoring entries exactly as another store held them (copies and imports).
//!
//! A restore writes keys with the versionstamps their source gave them, in one commit whose
//! version is newer than every one of them (so no versionstamp is ever handed out twice).
//! The past never changes: a restored record is visible only from the restore commit on
//! ([`Record::visible_at`]), so reads at older versions see what they always saw. Every
//! version a restore names is validated before it reaches the pipeline: a malformed source
//! is a clear error with nothing written.

use crate::error::{EngineError, Result};
use crate::layout::Record;
use crate::pipeline::{CommitReply, Resolved};
use crate::queue::{MessageRecord, RestoreMessage};
use crate::resolve::Resolve;
use crate::value::Entry;
use crate::CommitOutcome;

/// The largest version a restore may carry: versions must leave room to count up past them
/// (2^32 commits), also in a copy of a database that was itself restored near the top.
/// Importers of sources with signed versions refuse negative ones before they get here.
pub const MAX_RESTORED_VERSION: u64 = u64::MAX - (1 << 32);

/// Refuse versions no source can have handed out: zero (no commit has it) and anything
/// beyond [`MAX_RESTORED_VERSION`] (such as a negative source version read as unsigned).
pub(crate) fn validate(entries: &[Entry], newer_than: u64) -> Result<()> {
    if newer_than > MAX_RESTORED_VERSION {
        return Err(EngineError::InvalidRequest(format!(
            "restore: source version {newer_than} is out of range (at most {MAX_RESTORED_VERSION})"
        )));
    }
    for e in entries {
        let v = e.versionstamp.version();
        if v == 0 || v > MAX_RESTORED_VERSION {
            return Err(EngineError::InvalidRequest(format!(
                "restore: key {:?} has versionstamp version {v}, out of range (1 to {MAX_RESTORED_VERSION})",
                String::from_utf8_lossy(&e.key)
            )));
        }
    }
    Ok(())
}

impl Resolve<'_, '_> {
    pub(crate) async fn restore(
        &mut self,
        entries: &[Entry],
        messages: &[RestoreMessage],
    ) -> Result<Resolved> {
        for e in entries {
            // Restored records keep their versionstamps but are visible only from this
            // commit on: reads at older versions never change.
            let rec = Record {
                visible_at: Some(self.version),
                ..Record::new(e.value.clone(), e.versionstamp, e.expires_at)
            };
            self.write_key(&e.key, Some(rec)).await?;
        }
        let vs = self.vs();
        let record = |m: &RestoreMessage, ready_at| MessageRecord {
            ready_at,
            attempts: m.attempts,
            lease: 0,
            payload: m.payload.clone(),
            dead_letter_keys: m.dead_letter_keys.clone(),
            backoff: m.backoff_schedule.clone(),
        };
        let queued = messages.iter().filter(|m| m.given_up_at.is_none());
        self.store_new_messages(queued.clone().map(|m| record(m, m.ready_at)));
        // Dead letters stay dead letters, in their order, after the queued ones' ids.
        let first = queued.count();
        for (i, (m, at)) in messages
            .iter()
            .filter_map(|m| m.given_up_at.map(|at| (m, at)))
            .enumerate()
        {
            self.restore_dead_letter(first + i, record(m, at));
        }
        Ok(Resolved {
            reply: CommitReply::Outcome(CommitOutcome::Committed(vs)),
            sequenced: true,
        })
    }
}
