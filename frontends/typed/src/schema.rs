//! A record type's schema: the shape of its archived form, stored beside the tree so that
//! records can be read and written without the type (`strata typed show` and `edit`).
//!
//! rkyv lays an archived struct out as `repr(C)` and an archived enum as `repr(u8)` (a tag
//! byte, then each variant's fields as a `repr(C)` struct after it). Pointers (strings,
//! vectors, boxes) are offsets relative to where they are stored. So a description of the
//! type (fields in order, their types, the enum tags) fixes every byte of an archive, given
//! the archive format (endianness, pointer width, alignment), which is stored too.
//!
//! [`Describe`] gives a type's [`Shape`]. It is implemented for the standard types rkyv
//! archives (integers, floats, `bool`, `char`, `String`, `Vec`, `Option`, `Box`, arrays
//! and tuples) and derived by [`crate::record`] for a record type and by
//! [`crate::field_type`] (or `#[derive(strata_typed::Describe)]`) for the types its fields
//! use. A field of a type
//! without it (a map, a type archived `with` a wrapper) is [`Shape::Opaque`]: shown as its
//! bytes, and not editable.
//!
//! Derived descriptions are checked against the compiler when the schema is built: each
//! struct field's offset (`offset_of!` on the archived struct) and every size and
//! alignment must be what the `repr(C)` rules computed from the shapes. A type that does
//! not match is described as opaque rather than wrongly.
//!
//! The schema of `T` at its schema version is stored under
//! `F1 0A <tree> 00 <version u32 BE>` as JSON, by the first write of that version. A
//! different schema already stored for the same version is refused
//! ([`crate::Error::SchemaConflict`]): the type changed without a new version.

use std::any::TypeId;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How archives are laid out: fixed by rkyv's features for the whole build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Bytes in an archived `usize` (lengths) and relative pointer.
    pub pointer_width: u8,
    pub big_endian: bool,
    /// Primitives aligned to their size (rkyv's default), or to one byte.
    pub aligned: bool,
}

impl Format {
    /// This build's format.
    pub fn current() -> Format {
        let one = rkyv::to_bytes::<rkyv::rancor::Error>(&1u32);
        Format {
            pointer_width: size_of::<rkyv::Archived<usize>>() as u8,
            big_endian: one.is_ok_and(|b| b.first() == Some(&0)),
            aligned: align_of::<rkyv::Archived<u32>>() == 4,
        }
    }
}

/// The shape of an archived value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Shape {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    String,
    Option {
        of: Box<Shape>,
    },
    Vec {
        of: Box<Shape>,
    },
    Box {
        of: Box<Shape>,
    },
    Array {
        of: Box<Shape>,
        len: u64,
    },
    Tuple {
        items: Vec<Shape>,
    },
    /// A struct or enum, by its place in [`Schema::types`].
    Def {
        index: usize,
    },
    /// A value of a type without a description: its size and alignment only.
    Opaque {
        size: u64,
        align: u64,
    },
}

/// How a struct or variant's fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// `{ a: A, b: B }`: a JSON object.
    Named,
    /// `(A, B)`: a JSON array, or the one value for a single field (serde's newtype).
    Tuple,
    /// No fields.
    Unit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub tag: u8,
    pub style: Style,
    pub fields: Vec<Field>,
}

/// A user type: a struct, an enum, or one that could not be described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Def {
    Struct {
        name: String,
        style: Style,
        fields: Vec<Field>,
        size: u64,
        align: u64,
    },
    Enum {
        name: String,
        variants: Vec<Variant>,
        size: u64,
        align: u64,
    },
    Opaque {
        name: String,
        size: u64,
        align: u64,
        why: String,
    },
}

impl Def {
    pub fn name(&self) -> &str {
        match self {
            Def::Struct { name, .. } | Def::Enum { name, .. } | Def::Opaque { name, .. } => name,
        }
    }
}

/// A record type's schema, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub format: Format,
    pub root: Shape,
    pub types: Vec<Def>,
    /// The schema version this one is made from (`previous = Type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u32>,
    /// Records at this version also carry the previous version's form (`compatible`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compatible: bool,
    /// How a record of the previous version becomes one of this version, declared as data
    /// (`upgrade`): each field of this version, in order, and where its value comes from.
    /// Without it the step is the application's code (`From<Previous>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Vec<Upgraded>>,
}

/// One field of a version made by a declared upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgraded {
    pub name: String,
    #[serde(flatten)]
    pub source: Source,
}

/// Where an upgraded field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The previous version's field of that name (of the same type).
    Carried { from: String },
    /// The field type's `Default::default()`, as JSON.
    Default { value: serde_json::Value },
}

