//! `streetgate` command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use streetgate_gateway::auth::{self, Role};
use streetgate_gateway::store::Store;
use streetgate_gateway::{app, config::Config};
use tracing_subscriber::EnvFilter;

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
    /// Users and API tokens in the configured store (docs/access.md).
    User {
        /// TOML configuration file (its store.path is used); `STREETGATE_*` override it.
        #[arg(long, short, env = "STREETGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
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
        Command::User { config, command } => user(config, command).await,
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

async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    match &config_file {
        Some(f) => tracing::info!(file = %f.display(), "configuration loaded"),
        None => tracing::info!("no configuration file: embedded defaults"),
    }
    let running = app::start(config).await?;
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
    running.shutdown().await
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

async fn user(config_file: Option<PathBuf>, command: UserCommand) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let path = &config.store.path;
    let store = streetgate_gateway::store::sqlite::SqliteStore::open(path)
        .await
        .with_context(|| format!("opening the store {} (store.path)", path.display()))?;
    let now = streetgate_gateway::clock::wall_ms();
    let result = user_command(&store, command, now).await;
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
