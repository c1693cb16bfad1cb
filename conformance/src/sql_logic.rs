//! # SQL logic tests
//!
//! Runs sqllogictest scripts — SQLite's corpus (`shared/conformance/sqllogictest/`, the
//! `.test` files) and our own scenarios (`conformance/slt/`, the `.slt` files) — through the
//! SQL layer ([`strata_sql::Session`]) on every backend. Each file runs on a fresh store of
//! its backend, so files are independent; records of a file run in order on one session.
//!
//! ## Which records run
//!
//! Our engine label is **`strata`**: `onlyif strata` records run, `skipif strata` records
//! are skipped, and so are `onlyif sqlite|mysql|mssql|postgresql|oracle` records, while
//! `skipif <any other engine>` records run. Nothing else is skipped: a record skipped here
//! was skipped by the file's own conditions. A `halt` record stops the file (unless its
//! conditions skip it, as in `onlyif mssql` / `halt`); a failing record does not.
//!
//! ## How values are printed
//!
//! As SQLite's C harness prints them, driven by the query's *declared* column types
//! (`query ITR`), not by the types of the result:
//!
//! * `NULL` is `NULL`, whatever the column type.
//! * `I`: integers as they are; floats and decimals truncated toward zero (saturating at the
//!   `i64` range); booleans `1`/`0`; text (and anything else) through its leading integer, as
//!   `sqlite3_column_int64` reads text: leading spaces, a sign and digits, so `12abc` is 12
//!   and `abc` is 0.
//! * `R`: any number as `format!("{:.3}", x)` (C's `%.3f`); text through its leading real
//!   number (`1.5e1xyz` is 15.000, `abc` is 0.000).
//! * `T` (and any other type letter, and result columns beyond the declared ones): text as it
//!   is, an empty string as `(empty)`, integers in decimal, floats as SQLite renders a REAL
//!   (`%!.15g`: 15 significant digits, at least one digit after the point, so `5.0`, `0.1`,
//!   `1.0e+20`), blobs as their bytes. Types SQLite does not have print as the SQL layer
//!   prints them: booleans `true`/`false`, decimals exactly (`123.45`), dates `2024-01-31`,
//!   timestamps `2024-01-31 12:00:00`.
//! * Every byte outside `0x20..=0x7e` becomes `@` (a two-byte UTF-8 character is `@@`).
//!
//! (The C harness refuses a query whose column count differs from its type string; here the
//! extra or missing values make the comparison fail instead.)
//!
//! Two dialects, by extension ([`Dialect`]):
//!
//! * `.test` (SQLite's corpus): expected values one per line; the hash threshold starts at 8,
//!   so a result of more values is compared as `N values hashing to <md5>` — the MD5 of every
//!   value followed by a newline, after sorting (`rowsort`, `valuesort`) — as the C harness
//!   does.
//! * `.slt` (ours, the `sqllogictest` crate's convention): one row per line, values separated
//!   by single spaces; the hash threshold starts at 0 (never hash), so results stay readable.
//!
//! A file's own `hash-threshold` or `control resultmode valuewise|rowwise` record overrides
//! either default. Comparison is the crate's default: values with runs of whitespace
//! collapsed.
//!
//! Two deviations from the crate's own file reader: a comment after the label of a
//! `skipif`/`onlyif` line (`onlyif mysql # DIV for integer division`) is ignored, as the C
//! harness ignores it, and the conditions before a `halt` apply to that `halt` (the crate
//! would carry them over to the next statement). `include` records are not supported.
//!
//! ## Counting
//!
//! Per file: statement and query records (and `system`/`let` records, should a file have any)
//! passed, failed, or skipped by their conditions; control, `hash-threshold` and `halt`
//! records are not counted. A file that cannot be read or parsed, or whose store cannot be
//! set up, counts as one failed record; so does a record that panics or runs longer than
//! [`RECORD_TIMEOUT`], and the file goes on. The first [`KEPT_FAILURES`] failures of a file
//! are kept with their location, SQL and difference.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqllogictest::{
    AsyncDB, Condition, Control, DBOutput, DefaultColumnType, MakeConnection, Record, ResultMode,
    Runner,
};
use strata_sql::{Datum, Output, Session};

use crate::{BackendKind, Harness};

/// The engine name that `skipif` and `onlyif` conditions are matched against.
pub const ENGINE_LABEL: &str = "strata";

