//! `provider-sim`: simulated payment providers on loopback, for the payproxy demo.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use provider_sim::{parse_provider_arg, Simulator, DEFAULT_PROVIDERS};
use tracing_subscriber::EnvFilter;

/// Run simulated payment providers (Stripe-like API, ledger, faults) until Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A provider to simulate, as NAME=ADDR (repeatable; port 0 picks a free port).
    /// Default: sim-eu=127.0.0.1:9101 sim-us=127.0.0.1:9102 sim-sea=127.0.0.1:9103.
    #[arg(long = "provider", value_name = "NAME=ADDR", value_parser = parse_provider_arg)]
    providers: Vec<(String, SocketAddr)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut providers = Args::parse().providers;
    if providers.is_empty() {
        providers = DEFAULT_PROVIDERS
            .iter()
            .map(|(name, addr)| parse_provider_arg(&format!("{name}={addr}")))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
    }
    let simulator = Simulator::start_on(&providers).await?;
    let listening: Vec<String> = simulator
        .names()
        .into_iter()
        .map(|name| format!("{name}={}", simulator.addr(name)))
        .collect();
    println!("provider-sim ready: {}", listening.join(" "));
    wait_for_stop().await.context("waiting for a stop signal")?;
    tracing::info!("stopping");
    simulator.shutdown().await;
    Ok(())
}

/// Ctrl-C anywhere; SIGTERM too on Unix.
async fn wait_for_stop() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
