//! Physical plausibility of every message: decoding never hands out a NaN, an infinity or a
//! value no real device can produce.

use core::fmt;

use crate::message::{
    Ack, Action, BinTelemetry, Command, Config, Event, LampSchedule, ManholeTelemetry, Status,
    StreetlightTelemetry, Telemetry, TelemetryData, ToiletTelemetry, Uplink,
};

/// What is wrong with a field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Problem {
    /// NaN or infinite.
    NotFinite,
    /// Outside the physically possible (or allowed) range.
    OutOfRange {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// Must be greater than another field (named in the message).
    MustExceed(&'static str),
    /// An alarm that this kind of device cannot raise.
    WrongKind,
}

/// A field that failed validation; `field` is the path as in the JSON (`data.manhole.tilt_deg`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationError {
    /// Dotted path of the field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::NotFinite => write!(f, "{}: must be a finite number", self.field),
            Problem::OutOfRange { min, max } => {
                write!(f, "{}: must be within {min}..={max}", self.field)
            }
            Problem::MustExceed(other) => write!(f, "{}: must be greater than {other}", self.field),
            Problem::WrongKind => write!(f, "{}: not an alarm this device kind raises", self.field),
        }
    }
}

impl core::error::Error for ValidationError {}

/// Implemented by every message: `Ok` when every field is physically plausible.
pub trait Validate {
    /// Check every field.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Check a float against an inclusive range, rejecting NaN and infinities.
pub fn check_f(field: &'static str, v: f64, min: f64, max: f64) -> Result<(), ValidationError> {
    if !v.is_finite() {
        return Err(ValidationError {
            field,
            problem: Problem::NotFinite,
        });
    }
    if v < min || v > max {
        return Err(ValidationError {
            field,
            problem: Problem::OutOfRange { min, max },
        });
    }
    Ok(())
}

fn check_opt_f(
    field: &'static str,
    v: Option<f32>,
    min: f64,
    max: f64,
) -> Result<(), ValidationError> {
    v.map_or(Ok(()), |v| check_f(field, f64::from(v), min, max))
}

fn check_u(field: &'static str, v: u64, min: u64, max: u64) -> Result<(), ValidationError> {
    if v < min || v > max {
        #[allow(clippy::cast_precision_loss)]
        return Err(ValidationError {
            field,
            problem: Problem::OutOfRange {
                min: min as f64,
                max: max as f64,
            },
        });
    }
    Ok(())
}

fn check_opt_u<T: Into<u64>>(
    field: &'static str,
    v: Option<T>,
    min: u64,
    max: u64,
) -> Result<(), ValidationError> {
    v.map_or(Ok(()), |v| check_u(field, v.into(), min, max))
}

/// Physical limits, shared by decoding and the Modbus register maps.
pub mod limits {
    /// Highest plausible mains voltage at a lamp controller, V.
    pub const VOLTAGE_MAX_V: f64 = 500.0;
    /// Highest plausible lamp current, A.
    pub const CURRENT_MAX_A: f64 = 50.0;
    /// Highest plausible lamp power, W.
    pub const POWER_MAX_W: f64 = 10_000.0;
    /// Highest plausible leakage reading, mA.
    pub const LEAKAGE_MAX_MA: f64 = 10_000.0;
    /// Tilt is an angle between two vectors.
    pub const TILT_MAX_DEG: f64 = 180.0;
    /// Fill above 150 % is a sensor fault, not a bin.
    pub const FILL_MAX_PCT: f64 = 150.0;
    /// Device temperature range, °C (bins may burn).
    pub const TEMP_MIN_C: f64 = -50.0;
    /// Device temperature range, °C.
    pub const TEMP_MAX_C: f64 = 300.0;
    /// Water-level probe range, cm.
    pub const WATER_MAX_CM: f64 = 1_000.0;
    /// Gas concentration range of the electrochemical cells, mg/m³.
    pub const GAS_MAX_MG_M3: f64 = 1_000.0;
}

use limits::*;

impl Validate for StreetlightTelemetry {
    fn validate(&self) -> Result<(), ValidationError> {
        check_u("data.streetlight.dim_pct", self.dim_pct.into(), 0, 100)?;
        check_f(
            "data.streetlight.voltage_v",
            self.voltage_v.into(),
            0.0,
            VOLTAGE_MAX_V,
        )?;
        check_f(
            "data.streetlight.current_a",
            self.current_a.into(),
            0.0,
            CURRENT_MAX_A,
        )?;
        check_f(
            "data.streetlight.power_w",
            self.power_w.into(),
            0.0,
            POWER_MAX_W,
        )?;
        check_f(
            "data.streetlight.leakage_ma",
            self.leakage_ma.into(),
            0.0,
            LEAKAGE_MAX_MA,
        )
    }
}

impl Validate for ManholeTelemetry {
    fn validate(&self) -> Result<(), ValidationError> {
        check_f(
            "data.manhole.tilt_deg",
            self.tilt_deg.into(),
            0.0,
            TILT_MAX_DEG,
        )?;
        check_opt_f(
            "data.manhole.water_level_cm",
            self.water_level_cm,
            0.0,
            WATER_MAX_CM,
        )?;
        check_opt_f(
            "data.manhole.temperature_c",
            self.temperature_c,
            TEMP_MIN_C,
            TEMP_MAX_C,
        )?;
        check_u("data.manhole.battery_pct", self.battery_pct.into(), 0, 100)
    }
}

impl Validate for BinTelemetry {
    fn validate(&self) -> Result<(), ValidationError> {
        check_f("data.bin.fill_pct", self.fill_pct.into(), 0.0, FILL_MAX_PCT)?;
        check_f(
            "data.bin.temperature_c",
            self.temperature_c.into(),
            TEMP_MIN_C,
            TEMP_MAX_C,
        )?;
        check_opt_f("data.bin.tilt_deg", self.tilt_deg, 0.0, TILT_MAX_DEG)?;
        check_u("data.bin.battery_pct", self.battery_pct.into(), 0, 100)
    }
}

impl Validate for ToiletTelemetry {
    fn validate(&self) -> Result<(), ValidationError> {
        check_f(
            "data.toilet.nh3_mg_m3",
            self.nh3_mg_m3.into(),
            0.0,
            GAS_MAX_MG_M3,
        )?;
        check_f(
            "data.toilet.h2s_mg_m3",
            self.h2s_mg_m3.into(),
            0.0,
            GAS_MAX_MG_M3,
        )?;
        check_opt_f(
            "data.toilet.nh3_avg_mg_m3",
            self.nh3_avg_mg_m3,
            0.0,
            GAS_MAX_MG_M3,
        )?;
        check_opt_f(
            "data.toilet.h2s_avg_mg_m3",
            self.h2s_avg_mg_m3,
            0.0,
            GAS_MAX_MG_M3,
        )?;
        check_opt_f(
            "data.toilet.temperature_c",
            self.temperature_c,
            TEMP_MIN_C,
            TEMP_MAX_C,
        )?;
        check_opt_f("data.toilet.humidity_pct", self.humidity_pct, 0.0, 100.0)?;
        check_opt_u("data.toilet.battery_pct", self.battery_pct, 0, 100)
    }
}

impl Validate for TelemetryData {
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Streetlight(d) => d.validate(),
            Self::Manhole(d) => d.validate(),
            Self::Bin(d) => d.validate(),
            Self::Toilet(d) => d.validate(),
        }
    }
}