impl Schema {
    /// The schema of `T`.
    pub fn of<T: Describe>() -> Schema {
        let mut defs = Defs::new();
        let root = T::describe(&mut defs);
        Schema {
            format: defs.format,
            root,
            types: defs.types.into_iter().flatten().collect(),
            previous: None,
            compatible: false,
            upgrade: None,
        }
    }

    /// `archive` (rkyv's bytes of a value of the root struct's field `field`) as JSON;
    /// null if there is no such field or the bytes do not read.
    #[doc(hidden)]
    pub fn field_json(&self, field: &str, archive: &[u8]) -> serde_json::Value {
        let shape = match &self.root {
            Shape::Def { index } => match self.types.get(*index) {
                Some(Def::Struct { fields, .. }) => {
                    fields.iter().find(|f| f.name == field).map(|f| &f.shape)
                }
                _ => None,
            },
            _ => None,
        };
        let Some(shape) = shape else {
            return serde_json::Value::Null;
        };
        let sub = Schema {
            root: shape.clone(),
            ..self.clone()
        };
        crate::json::View::new(&sub, archive)
            .to_value()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schema always serializes")
    }

    /// A stored schema (from a database, or pushed by a replica: not trusted), checked to be
    /// one this code can use: a known format, every type index in range, every size and
    /// alignment sane and the one its fields make, enum tags distinct, and no type holding
    /// itself other than through a pointer.
    pub fn from_json(bytes: &[u8]) -> Result<Schema, String> {
        let schema: Schema =
            serde_json::from_slice(bytes).map_err(|e| format!("not a schema: {e}"))?;
        schema.check()?;
        Ok(schema)
    }

    fn check(&self) -> Result<(), String> {
        if ![2, 4, 8].contains(&self.format.pointer_width) {
            return Err(format!(
                "pointer width {} is not 2, 4 or 8",
                self.format.pointer_width
            ));
        }
        let n = self.types.len();
        let mut bad = None;
        self.visit(&mut |s| {
            if let Shape::Def { index } = s {
                if *index >= n {
                    bad = Some(format!("it names type {index} of {n}"));
                }
            }
        });
        if bad.is_none() {
            self.visit(&mut |s| {
                let (size, align) = self.layout(s);
                if !sane(size, align) {
                    bad = Some(format!("a value of {size} bytes aligned to {align}"));
                }
            });
        }
        if let Some(bad) = bad {
            return Err(bad);
        }
        for (i, def) in self.types.iter().enumerate() {
            let (size, align) = match def {
                Def::Struct { size, align, .. }
                | Def::Enum { size, align, .. }
                | Def::Opaque { size, align, .. } => (*size, *align),
            };
            if !sane(size, align) {
                return Err(format!("type {i} has {size} bytes aligned to {align}"));
            }
            let made = match def {
                Def::Struct { fields, .. } => {
                    let (_, s, a) = repr_c(fields.iter().map(|f| self.layout(&f.shape)));
                    Some((s, a))
                }
                Def::Enum { variants, .. } => {
                    let mut tags: Vec<u8> = variants.iter().map(|v| v.tag).collect();
                    tags.sort_unstable();
                    tags.dedup();
                    if tags.len() != variants.len() {
                        return Err(format!("type {i} has two variants with one tag"));
                    }
                    let layouts: Vec<Vec<(u64, u64)>> = variants
                        .iter()
                        .map(|v| v.fields.iter().map(|f| self.layout(&f.shape)).collect())
                        .collect();
                    let (_, s, a) = repr_u8(&layouts);
                    Some((s, a))
                }
                Def::Opaque { .. } => None,
            };
            if made.is_some_and(|m| m != (size, align)) {
                return Err(format!(
                    "type {i} is stored as {size} bytes aligned to {align}, but its fields make {made:?}"
                ));
            }
        }
        let (size, align) = self.layout(&self.root);
        if !sane(size, align) {
            return Err(format!("the record has {size} bytes aligned to {align}"));
        }
        // A type that holds itself in place (not through a Vec or Box) has no finite form.
        for start in 0..n {
            let mut seen = vec![false; n];
            let mut stack = self.inline_defs(start);
            while let Some(i) = stack.pop() {
                if i == start {
                    return Err(format!("type {start} holds itself"));
                }
                if !std::mem::replace(&mut seen[i], true) {
                    stack.extend(self.inline_defs(i));
                }
            }
        }
        Ok(())
    }

