//! The order-preserving tuple codec, and the keys the SQL layer writes.
//!
//! Every key the layer writes is a [`Key`] encoded by this one codec, never a hand-built byte
//! string. A tuple of [`Datum`]s encodes so that byte order is value order, element by
//! element (as FoundationDB's tuple layer does):
//!
//! ```text
//! NULL       05                        sorts first, as in SQLite
//! FALSE/TRUE 06 / 07
//! INTEGER    10 <8 bytes big-endian, sign bit flipped>
//! DOUBLE     11 <8 bytes: IEEE bits, all flipped if negative, else sign bit set>
//!            (-0 is stored as 0; NaN is one value, after +infinity)
//! DECIMAL    12 <16 bytes big-endian, sign bit flipped> <scale>
//! DATE       13 <4 bytes, sign bit flipped>
//! TIMESTAMP  14 <8 bytes, sign bit flipped>
//! TEXT       20 <UTF-8, each 00 written 00 FF> 00
//! BYTES      21 <bytes, each 00 written 00 FF> 00
//! ```
//!
//! Within one column every value has the column's type, so mixed-type order never arises in
//! a key. Rows are `(column id, value)` pairs, so adding, dropping and renaming a column never
//! rewrites a row; they need no order, so they have a compact format of their own
//! ([`ROW_FORMAT`]).
//!
//! All SQL keys start with one byte, [`SQL_PREFIX`], that no KV Connect key starts with, so
//! SQL tables and Deno KV data can share a database without meeting.

use crate::error::{Result, SqlError};
use crate::types::{Datum, DatumRef};

/// The first byte of every key the SQL layer writes.
pub const SQL_PREFIX: u8 = 0xF0;

const NULL: u8 = 0x05;
const FALSE: u8 = 0x06;
const TRUE: u8 = 0x07;
const INT: u8 = 0x10;
const FLOAT: u8 = 0x11;
const DECIMAL: u8 = 0x12;
const DATE: u8 = 0x13;
const TIMESTAMP: u8 = 0x14;
const TEXT: u8 = 0x20;
const BYTES: u8 = 0x21;

/// The keys of the SQL layer, one variant per kind of record.
#[derive(Debug, Clone, PartialEq)]
pub enum Key<'a> {
    /// The schema version: bumped by every DDL statement.
    SchemaVersion,
    /// The allocator of table and index ids.
    NextObjectId,
    /// A table's definition, by name.
    Table(&'a str),
    /// A view's definition, by name.
    View(&'a str),
    /// A table's auto-increment high-water mark.
    Sequence(u64),
    /// Every row-count shard of a table (a prefix; see [`crate::stats`]).
    RowCounts(u64),
    /// One row-count shard: the table, a process id, a sequence number.
    RowCountShard(u64, u64, u64),
    /// Every row of a table (a prefix).
    Rows(u64),
    /// One row, by its primary-key values.
    Row(u64, &'a [Datum]),
    /// Every entry of one index (a prefix).
    IndexEntries(u64, u64),
    /// An index entry: the indexed values, then the row's primary key.
    IndexEntry(u64, u64, &'a [Datum], &'a [Datum]),
}

const KIND_SCHEMA_VERSION: u8 = 0x01;
const KIND_NEXT_ID: u8 = 0x02;
const KIND_TABLE: u8 = 0x03;
const KIND_VIEW: u8 = 0x04;
const KIND_SEQUENCE: u8 = 0x05;
const KIND_ROW_COUNT: u8 = 0x06;
const KIND_ROW: u8 = 0x10;
const KIND_INDEX: u8 = 0x11;

impl Key<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SQL_PREFIX];
        match self {
            Key::SchemaVersion => out.push(KIND_SCHEMA_VERSION),
            Key::NextObjectId => out.push(KIND_NEXT_ID),
            Key::Table(name) => {
                out.push(KIND_TABLE);
                encode_text(&mut out, TEXT, name.as_bytes());
            }
            Key::View(name) => {
                out.push(KIND_VIEW);
                encode_text(&mut out, TEXT, name.as_bytes());
            }
            Key::Sequence(table) => {
                out.push(KIND_SEQUENCE);
                encode_datum(&mut out, &Datum::Int(*table as i64));
            }
            Key::RowCounts(table) => {
                out.push(KIND_ROW_COUNT);
                encode_datum(&mut out, &Datum::Int(*table as i64));
            }
            Key::RowCountShard(table, process, seq) => {
                out.push(KIND_ROW_COUNT);
                encode_datum(&mut out, &Datum::Int(*table as i64));
                encode_datum(&mut out, &Datum::Int(*process as i64));
                encode_datum(&mut out, &Datum::Int(*seq as i64));
            }
            Key::Rows(table) => {
                out.push(KIND_ROW);
                encode_datum(&mut out, &Datum::Int(*table as i64));
            }
            Key::Row(table, pk) => {
                out.push(KIND_ROW);
                encode_datum(&mut out, &Datum::Int(*table as i64));
                encode_into(&mut out, pk);
            }
            Key::IndexEntries(table, index) => {
                out.push(KIND_INDEX);
                encode_datum(&mut out, &Datum::Int(*table as i64));
                encode_datum(&mut out, &Datum::Int(*index as i64));
            }
            Key::IndexEntry(table, index, values, pk) => {
                out.push(KIND_INDEX);
                encode_datum(&mut out, &Datum::Int(*table as i64));
                encode_datum(&mut out, &Datum::Int(*index as i64));
                encode_into(&mut out, values);
                encode_into(&mut out, pk);
            }
        }
        out
    }
}

