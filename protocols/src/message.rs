//! Every message that crosses the wire, uplink and downlink.
//!
//! Field names carry their units (`voltage_v`, `tilt_deg`, `nh3_mg_m3`) so a payload reads
//! unambiguously without this code at hand. All types are fixed-size (heapless), so firmware can
//! build and parse them without an allocator.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::device::{DeviceId, DeviceKind};

/// Short free text on the wire (firmware versions, ack reasons).
pub type ShortText = heapless::String<64>;

/// Periodic measurement from one device.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Telemetry {
    /// Sender; must equal the device id in the topic.
    pub device_id: DeviceId,
    /// Per-device uplink sequence number (wraps at `u32::MAX`).
    pub seq: u32,
    /// Device clock, Unix milliseconds, when the device has a clock.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ts_ms: Option<u64>,
    /// The kind-specific readings.
    pub data: TelemetryData,
}

/// Kind-specific readings; the variant name is the device kind.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum TelemetryData {
    /// Streetlight controller readings.
    Streetlight(StreetlightTelemetry),
    /// Manhole-cover sensor readings.
    Manhole(ManholeTelemetry),
    /// Waste-bin sensor readings.
    Bin(BinTelemetry),
    /// Toilet odour sensor readings.
    Toilet(ToiletTelemetry),
}

impl TelemetryData {
    /// The device kind these readings belong to.
    pub const fn kind(&self) -> DeviceKind {
        match self {
            Self::Streetlight(_) => DeviceKind::Streetlight,
            Self::Manhole(_) => DeviceKind::Manhole,
            Self::Bin(_) => DeviceKind::Bin,
            Self::Toilet(_) => DeviceKind::Toilet,
        }
    }
}

/// Streetlight controller readings (uCIFI / LwM2M 3416 style metering).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct StreetlightTelemetry {
    /// Relay closed (the controller is driving the lamp).
    pub lamp_on: bool,
    /// Dimming level 0..=100 %.
    pub dim_pct: u8,
    /// Supply voltage, V RMS.
    pub voltage_v: f32,
    /// Lamp current, A RMS.
    pub current_a: f32,
    /// Active power, W.
    pub power_w: f32,
    /// Cumulative energy, Wh.
    pub energy_wh: u32,
    /// Leakage current, mA.
    #[cfg_attr(feature = "serde", serde(default))]
    pub leakage_ma: f32,
    /// Cumulative lamp operating hours.
    #[cfg_attr(feature = "serde", serde(default))]
    pub operating_h: u32,
    /// Cumulative relay switch count.
    #[cfg_attr(feature = "serde", serde(default))]
    pub switch_count: u32,
}

/// Manhole-cover sensor readings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ManholeTelemetry {
    /// Angle between the current and the calibrated installed gravity vector, 0..=180°.
    pub tilt_deg: f32,
    /// Water level below the cover's reference, cm (optional level probe).
    #[cfg_attr(feature = "serde", serde(default))]
    pub water_level_cm: Option<f32>,
    /// Enclosure temperature, °C.
    #[cfg_attr(feature = "serde", serde(default))]
    pub temperature_c: Option<f32>,
    /// Battery, 0..=100 %.
    pub battery_pct: u8,
}

/// Waste-bin sensor readings (OMA 3435 filling level).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BinTelemetry {
    /// Fill level from the bin's depth, 0..=150 % (above 100 % = overflowing).
    pub fill_pct: f32,
    /// Measured distance to the refuse surface, mm.
    #[cfg_attr(feature = "serde", serde(default))]
    pub distance_mm: Option<u16>,
    /// Temperature inside the bin, °C (fire risk).
    pub temperature_c: f32,
    /// Bin tilt from upright, 0..=180° (knocked over).
    #[cfg_attr(feature = "serde", serde(default))]
    pub tilt_deg: Option<f32>,
    /// Battery, 0..=100 %.
    pub battery_pct: u8,
}

