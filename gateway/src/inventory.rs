//! The device inventory: CSV import and the read-mostly in-memory map the ingest hot path uses.
//!
//! CSV columns (header required, any order; optional columns may be absent or empty):
//! `id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides`
//!
//! * `transport`: `mqtt` (default when empty), `modbus-tcp host:port unit`,
//!   `modbus-rtu /dev/ttyX baud unit`;
//! * `overrides`: `key=value;key=value` with the keys of [`ThresholdOverrides`].
//!
//! A file is imported whole or not at all: every problem is reported with its line and column
//! name, and nothing is stored while any remains.

mod config;
pub mod credentials;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use streetgate_protocols::{ComponentCode, DeviceId, DeviceKind};

use crate::model::{Device, RoadClass, ThresholdOverrides, ToiletClass, Transport};

pub use config::InventoryConfig;

/// Columns of the inventory CSV, in the documented order.
pub const COLUMNS: [&str; 12] = [
    "id",
    "kind",
    "component_code",
    "lat",
    "lon",
    "grid",
    "road_segment",
    "road_class",
    "toilet_class",
    "bin_depth_mm",
    "transport",
    "overrides",
];

const REQUIRED: [&str; 5] = ["id", "kind", "lat", "lon", "grid"];

/// Most problems reported for one file.
pub const MAX_ISSUES: usize = 100;

/// One problem in an imported file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportIssue {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// Column name, or `-` for the whole row/file.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for ImportIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, {}: {}", self.line, self.field, self.message)
    }
}

/// Why an inventory file was refused (nothing was imported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("inventory refused, nothing imported: {}{}", .issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), if *.truncated { "; (more problems not shown)" } else { "" })]
pub struct ImportError {
    /// The problems, in file order (at most [`MAX_ISSUES`]).
    pub issues: Vec<ImportIssue>,
    /// More problems were found than are listed.
    pub truncated: bool,
}

/// Parse a transport cell.
pub fn parse_transport(s: &str) -> Result<Transport, String> {
    const ALLOWED: &str =
        "expected `mqtt`, `modbus-tcp host:port unit` or `modbus-rtu /dev/ttyX baud unit`";
    let parts: Vec<&str> = s.split_whitespace().collect();
    let unit = |u: &str| -> Result<u8, String> {
        u.parse::<u8>()
            .ok()
            .filter(|u| (1..=247).contains(u))
            .ok_or_else(|| format!("unit id {u:?} must be 1..=247"))
    };
    match parts.as_slice() {
        [] | ["mqtt"] => Ok(Transport::Mqtt),
        ["modbus-tcp", hostport, u] => {
            let (host, port) = hostport
                .rsplit_once(':')
                .ok_or_else(|| format!("{hostport:?} must be host:port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{hostport:?} has an empty host"));
            }
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {port:?} must be 1..=65535"))?;
            Ok(Transport::ModbusTcp {
                host: host.to_owned(),
                port,
                unit: unit(u)?,
            })
        }
        ["modbus-rtu", path, baud, u] => {
            let baud = baud
                .parse::<u32>()
                .ok()
                .filter(|b| (300..=4_000_000).contains(b))
                .ok_or_else(|| format!("baud rate {baud:?} must be 300..=4000000"))?;
            Ok(Transport::ModbusRtu {
                path: (*path).to_owned(),
                baud,
                unit: unit(u)?,
            })
        }
        _ => Err(format!("{s:?}: {ALLOWED}")),
    }
}

/// Format a transport the way [`parse_transport`] reads it.
pub fn format_transport(t: &Transport) -> String {
    match t {
        Transport::Mqtt => "mqtt".to_owned(),
        Transport::ModbusTcp { host, port, unit } if host.contains(':') => {
            format!("modbus-tcp [{host}]:{port} {unit}")
        }
        Transport::ModbusTcp { host, port, unit } => format!("modbus-tcp {host}:{port} {unit}"),
        Transport::ModbusRtu { path, baud, unit } => format!("modbus-rtu {path} {baud} {unit}"),
    }
}

