//! Change events: what happened to the records of one tree, or of every tree, in commit
//! order, each once, resumable from a [`Cursor`].
//!
//! Events are read from the engine's change feed ([`strata_engine::Database::changes`]),
//! which every typed write turns on for its database. A record key written by a commit is
//! an event for that record's revision; a check-out record written by a commit is an event
//! when who holds the record (or until when) changed. Index entries, id counters and the
//! like are not events.
//!
//! A subscriber keeps the [`Cursor`] of the last event it handled, and after a restart or a
//! reconnect subscribes from it: it receives exactly the events after it. The feed keeps
//! as much as the database's history retention window; a subscriber further behind gets
//! [`strata_engine::EngineError::ChangesTruncated`] and starts again from the current
//! state.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use strata_engine::{Change, ChangeKind, Database, EngineError, ReadAt};

use crate::checkout::LeaseRecord;
use crate::layout::{self, Kind};
use crate::{Error, Key, Record, Result};

/// Changes read from the feed per request.
const PAGE: usize = 512;

/// Where a subscriber stands: after the first `within` events of commit `version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub version: u64,
    pub within: u32,
}

impl Cursor {
    /// Before everything committed after `version` (a database's version when a subscriber
    /// reads its initial state, say).
    pub fn after(version: u64) -> Self {
        Cursor { version, within: 0 }
    }
}

/// `version.within`, as a subscriber stores it.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.version, self.within)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadCursor(s.to_string());
        let (v, w) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            version: v.parse().map_err(|_| bad())?,
            within: w.parse().map_err(|_| bad())?,
        })
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A record (or, in a versioned tree, a new draft revision) was inserted.
    Created { revision: u32 },
    /// A record's value was changed.
    Changed { revision: u32 },
    /// A record was removed.
    Removed { revision: u32 },
    /// A revision was released: it never changes again.
    Released { revision: u32 },
    /// The record's check-out changed hands (or its lease was renewed): `None` when nobody
    /// holds it any more.
    CheckOut {
        holder: Option<String>,
        until_ms: u64,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The commit's version.
    pub version: u64,
    /// Store this to resume after this event.
    pub cursor: Cursor,
    pub tree: String,
    pub id: u64,
    pub kind: EventKind,
}

impl Event {
    /// The record's key, if this event is about a record of `T`.
    pub fn key<T: Record>(&self) -> Option<Key<T>> {
        if self.tree != T::TREE {
            return None;
        }
        match self.kind {
            EventKind::Created { revision }
            | EventKind::Changed { revision }
            | EventKind::Removed { revision }
            | EventKind::Released { revision } => Some(Key::new(self.id, revision)),
            EventKind::CheckOut { .. } => None,
        }
    }
}

/// A subscription: [`Events::next`] waits for the next event.
pub struct Events {
    db: Database,
    /// One tree's events, or every tree's.
    tree: Option<String>,
    /// The feed has been read through this version.
    read_through: u64,
    /// Events read and not yet handed out.
    pending: VecDeque<Event>,
    /// Where the subscriber resumed: events up to it are not handed out again.
    start: Cursor,
}

impl Events {
    /// Every tree's events after `from`.
    pub fn all(db: Database, from: Cursor) -> Self {
        Self::new(db, None, from)
    }

    pub(crate) fn new(db: Database, tree: Option<String>, from: Cursor) -> Self {
        Events {
            db,
            tree,
            read_through: from.version.saturating_sub(u64::from(from.within > 0)),
            pending: VecDeque::new(),
            start: from,
        }
    }

