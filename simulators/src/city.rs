//! A city laid out around a centre: road segments of streetlights, manhole covers along the
//! roads, bins at intervals and a few public toilets, in unit grids, in the proportions of
//! docs/domain.md's city scale (per million inhabitants: 50–80 k lamps, 30–50 k drainage covers,
//! 10–20 k bins, ~400 toilets).
//!
//! The output is the inventory CSV the gateway imports
//! (`id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides`).
//!
//! Devices report over MQTT unless [`CityConfig::modbus_tcp_fraction`] wires some of the
//! mains-powered ones (lamps, toilets) to RS-485 lines of up to [`UNITS_PER_LINE`] units, each
//! line behind its own Modbus TCP converter ([`crate::modbus::Converters`]), or
//! [`CityConfig::modbus_rtu_fraction`] to RS-485 lines the gateway reads over Modbus RTU on a
//! serial port (a pseudo-terminal pair in simulation). A converter's port and a line's serial
//! device are known once they exist, so the CSV of such a city is written with them
//! ([`City::to_csv_with`]).

use std::fmt::Write as _;
use std::net::SocketAddr;

use streetgate_protocols::DeviceKind;

use crate::physics::Noise;

/// City layout parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CityConfig {
    /// Centre latitude, °N.
    pub centre_lat: f64,
    /// Centre longitude, °E.
    pub centre_lon: f64,
    /// Devices in total (split by the city-scale proportions).
    pub devices: usize,
    /// Lamps per road segment.
    pub lamps_per_segment: usize,
    /// Noise seed: the same seed lays out the same city.
    pub seed: u64,
    /// County code (GB/T 2260) for component codes and grid codes.
    pub county: String,
    /// Fraction (0–1) of the mains-powered devices (lamps and toilets) wired to RS-485 lines
    /// behind Modbus TCP converters instead of reporting over MQTT, spread evenly through the
    /// city; battery-powered covers and bins are cellular (MQTT) devices and stay so.
    pub modbus_tcp_fraction: f64,
    /// Fraction (0–1) of the mains-powered devices on RS-485 lines the gateway reads over Modbus
    /// RTU on a serial port (with `modbus_tcp_fraction`, at most 1 in all).
    pub modbus_rtu_fraction: f64,
}

impl Default for CityConfig {
    fn default() -> Self {
        // Hebi, Henan (the Hebi plan, docs/domain.md).
        Self {
            centre_lat: 35.7476,
            centre_lon: 114.2975,
            devices: 2000,
            lamps_per_segment: 24,
            seed: 1,
            county: "410602".into(),
            modbus_tcp_fraction: 0.0,
            modbus_rtu_fraction: 0.0,
        }
    }
}

/// Shares of the fleet by kind, from the city-scale figures (65 : 40 : 15 : 0.4).
pub const SHARES: [(DeviceKind, f64); 4] = [
    (DeviceKind::Streetlight, 65.0),
    (DeviceKind::Manhole, 40.0),
    (DeviceKind::Bin, 15.0),
    (DeviceKind::Toilet, 0.4),
];

/// Units on one RS-485 line (the standard's 32 unit loads), so behind one converter port.
pub const UNITS_PER_LINE: u8 = 32;

/// How a placed device reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// Its own MQTT connection.
    Mqtt,
    /// Unit `unit` (1..=32) on RS-485 line `line` (0, 1, …), behind that line's Modbus TCP
    /// converter.
    ModbusTcp {
        /// Line (converter) index.
        line: usize,
        /// Modbus unit id on the line.
        unit: u8,
    },
    /// Unit `unit` (1..=32) on RS-485 line `line` (0, 1, …, numbered apart from the TCP lines)
    /// read by the gateway over Modbus RTU on a serial port.
    ModbusRtu {
        /// Serial line index.
        line: usize,
        /// Modbus unit id on the line.
        unit: u8,
    },
}

/// Baud rate of the simulated RTU lines (the inventory names it; a pseudo-terminal ignores it).
pub const RTU_BAUD: u32 = 9600;

/// A device on a Modbus line whose converter has no address (not bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnboundLine {
    /// The device.
    pub device: String,
    /// Its line.
    pub line: usize,
}

