//! Simulated nodes running the real firmware, over MQTT to a gateway on embedded defaults:
//! their readings arrive, a cover lifted in the physical model becomes one urgent case that the
//! team works through the API, and a modem that dies without a clean disconnect is marked
//! offline by its last will.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{DeviceId, DeviceKind};
use streetgate_simulators::node::{SimNode, World};
use support::{Clock, Gateway};

const INVENTORY: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
MH-7,manhole,4106020103000007,35.7476,114.2975,410602001001001,,,,,mqtt,
BN-7,bin,4106020305000007,35.7477,114.2976,410602001001001,,,,1000,mqtt,
";

#[tokio::test(flavor = "current_thread")]
async fn simulated_devices_report_through_the_broker() {
    let gw = Gateway::start(INVENTORY).await;
    let mut nodes: Vec<_> = [("MH-7", DeviceKind::Manhole), ("BN-7", DeviceKind::Bin)]
        .into_iter()
        .map(|(id, kind)| {
            gw.connect(SimNode::new(
                DeviceId::new(id).unwrap(),
                kind,
                11,
                Encoding::Binary,
            ))
        })
        .collect();
    let World::Cover(cover) = nodes[0].0.world.clone() else {
        panic!("cover")
    };
    // Simulated time runs 1 s per 20 ms of wall time.
    let mut clock = Clock {
        unix0_ms: 1_763_800_000_000,
        t_s: 0,
        step_s: 1,
        pause_ms: 20,
    };

    clock.run(&mut nodes, 30).await;
    let (status, latest) = gw.get("/api/devices/MH-7/latest").await;
    assert_eq!(status, 200, "{latest}");
    assert!(
        latest
            .pointer("/by_type/telemetry/data/manhole/tilt_deg")
            .and_then(Value::as_f64)
            .is_some_and(|v| v < 5.0),
        "{latest}"
    );
    assert_eq!(gw.get("/api/devices/BN-7/latest").await.0, 200);

    cover.borrow_mut().lifted = true;
    let mut latest = Value::Null;
    for _ in 0..40 {
        clock.run(&mut nodes, 1).await;
        latest = gw.get("/api/devices/MH-7/latest").await.1;
        let tilt = latest
            .pointer("/by_type/telemetry/data/manhole/tilt_deg")
            .and_then(Value::as_f64);
        let alarm = latest
            .pointer("/by_type/alarm/data/alarm")
            .and_then(Value::as_str);
        if tilt.is_some_and(|v| v > 60.0) && alarm == Some("cover_open") {
            break;
        }
    }
    assert_eq!(
        latest
            .pointer("/by_type/alarm/data/alarm")
            .and_then(Value::as_str),
        Some("cover_open"),
        "{latest}"
    );
    assert!(gw.stats.connects.load(Ordering::Relaxed) >= 2);
    assert_eq!(nodes[0].0.node().outbox().dropped_telemetry(), 0);

    // Keep reporting: the open cover is one case, registered and dispatched, however many
    // messages follow.
    let mut cases = Value::Null;
    for _ in 0..100 {
        clock.run(&mut nodes, 1).await;
        cases = gw.get("/api/cases").await.1;
        if cases.to_string().contains("dispatched") {
            break;
        }
    }
    assert_eq!(cases["total"], 1, "{cases}");
    let case = &cases["cases"][0];
    assert_eq!(case["case_type"], "manhole_cover", "{case}");
    assert_eq!(case["state"], "dispatched");
    assert_eq!(case["team"], "municipal");
    assert_eq!(case["urgent"], true);
    assert_eq!(case["devices"][0], "MH-7");
    let limit_ms = case["due_ms"].as_i64().unwrap() - case["opened_ms"].as_i64().unwrap();
    assert_eq!(
        limit_ms, 3_600_000,
        "an open cover gets the urgent time limit"
    );

    // The team works it through the API; refused transitions name the allowed ones.
    let id = case["id"].as_i64().unwrap();
    let path = format!("/api/cases/{id}/transitions");
    // As a member of the municipal team; the actor in the body is not who is recorded.
    let wang = gw
        .token(
            "wang",
            streetgate_gateway::auth::Role::TeamMember,
            Some("municipal"),
        )
        .await;
    let (status, err) = gw
        .post_as(&wang, &path, json!({"actor": "li", "action": "resolve"}))
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("allowed: accept, return, void"),
        "{err}"
    );
    let (status, accepted) = gw
        .post_as(&wang, &path, json!({"actor": "li", "action": "accept"}))
        .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["state"], "accepted");
    // The transitions; a cover that tilts and then opens may also have an escalation event
    // (from = to) between them, depending on which alarm arrived first.
    let entries = accepted["history"].as_array().unwrap();
    let history: Vec<&str> = entries
        .iter()
        .filter(|h| h["from"] != h["to"])
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["registered", "dispatched", "accepted"]);
    assert!(
        entries
            .iter()
            .filter(|h| h["from"] == h["to"])
            .all(|h| h["note"].as_str().unwrap().starts_with("escalated")),
        "{entries:?}"
    );
    assert_eq!(entries.last().unwrap()["actor"], "wang");
    // A hotline report without a device.
    let (status, hotline) = gw
        .post(
            "/api/cases",
            json!({
                "actor": "12345", "source": "hotline", "type": "other", "grid": "410602001001001",
                "detail": "broken paving outside No. 12", "location": "Qibin Rd 12"
            }),
        )
        .await;
    assert_eq!(status, 200, "{hotline}");
    assert_eq!(
        (hotline["source"].as_str(), hotline["state"].as_str()),
        (Some("hotline"), Some("dispatched"))
    );

    // The bin's modem dies: no clean disconnect, so the broker publishes its last will.
    nodes[1].1.abort();
    let mut online = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        online = gw
            .get("/api/devices/BN-7/latest")
            .await
            .1
            .pointer("/by_type/status/data/online")
            .cloned()
            .unwrap_or(Value::Null);
        if online == Value::Bool(false) {
            break;
        }
    }
    assert_eq!(online, Value::Bool(false), "last will not seen");
    gw.running.shutdown().await.unwrap();
}
