//! Payment intents: create, retrieve, capture, cancel and confirm.

use serde_json::{json, Value};

use super::{positive_int, Action};
use crate::form::Form;
use crate::ledger::{Charge, Intent, Ledger};
use crate::respond::StripeError;

/// `POST /v1/payment_intents`.
///
/// Status: `requires_confirmation` with `confirm=false`, else what confirming gives (see
/// [`confirmed`]).
pub(super) fn create(
    ledger: &mut Ledger,
    form: &Form,
    idempotency_key: Option<&str>,
) -> Result<Value, StripeError> {
    let amount = positive_int(form, "amount")?.ok_or_else(|| StripeError::missing("amount"))?;
    let currency = currency(form)?;
    let manual = |field: &'static str| match form.get(field) {
        None | Some("automatic") | Some("automatic_async") => Ok(false),
        Some("manual") => Ok(true),
        Some(other) => {
            let message = format!("Invalid {field}: must be one of automatic, automatic_async, or manual (got {other})");
            Err(StripeError::bad_value(field, message))
        }
    };
    let manual_capture = manual("capture_method")?;
    // Stripe's per-method override; the simulator's payments are all by card.
    let card_manual_capture = manual("payment_method_options[card][capture_method]")?;
    let confirm = match form.get("confirm") {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(StripeError::invalid(
                "parameter_invalid_boolean",
                Some("confirm"),
                format!("Invalid boolean: {other}"),
            ))
        }
    };
    let status = if confirm {
        confirmed(form, manual_capture || card_manual_capture)
    } else {
        "requires_confirmation"
    };
    let metadata = form.map("metadata");
    let merchant_reference = metadata
        .get("order_id")
        .or_else(|| metadata.get("merchant_reference"))
        .cloned();
    let mut payment_method_types = form.list("payment_method_types");
    if payment_method_types.is_empty() {
        payment_method_types.push("card".to_owned());
    }
    let intent = Intent {
        charge: Charge {
            id: ledger.next_intent_id(),
            provider: ledger.provider().to_owned(),
            amount,
            currency,
            status: status.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            merchant_reference,
            metadata,
        },
        manual_capture,
        card_manual_capture,
        payment_method_types,
        amount_refunded: 0,
    };
    let rendered = render(&intent);
    ledger.insert(intent);
    Ok(rendered)
}

/// What confirming with `form`'s `payment_method` gives: `requires_payment_method` for one
/// ending in `chargeDeclined` (Stripe's test card that is always declined, `card_declined`
/// `generic_decline`; the caller answers a 402 card error), `requires_action` (a 3-D Secure
/// redirect, finished at `GET /stripe/3ds/{id}`) for one ending in `threeDSecure2Required`,
/// else `requires_capture` when captured by hand (`capture_method=manual`, or
/// `payment_method_options[card][capture_method]=manual`: every payment here is by card),
/// else `succeeded`.
fn confirmed(form: &Form, by_hand: bool) -> &'static str {
    let method = form.get("payment_method").unwrap_or_default();
    if method.ends_with("chargeDeclined") {
        "requires_payment_method"
    } else if method.ends_with("threeDSecure2Required") {
        "requires_action"
    } else if by_hand {
        "requires_capture"
    } else {
        "succeeded"
    }
}

/// `GET /v1/payment_intents/{id}`.
pub(super) fn retrieve(ledger: &Ledger, id: &str) -> Result<Value, StripeError> {
    ledger.intent(id).map(render).ok_or_else(|| missing(id))
}

/// `POST /v1/payment_intents/{id}/{capture,cancel,confirm}`. A confirm takes the intent's
/// `payment_method` from the form (see [`confirmed`]); one declined before
/// (`requires_payment_method`) is confirmed again only with one, as at Stripe.
pub(super) fn act(
    ledger: &mut Ledger,
    id: &str,
    action: Action,
    form: &Form,
) -> Result<Value, StripeError> {
    let intent = ledger.intent_mut(id).ok_or_else(|| missing(id))?;
    let current = intent.charge.status.as_str();
    let with_method = form.get("payment_method").is_some();
    let next = match (action, current) {
        (Action::Capture, "requires_capture") => "succeeded",
        (Action::Confirm, "requires_confirmation") => confirmed(form, intent.captured_by_hand()),
        (Action::Confirm, "requires_payment_method") if with_method => {
            confirmed(form, intent.captured_by_hand())
        }
        (Action::Cancel, "requires_capture" | "requires_confirmation") => "canceled",
        _ => {
            let (verb, wanted) = match action {
                Action::Capture => ("capture", "requires_capture"),
                Action::Confirm => (
                    "confirm",
                    "requires_confirmation, or requires_payment_method with a payment_method",
                ),
                Action::Cancel => ("cancel", "requires_capture or requires_confirmation"),
            };
            return Err(StripeError::invalid(
                "payment_intent_unexpected_state",
                None,
                format!(
                    "This PaymentIntent's status is {current}, but must be {wanted} to {verb}."
                ),
            ));
        }
    };
    intent.charge.status = next.to_owned();
    Ok(render(intent))
}

/// `GET /stripe/3ds/{id}?result=succeeded|failed`: the shopper finishes (default) or fails
/// the 3-D Secure challenge of an intent in `requires_action`: it moves on as a confirm
/// with a card that needs none would (`succeeded` or `requires_capture`), or back to
/// `requires_payment_method`. The intent as it is now, and whether it moved.
pub(super) fn authenticate(
    ledger: &mut Ledger,
    id: &str,
    failed: bool,
) -> Result<(Value, bool), StripeError> {
    let intent = ledger.intent_mut(id).ok_or_else(|| missing(id))?;
    let moved = intent.charge.status == "requires_action";
    if moved {
        intent.charge.status = match (failed, intent.captured_by_hand()) {
            (true, _) => "requires_payment_method",
            (false, true) => "requires_capture",
            (false, false) => "succeeded",
        }
        .to_owned();
    }
    Ok((render(intent), moved))
}

/// The intent as Stripe renders it, plus the simulator's `provider`. Its `next_action` is
/// the caller's to fill in (the challenge's page is on the address the caller was reached
/// at): see `challenge_as_stripe_answers`.
fn render(intent: &Intent) -> Value {
    let charge = &intent.charge;
    let amount_received = if charge.status == "succeeded" {
        charge.amount
    } else {
        0
    };
    json!({
        "id": charge.id,
        "object": "payment_intent",
        "amount": charge.amount,
        "amount_received": amount_received,
        "currency": charge.currency,
        "status": charge.status,
        "next_action": Value::Null,
        "capture_method": if intent.manual_capture { "manual" } else { "automatic" },
        "payment_method_options": if intent.card_manual_capture {
            json!({"card": {"capture_method": "manual"}})
        } else {
            json!({})
        },
        "metadata": charge.metadata,
        "payment_method_types": intent.payment_method_types,
        "livemode": false,
        "provider": charge.provider,
    })
}

/// The `currency` parameter: three ASCII letters, lower-cased.
fn currency(form: &Form) -> Result<String, StripeError> {
    let raw = form
        .get("currency")
        .ok_or_else(|| StripeError::missing("currency"))?;
    if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(StripeError::bad_value(
            "currency",
            format!("Invalid currency: {raw}."),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

fn missing(id: &str) -> StripeError {
    StripeError::not_found("intent", "payment_intent", id)
}
