//! Access paths: which key ranges a scan reads, from the predicates DataFusion pushes down.
//!
//! A predicate is *simple* when it compares one column with a literal of the column's own
//! type: `=`, `<`, `<=`, `>`, `>=`, `IN (…)`, `BETWEEN`, `IS NULL`. Simple predicates are
//! pushed down as `Exact`: the scan evaluates every one of them itself, so DataFusion does
//! not filter again, and a LIMIT can stop the scan early. Of the simple predicates, those on
//! a prefix of the primary key or of an index become key ranges; the path with the longest
//! usable prefix wins (primary key first on ties, since an index read also fetches rows).

use std::cmp::Ordering;

use datafusion::logical_expr::{Expr, Operator};

use crate::catalog::{IndexDef, TableDef};
use crate::codec::{self, Key};
use crate::types::{Datum, DatumRef, SqlType};

/// One simple predicate on the column at `column` (a position in the table's columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    pub column: usize,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Eq(Datum),
    In(Vec<Datum>),
    Lower(Datum, bool),
    Upper(Datum, bool),
    Between(Datum, Datum),
    IsNull,
    IsNotNull,
}

/// Most key ranges one IN-list expansion may produce.
const MAX_RANGES: usize = 4096;

/// The simple predicate `e` states, if it is one. A placeholder `$n` stands for
/// `params[n - 1]` (a cached plan binds other values: see [`crate::table::ScanExec`]).
pub fn simple(def: &TableDef, e: &Expr, params: &[Datum]) -> Option<Vec<Pred>> {
    let col = |e: &Expr| -> Option<usize> {
        match e {
            Expr::Column(c) => def.column_index(&c.name),
            _ => None,
        }
    };
    let lit = |e: &Expr, column: usize| -> Option<Datum> {
        match e {
            Expr::Literal(v, _) => exact_literal(&def.columns[column].ty, v),
            Expr::Placeholder(p) => {
                let n: usize = p.id.strip_prefix('$')?.parse().ok()?;
                let v = params.get(n.checked_sub(1)?)?.to_scalar();
                exact_literal(&def.columns[column].ty, &v)
            }
            _ => None,
        }
    };
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            let mut l = simple(def, &b.left, params)?;
            l.extend(simple(def, &b.right, params)?);
            Some(l)
        }
        Expr::BinaryExpr(b) => {
            let (c, v, op) = match (col(&b.left), col(&b.right)) {
                (Some(c), None) => (c, lit(&b.right, c)?, b.op),
                (None, Some(c)) => (c, lit(&b.left, c)?, b.op.swap()?),
                _ => return None,
            };
            let test = match op {
                Operator::Eq => Test::Eq(v),
                Operator::Lt => Test::Upper(v, false),
                Operator::LtEq => Test::Upper(v, true),
                Operator::Gt => Test::Lower(v, false),
                Operator::GtEq => Test::Lower(v, true),
                _ => return None,
            };
            Some(vec![Pred { column: c, test }])
        }
        Expr::InList(l) if !l.negated => {
            let c = col(&l.expr)?;
            let mut values = Vec::with_capacity(l.list.len());
            for item in &l.list {
                match item {
                    Expr::Literal(v, _) if v.is_null() => {}
                    other => values.push(lit(other, c)?),
                }
            }
            Some(vec![Pred {
                column: c,
                test: Test::In(values),
            }])
        }
        Expr::Between(b) if !b.negated => {
            let c = col(&b.expr)?;
            Some(vec![Pred {
                column: c,
                test: Test::Between(lit(&b.low, c)?, lit(&b.high, c)?),
            }])
        }
        Expr::IsNull(inner) => Some(vec![Pred {
            column: col(inner)?,
            test: Test::IsNull,
        }]),
        Expr::IsNotNull(inner) => Some(vec![Pred {
            column: col(inner)?,
            test: Test::IsNotNull,
        }]),
        _ => None,
    }
}

