//! Values, their encodings, versionstamps and the entries reads return.

use std::fmt;

use serde::{Deserialize, Serialize};

/// 10 bytes: the 8-byte big-endian commit version, then 2 bytes (zero for a whole commit).
///
/// Versionstamps compare in commit order, as bytes and as their lowercase hex form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Versionstamp(pub [u8; 10]);

impl Versionstamp {
    pub const ZERO: Versionstamp = Versionstamp([0; 10]);

    pub fn from_version(version: u64) -> Self {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&version.to_be_bytes());
        Versionstamp(b)
    }

    /// The commit version the stamp was taken from.
    pub fn version(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(v)
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 10]>::try_from(b).ok().map(Versionstamp)
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(20);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 20 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 10];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Versionstamp(b))
    }
}

impl fmt::Debug for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Versionstamp({})", self.to_hex())
    }
}

impl fmt::Display for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// How a value's bytes are to be read. The engine itself interprets only [`Encoding::U64`]
/// (for `sum`/`min`/`max`); the others are carried for the frontends.
///
/// Tags 1–3 match the KV Connect `ValueEncoding` numbers; frontends may use
/// [`Encoding::Custom`] tags 16 and up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Encoding {
    /// V8 structured-clone bytes, opaque to the engine.
    V8,
    /// An unsigned 64-bit integer, 8 bytes little-endian.
    U64,
    /// Raw bytes.
    Bytes,
    /// A frontend-defined encoding, tag 16..=255.
    Custom(u8),
}

impl Encoding {
    pub fn tag(self) -> u8 {
        match self {
            Encoding::V8 => 1,
            Encoding::U64 => 2,
            Encoding::Bytes => 3,
            Encoding::Custom(t) => t,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Encoding::V8),
            2 => Some(Encoding::U64),
            3 => Some(Encoding::Bytes),
            16..=255 => Some(Encoding::Custom(tag)),
            _ => None,
        }
    }
}

/// A value with its encoding.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Value {
    pub encoding: Encoding,
    pub data: Vec<u8>,
}

/// A value borrowed from storage, as a visiting scan sees it
/// ([`crate::Transaction::scan_each`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ValueRef<'a> {
    pub encoding: Encoding,
    pub data: &'a [u8],
}

impl Value {
    /// This value, borrowed.
    pub fn as_ref(&self) -> ValueRef<'_> {
        ValueRef {
            encoding: self.encoding,
            data: &self.data,
        }
    }

    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Value {
            encoding: Encoding::Bytes,
            data: data.into(),
        }
    }

    pub fn u64(n: u64) -> Self {
        Value {
            encoding: Encoding::U64,
            data: n.to_le_bytes().to_vec(),
        }
    }

    pub fn v8(data: impl Into<Vec<u8>>) -> Self {
        Value {
            encoding: Encoding::V8,
            data: data.into(),
        }
    }

    /// The integer of a well-formed U64 value.
    pub fn as_u64(&self) -> Option<u64> {
        if self.encoding != Encoding::U64 {
            return None;
        }
        let b: [u8; 8] = self.data.as_slice().try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// A key as a read returns it: its value, the versionstamp of its last write, its expiry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Value,
    pub versionstamp: Versionstamp,
    /// Milliseconds since the Unix epoch after which the key no longer exists.
    pub expires_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versionstamps_order_as_bytes_and_hex() {
        let a = Versionstamp::from_version(255);
        let b = Versionstamp::from_version(256);
        assert!(a < b);
        assert!(a.to_hex() < b.to_hex());
        assert_eq!(a.to_hex(), "00000000000000ff0000");
        assert_eq!(Versionstamp::from_hex(&b.to_hex()), Some(b));
        assert_eq!(b.version(), 256);
        assert_eq!(Versionstamp::from_hex("zz"), None);
    }

    #[test]
    fn encoding_tags_round_trip() {
        for e in [
            Encoding::V8,
            Encoding::U64,
            Encoding::Bytes,
            Encoding::Custom(40),
        ] {
            assert_eq!(Encoding::from_tag(e.tag()), Some(e));
        }
        assert_eq!(Encoding::from_tag(0), None);
        assert_eq!(Encoding::from_tag(9), None);
    }

    #[test]
    fn malformed_u64_is_not_a_number() {
        assert_eq!(Value::u64(7).as_u64(), Some(7));
        assert_eq!(
            Value {
                encoding: Encoding::U64,
                data: vec![1, 2]
            }
            .as_u64(),
            None
        );
        assert_eq!(Value::bytes(vec![0; 8]).as_u64(), None);
    }
}