/// How a file writes its expected values, decided by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite's `.test` files: one value per line, results of more than 8 values hashed.
    Sqlite,
    /// Our `.slt` files (the `sqllogictest` crate's convention): one row per line, values
    /// separated by spaces, never hashed.
    Rows,
}

impl Dialect {
    pub fn of(path: &Path) -> Dialect {
        if path.extension().is_some_and(|e| e == "test") {
            Dialect::Sqlite
        } else {
            Dialect::Rows
        }
    }

    /// The hash threshold a file starts with (its own `hash-threshold` record changes it).
    pub fn hash_threshold(self) -> usize {
        match self {
            Dialect::Sqlite => 8,
            Dialect::Rows => 0,
        }
    }
}

/// How many failures of one file are kept for printing.
pub const KEPT_FAILURES: usize = 5;

/// The longest one record may run.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(120);

/// How many files run at once.
pub const PARALLEL_FILES: usize = 2;

/// The files (or directories, ending in `/`) of the corpus, relative to its directory, that
/// the persistent embedded backends (`redb`, `sqlite`) run in the suite; `memory` runs the
/// whole corpus. The SQL layer above the engine is the same on every backend, and a full
/// corpus run per backend costs more CI time than it buys today, so the others run one of
/// each kind of script: the hand-written basics (`select1`), SQLite's documented-behaviour
/// `evidence` scripts, a generated file over indexed tables (BETWEEN over 1 row per value)
/// and a generated aggregates file. `--slt PATH` runs any file on any backend. Our own
/// `.slt` files run in full everywhere.
pub const EMBEDDED_SUBSET: &[&str] = &[
    "sqlite/select1.test",
    "sqlite/evidence/",
    "sqlite/index/between/1/slt_good_0.test",
    "sqlite/random/aggregates/slt_good_0.test",
];

/// What the `dynamodb` backend runs: the DynamoDB here is an emulator answering one request
/// at a time (select1's correlated subqueries take over 25 minutes on it), so it runs the
/// evidence scripts.
pub const DYNAMODB_SUBSET: &[&str] = &["sqlite/evidence/"];

/// Where the corpus is: `STRATA_SLT_DIR`, or `shared/conformance/sqllogictest` beside the
/// workspace.
pub fn corpus_dir() -> PathBuf {
    match std::env::var_os("STRATA_SLT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .join("shared")
            .join("conformance")
            .join("sqllogictest"),
    }
}

/// Our own scripts: `conformance/slt/`.
pub fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("slt")
}

/// One script to run, and the name it is reported by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SltFile {
    pub path: PathBuf,
    pub name: String,
}

/// Every `.test` and `.slt` file under `dir` (recursively), sorted, named relative to `dir`
/// with `prefix` before the name.
pub fn files_under(dir: &Path, prefix: &str) -> Result<Vec<SltFile>, String> {
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let name = format!("{prefix}{}", rel.display());
            SltFile { path, name }
        })
        .collect())
}

/// The files the `sqllogictest` suite runs on `kind`: the `.test` files under `corpus` (all
/// on `memory`, [`EMBEDDED_SUBSET`] or [`DYNAMODB_SUBSET`] elsewhere), then our own `.slt` files under `own`; either
/// directory may be missing.
pub fn suite_files(kind: BackendKind, corpus: &Path, own: &Path) -> Result<Vec<SltFile>, String> {
    let mut files = Vec::new();
    if corpus.is_dir() {
        files.extend(
            files_under(corpus, "")?
                .into_iter()
                .filter(|f| f.path.extension().is_some_and(|e| e == "test"))
                .filter(|f| match kind {
                    BackendKind::Memory => true,
                    BackendKind::Dynamodb => in_subset(DYNAMODB_SUBSET, &f.name),
                    _ => in_subset(EMBEDDED_SUBSET, &f.name),
                }),
        );
    }
    if own.is_dir() {
        files.extend(
            files_under(own, "conformance/slt/")?
                .into_iter()
                .filter(|f| f.path.extension().is_some_and(|e| e == "slt")),
        );
    }
    Ok(files)
}

fn in_subset(subset: &[&str], name: &str) -> bool {
    subset.iter().any(|entry| match entry.strip_suffix('/') {
        Some(dir) => name.starts_with(dir) && name[dir.len()..].starts_with('/'),
        None => name == *entry,
    })
}

/// The files named on the command line: files as they are, directories searched recursively
/// for `.test` and `.slt` files; all of them sorted, each once.
pub fn named_files(paths: &[PathBuf]) -> Result<Vec<SltFile>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    files.sort();
    files.dedup();
    Ok(files
        .into_iter()
        .map(|path| SltFile {
            name: path.display().to_string(),
            path,
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "test" || e == "slt") {
            out.push(path);
        }
    }
    Ok(())
}

