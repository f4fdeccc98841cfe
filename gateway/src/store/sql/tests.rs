//! The store's behaviour, the same on every backend: each test runs on SQLite and, when
//! `STREETGATE_TEST_PG_URL` names a PostgreSQL server, on a scratch database there.

use std::sync::Arc;

use super::postgres::scratch::{ScratchDatabase, server_url};
use super::{PgStore, SqliteStore};
use crate::inventory::parse_csv;
use crate::model::{CaseSource, CaseState, CaseType, SeqState};
use crate::store::*;
use streetgate_protocols::DeviceId;

/// A store under test and what to clean up after it.
struct TestStore {
    store: Arc<dyn Store>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
    scratch: Option<ScratchDatabase>,
}

/// The concrete store, for statements the traits do not offer.
enum Raw {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Raw {
    /// Insert an open `bin_full` case for `device:BN-1` directly, in `state`.
    async fn insert_open_case(&self, state: &str) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO cases (case_type, source, subject_key, condition_key,
                 grid, state, opened_ms, updated_ms)
             VALUES ('bin_full', 'sensor', 'device:BN-1', 'alarm:bin_full', 'G', $1, 1, 1)";
        match self {
            Raw::Sqlite(s) => sqlx::query(SQL)
                .bind(state)
                .execute(s.pool())
                .await
                .map(drop),
            Raw::Postgres(s) => sqlx::query(SQL)
                .bind(state)
                .execute(s.pool())
                .await
                .map(drop),
        }
    }

    async fn close_all_cases(&self) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE cases SET state = 'closed'";
        match self {
            Raw::Sqlite(s) => sqlx::query(SQL).execute(s.pool()).await.map(drop),
            Raw::Postgres(s) => sqlx::query(SQL).execute(s.pool()).await.map(drop),
        }
    }

    /// A second, independent connection pool on the same database (another writer).
    async fn second_writer(&self, t: &TestStore) -> Arc<dyn Store> {
        match self {
            Raw::Sqlite(_) => {
                let dir = t._dir.as_ref().map(|d| d.path().join("sub/dir/db.sqlite"));
                Arc::new(SqliteStore::open(&dir.unwrap()).await.unwrap())
            }
            Raw::Postgres(_) => {
                let url = &t.scratch.as_ref().unwrap().url;
                Arc::new(PgStore::connect(url, 4).await.unwrap())
            }
        }
    }
}

impl TestStore {
    async fn done(self) {
        self.store.close().await;
        if let Some(db) = self.scratch {
            db.drop_database().await.unwrap();
        }
    }
}

/// SQLite in a temporary directory, and PostgreSQL when the test server is configured (a
/// configured server that does not answer fails the test).
async fn stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("sub/dir/db.sqlite"))
        .await
        .unwrap();
    let mut stores = vec![TestStore {
        store: Arc::new(sqlite.clone()),
        raw: Raw::Sqlite(sqlite),
        _dir: Some(dir),
        scratch: None,
    }];
    match server_url() {
        Some(url) => {
            let db = ScratchDatabase::create(&url)
                .await
                .unwrap_or_else(|e| panic!("STREETGATE_TEST_PG_URL={url}: {e}"));
            let pg = PgStore::connect(&db.url, 4).await.unwrap();
            stores.push(TestStore {
                store: Arc::new(pg.clone()),
                raw: Raw::Postgres(pg),
                _dir: None,
                scratch: Some(db),
            });
        }
        None => eprintln!("STREETGATE_TEST_PG_URL is not set: PostgreSQL not tested"),
    }
    stores
}

