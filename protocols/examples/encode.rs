//! Print a message in both encodings: `cargo run -p streetgate-protocols --example encode`.

use streetgate_protocols::codec::{self, Encoding};
use streetgate_protocols::{DeviceId, ManholeTelemetry, Telemetry, TelemetryData};

fn main() {
    let Ok(device_id) = DeviceId::new("MH-0042") else {
        return;
    };
    let msg = Telemetry {
        device_id,
        seq: 17,
        ts_ms: None,
        data: TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: 23.5,
            water_level_cm: None,
            temperature_c: Some(18.0),
            battery_pct: 87,
        }),
    };
    let mut buf = [0u8; 512];
    for encoding in [Encoding::Json, Encoding::Binary] {
        let Ok(n) = codec::encode(&msg, encoding, &mut buf) else {
            return;
        };
        let hex: Vec<String> = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
        println!("{} ({n} bytes): {}", encoding.as_str(), hex.join(" "));
        if encoding == Encoding::Json {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
        }
    }
}
