//! A store that stops taking writes: the gateway on PostgreSQL whose database is switched to
//! read-only under load. Health says so at once; nothing sent meanwhile is acknowledged (or
//! lost): readings and the case an alarm causes are held and retried, and all land once the
//! database takes writes again. Needs `STREETGATE_TEST_PG_URL` (skipped with a note without it).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Gateway, Msg, bin_telemetry, eventually, publish, topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sqlx::Connection;
use streetgate_gateway::config::StoreBackend;
use streetgate_gateway::store::sql::postgres::scratch::{ScratchDatabase, server_url};

/// Switch the database to read-only (or back) and drop its sessions, so that the gateway's
/// next connections see it.
async fn set_read_only(server: &str, db: &str, read_only: bool) {
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("connect to the server");
    let on = if read_only { "on" } else { "off" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = {on}"
    )))
    .execute(&mut conn)
    .await
    .expect("alter database");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .execute(&mut conn)
        .await
        .expect("terminate sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_holds_readings_and_cases_until_it_takes_writes() {
    let Some(server) = server_url() else {
        eprintln!("STREETGATE_TEST_PG_URL is not set: the read-only store test is skipped");
        return;
    };
    let db = ScratchDatabase::create(&server)
        .await
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_PG_URL={server}: {e}"));
    let name = db
        .url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .expect("database name")
        .to_owned();
    let gw = Gateway::start(|c| {
        c.store.backend = StoreBackend::Postgres;
        c.store.url = Some(db.url.clone());
    })
    .await;
    gw.import_inventory().await;
    let broker = gw.broker();
    let before: Vec<Msg> = (1..=50)
        .map(|s| Msg::new(topic("BN-1", "telemetry"), bin_telemetry("BN-1", s, 30.0)))
        .collect();
    publish(&broker, before).await;

    set_read_only(&server, &name, true).await;
    // A device keeps sending, and a manhole cover opens.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut opts = MqttOptions::new("BN-1", broker.0.clone(), broker.1);
    opts.set_inflight(200);
    let (client, mut events) = AsyncClient::new(opts, 300);
    let counter = Arc::clone(&acked);
    let device = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for s in 51..=150 {
        client
            .publish(
                topic("BN-1", "telemetry"),
                QoS::AtLeastOnce,
                false,
                bin_telemetry("BN-1", s, 30.0),
            )
            .await
            .expect("queue");
    }
    client
        .publish(
            topic("MH-1", "event"),
            QoS::AtLeastOnce,
            false,
            r#"{"device_id":"MH-1","seq":1,"alarm":"cover_open","state":"raised","value":75.0}"#,
        )
        .await
        .expect("queue");

    eventually(
        "health says the store refuses writes",
        Duration::from_secs(15),
        || async {
            let (status, h) = gw.http.get("/api/health").await;
            status == 503 && h["store"]["writable"] == false && h["status"] == "unavailable"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        acked.load(Ordering::Relaxed),
        0,
        "nothing is acknowledged while the store refuses writes"
    );
    let (_, h) = gw.http.get("/api/health").await;
    assert!(
        h["store"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("read-only"),
        "{h}"
    );

    set_read_only(&server, &name, false).await;
    eventually(
        "every message acknowledged",
        Duration::from_secs(30),
        || async { acked.load(Ordering::Relaxed) == 101 },
    )
    .await;
    let (_, d) = gw.http.get("/api/devices/BN-1").await;
    assert_eq!(
        (d["last_seq"].as_u64(), d["seq_gaps"].as_u64()),
        (Some(150), Some(0)),
        "{d}"
    );
    let (_, cases) = gw.http.get("/api/cases").await;
    assert_eq!(cases["total"], 1, "{cases}");
    assert_eq!(cases["cases"][0]["case_type"], "manhole_cover", "{cases}");
    let (status, h) = gw.http.get("/api/health").await;
    assert_eq!(
        (status, h["store"]["writable"].as_bool()),
        (200, Some(true)),
        "{h}"
    );
    device.abort();
    gw.running.shutdown().await.expect("shutdown");
    db.drop_database().await.expect("drop the scratch database");
}
