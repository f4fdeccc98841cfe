//! Modbus register maps, one per device kind, shared by the devices (which keep the register
//! image current) and the gateway (which polls it).
//!
//! # Addressing and function codes
//! Addresses are 0-based PDU addresses; in the conventional 1-based numbering input register
//! `100` is `30101` and holding register `1000` is `41001`. The gateway uses function codes
//! 0x04 (read input registers) for identification, acknowledgement and telemetry, 0x03 (read
//! holding registers) and 0x10 (write multiple registers) for configuration and commands.
//!
//! # Layout
//! * Input registers 0..=7: the **identification block**, the same for every kind (kind code,
//!   map version, firmware version, telemetry block position). The gateway reads it on first
//!   contact and refuses to interpret a device whose kind or map version differs.
//! * Input registers 90..=92: the **acknowledgement block**: id and result of the last config or
//!   command the device handled.
//! * Input registers from 100: the kind's **telemetry block**, contiguous, so one request of
//!   [`RegisterMap::telemetry_len`] registers reads all of it.
//! * Holding registers 1000..: the **config block** (the same for every kind; a kind ignores what
//!   does not apply to it) written in one request, applied and acknowledged as a whole.
//! * Holding registers 1100..=1105: the **command block**, written in one request.
//!
//! 32-bit values (`u32`, `f32`) take two registers, **high word first** (big-endian word order,
//! "ABCD"). Engineering value = raw ÷ scale. Optional fields have a sentinel meaning *absent*:
//! `0xFFFF` (u16), `0x8000` (i16), `0xFFFF_FFFF` (u32), NaN (f32).

use core::fmt;

use crate::device::DeviceKind;
use crate::message::{
    Action, BinTelemetry, Command, Config, LampSchedule, ManholeTelemetry, StreetlightTelemetry,
    TelemetryData, ToiletTelemetry,
};
use crate::validate::{Validate, ValidationError};

/// Version of the register layout; bumped on any incompatible change.
pub const MAP_VERSION: u16 = 1;
/// First register of the identification block (input registers).
pub const IDENT_START: u16 = 0;
/// Length of the identification block.
pub const IDENT_LEN: u16 = 8;
/// First register of the acknowledgement block (input registers).
pub const ACK_START: u16 = 90;
/// Length of the acknowledgement block.
pub const ACK_LEN: u16 = 3;
/// First register of every telemetry block (input registers).
pub const TELEMETRY_START: u16 = 100;
/// First register of the config block (holding registers).
pub const CONFIG_START: u16 = 1000;
/// First register of the command block (holding registers).
pub const COMMAND_START: u16 = 1100;
/// Length of the command block.
pub const COMMAND_LEN: u16 = 6;
/// Longest telemetry block of any kind.
pub const TELEMETRY_MAX_LEN: usize = 16;

/// Register space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Input registers (read-only, function 0x04).
    Input,
    /// Holding registers (read/write, functions 0x03 / 0x10).
    Holding,
}

/// Register data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers, high word first.
    U32,
    /// IEEE-754 single, two registers, high word first.
    F32,
}

impl RegType {
    /// Registers taken.
    pub const fn width(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::F32 => 2,
        }
    }

    #[cfg(feature = "std")]
    const fn as_str(self) -> &'static str {
        match self {
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::F32 => "f32",
        }
    }
}

/// Who may write a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
}

/// One register (or register pair) of a map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Register {
    /// Field name, the same as in the JSON messages.
    pub name: &'static str,
    /// 0-based PDU address.
    pub address: u16,
    /// Input or holding.
    pub space: Space,
    /// Data type.
    pub ty: RegType,
    /// Engineering value = raw ÷ scale.
    pub scale: f32,
    /// Unit of the engineering value.
    pub unit: &'static str,
    /// Access.
    pub access: Access,
    /// Whether the field may be absent (sentinel value).
    pub optional: bool,
    /// What it is.
    pub description: &'static str,
}

#[allow(clippy::too_many_arguments)] // a table row; named fields would triple the tables
const fn reg(
    name: &'static str,
    address: u16,
    space: Space,
    ty: RegType,
    scale: f32,
    unit: &'static str,
    optional: bool,
    description: &'static str,
) -> Register {
    Register {
        name,
        address,
        space,
        ty,
        scale,
        unit,
        access: match space {
            Space::Input => Access::Read,
            Space::Holding => Access::ReadWrite,
        },
        optional,
        description,
    }
}

use RegType::{F32, I16, U16, U32};
use Space::{Holding, Input};

/// Identification block, identical for every kind.
pub const IDENTIFICATION: [Register; 8] = [
    reg(
        "kind",
        0,
        Input,
        U16,
        1.0,
        "",
        false,
        "device kind: 1 streetlight, 2 manhole, 3 bin, 4 toilet",
    ),
    reg(
        "map_version",
        1,
        Input,
        U16,
        1.0,
        "",
        false,
        "register map version (this document: 1)",
    ),
    reg(
        "fw_major",
        2,
        Input,
        U16,
        1.0,
        "",
        false,
        "firmware version, major",
    ),
    reg(
        "fw_minor",
        3,
        Input,
        U16,
        1.0,
        "",
        false,
        "firmware version, minor",
    ),
    reg(
        "fw_patch",
        4,
        Input,
        U16,
        1.0,
        "",
        false,
        "firmware version, patch",
    ),
    reg(
        "telemetry_start",
        5,
        Input,
        U16,
        1.0,
        "",
        false,
        "first telemetry register (100)",
    ),
    reg(
        "telemetry_len",
        6,
        Input,
        U16,
        1.0,
        "",
        false,
        "telemetry block length, registers",
    ),
    reg("reserved", 7, Input, U16, 1.0, "", false, "0"),
];

/// Acknowledgement block, identical for every kind.
pub const ACKNOWLEDGEMENT: [Register; 2] = [
    reg(
        "ack_ref_id",
        90,
        Input,
        U32,
        1.0,
        "",
        false,
        "config_id or cmd_id last handled",
    ),
    reg(
        "ack_result",
        92,
        Input,
        U16,
        1.0,
        "",
        false,
        "0 none yet, 1 applied, 2 rejected",
    ),
];

const SL_LAMP_ON: Register = reg(
    "lamp_on",
    100,
    Input,
    U16,
    1.0,
    "",
    false,
    "relay closed: 1, open: 0",
);
const SL_DIM: Register = reg(
    "dim_pct",
    101,
    Input,
    U16,
    1.0,
    "%",
    false,
    "dimming level 0..=100",
);
const SL_VOLTAGE: Register = reg(
    "voltage_v",
    102,
    Input,
    U16,
    10.0,
    "V",
    false,
    "supply voltage RMS",
);
const SL_CURRENT: Register = reg(
    "current_a",
    103,
    Input,
    U16,
    1000.0,
    "A",
    false,
    "lamp current RMS",
);
const SL_POWER: Register = reg("power_w", 104, Input, U32, 10.0, "W", false, "active power");
const SL_ENERGY: Register = reg(
    "energy_wh",
    106,
    Input,
    U32,
    1.0,
    "Wh",
    false,
    "cumulative energy",
);
const SL_LEAKAGE: Register = reg(
    "leakage_ma",
    108,
    Input,
    F32,
    1.0,
    "mA",
    false,
    "leakage current",
);
const SL_HOURS: Register = reg(
    "operating_h",
    110,
    Input,
    U32,
    1.0,
    "h",
    false,
    "lamp operating hours",
);
const SL_SWITCHES: Register = reg(
    "switch_count",
    112,
    Input,
    U32,
    1.0,
    "",
    false,
    "relay switch count",
);