/// Public-toilet odour readings (GB/T 17217).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ToiletTelemetry {
    /// Ammonia, latest sample, mg/m³.
    pub nh3_mg_m3: f32,
    /// Hydrogen sulphide, latest sample, mg/m³.
    pub h2s_mg_m3: f32,
    /// Ammonia moving average over the configured window, mg/m³.
    #[cfg_attr(feature = "serde", serde(default))]
    pub nh3_avg_mg_m3: Option<f32>,
    /// Hydrogen sulphide moving average over the configured window, mg/m³.
    #[cfg_attr(feature = "serde", serde(default))]
    pub h2s_avg_mg_m3: Option<f32>,
    /// Air temperature, °C.
    #[cfg_attr(feature = "serde", serde(default))]
    pub temperature_c: Option<f32>,
    /// Relative humidity, %.
    #[cfg_attr(feature = "serde", serde(default))]
    pub humidity_pct: Option<f32>,
    /// Battery, 0..=100 %, for battery-powered units.
    #[cfg_attr(feature = "serde", serde(default))]
    pub battery_pct: Option<u8>,
}

/// What a device alarms about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AlarmKind {
    /// Relay closed but no lamp current.
    LampFailure,
    /// Lamp lit when its schedule says off.
    DayBurner,
    /// Relay does not follow its command (stuck open or welded).
    RelayFailure,
    /// No mains voltage at the controller.
    SupplyLoss,
    /// Leakage current above the limit.
    Leakage,
    /// Pole or cabinet door open.
    DoorOpen,
    /// Lamp switching on and off repeatedly (cycling failure).
    Cycling,
    /// Cover tilted beyond the tilt threshold.
    CoverTilted,
    /// Cover open or missing (beyond the open threshold).
    CoverOpen,
    /// Water in the well above its threshold.
    WaterHigh,
    /// Bin at or above its collection threshold.
    BinFull,
    /// Bin overflowing.
    BinOverflow,
    /// Bin temperature at fire-risk level.
    FireRisk,
    /// Bin knocked over.
    BinTipped,
    /// NH3 moving average above the toilet-class limit.
    OdourNh3,
    /// H2S moving average above the limit.
    OdourH2s,
    /// Battery below the low threshold.
    LowBattery,
}

impl AlarmKind {
    /// Every alarm kind.
    pub const ALL: [AlarmKind; 17] = [
        Self::LampFailure,
        Self::DayBurner,
        Self::RelayFailure,
        Self::SupplyLoss,
        Self::Leakage,
        Self::DoorOpen,
        Self::Cycling,
        Self::CoverTilted,
        Self::CoverOpen,
        Self::WaterHigh,
        Self::BinFull,
        Self::BinOverflow,
        Self::FireRisk,
        Self::BinTipped,
        Self::OdourNh3,
        Self::OdourH2s,
        Self::LowBattery,
    ];

    /// Snake-case name as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LampFailure => "lamp_failure",
            Self::DayBurner => "day_burner",
            Self::RelayFailure => "relay_failure",
            Self::SupplyLoss => "supply_loss",
            Self::Leakage => "leakage",
            Self::DoorOpen => "door_open",
            Self::Cycling => "cycling",
            Self::CoverTilted => "cover_tilted",
            Self::CoverOpen => "cover_open",
            Self::WaterHigh => "water_high",
            Self::BinFull => "bin_full",
            Self::BinOverflow => "bin_overflow",
            Self::FireRisk => "fire_risk",
            Self::BinTipped => "bin_tipped",
            Self::OdourNh3 => "odour_nh3",
            Self::OdourH2s => "odour_h2s",
            Self::LowBattery => "low_battery",
        }
    }

    /// The device kinds that may raise this alarm.
    pub const fn applies_to(self, kind: DeviceKind) -> bool {
        use DeviceKind as K;
        match self {
            Self::LampFailure
            | Self::DayBurner
            | Self::RelayFailure
            | Self::SupplyLoss
            | Self::Leakage
            | Self::DoorOpen
            | Self::Cycling => matches!(kind, K::Streetlight),
            Self::CoverTilted | Self::CoverOpen | Self::WaterHigh => matches!(kind, K::Manhole),
            Self::BinFull | Self::BinOverflow | Self::FireRisk | Self::BinTipped => {
                matches!(kind, K::Bin)
            }
            Self::OdourNh3 | Self::OdourH2s => matches!(kind, K::Toilet),
            Self::LowBattery => !matches!(kind, K::Streetlight),
        }
    }
}

impl core::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an alarm starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AlarmState {
    /// The condition began (after its minimum duration).
    Raised,
    /// The condition ended (past its hysteresis).
    Cleared,
}

