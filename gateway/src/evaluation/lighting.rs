//! Lighting compliance (亮灯率达标): per road segment and grid, the share of the period's nights
//! whose lighting rate met the road-class target, and the worst segments.
//!
//! The lighting figures are kept per segment and UTC day (`lighting_days`, recorded from the
//! lighting rate's history). A night belongs to the period when the middle of its day (12:00
//! UTC, 20:00 in China) lies in it: east of UTC by 3 to 11 hours, one UTC day holds exactly one
//! night's switch-on hours, and its local date is the date of that evening.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lighting::LightingConfig;
use crate::model::{RoadClass, UnixMs};
use crate::store::LightingDay;

const DAY_MS: i64 = 86_400_000;

/// Compliance of one segment or grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compliance {
    /// Segment id, or grid code.
    pub name: String,
    /// The grid.
    pub grid: String,
    /// Road class (segments).
    pub road_class: Option<String>,
    /// Target (a grid: the strictest of its segments).
    pub target: f64,
    /// Nights with lamps that should have been lit.
    pub nights: u64,
    /// Nights whose lighting rate met the target.
    pub nights_met: u64,
    /// nights_met ÷ nights.
    pub share: Option<f64>,
    /// Lighting rate over the whole period (lamp-seconds lit ÷ expected).
    pub rate: Option<f64>,
    /// The lowest night's rate.
    pub worst_night_rate: Option<f64>,
}

/// Compliance of a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LightingCompliance {
    /// Per segment.
    pub segments: Vec<Compliance>,
    /// Per grid.
    pub grids: Vec<Compliance>,
    /// The worst segments: lowest share of nights met, then lowest rate.
    pub worst: Vec<Compliance>,
}

fn road_class(s: Option<&str>) -> Option<RoadClass> {
    s.and_then(|c| serde_json::from_value(serde_json::Value::String(c.to_owned())).ok())
}

#[derive(Default)]
struct Acc {
    grid: String,
    class: Option<String>,
    target: f64,
    nights: BTreeMap<i64, (i64, i64)>,
}

impl Acc {
    #[allow(clippy::cast_precision_loss)] // lamp-seconds
    fn finish(self, name: String) -> Compliance {
        let (mut lit, mut expected, mut met, mut nights) = (0i64, 0i64, 0u64, 0u64);
        let mut worst: Option<f64> = None;
        for (l, e) in self.nights.values().filter(|(_, e)| *e > 0) {
            let r = *l as f64 / *e as f64;
            nights += 1;
            // A rate equal to the target meets it (99 of 100 lamps meet 99 %).
            if r + 1e-9 >= self.target {
                met += 1;
            }
            worst = Some(worst.map_or(r, |w: f64| w.min(r)));
            lit += l;
            expected += e;
        }
        Compliance {
            name,
            grid: self.grid,
            road_class: self.class,
            target: self.target,
            nights,
            nights_met: met,
            share: (nights > 0).then(|| met as f64 / nights as f64),
            rate: (expected > 0).then(|| lit as f64 / expected as f64),
            worst_night_rate: worst,
        }
    }
}

/// The UTC days to read for `[from_ms, to_ms)`.
pub fn day_range(from_ms: UnixMs, to_ms: UnixMs) -> (i64, i64) {
    (from_ms.div_euclid(DAY_MS) - 1, to_ms.div_euclid(DAY_MS) + 1)
}

/// Compliance of `[from_ms, to_ms)` from the lighting days (of any days around it).
pub fn compliance(
    days: &[LightingDay],
    from_ms: UnixMs,
    to_ms: UnixMs,
    targets: &LightingConfig,
    grid_only: Option<&str>,
    worst_n: usize,
) -> LightingCompliance {
    let mut segments: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut grids: BTreeMap<&str, Acc> = BTreeMap::new();
    for d in days {
        let middle = d.day * DAY_MS + DAY_MS / 2;
        if middle < from_ms || middle >= to_ms || grid_only.is_some_and(|g| g != d.grid) {
            continue;
        }
        let target = targets.target(road_class(d.road_class.as_deref()));
        let s = segments.entry(&d.segment).or_default();
        s.grid.clone_from(&d.grid);
        s.class.clone_from(&d.road_class);
        s.target = target;
        let n = s.nights.entry(d.day).or_default();
        n.0 += d.lit_s;
        n.1 += d.expected_s;
        let g = grids.entry(&d.grid).or_default();
        g.grid.clone_from(&d.grid);
        g.target = g.target.max(target);
        let n = g.nights.entry(d.day).or_default();
        n.0 += d.lit_s;
        n.1 += d.expected_s;
    }
    let segments: Vec<Compliance> = segments
        .into_iter()
        .map(|(k, a)| a.finish(k.to_owned()))
        .collect();
    let mut worst: Vec<Compliance> = segments.iter().filter(|s| s.nights > 0).cloned().collect();
    worst.sort_by(|a, b| {
        a.share
            .unwrap_or(1.0)
            .total_cmp(&b.share.unwrap_or(1.0))
            .then(a.rate.unwrap_or(1.0).total_cmp(&b.rate.unwrap_or(1.0)))
            .then(a.name.cmp(&b.name))
    });
    worst.truncate(worst_n);
    LightingCompliance {
        segments,
        grids: grids
            .into_iter()
            .map(|(k, a)| a.finish(k.to_owned()))
            .collect(),
        worst,
    }
}