const MH_TILT: Register = reg(
    "tilt_deg",
    100,
    Input,
    U16,
    100.0,
    "°",
    false,
    "tilt from installed pose",
);
const MH_WATER: Register = reg(
    "water_level_cm",
    101,
    Input,
    U16,
    10.0,
    "cm",
    true,
    "water level",
);
const MH_TEMP: Register = reg(
    "temperature_c",
    102,
    Input,
    I16,
    10.0,
    "°C",
    true,
    "enclosure temperature",
);
const MH_BATTERY: Register = reg("battery_pct", 103, Input, U16, 1.0, "%", false, "battery");

const BN_FILL: Register = reg(
    "fill_pct",
    100,
    Input,
    U16,
    10.0,
    "%",
    false,
    "fill level 0..=150",
);
const BN_DISTANCE: Register = reg(
    "distance_mm",
    101,
    Input,
    U16,
    1.0,
    "mm",
    true,
    "distance to refuse",
);
const BN_TEMP: Register = reg(
    "temperature_c",
    102,
    Input,
    I16,
    10.0,
    "°C",
    false,
    "temperature in the bin",
);
const BN_TILT: Register = reg(
    "tilt_deg",
    103,
    Input,
    U16,
    100.0,
    "°",
    true,
    "tilt from upright",
);
const BN_BATTERY: Register = reg("battery_pct", 104, Input, U16, 1.0, "%", false, "battery");

const WC_NH3: Register = reg(
    "nh3_mg_m3",
    100,
    Input,
    U32,
    1000.0,
    "mg/m³",
    false,
    "NH3, latest",
);
const WC_H2S: Register = reg(
    "h2s_mg_m3",
    102,
    Input,
    U32,
    1000.0,
    "mg/m³",
    false,
    "H2S, latest",
);
const WC_NH3_AVG: Register = reg(
    "nh3_avg_mg_m3",
    104,
    Input,
    U32,
    1000.0,
    "mg/m³",
    true,
    "NH3 moving average",
);
const WC_H2S_AVG: Register = reg(
    "h2s_avg_mg_m3",
    106,
    Input,
    U32,
    1000.0,
    "mg/m³",
    true,
    "H2S moving average",
);
const WC_TEMP: Register = reg(
    "temperature_c",
    108,
    Input,
    I16,
    10.0,
    "°C",
    true,
    "air temperature",
);
const WC_HUMIDITY: Register = reg(
    "humidity_pct",
    109,
    Input,
    U16,
    10.0,
    "%",
    true,
    "relative humidity",
);
const WC_BATTERY: Register = reg("battery_pct", 110, Input, U16, 1.0, "%", true, "battery");

const STREETLIGHT_TELEMETRY: [Register; 9] = [
    SL_LAMP_ON,
    SL_DIM,
    SL_VOLTAGE,
    SL_CURRENT,
    SL_POWER,
    SL_ENERGY,
    SL_LEAKAGE,
    SL_HOURS,
    SL_SWITCHES,
];
const MANHOLE_TELEMETRY: [Register; 4] = [MH_TILT, MH_WATER, MH_TEMP, MH_BATTERY];
const BIN_TELEMETRY: [Register; 5] = [BN_FILL, BN_DISTANCE, BN_TEMP, BN_TILT, BN_BATTERY];
const TOILET_TELEMETRY: [Register; 7] = [
    WC_NH3,
    WC_H2S,
    WC_NH3_AVG,
    WC_H2S_AVG,
    WC_TEMP,
    WC_HUMIDITY,
    WC_BATTERY,
];

const C_ID: Register = reg(
    "config_id",
    1000,
    Holding,
    U32,
    1.0,
    "",
    false,
    "identifies the config in the ack",
);
const C_REPORT: Register = reg(
    "report_interval_s",
    1002,
    Holding,
    U32,
    1.0,
    "s",
    true,
    "report interval",
);
const C_HEARTBEAT: Register = reg(
    "heartbeat_interval_s",
    1004,
    Holding,
    U32,
    1.0,
    "s",
    true,
    "heartbeat interval",
);
const C_DEADBAND: Register = reg(
    "deadband",
    1006,
    Holding,
    F32,
    1.0,
    "",
    true,
    "report-on-change deadband",
);
const C_HOLD: Register = reg(
    "hold_s",
    1008,
    Holding,
    U32,
    1.0,
    "s",
    true,
    "minimum alarm duration",
);
const C_TILT_ALARM: Register = reg(
    "tilt_alarm_deg",
    1010,
    Holding,
    F32,
    1.0,
    "°",
    true,
    "tilt alarm threshold",
);
const C_TILT_OPEN: Register = reg(
    "tilt_open_deg",
    1012,
    Holding,
    F32,
    1.0,
    "°",
    true,
    "cover open threshold",
);
const C_TILT_HYST: Register = reg(
    "tilt_hysteresis_deg",
    1014,
    Holding,
    F32,
    1.0,
    "°",
    true,
    "tilt hysteresis",
);
const C_WATER: Register = reg(
    "water_high_cm",
    1016,
    Holding,
    F32,
    1.0,
    "cm",
    true,
    "water high threshold",
);
const C_DEPTH: Register = reg(
    "bin_depth_mm",
    1018,
    Holding,
    U16,
    1.0,
    "mm",
    true,
    "bin depth",
);
const C_FULL: Register = reg(
    "full_pct",
    1019,
    Holding,
    F32,
    1.0,
    "%",
    true,
    "bin full threshold",
);
const C_OVERFLOW: Register = reg(
    "overflow_pct",
    1021,
    Holding,
    F32,
    1.0,
    "%",
    true,
    "bin overflow threshold",
);
const C_FILL_HYST: Register = reg(
    "fill_hysteresis_pct",
    1023,
    Holding,
    F32,
    1.0,
    "%",
    true,
    "fill hysteresis",
);
const C_FIRE: Register = reg(
    "fire_temp_c",
    1025,
    Holding,
    F32,
    1.0,
    "°C",
    true,
    "fire-risk temperature",
);
const C_NH3: Register = reg(
    "nh3_limit_mg_m3",
    1027,
    Holding,
    F32,
    1.0,
    "mg/m³",
    true,
    "NH3 limit",
);
const C_H2S: Register = reg(
    "h2s_limit_mg_m3",
    1029,
    Holding,
    F32,
    1.0,
    "mg/m³",
    true,
    "H2S limit",
);
const C_ODOUR_HYST: Register = reg(
    "odour_hysteresis_pct",
    1031,
    Holding,
    F32,
    1.0,
    "%",
    true,
    "odour hysteresis",
);
const C_ODOUR_WIN: Register = reg(
    "odour_window_s",
    1033,
    Holding,
    U32,
    1.0,
    "s",
    true,
    "odour moving-average window",
);
const C_BATTERY: Register = reg(
    "battery_low_pct",
    1035,
    Holding,
    U16,
    1.0,
    "%",
    true,
    "low-battery threshold",
);
const C_MIN_CURRENT: Register = reg(
    "min_current_a",
    1036,
    Holding,
    F32,
    1.0,
    "A",
    true,
    "lamp minimum current when lit",
);
const C_LEAKAGE: Register = reg(
    "leakage_limit_ma",
    1038,
    Holding,
    F32,
    1.0,
    "mA",
    true,
    "leakage alarm threshold",
);
const C_SUPPLY: Register = reg(
    "supply_min_v",
    1040,
    Holding,
    F32,
    1.0,
    "V",
    true,
    "supply-loss voltage",
);
const C_SCHEDULE: Register = reg(
    "schedule",
    1042,
    Holding,
    U16,
    1.0,
    "",
    false,
    "1: the schedule registers below are set, 0: keep",
);
const C_LAT: Register = reg(
    "schedule.lat_deg",
    1043,
    Holding,
    F32,
    1.0,
    "°",
    false,
    "lamp latitude",
);
const C_LON: Register = reg(
    "schedule.lon_deg",
    1045,
    Holding,
    F32,
    1.0,
    "°",
    false,
    "lamp longitude",
);
const C_ON_OFF: Register = reg(
    "schedule.on_offset_min",
    1047,
    Holding,
    I16,
    1.0,
    "min",
    false,
    "switch on after sunset",
);
const C_OFF_OFF: Register = reg(
    "schedule.off_offset_min",
    1048,
    Holding,
    I16,
    1.0,
    "min",
    false,
    "switch off after sunrise",
);
const C_NIGHT_DIM: Register = reg(
    "schedule.night_dim_pct",
    1049,
    Holding,
    U16,
    1.0,
    "%",
    true,
    "night dimming level",
);
const C_DIM_FROM: Register = reg(
    "schedule.dim_from_min",
    1050,
    Holding,
    U16,
    1.0,
    "min",
    true,
    "night dimming start, local",
);
const C_DIM_TO: Register = reg(
    "schedule.dim_to_min",
    1051,
    Holding,
    U16,
    1.0,
    "min",
    true,
    "night dimming end, local",
);
const C_UTC: Register = reg(
    "schedule.utc_offset_min",
    1052,
    Holding,
    I16,
    1.0,
    "min",
    false,
    "local time offset from UTC",
);

