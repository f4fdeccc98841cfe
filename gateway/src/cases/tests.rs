use proptest::prelude::*;
use streetgate_protocols::{AlarmKind, DeviceId, DeviceKind};

use super::*;
use crate::model::{
    CaseSource, CaseType, Condition, ConditionEvent, Device, Subject, ThresholdOverrides, Transport,
};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn case() -> Case {
    Case::register(
        CaseType::ManholeCover,
        CaseSource::Sensor,
        Subject::Device(id("MH-1")),
        Some(Condition::Alarm(AlarmKind::CoverTilted)),
        "g1".into(),
        false,
        vec![id("MH-1")],
        "tilted".into(),
        &CasePolicy::default(),
        "system",
        0,
    )
}

fn dispatch() -> CaseAction {
    CaseAction::Dispatch {
        team: "municipal".into(),
    }
}

#[test]
fn the_happy_path_records_every_transition() {
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    c.apply(CaseAction::Accept, "li.wei", 2).unwrap();
    c.apply(
        CaseAction::Resolve {
            note: "cover reseated".into(),
        },
        "li.wei",
        3,
    )
    .unwrap();
    c.apply(
        CaseAction::Verify {
            note: String::new(),
        },
        "centre",
        4,
    )
    .unwrap();
    c.apply(CaseAction::Close, "centre", 5).unwrap();
    let states: Vec<CaseState> = c.history.iter().map(|t| t.to).collect();
    use CaseState as S;
    assert_eq!(
        states,
        [
            S::Registered,
            S::Dispatched,
            S::Accepted,
            S::Resolved,
            S::Verified,
            S::Closed
        ]
    );
    assert_eq!(c.history[2].actor, "li.wei");
    assert_eq!(c.history[3].from, Some(S::Accepted));
    assert_eq!(c.team.as_deref(), Some("municipal"));
    assert_eq!(c.closed_ms, Some(5));
    assert!(!c.is_open());
}

#[test]
fn every_state_refuses_what_it_does_not_allow() {
    use ActionKind as K;
    let all = [
        dispatch(),
        CaseAction::Accept,
        CaseAction::Return {
            reason: "not ours".into(),
        },
        CaseAction::Resolve {
            note: String::new(),
        },
        CaseAction::Verify {
            note: String::new(),
        },
        CaseAction::Rework {
            note: String::new(),
        },
        CaseAction::Close,
        CaseAction::Void {
            reason: "duplicate".into(),
        },
        CaseAction::Reopen {
            note: String::new(),
        },
        CaseAction::OnSite {
            note: String::new(),
        },
        CaseAction::Supervise {
            note: "late".into(),
        },
    ];
    let paths: [&[CaseAction]; 8] = [
        &[],
        &[dispatch()],
        &[dispatch(), CaseAction::Accept],
        &[
            dispatch(),
            CaseAction::Return {
                reason: "wrong grid".into(),
            },
        ],
        &[
            dispatch(),
            CaseAction::Accept,
            CaseAction::Resolve {
                note: String::new(),
            },
        ],
        &[
            dispatch(),
            CaseAction::Accept,
            CaseAction::Resolve {
                note: String::new(),
            },
            CaseAction::Verify {
                note: String::new(),
            },
        ],
        &[
            dispatch(),
            CaseAction::Accept,
            CaseAction::Resolve {
                note: String::new(),
            },
            CaseAction::Verify {
                note: String::new(),
            },
            CaseAction::Close,
        ],
        &[CaseAction::Void {
            reason: "duplicate".into(),
        }],
    ];
    for path in paths {
        let mut c = case();
        for a in path {
            c.apply(a.clone(), "t", 1).unwrap();
        }
        let state = c.state;
        for a in &all {
            let mut trial = c.clone();
            let allowed = ActionKind::allowed(state).contains(&a.kind());
            match trial.apply(a.clone(), "t", 2) {
                Ok(_) => assert!(allowed, "{:?} allowed from {state:?}", a.kind()),
                Err(e) => {
                    assert!(!allowed, "{:?} refused from {state:?}: {e}", a.kind());
                    assert_eq!(trial, c, "a refused action changes nothing");
                    let msg = e.to_string();
                    for k in ActionKind::allowed(state) {
                        assert!(msg.contains(k.as_str()), "{msg}");
                    }
                }
            }
        }
    }
    let mut c = case();
    let e = c
        .apply(CaseAction::Void { reason: " ".into() }, "t", 1)
        .unwrap_err();
    assert_eq!(e.to_string(), "void: a reason is required");
    assert_eq!(K::allowed(CaseState::Voided), &[] as &[ActionKind]);
}

