//! A provider's books: payment intents, refunds and the stored idempotent responses.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

/// One payment as the provider recorded it (a Stripe payment intent).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Charge {
    /// `pi_<provider name, alphanumerics only>_<counter>`.
    pub id: String,
    /// Name of the simulated provider that holds it.
    pub provider: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// `succeeded`, `requires_capture`, `requires_confirmation` or `canceled`.
    pub status: String,
    /// The `Idempotency-Key` header of the creating request, if any.
    pub idempotency_key: Option<String>,
    /// `metadata[order_id]`, else `metadata[merchant_reference]`.
    pub merchant_reference: Option<String>,
    /// All `metadata[…]` parameters.
    pub metadata: BTreeMap<String, String>,
}

/// One refund against a payment intent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refund {
    /// `re_<provider name, alphanumerics only>_<counter>`.
    pub id: String,
    /// The refunded payment intent.
    pub payment_intent: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code (the intent's).
    pub currency: String,
    /// Always `succeeded` in the simulator.
    pub status: String,
}

/// A payment intent with the details the public [`Charge`] does not carry.
#[derive(Clone, Debug)]
pub(crate) struct Intent {
    pub(crate) charge: Charge,
    /// Captured by hand (`capture_method=manual`).
    pub(crate) manual_capture: bool,
    /// `payment_method_options[card][capture_method]=manual` (Stripe), as given.
    pub(crate) card_manual_capture: bool,
    pub(crate) payment_method_types: Vec<String>,
    pub(crate) amount_refunded: i64,
}

impl Intent {
    /// Captured by hand: `capture_method=manual`, or the card's own option (the simulator's
    /// payments are all by card).
    pub(crate) fn captured_by_hand(&self) -> bool {
        self.manual_capture || self.card_manual_capture
    }
}

/// The answer first given to an idempotent request, replayed for retries of it.
#[derive(Clone, Debug)]
pub(crate) struct StoredResponse {
    /// Hash of method, path and body: a retry must match it exactly.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Everything one provider remembers; cleared by `/__sim/reset`.
#[derive(Debug)]
pub(crate) struct Ledger {
    provider: String,
    /// The provider name reduced to alphanumerics, used inside ids.
    tag: String,
    intents: Vec<Intent>,
    by_id: HashMap<String, usize>,
    refunds: Vec<Refund>,
    idempotency: HashMap<String, StoredResponse>,
    next_intent: u64,
    next_refund: u64,
}

impl Ledger {
    pub(crate) fn new(provider: &str) -> Self {
        Ledger {
            provider: provider.to_owned(),
            tag: provider
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect(),
            intents: Vec::new(),
            by_id: HashMap::new(),
            refunds: Vec::new(),
            idempotency: HashMap::new(),
            next_intent: 0,
            next_refund: 0,
        }
    }

    pub(crate) fn provider(&self) -> &str {
        &self.provider
    }

    /// Forget everything, ids included: a reset provider looks freshly started.
    pub(crate) fn clear(&mut self) {
        *self = Ledger::new(&self.provider);
    }

    pub(crate) fn next_intent_id(&mut self) -> String {
        self.next_intent += 1;
        format!("pi_{}_{}", self.tag, self.next_intent)
    }

    pub(crate) fn next_refund_id(&mut self) -> String {
        self.next_refund += 1;
        format!("re_{}_{}", self.tag, self.next_refund)
    }

    pub(crate) fn insert(&mut self, intent: Intent) {
        self.by_id
            .insert(intent.charge.id.clone(), self.intents.len());
        self.intents.push(intent);
    }

    pub(crate) fn intent(&self, id: &str) -> Option<&Intent> {
        self.by_id.get(id).and_then(|&i| self.intents.get(i))
    }

    pub(crate) fn intent_mut(&mut self, id: &str) -> Option<&mut Intent> {
        self.by_id.get(id).and_then(|&i| self.intents.get_mut(i))
    }

    pub(crate) fn add_refund(&mut self, refund: Refund) {
        self.refunds.push(refund);
    }

    /// All charges, oldest first.
    pub(crate) fn charges(&self) -> Vec<Charge> {
        self.intents.iter().map(|i| i.charge.clone()).collect()
    }

    /// All refunds, oldest first.
    pub(crate) fn refunds(&self) -> Vec<Refund> {
        self.refunds.clone()
    }

    pub(crate) fn stored(&self, key: &str) -> Option<&StoredResponse> {
        self.idempotency.get(key)
    }

    pub(crate) fn store(&mut self, key: String, response: StoredResponse) {
        self.idempotency.insert(key, response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: String) -> Intent {
        Intent {
            charge: Charge {
                id,
                provider: "sim-eu".into(),
                amount: 100,
                currency: "eur".into(),
                status: "succeeded".into(),
                idempotency_key: None,
                merchant_reference: None,
                metadata: BTreeMap::new(),
            },
            manual_capture: false,
            card_manual_capture: false,
            payment_method_types: vec!["card".into()],
            amount_refunded: 0,
        }
    }

    #[test]
    fn ids_use_the_alphanumeric_name_and_restart_after_clear() {
        let mut ledger = Ledger::new("sim-eu");
        let id = ledger.next_intent_id();
        assert_eq!(id, "pi_simeu_1");
        ledger.insert(intent(id));
        assert_eq!(ledger.next_refund_id(), "re_simeu_1");
        assert!(ledger.intent("pi_simeu_1").is_some());
        ledger.clear();
        assert!(ledger.intent("pi_simeu_1").is_none());
        assert!(ledger.charges().is_empty());
        assert_eq!(ledger.next_intent_id(), "pi_simeu_1");
    }
}
