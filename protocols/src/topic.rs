//! The MQTT topic scheme, parsed and formatted in one place.
//!
//! `streetgate/v1/{device_id}/{channel}`; uplink channels are `telemetry`, `event`, `status` and
//! `ack`, downlink channels `config` and `command`. `status` is retained and doubles as the last
//! will. The gateway publishes case events on `streetgate/v1/alerts/{case_type}` (see
//! [`ALERTS_PREFIX`]).

use core::fmt::{self, Write};

use crate::device::{DEVICE_ID_MAX_LEN, DeviceId, DeviceIdError};

/// First two levels of every device topic.
pub const PREFIX: &str = "streetgate/v1";

/// Topic prefix under which the gateway publishes case events (not a device topic).
pub const ALERTS_PREFIX: &str = "streetgate/v1/_alerts";

/// A device level starting with this is reserved for the gateway (its alerts tree), never a
/// device id in a topic.
pub const RESERVED_LEVEL_PREFIX: char = '_';

/// Longest topic this scheme produces.
pub const TOPIC_MAX_LEN: usize = PREFIX.len() + 1 + DEVICE_ID_MAX_LEN + 1 + 9;

/// A device topic as text.
pub type TopicString = heapless::String<TOPIC_MAX_LEN>;

/// The last topic level: what a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Uplink: periodic readings.
    Telemetry,
    /// Uplink: alarm raised / cleared.
    Event,
    /// Uplink, retained: online/offline, also the last will.
    Status,
    /// Uplink: answer to a config or command.
    Ack,
    /// Downlink: settings.
    Config,
    /// Downlink: commands.
    Command,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 6] = [
        Self::Telemetry,
        Self::Event,
        Self::Status,
        Self::Ack,
        Self::Config,
        Self::Command,
    ];

    /// The topic level text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Event => "event",
            Self::Status => "status",
            Self::Ack => "ack",
            Self::Config => "config",
            Self::Command => "command",
        }
    }

    /// Sent by devices (as opposed to sent to them).
    pub const fn is_uplink(self) -> bool {
        matches!(
            self,
            Self::Telemetry | Self::Event | Self::Status | Self::Ack
        )
    }

    /// Published retained.
    pub const fn is_retained(self) -> bool {
        matches!(self, Self::Status)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a topic is not a streetgate device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Does not start with `streetgate/v1/`.
    Prefix,
    /// The device level is not a valid device id.
    DeviceId(DeviceIdError),
    /// Unknown last level.
    Channel,
    /// Wrong number of levels.
    Levels,
    /// The device level starts with `_`: reserved for the gateway's own trees
    /// (`streetgate/v1/_alerts/...`), never a device.
    Reserved,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefix => write!(f, "topic does not start with {PREFIX}/"),
            Self::DeviceId(e) => write!(f, "topic device level: {e}"),
            Self::Channel => f.write_str(
                "unknown channel (expected telemetry, event, status, ack, config or command)",
            ),
            Self::Levels => write!(f, "topic must be {PREFIX}/{{device_id}}/{{channel}}"),
            Self::Reserved => write!(
                f,
                "device level starting with '_' is reserved (e.g. {ALERTS_PREFIX}), not a device"
            ),
        }
    }
}

impl core::error::Error for TopicError {}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The device the topic belongs to.
    pub device_id: DeviceId,
    /// What the messages on it are.
    pub channel: Channel,
}

impl Topic {
    /// Build a topic.
    pub fn new(device_id: DeviceId, channel: Channel) -> Self {
        Self { device_id, channel }
    }

    /// Parse `streetgate/v1/{device_id}/{channel}`.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::Prefix)?;
        let mut levels = rest.split('/');
        let (Some(id), Some(channel), None) = (levels.next(), levels.next(), levels.next()) else {
            return Err(TopicError::Levels);
        };
        if id.starts_with(RESERVED_LEVEL_PREFIX) {
            return Err(TopicError::Reserved);
        }
        let device_id = DeviceId::new(id).map_err(TopicError::DeviceId)?;
        let channel = Channel::parse(channel).ok_or(TopicError::Channel)?;
        Ok(Self { device_id, channel })
    }

    /// Format as text; always fits in [`TOPIC_MAX_LEN`].
    pub fn format(&self) -> TopicString {
        let mut s = TopicString::new();
        // Cannot overflow: TOPIC_MAX_LEN is computed from the longest id and channel.
        let _ = write!(s, "{PREFIX}/{}/{}", self.device_id, self.channel);
        s
    }

    /// The subscription filter for one channel of all devices, e.g. `streetgate/v1/+/telemetry`.
    pub fn filter_all(channel: Channel) -> heapless::String<40> {
        let mut s = heapless::String::new();
        let _ = write!(s, "{PREFIX}/+/{channel}");
        s
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}/{}/{}", self.device_id, self.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_format() {
        let t = Topic::parse("streetgate/v1/SL-0001/telemetry").unwrap();
        assert_eq!(t.device_id.as_str(), "SL-0001");
        assert_eq!(t.channel, Channel::Telemetry);
        assert_eq!(t.format().as_str(), "streetgate/v1/SL-0001/telemetry");
    }

    #[test]
    fn rejects() {
        assert_eq!(
            Topic::parse("other/v1/a/telemetry"),
            Err(TopicError::Prefix)
        );
        assert_eq!(
            Topic::parse("streetgate/v2/a/telemetry"),
            Err(TopicError::Prefix)
        );
        assert_eq!(Topic::parse("streetgate/v1/a"), Err(TopicError::Levels));
        assert_eq!(
            Topic::parse("streetgate/v1/a/telemetry/x"),
            Err(TopicError::Levels)
        );
        assert_eq!(
            Topic::parse("streetgate/v1/a/foo"),
            Err(TopicError::Channel)
        );
        assert_eq!(
            Topic::parse("streetgate/v1/+/telemetry"),
            Err(TopicError::DeviceId(DeviceIdError::BadChar))
        );
        assert_eq!(
            Topic::parse("streetgate/v1//telemetry"),
            Err(TopicError::DeviceId(DeviceIdError::Empty))
        );
        assert_eq!(
            Topic::parse("streetgate/v1/_alerts/telemetry"),
            Err(TopicError::Reserved)
        );
        assert!(Topic::parse("streetgate/v1/A_1/telemetry").is_ok());
    }

    #[test]
    fn filters() {
        assert_eq!(
            Topic::filter_all(Channel::Event).as_str(),
            "streetgate/v1/+/event"
        );
    }

    proptest! {
        #[test]
        fn format_parse_inverse(id in "[A-Za-z0-9.-][A-Za-z0-9._-]{0,31}", ch in 0usize..6) {
            let t = Topic::new(DeviceId::new(&id).unwrap(), Channel::ALL[ch]);
            let text = t.format();
            prop_assert_eq!(text.as_str(), std::format!("{t}"));
            prop_assert_eq!(Topic::parse(&text).unwrap(), t);
        }

        #[test]
        fn parse_format_inverse(s in "\\PC{0,80}") {
            if let Ok(t) = Topic::parse(&s) {
                let text = t.format();
                prop_assert_eq!(text.as_str(), s.as_str());
            }
        }
    }
}
