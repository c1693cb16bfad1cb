//! `strata-conformance`: run the suites over the chosen backends and print the matrix.
//!
//! After the case suites comes the `sqllogictest` suite: SQLite's SQL logic test corpus and
//! our own `.slt` files through the SQL layer (see `strata_conformance::sql_logic`), counted
//! in records rather than cases. `--slt PATH...` runs only the named files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_conformance::sql_logic::{self, FileReport, SltFile, Tally};
use strata_conformance::{run_suite, suites, BackendKind, Outcome};

/// The name of the suite of SQL logic test files.
const SLT_SUITE: &str = "sqllogictest";

#[derive(Parser)]
#[command(
    name = "strata-conformance",
    about = "Run Strata's conformance suites over its backends"
)]
struct Cli {
    /// Backends to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory,redb,sqlite")]
    backend: Vec<String>,
    /// Suites to run, comma-separated (default: all, `sqllogictest` last); `-NAME` leaves a
    /// suite out (`--suite=-sqllogictest`).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    suite: Vec<String>,
    /// Run only these SQL logic test files (directories: every `.test` and `.slt` file in
    /// them), one line per file and backend, instead of the suites.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    slt: Vec<PathBuf>,
    /// List the suites and their cases, then exit.
    #[arg(long)]
    list: bool,
    /// Print every case, not only failures.
    #[arg(long, short)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Subcommand)]
enum Internal {
    /// (internal) The child of the dynamodb suite that dies half-way through a large commit.
    #[command(hide = true)]
    LargeCommit {
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) The child of the dynamodb suite that increments shared counters.
    #[command(hide = true)]
    Increment {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u64,
    },
    /// (internal) A child of the dynamodb suite that runs SQL transfers on a shared table.
    #[command(hide = true)]
    SqlTransfers {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        process: u64,
        #[arg(long)]
        count: u64,
    },
    /// (internal) A client process of the linearizability suite.
    #[command(hide = true)]
    LinearizabilityClient {
        #[arg(long)]
        role: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        process: u64,
        #[arg(long)]
        ops: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (internal) The child of the sql_crash suite: one large INSERT, killed half-way.
    #[command(hide = true)]
    SqlBulkWriter {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) A client process of the typed_sync suite: a replica driven over stdin.
    #[command(hide = true)]
    TypedClient {
        #[arg(long)]
        replica: PathBuf,
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
    },
    /// (internal) The child process of the crash suite: commit until killed.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        round: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning the deeply nested expressions of the generated SQL logic tests recurses
        // deeper than the default 2 MiB in unoptimized builds; an overflow aborts the run.
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let child = match &cli.command {
        Some(Internal::LargeCommit { dir }) => {
            Some(rt.block_on(suites::dynamodb::die_in_large_commit(dir)))
        }
        Some(Internal::Increment { dir, count }) => {
            Some(rt.block_on(suites::dynamodb::increment(dir, *count)))
        }
        Some(Internal::SqlTransfers {
            dir,
            process,
            count,
        }) => Some(rt.block_on(suites::dynamodb::sql_transfers(dir, *process, *count))),
        Some(Internal::LinearizabilityClient {
            role,
            dir,
            process,
            ops,
            out,
        }) => Some(rt.block_on(suites::linearizability::child(
            role,
            dir,
            *process,
            *ops,
            out.as_deref(),
        ))),
        Some(Internal::TypedClient {
            replica,
            server,
            token,
        }) => Some(rt.block_on(suites::typed_sync::client(replica, server, token))),
        _ => None,
    };
    if let Some(r) = child {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Internal::SqlBulkWriter { backend, dir }) = &cli.command {
        let Some(kind) = BackendKind::parse(backend) else {
            eprintln!("unknown backend {backend}");
            return ExitCode::from(2);
        };
        return match rt.block_on(suites::sql_crash::sql_bulk_writer(kind, dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sql-bulk-writer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Internal::CrashWriter {
        backend,
        dir,
        round,
    }) = cli.command
    {
        let Some(kind) = BackendKind::parse(&backend) else {
            eprintln!("unknown backend {backend}");
            return ExitCode::from(2);
        };
        return match rt.block_on(suites::crash::crash_writer(kind, &dir, round)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash-writer: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let all = suites::all();
    if cli.list {
        for s in &all {
            println!(
                "{}{}",
                s.name,
                if s.needs_persistence {
                    " (persistent backends)"
                } else {
                    ""
                }
            );
            for c in &s.cases {
                println!("  {}", c.name);
            }
        }
        list_slt_suite();
        return ExitCode::SUCCESS;
    }
    let mut kinds = Vec::new();
    for b in &cli.backend {
        match BackendKind::parse(b) {
            Some(k) => kinds.push(k),
            None => {
                let known: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                eprintln!("unknown backend {b:?}; known: {}", known.join(", "));
                return ExitCode::from(2);
            }
        }
    }
    let (excluded, included): (Vec<&str>, Vec<&str>) = cli
        .suite
        .iter()
        .map(|n| n.as_str())
        .partition(|n| n.starts_with('-'));
    let excluded: Vec<&str> = excluded.iter().map(|n| &n[1..]).collect();
    for name in included.iter().chain(&excluded) {
        if *name != SLT_SUITE && !all.iter().any(|s| s.name == *name) {
            let mut known: Vec<&str> = all.iter().map(|s| s.name).collect();
            known.push(SLT_SUITE);
            eprintln!("unknown suite {name:?}; known: {}", known.join(", "));
            return ExitCode::from(2);
        }
    }
    let chosen: Vec<&suites_t::Suite> = if included.is_empty() {
        all.iter().collect()
    } else {
        included
            .iter()
            .filter_map(|name| all.iter().find(|s| s.name == *name))
            .collect()
    };
    let chosen: Vec<&suites_t::Suite> = chosen
        .into_iter()
        .filter(|s| !excluded.contains(&s.name))
        .collect();
    let run_slt = !cli.slt.is_empty()
        || ((included.is_empty() || included.contains(&SLT_SUITE))
            && !excluded.contains(&SLT_SUITE));
    let exe = std::env::current_exe().ok();
    // A DynamoDB-compatible endpoint: the one named in the environment, or our own emulator.
    let mut emulator = None;
    if kinds.contains(&BackendKind::Dynamodb)
        && std::env::var_os(strata_conformance::DYNAMODB_ENV).is_none()
    {
        match strata_conformance::start_dynamodb_emulator() {
            Ok(child) => emulator = Some(child),
            Err(e) => eprintln!("no DynamoDB emulator: {e}"),
        }
    }
    let stop_emulator = |emulator: Option<std::process::Child>| {
        if let Some(mut child) = emulator {
            let _ = child.kill();
            let _ = child.wait();
        }
    };

    if !cli.slt.is_empty() {
        let code = run_named_slt(&rt, &cli.slt, &kinds, cli.verbose);
        stop_emulator(emulator);
        return code;
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut cells: Vec<(BackendKind, &str, String)> = Vec::new();
    for suite in &chosen {
        for &kind in &kinds {
            if !suite.applies_to(kind) {
                cells.push((kind, suite.name, "n/a".into()));
                continue;
            }
            eprintln!("running {} on {} ...", suite.name, kind.name());
            let started = std::time::Instant::now();
            let got = rt.block_on(run_suite(kind, suite, exe.clone()));
            eprintln!(
                "  {} on {}: {:.1}s",
                suite.name,
                kind.name(),
                started.elapsed().as_secs_f64()
            );
            let passed = got.iter().filter(|o| o.result.is_ok()).count();
            let skipped = got.iter().filter(|o| is_skip(o)).count();
            let cell = if skipped == got.len() {
                "skip".to_string()
            } else {
                format!("{passed}/{}", got.len() - skipped)
            };
            cells.push((kind, suite.name, cell));
            for o in &got {
                match &o.result {
                    Ok(()) if cli.verbose => {
                        eprintln!("  ok   {}/{} ({:.2?})", o.suite, o.case, o.elapsed)
                    }
                    Err(e) if is_skip(o) => eprintln!(
                        "  skip {}/{}/{}: {}",
                        kind.name(),
                        o.suite,
                        o.case,
                        e[5..].trim()
                    ),
                    Err(e) => eprintln!("  FAIL {}/{}/{}: {e}", kind.name(), o.suite, o.case),
                    _ => {}
                }
            }
            outcomes.extend(got);
        }
    }

    // The SQL logic test files, counted in records.
    let mut records = Tally::default();
    let mut failed_files: Vec<FileReport> = Vec::new();
    if run_slt {
        let corpus = sql_logic::corpus_dir();
        if !corpus.is_dir() {
            eprintln!(
                "skip {SLT_SUITE} corpus: no directory {} (set STRATA_SLT_DIR to its place)",
                corpus.display()
            );
        }
        for &kind in &kinds {
            let files = match sql_logic::suite_files(kind, &corpus, &sql_logic::own_dir()) {
                Ok(files) => files,
                Err(e) => {
                    eprintln!(
                        "  FAIL {}/{SLT_SUITE}: cannot list the files: {e}",
                        kind.name()
                    );
                    records.failed += 1;
                    cells.push((kind, SLT_SUITE, "error".into()));
                    continue;
                }
            };
            if files.is_empty() {
                cells.push((kind, SLT_SUITE, "skip".into()));
                continue;
            }
            let subset = match kind {
                BackendKind::Memory => "",
                BackendKind::Dynamodb => {
                    " (a subset of the corpus, see sql_logic::DYNAMODB_SUBSET)"
                }
                _ => " (a subset of the corpus, see sql_logic::EMBEDDED_SUBSET)",
            };
            eprintln!(
                "running {SLT_SUITE} on {}: {} files{subset} ...",
                kind.name(),
                files.len()
            );
            let started = std::time::Instant::now();
            let reports = rt.block_on(sql_logic::run_files(kind, &files, |r| {
                eprintln!("  {}", r.summary());
                if cli.verbose {
                    print_failures(r, &mut std::io::stderr());
                }
            }));
            eprintln!(
                "  {SLT_SUITE} on {}: {:.1}s",
                kind.name(),
                started.elapsed().as_secs_f64()
            );
            let mut tally = Tally::default();
            for r in reports {
                tally.add(r.tally);
                if r.tally.failed > 0 {
                    failed_files.push(r);
                }
            }
            let star = if subset.is_empty() { "" } else { "*" };
            cells.push((
                kind,
                SLT_SUITE,
                format!("{}/{}{star}", tally.passed, tally.passed + tally.failed),
            ));
            records.add(tally);
        }
    }

    let mut rows: Vec<&str> = chosen.iter().map(|s| s.name).collect();
    if run_slt {
        rows.push(SLT_SUITE);
    }
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(5).max(5);
    let cell_width = cells.iter().map(|c| c.2.len()).max().unwrap_or(8).max(8);
    print!("{:width$}", "suite");
    for k in &kinds {
        print!("  {:>cell_width$}", k.name());
    }
    println!();
    for row in &rows {
        print!("{row:width$}");
        for k in &kinds {
            let cell = cells
                .iter()
                .find(|(kk, s, _)| kk == k && s == row)
                .map(|c| c.2.as_str())
                .unwrap_or("");
            print!("  {cell:>cell_width$}");
        }
        println!();
    }
    if run_slt && kinds.iter().any(|k| *k != BackendKind::Memory) {
        println!(
            "* {SLT_SUITE} runs the whole corpus on memory; redb and sqlite run {}; dynamodb runs {}",
            sql_logic::EMBEDDED_SUBSET.join(", "),
            sql_logic::DYNAMODB_SUBSET.join(", ")
        );
    }
    stop_emulator(emulator);
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.result.is_err() && !is_skip(o))
        .collect();
    let skipped = outcomes.iter().filter(|o| is_skip(o)).count();
    if !failed.is_empty() || !failed_files.is_empty() {
        println!();
        println!("failures:");
        for o in &failed {
            println!(
                "  {}/{}/{}: {}",
                o.backend.name(),
                o.suite,
                o.case,
                o.result.as_ref().err().map(String::as_str).unwrap_or("")
            );
        }
        for r in &failed_files {
            println!("  {}/{SLT_SUITE}/{}", r.backend.name(), failed_file_line(r));
        }
    }
    println!();
    let passed = outcomes.len() - failed.len() - skipped;
    if run_slt {
        if !outcomes.is_empty() {
            println!(
                "cases: {passed} passed, {} failed, {skipped} skipped",
                failed.len()
            );
        }
        println!("{SLT_SUITE} records: {records}");
        let total = Tally {
            passed: passed as u64 + records.passed,
            failed: failed.len() as u64 + records.failed,
            skipped: skipped as u64 + records.skipped,
            differ: records.differ,
        };
        print_total(total);
    } else if skipped > 0 {
        println!(
            "{passed} passed, {} failed, {skipped} skipped",
            failed.len()
        );
    } else {
        println!("{passed} passed, {} failed", failed.len());
    }
    if failed.is_empty() && records.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--slt PATH...`: run the named files on every chosen backend.
fn run_named_slt(
    rt: &tokio::runtime::Runtime,
    paths: &[PathBuf],
    kinds: &[BackendKind],
    verbose: bool,
) -> ExitCode {
    let files = match sql_logic::named_files(paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        eprintln!("no .test or .slt files in the named paths");
        return ExitCode::from(2);
    }
    let mut records = Tally::default();
    let mut failed_files = Vec::new();
    for &kind in kinds {
        let reports = rt.block_on(sql_logic::run_files(kind, &files, |r| {
            println!("{}", r.summary());
            if verbose {
                print_failures(r, &mut std::io::stdout());
            }
        }));
        for r in reports {
            records.add(r.tally);
            if r.tally.failed > 0 {
                failed_files.push(r);
            }
        }
    }
    if !failed_files.is_empty() {
        println!();
        println!("failures:");
        for r in &failed_files {
            println!("  {}: {}", r.backend.name(), failed_file_line(r));
        }
    }
    println!();
    println!("{SLT_SUITE} records: {records}");
    print_total(records);
    if records.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--list`: the sqllogictest suite and its files.
fn list_slt_suite() {
    let corpus = sql_logic::corpus_dir();
    let own = sql_logic::own_dir();
    println!("{SLT_SUITE} (SQL logic test files, counted in records; subsets on the persistent backends)");
    if !corpus.is_dir() {
        println!("  (no corpus at {})", corpus.display());
    }
    match sql_logic::suite_files(BackendKind::Memory, &corpus, &own) {
        Ok(files) => {
            for SltFile { name, .. } in files {
                println!("  {name}");
            }
        }
        Err(e) => println!("  (cannot list: {e})"),
    }
}

/// The kept failures of a file, each with its SQL and difference.
fn print_failures(report: &FileReport, out: &mut dyn std::io::Write) {
    for f in &report.failures {
        let _ = writeln!(out, "    FAIL {}:{}", report.name, f.line);
        for line in f.message.trim_end().lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
    let more = report
        .tally
        .failed
        .saturating_sub(report.failures.len() as u64);
    if more > 0 {
        let _ = writeln!(out, "    ... and {more} more failures in {}", report.name);
    }
}

/// For a file with failures: its name, how many, and the first one's line.
fn failed_file_line(r: &FileReport) -> String {
    let first = r
        .failures
        .first()
        .map(|f| format!(", first at {}:{}", short_name(&r.name), f.line))
        .unwrap_or_default();
    format!(
        "{}: {} of {} records failed{first}",
        r.name,
        r.tally.failed,
        r.tally.passed + r.tally.failed
    )
}

fn short_name(name: &str) -> &str {
    Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name)
}

/// The closing line: `N passed, M failed[, K skipped]`.
fn print_total(t: Tally) {
    if t.skipped > 0 {
        println!(
            "{} passed, {} failed, {} skipped",
            t.passed, t.failed, t.skipped
        );
    } else {
        println!("{} passed, {} failed", t.passed, t.failed);
    }
}

/// A case that could not run here and said why (`Err("SKIP: ...")`).
fn is_skip(o: &Outcome) -> bool {
    matches!(&o.result, Err(e) if e.starts_with("SKIP:"))
}

mod suites_t {
    pub use strata_conformance::Suite;
}
