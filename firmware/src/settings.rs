//! Effective device settings: defaults per kind (docs/domain.md), merged with downlink config,
//! validated as a whole, persisted across reboots.

use core::fmt::Write;

use serde::{Deserialize, Serialize};
use streetgate_protocols::message::ShortText;
use streetgate_protocols::{Config, DeviceKind, LampSchedule, Validate};

use crate::platform::SettingsStore;

/// Every setting an application uses, always complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Minimum spacing of on-change telemetry, s.
    pub report_interval_s: u32,
    /// Longest silence: telemetry and status are sent at least this often, s.
    pub heartbeat_interval_s: u32,
    /// Report-on-change deadband in the kind's main quantity.
    pub deadband: f32,
    /// Minimum time a condition holds before it is raised, s.
    pub hold_s: u32,
    /// Cover tilt alarm, °.
    pub tilt_alarm_deg: f32,
    /// Cover open, °.
    pub tilt_open_deg: f32,
    /// Tilt hysteresis, °.
    pub tilt_hysteresis_deg: f32,
    /// Water high, cm.
    pub water_high_cm: f32,
    /// Bin depth, mm.
    pub bin_depth_mm: u16,
    /// Bin full, %.
    pub full_pct: f32,
    /// Bin overflow, %.
    pub overflow_pct: f32,
    /// Fill hysteresis, %.
    pub fill_hysteresis_pct: f32,
    /// Fire risk, °C.
    pub fire_temp_c: f32,
    /// NH3 limit, mg/m³.
    pub nh3_limit_mg_m3: f32,
    /// H2S limit, mg/m³.
    pub h2s_limit_mg_m3: f32,
    /// Odour hysteresis, % of the limit.
    pub odour_hysteresis_pct: f32,
    /// Odour moving-average window, s.
    pub odour_window_s: u32,
    /// Low battery, %.
    pub battery_low_pct: u8,
    /// Lamp minimum current when lit, A.
    pub min_current_a: f32,
    /// Lamp leakage limit, mA.
    pub leakage_limit_ma: f32,
    /// Supply-loss voltage, V.
    pub supply_min_v: f32,
    /// Lamp schedule (astronomical clock).
    pub schedule: Option<LampSchedule>,
    /// Calibrated installed gravity vector of a cover (milli-g).
    pub installed_g: Option<[f32; 3]>,
}

impl Settings {
    /// Defaults for a kind, from docs/domain.md.
    pub fn defaults(kind: DeviceKind) -> Self {
        let (report, heartbeat, deadband) = match kind {
            DeviceKind::Streetlight => (60, 900, 5.0),   // W
            DeviceKind::Manhole => (60, 12 * 3600, 2.0), // °
            DeviceKind::Bin => (600, 12 * 3600, 5.0),    // %
            DeviceKind::Toilet => (60, 3600, 0.1),       // mg/m³
        };
        Self {
            report_interval_s: report,
            heartbeat_interval_s: heartbeat,
            deadband,
            hold_s: 5,
            tilt_alarm_deg: 10.0,
            tilt_open_deg: 60.0,
            tilt_hysteresis_deg: 2.0,
            water_high_cm: 150.0,
            bin_depth_mm: 1000,
            full_pct: 80.0,
            overflow_pct: 100.0,
            fill_hysteresis_pct: 10.0,
            fire_temp_c: 60.0,
            nh3_limit_mg_m3: 1.0,
            h2s_limit_mg_m3: 0.01,
            odour_hysteresis_pct: 20.0,
            odour_window_s: 600,
            battery_low_pct: 20,
            min_current_a: 0.05,
            leakage_limit_ma: 30.0,
            supply_min_v: 100.0,
            schedule: None,
            installed_g: None,
        }
    }

    /// These settings as a complete protocol config (for validation and reporting).
    pub fn to_config(&self, config_id: u32) -> Config {
        Config {
            config_id,
            report_interval_s: Some(self.report_interval_s),
            heartbeat_interval_s: Some(self.heartbeat_interval_s),
            deadband: Some(self.deadband),
            hold_s: Some(self.hold_s),
            tilt_alarm_deg: Some(self.tilt_alarm_deg),
            tilt_open_deg: Some(self.tilt_open_deg),
            tilt_hysteresis_deg: Some(self.tilt_hysteresis_deg),
            water_high_cm: Some(self.water_high_cm),
            bin_depth_mm: Some(self.bin_depth_mm),
            full_pct: Some(self.full_pct),
            overflow_pct: Some(self.overflow_pct),
            fill_hysteresis_pct: Some(self.fill_hysteresis_pct),
            fire_temp_c: Some(self.fire_temp_c),
            nh3_limit_mg_m3: Some(self.nh3_limit_mg_m3),
            h2s_limit_mg_m3: Some(self.h2s_limit_mg_m3),
            odour_hysteresis_pct: Some(self.odour_hysteresis_pct),
            odour_window_s: Some(self.odour_window_s),
            battery_low_pct: Some(self.battery_low_pct),
            min_current_a: Some(self.min_current_a),
            leakage_limit_ma: Some(self.leakage_limit_ma),
            supply_min_v: Some(self.supply_min_v),
            schedule: self.schedule,
        }
    }

