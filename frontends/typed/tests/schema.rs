//! Records read and written without their types: the schema a record type stores, archives
//! shown as JSON through it (the same JSON serde gives the typed value), JSON written back
//! byte for byte as rkyv writes the value, and edits through `inspect::edit`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use strata_typed::json::{encode, View};
use strata_typed::schema::{Def, Shape};
use strata_typed::{inspect, record, Error, Record, Schema, Tree, Wait};

mod common;
use common::database;

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
struct Line {
    part: String,
    qty: u16,
    note: Option<String>,
}

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Draft,
    Approved { by: String, at: u64 },
    Rejected(String),
    Moved(u32, i8),
}

#[strata_typed::field_type]
#[derive(Debug, Clone, Copy, PartialEq)]
enum Level {
    Low = 3,
    High = 10,
    Top,
}

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
struct Meters(f64);

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
struct Marker;

#[strata_typed::field_type]
#[derive(Debug, Clone, PartialEq)]
struct Bin(u8, String);

#[record(tree = "orders", version = 1)]
#[derive(Debug, Clone, PartialEq)]
struct Order {
    code: String,
    lines: Vec<Line>,
    status: Status,
    level: Level,
    flags: [bool; 3],
    pair: (i32, f64),
    big: u128,
    small: i128,
    initial: char,
    boxed: Box<Line>,
    nothing: (),
    count: usize,
    bytes: Option<Vec<u8>>,
    nested: Vec<Vec<String>>,
    ratio: f32,
    length: Meters,
    marker: Marker,
    bin: Bin,
    tiny: i8,
    wide: i64,
}

fn line(part: &str, qty: u16, note: Option<&str>) -> Line {
    Line {
        part: part.into(),
        qty,
        note: note.map(Into::into),
    }
}

fn orders() -> Vec<Order> {
    let base = Order {
        code: "A-1".into(),
        lines: vec![],
        status: Status::Draft,
        level: Level::Low,
        flags: [true, false, true],
        pair: (-7, 2.5),
        big: 0,
        small: -1,
        initial: 'é',
        boxed: Box::new(line("x", 0, None)),
        nothing: (),
        count: 3,
        bytes: None,
        nested: vec![],
        ratio: 0.25,
        length: Meters(1.5),
        marker: Marker,
        bin: Bin(9, "shelf".into()),
        tiny: -128,
        wide: i64::MIN,
    };
    vec![
        base.clone(),
        Order {
            code: "a code longer than the inline eight bytes".into(),
            lines: vec![
                line("bolt", 12, Some("zinc-plated, from the second supplier")),
                line("nut", 65535, None),
                line("", 1, Some("")),
            ],
            status: Status::Approved {
                by: "ann".into(),
                at: u64::MAX,
            },
            level: Level::Top,
            big: u128::from(u64::MAX),
            small: i128::from(i64::MIN),
            initial: '🦀',
            boxed: Box::new(line("washer with a long name", 4, Some("n"))),
            bytes: Some(vec![0, 1, 255]),
            nested: vec![vec![], vec!["a".into(), "bcdefghijk".into()]],
            ratio: -1e30,
            length: Meters(-0.0),
            ..base.clone()
        },
        Order {
            status: Status::Rejected("too late in the month".into()),
            level: Level::High,
            ..base.clone()
        },
        Order {
            status: Status::Moved(40_000, -3),
            bytes: Some(vec![]),
            ..base
        },
    ]
}

fn archive(o: &Order) -> Vec<u8> {
    o.to_archive().unwrap().to_vec()
}

#[test]
fn a_record_type_is_described_field_by_field() {
    let schema = Schema::of::<Order>();
    let opaque: Vec<&str> = schema
        .types
        .iter()
        .filter(|d| matches!(d, Def::Opaque { .. }))
        .map(Def::name)
        .collect();
    assert!(opaque.is_empty(), "undescribed types: {opaque:?}");
    let Shape::Def { index } = schema.root else {
        panic!("the root is a struct: {:?}", schema.root);
    };
    let Def::Struct { fields, .. } = &schema.types[index] else {
        panic!("a struct");
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names[..4], ["code", "lines", "status", "level"]);
    assert_eq!(names.len(), 20);
    // The stored form reads back as the same schema.
    assert_eq!(Schema::from_json(&schema.to_json()).unwrap(), schema);
}

#[test]
fn archives_read_as_the_json_serde_gives_the_value() {
    let schema = Schema::of::<Order>();
    for o in orders() {
        let shown = View::new(&schema, &archive(&o)).to_value().unwrap();
        assert_eq!(shown, serde_json::to_value(&o).unwrap(), "{o:?}");
    }
}

