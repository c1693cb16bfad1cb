//! The `strata` command: manage databases and keys in a store.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use strata::engine::{
    AtomicWrite, DatabaseOptions, Durability, Encoding, Entry, Mutation, MutationKind, ReadAt,
    ReadRange, Value,
};
use strata::{Engine, EngineConfig, StoreUrl, DEFAULT_STORE};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: one storage engine with many faces"
)]
struct Cli {
    /// Where the data lives: memory:, redb:<dir>, sqlite:<dir> or dynamodb:<table>?endpoint=<url>&region=<r>.
    /// (Default: the [store] of db.toml for serve and bootstrap, else redb:./strata-data.)
    #[arg(long, global = true, env = "STRATA_STORE")]
    store: Option<String>,
    /// Create the DynamoDB table of a dynamodb: store if it does not exist.
    #[arg(long, global = true)]
    create_table: bool,
    /// Serve this SQLite file's directory (drop-in flag of the reference KV Connect server).
    #[arg(long, global = true, hide = true)]
    sqlite_path: Option<std::path::PathBuf>,
    /// Where a server keeps its pid and log files (default: the store's data directory).
    #[arg(long, global = true, env = "STRATA_RUN_DIR")]
    run_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[cfg(feature = "sql")]
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SqlArgs {
    /// A statement (or several separated by `;`) to run; repeat for more. Without any,
    /// `strata sql` is an interactive shell.
    #[arg(short = 'e', long = "execute")]
    execute: Vec<String>,
    /// Connect to a server instead of opening the store: postgres://user:password@host:port/db
    /// for the PostgreSQL protocol, or http://host:4200 for a Strata server's REST API
    /// (with --database, and STRATA_ACCESS_TOKEN if it needs one).
    #[arg(long, env = "STRATA_SQL_URL")]
    url: Option<String>,
    /// The database unqualified names refer to (default: `default`).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    action: Option<SqlAction>,
}

#[cfg(feature = "sql")]
#[derive(Subcommand)]
enum SqlAction {
    /// Verify that every index entry matches its row and every row has its index entries.
    Check,
    /// Load a CSV file into an existing table, one transaction per chunk, with progress.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// The table to load (`t` or `db.t`).
        #[arg(long)]
        table: String,
        /// The first line names the columns; without it, fields fill the table's columns
        /// in order.
        #[arg(long)]
        header: bool,
        /// The field separator (one character).
        #[arg(long, default_value = ",")]
        delimiter: char,
        /// The field text that means NULL.
        #[arg(long, default_value = "")]
        null: String,
        /// Rows per transaction.
        #[arg(long, default_value_t = 1000)]
        chunk_rows: usize,
        /// Skip this many data rows first (resume an interrupted import).
        #[arg(long, default_value_t = 0)]
        skip: u64,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Serve the frontends over the store: KV Connect on 127.0.0.1:4512, PostgreSQL on
    /// 127.0.0.1:5433 and the REST API on 127.0.0.1:4200.
    #[cfg(feature = "kv-connect")]
    Serve(Box<ServeArgs>),
    /// Whether a server is running from the data directory, where it listens, and whether
    /// its REST API answers (exit status 3 when none is running).
    Status,
    /// Stop the server running from the data directory: it finishes requests in flight.
    Stop {
        /// How long to wait for it to exit, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print the log of a server started with `serve --detach`.
    Logs {
        /// Go on printing what the server writes until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        lines: Option<usize>,
    },
    /// Create, list and drop databases (of the store, or of a running server with --url).
    Db {
        /// Manage the databases of the server whose REST API is at this URL
        /// (http://host:4200), sending STRATA_ACCESS_TOKEN if set, instead of opening the store.
        #[cfg(feature = "rest")]
        #[arg(long, env = "STRATA_URL")]
        url: Option<String>,
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Read and write keys (printable UTF-8 keys).
    #[command(subcommand)]
    Kv(KvCommand),
    /// Copy one database (--database) or all of them to another store, verified.
    Copy {
        /// The source store URL.
        src: String,
        /// The target store URL.
        dst: String,
        #[arg(long)]
        database: Option<String>,
        /// Replace target databases that are not empty.
        #[arg(long)]
        overwrite: bool,
    },
    /// Run SQL statements: `strata sql -e "SELECT 1"`.
    #[cfg(feature = "sql")]
    Sql(SqlArgs),
    /// Bring data in from another system.
    #[cfg(feature = "sqlite")]
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write a commented starter db.toml (databases, tables, indexes, addresses, auth).
    #[cfg(feature = "rest")]
    Init {
        /// Where to write it.
        #[arg(default_value = "db.toml")]
        path: std::path::PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Create the databases, tables and indexes db.toml declares, without serving.
    #[cfg(feature = "rest")]
    Bootstrap {
        /// The configuration file (default: ./db.toml, then ~/.config/strata/db.toml).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Look into typed trees without their record types.
    #[cfg(feature = "typed")]
    #[command(subcommand)]
    Typed(TypedCommand),
    /// Form and change a replicated cluster of `strata serve --cluster` nodes, and see its
    /// state.
    #[cfg(feature = "replication")]
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[cfg(feature = "typed")]
#[derive(Subcommand)]
enum TypedCommand {
    /// Every tree: records, released revisions, schema versions, size, check-outs.
    Trees {
        #[arg(long, default_value = "typed")]
        db: String,
    },
    /// A tree's records (or one record's revisions): schema version, state, size, who holds
    /// the check-out, and the value as JSON (read through the schema stored for its
    /// version). One JSON object per line.
    Show {
        tree: String,
        /// Only this record's revisions.
        id: Option<u64>,
        #[arg(long, default_value = "typed")]
        db: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Change a record's value, checked against the schema stored for its version. Without
    /// --value or --file, opens $VISUAL or $EDITOR on the value as JSON.
    Edit {
        tree: String,
        /// The record: ID (its latest revision) or ID@REVISION.
        key: String,
        /// The new value, as JSON (as `show` prints it).
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        /// Read the new value, as JSON, from this file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Who edits: a record checked out by someone else is refused.
        #[arg(long, default_value = "strata-cli")]
        user: String,
        /// Edit a tree that keeps index entries anyway (rebuild its indexes after).
        #[arg(long)]
        stale_indexes: bool,
        #[arg(long, default_value = "typed")]
        db: String,
    },
    /// Rewrite a tree's records written at earlier schema versions at the newest stored one
    /// (or --to), through the upgrades the versions declare (`#[record(..., upgrade)]`),
    /// with progress. Refused, with nothing written, where a step is the application's code.
    Migrate {
        tree: String,
        /// The schema version to migrate to (default: the newest stored).
        #[arg(long)]
        to: Option<u32>,
        /// Migrate a tree that keeps index entries anyway (rebuild its indexes after).
        #[arg(long)]
        stale_indexes: bool,
        #[arg(long, default_value = "typed")]
        db: String,
    },
    /// The schema stored for a tree at a schema version (the newest without --version), as
    /// JSON.
    Schema {
        tree: String,
        #[arg(long)]
        version: Option<u32>,
        #[arg(long, default_value = "typed")]
        db: String,
    },
}

#[cfg(feature = "sqlite")]
#[derive(Subcommand)]
enum ImportCommand {
    /// Migrate a database file written by the reference KV Connect server (denokv).
    Denokv {
        /// The denokv SQLite file (its --sqlite-path).
        file: std::path::PathBuf,
        /// The Strata database to create.
        #[arg(long, default_value = "default")]
        db: String,
    },
}

#[cfg(feature = "kv-connect")]
#[derive(clap::Args)]
struct ServeArgs {
    /// Run in the background, with the pid and log files (strata.pid, strata.log) in the
    /// data directory; `strata status`, `strata logs` and `strata stop` find it there.
    #[arg(long)]
    detach: bool,
    /// The configuration file to bootstrap from and take defaults from (default: ./db.toml,
    /// then ~/.config/strata/db.toml, if present).
    #[cfg(feature = "rest")]
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Address of the KV Connect server (port 0 picks a free port) [default: 127.0.0.1:4512].
    #[arg(long = "kv-connect", visible_alias = "addr")]
    kv_connect: Option<String>,
    /// The token clients must send (also STRATA_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN).
    #[arg(long, env = "STRATA_ACCESS_TOKEN")]
    access_token: Option<String>,
    /// Serve without authentication (anyone who can reach the port can read and write).
    #[arg(long, conflicts_with = "access_token")]
    no_auth: bool,
    /// Create a database on its first request instead of answering 404.
    #[arg(long)]
    create_databases: bool,
    /// POST every queue message to this URL; a 2xx answer acknowledges it.
    #[arg(long)]
    queue_push: Option<String>,
    /// Address of the PostgreSQL wire-protocol server (port 0 picks a free port)
    /// [default: 127.0.0.1:5433].
    #[cfg(feature = "sql")]
    #[arg(long)]
    pgwire: Option<String>,
    /// Do not serve the PostgreSQL wire protocol.
    #[cfg(feature = "sql")]
    #[arg(long, conflicts_with = "pgwire")]
    no_pgwire: bool,
    /// How PostgreSQL clients send the access token: scram (SCRAM-SHA-256, the token never
    /// crosses the wire) or password (cleartext; use it with TLS).
    #[cfg(feature = "sql")]
    #[arg(long, value_enum, default_value = "scram")]
    pg_auth: PgAuthArg,
    /// Memory that column copies of tables may take, in MiB over all databases (0: none):
    /// a full scan repeated over a table nobody wrote since reads its copy, not the store.
    #[cfg(feature = "sql")]
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    sql_column_copies: usize,
    /// PEM certificate chain for TLS on the PostgreSQL port (with --tls-key).
    #[cfg(feature = "sql")]
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[cfg(feature = "sql")]
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Address of the REST API (port 0 picks a free port) [default: 127.0.0.1:4200].
    #[cfg(feature = "rest")]
    #[arg(long)]
    rest: Option<String>,
    /// Do not serve the REST API.
    #[cfg(feature = "rest")]
    #[arg(long, conflicts_with = "rest")]
    no_rest: bool,
    /// Roll back a transaction opened over REST after this many seconds without a request.
    #[cfg(feature = "rest")]
    #[arg(long, default_value_t = 30)]
    rest_transaction_timeout: u64,
    /// Serve typed KV sync (gRPC) for replicas on this address (port 0 picks a free port).
    #[cfg(feature = "typed")]
    #[arg(long, requires = "typed_tokens")]
    typed: Option<String>,
    /// Who may sync typed trees: USER:TOKEN, repeated or comma-separated (also
    /// STRATA_TYPED_TOKENS).
    #[cfg(feature = "typed")]
    #[arg(
        long = "typed-token",
        env = "STRATA_TYPED_TOKENS",
        value_delimiter = ','
    )]
    typed_tokens: Vec<String>,
    /// The database typed trees are served from.
    #[cfg(feature = "typed")]
    #[arg(long, default_value = "typed")]
    typed_database: String,
    #[cfg(feature = "replication")]
    #[command(flatten)]
    node: cluster::NodeArgs,
}

#[cfg(feature = "sql")]
#[derive(Clone, Copy, ValueEnum)]
enum PgAuthArg {
    Scram,
    Password,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Sync,
    Async,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create a database.
    Create {
        name: String,
        /// sync: a commit returns once it is on disk; async: synced later.
        #[arg(long, value_enum, default_value = "sync")]
        durability: DurabilityArg,
        /// How long older versions stay readable, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        history_retention_ms: u64,
    },
    /// List databases.
    List,
    /// Drop a database and all its data.
    Drop { name: String },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print a key's value.
    Get {
        key: String,
        #[arg(long, default_value = "default")]
        db: String,
    },
    /// Set a key (the database is created if missing).
    Set {
        key: String,
        value: String,
        /// Store the value as an unsigned 64-bit integer.
        #[arg(long)]
        u64: bool,
        /// Delete the key after this many milliseconds.
        #[arg(long)]
        expire_in_ms: Option<u64>,
        #[arg(long, default_value = "default")]
        db: String,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long, default_value = "default")]
        db: String,
    },
    /// List keys starting with a prefix, with their values.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        reverse: bool,
        #[arg(long, default_value = "default")]
        db: String,
    },
}

// A server allocates and frees many small buffers per request; mimalloc does that far
// faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "replication")]
mod cluster;
mod copy;
mod daemon;
#[cfg(feature = "sqlite")]
mod import;
mod progress;
#[cfg(feature = "sql")]
mod repl;
#[cfg(feature = "sql")]
mod sql;

type CliResult = Result<(), String>;

fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_string(),
        _ => bytes.iter().map(|b| format!("\\x{b:02x}")).collect(),
    }
}

