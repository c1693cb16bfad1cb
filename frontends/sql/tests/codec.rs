//! The order-preserving key codec (values sort by their encodings, and decode back), and
//! the conversion of values to column types.

use strata_sql::codec::{
    decode, decode_row, decode_row_into, decode_some_into, encode, encode_row, read_checked_into,
    row_key_pk, Key,
};
use strata_sql::{Datum, DatumRef, SqlError, SqlType};

fn sorted_by_bytes(values: &[Datum]) -> bool {
    values
        .windows(2)
        .all(|w| encode(std::slice::from_ref(&w[0])) < encode(std::slice::from_ref(&w[1])))
}

#[test]
fn integers_sort_by_value_negatives_included() {
    let v: Vec<Datum> = [i64::MIN, -1_000_000, -2, -1, 0, 1, 2, 255, 256, i64::MAX]
        .into_iter()
        .map(Datum::Int)
        .collect();
    assert!(sorted_by_bytes(&v));
}

#[test]
fn floats_sort_by_value_with_zeros_infinities_and_nan() {
    let v: Vec<Datum> = [
        f64::NEG_INFINITY,
        -1e300,
        -1.5,
        -f64::MIN_POSITIVE,
        0.0,
        f64::MIN_POSITIVE,
        1.5,
        1e300,
        f64::INFINITY,
        f64::NAN,
    ]
    .into_iter()
    .map(Datum::Float)
    .collect();
    assert!(sorted_by_bytes(&v));
    assert_eq!(encode(&[Datum::Float(-0.0)]), encode(&[Datum::Float(0.0)]));
    assert_eq!(
        encode(&[Datum::Float(f64::NAN)]),
        encode(&[Datum::Float(-f64::NAN)])
    );
    for d in &v {
        let back = decode(&encode(std::slice::from_ref(d))).unwrap();
        match (d, &back[0]) {
            (Datum::Float(a), Datum::Float(b)) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(&back[0], d),
        }
    }
}

#[test]
fn text_and_bytes_sort_bytewise_with_embedded_zeros() {
    let v: Vec<Datum> = ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "b", "é"]
        .into_iter()
        .map(|s| Datum::Text(s.into()))
        .collect();
    assert!(sorted_by_bytes(&v));
    for d in &v {
        assert_eq!(&decode(&encode(std::slice::from_ref(d))).unwrap()[0], d);
    }
}

#[test]
fn null_sorts_before_every_value_and_tuples_sort_element_by_element() {
    let v = vec![
        Datum::Null,
        Datum::Bool(false),
        Datum::Int(i64::MIN),
        Datum::Text(String::new()),
    ];
    assert!(sorted_by_bytes(&v));
    let a = encode(&[Datum::Text("a".into()), Datum::Int(9)]);
    let b = encode(&[Datum::Text("a\0".into()), Datum::Int(1)]);
    let c = encode(&[Datum::Text("ab".into()), Datum::Int(0)]);
    assert!(a < b && b < c);
}

#[test]
fn decimals_dates_and_timestamps_sort_and_round_trip() {
    let v = vec![
        Datum::Decimal(-100_000, 2),
        Datum::Decimal(-1, 2),
        Datum::Decimal(0, 2),
        Datum::Decimal(12345, 2),
    ];
    assert!(sorted_by_bytes(&v));
    let d = vec![Datum::Date(-5), Datum::Date(0), Datum::Date(20_000)];
    assert!(sorted_by_bytes(&d));
    let t = vec![
        Datum::Timestamp(-1),
        Datum::Timestamp(0),
        Datum::Timestamp(1),
    ];
    assert!(sorted_by_bytes(&t));
    let all: Vec<Datum> = v.into_iter().chain(d).chain(t).collect();
    assert_eq!(decode(&encode(&all)).unwrap(), all);
}

#[test]
fn rows_keep_column_ids_and_nulls() {
    let a = Datum::Int(7);
    let b = Datum::Null;
    let c = Datum::Text("x".into());
    let row = encode_row(&[(1, &a), (2, &b), (5, &c)]);
    assert_eq!(decode_row(&row).unwrap(), vec![(1, a), (2, b), (5, c)]);
}

#[test]
fn corrupt_bytes_are_errors_not_panics() {
    for bad in [&[0x10u8, 1, 2][..], &[0x20, b'a'], &[0x99], &[0x12; 5]] {
        assert!(decode(bad).is_err());
    }
}

