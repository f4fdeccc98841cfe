//! Supervision (督办) of late cases, and the on-site (到场) time limits of urgent ones.
//!
//! Pure code. `[supervision]` lists the escalation levels: each comes a time after the case's
//! handling deadline (`due`), takes a form (a phone call, a written notice, a visit on site) and
//! tells some people (the team, its supervisor, the operations centre). The automation's tick
//! raises an overdue open case to the next level whose time has come, one level at a time and
//! each level once (the level is stored with the case and only ever goes up). An urgent case
//! whose team accepted it but did not report on site within the on-site time limit of its type
//! climbs one level at once. Every escalation is a `supervise` entry of the case's history whose
//! note says the level, the form and who was told ([`note`]); the alert sinks read them back
//! with [`parse_note`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{CaseType, UnixMs};
use crate::settings::{Checked, invalid};

/// The form a supervision takes (督办方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisionForm {
    /// 电话督办: a phone call to the team.
    Phone,
    /// 书面督办: a written notice (督办单).
    Written,
    /// 现场督办: a supervisor goes on site.
    OnSite,
}

impl SupervisionForm {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Written => "written",
            Self::OnSite => "on_site",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Phone, Self::Written, Self::OnSite]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// Who is told of a supervision; alert sinks declare which of these they reach
/// (`recipient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The team the case is dispatched to.
    Team,
    /// The team's supervisor (its department's head).
    Supervisor,
    /// The operations centre (城运中心).
    Centre,
}

