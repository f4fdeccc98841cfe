//! The Prometheus and Grafana files under `dashboards/`, checked for real:
//! - `promtool check rules` and `promtool test rules` on the alert rules
//!   (`STREETGATE_TEST_PROMTOOL_BIN`, default `/usr/bin/promtool`);
//! - a Prometheus (`STREETGATE_TEST_PROMETHEUS_BIN`, default `/usr/bin/prometheus`) scraping a
//!   live gateway that ingests, rejects, raises a case and refuses a bad Modbus request, then
//!   every PromQL query of every panel of the gateway dashboard, each returning data.
//!
//! Without the binaries the tests say so and do nothing; a binary named by its variable that
//! does not run fails them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::free_port;
use common::{Gateway, Msg, bin_telemetry, eventually, publish, token_in, topic};
use serde_json::Value;
use streetgate_gateway::auth::Role;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// The binary from `var`, else `default` when it exists; `None` (with a note) when neither.
fn binary(var: &str, default: &str, test: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(b) => {
            let p = PathBuf::from(&b);
            assert!(p.exists(), "{var}={b} does not exist");
            Some(p)
        }
        Err(_) => {
            let p = PathBuf::from(default);
            if p.exists() {
                Some(p)
            } else {
                eprintln!(
                    "{test}: skipped: no {default} (install Debian's prometheus or set {var})"
                );
                None
            }
        }
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = binary(
        "STREETGATE_TEST_PROMTOOL_BIN",
        "/usr/bin/promtool",
        "alert_rules_pass_promtool",
    ) else {
        return;
    };
    let dir = dashboards().join("prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Query `expr` now: the result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", expr)],
        )
        .expect("query URL");
        let body: Value = reqwest::get(url)
            .await
            .expect("query Prometheus")
            .json()
            .await
            .expect("query answer");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Every PromQL expression of every panel of a Grafana dashboard, with the dashboard's
/// variables set as Grafana would for this test.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "10s")
                    .replace("$__interval", "10s")
                    .replace("$job", "streetgate")
                    .replace("$instance", ".*");
                out.push((p["title"].as_str().unwrap_or("?").to_owned(), expr));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_panel_query_returns_data() {
    let Some(bin) = binary(
        "STREETGATE_TEST_PROMETHEUS_BIN",
        "/usr/bin/prometheus",
        "every_gateway_panel_query_returns_data",
    ) else {
        return;
    };
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    // Prometheus signs in as a viewer with a token, as deployed.
    let token = token_in(
        gw.running.state.store.as_ref(),
        "prometheus",
        Role::Viewer,
        None,
        None,
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: streetgate\n    authorization:\n      type: Bearer\n      credentials: {token}\n    \
         static_configs:\n      - targets: [\"{target}\"]\n",
        rules = dashboards().join("prometheus/alerts.yml").display(),
        target = gw.running.http_addr,
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let child = Command::new(&bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let prom = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    eventually(
        "Prometheus scrapes the gateway",
        Duration::from_secs(30),
        || async {
            reqwest::get(format!("{}/-/ready", prom.url))
                .await
                .is_ok_and(|r| r.status().is_success())
                && prom.query("up{job=\"streetgate\"} == 1").await.len() == 1
        },
    )
    .await;

    // Traffic for the panels: readings, a rejection, an unregistered device, an open cover
    // (a case, and its alert delivered on the MQTT sink), over a few scrapes.
    let broker = gw.broker();
    for round in 0..6u32 {
        let mut msgs: Vec<Msg> = (1..=20)
            .map(|s| {
                Msg::new(
                    topic("BN-1", "telemetry"),
                    bin_telemetry("BN-1", round * 20 + s, 30.0),
                )
            })
            .collect();
        msgs.push(Msg::new(topic("BN-1", "telemetry"), "not json"));
        msgs.push(Msg::new(
            topic("ZZ-9", "telemetry"),
            bin_telemetry("ZZ-9", round + 1, 1.0),
        ));
        if round == 0 {
            msgs.push(Msg::new(
                topic("MH-1", "event"),
                r#"{"device_id":"MH-1","seq":1,"alarm":"cover_open","state":"raised","value":75.0}"#,
            ));
        }
        publish(&broker, msgs).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dashboards().join("grafana/dashboards/streetgate-gateway.json"))
            .expect("dashboard file"),
    )
    .expect("dashboard JSON");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (panel, expr) in &queries {
        if prom.query(expr).await.is_empty() {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    // The rules load and evaluate against the live gateway (nothing should fire here).
    let rules: Value = reqwest::get(format!("{}/api/v1/rules", prom.url))
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules JSON");
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 7, "{rules}");
    gw.running.shutdown().await.expect("shutdown");
}