#[test]
fn keys_of_one_table_share_its_prefix_and_sort_by_primary_key() {
    let rows = Key::Rows(3).encode();
    let k1 = Key::Row(3, &[Datum::Int(-5)]).encode();
    let k2 = Key::Row(3, &[Datum::Int(10)]).encode();
    assert!(k1.starts_with(&rows) && k2.starts_with(&rows) && k1 < k2);
    assert_eq!(row_key_pk(&k2, 3).unwrap(), vec![Datum::Int(10)]);
    assert!(!Key::Row(4, &[]).encode().starts_with(&rows));
}

#[test]
fn dates_and_timestamps_round_trip_through_text() {
    for s in [
        "1970-01-01",
        "2000-02-29",
        "1969-12-31",
        "2026-11-23",
        "0001-01-01",
    ] {
        let d = SqlType::Date.coerce(Datum::Text(s.into()), "c").unwrap();
        assert!(matches!(d, Datum::Date(_)));
        assert_eq!(d.to_string(), s);
    }
    assert!(SqlType::Date
        .coerce(Datum::Text("2023-02-29".into()), "c")
        .is_err());
    let t = SqlType::Timestamp
        .coerce(Datum::Text("2026-11-23 05:54:27.25".into()), "c")
        .unwrap();
    assert_eq!(t.to_string(), "2026-11-23 05:54:27.250000");
}

#[test]
fn coercion_checks_declared_ranges_and_lengths() {
    assert!(SqlType::SmallInt.coerce(Datum::Int(40_000), "c").is_err());
    assert_eq!(
        SqlType::Integer.coerce(Datum::Float(2.5), "c").unwrap(),
        Datum::Int(3)
    );
    assert!(matches!(
        SqlType::Varchar(3).coerce(Datum::Text("abcd".into()), "c"),
        Err(SqlError::ValueTooLong { .. })
    ));
    let dec = SqlType::Decimal {
        precision: 5,
        scale: 2,
    };
    assert_eq!(
        dec.coerce(Datum::Text("-12.345".into()), "c").unwrap(),
        Datum::Decimal(-1235, 2)
    );
    assert_eq!(Datum::Decimal(-1235, 2).to_string(), "-12.35");
    assert!(dec.coerce(Datum::Int(1000), "c").is_err());
    assert!(dec.coerce(Datum::Text("lots".into()), "c").is_err());
    assert_eq!(
        SqlType::Boolean
            .coerce(Datum::Text(" Yes ".into()), "c")
            .unwrap(),
        Datum::Bool(true)
    );
    assert!(SqlType::Boolean
        .coerce(Datum::Text("maybe".into()), "c")
        .is_err());
}

/// Decoding only some columns of a row steps over the others, whatever their type, and
/// reads exactly the values a full decode reads; a truncated row is an error.
#[test]
fn rows_decode_any_subset_of_their_columns() {
    let values = [
        Datum::Text("a\0b\0".into()),
        Datum::Null,
        Datum::Bytes(vec![0, 0xFF, 0, 1]),
        Datum::Decimal(-12_345, 2),
        Datum::Bool(true),
        Datum::Date(-3),
        Datum::Float(-0.5),
        Datum::Timestamp(1_700_000_000_000_000),
        Datum::Int(-7),
        Datum::Text(String::new()),
    ];
    let pairs: Vec<(u32, &Datum)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32 * 3 + 1, v))
        .collect();
    let bytes = encode_row(&pairs);
    let full: Vec<Datum> = decode_row(&bytes)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(full, values);
    for mask in 0u32..(1 << values.len()) {
        let wanted = |i: usize| mask & (1 << i) != 0;
        let mut row = vec![Datum::Null; values.len()];
        decode_row_into(
            &bytes,
            |id| {
                let i = (id as usize - 1) / 3;
                wanted(i).then_some(i)
            },
            &mut row,
        )
        .unwrap();
        for (i, v) in row.iter().enumerate() {
            let expected = if wanted(i) { &values[i] } else { &Datum::Null };
            assert_eq!(v, expected, "column {i} with mask {mask:#b}");
        }
    }
    for cut in 1..bytes.len() {
        let mut row = vec![Datum::Null; values.len()];
        let r = decode_row_into(&bytes[..cut], |_| None, &mut row);
        let all = decode_row(&bytes[..cut]);
        assert_eq!(r.is_err(), all.is_err(), "cut at {cut}");
    }
}