#[test]
fn json_is_written_byte_for_byte_as_rkyv_writes_the_value() {
    let schema = Schema::of::<Order>();
    for o in orders() {
        let value = serde_json::to_value(&o).unwrap();
        assert_eq!(encode(&schema, &value).unwrap(), archive(&o), "{o:?}");
    }
}

#[test]
fn wide_integers_and_floats_without_a_json_number_round_trip_as_strings() {
    let schema = Schema::of::<Order>();
    let o = Order {
        big: u128::MAX,
        small: i128::MIN,
        pair: (0, f64::NAN),
        ratio: f32::NEG_INFINITY,
        length: Meters(f64::INFINITY),
        ..orders().remove(0)
    };
    let shown = View::new(&schema, &archive(&o)).to_value().unwrap();
    assert_eq!(shown["big"], json!(u128::MAX.to_string()));
    assert_eq!(shown["small"], json!(i128::MIN.to_string()));
    assert_eq!(shown["pair"][1], json!("NaN"));
    assert_eq!(shown["ratio"], json!("-inf"));
    assert_eq!(shown["length"], json!("inf"));
    assert_eq!(encode(&schema, &shown).unwrap(), archive(&o));
}

#[test]
fn json_that_does_not_fit_is_refused_naming_the_place() {
    let schema = Schema::of::<Order>();
    let good = serde_json::to_value(&orders()[1]).unwrap();
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change, &str, &str)> = vec![
        (
            "a missing field",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("code");
            }),
            ".",
            "field \"code\" of Order is missing",
        ),
        (
            "an unknown field",
            Box::new(|v| v["colour"] = json!("red")),
            ".",
            "Order has no field \"colour\"",
        ),
        (
            "a number out of range",
            Box::new(|v| v["lines"][1]["qty"] = json!(65536)),
            ".lines[1].qty",
            "expected an integer from 0 to 65535",
        ),
        (
            "a negative unsigned",
            Box::new(|v| v["count"] = json!(-1)),
            ".count",
            "expected an integer from 0",
        ),
        (
            "a string for a number",
            Box::new(|v| v["tiny"] = json!("1")),
            ".tiny",
            "expected an integer from -128 to 127",
        ),
        (
            "an unknown variant",
            Box::new(|v| v["status"] = json!("Lost")),
            ".status",
            "Status has no variant \"Lost\"",
        ),
        (
            "a variant without its fields",
            Box::new(|v| v["status"] = json!("Approved")),
            ".status",
            "variant Approved has fields",
        ),
        (
            "a struct variant's field of the wrong type",
            Box::new(|v| v["status"] = json!({"Approved": {"by": 1, "at": 2}})),
            ".status.Approved.by",
            "expected a string, found a number",
        ),
        (
            "an array of the wrong length",
            Box::new(|v| v["flags"] = json!([true])),
            ".flags",
            "expected 3 items, found 1",
        ),
        (
            "two characters for a char",
            Box::new(|v| v["initial"] = json!("ab")),
            ".initial",
            "expected one character",
        ),
        (
            "null for a required string",
            Box::new(|v| v["boxed"]["part"] = json!(null)),
            ".boxed.part",
            "expected a string, found null",
        ),
    ];
    for (what, change, at, problem) in cases {
        let mut v = good.clone();
        change(&mut v);
        let err = encode(&schema, &v).expect_err(what);
        assert_eq!(
            err.at.as_str(),
            if at == "." { "" } else { at },
            "{what}: {err}"
        );
        assert!(err.problem.contains(problem), "{what}: {err}");
    }
}

#[record(tree = "tagged", version = 1)]
#[derive(Debug, Clone, PartialEq)]
struct Tagged {
    name: String,
    tags: HashMap<String, String>,
}

#[test]
fn a_field_without_a_description_is_shown_as_bytes_and_cannot_be_written() {
    let schema = Schema::of::<Tagged>();
    let t = Tagged {
        name: "n".into(),
        tags: HashMap::from([("k".to_string(), "v".to_string())]),
    };
    let shown = View::new(&schema, &t.to_archive().unwrap())
        .to_value()
        .unwrap();
    assert_eq!(shown["name"], json!("n"));
    assert!(shown["tags"]["opaque"].is_string(), "{shown}");
    let err = encode(&schema, &shown).unwrap_err();
    assert_eq!(err.at, ".tags");
    assert!(err.problem.contains("cannot be written"), "{err}");
}

