//! Scenario files: a city, scripted faults at simulated times, and the cases they must (and
//! must not) cause; [`verify`] runs one against an in-process gateway and reports recall,
//! false alarms, duplicates and fault-to-case times.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Deserialize;
use streetgate_gateway::app;
use streetgate_gateway::config::Config;
use streetgate_gateway::inventory;
use streetgate_gateway::model::CaseState;
use streetgate_gateway::store::{CaseFilter, CaseRecord, Store};
use streetgate_protocols::codec::Encoding;

use crate::city::{City, CityConfig};
use crate::fleet::{Fleet, FleetConfig};
use crate::modbus::{ConverterConfig, Converters};
use crate::node::{SimNode, World};
use crate::physics::Noise;
use crate::teams::{self, TeamsConfig};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name in reports.
    pub name: String,
    /// Devices in the generated city.
    pub devices: usize,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Simulated duration, s.
    pub duration_s: u64,
    /// City layout seed.
    #[serde(default = "one")]
    pub seed: u64,
    /// Fraction (0–1) of the lamps and toilets on RS-485 lines behind Modbus TCP converters.
    #[serde(default)]
    pub modbus_tcp_fraction: f64,
    /// Fraction (0–1) of the lamps and toilets on RS-485 lines read over Modbus RTU (virtual
    /// serial pairs); with `modbus_tcp_fraction`, at most 1. The rest report over MQTT.
    #[serde(default)]
    pub modbus_rtu_fraction: f64,
    /// Wire encoding of the MQTT devices: `binary` (default) or `json`.
    #[serde(default)]
    pub encoding: WireEncoding,
    /// Local time (UTC+8) at the start, hours, on 2024-12-21 (the longest night); 18 = dusk.
    #[serde(default = "dusk")]
    pub start_hour: f64,
    /// Faults, in time order.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Cases that must be raised.
    #[serde(default, rename = "expect")]
    pub expect: Vec<CaseMatch>,
    /// The gateway must have rejected at least this many messages (malformed payloads).
    #[serde(default)]
    pub min_rejected: u64,
    /// The gateway must have recognised exactly this many fleet-wide outages (unset: any).
    #[serde(default)]
    pub fleet_outages: Option<u64>,
    /// Case types that must not be raised.
    #[serde(default, rename = "forbid")]
    pub forbid: Vec<CaseMatch>,
    /// Every case raised must match an `[[expect]]`, or be a `bin_full` / `bin_overflow` case
    /// of a bin that really was full: any other case is a false alarm. (Without it, only the
    /// `[[forbid]]` cases and unexpected `device_offline` cases are false alarms.)
    #[serde(default)]
    pub strict: bool,
    /// Simulated maintenance teams work the dispatched cases through the gateway's API and
    /// their crews repair the world. Absent: dispatched cases wait.
    #[serde(default)]
    pub teams: Option<TeamsConfig>,
    /// The city's bin collection rounds. Absent: bins are emptied only by a fault or a crew.
    #[serde(default)]
    pub collection: Option<Collection>,
    /// How full the bins start and how fast they fill. Absent: empty, 2 % an hour.
    #[serde(default)]
    pub bins: Option<BinFill>,
}

/// Collection rounds: every bin emptied at `first_s` and every `every_s` after.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    /// First round, simulated s after the start.
    pub first_s: u64,
    /// Between rounds, simulated s.
    pub every_s: u64,
}

/// Bins of the city: each starts at a fill and fills at a rate drawn (seeded by the city) from
/// these ranges.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinFill {
    /// Fill at the start, % (low, high).
    pub initial_pct: [f64; 2],
    /// Filling rate, % an hour (low, high).
    pub rate_pct_h: [f64; 2],
}

/// A bin is really full (for `strict`) at this true fill, %: the gateway's `bin_full` limit.
const FULL_PCT: f64 = 80.0;

fn one() -> u64 {
    1
}

fn dusk() -> f64 {
    18.0
}

/// How MQTT devices encode their messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEncoding {
    /// Postcard behind the 0xB1 magic byte.
    #[default]
    Binary,
    /// JSON.
    Json,
}

/// 2024-12-21 00:00 Beijing time (UTC+8), Unix ms.
const SOLSTICE_MIDNIGHT_MS: u64 = 1_734_710_400_000;

/// A scripted fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Simulated seconds after the start.
    pub at_s: u64,
    /// What happens.
    pub kind: FaultKind,
    /// To which devices (none for `broker_outage`, which cuts every device).
    #[serde(default)]
    pub devices: Vec<String>,
    /// How long it lasts, simulated s; it is undone after (power back, network back, the
    /// sensor stops flapping). Unset: for the rest of the run.
    #[serde(default)]
    pub duration_s: Option<u64>,
}

/// What a fault does to the physical model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The LED module fails.
    LampBurnout,
    /// The lamp is repaired.
    LampRepair,
    /// The feeder loses supply.
    SupplyLoss,
    /// Leakage to earth.
    Leakage,
    /// The cover is lifted off.
    CoverLift,
    /// The cover is put back.
    CoverReplace,
    /// The bin overflows.
    BinOverflow,
    /// The bin is emptied.
    BinCollect,
    /// The bin burns.
    BinFire,
    /// The toilet's fan fails on a busy day.
    ToiletFanFailure,
    /// Relay contacts welded closed: the lamp burns by day.
    RelayWelded,
    /// Water rises in the well.
    WaterRising,
    /// The cover is knocked out of its seat by traffic and sits tilted (15°), not lifted off.
    CoverDisplaced,
    /// The battery is nearly flat (15 % left): a planned replacement.
    BatteryDrain,
    /// The node loses power: no clean disconnect, so the broker publishes its last will.
    DeviceOffline,
    /// Every device loses the broker (connections cut and refused) for `duration_s`; the
    /// firmware holds its messages until the link is back.
    BrokerOutage,
    /// The sensor flaps: the cover is lifted and put back every 40 simulated seconds.
    Flapping,
    /// The node's firmware sends 40 malformed payloads.
    MalformedPayloads,
}

