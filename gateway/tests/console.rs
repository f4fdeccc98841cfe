//! The operations console, over real sockets:
//! - its files are served with their types, ETags and Content-Security-Policy;
//! - the API it relies on: the actions a caller may take on a case, the live event stream
//!   (scoped, resumable), case photos (types from the bytes, limits);
//! - in a real browser (WebDriver), when `STREETGATE_TEST_CHROMEDRIVER` names a chromedriver:
//!   a dispatcher and a team member work a case raised over MQTT from fault to closure, and the
//!   language switch leaves no English on screen. Without the variable that test says so and
//!   does nothing; with it, a chromedriver that does not start fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, Msg, eventually, publish, topic};
use serde_json::{Value, json};
use streetgate_gateway::auth::Role;

/// A real 16 × 16 PNG (a green square), so the screenshots show the photo.
const PHOTO_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x91, 0x68,
    0x36, 0x00, 0x00, 0x00, 0x16, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xd0, 0x58, 0x10, 0x40,
    0x12, 0x62, 0x18, 0xd5, 0x30, 0xaa, 0x61, 0xf8, 0x6a, 0x00, 0x00, 0xb4, 0x24, 0x18, 0x10, 0x9d,
    0x38, 0xdf, 0x89, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A minimal JPEG header and a few bytes: what the type check reads.
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 2, 3,
];

fn cover(seq: u32, state: &str) -> Msg {
    Msg::new(
        topic("MH-1", "event"),
        format!(
            r#"{{"device_id":"MH-1","seq":{seq},"alarm":"cover_open","state":"{state}","value":75.0}}"#
        ),
    )
}

