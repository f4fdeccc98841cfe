//! `GET /api/map?bbox=&zoom=`: what the overview map (一张图) draws, sized for a city of a
//! million devices.
//!
//! Zoomed out (below [`POINTS_FROM_ZOOM`]), or when the box holds more than [`MAX_POINTS`]
//! devices, the answer is per grid: its outline (the convex hull of its devices, computed once
//! per inventory change), its device count, offline devices and open cases by urgency. Zoomed
//! in, it is the devices and open cases inside the box, each with its coordinates. Both carry
//! the figures the operations centre is judged on for the caller's scope.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::Identity;
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::inventory::DeviceMap;
use crate::model::Device;

/// From this zoom level on, devices are drawn one by one.
pub const POINTS_FROM_ZOOM: u8 = 15;
/// At most this many devices in one answer; a box with more is answered per grid.
pub const MAX_POINTS: usize = 5000;

/// Query of `GET /api/map`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MapQuery {
    /// `west,south,east,north` in degrees (WGS-84); none: everything.
    bbox: Option<String>,
    /// The map's zoom level.
    #[serde(default)]
    zoom: u8,
}

#[derive(Debug, Clone, Copy)]
struct Bbox {
    west: f64,
    south: f64,
    east: f64,
    north: f64,
}

impl Bbox {
    fn parse(s: &str) -> ApiResult<Self> {
        let bad = || {
            ApiError::bad_request(
                "invalid_bbox",
                format!(
                    "bbox={s:?}: expected west,south,east,north in degrees, e.g. 114.2,35.7,114.4,35.8"
                ),
            )
        };
        let v: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<ApiResult<_>>()?;
        let [west, south, east, north] = v[..] else {
            return Err(bad());
        };
        if !(v.iter().all(|x| x.is_finite()) && west <= east && south <= north) {
            return Err(bad());
        }
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    fn contains(&self, lat: f64, lon: f64) -> bool {
        (self.south..=self.north).contains(&lat) && (self.west..=self.east).contains(&lon)
    }
}

/// One grid as the map draws it zoomed out.
#[derive(Debug, Clone, Serialize)]
pub struct GridShape {
    /// Grid code.
    pub grid: String,
    /// Devices in it.
    pub devices: usize,
    /// Mean position `[lat, lon]`.
    pub center: [f64; 2],
    /// Convex hull of its devices, `[lat, lon]` points (a small square around a lone device).
    pub outline: Vec<[f64; 2]>,
    #[serde(skip)]
    bbox: [f64; 4],
}

/// Something computed from one inventory snapshot, kept until the inventory changes. The key
/// is a weak reference to the snapshot: it keeps the snapshot's address from being reused by a
/// newer one (a plain address could be), without keeping its devices alive.
#[derive(Debug)]
struct PerSnapshot<T>(Mutex<Option<(Weak<DeviceMap>, Arc<T>)>>);

impl<T> Default for PerSnapshot<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T> PerSnapshot<T> {
    fn get(&self, devices: &Arc<DeviceMap>, build: impl FnOnce(&DeviceMap) -> T) -> Arc<T> {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, value)) = cache.as_ref()
            && std::ptr::eq(key.as_ptr(), Arc::as_ptr(devices))
        {
            return Arc::clone(value);
        }
        let value = Arc::new(build(devices));
        *cache = Some((Arc::downgrade(devices), Arc::clone(&value)));
        value
    }
}

/// Grid shapes and the map-cell index of the inventory, each computed once per inventory
/// change.
#[derive(Debug, Default)]
pub struct GridCache {
    shapes: PerSnapshot<Vec<GridShape>>,
    cells: PerSnapshot<DeviceIndex>,
}

impl GridCache {
    fn shapes(&self, devices: &Arc<DeviceMap>) -> Arc<Vec<GridShape>> {
        self.shapes.get(devices, grid_shapes)
    }

    /// The inventory's devices by map cell.
    fn cells(&self, devices: &Arc<DeviceMap>) -> Arc<DeviceIndex> {
        self.cells.get(devices, DeviceIndex::new)
    }
}

