//! The gateway against a real Mosquitto configured as `deploy/mosquitto/streetgate.conf`: a
//! burst published while the gateway is stopped waits in its persistent session (more than
//! Mosquitto's default queue of 1000 would keep) and is stored in full once it is back.
//!
//! Needs `STREETGATE_TEST_MOSQUITTO_BIN` (the `mosquitto` binary, `.ci/run` sets it): unset,
//! the test is skipped with a note; set but unusable, it fails.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::mosquitto::start_mosquitto;
use common::{Gateway, Msg, bin_telemetry, eventually, publish, topic};
use streetgate_gateway::config::Config;

/// Messages published while the gateway is down (Mosquitto's default queue keeps 1000).
const BURST: u32 = 6000;

fn gateway_config(dir: &Path, port: u16) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.embedded = Some(false);
    config.mqtt.url = Some(format!("mqtt://127.0.0.1:{port}"));
    config.mqtt.client_id = format!("streetgate-deploy-test-{port}");
    config.mqtt.reconnect_min_ms = 50;
    config.mqtt.reconnect_max_ms = 1000;
    config.store.path = dir.join("data/streetgate.db");
    config.store.history_per_device = 100_000;
    config
}

async fn stored_seqs(gw: &Gateway) -> BTreeSet<u64> {
    let (status, body) = gw.http.get("/api/devices/BN-1/history?limit=10000").await;
    assert_eq!(status, 200, "{body}");
    body["readings"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["seq"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_sent_while_the_gateway_is_down_is_stored_in_full() {
    let Ok(bin) = std::env::var("STREETGATE_TEST_MOSQUITTO_BIN") else {
        eprintln!(
            "note: STREETGATE_TEST_MOSQUITTO_BIN is not set; skipping the deploy/mosquitto test (e.g. STREETGATE_TEST_MOSQUITTO_BIN=/usr/sbin/mosquitto)"
        );
        return;
    };
    let broker_dir = tempfile::tempdir().expect("temp dir");
    let mosquitto = start_mosquitto(&bin, broker_dir.path());
    let broker = ("127.0.0.1".to_owned(), mosquitto.port);

    // First start: the gateway's persistent session and subscriptions are created.
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = Gateway::start_with(gateway_config(dir.path(), mosquitto.port), dir).await;
    gw.import_inventory().await;
    let live: Vec<Msg> = (1..=100)
        .map(|s| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", s, 30.0)))
        .collect();
    publish(&broker, live).await;
    eventually(
        "the live messages stored",
        Duration::from_secs(20),
        || async { stored_seqs(&gw).await.len() == 100 },
    )
    .await;

    // Stopped: the burst waits in the gateway's session on the broker.
    let Gateway { running, dir, .. } = gw;
    running.shutdown().await.expect("shutdown");
    let burst: Vec<Msg> = (101..=100 + BURST)
        .map(|s| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", s, 30.0)))
        .collect();
    publish(&broker, burst).await;

    // Started again with the same client id: everything arrives and is stored.
    let gw = Gateway::start_with(gateway_config(dir.path(), mosquitto.port), dir).await;
    let total = 100 + BURST as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seqs = stored_seqs(&gw).await;
        if seqs.len() == total {
            assert_eq!(seqs.first(), Some(&1));
            assert_eq!(seqs.last(), Some(&(total as u64)));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {total} messages stored; Mosquitto log:\n{}",
            seqs.len(),
            mosquitto.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, d) = gw.http.get("/api/devices/BN-1").await;
    assert_eq!(
        (d["last_seq"].as_u64(), d["seq_gaps"].as_u64()),
        (Some(total as u64), Some(0)),
        "{d}"
    );
    gw.running.shutdown().await.expect("shutdown");
    drop(mosquitto);
}
