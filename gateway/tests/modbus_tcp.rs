//! Modbus TCP ingest against a real Modbus TCP server (tokio-modbus) on an ephemeral port,
//! with several unit ids behind it as behind an RS-485-to-Ethernet converter: healthy units are
//! polled into readings while a silent unit times out (and goes offline) without stalling them,
//! and a unit whose identification differs from the inventory is reported, never read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod modbus_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use modbus_support::{Units, device, image};

use streetgate_gateway::ingest::modbus::{self, ModbusAccess, ModbusSettings};
use streetgate_gateway::metrics::Metrics;
use streetgate_gateway::model::{Device, Reading, ReadingBody, Transport};
use streetgate_protocols::{BinTelemetry, DeviceKind, ManholeTelemetry, TelemetryData};
use tokio::sync::mpsc;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_util::sync::CancellationToken;

fn tcp(port: u16, unit: u8) -> Transport {
    Transport::ModbusTcp {
        host: "127.0.0.1".into(),
        port,
        unit,
    }
}

#[tokio::test]
async fn units_behind_one_endpoint_are_polled_and_a_dead_one_stalls_nobody() {
    let manhole = TelemetryData::Manhole(ManholeTelemetry {
        tilt_deg: 12.5,
        battery_pct: 80,
        ..Default::default()
    });
    let bin = TelemetryData::Bin(BinTelemetry {
        fill_pct: 85.0,
        temperature_c: 21.0,
        battery_pct: 60,
        ..Default::default()
    });
    let mut units = HashMap::new();
    units.insert(1, image(DeviceKind::Manhole, &manhole));
    units.insert(2, image(DeviceKind::Bin, &bin));
    units.insert(4, image(DeviceKind::Bin, &bin)); // the inventory says manhole
    let service = Units(Arc::new(units));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new(listener);
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    let server_task = tokio::spawn(async move {
        server
            .serve(&on_connected, |e| eprintln!("server: {e}"))
            .await
    });

    let devices = [
        device("MH-1", DeviceKind::Manhole, tcp(port, 1)),
        device("BN-2", DeviceKind::Bin, tcp(port, 2)),
        device("MH-3", DeviceKind::Manhole, tcp(port, 3)),
        device("MH-4", DeviceKind::Manhole, tcp(port, 4)),
    ];
    let (tx, mut rx) = mpsc::channel::<Reading>(1024);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let settings = ModbusSettings {
        poll_interval: Duration::from_millis(100),
        request_timeout: Duration::from_millis(150),
        offline_after: 2,
        max_backoff: Duration::from_secs(1),
        // The simulators are on loopback or a temporary path, which the defaults refuse.
        access: Arc::new(ModbusAccess::allow_all()),
        ..ModbusSettings::default()
    };
    let tasks = modbus::spawn(devices.iter(), &tx, &metrics, settings, &cancel);
    assert_eq!(tasks.len(), 1, "one task (one connection) for the endpoint");
    drop(tx);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    cancel.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let mut readings: Vec<Reading> = Vec::new();
    while let Some(r) = rx.recv().await {
        readings.push(r);
    }
    let of = |id: &str| {
        readings
            .iter()
            .filter(|r| r.device_id.as_str() == id)
            .collect::<Vec<_>>()
    };
    let mh1 = of("MH-1");
    assert!(
        mh1.len() >= 8,
        "MH-1 polled {} times in 2 s despite the silent unit",
        mh1.len()
    );
    assert!(
        matches!(&mh1[0].body, ReadingBody::Telemetry(TelemetryData::Manhole(t)) if (t.tilt_deg - 12.5).abs() < 0.01)
    );
    assert_eq!(mh1[0].transport, "modbus-tcp");
    assert!(mh1.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let bn2 = of("BN-2");
    assert!(bn2.len() >= 8, "BN-2 polled {} times", bn2.len());
    assert!(
        matches!(&bn2[0].body, ReadingBody::Telemetry(TelemetryData::Bin(b)) if (b.fill_pct - 85.0).abs() < 0.1)
    );
    let mh3 = of("MH-3");
    assert!(
        matches!(mh3.as_slice(), [r] if matches!(r.body, ReadingBody::Status { online: false, .. })),
        "{mh3:?}"
    );
    // Never read, and reported offline once: its one case is device_offline (no dark lamp, no
    // missing readings besides).
    let mh4 = of("MH-4");
    assert!(
        matches!(mh4.as_slice(), [r] if matches!(r.body, ReadingBody::Status { online: false, .. })),
        "a mismatched unit is never read: {mh4:?}"
    );
    let rejected: HashMap<&str, u64> = metrics.rejections().into_iter().collect();
    assert!(rejected["modbus_identification"] >= 1);
    assert!(
        !rejected.contains_key("modbus_error"),
        "transport failures are not rejections"
    );
    assert!(metrics.modbus_errors_total() >= 2);
    assert!(metrics.ingested_total("modbus-tcp") >= 16);
    server_task.abort();
}

/// A unit that never answers must not delay the live unit on the same endpoint: its retries
/// come due on the live unit's schedule (here every 2 × the poll interval), and each would cost
/// a whole `request_timeout` if tried before the live poll. The live unit's poll intervals stay
/// at the poll interval (the integrators measured 2 of 8 at interval + timeout).
#[tokio::test]
async fn a_dead_unit_is_retried_in_the_slack_between_live_polls() {
    let manhole = TelemetryData::Manhole(ManholeTelemetry {
        tilt_deg: 1.0,
        battery_pct: 80,
        ..Default::default()
    });
    let mut units = HashMap::new();
    units.insert(1, image(DeviceKind::Manhole, &manhole));
    let service = Units(Arc::new(units));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new(listener);
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    let server_task = tokio::spawn(async move {
        server
            .serve(&on_connected, |e| eprintln!("server: {e}"))
            .await
    });
    // The dead unit first in the list: on every shared due time it would go first.
    let devices = [
        device("MH-9", DeviceKind::Manhole, tcp(port, 9)),
        device("MH-1", DeviceKind::Manhole, tcp(port, 1)),
    ];
    let (tx, mut rx) = mpsc::channel::<Reading>(1024);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let interval = Duration::from_millis(500);
    let timeout = Duration::from_millis(350);
    let settings = ModbusSettings {
        poll_interval: interval,
        request_timeout: timeout,
        offline_after: 2,
        // Back-off capped at two intervals: the dead unit's retries fall on live poll times.
        max_backoff: interval * 2,
        // The simulators are on loopback or a temporary path, which the defaults refuse.
        access: Arc::new(ModbusAccess::allow_all()),
        ..ModbusSettings::default()
    };
    let tasks = modbus::spawn(devices.iter(), &tx, &metrics, settings, &cancel);
    drop(tx);
    let mut live = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(6000);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if r.device_id.as_str() == "MH-1" {
            live.push(tokio::time::Instant::now());
        }
    }
    cancel.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    server_task.abort();
    let gaps: Vec<Duration> = live.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 8, "MH-1 polled {} times", live.len());
    let late: Vec<&Duration> = gaps
        .iter()
        .filter(|g| **g > interval + timeout / 2)
        .collect();
    assert!(
        late.is_empty(),
        "live poll intervals delayed by the dead unit: {late:?} of {gaps:?}"
    );
    assert!(
        metrics.modbus_errors_total() >= 3,
        "the dead unit is still retried"
    );
}

