//! Sensor conditions to cases, against the store: the thin async shell around the pure rules
//! engine ([`crate::rules`]) and case machine ([`crate::cases`]).
//!
//! Each reading goes through the rules; each condition edge through the incident grouping; each
//! incident edge is decided against the open (or recently closed) case for its key, read from
//! the store, and the result is written back. Deduplication is the database's: a case is
//! inserted only if no open case has its (subject, condition) key, so even two gateways sharing
//! one PostgreSQL register one case. A periodic tick runs the offline timers, the segment
//! lighting evaluation and the sensor verification of resolved cases, and persists the rule
//! state so a restart resumes where it stopped.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cases::service::{CaseService, Opened, from_record};
use crate::cases::{
    ActionKind, Case, CaseAction, Decision, Incident, Incidents, Transition, decide,
};
use crate::inventory::Inventory;
use crate::lighting::LightingSnapshot;
use crate::model::{CaseSource, CaseState, ConditionEvent, Device, Reading, Subject, UnixMs};
use crate::rules::{RulesConfig, RulesEngine, RulesSnapshot};
use crate::store::{CaseFilter, Store, StoreResult};

pub use crate::cases::service::SYSTEM;

/// Everything the automation persists between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    rules: RulesSnapshot,
    incidents: Incidents,
    /// Incident edges whose case could not be written yet.
    #[serde(default)]
    pending: Vec<(Incident, UnixMs)>,
}

/// Counters of what the automation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AutomationStats {
    /// Condition edges from the rules.
    pub conditions: u64,
    /// Cases registered.
    pub registered: u64,
    /// Incident edges that found their case already open (deduplicated).
    pub deduplicated: u64,
    /// Cases closed as self-recovered.
    pub self_recovered: u64,
    /// Cases verified by the sensor after resolution (failed verifications go back as rework).
    pub verified: u64,
    /// Closed cases reopened as rework.
    pub reopened: u64,
    /// Supervision levels reached (督办), by lateness on site or past the deadline.
    pub supervised: u64,
    /// Cases sent to their route's alternative team (二次派遣).
    pub second_dispatches: u64,
}

/// The automation.
#[derive(Debug)]
pub struct Automation {
    rules: RulesEngine,
    incidents: Incidents,
    /// Incident edges (with their time) whose case could not be written yet, oldest first:
    /// kept, in order, until the store takes them.
    pending: Vec<(Incident, UnixMs)>,
    cases: CaseService,
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    lighting: tokio::sync::watch::Sender<LightingSnapshot>,
    /// When supervision was last looked at (once per clock minute).
    supervised_at: Option<UnixMs>,
    /// What it did.
    pub stats: AutomationStats,
}

impl Automation {
    /// Build, resuming the persisted rule state if there is one.
    pub async fn new(
        store: Arc<dyn Store>,
        inventory: Arc<Inventory>,
        rules: RulesConfig,
        cases: CaseService,
        lighting: tokio::sync::watch::Sender<LightingSnapshot>,
    ) -> StoreResult<Self> {
        let mut engine = RulesEngine::new(rules);
        let mut incidents = Incidents::default();
        let mut pending = Vec::new();
        if let Some((json, _)) = store.load_rule_state().await? {
            match serde_json::from_str::<Persisted>(&json) {
                Ok(p) => {
                    engine.restore(p.rules);
                    incidents = p.incidents;
                    pending = p.pending;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored rule state unreadable; starting fresh")
                }
            }
        }
        Ok(Self {
            rules: engine,
            incidents,
            pending,
            cases,
            store,
            inventory,
            lighting,
            supervised_at: None,
            stats: AutomationStats::default(),
        })
    }

    /// The rules engine (lighting reports for the API).
    pub fn rules(&self) -> &RulesEngine {
        &self.rules
    }

    /// Evaluate one accepted reading.
    pub async fn on_reading(&mut self, reading: &Reading) -> StoreResult<()> {
        let Some(device) = self.inventory.get(&reading.device_id) else {
            return Ok(());
        };
        let events = self.rules.on_reading(&device, reading);
        let incidents = self.group(events.iter().map(|ev| (ev, Some(device.as_ref()))));
        self.pending
            .extend(incidents.into_iter().map(|i| (i, reading.received_ms)));
        self.write_pending().await
    }

