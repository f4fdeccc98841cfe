//! One client connection: CONNECT, then packets in and out until DISCONNECT, an error, a
//! keep-alive timeout, a takeover or shutdown. The same over TCP and over TLS: the task takes
//! any byte stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::auth::Refusal;
use super::{Shared, topic};
use crate::ingest::RawUplink;
use crate::ingest::ack::{Ack, AckPacket};

/// A write that does not finish in this time closes the connection (a reader that stopped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which client ids a connection may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Identity {
    /// Any (no client certificate asked for).
    Any,
    /// Only the name in its verified client certificate (`None`: the certificate names no
    /// one, so no client id is allowed).
    Certificate(Option<String>),
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// DISCONNECT: the will is discarded.
    Graceful,
    /// Another connection took the client id over.
    TakenOver,
    /// The broker is stopping.
    Shutdown,
    /// The socket closed or failed, a protocol violation, a keep-alive timeout: the will is
    /// published.
    Abnormal,
}

/// Read one packet, reading more bytes as needed; `None` when the peer closed cleanly.
async fn read_packet<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, String> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(Some(p)),
            Err(rumqttc::Error::InsufficientBytes(n)) => buf.reserve(n),
            Err(e) => return Err(e.to_string()),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut BytesMut) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    match timeout(WRITE_TIMEOUT, wr.write_all(out)).await {
        Ok(Ok(())) => {
            out.clear();
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".to_owned()),
    }
}

fn encode(packet: &Packet, out: &mut BytesMut) {
    // Only packets this module builds are written; a size error cannot happen for them, and
    // an outgoing PUBLISH was already bounded by the incoming packet limit.
    let _ = packet.write(out, usize::MAX);
}

/// Outgoing QoS 1 flow to this client: packet ids, in-flight window, waiting messages.
#[derive(Debug, Default)]
struct Outgoing {
    next_pkid: u16,
    inflight: HashMap<u16, Publish>,
    waiting: VecDeque<Publish>,
}

impl Outgoing {
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Write `p` now if the window allows, else keep it waiting.
    fn send(&mut self, mut p: Publish, max_inflight: u16, out: &mut BytesMut) {
        if p.qos == QoS::AtMostOnce {
            p.pkid = 0;
            encode(&Packet::Publish(p), out);
            return;
        }
        if self.inflight.len() >= usize::from(max_inflight) {
            self.waiting.push_back(p);
            return;
        }
        p.pkid = self.pkid();
        encode(&Packet::Publish(p.clone()), out);
        self.inflight.insert(p.pkid, p);
    }

    fn acked(&mut self, pkid: u16, max_inflight: u16, out: &mut BytesMut) {
        self.inflight.remove(&pkid);
        while self.inflight.len() < usize::from(max_inflight) {
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            self.send(p, max_inflight, out);
        }
    }

    /// Everything not acknowledged, for the session's offline queue.
    fn undelivered(self, rx: &mut mpsc::Receiver<Publish>) -> Vec<Publish> {
        let mut inflight: Vec<(u16, Publish)> = self.inflight.into_iter().collect();
        inflight.sort_by_key(|(pkid, _)| *pkid);
        let mut all: Vec<Publish> = inflight
            .into_iter()
            .map(|(_, mut p)| {
                p.dup = false;
                p
            })
            .collect();
        all.extend(self.waiting);
        while let Ok(p) = rx.try_recv() {
            all.push(p);
        }
        all
    }
}

