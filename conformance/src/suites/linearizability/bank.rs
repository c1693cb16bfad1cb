//! Bank transfers: money moves between accounts by interactive transactions (read two
//! balances, write both), from several engines or processes at once, while auditors read
//! every account — by one snapshot read, or by a read-only transaction — and must always
//! find the same total. A transfer that empties an account deletes it (an absent account
//! holds nothing), so reads also race deletes. A lost update, a torn commit or a read that
//! mixes versions — such as a new balance beside an account whose deletion it missed — shows
//! as money created or destroyed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{AtomicWrite, Database, EngineError, ReadAt, ReadRange, Value};
use tokio::sync::watch;

use super::workload::Rng;

pub(super) const ACCOUNTS: u64 = 5;
pub(super) const OPENING_BALANCE: u64 = 100;
pub(super) const TOTAL: u64 = ACCOUNTS * OPENING_BALANCE;

fn account(i: u64) -> Vec<u8> {
    format!("bank/{i}").into_bytes()
}

/// Open every account with the opening balance, in one commit.
pub(super) async fn open_accounts(db: &Database) -> Result<(), String> {
    let mut w = AtomicWrite::new();
    for i in 0..ACCOUNTS {
        w = w.set(account(i), Value::u64(OPENING_BALANCE));
    }
    db.atomic_write(w)
        .await
        .map_err(|e| format!("open the accounts: {e}"))?;
    Ok(())
}

/// Make `n` transfers of a random amount between two random accounts (no overdrafts),
/// retrying each on a retryable error, counting each commit in `progress`; the commits
/// that succeeded.
pub(super) async fn transfers(
    db: Database,
    seed: u64,
    n: usize,
    progress: Option<Arc<watch::Sender<u64>>>,
) -> Result<u64, String> {
    let mut rng = Rng::new(seed);
    let mut committed = 0;
    for _ in 0..n {
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        // One transfer in four moves the whole balance (0 means "all").
        let amount = if rng.below(4) == 0 {
            0
        } else {
            1 + rng.below(20)
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            match transfer(&db, from, to, amount).await {
                Ok(done) => {
                    committed += u64::from(done);
                    if let (true, Some(p)) = (done, &progress) {
                        p.send_modify(|n| *n += 1);
                    }
                    break;
                }
                // Conservation holds even if a commit in doubt did apply and is retried:
                // the retry reads the balances again.
                Err(e)
                    if attempts < 200
                        && (e.is_retryable()
                            || matches!(e, EngineError::CommitResultUnknown { .. })) => {}
                Err(e) => return Err(format!("transfer after {attempts} attempts: {e}")),
            }
        }
    }
    Ok(committed)
}

/// One transfer of `amount` (0: the whole balance); `false` when the source account had too
/// little. An account left empty is deleted.
async fn transfer(db: &Database, from: u64, to: u64, amount: u64) -> Result<bool, EngineError> {
    let mut t = db.begin().await?;
    let (a, b) = (account(from), account(to));
    let balance = |v: Option<Value>| v.and_then(|v| v.as_u64()).unwrap_or(0);
    let source = balance(t.get(&a).await?);
    let target = balance(t.get(&b).await?);
    let amount = if amount == 0 { source } else { amount };
    if source == 0 || source < amount {
        t.rollback();
        return Ok(false);
    }
    if source == amount {
        t.delete(&a)?;
    } else {
        t.set(&a, Value::u64(source - amount))?;
    }
    t.set(&b, Value::u64(target + amount))?;
    t.commit().await?;
    Ok(true)
}

/// Every balance, read at one version; by one snapshot read, or by a read-only transaction.
pub(super) async fn balances(db: &Database, by_transaction: bool) -> Result<Vec<u64>, EngineError> {
    if by_transaction {
        let mut t = db.begin().await?;
        let mut out = Vec::new();
        for i in 0..ACCOUNTS {
            if let Some(v) = t.get(&account(i)).await? {
                out.push(v.as_u64().unwrap_or(u64::MAX));
            }
        }
        t.rollback();
        Ok(out)
    } else {
        let read = db
            .snapshot_read(&[ReadRange::prefix(b"bank/", 100)], ReadAt::Latest)
            .await?;
        Ok(read
            .ranges
            .into_iter()
            .flatten()
            .map(|e| e.value.as_u64().unwrap_or(u64::MAX))
            .collect())
    }
}

/// What an auditor saw.
#[derive(Debug, Default)]
pub(super) struct Audit {
    pub reads: u64,
    pub errors: u64,
    /// The first reads that found money created or destroyed.
    pub wrong: Vec<String>,
}

/// How often an auditor reads.
pub(super) enum Pace {
    /// Again at once: on an embedded store, as many reads as fit.
    Continuous,
    /// After each commit counted in the channel (or after `heartbeat`, for commits made
    /// elsewhere): on a store that serves one request at a time, reads must not starve the
    /// transfers.
    OnCommit {
        commits: watch::Receiver<u64>,
        heartbeat: Duration,
    },
}

/// Read every balance again and again until `done` is set (and once more after), checking
/// that the accounts (absent ones hold nothing) hold [`TOTAL`]. Whoever sets `done` with a paced
/// auditor also bumps its channel.
pub(super) async fn audit(
    db: Database,
    by_transaction: bool,
    done: Arc<AtomicBool>,
    mut pace: Pace,
) -> Audit {
    let mut audit = Audit::default();
    loop {
        let last = done.load(Ordering::SeqCst);
        match balances(&db, by_transaction).await {
            Ok(b) => {
                audit.reads += 1;
                let sum: u64 = b.iter().fold(0u64, |s, x| s.saturating_add(*x));
                if sum != TOTAL && audit.wrong.len() < 5 {
                    audit.wrong.push(format!(
                        "{} read {b:?}: the accounts hold {sum}, not {TOTAL}",
                        if by_transaction {
                            "a read-only transaction"
                        } else {
                            "a snapshot read"
                        },
                    ));
                }
            }
            Err(_) => audit.errors += 1,
        }
        if last {
            return audit;
        }
        match &mut pace {
            Pace::Continuous => tokio::task::yield_now().await,
            Pace::OnCommit { commits, heartbeat } => {
                let _ = tokio::time::timeout(*heartbeat, commits.changed()).await;
            }
        }
    }
}