/// Flapping period, simulated s.
const FLAP_PERIOD_S: u64 = 40;

/// A case to look for: its type and, optionally, its subject key (`device:ID`, `segment:S`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseMatch {
    /// Case type (`lamp_fault`, `manhole_cover`, ...).
    pub case_type: String,
    /// Subject key; any subject when absent.
    pub subject: Option<String>,
    /// Subjects this match leaves out (a forbidden type except where a case is expected).
    #[serde(default)]
    pub except: Vec<String>,
    /// The case must (true) or must not (false) still be open at the end of the run: a fault
    /// nobody repaired keeps its case open; a fault that went away closes it.
    #[serde(default)]
    pub open: Option<bool>,
    /// The states the case went through, in order, exactly (its history's `to` states, e.g.
    /// `["registered", "dispatched", "accepted", "resolved", "verified", "closed"]`; events that
    /// leave the state as it was, such as an escalation, are not states gone through).
    #[serde(default)]
    pub lifecycle: Option<Vec<CaseState>>,
    /// Registered at most this long after the fault struck its first device, simulated s.
    #[serde(default)]
    pub raised_within_s: Option<u64>,
    /// Closed at most this long after the fault struck, simulated s.
    #[serde(default)]
    pub closed_within_s: Option<u64>,
    /// Exactly this many reworks (verification failures and recurrences).
    #[serde(default)]
    pub reworks: Option<u32>,
    /// The case lists exactly these devices (a segment case: its dark lamps).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// The case is (true) or is not (false) urgent.
    #[serde(default)]
    pub urgent: Option<bool>,
    /// The case was dispatched to this team.
    #[serde(default)]
    pub team: Option<String>,
}

impl CaseMatch {
    fn matches(&self, c: &CaseRecord) -> bool {
        case_type_name(c) == self.case_type
            && self.subject.as_ref().is_none_or(|s| *s == c.subject_key)
            && !self.except.contains(&c.subject_key)
            && self.open.is_none_or(|open| open != c.state.is_terminal())
    }
}

fn case_type_name(c: &CaseRecord) -> String {
    serde_json::to_value(c.case_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Scenario {
    /// Read and check a scenario file; errors name the file, line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parse scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => anyhow::anyhow!("line {l}: {}", e.message()),
                None => anyhow::anyhow!("{}", e.message()),
            }
        })?;
        anyhow::ensure!(s.devices > 0, "devices: must be at least 1");
        anyhow::ensure!(s.speed > 0.0, "speed: must be positive");
        for (key, f) in [
            ("modbus_tcp_fraction", s.modbus_tcp_fraction),
            ("modbus_rtu_fraction", s.modbus_rtu_fraction),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&f), "{key}: a fraction 0..=1, not {f}");
        }
        anyhow::ensure!(
            s.modbus_tcp_fraction + s.modbus_rtu_fraction <= 1.0,
            "modbus_tcp_fraction + modbus_rtu_fraction: at most 1 in all"
        );
        anyhow::ensure!(
            (0.0..24.0).contains(&s.start_hour),
            "start_hour: 0 to 24 (local time), not {}",
            s.start_hour
        );
        if let Some(b) = &s.bins {
            for (key, [lo, hi]) in [
                ("bins.initial_pct", b.initial_pct),
                ("bins.rate_pct_h", b.rate_pct_h),
            ] {
                anyhow::ensure!(
                    lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= 140.0,
                    "{key}: [low, high] with 0 <= low <= high <= 140, not [{lo}, {hi}]"
                );
            }
        }
        if let Some(c) = &s.collection {
            anyhow::ensure!(c.every_s > 0, "collection.every_s: at least 1");
        }
        for (i, f) in s.faults.iter().enumerate() {
            let needs_devices = f.kind != FaultKind::BrokerOutage;
            anyhow::ensure!(
                !needs_devices || !f.devices.is_empty(),
                "fault {} ({:?}): devices: name at least one device",
                i + 1,
                f.kind
            );
            anyhow::ensure!(
                !matches!(f.kind, FaultKind::BrokerOutage | FaultKind::Flapping)
                    || f.duration_s.is_some(),
                "fault {} ({:?}): duration_s: required for this fault",
                i + 1,
                f.kind
            );
        }
        Ok(s)
    }
}