fn show_value(v: &Value) -> String {
    match v.encoding {
        Encoding::U64 => v
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "<malformed u64>".into()),
        Encoding::Bytes => printable(&v.data),
        Encoding::V8 => format!("<v8 {} bytes>", v.data.len()),
        Encoding::Custom(t) => format!("<encoding {t}, {} bytes>", v.data.len()),
    }
}

fn show_entry(e: &Entry) -> String {
    format!("{}\t{}", printable(&e.key), show_value(&e.value))
}

async fn run(cli: Cli) -> CliResult {
    #[cfg(feature = "sql")]
    if let Command::Sql(SqlArgs {
        url: Some(url),
        execute,
        action: None,
        database,
    }) = &cli.command
    {
        let repl = if url.starts_with("http://") || url.starts_with("https://") {
            #[cfg(feature = "rest")]
            {
                let token = std::env::var("STRATA_ACCESS_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty());
                repl::Repl::rest(url, database.as_deref(), token).await?
            }
            #[cfg(not(feature = "rest"))]
            return Err(
                "this build of strata has no REST client; rebuild with `--features rest`".into(),
            );
        } else {
            repl::Repl::remote(url).await?
        };
        return if execute.is_empty() {
            repl.run().await
        } else {
            repl.execute(execute).await
        };
    }
    #[cfg(feature = "rest")]
    if let Command::Init { path, force } = &cli.command {
        return init_config(path, *force);
    }
    #[cfg(feature = "replication")]
    if let Command::Cluster(command) = cli.command {
        return cluster::run(command).await;
    }
    #[cfg(feature = "rest")]
    if let Command::Db {
        url: Some(url),
        command,
    } = &cli.command
    {
        return remote_db(url, command).await;
    }
    let file = config_file(&cli.command)?;
    let store = match (&cli.sqlite_path, &cli.store) {
        (Some(path), _) => sqlite_path_store(path)?,
        (None, Some(store)) => store.clone(),
        (None, None) => file
            .store
            .clone()
            .unwrap_or_else(|| DEFAULT_STORE.to_string()),
    };
    let url: StoreUrl = store.parse().map_err(|e| format!("{e}"))?;
    match &cli.command {
        Command::Status => {
            return status(&daemon::RunDir::require(cli.run_dir.as_deref(), &url)?).await
        }
        Command::Stop { timeout } => {
            let run = daemon::RunDir::require(cli.run_dir.as_deref(), &url)?;
            return match run.stop(std::time::Duration::from_secs(*timeout))? {
                Some(pid) => {
                    eprintln!("stopped the server (pid {pid})");
                    Ok(())
                }
                None => {
                    eprintln!("no server is running");
                    Ok(())
                }
            };
        }
        Command::Logs { follow, lines } => {
            return daemon::RunDir::require(cli.run_dir.as_deref(), &url)?
                .print_log(*lines, *follow)
        }
        #[cfg(feature = "kv-connect")]
        Command::Serve(args) if args.detach => {
            let run = daemon::RunDir::require(cli.run_dir.as_deref(), &url)?;
            let info = run.detach()?;
            println!("strata is serving in the background (pid {})", info.pid);
            print_addresses(&info);
            println!("  log         {}", run.log_file().display());
            return Ok(());
        }
        _ => {}
    }
    let run_dir = daemon::RunDir::resolve(cli.run_dir.as_deref(), &url);
    #[cfg(feature = "kv-connect")]
    if let (Command::Serve(_), Some(run)) = (&cli.command, &run_dir) {
        run.ensure_free()?;
    }
    let backend = url
        .open(cli.create_table)
        .await
        .map_err(|e| e.to_string())?;
    if let Command::Copy {
        src,
        dst,
        database,
        overwrite,
    } = &cli.command
    {
        let open = |u: &str| -> Result<StoreUrl, String> {
            u.parse().map_err(|e: strata::StoreUrlError| e.to_string())
        };
        let (su, du) = (open(src)?, open(dst)?);
        if su == du {
            return Err("source and target are the same store".into());
        }
        let config = EngineConfig {
            background_tasks: false,
            ..EngineConfig::default()
        };
        let source = Engine::new(
            su.open(false).await.map_err(|e| e.to_string())?,
            config.clone(),
        );
        let target = Engine::new(
            du.open(cli.create_table).await.map_err(|e| e.to_string())?,
            config,
        );
        let r = copy::copy(&source, &target, database.as_deref(), *overwrite).await;
        source.close().await;
        target.close().await;
        return r.map(|_| ());
    }
    #[cfg(feature = "kv-connect")]
    if let Command::Serve(args) = cli.command {
        #[cfg(feature = "replication")]
        let node_args = {
            #[cfg(feature = "rest")]
            let a = match file.toml.as_ref() {
                Some(t) => args.node.clone().with_file(
                    t.cluster.as_ref(),
                    t.cluster_secret().map_err(|e| e.to_string())?,
                ),
                None => args.node.clone(),
            };
            #[cfg(not(feature = "rest"))]
            let a = args.node.clone();
            a.check()?
        };
        #[cfg(feature = "replication")]
        let node = match node_args.cluster {
            true => Some(cluster::start_node(backend.clone(), &node_args, &url).await?),
            false => None,
        };
        #[cfg(feature = "replication")]
        let backend: std::sync::Arc<dyn strata::Backend> = match &node {
            Some(node) => node.backend(),
            None => backend,
        };
        let defaults = EngineConfig::default();
        let config = EngineConfig {
            #[cfg(feature = "replication")]
            max_groups_in_flight: node_args
                .raft_groups_in_flight
                .map_or(defaults.max_groups_in_flight, usize::from),
            #[cfg(feature = "replication")]
            group_linger: node_args
                .raft_group_linger
                .map_or(defaults.group_linger, |ms| {
                    std::time::Duration::from_millis(u64::from(ms))
                }),
            ..defaults
        };
        let engine = std::sync::Arc::new(Engine::new(backend, config));
        // While this node leads, its engine resolves the commits the others forward.
        #[cfg(feature = "replication")]
        if let Some(node) = &node {
            node.serve_commits(&engine);
        }
        #[cfg(feature = "replication")]
        let mut file = file;
        #[cfg(feature = "replication")]
        let bootstrap = match &node {
            // A cluster node creates what db.toml declares through the cluster, once the
            // cluster has a leader (a new one waits for `strata cluster init`); creating is
            // idempotent, so every node may try.
            Some(node) => {
                #[cfg(feature = "rest")]
                if let Some(toml) = file.toml.take() {
                    let (node, engine) = (node.clone(), engine.clone());
                    tokio::spawn(async move {
                        node.leader_known().await;
                        if let Err(e) = bootstrap_toml(&engine, &toml).await {
                            tracing::error!(error = %e, "bootstrapping db.toml through the cluster failed");
                        }
                    });
                }
                let _ = node;
                Ok(())
            }
            None => file.bootstrap(&engine).await,
        };
        #[cfg(not(feature = "replication"))]
        let bootstrap = file.bootstrap(&engine).await;
        let result = match bootstrap {
            Ok(()) => {
                serve(
                    engine.clone(),
                    *args,
                    file,
                    run_dir,
                    &store,
                    #[cfg(feature = "replication")]
                    node.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        engine.close().await;
        #[cfg(feature = "replication")]
        if let Some(node) = node {
            node.shutdown().await;
        }
        return result;
    }
    let engine = std::sync::Arc::new(Engine::new(
        backend,
        EngineConfig {
            background_tasks: false,
            ..EngineConfig::default()
        },
    ));
    let result = match cli.command {
        #[cfg(feature = "rest")]
        Command::Bootstrap { .. } => file.bootstrap(&engine).await,
        command => self::command(&engine, command).await,
    };
    engine.close().await;
    result
}

/// `--sqlite-path P` (the reference server's flag): Strata keeps one SQLite file per database,
/// so `P` is used as the store's directory. A file at `P` is a database of the reference
/// server; Strata cannot serve its format in place, and says how to import it.
fn sqlite_path_store(path: &std::path::Path) -> Result<String, String> {
    if path.is_file() {
        let dir = format!("{}.strata", path.display());
        return Err(format!(
            "{} is a database file of another KV Connect server; import it once, then serve the import:\n  \
             strata --store sqlite:{dir} import denokv {}\n  strata --sqlite-path {dir} serve ...",
            path.display(),
            path.display()
        ));
    }
    Ok(format!("sqlite:{}", path.display()))
}

/// What db.toml says, for the commands that read it (`serve`, `bootstrap`): the store,
/// the addresses and token that flags did not give, and what to bootstrap.
struct FileConfig {
    store: Option<String>,
    kv_connect: Option<String>,
    pgwire: Option<String>,
    rest: Option<String>,
    typed: Option<String>,
    /// The token `[auth]` gives, or why it cannot be had (read only when serving needs it).
    token: Result<Option<String>, String>,
    #[cfg(feature = "rest")]
    toml: Option<strata_rest::config::DbToml>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            store: None,
            kv_connect: None,
            pgwire: None,
            rest: None,
            typed: None,
            token: Ok(None),
            #[cfg(feature = "rest")]
            toml: None,
        }
    }
}

#[cfg(feature = "rest")]
fn config_file(command: &Command) -> Result<FileConfig, String> {
    use strata_rest::config::DbToml;
    let toml = match command {
        #[cfg(feature = "kv-connect")]
        Command::Serve(a) => DbToml::find(a.config.as_deref()).map_err(|e| e.to_string())?,
        // They find the server where `serve` would put it: in the file's store.
        Command::Status | Command::Stop { .. } | Command::Logs { .. } => {
            DbToml::find(None).map_err(|e| e.to_string())?
        }
        Command::Bootstrap { config } => Some(
            DbToml::find(config.as_deref())
                .map_err(|e| e.to_string())?
                .ok_or("no db.toml here or in ~/.config/strata: write one with `strata init`, or pass --config FILE")?,
        ),
        _ => None,
    };
    let Some(toml) = toml else {
        return Ok(FileConfig::default());
    };
    if let Some(p) = &toml.path {
        eprintln!("configuration: {}", p.display());
    }
    Ok(FileConfig {
        store: toml.store.url.clone(),
        kv_connect: toml.frontends.kv_connect.clone(),
        pgwire: toml.frontends.pgwire.clone(),
        rest: toml.rest_addr(),
        typed: toml.frontends.typed.clone(),
        token: toml.access_token().map_err(|e| e.to_string()),
        toml: Some(toml),
    })
}

#[cfg(not(feature = "rest"))]
fn config_file(_: &Command) -> Result<FileConfig, String> {
    Ok(FileConfig::default())
}

impl FileConfig {
    /// Create what the file declares and is missing, saying what was made.
    async fn bootstrap(&self, engine: &std::sync::Arc<Engine>) -> CliResult {
        #[cfg(feature = "rest")]
        if let Some(toml) = &self.toml {
            bootstrap_toml(engine, toml).await?;
        }
        let _ = engine;
        Ok(())
    }
}

/// Create what `toml` declares and is missing, saying what was made.
#[cfg(feature = "rest")]
async fn bootstrap_toml(
    engine: &std::sync::Arc<Engine>,
    toml: &strata_rest::config::DbToml,
) -> CliResult {
    let done = strata_rest::config::bootstrap(engine, toml)
        .await
        .map_err(|e| e.to_string())?;
    for db in &done.databases_created {
        eprintln!("created database {db}");
    }
    for s in &done.statements {
        eprintln!("created {s}");
    }
    if done.databases_created.is_empty() && done.statements.is_empty() {
        eprintln!("bootstrap: everything declared exists already");
    }
    Ok(())
}

/// `strata db … --url`: the same commands against a running server's REST API.
#[cfg(feature = "rest")]
async fn remote_db(url: &str, command: &DbCommand) -> CliResult {
    let token = std::env::var("STRATA_ACCESS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let client = strata::rest::Client::new(url, token).map_err(|e| e.to_string())?;
    let e = |e: strata::rest::ClientError| e.to_string();
    match command {
        DbCommand::Create {
            name,
            durability,
            history_retention_ms,
        } => {
            if !matches!(durability, DurabilityArg::Sync) || *history_retention_ms != 60_000 {
                return Err("a server creates databases with its default options; \
                            run `strata db create` on the server's store to choose them"
                    .into());
            }
            client.create_database(name).await.map_err(e)?;
            eprintln!("created database {name}");
        }
        DbCommand::List => {
            for name in client.list_databases().await.map_err(e)? {
                println!("{name}");
            }
        }
        DbCommand::Drop { name } => {
            client.drop_database(name).await.map_err(e)?;
            eprintln!("dropped database {name}");
        }
    }
    Ok(())
}

#[cfg(feature = "rest")]
fn init_config(path: &std::path::Path, force: bool) -> CliResult {
    if path.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            path.display()
        ));
    }
    std::fs::write(path, strata_rest::config::STARTER)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "wrote {}: edit it, then `strata bootstrap` or `strata serve`",
        path.display()
    );
    Ok(())
}

