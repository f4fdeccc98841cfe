//! `[modbus]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ModbusSettings;
use crate::settings::{Checked, invalid};

/// `[modbus]`: polling of Modbus TCP/RTU devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Interval between two polls of one unit, ms.
    pub poll_interval_ms: u64,
    /// Timeout of one request (and of connecting), ms.
    pub request_timeout_ms: u64,
    /// Consecutive failures before a unit is reported offline.
    pub offline_after: u32,
    /// Longest back-off of a failing unit or endpoint, ms.
    pub max_backoff_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for ModbusConfig {
    fn default() -> Self {
        let d = ModbusSettings::default();
        Self {
            poll_interval_ms: ms(d.poll_interval),
            request_timeout_ms: ms(d.request_timeout),
            offline_after: d.offline_after,
            max_backoff_ms: ms(d.max_backoff),
        }
    }
}

impl ModbusConfig {
    /// The poller's settings.
    pub fn settings(&self) -> ModbusSettings {
        ModbusSettings {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            offline_after: self.offline_after,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            clock: crate::clock::Clock::WALL,
        }
    }

    /// Check the section.
    pub fn validate(&self) -> Checked {
        let m = self;
        if m.poll_interval_ms < 100 {
            return Err(invalid(
                "modbus.poll_interval_ms",
                m.poll_interval_ms,
                "at least 100 ms",
            ));
        }
        if !(10..=60_000).contains(&m.request_timeout_ms) {
            return Err(invalid(
                "modbus.request_timeout_ms",
                m.request_timeout_ms,
                "10..=60000 ms",
            ));
        }
        if m.offline_after == 0 {
            return Err(invalid("modbus.offline_after", 0, "at least 1"));
        }
        if m.max_backoff_ms < m.request_timeout_ms {
            return Err(invalid(
                "modbus.max_backoff_ms",
                m.max_backoff_ms,
                format!(
                    "at least modbus.request_timeout_ms ({})",
                    m.request_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}
