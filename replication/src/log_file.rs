//! The Raft log's entries in files of their own: append-only segments in the node's data
//! directory (`raft-log/`), beside its store.
//!
//! Every entry is appended once, synced, read back from memory (see [`crate::store`]'s
//! tail) and, after a snapshot covers it, dropped with its whole segment. Kept in the
//! store instead, each entry was also written into the store's B-tree, and later deleted
//! from it again, on every node.
//!
//! ## Format
//!
//! A segment is named after its first entry's index (`00000000000000000042.log`, 20
//! digits, so names sort as indexes do). It starts with `"strata-raftlog\0\x01"`; records
//! follow: `payload length: u32 LE, CRC-32 of index and payload: u32 LE, index: u64 LE,
//! payload` (the entry, postcard-encoded). Indexes run on by one, within a segment and from
//! one segment to the next.
//!
//! The active segment grows in zero-filled chunks, so that an `fdatasync` of a record
//! writes the record alone, not the file's size too. Past [`SEGMENT_BYTES`] the next append
//! starts a new segment.
//!
//! ## Recovery
//!
//! Opening reads every segment. In the last one, reading stops at the first record that is
//! not whole, fails its checksum or does not carry the next index: zeros past the end, or a
//! record torn by a crash (never acknowledged: an append returns after its sync). Everything
//! from there on is zeroed, so that no record written before the crash can reappear after
//! the records written next. In an earlier segment every record was synced before the next
//! segment began, so a bad one there is damage, and the node refuses to start rather than
//! lose committed entries silently.
//!
//! Truncating (a new leader's entries replace a suffix) zeroes the removed records and
//! deletes whole segments after them, synced before it returns; purging deletes the
//! segments whose every entry is purged (the caller records how far the log is purged
//! first, and entries up to there are hidden on open).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 16] = b"strata-raftlog\0\x01";
const HEADER: u64 = MAGIC.len() as u64;
const RECORD_HEADER: usize = 16;
/// A new segment is started once the active one holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The active segment grows by this much at a time, zero-filled.
const CHUNK: u64 = 1 << 20;
const EXT: &str = "log";

/// A failure of the log files, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogFileError(String);

type Result<T> = std::result::Result<T, LogFileError>;

fn err(path: &Path, e: impl std::fmt::Display) -> LogFileError {
    LogFileError(format!("{}: {e}", path.display()))
}

/// The log's entries on disk, and where each one is.
pub struct LogFile {
    dir: PathBuf,
    segment_bytes: u64,
    /// By first index; the last is the one appended to.
    segments: BTreeMap<u64, Segment>,
    /// Entries before this index are purged (hidden, even where their segment remains).
    first: u64,
}

struct Segment {
    path: PathBuf,
    file: File,
    /// The index of its first entry.
    first: u64,
    /// Where each entry's record starts: entry `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
    /// The file's size: zeros from `end` on.
    allocated: u64,
}

impl Segment {
    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    fn last(&self) -> Option<u64> {
        self.next()
            .checked_sub(1)
            .filter(|_| !self.offsets.is_empty())
    }

    /// Write zeros over `from..to`, and sync.
    fn zero(&mut self, from: u64, to: u64) -> Result<()> {
        if to > from {
            let zeros = vec![0u8; (to - from) as usize];
            self.file
                .write_all_at(&zeros, from)
                .map_err(|e| err(&self.path, e))?;
            self.file.sync_data().map_err(|e| err(&self.path, e))?;
        }
        Ok(())
    }
}

/// What reading a segment found.
struct Scan {
    offsets: Vec<u64>,
    end: u64,
    /// Whether reading stopped at something other than zeros or the end of the file.
    torn: bool,
}

fn scan(bytes: &[u8], first: u64) -> Scan {
    let mut offsets = Vec::new();
    let mut at = HEADER as usize;
    while let Some(payload) = record_at(bytes, at, first + offsets.len() as u64) {
        offsets.push(at as u64);
        at += RECORD_HEADER + payload.len();
    }
    Scan {
        offsets,
        end: at as u64,
        // Zeros (a zeroed header never checks out) end the log cleanly; anything else is
        // a record cut short or damaged.
        torn: bytes
            .get(at..)
            .is_some_and(|rest| rest.iter().any(|b| *b != 0)),
    }
}