/// Records passed, failed and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Records whose result differs on purpose ([`KNOWN_DIFFERENCES`], listed in docs/sql.md).
    pub differ: u64,
}

/// Records of the corpus whose result differs on purpose or for a documented, unsupported
/// feature: (file name suffix, record lines, reason). Each is listed in docs/sql.md.
pub const KNOWN_DIFFERENCES: &[(&str, &[u32], &str)] = &[
    (
        "evidence/slt_lang_replace.test",
        &[38, 42, 58, 62],
        "VARCHAR(n) lengths are enforced",
    ),
    (
        "evidence/slt_lang_createtrigger.test",
        &[
            15, 24, 28, 39, 42, 45, 80, 83, 86, 89, 92, 95, 191, 194, 197, 200, 203, 206, 209, 212,
            215, 218,
        ],
        "triggers are not supported",
    ),
    (
        "evidence/slt_lang_droptrigger.test",
        &[15, 24, 27, 31, 35, 44, 51],
        "triggers are not supported",
    ),
    (
        "random/expr/slt_good_0.test",
        &[46601],
        "NULLIF returns the common type of its arguments",
    ),
];

/// Failures that differ on purpose wherever they occur, recognised by the error: the
/// GROUP BY rule is the SQL standard's (every selected column grouped or aggregated), which
/// SQLite relaxes; the corpus marks such records `skipif postgresql` where it noticed.
pub const KNOWN_DIFFERENT_ERRORS: &[(&str, &str)] = &[(
    "must be in GROUP BY or an aggregate function",
    "strict GROUP BY",
)];

fn known_difference(file: &str, line: u32, message: &str) -> bool {
    KNOWN_DIFFERENCES
        .iter()
        .any(|(suffix, lines, _)| file.ends_with(suffix) && lines.contains(&line))
        || KNOWN_DIFFERENT_ERRORS
            .iter()
            .any(|(text, _)| message.contains(text))
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.differ += other.differ;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )?;
        if self.differ > 0 {
            write!(f, ", {} differ on purpose", self.differ)?;
        }
        Ok(())
    }
}

/// One failed record: where, and what the runner said (the SQL and the difference).
#[derive(Debug, Clone)]
pub struct Failure {
    pub line: u32,
    pub message: String,
}

/// What running one file on one backend gave.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub backend: BackendKind,
    pub name: String,
    pub tally: Tally,
    /// The first [`KEPT_FAILURES`] failures.
    pub failures: Vec<Failure>,
    /// The line of the `halt` record that stopped the file.
    pub halted_at: Option<u32>,
    pub elapsed: Duration,
}

impl FileReport {
    fn new(backend: BackendKind, name: &str) -> Self {
        FileReport {
            backend,
            name: name.to_string(),
            tally: Tally::default(),
            failures: Vec::new(),
            halted_at: None,
            elapsed: Duration::ZERO,
        }
    }

    fn fail(&mut self, line: u32, message: String) {
        if known_difference(&self.name, line, &message) {
            self.tally.differ += 1;
            return;
        }
        self.tally.failed += 1;
        if self.failures.len() < KEPT_FAILURES {
            self.failures.push(Failure { line, message });
        }
    }

    /// One line: backend, file, counts, wall time.
    pub fn summary(&self) -> String {
        let halted = match self.halted_at {
            Some(line) => format!(", halted at line {line}"),
            None => String::new(),
        };
        format!(
            "{:<8}  {}  {}{halted}  ({:.1?})",
            self.backend.name(),
            self.name,
            self.tally,
            self.elapsed
        )
    }
}

/// The declared column types of the query about to run, shared between the loop that reads
/// the records and the database that formats the values.
type DeclaredTypes = Arc<Mutex<Vec<DefaultColumnType>>>;

/// An error from the SQL layer, as the runner sees it.
#[derive(Debug)]
pub struct SltError {
    message: String,
    sqlstate: Option<&'static str>,
}

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SltError {}

impl From<strata_sql::SqlError> for SltError {
    fn from(e: strata_sql::SqlError) -> Self {
        SltError {
            message: e.to_string(),
            sqlstate: Some(e.sqlstate()),
        }
    }
}

/// A [`Session`] as the sqllogictest runner drives it.
pub struct StrataDb {
    session: Session,
    declared: DeclaredTypes,
}

