//! Query results as JSON: `{"columns": [{"name", "type"}], "rows": [[…]]}`.
//!
//! `type` is the Arrow type's display name (`Int64`, `Utf8`, `Float64`, …). Integers and
//! floats are JSON numbers (a float that JSON cannot hold, NaN or an infinity, is the string
//! `"NaN"`, `"inf"` or `"-inf"`); decimals are strings, so no digit is lost; dates and
//! timestamps are ISO-style strings; binary values are base64 strings; NULL is `null`. A
//! result without rows is `{"columns": [], "rows": []}`, as the server this API follows
//! answers it.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value as Json;
use strata_sql::arrow::array::ArrayRef;
use strata_sql::arrow::util::display::{ArrayFormatter, FormatOptions};
use strata_sql::{Datum, QueryRows};

/// One result column.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Column {
    pub name: String,
    /// The Arrow type's display name.
    #[serde(rename = "type")]
    pub ty: String,
}

/// A query's result.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    /// One array per row, a value per column.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Json>>,
}

impl ResultSet {
    /// The JSON form of `rows`.
    pub fn from_rows(rows: &QueryRows) -> ResultSet {
        if rows.num_rows() == 0 {
            return ResultSet::default();
        }
        let columns = rows
            .schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                ty: f.data_type().to_string(),
            })
            .collect();
        let mut out = Vec::with_capacity(rows.num_rows());
        for batch in &rows.batches {
            for r in 0..batch.num_rows() {
                out.push(batch.columns().iter().map(|c| value(c, r)).collect());
            }
        }
        ResultSet { columns, rows: out }
    }
}

/// One value as JSON.
pub fn value(array: &ArrayRef, row: usize) -> Json {
    match Datum::from_array(array, row) {
        Ok(d) => datum(&d),
        // A type the SQL layer does not store (a list from array_agg, an interval, …): its
        // Arrow display text.
        Err(_) => match ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()) {
            Ok(f) => Json::String(f.value(row).to_string()),
            Err(_) => Json::Null,
        },
    }
}

/// A value as JSON (see the module documentation for the forms).
pub fn datum(d: &Datum) -> Json {
    match d {
        Datum::Null => Json::Null,
        Datum::Bool(b) => Json::Bool(*b),
        Datum::Int(i) => Json::from(*i),
        Datum::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => Json::String(if f.is_nan() {
                "NaN".into()
            } else if *f > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }),
        },
        Datum::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Datum::Text(s) => Json::String(s.clone()),
        Datum::Decimal(..) | Datum::Date(_) | Datum::Timestamp(_) => Json::String(d.to_string()),
    }
}

/// A statement parameter from JSON: `null`, a boolean, an integer, a float or a string.
/// Arrays and objects are refused: a parameter is one value.
pub fn param(v: &Json) -> Result<Datum, String> {
    Ok(match v {
        Json::Null => Datum::Null,
        Json::Bool(b) => Datum::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Datum::Int(i),
            None => match n.as_f64() {
                Some(f) if n.is_f64() => Datum::Float(f),
                _ => return Err(format!("parameter {n} does not fit a 64-bit integer")),
            },
        },
        Json::String(s) => Datum::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => {
            return Err("a parameter is null, a boolean, a number or a string".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_json_forms() {
        assert_eq!(datum(&Datum::Int(42)), serde_json::json!(42));
        assert_eq!(datum(&Datum::Null), Json::Null);
        assert_eq!(
            datum(&Datum::Bytes(vec![1, 2, 3])),
            serde_json::json!("AQID")
        );
        assert_eq!(
            datum(&Datum::Decimal(12345, 2)),
            serde_json::json!("123.45")
        );
        assert_eq!(datum(&Datum::Float(f64::NAN)), serde_json::json!("NaN"));
        assert_eq!(datum(&Datum::Float(1.5)), serde_json::json!(1.5));
    }

    #[test]
    fn parameters_are_single_values() {
        assert_eq!(param(&serde_json::json!(7)).unwrap(), Datum::Int(7));
        assert_eq!(param(&serde_json::json!(0.5)).unwrap(), Datum::Float(0.5));
        assert_eq!(
            param(&serde_json::json!("a")).unwrap(),
            Datum::Text("a".into())
        );
        assert!(param(&serde_json::json!([1])).is_err());
        assert!(param(&serde_json::json!(u64::MAX)).is_err());
    }
}