/// Parse an overrides cell: `key=value;key=value`.
pub fn parse_overrides(s: &str) -> Result<ThresholdOverrides, String> {
    let mut map = serde_json::Map::new();
    for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} must be key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        let number = if let Ok(i) = v.parse::<i64>() {
            serde_json::Value::from(i)
        } else {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("{k}: {v:?} is not a number"))?
        };
        if map.insert(k.to_owned(), number).is_some() {
            return Err(format!("{k} given twice"));
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

/// Format overrides the way [`parse_overrides`] reads them.
pub fn format_overrides(o: &ThresholdOverrides) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(o) else {
        return String::new();
    };
    map.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// What a grid or road-segment code may be.
pub const CODE_RULE: &str = "1 to 64 characters, letters, digits, '-', '_' or '.'";

/// Whether `s` is a grid or road-segment code: it becomes an MQTT topic level (the alerts
/// topic `streetgate/v1/_alerts/{grid}/{case_type}`) and a URL path segment, so wildcards,
/// slashes, spaces and control characters are refused where it enters.
pub fn is_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Check what serde cannot: coordinates, ranges, codes and the kind-specific fields.
pub fn validate_device(d: &Device) -> Result<(), (&'static str, String)> {
    if d.id
        .as_str()
        .starts_with(streetgate_protocols::topic::RESERVED_LEVEL_PREFIX)
    {
        return Err((
            "id",
            "ids starting with '_' are reserved for the gateway's own topics (streetgate/v1/_alerts)"
                .to_owned(),
        ));
    }
    if !(-90.0..=90.0).contains(&d.lat) {
        return Err(("lat", format!("{} must be -90..=90", d.lat)));
    }
    if !(-180.0..=180.0).contains(&d.lon) {
        return Err(("lon", format!("{} must be -180..=180", d.lon)));
    }
    if !is_code(&d.grid) {
        return Err((
            "grid",
            format!(
                "{:?}: {CODE_RULE} (it is a level of the alerts topic)",
                d.grid
            ),
        ));
    }
    if let Some(segment) = d.road_segment.as_deref()
        && !is_code(segment)
    {
        return Err(("road_segment", format!("{segment:?}: {CODE_RULE}")));
    }
    if let Some(depth) = d.bin_depth_mm
        && !(100..=5000).contains(&depth)
    {
        return Err(("bin_depth_mm", format!("{depth} must be 100..=5000 mm")));
    }
    if d.road_class.is_some() && d.kind != DeviceKind::Streetlight {
        return Err((
            "road_class",
            format!("only streetlights have a road class, not a {}", d.kind),
        ));
    }
    if d.toilet_class.is_some() && d.kind != DeviceKind::Toilet {
        return Err((
            "toilet_class",
            format!("only toilets have a toilet class, not a {}", d.kind),
        ));
    }
    if d.bin_depth_mm.is_some() && d.kind != DeviceKind::Bin {
        return Err((
            "bin_depth_mm",
            format!("only bins have a depth, not a {}", d.kind),
        ));
    }
    Ok(())
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// Parse a whole CSV file. Either every row is valid, or nothing is returned but the problems.
pub fn parse_csv(data: &[u8]) -> Result<Vec<Device>, ImportError> {
    parse_csv_checked(data, |_| Ok(()))
}

/// [`parse_csv`], also refusing every device whose transport `allowed` refuses (the Modbus
/// allow-lists): the problem is reported on the device's line, in the `transport` column,
/// prefixed by the device id.
pub fn parse_csv_checked(
    data: &[u8],
    allowed: impl Fn(&Transport) -> Result<(), String>,
) -> Result<Vec<Device>, ImportError> {
    let mut issues = Vec::new();
    let mut truncated = false;
    let mut push = |issues: &mut Vec<ImportIssue>, line: u64, field: &str, message: String| {
        if issues.len() < MAX_ISSUES {
            issues.push(ImportIssue {
                line,
                field: field.to_owned(),
                message,
            });
        } else {
            truncated = true;
        }
    };

    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(false)
        .comment(Some(b'#'))
        .from_reader(data);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            push(&mut issues, 1, "-", format!("cannot read the header: {e}"));
            return Err(ImportError { issues, truncated });
        }
    };
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) => {
                if index.insert(c, i).is_some() {
                    push(&mut issues, 1, name, "column appears twice".to_owned());
                }
            }
            None => push(
                &mut issues,
                1,
                name,
                format!("unknown column; expected {}", COLUMNS.join(",")),
            ),
        }
    }
    for r in REQUIRED {
        if !index.contains_key(r) {
            push(&mut issues, 1, r, "required column missing".to_owned());
        }
    }
    if !issues.is_empty() {
        return Err(ImportError { issues, truncated });
    }

    let mut devices = Vec::new();
    let mut seen: HashMap<DeviceId, u64> = HashMap::new();
    for record in rdr.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                push(&mut issues, line, "-", e.to_string());
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |name: &str| -> &str {
            index
                .get(name)
                .and_then(|i| record.get(*i))
                .unwrap_or_default()
        };
        let opt = |name: &str| Some(cell(name)).filter(|s| !s.is_empty());
        let before = issues.len();

        let id = match DeviceId::new(cell("id")) {
            Ok(id) => Some(id),
            Err(e) => {
                push(&mut issues, line, "id", format!("{:?}: {e}", cell("id")));
                None
            }
        };
        let kind = cell("kind")
            .parse::<DeviceKind>()
            .map_err(|e| {
                push(
                    &mut issues,
                    line,
                    "kind",
                    format!("{:?}: {e}", cell("kind")),
                )
            })
            .ok();
        let component_code = match opt("component_code").map(ComponentCode::new) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                push(
                    &mut issues,
                    line,
                    "component_code",
                    format!("{:?}: {e}", cell("component_code")),
                );
                None
            }
        };
        let mut coord = |name: &str| match cell(name).parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => {
                push(
                    &mut issues,
                    line,
                    name,
                    format!("{:?} is not a number in degrees", cell(name)),
                );
                0.0
            }
        };
        let lat = coord("lat");
        let lon = coord("lon");
        let road_class = opt("road_class").and_then(|s| {
            let r = parse_enum::<RoadClass>(s);
            if r.is_none() {
                push(
                    &mut issues,
                    line,
                    "road_class",
                    format!("{s:?}: expected main, secondary or back"),
                );
            }
            r
        });
        let toilet_class = opt("toilet_class").and_then(|s| {
            let r = parse_enum::<ToiletClass>(s);
            if r.is_none() {
                push(
                    &mut issues,
                    line,
                    "toilet_class",
                    format!("{s:?}: expected 1, 2 or 3"),
                );
            }
            r
        });
        let bin_depth_mm = opt("bin_depth_mm").and_then(|s| {
            let r = s.parse::<u16>().ok();
            if r.is_none() {
                push(
                    &mut issues,
                    line,
                    "bin_depth_mm",
                    format!("{s:?} is not a whole number of millimetres"),
                );
            }
            r
        });
        let transport = parse_transport(cell("transport"))
            .and_then(|t| {
                allowed(&t).map_err(|e| format!("device {}: {e}", cell("id")))?;
                Ok(t)
            })
            .map_err(|e| push(&mut issues, line, "transport", e))
            .ok();
        let overrides = parse_overrides(cell("overrides"))
            .map_err(|e| push(&mut issues, line, "overrides", e))
            .ok();

        if issues.len() > before {
            continue;
        }
        let (Some(id), Some(kind), Some(transport), Some(overrides)) =
            (id, kind, transport, overrides)
        else {
            continue;
        };
        let device = Device {
            id,
            kind,
            component_code,
            lat,
            lon,
            grid: cell("grid").to_owned(),
            road_segment: opt("road_segment").map(str::to_owned),
            road_class,
            toilet_class,
            bin_depth_mm,
            overrides,
            transport,
        };
        if let Err((field, message)) = validate_device(&device) {
            push(&mut issues, line, field, message);
            continue;
        }
        if let Some(first) = seen.insert(device.id.clone(), line) {
            push(
                &mut issues,
                line,
                "id",
                format!("{} already appears on line {first}", device.id),
            );
            continue;
        }
        devices.push(device);
    }
    if issues.is_empty() {
        Ok(devices)
    } else {
        Err(ImportError { issues, truncated })
    }
}

