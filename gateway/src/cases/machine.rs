//! The case state machine.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use streetgate_protocols::{AlarmKind, DeviceId, DeviceKind};

use super::incident::{Incident, severity};
use crate::model::{CaseSource, CaseState, CaseType, Condition, GridCode, Subject, UnixMs};

/// Time limits and windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CasePolicy {
    /// Handling time limit per case type, minutes (docs/domain.md).
    pub limits_min: BTreeMap<CaseType, i64>,
    /// Limit for urgent cases of any type, minutes.
    pub urgent_limit_min: i64,
    /// Condition must stay clear this long after `resolved` before the case verifies, ms.
    pub verify_window_ms: i64,
    /// A recurrence this soon after closure reopens the case as rework, ms.
    pub reopen_window_ms: i64,
}

impl Default for CasePolicy {
    fn default() -> Self {
        use CaseType as T;
        let limits = [
            (T::LampFault, 24 * 60),
            (T::LampSafety, 60),
            (T::ManholeCover, 6 * 60),
            (T::ManholeWater, 6 * 60),
            (T::BinFull, 4 * 60),
            (T::BinOverflow, 4 * 60),
            (T::BinFire, 60),
            (T::ToiletOdour, 4 * 60),
            (T::DeviceOffline, 24 * 60),
            (T::LowBattery, 7 * 24 * 60),
            (T::Other, 24 * 60),
        ];
        Self {
            limits_min: limits.into_iter().collect(),
            urgent_limit_min: 60,
            verify_window_ms: 10 * 60 * 1000,
            reopen_window_ms: 24 * 3600 * 1000,
        }
    }
}

impl CasePolicy {
    /// Due time of a case opened at `opened_ms`.
    pub fn due(&self, case_type: CaseType, urgent: bool, opened_ms: UnixMs) -> UnixMs {
        let normal = self.limits_min.get(&case_type).copied().unwrap_or(24 * 60);
        let minutes = if urgent {
            normal.min(self.urgent_limit_min)
        } else {
            normal
        };
        opened_ms + minutes * 60_000
    }
}

/// The case type of a condition on a device kind.
pub fn case_type_for(condition: Condition, kind: Option<DeviceKind>) -> CaseType {
    use AlarmKind as A;
    match condition {
        Condition::SegmentDark => CaseType::LampFault,
        Condition::Offline => CaseType::DeviceOffline,
        Condition::Alarm(a) => match a {
            A::LampFailure | A::DayBurner | A::RelayFailure | A::SupplyLoss | A::Cycling => {
                CaseType::LampFault
            }
            A::Leakage | A::DoorOpen => CaseType::LampSafety,
            A::CoverTilted | A::CoverOpen => CaseType::ManholeCover,
            A::WaterHigh => CaseType::ManholeWater,
            A::BinFull => CaseType::BinFull,
            A::BinOverflow | A::BinTipped => CaseType::BinOverflow,
            A::FireRisk => CaseType::BinFire,
            A::OdourNh3 | A::OdourH2s => CaseType::ToiletOdour,
            A::LowBattery if kind == Some(DeviceKind::Streetlight) => CaseType::LampFault,
            A::LowBattery => CaseType::LowBattery,
        },
    }
}

/// Routing table: (grid, case type) → team, with `*` as the any-grid fallback, and the
/// alternative team of a route for the second dispatch (二次派遣).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Router {
    /// Routes: grid code (or `*`) → case type → team.
    pub routes: BTreeMap<String, BTreeMap<CaseType, String>>,
    /// Alternative teams: grid code (or `*`) → case type → team.
    #[serde(default)]
    pub alternatives: BTreeMap<String, BTreeMap<CaseType, String>>,
    /// A case handed back this many times goes to the alternative team (0: never).
    #[serde(default)]
    pub second_dispatch_returns: u32,
    /// A case failing verification (rework, or a recurrence) this many times goes to the
    /// alternative team (0: never).
    #[serde(default)]
    pub second_dispatch_reworks: u32,
}

impl Router {
    /// The team for a case, most specific route first.
    pub fn route(&self, grid: &str, case_type: CaseType) -> Option<&str> {
        [grid, "*"]
            .iter()
            .find_map(|g| self.routes.get(*g).and_then(|r| r.get(&case_type)))
            .map(String::as_str)
    }

