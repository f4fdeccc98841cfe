//! `[cases]` and `[routing]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CasePolicy, Router};
use crate::model::CaseType;
use crate::settings::{Checked, invalid};

/// `[cases]`: time limits (处置时限) and the sensor windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CasesConfig {
    /// Handling limits per case type, minutes; only the types listed change, the others keep
    /// their docs/domain.md defaults.
    pub limits_min: BTreeMap<CaseType, i64>,
    /// Limit for urgent cases of any type, minutes.
    pub urgent_limit_min: i64,
    /// The condition must stay clear this long after `resolved` before the sensor verifies, s.
    pub verify_window_s: i64,
    /// A recurrence this soon after closure reopens the case as rework, s.
    pub reopen_window_s: i64,
    /// Largest photo a team may attach to a case (`POST /api/cases/{id}/photos`), bytes.
    pub photo_max_bytes: usize,
    /// Photos one case may have at most.
    pub photos_per_case: u32,
}

impl Default for CasesConfig {
    fn default() -> Self {
        let p = CasePolicy::default();
        Self {
            limits_min: BTreeMap::new(),
            urgent_limit_min: p.urgent_limit_min,
            verify_window_s: p.verify_window_ms / 1000,
            reopen_window_s: p.reopen_window_ms / 1000,
            photo_max_bytes: 10 * 1024 * 1024,
            photos_per_case: 20,
        }
    }
}

impl CasesConfig {
    /// The case machine's policy: the defaults with these changes.
    pub fn policy(&self) -> CasePolicy {
        let mut p = CasePolicy::default();
        p.limits_min
            .extend(self.limits_min.iter().map(|(t, m)| (*t, *m)));
        p.urgent_limit_min = self.urgent_limit_min;
        p.verify_window_ms = self.verify_window_s.saturating_mul(1000);
        p.reopen_window_ms = self.reopen_window_s.saturating_mul(1000);
        p
    }
}

/// `[routing]`: which team a case goes to. Keys are grid codes, or `*` for every grid; values
/// map case types to teams. Entries here override the built-in `*` defaults (lighting,
/// municipal, sanitation, facilities, grid-chief) one (grid, type) at a time.
/// `alternatives` has the same shape: the team of the second dispatch (二次派遣).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Grid (or `*`) → case type → team.
    pub teams: BTreeMap<String, BTreeMap<CaseType, String>>,
    /// Grid (or `*`) → case type → alternative team; none by default (no second dispatch).
    pub alternatives: BTreeMap<String, BTreeMap<CaseType, String>>,
    /// A case handed back (退单) this many times goes to the alternative team (0: never).
    pub second_dispatch_returns: u32,
    /// A case failing verification (返工) this many times goes to the alternative team
    /// (0: never).
    pub second_dispatch_reworks: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        let r = Router::default_teams();
        Self {
            teams: BTreeMap::new(),
            alternatives: BTreeMap::new(),
            second_dispatch_returns: r.second_dispatch_returns,
            second_dispatch_reworks: r.second_dispatch_reworks,
        }
    }
}

impl RoutingConfig {
    /// The dispatch router: the default teams with these routes on top.
    pub fn router(&self) -> Router {
        let mut r = Router::default_teams();
        for (grid, types) in &self.teams {
            r.routes
                .entry(grid.clone())
                .or_default()
                .extend(types.iter().map(|(t, team)| (*t, team.clone())));
        }
        r.alternatives.clone_from(&self.alternatives);
        r.second_dispatch_returns = self.second_dispatch_returns;
        r.second_dispatch_reworks = self.second_dispatch_reworks;
        r
    }
}

impl CasesConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        let c = self;
        for (t, minutes) in &c.limits_min {
            if *minutes <= 0 {
                let key = format!(
                    "cases.limits_min.{}",
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
                return Err(invalid(key, minutes, "a positive number of minutes"));
            }
        }
        if c.urgent_limit_min <= 0 {
            return Err(invalid(
                "cases.urgent_limit_min",
                c.urgent_limit_min,
                "a positive number of minutes",
            ));
        }
        if c.verify_window_s < 0 || c.reopen_window_s < 0 {
            return Err(invalid(
                "cases.verify_window_s",
                format!("{} / reopen {}", c.verify_window_s, c.reopen_window_s),
                "non-negative seconds",
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&c.photo_max_bytes) {
            return Err(invalid(
                "cases.photo_max_bytes",
                c.photo_max_bytes,
                "1024 to 268435456 bytes",
            ));
        }
        if c.photos_per_case == 0 {
            return Err(invalid("cases.photos_per_case", 0, "at least 1"));
        }
        Ok(())
    }
}

impl RoutingConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        for (table, routes) in [("teams", &self.teams), ("alternatives", &self.alternatives)] {
            for (grid, types) in routes {
                for (t, team) in types {
                    if team.trim().is_empty() {
                        return Err(invalid(
                            format!("routing.{table}.{grid}.{}", t.as_str()),
                            "\"\"",
                            "a team name",
                        ));
                    }
                }
            }
        }
        let router = self.router();
        for (grid, types) in &self.alternatives {
            for (t, team) in types {
                if router.route(grid, *t) == Some(team.as_str()) {
                    return Err(invalid(
                        format!("routing.alternatives.{grid}.{}", t.as_str()),
                        format!("\"{team}\""),
                        "a team other than the route's own team",
                    ));
                }
            }
        }
        for (key, n) in [
            (
                "routing.second_dispatch_returns",
                self.second_dispatch_returns,
            ),
            (
                "routing.second_dispatch_reworks",
                self.second_dispatch_reworks,
            ),
        ] {
            if n > 10 {
                return Err(invalid(key, n, "0 (never) to 10"));
            }
        }
        Ok(())
    }
}