impl std::fmt::Display for UnboundLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is on Modbus line {}, which has no bound converter address",
            self.device, self.line
        )
    }
}

impl std::error::Error for UnboundLine {}

/// One placed device.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// Device id.
    pub id: String,
    /// Kind.
    pub kind: DeviceKind,
    /// 16-digit component code.
    pub component_code: String,
    /// Position.
    pub lat: f64,
    /// Position.
    pub lon: f64,
    /// 15-digit unit-grid code.
    pub grid: String,
    /// Road segment (lamps).
    pub road_segment: Option<String>,
    /// `main`, `secondary` or `back` (lamps).
    pub road_class: Option<&'static str>,
    /// Toilet class 1..=3.
    pub toilet_class: Option<u8>,
    /// Bin depth, mm.
    pub bin_depth_mm: Option<u16>,
    /// How it reports.
    pub wiring: Wiring,
}

/// A generated city.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    /// Every device.
    pub devices: Vec<Placed>,
}

/// Metres to degrees at a latitude.
fn offset(lat: f64, lon: f64, east_m: f64, north_m: f64) -> (f64, f64) {
    let dlat = north_m / 111_320.0;
    let dlon = east_m / (111_320.0 * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

impl City {
    /// Lay out a city.
    pub fn generate(cfg: &CityConfig) -> Self {
        let total_share: f64 = SHARES.iter().map(|(_, s)| s).sum();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let count = |share: f64| {
            ((cfg.devices as f64) * share / total_share)
                .round()
                .max(1.0) as usize
        };
        let (lamps, covers, bins, toilets) = (
            count(SHARES[0].1),
            count(SHARES[1].1),
            count(SHARES[2].1),
            count(SHARES[3].1),
        );
        let mut noise = Noise::new(cfg.seed);
        let segments = lamps.div_ceil(cfg.lamps_per_segment.max(1));
        // Segments run east–west, 120 m apart north–south, in rows of four 30 m-spaced runs.
        let spacing = 30.0;
        let seg_len = spacing * cfg.lamps_per_segment as f64;
        let mut devices = Vec::new();
        let grid_of = |east: f64, north: f64| {
            // 1 ha unit grids: 100 m cells, numbered from the south-west corner.
            #[allow(clippy::cast_possible_truncation)]
            let (gx, gy) = (
                (east / 100.0).floor() as i64 + 500,
                (north / 100.0).floor() as i64 + 500,
            );
            let street = (gy.rem_euclid(1000) / 100) + 1;
            let community = (gx.rem_euclid(1000) / 100) + 1;
            let serial = (gy.rem_euclid(100) / 10) * 10 + gx.rem_euclid(10) + 1;
            format!("{}{street:03}{community:03}{serial:03}", cfg.county)
        };
        let mut serials = [0u32; 4];
        let code = |kind: DeviceKind, serials: &mut [u32; 4]| {
            let (i, class) = match kind {
                DeviceKind::Streetlight => (0, "0118"),
                DeviceKind::Manhole => (1, "0103"),
                DeviceKind::Bin => (2, "0305"),
                DeviceKind::Toilet => (3, "0301"),
            };
            serials[i] += 1;
            format!("{}{class}{:06}", cfg.county, serials[i])
        };
        #[allow(clippy::cast_precision_loss)]
        let row_origin = |s: usize| {
            (
                -(seg_len * 2.0) + (s % 4) as f64 * seg_len,
                -((segments / 4) as f64 * 60.0) + (s / 4) as f64 * 120.0,
            )
        };
        let mut lamp_no = 0;
        for s in 0..segments {
            let (x0, y0) = row_origin(s);
            let class = match s % 10 {
                0..=2 => "main",
                3..=5 => "secondary",
                _ => "back",
            };
            let segment = format!("SEG-{:04}", s + 1);
            for k in 0..cfg.lamps_per_segment {
                if lamp_no == lamps {
                    break;
                }
                lamp_no += 1;
                #[allow(clippy::cast_precision_loss)]
                let (east, north) = (
                    x0 + k as f64 * spacing + noise.symmetric(1.0),
                    y0 + noise.symmetric(1.0),
                );
                let (lat, lon) = offset(cfg.centre_lat, cfg.centre_lon, east, north);
                devices.push(Placed {
                    id: format!("SL-{lamp_no:06}"),
                    kind: DeviceKind::Streetlight,
                    component_code: code(DeviceKind::Streetlight, &mut serials),
                    lat,
                    lon,
                    grid: grid_of(east, north),
                    road_segment: Some(segment.clone()),
                    road_class: Some(class),
                    toilet_class: None,
                    bin_depth_mm: None,
                    wiring: Wiring::Mqtt,
                });
            }
        }
        // Covers, bins and toilets along the same roads, offset to the kerb.
        let mut place =
            |kind: DeviceKind, n: usize, prefix: &str, kerb_m: f64, devices: &mut Vec<Placed>| {
                for i in 0..n {
                    let s = (i * 7) % segments.max(1);
                    let (x0, y0) = row_origin(s);
                    let east = x0 + noise.unit() * seg_len;
                    let north = y0 + kerb_m;
                    let (lat, lon) = offset(cfg.centre_lat, cfg.centre_lon, east, north);
                    devices.push(Placed {
                        id: format!("{prefix}-{:06}", i + 1),
                        kind,
                        component_code: code(kind, &mut serials),
                        lat,
                        lon,
                        grid: grid_of(east, north),
                        road_segment: None,
                        road_class: None,
                        #[allow(clippy::cast_possible_truncation)]
                        toilet_class: (kind == DeviceKind::Toilet).then_some((i % 3) as u8 + 1),
                        bin_depth_mm: (kind == DeviceKind::Bin).then_some(900),
                        wiring: Wiring::Mqtt,
                    });
                }
            };
        place(DeviceKind::Manhole, covers, "MH", 4.0, &mut devices);
        place(DeviceKind::Bin, bins, "BN", 8.0, &mut devices);
        place(DeviceKind::Toilet, toilets, "WC", 20.0, &mut devices);
        wire(
            &mut devices,
            cfg.modbus_tcp_fraction,
            cfg.modbus_rtu_fraction,
        );
        Self { devices }
    }

    /// Modbus TCP lines (converters) the city needs.
    pub fn modbus_lines(&self) -> usize {
        self.devices
            .iter()
            .filter_map(|d| match d.wiring {
                Wiring::ModbusTcp { line, .. } => Some(line + 1),
                Wiring::Mqtt | Wiring::ModbusRtu { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Modbus RTU (serial) lines the city needs.
    pub fn rtu_lines(&self) -> usize {
        self.devices
            .iter()
            .filter_map(|d| match d.wiring {
                Wiring::ModbusRtu { line, .. } => Some(line + 1),
                Wiring::Mqtt | Wiring::ModbusTcp { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The inventory CSV the gateway imports, for a city whose devices all report over MQTT
    /// (the default). A device on a Modbus line is written with port 0, which the gateway
    /// refuses (naming the line and field): such a city needs its converters' addresses,
    /// [`City::to_csv_with`].
    pub fn to_csv(&self) -> String {
        self.csv(&[], &[])
    }

    /// The inventory CSV the gateway imports, devices on Modbus TCP line `n` reached through
    /// the converter at `converters[n]` (`modbus-tcp host:port unit`), devices on RTU line `n`
    /// through the serial port `serial[n]` (`modbus-rtu PATH 9600 unit`).
    pub fn to_csv_with(
        &self,
        converters: &[SocketAddr],
        serial: &[String],
    ) -> Result<String, UnboundLine> {
        if let Some((d, line)) = self.devices.iter().find_map(|d| match d.wiring {
            Wiring::ModbusTcp { line, .. } if line >= converters.len() => Some((d, line)),
            Wiring::ModbusRtu { line, .. } if line >= serial.len() => Some((d, line)),
            _ => None,
        }) {
            return Err(UnboundLine {
                device: d.id.clone(),
                line,
            });
        }
        Ok(self.csv(converters, serial))
    }

    fn csv(&self, converters: &[SocketAddr], serial: &[String]) -> String {
        let mut out = String::from(
            "id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides\n",
        );
        for d in &self.devices {
            let transport = match d.wiring {
                Wiring::Mqtt => "mqtt".to_owned(),
                Wiring::ModbusTcp { line, unit } => {
                    let addr = converters
                        .get(line)
                        .copied()
                        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                    format!("modbus-tcp {addr} {unit}")
                }
                Wiring::ModbusRtu { line, unit } => {
                    let path = serial.get(line).map_or("/dev/null", String::as_str);
                    format!("modbus-rtu {path} {RTU_BAUD} {unit}")
                }
            };
            let _ = writeln!(
                out,
                "{},{},{},{:.6},{:.6},{},{},{},{},{},{transport},",
                d.id,
                d.kind,
                d.component_code,
                d.lat,
                d.lon,
                d.grid,
                d.road_segment.as_deref().unwrap_or(""),
                d.road_class.unwrap_or(""),
                d.toilet_class.map(|c| c.to_string()).unwrap_or_default(),
                d.bin_depth_mm.map(|c| c.to_string()).unwrap_or_default(),
            );
        }
        out
    }

    /// Devices of a kind.
    pub fn count(&self, kind: DeviceKind) -> usize {
        self.devices.iter().filter(|d| d.kind == kind).count()
    }
}

/// Wire `tcp` + `rtu` (at most 1 in all) of the mains-powered devices to Modbus lines, spread
/// evenly (the j-th eligible device is wired when ⌊(j+1)·f⌋ > ⌊j·f⌋, f = tcp + rtu, and the
/// k-th wired one goes to an RTU line by the same rule with rtu / f), numbering units 1..=32 per
/// line in city order, TCP and RTU lines apart.
fn wire(devices: &mut [Placed], tcp: f64, rtu: f64) {
    let clean = |f: f64| {
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let (tcp, rtu) = (clean(tcp), clean(rtu));
    let f = (tcp + rtu).min(1.0);
    if f == 0.0 {
        return;
    }
    let r = rtu / (tcp + rtu);
    let picked = |j: usize, f: f64| {
        #[allow(clippy::cast_precision_loss)]
        let (before, after) = ((j as f64 * f).floor(), ((j + 1) as f64 * f).floor());
        after > before
    };
    // (line, unit) of the last wired unit, for TCP and RTU lines.
    let mut next = [(0usize, 0u8); 2];
    let mains = devices
        .iter_mut()
        .filter(|d| matches!(d.kind, DeviceKind::Streetlight | DeviceKind::Toilet));
    let mut k = 0;
    for (j, d) in mains.enumerate() {
        if !picked(j, f) {
            continue;
        }
        let on_rtu = picked(k, r);
        k += 1;
        let (line, unit) = &mut next[usize::from(on_rtu)];
        if *unit == UNITS_PER_LINE {
            *line += 1;
            *unit = 0;
        }
        *unit += 1;
        d.wiring = if on_rtu {
            Wiring::ModbusRtu {
                line: *line,
                unit: *unit,
            }
        } else {
            Wiring::ModbusTcp {
                line: *line,
                unit: *unit,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streetgate_protocols::{ComponentCode, DeviceId};

    #[test]
    fn proportions_ids_and_codes() {
        let city = City::generate(&CityConfig::default());
        assert_eq!(city.count(DeviceKind::Streetlight), 1080);
        assert_eq!(city.count(DeviceKind::Manhole), 664);
        assert_eq!(city.count(DeviceKind::Bin), 249);
        assert_eq!(city.count(DeviceKind::Toilet), 7);
        for d in &city.devices {
            assert!(DeviceId::new(&d.id).is_ok(), "{}", d.id);
            let code = ComponentCode::new(&d.component_code).unwrap();
            assert_eq!(code.default_kind(), Some(d.kind));
            assert_eq!(d.grid.len(), 15, "{}", d.grid);
            assert!((d.lat - 35.7476).abs() < 0.05 && (d.lon - 114.2975).abs() < 0.05);
        }
        let ids: std::collections::HashSet<&str> =
            city.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), city.devices.len());
        assert_eq!(
            city,
            City::generate(&CityConfig::default()),
            "same seed, same city"
        );
        let csv = city.to_csv();
        assert_eq!(csv.lines().count(), city.devices.len() + 1);
    }
}
