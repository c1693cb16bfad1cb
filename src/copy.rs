//! `strata copy SRC DST`: copy one database or all of them between any two stores,
//! preserving keys, values, versionstamps, expiries, queued messages and dead letters; with progress, and a
//! verification at the end (entry counts and a checksum of the copied keyspace on both sides).

use strata_engine::{Engine, EngineError, Entry, Snapshot};

use crate::progress::Progress;

/// Entries per read and per restore commit.
const BATCH: usize = 500;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub entries: u64,
    pub checksum: u64,
}

impl Digest {
    /// FNV-1a over every field that a copy must preserve, in key order.
    fn add(&mut self, e: &Entry) {
        let mut h = if self.entries == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.checksum
        };
        let mut feed = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&e.key);
        feed(&e.value.data);
        feed(&[e.value.encoding.tag()]);
        feed(&e.versionstamp.0);
        feed(&e.expires_at.unwrap_or(0).to_be_bytes());
        self.checksum = h;
        self.entries += 1;
    }
}

async fn digest(snapshot: &Snapshot) -> Result<Digest, EngineError> {
    let mut d = Digest::default();
    let mut start = Vec::new();
    loop {
        let batch = snapshot.entries(&start, &[], BATCH).await?;
        for e in &batch {
            d.add(e);
        }
        match batch.last() {
            Some(last) if batch.len() == BATCH => {
                start = last.key.clone();
                start.push(0);
            }
            _ => return Ok(d),
        }
    }
}

/// What one database's copy did.
#[derive(Debug)]
pub struct Copied {
    pub name: String,
    pub target: Digest,
    pub messages: usize,
    pub dead_letters: usize,
}

/// Copy database `name` from `src` to `dst`.
pub async fn copy_database(
    src: &Engine,
    dst: &Engine,
    name: &str,
    overwrite: bool,
) -> Result<Copied, String> {
    let e = |e: EngineError| e.to_string();
    let source = src.database(name).await.map_err(e)?;
    if dst.exists(name).await.map_err(e)? {
        let existing = dst.database(name).await.map_err(e)?;
        let empty = existing
            .snapshot()
            .await
            .map_err(e)?
            .entries(&[], &[], 1)
            .await
            .map_err(e)?
            .is_empty()
            && existing.queue_len().await.map_err(e)? == 0;
        if !empty && !overwrite {
            return Err(format!(
                "target database {name:?} is not empty; pass --overwrite to replace it"
            ));
        }
        dst.drop_database(name).await.map_err(e)?;
    }
    let target = dst
        .create_database(name, Some(source.options().clone()))
        .await
        .map_err(e)?;
    let snapshot = source.snapshot().await.map_err(e)?;
    let source_digest = digest(&snapshot).await.map_err(e)?;
    let mut progress = Progress::new(format!("copy {name}"), source_digest.entries, "entries");
    let mut start = Vec::new();
    loop {
        let batch = snapshot.entries(&start, &[], BATCH).await.map_err(e)?;
        let more = batch.len() == BATCH;
        if let Some(last) = batch.last() {
            start = last.key.clone();
            start.push(0);
        }
        let n = batch.len() as u64;
        if n > 0 {
            target
                .restore(batch, vec![], snapshot.version())
                .await
                .map_err(e)?;
            progress.advance(n);
        }
        if !more {
            break;
        }
    }
    if source_digest.entries == 0 {
        progress.draw();
    }
    let messages = snapshot.messages().await.map_err(e)?;
    let dead_letters = messages.iter().filter(|m| m.given_up_at.is_some()).count();
    let message_count = messages.len() - dead_letters;
    for chunk in messages.chunks(BATCH) {
        target
            .restore(vec![], chunk.to_vec(), snapshot.version())
            .await
            .map_err(e)?;
    }
    // The target's version must pass the source's even when there was nothing to copy.
    if source_digest.entries == 0 && messages.is_empty() {
        target
            .restore(vec![], vec![], snapshot.version())
            .await
            .map_err(e)?;
    }
    let target_digest = digest(&target.snapshot().await.map_err(e)?)
        .await
        .map_err(e)?;
    let target_messages = target.queue_len().await.map_err(e)?;
    let target_dead = target.dead_letter_count().await.map_err(e)?;
    if target_digest != source_digest
        || target_messages != message_count
        || target_dead != dead_letters
    {
        return Err(format!(
            "verification failed for {name}: source {} entries (checksum {:016x}), {} messages, {} dead letters; target {} entries (checksum {:016x}), {} messages, {} dead letters",
            source_digest.entries, source_digest.checksum, message_count, dead_letters, target_digest.entries, target_digest.checksum, target_messages, target_dead
        ));
    }
    Ok(Copied {
        name: name.to_string(),
        target: target_digest,
        messages: message_count,
        dead_letters,
    })
}

/// Copy the named database, or all of the source's databases.
pub async fn copy(
    src: &Engine,
    dst: &Engine,
    database: Option<&str>,
    overwrite: bool,
) -> Result<Vec<Copied>, String> {
    let names = match database {
        Some(n) => vec![n.to_string()],
        None => src.list_databases().await.map_err(|e| e.to_string())?,
    };
    if names.is_empty() {
        return Err("the source store has no databases".into());
    }
    let mut out = Vec::new();
    for name in names {
        let c = copy_database(src, dst, &name, overwrite).await?;
        let dead = match c.dead_letters {
            0 => String::new(),
            n => format!(", {n} dead letters"),
        };
        eprintln!(
            "copied {}: {} entries, {} queued messages{dead}; verified (checksum {:016x})",
            c.name, c.target.entries, c.messages, c.target.checksum
        );
        out.push(c);
    }
    Ok(out)
}