    /// The alternative team of a route, most specific route first.
    pub fn alternative(&self, grid: &str, case_type: CaseType) -> Option<&str> {
        [grid, "*"]
            .iter()
            .find_map(|g| self.alternatives.get(*g).and_then(|r| r.get(&case_type)))
            .map(String::as_str)
    }

    /// Whether the action just made on `case` calls for the second dispatch (二次派遣): the
    /// case was returned (退单) for the `second_dispatch_returns`-th time, or failed
    /// verification (返工) for the `second_dispatch_reworks`-th time, and its route has an
    /// alternative team other than the current one. Returns the team and why.
    pub fn second_dispatch(&self, case: &Case, after: ActionKind) -> Option<(String, String)> {
        let why = match after {
            ActionKind::Return
                if self.second_dispatch_returns > 0
                    && case.returned_count == self.second_dispatch_returns =>
            {
                format!("returned {} times", case.returned_count)
            }
            ActionKind::Rework | ActionKind::Reopen
                if self.second_dispatch_reworks > 0
                    && case.rework_count == self.second_dispatch_reworks =>
            {
                format!("failed verification {} times (rework)", case.rework_count)
            }
            _ => return None,
        };
        let team = self.alternative(&case.grid, case.case_type)?;
        (case.team.as_deref() != Some(team)).then(|| (team.to_owned(), why))
    }

    /// Default teams by trade (照明 lighting, 市政 municipal, 环卫 sanitation, 设施 facilities).
    pub fn default_teams() -> Self {
        use CaseType as T;
        let teams = [
            (T::LampFault, "lighting"),
            (T::LampSafety, "lighting"),
            (T::ManholeCover, "municipal"),
            (T::ManholeWater, "municipal"),
            (T::BinFull, "sanitation"),
            (T::BinOverflow, "sanitation"),
            (T::BinFire, "sanitation"),
            (T::ToiletOdour, "sanitation"),
            (T::DeviceOffline, "facilities"),
            (T::LowBattery, "facilities"),
            (T::Other, "grid-chief"),
        ];
        let all = teams.into_iter().map(|(t, n)| (t, n.to_owned())).collect();
        Self {
            routes: BTreeMap::from([("*".to_owned(), all)]),
            alternatives: BTreeMap::new(),
            second_dispatch_returns: 2,
            second_dispatch_reworks: 2,
        }
    }
}

/// What someone (or the system) does to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CaseAction {
    /// 派遣: route to a team.
    Dispatch {
        /// The team.
        team: String,
    },
    /// The team takes it on.
    Accept,
    /// 退单: the team hands it back.
    Return {
        /// Why (required).
        reason: String,
    },
    /// 反馈: the team reports it fixed.
    Resolve {
        /// What was done.
        #[serde(default)]
        note: String,
    },
    /// 核查 passed.
    Verify {
        /// How it was verified.
        #[serde(default)]
        note: String,
    },
    /// 核查 failed: back to the team as rework (返工).
    Rework {
        /// What is still wrong.
        #[serde(default)]
        note: String,
    },
    /// 结案.
    Close,
    /// 作废: duplicate or out of scope.
    Void {
        /// Why (required).
        reason: String,
    },
    /// Recurrence soon after closure: back to the team as rework.
    Reopen {
        /// What recurred.
        #[serde(default)]
        note: String,
    },
    /// 到场: the crew of an accepted case reports on site (once per acceptance).
    OnSite {
        /// Remark.
        #[serde(default)]
        note: String,
    },
    /// 督办: the case is raised to its next supervision level (state unchanged).
    Supervise {
        /// Why (required).
        #[serde(default)]
        note: String,
    },
}

/// The kind of an action, for error messages and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// See [`CaseAction::Dispatch`].
    Dispatch,
    /// See [`CaseAction::Accept`].
    Accept,
    /// See [`CaseAction::Return`].
    Return,
    /// See [`CaseAction::Resolve`].
    Resolve,
    /// See [`CaseAction::Verify`].
    Verify,
    /// See [`CaseAction::Rework`].
    Rework,
    /// See [`CaseAction::Close`].
    Close,
    /// See [`CaseAction::Void`].
    Void,
    /// See [`CaseAction::Reopen`].
    Reopen,
    /// See [`CaseAction::OnSite`].
    OnSite,
    /// See [`CaseAction::Supervise`].
    Supervise,
}