/// Strike (`on`) or undo a fault on one node; `t` is the simulated time since the start.
fn apply(kind: FaultKind, node: &mut SimNode, on: bool, t: u64) {
    match kind {
        FaultKind::DeviceOffline => {
            node.powered = !on;
            return;
        }
        FaultKind::BrokerOutage => {
            node.link_cut = on;
            return;
        }
        FaultKind::MalformedPayloads => {
            if on {
                node.malformed += 40;
            }
            return;
        }
        // The busy evening ends; the fan stays broken until a crew replaces it.
        FaultKind::ToiletFanFailure if !on => {
            if let World::Toilet(a) = &node.world {
                a.borrow_mut().usage_per_h = 20.0;
            }
            return;
        }
        FaultKind::Flapping => {
            if let World::Cover(c) = &node.world {
                c.borrow_mut().lifted = on && (t / FLAP_PERIOD_S).is_multiple_of(2);
            }
            return;
        }
        _ if !on => return,
        _ => {}
    }
    match (kind, &node.world) {
        (FaultKind::RelayWelded, World::Lamp(l)) => l.borrow_mut().relay_stuck = Some(true),
        (FaultKind::WaterRising, World::Cover(c)) => c.borrow_mut().water_cm = 180.0,
        (FaultKind::CoverDisplaced, World::Cover(c)) => c.borrow_mut().tilt_deg = 15.0,
        (FaultKind::BatteryDrain, _) => {
            let mut b = node.battery.borrow_mut();
            b.used_mah = b.used_mah.max(b.capacity_mah * 0.85);
        }
        (FaultKind::LampBurnout, World::Lamp(l)) => l.borrow_mut().burnt_out = true,
        (FaultKind::LampRepair, World::Lamp(l)) => {
            let mut l = l.borrow_mut();
            l.burnt_out = false;
            l.supply_v = 230.0;
            l.leakage_ma = 0.5;
        }
        (FaultKind::SupplyLoss, World::Lamp(l)) => l.borrow_mut().supply_v = 0.0,
        (FaultKind::Leakage, World::Lamp(l)) => l.borrow_mut().leakage_ma = 60.0,
        (FaultKind::CoverLift, World::Cover(c)) => c.borrow_mut().lifted = true,
        (FaultKind::CoverReplace, World::Cover(c)) => c.borrow_mut().lifted = false,
        (FaultKind::BinOverflow, World::Bin(b)) => b.borrow_mut().fill_pct = 115.0,
        (FaultKind::BinCollect, World::Bin(b)) => b.borrow_mut().collect(),
        (FaultKind::BinFire, World::Bin(b)) => b.borrow_mut().on_fire = true,
        (FaultKind::ToiletFanFailure, World::Toilet(a)) => {
            let mut a = a.borrow_mut();
            a.fan_ok = false;
            a.usage_per_h = 80.0;
        }
        _ => {}
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Expected cases raised / expected.
    pub found: usize,
    /// Expected cases.
    pub expected: usize,
    /// Expectations not met.
    pub missed: Vec<String>,
    /// Forbidden cases raised.
    pub false_alarms: Vec<String>,
    /// Keys with more than one case open at the same time.
    pub duplicates: usize,
    /// Fault-to-case times, simulated ms, sorted.
    pub latencies_ms: Vec<i64>,
    /// Messages the gateway rejected (malformed, unknown device, ...).
    pub rejected: u64,
    /// The scenario's `min_rejected`.
    pub min_rejected: u64,
    /// Fleet-wide outages the gateway recognised.
    pub fleet_outages: u64,
    /// The scenario's `fleet_outages`.
    pub expected_fleet_outages: Option<u64>,
    /// Every case raised: type, subject, state.
    pub cases: Vec<String>,
    /// The expected cases' lifecycles: fault to raised, accepted, resolved and closed, and
    /// reworks (simulated s), for those with lifecycle expectations.
    pub lifecycles: Vec<String>,
    /// Case events the demo's terminal would print (one line per transition).
    pub event_lines: usize,
}

impl Report {
    /// No miss, no false alarm, no duplicate.
    pub fn passed(&self) -> bool {
        self.missed.is_empty()
            && self.false_alarms.is_empty()
            && self.duplicates == 0
            && self.rejected >= self.min_rejected
            && self
                .expected_fleet_outages
                .is_none_or(|n| n == self.fleet_outages)
    }

    fn percentile(&self, p: f64) -> Option<i64> {
        let n = self.latencies_ms.len();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        (n > 0).then(|| self.latencies_ms[((n as f64 - 1.0) * p).round() as usize])
    }

    /// Human-readable report; `speed` converts simulated to wall time.
    pub fn render(&self, name: &str, speed: f64) -> String {
        let pct = |p| {
            self.percentile(p).map_or("-".to_owned(), |ms| {
                #[allow(clippy::cast_precision_loss)]
                let (sim_s, wall_ms) = (ms as f64 / 1000.0, ms as f64 / speed);
                format!("{sim_s:.0} s simulated / {wall_ms:.0} ms wall")
            })
        };
        let mut out = format!(
            "scenario {name}: {}\n  recall      {}/{}\n  false alarms {}\n  duplicates  {}\n  cases       {}\n  fault→case  p50 {}, p99 {}\n",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.found,
            self.expected,
            self.false_alarms.len(),
            self.duplicates,
            self.cases.len(),
            pct(0.5),
            pct(0.99),
        );
        if self.min_rejected > 0 || self.rejected > 0 {
            out.push_str(&format!(
                "  rejected    {} messages (at least {} expected)\n",
                self.rejected, self.min_rejected
            ));
        }
        if let Some(n) = self.expected_fleet_outages {
            out.push_str(&format!(
                "  outages     {} fleet-wide outages recognised ({n} expected)\n",
                self.fleet_outages
            ));
        }
        for c in &self.cases {
            out.push_str(&format!("  case        {c}\n"));
        }
        if self.event_lines > 0 {
            out.push_str(&format!(
                "  events      {} terminal lines, one per transition\n",
                self.event_lines
            ));
        }
        for l in &self.lifecycles {
            out.push_str(&format!("  lifecycle   {l}\n"));
        }
        for m in &self.missed {
            out.push_str(&format!("  MISSED      {m}\n"));
        }
        for f in &self.false_alarms {
            out.push_str(&format!("  FALSE ALARM {f}\n"));
        }
        out
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// When each device was first struck, simulated Unix ms.
type Struck = Arc<Mutex<BTreeMap<String, i64>>>;
/// Per bin, the spans (simulated Unix ms, end open while still full) when it was really full.
type FullSpans = Arc<Mutex<BTreeMap<String, Vec<(i64, Option<i64>)>>>>;

/// The read-only user whose token reads the counts through the API.
pub const DISPLAY_USER: &str = "centre.display";

/// A scenario running against a gateway in this process: its fleet, its script and its teams.
#[derive(Debug)]
pub struct Running {
    /// The gateway.
    pub gw: app::Running,
    /// A read-only (viewer) API token of the gateway.
    pub api_token: String,
    /// The teams' members the simulated teams act as.
    pub members: Vec<teams::Member>,
    /// The fleet.
    fleet: Fleet,
    teams: Option<tokio::task::JoinHandle<()>>,
    struck: Struck,
    full: FullSpans,
    /// Simulated Unix ms at the start of the script.
    pub start_ms: i64,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Devices in the city.
    pub devices: usize,
}

/// Start a scenario against a gateway started with `config` (its clock is set to the fleet's):
/// the gateway, the inventory, the fleet with the scripted faults, collection rounds and the
/// teams. Returns once simulated time has started (the fleet has had its lead-in to connect)
/// and every device is commissioned.
pub async fn launch(s: &Scenario, mut config: Config) -> anyhow::Result<Running> {
    // The gateway runs on the fleet's simulated clock.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let start_unix_ms = SOLSTICE_MIDNIGHT_MS + (s.start_hour * 3_600_000.0) as u64;
    // Simulated time starts once the gateway is up and the fleet has had time to connect
    // (1.5 s, plus 5 ms per device: a loaded machine connects a few hundred clients a second).
    let lead_ms = 1500 + i64::try_from(s.devices).unwrap_or(0).saturating_mul(5);
    let mut fleet_config = FleetConfig {
        speed: s.speed,
        anchor_wall_ms: Some(wall_ms() + lead_ms),
        start_unix_ms,
        encoding: match s.encoding {
            WireEncoding::Binary => Encoding::Binary,
            WireEncoding::Json => Encoding::Json,
        },
        ..FleetConfig::default()
    };
    let start_ms = i64::try_from(fleet_config.start_unix_ms).unwrap_or(0);
    let anchor = fleet_config.anchor_wall_ms.unwrap_or(0);
    config.clock = fleet_config.gateway_clock();
    // Poll Modbus units every 30 simulated seconds (at most 5 polls per wall second).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    {
        config.modbus.poll_interval_ms = ((30_000.0 / s.speed) as u64).max(200);
        config.modbus.max_backoff_ms = config.modbus.poll_interval_ms.max(1000);
        // Loopback converters answer in well under a millisecond; a silent unit holds its
        // line for the whole timeout, as on a real half-duplex bus.
        config.modbus.request_timeout_ms = 300;
    }
    // The simulated converters listen on loopback and the RTU lines are pseudo-terminals, which
    // the gateway's defaults do not allow.
    if s.modbus_tcp_fraction > 0.0 {
        config
            .modbus
            .allowed_endpoints
            .push("127.0.0.1/32".to_owned());
    }
    if s.modbus_rtu_fraction > 0.0 {
        config.modbus.allowed_serial.push("/dev/pts/*".to_owned());
    }
    let team_names: Vec<String> = config
        .routing
        .router()
        .routes
        .values()
        .flat_map(|r| r.values().cloned())
        .collect();
    let gw = app::start(config).await.context("starting the gateway")?;
    // Who reads and works the cases through the API: a read-only display for the counts, and
    // one member per team.
    let now = streetgate_gateway::clock::wall_ms();
    let store = gw.state.store.as_ref();
    if store.user_by_name(DISPLAY_USER).await?.is_none() {
        streetgate_gateway::auth::add_user(
            store,
            DISPLAY_USER,
            streetgate_gateway::auth::Role::Viewer,
            None,
            None,
            None,
            now,
        )
        .await?;
    }
    let (_, api_token) = streetgate_gateway::auth::issue_token(
        store,
        DISPLAY_USER,
        "status line",
        None,
        None,
        None,
        None,
        "streetgate-sim",
        now,
    )
    .await?;
    let members = match &s.teams {
        Some(_) => teams::enlist(store, team_names, now).await?,
        None => Vec::new(),
    };
    let city = City::generate(&CityConfig {
        devices: s.devices,
        seed: s.seed,
        modbus_tcp_fraction: s.modbus_tcp_fraction,
        modbus_rtu_fraction: s.modbus_rtu_fraction,
        ..CityConfig::default()
    });
    // Converters and serial lines first: the inventory names their ports.
    let converters = Converters::bind(&city, ConverterConfig::default())
        .await
        .context("binding the Modbus converters and serial lines")?;
    let csv = city.to_csv_with(&converters.addrs(), &converters.serial_paths())?;
    let devices =
        inventory::parse_csv(csv.as_bytes()).map_err(|e| anyhow::anyhow!("inventory: {e}"))?;
    // The MQTT devices are commissioned now (they connect and announce themselves during the
    // lead-in); the wired ones when the fleet boots: a poller started earlier would find their
    // units silent (not booted) and report them offline.
    let (wired, cellular): (Vec<_>, Vec<_>) = devices
        .into_iter()
        .partition(|d| d.transport != streetgate_gateway::model::Transport::Mqtt);
    gw.state
        .store
        .upsert_devices(&cellular, gw.state.clock.now_ms())
        .await
        .context("inventory")?;
    // Each MQTT device gets its own secret, as registering it through the API would give it.
    let ids: Vec<String> = cellular.iter().map(|d| d.id.to_string()).collect();
    let issued = streetgate_gateway::inventory::credentials::issue(
        gw.state.store.as_ref(),
        &gw.state.device_auth,
        &ids,
        gw.state.clock.now_ms(),
    )
    .await
    .context("device credentials")?;
    fleet_config.credentials =
        std::sync::Arc::new(issued.into_iter().map(|c| (c.id, c.password)).collect());
    gw.state.inventory.upsert(cellular);
    let broker = gw.broker_addr.context("embedded broker")?;
    for f in &s.faults {
        for id in &f.devices {
            anyhow::ensure!(
                city.devices.iter().any(|d| d.id == *id),
                "fault {:?} at {} s: no device {id} in a city of {} devices",
                f.kind,
                f.at_s,
                s.devices
            );
        }
    }

    let struck: Struck = Arc::default();
    let full: FullSpans = Arc::default();
    let (crews, jobs) = std::sync::mpsc::channel::<teams::CrewJob>();
    let script = {
        let (struck, full) = (struck.clone(), full.clone());
        // (fault, struck, undone)
        let mut faults: Vec<(Fault, bool, bool)> =
            s.faults.iter().map(|f| (f.clone(), false, false)).collect();
        let (bins, collection, seed) = (s.bins, s.collection, s.seed);
        let mut next_round = collection.map(|c| c.first_s);
        let mut filled = false;
        move |t: u64, nodes: &mut [SimNode]| {
            let now_ms = start_ms + i64::try_from(t).unwrap_or(0) * 1000;
            if let (Some(b), false) = (bins, filled) {
                // Each bin as the night finds it.
                let mut noise = Noise::new(seed ^ 0xB1B1);
                for n in nodes.iter_mut() {
                    if let World::Bin(bin) = &n.world {
                        let mut bin = bin.borrow_mut();
                        bin.fill_pct =
                            b.initial_pct[0] + noise.unit() * (b.initial_pct[1] - b.initial_pct[0]);
                        bin.rate_pct_h =
                            b.rate_pct_h[0] + noise.unit() * (b.rate_pct_h[1] - b.rate_pct_h[0]);
                    }
                }
                filled = true;
            }
            if let (Some(c), Some(round)) = (collection, next_round) {
                if t >= round {
                    for n in nodes.iter_mut() {
                        if let World::Bin(b) = &n.world {
                            b.borrow_mut().collect();
                        }
                    }
                    next_round = Some(round + c.every_s.max(1));
                }
            }
            teams::carry_out(&jobs, nodes);
            for (f, done_on, done_off) in &mut faults {
                let end = f.duration_s.map(|d| f.at_s + d);
                let strike = !*done_on && t >= f.at_s;
                let flap = *done_on && !*done_off && f.kind == FaultKind::Flapping;
                let undo = *done_on && !*done_off && end.is_some_and(|e| t >= e);
                if !(strike || flap || undo) {
                    continue;
                }
                for n in nodes.iter_mut() {
                    let id = n.node().id().as_str().to_owned();
                    if !f.devices.is_empty() && !f.devices.contains(&id) {
                        continue;
                    }
                    if strike {
                        apply(f.kind, n, true, t);
                        if f.kind == FaultKind::BrokerOutage {
                            // Not a fault of the devices: no case should follow from it.
                            continue;
                        }
                        struck
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(id)
                            .or_insert(now_ms);
                    } else if undo {
                        apply(f.kind, n, false, t);
                    } else {
                        apply(f.kind, n, true, t);
                    }
                }
                *done_on |= strike;
                *done_off |= undo;
            }
            // When each bin is really full (a `bin_full` case for it is no false alarm then).
            let mut full = full.lock().unwrap_or_else(PoisonError::into_inner);
            for n in nodes.iter() {
                if let World::Bin(b) = &n.world {
                    let is_full = b.borrow().fill_pct >= FULL_PCT;
                    let spans = full.entry(n.node().id().as_str().to_owned()).or_default();
                    match spans.last_mut() {
                        Some((_, end @ None)) if !is_full => *end = Some(now_ms),
                        Some((_, None)) => {}
                        _ if is_full => spans.push((now_ms, None)),
                        _ => {}
                    }
                }
            }
        }
    };
    fleet_config.broker_host = broker.ip().to_string();
    fleet_config.broker_port = broker.port();
    let fleet = Fleet::start_wired(
        &city,
        fleet_config,
        tokio::runtime::Handle::current(),
        Box::new(script),
        converters,
    );
    let teams = s.teams.clone().map(|cfg| {
        tokio::spawn(teams::work(
            cfg,
            format!("http://{}", gw.http_addr),
            gw.state.clock,
            crews,
            members.clone(),
        ))
    });
    // Simulated time starts at the anchor.
    let lead = anchor - wall_ms();
    if lead > 0 {
        tokio::time::sleep(Duration::from_millis(lead.unsigned_abs())).await;
    }
    if !wired.is_empty() {
        // One tick in: every unit has booted and holds its first register image.
        #[allow(clippy::cast_precision_loss)]
        tokio::time::sleep(Duration::from_secs_f64(20.0 / s.speed)).await;
        gw.state
            .store
            .upsert_devices(&wired, gw.state.clock.now_ms())
            .await
            .context("inventory")?;
        gw.state.inventory.upsert(wired);
    }
    Ok(Running {
        gw,
        api_token,
        members,
        fleet,
        teams,
        struck,
        full,
        start_ms,
        speed: s.speed,
        devices: city.devices.len(),
    })
}

/// Cases as the demo's status line counts them: open cases by type, and closed cases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Open cases by type (types with none left out), sorted by type.
    pub open: BTreeMap<String, u64>,
    /// Closed cases.
    pub closed: u64,
}

impl Counts {
    /// From the store, as the demo's status line reads them.
    pub async fn from_store(store: &dyn Store) -> anyhow::Result<Self> {
        let open = store
            .open_case_counts()
            .await?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        let (closed, _) = store
            .list_cases(&CaseFilter {
                state: Some(CaseState::Closed),
                limit: 1,
                ..CaseFilter::default()
            })
            .await?;
        Ok(Self { open, closed })
    }

    /// From the HTTP API (`GET /api/cases`), as anyone checking the line would.
    pub async fn from_api(api: &str, token: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let get = |q: &'static str| {
            let client = client.clone();
            let url = format!("{api}/api/cases?{q}");
            async move {
                anyhow::Ok(
                    client
                        .get(&url)
                        .bearer_auth(token)
                        .send()
                        .await?
                        .error_for_status()?
                        .json::<serde_json::Value>()
                        .await?,
                )
            }
        };
        let mut open = BTreeMap::new();
        let body = get("open=true&limit=10000").await?;
        for c in body["cases"].as_array().into_iter().flatten() {
            let t = c["case_type"].as_str().unwrap_or_default().to_owned();
            *open.entry(t).or_default() += 1;
        }
        let closed = get("state=closed&limit=1").await?["total"]
            .as_u64()
            .unwrap_or(0);
        Ok(Self { open, closed })
    }

    /// `closed N | open cases: type n, ...`, the status line's case part.
    pub fn line(&self) -> String {
        let open: Vec<String> = self.open.iter().map(|(t, n)| format!("{t} {n}")).collect();
        format!(
            "closed {} | open cases: {}",
            self.closed,
            if open.is_empty() {
                "none".to_owned()
            } else {
                open.join(", ")
            }
        )
    }
}

