//! `strata sql`: run SQL statements against a store from the command line, check indexes
//! against rows, and load CSV files in chunks.

use strata::Engine;
use strata_sql::{Datum, Output, Session};

use crate::progress::Progress;

async fn session(
    engine: std::sync::Arc<Engine>,
    database: Option<&str>,
) -> Result<Session, String> {
    let mut session = Session::new(engine);
    if let Some(db) = database {
        session
            .execute(&format!("USE \"{}\"", db.replace('"', "\"\"")))
            .await
            .map_err(|e| format!("ERROR {}: {e}", e.sqlstate()))?;
    }
    Ok(session)
}

/// `strata sql check`: every table's indexes against its rows; fails on any mismatch.
pub async fn check(engine: std::sync::Arc<Engine>, database: Option<&str>) -> Result<(), String> {
    let mut session = session(engine, database).await?;
    let reports = session
        .check()
        .await
        .map_err(|e| format!("ERROR {}: {e}", e.sqlstate()))?;
    let mut problems = 0;
    for r in &reports {
        println!(
            "{}: {} rows, {} index entries, {} problems",
            r.table,
            r.rows,
            r.entries,
            r.problems.len()
        );
        for p in &r.problems {
            println!("  {p}");
        }
        problems += r.problems.len();
    }
    if problems > 0 {
        return Err(format!("{problems} problems found"));
    }
    println!("{} tables checked, no problems", reports.len());
    Ok(())
}

/// Run each statement in order, printing what it returns; stop at the first error.
pub async fn execute(
    engine: std::sync::Arc<Engine>,
    database: Option<&str>,
    statements: &[String],
) -> Result<(), String> {
    let mut session = session(engine, database).await?;
    for sql in statements {
        match session.execute(sql).await {
            Ok(out) => print_output(out)?,
            Err(e) => return Err(format!("ERROR {}: {e}", e.sqlstate())),
        }
    }
    Ok(())
}

fn print_output(out: Output) -> Result<(), String> {
    match out {
        Output::Done => println!("OK"),
        Output::Affected { rows } => println!("{rows} row{}", if rows == 1 { "" } else { "s" }),
        Output::Rows(rows) => {
            let names = rows.column_names();
            let values = rows.rows().map_err(|e| e.to_string())?;
            print!("{}", render_table(&names, &values));
        }
    }
    Ok(())
}

/// An aligned text table, with a row count, as psql prints one: numbers right-aligned,
/// a cell of several lines spread over as many lines (EXPLAIN's plans), NULL as `null`.
pub fn render_table(names: &[String], rows: &[Vec<Datum>]) -> String {
    let cells: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|d| (!d.is_null()).then(|| d.to_string()))
                .collect()
        })
        .collect();
    render_cells(names, &cells, "")
}

/// [`render_table`] over text cells (`None` is NULL, shown as `null`).
pub fn render_cells(names: &[String], rows: &[Vec<Option<String>>], null: &str) -> String {
    let text = |c: &Option<String>| c.clone().unwrap_or_else(|| null.to_string());
    let numeric: Vec<bool> = (0..names.len())
        .map(|i| {
            let mut any = false;
            let all = rows
                .iter()
                .all(|r| match r.get(i).and_then(|c| c.as_deref()) {
                    Some(v) => {
                        any = true;
                        v.parse::<f64>().is_ok()
                    }
                    None => true,
                });
            any && all
        })
        .collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            for line in text(c).lines() {
                *w = (*w).max(line.chars().count());
            }
        }
    }
    let pad = |s: &str, w: usize, right: bool| {
        let n = s.chars().count();
        let fill = " ".repeat(w.saturating_sub(n));
        if right {
            format!(" {fill}{s} ")
        } else {
            format!(" {s}{fill} ")
        }
    };
    let mut out = String::new();
    let header: Vec<String> = names
        .iter()
        .zip(&widths)
        .map(|(n, w)| {
            let left = (w - n.chars().count()) / 2;
            pad(&format!("{}{n}", " ".repeat(left)), *w, false)
        })
        .collect();
    out.push_str(header.join("|").trim_end());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push('\n');
    for row in rows {
        let lines: Vec<Vec<String>> = row
            .iter()
            .map(|c| text(c).lines().map(str::to_string).collect())
            .collect();
        let height = lines.iter().map(|l| l.len()).max().unwrap_or(1).max(1);
        for k in 0..height {
            let cols: Vec<String> = lines
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (l, w))| pad(l.get(k).map(String::as_str).unwrap_or(""), *w, numeric[i]))
                .collect();
            out.push_str(cols.join("|").trim_end());
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

