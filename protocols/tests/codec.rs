//! Round trips through both encodings for every message, never-panic on arbitrary input for
//! every decoder, and one table row per validation rule.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use proptest::prelude::*;
use streetgate_protocols::codec::{self, DecodeError, Encoding, Limits};
use streetgate_protocols::message::ShortText;
use streetgate_protocols::*;

fn id() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9._-]{1,32}".prop_map(|s| DeviceId::new(&s).unwrap())
}

/// f32 values that print and parse back exactly, within a range.
fn num(lo: f32, hi: f32) -> impl Strategy<Value = f32> {
    (lo..=hi)
        .prop_map(|v| (v * 1000.0).round() / 1000.0)
        .prop_filter("in range", move |v| (lo..=hi).contains(v))
}

fn data() -> impl Strategy<Value = TelemetryData> {
    prop_oneof![
        (
            any::<bool>(),
            0u8..=100,
            num(0.0, 500.0),
            num(0.0, 50.0),
            num(0.0, 10_000.0),
            any::<u32>(),
            num(0.0, 10_000.0),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(
                    lamp_on,
                    dim_pct,
                    voltage_v,
                    current_a,
                    power_w,
                    energy_wh,
                    leakage_ma,
                    operating_h,
                    switch_count,
                )| {
                    TelemetryData::Streetlight(StreetlightTelemetry {
                        lamp_on,
                        dim_pct,
                        voltage_v,
                        current_a,
                        power_w,
                        energy_wh,
                        leakage_ma,
                        operating_h,
                        switch_count,
                    })
                }
            ),
        (
            num(0.0, 180.0),
            proptest::option::of(num(0.0, 1000.0)),
            proptest::option::of(num(-50.0, 300.0)),
            0u8..=100
        )
            .prop_map(|(tilt_deg, water_level_cm, temperature_c, battery_pct)| {
                TelemetryData::Manhole(ManholeTelemetry {
                    tilt_deg,
                    water_level_cm,
                    temperature_c,
                    battery_pct,
                })
            }),
        (
            num(0.0, 150.0),
            proptest::option::of(any::<u16>()),
            num(-50.0, 300.0),
            proptest::option::of(num(0.0, 180.0)),
            0u8..=100
        )
            .prop_map(
                |(fill_pct, distance_mm, temperature_c, tilt_deg, battery_pct)| {
                    TelemetryData::Bin(BinTelemetry {
                        fill_pct,
                        distance_mm,
                        temperature_c,
                        tilt_deg,
                        battery_pct,
                    })
                }
            ),
        (
            num(0.0, 1000.0),
            num(0.0, 1000.0),
            proptest::option::of(num(0.0, 1000.0)),
            proptest::option::of(num(0.0, 1000.0)),
            proptest::option::of(num(-50.0, 300.0)),
            proptest::option::of(num(0.0, 100.0)),
            proptest::option::of(0u8..=100)
        )
            .prop_map(
                |(
                    nh3_mg_m3,
                    h2s_mg_m3,
                    nh3_avg_mg_m3,
                    h2s_avg_mg_m3,
                    temperature_c,
                    humidity_pct,
                    battery_pct,
                )| {
                    TelemetryData::Toilet(ToiletTelemetry {
                        nh3_mg_m3,
                        h2s_mg_m3,
                        nh3_avg_mg_m3,
                        h2s_avg_mg_m3,
                        temperature_c,
                        humidity_pct,
                        battery_pct,
                    })
                }
            ),
    ]
}

fn text() -> impl Strategy<Value = ShortText> {
    "[ -~]{0,64}".prop_map(|s| ShortText::try_from(s.as_str()).unwrap())
}

