//! `strata sql`: run SQL statements against a store from the command line.

use strata::Engine;
use strata_sql::{Datum, Output, Session};

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

/// An aligned text table, with a row count, as psql prints one.
pub fn render_table(names: &[String], rows: &[Vec<Datum>]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|d| {
                    if d.is_null() {
                        String::new()
                    } else {
                        d.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cols: Vec<String>| cols.join("|");
    out.push_str(
        line(
            names
                .iter()
                .zip(&widths)
                .map(|(n, w)| format!(" {n:w$} "))
                .collect(),
        )
        .trim_end(),
    );
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push('\n');
    for row in &cells {
        out.push_str(
            line(
                row.iter()
                    .zip(&widths)
                    .map(|(c, w)| format!(" {c:w$} "))
                    .collect(),
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}
