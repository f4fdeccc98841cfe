//! `streetgate-sim`: lay out a city, and run it as a fleet of simulated devices (the real
//! firmware over physical models) against an MQTT broker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use streetgate_simulators::city::{City, CityConfig, RTU_BAUD};
use streetgate_simulators::fleet::{Fleet, FleetConfig};
use streetgate_simulators::modbus::{ConverterConfig, Converters};

/// mimalloc instead of the system allocator: the ingest path allocates per message on one
/// thread and frees on another, which glibc's allocator handles poorly (measured in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "streetgate-sim",
    version,
    about = "Simulated street-device fleets running the real streetgate firmware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct CityArgs {
    /// Devices in the city (split 65 : 40 : 15 : 0.4 lamps : covers : bins : toilets).
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Centre latitude, °N.
    #[arg(long, default_value_t = 35.7476)]
    lat: f64,
    /// Centre longitude, °E.
    #[arg(long, default_value_t = 114.2975)]
    lon: f64,
    /// Layout seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction (0–1) of the lamps and toilets wired to RS-485 lines behind Modbus TCP
    /// converters (32 units per converter port) instead of MQTT.
    #[arg(long, default_value_t = 0.0)]
    modbus_tcp_fraction: f64,
    /// Fraction (0–1) of the lamps and toilets on RS-485 lines the gateway reads over Modbus
    /// RTU, each line a pseudo-terminal pair whose slave side the inventory names (`fleet` only).
    #[arg(long, default_value_t = 0.0)]
    modbus_rtu_fraction: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Start a gateway on embedded defaults with a simulated city and the night of
    /// `scenarios/demo.toml`: scripted incidents, simulated teams and their crews, collection
    /// rounds; prints every case event as it happens.
    Demo {
        /// Devices in the city (the scenario file's own size is what the test suite runs).
        #[arg(long, default_value_t = 2000)]
        devices: usize,
        /// Simulated seconds per wall second (60: a night in about 12 minutes).
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
    },
    /// Write the inventory CSV of a generated city (import it with POST /api/devices/import).
    City {
        #[command(flatten)]
        city: CityArgs,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario file against an in-process gateway and report; exits non-zero on any
    /// missed case, false alarm or duplicate.
    Verify {
        /// The scenario (TOML).
        scenario: PathBuf,
    },
    /// Battery life a configuration implies, per battery-powered kind (covers, bins): the real
    /// firmware run over simulated days as fast as it goes, its samples and messages counted.
    Battery {
        /// Report interval, s (default: each kind's firmware default, 60).
        #[arg(long)]
        report_interval_s: Option<u32>,
        /// Heartbeat, s (default: each kind's firmware default, 43200).
        #[arg(long)]
        heartbeat_s: Option<u32>,
        /// Sampling period, s (default: each kind's firmware constant: cover 1, bin 60).
        #[arg(long)]
        sample_period_s: Option<f64>,
        /// Simulated days to run.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Measure the gateway in one go: ingest against the broker's own delivery rate (embedded
    /// broker, and an external one with --mqtt-url or --mosquitto-bin; JSON and binary), peak
    /// RSS, alarm-to-case latency under load, the lighting rate of 1,000,000 lamps and Modbus
    /// polling across 1,000 units. Build with --release for meaningful figures.
    Bench {
        /// Messages per ingest run.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Concurrent QoS 1 publishers.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Devices (bins) the messages are spread over.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Also run the ingest comparison on this external broker (`mqtt://host:port`).
        #[arg(long)]
        mqtt_url: Option<String>,
        /// Also run it on a Mosquitto started from this binary with
        /// deploy/mosquitto/streetgate.conf (ignored with --mqtt-url).
        #[arg(long)]
        mosquitto_bin: Option<PathBuf>,
        /// Steady telemetry load during the latency run, messages per second.
        #[arg(long, default_value_t = 10_000)]
        load_rate: u32,
        /// Alarms measured in the latency run (one every 50 ms).
        #[arg(long, default_value_t = 200)]
        alarms: usize,
        /// Lamps for the lighting-rate run.
        #[arg(long, default_value_t = 1_000_000)]
        lamps: usize,
        /// Simulated Modbus units.
        #[arg(long, default_value_t = 1000)]
        modbus_units: usize,
        /// Modbus TCP converters the units are spread over.
        #[arg(long, default_value_t = 32)]
        converters: usize,
        /// Seconds the Modbus polling is counted.
        #[arg(long, default_value_t = 10)]
        modbus_secs: u64,
        /// Poll interval of each Modbus unit, ms (caps the rate at units ÷ interval).
        #[arg(long, default_value_t = 100)]
        modbus_poll_ms: u64,
        /// Readings of history kept per device during the ingest runs (0: the latest only;
        /// default: the store's default).
        #[arg(long)]
        history_per_device: Option<u32>,
        /// Sections to run (comma-separated): ingest, latency, normaliser, lighting, modbus.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ingest,latency,normaliser,lighting,modbus"
        )]
        sections: Vec<String>,
    },
    /// Run a generated city as a fleet against a broker until Ctrl-C; devices on Modbus lines
    /// are served by converters on ephemeral ports of 127.0.0.1.
    Fleet {
        #[command(flatten)]
        city: CityArgs,
        /// Broker as host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Write the inventory CSV here once the converters are bound (it names their ports).
        #[arg(long)]
        inventory_out: Option<PathBuf>,
        /// MQTT credentials of the devices: the JSON answer of the inventory import (it lists
        /// the secrets it issued), or the CSV `id,username,password` that `streetgate device
        /// credentials` writes. Without it devices connect without any (a broker with
        /// `broker.auth = "open"`).
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
}

