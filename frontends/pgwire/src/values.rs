//! Values on the wire: parameters arrive as bytes in text or binary format, in the type the
//! client declared or the server described; they become [`Datum`]s here. Results leave as
//! Arrow batches, encoded by `arrow-pg`.
//!
//! Integer columns are 64-bit in Strata (as in SQLite), so they travel as `int8`; REAL and
//! DOUBLE as `float8`. Timestamps carry no time zone (`timestamp`).

use pgwire::api::Type;
use pgwire::error::PgWireError;
use strata_sql::arrow::datatypes::DataType;
use strata_sql::Datum;

use crate::error::user_error;

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for binary dates.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The PostgreSQL type a value of Arrow type `ty` travels as.
pub fn pg_type(ty: &DataType) -> Type {
    arrow_pg::datatypes::into_pg_type(ty).unwrap_or(Type::TEXT)
}

/// Parameter `n` (from 0) of type `ty`, `None` meaning SQL NULL.
pub fn decode_param(
    n: usize,
    ty: &Type,
    binary: bool,
    bytes: Option<&[u8]>,
) -> Result<Datum, PgWireError> {
    let Some(bytes) = bytes else {
        return Ok(Datum::Null);
    };
    let bad = |what: &str| {
        user_error(
            "22P02",
            format!(
                "invalid {} value for parameter ${}: {what}",
                ty.name(),
                n + 1
            ),
        )
    };
    if binary {
        return decode_binary(ty, bytes).map_err(|e| bad(&e));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    decode_text(ty, text).map_err(|e| bad(&e))
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", bytes.len()))
}

fn decode_binary(ty: &Type, b: &[u8]) -> Result<Datum, String> {
    Ok(match *ty {
        Type::BOOL => Datum::Bool(fixed::<1>(b)?[0] != 0),
        Type::INT2 => Datum::Int(i16::from_be_bytes(fixed(b)?) as i64),
        Type::INT4 => Datum::Int(i32::from_be_bytes(fixed(b)?) as i64),
        Type::OID => Datum::Int(u32::from_be_bytes(fixed(b)?) as i64),
        Type::INT8 => Datum::Int(i64::from_be_bytes(fixed(b)?)),
        Type::FLOAT4 => Datum::Float(f32::from_be_bytes(fixed(b)?) as f64),
        Type::FLOAT8 => Datum::Float(f64::from_be_bytes(fixed(b)?)),
        Type::NUMERIC => {
            let d = <rust_decimal::Decimal as postgres_types::FromSql>::from_sql(ty, b)
                .map_err(|e| e.to_string())?;
            decimal(d)
        }
        Type::BYTEA => Datum::Bytes(b.to_vec()),
        Type::DATE => Datum::Date(
            i32::from_be_bytes(fixed(b)?)
                .checked_add(PG_EPOCH_DAYS)
                .ok_or("date out of range")?,
        ),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => Datum::Timestamp(
            i64::from_be_bytes(fixed(b)?)
                .checked_add(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?,
        ),
        _ if is_textual(ty) => Datum::Text(
            std::str::from_utf8(b)
                .map_err(|_| "not UTF-8".to_string())?
                .to_owned(),
        ),
        _ => return Err(format!("type {} is not supported", ty.name())),
    })
}

fn is_textual(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::CHAR
    )
}

fn decode_text(ty: &Type, s: &str) -> Result<Datum, String> {
    let t = s.trim();
    Ok(match *ty {
        Type::BOOL => match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Datum::Bool(true),
            "f" | "false" | "n" | "no" | "off" | "0" => Datum::Bool(false),
            _ => return Err(format!("{s:?} is not a boolean")),
        },
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Datum::Int(
            t.parse::<i64>()
                .map_err(|_| format!("{s:?} is not an integer"))?,
        ),
        Type::FLOAT4 | Type::FLOAT8 => Datum::Float(match t.to_ascii_lowercase().as_str() {
            "nan" => f64::NAN,
            "infinity" | "+infinity" | "inf" => f64::INFINITY,
            "-infinity" | "-inf" => f64::NEG_INFINITY,
            _ => t
                .parse::<f64>()
                .map_err(|_| format!("{s:?} is not a number"))?,
        }),
        Type::NUMERIC => decimal(
            rust_decimal::Decimal::from_str_exact(t)
                .or_else(|_| rust_decimal::Decimal::from_scientific(t))
                .map_err(|_| format!("{s:?} is not a decimal number"))?,
        ),
        Type::BYTEA => Datum::Bytes(bytea_text(s)?),
        Type::DATE => {
            Datum::Date(strata_sql::parse_date(t).ok_or_else(|| format!("{s:?} is not a date"))?)
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => Datum::Timestamp(
            strata_sql::parse_timestamp(strip_utc(t))
                .ok_or_else(|| format!("{s:?} is not a timestamp"))?,
        ),
        _ if is_textual(ty) => Datum::Text(s.to_owned()),
        _ => return Err(format!("type {} is not supported", ty.name())),
    })
}

/// `2024-01-02 03:04:05+00` → `2024-01-02 03:04:05` (a zero offset only).
fn strip_utc(t: &str) -> &str {
    for suffix in ["+00:00", "+00", "Z", "z"] {
        if let Some(rest) = t.strip_suffix(suffix) {
            return rest;
        }
    }
    t
}

fn decimal(d: rust_decimal::Decimal) -> Datum {
    Datum::Decimal(d.mantissa(), d.scale() as i8)
}

/// A bytea in text form: hex (`\x0a0b`) or the escape format (`a\\b\000`).
fn bytea_text(s: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return Err("odd number of hex digits".into());
        }
        return (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| "invalid hex digit".to_string())
            })
            .collect();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = s.get(i + 1..i + 4).ok_or("invalid escape")?;
            out.push(u8::from_str_radix(oct, 8).map_err(|_| "invalid escape".to_string())?);
            i += 4;
        }
    }
    Ok(out)
}
