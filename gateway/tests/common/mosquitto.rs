//! A real Mosquitto configured as `deploy/mosquitto/streetgate.conf` (listener, persistence and
//! log moved into a temporary directory, anonymous access).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::free_port;

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

/// Password file and ACL of a Mosquitto that authenticates its clients.
pub struct MosquittoAuth<'a> {
    pub password_file: &'a Path,
    pub acl_file: &'a Path,
}

/// The deploy config with the listener on `port`, persistence and log in `dir`, and either
/// anonymous access or the given password file and ACL.
fn test_config(deploy: &str, dir: &Path, port: u16, auth: Option<&MosquittoAuth>) -> String {
    let mut out = String::new();
    for line in deploy.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let line = match (key, auth) {
            ("listener", _) => format!("listener {port} 127.0.0.1"),
            ("persistence_location", _) => format!("persistence_location {}/", dir.display()),
            ("log_dest", _) => format!("log_dest file {}", dir.join("mosquitto.log").display()),
            ("allow_anonymous", None) => "allow_anonymous true".to_owned(),
            ("password_file" | "acl_file" | "use_username_as_clientid", None) => continue,
            ("password_file", Some(a)) => format!("password_file {}", a.password_file.display()),
            ("acl_file", Some(a)) => format!("acl_file {}", a.acl_file.display()),
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Mosquitto started from `bin` with the deploy configuration, data and log in `dir`, anonymous
/// access.
pub fn start_mosquitto(bin: &str, dir: &Path) -> Mosquitto {
    start_mosquitto_with(bin, dir, None)
}

/// Mosquitto started from `bin` with the deploy configuration, data and log in `dir`, and
/// `auth`'s password file and ACL (or anonymous access).
pub fn start_mosquitto_with(bin: &str, dir: &Path, auth: Option<&MosquittoAuth>) -> Mosquitto {
    let deploy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/streetgate.conf"),
    )
    .expect("deploy/mosquitto/streetgate.conf");
    for key in [
        "persistence true",
        "max_queued_messages",
        "max_inflight_messages",
        "queue_qos0_messages false",
        "persistent_client_expiration",
        "acl_file",
        "use_username_as_clientid true",
    ] {
        assert!(
            deploy.lines().any(|l| l.starts_with(key)),
            "deploy config lacks {key}"
        );
    }
    // Mosquitto started as root drops to its own user: it must be able to write here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod the temp dir");
    }
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, test_config(&deploy, dir, port, auth)).expect("write the config");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("STREETGATE_TEST_MOSQUITTO_BIN={bin}: cannot start it: {e}"));
    let m = Mosquitto {
        child,
        port,
        log: dir.join("mosquitto.log"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Mosquitto ({bin}) did not listen on {port}:\n{}", m.log());
}