/// One night of a segment, a grid or the city.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Night {
    /// The city's date of the evening (`2026-11-03`).
    pub date: String,
    /// Lamp-seconds lit ÷ lamp-seconds that should have been lit.
    pub rate: f64,
    /// Whether the rate met the target.
    pub met: bool,
}

/// Night-by-night lighting of one segment, grid or the city.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NightSeries {
    /// Segment id, grid code, or `city`.
    pub name: String,
    /// The grid (segments).
    pub grid: Option<String>,
    /// Road class (segments).
    pub road_class: Option<String>,
    /// Target (a grid or the city: the strictest of its segments).
    pub target: f64,
    /// Nights with lamps that should have been lit, oldest first.
    pub nights: Vec<Night>,
}

/// Night-by-night lighting of a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LightingNights {
    /// The city (none when limited to a grid or a segment).
    pub city: Option<NightSeries>,
    /// Per grid.
    pub grids: Vec<NightSeries>,
    /// Per segment (only when limited to a grid or a segment: a city has thousands).
    pub segments: Vec<NightSeries>,
}

impl Acc {
    #[allow(clippy::cast_precision_loss)] // lamp-seconds
    fn series(self, name: String, grid: Option<String>, utc_offset_min: i32) -> NightSeries {
        let nights = self
            .nights
            .iter()
            .filter(|(_, (_, e))| *e > 0)
            .map(|(day, (l, e))| {
                let rate = *l as f64 / *e as f64;
                let evening = day * DAY_MS + DAY_MS / 2 + i64::from(utc_offset_min) * 60_000;
                let (y, m, d) = super::period::civil_from_days(evening.div_euclid(DAY_MS));
                Night {
                    date: format!("{y:04}-{m:02}-{d:02}"),
                    rate,
                    met: rate + 1e-9 >= self.target,
                }
            })
            .collect();
        NightSeries {
            name,
            grid,
            road_class: self.class,
            target: self.target,
            nights,
        }
    }
}

/// What [`nights`] covers: one grid, one segment, or (neither) the whole city.
#[derive(Debug, Clone, Copy, Default)]
pub struct NightsScope<'a> {
    /// One grid only.
    pub grid: Option<&'a str>,
    /// One segment only.
    pub segment: Option<&'a str>,
}