#[test]
fn returns_and_rework_are_counted() {
    let mut c = case();
    c.apply(dispatch(), "s", 1).unwrap();
    c.apply(
        CaseAction::Return {
            reason: "belongs to the gas company".into(),
        },
        "team",
        2,
    )
    .unwrap();
    c.apply(dispatch(), "centre", 3).unwrap();
    c.apply(CaseAction::Accept, "team", 4).unwrap();
    c.apply(
        CaseAction::Resolve {
            note: String::new(),
        },
        "team",
        5,
    )
    .unwrap();
    c.apply(
        CaseAction::Rework {
            note: "still tilted".into(),
        },
        "centre",
        6,
    )
    .unwrap();
    assert_eq!(
        (c.returned_count, c.rework_count, c.state),
        (1, 1, CaseState::Dispatched)
    );
}

#[test]
fn due_and_overdue() {
    let p = CasePolicy::default();
    let c = case();
    assert_eq!(c.due_ms, 6 * 3600 * 1000);
    assert!(!c.is_overdue(c.due_ms));
    assert!(c.is_overdue(c.due_ms + 1));
    assert_eq!(
        p.due(CaseType::LampFault, true, 0),
        3600 * 1000,
        "urgent cases get the urgent limit"
    );
}

fn inc(active: bool) -> Incident {
    Incident {
        subject: Subject::Device(id("MH-1")),
        condition: Condition::Alarm(AlarmKind::CoverTilted),
        case_type: CaseType::ManholeCover,
        active,
        urgent: false,
        grid: "g1".into(),
        devices: vec![id("MH-1")],
        detail: String::new(),
        at_ms: 0,
    }
}

#[test]
fn decisions() {
    let p = CasePolicy::default();
    let mut open = case();
    assert_eq!(
        decide(&inc(true), None, None, &p, 0),
        Decision::Register(inc(true))
    );
    assert_eq!(
        decide(&inc(true), Some(&open), None, &p, 0),
        Decision::Update(inc(true))
    );
    assert_eq!(
        decide(&inc(false), Some(&open), None, &p, 0),
        Decision::SelfRecovered
    );
    open.apply(dispatch(), "s", 1).unwrap();
    assert_eq!(
        decide(&inc(false), Some(&open), None, &p, 0),
        Decision::SelfRecovered
    );
    open.apply(CaseAction::Accept, "s", 2).unwrap();
    assert_eq!(
        decide(&inc(false), Some(&open), None, &p, 0),
        Decision::NoteRecovery
    );
    open.apply(
        CaseAction::Resolve {
            note: String::new(),
        },
        "s",
        3,
    )
    .unwrap();
    assert_eq!(
        decide(&inc(false), Some(&open), None, &p, 0),
        Decision::StartVerification
    );
    let mut closed = open.clone();
    closed.set_condition(false, 4);
    assert!(closed.on_tick(&p, 4 + p.verify_window_ms - 1).is_empty());
    assert_eq!(closed.on_tick(&p, 4 + p.verify_window_ms).len(), 2);
    assert_eq!(closed.state, CaseState::Closed);
    let now = closed.closed_ms.unwrap() + p.reopen_window_ms;
    assert_eq!(
        decide(&inc(true), None, Some(&closed), &p, now),
        Decision::Reopen(inc(true))
    );
    assert_eq!(
        decide(&inc(true), None, Some(&closed), &p, now + 1),
        Decision::Register(inc(true))
    );
}

