//! `POST /payments` and the redirect landing.

use std::collections::BTreeMap;

use hyper::StatusCode;
use payproxy_plugin_sdk::currency;
use serde_json::{json, Map, Value};

use super::{notifications, AdyenError};
use crate::json_api::{self, Call};
use crate::ledger::{Charge, Intent, Ledger};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};

/// What the simulated acquirer decides for a card (or other non-redirect) payment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Authorised,
    Refused(&'static str, &'static str),
    Pending,
    Error,
}

/// Deterministic outcomes from the last two digits of the amount (see the module docs).
fn decide(minor: i64) -> Decision {
    match minor % 100 {
        2 => Decision::Refused("2", "Refused"),
        5 => Decision::Refused("12", "Not enough balance"),
        6 => Decision::Refused("6", "Expired Card"),
        20 => Decision::Refused("20", "FRAUD"),
        24 => Decision::Refused("24", "CVC Declined"),
        7 => Decision::Pending,
        99 => Decision::Error,
        _ => Decision::Authorised,
    }
}

/// `merchantAccount`, required on every call.
pub(super) fn merchant_account(body: &Value) -> Result<(), AdyenError> {
    match body.get("merchantAccount").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => Ok(()),
        _ => Err(AdyenError::validation(
            "901",
            "Required field 'merchantAccount' is not provided.",
        )),
    }
}