#[async_trait]
impl AsyncDB for StrataDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        match self.session.execute(sql).await? {
            Output::Rows(rows) => {
                let columns = rows.schema.fields().len();
                let values = rows.rows()?;
                let declared = self
                    .declared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Ok(format_rows(&declared, columns, &values))
            }
            Output::Affected { rows } => Ok(DBOutput::StatementComplete(rows)),
            Output::Done => Ok(DBOutput::StatementComplete(0)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        ENGINE_LABEL
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    async fn run_command(command: std::process::Command) -> std::io::Result<std::process::Output> {
        tokio::process::Command::from(command).output().await
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.sqlstate.map(str::to_string)
    }
}

/// Rows of `columns` columns, printed by the declared types (text past the declared ones).
fn format_rows(
    declared: &[DefaultColumnType],
    columns: usize,
    values: &[Vec<Datum>],
) -> DBOutput<DefaultColumnType> {
    let ty = |i: usize| declared.get(i).unwrap_or(&DefaultColumnType::Text);
    let types = (0..columns).map(|i| ty(i).clone()).collect();
    let rows = values
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, v)| format_value(v, ty(i)))
                .collect()
        })
        .collect();
    DBOutput::Rows { types, rows }
}

/// One value as the C harness prints it for a column declared `ty` (see the module doc).
pub fn format_value(value: &Datum, ty: &DefaultColumnType) -> String {
    match (value, ty) {
        (Datum::Null, _) => "NULL".to_string(),
        (_, DefaultColumnType::Integer) => as_integer(value).to_string(),
        (_, DefaultColumnType::FloatingPoint) => format!("{:.3}", as_real(value)),
        (_, DefaultColumnType::Text | DefaultColumnType::Any) => {
            let text = as_text(value);
            if text.is_empty() {
                "(empty)".to_string()
            } else {
                printable(&text)
            }
        }
    }
}

/// The bytes SQLite's `sqlite3_column_text` would give (for types SQLite lacks: ours).
fn as_text(value: &Datum) -> Vec<u8> {
    match value {
        Datum::Text(s) => s.as_bytes().to_vec(),
        Datum::Bytes(b) => b.clone(),
        Datum::Int(i) => i.to_string().into_bytes(),
        Datum::Float(f) => real_text(*f).into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// `sqlite3_column_int64`: numbers truncated toward zero, text through its leading integer.
fn as_integer(value: &Datum) -> i64 {
    match value {
        Datum::Null => 0,
        Datum::Bool(b) => i64::from(*b),
        Datum::Int(i) => *i,
        // `as` truncates toward zero and saturates (NaN is 0), as SQLite's conversion does.
        Datum::Float(f) => *f as i64,
        Datum::Decimal(unscaled, scale) => decimal_to_integer(*unscaled, *scale),
        other => leading_integer(&as_text(other)),
    }
}

fn decimal_to_integer(unscaled: i128, scale: i8) -> i64 {
    let factor = 10i128.checked_pow(u32::from(scale.unsigned_abs()));
    let whole = match (scale >= 0, factor) {
        (true, Some(f)) => unscaled / f,
        (true, None) => 0,
        (false, Some(f)) => unscaled.saturating_mul(f),
        (false, None) if unscaled == 0 => 0,
        (false, None) => {
            if unscaled > 0 {
                i128::MAX
            } else {
                i128::MIN
            }
        }
    };
    whole.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// `sqlite3_column_double`: numbers as they are, text through its leading real number.
fn as_real(value: &Datum) -> f64 {
    match value {
        Datum::Null => 0.0,
        Datum::Bool(b) => f64::from(u8::from(*b)),
        Datum::Int(i) => *i as f64,
        Datum::Float(f) => *f,
        Datum::Decimal(unscaled, scale) => format!("{unscaled}e{}", -i32::from(*scale))
            .parse()
            .unwrap_or(0.0),
        other => leading_real(&as_text(other)),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The integer at the start of `text` (after spaces), saturating; 0 if there is none.
fn leading_integer(text: &[u8]) -> i64 {
    let mut rest = text;
    while let [b, tail @ ..] = rest {
        if !is_space(*b) {
            break;
        }
        rest = tail;
    }
    let negative = rest.first() == Some(&b'-');
    if matches!(rest.first(), Some(b'-' | b'+')) {
        rest = &rest[1..];
    }
    let mut value: i64 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        let digit = i64::from(b - b'0');
        value = match value.checked_mul(10).and_then(|v| {
            if negative {
                v.checked_sub(digit)
            } else {
                v.checked_add(digit)
            }
        }) {
            Some(v) => v,
            None if negative => return i64::MIN,
            None => return i64::MAX,
        };
    }
    value
}

/// The real number at the start of `text` (after spaces); 0.0 if there is none.
fn leading_real(text: &[u8]) -> f64 {
    let start = text.iter().take_while(|b| is_space(**b)).count();
    let s = &text[start..];
    let mut end = 0;
    if matches!(s.first(), Some(b'-' | b'+')) {
        end = 1;
    }
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let int_digits = digits(end);
    end += int_digits;
    let mut frac_digits = 0;
    if s.get(end) == Some(&b'.') {
        frac_digits = digits(end + 1);
        end += 1 + frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return 0.0;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(s.get(exp), Some(b'-' | b'+')) {
            exp += 1;
        }
        let exp_digits = digits(exp);
        if exp_digits > 0 {
            end = exp + exp_digits;
        }
    }
    std::str::from_utf8(&s[..end])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// A REAL as SQLite renders it as text: `%!.15g` (15 significant digits, trailing zeros
/// dropped but one digit kept after the point, a two-digit exponent at least).
pub fn real_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Inf" } else { "-Inf" }.to_string();
    }
    // The exponent after rounding to 15 significant digits decides the style, as in C.
    let scientific = format!("{f:.14e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..15).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim_fraction(mantissa),
            exponent.unsigned_abs()
        )
    } else {
        let decimals = usize::try_from(14 - exponent).unwrap_or(0);
        trim_fraction(&format!("{f:.decimals$}"))
    }
}

/// Drop trailing zeros after the point, keeping at least one digit there.
fn trim_fraction(number: &str) -> String {
    if !number.contains('.') {
        return format!("{number}.0");
    }
    let trimmed = number.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_string()
    }
}

/// Every byte outside `0x20..=0x7e` as `@`.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..=0x7e).contains(&b) {
                b as char
            } else {
                '@'
            }
        })
        .collect()
}

