//! # strata
//!
//! The facade of Strata: the engine, the backends this build was compiled with, and the
//! store URLs that name them. Cargo features choose the backends (`redb` — the default —,
//! `sqlite`, `memory`); a build compiles only the ones it names.
//!
//! ```text
//! memory:            a fresh in-memory store (gone when the process exits)
//! redb:<dir>         one redb file per database under <dir>   (default: redb:./strata-data)
//! sqlite:<dir>       one SQLite file per database under <dir>
//! dynamodb:<table>?endpoint=<url>&region=<r>   many databases in one DynamoDB table
//! ```

use std::sync::Arc;

pub use strata_engine as engine;
pub use strata_engine::{Backend, Database, Engine, EngineConfig, EngineError};

#[cfg(feature = "dynamodb")]
pub use strata_backend_dynamodb as dynamodb;
#[cfg(feature = "memory")]
pub use strata_backend_memory as memory;
#[cfg(feature = "redb")]
pub use strata_backend_redb as redb;
#[cfg(feature = "sqlite")]
pub use strata_backend_sqlite as sqlite;
/// The REST API: its server, its typed client (`strata::rest::Client`) and db.toml.
#[cfg(feature = "rest")]
pub use strata_rest as rest;

/// The store used when none is named.
pub const DEFAULT_STORE: &str = "redb:./strata-data";

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Redb(std::path::PathBuf),
    Sqlite(std::path::PathBuf),
    /// The part after `dynamodb:` (`<table>?endpoint=..&region=..`).
    Dynamodb(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "invalid store URL {0:?}: expected memory:, redb:<dir>, sqlite:<dir> or dynamodb:<table>"
    )]
    Invalid(String),
    #[error("store URL {url:?} needs a directory after '{scheme}:'")]
    MissingPath { url: String, scheme: &'static str },
    #[error("this build of strata has no {0} backend; rebuild with `--features {0}`")]
    NotCompiled(&'static str),
    #[error("{0}")]
    Backend(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| StoreUrlError::Invalid(url.to_string()))?;
        let path = |scheme: &'static str| {
            if rest.is_empty() {
                Err(StoreUrlError::MissingPath {
                    url: url.to_string(),
                    scheme,
                })
            } else {
                Ok(std::path::PathBuf::from(rest))
            }
        };
        match scheme {
            "memory" if rest.is_empty() => Ok(StoreUrl::Memory),
            "redb" => Ok(StoreUrl::Redb(path("redb")?)),
            "sqlite" => Ok(StoreUrl::Sqlite(path("sqlite")?)),
            "dynamodb" if !rest.is_empty() => Ok(StoreUrl::Dynamodb(rest.to_string())),
            _ => Err(StoreUrlError::Invalid(url.to_string())),
        }
    }
}

impl StoreUrl {
    /// The backend this URL names, if this build has it. `create_table`: a DynamoDB table
    /// that does not exist is created (as `--create-table` asks).
    pub async fn open(&self, create_table: bool) -> Result<Arc<dyn Backend>, StoreUrlError> {
        let _ = create_table;
        match self {
            #[cfg(feature = "dynamodb")]
            StoreUrl::Dynamodb(rest) => {
                let mut config = strata_backend_dynamodb::DynamoConfig::parse(rest)
                    .map_err(StoreUrlError::Backend)?;
                config.create_table |= create_table;
                let backend = strata_backend_dynamodb::DynamoBackend::connect(config)
                    .await
                    .map_err(|e| StoreUrlError::Backend(e.to_string()))?;
                Ok(Arc::new(backend))
            }
            #[cfg(feature = "memory")]
            StoreUrl::Memory => Ok(Arc::new(strata_backend_memory::MemoryBackend::new())),
            #[cfg(feature = "redb")]
            StoreUrl::Redb(dir) => Ok(Arc::new(strata_backend_redb::RedbBackend::new(dir))),
            #[cfg(feature = "sqlite")]
            StoreUrl::Sqlite(dir) => Ok(Arc::new(strata_backend_sqlite::SqliteBackend::new(dir))),
            #[allow(unreachable_patterns)]
            other => Err(StoreUrlError::NotCompiled(other.scheme())),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            StoreUrl::Memory => "memory",
            StoreUrl::Redb(_) => "redb",
            StoreUrl::Sqlite(_) => "sqlite",
            StoreUrl::Dynamodb(_) => "dynamodb",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse() {
        assert_eq!("memory:".parse::<StoreUrl>().ok(), Some(StoreUrl::Memory));
        assert_eq!(
            "redb:./d".parse::<StoreUrl>().ok(),
            Some(StoreUrl::Redb("./d".into()))
        );
        assert_eq!(
            "sqlite:/tmp/x".parse::<StoreUrl>().ok(),
            Some(StoreUrl::Sqlite("/tmp/x".into()))
        );
        assert!(matches!(
            "redb:".parse::<StoreUrl>(),
            Err(StoreUrlError::MissingPath { .. })
        ));
        assert!(matches!(
            "postgres://x".parse::<StoreUrl>(),
            Err(StoreUrlError::Invalid(_))
        ));
        assert!(matches!(
            "nothing".parse::<StoreUrl>(),
            Err(StoreUrlError::Invalid(_))
        ));
        assert!(DEFAULT_STORE.parse::<StoreUrl>().is_ok());
    }
}
