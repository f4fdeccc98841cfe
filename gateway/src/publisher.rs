//! The gateway's own MQTT publisher: case alerts and device downlink (commands).
//!
//! A connection of its own (client id `{mqtt.client_id}-pub`), separate from ingest so that a
//! slow ingest never delays an alert or a command and vice versa. Every publish is QoS 1 and
//! [`Publisher::publish`] returns only when the broker's PUBACK arrived, so callers can record a
//! delivery truthfully. While the broker is unreachable, publishes fail at once (nothing is
//! queued behind the caller's back to go out late) and the connection is retried with back-off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::{Mutex, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mqtt::{Backoff, MqttSettings};

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not connected to the broker.
    #[error("not connected to the MQTT broker")]
    Disconnected,
    /// The broker did not acknowledge in time.
    #[error("the MQTT broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// The publisher has stopped.
    #[error("the MQTT publisher has stopped")]
    Stopped,
    /// The message can never be published as it is (an invalid topic name, too large): no
    /// retry will help.
    #[error("cannot be published: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Sent(u16),
    Acked(u16),
    Lost,
}

/// Publishes with broker acknowledgement.
#[derive(Debug)]
pub struct Publisher {
    client: AsyncClient,
    wire: broadcast::Sender<Wire>,
    connected: Arc<AtomicBool>,
    /// One publish in flight at a time, so the next PUBLISH on the wire is the caller's.
    turn: Mutex<()>,
    /// Largest payload the broker takes from us.
    max_payload: usize,
}

/// The publisher's MQTT client id: `{mqtt.client_id}-pub`.
pub use crate::mqtt::publisher_client_id as client_id;

impl Publisher {
    /// Connect (in the background) and return the publisher and its event-loop task, which
    /// stops on `cancel`. `max_payload`: the largest payload the broker accepts; a larger one
    /// fails at once ([`PublishError::Invalid`]) instead of costing the connection.
    pub fn start(
        settings: &MqttSettings,
        max_payload: usize,
        cancel: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let c = &settings.config;
        let client_id = client_id(c);
        let o = settings.publisher_options();
        let (client, mut eventloop) = AsyncClient::new(o, 16);
        eventloop.network_options.set_tcp_nodelay(true);
        let (wire, _) = broadcast::channel(64);
        let connected = Arc::new(AtomicBool::new(false));
        let publisher = Arc::new(Self {
            client: client.clone(),
            wire: wire.clone(),
            connected: Arc::clone(&connected),
            turn: Mutex::new(()),
            max_payload: max_payload.min(c.max_packet_bytes.saturating_sub(1024)),
        });
        let mut backoff = Backoff::new(
            Duration::from_millis(c.reconnect_min_ms),
            Duration::from_millis(c.reconnect_max_ms),
        );
        let broker = format!("{}:{}", settings.host, settings.port);
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    ev = eventloop.poll() => ev,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        connected.store(true, Ordering::Release);
                        tracing::debug!(%broker, %client_id, "MQTT publisher connected");
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let _ = wire.send(Wire::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let _ = wire.send(Wire::Acked(ack.pkid));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected.store(false, Ordering::Release);
                        let _ = wire.send(Wire::Lost);
                        let delay = backoff.next_delay();
                        tracing::warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT publisher connection lost or refused");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = cancel.cancelled() => break,
                        }
                    }
                }
            }
            connected.store(false, Ordering::Release);
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
        });
        (publisher, task)
    }

    /// Connected to the broker now?
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Wait until connected, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Publish at QoS 1 and wait for the broker's PUBACK, at most `timeout`.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        if !crate::broker::topic::valid_topic_name(topic) || topic.split('/').any(str::is_empty) {
            return Err(PublishError::Invalid(format!(
                "topic {topic:?} is not a valid MQTT topic name (wildcard, NUL or empty level)"
            )));
        }
        if payload.len() > self.max_payload {
            return Err(PublishError::Invalid(format!(
                "payload of {} bytes is larger than the {} bytes allowed (mqtt.max_payload_bytes)",
                payload.len(),
                self.max_payload
            )));
        }
        let _turn = self.turn.lock().await;
        if !self.is_connected() {
            return Err(PublishError::Disconnected);
        }
        let mut wire = self.wire.subscribe();
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|_| PublishError::Stopped)?;
        let wait = async {
            let mut pkid = None;
            loop {
                match wire.recv().await {
                    Ok(Wire::Sent(p)) if pkid.is_none() => pkid = Some(p),
                    Ok(Wire::Acked(p)) if pkid == Some(p) => return Ok(()),
                    Ok(Wire::Lost) => return Err(PublishError::Disconnected),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(PublishError::Stopped),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(PublishError::Timeout(timeout)))
    }
}
