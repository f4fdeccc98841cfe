//! Durability: the gateway process is killed with SIGKILL and restarted on the same store.
//! The open case, its history and the rule state survive; the same condition reported again
//! after the restart does not duplicate the case; its recovery closes it.

mod common;

use std::time::Duration;

use common::process::{Process, free_port, healthy};
use common::{Http, Msg, eventually, publish, topic};

fn event(seq: u32, state: &str) -> Msg {
    Msg::new(
        topic("MH-9", "event"),
        format!(
            r#"{{"device_id":"MH-9","seq":{seq},"alarm":"cover_open","state":"{state}","value":75.0}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_and_rule_state_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("inventory.csv"),
        "id,kind,lat,lon,grid\nMH-9,manhole,31.3,120.6,320508001001001\n",
    )
    .expect("inventory");
    let (http_port, broker_port) = (free_port(), free_port());
    let http = Http::new(format!("127.0.0.1:{http_port}").parse().expect("addr"))
        .with_token(&common::process::admin_token(dir.path()).await);
    let broker = ("127.0.0.1".to_owned(), broker_port);

    let gw = Process::start(dir.path(), http_port, broker_port, &[]);
    healthy(http_port).await;
    publish(&broker, vec![event(1, "raised")]).await;
    eventually("case registered", Duration::from_secs(10), || async {
        let (_, cases) = http.get("/api/cases").await;
        cases["cases"][0]["state"] == "dispatched"
    })
    .await;
    let (_, cases) = http.get("/api/cases").await;
    let id = cases["cases"][0]["id"].as_i64().expect("case id");
    // Let the rule state be persisted (every 10 ticks of 1 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    gw.kill9();

    let gw = Process::start(dir.path(), http_port, broker_port, &[]);
    healthy(http_port).await;
    let (status, again) = http.get(&format!("/api/cases/{id}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["state"], "dispatched");
    let history: Vec<&str> = again["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["to"].as_str())
        .collect();
    assert_eq!(history, ["registered", "dispatched"]);

    // The same condition reported again: still one case.
    publish(&broker, vec![event(2, "raised")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, cases) = http.get("/api/cases").await;
    assert_eq!(cases["total"], 1, "{cases}");

    // Recovery before anyone accepted it: closed as self-recovered, which needs the rule state
    // (the condition active) to have survived the kill.
    publish(&broker, vec![event(3, "cleared")]).await;
    eventually("self-recovered", Duration::from_secs(10), || async {
        let (_, c) = http.get(&format!("/api/cases/{id}")).await;
        c["state"] == "closed" && c["history"].to_string().contains("self-recovered")
    })
    .await;
    drop(gw);
}
