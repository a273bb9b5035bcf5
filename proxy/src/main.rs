//! The `payproxy` command: `run` serves a config, `check` validates one, `plugin new` and
//! `plugin test` are the plugin author's loop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use payproxy::config::{Config, LogFormat, Role};
use payproxy::plugin_cli::new::NewRole;
use payproxy::telemetry;

/// jemalloc instead of glibc's malloc: glibc kept every byte of closed connections (2,000
/// idle keep-alive connections: +62 MiB, all of it still held after they closed), jemalloc
/// gives freed pages back (`scripts/soak.sh`; docs/benchmarks.md), and the payment chain is
/// no slower (1.02× memory store, 1.03× redb, measured side by side).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Write and test plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate for a role: code, golden fixtures, native tests, README.
    New {
        /// The role, against the newest contract the SDK exports for it.
        #[arg(long, value_enum)]
        role: NewRole,
        /// Crate name: lower-case letters, digits and dashes (e.g. dialect-acme).
        name: String,
        /// Directory to create (default: ./NAME); it must not exist.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The payproxy-plugin-sdk crate to depend on (default: the plugin-sdk/ of the
        /// payproxy checkout the plugin is created in, else the one payproxy was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run golden fixtures through a built plugin in the real host (sandbox, limits, checks).
    Test {
        /// The component (.wasm, built for wasm32-wasip2).
        plugin: PathBuf,
        /// A fixture file, or a directory whose *.json fixture files all run.
        #[arg(long)]
        fixtures: PathBuf,
        /// A JSON file used as the plugin's config instead of each fixture file's `config`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load the plugin as this role (default: the role its exports implement).
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// Compile cache directory (default: $XDG_CACHE_HOME or ~/.cache, payproxy/plugin-cache).
        #[arg(long, conflicts_with = "no_cache")]
        cache_dir: Option<PathBuf>,
        /// Compile the plugin without the on-disk compile cache.
        #[arg(long)]
        no_cache: bool,
        /// CPU time per plugin call, as `plugins.NAME.deadline_ms` (default: the host's, 20).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        deadline_ms: Option<u64>,
        /// Memory cap per instance in MiB, as `plugins.NAME.memory_mb` (default: the host's, 32).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        memory_mb: Option<u32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugin(command) => plugin(command),
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
            // Logs and traces are set up from the config before anything else reads it; a
            // config that does not load is reported by `start`, in text.
            let loaded = Config::load(&config).ok().map(|(c, _)| c);
            // The control plane's runtime: admin, reloads, background work. Requests are
            // served by the threads `server::start` starts (`runtime.worker_threads`).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let format = log_format
                .or(loaded.as_ref().map(|c| c.log.format))
                .unwrap_or_default();
            let otlp = loaded.and_then(|c| c.telemetry.otlp);
            match runtime.block_on(run(config, format, otlp)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn plugin(command: PluginCommand) -> ExitCode {
    let result = match command {
        PluginCommand::New {
            role,
            name,
            dir,
            sdk,
        } => payproxy::plugin_cli::new::create(role, &name, dir.as_deref(), sdk.as_deref()).map(
            |created| {
                println!("created {} ({name})", created.dir.display());
                for note in created.notes {
                    println!("note: {note}");
                }
                true
            },
        ),
        PluginCommand::Test {
            plugin,
            fixtures,
            config,
            role,
            cache_dir,
            no_cache,
            deadline_ms,
            memory_mb,
        } => {
            // Warnings (an unusable compile cache) on stderr; PAYPROXY_LOG=off silences them.
            let _ = telemetry::init(LogFormat::Text, None);
            let cache_dir = if no_cache {
                None
            } else {
                cache_dir.or_else(payproxy::plugin_cli::test::default_cache_dir)
            };
            let options = payproxy::plugin_cli::test::TestOptions {
                plugin,
                fixtures,
                config,
                role,
                cache_dir,
                deadline_ms,
                memory_mb,
            };
            payproxy::plugin_cli::test::run(&options).map(|run| {
                print!("{}", run.report);
                run.passed
            })
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(
    config: PathBuf,
    format: LogFormat,
    otlp: Option<payproxy::config::OtlpConfig>,
) -> anyhow::Result<()> {
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

    #[test]
    fn plugin_commands_parse_and_refuse_bad_flags() {
        let cli =
            Cli::try_parse_from(["payproxy", "plugin", "new", "--role", "dialect", "d-x"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Plugin(PluginCommand::New {
                role: NewRole::Dialect,
                ..
            })
        ));
        let cli = Cli::try_parse_from([
            "payproxy",
            "plugin",
            "test",
            "p.wasm",
            "--fixtures",
            "f",
            "--role",
            "router",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Plugin(PluginCommand::Test {
                role: Some(Role::Router),
                no_cache: false,
                ..
            })
        ));
        for bad in [
            &["payproxy", "plugin", "test", "p.wasm"][..],
            &[
                "payproxy",
                "plugin",
                "test",
                "p.wasm",
                "--fixtures",
                "f",
                "--no-cache",
                "--cache-dir",
                "d",
            ],
            &["payproxy", "plugin", "new", "--role", "storage", "x"],
            &["payproxy", "plugin", "new", "x"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
