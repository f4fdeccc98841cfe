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

/// Routing table: (grid, case type) → team, with `*` as the any-grid fallback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Router {
    /// Routes: grid code (or `*`) → case type → team.
    pub routes: BTreeMap<String, BTreeMap<CaseType, String>>,
}

impl Router {
    /// The team for a case, most specific route first.
    pub fn route(&self, grid: &str, case_type: CaseType) -> Option<&str> {
        [grid, "*"]
            .iter()
            .find_map(|g| self.routes.get(*g).and_then(|r| r.get(&case_type)))
            .map(String::as_str)
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
        }
    }

    /// Actions allowed from a state.
    pub const fn allowed(state: CaseState) -> &'static [ActionKind] {
        use ActionKind as A;
        match state {
            CaseState::Registered => &[A::Dispatch, A::Void],
            CaseState::Dispatched => &[A::Accept, A::Return, A::Void],
            CaseState::Accepted => &[A::Resolve, A::Return],
            CaseState::Returned => &[A::Dispatch, A::Void],
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
            history: vec![Transition {
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
            CaseAction::Accept => (CaseState::Accepted, String::new()),
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
        };
        let t = Transition {
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
