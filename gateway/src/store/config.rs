//! `[store]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid, redact_url};

/// Store backends compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// SQLite file (WAL): `store.path`.
    Sqlite,
    /// PostgreSQL server: `store.url`.
    Postgres,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend.
    pub backend: StoreBackend,
    /// SQLite database file; its directory is created if missing. With PostgreSQL, the
    /// directory still holds the gateway's local files (the embedded broker's sessions).
    pub path: PathBuf,
    /// PostgreSQL URL, `postgres://user:password@host:port/database` (backend `postgres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Most connections to PostgreSQL.
    pub max_connections: u32,
    /// Readings kept per device in the history table (0 = none).
    pub history_per_device: u32,
    /// Most writes in one transaction.
    pub batch_max: usize,
    /// How often the history is trimmed to `history_per_device`, s.
    pub trim_interval_s: u64,
    /// How often the rule state is snapshotted, s.
    pub snapshot_interval_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("./streetgate-data/streetgate.db"),
            url: None,
            max_connections: 8,
            history_per_device: 100,
            batch_max: 8192,
            trim_interval_s: 60,
            snapshot_interval_s: 30,
        }
    }
}

impl StoreConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if self.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "\"\"", "a file path"));
        }
        if self.backend == StoreBackend::Postgres {
            let url = self.url.as_deref().unwrap_or_default();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "store.url",
                    format!("{:?}", redact_url(url)),
                    "postgres://user:password@host:port/database (store.backend = \"postgres\")",
                ));
            }
            if !(1..=1000).contains(&self.max_connections) {
                return Err(invalid(
                    "store.max_connections",
                    self.max_connections,
                    "1 to 1000",
                ));
            }
        }
        if self.batch_max == 0 {
            return Err(invalid("store.batch_max", 0, "at least 1"));
        }
        if self.trim_interval_s == 0 {
            return Err(invalid("store.trim_interval_s", 0, "at least 1 s"));
        }
        if self.snapshot_interval_s == 0 {
            return Err(invalid("store.snapshot_interval_s", 0, "at least 1 s"));
        }
        Ok(())
    }
}
