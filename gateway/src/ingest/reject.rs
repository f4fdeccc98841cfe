//! Why a message that reached the gateway was refused: one reason per refused message, the
//! `reason` label of `streetgate_rejected_total` and the keys of `GET /api/rejections`.
//!
//! The table in `protocols/README.md` ("Limits and rejection reasons") is checked against this
//! enum by a test: every reason is documented there, and nothing else is. Modbus transport
//! failures (timeouts, lost connections, exceptions) are not rejections: no message arrived to
//! refuse. They are counted in `streetgate_modbus_errors_total` ([`ModbusErrorKind`]).

use streetgate_protocols::codec::DecodeError;

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// No payload.
    Empty,
    /// Over the payload size limit.
    TooLarge,
    /// First byte neither `{` (JSON) nor the binary magic.
    UnknownEncoding,
    /// A downlink channel (`config`, `command`) on the uplink path.
    WrongDirection,
    /// Syntax, unknown field or kind, wrong type, missing field, trailing bytes.
    Malformed,
    /// NaN/infinity or physically impossible (also Modbus registers that decode to such).
    InvalidValue,
    /// `device_id` in the payload differs from the topic.
    DeviceMismatch,
    /// Not in the inventory: listed as unregistered, never used as readings.
    UnknownDevice,
    /// Not a device topic: unknown channel, wrong number of levels, invalid or reserved device id.
    BadTopic,
    /// Sequence number already seen (a QoS 1 redelivery or a replay).
    Duplicate,
    /// Telemetry, alarm or status of another kind than the inventory says.
    KindMismatch,
    /// A Modbus unit whose identification block differs from the inventory.
    ModbusIdentification,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [Self; 12] = [
        Self::Empty,
        Self::TooLarge,
        Self::UnknownEncoding,
        Self::WrongDirection,
        Self::Malformed,
        Self::InvalidValue,
        Self::DeviceMismatch,
        Self::UnknownDevice,
        Self::BadTopic,
        Self::Duplicate,
        Self::KindMismatch,
        Self::ModbusIdentification,
    ];

    /// Metrics label and API key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge => "too_large",
            Self::UnknownEncoding => "unknown_encoding",
            Self::WrongDirection => "wrong_direction",
            Self::Malformed => "malformed",
            Self::InvalidValue => "invalid_value",
            Self::DeviceMismatch => "device_mismatch",
            Self::UnknownDevice => "unknown_device",
            Self::BadTopic => "bad_topic",
            Self::Duplicate => "duplicate",
            Self::KindMismatch => "kind_mismatch",
            Self::ModbusIdentification => "modbus_identification",
        }
    }

    /// Position in [`Self::ALL`] (counter index).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl From<&DecodeError> for RejectReason {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::Empty => Self::Empty,
            DecodeError::TooLarge { .. } => Self::TooLarge,
            DecodeError::UnknownEncoding { .. } => Self::UnknownEncoding,
            DecodeError::WrongDirection(_) => Self::WrongDirection,
            DecodeError::Malformed { .. } => Self::Malformed,
            DecodeError::Invalid(_) => Self::InvalidValue,
            DecodeError::DeviceMismatch { .. } => Self::DeviceMismatch,
        }
    }
}

/// A Modbus transport failure (`streetgate_modbus_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModbusErrorKind {
    /// A unit did not answer within `request_timeout`.
    Timeout,
    /// The endpoint could not be reached, or the connection broke.
    Connection,
    /// A unit answered with a Modbus exception.
    Exception,
}

impl ModbusErrorKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Timeout, Self::Connection, Self::Exception];

    /// Metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Exception => "exception",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_all() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    /// The protocol document's table lists exactly the reasons counted.
    #[test]
    fn the_documented_table_is_the_enum() {
        let doc = include_str!("../../../protocols/README.md");
        let section = doc
            .split("## Limits and rejection reasons")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("protocols/README.md has the rejection section");
        let documented: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        let counted: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, counted, "protocols/README.md vs RejectReason");
    }

    #[test]
    fn every_decode_error_has_its_codec_label() {
        use streetgate_protocols::codec::{Detail, Encoding};
        let errors = [
            DecodeError::Empty,
            DecodeError::TooLarge { len: 2, limit: 1 },
            DecodeError::UnknownEncoding { first_byte: 0 },
            DecodeError::WrongDirection(streetgate_protocols::Channel::Config),
            DecodeError::Malformed {
                encoding: Encoding::Json,
                field: heapless::String::new(),
                detail: Detail::new(),
            },
        ];
        for e in &errors {
            assert_eq!(RejectReason::from(e).as_str(), e.reason());
        }
    }
}