impl ActionKind {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::Accept => "accept",
            Self::Return => "return",
            Self::Resolve => "resolve",
            Self::Verify => "verify",
            Self::Rework => "rework",
            Self::Close => "close",
            Self::Void => "void",
            Self::Reopen => "reopen",
            Self::OnSite => "on_site",
            Self::Supervise => "supervise",
        }
    }

    /// Actions allowed from a state.
    pub const fn allowed(state: CaseState) -> &'static [ActionKind] {
        use ActionKind as A;
        match state {
            CaseState::Registered => &[A::Dispatch, A::Void, A::Supervise],
            CaseState::Dispatched => &[A::Accept, A::Return, A::Void, A::Supervise],
            CaseState::Accepted => &[A::Resolve, A::Return, A::OnSite, A::Supervise],
            CaseState::Returned => &[A::Dispatch, A::Void, A::Supervise],
            CaseState::Resolved => &[A::Verify, A::Rework],
            CaseState::Verified => &[A::Close, A::Rework],
            CaseState::Closed => &[A::Reopen],
            CaseState::Voided => &[],
        }
    }
}

impl CaseAction {
    /// Its kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Dispatch { .. } => ActionKind::Dispatch,
            Self::Accept => ActionKind::Accept,
            Self::Return { .. } => ActionKind::Return,
            Self::Resolve { .. } => ActionKind::Resolve,
            Self::Verify { .. } => ActionKind::Verify,
            Self::Rework { .. } => ActionKind::Rework,
            Self::Close => ActionKind::Close,
            Self::Void { .. } => ActionKind::Void,
            Self::Reopen { .. } => ActionKind::Reopen,
            Self::OnSite { .. } => ActionKind::OnSite,
            Self::Supervise { .. } => ActionKind::Supervise,
        }
    }
}

/// A refused action, naming what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionError {
    /// State the case is in.
    pub state: CaseState,
    /// What was attempted.
    pub attempted: ActionKind,
    /// Why, beyond the state (a missing reason).
    pub problem: Option<&'static str>,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.problem {
            return write!(f, "{}: {p}", self.attempted.as_str());
        }
        let allowed: Vec<&str> = ActionKind::allowed(self.state)
            .iter()
            .map(|a| a.as_str())
            .collect();
        write!(
            f,
            "cannot {} a case that is {:?}; allowed: {}",
            self.attempted.as_str(),
            self.state,
            if allowed.is_empty() {
                "none (terminal)".to_owned()
            } else {
                allowed.join(", ")
            }
        )
    }
}

impl std::error::Error for TransitionError {}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// What happened: an [`ActionKind`] name (`dispatch`, `accept`...), `register`,
    /// `update` (the incident changed, state unchanged) or `self_recover`.
    pub action: String,
    /// Who: a user name, a team, or `system`.
    pub actor: String,
    /// When.
    pub at_ms: UnixMs,
    /// From (none for registration).
    pub from: Option<CaseState>,
    /// To.
    pub to: CaseState,
    /// Note or reason.
    pub note: String,
}

/// A case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Store id (0 before it is stored).
    pub id: i64,
    /// Type.
    pub case_type: CaseType,
    /// Sensor, patrol or hotline.
    pub source: CaseSource,
    /// Device or segment.
    pub subject: Subject,
    /// Condition key for sensor cases.
    pub condition: Option<Condition>,
    /// Grid.
    pub grid: GridCode,
    /// Team it is dispatched to.
    pub team: Option<String>,
    /// State.
    pub state: CaseState,
    /// Urgent (dispatch by phone at once, short limit).
    pub urgent: bool,
    /// Devices involved (the dark lamps of a segment case).
    pub devices: Vec<DeviceId>,
    /// What it is about.
    pub detail: String,
    /// Registered at.
    pub opened_ms: UnixMs,
    /// Handling time limit.
    pub due_ms: UnixMs,
    /// Last change.
    pub updated_ms: UnixMs,
    /// Closed at.
    pub closed_ms: Option<UnixMs>,
    /// Whether the sensor condition is still active (sensor cases).
    pub condition_active: bool,
    /// Cleared after resolution at: verifies once the verify window has passed.
    pub clear_since_ms: Option<UnixMs>,
    /// Verification failures and recurrences.
    pub rework_count: u32,
    /// Times handed back.
    pub returned_count: u32,
    /// Highest supervision (督办) level reached; only ever goes up.
    pub supervision_level: u32,
    /// An urgent accepted case's crew must report on site by then (cleared when it does, or
    /// when the lateness has been escalated).
    pub on_site_due_ms: Option<UnixMs>,
    /// The crew reported on site (since the last acceptance) at.
    pub on_site_ms: Option<UnixMs>,
    /// Every transition.
    pub history: Vec<Transition>,
}