/// Write devices as CSV in the import format.
pub fn to_csv(devices: &[Device]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(COLUMNS);
    for d in devices {
        let opt_enum = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s,
            _ => String::new(),
        };
        let _ = w.write_record([
            d.id.to_string(),
            d.kind.to_string(),
            d.component_code.map(|c| c.to_string()).unwrap_or_default(),
            d.lat.to_string(),
            d.lon.to_string(),
            d.grid.clone(),
            d.road_segment.clone().unwrap_or_default(),
            opt_enum(d.road_class.and_then(|r| serde_json::to_value(r).ok())),
            opt_enum(d.toilet_class.and_then(|t| serde_json::to_value(t).ok())),
            d.bin_depth_mm.map(|b| b.to_string()).unwrap_or_default(),
            format_transport(&d.transport),
            format_overrides(&d.overrides),
        ]);
    }
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Device map shared by snapshot.
pub type DeviceMap = HashMap<DeviceId, Arc<Device>>;

/// The in-memory inventory: read-mostly, copy-on-write.
///
/// Readers ([`InventoryReader`]) hold an `Arc` snapshot and only compare a version counter per
/// lookup, so the ingest hot path takes no lock; writers (API, import) rebuild the map and bump
/// the version. The store remains the source of truth.
#[derive(Debug, Default)]
pub struct Inventory {
    current: RwLock<Arc<DeviceMap>>,
    version: AtomicU64,
}

