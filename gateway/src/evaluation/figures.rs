//! The figures of a period per grid, team and case type, computed from the cases a period
//! touches and their history (definitions in `docs/evaluation.md`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{CaseState, UnixMs};
use crate::store::{CaseHistoryEntry, CaseRecord, PeriodCases, UNRESOLVED_STATES};

/// Mean and 90th percentile of durations, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Durations {
    /// How many were measured.
    pub count: u64,
    /// Mean, ms (rounded).
    pub mean_ms: Option<i64>,
    /// 90th percentile (nearest rank), ms.
    pub p90_ms: Option<i64>,
}

impl Durations {
    fn of(mut values: Vec<i64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let n = values.len();
        let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // a mean of i64
        let mean = ((sum + (n as i128) / 2).div_euclid(n as i128)) as i64;
        // Nearest rank: the smallest value with at least 90 % of the values at or below it.
        let rank = (n * 9).div_ceil(10);
        Self {
            count: n as u64,
            mean_ms: Some(mean),
            p90_ms: values.get(rank.saturating_sub(1)).copied(),
        }
    }
}

/// The figures of one grid, team, case type, or the whole city.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Cases registered (立案) in the period.
    pub registered: u64,
    /// Cases dispatched (派遣) in the period, each case once per team.
    pub dispatched: u64,
    /// Dispatch entries in the period (re-dispatches included): the return rate's denominator.
    pub dispatches: u64,
    /// Accept entries in the period.
    pub accepted: u64,
    /// On-site reports in the period.
    pub on_site: u64,
    /// Return entries (退单) in the period.
    pub returned: u64,
    /// returned ÷ dispatches.
    pub return_rate: Option<f64>,
    /// Cases closed (结案) in the period.
    pub closed: u64,
    /// Closed cases that a team resolved (the on-time and rework rates' denominator).
    pub handled: u64,
    /// Handled cases whose last resolve before closing was at or before their due time.
    pub on_time: u64,
    /// on_time ÷ handled (按期处置率).
    pub on_time_rate: Option<f64>,
    /// Handled cases with a rework or reopen before their close (返工).
    pub reworked: u64,
    /// reworked ÷ handled (返工率).
    pub rework_rate: Option<f64>,
    /// Rework and reopen entries in the period.
    pub rework_events: u64,
    /// Closed cases that recovered by themselves before anyone accepted them.
    pub self_recovered: u64,
    /// Verifications in the period by the sensor (actor `system` or `sensor`).
    pub verified_sensor: u64,
    /// Verifications in the period by a person.
    pub verified_person: u64,
    /// Cases voided (作废) in the period.
    pub voided: u64,
    /// Cases overdue at the period's end: past their due time and not yet resolved.
    pub overdue: u64,
    /// Dispatch → first accept.
    pub time_to_accept: Durations,
    /// Dispatch → first on-site report.
    pub time_to_on_site: Durations,
    /// Registration → the last resolve before the close (handled cases).
    pub time_to_resolve: Durations,
    /// Registration → close (closed cases).
    pub time_to_close: Durations,
    /// Supervision entries (督办) in the period by level (`1`, `2`, … or `unknown`).
    pub escalations: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Tally {
    f: Figures,
    accept: Vec<i64>,
    on_site: Vec<i64>,
    resolve: Vec<i64>,
    close: Vec<i64>,
}

#[allow(clippy::cast_precision_loss)] // case counts
fn rate(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Tally {
    fn finish(mut self) -> Figures {
        let f = &mut self.f;
        f.return_rate = rate(f.returned, f.dispatches);
        f.on_time_rate = rate(f.on_time, f.handled);
        f.rework_rate = rate(f.reworked, f.handled);
        f.time_to_accept = Durations::of(self.accept);
        f.time_to_on_site = Durations::of(self.on_site);
        f.time_to_resolve = Durations::of(self.resolve);
        f.time_to_close = Durations::of(self.close);
        self.f
    }
}

/// An open case past its due time at the period's end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverdueCase {
    /// Case number.
    pub id: i64,
    /// Case type.
    pub case_type: String,
    /// Grid.
    pub grid: String,
    /// Team it was dispatched to, at the period's end.
    pub team: Option<String>,
    /// State at the period's end.
    pub state: CaseState,
    /// Registered at.
    pub opened_ms: UnixMs,
    /// Due at.
    pub due_ms: UnixMs,
    /// Description.
    pub detail: String,
}

/// Figures of a period: the city, and per grid, team and case type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodFigures {
    /// All cases.
    pub city: Figures,
    /// By grid.
    pub grids: BTreeMap<String, Figures>,
    /// By team.
    pub teams: BTreeMap<String, Figures>,
    /// By case type.
    pub types: BTreeMap<String, Figures>,
    /// Cases overdue at the period's end, oldest due first.
    pub overdue: Vec<OverdueCase>,
}

/// `system` and `sensor` verify for the sensor; anyone else is a person.
pub fn by_sensor(actor: &str) -> bool {
    matches!(actor, "system" | "sensor")
}