/// An alarm raised or cleared, sent at once.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Event {
    /// Sender; must equal the device id in the topic.
    pub device_id: DeviceId,
    /// Per-device uplink sequence number.
    pub seq: u32,
    /// Device clock, Unix milliseconds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ts_ms: Option<u64>,
    /// Which alarm.
    pub alarm: AlarmKind,
    /// Raised or cleared.
    pub state: AlarmState,
    /// The measured value that decided it (tilt, fill, concentration...), in the alarm's unit.
    #[cfg_attr(feature = "serde", serde(default))]
    pub value: Option<f32>,
}

/// Device health; `online: false` is also the MQTT last will, retained.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Status {
    /// Sender; must equal the device id in the topic.
    pub device_id: DeviceId,
    /// Per-device uplink sequence number (the last will carries the value at connect time).
    pub seq: u32,
    /// Device clock, Unix milliseconds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ts_ms: Option<u64>,
    /// The device kind, so an unregistered device can be listed with what it claims to be.
    pub kind: DeviceKind,
    /// Online (birth / heartbeat) or offline (last will, orderly shutdown).
    pub online: bool,
    /// Firmware version, e.g. `1.4.2`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fw_version: Option<ShortText>,
    /// Seconds since boot.
    #[cfg_attr(feature = "serde", serde(default))]
    pub uptime_s: Option<u32>,
    /// Radio signal, dBm.
    #[cfg_attr(feature = "serde", serde(default))]
    pub rssi_dbm: Option<i16>,
    /// Battery, 0..=100 %.
    #[cfg_attr(feature = "serde", serde(default))]
    pub battery_pct: Option<u8>,
    /// Messages the store-and-forward queue dropped since boot (oldest telemetry first).
    #[cfg_attr(feature = "serde", serde(default))]
    pub dropped: Option<u32>,
}

/// Lamp switching schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
pub struct LampSchedule {
    /// Latitude of the lamp, degrees north (-90..=90).
    pub lat_deg: f64,
    /// Longitude of the lamp, degrees east (-180..=180).
    pub lon_deg: f64,
    /// Minutes after sunset to switch on (negative = before), -120..=120.
    pub on_offset_min: i16,
    /// Minutes after sunrise to switch off (negative = before), -120..=120.
    pub off_offset_min: i16,
    /// Optional night dimming level (0..=100 %) applied between `dim_from_min` and `dim_to_min`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub night_dim_pct: Option<u8>,
    /// Start of night dimming, minutes after local midnight (UTC offset applied by the device).
    #[cfg_attr(feature = "serde", serde(default))]
    pub dim_from_min: Option<u16>,
    /// End of night dimming, minutes after local midnight.
    #[cfg_attr(feature = "serde", serde(default))]
    pub dim_to_min: Option<u16>,
    /// Local time offset from UTC, minutes (China: 480).
    #[cfg_attr(feature = "serde", serde(default))]
    pub utc_offset_min: i16,
}

/// Downlink configuration (binary encodings carry every field; absent JSON fields are `None`).
/// Every field is optional: a device applies what is present, keeps the
/// rest, validates the result as a whole and acknowledges with `ack.ref_id = config_id`.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Config {
    /// Identifies this config in the ack.
    pub config_id: u32,
    /// Telemetry sampling/report interval, s (1..=86400).
    pub report_interval_s: Option<u32>,
    /// Heartbeat (status + telemetry even without change), s (10..=172800).
    pub heartbeat_interval_s: Option<u32>,
    /// Report-on-change deadband, in the main quantity's unit (tilt °, fill %, mg/m³, W).
    pub deadband: Option<f32>,
    /// Minimum time a condition must hold before it is raised, s (0..=3600).
    pub hold_s: Option<u32>,
    /// Tilt alarm threshold, ° (1..=90, default 10).
    pub tilt_alarm_deg: Option<f32>,
    /// Cover open threshold, ° (must exceed the tilt threshold, default 60).
    pub tilt_open_deg: Option<f32>,
    /// Tilt hysteresis, ° (0..=20).
    pub tilt_hysteresis_deg: Option<f32>,
    /// Water-high threshold, cm.
    pub water_high_cm: Option<f32>,
    /// Bin depth (sensor to bottom), mm.
    pub bin_depth_mm: Option<u16>,
    /// Bin full threshold, % (default 80).
    pub full_pct: Option<f32>,
    /// Bin overflow threshold, % (default 100, must exceed `full_pct`).
    pub overflow_pct: Option<f32>,
    /// Fill hysteresis, %.
    pub fill_hysteresis_pct: Option<f32>,
    /// Fire-risk temperature, °C (default 60).
    pub fire_temp_c: Option<f32>,
    /// NH3 limit, mg/m³ (toilet class: 0.3 / 1 / 3).
    pub nh3_limit_mg_m3: Option<f32>,
    /// H2S limit, mg/m³ (default 0.01).
    pub h2s_limit_mg_m3: Option<f32>,
    /// Odour hysteresis as a fraction of the limit, % (0..=50).
    pub odour_hysteresis_pct: Option<f32>,
    /// Moving-average window for odour, s (60..=3600, default 600).
    pub odour_window_s: Option<u32>,
    /// Low-battery threshold, % (default 20).
    pub battery_low_pct: Option<u8>,
    /// Lamp: minimum current when lit, A (below = lamp failure).
    pub min_current_a: Option<f32>,
    /// Lamp: leakage alarm threshold, mA (default 30).
    pub leakage_limit_ma: Option<f32>,
    /// Lamp: minimum supply voltage before supply loss, V (default 100).
    pub supply_min_v: Option<f32>,
    /// Lamp: astronomical-clock schedule.
    pub schedule: Option<LampSchedule>,
}

