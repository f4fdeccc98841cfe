//! `[pipeline]`.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of each bounded channel between tasks.
    pub channel_capacity: usize,
    /// Decode workers (messages are sharded by device, so each device stays in order).
    pub decode_workers: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 8192,
            decode_workers: 2,
        }
    }
}

impl PipelineConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if self.channel_capacity == 0 {
            return Err(invalid("pipeline.channel_capacity", 0, "at least 1"));
        }
        if !(1..=64).contains(&self.decode_workers) {
            return Err(invalid(
                "pipeline.decode_workers",
                self.decode_workers,
                "1..=64",
            ));
        }
        Ok(())
    }
}
