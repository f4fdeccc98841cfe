//! `[inventory]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[inventory]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// CSV file imported (upserted) at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_csv: Option<PathBuf>,
    /// Unregistered devices kept in the list (the most recently seen); trimmed every
    /// `store.trim_interval_s`, so a flood of made-up ids cannot grow the store without bound.
    pub max_unregistered: u64,
    /// An unregistered device not seen for this long leaves the list, s.
    pub unregistered_ttl_s: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            import_csv: None,
            max_unregistered: 10_000,
            unregistered_ttl_s: 7 * 86_400,
        }
    }
}
