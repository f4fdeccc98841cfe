//! A generated city imports into the gateway's inventory as it is.
#![allow(clippy::unwrap_used)]

use streetgate_gateway::inventory;
use streetgate_protocols::DeviceKind;
use streetgate_simulators::city::{City, CityConfig};

#[test]
fn a_generated_city_imports_whole() {
    let city = City::generate(&CityConfig {
        devices: 3000,
        ..CityConfig::default()
    });
    let devices = inventory::parse_csv(city.to_csv().as_bytes()).unwrap();
    assert_eq!(devices.len(), city.devices.len());
    let lamps: Vec<_> = devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Streetlight)
        .collect();
    assert!(
        lamps
            .iter()
            .all(|d| d.road_segment.is_some() && d.road_class.is_some())
    );
    assert!(
        devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Toilet)
            .all(|d| d.toilet_class.is_some())
    );
    assert!(devices.iter().all(|d| d.component_code.is_some()));
}
