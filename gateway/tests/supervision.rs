//! Supervision (督办), on-site reports, the second dispatch and notification routing, on a
//! whole gateway running a simulated clock (600×: a simulated minute is 100 ms), with local
//! webhook receivers:
//!
//! - an urgent manhole case accepted and not reported on site within 30 minutes climbs a
//!   level; the crew's on-site report is taken once;
//! - an overdue case climbs the configured levels exactly once each, across a restart of the
//!   gateway;
//! - a sink filtered to one team gets only that team's cases; a sink for the centre gets only
//!   the supervision levels that tell the centre, once per case;
//! - a sink in quiet hours holds the events of cases that are not urgent and sends them, in
//!   order and once, when the hours end (after a restart in between), while an urgent case's
//!   events go at once;
//! - a case returned twice goes to its route's alternative team.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use common::{Gateway, Http, eventually};
use serde_json::{Value, json};
use streetgate_gateway::alerts::WebhookConfig;
use streetgate_gateway::alerts::routing::{QuietHours, SinkFilter};
use streetgate_gateway::auth::Role;
use streetgate_gateway::cases::{Recipient, SupervisionForm, SupervisionLevel};
use streetgate_gateway::clock::wall_ms;
use streetgate_gateway::config::Config;
use streetgate_gateway::model::CaseType;

/// Simulated seconds per wall second.
const SPEED: f64 = 600.0;
/// 2026-12-03 14:30 UTC: 22:30 in the city (UTC+8).
const START_MS: i64 = 1_796_308_200_000;
const MINUTE: i64 = 60_000;

/// What each receiver got: (sink, simulated time of receipt, body).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, i64, Value)>>>);

async fn receive(
    State((r, anchor)): State<(Received, i64)>,
    Path(sink): Path<String>,
    body: axum::Json<Value>,
) -> &'static str {
    let sim = sim_at(anchor, wall_ms());
    r.0.lock().unwrap().push((sink, sim, body.0));
    "ok"
}

fn sim_at(anchor: i64, wall: i64) -> i64 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let elapsed = ((wall - anchor) as f64 * SPEED) as i64;
    START_MS + elapsed
}

impl Received {
    fn of(&self, sink: &str) -> Vec<(i64, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == sink)
            .map(|(_, t, b)| (*t, b.clone()))
            .collect()
    }
}

fn config(dir: &tempfile::TempDir, anchor: i64, receiver: &str) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    c.store.path = dir.path().join("data/streetgate.db");
    c.mqtt.reconnect_min_ms = 50;
    c.mqtt.reconnect_max_ms = 1000;
    c.clock.speed = SPEED;
    c.clock.start_ms = Some(START_MS);
    c.clock.anchor_wall_ms = Some(anchor);
    // Short limits, so the levels come within seconds: `other` cases are due in 30 minutes,
    // levels at the deadline, an hour after and two hours after.
    c.cases.limits_min.insert(CaseType::Other, 30);
    c.supervision.levels = vec![
        SupervisionLevel {
            after_due_min: 0,
            form: SupervisionForm::Phone,
            recipients: vec![Recipient::Team],
        },
        SupervisionLevel {
            after_due_min: 60,
            form: SupervisionForm::Written,
            recipients: vec![Recipient::Team, Recipient::Supervisor],
        },
        SupervisionLevel {
            after_due_min: 120,
            form: SupervisionForm::OnSite,
            recipients: vec![Recipient::Team, Recipient::Supervisor, Recipient::Centre],
        },
    ];
    c.routing.alternatives.insert(
        "*".into(),
        BTreeMap::from([
            (CaseType::BinFull, "sanitation-b".to_owned()),
            (CaseType::LampFault, "lighting-b".to_owned()),
        ]),
    );
    c.alerts.mqtt = false;
    c.alerts.poll_interval_ms = 50;
    c.alerts.retry_min_ms = 50;
    c.alerts.retry_max_ms = 200;
    let hook = |name: &str| WebhookConfig {
        name: name.into(),
        url: format!("{receiver}/{name}"),
        ..WebhookConfig::default()
    };
    c.alerts.webhooks = vec![
        hook("all"),
        WebhookConfig {
            filter: SinkFilter {
                teams: vec!["municipal".into()],
                ..SinkFilter::default()
            },
            ..hook("municipal-only")
        },
        WebhookConfig {
            filter: SinkFilter {
                actions: vec!["supervise".into()],
                ..SinkFilter::default()
            },
            recipient: Some(Recipient::Centre),
            ..hook("centre")
        },
        WebhookConfig {
            quiet_hours: Some(QuietHours::try_from("22:00-23:30".to_owned()).unwrap()),
            ..hook("quiet")
        },
    ];
    c
}

