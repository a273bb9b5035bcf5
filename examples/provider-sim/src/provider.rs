//! Shared state of one simulated provider: name, ledger, faults and request counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use hyper::header::HeaderValue;

use crate::faults::FaultState;
use crate::ledger::Ledger;
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

    /// Back to a freshly started provider: empty ledger, no faults, zero requests.
    pub(crate) fn reset(&self) {
        self.ledger().clear();
        self.faults().set(Default::default());
        *self.oauth() = Default::default();
        self.requests.store(0, Ordering::Relaxed);
    }
}
