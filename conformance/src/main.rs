//! `strata-conformance`: run the suites over the chosen backends and print the matrix.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_conformance::{run_suite, suites, BackendKind, Outcome};

#[derive(Parser)]
#[command(
    name = "strata-conformance",
    about = "Run Strata's conformance suites over its backends"
)]
struct Cli {
    /// Backends to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory,redb,sqlite")]
    backend: Vec<String>,
    /// Suites to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    suite: Vec<String>,
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
    let chosen: Vec<&suites_t::Suite> = if cli.suite.is_empty() {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &cli.suite {
            match all.iter().find(|s| s.name == name) {
                Some(s) => v.push(s),
                None => {
                    let known: Vec<&str> = all.iter().map(|s| s.name).collect();
                    eprintln!("unknown suite {name:?}; known: {}", known.join(", "));
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
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
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut cells: Vec<(BackendKind, &str, String)> = Vec::new();
    for suite in &chosen {
        for &kind in &kinds {
            if !suite.applies_to(kind) {
                cells.push((kind, suite.name, "n/a".into()));
                continue;
            }
            eprintln!("running {} on {} ...", suite.name, kind.name());
            let got = rt.block_on(run_suite(kind, suite, exe.clone()));
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

    let width = chosen
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    print!("{:width$}", "suite");
    for k in &kinds {
        print!("  {:>8}", k.name());
    }
    println!();
    for suite in &chosen {
        print!("{:width$}", suite.name);
        for k in &kinds {
            let cell = cells
                .iter()
                .find(|(kk, s, _)| kk == k && *s == suite.name)
                .map(|c| c.2.as_str())
                .unwrap_or("");
            print!("  {cell:>8}");
        }
        println!();
    }
    if let Some(mut child) = emulator {
        let _ = child.kill();
        let _ = child.wait();
    }
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.result.is_err() && !is_skip(o))
        .collect();
    let skipped = outcomes.iter().filter(|o| is_skip(o)).count();
    if !failed.is_empty() {
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
    }
    println!();
    let passed = outcomes.len() - failed.len() - skipped;
    if skipped > 0 {
        println!(
            "{passed} passed, {} failed, {skipped} skipped",
            failed.len()
        );
    } else {
        println!("{passed} passed, {} failed", failed.len());
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A case that could not run here and said why (`Err("SKIP: ...")`).
fn is_skip(o: &Outcome) -> bool {
    matches!(&o.result, Err(e) if e.starts_with("SKIP:"))
}

mod suites_t {
    pub use strata_conformance::Suite;
}
