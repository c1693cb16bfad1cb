//! The Raft log and vote, kept in the node's own backend (a database named [`RAFT_DB`] that
//! the engine cannot name, since engine names never start with a dot).
//!
//! | key | value |
//! | --- | --- |
//! | `e` index (u64 big-endian) | one log entry |
//! | `mvote` | the vote |
//! | `mcommitted` | the last committed log id this node knows |
//! | `mpurged` | the last purged log id |
//!
//! Every write is synced before it is reported done: Raft's safety rests on a vote and an
//! appended entry surviving a crash. The state machine keeps its own records in the same
//! database (see [`crate::state_machine`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use strata_engine::{BatchOp, Durability, Store};

use crate::{NodeId, TypeConfig};

/// The backend database holding a node's Raft state.
pub const RAFT_DB: &str = ".raft";

const ENTRY: u8 = b'e';
const VOTE: &[u8] = b"mvote";
const COMMITTED: &[u8] = b"mcommitted";
const PURGED: &[u8] = b"mpurged";

/// How many entries one scan reads.
const SCAN_CHUNK: usize = 512;

fn entry_key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// A storage failure in openraft's terms (which make the node stop rather than guess).
pub(crate) fn io_error(
    what: &'static str,
    write: bool,
    e: impl std::fmt::Display,
) -> StorageError<NodeId> {
    let err = AnyError::error(format!("{what}: {e}"));
    let io = if write {
        StorageIOError::write(&err)
    } else {
        StorageIOError::read(&err)
    };
    StorageError::IO { source: io }
}

pub(crate) fn encode_or<T: serde::Serialize>(
    what: &'static str,
    v: &T,
) -> Result<Vec<u8>, StorageError<NodeId>> {
    postcard::to_allocvec(v).map_err(|e| io_error(what, true, e))
}

pub(crate) fn decode_or<T: serde::de::DeserializeOwned>(
    what: &'static str,
    raw: &[u8],
) -> Result<T, StorageError<NodeId>> {
    postcard::from_bytes(raw).map_err(|e| io_error(what, false, format!("corrupt record: {e}")))
}

/// The log store. Cheap to clone: clones share the database (and serve as log readers).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<dyn Store>,
}

impl LogStore {
    pub fn new(db: Arc<dyn Store>) -> Self {
        LogStore { db }
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        match self
            .db
            .get(key)
            .await
            .map_err(|e| io_error(what, false, e))?
        {
            Some(raw) => Ok(Some(decode_or(what, &raw)?)),
            None => Ok(None),
        }
    }

    async fn write(
        &self,
        ops: Vec<BatchOp>,
        what: &'static str,
    ) -> Result<(), StorageError<NodeId>> {
        self.db
            .apply(ops, Durability::Sync, None)
            .await
            .map_err(|e| io_error(what, true, e))
    }

    /// The keys of every entry with index in `range`, in order.
    async fn entries_in(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError<NodeId>> {
        let mut from = entry_key(start);
        let to = match end {
            Some(e) => entry_key(e),
            None => vec![ENTRY + 1],
        };
        let mut out = Vec::new();
        loop {
            let chunk = self
                .db
                .scan(&from, &to, false, SCAN_CHUNK)
                .await
                .map_err(|e| io_error("reading the log", false, e))?;
            let full = chunk.len() == SCAN_CHUNK;
            if let Some((last, _)) = chunk.last() {
                from = last.clone();
                from.push(0);
            }
            out.extend(chunk);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StorageError<NodeId>> {
        let last = self
            .db
            .scan(&[ENTRY], &[ENTRY + 1], true, 1)
            .await
            .map_err(|e| io_error("reading the log", false, e))?;
        match last.first() {
            Some((_, v)) => Ok(Some(decode_or("log entry", v)?)),
            None => Ok(None),
        }
    }

    async fn delete_range(
        &self,
        start: u64,
        end: Option<u64>,
        extra: Vec<BatchOp>,
        what: &'static str,
    ) -> Result<(), StorageError<NodeId>> {
        let mut ops = extra;
        for (k, _) in self.entries_in(start, end).await? {
            ops.push(BatchOp::Delete(k));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.write(ops, what).await
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        self.entries_in(start, end)
            .await?
            .iter()
            .map(|(_, v)| decode_or("log entry", v))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self.read(PURGED, "purged log id").await?;
        let last = self.last_entry().await?.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let raw = encode_or("vote", vote)?;
        self.write(vec![BatchOp::Put(VOTE.to_vec(), raw)], "saving the vote")
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read(VOTE, "vote").await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let raw = encode_or("committed log id", &committed)?;
        // Not synced: a lost record only means re-learning the commit index from the leader.
        self.db
            .apply(
                vec![BatchOp::Put(COMMITTED.to_vec(), raw)],
                Durability::Async,
                None,
            )
            .await
            .map_err(|e| io_error("saving the commit index", true, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.read(COMMITTED, "committed log id").await?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut ops = Vec::new();
        for e in entries {
            ops.push(BatchOp::Put(
                entry_key(e.log_id.index),
                encode_or("log entry", &e)?,
            ));
        }
        let written = self.write(ops, "appending to the log").await;
        match &written {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.delete_range(log_id.index, None, Vec::new(), "truncating the log")
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let raw = encode_or("purged log id", &log_id)?;
        self.delete_range(
            0,
            log_id.index.checked_add(1),
            vec![BatchOp::Put(PURGED.to_vec(), raw)],
            "purging the log",
        )
        .await
    }
}
