//! The whole gateway on PostgreSQL (`store.backend = "postgres"`): readings and cases land in a
//! scratch database on the server named by `STREETGATE_TEST_PG_URL`, and survive a restart on
//! that database. Without the variable the test says so and does nothing; with it, a server
//! that does not answer fails the test.

mod common;

use std::time::Duration;

use common::{Gateway, Msg, bin_telemetry, eventually, publish, topic};
use streetgate_gateway::config::{Config, StoreBackend};
use streetgate_gateway::store::sql::postgres::scratch::{ScratchDatabase, server_url};

fn cover_open(seq: u32) -> Msg {
    Msg::new(
        topic("MH-1", "event"),
        format!(
            r#"{{"device_id":"MH-1","seq":{seq},"alarm":"cover_open","state":"raised","value":75.0}}"#
        ),
    )
}

fn on_postgres(url: &str) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.store.backend = StoreBackend::Postgres;
        c.store.url = Some(url.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_on_postgres_and_restarts_on_it() {
    let Some(server) = server_url() else {
        eprintln!("STREETGATE_TEST_PG_URL is not set: the gateway on PostgreSQL is not tested");
        return;
    };
    let db = ScratchDatabase::create(&server)
        .await
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_PG_URL={server}: {e}"));

    let gw = Gateway::start(on_postgres(&db.url)).await;
    let (_, health) = gw.http.get("/api/health").await;
    assert_eq!(health["store"]["backend"], "postgres", "{health}");
    assert_eq!(health["store"]["ok"], true, "{health}");
    assert!(
        !health["store"]["path"]
            .as_str()
            .unwrap_or("")
            .contains(":pw@")
    );
    gw.import_inventory().await;
    let burst: Vec<Msg> = (1..=500)
        .map(|seq| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", seq, 40.0)))
        .chain([cover_open(1)])
        .collect();
    publish(&gw.broker(), burst).await;
    eventually(
        "case for the open cover",
        Duration::from_secs(15),
        || async {
            let (_, cases) = gw.http.get("/api/cases").await;
            cases["cases"][0]["state"] == "dispatched"
        },
    )
    .await;
    // Every PUBACKed reading is committed: the newest is 500 and none is missing.
    let (_, device) = gw.http.get("/api/devices/BN-1").await;
    assert_eq!(
        (device["last_seq"].as_u64(), device["seq_gaps"].as_u64()),
        (Some(500), Some(0)),
        "{device}"
    );
    let (_, history) = gw.http.get("/api/devices/BN-1/history?limit=1000").await;
    let kept = history["readings"].as_array().map_or(0, Vec::len);
    assert!(
        (100..=500).contains(&kept),
        "{kept} readings in the history"
    );
    let (_, before) = gw.http.get("/api/cases").await;
    let id = before["cases"][0]["id"].as_i64().expect("case id");
    gw.running.shutdown().await.expect("clean shutdown");

    // Restart on the same database: the case is there, the same alarm does not duplicate it.
    let gw = Gateway::start(on_postgres(&db.url)).await;
    let (status, case) = gw.http.get(&format!("/api/cases/{id}")).await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["state"], "dispatched");
    let (_, device) = gw.http.get("/api/devices/BN-1").await;
    assert_eq!(device["last_seq"], 500, "{device}");
    publish(&gw.broker(), vec![cover_open(2)]).await;
    eventually(
        "the repeated alarm is stored",
        Duration::from_secs(10),
        || async {
            let (_, device) = gw.http.get("/api/devices/MH-1").await;
            device["last_seq"] == 2
        },
    )
    .await;
    let (_, after) = gw.http.get("/api/cases").await;
    assert_eq!(after["total"], 1, "{after}");
    gw.running.shutdown().await.expect("clean shutdown");
    db.drop_database().await.expect("drop the scratch database");
}
