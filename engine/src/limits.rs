//! Per-database limits and options. Defaults are the Deno KV limits, so that a KV Connect
//! client meets exactly the limits it expects.

use serde::{Deserialize, Serialize};

use crate::backend::Durability;

/// Every limit the engine checks before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest key a write may name, in bytes.
    pub max_write_key_bytes: usize,
    /// Largest key a read may name, in bytes (one more than writes: a range end is `key ++ 0x00`).
    pub max_read_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Ranges in one snapshot read.
    pub max_read_ranges: usize,
    /// Entries one snapshot read may return (the sum of its range limits).
    pub max_read_entries: usize,
    /// Checks in one atomic write.
    pub max_checks: usize,
    /// Mutations plus enqueues in one atomic write.
    pub max_mutations: usize,
    /// Keys + values + payloads + 4 bytes per backoff entry, in one atomic write.
    pub max_write_bytes: usize,
    /// Keys one watch may name.
    pub max_watched_keys: usize,
    /// How far into the future a message may be scheduled, in milliseconds.
    pub max_enqueue_delay_ms: u64,
    /// Dead-letter keys per message.
    pub max_dead_letter_keys: usize,
    /// Entries in a message's backoff schedule.
    pub max_backoff_entries: usize,
    /// Largest single backoff step, in milliseconds.
    pub max_backoff_ms: u32,
    /// Keys and values written by one interactive transaction, in bytes.
    pub max_transaction_bytes: usize,
}

impl Limits {
    /// Refuse limits the stored formats cannot honour.
    pub fn validate(&self) -> Result<(), crate::EngineError> {
        let u16_max = u16::MAX as usize;
        for (name, v) in [
            ("max_mutations", self.max_mutations),
            ("max_dead_letter_keys", self.max_dead_letter_keys),
            ("max_backoff_entries", self.max_backoff_entries),
        ] {
            if v > u16_max {
                return Err(crate::EngineError::InvalidRequest(format!(
                    "limit {name} may be at most {u16_max}, got {v}"
                )));
            }
        }
        if self.max_read_key_bytes < self.max_write_key_bytes {
            return Err(crate::EngineError::InvalidRequest(
                "max_read_key_bytes must be at least max_write_key_bytes".into(),
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_write_key_bytes: 2048,
            max_read_key_bytes: 2049,
            max_value_bytes: 65536,
            max_read_ranges: 10,
            max_read_entries: 1000,
            max_checks: 100,
            max_mutations: 1000,
            max_write_bytes: 819_200,
            max_watched_keys: 10,
            max_enqueue_delay_ms: 30 * 24 * 3600 * 1000,
            max_dead_letter_keys: 10,
            max_backoff_entries: 10,
            max_backoff_ms: 3_600_000,
            max_transaction_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Options fixed when a database is created and stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseOptions {
    pub limits: Limits,
    /// `sync` (default): a commit returns only after its data is on stable storage.
    pub durability: Durability,
    /// How long older versions stay readable (time travel), in milliseconds.
    pub history_retention_ms: u64,
    /// Keep a change feed from creation on ([`crate::Database::changes`]). A database
    /// without one can start it later with [`crate::Database::enable_change_feed`]; on a
    /// store several processes share it is always kept.
    #[serde(default)]
    pub change_feed: bool,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            limits: Limits::default(),
            durability: Durability::Sync,
            history_retention_ms: 60_000,
            change_feed: false,
        }
    }
}

/// Options of the running engine (not stored).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Options for databases created without explicit ones.
    pub default_database: DatabaseOptions,
    /// How long a transaction may run before its commit fails as too old, in milliseconds.
    pub transaction_window_ms: u64,
    /// How often the expiry sweeper runs, at the latest, in milliseconds.
    pub sweep_interval_ms: u64,
    /// How often old versions are garbage-collected, in milliseconds.
    pub gc_interval_ms: u64,
    /// Most commits that share one backend write.
    pub max_group_commits: usize,
    /// On a store that orders appends ([`crate::Store::orders_appends`], a cluster node):
    /// how many groups may be in its log at once, each proposed while the ones before it
    /// replicate.
    pub max_groups_in_flight: usize,
    /// On a store that orders appends: how long, at most, the next group waits for the
    /// commits that the group just answered will send again, before it goes to the log (see
    /// `engine/src/linger.rs`). Zero: never wait.
    pub group_linger: std::time::Duration,
    /// Whether to run the background sweeper and GC (off for tools that open a store briefly).
    pub background_tasks: bool,
    /// With a store several processes share: how often to look for the others' commits.
    pub follow_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_database: DatabaseOptions::default(),
            transaction_window_ms: 60_000,
            sweep_interval_ms: 1_000,
            gc_interval_ms: 10_000,
            max_group_commits: 256,
            max_groups_in_flight: 1,
            group_linger: std::time::Duration::from_millis(2),
            background_tasks: true,
            follow_interval_ms: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_the_stored_formats_cannot_hold_are_refused() {
        assert!(Limits::default().validate().is_ok());
        for bad in [
            Limits {
                max_mutations: 70_000,
                ..Limits::default()
            },
            Limits {
                max_dead_letter_keys: 70_000,
                ..Limits::default()
            },
            Limits {
                max_backoff_entries: 70_000,
                ..Limits::default()
            },
            Limits {
                max_read_key_bytes: 100,
                ..Limits::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(crate::EngineError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }
}
