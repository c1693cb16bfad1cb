//! Query results as JSON: `{"columns": [{"name", "type"}], "rows": [[…]]}`.
//!
//! `type` is the Arrow type's display name (`Int64`, `Utf8`, `Float64`, …). Integers and
//! floats are JSON numbers (a float that JSON cannot hold, NaN or an infinity, is the string
//! `"NaN"`, `"inf"` or `"-inf"`); decimals are strings, so no digit is lost; dates and
//! timestamps are ISO-style strings; binary values are base64 strings; NULL is `null`. A
//! result without rows is `{"columns": [], "rows": []}`, as the server this API follows
//! answers it.

use base64::Engine as _;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value as Json;
use strata_sql::arrow::array::{ArrayRef, AsArray};
use strata_sql::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
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

/// A query's rows, serialized straight to the [`ResultSet`] form: the response body of the
/// query endpoints. Integers, floats, booleans and text go from their Arrow arrays to the
/// output with no value built in between; other types take [`value`]'s way.
pub struct JsonRows<'a>(pub &'a QueryRows);

impl Serialize for JsonRows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows = self.0;
        let empty = rows.num_rows() == 0;
        let mut out = s.serialize_struct("ResultSet", 2)?;
        out.serialize_field("columns", &Columns { rows, empty })?;
        out.serialize_field("rows", &Rows(rows))?;
        out.end()
    }
}

struct Columns<'a> {
    rows: &'a QueryRows,
    empty: bool,
}

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.rows.schema.fields();
        // A result without rows has no columns either, as the server this API follows says.
        let n = if self.empty { 0 } else { fields.len() };
        let mut seq = s.serialize_seq(Some(n))?;
        for f in fields.iter().take(n) {
            seq.serialize_element(&ColumnRef {
                name: f.name(),
                ty: f.data_type(),
            })?;
        }
        seq.end()
    }
}

struct ColumnRef<'a> {
    name: &'a str,
    ty: &'a DataType,
}

impl Serialize for ColumnRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Display<'a>(&'a DataType);
        impl Serialize for Display<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // The names of the types tables store, without a trip through `fmt`.
                let name = match self.0 {
                    DataType::Boolean => "Boolean",
                    DataType::Int64 => "Int64",
                    DataType::Float64 => "Float64",
                    DataType::Utf8 => "Utf8",
                    DataType::Binary => "Binary",
                    DataType::Date32 => "Date32",
                    other => return s.collect_str(other),
                };
                s.serialize_str(name)
            }
        }
        let mut out = s.serialize_struct("Column", 2)?;
        out.serialize_field("name", self.name)?;
        out.serialize_field("type", &Display(self.ty))?;
        out.end()
    }
}

struct Rows<'a>(&'a QueryRows);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.num_rows()))?;
        for batch in &self.0.batches {
            for row in 0..batch.num_rows() {
                seq.serialize_element(&Row {
                    columns: batch.columns(),
                    row,
                })?;
            }
        }
        seq.end()
    }
}

struct Row<'a> {
    columns: &'a [ArrayRef],
    row: usize,
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.columns.len()))?;
        for array in self.columns {
            seq.serialize_element(&Cell {
                array,
                row: self.row,
            })?;
        }
        seq.end()
    }
}

struct Cell<'a> {
    array: &'a ArrayRef,
    row: usize,
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (a, r) = (self.array.as_ref(), self.row);
        if a.is_null(r) {
            return s.serialize_unit();
        }
        match a.data_type() {
            DataType::Boolean => s.serialize_bool(a.as_boolean().value(r)),
            DataType::Int8 => s.serialize_i64(a.as_primitive::<Int8Type>().value(r).into()),
            DataType::Int16 => s.serialize_i64(a.as_primitive::<Int16Type>().value(r).into()),
            DataType::Int32 => s.serialize_i64(a.as_primitive::<Int32Type>().value(r).into()),
            DataType::Int64 => s.serialize_i64(a.as_primitive::<Int64Type>().value(r)),
            DataType::UInt8 => s.serialize_i64(a.as_primitive::<UInt8Type>().value(r).into()),
            DataType::UInt16 => s.serialize_i64(a.as_primitive::<UInt16Type>().value(r).into()),
            DataType::UInt32 => s.serialize_i64(a.as_primitive::<UInt32Type>().value(r).into()),
            DataType::UInt64 => {
                let v = a.as_primitive::<UInt64Type>().value(r);
                match i64::try_from(v) {
                    Ok(i) => s.serialize_i64(i),
                    Err(_) => float(v as f64, s),
                }
            }
            DataType::Float32 => float(a.as_primitive::<Float32Type>().value(r).into(), s),
            DataType::Float64 => float(a.as_primitive::<Float64Type>().value(r), s),
            DataType::Utf8 => s.serialize_str(a.as_string::<i32>().value(r)),
            DataType::LargeUtf8 => s.serialize_str(a.as_string::<i64>().value(r)),
            DataType::Utf8View => s.serialize_str(a.as_string_view().value(r)),
            _ => value(self.array, r).serialize(s),
        }
    }
}

