//! Device identity: kinds, ids and CJ/T 214 component codes.

use core::fmt;
use core::str::FromStr;

#[cfg(feature = "serde")]
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest device id accepted anywhere (topics, payloads, inventory).
pub const DEVICE_ID_MAX_LEN: usize = 32;

/// The four kinds of street device streetgate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DeviceKind {
    /// Single-lamp streetlight controller (路灯单灯控制器).
    Streetlight,
    /// Manhole-cover tilt sensor (智能井盖).
    Manhole,
    /// Waste-bin fill sensor (垃圾箱满溢).
    Bin,
    /// Public-toilet odour sensor (公厕异味, NH3/H2S).
    Toilet,
}

impl DeviceKind {
    /// Every kind, in wire-code order.
    pub const ALL: [DeviceKind; 4] = [Self::Streetlight, Self::Manhole, Self::Bin, Self::Toilet];

    /// Lower-case name used in JSON, topics and inventories.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Streetlight => "streetlight",
            Self::Manhole => "manhole",
            Self::Bin => "bin",
            Self::Toilet => "toilet",
        }
    }

    /// Numeric code used in the Modbus identification block.
    pub const fn code(self) -> u16 {
        match self {
            Self::Streetlight => 1,
            Self::Manhole => 2,
            Self::Bin => 3,
            Self::Toilet => 4,
        }
    }

    /// Inverse of [`DeviceKind::code`].
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::Streetlight),
            2 => Some(Self::Manhole),
            3 => Some(Self::Bin),
            4 => Some(Self::Toilet),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that is not a device kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKind;

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown device kind (expected streetlight, manhole, bin or toilet)")
    }
}

impl core::error::Error for UnknownKind {}

impl FromStr for DeviceKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownKind)
    }
}

/// Why a device id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceIdError {
    /// Empty id.
    Empty,
    /// Longer than [`DEVICE_ID_MAX_LEN`] bytes.
    TooLong,
    /// A character outside `A-Z a-z 0-9 - _ .`; topic wildcards and separators can never appear.
    BadChar,
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("device id is empty"),
            Self::TooLong => write!(f, "device id is longer than {DEVICE_ID_MAX_LEN} characters"),
            Self::BadChar => {
                f.write_str("device id may only contain A-Z, a-z, 0-9, '-', '_' and '.'")
            }
        }
    }
}

impl core::error::Error for DeviceIdError {}

/// A device id: 1 to 32 characters from `A-Z a-z 0-9 - _ .`, so that it is always a single,
/// wildcard-free MQTT topic level and a safe file or metric label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(heapless::String<DEVICE_ID_MAX_LEN>);

impl DeviceId {
    /// Validate and wrap a device id.
    pub fn new(s: &str) -> Result<Self, DeviceIdError> {
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if s.len() > DEVICE_ID_MAX_LEN {
            return Err(DeviceIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(DeviceIdError::BadChar);
        }
        let mut out = heapless::String::new();
        out.push_str(s).map_err(|_| DeviceIdError::TooLong)?;
        Ok(Self(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(feature = "serde")]
impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = heapless::String::<64>::deserialize(d)?;
        DeviceId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a component code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentCodeError {
    /// Not exactly 16 characters.
    Length,
    /// A character that is not an ASCII digit.
    NotDigits,
    /// The county part (first six digits) is not a plausible GB/T 2260 code.
    County,
    /// The major class (digits 7-8) is not 01..=08.
    MajorClass,
    /// The minor class (digits 9-10) is 00.
    MinorClass,
    /// The serial (last six digits) is 000000.
    Serial,
}

impl fmt::Display for ComponentCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "component code must be exactly 16 digits",
            Self::NotDigits => "component code must contain digits only",
            Self::County => "component code: first six digits must be a GB/T 2260 county code (province 11..=82)",
            Self::MajorClass => "component code: major class (digits 7-8) must be 01..=08",
            Self::MinorClass => "component code: minor class (digits 9-10) must not be 00",
            Self::Serial => "component code: serial (digits 11-16) must not be 000000",
        })
    }
}

impl core::error::Error for ComponentCodeError {}

/// A 16-digit component (部件) code, CJ/T 214-2007 layout: 6-digit county code (GB/T 2260),
/// 2-digit major class, 2-digit minor class and 6-digit serial, e.g. `3205080101000001`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentCode([u8; 16]);

