//! The scan side of DataFusion: a [`TableProvider`] per table that reads the statement's
//! [`Source`] through the access path the pushed-down predicates allow.
//!
//! The provider claims `Exact` for every simple predicate ([`crate::access`]) and evaluates
//! them itself, so a LIMIT stops the scan early. Rows are read in chunks of
//! [`SCAN_CHUNK`] keys and emitted as Arrow batches of the projected columns.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session as DfSession;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use strata_engine::{ValueRef, Visitor};
use tokio::sync::Mutex;

use crate::access::{self, Path, Pred};
use crate::catalog::TableDef;
use crate::codec::{self, Key};
use crate::column_copy::ColumnCopy;
use crate::error::SqlError;
use crate::tx::{Source, Tx, SCAN_CHUNK};
use crate::types::{ColumnBuilder, Datum, DatumRef, SqlType};

pub(crate) fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// One table as DataFusion sees it, bound to where this statement reads it from.
#[derive(Debug)]
pub struct SqlTable {
    def: Arc<TableDef>,
    schema: SchemaRef,
    source: SourceDebug,
    keyed: bool,
    /// The table's row count, if known (see [`crate::stats`]).
    rows: Option<u64>,
    /// A full scan reads in parallel parts from this many rows...
    parallel_scan_rows: u64,
    /// ... this many of them.
    scan_parts: usize,
    /// The statement's parameter values, when it is planned with its placeholders in place
    /// (for the plan cache): `$n` in a pushed-down predicate stands for `params[n - 1]`.
    params: Arc<[Datum]>,
    /// The engine database the table is in (a cached plan binds its scans by it).
    db: Option<Arc<str>>,
}

/// `Source` with a `Debug` that DataFusion's plan printing can use.
#[derive(Clone)]
struct SourceDebug(Source);

impl fmt::Debug for SourceDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Txn(_) => f.write_str("transaction"),
            Source::Version(_, v) => write!(f, "as of version {v}"),
        }
    }
}

impl SqlTable {
    /// `keyed`: the schema ends with the hidden row-key column (for UPDATE and DELETE).
    pub fn new(def: Arc<TableDef>, source: Source, keyed: bool) -> Self {
        SqlTable {
            schema: scan_schema(&def, keyed),
            def,
            source: SourceDebug(source),
            keyed,
            rows: None,
            parallel_scan_rows: PARALLEL_SCAN_ROWS,
            scan_parts: scan_workers(),
            params: Arc::new([]),
            db: None,
        }
    }

    /// Name the engine database the table is in.
    pub fn with_database(mut self, db: &str) -> Self {
        self.db = Some(db.into());
        self
    }

    /// Plan with these values for the placeholders in pushed-down predicates.
    pub fn with_params(mut self, params: Arc<[Datum]>) -> Self {
        self.params = params;
        self
    }

    /// Give the planner the table's row count.
    pub fn with_rows(mut self, rows: Option<u64>) -> Self {
        self.rows = rows;
        self
    }

    /// Read a full scan in up to `parts` parallel parts when the table has at least `rows`
    /// rows.
    pub fn with_parallel_scan(mut self, rows: u64, parts: usize) -> Self {
        self.parallel_scan_rows = rows;
        self.scan_parts = parts;
        self
    }
}

fn scan_schema(def: &TableDef, keyed: bool) -> SchemaRef {
    let base = def.arrow_schema();
    if !keyed {
        return base;
    }
    let mut fields: Vec<_> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(datafusion::arrow::datatypes::Field::new(
        crate::dml::KEY_COLUMN,
        datafusion::arrow::datatypes::DataType::Binary,
        false,
    ));
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl TableProvider for SqlTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match access::simple(&self.def, f, &self.params) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Exactly the filters DataFusion pushed down as exact (the others it evaluates).
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| access::simple(&self.def, f, &self.params).is_some())
            .cloned()
            .collect();
        let preds: Vec<Pred> = filters
            .iter()
            .filter_map(|f| access::simple(&self.def, f, &self.params))
            .flatten()
            .collect();
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let path = access_path(&self.def, &projection, &preds);
        let parts = match (&self.source.0, &path) {
            (Source::Txn(tx), Path::Rows { ranges, full: true })
                if ranges.len() == 1
                    && limit.is_none()
                    && !self.keyed
                    && self.rows.is_some_and(|n| n >= self.parallel_scan_rows) =>
            {
                split_range(tx, &ranges[0], self.scan_parts)
                    .await
                    .map_err(external)?
            }
            (_, Path::Rows { ranges, .. } | Path::Index { ranges, .. }) => vec![ranges.clone()],
            (_, Path::Empty) => vec![Vec::new()],
        };
        Ok(Arc::new(ScanExec::new(
            self.def.clone(),
            self.db.clone(),
            Some(self.source.clone()),
            path,
            parts,
            Predicates { filters, preds },
            projection,
            limit,
            self.keyed,
            self.rows,
        )))
    }
}

