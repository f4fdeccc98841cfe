//! The OpenAPI document and the API stay in step: every route the router declares is documented
//! with its methods, every documented operation is served (the request reaches a handler, not
//! the "no such route" or "method not allowed" fallback), and every response body, and every
//! request body the test sends, is valid against the document's schema for it (JSON Schema
//! 2020-12, as OpenAPI 3.1 uses), with real data: devices, readings, cases, lighting, commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::{Gateway, Msg, bin_telemetry, eventually, publish, topic};
use serde_json::{Value, json};

/// (method, path) pairs declared in the router's source.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api/mod.rs");
    let mut routes = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let Some(rest) = chunk.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        // The handler expression runs to the closing parenthesis of `.route(`.
        let mut depth = 1;
        let end = handlers
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(handlers.len(), |(i, _)| i);
        let expr = &handlers[..end];
        for method in ["get", "post", "delete", "put", "patch"] {
            if expr.contains(&format!("{method}(")) {
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                ops.insert((method.to_owned(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn document_and_router_agree() {
    let doc: Value = serde_json::from_str(streetgate_gateway::api::OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = router_routes();
    assert!(routes.len() >= 20, "parsed the router: {routes:?}");
    let ops = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // Every `$ref` resolves.
    let text = streetgate_gateway::api::OPENAPI;
    for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }

    // Served, and every operation reaches a handler.
    let gw = Gateway::start(|_| {}).await;
    let (status, served) = gw.http.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);
    let client = reqwest::Client::new();
    for (method, path) in &ops {
        let concrete = path.replace("{id}", "X-1").replace("{segment}", "S-1");
        let url = format!("http://{}{concrete}", gw.running.http_addr);
        let req = match method.as_str() {
            "get" => client.get(&url),
            "delete" => client.delete(&url),
            _ => client
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"no_route\"") && !body.contains("\"method_not_allowed\""),
            "{method} {path}: {status} {body}"
        );
        let documented_status = &doc["paths"][path][method]["responses"][status.to_string()];
        assert!(
            !documented_status.is_null(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
        // Anonymous: every route but the public ones refuses with 401.
        let public = matches!(
            (method.as_str(), path.as_str()),
            ("get", "/api/health" | "/api/openapi.json") | ("post", "/api/session")
        );
        assert_eq!(
            status == 401,
            !public,
            "{method} {path} answered {status} to an anonymous caller: {body}"
        );
    }
    gw.running.shutdown().await.unwrap();
}

/// A validator for `schema`, a part of `doc` whose `$ref`s point into `doc`'s components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({ "components": doc["components"], "allOf": [schema] });
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

fn check(doc: &Value, what: &str, schema: &Value, body: &Value) {
    let errors: Vec<String> = validator(doc, schema)
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} differs from openapi.json:\n  {}\nbody: {body}",
        errors.join("\n  ")
    );
}

/// The documented request-body schema of an operation.
fn request_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let schema =
        &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} documents no JSON body");
    schema
}

/// Send a request, check its JSON body against the request schema (if any) and the answer
/// against the documented response for its status; returns the status and body.
async fn call(
    doc: &Value,
    http: &common::Http,
    method: &str,
    (path, concrete): (&str, &str),
    body: Option<&Value>,
) -> (u16, Value) {
    let (client, base) = http.client();
    let url = format!("{base}{concrete}");
    let req = match method {
        "get" => client.get(&url),
        "delete" => client.delete(&url),
        _ => client.post(&url),
    };
    let req = match body {
        Some(b) => {
            check(
                doc,
                &format!("request body of {method} {path}"),
                request_schema(doc, method, path),
                b,
            );
            req.json(b)
        }
        None => req,
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    let documented = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        !documented.is_null(),
        "{method} {concrete} answered {status}, which the document does not list: {text}"
    );
    let Some((media, content)) = documented["content"]
        .as_object()
        .and_then(|c| c.iter().next())
    else {
        assert!(
            text.is_empty(),
            "{method} {concrete}: undocumented body {text}"
        );
        return (status, Value::Null);
    };
    assert!(
        content_type.starts_with(media.as_str()),
        "{method} {concrete} {status}: content type {content_type}, documented {media}"
    );
    let value = if media == "application/json" {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {concrete}: {e}: {text}"))
    } else {
        Value::String(text)
    };
    check(
        doc,
        &format!("{method} {concrete} {status}"),
        &content["schema"],
        &value,
    );
    (status, value)
}

/// Every 2xx JSON response is described by a schema that says what is in it: a `$ref`, or an
/// object with its properties, never a bare `{"type": "object"}` that anything satisfies.
#[test]
fn every_json_response_is_typed() {
    let doc: Value = serde_json::from_str(streetgate_gateway::api::OPENAPI).unwrap();
    let mut untyped = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                let schema = &resp["content"]["application/json"]["schema"];
                if schema.is_null() || path == "/api/openapi.json" {
                    continue;
                }
                if schema.get("$ref").is_none() && schema.get("properties").is_none() {
                    untyped.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(untyped.is_empty(), "untyped responses: {untyped:?}");
    // Every object that lists its properties says whether others may appear: a renamed field
    // (`type` for `case_type`) then fails validation instead of passing as an extra.
    fn open_objects(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                    out.push(at.to_owned());
                }
                for (k, v) in m {
                    open_objects(v, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    open_objects(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut open = Vec::new();
    open_objects(&doc, "", &mut open);
    assert!(
        open.is_empty(),
        "objects without additionalProperties: {open:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_and_request_body_matches_the_document() {
    let doc: Value = serde_json::from_str(streetgate_gateway::api::OPENAPI).unwrap();
    let gw = Gateway::start(|c| {
        c.rules.hold_s = 0;
        c.rules.lighting.startup_grace_s = 0;
        c.commands.ack_timeout_ms = 300;
        // Loopback is not allowed by default: this one port is, and no simulator listens there.
        c.modbus.allowed_endpoints = vec!["127.0.0.1:1502".into()];
    })
    .await;
    let mut seen: BTreeSet<(String, String, u16)> = BTreeSet::new();
    macro_rules! call {
        ($method:expr, $path:expr, $concrete:expr, $body:expr) => {{ call!(&gw.http, $method, $path, $concrete, $body) }};
        ($http:expr, $method:expr, $path:expr, $concrete:expr, $body:expr) => {{
            let (status, body) = call(&doc, $http, $method, ($path, $concrete), $body).await;
            seen.insert(($method.to_string(), $path.to_string(), status));
            (status, body)
        }};
    }

    // The inventory, as CSV and as JSON (one device and several; a Modbus one and overrides).
    let (status, _) = gw
        .http
        .post_text("/api/devices/import", common::INVENTORY)
        .await;
    assert_eq!(status, 200);
    seen.insert(("post".into(), "/api/devices/import".into(), 200));
    let modbus = json!({
        "id": "WC-9", "kind": "toilet", "lat": 31.3, "lon": 120.6, "grid": "320508001001002",
        "toilet_class": "1", "component_code": "3205080301000009",
        "transport": {"type": "modbus-tcp", "host": "127.0.0.1", "port": 1502, "unit": 3},
        "overrides": {"nh3_limit_mg_m3": 0.5}
    });
    let mut elsewhere = modbus.clone();
    elsewhere["transport"]["port"] = json!(18180);
    let (status, _) = call!("post", "/api/devices", "/api/devices", Some(&elsewhere));
    assert_eq!(
        status, 422,
        "an endpoint modbus.allowed_endpoints does not allow"
    );
    let (status, _) = call!("post", "/api/devices", "/api/devices", Some(&modbus));
    assert_eq!(status, 200);
    let many = json!([{
        "id": "SL-2", "kind": "streetlight", "lat": 31.3, "lon": 120.6,
        "grid": "320508001001001", "road_segment": "S-1", "road_class": "main",
        "transport": {"type": "mqtt"}, "overrides": {}
    }]);
    let (status, _) = call!("post", "/api/devices", "/api/devices", Some(&many));
    assert_eq!(status, 200);

    // Readings of every kind, and a case from the bin.
    let lamp = |id: &str, seq: u32, current: f32| {
        Msg::new(
            topic(id, "telemetry"),
            format!(
                r#"{{"device_id":"{id}","seq":{seq},"data":{{"streetlight":{{"lamp_on":true,"dim_pct":100,"voltage_v":230.0,"current_a":{current},"power_w":90.0,"energy_wh":100}}}}}}"#
            ),
        )
    };
    publish(
        &gw.broker(),
        vec![
            lamp("SL-1", 1, 0.4),
            lamp("SL-2", 1, 0.0),
            Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", 1, 105.0)),
            Msg::new(
                topic("WC-1", "telemetry"),
                r#"{"device_id":"WC-1","seq":1,"data":{"toilet":{"nh3_mg_m3":0.2,"h2s_mg_m3":0.001}}}"#,
            ),
            Msg::new(
                topic("MH-1", "event"),
                r#"{"device_id":"MH-1","seq":1,"alarm":"cover_open","state":"raised","value":70.0}"#,
            ),
            Msg::new(topic("ZZ-1", "telemetry"), bin_telemetry("ZZ-1", 1, 1.0)),
            Msg::new(topic("BN-1", "telemetry"), "garbage"),
        ],
    )
    .await;
    eventually(
        "cases from the sensors",
        Duration::from_secs(10),
        || async { gw.http.get("/api/cases").await.1["total"].as_u64() >= Some(2) },
    )
    .await;

    // A patrol case and its transitions.
    let new_case = json!({
        "type": "other", "grid": "320508001001001", "detail": "graffiti on the cabinet", "location": "Renmin Rd 12",
        "source": "patrol", "actor": "li.wei"
    });
    let (status, case) = call!("post", "/api/cases", "/api/cases", Some(&new_case));
    assert_eq!(status, 200, "{case}");
    let id = case["id"].as_i64().unwrap().to_string();
    let path_t = format!("/api/cases/{id}/transitions");
    // A photo of it (raw bytes; the answer is JSON), then the photo itself and the case with it.
    let (client, base) = gw.http.client();
    let jpeg: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
    let resp = client
        .post(format!("{base}/api/cases/{id}/photos"))
        .header("content-type", "image/jpeg")
        .body(jpeg.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let photo: Value = resp.json().await.unwrap();
    check(
        &doc,
        "post /api/cases/{id}/photos 200",
        &doc["paths"]["/api/cases/{id}/photos"]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"],
        &photo,
    );
    seen.insert(("post".into(), "/api/cases/{id}/photos".into(), 200));
    for garbage in [&b"GIF89a"[..], b""] {
        let resp = client
            .post(format!("{base}/api/cases/{id}/photos"))
            .body(garbage.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!(
            !doc["paths"]["/api/cases/{id}/photos"]["post"]["responses"][status.to_string()]
                .is_null(),
            "{status} {body}"
        );
        check(
            &doc,
            "photo refusal",
            &json!({"$ref": "#/components/schemas/Error"}),
            &body,
        );
    }
    call!(
        "get",
        "/api/cases/{id}/photos/{photo_id}",
        &format!("/api/cases/{id}/photos/{}", photo["id"]),
        None
    );
    call!(
        "get",
        "/api/cases/{id}/photos/{photo_id}",
        &format!("/api/cases/{id}/photos/x"),
        None
    );
    // The live stream: its type, and the event that opens it.
    let mut events = client
        .get(format!("{base}/api/events?after=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: ready"),
        "{first:?}"
    );
    seen.insert(("get".into(), "/api/events".into(), 200));
    drop(events);
    call!("get", "/api/events", "/api/events?after=x", None);
    call!("get", "/api/map", "/api/map", None);
    call!(
        "get",
        "/api/map",
        "/api/map?bbox=120.5,31.2,120.7,31.4&zoom=16",
        None
    );
    call!("get", "/api/map", "/api/map?bbox=1,2,3", None);
    // Dispatched on registration: the team accepts it; closing it now is refused.
    let accept = json!({"actor": "grid-chief", "action": "accept"});
    let (status, _) = call!(
        "post",
        "/api/cases/{id}/transitions",
        &path_t,
        Some(&accept)
    );
    assert_eq!(status, 200);
    // The crew on site (到场), and the centre's supervision (督办) by hand.
    for body in [
        json!({"action": "on_site", "note": "crew here"}),
        json!({"action": "supervise", "note": "call the grid chief"}),
    ] {
        let (status, answer) = call!("post", "/api/cases/{id}/transitions", &path_t, Some(&body));
        assert_eq!(status, 200, "{answer}");
    }
    let refused = json!({"actor": "centre", "action": "close"});
    let (status, _) = call!(
        "post",
        "/api/cases/{id}/transitions",
        &path_t,
        Some(&refused)
    );
    assert_eq!(status, 409);

    // Commands (the lamps do not answer: timed out).
    let on = json!({"action": "on"});
    call!(
        "post",
        "/api/devices/{id}/command",
        "/api/devices/SL-1/command",
        Some(&on)
    );
    let dim = json!({"action": "dim", "dim_pct": 50, "expires_s": 600});
    call!(
        "post",
        "/api/segments/{segment}/command",
        "/api/segments/S-1/command",
        Some(&dim)
    );

    // Every documented GET with real data, and the error answers. The evaluation covers this
    // month and today, city time, where the cases above are.
    let (y, m, d, _) = streetgate_gateway::evaluation::period::local_month(
        streetgate_gateway::clock::wall_ms(),
        480,
    );
    let (month, today) = (format!("{y:04}-{m:02}"), format!("{y:04}-{m:02}-{d:02}"));
    let gets = [
        ("/api/health", "/api/health".to_owned()),
        ("/metrics", "/metrics".to_owned()),
        ("/api/openapi.json", "/api/openapi.json".to_owned()),
        ("/api/unregistered", "/api/unregistered".to_owned()),
        ("/api/unregistered", "/api/unregistered?bogus=1".to_owned()),
        ("/api/rejections", "/api/rejections".to_owned()),
        ("/api/devices", "/api/devices".to_owned()),
        ("/api/devices", "/api/devices?kind=lamp".to_owned()),
        ("/api/devices/export", "/api/devices/export".to_owned()),
        ("/api/devices/{id}", "/api/devices/WC-9".to_owned()),
        ("/api/devices/{id}", "/api/devices/MH-1".to_owned()),
        ("/api/devices/{id}", "/api/devices/NOPE".to_owned()),
        (
            "/api/devices/{id}/latest",
            "/api/devices/BN-1/latest".to_owned(),
        ),
        (
            "/api/devices/{id}/latest",
            "/api/devices/WC-9/latest".to_owned(),
        ),
        (
            "/api/devices/{id}/history",
            "/api/devices/SL-1/history".to_owned(),
        ),
        (
            "/api/devices/{id}/history",
            "/api/devices/NOPE/history".to_owned(),
        ),
        ("/api/commands", "/api/commands".to_owned()),
        ("/api/cases", "/api/cases".to_owned()),
        ("/api/cases", "/api/cases?state=nonsense".to_owned()),
        ("/api/cases/{id}", format!("/api/cases/{id}")),
        ("/api/cases/{id}", "/api/cases/1".to_owned()),
        ("/api/cases/{id}", "/api/cases/x".to_owned()),
        ("/api/cases/{id}", "/api/cases/999".to_owned()),
        ("/api/lighting", "/api/lighting".to_owned()),
        (
            "/api/lighting",
            "/api/lighting?from_ms=0&to_ms=4102444800000".to_owned(),
        ),
        ("/api/lighting", "/api/lighting?from_ms=x".to_owned()),
        ("/api/lighting/nights", "/api/lighting/nights".to_owned()),
        (
            "/api/lighting/nights",
            format!("/api/lighting/nights?from={today}&to={today}&grid=G1"),
        ),
        (
            "/api/lighting/nights",
            "/api/lighting/nights?period=month&at=2026-13".to_owned(),
        ),
        (
            "/api/alerts/deliveries",
            "/api/alerts/deliveries".to_owned(),
        ),
        (
            "/api/evaluation",
            format!("/api/evaluation?period=month&at={month}"),
        ),
        (
            "/api/evaluation",
            format!("/api/evaluation?from={today}&to={today}"),
        ),
        (
            "/api/evaluation",
            "/api/evaluation?period=month&at=2026-13".to_owned(),
        ),
        (
            "/api/evaluation.csv",
            format!("/api/evaluation.csv?period=month&at={month}&by=grid"),
        ),
        (
            "/api/evaluation.csv",
            "/api/evaluation.csv?by=street".to_owned(),
        ),
        (
            "/api/reports/bulletin",
            format!("/api/reports/bulletin?month={month}"),
        ),
        ("/api/reports/bulletin", "/api/reports/bulletin".to_owned()),
    ];
    for (path, concrete) in &gets {
        call!("get", *path, concrete, None);
    }
    let (status, issued) = call!(
        "post",
        "/api/devices/{id}/credentials",
        "/api/devices/MH-1/credentials",
        None
    );
    assert_eq!(status, 200, "{issued}");
    call!(
        "post",
        "/api/devices/{id}/credentials",
        "/api/devices/NOPE/credentials",
        None
    );
    let (status, _) = call!("delete", "/api/devices/{id}", "/api/devices/SL-2", None);
    assert!(status < 300);
    call!("delete", "/api/devices/{id}", "/api/devices/SL-2", None);

    // People's access: users, tokens, sessions, the audit log.
    let new_user = json!({"name": "li.wei", "role": "team_member", "team": "lighting"});
    let (status, added) = call!("post", "/api/users", "/api/users", Some(&new_user));
    assert_eq!(status, 200, "{added}");
    let password = added["password"].as_str().unwrap().to_owned();
    let (status, _) = call!("post", "/api/users", "/api/users", Some(&new_user));
    assert_eq!(status, 409);
    let weak = json!({"name": "wang.fang", "role": "viewer", "password": "short"});
    let (status, _) = gw.http.post_json("/api/users", &weak).await;
    assert_eq!(status, 400);
    call!("get", "/api/users", "/api/users", None);
    let new_token = json!({"user": "li.wei", "name": "app", "expires_in_s": 3600});
    let (status, token) = call!("post", "/api/tokens", "/api/tokens", Some(&new_token));
    assert_eq!(status, 200, "{token}");
    let li = common::Http::new(gw.running.http_addr).with_token(token["token"].as_str().unwrap());
    let (_, me) = call!(&li, "get", "/api/session", "/api/session", None);
    assert_eq!(
        (me["user"].as_str(), me["via"].as_str()),
        (Some("li.wei"), Some("token"))
    );
    call!(
        &li,
        "get",
        "/api/cases/{id}",
        &format!("/api/cases/{id}"),
        None
    );
    let change = json!({"current_password": password, "new_password": "a new long password"});
    let (status, _) = call!(
        &li,
        "post",
        "/api/session/password",
        "/api/session/password",
        Some(&change)
    );
    assert_eq!(status, 204);
    let (status, _) = call!(
        &li,
        "post",
        "/api/session/password",
        "/api/session/password",
        Some(&change)
    );
    assert_eq!(status, 403);
    let sign_in = json!({"username": "li.wei", "password": "a new long password"});
    let (status, session) = call!("post", "/api/session", "/api/session", Some(&sign_in));
    assert_eq!(status, 200, "{session}");
    assert!(session["csrf_token"].is_string());
    let wrong = json!({"username": "li.wei", "password": "not the password"});
    let (status, _) = call!("post", "/api/session", "/api/session", Some(&wrong));
    assert_eq!(status, 401);
    let (status, _) = call!("delete", "/api/session", "/api/session", None);
    assert_eq!(status, 204);
    call!("get", "/api/tokens", "/api/tokens", None);
    let (status, _) = call!(
        "delete",
        "/api/tokens/{id}",
        &format!("/api/tokens/{}", token["id"]),
        None
    );
    assert_eq!(status, 204);
    call!("delete", "/api/tokens/{id}", "/api/tokens/99999", None);
    let (status, _) = call!(&li, "get", "/api/session", "/api/session", None);
    assert_eq!(status, 401);
    let reset = json!({});
    call!(
        "post",
        "/api/users/{name}/password",
        "/api/users/li.wei/password",
        Some(&reset)
    );
    call!("delete", "/api/users/{name}", "/api/users/li.wei", None);
    call!("delete", "/api/users/{name}", "/api/users/admin", None);
    call!("delete", "/api/users/{name}", "/api/users/nobody", None);
    call!(
        "post",
        "/api/users/{name}/enable",
        "/api/users/li.wei/enable",
        None
    );
    call!(
        "post",
        "/api/users/{name}/enable",
        "/api/users/nobody/enable",
        None
    );
    let (_, audit) = call!("get", "/api/audit", "/api/audit?limit=5", None);
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(5));
    call!(
        "get",
        "/api/audit",
        "/api/audit?min_status=400&method=post",
        None
    );
    let viewer = gw
        .http_as(
            "v.grid",
            streetgate_gateway::auth::Role::Viewer,
            None,
            Some("320508001001001"),
        )
        .await;
    let (status, _) = call!(&viewer, "post", "/api/cases", "/api/cases", Some(&new_case));
    assert_eq!(status, 403);
    call!(&viewer, "get", "/api/health", "/api/health", None);
    call!(&gw.anonymous(), "get", "/api/health", "/api/health", None);

    // Every documented operation answered successfully at least once.
    let missing: Vec<_> = documented(&doc)
        .into_iter()
        .filter(|(m, p)| {
            !seen
                .iter()
                .any(|(sm, sp, s)| sm == m && sp == p && *s < 300)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "never exercised successfully: {missing:?}"
    );
    gw.running.shutdown().await.unwrap();
}
