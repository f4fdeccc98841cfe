use streetgate_protocols::codec::{self, Encoding, Limits};
use streetgate_protocols::*;

#[test]
fn smoke() {
    let t = Telemetry {
        device_id: DeviceId::new("SL-1").unwrap(),
        seq: 7,
        ts_ms: None,
        data: TelemetryData::Streetlight(StreetlightTelemetry {
            lamp_on: true,
            dim_pct: 80,
            voltage_v: 229.5,
            current_a: 0.41,
            power_w: 92.0,
            energy_wh: 1234,
            ..Default::default()
        }),
    };
    let mut buf = [0u8; 512];
    let n = codec::encode_json(&t, &mut buf).unwrap();
    println!("{}", core::str::from_utf8(&buf[..n]).unwrap());
    let topic = Topic::parse("streetgate/v1/SL-1/telemetry").unwrap();
    let back = codec::decode_uplink(&topic, &buf[..n], &Limits::default()).unwrap();
    assert_eq!(back, Uplink::Telemetry(t.clone()));
    let n = codec::encode(&t, Encoding::Binary, &mut buf).unwrap();
    println!("binary {n} bytes");
    let back = codec::decode_uplink(&topic, &buf[..n], &Limits::default()).unwrap();
    assert_eq!(back, Uplink::Telemetry(t));
    for bad in [
        r#"{"device_id":"SL-1","seq":1,"data":{"streetlight":{"lamp_on":true,"dim_pct":300,"voltage_v":1,"current_a":1,"power_w":1,"energy_wh":1}}}"#,
        r#"{"device_id":"SL-1","seq":1,"data":{"streetlight":{"lamp_on":true,"dim_pct":30,"voltage_v":1000,"current_a":1,"power_w":1,"energy_wh":1}}}"#,
        r#"{"device_id":"SL-2","seq":1,"data":{"streetlight":{"lamp_on":true,"dim_pct":30,"voltage_v":100,"current_a":1,"power_w":1,"energy_wh":1}}}"#,
        r#"{"device_id":"SL-1","seq":1,"data":{"lamp":{}}}"#,
        r#"{"device_id":"SL-1","seq":"x"}"#,
    ] {
        println!(
            "{}",
            codec::decode_uplink(&topic, bad.as_bytes(), &Limits::default()).unwrap_err()
        );
    }
    let c = Command {
        cmd_id: 3,
        action: Action::LampOn {
            dim_pct: Some(50),
            expires_s: None,
        },
    };
    let n = codec::encode_json(&c, &mut buf).unwrap();
    println!("{}", core::str::from_utf8(&buf[..n]).unwrap());
    let c = Command {
        cmd_id: 3,
        action: Action::Reboot,
    };
    let n = codec::encode_json(&c, &mut buf).unwrap();
    println!("{}", core::str::from_utf8(&buf[..n]).unwrap());
}