impl Validate for Telemetry {
    fn validate(&self) -> Result<(), ValidationError> {
        self.data.validate()
    }
}

impl Validate for Event {
    fn validate(&self) -> Result<(), ValidationError> {
        check_opt_f("value", self.value, -1.0e9, 1.0e9)
    }
}

impl Validate for Status {
    fn validate(&self) -> Result<(), ValidationError> {
        check_opt_u("battery_pct", self.battery_pct, 0, 100)?;
        if let Some(rssi) = self.rssi_dbm {
            if !(-150..=0).contains(&rssi) {
                return Err(ValidationError {
                    field: "rssi_dbm",
                    problem: Problem::OutOfRange {
                        min: -150.0,
                        max: 0.0,
                    },
                });
            }
        }
        Ok(())
    }
}

impl Validate for Ack {
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

impl Validate for Uplink {
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Telemetry(m) => m.validate(),
            Self::Event(m) => m.validate(),
            Self::Status(m) => m.validate(),
            Self::Ack(m) => m.validate(),
        }
    }
}

impl Validate for LampSchedule {
    fn validate(&self) -> Result<(), ValidationError> {
        check_f("schedule.lat_deg", self.lat_deg, -90.0, 90.0)?;
        check_f("schedule.lon_deg", self.lon_deg, -180.0, 180.0)?;
        let offset = |field, v: i16| check_f(field, f64::from(v), -120.0, 120.0);
        offset("schedule.on_offset_min", self.on_offset_min)?;
        offset("schedule.off_offset_min", self.off_offset_min)?;
        check_opt_u("schedule.night_dim_pct", self.night_dim_pct, 0, 100)?;
        check_opt_u("schedule.dim_from_min", self.dim_from_min, 0, 1439)?;
        check_opt_u("schedule.dim_to_min", self.dim_to_min, 0, 1439)?;
        check_f(
            "schedule.utc_offset_min",
            self.utc_offset_min.into(),
            -840.0,
            840.0,
        )
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ValidationError> {
        check_opt_u("report_interval_s", self.report_interval_s, 1, 86_400)?;
        check_opt_u(
            "heartbeat_interval_s",
            self.heartbeat_interval_s,
            10,
            172_800,
        )?;
        check_opt_f("deadband", self.deadband, 0.0, 1_000.0)?;
        check_opt_u("hold_s", self.hold_s, 0, 3_600)?;
        check_opt_f("tilt_alarm_deg", self.tilt_alarm_deg, 1.0, 90.0)?;
        check_opt_f("tilt_open_deg", self.tilt_open_deg, 2.0, TILT_MAX_DEG)?;
        check_opt_f("tilt_hysteresis_deg", self.tilt_hysteresis_deg, 0.0, 20.0)?;
        check_opt_f("water_high_cm", self.water_high_cm, 0.0, WATER_MAX_CM)?;
        check_opt_u("bin_depth_mm", self.bin_depth_mm, 100, 5_000)?;
        check_opt_f("full_pct", self.full_pct, 10.0, 100.0)?;
        check_opt_f("overflow_pct", self.overflow_pct, 20.0, FILL_MAX_PCT)?;
        check_opt_f("fill_hysteresis_pct", self.fill_hysteresis_pct, 0.0, 30.0)?;
        check_opt_f("fire_temp_c", self.fire_temp_c, 30.0, 150.0)?;
        check_opt_f("nh3_limit_mg_m3", self.nh3_limit_mg_m3, 0.001, 100.0)?;
        check_opt_f("h2s_limit_mg_m3", self.h2s_limit_mg_m3, 0.001, 100.0)?;
        check_opt_f("odour_hysteresis_pct", self.odour_hysteresis_pct, 0.0, 50.0)?;
        check_opt_u("odour_window_s", self.odour_window_s, 60, 3_600)?;
        check_opt_u("battery_low_pct", self.battery_low_pct, 1, 90)?;
        check_opt_f("min_current_a", self.min_current_a, 0.001, CURRENT_MAX_A)?;
        check_opt_f("leakage_limit_ma", self.leakage_limit_ma, 1.0, 1_000.0)?;
        check_opt_f("supply_min_v", self.supply_min_v, 10.0, VOLTAGE_MAX_V)?;
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        if let (Some(alarm), Some(open)) = (self.tilt_alarm_deg, self.tilt_open_deg) {
            if open <= alarm {
                return Err(ValidationError {
                    field: "tilt_open_deg",
                    problem: Problem::MustExceed("tilt_alarm_deg"),
                });
            }
        }
        if let (Some(full), Some(over)) = (self.full_pct, self.overflow_pct) {
            if over <= full {
                return Err(ValidationError {
                    field: "overflow_pct",
                    problem: Problem::MustExceed("full_pct"),
                });
            }
        }
        if let (Some(report), Some(heartbeat)) = (self.report_interval_s, self.heartbeat_interval_s)
        {
            if heartbeat < report {
                return Err(ValidationError {
                    field: "heartbeat_interval_s",
                    problem: Problem::MustExceed("report_interval_s"),
                });
            }
        }
        Ok(())
    }
}

impl Validate for Command {
    fn validate(&self) -> Result<(), ValidationError> {
        let expires = |v: Option<u32>| check_opt_u("action.expires_s", v, 1, 604_800);
        match self.action {
            Action::LampOn { dim_pct, expires_s } => {
                check_opt_u("action.lamp_on.dim_pct", dim_pct, 0, 100)?;
                expires(expires_s)
            }
            Action::LampOff { expires_s } => expires(expires_s),
            Action::Dim { pct, expires_s } => {
                check_u("action.dim.pct", pct.into(), 0, 100)?;
                expires(expires_s)
            }
            Action::ResumeSchedule | Action::RequestReport | Action::Reboot => Ok(()),
        }
    }
}
