//! `[rules]`: the thresholds must make sense together.

use super::RulesConfig;
use crate::settings::{Checked, invalid};

impl RulesConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        let r = self;
        if !(r.tilt_alarm_deg > 0.0
            && r.tilt_alarm_deg < r.tilt_open_deg
            && r.tilt_open_deg <= 180.0)
        {
            return Err(invalid(
                "rules.tilt_alarm_deg",
                r.tilt_alarm_deg,
                format!(
                    "above 0 and below rules.tilt_open_deg ({}), which is at most 180",
                    r.tilt_open_deg
                ),
            ));
        }
        if !(r.full_pct > 0.0 && r.full_pct < r.overflow_pct && r.overflow_pct <= 150.0) {
            return Err(invalid(
                "rules.full_pct",
                r.full_pct,
                format!(
                    "above 0 and below rules.overflow_pct ({}), which is at most 150",
                    r.overflow_pct
                ),
            ));
        }
        if r.nh3_limit_mg_m3.iter().any(|l| *l <= 0.0) || r.h2s_limit_mg_m3 <= 0.0 {
            return Err(invalid(
                "rules.nh3_limit_mg_m3",
                format!("{:?} / h2s {}", r.nh3_limit_mg_m3, r.h2s_limit_mg_m3),
                "positive limits (mg/m³)",
            ));
        }
        if r.report_interval_s.contains(&0) || r.offline_missed == 0 {
            return Err(invalid(
                "rules.report_interval_s",
                format!("{:?} × {}", r.report_interval_s, r.offline_missed),
                "positive intervals per kind (streetlight, manhole, bin, toilet) and rules.offline_missed ≥ 1",
            ));
        }
        if !(r.outage_fraction > 0.0 && r.outage_fraction <= 1.0) {
            return Err(invalid(
                "rules.outage_fraction",
                r.outage_fraction,
                "a fraction above 0 and at most 1 (0.2 = a fifth of the devices heard from)",
            ));
        }
        if r.leakage_limit_ma.is_nan() || r.leakage_limit_ma <= 0.0 {
            return Err(invalid(
                "rules.leakage_limit_ma",
                r.leakage_limit_ma,
                "a positive current, mA (30 = a typical residual-current limit)",
            ));
        }
        if !crate::inventory::is_code(&r.outage_grid) {
            return Err(invalid(
                "rules.outage_grid",
                &r.outage_grid,
                crate::inventory::CODE_RULE,
            ));
        }
        if r.outage_min_devices == 0 {
            return Err(invalid(
                "rules.outage_min_devices",
                r.outage_min_devices,
                "at least 1",
            ));
        }
        for (key, target) in [
            ("rules.lighting.target_main", r.lighting.target_main),
            (
                "rules.lighting.target_secondary",
                r.lighting.target_secondary,
            ),
            ("rules.lighting.target_back", r.lighting.target_back),
        ] {
            if !(0.0..=1.0).contains(&target) {
                return Err(invalid(key, target, "a fraction 0..=1 (0.99 = 99 %)"));
            }
        }
        Ok(())
    }
}