/// Read and parse a script. A comment after the label of a `skipif`/`onlyif` line is
/// dropped first: the corpus writes them and the C harness ignores them.
pub fn parse_script(path: &Path) -> Result<Vec<Record<DefaultColumnType>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let script = strip_condition_comments(&text);
    sqllogictest::parse_with_name(&script, path.display().to_string()).map_err(|e| e.to_string())
}

fn strip_condition_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let is_condition = matches!(line.split_whitespace().next(), Some("skipif" | "onlyif"));
        match line.find('#') {
            Some(at) if is_condition => out.push_str(line[..at].trim_end()),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether `condition` skips a record on our engine.
fn skips(condition: &Condition) -> bool {
    match condition {
        Condition::OnlyIf { label } => label != ENGINE_LABEL,
        Condition::SkipIf { label } => label == ENGINE_LABEL,
    }
}

/// Run one file on a fresh store of `kind`.
pub async fn run_file(kind: BackendKind, file: &SltFile) -> FileReport {
    let start = Instant::now();
    let mut report = FileReport::new(kind, &file.name);
    match parse_script(&file.path) {
        Err(e) => report.fail(0, format!("{}: {e}", file.name)),
        Ok(records) => match Harness::new(kind, None).await {
            Err(e) => report.fail(0, format!("cannot set up the {} store: {e}", kind.name())),
            Ok(harness) => {
                let declared = DeclaredTypes::default();
                let mut engine = Some(harness.engine());
                let shared = declared.clone();
                let mut runner = Runner::new(move || {
                    let made = engine.take().map(|engine| StrataDb {
                        session: Session::new(engine),
                        declared: shared.clone(),
                    });
                    async move {
                        made.ok_or_else(|| SltError {
                            message:
                                "one connection per file: `connection` records are not supported"
                                    .to_string(),
                            sqlstate: None,
                        })
                    }
                });
                let dialect = Dialect::of(&file.path);
                run_records(&mut runner, records, &declared, dialect, &mut report).await;
                runner.shutdown_async().await;
            }
        },
    }
    report.elapsed = start.elapsed();
    report
}

/// Run `records` in order on `runner`, counting into `report`.
async fn run_records<D, M>(
    runner: &mut Runner<D, M>,
    records: Vec<Record<DefaultColumnType>>,
    declared: &DeclaredTypes,
    dialect: Dialect,
    report: &mut FileReport,
) where
    D: AsyncDB<ColumnType = DefaultColumnType>,
    M: MakeConnection<Conn = D>,
{
    runner.with_hash_threshold(dialect.hash_threshold());
    if dialect == Dialect::Sqlite {
        let mode = Record::Control(Control::ResultMode(ResultMode::ValueWise));
        if let Err(e) = runner.run_async(mode).await {
            report.fail(0, e.display(false).to_string());
        }
    }
    // The conditions since the last record that takes them: the parser gives them to the
    // next statement or query, but those before a `halt` belong to the halt.
    let mut pending: Vec<Condition> = Vec::new();
    for mut record in records {
        let (line, sql) = match &mut record {
            Record::Condition(c) => {
                pending.push(c.clone());
                continue;
            }
            Record::Halt { loc } => {
                let skipped = pending.iter().any(skips);
                pending.clear();
                if skipped {
                    continue;
                }
                report.halted_at = Some(loc.line());
                break;
            }
            Record::Include { loc, filename } => {
                report.fail(
                    loc.line(),
                    format!(
                        "include {filename}: not supported, put the records in the file\nat {loc}"
                    ),
                );
                continue;
            }
            Record::Statement {
                loc,
                conditions,
                sql,
                ..
            }
            | Record::Query {
                loc,
                conditions,
                sql,
                ..
            }
            | Record::Let {
                loc,
                conditions,
                sql,
                ..
            }
            | Record::System {
                loc,
                conditions,
                command: sql,
                ..
            } => {
                *conditions = std::mem::take(&mut pending);
                (Some(loc.clone()), sql.clone())
            }
            _ => (None, String::new()),
        };
        let types = match &record {
            Record::Query {
                expected: sqllogictest::QueryExpect::Results { types, .. },
                ..
            } => types.clone(),
            _ => Vec::new(),
        };
        *declared.lock().unwrap_or_else(|e| e.into_inner()) = types;
        let Some(loc) = line else {
            // Control, hash-threshold, comments: run (for their effect), not counted.
            if let Err(e) = runner.run_async(record).await {
                report.fail(0, e.display(false).to_string());
            }
            continue;
        };
        let run = CatchUnwind(Box::pin(runner.run_async(record)));
        match tokio::time::timeout(RECORD_TIMEOUT, run).await {
            Ok(Ok(Ok(sqllogictest::RecordOutput::Nothing))) => report.tally.skipped += 1,
            Ok(Ok(Ok(_))) => report.tally.passed += 1,
            Ok(Ok(Err(e))) => report.fail(loc.line(), e.display(false).to_string()),
            Ok(Err(panic)) => report.fail(
                loc.line(),
                format!("panicked: {panic}\n[SQL] {sql}\nat {loc}"),
            ),
            Err(_) => report.fail(
                loc.line(),
                format!("timed out after {RECORD_TIMEOUT:?}\n[SQL] {sql}\nat {loc}"),
            ),
        }
    }
}

/// A future whose panic becomes an error, so that one record's panic fails that record only.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string()))),
        }
    }
}

