//! The snapshot file: every database of a node, streamed to disk and to other nodes.
//!
//! ```text
//! "STRATAS1"                      magic and format version
//! 'D' u32 len, name               a database; the pairs after it are its keys
//! 'K' u32 len, key, u32 len, value
//! ...
//! 'E' u64 pair count, u32 crc32   the end: the checksum covers every byte before it
//! ```
//!
//! Integers are big-endian. A file that ends early, or whose checksum or count does not
//! match, is refused before anything is installed: a truncated or damaged snapshot never
//! reaches the state machine.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 8] = b"STRATAS1";
const DATABASE: u8 = b'D';
const PAIR: u8 = b'K';
const END: u8 = b'E';

/// The longest name or key accepted when reading (far above the engine's limits).
const MAX_FIELD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot is damaged: {0}")]
    Damaged(String),
}

/// One record of a snapshot, in file order.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    Database(String),
    Pair(Vec<u8>, Vec<u8>),
}

/// Writes a snapshot, keeping the checksum as it goes.
pub struct SnapshotWriter<W> {
    out: W,
    crc: crc32fast::Hasher,
    pairs: u64,
}

impl<W: AsyncWrite + Unpin> SnapshotWriter<W> {
    pub async fn new(mut out: W) -> Result<Self, SnapshotError> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(MAGIC);
        out.write_all(MAGIC).await?;
        Ok(SnapshotWriter { out, crc, pairs: 0 })
    }

    async fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).await?;
        Ok(())
    }

    async fn field(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| SnapshotError::Damaged("a field longer than 4 GiB".into()))?;
        self.put(&len.to_be_bytes()).await?;
        self.put(bytes).await
    }

    pub async fn database(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.put(&[DATABASE]).await?;
        self.field(name.as_bytes()).await
    }

    pub async fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.put(&[PAIR]).await?;
        self.field(key).await?;
        self.field(value).await?;
        self.pairs += 1;
        Ok(())
    }

    /// Write the end record and flush; returns the writer's output.
    pub async fn finish(mut self) -> Result<W, SnapshotError> {
        let mut end = vec![END];
        end.extend_from_slice(&self.pairs.to_be_bytes());
        self.crc.update(&end);
        end.extend_from_slice(&self.crc.clone().finalize().to_be_bytes());
        self.out.write_all(&end).await?;
        self.out.flush().await?;
        Ok(self.out)
    }
}

/// Reads a snapshot record by record, checking it as it goes; `next` returns `None` only
/// after a valid end record.
pub struct SnapshotReader<R> {
    input: R,
    crc: crc32fast::Hasher,
    pairs: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> SnapshotReader<R> {
    pub async fn new(mut input: R) -> Result<Self, SnapshotError> {
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic).await?;
        if &magic != MAGIC {
            return Err(SnapshotError::Damaged("not a Strata snapshot".into()));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&magic);
        Ok(SnapshotReader {
            input,
            crc,
            pairs: 0,
            done: false,
        })
    }

    async fn take(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        read_exact(&mut self.input, buf).await?;
        self.crc.update(buf);
        Ok(())
    }

    async fn field(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let mut len = [0u8; 4];
        self.take(&mut len).await?;
        let len = u32::from_be_bytes(len);
        if len > MAX_FIELD {
            return Err(SnapshotError::Damaged(format!("a field of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.take(&mut buf).await?;
        Ok(buf)
    }

    pub async fn next(&mut self) -> Result<Option<Record>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag).await?;
        match tag[0] {
            DATABASE => {
                let name = String::from_utf8(self.field().await?)
                    .map_err(|_| SnapshotError::Damaged("a database name is not UTF-8".into()))?;
                Ok(Some(Record::Database(name)))
            }
            PAIR => {
                let k = self.field().await?;
                let v = self.field().await?;
                self.pairs += 1;
                Ok(Some(Record::Pair(k, v)))
            }
            END => {
                let mut count = [0u8; 8];
                self.take(&mut count).await?;
                let expected = self.crc.clone().finalize();
                let mut crc = [0u8; 4];
                read_exact(&mut self.input, &mut crc).await?;
                if u32::from_be_bytes(crc) != expected {
                    return Err(SnapshotError::Damaged("checksum mismatch".into()));
                }
                if u64::from_be_bytes(count) != self.pairs {
                    return Err(SnapshotError::Damaged(format!(
                        "{} pairs read, {} announced",
                        self.pairs,
                        u64::from_be_bytes(count)
                    )));
                }
                self.done = true;
                Ok(None)
            }
            other => Err(SnapshotError::Damaged(format!(
                "unknown record tag {other}"
            ))),
        }
    }

    /// Read to the end, checking everything; the number of pairs.
    pub async fn verify(mut self) -> Result<u64, SnapshotError> {
        while self.next().await?.is_some() {}
        Ok(self.pairs)
    }
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), SnapshotError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(SnapshotError::Damaged("it ends early (truncated)".into()))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new()).await.unwrap();
        w.database("shop").await.unwrap();
        w.pair(b"a", b"1").await.unwrap();
        w.pair(b"b", b"").await.unwrap();
        w.database("empty").await.unwrap();
        w.finish().await.unwrap()
    }

    #[tokio::test]
    async fn a_snapshot_reads_back_as_written() {
        let bytes = sample().await;
        let mut r = SnapshotReader::new(&bytes[..]).await.unwrap();
        let mut seen = Vec::new();
        while let Some(rec) = r.next().await.unwrap() {
            seen.push(rec);
        }
        assert_eq!(
            seen,
            vec![
                Record::Database("shop".into()),
                Record::Pair(b"a".to_vec(), b"1".to_vec()),
                Record::Pair(b"b".to_vec(), Vec::new()),
                Record::Database("empty".into()),
            ]
        );
    }

    #[tokio::test]
    async fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = sample().await;
        for cut in 0..bytes.len() {
            let r = match SnapshotReader::new(&bytes[..cut]).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            assert!(r.verify().await.is_err(), "truncated at {cut} accepted");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let verdict = match SnapshotReader::new(&bad[..]).await {
                Ok(r) => r.verify().await.map(|_| ()),
                Err(e) => Err(e),
            };
            assert!(verdict.is_err(), "byte {i} flipped accepted");
        }
    }
}