impl Running {
    /// Simulated seconds since the start of the script.
    pub fn sim_s(&self) -> i64 {
        (self.gw.state.clock.now_ms() - self.start_ms) / 1000
    }

    /// Live counters of the fleet.
    pub fn fleet_stats(&self) -> Arc<crate::fleet::FleetStats> {
        self.fleet.stats.clone()
    }

    /// Stop the teams and the fleet, then the gateway.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(t) = &self.teams {
            t.abort();
        }
        self.fleet.stop();
        self.gw.shutdown().await
    }

    /// Stop the fleet and the teams, judge the run against the scenario, stop the gateway.
    pub async fn finish(self, s: &Scenario) -> anyhow::Result<Report> {
        // Let the last messages through the pipeline.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(t) = &self.teams {
            t.abort();
        }
        let start_ms = self.start_ms;
        // Counted, and the cases read, before the fleet stops: devices whose connections close
        // as the simulation ends are not an outage of the city's network (nor its case).
        let fleet_outages = self
            .gw
            .state
            .metrics
            .fleet_outages
            .load(std::sync::atomic::Ordering::Relaxed);
        let gw = self.gw;
        // The status line's counts and the API's, read back to back (the gateway still ticks:
        // a verification may close a case in between, so a mismatch is read again).
        let api = format!("http://{}", gw.http_addr);
        let mut counts = (Counts::default(), Counts::default());
        for _ in 0..5 {
            counts = (
                Counts::from_store(gw.state.store.as_ref()).await?,
                Counts::from_api(&api, &self.api_token).await?,
            );
            if counts.0 == counts.1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, cases) = gw
            .state
            .store
            .list_cases(&CaseFilter {
                limit: 10_000,
                ..CaseFilter::default()
            })
            .await
            .context("reading cases")?;
        // The terminal's event lines, one per transition, as the demo prints them.
        let events = gw
            .state
            .store
            .case_events_after(0, 1_000_000)
            .await
            .context("reading case events")?;
        let mut event_problems = Vec::new();
        for e in &events {
            let line = crate::demo::event_line(e);
            let place = e.case.subject_key.split_once(':').map_or("", |(_, p)| p);
            let names_it = line.contains(&format!("case {}", e.case.id))
                && line.contains(&case_type_name(&e.case))
                && line.contains(place)
                && (e.entry.from.is_none() || line.contains('→'));
            if !names_it {
                event_problems.push(format!(
                    "event line without its case, type, place or transition: {line}"
                ));
            }
            // A team's part of the case is done by its member, under the member's own name.
            let teams_part = matches!(e.entry.to, CaseState::Accepted | CaseState::Resolved)
                && e.entry.from != Some(e.entry.to);
            let member = self
                .members
                .iter()
                .find(|m| Some(&m.team) == e.case.team.as_ref());
            if teams_part && member.is_none_or(|m| m.name != e.entry.actor) {
                event_problems.push(format!(
                    "case {} moved to {:?} by {:?}, not by a member of its team {:?}",
                    e.case.id, e.entry.to, e.entry.actor, e.case.team
                ));
            }
        }
        // Each case's history, from the same events the terminal prints.
        let mut histories: BTreeMap<i64, Vec<streetgate_gateway::store::CaseHistoryEntry>> =
            BTreeMap::new();
        for e in &events {
            histories
                .entry(e.case.id)
                .or_default()
                .push(e.entry.clone());
        }
        let struck = self
            .struck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if std::env::var_os("STREETGATE_SIM_DEBUG").is_some() {
            for c in &cases {
                eprintln!(
                    "case {} {} {} opened at {} s, devices {:?}",
                    c.id,
                    case_type_name(c),
                    c.subject_key,
                    (c.opened_ms - start_ms) / 1000,
                    c.devices
                );
                for h in histories.get(&c.id).into_iter().flatten() {
                    eprintln!(
                        "    +{:>5} s {:?} -> {:?} by {}: {}",
                        (h.at_ms - start_ms) / 1000,
                        h.from,
                        h.to,
                        h.actor,
                        h.note
                    );
                }
            }
            for id in struck.keys() {
                let latest = gw.state.store.latest_readings(id).await.unwrap_or_default();
                for r in latest {
                    eprintln!("{id} {} {}", r.reading_type, r.body);
                }
            }
        }
        self.fleet.stop();
        let rejected = gw.state.metrics.rejections().iter().map(|(_, n)| n).sum();
        gw.shutdown().await?;
        let full = self
            .full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut report = judge(
            s,
            &Judged {
                cases: &cases,
                histories: &histories,
                struck: &struck,
                full: &full,
                start_ms,
                rejected,
                fleet_outages,
                counts,
            },
        );
        report.event_lines = events.len();
        report.missed.extend(event_problems);
        Ok(report)
    }
}