    /// The next event, waiting for one to be committed.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(e) = self.try_next().await? {
                return Ok(e);
            }
            self.db.wait_for_version(self.read_through + 1).await?;
        }
    }

    /// The next event if one is committed, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<Event>> {
        ensure_feed(&self.db).await?;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let page = self.db.changes(self.read_through, PAGE).await?;
            let caught_up = page.changes.is_empty();
            self.take(page.changes).await?;
            self.read_through = page.through;
            if caught_up {
                return Ok(None);
            }
        }
    }

    /// Turn a page of changes into events, numbering each within its commit. All or
    /// nothing: a page that fails is read again whole.
    async fn take(&mut self, changes: Vec<Change>) -> Result<()> {
        let mut page = Vec::new();
        let mut within = None::<(u64, u32)>;
        for c in changes {
            let Some(parsed) = layout::parse_any(&c.key) else {
                continue;
            };
            if self.tree.as_deref().is_some_and(|t| t != parsed.tree) {
                continue;
            }
            let Some(kind) = self.event_kind(&c, parsed.kind).await? else {
                continue;
            };
            let n = match within {
                Some((v, n)) if v == c.version => n + 1,
                _ => 1,
            };
            within = Some((c.version, n));
            if c.version == self.start.version && n <= self.start.within {
                // Handed out before the subscriber resumed.
                continue;
            }
            page.push(Event {
                version: c.version,
                cursor: Cursor {
                    version: c.version,
                    within: n,
                },
                tree: parsed.tree.to_string(),
                id: parsed.id,
                kind,
            });
        }
        self.pending.extend(page);
        Ok(())
    }

    /// The event a change is, if it is one this subscription wants.
    async fn event_kind(&self, c: &Change, kind: Kind) -> Result<Option<EventKind>> {
        match kind {
            Kind::Record { revision } => Ok(Some(match c.kind {
                ChangeKind::Created => EventKind::Created { revision },
                ChangeKind::Deleted => EventKind::Removed { revision },
                ChangeKind::Changed => {
                    // Released revisions never change again: a write that set the flag is
                    // the release (a migration rewrites released revisions too).
                    let [now, before] = self.at_and_before(&c.key, c.version).await?;
                    if released(now.as_deref()) && !released(before.as_deref()) {
                        EventKind::Released { revision }
                    } else {
                        EventKind::Changed { revision }
                    }
                }
            })),
            Kind::Lease => {
                let [now, before] = self.at_and_before(&c.key, c.version).await?;
                let (now, before) = (lease_of(now.as_deref()), lease_of(before.as_deref()));
                if now == before {
                    // Only the queue of waiters changed.
                    return Ok(None);
                }
                let (holder, until_ms) = now.unwrap_or((None, 0));
                Ok(Some(EventKind::CheckOut { holder, until_ms }))
            }
        }
    }

    /// A key's value at `version` and just before it.
    async fn at_and_before(&self, key: &[u8], version: u64) -> Result<[Option<Vec<u8>>; 2]> {
        let keys = [key.to_vec()];
        // History older than the retention window is gone: so is the feed's reach.
        let gone = |e: EngineError| match e {
            EngineError::VersionTooOld { oldest, .. } => EngineError::ChangesTruncated {
                after: version.saturating_sub(1),
                oldest,
            },
            e => e,
        };
        let now = self
            .db
            .get_many(&keys, ReadAt::Version(version))
            .await
            .map_err(gone)?;
        let before = self
            .db
            .get_many(&keys, ReadAt::Version(version - 1))
            .await
            .map_err(gone)?;
        let bytes =
            |mut v: Vec<Option<strata_engine::Entry>>| v.pop().flatten().map(|e| e.value.data);
        Ok([bytes(now), bytes(before)])
    }
}

fn released(stored: Option<&[u8]>) -> bool {
    stored.is_some_and(layout::is_released)
}

/// Who held a check-out record and until when (`None` for no record).
fn lease_of(stored: Option<&[u8]>) -> Option<(Option<String>, u64)> {
    let rec: LeaseRecord = serde_json::from_slice(stored?).ok()?;
    let (holder, until) = rec.holding();
    Some((holder.map(str::to_string), until))
}

/// Make sure `db` keeps the change feed events are read from. Cheap once it does.
pub(crate) async fn ensure_feed(db: &Database) -> Result<()> {
    if db.oldest_change_cursor().is_none() {
        db.enable_change_feed().await?;
    }
    Ok(())
}
