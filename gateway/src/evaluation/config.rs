//! `[evaluation]`: the monthly evaluation (考核), its ranking and the bulletin schedule.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// `[evaluation]`. See `docs/evaluation.md` for every figure and the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Teams and grids on the red list (红榜): the top N by score.
    pub red_n: u32,
    /// Teams and grids on the black list (黑榜): the bottom N by score.
    pub black_n: u32,
    /// Weight of the on-time rate (按期处置率) in the score.
    pub weight_on_time: f64,
    /// Weight of the return rate (退单率, counted as 1 − rate) in the score.
    pub weight_return: f64,
    /// Weight of the rework rate (返工率, counted as 1 − rate) in the score.
    pub weight_rework: f64,
    /// A team or grid is ranked only with at least this many handled cases in the period.
    pub min_handled: u32,
    /// Ranked last this many periods running (连续排名末位) flags a team or grid.
    pub last_place_periods: u32,
    /// Worst lighting segments listed.
    pub worst_segments: u32,
    /// Directory the monthly bulletin and CSVs are written to; empty: not written.
    pub report_dir: PathBuf,
    /// Day of the month (city time) on which the previous month's reports are written.
    pub report_day: u32,
    /// Hour of that day (city time, 0–23) from which they are written.
    pub report_hour: u32,
    /// How often the schedule looks at the clock and records the lighting figures, s.
    pub check_interval_s: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            red_n: 3,
            black_n: 3,
            weight_on_time: 0.6,
            weight_return: 0.2,
            weight_rework: 0.2,
            min_handled: 1,
            last_place_periods: 3,
            worst_segments: 10,
            report_dir: PathBuf::new(),
            report_day: 1,
            report_hour: 6,
            check_interval_s: 60,
        }
    }
}

impl EvaluationConfig {
    /// Whether the schedule writes reports.
    pub fn reports_enabled(&self) -> bool {
        !self.report_dir.as_os_str().is_empty()
    }

    /// Check the section.
    pub fn validate(&self) -> Checked {
        for (key, w) in [
            ("evaluation.weight_on_time", self.weight_on_time),
            ("evaluation.weight_return", self.weight_return),
            ("evaluation.weight_rework", self.weight_rework),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(invalid(key, w, "a weight of 0 or more"));
            }
        }
        if self.weight_on_time + self.weight_return + self.weight_rework <= 0.0 {
            return Err(invalid(
                "evaluation.weight_on_time",
                self.weight_on_time,
                "weights whose sum is above 0",
            ));
        }
        if self.red_n > 100 {
            return Err(invalid("evaluation.red_n", self.red_n, "0 to 100"));
        }
        if self.black_n > 100 {
            return Err(invalid("evaluation.black_n", self.black_n, "0 to 100"));
        }
        if !(1..=24).contains(&self.last_place_periods) {
            return Err(invalid(
                "evaluation.last_place_periods",
                self.last_place_periods,
                "1 to 24 periods",
            ));
        }
        if self.worst_segments > 1000 {
            return Err(invalid(
                "evaluation.worst_segments",
                self.worst_segments,
                "0 to 1000",
            ));
        }
        if !(1..=28).contains(&self.report_day) {
            return Err(invalid(
                "evaluation.report_day",
                self.report_day,
                "a day of the month from 1 to 28",
            ));
        }
        if self.report_hour > 23 {
            return Err(invalid(
                "evaluation.report_hour",
                self.report_hour,
                "an hour from 0 to 23",
            ));
        }
        if !(1..=3600).contains(&self.check_interval_s) {
            return Err(invalid(
                "evaluation.check_interval_s",
                self.check_interval_s,
                "1 to 3600 seconds",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_key() {
        assert_eq!(EvaluationConfig::default().validate(), Ok(()));
        assert!(!EvaluationConfig::default().reports_enabled());
        let bad = |f: fn(&mut EvaluationConfig)| {
            let mut c = EvaluationConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.report_day = 31),
            "evaluation.report_day = 31: expected a day of the month from 1 to 28"
        );
        assert!(bad(|c| c.report_hour = 24).starts_with("evaluation.report_hour = 24"));
        assert!(bad(|c| c.weight_return = -1.0).starts_with("evaluation.weight_return = -1"));
        assert!(
            bad(|c| {
                c.weight_on_time = 0.0;
                c.weight_return = 0.0;
                c.weight_rework = 0.0;
            })
            .contains("sum")
        );
        assert!(bad(|c| c.last_place_periods = 0).starts_with("evaluation.last_place_periods"));
        assert!(bad(|c| c.check_interval_s = 0).starts_with("evaluation.check_interval_s"));
    }
}
