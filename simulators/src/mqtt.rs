//! The MQTT link of a simulated node: its own client id, a retained last will on its status
//! topic, QoS 1, re-subscription to its downlink topics on every ConnAck and reconnection with
//! back-off. The firmware's store-and-forward outbox holds messages while the link is down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use streetgate_firmware::platform::{LinkDown, Transport};
use streetgate_protocols::{Channel, DeviceId, Topic};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Downlink messages waiting for the firmware.
type Inbox = Arc<Mutex<VecDeque<(Channel, Vec<u8>)>>>;

/// Counters shared by all links of a fleet.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Messages handed to the client.
    pub published: AtomicU64,
    /// Sends refused because the link was down (kept in the device outbox).
    pub refused: AtomicU64,
    /// Connections established (first and reconnections).
    pub connects: AtomicU64,
}

/// One device's MQTT connection.
#[derive(Debug)]
pub struct MqttLink {
    client: AsyncClient,
    id: DeviceId,
    up: Arc<AtomicBool>,
    inbox: Inbox,
    stats: Arc<LinkStats>,
    task: JoinHandle<()>,
    aborted: AtomicBool,
    connected: Arc<AtomicBool>,
}

impl MqttLink {
    /// Connect `id` to the broker at `host:port`, registering `last_will` (the firmware's
    /// retained `online: false` status) and running the client on `runtime`.
    pub fn connect(
        runtime: &Handle,
        host: &str,
        port: u16,
        id: &DeviceId,
        password: Option<&str>,
        last_will: Vec<u8>,
        stats: Arc<LinkStats>,
    ) -> Self {
        let status = Topic::new(id.clone(), Channel::Status).format();
        let mut options = MqttOptions::new(id.as_str(), host, port);
        if let Some(password) = password {
            options.set_credentials(id.as_str(), password);
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(false);
        options.set_last_will(LastWill::new(
            status.as_str(),
            last_will,
            QoS::AtLeastOnce,
            true,
        ));
        options.set_max_packet_size(16 * 1024, 16 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let up = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let inbox: Inbox = Arc::default();
        let task = {
            let (client, up, connected, inbox, stats, id) = (
                client.clone(),
                up.clone(),
                connected.clone(),
                inbox.clone(),
                stats.clone(),
                id.clone(),
            );
            runtime.spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = Duration::from_millis(100);
                            stats.connects.fetch_add(1, Ordering::Relaxed);
                            for channel in [Channel::Config, Channel::Command] {
                                let topic = Topic::new(id.clone(), channel).format();
                                let _ = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                            }
                            up.store(true, Ordering::Release);
                            connected.store(true, Ordering::Release);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if let Ok(topic) = Topic::parse(&p.topic) {
                                if !topic.channel.is_uplink() {
                                    let mut q =
                                        inbox.lock().unwrap_or_else(PoisonError::into_inner);
                                    if q.len() < 64 {
                                        q.push_back((topic.channel, p.payload.to_vec()));
                                    }
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            up.store(false, Ordering::Release);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            })
        };
        Self {
            client,
            id: id.clone(),
            up,
            inbox,
            stats,
            task,
            aborted: AtomicBool::new(false),
            connected,
        }
    }

    /// Connect a firmware node: its id as client id, its own last will.
    pub fn connect_node(
        runtime: &Handle,
        host: &str,
        port: u16,
        node: &streetgate_firmware::app::Node,
        password: Option<&str>,
        stats: Arc<LinkStats>,
    ) -> Self {
        let mut will = [0u8; streetgate_protocols::codec::MAX_ENCODED_LEN];
        let len = node.last_will(&mut will).unwrap_or(0);
        Self::connect(
            runtime,
            host,
            port,
            node.id(),
            password,
            will[..len].to_vec(),
            stats,
        )
    }

    /// Was the connection killed with [`abort`](Self::abort)?
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Whether the broker connection is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Stop the client: a clean disconnect (the last will is not published).
    pub fn disconnect(&self) {
        let _ = self.client.try_disconnect();
    }

    /// Kill the connection without a clean disconnect: the broker publishes the last will.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.task.abort();
        self.up.store(false, Ordering::Release);
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Transport for MqttLink {
    fn send(&mut self, channel: Channel, payload: &[u8]) -> Result<(), LinkDown> {
        if !self.is_up() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(LinkDown);
        }
        let topic = Topic::new(self.id.clone(), channel).format();
        self.client
            .try_publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                channel.is_retained(),
                payload.to_vec(),
            )
            .map_err(|_| {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                LinkDown
            })?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn take_connected(&mut self) -> bool {
        self.connected.swap(false, Ordering::AcqRel)
    }

    fn poll_downlink(&mut self, buf: &mut [u8]) -> Option<(Channel, usize)> {
        let mut q = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((channel, payload)) = q.pop_front() {
            if let Some(dst) = buf.get_mut(..payload.len()) {
                dst.copy_from_slice(&payload);
                return Some((channel, payload.len()));
            }
            // Larger than any valid downlink: dropped, the firmware never sees it.
        }
        None
    }
}
