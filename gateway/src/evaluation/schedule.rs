//! The monthly reports: on `report_day` of each month, from `report_hour` (city time, on the
//! gateway's clock), the previous month's bulletin and CSVs are written to
//! `evaluation.report_dir`, once. The store remembers the months written
//! (`evaluation_reports`), so a restart neither writes a month again nor skips one: a gateway
//! that was down on the day writes the month when it is back, and one down for longer writes
//! every month since the last one written.
//!
//! The same task records the lighting rate's history per segment and night in the store
//! (`lighting_days`), where the lighting compliance reads it, beyond the history the rule
//! engine keeps.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::period::{Period, local_month, parse_month};
use super::render::{By, bulletin, csv};
use super::{EvaluationConfig, Evaluator};
use crate::clock::Clock;
use crate::inventory::Inventory;
use crate::lighting::LightingSnapshot;
use crate::model::UnixMs;
use crate::store::{LightingDay, ReportRecord};

/// Months written at most in one catch-up.
const MAX_CATCH_UP: usize = 24;

fn next_month((y, m): (i64, u32)) -> (i64, u32) {
    if m == 12 { (y + 1, 1) } else { (y, m + 1) }
}

fn previous_month((y, m): (i64, u32)) -> (i64, u32) {
    if m == 1 { (y - 1, 12) } else { (y, m - 1) }
}

/// The months whose reports are due at `now` and not yet written (`done`: `YYYY-MM` of those
/// written), oldest first. With none written yet, only the latest month is due.
pub fn months_due(
    now: UnixMs,
    config: &EvaluationConfig,
    utc_offset_min: i32,
    done: &[String],
) -> Vec<(i64, u32)> {
    let (y, m, d, h) = local_month(now, utc_offset_min);
    let mut latest = previous_month((y, m));
    if (d, h) < (config.report_day, i64::from(config.report_hour)) {
        latest = previous_month(latest);
    }
    let last_done = done.iter().filter_map(|s| parse_month(s).ok()).max();
    let Some(last_done) = last_done else {
        return vec![latest];
    };
    let mut due = Vec::new();
    let mut month = next_month(last_done);
    while month <= latest && due.len() < MAX_CATCH_UP {
        due.push(month);
        month = next_month(month);
    }
    due
}

fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Write the reports of one month; returns the file names written.
pub async fn write_month(
    evaluator: &Evaluator,
    (year, month): (i64, u32),
) -> anyhow::Result<Vec<String>> {
    let dir = evaluator.config().report_dir.clone();
    let period = Period::month(year, month, evaluator.utc_offset_min());
    let report = evaluator.report(period, None).await?;
    let label = period.label();
    let mut files = vec![(format!("bulletin-{label}.html"), bulletin(&report))];
    for by in [By::Team, By::Grid, By::Type] {
        files.push((
            format!("evaluation-{label}-{}.csv", by.as_str()),
            csv(&report, by)?,
        ));
    }
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        for (name, contents) in files {
            write_atomically(&dir.join(name), &contents)?;
        }
        Ok(())
    })
    .await??;
    Ok(names)
}

/// Write every month due at `now` and record each; returns the months written.
pub async fn write_due(evaluator: &Evaluator, now: UnixMs) -> anyhow::Result<Vec<String>> {
    let store = &evaluator.store;
    let done: Vec<String> = store
        .reports()
        .await?
        .into_iter()
        .map(|r| r.month)
        .collect();
    let mut written = Vec::new();
    for month in months_due(now, evaluator.config(), evaluator.utc_offset_min(), &done) {
        let files = write_month(evaluator, month).await?;
        let label = format!("{:04}-{:02}", month.0, month.1);
        store
            .record_report(&ReportRecord {
                month: label.clone(),
                written_ms: now,
                files: files.join(","),
            })
            .await?;
        tracing::info!(month = %label, files = ?files, "monthly evaluation reports written");
        written.push(label);
    }
    Ok(written)
}

/// The lighting history's days from `since_day` on, with each segment's grid and road class.
pub fn lighting_days(
    snapshot: &LightingSnapshot,
    inventory: &Inventory,
    since_day: i64,
) -> Vec<LightingDay> {
    let devices = inventory.snapshot();
    let mut segments: HashMap<&str, (&str, Option<String>)> = HashMap::new();
    for d in devices.values() {
        if let Some(seg) = d.road_segment.as_deref() {
            let class = d.road_class.and_then(|c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            });
            segments.entry(seg).or_insert((d.grid.as_str(), class));
        }
    }
    let mut out = Vec::new();
    for (segment, days) in &snapshot.history.days {
        let (grid, class) = match segments.get(segment.as_str()) {
            Some((g, c)) => ((*g).to_owned(), c.clone()),
            None => match segment.strip_prefix("grid:") {
                Some(g) => (g.to_owned(), None),
                None => continue,
            },
        };
        for (day, (lit, expected)) in days.range(since_day..) {
            out.push(LightingDay {
                segment: segment.clone(),
                day: *day,
                grid: grid.clone(),
                road_class: class.clone(),
                lit_s: *lit,
                expected_s: *expected,
            });
        }
    }
    out
}