#[test]
fn a_repair_the_sensor_does_not_confirm_is_rework() {
    let p = CasePolicy::default();
    let mut c = case();
    c.apply(dispatch(), "s", 1).unwrap();
    c.apply(CaseAction::Accept, "team", 2).unwrap();
    c.apply(
        CaseAction::Resolve {
            note: "fixed".into(),
        },
        "team",
        3,
    )
    .unwrap();
    // The cover is still tilted.
    assert!(c.on_tick(&p, 3 + p.verify_window_ms - 1).is_empty());
    let t = c.on_tick(&p, 3 + p.verify_window_ms);
    assert_eq!(t.len(), 1);
    assert_eq!((c.state, c.rework_count), (CaseState::Dispatched, 1));
    assert!(t[0].note.contains("verification failed"));
}

#[test]
fn self_recovery_closes_with_a_note() {
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    let t = c.self_recover(2);
    assert_eq!(t.len(), 2);
    assert_eq!(c.state, CaseState::Closed);
    assert!(c.history.iter().any(|h| h.note.contains("self-recovered")));
}

fn lamp(name: &str, seg: &str) -> Device {
    Device {
        id: id(name),
        kind: DeviceKind::Streetlight,
        component_code: None,
        lat: 39.9,
        lon: 116.4,
        grid: "g1".into(),
        road_segment: Some(seg.into()),
        road_class: None,
        toilet_class: None,
        bin_depth_mm: None,
        overrides: ThresholdOverrides::default(),
        transport: Transport::Mqtt,
    }
}

fn ev(
    subject: Subject,
    condition: Condition,
    raised: bool,
    devices: Vec<DeviceId>,
    urgent: bool,
) -> ConditionEvent {
    ConditionEvent {
        subject,
        condition,
        raised,
        at_ms: 0,
        grid: "g1".into(),
        value: None,
        detail: "d".into(),
        devices,
        urgent,
    }
}

#[test]
fn lamp_faults_on_a_segment_are_one_incident() {
    let (a, b) = (lamp("SL-1", "S-1"), lamp("SL-2", "S-1"));
    let mut inc = Incidents::default();
    let fail = |d: &Device, raised| {
        ev(
            Subject::Device(d.id.clone()),
            Condition::Alarm(AlarmKind::LampFailure),
            raised,
            vec![d.id.clone()],
            false,
        )
    };
    let first = inc.apply(&fail(&a, true), Some(&a)).unwrap();
    assert_eq!(
        (first.subject.clone(), first.condition, first.active),
        (Subject::Segment("S-1".into()), Condition::SegmentDark, true)
    );
    let second = inc.apply(&fail(&b, true), Some(&b)).unwrap();
    assert_eq!(second.devices, [a.id.clone(), b.id.clone()]);
    assert!(!second.urgent);
    assert!(
        inc.apply(&fail(&b, true), Some(&b)).is_none(),
        "no change, no event"
    );
    let dark = ev(
        Subject::Segment("S-1".into()),
        Condition::SegmentDark,
        true,
        vec![a.id.clone(), b.id.clone()],
        true,
    );
    assert!(
        inc.apply(&dark, None).unwrap().urgent,
        "urgent while below target"
    );
    inc.apply(&fail(&a, false), Some(&a));
    inc.apply(&fail(&b, false), Some(&b));
    let dark_over = ev(
        Subject::Segment("S-1".into()),
        Condition::SegmentDark,
        false,
        vec![],
        false,
    );
    let last = inc.apply(&dark_over, None).unwrap();
    assert!(!last.active);
    assert_eq!(last.case_type, CaseType::LampFault);
}

#[test]
fn an_open_cover_escalates_the_tilt_incident() {
    let mut inc = Incidents::default();
    let s = Subject::Device(id("MH-1"));
    let tilted = inc
        .apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::CoverTilted),
                true,
                vec![],
                false,
            ),
            None,
        )
        .unwrap();
    assert!(!tilted.urgent);
    let open = inc
        .apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::CoverOpen),
                true,
                vec![],
                true,
            ),
            None,
        )
        .unwrap();
    assert_eq!(
        (open.condition, open.urgent, open.active),
        (Condition::Alarm(AlarmKind::CoverTilted), true, true)
    );
    assert!(
        inc.apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::CoverOpen),
                false,
                vec![],
                true
            ),
            None
        )
        .is_some()
    );
    let done = inc
        .apply(
            &ev(
                s,
                Condition::Alarm(AlarmKind::CoverTilted),
                false,
                vec![],
                false,
            ),
            None,
        )
        .unwrap();
    assert!(!done.active);
}

