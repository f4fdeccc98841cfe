//! Active and standby (`[ha]`): two `streetgate` processes on one PostgreSQL and one Mosquitto.
//! The active is killed with SIGKILL while a device sends steadily; the standby takes the lease
//! within `ha.takeover_s` (plus its start-up), loads the rule state and the open case, takes
//! over the broker session, and stores every reading the broker acknowledged, once; the alarm
//! repeated after the take-over does not duplicate the case.
//!
//! Needs `STREETGATE_TEST_PG_URL` and `STREETGATE_TEST_MOSQUITTO_BIN` (`.ci/run` sets both):
//! without them the test says so and does nothing; set but unusable, it fails.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::mosquitto::start_mosquitto;
use common::process::{Process, free_port};
use common::{Http, Msg, bin_telemetry, eventually, publish, token_in, topic};
use serde_json::Value;
use streetgate_gateway::auth;
use streetgate_gateway::store::sql::postgres::scratch::{ScratchDatabase, server_url};
use streetgate_gateway::store::{PgStore, Store};

/// `ha.takeover_s` for the test.
const TAKEOVER_S: u64 = 4;
/// Readings the device sends in all.
const READINGS: u32 = 600;

fn cover_open(seq: u32) -> Msg {
    Msg::new(
        topic("MH-1", "event"),
        format!(
            r#"{{"device_id":"MH-1","seq":{seq},"alarm":"cover_open","state":"raised","value":75.0}}"#
        ),
    )
}

