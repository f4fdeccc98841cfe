//! Ingest throughput, measured (ignored by default; run in release):
//!
//! ```sh
//! cargo test --release -p streetgate-gateway --test perf_ingest -- --ignored --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, bin_telemetry, eventually, topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use streetgate_gateway::ingest::{Normaliser, Outcome, RawUplink};
use streetgate_gateway::inventory::{Inventory, parse_csv};
use streetgate_gateway::metrics::Metrics;
use streetgate_protocols::codec::Limits;

const DEVICES: usize = 10_000;

fn inventory_csv() -> String {
    let mut csv = String::from("id,kind,lat,lon,grid\n");
    for i in 0..DEVICES {
        csv.push_str(&format!("BN-{i},bin,31.3,120.6,G{}\n", i % 85));
    }
    csv
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn normaliser_messages_per_second() {
    let inv = Arc::new(Inventory::new(
        parse_csv(inventory_csv().as_bytes()).unwrap(),
    ));
    let mut n = Normaliser::new(
        inv.reader(),
        Limits::default(),
        Arc::new(Metrics::default()),
    );
    let total = 500_000u32;
    let msgs: Vec<RawUplink> = (0..total)
        .map(|i| {
            let id = format!("BN-{}", i as usize % DEVICES);
            RawUplink {
                topic: topic(&id, "telemetry"),
                payload: Bytes::from(bin_telemetry(&id, i / DEVICES as u32 + 1, 42.0)),
                retained: false,
                received_ms: 0,
                ack: Default::default(),
            }
        })
        .collect();
    let start = Instant::now();
    let mut accepted = 0;
    for m in &msgs {
        if let Outcome::Accepted(_) = n.normalise(m) {
            accepted += 1;
        }
    }
    let dt = start.elapsed();
    assert_eq!(accepted, total);
    println!(
        "normaliser: {total} JSON telemetry messages in {dt:?} = {:.0} msg/s on one core ({:.2} µs/msg)",
        f64::from(total) / dt.as_secs_f64(),
        dt.as_secs_f64() * 1e6 / f64::from(total)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn end_to_end_messages_per_second() {
    let gw = Gateway::start(|c| {
        c.store.history_per_device = 0;
        c.broker.max_inflight = 1000;
        c.mqtt.inflight = 1000;
    })
    .await;
    let (status, _) = gw
        .http
        .post_text("/api/devices/import", &inventory_csv())
        .await;
    assert_eq!(status, 200);
    let broker = gw.broker();
    let publishers = 4usize;
    let per_publisher = 50_000usize;
    let total = (publishers * per_publisher) as u64;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            let mut opts = MqttOptions::new(format!("perf-{p}"), broker.0, broker.1);
            opts.set_inflight(1000);
            let (client, mut eventloop) = AsyncClient::new(opts, 1000);
            // Each publisher owns a disjoint set of devices, so every device stays in order.
            let own = DEVICES / publishers;
            let payloads: Vec<(String, Vec<u8>)> = (0..per_publisher)
                .map(|i| {
                    let id = format!("BN-{}", p * own + i % own);
                    let seq = (i / own + 1) as u32;
                    (
                        topic(&id, "telemetry"),
                        bin_telemetry(&id, seq, 42.0).into_bytes(),
                    )
                })
                .collect();
            let sender = tokio::spawn(async move {
                for (t, body) in payloads {
                    client
                        .publish(t, QoS::AtLeastOnce, false, body)
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < per_publisher {
                if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                    acked += 1;
                }
            }
            let client = sender.await.unwrap();
            let _ = client.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = start.elapsed();
    let metrics = Arc::clone(&gw.running.state.metrics);
    let ingested_at_publish_end = metrics.ingested_total("mqtt");
    eventually("every message ingested", Duration::from_secs(120), || {
        let m = Arc::clone(&metrics);
        async move { m.ingested_total("mqtt") >= total }
    })
    .await;
    let ingested = start.elapsed();
    eventually("every reading stored", Duration::from_secs(120), || {
        let m = Arc::clone(&metrics);
        async move { m.store_readings.load(std::sync::atomic::Ordering::Relaxed) >= total }
    })
    .await;
    let stored = start.elapsed();
    println!(
        "end to end over the embedded broker, {publishers} QoS 1 publishers, {DEVICES} devices:\n  \
         published {total} in {published:?} ({:.0} msg/s)\n  \
         ingested (decoded, validated, sequence-checked) after {ingested:?} ({:.0} msg/s)\n  \
         stored (latest per device, batched SQLite) after {stored:?} ({:.0} msg/s)\n  \
         ingest alone, once the publishers were done: {:.0} msg/s",
        total as f64 / published.as_secs_f64(),
        total as f64 / ingested.as_secs_f64(),
        total as f64 / stored.as_secs_f64(),
        (total - ingested_at_publish_end) as f64 / (ingested - published).as_secs_f64(),
    );
    gw.running.shutdown().await.unwrap();
}
