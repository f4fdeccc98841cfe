//! The whole gateway over real sockets: embedded broker, MQTT ingest, store and HTTP API.

mod common;

use std::time::Duration;

use common::{Gateway, Msg, bin_telemetry, eventually, publish, topic};
use streetgate_protocols::codec::encode_binary;
use streetgate_protocols::{BinTelemetry, DeviceId, Telemetry, TelemetryData};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_published_to_embedded_broker_is_served_as_latest() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    publish(
        &gw.broker(),
        vec![Msg::new(
            topic("BN-1", "telemetry"),
            bin_telemetry("BN-1", 1, 42.5),
        )],
    )
    .await;

    eventually(
        "latest reading of BN-1",
        Duration::from_secs(10),
        || async { gw.http.get("/api/devices/BN-1/latest").await.0 == 200 },
    )
    .await;
    let (_, body) = gw.http.get("/api/devices/BN-1/latest").await;
    let latest = &body["latest"];
    assert_eq!(latest["type"], "telemetry", "{body}");
    assert_eq!(latest["kind"], "bin");
    assert_eq!(latest["transport"], "mqtt");
    assert_eq!(latest["seq"], 1);
    assert_eq!(latest["data"]["bin"]["fill_pct"], 42.5);
    assert_eq!(
        gw.metric("streetgate_ingest_total{transport=\"mqtt\"}")
            .await,
        1.0
    );

    // Another device that has not reported yet.
    let (status, body) = gw.http.get("/api/devices/SL-1/latest").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_reading")));
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_listed_as_unregistered_never_as_reading() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let status = r#"{"device_id":"ZZ-404","seq":1,"kind":"manhole","online":true}"#;
    publish(
        &gw.broker(),
        vec![
            Msg::new(topic("ZZ-404", "status"), status),
            Msg::new(
                topic("ZZ-404", "telemetry"),
                bin_telemetry("ZZ-404", 2, 10.0),
            ),
        ],
    )
    .await;
    eventually(
        "ZZ-404 listed as unregistered",
        Duration::from_secs(10),
        || async {
            let (_, body) = gw.http.get("/api/unregistered").await;
            body["devices"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|u| u["id"] == "ZZ-404" && u["message_count"] == 2)
            })
        },
    )
    .await;
    let (_, body) = gw.http.get("/api/unregistered").await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["devices"][0]["claimed_kind"], "manhole");
    let (status, body) = gw.http.get("/api/devices/ZZ-404/latest").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("device_not_found"))
    );
    assert_eq!(
        gw.metric("streetgate_ingest_total{transport=\"mqtt\"}")
            .await,
        0.0
    );
    assert_eq!(
        gw.metric("streetgate_rejected_total{reason=\"unknown_device\"}")
            .await,
        2.0
    );
    assert_eq!(gw.metric("streetgate_unregistered_devices").await, 1.0);

    // Registering it removes it from the list.
    let csv = "id,kind,lat,lon,grid\nZZ-404,manhole,31,120,G\n";
    assert_eq!(gw.http.post_text("/api/devices/import", csv).await.0, 200);
    assert_eq!(gw.http.get("/api/unregistered").await.1["total"], 0);
    gw.running.shutdown().await.unwrap();
}