impl ComponentCode {
    /// Validate a component code.
    pub fn new(s: &str) -> Result<Self, ComponentCodeError> {
        let bytes = s.as_bytes();
        if bytes.len() != 16 {
            return Err(ComponentCodeError::Length);
        }
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ComponentCodeError::NotDigits);
        }
        let num = |r: core::ops::Range<usize>| {
            bytes[r]
                .iter()
                .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
        };
        if !(11..=82).contains(&num(0..2)) {
            return Err(ComponentCodeError::County);
        }
        if !(1..=8).contains(&num(6..8)) {
            return Err(ComponentCodeError::MajorClass);
        }
        if num(8..10) == 0 {
            return Err(ComponentCodeError::MinorClass);
        }
        if num(10..16) == 0 {
            return Err(ComponentCodeError::Serial);
        }
        let mut code = [0u8; 16];
        code.copy_from_slice(bytes);
        Ok(Self(code))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        core::str::from_utf8(&self.0).unwrap_or("")
    }

    /// County code (GB/T 2260), digits 1-6.
    pub fn county(&self) -> &str {
        &self.as_str()[0..6]
    }

    /// Major and minor class together, e.g. `0118` for a streetlight.
    pub fn class(&self) -> &str {
        &self.as_str()[6..10]
    }

    /// The kind this class denotes in the default code table (docs/domain.md), if any.
    /// Classes differ between cities above 0120, so this is advisory, never enforced.
    pub fn default_kind(&self) -> Option<DeviceKind> {
        match self.class() {
            "0118" => Some(DeviceKind::Streetlight),
            "0101" | "0102" | "0103" | "0105" | "0106" | "0107" | "0111" => {
                Some(DeviceKind::Manhole)
            }
            "0305" => Some(DeviceKind::Bin),
            "0301" => Some(DeviceKind::Toilet),
            _ => None,
        }
    }
}

impl fmt::Debug for ComponentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentCode({})", self.as_str())
    }
}

impl fmt::Display for ComponentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ComponentCode {
    type Err = ComponentCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(feature = "serde")]
impl Serialize for ComponentCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for ComponentCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = heapless::String::<32>::deserialize(d)?;
        ComponentCode::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        assert!(DeviceId::new("SL-0001").is_ok());
        assert!(DeviceId::new("a.b_c-9").is_ok());
        assert_eq!(DeviceId::new(""), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::new("a/b"), Err(DeviceIdError::BadChar));
        assert_eq!(DeviceId::new("a+"), Err(DeviceIdError::BadChar));
        assert_eq!(DeviceId::new("#"), Err(DeviceIdError::BadChar));
        assert_eq!(DeviceId::new("灯"), Err(DeviceIdError::BadChar));
        assert_eq!(DeviceId::new(&"x".repeat(33)), Err(DeviceIdError::TooLong));
        assert!(DeviceId::new(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn component_codes() {
        let c = ComponentCode::new("3205080101000001").unwrap();
        assert_eq!(c.county(), "320508");
        assert_eq!(c.class(), "0101");
        assert_eq!(c.default_kind(), Some(DeviceKind::Manhole));
        assert_eq!(
            ComponentCode::new("3205080118000042")
                .unwrap()
                .default_kind(),
            Some(DeviceKind::Streetlight)
        );
        assert_eq!(
            ComponentCode::new("320508010100000"),
            Err(ComponentCodeError::Length)
        );
        assert_eq!(
            ComponentCode::new("32050801010000x1"),
            Err(ComponentCodeError::NotDigits)
        );
        assert_eq!(
            ComponentCode::new("0005080101000001"),
            Err(ComponentCodeError::County)
        );
        assert_eq!(
            ComponentCode::new("3205089901000001"),
            Err(ComponentCodeError::MajorClass)
        );
        assert_eq!(
            ComponentCode::new("3205080100000001"),
            Err(ComponentCodeError::MinorClass)
        );
        assert_eq!(
            ComponentCode::new("3205080101000000"),
            Err(ComponentCodeError::Serial)
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in DeviceKind::ALL {
            assert_eq!(k.as_str().parse::<DeviceKind>(), Ok(k));
            assert_eq!(DeviceKind::from_code(k.code()), Some(k));
        }
        assert!("lamp".parse::<DeviceKind>().is_err());
        assert_eq!(DeviceKind::from_code(0), None);
    }
}
