//! `[inventory]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

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
    /// CSV imports (`POST /api/devices/import`) handled at once, upload included; a further
    /// one is answered 429 `too_many_imports`. Each holds up to `http.max_body_bytes` and a
    /// store transaction.
    pub max_concurrent_imports: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            import_csv: None,
            max_unregistered: 10_000,
            unregistered_ttl_s: 7 * 86_400,
            max_concurrent_imports: 2,
        }
    }
}

impl InventoryConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if !(1..=64).contains(&self.max_concurrent_imports) {
            return Err(invalid(
                "inventory.max_concurrent_imports",
                self.max_concurrent_imports,
                "1..=64",
            ));
        }
        Ok(())
    }
}
