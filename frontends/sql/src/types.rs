//! SQL types and values, and their one mapping to Arrow.
//!
//! A column's declared type ([`SqlType`]) decides how a value is checked and stored; its
//! Arrow type is what DataFusion sees. All integer types are 64-bit in Arrow (as in SQLite,
//! arithmetic does not overflow at 32 bits) and keep their declared range on write.
//! [`Datum`] is one value as the layer stores and returns it.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};

/// A column's declared type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Decimal { precision: u8, scale: i8 },
    Text,
    Varchar(u64),
    Char(u64),
    Blob,
    Date,
    Timestamp,
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An unscaled integer and its scale: `Decimal(12345, 2)` is 123.45.
    Decimal(i128, i8),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00 (no time zone).
    Timestamp(i64),
}

impl SqlType {
    /// The type a column declared as `ty` gets.
    pub fn from_ast(ty: &ast::DataType) -> Result<SqlType> {
        use ast::DataType as D;
        let len = |l: &Option<ast::CharacterLength>| match l {
            Some(ast::CharacterLength::IntegerLength { length, .. }) => Some(*length),
            _ => None,
        };
        Ok(match ty {
            D::Boolean | D::Bool => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) | D::TinyInt(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) | D::MediumInt(_) => SqlType::Integer,
            D::BigInt(_) | D::Int8(_) | D::Int64 => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::Float(_) | D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 => {
                SqlType::Double
            }
            D::Decimal(info) | D::Numeric(info) | D::Dec(info) => {
                let (p, s) = match info {
                    ast::ExactNumberInfo::None => (38, 10),
                    ast::ExactNumberInfo::Precision(p) => (*p, 0),
                    ast::ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s as u64),
                };
                if p == 0 || p > 38 || s > p {
                    return Err(SqlError::DataType(format!(
                        "DECIMAL precision must be 1..38 and scale at most the precision, got ({p}, {s})"
                    )));
                }
                SqlType::Decimal {
                    precision: p as u8,
                    scale: s as i8,
                }
            }
            D::Text | D::String(_) | D::Clob(_) => SqlType::Text,
            D::Varchar(l) | D::CharacterVarying(l) | D::Nvarchar(l) => match len(l) {
                Some(n) => SqlType::Varchar(n),
                None => SqlType::Text,
            },
            D::Char(l) | D::Character(l) => SqlType::Char(len(l).unwrap_or(1)),
            D::Blob(_) | D::Bytea | D::Binary(_) | D::Varbinary(_) => SqlType::Blob,
            D::Date => SqlType::Date,
            D::Timestamp(_, ast::TimezoneInfo::None)
            | D::Timestamp(_, ast::TimezoneInfo::WithoutTimeZone)
            | D::Datetime(_) => SqlType::Timestamp,
            D::Custom(name, _) => {
                let n = name.to_string().to_ascii_lowercase();
                match n.as_str() {
                    "serial" | "serial4" => SqlType::Integer,
                    "bigserial" | "serial8" => SqlType::BigInt,
                    "smallserial" => SqlType::SmallInt,
                    "blob" => SqlType::Blob,
                    _ => return Err(SqlError::Unsupported(format!("column type {ty}"))),
                }
            }
            other => return Err(SqlError::Unsupported(format!("column type {other}"))),
        })
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt | SqlType::Integer | SqlType::BigInt => DataType::Int64,
            SqlType::Real | SqlType::Double => DataType::Float64,
            SqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => DataType::Utf8,
            SqlType::Blob => DataType::Binary,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, SqlType::SmallInt | SqlType::Integer | SqlType::BigInt)
    }

    /// The name `docs/sql.md` and error messages use.
    pub fn name(&self) -> String {
        match self {
            SqlType::Boolean => "BOOLEAN".into(),
            SqlType::SmallInt => "SMALLINT".into(),
            SqlType::Integer => "INTEGER".into(),
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Real => "REAL".into(),
            SqlType::Double => "DOUBLE".into(),
            SqlType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            SqlType::Text => "TEXT".into(),
            SqlType::Varchar(n) => format!("VARCHAR({n})"),
            SqlType::Char(n) => format!("CHAR({n})"),
            SqlType::Blob => "BLOB".into(),
            SqlType::Date => "DATE".into(),
            SqlType::Timestamp => "TIMESTAMP".into(),
        }
    }

    /// Convert `d` to a value of this type for column `column`, or explain why it cannot be.
    pub fn coerce(&self, d: Datum, column: &str) -> Result<Datum> {
        let mismatch = |d: &Datum| {
            SqlError::DataType(format!(
                "column {column:?} is of type {} but the value {} is of type {}",
                self.name(),
                d,
                d.type_name()
            ))
        };
        let out = match (self, d) {
            (_, Datum::Null) => Datum::Null,
            (SqlType::Boolean, Datum::Bool(b)) => Datum::Bool(b),
            (SqlType::Boolean, Datum::Int(i)) => Datum::Bool(i != 0),
            // PostgreSQL's boolean input forms.
            (SqlType::Boolean, Datum::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => Datum::Bool(true),
                "f" | "false" | "n" | "no" | "off" | "0" => Datum::Bool(false),
                _ => return Err(mismatch(&Datum::Text(s))),
            },
            (t, Datum::Int(i)) if t.is_integer() => Datum::Int(i),
            (t, Datum::Bool(b)) if t.is_integer() => Datum::Int(b as i64),
            (t, Datum::Float(f)) if t.is_integer() => {
                let r = f.round();
                if !r.is_finite() || r < i64::MIN as f64 || r >= i64::MAX as f64 {
                    return Err(SqlError::DataType(format!(
                        "value {f} is out of range for column {column:?} of type {}",
                        self.name()
                    )));
                }
                Datum::Int(r as i64)
            }
            (t, Datum::Decimal(v, s)) if t.is_integer() => {
                let r = decimal_to_f64(v, s).round();
                Datum::Int(r as i64)
            }
            (t, Datum::Text(s)) if t.is_integer() => match s.trim().parse::<i64>() {
                Ok(i) => Datum::Int(i),
                Err(_) => return Err(mismatch(&Datum::Text(s))),
            },
            (SqlType::Real | SqlType::Double, Datum::Float(f)) => Datum::Float(f),
            (SqlType::Real | SqlType::Double, Datum::Int(i)) => Datum::Float(i as f64),
            (SqlType::Real | SqlType::Double, Datum::Decimal(v, s)) => {
                Datum::Float(decimal_to_f64(v, s))
            }
            (SqlType::Real | SqlType::Double, Datum::Text(s)) => match s.trim().parse::<f64>() {
                Ok(f) => Datum::Float(f),
                Err(_) => return Err(mismatch(&Datum::Text(s))),
            },
            (SqlType::Decimal { precision, scale }, d) => {
                let v = match d {
                    Datum::Int(i) => rescale(i as i128, 0, *scale),
                    Datum::Decimal(v, s) => rescale(v, s, *scale),
                    Datum::Float(f) => {
                        let scaled = (f * 10f64.powi(*scale as i32)).round();
                        if scaled.is_finite() && scaled.abs() < 1e38 {
                            Some(scaled as i128)
                        } else {
                            None
                        }
                    }
                    Datum::Text(s) => {
                        if s.trim().parse::<f64>().is_err() {
                            return Err(mismatch(&Datum::Text(s)));
                        }
                        parse_decimal(s.trim(), *scale)
                    }
                    other => return Err(mismatch(&other)),
                };
                match v {
                    Some(v) if v.unsigned_abs() < 10u128.pow(*precision as u32) => {
                        Datum::Decimal(v, *scale)
                    }
                    _ => {
                        return Err(SqlError::DataType(format!(
                            "numeric value out of range for column {column:?} of type {}",
                            self.name()
                        )))
                    }
                }
            }
            (SqlType::Text, d) => Datum::Text(d.into_text()),
            (SqlType::Varchar(n) | SqlType::Char(n), d) => {
                let s = d.into_text();
                let chars = s.chars().count() as u64;
                if chars > *n {
                    return Err(SqlError::ValueTooLong {
                        column: column.to_string(),
                        detail: format!("{chars} characters for {}", self.name()),
                    });
                }
                Datum::Text(s)
            }
            (SqlType::Blob, Datum::Bytes(b)) => Datum::Bytes(b),
            (SqlType::Blob, Datum::Text(s)) => Datum::Bytes(s.into_bytes()),
            (SqlType::Date, Datum::Date(d)) => Datum::Date(d),
            (SqlType::Date, Datum::Timestamp(t)) => {
                Datum::Date(t.div_euclid(86_400_000_000) as i32)
            }
            (SqlType::Date, Datum::Text(s)) => match parse_date(s.trim()) {
                Some(d) => Datum::Date(d),
                None => return Err(mismatch(&Datum::Text(s))),
            },
            (SqlType::Timestamp, Datum::Timestamp(t)) => Datum::Timestamp(t),
            (SqlType::Timestamp, Datum::Date(d)) => Datum::Timestamp(d as i64 * 86_400_000_000),
            (SqlType::Timestamp, Datum::Text(s)) => match parse_timestamp(s.trim()) {
                Some(t) => Datum::Timestamp(t),
                None => return Err(mismatch(&Datum::Text(s))),
            },
            (_, d) => return Err(mismatch(&d)),
        };
        if let (SqlType::SmallInt, Datum::Int(i)) = (self, &out) {
            if *i < i16::MIN as i64 || *i > i16::MAX as i64 {
                return Err(SqlError::DataType(format!(
                    "smallint out of range: {i} for column {column:?}"
                )));
            }
        }
        if let (SqlType::Integer, Datum::Int(i)) = (self, &out) {
            if *i < i32::MIN as i64 || *i > i32::MAX as i64 {
                return Err(SqlError::DataType(format!(
                    "integer out of range: {i} for column {column:?}"
                )));
            }
        }
        Ok(out)
    }
}