/// A device already in the inventory whose endpoint `modbus.allowed_endpoints` does not allow
/// (loopback, by default) is not polled: no connection is made, and it is counted.
#[tokio::test]
async fn an_endpoint_not_allowed_is_never_connected_to() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inventory = Arc::new(streetgate_gateway::inventory::Inventory::new([
        Device::clone(&device("MH-1", DeviceKind::Manhole, tcp(port, 1))),
        Device::clone(&device("MH-2", DeviceKind::Manhole, tcp(port, 2))),
    ]));
    let (tx, _rx) = mpsc::channel::<Reading>(16);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let settings = ModbusSettings {
        poll_interval: Duration::from_millis(100),
        request_timeout: Duration::from_millis(150),
        ..ModbusSettings::default()
    };
    let (_supervisor, task) = modbus::Supervisor::start(
        inventory,
        tx,
        Arc::clone(&metrics),
        settings,
        cancel.clone(),
    );
    let accepted = tokio::time::timeout(Duration::from_millis(1500), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the poller connected to a loopback endpoint"
    );
    assert_eq!(
        metrics
            .modbus_not_allowed
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        metrics
            .render(&Default::default())
            .contains("streetgate_modbus_not_allowed_devices 2")
    );
    cancel.cancel();
    task.await.unwrap();

    // Allowed explicitly, the same endpoint is polled.
    let inventory = Arc::new(streetgate_gateway::inventory::Inventory::new([
        Device::clone(&device("MH-1", DeviceKind::Manhole, tcp(port, 1))),
    ]));
    let (tx, _rx) = mpsc::channel::<Reading>(16);
    let cancel = CancellationToken::new();
    let access = ModbusAccess::new(&[format!("127.0.0.1:{port}")], &[]).unwrap();
    let (_supervisor, task) = modbus::Supervisor::start(
        inventory,
        tx,
        Arc::new(Metrics::default()),
        ModbusSettings {
            access: Arc::new(access),
            ..ModbusSettings::default()
        },
        cancel.clone(),
    );
    let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
    assert!(accepted.is_ok(), "an allowed endpoint is connected to");
    cancel.cancel();
    task.await.unwrap();
}
