//! Wall-clock time for the I/O shell. Pure code (rules, cases) takes the time as an argument;
//! only the async edges read the clock, through this one function.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::UnixMs;

/// Milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
