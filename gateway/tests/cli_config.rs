//! The `streetgate` binary: `check-config` accepts the sample and names key, value and what is
//! allowed for a bad file; `run` fails cleanly on a taken port.

use std::process::Command;

fn streetgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streetgate"));
    // The caller's environment must not leak overrides into these checks.
    for (k, _) in std::env::vars() {
        if k.starts_with("STREETGATE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn sample_config_checks_ok() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/streetgate.sample.toml");
    let out = streetgate()
        .args(["check-config", sample])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("listen = \"127.0.0.1:8080\""), "{stdout}");
}

#[test]
fn bad_config_names_key_value_and_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[http]\nlisten = \"8080\"\n",
            &["http.listen", "8080", "127.0.0.1:8080"][..],
        ),
        (
            "[pipeline]\ndecode_workers = 0\n",
            &["pipeline.decode_workers = 0", "1..=64"][..],
        ),
        (
            "[mqtt]\nurl = \"ws://broker\"\n",
            &["mqtt.url", "ws://broker", "mqtt://host"][..],
        ),
        (
            "[store]\nbackend = \"mysql\"\n",
            &["store.backend", "mysql", "sqlite"][..],
        ),
        ("[htp]\nlisten = \"x\"\n", &["htp", "http"][..]),
        (
            "[[supervision.levels]]\nafter_due_min = 0\nform = \"phone\"\nrecipients = [\"team\"]\n\
             [[supervision.levels]]\nafter_due_min = 0\nform = \"written\"\nrecipients = [\"centre\"]\n",
            &[
                "supervision.levels[1].after_due_min = 0",
                "later than the level before",
            ][..],
        ),
        (
            "[[supervision.levels]]\nafter_due_min = 0\nform = \"fax\"\nrecipients = [\"team\"]\n",
            &["supervision.levels", "form", "fax", "phone"][..],
        ),
        (
            "[supervision]\non_site_limits_min = { manhole_cover = 0 }\n",
            &[
                "supervision.on_site_limits_min.manhole_cover = 0",
                "positive",
            ][..],
        ),
        (
            "[routing]\nsecond_dispatch_returns = 11\n",
            &["routing.second_dispatch_returns = 11", "0 (never) to 10"][..],
        ),
        (
            "[routing.alternatives.\"*\"]\nbin_full = \"sanitation\"\n",
            &[
                "routing.alternatives.*.bin_full",
                "other than the route's own team",
            ][..],
        ),
        (
            "[[alerts.webhooks]]\nname = \"w\"\nurl = \"http://x\"\nquiet_hours = \"22-7\"\n",
            &["alerts.webhooks", "quiet_hours", "HH:MM-HH:MM"][..],
        ),
        (
            "[[alerts.webhooks]]\nname = \"w\"\nurl = \"http://x\"\nrecipient = \"mayor\"\n",
            &["alerts.webhooks", "recipient", "mayor", "supervisor"][..],
        ),
        (
            "[[alerts.webhooks]]\nname = \"w\"\nurl = \"http://x\"\nfilter = { actions = [\"explode\"] }\n",
            &["alerts.webhooks[0].filter.actions", "explode", "supervise"][..],
        ),
        (
            "[evaluation]\nreport_day = 31\n",
            &["evaluation.report_day = 31", "from 1 to 28"][..],
        ),
    ];
    for (text, needles) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = streetgate()
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        for n in needles {
            assert!(stderr.contains(n), "{text}: {n:?} missing from: {stderr}");
        }
    }
}

#[test]
fn environment_override_is_named_in_errors() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/streetgate.sample.toml");
    let out = streetgate()
        .args(["check-config", sample])
        .env("STREETGATE_HTTP_LISTEN", "everywhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("http.listen")
            && stderr.contains("everywhere")
            && stderr.contains("STREETGATE_HTTP_LISTEN"),
        "{stderr}"
    );
}

#[test]
fn run_reports_a_taken_broker_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = streetgate()
        .arg("run")
        .current_dir(dir.path())
        .env("STREETGATE_BROKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("STREETGATE_HTTP_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("broker.listen") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
    // The default store location was created under the working directory.
    assert!(dir.path().join("streetgate-data/streetgate.db").exists());
}

/// `streetgate user ...` on the store named by the environment; the token it prints works
/// against a gateway on that store, and the first start on it creates no second administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_commands_manage_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/streetgate.db");
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut c = streetgate();
        c.args(args)
            .env("STREETGATE_STORE_PATH", &db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["user", "add", "ops", "--role", "admin"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("password: "), "{out}");
    let (ok, out, err) = run(
        &[
            "user",
            "add",
            "li.wei",
            "--role",
            "team_member",
            "--team",
            "lighting",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    assert!(ok, "{out}{err}");
    assert!(!out.contains("password:"), "{out}");
    let (ok, _, err) = run(&["user", "add", "<script>", "--role", "viewer"], None);
    assert!(!ok && err.contains("name"), "{err}");
    let (ok, _, err) = run(&["user", "add", "x", "--role", "mayor"], None);
    assert!(!ok && err.contains("mayor"), "{err}");
    let (ok, _, err) = run(&["user", "add", "li.wei", "--role", "viewer"], None);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, out, _) = run(&["user", "list"], None);
    assert!(ok);
    assert!(out.contains("li.wei\tteam_member team lighting"), "{out}");
    assert!(out.contains("ops\tadmin"), "{out}");
    let (ok, out, err) = run(&["user", "passwd", "li.wei"], None);
    assert!(ok && out.contains("password: "), "{out}{err}");
    let (ok, out, err) = run(
        &[
            "user",
            "token",
            "ops",
            "--label",
            "ci",
            "--expires-days",
            "1",
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    let token = out.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("sgt_"), "{out}");

    // A gateway on that store: the token works, and no `admin` was made (there are users).
    let mut config = streetgate_gateway::config::Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.listen = "127.0.0.1:0".parse().unwrap();
    config.store.path = db.clone();
    let running = streetgate_gateway::app::start(config).await.unwrap();
    assert!(running.first_admin_password.is_none());
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/users", running.http_addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let users: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["li.wei", "ops"]);
    running.shutdown().await.unwrap();
}
