//! The one-command demo: a gateway on embedded defaults, a generated city as a fleet of
//! simulated devices, and scripted incidents through one night, with a live one-line summary.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use streetgate_gateway::app;
use streetgate_gateway::config::Config;
use streetgate_gateway::inventory;

use crate::city::{City, CityConfig};
use crate::fleet::{Fleet, FleetConfig};
use crate::node::{SimNode, World};

/// The night's incidents: (simulated seconds after dusk, what happens).
fn incidents(t: u64, nodes: &mut [SimNode]) {
    let with = |nodes: &mut [SimNode], id: &str, f: &dyn Fn(&World)| {
        if let Some(n) = nodes.iter_mut().find(|n| n.node().id().as_str() == id) {
            f(&n.world);
        }
    };
    match t {
        // Three lamps on one segment burn out.
        600 => {
            for id in ["SL-000030", "SL-000031", "SL-000035"] {
                with(nodes, id, &|w| {
                    if let World::Lamp(l) = w {
                        l.borrow_mut().burnt_out = true
                    }
                });
            }
        }
        // A cover is lifted off its frame.
        1200 => with(nodes, "MH-000005", &|w| {
            if let World::Cover(c) = w {
                c.borrow_mut().lifted = true
            }
        }),
        // A bin overflows fast.
        1800 => with(nodes, "BN-000003", &|w| {
            if let World::Bin(b) = w {
                b.borrow_mut().fill_pct = 110.0
            }
        }),
        // A toilet's fan fails on a busy evening.
        2400 => with(nodes, "WC-000001", &|w| {
            if let World::Toilet(a) = w {
                let mut a = a.borrow_mut();
                a.fan_ok = false;
                a.usage_per_h = 60.0;
            }
        }),
        // The municipal team puts the cover back.
        3600 => with(nodes, "MH-000005", &|w| {
            if let World::Cover(c) = w {
                c.borrow_mut().lifted = false
            }
        }),
        // Bin collected, lamps replaced.
        5400 => {
            with(nodes, "BN-000003", &|w| {
                if let World::Bin(b) = w {
                    b.borrow_mut().collect()
                }
            });
            for id in ["SL-000030", "SL-000031", "SL-000035"] {
                with(nodes, id, &|w| {
                    if let World::Lamp(l) = w {
                        l.borrow_mut().burnt_out = false
                    }
                });
            }
        }
        _ => {}
    }
}

/// Run the demo until Ctrl-C.
pub fn run(devices: usize, speed: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        // Embedded defaults, with the usual STREETGATE_* environment overrides (ports, paths).
        let config = Config::load(None).context("configuration")?;
        let gw = app::start(config).await.context("starting the gateway on embedded defaults")?;
        let city = City::generate(&CityConfig { devices, ..CityConfig::default() });
        let inventory = inventory::parse_csv(city.to_csv().as_bytes()).map_err(|e| anyhow::anyhow!("generated inventory: {e}"))?;
        let now_ms = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)).unwrap_or(0);
        gw.state.store.upsert_devices(&inventory, now_ms).await.context("storing the inventory")?;
        gw.state.inventory.upsert(inventory);
        let broker = gw.broker_addr.context("the demo needs the embedded broker")?;
        let fleet = Fleet::start(
            &city,
            FleetConfig { broker_host: broker.ip().to_string(), broker_port: broker.port(), speed, ..FleetConfig::default() },
            tokio::runtime::Handle::current(),
            Box::new(incidents),
        );
        let http = gw.http_addr;
        println!("streetgate demo: {} simulated devices running the real firmware", city.devices.len());
        println!("  API       http://{http}/api/health");
        println!("  devices   http://{http}/api/devices");
        println!("  cases     http://{http}/api/cases");
        println!("  metrics   http://{http}/metrics");
        println!("  broker    mqtt://{broker}   (mosquitto_sub -h {} -p {} -t 'streetgate/v1/#' -v)", broker.ip(), broker.port());
        println!("Simulated clock: {speed}× wall time from dusk. Ctrl-C stops.");
        let stats = fleet.stats.clone();
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    let published = stats.links.published.load(Ordering::Relaxed);
                    let rate = (published - last.0) as f64 / last.1.elapsed().as_secs_f64().max(0.001);
                    last = (published, Instant::now());
                    let cases = gw.state.store.open_case_counts().await.unwrap_or_default();
                    let cases: Vec<String> = cases.iter().map(|(t, n)| format!("{t} {n}")).collect();
                    let sim_min = (stats.sim_unix_ms.load(Ordering::Relaxed).saturating_sub(FleetConfig::default().start_unix_ms)) / 60_000;
                    println!(
                        "[{:>4}s wall, +{:>3} min sim] online {}/{} | {:>6.0} msg/s | open cases: {}",
                        started.elapsed().as_secs(),
                        sim_min,
                        stats.online.load(Ordering::Relaxed),
                        city.devices.len(),
                        rate,
                        if cases.is_empty() { "none".to_owned() } else { cases.join(", ") },
                    );
                }
            }
        }
        println!("stopping: fleet, then the gateway (flushing the store)");
        fleet.stop();
        gw.shutdown().await
    })
}
