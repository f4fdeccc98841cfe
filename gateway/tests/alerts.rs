//! Alerts over real sockets: a cover alarm published to the embedded broker raises a case;
//! every case event reaches an MQTT subscriber of the alerts topic and two webhooks (real HTTP
//! servers on ephemeral ports): one that fails twice before accepting (retried with back-off,
//! three attempts recorded) and one that refuses for good (recorded as failed, not retried).
//! After a restart on the same store nothing is delivered twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Gateway, Msg, eventually, publish, topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use streetgate_gateway::config::{Config, WebhookConfig};

/// (x-streetgate-event header, authorization header, body) of one request.
type Request = (String, Option<String>, Value);

#[derive(Clone, Default)]
struct Receiver {
    /// Every request received.
    requests: Arc<Mutex<Vec<Request>>>,
    /// Answer 503 to this many requests first.
    fail_first: usize,
    /// Always answer this status (instead of 200) when set.
    always: Option<u16>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let event = headers
        .get("x-streetgate-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let n = {
        let mut req = r.requests.lock().unwrap();
        req.push((
            event,
            auth,
            serde_json::from_str(&body).unwrap_or(Value::Null),
        ));
        req.len()
    };
    if let Some(s) = r.always {
        return StatusCode::from_u16(s).unwrap();
    }
    if n <= r.fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn serve(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// Subscribe to every alert; returns the (topic, payload) list as it fills.
async fn subscribe_alerts(broker: &(String, u16)) -> Arc<Mutex<Vec<(String, Value)>>> {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let mut opts = MqttOptions::new(
        format!("alerts-sub-{}", rand::random::<u32>()),
        broker.0.clone(),
        broker.1,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .subscribe("streetgate/v1/_alerts/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let sink = Arc::clone(&got);
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    sink.lock().unwrap().push((p.topic, v));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("subscribed")
        .unwrap();
    got
}

fn alarm(seq: u32, state: &str) -> Msg {
    Msg::new(
        topic("MH-1", "event"),
        format!(
            r#"{{"device_id":"MH-1","seq":{seq},"alarm":"cover_tilted","state":"{state}","value":25.0}}"#
        ),
    )
}

fn tweak(c: &mut Config, flaky: &str, refusing: &str) {
    c.alerts.poll_interval_ms = 50;
    c.alerts.retry_min_ms = 20;
    c.alerts.retry_max_ms = 100;
    c.alerts.max_attempts = 5;
    c.alerts.webhooks = vec![
        WebhookConfig {
            name: "ops".into(),
            url: flaky.into(),
            authorization: Some("Bearer t0ken".into()),
            ..WebhookConfig::default()
        },
        WebhookConfig {
            name: "refuses".into(),
            url: refusing.into(),
            authorization: None,
            ..WebhookConfig::default()
        },
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_events_reach_mqtt_and_webhooks_with_retries_and_records() {
    let flaky = Receiver {
        fail_first: 2,
        ..Receiver::default()
    };
    let refusing = Receiver {
        always: Some(400),
        ..Receiver::default()
    };
    let (flaky_url, refusing_url) = (serve(flaky.clone()).await, serve(refusing.clone()).await);
    let gw = Gateway::start(|c| tweak(c, &flaky_url, &refusing_url)).await;
    gw.import_inventory().await;
    let broker = gw.broker();
    let mqtt_alerts = subscribe_alerts(&broker).await;

    publish(&broker, vec![alarm(1, "raised")]).await;
    // Registered, then dispatched by the routing table: two events.
    eventually("two alerts on MQTT", Duration::from_secs(15), || async {
        mqtt_alerts.lock().unwrap().len() >= 2
    })
    .await;
    let alerts = mqtt_alerts.lock().unwrap().clone();
    let (topic0, first) = &alerts[0];
    assert_eq!(
        topic0,
        "streetgate/v1/_alerts/320508001001001/manhole_cover"
    );
    assert_eq!(first["to"], "registered");
    assert_eq!(first["from"], Value::Null);
    assert_eq!(first["case"]["subject"], "device:MH-1");
    assert_eq!(first["case"]["devices"][0], "MH-1");
    assert_eq!(alerts[1].1["to"], "dispatched");
    assert_eq!(alerts[1].1["case"]["team"], "municipal");
    let ids: Vec<i64> = alerts
        .iter()
        .map(|(_, v)| v["event_id"].as_i64().unwrap())
        .collect();
    assert!(ids[0] < ids[1], "in order: {ids:?}");
    // The payload is what openapi.json documents as CaseEvent.
    let doc: Value = serde_json::from_str(streetgate_gateway::api::OPENAPI).unwrap();
    let schema = serde_json::json!({
        "components": doc["components"],
        "$ref": "#/components/schemas/CaseEvent"
    });
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for (_, event) in &alerts {
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{event} vs CaseEvent: {errors:?}");
    }

    // The flaky webhook got each event after two refusals of the first: 4 requests in all.
    eventually("webhook deliveries", Duration::from_secs(15), || async {
        let (_, d) = gw.http.get("/api/alerts/deliveries?sink=ops").await;
        d["deliveries"].as_array().is_some_and(|a| a.len() >= 2)
    })
    .await;
    {
        let req = flaky.requests.lock().unwrap();
        assert_eq!(req.len(), 4, "{req:?}");
        assert!(
            req.iter()
                .all(|(_, auth, _)| auth.as_deref() == Some("Bearer t0ken"))
        );
        assert_eq!(req[0].0, ids[0].to_string(), "event id header");
        assert_eq!(
            req[2].2["event_id"], ids[0],
            "the third attempt carries the same event"
        );
        assert_eq!(req[3].2["event_id"], ids[1]);
        assert_eq!(req[3].2["to"], "dispatched");
    }
    let (_, d) = gw.http.get("/api/alerts/deliveries?sink=ops").await;
    let d = d["deliveries"].as_array().unwrap().clone();
    // Newest first.
    assert_eq!(d[1]["event_id"], ids[0]);
    assert_eq!(d[1]["status"], "delivered");
    assert_eq!(d[1]["attempts"], 3);
    assert_eq!(d[1]["response_status"], 200);
    assert_eq!(d[0]["attempts"], 1);

    // The refusing webhook: one attempt per event, recorded as failed with the status.
    eventually("refusals recorded", Duration::from_secs(10), || async {
        let (_, d) = gw
            .http
            .get("/api/alerts/deliveries?sink=refuses&status=failed")
            .await;
        d["deliveries"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let (_, d) = gw.http.get("/api/alerts/deliveries?sink=refuses").await;
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["attempts"] == 1
                && x["response_status"] == 400
                && x["last_error"] == "HTTP 400")
    );
    assert_eq!(refusing.requests.lock().unwrap().len(), 2);
    let (_, mqtt) = gw.http.get("/api/alerts/deliveries?sink=mqtt").await;
    assert_eq!(mqtt["deliveries"].as_array().unwrap().len(), 2);
    assert!(gw.metric("streetgate_alerts_delivered_total").await >= 4.0);
    assert_eq!(gw.metric("streetgate_alerts_failed_total").await, 2.0);
    assert!(gw.metric("streetgate_alert_retries_total").await >= 2.0);
    let (status, err) = gw.http.get("/api/alerts/deliveries?status=lost").await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "invalid_query");

    // A transition through the API is a case event too.
    let case_id = first["case_id"].as_i64().unwrap();
    // Made by the operations centre's wang: the recorded actor is the caller.
    let wang = gw
        .http_as(
            "wang",
            streetgate_gateway::auth::Role::Dispatcher,
            None,
            None,
        )
        .await;
    let (status, body) = wang
        .post_json(
            &format!("/api/cases/{case_id}/transitions"),
            &serde_json::json!({"action": "accept"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("accept alert", Duration::from_secs(10), || async {
        let a = mqtt_alerts.lock().unwrap();
        a.iter()
            .any(|(_, v)| v["to"] == "accepted" && v["actor"] == "wang")
    })
    .await;
    eventually("accept on the webhook", Duration::from_secs(10), || async {
        flaky.requests.lock().unwrap().len() == 5
    })
    .await;

    // Restart on the same store: the cursors survive, nothing is delivered twice.
    let Gateway { running, dir, .. } = gw;
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.auth = streetgate_gateway::broker::AuthMode::Open;
    config.store.path = dir.path().join("data/streetgate.db");
    tweak(&mut config, &flaky_url, &refusing_url);
    running.shutdown().await.unwrap();
    let gw = Gateway::start_with(config, dir).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        flaky.requests.lock().unwrap().len(),
        5,
        "no redelivery after restart"
    );
    gw.running.shutdown().await.unwrap();
}

/// An event that can never be published (a 5 MB case detail, more than the broker accepts)
/// fails at once, recorded with its reason, and does not hold back the urgent alarm after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_can_never_be_published_does_not_hold_back_the_next() {
    let gw = Gateway::start(|c| {
        c.alerts.poll_interval_ms = 50;
        // Retrying a poisoned event with these would hold the queue for minutes.
        c.alerts.retry_min_ms = 5_000;
        c.alerts.retry_max_ms = 60_000;
        c.alerts.max_attempts = 8;
    })
    .await;
    gw.import_inventory().await;
    let broker = gw.broker();
    let mqtt_alerts = subscribe_alerts(&broker).await;
    let (status, body) = gw
        .http
        .post_json(
            "/api/cases",
            &serde_json::json!({
                "actor": "patrol-7",
                "source": "patrol",
                "type": "bin_overflow",
                "grid": "320508001001002",
                "location": "Renmin Rd 12",
                "detail": "x".repeat(5_000_000),
            }),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let started = std::time::Instant::now();
    publish(&broker, vec![alarm(1, "raised")]).await;
    eventually(
        "the urgent cover alert",
        Duration::from_secs(10),
        || async {
            mqtt_alerts
                .lock()
                .unwrap()
                .iter()
                .any(|(t, _)| t.ends_with("/manhole_cover"))
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cover alert took {:?}",
        started.elapsed()
    );
    let (_, d) = gw
        .http
        .get("/api/alerts/deliveries?sink=mqtt&status=failed")
        .await;
    let failed = d["deliveries"].as_array().unwrap().clone();
    assert!(!failed.is_empty(), "{d}");
    assert!(failed.iter().all(|x| x["attempts"] == 1), "{d}");
    assert!(
        failed[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{d}"
    );
    gw.running.shutdown().await.unwrap();
}

/// A receiver that refuses (503) every event of a case that is not urgent until `open` is set,
/// and accepts urgent ones: `(event_id, urgent, status)` of every request.
#[derive(Clone, Default)]
struct Choosy {
    requests: Arc<Mutex<Vec<(i64, bool, u16)>>>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

async fn choosy_hook(State(r): State<Choosy>, body: String) -> StatusCode {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let urgent = v["case"]["urgent"].as_bool().unwrap_or(false);
    let status = if urgent || r.open.load(std::sync::atomic::Ordering::SeqCst) {
        200
    } else {
        503
    };
    r.requests
        .lock()
        .unwrap()
        .push((v["event_id"].as_i64().unwrap_or(-1), urgent, status));
    StatusCode::from_u16(status).unwrap()
}

/// An urgent case's events do not wait behind an ordinary event that is being retried: they
/// go through the sink's urgent lane within seconds, and the ordinary events follow once the
/// receiver takes them, each delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_events_overtake_an_ordinary_one_being_retried() {
    let choosy = Choosy::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", post(choosy_hook))
        .with_state(choosy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = Gateway::start(|c| {
        c.alerts.mqtt = false;
        c.alerts.poll_interval_ms = 50;
        // The ordinary event is retried for a long while.
        c.alerts.retry_min_ms = 1_000;
        c.alerts.retry_max_ms = 2_000;
        c.alerts.max_attempts = 100;
        c.alerts.webhooks = vec![WebhookConfig {
            name: "ops".into(),
            url: url.clone(),
            ..WebhookConfig::default()
        }];
    })
    .await;
    gw.import_inventory().await;
    let report = |kind: &str, urgent: bool| {
        serde_json::json!({
            "source": "patrol",
            "type": kind,
            "grid": "320508001001002",
            "location": "Renmin Rd 12",
            "detail": "seen on patrol",
            "urgent": urgent,
        })
    };
    let (status, ordinary) = gw
        .http
        .post_json("/api/cases", &report("bin_full", false))
        .await;
    assert!(status < 300, "{status} {ordinary}");
    eventually(
        "the ordinary event refused",
        Duration::from_secs(10),
        || async { choosy.requests.lock().unwrap().iter().any(|r| r.2 == 503) },
    )
    .await;
    let started = std::time::Instant::now();
    let (status, urgent) = gw
        .http
        .post_json("/api/cases", &report("manhole_cover", true))
        .await;
    assert!(status < 300, "{status} {urgent}");
    eventually(
        "the urgent case's events",
        Duration::from_secs(10),
        || async {
            choosy
                .requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.1 && r.2 == 200)
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the urgent event took {:?}",
        started.elapsed()
    );
    assert!(
        choosy
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.1 || r.2 == 503),
        "no ordinary event was delivered yet"
    );

    // The receiver takes everything now: every event is delivered exactly once.
    choosy.open.store(true, std::sync::atomic::Ordering::SeqCst);
    let expected: usize = {
        let mut n = 0;
        for case in [&ordinary, &urgent] {
            let (_, c) = gw.http.get(&format!("/api/cases/{}", case["id"])).await;
            n += c["history"].as_array().unwrap().len();
        }
        n
    };
    eventually("every event delivered", Duration::from_secs(15), || async {
        choosy
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.2 == 200)
            .count()
            >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: Vec<i64> = {
        let mut ids: Vec<i64> = choosy
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.2 == 200)
            .map(|r| r.0)
            .collect();
        ids.sort_unstable();
        ids
    };
    let mut unique = delivered.clone();
    unique.dedup();
    assert_eq!(delivered, unique, "an event was delivered twice");
    assert_eq!(delivered.len(), expected, "{delivered:?}");
    let (_, d) = gw.http.get("/api/alerts/deliveries?sink=ops").await;
    let records = d["deliveries"].as_array().unwrap();
    assert_eq!(records.len(), expected, "{d}");
    assert!(records.iter().all(|r| r["status"] == "delivered"), "{d}");
    gw.running.shutdown().await.unwrap();
}
