//! Which Modbus endpoints the gateway may reach: `modbus.allowed_endpoints` (TCP) and
//! `modbus.allowed_serial` (RTU). An inventory names where its devices are, and an inventory is
//! something an API user uploads; without this a device row could make the gateway connect to
//! any address it can reach (its own loopback services, a cloud metadata address) or open any
//! file as a serial port.
//!
//! * A TCP endpoint must be an IP address (no host name: a name is resolved when connecting, so
//!   a check of the name says nothing of the address reached) inside one of the networks of
//!   `allowed_endpoints`, each `NETWORK[/PREFIX][:PORT]` (IPv6 with a port in brackets:
//!   `[fd00::/8]:502`); an entry without a port allows every port.
//! * A serial path must be absolute, without `.` or `..` components, and match one of the
//!   patterns of `allowed_serial`, where `*` stands for any characters but `/` and `?` for one.

use std::fmt;
use std::net::IpAddr;

use crate::model::Transport;

/// An IP network with an optional port: one entry of `modbus.allowed_endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EndpointRule {
    net: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

/// What an entry of `modbus.allowed_endpoints` looks like, for error messages.
pub(super) const ENDPOINT_RULE: &str = "an IP network with an optional port: `10.0.0.0/8`, \
     `192.168.1.20:502`, `10.1.0.0/16:502`, `fd00::/8` or `[fd00::/8]:502`";

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl EndpointRule {
    /// Read `NETWORK[/PREFIX][:PORT]`.
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (net, port) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: `[` without `]`"))?;
            match after {
                "" => (net, None),
                p => (
                    net,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("{s:?}: expected `:PORT` after `]`"))?,
                    ),
                ),
            }
        } else if s.matches(':').count() == 1 {
            let (net, port) = s.split_once(':').unwrap_or((s, ""));
            (net, Some(port))
        } else {
            (s, None)
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: port {p:?} must be 1..=65535"))
            })
            .transpose()?;
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (net, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length {p:?} must be 0..={max}"))?,
        };
        if mask(addr, prefix) != addr {
            return Err(format!(
                "{s:?}: {addr} has bits set past the /{prefix} prefix (the network is {}/{prefix})",
                mask(addr, prefix)
            ));
        }
        Ok(Self {
            net: addr,
            prefix,
            port,
        })
    }

    /// Whether `ip:port` is inside.
    pub(super) fn allows(&self, ip: IpAddr, port: u16) -> bool {
        // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        ip.is_ipv4() == self.net.is_ipv4()
            && mask(ip, self.prefix) == self.net
            && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for EndpointRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.net, self.port) {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}/{}]:{p}", self.prefix),
            (a, Some(p)) => write!(f, "{a}/{}:{p}", self.prefix),
            (a, None) => write!(f, "{a}/{}", self.prefix),
        }
    }
}

/// Whether `path` matches `pattern` (`*`: any characters but `/`; `?`: one character but `/`).
pub(super) fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    // Iterative matching with one back-tracking point for the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some('?') if s[si] != '/' => {
                pi += 1;
                si += 1;
            }
            Some(c) if *c != '*' && *c != '?' && *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // The star takes one more character, unless that is a `/`.
                Some((sp, ss)) if s[ss] != '/' => {
                    star = Some((sp, ss + 1));
                    pi = sp + 1;
                    si = ss + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What an entry of `modbus.allowed_serial` looks like, for error messages.
pub(super) const SERIAL_RULE: &str =
    "an absolute path pattern (`*`: any characters but `/`, `?`: one), e.g. `/dev/ttyUSB*`";

/// Check one `modbus.allowed_serial` pattern.
pub(super) fn check_serial_pattern(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{p:?} has a `.` or `..` component"));
    }
    Ok(())
}

/// The endpoints and serial ports Modbus devices may name (built from `[modbus]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModbusAccess {
    endpoints: Vec<EndpointRule>,
    serial: Vec<String>,
}

impl ModbusAccess {
    /// From the settings' lists (already checked by `ModbusConfig::validate`; an entry that does
    /// not parse is an error here too).
    pub fn new(endpoints: &[String], serial: &[String]) -> Result<Self, String> {
        let endpoints = endpoints
            .iter()
            .map(|e| EndpointRule::parse(e))
            .collect::<Result<_, _>>()?;
        for p in serial {
            check_serial_pattern(p)?;
        }
        Ok(Self {
            endpoints,
            serial: serial.to_vec(),
        })
    }

    /// Everything allowed: for tests that poll simulators on loopback or temporary paths.
    pub fn allow_all() -> Self {
        let any = |net: IpAddr| EndpointRule {
            net,
            prefix: 0,
            port: None,
        };
        Self {
            endpoints: vec![
                any(IpAddr::from([0, 0, 0, 0])),
                any(IpAddr::from([0u16; 8])),
            ],
            // `*` stops at `/`: one pattern per depth, enough for any real path.
            serial: (1..=16).map(|n| "/*".repeat(n)).collect(),
        }
    }