/// The level a supervision note names (`level 2` → `2`), or `unknown`.
pub fn escalation_level(note: &str) -> String {
    let lower = note.to_ascii_lowercase();
    lower
        .find("level")
        .map(|i| {
            lower[i + 5..]
                .trim_start_matches([' ', ':', '='])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The team a dispatch entry names: `to lighting` (a dispatch), or `second dispatch (二次派遣)
/// to municipal, from sanitation: why` (a second dispatch to another team).
pub fn dispatched_team(e: &CaseHistoryEntry) -> Option<&str> {
    let note = e.note.as_str();
    let team = match note.strip_prefix("to ") {
        Some(team) => team,
        None => {
            let (_, rest) = note.split_once(" to ")?;
            rest.rsplit_once(", from ").map_or(rest, |(team, _)| team)
        }
    };
    Some(team.trim()).filter(|t| !t.is_empty())
}

struct Groups<'a> {
    out: &'a mut BTreeMap<(u8, String), Tally>,
    grid: &'a str,
    case_type: &'a str,
}

impl Groups<'_> {
    /// Apply `f` to the city, the case's grid and type, and `team` when there is one.
    fn each(&mut self, team: Option<&str>, mut f: impl FnMut(&mut Tally)) {
        f(self.out.entry((0, String::new())).or_default());
        f(self.out.entry((1, self.grid.to_owned())).or_default());
        f(self.out.entry((3, self.case_type.to_owned())).or_default());
        if let Some(t) = team {
            f(self.out.entry((2, t.to_owned())).or_default());
        }
    }
}

/// Compute the figures of `[from_ms, to_ms)` from the cases it touches.
pub fn compute(data: &PeriodCases, from_ms: UnixMs, to_ms: UnixMs) -> PeriodFigures {
    let mut history: BTreeMap<i64, Vec<&CaseHistoryEntry>> = BTreeMap::new();
    for (id, e) in &data.history {
        history.entry(*id).or_default().push(e);
    }
    let mut tallies: BTreeMap<(u8, String), Tally> = BTreeMap::new();
    let mut overdue = Vec::new();
    let inside = |t: UnixMs| t >= from_ms && t < to_ms;
    for case in &data.cases {
        let entries = history.get(&case.id).map_or(&[][..], Vec::as_slice);
        let case_type = case.case_type.as_str().to_owned();
        let mut g = Groups {
            out: &mut tallies,
            grid: &case.grid,
            case_type: &case_type,
        };
        case_figures(case, entries, &mut g, &inside);
        if let Some(o) = overdue_at_end(case, entries, to_ms) {
            let team = o.team.clone();
            g.each(team.as_deref(), |t| t.f.overdue += 1);
            overdue.push(o);
        }
    }
    overdue.sort_by_key(|o| (o.due_ms, o.id));
    let mut out = PeriodFigures {
        overdue,
        ..PeriodFigures::default()
    };
    for ((kind, key), tally) in tallies {
        let f = tally.finish();
        match kind {
            0 => out.city = f,
            1 => {
                out.grids.insert(key, f);
            }
            2 => {
                out.teams.insert(key, f);
            }
            _ => {
                out.types.insert(key, f);
            }
        }
    }
    out
}

/// The team of a case at `t`: the last dispatch at or before `t`, else its first dispatch, else
/// the team the case records.
fn team_at<'a>(
    case: &'a CaseRecord,
    entries: &[&'a CaseHistoryEntry],
    t: UnixMs,
) -> Option<&'a str> {
    let dispatches = entries
        .iter()
        .filter(|e| e.action == "dispatch")
        .filter_map(|e| Some((e.at_ms, dispatched_team(e)?)));
    let mut first = None;
    let mut last = None;
    for (at, team) in dispatches {
        first.get_or_insert(team);
        if at <= t {
            last = Some(team);
        }
    }
    last.or(first).or(case.team.as_deref())
}

