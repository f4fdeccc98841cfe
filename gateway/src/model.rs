//! The gateway's shared vocabulary: devices as inventoried, readings as ingested, conditions as
//! the rules see them and cases as teams work them. Every other module speaks these types.
//!
//! Times are Unix milliseconds ([`UnixMs`]) so that pure code (rules, case machine) takes the
//! clock as an argument and runs identically under a simulated clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use streetgate_protocols::{AlarmKind, ComponentCode, DeviceId, DeviceKind, TelemetryData};

/// Unix time in milliseconds.
pub type UnixMs = i64;

/// 15-digit unit-grid code (GB/T 30428.2), or any configured grid label.
pub type GridCode = String;

/// Road-segment identifier as in the lamp inventory.
pub type SegmentId = String;

/// Road class of a lamp's segment; decides the lighting-rate target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RoadClass {
    /// 主干道 main road (default target 99 %).
    Main,
    /// 次干道 secondary road (default target 99 %).
    Secondary,
    /// 背街小巷 back street (default target 95 %).
    Back,
}

/// Public-toilet class (GB/T 17217 一类/二类/三类): decides the NH3 limit. On the wire the
/// string `"1"`, `"2"` or `"3"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ToiletClass {
    /// 一类: NH3 ≤ 0.3 mg/m³.
    #[serde(rename = "1")]
    Class1,
    /// 二类: NH3 ≤ 1 mg/m³.
    #[serde(rename = "2")]
    Class2,
    /// 三类: NH3 ≤ 3 mg/m³.
    #[serde(rename = "3")]
    Class3,
}

impl<'de> Deserialize<'de> for ToiletClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ToiletClass;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"the toilet class as a string: "1", "2" or "3" (GB/T 17217)"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ToiletClass, E> {
                match v {
                    "1" => Ok(ToiletClass::Class1),
                    "2" => Ok(ToiletClass::Class2),
                    "3" => Ok(ToiletClass::Class3),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// How the gateway reaches a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", from = "TransportWire")]
pub enum Transport {
    /// Publishes to the broker itself.
    Mqtt,
    /// Polled over Modbus TCP (often an RS-485-to-Ethernet converter).
    ModbusTcp {
        /// Host name or address.
        host: String,
        /// TCP port (usually 502).
        port: u16,
        /// Modbus unit id (slave address) 1..=247.
        unit: u8,
    },
    /// Polled over Modbus RTU on a serial port.
    ModbusRtu {
        /// Serial device path, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Baud rate.
        baud: u32,
        /// Modbus unit id (slave address) 1..=247.
        unit: u8,
    },
}

/// [`Transport`] as it is read: a field the variant does not have is refused, `mqtt`
/// included (serde lets extra fields through beside the tag of a variant without fields).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum TransportWire {
    Mqtt {},
    ModbusTcp { host: String, port: u16, unit: u8 },
    ModbusRtu { path: String, baud: u32, unit: u8 },
}

impl From<TransportWire> for Transport {
    fn from(w: TransportWire) -> Self {
        match w {
            TransportWire::Mqtt {} => Self::Mqtt,
            TransportWire::ModbusTcp { host, port, unit } => Self::ModbusTcp { host, port, unit },
            TransportWire::ModbusRtu { path, baud, unit } => Self::ModbusRtu { path, baud, unit },
        }
    }
}

impl Transport {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::ModbusTcp { .. } => "modbus-tcp",
            Self::ModbusRtu { .. } => "modbus-rtu",
        }
    }
}

/// Per-device threshold overrides (absent = the kind's default from the rules config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdOverrides {
    /// Tilt alarm, °.
    pub tilt_alarm_deg: Option<f32>,
    /// Cover open, °.
    pub tilt_open_deg: Option<f32>,
    /// Water high, cm.
    pub water_high_cm: Option<f32>,
    /// Bin full, %.
    pub full_pct: Option<f32>,
    /// Bin overflow, %.
    pub overflow_pct: Option<f32>,
    /// Fire risk, °C.
    pub fire_temp_c: Option<f32>,
    /// NH3 limit, mg/m³ (overrides the toilet class).
    pub nh3_limit_mg_m3: Option<f32>,
    /// H2S limit, mg/m³.
    pub h2s_limit_mg_m3: Option<f32>,
    /// Low battery, %.
    pub battery_low_pct: Option<u8>,
    /// Lamp minimum current when lit, A.
    pub min_current_a: Option<f32>,
    /// Report interval, s (offline after 3 missed).
    pub report_interval_s: Option<u32>,
}

