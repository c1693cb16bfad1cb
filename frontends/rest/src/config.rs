//! `db.toml`: the declarative configuration, in the format of the HTAP server this API
//! replaces, plus sections of our own.
//!
//! ```toml
//! [server]                      # the REST API's address
//! host = "127.0.0.1"
//! port = 4200
//!
//! [databases.users]             # created if missing
//! durability = "sync"           # ours: sync (default) or async
//! history_retention_ms = 60000  # ours: how long older versions stay readable
//!
//! [databases.users.tables.customers]
//! sql = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"
//! indexes = { by_name = "CREATE INDEX customers_name ON customers (name)" }
//!
//! [store]                       # ours: where the data lives
//! url = "redb:./strata-data"
//!
//! [auth]                        # ours: the token every frontend asks for
//! access_token_env = "STRATA_ACCESS_TOKEN"
//!
//! [frontends]                   # ours: addresses, or "off"
//! kv_connect = "127.0.0.1:4512"
//! pgwire = "127.0.0.1:5433"
//!
//! [cluster]                     # ours: serve as a node of a replicated cluster
//! node_id = 1
//! raft = "10.0.0.1:7001"        # where this node listens for the others
//! peers = ["10.0.0.2:7001", "10.0.0.3:7001"]   # optional: form the cluster at first start
//! cluster_id = "prod"
//! secret_env = "STRATA_CLUSTER_SECRET"
//! ```
//!
//! Bootstrap is additive and idempotent: a database is created if it is missing, a table
//! statement runs as `CREATE TABLE IF NOT EXISTS` and an index statement as `CREATE INDEX IF
//! NOT EXISTS`; anything else in a table's `sql` or `indexes` is refused before anything
//! runs, so a configuration never drops or alters. Running it twice changes nothing the
//! second time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use strata_engine::{DatabaseOptions, Durability, Engine};
use strata_sql::datafusion::sql::sqlparser::ast::Statement;
use strata_sql::{Prepared, Session};
use toml::Spanned;

/// The file name looked for in the working directory.
pub const FILE_NAME: &str = "db.toml";

/// A configuration file, parsed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbToml {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseSection>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub frontends: FrontendsSection,
    /// Present: `strata serve` runs as a node of a replicated cluster.
    pub cluster: Option<ClusterSection>,
    /// The file it came from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(skip)]
    text: String,
    /// What bootstrap runs, per database: made once, when the file is checked.
    #[serde(skip)]
    creates: BTreeMap<String, Vec<Create>>,
}

/// One idempotent statement bootstrap runs.
#[derive(Debug)]
struct Create {
    /// Its key in the file, for messages.
    key: String,
    /// The statement, with IF NOT EXISTS.
    sql: String,
    /// What it creates: `database.table` or `database.table.index`.
    what: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// The other server's file location of the database; Strata keeps databases in its
    /// store, so it is accepted and ignored.
    pub path: Option<String>,
    #[serde(default)]
    pub tables: BTreeMap<String, TableSection>,
    pub durability: Option<Spanned<String>>,
    pub history_retention_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSection {
    pub sql: Spanned<String>,
    #[serde(default)]
    pub indexes: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The token itself (prefer `access_token_env`: a file is easier to leak).
    pub access_token: Option<String>,
    /// The environment variable holding the token.
    pub access_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendsSection {
    pub kv_connect: Option<String>,
    pub pgwire: Option<String>,
    pub typed: Option<String>,
}

/// `[cluster]`: the same settings as `strata serve --cluster`'s flags, which win over it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id, unique in the cluster (`--node-id`).
    pub node_id: Option<u64>,
    /// Where this node listens for the others (`--raft`).
    pub raft: Option<String>,
    /// The address the others reach it at, when that differs (`--raft-advertise`).
    pub advertise: Option<String>,
    /// The other nodes' Raft addresses (`--peer`): the nodes form the cluster themselves.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Snapshot every this many log entries (`--raft-snapshot-every`).
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot (`--raft-keep-after-snapshot`).
    pub keep_after_snapshot: Option<u64>,
    /// Commit groups in the Raft log at once while this node leads
    /// (`--raft-groups-in-flight`, 1 to 64).
    pub groups_in_flight: Option<u16>,
    /// How long, in milliseconds, the leader's next commit group may wait for the clients
    /// it just answered (`--raft-group-linger`, 0 to 1000; 0: never).
    pub group_linger_ms: Option<u16>,
    /// The cluster's name (`--cluster-id`).
    pub cluster_id: Option<String>,
    /// The shared secret itself (prefer `secret_env`: a file is easier to leak).
    pub secret: Option<String>,
    /// The environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// Reach a peer through another address: `{ "2" = "10.0.1.2:7001" }` (`--raft-peer-via`).
    #[serde(default)]
    pub peer_via: BTreeMap<String, String>,
}

/// A configuration that cannot be used: the message names the file, the line and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl DbToml {
    /// Parse `text` (from `path`, for messages).
    pub fn parse(text: &str, path: Option<&Path>) -> Result<DbToml, ConfigError> {
        let name = path.map_or_else(|| FILE_NAME.to_string(), |p| p.display().to_string());
        let mut config: DbToml = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{name}: {}", e.to_string().trim_end())))?;
        config.path = path.map(Path::to_path_buf);
        config.text = text.to_string();
        config.creates = config.check()?;
        Ok(config)
    }

