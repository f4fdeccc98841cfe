//! What a board provides to the applications: time, a link and persistent storage.

use streetgate_protocols::Channel;

/// The time an application is ticked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds since boot.
    pub mono_ms: u64,
    /// Wall clock, Unix milliseconds, when the board has one (RTC, NTP, GNSS).
    pub unix_ms: Option<u64>,
}

/// The board's time sources: a monotonic timer and, when there is one, a wall clock (RTC,
/// NTP over the modem, GNSS).
pub trait Clock {
    /// The time now.
    fn now(&self) -> Now;
}

/// The link is down; the message stays queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkDown;

/// The uplink/downlink transport (MQTT over a modem, LoRa, RS-485...).
pub trait Transport {
    /// Send one encoded message on a channel; never blocks.
    fn send(&mut self, channel: Channel, payload: &[u8]) -> Result<(), LinkDown>;
    /// A received downlink message, copied into `buf`: its channel and length.
    fn poll_downlink(&mut self, buf: &mut [u8]) -> Option<(Channel, usize)>;
    /// `true` once after each (re)connection to the broker (MQTT: each CONNACK), so the
    /// application publishes its birth status again, as the protocol asks. Links without
    /// sessions (Modbus) keep the default.
    fn take_connected(&mut self) -> bool {
        false
    }
}

/// Non-volatile storage for settings and calibration (flash page, EEPROM, FRAM).
pub trait SettingsStore {
    /// Copy the stored bytes into `buf`; `None` when nothing valid is stored.
    fn load(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Store bytes; `false` on a write failure.
    fn save(&mut self, bytes: &[u8]) -> bool;
}

/// A store that keeps nothing (boards without storage; tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl SettingsStore for NoStore {
    fn load(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn save(&mut self, _bytes: &[u8]) -> bool {
        true
    }
}
