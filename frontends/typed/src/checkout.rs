//! Check-out and check-in: durable leases on records, with a fair queue of waiters.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_engine::{Database, Transaction, Value};

use crate::{layout, Error, Key, RawKey, Record, Result, Tree};

/// How long [`Tree::check_out`] waits for a record someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once with [`Error::CheckedOut`].
    No,
    /// Queue and wait up to this long.
    Up(Duration),
}

/// A check-out held: by whom, and until when (milliseconds since the epoch) unless renewed
/// or given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until_ms: u64,
}

/// The stored check-out of one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    holder: Option<String>,
    until_ms: u64,
    /// Who waits for it, in arrival order, each until when.
    waiters: Vec<Waiter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiter {
    who: String,
    until_ms: u64,
}

impl LeaseRecord {
    /// The holder as stored (even if the lease has run out since), and until when.
    pub(crate) fn holding(&self) -> (Option<&str>, u64) {
        (self.holder.as_deref(), self.until_ms)
    }

    /// The holder, if the lease is held at `now`.
    pub(crate) fn held_by(&self, now: u64) -> Option<&str> {
        self.holder.as_deref().filter(|_| self.until_ms > now)
    }

    /// The lease, if it is held at `now`.
    pub(crate) fn held(&self, now: u64) -> Option<Lease> {
        self.held_by(now).map(|h| Lease {
            holder: h.to_string(),
            until_ms: self.until_ms,
        })
    }

    /// Who stands between `user` and the record at `now`, and until when: its holder, or
    /// else the first other waiter.
    fn in_the_way(&self, user: &str, now: u64) -> (String, u64) {
        match self.held_by(now) {
            Some(h) if h != user => (h.to_string(), self.until_ms),
            _ => self
                .waiters
                .iter()
                .find(|w| w.who != user)
                .map_or((String::new(), now), |w| (w.who.clone(), w.until_ms)),
        }
    }
}

/// Record `id` of `tree`, as errors about its check-out name it.
fn record(tree: &str, id: u64) -> RawKey {
    RawKey {
        tree: tree.to_string(),
        id,
        revision: 0,
    }
}

pub(crate) async fn read_lease(tx: &mut Transaction, tree: &str, id: u64) -> Result<LeaseRecord> {
    match tx.get(&layout::lease(tree, id)).await? {
        None => Ok(LeaseRecord::default()),
        Some(v) => decode_lease(tree, id, &v.data),
    }
}

/// The stored check-out of record `id` from its bytes.
pub(crate) fn decode_lease(tree: &str, id: u64, bytes: &[u8]) -> Result<LeaseRecord> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: record(tree, id),
        detail: format!("check-out record: {e}"),
    })
}

fn write_lease(tx: &mut Transaction, tree: &str, id: u64, rec: &LeaseRecord) -> Result<()> {
    let at = layout::lease(tree, id);
    if rec.holder.is_none() && rec.waiters.is_empty() {
        tx.delete(&at)?;
        return Ok(());
    }
    let bytes = serde_json::to_vec(rec).map_err(|e| Error::Encode {
        tree: "check-out",
        detail: e.to_string(),
    })?;
    tx.set(&at, Value::bytes(bytes))?;
    Ok(())
}

/// Fail unless `user` holds record `key`'s check-out at `now` (read in `tx`, so the change
/// being made commits only if that still holds).
pub(crate) async fn ensure_held<T: Record>(
    tx: &mut Transaction,
    key: Key<T>,
    user: &str,
    now: u64,
) -> Result<()> {
    let rec = read_lease(tx, T::TREE, key.id()).await?;
    if rec.held_by(now) == Some(user) {
        return Ok(());
    }
    Err(Error::NotCheckedOut {
        key: key.raw(),
        user: user.to_string(),
    })
}

/// What one attempt at a check-out did.
enum Attempt {
    Taken(Lease),
    /// Held (or promised to someone ahead in the queue): by whom, until when.
    Busy {
        holder: String,
        until_ms: u64,
    },
}