/// Size of a map cell, degrees (about 1 km): a zoomed-in box touches a few cells.
const CELL_DEG: f64 = 0.01;

/// The inventory's devices by map cell, so that a zoomed-in box reads the few cells it
/// touches instead of the whole inventory.
#[derive(Debug, Default)]
pub struct DeviceIndex {
    cells: HashMap<(i32, i32), Vec<Arc<Device>>>,
    /// Devices without valid coordinates: in every box with no bbox only.
    unplaced: Vec<Arc<Device>>,
}

#[allow(clippy::cast_possible_truncation)] // degrees / 0.01: far inside i32
fn cell_of(lat: f64, lon: f64) -> (i32, i32) {
    (
        (lat / CELL_DEG).floor() as i32,
        (lon / CELL_DEG).floor() as i32,
    )
}

impl DeviceIndex {
    fn new(devices: &DeviceMap) -> Self {
        let mut index = Self::default();
        for d in devices.values() {
            if d.lat.is_finite() && d.lon.is_finite() {
                index
                    .cells
                    .entry(cell_of(d.lat, d.lon))
                    .or_default()
                    .push(Arc::clone(d));
            } else {
                index.unplaced.push(Arc::clone(d));
            }
        }
        index
    }

    /// The devices inside `bbox` (every device without one), cell by cell.
    fn in_box(&self, bbox: Option<Bbox>) -> Box<dyn Iterator<Item = &Arc<Device>> + '_> {
        let Some(b) = bbox else {
            return Box::new(self.cells.values().flatten().chain(self.unplaced.iter()));
        };
        let (s, w) = cell_of(b.south, b.west);
        let (n, e) = cell_of(b.north, b.east);
        let cells = i64::from(n - s + 1) * i64::from(e - w + 1);
        if cells > i64::try_from(self.cells.len()).unwrap_or(i64::MAX) {
            // A box larger than the city: walk the cells there are.
            return Box::new(
                self.cells
                    .values()
                    .flatten()
                    .filter(move |d| b.contains(d.lat, d.lon)),
            );
        }
        Box::new(
            (s..=n)
                .flat_map(move |la| (w..=e).map(move |lo| (la, lo)))
                .filter_map(|c| self.cells.get(&c))
                .flatten()
                .filter(move |d| b.contains(d.lat, d.lon)),
        )
    }
}

fn grid_shapes(devices: &DeviceMap) -> Vec<GridShape> {
    let mut by_grid: BTreeMap<&str, Vec<[f64; 2]>> = BTreeMap::new();
    for d in devices.values() {
        if d.lat.is_finite() && d.lon.is_finite() {
            by_grid
                .entry(d.grid.as_str())
                .or_default()
                .push([d.lat, d.lon]);
        }
    }
    by_grid
        .into_iter()
        .map(|(grid, points)| {
            #[allow(clippy::cast_precision_loss)] // a mean position
            let n = points.len() as f64;
            let center = [
                points.iter().map(|p| p[0]).sum::<f64>() / n,
                points.iter().map(|p| p[1]).sum::<f64>() / n,
            ];
            let bbox = points
                .iter()
                .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, p| {
                    [
                        b[0].min(p[0]),
                        b[1].min(p[1]),
                        b[2].max(p[0]),
                        b[3].max(p[1]),
                    ]
                });
            GridShape {
                grid: grid.to_owned(),
                devices: points.len(),
                center,
                outline: outline(points),
                bbox,
            }
        })
        .collect()
}

/// The convex hull (Andrew's monotone chain), padded into a square for fewer than 3 distinct
/// points or a line.
fn outline(mut points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    points.dedup();
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[f64; 2]> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    if hull.len() >= 3 {
        return hull;
    }
    // A lone device or a straight street: a box 30 m around it.
    let pad = 0.0003;
    let lat: Vec<f64> = points.iter().map(|p| p[0]).collect();
    let lon: Vec<f64> = points.iter().map(|p| p[1]).collect();
    let (s, n) = (
        lat.iter().copied().fold(f64::MAX, f64::min) - pad,
        lat.iter().copied().fold(f64::MIN, f64::max) + pad,
    );
    let (w, e) = (
        lon.iter().copied().fold(f64::MAX, f64::min) - pad,
        lon.iter().copied().fold(f64::MIN, f64::max) + pad,
    );
    vec![[s, w], [s, e], [n, e], [n, w]]
}

