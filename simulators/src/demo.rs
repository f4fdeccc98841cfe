//! The one-command demo: a gateway on embedded defaults, a generated city as a fleet of
//! simulated devices, and scripted incidents through one night, with a live one-line summary.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use streetgate_gateway::app;
use streetgate_gateway::config::Config;
use streetgate_gateway::inventory;
use streetgate_gateway::model::CaseState;
use streetgate_gateway::store::CaseFilter;

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

/// Maintenance teams as the demo plays them: accept what is dispatched to them, report it
/// fixed a little later; the sensors then verify the repair (or not).
async fn virtual_teams(
    store: std::sync::Arc<dyn streetgate_gateway::store::Store>,
    clock: streetgate_gateway::clock::Clock,
) {
    use streetgate_gateway::automation::{from_record, to_entry, to_record};
    use streetgate_gateway::cases::CaseAction;
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tick.tick().await;
        let Ok((_, open)) = store
            .list_cases(&CaseFilter {
                open: Some(true),
                limit: 1000,
                ..CaseFilter::default()
            })
            .await
        else {
            continue;
        };
        for record in open {
            let Some(mut case) = from_record(&record) else {
                continue;
            };
            let actor = format!("team:{}", case.team.clone().unwrap_or_default());
            let now = clock.now_ms();
            let action = match case.state {
                CaseState::Dispatched => CaseAction::Accept,
                // Five simulated minutes on site.
                CaseState::Accepted if now - case.updated_ms > 300_000 => CaseAction::Resolve {
                    note: "repaired on site".into(),
                },
                _ => continue,
            };
            if let Ok(t) = case.apply(action, &actor, now) {
                let _ = store
                    .update_case(&to_record(&case), record.state, &[to_entry(&t)])
                    .await;
            }
        }
    }
}

/// Run the demo until Ctrl-C.
pub fn run(devices: usize, speed: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        // Embedded defaults, with the usual STREETGATE_* environment overrides (ports, paths).
        let mut config = Config::load(None).context("configuration")?;
        // The demo's devices connect in-process, so the broker may take any free port when the
        // default one is taken (a Mosquitto already running, say); so may the API.
        for (var, addr) in [("STREETGATE_BROKER_LISTEN", &mut config.broker.listen), ("STREETGATE_HTTP_LISTEN", &mut config.http.listen)] {
            if std::env::var_os(var).is_none() && std::net::TcpListener::bind(*addr).is_err() {
                println!("{addr} is taken; using a free port instead (set {var} to choose one)");
                addr.set_port(0);
            }
        }
        // The gateway follows the fleet's simulated clock: holds, offline timers, time limits
        // and the 10-minute sensor verification window run at the demo's speed.
        let mut fleet_config = FleetConfig {
            speed,
            anchor_wall_ms: Some(streetgate_gateway::clock::wall_ms() + 2000),
            ..FleetConfig::default()
        };
        config.clock = fleet_config.gateway_clock();
        let gw = app::start(config).await.context("starting the gateway on embedded defaults")?;
        let team = tokio::spawn(virtual_teams(gw.state.store.clone(), gw.state.clock));
        let city = City::generate(&CityConfig { devices, ..CityConfig::default() });
        let inventory = inventory::parse_csv(city.to_csv().as_bytes()).map_err(|e| anyhow::anyhow!("generated inventory: {e}"))?;
        gw.state.store.upsert_devices(&inventory, gw.state.clock.now_ms()).await.context("storing the inventory")?;
        gw.state.inventory.upsert(inventory);
        let broker = gw.broker_addr.context("the demo needs the embedded broker")?;
        fleet_config.broker_host = broker.ip().to_string();
        fleet_config.broker_port = broker.port();
        let fleet = Fleet::start(
            &city,
            fleet_config,
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
        println!("Simulated clock (gateway and devices): {speed}× wall time from dusk. Ctrl-C stops.");
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
                    let closed = gw.state.store.list_cases(&CaseFilter { state: Some(CaseState::Closed), limit: 10_000, ..CaseFilter::default() }).await.map(|(n, _)| n).unwrap_or(0);
                    let cases: Vec<String> = cases.iter().map(|(t, n)| format!("{t} {n}")).collect();
                    let sim_min = (stats.sim_unix_ms.load(Ordering::Relaxed).saturating_sub(FleetConfig::default().start_unix_ms)) / 60_000;
                    println!(
                        "[{:>4}s wall, +{:>3} min sim] online {}/{} | {:>6.0} msg/s | closed {closed} | open cases: {}",
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
        team.abort();
        fleet.stop();
        gw.shutdown().await
    })
}