/// Config block (holding registers), identical for every kind.
pub const CONFIG: [Register; 31] = [
    C_ID,
    C_REPORT,
    C_HEARTBEAT,
    C_DEADBAND,
    C_HOLD,
    C_TILT_ALARM,
    C_TILT_OPEN,
    C_TILT_HYST,
    C_WATER,
    C_DEPTH,
    C_FULL,
    C_OVERFLOW,
    C_FILL_HYST,
    C_FIRE,
    C_NH3,
    C_H2S,
    C_ODOUR_HYST,
    C_ODOUR_WIN,
    C_BATTERY,
    C_MIN_CURRENT,
    C_LEAKAGE,
    C_SUPPLY,
    C_SCHEDULE,
    C_LAT,
    C_LON,
    C_ON_OFF,
    C_OFF_OFF,
    C_NIGHT_DIM,
    C_DIM_FROM,
    C_DIM_TO,
    C_UTC,
];
/// Length of the config block, registers (the last one, after `schedule.utc_offset_min`, is
/// reserved).
pub const CONFIG_LEN: u16 = 54;

const K_ID: Register = reg(
    "cmd_id",
    1100,
    Holding,
    U32,
    1.0,
    "",
    false,
    "identifies the command in the ack",
);
const K_ACTION: Register = reg(
    "action",
    1102,
    Holding,
    U16,
    1.0,
    "",
    false,
    "1 lamp_on, 2 lamp_off, 3 dim, 4 resume_schedule, 5 request_report, 6 reboot",
);
const K_DIM: Register = reg(
    "dim_pct",
    1103,
    Holding,
    U16,
    1.0,
    "%",
    true,
    "dimming level for lamp_on / dim",
);
const K_EXPIRES: Register = reg(
    "expires_s",
    1104,
    Holding,
    U32,
    1.0,
    "s",
    true,
    "override expiry",
);

/// Command block (holding registers), identical for every kind.
pub const COMMAND: [Register; 4] = [K_ID, K_ACTION, K_DIM, K_EXPIRES];

/// A kind's register map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterMap {
    /// The kind.
    pub kind: DeviceKind,
    /// Telemetry block (input registers from [`TELEMETRY_START`]).
    pub telemetry: &'static [Register],
    /// Config block (holding registers from [`CONFIG_START`]).
    pub config: &'static [Register],
    /// Command block (holding registers from [`COMMAND_START`]).
    pub command: &'static [Register],
}

impl RegisterMap {
    /// Registers in the telemetry block, read in one request from [`TELEMETRY_START`].
    pub fn telemetry_len(&self) -> u16 {
        self.telemetry
            .iter()
            .map(|r| r.address + r.ty.width() - TELEMETRY_START)
            .max()
            .unwrap_or(0)
    }
}

static MAPS: [RegisterMap; 4] = [
    RegisterMap {
        kind: DeviceKind::Streetlight,
        telemetry: &STREETLIGHT_TELEMETRY,
        config: &CONFIG,
        command: &COMMAND,
    },
    RegisterMap {
        kind: DeviceKind::Manhole,
        telemetry: &MANHOLE_TELEMETRY,
        config: &CONFIG,
        command: &COMMAND,
    },
    RegisterMap {
        kind: DeviceKind::Bin,
        telemetry: &BIN_TELEMETRY,
        config: &CONFIG,
        command: &COMMAND,
    },
    RegisterMap {
        kind: DeviceKind::Toilet,
        telemetry: &TOILET_TELEMETRY,
        config: &CONFIG,
        command: &COMMAND,
    },
];

/// The register map of a kind.
pub fn map(kind: DeviceKind) -> &'static RegisterMap {
    match kind {
        DeviceKind::Streetlight => &MAPS[0],
        DeviceKind::Manhole => &MAPS[1],
        DeviceKind::Bin => &MAPS[2],
        DeviceKind::Toilet => &MAPS[3],
    }
}

/// Why a register image could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModbusError {
    /// Fewer registers than the block needs.
    Short {
        /// Registers needed.
        needed: usize,
        /// Registers given.
        got: usize,
    },
    /// Identification names a kind code this map does not know.
    UnknownKind(u16),
    /// Identification names another register map version.
    MapVersion {
        /// Version found on the device.
        found: u16,
        /// Version this gateway speaks.
        expected: u16,
    },
    /// The device is of another kind than expected.
    KindMismatch {
        /// Kind in the inventory.
        expected: DeviceKind,
        /// Kind the device reports.
        found: DeviceKind,
    },
    /// A required register holds its "absent" sentinel.
    Missing(&'static str),
    /// A value does not fit its register (encoding).
    Unrepresentable(&'static str),
    /// An enumerated register holds an undefined value.
    BadValue {
        /// Register name.
        field: &'static str,
        /// Raw value.
        raw: u32,
    },
    /// Decoded, but physically impossible.
    Invalid(ValidationError),
}

impl fmt::Display for ModbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { needed, got } => {
                write!(f, "register block needs {needed} registers, got {got}")
            }
            Self::UnknownKind(code) => write!(f, "identification: unknown kind code {code}"),
            Self::MapVersion { found, expected } => {
                write!(
                    f,
                    "identification: register map version {found}, expected {expected}"
                )
            }
            Self::KindMismatch { expected, found } => {
                write!(
                    f,
                    "identification: device is a {found}, inventory says {expected}"
                )
            }
            Self::Missing(field) => {
                write!(f, "{field}: required register holds the absent sentinel")
            }
            Self::Unrepresentable(field) => write!(f, "{field}: value does not fit its register"),
            Self::BadValue { field, raw } => write!(f, "{field}: undefined value {raw}"),
            Self::Invalid(e) => write!(f, "invalid value: {e}"),
        }
    }
}

