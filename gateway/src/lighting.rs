//! Lighting rate (亮灯率): lamps lit ÷ lamps that should be lit, during switch-on hours only,
//! per road segment, grid and city, against the road-class target.
//!
//! Whether a lamp should be lit comes from the astronomical clock at the lamp's own coordinates
//! (`streetgate_protocols::astro`, the same code the lamp controllers run). A lamp that is
//! offline, unknown, or has an active lamp failure counts as dark.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use streetgate_protocols::{DeviceId, astro};

use crate::model::{Device, GridCode, RoadClass, SegmentId, UnixMs};

/// Lighting-rate settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LightingConfig {
    /// Minutes after sunset when lamps should be lit.
    pub on_offset_min: i16,
    /// Minutes after sunrise when lamps may be off.
    pub off_offset_min: i16,
    /// Current at or above which a lamp counts as lit, A.
    pub min_current_a: f32,
    /// Target for main roads (主干道).
    pub target_main: f64,
    /// Target for secondary roads (次干道).
    pub target_secondary: f64,
    /// Target for back streets (背街小巷).
    pub target_back: f64,
    /// After the gateway first starts, segments are not judged for this long, s: lamps not
    /// heard from yet count as dark, and one report interval lets them report.
    pub startup_grace_s: u32,
}

impl Default for LightingConfig {
    fn default() -> Self {
        Self {
            on_offset_min: 0,
            off_offset_min: 0,
            min_current_a: 0.05,
            target_main: 0.99,
            target_secondary: 0.99,
            target_back: 0.95,
            startup_grace_s: 900,
        }
    }
}

impl LightingConfig {
    /// Target for a road class (unknown class: the main-road target).
    pub fn target(&self, class: Option<RoadClass>) -> f64 {
        match class {
            Some(RoadClass::Back) => self.target_back,
            Some(RoadClass::Secondary) => self.target_secondary,
            Some(RoadClass::Main) | None => self.target_main,
        }
    }

    /// Whether a lamp should be lit at `now` (`None` for a device without valid coordinates).
    pub fn should_be_on(&self, device: &Device, now: UnixMs) -> Option<bool> {
        if !(device.lat.is_finite() && device.lon.is_finite()) {
            return None;
        }
        Some(astro::lamps_should_be_on(
            now.div_euclid(1000),
            device.lat,
            device.lon,
            self.on_offset_min,
            self.off_offset_min,
        ))
    }
}

/// One lamp as the lighting rate sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LampView {
    /// Lamp id.
    pub device: DeviceId,
    /// Road segment.
    pub segment: Option<SegmentId>,
    /// Grid.
    pub grid: GridCode,
    /// Road class.
    pub road_class: Option<RoadClass>,
    /// Inside switch-on hours.
    pub should_be_on: bool,
    /// Online, relay closed, current flowing, no lamp failure.
    pub lit: bool,
}

/// Rate of one segment or grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Segment id or grid code.
    pub segment: String,
    /// Grid of the segment (same as `segment` for a grid row).
    pub grid: GridCode,
    /// Road class (segments).
    pub road_class: Option<RoadClass>,
    /// Lamps lit among those that should be.
    pub lit: usize,
    /// Lamps that should be lit.
    pub expected: usize,
    /// lit ÷ expected.
    pub rate: f64,
    /// Target for the road class (segments) or the strictest of its segments (grids).
    pub target: f64,
    /// Below target.
    pub below_target: bool,
    /// The dark lamps.
    pub dark: Vec<DeviceId>,
}

/// Lighting rate now, for segments and grids in switch-on hours, and the city.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LightingReport {
    /// Per road segment.
    pub segments: Vec<Rate>,
    /// Per grid.
    pub grids: Vec<Rate>,
    /// Whole city: lit, expected, rate (`None` outside switch-on hours).
    pub city: Option<Rate>,
}

#[derive(Default)]
struct Tally {
    grid: GridCode,
    class: Option<RoadClass>,
    lit: usize,
    expected: usize,
    target: f64,
    dark: Vec<DeviceId>,
}

impl Tally {
    fn add(&mut self, lamp: &LampView) {
        self.expected += 1;
        if lamp.lit {
            self.lit += 1;
        } else {
            self.dark.push(lamp.device.clone());
        }
    }

    fn rate(self, name: String) -> Rate {
        #[allow(clippy::cast_precision_loss)] // lamp counts
        let rate = if self.expected == 0 {
            1.0
        } else {
            self.lit as f64 / self.expected as f64
        };
        Rate {
            segment: name,
            grid: self.grid,
            road_class: self.class,
            lit: self.lit,
            expected: self.expected,
            rate,
            target: self.target,
            below_target: rate < self.target,
            dark: self.dark,
        }
    }
}

impl LightingReport {
    /// Compute from lamp views; lamps outside switch-on hours are not counted.
    pub fn compute(lamps: &[LampView], config: &LightingConfig) -> Self {
        let mut segments: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut grids: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut city = Tally {
            grid: String::new(),
            target: config.target_main,
            ..Tally::default()
        };
        for lamp in lamps.iter().filter(|l| l.should_be_on) {
            let target = config.target(lamp.road_class);
            if let Some(seg) = lamp.segment.as_deref() {
                let t = segments.entry(seg).or_insert_with(|| Tally {
                    grid: lamp.grid.clone(),
                    class: lamp.road_class,
                    target,
                    ..Tally::default()
                });
                t.add(lamp);
            }
            let g = grids.entry(lamp.grid.as_str()).or_insert_with(|| Tally {
                grid: lamp.grid.clone(),
                target,
                ..Tally::default()
            });
            g.target = g.target.max(target);
            g.add(lamp);
            city.add(lamp);
        }
        let city = (city.expected > 0).then(|| city.rate("city".to_owned()));
        Self {
            segments: segments
                .into_iter()
                .map(|(k, t)| t.rate(k.to_owned()))
                .collect(),
            grids: grids
                .into_iter()
                .map(|(k, t)| t.rate(k.to_owned()))
                .collect(),
            city,
        }
    }
}

