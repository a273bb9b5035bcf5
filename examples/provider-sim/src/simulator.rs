//! The in-process handle on a set of simulated providers: start, inspect, fault, stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::Faults;
use crate::ledger::{Charge, Refund};
use crate::notify::{SentWebhook, WebhookSettings};
use crate::provider::Provider;
use crate::server;

/// Providers the `provider-sim` binary starts when given none.
pub const DEFAULT_PROVIDERS: &[(&str, &str)] = &[
    ("sim-eu", "127.0.0.1:9101"),
    ("sim-us", "127.0.0.1:9102"),
    ("sim-sea", "127.0.0.1:9103"),
];

/// Running simulated providers, each on its own listener. Dropping it stops them too;
/// [`Simulator::shutdown`] also waits until the listeners are closed.
#[derive(Debug)]
pub struct Simulator {
    providers: Vec<Running>,
    shutdown: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Running {
    addr: SocketAddr,
    state: Arc<Provider>,
}

impl Simulator {
    /// Start one simulated provider per name, each on 127.0.0.1:0 (ephemeral port).
    pub async fn start(names: &[&str]) -> anyhow::Result<Simulator> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let providers: Vec<(String, SocketAddr)> =
            names.iter().map(|n| ((*n).to_owned(), loopback)).collect();
        Self::start_on(&providers).await
    }

    /// Start with explicit listen addresses (name, addr); addr may use port 0.
    pub async fn start_on(providers: &[(String, SocketAddr)]) -> anyhow::Result<Simulator> {
        // Bind everything before serving anything, so a failure leaves nothing running.
        let mut bound = Vec::with_capacity(providers.len());
        for (i, (name, addr)) in providers.iter().enumerate() {
            anyhow::ensure!(
                providers[..i].iter().all(|(other, _)| other != name),
                "provider {name:?} is listed twice"
            );
            let state = Provider::new(name)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("provider {name}: binding {addr}"))?;
            let addr = listener
                .local_addr()
                .with_context(|| format!("provider {name}: reading the bound address"))?;
            bound.push((listener, addr, Arc::new(state)));
        }
        let (shutdown, stop) = watch::channel(());
        let mut running = Vec::with_capacity(bound.len());
        let mut tasks = Vec::with_capacity(bound.len());
        for (listener, addr, state) in bound {
            tasks.push(server::spawn(listener, Arc::clone(&state), stop.clone()));
            running.push(Running { addr, state });
        }
        Ok(Simulator {
            providers: running,
            shutdown,
            tasks,
        })
    }

    /// Provider names, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.state.name()).collect()
    }

    /// Where `name` listens. Panics on an unknown name (a test helper).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.get(name).addr
    }

    /// `http://127.0.0.1:PORT` of `name`.
    pub fn base_url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// Snapshot of `name`'s charges, oldest first.
    pub fn ledger(&self, name: &str) -> Vec<Charge> {
        self.get(name).state.ledger().charges()
    }

    /// Snapshot of `name`'s refunds, oldest first.
    pub fn refunds(&self, name: &str) -> Vec<Refund> {
        self.get(name).state.ledger().refunds()
    }

    /// Requests `name` received, outside `/__sim/` and not dropped by an outage.
    pub fn request_count(&self, name: &str) -> u64 {
        self.get(name).state.request_count()
    }

    /// Replace `name`'s faults; the deterministic error counter restarts.
    pub fn set_faults(&self, name: &str, faults: Faults) {
        self.get(name).state.faults().set(faults);
    }

    /// Replace `name`'s token endpoint settings (see [`OAuthSettings`]).
    pub fn set_oauth(&self, name: &str, settings: crate::OAuthSettings) {
        self.get(name).state.oauth().set(settings);
    }

    /// What `name`'s token endpoint did so far.
    pub fn oauth_stats(&self, name: &str) -> crate::OAuthStats {
        self.get(name).state.oauth().stats()
    }

    /// Send `name`'s notifications to `url` (e.g. `http://127.0.0.1:P/webhooks/NAME`), signed
    /// with `secret` (Adyen: the hex HMAC key; Stripe: the webhook secret); `None` turns them
    /// off (a provider that drops its notifications). The delay goes back to 0.
    pub fn set_webhooks(&self, name: &str, url: Option<&str>, secret: &str) {
        self.set_webhook_settings(
            name,
            WebhookSettings {
                url: url.map(str::to_owned),
                secret: secret.to_owned(),
                delay_ms: 0,
            },
        );
    }

    /// Replace `name`'s webhook settings, delay included (what `POST /__sim/webhooks` does).
    pub fn set_webhook_settings(&self, name: &str, settings: WebhookSettings) {
        self.get(name).state.set_webhooks(settings);
    }

    /// Every notification `name` sent since start or reset, oldest first, with its delivery
    /// attempts so far (deliveries run in the background: poll for the attempts you expect).
    pub fn webhooks_sent(&self, name: &str) -> Vec<SentWebhook> {
        self.get(name).state.webhooks_sent()
    }

    /// Back to freshly started: empty ledger, no faults, zero requests, webhooks off.
    pub fn reset(&self, name: &str) {
        self.get(name).state.reset();
    }

    /// Stop every listener and abort open connections (and notifications still being
    /// delivered); returns once they are closed.
    pub async fn shutdown(self) {
        for running in &self.providers {
            running.state.abandon_webhooks();
        }
        let _ = self.shutdown.send(());
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "provider task ended abnormally");
            }
        }
    }

    fn get(&self, name: &str) -> &Running {
        match self.providers.iter().find(|p| p.state.name() == name) {
            Some(running) => running,
            None => panic!("unknown simulated provider {name:?}"),
        }
    }
}

/// Parse a `NAME=ADDR` command-line value, e.g. `sim-eu=127.0.0.1:9101`.
pub fn parse_provider_arg(value: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = value
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=ADDR, got {value:?}"))?;
    if name.is_empty() {
        return Err(format!("empty provider name in {value:?}"));
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("provider {name}: address {addr:?}: {e}"))?;
    Ok((name.to_owned(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_args() {
        assert_eq!(
            parse_provider_arg("sim-eu=127.0.0.1:9101"),
            Ok((
                "sim-eu".to_owned(),
                SocketAddr::from(([127, 0, 0, 1], 9101))
            ))
        );
        assert!(parse_provider_arg("sim-eu").is_err());
        assert!(parse_provider_arg("=127.0.0.1:1").is_err());
        assert!(parse_provider_arg("x=localhost").is_err());
    }

    #[test]
    fn defaults_parse() {
        for (name, addr) in DEFAULT_PROVIDERS {
            assert!(parse_provider_arg(&format!("{name}={addr}")).is_ok());
        }
    }
}
