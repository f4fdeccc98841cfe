//! Case alerts by e-mail through a real SMTP server (Python's aiosmtpd, from PyPI) that refuses
//! the first message with 451 and then takes them: the refused one is retried, both events of
//! a case arrive, decoded, with the Chinese subject and the case's details.
//!
//! Needs `python3` with `aiosmtpd` (`.ci/run` installs it and sets `STREETGATE_TEST_AIOSMTPD`);
//! without it the test says so and does nothing, unless the variable is set: then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::free_port;
use common::{Gateway, Msg, eventually, publish, topic};
use serde_json::Value;
use streetgate_gateway::alerts::{EmailConfig, SmtpSecurity};

struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn aiosmtpd_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_alerts_arrive_after_a_refusal() {
    let required = std::env::var("STREETGATE_TEST_AIOSMTPD").is_ok();
    if !aiosmtpd_available() {
        assert!(
            !required,
            "STREETGATE_TEST_AIOSMTPD is set but python3 cannot import aiosmtpd"
        );
        eprintln!(
            "note: python3 with aiosmtpd is not available; the e-mail test is skipped (pip install aiosmtpd)"
        );
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
    let _smtp = Smtp(
        Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(out.path())
            .arg("1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server"),
    );
    eventually("SMTP server ready", Duration::from_secs(15), || async {
        out.path().join("ready").exists()
    })
    .await;

    let gw = Gateway::start(move |c| {
        c.alerts.email = vec![EmailConfig {
            name: "municipal-mail".into(),
            server: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            from: "Streetgate <streetgate@city.example>".into(),
            to: vec!["municipal-team@city.example".into()],
            console_url: Some("https://console.example".into()),
            ..EmailConfig::default()
        }];
        c.alerts.poll_interval_ms = 50;
        c.alerts.retry_min_ms = 50;
        c.alerts.retry_max_ms = 200;
    })
    .await;
    gw.import_inventory().await;
    publish(
        &gw.broker(),
        vec![Msg::new(
            topic("MH-1", "event"),
            r#"{"device_id":"MH-1","seq":1,"alarm":"cover_open","state":"raised","value":75.0}"#,
        )],
    )
    .await;
    // registered and dispatched
    eventually("two messages taken", Duration::from_secs(20), || async {
        out.path().join("2.json").exists()
    })
    .await;
    let (_, d) = gw
        .http
        .get("/api/alerts/deliveries?sink=municipal-mail")
        .await;
    let deliveries = d["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(deliveries.len(), 2, "{d}");
    assert!(deliveries.iter().all(|x| x["status"] == "delivered"), "{d}");
    assert_eq!(
        deliveries
            .iter()
            .filter_map(|x| x["attempts"].as_u64())
            .max(),
        Some(2),
        "the refused message was sent again: {d}"
    );
    let mails: Vec<Value> = (1..=2)
        .map(|n| {
            serde_json::from_str(
                &std::fs::read_to_string(out.path().join(format!("{n}.json"))).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let dispatched = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains("已派遣"))
        .unwrap_or_else(|| panic!("no dispatch mail in {mails:?}"));
    assert!(
        dispatched["subject"]
            .as_str()
            .unwrap()
            .contains("【紧急】案件 #"),
        "{dispatched}"
    );
    assert_eq!(dispatched["rcpt"][0], "municipal-team@city.example");
    let body = dispatched["body"].as_str().unwrap();
    for part in [
        "井盖异常",
        "MH-1",
        "320508001001001",
        "https://console.example/cases/",
    ] {
        assert!(body.contains(part), "{part} missing from:\n{body}");
    }
    gw.running.shutdown().await.unwrap();
}