/// A literal converted to the column's type without changing its value, or `None`.
fn exact_literal(ty: &SqlType, v: &datafusion::common::ScalarValue) -> Option<Datum> {
    let d = Datum::from_scalar(v).ok()?;
    match (ty, d) {
        (_, Datum::Null) => Some(Datum::Null),
        (t, Datum::Int(i)) if t.is_integer() => Some(Datum::Int(i)),
        (SqlType::Real | SqlType::Double, Datum::Float(f)) if !f.is_nan() => Some(Datum::Float(f)),
        (SqlType::Real | SqlType::Double, Datum::Int(i)) if i.unsigned_abs() < 1 << 53 => {
            Some(Datum::Float(i as f64))
        }
        (SqlType::Boolean, Datum::Bool(b)) => Some(Datum::Bool(b)),
        (SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_), Datum::Text(s)) => {
            Some(Datum::Text(s))
        }
        (SqlType::Blob, Datum::Bytes(b)) => Some(Datum::Bytes(b)),
        (SqlType::Date, Datum::Date(d)) => Some(Datum::Date(d)),
        (SqlType::Timestamp, Datum::Timestamp(t)) => Some(Datum::Timestamp(t)),
        (SqlType::Decimal { scale, .. }, Datum::Decimal(v, s)) if s == *scale => {
            Some(Datum::Decimal(v, s))
        }
        _ => None,
    }
}

/// Compare two values of one column's type (NULLs excluded by the caller). Doubles compare
/// numerically with -0 = 0 and NaN above everything, as the key codec orders them.
pub fn compare(a: &Datum, b: &Datum) -> Ordering {
    compare_refs(a.as_ref(), b.as_ref())
}

/// [`compare`] of borrowed values.
pub fn compare_refs(a: DatumRef<'_>, b: DatumRef<'_>) -> Ordering {
    match (a, b) {
        (DatumRef::Int(x), DatumRef::Int(y)) => x.cmp(&y),
        (DatumRef::Float(x), DatumRef::Float(y)) => {
            let norm = |f: f64| if f == 0.0 { 0.0 } else { f };
            norm(x).total_cmp(&norm(y))
        }
        (DatumRef::Int(x), DatumRef::Float(y)) => (x as f64).total_cmp(&y),
        (DatumRef::Float(x), DatumRef::Int(y)) => x.total_cmp(&(y as f64)),
        (DatumRef::Decimal(x, _), DatumRef::Decimal(y, _)) => x.cmp(&y),
        (DatumRef::Text(x), DatumRef::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (DatumRef::Bytes(x), DatumRef::Bytes(y)) => x.cmp(y),
        (DatumRef::Bool(x), DatumRef::Bool(y)) => x.cmp(&y),
        (DatumRef::Date(x), DatumRef::Date(y)) => x.cmp(&y),
        (DatumRef::Timestamp(x), DatumRef::Timestamp(y)) => x.cmp(&y),
        _ => codec::encode(&[a.to_datum()]).cmp(&codec::encode(&[b.to_datum()])),
    }
}

impl Pred {
    /// Whether a row passes (SQL semantics: a comparison with NULL is not true).
    pub fn holds(&self, row: &[Datum]) -> bool {
        self.holds_for(row[self.column].as_ref())
    }

    /// Whether a row whose value in this predicate's column is `v` passes.
    pub fn holds_for(&self, v: DatumRef<'_>) -> bool {
        let cmp = |x: &Datum| compare_refs(v, x.as_ref());
        match &self.test {
            Test::IsNull => v.is_null(),
            Test::IsNotNull => !v.is_null(),
            _ if v.is_null() => false,
            Test::Eq(x) => !x.is_null() && cmp(x) == Ordering::Equal,
            Test::In(xs) => xs.iter().any(|x| !x.is_null() && cmp(x) == Ordering::Equal),
            Test::Lower(x, incl) => {
                !x.is_null() && {
                    let o = cmp(x);
                    o == Ordering::Greater || (*incl && o == Ordering::Equal)
                }
            }
            Test::Upper(x, incl) => {
                !x.is_null() && {
                    let o = cmp(x);
                    o == Ordering::Less || (*incl && o == Ordering::Equal)
                }
            }
            Test::Between(lo, hi) => {
                !lo.is_null()
                    && !hi.is_null()
                    && cmp(lo) != Ordering::Less
                    && cmp(hi) != Ordering::Greater
            }
        }
    }
}

/// A range of keys: `[start, end)`.
pub type KeyRange = (Vec<u8>, Vec<u8>);

/// Which records a scan reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Path {
    /// Row key ranges (a full scan is the one range of the whole table).
    Rows {
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        full: bool,
    },
    /// Index entry ranges, then the rows they point at (or not, if the index covers).
    Index {
        index: IndexDef,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        covering: bool,
    },
    /// Nothing can match (e.g. `x IN ()` or `x = NULL`).
    Empty,
}

