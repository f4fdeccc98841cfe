//! The two encodings and the one entry point that decodes any payload.
//!
//! * **JSON** — what a person types into `mosquitto_pub`; starts with `{` (after optional
//!   whitespace).
//! * **Binary** — for constrained radios: the byte [`BINARY_MAGIC`] followed by the
//!   [postcard](https://docs.rs/postcard) encoding of the same struct. Postcard was chosen over
//!   CBOR because it is serde-native (one set of derives serves both encodings), has a frozen
//!   1.0 wire format, needs no allocator and is about half the size of CBOR for these messages
//!   (field names are not sent). The magic byte is not valid as the first byte of JSON text,
//!   so a receiver tells the two apart from the first byte alone.
//!
//! Decoding checks, in order: size limit, encoding, syntax and types (naming the field), physical
//! plausibility ([`Validate`]), and that the device id in the payload matches the topic.

// Errors carry their text inline (no allocator), so they are larger than clippy's default.
#![allow(clippy::result_large_err)]

use core::fmt::{self, Write};

use serde::{Serialize, de::DeserializeOwned};

use crate::device::DeviceId;
use crate::message::{Ack, Command, Config, Downlink, Event, Status, Telemetry, Uplink};
use crate::topic::{Channel, Topic};
use crate::validate::{Validate, ValidationError};

/// First byte of every binary-encoded payload ("SG" binary, version 1).
pub const BINARY_MAGIC: u8 = 0xB1;

/// Default largest accepted payload, bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 4096;

/// Largest payload a device ever sends in this protocol (the firmware buffers are this big).
pub const MAX_ENCODED_LEN: usize = 512;

/// Decoding limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Payloads longer than this are refused before parsing.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// UTF-8 JSON text.
    Json,
    /// [`BINARY_MAGIC`] + postcard.
    Binary,
}

impl Encoding {
    /// Name used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Binary => "binary",
        }
    }
}

/// Detail text of a decode error (truncated when longer).
pub type Detail = heapless::String<128>;

/// Why a payload was refused. Every variant says what to fix.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Zero-length payload.
    Empty,
    /// Larger than the configured limit.
    TooLarge {
        /// Payload size.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Neither JSON nor the binary magic.
    UnknownEncoding {
        /// The first byte seen.
        first_byte: u8,
    },
    /// A downlink channel received on the uplink path, or the reverse.
    WrongDirection(Channel),
    /// Malformed: syntax, unknown field or variant, wrong type, missing field.
    Malformed {
        /// Which encoding was being parsed.
        encoding: Encoding,
        /// Dotted path of the offending field (`data.streetlight.dim_pct`), or `.` for the root.
        field: heapless::String<64>,
        /// What the parser said.
        detail: Detail,
    },
    /// Well-formed but physically impossible.
    Invalid(ValidationError),
    /// The payload names another device than the topic.
    DeviceMismatch {
        /// Device in the topic.
        topic: DeviceId,
        /// Device in the payload.
        payload: DeviceId,
    },
}

impl DecodeError {
    /// Short stable label for metrics (`rejected_total{reason="..."}`).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownEncoding { .. } => "unknown_encoding",
            Self::WrongDirection(_) => "wrong_direction",
            Self::Malformed { .. } => "malformed",
            Self::Invalid(_) => "invalid_value",
            Self::DeviceMismatch { .. } => "device_mismatch",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty payload"),
            Self::TooLarge { len, limit } => {
                write!(f, "payload of {len} bytes exceeds the {limit}-byte limit")
            }
            Self::UnknownEncoding { first_byte } => write!(
                f,
                "unknown encoding: first byte 0x{first_byte:02x} is neither '{{' (JSON) nor 0x{BINARY_MAGIC:02x} (binary)"
            ),
            Self::WrongDirection(ch) => write!(f, "channel {ch} is not accepted in this direction"),
            Self::Malformed {
                encoding,
                field,
                detail,
            } => {
                write!(f, "malformed {} at {field}: {detail}", encoding.as_str())
            }
            Self::Invalid(e) => write!(f, "invalid value: {e}"),
            Self::DeviceMismatch { topic, payload } => write!(
                f,
                "device_id {payload} in the payload differs from {topic} in the topic"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

impl From<ValidationError> for DecodeError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferFull,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small for the encoded message")
    }
}

impl core::error::Error for EncodeError {}

/// Tell the encoding from the first meaningful byte.
pub fn detect(payload: &[u8], limits: &Limits) -> Result<Encoding, DecodeError> {
    if payload.len() > limits.max_payload {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            limit: limits.max_payload,
        });
    }
    let first = payload
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .ok_or(DecodeError::Empty)?;
    match first {
        b'{' => Ok(Encoding::Json),
        _ if payload.first() == Some(&BINARY_MAGIC) => Ok(Encoding::Binary),
        other => Err(DecodeError::UnknownEncoding { first_byte: other }),
    }
}

