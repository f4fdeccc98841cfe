//! MQTT ingest over rumqttc: QoS 1, persistent session, re-subscribe on every ConnAck, and an own
//! reconnect loop with exponential back-off and jitter (rumqttc reconnects at once when polled
//! again after an error, which would hammer a broker that is down).
//!
//! This is the transport for an external broker (Mosquitto, EMQX); the embedded broker hands
//! uplinks to the decode workers in-process (see [`crate::broker`]).
//!
//! Acknowledgements are manual and follow the commit: a message is PUBACKed to the broker only
//! once the store writer committed its reading (see [`crate::ingest::ack`]). Until then the
//! broker keeps it in its persistent session, so a `kill -9` at any moment loses nothing: the
//! broker delivers again what was not acknowledged and sequence numbers drop the duplicates.
//! The broker's in-flight window for the gateway (Mosquitto's `max_inflight_messages`, EMQX's
//! `max_inflight`) therefore bounds both the messages held here and the throughput: give it
//! room (`deploy/`).

use std::collections::VecDeque;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use streetgate_protocols::Channel;
use streetgate_protocols::topic::PREFIX;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ack::{Ack, AckPacket};
use super::{RawUplink, shard_for};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::mqtt::{Backoff, MqttSettings};

/// Capacity of rumqttc's request channel (acknowledgements, subscriptions, the disconnect).
const REQUEST_CAPACITY: usize = 4096;

/// Messages received and not yet handed to a decode worker beyond which the broker is not read
/// from (its in-flight window normally bounds them first).
const MAX_WAITING: usize = 16_384;

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

/// The acknowledgement `a` as rumqttc takes it (it needs only the packet id and QoS).
fn ack_request(a: AckPacket) -> Publish {
    let qos = if a.qos == 2 {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut p = Publish::new(String::new(), qos, Vec::new());
    p.pkid = a.pkid;
    p
}

/// Received messages waiting for room in their decode worker's queue.
struct Waiting {
    queue: VecDeque<RawUplink>,
    hasher: RandomState,
}

impl Waiting {
    fn shard(&self, workers: usize) -> Option<usize> {
        self.queue
            .front()
            .map(|raw| shard_for(&raw.topic, workers, &self.hasher))
    }

    /// Hand over as many as fit without waiting; `false` when the workers are gone.
    fn hand_over(&mut self, workers: &[mpsc::Sender<RawUplink>]) -> bool {
        while let Some(shard) = self.shard(workers.len()) {
            let Some(worker) = workers.get(shard) else {
                return false;
            };
            let Some(raw) = self.queue.pop_front() else {
                break;
            };
            match worker.try_send(raw) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(raw)) => {
                    self.queue.push_front(raw);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }
}

/// Pass settled acknowledgements to rumqttc without waiting (its request channel is drained by
/// `eventloop.poll`, which this same task drives).
fn flush_acks(client: &AsyncClient, pending: &mut VecDeque<AckPacket>) {
    while let Some(&a) = pending.front() {
        if client.try_ack(&ack_request(a)).is_err() {
            break;
        }
        pending.pop_front();
    }
}

/// Run the MQTT client until `cancel`, feeding the decode workers and acknowledging what the
/// store writer committed. Returns after the pipeline drained and a clean DISCONNECT.
pub async fn run(
    settings: MqttSettings,
    workers: Vec<mpsc::Sender<RawUplink>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let filters = subscription_filters(settings.config.shared_group.as_deref());
    let (client, mut eventloop) = AsyncClient::new(settings.ingest_options(), REQUEST_CAPACITY);
    // PUBACKs and pings are small writes: do not let Nagle's algorithm hold them back.
    eventloop.network_options.set_tcp_nodelay(true);
    let mut backoff = Backoff::new(
        Duration::from_millis(settings.config.reconnect_min_ms),
        Duration::from_millis(settings.config.reconnect_max_ms),
    );
    let broker = format!("{}:{}", settings.host, settings.port);
    tracing::info!(%broker, client_id = %settings.config.client_id, ?filters, "MQTT ingest starting");
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<AckPacket>();
    let mut pending_acks: VecDeque<AckPacket> = VecDeque::new();
    let mut waiting = Waiting {
        queue: VecDeque::new(),
        hasher: RandomState::new(),
    };

    loop {
        if !waiting.hand_over(&workers) {
            break;
        }
        flush_acks(&client, &mut pending_acks);
        let room = waiting.shard(workers.len()).and_then(|s| workers.get(s));
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(a) = ack_rx.recv() => {
                pending_acks.push_back(a);
                while let Ok(a) = ack_rx.try_recv() {
                    pending_acks.push_back(a);
                }
                continue;
            }
            permit = async { room?.reserve().await.ok() }, if room.is_some() => {
                if permit.is_none() {
                    break;
                }
                // Room freed: the top of the loop hands over what fits.
                continue;
            }
            ev = eventloop.poll(), if waiting.queue.len() < MAX_WAITING => ev,
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
                let ack = Ack::new(&ack_tx, p.pkid, p.qos as u8);
                waiting.queue.push_back(RawUplink {
                    topic: p.topic,
                    payload: p.payload,
                    retained: p.retain,
                    received_ms: clock.now_ms(),
                    ack,
                });
            }
            Ok(Event::Incoming(Packet::Disconnect)) => {
                tracing::warn!(%broker, "broker sent DISCONNECT");
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.store(0, Relaxed);
                metrics.mqtt_subscribed.store(0, Relaxed);
                metrics.mqtt_connection_errors.fetch_add(1, Relaxed);
                // Acknowledgements owed on the lost connection are void: the broker delivers
                // those messages again (and sequence numbers drop them as duplicates).
                pending_acks.clear();
                let delay = backoff.next_delay();
                tracing::warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost or refused");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }

    metrics.mqtt_subscribed.store(0, Relaxed);
    // Stop taking messages (those not handed over stay unacknowledged with the broker), let
    // the pipeline drain, and acknowledge what it commits before disconnecting.
    let unhanded = waiting.queue.len();
    drop(waiting);
    drop(workers);
    drop(ack_tx);
    let drained = tokio::time::timeout(crate::app::DRAIN_TIMEOUT, async {
        let mut open = true;
        loop {
            flush_acks(&client, &mut pending_acks);
            if !open && pending_acks.is_empty() {
                break;
            }
            tokio::select! {
                a = ack_rx.recv(), if open => match a {
                    Some(a) => pending_acks.push_back(a),
                    None => open = false,
                },
                ev = eventloop.poll() => {
                    if ev.is_err() {
                        break;
                    }
                }
            }
        }
    })
    .await
    .is_ok();
    // Drive the event loop until the queued acknowledgements and the DISCONNECT are out.
    if client.try_disconnect().is_ok() {
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
    metrics.mqtt_connected.store(0, Relaxed);
    tracing::info!(%broker, unhanded, drained, "MQTT ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::MqttConfig;

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
