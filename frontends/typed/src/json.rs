//! A record as JSON without its type: an archive read through its stored [`Schema`]
//! ([`View`], which serializes with serde, so fields keep their order), and JSON written
//! back into an archive ([`encode`]) exactly as rkyv would write the typed value.
//!
//! The JSON is serde's default form of the type: a struct is an object (a tuple struct an
//! array, a one-field tuple struct its field), an enum variant is `"Name"` or
//! `{"Name": …}`, `None` is `null`, a `Vec`, array or tuple is an array. Where JSON has no
//! exact form, a string is used: floats that are not finite (`"NaN"`, `"inf"`, `"-inf"`)
//! and 128-bit integers beyond 64 bits. A field of a type without a description is shown
//! as `{"opaque": "<hex>"}` and cannot be written.
//!
//! The archive is untrusted: every offset and length is checked, and nesting and size are
//! bounded, so a corrupt record is an error, never a panic or an endless walk.

use std::cell::Cell;
use std::fmt::Write as _;

use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::schema::{repr_c, repr_u8, Def, Field, Schema, Shape, Style};

/// Deeper nesting than this is taken for a corrupt (cyclic) archive.
const MAX_DEPTH: u32 = 128;
/// Values visited in one archive, at most (a corrupt length could claim billions of
/// zero-sized elements).
const MAX_VALUES: u64 = 16 << 20;

/// An archive shown through its schema: serialize it (`serde_json::to_writer_pretty`).
pub struct View<'a> {
    schema: &'a Schema,
    bytes: &'a [u8],
    visited: Cell<u64>,
}

impl<'a> View<'a> {
    /// `archive` (rkyv's bytes, root last) of a value of `schema`'s root shape.
    pub fn new(schema: &'a Schema, archive: &'a [u8]) -> View<'a> {
        View {
            schema,
            bytes: archive,
            visited: Cell::new(0),
        }
    }

    /// The value as a JSON tree (object keys sorted, as `serde_json::Value` keeps them).
    pub fn to_value(&self) -> Result<Value, String> {
        serde_json::to_value(self).map_err(|e| e.to_string())
    }

    fn node(&self, at: u64, shape: &'a Shape, depth: u32) -> Node<'_, 'a> {
        Node {
            view: self,
            at,
            shape,
            depth,
        }
    }

    fn slice(&self, at: u64, len: u64) -> Result<&'a [u8], String> {
        let end = at
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len() as u64);
        match end {
            Some(end) => Ok(&self.bytes[at as usize..end as usize]),
            None => Err(format!(
                "{len} bytes at {at} lie outside the {}-byte archive",
                self.bytes.len()
            )),
        }
    }

    fn uint(&self, at: u64, n: u64) -> Result<u128, String> {
        let b = self.slice(at, n)?;
        let mut v = 0u128;
        if self.schema.format.big_endian {
            b.iter().for_each(|&x| v = (v << 8) | u128::from(x));
        } else {
            b.iter().rev().for_each(|&x| v = (v << 8) | u128::from(x));
        }
        Ok(v)
    }

    fn int(&self, at: u64, n: u64) -> Result<i128, String> {
        let v = self.uint(at, n)?;
        let shift = 128 - 8 * n as u32;
        Ok(((v << shift) as i128) >> shift)
    }

    fn pointer_width(&self) -> u64 {
        u64::from(self.schema.format.pointer_width)
    }

    /// Where the relative pointer stored at `at` points.
    fn target(&self, at: u64) -> Result<u64, String> {
        self.target_from(at, at)
    }

    fn count(&self, n: u64) -> Result<(), String> {
        let seen = self.visited.get().saturating_add(n);
        self.visited.set(seen);
        if seen > MAX_VALUES {
            return Err(format!("more than {MAX_VALUES} values: not a sane record"));
        }
        Ok(())
    }

    /// The bytes and length of the string stored at `at`.
    fn string(&self, at: u64) -> Result<&'a str, String> {
        let pw = self.pointer_width();
        let repr = self.slice(at, 2 * pw)?;
        let bytes = if repr[0] & 0xc0 != 0x80 {
            let len = repr.iter().position(|&b| b == 0xff).unwrap_or(repr.len());
            &repr[..len]
        } else {
            let raw = self.uint(at, pw)?;
            let len = if self.schema.format.big_endian {
                raw & (u128::MAX >> (128 - 8 * pw + 2))
            } else {
                (raw & 0x3f) | ((raw & !0xff) >> 2)
            };
            let to = self.target_from(at, at + pw)?;
            self.slice(to, len as u64)?
        };
        std::str::from_utf8(bytes).map_err(|e| format!("a string at {at} is not UTF-8: {e}"))
    }

    /// Where the offset stored at `offset_at` points, relative to `base` (a string's offset
    /// follows its length and counts from the string's start).
    fn target_from(&self, base: u64, offset_at: u64) -> Result<u64, String> {
        let offset = self.int(offset_at, self.pointer_width())?;
        u64::try_from(i128::from(base) + offset)
            .ok()
            .filter(|&t| t <= self.bytes.len() as u64)
            .ok_or_else(|| format!("the pointer at {offset_at} points outside the archive"))
    }

    fn def(&self, index: usize) -> Result<&'a Def, String> {
        self.schema
            .types
            .get(index)
            .ok_or_else(|| format!("the schema has no type {index}"))
    }
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (size, _) = self.schema.layout(&self.schema.root);
        let Some(at) = (self.bytes.len() as u64).checked_sub(size) else {
            return Err(S::Error::custom(format!(
                "{} bytes is too short for the record ({size} bytes at least)",
                self.bytes.len()
            )));
        };
        self.node(at, &self.schema.root, 0).serialize(s)
    }
}

