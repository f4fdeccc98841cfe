//! A gateway on embedded defaults (ephemeral ports, temporary store) with an inventory, and
//! simulated nodes connected to its broker.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::Value;
use streetgate_firmware::platform::Now;
use streetgate_gateway::app::{self, Running};
use streetgate_gateway::auth::{self, Role};
use streetgate_gateway::config::Config;
use streetgate_simulators::mqtt::{LinkStats, MqttLink};
use streetgate_simulators::node::SimNode;

/// A running gateway and an HTTP client for it.
pub struct Gateway {
    pub running: Running,
    pub base: String,
    pub client: reqwest::Client,
    pub stats: Arc<LinkStats>,
    /// Each MQTT device's secret, from the inventory import.
    pub credentials: std::collections::HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Start on ephemeral ports and import `inventory` (CSV).
    pub async fn start(inventory: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.broker.listen = "127.0.0.1:0".parse().unwrap();
        config.store.path = dir.path().join("streetgate.db");
        // Judge road segments at once (no start-up grace for lamps to report).
        config.rules.lighting.startup_grace_s = 0;
        let running = app::start(config).await.unwrap();
        let base = format!("http://{}", running.http_addr);
        // The administrator, through an API token.
        let token = token_in(&running, auth::FIRST_ADMIN, Role::Admin, None).await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let r = client
            .post(format!("{base}/api/devices/import"))
            .body(inventory.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "inventory import");
        // The import issued every MQTT device its secret, shown in this answer only.
        let imported: Value = r.json().await.unwrap();
        let credentials = imported["credentials"]
            .as_array()
            .expect("credentials issued")
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["password"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        Self {
            running,
            base,
            client,
            credentials,
            stats: Arc::default(),
            _dir: dir,
        }
    }

    /// Connect a simulated node to the embedded broker.
    pub fn connect(&self, node: SimNode) -> (SimNode, MqttLink) {
        let broker = self.running.broker_addr.unwrap();
        let link = MqttLink::connect_node(
            &tokio::runtime::Handle::current(),
            &broker.ip().to_string(),
            broker.port(),
            node.node(),
            self.credentials
                .get(node.node().id().as_str())
                .map(String::as_str),
            self.stats.clone(),
        );
        (node, link)
    }

    /// GET a path: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON as the holder of `token`: status and JSON body.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// An API token of `user` (created with `role` and `team` if missing).
    pub async fn token(&self, user: &str, role: Role, team: Option<&str>) -> String {
        token_in(&self.running, user, role, team).await
    }

    /// POST JSON: status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn token_in(running: &Running, user: &str, role: Role, team: Option<&str>) -> String {
    let store = running.state.store.as_ref();
    let now = streetgate_gateway::clock::wall_ms();
    if store.user_by_name(user).await.unwrap().is_none() {
        auth::add_user(store, user, role, team.map(str::to_owned), None, None, now)
            .await
            .unwrap();
    }
    auth::issue_token(store, user, "tests", None, None, None, None, "tests", now)
        .await
        .unwrap()
        .1
}

/// A simulated clock over a set of nodes: each step advances it by `step_s` and ticks every
/// node, then yields `pause_ms` of wall time to the broker and the gateway.
pub struct Clock {
    pub unix0_ms: u64,
    pub t_s: u64,
    pub step_s: u64,
    pub pause_ms: u64,
}

impl Clock {
    pub async fn run(&mut self, nodes: &mut [(SimNode, MqttLink)], steps: u64) {
        for _ in 0..steps {
            self.t_s += self.step_s;
            let now = Now {
                mono_ms: self.t_s * 1000,
                unix_ms: Some(self.unix0_ms + self.t_s * 1000),
            };
            for (node, link) in nodes.iter_mut() {
                node.tick(now, link);
            }
            tokio::time::sleep(std::time::Duration::from_millis(self.pause_ms)).await;
        }
    }
}