#[test]
fn corrupt_archives_are_errors_never_panics() {
    let schema = Schema::of::<Order>();
    let good = archive(&orders()[1]);
    let mut errors = 0;
    for at in 0..good.len() {
        for flip in [0xff, 0x80, 0x01] {
            let mut bad = good.clone();
            bad[at] ^= flip;
            errors += usize::from(View::new(&schema, &bad).to_value().is_err());
        }
    }
    for len in 0..good.len() {
        errors += usize::from(View::new(&schema, &good[..len]).to_value().is_err());
    }
    // Every truncation shorter than the root is an error at least, and many flips are.
    assert!(errors > good.len(), "{errors} errors");
}

mod changed {
    /// Tree "orders" at version 1 again, with another type.
    #[strata_typed::record(tree = "orders", version = 1)]
    pub struct Order {
        pub code: u32,
    }
}

#[tokio::test]
async fn a_tree_stores_its_schema_and_refuses_a_changed_type_at_the_same_version() {
    let db = database().await;
    let tree = Tree::<Order>::open(db.clone());
    tree.insert(&orders()[0]).await.unwrap();
    let stored = inspect::schema(&db, "orders", 1).await.unwrap().unwrap();
    assert_eq!(stored, Schema::of::<Order>());
    let err = Tree::<changed::Order>::open(db.clone())
        .insert(&changed::Order { code: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaConflict { tree, version: 1 } if tree == "orders"),
        "{err}"
    );
    assert_eq!(
        tree.keys().await.unwrap().len(),
        1,
        "nothing more was written"
    );
}

#[record(tree = "drafts", version = 1, versioned)]
#[derive(Debug, Clone, PartialEq)]
struct Drawing {
    title: String,
    sheets: u8,
}

#[tokio::test]
async fn a_record_is_shown_and_edited_without_its_type() {
    let db = database().await;
    let tree = Tree::<Drawing>::open(db.clone()).as_user("ann");
    let key = tree
        .insert(&Drawing {
            title: "frame".into(),
            sheets: 2,
        })
        .await
        .unwrap();
    let shown = inspect::records(&db, "drafts", Some(key.id()), 10)
        .await
        .unwrap();
    let value: serde_json::Value =
        serde_json::from_str(shown[0].value.as_ref().unwrap().get()).unwrap();
    assert_eq!(value, json!({"title": "frame", "sheets": 2}));
    // Field order is the type's.
    assert_eq!(
        shown[0].value.as_ref().unwrap().get(),
        r#"{"title":"frame","sheets":2}"#
    );

    let welded = json!({"title": "frame, welded", "sheets": 3});
    let edited = inspect::edit(&db, &change(key.id(), "bob", &welded))
        .await
        .unwrap();
    assert!(edited.changed);
    assert_eq!(
        tree.get(key).await.unwrap().unwrap(),
        Drawing {
            title: "frame, welded".into(),
            sheets: 3,
        }
    );

    // A value that does not fit: nothing written.
    let bad = json!({"title": "x", "sheets": 300});
    let err = inspect::edit(
        &db,
        &inspect::Edit {
            revision: Some(key.revision()),
            ..change(key.id(), "bob", &bad)
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("at .sheets: expected an integer from 0 to 255"),
        "{err}"
    );
    assert_eq!(tree.get(key).await.unwrap().unwrap().sheets, 3);

    // Checked out by ann: bob may not edit it, ann may.
    tree.check_out(key.id(), Duration::from_secs(3600), Wait::No)
        .await
        .unwrap();
    let ok = json!({"title": "frame", "sheets": 4});
    let err = inspect::edit(&db, &change(key.id(), "bob", &ok))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CheckedOut { ref holder, .. } if holder == "ann"),
        "{err}"
    );
    // Made from a value the record no longer holds: refused.
    let err = inspect::edit(
        &db,
        &inspect::Edit {
            expected: Some(&json!({"title": "frame", "sheets": 2})),
            ..change(key.id(), "ann", &ok)
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("changed while it was being edited"),
        "{err}"
    );
    inspect::edit(
        &db,
        &inspect::Edit {
            expected: Some(&welded),
            ..change(key.id(), "ann", &ok)
        },
    )
    .await
    .unwrap();
    assert_eq!(tree.get(key).await.unwrap().unwrap().sheets, 4);

    // Released: never changes.
    tree.release(key).await.unwrap();
    let err = inspect::edit(&db, &change(key.id(), "ann", &ok))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Released(_)), "{err}");
}

