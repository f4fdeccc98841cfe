//! The embedded broker as other MQTT clients see it: protocol violations close the connection,
//! last wills and retained messages reach subscribers, persistent sessions survive a restart.

mod common;

use std::time::Duration;

use common::{Gateway, eventually};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw MQTT 3.1.1 CONNECT (clean session, keep-alive 30 s) for `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut p = vec![0x10, u8::try_from(12 + id.len()).expect("short id")];
    p.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0]);
    p.push(u8::try_from(id.len()).expect("short id"));
    p.extend_from_slice(id.as_bytes());
    p
}

/// A raw QoS 0 PUBLISH of `payload` to `topic` (no validation: that is the point).
fn publish_packet(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = 2 + topic.len() + payload.len();
    let mut p = vec![0x30, u8::try_from(len).expect("short packet")];
    p.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_be_bytes());
    p.extend_from_slice(topic);
    p.extend_from_slice(payload);
    p
}

/// MQTT 3.1.1 §3.3.2.1 and §1.5.3: a topic name with a wildcard or NUL is a protocol violation
/// and the server closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_wildcard_or_nul_topic_closes_the_connection() {
    let gw = Gateway::start(|_| {}).await;
    let (host, port) = gw.broker();
    for (i, topic) in [
        &b"streetgate/v1/+/telemetry"[..],
        b"streetgate/v1/#",
        b"streetgate/v1/A\0B/telemetry",
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = TcpStream::connect((host.as_str(), port))
            .await
            .expect("connect");
        s.write_all(&connect_packet(&format!("bad-{i}")))
            .await
            .expect("CONNECT");
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
        s.write_all(&publish_packet(topic, b"{}"))
            .await
            .expect("PUBLISH");
        let mut rest = Vec::new();
        // Ends with EOF or a reset: either way closed, within the timeout.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the broker closes the connection");
        assert!(rest.is_empty(), "nothing answered to {topic:?}: {rest:?}");
    }
    assert_eq!(
        gw.metric("streetgate_broker_refused_total{reason=\"protocol_error\"}")
            .await,
        3.0
    );
    gw.running.shutdown().await.expect("shutdown");
}

/// A client speaking MQTT 5 (or anything but 3.1.1) is told "unacceptable protocol version";
/// one with an empty client id asking for a persistent session, "identifier rejected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_the_broker_cannot_serve_are_refused_with_the_right_code() {
    let gw = Gateway::start(|_| {}).await;
    let (host, port) = gw.broker();
    let mut v5 = connect_packet("five");
    v5[8] = 5; // protocol level
    v5.insert(12, 0); // an empty CONNECT property list
    v5[1] += 1;
    let mut persistent_anonymous = connect_packet("");
    persistent_anonymous[9] = 0x00; // clean session off
    for (packet, code) in [(v5, 0x01), (persistent_anonymous, 0x02)] {
        let mut s = TcpStream::connect((host.as_str(), port))
            .await
            .expect("connect");
        s.write_all(&packet).await.expect("CONNECT");
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, code]);
    }
    gw.running.shutdown().await.expect("shutdown");
}

async fn next_publish(eventloop: &mut rumqttc::EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await.expect("poll") {
                return p;
            }
        }
    })
    .await
    .expect("a message within 5 s")
}

/// A retained message reaches a later subscriber; a client that vanishes without DISCONNECT
/// has its last will published; a persistent session gets what was published while it was
/// offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_wills_and_offline_queues_reach_subscribers() {
    let gw = Gateway::start(|_| {}).await;
    let (host, port) = gw.broker();

    // A persistent subscriber, subscribed once, then offline.
    let mut opts = MqttOptions::new("watcher", host.clone(), port);
    opts.set_clean_session(false);
    let (watcher, mut events) = AsyncClient::new(opts.clone(), 10);
    watcher
        .subscribe("test/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("poll") {
            break;
        }
    }
    watcher.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    drop(events);

    // A client with a will, publishing a retained message, then dropped without DISCONNECT.
    let mut opts_w = MqttOptions::new("mortal", host.clone(), port);
    opts_w.set_last_will(LastWill::new("test/will", "gone", QoS::AtLeastOnce, false));
    let (mortal, mut mortal_events) = AsyncClient::new(opts_w, 10);
    mortal
        .publish("test/retained", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = mortal_events.poll().await.expect("poll") {
            break;
        }
    }
    drop(mortal_events);
    drop(mortal);
    eventually("the will published", Duration::from_secs(5), || async {
        gw.metric("streetgate_broker_wills_total").await >= 1.0
    })
    .await;

    // The watcher comes back: its session is present and holds both messages.
    let (_watcher, mut events) = AsyncClient::new(opts, 10);
    let mut topics = vec![
        next_publish(&mut events).await.topic,
        next_publish(&mut events).await.topic,
    ];
    topics.sort();
    assert_eq!(topics, ["test/retained", "test/will"]);

    // A new subscriber gets the retained message, flagged as retained.
    let (late, mut late_events) = AsyncClient::new(MqttOptions::new("late", host, port), 10);
    late.subscribe("test/retained", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let p = next_publish(&mut late_events).await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"kept");
    gw.running.shutdown().await.expect("shutdown");
}
