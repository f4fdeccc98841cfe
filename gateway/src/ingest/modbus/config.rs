//! `[modbus]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ModbusSettings;
use super::access::{ENDPOINT_RULE, EndpointRule, ModbusAccess, SERIAL_RULE, check_serial_pattern};
use crate::settings::{Checked, invalid};

/// Networks a Modbus TCP device may be on by default: the private ranges (RFC 1918) and IPv6
/// unique local addresses, on any port. Not loopback, link-local (cloud metadata services sit
/// there) or public addresses.
pub const DEFAULT_ALLOWED_ENDPOINTS: [&str; 4] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// Serial ports a Modbus RTU device may be on by default: the usual device names of USB, ACM,
/// on-board and SoC UARTs, and the stable udev links.
pub const DEFAULT_ALLOWED_SERIAL: [&str; 7] = [
    "/dev/ttyUSB*",
    "/dev/ttyACM*",
    "/dev/ttyS*",
    "/dev/ttyAMA*",
    "/dev/ttymxc*",
    "/dev/serial/by-id/*",
    "/dev/serial/by-path/*",
];

/// `[modbus]`: polling of Modbus TCP/RTU devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Interval between two polls of one unit, ms.
    pub poll_interval_ms: u64,
    /// Timeout of one request (and of connecting), ms.
    pub request_timeout_ms: u64,
    /// Consecutive failures before a unit is reported offline.
    pub offline_after: u32,
    /// Longest back-off of a failing unit or endpoint, ms.
    pub max_backoff_ms: u64,
    /// Where Modbus TCP devices may be: IP networks with an optional port (`10.0.0.0/8`,
    /// `192.168.1.20:502`, `[fd00::/8]:502`). A device elsewhere, or named by a host name, is
    /// refused at import and not polled.
    pub allowed_endpoints: Vec<String>,
    /// Serial ports Modbus RTU devices may be on: absolute path patterns (`*`: any characters
    /// but `/`, `?`: one). A device on another path is refused at import and not polled.
    pub allowed_serial: Vec<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for ModbusConfig {
    fn default() -> Self {
        let d = ModbusSettings::default();
        Self {
            poll_interval_ms: ms(d.poll_interval),
            request_timeout_ms: ms(d.request_timeout),
            offline_after: d.offline_after,
            max_backoff_ms: ms(d.max_backoff),
            allowed_endpoints: DEFAULT_ALLOWED_ENDPOINTS.map(str::to_owned).to_vec(),
            allowed_serial: DEFAULT_ALLOWED_SERIAL.map(str::to_owned).to_vec(),
        }
    }
}

impl ModbusConfig {
    /// The poller's settings.
    pub fn settings(&self) -> ModbusSettings {
        ModbusSettings {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            offline_after: self.offline_after,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            clock: crate::clock::Clock::WALL,
            // Checked by `validate`; a list that does not parse allows nothing.
            access: std::sync::Arc::new(self.access().unwrap_or_default()),
        }
    }

    /// The allow-lists.
    pub fn access(&self) -> Result<ModbusAccess, String> {
        ModbusAccess::new(&self.allowed_endpoints, &self.allowed_serial)
    }

    /// Check the section.
    pub fn validate(&self) -> Checked {
        let m = self;
        if m.poll_interval_ms < 100 {
            return Err(invalid(
                "modbus.poll_interval_ms",
                m.poll_interval_ms,
                "at least 100 ms",
            ));
        }
        if !(10..=60_000).contains(&m.request_timeout_ms) {
            return Err(invalid(
                "modbus.request_timeout_ms",
                m.request_timeout_ms,
                "10..=60000 ms",
            ));
        }
        if m.offline_after == 0 {
            return Err(invalid("modbus.offline_after", 0, "at least 1"));
        }
        if m.max_backoff_ms < m.request_timeout_ms {
            return Err(invalid(
                "modbus.max_backoff_ms",
                m.max_backoff_ms,
                format!(
                    "at least modbus.request_timeout_ms ({})",
                    m.request_timeout_ms
                ),
            ));
        }
        for e in &m.allowed_endpoints {
            if let Err(why) = EndpointRule::parse(e) {
                return Err(invalid("modbus.allowed_endpoints", why, ENDPOINT_RULE));
            }
        }
        for p in &m.allowed_serial {
            if let Err(why) = check_serial_pattern(p) {
                return Err(invalid("modbus.allowed_serial", why, SERIAL_RULE));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_are_checked() {
        let mut c = ModbusConfig::default();
        assert!(c.validate().is_ok());
        c.allowed_endpoints = vec!["10.0.0.0/8".into(), "converter:502".into()];
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "modbus.allowed_endpoints");
        assert!(e.value.contains("converter"), "{e}");
        c.allowed_endpoints = vec![];
        c.allowed_serial = vec!["ttyUSB*".into()];
        assert_eq!(c.validate().unwrap_err().key, "modbus.allowed_serial");
        c.allowed_serial = vec![];
        assert!(c.validate().is_ok(), "empty lists: no Modbus device at all");
    }

    #[test]
    fn toml_sets_the_lists() {
        let c: ModbusConfig = toml::from_str(
            "allowed_endpoints = [\"127.0.0.1/32\"]\nallowed_serial = [\"/dev/pts/*\"]\n",
        )
        .unwrap();
        assert_eq!(c.allowed_endpoints, ["127.0.0.1/32"]);
        let a = c.access().unwrap();
        assert!(
            a.check(&crate::model::Transport::ModbusTcp {
                host: "127.0.0.1".into(),
                port: 1502,
                unit: 1
            })
            .is_ok()
        );
    }
}