pub(super) async fn map(
    State(state): State<AppState>,
    who: Identity,
    ApiQuery(q): ApiQuery<MapQuery>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::DevicesRead)?;
    let bbox = q.bbox.as_deref().map(Bbox::parse).transpose()?;
    let now = state.clock.now_ms();
    let devices = state.inventory.snapshot();
    let shapes = state.console.grid_cache.shapes(&devices);

    // Open cases in the caller's scope, and the devices an open offline case names.
    let open: Vec<_> = state
        .store
        .open_cases()
        .await?
        .into_iter()
        .filter(|c| who.sees_case(c))
        .collect();
    // Offline: named by an open offline case, or whose last word was an offline status or a
    // last will (the live device states).
    let said_offline = state.console.device_states.offline();
    let mut offline: HashSet<&streetgate_protocols::DeviceId> = open
        .iter()
        .filter(|c| c.condition_key.as_deref() == Some("offline"))
        .flat_map(|c| c.devices.iter())
        .collect();
    offline.extend(
        said_offline
            .iter()
            .filter(|id| devices.get(*id).is_some_and(|d| who.sees_grid(&d.grid))),
    );
    let overdue = |c: &crate::store::CaseRecord| {
        c.due_ms.is_some_and(|d| d < now) && crate::store::UNRESOLVED_STATES.contains(&c.state)
    };
    let in_box = |lat: f64, lon: f64| bbox.is_none_or(|b| b.contains(lat, lon));
    let visible = |grid: &str| who.sees_grid(grid);

    let mut per_grid: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
    for c in &open {
        let e = per_grid.entry(c.grid.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(c.urgent);
        e.2 += usize::from(overdue(c));
    }
    for id in &offline {
        if let Some(d) = devices.get(*id) {
            per_grid.entry(d.grid.as_str()).or_default().3 += 1;
        }
    }
    let in_view: Vec<&GridShape> = shapes
        .iter()
        .filter(|g| visible(&g.grid))
        .filter(|g| {
            bbox.is_none_or(|b| {
                g.bbox[0] <= b.north
                    && g.bbox[2] >= b.south
                    && g.bbox[1] <= b.east
                    && g.bbox[3] >= b.west
            })
        })
        .collect();
    let grids: Vec<Value> = in_view
        .iter()
        .map(|g| {
            let (open, urgent, overdue, offline) =
                per_grid.get(g.grid.as_str()).copied().unwrap_or_default();
            json!({
                "grid": g.grid, "devices": g.devices, "center": g.center, "outline": g.outline,
                "open_cases": open, "urgent_cases": urgent, "overdue_cases": overdue,
                "offline_devices": offline,
            })
        })
        .collect();

    let points_in_box = if q.zoom >= POINTS_FROM_ZOOM {
        in_view.iter().map(|g| g.devices).sum::<usize>()
    } else {
        usize::MAX
    };
    let (mode, points, cases) = if points_in_box <= MAX_POINTS * 4 {
        let index = state.console.grid_cache.cells(&devices);
        let points: Vec<Value> = index
            .in_box(bbox)
            .filter(|d| visible(&d.grid))
            .take(MAX_POINTS + 1)
            .map(|d| {
                json!({
                    "id": d.id.as_str(), "kind": d.kind, "lat": d.lat, "lon": d.lon,
                    "grid": d.grid, "segment": d.road_segment,
                    "offline": offline.contains(&d.id),
                })
            })
            .collect();
        if points.len() > MAX_POINTS {
            ("grids", Vec::new(), Vec::new())
        } else {
            let cases: Vec<Value> = open
                .iter()
                .filter_map(|c| {
                    let d = c.devices.first().and_then(|id| devices.get(id))?;
                    in_box(d.lat, d.lon).then(|| {
                        json!({
                            "id": c.id, "case_type": c.case_type, "state": c.state,
                            "urgent": c.urgent, "overdue": overdue(c), "due_ms": c.due_ms,
                            "lat": d.lat, "lon": d.lon, "grid": c.grid,
                        })
                    })
                })
                .collect();
            ("points", points, cases)
        }
    } else {
        ("grids", Vec::new(), Vec::new())
    };
    let total_devices: usize = shapes
        .iter()
        .filter(|g| visible(&g.grid))
        .map(|g| g.devices)
        .sum();
    Ok(Json(json!({
        "mode": mode,
        "now_ms": now,
        "grids": grids,
        "devices": points,
        "cases": cases,
        "summary": {
            "devices": total_devices,
            "offline_devices": offline.len(),
            "open_cases": open.len(),
            "urgent_cases": open.iter().filter(|c| c.urgent).count(),
            "overdue_cases": open.iter().filter(|c| overdue(c)).count(),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::{Bbox, outline};

    #[test]
    fn hull_keeps_the_corners_and_pads_a_lone_device() {
        let square = vec![
            [0.0, 0.0],
            [0.0, 1.0],
            [1.0, 1.0],
            [1.0, 0.0],
            [0.5, 0.5],
            [0.2, 0.7],
        ];
        let hull = outline(square);
        assert_eq!(hull.len(), 4, "{hull:?}");
        assert!(!hull.contains(&[0.5, 0.5]));
        let lone = outline(vec![[35.0, 114.0]]);
        assert_eq!(lone.len(), 4);
        assert!(
            lone.iter()
                .all(|p| (p[0] - 35.0).abs() < 0.001 && (p[1] - 114.0).abs() < 0.001)
        );
    }

    #[test]
    fn the_index_finds_the_devices_of_a_box_and_is_kept_per_snapshot() {
        use std::sync::Arc;

        use super::{DeviceIndex, GridCache};
        use crate::inventory::DeviceMap;
        use crate::model::{Device, Transport};
        use streetgate_protocols::{DeviceId, DeviceKind};

        let device = |id: &str, lat: f64, lon: f64| Device {
            id: DeviceId::new(id).unwrap(),
            kind: DeviceKind::Bin,
            component_code: None,
            lat,
            lon,
            grid: "G1".into(),
            road_segment: None,
            road_class: None,
            toilet_class: None,
            bin_depth_mm: None,
            overrides: Default::default(),
            transport: Transport::Mqtt,
        };
        let map: DeviceMap = [
            device("BN-b", 35.7001, 114.2001),
            device("BN-a", 35.7099, 114.2099),
            device("BN-c", 35.7301, 114.2001),
            device("bn-x", f64::NAN, f64::NAN),
        ]
        .into_iter()
        .map(|d| (d.id.clone(), Arc::new(d)))
        .collect();
        let index = DeviceIndex::new(&map);
        let ids = |b: Option<Bbox>| {
            let mut v: Vec<String> = index.in_box(b).map(|d| d.id.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(Some(Bbox::parse("114.20,35.70,114.21,35.71").unwrap())),
            ["BN-a", "BN-b"]
        );
        assert_eq!(
            ids(Some(Bbox::parse("-180,-90,180,90").unwrap())),
            ["BN-a", "BN-b", "BN-c"]
        );
        assert_eq!(ids(None).len(), 4);

        // Kept while the snapshot lives; a new snapshot gets its own.
        let cache = GridCache::default();
        let one = Arc::new(map.clone());
        assert!(Arc::ptr_eq(&cache.cells(&one), &cache.cells(&one)));
        let first = cache.cells(&one);
        drop(one);
        let two = Arc::new(DeviceMap::new());
        assert!(!Arc::ptr_eq(&first, &cache.cells(&two)));
        assert_eq!(cache.cells(&two).in_box(None).count(), 0);
    }

    #[test]
    fn bbox_is_checked() {
        assert!(Bbox::parse("114.2,35.7,114.4,35.8").is_ok());
        for bad in ["1,2,3", "a,b,c,d", "114.4,35.7,114.2,35.8", "1,2,3,NaN"] {
            assert!(Bbox::parse(bad).is_err(), "{bad}");
        }
    }
}
