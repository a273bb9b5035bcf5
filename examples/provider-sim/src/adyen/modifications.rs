//! `POST /payments/{psp}/captures|refunds|cancels`: accepted (202 `received`) and applied to
//! the ledger at once.

use serde_json::{json, Value};

use super::payments::{amount, merchant_account};
use super::{AdyenError, Modification};
use crate::json_api;
use crate::ledger::{Ledger, Refund};

/// Apply one modification to payment `psp`; a refund only when `refused` is false (the
/// `refunds_refused` fault: accepted, then refused by notification).
pub(super) fn apply(
    ledger: &mut Ledger,
    psp: &str,
    kind: Modification,
    body: &Value,
    refused: bool,
) -> Result<Value, AdyenError> {
    merchant_account(body)?;
    let requested = match kind {
        Modification::Cancel => None,
        _ => Some(amount(body)?),
    };
    let intent = ledger.intent(psp).ok_or_else(|| {
        AdyenError::validation("167", "Original pspReference required for this operation")
    })?;
    let charge = &intent.charge;
    let not_allowed = || {
        AdyenError::validation(
            "703",
            format!("Modification not allowed: the payment is {}", charge.status),
        )
    };
    if let Some((_, code)) = &requested {
        if !code.eq_ignore_ascii_case(&charge.currency) {
            return Err(AdyenError::validation(
                "137",
                "Currency does not match the payment",
            ));
        }
    }
    let value = requested.as_ref().map(|(v, _)| *v);
    let next = match kind {
        Modification::Capture if charge.status != "requires_capture" => return Err(not_allowed()),
        Modification::Capture if value > Some(charge.amount) => {
            return Err(AdyenError::validation(
                "137",
                "Capture amount exceeds the authorised amount",
            ))
        }
        Modification::Capture => "succeeded",
        Modification::Refund if charge.status != "succeeded" => return Err(not_allowed()),
        Modification::Refund if value > Some(charge.amount - intent.amount_refunded) => {
            return Err(AdyenError::validation(
                "137",
                "Refund amount exceeds the captured amount",
            ))
        }
        Modification::Refund => "succeeded",
        // Adyen captures automatically captured payments with a delay (end of day), so they
        // can be cancelled until then; here: until a refund was made. Manually captured
        // payments that were captured cannot.
        Modification::Cancel => {
            let open = matches!(
                charge.status.as_str(),
                "requires_capture" | "requires_action"
            );
            let uncaptured_yet = charge.status == "succeeded"
                && !intent.manual_capture
                && intent.amount_refunded == 0;
            if !(open || uncaptured_yet) {
                return Err(not_allowed());
            }
            "canceled"
        }
    };
    let currency = charge.currency.clone();
    let reference = body.get("reference").cloned().unwrap_or(Value::Null);
    let own = match kind {
        Modification::Refund => json_api::mint_refund(ledger, "psp_re"),
        _ => json_api::mint(ledger, "psp_mod"),
    };
    let refused = refused && kind == Modification::Refund;
    if let Some(intent) = ledger.intent_mut(psp).filter(|_| !refused) {
        intent.charge.status = next.to_owned();
        if kind == Modification::Refund {
            intent.amount_refunded += value.unwrap_or_default();
        }
    }
    if let (Modification::Refund, Some(value), false) = (kind, value, refused) {
        ledger.add_refund(Refund {
            id: own.clone(),
            payment_intent: psp.to_owned(),
            amount: value,
            currency: currency.clone(),
            status: "succeeded".to_owned(),
        });
    }
    let mut answer = json!({
        "merchantAccount": body["merchantAccount"],
        "paymentPspReference": psp,
        "pspReference": own,
        "reference": reference,
        "status": "received",
    });
    if let Some(value) = value {
        answer["amount"] = json!({ "value": value, "currency": currency.to_ascii_uppercase() });
    }
    Ok(answer)
}
