//! The commit journal: batches made durable ahead of redb.
//!
//! A durable redb commit writes and syncs every page its batch dirtied: tens of pages for
//! a group of small commits that land in different parts of the tree. The journal makes a
//! batch durable with one appended record and one `fdatasync`; redb then commits without
//! syncing. A checkpoint (a durable redb commit) makes everything journaled durable in redb
//! itself, and empties the journal.
//!
//! Opening a store replays the journal: every batch since the last checkpoint, in order.
//! Replaying a batch the checkpoint already holds is harmless: batches are absolute puts
//! and deletes, replayed in their order, so the state after the last one is the same.
//!
//! A record is `payload length: u32 LE, CRC-32 of the payload: u32 LE, payload`; the payload
//! is the batch's operations, each `kind: u8 (1 put, 2 delete), key length: u32 LE, key`,
//! and for a put `value length: u32 LE, value`. A torn or corrupt record (a crash during
//! an append) ends the replay: its batch was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_engine::{BackendError, BatchOp};

const PUT: u8 = 1;
const DELETE: u8 = 2;
const RECORD_HEADER: usize = 8;

/// The journal file of one redb file: `<name>.redb-journal`.
pub(crate) const SUFFIX: &str = "-journal";

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes in the file: where the next record starts.
    len: u64,
    /// Whether every appended record has been synced.
    synced: bool,
    /// When the journal was last synced (or found empty).
    pub last_sync: Instant,
    /// When redb last committed durably.
    pub last_checkpoint: Instant,
    buf: Vec<u8>,
}

fn io(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::Io(format!("{}: {e}", path.display()))
}

impl Journal {
    /// Open (or create) the journal beside `db_path`, with the batches it holds.
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
        let batches = parse(&bytes);
        let now = Instant::now();
        let journal = Journal {
            file,
            len: bytes.len() as u64,
            path,
            synced: true,
            last_sync: now,
            last_checkpoint: now,
            buf: Vec::new(),
        };
        Ok((journal, batches))
    }

    /// Bytes the journal holds.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Append a batch (not yet synced).
    pub(crate) fn append(&mut self, ops: &[BatchOp]) -> Result<(), BackendError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; RECORD_HEADER]);
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
        let crc = crc32fast::hash(&self.buf[RECORD_HEADER..]);
        self.buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        // On failure part of the record may be in the file, ending every later replay
        // early: the caller cuts it off ([`Journal::cut`]).
        self.synced = false;
        write_at_end(&mut self.file, &self.buf).map_err(|e| io(&self.path, e))?;
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Make every appended record durable.
    pub(crate) fn sync(&mut self) -> Result<(), BackendError> {
        if !self.synced {
            self.file.sync_data().map_err(|e| io(&self.path, e))?;
            self.synced = true;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Forget the last record appended (or the part of it written), which redb did not
    /// commit: `len` is the journal's length before it. The journal is then synced, so the
    /// cut is durable too.
    pub(crate) fn cut(&mut self, len: u64) -> Result<(), BackendError> {
        self.file.set_len(len).map_err(|e| io(&self.path, e))?;
        self.len = len;
        self.file.sync_data().map_err(|e| io(&self.path, e))?;
        self.synced = true;
        Ok(())
    }

    /// Empty the journal after a checkpoint made its batches durable in redb. Should the
    /// empty length not reach the disk, the old records replay harmlessly.
    pub(crate) fn clear(&mut self) -> Result<(), BackendError> {
        self.file.set_len(0).map_err(|e| io(&self.path, e))?;
        self.len = 0;
        self.synced = true;
        let now = Instant::now();
        self.last_sync = now;
        self.last_checkpoint = now;
        Ok(())
    }
}

fn write_at_end(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::End(0))?;
    file.write_all(bytes)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) -> Result<(), BackendError> {
    let n = u32::try_from(b.len())
        .map_err(|_| BackendError::Other(format!("an entry of {} bytes is too large", b.len())))?;
    buf.extend_from_slice(&n.to_le_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

/// The whole records at the start of `bytes`, up to the first torn or corrupt one.
fn parse(mut bytes: &[u8]) -> Vec<Vec<BatchOp>> {
    let mut batches = Vec::new();
    while bytes.len() >= RECORD_HEADER {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(payload) = bytes.get(RECORD_HEADER..RECORD_HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(ops) = parse_ops(payload) else {
            break;
        };
        batches.push(ops);
        bytes = &bytes[RECORD_HEADER + len..];
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

    #[test]
    fn records_replay_in_order_up_to_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let (mut j, found) = Journal::open(&db).unwrap();
        assert!(found.is_empty());
        for i in 0..5 {
            j.append(&batch(i)).unwrap();
        }
        j.sync().unwrap();
        let full = j.len();
        drop(j);
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..5).map(batch).collect::<Vec<_>>());

        // A torn last record, then a corrupt one: the replay keeps what came before.
        let path = dir.path().join("x.redb-journal");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..full as usize - 3]).unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..4).map(batch).collect::<Vec<_>>());
        let mut flipped = bytes.clone();
        let at = flipped.len() - 2;
        flipped[at] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, (0..4).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn cut_and_clear_drop_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb");
        let (mut j, _) = Journal::open(&db).unwrap();
        j.append(&batch(1)).unwrap();
        let before = j.len();
        j.append(&batch(2)).unwrap();
        j.cut(before).unwrap();
        j.append(&batch(3)).unwrap();
        j.sync().unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, vec![batch(1), batch(3)]);
        let (mut j, _) = Journal::open(&db).unwrap();
        j.clear().unwrap();
        j.append(&batch(4)).unwrap();
        j.sync().unwrap();
        let (_, found) = Journal::open(&db).unwrap();
        assert_eq!(found, vec![batch(4)]);
    }
}