/// One value in the archive: its position and shape.
struct Node<'v, 'a> {
    view: &'v View<'a>,
    at: u64,
    shape: &'a Shape,
    depth: u32,
}

/// The fields of a struct or variant at `at`, by the `repr(C)` rules (after the tag for a
/// variant).
struct Fields<'v, 'a> {
    view: &'v View<'a>,
    style: Style,
    fields: &'a [Field],
    offsets: Vec<u64>,
    at: u64,
    depth: u32,
}

impl Serialize for Fields<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let node = |i: usize| {
            self.view
                .node(self.at + self.offsets[i], &self.fields[i].shape, self.depth)
        };
        match (self.style, self.fields.len()) {
            (Style::Unit, _) | (_, 0) => s.serialize_unit(),
            (Style::Tuple, 1) => node(0).serialize(s),
            (Style::Tuple, n) => {
                let mut seq = s.serialize_seq(Some(n))?;
                for i in 0..n {
                    seq.serialize_element(&node(i))?;
                }
                seq.end()
            }
            (Style::Named, n) => {
                let mut map = s.serialize_map(Some(n))?;
                for i in 0..n {
                    map.serialize_entry(&self.fields[i].name, &node(i))?;
                }
                map.end()
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl Serialize for Node<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.view;
        let fail = |m: String| S::Error::custom(m);
        if self.depth > MAX_DEPTH {
            return Err(fail("nested too deeply: not a sane record".into()));
        }
        v.count(1).map_err(fail)?;
        let at = self.at;
        let uint = |n| v.uint(at, n).map_err(fail);
        let int = |n| v.int(at, n).map_err(fail);
        let deeper = |at, shape| v.node(at, shape, self.depth + 1);
        match self.shape {
            Shape::Unit => s.serialize_unit(),
            Shape::Bool => match uint(1)? {
                0 => s.serialize_bool(false),
                1 => s.serialize_bool(true),
                b => Err(fail(format!("byte {b} at {at} is not a bool"))),
            },
            Shape::U8 => s.serialize_u8(uint(1)? as u8),
            Shape::U16 => s.serialize_u16(uint(2)? as u16),
            Shape::U32 => s.serialize_u32(uint(4)? as u32),
            Shape::U64 => s.serialize_u64(uint(8)? as u64),
            Shape::U128 => match u64::try_from(uint(16)?) {
                Ok(small) => s.serialize_u64(small),
                Err(_) => s.serialize_str(&uint(16)?.to_string()),
            },
            Shape::I8 => s.serialize_i8(int(1)? as i8),
            Shape::I16 => s.serialize_i16(int(2)? as i16),
            Shape::I32 => s.serialize_i32(int(4)? as i32),
            Shape::I64 => s.serialize_i64(int(8)? as i64),
            Shape::I128 => match i64::try_from(int(16)?) {
                Ok(small) => s.serialize_i64(small),
                Err(_) => s.serialize_str(&int(16)?.to_string()),
            },
            Shape::F32 => float(s, f64::from(f32::from_bits(uint(4)? as u32))),
            Shape::F64 => float(s, f64::from_bits(uint(8)? as u64)),
            Shape::Char => {
                let c = uint(4)? as u32;
                let c = char::from_u32(c).ok_or_else(|| fail(format!("{c:#x} is not a char")))?;
                s.serialize_char(c)
            }
            Shape::String => s.serialize_str(v.string(at).map_err(fail)?),
            Shape::Option { of } => match uint(1)? {
                0 => s.serialize_none(),
                1 => {
                    let (offsets, _, _) = repr_u8(&[vec![], vec![v.schema.layout(of)]]);
                    s.serialize_some(&deeper(at + offsets[1][0], of))
                }
                t => Err(fail(format!("tag {t} at {at} is not an Option"))),
            },
            Shape::Box { of } => s.serialize_some(&deeper(v.target(at).map_err(fail)?, of)),
            Shape::Vec { of } => {
                let to = v.target(at).map_err(fail)?;
                let len = v
                    .uint(at + v.pointer_width(), v.pointer_width())
                    .map_err(fail)? as u64;
                let (size, _) = v.schema.layout(of);
                v.slice(to, size.saturating_mul(len)).map_err(fail)?;
                if size == 0 && len > 1 << 16 {
                    return Err(fail(format!("{len} values of no size: not a sane record")));
                }
                v.count(len).map_err(fail)?;
                let mut seq = s.serialize_seq(hint(len))?;
                for i in 0..len {
                    seq.serialize_element(&deeper(to + i * size, of))?;
                }
                seq.end()
            }
            Shape::Array { of, len } => {
                let (size, _) = v.schema.layout(of);
                v.count(*len).map_err(fail)?;
                let mut seq = s.serialize_seq(hint(*len))?;
                for i in 0..*len {
                    seq.serialize_element(&deeper(at + i * size, of))?;
                }
                seq.end()
            }
            Shape::Tuple { items } => {
                let (offsets, _, _) = repr_c(items.iter().map(|i| v.schema.layout(i)));
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for (item, off) in items.iter().zip(offsets) {
                    seq.serialize_element(&deeper(at + off, item))?;
                }
                seq.end()
            }
            Shape::Opaque { size, .. } => opaque(s, v.slice(at, *size).map_err(fail)?),
            Shape::Def { index } => match v.def(*index).map_err(fail)? {
                Def::Struct { style, fields, .. } => {
                    let (offsets, _, _) = repr_c(fields.iter().map(|f| v.schema.layout(&f.shape)));
                    Fields {
                        view: v,
                        style: *style,
                        fields,
                        offsets,
                        at,
                        depth: self.depth + 1,
                    }
                    .serialize(s)
                }
                Def::Enum { name, variants, .. } => {
                    let tag = uint(1)? as u8;
                    let Some(variant) = variants.iter().find(|x| x.tag == tag) else {
                        return Err(fail(format!("tag {tag} at {at} is no variant of {name}")));
                    };
                    if variant.style == Style::Unit || variant.fields.is_empty() {
                        return s.serialize_str(&variant.name);
                    }
                    let layouts: Vec<_> = variant
                        .fields
                        .iter()
                        .map(|f| v.schema.layout(&f.shape))
                        .collect();
                    let (mut offsets, _, _) = repr_u8(&[layouts]);
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry(
                        &variant.name,
                        &Fields {
                            view: v,
                            style: variant.style,
                            fields: &variant.fields,
                            offsets: offsets.remove(0),
                            at,
                            depth: self.depth + 1,
                        },
                    )?;
                    map.end()
                }
                Def::Opaque { size, .. } => opaque(s, v.slice(at, *size).map_err(fail)?),
            },
        }
    }
}

