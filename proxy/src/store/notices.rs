//! What the store keeps for provider notifications (`POST /webhooks/{provider}`): the index
//! from a provider's reference to the payment it belongs to, and notifications held because
//! their payment was not known yet when they arrived (a provider that notifies before it
//! answers the request that made the payment).

use serde::{Deserialize, Serialize};

use crate::plugin::Notification;

/// The table (redb) of held notifications.
pub(super) const HELD: &str = "held_notices";
/// The table (redb) of the provider-reference index.
pub(super) const REFERENCES: &str = "payment_references";

/// The reference index key of a payment owned by `provider` under `reference`.
pub fn reference_key(provider: &str, reference: &str) -> String {
    format!("{provider}\u{0}{reference}")
}

/// The reference in an owner key ([`reference_key`]) that no other kind of key can spell
/// ([`plain_reference`]); `None` for the other kinds and for an empty reference.
pub fn owner_reference(key: &str) -> Option<&str> {
    let (_, reference) = key.split_once('\u{0}')?;
    plain_reference(reference).then_some(reference)
}

/// Whether an owner key with `reference` is told apart from the other kinds of key, which
/// put a mark of their kind (`\u{1}`–`\u{3}`) after the provider.
pub fn plain_reference(reference: &str) -> bool {
    !reference.is_empty() && !reference.starts_with(['\u{1}', '\u{2}', '\u{3}'])
}

/// The reference index key of a payment `provider` was passed over for, by a reference it
/// was sent (the merchant's reference, or the payment's id).
pub fn passed_over_key(provider: &str, reference: &str) -> String {
    format!("{provider}\u{0}\u{1}{reference}")
}

/// The reference index key of a payment `provider` may hold under a reference payproxy does
/// not know (an ambiguous attempt without one, an unresolved one), by a reference it was
/// sent: a charge it reports under that reference may be this payment's own, so it is never
/// taken for another payment's late charge.
pub fn unsure_key(provider: &str, reference: &str) -> String {
    format!("{provider}\u{0}\u{2}{reference}")
}

/// The reference index key of a charge `provider` made late (after answering "not
/// processed") that payproxy voided or refunded, by its reference: the provider's
/// notifications of that charge and of its undoing change nothing.
pub fn undone_key(provider: &str, reference: &str) -> String {
    format!("{provider}\u{0}\u{3}{reference}")
}

/// A notification waiting for its payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldNotice {
    /// `provider \0 reference \0 event id`: one hold per notification, however often the
    /// provider redelivers it.
    pub key: String,
    /// The provider (config name) that sent it.
    pub provider: String,
    /// When it first arrived, Unix milliseconds.
    pub received_ms: u64,
    /// The notification as its dialect decoded it.
    pub notification: Notification,
}

impl HeldNotice {
    /// A hold for `notification` from `provider`, received at `received_ms`.
    pub fn new(provider: &str, notification: Notification, received_ms: u64) -> HeldNotice {
        let reference = notification
            .outcome
            .provider_reference
            .as_deref()
            .unwrap_or_default();
        HeldNotice {
            key: format!(
                "{}\u{0}{}",
                reference_key(provider, reference),
                notification.event_id
            ),
            provider: provider.to_string(),
            received_ms,
            notification,
        }
    }
}
