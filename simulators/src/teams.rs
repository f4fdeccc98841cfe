//! Simulated maintenance teams (作业队伍): they work the cases the gateway dispatches to them
//! through its HTTP API, as a team's app would, and their crews act on the simulated world.
//!
//! A team accepts a dispatched case after `accept_s`; accepting sends a crew that, after
//! `travel_s` on the road and `work_s` on site (simulated), really does the work in the world
//! the firmware measures (and calls it in `report_s` later): replaces the lamps, reseats the cover, empties the bin, replaces the
//! toilet's fan (and cleans it), restores a node's power or battery. Only then does the team
//! report the case resolved; the sensors then show the recovery, and the gateway verifies the
//! repair and closes the case. A device listed in `futile_first_visit` gets a first visit that
//! fixes nothing (the crew cleans the toilet but has no spare fan): the team reports it resolved
//! all the same, verification fails, and the case comes back as rework.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use streetgate_gateway::clock::Clock;

use crate::node::{SimNode, World};

/// How the simulated teams work (`[teams]` of a scenario file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// From dispatch to the team accepting, simulated s.
    #[serde(default = "accept_s")]
    pub accept_s: u64,
    /// The crew's travel to the site once the case is accepted, simulated s.
    #[serde(default = "travel_s")]
    pub travel_s: u64,
    /// The crew's work on site, simulated s; the team reports `resolved` when it is done.
    #[serde(default = "work_s")]
    pub work_s: u64,
    /// From the crew finishing to the team reporting `resolved` (the crew calls it in on the
    /// way back), simulated s.
    #[serde(default = "report_s")]
    pub report_s: u64,
    /// Devices whose first crew visit fixes nothing (rework follows); later visits repair.
    #[serde(default)]
    pub futile_first_visit: Vec<String>,
}

fn accept_s() -> u64 {
    120
}

fn travel_s() -> u64 {
    600
}

fn work_s() -> u64 {
    300
}

fn report_s() -> u64 {
    60
}

/// A crew's job in the world: the devices of one case, repaired (or not) at the fleet's next
/// tick; `done` gets what the crew did.
#[derive(Debug)]
pub struct CrewJob {
    /// Case type, as the API names it.
    pub case_type: String,
    /// The devices the case lists.
    pub devices: Vec<String>,
    /// The crew fixes nothing this visit.
    pub futile: bool,
    /// What the crew did, in a sentence.
    pub done: tokio::sync::oneshot::Sender<String>,
}

/// What a crew does to one node for a case type; returns what it did.
pub fn repair(case_type: &str, node: &mut SimNode, futile: bool) -> &'static str {
    if futile {
        if let World::Toilet(a) = &node.world {
            let mut a = a.borrow_mut();
            a.nh3_mg_m3 = a.nh3_mg_m3.min(0.5);
            a.h2s_mg_m3 = a.h2s_mg_m3.min(0.005);
            return "cleaned; the fan needs a part the crew did not carry";
        }
        return "inspected; nothing fixed";
    }
    match (case_type, &node.world) {
        ("device_offline", _) => {
            node.powered = true;
            "power restored"
        }
        ("low_battery", _) => {
            node.battery.borrow_mut().used_mah = 0.0;
            "battery replaced"
        }
        (_, World::Lamp(l)) => {
            let mut l = l.borrow_mut();
            l.burnt_out = false;
            l.relay_stuck = None;
            l.supply_v = 230.0;
            l.leakage_ma = 0.5;
            "lamp repaired"
        }
        (_, World::Cover(c)) => {
            let mut c = c.borrow_mut();
            c.lifted = false;
            c.tilt_deg = 0.0;
            c.water_cm = 0.0;
            "cover reseated, well pumped dry"
        }
        (_, World::Bin(b)) => {
            let mut b = b.borrow_mut();
            b.collect();
            b.on_fire = false;
            b.tipped = false;
            "bin emptied"
        }
        (_, World::Toilet(a)) => {
            let mut a = a.borrow_mut();
            a.fan_ok = true;
            a.nh3_mg_m3 = 0.1;
            a.h2s_mg_m3 = 0.002;
            "fan replaced, toilet cleaned"
        }
    }
}