/// A sequence's length as a hint to the serializer, which may reserve room for it: not
/// for lengths a corrupt archive could claim.
fn hint(len: u64) -> Option<usize> {
    (len <= 1 << 16).then_some(len as usize)
}

fn float<S: Serializer>(s: S, x: f64) -> Result<S::Ok, S::Error> {
    match x {
        x if x.is_nan() => s.serialize_str("NaN"),
        f64::INFINITY => s.serialize_str("inf"),
        f64::NEG_INFINITY => s.serialize_str("-inf"),
        x => s.serialize_f64(x),
    }
}

fn opaque<S: Serializer>(s: S, bytes: &[u8]) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("opaque", &hex(bytes))?;
    map.end()
}

/// Why JSON does not fit a schema: where (`.lines[2].qty`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub at: String,
    pub problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.at.is_empty() { "." } else { &self.at };
        write!(f, "at {at}: {}", self.problem)
    }
}

/// The archive of `value`, a value of `schema`'s root shape, byte for byte as rkyv writes
/// the typed value; or where the JSON does not fit the schema.
pub fn encode(schema: &Schema, value: &Value) -> Result<Vec<u8>, Mismatch> {
    let mut w = Writer {
        schema,
        out: Vec::new(),
        depth: 0,
    };
    let mut path = String::new();
    let plan = w.serialize(&schema.root, value, &mut path)?;
    w.write_value(&schema.root, &plan)?;
    Ok(w.out)
}