/// Encode a tuple.
pub fn encode(values: &[Datum]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    encode_into(&mut out, values);
    out
}

/// Append the encoding of a tuple to `out`.
pub fn encode_into(out: &mut Vec<u8>, values: &[Datum]) {
    for v in values {
        encode_datum(out, v);
    }
}

fn encode_text(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.push(0);
}

/// The byte pattern of a double that sorts like the number.
fn float_bits(f: f64) -> u64 {
    let bits = canonical_float(f).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn encode_datum(out: &mut Vec<u8>, v: &Datum) {
    match v {
        Datum::Null => out.push(NULL),
        Datum::Bool(false) => out.push(FALSE),
        Datum::Bool(true) => out.push(TRUE),
        Datum::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Datum::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&float_bits(*f).to_be_bytes());
        }
        Datum::Decimal(v, scale) => {
            out.push(DECIMAL);
            out.extend_from_slice(&((*v as u128) ^ (1 << 127)).to_be_bytes());
            out.push(*scale as u8);
        }
        Datum::Date(d) => {
            out.push(DATE);
            out.extend_from_slice(&((*d as u32) ^ (1 << 31)).to_be_bytes());
        }
        Datum::Timestamp(t) => {
            out.push(TIMESTAMP);
            out.extend_from_slice(&((*t as u64) ^ (1 << 63)).to_be_bytes());
        }
        Datum::Text(s) => encode_text(out, TEXT, s.as_bytes()),
        Datum::Bytes(b) => encode_text(out, BYTES, b),
    }
}

/// Decode a whole tuple.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<Datum>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(decode_one(&mut bytes)?);
    }
    Ok(out)
}

