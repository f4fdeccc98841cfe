//! From condition edges to incidents: one incident per case key, however many conditions and
//! devices feed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use streetgate_protocols::{AlarmKind, DeviceId, DeviceKind};

use super::machine::case_type_for;
use crate::model::{CaseType, Condition, ConditionEvent, Device, GridCode, Subject, UnixMs};

/// A case-worthy situation: its key (subject + condition), whether it is going on, and what is
/// involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Device or road segment.
    pub subject: Subject,
    /// The key condition (`segment_dark` for grouped lamp faults).
    pub condition: Condition,
    /// Case type.
    pub case_type: CaseType,
    /// Going on.
    pub active: bool,
    /// Urgent.
    pub urgent: bool,
    /// Grid.
    pub grid: GridCode,
    /// Devices involved.
    pub devices: Vec<DeviceId>,
    /// What is going on.
    pub detail: String,
    /// When it changed.
    pub at_ms: UnixMs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    device: Option<DeviceId>,
    /// The devices of a fleet-wide member (the devices an outage cut off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    others: Vec<DeviceId>,
    condition: Condition,
    urgent: bool,
    detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    subject: Subject,
    condition: Condition,
    grid: GridCode,
    kind: Option<DeviceKind>,
    members: BTreeMap<String, Member>,
    /// Segment below its lighting target, with its dark lamps.
    dark: Option<Vec<DeviceId>>,
}

impl Group {
    fn active(&self) -> bool {
        !self.members.is_empty() || self.dark.is_some()
    }

    fn incident(&self, at_ms: UnixMs) -> Incident {
        let mut devices: Vec<DeviceId> = self
            .members
            .values()
            .flat_map(|m| m.device.iter().chain(&m.others).cloned())
            .collect();
        devices.extend(self.dark.iter().flatten().cloned());
        devices.sort();
        devices.dedup();
        let urgent = self.dark.is_some() || self.members.values().any(|m| m.urgent);
        // The most severe member decides the type (an open cover over a tilted one).
        let case_type = self
            .members
            .values()
            .map(|m| case_type_for(m.condition, self.kind))
            .max_by_key(|t| severity(*t))
            .unwrap_or_else(|| case_type_for(self.condition, self.kind));
        let case_type = if matches!(self.subject, Subject::Segment(_)) {
            CaseType::LampFault
        } else {
            case_type
        };
        let mut detail: Vec<String> = self.members.values().map(|m| m.detail.clone()).collect();
        if self.dark.is_some() {
            detail.insert(0, "segment below its lighting target".into());
        }
        Incident {
            subject: self.subject.clone(),
            condition: self.condition,
            case_type,
            active: self.active(),
            urgent,
            grid: self.grid.clone(),
            devices,
            detail: if detail.is_empty() {
                format!("{} cleared", self.condition)
            } else {
                detail.join("; ")
            },
            at_ms,
        }
    }
}

/// How severe a case type is: a case is upgraded to a more severe type of its own incident
/// (a full bin that overflows), never downgraded.
pub(super) fn severity(t: CaseType) -> u8 {
    match t {
        CaseType::BinOverflow | CaseType::BinFire | CaseType::LampSafety => 2,
        CaseType::ManholeCover
        | CaseType::ManholeWater
        | CaseType::LampFault
        | CaseType::ToiletOdour => 1,
        _ => 0,
    }
}

/// Lamp faults that darken a lamp: grouped per road segment.
fn is_lamp_fault(condition: Condition) -> bool {
    matches!(
        condition,
        Condition::Alarm(
            AlarmKind::LampFailure
                | AlarmKind::DayBurner
                | AlarmKind::RelayFailure
                | AlarmKind::SupplyLoss
                | AlarmKind::Cycling
        )
    )
}

/// The case key a condition event belongs to.
fn key_of(ev: &ConditionEvent, device: Option<&Device>) -> (Subject, Condition) {
    match (&ev.subject, ev.condition) {
        (Subject::Segment(s), _) => (Subject::Segment(s.clone()), Condition::SegmentDark),
        (Subject::Device(_), c) if is_lamp_fault(c) => {
            match device.and_then(|d| d.road_segment.clone()) {
                Some(seg) => (Subject::Segment(seg), Condition::SegmentDark),
                None => (ev.subject.clone(), Condition::Alarm(AlarmKind::LampFailure)),
            }
        }
        (subject, Condition::Alarm(AlarmKind::CoverOpen)) => {
            (subject.clone(), Condition::Alarm(AlarmKind::CoverTilted))
        }
        (subject, Condition::Alarm(AlarmKind::BinOverflow)) => {
            (subject.clone(), Condition::Alarm(AlarmKind::BinFull))
        }
        // One smelly toilet is one incident, whichever gas crossed its limit.
        (subject, Condition::Alarm(AlarmKind::OdourH2s)) => {
            (subject.clone(), Condition::Alarm(AlarmKind::OdourNh3))
        }
        (subject, c) => (subject.clone(), c),
    }
}

/// Incident groups in progress (persisted with the rule state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    groups: BTreeMap<String, Group>,
}

impl Incidents {
    /// Feed a condition edge; returns the incident when its key's situation changed.
    pub fn apply(&mut self, ev: &ConditionEvent, device: Option<&Device>) -> Option<Incident> {
        let (subject, condition) = key_of(ev, device);
        let key = format!("{}|{}", subject.key(), condition.key());
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            subject,
            condition,
            grid: ev.grid.clone(),
            kind: device.map(|d| d.kind),
            members: BTreeMap::new(),
            dark: None,
        });
        let before = group.incident(ev.at_ms);
        if ev.condition == Condition::SegmentDark {
            group.dark = ev.raised.then(|| ev.devices.clone());
        } else {
            let member_key = format!("{}|{}", ev.subject.key(), ev.condition.key());
            if ev.raised {
                group.members.insert(
                    member_key,
                    Member {
                        device: match &ev.subject {
                            Subject::Device(d) => Some(d.clone()),
                            Subject::Segment(_) | Subject::Fleet => None,
                        },
                        others: match &ev.subject {
                            Subject::Fleet => ev.devices.clone(),
                            Subject::Device(_) | Subject::Segment(_) => Vec::new(),
                        },
                        condition: ev.condition,
                        urgent: ev.urgent,
                        detail: match &ev.subject {
                            Subject::Device(d) => format!("{d}: {}", ev.detail),
                            Subject::Segment(_) | Subject::Fleet => ev.detail.clone(),
                        },
                    },
                );
            } else {
                group.members.remove(&member_key);
            }
        }
        let after = group.incident(ev.at_ms);
        if !after.active {
            self.groups.remove(&key);
        }
        let changed = after.active != before.active
            || (after.active
                && (after.devices != before.devices
                    || after.urgent != before.urgent
                    || after.case_type != before.case_type));
        changed.then_some(after)
    }

    /// Incidents going on.
    pub fn active(&self) -> impl Iterator<Item = Incident> + '_ {
        self.groups.values().map(|g| g.incident(0))
    }
}
