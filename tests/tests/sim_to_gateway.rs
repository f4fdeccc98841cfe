//! Simulated nodes running the real firmware, over MQTT to a gateway on embedded defaults:
//! their readings arrive, a cover lifted in the physical model shows up in the API, and a
//! broker connection killed without a clean disconnect marks the device offline (last will).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use streetgate_firmware::platform::Now;
use streetgate_gateway::app;
use streetgate_gateway::config::Config;
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{DeviceId, DeviceKind};
use streetgate_simulators::mqtt::{LinkStats, MqttLink};
use streetgate_simulators::node::{SimNode, World};

const INVENTORY: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
MH-7,manhole,4106020103000007,35.7476,114.2975,410602001001001,,,,,mqtt,
BN-7,bin,4106020305000007,35.7477,114.2976,410602001001001,,,,1000,mqtt,
";

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "current_thread")]
async fn simulated_devices_report_through_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.listen = "127.0.0.1:0".parse().unwrap();
    config.store.path = dir.path().join("streetgate.db");
    config.store.flush_interval_ms = 10;
    let gw = app::start(config).await.unwrap();
    let base = format!("http://{}", gw.http_addr);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/devices/import"))
        .body(INVENTORY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let broker = gw.broker_addr.expect("embedded broker");
    let stats = Arc::new(LinkStats::default());
    let mut nodes = Vec::new();
    for (id, kind) in [("MH-7", DeviceKind::Manhole), ("BN-7", DeviceKind::Bin)] {
        let id = DeviceId::new(id).unwrap();
        let node = SimNode::new(id.clone(), kind, 11, Encoding::Binary);
        let mut will = [0u8; 512];
        let n = node.node().last_will(&mut will).unwrap();
        let link = MqttLink::connect(
            &tokio::runtime::Handle::current(),
            &broker.ip().to_string(),
            broker.port(),
            &id,
            will[..n].to_vec(),
            stats.clone(),
        );
        nodes.push((node, link));
    }
    let World::Cover(cover) = nodes[0].0.world.clone() else {
        panic!("cover")
    };

    // Simulated time runs 1 s per 20 ms of wall time.
    let mut t = 0u64;
    let mut step = async |nodes: &mut Vec<(SimNode, MqttLink)>, n: u64| {
        for _ in 0..n {
            t += 1;
            for (node, link) in nodes.iter_mut() {
                node.tick(
                    Now {
                        mono_ms: t * 1000,
                        unix_ms: Some(1_763_800_000_000 + t * 1000),
                    },
                    link,
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    step(&mut nodes, 30).await;
    let (status, latest) = get(&client, &base, "/api/devices/MH-7/latest").await;
    assert_eq!(status, 200, "{latest}");
    assert!(
        latest
            .pointer("/by_type/telemetry/data/manhole/tilt_deg")
            .and_then(Value::as_f64)
            .is_some_and(|v| v < 5.0),
        "{latest}"
    );
    let (status, _) = get(&client, &base, "/api/devices/BN-7/latest").await;
    assert_eq!(status, 200);

    cover.borrow_mut().lifted = true;
    let mut seen_open = false;
    for _ in 0..40 {
        step(&mut nodes, 1).await;
        let (_, latest) = get(&client, &base, "/api/devices/MH-7/latest").await;
        let tilt = latest
            .pointer("/by_type/telemetry/data/manhole/tilt_deg")
            .and_then(Value::as_f64);
        let alarm = latest
            .pointer("/by_type/alarm/data/alarm")
            .and_then(Value::as_str);
        if tilt.is_some_and(|v| v > 60.0) && alarm == Some("cover_open") {
            seen_open = true;
            break;
        }
    }
    let (_, latest) = get(&client, &base, "/api/devices/MH-7/latest").await;
    assert!(
        seen_open,
        "the lifted cover never showed in the API: {latest}"
    );
    assert!(stats.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // Keep reporting: the open cover is one case, registered and dispatched, however many
    // messages follow.
    let mut cases = Value::Null;
    for _ in 0..100 {
        step(&mut nodes, 1).await;
        cases = get(&client, &base, "/api/cases").await.1;
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
    assert_eq!(nodes[0].0.node().outbox().dropped_telemetry(), 0);

    // The bin's modem dies: no clean disconnect, so the broker publishes its last will.
    nodes[1].1.abort();
    let mut offline = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, latest) = get(&client, &base, "/api/devices/BN-7/latest").await;
        offline = latest
            .pointer("/by_type/status/data/online")
            .cloned()
            .unwrap_or(Value::Null);
        if offline == Value::Bool(false) {
            break;
        }
    }
    assert_eq!(offline, Value::Bool(false), "last will not seen");
    gw.shutdown().await.unwrap();
}