#[test]
fn a_fleet_wide_outage_is_one_urgent_offline_incident_listing_its_devices() {
    let mut inc = Incidents::default();
    let cut: Vec<DeviceId> = (0..30).map(|i| id(&format!("MH-{i}"))).collect();
    let began = inc
        .apply(
            &ev(Subject::Fleet, Condition::Offline, true, cut.clone(), true),
            None,
        )
        .unwrap();
    assert_eq!(
        (
            &began.subject,
            began.case_type,
            began.active,
            began.urgent,
            began.grid.as_str()
        ),
        (&Subject::Fleet, CaseType::DeviceOffline, true, true, "g1")
    );
    let mut sorted = cut.clone();
    sorted.sort();
    assert_eq!(began.devices, sorted);
    assert_eq!(began.subject.key(), "fleet");
    // A device's own offline condition is its own incident, beside the fleet's.
    let own = inc
        .apply(
            &ev(
                Subject::Device(id("MH-1")),
                Condition::Offline,
                true,
                vec![id("MH-1")],
                false,
            ),
            None,
        )
        .unwrap();
    assert_eq!(own.subject, Subject::Device(id("MH-1")));
    assert_eq!(inc.active().count(), 2);
    // The state survives a restart (it is persisted with the rule state).
    let restored: Incidents = serde_json::from_str(&serde_json::to_string(&inc).unwrap()).unwrap();
    assert_eq!(restored, inc);
    let over = inc
        .apply(
            &ev(Subject::Fleet, Condition::Offline, false, vec![], false),
            None,
        )
        .unwrap();
    assert!(!over.active);
    assert_eq!(inc.active().count(), 1);
}

#[test]
fn both_gases_are_one_odour_incident() {
    let mut inc = Incidents::default();
    let s = Subject::Device(id("WC-1"));
    let nh3 = inc
        .apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::OdourNh3),
                true,
                vec![],
                false,
            ),
            None,
        )
        .unwrap();
    assert!(
        inc.apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::OdourH2s),
                true,
                vec![],
                false
            ),
            None
        )
        .is_none()
    );
    assert_eq!(nh3.case_type, CaseType::ToiletOdour);
    assert!(
        inc.apply(
            &ev(
                s.clone(),
                Condition::Alarm(AlarmKind::OdourNh3),
                false,
                vec![],
                false
            ),
            None
        )
        .is_none(),
        "H2S still high"
    );
    assert!(
        !inc.apply(
            &ev(
                s,
                Condition::Alarm(AlarmKind::OdourH2s),
                false,
                vec![],
                false
            ),
            None
        )
        .unwrap()
        .active
    );
}

/// The case layer as the gateway runs it, over a list of cases (the store's role).
#[derive(Default)]
struct World {
    incidents: Incidents,
    cases: Vec<Case>,
}

impl World {
    fn open(&self, key: &(String, String)) -> Option<usize> {
        self.cases.iter().position(|c| {
            c.is_open()
                && (
                    c.subject.key(),
                    c.condition.map(|c| c.key()).unwrap_or_default(),
                ) == *key
        })
    }

    fn feed(&mut self, e: &ConditionEvent, p: &CasePolicy, now: i64) {
        let Some(incident) = self.incidents.apply(e, None) else {
            return;
        };
        let key = (incident.subject.key(), incident.condition.key());
        let open = self.open(&key);
        let closed = self.cases.iter().rposition(|c| {
            !c.is_open()
                && (
                    c.subject.key(),
                    c.condition.map(|c| c.key()).unwrap_or_default(),
                ) == key
        });
        match decide(
            &incident,
            open.map(|i| &self.cases[i]),
            closed.map(|i| &self.cases[i]),
            p,
            now,
        ) {
            Decision::Register(i) => {
                let mut c = Case::register(
                    i.case_type,
                    CaseSource::Sensor,
                    i.subject,
                    Some(i.condition),
                    i.grid,
                    i.urgent,
                    i.devices,
                    i.detail,
                    p,
                    "system",
                    now,
                );
                c.apply(dispatch(), "system", now).unwrap();
                self.cases.push(c);
            }
            Decision::Update(_) | Decision::Nothing => {}
            Decision::SelfRecovered => {
                self.cases[open.unwrap()].self_recover(now);
            }
            Decision::StartVerification | Decision::NoteRecovery => {
                self.cases[open.unwrap()].set_condition(false, now)
            }
            Decision::Reopen(_) => {
                self.cases[closed.unwrap()]
                    .apply(
                        CaseAction::Reopen {
                            note: "recurred".into(),
                        },
                        "system",
                        now,
                    )
                    .unwrap();
            }
        }
    }
}

