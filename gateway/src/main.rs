//! `streetgate` command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    let cancel = running.cancel_token();
    tokio::select! {
        r = shutdown_signal() => r.context("waiting for the shutdown signal")?,
        () = cancel.cancelled() => tracing::error!("a critical task failed"),
    }
    running.shutdown().await
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