    /// Read `path`.
    pub fn load(path: &Path) -> Result<DbToml, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        DbToml::parse(&text, Some(path))
    }

    /// The file to use: `explicit` if given (it must exist), else `./db.toml`, else
    /// `~/.config/strata/db.toml`; `None` when there is none.
    pub fn find(explicit: Option<&Path>) -> Result<Option<DbToml>, ConfigError> {
        if let Some(p) = explicit {
            return DbToml::load(p).map(Some);
        }
        let mut candidates = vec![PathBuf::from(FILE_NAME)];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".config/strata").join(FILE_NAME));
        }
        for c in candidates {
            if c.is_file() {
                return DbToml::load(&c).map(Some);
            }
        }
        Ok(None)
    }

    /// The REST address `[server]` names, if it names one.
    pub fn rest_addr(&self) -> Option<String> {
        if self.server.host.is_none() && self.server.port.is_none() {
            return None;
        }
        let host = self.server.host.as_deref().unwrap_or("127.0.0.1");
        let port = self.server.port.unwrap_or(4200);
        Some(format!("{host}:{port}"))
    }

    /// The access token `[auth]` gives, if any.
    pub fn access_token(&self) -> Result<Option<String>, ConfigError> {
        self.secret(
            self.auth.access_token_env.as_deref(),
            self.auth.access_token.as_deref(),
            "auth.access_token_env",
        )
    }

    /// The cluster secret `[cluster]` gives (`secret_env`'s variable, or `secret`).
    pub fn cluster_secret(&self) -> Result<Option<String>, ConfigError> {
        let Some(c) = &self.cluster else {
            return Ok(None);
        };
        self.secret(
            c.secret_env.as_deref(),
            c.secret.as_deref(),
            "cluster.secret_env",
        )
    }

    /// A secret from the environment variable `var` names (which must then be set), else
    /// the one written in the file.
    fn secret(
        &self,
        var: Option<&str>,
        written: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match var {
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Ok(Some(t)),
                _ => Err(self.error_at(
                    None,
                    key,
                    &format!("the environment variable {var} is not set"),
                )),
            },
            None => Ok(written.map(str::to_string)),
        }
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| FILE_NAME.to_string(), |p| p.display().to_string())
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error_at(&self, span: Option<std::ops::Range<usize>>, key: &str, msg: &str) -> ConfigError {
        match span {
            Some(s) => ConfigError(format!(
                "{}, line {}, key {key}: {msg}",
                self.name(),
                self.line_of(s.start)
            )),
            None => ConfigError(format!("{}, key {key}: {msg}", self.name())),
        }
    }

    /// Every rule that can be checked without a store: names and statements. Returns the
    /// statements bootstrap runs.
    fn check(&self) -> Result<BTreeMap<String, Vec<Create>>, ConfigError> {
        let mut creates = BTreeMap::new();
        for (db, section) in &self.databases {
            let key = format!("databases.{db}");
            strata_engine::validate_name(db)
                .map_err(|e| self.error_at(None, &key, &e.to_string()))?;
            if let Some(d) = &section.durability {
                if !matches!(d.get_ref().as_str(), "sync" | "async") {
                    return Err(self.error_at(
                        Some(d.span()),
                        &format!("{key}.durability"),
                        "durability is \"sync\" or \"async\"",
                    ));
                }
            }
            let mut run = Vec::new();
            for (table, t) in &section.tables {
                let tkey = format!("{key}.tables.{table}");
                let key = format!("{tkey}.sql");
                run.push(Create {
                    sql: self.statement(&t.sql, &key, Want::Table)?,
                    key,
                    what: format!("{db}.{table}"),
                });
                for (index, sql) in &t.indexes {
                    let key = format!("{tkey}.indexes.{index}");
                    run.push(Create {
                        sql: self.statement(sql, &key, Want::Index)?,
                        key,
                        what: format!("{db}.{table}.{index}"),
                    });
                }
            }
            creates.insert(db.clone(), run);
        }
        Ok(creates)
    }

    /// The statement at `key`, made idempotent: IF NOT EXISTS.
    fn statement(
        &self,
        sql: &Spanned<String>,
        key: &str,
        want: Want,
    ) -> Result<String, ConfigError> {
        let err = |msg: &str| self.error_at(Some(sql.span()), key, msg);
        let prepared = Prepared::parse(sql.get_ref()).map_err(|e| err(&e.to_string()))?;
        if prepared.len() != 1 {
            return Err(err("one statement per key"));
        }
        let mut stmt = prepared
            .statement(0)
            .cloned()
            .ok_or_else(|| err("not a CREATE statement"))?;
        match (&mut stmt, want) {
            (Statement::CreateTable(ct), Want::Table) => ct.if_not_exists = true,
            (Statement::CreateIndex(ci), Want::Index) => ci.if_not_exists = true,
            (_, Want::Table) => {
                return Err(err(
                    "a table's sql is one CREATE TABLE statement (bootstrap never drops or alters)",
                ))
            }
            (_, Want::Index) => {
                return Err(err(
                    "an index is one CREATE INDEX statement (bootstrap never drops or alters)",
                ))
            }
        }
        Ok(stmt.to_string())
    }
}

