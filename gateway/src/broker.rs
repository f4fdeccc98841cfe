//! The embedded MQTT broker: rumqttd in its own OS threads, configured programmatically.
//!
//! rumqttd binds its listeners itself and cannot be handed a socket, so a requested port 0 is
//! resolved by binding an ephemeral port, reading it and releasing it before rumqttd binds it.
//! Another process could take the port in between (a tiny race); start-up then fails with a
//! clear error rather than silently talking to someone else's broker.
//!
//! rumqttd has no shutdown: its threads end with the process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

/// The embedded broker failed to start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not bindable.
    #[error(
        "{key} = {addr}: cannot listen there ({error}); another MQTT broker (Mosquitto?) may already use it: choose another address, or use that broker with mqtt.url = \"mqtt://{addr}\""
    )]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// The broker thread could not be spawned or stopped at start.
    #[error("embedded broker did not start: {0}")]
    Start(String),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The MQTT 3.1.1 listener address.
    pub v4: SocketAddr,
    /// The MQTT 5 listener address, if configured.
    pub v5: Option<SocketAddr>,
}

/// Bind `addr` once to check it is free and to resolve port 0.
fn resolve(key: &'static str, addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener =
        TcpListener::bind(addr).map_err(|error| BrokerError::Bind { key, addr, error })?;
    listener
        .local_addr()
        .map_err(|error| BrokerError::Bind { key, addr, error })
}

fn server(name: &str, listen: SocketAddr, cfg: &BrokerConfig) -> ServerSettings {
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: cfg.connection_timeout_ms,
            max_payload_size: cfg.max_payload_bytes,
            max_inflight_count: cfg.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The rumqttd configuration for `cfg` with resolved addresses.
pub fn rumqttd_config(
    cfg: &BrokerConfig,
    v4: SocketAddr,
    v5: Option<SocketAddr>,
) -> rumqttd::Config {
    rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            // Packets forwarded to one connection per router pass: large enough that a single
            // busy subscriber (the gateway) is not paced by the router.
            max_outgoing_packet_count: 1000,
            // Per-filter commit log: at most 10 × 4 MiB in memory per subscription filter.
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server("v4-1", v4, cfg))])),
        v5: v5.map(|addr| HashMap::from([("1".to_owned(), server("v5-1", addr, cfg))])),
        ..rumqttd::Config::default()
    }
}

/// Whether an MQTT broker answers a CONNECT on `addr` with a successful CONNACK. A bare TCP
/// probe would make rumqttd log an error for the connection that never sent CONNECT.
async fn mqtt_probe(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CLIENT_ID: &[u8] = b"streetgate-probe";
    let mut connect = vec![0x10, 12 + CLIENT_ID.len() as u8];
    // Protocol "MQTT" level 4, clean session, keep-alive 10 s, client id.
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0]);
    connect.push(CLIENT_ID.len() as u8);
    connect.extend_from_slice(CLIENT_ID);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(&connect).await.ok()?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.ok()?;
        let _ = stream.write_all(&[0xE0, 0x00]).await;
        (connack == [0x20, 0x02, 0x00, 0x00]).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Some(()))
    )
}

/// Start the broker and wait until its listener accepts connections.
pub async fn start(cfg: &BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
    let v4 = resolve("broker.listen", cfg.listen)?;
    let v5 = cfg
        .listen_v5
        .map(|a| resolve("broker.listen_v5", a))
        .transpose()?;
    let config = rumqttd_config(cfg, v4, v5);
    let thread = std::thread::Builder::new()
        .name("rumqttd".to_owned())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;

    // Wait for the listener(s). rumqttd logs a failed bind and ends its server thread, which
    // ends `start` and our thread: report that instead of waiting forever.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for addr in std::iter::once(v4).chain(v5) {
        loop {
            if thread.is_finished() {
                return Err(BrokerError::Start(format!(
                    "rumqttd could not listen on {addr} (see the log above)"
                )));
            }
            if mqtt_probe(addr).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::Start(format!(
                    "rumqttd did not accept connections on {addr} within 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A bind failure on a second listener would surface here.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if thread.is_finished() {
        return Err(BrokerError::Start(
            "rumqttd stopped right after starting (see the log above)".to_owned(),
        ));
    }
    Ok(EmbeddedBroker { v4, v5 })
}
