//! The `payproxy` command: `run` serves a config, `check` validates one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use payproxy::config::{Config, LogFormat};
use payproxy::telemetry;

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
        /// Log line format; overrides the config's `log.format` (default `text`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Validate a config: fields, references, plugins compiled and initialised.
    Check {
        /// Path to the JSON config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match telemetry::init(LogFormat::Text, None)
            .map_err(anyhow::Error::msg)
            .and_then(|_| payproxy::server::check(&config))
        {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Run { config, log_format } => {
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
            match runtime.block_on(run(config, log_format)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(config: PathBuf, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    // Logs and traces are set up from the config before anything else reads it; a config
    // that does not load is reported by `start` below, in text.
    let (format, otlp) = match Config::load(&config) {
        Ok((c, _)) => (log_format.unwrap_or(c.log.format), c.telemetry.otlp),
        Err(_) => (log_format.unwrap_or_default(), None),
    };
    let telemetry = telemetry::init(format, otlp.as_ref()).map_err(anyhow::Error::msg)?;
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
    // Spans still queued are sent before exit.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_flag_overrides_the_config() {
        let cli = Cli::try_parse_from(["payproxy", "run", "-c", "x.json", "--log-format", "json"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Run {
                log_format: Some(LogFormat::Json),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["payproxy", "run", "-c", "x.json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Run {
                log_format: None,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["payproxy", "run", "-c", "x", "--log-format", "xml"]).is_err()
        );
    }
}