/// Check out record `id` of `tree` in `db` for `user` (see [`Tree::check_out`]), waiting
/// up to `wait_ms` (0: not at all), with `clock` the time in milliseconds.
pub(crate) async fn check_out(
    db: &Database,
    tree: &str,
    id: u64,
    user: &str,
    lease_ms: u64,
    wait_ms: u64,
    clock: &(dyn Fn(()) -> u64 + Send + Sync),
) -> Result<Lease> {
    let user = user.to_string();
    let deadline = (wait_ms > 0).then(|| clock(()).saturating_add(wait_ms));
    let mut watch = None;
    loop {
        let now = clock(());
        let queue_until = deadline.filter(|d| *d > now);
        let attempt = in_transaction!(db, |tx| {
            let mut rec = read_lease(tx, tree, id).await?;
            let before = rec.clone();
            rec.waiters.retain(|w| w.until_ms > now || w.who == user);
            let free = match rec.held_by(now) {
                None => true,
                Some(h) => h == user,
            };
            let first = rec.waiters.first().is_none_or(|w| w.who == user);
            if free && first {
                rec.holder = Some(user.clone());
                rec.until_ms = now.saturating_add(lease_ms);
                rec.waiters.retain(|w| w.who != user);
                write_lease(tx, tree, id, &rec)?;
                return Ok(Attempt::Taken(Lease {
                    holder: user.clone(),
                    until_ms: rec.until_ms,
                }));
            }
            let (holder, until_ms) = rec.in_the_way(&user, now);
            match queue_until {
                Some(until) => match rec.waiters.iter_mut().find(|w| w.who == user) {
                    Some(w) => w.until_ms = until,
                    None => rec.waiters.push(Waiter {
                        who: user.clone(),
                        until_ms: until,
                    }),
                },
                None => rec.waiters.retain(|w| w.who != user),
            }
            // Only a change is written: a waiter that rewrote its unchanged place on
            // every wake-up would wake the others, and they it, without end.
            if rec != before {
                write_lease(tx, tree, id, &rec)?;
            }
            Ok::<_, Error>(Attempt::Busy { holder, until_ms })
        })?;
        let (holder, until_ms) = match attempt {
            Attempt::Taken(lease) => return Ok(lease),
            Attempt::Busy { holder, until_ms } => (holder, until_ms),
        };
        let Some(until) = queue_until else {
            return Err(Error::CheckedOut {
                key: record(tree, id),
                holder,
                until_ms,
            });
        };
        // Wait for the check-out to change, or for the holder's lease or our wait to run
        // out, whichever comes first.
        let watch = match &mut watch {
            Some(w) => w,
            None => {
                let mut w = db.watch(vec![layout::lease(tree, id)])?;
                w.next().await?;
                watch.insert(w)
            }
        };
        let wake = until.min(until_ms.max(now + 1));
        let pause = Duration::from_millis(wake.saturating_sub(clock(())).max(1));
        let _ = tokio::time::timeout(pause, watch.next()).await;
    }
}

/// Take `user` out of the queue for record `id` of `tree` (a waiter that went away).
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
pub(crate) async fn leave_queue(db: &Database, tree: &str, id: u64, user: &str) -> Result<()> {
    in_transaction!(db, |tx| {
        let mut rec = read_lease(tx, tree, id).await?;
        let before = rec.waiters.len();
        rec.waiters.retain(|w| w.who != user);
        if rec.waiters.len() != before {
            write_lease(tx, tree, id, &rec)?;
        }
        Ok::<_, Error>(())
    })
}

/// Give back record `id` of `tree`, held by `user` at `now`.
pub(crate) async fn check_in(
    db: &Database,
    tree: &str,
    id: u64,
    user: &str,
    now: u64,
) -> Result<()> {
    in_transaction!(db, |tx| {
        let mut rec = read_lease(tx, tree, id).await?;
        if rec.held_by(now) != Some(user) {
            return Err(Error::NotCheckedOut {
                key: record(tree, id),
                user: user.to_string(),
            });
        }
        rec.holder = None;
        rec.until_ms = 0;
        write_lease(tx, tree, id, &rec)?;
        Ok::<_, Error>(())
    })
}

impl<T: Record> Tree<T> {
    /// Check out record `id` for this handle's user, for `lease`: the user may then change
    /// it. Checking out a record one holds renews the lease. When someone else holds it,
    /// fail at once or queue and wait (`wait`); a free record goes to the first in the
    /// queue, so waiters are served in arrival order. A lease that is not given back
    /// expires, and the record passes on.
    pub async fn check_out(&self, id: u64, lease: Duration, wait: Wait) -> Result<Lease> {
        let user = self.user()?.to_string();
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let wait_ms = match wait {
            Wait::No => 0,
            Wait::Up(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
        };
        if let Some(up) = self.upstream() {
            return up.check_out(T::TREE, id, lease_ms, wait_ms).await;
        }
        let clock = |_: ()| self.now_ms();
        check_out(
            self.database(),
            T::TREE,
            id,
            &user,
            lease_ms,
            wait_ms,
            &clock,
        )
        .await
    }

    /// Give back record `id`'s check-out, held by this handle's user. The first waiter may
    /// then take it.
    pub async fn check_in(&self, id: u64) -> Result<()> {
        let user = self.user()?.to_string();
        if let Some(up) = self.upstream() {
            return up.check_in(T::TREE, id).await;
        }
        check_in(self.database(), T::TREE, id, &user, self.now_ms()).await
    }

    /// Who waits for record `id`'s check-out, first in line first.
    pub async fn queue(&self, id: u64) -> Result<Vec<String>> {
        let now = self.now_ms();
        let mut tx = self.database().begin().await?;
        let rec = read_lease(&mut tx, T::TREE, id).await?;
        Ok(rec
            .waiters
            .into_iter()
            .filter(|w| w.until_ms > now)
            .map(|w| w.who)
            .collect())
    }

    /// Who holds record `id`'s check-out now, if anyone.
    pub async fn checked_out_by(&self, id: u64) -> Result<Option<Lease>> {
        let now = self.now_ms();
        let mut tx = self.database().begin().await?;
        Ok(read_lease(&mut tx, T::TREE, id).await?.held(now))
    }
}
