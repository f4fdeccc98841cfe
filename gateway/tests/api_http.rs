//! The HTTP API over a real socket: devices, import errors, JSON errors, metrics.

mod common;

use common::{Gateway, INVENTORY};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_crud_import_and_errors() {
    // The Modbus device below is polled: on loopback (where nothing answers on 502), never on a
    // real network.
    let gw = Gateway::start(|c| c.modbus.allowed_endpoints = vec!["127.0.0.1/32".into()]).await;
    let http = &gw.http;

    let (status, health) = http.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health["mqtt"]["embedded_broker"].is_string());

    gw.import_inventory().await;
    let (_, list) = http.get("/api/devices").await;
    assert_eq!(list["total"], 4);
    let (_, bins) = http.get("/api/devices?kind=bin").await;
    assert_eq!(bins["total"], 1);
    assert_eq!(bins["devices"][0]["bin_depth_mm"], 1200);
    let (_, grid) = http.get("/api/devices?grid=320508001001001&limit=1").await;
    assert_eq!(
        (
            grid["total"].as_u64(),
            grid["devices"].as_array().map(Vec::len)
        ),
        (Some(2), Some(1))
    );

    let (status, mh) = http.get("/api/devices/MH-1").await;
    assert_eq!(status, 200);
    assert_eq!(mh["overrides"]["tilt_alarm_deg"], 12.0);
    assert_eq!(mh["transport"]["type"], "mqtt");

    // Upsert through JSON, with a Modbus transport.
    let mut device = mh.clone();
    device["id"] = json!("MH-2");
    device["transport"] =
        json!({"type": "modbus-tcp", "host": "127.0.0.1", "port": 502, "unit": 9});
    let (status, body) = http.post_json("/api/devices", &device).await;
    assert_eq!(status, 200, "{body}");
    let (_, back) = http.get("/api/devices/MH-2").await;
    assert_eq!(back["transport"]["unit"], 9);
    let (status, _) = http
        .post_json("/api/devices", &json!([device.clone(), device.clone()]))
        .await;
    assert_eq!(status, 422);
    device["lat"] = json!(123.0);
    let (status, body) = http.post_json("/api/devices", &device).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_device"))
    );
    assert!(body["message"].as_str().unwrap().contains("lat"), "{body}");
    let (status, body) = http.post_json("/api/devices", &json!({"id": "X"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{body}"
    );

    // Export is importable.
    let csv = http.get_text("/api/devices/export").await;
    assert!(csv.contains("modbus-tcp 127.0.0.1:502 9"), "{csv}");
    let (status, body) = http.post_text("/api/devices/import", &csv).await;
    assert_eq!((status, body["imported"].as_u64()), (200, Some(5)));

    // Delete.
    assert_eq!(http.delete("/api/devices/MH-2").await.0, 204);
    let (status, body) = http.delete("/api/devices/MH-2").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("device_not_found"))
    );
    let (status, body) = http.get("/api/devices/bad%20id").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_device_id"))
    );

    // A bad file imports nothing and names line and field.
    let bad = format!("{INVENTORY}NEW-1,bin,,31,120,G,,,,,mqtt,\nNEW-2,bin,,31,999,G,,,,,mqtt,\n");
    let (status, body) = http.post_text("/api/devices/import", &bad).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_inventory")),
        "{body}"
    );
    assert_eq!(body["details"]["issues"][0]["line"], 7);
    assert_eq!(body["details"]["issues"][0]["field"], "lon");
    assert_eq!(http.get("/api/devices/NEW-1").await.0, 404);

    // JSON errors everywhere.
    let (status, body) = http.get("/api/nothing").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_route")));
    let (status, body) = http.get("/api/devices?limit=many").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, body) = http.delete("/api/devices").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    let metrics = http.get_text("/metrics").await;
    assert!(metrics.contains("streetgate_devices 4"), "{metrics}");
    assert!(metrics.contains("# TYPE streetgate_rule_latency_seconds histogram"));
    gw.running.shutdown().await.unwrap();
}

