//! `[commands]`.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// `[commands]`: lamp commands through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// How long a command waits for the device's acknowledgement before it is reported as
    /// timed out, ms.
    pub ack_timeout_ms: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 10_000,
        }
    }
}

impl CommandsConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if !(100..=600_000).contains(&self.ack_timeout_ms) {
            return Err(invalid(
                "commands.ack_timeout_ms",
                self.ack_timeout_ms,
                "100..=600000 ms",
            ));
        }
        Ok(())
    }
}
