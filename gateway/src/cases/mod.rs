//! Cases (案件): the state machine teams work, and how sensor conditions become cases.
//!
//! Pure code. [`Case::apply`] is the state machine; [`Incidents`] turns condition edges into
//! incidents (lamp faults of one road segment become one segment incident listing its dark
//! lamps; a cover that is tilted and then open is one incident that turns urgent); [`decide`]
//! says what an incident edge does to the case for its key: register, nothing (already open:
//! no alert storm), close as self-recovered, start verification, or reopen as rework.

mod config;
mod incident;
mod machine;
pub mod service;
pub mod supervision;

pub use config::{CasesConfig, RoutingConfig};
pub use incident::{Incident, Incidents};
pub use machine::{
    ActionKind, Case, CaseAction, CasePolicy, Router, Transition, TransitionError, case_type_for,
};
pub use service::{CaseService, Opened};
pub use supervision::{Recipient, SupervisionConfig, SupervisionForm, SupervisionLevel};

use crate::model::{CaseState, UnixMs};

/// What an incident edge does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Register (and dispatch) a new case.
    Register(Incident),
    /// Refresh the open case (devices, urgency, detail) without a transition.
    Update(Incident),
    /// The condition cleared before anyone accepted the case: close it as self-recovered.
    SelfRecovered,
    /// The condition cleared after the team resolved it: verify after the verify window.
    StartVerification,
    /// The condition cleared while the team works on it: note it, the team still resolves.
    NoteRecovery,
    /// The condition came back soon after closure: reopen the closed case as rework.
    Reopen(Incident),
    /// Nothing to do.
    Nothing,
}

/// Decide what an incident edge does, given the open case for its key and the most recently
/// closed one.
pub fn decide(
    incident: &Incident,
    open: Option<&Case>,
    last_closed: Option<&Case>,
    policy: &CasePolicy,
    now: UnixMs,
) -> Decision {
    match (incident.active, open) {
        (true, Some(_)) => Decision::Update(incident.clone()),
        (true, None) => match last_closed {
            Some(c)
                if c.state == CaseState::Closed
                    && c.closed_ms
                        .is_some_and(|t| now - t <= policy.reopen_window_ms) =>
            {
                Decision::Reopen(incident.clone())
            }
            _ => Decision::Register(incident.clone()),
        },
        (false, Some(case)) => match case.state {
            CaseState::Registered | CaseState::Dispatched | CaseState::Returned => {
                Decision::SelfRecovered
            }
            CaseState::Resolved => Decision::StartVerification,
            CaseState::Accepted => Decision::NoteRecovery,
            CaseState::Verified | CaseState::Closed | CaseState::Voided => Decision::Nothing,
        },
        (false, None) => Decision::Nothing,
    }
}

#[cfg(test)]
mod tests;