proptest! {
    #[test]
    fn never_two_open_cases_per_key_and_everything_ends(
        events in proptest::collection::vec((0usize..3, 0usize..3, any::<bool>(), 0u8..4), 1..150)
    ) {
        let p = CasePolicy::default();
        let subjects = [Subject::Device(id("A")), Subject::Device(id("B")), Subject::Device(id("C"))];
        let conditions = [Condition::Alarm(AlarmKind::CoverTilted), Condition::Alarm(AlarmKind::CoverOpen), Condition::Offline];
        let mut w = World::default();
        let mut now = 0i64;
        for (s, c, raised, team) in events {
            now += 60_000;
            w.feed(&ev(subjects[s].clone(), conditions[c], raised, vec![], c == 1), &p, now);
            // Teams act at random.
            for case in w.cases.iter_mut().filter(|c| c.is_open()) {
                let _ = match team {
                    0 => case.apply(CaseAction::Accept, "team", now),
                    1 => case.apply(CaseAction::Resolve { note: String::new() }, "team", now),
                    _ => Ok(Transition { action: String::new(), actor: String::new(), at_ms: 0, from: None, to: case.state, note: String::new() }),
                };
                case.on_tick(&p, now);
            }
            let mut keys: Vec<_> = w.cases.iter().filter(|c| c.is_open()).map(|c| (c.subject.key(), c.condition)).collect();
            let n = keys.len();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(keys.len(), n, "two open cases for one key");
        }
        // Every condition clears, teams accept and resolve, time passes: all cases end.
        for s in &subjects {
            for c in conditions {
                now += 1000;
                w.feed(&ev(s.clone(), c, false, vec![], false), &p, now);
            }
        }
        for case in w.cases.iter_mut().filter(|c| c.is_open()) {
            let _ = case.apply(CaseAction::Accept, "team", now);
            let _ = case.apply(CaseAction::Resolve { note: String::new() }, "team", now);
        }
        now += p.verify_window_ms;
        for case in &mut w.cases {
            case.on_tick(&p, now);
            prop_assert!(!case.is_open(), "case left {:?}: {:?}", case.state, case.history);
        }
    }
}

/// A case's type only goes up: a full bin that overflows is an overflow case; when it is merely
/// full again the case stays an overflow case. Both changes are history events.
#[test]
fn a_case_type_escalates_and_never_de_escalates() {
    let p = CasePolicy::default();
    let bin = |case_type, urgent| Incident {
        subject: Subject::Device(id("BN-1")),
        condition: Condition::Alarm(AlarmKind::BinFull),
        case_type,
        active: true,
        urgent,
        grid: "g1".into(),
        devices: vec![id("BN-1")],
        detail: "fill".into(),
        at_ms: 0,
    };
    let mut c = Case::register(
        CaseType::BinFull,
        CaseSource::Sensor,
        Subject::Device(id("BN-1")),
        Some(Condition::Alarm(AlarmKind::BinFull)),
        "g1".into(),
        false,
        vec![id("BN-1")],
        "full".into(),
        &p,
        "sensor",
        0,
    );
    let up = c
        .update_from(&bin(CaseType::BinOverflow, true), &p, 1000)
        .unwrap();
    assert_eq!(c.case_type, CaseType::BinOverflow);
    assert!(c.urgent && c.due_ms <= 60 * 60_000 + 1000);
    assert!(
        up.note.starts_with("escalated: bin_full → bin_overflow"),
        "{}",
        up.note
    );
    assert_eq!(up.from, Some(up.to));
    let down = c
        .update_from(&bin(CaseType::BinFull, false), &p, 2000)
        .unwrap();
    assert_eq!(c.case_type, CaseType::BinOverflow, "never downgraded");
    assert!(c.urgent, "urgency stands too");
    assert!(down.note.starts_with("de-escalated"), "{}", down.note);
    assert!(
        c.update_from(&bin(CaseType::BinFull, false), &p, 3000)
            .is_none()
    );
    assert_eq!(c.history.len(), 3);
}

