//! The Raft log and vote.
//!
//! The vote, and how far the log is committed and purged, live in the node's own backend (a
//! database named [`RAFT_DB`] that the engine cannot name, since engine names never start
//! with a dot):
//!
//! | key | value |
//! | --- | --- |
//! | `mvote` | the vote |
//! | `mcommitted` | the last committed log id this node knows |
//! | `mpurged` | the last purged log id |
//!
//! The entries live in files of their own on a node with a data directory
//! ([`crate::log_file`]: appended once, dropped a segment at a time), and in the same
//! database (`e` index (u64 big-endian) → one log entry) on a node that keeps everything
//! in memory. A node whose log is in that database and that now has a log directory moves
//! the entries into files when it opens.
//!
//! Every write is synced before it is reported done: Raft's safety rests on a vote and an
//! appended entry surviving a crash. The state machine keeps its own records in the same
//! database (see [`crate::state_machine`]).
//!
//! The newest entries are also kept in memory ([`Tail`]): every entry is read back soon after
//! it is appended — by the leader once per follower it sends it to, and by every node to
//! apply it — and a copy from memory costs less than a read and a decode. The tail is
//! a run of consecutive entries ending at the last appended; truncating or purging the log
//! cuts it in step, and reads outside it go to the files or the store.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use strata_engine::{BatchOp, Durability, Store};

use crate::log_file::LogFile;
use crate::{NodeId, TypeConfig};

/// The backend database holding a node's Raft state.
pub const RAFT_DB: &str = ".raft";

const ENTRY: u8 = b'e';
const VOTE: &[u8] = b"mvote";
const COMMITTED: &[u8] = b"mcommitted";
const PURGED: &[u8] = b"mpurged";

/// How many entries one scan reads.
const SCAN_CHUNK: usize = 512;

/// The most entries, and encoded bytes, the in-memory tail holds.
const TAIL_ENTRIES: usize = 4096;
const TAIL_BYTES: usize = 32 << 20;

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