fn corrupt(what: &str) -> SqlError {
    SqlError::Internal(format!("corrupt SQL record: {what}"))
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N]> {
    if bytes.len() < N {
        return Err(corrupt("truncated value"));
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    let mut a = [0u8; N];
    a.copy_from_slice(head);
    Ok(a)
}

/// Walk the escaped string at the front of `rest` (`00 FF` stands for a zero byte, a lone
/// `00` ends it): `run` gets each run of content and whether a zero byte follows it.
/// Returns what follows the string.
fn walk_escaped<'a>(mut rest: &'a [u8], mut run: impl FnMut(&'a [u8], bool)) -> Result<&'a [u8]> {
    loop {
        let Some(zero) = rest.iter().position(|&b| b == 0) else {
            return Err(corrupt("unterminated string"));
        };
        let escaped = rest.get(zero + 1) == Some(&0xFF);
        run(&rest[..zero], escaped);
        if !escaped {
            return Ok(&rest[zero + 1..]);
        }
        rest = &rest[zero + 2..];
    }
}

fn decode_escaped(bytes: &mut &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    *bytes = walk_escaped(bytes, |run, zero| {
        out.extend_from_slice(run);
        if zero {
            out.push(0);
        }
    })?;
    Ok(out)
}

/// The type tag at the front of `bytes`, taken off.
fn take_tag(bytes: &mut &[u8]) -> Result<u8> {
    let Some((&tag, rest)) = bytes.split_first() else {
        return Err(corrupt("empty value"));
    };
    *bytes = rest;
    Ok(tag)
}

/// The bytes after the tag of a value of a fixed width (the same in keys and rows);
/// `None` for text and bytes.
fn fixed_width(tag: u8) -> Result<Option<usize>> {
    Ok(Some(match tag {
        NULL | FALSE | TRUE => 0,
        INT | FLOAT | TIMESTAMP => 8,
        DECIMAL => 17,
        DATE => 4,
        TEXT | BYTES => return Ok(None),
        other => return Err(corrupt(&format!("unknown type tag {other:#x}"))),
    }))
}

/// Step over one element at the front of `bytes` without decoding it.
pub fn skip_one(bytes: &mut &[u8]) -> Result<()> {
    let Some((&tag, rest)) = bytes.split_first() else {
        return Err(corrupt("empty value"));
    };
    let Some(fixed) = fixed_width(tag)? else {
        *bytes = walk_escaped(rest, |_, _| {})?;
        return Ok(());
    };
    if rest.len() < fixed {
        return Err(corrupt("truncated value"));
    }
    *bytes = &rest[fixed..];
    Ok(())
}

/// Decode one element from the front of `bytes`.
pub fn decode_one(bytes: &mut &[u8]) -> Result<Datum> {
    Ok(match take_tag(bytes)? {
        NULL => Datum::Null,
        FALSE => Datum::Bool(false),
        TRUE => Datum::Bool(true),
        INT => Datum::Int((u64::from_be_bytes(take::<8>(bytes)?) ^ (1 << 63)) as i64),
        FLOAT => {
            let bits = u64::from_be_bytes(take::<8>(bytes)?);
            let bits = if bits >> 63 == 1 {
                bits & !(1 << 63)
            } else {
                !bits
            };
            Datum::Float(f64::from_bits(bits))
        }
        DECIMAL => {
            let v = (u128::from_be_bytes(take::<16>(bytes)?) ^ (1 << 127)) as i128;
            let [scale] = take::<1>(bytes)?;
            Datum::Decimal(v, scale as i8)
        }
        DATE => Datum::Date((u32::from_be_bytes(take::<4>(bytes)?) ^ (1 << 31)) as i32),
        TIMESTAMP => Datum::Timestamp((u64::from_be_bytes(take::<8>(bytes)?) ^ (1 << 63)) as i64),
        TEXT => {
            let raw = decode_escaped(bytes)?;
            Datum::Text(String::from_utf8(raw).map_err(|_| corrupt("text is not UTF-8"))?)
        }
        BYTES => Datum::Bytes(decode_escaped(bytes)?),
        other => return Err(corrupt(&format!("unknown type tag {other:#x}"))),
    })
}

/// The primary-key tuple of a row key of table `table`.
pub fn row_key_pk(key: &[u8], table: u64) -> Result<Vec<Datum>> {
    let prefix = Key::Rows(table).encode();
    match key.strip_prefix(prefix.as_slice()) {
        Some(rest) => decode(rest),
        None => Err(corrupt("row key outside its table")),
    }
}

/// The values after an index prefix: the indexed values followed by the primary key.
pub fn index_key_values(key: &[u8], table: u64, index: u64) -> Result<Vec<Datum>> {
    let prefix = Key::IndexEntries(table, index).encode();
    match key.strip_prefix(prefix.as_slice()) {
        Some(rest) => decode(rest),
        None => Err(corrupt("index key outside its index")),
    }
}

/// Encode a row: `(column id, value)` pairs in the row format ([`ROW_FORMAT`]). NULLs are
/// written too: a column missing from a row is one added after the row was written, and
/// reads as its added default.
pub fn encode_row(columns: &[(u32, &Datum)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + columns.len() * 10);
    out.push(ROW_FORMAT);
    for (id, v) in columns {
        put_varint(&mut out, *id);
        encode_value(&mut out, v);
    }
    out
}

/// The first byte of a row in the row format. Rows written before it are tuples of
/// `(column id, value)`, and start with the tuple codec's integer tag instead; both decode.
///
/// ```text
/// 01 then, per column: <column id, LEB128> <tag> <body>
///    NULL/FALSE/TRUE  no body          INTEGER/TIMESTAMP  8 bytes little-endian
///    DOUBLE           8 bytes, IEEE    DATE               4 bytes little-endian
///    DECIMAL          16 bytes LE, then the scale
///    TEXT/BYTES       <length, LEB128> <bytes>
/// ```
///
/// Values need no order here, so they are stored as they are held: fixed widths decode
/// with one load, and strings step over by their length.
pub const ROW_FORMAT: u8 = 0x01;

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u32> {
    let mut v: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        v |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(v);
        }
    }
    Err(corrupt("bad length or column id"))
}