fn change<'a>(id: u64, user: &'a str, value: &'a serde_json::Value) -> inspect::Edit<'a> {
    inspect::Edit {
        tree: "drafts",
        id,
        revision: None,
        user,
        value,
        stale_indexes: false,
        expected: None,
    }
}

#[record(tree = "maybes", version = 1)]
#[derive(Debug)]
struct Maybe {
    maybe: Option<Option<u8>>,
}

#[test]
fn recursive_types_end_and_values_json_cannot_carry_are_named() {
    // `struct L(Option<Box<L>>)`: a type holding itself through a pointer, as stored.
    let format = serde_json::to_value(Schema::of::<Order>().format).unwrap();
    let chain = json!({
        "format": format,
        "root": {"type": "def", "index": 0},
        "types": [{"kind": "struct", "name": "L", "style": "tuple", "size": 8, "align": 4,
                   "fields": [{"name": "0", "shape": {"type": "option", "of":
                       {"type": "box", "of": {"type": "def", "index": 0}}}}]}]
    });
    let schema = Schema::from_json(chain.to_string().as_bytes()).unwrap();
    // `5` fits nothing, one level down each time: it ends, with an error.
    let err = encode(&schema, &json!(5)).unwrap_err();
    assert!(err.problem.contains("nested too deeply"), "{err}");
    // L(None) and L(Some(L(None))) both show as null: edits and migrations refuse it.
    assert!(schema.lossy().is_some());
    // Some(None) and None too.
    assert!(Schema::of::<Maybe>().lossy().is_some());
    assert!(Schema::of::<Order>().lossy().is_none());
}

#[test]
fn stored_schemas_that_cannot_be_right_are_refused() {
    let good = serde_json::to_value(Schema::of::<Order>()).unwrap();
    assert!(Schema::from_json(good.to_string().as_bytes()).is_ok());
    let mut cases = Vec::new();
    let mut v = good.clone();
    v["format"]["pointer_width"] = json!(3);
    cases.push(("pointer width", v));
    let mut v = good.clone();
    v["types"][0]["size"] = json!(1);
    cases.push(("a size its fields do not make", v));
    let mut v = good.clone();
    v["types"][0]["align"] = json!(3);
    cases.push(("an alignment", v));
    let mut v = good.clone();
    v["root"] = json!({"type": "array", "of": {"type": "u64"}, "len": 1u64 << 40});
    cases.push(("a huge array", v));
    let mut v = good.clone();
    v["root"] = json!({"type": "def", "index": 99});
    cases.push(("a missing type", v));
    // A struct holding itself in place.
    let selfish = json!({
        "format": good["format"],
        "root": {"type": "def", "index": 0},
        "types": [{"kind": "struct", "name": "S", "style": "tuple", "size": 0, "align": 1,
                   "fields": [{"name": "0", "shape": {"type": "def", "index": 0}}]}]
    });
    cases.push(("a type holding itself", selfish));
    for (what, v) in cases {
        assert!(
            Schema::from_json(v.to_string().as_bytes()).is_err(),
            "{what} was accepted"
        );
    }
}

#[test]
fn an_archive_that_points_at_itself_or_claims_endless_values_is_an_error() {
    let format = serde_json::to_value(Schema::of::<Order>().format).unwrap();
    let pw = Schema::of::<Order>().format.pointer_width as usize;
    // `struct L(Box<L>)` whose box points at itself: read until the depth bound.
    let cyclic = json!({
        "format": format,
        "root": {"type": "def", "index": 0},
        "types": [{"kind": "struct", "name": "L", "style": "tuple", "size": pw, "align": pw,
                   "fields": [{"name": "0", "shape": {"type": "box", "of": {"type": "def", "index": 0}}}]}]
    });
    let schema = Schema::from_json(cyclic.to_string().as_bytes()).unwrap();
    let err = View::new(&schema, &vec![0u8; pw]).to_value().unwrap_err();
    assert!(err.contains("nested too deeply"), "{err}");
    // A `Vec<()>` of 2^20 items in 2 × pointer-width bytes.
    let units = json!({
        "format": format,
        "root": {"type": "vec", "of": {"type": "unit"}},
        "types": []
    });
    let schema = Schema::from_json(units.to_string().as_bytes()).unwrap();
    let mut bytes = vec![0u8; 2 * pw];
    let len = (1u64 << 20).to_le_bytes();
    bytes[pw..2 * pw].copy_from_slice(&len[..pw]);
    if Schema::of::<Order>().format.big_endian {
        bytes[pw..2 * pw].reverse();
    }
    let err = View::new(&schema, &bytes).to_value().unwrap_err();
    assert!(err.contains("values of no size"), "{err}");
}
