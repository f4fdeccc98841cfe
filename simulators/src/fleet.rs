//! A fleet: every device of a city as a simulated node on its own MQTT connection, or as a
//! unit on a Modbus line behind a converter ([`crate::modbus`]), ticked by a simulated clock
//! that can run faster than wall time (a night in a minute).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use streetgate_firmware::platform::Now;
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{Config, DeviceId, DeviceKind, LampSchedule};
use tokio::runtime::Handle;

use crate::city::{City, Wiring};
use crate::modbus::{Converters, ModbusLink, Unit};
use crate::mqtt::{LinkStats, MqttLink};
use crate::node::SimNode;

/// How a fleet runs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Broker host.
    pub broker_host: String,
    /// Broker port.
    pub broker_port: u16,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Simulated Unix time at the start, ms.
    pub start_unix_ms: u64,
    /// Simulated seconds per tick.
    pub tick_s: u64,
    /// Wire encoding of the devices.
    pub encoding: Encoding,
    /// Heartbeat of every device, simulated seconds. Unset: each kind's firmware default,
    /// which is what the gateway's offline rule expects.
    pub heartbeat_s: Option<u32>,
    /// Wall time (Unix ms) at which the simulated clock reads `start_unix_ms`; the fleet
    /// waits for it. A gateway given the same anchor, start and speed (its `[clock]`) runs on
    /// the same clock. Unset: when the fleet's thread starts.
    pub anchor_wall_ms: Option<i64>,
    /// MQTT secrets by device id (user name = client id = device id), as the gateway issued
    /// them; a device without one connects without credentials (an open broker).
    pub credentials: Arc<HashMap<String, String>>,
}

impl FleetConfig {
    /// The gateway clock configuration that matches this fleet's simulated clock (set
    /// `anchor_wall_ms` first).
    pub fn gateway_clock(&self) -> streetgate_gateway::config::ClockConfig {
        streetgate_gateway::config::ClockConfig {
            speed: self.speed,
            start_ms: i64::try_from(self.start_unix_ms).ok(),
            anchor_wall_ms: self.anchor_wall_ms,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            broker_host: "127.0.0.1".into(),
            broker_port: 1883,
            speed: 60.0,
            start_unix_ms: 1_734_775_200_000, // 2024-12-21 18:00 Beijing: dusk
            tick_s: 10,
            encoding: Encoding::Binary,
            heartbeat_s: None,
            anchor_wall_ms: None,
            credentials: Arc::default(),
        }
    }
}

/// What a running fleet reports.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Link counters.
    pub links: Arc<LinkStats>,
    /// Simulated Unix time, ms.
    pub sim_unix_ms: AtomicU64,
    /// Ticks done.
    pub ticks: AtomicU64,
    /// Nodes connected (MQTT) or answering on their Modbus line.
    pub online: AtomicU64,
}

/// How one node of the fleet reaches the gateway.
#[derive(Debug)]
enum Link {
    Mqtt(MqttLink),
    Modbus(ModbusLink),
}

/// A fleet running on its own thread.
#[derive(Debug)]
pub struct Fleet {
    /// Live counters.
    pub stats: Arc<FleetStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    converters: Converters,
}

/// A scripted change to the world at a simulated time.
pub type Script = Box<dyn FnMut(u64, &mut [SimNode]) + Send>;

fn build(city: &City, cfg: &FleetConfig) -> Vec<SimNode> {
    city.devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let id = DeviceId::new(&d.id).ok()?;
            let mut node = SimNode::new(id, d.kind, i as u64 + 1, cfg.encoding);
            let schedule = (d.kind == DeviceKind::Streetlight).then_some(LampSchedule {
                lat_deg: d.lat,
                lon_deg: d.lon,
                on_offset_min: 0,
                off_offset_min: 0,
                night_dim_pct: None,
                dim_from_min: None,
                dim_to_min: None,
                utc_offset_min: 480,
            });
            let factory = Config {
                config_id: 0,
                heartbeat_interval_s: cfg.heartbeat_s,
                bin_depth_mm: d.bin_depth_mm,
                schedule,
                ..Config::default()
            };
            // Factory settings are valid by construction; a failure leaves the defaults.
            let _ = node.node_mut().settings.apply(&factory);
            Some(node)
        })
        .collect()
}

