//! Which case events a sink gets, and when: filters (teams, grids, case types, urgent only,
//! supervision levels, actions), the recipient role of supervision events, quiet hours, and
//! the suppression of repeated supervision notices. Pure code; the sink task
//! ([`super::run_sink`]) applies it.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cases::Recipient;
use crate::cases::supervision::parse_note;
use crate::model::{CaseType, UnixMs};
use crate::settings::{Checked, invalid};
use crate::store::CaseEvent;

/// History actions a filter may name.
pub const ACTIONS: &[&str] = &[
    "register",
    "dispatch",
    "accept",
    "on_site",
    "return",
    "resolve",
    "verify",
    "rework",
    "close",
    "void",
    "reopen",
    "supervise",
    "update",
    "self_recover",
];

/// Which events a sink gets. Every list left empty lets everything through; the filters set
/// must all pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkFilter {
    /// Only cases dispatched to these teams.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Only cases in these grids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grids: Vec<String>,
    /// Only cases of these types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub case_types: Vec<CaseType>,
    /// Only urgent cases.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub urgent_only: bool,
    /// Supervision (督办) events only at these levels (other events are not affected: add
    /// `actions = ["supervise"]` for a sink that gets escalations only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<u32>,
    /// Only these history actions (`dispatch`, `on_site`, `supervise`...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

impl SinkFilter {
    /// Nothing set: every event passes.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Does the event pass?
    pub fn passes(&self, event: &CaseEvent) -> bool {
        let c = &event.case;
        let listed = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        listed(&self.teams, c.team.as_deref())
            && listed(&self.grids, Some(c.grid.as_str()))
            && (self.case_types.is_empty() || self.case_types.contains(&c.case_type))
            && (!self.urgent_only || c.urgent)
            && listed(&self.actions, Some(event.entry.action.as_str()))
            && (self.levels.is_empty()
                || event.entry.action != "supervise"
                || supervision_level(event).is_some_and(|l| self.levels.contains(&l)))
    }

    /// Check the filter, `key` naming it in errors.
    pub fn validate(&self, key: &str) -> Checked {
        if let Some(a) = self.actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(invalid(
                format!("{key}.actions"),
                format!("\"{a}\""),
                format!("history actions: {}", ACTIONS.join(", ")),
            ));
        }
        if let Some(l) = self
            .levels
            .iter()
            .find(|l| **l == 0 || **l as usize > crate::cases::supervision::MAX_LEVELS)
        {
            return Err(invalid(
                format!("{key}.levels"),
                l,
                format!(
                    "supervision levels 1 to {}",
                    crate::cases::supervision::MAX_LEVELS
                ),
            ));
        }
        for (field, list) in [("teams", &self.teams), ("grids", &self.grids)] {
            if list.iter().any(|t| t.trim().is_empty()) {
                return Err(invalid(
                    format!("{key}.{field}"),
                    format!("{list:?}"),
                    "names, none empty",
                ));
            }
        }
        Ok(())
    }
}

/// The level a `supervise` event raised its case to.
pub fn supervision_level(event: &CaseEvent) -> Option<u32> {
    (event.entry.action == "supervise")
        .then(|| parse_note(&event.entry.note))
        .flatten()
        .map(|n| n.level)
}

/// Does a sink reaching `recipient` get this event? Supervision events go to the sinks whose
/// role the level tells; a sink without a role gets them all; other events are not affected.
pub fn reaches(recipient: Option<Recipient>, event: &CaseEvent) -> bool {
    match (recipient, event.entry.action.as_str()) {
        (Some(r), "supervise") => {
            parse_note(&event.entry.note).is_none_or(|n| n.recipients.contains(&r))
        }
        _ => true,
    }
}

/// Quiet hours, `HH:MM-HH:MM` in the city's time; the end may be before the start (overnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuietHours {
    /// Start, minutes after local midnight.
    pub start_min: u32,
    /// End (exclusive), minutes after local midnight.
    pub end_min: u32,
}

impl TryFrom<String> for QuietHours {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let wrong = || format!("{s:?}: expected quiet hours as \"HH:MM-HH:MM\" (\"22:00-07:00\")");
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(wrong)?;
        let (start_min, end_min) = (hm(a).ok_or_else(wrong)?, hm(b).ok_or_else(wrong)?);
        if start_min == end_min {
            return Err(format!(
                "{s:?}: quiet hours must not start and end at the same time"
            ));
        }
        Ok(Self { start_min, end_min })
    }
}

impl From<QuietHours> for String {
    fn from(q: QuietHours) -> Self {
        q.to_string()
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        )
    }
}

impl QuietHours {
    /// Is `now` (Unix ms) within the quiet hours, at `offset_min` from UTC?
    pub fn contains(&self, now: UnixMs, offset_min: i32) -> bool {
        let local = now.div_euclid(60_000) + i64::from(offset_min);
        let m = u32::try_from(local.rem_euclid(24 * 60)).unwrap_or(0);
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&m)
        } else {
            m >= self.start_min || m < self.end_min
        }
    }
}

/// Repeat suppression: one supervision notice per case and level per sink, however often the
/// event is read (a restart re-reads events held in quiet hours).
#[derive(Debug, Default)]
pub struct Suppression {
    /// Case → highest level notified.
    notified: HashMap<i64, u32>,
}

