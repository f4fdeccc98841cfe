//! Nothing acknowledged is lost: a burst far beyond any queue, a `kill -9` of the gateway under
//! steady load (embedded broker, and an external Mosquitto), and devices reconnecting the moment
//! the restarted gateway listens. Every message a device got a PUBACK for must be in the store.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use common::process::{Process, free_port, healthy};
use common::{Gateway, Http, bin_telemetry, eventually, topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

/// An inventory of `n` bins named `{prefix}-{i}`.
fn bins(prefix: &str, n: usize) -> String {
    let mut csv = String::from("id,kind,lat,lon,grid,bin_depth_mm\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{prefix}-{i},bin,31.3,120.6,320508001001001,1200\n"
        ));
    }
    csv
}

/// A device publishing `count` QoS 1 telemetry messages (seq 1..=count) at `per_second`,
/// through whatever happens to the broker: rumqttc keeps what was not acknowledged and sends
/// it again after reconnecting, which it retries every 20 ms.
struct Device {
    acked: Arc<AtomicUsize>,
    publisher: JoinHandle<()>,
    events: JoinHandle<()>,
}

impl Device {
    fn start(broker: (String, u16), id: String, count: u32, per_second: u32) -> Self {
        let mut opts = MqttOptions::new(format!("dev-{id}"), broker.0, broker.1);
        opts.set_keep_alive(Duration::from_secs(10))
            .set_clean_session(false);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&acked);
        let events = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        let publisher = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
            for seq in 1..=count {
                every.tick().await;
                let payload = bin_telemetry(&id, seq, (seq % 80) as f32);
                if client
                    .publish(topic(&id, "telemetry"), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Self {
            acked,
            publisher,
            events,
        }
    }

    async fn all_acked(&self, count: usize, timeout: Duration) {
        eventually("every publish acknowledged", timeout, || async {
            self.acked.load(Relaxed) >= count
        })
        .await;
    }

    fn stop(self) {
        self.publisher.abort();
        self.events.abort();
    }
}

/// The sequence numbers of `id`'s readings in the store, through the API.
async fn stored_seqs(http: &Http, id: &str) -> BTreeSet<u64> {
    let (status, body) = http
        .get(&format!("/api/devices/{id}/history?limit=10000"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect()
}

fn missing(seqs: &BTreeSet<u64>, count: u32) -> Vec<u64> {
    (1..=u64::from(count))
        .filter(|s| !seqs.contains(s))
        .collect()
}

/// 4 publishers at full speed, far more than every queue on the way: all of it is stored,
/// because the broker slows the publishers down instead of dropping what the gateway has not
/// taken yet. `STREETGATE_TEST_BURST` sets the size (`.ci/run` runs 400,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_the_embedded_broker_is_stored_whole() {
    let total: usize = std::env::var("STREETGATE_TEST_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    const DEVICES: usize = 10_000;
    const PUBLISHERS: usize = 4;
    let gw = Gateway::start(|c| {
        // Small queues, so the burst is far larger than all of them together.
        c.pipeline.channel_capacity = 256;
        c.store.history_per_device = 1000;
    })
    .await;
    let (status, body) = gw
        .http
        .post_text("/api/devices/import", &bins("BB", DEVICES))
        .await;
    assert_eq!(status, 200, "{body}");

    let broker = gw.broker();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            let mut opts = MqttOptions::new(format!("burst-{p}"), broker.0, broker.1);
            opts.set_keep_alive(Duration::from_secs(60));
            let (client, mut eventloop) = AsyncClient::new(opts, 1000);
            let mine = total / PUBLISHERS;
            let sender = tokio::spawn(async move {
                for i in 0..mine {
                    let n = i * PUBLISHERS + p;
                    let id = format!("BB-{}", n % DEVICES);
                    let seq = u32::try_from(n / DEVICES + 1).expect("seq");
                    client
                        .publish(
                            topic(&id, "telemetry"),
                            QoS::AtLeastOnce,
                            false,
                            bin_telemetry(&id, seq, 40.0),
                        )
                        .await
                        .expect("queue publish");
                }
                client
            });
            let mut acked = 0;
            while acked < mine {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("publisher {p}: {e}"),
                }
            }
            drop(sender.await);
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .expect("burst acknowledged within 10 min")
            .expect("publisher");
    }
    let elapsed = started.elapsed();
    assert_eq!(acked, total);
    // Acknowledged means committed: no waiting here.
    let stored = gw.running.state.metrics.store_readings.load(Relaxed);
    assert_eq!(
        stored, total as u64,
        "readings committed when the last PUBACK arrived"
    );
    let mut rows = 0;
    for i in (0..DEVICES).step_by(997) {
        let seqs = stored_seqs(&gw.http, &format!("BB-{i}")).await;
        rows += seqs.len();
        let expect = u32::try_from(total / DEVICES).expect("count");
        assert!(
            missing(&seqs, expect).is_empty(),
            "BB-{i}: {:?}",
            missing(&seqs, expect)
        );
    }
    assert!(rows > 0);
    assert_eq!(gw.metric("streetgate_seq_gaps_total").await, 0.0);
    println!(
        "burst: {total} messages from {PUBLISHERS} publishers stored whole in {:.1} s ({:.0} msg/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    gw.running.shutdown().await.expect("shutdown");
}

/// Four devices send steady QoS 1 telemetry; the gateway (embedded broker) is killed with
/// SIGKILL mid-stream and restarted on the same store and ports at once, so the devices
/// reconnect the moment it listens again. Every acknowledged message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_the_embedded_broker_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("inventory.csv"), bins("KE", 4)).expect("inventory");
    let (http_port, broker_port) = (free_port(), free_port());
    let http = Http::new(format!("127.0.0.1:{http_port}").parse().expect("addr"))
        .with_token(&common::process::admin_token(dir.path()).await);
    let env = [("STREETGATE_STORE_HISTORY_PER_DEVICE", "10000".to_owned())];
    let gw = Process::start(dir.path(), http_port, broker_port, &env);
    healthy(http_port).await;

    const COUNT: u32 = 600;
    let devices: Vec<Device> = (0..4)
        .map(|i| {
            Device::start(
                ("127.0.0.1".to_owned(), broker_port),
                format!("KE-{i}"),
                COUNT,
                200,
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.kill9();
    let gw = Process::start(dir.path(), http_port, broker_port, &env);
    healthy(http_port).await;
    for d in &devices {
        d.all_acked(COUNT as usize, Duration::from_secs(60)).await;
    }
    for i in 0..4 {
        let seqs = stored_seqs(&http, &format!("KE-{i}")).await;
        assert_eq!(
            missing(&seqs, COUNT),
            Vec::<u64>::new(),
            "KE-{i} lost messages"
        );
    }
    for d in devices {
        d.stop();
    }
    drop(gw);
}

/// The same against an external broker (Mosquitto, `STREETGATE_TEST_MQTT_URL`): the gateway
/// acknowledges to the broker only after the commit, so the broker delivers again whatever the
/// killed gateway had not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_with_mosquitto_loses_nothing() {
    let Ok(url) = std::env::var("STREETGATE_TEST_MQTT_URL") else {
        eprintln!(
            "skipped: set STREETGATE_TEST_MQTT_URL=mqtt://host:port to run against Mosquitto"
        );
        return;
    };
    let hostport = url
        .trim_start_matches("mqtt://")
        .trim_start_matches("tcp://")
        .to_owned();
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let broker = (host.to_owned(), port.parse::<u16>().expect("port"));
    // Ids of this run only: other tests share the broker.
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let prefix = format!("KM{run}");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("inventory.csv"), bins(&prefix, 4)).expect("inventory");
    let (http_port, broker_port) = (free_port(), free_port());
    let http = Http::new(format!("127.0.0.1:{http_port}").parse().expect("addr"))
        .with_token(&common::process::admin_token(dir.path()).await);
    let client_id = format!("streetgate-k9-{run}");
    let env = [
        ("STREETGATE_MQTT_URL", url.clone()),
        ("STREETGATE_MQTT_CLIENT_ID", client_id.clone()),
        ("STREETGATE_STORE_HISTORY_PER_DEVICE", "10000".to_owned()),
    ];
    let gw = Process::start(dir.path(), http_port, broker_port, &env);
    healthy(http_port).await;

    // 200 msg/s in all: Mosquitto's default queue (1000 messages per session, as CI runs it)
    // holds 5 s of the gateway's absence, ample for a restart on a busy machine.
    const COUNT: u32 = 300;
    let devices: Vec<Device> = (0..4)
        .map(|i| Device::start(broker.clone(), format!("{prefix}-{i}"), COUNT, 50))
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gw.kill9();
    // Down for a moment while the devices keep sending: the broker queues for the session.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = Process::start(dir.path(), http_port, broker_port, &env);
    healthy(http_port).await;
    for d in &devices {
        d.all_acked(COUNT as usize, Duration::from_secs(60)).await;
    }
    // The broker acknowledged the devices; the gateway commits what it delivers shortly after.
    for i in 0..4 {
        let id = format!("{prefix}-{i}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let lost = missing(&stored_seqs(&http, &id).await, COUNT);
            if lost.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} lost messages: {lost:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for d in devices {
        d.stop();
    }
    drop(gw);
    common::clear_session(&broker, &client_id).await;
}