/// `amount: {value, currency}`: a positive integer in a known currency.
pub(super) fn amount(body: &Value) -> Result<(i64, String), AdyenError> {
    let amount = body
        .get("amount")
        .ok_or_else(|| AdyenError::validation("100", "Required field 'amount' is not provided."))?;
    let value = amount
        .get("value")
        .and_then(Value::as_i64)
        .filter(|v| *v > 0);
    let Some(value) = value else {
        return Err(AdyenError::validation("137", "Invalid amount specified"));
    };
    let code = amount
        .get("currency")
        .and_then(Value::as_str)
        .and_then(currency::normalise)
        .ok_or_else(|| AdyenError::validation("138", "Unsupported currency specified"))?;
    Ok((value, code))
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The provider note keeping the `reference` a payment `psp` was made with.
pub(super) fn reference_note(psp: &str) -> String {
    format!("adyen-reference:{psp}")
}

/// `POST /payments`.
pub(super) fn create(
    ledger: &mut Ledger,
    body: &Value,
    idempotency_key: Option<&str>,
    base: &str,
) -> Result<Value, AdyenError> {
    merchant_account(body)?;
    let (value, code) = amount(body)?;
    let reference = text(body, "reference").ok_or_else(|| {
        AdyenError::validation("130", "Required field 'reference' is not provided.")
    })?;
    let method = body.get("paymentMethod");
    let kind = method.and_then(|m| text(m, "type")).ok_or_else(|| {
        AdyenError::validation(
            "702",
            "Required field 'paymentMethod.type' is not provided.",
        )
    })?;
    if kind == "scheme"
        && method
            .and_then(|m| text(m, "storedPaymentMethodId"))
            .is_none()
    {
        return Err(AdyenError::validation(
            "702",
            "Required field 'paymentMethod.storedPaymentMethodId' is not provided.",
        ));
    }
    let manual_capture = body
        .pointer("/additionalData/manualCapture")
        .and_then(Value::as_str)
        == Some("true");
    let psp = json_api::mint(ledger, "psp");
    let mut answer = json!({
        "pspReference": psp,
        "merchantReference": reference,
    });
    let status = if kind != "scheme" {
        answer["resultCode"] = "RedirectShopper".into();
        let url = format!("{base}/adyen/v71/redirect/{psp}");
        answer["action"] =
            json!({ "type": "redirect", "method": "GET", "url": url, "paymentMethodType": kind });
        "requires_action"
    } else {
        match decide(value) {
            Decision::Authorised => {
                answer["resultCode"] = "Authorised".into();
                answer["amount"] = json!({ "value": value, "currency": code });
                if manual_capture {
                    "requires_capture"
                } else {
                    "succeeded"
                }
            }
            Decision::Pending => {
                answer["resultCode"] = "Pending".into();
                "processing"
            }
            Decision::Refused(reason_code, reason) => {
                answer["resultCode"] = "Refused".into();
                answer["refusalReason"] = reason.into();
                answer["refusalReasonCode"] = reason_code.into();
                return Ok(answer);
            }
            Decision::Error => {
                answer["resultCode"] = "Error".into();
                answer["refusalReason"] = "Acquirer Error".into();
                return Ok(answer);
            }
        }
    };
    let metadata: BTreeMap<String, String> = body
        .get("metadata")
        .and_then(Value::as_object)
        .map(strings)
        .unwrap_or_default();
    ledger.insert(Intent {
        charge: Charge {
            id: psp,
            provider: ledger.provider().to_owned(),
            amount: value,
            currency: code.to_ascii_lowercase(),
            status: status.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            // The merchant's order (`merchantOrderReference`), else Adyen's `reference`.
            merchant_reference: Some(
                text(body, "merchantOrderReference")
                    .unwrap_or(reference)
                    .to_owned(),
            ),
            metadata,
        },
        manual_capture,
        card_manual_capture: false,
        payment_method_types: vec![kind.to_owned()],
        amount_refunded: 0,
    });
    Ok(answer)
}

/// String values of a JSON object (others are skipped, as Adyen refuses them).
fn strings(map: &Map<String, Value>) -> BTreeMap<String, String> {
    map.iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        .collect()
}

/// `GET /redirect/{psp}?result=authorised|refused`: the shopper completes (default) or fails
/// the redirect; answers the payment's new state.
pub(super) fn finish_redirect(provider: &Provider, psp: &str, call: &Call) -> SimResponse {
    let refused = call.query("result").as_deref() == Some("refused");
    let mut ledger = provider.ledger();
    let Some(intent) = ledger.intent_mut(psp) else {
        let error = AdyenError {
            status: StatusCode::NOT_FOUND,
            code: "167",
            message: format!("No payment {psp} awaiting a redirect"),
            kind: "validation",
        };
        return json(error.status, &error.to_json());
    };
    let completed = intent.charge.status == "requires_action";
    if completed {
        intent.charge.status = if refused { "failed" } else { "succeeded" }.to_owned();
    }
    let result = match intent.charge.status.as_str() {
        "succeeded" => "Authorised",
        "requires_action" => "RedirectShopper",
        _ => "Refused",
    };
    // Adyen's `reference` of the payment (kept when it was made), else the ledger's.
    let reference = provider
        .note(&reference_note(psp))
        .or_else(|| intent.charge.merchant_reference.clone())
        .unwrap_or_default();
    let answer = json(
        StatusCode::OK,
        &json!({ "pspReference": psp, "resultCode": result, "merchantReference": reference }),
    );
    let event = completed.then(|| notifications::Event {
        code: "AUTHORISATION",
        success: !refused,
        psp: psp.to_owned(),
        original: None,
        merchant_reference: reference,
        merchant_account: provider.note(&format!("adyen:{psp}")).unwrap_or_default(),
        value: intent.charge.amount,
        currency: intent.charge.currency.to_ascii_uppercase(),
        reason: if refused {
            "Refused".into()
        } else {
            String::new()
        },
    });
    drop(ledger);
    if let Some(event) = &event {
        notifications::send(provider, event);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_last_two_digits() {
        assert_eq!(decide(1000), Decision::Authorised);
        assert_eq!(decide(1005), Decision::Refused("12", "Not enough balance"));
        assert_eq!(decide(206), Decision::Refused("6", "Expired Card"));
        assert_eq!(decide(120), Decision::Refused("20", "FRAUD"));
        assert_eq!(decide(107), Decision::Pending);
        assert_eq!(decide(199), Decision::Error);
    }

    #[test]
    fn validation_codes() {
        let code = |body: Value| amount(&body).err().map(|e| e.code);
        assert_eq!(code(json!({})), Some("100"));
        assert_eq!(
            code(json!({"amount": {"value": 0, "currency": "EUR"}})),
            Some("137")
        );
        assert_eq!(
            code(json!({"amount": {"value": "10", "currency": "EUR"}})),
            Some("137")
        );
        assert_eq!(
            code(json!({"amount": {"value": 10, "currency": "XYZ"}})),
            Some("138")
        );
        assert_eq!(
            amount(&json!({"amount": {"value": 10, "currency": "eur"}})).ok(),
            Some((10, "EUR".into()))
        );
        assert!(merchant_account(&json!({"merchantAccount": " "})).is_err());
    }
}