/// A float as JSON: a number, or the string `"NaN"`, `"inf"` or `"-inf"`.
fn float<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        s.serialize_f64(f)
    } else {
        s.serialize_str(non_finite(f))
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "inf"
    } else {
        "-inf"
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
            None => Json::String(non_finite(*f).into()),
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

    fn result(columns: Vec<(&str, ArrayRef)>) -> QueryRows {
        use std::sync::Arc;
        use strata_sql::arrow::datatypes::{Field, Schema};
        use strata_sql::arrow::record_batch::RecordBatch;
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        QueryRows {
            schema,
            batches: vec![batch],
        }
    }

    #[test]
    fn rows_are_written_as_each_value_reads_alone() {
        use std::sync::Arc;
        use strata_sql::arrow::array::*;
        let rows = result(vec![
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(42), None, Some(i64::MIN)])),
            ),
            (
                "s",
                Arc::new(Int32Array::from(vec![Some(-7), Some(0), None])),
            ),
            (
                "u",
                Arc::new(UInt64Array::from(vec![Some(1), Some(u64::MAX), None])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![
                    Some(1.5),
                    Some(f64::NAN),
                    Some(f64::NEG_INFINITY),
                ])),
            ),
            (
                "g",
                Arc::new(Float32Array::from(vec![
                    Some(0.1),
                    Some(f32::INFINITY),
                    Some(1e20),
                ])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![
                    Some("ann \"q\" \\ \n é 😀"),
                    None,
                    Some(""),
                ])),
            ),
            (
                "v",
                Arc::new(StringViewArray::from(vec![
                    Some("a view longer than twelve bytes"),
                    Some("x"),
                    None,
                ])),
            ),
            (
                "l",
                Arc::new(LargeStringArray::from(vec![
                    Some("large"),
                    None,
                    Some("\u{1}"),
                ])),
            ),
            (
                "y",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x01\x02\x03"[..]),
                    None,
                    Some(&b""[..]),
                ])),
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![Some(0), Some(19_000), None])),
            ),
        ]);
        let text = serde_json::to_string(&JsonRows(&rows)).unwrap();
        // The same result built value by value, the way every other type is written.
        let batch = &rows.batches[0];
        let expected = serde_json::json!({
            "columns": rows.schema.fields().iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect::<Vec<_>>(),
            "rows": (0..batch.num_rows())
                .map(|r| batch.columns().iter().map(|c| value(c, r)).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        });
        // Byte for byte (a float read back from text may not round-trip exactly).
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
        let written: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(written["rows"][0][0], serde_json::json!(42));
        assert_eq!(written["rows"][1][2], serde_json::json!(u64::MAX as f64));
        assert_eq!(written["rows"][1][3], serde_json::json!("NaN"));
        assert_eq!(
            written["rows"][0][6],
            serde_json::json!("ann \"q\" \\ \n é 😀")
        );
        assert_eq!(written["rows"][0][9], serde_json::json!("AQID"));
        assert_eq!(written["rows"][0][10], serde_json::json!("123.45"));
        assert_eq!(written["columns"][7]["type"], serde_json::json!("Utf8View"));
    }

    #[test]
    fn a_result_without_rows_has_no_columns() {
        use std::sync::Arc;
        use strata_sql::arrow::array::Int64Array;
        let rows = result(vec![("i", Arc::new(Int64Array::from(Vec::<i64>::new())))]);
        assert_eq!(
            serde_json::to_string(&JsonRows(&rows)).unwrap(),
            r#"{"columns":[],"rows":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&ResultSet::default()).unwrap(),
            r#"{"columns":[],"rows":[]}"#
        );
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