    /// Incident edges whose case is not written yet (the store failed).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Write the cases of the pending incident edges, oldest first; on a store error the
    /// failed edge and those after it stay pending (nothing is lost, the order is kept) and
    /// the error is returned.
    pub async fn write_pending(&mut self) -> StoreResult<()> {
        while let Some((incident, at)) = self.pending.first().cloned() {
            self.on_incident(&incident, at).await?;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Time passes: rule timers and lighting, sensor verification, state persistence.
    pub async fn tick(&mut self, now: UnixMs) -> StoreResult<()> {
        // Cases that could not be written before go first; a store that still fails leaves
        // them (and this tick's) pending, while the lighting rate is evaluated all the same.
        let mut failed = self.write_pending().await.err();
        let devices = self.inventory.snapshot();
        let events = self.rules.on_tick(now, devices.values().map(AsRef::as_ref));
        let incidents = self.group(events.iter().map(|ev| {
            let device = match &ev.subject {
                Subject::Device(id) => devices.get(id).map(AsRef::as_ref),
                Subject::Segment(_) | Subject::Fleet => None,
            };
            (ev, device)
        }));
        self.pending.extend(incidents.into_iter().map(|i| (i, now)));
        if failed.is_none() {
            failed = self.write_pending().await.err();
        }
        let report = self
            .rules
            .lighting_now(now, devices.values().map(AsRef::as_ref));
        self.lighting.send_replace(LightingSnapshot {
            at_ms: now,
            now: report,
            history: self.rules.lighting_history().clone(),
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let filter = CaseFilter {
            state: Some(CaseState::Resolved),
            limit: 1000,
            ..CaseFilter::default()
        };
        for record in self.store.list_cases(&filter).await?.1 {
            let Some(mut case) = from_record(&record) else {
                continue;
            };
            let mut done = case.on_tick(self.cases.policy(), now);
            if !done.is_empty() {
                if done.last().is_some_and(|t| t.to == CaseState::Closed) {
                    self.stats.verified += 1;
                }
                if done.last().is_some_and(|t| t.action == "rework")
                    && let Some(t) = self.cases.follow_up(&mut case, ActionKind::Rework, now)
                {
                    self.stats.second_dispatches += 1;
                    done.push(t);
                }
                self.save(&case, record.state, &done).await?;
            }
        }
        self.supervise(now).await
    }

    /// Supervision (督办): overdue open cases, and urgent accepted cases whose crew is late on
    /// site, climb to their next level (one level per case and tick, each level once).
    async fn supervise(&mut self, now: UnixMs) -> StoreResult<()> {
        let levels = u32::try_from(self.cases.supervision().levels.len()).unwrap_or(u32::MAX);
        // Levels are minutes apart: once per clock minute is enough.
        if levels == 0 || self.supervised_at.is_some_and(|t| now - t < 60_000) {
            return Ok(());
        }
        const PAGE: u32 = 500;
        let mut candidates = Vec::new();
        for filter in [
            CaseFilter {
                overdue_at: Some(now),
                supervision_below: Some(levels),
                ..CaseFilter::default()
            },
            CaseFilter {
                on_site_late_at: Some(now),
                supervision_below: Some(levels),
                ..CaseFilter::default()
            },
        ] {
            let mut offset = 0;
            loop {
                let page = CaseFilter {
                    limit: PAGE,
                    offset,
                    ..filter.clone()
                };
                let (_, records) = self.store.list_cases(&page).await?;
                let n = records.len();
                candidates.extend(records);
                if n < PAGE as usize {
                    break;
                }
                offset += PAGE;
            }
        }
        candidates.sort_by_key(|r| r.id);
        candidates.dedup_by_key(|r| r.id);
        for record in candidates {
            let Some(mut case) = from_record(&record) else {
                continue;
            };
            if let Some(t) = case.supervise_tick(self.cases.supervision(), now) {
                tracing::info!(case = case.id, level = case.supervision_level, note = %t.note, "case supervised");
                if self.cases.save_from(&case, &record, &[t]).await? {
                    self.stats.supervised += 1;
                }
            }
        }
        self.supervised_at = Some(now);
        Ok(())
    }

    /// Persist the rule state (call periodically and at shutdown).
    pub async fn persist(&self, now: UnixMs) -> StoreResult<()> {
        let state = Persisted {
            rules: self.rules.snapshot(),
            incidents: self.incidents.clone(),
            pending: self.pending.clone(),
        };
        match serde_json::to_string(&state) {
            Ok(json) => self.store.save_rule_state(&json, now).await,
            Err(e) => {
                tracing::error!(error = %e, "rule state not serialisable");
                Ok(())
            }
        }
    }

    async fn save(
        &self,
        case: &Case,
        expected: CaseState,
        transitions: &[Transition],
    ) -> StoreResult<bool> {
        self.cases.save(case, expected, transitions).await
    }

    /// Feed the condition edges of one reading (or one tick) to the incident grouping; returns
    /// each changed incident once, as it stands after all of them. A bin that jumps to 105 %
    /// raises `bin_full` and `bin_overflow` in one reading: that is one `bin_overflow` case, not
    /// a `bin_full` case escalated a moment later.
    fn group<'a>(
        &mut self,
        events: impl IntoIterator<Item = (&'a ConditionEvent, Option<&'a Device>)>,
    ) -> Vec<Incident> {
        let mut out: Vec<Incident> = Vec::new();
        for (ev, device) in events {
            self.stats.conditions += 1;
            let Some(incident) = self.incidents.apply(ev, device) else {
                continue;
            };
            match out
                .iter_mut()
                .find(|i| i.subject == incident.subject && i.condition == incident.condition)
            {
                Some(earlier) => *earlier = incident,
                None => out.push(incident),
            }
        }
        out
    }

    /// Act on an incident edge. A team's transition can land between reading the case and
    /// writing it back (the write is refused: the state changed). The sensor's news must not
    /// be lost with it (a clear lost that way becomes a failed verification, and rework nobody
    /// earned): decide again on the case as it now is.
    async fn on_incident(&mut self, incident: &Incident, now: UnixMs) -> StoreResult<()> {
        for _ in 0..3 {
            if self.try_incident(incident, now).await? {
                break;
            }
        }
        Ok(())
    }

    /// Act on an incident edge against the cases as stored; false when a write was refused
    /// because the case changed meanwhile.
    async fn try_incident(&mut self, incident: &Incident, now: UnixMs) -> StoreResult<bool> {
        let (subject_key, condition_key) = (incident.subject.key(), incident.condition.key());
        let open = self.store.open_case(&subject_key, &condition_key).await?;
        let open_case = open.as_ref().and_then(from_record);
        let closed = match (&open_case, incident.active) {
            (None, true) => {
                self.store
                    .recently_closed_case(
                        &subject_key,
                        &condition_key,
                        now - self.cases.policy().reopen_window_ms,
                    )
                    .await?
            }
            _ => None,
        };
        let closed_case = closed.as_ref().and_then(from_record);
        let mut saved = true;
        match decide(
            incident,
            open_case.as_ref(),
            closed_case.as_ref(),
            self.cases.policy(),
            now,
        ) {
            Decision::Register(i) => self.register(&i, now).await?,
            Decision::Update(i) => {
                if let Some(mut case) = open_case {
                    self.stats.deduplicated += 1;
                    let expected = case.state;
                    let noted: Vec<Transition> = case
                        .update_from(&i, self.cases.policy(), now)
                        .into_iter()
                        .collect();
                    saved = self.save(&case, expected, &noted).await?;
                }
            }
            Decision::SelfRecovered => {
                if let Some(mut case) = open_case {
                    let expected = case.state;
                    let done = case.self_recover(now);
                    saved = self.save(&case, expected, &done).await?;
                    if saved {
                        self.stats.self_recovered += 1;
                    }
                }
            }
            Decision::StartVerification | Decision::NoteRecovery => {
                if let Some(mut case) = open_case {
                    let expected = case.state;
                    case.set_condition(false, now);
                    saved = self.save(&case, expected, &[]).await?;
                }
            }
            Decision::Reopen(i) => {
                if let Some(mut case) = closed_case {
                    let note = format!("recurred: {}", i.detail);
                    if let Ok(t) = case.apply(CaseAction::Reopen { note }, SYSTEM, now) {
                        case.devices = i.devices;
                        case.urgent = i.urgent;
                        self.stats.reopened += 1;
                        let mut done = vec![t];
                        if let Some(t) = self.cases.follow_up(&mut case, ActionKind::Reopen, now) {
                            self.stats.second_dispatches += 1;
                            done.push(t);
                        }
                        saved = self.save(&case, CaseState::Closed, &done).await?;
                    }
                }
            }
            Decision::Nothing => {}
        }
        Ok(saved)
    }

    async fn register(&mut self, i: &Incident, now: UnixMs) -> StoreResult<()> {
        let case = Case::register(
            i.case_type,
            CaseSource::Sensor,
            i.subject.clone(),
            Some(i.condition),
            i.grid.clone(),
            i.urgent,
            i.devices.clone(),
            i.detail.clone(),
            self.cases.policy(),
            "sensor",
            now,
        );
        match self.cases.open(case, now).await? {
            Opened::AlreadyOpen(id) => {
                self.stats.deduplicated += 1;
                tracing::debug!(case = id, "already open");
            }
            Opened::Created(_) => self.stats.registered += 1,
        }
        Ok(())
    }
}