/// Which row of a chunk that failed as a whole is the culprit, and its own error: the rows
/// are inserted one by one in a transaction that is rolled back, so nothing changes.
async fn failing_row(
    session: &mut Session,
    table: &str,
    column_list: &str,
    chunk: &[Datum],
    width: usize,
) -> Option<(usize, strata_sql::SqlError)> {
    let placeholders: Vec<String> = (1..=width).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({column_list}) VALUES ({})",
        placeholders.join(",")
    );
    session.execute("BEGIN").await.ok()?;
    let mut found = None;
    for (i, row) in chunk.chunks(width).enumerate() {
        if let Err(e) = session.execute_with(&sql, row).await {
            found = Some((i, e));
            break;
        }
    }
    let _ = session.execute("ROLLBACK").await;
    found
}

/// How `strata sql import` reads its file.
pub struct ImportOptions {
    /// The first record names the columns (in any order, any subset of the table's).
    pub header: bool,
    pub delimiter: u8,
    /// A field equal to this text is NULL (default: the empty field).
    pub null: String,
    /// Rows per transaction (each chunk commits on its own).
    pub chunk_rows: usize,
    /// Data rows to skip first: resume an import that stopped after committing them.
    pub skip: u64,
}

/// A chunk also ends when its values reach this many bytes, far below the engine's
/// per-transaction limit even with index entries.
const CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// `strata sql import FILE --table T`: load a CSV file into an existing table in chunks, one
/// transaction per chunk, with a progress line. Values are converted to the column types
/// as SQL literals would be; a bad row stops the import with its line number, and the rows
/// committed before it stay (the message says how to resume).
pub async fn import(
    engine: std::sync::Arc<Engine>,
    database: Option<&str>,
    file: &std::path::Path,
    table: &str,
    opts: &ImportOptions,
) -> Result<(), String> {
    let sql_err = |e: strata_sql::SqlError| format!("ERROR {}: {e}", e.sqlstate());
    let mut session = session(engine, database).await?;
    let total = std::fs::metadata(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .len();
    let reader =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(opts.header)
        .delimiter(opts.delimiter)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, reader));
    let columns: Vec<String> = if opts.header {
        csv.headers()
            .map_err(|e| format!("{}: cannot read the header: {e}", file.display()))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect()
    } else {
        match session
            .execute(&format!("SELECT * FROM {table} LIMIT 0"))
            .await
            .map_err(sql_err)?
        {
            Output::Rows(rows) => rows.column_names(),
            _ => return Err(format!("{table} is not a table")),
        }
    };
    if columns.is_empty() {
        return Err("no columns to import".into());
    }
    let column_list = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let width = columns.len();
    let mut progress = Progress::new(format!("import {table}"), total, "bytes");
    let mut record = csv::StringRecord::new();
    let mut chunk: Vec<Datum> = Vec::new();
    let mut chunk_bytes = 0usize;
    let mut chunk_lines: Vec<u64> = Vec::new();
    let mut committed = 0u64;
    let mut seen = 0u64;
    let mut statements: std::collections::HashMap<usize, String> = Default::default();
    loop {
        let more = csv.read_record(&mut record).map_err(|e| {
            format!(
                "{}: {e}; {committed} rows were committed before it (resume with --skip {})",
                file.display(),
                opts.skip + committed
            )
        })?;
        if more {
            seen += 1;
            if seen <= opts.skip {
                continue;
            }
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            if record.len() != width {
                return Err(format!(
                    "{}:{line}: {} fields where {width} columns were expected; \
                     {committed} rows were committed before it (resume with --skip {})",
                    file.display(),
                    record.len(),
                    opts.skip + committed
                ));
            }
            chunk_lines.push(line);
            for field in record.iter() {
                chunk_bytes += field.len();
                chunk.push(if field == opts.null {
                    Datum::Null
                } else {
                    Datum::Text(field.to_string())
                });
            }
        }
        let rows = chunk.len() / width;
        if rows > 0 && (!more || rows >= opts.chunk_rows || chunk_bytes >= CHUNK_BYTES) {
            let sql = statements.entry(rows).or_insert_with(|| {
                let mut sql = format!("INSERT INTO {table} ({column_list}) VALUES ");
                for r in 0..rows {
                    if r > 0 {
                        sql.push(',');
                    }
                    sql.push('(');
                    for c in 0..width {
                        if c > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!("${}", r * width + c + 1));
                    }
                    sql.push(')');
                }
                sql
            });
            if let Err(e) = session.execute_with(sql, &chunk).await {
                let (line, e) =
                    match failing_row(&mut session, table, &column_list, &chunk, width).await {
                        Some((row, row_error)) => (chunk_lines[row], row_error),
                        None => (chunk_lines[0], e),
                    };
                return Err(format!(
                    "ERROR {}: {e}\n  at line {line} of {}; {committed} rows were committed \
                     before its chunk (resume with --skip {})",
                    e.sqlstate(),
                    file.display(),
                    opts.skip + committed
                ));
            }
            committed += rows as u64;
            chunk.clear();
            chunk_lines.clear();
            chunk_bytes = 0;
            progress.note(format!("{committed} rows"));
            progress.set(csv.position().byte().min(total));
        }
        if !more {
            break;
        }
    }
    progress.set(total);
    println!("{committed} rows imported into {table}");
    Ok(())
}