/// Carry out the crew jobs that have reached the world (called by the fleet before a tick).
pub fn carry_out(jobs: &std::sync::mpsc::Receiver<CrewJob>, nodes: &mut [SimNode]) {
    while let Ok(job) = jobs.try_recv() {
        let mut did = Vec::new();
        for n in nodes.iter_mut() {
            let id = n.node().id().as_str().to_owned();
            if job.devices.contains(&id) {
                did.push(format!("{id}: {}", repair(&job.case_type, n, job.futile)));
            }
        }
        let _ = job.done.send(if did.is_empty() {
            "nothing found on site".to_owned()
        } else {
            did.join("; ")
        });
    }
}

/// The teams, working the cases of the gateway whose HTTP API is at `api`
/// (`http://host:port`) until the task is aborted. `clock` is the gateway's (simulated) clock.
pub async fn work(
    cfg: TeamsConfig,
    api: String,
    clock: Clock,
    crews: std::sync::mpsc::Sender<CrewJob>,
) {
    let client = reqwest::Client::new();
    let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let visits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let Ok(response) = client
            .get(format!("{api}/api/cases?state=dispatched&limit=10000"))
            .send()
            .await
        else {
            continue;
        };
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        let now = clock.now_ms();
        for case in body["cases"].as_array().into_iter().flatten() {
            let (Some(id), Some(updated)) = (case["id"].as_i64(), case["updated_ms"].as_i64())
            else {
                continue;
            };
            let accept_ms = i64::try_from(cfg.accept_s).unwrap_or(0) * 1000;
            if now - updated < accept_ms
                || busy
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&id)
            {
                continue;
            }
            let team = case["team"].as_str().unwrap_or("team").to_owned();
            let actor = format!("team:{team}");
            let accepted = client
                .post(format!("{api}/api/cases/{id}/transitions"))
                .json(&json!({ "actor": actor, "action": "accept" }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !accepted {
                continue;
            }
            busy.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
            let devices: Vec<String> = case["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect();
            let futile = {
                let mut v = visits.lock().unwrap_or_else(PoisonError::into_inner);
                let first = devices.iter().any(|d| {
                    cfg.futile_first_visit.contains(d) && v.get(d).copied().unwrap_or(0) == 0
                });
                for d in &devices {
                    *v.entry(d.clone()).or_default() += 1;
                }
                first
            };
            let job_case_type = case["case_type"].as_str().unwrap_or_default().to_owned();
            let on_road = clock.wall_duration(Duration::from_secs(cfg.travel_s + cfg.work_s));
            let calling_in = clock.wall_duration(Duration::from_secs(cfg.report_s));
            let (client, api, crews, busy) =
                (client.clone(), api.clone(), crews.clone(), busy.clone());
            tokio::spawn(async move {
                tokio::time::sleep(on_road).await;
                let (done, did) = tokio::sync::oneshot::channel();
                let sent = crews.send(CrewJob {
                    case_type: job_case_type,
                    devices,
                    futile,
                    done,
                });
                let note = match sent {
                    Ok(()) => did.await.unwrap_or_else(|_| "crew recalled".to_owned()),
                    Err(_) => "crew recalled".to_owned(),
                };
                tokio::time::sleep(calling_in).await;
                // Reported until the gateway has it (a refused report is not retried: the
                // case moved on, e.g. voided).
                for _ in 0..20 {
                    let r = client
                        .post(format!("{api}/api/cases/{id}/transitions"))
                        .json(&json!({ "actor": actor, "action": "resolve", "note": note }))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() || r.status().is_client_error() => break,
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                busy.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        }
    }
}
