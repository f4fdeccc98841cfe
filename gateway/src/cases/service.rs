//! The case service: the one place a case's life is written to the store. The automation (cases
//! raised and verified by sensors) and the API (cases reported by patrols and the hotline,
//! transitions made by people) both call it; the pure machine ([`Case`]) decides, the service
//! registers, routes, dispatches, transitions and saves.

use std::sync::Arc;

use streetgate_protocols::DeviceId;

use super::{
    ActionKind, Case, CaseAction, CasePolicy, Router, SupervisionConfig, Transition,
    TransitionError,
};
use crate::model::{CaseState, Subject, UnixMs};
use crate::store::{CaseHistoryEntry, CaseInsert, CaseRecord, Store, StoreError, StoreResult};

/// Actor recorded for automatic transitions (dispatch by the routing table, verification).
pub const SYSTEM: &str = "system";

/// How often a person's transition is tried again when the sensor side of the case changed
/// between reading and writing it.
const ACT_ATTEMPTS: usize = 5;

/// What opening a case did.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// Registered (and dispatched when the routing table names a team); `id` is set.
    Created(Box<Case>),
    /// An open case with the same subject and condition exists: nothing was stored.
    AlreadyOpen(i64),
}

/// Why a transition was not made.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No such case.
    #[error("no case {0}")]
    NotFound(i64),
    /// The stored case cannot be read as a case (unknown subject).
    #[error("case {0} has an unknown subject")]
    Unreadable(i64),
    /// The machine refused the action in the case's state.
    #[error(transparent)]
    Refused(#[from] TransitionError),
    /// Others kept changing the case.
    #[error("case {0} changed while this transition was made; reload it and retry")]
    Changed(i64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers, routes, transitions and saves cases.
#[derive(Debug, Clone)]
pub struct CaseService {
    store: Arc<dyn Store>,
    policy: Arc<CasePolicy>,
    router: Arc<Router>,
    supervision: Arc<SupervisionConfig>,
}

impl CaseService {
    /// A service over `store`, with the time limits, routing table and supervision levels of
    /// the configuration.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<CasePolicy>,
        router: Arc<Router>,
        supervision: Arc<SupervisionConfig>,
    ) -> Self {
        Self {
            store,
            policy,
            router,
            supervision,
        }
    }

    /// The time limits.
    pub fn policy(&self) -> &CasePolicy {
        &self.policy
    }

    /// The supervision levels and on-site time limits.
    pub fn supervision(&self) -> &SupervisionConfig {
        &self.supervision
    }

    /// What follows an action on `case` by itself: the second dispatch (二次派遣) of a case
    /// returned, or reworked, as often as `[routing]` says, to its route's alternative team.
    pub fn follow_up(&self, case: &mut Case, after: ActionKind, now: UnixMs) -> Option<Transition> {
        let (team, why) = self.router.second_dispatch(case, after)?;
        let t = case.second_dispatch(team, &why, now).ok()?;
        tracing::info!(case = case.id, team = ?case.team, %why, "second dispatch");
        Some(t)
    }

    /// The action a person asked for, as the machine applies it: a supervision by hand is
    /// raised to the next configured level, its note naming the level, form and recipients.
    fn prepare(&self, case: &Case, action: CaseAction) -> Result<CaseAction, TransitionError> {
        let CaseAction::Supervise { note } = action else {
            return Ok(action);
        };
        let refuse = |problem| TransitionError {
            state: case.state,
            attempted: ActionKind::Supervise,
            problem: Some(problem),
        };
        if !ActionKind::allowed(case.state).contains(&ActionKind::Supervise) {
            return Err(TransitionError {
                state: case.state,
                attempted: ActionKind::Supervise,
                problem: None,
            });
        }
        if note.trim().is_empty() {
            return Err(refuse("a note is required"));
        }
        let (n, spec) = self
            .supervision
            .next(case.supervision_level)
            .ok_or_else(|| refuse("the case is already at the highest supervision level"))?;
        Ok(CaseAction::Supervise {
            note: super::supervision::note(n, spec, note.trim()),
        })
    }

    /// Store supervision the machine made on `case`, read as `read`; `false` when the case
    /// changed meanwhile (the next tick looks again).
    pub async fn save_from(
        &self,
        case: &Case,
        read: &CaseRecord,
        transitions: &[Transition],
    ) -> StoreResult<bool> {
        let entries: Vec<CaseHistoryEntry> = transitions.iter().map(to_entry).collect();
        self.store
            .update_case_from(&to_record(case), read, &entries)
            .await
    }

    /// Register a case built with [`Case::register`] and dispatch it to the team the routing
    /// table names for its grid and type. Deduplicated by the store: an open case with the
    /// same subject and condition wins.
    pub async fn open(&self, mut case: Case, now: UnixMs) -> StoreResult<Opened> {
        let first = case
            .history
            .first()
            .map(to_entry)
            .unwrap_or(CaseHistoryEntry {
                action: "register".into(),
                at_ms: now,
                actor: SYSTEM.into(),
                from: None,
                to: CaseState::Registered,
                note: case.detail.clone(),
            });
        match self.store.insert_case(&to_record(&case), &first).await? {
            CaseInsert::AlreadyOpen(id) => Ok(Opened::AlreadyOpen(id)),
            CaseInsert::Created(id) => {
                case.id = id;
                tracing::info!(case = id, case_type = ?case.case_type, subject = %case.subject.key(), urgent = case.urgent, "case registered");
                if let Some(team) = self
                    .router
                    .route(&case.grid, case.case_type)
                    .map(str::to_owned)
                    && let Ok(t) = case.apply(CaseAction::Dispatch { team }, SYSTEM, now)
                {
                    self.save(&case, CaseState::Registered, &[t]).await?;
                }
                Ok(Opened::Created(Box::new(case)))
            }
        }
    }

    /// Store the transitions the machine made on `case`, read in state `expected`; `false`
    /// when someone changed the case first (nothing is stored).
    pub async fn save(
        &self,
        case: &Case,
        expected: CaseState,
        transitions: &[Transition],
    ) -> StoreResult<bool> {
        let entries: Vec<CaseHistoryEntry> = transitions.iter().map(to_entry).collect();
        let saved = self
            .store
            .update_case(&to_record(case), expected, &entries)
            .await?;
        if !saved {
            tracing::info!(
                case = case.id,
                "case changed concurrently; automatic update skipped"
            );
        }
        Ok(saved)
    }

    /// A person's action on case `id`. The sensor side of the case (condition, clear since)
    /// may change between reading the case and writing it back: the action is then made again
    /// on the case as it is now, so it never writes back a sensor state the gateway has moved
    /// on from.
    pub async fn act(
        &self,
        id: i64,
        action: CaseAction,
        actor: &str,
        now: UnixMs,
    ) -> Result<CaseRecord, ActError> {
        for _ in 0..ACT_ATTEMPTS {
            let record = self
                .store
                .get_case(id)
                .await?
                .ok_or(ActError::NotFound(id))?;
            let mut case = from_record(&record).ok_or(ActError::Unreadable(id))?;
            let kind = action.kind();
            let transition = case.apply(self.prepare(&case, action.clone())?, actor, now)?;
            if kind == ActionKind::Accept && case.urgent {
                case.on_site_due_ms = Some(self.supervision.on_site_due(case.case_type, now));
            }
            let mut entries = vec![to_entry(&transition)];
            entries.extend(self.follow_up(&mut case, kind, now).as_ref().map(to_entry));
            let updated = to_record(&case);
            if self
                .store
                .update_case_from(&updated, &record, &entries)
                .await?
            {
                return Ok(updated);
            }
        }
        Err(ActError::Changed(id))
    }
}

fn subject_from_key(key: &str) -> Option<Subject> {
    if key == "fleet" {
        return Some(Subject::Fleet);
    }
    if let Some(id) = key.strip_prefix("device:") {
        return DeviceId::new(id).ok().map(Subject::Device);
    }
    key.strip_prefix("segment:")
        .map(|s| Subject::Segment(s.to_owned()))
}

/// A stored case as the pure machine's case (its history stays in the store).
pub fn from_record(r: &CaseRecord) -> Option<Case> {
    Some(Case {
        id: r.id,
        case_type: r.case_type,
        source: r.source,
        subject: subject_from_key(&r.subject_key)?,
        condition: r.condition_key.as_deref().and_then(|c| c.parse().ok()),
        grid: r.grid.clone(),
        team: r.team.clone(),
        state: r.state,
        urgent: r.urgent,
        devices: r.devices.clone(),
        detail: r.detail.clone(),
        opened_ms: r.opened_ms,
        due_ms: r.due_ms.unwrap_or(i64::MAX),
        updated_ms: r.updated_ms,
        closed_ms: r.closed_ms,
        condition_active: r.condition_active,
        clear_since_ms: r.clear_since_ms,
        rework_count: r.rework_count,
        returned_count: r.returned_count,
        supervision_level: r.supervision_level,
        on_site_due_ms: r.on_site_due_ms,
        on_site_ms: r.on_site_ms,
        history: Vec::new(),
    })
}

/// The machine's case as a store record.
pub fn to_record(c: &Case) -> CaseRecord {
    CaseRecord {
        id: c.id,
        case_type: c.case_type,
        source: c.source,
        subject_key: c.subject.key(),
        condition_key: c.condition.map(|k| k.key()),
        grid: c.grid.clone(),
        team: c.team.clone(),
        state: c.state,
        urgent: c.urgent,
        devices: c.devices.clone(),
        detail: c.detail.clone(),
        opened_ms: c.opened_ms,
        due_ms: Some(c.due_ms),
        updated_ms: c.updated_ms,
        closed_ms: c.closed_ms,
        condition_active: c.condition_active,
        clear_since_ms: c.clear_since_ms,
        rework_count: c.rework_count,
        returned_count: c.returned_count,
        supervision_level: c.supervision_level,
        on_site_due_ms: c.on_site_due_ms,
        on_site_ms: c.on_site_ms,
    }
}

/// A transition as a history entry.
pub fn to_entry(t: &Transition) -> CaseHistoryEntry {
    CaseHistoryEntry {
        action: t.action.clone(),
        at_ms: t.at_ms,
        actor: t.actor.clone(),
        from: t.from,
        to: t.to,
        note: t.note.clone(),
    }
}
