//! The commit journal: batches made durable ahead of redb.
//!
//! A durable redb commit writes and syncs every page its batch dirtied: tens of pages for
//! a group of small commits that land in different parts of the tree. The journal makes a
//! batch durable with one record written and one `fdatasync`; redb then commits without
//! syncing. A checkpoint (a durable redb commit) makes everything journaled durable in redb
//! itself, and empties the journal.
//!
//! Opening a store replays the journal: every batch since the last checkpoint, in order.
//! Replaying a batch the checkpoint already holds is harmless: batches are absolute puts
//! and deletes, replayed in their order, so the state after the last one is the same.
//!
//! ## Format
//!
//! The file starts with a header, `"strata-journal\0\x02"` and the journal's *epoch*
//! (`u64 LE`); records follow it. A record is `payload length: u32 LE, CRC-32 of the epoch
//! and the payload: u32 LE, epoch: u64 LE, payload`; the payload is the batch's
//! operations, each `kind: u8 (1 put, 2 delete), key length: u32 LE, key`, and for a put
//! `value length: u32 LE, value`.
//!
//! The file is never truncated while the store is open. It grows in zero-filled chunks, and
//! emptying it after a checkpoint writes the next epoch into the header (synced) and starts
//! writing records after the header again, over the old ones. An `fdatasync` of a record
//! that overwrites allocated blocks writes only that data, where a record that grows the
//! file also writes its inode: on ext4 that is a quarter of every sync's cost.
//!
//! A replay reads records while they are whole, their checksum holds and they carry the
//! header's epoch. It stops at the first that does not: a torn record (a crash during a
//! write, whose batch was never acknowledged), zeros, or a record of an earlier epoch left
//! over from before the journal was last emptied.
//!
//! A file without the header is a journal of the earlier format (records without an epoch,
//! the file truncated when emptied); it is replayed the same way.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use strata_engine::{BackendError, BatchOp};

const PUT: u8 = 1;
const DELETE: u8 = 2;
const MAGIC: &[u8; 16] = b"strata-journal\0\x02";
const FILE_HEADER: u64 = 24;
const RECORD_HEADER: usize = 16;
/// Records of the earlier format: length and checksum, no epoch.
const LEGACY_RECORD_HEADER: usize = 8;
/// The file grows by this much at a time, zero-filled.
const CHUNK: u64 = 1 << 20;

/// The journal file of one redb file: `<name>.redb-journal`.
pub(crate) const SUFFIX: &str = "-journal";

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// The epoch in the header: records of this epoch are the journal's.
    epoch: u64,
    /// Where the next record starts.
    len: u64,
    /// The file's size: zero-filled (or old records) from `len` on.
    allocated: u64,
    /// Whether every record written has been synced.
    synced: bool,
    /// When the journal was last synced (or emptied).
    pub last_sync: Instant,
    /// When redb last committed durably.
    pub last_checkpoint: Instant,
    buf: Vec<u8>,
    syncer: Syncer,
}

/// An error at `path`, naming it: [`BackendError::Full`] when the disk has no room.
pub(crate) fn io(path: &Path, e: impl Into<redb::Error>) -> BackendError {
    match e.into() {
        redb::Error::Io(e) => BackendError::io(path.display(), &e),
        other => BackendError::Io(format!("{}: {other}", path.display())),
    }
}

