//! Lighting rate and grouped lamp cases end to end: four simulated lamps on one road segment,
//! placed where it is night now (so the test holds at any hour), one burns out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{Config as DeviceConfig, DeviceId, DeviceKind, LampSchedule};
use streetgate_simulators::node::{SimNode, World};
use support::{Clock, Gateway};

#[tokio::test(flavor = "current_thread")]
async fn a_dark_lamp_lowers_the_segment_rate_and_opens_one_segment_case() {
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    // The longitude where it is local midnight now, on the equator: night for hours either side.
    #[allow(clippy::cast_precision_loss)]
    let utc_hours = (now_ms % 86_400_000) as f64 / 3_600_000.0;
    let lon = ((-utc_hours * 15.0 + 540.0) % 360.0) - 180.0;
    let lat = 0.0;
    let mut csv = String::from("id,kind,lat,lon,grid,road_segment,road_class\n");
    for i in 1..=4 {
        csv.push_str(&format!("SL-{i},streetlight,{lat},{lon:.4},G-1,S-1,main\n"));
    }

    let gw = Gateway::start(&csv).await;
    let mut nodes = Vec::new();
    for i in 1..=4 {
        let mut node = SimNode::new(
            DeviceId::new(&format!("SL-{i}")).unwrap(),
            DeviceKind::Streetlight,
            i,
            Encoding::Json,
        );
        let schedule = LampSchedule {
            lat_deg: lat,
            lon_deg: lon,
            on_offset_min: 0,
            off_offset_min: 0,
            night_dim_pct: None,
            dim_from_min: None,
            dim_to_min: None,
            utc_offset_min: 0,
        };
        node.node_mut()
            .settings
            .apply(&DeviceConfig {
                config_id: 1,
                schedule: Some(schedule),
                ..DeviceConfig::default()
            })
            .unwrap();
        nodes.push(gw.connect(node));
    }
    let World::Lamp(broken) = nodes[2].0.world.clone() else {
        panic!("lamp")
    };
    let mut clock = Clock {
        unix0_ms: now_ms,
        t_s: 0,
        step_s: 10,
        pause_ms: 25,
    };
    let get = async |path: &str| -> Value { gw.get(path).await.1 };

    // All lit: 100 %.
    let mut lighting = Value::Null;
    for _ in 0..80 {
        clock.run(&mut nodes, 1).await;
        lighting = get("/api/lighting?segment=S-1").await;
        if lighting["segments"][0]["lit"] == 4 {
            break;
        }
    }
    assert_eq!(lighting["in_switch_on_hours"], true, "{lighting}");
    assert_eq!(lighting["segments"][0]["rate"], 1.0, "{lighting}");

    broken.borrow_mut().burnt_out = true;
    let mut cases = Value::Null;
    for _ in 0..120 {
        clock.run(&mut nodes, 1).await;
        lighting = get("/api/lighting?segment=S-1").await;
        cases = get("/api/cases?type=lamp_fault").await;
        if lighting["segments"][0]["lit"] == 3 && cases["cases"][0]["urgent"] == true {
            break;
        }
    }
    let seg = &lighting["segments"][0];
    assert_eq!(
        (seg["lit"].as_u64(), seg["expected"].as_u64()),
        (Some(3), Some(4)),
        "{lighting}"
    );
    assert_eq!(seg["below_target"], true);
    assert_eq!(seg["dark"], serde_json::json!(["SL-3"]));
    assert_eq!(cases["total"], 1, "one case for the segment: {cases}");
    let case = &cases["cases"][0];
    assert_eq!(case["subject_key"], "segment:S-1");
    assert_eq!(case["team"], "lighting");
    assert_eq!(case["urgent"], true, "below target: {case}");
    assert_eq!(case["devices"], serde_json::json!(["SL-3"]));
    gw.running.shutdown().await.unwrap();
}