/// How a scan outputting `projection` (positions; the one past the columns is the row key)
/// and filtering on `preds` reads its table.
fn access_path(def: &TableDef, projection: &[usize], preds: &[Pred]) -> Path {
    let mut needed: Vec<usize> = projection
        .iter()
        .copied()
        .filter(|&i| i < def.columns.len())
        .collect();
    needed.extend(preds.iter().map(|p| p.column));
    access::choose(def, preds, &needed)
}

/// By default, a full scan of a table with at least this many rows reads it in parts at
/// once, one per core ([`split_range`]).
pub(crate) const PARALLEL_SCAN_ROWS: u64 = 100_000;
/// The most parts a parallel scan has.
const MAX_SCAN_PARTS: usize = 8;

/// The parts of a parallel scan by default: one per core.
pub(crate) fn scan_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SCAN_PARTS)
}

/// `range` cut into up to `parts` consecutive ranges of about equal key spans, each to be
/// one partition of the scan. The cuts lie between the range's first and last keys,
/// interpolated over the first eight bytes where those keys differ: even parts for integer
/// keys, rougher ones for text. Fewer parts when the keys leave no room.
async fn split_range(
    tx: &Mutex<Tx>,
    (start, end): &(Vec<u8>, Vec<u8>),
    parts: usize,
) -> Result<Vec<Vec<(Vec<u8>, Vec<u8>)>>, SqlError> {
    let whole = || vec![vec![(start.clone(), end.clone())]];
    if parts < 2 {
        return Ok(whole());
    }
    let (first, last) = {
        let mut tx = tx.lock().await;
        let first = tx.scan(start, end, false, 1).await?;
        let last = tx.scan(start, end, true, 1).await?;
        (first, last)
    };
    let (Some((first, _)), Some((last, _))) = (first.first(), last.first()) else {
        return Ok(whole());
    };
    let mut bounds = vec![start.clone()];
    bounds.extend(split_points(first, last, parts));
    bounds.push(end.clone());
    Ok(bounds
        .windows(2)
        .map(|w| vec![(w[0].clone(), w[1].clone())])
        .collect())
}

/// Up to `parts - 1` keys in `(first, last]`, ascending, spaced evenly over the eight bytes
/// after the keys' common prefix.
fn split_points(first: &[u8], last: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    let word = |key: &[u8]| {
        let mut w = [0u8; 8];
        for (slot, b) in w.iter_mut().zip(&key[common..]) {
            *slot = *b;
        }
        u64::from_be_bytes(w)
    };
    let (lo, hi) = (word(first), word(last));
    let mut out: Vec<Vec<u8>> = Vec::new();
    if hi <= lo || parts < 2 {
        return out;
    }
    for i in 1..parts {
        let at = lo as u128 + (hi - lo) as u128 * i as u128 / parts as u128;
        let mut key = first[..common].to_vec();
        key.extend_from_slice(&(at as u64).to_be_bytes());
        let after_previous = out.last().map_or(key.as_slice() > first, |p| key > *p);
        if after_previous && key.as_slice() <= last {
            out.push(key);
        }
    }
    out
}

/// The physical scan: reads key ranges, filters, projects, emits batches. Each partition
/// reads its own ranges (one partition unless [`split_range`] cut a full scan).
///
/// A scan in a cached plan is kept unbound (no source); each run of the plan binds a copy
/// to the statement's transaction and parameter values ([`ScanExec::bind`]).
#[derive(Debug)]
pub struct ScanExec {
    def: Arc<TableDef>,
    db: Option<Arc<str>>,
    source: Option<SourceDebug>,
    path: Path,
    /// The key ranges of each partition, in key order.
    parts: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// The pushed-down filters as planned (placeholders and all), to bind again.
    filters: Vec<Expr>,
    preds: Vec<Pred>,
    projection: Vec<usize>,
    limit: Option<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    keyed: bool,
    rows: Option<u64>,
    /// Whether this run of the scan reads a column copy, decided by the first partition to
    /// start, for all of them (see [`crate::column_copy`]).
    copy: Arc<tokio::sync::OnceCell<Option<Arc<ColumnCopy>>>>,
}