/// Run the schedule until `cancel`: every `check_interval_s`, record the lighting days and
/// write the monthly reports due.
pub async fn run(
    evaluator: Evaluator,
    lighting: watch::Receiver<LightingSnapshot>,
    inventory: Arc<Inventory>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let every = Duration::from_secs(evaluator.config().check_interval_s);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Everything the history holds the first time, then yesterday and today.
    let mut since_day = i64::MIN;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let snapshot = lighting.borrow().clone();
        if snapshot.at_ms > 0 {
            let days = lighting_days(&snapshot, &inventory, since_day);
            match evaluator.store.save_lighting_days(&days).await {
                Ok(()) => since_day = snapshot.at_ms.div_euclid(86_400_000) - 1,
                Err(e) => tracing::warn!(error = %e, "lighting days not recorded; trying again"),
            }
        }
        if evaluator.config().reports_enabled() {
            if let Err(e) = write_due(&evaluator, clock.now_ms()).await {
                tracing::error!(error = %format!("{e:#}"), dir = %evaluator.config().report_dir.display(), "monthly evaluation reports not written; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::period::days_from_civil;

    fn at(y: i64, m: u32, d: u32, h: i64) -> UnixMs {
        // Local time in UTC+8.
        days_from_civil(y, m, d) * 86_400_000 + (h - 8) * 3_600_000
    }

    #[test]
    fn lighting_days_carry_the_segment_grid_and_class() {
        let csv = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
SL-1,streetlight,,31.30,120.60,G1,S-1,back,,,mqtt,
SL-2,streetlight,,31.30,120.60,G2,,,,,mqtt,
";
        let inventory = Inventory::new(crate::inventory::parse_csv(csv.as_bytes()).unwrap());
        let mut snapshot = LightingSnapshot {
            at_ms: 1,
            ..LightingSnapshot::default()
        };
        let days = &mut snapshot.history.days;
        days.entry("S-1".into())
            .or_default()
            .extend([(9, (1, 2)), (10, (3, 4))]);
        days.entry("grid:G2".into()).or_default().insert(10, (5, 6));
        days.entry("S-gone".into()).or_default().insert(10, (7, 8));
        let got = lighting_days(&snapshot, &inventory, 10);
        let rows: Vec<_> = got
            .iter()
            .map(|d| {
                (
                    d.segment.as_str(),
                    d.day,
                    d.grid.as_str(),
                    d.road_class.as_deref(),
                    d.lit_s,
                    d.expected_s,
                )
            })
            .collect();
        // Day 9 is before `since_day`; a segment no lamp of the inventory names is left out.
        assert_eq!(
            rows,
            [
                ("S-1", 10, "G1", Some("back"), 3, 4),
                ("grid:G2", 10, "G2", None, 5, 6)
            ]
        );
        assert_eq!(lighting_days(&snapshot, &inventory, i64::MIN).len(), 3);
    }

    #[test]
    fn months_due_from_the_report_day_and_hour() {
        let c = EvaluationConfig::default(); // day 1, 06:00
        assert_eq!(months_due(at(2026, 12, 1, 5), &c, 480, &[]), [(2026, 10)]);
        assert_eq!(months_due(at(2026, 12, 1, 6), &c, 480, &[]), [(2026, 11)]);
        let done = ["2026-10".to_owned()];
        assert_eq!(months_due(at(2026, 12, 1, 5), &c, 480, &done), []);
        assert_eq!(
            months_due(at(2026, 12, 20, 0), &c, 480, &done),
            [(2026, 11)]
        );
        let done = ["2026-11".to_owned()];
        assert_eq!(months_due(at(2026, 12, 31, 23), &c, 480, &done), []);
        // Down from October to February: every month since the last written.
        let done = ["2026-09".to_owned()];
        assert_eq!(
            months_due(at(2027, 2, 3, 0), &c, 480, &done),
            [(2026, 10), (2026, 11), (2026, 12), (2027, 1)]
        );
    }
}