fn case_figures(
    case: &CaseRecord,
    entries: &[&CaseHistoryEntry],
    g: &mut Groups<'_>,
    inside: &impl Fn(UnixMs) -> bool,
) {
    let mut dispatched_to: BTreeSet<Option<&str>> = BTreeSet::new();
    let first_dispatch = entries
        .iter()
        .find(|e| e.action == "dispatch")
        .map(|e| e.at_ms);
    let since_dispatch = |at: UnixMs| {
        at - first_dispatch
            .filter(|d| *d <= at)
            .unwrap_or(case.opened_ms)
    };
    for (i, e) in entries.iter().enumerate() {
        if !inside(e.at_ms) {
            continue;
        }
        let team = team_at(case, entries, e.at_ms);
        let first_of_kind = !entries[..i].iter().any(|p| p.action == e.action);
        match e.action.as_str() {
            "register" => g.each(team, |t| t.f.registered += 1),
            "dispatch" => {
                let to = dispatched_team(e).or(team);
                g.each(to, |t| t.f.dispatches += 1);
                dispatched_to.insert(to);
            }
            "accept" => {
                g.each(team, |t| t.f.accepted += 1);
                if first_of_kind {
                    let d = since_dispatch(e.at_ms);
                    g.each(team, |t| t.accept.push(d));
                }
            }
            "on_site" => {
                g.each(team, |t| t.f.on_site += 1);
                if first_of_kind {
                    let d = since_dispatch(e.at_ms);
                    g.each(team, |t| t.on_site.push(d));
                }
            }
            "return" => g.each(team, |t| t.f.returned += 1),
            "verify" | "self_recover" => {
                if by_sensor(&e.actor) {
                    g.each(team, |t| t.f.verified_sensor += 1);
                } else {
                    g.each(team, |t| t.f.verified_person += 1);
                }
            }
            "rework" | "reopen" => g.each(team, |t| t.f.rework_events += 1),
            "void" => g.each(team, |t| t.f.voided += 1),
            "supervise" => {
                let level = escalation_level(&e.note);
                g.each(team, |t| {
                    *t.f.escalations.entry(level.clone()).or_default() += 1
                });
            }
            _ => {}
        }
    }
    // Dispatched: each case once for the city, its grid and type, and once per team.
    if !dispatched_to.is_empty() {
        g.each(None, |t| t.f.dispatched += 1);
        for team in dispatched_to.iter().flatten() {
            g.out
                .entry((2, (*team).to_owned()))
                .or_default()
                .f
                .dispatched += 1;
        }
    }
    // Closed in the period: the last close inside it.
    let Some((ci, close)) = entries
        .iter()
        .enumerate()
        .rev()
        .find(|(_, e)| e.action == "close" && inside(e.at_ms))
    else {
        return;
    };
    let before = &entries[..ci];
    let team = team_at(case, entries, close.at_ms);
    let to_close = close.at_ms - case.opened_ms;
    g.each(team, |t| {
        t.f.closed += 1;
        t.close.push(to_close);
    });
    let last_resolve = before.iter().rev().find(|e| e.action == "resolve");
    let Some(resolve) = last_resolve else {
        if before.iter().any(|e| e.action == "self_recover") {
            g.each(team, |t| t.f.self_recovered += 1);
        }
        return;
    };
    let on_time = case.due_ms.is_none_or(|due| resolve.at_ms <= due);
    let reworked = before
        .iter()
        .any(|e| e.action == "rework" || e.action == "reopen");
    let to_resolve = resolve.at_ms - case.opened_ms;
    g.each(team, |t| {
        t.f.handled += 1;
        t.f.on_time += u64::from(on_time);
        t.f.reworked += u64::from(reworked);
        t.resolve.push(to_resolve);
    });
}

/// The case as it stood at `to_ms` (its last entry before then), if it was overdue.
fn overdue_at_end(
    case: &CaseRecord,
    entries: &[&CaseHistoryEntry],
    to_ms: UnixMs,
) -> Option<OverdueCase> {
    if case.opened_ms >= to_ms {
        return None;
    }
    let state = entries.last().map_or(case.state, |e| e.to);
    let due = case.due_ms?;
    if !(UNRESOLVED_STATES.contains(&state) && due < to_ms) {
        return None;
    }
    Some(OverdueCase {
        id: case.id,
        case_type: case.case_type.as_str().to_owned(),
        grid: case.grid.clone(),
        team: team_at(case, entries, to_ms).map(str::to_owned),
        state,
        opened_ms: case.opened_ms,
        due_ms: due,
        detail: case.detail.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_mean_and_nearest_rank_p90() {
        let d = Durations::of((1..=10).map(|m| m * 60_000).collect());
        assert_eq!(
            (d.count, d.mean_ms, d.p90_ms),
            (10, Some(330_000), Some(540_000))
        );
        let one = Durations::of(vec![7]);
        assert_eq!((one.mean_ms, one.p90_ms), (Some(7), Some(7)));
        assert_eq!(Durations::of(vec![]), Durations::default());
    }

    #[test]
    fn teams_from_dispatch_notes() {
        let dispatch = |note: &str| CaseHistoryEntry {
            action: "dispatch".into(),
            at_ms: 0,
            actor: "system".into(),
            from: None,
            to: CaseState::Dispatched,
            note: note.into(),
        };
        assert_eq!(dispatched_team(&dispatch("to lighting")), Some("lighting"));
        assert_eq!(
            dispatched_team(&dispatch(
                "second dispatch (二次派遣) to municipal, from sanitation: reworked twice"
            )),
            Some("municipal")
        );
        assert_eq!(dispatched_team(&dispatch("to ")), None);
        assert_eq!(dispatched_team(&dispatch("")), None);
    }

    #[test]
    fn escalation_levels_from_notes() {
        assert_eq!(escalation_level("level 2"), "2");
        assert_eq!(escalation_level("escalated to Level: 3 (district)"), "3");
        assert_eq!(escalation_level("supervised"), "unknown");
        assert_eq!(escalation_level("level"), "unknown");
    }
}
