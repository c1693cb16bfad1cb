//! Commits resolved by another process.
//!
//! Processes sharing a store each resolve their own commits and race for the database's
//! version record: the loser learns the winner's commits and resolves again (see
//! [`crate::multi_writer`]). That is right, but on a cluster, where every node's engine
//! writes the same replicated store, it means most groups are resolved twice or more when
//! clients write through several nodes. So a store whose writers have a natural owner — the
//! cluster's leader — may take a commit *before* it is resolved, carry it to the owner, and
//! have the owner's engine resolve it with its own commits ([`Store::forward_commit`]):
//! one pipeline, no race.
//!
//! What travels is the commit as the caller made it: an atomic write (its checks are
//! checked on the owner), or a transaction's read version, read ranges, writes, checks and
//! sums. A read version means the same snapshot on every replica, since every replica
//! applies the same batches at the same versions, so the owner checks the transaction's
//! reads against the commits after it exactly as this process would. The answer is the
//! commit's outcome, or its error with its class; the store returns it only once this
//! process's copy holds the commit, so the caller's next read sees its write.
//!
//! Only atomic writes and transactions are forwarded; queue leases, acks and nacks, and the
//! background upkeep still resolve where they run, and settle through the version record.
//!
//! [`Store::forward_commit`]: crate::Store::forward_commit

use serde::{Deserialize, Serialize};

use crate::atomic::{AtomicWrite, Check, CommitOutcome};
use crate::error::{EngineError, ErrorClass, Result};
use crate::pipeline::{CommitOp, TxnWrite};
use crate::Engine;

/// A forwarded commit, as encoded (the borrowed form of [`Request`]).
#[derive(Serialize)]
enum RequestRef<'a> {
    Atomic(&'a AtomicWrite),
    Transaction {
        read_version: u64,
        reads: &'a [(Vec<u8>, Vec<u8>)],
        writes: &'a [(Vec<u8>, TxnWrite)],
        checks: &'a [Check],
        sums: &'a [(Vec<u8>, u64)],
    },
}

/// A forwarded commit, as decoded by the process that resolves it.
#[derive(Deserialize)]
enum Request {
    Atomic(AtomicWrite),
    Transaction {
        read_version: u64,
        reads: Vec<(Vec<u8>, Vec<u8>)>,
        writes: Vec<(Vec<u8>, TxnWrite)>,
        checks: Vec<Check>,
        sums: Vec<(Vec<u8>, u64)>,
    },
}

/// What the resolving process answers.
#[derive(Serialize, Deserialize)]
enum Reply {
    Committed(CommitOutcome),
    Failed(WireError),
}

/// An error on its way back: the variants callers match on keep their identity; the rest
/// keep their class and message.
#[derive(Serialize, Deserialize)]
enum WireError {
    Conflict,
    CheckFailed,
    TransactionTooOld { read_version: u64 },
    DatabaseNotFound(String),
    CommitResultUnknown { database: String, detail: String },
    ShuttingDown,
    Other { class: ErrorClass, message: String },
}

/// The encoded form of `op`, if it is a kind of commit that may be forwarded.
pub(crate) fn request(op: &CommitOp) -> Option<Vec<u8>> {
    let r = match op {
        CommitOp::Atomic(w) => RequestRef::Atomic(w),
        CommitOp::Transaction {
            read_version,
            reads,
            writes,
            checks,
            sums,
        } => RequestRef::Transaction {
            read_version: *read_version,
            reads,
            writes,
            checks,
            sums,
        },
        _ => return None,
    };
    // Encoding into memory fails only on types serde cannot express, which these are not;
    // should it ever, the commit is resolved here instead.
    postcard::to_allocvec(&r).ok()
}

/// The outcome an encoded reply stands for.
pub(crate) fn outcome(reply: &[u8]) -> Result<CommitOutcome> {
    let reply: Reply = postcard::from_bytes(reply).map_err(|e| EngineError::Forwarded {
        class: ErrorClass::Internal,
        message: format!("the answer to a forwarded commit does not decode: {e}"),
    })?;
    match reply {
        Reply::Committed(o) => Ok(o),
        Reply::Failed(e) => Err(match e {
            WireError::Conflict => EngineError::Conflict,
            WireError::CheckFailed => EngineError::CheckFailed,
            WireError::TransactionTooOld { read_version } => {
                EngineError::TransactionTooOld { read_version }
            }
            WireError::DatabaseNotFound(name) => EngineError::DatabaseNotFound(name),
            WireError::CommitResultUnknown { database, detail } => {
                EngineError::CommitResultUnknown { database, detail }
            }
            WireError::ShuttingDown => EngineError::ShuttingDown,
            WireError::Other { class, message } => EngineError::Forwarded { class, message },
        }),
    }
}

fn encode_reply(reply: &Reply) -> Vec<u8> {
    // As in `request`: these types always encode.
    postcard::to_allocvec(reply).unwrap_or_default()
}