/// One inventoried device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Device id, as in its topics.
    pub id: DeviceId,
    /// Device kind.
    pub kind: DeviceKind,
    /// CJ/T 214 component code, when the city has assigned one.
    pub component_code: Option<ComponentCode>,
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east.
    pub lon: f64,
    /// Unit grid the device stands in.
    pub grid: GridCode,
    /// Road segment (lamps).
    pub road_segment: Option<SegmentId>,
    /// Road class (lamps).
    pub road_class: Option<RoadClass>,
    /// Toilet class (toilets).
    pub toilet_class: Option<ToiletClass>,
    /// Bin depth, mm (bins).
    pub bin_depth_mm: Option<u16>,
    /// Per-device threshold overrides (none when absent).
    #[serde(default)]
    pub overrides: ThresholdOverrides,
    /// How it is reached.
    pub transport: Transport,
}

/// What an ingested message carries, after decoding and validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingBody {
    /// Periodic measurements.
    Telemetry(TelemetryData),
    /// A device-side alarm edge.
    Alarm {
        /// Which alarm.
        alarm: AlarmKind,
        /// Raised (`true`) or cleared.
        raised: bool,
        /// The deciding value.
        value: Option<f32>,
    },
    /// Online/offline (offline also from the last will).
    Status {
        /// Online or not.
        online: bool,
        /// Battery, %.
        battery_pct: Option<u8>,
        /// Firmware version.
        fw_version: Option<String>,
    },
    /// A config or command answered.
    Ack {
        /// The config or command id.
        ref_id: u32,
        /// Applied or rejected.
        ok: bool,
        /// Why rejected.
        reason: Option<String>,
    },
}

/// One accepted message from a registered device, the same whichever transport brought it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The device.
    pub device_id: DeviceId,
    /// Its kind (from the inventory).
    pub kind: DeviceKind,
    /// When the gateway received it.
    pub received_ms: UnixMs,
    /// Device clock, when it has one.
    pub device_ts_ms: Option<UnixMs>,
    /// Device sequence number (Modbus polls get a gateway-side counter).
    pub seq: u32,
    /// `mqtt`, `modbus-tcp` or `modbus-rtu`.
    pub transport: &'static str,
    /// The content.
    pub body: ReadingBody,
    /// The device's sequence state after this message (MQTT devices; none for gateway-side
    /// counters): stored with the reading, so a restart resumes from what was committed.
    pub seq_state: Option<SeqState>,
}

/// A device's sequence numbers as the gateway has accepted them: the newest, a 64-message
/// window of which recent numbers arrived, and what went missing. Persisted with the latest
/// readings and loaded at start, so losses across a gateway restart are counted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SeqState {
    /// Newest sequence number accepted.
    pub last_seq: u32,
    /// Bit `i` set: `last_seq - i` arrived.
    #[serde(skip)]
    pub seen: u64,
    /// Bit `i` set: `last_seq - i` belongs to the current numbering (since the window started).
    #[serde(skip)]
    pub valid: u64,
    /// Messages that never arrived, since the device was first seen.
    pub missing: u64,
    /// Times the device's counter restarted (a reboot: a live birth status with a lower number,
    /// or a jump too far to be losses). Never counted as missing.
    pub restarts: u64,
    /// Messages accepted since the device was first seen; orders the states of one device.
    pub accepted: u64,
}

/// A condition the rules watch; one open case at most per (subject, condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A device alarm, reported by the device or inferred by the gateway.
    Alarm(AlarmKind),
    /// Missed 3 report intervals, or last will.
    Offline,
    /// A road segment's lighting rate below its target during switch-on hours.
    SegmentDark,
}

impl Condition {
    /// Stable text form (`alarm:cover_open`, `offline`, `segment_dark`) used as a store key.
    pub fn key(&self) -> String {
        match self {
            Self::Alarm(a) => format!("alarm:{}", a.as_str()),
            Self::Offline => "offline".to_owned(),
            Self::SegmentDark => "segment_dark".to_owned(),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "offline" => Ok(Self::Offline),
            "segment_dark" => Ok(Self::SegmentDark),
            _ => s
                .strip_prefix("alarm:")
                .and_then(|a| AlarmKind::ALL.into_iter().find(|k| k.as_str() == a))
                .map(Self::Alarm)
                .ok_or_else(|| format!("unknown condition {s:?}")),
        }
    }
}

