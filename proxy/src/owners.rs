//! Provider affinity: which provider owns a storefront-visible payment id, so follow-up
//! operations (capture, refund, void, status) reach it. In memory for now; the failover
//! issue moves it to the durable store.

use std::collections::HashMap;
use std::sync::Mutex;

/// The provider that owns a payment and its reference there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Provider name.
    pub provider: String,
    /// The provider's own id for the payment.
    pub reference: String,
    /// Currency of the payment, for follow-ups whose protocol omits it (Stripe captures).
    pub currency: Option<String>,
}

/// Storefront-visible payment id → owner.
#[derive(Default)]
pub struct Owners {
    map: Mutex<HashMap<String, Owner>>,
}

impl Owners {
    /// Remember who owns `id`.
    pub fn insert(&self, id: &str, owner: Owner) {
        if let Ok(mut map) = self.map.lock() {
            map.insert(id.to_string(), owner);
        }
    }

    /// Who owns `id`, if known.
    pub fn get(&self, id: &str) -> Option<Owner> {
        self.map.lock().ok()?.get(id).cloned()
    }
}
