//! The evaluation (考核) end to end: a hand-made case history whose figures are worked out
//! below from first principles, read back through the API on SQLite and on PostgreSQL (figure
//! by figure, the ranking with its red and black lists and the last-place flag, lighting
//! compliance from hand-made nightly figures, the CSV parsed back, the bulletin with a hostile
//! team name), and the monthly schedule writing each month's reports exactly once across
//! restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Gateway, eventually};
use serde_json::Value;
use streetgate_gateway::auth::Role;
use streetgate_gateway::config::{Config, StoreBackend};
use streetgate_gateway::evaluation::period::days_from_civil;
use streetgate_gateway::model::{CaseSource, CaseState, CaseType};
use streetgate_gateway::store::sql::postgres::scratch::{ScratchDatabase, server_url};
use streetgate_gateway::store::{CaseHistoryEntry, CaseInsert, CaseRecord, LightingDay, Store};

const G1: &str = "320508001001001";
const G2: &str = "320508001001002";
/// A team whose name is markup: the bulletin must show it as text.
const HOSTILE: &str = "<b>坏</b>&\"x\"";
const MIN: i64 = 60_000;

/// 2026-`m`-`d` `h`:`min` in the city's time zone (UTC+8, `alerts.utc_offset_min` = 480).
fn local(m: u32, d: u32, h: i64, min: i64) -> i64 {
    days_from_civil(2026, m, d) * 86_400_000 + (h - 8) * 3_600_000 + min * MIN
}

/// One history entry: action, time, actor, note (a dispatch's note names the team).
type Step = (&'static str, i64, &'static str, String);

fn state_after(action: &str, before: CaseState) -> CaseState {
    match action {
        "register" => CaseState::Registered,
        "dispatch" | "rework" | "reopen" => CaseState::Dispatched,
        "accept" => CaseState::Accepted,
        "return" => CaseState::Returned,
        "resolve" => CaseState::Resolved,
        "verify" | "self_recover" => CaseState::Verified,
        "close" => CaseState::Closed,
        "void" => CaseState::Voided,
        _ => before, // on_site, supervise, update
    }
}

/// Store a case registered at `opened` with a time limit of `limit_min`, and its history.
async fn add_case(
    store: &dyn Store,
    n: u32,
    case_type: CaseType,
    grid: &str,
    opened: i64,
    limit_min: i64,
    steps: &[Step],
) -> i64 {
    let mut case = CaseRecord {
        id: 0,
        case_type,
        source: CaseSource::Sensor,
        subject_key: format!("device:C{n}"),
        condition_key: Some("alarm:test".into()),
        grid: grid.into(),
        team: None,
        state: CaseState::Registered,
        urgent: false,
        devices: vec![],
        detail: format!("case C{n}"),
        opened_ms: opened,
        due_ms: Some(opened + limit_min * MIN),
        updated_ms: opened,
        closed_ms: None,
        condition_active: true,
        clear_since_ms: None,
        rework_count: 0,
        returned_count: 0,
        supervision_level: 0,
        on_site_due_ms: None,
        on_site_ms: None,
    };
    let register = CaseHistoryEntry {
        action: "register".into(),
        at_ms: opened,
        actor: "system".into(),
        from: None,
        to: CaseState::Registered,
        note: case.detail.clone(),
    };
    let CaseInsert::Created(id) = store.insert_case(&case, &register).await.unwrap() else {
        panic!("C{n} already open")
    };
    case.id = id;
    let mut entries = Vec::new();
    let mut state = CaseState::Registered;
    for (action, at, actor, note) in steps {
        let to = state_after(action, state);
        if *action == "dispatch" {
            case.team = note.strip_prefix("to ").map(str::to_owned);
        }
        if matches!(*action, "close" | "void") {
            case.closed_ms = Some(*at);
        }
        entries.push(CaseHistoryEntry {
            action: (*action).into(),
            at_ms: *at,
            actor: (*actor).into(),
            from: Some(state),
            to,
            note: note.clone(),
        });
        state = to;
        case.updated_ms = *at;
    }
    case.state = state;
    assert!(
        store
            .update_case(&case, CaseState::Registered, &entries)
            .await
            .unwrap()
    );
    id
}

fn s(action: &'static str, at: i64, actor: &'static str) -> Step {
    (action, at, actor, String::new())
}

