//! Device authentication and topic rules: on the embedded broker (the default,
//! `broker.auth = "devices"`), and on a real Mosquitto with the password file and ACL that
//! `streetgate device credentials` exports.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Gateway, INVENTORY, eventually, topic};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use serde_json::{Value, json};
use streetgate_gateway::broker::AuthMode;
use streetgate_gateway::config::Config;

/// A JSON manhole telemetry message.
fn manhole_telemetry(id: &str, seq: u32) -> String {
    format!(
        r#"{{"device_id":"{id}","seq":{seq},"data":{{"manhole":{{"tilt_deg":1.5,"water_level_cm":3,"battery_pct":90}}}}}}"#
    )
}

/// The credentials an inventory answer carries, by device id.
fn credentials_of(answer: &Value) -> HashMap<String, String> {
    answer["credentials"]
        .as_array()
        .expect("credentials in the answer")
        .iter()
        .map(|c| {
            assert_eq!(c["username"], c["id"], "{c}");
            (
                c["id"].as_str().expect("id").to_owned(),
                c["password"].as_str().expect("password").to_owned(),
            )
        })
        .collect()
}

/// Options for `client_id` with `login` (user name, password).
fn options(
    broker: &(String, u16),
    client_id: &str,
    login: Option<(&str, &str)>,
    will: Option<LastWill>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, broker.0.clone(), broker.1);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    if let Some(w) = will {
        o.set_last_will(w);
    }
    o
}

/// Connect and return the CONNACK code (or the refusal), with the client when accepted.
async fn connect(o: MqttOptions) -> (ConnectReturnCode, Option<(AsyncClient, EventLoop)>) {
    let (client, mut events) = AsyncClient::new(o, 16);
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ConnAck { code, .. }))) => return code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("connecting: {e}"),
            }
        }
    })
    .await
    .expect("an answer to CONNECT");
    let kept = (code == ConnectReturnCode::Success).then_some((client, events));
    (code, kept)
}