fn city(args: &CityArgs) -> City {
    City::generate(&CityConfig {
        centre_lat: args.lat,
        centre_lon: args.lon,
        devices: args.devices,
        seed: args.seed,
        modbus_tcp_fraction: args.modbus_tcp_fraction,
        modbus_rtu_fraction: args.modbus_rtu_fraction,
        ..CityConfig::default()
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The gateway's logs, when asked for (`RUST_LOG=streetgate_gateway=info`).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.command {
        Command::Demo { devices, speed } => streetgate_simulators::demo::run(devices, speed)?,
        Command::Verify { scenario } => {
            let s = streetgate_simulators::scenario::Scenario::load(&scenario)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let report = runtime.block_on(streetgate_simulators::scenario::verify(&s, |done| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let filled = (done.clamp(0.0, 1.0) * 30.0) as usize;
                eprint!(
                    "\r[{}{}] {:>3.0}%",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    done * 100.0
                );
            }))?;
            eprintln!();
            print!("{}", report.render(&s.name, s.speed));
            if !report.passed() {
                std::process::exit(1);
            }
        }
        Command::Bench {
            messages,
            publishers,
            devices,
            mqtt_url,
            mosquitto_bin,
            load_rate,
            alarms,
            lamps,
            modbus_units,
            converters,
            modbus_secs,
            modbus_poll_ms,
            history_per_device,
            sections,
        } => {
            for s in &sections {
                anyhow::ensure!(
                    ["ingest", "latency", "normaliser", "lighting", "modbus"].contains(&s.as_str()),
                    "--sections: unknown section {s:?} (ingest, latency, normaliser, lighting, modbus)"
                );
            }
            anyhow::ensure!(
                publishers > 0 && devices >= publishers,
                "--publishers must be at least 1 and at most --devices"
            );
            let opts = streetgate_simulators::bench::BenchOptions {
                messages,
                publishers,
                devices,
                mqtt_url,
                mosquitto_bin,
                load_rate,
                alarms,
                lamps,
                modbus_units,
                converters,
                modbus_secs,
                modbus_poll_ms,
                history_per_device,
                sections,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(streetgate_simulators::bench::run(&opts))?;
        }
        Command::Battery {
            report_interval_s,
            heartbeat_s,
            sample_period_s,
            days,
        } => {
            use streetgate_simulators::battery::{self, BatteryConfig, BatteryReport};
            let sample_period_ms = match sample_period_s {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(s) if s.is_finite() && s >= 0.001 => Some((s * 1000.0).round() as u64),
                Some(s) => anyhow::bail!("--sample-period-s {s}: at least 0.001"),
                None => None,
            };
            let config = BatteryConfig {
                report_interval_s,
                heartbeat_s,
                sample_period_ms,
            };
            let cell = streetgate_simulators::physics::BatteryModel::d_cell();
            println!(
                "{days} simulated days per kind on the real firmware; cell {:.0} mAh, \
                 {} µA asleep, {} µAh per sample, {} µAh per message",
                cell.capacity_mah, cell.sleep_ua, cell.sample_uah, cell.tx_uah
            );
            println!("{}", BatteryReport::header());
            for kind in battery::BATTERY_KINDS {
                let report = battery::run(kind, &config, days).map_err(anyhow::Error::msg)?;
                println!("{}", report.render());
            }
        }
        Command::City { city: args, out } => {
            let city = city(&args);
            anyhow::ensure!(
                city.modbus_lines() == 0 && city.rtu_lines() == 0,
                "the inventory of a city with Modbus lines names its converters' ports, known once \
                 they are bound: run `streetgate-sim fleet --inventory-out FILE` instead"
            );
            let csv = city.to_csv();
            match out {
                Some(path) => std::fs::write(&path, csv)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{csv}"),
            }
        }
        Command::Fleet {
            city: args,
            broker,
            speed,
            inventory_out,
            credentials,
        } => {
            let (host, port) = broker
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--broker {broker:?}: expected host:port"))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let city = city(&args);
            // Converters first: the inventory names their ports.
            let converters = runtime
                .block_on(Converters::bind(&city, ConverterConfig::default()))
                .context("binding the Modbus converters")?;
            for (line, c) in converters.converters().iter().enumerate() {
                eprintln!(
                    "Modbus line {line}: {} units behind modbus-tcp {}",
                    c.units(),
                    c.local_addr()
                );
            }
            for (line, path) in converters.serial_paths().iter().enumerate() {
                eprintln!("Modbus RTU line {line}: modbus-rtu {path} {RTU_BAUD}");
            }
            if let Some(path) = inventory_out {
                let csv = city.to_csv_with(&converters.addrs(), &converters.serial_paths())?;
                std::fs::write(&path, csv)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("inventory written to {}", path.display());
            }
            let fleet = Fleet::start_wired(
                &city,
                FleetConfig {
                    broker_host: host,
                    broker_port: port,
                    speed,
                    credentials: Arc::new(match &credentials {
                        Some(path) => read_credentials(path)?,
                        None => HashMap::new(),
                    }),
                    ..FleetConfig::default()
                },
                runtime.handle().clone(),
                Box::new(|_, _| {}),
                converters,
            );
            let stats = fleet.stats.clone();
            runtime.block_on(async {
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = tick.tick() => eprintln!(
                            "{} devices, {} connected, {} messages published, {} held back (link down)",
                            city.devices.len(),
                            stats.online.load(Ordering::Relaxed),
                            stats.links.published.load(Ordering::Relaxed),
                            stats.links.refused.load(Ordering::Relaxed),
                        ),
                    }
                }
            });
            fleet.stop();
        }
    }
    Ok(())
}

/// Device secrets from the CSV `id,username,password` (`streetgate device credentials`), or
/// from the JSON answer of the inventory import (its `credentials`).
fn read_credentials(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Issued {
            id: String,
            password: String,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            credentials: Vec<Issued>,
        }
        let answer: Answer = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected the inventory import's answer, with credentials",
                path.display()
            )
        })?;
        return Ok(answer
            .credentials
            .into_iter()
            .map(|c| (c.id, c.password))
            .collect());
    }
    let mut lines = text.lines();
    anyhow::ensure!(
        lines.next().map(str::trim) == Some("id,username,password"),
        "{}: expected the header id,username,password",
        path.display()
    );
    let mut secrets = HashMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim().split(',').collect();
        let [id, _user, password] = fields[..] else {
            anyhow::bail!(
                "{} line {}: expected id,username,password",
                path.display(),
                n + 2
            );
        };
        secrets.insert(id.to_owned(), password.to_owned());
    }
    Ok(secrets)
}
