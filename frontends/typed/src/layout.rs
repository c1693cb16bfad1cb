//! Where typed records live in the engine keyspace, and the envelope around each archive.

/// The first byte of every key the typed layer writes (SQL uses `0xF0`; KV Connect keys
/// start with a tuple type byte below `0x30`).
pub const PREFIX: u8 = 0xF1;

const RECORD: u8 = 0x01;
const CREATED: u8 = 0x02;
const NEXT_ID: u8 = 0x03;
const LEASE: u8 = 0x04;
const INDEX: u8 = 0x05;
/// A replica's ids reserved by its server, per tree.
const GRANTS: u8 = 0x06;
/// A replica's records written locally and not yet pushed to its server.
const DIRTY: u8 = 0x07;
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// A replica's own state (its server, how far it has pulled).
const REPLICA: u8 = 0x08;
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// A server's record of which ids it reserved for which client.
const GRANTED: u8 = 0x09;
/// A tree's record schema at one schema version (JSON, see [`crate::schema`]).
const SCHEMA: u8 = 0x0A;

/// The start of every key of one kind in `tree`.
fn tree_prefix(kind: u8, tree: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tree.len() + 16);
    k.push(PREFIX);
    k.push(kind);
    k.extend_from_slice(tree.as_bytes());
    k.push(0);
    k
}