impl Path {
    pub fn describe(&self, def: &TableDef) -> String {
        match self {
            Path::Rows { full: true, .. } => "full scan".to_string(),
            Path::Rows { ranges, .. } => {
                let names: Vec<&str> = def
                    .pk_positions()
                    .iter()
                    .map(|&i| def.columns[i].name.as_str())
                    .collect();
                format!(
                    "primary key ({}) {} range{}",
                    names.join(", "),
                    ranges.len(),
                    if ranges.len() == 1 { "" } else { "s" }
                )
            }
            Path::Index {
                index,
                ranges,
                covering,
            } => format!(
                "{}index {} {} range{}",
                if *covering { "covering " } else { "" },
                index.name,
                ranges.len(),
                if ranges.len() == 1 { "" } else { "s" }
            ),
            Path::Empty => "no rows can match".to_string(),
        }
    }
}

/// Build key ranges for the key columns `key` (positions) under `prefix`.
/// Returns `(ranges, score)`; score counts constrained columns (a range column counts ½).
fn key_ranges(prefix: Vec<u8>, key: &[usize], preds: &[Pred]) -> (Vec<KeyRange>, u32) {
    let mut prefixes: Vec<Vec<u8>> = vec![prefix];
    let mut score = 0u32;
    for &col in key {
        let on_col: Vec<&Pred> = preds.iter().filter(|p| p.column == col).collect();
        // Equality first: it keeps the key prefix going.
        let eq = on_col.iter().find_map(|p| match &p.test {
            Test::Eq(v) => Some(vec![v.clone()]),
            Test::In(vs) => {
                // One range per distinct value, in key order: `IN (1, 1)` reads 1 once.
                let mut encoded: Vec<(Vec<u8>, Datum)> = vs
                    .iter()
                    .map(|v| (codec::encode(std::slice::from_ref(v)), v.clone()))
                    .collect();
                encoded.sort_by(|a, b| a.0.cmp(&b.0));
                encoded.dedup_by(|a, b| a.0 == b.0);
                Some(encoded.into_iter().map(|(_, v)| v).collect())
            }
            Test::IsNull => Some(vec![Datum::Null]),
            _ => None,
        });
        if let Some(values) = eq {
            if values.iter().any(|v| v.is_null())
                && on_col.iter().any(|p| !matches!(p.test, Test::IsNull))
            {
                return (Vec::new(), u32::MAX);
            }
            if prefixes.len() * values.len().max(1) > MAX_RANGES {
                break;
            }
            let mut next = Vec::with_capacity(prefixes.len() * values.len());
            for p in &prefixes {
                for v in &values {
                    let mut k = p.clone();
                    codec::encode_into(&mut k, std::slice::from_ref(v));
                    next.push(k);
                }
            }
            prefixes = next;
            score += 2;
            if prefixes.is_empty() {
                return (Vec::new(), u32::MAX);
            }
            continue;
        }
        // A range on this column ends the prefix.
        let mut lo: Option<(Datum, bool)> = None;
        let mut hi: Option<(Datum, bool)> = None;
        for p in &on_col {
            match &p.test {
                Test::Lower(v, i) => tighten(&mut lo, v, *i, Ordering::Greater),
                Test::Upper(v, i) => tighten(&mut hi, v, *i, Ordering::Less),
                Test::Between(a, b) => {
                    tighten(&mut lo, a, true, Ordering::Greater);
                    tighten(&mut hi, b, true, Ordering::Less);
                }
                _ => {}
            }
        }
        if lo.is_none() && hi.is_none() {
            break;
        }
        if lo.as_ref().is_some_and(|(v, _)| v.is_null())
            || hi.as_ref().is_some_and(|(v, _)| v.is_null())
        {
            return (Vec::new(), u32::MAX);
        }
        score += 1;
        let ranges = prefixes
            .iter()
            .map(|p| {
                let start = match &lo {
                    Some((v, incl)) => {
                        let mut k = p.clone();
                        codec::encode_into(&mut k, std::slice::from_ref(v));
                        if *incl {
                            k
                        } else {
                            strata_engine::prefix_end(&k)
                        }
                    }
                    // Skip NULLs, which sort first and never pass a comparison.
                    None => {
                        let mut k = p.clone();
                        codec::encode_into(&mut k, &[Datum::Null]);
                        strata_engine::prefix_end(&k)
                    }
                };
                let end = match &hi {
                    Some((v, incl)) => {
                        let mut k = p.clone();
                        codec::encode_into(&mut k, std::slice::from_ref(v));
                        if *incl {
                            strata_engine::prefix_end(&k)
                        } else {
                            k
                        }
                    }
                    None => strata_engine::prefix_end(p),
                };
                (start, end)
            })
            .filter(|(s, e)| s < e)
            .collect();
        return (ranges, score);
    }
    let ranges = prefixes
        .into_iter()
        .map(|p| {
            let end = strata_engine::prefix_end(&p);
            (p, end)
        })
        .collect();
    (ranges, score)
}