/// Serve one connection until it ends.
pub(super) async fn serve<S>(shared: &Shared, stream: S, peer: SocketAddr, identity: Identity)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &shared.limits;
    let metrics = &shared.metrics;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);

    let first = timeout(
        limits.connect_timeout,
        read_packet(&mut rd, &mut inbuf, limits.max_packet_bytes),
    )
    .await;
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(c)))) if c.protocol == rumqttc::Protocol::V4 => c,
        // MQTT 5 (or a protocol level the parser refused): "unacceptable protocol version".
        Ok(Ok(Some(Packet::Connect(_)))) => {
            return refuse(&mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
        }
        Ok(Err(e)) if e.to_ascii_lowercase().contains("protocol") => {
            metrics.protocol_errors.fetch_add(1, Relaxed);
            return refuse(&mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
        }
        Ok(Ok(Some(_)) | Err(_)) => {
            metrics.protocol_errors.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "MQTT connection closed: the first packet was not a valid CONNECT");
            return;
        }
        // Closed before CONNECT, or no CONNECT within broker.connection_timeout_ms.
        Ok(Ok(None)) | Err(_) => return,
    };
    let client_id = match (connect.client_id.is_empty(), connect.clean_session) {
        (false, _) => connect.client_id.clone(),
        (true, true) => format!("auto-{peer}"),
        // §3.1.3.1: a persistent session needs a client id.
        (true, false) => return refuse(&mut wr, ConnectReturnCode::BadClientId).await,
    };
    if let Identity::Certificate(name) = &identity {
        if name.as_deref() != Some(client_id.as_str()) {
            metrics.refused_not_authorized.fetch_add(1, Relaxed);
            tracing::warn!(
                client = %client_id,
                certificate = name.as_deref().unwrap_or("(no common name or DNS name)"),
                %peer,
                "MQTT CONNECT refused: the client certificate names another client id"
            );
            return refuse(&mut wr, ConnectReturnCode::NotAuthorized).await;
        }
    }
    let login = connect
        .login
        .as_ref()
        .map(|l| (l.username.as_str(), l.password.as_str()));
    let certified = matches!(identity, Identity::Certificate(_));
    let client = match shared.auth.authenticate(&client_id, login, certified) {
        Ok(client) => client,
        Err(refusal) => {
            let (counter, code) = match refusal {
                Refusal::Reserved => (
                    &metrics.refused_not_authorized,
                    ConnectReturnCode::NotAuthorized,
                ),
                Refusal::BadCredentials | Refusal::UnknownDevice => (
                    &metrics.refused_bad_credentials,
                    ConnectReturnCode::BadUserNamePassword,
                ),
            };
            counter.fetch_add(1, Relaxed);
            if let Some(suppressed) = shared.refusal_log.allow() {
                tracing::warn!(client = %client_id, %peer, suppressed, "MQTT CONNECT refused: {}", refusal.describe());
            }
            return refuse(&mut wr, code).await;
        }
    };
    let mut will: Option<LastWill> = connect.last_will.clone();
    if will
        .as_ref()
        .is_some_and(|w| !topic::valid_topic_name(&w.topic))
    {
        metrics.protocol_errors.fetch_add(1, Relaxed);
        return;
    }
    if let Some(w) = will.as_ref().filter(|w| !client.may_will(&w.topic)) {
        metrics.refused_not_authorized.fetch_add(1, Relaxed);
        if let Some(suppressed) = shared.refusal_log.allow() {
            tracing::warn!(client = %client_id, %peer, topic = %w.topic, suppressed, "MQTT CONNECT refused: a device's will may only be its own status topic");
        }
        return refuse(&mut wr, ConnectReturnCode::NotAuthorized).await;
    }
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));

    let mut attached = shared
        .router
        .attach(&client_id, connect.clean_session, limits);
    encode(
        &Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            attached.session_present,
        )),
        &mut out,
    );
    let mut outgoing = Outgoing::default();
    for p in std::mem::take(&mut attached.queued) {
        outgoing.send(p, limits.max_inflight, &mut out);
    }
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<AckPacket>();
    // QoS 2 packet ids received and not yet released (a redelivery is not handed over twice).
    let mut qos2: HashSet<u16> = HashSet::new();
    let mut deadline = keep_alive.map(|k| Instant::now() + k);

    let end = 'conn: loop {
        if let Err(e) = write_out(&mut wr, &mut out).await {
            tracing::debug!(client = %client_id, error = %e, "MQTT write failed");
            break End::Abnormal;
        }
        let keepalive_sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = attached.kick.cancelled() => break End::TakenOver,
            () = shared.cancel.cancelled() => break End::Shutdown,
            Some(a) = ack_rx.recv() => {
                write_ack(a, &mut out);
                while let Ok(a) = ack_rx.try_recv() {
                    write_ack(a, &mut out);
                }
            }
            Some(p) = attached.rx.recv(), if outgoing.inflight.len() < usize::from(limits.max_inflight) => {
                outgoing.send(p, limits.max_inflight, &mut out);
            }
            read = rd.read_buf(&mut inbuf) => {
                match read {
                    Ok(0) => break End::Abnormal,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(client = %client_id, error = %e, "MQTT read failed");
                        break End::Abnormal;
                    }
                }
                deadline = keep_alive.map(|k| Instant::now() + k);
                loop {
                    let packet = match Packet::read(&mut inbuf, limits.max_packet_bytes) {
                        Ok(p) => p,
                        Err(rumqttc::Error::InsufficientBytes(n)) => {
                            inbuf.reserve(n);
                            break;
                        }
                        Err(e) => {
                            metrics.protocol_errors.fetch_add(1, Relaxed);
                            tracing::warn!(client = %client_id, %peer, error = %e, "MQTT protocol error; closing the connection");
                            break 'conn End::Abnormal;
                        }
                    };
                    match packet {
                        Packet::Publish(p) => {
                            if !topic::valid_topic_name(&p.topic) {
                                metrics.protocol_errors.fetch_add(1, Relaxed);
                                tracing::warn!(client = %client_id, %peer, topic = ?p.topic, "PUBLISH to an invalid topic name (wildcard or NUL); closing the connection");
                                break 'conn End::Abnormal;
                            }
                            if !client.may_publish(&p.topic) {
                                // MQTT 3.1.1 has no negative PUBACK: the message is refused by
                                // closing the connection before acknowledging it.
                                metrics.denied_publish.fetch_add(1, Relaxed);
                                if let Some(suppressed) = shared.refusal_log.allow() {
                                    tracing::warn!(client = %client_id, %peer, topic = %p.topic, suppressed, "PUBLISH refused: a device may publish only on its own uplink topics; closing the connection");
                                }
                                break 'conn End::Abnormal;
                            }
                            let qos = p.qos as u8;
                            if qos == 2 && !qos2.insert(p.pkid) {
                                // Redelivery of a QoS 2 message already handed over.
                                write_ack(AckPacket { pkid: p.pkid, qos }, &mut out);
                                continue;
                            }
                            if !publish(shared, &client_id, p, &ack_tx, qos, &mut out).await {
                                break 'conn End::Shutdown;
                            }
                        }
                        Packet::PubAck(a) => outgoing.acked(a.pkid, limits.max_inflight, &mut out),
                        Packet::PubRel(r) => {
                            qos2.remove(&r.pkid);
                            encode(&Packet::PubComp(PubComp::new(r.pkid)), &mut out);
                        }
                        // Outgoing messages are at most QoS 1: nothing to complete.
                        Packet::PubRec(_) | Packet::PubComp(_) => {}
                        Packet::Subscribe(s) => {
                            let mut codes = Vec::with_capacity(s.filters.len());
                            let mut retained = Vec::new();
                            for f in &s.filters {
                                if !client.may_subscribe(&f.path) {
                                    metrics.denied_subscribe.fetch_add(1, Relaxed);
                                    if let Some(suppressed) = shared.refusal_log.allow() {
                                        tracing::warn!(client = %client_id, %peer, filter = %f.path, suppressed, "SUBSCRIBE refused: a device may subscribe only to its own config and command topics");
                                    }
                                    codes.push(SubscribeReasonCode::Failure);
                                } else if topic::valid_filter(&f.path) {
                                    let granted = if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                                    retained.extend(shared.router.subscribe(&client_id, &f.path, granted));
                                    codes.push(SubscribeReasonCode::Success(granted));
                                } else {
                                    codes.push(SubscribeReasonCode::Failure);
                                }
                            }
                            encode(&Packet::SubAck(SubAck::new(s.pkid, codes)), &mut out);
                            for p in retained {
                                outgoing.send(p, limits.max_inflight, &mut out);
                            }
                        }
                        Packet::Unsubscribe(u) => {
                            for t in &u.topics {
                                shared.router.unsubscribe(&client_id, t);
                            }
                            encode(&Packet::UnsubAck(UnsubAck::new(u.pkid)), &mut out);
                        }
                        Packet::PingReq => encode(&Packet::PingResp, &mut out),
                        Packet::Disconnect => break 'conn End::Graceful,
                        other => {
                            metrics.protocol_errors.fetch_add(1, Relaxed);
                            tracing::warn!(client = %client_id, %peer, packet = ?other, "unexpected MQTT packet from a client; closing the connection");
                            break 'conn End::Abnormal;
                        }
                    }
                }
            }
            () = keepalive_sleep => {
                metrics.keepalive_timeouts.fetch_add(1, Relaxed);
                tracing::debug!(client = %client_id, "no packet within 1.5 × keep-alive; closing");
                break End::Abnormal;
            }
        }
    };
    if end == End::Shutdown {
        // Messages handed to the pipeline are committed while it drains: acknowledge them
        // before closing, so a restart does not make the device send them again. The channel
        // closes once every Ack of this connection was settled or dropped.
        drop(ack_tx);
        let _ = timeout(crate::app::DRAIN_TIMEOUT, async {
            while let Some(a) = ack_rx.recv().await {
                write_ack(a, &mut out);
                if write_out(&mut wr, &mut out).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    let _ = write_out(&mut wr, &mut out).await;
    // FIN (and TLS close_notify): the client sees the end now, not after the clean-up below.
    let _ = timeout(Duration::from_secs(1), wr.shutdown()).await;
    drop(wr);
    if end != End::Abnormal {
        will = None;
    }
    let undelivered = outgoing.undelivered(&mut attached.rx);
    shared
        .router
        .detach(&client_id, attached.conn, undelivered, limits, metrics);
    if let Some(w) = will {
        metrics.wills.fetch_add(1, Relaxed);
        let mut p = Publish::from_bytes(w.topic, w.qos, w.message);
        p.retain = w.retain;
        let mut none = BytesMut::new();
        let (tx, _) = mpsc::unbounded_channel();
        publish(shared, &client_id, p, &tx, 0, &mut none).await;
    }
}

/// Answer CONNECT with a refusal and close.
async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    encode(&Packet::ConnAck(ConnAck::new(code, false)), &mut out);
    let _ = write_out(wr, &mut out).await;
    let _ = timeout(Duration::from_secs(1), wr.shutdown()).await;
}

fn write_ack(a: AckPacket, out: &mut BytesMut) {
    let packet = if a.qos == 2 {
        Packet::PubRec(PubRec::new(a.pkid))
    } else {
        Packet::PubAck(PubAck::new(a.pkid))
    };
    encode(&packet, out);
}

/// Route one PUBLISH: to the gateway's consumer (acknowledged after commit) and to network
/// subscribers (acknowledged now if the consumer does not take it). `false` when the consumer
/// is gone (shutdown): the message stays unacknowledged with its sender.
async fn publish(
    shared: &Shared,
    client_id: &str,
    p: Publish,
    ack_tx: &mpsc::UnboundedSender<AckPacket>,
    qos: u8,
    out: &mut BytesMut,
) -> bool {
    shared.router.route(&p, &shared.limits, &shared.metrics);
    match &shared.consumer {
        Some(consumer) if consumer.wants(client_id, &p.topic) => {
            let raw = RawUplink {
                received_ms: consumer.clock.now_ms(),
                topic: p.topic,
                payload: p.payload,
                retained: false,
                ack: Ack::new(ack_tx, p.pkid, qos),
            };
            consumer.deliver(raw).await
        }
        _ => {
            if qos > 0 {
                write_ack(AckPacket { pkid: p.pkid, qos }, out);
            }
            true
        }
    }
}
