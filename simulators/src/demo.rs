//! The one-command demo: a gateway on embedded defaults, a generated city as a fleet of
//! simulated devices, and the night of `scenarios/demo.toml` (scripted incidents, simulated
//! teams and their crews, collection rounds), printing every case event as it happens and a
//! status line.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use streetgate_gateway::config::Config;
use streetgate_gateway::store::CaseEvent;

use crate::scenario::{self, Counts, Scenario};

/// The demo's night, as the test suite runs it.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// Status line every this many wall seconds.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// One case event as a terminal line: simulated local time, case, type, place, transition.
pub fn event_line(e: &CaseEvent) -> String {
    // Simulated local time (UTC+8).
    let local_min = (e.entry.at_ms / 60_000 + 8 * 60).rem_euclid(24 * 60);
    let c = &e.case;
    let case_type = serde_json::to_value(c.case_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let place = match c.subject_key.split_once(':') {
        Some(("segment", s)) => format!("segment {s}"),
        None if c.subject_key == "fleet" => "the whole fleet".to_owned(),
        Some((_, d)) => d.to_owned(),
        None => c.subject_key.clone(),
    };
    let state = |s: streetgate_gateway::model::CaseState| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let transition = match e.entry.from {
        Some(from) => format!("{} → {}", state(from), state(e.entry.to)),
        None => state(e.entry.to),
    };
    let mut note = e.entry.note.clone();
    if note.chars().count() > 70 {
        note = note.chars().take(67).collect::<String>() + "...";
    }
    format!(
        "  {:02}:{:02}  case {:<4} {:<14} {:<22} grid {}  {:<22} {:<18} {}",
        local_min / 60,
        local_min % 60,
        c.id,
        case_type,
        place,
        c.grid,
        transition,
        e.entry.actor,
        note
    )
}

/// Run the demo until Ctrl-C: `devices` and `speed` replace the scenario's.
pub fn run(devices: usize, speed: f64) -> anyhow::Result<()> {
    let mut s = Scenario::parse(DEMO_SCENARIO).context("the demo's scenario")?;
    s.devices = devices;
    s.speed = speed;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        // Embedded defaults, with the usual STREETGATE_* environment overrides (ports, paths).
        let mut config = Config::load(None).context("configuration")?;
        // The demo's devices connect in-process, so the broker may take any free port when the
        // default one is taken (a Mosquitto already running, say); so may the API.
        for (var, addr) in [
            ("STREETGATE_BROKER_LISTEN", &mut config.broker.listen),
            ("STREETGATE_HTTP_LISTEN", &mut config.http.listen),
        ] {
            if std::env::var_os(var).is_none() && std::net::TcpListener::bind(*addr).is_err() {
                println!("{addr} is taken; using a free port instead (set {var} to choose one)");
                addr.set_port(0);
            }
        }
        // Each run is a new night from dusk: its own store, so nothing of an earlier run (a
        // case closed "recently" on the same simulated evening) is mistaken for a recurrence.
        if std::env::var_os("STREETGATE_STORE_PATH").is_none() {
            let dir = config
                .store
                .path
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default()
                .join(format!("demo-{}", streetgate_gateway::clock::wall_ms() / 1000));
            config.store.path = dir.join("streetgate.db");
        }
        println!(
            "streetgate demo: starting a gateway (store {}) and {} simulated devices running the real firmware ...",
            config.store.path.display(),
            s.devices
        );
        let run = scenario::launch(&s, config)
            .await
            .context("starting the demo")?;
        let http = run.gw.http_addr;
        let broker = run.gw.broker_addr.context("the demo needs the embedded broker")?;
        println!("Console   http://{http}/   (sign in as the administrator below; the teams' members are API users)");
        println!("Sign in (every route but health and the API doc needs it):");
        match &run.gw.first_admin_password {
            Some(password) => println!(
                "  administrator  user {admin}, password {password}   (made at this first start, shown only now)\n                 curl -i -H 'content-type: application/json' -d '{{\"username\":\"{admin}\",\"password\":\"{password}\"}}' http://{http}/api/session",
                admin = streetgate_gateway::auth::FIRST_ADMIN,
            ),
            None => println!(
                "  administrator  the store had users already: sign in as one of them (streetgate user passwd NAME sets a password)"
            ),
        }
        println!(
            "  read-only      curl -H 'Authorization: Bearer {}' http://{http}/api/cases",
            run.api_token
        );
        let members: Vec<String> = run
            .members
            .iter()
            .map(|m| format!("{} ({})", m.name, m.team))
            .collect();
        if !members.is_empty() {
            println!("  the teams work as their members: {}", members.join(", "));
        }
        println!("Where to look (send the token, or the cookie and X-CSRF-Token of a sign-in):");
        println!("  cases     http://{http}/api/cases   (one case and its history: /api/cases/ID)");
        println!("  health    http://{http}/api/health");
        println!("  devices   http://{http}/api/devices");
        println!("  lighting  http://{http}/api/lighting");
        println!("  metrics   http://{http}/metrics");
        println!("  audit     http://{http}/api/audit   (administrator)");
        println!("  API doc   http://{http}/api/openapi.json");
        println!(
            "  broker    mqtt://{broker}   (each device signs in with its own secret and sees only its own topics; live case events: the console, or GET /api/events)"
        );
        println!(
            "Simulated clock (gateway, devices, teams): {speed}× wall time from 18:00, dusk. Case events as they happen; Ctrl-C stops."
        );
        println!(
            "  time   case type           place                  grid             transition             by                 note"
        );
        let stats = run.fleet_stats();
        let store = run.gw.state.store.clone();
        let started = Instant::now();
        let mut last = (0u64, Instant::now(), Instant::now());
        let mut cursor = 0i64;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    while let Ok(events) = store.case_events_after(cursor, 200).await {
                        let Some(e) = events.last() else { break };
                        cursor = e.event_id;
                        for e in &events {
                            println!("{}", event_line(e));
                        }
                    }
                    if last.2.elapsed() < STATUS_EVERY {
                        continue;
                    }
                    let published = stats.links.published.load(Ordering::Relaxed);
                    let rate = (published - last.0) as f64 / last.1.elapsed().as_secs_f64().max(0.001);
                    last = (published, Instant::now(), Instant::now());
                    let counts = Counts::from_store(store.as_ref()).await.unwrap_or_default();
                    let sim_min = run.sim_s() / 60;
                    println!(
                        "[{:>4}s wall, +{:>3} min sim] online {}/{} | {:>6.0} msg/s | {}",
                        started.elapsed().as_secs(),
                        sim_min,
                        stats.online.load(Ordering::Relaxed),
                        run.devices,
                        rate,
                        counts.line(),
                    );
                }
            }
        }
        println!("stopping: teams and fleet, then the gateway (flushing the store)");
        run.stop().await
    })
}
