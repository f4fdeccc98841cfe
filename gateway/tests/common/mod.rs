//! Shared helpers for the socket-level suites: a whole gateway on ephemeral ports in a temp dir,
//! a small HTTP client and an MQTT publisher.
#![allow(dead_code, unreachable_pub)]

pub mod mosquitto;
pub mod process;

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use streetgate_gateway::app::{self, Running};
use streetgate_gateway::auth::{self, Role};
use streetgate_gateway::broker::AuthMode;
use streetgate_gateway::config::Config;
use tempfile::TempDir;

/// An inventory with one device of each kind, all on MQTT.
pub const INVENTORY: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
SL-1,streetlight,3205080118000001,31.30,120.60,320508001001001,S-1,main,,,mqtt,
MH-1,manhole,3205080101000001,31.31,120.61,320508001001001,,,,,mqtt,tilt_alarm_deg=12
BN-1,bin,3205080305000001,31.32,120.62,320508001001002,,,,1200,mqtt,
WC-1,toilet,3205080301000001,31.33,120.63,320508001001002,,,2,,mqtt,
";

/// A gateway running in this process. `http` acts as the administrator (an API token).
pub struct Gateway {
    pub running: Running,
    pub http: Http,
    pub dir: TempDir,
}

/// A token for `user`, created with the user if missing (random password), straight in the
/// store, as `streetgate user add` / `user token` would.
pub async fn token_in(
    store: &dyn streetgate_gateway::store::Store,
    user: &str,
    role: Role,
    team: Option<&str>,
    grid: Option<&str>,
) -> String {
    let now = streetgate_gateway::clock::wall_ms();
    if store.user_by_name(user).await.expect("store").is_none() {
        auth::add_user(
            store,
            user,
            role,
            team.map(str::to_owned),
            grid.map(str::to_owned),
            None,
            now,
        )
        .await
        .expect("user added");
    }
    let (_, token) = auth::issue_token(store, user, "tests", None, None, None, None, "tests", now)
        .await
        .expect("token issued");
    token
}

impl Gateway {
    /// Embedded defaults on ephemeral ports, store in a temp dir; `tweak` adjusts the config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().expect("addr");
        config.broker.listen = "127.0.0.1:0".parse().expect("addr");
        // The tests' MQTT clients publish for several devices each (`publish`): device
        // authentication has its own tests (device_auth.rs), which keep the default.
        config.broker.auth = AuthMode::Open;
        config.store.path = dir.path().join("data/streetgate.db");
        config.mqtt.reconnect_min_ms = 50;
        config.mqtt.reconnect_max_ms = 1000;
        tweak(&mut config);
        Self::start_with(config, dir).await
    }

    /// Start with a complete config (its store path should live in `dir`).
    pub async fn start_with(config: Config, dir: TempDir) -> Self {
        init_tracing();
        let running = app::start(config).await.expect("gateway starts");
        let token = token_in(
            running.state.store.as_ref(),
            auth::FIRST_ADMIN,
            Role::Admin,
            None,
            None,
        )
        .await;
        let http = Http::new(running.http_addr).with_token(&token);
        let gw = Self { running, http, dir };
        gw.wait_subscribed().await;
        gw
    }

    /// An HTTP client acting as `user` (created with `role` and scope if missing).
    pub async fn http_as(
        &self,
        user: &str,
        role: Role,
        team: Option<&str>,
        grid: Option<&str>,
    ) -> Http {
        let token = token_in(self.running.state.store.as_ref(), user, role, team, grid).await;
        Http::new(self.running.http_addr).with_token(&token)
    }

    /// An HTTP client without credentials.
    pub fn anonymous(&self) -> Http {
        Http::new(self.running.http_addr)
    }

    /// Wait until the MQTT ingest holds its subscriptions.
    pub async fn wait_subscribed(&self) {
        eventually("MQTT subscriptions", Duration::from_secs(15), || async {
            let (_, h) = self.http.get("/api/health").await;
            h["mqtt"]["subscribed"].as_bool() == Some(true)
        })
        .await;
    }

    /// The embedded broker as (host, port).
    pub fn broker(&self) -> (String, u16) {
        let a = self.running.broker_addr.expect("embedded broker");
        (a.ip().to_string(), a.port())
    }

    /// Import the standard inventory.
    pub async fn import_inventory(&self) {
        let (status, body) = self.http.post_text("/api/devices/import", INVENTORY).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["imported"], 4);
    }

    /// A Prometheus sample value (`name{labels}` exactly as rendered).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.http.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Logs for failing tests: `RUST_LOG=debug cargo test ... -- --nocapture`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Poll `check` until it holds or `timeout` passes (then panic naming `what`).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny JSON-over-HTTP client (anonymous, or with a bearer token on every request).
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    /// The same server, sending `Authorization: Bearer {token}`.
    pub fn with_token(self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        Self {
            base: self.base,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    /// The underlying client (with its credentials) and the base URL.
    pub fn client(&self) -> (&reqwest::Client, &str) {
        (&self.client, &self.base)
    }

    async fn json(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        Self::json(r).await
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        Self::json(r).await
    }

    pub async fn post_text(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "text/csv")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        Self::json(r).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .expect("DELETE");
        Self::json(r).await
    }
}

/// One message to publish.
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
        }
    }
}

/// Publish messages with QoS 1 and wait until the broker acknowledged every one.
pub async fn publish(broker: &(String, u16), msgs: Vec<Msg>) {
    let id = format!("test-pub-{}", rand::random::<u32>());
    let mut opts = MqttOptions::new(id, broker.0.clone(), broker.1);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, msgs.len() + 10);
    let expected = msgs.len();
    for m in msgs {
        client
            .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < expected {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!(
                    "publisher connection to {}:{} failed: {e}",
                    broker.0, broker.1
                ),
            }
        }
    })
    .await
    .expect("broker acknowledged every publish");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// Connect once with `clean_session = true` to drop a persistent session from the broker.
pub async fn clear_session(broker: &(String, u16), client_id: &str) {
    let mut opts = MqttOptions::new(client_id, broker.0.clone(), broker.1);
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = client.disconnect().await;
        let _ = eventloop.poll().await;
    })
    .await;
}

/// A valid bin telemetry payload.
pub fn bin_telemetry(id: &str, seq: u32, fill: f32) -> String {
    format!(
        r#"{{"device_id":"{id}","seq":{seq},"data":{{"bin":{{"fill_pct":{fill},"temperature_c":21.5,"battery_pct":88}}}}}}"#
    )
}

/// A topic.
pub fn topic(id: &str, channel: &str) -> String {
    format!("streetgate/v1/{id}/{channel}")
}
