//! Decode throughput of the two encodings, single core.
//!
//! `cargo bench -p streetgate-protocols --bench decode` prints messages/s for telemetry of every
//! kind in JSON and binary, the figures recorded in the README.

use std::hint::black_box;
use std::time::{Duration, Instant};

use streetgate_protocols::codec::{self, Encoding, Limits};
use streetgate_protocols::{
    BinTelemetry, Channel, DeviceId, ManholeTelemetry, StreetlightTelemetry, Telemetry,
    TelemetryData, ToiletTelemetry, Topic,
};

fn samples() -> Vec<(&'static str, Telemetry)> {
    let id = |s: &str| DeviceId::new(s).expect("valid id");
    vec![
        (
            "streetlight",
            Telemetry {
                device_id: id("SL-000123"),
                seq: 4_000_000,
                ts_ms: Some(1_763_800_000_000),
                data: TelemetryData::Streetlight(StreetlightTelemetry {
                    lamp_on: true,
                    dim_pct: 80,
                    voltage_v: 229.4,
                    current_a: 0.412,
                    power_w: 91.7,
                    energy_wh: 1_234_567,
                    leakage_ma: 1.2,
                    operating_h: 10_234,
                    switch_count: 4_021,
                }),
            },
        ),
        (
            "manhole",
            Telemetry {
                device_id: id("MH-004411"),
                seq: 99,
                ts_ms: None,
                data: TelemetryData::Manhole(ManholeTelemetry {
                    tilt_deg: 1.5,
                    water_level_cm: Some(42.0),
                    temperature_c: Some(18.5),
                    battery_pct: 87,
                }),
            },
        ),
        (
            "bin",
            Telemetry {
                device_id: id("BN-000777"),
                seq: 12,
                ts_ms: None,
                data: TelemetryData::Bin(BinTelemetry {
                    fill_pct: 63.0,
                    distance_mm: Some(420),
                    temperature_c: 24.0,
                    tilt_deg: Some(2.0),
                    battery_pct: 71,
                }),
            },
        ),
        (
            "toilet",
            Telemetry {
                device_id: id("WC-000042"),
                seq: 5,
                ts_ms: None,
                data: TelemetryData::Toilet(ToiletTelemetry {
                    nh3_mg_m3: 0.42,
                    h2s_mg_m3: 0.004,
                    nh3_avg_mg_m3: Some(0.38),
                    h2s_avg_mg_m3: Some(0.003),
                    temperature_c: Some(21.0),
                    humidity_pct: Some(64.0),
                    battery_pct: None,
                }),
            },
        ),
    ]
}

fn measure(mut f: impl FnMut()) -> f64 {
    // Warm up, then run for about half a second and report operations per second.
    for _ in 0..1_000 {
        f();
    }
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..1_000 {
            f();
        }
        n += 1_000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let limits = Limits::default();
    println!(
        "{:<12} {:<7} {:>6} {:>14} {:>14}",
        "kind", "enc", "bytes", "decode msg/s", "encode msg/s"
    );
    for (kind, msg) in samples() {
        let topic = Topic::new(msg.device_id.clone(), Channel::Telemetry);
        for encoding in [Encoding::Json, Encoding::Binary] {
            let mut buf = [0u8; 512];
            let len = codec::encode(&msg, encoding, &mut buf).expect("fits");
            let payload = buf[..len].to_vec();
            let decode = measure(|| {
                black_box(
                    codec::decode_uplink(&topic, black_box(&payload), &limits).expect("valid"),
                );
            });
            let encode = measure(|| {
                let mut out = [0u8; 512];
                black_box(codec::encode(black_box(&msg), encoding, &mut out).expect("fits"));
            });
            println!(
                "{kind:<12} {:<7} {len:>6} {decode:>14.0} {encode:>14.0}",
                encoding.as_str()
            );
        }
    }
}
