//! The `strainer` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strainer::config::Config;
use tracing_subscriber::EnvFilter;

/// A content filter for Postfix.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log level or filter (e.g. `info`, `debug`, `strainer=debug`); also STRAINER_LOG.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the filter (listen for Postfix, re-inject what passes).
    Serve {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check or show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Print the main.cf and master.cf lines that wire strainer into Postfix.
    PostfixConfig {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a configuration file and exit non-zero with file:line: key: problem if it is wrong.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the effective configuration, defaults included.
    Show {
        /// Configuration file; without it the embedded defaults are shown.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn init_logging(level: &str) {
    let filter = std::env::var("STRAINER_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.listen).await.with_context(|| {
        format!("cannot listen on {} (server.listen): is another filter already running there?", config.server.listen)
    })?;
    tracing::info!(listen = %config.server.listen, relay = %config.relay.address, protocol = ?config.server.protocol,
        max_sessions = config.server.max_sessions, version = env!("CARGO_PKG_VERSION"), "strainer started");
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL only");
                std::future::pending::<()>().await;
            }
        }
    };
    strainer::serve(&config, listener, stop).await;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { config } => {
            let config = load(config.as_ref())?;
            init_logging(&cli.log_level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve(config))
        }
        Cmd::Config { command: ConfigCmd::Check { file } } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Cmd::Config { command: ConfigCmd::Show { config } } => {
            print!("{}", load(config.as_ref())?.to_toml());
            Ok(())
        }
        Cmd::PostfixConfig { config } => {
            print!("{}", strainer::postfix::wiring(&load(config.as_ref())?));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strainer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