/// What a run left behind, to be judged against its scenario.
struct Judged<'a> {
    cases: &'a [CaseRecord],
    histories: &'a BTreeMap<i64, Vec<streetgate_gateway::store::CaseHistoryEntry>>,
    struck: &'a BTreeMap<String, i64>,
    full: &'a BTreeMap<String, Vec<(i64, Option<i64>)>>,
    start_ms: i64,
    rejected: u64,
    fleet_outages: u64,
    counts: (Counts, Counts),
}

/// A bin case raised while (or up to 20 simulated minutes after) its bin was really full.
fn really_full(c: &CaseRecord, full: &BTreeMap<String, Vec<(i64, Option<i64>)>>) -> bool {
    matches!(case_type_name(c).as_str(), "bin_full" | "bin_overflow")
        && c.devices.iter().any(|d| {
            full.get(d.as_str()).is_some_and(|spans| {
                spans.iter().any(|(from, to)| {
                    *from <= c.opened_ms && to.is_none_or(|to| c.opened_ms <= to + 1_200_000)
                })
            })
        })
}

fn judge(s: &Scenario, run: &Judged<'_>) -> Report {
    let (cases, start_ms) = (run.cases, run.start_ms);
    let describe = |m: &CaseMatch| {
        format!(
            "{} {}{}",
            m.case_type,
            m.subject.as_deref().unwrap_or("(any subject)"),
            match m.open {
                Some(true) => ", still open",
                Some(false) => ", closed",
                None => "",
            }
        )
    };
    let mut missed: Vec<String> = s
        .expect
        .iter()
        .filter(|m| !cases.iter().any(|c| m.matches(c)))
        .map(describe)
        .collect();
    let at = |ms: i64| (ms - start_ms) / 1000;
    let mut false_alarms: Vec<String> = cases
        .iter()
        .filter(|c| {
            let kind = case_type_name(c);
            let bin_case = matches!(kind.as_str(), "bin_full" | "bin_overflow");
            // Expected by name, or by type alone; a bin case expected by type alone must still
            // be of a bin that really was full.
            let expected = s.expect.iter().any(|m| {
                m.case_type == kind
                    && match &m.subject {
                        Some(k) => *k == c.subject_key,
                        None => !bin_case,
                    }
            });
            s.forbid.iter().any(|m| m.matches(c))
                // In every scenario, strict or not, an offline case nobody expects is a false
                // alarm (start-up and reconnect storms included).
                || (case_type_name(c) == "device_offline" && !expected)
                || (s.strict && !expected && !really_full(c, run.full))
        })
        .map(|c| {
            format!(
                "{} {} at {} s: {}",
                case_type_name(c),
                c.subject_key,
                at(c.opened_ms),
                c.detail
            )
        })
        .collect();
    false_alarms.dedup();
    // Two cases for one key whose lifetimes overlap would be a deduplication failure.
    let mut by_key: BTreeMap<(String, Option<String>), Vec<&CaseRecord>> = BTreeMap::new();
    for c in cases {
        by_key
            .entry((c.subject_key.clone(), c.condition_key.clone()))
            .or_default()
            .push(c);
    }
    let duplicates = by_key
        .values()
        .map(|v| {
            v.windows(2)
                .filter(|w| {
                    w[0].closed_ms.is_none_or(|end| w[1].opened_ms < end)
                        && w[1].closed_ms.is_none_or(|end| w[0].opened_ms < end)
                })
                .count()
        })
        .sum();
    let struck_at = |c: &CaseRecord| {
        c.devices
            .iter()
            .filter_map(|d| run.struck.get(d.as_str()))
            .min()
            .copied()
    };
    // Fault to case, for the cases the scenario expects (a case that merely happens, a bin
    // filling up on its own, is not the answer to a fault).
    let mut latencies_ms: Vec<i64> = cases
        .iter()
        .filter(|c| s.expect.iter().any(|m| m.matches(c)))
        .filter_map(|c| struck_at(c).map(|t| c.opened_ms - t))
        .filter(|ms| *ms >= 0)
        .collect();
    latencies_ms.sort_unstable();
    // Lifecycles: the expected case's history, its reworks and its times.
    let mut lifecycles = Vec::new();
    for m in &s.expect {
        let wants_lifecycle = m.lifecycle.is_some()
            || m.raised_within_s.is_some()
            || m.closed_within_s.is_some()
            || m.reworks.is_some()
            || m.devices.is_some()
            || m.urgent.is_some()
            || m.team.is_some();
        if !wants_lifecycle {
            continue;
        }
        let Some(c) = cases.iter().find(|c| m.matches(c)) else {
            continue;
        };
        let history = run.histories.get(&c.id).cloned().unwrap_or_default();
        let states: Vec<CaseState> = history
            .iter()
            .filter(|h| h.from != Some(h.to))
            .map(|h| h.to)
            .collect();
        let fault = struck_at(c);
        let since = |ms: i64| fault.map_or(-1, |f| (ms - f) / 1000);
        let closed = c.closed_ms.filter(|_| c.state == CaseState::Closed);
        let mut problems = Vec::new();
        if let Some(want) = &m.lifecycle {
            if *want != states {
                problems.push(format!("went through {states:?}, not {want:?}"));
            }
        }
        if let Some(want) = &m.devices {
            let mut listed: Vec<String> = c.devices.iter().map(|d| d.as_str().to_owned()).collect();
            let mut want = want.clone();
            listed.sort();
            want.sort();
            if listed != want {
                problems.push(format!("lists devices {listed:?}, not {want:?}"));
            }
        }
        if let Some(urgent) = m.urgent {
            if c.urgent != urgent {
                problems.push(format!("urgent {}, not {urgent}", c.urgent));
            }
        }
        if let Some(team) = &m.team {
            if c.team.as_ref() != Some(team) {
                problems.push(format!("dispatched to {:?}, not {team}", c.team));
            }
        }
        if let Some(n) = m.reworks {
            if c.rework_count != n {
                problems.push(format!("{} reworks, not {n}", c.rework_count));
            }
        }
        if let Some(limit) = m.raised_within_s {
            let took = since(c.opened_ms);
            if fault.is_none() || took > i64::try_from(limit).unwrap_or(i64::MAX) {
                problems.push(format!("raised {took} s after the fault, limit {limit} s"));
            }
        }
        if let Some(limit) = m.closed_within_s {
            match closed {
                Some(t) if since(t) <= i64::try_from(limit).unwrap_or(i64::MAX) => {}
                Some(t) => problems.push(format!(
                    "closed {} s after the fault, limit {limit} s",
                    since(t)
                )),
                None => problems.push(format!("not closed (limit {limit} s)")),
            }
        }
        let step = |state: CaseState| {
            history
                .iter()
                .find(|h| h.to == state)
                .map_or("-".to_owned(), |h| format!("+{}", since(h.at_ms)))
        };
        lifecycles.push(format!(
            "{} {}: raised {} s, accepted {}, resolved {}, closed {} s after the fault; {} rework(s)",
            m.case_type,
            c.subject_key,
            since(c.opened_ms),
            step(CaseState::Accepted),
            step(CaseState::Resolved),
            closed.map_or("-".to_owned(), |t| format!("+{}", since(t))),
            c.rework_count
        ));
        if !problems.is_empty() {
            missed.push(format!("{}: {}", describe(m), problems.join("; ")));
        }
    }
    if run.counts.0 != run.counts.1 {
        missed.push(format!(
            "status line counts {} but the API {}",
            run.counts.0.line(),
            run.counts.1.line()
        ));
    }
    Report {
        rejected: run.rejected,
        min_rejected: s.min_rejected,
        fleet_outages: run.fleet_outages,
        expected_fleet_outages: s.fleet_outages,
        found: s.expect.len()
            - s.expect
                .iter()
                .filter(|m| !cases.iter().any(|c| m.matches(c)))
                .count(),
        expected: s.expect.len(),
        missed,
        false_alarms,
        duplicates,
        latencies_ms,
        lifecycles,
        event_lines: 0,
        cases: cases
            .iter()
            .map(|c| format!("{} {} {:?}", case_type_name(c), c.subject_key, c.state))
            .collect(),
    }
}

/// Run a scenario against a gateway started in this process (temporary store, ephemeral
/// ports), `progress` called with the fraction done.
pub async fn verify(s: &Scenario, mut progress: impl FnMut(f64)) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().context("address")?;
    config.broker.listen = "127.0.0.1:0".parse().context("address")?;
    config.store.path = dir.path().join("streetgate.db");
    let run = launch(s, config).await?;
    let started = Instant::now();
    #[allow(clippy::cast_precision_loss)]
    let wall = Duration::from_secs_f64(s.duration_s as f64 / s.speed);
    while started.elapsed() < wall {
        progress(started.elapsed().as_secs_f64() / wall.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress(1.0);
    run.finish(s).await
}