/// `/api/health` of the process on `port` as the administrator; null while it does not
/// answer.
async fn health(port: u16, token: &str) -> Value {
    let url = format!("http://127.0.0.1:{port}/api/health");
    match reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn wait_role(port: u16, token: &str, role: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(&format!("role {role} on {port}"), within, || async {
        let h = health(port, token).await;
        h["role"] == role && (role != "active" || h["mqtt"]["subscribed"] == true)
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_with_nothing_lost_or_doubled() {
    let (Some(pg), Ok(mosquitto_bin)) =
        (server_url(), std::env::var("STREETGATE_TEST_MOSQUITTO_BIN"))
    else {
        eprintln!(
            "note: STREETGATE_TEST_PG_URL and STREETGATE_TEST_MOSQUITTO_BIN are needed; the active/standby test is skipped"
        );
        return;
    };
    let db = ScratchDatabase::create(&pg)
        .await
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_PG_URL={pg}: {e}"));
    // The administrator's token, in the shared database before either gateway starts.
    let token = {
        let store = PgStore::connect(&db.url, 2)
            .await
            .expect("migrate the database");
        let token = token_in(&store, auth::FIRST_ADMIN, auth::Role::Admin, None, None).await;
        store.close().await;
        token
    };
    let broker_dir = tempfile::tempdir().expect("temp dir");
    let mosquitto = start_mosquitto(&mosquitto_bin, broker_dir.path());
    let broker = ("127.0.0.1".to_owned(), mosquitto.port);
    let inventory = "id,kind,lat,lon,grid\nMH-1,manhole,31.3,120.6,320508001001001\nBN-1,bin,31.3,120.6,320508001001001\n";
    let env = |node: &str| {
        vec![
            ("STREETGATE_BROKER_EMBEDDED", "false".to_owned()),
            (
                "STREETGATE_MQTT_URL",
                format!("mqtt://127.0.0.1:{}", mosquitto.port),
            ),
            ("STREETGATE_MQTT_CLIENT_ID", "streetgate-ha-test".to_owned()),
            ("STREETGATE_STORE_BACKEND", "postgres".to_owned()),
            ("STREETGATE_STORE_URL", db.url.clone()),
            ("STREETGATE_STORE_HISTORY_PER_DEVICE", "100000".to_owned()),
            ("STREETGATE_HA_ENABLED", "true".to_owned()),
            ("STREETGATE_HA_NODE", node.to_owned()),
            ("STREETGATE_HA_TAKEOVER_S", TAKEOVER_S.to_string()),
        ]
    };
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    for d in &dirs {
        std::fs::write(d.path().join("inventory.csv"), inventory).expect("inventory");
    }
    let ports = [free_port(), free_port()];
    let http = |i: usize| {
        Http::new(format!("127.0.0.1:{}", ports[i]).parse().expect("addr")).with_token(&token)
    };
    let (a_http, b_http) = (http(0), http(1));

    let a = Process::start(dirs[0].path(), ports[0], free_port(), &env("gw-a"));
    wait_role(ports[0], &token, "active", Duration::from_secs(30)).await;
    let b = Process::start(dirs[1].path(), ports[1], free_port(), &env("gw-b"));
    wait_role(ports[1], &token, "standby", Duration::from_secs(30)).await;
    let h = health(ports[1], &token).await;
    assert_eq!(
        (h["node"].as_str(), h["status"].as_str()),
        (Some("gw-b"), Some("ok")),
        "{h}"
    );

    // The alarm raises a case on the active; the standby reads it from the shared store.
    publish(&broker, vec![cover_open(1)]).await;
    eventually("case dispatched", Duration::from_secs(15), || async {
        b_http.get("/api/cases").await.1["cases"][0]["state"] == "dispatched"
    })
    .await;
    let (status, refused) = b_http
        .post_json(
            "/api/cases",
            &serde_json::json!({"type": "manhole_cover", "grid": "320508001001001", "detail": "x"}),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (503, Some("standby")),
        "{refused}"
    );
    // People sign in on the standby as well (sessions are in the shared store).
    let anonymous = Http::new(format!("127.0.0.1:{}", ports[1]).parse().expect("addr"));
    let (status, session) = anonymous
        .post_json(
            "/api/session",
            &serde_json::json!({"username": "nobody", "password": "wrong password"}),
        )
        .await;
    assert_eq!(
        status, 401,
        "sign-in reaches the standby's check: {session}"
    );

    // A device sends steadily; the active dies a third of the way through.
    let sender = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for chunk in (1..=READINGS).collect::<Vec<_>>().chunks(20) {
                let msgs = chunk
                    .iter()
                    .map(|&s| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", s, 30.0)))
                    .collect();
                publish(&broker, msgs).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eventually("a third stored", Duration::from_secs(30), || async {
        let (_, d) = a_http.get("/api/devices/BN-1").await;
        d["last_seq"].as_u64().unwrap_or(0) >= u64::from(READINGS / 3)
    })
    .await;
    a.kill9();
    let took = wait_role(
        ports[1],
        &token,
        "active",
        Duration::from_secs(TAKEOVER_S + 20),
    )
    .await;
    eprintln!("the standby was active {took:?} after the kill (ha.takeover_s = {TAKEOVER_S})");
    assert!(
        took <= Duration::from_secs(TAKEOVER_S + 5),
        "take-over took {took:?}"
    );
    sender.await.expect("device sender");

    // Every acknowledged reading is stored once; the alarm again does not duplicate the case.
    publish(&broker, vec![cover_open(2)]).await;
    eventually("every reading stored", Duration::from_secs(30), || async {
        let (_, d) = b_http.get("/api/devices/BN-1").await;
        d["last_seq"] == READINGS
    })
    .await;
    let (_, history) = b_http.get("/api/devices/BN-1/history?limit=10000").await;
    let seqs: Vec<u64> = history["readings"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), READINGS as usize, "missing readings");
    assert_eq!(seqs.len(), READINGS as usize, "readings stored twice");
    let (_, d) = b_http.get("/api/devices/BN-1").await;
    assert_eq!(d["seq_gaps"], 0, "{d}");
    eventually(
        "the repeated alarm stored",
        Duration::from_secs(10),
        || async { b_http.get("/api/devices/MH-1").await.1["last_seq"] == 2 },
    )
    .await;
    let (_, cases) = b_http.get("/api/cases").await;
    assert_eq!(cases["total"], 1, "{cases}");
    let (_, case) = b_http
        .get(&format!("/api/cases/{}", cases["cases"][0]["id"]))
        .await;
    let states: Vec<&str> = case["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["to"].as_str())
        .collect();
    assert_eq!(states, ["registered", "dispatched"], "{case}");
    drop(b);
    drop(mosquitto);
    db.drop_database().await.expect("drop the scratch database");
}