/// Payloads a node with broken firmware sends: cut-off JSON, a binary frame of junk, a
/// reading that claims another device, and a value out of range.
fn malformed_payloads(id: &str) -> [Vec<u8>; 4] {
    [
        format!(r#"{{"device_id":"{id}","seq":1,"data":{{"#).into_bytes(),
        vec![streetgate_protocols::codec::BINARY_MAGIC, 0xFF, 0xFF, 0xFF, 0x00, 0x13],
        format!(r#"{{"device_id":"NOT-{id}","seq":1,"data":{{"bin":{{"fill_pct":50.0,"temperature_c":20.0,"battery_pct":90}}}}}}"#).into_bytes(),
        format!(r#"{{"device_id":"{id}","seq":1,"data":{{"bin":{{"fill_pct":-400.0,"temperature_c":20.0,"battery_pct":90}}}}}}"#).into_bytes(),
    ]
}

/// Send up to four of the node's pending malformed payloads on its telemetry topic.
fn send_malformed(node: &mut SimNode, link: &mut MqttLink) {
    use streetgate_firmware::platform::Transport;
    if node.malformed == 0 || !link.is_up() {
        return;
    }
    let payloads = malformed_payloads(node.node().id().as_str());
    for p in payloads.iter().take(node.malformed.min(4) as usize) {
        if link
            .send(streetgate_protocols::Channel::Telemetry, p)
            .is_ok()
        {
            node.malformed -= 1;
        }
    }
}

impl Fleet {
    /// Start the fleet of `city`, connecting every node on `runtime`; `script` runs before
    /// each tick with the simulated time (s since start) to inject faults. Devices the city
    /// wires to Modbus lines are served by no converter here (unreachable): use
    /// [`Fleet::start_wired`].
    pub fn start(city: &City, cfg: FleetConfig, runtime: Handle, script: Script) -> Self {
        Self::start_wired(city, cfg, runtime, script, Converters::none())
    }

    /// [`Fleet::start`], the devices on Modbus lines served by `converters` (bound with
    /// [`Converters::bind`] before the inventory was written): the fleet keeps their register
    /// images current and hands them the master's writes. The converters stop with the fleet.
    pub fn start_wired(
        city: &City,
        cfg: FleetConfig,
        runtime: Handle,
        mut script: Script,
        converters: Converters,
    ) -> Self {
        let stats = Arc::new(FleetStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let city = city.clone();
        // The nodes are built on the fleet's thread (they are not `Send`); their units are
        // shared with the converters' tasks.
        let units: Vec<Option<Arc<Unit>>> = city
            .devices
            .iter()
            .map(|d| match d.wiring {
                Wiring::Mqtt => None,
                Wiring::ModbusTcp { .. } | Wiring::ModbusRtu { .. } => {
                    Some(converters.unit(&d.id).unwrap_or_else(|| Unit::new(d.kind)))
                }
            })
            .collect();
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fleet".into())
                .spawn(move || {
                    let mut nodes = build(&city, &cfg);
                    let mut links: Vec<Link> = nodes
                        .iter()
                        .zip(units)
                        .map(|(n, unit)| match unit {
                            Some(unit) => Link::Modbus(ModbusLink::new(unit)),
                            None => Link::Mqtt(MqttLink::connect_node(
                                &runtime,
                                &cfg.broker_host,
                                cfg.broker_port,
                                n.node(),
                                cfg.credentials
                                    .get(n.node().id().as_str())
                                    .map(String::as_str),
                                stats.links.clone(),
                            )),
                        })
                        .collect();
                    let started = match cfg.anchor_wall_ms {
                        Some(anchor) => {
                            let ahead = anchor - streetgate_gateway::clock::wall_ms();
                            if ahead > 0 {
                                std::thread::sleep(Duration::from_millis(ahead.unsigned_abs()));
                            }
                            Instant::now()
                                .checked_sub(Duration::from_millis((-ahead).max(0).unsigned_abs()))
                                .unwrap_or_else(Instant::now)
                        }
                        None => Instant::now(),
                    };
                    let mut sim_s = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        script(sim_s, &mut nodes);
                        let now = Now {
                            mono_ms: sim_s * 1000,
                            unix_ms: Some(cfg.start_unix_ms + sim_s * 1000),
                        };
                        for (node, link) in nodes.iter_mut().zip(links.iter_mut()) {
                            let link = match link {
                                Link::Mqtt(link) => link,
                                Link::Modbus(link) => {
                                    // A broker outage (link_cut) does not touch a serial line;
                                    // a node without power stops answering.
                                    link.tick(node, now);
                                    continue;
                                }
                            };
                            if !node.powered || node.link_cut {
                                if !link.is_aborted() {
                                    link.abort();
                                }
                            } else if link.is_aborted() {
                                // Power or network back: a new connection resumes the
                                // persistent session.
                                *link = MqttLink::connect_node(
                                    &runtime,
                                    &cfg.broker_host,
                                    cfg.broker_port,
                                    node.node(),
                                    cfg.credentials
                                        .get(node.node().id().as_str())
                                        .map(String::as_str),
                                    stats.links.clone(),
                                );
                            }
                            if !node.powered {
                                continue;
                            }
                            send_malformed(node, link);
                            node.tick(now, link);
                        }
                        stats
                            .sim_unix_ms
                            .store(cfg.start_unix_ms + sim_s * 1000, Ordering::Relaxed);
                        stats.ticks.fetch_add(1, Ordering::Relaxed);
                        stats.online.store(
                            links
                                .iter()
                                .filter(|l| match l {
                                    Link::Mqtt(l) => l.is_up(),
                                    Link::Modbus(l) => l.unit().is_answering(),
                                })
                                .count() as u64,
                            Ordering::Relaxed,
                        );
                        sim_s += cfg.tick_s;
                        // Keep pace with the simulated clock.
                        let due = Duration::from_secs_f64(sim_s as f64 / cfg.speed.max(0.001));
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait.min(Duration::from_millis(500)));
                        }
                    }
                    for link in &links {
                        match link {
                            Link::Mqtt(l) => l.disconnect(),
                            Link::Modbus(l) => l.unit().set_answering(false),
                        }
                    }
                    links.clear();
                })
                .ok()
        };
        Self {
            stats,
            stop,
            thread,
            converters,
        }
    }

    /// The converters serving the fleet's Modbus lines.
    pub fn converters(&self) -> &Converters {
        &self.converters
    }

    /// Stop ticking and disconnect cleanly.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