/// The payload of the record at `at`, if it is whole, carries `index` and passes its
/// checksum.
fn record_at(bytes: &[u8], at: usize, index: u64) -> Option<&[u8]> {
    let head = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let len = u32::from_le_bytes(head[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let stored = u64::from_le_bytes(head[8..16].try_into().ok()?);
    let payload = bytes.get(at + RECORD_HEADER..(at + RECORD_HEADER).checked_add(len)?)?;
    (stored == index && checksum(index, payload) == crc).then_some(payload)
}

/// Add the record of entry `index` to `buf`.
fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| LogFileError(format!("log entry {index} is over 4 GiB")))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{EXT}")
}

/// Sync a directory, so that files made or removed in it stay so after a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))
}

impl LogFile {
    /// Open the log in `dir` (created if missing). Entries up to `purged` are hidden, and
    /// segments holding nothing else are deleted.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<LogFile> {
        Self::open_with(dir, purged, SEGMENT_BYTES)
    }

    /// [`LogFile::open`] with segments of `segment_bytes` (small ones in tests).
    pub fn open_with(dir: &Path, purged: Option<u64>, segment_bytes: u64) -> Result<LogFile> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
            let path = item.map_err(|e| err(dir, e))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(&format!(".{EXT}")))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let first = purged.map_or(0, |p| p + 1);
        let mut log = LogFile {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: BTreeMap::new(),
            first,
        };
        let count = names.len();
        for (n, (start, path)) in names.into_iter().enumerate() {
            let last_segment = n + 1 == count;
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| err(&path, e))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(|e| err(&path, e))?;
            if bytes.len() < HEADER as usize || &bytes[..HEADER as usize] != MAGIC {
                let fresh = bytes
                    .get(HEADER as usize..)
                    .is_none_or(|rest| rest.iter().all(|b| *b == 0));
                if last_segment && fresh {
                    // Created, but the crash came before its header was synced: no record
                    // was ever written to it.
                    std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
                    continue;
                }
                return Err(err(&path, "not a Raft log segment (bad header)"));
            }
            let found = scan(&bytes, start);
            if let Some(prev) = log.segments.values().next_back() {
                if !found.offsets.is_empty() && prev.next() != start {
                    return Err(err(
                        &path,
                        format!(
                            "the log is damaged: entries {} to {} are missing",
                            prev.next(),
                            start - 1
                        ),
                    ));
                }
            }
            if found.torn && !last_segment {
                return Err(err(
                    &path,
                    format!(
                        "the log is damaged: the record at byte {} (entry {}) is unreadable, \
                         and later segments hold newer entries",
                        found.end,
                        start + found.offsets.len() as u64
                    ),
                ));
            }
            let mut segment = Segment {
                path,
                file,
                first: start,
                offsets: found.offsets,
                end: found.end,
                allocated: bytes.len() as u64,
            };
            if last_segment {
                if found.torn {
                    tracing::warn!(
                        segment = %segment.path.display(),
                        at = segment.end,
                        "the Raft log ends in a record torn by a crash; it is dropped (it was never acknowledged)"
                    );
                }
                // Nothing written before a crash may reappear after the next records.
                let end = segment.end;
                segment.zero(end, segment.allocated)?;
            }
            // Every entry purged, or none at all before the last segment: nothing to keep.
            let purged = segment.last().is_some_and(|l| l < first);
            if purged || (segment.offsets.is_empty() && !last_segment) {
                std::fs::remove_file(&segment.path).map_err(|e| err(&segment.path, e))?;
                continue;
            }
            log.segments.insert(start, segment);
        }
        sync_dir(dir)?;
        Ok(log)
    }

    /// The index of the last entry held, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.segments
            .values()
            .next_back()
            .and_then(|s| s.last())
            .filter(|l| *l >= self.first)
    }

    /// Append entries (`(index, encoded entry)`, consecutive, following the last one held
    /// unless the log is empty), synced.
    pub fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<()> {
        let Some((first, _)) = entries.first() else {
            return Ok(());
        };
        if let Some(last) = self.last_index() {
            if *first != last + 1 {
                return Err(LogFileError(format!(
                    "appending entry {first} after entry {last} would leave a hole in the log"
                )));
            }
        } else if self.segments.values().any(|s| !s.offsets.is_empty()) {
            // Every entry held is purged: start afresh.
            self.remove_segments(|_| true)?;
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for (i, (index, payload)) in entries.iter().enumerate() {
            if *index != first + i as u64 {
                return Err(LogFileError(format!(
                    "entries to append are not consecutive at {index}"
                )));
            }
            offsets.push(buf.len() as u64);
            encode_record(&mut buf, *index, payload)?;
        }
        // An empty segment (left by a failed append, or found so at start) serves only if it
        // is named after this entry.
        let first = *first;
        self.remove_segments(|s| s.offsets.is_empty() && s.first != first)?;
        if self
            .segments
            .values()
            .next_back()
            .is_none_or(|s| s.end >= self.segment_bytes)
        {
            self.new_segment(first)?;
        }
        let segment = self
            .segments
            .values_mut()
            .next_back()
            .expect("a segment to append to");
        let at = segment.end;
        let needed = at + buf.len() as u64;
        if needed > segment.allocated {
            // Zeros first, then the records over them: one size change per chunk.
            let grown = needed.div_ceil(CHUNK) * CHUNK;
            let zeros = vec![0u8; (grown - segment.allocated) as usize];
            segment
                .file
                .write_all_at(&zeros, segment.allocated)
                .map_err(|e| err(&segment.path, e))?;
            segment.allocated = grown;
        }
        let written = segment
            .file
            .write_all_at(&buf, at)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            // What reached the disk is unknown: make sure none of it reads as entries.
            let _ = segment.zero(at, needed);
            return Err(err(&segment.path, e));
        }
        segment.offsets.extend(offsets.into_iter().map(|o| at + o));
        segment.end = needed;
        Ok(())
    }

    fn new_segment(&mut self, first: u64) -> Result<()> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        let mut head = MAGIC.to_vec();
        head.resize(CHUNK as usize, 0);
        file.write_all_at(&head, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| err(&path, e))?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            first,
            Segment {
                path,
                file,
                first,
                offsets: Vec::new(),
                end: HEADER,
                allocated: CHUNK,
            },
        );
        Ok(())
    }

    /// The encoded entries `start..end` (`None`: to the last) that the log holds.
    pub fn read(&self, start: u64, end: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let start = start.max(self.first);
        let end = match (end, self.last_index()) {
            (_, None) => return Ok(Vec::new()),
            (Some(e), Some(last)) => e.min(last + 1),
            (None, Some(last)) => last + 1,
        };
        let mut out = Vec::new();
        for segment in self.segments.values() {
            let (from, to) = (start.max(segment.first), end.min(segment.next()));
            if from >= to {
                continue;
            }
            let offset = |i: u64| segment.offsets[(i - segment.first) as usize];
            let begin = offset(from);
            let stop = match to < segment.next() {
                true => offset(to),
                false => segment.end,
            };
            let mut bytes = vec![0u8; (stop - begin) as usize];
            segment
                .file
                .read_exact_at(&mut bytes, begin)
                .map_err(|e| err(&segment.path, e))?;
            let mut at = 0usize;
            for index in from..to {
                let payload = record_at(&bytes, at, index).ok_or_else(|| {
                    err(
                        &segment.path,
                        format!("entry {index} is cut short or fails its checksum"),
                    )
                })?;
                out.push((index, payload.to_vec()));
                at += RECORD_HEADER + payload.len();
            }
        }
        Ok(out)
    }

    /// Remove the entries from `index` on, synced.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        self.remove_segments(|s| s.first >= index)?;
        if let Some(segment) = self.segments.values_mut().next_back() {
            if index < segment.next() {
                let keep = index.saturating_sub(segment.first) as usize;
                let at = segment.offsets.get(keep).copied().unwrap_or(segment.end);
                let end = segment.end;
                segment.zero(at, end)?;
                segment.offsets.truncate(keep);
                segment.end = at;
            }
        }
        Ok(())
    }

    /// Forget the entries up to `index` (inclusive); segments holding nothing newer are
    /// deleted. The caller has recorded durably that the log is purged that far.
    pub fn purge(&mut self, index: u64) -> Result<()> {
        self.first = self.first.max(index + 1);
        let first = self.first;
        self.remove_segments(|s| s.last().is_some_and(|l| l < first))
    }

    /// Delete every segment (before writing the log afresh).
    pub fn clear(&mut self) -> Result<()> {
        self.remove_segments(|_| true)
    }

    fn remove_segments(&mut self, doomed: impl Fn(&Segment) -> bool) -> Result<()> {
        let gone: Vec<u64> = self
            .segments
            .values()
            .filter(|s| doomed(s))
            .map(|s| s.first)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        // Newest first: a crash part way leaves a log without a hole.
        for first in gone.iter().rev() {
            if let Some(s) = self.segments.remove(first) {
                std::fs::remove_file(&s.path).map_err(|e| err(&s.path, e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    //! Each case writes a log, changes it the way openraft or a crash would, and reopens it
    //! to check what it reads back.

    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| {
                (
                    i,
                    format!("entry {i} ")
                        .repeat(1 + i as usize % 7)
                        .into_bytes(),
                )
            })
            .collect()
    }

    /// Append entries `1..=last`, `step` at a time (small appends fill small segments).
    fn filled(dir: &Path, last: u64, step: u64) -> LogFile {
        let mut log = LogFile::open_with(dir, None, 512).unwrap();
        for start in (1..=last).step_by(step as usize) {
            log.append(&entries(start..=(start + step - 1).min(last)))
                .unwrap();
        }
        log
    }

    fn indexes(log: &LogFile, start: u64, end: Option<u64>) -> Vec<u64> {
        let read = log.read(start, end).expect("a read");
        for (i, payload) in &read {
            assert_eq!(
                payload,
                &entries(*i..=*i)[0].1,
                "entry {i} reads back as written"
            );
        }
        read.into_iter().map(|(i, _)| i).collect()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn entries_read_back_across_segments_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LogFile::open(dir.path(), None).unwrap().last_index(), None);
        let log = filled(dir.path(), 40, 3);
        assert!(
            segment_files(dir.path()).len() > 2,
            "small segments roll over"
        );
        assert_eq!(indexes(&log, 1, None), (1..=40).collect::<Vec<_>>());
        assert_eq!(indexes(&log, 7, Some(12)), (7..12).collect::<Vec<_>>());
        assert_eq!(indexes(&log, 35, Some(99)), (35..=40).collect::<Vec<_>>());

        let log = LogFile::open_with(dir.path(), None, 512).unwrap();
        assert_eq!(log.last_index(), Some(40));
        assert_eq!(indexes(&log, 0, None), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn a_hole_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None).unwrap();
        log.append(&entries(1..=3)).unwrap();
        let e = log.append(&entries(5..=6)).unwrap_err();
        assert!(e.to_string().contains("hole"), "{e}");
        let mut gapped = entries(4..=4);
        gapped.extend(entries(6..=6));
        let e = log.append(&gapped).unwrap_err();
        assert!(e.to_string().contains("not consecutive"), "{e}");
        assert_eq!(log.last_index(), Some(3));
        let log = LogFile::open(dir.path(), None).unwrap();
        assert_eq!(log.last_index(), Some(3));
    }

    #[test]
    fn truncated_entries_stay_gone_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 40, 4);
        log.truncate(12).unwrap();
        assert_eq!(log.last_index(), Some(11));
        // Reopened at once (a crash right after the truncation): no removed entry is back.
        let mut log = LogFile::open_with(dir.path(), None, 512).unwrap();
        assert_eq!(indexes(&log, 1, None), (1..=11).collect::<Vec<_>>());
        log.append(&entries(12..=13)).unwrap();
        let log = LogFile::open_with(dir.path(), None, 512).unwrap();
        assert_eq!(indexes(&log, 1, None), (1..=13).collect::<Vec<_>>());
    }

    #[test]
    fn purged_entries_are_hidden_and_their_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 60, 5);
        let before = segment_files(dir.path()).len();
        log.purge(45).unwrap();
        assert!(segment_files(dir.path()).len() < before);
        assert_eq!(indexes(&log, 1, None), (46..=60).collect::<Vec<_>>());
        let log = LogFile::open_with(dir.path(), Some(45), 512).unwrap();
        assert_eq!(indexes(&log, 1, None), (46..=60).collect::<Vec<_>>());

        // Purged past the end (a snapshot installed): the next entry may come from anywhere.
        let mut log = LogFile::open_with(dir.path(), Some(100), 512).unwrap();
        assert_eq!(log.last_index(), None);
        assert!(segment_files(dir.path()).is_empty());
        log.append(&entries(101..=102)).unwrap();
        let log = LogFile::open_with(dir.path(), Some(100), 512).unwrap();
        assert_eq!(indexes(&log, 0, None), vec![101, 102]);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_never_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None).unwrap();
        log.append(&entries(1..=3)).unwrap();
        let end = log.segments.values().next_back().unwrap().end;
        let path = dir.path().join(segment_name(1));
        // A crash in the middle of writing entries 4 and 5: 4 cut short, 5 whole after it.
        let mut damaged = Vec::new();
        for (index, payload) in entries(4..=5) {
            encode_record(&mut damaged, index, &payload).unwrap();
        }
        damaged[RECORD_HEADER + 2] ^= 0xff;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&damaged, end)
            .unwrap();

        let mut log = LogFile::open(dir.path(), None).unwrap();
        assert_eq!(log.last_index(), Some(3));
        // The next entry 4 is as long as the torn one: the old entry 5, whole, would follow
        // it with the next index and a good checksum, had the recovery not zeroed it.
        let new = vec![b'n'; entries(4..=4)[0].1.len()];
        log.append(&[(4, new.clone())]).unwrap();
        let log = LogFile::open(dir.path(), None).unwrap();
        assert_eq!(log.last_index(), Some(4));
        assert_eq!(log.read(4, None).unwrap(), vec![(4, new)]);

        // A new segment whose header a crash cut short never held a record: it goes.
        std::fs::write(dir.path().join(segment_name(5)), &MAGIC[..5]).unwrap();
        let log = LogFile::open(dir.path(), None).unwrap();
        assert_eq!(log.last_index(), Some(4));
        assert_eq!(segment_files(dir.path()), [segment_name(1)]);
    }

    #[test]
    fn damage_before_the_last_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 40, 20);
        let files = segment_files(dir.path());
        assert!(files.len() >= 2);
        let first = dir.path().join(&files[0]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        f.write_all_at(b"garbage", HEADER + RECORD_HEADER as u64 + 1)
            .unwrap();
        let e = LogFile::open_with(dir.path(), None, 512)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    /// A disk that is full when a new segment is due (the segment's name leads to
    /// `/dev/full`, where every write fails with ENOSPC): the append fails naming the file,
    /// and every entry appended before it is still there, in this process and after a
    /// restart, with the next append landing right after them once there is room.
    #[test]
    fn a_full_disk_fails_the_append_and_keeps_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 10, 2);
        let full = |i: u64| dir.path().join(segment_name(i));
        let mut failed = None;
        for i in 11..=200 {
            std::os::unix::fs::symlink("/dev/full", full(i)).unwrap();
            let appended = log.append(&entries(i..=i));
            std::fs::remove_file(full(i)).unwrap();
            if let Err(e) = appended {
                failed = Some((i, e));
                break;
            }
        }
        let (i, e) = failed.expect("some append needs a new segment");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert!(
            e.to_string().contains(&segment_name(i)),
            "names the file: {e}"
        );
        assert_eq!(log.last_index(), Some(i - 1));
        assert_eq!(indexes(&log, 1, None), (1..i).collect::<Vec<_>>());

        // A restart reads every entry appended before the failure.
        let reopened = LogFile::open_with(dir.path(), None, 512).unwrap();
        assert_eq!(indexes(&reopened, 1, None), (1..i).collect::<Vec<_>>());
        drop(reopened);
        // Room again: the same log appends the entry it could not, and the next.
        log.append(&entries(i..=i + 1)).unwrap();
        assert_eq!(indexes(&log, 1, None), (1..=i + 1).collect::<Vec<_>>());
        let reopened = LogFile::open_with(dir.path(), None, 512).unwrap();
        assert_eq!(indexes(&reopened, 1, None), (1..=i + 1).collect::<Vec<_>>());
    }

    #[test]
    fn a_missing_segment_or_a_bad_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 60, 5);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        std::fs::remove_file(dir.path().join(&files[1])).unwrap();
        let e = LogFile::open_with(dir.path(), None, 512)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("missing"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 60, 5);
        let first = dir.path().join(&segment_files(dir.path())[0]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .write_all_at(b"not a log", 0)
            .unwrap();
        let e = LogFile::open_with(dir.path(), None, 512)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("bad header"), "{e}");
    }
}