fn nan_binary(id: &str) -> Vec<u8> {
    let msg = Telemetry {
        device_id: DeviceId::new(id).expect("valid id"),
        seq: 50,
        ts_ms: None,
        data: TelemetryData::Bin(BinTelemetry {
            fill_pct: f32::NAN,
            distance_mm: None,
            temperature_c: 20.0,
            tilt_deg: None,
            battery_pct: 90,
        }),
    };
    let mut buf = [0u8; 512];
    let n = encode_binary(&msg, &mut buf).expect("fits");
    buf[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_barrage_is_counted_by_reason_and_leaves_the_gateway_healthy() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let t = topic("BN-1", "telemetry");
    let mut barrage = vec![
        Msg::new(&t, bin_telemetry("BN-1", 1, 10.0)),
        // Garbage bytes.
        Msg::new(&t, vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]),
        // Oversized (limit 4096).
        Msg::new(&t, format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000))),
        // Wrong types.
        Msg::new(
            &t,
            r#"{"device_id":"BN-1","seq":"two","data":{"bin":{"fill_pct":1,"temperature_c":1,"battery_pct":1}}}"#,
        ),
        // Truncated JSON.
        Msg::new(&t, r#"{"device_id":"BN-1","seq":3,"da"#),
        // NaN in the binary encoding.
        Msg::new(&t, nan_binary("BN-1")),
        // Physically impossible.
        Msg::new(&t, bin_telemetry("BN-1", 4, 900.0)),
        // Payload names another device than the topic.
        Msg::new(&t, bin_telemetry("MH-1", 5, 10.0)),
        // Telemetry of another kind than inventoried.
        Msg::new(topic("MH-1", "telemetry"), bin_telemetry("MH-1", 6, 10.0)),
        // A device level that is not a device id.
        Msg::new(
            "streetgate/v1/bad#id!/telemetry".replace('#', "_"),
            bin_telemetry("BN-1", 7, 1.0),
        ),
        // Empty payload.
        Msg::new(topic("BN-1", "event"), Vec::new()),
        // An unknown channel (a bad topic) and a duplicate sequence number.
        Msg::new(topic("BN-1", "nonsense"), "{}"),
        Msg::new(&t, bin_telemetry("BN-1", 1, 11.0)),
    ];
    // Repeat the garbage many times to make it a barrage.
    for i in 0..200u32 {
        barrage.push(Msg::new(&t, format!("not json {i}")));
    }
    barrage.push(Msg::new(&t, bin_telemetry("BN-1", 8, 77.0)));
    publish(&gw.broker(), barrage).await;

    eventually(
        "the last valid reading",
        Duration::from_secs(10),
        || async {
            let (status, body) = gw.http.get("/api/devices/BN-1/latest").await;
            status == 200 && body["latest"]["seq"] == 8
        },
    )
    .await;

    let expect = [
        ("unknown_encoding", 201.0),
        ("too_large", 1.0),
        ("malformed", 2.0),
        ("invalid_value", 2.0),
        ("device_mismatch", 1.0),
        ("kind_mismatch", 1.0),
        ("bad_topic", 2.0),
        ("empty", 1.0),
        ("duplicate", 1.0),
    ];
    for (reason, n) in expect {
        let sample = format!("streetgate_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(gw.metric(&sample).await, n, "{sample}");
    }
    assert_eq!(
        gw.metric("streetgate_ingest_total{transport=\"mqtt\"}")
            .await,
        2.0
    );
    // 2..=7 were rejected before the sequence check, so they are missing from the device's
    // sequence; they are counted as lost only once they leave the 64-message reorder window.
    assert_eq!(gw.metric("streetgate_seq_gaps_total").await, 0.0);

    let (status, health) = gw.http.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(gw.metric("streetgate_mqtt_connections_total").await, 1.0);

    // The counters reach the store (all-time totals) too.
    eventually(
        "rejection totals stored",
        Duration::from_secs(5),
        || async {
            let (_, r) = gw.http.get("/api/rejections").await;
            r["all_time"]["unknown_encoding"] == 201
        },
    )
    .await;
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_everything_accepted_into_the_store() {
    let gw = Gateway::start(|c| {
        c.store.batch_max = 100_000;
    })
    .await;
    gw.import_inventory().await;
    let n = 300u32;
    let msgs = (1..=n)
        .map(|seq| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", seq, 50.0)))
        .collect();
    publish(&gw.broker(), msgs).await;
    eventually("all messages ingested", Duration::from_secs(10), || async {
        gw.running.state.metrics.ingested_total("mqtt") == u64::from(n)
    })
    .await;
    // Shut down at once: whatever is still queued must be committed by the drain.
    let path = gw.dir.path().join("data/streetgate.db");
    let Gateway { running, dir, .. } = gw;
    running.shutdown().await.unwrap();

    use streetgate_gateway::store::{ReadingStore, SqliteStore, Store};
    let store = SqliteStore::open(&path).await.unwrap();
    let history = store.reading_history("BN-1", 1000).await.unwrap();
    assert_eq!(history.len(), n as usize);
    let latest = store.latest_readings("BN-1").await.unwrap();
    assert_eq!(latest[0].body["seq"], n);
    store.close().await;
    drop(dir);
}

/// Against an external broker (Mosquitto in CI) when `STREETGATE_TEST_MQTT_URL` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_through_external_broker() {
    let Ok(url) = std::env::var("STREETGATE_TEST_MQTT_URL") else {
        println!(
            "note: STREETGATE_TEST_MQTT_URL is not set; skipping the external-broker test (e.g. STREETGATE_TEST_MQTT_URL=mqtt://127.0.0.1:1883)"
        );
        return;
    };
    let parsed = streetgate_gateway::config::MqttUrl::parse(&url)
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_MQTT_URL={url}: {e}"));
    let broker = (parsed.host.clone(), parsed.port);
    // Fail, do not skip, when the broker is unreachable.
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((parsed.host.as_str(), parsed.port)),
    )
    .await
    .unwrap_or_else(|_| panic!("STREETGATE_TEST_MQTT_URL={url}: connection timed out"))
    .unwrap_or_else(|e| panic!("STREETGATE_TEST_MQTT_URL={url} is set but unreachable: {e}"));

    // Unique ids: the broker outlives this test (persistent sessions, retained messages).
    let suffix = rand::random::<u32>();
    let device = format!("EXT-{suffix}");
    let gw = Gateway::start(|c| {
        c.mqtt.url = Some(url.clone());
        c.broker.embedded = Some(false);
        c.mqtt.client_id = format!("streetgate-test-{suffix}");
    })
    .await;
    assert!(gw.running.broker_addr.is_none());
    let csv = format!("id,kind,lat,lon,grid\n{device},bin,31,120,G\n");
    assert_eq!(gw.http.post_text("/api/devices/import", &csv).await.0, 200);
    publish(
        &broker,
        vec![Msg::new(
            topic(&device, "telemetry"),
            bin_telemetry(&device, 1, 64.0),
        )],
    )
    .await;
    eventually(
        "latest reading via the external broker",
        Duration::from_secs(10),
        || async {
            gw.http
                .get(&format!("/api/devices/{device}/latest"))
                .await
                .0
                == 200
        },
    )
    .await;
    let (_, body) = gw.http.get(&format!("/api/devices/{device}/latest")).await;
    assert_eq!(body["latest"]["data"]["bin"]["fill_pct"], 64.0);
    gw.running.shutdown().await.unwrap();
    // Do not leave a persistent session behind on a shared broker.
    common::clear_session(&broker, &format!("streetgate-test-{suffix}")).await;
}