/// Run `files` on `kind`, [`PARALLEL_FILES`] at a time and started in order, calling `done`
/// for each report in file order (so output does not depend on which file finishes first).
pub async fn run_files(
    kind: BackendKind,
    files: &[SltFile],
    mut done: impl FnMut(&FileReport),
) -> Vec<FileReport> {
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FILES));
    let mut running = std::collections::VecDeque::new();
    let mut reports = Vec::with_capacity(files.len());
    for file in files {
        // A permit is free once a running file finishes; the semaphore is never closed.
        let permit = permits.clone().acquire_owned().await.ok();
        let task_file = file.clone();
        let task = tokio::spawn(async move {
            let report = run_file(kind, &task_file).await;
            drop(permit);
            report
        });
        running.push_back((file, task));
        while running.front().is_some_and(|(_, task)| task.is_finished()) {
            if let Some((file, task)) = running.pop_front() {
                let report = finish(kind, file, task).await;
                done(&report);
                reports.push(report);
            }
        }
    }
    while let Some((file, task)) = running.pop_front() {
        let report = finish(kind, file, task).await;
        done(&report);
        reports.push(report);
    }
    reports
}

async fn finish(
    kind: BackendKind,
    file: &SltFile,
    task: tokio::task::JoinHandle<FileReport>,
) -> FileReport {
    match task.await {
        Ok(report) => report,
        Err(e) => {
            let mut report = FileReport::new(kind, &file.name);
            report.fail(0, format!("the file's task failed: {e}"));
            report
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DefaultColumnType::{Any, FloatingPoint as R, Integer as I, Text as T};

    fn f(v: Datum, ty: DefaultColumnType) -> String {
        format_value(&v, &ty)
    }

    #[test]
    fn null_is_null_in_every_column_type() {
        for ty in [I, R, T, Any] {
            assert_eq!(f(Datum::Null, ty), "NULL");
        }
    }

    #[test]
    fn integer_columns_truncate_and_read_leading_integers() {
        assert_eq!(f(Datum::Int(-42), I), "-42");
        assert_eq!(f(Datum::Float(-2.7), I), "-2");
        assert_eq!(f(Datum::Float(2.7), I), "2");
        assert_eq!(f(Datum::Float(1e300), I), i64::MAX.to_string());
        assert_eq!(f(Datum::Decimal(12345, 2), I), "123");
        assert_eq!(f(Datum::Decimal(-12345, 2), I), "-123");
        assert_eq!(f(Datum::Decimal(7, -2), I), "700");
        assert_eq!(f(Datum::Bool(true), I), "1");
        assert_eq!(f(Datum::Bool(false), I), "0");
        assert_eq!(f(Datum::Text("12abc".into()), I), "12");
        assert_eq!(f(Datum::Text("  -7.9".into()), I), "-7");
        assert_eq!(f(Datum::Text("abc".into()), I), "0");
        assert_eq!(f(Datum::Text("".into()), I), "0");
        assert_eq!(
            f(Datum::Text("99999999999999999999".into()), I),
            i64::MAX.to_string()
        );
        assert_eq!(
            f(Datum::Text("-99999999999999999999".into()), I),
            i64::MIN.to_string()
        );
    }

    #[test]
    fn real_columns_print_three_decimals() {
        assert_eq!(f(Datum::Int(3), R), "3.000");
        assert_eq!(f(Datum::Float(-2.5), R), "-2.500");
        assert_eq!(f(Datum::Float(1.0 / 3.0), R), "0.333");
        assert_eq!(f(Datum::Decimal(12345, 2), R), "123.450");
        assert_eq!(f(Datum::Bool(true), R), "1.000");
        assert_eq!(f(Datum::Text("1.5e1xyz".into()), R), "15.000");
        assert_eq!(f(Datum::Text(" -.5".into()), R), "-0.500");
        assert_eq!(f(Datum::Text("1e".into()), R), "1.000");
        assert_eq!(f(Datum::Text("abc".into()), R), "0.000");
        assert_eq!(f(Datum::Text(".".into()), R), "0.000");
    }

    #[test]
    fn text_columns_print_as_sqlite_does() {
        assert_eq!(f(Datum::Text("hello world".into()), T), "hello world");
        assert_eq!(f(Datum::Text("".into()), T), "(empty)");
        assert_eq!(f(Datum::Text("a\tb\u{e9}".into()), T), "a@b@@");
        assert_eq!(f(Datum::Bytes(b"ab\0".to_vec()), T), "ab@");
        assert_eq!(f(Datum::Int(-5), T), "-5");
        assert_eq!(f(Datum::Float(5.0), T), "5.0");
        assert_eq!(f(Datum::Bool(true), T), "true");
        assert_eq!(f(Datum::Text("x".into()), Any), "x");
    }

    #[test]
    fn reals_render_like_sqlite_percent_bang_15g() {
        for (value, text) in [
            (5.0, "5.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e20, "1.0e+20"),
            (1e15, "1.0e+15"),
            (999999999999999.0, "999999999999999.0"),
            (123456789012345678.0, "1.23456789012346e+17"),
            (1.0 / 3.0, "0.333333333333333"),
            (2.0 / 3.0, "0.666666666666667"),
            (1e-300, "1.0e-300"),
            (f64::INFINITY, "Inf"),
        ] {
            assert_eq!(real_text(value), text, "{value:e}");
        }
    }

    #[test]
    fn extra_columns_print_as_text() {
        let out = format_rows(&[I], 2, &[vec![Datum::Float(1.5), Datum::Float(1.5)]]);
        let DBOutput::Rows { types, rows } = out else {
            panic!("rows expected");
        };
        assert_eq!(types, vec![I, T]);
        assert_eq!(rows, vec![vec!["1".to_string(), "1.5".to_string()]]);
    }

    #[test]
    fn condition_comments_are_dropped() {
        let text = "onlyif mysql # DIV for integer division: \nquery I\nSELECT 1 # not a condition\n----\n1\n";
        assert_eq!(
            strip_condition_comments(text),
            "onlyif mysql\nquery I\nSELECT 1 # not a condition\n----\n1\n"
        );
    }

    #[test]
    fn dynamodb_subset_names_files_and_directories() {
        assert!(in_subset(EMBEDDED_SUBSET, "sqlite/select1.test"));
        assert!(in_subset(DYNAMODB_SUBSET, "sqlite/evidence/in1.test"));
        assert!(!in_subset(DYNAMODB_SUBSET, "sqlite/evidence2/in1.test"));
        assert!(!in_subset(DYNAMODB_SUBSET, "sqlite/select2.test"));
        assert!(in_subset(
            EMBEDDED_SUBSET,
            "sqlite/random/aggregates/slt_good_0.test"
        ));
    }

    /// A stand-in for the SQL layer: `SELECT a, b` returns one row of the texts `a` and `b`
    /// (printed by the declared types), `fail` fails, anything else succeeds.
    struct Echo {
        declared: DeclaredTypes,
    }

    #[async_trait]
    impl AsyncDB for Echo {
        type Error = SltError;
        type ColumnType = DefaultColumnType;

        async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
            if sql == "fail" {
                return Err(SltError {
                    message: "failed as asked".into(),
                    sqlstate: None,
                });
            }
            let Some(list) = sql.strip_prefix("SELECT ") else {
                return Ok(DBOutput::StatementComplete(0));
            };
            let row: Vec<Datum> = list
                .split(',')
                .map(|v| Datum::Text(v.trim().to_string()))
                .collect();
            let declared = self
                .declared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(format_rows(&declared, row.len(), &[row]))
        }

        async fn shutdown(&mut self) {}

        fn engine_name(&self) -> &str {
            ENGINE_LABEL
        }
    }

    async fn run_script(script: &str, dialect: Dialect) -> FileReport {
        let records = sqllogictest::parse_with_name(&strip_condition_comments(script), "t.test")
            .expect("the script parses");
        let declared = DeclaredTypes::default();
        let shared = declared.clone();
        let mut runner = Runner::new(move || {
            let db = Echo {
                declared: shared.clone(),
            };
            async move { Ok::<_, SltError>(db) }
        });
        let mut report = FileReport::new(BackendKind::Memory, "t.test");
        run_records(&mut runner, records, &declared, dialect, &mut report).await;
        report
    }

    #[tokio::test]
    async fn conditions_halts_and_failures_are_counted() {
        let script = "\
onlyif mssql # skip the file on mssql
halt

skipif strata
statement ok
fail

statement ok
create

query II nosort
SELECT 7, 8
----
7
8

onlyif sqlite
query I
SELECT 1
----
2

query T
SELECT x
----
y

query IR
SELECT 3.9, abc
----
3
0.000

statement error
fail

halt

statement ok
fail
";
        let report = run_script(script, Dialect::Sqlite).await;
        assert_eq!(
            report.tally,
            Tally {
                passed: 4,
                failed: 1,
                skipped: 2,
                differ: 0,
            },
            "{:?}",
            report.failures
        );
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].line, 23);
        assert!(report.failures[0].message.contains("SELECT x"));
        assert_eq!(report.halted_at, Some(37));
    }

    #[tokio::test]
    async fn test_files_hash_large_results_and_slt_files_compare_rows() {
        // More values than the threshold: the MD5 of "1\n2\n...9\n" (each value and a
        // newline), as the C harness hashes them.
        let script = "\
query IIIIIIIII
SELECT 1, 2, 3, 4, 5, 6, 7, 8, 9
----
9 values hashing to 22e400a2ddbb013acf2a5852d6ab69fc

query IIIIIIII
SELECT 1, 2, 3, 4, 5, 6, 7, 8
----
1
2
3
4
5
6
7
8
";
        let report = run_script(script, Dialect::Sqlite).await;
        assert_eq!(report.tally.passed, 2, "{:?}", report.failures);

        // `.slt` files: one row per line, and never hashed.
        let script = "\
query IT
SELECT 1, a b
----
1 a b

query IIIIIIIII
SELECT 1, 2, 3, 4, 5, 6, 7, 8, 9
----
1 2 3 4 5 6 7 8 9
";
        let report = run_script(script, Dialect::Rows).await;
        assert_eq!(report.tally.passed, 2, "{:?}", report.failures);
    }
}