impl core::error::Error for ModbusError {}

impl From<ValidationError> for ModbusError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

/// A view of a register block starting at `base`.
struct Block<'a> {
    base: u16,
    regs: &'a [u16],
}

struct BlockMut<'a> {
    base: u16,
    regs: &'a mut [u16],
}

impl Block<'_> {
    fn raw(&self, r: &Register) -> Result<u32, ModbusError> {
        let i = usize::from(r.address - self.base);
        let w = usize::from(r.ty.width());
        let words = self.regs.get(i..i + w).ok_or(ModbusError::Short {
            needed: i + w,
            got: self.regs.len(),
        })?;
        Ok(match words {
            [a] => u32::from(*a),
            [hi, lo] => (u32::from(*hi) << 16) | u32::from(*lo),
            _ => 0,
        })
    }

    /// Engineering value, `None` for the absent sentinel of an optional register.
    fn get(&self, r: &Register) -> Result<Option<f64>, ModbusError> {
        let raw = self.raw(r)?;
        let scale = f64::from(r.scale);
        let value = match r.ty {
            RegType::U16 if raw == 0xFFFF && r.optional => None,
            RegType::U16 => Some(f64::from(raw) / scale),
            #[allow(clippy::cast_possible_truncation)] // one register: 16 bits
            RegType::I16 => {
                let v = raw as u16 as i16;
                if v == i16::MIN && r.optional {
                    None
                } else {
                    Some(f64::from(v) / scale)
                }
            }
            RegType::U32 if raw == u32::MAX && r.optional => None,
            RegType::U32 => Some(f64::from(raw) / scale),
            RegType::F32 => {
                let v = f32::from_bits(raw);
                if v.is_nan() && r.optional {
                    None
                } else {
                    Some(f64::from(v) / scale)
                }
            }
        };
        Ok(value)
    }

    fn req(&self, r: &Register) -> Result<f64, ModbusError> {
        self.get(r)?.ok_or(ModbusError::Missing(r.name))
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn req_u32(&self, r: &Register) -> Result<u32, ModbusError> {
        // Integer registers with scale 1 only.
        Ok(self.req(r)? as u32)
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn opt_u32(&self, r: &Register) -> Result<Option<u32>, ModbusError> {
        Ok(self.get(r)?.map(|v| v as u32))
    }

    #[allow(clippy::cast_possible_truncation)]
    fn opt_f32(&self, r: &Register) -> Result<Option<f32>, ModbusError> {
        Ok(self.get(r)?.map(|v| v as f32))
    }

    #[allow(clippy::cast_possible_truncation)]
    fn req_f32(&self, r: &Register) -> Result<f32, ModbusError> {
        Ok(self.req(r)? as f32)
    }

    fn opt_u8(&self, r: &Register) -> Result<Option<u8>, ModbusError> {
        self.opt_u32(r)?
            .map(|v| {
                u8::try_from(v).map_err(|_| ModbusError::BadValue {
                    field: r.name,
                    raw: v,
                })
            })
            .transpose()
    }

    fn opt_u16(&self, r: &Register) -> Result<Option<u16>, ModbusError> {
        self.opt_u32(r)?
            .map(|v| {
                u16::try_from(v).map_err(|_| ModbusError::BadValue {
                    field: r.name,
                    raw: v,
                })
            })
            .transpose()
    }

    #[allow(clippy::cast_possible_truncation)]
    fn req_i16(&self, r: &Register) -> Result<i16, ModbusError> {
        Ok(self.req(r)? as i16)
    }
}

impl BlockMut<'_> {
    fn put_raw(&mut self, r: &Register, raw: u32) -> Result<(), ModbusError> {
        let i = usize::from(r.address - self.base);
        let w = usize::from(r.ty.width());
        let got = self.regs.len();
        let words = self
            .regs
            .get_mut(i..i + w)
            .ok_or(ModbusError::Short { needed: i + w, got })?;
        match words {
            [a] => *a = (raw & 0xFFFF) as u16,
            [hi, lo] => {
                *hi = (raw >> 16) as u16;
                *lo = (raw & 0xFFFF) as u16;
            }
            _ => {}
        }
        Ok(())
    }

    /// Store an engineering value (rounded to the register's resolution), or the sentinel.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn put(&mut self, r: &Register, value: Option<f64>) -> Result<(), ModbusError> {
        let Some(v) = value else {
            let sentinel = match r.ty {
                RegType::U16 => 0xFFFF,
                RegType::I16 => 0x8000,
                RegType::U32 => u32::MAX,
                RegType::F32 => f32::NAN.to_bits(),
            };
            return self.put_raw(r, sentinel);
        };
        let scaled = v * f64::from(r.scale);
        let bad = ModbusError::Unrepresentable(r.name);
        let raw = match r.ty {
            RegType::F32 => (scaled as f32).to_bits(),
            RegType::U16 | RegType::I16 | RegType::U32 => {
                let rounded = libm::round(scaled);
                let (min, max) = match r.ty {
                    // The sentinels are reserved for absent values of optional registers.
                    RegType::U16 => (0.0, if r.optional { 65_534.0 } else { 65_535.0 }),
                    RegType::I16 => (f64::from(i16::MIN + 1), f64::from(i16::MAX)),
                    _ => (
                        0.0,
                        if r.optional {
                            4_294_967_294.0
                        } else {
                            4_294_967_295.0
                        },
                    ),
                };
                if !rounded.is_finite() || rounded < min || rounded > max {
                    return Err(bad);
                }
                match r.ty {
                    RegType::I16 => u32::from(rounded as i16 as u16),
                    _ => rounded as u32,
                }
            }
        };
        self.put_raw(r, raw)
    }
}

/// What the identification block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identification {
    /// Device kind.
    pub kind: DeviceKind,
    /// Register map version.
    pub map_version: u16,
    /// Firmware version (major, minor, patch).
    pub firmware: (u16, u16, u16),
}

impl Identification {
    /// Check that the device is of the expected kind and speaks this map version.
    pub fn check(&self, expected: DeviceKind) -> Result<(), ModbusError> {
        if self.map_version != MAP_VERSION {
            return Err(ModbusError::MapVersion {
                found: self.map_version,
                expected: MAP_VERSION,
            });
        }
        if self.kind != expected {
            return Err(ModbusError::KindMismatch {
                expected,
                found: self.kind,
            });
        }
        Ok(())
    }
}

/// The identification block of a device of `kind` with firmware `fw`.
pub fn encode_identification(kind: DeviceKind, fw: (u16, u16, u16)) -> [u16; 8] {
    [
        kind.code(),
        MAP_VERSION,
        fw.0,
        fw.1,
        fw.2,
        TELEMETRY_START,
        map(kind).telemetry_len(),
        0,
    ]
}