    /// Whether a device on `transport` may be polled; the error names the endpoint and the
    /// setting that does not allow it.
    pub fn check(&self, transport: &Transport) -> Result<(), String> {
        match transport {
            Transport::Mqtt => Ok(()),
            Transport::ModbusTcp { host, port, .. } => {
                let Ok(ip) = host.parse::<IpAddr>() else {
                    return Err(format!(
                        "Modbus endpoint {host}:{port}: a host name is not allowed, write the IP \
                         address (modbus.allowed_endpoints lists IP networks)"
                    ));
                };
                if self.endpoints.iter().any(|r| r.allows(ip, *port)) {
                    Ok(())
                } else {
                    let shown = match ip {
                        IpAddr::V6(_) => format!("[{ip}]:{port}"),
                        IpAddr::V4(_) => format!("{ip}:{port}"),
                    };
                    Err(format!(
                        "Modbus endpoint {shown} is not allowed by modbus.allowed_endpoints ({})",
                        list(&self.endpoints)
                    ))
                }
            }
            Transport::ModbusRtu { path, .. } => {
                if !path.starts_with('/') || path.split('/').any(|c| c == "." || c == "..") {
                    return Err(format!(
                        "serial port {path:?}: an absolute path without `.` or `..` components \
                         is expected"
                    ));
                }
                if self.serial.iter().any(|p| glob_match(p, path)) {
                    Ok(())
                } else {
                    Err(format!(
                        "serial port {path} is not allowed by modbus.allowed_serial ({})",
                        list(&self.serial)
                    ))
                }
            }
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "empty: none allowed".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Transport {
        Transport::ModbusTcp {
            host: host.to_owned(),
            port,
            unit: 1,
        }
    }

    fn rtu(path: &str) -> Transport {
        Transport::ModbusRtu {
            path: path.to_owned(),
            baud: 9600,
            unit: 1,
        }
    }

    #[test]
    fn rules_parse_and_match() {
        let r = EndpointRule::parse("10.0.0.0/8").unwrap();
        assert!(r.allows("10.200.1.2".parse().unwrap(), 502));
        assert!(r.allows("10.200.1.2".parse().unwrap(), 8080));
        assert!(!r.allows("11.0.0.1".parse().unwrap(), 502));
        let r = EndpointRule::parse("192.168.1.20:502").unwrap();
        assert!(r.allows("192.168.1.20".parse().unwrap(), 502));
        assert!(!r.allows("192.168.1.20".parse().unwrap(), 503));
        assert!(!r.allows("192.168.1.21".parse().unwrap(), 502));
        let r = EndpointRule::parse("[fd00::/8]:502").unwrap();
        assert!(r.allows("fd12::1".parse().unwrap(), 502));
        assert!(!r.allows("fe80::1".parse().unwrap(), 502));
        assert_eq!(r.to_string(), "[fd00::/8]:502");
        let r = EndpointRule::parse("127.0.0.1/32").unwrap();
        assert!(r.allows("::ffff:127.0.0.1".parse().unwrap(), 1));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "host:502",
            "10.0.0.0/8:0",
            "10.0.0.0/8:x",
            "[fd00::/8",
            "",
        ] {
            assert!(EndpointRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("/dev/ttyUSB*", "/dev/ttyUSB0"));
        assert!(glob_match("/dev/ttyUSB*", "/dev/ttyUSB"));
        assert!(!glob_match("/dev/ttyUSB*", "/dev/ttyUSB0/x"));
        assert!(glob_match(
            "/dev/serial/by-id/*",
            "/dev/serial/by-id/usb-FTDI_A1-if00"
        ));
        assert!(glob_match("/dev/tty?", "/dev/tty1"));
        assert!(!glob_match("/dev/tty?", "/dev/tty12"));
        assert!(glob_match("/dev/*USB*", "/dev/ttyUSB3"));
        assert!(!glob_match("/dev/ttyS*", "/etc/passwd"));
        assert!(glob_match("/*/*", "/tmp/x"));
    }

    #[test]
    fn defaults_refuse_loopback_and_files() {
        let c = crate::ingest::modbus::ModbusConfig::default();
        let a = c.access().unwrap();
        let err = a.check(&tcp("127.0.0.1", 18180)).unwrap_err();
        assert!(
            err.contains("127.0.0.1:18180") && err.contains("modbus.allowed_endpoints"),
            "{err}"
        );
        assert!(a.check(&tcp("::1", 502)).is_err());
        assert!(a.check(&tcp("::ffff:127.0.0.1", 502)).is_err());
        assert!(a.check(&tcp("169.254.169.254", 80)).is_err());
        assert!(a.check(&tcp("8.8.8.8", 502)).is_err());
        assert!(a.check(&tcp("10.0.0.7", 502)).is_ok());
        assert!(a.check(&tcp("172.16.3.4", 502)).is_ok());
        assert!(a.check(&tcp("192.168.1.20", 502)).is_ok());
        assert!(a.check(&tcp("converter.local", 502)).is_err());
        let err = a.check(&rtu("/etc/passwd")).unwrap_err();
        assert!(
            err.contains("/etc/passwd") && err.contains("modbus.allowed_serial"),
            "{err}"
        );
        assert!(a.check(&rtu("/dev/ttyUSB0/../../etc/passwd")).is_err());
        assert!(a.check(&rtu("dev/ttyUSB0")).is_err());
        assert!(a.check(&rtu("/dev/ttyUSB0")).is_ok());
        assert!(a.check(&rtu("/dev/serial/by-id/usb-FTDI-if00")).is_ok());
        assert!(a.check(&Transport::Mqtt).is_ok());
    }

    #[test]
    fn allow_all_allows_loopback_and_temporary_paths() {
        let a = ModbusAccess::allow_all();
        assert!(a.check(&tcp("127.0.0.1", 18180)).is_ok());
        assert!(a.check(&tcp("::1", 18180)).is_ok());
        assert!(a.check(&rtu("/tmp/.tmpAbc/gateway")).is_ok());
        assert!(a.check(&rtu("/tmp/../etc/passwd")).is_err());
    }
}