/// The lighting rate night by night of `[from_ms, to_ms)` against the road-class targets, per
/// segment, grid and the city, from the lighting days (a night is in the period as in
/// [`compliance`]).
pub fn nights(
    days: &[LightingDay],
    from_ms: UnixMs,
    to_ms: UnixMs,
    targets: &LightingConfig,
    scope: NightsScope<'_>,
    utc_offset_min: i32,
) -> LightingNights {
    let mut segments: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut grids: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut city = Acc::default();
    for d in days {
        let middle = d.day * DAY_MS + DAY_MS / 2;
        if middle < from_ms
            || middle >= to_ms
            || scope.grid.is_some_and(|g| g != d.grid)
            || scope.segment.is_some_and(|s| s != d.segment)
        {
            continue;
        }
        let target = targets.target(road_class(d.road_class.as_deref()));
        for acc in [
            segments.entry(&d.segment).or_default(),
            grids.entry(&d.grid).or_default(),
            &mut city,
        ] {
            acc.target = acc.target.max(target);
            let n = acc.nights.entry(d.day).or_default();
            n.0 += d.lit_s;
            n.1 += d.expected_s;
        }
        let s = segments.entry(&d.segment).or_default();
        s.grid.clone_from(&d.grid);
        s.class.clone_from(&d.road_class);
        // A segment's target is its class's, whatever came before.
        s.target = target;
    }
    let limited = scope.grid.is_some() || scope.segment.is_some();
    LightingNights {
        city: (!limited && !city.nights.is_empty())
            .then(|| city.series("city".to_owned(), None, utc_offset_min)),
        grids: grids
            .into_iter()
            .map(|(k, a)| a.series(k.to_owned(), None, utc_offset_min))
            .collect(),
        segments: if limited {
            segments
                .into_iter()
                .map(|(k, a)| {
                    let grid = Some(a.grid.clone());
                    a.series(k.to_owned(), grid, utc_offset_min)
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(
        segment: &str,
        grid: &str,
        class: &str,
        day: i64,
        lit: i64,
        expected: i64,
    ) -> LightingDay {
        LightingDay {
            segment: segment.into(),
            day,
            grid: grid.into(),
            road_class: Some(class.into()),
            lit_s: lit,
            expected_s: expected,
        }
    }

    #[test]
    fn nights_meeting_the_road_class_target() {
        // Days 100..103 in a period [day 100 00:00, day 103 00:00) UTC.
        let days = [
            day("main-1", "G1", "main", 99, 0, 100), // before the period
            day("main-1", "G1", "main", 100, 99, 100), // 99 %: met
            day("main-1", "G1", "main", 101, 98, 100), // 98 %: not met
            day("main-1", "G1", "main", 102, 100, 100),
            day("back-1", "G1", "back", 100, 95, 100), // 95 %: met on a back street
            day("back-1", "G1", "back", 101, 0, 0),    // no switch-on hours recorded
            day("back-1", "G1", "back", 102, 90, 100),
        ];
        let c = compliance(
            &days,
            100 * DAY_MS,
            103 * DAY_MS,
            &LightingConfig::default(),
            None,
            1,
        );
        let main = &c.segments[1];
        assert_eq!(
            (main.name.as_str(), main.nights, main.nights_met),
            ("main-1", 3, 2)
        );
        let back = &c.segments[0];
        assert_eq!((back.nights, back.nights_met), (2, 1));
        assert_eq!(back.worst_night_rate, Some(0.9));
        // The grid: (99+95)/200 = 97 % on day 100, 98 % on 101, 95 % on 102, against 99 %.
        let g = &c.grids[0];
        assert_eq!((g.nights, g.nights_met, g.target), (3, 0, 0.99));
        assert_eq!(c.worst.len(), 1);
        assert_eq!(c.worst[0].name, "back-1");
    }

    #[test]
    fn night_by_night_against_the_road_class_target() {
        let days = [
            day("main-1", "G1", "main", 100, 99, 100),
            day("main-1", "G1", "main", 101, 98, 100),
            day("back-1", "G1", "back", 100, 95, 100),
            day("back-1", "G1", "back", 101, 0, 0),
            day("back-2", "G2", "back", 101, 96, 100),
        ];
        let all = nights(
            &days,
            100 * DAY_MS,
            102 * DAY_MS,
            &LightingConfig::default(),
            NightsScope::default(),
            480,
        );
        let city = all.city.as_ref().unwrap();
        // Day 100 is 1970-04-11 (UTC); its evening at UTC+8 too.
        assert_eq!(city.nights[0].date, "1970-04-11");
        assert!((city.nights[0].rate - 0.97).abs() < 1e-9);
        assert!((city.target - 0.99).abs() < 1e-9);
        assert_eq!(all.grids.len(), 2);
        assert!(
            all.segments.is_empty(),
            "segments only for a grid or segment"
        );
        let g1 = nights(
            &days,
            100 * DAY_MS,
            102 * DAY_MS,
            &LightingConfig::default(),
            NightsScope {
                grid: Some("G1"),
                segment: None,
            },
            480,
        );
        assert!(g1.city.is_none());
        let main = g1.segments.iter().find(|s| s.name == "main-1").unwrap();
        assert_eq!(
            main.nights.iter().map(|n| n.met).collect::<Vec<_>>(),
            [true, false]
        );
        let back = g1.segments.iter().find(|s| s.name == "back-1").unwrap();
        assert!((back.target - 0.95).abs() < 1e-9);
        assert_eq!(
            back.nights.len(),
            1,
            "a night with nothing expected is left out"
        );
        assert!(back.nights[0].met);
    }
}