/// A malformed `POST /api/devices` body gets an error naming the device, the field and what is
/// allowed, not "data did not match any variant of untagged enum".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_device_bodies_name_the_field_and_what_is_allowed() {
    let gw = Gateway::start(|_| {}).await;
    let good = json!({
        "id": "WC-7", "kind": "toilet", "lat": 31.3, "lon": 120.6, "grid": "G1",
        "toilet_class": "2", "transport": {"type": "mqtt"}
    });
    let (status, body) = gw.http.post_json("/api/devices", &good).await;
    assert_eq!(status, 200, "overrides may be left out: {body}");
    let with = |field: &str, value: serde_json::Value| {
        let mut d = good.clone();
        d[field] = value;
        d
    };
    let cases = [
        (with("kind", json!("lamp")), vec!["kind", "streetlight"]),
        (
            with("toilet_class", json!(2)),
            vec!["toilet_class", "\"1\""],
        ),
        (with("transport", json!("mqtt")), vec!["transport"]),
        (
            with("transport", json!({"type": "modbus_tcp"})),
            vec!["transport", "modbus-tcp"],
        ),
        (
            with("overrides", json!({"tilt_deg": 5})),
            vec!["overrides", "tilt_alarm_deg"],
        ),
        (with("lat", json!("north")), vec!["lat"]),
        (
            json!([good.clone(), {"id": "X-1"}]),
            vec!["device 1", "kind"],
        ),
        (json!("WC-7"), vec!["device object"]),
        // The gateway's own topic tree is no device.
        (with("id", json!("_alerts")), vec!["id", "reserved"]),
    ];
    for (body, words) in cases {
        let (status, err) = gw.http.post_json("/api/devices", &body).await;
        assert_eq!(status, 422, "{body} → {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(!message.contains("untagged"), "{message}");
        for w in words {
            assert!(
                message.contains(w),
                "{body}: {message:?} does not name {w:?}"
            );
        }
    }
    gw.running.shutdown().await.unwrap();
}

/// A device may only name a Modbus endpoint or serial port that `[modbus]` allows: loopback
/// and arbitrary files are refused by default, at upsert and at import, naming the device, the
/// endpoint and the setting; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_endpoints_outside_the_allow_lists_are_refused() {
    let gw = Gateway::start(|_| {}).await;
    let http = &gw.http;
    let device = json!({
        "id": "MH-7", "kind": "manhole", "lat": 31.3, "lon": 120.6, "grid": "320508001001001",
        "transport": {"type": "modbus-tcp", "host": "127.0.0.1", "port": 18180, "unit": 1},
        "overrides": {}
    });
    let (status, body) = http.post_json("/api/devices", &device).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_device")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    for part in ["MH-7", "127.0.0.1:18180", "modbus.allowed_endpoints"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    let (status, _) = http.get("/api/devices/MH-7").await;
    assert_eq!(status, 404);

    let csv = "id,kind,lat,lon,grid,transport\n\
               MH-8,manhole,31.3,120.6,320508001001001,modbus-tcp 10.0.0.7:502 2\n\
               BN-9,bin,31.3,120.6,320508001001001,modbus-rtu /etc/passwd 9600 1\n\
               BN-10,bin,31.3,120.6,320508001001001,modbus-tcp localhost:502 1\n";
    let (status, body) = http.post_text("/api/devices/import", csv).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_inventory")),
        "{body}"
    );
    let issues = body["details"]["issues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(issues.len(), 2, "{body}");
    assert_eq!(
        (issues[0]["line"].as_u64(), issues[0]["field"].as_str()),
        (Some(3), Some("transport"))
    );
    let first = issues[0]["message"].as_str().unwrap_or_default();
    for part in ["BN-9", "/etc/passwd", "modbus.allowed_serial"] {
        assert!(first.contains(part), "{part} not in {first}");
    }
    let second = issues[1]["message"].as_str().unwrap_or_default();
    assert!(
        second.contains("BN-10") && second.contains("host name"),
        "{second}"
    );
    let (status, _) = http.get("/api/devices/MH-8").await;
    assert_eq!(status, 404, "an import is refused whole");
}