fn urgent_cover() -> Case {
    Case::register(
        CaseType::ManholeCover,
        CaseSource::Sensor,
        Subject::Device(id("MH-1")),
        Some(Condition::Alarm(AlarmKind::CoverTilted)),
        "g1".into(),
        true,
        vec![id("MH-1")],
        "cover open".into(),
        &CasePolicy::default(),
        "sensor",
        0,
    )
}

#[test]
fn on_site_once_per_acceptance_state_unchanged() {
    let on_site = || CaseAction::OnSite {
        note: "crew arrived".into(),
    };
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    // Not before the case is accepted.
    let e = c.apply(on_site(), "li.wei", 2).unwrap_err();
    assert!(e.to_string().contains("cannot on_site"), "{e}");
    c.apply(CaseAction::Accept, "li.wei", 3).unwrap();
    c.on_site_due_ms = Some(100);
    let t = c.apply(on_site(), "li.wei", 4).unwrap();
    assert_eq!(
        (t.action.as_str(), t.from, t.to),
        ("on_site", Some(CaseState::Accepted), CaseState::Accepted)
    );
    assert_eq!((c.on_site_ms, c.on_site_due_ms), (Some(4), None));
    // Once per acceptance.
    let e = c.apply(on_site(), "li.wei", 5).unwrap_err();
    assert!(e.to_string().contains("already reported on site"), "{e}");
    // Handed back, dispatched again and accepted again: a new acceptance, a new report.
    c.apply(
        CaseAction::Return {
            reason: "needs a crane".into(),
        },
        "li.wei",
        6,
    )
    .unwrap();
    c.apply(dispatch(), "centre", 7).unwrap();
    c.apply(CaseAction::Accept, "li.wei", 8).unwrap();
    assert_eq!(c.on_site_ms, None);
    c.apply(on_site(), "li.wei", 9).unwrap();
}

#[test]
fn on_site_limits_by_type() {
    let plan = SupervisionConfig::default();
    assert_eq!(plan.on_site_min(CaseType::ManholeCover), 30);
    assert_eq!(plan.on_site_min(CaseType::BinFire), 30);
    assert_eq!(plan.on_site_min(CaseType::LampSafety), 30);
    assert_eq!(plan.on_site_min(CaseType::BinOverflow), 60);
    let mut changed = plan.clone();
    changed.on_site_limits_min.insert(CaseType::BinOverflow, 45);
    changed.on_site_limit_min = 90;
    assert_eq!(changed.on_site_min(CaseType::BinOverflow), 45);
    assert_eq!(changed.on_site_min(CaseType::ToiletOdour), 90);
    assert_eq!(
        changed.on_site_due(CaseType::BinOverflow, 1_000),
        1_000 + 45 * 60_000
    );
}

