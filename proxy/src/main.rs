//! The `payproxy` command: `run` serves a config, `check` validates one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "payproxy",
    version,
    about = "Payment routing reverse proxy with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with this config until SIGINT/SIGTERM (SIGHUP reloads).
    Run {
        /// Path to the JSON config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config: fields, references, plugins compiled and initialised.
    Check {
        /// Path to the JSON config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Compiler and runtime crates whose debug output (megabytes per plugin compiled) is not
/// payproxy's: kept at `warn` unless `PAYPROXY_LOG` names them itself.
const QUIET: &[&str] = &[
    "cranelift",
    "wasmtime",
    "regalloc2",
    "wasmparser",
    "wit_parser",
];

/// `PAYPROXY_LOG` (default `info`) with [`QUIET`] crates at `warn` unless it names them.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let spec = spec.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let mut directives = vec![spec.to_string()];
    for krate in QUIET {
        if !spec.contains(krate) {
            directives.push(format!("{krate}=warn"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("PAYPROXY_LOG").ok().as_deref()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journal gets plain `key=value` text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match payproxy::server::check(&config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Run { config } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    match payproxy::server::raise_descriptor_limit() {
        Ok(limit) => tracing::info!(limit, "open file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file descriptor limit"),
    }
    let running = payproxy::server::start(&config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}