fn to(team: &str, at: i64) -> Step {
    ("dispatch", at, "ops", format!("to {team}"))
}

/// The history (all times city time; "m" = minutes after registration or dispatch):
///
/// | case | type, grid, team | November | counts for |
/// |---|---|---|---|
/// | C1 | lamp_fault G1 lighting, limit 24 h | reg 2nd 10:00, accept +10m, on site +40m, resolve +120m, verify (system) and close +130m | on time |
/// | C2 | lamp_fault G1 lighting, 24 h | reg 5th 08:00, accept +30m, resolve 6th 09:00 (+1500m, late), verify by wang.fang and close +1520m | late |
/// | C3 | bin_full G2 sanitation, 4 h | reg 10th 09:00, accept +5m, on site +25m, resolve +60m, rework, resolve +120m, verify and close +130m | on time, reworked |
/// | C4 | bin_full G2 sanitation, 4 h | reg 12th 09:00, return +20m, dispatch again +30m, accept +40m, resolve +180m, close +190m | on time, 1 return, 2 dispatches |
/// | C5 | bin_overflow G2 sanitation, 4 h | reg 20th 14:00, self-recovered and closed +30m | closed, not handled |
/// | C6 | lamp_fault G1 lighting, 24 h | reg 25th 20:00, accept +20m, supervised level 1 (26th) and level 2 (27th) | overdue at the end |
/// | C7 | toilet_odour G1 HOSTILE, 4 h | reg 15th 10:00, accept +15m, resolve +60m, verify by zhao.lei and close +90m | on time |
/// | C8 | bin_full G2, 4 h | reg 18th 10:00, voided +5m | voided |
/// | C9 | lamp_fault G1 lighting, 24 h | reg Oct 30th 10:00, accepted in October; resolve Nov 1st 09:00 (+2820m, late), close 09:10 (+2830m) | late, not registered in November |
/// | C10 | lamp_fault G1 lighting | registered in December | nothing |
/// | C11 | bin_full G2 sanitation, 4 h | reg Oct 20th 09:00, dispatched, never accepted | overdue at the end |
/// | C12, C14 | lamp_fault G1 lighting | October 10th, September 10th: resolved late | lighting and G1 last then |
/// | C13, C15 | bin_full G2 sanitation | October 10th, September 10th: resolved on time | |
async fn fill(store: &dyn Store) {
    use CaseType as T;
    let (d2, d5, d10, d12) = (
        local(11, 2, 10, 0),
        local(11, 5, 8, 0),
        local(11, 10, 9, 0),
        local(11, 12, 9, 0),
    );
    add_case(
        store,
        1,
        T::LampFault,
        G1,
        d2,
        24 * 60,
        &[
            to("lighting", d2),
            s("accept", d2 + 10 * MIN, "li.wei"),
            s("on_site", d2 + 40 * MIN, "li.wei"),
            s("resolve", d2 + 120 * MIN, "li.wei"),
            s("verify", d2 + 130 * MIN, "system"),
            s("close", d2 + 130 * MIN, "system"),
        ],
    )
    .await;
    add_case(
        store,
        2,
        T::LampFault,
        G1,
        d5,
        24 * 60,
        &[
            to("lighting", d5),
            s("accept", d5 + 30 * MIN, "li.wei"),
            s("resolve", d5 + 1500 * MIN, "li.wei"),
            s("verify", d5 + 1520 * MIN, "wang.fang"),
            s("close", d5 + 1520 * MIN, "wang.fang"),
        ],
    )
    .await;
    add_case(
        store,
        3,
        T::BinFull,
        G2,
        d10,
        4 * 60,
        &[
            to("sanitation", d10),
            s("accept", d10 + 5 * MIN, "zhang.min"),
            s("on_site", d10 + 25 * MIN, "zhang.min"),
            s("resolve", d10 + 60 * MIN, "zhang.min"),
            s("rework", d10 + 70 * MIN, "system"),
            s("resolve", d10 + 120 * MIN, "zhang.min"),
            s("verify", d10 + 130 * MIN, "system"),
            s("close", d10 + 130 * MIN, "system"),
        ],
    )
    .await;
    add_case(
        store,
        4,
        T::BinFull,
        G2,
        d12,
        4 * 60,
        &[
            to("sanitation", d12),
            ("return", d12 + 20 * MIN, "zhang.min", "not ours".into()),
            to("sanitation", d12 + 30 * MIN),
            s("accept", d12 + 40 * MIN, "zhang.min"),
            s("resolve", d12 + 180 * MIN, "zhang.min"),
            s("verify", d12 + 190 * MIN, "sensor"),
            s("close", d12 + 190 * MIN, "system"),
        ],
    )
    .await;
    let d20 = local(11, 20, 14, 0);
    add_case(
        store,
        5,
        T::BinOverflow,
        G2,
        d20,
        4 * 60,
        &[
            to("sanitation", d20),
            s("self_recover", d20 + 30 * MIN, "system"),
            s("close", d20 + 30 * MIN, "system"),
        ],
    )
    .await;
    let d25 = local(11, 25, 20, 0);
    add_case(
        store,
        6,
        T::LampFault,
        G1,
        d25,
        24 * 60,
        &[
            to("lighting", d25),
            s("accept", d25 + 20 * MIN, "li.wei"),
            ("supervise", local(11, 26, 21, 0), "ops", "level 1".into()),
            (
                "supervise",
                local(11, 27, 9, 0),
                "ops",
                "level 2: district".into(),
            ),
        ],
    )
    .await;
    let d15 = local(11, 15, 10, 0);
    add_case(
        store,
        7,
        T::ToiletOdour,
        G1,
        d15,
        4 * 60,
        &[
            to(HOSTILE, d15),
            s("accept", d15 + 15 * MIN, "zhao.lei"),
            s("resolve", d15 + 60 * MIN, "zhao.lei"),
            s("verify", d15 + 90 * MIN, "zhao.lei"),
            s("close", d15 + 90 * MIN, "zhao.lei"),
        ],
    )
    .await;
    let d18 = local(11, 18, 10, 0);
    add_case(
        store,
        8,
        T::BinFull,
        G2,
        d18,
        4 * 60,
        &[("void", d18 + 5 * MIN, "ops", "duplicate".into())],
    )
    .await;
    let o30 = local(10, 30, 10, 0);
    add_case(
        store,
        9,
        T::LampFault,
        G1,
        o30,
        24 * 60,
        &[
            to("lighting", o30),
            s("accept", o30 + 30 * MIN, "li.wei"),
            s("resolve", local(11, 1, 9, 0), "li.wei"),
            s("verify", local(11, 1, 9, 10), "system"),
            s("close", local(11, 1, 9, 10), "system"),
        ],
    )
    .await;
    let dec = local(12, 2, 10, 0);
    add_case(
        store,
        10,
        T::LampFault,
        G1,
        dec,
        24 * 60,
        &[to("lighting", dec), s("accept", dec + MIN, "li.wei")],
    )
    .await;
    let o20 = local(10, 20, 9, 0);
    add_case(
        store,
        11,
        T::BinFull,
        G2,
        o20,
        4 * 60,
        &[to("sanitation", o20)],
    )
    .await;
    for (n, m) in [(12, 10), (14, 9)] {
        let t = local(m, 10, 10, 0);
        add_case(
            store,
            n,
            T::LampFault,
            G1,
            t,
            24 * 60,
            &[
                to("lighting", t),
                s("accept", t + 30 * MIN, "li.wei"),
                s("resolve", t + 48 * 60 * MIN, "li.wei"),
                s("verify", t + 49 * 60 * MIN, "system"),
                s("close", t + 49 * 60 * MIN, "system"),
            ],
        )
        .await;
        add_case(
            store,
            n + 1,
            T::BinFull,
            G2,
            t,
            4 * 60,
            &[
                to("sanitation", t),
                s("accept", t + 10 * MIN, "zhang.min"),
                s("resolve", t + 60 * MIN, "zhang.min"),
                s("verify", t + 70 * MIN, "system"),
                s("close", t + 70 * MIN, "system"),
            ],
        )
        .await;
    }
    // Lighting: UTC days; a night counts for November when its day's 12:00 UTC (20:00 in
    // UTC+8) is in November city time: days 2026-11-01 to 2026-11-30 UTC.
    let nov1 = days_from_civil(2026, 11, 1);
    let night = |segment: &str, grid: &str, class: &str, day: i64, lit: i64| LightingDay {
        segment: segment.into(),
        day,
        grid: grid.into(),
        road_class: Some(class.into()),
        lit_s: lit,
        expected_s: 100,
    };
    store
        .save_lighting_days(&[
            night("S-main", G1, "main", nov1 - 1, 0), // October 31st: not November
            night("S-main", G1, "main", nov1, 99),    // 99 %: meets 99 %
            night("S-main", G1, "main", nov1 + 1, 98), // misses
            night("S-main", G1, "main", nov1 + 29, 100), // November 30th: meets
            night("S-main", G1, "main", nov1 + 30, 0), // December 1st: not November
            night("S-back", G2, "back", nov1, 95),    // 95 %: meets a back street's 95 %
            night("S-back", G2, "back", nov1 + 1, 94), // misses
        ])
        .await
        .unwrap();
}