pub(crate) fn record(tree: &str, id: u64, revision: u32) -> Vec<u8> {
    let mut k = tree_prefix(RECORD, tree);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

pub(crate) fn created(tree: &str, id: u64, revision: u32) -> Vec<u8> {
    let mut k = tree_prefix(CREATED, tree);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// The start of every index entry of `tree` (see [`crate::index`]).
pub(crate) fn index_base(tree: &str) -> Vec<u8> {
    tree_prefix(INDEX, tree)
}

/// The check-out of record `id` (all its revisions).
pub(crate) fn lease(tree: &str, id: u64) -> Vec<u8> {
    let mut k = tree_prefix(LEASE, tree);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The schema of `tree`'s records at schema version `version`.
pub(crate) fn schema(tree: &str, version: u32) -> Vec<u8> {
    let mut k = tree_prefix(SCHEMA, tree);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The range of the schemas stored for `tree`.
pub(crate) fn tree_schemas(tree: &str) -> (Vec<u8>, Vec<u8>) {
    let start = tree_prefix(SCHEMA, tree);
    let end = strata_engine::prefix_end(&start);
    (start, end)
}

/// The range of every stored schema (of every tree).
pub(crate) fn schemas() -> (Vec<u8>, Vec<u8>) {
    (vec![PREFIX, SCHEMA], vec![PREFIX, SCHEMA + 1])
}

/// The tree and schema version of a schema key.
pub(crate) fn parse_schema(key: &[u8]) -> Option<(&str, u32)> {
    let rest = key.strip_prefix(&[PREFIX, SCHEMA])?;
    let end = rest.iter().position(|&b| b == 0)?;
    let tree = std::str::from_utf8(&rest[..end]).ok()?;
    let version = u32::from_be_bytes(rest[end + 1..].try_into().ok()?);
    Some((tree, version))
}

pub(crate) fn next_id(tree: &str) -> Vec<u8> {
    tree_prefix(NEXT_ID, tree)
}

/// A replica's unused ids of `tree`, reserved for it by its server.
pub(crate) fn grants(tree: &str) -> Vec<u8> {
    tree_prefix(GRANTS, tree)
}

/// The marker of a record key a replica wrote and has not pushed.
pub(crate) fn dirty(record_key: &[u8]) -> Vec<u8> {
    let mut k = vec![PREFIX, DIRTY];
    k.extend_from_slice(record_key);
    k
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// Every dirty marker, and the record key of one.
pub(crate) fn dirty_range() -> (Vec<u8>, Vec<u8>) {
    let start = vec![PREFIX, DIRTY];
    let end = strata_engine::prefix_end(&start);
    (start, end)
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// The dirty markers of schemas (pushed before records).
pub(crate) fn dirty_schemas_range() -> (Vec<u8>, Vec<u8>) {
    (dirty(&[PREFIX, SCHEMA]), dirty(&[PREFIX, SCHEMA + 1]))
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
pub(crate) fn dirty_record(marker: &[u8]) -> Option<&[u8]> {
    marker.strip_prefix(&[PREFIX, DIRTY])
}

/// The dirty marker that keeps a replica's own version of shared key `key`: a record's
/// own, and for a creation marker its record's (check-outs are the server's alone).
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
pub(crate) fn dirty_guard(key: &[u8]) -> Option<Vec<u8>> {
    match key {
        [PREFIX, RECORD | SCHEMA, ..] => Some(dirty(key)),
        [PREFIX, CREATED, rest @ ..] => {
            let mut record = vec![PREFIX, RECORD];
            record.extend_from_slice(rest);
            Some(dirty(&record))
        }
        _ => None,
    }
}

/// A replica's own state entry `name`.
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
pub(crate) fn replica_state(name: &str) -> Vec<u8> {
    let mut k = vec![PREFIX, REPLICA];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// A server's grant of ids of `tree` starting at `start`.
pub(crate) fn granted(tree: &str, start: u64) -> Vec<u8> {
    let mut k = tree_prefix(GRANTED, tree);
    k.extend_from_slice(&start.to_be_bytes());
    k
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// The server's grants of `tree` starting at or before `id` (the last one may hold it).
pub(crate) fn granted_through(tree: &str, id: u64) -> (Vec<u8>, Vec<u8>) {
    (
        tree_prefix(GRANTED, tree),
        granted(tree, id.saturating_add(1)),
    )
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// Whether a key is one a server shares with its replicas: records, creation markers,
/// check-outs and schemas (not index entries, counters or a replica's own state).
pub(crate) fn is_shared(key: &[u8]) -> bool {
    matches!(key, [PREFIX, RECORD | CREATED | LEASE | SCHEMA, ..])
}

#[cfg_attr(not(feature = "sync"), allow(dead_code))]
/// The ranges of every key a server shares with its replicas: records, creation markers,
/// check-outs, schemas, in that order.
pub(crate) fn shared_ranges() -> Vec<(Vec<u8>, Vec<u8>)> {
    [RECORD, CREATED, LEASE, SCHEMA]
        .into_iter()
        .map(|kind| (vec![PREFIX, kind], vec![PREFIX, kind + 1]))
        .collect()
}

/// The range of every record of `tree` (`[start, end)`).
pub(crate) fn records(tree: &str) -> (Vec<u8>, Vec<u8>) {
    let start = tree_prefix(RECORD, tree);
    let end = strata_engine::prefix_end(&start);
    (start, end)
}

/// The range of every revision of record `id` of `tree`.
pub(crate) fn revisions(tree: &str, id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = tree_prefix(RECORD, tree);
    start.extend_from_slice(&id.to_be_bytes());
    let end = strata_engine::prefix_end(&start);
    (start, end)
}

/// The range of the creation markers of every revision of record `id` of `tree`.
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
pub(crate) fn creations(tree: &str, id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = tree_prefix(CREATED, tree);
    start.extend_from_slice(&id.to_be_bytes());
    let end = strata_engine::prefix_end(&start);
    (start, end)
}

/// `(id, revision)` of a record key of `tree`.
pub(crate) fn parse_record(tree: &str, key: &[u8]) -> Option<(u64, u32)> {
    let rest = key.strip_prefix(tree_prefix(RECORD, tree).as_slice())?;
    let (id, revision) = rest.split_first_chunk::<8>()?;
    let revision: [u8; 4] = revision.try_into().ok()?;
    Some((u64::from_be_bytes(*id), u32::from_be_bytes(revision)))
}

/// What a typed key is about, as [`parse_any`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Record { revision: u32 },
    Lease,
}

/// A record or check-out key, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed<'k> {
    pub tree: &'k str,
    pub id: u64,
    pub kind: Kind,
}

/// The tree, id and kind of a record or check-out key of any tree; `None` for every other
/// key.
pub(crate) fn parse_any(key: &[u8]) -> Option<Parsed<'_>> {
    let (&kind, rest) = key.strip_prefix(&[PREFIX])?.split_first()?;
    let end = rest.iter().position(|&b| b == 0)?;
    let tree = std::str::from_utf8(&rest[..end]).ok()?;
    let body = &rest[end + 1..];
    let id = u64::from_be_bytes(*body.first_chunk::<8>()?);
    let kind = match (kind, &body[8..]) {
        (RECORD, rev) => Kind::Record {
            revision: u32::from_be_bytes(rev.try_into().ok()?),
        },
        (LEASE, []) => Kind::Lease,
        _ => return None,
    };
    Some(Parsed { tree, id, kind })
}

/// The envelope: `STRT`, the format (1), flags, a reserved byte, the schema version (u32
/// LE), 5 reserved bytes; then the archive, 16-byte aligned like the header.
pub(crate) const HEADER: usize = 16;
const MAGIC: &[u8; 4] = b"STRT";
const FORMAT: u8 = 1;
/// Flag: the revision is released.
pub(crate) const RELEASED: u8 = 1;
/// Flag: a compat section follows the archive (see [`envelope_with`]).
pub(crate) const COMPAT: u8 = 2;

/// The header of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub flags: u8,
    pub schema_version: u32,
}

/// The envelope, with (when `compat` is given) the record also archived at an earlier
/// schema version after the archive: header bytes 11..15 hold the archive's length, and
/// the compat section starts at the next 16-byte boundary: that version (u32 LE), 12
/// reserved bytes, the compat archive.
pub(crate) fn envelope_with(
    header: Header,
    archive: &[u8],
    compat: Option<(u32, &[u8])>,
) -> Vec<u8> {
    let flags = match compat {
        Some(_) => header.flags | COMPAT,
        None => header.flags & !COMPAT,
    };
    let mut v = Vec::with_capacity(HEADER + archive.len() + compat.map_or(0, |c| c.1.len() + 32));
    v.extend_from_slice(MAGIC);
    v.push(FORMAT);
    v.push(flags);
    v.push(0);
    v.extend_from_slice(&header.schema_version.to_le_bytes());
    let main_len = match compat {
        Some(_) => u32::try_from(archive.len()).unwrap_or(u32::MAX),
        None => 0,
    };
    v.extend_from_slice(&main_len.to_le_bytes());
    v.push(0);
    debug_assert_eq!(v.len(), HEADER);
    v.extend_from_slice(archive);
    if let Some((version, older)) = compat {
        v.resize(v.len().next_multiple_of(16), 0);
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(older);
    }
    v
}

/// Whether stored bytes are a released revision (garbage is not).
pub(crate) fn is_released(bytes: &[u8]) -> bool {
    open(bytes).is_ok_and(|(h, _)| h.flags & RELEASED != 0)
}

/// The same stored record with `flags` (the compat flag kept as stored).
pub(crate) fn with_flags(bytes: &[u8], flags: u8) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if let Some(f) = v.get_mut(5) {
        *f = (flags & !COMPAT) | (*f & COMPAT);
    }
    v
}

/// The header and archive of a stored record, or what is wrong with it.
pub(crate) fn open(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    Ok(open_all(bytes)?.0)
}

/// The header and archive of a stored record, and its compat section (the earlier schema
/// version and the archive at it), if it has one.
#[allow(clippy::type_complexity)]
pub(crate) fn open_all(bytes: &[u8]) -> Result<((Header, &[u8]), Option<(u32, &[u8])>), String> {
    if bytes.len() < HEADER {
        return Err(format!("{} bytes is too short for a record", bytes.len()));
    }
    let (head, rest) = bytes.split_at(HEADER);
    if &head[..4] != MAGIC {
        return Err("not a typed record (bad magic)".into());
    }
    if head[4] != FORMAT {
        return Err(format!("unknown record format {}", head[4]));
    }
    let le = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let header = Header {
        flags: head[5],
        schema_version: le(7),
    };
    if header.flags & COMPAT == 0 {
        return Ok(((header, rest), None));
    }
    let bad = || "the compat section lies outside the record".to_string();
    let main_len = le(11) as usize;
    let archive = rest.get(..main_len).ok_or_else(bad)?;
    let section = HEADER + main_len.next_multiple_of(16);
    let compat = bytes.get(section..section + 16).ok_or_else(bad)?;
    let version = u32::from_le_bytes([compat[0], compat[1], compat[2], compat[3]]);
    let older = bytes.get(section + 16..).ok_or_else(bad)?;
    Ok(((header, archive), Some((version, older))))
}

/// The record key (tree, id, revision) a stored key is about; empty for other keys.
pub(crate) fn raw_key(key: &[u8]) -> crate::RawKey {
    match parse_any(key) {
        Some(p) => crate::RawKey {
            tree: p.tree.to_string(),
            id: p.id,
            revision: match p.kind {
                Kind::Record { revision } => revision,
                Kind::Lease => 0,
            },
        },
        None => crate::RawKey {
            tree: String::new(),
            id: 0,
            revision: 0,
        },
    }
}
