//! Case alerts to chat group robots, each checked by a local receiver the way the vendor
//! documents its robot: WeCom's markdown message; DingTalk's signed URL (timestamp and
//! URL-encoded base64 HMAC-SHA256 of "timestamp\nsecret") with a rate limit answered first
//! (errcode 130101: retried) and a robot whose signature does not match (errcode 310000: failed
//! at once); Feishu's signed card (HMAC-SHA256 keyed with "timestamp\nsecret" over nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::routing::post;
use base64::Engine as _;
use common::{Gateway, Msg, eventually, publish, topic};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use streetgate_gateway::alerts::{WebhookConfig, WebhookKind};

const DINGTALK_SECRET: &str = "SEC0123456789abcdef";
const FEISHU_SECRET: &str = "feishu-secret";

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One request as a robot received it: (robot, query, body).
type Received = (String, HashMap<String, String>, Value);

/// What each robot received, and whether DingTalk's rate limit was answered yet.
#[derive(Clone, Default)]
struct Robots {
    received: Arc<Mutex<Vec<Received>>>,
    limited_once: Arc<Mutex<bool>>,
}

fn query_map(raw: Option<String>) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", raw.unwrap_or_default()))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn robot(
    State(r): State<Robots>,
    Path(which): Path<String>,
    RawQuery(raw): RawQuery,
    body: String,
) -> axum::Json<Value> {
    let q = query_map(raw);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    r.received
        .lock()
        .unwrap()
        .push((which.clone(), q.clone(), body.clone()));
    let now_ms = streetgate_gateway::clock::wall_ms();
    let answer = match which.as_str() {
        "wecom" => {
            let ok = q.get("key").map(String::as_str) == Some("wecom-key")
                && body["msgtype"] == "markdown"
                && body["markdown"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty());
            json!({"errcode": if ok { 0 } else { 40008 }, "errmsg": if ok { "ok" } else { "invalid message type" }})
        }
        "dingtalk" | "dingtalk-wrong" => {
            // Signed as documented: within an hour, sign = base64(HMAC-SHA256(secret, "ts\nsecret")).
            let ts: i64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
            let expected = hmac_b64(
                DINGTALK_SECRET.as_bytes(),
                format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
            );
            let signed = q.get("access_token").map(String::as_str) == Some("dt-token")
                && (now_ms - ts).abs() < 3_600_000
                && q.get("sign") == Some(&expected);
            let shaped = body["msgtype"] == "markdown"
                && body["markdown"]["title"].as_str().is_some()
                && body["markdown"]["text"].as_str().is_some();
            if !(signed && shaped) {
                json!({"errcode": 310000, "errmsg": "sign not match"})
            } else {
                let mut limited = r.limited_once.lock().unwrap();
                if *limited {
                    json!({"errcode": 0, "errmsg": "ok"})
                } else {
                    *limited = true;
                    json!({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
                }
            }
        }
        "feishu" => {
            let ts: i64 = body["timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let expected = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
            let ok = (now_ms / 1000 - ts).abs() < 3600
                && body["sign"].as_str() == Some(expected.as_str())
                && body["msg_type"] == "interactive"
                && body["card"]["elements"][0]["tag"] == "markdown";
            if ok {
                json!({"code": 0, "msg": "success"})
            } else {
                json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"})
            }
        }
        _ => json!({"errcode": 404}),
    };
    axum::Json(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_robots_get_signed_messages_rate_limits_retried_refusals_final() {
    let robots = Robots::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/{which}", post(robot))
        .with_state(robots.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");
    let webhooks = vec![
        WebhookConfig {
            name: "wecom".into(),
            url: format!("{base}/wecom?key=wecom-key"),
            kind: WebhookKind::Wecom,
            console_url: Some("https://console.example".into()),
            ..WebhookConfig::default()
        },
        WebhookConfig {
            name: "dingtalk".into(),
            url: format!("{base}/dingtalk?access_token=dt-token"),
            kind: WebhookKind::Dingtalk,
            secret: Some(DINGTALK_SECRET.into()),
            ..WebhookConfig::default()
        },
        WebhookConfig {
            name: "dingtalk-wrong".into(),
            url: format!("{base}/dingtalk-wrong?access_token=dt-token"),
            kind: WebhookKind::Dingtalk,
            secret: Some("SECnot-the-robots-secret".into()),
            ..WebhookConfig::default()
        },
        WebhookConfig {
            name: "feishu".into(),
            url: format!("{base}/feishu"),
            kind: WebhookKind::Feishu,
            secret: Some(FEISHU_SECRET.into()),
            ..WebhookConfig::default()
        },
    ];
    let gw = Gateway::start(move |c| {
        c.alerts.webhooks = webhooks;
        c.alerts.poll_interval_ms = 50;
        c.alerts.retry_min_ms = 50;
        c.alerts.retry_max_ms = 200;
    })
    .await;
    gw.import_inventory().await;
    publish(
        &gw.broker(),
        vec![Msg::new(
            topic("MH-1", "event"),
            r#"{"device_id":"MH-1","seq":1,"alarm":"cover_open","state":"raised","value":75.0}"#,
        )],
    )
    .await;

    let deliveries = |sink: &'static str| {
        let http = gw.http.clone();
        async move {
            let (_, d) = http
                .get(&format!("/api/alerts/deliveries?sink={sink}"))
                .await;
            d["deliveries"].as_array().cloned().unwrap_or_default()
        }
    };
    // registered and dispatched: two events per robot.
    eventually(
        "every robot done with both events",
        Duration::from_secs(20),
        || async {
            let mut done = true;
            for sink in ["wecom", "dingtalk", "dingtalk-wrong", "feishu"] {
                done &= deliveries(sink).await.len() == 2;
            }
            done
        },
    )
    .await;
    for sink in ["wecom", "feishu"] {
        for d in deliveries(sink).await {
            assert_eq!(
                (d["status"].as_str(), d["attempts"].as_u64()),
                (Some("delivered"), Some(1)),
                "{sink}: {d}"
            );
        }
    }
    // DingTalk: the first event was rate limited once, then taken.
    let dt = deliveries("dingtalk").await;
    assert!(dt.iter().all(|d| d["status"] == "delivered"), "{dt:?}");
    assert_eq!(
        dt.iter().filter_map(|d| d["attempts"].as_u64()).max(),
        Some(2),
        "{dt:?}"
    );
    // A signature that does not match fails at once, with the robot's reason.
    for d in deliveries("dingtalk-wrong").await {
        assert_eq!(
            (d["status"].as_str(), d["attempts"].as_u64()),
            (Some("failed"), Some(1)),
            "{d}"
        );
        assert!(
            d["last_error"].as_str().unwrap_or("").contains("310000"),
            "{d}"
        );
    }

    // What the people read: Chinese, urgent, the case, the place, the link.
    let received = robots.received.lock().unwrap().clone();
    let wecom = received
        .iter()
        .find(|(w, _, b)| {
            w == "wecom"
                && b["markdown"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .contains("已派遣")
        })
        .expect("the dispatch reached WeCom");
    let text = wecom.2["markdown"]["content"].as_str().unwrap();
    for part in [
        "【紧急】",
        "井盖异常",
        "320508001001001",
        "MH-1",
        "处置时限",
        "https://console.example/cases/",
    ] {
        assert!(text.contains(part), "{part} missing from:\n{text}");
    }
    gw.running.shutdown().await.unwrap();
}
