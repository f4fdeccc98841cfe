//! Evaluation (考核): the figures of a period per grid, team and case type, the ranking with
//! red and black lists (红榜/黑榜), lighting compliance, and the monthly bulletin (通报).
//!
//! Everything is computed from the store alone (cases, their history, the lighting figures per
//! segment and night), so the figures of any past period can be produced again and agree.
//! Definitions: `docs/evaluation.md`.
//!
//! | part | |
//! |---|---|
//! | [`period`] | day, month, quarter or any range of days, in the city's time zone |
//! | [`figures`] | counts, rates and durations from the case history |
//! | [`ranking`] | the composite score, red and black lists, last place periods running |
//! | [`lighting`] | share of nights meeting the road-class lighting target |
//! | [`render`] | CSV export and the bulletin as printable HTML |
//! | [`schedule`] | the monthly reports written to `evaluation.report_dir`, once each |

mod config;
pub mod figures;
pub mod lighting;
pub mod period;
pub mod ranking;
pub mod render;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

pub use config::EvaluationConfig;
pub use figures::{Figures, OverdueCase};
pub use lighting::LightingCompliance;
pub use period::{Period, PeriodKind};
pub use ranking::{Ranking, Weights};

use crate::clock::Clock;
use crate::lighting::LightingConfig;
use crate::store::{Store, StoreResult};

/// Figures of one grid, team or case type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Grid code, team or case type.
    pub key: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// The period a report covers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodInfo {
    /// Day, month, quarter or range.
    pub kind: PeriodKind,
    /// `2026-11`, `2026-Q4`, `2026-11-03`, `2026-11-01..2026-11-15`.
    pub label: String,
    /// First day (city time).
    pub from: String,
    /// Last day, included.
    pub to: String,
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End (excluded), Unix ms.
    pub to_ms: i64,
    /// The city's time zone, minutes east of UTC.
    pub utc_offset_min: i32,
}

/// Rankings of teams and grids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rankings {
    /// The score's weights.
    pub weights: Weights,
    /// Periods running ranked last that flag a team or grid.
    pub last_place_periods: u32,
    /// Teams.
    pub teams: Ranking,
    /// Grids.
    pub grids: Ranking,
}

/// A whole evaluation of a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The period.
    pub period: PeriodInfo,
    /// The grid the report is limited to (a grid-scoped viewer), if any.
    pub grid: Option<String>,
    /// Whole city (or the grid).
    pub city: Figures,
    /// By grid.
    pub grids: Vec<Row>,
    /// By team.
    pub teams: Vec<Row>,
    /// By case type.
    pub types: Vec<Row>,
    /// Rankings.
    pub ranking: Rankings,
    /// Lighting compliance.
    pub lighting: LightingCompliance,
    /// Cases overdue at the period's end.
    pub overdue: Vec<OverdueCase>,
}

/// A period and the grid an evaluation is limited to.
type PeriodKey = (PeriodKind, i64, i64, Option<String>);

/// Who was ranked last (teams, grids) in a period.
type LastPlaces = (Option<String>, Option<String>);

/// Past periods kept in [`Evaluator`]'s memory of last places.
const LAST_PLACES_KEPT: usize = 512;

/// Computes evaluations from the store.
#[derive(Debug, Clone)]
pub struct Evaluator {
    store: Arc<dyn Store>,
    config: Arc<EvaluationConfig>,
    lighting: Arc<LightingConfig>,
    utc_offset_min: i32,
    clock: Clock,
    /// Who was last in periods that had ended when they were computed: the last-place streak
    /// of each evaluation reads the periods before it, and a period over does not change (its
    /// history entries were all recorded by then), so each is read from the store once.
    last_places: Arc<Mutex<HashMap<PeriodKey, LastPlaces>>>,
}

fn rows(m: std::collections::BTreeMap<String, Figures>) -> Vec<Row> {
    m.into_iter()
        .map(|(key, figures)| Row { key, figures })
        .collect()
}