/// The share of rows a pushed-down predicate is assumed to keep, as DataFusion assumes for
/// a filter it knows nothing about.
const SELECTIVITY: f64 = 0.2;

/// A scan's pushed-down filters, and the predicates they state for the values bound.
struct Predicates {
    filters: Vec<Expr>,
    preds: Vec<Pred>,
}

impl ScanExec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        def: Arc<TableDef>,
        db: Option<Arc<str>>,
        source: Option<SourceDebug>,
        path: Path,
        parts: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
        Predicates { filters, preds }: Predicates,
        projection: Vec<usize>,
        limit: Option<usize>,
        keyed: bool,
        rows: Option<u64>,
    ) -> Self {
        let full = scan_schema(&def, keyed);
        let schema = Arc::new(Schema::new(
            projection
                .iter()
                .map(|&i| full.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        let mut equivalences = EquivalenceProperties::new(schema.clone());
        let ordering = key_ordering(&def, &path, &projection, &schema);
        if !ordering.is_empty() {
            equivalences.add_ordering(ordering);
        }
        let properties = Arc::new(PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(parts.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ScanExec {
            def,
            db,
            source,
            path,
            parts,
            filters,
            preds,
            projection,
            limit,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            keyed,
            rows,
            copy: Arc::default(),
        }
    }

    /// Whether this scan may read a column copy: a full scan of the table (every column a
    /// stored one) in a transaction, not stopped by a limit.
    fn copyable(&self) -> bool {
        matches!(self.source, Some(SourceDebug(Source::Txn(_))))
            && matches!(self.path, Path::Rows { full: true, .. })
            && !self.keyed
            && self.limit.is_none()
    }

    /// The engine database this scan reads, if its table was named with one.
    pub(crate) fn database(&self) -> Option<&str> {
        self.db.as_deref()
    }

    /// This scan without its source, for a plan cache to keep: a kept source would hold the
    /// statement's transaction open.
    pub(crate) fn unbound(&self) -> ScanExec {
        self.rebuilt(
            None,
            self.parts.clone(),
            self.path.clone(),
            self.preds.clone(),
        )
    }

    /// A copy of this scan that reads `source` with `params` for the placeholders, or
    /// `None` when those values need another plan: a pushed-down filter is no longer
    /// simple (the value has another type), or the access path would change the scan's
    /// partitions or the order it promises.
    pub(crate) fn bind(&self, source: Source, params: &[Datum]) -> Option<ScanExec> {
        let mut preds = Vec::new();
        for f in &self.filters {
            preds.extend(access::simple(&self.def, f, params)?);
        }
        let path = access_path(&self.def, &self.projection, &preds);
        let parts = match &path {
            // A parallel full scan: the cuts of the whole table still cover it.
            Path::Rows { ranges, full: true }
                if self.parts.len() > 1 && self.path == path && ranges.len() == 1 =>
            {
                self.parts.clone()
            }
            Path::Rows { ranges, .. } | Path::Index { ranges, .. } => vec![ranges.clone()],
            Path::Empty => vec![Vec::new()],
        };
        if parts.len().max(1) != self.parts.len().max(1) {
            return None;
        }
        let bound = self.rebuilt(Some(SourceDebug(source)), parts, path, preds);
        // The plan above relies on the order this scan promised when planned (no rows
        // keep any order).
        let promised = self.properties.equivalence_properties().output_ordering();
        let keeps_order = promised.is_none()
            || bound.path == Path::Empty
            || bound.properties.equivalence_properties().output_ordering() == promised;
        keeps_order.then_some(bound)
    }

    fn rebuilt(
        &self,
        source: Option<SourceDebug>,
        parts: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
        path: Path,
        preds: Vec<Pred>,
    ) -> ScanExec {
        ScanExec::new(
            self.def.clone(),
            self.db.clone(),
            source,
            path,
            parts,
            Predicates {
                filters: self.filters.clone(),
                preds,
            },
            self.projection.clone(),
            self.limit,
            self.keyed,
            self.rows,
        )
    }

    /// The rows this scan is expected to return: the table's row count, cut by each
    /// predicate and by the limit. `None`: the table's count is unknown.
    fn estimate(&self) -> Option<usize> {
        let rows = self.rows? as f64;
        let mut est = match self.path {
            Path::Empty => 0.0,
            _ => rows * SELECTIVITY.powi(self.preds.len().min(8) as i32),
        };
        if rows >= 1.0 {
            est = est.max(1.0);
        }
        let est = est.round() as usize;
        Some(self.limit.map_or(est, |l| est.min(l)))
    }
}

/// The order rows leave a scan in, as sort keys over its output columns, so that the planner
/// drops a sort the key order already gives (`ORDER BY id`, `ORDER BY id LIMIT 10` reads
/// ten rows). Rows come in key order: primary-key order for a row scan, index order then
/// primary-key order for an index scan, with several ranges in ascending order. Key order
/// is value order with NULLs first, the planner's ascending default, for every type but
/// floating point (the codec folds -0 into 0), so the sort keys are the key's columns up to
/// the first float column or the first column the scan does not output.
fn key_ordering(
    def: &TableDef,
    path: &Path,
    projection: &[usize],
    schema: &SchemaRef,
) -> Vec<PhysicalSortExpr> {
    let (columns, ranges) = match path {
        Path::Rows { ranges, .. } if !def.has_rowid() => (def.pk_positions(), ranges),
        Path::Index { index, ranges, .. } => {
            let mut columns = def.index_positions(index);
            if !def.has_rowid() {
                columns.extend(def.pk_positions());
            }
            (columns, ranges)
        }
        _ => return Vec::new(),
    };
    if !ranges.windows(2).all(|w| w[0].1 <= w[1].0) {
        return Vec::new();
    }
    let mut keys = Vec::new();
    for c in columns {
        if matches!(def.columns[c].ty, SqlType::Real | SqlType::Double) {
            break;
        }
        let Some(pos) = projection.iter().position(|&p| p == c) else {
            break;
        };
        keys.push(PhysicalSortExpr::new(
            Arc::new(Column::new(schema.field(pos).name(), pos)),
            SortOptions {
                descending: false,
                nulls_first: true,
            },
        ));
    }
    keys
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StrataScan: table={}, access={}",
            self.def.name,
            self.path.describe(&self.def)
        )?;
        if !self.preds.is_empty() {
            write!(f, ", filters={}", self.preds.len())?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        if self.parts.len() > 1 {
            write!(f, ", parts={}", self.parts.len())?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "StrataScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        let stats = Statistics::new_unknown(&self.schema);
        Ok(Arc::new(match self.estimate() {
            Some(n) => stats.with_num_rows(Precision::Inexact(n)),
            None => stats,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let read = MetricBuilder::new(&self.metrics).counter("rows_read", partition);
        let output = MetricBuilder::new(&self.metrics).output_rows(partition);
        let decoder = crate::catalog::RowDecoder::new(&self.def, |i| {
            self.projection.contains(&i) || self.preds.iter().any(|p| p.column == i)
        });
        let Some(source) = &self.source else {
            return Err(DataFusionError::Internal(
                "a cached plan ran without being bound".into(),
            ));
        };
        let copy = match self.copyable() {
            true => CopyState::Undecided(CopyPlan {
                cell: self.copy.clone(),
                partition,
                parts: self.parts.clone(),
                metrics: self.metrics.clone(),
            }),
            false => CopyState::Off,
        };
        let scan = Scan {
            copy,
            decoder,
            def: self.def.clone(),
            source: source.0.clone(),
            ranges: self.parts.get(partition).cloned().unwrap_or_default(),
            path: self.path.clone(),
            checks: checks_by_column(&self.preds, self.def.columns.len()),
            preds: self.preds.clone(),
            projection: self.projection.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            schema: self.schema.clone(),
            keyed: self.keyed,
            next_range: 0,
            batch_rows: FIRST_BATCH_ROWS,
            resume: None,
            read,
            output,
        };
        let stream = futures::stream::try_unfold(scan, |mut scan| async move {
            match scan.next_batch().await.map_err(external)? {
                Some(batch) => Ok(Some((batch, scan))),
                None => Ok(None),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// `preds` grouped by the column they test, one list per column position.
fn checks_by_column(preds: &[Pred], columns: usize) -> Vec<Vec<Pred>> {
    let mut checks = vec![Vec::new(); columns];
    for p in preds {
        if let Some(list) = checks.get_mut(p.column) {
            list.push(p.clone());
        }
    }
    checks
}

/// The state of one running scan.
struct Scan {
    /// Whether it reads a column copy instead of the store.
    copy: CopyState,
    def: Arc<TableDef>,
    /// Decodes the columns the scan outputs or filters on.
    decoder: crate::catalog::RowDecoder,
    source: Source,
    path: Path,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    preds: Vec<Pred>,
    /// The predicates on each column, by its position: what a row read is checked against
    /// as each column is read.
    checks: Vec<Vec<Pred>>,
    projection: Vec<usize>,
    remaining: usize,
    schema: SchemaRef,
    keyed: bool,
    next_range: usize,
    /// The size of the next lent batch.
    batch_rows: usize,
    /// Where the current range continues, after a full chunk.
    resume: Option<Vec<u8>>,
    read: datafusion::physical_plan::metrics::Count,
    output: datafusion::physical_plan::metrics::Count,
}

/// Rows in a scan's first batch; later batches double up to [`MAX_BATCH_ROWS`].
const FIRST_BATCH_ROWS: usize = SCAN_CHUNK;
/// The most rows in one batch (DataFusion's default batch size).
const MAX_BATCH_ROWS: usize = 8192;

/// A scan's use of a column copy.
enum CopyState {
    /// It reads the store.
    Off,
    /// It may read a copy, and has not asked yet.
    Undecided(CopyPlan),
    /// It reads rows `next..end` of a copy (its partition's share).
    Reading {
        copy: Arc<ColumnCopy>,
        next: usize,
        end: usize,
        rows: datafusion::physical_plan::metrics::Count,
    },
}

/// What a partition needs to ask for a column copy.
struct CopyPlan {
    cell: Arc<tokio::sync::OnceCell<Option<Arc<ColumnCopy>>>>,
    partition: usize,
    parts: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    metrics: ExecutionPlanMetricsSet,
}

impl Scan {
    /// The next non-empty batch, or `None` when the ranges are done or the limit reached.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SqlError> {
        if matches!(self.copy, CopyState::Undecided(_)) {
            self.decide_copy().await?;
        }
        let batch = match self.copy {
            CopyState::Reading { .. } => self.copy_batch()?,
            _ => self.stored_batch().await?,
        };
        if let Some(b) = &batch {
            self.output.add(b.num_rows());
        }
        Ok(batch)
    }

    /// The next non-empty batch read from the store.
    async fn stored_batch(&mut self) -> Result<Option<RecordBatch>, SqlError> {
        let lent = match (&self.source, &self.path) {
            (
                _,
                Path::Index {
                    covering: false, ..
                },
            ) => None,
            (Source::Txn(tx), _) => Some(tx.clone()),
            (Source::Version(..), _) => None,
        };
        match lent {
            Some(tx) => self.lent_batch(&tx).await,
            None => self.copied_batch().await,
        }
    }

    /// Ask (once for all partitions) whether the scan reads a column copy, and take this
    /// partition's share of its rows if it does.
    async fn decide_copy(&mut self) -> Result<(), SqlError> {
        let CopyState::Undecided(plan) = std::mem::replace(&mut self.copy, CopyState::Off) else {
            return Ok(());
        };
        let Source::Txn(tx) = &self.source else {
            return Ok(());
        };
        let mut columns: Vec<usize> = self.projection.clone();
        columns.extend(self.preds.iter().map(|p| p.column));
        columns.sort_unstable();
        columns.dedup();
        let found = plan
            .cell
            .get_or_try_init(|| crate::column_copy::for_scan(tx, &self.def, &columns, &plan.parts))
            .await?
            .clone();
        if let Some(copy) = found {
            let (n, parts) = (copy.rows(), plan.parts.len().max(1));
            self.copy = CopyState::Reading {
                next: n * plan.partition / parts,
                end: n * (plan.partition + 1) / parts,
                copy,
                rows: MetricBuilder::new(&plan.metrics).counter("column_copy_rows", plan.partition),
            };
        }
        Ok(())
    }

    /// The next non-empty batch of this partition's rows of a column copy: the rows that
    /// pass the predicates, the projected columns.
    fn copy_batch(&mut self) -> Result<Option<RecordBatch>, SqlError> {
        use datafusion::arrow::array::{Array, BooleanArray, BooleanBufferBuilder};
        let CopyState::Reading {
            copy,
            next,
            end,
            rows,
        } = &mut self.copy
        else {
            return Ok(None);
        };
        let views = self
            .checks
            .iter()
            .enumerate()
            .filter(|(_, preds)| !preds.is_empty())
            .map(|(i, preds)| {
                let view =
                    crate::column_copy::ColumnView::new(copy.column(i)?, &self.def.columns[i].ty)?;
                Ok((view, preds.as_slice()))
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        while *next < *end && self.remaining > 0 {
            let (from, len) = (*next, (*end - *next).min(MAX_BATCH_ROWS));
            *next += len;
            rows.add(len);
            self.read.add(len);
            let mut keep = BooleanBufferBuilder::new(len);
            for i in from..from + len {
                keep.append(views.iter().all(|(view, preds)| {
                    let v = view.get(i);
                    preds.iter().all(|p| p.holds_for(v))
                }));
            }
            let mask = BooleanArray::new(keep.finish(), None);
            let passed = mask.true_count();
            if passed == 0 {
                continue;
            }
            let take = passed.min(self.remaining);
            let columns = self
                .projection
                .iter()
                .map(|&i| {
                    let slice = copy.column(i)?.slice(from, len);
                    let kept = match passed == len {
                        true => slice,
                        false => datafusion::arrow::compute::filter(&slice, &mask)
                            .map_err(|e| SqlError::Internal(e.to_string()))?,
                    };
                    Ok(match take < passed {
                        true => kept.slice(0, take),
                        false => kept,
                    })
                })
                .collect::<Result<Vec<_>, SqlError>>()?;
            self.remaining -= take;
            let batch = RecordBatch::try_new_with_options(
                self.schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(take)),
            )
            .map_err(|e| SqlError::Internal(e.to_string()))?;
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// A batch built from entries the transaction lends, decoded in place.
    async fn lent_batch(&mut self, tx: &Mutex<Tx>) -> Result<Option<RecordBatch>, SqlError> {
        let cap = self.batch_rows.min(self.remaining);
        self.batch_rows = (self.batch_rows * 2).min(MAX_BATCH_ROWS);
        let (first_range, first_resume) = (self.next_range, self.resume.clone());
        let (mut next_range, mut resume) = (first_range, first_resume.clone());
        let mut sink = BatchSink::new(self, cap);
        while sink.rows < cap && next_range < self.ranges.len() {
            let (start, end) = &self.ranges[next_range];
            let from = resume.take().unwrap_or_else(|| start.clone());
            // Read without holding the transaction, so the parts of a parallel scan read at
            // once; a range holding the transaction's own writes is read through it.
            let reader = tx.lock().await.snapshot_reader(&from, end)?;
            let stopped_at = match reader {
                Some(reader) => {
                    let stopped_at = reader.scan_each(&from, end, &mut sink).await?;
                    let read_to = stopped_at.as_deref().unwrap_or(end);
                    tx.lock().await.note_read(&from, read_to).await?;
                    stopped_at
                }
                None => tx.lock().await.scan_each(&from, end, &mut sink).await?,
            };
            if let Some(e) = sink.error.take() {
                return Err(e);
            }
            if sink.redo {
                // Part of the batch was read before a concurrent delete: read it again.
                sink = BatchSink::new(self, cap);
                (next_range, resume) = (first_range, first_resume.clone());
                continue;
            }
            resume = stopped_at;
            if resume.is_none() {
                next_range += 1;
            }
        }
        let (rows, read, builders) = (sink.rows, sink.read, sink.builders);
        self.next_range = next_range;
        self.resume = resume;
        self.read.add(read);
        self.remaining -= rows;
        self.finish(rows, builders)
    }

    /// A batch built from copied chunks: time travel, and index paths that fetch each row.
    async fn copied_batch(&mut self) -> Result<Option<RecordBatch>, SqlError> {
        let mut builders = self.builders(SCAN_CHUNK);
        let mut rows = 0usize;
        let mut row = Vec::new();
        while rows < SCAN_CHUNK && self.remaining > 0 && self.next_range < self.ranges.len() {
            let (start, end) = &self.ranges[self.next_range];
            let from = self.resume.take().unwrap_or_else(|| start.clone());
            let chunk = self.source.scan(&from, end, false, SCAN_CHUNK).await?;
            self.resume = crate::tx::resume_after(&chunk);
            if self.resume.is_none() {
                self.next_range += 1;
            }
            for (key, value) in chunk {
                self.read.add(1);
                if !self.lent_row(&key, &value, &mut row)? {
                    row = self.fetched_row(&key).await?;
                }
                if self.emit(&key, &mut row, &mut builders)? {
                    rows += 1;
                    self.remaining -= 1;
                    if self.remaining == 0 {
                        break;
                    }
                }
            }
        }
        self.finish(rows, builders)
    }

    fn builders(&self, capacity: usize) -> Vec<ColumnBuilder> {
        self.projection
            .iter()
            .map(|&i| match self.def.columns.get(i) {
                Some(c) => ColumnBuilder::new(&c.ty, capacity),
                None => ColumnBuilder::new(&SqlType::Blob, capacity),
            })
            .collect()
    }

    /// Filter a decoded row and append what passes to the builders; whether it passed.
    fn emit(
        &self,
        key: &[u8],
        row: &mut Vec<Datum>,
        builders: &mut [ColumnBuilder],
    ) -> Result<bool, SqlError> {
        if !self.preds.iter().all(|p| p.holds(row)) {
            return Ok(false);
        }
        if self.keyed {
            row.push(Datum::Bytes(self.row_key(key)?));
        }
        for (b, &i) in builders.iter_mut().zip(&self.projection) {
            b.push(&row[i])?;
        }
        Ok(true)
    }

    /// [`Scan::emit`] of a table row read in place from its stored bytes: no value is
    /// copied until it reaches a builder. `None` for a row in the tuple format, which only
    /// [`Scan::emit`] takes.
    fn emit_stored<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        row: &mut Vec<DatumRef<'a>>,
        builders: &mut [ColumnBuilder],
    ) -> Result<Option<bool>, SqlError> {
        // Each predicate is tested as soon as its column is read, so a rejected row is left
        // there; columns a row lacks (added after it was written) are tested after.
        let checks = &self.checks;
        let check = |i: usize, v: DatumRef<'_>| {
            checks
                .get(i)
                .is_none_or(|preds| preds.iter().all(|p| p.holds_for(v)))
        };
        match self.decoder.read_checked(value, row, check)? {
            None => return Ok(None),
            Some(false) => return Ok(Some(false)),
            Some(true) => {}
        }
        if !self.preds.iter().all(|p| p.holds_for(row[p.column])) {
            return Ok(Some(false));
        }
        for (b, &i) in builders.iter_mut().zip(&self.projection) {
            // The position after the columns is the row key's (a keyed scan).
            b.push_ref(row.get(i).copied().unwrap_or(DatumRef::Bytes(key)))?;
        }
        Ok(Some(true))
    }

    fn finish(
        &self,
        rows: usize,
        builders: Vec<ColumnBuilder>,
    ) -> Result<Option<RecordBatch>, SqlError> {
        if rows == 0 {
            return Ok(None);
        }
        let columns = builders
            .into_iter()
            .map(ColumnBuilder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok(Some(batch))
    }

    /// The row key of a scanned entry (an index entry points at its row).
    fn row_key(&self, key: &[u8]) -> Result<Vec<u8>, SqlError> {
        match &self.path {
            Path::Index { index, .. } => {
                let values = codec::index_key_values(key, self.def.id, index.id)?;
                let n = index.columns.len().min(values.len());
                Ok(Key::Row(self.def.id, &values[n..]).encode())
            }
            _ => Ok(key.to_vec()),
        }
    }

    /// Decode the row an entry stands for into `row` from the entry alone; false when the
    /// entry is an index entry whose row must be fetched ([`Scan::fetched_row`]).
    fn lent_row(&self, key: &[u8], value: &[u8], row: &mut Vec<Datum>) -> Result<bool, SqlError> {
        let Path::Index {
            index, covering, ..
        } = &self.path
        else {
            self.decoder.decode_into(value, row)?;
            return Ok(true);
        };
        if !*covering {
            return Ok(false);
        }
        let values = self.index_values(key)?;
        let (n, pk) = (index.columns.len(), &values[index.columns.len()..]);
        row.clear();
        row.resize(self.def.columns.len(), Datum::Null);
        for (pos, v) in self
            .def
            .index_positions(index)
            .into_iter()
            .zip(&values[..n])
        {
            row[pos] = v.clone();
        }
        for (pos, v) in self.def.pk_positions().into_iter().zip(pk) {
            row[pos] = v.clone();
        }
        Ok(true)
    }

    /// The values of an index entry's key: the indexed columns, then the primary key.
    fn index_values(&self, key: &[u8]) -> Result<Vec<Datum>, SqlError> {
        let Path::Index { index, .. } = &self.path else {
            return Err(SqlError::Internal("not an index scan".into()));
        };
        let values = codec::index_key_values(key, self.def.id, index.id)?;
        if values.len() < index.columns.len() {
            return Err(SqlError::Internal(format!(
                "corrupt entry in index {}",
                index.name
            )));
        }
        Ok(values)
    }

    /// The row an index entry points at, read from the table.
    async fn fetched_row(&self, key: &[u8]) -> Result<Vec<Datum>, SqlError> {
        let Path::Index { index, .. } = &self.path else {
            return Err(SqlError::Internal("not an index scan".into()));
        };
        let values = self.index_values(key)?;
        let pk = &values[index.columns.len()..];
        match self.source.get(&Key::Row(self.def.id, pk).encode()).await? {
            Some(bytes) => Ok(self.decoder.decode(&bytes)?),
            None => Err(SqlError::Internal(format!(
                "index {} has an entry for a row that does not exist; run `strata sql check`",
                index.name
            ))),
        }
    }
}

/// Builds one batch from the entries a transaction lends to a scan.
struct BatchSink<'a> {
    scan: &'a Scan,
    builders: Vec<ColumnBuilder>,
    /// The row being decoded, reused.
    row: Vec<Datum>,
    /// The allocation of the row read in place ([`Scan::emit_stored`]), reused.
    values: Vec<DatumRef<'static>>,
    cap: usize,
    rows: usize,
    read: usize,
    error: Option<SqlError>,
    /// The transaction restarted a range read: the batch must be read again.
    redo: bool,
}

impl<'a> BatchSink<'a> {
    fn new(scan: &'a Scan, cap: usize) -> Self {
        BatchSink {
            scan,
            builders: scan.builders(cap),
            row: Vec::with_capacity(scan.def.columns.len() + 1),
            values: Vec::with_capacity(scan.def.columns.len()),
            cap,
            rows: 0,
            read: 0,
            error: None,
            redo: false,
        }
    }

    fn take(&mut self, key: &[u8], value: &[u8]) -> Result<(), SqlError> {
        if matches!(self.scan.path, Path::Rows { .. }) {
            let mut values = reuse(std::mem::take(&mut self.values));
            let passed = self
                .scan
                .emit_stored(key, value, &mut values, &mut self.builders);
            self.values = reuse(values);
            match passed? {
                Some(true) => self.rows += 1,
                Some(false) => {}
                // A row in the tuple format: decoded the older way.
                None => {
                    self.scan.decoder.decode_into(value, &mut self.row)?;
                    if self.scan.emit(key, &mut self.row, &mut self.builders)? {
                        self.rows += 1;
                    }
                }
            }
            return Ok(());
        }
        if !self.scan.lent_row(key, value, &mut self.row)? {
            return Err(SqlError::Internal(
                "an index scan lent an entry without its row".into(),
            ));
        }
        if self.scan.emit(key, &mut self.row, &mut self.builders)? {
            self.rows += 1;
        }
        Ok(())
    }
}

impl Visitor for BatchSink<'_> {
    fn visit(&mut self, key: &[u8], value: ValueRef<'_>) -> bool {
        if self.redo {
            return false;
        }
        self.read += 1;
        match self.take(key, value.data) {
            Ok(()) => self.rows < self.cap,
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

/// An empty vector of borrowed values that reuses `v`'s allocation for a new borrow (the
/// collect runs in place: both element types have one layout).
pub(crate) fn reuse<'b>(mut v: Vec<DatumRef<'_>>) -> Vec<DatumRef<'b>> {
    v.clear();
    v.into_iter().map(|_| DatumRef::Null).collect()
}