fn uplink() -> impl Strategy<Value = Uplink> {
    prop_oneof![
        (
            id(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            data()
        )
            .prop_map(
                |(device_id, seq, ts_ms, data)| Uplink::Telemetry(Telemetry {
                    device_id,
                    seq,
                    ts_ms,
                    data
                })
            ),
        (
            id(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            0usize..17,
            any::<bool>(),
            proptest::option::of(num(-1000.0, 1000.0))
        )
            .prop_map(
                |(device_id, seq, ts_ms, a, raised, value)| Uplink::Event(Event {
                    device_id,
                    seq,
                    ts_ms,
                    alarm: AlarmKind::ALL[a],
                    state: if raised {
                        AlarmState::Raised
                    } else {
                        AlarmState::Cleared
                    },
                    value,
                })
            ),
        (
            id(),
            any::<u32>(),
            0usize..4,
            any::<bool>(),
            proptest::option::of(text()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(-150i16..=0),
            proptest::option::of(0u8..=100)
        )
            .prop_map(
                |(device_id, seq, k, online, fw_version, uptime_s, rssi_dbm, battery_pct)| {
                    Uplink::Status(Status {
                        device_id,
                        seq,
                        ts_ms: None,
                        kind: DeviceKind::ALL[k],
                        online,
                        fw_version,
                        uptime_s,
                        rssi_dbm,
                        battery_pct,
                        dropped: uptime_s,
                    })
                }
            ),
        (
            id(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            proptest::option::of(text())
        )
            .prop_map(|(device_id, seq, ref_id, ok, reason)| Uplink::Ack(Ack {
                device_id,
                seq,
                ts_ms: None,
                ref_id,
                ok,
                reason
            })),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let exp = || proptest::option::of(1u32..=604_800);
    prop_oneof![
        (proptest::option::of(0u8..=100), exp())
            .prop_map(|(dim_pct, expires_s)| Action::LampOn { dim_pct, expires_s }),
        exp().prop_map(|expires_s| Action::LampOff { expires_s }),
        (0u8..=100, exp()).prop_map(|(pct, expires_s)| Action::Dim { pct, expires_s }),
        Just(Action::ResumeSchedule),
        Just(Action::RequestReport),
        Just(Action::Reboot),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<u32>(),
        proptest::option::of(1u32..=3600),
        proptest::option::of(1.0f32..30.0),
        proptest::option::of(100u16..=5000),
        proptest::option::of(0.05f32..3.0),
        proptest::option::of((
            -89.0f64..89.0,
            -179.0f64..179.0,
            -120i16..=120,
            -120i16..=120,
        )),
    )
        .prop_map(|(config_id, report, tilt, depth, nh3, sched)| Config {
            config_id,
            report_interval_s: report,
            heartbeat_interval_s: report.map(|r| (r * 4).max(10)),
            tilt_alarm_deg: tilt.map(|t| (t * 10.0).round() / 10.0),
            tilt_open_deg: tilt.map(|_| 60.0),
            bin_depth_mm: depth,
            nh3_limit_mg_m3: nh3.map(|v| (v * 100.0).round() / 100.0),
            schedule: sched.map(
                |(lat_deg, lon_deg, on_offset_min, off_offset_min)| LampSchedule {
                    lat_deg: (lat_deg * 1e4).round() / 1e4,
                    lon_deg: (lon_deg * 1e4).round() / 1e4,
                    on_offset_min,
                    off_offset_min,
                    night_dim_pct: Some(50),
                    dim_from_min: Some(0),
                    dim_to_min: Some(300),
                    utc_offset_min: 480,
                },
            ),
            ..Config::default()
        })
}

const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Binary];

proptest! {
    #[test]
    fn uplinks_round_trip(msg in uplink()) {
        let topic = Topic::new(msg.device_id().clone(), codec::uplink_channel(&msg));
        for encoding in ENCODINGS {
            let mut buf = [0u8; 1024];
            let n = codec::encode_uplink(&msg, encoding, &mut buf).unwrap();
            prop_assert!(n <= codec::MAX_ENCODED_LEN);
            prop_assert_eq!(codec::decode_uplink(&topic, &buf[..n], &Limits::default()).unwrap(), msg.clone());
        }
    }

    #[test]
    fn downlinks_round_trip(c in config(), cmd_id in any::<u32>(), a in action()) {
        for encoding in ENCODINGS {
            let mut buf = [0u8; 1024];
            let n = codec::encode(&c, encoding, &mut buf).unwrap();
            prop_assert_eq!(codec::decode_downlink(Channel::Config, &buf[..n], &Limits::default()).unwrap(), Downlink::Config(c.clone()));
            let cmd = Command { cmd_id, action: a };
            let n = codec::encode(&cmd, encoding, &mut buf).unwrap();
            prop_assert_eq!(codec::decode_downlink(Channel::Command, &buf[..n], &Limits::default()).unwrap(), Downlink::Command(cmd));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), ch in 0usize..6) {
        let topic = Topic::new(DeviceId::new("D-1").unwrap(), Channel::ALL[ch]);
        let _ = codec::decode_uplink(&topic, &bytes, &Limits::default());
        let _ = codec::decode_downlink(Channel::ALL[ch], &bytes, &Limits::default());
        let text = String::from_utf8_lossy(&bytes);
        let _ = Topic::parse(&text);
        let _ = DeviceId::new(&text);
        let _ = ComponentCode::new(&text);
    }

    #[test]
    fn mutated_valid_payloads_never_panic(msg in uplink(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let topic = Topic::new(msg.device_id().clone(), codec::uplink_channel(&msg));
        for encoding in ENCODINGS {
            let mut buf = [0u8; 1024];
            let n = codec::encode_uplink(&msg, encoding, &mut buf).unwrap();
            let mut bytes = buf[..n].to_vec();
            for (i, b) in &flips {
                let i = i % bytes.len();
                bytes[i] ^= b;
            }
            if let Ok(decoded) = codec::decode_uplink(&topic, &bytes, &Limits::default()) {
                // Whatever decodes is valid and addressed to the topic's device.
                prop_assert_eq!(decoded.validate(), Ok(()));
                prop_assert_eq!(decoded.device_id(), &topic.device_id);
            }
        }
    }
}

fn decode(topic: &str, payload: &[u8]) -> Result<Uplink, DecodeError> {
    codec::decode_uplink(&Topic::parse(topic).unwrap(), payload, &Limits::default())
}

fn field_of(e: &DecodeError) -> String {
    match e {
        DecodeError::Malformed { field, .. } => field.to_string(),
        DecodeError::Invalid(v) => v.field.to_string(),
        other => other.reason().to_string(),
    }
}

const SL: &str = "streetgate/v1/SL-1/telemetry";

fn sl(body: &str) -> String {
    format!(r#"{{"device_id":"SL-1","seq":1,"data":{{"streetlight":{{{body}}}}}}}"#)
}

#[test]
fn every_validation_rule_names_its_field() {
    let base =
        r#""lamp_on":true,"dim_pct":50,"voltage_v":230,"current_a":0.4,"power_w":90,"energy_wh":5"#;
    assert!(decode(SL, sl(base).as_bytes()).is_ok());
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown kind",
            r#"{"device_id":"SL-1","seq":1,"data":{"lamp":{}}}"#.into(),
            "data",
            "malformed",
        ),
        (
            "wrong type",
            sl(&base.replace(r#""dim_pct":50"#, r#""dim_pct":"half""#)),
            "data.streetlight.dim_pct",
            "malformed",
        ),
        (
            "dim over 255",
            sl(&base.replace(r#""dim_pct":50"#, r#""dim_pct":300"#)),
            "data.streetlight.dim_pct",
            "malformed",
        ),
        (
            "dim over 100",
            sl(&base.replace(r#""dim_pct":50"#, r#""dim_pct":101"#)),
            "data.streetlight.dim_pct",
            "invalid_value",
        ),
        (
            "mains over 500 V",
            sl(&base.replace(r#""voltage_v":230"#, r#""voltage_v":501"#)),
            "data.streetlight.voltage_v",
            "invalid_value",
        ),
        (
            // serde_json refuses a number beyond f32 range; serde-json-core (no_std) reads it
            // as infinity, which validation refuses.
            "f32 overflow",
            sl(&base.replace(r#""power_w":90"#, r#""power_w":1e39"#)),
            "data.streetlight.power_w",
            if cfg!(feature = "std") {
                "malformed"
            } else {
                "invalid_value"
            },
        ),
        (
            "negative current",
            sl(&base.replace(r#""current_a":0.4"#, r#""current_a":-0.1"#)),
            "data.streetlight.current_a",
            "invalid_value",
        ),
        (
            "unknown field",
            sl(&format!(r#"{base},"colour":"red""#)),
            "data.streetlight",
            "malformed",
        ),
        (
            "missing field",
            sl(r#""lamp_on":true"#),
            "data.streetlight",
            "malformed",
        ),
        (
            "device mismatch",
            r#"{"device_id":"SL-2","seq":1,"data":{"manhole":{"tilt_deg":1,"battery_pct":50}}}"#
                .into(),
            "device_mismatch",
            "device_mismatch",
        ),
        (
            "not json",
            "hello".into(),
            "unknown_encoding",
            "unknown_encoding",
        ),
        ("empty", "   ".into(), "empty", "empty"),
        (
            "trailing garbage",
            format!("{} x", sl(base)),
            ".",
            "malformed",
        ),
    ];
    for (what, payload, field, reason) in cases {
        let err = decode(SL, payload.as_bytes()).expect_err(what);
        assert_eq!(err.reason(), *reason, "{what}: {err}");
        // Without std, JSON syntax errors carry no field path (serde-json-core has none).
        if cfg!(feature = "std") || !matches!(err, DecodeError::Malformed { .. }) {
            assert!(
                field_of(&err).starts_with(field),
                "{what}: field {} in {err}",
                field_of(&err)
            );
        }
        assert!(!err.to_string().is_empty());
    }
    let kinds = [
        (
            "streetgate/v1/MH-1/telemetry",
            r#"{"device_id":"MH-1","seq":1,"data":{"manhole":{"tilt_deg":181,"battery_pct":50}}}"#,
            "data.manhole.tilt_deg",
        ),
        (
            "streetgate/v1/BN-1/telemetry",
            r#"{"device_id":"BN-1","seq":1,"data":{"bin":{"fill_pct":151,"temperature_c":20,"battery_pct":50}}}"#,
            "data.bin.fill_pct",
        ),
        (
            "streetgate/v1/WC-1/telemetry",
            r#"{"device_id":"WC-1","seq":1,"data":{"toilet":{"nh3_mg_m3":-0.1,"h2s_mg_m3":0}}}"#,
            "data.toilet.nh3_mg_m3",
        ),
        (
            "streetgate/v1/WC-1/telemetry",
            r#"{"device_id":"WC-1","seq":1,"data":{"toilet":{"nh3_mg_m3":0.1,"h2s_mg_m3":0,"humidity_pct":101}}}"#,
            "data.toilet.humidity_pct",
        ),
        (
            "streetgate/v1/MH-1/status",
            r#"{"device_id":"MH-1","seq":1,"kind":"manhole","online":true,"battery_pct":120}"#,
            "battery_pct",
        ),
    ];
    for (topic, payload, field) in kinds {
        let err = decode(topic, payload.as_bytes()).unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
        assert_eq!(err.reason(), "invalid_value");
    }
}

#[test]
fn nan_in_the_binary_encoding_is_refused() {
    let msg = Telemetry {
        device_id: DeviceId::new("MH-1").unwrap(),
        seq: 1,
        ts_ms: None,
        data: TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: f32::NAN,
            battery_pct: 50,
            ..Default::default()
        }),
    };
    let mut buf = [0u8; 64];
    let n = codec::encode(&msg, Encoding::Binary, &mut buf).unwrap();
    let err = decode("streetgate/v1/MH-1/telemetry", &buf[..n]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value: data.manhole.tilt_deg: must be a finite number"
    );
    let mut tail = buf[..n].to_vec();
    tail.push(0);
    assert_eq!(
        decode("streetgate/v1/MH-1/telemetry", &tail)
            .unwrap_err()
            .reason(),
        "malformed"
    );
}

#[test]
fn size_limits() {
    let big = format!(
        r#"{{"device_id":"SL-1","seq":1,"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let err = decode(SL, big.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: big.len(),
            limit: 4096
        }
    );
    let small = Limits { max_payload: 64 };
    let payload = sl(
        r#""lamp_on":true,"dim_pct":50,"voltage_v":230,"current_a":0.4,"power_w":90,"energy_wh":5"#,
    );
    let err =
        codec::decode_uplink(&Topic::parse(SL).unwrap(), payload.as_bytes(), &small).unwrap_err();
    assert_eq!(err.reason(), "too_large");
}

#[test]
fn direction_and_config_rules() {
    let err = decode("streetgate/v1/SL-1/command", b"{}").unwrap_err();
    assert_eq!(err.reason(), "wrong_direction");
    let err = codec::decode_downlink(Channel::Telemetry, b"{}", &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "wrong_direction");
    let bad = br#"{"config_id":1,"tilt_alarm_deg":30,"tilt_open_deg":20}"#;
    let err = codec::decode_downlink(Channel::Config, bad, &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value: tilt_open_deg: must be greater than tilt_alarm_deg"
    );
    let bad = br#"{"cmd_id":1,"action":{"dim":{"pct":120}}}"#;
    let err = codec::decode_downlink(Channel::Command, bad, &Limits::default()).unwrap_err();
    assert_eq!(field_of(&err), "action.dim.pct");
    let ok = br#"{"cmd_id":2,"action":"resume_schedule"}"#;
    assert!(codec::decode_downlink(Channel::Command, ok, &Limits::default()).is_ok());
}
