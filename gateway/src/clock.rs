//! Time for the I/O shell. Pure code (rules, cases) takes the time as an argument; only the
//! async edges read the clock, through a [`Clock`] handed to them at start-up.
//!
//! A clock is the wall clock, or a *scaled* clock for simulations: simulated time `start_ms`
//! at the wall instant `anchor_wall_ms`, running `speed` times faster than wall time (a night
//! in a minute at 720×). A simulator and the gateway given the same three numbers agree on the
//! time, so holds, offline timers, due times and verify windows all run on simulated time.

mod config;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use config::ClockConfig;

use crate::model::UnixMs;

/// Wall-clock milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn wall_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The gateway's notion of now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// Wall time (ms) at which the clock read `start_ms`.
    anchor_wall_ms: UnixMs,
    /// Clock time at the anchor.
    start_ms: UnixMs,
    /// Clock seconds per wall second (1 for the wall clock).
    speed: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::WALL
    }
}

impl Clock {
    /// The wall clock.
    pub const WALL: Self = Self {
        anchor_wall_ms: 0,
        start_ms: 0,
        speed: 1.0,
    };

    /// A clock that read `start_ms` at wall time `anchor_wall_ms` and runs `speed` times
    /// faster than wall time. `speed` must be positive and finite (the configuration checks).
    pub fn scaled(anchor_wall_ms: UnixMs, start_ms: UnixMs, speed: f64) -> Self {
        Self {
            anchor_wall_ms,
            start_ms,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// Is this the plain wall clock?
    pub fn is_wall(&self) -> bool {
        *self == Self::WALL
    }

    /// Clock seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Milliseconds since the Unix epoch on this clock.
    pub fn now_ms(&self) -> UnixMs {
        self.at_wall(wall_ms())
    }

    /// The clock's reading at a wall time.
    pub fn at_wall(&self, wall: UnixMs) -> UnixMs {
        if self.is_wall() {
            return wall;
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let elapsed = ((wall - self.anchor_wall_ms) as f64 * self.speed) as i64;
        self.start_ms.saturating_add(elapsed)
    }

    /// How much wall time `clock` time takes on this clock.
    pub fn wall_duration(&self, clock: Duration) -> Duration {
        clock.div_f64(self.speed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_the_system_clock() {
        let before = wall_ms();
        let now = Clock::WALL.now_ms();
        assert!(now >= before && now - before < 1000);
        assert!(Clock::default().is_wall());
    }

    #[test]
    fn scaled_clock_runs_from_its_anchor() {
        let c = Clock::scaled(1_000_000, 5_000_000, 600.0);
        assert_eq!(c.at_wall(1_000_000), 5_000_000);
        // One wall second is ten simulated minutes.
        assert_eq!(c.at_wall(1_001_000), 5_000_000 + 600_000);
        assert_eq!(
            c.wall_duration(Duration::from_secs(600)),
            Duration::from_secs(1)
        );
        assert!(!c.is_wall());
        // Nonsense speeds fall back to real time rather than freezing or reversing.
        assert_eq!(Clock::scaled(0, 0, 0.0).speed(), 1.0);
        assert_eq!(Clock::scaled(0, 0, f64::NAN).speed(), 1.0);
    }
}