/// The newest entries, consecutive, each with its encoded size.
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    /// Add entries just appended; a gap before them starts the tail afresh.
    fn extend(&mut self, appended: Vec<(Entry<TypeConfig>, usize)>) {
        let Some((first, _)) = appended.first() else {
            return;
        };
        if self
            .next_index()
            .is_some_and(|next| next != first.log_id.index)
        {
            self.clear();
        }
        for (entry, size) in appended {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > TAIL_ENTRIES || self.bytes > TAIL_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forget entries from `index` on (a truncated log).
    fn cut_from(&mut self, index: u64) {
        while self.next_index().is_some_and(|next| next > index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forget entries up to and including `index` (a purged log).
    fn cut_to(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Copies of the entries `start..end` (`None`: to the last), if the tail holds every one
    /// of them the log has.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        // The tail ends where the log does: nothing is stored past `next`.
        let next = self.next_index()?;
        let end = end.map_or(next, |e| e.min(next));
        if start >= end {
            return Some(Vec::new());
        }
        if start < first {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The log store. Cheap to clone: clones share the database, the log files and the
/// in-memory tail (and serve as log readers).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<dyn Store>,
    /// Where the entries are, when not in `db`.
    files: Option<Arc<Mutex<LogFile>>>,
    tail: Arc<Mutex<Tail>>,
}

impl LogStore {
    /// The whole log in `db`.
    pub fn new(db: Arc<dyn Store>) -> Self {
        LogStore {
            db,
            files: None,
            tail: Arc::default(),
        }
    }

    /// The vote and the log's marks in `db`, the entries in files in `dir`. Entries an
    /// earlier version kept in `db` are moved into the files first.
    pub async fn with_files(db: Arc<dyn Store>, dir: &Path) -> Result<Self, StorageError<NodeId>> {
        let bare = LogStore::new(db.clone());
        let purged: Option<LogId<NodeId>> = bare.read(PURGED, "purged log id").await?;
        let dir = dir.to_path_buf();
        let files = blocking(move || LogFile::open(&dir, purged.map(|p| p.index))).await?;
        let files = Arc::new(Mutex::new(files));
        let store = LogStore {
            db,
            files: Some(files.clone()),
            tail: Arc::default(),
        };
        let kept = bare.entries_in(0, None).await?;
        if !kept.is_empty() {
            let mut entries = Vec::with_capacity(kept.len());
            for (k, raw) in &kept {
                let index = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| io_error("moving the log", false, "a malformed entry key"))?;
                entries.push((index, raw.clone()));
            }
            let count = entries.len();
            // The files are written whole before the store forgets the entries, so a crash
            // in between moves them again.
            on_files(&files, move |log| {
                log.clear()?;
                log.append(&entries)
            })
            .await?;
            let ops = kept.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect();
            store.write(ops, "moving the log").await?;
            tracing::info!(
                entries = count,
                "moved the Raft log's entries into log files"
            );
        }
        Ok(store)
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append `entries` to the log, synced, and to the in-memory tail.
    async fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut records = Vec::new();
        let mut appended = Vec::new();
        for e in entries {
            let raw = encode_or("log entry", &e)?;
            let size = raw.len();
            records.push((e.log_id.index, raw));
            appended.push((e, size));
        }
        let written = match &self.files {
            Some(files) => on_files(files, move |log| log.append(&records)).await,
            None => {
                let ops = records
                    .into_iter()
                    .map(|(i, raw)| BatchOp::Put(entry_key(i), raw))
                    .collect();
                self.write(ops, "appending to the log").await
            }
        };
        match &written {
            Ok(()) => self.tail().extend(appended),
            // What reached the store is unknown: read it from there.
            Err(_) => self.tail().clear(),
        }
        written
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

    /// The encoded entries `start..end`, from the files or the store.
    async fn encoded(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, StorageError<NodeId>> {
        match &self.files {
            Some(files) => Ok(locked(files)
                .read(start, end)
                .map_err(|e| io_error("reading the log", false, e))?
                .into_iter()
                .map(|(_, raw)| raw)
                .collect()),
            None => Ok(self
                .entries_in(start, end)
                .await?
                .into_iter()
                .map(|(_, raw)| raw)
                .collect()),
        }
    }

    async fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StorageError<NodeId>> {
        if let Some(files) = &self.files {
            let last = locked(files).last_index();
            let Some(last) = last else {
                return Ok(None);
            };
            return match self.encoded(last, None).await?.first() {
                Some(raw) => Ok(Some(decode_or("log entry", raw)?)),
                None => Ok(None),
            };
        }
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

fn locked(files: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    files.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `f` on the log files on a blocking thread (it writes and syncs).
async fn on_files<T: Send + 'static>(
    files: &Arc<Mutex<LogFile>>,
    f: impl FnOnce(&mut LogFile) -> Result<T, crate::log_file::LogFileError> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    let files = files.clone();
    blocking(move || f(&mut locked(&files))).await
}

/// Run blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::log_file::LogFileError> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_error("the log", true, e))?
        .map_err(|e| io_error("the log files", true, e))
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
        if let Some(entries) = self.tail().get(start, end) {
            return Ok(entries);
        }
        self.encoded(start, end)
            .await?
            .iter()
            .map(|v| decode_or("log entry", v))
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
        let written = self.append_entries(entries).await;
        match &written {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The tail first, so that no read after this call is served the removed entries.
        self.tail().cut_from(log_id.index);
        if let Some(files) = &self.files {
            let index = log_id.index;
            return on_files(files, move |log| log.truncate(index)).await;
        }
        self.delete_range(log_id.index, None, Vec::new(), "truncating the log")
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let raw = encode_or("purged log id", &log_id)?;
        self.tail().cut_to(log_id.index);
        if let Some(files) = &self.files {
            // How far the log is purged is durable before any segment goes, so a restart
            // never finds a log that begins later than the store says.
            self.write(vec![BatchOp::Put(PURGED.to_vec(), raw)], "purging the log")
                .await?;
            let index = log_id.index;
            return on_files(files, move |log| log.purge(index)).await;
        }
        self.delete_range(
            0,
            log_id.index.checked_add(1),
            vec![BatchOp::Put(PURGED.to_vec(), raw)],
            "purging the log",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The in-memory tail answers every read exactly as the store does, through appends,
    //! truncations and purges.

    use openraft::testing::log_id;
    use openraft::EntryPayload;
    use strata_backend_memory::MemoryBackend;
    use strata_engine::Backend;

    use super::*;

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
        indexes
            .map(|i| Entry {
                log_id: log_id(term, 1, i),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    /// The log ids a read of `start..end` gives, from `log` and from the store alone.
    async fn both(log: &LogStore, start: u64, end: Option<u64>) -> (Vec<String>, Vec<String>) {
        let ids = |es: Vec<Entry<TypeConfig>>| es.iter().map(|e| e.log_id.to_string()).collect();
        let mut cached = log.clone();
        let from_tail = match end {
            Some(end) => cached.try_get_log_entries(start..end).await,
            None => cached.try_get_log_entries(start..).await,
        }
        .expect("a read");
        let mut bare = LogStore {
            db: log.db.clone(),
            files: log.files.clone(),
            tail: Arc::default(),
        };
        let from_store = match end {
            Some(end) => bare.try_get_log_entries(start..end).await,
            None => bare.try_get_log_entries(start..).await,
        }
        .expect("a read");
        (ids(from_tail), ids(from_store))
    }

    async fn check(log: &LogStore, reads: &[(u64, Option<u64>)]) {
        for &(start, end) in reads {
            let (tail, store) = both(log, start, end).await;
            assert_eq!(tail, store, "reading {start}..{end:?}");
        }
    }

    #[tokio::test]
    async fn the_tail_reads_as_the_store_does() {
        let backend = MemoryBackend::new();
        let log = LogStore::new(backend.open(RAFT_DB, true).await.expect("a store"));
        reads_through_appends_truncations_and_purges(log).await;
    }

    #[tokio::test]
    async fn the_tail_reads_as_the_log_files_do() {
        let dir = tempfile::tempdir().unwrap();
        let backend = MemoryBackend::new();
        let db = backend.open(RAFT_DB, true).await.expect("a store");
        let log = LogStore::with_files(db, dir.path()).await.expect("the log");
        reads_through_appends_truncations_and_purges(log).await;
    }

    /// A log kept in the store by an earlier version is moved into files, whole, once.
    #[tokio::test]
    async fn a_log_kept_in_the_store_moves_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let backend = MemoryBackend::new();
        let db = backend.open(RAFT_DB, true).await.expect("a store");
        let mut old = LogStore::new(db.clone());
        old.append_entries(entries(1, 1..=20)).await.unwrap();
        old.purge(log_id(1, 1, 4)).await.unwrap();
        old.save_vote(&Vote::new(3, 2)).await.unwrap();

        for round in 0..2 {
            if round == 1 {
                // A crash after the files were written, before the store forgot the entries:
                // both hold them, and the next start moves them again.
                old.append_entries(entries(1, 5..=20)).await.unwrap();
            }
            let mut log = LogStore::with_files(db.clone(), dir.path()).await.unwrap();
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
            assert_eq!(state.last_log_id, Some(log_id(1, 1, 20)));
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
            let read = log.try_get_log_entries(0..).await.unwrap();
            assert_eq!(read.first().map(|e| e.log_id.index), Some(5));
            assert_eq!(read.len(), 16);
        }
        // The store holds no entry any more.
        let bare = LogStore::new(db);
        assert!(bare.entries_in(0, None).await.unwrap().is_empty());
    }

    async fn reads_through_appends_truncations_and_purges(mut log: LogStore) {
        let reads = [
            (1, None),
            (1, Some(11)),
            (4, Some(8)),
            (5, Some(6)),
            (9, None),
            (0, Some(3)),
        ];

        log.append_entries(entries(1, 1..=10))
            .await
            .expect("appended");
        check(&log, &reads).await;
        assert_eq!(both(&log, 1, None).await.0.len(), 10);

        // A new leader's entries replace those from 6 on.
        log.truncate(log_id(1, 1, 6)).await.expect("truncated");
        check(&log, &reads).await;
        log.append_entries(entries(2, 6..=7))
            .await
            .expect("appended");
        check(&log, &reads).await;
        assert_eq!(
            both(&log, 5, None).await.0,
            ["T1-N1-5", "T2-N1-6", "T2-N1-7"]
        );

        log.purge(log_id(1, 1, 3)).await.expect("purged");
        check(&log, &reads).await;
        assert_eq!(both(&log, 1, None).await.0.len(), 4);

        // More than the tail holds: the oldest are read from the store.
        let last = TAIL_ENTRIES as u64 + 20;
        log.append_entries(entries(2, 8..=last))
            .await
            .expect("appended");
        check(&log, &[(4, None), (4, Some(30)), (last - 5, None)]).await;
    }
}