fn truncated<const N: usize>(args: fmt::Arguments<'_>) -> heapless::String<N> {
    struct Trunc<'a, const N: usize>(&'a mut heapless::String<N>);
    impl<const N: usize> Write for Trunc<'_, N> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                if self.0.push(c).is_err() {
                    break;
                }
            }
            Ok(())
        }
    }
    let mut out = heapless::String::new();
    let _ = Trunc(&mut out).write_fmt(args);
    out
}

fn malformed(encoding: Encoding, field: &str, detail: fmt::Arguments<'_>) -> DecodeError {
    DecodeError::Malformed {
        encoding,
        field: truncated(format_args!("{field}")),
        detail: truncated(detail),
    }
}

/// Decode one message of a known type from either encoding, then validate it.
pub fn decode<T>(payload: &[u8], limits: &Limits) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Validate,
{
    let msg: T = match detect(payload, limits)? {
        Encoding::Json => decode_json(payload)?,
        Encoding::Binary => decode_binary(&payload[1..])?,
    };
    msg.validate()?;
    Ok(msg)
}

#[cfg(feature = "std")]
fn decode_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        malformed(Encoding::Json, &path, format_args!("{inner}"))
    })?;
    de.end()
        .map_err(|e| malformed(Encoding::Json, ".", format_args!("{e}")))?;
    Ok(value)
}

#[cfg(not(feature = "std"))]
fn decode_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    // Strings (firmware versions, ack reasons) are unescaped through a scratch buffer.
    let mut scratch = [0u8; 128];
    match serde_json_core::from_slice_escaped::<T>(payload, &mut scratch) {
        Ok((value, used)) => {
            if payload[used..].iter().all(u8::is_ascii_whitespace) {
                Ok(value)
            } else {
                Err(malformed(
                    Encoding::Json,
                    ".",
                    format_args!("trailing characters"),
                ))
            }
        }
        Err(e) => Err(malformed(Encoding::Json, ".", format_args!("{e}"))),
    }
}

fn decode_binary<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(malformed(
            Encoding::Binary,
            ".",
            format_args!("{} trailing bytes", rest.len()),
        )),
        Err(e) => Err(malformed(Encoding::Binary, ".", format_args!("{e}"))),
    }
}

/// Decode an uplink payload received on `topic`: the channel picks the message type and the
/// device id in the payload must match the topic.
pub fn decode_uplink(
    topic: &Topic,
    payload: &[u8],
    limits: &Limits,
) -> Result<Uplink, DecodeError> {
    let msg = match topic.channel {
        Channel::Telemetry => Uplink::Telemetry(decode::<Telemetry>(payload, limits)?),
        Channel::Event => Uplink::Event(decode::<Event>(payload, limits)?),
        Channel::Status => Uplink::Status(decode::<Status>(payload, limits)?),
        Channel::Ack => Uplink::Ack(decode::<Ack>(payload, limits)?),
        ch @ (Channel::Config | Channel::Command) => return Err(DecodeError::WrongDirection(ch)),
    };
    if msg.device_id() != &topic.device_id {
        return Err(DecodeError::DeviceMismatch {
            topic: topic.device_id.clone(),
            payload: msg.device_id().clone(),
        });
    }
    Ok(msg)
}

/// Decode a downlink payload received on a `config` or `command` channel.
pub fn decode_downlink(
    channel: Channel,
    payload: &[u8],
    limits: &Limits,
) -> Result<Downlink, DecodeError> {
    match channel {
        Channel::Config => Ok(Downlink::Config(decode::<Config>(payload, limits)?)),
        Channel::Command => Ok(Downlink::Command(decode::<Command>(payload, limits)?)),
        ch => Err(DecodeError::WrongDirection(ch)),
    }
}

/// Encode as JSON into `buf`, returning the length used.
pub fn encode_json<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    serde_json_core::to_slice(msg, buf).map_err(|_| EncodeError::BufferFull)
}

/// Encode in the binary encoding (magic byte + postcard) into `buf`, returning the length used.
pub fn encode_binary<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let (first, rest) = buf.split_first_mut().ok_or(EncodeError::BufferFull)?;
    *first = BINARY_MAGIC;
    let used = postcard::to_slice(msg, rest)
        .map_err(|_| EncodeError::BufferFull)?
        .len();
    Ok(used + 1)
}

/// Encode in the given encoding.
pub fn encode<T: Serialize>(
    msg: &T,
    encoding: Encoding,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    match encoding {
        Encoding::Json => encode_json(msg, buf),
        Encoding::Binary => encode_binary(msg, buf),
    }
}

/// Encode an uplink message.
pub fn encode_uplink(
    msg: &Uplink,
    encoding: Encoding,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    match msg {
        Uplink::Telemetry(m) => encode(m, encoding, buf),
        Uplink::Event(m) => encode(m, encoding, buf),
        Uplink::Status(m) => encode(m, encoding, buf),
        Uplink::Ack(m) => encode(m, encoding, buf),
    }
}

/// The channel an uplink message is published on.
pub fn uplink_channel(msg: &Uplink) -> Channel {
    match msg {
        Uplink::Telemetry(_) => Channel::Telemetry,
        Uplink::Event(_) => Channel::Event,
        Uplink::Status(_) => Channel::Status,
        Uplink::Ack(_) => Channel::Ack,
    }
}