fn wire(e: EngineError) -> WireError {
    match e {
        EngineError::Conflict => WireError::Conflict,
        EngineError::CheckFailed => WireError::CheckFailed,
        EngineError::TransactionTooOld { read_version } => {
            WireError::TransactionTooOld { read_version }
        }
        EngineError::DatabaseNotFound(name) => WireError::DatabaseNotFound(name),
        EngineError::CommitResultUnknown { database, detail } => {
            WireError::CommitResultUnknown { database, detail }
        }
        EngineError::ShuttingDown => WireError::ShuttingDown,
        other => WireError::Other {
            class: other.class(),
            message: other.to_string(),
        },
    }
}

impl Engine {
    /// Resolve and commit a commit another process forwarded for `database`
    /// ([`crate::Store::forward_commit`]), here, through this process's own pipeline; the
    /// encoded answer. Never forwarded again: the caller sends only to a process it believes
    /// resolves for the cluster, and a batch this process can no longer append is settled
    /// by the pipeline as any other.
    pub async fn commit_forwarded(&self, database: &str, request: &[u8]) -> Vec<u8> {
        let reply = match self.run_forwarded(database, request).await {
            Ok(o) => Reply::Committed(o),
            Err(e) => Reply::Failed(wire(e)),
        };
        encode_reply(&reply)
    }

    async fn run_forwarded(&self, database: &str, request: &[u8]) -> Result<CommitOutcome> {
        let request: Request = postcard::from_bytes(request).map_err(|e| {
            EngineError::InvalidRequest(format!("a forwarded commit does not decode: {e}"))
        })?;
        let db = self.database(database).await?;
        let op = match request {
            Request::Atomic(w) => {
                // Checked where it was made too; checked again by the process that writes.
                crate::atomic::validate(&db.options().limits, &w, crate::clock::now_ms())?;
                CommitOp::Atomic(w)
            }
            Request::Transaction {
                read_version,
                reads,
                writes,
                checks,
                sums,
            } => CommitOp::Transaction {
                read_version,
                reads,
                writes,
                checks,
                sums,
            },
        };
        db.commit_forwarded(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::Mutation;
    use crate::value::{Value, Versionstamp};

    fn decoded(op: &CommitOp) -> Request {
        postcard::from_bytes(&request(op).expect("forwardable")).expect("decodes")
    }

    #[test]
    fn atomic_writes_and_transactions_travel_whole() {
        let w = AtomicWrite::new()
            .check(b"a".to_vec(), Some(Versionstamp::from_version(7)))
            .mutate(Mutation::set(b"b".to_vec(), Value::bytes(b"v".to_vec())))
            .mutate(Mutation::sum(b"c".to_vec(), 3));
        match decoded(&CommitOp::Atomic(w.clone())) {
            Request::Atomic(got) => assert_eq!(got, w),
            _ => panic!("not an atomic write"),
        }
        let reads = vec![(b"k".to_vec(), b"l".to_vec())];
        let writes: Vec<(Vec<u8>, TxnWrite)> = vec![
            (b"x".to_vec(), Some((Value::bytes(b"1".to_vec()), Some(99)))),
            (b"y".to_vec(), None),
        ];
        let checks = vec![
            Check {
                key: b"s".to_vec(),
                versionstamp: Some(Versionstamp::from_version(40)),
            },
            Check {
                key: b"x".to_vec(),
                versionstamp: None,
            },
        ];
        let sums = vec![(b"n".to_vec(), u64::MAX), (b"m".to_vec(), 5)];
        let op = CommitOp::Transaction {
            read_version: 41,
            reads: reads.clone(),
            writes: writes.clone(),
            checks: checks.clone(),
            sums: sums.clone(),
        };
        match decoded(&op) {
            Request::Transaction {
                read_version,
                reads: r,
                writes: w,
                checks: c,
                sums: n,
            } => {
                assert_eq!(read_version, 41);
                assert_eq!(r, reads);
                assert_eq!(w, writes);
                assert_eq!(c, checks);
                assert_eq!(n, sums);
            }
            _ => panic!("not a transaction"),
        }
        assert!(
            request(&CommitOp::Gc).is_none(),
            "upkeep is never forwarded"
        );
    }

    #[test]
    fn errors_come_back_with_their_identity_or_their_class() {
        let back =
            |e: EngineError| outcome(&encode_reply(&Reply::Failed(wire(e)))).expect_err("an error");
        assert!(matches!(back(EngineError::Conflict), EngineError::Conflict));
        assert!(matches!(
            back(EngineError::CheckFailed),
            EngineError::CheckFailed
        ));
        assert!(back(EngineError::Conflict).is_retryable());
        assert!(matches!(
            back(EngineError::TransactionTooOld { read_version: 3 }),
            EngineError::TransactionTooOld { read_version: 3 }
        ));
        let e = back(EngineError::limit("write key size", "key", 3000, 2048));
        assert_eq!(e.class(), ErrorClass::TooLarge);
        assert!(e.to_string().contains("3000"), "{e}");
        assert!(!e.is_retryable());
        let vs = Versionstamp::from_version(5);
        let ok = outcome(&encode_reply(&Reply::Committed(CommitOutcome::Committed(
            vs,
        ))));
        assert_eq!(ok.expect("committed"), CommitOutcome::Committed(vs));
        assert!(
            outcome(b"\xff\xff").is_err(),
            "garbage is an error, not a panic"
        );
    }
}