/// Parse an identification block (input registers 0..=7). The map version is *not* checked
/// here, so a device speaking another version can be reported; use [`Identification::check`].
pub fn decode_identification(regs: &[u16]) -> Result<Identification, ModbusError> {
    let [kind, map_version, major, minor, patch, ..] = regs else {
        return Err(ModbusError::Short {
            needed: usize::from(IDENT_LEN),
            got: regs.len(),
        });
    };
    let kind = DeviceKind::from_code(*kind).ok_or(ModbusError::UnknownKind(*kind))?;
    Ok(Identification {
        kind,
        map_version: *map_version,
        firmware: (*major, *minor, *patch),
    })
}

/// Result of the last config or command a device handled (acknowledgement block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// Nothing handled since boot.
    None,
    /// The config or command with this id was applied.
    Applied(u32),
    /// The config or command with this id was rejected.
    Rejected(u32),
}

/// The acknowledgement block (input registers 90..=92).
pub fn encode_ack(result: AckResult) -> [u16; 3] {
    let (id, code) = match result {
        AckResult::None => (0, 0),
        AckResult::Applied(id) => (id, 1),
        AckResult::Rejected(id) => (id, 2),
    };
    [(id >> 16) as u16, (id & 0xFFFF) as u16, code]
}

/// Parse the acknowledgement block.
pub fn decode_ack(regs: &[u16]) -> Result<AckResult, ModbusError> {
    let b = Block {
        base: ACK_START,
        regs,
    };
    let id = b.req_u32(&ACKNOWLEDGEMENT[0])?;
    match b.req_u32(&ACKNOWLEDGEMENT[1])? {
        0 => Ok(AckResult::None),
        1 => Ok(AckResult::Applied(id)),
        2 => Ok(AckResult::Rejected(id)),
        raw => Err(ModbusError::BadValue {
            field: "ack_result",
            raw,
        }),
    }
}

/// Write a kind's telemetry block into `out` (from [`TELEMETRY_START`]); returns its length.
/// Values are rounded to the register resolution.
pub fn encode_telemetry(data: &TelemetryData, out: &mut [u16]) -> Result<usize, ModbusError> {
    let len = usize::from(map(data.kind()).telemetry_len());
    let got = out.len();
    let regs = out
        .get_mut(..len)
        .ok_or(ModbusError::Short { needed: len, got })?;
    regs.fill(0);
    let mut b = BlockMut {
        base: TELEMETRY_START,
        regs,
    };
    let f = |v: f32| Some(f64::from(v));
    let of = |v: Option<f32>| v.map(f64::from);
    match data {
        TelemetryData::Streetlight(t) => {
            b.put(&SL_LAMP_ON, Some(if t.lamp_on { 1.0 } else { 0.0 }))?;
            b.put(&SL_DIM, Some(f64::from(t.dim_pct)))?;
            b.put(&SL_VOLTAGE, f(t.voltage_v))?;
            b.put(&SL_CURRENT, f(t.current_a))?;
            b.put(&SL_POWER, f(t.power_w))?;
            b.put(&SL_ENERGY, Some(f64::from(t.energy_wh)))?;
            b.put(&SL_LEAKAGE, f(t.leakage_ma))?;
            b.put(&SL_HOURS, Some(f64::from(t.operating_h)))?;
            b.put(&SL_SWITCHES, Some(f64::from(t.switch_count)))?;
        }
        TelemetryData::Manhole(t) => {
            b.put(&MH_TILT, f(t.tilt_deg))?;
            b.put(&MH_WATER, of(t.water_level_cm))?;
            b.put(&MH_TEMP, of(t.temperature_c))?;
            b.put(&MH_BATTERY, Some(f64::from(t.battery_pct)))?;
        }
        TelemetryData::Bin(t) => {
            b.put(&BN_FILL, f(t.fill_pct))?;
            b.put(&BN_DISTANCE, t.distance_mm.map(f64::from))?;
            b.put(&BN_TEMP, f(t.temperature_c))?;
            b.put(&BN_TILT, of(t.tilt_deg))?;
            b.put(&BN_BATTERY, Some(f64::from(t.battery_pct)))?;
        }
        TelemetryData::Toilet(t) => {
            b.put(&WC_NH3, f(t.nh3_mg_m3))?;
            b.put(&WC_H2S, f(t.h2s_mg_m3))?;
            b.put(&WC_NH3_AVG, of(t.nh3_avg_mg_m3))?;
            b.put(&WC_H2S_AVG, of(t.h2s_avg_mg_m3))?;
            b.put(&WC_TEMP, of(t.temperature_c))?;
            b.put(&WC_HUMIDITY, of(t.humidity_pct))?;
            b.put(&WC_BATTERY, t.battery_pct.map(f64::from))?;
        }
    }
    Ok(len)
}

/// Read a kind's telemetry block (registers from [`TELEMETRY_START`]) and validate it.
pub fn decode_telemetry(kind: DeviceKind, regs: &[u16]) -> Result<TelemetryData, ModbusError> {
    let b = Block {
        base: TELEMETRY_START,
        regs,
    };
    let pct = |r: &Register| -> Result<u8, ModbusError> {
        let v = b.req_u32(r)?;
        u8::try_from(v).map_err(|_| ModbusError::BadValue {
            field: r.name,
            raw: v,
        })
    };
    let data = match kind {
        DeviceKind::Streetlight => TelemetryData::Streetlight(StreetlightTelemetry {
            lamp_on: match b.req_u32(&SL_LAMP_ON)? {
                0 => false,
                1 => true,
                raw => {
                    return Err(ModbusError::BadValue {
                        field: SL_LAMP_ON.name,
                        raw,
                    });
                }
            },
            dim_pct: pct(&SL_DIM)?,
            voltage_v: b.req_f32(&SL_VOLTAGE)?,
            current_a: b.req_f32(&SL_CURRENT)?,
            power_w: b.req_f32(&SL_POWER)?,
            energy_wh: b.req_u32(&SL_ENERGY)?,
            leakage_ma: b.req_f32(&SL_LEAKAGE)?,
            operating_h: b.req_u32(&SL_HOURS)?,
            switch_count: b.req_u32(&SL_SWITCHES)?,
        }),
        DeviceKind::Manhole => TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: b.req_f32(&MH_TILT)?,
            water_level_cm: b.opt_f32(&MH_WATER)?,
            temperature_c: b.opt_f32(&MH_TEMP)?,
            battery_pct: pct(&MH_BATTERY)?,
        }),
        DeviceKind::Bin => TelemetryData::Bin(BinTelemetry {
            fill_pct: b.req_f32(&BN_FILL)?,
            distance_mm: b.opt_u16(&BN_DISTANCE)?,
            temperature_c: b.req_f32(&BN_TEMP)?,
            tilt_deg: b.opt_f32(&BN_TILT)?,
            battery_pct: pct(&BN_BATTERY)?,
        }),
        DeviceKind::Toilet => TelemetryData::Toilet(ToiletTelemetry {
            nh3_mg_m3: b.req_f32(&WC_NH3)?,
            h2s_mg_m3: b.req_f32(&WC_H2S)?,
            nh3_avg_mg_m3: b.opt_f32(&WC_NH3_AVG)?,
            h2s_avg_mg_m3: b.opt_f32(&WC_H2S_AVG)?,
            temperature_c: b.opt_f32(&WC_TEMP)?,
            humidity_pct: b.opt_f32(&WC_HUMIDITY)?,
            battery_pct: b.opt_u8(&WC_BATTERY)?,
        }),
    };
    data.validate()?;
    Ok(data)
}