    /// Merge a partial config; the result is validated as a whole and only then applied. On
    /// rejection the settings are unchanged and the reason names the field.
    pub fn apply(&mut self, c: &Config) -> Result<(), ShortText> {
        let mut next = self.clone();
        macro_rules! merge {
            ($($field:ident),*) => { $( if let Some(v) = c.$field { next.$field = v; } )* };
        }
        merge!(
            report_interval_s,
            heartbeat_interval_s,
            deadband,
            hold_s,
            tilt_alarm_deg,
            tilt_open_deg,
            tilt_hysteresis_deg,
            water_high_cm,
            bin_depth_mm,
            full_pct,
            overflow_pct,
            fill_hysteresis_pct,
            fire_temp_c,
            nh3_limit_mg_m3,
            h2s_limit_mg_m3,
            odour_hysteresis_pct,
            odour_window_s,
            battery_low_pct,
            min_current_a,
            leakage_limit_ma,
            supply_min_v
        );
        if c.schedule.is_some() {
            next.schedule = c.schedule;
        }
        // Field ranges and cross-field rules of the protocol, applied to the merged whole.
        next.to_config(c.config_id).validate().map_err(|e| {
            let mut reason = ShortText::new();
            let _ = write!(Truncate(&mut reason), "{e}");
            reason
        })?;
        *self = next;
        Ok(())
    }

    /// Persist (magic, version, postcard body, CRC-16).
    pub fn save(&self, store: &mut impl SettingsStore) -> bool {
        let mut buf = [0u8; STORE_LEN];
        buf[..2].copy_from_slice(&STORE_MAGIC);
        let Ok(body) = postcard::to_slice(self, &mut buf[2..STORE_LEN - 2]) else {
            return false;
        };
        let end = 2 + body.len();
        let sum = crc16(&buf[..end]);
        buf[end..end + 2].copy_from_slice(&sum.to_be_bytes());
        store.save(&buf[..end + 2])
    }

    /// Load persisted settings; `None` when absent or corrupt (the caller keeps defaults).
    pub fn load(store: &mut impl SettingsStore) -> Option<Self> {
        let mut buf = [0u8; STORE_LEN];
        let n = store.load(&mut buf)?;
        let data = buf.get(..n)?;
        if n < 4 || data[..2] != STORE_MAGIC {
            return None;
        }
        let (content, sum) = data.split_at(n - 2);
        if crc16(content).to_be_bytes() != sum {
            return None;
        }
        postcard::from_bytes(&content[2..]).ok()
    }
}

const STORE_MAGIC: [u8; 2] = [0x53, 0x01]; // "S", layout version 1
/// Bytes the settings take in storage at most.
pub const STORE_LEN: usize = 192;

/// CRC-16/CCITT-FALSE.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &x in data {
        crc ^= u16::from(x) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes as much as fits.
struct Truncate<'a>(&'a mut ShortText);

impl Write for Truncate<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[derive(Default)]
    struct Mem(Option<Vec<u8>>);
    impl SettingsStore for Mem {
        fn load(&mut self, buf: &mut [u8]) -> Option<usize> {
            let d = self.0.as_ref()?;
            buf.get_mut(..d.len())?.copy_from_slice(d);
            Some(d.len())
        }
        fn save(&mut self, bytes: &[u8]) -> bool {
            self.0 = Some(bytes.to_vec());
            true
        }
    }

    #[test]
    fn defaults_are_valid() {
        for kind in DeviceKind::ALL {
            assert_eq!(Settings::defaults(kind).to_config(0).validate(), Ok(()));
        }
    }

    #[test]
    fn partial_update_and_rejection() {
        let mut s = Settings::defaults(DeviceKind::Manhole);
        s.apply(&Config {
            config_id: 1,
            tilt_alarm_deg: Some(15.0),
            ..Config::default()
        })
        .unwrap();
        assert_eq!(s.tilt_alarm_deg, 15.0);
        let before = s.clone();
        // 70° would be above the (unchanged) 60° open threshold: rejected as a whole.
        let err = s
            .apply(&Config {
                config_id: 2,
                tilt_alarm_deg: Some(70.0),
                report_interval_s: Some(5),
                ..Config::default()
            })
            .unwrap_err();
        assert!(err.starts_with("tilt_open_deg"), "{err}");
        assert_eq!(s, before);
        let err = s
            .apply(&Config {
                config_id: 3,
                nh3_limit_mg_m3: Some(-1.0),
                ..Config::default()
            })
            .unwrap_err();
        assert!(err.starts_with("nh3_limit_mg_m3"), "{err}");
        let err = s
            .apply(&Config {
                config_id: 4,
                heartbeat_interval_s: Some(30),
                ..Config::default()
            })
            .unwrap_err();
        assert!(err.starts_with("heartbeat_interval_s"), "{err}");
    }

    #[test]
    fn persistence() {
        let mut store = Mem::default();
        assert_eq!(Settings::load(&mut store), None);
        let mut s = Settings::defaults(DeviceKind::Streetlight);
        s.installed_g = Some([1.0, 2.0, 3.0]);
        s.schedule = Some(LampSchedule {
            lat_deg: 39.9,
            lon_deg: 116.4,
            on_offset_min: 10,
            off_offset_min: -10,
            night_dim_pct: None,
            dim_from_min: None,
            dim_to_min: None,
            utc_offset_min: 480,
        });
        assert!(s.save(&mut store));
        assert_eq!(Settings::load(&mut store), Some(s));
        if let Some(bytes) = store.0.as_mut() {
            bytes[5] ^= 0x01;
        }
        assert_eq!(Settings::load(&mut store), None);
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }
}