/// A case's type and urgency never go down: a bin that overflows opens an urgent `bin_overflow`
/// (both alarms of one reading are one case), and when it drops to merely full the case is still
/// an urgent `bin_overflow` (the easing recorded in its history), and it closes as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_type_never_goes_down_and_changes_are_history_events() {
    let gw = Gateway::start(|c| c.rules.hold_s = 0).await;
    gw.import_inventory().await;
    let t = topic("BN-1", "telemetry");
    let b = gw.broker();
    let case = || async {
        let (_, cases) = gw.http.get("/api/cases?limit=10").await;
        cases["cases"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c["subject_key"] == "device:BN-1")
                    .cloned()
            })
            .unwrap_or_default()
    };
    publish(&b, vec![Msg::new(&t, bin_telemetry("BN-1", 1, 105.0))]).await;
    eventually("bin case", Duration::from_secs(10), || async {
        case().await["urgent"] == true
    })
    .await;
    assert_eq!(case().await["case_type"], "bin_overflow");
    publish(&b, vec![Msg::new(&t, bin_telemetry("BN-1", 2, 85.0))]).await;
    let notes = || async {
        let (_, detail) = gw
            .http
            .get(&format!("/api/cases/{}", case().await["id"]))
            .await;
        detail["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|e| e["note"].as_str().map(str::to_owned))
                    .collect::<Vec<String>>()
            })
            .unwrap_or_default()
    };
    eventually("the easing recorded", Duration::from_secs(10), || async {
        notes().await.iter().any(|n| n.starts_with("de-escalated"))
    })
    .await;
    let c = case().await;
    assert_eq!(c["case_type"], "bin_overflow", "{c}");
    assert_eq!(c["urgent"], true, "{c}");
    publish(&b, vec![Msg::new(&t, bin_telemetry("BN-1", 3, 5.0))]).await;
    eventually("closed", Duration::from_secs(10), || async {
        case().await["state"] == "closed"
    })
    .await;
    assert_eq!(case().await["case_type"], "bin_overflow");
    gw.running.shutdown().await.unwrap();
}

/// Hostile topics on the embedded broker: every device publish under the prefix reaches the
/// gateway and is counted under one documented reason. A device id in the gateway's reserved
/// `_alerts` tree, an unknown channel and extra levels are bad topics (never an unregistered
/// device); a device publishing on a downlink channel is the wrong direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_topic_is_counted_under_one_documented_reason() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let alerts = topic("_alerts", "telemetry");
    publish(
        &gw.broker(),
        vec![
            Msg::new(&alerts, bin_telemetry("_alerts", 1, 10.0)),
            Msg::new(topic("BN-1", "command"), r#"{"cmd_id":1}"#),
            Msg::new(topic("BN-1", "config"), r#"{"config_id":1}"#),
            Msg::new(topic("BN-1", "nonsense"), "{}"),
            Msg::new(
                format!("{}/extra", topic("BN-1", "telemetry")),
                bin_telemetry("BN-1", 1, 10.0),
            ),
            Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", 2, 10.0)),
        ],
    )
    .await;
    eventually("the valid reading", Duration::from_secs(10), || async {
        gw.http.get("/api/devices/BN-1/latest").await.0 == 200
    })
    .await;
    let text = gw.http.get_text("/metrics").await;
    let counted: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("streetgate_rejected_total{reason=\"")?;
            let (reason, n) = rest.split_once("\"} ")?;
            Some((reason, n.parse().ok()?))
        })
        .collect();
    let nonzero: Vec<(&str, f64)> = counted.iter().copied().filter(|(_, n)| *n > 0.0).collect();
    assert_eq!(
        nonzero,
        [("wrong_direction", 2.0), ("bad_topic", 3.0)],
        "each hostile message counted once: {counted:?}"
    );
    let documented = include_str!("../../protocols/README.md");
    for (reason, _) in &counted {
        assert!(
            documented.contains(&format!("| `{reason}` |")),
            "{reason} is not documented"
        );
    }
    let (_, unregistered) = gw.http.get("/api/unregistered").await;
    assert!(
        !unregistered.to_string().contains("_alerts"),
        "{unregistered}"
    );
    gw.running.shutdown().await.unwrap();
}
