//! Shared state of one simulated provider: name, ledger, faults, request counter and webhooks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::faults::FaultState;
use crate::ledger::Ledger;
use crate::notify::{Notice, SentWebhook, WebhookSettings, Webhooks};
use crate::oauth::OAuthState;

/// One provider, shared by its listener, its connections and the [`crate::Simulator`].
#[derive(Debug)]
pub(crate) struct Provider {
    name: String,
    /// `name` as a header value, checked once at start.
    header: HeaderValue,
    ledger: Mutex<Ledger>,
    faults: Mutex<FaultState>,
    oauth: Mutex<OAuthState>,
    requests: AtomicU64,
    webhooks: Webhooks,
    /// Per-payment details a dialect needs for later notifications and the ledger does not
    /// keep (Adyen: the merchant account of a payment), keyed `dialect:payment id`.
    notes: Mutex<HashMap<String, String>>,
}

impl Provider {
    /// Fails when the name cannot travel in the `x-sim-provider` header.
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!name.is_empty(), "provider name is empty");
        let header = HeaderValue::from_str(name)
            .map_err(|_| anyhow::anyhow!("provider name {name:?} is not a valid header value"))?;
        Ok(Provider {
            name: name.to_owned(),
            header,
            ledger: Mutex::new(Ledger::new(name)),
            faults: Mutex::new(FaultState::default()),
            oauth: Mutex::new(OAuthState::default()),
            requests: AtomicU64::new(0),
            webhooks: Webhooks::new(),
            notes: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    // A panic while holding a lock only ever comes from a bug in this crate; the data is
    // still usable, so later requests keep going rather than cascading the panic.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn oauth(&self) -> MutexGuard<'_, OAuthState> {
        self.oauth.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The signing secret of this provider's notifications; `None` while webhooks are off
    /// (then nothing is sent: a provider that drops its notifications).
    pub(crate) fn webhook_secret(&self) -> Option<String> {
        self.webhooks.secret()
    }

    /// Send `notice` in the background (see [`crate::notify`]): returns at once, retries on
    /// failure, logs every attempt. Does nothing while webhooks are off. The first delivery
    /// waits for the configured `delay_ms` plus the faults' `notify_delay_ms`. Takes the
    /// faults lock briefly: do not call it while holding that one (the ledger's is fine).
    pub(crate) fn notify(&self, notice: Notice) {
        let extra = Duration::from_millis(self.faults().faults().notify_delay_ms);
        self.webhooks.send(notice, extra);
    }

    pub(crate) fn webhook_settings(&self) -> WebhookSettings {
        self.webhooks.settings()
    }

    pub(crate) fn set_webhooks(&self, settings: WebhookSettings) {
        self.webhooks.set(settings);
    }

    /// Keep `value` under `key` until the next reset (see `notes`).
    pub(crate) fn set_note(&self, key: String, value: String) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    pub(crate) fn note(&self, key: &str) -> Option<String> {
        let notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.get(key).cloned()
    }

    /// Stop the deliveries in flight (the provider is shutting down).
    pub(crate) fn abandon_webhooks(&self) {
        self.webhooks.abandon();
    }

    /// Every notice sent since the last reset, oldest first, with its attempts so far.
    pub(crate) fn webhooks_sent(&self) -> Vec<SentWebhook> {
        self.webhooks.sent()
    }

    /// Back to a freshly started provider: empty ledger, no faults, zero requests, webhooks
    /// off and their log empty.
    pub(crate) fn reset(&self) {
        self.webhooks.reset();
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.ledger().clear();
        self.faults().set(Default::default());
        *self.oauth() = Default::default();
        self.requests.store(0, Ordering::Relaxed);
    }
}