/// Write the config block ([`CONFIG_LEN`] holding registers from [`CONFIG_START`]).
pub fn encode_config(config: &Config, out: &mut [u16]) -> Result<usize, ModbusError> {
    let len = usize::from(CONFIG_LEN);
    let got = out.len();
    let regs = out
        .get_mut(..len)
        .ok_or(ModbusError::Short { needed: len, got })?;
    regs.fill(0);
    let mut b = BlockMut {
        base: CONFIG_START,
        regs,
    };
    let u = |v: Option<u32>| v.map(f64::from);
    let f = |v: Option<f32>| v.map(f64::from);
    b.put(&C_ID, Some(f64::from(config.config_id)))?;
    b.put(&C_REPORT, u(config.report_interval_s))?;
    b.put(&C_HEARTBEAT, u(config.heartbeat_interval_s))?;
    b.put(&C_DEADBAND, f(config.deadband))?;
    b.put(&C_HOLD, u(config.hold_s))?;
    b.put(&C_TILT_ALARM, f(config.tilt_alarm_deg))?;
    b.put(&C_TILT_OPEN, f(config.tilt_open_deg))?;
    b.put(&C_TILT_HYST, f(config.tilt_hysteresis_deg))?;
    b.put(&C_WATER, f(config.water_high_cm))?;
    b.put(&C_DEPTH, config.bin_depth_mm.map(f64::from))?;
    b.put(&C_FULL, f(config.full_pct))?;
    b.put(&C_OVERFLOW, f(config.overflow_pct))?;
    b.put(&C_FILL_HYST, f(config.fill_hysteresis_pct))?;
    b.put(&C_FIRE, f(config.fire_temp_c))?;
    b.put(&C_NH3, f(config.nh3_limit_mg_m3))?;
    b.put(&C_H2S, f(config.h2s_limit_mg_m3))?;
    b.put(&C_ODOUR_HYST, f(config.odour_hysteresis_pct))?;
    b.put(&C_ODOUR_WIN, u(config.odour_window_s))?;
    b.put(&C_BATTERY, config.battery_low_pct.map(f64::from))?;
    b.put(&C_MIN_CURRENT, f(config.min_current_a))?;
    b.put(&C_LEAKAGE, f(config.leakage_limit_ma))?;
    b.put(&C_SUPPLY, f(config.supply_min_v))?;
    match &config.schedule {
        None => b.put(&C_SCHEDULE, Some(0.0))?,
        Some(s) => {
            b.put(&C_SCHEDULE, Some(1.0))?;
            b.put(&C_LAT, Some(s.lat_deg))?;
            b.put(&C_LON, Some(s.lon_deg))?;
            b.put(&C_ON_OFF, Some(f64::from(s.on_offset_min)))?;
            b.put(&C_OFF_OFF, Some(f64::from(s.off_offset_min)))?;
            b.put(&C_NIGHT_DIM, s.night_dim_pct.map(f64::from))?;
            b.put(&C_DIM_FROM, s.dim_from_min.map(f64::from))?;
            b.put(&C_DIM_TO, s.dim_to_min.map(f64::from))?;
            b.put(&C_UTC, Some(f64::from(s.utc_offset_min)))?;
        }
    }
    Ok(len)
}

/// Read the config block and validate it.
pub fn decode_config(regs: &[u16]) -> Result<Config, ModbusError> {
    let b = Block {
        base: CONFIG_START,
        regs,
    };
    let schedule = match b.req_u32(&C_SCHEDULE)? {
        0 => None,
        1 => Some(LampSchedule {
            lat_deg: b.req(&C_LAT)?,
            lon_deg: b.req(&C_LON)?,
            on_offset_min: b.req_i16(&C_ON_OFF)?,
            off_offset_min: b.req_i16(&C_OFF_OFF)?,
            night_dim_pct: b.opt_u8(&C_NIGHT_DIM)?,
            dim_from_min: b.opt_u16(&C_DIM_FROM)?,
            dim_to_min: b.opt_u16(&C_DIM_TO)?,
            utc_offset_min: b.req_i16(&C_UTC)?,
        }),
        raw => {
            return Err(ModbusError::BadValue {
                field: C_SCHEDULE.name,
                raw,
            });
        }
    };
    let config = Config {
        config_id: b.req_u32(&C_ID)?,
        report_interval_s: b.opt_u32(&C_REPORT)?,
        heartbeat_interval_s: b.opt_u32(&C_HEARTBEAT)?,
        deadband: b.opt_f32(&C_DEADBAND)?,
        hold_s: b.opt_u32(&C_HOLD)?,
        tilt_alarm_deg: b.opt_f32(&C_TILT_ALARM)?,
        tilt_open_deg: b.opt_f32(&C_TILT_OPEN)?,
        tilt_hysteresis_deg: b.opt_f32(&C_TILT_HYST)?,
        water_high_cm: b.opt_f32(&C_WATER)?,
        bin_depth_mm: b.opt_u16(&C_DEPTH)?,
        full_pct: b.opt_f32(&C_FULL)?,
        overflow_pct: b.opt_f32(&C_OVERFLOW)?,
        fill_hysteresis_pct: b.opt_f32(&C_FILL_HYST)?,
        fire_temp_c: b.opt_f32(&C_FIRE)?,
        nh3_limit_mg_m3: b.opt_f32(&C_NH3)?,
        h2s_limit_mg_m3: b.opt_f32(&C_H2S)?,
        odour_hysteresis_pct: b.opt_f32(&C_ODOUR_HYST)?,
        odour_window_s: b.opt_u32(&C_ODOUR_WIN)?,
        battery_low_pct: b.opt_u8(&C_BATTERY)?,
        min_current_a: b.opt_f32(&C_MIN_CURRENT)?,
        leakage_limit_ma: b.opt_f32(&C_LEAKAGE)?,
        supply_min_v: b.opt_f32(&C_SUPPLY)?,
        schedule,
    };
    config.validate()?;
    Ok(config)
}

/// The command block ([`COMMAND_LEN`] holding registers from [`COMMAND_START`]).
pub fn encode_command(command: &Command) -> Result<[u16; 6], ModbusError> {
    let mut regs = [0u16; 6];
    let mut b = BlockMut {
        base: COMMAND_START,
        regs: &mut regs,
    };
    let (code, dim, expires) = match command.action {
        Action::LampOn { dim_pct, expires_s } => (1, dim_pct, expires_s),
        Action::LampOff { expires_s } => (2, None, expires_s),
        Action::Dim { pct, expires_s } => (3, Some(pct), expires_s),
        Action::ResumeSchedule => (4, None, None),
        Action::RequestReport => (5, None, None),
        Action::Reboot => (6, None, None),
    };
    b.put(&K_ID, Some(f64::from(command.cmd_id)))?;
    b.put(&K_ACTION, Some(f64::from(code)))?;
    b.put(&K_DIM, dim.map(f64::from))?;
    b.put(&K_EXPIRES, expires.map(f64::from))?;
    Ok(regs)
}