/// Rows written before the row format (tuples of column ids and values) still decode, to
/// the same values as the row format; the row format is the smaller.
#[test]
fn rows_in_the_tuple_format_still_decode() {
    let values = [
        Datum::Int(-7),
        Datum::Text("é\0x".into()),
        Datum::Null,
        Datum::Float(2.5),
        Datum::Date(9_000),
    ];
    let pairs: Vec<(u32, &Datum)> = values
        .iter()
        .zip([1u32, 2, 3, 200, 70_000])
        .map(|(v, id)| (id, v))
        .collect();
    let mut tuple = Vec::new();
    for (id, v) in &pairs {
        tuple.push(Datum::Int(i64::from(*id)));
        tuple.push((*v).clone());
    }
    let old = encode(&tuple);
    let new = encode_row(&pairs);
    assert!(
        new.len() < old.len(),
        "{} bytes against {}",
        new.len(),
        old.len()
    );
    let expected: Vec<(u32, Datum)> = pairs.iter().map(|(id, v)| (*id, (*v).clone())).collect();
    assert_eq!(decode_row(&old).unwrap(), expected);
    assert_eq!(decode_row(&new).unwrap(), expected);
    for bytes in [&old, &new] {
        let mut row = vec![Datum::Null; 2];
        decode_row_into(
            bytes,
            |id| match id {
                2 => Some(0),
                70_000 => Some(1),
                _ => None,
            },
            &mut row,
        )
        .unwrap();
        assert_eq!(row, vec![values[1].clone(), values[4].clone()]);
    }
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    for bad in [
        &[0x01u8, 0x05][..],
        &[0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        &[0x01, 0x01, 0x20, 10, b'a'],
        &[0x01, 0x01, 0x10, 1, 2],
        &[0x01, 0x01, 0x99],
        &[0x01, 0x01, 0x20, 1, 0xFF],
    ] {
        assert!(decode_row(bad).is_err(), "{bad:?}");
        let mut row = vec![Datum::Null; 2];
        assert!(
            decode_row_into(bad, |_| Some(0), &mut row).is_err(),
            "{bad:?}"
        );
    }
}

/// A reader that wants some columns stops once it has them all: what follows is not read
/// (a damaged tail goes unnoticed there, and is an error for a reader that needs it).
#[test]
fn readers_stop_once_they_have_their_columns() {
    let (a, b) = (Datum::Int(1), Datum::Text("tail".into()));
    let mut bytes = encode_row(&[(1, &a), (2, &b)]);
    bytes.truncate(bytes.len() - 2);
    let mut row = vec![Datum::Null];
    decode_some_into(&bytes, |id| (id == 1).then_some(0), 1, &mut row).unwrap();
    assert_eq!(row, vec![a]);
    assert!(decode_row_into(&bytes, |id| (id == 1).then_some(0), &mut row).is_err());
}

/// A checked read shows each value it reads to the check, in column order, and stops at the
/// first one refused: the rest of the row is not read (a damaged tail goes unnoticed), and
/// the answer says the row was refused. A row read through says so; a row in the tuple
/// format is left to the older reader.
#[test]
fn a_checked_read_stops_at_the_first_refused_value() {
    let (a, b, c) = (
        Datum::Int(5),
        Datum::Float(0.25),
        Datum::Text("tail".into()),
    );
    let bytes = encode_row(&[(1, &a), (2, &b), (3, &c)]);
    let place = |id: u32| Some(id as usize - 1);
    let mut row = vec![DatumRef::Null; 3];
    let mut shown = Vec::new();
    let read = read_checked_into(&bytes, place, 3, &mut row, |i, v| {
        shown.push(i);
        v != DatumRef::Float(0.25)
    });
    assert_eq!(read.unwrap(), Some(false));
    assert_eq!(shown, vec![0, 1], "nothing after the refused value is read");

    let cut = &bytes[..bytes.len() - 2];
    let mut row = vec![DatumRef::Null; 3];
    let refused = read_checked_into(cut, place, 3, &mut row, |i, _| i != 1);
    assert_eq!(
        refused.unwrap(),
        Some(false),
        "the damaged tail is never reached"
    );
    let mut row = vec![DatumRef::Null; 3];
    assert!(read_checked_into(cut, place, 3, &mut row, |_, _| true).is_err());

    let mut row = vec![DatumRef::Null; 3];
    let read = read_checked_into(&bytes, place, 3, &mut row, |_, _| true).unwrap();
    assert_eq!(read, Some(true));
    assert_eq!(
        row,
        vec![
            DatumRef::Int(5),
            DatumRef::Float(0.25),
            DatumRef::Text("tail")
        ]
    );

    let tuple = encode(&[Datum::Int(1), a.clone()]);
    let mut row = vec![DatumRef::Null; 3];
    assert_eq!(
        read_checked_into(&tuple, place, 3, &mut row, |_, _| true).unwrap(),
        None
    );
    assert_eq!(row, vec![DatumRef::Null; 3], "untouched");
}