/// A double as rows and keys store it: -0 as 0, every NaN as one.
fn canonical_float(f: f64) -> f64 {
    if f == 0.0 {
        0.0
    } else if f.is_nan() {
        f64::NAN
    } else {
        f
    }
}

fn encode_value(out: &mut Vec<u8>, v: &Datum) {
    match v {
        Datum::Null => out.push(NULL),
        Datum::Bool(false) => out.push(FALSE),
        Datum::Bool(true) => out.push(TRUE),
        Datum::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Datum::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&canonical_float(*f).to_le_bytes());
        }
        Datum::Decimal(v, scale) => {
            out.push(DECIMAL);
            out.extend_from_slice(&v.to_le_bytes());
            out.push(*scale as u8);
        }
        Datum::Date(d) => {
            out.push(DATE);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Datum::Timestamp(t) => {
            out.push(TIMESTAMP);
            out.extend_from_slice(&t.to_le_bytes());
        }
        Datum::Text(s) => {
            out.push(TEXT);
            put_len(out, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Datum::Bytes(b) => {
            out.push(BYTES);
            put_len(out, b.len());
            out.extend_from_slice(b);
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Values are far below 4 GiB: the engine's value limit is checked before any commit.
    put_varint(out, u32::try_from(len).unwrap_or(u32::MAX));
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = take_varint(bytes)? as usize;
    if bytes.len() < len {
        return Err(corrupt("truncated value"));
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

/// Decode one value of the row format from the front of `bytes`.
fn decode_value(bytes: &mut &[u8]) -> Result<Datum> {
    read_value(bytes).map(DatumRef::to_datum)
}

/// Read one value of the row format from the front of `bytes`, in place.
#[inline]
fn read_value<'a>(bytes: &mut &'a [u8]) -> Result<DatumRef<'a>> {
    Ok(match take_tag(bytes)? {
        NULL => DatumRef::Null,
        FALSE => DatumRef::Bool(false),
        TRUE => DatumRef::Bool(true),
        INT => DatumRef::Int(i64::from_le_bytes(take::<8>(bytes)?)),
        FLOAT => DatumRef::Float(f64::from_le_bytes(take::<8>(bytes)?)),
        DECIMAL => {
            let v = i128::from_le_bytes(take::<16>(bytes)?);
            let [scale] = take::<1>(bytes)?;
            DatumRef::Decimal(v, scale as i8)
        }
        DATE => DatumRef::Date(i32::from_le_bytes(take::<4>(bytes)?)),
        TIMESTAMP => DatumRef::Timestamp(i64::from_le_bytes(take::<8>(bytes)?)),
        TEXT => DatumRef::Text(
            std::str::from_utf8(take_bytes(bytes)?).map_err(|_| corrupt("text is not UTF-8"))?,
        ),
        BYTES => DatumRef::Bytes(take_bytes(bytes)?),
        other => return Err(corrupt(&format!("unknown type tag {other:#x}"))),
    })
}

/// Step over one value of the row format.
#[inline]
fn skip_value(bytes: &mut &[u8]) -> Result<()> {
    let Some(fixed) = fixed_width(take_tag(bytes)?)? else {
        take_bytes(bytes)?;
        return Ok(());
    };
    if bytes.len() < fixed {
        return Err(corrupt("truncated value"));
    }
    *bytes = &bytes[fixed..];
    Ok(())
}

/// Decode the values of a row that `place` gives a position for (by column id), into
/// `row` at that position; other values are stepped over.
pub fn decode_row_into(
    bytes: &[u8],
    place: impl Fn(u32) -> Option<usize>,
    row: &mut [Datum],
) -> Result<()> {
    decode_some_into(bytes, place, usize::MAX, row)
}

/// [`decode_row_into`] that stops once `wanted` values were decoded: a row holds each
/// column once, so the rest of it has none that `place` wants.
pub fn decode_some_into(
    bytes: &[u8],
    place: impl Fn(u32) -> Option<usize>,
    wanted: usize,
    row: &mut [Datum],
) -> Result<()> {
    match bytes.split_first() {
        Some((&ROW_FORMAT, rest)) => walk_row(rest, place, wanted, |i, rest| {
            Ok(match row.get_mut(i) {
                Some(slot) => {
                    *slot = decode_value(rest)?;
                    Step::Kept
                }
                None => Step::Skip,
            })
        })
        .map(drop),
        _ => decode_tuple_row_into(bytes, place, row),
    }
}

/// [`decode_some_into`] reading values in place, for rows of the current format, that
/// shows each value it reads to `check` (with its position) and stops at the first one
/// `check` refuses, without reading the rest of the row: a filtering scan rejects most
/// rows after a column or two. `Some(false)` for a refused row, `Some(true)` for one read
/// through, `None` for a row in the tuple format (which only [`decode_some_into`] reads;
/// `row` is untouched).
pub fn read_checked_into<'a>(
    bytes: &'a [u8],
    place: impl Fn(u32) -> Option<usize>,
    wanted: usize,
    row: &mut [DatumRef<'a>],
    mut check: impl FnMut(usize, DatumRef<'a>) -> bool,
) -> Result<Option<bool>> {
    let Some((&ROW_FORMAT, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let walked = walk_row(rest, place, wanted, |i, rest| {
        Ok(match row.get_mut(i) {
            Some(slot) => {
                *slot = read_value(rest)?;
                if check(i, *slot) {
                    Step::Kept
                } else {
                    Step::Stop
                }
            }
            None => Step::Skip,
        })
    })?;
    Ok(Some(walked))
}

/// What a row walk's reader did with a column.
enum Step {
    /// Read it.
    Kept,
    /// Left it, to be stepped over.
    Skip,
    /// Read it, and the walk ends here.
    Stop,
}

/// Walk the columns of a row of the current format (after its format byte). `take` reads
/// the value of each column `place` gives a position for, and says what it did; other
/// values are stepped over. Stops once `wanted` values were kept (true), or when `take`
/// says so (false).
fn walk_row<'a>(
    mut rest: &'a [u8],
    place: impl Fn(u32) -> Option<usize>,
    wanted: usize,
    mut take: impl FnMut(usize, &mut &'a [u8]) -> Result<Step>,
) -> Result<bool> {
    let mut found = 0;
    while !rest.is_empty() && found < wanted {
        let id = match rest.first() {
            Some(&b) if b < 0x80 => {
                rest = &rest[1..];
                u32::from(b)
            }
            _ => take_varint(&mut rest)?,
        };
        let step = match place(id) {
            Some(i) => take(i, &mut rest)?,
            None => Step::Skip,
        };
        match step {
            Step::Kept => found += 1,
            Step::Skip => skip_value(&mut rest)?,
            Step::Stop => return Ok(false),
        }
    }
    Ok(true)
}

/// [`decode_row_into`] for rows written as tuples, before [`ROW_FORMAT`].
fn decode_tuple_row_into(
    mut bytes: &[u8],
    place: impl Fn(u32) -> Option<usize>,
    row: &mut [Datum],
) -> Result<()> {
    while !bytes.is_empty() {
        let id = tuple_column_id(&mut bytes)?;
        match place(id).and_then(|i| row.get_mut(i)) {
            Some(slot) => *slot = decode_one(&mut bytes)?,
            None => skip_one(&mut bytes)?,
        }
    }
    Ok(())
}

fn tuple_column_id(bytes: &mut &[u8]) -> Result<u32> {
    match decode_one(bytes)? {
        Datum::Int(i) => u32::try_from(i).map_err(|_| corrupt("column id")),
        _ => Err(corrupt("row without column id")),
    }
}

/// Decode a row into `(column id, value)` pairs.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<(u32, Datum)>> {
    let mut out = Vec::new();
    match bytes.split_first() {
        Some((&ROW_FORMAT, mut rest)) => {
            while !rest.is_empty() {
                let id = take_varint(&mut rest)?;
                out.push((id, decode_value(&mut rest)?));
            }
        }
        _ => {
            let mut rest = bytes;
            while !rest.is_empty() {
                let id = tuple_column_id(&mut rest)?;
                out.push((id, decode_one(&mut rest)?));
            }
        }
    }
    Ok(out)
}