#[tokio::test]
async fn console_files_are_served_with_types_etags_and_a_strict_policy() {
    let gw = Gateway::start(|c| {
        c.console.tile_url = "https://tiles.example.org/{z}/{x}/{y}.png".into();
        c.alerts.utc_offset_min = 420;
    })
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.running.http_addr);

    // The page itself needs no sign-in (it shows the sign-in form).
    let index = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "https://tiles.example.org",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    let text = index.text().await.unwrap();
    assert!(text.contains("/console/js/main.js"), "{text}");

    // Revalidation: the same ETag gets 304 without a body; another gets the file.
    let again = client
        .get(format!("{base}/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let other = client
        .get(format!("{base}/"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    for (path, ty) in [
        ("/console/js/main.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        assert!(r.headers().contains_key("etag"), "{path}");
    }
    for missing in ["/console/nope.js", "/console/../Cargo.toml", "/console/js/"] {
        let r = client.get(format!("{base}{missing}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
    // The settings the scripts read: the map and the city's offset (alerts' unless set).
    let (status, settings) = gw.anonymous().get("/console/settings.json").await;
    assert_eq!(status, 200);
    assert_eq!(settings["utc_offset_min"], 420);
    assert_eq!(settings["coordinates"], "wgs84");
    assert_eq!(
        settings["tile_url"],
        "https://tiles.example.org/{z}/{x}/{y}.png"
    );
    // The API is unchanged around it: an unknown API route is still JSON.
    let (status, body) = gw.http.get("/api/nothing-here").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_route")));
    gw.running.shutdown().await.unwrap();
}

/// The case detail says which actions the caller may take, from the case machine and the
/// role; the console shows exactly those buttons.
#[tokio::test]
async fn case_detail_lists_the_actions_of_the_caller() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let dispatcher = gw.http_as("di.spatch", Role::Dispatcher, None, None).await;
    let member = gw
        .http_as("li.wei", Role::TeamMember, Some("municipal"), None)
        .await;
    let viewer = gw.http_as("vi.ew", Role::Viewer, None, None).await;
    let (status, case) = dispatcher
        .post_json(
            "/api/cases",
            &json!({"source": "patrol", "type": "manhole_cover", "grid": "320508001001001",
                    "detail": "cover loose", "device_id": "MH-1"}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    let id = case["id"].as_i64().unwrap();
    let actions = |http: common::Http| async move {
        let (status, c) = http.get(&format!("/api/cases/{id}")).await;
        assert_eq!(status, 200, "{c}");
        (
            c["state"].as_str().unwrap().to_owned(),
            c["actions"].clone(),
        )
    };
    // Registered and routed: the reported case went straight to its team.
    let (state, a) = actions(dispatcher.clone()).await;
    assert_eq!(state, "dispatched");
    assert_eq!(a, json!(["accept", "return", "void", "supervise"]));
    assert_eq!(actions(member.clone()).await.1, json!(["accept", "return"]));
    assert_eq!(actions(viewer.clone()).await.1, json!([]));

    let (status, c) = member
        .post_json(
            &format!("/api/cases/{id}/transitions"),
            &json!({"action": "accept"}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["actions"], json!(["resolve", "return", "on_site"]), "{c}");
    let (status, c) = member
        .post_json(
            &format!("/api/cases/{id}/transitions"),
            &json!({"action": "resolve", "note": "reseated"}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    // Verification is the centre's: nothing left for the team.
    assert_eq!(c["actions"], json!([]), "{c}");
    assert_eq!(actions(dispatcher).await.1, json!(["verify", "rework"]));
    // What the list did not offer is refused.
    let (status, _) = member
        .post_json(
            &format!("/api/cases/{id}/transitions"),
            &json!({"action": "verify"}),
        )
        .await;
    assert_eq!(status, 403);
    gw.running.shutdown().await.unwrap();
}

/// Reads server-sent events from a response: (event, id, data) triples.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(http: &common::Http, path: &str, last_id: Option<i64>) -> Self {
        let (client, base) = http.client();
        let mut req = client.get(format!("{base}{path}"));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), within `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, Option<i64>, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((event, id, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Case events stream to consoles as they happen, scoped like the case list, and a client
/// that reconnects with Last-Event-ID gets what it missed.
#[tokio::test]
async fn live_events_are_scoped_and_resume_after_the_last_id() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let municipal = gw
        .http_as("liu.yang", Role::TeamMember, Some("municipal"), None)
        .await;
    // Case events only here (device state: the next test).
    let mut centre = Sse::open(&gw.http, "/api/events?devices=false", None).await;
    let mut team = Sse::open(&municipal, "/api/events", None).await;
    for s in [&mut centre, &mut team] {
        let (event, _, data) = s.next(Duration::from_secs(5)).await.expect("ready");
        assert_eq!(event, "ready");
        assert_eq!(data["after"], 0);
    }

    // A device raises a case: it reaches both streams (registered, then dispatched).
    let published = Instant::now();
    publish(&gw.broker(), vec![cover(1, "raised")]).await;
    let (event, id, data) = centre.next(Duration::from_secs(10)).await.expect("event");
    println!(
        "a case raised over MQTT reached the live stream {} ms after it was published",
        published.elapsed().as_millis()
    );
    assert_eq!(event, "case");
    assert_eq!(data["action"], "register");
    assert_eq!(data["case"]["case_type"], "manhole_cover");
    assert_eq!(id, data["event_id"].as_i64());
    let (_, _, dispatched) = centre.next(Duration::from_secs(10)).await.expect("event");
    assert_eq!(dispatched["action"], "dispatch");
    assert_eq!(dispatched["case"]["team"], "municipal");
    // The team sees its case (the events carry the case as it is now: the team's).
    let mut seen = Vec::new();
    let mut team_id = None;
    while seen.len() < 2 {
        let (_, id, e) = team.next(Duration::from_secs(10)).await.expect("event");
        assert_eq!(e["case"]["team"], "municipal");
        team_id = id;
        seen.push(e);
    }
    assert_eq!(seen[1]["action"], "dispatch");
    let seen = seen.remove(1);

    // Another team's case never reaches the municipal team's stream.
    let (status, other) = gw
        .http
        .post_json(
            "/api/cases",
            &json!({"source": "hotline", "type": "bin_full", "grid": "320508001001002",
                    "detail": "bin full", "device_id": "BN-1"}),
        )
        .await;
    assert_eq!(status, 200, "{other}");
    let (_, _, reg) = centre.next(Duration::from_secs(10)).await.expect("event");
    assert_eq!(reg["case"]["id"], other["id"]);
    assert!(
        team.next(Duration::from_millis(1500)).await.is_none(),
        "the sanitation case leaked into the municipal stream"
    );

    // Resume: events after the last one seen come again on a new connection.
    let case_id = seen["case"]["id"].as_i64().unwrap();
    let (status, _) = municipal
        .post_json(
            &format!("/api/cases/{case_id}/transitions"),
            &json!({"action": "accept"}),
        )
        .await;
    assert_eq!(status, 200);
    drop(team);
    let mut resumed = Sse::open(&municipal, "/api/events", team_id).await;
    let (event, _, _) = resumed.next(Duration::from_secs(5)).await.expect("ready");
    assert_eq!(event, "ready");
    let (_, _, missed) = resumed.next(Duration::from_secs(5)).await.expect("missed");
    assert_eq!(
        (missed["action"].as_str(), missed["actor"].as_str()),
        (Some("accept"), Some("liu.yang"))
    );

    // A Last-Event-ID that is not a number is refused; without a credential, 401.
    let (client, base) = gw.http.client();
    let bad = client
        .get(format!("{base}/api/events"))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let anonymous = reqwest::get(format!("{base}/api/events")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    gw.running.shutdown().await.unwrap();
}

fn status(id: &str, kind: &str, seq: u32, online: bool) -> Msg {
    Msg::new(
        topic(id, "status"),
        format!(
            r#"{{"device_id":"{id}","seq":{seq},"kind":"{kind}","online":{online},"battery_pct":61}}"#
        ),
    )
}

/// The next `event: device` of a stream (case events skipped), within `within`.
async fn next_device(s: &mut Sse, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (event, id, data) = s.next(left).await?;
        if event == "device" {
            assert_eq!(
                id, None,
                "device events carry no id: Last-Event-ID stays a case event's"
            );
            return Some(data);
        }
    }
}

/// Device state streams to consoles: offline from a status message or last will, online again
/// when heard from, battery and sequence gaps, at most one event per device per second, scoped
/// to the grids the caller sees, none for team members; the map and the device API agree.
#[tokio::test]
async fn device_state_is_live_coalesced_and_scoped() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    // MH-1 is in grid ...001, BN-1 in ...002.
    let own_grid = gw
        .http_as("zhao.min", Role::Viewer, None, Some("320508001001001"))
        .await;
    let other_grid = gw
        .http_as("qian.li", Role::Viewer, None, Some("320508001001002"))
        .await;
    let municipal = gw
        .http_as("liu.yang", Role::TeamMember, Some("municipal"), None)
        .await;
    let mut centre = Sse::open(&gw.http, "/api/events", None).await;
    let mut own = Sse::open(&own_grid, "/api/events", None).await;
    let mut other = Sse::open(&other_grid, "/api/events", None).await;
    let mut team = Sse::open(&municipal, "/api/events", None).await;
    let mut quiet = Sse::open(&gw.http, "/api/events?devices=false", None).await;
    for s in [&mut centre, &mut own, &mut other, &mut team, &mut quiet] {
        assert_eq!(
            s.next(Duration::from_secs(5)).await.expect("ready").0,
            "ready"
        );
    }

    // The device's last will: offline.
    let published = Instant::now();
    publish(&gw.broker(), vec![status("MH-1", "manhole", 1, false)]).await;
    let e = next_device(&mut centre, Duration::from_secs(10))
        .await
        .expect("a device event");
    println!(
        "an offline status reached the live stream {} ms after it was published",
        published.elapsed().as_millis()
    );
    assert_eq!(
        (
            e["device_id"].as_str(),
            e["online"].as_bool(),
            e["status_changed"].as_bool()
        ),
        (Some("MH-1"), Some(false), Some(true)),
        "{e}"
    );
    assert_eq!(e["battery_pct"], 61);
    assert_eq!(e["grid"], "320508001001001");
    let e = next_device(&mut own, Duration::from_secs(5))
        .await
        .expect("the grid's viewer sees its device");
    assert_eq!(e["device_id"], "MH-1");
    // The map and the device API say so too.
    let (_, d) = gw.http.get("/api/devices/MH-1").await;
    assert_eq!(d["offline"], true, "{d}");
    let (_, list) = gw.http.get("/api/devices?q=MH").await;
    assert_eq!(list["offline"], json!(["MH-1"]), "{list}");
    let (_, map) = gw
        .http
        .get("/api/map?bbox=120.5,31.2,120.7,31.4&zoom=17")
        .await;
    let point = map["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "MH-1")
        .cloned()
        .unwrap();
    assert_eq!(point["offline"], true, "{point}");
    assert_eq!(map["summary"]["offline_devices"], 1);

    // A chatty device: seven messages in a burst make one or two events (one per second), the
    // last carrying the newest reading and the sequence gaps (4, 6 and 10 to 99 never came;
    // a number counts as lost once it leaves the 64-message window).
    let burst: Vec<Msg> = [2u32, 3, 5, 7, 8, 9, 100]
        .iter()
        .map(|&seq| {
            Msg::new(
                topic("MH-1", "telemetry"),
                format!(
                    r#"{{"device_id":"MH-1","seq":{seq},"data":{{"manhole":{{"tilt_deg":1.5,"water_level_cm":3.0,"battery_pct":60}}}}}}"#
                ),
            )
        })
        .collect();
    publish(&gw.broker(), burst).await;
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_millis(3500);
    while let Some(e) =
        next_device(&mut centre, until.saturating_duration_since(Instant::now())).await
    {
        events.push(e);
    }
    assert!(
        (1..=3).contains(&events.len()),
        "seven messages in a burst, at most one event a second: {events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["online"], true, "heard from again: online ({last})");
    assert_eq!(last["last_seq"], 100);
    assert_eq!(last["reading"]["type"], "telemetry");
    assert_eq!(last["reading"]["seq"], 100);
    assert_eq!(last["battery_pct"], 60);
    let (_, d) = gw.http.get("/api/devices/MH-1").await;
    assert_eq!(d["offline"], false);
    assert!(last["seq_gaps"].as_u64().unwrap() > 2, "{last}");
    assert_eq!(last["seq_gaps"], d["seq_gaps"], "as committed: {d}");

    // Scope: the other grid's viewer, a team member and a stream that asked for none got no
    // device event; the other grid's viewer gets its own grid's.
    for (who, s) in [
        ("other grid", &mut other),
        ("team", &mut team),
        ("devices=false", &mut quiet),
    ] {
        assert!(
            next_device(s, Duration::from_millis(300)).await.is_none(),
            "{who} got a device event of grid 001"
        );
    }
    publish(&gw.broker(), vec![status("BN-1", "bin", 1, false)]).await;
    let e = next_device(&mut other, Duration::from_secs(10))
        .await
        .expect("the other grid's device");
    assert_eq!(e["device_id"], "BN-1");
    // Grid 001's viewer: MH-1's burst (not read yet), never BN-1.
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some(e) = next_device(&mut own, until.saturating_duration_since(Instant::now())).await
    {
        assert_eq!(e["device_id"], "MH-1", "BN-1 is not in grid 001: {e}");
    }
    gw.running.shutdown().await.unwrap();
}

/// The lighting rate night by night: the city, each grid and (for one grid) each segment
/// against its road-class target; a grid viewer gets their grid only.
#[tokio::test]
async fn lighting_nights_against_the_target_in_scope() {
    use streetgate_gateway::store::LightingDay;
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let today = streetgate_gateway::clock::wall_ms().div_euclid(86_400_000);
    let day = |segment: &str, grid: &str, class: &str, back: i64, lit: i64| LightingDay {
        segment: segment.into(),
        day: today - back,
        grid: grid.into(),
        road_class: Some(class.into()),
        lit_s: lit,
        expected_s: 1_000,
    };
    gw.running
        .state
        .store
        .save_lighting_days(&[
            day("S-1", "G1", "main", 2, 995),
            day("S-1", "G1", "main", 1, 980),
            day("B-1", "G1", "back", 1, 960),
            day("B-2", "G2", "back", 1, 940),
            day("B-2", "G2", "back", 40, 0),
        ])
        .await
        .unwrap();
    let (status, all) = gw.http.get("/api/lighting/nights").await;
    assert_eq!(status, 200, "{all}");
    let city = &all["city"];
    assert_eq!(city["nights"].as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(city["target"], 0.99);
    assert_eq!(all["grids"].as_array().map(Vec::len), Some(2));
    assert_eq!(all["segments"], json!([]), "segments for one grid only");
    let (_, g1) = gw.http.get("/api/lighting/nights?grid=G1").await;
    let s1 = g1["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "S-1")
        .cloned()
        .unwrap();
    let met: Vec<bool> = s1["nights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["met"].as_bool().unwrap())
        .collect();
    assert_eq!(met, [true, false], "99.5 % met 99 %, 98 % did not: {s1}");
    let (_, b1) = gw.http.get("/api/lighting/nights?segment=B-1").await;
    assert_eq!(b1["segments"][0]["target"], 0.95);
    assert_eq!(b1["segments"][0]["nights"][0]["met"], true);

    let viewer = gw.http_as("zhao.min", Role::Viewer, None, Some("G2")).await;
    let (status, mine) = viewer.get("/api/lighting/nights").await;
    assert_eq!(status, 200);
    assert_eq!(
        mine["city"],
        Value::Null,
        "a grid viewer sees no city figure"
    );
    assert_eq!(mine["grids"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["grids"][0]["name"], "G2");
    let (status, _) = viewer.get("/api/lighting/nights?grid=G1").await;
    assert_eq!(status, 403);
    let (status, e) = gw
        .http
        .get("/api/lighting/nights?period=month&at=2026-13")
        .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_period")));
    let (status, _) = gw.anonymous().get("/api/lighting/nights").await;
    assert_eq!(status, 401);
    gw.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn photos_are_typed_from_their_bytes_limited_and_served_in_scope() {
    let gw = Gateway::start(|c| c.cases.photo_max_bytes = 4096).await;
    gw.import_inventory().await;
    let member = gw
        .http_as("liu.yang", Role::TeamMember, Some("municipal"), None)
        .await;
    let outsider = gw
        .http_as("chen.jie", Role::TeamMember, Some("sanitation"), None)
        .await;
    let (_, case) = gw
        .http
        .post_json(
            "/api/cases",
            &json!({"source": "patrol", "type": "manhole_cover", "grid": "320508001001001",
                    "detail": "cover loose", "device_id": "MH-1"}),
        )
        .await;
    let id = case["id"].as_i64().unwrap();
    let upload = |http: common::Http, bytes: Vec<u8>, ty: &'static str| async move {
        let (client, base) = http.client();
        let r = client
            .post(format!("{base}/api/cases/{id}/photos"))
            .header("content-type", ty)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, photo) = upload(member.clone(), JPEG.to_vec(), "image/jpeg").await;
    assert_eq!(status, 200, "{photo}");
    assert_eq!(photo["content_type"], "image/jpeg");
    assert_eq!(photo["uploader"], "liu.yang");
    // The type comes from the bytes, not from what the request says.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let (status, p) = upload(member.clone(), png, "application/octet-stream").await;
    assert_eq!(
        (status, p["content_type"].as_str()),
        (200, Some("image/png"))
    );
    // A form, as a plain HTML form sends it: the one file field is the photo, and its
    // type comes from its bytes too.
    let form = |file: &[u8]| {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nfixed\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"repair.jpg\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    };
    let (status, p) = upload(
        member.clone(),
        form(JPEG),
        "multipart/form-data; boundary=XyZ",
    )
    .await;
    assert_eq!(
        (status, p["content_type"].as_str(), p["size_bytes"].as_u64()),
        (200, Some("image/jpeg"), Some(JPEG.len() as u64)),
        "{p}"
    );
    let (status, e) = upload(
        member.clone(),
        b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--XyZ--".to_vec(),
        "multipart/form-data; boundary=XyZ",
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_form")),
        "{e}"
    );
    let (status, e) = upload(
        member.clone(),
        form(b"GIF89a...."),
        "multipart/form-data; boundary=XyZ",
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let mut big = JPEG.to_vec();
    big.resize(4097, 0);
    let (status, e) = upload(
        member.clone(),
        form(&big),
        "multipart/form-data; boundary=XyZ",
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (413, Some("photo_too_large")));
    for (bytes, why) in [
        (b"GIF89a....".to_vec(), "a GIF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(), "SVG"),
        (b"not a picture".to_vec(), "text"),
    ] {
        let (status, e) = upload(member.clone(), bytes, "image/jpeg").await;
        assert_eq!(
            (status, e["code"].as_str()),
            (415, Some("unsupported_media_type")),
            "{why}"
        );
    }
    let mut big = JPEG.to_vec();
    big.resize(4097, 0);
    let (status, e) = upload(member.clone(), big, "image/jpeg").await;
    assert_eq!((status, e["code"].as_str()), (413, Some("photo_too_large")));
    let (status, _) = upload(outsider.clone(), JPEG.to_vec(), "image/jpeg").await;
    assert_eq!(status, 403, "another team's case");

    // Listed in the detail, served with its type, the bytes as sent.
    let (_, detail) = member.get(&format!("/api/cases/{id}")).await;
    let photos = detail["photos"].as_array().unwrap();
    assert_eq!(photos.len(), 3, "{detail}");
    let pid = photos[0]["id"].as_i64().unwrap();
    let (client, base) = member.client();
    let got = client
        .get(format!("{base}/api/cases/{id}/photos/{pid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/jpeg");
    assert_eq!(got.bytes().await.unwrap().as_ref(), JPEG);
    let (status, _) = outsider.get(&format!("/api/cases/{id}/photos/{pid}")).await;
    assert_eq!(status, 403);
    let (status, e) = member.get(&format!("/api/cases/{id}/photos/999")).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("photo_not_found")));

    // A voided case takes no more photos.
    let (status, _) = gw
        .http
        .post_json(
            &format!("/api/cases/{id}/transitions"),
            &json!({"action": "void", "reason": "duplicate"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, e) = upload(gw.http.clone(), JPEG.to_vec(), "image/jpeg").await;
    assert_eq!((status, e["code"].as_str()), (409, Some("case_closed")));
    gw.running.shutdown().await.unwrap();
}

/// The overview map: per grid zoomed out, points with open cases zoomed in, scoped to the
/// caller, and the figures beside it.
#[tokio::test]
async fn map_answers_per_grid_zoomed_out_and_points_zoomed_in() {
    let gw = Gateway::start(|c| c.rules.hold_s = 0).await;
    gw.import_inventory().await;
    publish(&gw.broker(), vec![cover(1, "raised")]).await;
    eventually("the cover case", Duration::from_secs(10), || async {
        gw.http.get("/api/cases").await.1["total"] == 1
    })
    .await;
    let (status, out) = gw.http.get("/api/map?zoom=10").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["mode"], "grids");
    assert_eq!(out["devices"], json!([]));
    let grids = out["grids"].as_array().unwrap();
    assert_eq!(grids.len(), 2, "{out}");
    let g1 = grids
        .iter()
        .find(|g| g["grid"] == "320508001001001")
        .unwrap();
    assert_eq!(
        (
            g1["devices"].as_u64(),
            g1["open_cases"].as_u64(),
            g1["urgent_cases"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    // Two devices: the outline is a padded box around them.
    assert_eq!(g1["outline"].as_array().map(Vec::len), Some(4));
    assert_eq!(out["summary"]["devices"], 4);
    assert_eq!(out["summary"]["open_cases"], 1);

    // Zoomed in on the first grid's corner: its devices and the case at the cover.
    let (_, near) = gw
        .http
        .get("/api/map?zoom=17&bbox=120.595,31.295,120.615,31.315")
        .await;
    assert_eq!(near["mode"], "points", "{near}");
    let ids: Vec<&str> = near["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"SL-1") && ids.contains(&"MH-1"), "{ids:?}");
    assert_eq!(near["cases"][0]["case_type"], "manhole_cover");
    assert_eq!(near["cases"][0]["lat"], 31.31);

    // A viewer of the other grid sees neither the first grid nor its case.
    let viewer = gw
        .http_as("v.two", Role::Viewer, None, Some("320508001001002"))
        .await;
    let (_, theirs) = viewer.get("/api/map?zoom=10").await;
    assert_eq!(
        theirs["grids"].as_array().map(Vec::len),
        Some(1),
        "{theirs}"
    );
    assert_eq!(theirs["summary"]["open_cases"], 0);
    assert_eq!(theirs["summary"]["devices"], 2);
    // The Devices page's search: ids containing the text, any case.
    let (_, found) = gw.http.get("/api/devices?q=mh").await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["devices"][0]["id"], "MH-1");
    let (status, e) = gw.http.get("/api/map?bbox=north").await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_bbox")));
    gw.running.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// In a real browser.

use fantoccini::{Client, ClientBuilder, Locator};

/// Where screenshots go: `target/console-screenshots/`.
fn screenshot_dir() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// A chromedriver started from `STREETGATE_TEST_CHROMEDRIVER`, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None` (with a note) when the variable is unset; a driver that does not start fails.
    async fn start(test: &str) -> Option<Self> {
        let Ok(path) = std::env::var("STREETGATE_TEST_CHROMEDRIVER") else {
            println!(
                "{test}: STREETGATE_TEST_CHROMEDRIVER is not set (path to chromedriver): the console is not tested in a browser"
            );
            return None;
        };
        let port = common::process::free_port();
        let child = std::process::Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("STREETGATE_TEST_CHROMEDRIVER={path}: {e}"));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        eventually("chromedriver answers", Duration::from_secs(20), || {
            let status = status.clone();
            async move { reqwest::get(&status).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        Some(driver)
    }

    /// A browser window of this size preferring this language.
    async fn browser(&self, width: u32, height: u32, lang: &str) -> Client {
        let chromium = std::env::var("STREETGATE_TEST_CHROMIUM").ok().or_else(|| {
            // Next to the driver (Debian: /usr/bin/chromium beside /usr/bin/chromedriver).
            let driver = std::env::var("STREETGATE_TEST_CHROMEDRIVER").ok()?;
            let next = std::path::Path::new(&driver).with_file_name("chromium");
            next.exists().then(|| next.display().to_string())
        });
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--enable-precise-memory-info",
                     format!("--window-size={width},{height}"), format!("--lang={lang}")],
            "prefs": {"intl.accept_languages": lang},
        });
        if let Some(binary) = chromium {
            options["binary"] = json!(binary);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session");
        client
            .set_window_size(width, height)
            .await
            .expect("window size");
        client
    }
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

async fn wait_for(b: &Client, css: &str, within: Duration) -> fantoccini::elements::Element {
    b.wait()
        .at_most(within)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {within:?}: {e}"))
}

/// Wait until a script returns true.
async fn wait_true(b: &Client, what: &str, script: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if b.execute(script, vec![]).await.ok() == Some(Value::Bool(true)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(b: &Client, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/")).await.expect("console");
    wait_for(b, "input[name=username]", Duration::from_secs(10))
        .await
        .send_keys(user)
        .await
        .unwrap();
    b.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    b.find(Locator::Css("form.signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(b, "header.top .who", Duration::from_secs(10)).await;
    // The live stream is open before the test makes anything happen.
    wait_true(
        b,
        "the live stream",
        "return document.querySelector('[data-test=live]')?.dataset.state === 'live'",
        Duration::from_secs(10),
    )
    .await;
}

/// Click what `css` finds, finding it again when the live page re-rendered it in between.
async fn click(b: &Client, css: &str) {
    for attempt in 0.. {
        match wait_for(b, css, Duration::from_secs(10))
            .await
            .click()
            .await
        {
            Ok(()) => return,
            Err(e) if attempt < 5 && e.to_string().contains("stale") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// Type into what `css` finds (found again when re-rendered).
async fn type_into(b: &Client, css: &str, text: &str) {
    for attempt in 0.. {
        match wait_for(b, css, Duration::from_secs(10))
            .await
            .send_keys(text)
            .await
        {
            Ok(()) => return,
            Err(e) if attempt < 5 && e.to_string().contains("stale") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("type into {css}: {e}"),
        }
    }
}

/// English strings of the console's dictionary that are visible on the page (whole words).
const ENGLISH_LEFT: &str = r#"
    const m = await import('/console/js/i18n.js');
    const text = document.body.innerText;
    const zh = new Set(Object.values(m.DICT.zh));
    const left = [];
    for (const v of Object.values(m.DICT.en)) {
      for (const part of v.split(/\{[a-z_]+\}/)) {
        const p = part.trim().replace(/[.:…]+$/, '');
        if (p.length < 3 || zh.has(v) || !/[A-Za-z]/.test(p)) continue;
        const re = new RegExp('(^|[^A-Za-z])' + p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '($|[^A-Za-z])');
        if (re.test(text)) left.push(p);
      }
    }
    return left;
"#;

async fn english_left(b: &Client) -> Vec<String> {
    let script = format!(
        "const done = arguments[arguments.length - 1]; (async () => {{ {ENGLISH_LEFT} }})().then(done, e => done(['error: ' + e]));"
    );
    let v = b.execute_async(&script, vec![]).await.expect("scan");
    serde_json::from_value(v).expect("a list")
}

/// A dispatcher and a team member work a case the sensor raised, from fault to closure, in
/// the browser; then the language switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_worked_in_the_browser_from_fault_to_closure() {
    let Some(driver) = Driver::start("a_case_is_worked_in_the_browser_from_fault_to_closure").await
    else {
        return;
    };
    let gw = Gateway::start(|c| {
        c.rules.hold_s = 0;
        c.cases.verify_window_s = 1;
        // No lamp answers here: a lamp command's outcome is a timeout, soon.
        c.commands.ack_timeout_ms = 1_500;
    })
    .await;
    gw.import_inventory().await;
    let store = gw.running.state.store.as_ref();
    let now = streetgate_gateway::clock::wall_ms();
    for (name, role, team) in [
        ("di.spatch", Role::Dispatcher, None),
        ("liu.yang", Role::TeamMember, Some("municipal".to_owned())),
    ] {
        streetgate_gateway::auth::add_user(
            store,
            name,
            role,
            team,
            None,
            Some("console-test-pw".into()),
            now,
        )
        .await
        .expect("user");
    }
    let base = format!("http://{}", gw.running.http_addr);

    // The dispatcher's desk, in English.
    let desk = driver.browser(1400, 900, "en-US").await;
    sign_in(&desk, &base, "di.spatch", "console-test-pw").await;
    // The dispatcher starts on the overview map.
    wait_for(
        &desk,
        "[data-test=map] .leaflet-pane",
        Duration::from_secs(10),
    )
    .await;
    desk.goto(&format!("{base}/#/cases")).await.unwrap();
    wait_for(&desk, "[data-test=case-list]", Duration::from_secs(10)).await;
    shot(&desk, "01-desk-empty").await;

    // A manhole cover opens: the case appears in the open list without a reload.
    let published = Instant::now();
    publish(&gw.broker(), vec![cover(1, "raised")]).await;
    wait_for(&desk, "tr[data-case-id]", Duration::from_secs(10)).await;
    println!(
        "the case appeared in the open console {} ms after the device's message was published",
        published.elapsed().as_millis()
    );
    let (_, list) = gw.http.get("/api/cases").await;
    let id = list["cases"][0]["id"].as_i64().expect("a case");
    shot(&desk, "02-desk-case-live").await;

    // The team member on a phone-sized window: the case is there; hand it back (退单).
    let phone = driver.browser(400, 860, "en-US").await;
    sign_in(&phone, &base, "liu.yang", "console-test-pw").await;
    let card = format!("article[data-case-id='{id}']");
    wait_for(&phone, &card, Duration::from_secs(10)).await;
    shot(&phone, "03-phone-dispatched").await;
    click(&phone, &format!("{card} button[data-action=return]")).await;
    type_into(
        &phone,
        &format!("{card} textarea[name=reason]"),
        "cover belongs to the gas company",
    )
    .await;
    click(&phone, &format!("{card} form.act-form button.confirm")).await;

    // The dispatcher opens it (live: it now offers dispatch) and dispatches it again.
    click(&desk, &format!("tr[data-case-id='{id}']")).await;
    wait_for(&desk, "[data-test=timeline]", Duration::from_secs(10)).await;
    click(&desk, "button[data-action=dispatch]").await;
    shot(&desk, "04-desk-dispatch-form").await;
    click(&desk, "form.act-form button.confirm").await;
    wait_for(
        &desk,
        "h1 .badge[data-state=dispatched]",
        Duration::from_secs(10),
    )
    .await;

    // The phone's list follows; accept, then resolve with a note and a photo.
    click(
        &phone,
        &format!("{card}[data-state=dispatched] button[data-action=accept]"),
    )
    .await;
    click(
        &phone,
        &format!("{card}[data-state=accepted] button[data-action=resolve]"),
    )
    .await;
    type_into(
        &phone,
        &format!("{card} textarea[name=note]"),
        "cover reseated",
    )
    .await;
    let photo = gw.dir.path().join("repair.png");
    std::fs::write(&photo, PHOTO_PNG).unwrap();
    type_into(
        &phone,
        &format!("{card} input[type=file]"),
        &photo.display().to_string(),
    )
    .await;
    shot(&phone, "05-phone-resolve-form").await;
    click(&phone, &format!("{card} form.act-form button.confirm")).await;
    wait_for(
        &phone,
        &format!("{card}[data-state=resolved]"),
        Duration::from_secs(10),
    )
    .await;
    shot(&phone, "06-phone-resolved").await;

    // The sensor shows the cover back: the gateway verifies and closes the case, and the
    // dispatcher's open page shows it, with the photo in the timeline.
    publish(&gw.broker(), vec![cover(2, "cleared")]).await;
    wait_for(
        &desk,
        "h1 .badge[data-state=closed]",
        Duration::from_secs(30),
    )
    .await;
    wait_for(
        &desk,
        "[data-test=timeline] li[data-action=photo] img",
        Duration::from_secs(5),
    )
    .await;
    let timeline = desk
        .find(Locator::Css("[data-test=timeline]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "Returned",
        "cover belongs to the gas company",
        "Accepted",
        "cover reseated",
        "Verified",
        "Closed",
    ] {
        assert!(
            timeline.contains(expected),
            "{expected} missing from the timeline: {timeline}"
        );
    }
    wait_for(&desk, ".facts .tag.green", Duration::from_secs(5)).await;
    shot(&desk, "07-desk-closed").await;
    let (_, case) = gw.http.get(&format!("/api/cases/{id}")).await;
    assert_eq!(case["state"], "closed", "{case}");
    assert_eq!(case["photos"].as_array().map(Vec::len), Some(1), "{case}");

    // Language: every visible string turns Chinese, and the choice is remembered.
    assert!(
        english_left(&desk).await.len() > 3,
        "the English page shows English"
    );
    click(&desk, "button.lang").await;
    wait_true(
        &desk,
        "zh",
        "return document.documentElement.lang === 'zh-CN'",
        Duration::from_secs(5),
    )
    .await;
    let left = english_left(&desk).await;
    assert!(
        left.is_empty(),
        "English left on the Chinese case page: {left:?}"
    );
    shot(&desk, "08-desk-case-zh").await;
    desk.goto(&format!("{base}/#/cases?open=false"))
        .await
        .unwrap();
    wait_for(&desk, "tr[data-case-id]", Duration::from_secs(10)).await;
    let left = english_left(&desk).await;
    assert!(
        left.is_empty(),
        "English left on the Chinese case list: {left:?}"
    );
    shot(&desk, "09-desk-list-zh").await;
    click(&phone, "button.lang").await;
    wait_true(
        &phone,
        "zh",
        "return document.documentElement.lang === 'zh-CN'",
        Duration::from_secs(5),
    )
    .await;
    let left = english_left(&phone).await;
    assert!(
        left.is_empty(),
        "English left on the Chinese field page: {left:?}"
    );
    shot(&phone, "10-phone-zh").await;
    desk.goto(&format!("{base}/#/map")).await.unwrap();
    wait_for(
        &desk,
        "[data-test=kpis] [data-kpi=online]",
        Duration::from_secs(10),
    )
    .await;
    let left = english_left(&desk).await;
    assert!(
        left.is_empty(),
        "English left on the Chinese overview: {left:?}"
    );
    shot(&desk, "11-desk-map-zh").await;

    // The overview's figures: registered and closed today, the month's on-time rate.
    for (kpi, value) in [("registered-today", "1"), ("closed-today", "1")] {
        wait_true(
            &desk,
            kpi,
            &format!(
                "const e = document.querySelector('[data-kpi={kpi}] .kpi-value'); return !!e && e.textContent === '{value}';"
            ),
            Duration::from_secs(10),
        )
        .await;
    }
    wait_for(&desk, "[data-kpi=on-time]", Duration::from_secs(5)).await;

    // Live device state: a device's last will turns the overview's online count down and
    // the device's page offline without a reload; its birth turns them back.
    let online_is = |n: &str| {
        format!(
            "const e = document.querySelector('[data-kpi=online] .kpi-value'); return !!e && e.textContent === '{n} / 4';"
        )
    };
    wait_true(&desk, "4 online", &online_is("4"), Duration::from_secs(10)).await;
    let published = Instant::now();
    publish(&gw.broker(), vec![status("BN-1", "bin", 1, false)]).await;
    wait_true(&desk, "3 online", &online_is("3"), Duration::from_secs(10)).await;
    println!(
        "a last will reached the overview's online count {} ms after it was published",
        published.elapsed().as_millis()
    );
    shot(&desk, "12-desk-map-device-offline").await;
    desk.goto(&format!("{base}/#/devices/BN-1")).await.unwrap();
    wait_for(
        &desk,
        "[data-test=device-online] [data-online=false]",
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        &desk,
        "[data-test=device-list] td[data-state=BN-1] .tag.grey",
        Duration::from_secs(5),
    )
    .await;
    let published = Instant::now();
    publish(&gw.broker(), vec![status("BN-1", "bin", 2, true)]).await;
    wait_for(
        &desk,
        "[data-test=device-online] [data-online=true]",
        Duration::from_secs(10),
    )
    .await;
    println!(
        "a birth message reached the open device page {} ms after it was published",
        published.elapsed().as_millis()
    );
    wait_for(
        &desk,
        "[data-test=device-list] td[data-state=BN-1] .tag.green",
        Duration::from_secs(5),
    )
    .await;
    let text = desk
        .find(Locator::Css("[data-test=device-battery]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "61%");
    shot(&desk, "13-desk-device-live").await;

    // Lighting night by night against the target, and one lamp commanded: confirm, then
    // the outcome (no lamp answers here: timed out).
    let today = streetgate_gateway::clock::wall_ms().div_euclid(86_400_000);
    let nights: Vec<streetgate_gateway::store::LightingDay> = (1..=5)
        .map(|k| streetgate_gateway::store::LightingDay {
            segment: "S-1".into(),
            day: today - k,
            grid: "320508001001001".into(),
            road_class: Some("main".into()),
            lit_s: if k == 3 { 9_000 } else { 10_000 },
            expected_s: 10_000,
        })
        .collect();
    store.save_lighting_days(&nights).await.unwrap();
    desk.goto(&format!("{base}/#/lighting")).await.unwrap();
    wait_true(
        &desk,
        "nights drawn",
        "return document.querySelectorAll('[data-test=nights] rect.bar').length === 5 && document.querySelectorAll('[data-test=nights] rect.bar.missed').length === 1;",
        Duration::from_secs(10),
    )
    .await;
    let left = english_left(&desk).await;
    assert!(
        left.is_empty(),
        "English left on the Chinese lighting page: {left:?}"
    );
    type_into(&desk, "[data-test=lamp-id]", "SL-1").await;
    click(
        &desk,
        "[data-test=lamp-command] button[data-lamp-command=off]",
    )
    .await;
    shot(&desk, "14-desk-lamp-confirm").await;
    click(&desk, "[data-test=lamp-command] button.confirm").await;
    wait_true(
        &desk,
        "lamp outcome",
        "const e = document.querySelector('.command-result'); return !!e && ['timed_out', 'failed', 'acked', 'rejected'].includes(e.dataset.outcome);",
        Duration::from_secs(15),
    )
    .await;
    let (_, commands) = gw.http.get("/api/commands").await;
    assert_eq!(commands["commands"][0]["device_id"], "SL-1", "{commands}");
    shot(&desk, "15-desk-lighting-nights-lamp").await;

    desk.close().await.unwrap();
    phone.close().await.unwrap();
    gw.running.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bench (not a test: `cargo test -p streetgate-gateway --test console -- --ignored bench
// --nocapture`; build with `--release` for figures that mean something).

/// A city of 1,000,000 devices in 1,000 grids with 10,000 open cases: the time until the
/// overview is usable (the per-grid map of the whole city, then a zoomed-in box), and the time
/// to list and filter the cases. Prints the figures; asserts only that the answers are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a bench: run with --ignored"]
async fn bench_million_devices_and_ten_thousand_cases() {
    use streetgate_gateway::model::{CaseSource, CaseState, CaseType};
    use streetgate_gateway::store::{CaseHistoryEntry, CaseRecord};
    const DEVICES: usize = 1_000_000;
    const GRIDS: usize = 1_000;
    const CASES: usize = 10_000;
    let gw = Gateway::start(|_| {}).await;
    let started = Instant::now();
    let mut csv = String::from(
        "id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides\n",
    );
    for i in 0..DEVICES {
        let g = i % GRIDS;
        // Grids on a 40 x 25 lattice of ~1 km cells; devices spread inside their cell.
        #[allow(clippy::cast_precision_loss)]
        let (lat, lon) = (
            35.6 + (g / 40) as f64 * 0.01 + (i / GRIDS % 100) as f64 * 0.0001,
            114.1 + (g % 40) as f64 * 0.01 + (i / GRIDS / 100) as f64 * 0.001,
        );
        csv.push_str(&format!(
            "BN-{i:07},bin,,{lat:.6},{lon:.6},G{g:04},,,,1200,mqtt,\n"
        ));
    }
    let devices = streetgate_gateway::inventory::parse_csv(csv.as_bytes()).expect("inventory");
    gw.running.state.inventory.upsert(devices);
    println!(
        "bench: {DEVICES} devices in memory after {:?}",
        started.elapsed()
    );

    let store = gw.running.state.store.clone();
    let started = Instant::now();
    let now = streetgate_gateway::clock::wall_ms();
    for i in 0..CASES {
        let g = i % GRIDS;
        let id =
            streetgate_protocols::DeviceId::new(&format!("BN-{:07}", i * 97 % DEVICES)).unwrap();
        let case = CaseRecord {
            id: 0,
            case_type: if i % 3 == 0 {
                CaseType::BinOverflow
            } else {
                CaseType::BinFull
            },
            source: CaseSource::Sensor,
            subject_key: format!("device:{}", id.as_str()),
            condition_key: Some("alarm:bin_full".into()),
            grid: format!("G{g:04}"),
            team: Some("sanitation".into()),
            state: CaseState::Dispatched,
            urgent: i % 10 == 0,
            devices: vec![id],
            detail: "bench".into(),
            opened_ms: now - 1000,
            due_ms: Some(if i % 4 == 0 { now - 1 } else { now + 3_600_000 }),
            updated_ms: now,
            closed_ms: None,
            condition_active: true,
            clear_since_ms: None,
            rework_count: 0,
            returned_count: 0,
            supervision_level: 0,
            on_site_due_ms: None,
            on_site_ms: None,
        };
        let entry = CaseHistoryEntry {
            action: "register".into(),
            at_ms: now,
            actor: "system".into(),
            from: None,
            to: CaseState::Dispatched,
            note: String::new(),
        };
        store.insert_case(&case, &entry).await.expect("case");
    }
    println!(
        "bench: {CASES} open cases stored after {:?}",
        started.elapsed()
    );

    let time = |path: String| {
        let http = gw.http.clone();
        async move {
            let t = Instant::now();
            let (status, body) = http.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            (t.elapsed(), body)
        }
    };
    for round in ["first (outlines computed)", "again (outlines cached)"] {
        let (took, overview) = time("/api/map?zoom=11".into()).await;
        assert_eq!(overview["mode"], "grids");
        assert_eq!(overview["grids"].as_array().map(Vec::len), Some(GRIDS));
        assert_eq!(overview["summary"]["open_cases"], CASES);
        println!(
            "bench: whole-city overview, {GRIDS} grids, {round}: {took:?}, {} bytes",
            overview.to_string().len()
        );
    }
    for (round, bbox) in [
        ("first (cell index built)", "114.10,35.60,114.11,35.61"),
        ("again", "114.10,35.60,114.11,35.61"),
        ("another box", "114.30,35.70,114.31,35.71"),
    ] {
        let (took, near) = time(format!("/api/map?zoom=17&bbox={bbox}")).await;
        assert_eq!(near["mode"], "points", "{}", near["summary"]);
        println!(
            "bench: one zoomed-in box, {round}, {} devices and {} cases: {took:?}",
            near["devices"].as_array().map_or(0, Vec::len),
            near["cases"].as_array().map_or(0, Vec::len)
        );
    }
    for path in [
        "/api/cases?limit=50",
        "/api/cases?limit=50&offset=5000",
        "/api/cases?type=bin_overflow&limit=50",
        "/api/cases?grid=G0042&limit=50",
        "/api/cases?urgent=true&limit=50",
        "/api/cases?overdue=true&limit=50",
    ] {
        let (took, list) = time(path.into()).await;
        println!("bench: {path}: {took:?} ({} matching)", list["total"]);
    }
    for round in ["first", "again"] {
        let (took, devices) = time("/api/devices?q=bn-00420&limit=50".into()).await;
        println!(
            "bench: device search over {DEVICES}, {round}: {took:?} ({} matching)",
            devices["total"]
        );
    }
    // The overview's figures of the day and the month come from the evaluation.
    let (y, m, d) = streetgate_gateway::evaluation::period::civil_from_days(
        (now + 8 * 3_600_000).div_euclid(86_400_000),
    );
    for path in [
        format!("/api/evaluation?period=day&at={y:04}-{m:02}-{d:02}"),
        format!("/api/evaluation?period=month&at={y:04}-{m:02}"),
    ] {
        let (took, report) = time(path.clone()).await;
        println!(
            "bench: {path}: {took:?} ({} registered)",
            report["city"]["registered"]
        );
    }

    // In the browser (with STREETGATE_TEST_CHROMEDRIVER): the time from opening the console
    // to a usable overview (the city's grids drawn and the figures shown), the page's
    // JavaScript heap and the renderer's memory; then the case list.
    if let Some(driver) = Driver::start("bench_million_devices_and_ten_thousand_cases").await {
        streetgate_gateway::auth::add_user(
            store.as_ref(),
            "bench.desk",
            Role::Dispatcher,
            None,
            None,
            Some("console-bench-pw".into()),
            now,
        )
        .await
        .expect("user");
        let base = format!("http://{}", gw.running.http_addr);
        let desk = driver.browser(1400, 900, "en-US").await;
        sign_in(&desk, &base, "bench.desk", "console-bench-pw").await;
        desk.goto(&format!("{base}/#/cases")).await.unwrap();
        wait_for(&desk, "tr[data-case-id]", Duration::from_secs(60)).await;
        let t = Instant::now();
        desk.goto(&format!("{base}/#/map")).await.unwrap();
        desk.refresh().await.unwrap();
        wait_true(
            &desk,
            "the overview drawn",
            "return document.querySelectorAll('[data-test=map] path.leaflet-interactive, [data-test=map] canvas').length > 0 && !!document.querySelector('[data-kpi=on-time]') && document.querySelector('[data-kpi=open] .kpi-value')?.textContent === '10,000';",
            Duration::from_secs(120),
        )
        .await;
        let usable = t.elapsed();
        // Let the page settle (the fitted view's second draw), then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let heap = desk
            .execute(
                "return performance.memory ? [performance.memory.usedJSHeapSize, performance.memory.totalJSHeapSize] : null;",
                vec![],
            )
            .await
            .unwrap();
        let used = heap[0].as_f64().unwrap_or(0.0) / 1_048_576.0;
        let total = heap[1].as_f64().unwrap_or(0.0) / 1_048_576.0;
        println!(
            "bench: browser, time to a usable overview of {DEVICES} devices ({GRIDS} grids, {CASES} open cases): {usable:?}"
        );
        println!(
            "bench: browser, JavaScript heap of the overview: {used:.1} MiB used of {total:.1} MiB"
        );
        let (renderers, pss) = renderer_memory_kib(driver.child.id());
        #[allow(clippy::cast_precision_loss)] // KiB to MiB for a printout
        let pss = pss as f64 / 1024.0;
        println!(
            "bench: browser, renderer processes ({renderers}): {pss:.1} MiB proportional set size"
        );
        shot(&desk, "bench-overview").await;
        let t = Instant::now();
        desk.goto(&format!("{base}/#/cases?type=bin_overflow&urgent=true"))
            .await
            .unwrap();
        wait_for(&desk, "tr[data-case-id]", Duration::from_secs(60)).await;
        println!(
            "bench: browser, case list filtered by type and urgency: {:?}",
            t.elapsed()
        );
        desk.close().await.unwrap();
    }
    gw.running.shutdown().await.unwrap();
}

/// The memory of the Chromium renderer processes started under this chromedriver (`root`):
/// their number and their proportional set size (shared pages divided among the processes
/// sharing them), KiB, from /proc.
fn renderer_memory_kib(root: u32) -> (usize, u64) {
    let mut parent = std::collections::HashMap::new();
    let mut renderers = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the comm may hold spaces, the ppid follows its ')'.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("--type=renderer") {
            renderers.push((pid, dir));
        }
    }
    let under_root = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p != 0 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let ours: Vec<_> = renderers
        .into_iter()
        .filter(|(pid, _)| under_root(*pid))
        .collect();
    let pss = ours
        .iter()
        .map(|(_, dir)| {
            std::fs::read_to_string(dir.join("smaps_rollup"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    (ours.len(), pss)
}