/// Webhook receivers at `{base}/{sink}`: what they got, the wall-clock anchor of the simulated
/// clock, and the base URL.
async fn receivers() -> (Received, i64, String) {
    let received = Received::default();
    let anchor = wall_ms();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{sink}", post(receive))
        .with_state((received.clone(), anchor));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, anchor, receiver)
}

async fn report(http: &Http, body: Value) -> i64 {
    let (status, case) = http.post_json("/api/cases", &body).await;
    assert_eq!(status, 200, "{case}");
    case["id"].as_i64().unwrap()
}

async fn case(http: &Http, id: i64) -> Value {
    let (status, case) = http.get(&format!("/api/cases/{id}")).await;
    assert_eq!(status, 200, "{case}");
    case
}

async fn act(http: &Http, id: i64, body: Value) -> (u16, Value) {
    http.post_json(&format!("/api/cases/{id}/transitions"), &body)
        .await
}

/// The supervision notes of a case, oldest first.
fn supervisions(case: &Value) -> Vec<String> {
    case["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["action"] == "supervise")
        .map(|h| h["note"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervision_second_dispatch_and_notification_routing() {
    let (received, anchor, receiver) = receivers().await;

    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(config(&dir, anchor, &receiver), dir).await;
    let dispatcher = gw.http_as("wang.fang", Role::Dispatcher, None, None).await;
    let municipal = gw
        .http_as("li.wei", Role::TeamMember, Some("municipal"), None)
        .await;
    let sanitation = gw
        .http_as("zhang.min", Role::TeamMember, Some("sanitation"), None)
        .await;

    // An urgent manhole case, accepted at once by the municipal team.
    let cover = report(
        &dispatcher,
        json!({"source": "patrol", "type": "manhole_cover", "grid": "320508001001001",
               "detail": "cover lifted", "device_id": "MH-1", "urgent": true}),
    )
    .await;
    let (status, accepted) = act(&municipal, cover, json!({"action": "accept"})).await;
    assert_eq!(status, 200, "{accepted}");
    let accepted_at = accepted["updated_ms"].as_i64().unwrap();
    assert_eq!(
        accepted["on_site_due_ms"].as_i64(),
        Some(accepted_at + 30 * MINUTE),
        "{accepted}"
    );
    // A non-urgent case for sanitation, and one for the grid chief that will be overdue.
    let bin = report(
        &dispatcher,
        json!({"source": "hotline", "type": "bin_full", "grid": "320508001001002",
               "detail": "bin full at the bus stop", "location": "Xinghu St 88"}),
    )
    .await;
    let other = report(
        &dispatcher,
        json!({"source": "hotline", "type": "other", "grid": "320508001001002",
               "detail": "fallen sign", "location": "Xinghu St 90"}),
    )
    .await;
    assert_eq!(case(&gw.http, other).await["team"], "grid-chief");

    // Not on site 30 minutes after acceptance: level 1, by the system.
    eventually(
        "the cover case supervised for being late on site",
        Duration::from_secs(20),
        || async { !supervisions(&case(&gw.http, cover).await).is_empty() },
    )
    .await;
    let c = case(&gw.http, cover).await;
    assert_eq!(c["supervision_level"], 1, "{c}");
    assert_eq!(c["on_site_due_ms"], Value::Null, "{c}");
    assert_eq!(
        supervisions(&c),
        ["level 1 (phone; told team): not on site within the on-site time limit of 30 min"]
    );
    let entry = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "supervise")
        .unwrap();
    assert_eq!(
        (&entry["actor"], &entry["from"], &entry["to"]),
        (&json!("system"), &json!("accepted"), &json!("accepted"))
    );
    let late_at = entry["at_ms"].as_i64().unwrap();
    assert!(
        late_at > accepted_at + 30 * MINUTE,
        "{late_at} vs {accepted_at}"
    );
    // The crew then reports on site: once.
    let (status, body) = act(
        &municipal,
        cover,
        json!({"action": "on_site", "note": "crew here"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["on_site_ms"].as_i64().is_some(), "{body}");
    let (status, body) = act(&municipal, cover, json!({"action": "on_site"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("transition_refused")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already reported on site"),
        "{body}"
    );
    // Supervising is the centre's, not the team's.
    let (status, body) = act(
        &municipal,
        cover,
        json!({"action": "supervise", "note": "x"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // The sanitation team hands the bin case back twice: the second dispatch sends it to the
    // alternative team.
    for round in 0..2 {
        let (status, body) = act(
            &sanitation,
            bin,
            json!({"action": "return", "reason": format!("not ours ({round})")}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if round == 1 {
            // The answer is the case as it now is: with the other team, without its history.
            assert_eq!(body["team"], "sanitation-b", "{body}");
            assert!(body.get("history").is_none(), "{body}");
        }
        if round == 0 {
            assert_eq!(body["state"], "returned", "{body}");
            let (status, body) = act(
                &dispatcher,
                bin,
                json!({"action": "dispatch", "team": "sanitation"}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let b = case(&gw.http, bin).await;
    assert_eq!(
        (&b["state"], &b["team"], &b["returned_count"]),
        (&json!("dispatched"), &json!("sanitation-b"), &json!(2)),
        "{b}"
    );
    let last = b["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["actor"], &last["from"]),
        (&json!("dispatch"), &json!("system"), &json!("returned")),
        "{last}"
    );
    assert_eq!(
        last["note"],
        "second dispatch (二次派遣) to sanitation-b, from sanitation: returned 2 times"
    );
    // The old team no longer sees it.
    let (status, _) = sanitation.get(&format!("/api/cases/{bin}")).await;
    assert_eq!(status, 403);
    // A lamp case reported fixed and sent back as rework twice goes to the alternative team.
    let lighting = gw
        .http_as("chen.jie", Role::TeamMember, Some("lighting"), None)
        .await;
    let lamp = report(
        &dispatcher,
        json!({"source": "patrol", "type": "lamp_fault", "grid": "320508001001001",
               "detail": "lamp out", "device_id": "SL-1"}),
    )
    .await;
    for round in 0..2 {
        for body in [
            json!({"action": "accept"}),
            json!({"action": "resolve", "note": "lamp replaced"}),
        ] {
            let (status, answer) = act(&lighting, lamp, body).await;
            assert_eq!(status, 200, "{answer}");
        }
        let (status, answer) = act(
            &dispatcher,
            lamp,
            json!({"action": "rework", "note": format!("still dark ({round})")}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let team = if round == 0 { "lighting" } else { "lighting-b" };
        assert_eq!(
            (&answer["state"], &answer["team"]),
            (&json!("dispatched"), &json!(team)),
            "{answer}"
        );
    }
    let l = case(&gw.http, lamp).await;
    let last = l["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["note"],
        "second dispatch (二次派遣) to lighting-b, from lighting: failed verification 2 times (rework)"
    );

    // A dispatcher supervises the bin case by hand: level 1, with the note.
    let (status, body) = act(
        &dispatcher,
        bin,
        json!({"action": "supervise", "note": "call the new crew"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["supervision_level"], 1, "{body}");
    assert_eq!(
        supervisions(&body),
        ["level 1 (phone; told team): call the new crew"]
    );

    // The overdue case reaches level 1, then the gateway restarts.
    eventually(
        "the overdue case at level 1",
        Duration::from_secs(20),
        || async { case(&gw.http, other).await["supervision_level"] == 1 },
    )
    .await;
    let before_restart = sim_at(anchor, wall_ms());
    let Gateway { running, dir, .. } = gw;
    running.shutdown().await.unwrap();
    let gw = Gateway::start_with(config(&dir, anchor, &receiver), dir).await;
    // Level 2 an hour after the deadline, level 3 two hours after: each once.
    eventually(
        "the overdue case at level 3",
        Duration::from_secs(40),
        || async { case(&gw.http, other).await["supervision_level"] == 3 },
    )
    .await;
    let o = case(&gw.http, other).await;
    let notes = supervisions(&o);
    assert_eq!(notes.len(), 3, "{notes:?}");
    for (i, (level, form, told)) in [
        (1, "phone", "team"),
        (2, "written", "team, supervisor"),
        (3, "on_site", "team, supervisor, centre"),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            notes[i].starts_with(&format!("level {level} ({form}; told {told}): overdue by ")),
            "{notes:?}"
        );
    }
    let due = o["due_ms"].as_i64().unwrap();
    let times: Vec<i64> = o["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["action"] == "supervise")
        .map(|h| h["at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        times[0] > due && times[1] > due + 60 * MINUTE && times[2] > due + 120 * MINUTE,
        "{times:?} due {due}"
    );
    assert!(
        times[0] < before_restart && times[1] > before_restart,
        "{times:?} restart at {before_restart}"
    );
    // The cover case climbs on as well (overdue: its urgent limit is 60 min): level 3 once.
    eventually(
        "the cover case at level 3",
        Duration::from_secs(40),
        || async { case(&gw.http, cover).await["supervision_level"] == 3 },
    )
    .await;
    assert_eq!(supervisions(&case(&gw.http, cover).await).len(), 3);

    // Quiet hours end at 23:30: every event reaches the quiet sink once.
    let events = |sink: &str| -> Vec<(i64, i64, Value)> {
        received
            .of(sink)
            .into_iter()
            .map(|(t, b)| (b["event_id"].as_i64().unwrap(), t, b))
            .collect()
    };
    eventually(
        "every event at every unfiltered sink",
        Duration::from_secs(20),
        || async {
            let all: Vec<i64> = events("all").iter().map(|e| e.0).collect();
            let quiet: Vec<i64> = {
                let mut q: Vec<i64> = events("quiet").iter().map(|e| e.0).collect();
                q.sort_unstable();
                q
            };
            let mut all_sorted = all.clone();
            all_sorted.sort_unstable();
            all_sorted.dedup();
            // The last event of all: the cover case's level 3, at every sink it is for.
            let last_out = |sink: &str| {
                events(sink).iter().any(|(_, _, b)| {
                    b["case_id"] == cover
                        && b["note"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("level 3 "))
                })
            };
            ["all", "municipal-only", "centre"]
                .into_iter()
                .all(last_out)
                && quiet == all_sorted
        },
    )
    .await;
    let quiet_end = START_MS + 60 * MINUTE;
    let all = events("all");
    let mut ids: Vec<i64> = all.iter().map(|e| e.0).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "the unfiltered sink got an event twice: {ids:?}"
    );
    let quiet = events("quiet");
    let mut held_order = Vec::new();
    for (id, at, body) in &quiet {
        if !body["case"]["urgent"].as_bool().unwrap() {
            assert!(
                *at >= quiet_end - MINUTE,
                "sent in quiet hours at {at}: {body}"
            );
            held_order.push(*id);
        }
    }
    let mut sorted = held_order.clone();
    sorted.sort_unstable();
    assert_eq!(held_order, sorted, "held events out of order");
    assert!(
        quiet
            .iter()
            .any(|(_, _, b)| b["case_id"] == bin && b["action"] == "dispatch")
    );
    // The urgent case's events went at once, in the quiet hours: its acceptance and its
    // lateness on site.
    for action in ["accept", "supervise"] {
        assert!(
            quiet.iter().any(|(_, at, b)| b["case_id"] == cover
                && b["action"] == action
                && *at < quiet_end),
            "{action}: {quiet:?}"
        );
    }

    // The sink filtered to the municipal team: only its cases, including the escalations.
    let municipal_events = events("municipal-only");
    assert!(
        municipal_events
            .iter()
            .all(|(_, _, b)| b["case"]["team"] == "municipal"),
        "{municipal_events:?}"
    );
    assert!(
        municipal_events
            .iter()
            .any(|(_, _, b)| b["action"] == "supervise")
    );
    let last_municipal = municipal_events.iter().map(|e| e.0).max().unwrap();
    assert!(
        all.iter()
            .any(|(id, _, b)| *id < last_municipal && b["case"]["team"] != "municipal"),
        "other teams' events came before the municipal sink's last one, and were passed over"
    );
    // The centre's sink: only level 3 (the level that tells the centre), once per case.
    let centre = events("centre");
    let mut per_case: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, _, b) in &centre {
        assert_eq!(b["action"], "supervise", "{b}");
        assert!(b["note"].as_str().unwrap().starts_with("level 3 "), "{b}");
        *per_case.entry(b["case_id"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(per_case, BTreeMap::from([(cover, 1), (other, 1)]));
    gw.running.shutdown().await.unwrap();
}

/// A fleet-wide outage (every device's last will at once) is one case and one summary: no
/// per-device offline case, no message per device; the case names the devices cut off and
/// closes itself when the fleet is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_wide_outage_sends_one_summary() {
    use common::{Msg, publish, topic};
    let (received, anchor, receiver) = receivers().await;

    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir, anchor, &receiver);
    // Real time, at noon in the city (no lamp is expected on), four devices: an outage is
    // three of them at once.
    c.clock.speed = 1.0;
    c.clock.start_ms = Some(START_MS - 10 * 60 * MINUTE - 30 * MINUTE);
    c.rules.outage_min_devices = 3;
    c.broker.auth = streetgate_gateway::broker::AuthMode::Open;
    c.alerts.webhooks.truncate(1);
    let gw = Gateway::start_with(c, dir).await;
    gw.import_inventory().await;
    let devices = [
        ("SL-1", "streetlight"),
        ("MH-1", "manhole"),
        ("BN-1", "bin"),
        ("WC-1", "toilet"),
    ];
    let status = |online: bool, seq: u32| {
        devices
            .iter()
            .map(|(id, kind)| {
                Msg::new(
                    topic(id, "status"),
                    format!(
                        r#"{{"device_id":"{id}","seq":{seq},"kind":"{kind}","online":{online}}}"#
                    ),
                )
            })
            .collect::<Vec<_>>()
    };
    publish(&gw.broker(), status(true, 1)).await;
    for (id, _) in devices {
        eventually(
            "every device heard from",
            Duration::from_secs(10),
            || async {
                let (_, d) = gw.http.get(&format!("/api/devices/{id}")).await;
                d["last_seq"] == 1
            },
        )
        .await;
    }
    // The broker goes: every device's last will at once.
    publish(&gw.broker(), status(false, 0)).await;
    let fleet = |list: &Value| -> Option<Value> {
        list["cases"]
            .as_array()?
            .iter()
            .find(|c| c["subject_key"] == "fleet")
            .cloned()
    };
    eventually("the outage's case", Duration::from_secs(15), || async {
        let (_, list) = gw.http.get("/api/cases?limit=50").await;
        fleet(&list).is_some()
    })
    .await;
    let (_, list) = gw.http.get("/api/cases?limit=50").await;
    let case = fleet(&list).unwrap();
    assert_eq!(case["case_type"], "device_offline", "{case}");
    assert_eq!(case["grid"], "city");
    assert_eq!(case["urgent"], true);
    assert_eq!(case["devices"].as_array().unwrap().len(), 4, "{case}");
    let detail = case["detail"].as_str().unwrap();
    assert!(
        detail.contains("4 of 4 devices lost their connection at once")
            && detail.contains("320508001001001 2")
            && detail.contains("320508001001002 2"),
        "{detail}"
    );
    assert_eq!(gw.metric("streetgate_fleet_outage_devices").await, 4.0);

    // The fleet is back: the case closes itself.
    publish(&gw.broker(), status(true, 2)).await;
    let id = case["id"].as_i64().unwrap();
    eventually(
        "the outage's case closed",
        Duration::from_secs(15),
        || async {
            let (_, c) = gw.http.get(&format!("/api/cases/{id}")).await;
            c["state"] == "closed"
        },
    )
    .await;
    eventually("its closure announced", Duration::from_secs(10), || async {
        received
            .of("all")
            .iter()
            .any(|(_, b)| b["case_id"] == id && b["case"]["state"] == "closed")
    })
    .await;
    // One case, and nothing else: every message is about the outage's case.
    let (_, list) = gw.http.get("/api/cases?limit=50").await;
    assert_eq!(list["total"], 1, "{list}");
    let got = received.of("all");
    assert!(
        got.iter().all(|(_, b)| b["case_id"] == id),
        "messages about other cases: {got:?}"
    );
    let registrations = got
        .iter()
        .filter(|(_, b)| b["action"] == "register")
        .count();
    assert_eq!(registrations, 1);
    let counted = |event: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(&format!(
                "streetgate_automation_cases_total{{event=\"{event}\"}}"
            ))
            .await
        }
    };
    eventually("the counters at a tick", Duration::from_secs(5), || async {
        counted("self_recovered").await + counted("verified").await == 1.0
    })
    .await;
    assert_eq!(counted("registered").await, 1.0);
}