/// What a condition is about: one device, a whole road segment (grouped lamp faults), or the
/// whole fleet (a fleet-wide outage: one case instead of one per device).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// One device.
    Device(DeviceId),
    /// A road segment.
    Segment(SegmentId),
    /// The gateway's whole fleet.
    Fleet,
}

impl Subject {
    /// Stable text form (`device:SL-1`, `segment:S-12`, `fleet`) used as a store key.
    pub fn key(&self) -> String {
        match self {
            Self::Device(d) => format!("device:{d}"),
            Self::Segment(s) => format!("segment:{s}"),
            Self::Fleet => "fleet".to_owned(),
        }
    }
}

/// Rule output: a condition began or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionEvent {
    /// What it is about.
    pub subject: Subject,
    /// Which condition.
    pub condition: Condition,
    /// Began (`true`) or ended.
    pub raised: bool,
    /// When the rules decided (reading time or tick time).
    pub at_ms: UnixMs,
    /// Grid of the subject (routing).
    pub grid: GridCode,
    /// The deciding value, if any (tilt, fill, concentration, lighting rate).
    pub value: Option<f64>,
    /// Human-readable detail ("tilt 23.5° > 10° for 5 s", "3 of 40 lamps dark: SL-1, SL-7, SL-9").
    pub detail: String,
    /// Devices involved (the dark lamps of a segment case).
    pub devices: Vec<DeviceId>,
    /// Urgent (cover open, overflow, fire, segment below target...).
    pub urgent: bool,
}

/// Case type (案件类型): what the operations centre classifies and time-limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseType {
    /// Lamp faults on a road segment (grouped), 照明.
    LampFault,
    /// Single-lamp electrical danger: leakage, door open (urgent), 照明.
    LampSafety,
    /// Cover tilted or open, 市政.
    ManholeCover,
    /// Water high in a well, 市政.
    ManholeWater,
    /// Bin needs collection, 环卫.
    BinFull,
    /// Bin overflowing or tipped, 环卫.
    BinOverflow,
    /// Fire risk in a bin, 环卫 (urgent).
    BinFire,
    /// Toilet odour above limit, 环卫.
    ToiletOdour,
    /// Device offline, facilities team of the grid.
    DeviceOffline,
    /// Low battery, planned maintenance.
    LowBattery,
    /// Reported by a patrol or the hotline, any other problem.
    Other,
}

impl CaseType {
    /// Wire name (`bin_overflow`), as in the API and the alert topics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LampFault => "lamp_fault",
            Self::LampSafety => "lamp_safety",
            Self::ManholeCover => "manhole_cover",
            Self::ManholeWater => "manhole_water",
            Self::BinFull => "bin_full",
            Self::BinOverflow => "bin_overflow",
            Self::BinFire => "bin_fire",
            Self::ToiletOdour => "toilet_odour",
            Self::DeviceOffline => "device_offline",
            Self::LowBattery => "low_battery",
            Self::Other => "other",
        }
    }

    /// Every case type.
    pub const ALL: [CaseType; 11] = [
        Self::LampFault,
        Self::LampSafety,
        Self::ManholeCover,
        Self::ManholeWater,
        Self::BinFull,
        Self::BinOverflow,
        Self::BinFire,
        Self::ToiletOdour,
        Self::DeviceOffline,
        Self::LowBattery,
        Self::Other,
    ];
}

/// Case state (案件状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// 立案: accepted as a case.
    Registered,
    /// 派遣: routed to a team.
    Dispatched,
    /// The team accepted it and is handling it.
    Accepted,
    /// 反馈: the team reports it fixed.
    Resolved,
    /// 核查: confirmed (by the sensor for sensor cases).
    Verified,
    /// 结案: archived.
    Closed,
    /// 作废: duplicate or out of scope.
    Voided,
    /// 退单: handed back by the team with a reason, waiting for re-dispatch.
    Returned,
}

impl CaseState {
    /// Terminal states: the case is no longer open.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Closed | Self::Voided)
    }
}

/// Where a case came from (发现方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseSource {
    /// 自动发现: a sensor condition.
    Sensor,
    /// 主动发现: a patrol.
    Patrol,
    /// 被动发现: hotline 12345/12319.
    Hotline,
}