#[cfg(feature = "kv-connect")]
async fn serve(
    engine: std::sync::Arc<Engine>,
    args: ServeArgs,
    file: FileConfig,
    run_dir: Option<daemon::RunDir>,
    store: &str,
    #[cfg(feature = "replication")] node: Option<std::sync::Arc<strata_replication::Node>>,
) -> CliResult {
    use strata_kv_connect::{Server, ServerConfig};
    #[cfg(feature = "sql")]
    strata_sql::set_column_copy_budget(args.sql_column_copies.saturating_mul(1 << 20));
    let token = args
        .access_token
        .or_else(|| std::env::var("DENO_KV_ACCESS_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let token = match token {
        Some(t) => Some(t),
        None if args.no_auth => None,
        None => file.token?,
    };
    let kv_addr = args
        .kv_connect
        .or(file.kv_connect)
        .unwrap_or_else(|| "127.0.0.1:4512".into());
    if token.is_none() && !args.no_auth {
        return Err("refusing to serve without an access token: pass --access-token (or set STRATA_ACCESS_TOKEN), \
                    or --no-auth to serve without authentication"
            .into());
    }
    if let Some(t) = &token {
        if t.len() < 12 {
            return Err("the access token must be at least 12 characters".into());
        }
    }
    let listener = tokio::net::TcpListener::bind(&kv_addr)
        .await
        .map_err(|e| format!("cannot listen on {kv_addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    #[allow(unused_mut)]
    let mut config = ServerConfig {
        access_token: token.clone(),
        create_databases: args.create_databases,
        queue_push: args.queue_push,
        ..ServerConfig::default()
    };
    #[cfg(feature = "replication")]
    if let Some(node) = &node {
        // Every member's KV Connect server is an eventual endpoint for Deno's clients.
        let node = node.clone();
        config.replicas = Some(strata_kv_connect::Replicas(std::sync::Arc::new(
            move || {
                node.endpoints("kv-connect")
                    .into_iter()
                    .map(|(_, url)| url)
                    .collect()
            },
        )));
    }
    let server = Server::new(engine.clone(), config);
    #[cfg(feature = "replication")]
    match &node {
        // The default database is made (and queue push attached to it) through the cluster,
        // once it has a leader: a new node may start long before `strata cluster init`.
        Some(node) => {
            let (node, server) = (node.clone(), server.clone());
            tokio::spawn(async move {
                node.leader_known().await;
                let mut wait = std::time::Duration::from_millis(100);
                while let Err(e) = server.prepare().await {
                    tracing::warn!(error = %e, "opening the default database through the cluster; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            });
        }
        None => server.prepare().await.map_err(|e| e.to_string())?,
    }
    #[cfg(not(feature = "replication"))]
    server.prepare().await.map_err(|e| e.to_string())?;
    #[cfg(feature = "sql")]
    let pg_addr = args
        .pgwire
        .or(file.pgwire)
        .unwrap_or_else(|| "127.0.0.1:5433".into());
    #[cfg(feature = "sql")]
    let pg = if args.no_pgwire || pg_addr == "off" {
        None
    } else {
        let auth = match (&token, args.pg_auth) {
            (None, _) => strata_pgwire::Auth::Trust,
            (Some(t), PgAuthArg::Scram) => strata_pgwire::Auth::Scram(t.clone()),
            (Some(t), PgAuthArg::Password) => strata_pgwire::Auth::Password(t.clone()),
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(strata_pgwire::tls_from_pem(cert, key)?),
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(&pg_addr)
            .await
            .map_err(|e| format!("cannot listen on {pg_addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server =
            strata_pgwire::Server::new(engine.clone(), strata_pgwire::Config { auth, tls });
        Some((server, listener, addr))
    };
    #[cfg(feature = "typed")]
    let typed = match args.typed.or(file.typed).filter(|a| a != "off") {
        None => None,
        Some(at) => {
            let tokens = strata_typed::sync::Tokens::parse(&args.typed_tokens)?;
            let db = engine
                .open_or_create(&args.typed_database)
                .await
                .map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(&at)
                .await
                .map_err(|e| format!("cannot listen on {at}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            Some((db, tokens, listener, addr))
        }
    };
    #[cfg(feature = "rest")]
    let rest_addr = args
        .rest
        .or(file.rest)
        .unwrap_or_else(|| strata_rest::DEFAULT_ADDR.into());
    #[cfg(feature = "rest")]
    let rest = if args.no_rest || rest_addr == "off" {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&rest_addr)
            .await
            .map_err(|e| format!("cannot listen on {rest_addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let config = strata_rest::Config {
            access_token: token.clone(),
            transaction_idle_timeout: std::time::Duration::from_secs(
                args.rest_transaction_timeout.max(1),
            ),
        };
        Some((
            strata_rest::Server::new(engine.clone(), config),
            listener,
            addr,
        ))
    };
    tracing::info!(store = %engine.backend().describe(), "servers ready");
    println!("Listening on http://{addr}");
    #[cfg(feature = "sql")]
    if let Some((_, _, addr)) = &pg {
        println!("PostgreSQL on {addr}");
    }
    #[cfg(feature = "rest")]
    if let Some((_, _, addr)) = &rest {
        println!("REST on http://{addr}");
    }
    #[cfg(feature = "typed")]
    if let Some((_, _, _, addr)) = &typed {
        println!("Typed sync on http://{addr}");
    }
    #[cfg(feature = "replication")]
    if let Some(node) = &node {
        println!("Raft on {}", node.member().raft_addr);
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let mut addresses = vec![("kv-connect".to_string(), format!("http://{addr}"))];
    #[cfg(feature = "sql")]
    if let Some((_, _, addr)) = &pg {
        addresses.push(("postgres".into(), addr.to_string()));
    }
    #[cfg(feature = "rest")]
    if let Some((_, _, addr)) = &rest {
        addresses.push(("rest".into(), format!("http://{addr}")));
    }
    #[cfg(feature = "typed")]
    if let Some((_, _, _, addr)) = &typed {
        addresses.push(("typed".into(), format!("http://{addr}")));
    }
    #[cfg(feature = "replication")]
    if let Some(node) = &node {
        node.set_endpoints(addresses.iter().cloned().collect());
    }
    let _pid_file = match &run_dir {
        Some(run) => Some(run.claim(store, addresses)?),
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let kv = server.serve(listener, until_stopped(stopped.clone()));
    #[cfg(feature = "sql")]
    let pg = async {
        match pg {
            Some((server, listener, _)) => {
                server.serve(listener, until_stopped(stopped.clone())).await
            }
            None => Ok(()),
        }
    };
    #[cfg(not(feature = "sql"))]
    let pg = async { Ok::<(), std::io::Error>(()) };
    #[cfg(feature = "rest")]
    let rest = async {
        match rest {
            Some((server, listener, _)) => {
                server.serve(listener, until_stopped(stopped.clone())).await
            }
            None => Ok(()),
        }
    };
    #[cfg(not(feature = "rest"))]
    let rest = async { Ok::<(), std::io::Error>(()) };
    #[cfg(feature = "typed")]
    let typed = async {
        match typed {
            Some((db, tokens, listener, _)) => {
                strata_typed::sync::serve(db, tokens, listener, until_stopped(stopped.clone()))
                    .await
            }
            None => Ok(()),
        }
    };
    #[cfg(not(feature = "typed"))]
    let typed = async { Ok::<(), String>(()) };
    let (kv, pg, rest, typed) = tokio::join!(kv, pg, rest, typed);
    signal.abort();
    kv.map_err(|e| e.to_string())?;
    pg.map_err(|e| format!("PostgreSQL server: {e}"))?;
    rest.map_err(|e| format!("REST server: {e}"))?;
    typed?;
    tracing::info!("shut down");
    Ok(())
}

/// The frontends' addresses, one per line, as `status` and `serve --detach` show them.
fn print_addresses(info: &daemon::ServerInfo) {
    for (name, addr) in &info.addresses {
        let label = match name.as_str() {
            "kv-connect" => "KV Connect",
            "postgres" => "PostgreSQL",
            "rest" => "REST",
            "typed" => "Typed sync",
            other => other,
        };
        println!("  {label:<11} {addr}");
    }
}

/// `strata status`: exits 3 (the LSB "not running" status) when no server runs.
async fn status(run: &daemon::RunDir) -> CliResult {
    let Some(info) = run.running()? else {
        println!("not running");
        std::process::exit(3);
    };
    println!("running (pid {}, up {})", info.pid, info.uptime());
    if !info.store.is_empty() {
        println!("  store       {}", info.store);
    }
    print_addresses(&info);
    #[cfg(feature = "rest")]
    if let Some(rest) = info.address("rest") {
        let health = match strata::rest::Client::new(rest, None) {
            Ok(client) => match client.health().await {
                Ok(h) => h.status,
                Err(e) => format!("not answering: {e}"),
            },
            Err(e) => e.to_string(),
        };
        println!("  health      {health}");
    }
    Ok(())
}

#[cfg(feature = "kv-connect")]
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn command(engine: &std::sync::Arc<Engine>, command: Command) -> CliResult {
    let e = |e: strata::EngineError| e.to_string();
    match command {
        #[cfg(feature = "kv-connect")]
        Command::Serve(_) => {
            return Err("serve is handled before the store is opened for commands".into())
        }
        Command::Copy { .. } => {
            return Err("copy is handled before the store is opened for commands".into())
        }
        #[cfg(feature = "replication")]
        Command::Cluster(_) => {
            return Err("cluster is handled before the store is opened for commands".into())
        }
        Command::Status | Command::Stop { .. } | Command::Logs { .. } => {
            return Err("status, stop and logs are handled before the store is opened".into())
        }
        #[cfg(feature = "rest")]
        Command::Init { .. } | Command::Bootstrap { .. } => {
            return Err("init and bootstrap are handled before other commands".into())
        }
        #[cfg(feature = "sql")]
        Command::Sql(args) => match args.action {
            Some(SqlAction::Check) => sql::check(engine.clone(), args.database.as_deref()).await?,
            Some(SqlAction::Import {
                file,
                table,
                header,
                delimiter,
                null,
                chunk_rows,
                skip,
            }) => {
                if !delimiter.is_ascii() {
                    return Err(format!(
                        "the delimiter must be one ASCII character, not {delimiter:?}"
                    ));
                }
                let opts = sql::ImportOptions {
                    header,
                    delimiter: delimiter as u8,
                    null,
                    chunk_rows: chunk_rows.clamp(1, 100_000),
                    skip,
                };
                sql::import(
                    engine.clone(),
                    args.database.as_deref(),
                    &file,
                    &table,
                    &opts,
                )
                .await?
            }
            None if args.execute.is_empty() => {
                repl::Repl::embedded(engine.clone(), args.database.as_deref())
                    .await?
                    .run()
                    .await?
            }
            None => sql::execute(engine.clone(), args.database.as_deref(), &args.execute).await?,
        },
        Command::Db {
            command:
                DbCommand::Create {
                    name,
                    durability,
                    history_retention_ms,
                },
            ..
        } => {
            let options = DatabaseOptions {
                durability: match durability {
                    DurabilityArg::Sync => Durability::Sync,
                    DurabilityArg::Async => Durability::Async,
                },
                history_retention_ms,
                ..DatabaseOptions::default()
            };
            engine
                .create_database(&name, Some(options))
                .await
                .map_err(e)?;
            eprintln!("created database {name}");
        }
        Command::Db {
            command: DbCommand::List,
            ..
        } => {
            for name in engine.list_databases().await.map_err(e)? {
                println!("{name}");
            }
        }
        Command::Db {
            command: DbCommand::Drop { name },
            ..
        } => {
            engine.drop_database(&name).await.map_err(e)?;
            eprintln!("dropped database {name}");
        }
        #[cfg(feature = "sqlite")]
        Command::Import(ImportCommand::Denokv { file, db }) => {
            let source = import::read_denokv(&file)?;
            eprintln!(
                "importing {} keys and {} queued messages from {} into database {db}",
                source.entries.len(),
                source.messages.len(),
                file.display()
            );
            let target = engine.create_database(&db, None).await.map_err(e)?;
            let report = import::import(&target, source).await?;
            eprintln!(
                "imported {} keys and {} messages; newest versionstamp {}",
                report.keys,
                report.messages,
                report
                    .newest_versionstamp
                    .map(|v| v.to_hex())
                    .unwrap_or_else(|| "-".into())
            );
        }
        #[cfg(feature = "typed")]
        Command::Typed(TypedCommand::Trees { db }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let trees = strata_typed::inspect::trees(&db)
                .await
                .map_err(|x| x.to_string())?;
            if trees.is_empty() {
                eprintln!("no typed trees in database {}", db.name());
            }
            println!(
                "{:<24} {:>10} {:>10} {:>12} {:>12}  {:<16} schema versions",
                "tree", "records", "released", "checked out", "bytes", "schemas stored"
            );
            for t in trees {
                let versions: Vec<String> = t
                    .schema_versions
                    .iter()
                    .map(|(v, n)| format!("v{v}: {n}"))
                    .collect();
                let corrupt = if t.corrupt > 0 {
                    format!(", {} corrupt", t.corrupt)
                } else {
                    String::new()
                };
                let stored: Vec<String> = t.schemas.iter().map(|v| format!("v{v}")).collect();
                let stored = if stored.is_empty() {
                    "-".to_string()
                } else {
                    stored.join(",")
                };
                println!(
                    "{:<24} {:>10} {:>10} {:>12} {:>12}  {:<16} {}{corrupt}",
                    t.tree,
                    t.records,
                    t.released,
                    t.checked_out,
                    t.bytes,
                    stored,
                    versions.join(", ")
                );
            }
        }
        #[cfg(feature = "typed")]
        Command::Typed(TypedCommand::Show {
            tree,
            id,
            db,
            limit,
        }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let records = strata_typed::inspect::records(&db, &tree, id, limit.max(1))
                .await
                .map_err(|x| x.to_string())?;
            if records.is_empty() {
                return Err(format!("no records of tree {tree:?}"));
            }
            for r in records {
                println!("{}", serde_json::to_string(&r).map_err(|x| x.to_string())?);
            }
        }
        #[cfg(feature = "typed")]
        Command::Typed(TypedCommand::Edit {
            tree,
            key,
            value,
            file,
            user,
            stale_indexes,
            db,
        }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let (id, revision) = parse_record_key(&key)?;
            let (text, expected) = match (value, file) {
                (Some(v), _) => (v, None),
                (None, Some(f)) => (
                    std::fs::read_to_string(&f)
                        .map_err(|x| format!("cannot read {}: {x}", f.display()))?,
                    None,
                ),
                (None, None) => {
                    let (text, shown) = edit_in_editor(&db, &tree, id, revision).await?;
                    (text, Some(shown))
                }
            };
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|x| format!("the new value is not JSON: {x}"))?;
            let change = strata_typed::inspect::Edit {
                tree: &tree,
                id,
                revision,
                user: &user,
                value: &value,
                stale_indexes,
                expected: expected.as_ref(),
            };
            let done = strata_typed::inspect::edit(&db, &change)
                .await
                .map_err(|x| x.to_string())?;
            if done.changed {
                println!(
                    "{}: written at schema version {}",
                    done.key, done.schema_version
                );
            } else {
                println!("{}: unchanged", done.key);
            }
        }
        #[cfg(feature = "typed")]
        Command::Typed(TypedCommand::Migrate {
            tree,
            to,
            stale_indexes,
            db,
        }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let mut bar: Option<progress::Progress> = None;
            let label = format!("migrating {tree}");
            let done = strata_typed::inspect::migrate(&db, &tree, to, stale_indexes, |d, t| {
                bar.get_or_insert_with(|| progress::Progress::new(label.clone(), t, "records"))
                    .set(d)
            })
            .await
            .map_err(|x| x.to_string())?;
            println!(
                "tree {tree}: {} records rewritten at schema version {}, {} already at it{}",
                done.rewritten,
                done.to,
                done.current,
                if done.later > 0 {
                    format!(
                        ", {} written by later versions left as they are",
                        done.later
                    )
                } else {
                    String::new()
                }
            );
        }
        #[cfg(feature = "typed")]
        Command::Typed(TypedCommand::Schema { tree, version, db }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let version = match version {
                Some(v) => v,
                None => strata_typed::inspect::trees(&db)
                    .await
                    .map_err(|x| x.to_string())?
                    .into_iter()
                    .find(|t| t.tree == tree)
                    .and_then(|t| t.schemas.last().copied())
                    .ok_or_else(|| format!("no schema is stored for tree {tree:?}"))?,
            };
            let schema = strata_typed::inspect::schema(&db, &tree, version)
                .await
                .map_err(|x| x.to_string())??;
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).map_err(|x| x.to_string())?
            );
        }
        Command::Kv(KvCommand::Get { key, db }) => {
            let db = engine.database(&db).await.map_err(e)?;
            match db.get(key.as_bytes()).await.map_err(e)? {
                Some(entry) => println!("{}", show_value(&entry.value)),
                None => return Err(format!("key {key:?} not found")),
            }
        }
        Command::Kv(KvCommand::Set {
            key,
            value,
            u64,
            expire_in_ms,
            db,
        }) => {
            let db = engine.open_or_create(&db).await.map_err(e)?;
            let value = if u64 {
                Value::u64(
                    value
                        .parse()
                        .map_err(|_| format!("{value:?} is not an unsigned 64-bit integer"))?,
                )
            } else {
                Value::bytes(value.into_bytes())
            };
            let expires_at = expire_in_ms.map(|ms| strata::engine::now_ms() + ms.max(1));
            let m = Mutation {
                key: key.into_bytes(),
                kind: MutationKind::Set { value, expires_at },
            };
            let outcome = db
                .atomic_write(AtomicWrite::new().mutate(m))
                .await
                .map_err(e)?;
            if let Some(vs) = outcome.versionstamp() {
                eprintln!("committed at versionstamp {vs}");
            }
        }
        Command::Kv(KvCommand::Delete { key, db }) => {
            let db = engine.database(&db).await.map_err(e)?;
            db.atomic_write(AtomicWrite::new().delete(key.into_bytes()))
                .await
                .map_err(e)?;
        }
        Command::Kv(KvCommand::List {
            prefix,
            limit,
            reverse,
            db,
        }) => {
            let db = engine.database(&db).await.map_err(e)?;
            let max = db.options().limits.max_read_entries;
            let mut range = ReadRange::prefix(prefix.as_bytes(), limit.clamp(1, max));
            range.reverse = reverse;
            let read = db
                .snapshot_read(&[range], ReadAt::Latest)
                .await
                .map_err(e)?;
            for entry in read.ranges.iter().flatten() {
                println!("{}", show_entry(entry));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the log's throttle reports what it held back from a task of its own.
    let _runtime = rt.enter();
    init_logging();
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Log to stderr: INFO by default, and Raft (which narrates every election and snapshot at
/// INFO) at WARN; STRATA_LOG adds to that, as `debug` or `strata_rest=debug,info`. A line
/// repeated word for word (a peer that is down, named again in every round that needs it,
/// hundreds of times a second) is held back after a burst of 20, then let through once
/// every 5 s, and every 30 s a line says how many were held back.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let mut filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("openraft", tracing::Level::WARN);
    let mut bad_filter = None;
    if let Ok(spec) = std::env::var("STRATA_LOG") {
        match spec.parse::<tracing_subscriber::filter::Targets>() {
            Ok(extra) => {
                if let Some(level) = extra.default_level() {
                    filter = filter.with_default(level);
                }
                filter = filter.with_targets(extra);
            }
            Err(err) => bad_filter = Some(format!("STRATA_LOG={spec:?} is ignored: {err}")),
        }
    }
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let throttle = tracing_throttle::Policy::token_bucket(20.0, 0.2)
        .map_err(|e| e.to_string())
        .and_then(|policy| {
            tracing_throttle::TracingRateLimitLayer::builder()
                .with_policy(policy)
                .with_active_emission(true)
                .with_summary_interval(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())
        });
    let registry = tracing_subscriber::registry().with(filter);
    match throttle {
        Ok(throttle) => registry.with(lines.with_filter(throttle)).init(),
        Err(e) => {
            registry.with(lines).init();
            tracing::warn!("repeated log lines are not held back: {e}");
        }
    }
    if let Some(msg) = bad_filter {
        tracing::warn!("{msg}");
    }
}

/// `ID` or `ID@REVISION`.
#[cfg(feature = "typed")]
fn parse_record_key(key: &str) -> Result<(u64, Option<u32>), String> {
    let bad = || format!("{key:?} is not a record key: ID or ID@REVISION");
    match key.split_once('@') {
        Some((id, rev)) => Ok((
            id.parse().map_err(|_| bad())?,
            Some(rev.parse().map_err(|_| bad())?),
        )),
        None => Ok((key.parse().map_err(|_| bad())?, None)),
    }
}

/// The record's value as JSON, changed by the user in $VISUAL or $EDITOR, and the value it
/// was changed from.
#[cfg(feature = "typed")]
async fn edit_in_editor(
    db: &strata_engine::Database,
    tree: &str,
    id: u64,
    revision: Option<u32>,
) -> Result<(String, serde_json::Value), String> {
    let found = strata_typed::inspect::records(db, tree, Some(id), usize::MAX)
        .await
        .map_err(|x| x.to_string())?;
    let record = match revision {
        Some(r) => found.into_iter().find(|x| x.revision == r),
        None => found.into_iter().last(),
    }
    .ok_or_else(|| format!("no record {tree}/{id}"))?;
    let value = record.value.ok_or_else(|| {
        format!(
            "record {tree}/{id}@{} cannot be shown: {}",
            record.revision,
            record.problem.unwrap_or_default()
        )
    })?;
    let pretty: serde_json::Value = serde_json::from_str(value.get()).map_err(|x| x.to_string())?;
    let file = tempfile::Builder::new()
        .prefix(&format!("{tree}-{id}-"))
        .suffix(".json")
        .tempfile()
        .map_err(|x| format!("cannot make a file to edit: {x}"))?;
    let before = serde_json::to_string_pretty(&pretty).map_err(|x| x.to_string())? + "\n";
    std::fs::write(file.path(), &before).map_err(|x| x.to_string())?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // The editor may carry arguments ("code --wait"); the shell splits them.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .map_err(|x| format!("cannot run the editor {editor:?}: {x}"))?;
    if !status.success() {
        return Err(format!(
            "the editor {editor:?} failed ({status}); nothing was written"
        ));
    }
    let text = std::fs::read_to_string(file.path()).map_err(|x| x.to_string())?;
    Ok((text, pretty))
}