fn row<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows}"))
}

fn near(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 1e-9)
}

#[track_caller]
fn assert_counts(f: &Value, expected: &[(&str, u64)]) {
    for (name, n) in expected {
        assert_eq!(f[*name].as_u64(), Some(*n), "{name} in {f}");
    }
}

#[track_caller]
fn assert_rate(f: &Value, name: &str, expected: f64) {
    assert!(
        near(&f[name], expected),
        "{name} = {} ≠ {expected} in {f}",
        f[name]
    );
}

#[track_caller]
fn assert_minutes(f: &Value, name: &str, count: u64, mean_ms: i64, p90_min: i64) {
    let d = &f[name];
    assert_eq!(
        (
            d["count"].as_u64(),
            d["mean_ms"].as_i64(),
            d["p90_ms"].as_i64()
        ),
        (Some(count), Some(mean_ms), Some(p90_min * MIN)),
        "{name} in {f}"
    );
}

async fn evaluation_through_the_api(gw: &Gateway) {
    fill(gw.running.state.store.as_ref()).await;
    let (status, r) = gw.http.get("/api/evaluation?period=month&at=2026-11").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["period"]["label"], "2026-11");
    assert_eq!(r["period"]["from_ms"].as_i64(), Some(local(11, 1, 0, 0)));
    assert_eq!(r["period"]["to_ms"].as_i64(), Some(local(12, 1, 0, 0)));

    // The city. Registered: C1–C8. Dispatched: C1–C7 (8 dispatches: C4 twice). Closed: C1–C5,
    // C7, C9; handled (a team resolved them): the same but C5. On time: C1, C3, C4, C7 (C2 and
    // C9 late). Reworked: C3. Sensor verifications: C1, C3, C4 ("sensor"), C5, C9; by a person:
    // C2, C7. Overdue at the end: C6 (accepted) and C11 (dispatched).
    let city = &r["city"];
    assert_counts(
        city,
        &[
            ("registered", 8),
            ("dispatched", 7),
            ("dispatches", 8),
            ("accepted", 6),
            ("on_site", 2),
            ("returned", 1),
            ("closed", 7),
            ("handled", 6),
            ("on_time", 4),
            ("reworked", 1),
            ("rework_events", 1),
            ("self_recovered", 1),
            ("verified_sensor", 5),
            ("verified_person", 2),
            ("voided", 1),
            ("overdue", 2),
        ],
    );
    assert_rate(city, "on_time_rate", 4.0 / 6.0);
    assert_rate(city, "return_rate", 1.0 / 8.0);
    assert_rate(city, "rework_rate", 1.0 / 6.0);
    // Accept after the first dispatch: 10, 30, 5, 40, 20, 15 min → mean 20, p90 (6th of 6) 40.
    assert_minutes(city, "time_to_accept", 6, 20 * MIN, 40);
    // On site: 40, 25 → mean 32.5 min.
    assert_minutes(city, "time_to_on_site", 2, 1_950_000, 40);
    // Resolve (the last before closing): 120, 1500, 120, 180, 60, 2820 → mean 800.
    assert_minutes(city, "time_to_resolve", 6, 800 * MIN, 2820);
    // Close: 130, 1520, 130, 190, 30, 90, 2830 = 4920 min over 7 → 42 171 428.6 ms.
    assert_minutes(city, "time_to_close", 7, 42_171_429, 2830);
    assert_eq!(city["escalations"], serde_json::json!({"1": 1, "2": 1}));

    // Teams. lighting: C1, C2, C6 registered; C1, C2, C9 closed, on time only C1; C6 overdue.
    let lighting = row(&r["teams"], "lighting");
    assert_counts(
        lighting,
        &[
            ("registered", 3),
            ("dispatched", 3),
            ("dispatches", 3),
            ("returned", 0),
            ("closed", 3),
            ("handled", 3),
            ("on_time", 1),
            ("reworked", 0),
            ("verified_sensor", 2),
            ("verified_person", 1),
            ("overdue", 1),
        ],
    );
    assert_rate(lighting, "on_time_rate", 1.0 / 3.0);
    assert_eq!(lighting["escalations"], serde_json::json!({"1": 1, "2": 1}));
    // sanitation: C3, C4, C5 registered, 4 dispatches, 1 return; C3, C4 handled on time, C3
    // reworked; C11 overdue.
    let sanitation = row(&r["teams"], "sanitation");
    assert_counts(
        sanitation,
        &[
            ("registered", 3),
            ("dispatched", 3),
            ("dispatches", 4),
            ("returned", 1),
            ("closed", 3),
            ("handled", 2),
            ("on_time", 2),
            ("reworked", 1),
            ("self_recovered", 1),
            ("overdue", 1),
        ],
    );
    assert_rate(sanitation, "return_rate", 0.25);
    assert_rate(sanitation, "rework_rate", 0.5);
    assert_counts(
        row(&r["teams"], HOSTILE),
        &[("handled", 1), ("on_time", 1), ("verified_person", 1)],
    );
    assert_eq!(r["teams"].as_array().unwrap().len(), 3, "{}", r["teams"]);
    // Grids: G1 has C1, C2, C6, C7, C9; G2 has C3, C4, C5, C8, C11.
    assert_counts(
        row(&r["grids"], G1),
        &[
            ("registered", 4),
            ("handled", 4),
            ("on_time", 2),
            ("overdue", 1),
        ],
    );
    assert_counts(
        row(&r["grids"], G2),
        &[
            ("registered", 4),
            ("voided", 1),
            ("handled", 2),
            ("overdue", 1),
        ],
    );
    // Types.
    assert_counts(
        row(&r["types"], "lamp_fault"),
        &[
            ("registered", 3),
            ("closed", 3),
            ("on_time", 1),
            ("overdue", 1),
        ],
    );
    assert_counts(
        row(&r["types"], "bin_full"),
        &[
            ("registered", 3),
            ("closed", 2),
            ("voided", 1),
            ("returned", 1),
            ("overdue", 1),
        ],
    );
    assert_counts(
        row(&r["types"], "bin_overflow"),
        &[("closed", 1), ("self_recovered", 1), ("handled", 0)],
    );

    // Ranking (weights 0.6 / 0.2 / 0.2): HOSTILE 100; sanitation 100 × (0.6 + 0.2 × 0.75 +
    // 0.2 × 0.5) = 85; lighting 100 × (0.6 / 3 + 0.2 + 0.2) = 60. Lighting was last in
    // September and October too (late cases, against sanitation's on-time ones).
    let teams = &r["ranking"]["teams"];
    let ranked: Vec<(&str, f64)> = teams["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap(), x["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(ranked.len(), 3);
    for ((name, score), (want, want_score)) in
        ranked
            .iter()
            .zip([(HOSTILE, 100.0), ("sanitation", 85.0), ("lighting", 60.0)])
    {
        assert_eq!(*name, want);
        assert!((score - want_score).abs() < 1e-9, "{name}: {score}");
    }
    assert_eq!(teams["red"], serde_json::json!([HOSTILE]));
    assert_eq!(teams["black"], serde_json::json!(["lighting"]));
    assert_eq!(teams["flagged"], serde_json::json!(["lighting"]));
    assert_eq!(teams["ranked"][2]["last_place_streak"], 3);
    // Grids: G2 85; G1 100 × (0.6 × 2/4 + 0.2 + 0.2) = 70, last three months running.
    let grids = &r["ranking"]["grids"];
    assert!(
        near(&grids["ranked"][0]["score"], 85.0) && near(&grids["ranked"][1]["score"], 70.0),
        "{grids}"
    );
    assert_eq!(
        (&grids["red"], &grids["black"]),
        (&serde_json::json!([G2]), &serde_json::json!([G1]))
    );
    assert_eq!(grids["flagged"], serde_json::json!([G1]));
    // In October lighting had been last for two months only: not flagged yet.
    let (_, oct) = gw.http.get("/api/evaluation?period=month&at=2026-10").await;
    assert_eq!(
        oct["ranking"]["teams"]["black"],
        serde_json::json!(["lighting"]),
        "{oct}"
    );
    assert_eq!(oct["ranking"]["teams"]["flagged"], serde_json::json!([]));
    assert_eq!(oct["ranking"]["teams"]["ranked"][1]["last_place_streak"], 2);
    // October: C9, C11, C12, C13 registered, C12 and C13 closed; at its end C11 and C9 (due
    // October 31st 10:00, accepted but not resolved) are overdue.
    assert_counts(
        &oct["city"],
        &[("registered", 4), ("closed", 2), ("overdue", 2)],
    );

    // Overdue at the end of November, the earliest due first.
    let overdue: Vec<&str> = r["overdue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["detail"].as_str().unwrap())
        .collect();
    assert_eq!(overdue, ["case C11", "case C6"]);
    assert_eq!(r["overdue"][1]["state"], "accepted");

    // Lighting: S-main 3 November nights, 2 met; S-back 2 nights, 1 met (the worst).
    let l = &r["lighting"];
    let seg = |name: &str| row_named(&l["segments"], name);
    assert_eq!(
        (
            seg("S-main")["nights"].as_u64(),
            seg("S-main")["nights_met"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(
        (
            seg("S-back")["nights"].as_u64(),
            seg("S-back")["nights_met"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(near(&seg("S-main")["rate"], 297.0 / 300.0));
    assert_eq!(row_named(&l["grids"], G2)["nights_met"], 1);
    assert!(near(&row_named(&l["grids"], G1)["share"], 2.0 / 3.0));
    assert_eq!(l["worst"][0]["name"], "S-back");

    // One day and a range of days.
    let (_, day) = gw
        .http
        .get("/api/evaluation?period=day&at=2026-11-12")
        .await;
    assert_counts(
        &day["city"],
        &[
            ("registered", 1),
            ("returned", 1),
            ("dispatches", 2),
            ("on_time", 1),
        ],
    );
    let (_, range) = gw
        .http
        .get("/api/evaluation?from=2026-11-01&to=2026-11-10")
        .await;
    assert_counts(&range["city"], &[("registered", 3), ("closed", 4)]);
    let (_, quarter) = gw
        .http
        .get("/api/evaluation?period=quarter&at=2026-Q4")
        .await;
    // The fourth quarter: 4 registered in October, 8 in November, C10 in December.
    assert_counts(&quarter["city"], &[("registered", 13), ("closed", 9)]);

    // Bad periods name what is wrong.
    for (q, needle) in [
        ("period=month&at=2026-13", "2026-13"),
        ("period=week&at=2026-11", "week"),
        ("at=2026-11", "period"),
        ("from=2026-11-10&to=2026-11-01", "before"),
    ] {
        let (status, e) = gw.http.get(&format!("/api/evaluation?{q}")).await;
        assert_eq!(
            (status, &e["code"]),
            (400, &Value::from("invalid_period")),
            "{q}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(needle), "{q}: {e}");
    }
    let (status, e) = gw
        .http
        .get("/api/evaluation.csv?period=month&at=2026-11&by=street")
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("street"));

    // Access: a viewer of G2 sees G2 only; a team member has no evaluation_read.
    let viewer = gw.http_as("viewer.g2", Role::Viewer, None, Some(G2)).await;
    let (status, v) = viewer.get("/api/evaluation?period=month&at=2026-11").await;
    assert_eq!(status, 200, "{v}");
    assert_counts(&v["city"], &[("registered", 4), ("handled", 2)]);
    assert_eq!(v["grids"].as_array().unwrap().len(), 1);
    assert_eq!(v["lighting"]["segments"].as_array().unwrap().len(), 1);
    let (status, _) = viewer
        .get(&format!(
            "/api/evaluation?period=month&at=2026-11&grid={G1}"
        ))
        .await;
    assert_eq!(status, 403);
    let member = gw
        .http_as("li.wei", Role::TeamMember, Some("lighting"), None)
        .await;
    let (status, e) = member.get("/api/reports/bulletin?month=2026-11").await;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("evaluation_read"),
        "{e}"
    );

    // The CSV by team, parsed back.
    let (client, base) = gw.http.client();
    let resp = client
        .get(format!(
            "{base}/api/evaluation.csv?period=month&at=2026-11&by=team"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let text = resp.text().await.unwrap();
    let body = text
        .strip_prefix('\u{feff}')
        .expect("UTF-8 byte-order mark");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.ends_with(name))
            .unwrap_or_else(|| panic!("no column {name} in {headers:?}"))
    };
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    let san = records.iter().find(|r| &r[1] == "sanitation").unwrap();
    assert_eq!(&san[0], "2026-11");
    assert_eq!(&san[col(" registered")], "3");
    assert_eq!(&san[col(" return_rate")], "0.2500");
    assert_eq!(&san[col(" on_time_rate")], "1.0000");
    assert_eq!(&san[col(" rework_rate")], "0.5000");
    assert_eq!(&san[col(" score")], "85.00");
    assert_eq!(&san[col(" rank")], "2");
    assert!(
        records.iter().any(|r| &r[1] == HOSTILE),
        "a name with quotes survives the CSV"
    );
    assert!(headers.iter().any(|h| h.starts_with("按期处置率")));
    let by_type = gw
        .http
        .get_text("/api/evaluation.csv?period=month&at=2026-11&by=type")
        .await;
    assert!(by_type.starts_with('\u{feff}'));
    assert_eq!(by_type.lines().count(), 1 + 4, "{by_type}");

    // The bulletin.
    let resp = client
        .get(format!("{base}/api/reports/bulletin?month=2026-11"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let html = resp.text().await.unwrap();
    for needle in [
        "<title>2026-11 城市管理考核通报</title>",
        "考核期间：2026-11-01 至 2026-11-30（UTC+8）",
        "本期共立案 8 件，派遣 7 件，结案 7 件",
        "按期处置率 66.7%，退单率 12.5%，返工率 16.7%",
        "期末超期未处置 2 件",
        "@media print",
        "size:A4",
        "<svg",
        "黑榜：</b>lighting",
        "连续排名末位：</b>lighting",
        "&lt;b&gt;坏&lt;/b&gt;&amp;&quot;x&quot;",
        "S-back",
        "case C11",
    ] {
        assert!(html.contains(needle), "the bulletin lacks {needle:?}");
    }
    assert!(
        !html.contains(HOSTILE),
        "the hostile team name is not escaped"
    );
    assert!(!html.contains("<b>坏"), "markup from data");
    let (status, e) = gw.http.get("/api/reports/bulletin?month=November").await;
    assert_eq!(
        (status, &e["code"]),
        (400, &Value::from("invalid_period")),
        "{e}"
    );
}

fn row_named<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows}"))
}

fn lists_of_one(c: &mut Config) {
    c.evaluation.red_n = 1;
    c.evaluation.black_n = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_rankings_csv_and_bulletin_on_sqlite() {
    let gw = Gateway::start(lists_of_one).await;
    evaluation_through_the_api(&gw).await;
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_rankings_csv_and_bulletin_on_postgres() {
    let Some(server) = server_url() else {
        eprintln!("STREETGATE_TEST_PG_URL is not set: the evaluation on PostgreSQL is not tested");
        return;
    };
    let db = ScratchDatabase::create(&server)
        .await
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_PG_URL={server}: {e}"));
    let url = db.url.clone();
    let gw = Gateway::start(move |c| {
        lists_of_one(c);
        c.store.backend = StoreBackend::Postgres;
        c.store.url = Some(url);
    })
    .await;
    evaluation_through_the_api(&gw).await;
    gw.running.shutdown().await.unwrap();
    db.drop_database().await.unwrap();
}

async fn months(store: &dyn Store) -> Vec<String> {
    store
        .reports()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.month)
        .collect()
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The schedule on the gateway's clock: on December 1st after 06:00 city time it writes
/// November's reports once; restarted on the same store in January it writes December only
/// (November, whose files were deleted, is not written again); restarted in March after a long
/// stop, it writes January and February, skipping none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_reports_are_written_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let config_at = |at: i64| {
        let mut c = Config::default();
        c.http.listen = "127.0.0.1:0".parse().unwrap();
        c.broker.listen = "127.0.0.1:0".parse().unwrap();
        c.store.path = dir.path().join("data/streetgate.db");
        c.clock.start_ms = Some(at);
        c.evaluation.report_dir = reports.clone();
        c.evaluation.check_interval_s = 1;
        c
    };
    // Before 06:00 on the 1st, October would be the month due; at 07:00 it is November.
    let gw = Gateway::start_with(config_at(local(12, 1, 7, 0)), tempfile::tempdir().unwrap()).await;
    fill(gw.running.state.store.as_ref()).await;
    let november = [
        "bulletin-2026-11.html",
        "evaluation-2026-11-grid.csv",
        "evaluation-2026-11-team.csv",
        "evaluation-2026-11-type.csv",
    ];
    eventually("November's reports", Duration::from_secs(20), || async {
        files(&reports) == november
    })
    .await;
    assert_eq!(months(gw.running.state.store.as_ref()).await, ["2026-11"]);
    let html = std::fs::read_to_string(reports.join("bulletin-2026-11.html")).unwrap();
    assert!(html.contains("2026-11 城市管理考核通报"));
    gw.running.shutdown().await.unwrap();
    for f in november {
        std::fs::remove_file(reports.join(f)).unwrap();
    }

    let gw = Gateway::start_with(
        config_at(local(1, 1, 0, 0) + 365 * 86_400_000 + 7 * 3_600_000),
        tempfile::tempdir().unwrap(),
    )
    .await;
    eventually("December's reports", Duration::from_secs(20), || async {
        files(&reports).len() == 4
    })
    .await;
    assert_eq!(files(&reports)[0], "bulletin-2026-12.html");
    assert_eq!(
        months(gw.running.state.store.as_ref()).await,
        ["2026-11", "2026-12"]
    );
    gw.running.shutdown().await.unwrap();

    let gw = Gateway::start_with(
        config_at(local(3, 2, 0, 0) + 365 * 86_400_000),
        tempfile::tempdir().unwrap(),
    )
    .await;
    eventually(
        "January's and February's reports",
        Duration::from_secs(20),
        || async { files(&reports).len() == 12 },
    )
    .await;
    assert_eq!(
        months(gw.running.state.store.as_ref()).await,
        ["2026-11", "2026-12", "2027-01", "2027-02"]
    );
    assert!(files(&reports).contains(&"bulletin-2027-02.html".to_owned()));
    assert!(!files(&reports).contains(&"bulletin-2026-11.html".to_owned()));
    gw.running.shutdown().await.unwrap();
}

/// A case made and worked through the API counts as the hand-made ones do: registered and
/// dispatched by the routing (its dispatch entry names the team), accepted, supervised at level
/// 1, reported on site, resolved, verified by a person and closed today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_worked_through_the_api_is_counted() {
    let gw = Gateway::start(|_| {}).await;
    let report = serde_json::json!({"type": "other", "grid": G1, "detail": "graffiti", "location": "Gate 3", "source": "patrol"});
    let (status, case) = gw.http.post_json("/api/cases", &report).await;
    assert_eq!(status, 200, "{case}");
    let path = format!("/api/cases/{}/transitions", case["id"]);
    for action in [
        serde_json::json!({"action": "accept"}),
        serde_json::json!({"action": "supervise", "note": "level 1: chased by phone"}),
        serde_json::json!({"action": "on_site", "note": "crew arrived"}),
        serde_json::json!({"action": "resolve", "note": "painted over"}),
        serde_json::json!({"action": "verify", "note": "seen on site"}),
        serde_json::json!({"action": "close"}),
    ] {
        let (status, body) = gw.http.post_json(&path, &action).await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    let now = gw.running.state.clock.now_ms();
    let (y, m, d, _) = streetgate_gateway::evaluation::period::local_month(now, 480);
    let (status, r) = gw
        .http
        .get(&format!(
            "/api/evaluation?period=day&at={y:04}-{m:02}-{d:02}"
        ))
        .await;
    assert_eq!(status, 200, "{r}");
    let expected = [
        ("registered", 1),
        ("dispatched", 1),
        ("accepted", 1),
        ("on_site", 1),
        ("closed", 1),
        ("handled", 1),
        ("on_time", 1),
        ("verified_person", 1),
        ("verified_sensor", 0),
    ];
    assert_counts(&r["city"], &expected);
    // The routing sends `other` to the grid chief: the figures count for that team.
    assert_eq!(r["teams"].as_array().unwrap().len(), 1, "{}", r["teams"]);
    assert_counts(row(&r["teams"], "grid-chief"), &expected);
    assert_counts(row(&r["types"], "other"), &[("registered", 1)]);
    assert_eq!(
        r["city"]["escalations"],
        serde_json::json!({"1": 1}),
        "{}",
        r["city"]
    );
    assert_eq!(r["city"]["time_to_on_site"]["count"], 1);
    gw.running.shutdown().await.unwrap();
}
