//! `streetgate` command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use streetgate_gateway::app;
use streetgate_gateway::auth::{self, Role};
use streetgate_gateway::config::{Config, StoreBackend, redact_url};
use streetgate_gateway::store::sql::admin::{OpenedStore, copy_sqlite_to_postgres};
use streetgate_gateway::store::{PgStore, SqliteStore, Store};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: the ingest path allocates per message on one
/// thread and frees on another, which glibc's allocator handles poorly (measured in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// streetgate: IoT sensing gateway for street infrastructure.
#[derive(Debug, Parser)]
#[command(name = "streetgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded broker, SQLite and HTTP on localhost when no config is given).
    Run {
        /// TOML configuration file; `STREETGATE_*` environment variables override it.
        #[arg(long, short, env = "STREETGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file (with the environment overrides) and print the effective
    /// configuration.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Show the configured store's migrations (applied or pending); `--apply` applies the
    /// pending ones (`run` also applies them at start).
    Migrate {
        /// TOML configuration file; `STREETGATE_*` environment variables override it.
        #[arg(long, short, env = "STREETGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Apply the pending migrations.
        #[arg(long)]
        apply: bool,
    },
    /// Store administration.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Users and API tokens in the configured store (docs/access.md).
    User {
        /// TOML configuration file (its store.path is used); `STREETGATE_*` override it.
        #[arg(long, short, env = "STREETGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Devices' MQTT credentials in the configured store (docs/access.md).
    Device {
        /// TOML configuration file (its store is used); `STREETGATE_*` override it.
        #[arg(long, short, env = "STREETGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Issue MQTT credentials (user name = client id = device id, a random secret) and write
    /// them once, as CSV `id,username,password`, for provisioning. Without DEVICE or --all:
    /// the MQTT devices that have none. Issuing replaces a device's secret; a running gateway
    /// learns secrets issued here when it restarts (`POST /api/devices/{id}/credentials`
    /// takes effect at once).
    Credentials {
        /// Devices to issue new secrets to.
        devices: Vec<String>,
        /// Every MQTT device in the inventory gets a new secret.
        #[arg(long, conflicts_with = "devices")]
        all: bool,
        /// Write the CSV here (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Add the issued secrets to this Mosquitto password file (created if missing; lines
        /// of other users are kept, and the gateway's `mqtt.username` and
        /// `mqtt.publisher_username` are written too, with `mqtt.password`, when it is set).
        #[arg(long)]
        mosquitto_passwd: Option<PathBuf>,
        /// Write a Mosquitto ACL confining each device to its own topics (the gateway's users,
        /// `mqtt.username` and `mqtt.publisher_username`, may use the whole tree).
        #[arg(long)]
        mosquitto_acl: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy a SQLite store into a new, empty PostgreSQL database (migrated first), ids kept, in
    /// one transaction. Stop the gateway first.
    Copy {
        /// The SQLite file to copy (store.path of the deployment).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database, `postgres://user:password@host:port/database`.
        #[arg(long, env = "STREETGATE_STORE_URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; prints a random password unless --password-stdin.
    Add {
        /// Sign-in name (letters, digits, . _ - @).
        name: String,
        /// admin, dispatcher, team_member, lamp_operator or viewer.
        #[arg(long)]
        role: Role,
        /// The team of a team member.
        #[arg(long)]
        team: Option<String>,
        /// The grid a viewer is limited to.
        #[arg(long)]
        grid: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (a random one, printed, unless --password-stdin); their sessions
    /// end.
    Passwd {
        /// The user.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users.
    List,
    /// Issue an API token acting as a user, with the user's role and scope; printed once.
    Token {
        /// The user the token acts as.
        name: String,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        label: String,
        /// Days until it stops working; without it, until revoked.
        #[arg(long)]
        expires_days: Option<u32>,
    },
}

fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run { config } => run(config).await,
        Command::CheckConfig { file } => check_config(&file),
        Command::Migrate { config, apply } => migrate(config, apply).await,
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => store_copy(&from, &to).await,
        Command::User { config, command } => user(config, command).await,
        Command::Device {
            config,
            command:
                DeviceCommand::Credentials {
                    devices,
                    all,
                    out,
                    mosquitto_passwd,
                    mosquitto_acl,
                },
        } => {
            device_credentials(
                config,
                CredentialsRequest {
                    devices,
                    all,
                    out,
                    mosquitto_passwd,
                    mosquitto_acl,
                },
            )
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file))?;
    println!("# {}: OK. Effective configuration:", file.display());
    print!("{}", config.to_toml_redacted());
    Ok(())
}

async fn migrate(config_file: Option<PathBuf>, apply: bool) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let location = match config.store.backend {
        StoreBackend::Sqlite => config.store.path.display().to_string(),
        StoreBackend::Postgres => redact_url(config.store.url.as_deref().unwrap_or_default()),
    };
    let store = OpenedStore::open(&config.store)
        .await
        .with_context(|| format!("opening the store at {location}"))?;
    let before = store.migrations().await?;
    let pending = before.iter().filter(|m| !m.applied).count();
    if apply && pending > 0 {
        store.migrate().await.context("applying the migrations")?;
    }
    let after = store.migrations().await?;
    println!("{location}:");
    for m in &after {
        let was = before.iter().any(|b| b.version == m.version && b.applied);
        let state = match (m.applied, was) {
            (true, true) => "applied",
            (true, false) => "applied now",
            (false, _) => "pending",
        };
        println!("  {:04} {:<28} {state}", m.version, m.description);
    }
    if !apply && pending > 0 {
        println!("{pending} pending: `streetgate migrate --apply` applies them");
    }
    store.into_store().close().await;
    Ok(())
}

async fn store_copy(from: &std::path::Path, to: &str) -> anyhow::Result<()> {
    if !from.exists() {
        anyhow::bail!("--from {}: no such file", from.display());
    }
    let source = SqliteStore::open(from)
        .await
        .with_context(|| format!("opening the SQLite store {}", from.display()))?;
    let target = PgStore::connect(to, 4)
        .await
        .with_context(|| format!("opening the PostgreSQL store {}", redact_url(to)))?;
    let report = copy_sqlite_to_postgres(&source, &target)
        .await
        .context("copying")?;
    for (table, rows) in &report {
        println!("  {table:<24} {rows:>10} rows");
    }
    println!(
        "copied {} into {}; set store.backend = \"postgres\" and store.url to use it",
        from.display(),
        redact_url(to)
    );
    source.close().await;
    target.close().await;
    Ok(())
}

async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Broker clients, HTTP connections and Modbus endpoints each hold a descriptor.
    streetgate_gateway::limits::raise_nofile_logged();
    let config = Config::load(config_file.as_deref())?;
    match &config_file {
        Some(f) => tracing::info!(file = %f.display(), "configuration loaded"),
        None => tracing::info!("no configuration file: embedded defaults"),
    }
    let running = if config.ha.enabled {
        let signal = async {
            if let Err(e) = shutdown_signal().await {
                tracing::error!(error = %e, "waiting for the shutdown signal");
            }
        };
        match app::start_ha(config, signal).await? {
            Some(running) => running,
            None => return Ok(()),
        }
    } else {
        app::start(config).await?
    };
    if let Some(password) = &running.first_admin_password {
        println!(
            "First start: created the administrator {}. Sign in at http://{}/api/session with\n  user:     {}\n  password: {password}\n(shown only now; change it with POST /api/session/password or `streetgate user passwd {}`)",
            auth::FIRST_ADMIN,
            running.http_addr,
            auth::FIRST_ADMIN,
            auth::FIRST_ADMIN,
        );
    }
    let cancel = running.cancel_token();
    tokio::select! {
        r = shutdown_signal() => r.context("waiting for the shutdown signal")?,
        () = cancel.cancelled() => tracing::error!("a critical task failed"),
    }
    let lease_lost = running.lease_lost();
    running.shutdown().await?;
    if lease_lost {
        anyhow::bail!("the lease was lost: this gateway stopped so that the standby takes over");
    }
    Ok(())
}

fn read_password(stdin: bool) -> anyhow::Result<Option<String>> {
    if !stdin {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    auth::check_password(&password)?;
    Ok(Some(password))
}

/// What `streetgate device credentials` was asked for.
struct CredentialsRequest {
    devices: Vec<String>,
    all: bool,
    out: Option<PathBuf>,
    mosquitto_passwd: Option<PathBuf>,
    mosquitto_acl: Option<PathBuf>,
}

async fn device_credentials(
    config_file: Option<PathBuf>,
    request: CredentialsRequest,
) -> anyhow::Result<()> {
    use streetgate_gateway::broker::ClientAuth;
    use streetgate_gateway::inventory::credentials;
    use streetgate_gateway::model::Transport;

    let config = Config::load(config_file.as_deref())?;
    let store = app::open_store(&config.store).await?;
    let result = async {
        let inventory = store.list_devices().await?;
        let auth = ClientAuth::new(config.broker.auth, Vec::new());
        auth.load(store.device_credentials().await?);
        let ids: Vec<String> = if !request.devices.is_empty() {
            for id in &request.devices {
                if !inventory.iter().any(|d| d.id.as_str() == id) {
                    anyhow::bail!("device {id} is not in the inventory");
                }
            }
            request.devices.clone()
        } else if request.all {
            inventory
                .iter()
                .filter(|d| d.transport == Transport::Mqtt)
                .map(|d| d.id.to_string())
                .collect()
        } else {
            credentials::without_credentials(&auth, &inventory)
                .into_iter()
                .map(|d| d.id.to_string())
                .collect()
        };
        let now = streetgate_gateway::clock::wall_ms();
        let issued = credentials::issue(store.as_ref(), &auth, &ids, now).await?;
        let csv = credentials::to_csv(&issued);
        match &request.out {
            Some(path) => {
                write_private(path, csv.as_bytes())?;
                eprintln!(
                    "{} device credential(s) written to {}",
                    issued.len(),
                    path.display()
                );
            }
            None => print!("{csv}"),
        }
        if let Some(path) = &request.mosquitto_passwd {
            let mut lines: Vec<(String, String)> = issued
                .iter()
                .map(|c| (c.username.clone(), c.password.clone()))
                .collect();
            if let Some(password) = &config.mqtt.password {
                for user in gateway_users(&config) {
                    lines.push((user.to_owned(), password.clone()));
                }
            }
            let kept = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).context(format!("reading {}", path.display())),
            };
            let mut file = String::new();
            for line in kept.lines() {
                let user = line.split(':').next().unwrap_or_default();
                if !line.trim().is_empty() && !lines.iter().any(|(u, _)| u == user) {
                    file.push_str(line);
                    file.push('\n');
                }
            }
            for (user, password) in &lines {
                file.push_str(&credentials::mosquitto_password_line(user, password));
                file.push('\n');
            }
            write_private(path, file.as_bytes())?;
            eprintln!("Mosquitto password file {} updated", path.display());
        }
        if let Some(path) = &request.mosquitto_acl {
            std::fs::write(path, credentials::mosquitto_acl(&gateway_users(&config)))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("Mosquitto ACL written to {}", path.display());
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}

/// The gateway's MQTT users: `mqtt.username` (default `streetgate`) and
/// `mqtt.publisher_username` when set.
fn gateway_users(config: &Config) -> Vec<&str> {
    let mut users = vec![config.mqtt.username.as_deref().unwrap_or("streetgate")];
    users.extend(config.mqtt.publisher_username.as_deref());
    users.dedup();
    users
}

/// Write a file only its owner may read (it holds secrets).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

async fn user(config_file: Option<PathBuf>, command: UserCommand) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let store = app::open_store(&config.store).await?;
    let now = streetgate_gateway::clock::wall_ms();
    let result = user_command(store.as_ref(), command, now).await;
    store.close().await;
    result
}

async fn user_command(store: &dyn Store, command: UserCommand, now: i64) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            role,
            team,
            grid,
            password_stdin,
        } => {
            let given = read_password(password_stdin)?;
            let generated = given.is_none();
            let (user, password) =
                auth::add_user(store, &name, role, team, grid, given, now).await?;
            println!("added {} ({})", user.name, user.role);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let user = store
                .user_by_name(&name)
                .await?
                .with_context(|| format!("no user named {name:?}"))?;
            let given = read_password(password_stdin)?;
            let generated = given.is_none();
            let password = given.unwrap_or_else(auth::random_password);
            store
                .set_password(user.id, &auth::hash_password(&password)?, now)
                .await?;
            store.delete_user_sessions(user.id, None).await?;
            println!("password of {} changed; their sessions ended", user.name);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            for u in store.list_users().await? {
                let scope = match (&u.team, &u.grid) {
                    (Some(t), _) => format!(" team {t}"),
                    (None, Some(g)) => format!(" grid {g}"),
                    (None, None) => String::new(),
                };
                let disabled = if u.disabled { " (disabled)" } else { "" };
                println!("{}\t{}{scope}{disabled}", u.name, u.role);
            }
        }
        UserCommand::Token {
            name,
            label,
            expires_days,
        } => {
            let expires_ms = expires_days.map(|d| now + i64::from(d) * 86_400_000);
            let (record, token) = auth::issue_token(
                store, &name, &label, None, None, None, expires_ms, "cli", now,
            )
            .await?;
            println!(
                "token {} for {} ({}); send it as Authorization: Bearer <token>. Shown only now:",
                record.id, record.user, record.role
            );
            println!("{token}");
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        tracing::info!("shutdown signal received");
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        tracing::info!("shutdown signal received");
        Ok(())
    }
}
