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