impl Evaluator {
    /// An evaluator on `store` with the lighting targets and the city's time zone.
    pub fn new(
        store: Arc<dyn Store>,
        config: EvaluationConfig,
        lighting: LightingConfig,
        utc_offset_min: i32,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            config: Arc::new(config),
            lighting: Arc::new(lighting),
            utc_offset_min,
            clock,
            last_places: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EvaluationConfig {
        &self.config
    }

    /// The city's time zone, minutes east of UTC.
    pub fn utc_offset_min(&self) -> i32 {
        self.utc_offset_min
    }

    /// The lighting rate night by night over a period, against the road-class targets.
    pub async fn lighting_nights(
        &self,
        p: &Period,
        scope: lighting::NightsScope<'_>,
    ) -> StoreResult<lighting::LightingNights> {
        let (d0, d1) = lighting::day_range(p.from_ms(), p.to_ms());
        let days = self.store.lighting_days(d0, d1).await?;
        Ok(lighting::nights(
            &days,
            p.from_ms(),
            p.to_ms(),
            &self.lighting,
            scope,
            p.utc_offset_min,
        ))
    }

    async fn figures(&self, p: &Period, grid: Option<&str>) -> StoreResult<figures::PeriodFigures> {
        let mut data = self.store.period_cases(p.from_ms(), p.to_ms()).await?;
        if let Some(g) = grid {
            data.cases.retain(|c| c.grid == g);
        }
        Ok(figures::compute(&data, p.from_ms(), p.to_ms()))
    }

    /// Who was ranked last (teams, grids) in a period; remembered once the period is over.
    async fn last_places(&self, p: &Period, grid: Option<&str>) -> StoreResult<LastPlaces> {
        let key: PeriodKey = (p.kind, p.first_day, p.end_day, grid.map(str::to_owned));
        let memory = || {
            self.last_places
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(known) = memory().get(&key) {
            return Ok(known.clone());
        }
        let f = self.figures(p, grid).await?;
        let last = |r: &Ranking| ranking::last_place(r).map(str::to_owned);
        let found = (
            last(&ranking::rank(&f.teams, &self.config)),
            last(&ranking::rank(&f.grids, &self.config)),
        );
        if p.to_ms() <= self.clock.now_ms() {
            let mut m = memory();
            if m.len() >= LAST_PLACES_KEPT {
                m.clear();
            }
            m.insert(key, found.clone());
        }
        Ok(found)
    }

    /// The evaluation of a period, for the whole city or one grid.
    pub async fn report(&self, p: Period, grid: Option<&str>) -> StoreResult<Report> {
        let now = self.figures(&p, grid).await?;
        let mut teams = ranking::rank(&now.teams, &self.config);
        let mut grids = ranking::rank(&now.grids, &self.config);
        // Who was last in the periods before, most recent first, for the last-place streak.
        let mut earlier_teams = Vec::new();
        let mut earlier_grids = Vec::new();
        let mut before = p;
        for _ in 1..self.config.last_place_periods {
            before = before.previous();
            let (teams_last, grids_last) = self.last_places(&before, grid).await?;
            earlier_teams.push(teams_last);
            earlier_grids.push(grids_last);
        }
        ranking::mark_streaks(&mut teams, &earlier_teams, &self.config);
        ranking::mark_streaks(&mut grids, &earlier_grids, &self.config);
        let (d0, d1) = lighting::day_range(p.from_ms(), p.to_ms());
        let days = self.store.lighting_days(d0, d1).await?;
        let lighting = lighting::compliance(
            &days,
            p.from_ms(),
            p.to_ms(),
            &self.lighting,
            grid,
            self.config.worst_segments as usize,
        );
        let (from, to) = p.dates();
        Ok(Report {
            period: PeriodInfo {
                kind: p.kind,
                label: p.label(),
                from,
                to,
                from_ms: p.from_ms(),
                to_ms: p.to_ms(),
                utc_offset_min: p.utc_offset_min,
            },
            grid: grid.map(str::to_owned),
            city: now.city,
            grids: rows(now.grids),
            teams: rows(now.teams),
            types: rows(now.types),
            ranking: Rankings {
                weights: Weights::of(&self.config),
                last_place_periods: self.config.last_place_periods,
                teams,
                grids,
            },
            lighting,
            overdue: now.overdue,
        })
    }
}
