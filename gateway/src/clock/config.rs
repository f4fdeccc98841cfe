//! `[clock]`.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// `[clock]`: the gateway's time. The defaults are the wall clock; a simulation sets `speed`
/// (and the simulated start) so that holds, offline timers and time limits follow its clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Clock seconds per wall second (1 = real time).
    pub speed: f64,
    /// Clock time at the anchor, Unix ms. Unset: the wall time at the anchor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// Wall time (Unix ms) at which the clock reads `start_ms`. Unset: the gateway's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_wall_ms: Option<i64>,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            speed: 1.0,
            start_ms: None,
            anchor_wall_ms: None,
        }
    }
}

impl ClockConfig {
    /// The clock, anchored now unless an anchor is configured.
    pub fn clock(&self) -> crate::clock::Clock {
        #[allow(clippy::float_cmp)]
        if self.speed == 1.0 && self.start_ms.is_none() {
            return crate::clock::Clock::WALL;
        }
        let anchor = self.anchor_wall_ms.unwrap_or_else(crate::clock::wall_ms);
        crate::clock::Clock::scaled(anchor, self.start_ms.unwrap_or(anchor), self.speed)
    }

    /// Check the section.
    pub fn validate(&self) -> Checked {
        let c = self;
        if !(c.speed.is_finite() && c.speed > 0.0 && c.speed <= 100_000.0) {
            return Err(invalid(
                "clock.speed",
                c.speed,
                "above 0 and at most 100000 (clock seconds per wall second)",
            ));
        }
        Ok(())
    }
}
