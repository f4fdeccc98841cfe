//! MQTT ingest over rumqttc: QoS 1, persistent session, re-subscribe on every ConnAck, and an own
//! reconnect loop with exponential back-off and jitter (rumqttc reconnects at once when polled
//! again after an error, which would hammer a broker that is down).
//!
//! Acknowledgements are automatic (one write per read batch); on shutdown the messages rumqttc
//! has read but not yet handed over are drained into the pipeline before the DISCONNECT, so a
//! graceful stop loses nothing the broker considers delivered.

use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use streetgate_protocols::Channel;
use streetgate_protocols::topic::PREFIX;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{RawUplink, shard_for};
use crate::clock::Clock;
use crate::config::{MqttConfig, MqttUrl};
use crate::metrics::Metrics;

/// Capacity of rumqttc's request channel (subscriptions and the disconnect).
const REQUEST_CAPACITY: usize = 64;

/// The uplink channels the gateway subscribes to.
pub const UPLINK_CHANNELS: [Channel; 4] = [
    Channel::Telemetry,
    Channel::Event,
    Channel::Status,
    Channel::Ack,
];

/// Subscription filters, optionally in a shared-subscription group.
pub fn subscription_filters(shared_group: Option<&str>) -> Vec<String> {
    UPLINK_CHANNELS
        .iter()
        .map(|ch| match shared_group {
            Some(g) => format!("$share/{g}/{PREFIX}/+/{ch}"),
            None => format!("{PREFIX}/+/{ch}"),
        })
        .collect()
}

/// Exponential back-off with jitter: `min·2ⁿ` capped at `max`, each delay drawn uniformly from
/// its upper half so that many gateways do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        Duration::from_millis(half + rand::random_range(0..=ms - half))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client options from the config.
    pub config: MqttConfig,
}

impl MqttSettings {
    /// Settings for an `mqtt://` URL.
    pub fn from_url(url: &str, config: &MqttConfig) -> Result<Self, String> {
        let parsed = MqttUrl::parse(url)?;
        let mut config = config.clone();
        if config.username.is_none() {
            config.username = parsed.username;
        }
        if config.password.is_none() {
            config.password = parsed.password;
        }
        Ok(Self {
            host: parsed.host,
            port: parsed.port,
            config,
        })
    }

    fn options(&self) -> MqttOptions {
        let c = &self.config;
        let mut o = MqttOptions::new(c.client_id.clone(), self.host.clone(), self.port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(c.keep_alive_s))
            .set_max_packet_size(c.max_packet_bytes, 64 * 1024)
            .set_inflight(c.inflight)
            // Automatic acks: rumqttc acknowledges a whole read batch with one write. Manual acks
            // (one request and one flush per message) cap ingest at a fraction of the rate, and
            // buy nothing on a crash: an acknowledged message in our queues is lost either way.
            // On a graceful shutdown the messages rumqttc has buffered are drained (see `run`).
            .set_manual_acks(false);
        if let Some(user) = &c.username {
            o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
        }
        o
    }
}

/// Hand one PUBLISH to its decode worker, waiting while the worker's queue is full (this is the
/// backpressure: the event loop stops reading, the broker holds the messages). Not abandoned on
/// shutdown: the message is acknowledged already and the workers keep draining until their
/// inputs close. `false` when the workers are gone.
async fn forward(
    p: Publish,
    workers: &[mpsc::Sender<RawUplink>],
    hasher: &RandomState,
    clock: Clock,
) -> bool {
    let shard = shard_for(&p.topic, workers.len(), hasher);
    let Some(worker) = workers.get(shard) else {
        return false;
    };
    let raw = RawUplink {
        topic: p.topic,
        payload: p.payload,
        retained: p.retain,
        received_ms: clock.now_ms(),
    };
    worker.send(raw).await.is_ok()
}

/// Run the MQTT client until `cancel`, feeding the decode workers. Returns after a clean
/// DISCONNECT; dropping the worker inputs then lets the pipeline drain.
pub async fn run(
    settings: MqttSettings,
    workers: Vec<mpsc::Sender<RawUplink>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let filters = subscription_filters(settings.config.shared_group.as_deref());
    let (client, mut eventloop) = AsyncClient::new(settings.options(), REQUEST_CAPACITY);
    // PUBACKs and pings are small writes: do not let Nagle's algorithm hold them back.
    eventloop.network_options.set_tcp_nodelay(true);
    let mut backoff = Backoff::new(
        Duration::from_millis(settings.config.reconnect_min_ms),
        Duration::from_millis(settings.config.reconnect_max_ms),
    );
    let hasher = RandomState::new();
    let broker = format!("{}:{}", settings.host, settings.port);
    tracing::info!(%broker, client_id = %settings.config.client_id, ?filters, "MQTT ingest starting");

    loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                metrics.mqtt_connected.store(1, Relaxed);
                metrics.mqtt_subscribed.store(0, Relaxed);
                metrics.mqtt_connections.fetch_add(1, Relaxed);
                tracing::info!(%broker, session_present = ack.session_present, "MQTT connected; subscribing");
                let subs = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subs) {
                    tracing::error!(error = %e, "cannot queue MQTT subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let mut granted = true;
                for (filter, code) in filters.iter().zip(&ack.return_codes) {
                    if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                        granted = false;
                        tracing::error!(%filter, "broker refused the subscription");
                    }
                }
                if granted {
                    metrics.mqtt_subscribed.store(1, Relaxed);
                    tracing::info!(?filters, "MQTT subscriptions granted");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if !forward(p, &workers, &hasher, clock).await {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Disconnect)) => {
                tracing::warn!(%broker, "broker sent DISCONNECT");
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.store(0, Relaxed);
                metrics.mqtt_subscribed.store(0, Relaxed);
                metrics.mqtt_connection_errors.fetch_add(1, Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost or refused");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }

    metrics.mqtt_connected.store(0, Relaxed);
    metrics.mqtt_subscribed.store(0, Relaxed);
    // Messages rumqttc already read (and acknowledged) but we have not polled yet: hand them on
    // so that a graceful shutdown loses nothing the broker considers delivered.
    let buffered: Vec<Publish> = eventloop
        .state
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p),
            _ => None,
        })
        .collect();
    let drained = buffered.len();
    for p in buffered {
        if !forward(p, &workers, &hasher, clock).await {
            break;
        }
    }
    if client.try_disconnect().is_ok() {
        // Drive the event loop until the DISCONNECT is out (incoming messages are no longer
        // read into the pipeline; unacknowledged ones stay with the broker's session).
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    tracing::info!(%broker, drained, "MQTT ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(
            subscription_filters(None),
            vec![
                "streetgate/v1/+/telemetry",
                "streetgate/v1/+/event",
                "streetgate/v1/+/status",
                "streetgate/v1/+/ack"
            ]
        );
        assert_eq!(
            subscription_filters(Some("g1"))[0],
            "$share/g1/streetgate/v1/+/telemetry"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert!((50..=100).contains(&d[0]), "{d:?}");
        assert!((100..=200).contains(&d[1]), "{d:?}");
        assert!((200..=400).contains(&d[2]), "{d:?}");
        assert!(d[5..].iter().all(|x| (500..=1000).contains(x)), "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }

    #[test]
    fn url_credentials() {
        let s = MqttSettings::from_url("mqtt://u:p@h:1", &MqttConfig::default()).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("h", 1));
        assert_eq!(s.config.username.as_deref(), Some("u"));
    }
}