impl Case {
    /// A newly registered case.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        case_type: CaseType,
        source: CaseSource,
        subject: Subject,
        condition: Option<Condition>,
        grid: GridCode,
        urgent: bool,
        devices: Vec<DeviceId>,
        detail: String,
        policy: &CasePolicy,
        actor: &str,
        now: UnixMs,
    ) -> Self {
        Self {
            id: 0,
            case_type,
            source,
            subject,
            condition,
            grid,
            team: None,
            state: CaseState::Registered,
            urgent,
            devices,
            detail: detail.clone(),
            opened_ms: now,
            due_ms: policy.due(case_type, urgent, now),
            updated_ms: now,
            closed_ms: None,
            condition_active: condition.is_some(),
            clear_since_ms: None,
            rework_count: 0,
            returned_count: 0,
            supervision_level: 0,
            on_site_due_ms: None,
            on_site_ms: None,
            history: vec![Transition {
                action: "register".into(),
                actor: actor.to_owned(),
                at_ms: now,
                from: None,
                to: CaseState::Registered,
                note: detail,
            }],
        }
    }

    /// Open (not closed or voided).
    pub fn is_open(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Past its time limit and not yet resolved.
    pub fn is_overdue(&self, now: UnixMs) -> bool {
        matches!(
            self.state,
            CaseState::Registered
                | CaseState::Dispatched
                | CaseState::Accepted
                | CaseState::Returned
        ) && now > self.due_ms
    }

    /// Apply an action; refused actions leave the case unchanged.
    pub fn apply(
        &mut self,
        action: CaseAction,
        actor: &str,
        now: UnixMs,
    ) -> Result<Transition, TransitionError> {
        let kind = action.kind();
        if !ActionKind::allowed(self.state).contains(&kind) {
            return Err(TransitionError {
                state: self.state,
                attempted: kind,
                problem: None,
            });
        }
        let refuse = |problem| {
            Err(TransitionError {
                state: self.state,
                attempted: kind,
                problem: Some(problem),
            })
        };
        let (to, note) = match action {
            CaseAction::Dispatch { team } => {
                if team.trim().is_empty() {
                    return refuse("a team is required");
                }
                let note = format!("to {team}");
                self.team = Some(team);
                (CaseState::Dispatched, note)
            }
            CaseAction::Accept => {
                self.on_site_ms = None;
                (CaseState::Accepted, String::new())
            }
            CaseAction::Return { reason } => {
                if reason.trim().is_empty() {
                    return refuse("a reason is required");
                }
                self.returned_count += 1;
                (CaseState::Returned, reason)
            }
            CaseAction::Resolve { note } => {
                self.clear_since_ms = (!self.condition_active).then_some(now);
                (CaseState::Resolved, note)
            }
            CaseAction::Verify { note } => (CaseState::Verified, note),
            CaseAction::Rework { note } => {
                self.rework_count += 1;
                self.clear_since_ms = None;
                (CaseState::Dispatched, note)
            }
            CaseAction::Close => {
                self.closed_ms = Some(now);
                (CaseState::Closed, String::new())
            }
            CaseAction::Void { reason } => {
                if reason.trim().is_empty() {
                    return refuse("a reason is required");
                }
                self.closed_ms = Some(now);
                (CaseState::Voided, reason)
            }
            CaseAction::Reopen { note } => {
                self.rework_count += 1;
                self.closed_ms = None;
                self.clear_since_ms = None;
                self.condition_active = true;
                (CaseState::Dispatched, note)
            }
            CaseAction::OnSite { note } => {
                if self.on_site_ms.is_some() {
                    return refuse("the crew already reported on site since the case was accepted");
                }
                self.on_site_ms = Some(now);
                self.on_site_due_ms = None;
                (self.state, note)
            }
            CaseAction::Supervise { note } => {
                if note.trim().is_empty() {
                    return refuse("a note is required");
                }
                self.supervision_level = self.supervision_level.saturating_add(1);
                (self.state, note)
            }
        };
        if to != CaseState::Accepted {
            self.on_site_due_ms = None;
        }
        let t = Transition {
            action: kind.as_str().into(),
            actor: actor.to_owned(),
            at_ms: now,
            from: Some(self.state),
            to,
            note,
        };
        self.state = to;
        self.updated_ms = now;
        self.history.push(t.clone());
        Ok(t)
    }

    /// Supervision as time passes (督办): an urgent accepted case whose crew is not on site by
    /// its on-site time limit, or an overdue case whose next level's time has come, climbs one
    /// level, recorded as a `supervise` entry by `system`. Each level is reached once: the level
    /// only goes up, and one tick climbs at most one level.
    pub fn supervise_tick(
        &mut self,
        plan: &super::SupervisionConfig,
        now: UnixMs,
    ) -> Option<Transition> {
        use super::supervision::{duration_text, note};
        let (n, spec) = plan.next(self.supervision_level)?;
        let on_site_late = self.state == CaseState::Accepted
            && self.on_site_ms.is_none()
            && self.on_site_due_ms.is_some_and(|due| now > due);
        let reason = if on_site_late {
            format!(
                "not on site within the on-site time limit of {} min",
                plan.on_site_min(self.case_type)
            )
        } else if self.is_overdue(now) && plan.due_level(self.due_ms, now) >= n {
            format!("overdue by {}", duration_text(now - self.due_ms))
        } else {
            return None;
        };
        let action = CaseAction::Supervise {
            note: note(n, spec, &reason),
        };
        let t = self.apply(action, "system", now).ok()?;
        // The lateness on site is escalated once per acceptance.
        self.on_site_due_ms = None;
        Some(t)
    }

    /// 二次派遣: send a case that was handed back, or sent back as rework, to another team.
    /// Recorded as a `dispatch` whose note says it is the second dispatch and why.
    pub fn second_dispatch(
        &mut self,
        team: String,
        why: &str,
        now: UnixMs,
    ) -> Result<Transition, TransitionError> {
        if !matches!(self.state, CaseState::Returned | CaseState::Dispatched) {
            return Err(TransitionError {
                state: self.state,
                attempted: ActionKind::Dispatch,
                problem: Some("a second dispatch is made when a case is returned or reworked"),
            });
        }
        if team.trim().is_empty() {
            return Err(TransitionError {
                state: self.state,
                attempted: ActionKind::Dispatch,
                problem: Some("a team is required"),
            });
        }
        let note = format!(
            "{} (二次派遣) to {team}, from {}: {why}",
            super::supervision::SECOND_DISPATCH,
            self.team.as_deref().unwrap_or("no team")
        );
        let t = Transition {
            action: ActionKind::Dispatch.as_str().into(),
            actor: "system".into(),
            at_ms: now,
            from: Some(self.state),
            to: CaseState::Dispatched,
            note,
        };
        self.team = Some(team);
        self.state = CaseState::Dispatched;
        self.on_site_due_ms = None;
        self.updated_ms = now;
        self.history.push(t.clone());
        Ok(t)
    }

    /// Time passes for a sensor case: a resolved case whose condition has stayed clear for the
    /// verify window is verified and closed by the sensor; one whose condition is still present
    /// a verify window after the team resolved it goes back to the team as rework. Returns the
    /// transitions made.
    pub fn on_tick(&mut self, policy: &CasePolicy, now: UnixMs) -> Vec<Transition> {
        let mut done = Vec::new();
        if self.state == CaseState::Resolved
            && !self.condition_active
            && self
                .clear_since_ms
                .is_some_and(|t| now - t >= policy.verify_window_ms)
        {
            let note = "sensor confirms recovery".to_owned();
            if let Ok(t) = self.apply(CaseAction::Verify { note }, "system", now) {
                done.push(t);
            }
            if let Ok(t) = self.apply(CaseAction::Close, "system", now) {
                done.push(t);
            }
        } else if self.state == CaseState::Resolved
            && self.source == CaseSource::Sensor
            && self.condition_active
            && now - self.updated_ms >= policy.verify_window_ms
        {
            // 核查 failed: reported fixed, but the sensor still shows the condition (返工).
            let note = "verification failed: the sensor still shows the condition".to_owned();
            if let Ok(t) = self.apply(CaseAction::Rework { note }, "system", now) {
                done.push(t);
            }
        }
        done
    }

    /// The open case's incident changed (devices, urgency, what is going on). The type only
    /// ever goes up: a `bin_full` case whose bin then overflows becomes `bin_overflow` (it is
    /// counted under the worst it got, and an overflow that arrives a moment after the "full"
    /// alarm is an overflow case), and a `bin_overflow` case stays `bin_overflow` when the bin
    /// is merely full again. Urgency is kept the same way: a case dispatched as urgent (a cover
    /// that was open) stays urgent while the rest of its condition lasts (the cover put back but
    /// still tilted), and its shortened time limit stands. Every escalation, and every easing of
    /// the condition below what the case stands for, is an event in the case's history (state
    /// unchanged); turning urgent shortens the time limit.
    pub fn update_from(
        &mut self,
        incident: &Incident,
        policy: &CasePolicy,
        now: UnixMs,
    ) -> Option<Transition> {
        let was = self.case_type;
        let upgraded = severity(incident.case_type) > severity(was);
        let escalated = upgraded || (incident.urgent && !self.urgent);
        // Noted once per easing: not again while the last change noted is an easing.
        let already_eased = self
            .history
            .iter()
            .rev()
            .find_map(|t| {
                if t.note.starts_with("de-escalated") {
                    Some(true)
                } else if t.note.starts_with("escalated") {
                    Some(false)
                } else {
                    None
                }
            })
            .unwrap_or(false);
        let eased = !escalated
            && !already_eased
            && (self.urgent && !incident.urgent
                || severity(incident.case_type) < severity(self.case_type));
        if upgraded {
            self.case_type = incident.case_type;
        }
        let note = if upgraded {
            Some(format!(
                "escalated: {} → {}: {}",
                was.as_str(),
                incident.case_type.as_str(),
                incident.detail
            ))
        } else if escalated {
            Some(format!("escalated: now urgent: {}", incident.detail))
        } else if eased {
            Some(format!(
                "de-escalated: the condition is now {}{} (the case stays {}{}): {}",
                incident.case_type.as_str(),
                if incident.urgent { "" } else { ", not urgent" },
                self.case_type.as_str(),
                if self.urgent { ", urgent" } else { "" },
                incident.detail
            ))
        } else {
            None
        };
        self.devices = incident.devices.clone();
        self.urgent |= incident.urgent;
        self.detail = incident.detail.clone();
        self.due_ms = self
            .due_ms
            .min(policy.due(self.case_type, self.urgent, self.opened_ms));
        self.set_condition(true, now);
        self.updated_ms = now;
        let t = Transition {
            action: "update".into(),
            actor: "system".into(),
            at_ms: now,
            from: Some(self.state),
            to: self.state,
            note: note?,
        };
        self.history.push(t.clone());
        Some(t)
    }

    /// The sensor condition changed.
    pub fn set_condition(&mut self, active: bool, now: UnixMs) {
        self.condition_active = active;
        self.clear_since_ms = if active {
            None
        } else {
            Some(self.clear_since_ms.unwrap_or(now))
        };
    }

    /// Close a case whose condition cleared before anyone accepted it.
    pub fn self_recover(&mut self, now: UnixMs) -> Vec<Transition> {
        self.set_condition(false, now);
        let mut done = Vec::new();
        // Registered → (dispatch is skipped: nobody needs to go) → verified → closed.
        let note =
            "self-recovered: the sensor shows recovery before the case was accepted".to_owned();
        let t = Transition {
            action: "self_recover".into(),
            actor: "system".into(),
            at_ms: now,
            from: Some(self.state),
            to: CaseState::Verified,
            note,
        };
        self.state = CaseState::Verified;
        self.history.push(t.clone());
        done.push(t);
        if let Ok(t) = self.apply(CaseAction::Close, "system", now) {
            done.push(t);
        }
        self.updated_ms = now;
        done
    }
}