fn rescale(v: i128, from: i8, to: i8) -> Option<i128> {
    if to >= from {
        v.checked_mul(10i128.checked_pow((to - from) as u32)?)
    } else {
        let div = 10i128.checked_pow((from - to) as u32)?;
        let q = v / div;
        let r = v % div;
        Some(if r.abs() * 2 >= div {
            q + v.signum()
        } else {
            q
        })
    }
}

fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let v: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    let v = rescale(v, frac.len() as i8, scale)?;
    Some(if neg { -v } else { v })
}

fn decimal_to_f64(v: i128, scale: i8) -> f64 {
    v as f64 / 10f64.powi(scale as i32)
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut parts = s.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.ffffff]` as microseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, "00:00:00"),
    };
    let days = parse_date(date)? as i64;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut p = hms.split(':');
    let h: i64 = p.next()?.parse().ok()?;
    let mi: i64 = p.next()?.parse().ok()?;
    let sec: i64 = p.next().unwrap_or("0").parse().ok()?;
    if h > 23 || mi > 59 || sec > 60 || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse().ok()?
    };
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000) + micros)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A [`Datum`] borrowed where it lies: in a stored row, or in an owned `Datum`. Scans
/// read rows into these, so filtering and building columns allocate nothing per value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DatumRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(i128, i8),
    Text(&'a str),
    Bytes(&'a [u8]),
    Date(i32),
    Timestamp(i64),
}

impl DatumRef<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, DatumRef::Null)
    }

    pub fn to_datum(self) -> Datum {
        match self {
            DatumRef::Null => Datum::Null,
            DatumRef::Bool(v) => Datum::Bool(v),
            DatumRef::Int(v) => Datum::Int(v),
            DatumRef::Float(v) => Datum::Float(v),
            DatumRef::Decimal(v, s) => Datum::Decimal(v, s),
            DatumRef::Text(v) => Datum::Text(v.to_owned()),
            DatumRef::Bytes(v) => Datum::Bytes(v.to_vec()),
            DatumRef::Date(v) => Datum::Date(v),
            DatumRef::Timestamp(v) => Datum::Timestamp(v),
        }
    }
}

impl Datum {
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    pub fn as_ref(&self) -> DatumRef<'_> {
        match self {
            Datum::Null => DatumRef::Null,
            Datum::Bool(v) => DatumRef::Bool(*v),
            Datum::Int(v) => DatumRef::Int(*v),
            Datum::Float(v) => DatumRef::Float(*v),
            Datum::Decimal(v, s) => DatumRef::Decimal(*v, *s),
            Datum::Text(v) => DatumRef::Text(v),
            Datum::Bytes(v) => DatumRef::Bytes(v),
            Datum::Date(v) => DatumRef::Date(*v),
            Datum::Timestamp(v) => DatumRef::Timestamp(*v),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Datum::Null => "NULL",
            Datum::Bool(_) => "BOOLEAN",
            Datum::Int(_) => "INTEGER",
            Datum::Float(_) => "DOUBLE",
            Datum::Decimal(..) => "DECIMAL",
            Datum::Text(_) => "TEXT",
            Datum::Bytes(_) => "BLOB",
            Datum::Date(_) => "DATE",
            Datum::Timestamp(_) => "TIMESTAMP",
        }
    }

    fn into_text(self) -> String {
        match self {
            Datum::Text(s) => s,
            other => other.to_string(),
        }
    }

    /// The value of row `row` of an Arrow array of any type DataFusion produces.
    pub fn from_array(array: &ArrayRef, row: usize) -> Result<Datum> {
        if array.is_null(row) {
            return Ok(Datum::Null);
        }
        let scalar = ScalarValue::try_from_array(array, row)?;
        Datum::from_scalar(&scalar)
    }

    pub fn from_scalar(s: &ScalarValue) -> Result<Datum> {
        use ScalarValue as S;
        if s.is_null() {
            return Ok(Datum::Null);
        }
        Ok(match s {
            S::Boolean(Some(b)) => Datum::Bool(*b),
            S::Int8(Some(v)) => Datum::Int(*v as i64),
            S::Int16(Some(v)) => Datum::Int(*v as i64),
            S::Int32(Some(v)) => Datum::Int(*v as i64),
            S::Int64(Some(v)) => Datum::Int(*v),
            S::UInt8(Some(v)) => Datum::Int(*v as i64),
            S::UInt16(Some(v)) => Datum::Int(*v as i64),
            S::UInt32(Some(v)) => Datum::Int(*v as i64),
            S::UInt64(Some(v)) => match i64::try_from(*v) {
                Ok(i) => Datum::Int(i),
                Err(_) => Datum::Float(*v as f64),
            },
            S::Float16(Some(v)) => Datum::Float(f64::from(*v)),
            S::Float32(Some(v)) => Datum::Float(*v as f64),
            S::Float64(Some(v)) => Datum::Float(*v),
            S::Decimal128(Some(v), _, s) => Datum::Decimal(*v, *s),
            S::Utf8(Some(v)) | S::LargeUtf8(Some(v)) | S::Utf8View(Some(v)) => {
                Datum::Text(v.clone())
            }
            S::Binary(Some(v)) | S::LargeBinary(Some(v)) | S::BinaryView(Some(v)) => {
                Datum::Bytes(v.clone())
            }
            S::FixedSizeBinary(_, Some(v)) => Datum::Bytes(v.clone()),
            S::Date32(Some(v)) => Datum::Date(*v),
            S::Date64(Some(v)) => Datum::Date(v.div_euclid(86_400_000) as i32),
            S::TimestampSecond(Some(v), _) => Datum::Timestamp(v.saturating_mul(1_000_000)),
            S::TimestampMillisecond(Some(v), _) => Datum::Timestamp(v.saturating_mul(1000)),
            S::TimestampMicrosecond(Some(v), _) => Datum::Timestamp(*v),
            S::TimestampNanosecond(Some(v), _) => Datum::Timestamp(v.div_euclid(1000)),
            S::Dictionary(_, inner) => return Datum::from_scalar(inner),
            other => {
                return Err(SqlError::Unsupported(format!(
                    "values of type {} in a result",
                    other.data_type()
                )))
            }
        })
    }

    /// This value as DataFusion's scalar of the Arrow type `ty` (NULL of that type for NULL).
    pub fn to_scalar(&self) -> ScalarValue {
        match self {
            Datum::Null => ScalarValue::Null,
            Datum::Bool(b) => ScalarValue::Boolean(Some(*b)),
            Datum::Int(i) => ScalarValue::Int64(Some(*i)),
            Datum::Float(f) => ScalarValue::Float64(Some(*f)),
            Datum::Decimal(v, s) => ScalarValue::Decimal128(Some(*v), 38, *s),
            Datum::Text(s) => ScalarValue::Utf8(Some(s.clone())),
            Datum::Bytes(b) => ScalarValue::Binary(Some(b.clone())),
            Datum::Date(d) => ScalarValue::Date32(Some(*d)),
            Datum::Timestamp(t) => ScalarValue::TimestampMicrosecond(Some(*t), None),
        }
    }
}

impl std::fmt::Display for Datum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Datum::Null => f.write_str("NULL"),
            Datum::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Float(v) => write!(f, "{v}"),
            Datum::Decimal(v, s) => {
                if *s <= 0 {
                    return write!(f, "{}", v * 10i128.pow((-*s) as u32));
                }
                let div = 10i128.pow(*s as u32);
                let sign = if *v < 0 { "-" } else { "" };
                let a = v.unsigned_abs();
                write!(
                    f,
                    "{sign}{}.{:0width$}",
                    a / div as u128,
                    a % div as u128,
                    width = *s as usize
                )
            }
            Datum::Text(s) => f.write_str(s),
            Datum::Bytes(b) => {
                f.write_str("\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Datum::Date(d) => {
                let (y, m, dd) = civil_from_days(*d as i64);
                write!(f, "{y:04}-{m:02}-{dd:02}")
            }
            Datum::Timestamp(t) => {
                let days = t.div_euclid(86_400_000_000);
                let rem = t.rem_euclid(86_400_000_000);
                let (y, m, d) = civil_from_days(days);
                let secs = rem / 1_000_000;
                let micros = rem % 1_000_000;
                write!(
                    f,
                    "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60
                )?;
                if micros != 0 {
                    write!(f, ".{micros:06}")?;
                }
                Ok(())
            }
        }
    }
}

/// Builds one Arrow column of a declared type from datums.
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    pub fn new(ty: &SqlType, capacity: usize) -> Self {
        match ty {
            SqlType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            SqlType::SmallInt | SqlType::Integer | SqlType::BigInt => {
                ColumnBuilder::Int(Int64Builder::with_capacity(capacity))
            }
            SqlType::Real | SqlType::Double => {
                ColumnBuilder::Float(Float64Builder::with_capacity(capacity))
            }
            SqlType::Decimal { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity),
                *precision,
                *scale,
            ),
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            SqlType::Blob => {
                ColumnBuilder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 8))
            }
            SqlType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            SqlType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
        }
    }

    /// Append a stored value; a value of another type than the column's is a corrupt row.
    pub fn push(&mut self, d: &Datum) -> Result<()> {
        self.push_ref(d.as_ref())
    }

    /// [`ColumnBuilder::push`] of a borrowed value.
    pub fn push_ref(&mut self, d: DatumRef<'_>) -> Result<()> {
        match (self, d) {
            (ColumnBuilder::Bool(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Int(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Float(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Decimal(b, ..), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Text(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Bytes(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Date(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Timestamp(b), DatumRef::Null) => b.append_null(),
            (ColumnBuilder::Bool(b), DatumRef::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Int(b), DatumRef::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), DatumRef::Float(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), DatumRef::Int(v)) => b.append_value(v as f64),
            (ColumnBuilder::Decimal(b, ..), DatumRef::Decimal(v, _)) => b.append_value(v),
            (ColumnBuilder::Text(b), DatumRef::Text(v)) => b.append_value(v),
            (ColumnBuilder::Bytes(b), DatumRef::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), DatumRef::Date(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), DatumRef::Timestamp(v)) => b.append_value(v),
            (_, d) => {
                return Err(SqlError::Internal(format!(
                    "stored value {} does not match its column's type",
                    d.to_datum()
                )))
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(p, s)
                    .map_err(|e| SqlError::Internal(e.to_string()))?,
            ),
            ColumnBuilder::Text(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish()),
        })
    }
}

/// A one-value column of type `ty`: what a [`ColumnBuilder`] gives for `d` alone, built
/// without a builder's buffers for the common types (the fast path's one-row answers).
pub fn single(ty: &SqlType, d: &Datum) -> Result<ArrayRef> {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    Ok(match (ty, d) {
        (SqlType::SmallInt | SqlType::Integer | SqlType::BigInt, Datum::Int(v)) => {
            Arc::new(Int64Array::new(ScalarBuffer::from(vec![*v]), None))
        }
        (SqlType::Real | SqlType::Double, Datum::Float(v)) => {
            Arc::new(Float64Array::new(ScalarBuffer::from(vec![*v]), None))
        }
        (SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_), Datum::Text(v)) => {
            let end = i32::try_from(v.len())
                .map_err(|_| SqlError::Internal("a text value over 2 GiB".into()))?;
            let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0, end]));
            let values = Buffer::from_vec(v.as_bytes().to_vec());
            Arc::new(
                StringArray::try_new(offsets, values, None)
                    .map_err(|e| SqlError::Internal(e.to_string()))?,
            )
        }
        _ => {
            let mut b = ColumnBuilder::new(ty, 1);
            b.push(d)?;
            b.finish()?
        }
    })
}

/// Map a DataFusion error to ours: our own errors come back out, the rest keep their text.
pub fn from_datafusion(e: DataFusionError) -> SqlError {
    use datafusion::arrow::error::ArrowError;
    match e {
        DataFusionError::External(inner) => match inner.downcast::<SqlError>() {
            Ok(ours) => *ours,
            Err(other) => match other.downcast::<DataFusionError>() {
                Ok(df) => from_datafusion(*df),
                Err(other) => SqlError::Query(other.to_string()),
            },
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            from_datafusion(*inner)
        }
        DataFusionError::Shared(inner) => match Arc::try_unwrap(inner) {
            Ok(e) => from_datafusion(e),
            Err(shared) => SqlError::Query(shared.to_string()),
        },
        DataFusionError::ArrowError(a, _) if matches!(*a, ArrowError::DivideByZero) => {
            SqlError::DivisionByZero
        }
        DataFusionError::SQL(p, _) => SqlError::Syntax(p.to_string()),
        DataFusionError::NotImplemented(m) => SqlError::Unsupported(m),
        DataFusionError::SchemaError(s, _) => {
            use datafusion::common::SchemaError;
            match *s {
                SchemaError::FieldNotFound { field, .. } => SqlError::UndefinedColumn {
                    table: field.relation.map(|r| r.to_string()).unwrap_or_default(),
                    column: field.name,
                },
                other => SqlError::Query(other.to_string()),
            }
        }
        DataFusionError::Plan(m) => {
            if let Some(rest) = m.strip_prefix("table '") {
                if let Some(name) = rest.strip_suffix("' not found") {
                    return SqlError::UndefinedObject {
                        kind: "table",
                        name: name.to_string(),
                    };
                }
            }
            if m.contains("Divide by zero") {
                return SqlError::DivisionByZero;
            }
            SqlError::Query(m)
        }
        DataFusionError::Execution(m) if m.contains("Divide by zero") => SqlError::DivisionByZero,
        other => SqlError::Query(other.strip_backtrace()),
    }
}