#[test]
fn urgent_case_not_on_site_in_time_escalates_once() {
    let plan = SupervisionConfig::default();
    let clock = crate::clock::Clock::scaled(0, 0, 60.0);
    let minute = |m: i64| clock.at_wall(m * 1000);
    let mut c = urgent_cover();
    c.apply(dispatch(), "system", minute(1)).unwrap();
    c.apply(CaseAction::Accept, "li.wei", minute(2)).unwrap();
    c.on_site_due_ms = Some(plan.on_site_due(c.case_type, minute(2)));
    // Within the 30 minutes: nothing.
    assert_eq!(c.supervise_tick(&plan, minute(32)), None);
    let t = c.supervise_tick(&plan, minute(33)).expect("escalated");
    assert_eq!(
        (t.action.as_str(), t.actor.as_str(), t.from, t.to),
        (
            "supervise",
            "system",
            Some(CaseState::Accepted),
            CaseState::Accepted
        )
    );
    assert_eq!(
        t.note,
        "level 1 (phone; told team): not on site within the on-site time limit of 30 min"
    );
    assert_eq!((c.supervision_level, c.on_site_due_ms), (1, None));
    // Not again for the same lateness, nor at the deadline (level 1 is reached already).
    assert_eq!(c.supervise_tick(&plan, minute(34)), None);
    assert_eq!(c.supervise_tick(&plan, minute(61)), None);
    // Level 2 comes two hours after the deadline (60 min for urgent cases).
    assert_eq!(c.supervise_tick(&plan, minute(180)), None);
    let t = c.supervise_tick(&plan, minute(181)).expect("level 2");
    assert!(
        t.note
            .starts_with("level 2 (written; told team, supervisor): overdue by 2 h 01 min"),
        "{}",
        t.note
    );
}

#[test]
fn overdue_case_climbs_each_level_once() {
    let plan = SupervisionConfig::default();
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    let due = c.due_ms;
    assert_eq!(plan.due_level(due, due), 0);
    assert_eq!(plan.due_level(due, due + 1), 1);
    assert_eq!(plan.due_level(due, due + 120 * 60_000 + 1), 2);
    assert_eq!(plan.due_level(due, due + 48 * 3_600_000), 3);
    let mut levels = Vec::new();
    // A tick every 10 minutes for two days.
    for step in 0..(2 * 24 * 6) {
        let now = due - 3_600_000 + step * 600_000;
        if let Some(t) = c.supervise_tick(&plan, now) {
            let n = supervision::parse_note(&t.note).unwrap();
            levels.push((n.level, n.form, n.recipients.len()));
        }
    }
    use SupervisionForm as F;
    assert_eq!(
        levels,
        [(1, F::Phone, 1), (2, F::Written, 2), (3, F::OnSite, 3)]
    );
    assert_eq!(c.supervision_level, 3);
    // A gateway that was stopped for days climbs one level per tick, never skipping one.
    let mut late = case();
    late.apply(dispatch(), "system", 1).unwrap();
    let far = late.due_ms + 7 * 24 * 3_600_000;
    let notes: Vec<u32> = (0..5)
        .filter_map(|i| late.supervise_tick(&plan, far + i))
        .map(|t| supervision::parse_note(&t.note).unwrap().level)
        .collect();
    assert_eq!(notes, [1, 2, 3]);
    // Resolved cases are not supervised (the deadline ends with the team's feedback).
    let mut resolved = case();
    resolved.apply(dispatch(), "system", 1).unwrap();
    resolved.apply(CaseAction::Accept, "t", 2).unwrap();
    resolved
        .apply(
            CaseAction::Resolve {
                note: String::new(),
            },
            "t",
            3,
        )
        .unwrap();
    assert_eq!(resolved.supervise_tick(&plan, far), None);
    // Without levels, nothing.
    let none = SupervisionConfig {
        levels: Vec::new(),
        ..SupervisionConfig::default()
    };
    assert_eq!(case().supervise_tick(&none, far), None);
}

#[test]
fn supervision_notes_read_back_and_config_is_checked() {
    let plan = SupervisionConfig::default();
    let n = supervision::note(3, plan.level(3).unwrap(), "overdue by 1 day: call them");
    assert_eq!(
        n,
        "level 3 (on_site; told team, supervisor, centre): overdue by 1 day: call them"
    );
    let back = supervision::parse_note(&n).unwrap();
    assert_eq!(
        (back.level, back.form, back.reason.as_str()),
        (3, SupervisionForm::OnSite, "overdue by 1 day: call them")
    );
    assert_eq!(
        back.recipients,
        [Recipient::Team, Recipient::Supervisor, Recipient::Centre]
    );
    assert!(supervision::parse_note("escalated: now urgent").is_none());
    assert!(plan.validate().is_ok());
    let mut bad = plan.clone();
    bad.levels[1].after_due_min = 0;
    assert_eq!(
        bad.validate().unwrap_err().key,
        "supervision.levels[1].after_due_min"
    );
    let mut bad = plan.clone();
    bad.levels[0].recipients.clear();
    assert_eq!(
        bad.validate().unwrap_err().key,
        "supervision.levels[0].recipients"
    );
    let mut bad = plan.clone();
    bad.on_site_limits_min.insert(CaseType::BinFire, 0);
    assert_eq!(
        bad.validate().unwrap_err().key,
        "supervision.on_site_limits_min.bin_fire"
    );
    let bad = SupervisionConfig {
        on_site_limit_min: -5,
        ..plan
    };
    assert_eq!(
        bad.validate().unwrap_err().key,
        "supervision.on_site_limit_min"
    );
}