    /// Why a value of this schema may not survive a trip through JSON unchanged, if it may
    /// not: an `Option` of a value that itself shows as `null` (`Some(None)`, `Some(())`,
    /// `Some` of a unit struct all show as `null`, which reads back as `None`).
    pub fn lossy(&self) -> Option<String> {
        let mut found = None;
        self.visit(&mut |s| {
            if let Shape::Option { of } = s {
                if found.is_none() && self.shows_null(of, 0) {
                    found = Some("an Option of a value that itself shows as null".to_string());
                }
            }
        });
        found
    }

    fn shows_null(&self, shape: &Shape, depth: u32) -> bool {
        if depth > 32 {
            return false;
        }
        match shape {
            Shape::Unit | Shape::Option { .. } => true,
            Shape::Box { of } => self.shows_null(of, depth + 1),
            Shape::Def { index } => match self.types.get(*index) {
                Some(Def::Struct { style, fields, .. }) => match (style, fields.len()) {
                    (Style::Unit, _) | (_, 0) => true,
                    (Style::Tuple, 1) => self.shows_null(&fields[0].shape, depth + 1),
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        }
    }

    /// The types that type `index` holds in place.
    fn inline_defs(&self, index: usize) -> Vec<usize> {
        fn walk(s: &Shape, out: &mut Vec<usize>) {
            match s {
                Shape::Def { index } => out.push(*index),
                Shape::Option { of } | Shape::Array { of, .. } => walk(of, out),
                Shape::Tuple { items } => items.iter().for_each(|s| walk(s, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        match self.types.get(index) {
            Some(Def::Struct { fields, .. }) => {
                fields.iter().for_each(|f| walk(&f.shape, &mut out))
            }
            Some(Def::Enum { variants, .. }) => variants
                .iter()
                .flat_map(|v| &v.fields)
                .for_each(|f| walk(&f.shape, &mut out)),
            _ => {}
        }
        out
    }

    fn visit(&self, f: &mut impl FnMut(&Shape)) {
        fn walk(s: &Shape, f: &mut impl FnMut(&Shape)) {
            f(s);
            match s {
                Shape::Option { of } | Shape::Vec { of } | Shape::Box { of } => walk(of, f),
                Shape::Array { of, .. } => walk(of, f),
                Shape::Tuple { items } => items.iter().for_each(|s| walk(s, f)),
                _ => {}
            }
        }
        walk(&self.root, f);
        for def in &self.types {
            match def {
                Def::Struct { fields, .. } => fields.iter().for_each(|x| walk(&x.shape, f)),
                Def::Enum { variants, .. } => variants
                    .iter()
                    .flat_map(|v| &v.fields)
                    .for_each(|x| walk(&x.shape, f)),
                Def::Opaque { .. } => {}
            }
        }
    }

    /// The size and alignment of a value of `shape` in an archive.
    pub fn layout(&self, shape: &Shape) -> (u64, u64) {
        layout_in(self.format, &|i| self.types.get(i), shape)
    }
}

/// The largest archived value a schema may describe in place, and the largest alignment.
const MAX_SIZE: u64 = 1 << 24;
const MAX_ALIGN: u64 = 4096;

fn sane(size: u64, align: u64) -> bool {
    size <= MAX_SIZE && align.is_power_of_two() && align <= MAX_ALIGN
}

/// `n` rounded up to a multiple of `align` (saturating: a stored schema is checked against
/// [`MAX_SIZE`] after its layout is computed this way).
fn round_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align.max(1)).saturating_mul(align.max(1))
}

/// Where each of a `repr(C)` struct's fields (of these sizes and alignments) lies, and the
/// struct's size and alignment.
pub(crate) fn repr_c(fields: impl IntoIterator<Item = (u64, u64)>) -> (Vec<u64>, u64, u64) {
    let (mut at, mut align, mut offsets) = (0u64, 1u64, Vec::new());
    for (size, a) in fields {
        at = round_up(at, a);
        offsets.push(at);
        at = at.saturating_add(size);
        align = align.max(a);
    }
    (offsets, round_up(at, align), align)
}

/// The layout of a `repr(u8)` enum with variants of these fields: per variant the offsets
/// of its fields (after the tag), and the enum's size and alignment.
pub(crate) fn repr_u8(variants: &[Vec<(u64, u64)>]) -> (Vec<Vec<u64>>, u64, u64) {
    let (mut size, mut align, mut out) = (1u64, 1u64, Vec::new());
    for fields in variants {
        let (offsets, s, a) = repr_c(std::iter::once((1, 1)).chain(fields.iter().copied()));
        out.push(offsets[1..].to_vec());
        size = size.max(s);
        align = align.max(a);
    }
    (out, round_up(size, align), align)
}

pub(crate) fn layout_in<'d>(
    format: Format,
    def: &dyn Fn(usize) -> Option<&'d Def>,
    shape: &Shape,
) -> (u64, u64) {
    let prim = |n: u64| (n, if format.aligned { n } else { 1 });
    let pw = u64::from(format.pointer_width);
    match shape {
        Shape::Unit => (0, 1),
        Shape::Bool | Shape::I8 | Shape::U8 => (1, 1),
        Shape::I16 | Shape::U16 => prim(2),
        Shape::I32 | Shape::U32 | Shape::F32 | Shape::Char => prim(4),
        Shape::I64 | Shape::U64 | Shape::F64 => prim(8),
        Shape::I128 | Shape::U128 => prim(16),
        Shape::String | Shape::Vec { .. } => (2 * pw, prim(pw).1),
        Shape::Box { .. } => prim(pw),
        Shape::Option { of } => {
            let (_, size, align) = repr_u8(&[vec![], vec![layout_in(format, def, of)]]);
            (size, align)
        }
        Shape::Array { of, len } => {
            let (size, align) = layout_in(format, def, of);
            (size.saturating_mul(*len), align)
        }
        Shape::Tuple { items } => {
            let (_, size, align) = repr_c(items.iter().map(|s| layout_in(format, def, s)));
            (size, align)
        }
        Shape::Def { index } => match def(*index) {
            Some(Def::Struct { size, align, .. })
            | Some(Def::Enum { size, align, .. })
            | Some(Def::Opaque { size, align, .. }) => (*size, *align),
            // Only reached through a pointer while the type is being described, and a
            // pointer's size does not depend on what it points at.
            None => (0, 1),
        },
        Shape::Opaque { size, align } => (*size, *align),
    }
}

/// A type's description. Derive it (`#[derive(strata_typed::Describe)]`) for a type a
/// record's fields use; [`crate::record`] derives it for the record itself.
pub trait Describe {
    fn describe(defs: &mut Defs) -> Shape;
}

/// The user types met while describing one record type.
pub struct Defs {
    format: Format,
    types: Vec<Option<Def>>,
    seen: HashMap<TypeId, usize>,
}

impl Defs {
    fn new() -> Defs {
        Defs {
            format: Format::current(),
            types: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn layout(&self, shape: &Shape) -> (u64, u64) {
        layout_in(
            self.format,
            &|i| self.types.get(i).and_then(Option::as_ref),
            shape,
        )
    }

    /// The shape of user type `T` (whose archived form is `A`), described once by `build`
    /// even when it refers to itself, and checked against the compiler's layout.
    #[doc(hidden)]
    pub fn define<T: 'static, A>(&mut self, build: impl FnOnce(&mut Defs) -> Draft) -> Shape {
        if let Some(&index) = self.seen.get(&TypeId::of::<T>()) {
            return Shape::Def { index };
        }
        let index = self.types.len();
        self.types.push(None);
        self.seen.insert(TypeId::of::<T>(), index);
        let draft = build(self);
        let (size, align) = (size_of::<A>() as u64, align_of::<A>() as u64);
        let def = self.check(draft, size, align);
        self.types[index] = Some(def);
        Shape::Def { index }
    }

    /// The definition a draft makes, or an opaque one where the computed layout is not the
    /// compiler's.
    fn check(&self, draft: Draft, size: u64, align: u64) -> Def {
        let opaque = |name: String, why: String| Def::Opaque {
            name,
            size,
            align,
            why,
        };
        match draft {
            Draft::Opaque { name, why } => opaque(name, why),
            Draft::Struct {
                name,
                style,
                fields,
            } => {
                let (offsets, s, a) = repr_c(fields.iter().map(|(_, shape, _)| self.layout(shape)));
                let placed = fields
                    .iter()
                    .zip(&offsets)
                    .all(|((_, _, real), at)| real.is_none_or(|r| r as u64 == *at));
                if !placed || (s, a) != (size, align) {
                    return opaque(name, "its archived layout is not the one described".into());
                }
                Def::Struct {
                    name,
                    style,
                    fields: fields
                        .into_iter()
                        .map(|(name, shape, _)| Field { name, shape })
                        .collect(),
                    size,
                    align,
                }
            }
            Draft::Enum { name, variants } => {
                if variants.len() > 256 {
                    return opaque(name, "more than 256 variants".into());
                }
                let layouts: Vec<Vec<(u64, u64)>> = variants
                    .iter()
                    .map(|v| v.fields.iter().map(|f| self.layout(&f.shape)).collect())
                    .collect();
                let (_, s, a) = repr_u8(&layouts);
                if (s, a) != (size, align) {
                    return opaque(name, "its archived layout is not the one described".into());
                }
                Def::Enum {
                    name,
                    variants,
                    size,
                    align,
                }
            }
        }
    }
}

/// A user type's description, as derived code gives it, before it is checked.
#[doc(hidden)]
pub enum Draft {
    Struct {
        name: String,
        style: Style,
        /// Each field: its name, shape and offset in the archived struct.
        fields: Vec<(String, Shape, Option<usize>)>,
    },
    Enum {
        name: String,
        variants: Vec<Variant>,
    },
    Opaque {
        name: String,
        why: String,
    },
}

macro_rules! describe_as {
    ($($t:ty => $shape:expr),* $(,)?) => {
        $(impl Describe for $t {
            fn describe(_: &mut Defs) -> Shape {
                $shape
            }
        })*
    };
}

fn sized(bytes: usize, signed: bool) -> Shape {
    match (bytes, signed) {
        (2, false) => Shape::U16,
        (4, false) => Shape::U32,
        (8, false) => Shape::U64,
        (2, true) => Shape::I16,
        (4, true) => Shape::I32,
        (8, true) => Shape::I64,
        (size, _) => Shape::Opaque {
            size: size as u64,
            align: size as u64,
        },
    }
}

describe_as! {
    () => Shape::Unit,
    bool => Shape::Bool,
    i8 => Shape::I8,
    i16 => Shape::I16,
    i32 => Shape::I32,
    i64 => Shape::I64,
    i128 => Shape::I128,
    u8 => Shape::U8,
    u16 => Shape::U16,
    u32 => Shape::U32,
    u64 => Shape::U64,
    u128 => Shape::U128,
    f32 => Shape::F32,
    f64 => Shape::F64,
    char => Shape::Char,
    String => Shape::String,
    usize => sized(size_of::<rkyv::Archived<usize>>(), false),
    isize => sized(size_of::<rkyv::Archived<isize>>(), true),
}

impl<T: Describe> Describe for Option<T> {
    fn describe(defs: &mut Defs) -> Shape {
        Shape::Option {
            of: Box::new(T::describe(defs)),
        }
    }
}

impl<T: Describe> Describe for Vec<T> {
    fn describe(defs: &mut Defs) -> Shape {
        Shape::Vec {
            of: Box::new(T::describe(defs)),
        }
    }
}

impl<T: Describe> Describe for Box<T> {
    fn describe(defs: &mut Defs) -> Shape {
        Shape::Box {
            of: Box::new(T::describe(defs)),
        }
    }
}

impl<T: Describe, const N: usize> Describe for [T; N] {
    fn describe(defs: &mut Defs) -> Shape {
        Shape::Array {
            of: Box::new(T::describe(defs)),
            len: N as u64,
        }
    }
}

macro_rules! describe_tuple {
    ($($t:ident),+) => {
        impl<$($t: Describe),+> Describe for ($($t,)+) {
            fn describe(defs: &mut Defs) -> Shape {
                Shape::Tuple { items: vec![$($t::describe(defs)),+] }
            }
        }
    };
}

describe_tuple!(A);
describe_tuple!(A, B);
describe_tuple!(A, B, C);
describe_tuple!(A, B, C, D);
describe_tuple!(A, B, C, D, E);
describe_tuple!(A, B, C, D, E, F);

/// What derived code uses to describe a field of any type: its [`Describe`] shape where it
/// has one, otherwise an opaque shape of its archived size (autoref specialization: the
/// first impl applies to `&&Probe<T>` only when `T: Describe`).
#[doc(hidden)]
pub mod __private {
    use super::{Defs, Describe, Shape};
    use std::marker::PhantomData;

    pub struct Probe<T>(PhantomData<T>);

    impl<T> Probe<T> {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Probe(PhantomData)
        }
    }

    pub trait ViaDescribe {
        fn shape(&self, defs: &mut Defs) -> Shape;
    }

    impl<T: Describe> ViaDescribe for &Probe<T> {
        fn shape(&self, defs: &mut Defs) -> Shape {
            T::describe(defs)
        }
    }

    pub trait ViaOpaque {
        fn shape(&self, defs: &mut Defs) -> Shape;
    }

    impl<T: rkyv::Archive> ViaOpaque for Probe<T> {
        fn shape(&self, _: &mut Defs) -> Shape {
            Shape::Opaque {
                size: size_of::<T::Archived>() as u64,
                align: align_of::<T::Archived>() as u64,
            }
        }
    }
}
