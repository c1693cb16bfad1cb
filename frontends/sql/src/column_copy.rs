//! Column copies: a table's columns held in memory as Arrow arrays, so that a full scan that
//! comes again over a table nobody wrote since reads arrays instead of the store.
//!
//! A full scan reads every row through the store's cursor and decodes it, and that costs
//! the same each time an aggregate runs over an unchanged table. A column copy is the
//! answer of such a scan kept: every row of one table at one state, in key order, with the
//! columns scans asked for, each one Arrow array. A scan served from it tests its
//! pushed-down predicates on the arrays and outputs slices of them.
//!
//! **Which state a copy holds.** Every commit that writes a table's rows also adds to the
//! table's row counter ([`crate::stats`]), even when the count does not change (an
//! UPDATE adds 0), so the counter's versionstamp moves with every change to the table's
//! rows. A copy is labelled with the counter's versionstamp and the table's definition at
//! the snapshot it was built at. A later snapshot that reads the same versionstamp (and the
//! same definition) holds exactly the same rows: a commit that changed them in between
//! would have written the counter at a version past the copy's snapshot. (Sums that land
//! in one group leave one version of the counter, stamped with the group's first commit,
//! but no snapshot falls inside a group; `AS OF` reads, which may, never use copies.) The
//! versionstamp is read at the scan's snapshot without recording the read: the scan
//! records the table's whole row range as read, as reading the rows would have, so a
//! commit conflicts with a concurrent writer exactly as before. A transaction that wrote to
//! the table itself reads through its own writes, never a copy.
//!
//! **When a copy is made.** Making one decodes every row of the needed columns, which
//! costs more than a filtering scan that leaves most rows after a column or two, so a
//! table's first full scan at a state only notes the state; the second full scan at the
//! same state builds the copy (in parallel over the scan's parts) and answers from it, and
//! later ones just answer from it. A table written between its scans never pays for a copy.
//! A scan that needs a column the copy lacks adds it (its rows are the same).
//!
//! **Memory.** Copies of all databases share one budget ([`set_column_copy_budget`], 512 MiB by
//! default; 0 turns copies off). A copy that would not fit is not made; a new copy evicts
//! the other copies of its database to fit. A stale copy is dropped when a scan finds its
//! table changed, and every copy goes with its database when that closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};
use strata_engine::{prefix_end, SnapshotReader, ValueRef, Versionstamp, Visitor};
use tokio::sync::Mutex;

use crate::catalog::{RowDecoder, TableDef};
use crate::codec::Key;
use crate::error::{Result, SqlError};
use crate::tx::Tx;
use crate::types::{ColumnBuilder, Datum, DatumRef, SqlType};

/// Bytes all column copies may hold together.
static BUDGET: AtomicUsize = AtomicUsize::new(512 << 20);
/// Bytes all column copies hold now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Let column copies of every database hold at most `bytes` together (0: make none). Copies
/// already held stay until they are replaced or go stale.
pub fn set_column_copy_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// The bytes column copies hold now, over every database.
pub fn column_copy_bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// What a table's rows are at a snapshot: the versionstamp of its row counter.
type State = Versionstamp;

/// The column copies of one database, kept with it ([`strata_engine::Database::layer_state`]).
#[derive(Default)]
pub(crate) struct ColumnCopies {
    tables: std::sync::Mutex<HashMap<u64, Held>>,
}

/// What is kept for one table.
enum Held {
    /// A full scan read the table at this state and no copy is made yet.
    Seen(State),
    /// A copy at this state would not fit the budget: scans read the store.
    TooBig(State),
    Copy(Arc<ColumnCopy>),
}

/// Every row of one table at one state, in key order: some of its columns, as arrays.
pub(crate) struct ColumnCopy {
    def: TableDef,
    state: State,
    rows: usize,
    /// By column position.
    columns: HashMap<usize, ArrayRef>,
    /// What the arrays take, counted in [`HELD`] while the copy lives.
    bytes: usize,
}