/// Downlink command.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Command {
    /// Sender's id for this command; echoed as `ack.ref_id`.
    pub cmd_id: u32,
    /// What to do.
    pub action: Action,
}

/// A command's action.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Action {
    /// Switch the lamp on (optionally dimmed) until the expiry, then resume the schedule.
    LampOn {
        /// Dimming level 0..=100 %; full brightness when absent.
        #[cfg_attr(feature = "serde", serde(default))]
        dim_pct: Option<u8>,
        /// Seconds until the override expires (1..=604800); permanent until resumed when absent.
        #[cfg_attr(feature = "serde", serde(default))]
        expires_s: Option<u32>,
    },
    /// Switch the lamp off until the expiry, then resume the schedule.
    LampOff {
        /// Seconds until the override expires; permanent until resumed when absent.
        #[cfg_attr(feature = "serde", serde(default))]
        expires_s: Option<u32>,
    },
    /// Set the dimming level of a lit lamp.
    Dim {
        /// Dimming level 0..=100 %.
        pct: u8,
        /// Seconds until the override expires.
        #[cfg_attr(feature = "serde", serde(default))]
        expires_s: Option<u32>,
    },
    /// Drop any override and follow the schedule again.
    ResumeSchedule,
    /// Send telemetry and status now.
    RequestReport,
    /// Restart the device.
    Reboot,
}

/// Answer to a config or command.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Ack {
    /// Sender; must equal the device id in the topic.
    pub device_id: DeviceId,
    /// Per-device uplink sequence number.
    pub seq: u32,
    /// Device clock, Unix milliseconds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ts_ms: Option<u64>,
    /// The `config_id` or `cmd_id` answered.
    pub ref_id: u32,
    /// Applied (`true`) or rejected.
    pub ok: bool,
    /// Why it was rejected, naming the field (`"tilt_alarm_deg: must be 1..=90"`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub reason: Option<ShortText>,
}

/// Any uplink message, as the gateway receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    /// Periodic readings.
    Telemetry(Telemetry),
    /// Alarm raised or cleared.
    Event(Event),
    /// Health / birth / last will.
    Status(Status),
    /// Answer to a config or command.
    Ack(Ack),
}

impl Uplink {
    /// The sending device.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Self::Telemetry(m) => &m.device_id,
            Self::Event(m) => &m.device_id,
            Self::Status(m) => &m.device_id,
            Self::Ack(m) => &m.device_id,
        }
    }

    /// The uplink sequence number.
    pub fn seq(&self) -> u32 {
        match self {
            Self::Telemetry(m) => m.seq,
            Self::Event(m) => m.seq,
            Self::Status(m) => m.seq,
            Self::Ack(m) => m.seq,
        }
    }

    /// The device timestamp, if any.
    pub fn ts_ms(&self) -> Option<u64> {
        match self {
            Self::Telemetry(m) => m.ts_ms,
            Self::Event(m) => m.ts_ms,
            Self::Status(m) => m.ts_ms,
            Self::Ack(m) => m.ts_ms,
        }
    }
}

/// Any downlink message, as a device receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    /// New settings.
    Config(Config),
    /// Something to do now.
    Command(Command),
}