#[tokio::test]
async fn unregistered_devices_are_capped_and_expire() {
    for t in stores().await {
        let s = t.store.clone();
        let unregistered = (0..20)
            .map(|i| UnregisteredSighting {
                device_id: format!("X-{i:02}"),
                claimed_kind: None,
                at_ms: 1000 + i,
                topic: format!("streetgate/v1/X-{i:02}/telemetry"),
                count: 1,
            })
            .collect();
        s.write_batch(&WriteBatch {
            unregistered,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        // Seen before 1005: X-00..X-04 expire; then the 10 most recent of the rest stay.
        assert_eq!(s.trim_unregistered(10, 1005).await.unwrap(), 10);
        let left: Vec<String> = s
            .list_unregistered(100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(left.len(), 10);
        assert_eq!(left.first().map(String::as_str), Some("X-19"));
        assert_eq!(left.last().map(String::as_str), Some("X-10"));
        assert_eq!(s.trim_unregistered(10, 0).await.unwrap(), 0);
        t.done().await;
    }
}

const CSV: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
SL-1,streetlight,3205080118000001,31.30,120.60,G1,S-1,main,,,mqtt,min_current_a=0.2
BN-1,bin,,31.32,120.62,G2,,,,1200,modbus-rtu /dev/ttyUSB0 9600 7,
";

#[tokio::test]
async fn devices_round_trip() {
    for t in stores().await {
        let s = t.store.clone();
        let devices = parse_csv(CSV.as_bytes()).unwrap();
        s.upsert_devices(&devices, 1).await.unwrap();
        let mut back = s.list_devices().await.unwrap();
        back.sort_by(|a, b| b.id.cmp(&a.id));
        assert_eq!(back, devices);
        assert_eq!(
            s.get_device("BN-1").await.unwrap().as_ref(),
            Some(&devices[1])
        );
        assert!(s.delete_device("BN-1").await.unwrap());
        assert!(!s.delete_device("BN-1").await.unwrap());
        assert_eq!(s.count_devices().await.unwrap(), 1);
        t.done().await;
    }
}

#[tokio::test]
async fn device_credentials_replace_skip_unknown_and_go_with_the_device() {
    for t in stores().await {
        let s = t.store.clone();
        let devices = parse_csv(CSV.as_bytes()).unwrap();
        s.upsert_devices(&devices, 1).await.unwrap();
        let ids: Vec<String> = devices.iter().map(|d| d.id.to_string()).collect();
        let first: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.clone(), format!("hash-1-{id}")))
            .chain([("NOT-IN-INVENTORY".to_owned(), "x".to_owned())])
            .collect();
        assert_eq!(s.set_device_credentials(&first, 5).await.unwrap(), 2);
        let replaced = vec![(ids[0].clone(), "hash-2".to_owned())];
        assert_eq!(s.set_device_credentials(&replaced, 6).await.unwrap(), 1);
        let mut expected = vec![
            (ids[0].clone(), "hash-2".to_owned()),
            (ids[1].clone(), format!("hash-1-{}", ids[1])),
        ];
        expected.sort();
        assert_eq!(s.device_credentials().await.unwrap(), expected);
        // Deleting a device deletes its credential; registering it again does not bring it back.
        assert!(s.delete_device(&ids[1]).await.unwrap());
        s.upsert_devices(&devices, 7).await.unwrap();
        assert_eq!(
            s.device_credentials().await.unwrap(),
            vec![(ids[0].clone(), "hash-2".to_owned())]
        );
        t.done().await;
    }
}

#[tokio::test]
async fn sequence_states_are_committed_with_readings_and_never_go_back() {
    for t in stores().await {
        let s = t.store.clone();
        let state = |last_seq, accepted| SeqState {
            last_seq,
            seen: u64::MAX - 4,
            valid: u64::MAX,
            missing: 2,
            restarts: 1,
            accepted,
        };
        let rec = |id: &str, st: Option<SeqState>| ReadingRecord {
            device_id: id.into(),
            reading_type: "telemetry",
            received_ms: 5,
            body: "{}".into(),
            seq_state: st,
        };
        s.write_batch(&WriteBatch {
            readings: vec![
                rec("MH-1", Some(state(9, 9))),
                rec("MH-1", Some(state(u32::MAX, 10))),
                rec("MH-1", Some(state(8, 8))),
                rec("MB-1", None),
            ],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        let mh = DeviceId::new("MH-1").unwrap();
        let all = s.seq_states().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[&mh], state(u32::MAX, 10));
        // An older state (a batch written late) does not overwrite a newer one.
        s.write_batch(&WriteBatch {
            readings: vec![rec("MH-1", Some(state(3, 4)))],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        assert_eq!(
            s.seq_state("MH-1").await.unwrap(),
            Some(state(u32::MAX, 10))
        );
        assert_eq!(
            s.seq_summary().await.unwrap(),
            SeqSummary {
                devices_with_gaps: 1,
                missing: 2,
                restarts: 1
            }
        );
        assert_eq!(s.seq_state("MB-1").await.unwrap(), None);
        t.done().await;
    }
}

#[tokio::test]
async fn batches_latest_history_unregistered() {
    for t in stores().await {
        let s = t.store.clone();
        let rec = |t: i64, ty: &'static str| ReadingRecord {
            device_id: "SL-1".into(),
            reading_type: ty,
            received_ms: t,
            body: format!("{{\"t\":{t}}}"),
            seq_state: None,
        };
        let sighting = |id: &str, at: i64| UnregisteredSighting {
            device_id: id.into(),
            claimed_kind: None,
            at_ms: at,
            topic: format!("streetgate/v1/{id}/telemetry"),
            count: 2,
        };
        s.write_batch(&WriteBatch {
            readings: vec![rec(1, "telemetry"), rec(2, "telemetry"), rec(3, "status")],
            unregistered: vec![sighting("X-1", 5)],
            rejection_deltas: vec![("malformed".into(), 3)],
            keep_history: true,
        })
        .await
        .unwrap();
        s.write_batch(&WriteBatch {
            readings: vec![rec(4, "telemetry")],
            unregistered: vec![sighting("X-1", 9)],
            rejection_deltas: vec![("malformed".into(), 1)],
            keep_history: true,
        })
        .await
        .unwrap();
        let latest = s.latest_readings("SL-1").await.unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].received_ms, 4);
        assert_eq!(latest[0].body["t"], 4);
        assert_eq!(s.reading_history("SL-1", 10).await.unwrap().len(), 4);
        // A window includes both ends, newest first.
        let window = s.reading_history_between("SL-1", 2, 3, 10).await.unwrap();
        assert_eq!(
            window.iter().map(|r| r.received_ms).collect::<Vec<_>>(),
            [3, 2]
        );
        assert!(
            s.reading_history_between("SL-1", 5, 9, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.trim_history(2).await.unwrap(), 2);
        assert_eq!(s.reading_history("SL-1", 10).await.unwrap().len(), 2);
        let u = s.list_unregistered(10).await.unwrap();
        assert_eq!(
            (u[0].message_count, u[0].first_seen_ms, u[0].last_seen_ms),
            (4, 5, 9)
        );
        assert_eq!(
            s.rejection_totals().await.unwrap(),
            vec![("malformed".to_owned(), 4)]
        );
        // Registering the device removes it from the unregistered list.
        let mut d = parse_csv(CSV.as_bytes()).unwrap().remove(0);
        d.id = DeviceId::new("X-1").unwrap();
        s.upsert_devices(&[d], 10).await.unwrap();
        assert_eq!(s.count_unregistered().await.unwrap(), 0);
        t.done().await;
    }
}

fn case(subject: &str, condition: &str, state: CaseState) -> CaseRecord {
    CaseRecord {
        id: 0,
        case_type: CaseType::BinFull,
        source: CaseSource::Sensor,
        subject_key: subject.into(),
        condition_key: Some(condition.into()),
        grid: "G1".into(),
        team: Some("sanitation-G1".into()),
        state,
        urgent: false,
        devices: vec![DeviceId::new("BN-1").unwrap()],
        detail: "fill 85 % ≥ 80 %".into(),
        opened_ms: 1_000,
        due_ms: Some(5_000),
        updated_ms: 1_000,
        closed_ms: None,
        condition_active: true,
        clear_since_ms: None,
        rework_count: 0,
        returned_count: 0,
        supervision_level: 0,
        on_site_due_ms: None,
        on_site_ms: None,
    }
}

#[tokio::test]
async fn supervision_level_and_on_site_are_stored_and_never_go_back() {
    for t in stores().await {
        let s = t.store.clone();
        let mut c = case("device:MH-9", "alarm:cover_tilted", CaseState::Accepted);
        c.on_site_due_ms = Some(3_000);
        let CaseInsert::Created(id) = s
            .insert_case(&c, &entry(1_000, None, CaseState::Accepted))
            .await
            .unwrap()
        else {
            panic!("not created")
        };
        let read = s.get_case(id).await.unwrap().unwrap();
        assert_eq!(
            (read.supervision_level, read.on_site_due_ms, read.on_site_ms),
            (0, Some(3_000), None)
        );
        // The automation's filters: late on site after 3 000, below the highest level.
        let ids = |f: CaseFilter| {
            let s = s.clone();
            async move {
                s.list_cases(&CaseFilter { limit: 100, ..f })
                    .await
                    .unwrap()
                    .1
                    .iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
            }
        };
        let late = |at| CaseFilter {
            on_site_late_at: Some(at),
            supervision_below: Some(3),
            ..CaseFilter::default()
        };
        assert_eq!(ids(late(3_000)).await, Vec::<i64>::new());
        assert_eq!(ids(late(3_001)).await, [id]);
        let at_top = CaseFilter {
            supervision_below: Some(0),
            ..late(3_001)
        };
        assert_eq!(ids(at_top).await, Vec::<i64>::new());
        // The automation escalates to level 1 (the on-site limit passed).
        let mut level1 = read.clone();
        level1.supervision_level = 1;
        level1.on_site_due_ms = None;
        let supervise = CaseHistoryEntry {
            action: "supervise".into(),
            note: "level 1 (phone; told team): not on site".into(),
            ..entry(3_500, Some(CaseState::Accepted), CaseState::Accepted)
        };
        assert!(
            s.update_case_from(&level1, &read, std::slice::from_ref(&supervise))
                .await
                .unwrap()
        );
        let after = s.get_case(id).await.unwrap().unwrap();
        assert_eq!((after.supervision_level, after.on_site_due_ms), (1, None));
        // A person's on-site report made on the case as read before the escalation loses (it
        // is made again on the case as it is now), so the level is not written back to 0...
        let mut on_site = read.clone();
        on_site.on_site_ms = Some(3_600);
        assert!(!s.update_case_from(&on_site, &read, &[]).await.unwrap());
        // ...and no writer, however unguarded, lowers the level.
        assert!(
            !s.update_case(&on_site, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        let mut on_site = after.clone();
        on_site.on_site_ms = Some(3_600);
        assert!(s.update_case_from(&on_site, &after, &[]).await.unwrap());
        let last = s.get_case(id).await.unwrap().unwrap();
        assert_eq!((last.supervision_level, last.on_site_ms), (1, Some(3_600)));
        // The automation noting a change on the case as it read it before the report keeps
        // the report.
        let mut noted = after.clone();
        noted.detail = "cover open".into();
        assert!(
            s.update_case(&noted, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        let last = s.get_case(id).await.unwrap().unwrap();
        assert_eq!(
            (last.detail.as_str(), last.on_site_ms),
            ("cover open", Some(3_600))
        );
        // An escalation computed before the on-site report loses in turn.
        let mut level2 = after.clone();
        level2.supervision_level = 2;
        assert!(!s.update_case_from(&level2, &after, &[]).await.unwrap());
        let history = s.case_history(id).await.unwrap();
        assert_eq!(history.last().unwrap().action, "supervise");
        // The level shows in the case events the alert sinks read.
        let events = s.case_events_after(0, 100).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.case.id == id && e.case.supervision_level == 1)
        );
        t.done().await;
    }
}

fn entry(at: i64, from: Option<CaseState>, to: CaseState) -> CaseHistoryEntry {
    CaseHistoryEntry {
        action: if from.is_none() { "register" } else { "update" }.into(),
        at_ms: at,
        actor: "system".into(),
        from,
        to,
        note: String::new(),
    }
}

#[tokio::test]
async fn cases_dedup_update_history_filters() {
    for t in stores().await {
        let s = t.store.clone();
        let c = case("device:BN-1", "alarm:bin_full", CaseState::Dispatched);
        let first = s
            .insert_case(&c, &entry(1_000, None, CaseState::Dispatched))
            .await
            .unwrap();
        let CaseInsert::Created(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            s.insert_case(&c, &entry(1_001, None, CaseState::Dispatched))
                .await
                .unwrap(),
            CaseInsert::AlreadyOpen(id)
        );
        // Concurrent inserts of the same key: exactly one wins.
        let results = futures::future::join_all((0..8).map(|i| {
            let s = s.clone();
            let c = case("device:MH-1", "alarm:cover_open", CaseState::Registered);
            async move {
                s.insert_case(&c, &entry(i, None, CaseState::Registered))
                    .await
                    .unwrap()
            }
        }))
        .await;
        let created = results
            .iter()
            .filter(|r| matches!(r, CaseInsert::Created(_)))
            .count();
        assert_eq!(created, 1, "{results:?}");

        let mut stored = s.get_case(id).await.unwrap().unwrap();
        assert_eq!(stored.devices, c.devices);
        stored.state = CaseState::Accepted;
        stored.updated_ms = 2_000;
        let e = entry(2_000, Some(CaseState::Dispatched), CaseState::Accepted);
        assert!(
            s.update_case(&stored, CaseState::Dispatched, std::slice::from_ref(&e))
                .await
                .unwrap()
        );
        // A stale writer loses.
        assert!(
            !s.update_case(&stored, CaseState::Dispatched, &[e])
                .await
                .unwrap()
        );
        // A team's transition made on a case read before the sensor cleared loses too, in
        // the same state: it must not write the old condition back.
        let read = s.get_case(id).await.unwrap().unwrap();
        let mut cleared = read.clone();
        cleared.condition_active = false;
        cleared.clear_since_ms = Some(2_500);
        assert!(
            s.update_case(&cleared, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        let mut resolved = read.clone();
        resolved.state = CaseState::Resolved;
        let e = entry(3_000, Some(CaseState::Accepted), CaseState::Resolved);
        assert!(
            !s.update_case_from(&resolved, &read, std::slice::from_ref(&e))
                .await
                .unwrap(),
            "the sensor's news is not overwritten"
        );
        let fresh = s.get_case(id).await.unwrap().unwrap();
        assert!(!fresh.condition_active);
        let mut resolved = fresh.clone();
        resolved.state = CaseState::Resolved;
        assert!(s.update_case_from(&resolved, &fresh, &[]).await.unwrap());
        let mut back = s.get_case(id).await.unwrap().unwrap();
        back.state = CaseState::Accepted;
        assert!(
            s.update_case(&back, CaseState::Resolved, &[])
                .await
                .unwrap()
        );
        let history = s.case_history(id).await.unwrap();
        assert_eq!(history.len(), 2);
        // The newest event id is where a live stream starts: nothing after it.
        let last = s.last_case_event_id().await.unwrap();
        assert!(last > 0);
        assert!(s.case_events_after(last, 10).await.unwrap().is_empty());
        assert_eq!(
            s.case_events_after(last - 1, 10).await.unwrap()[0].event_id,
            last
        );
        assert_eq!(history[1].from, Some(CaseState::Dispatched));

        let f = |f: CaseFilter| {
            let s = s.clone();
            async move {
                s.list_cases(&CaseFilter { limit: 100, ..f })
                    .await
                    .unwrap()
                    .0
            }
        };
        assert_eq!(f(CaseFilter::default()).await, 2);
        assert_eq!(
            f(CaseFilter {
                state: Some(CaseState::Accepted),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            f(CaseFilter {
                case_type: Some(CaseType::BinFull),
                grid: Some("G1".into()),
                ..Default::default()
            })
            .await,
            2
        );
        assert_eq!(
            f(CaseFilter {
                team: Some("nobody".into()),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            f(CaseFilter {
                overdue_at: Some(4_000),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            f(CaseFilter {
                overdue_at: Some(6_000),
                ..Default::default()
            })
            .await,
            2
        );
        assert_eq!(
            f(CaseFilter {
                urgent: Some(true),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            f(CaseFilter {
                urgent: Some(false),
                ..Default::default()
            })
            .await,
            2
        );

        // Closing frees the key; the closed case is found for the reopen window.
        stored.state = CaseState::Closed;
        stored.closed_ms = Some(3_000);
        assert!(
            s.update_case(&stored, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        assert_eq!(
            f(CaseFilter {
                open: Some(true),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            s.recently_closed_case("device:BN-1", "alarm:bin_full", 2_500)
                .await
                .unwrap()
                .map(|c| c.id),
            Some(id)
        );
        assert!(
            s.recently_closed_case("device:BN-1", "alarm:bin_full", 3_500)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.insert_case(&c, &entry(4_000, None, CaseState::Dispatched))
                .await
                .unwrap(),
            CaseInsert::Created(_)
        ));
        assert_eq!(s.open_cases().await.unwrap().len(), 2);
        t.done().await;
    }
}

#[tokio::test]
async fn rule_state_and_dedup_index() {
    for t in stores().await {
        let s = t.store.clone();
        assert!(s.load_rule_state().await.unwrap().is_none());
        s.save_rule_state("{\"a\":1}", 5).await.unwrap();
        s.save_rule_state("{\"a\":2}", 6).await.unwrap();
        assert_eq!(
            s.load_rule_state().await.unwrap(),
            Some(("{\"a\":2}".to_owned(), 6))
        );
        t.raw.insert_open_case("dispatched").await.unwrap();
        assert!(
            t.raw.insert_open_case("registered").await.is_err(),
            "second open case for the same key must be refused"
        );
        t.raw.close_all_cases().await.unwrap();
        t.raw.insert_open_case("registered").await.unwrap();
        assert_eq!(
            s.open_case_counts().await.unwrap(),
            vec![("bin_full".to_owned(), 1)]
        );
        t.done().await;
    }
}

/// Two writers (two connection pools, as two gateways would have) race to open the same case
/// many times: every round ends with exactly one case and every loser is told which.
#[tokio::test]
async fn two_writers_racing_open_one_case() {
    for t in stores().await {
        let a = t.store.clone();
        let b = t.raw.second_writer(&t).await;
        for round in 0..20 {
            let c = case(
                &format!("device:MH-{round}"),
                "alarm:cover_open",
                CaseState::Registered,
            );
            let e = entry(round, None, CaseState::Registered);
            let (ra, rb) = tokio::join!(a.insert_case(&c, &e), b.insert_case(&c, &e));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            match (ra, rb) {
                (CaseInsert::Created(x), CaseInsert::AlreadyOpen(y))
                | (CaseInsert::AlreadyOpen(y), CaseInsert::Created(x)) => assert_eq!(x, y),
                other => panic!("round {round} on {}: {other:?}", a.backend()),
            }
        }
        assert_eq!(a.open_cases().await.unwrap().len(), 20);
        b.close().await;
        t.done().await;
    }
}

/// `streetgate store copy`: a SQLite store with something in every table arrives in
/// PostgreSQL whole, ids kept, and PostgreSQL's ids continue after them.
#[tokio::test]
async fn sqlite_copies_to_postgres() {
    let Some(url) = server_url() else {
        eprintln!("STREETGATE_TEST_PG_URL is not set: copy to PostgreSQL not tested");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let devices = parse_csv(CSV.as_bytes()).unwrap();
    from.upsert_devices(&devices, 1).await.unwrap();
    from.write_batch(&WriteBatch {
        readings: vec![ReadingRecord {
            device_id: "SL-1".into(),
            reading_type: "telemetry",
            received_ms: 7,
            body: "{\"t\":7}".into(),
            seq_state: Some(SeqState {
                last_seq: 3,
                seen: u64::MAX,
                valid: u64::MAX,
                missing: 1,
                restarts: 0,
                accepted: 3,
            }),
        }],
        unregistered: vec![UnregisteredSighting {
            device_id: "X-1".into(),
            claimed_kind: Some("bin"),
            at_ms: 5,
            topic: "streetgate/v1/X-1/status".into(),
            count: 1,
        }],
        rejection_deltas: vec![("malformed".into(), 2)],
        keep_history: true,
    })
    .await
    .unwrap();
    let night = LightingDay {
        segment: "S-1".into(),
        day: 20_758,
        grid: "G1".into(),
        road_class: Some("main".into()),
        lit_s: 99,
        expected_s: 100,
    };
    from.save_lighting_days(std::slice::from_ref(&night))
        .await
        .unwrap();
    let written = ReportRecord {
        month: "2026-11".into(),
        written_ms: 3,
        files: "bulletin-2026-11.html".into(),
    };
    assert!(from.record_report(&written).await.unwrap());
    // Case 1 closed, case 2 open with two history entries.
    let mut first = case("device:BN-1", "alarm:bin_full", CaseState::Dispatched);
    let CaseInsert::Created(id1) = from
        .insert_case(&first, &entry(1, None, CaseState::Dispatched))
        .await
        .unwrap()
    else {
        panic!()
    };
    first.id = id1;
    first.state = CaseState::Closed;
    first.closed_ms = Some(2);
    assert!(
        from.update_case(
            &first,
            CaseState::Dispatched,
            &[entry(2, Some(CaseState::Dispatched), CaseState::Closed)]
        )
        .await
        .unwrap()
    );
    let reopened = case("device:BN-1", "alarm:bin_full", CaseState::Dispatched);
    let CaseInsert::Created(id2) = from
        .insert_case(&reopened, &entry(3, None, CaseState::Dispatched))
        .await
        .unwrap()
    else {
        panic!()
    };
    from.record_delivery(&DeliveryRecord {
        id: 0,
        sink: "mqtt".into(),
        event_id: 1,
        case_id: id1,
        status: DeliveryStatus::Delivered,
        attempts: 1,
        response_status: None,
        last_error: None,
        first_attempt_ms: 1,
        finished_ms: 1,
    })
    .await
    .unwrap();
    let cmd = from
        .insert_command(&CommandRecord {
            id: 0,
            device_id: "SL-1".into(),
            action: serde_json::json!({"action": "on"}),
            actor: "ops".into(),
            transport: "mqtt".into(),
            state: CommandState::Sent,
            detail: String::new(),
            requested_ms: 4,
            finished_ms: None,
        })
        .await
        .unwrap();
    from.save_rule_state("{\"v\":1}", 9).await.unwrap();
    let photo = from
        .insert_photo(id2, "image/png", b"\x89PNG\r\n\x1a\n\0\xff", "ops", 4)
        .await
        .unwrap();

    let db = ScratchDatabase::create(&url).await.unwrap();
    let to = PgStore::connect(&db.url, 4).await.unwrap();
    let report = super::admin::copy_sqlite_to_postgres(&from, &to)
        .await
        .unwrap();
    assert_eq!(report.get("cases"), Some(&2), "{report:?}");
    assert_eq!(report.get("case_history"), Some(&3), "{report:?}");

    let mut back = to.list_devices().await.unwrap();
    back.sort_by(|a, b| b.id.cmp(&a.id));
    assert_eq!(back, devices);
    assert_eq!(
        to.latest_readings("SL-1").await.unwrap(),
        from.latest_readings("SL-1").await.unwrap()
    );
    assert_eq!(
        to.seq_states().await.unwrap(),
        from.seq_states().await.unwrap()
    );
    assert_eq!(
        to.list_unregistered(10).await.unwrap(),
        from.list_unregistered(10).await.unwrap()
    );
    assert_eq!(
        to.rejection_totals().await.unwrap(),
        from.rejection_totals().await.unwrap()
    );
    for id in [id1, id2] {
        assert_eq!(
            to.get_case(id).await.unwrap(),
            from.get_case(id).await.unwrap()
        );
        assert_eq!(
            to.case_history(id).await.unwrap(),
            from.case_history(id).await.unwrap()
        );
    }
    assert_eq!(
        to.list_deliveries(None, None, 10).await.unwrap(),
        from.list_deliveries(None, None, 10).await.unwrap()
    );
    assert_eq!(to.alert_cursor("mqtt").await.unwrap(), 1);
    assert_eq!(to.list_commands(None, 10).await.unwrap()[0].id, cmd);
    assert_eq!(
        to.photo(id2, photo).await.unwrap(),
        from.photo(id2, photo).await.unwrap(),
        "photos are copied byte for byte"
    );
    assert_eq!(
        to.load_rule_state().await.unwrap(),
        Some(("{\"v\":1}".to_owned(), 9))
    );
    assert_eq!(to.lighting_days(0, i64::MAX).await.unwrap(), [night]);
    assert_eq!(to.reports().await.unwrap(), [written]);
    // New rows continue after the copied ids; the open case is still deduplicated.
    assert_eq!(
        to.insert_case(&reopened, &entry(5, None, CaseState::Dispatched))
            .await
            .unwrap(),
        CaseInsert::AlreadyOpen(id2)
    );
    let other = case("device:MH-9", "alarm:cover_open", CaseState::Registered);
    let CaseInsert::Created(id3) = to
        .insert_case(&other, &entry(6, None, CaseState::Registered))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(id3 > id2);
    // A second copy into the same (now filled) database is refused.
    let again = super::admin::copy_sqlite_to_postgres(&from, &to)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("not empty"), "{again}");
    to.close().await;
    db.drop_database().await.unwrap();
}

/// The lease: one holder at a time, renewed only by its holder and epoch, taken over once it
/// has expired, released at once on an orderly stop.
#[tokio::test]
async fn lease_has_one_holder_and_expires() {
    for t in stores().await {
        let s = t.store.clone();
        assert_eq!(s.lease_state().await.unwrap().held, None);
        let a = s
            .acquire_lease("a", 400)
            .await
            .unwrap()
            .expect("free lease");
        assert_eq!(s.acquire_lease("b", 400).await.unwrap(), None, "held by a");
        assert!(s.renew_lease("a", a, 400).await.unwrap());
        assert!(!s.renew_lease("b", a, 400).await.unwrap());
        let state = s.lease_state().await.unwrap();
        let held = state.held.expect("held");
        assert_eq!((held.holder.as_str(), held.epoch), ("a", a));
        assert!(
            held.expires_ms > state.now_ms,
            "{held:?} at {}",
            state.now_ms
        );
        // a stops renewing: b takes over after the expiry, with a new epoch; a cannot renew.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let b = s
            .acquire_lease("b", 400)
            .await
            .unwrap()
            .expect("expired lease");
        assert!(b > a);
        assert!(
            !s.renew_lease("a", a, 400).await.unwrap(),
            "a was fenced out"
        );
        // An orderly stop frees it at once.
        s.release_lease("b", b).await.unwrap();
        assert!(s.acquire_lease("a", 60_000).await.unwrap().is_some());
        t.done().await;
    }
}

fn test_user(name: &str) -> UserRecord {
    UserRecord {
        id: 0,
        name: name.to_owned(),
        role: crate::auth::Role::TeamMember,
        team: Some("lighting".to_owned()),
        grid: None,
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
        disabled: false,
        created_ms: 1,
        password_changed_ms: 1,
    }
}

#[tokio::test]
async fn users_sessions_tokens_and_disabling() {
    for t in stores().await {
        let s = t.store.clone();
        assert_eq!(s.count_users().await.unwrap(), 0);
        let id = s.insert_user(&test_user("li.wei")).await.unwrap().unwrap();
        assert_eq!(s.insert_user(&test_user("li.wei")).await.unwrap(), None);
        let back = s.user_by_name("li.wei").await.unwrap().unwrap();
        assert_eq!(
            (back.id, back.role, back.team.as_deref()),
            (id, crate::auth::Role::TeamMember, Some("lighting"))
        );
        assert!(s.set_password(id, "$argon2id$new", 5).await.unwrap());
        assert_eq!(
            s.user_by_id(id).await.unwrap().unwrap().password_changed_ms,
            5
        );

        for (hash, created, seen) in [("a", 100, 100), ("b", 100, 900), ("c", 10, 950)] {
            s.insert_session(&SessionRecord {
                token_hash: hash.to_owned(),
                user_id: id,
                created_ms: created,
                last_seen_ms: seen,
                peer: Some("127.0.0.1:1".to_owned()),
            })
            .await
            .unwrap();
        }
        // Idle since before 500, or signed in before 50: a and c.
        assert_eq!(s.delete_expired_sessions(500, 50).await.unwrap(), 2);
        assert!(s.session_by_hash("b").await.unwrap().is_some());
        s.touch_session("b", 999).await.unwrap();
        assert_eq!(
            s.session_by_hash("b").await.unwrap().unwrap().last_seen_ms,
            999
        );

        let token = TokenRecord {
            id: 0,
            token_hash: "th".to_owned(),
            name: "app".to_owned(),
            user_id: id,
            user: String::new(),
            role: crate::auth::Role::TeamMember,
            team: Some("lighting".to_owned()),
            grid: None,
            created_by: "admin".to_owned(),
            created_ms: 1,
            expires_ms: None,
            last_used_ms: None,
            revoked_ms: None,
        };
        let tid = s.insert_token(&token).await.unwrap();
        let tok = s.token_by_hash("th").await.unwrap().unwrap();
        assert_eq!((tok.id, tok.user.as_str()), (tid, "li.wei"));
        s.touch_token(tid, 7).await.unwrap();
        assert_eq!(s.list_tokens().await.unwrap()[0].last_used_ms, Some(7));

        // Disabling ends the sessions and revokes the tokens.
        assert!(s.set_user_disabled(id, true, 20).await.unwrap());
        assert!(s.session_by_hash("b").await.unwrap().is_none());
        assert_eq!(
            s.token_by_hash("th").await.unwrap().unwrap().revoked_ms,
            Some(20)
        );
        assert!(!s.revoke_token(tid, 30).await.unwrap(), "revoked already");
        assert!(s.user_by_name("li.wei").await.unwrap().unwrap().disabled);
        t.done().await;
    }
}

#[tokio::test]
async fn audit_filters_and_pages_newest_first() {
    for t in stores().await {
        let s = t.store.clone();
        for (i, (actor, status)) in [
            (Some("a"), 200u16),
            (Some("b"), 403),
            (None, 401),
            (Some("a"), 409),
        ]
        .into_iter()
        .enumerate()
        {
            s.insert_audit(&AuditEntry {
                id: 0,
                at_ms: i64::try_from(i).unwrap() * 10,
                actor: actor.map(str::to_owned),
                auth: actor.map(|_| "token".to_owned()),
                method: "POST".to_owned(),
                route: "/api/cases/{id}/transitions".to_owned(),
                target: Some(i.to_string()),
                peer: Some("127.0.0.1:9".to_owned()),
                status,
            })
            .await
            .unwrap();
        }
        let page = |f: AuditFilter| {
            let s = s.clone();
            async move {
                s.list_audit(&AuditFilter { limit: 100, ..f })
                    .await
                    .unwrap()
            }
        };
        let (total, all) = page(AuditFilter::default()).await;
        assert_eq!(total, 4);
        assert_eq!(all[0].target.as_deref(), Some("3"), "newest first");
        let (n, _) = page(AuditFilter {
            actor: Some("a".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 2);
        let (n, _) = page(AuditFilter {
            min_status: Some(400),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 3);
        let (n, _) = page(AuditFilter {
            from_ms: Some(10),
            to_ms: Some(30),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 2);
        let (total, one) = s
            .list_audit(&AuditFilter {
                limit: 1,
                offset: 2,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (total, one.len(), one[0].target.as_deref()),
            (4, 1, Some("1"))
        );
        // Entries at 0 and 10 are older than 20: trimmed.
        assert_eq!(s.trim_audit(20).await.unwrap(), 2);
        assert_eq!(page(AuditFilter::default()).await.0, 2);
        t.done().await;
    }
}

#[tokio::test]
async fn case_photos_round_trip() {
    for t in stores().await {
        let s = t.store.clone();
        let c = case("device:MH-1", "alarm:cover_open", CaseState::Accepted);
        let CaseInsert::Created(id) = s
            .insert_case(&c, &entry(1_000, None, CaseState::Accepted))
            .await
            .unwrap()
        else {
            panic!("created")
        };
        assert!(s.case_photos(id).await.unwrap().is_empty());
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 1, 2, 255];
        let p1 = s
            .insert_photo(id, "image/jpeg", &jpeg, "li.wei", 2_000)
            .await
            .unwrap();
        let p2 = s
            .insert_photo(id, "image/png", b"\x89PNG\r\n\x1a\n", "li.wei", 2_001)
            .await
            .unwrap();
        let listed = s.case_photos(id).await.unwrap();
        assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), [p1, p2]);
        assert_eq!(listed[0].size_bytes, 8);
        assert_eq!(listed[0].uploader, "li.wei");
        let (record, bytes) = s.photo(id, p1).await.unwrap().expect("stored");
        assert_eq!(bytes, jpeg, "the bytes come back as sent");
        assert_eq!(record.content_type, "image/jpeg");
        // A photo belongs to its case: another case number does not reach it.
        assert!(s.photo(id + 1, p1).await.unwrap().is_none());
        t.done().await;
    }
}

fn history(action: &str, at: i64, from: CaseState, to: CaseState) -> CaseHistoryEntry {
    CaseHistoryEntry {
        action: action.into(),
        at_ms: at,
        actor: "system".into(),
        from: Some(from),
        to,
        note: format!("{action} at {at}"),
    }
}

/// The cases a period touches: registered before its end and not finished before its start,
/// or with history inside it; their history up to its end. Lighting days replace by segment
/// and day; a month's report is recorded once.
#[tokio::test]
async fn period_cases_lighting_days_and_reports() {
    use CaseState as S;
    for t in stores().await {
        let s = t.store.clone();
        // (subject, opened, closed at): the period is [100, 200).
        let mut ids = Vec::new();
        for (subject, opened, closed) in [
            ("before", 10, Some(50)),   // finished before: not touched
            ("spans", 20, Some(150)),   // closed inside
            ("open", 30, None),         // still open at the end
            ("inside", 120, Some(130)), // all inside
            ("after", 200, None),       // registered at the end: not touched
            ("late", 40, Some(250)),    // closed after the end
        ] {
            let mut c = case(
                &format!("device:{subject}"),
                "alarm:bin_full",
                S::Registered,
            );
            c.opened_ms = opened;
            let CaseInsert::Created(id) = s
                .insert_case(&c, &entry(opened, None, S::Registered))
                .await
                .unwrap()
            else {
                panic!("{subject}")
            };
            c.id = id;
            if let Some(at) = closed {
                c.state = S::Closed;
                c.closed_ms = Some(at);
                let entries = [
                    history("dispatch", opened + 1, S::Registered, S::Dispatched),
                    history("close", at, S::Dispatched, S::Closed),
                ];
                assert!(s.update_case(&c, S::Registered, &entries).await.unwrap());
            }
            ids.push((subject, id));
        }
        let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1;
        let p = s.period_cases(100, 200).await.unwrap();
        let touched: Vec<i64> = p.cases.iter().map(|c| c.id).collect();
        assert_eq!(touched, [id("spans"), id("open"), id("inside"), id("late")]);
        // History before the end only: the late close (250) is left out.
        let late: Vec<&str> = p
            .history
            .iter()
            .filter(|(c, _)| *c == id("late"))
            .map(|(_, e)| e.action.as_str())
            .collect();
        assert_eq!(late, ["register", "dispatch"]);
        // Notes only where the evaluation reads them: a dispatch's names the team.
        let notes: Vec<&str> = p
            .history
            .iter()
            .filter(|(c, _)| *c == id("spans"))
            .map(|(_, e)| e.note.as_str())
            .collect();
        assert_eq!(notes, ["", "dispatch at 21", ""]);
        assert!(p.history.iter().all(|(_, e)| e.at_ms < 200));
        // A case closed before the period but acted on inside it (a reopen) is touched.
        let mut before = s.get_case(id("before")).await.unwrap().unwrap();
        before.state = S::Dispatched;
        before.closed_ms = None;
        let reopen = [history("reopen", 110, S::Closed, S::Dispatched)];
        assert!(s.update_case(&before, S::Closed, &reopen).await.unwrap());
        let p = s.period_cases(100, 200).await.unwrap();
        assert_eq!(p.cases.len(), 5);

        let day = |d: i64, lit: i64| LightingDay {
            segment: "S-1".into(),
            day: d,
            grid: "G1".into(),
            road_class: Some("back".into()),
            lit_s: lit,
            expected_s: 100,
        };
        s.save_lighting_days(&[day(1, 50), day(2, 60), day(3, 70)])
            .await
            .unwrap();
        s.save_lighting_days(&[day(2, 95)]).await.unwrap();
        assert_eq!(
            s.lighting_days(2, 4).await.unwrap(),
            [day(2, 95), day(3, 70)]
        );

        let report = ReportRecord {
            month: "2026-11".into(),
            written_ms: 5,
            files: "a,b".into(),
        };
        assert!(s.record_report(&report).await.unwrap());
        assert!(
            !s.record_report(&ReportRecord {
                written_ms: 6,
                ..report.clone()
            })
            .await
            .unwrap()
        );
        assert_eq!(s.reports().await.unwrap(), [report]);
        t.done().await;
    }
}
