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
//!
//! Each team acts as one of its members, a `team_member` user of the gateway with an API token
//! ([`enlist`]): the case history shows the member's name, and a member sees and works their
//! own team's cases only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use streetgate_gateway::auth::{self, Role};
use streetgate_gateway::clock::Clock;
use streetgate_gateway::store::Store;

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

/// A team's member the simulated team acts as.
#[derive(Debug, Clone)]
pub struct Member {
    /// The team.
    pub team: String,
    /// The member's user name (the actor in the case history).
    pub name: String,
    /// The member's API token.
    pub token: String,
}

/// Names of the teams' members, one per team in the order of the team names.
const NAMES: [&str; 8] = [
    "li.wei",
    "zhang.min",
    "wang.fang",
    "liu.yang",
    "chen.jie",
    "yang.lei",
    "zhao.hui",
    "huang.ting",
];

/// One member per team: a `team_member` user (created if missing) and an API token, made in
/// the gateway's store as `streetgate user add` and `user token` would.
pub async fn enlist(
    store: &dyn Store,
    teams: impl IntoIterator<Item = String>,
    now_ms: i64,
) -> anyhow::Result<Vec<Member>> {
    let teams: std::collections::BTreeSet<String> = teams.into_iter().collect();
    let mut members = Vec::new();
    for (i, team) in teams.into_iter().enumerate() {
        let name = NAMES
            .get(i)
            .map_or_else(|| format!("crew.{team}"), |n| (*n).to_owned());
        if store.user_by_name(&name).await?.is_none() {
            auth::add_user(
                store,
                &name,
                Role::TeamMember,
                Some(team.clone()),
                None,
                None,
                now_ms,
            )
            .await?;
        }
        let (_, token) = auth::issue_token(
            store,
            &name,
            "simulated team",
            None,
            None,
            None,
            None,
            "streetgate-sim",
            now_ms,
        )
        .await?;
        members.push(Member { team, name, token });
    }
    Ok(members)
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
/// (`http://host:port`) until the task is aborted, each as its member. `clock` is the
/// gateway's (simulated) clock.
pub async fn work(
    cfg: TeamsConfig,
    api: String,
    clock: Clock,
    crews: std::sync::mpsc::Sender<CrewJob>,
    members: Vec<Member>,
) {
    let client = reqwest::Client::new();
    let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let visits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        for member in &members {
            work_once(&cfg, &api, clock, &crews, member, &client, &busy, &visits).await;
        }
    }
}

/// One member's look at their team's dispatched cases.
#[allow(clippy::too_many_arguments)]
async fn work_once(
    cfg: &TeamsConfig,
    api: &str,
    clock: Clock,
    crews: &std::sync::mpsc::Sender<CrewJob>,
    member: &Member,
    client: &reqwest::Client,
    busy: &Arc<Mutex<HashSet<i64>>>,
    visits: &Arc<Mutex<HashMap<String, u32>>>,
) {
    {
        // The member sees their team's cases only.
        let Ok(response) = client
            .get(format!("{api}/api/cases?state=dispatched&limit=10000"))
            .bearer_auth(&member.token)
            .send()
            .await
        else {
            return;
        };
        let Ok(body) = response.json::<Value>().await else {
            return;
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
            let token = member.token.clone();
            let accepted = client
                .post(format!("{api}/api/cases/{id}/transitions"))
                .bearer_auth(&token)
                .json(&json!({ "action": "accept" }))
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
            let travel = clock.wall_duration(Duration::from_secs(cfg.travel_s));
            let on_site = clock.wall_duration(Duration::from_secs(cfg.work_s));
            let calling_in = clock.wall_duration(Duration::from_secs(cfg.report_s));
            let (client, api, crews, busy) =
                (client.clone(), api.to_owned(), crews.clone(), busy.clone());
            tokio::spawn(async move {
                tokio::time::sleep(travel).await;
                // The crew arrives and the team reports it on site (到场), once; a refusal (the
                // case moved on meanwhile) changes nothing.
                let _ = client
                    .post(format!("{api}/api/cases/{id}/transitions"))
                    .bearer_auth(&token)
                    .json(&json!({ "action": "on_site" }))
                    .send()
                    .await;
                tokio::time::sleep(on_site).await;
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
                        .bearer_auth(&token)
                        .json(&json!({ "action": "resolve", "note": note }))
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