/// What the API serves: the rate now and the history for rates over a period, refreshed by
/// every tick of the automation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LightingSnapshot {
    /// When it was computed.
    pub at_ms: UnixMs,
    /// The rate now.
    pub now: LightingReport,
    /// Lamp-seconds per segment and day.
    pub history: LightingHistory,
}

/// Lamp-seconds lit and expected per segment and UTC day, for the rate over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LightingHistory {
    /// (segment, day since epoch) → (lit lamp-seconds, expected lamp-seconds).
    pub days: BTreeMap<String, BTreeMap<i64, (i64, i64)>>,
}

/// Days of history kept.
pub const HISTORY_DAYS: i64 = 62;

impl LightingHistory {
    /// Add `dt_ms` of observation ending at `now` for every lamp.
    pub fn accumulate(&mut self, lamps: &[LampView], now: UnixMs, dt_ms: i64) {
        if dt_ms <= 0 {
            return;
        }
        let day = now.div_euclid(86_400_000);
        let secs = dt_ms / 1000;
        for lamp in lamps.iter().filter(|l| l.should_be_on) {
            let seg = lamp
                .segment
                .clone()
                .unwrap_or_else(|| format!("grid:{}", lamp.grid));
            let entry = self
                .days
                .entry(seg)
                .or_default()
                .entry(day)
                .or_insert((0, 0));
            entry.1 += secs;
            if lamp.lit {
                entry.0 += secs;
            }
        }
        for days in self.days.values_mut() {
            days.retain(|d, _| *d > day - HISTORY_DAYS);
        }
    }

    /// Time-weighted rate of a segment (or all segments with `None`) over `[from, to)`.
    pub fn rate(&self, segment: Option<&str>, from: UnixMs, to: UnixMs) -> Option<f64> {
        let (d0, d1) = (from.div_euclid(86_400_000), to.div_euclid(86_400_000));
        let (mut lit, mut expected) = (0i64, 0i64);
        for (seg, days) in &self.days {
            if segment.is_some_and(|s| s != seg) {
                continue;
            }
            for (_, (l, e)) in days.range(d0..=d1) {
                lit += l;
                expected += e;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        (expected > 0).then(|| lit as f64 / expected as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lamp(id: &str, seg: &str, class: RoadClass, should: bool, lit: bool) -> LampView {
        LampView {
            device: DeviceId::new(id).unwrap(),
            segment: Some(seg.into()),
            grid: "110101001001001".into(),
            road_class: Some(class),
            should_be_on: should,
            lit,
        }
    }

    #[test]
    fn segment_grid_and_city_rates() {
        let mut lamps: Vec<LampView> = (0..100)
            .map(|i| lamp(&format!("M{i}"), "main-1", RoadClass::Main, true, i != 0))
            .collect();
        lamps.extend(
            (0..20).map(|i| lamp(&format!("B{i}"), "back-1", RoadClass::Back, true, i != 0)),
        );
        lamps.push(lamp("X", "back-2", RoadClass::Back, false, false)); // daytime elsewhere: not counted
        let r = LightingReport::compute(&lamps, &LightingConfig::default());
        let main = &r.segments[1];
        assert_eq!(
            (main.segment.as_str(), main.lit, main.expected),
            ("main-1", 99, 100)
        );
        assert!(!main.below_target, "99 % meets the 99 % target");
        let back = &r.segments[0];
        assert_eq!((back.lit, back.expected), (19, 20));
        assert!(!back.below_target, "95 % meets the 95 % target");
        assert_eq!(r.segments.len(), 2);
        let grid = &r.grids[0];
        assert_eq!((grid.lit, grid.expected), (118, 120));
        assert!(grid.below_target, "grid held to the strictest target");
        assert_eq!(r.city.as_ref().map(|c| c.expected), Some(120));
        let mut dim = lamps.clone();
        dim[1].lit = false;
        let r = LightingReport::compute(&dim, &LightingConfig::default());
        assert!(r.segments[1].below_target);
        assert_eq!(r.segments[1].dark.len(), 2);
    }

    #[test]
    fn no_city_rate_by_day() {
        let lamps = [lamp("A", "s", RoadClass::Main, false, false)];
        assert_eq!(
            LightingReport::compute(&lamps, &LightingConfig::default()).city,
            None
        );
    }

    #[test]
    fn history_is_time_weighted() {
        let mut h = LightingHistory::default();
        let day = 20_000 * 86_400_000;
        let on = [
            lamp("A", "s", RoadClass::Main, true, true),
            lamp("B", "s", RoadClass::Main, true, false),
        ];
        h.accumulate(&on, day + 1000, 60_000);
        let both = [
            lamp("A", "s", RoadClass::Main, true, true),
            lamp("B", "s", RoadClass::Main, true, true),
        ];
        h.accumulate(&both, day + 2000, 180_000);
        // (60 + 0 + 180 + 180) / (120 + 360)
        let r = h.rate(Some("s"), day, day + 86_400_000).unwrap();
        assert!((r - 420.0 / 480.0).abs() < 1e-9);
        assert_eq!(h.rate(Some("other"), day, day + 1), None);
    }
}
