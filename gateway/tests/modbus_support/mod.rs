//! A Modbus slave serving register images built with the protocol's own encoders, for the
//! Modbus ingest suites.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::future;
use std::sync::Arc;

use streetgate_gateway::model::{Device, ThresholdOverrides, Transport};
use streetgate_protocols::modbus as map;
use streetgate_protocols::{DeviceId, DeviceKind, TelemetryData};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};

/// Input registers per unit; units not in the map never answer.
#[derive(Clone)]
pub struct Units(pub Arc<HashMap<u8, HashMap<u16, u16>>>);

impl tokio_modbus::server::Service for Units {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let Some(regs) = self.0.get(&req.slave) else {
            return future::ready(Ok(None)); // silent: the line is dead
        };
        future::ready(match req.request {
            Request::ReadInputRegisters(addr, count) => (addr..addr + count)
                .map(|a| {
                    regs.get(&a)
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect::<Result<Vec<u16>, _>>()
                .map(|v| Some(Response::ReadInputRegisters(v))),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

pub fn image(kind: DeviceKind, data: &TelemetryData) -> HashMap<u16, u16> {
    let mut regs = HashMap::new();
    for (i, v) in map::encode_identification(kind, (1, 0, 0))
        .into_iter()
        .enumerate()
    {
        regs.insert(u16::try_from(i).unwrap(), v);
    }
    let mut t = [0u16; map::TELEMETRY_MAX_LEN];
    let n = map::encode_telemetry(data, &mut t).unwrap();
    for (i, v) in t[..n].iter().enumerate() {
        regs.insert(map::TELEMETRY_START + u16::try_from(i).unwrap(), *v);
    }
    regs
}

pub fn device(id: &str, kind: DeviceKind, transport: Transport) -> Arc<Device> {
    Arc::new(Device {
        id: DeviceId::new(id).unwrap(),
        kind,
        component_code: None,
        lat: 31.3,
        lon: 120.6,
        grid: "g".into(),
        road_segment: None,
        road_class: None,
        toilet_class: None,
        bin_depth_mm: None,
        overrides: ThresholdOverrides::default(),
        transport,
    })
}
