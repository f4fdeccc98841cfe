//! Modbus RTU ingest over a virtual serial pair (socat): a slave with two unit ids on one
//! "RS-485 line", polled into readings through the real RTU framing.
//!
//! Needs `socat`. `.ci/run` installs it and sets `STREETGATE_TEST_SOCAT=1`; with the variable
//! set a missing socat fails the test, without it the test is skipped with a note.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod modbus_support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use modbus_support::{Units, device, image};
use streetgate_gateway::ingest::modbus::{self, ModbusAccess, ModbusSettings};
use streetgate_gateway::metrics::Metrics;
use streetgate_gateway::model::{Reading, ReadingBody, Transport};
use streetgate_protocols::{DeviceKind, ManholeTelemetry, TelemetryData, ToiletTelemetry};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Socat(std::process::Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rtu_units_on_a_virtual_serial_line() {
    let required = std::env::var_os("STREETGATE_TEST_SOCAT").is_some();
    if Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            !required,
            "STREETGATE_TEST_SOCAT is set but socat is not installed"
        );
        eprintln!("skipped: socat not installed (set STREETGATE_TEST_SOCAT=1 to require it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (master, slave) = (dir.path().join("gateway"), dir.path().join("line"));
    let _socat = Socat(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", master.display()))
            .arg(format!("pty,raw,echo=0,link={}", slave.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    for _ in 0..100 {
        if master.exists() && slave.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(master.exists() && slave.exists(), "socat made no pty pair");

    let manhole = TelemetryData::Manhole(ManholeTelemetry {
        tilt_deg: 3.25,
        battery_pct: 77,
        ..Default::default()
    });
    let toilet = TelemetryData::Toilet(ToiletTelemetry {
        nh3_mg_m3: 0.42,
        h2s_mg_m3: 0.004,
        ..Default::default()
    });
    let mut units = HashMap::new();
    units.insert(5, image(DeviceKind::Manhole, &manhole));
    units.insert(6, image(DeviceKind::Toilet, &toilet));
    let server =
        tokio_modbus::server::rtu::Server::new_from_path(&slave, 9600).expect("open the line");
    let server_task = tokio::spawn(server.serve_forever(Units(Arc::new(units))));

    let path = master.display().to_string();
    let rtu = |unit| Transport::ModbusRtu {
        path: path.clone(),
        baud: 9600,
        unit,
    };
    let devices = [
        device("MH-5", DeviceKind::Manhole, rtu(5)),
        device("WC-6", DeviceKind::Toilet, rtu(6)),
    ];
    let (tx, mut rx) = mpsc::channel::<Reading>(256);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let settings = ModbusSettings {
        poll_interval: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        offline_after: 3,
        max_backoff: Duration::from_secs(2),
        // The line is in a temporary directory, which the defaults refuse: allow it alone.
        access: Arc::new(ModbusAccess::new(&[], &[format!("{}/*", dir.path().display())]).unwrap()),
        ..ModbusSettings::default()
    };
    let tasks = modbus::spawn(devices.iter(), &tx, &metrics, settings, &cancel);
    drop(tx);
    let mut seen: HashMap<String, TelemetryData> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            assert_eq!(r.transport, "modbus-rtu");
            if let ReadingBody::Telemetry(data) = r.body {
                seen.insert(r.device_id.to_string(), data);
            }
        }
    }
    cancel.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    server_task.abort();
    assert!(
        matches!(seen.get("MH-5"), Some(TelemetryData::Manhole(t)) if (t.tilt_deg - 3.25).abs() < 0.01),
        "{seen:?}"
    );
    assert!(
        matches!(seen.get("WC-6"), Some(TelemetryData::Toilet(t)) if (t.nh3_mg_m3 - 0.42).abs() < 0.001),
        "{seen:?}"
    );
}