#[derive(Clone, Copy)]
enum Want {
    Table,
    Index,
}

/// What a bootstrap did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bootstrapped {
    pub databases_created: Vec<String>,
    /// Statements run, as `database.table` or `database.table.index`.
    pub statements: Vec<String>,
}

/// Create what the configuration declares and is missing; never drop or alter.
pub async fn bootstrap(engine: &Arc<Engine>, config: &DbToml) -> Result<Bootstrapped, ConfigError> {
    let mut done = Bootstrapped::default();
    for (db, section) in &config.databases {
        let key = format!("databases.{db}");
        let fail = |e: &dyn std::fmt::Display| config.error_at(None, &key, &e.to_string());
        if !engine.exists(db).await.map_err(|e| fail(&e))? {
            let mut options = engine.config().default_database.clone();
            if let Some(d) = &section.durability {
                options.durability = match d.get_ref().as_str() {
                    "async" => Durability::Async,
                    _ => Durability::Sync,
                };
            }
            if let Some(ms) = section.history_retention_ms {
                options.history_retention_ms = ms;
            }
            create(engine, db, options).await.map_err(|e| fail(&e))?;
            done.databases_created.push(db.clone());
        }
        let mut session = Session::new(engine.clone());
        session.set_database(db).await.map_err(|e| fail(&e))?;
        for c in config.creates.get(db).into_iter().flatten() {
            let before = session.last_commit_version();
            session
                .execute(&c.sql)
                .await
                .map_err(|e| config.error_at(None, &c.key, &e.to_string()))?;
            // IF NOT EXISTS of something that exists commits nothing.
            if session.last_commit_version() != before {
                done.statements.push(c.what.clone());
            }
        }
    }
    Ok(done)
}

async fn create(
    engine: &Engine,
    name: &str,
    options: DatabaseOptions,
) -> strata_engine::Result<()> {
    match engine.create_database(name, Some(options)).await {
        Ok(_) | Err(strata_engine::EngineError::DatabaseExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The starter file `strata init` writes.
pub const STARTER: &str = r#"# Strata configuration. `strata serve` reads it from ./db.toml (or
# ~/.config/strata/db.toml, or --config FILE), creates what it declares, then serves.
# `strata bootstrap` only creates. Bootstrapping is additive: running it again creates
# what is missing and never drops or alters anything. Command-line flags override the file.

# The REST API's address.
[server]
host = "127.0.0.1"
port = 4200

# Where the data lives: redb:<dir> (the default), sqlite:<dir>, memory:, or
# dynamodb:<table>?endpoint=<url>&region=<region>.
[store]
url = "redb:./strata-data"

# The token every frontend asks for. Without one, serve with --no-auth.
[auth]
access_token_env = "STRATA_ACCESS_TOKEN"

# The other frontends' addresses ("off" turns one off).
[frontends]
kv_connect = "127.0.0.1:4512"
pgwire = "127.0.0.1:5433"

# A database, created if missing.
[databases.app]
durability = "sync"              # sync: a commit returns once on disk; async: synced soon after
history_retention_ms = 60000     # how long older versions stay readable (AS OF)

# A table: one CREATE TABLE statement (run as CREATE TABLE IF NOT EXISTS).
[databases.app.tables.users]
sql = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)"

# Its indexes: one CREATE INDEX statement each (run as CREATE INDEX IF NOT EXISTS).
[databases.app.tables.users.indexes]
users_email = "CREATE UNIQUE INDEX users_email ON users (email)"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_file_parses() {
        let c = DbToml::parse(STARTER, None).unwrap();
        assert_eq!(c.rest_addr().as_deref(), Some("127.0.0.1:4200"));
        assert_eq!(c.databases["app"].tables["users"].indexes.len(), 1);
        assert_eq!(c.store.url.as_deref(), Some("redb:./strata-data"));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let text = "[server]\nport = 4200\n\n[databases.a.tables.t]\nsql = \"DROP TABLE t\"\n";
        let e = DbToml::parse(text, None).unwrap_err().to_string();
        assert!(
            e.contains("line 5") && e.contains("databases.a.tables.t.sql"),
            "{e}"
        );
        let e = DbToml::parse("[server]\nprot = 1\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("prot"), "{e}");
        let e = DbToml::parse("[databases.\"../x\"]\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases.../x"), "{e}");
        let text = "[databases.a]\ndurability = \"sometimes\"\n";
        let e = DbToml::parse(text, None).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("durability"), "{e}");
        let text = "[databases.a.tables.t]\nsql = \"CREATE TABLE t (id INT)\"\nindexes = { i = \"ALTER TABLE t ADD x INT\" }\n";
        let e = DbToml::parse(text, None).unwrap_err().to_string();
        assert!(e.contains("indexes.i") && e.contains("line 3"), "{e}");
    }
}