impl Inventory {
    /// An inventory holding `devices`.
    pub fn new(devices: impl IntoIterator<Item = Device>) -> Self {
        let inv = Self::default();
        inv.replace(devices);
        inv
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<DeviceMap> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bumped on every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// No devices.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One device.
    pub fn get(&self, id: &DeviceId) -> Option<Arc<Device>> {
        self.snapshot().get(id).cloned()
    }

    /// Replace everything.
    pub fn replace(&self, devices: impl IntoIterator<Item = Device>) {
        let map: DeviceMap = devices
            .into_iter()
            .map(|d| (d.id.clone(), Arc::new(d)))
            .collect();
        self.publish(map);
    }

    /// Insert or replace some devices.
    pub fn upsert(&self, devices: impl IntoIterator<Item = Device>) {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let mut map = DeviceMap::clone(&guard);
        for d in devices {
            map.insert(d.id.clone(), Arc::new(d));
        }
        *guard = Arc::new(map);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Remove some devices; returns how many were present.
    pub fn remove(&self, ids: &HashSet<DeviceId>) -> usize {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let mut map = DeviceMap::clone(&guard);
        let before = map.len();
        map.retain(|id, _| !ids.contains(id));
        let removed = before - map.len();
        *guard = Arc::new(map);
        self.version.fetch_add(1, Ordering::Release);
        removed
    }

    fn publish(&self, map: DeviceMap) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A reader for one task.
    pub fn reader(self: &Arc<Self>) -> InventoryReader {
        InventoryReader {
            version: self.version.load(Ordering::Acquire),
            snapshot: self.snapshot(),
            inventory: Arc::clone(self),
        }
    }
}

/// A task-local view of the inventory that refreshes itself when the inventory changes.
#[derive(Debug)]
pub struct InventoryReader {
    inventory: Arc<Inventory>,
    snapshot: Arc<DeviceMap>,
    version: u64,
}

impl InventoryReader {
    /// Look a device up (one atomic load, no lock unless the inventory changed).
    pub fn get(&mut self, id: &DeviceId) -> Option<&Arc<Device>> {
        let v = self.inventory.version.load(Ordering::Acquire);
        if v != self.version {
            self.snapshot = self.inventory.snapshot();
            self.version = v;
        }
        self.snapshot.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
SL-1,streetlight,3205080118000001,31.30,120.60,320508001001001,S-1,main,,,mqtt,min_current_a=0.2
MH-1,manhole,3205080101000001,31.31,120.61,320508001001001,,,,,modbus-tcp 10.0.0.7:502 3,tilt_alarm_deg=12;report_interval_s=3600
BN-1,bin,,31.32,120.62,320508001001002,,,,1200,modbus-rtu /dev/ttyUSB0 9600 7,
WC-1,toilet,,31.33,120.63,320508001001002,,,2,,,
";

    #[test]
    fn a_transport_with_a_field_it_does_not_have_is_refused() {
        let ok: Transport =
            serde_json::from_str(r#"{"type":"modbus-tcp","host":"10.0.0.7","port":502,"unit":3}"#)
                .unwrap();
        assert_eq!(ok.label(), "modbus-tcp");
        for bad in [
            r#"{"type":"mqtt","host":"10.0.0.7"}"#,
            r#"{"type":"modbus-tcp","host":"10.0.0.7","port":502,"unit":3,"baud":9600}"#,
            r#"{"type":"modbus-rtu","path":"/dev/ttyUSB0","baud":9600,"unit":7,"host":"x"}"#,
        ] {
            let e = serde_json::from_str::<Transport>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("unknown field"), "{bad}: {e}");
        }
    }

    #[test]
    fn imports_every_column() {
        let devices = parse_csv(GOOD.as_bytes()).unwrap();
        assert_eq!(devices.len(), 4);
        let sl = &devices[0];
        assert_eq!(sl.road_class, Some(RoadClass::Main));
        assert_eq!(sl.overrides.min_current_a, Some(0.2));
        assert_eq!(
            devices[1].transport,
            Transport::ModbusTcp {
                host: "10.0.0.7".into(),
                port: 502,
                unit: 3
            }
        );
        assert_eq!(devices[1].overrides.report_interval_s, Some(3600));
        assert_eq!(
            devices[2].transport,
            Transport::ModbusRtu {
                path: "/dev/ttyUSB0".into(),
                baud: 9600,
                unit: 7
            }
        );
        assert_eq!(devices[3].toilet_class, Some(ToiletClass::Class2));
        assert_eq!(devices[3].transport, Transport::Mqtt);
        // Export and re-import is lossless.
        let again = parse_csv(to_csv(&devices).as_bytes()).unwrap();
        assert_eq!(again, devices);
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = "\
id,kind,lat,lon,grid,transport,overrides
OK-1,bin,31,120,G1,,
bad/id,bin,31,120,G1,,
X-2,lamp,31,120,G1,,
X-3,bin,91,120,G1,,
X-4,bin,31,120,G1,modbus-tcp host 3,
X-5,bin,31,120,G1,,fill=3
OK-1,bin,31,120,G1,,
X-6,manhole,31,120,G1,modbus-rtu /dev/ttyS0 9600 0,
";
        let e = parse_csv(bad.as_bytes()).unwrap_err();
        let got: Vec<(u64, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.field.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "id"),
                (4, "kind"),
                (5, "lat"),
                (6, "transport"),
                (7, "overrides"),
                (8, "id"),
                (9, "transport"),
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains("line 7, overrides"), "{text}");
        assert!(text.contains("unknown field `fill`"), "{text}");
        assert!(text.contains("already appears on line 2"), "{text}");
    }

    #[test]
    fn grid_and_segment_codes_are_topic_safe() {
        let csv = "id,kind,lat,lon,grid,road_segment\nA,streetlight,1,2,evil+grid,\nB,streetlight,1,2,G1,S 1\nC,streetlight,1,2,G1,S-1\n";
        let e = parse_csv(csv.as_bytes()).unwrap_err();
        let fields: Vec<(u64, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.field.as_str()))
            .collect();
        assert_eq!(fields, [(2, "grid"), (3, "road_segment")], "{e}");
        assert!(e.to_string().contains("evil+grid"), "{e}");
        for bad in ["", "a/b", "#", "a\0", &"g".repeat(65)] {
            assert!(!is_code(bad), "{bad:?}");
        }
        assert!(is_code("320508001001001") && is_code("SEG-0001.a_b"));
    }

    #[test]
    fn header_problems() {
        let e = parse_csv(b"id,kind,lat,lon\nA,bin,1,2\n").unwrap_err();
        assert_eq!(e.issues[0].field, "grid");
        let e = parse_csv(b"id,kind,lat,lon,grid,colour\n").unwrap_err();
        assert_eq!(e.issues[0].field, "colour");
        let e = parse_csv(b"id,kind,lat,lon,grid\nA,bin,1,2\n").unwrap_err();
        assert_eq!(e.issues[0].line, 2);
        assert!(parse_csv(b"id,kind,lat,lon,grid\n").unwrap().is_empty());
    }

    #[test]
    fn kind_specific_fields() {
        let e = parse_csv(b"id,kind,lat,lon,grid,road_class\nA,bin,1,2,G,main\n").unwrap_err();
        assert_eq!(e.issues[0].field, "road_class");
    }

    #[test]
    fn reader_sees_updates() {
        let inv = Arc::new(Inventory::default());
        let mut r = inv.reader();
        let devices = parse_csv(GOOD.as_bytes()).unwrap();
        let id = devices[0].id.clone();
        assert!(r.get(&id).is_none());
        inv.upsert(devices);
        assert!(r.get(&id).is_some());
        inv.remove(&HashSet::from([id.clone()]));
        assert!(r.get(&id).is_none());
        assert_eq!(inv.len(), 3);
    }
}
