//! The streetgate wire protocol: the single source of truth for what crosses the wire between
//! street devices and the gateway.
//!
//! * [`device`] — device kinds, ids and CJ/T 214 component codes;
//! * [`message`] — telemetry, events, status, config, commands and acks;
//! * [`topic`] — the MQTT topic scheme;
//! * [`codec`] — JSON and binary encodings, size limits and the decode entry points;
//! * [`validate`] — physical plausibility of every field;
//! * [`modbus`] — register maps per kind, shared by devices and the gateway's poller;
//! * [`astro`] — sunrise and sunset, so lamps and the lighting-rate rule agree on the night.
//!
//! `#![no_std]`; the `serde` feature enables (de)serialisation without an allocator, and `std`
//! adds field paths to JSON errors. See `protocols/README.md` for the protocol document.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(all(test, not(feature = "std")))]
extern crate std;

pub mod astro;
#[cfg(feature = "serde")]
pub mod codec;
pub mod device;
pub mod message;
pub mod modbus;
pub mod topic;
pub mod validate;

pub use device::{ComponentCode, DeviceId, DeviceKind};
pub use message::{
    Ack, Action, AlarmKind, AlarmState, BinTelemetry, Command, Config, Downlink, Event,
    LampSchedule, ManholeTelemetry, Status, StreetlightTelemetry, Telemetry, TelemetryData,
    ToiletTelemetry, Uplink,
};
pub use topic::{Channel, Topic};
pub use validate::{Validate, ValidationError};