impl std::fmt::Debug for ColumnCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCopy")
            .field("table", &self.def.name)
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for ColumnCopy {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl ColumnCopy {
    fn new(def: TableDef, state: State, rows: usize, columns: HashMap<usize, ArrayRef>) -> Self {
        let bytes = columns.values().map(|a| a.get_array_memory_size()).sum();
        HELD.fetch_add(bytes, Ordering::Relaxed);
        ColumnCopy {
            def,
            state,
            rows,
            columns,
            bytes,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The array of column `position` (one the scan asked for).
    pub fn column(&self, position: usize) -> Result<&ArrayRef> {
        self.columns.get(&position).ok_or_else(|| {
            SqlError::Internal("a column copy lacks a column it was made with".into())
        })
    }
}

/// The key range of every row of table `table`.
fn rows_range(table: u64) -> (Vec<u8>, Vec<u8>) {
    let start = Key::Rows(table).encode();
    let end = prefix_end(&start);
    (start, end)
}

/// A copy of `def`'s table holding `columns`, at `tx`'s snapshot, for a full scan to read
/// instead of the store; `None` when the scan reads the store (see the module doc for when).
/// With a copy, the table's rows are recorded as read by the transaction. `parts` are the
/// key ranges the scan was cut into, read in parallel to build a copy.
pub(crate) async fn for_scan(
    tx: &Arc<Mutex<Tx>>,
    def: &TableDef,
    columns: &[usize],
    parts: &[Vec<(Vec<u8>, Vec<u8>)>],
) -> Result<Option<Arc<ColumnCopy>>> {
    let budget = BUDGET.load(Ordering::Relaxed);
    if budget == 0 {
        return Ok(None);
    }
    let (start, end) = rows_range(def.id);
    let (reader, copies) = {
        let tx = tx.lock().await;
        let copies = tx.database().layer_state::<ColumnCopies>();
        match tx.snapshot_reader(&start, &end)? {
            Some(reader) => (reader, copies),
            // The transaction wrote to the table: it reads its own writes.
            None => return Ok(None),
        }
    };
    let Some((count, state)) = reader
        .get_versioned(&crate::stats::counter_key(def.id))
        .await?
    else {
        // A table without a counter (made before there were counters) has no state.
        return Ok(None);
    };
    let found = {
        let mut tables = copies.lock();
        match tables.get(&def.id) {
            Some(Held::Copy(c)) if c.state == state && c.def == *def => {
                let missing: Vec<usize> = columns
                    .iter()
                    .copied()
                    .filter(|i| !c.columns.contains_key(i))
                    .collect();
                Found::Copy(c.clone(), missing)
            }
            Some(Held::Seen(seen)) if *seen == state => Found::Seen,
            Some(Held::TooBig(big)) if *big == state => Found::Nothing,
            _ => {
                // First full scan at this state (a copy of an older one is stale now).
                tables.insert(def.id, Held::Seen(state));
                Found::Nothing
            }
        }
    };
    let (have, missing) = match found {
        Found::Nothing => return Ok(None),
        Found::Copy(c, missing) if missing.is_empty() => {
            tx.lock().await.note_read(&start, &end).await?;
            return Ok(Some(c));
        }
        Found::Copy(c, missing) => (Some(c), missing),
        // A scan that needs no column (`count(*)`) still counts the rows it reads: the copy
        // gets the first column, whose length is the row count.
        Found::Seen if columns.is_empty() => (None, vec![0]),
        Found::Seen => (None, columns.to_vec()),
    };
    let expected_rows = count.as_u64().unwrap_or(0) as usize;
    let estimate =
        estimated_bytes(def, &missing, expected_rows) + have.as_ref().map_or(0, |c| c.bytes);
    if estimate > budget {
        if have.is_none() {
            copies.lock().insert(def.id, Held::TooBig(state));
        }
        // (A copy that lacks columns this scan needs still serves the scans it covers.)
        return Ok(None);
    }
    let built = build(&reader, def, &missing, parts).await?;
    let rows = built.first().map_or(0, |a| a.len());
    let mut arrays: HashMap<usize, ArrayRef> = missing.iter().copied().zip(built).collect();
    if let Some(have) = &have {
        if have.rows != rows {
            return Err(SqlError::Internal(format!(
                "table {} read {rows} rows where its column copy of the same state has {}",
                def.name, have.rows
            )));
        }
        arrays.extend(have.columns.iter().map(|(&i, a)| (i, a.clone())));
    }
    drop(have);
    let copy = Arc::new(ColumnCopy::new(def.clone(), state, rows, arrays));
    copies.keep(def.id, &copy, budget);
    tx.lock().await.note_read(&start, &end).await?;
    Ok(Some(copy))
}

/// What [`for_scan`] found kept for a table at the scan's state.
enum Found {
    /// A copy, and the columns the scan needs that it lacks.
    Copy(Arc<ColumnCopy>, Vec<usize>),
    /// A scan at this state before: the time to make a copy.
    Seen,
    /// Nothing to use or make.
    Nothing,
}

impl ColumnCopies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `copy` for `table` if it fits the budget, evicting this database's other copies
    /// as needed; otherwise the copy serves only the scan that made it.
    fn keep(&self, table: u64, copy: &Arc<ColumnCopy>, budget: usize) {
        let mut tables = self.lock();
        // The copy it replaces is counted in HELD until dropped here.
        tables.remove(&table);
        let over = || HELD.load(Ordering::Relaxed) > budget;
        if over() {
            tables.retain(|_, held| !matches!(held, Held::Copy(_)));
        }
        let held = match over() {
            false => Held::Copy(copy.clone()),
            true => Held::TooBig(copy.state),
        };
        tables.insert(table, held);
    }
}

/// A rough size of `columns` of `def` over `rows` rows, to refuse a copy that cannot fit
/// before reading anything.
fn estimated_bytes(def: &TableDef, columns: &[usize], rows: usize) -> usize {
    let width: usize = columns
        .iter()
        .map(|&i| match def.columns.get(i).map(|c| &c.ty) {
            Some(SqlType::Boolean) => 1,
            Some(SqlType::Decimal { .. }) => 16,
            Some(SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) | SqlType::Blob) => 24,
            _ => 8,
        })
        .sum();
    width.saturating_mul(rows)
}

/// Read every row of `def`'s table at `reader`'s snapshot and return `columns` as arrays,
/// each part of `parts` read by a task of its own, their rows concatenated in key order.
async fn build(
    reader: &SnapshotReader,
    def: &TableDef,
    columns: &[usize],
    parts: &[Vec<(Vec<u8>, Vec<u8>)>],
) -> Result<Vec<ArrayRef>> {
    let def = Arc::new(def.clone());
    let columns: Arc<[usize]> = columns.into();
    let whole = [vec![rows_range(def.id)]];
    let parts = if parts.is_empty() { &whole[..] } else { parts };
    let mut tasks = Tasks(
        parts
            .iter()
            .map(|ranges| {
                let (reader, def, columns, ranges) =
                    (reader.clone(), def.clone(), columns.clone(), ranges.clone());
                tokio::spawn(async move { read_part(&reader, &def, &columns, &ranges).await })
            })
            .collect(),
    );
    let mut pieces: Vec<Vec<ArrayRef>> = vec![Vec::new(); columns.len()];
    for task in tasks.0.iter_mut() {
        let arrays = task
            .await
            .map_err(|e| SqlError::Internal(format!("a column copy's build failed: {e}")))??;
        for (piece, array) in pieces.iter_mut().zip(arrays) {
            piece.extend(array);
        }
    }
    pieces
        .into_iter()
        .map(|piece| {
            let refs: Vec<&dyn Array> = piece.iter().map(|a| a.as_ref()).collect();
            datafusion::arrow::compute::concat(&refs).map_err(|e| SqlError::Internal(e.to_string()))
        })
        .collect()
}

/// The tasks reading a copy's parts, stopped if the scan building it goes away.
struct Tasks<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// `columns` of every row in `ranges`, one list of arrays per column (a piece per read).
async fn read_part(
    reader: &SnapshotReader,
    def: &TableDef,
    columns: &[usize],
    ranges: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<Vec<ArrayRef>>> {
    let decoder = RowDecoder::new(def, |i| columns.contains(&i));
    let mut out: Vec<Vec<ArrayRef>> = vec![Vec::new(); columns.len()];
    for (start, end) in ranges {
        let mut from = start.clone();
        loop {
            let mut sink = ColumnSink::new(def, &decoder, columns);
            let stopped_at = reader.scan_each(&from, end, &mut sink).await?;
            if let Some(e) = sink.error.take() {
                return Err(e);
            }
            if sink.redo {
                // A concurrent delete made the read start over: read this piece again.
                continue;
            }
            for (list, builder) in out.iter_mut().zip(sink.builders) {
                list.push(builder.finish()?);
            }
            match stopped_at {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    Ok(out)
}

/// Rows a [`ColumnSink`] takes before it stops a read, so that a piece's arrays stay
/// moderate and a restarted read repeats little.
const PIECE_ROWS: usize = 64 * 1024;

/// Decodes the entries a snapshot lends into column builders.
struct ColumnSink<'a> {
    decoder: &'a RowDecoder,
    columns: &'a [usize],
    builders: Vec<ColumnBuilder>,
    row: Vec<Datum>,
    values: Vec<DatumRef<'static>>,
    rows: usize,
    error: Option<SqlError>,
    redo: bool,
}

impl<'a> ColumnSink<'a> {
    fn new(def: &TableDef, decoder: &'a RowDecoder, columns: &'a [usize]) -> Self {
        ColumnSink {
            decoder,
            columns,
            builders: columns
                .iter()
                .map(|&i| ColumnBuilder::new(&def.columns[i].ty, 4096))
                .collect(),
            row: Vec::new(),
            values: Vec::new(),
            rows: 0,
            error: None,
            redo: false,
        }
    }

    fn take(&mut self, value: &[u8]) -> Result<()> {
        let mut values = crate::table::reuse(std::mem::take(&mut self.values));
        let read = self.decoder.read_checked(value, &mut values, |_, _| true)?;
        if read.is_some() {
            for (b, &i) in self.builders.iter_mut().zip(self.columns) {
                b.push_ref(values[i])?;
            }
        }
        self.values = crate::table::reuse(values);
        if read.is_none() {
            // A row in the tuple format.
            self.decoder.decode_into(value, &mut self.row)?;
            for (b, &i) in self.builders.iter_mut().zip(self.columns) {
                b.push(&self.row[i])?;
            }
        }
        self.rows += 1;
        Ok(())
    }
}

impl Visitor for ColumnSink<'_> {
    fn visit(&mut self, _key: &[u8], value: ValueRef<'_>) -> bool {
        if self.redo {
            return false;
        }
        match self.take(value.data) {
            Ok(()) => self.rows < PIECE_ROWS,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn restart(&mut self) {
        self.redo = true;
    }
}

/// One column of a copy, read a value at a time as the scan's predicates take them.
pub(crate) enum ColumnView<'a> {
    Bool(&'a BooleanArray),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    Text(&'a StringArray),
    Bytes(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
}

impl<'a> ColumnView<'a> {
    /// A view of `array`, a copy's column of type `ty`.
    pub fn new(array: &'a ArrayRef, ty: &SqlType) -> Result<Self> {
        let wrong = || SqlError::Internal("a column copy's array has another type".into());
        let any = array.as_any();
        Ok(match ty {
            SqlType::Boolean => ColumnView::Bool(any.downcast_ref().ok_or_else(wrong)?),
            SqlType::SmallInt | SqlType::Integer | SqlType::BigInt => {
                ColumnView::Int(any.downcast_ref().ok_or_else(wrong)?)
            }
            SqlType::Real | SqlType::Double => {
                ColumnView::Float(any.downcast_ref().ok_or_else(wrong)?)
            }
            SqlType::Decimal { scale, .. } => {
                ColumnView::Decimal(any.downcast_ref().ok_or_else(wrong)?, *scale)
            }
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
                ColumnView::Text(any.downcast_ref().ok_or_else(wrong)?)
            }
            SqlType::Blob => ColumnView::Bytes(any.downcast_ref().ok_or_else(wrong)?),
            SqlType::Date => ColumnView::Date(any.downcast_ref().ok_or_else(wrong)?),
            SqlType::Timestamp => ColumnView::Timestamp(any.downcast_ref().ok_or_else(wrong)?),
        })
    }

    /// The value of row `i`.
    pub fn get(&self, i: usize) -> DatumRef<'a> {
        macro_rules! at {
            ($a:expr, $make:expr) => {
                if $a.is_null(i) {
                    DatumRef::Null
                } else {
                    $make($a.value(i))
                }
            };
        }
        match self {
            ColumnView::Bool(a) => at!(a, DatumRef::Bool),
            ColumnView::Int(a) => at!(a, DatumRef::Int),
            ColumnView::Float(a) => at!(a, DatumRef::Float),
            ColumnView::Decimal(a, s) => at!(a, |v| DatumRef::Decimal(v, *s)),
            ColumnView::Text(a) => at!(a, DatumRef::Text),
            ColumnView::Bytes(a) => at!(a, DatumRef::Bytes),
            ColumnView::Date(a) => at!(a, DatumRef::Date),
            ColumnView::Timestamp(a) => at!(a, DatumRef::Timestamp),
        }
    }
}