impl Suppression {
    /// Whether the event is a supervision notice already sent (for this case, this level or a
    /// higher one); otherwise it is noted as sent.
    pub fn repeated(&mut self, event: &CaseEvent) -> bool {
        let Some(level) = supervision_level(event) else {
            return false;
        };
        let seen = self.notified.entry(event.case.id).or_insert(0);
        if level <= *seen {
            return true;
        }
        *seen = level;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::SupervisionConfig;
    use crate::cases::supervision::note;
    use crate::model::{CaseSource, CaseState};
    use crate::store::{CaseHistoryEntry, CaseRecord};

    fn event(id: i64, action: &str, note: &str, team: &str, urgent: bool) -> CaseEvent {
        CaseEvent {
            event_id: id,
            entry: CaseHistoryEntry {
                action: action.into(),
                at_ms: 0,
                actor: "system".into(),
                from: Some(CaseState::Dispatched),
                to: CaseState::Dispatched,
                note: note.into(),
            },
            case: CaseRecord {
                id: 7,
                case_type: CaseType::ManholeCover,
                source: CaseSource::Sensor,
                subject_key: "device:MH-1".into(),
                condition_key: None,
                grid: "G1".into(),
                team: Some(team.into()),
                state: CaseState::Dispatched,
                urgent,
                devices: Vec::new(),
                detail: String::new(),
                opened_ms: 0,
                due_ms: None,
                updated_ms: 0,
                closed_ms: None,
                condition_active: true,
                clear_since_ms: None,
                rework_count: 0,
                returned_count: 0,
                supervision_level: 0,
                on_site_due_ms: None,
                on_site_ms: None,
            },
        }
    }

    #[test]
    fn filters_combine_and_empty_passes_all() {
        let plan = SupervisionConfig::default();
        let l2 = note(2, plan.level(2).unwrap(), "overdue by 2 h");
        let dispatch = event(1, "dispatch", "to municipal", "municipal", false);
        let supervise = event(2, "supervise", &l2, "municipal", false);
        assert!(SinkFilter::default().passes(&dispatch));
        let team = SinkFilter {
            teams: vec!["lighting".into()],
            ..SinkFilter::default()
        };
        assert!(!team.passes(&dispatch));
        let urgent = SinkFilter {
            urgent_only: true,
            ..SinkFilter::default()
        };
        assert!(!urgent.passes(&dispatch));
        assert!(urgent.passes(&event(1, "dispatch", "", "municipal", true)));
        let level3 = SinkFilter {
            levels: vec![3],
            actions: vec!["supervise".into()],
            ..SinkFilter::default()
        };
        assert!(!level3.passes(&supervise));
        assert!(!level3.passes(&dispatch));
        let level2 = SinkFilter {
            levels: vec![2],
            ..SinkFilter::default()
        };
        assert!(level2.passes(&supervise) && level2.passes(&dispatch));
        // Level 2 tells the team and the supervisor, not the centre.
        assert!(reaches(Some(Recipient::Supervisor), &supervise));
        assert!(!reaches(Some(Recipient::Centre), &supervise));
        assert!(reaches(Some(Recipient::Centre), &dispatch));
        assert!(reaches(None, &supervise));
    }

    #[test]
    fn filter_errors_name_the_key() {
        let bad = SinkFilter {
            actions: vec!["explode".into()],
            ..SinkFilter::default()
        };
        let e = bad.validate("alerts.webhooks[0].filter").unwrap_err();
        assert_eq!(e.key, "alerts.webhooks[0].filter.actions");
        let bad = SinkFilter {
            levels: vec![0],
            ..SinkFilter::default()
        };
        assert_eq!(
            bad.validate("alerts.mqtt_filter").unwrap_err().key,
            "alerts.mqtt_filter.levels"
        );
    }

    #[test]
    fn quiet_hours_overnight_in_city_time() {
        let q = QuietHours::try_from("22:00-07:00".to_owned()).unwrap();
        assert_eq!(q.to_string(), "22:00-07:00");
        let utc = |h: i64, m: i64| (h * 60 + m) * 60_000;
        // 14:30 UTC is 22:30 in China: quiet; 23:00 UTC is 07:00: not.
        assert!(q.contains(utc(14, 30), 480));
        assert!(q.contains(utc(22, 59), 480));
        assert!(!q.contains(utc(23, 0), 480));
        assert!(!q.contains(utc(4, 0), 480));
        let day = QuietHours::try_from("12:00-13:30".to_owned()).unwrap();
        assert!(day.contains(utc(12, 0), 0) && !day.contains(utc(13, 30), 0));
        for bad in ["22-07", "25:00-07:00", "22:00-22:00", "22:00", "7:00-08:00"] {
            assert!(QuietHours::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_notice_per_case_and_level() {
        let plan = SupervisionConfig::default();
        let l1 = note(1, plan.level(1).unwrap(), "overdue by 1 min");
        let l2 = note(2, plan.level(2).unwrap(), "overdue by 2 h");
        let mut s = Suppression::default();
        assert!(!s.repeated(&event(1, "supervise", &l1, "t", false)));
        assert!(s.repeated(&event(1, "supervise", &l1, "t", false)));
        assert!(!s.repeated(&event(2, "dispatch", "", "t", false)));
        assert!(!s.repeated(&event(3, "supervise", &l2, "t", false)));
        assert!(s.repeated(&event(4, "supervise", &l1, "t", false)));
    }
}