fn tighten(bound: &mut Option<(Datum, bool)>, v: &Datum, incl: bool, keep: Ordering) {
    match bound {
        Some((cur, cur_incl)) => {
            let o = compare(v, cur);
            if o == keep || (o == Ordering::Equal && !incl && *cur_incl) {
                *bound = Some((v.clone(), incl));
            }
        }
        None => *bound = Some((v.clone(), incl)),
    }
}

/// Choose the access path for `preds` over `def`; `needed` are the column positions the
/// scan must produce (projection plus filter columns).
pub fn choose(def: &TableDef, preds: &[Pred], needed: &[usize]) -> Path {
    let rows_prefix = Key::Rows(def.id).encode();
    let mut best = Path::Rows {
        ranges: vec![(rows_prefix.clone(), strata_engine::prefix_end(&rows_prefix))],
        full: true,
    };
    let mut best_score = 0u32;
    if !def.has_rowid() {
        let (ranges, score) = key_ranges(rows_prefix, &def.pk_positions(), preds);
        if score == u32::MAX || (score > 0 && ranges.is_empty()) {
            return Path::Empty;
        }
        if score > 0 {
            best = Path::Rows {
                ranges,
                full: false,
            };
            best_score = score;
        }
    }
    for index in def.indexes.iter().filter(|i| i.ready) {
        let positions = def.index_positions(index);
        let (ranges, score) = key_ranges(
            Key::IndexEntries(def.id, index.id).encode(),
            &positions,
            preds,
        );
        if score == u32::MAX {
            return Path::Empty;
        }
        if score > best_score {
            let pk = def.pk_positions();
            let covering = needed
                .iter()
                .all(|c| positions.contains(c) || pk.contains(c));
            best_score = score;
            best = if ranges.is_empty() {
                Path::Empty
            } else {
                Path::Index {
                    index: index.clone(),
                    ranges,
                    covering,
                }
            };
        }
    }
    best
}