impl Recipient {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Supervisor => "supervisor",
            Self::Centre => "centre",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Team, Self::Supervisor, Self::Centre]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[supervision.levels]]`: one escalation level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionLevel {
    /// Minutes after the case's handling deadline (0: at the deadline).
    pub after_due_min: i64,
    /// How the supervision is made.
    pub form: SupervisionForm,
    /// Who is told.
    pub recipients: Vec<Recipient>,
}

/// `[supervision]`: escalation levels of overdue cases and the on-site time limits of urgent
/// cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// On-site time limit per case type for urgent cases, minutes; only the types listed
    /// change, the others keep their defaults (30 for `manhole_cover`, `bin_fire` and
    /// `lamp_safety`, `on_site_limit_min` for the rest).
    pub on_site_limits_min: BTreeMap<CaseType, i64>,
    /// On-site time limit of urgent cases of the other types, minutes.
    pub on_site_limit_min: i64,
    /// The levels, in order; none: no automatic supervision.
    pub levels: Vec<SupervisionLevel>,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        use Recipient as R;
        Self {
            on_site_limits_min: BTreeMap::new(),
            on_site_limit_min: 60,
            levels: vec![
                SupervisionLevel {
                    after_due_min: 0,
                    form: SupervisionForm::Phone,
                    recipients: vec![R::Team],
                },
                SupervisionLevel {
                    after_due_min: 120,
                    form: SupervisionForm::Written,
                    recipients: vec![R::Team, R::Supervisor],
                },
                SupervisionLevel {
                    after_due_min: 24 * 60,
                    form: SupervisionForm::OnSite,
                    recipients: vec![R::Team, R::Supervisor, R::Centre],
                },
            ],
        }
    }
}

/// Default on-site limits of urgent cases, minutes (docs/domain.md: on site within 30 min for
/// an open cover (Tianjin / Guangzhou cover rules) and in emergencies (Hongkou rules)).
fn default_on_site_min(t: CaseType) -> Option<i64> {
    match t {
        CaseType::ManholeCover | CaseType::BinFire | CaseType::LampSafety => Some(30),
        _ => None,
    }
}

/// Most levels a configuration may list.
pub const MAX_LEVELS: usize = 9;

impl SupervisionConfig {
    /// On-site time limit of an urgent case of type `t`, minutes.
    pub fn on_site_min(&self, t: CaseType) -> i64 {
        self.on_site_limits_min
            .get(&t)
            .copied()
            .or_else(|| default_on_site_min(t))
            .unwrap_or(self.on_site_limit_min)
    }

    /// When the crew of an urgent case of type `t` accepted at `accepted_ms` must be on site.
    pub fn on_site_due(&self, t: CaseType, accepted_ms: UnixMs) -> UnixMs {
        accepted_ms.saturating_add(self.on_site_min(t).saturating_mul(60_000))
    }

    /// Level `n` (1-based).
    pub fn level(&self, n: u32) -> Option<&SupervisionLevel> {
        usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.levels.get(i))
    }

    /// The highest level whose time has come at `now` for a case due at `due_ms` (0: none):
    /// level `n` comes once `now` is past `due_ms` plus its `after_due_min`.
    pub fn due_level(&self, due_ms: UnixMs, now: UnixMs) -> u32 {
        let reached = self
            .levels
            .iter()
            .take_while(|l| now > due_ms.saturating_add(l.after_due_min.saturating_mul(60_000)))
            .count();
        u32::try_from(reached).unwrap_or(u32::MAX)
    }

    /// The next level after `current`, if the configuration has one.
    pub fn next(&self, current: u32) -> Option<(u32, &SupervisionLevel)> {
        let n = current.checked_add(1)?;
        self.level(n).map(|l| (n, l))
    }

    /// Check the section.
    pub fn validate(&self) -> Checked {
        for (t, minutes) in &self.on_site_limits_min {
            if *minutes <= 0 {
                return Err(invalid(
                    format!("supervision.on_site_limits_min.{}", t.as_str()),
                    minutes,
                    "a positive number of minutes",
                ));
            }
        }
        if self.on_site_limit_min <= 0 {
            return Err(invalid(
                "supervision.on_site_limit_min",
                self.on_site_limit_min,
                "a positive number of minutes",
            ));
        }
        if self.levels.len() > MAX_LEVELS {
            return Err(invalid(
                "supervision.levels",
                format!("{} levels", self.levels.len()),
                format!("at most {MAX_LEVELS} levels"),
            ));
        }
        let mut previous: Option<i64> = None;
        for (i, l) in self.levels.iter().enumerate() {
            let key = format!("supervision.levels[{i}]");
            if l.after_due_min < 0 || previous.is_some_and(|p| l.after_due_min <= p) {
                return Err(invalid(
                    format!("{key}.after_due_min"),
                    l.after_due_min,
                    "minutes after the deadline, 0 or more and later than the level before",
                ));
            }
            previous = Some(l.after_due_min);
            let mut seen = l.recipients.clone();
            seen.sort();
            seen.dedup();
            if l.recipients.is_empty() || seen.len() != l.recipients.len() {
                return Err(invalid(
                    format!("{key}.recipients"),
                    format!("{:?}", l.recipients),
                    "one or more of \"team\", \"supervisor\", \"centre\", each once",
                ));
            }
        }
        Ok(())
    }
}

/// What a `supervise` history entry says: the level reached, its form, who was told, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisionNote {
    /// Level reached (1-based).
    pub level: u32,
    /// Its form.
    pub form: SupervisionForm,
    /// Who was told.
    pub recipients: Vec<Recipient>,
    /// Why: how late the case is, or the dispatcher's note.
    pub reason: String,
}

/// The note of a `supervise` history entry: `level 2 (written; told team, supervisor): why`.
pub fn note(level: u32, spec: &SupervisionLevel, reason: &str) -> String {
    let told: Vec<&str> = spec.recipients.iter().map(|r| r.as_str()).collect();
    format!(
        "level {level} ({}; told {}): {reason}",
        spec.form.as_str(),
        told.join(", ")
    )
}

/// Read back a note written by [`note`].
pub fn parse_note(note: &str) -> Option<SupervisionNote> {
    let rest = note.strip_prefix("level ")?;
    let (level, rest) = rest.split_once(" (")?;
    let (inside, reason) = rest.split_once("): ")?;
    let (form, told) = inside.split_once("; told ")?;
    Some(SupervisionNote {
        level: level.parse().ok()?,
        form: SupervisionForm::parse(form)?,
        recipients: told
            .split(", ")
            .map(Recipient::parse)
            .collect::<Option<Vec<_>>>()?,
        reason: reason.to_owned(),
    })
}

/// `2 h 05 min` for a duration in ms (lateness in notes).
pub fn duration_text(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m:02} min"),
    }
}

/// Prefix of the note of a second dispatch (二次派遣).
pub const SECOND_DISPATCH: &str = "second dispatch";