impl Journal {
    /// Open (or create) the journal beside `db_path`, with the batches it holds. The caller
    /// replays them, checkpoints, and then empties the journal ([`Journal::clear`]) before
    /// writing to it.
    pub(crate) fn open(db_path: &Path) -> Result<(Journal, Vec<Vec<BatchOp>>), BackendError> {
        let mut path = db_path.as_os_str().to_owned();
        path.push(SUFFIX);
        let path = PathBuf::from(path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        let (epoch, batches) = match bytes.strip_prefix(MAGIC.as_slice()) {
            Some(rest) if rest.len() >= 8 => {
                let epoch = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                (epoch, parse(&rest[8..], Some(epoch)))
            }
            _ => (0, parse(&bytes, None)),
        };
        let syncer = Syncer::spawn(file.try_clone().map_err(|e| io(&path, e))?, &path)?;
        let now = Instant::now();
        let journal = Journal {
            file,
            path,
            epoch,
            // Nothing is written before `clear`, which writes the header.
            len: FILE_HEADER,
            allocated: bytes.len() as u64,
            synced: true,
            last_sync: now,
            last_checkpoint: now,
            buf: Vec::new(),
            syncer,
        };
        Ok((journal, batches))
    }

    /// Bytes of records the journal holds.
    pub(crate) fn len(&self) -> u64 {
        self.len - FILE_HEADER
    }

    /// Write a batch's record (not yet synced). On failure part of the record may be in the
    /// file: the caller cuts it off ([`Journal::cut`]).
    pub(crate) fn append(&mut self, ops: &[BatchOp]) -> Result<(), BackendError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; RECORD_HEADER]);
        self.buf[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        for op in ops {
            let (kind, key, value) = match op {
                BatchOp::Put(k, v) => (PUT, k, Some(v)),
                BatchOp::Delete(k) => (DELETE, k, None),
            };
            self.buf.push(kind);
            put_bytes(&mut self.buf, key)?;
            if let Some(v) = value {
                put_bytes(&mut self.buf, v)?;
            }
        }
        let payload = self.buf.len() - RECORD_HEADER;
        let payload_len = u32::try_from(payload)
            .map_err(|_| BackendError::Other(format!("a batch of {payload} bytes is too large")))?;
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.synced = false;
        let end = self.len + self.buf.len() as u64;
        if end > self.allocated {
            // Grow in zero-filled chunks: later records overwrite allocated blocks.
            let to = end.div_ceil(CHUNK) * CHUNK;
            let zeros = vec![0u8; (to - self.allocated) as usize];
            self.file
                .write_all_at(&zeros, self.allocated)
                .map_err(|e| io(&self.path, e))?;
            self.allocated = to;
        }
        self.file
            .write_all_at(&self.buf, self.len)
            .map_err(|e| io(&self.path, e))?;
        self.len = end;
        Ok(())
    }

    /// Start making every record written durable, on the journal's sync thread (`None`:
    /// they are already); finish with [`Journal::wait_sync`]. The caller writes nothing to
    /// the journal in between.
    pub(crate) fn start_sync(&mut self) -> Result<Option<PendingSync>, BackendError> {
        if self.synced {
            self.last_sync = Instant::now();
            return Ok(None);
        }
        self.syncer.request().map(Some)
    }

    /// Wait for a sync [`Journal::start_sync`] started.
    pub(crate) async fn wait_sync(&mut self, pending: PendingSync) -> Result<(), BackendError> {
        let done = pending
            .0
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the journal's sync thread stopped")));
        done.map_err(|e| io(&self.path, e))?;
        self.synced = true;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Make every record written durable, on this thread.
    pub(crate) fn sync(&mut self) -> Result<(), BackendError> {
        if !self.synced {
            self.file.sync_data().map_err(|e| io(&self.path, e))?;
            self.synced = true;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Forget the last record written (or the part of it written), which redb did not
    /// commit: `len` is [`Journal::len`] before it. Its bytes are zeroed, which ends a
    /// replay there, and synced, so the cut is durable too.
    pub(crate) fn cut(&mut self, len: u64) -> Result<(), BackendError> {
        let at = len + FILE_HEADER;
        let written = self.len.max(at) - at;
        let zeros = vec![0u8; (written as usize).max(RECORD_HEADER)];
        self.file
            .write_all_at(&zeros, at)
            .map_err(|e| io(&self.path, e))?;
        self.allocated = self.allocated.max(at + zeros.len() as u64);
        self.len = at;
        self.synced = false;
        self.sync()
    }

    /// Empty the journal after a checkpoint made its batches durable in redb: the next
    /// epoch goes into the header, synced, so no record written before is replayed.
    pub(crate) fn clear(&mut self) -> Result<(), BackendError> {
        let epoch = self.epoch.wrapping_add(1).max(1);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&epoch.to_le_bytes());
        self.file
            .write_all_at(&header, 0)
            .map_err(|e| io(&self.path, e))?;
        self.allocated = self.allocated.max(FILE_HEADER);
        self.epoch = epoch;
        self.len = FILE_HEADER;
        self.synced = false;
        self.sync()?;
        self.last_checkpoint = self.last_sync;
        Ok(())
    }
}

/// A thread that syncs the journal file, so that a batch's redb writes proceed while its
/// record is being synced, and the task waiting for the sync is woken directly.
struct Syncer {
    requests: mpsc::Sender<oneshot::Sender<std::io::Result<()>>>,
}

/// A sync in progress on the sync thread.
pub(crate) struct PendingSync(oneshot::Receiver<std::io::Result<()>>);

impl Syncer {
    fn spawn(file: File, path: &Path) -> Result<Syncer, BackendError> {
        let (requests, rx) = mpsc::channel::<oneshot::Sender<std::io::Result<()>>>();
        std::thread::Builder::new()
            .name("strata-journal-sync".into())
            .spawn(move || {
                // Ends when the journal (the sender) is dropped.
                while let Ok(reply) = rx.recv() {
                    let _ = reply.send(file.sync_data());
                }
            })
            .map_err(|e| io(path, e))?;
        Ok(Syncer { requests })
    }

    fn request(&self) -> Result<PendingSync, BackendError> {
        let (reply, done) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| BackendError::Io("the journal's sync thread stopped".into()))?;
        Ok(PendingSync(done))
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) -> Result<(), BackendError> {
    let n = u32::try_from(b.len())
        .map_err(|_| BackendError::Other(format!("an entry of {} bytes is too large", b.len())))?;
    buf.extend_from_slice(&n.to_le_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

/// The whole records at the start of `bytes` that carry `epoch` (`None`: records of the
/// earlier format, without one), up to the first torn, corrupt or stale one.
fn parse(mut bytes: &[u8], epoch: Option<u64>) -> Vec<Vec<BatchOp>> {
    let header = match epoch {
        Some(_) => RECORD_HEADER,
        None => LEGACY_RECORD_HEADER,
    };
    let mut batches = Vec::new();
    while bytes.len() >= header {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(payload) = bytes.get(header..header + len) else {
            break;
        };
        let (checked, found) = match epoch {
            Some(_) => (
                &bytes[8..header + len],
                Some(u64::from_le_bytes(
                    bytes[8..16].try_into().expect("8 bytes"),
                )),
            ),
            None => (payload, None),
        };
        if found != epoch || crc32fast::hash(checked) != crc {
            break;
        }
        let Some(ops) = parse_ops(payload) else {
            break;
        };
        batches.push(ops);
        bytes = &bytes[header + len..];
    }
    batches
}

fn parse_ops(mut p: &[u8]) -> Option<Vec<BatchOp>> {
    fn take<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
        let b = p.get(4..4 + n)?;
        *p = &p[4 + n..];
        Some(b)
    }
    let mut ops = Vec::new();
    while let Some((&kind, rest)) = p.split_first() {
        p = rest;
        let key = take(&mut p)?.to_vec();
        ops.push(match kind {
            PUT => BatchOp::Put(key, take(&mut p)?.to_vec()),
            DELETE => BatchOp::Delete(key),
            _ => return None,
        });
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u8) -> Vec<BatchOp> {
        vec![
            BatchOp::Put(vec![b'k', i], vec![i; i as usize]),
            BatchOp::Delete(vec![b'd', i]),
        ]
    }

    fn opened(db: &Path) -> (Journal, Vec<Vec<BatchOp>>) {
        let (mut j, found) = Journal::open(db).unwrap();
        j.clear().unwrap();
        (j, found)
    }

    #[test]
    fn records_replay_in_order_up_to_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let (mut j, found) = opened(&db);
        assert!(found.is_empty());
        for i in 0..5 {
            j.append(&batch(i)).unwrap();
        }
        j.sync().unwrap();
        let end = (FILE_HEADER + j.len()) as usize;
        drop(j);
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..5).map(batch).collect::<Vec<_>>());

        // A torn last record, then a corrupt one: the replay keeps what came before.
        let path = dir.path().join("x.redb-journal");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..end - 3]).unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..4).map(batch).collect::<Vec<_>>());
        let mut flipped = bytes.clone();
        flipped[end - 2] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..4).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn cut_and_clear_drop_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let (mut j, _) = opened(&db);
        j.append(&batch(1)).unwrap();
        let before = j.len();
        j.append(&batch(2)).unwrap();
        j.cut(before).unwrap();
        j.append(&batch(3)).unwrap();
        j.sync().unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, vec![batch(1), batch(3)]);
        let (mut j, _) = opened(&db);
        j.append(&batch(4)).unwrap();
        j.sync().unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, vec![batch(4)]);
    }

    #[test]
    fn records_from_before_the_journal_was_emptied_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let (mut j, _) = opened(&db);
        for i in 10..20 {
            j.append(&batch(i)).unwrap();
        }
        j.sync().unwrap();
        // Emptied with nothing written since: the old records stay in the file, unread.
        j.clear().unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert!(found.is_empty(), "{found:?}");
        // A shorter record over the first old one: the replay stops at what follows it.
        j.append(&batch(1)).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, vec![batch(1)]);
    }

    #[test]
    fn records_overwrite_allocated_space_instead_of_growing_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let path = dir.path().join("x.redb-journal");
        let (mut j, _) = opened(&db);
        j.append(&batch(1)).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, CHUNK);
        for round in 0..3 {
            for i in 0..100 {
                j.append(&batch(i)).unwrap();
                j.sync().unwrap();
            }
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                size,
                "round {round}"
            );
            j.clear().unwrap();
        }
        // A record larger than what is left grows the file by whole chunks.
        j.append(&[BatchOp::Put(b"big".to_vec(), vec![7; CHUNK as usize])])
            .unwrap();
        j.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * CHUNK);
        drop(j);
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found.len(), 1);
    }
}