/// What is left to write of a value once its out-of-line parts are written: the inline
/// bytes' ingredients.
enum Plan {
    /// A scalar, already in archived bytes.
    Raw(Vec<u8>),
    /// A string: inline bytes, or where its bytes went and how many.
    Inline(Vec<u8>),
    OutOfLine {
        to: u64,
        len: u64,
    },
    /// A vector: where its elements went and how many.
    Slice {
        to: u64,
        len: u64,
    },
    /// A box: where its value went.
    Boxed(u64),
    None,
    Some(Box<Plan>),
    /// Struct fields, tuple items or array elements, in order.
    Seq(Vec<Plan>),
    Variant {
        tag: u8,
        fields: Vec<Plan>,
    },
}

struct Writer<'s> {
    schema: &'s Schema,
    out: Vec<u8>,
    depth: u32,
}

fn mismatch(path: &str, problem: impl Into<String>) -> Mismatch {
    Mismatch {
        at: path.to_string(),
        problem: problem.into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Writer<'_> {
    fn pw(&self) -> u64 {
        u64::from(self.schema.format.pointer_width)
    }

    fn bytes_of(&self, v: u128, n: u64) -> Vec<u8> {
        let le = v.to_le_bytes();
        let mut b = le[..n as usize].to_vec();
        if self.schema.format.big_endian {
            b.reverse();
        }
        b
    }

    fn align(&mut self, align: u64) -> u64 {
        let at = (self.out.len() as u64).div_ceil(align.max(1)) * align.max(1);
        self.out.resize(at as usize, 0);
        at
    }

    /// Write `shape`'s value: its out-of-line parts first, then itself, aligned; where it
    /// went.
    fn write_value(&mut self, shape: &Shape, plan: &Plan) -> Result<u64, Mismatch> {
        let (size, align) = self.schema.layout(shape);
        let at = self.align(align);
        self.out.resize((at + size) as usize, 0);
        self.place(shape, plan, at);
        Ok(at)
    }

    fn int(&self, path: &str, v: &Value, n: u64, signed: bool) -> Result<Vec<u8>, Mismatch> {
        let bits = 8 * n as u32;
        let (lo, hi): (i128, u128) = match (signed, bits) {
            (true, b) => (i128::MIN >> (128 - b), (i128::MAX >> (128 - b)) as u128),
            (false, 128) => (0, u128::MAX),
            (false, b) => (0, (1u128 << b) - 1),
        };
        // Non-negative as u128, negative as i128.
        let parsed = match v {
            Value::Number(x) if x.is_u64() => x.as_u64().map(|u| Ok(u128::from(u))),
            Value::Number(x) if x.is_i64() => x.as_i64().map(|i| Err(i128::from(i))),
            Value::String(s) if n == 16 => s
                .parse::<u128>()
                .map(Ok)
                .or_else(|_| s.parse::<i128>().map(Err))
                .ok(),
            _ => None,
        };
        let raw = match parsed {
            Some(Ok(u)) if u <= hi => u,
            Some(Err(i)) if i >= lo => i as u128,
            _ => {
                return Err(mismatch(
                    path,
                    format!("expected an integer from {lo} to {hi}, found {v}"),
                ))
            }
        };
        Ok(self.bytes_of(raw, n))
    }

    fn float(&self, path: &str, v: &Value) -> Result<f64, Mismatch> {
        match v {
            Value::Number(x) => x.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" | "nan" => Some(f64::NAN),
                "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
                "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| {
            mismatch(
                path,
                format!("expected a number (or \"NaN\", \"inf\", \"-inf\"), found {v}"),
            )
        })
    }

    /// Check `v` against `shape` and write its out-of-line parts; what is left to write.
    fn serialize(&mut self, shape: &Shape, v: &Value, path: &mut String) -> Result<Plan, Mismatch> {
        // One-field tuple structs, options and boxes take the same JSON value one level
        // down, so a recursive type (`struct L(Option<Box<L>>)`) would never end.
        self.depth += 1;
        let out = if self.depth > MAX_DEPTH {
            Err(mismatch(path, "nested too deeply"))
        } else {
            self.serialize_in(shape, v, path)
        };
        self.depth -= 1;
        out
    }

    fn serialize_in(
        &mut self,
        shape: &Shape,
        v: &Value,
        path: &mut String,
    ) -> Result<Plan, Mismatch> {
        let expected = |what: &str| mismatch(path, format!("expected {what}, found {}", kind(v)));
        Ok(match shape {
            Shape::Unit => match v {
                Value::Null => Plan::Raw(Vec::new()),
                _ => return Err(expected("null")),
            },
            Shape::Bool => match v {
                Value::Bool(b) => Plan::Raw(vec![u8::from(*b)]),
                _ => return Err(expected("true or false")),
            },
            Shape::U8 => Plan::Raw(self.int(path, v, 1, false)?),
            Shape::U16 => Plan::Raw(self.int(path, v, 2, false)?),
            Shape::U32 => Plan::Raw(self.int(path, v, 4, false)?),
            Shape::U64 => Plan::Raw(self.int(path, v, 8, false)?),
            Shape::U128 => Plan::Raw(self.int(path, v, 16, false)?),
            Shape::I8 => Plan::Raw(self.int(path, v, 1, true)?),
            Shape::I16 => Plan::Raw(self.int(path, v, 2, true)?),
            Shape::I32 => Plan::Raw(self.int(path, v, 4, true)?),
            Shape::I64 => Plan::Raw(self.int(path, v, 8, true)?),
            Shape::I128 => Plan::Raw(self.int(path, v, 16, true)?),
            Shape::F32 => {
                let x = self.float(path, v)?;
                if x.is_finite() && (x as f32).is_infinite() {
                    return Err(mismatch(path, format!("{x} is beyond a 32-bit float")));
                }
                Plan::Raw(self.bytes_of(u128::from((x as f32).to_bits()), 4))
            }
            Shape::F64 => {
                let x = self.float(path, v)?;
                Plan::Raw(self.bytes_of(u128::from(x.to_bits()), 8))
            }
            Shape::Char => {
                let mut chars = v
                    .as_str()
                    .map(str::chars)
                    .ok_or_else(|| expected("a one-character string"))?;
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Plan::Raw(self.bytes_of(u128::from(u32::from(c)), 4)),
                    _ => return Err(mismatch(path, format!("expected one character, found {v}"))),
                }
            }
            Shape::String => {
                let s = v.as_str().ok_or_else(|| expected("a string"))?;
                let inline = 2 * self.pw();
                if s.len() as u64 <= inline {
                    let mut b = vec![0xff; inline as usize];
                    b[..s.len()].copy_from_slice(s.as_bytes());
                    Plan::Inline(b)
                } else {
                    let limit = (1u128 << (8 * self.pw() - 2)) - 1;
                    if s.len() as u128 > limit {
                        return Err(mismatch(
                            path,
                            format!("a string of {} bytes is too long", s.len()),
                        ));
                    }
                    let to = self.out.len() as u64;
                    self.out.extend_from_slice(s.as_bytes());
                    Plan::OutOfLine {
                        to,
                        len: s.len() as u64,
                    }
                }
            }
            Shape::Option { of } => match v {
                Value::Null => Plan::None,
                v => Plan::Some(Box::new(self.serialize(of, v, path)?)),
            },
            Shape::Box { of } => {
                let plan = self.serialize(of, v, path)?;
                Plan::Boxed(self.write_value(of, &plan)?)
            }
            Shape::Vec { of } => {
                let items = v.as_array().ok_or_else(|| expected("an array"))?;
                let plans = self.each(of, items, path)?;
                let (size, align) = self.schema.layout(of);
                let to = self.align(align);
                self.out
                    .resize((to + size * items.len() as u64) as usize, 0);
                for (i, plan) in plans.iter().enumerate() {
                    self.place(of, plan, to + i as u64 * size);
                }
                Plan::Slice {
                    to,
                    len: items.len() as u64,
                }
            }
            Shape::Array { of, len } => {
                let items = v.as_array().ok_or_else(|| expected("an array"))?;
                if items.len() as u64 != *len {
                    return Err(mismatch(
                        path,
                        format!("expected {len} items, found {}", items.len()),
                    ));
                }
                Plan::Seq(self.each(of, items, path)?)
            }
            Shape::Tuple { items: shapes } => {
                let items = v.as_array().ok_or_else(|| expected("an array"))?;
                if items.len() != shapes.len() {
                    return Err(mismatch(
                        path,
                        format!("expected {} items, found {}", shapes.len(), items.len()),
                    ));
                }
                let mut plans = Vec::new();
                for (i, (shape, item)) in shapes.iter().zip(items).enumerate() {
                    plans.push(
                        self.nested(path, &format!("[{i}]"), |w, p| w.serialize(shape, item, p))?,
                    );
                }
                Plan::Seq(plans)
            }
            Shape::Opaque { .. } => {
                return Err(mismatch(
                    path,
                    "this field's type has no description, so it cannot be written",
                ))
            }
            Shape::Def { index } => {
                let def = self
                    .schema
                    .types
                    .get(*index)
                    .ok_or_else(|| mismatch(path, format!("the schema has no type {index}")))?;
                match def {
                    Def::Struct {
                        name,
                        style,
                        fields,
                        ..
                    } => Plan::Seq(self.fields(name, *style, fields, v, path)?),
                    Def::Enum { name, variants, .. } => {
                        let (variant, body) = match v {
                            Value::String(s) => (s.as_str(), None),
                            Value::Object(m) if m.len() == 1 => {
                                let (k, b) = m.iter().next().expect("one entry");
                                (k.as_str(), Some(b))
                            }
                            _ => {
                                return Err(mismatch(
                                    path,
                                    format!("expected a variant of {name}: \"Variant\" or {{\"Variant\": …}}, found {}", kind(v)),
                                ))
                            }
                        };
                        let Some(x) = variants.iter().find(|x| x.name == variant) else {
                            let names: Vec<&str> =
                                variants.iter().map(|x| x.name.as_str()).collect();
                            return Err(mismatch(
                                path,
                                format!(
                                    "{name} has no variant {variant:?} (it has {})",
                                    names.join(", ")
                                ),
                            ));
                        };
                        let unit = x.style == Style::Unit || x.fields.is_empty();
                        let fields = match (unit, body) {
                            (true, None) => Vec::new(),
                            (true, Some(Value::Null)) => Vec::new(),
                            (false, Some(body)) => {
                                self.nested(path, &format!(".{variant}"), |w, p| {
                                    w.fields(variant, x.style, &x.fields, body, p)
                                })?
                            }
                            (true, Some(_)) => {
                                return Err(mismatch(
                                    path,
                                    format!("variant {variant} has no fields"),
                                ))
                            }
                            (false, None) => {
                                return Err(mismatch(
                                    path,
                                    format!(
                                        "variant {variant} has fields: write {{\"{variant}\": …}}"
                                    ),
                                ))
                            }
                        };
                        Plan::Variant { tag: x.tag, fields }
                    }
                    Def::Opaque { name, why, .. } => {
                        return Err(mismatch(
                            path,
                            format!("type {name} cannot be written: {why}"),
                        ))
                    }
                }
            }
        })
    }

    fn nested<T>(
        &mut self,
        path: &mut String,
        step: &str,
        f: impl FnOnce(&mut Self, &mut String) -> Result<T, Mismatch>,
    ) -> Result<T, Mismatch> {
        let len = path.len();
        path.push_str(step);
        let out = f(self, path);
        path.truncate(len);
        out
    }

    fn each(
        &mut self,
        of: &Shape,
        items: &[Value],
        path: &mut String,
    ) -> Result<Vec<Plan>, Mismatch> {
        let mut plans = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            plans.push(self.nested(path, &format!("[{i}]"), |w, p| w.serialize(of, item, p))?);
        }
        Ok(plans)
    }

    /// A struct's or variant's fields from `v`, in declaration order.
    fn fields(
        &mut self,
        name: &str,
        style: Style,
        fields: &[Field],
        v: &Value,
        path: &mut String,
    ) -> Result<Vec<Plan>, Mismatch> {
        match (style, fields.len()) {
            (Style::Unit, _) | (_, 0) => match v {
                Value::Null => Ok(Vec::new()),
                _ => Err(mismatch(
                    path,
                    format!("expected null for {name}, found {}", kind(v)),
                )),
            },
            (Style::Tuple, 1) => Ok(vec![self.serialize(&fields[0].shape, v, path)?]),
            (Style::Tuple, n) => {
                let items = v.as_array().filter(|a| a.len() == n).ok_or_else(|| {
                    mismatch(
                        path,
                        format!("expected an array of {n} items for {name}, found {v}"),
                    )
                })?;
                let mut plans = Vec::new();
                for (i, (f, item)) in fields.iter().zip(items).enumerate() {
                    plans.push(self.nested(path, &format!("[{i}]"), |w, p| {
                        w.serialize(&f.shape, item, p)
                    })?);
                }
                Ok(plans)
            }
            (Style::Named, _) => {
                let map = v.as_object().ok_or_else(|| {
                    mismatch(
                        path,
                        format!("expected an object for {name}, found {}", kind(v)),
                    )
                })?;
                if let Some(extra) = map.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
                    return Err(mismatch(path, format!("{name} has no field {extra:?}")));
                }
                let mut plans = Vec::new();
                for f in fields {
                    let item = map.get(&f.name).ok_or_else(|| {
                        mismatch(path, format!("field {:?} of {name} is missing", f.name))
                    })?;
                    plans.push(self.nested(path, &format!(".{}", f.name), |w, p| {
                        w.serialize(&f.shape, item, p)
                    })?);
                }
                Ok(plans)
            }
        }
    }

    /// Write at `at` the offset from `base` to `to` (for a plain relative pointer, `base`
    /// is `at`; a string's counts from the string's start).
    fn pointer(&mut self, base: u64, at: u64, to: u64) {
        let offset = to as i128 - base as i128;
        let b = self.bytes_of(offset as u128, self.pw());
        self.out[at as usize..at as usize + b.len()].copy_from_slice(&b);
    }

    /// Write the inline bytes of `shape`'s value at `at` (zeroed, and long enough).
    fn place(&mut self, shape: &Shape, plan: &Plan, at: u64) {
        let put = |w: &mut Self, at: u64, b: &[u8]| {
            w.out[at as usize..at as usize + b.len()].copy_from_slice(b);
        };
        match (shape, plan) {
            (_, Plan::Raw(b)) | (_, Plan::Inline(b)) => put(self, at, b),
            (_, Plan::OutOfLine { to, len }) => {
                let len = u128::from(*len);
                let raw = if self.schema.format.big_endian {
                    len | (1u128 << (8 * self.pw() - 1))
                } else {
                    (len & 0x3f) | 0x80 | ((len & !0x3f) << 2)
                };
                let b = self.bytes_of(raw, self.pw());
                put(self, at, &b);
                self.pointer(at, at + self.pw(), *to);
            }
            (_, Plan::Slice { to, len }) => {
                self.pointer(at, at, *to);
                let b = self.bytes_of(u128::from(*len), self.pw());
                put(self, at + self.pw(), &b);
            }
            (_, Plan::Boxed(to)) => self.pointer(at, at, *to),
            (_, Plan::None) => put(self, at, &[0]),
            (Shape::Option { of }, Plan::Some(inner)) => {
                put(self, at, &[1]);
                let (offsets, _, _) = repr_u8(&[vec![], vec![self.schema.layout(of)]]);
                self.place(of, inner, at + offsets[1][0]);
            }
            (Shape::Array { of, .. }, Plan::Seq(plans)) => {
                let (size, _) = self.schema.layout(of);
                for (i, p) in plans.iter().enumerate() {
                    self.place(of, p, at + i as u64 * size);
                }
            }
            (Shape::Tuple { items }, Plan::Seq(plans)) => {
                let (offsets, _, _) = repr_c(items.iter().map(|i| self.schema.layout(i)));
                for ((shape, p), off) in items.iter().zip(plans).zip(offsets) {
                    self.place(shape, p, at + off);
                }
            }
            (Shape::Def { index }, Plan::Seq(plans)) => {
                if let Some(Def::Struct { fields, .. }) = self.schema.types.get(*index) {
                    let fields = fields.clone();
                    let (offsets, _, _) =
                        repr_c(fields.iter().map(|f| self.schema.layout(&f.shape)));
                    for ((f, p), off) in fields.iter().zip(plans).zip(offsets) {
                        self.place(&f.shape, p, at + off);
                    }
                }
            }
            (Shape::Def { index }, Plan::Variant { tag, fields: plans }) => {
                put(self, at, &[*tag]);
                if let Some(Def::Enum { variants, .. }) = self.schema.types.get(*index) {
                    let Some(variant) = variants.iter().find(|x| x.tag == *tag).cloned() else {
                        return;
                    };
                    let layouts: Vec<_> = variant
                        .fields
                        .iter()
                        .map(|f| self.schema.layout(&f.shape))
                        .collect();
                    let (offsets, _, _) = repr_u8(&[layouts]);
                    for ((f, p), off) in variant.fields.iter().zip(plans).zip(&offsets[0]) {
                        self.place(&f.shape, p, at + off);
                    }
                }
            }
            // Plans are made from their shapes, so no other pairing happens.
            _ => {}
        }
    }
}