#[test]
fn supervise_by_hand_needs_a_note_and_an_open_unresolved_case() {
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    let e = c
        .apply(CaseAction::Supervise { note: " ".into() }, "centre", 2)
        .unwrap_err();
    assert_eq!(e.to_string(), "supervise: a note is required");
    c.apply(
        CaseAction::Supervise {
            note: "call the foreman".into(),
        },
        "centre",
        3,
    )
    .unwrap();
    assert_eq!((c.supervision_level, c.state), (1, CaseState::Dispatched));
    c.apply(
        CaseAction::Void {
            reason: "dup".into(),
        },
        "centre",
        4,
    )
    .unwrap();
    assert!(
        c.apply(
            CaseAction::Supervise {
                note: "again".into()
            },
            "centre",
            5
        )
        .is_err()
    );
}

#[test]
fn second_dispatch_after_two_returns_or_two_reworks() {
    let mut router = Router::default_teams();
    router.alternatives.insert(
        "*".into(),
        [(CaseType::ManholeCover, "municipal-b".to_owned())].into(),
    );
    let back = |c: &mut Case, at| {
        c.apply(
            CaseAction::Return {
                reason: "not ours".into(),
            },
            "li.wei",
            at,
        )
        .unwrap();
    };
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    back(&mut c, 2);
    assert_eq!(router.second_dispatch(&c, ActionKind::Return), None);
    c.apply(dispatch(), "centre", 3).unwrap();
    back(&mut c, 4);
    let (team, why) = router.second_dispatch(&c, ActionKind::Return).unwrap();
    assert_eq!(
        (team.as_str(), why.as_str()),
        ("municipal-b", "returned 2 times")
    );
    let t = c.second_dispatch(team, &why, 5).unwrap();
    assert_eq!(
        (t.action.as_str(), t.from, t.to),
        ("dispatch", Some(CaseState::Returned), CaseState::Dispatched)
    );
    assert_eq!(
        t.note,
        "second dispatch (二次派遣) to municipal-b, from municipal: returned 2 times"
    );
    assert_eq!(c.team.as_deref(), Some("municipal-b"));
    // Already with the alternative team: no second dispatch to itself.
    assert_eq!(router.second_dispatch(&c, ActionKind::Return), None);

    // Rework twice.
    let mut c = case();
    c.apply(dispatch(), "system", 1).unwrap();
    for round in 0..2 {
        c.apply(CaseAction::Accept, "t", 10 + round).unwrap();
        c.apply(
            CaseAction::Resolve {
                note: String::new(),
            },
            "t",
            20 + round,
        )
        .unwrap();
        c.apply(
            CaseAction::Rework {
                note: "still tilted".into(),
            },
            "system",
            30 + round,
        )
        .unwrap();
    }
    let (team, why) = router.second_dispatch(&c, ActionKind::Rework).unwrap();
    assert_eq!(why, "failed verification 2 times (rework)");
    let t = c.second_dispatch(team, &why, 40).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Some(CaseState::Dispatched), CaseState::Dispatched)
    );
    // No alternative configured: nothing.
    let plain = Router::default_teams();
    assert_eq!(plain.second_dispatch(&c, ActionKind::Rework), None);
    // A second dispatch is not made from other states.
    let mut accepted = case();
    accepted.apply(dispatch(), "system", 1).unwrap();
    accepted.apply(CaseAction::Accept, "t", 2).unwrap();
    assert!(accepted.second_dispatch("x".into(), "why", 3).is_err());
}
