//! Refunds against succeeded payment intents, in full or in parts.

use serde_json::{json, Value};

use super::positive_int;
use crate::form::Form;
use crate::ledger::{Ledger, Refund};
use crate::respond::StripeError;

/// `POST /v1/refunds` with `payment_intent` and an optional `amount` (default: what is left).
pub(super) fn create(ledger: &mut Ledger, form: &Form) -> Result<Value, StripeError> {
    let intent_id = form
        .get("payment_intent")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| StripeError::missing("payment_intent"))?
        .to_owned();
    let amount = positive_int(form, "amount")?;
    let intent = ledger
        .intent(&intent_id)
        .ok_or_else(|| StripeError::not_found("payment_intent", "payment_intent", &intent_id))?;
    if intent.charge.status != "succeeded" {
        return Err(StripeError::invalid(
            "payment_intent_unexpected_state",
            Some("payment_intent"),
            "This PaymentIntent does not have a successful charge to refund.".to_owned(),
        ));
    }
    let remaining = intent.charge.amount - intent.amount_refunded;
    if remaining <= 0 {
        return Err(StripeError::invalid(
            "charge_already_refunded",
            None,
            format!("Charge for {intent_id} has already been refunded."),
        ));
    }
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Err(StripeError::invalid(
            "amount_too_large",
            Some("amount"),
            format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."
            ),
        ));
    }
    let currency = intent.charge.currency.clone();
    if let Some(intent) = ledger.intent_mut(&intent_id) {
        intent.amount_refunded += amount;
    }
    let refund = Refund {
        id: ledger.next_refund_id(),
        payment_intent: intent_id,
        amount,
        currency,
        status: "succeeded".to_owned(),
    };
    let rendered = json!({
        "id": refund.id,
        "object": "refund",
        "payment_intent": refund.payment_intent,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "provider": ledger.provider(),
    });
    ledger.add_refund(refund);
    Ok(rendered)
}