/// Poll until `pred` matches an incoming packet; `None` when the connection ends first or
/// nothing matches within `wait`.
async fn until<T>(
    events: &mut EventLoop,
    wait: Duration,
    mut pred: impl FnMut(&Packet) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(wait, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = pred(&p) {
                        return Some(t);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Publish one QoS 1 message and say whether it was acknowledged (`false`: the connection was
/// closed instead).
async fn publish_acked(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    body: &str,
) -> bool {
    client
        .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
        .await
        .expect("queue the publish");
    until(events, Duration::from_secs(10), |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .is_some()
}

/// Subscribe a connected device to its own `command` topic and wait for the SUBACK.
async fn subscribe_to_commands(client: &AsyncClient, events: &mut EventLoop, id: &str) {
    client
        .subscribe(topic(id, "command"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    until(events, Duration::from_secs(10), |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await
    .expect("SUBACK");
}

/// Command SL-1 off through the API (answered 200; the lamp does not acknowledge, so it times
/// out after `commands.ack_timeout_ms`) and return the topic the lamp heard it on, if any.
async fn command_sl1_off(gw: &Gateway, lamp_events: &mut EventLoop) -> Option<String> {
    let off = json!({"action": "off"});
    let ((status, body), heard) = tokio::join!(
        gw.http.post_json("/api/devices/SL-1/command", &off),
        until(lamp_events, Duration::from_secs(10), |p| match p {
            Packet::Publish(p) => Some(p.topic.clone()),
            _ => None,
        })
    );
    assert_eq!(status, 200, "{body}");
    heard
}

async fn history_len(gw: &Gateway, id: &str) -> usize {
    let (status, body) = gw.http.get(&format!("/api/devices/{id}/history")).await;
    assert_eq!(status, 200, "{body}");
    body["readings"]
        .as_array()
        .or_else(|| body.as_array())
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sign_in_with_their_own_secret_and_stay_on_their_own_topics() {
    let gw = Gateway::start(|c| {
        c.broker.auth = AuthMode::Devices;
        c.commands.ack_timeout_ms = 1000;
    })
    .await;
    let broker = gw.broker();

    // Registering issues each MQTT device a secret, shown in that answer only.
    let (status, imported) = gw.http.post_text("/api/devices/import", INVENTORY).await;
    assert_eq!(status, 200, "{imported}");
    let secrets = credentials_of(&imported);
    assert_eq!(secrets.len(), 4, "{imported}");
    // Importing again issues nothing new: the devices keep their secrets.
    let (_, again) = gw.http.post_text("/api/devices/import", INVENTORY).await;
    assert_eq!(again["credentials"], json!([]), "{again}");
    let mh = secrets["MH-1"].as_str();

    // Wrong, missing or someone else's secret; an unknown client id; another user name.
    for (id, login) in [
        ("MH-1", Some(("MH-1", "not-the-secret"))),
        ("MH-1", None),
        ("MH-1", Some(("MH-1", secrets["BN-1"].as_str()))),
        ("MH-1", Some(("BN-1", mh))),
        ("watcher", Some(("watcher", mh))),
        ("watcher", None),
    ] {
        let (code, _) = connect(options(&broker, id, login, None)).await;
        assert_eq!(
            code,
            ConnectReturnCode::BadUserNamePassword,
            "{id} {login:?}"
        );
    }
    assert!(
        gw.metric("streetgate_broker_refused_total{reason=\"bad_credentials\"}")
            .await
            >= 6.0
    );

    // A device's will must be its own status topic.
    let will = LastWill::new(topic("BN-1", "status"), "{}", QoS::AtLeastOnce, true);
    let (code, _) = connect(options(&broker, "MH-1", Some(("MH-1", mh)), Some(will))).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    // The gateway's own client ids are reserved, with or without a device's secret.
    let publisher = format!("{}-pub", Config::default().mqtt.client_id);
    for login in [None, Some((publisher.as_str(), mh))] {
        let (code, _) = connect(options(&broker, &publisher, login, None)).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{login:?}");
    }

    // The device with its secret: telemetry on its own topic is stored.
    let will = LastWill::new(topic("MH-1", "status"), "{}", QoS::AtLeastOnce, true);
    let (code, conn) = connect(options(&broker, "MH-1", Some(("MH-1", mh)), Some(will))).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (client, mut events) = conn.expect("connected");
    assert!(
        publish_acked(
            &client,
            &mut events,
            &topic("MH-1", "telemetry"),
            &manhole_telemetry("MH-1", 1)
        )
        .await
    );
    eventually("MH-1's reading stored", Duration::from_secs(10), || async {
        history_len(&gw, "MH-1").await == 1
    })
    .await;

    // Subscriptions: its own command and config only.
    client
        .subscribe_many([
            rumqttc::SubscribeFilter::new(topic("MH-1", "command"), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(topic("MH-1", "config"), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("#".into(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("streetgate/v1/+/command".into(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(topic("SL-1", "command"), QoS::AtLeastOnce),
        ])
        .await
        .expect("queue the subscription");
    let codes = until(&mut events, Duration::from_secs(10), |p| match p {
        Packet::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await
    .expect("SUBACK");
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );
    assert_eq!(
        gw.metric("streetgate_broker_denied_total{action=\"subscribe\"}")
            .await,
        3.0
    );

    // Publishing as another device, forging an ack, commanding a lamp, or posting an alert:
    // each closes the connection without a PUBACK, and nothing reaches the gateway.
    let forged = [
        (topic("BN-1", "telemetry"), manhole_telemetry("BN-1", 1)),
        (
            topic("SL-1", "ack"),
            r#"{"device_id":"SL-1","seq":1,"cmd_id":7,"ok":true}"#.to_owned(),
        ),
        (topic("SL-1", "command"), r#"{"action":"off"}"#.to_owned()),
        (topic("MH-1", "command"), r#"{"action":"off"}"#.to_owned()),
        (
            "streetgate/v1/_alerts/manhole_cover".to_owned(),
            "{}".to_owned(),
        ),
    ];
    let (_, _) = (client, events);
    for (n, (t, body)) in forged.iter().enumerate() {
        let (code, conn) = connect(options(&broker, "MH-1", Some(("MH-1", mh)), None)).await;
        assert_eq!(code, ConnectReturnCode::Success);
        let (client, mut events) = conn.expect("connected");
        assert!(
            !publish_acked(&client, &mut events, t, body).await,
            "{t} was acknowledged"
        );
        assert_eq!(
            gw.metric("streetgate_broker_denied_total{action=\"publish\"}")
                .await,
            (n + 1) as f64
        );
    }
    assert_eq!(history_len(&gw, "BN-1").await, 0);
    assert_eq!(history_len(&gw, "SL-1").await, 0);

    // The gateway's own publisher still works: a lamp command reaches the lamp, which is
    // subscribed with its own secret.
    let sl = secrets["SL-1"].as_str();
    let (code, conn) = connect(options(&broker, "SL-1", Some(("SL-1", sl)), None)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (lamp, mut lamp_events) = conn.expect("connected");
    subscribe_to_commands(&lamp, &mut lamp_events, "SL-1").await;
    let command = command_sl1_off(&gw, &mut lamp_events).await;
    assert_eq!(command.as_deref(), Some(topic("SL-1", "command").as_str()));

    // A new secret replaces the old one at once; a deleted device cannot sign in.
    let (status, fresh) = gw
        .http
        .post_json("/api/devices/MH-1/credentials", &json!({}))
        .await;
    assert_eq!(status, 200, "{fresh}");
    let fresh = fresh["password"].as_str().expect("password").to_owned();
    assert_ne!(fresh, mh);
    let (code, _) = connect(options(&broker, "MH-1", Some(("MH-1", mh)), None)).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (code, _) = connect(options(&broker, "MH-1", Some(("MH-1", &fresh)), None)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (status, _) = gw
        .http
        .post_json("/api/devices/XX-9/credentials", &json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw.http.delete("/api/devices/MH-1").await;
    assert_eq!(status, 204);
    let (code, _) = connect(options(&broker, "MH-1", Some(("MH-1", &fresh)), None)).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    // Only administrators issue secrets.
    let viewer = gw
        .http_as("viewer", streetgate_gateway::auth::Role::Viewer, None, None)
        .await;
    let (status, _) = viewer
        .post_json("/api/devices/BN-1/credentials", &json!({}))
        .await;
    assert_eq!(status, 403);

    // The secrets survive a restart (they are in the store, hashed).
    let stored = gw
        .running
        .state
        .store
        .device_credentials()
        .await
        .expect("credentials");
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|(_, hash)| hash.len() == 64 && !secrets.values().any(|s| s == hash))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_broker_still_reserves_the_gateways_client_ids() {
    let gw = Gateway::start(|c| {
        c.broker.auth = AuthMode::Open;
        c.commands.ack_timeout_ms = 1000;
    })
    .await;
    gw.import_inventory().await;
    let broker = gw.broker();
    let publisher = format!("{}-pub", Config::default().mqtt.client_id);
    for _ in 0..5 {
        let (code, _) = connect(options(&broker, &publisher, None, None)).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized);
    }
    // Anyone else connects and publishes anywhere (a trusted test network).
    let (code, conn) = connect(options(&broker, "tool", None, None)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (client, mut events) = conn.expect("connected");
    assert!(
        publish_acked(
            &client,
            &mut events,
            &topic("MH-1", "telemetry"),
            &manhole_telemetry("MH-1", 1)
        )
        .await
    );
    // The gateway's publisher kept its connection: a lamp command goes out.
    let (code, conn) = connect(options(&broker, "SL-1", None, None)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (lamp, mut lamp_events) = conn.expect("connected");
    subscribe_to_commands(&lamp, &mut lamp_events, "SL-1").await;
    let command = command_sl1_off(&gw, &mut lamp_events).await;
    assert!(command.is_some(), "the command reached the lamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_the_exported_password_file_and_acl_confines_devices() {
    let Ok(bin) = std::env::var("STREETGATE_TEST_MOSQUITTO_BIN") else {
        eprintln!(
            "note: STREETGATE_TEST_MOSQUITTO_BIN is not set; skipping the Mosquitto ACL test (e.g. STREETGATE_TEST_MOSQUITTO_BIN=/usr/sbin/mosquitto)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("data/streetgate.db");
    let files = tempfile::tempdir().expect("temp dir");
    let (csv, passwd, acl) = (
        files.path().join("devices.csv"),
        files.path().join("streetgate.passwd"),
        files.path().join("streetgate.acl"),
    );
    let config_file = files.path().join("streetgate.toml");
    std::fs::write(
        &config_file,
        format!(
            "[store]\npath = {db:?}\n[mqtt]\nusername = \"streetgate\"\npublisher_username = \"streetgate-pub\"\npassword = \"gateway-secret-1\"\n"
        ),
    )
    .expect("write the config");

    // The inventory is in the store; the command line issues every device a secret and
    // writes Mosquitto's password file and ACL.
    let mut config = Config::default();
    config.store.path = db.clone();
    let store = streetgate_gateway::app::open_store(&config.store)
        .await
        .expect("store");
    let devices = streetgate_gateway::inventory::parse_csv(INVENTORY.as_bytes()).expect("csv");
    store.upsert_devices(&devices, 1).await.expect("devices");
    store.close().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streetgate"))
        .args(["device", "credentials", "--all", "--config"])
        .arg(&config_file)
        .arg("--out")
        .arg(&csv)
        .arg("--mosquitto-passwd")
        .arg(&passwd)
        .arg("--mosquitto-acl")
        .arg(&acl)
        .output()
        .expect("run streetgate device credentials");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets: HashMap<String, String> = std::fs::read_to_string(&csv)
        .expect("the CSV")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f[0], f[1], "{l}");
            (f[0].to_owned(), f[2].to_owned())
        })
        .collect();
    assert_eq!(secrets.len(), 4);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&csv).expect("csv").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the CSV of secrets is private: {mode:o}");
        // Mosquitto started as root reads its files as the mosquitto user.
        for f in [&passwd, &acl] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let passwd_text = std::fs::read_to_string(&passwd).expect("passwd");
    assert_eq!(passwd_text.lines().count(), 6, "{passwd_text}");

    let broker_dir = tempfile::tempdir().expect("temp dir");
    let mosquitto = common::mosquitto::start_mosquitto_with(
        &bin,
        broker_dir.path(),
        Some(&common::mosquitto::MosquittoAuth {
            password_file: &passwd,
            acl_file: &acl,
        }),
    );
    let broker = ("127.0.0.1".to_owned(), mosquitto.port);

    // The gateway signs in with its own user.
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.embedded = Some(false);
    config.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", mosquitto.port));
    config.mqtt.username = Some("streetgate".into());
    config.mqtt.publisher_username = Some("streetgate-pub".into());
    config.mqtt.password = Some("gateway-secret-1".into());
    config.mqtt.reconnect_min_ms = 50;
    config.mqtt.reconnect_max_ms = 1000;
    config.commands.ack_timeout_ms = 1000;
    config.store.path = db;
    let gw = Gateway::start_with(config, dir).await;

    // A wrong secret is refused.
    let (code, _) = connect(options(
        &broker,
        "MH-1",
        Some(("MH-1", "wrong-secret")),
        None,
    ))
    .await;
    assert!(
        matches!(
            code,
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        ),
        "{code:?}\n{}",
        mosquitto.log()
    );

    // The lamp listens on its own command topic.
    let sl = secrets["SL-1"].as_str();
    let (code, conn) = connect(options(&broker, "SL-1", Some(("SL-1", sl)), None)).await;
    assert_eq!(code, ConnectReturnCode::Success, "{}", mosquitto.log());
    let (lamp, mut lamp_events) = conn.expect("connected");
    subscribe_to_commands(&lamp, &mut lamp_events, "SL-1").await;

    // MH-1 publishes as BN-1 and commands the lamp (Mosquitto acknowledges and drops both),
    // then its own reading: only that is stored, and the lamp hears nothing.
    let mh = secrets["MH-1"].as_str();
    let (code, conn) = connect(options(&broker, "MH-1", Some(("MH-1", mh)), None)).await;
    assert_eq!(code, ConnectReturnCode::Success, "{}", mosquitto.log());
    let (client, mut events) = conn.expect("connected");
    for (t, body) in [
        (topic("BN-1", "telemetry"), manhole_telemetry("BN-1", 1)),
        (topic("SL-1", "command"), r#"{"action":"off"}"#.to_owned()),
        (topic("MH-1", "telemetry"), manhole_telemetry("MH-1", 1)),
    ] {
        publish_acked(&client, &mut events, &t, &body).await;
    }
    eventually("MH-1's reading stored", Duration::from_secs(10), || async {
        history_len(&gw, "MH-1").await == 1
    })
    .await;
    assert_eq!(history_len(&gw, "BN-1").await, 0);
    let heard = until(&mut lamp_events, Duration::from_secs(1), |p| {
        matches!(p, Packet::Publish(_)).then_some(())
    })
    .await;
    assert!(heard.is_none(), "the lamp obeyed another device");

    // The gateway may command the lamp.
    let command = command_sl1_off(&gw, &mut lamp_events).await;
    assert_eq!(command.as_deref(), Some(topic("SL-1", "command").as_str()));
}