/// Read the command block and validate it.
pub fn decode_command(regs: &[u16]) -> Result<Command, ModbusError> {
    let b = Block {
        base: COMMAND_START,
        regs,
    };
    let dim = b.opt_u8(&K_DIM)?;
    let expires_s = b.opt_u32(&K_EXPIRES)?;
    let action = match b.req_u32(&K_ACTION)? {
        1 => Action::LampOn {
            dim_pct: dim,
            expires_s,
        },
        2 => Action::LampOff { expires_s },
        3 => Action::Dim {
            pct: dim.ok_or(ModbusError::Missing(K_DIM.name))?,
            expires_s,
        },
        4 => Action::ResumeSchedule,
        5 => Action::RequestReport,
        6 => Action::Reboot,
        raw => {
            return Err(ModbusError::BadValue {
                field: K_ACTION.name,
                raw,
            });
        }
    };
    let command = Command {
        cmd_id: b.req_u32(&K_ID)?,
        action,
    };
    command.validate()?;
    Ok(command)
}

/// Every register map rendered as Markdown tables (the protocol document embeds this text).
#[cfg(feature = "std")]
pub fn markdown_tables() -> std::string::String {
    use std::fmt::Write as _;
    fn table(out: &mut std::string::String, title: &str, regs: &[Register]) {
        let _ = writeln!(out, "#### {title}\n");
        let _ = writeln!(
            out,
            "| address | space | type | scale | unit | access | name | description |"
        );
        let _ = writeln!(out, "|---:|---|---|---:|---|---|---|---|");
        for r in regs {
            let space = match r.space {
                Space::Input => "input",
                Space::Holding => "holding",
            };
            let access = match r.access {
                Access::Read => "R",
                Access::ReadWrite => "RW",
            };
            let opt = if r.optional { " (optional)" } else { "" };
            let _ = writeln!(
                out,
                "| {} | {space} | {} | {} | {} | {access} | `{}` | {}{opt} |",
                r.address,
                r.ty.as_str(),
                r.scale,
                r.unit,
                r.name,
                r.description
            );
        }
        out.push('\n');
    }
    let mut out = std::string::String::new();
    table(
        &mut out,
        "Identification block (every kind)",
        &IDENTIFICATION,
    );
    table(
        &mut out,
        "Acknowledgement block (every kind)",
        &ACKNOWLEDGEMENT,
    );
    for kind in DeviceKind::ALL {
        let m = map(kind);
        table(
            &mut out,
            &std::format!(
                "Telemetry: {kind} ({} registers from {TELEMETRY_START})",
                m.telemetry_len()
            ),
            m.telemetry,
        );
    }
    table(
        &mut out,
        "Config block (every kind, holding registers)",
        &CONFIG,
    );
    table(
        &mut out,
        "Command block (every kind, holding registers)",
        &COMMAND,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(v: f32, scale: f32) -> f32 {
        ((f64::from(v) * f64::from(scale)).round() / f64::from(scale)) as f32
    }

    fn streetlight() -> impl Strategy<Value = StreetlightTelemetry> {
        (
            any::<bool>(),
            0u8..=100,
            0.0f32..500.0,
            0.0f32..50.0,
            0.0f32..10_000.0,
            any::<u32>(),
            0.0f32..10_000.0,
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(lamp_on, dim_pct, v, a, w, e, l, h, s)| StreetlightTelemetry {
                    lamp_on,
                    dim_pct,
                    voltage_v: q(v, 10.0),
                    current_a: q(a, 1000.0),
                    power_w: q(w, 10.0),
                    energy_wh: e,
                    leakage_ma: l,
                    operating_h: h,
                    switch_count: s,
                },
            )
    }

    fn manhole() -> impl Strategy<Value = ManholeTelemetry> {
        (
            0.0f32..180.0,
            proptest::option::of(0.0f32..1000.0),
            proptest::option::of(-50.0f32..300.0),
            0u8..=100,
        )
            .prop_map(|(t, w, c, b)| ManholeTelemetry {
                tilt_deg: q(t, 100.0),
                water_level_cm: w.map(|w| q(w, 10.0)),
                temperature_c: c.map(|c| q(c, 10.0)),
                battery_pct: b,
            })
    }

    fn bin() -> impl Strategy<Value = BinTelemetry> {
        (
            0.0f32..150.0,
            proptest::option::of(0u16..65_535),
            -50.0f32..300.0,
            proptest::option::of(0.0f32..180.0),
            0u8..=100,
        )
            .prop_map(|(f, d, c, t, b)| BinTelemetry {
                fill_pct: q(f, 10.0),
                distance_mm: d,
                temperature_c: q(c, 10.0),
                tilt_deg: t.map(|t| q(t, 100.0)),
                battery_pct: b,
            })
    }

    fn toilet() -> impl Strategy<Value = ToiletTelemetry> {
        let gas = || 0.0f32..1000.0;
        (
            gas(),
            gas(),
            proptest::option::of(gas()),
            proptest::option::of(gas()),
            proptest::option::of(-50.0f32..300.0),
            proptest::option::of(0.0f32..100.0),
            proptest::option::of(0u8..=100),
        )
            .prop_map(|(n, h, na, ha, t, rh, b)| ToiletTelemetry {
                nh3_mg_m3: q(n, 1000.0),
                h2s_mg_m3: q(h, 1000.0),
                nh3_avg_mg_m3: na.map(|v| q(v, 1000.0)),
                h2s_avg_mg_m3: ha.map(|v| q(v, 1000.0)),
                temperature_c: t.map(|v| q(v, 10.0)),
                humidity_pct: rh.map(|v| q(v, 10.0)),
                battery_pct: b,
            })
    }

    fn telemetry() -> impl Strategy<Value = TelemetryData> {
        prop_oneof![
            streetlight().prop_map(TelemetryData::Streetlight),
            manhole().prop_map(TelemetryData::Manhole),
            bin().prop_map(TelemetryData::Bin),
            toilet().prop_map(TelemetryData::Toilet),
        ]
    }

    #[test]
    fn blocks_are_contiguous_and_fit() {
        for kind in DeviceKind::ALL {
            let m = map(kind);
            assert_eq!(m.kind, kind);
            let mut next = TELEMETRY_START;
            for r in m.telemetry {
                assert_eq!(r.address, next, "{kind} {}", r.name);
                next += r.ty.width();
            }
            assert!(usize::from(m.telemetry_len()) <= TELEMETRY_MAX_LEN);
        }
        let mut next = CONFIG_START;
        for r in &CONFIG {
            assert_eq!(r.address, next, "{}", r.name);
            next += r.ty.width();
        }
        assert_eq!(next + 1, CONFIG_START + CONFIG_LEN); // one reserved register
        let mut next = COMMAND_START;
        for r in &COMMAND {
            assert_eq!(r.address, next, "{}", r.name);
            next += r.ty.width();
        }
        assert_eq!(next, COMMAND_START + COMMAND_LEN);
    }

    #[test]
    fn identification() {
        let regs = encode_identification(DeviceKind::Bin, (1, 4, 2));
        let id = decode_identification(&regs).unwrap();
        assert_eq!(id.kind, DeviceKind::Bin);
        assert_eq!(id.firmware, (1, 4, 2));
        assert_eq!(id.check(DeviceKind::Bin), Ok(()));
        assert_eq!(
            id.check(DeviceKind::Manhole),
            Err(ModbusError::KindMismatch {
                expected: DeviceKind::Manhole,
                found: DeviceKind::Bin
            })
        );
        let mut other = regs;
        other[1] = 7;
        assert_eq!(
            decode_identification(&other)
                .unwrap()
                .check(DeviceKind::Bin),
            Err(ModbusError::MapVersion {
                found: 7,
                expected: MAP_VERSION
            })
        );
        other[0] = 9;
        assert_eq!(
            decode_identification(&other),
            Err(ModbusError::UnknownKind(9))
        );
        assert!(matches!(
            decode_identification(&regs[..3]),
            Err(ModbusError::Short { .. })
        ));
    }

    #[test]
    fn impossible_values_are_refused_with_the_field() {
        let data = TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: 5.0,
            battery_pct: 90,
            ..Default::default()
        });
        let mut regs = [0u16; TELEMETRY_MAX_LEN];
        encode_telemetry(&data, &mut regs).unwrap();
        regs[0] = 20_000; // 200.00°
        let err = decode_telemetry(DeviceKind::Manhole, &regs).unwrap_err();
        assert!(
            matches!(err, ModbusError::Invalid(e) if e.field == "data.manhole.tilt_deg"),
            "{err}"
        );
        regs[0] = 500;
        regs[3] = 0xFFFF; // required battery holds the sentinel
        assert_eq!(
            decode_telemetry(DeviceKind::Manhole, &regs),
            Err(ModbusError::BadValue {
                field: "battery_pct",
                raw: 65_535
            })
        );
        // Voltage above 500 V.
        let mut sl = [0u16; TELEMETRY_MAX_LEN];
        encode_telemetry(
            &TelemetryData::Streetlight(StreetlightTelemetry::default()),
            &mut sl,
        )
        .unwrap();
        sl[2] = 6_000;
        assert!(
            matches!(decode_telemetry(DeviceKind::Streetlight, &sl), Err(ModbusError::Invalid(e)) if e.field == "data.streetlight.voltage_v")
        );
        sl[0] = 2;
        assert_eq!(
            decode_telemetry(DeviceKind::Streetlight, &sl),
            Err(ModbusError::BadValue {
                field: "lamp_on",
                raw: 2
            })
        );
    }

    #[test]
    fn ack_block() {
        for r in [
            AckResult::None,
            AckResult::Applied(70_000),
            AckResult::Rejected(3),
        ] {
            assert_eq!(decode_ack(&encode_ack(r)), Ok(r));
        }
        assert!(decode_ack(&[0, 0, 5]).is_err());
    }

    #[test]
    fn config_and_command_round_trip() {
        let config = Config {
            config_id: 77,
            report_interval_s: Some(600),
            tilt_alarm_deg: Some(12.5),
            tilt_open_deg: Some(60.0),
            bin_depth_mm: Some(900),
            battery_low_pct: Some(25),
            schedule: Some(LampSchedule {
                lat_deg: f64::from(39.9042f32),
                lon_deg: f64::from(116.4074f32),
                on_offset_min: 10,
                off_offset_min: -15,
                night_dim_pct: Some(50),
                dim_from_min: Some(0),
                dim_to_min: Some(300),
                utc_offset_min: 480,
            }),
            ..Default::default()
        };
        let mut regs = [0u16; CONFIG_LEN as usize];
        encode_config(&config, &mut regs).unwrap();
        assert_eq!(decode_config(&regs), Ok(config));
        // A partial config with nothing set keeps every sentinel.
        let empty = Config {
            config_id: 1,
            ..Default::default()
        };
        encode_config(&empty, &mut regs).unwrap();
        assert_eq!(decode_config(&regs), Ok(empty));
        // An invalid combination is refused by validation.
        let bad = Config {
            config_id: 2,
            tilt_alarm_deg: Some(30.0),
            tilt_open_deg: Some(20.0),
            ..Default::default()
        };
        encode_config(&bad, &mut regs).unwrap();
        assert!(
            matches!(decode_config(&regs), Err(ModbusError::Invalid(e)) if e.field == "tilt_open_deg")
        );

        for action in [
            Action::LampOn {
                dim_pct: Some(40),
                expires_s: Some(3600),
            },
            Action::LampOn {
                dim_pct: None,
                expires_s: None,
            },
            Action::LampOff { expires_s: None },
            Action::Dim {
                pct: 30,
                expires_s: None,
            },
            Action::ResumeSchedule,
            Action::RequestReport,
            Action::Reboot,
        ] {
            let c = Command {
                cmd_id: 123_456,
                action,
            };
            assert_eq!(decode_command(&encode_command(&c).unwrap()), Ok(c));
        }
        let mut regs = encode_command(&Command {
            cmd_id: 1,
            action: Action::Reboot,
        })
        .unwrap();
        regs[2] = 99;
        assert_eq!(
            decode_command(&regs),
            Err(ModbusError::BadValue {
                field: "action",
                raw: 99
            })
        );
    }

    /// The prose names each written block's range as the code has it.
    #[cfg(feature = "std")]
    #[test]
    fn protocol_document_states_the_block_ranges() {
        let readme = include_str!("../README.md");
        let config = std::format!("holding {}–{}", CONFIG_START, CONFIG_START + CONFIG_LEN - 1);
        let command = std::format!(
            "holding {}–{}",
            COMMAND_START,
            COMMAND_START + COMMAND_LEN - 1
        );
        assert!(readme.contains(&config), "README should say {config}");
        assert!(readme.contains(&command), "README should say {command}");
        let last = CONFIG[CONFIG.len() - 1];
        assert_eq!(
            last.name, "schedule.utc_offset_min",
            "every config field is mapped"
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn protocol_document_has_the_current_tables() {
        let readme = include_str!("../README.md");
        let begin = "<!-- BEGIN MODBUS TABLES -->\n";
        let end = "<!-- END MODBUS TABLES -->";
        let start = readme.find(begin).expect("begin marker") + begin.len();
        let stop = readme.find(end).expect("end marker");
        let expected = markdown_tables();
        if readme[start..stop] != expected {
            // Regenerate with: UPDATE_MODBUS_TABLES=1 cargo test -p streetgate-protocols modbus
            if std::env::var_os("UPDATE_MODBUS_TABLES").is_some() {
                let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
                let updated = std::format!("{}{expected}{}", &readme[..start], &readme[stop..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!(
                    "protocols/README.md Modbus tables are stale: run with UPDATE_MODBUS_TABLES=1"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn telemetry_round_trips(data in telemetry()) {
            let mut regs = [0u16; TELEMETRY_MAX_LEN];
            let len = encode_telemetry(&data, &mut regs).unwrap();
            prop_assert_eq!(len, usize::from(map(data.kind()).telemetry_len()));
            prop_assert_eq!(decode_telemetry(data.kind(), &regs[..len]).unwrap(), data);
        }

        #[test]
        fn arbitrary_registers_never_panic(regs in proptest::collection::vec(any::<u16>(), 0..64), k in 0usize..4) {
            let _ = decode_telemetry(DeviceKind::ALL[k], &regs);
            let _ = decode_identification(&regs);
            let _ = decode_config(&regs);
            let _ = decode_command(&regs);
            let _ = decode_ack(&regs);
        }
    }
}
