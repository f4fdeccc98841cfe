//! The `streetgate` binary as a child process, for tests that kill it with SIGKILL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on loopback (released before use: a tiny race, acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A gateway process on fixed ports, store and inventory in `dir`.
pub struct Process {
    child: Child,
}

impl Process {
    /// Start `streetgate run` with the embedded broker on `broker`, plus `env` overrides.
    pub fn start(dir: &Path, http: u16, broker: u16, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streetgate"));
        cmd.arg("run")
            .current_dir(dir)
            .env("STREETGATE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("STREETGATE_BROKER_LISTEN", format!("127.0.0.1:{broker}"))
            // The tests' publishers send for several devices each.
            .env("STREETGATE_BROKER_AUTH", "open")
            .env("STREETGATE_STORE_PATH", dir.join("data/streetgate.db"))
            .env("STREETGATE_INVENTORY_IMPORT_CSV", dir.join("inventory.csv"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("start the streetgate binary"),
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An administrator's API token in the store under `dir` (created before the process starts,
/// as `streetgate user token admin` would).
pub async fn admin_token(dir: &Path) -> String {
    use streetgate_gateway::store::Store;
    let store = streetgate_gateway::store::SqliteStore::open(&dir.join("data/streetgate.db"))
        .await
        .expect("store");
    let token = super::token_in(
        &store,
        streetgate_gateway::auth::FIRST_ADMIN,
        streetgate_gateway::auth::Role::Admin,
        None,
        None,
    )
    .await;
    store.close().await;
    token
}

/// Wait for the process to serve and hold its subscriptions (connection refused meanwhile;
/// anonymous callers see `status` only: `ok` once the ingest is connected).
pub async fn healthy(port: u16) {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(&url).send().await {
            if let Ok(h) = r.json::<serde_json::Value>().await {
                if h["status"] == "ok" {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gateway on port {port} never became healthy");
}
