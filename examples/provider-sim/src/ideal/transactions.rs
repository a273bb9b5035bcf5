//! Transactions: create, status, the shopper's authentication, refunds.

use std::collections::BTreeMap;

use hyper::header::{HeaderValue, LOCATION};
use hyper::StatusCode;
use payproxy_plugin_sdk::currency::{self, AmountError};
use serde_json::{json, Value};

use super::{iban, notices, IdealError};
use crate::json_api::{self, Call};
use crate::ledger::{Charge, Intent, Ledger, Refund};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};

/// Ledger status ↔ iDEAL status.
const STATUSES: &[(&str, &str)] = &[
    ("requires_action", "open"),
    ("succeeded", "success"),
    ("failed", "failure"),
    ("canceled", "cancelled"),
    ("expired", "expired"),
];

fn ideal_status(ledger_status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|(l, _)| *l == ledger_status)
        .map(|(_, i)| *i)
        .unwrap_or("failure")
}

fn ledger_status(ideal: &str) -> Option<&'static str> {
    STATUSES.iter().find(|(_, i)| *i == ideal).map(|(l, _)| *l)
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// `amount` as an exact, positive euro decimal string.
fn euros(body: &Value) -> Result<Option<i64>, IdealError> {
    let Some(raw) = body.get("amount") else {
        return Ok(None);
    };
    let invalid = |message: &str| IdealError::invalid("invalid_amount", "amount", message);
    let raw = raw
        .as_str()
        .ok_or_else(|| invalid("amount must be a decimal string such as \"10.00\""))?;
    match currency::from_decimal(raw, "EUR") {
        Ok(minor) if minor > 0 => Ok(Some(minor)),
        Ok(_) => Err(invalid("amount must be positive")),
        Err(AmountError::WrongExponent { .. }) => Err(invalid("amount has more than 2 decimals")),
        Err(_) => Err(invalid("amount is not a decimal number")),
    }
}

fn euro_only(body: &Value, required: bool) -> Result<(), IdealError> {
    match body.get("currency").and_then(Value::as_str) {
        Some("EUR") => Ok(()),
        None if !required => Ok(()),
        _ => Err(IdealError::invalid(
            "currency_not_supported",
            "currency",
            "iDEAL only supports EUR",
        )),
    }
}

/// `POST /transactions`.
pub(super) fn create(
    ledger: &mut Ledger,
    body: &Value,
    idempotency_key: Option<&str>,
    base: &str,
) -> Result<Value, IdealError> {
    let amount = euros(body)?
        .ok_or_else(|| IdealError::invalid("missing_amount", "amount", "amount is required"))?;
    euro_only(body, true)?;
    if let Some(raw) = body.get("iban").filter(|v| !v.is_null()) {
        if !raw.as_str().is_some_and(iban::valid) {
            return Err(IdealError::invalid(
                "invalid_iban",
                "iban",
                "IBAN check failed",
            ));
        }
    }
    let reference = text(body, "reference").ok_or_else(|| {
        IdealError::invalid("missing_reference", "reference", "reference is required")
    })?;
    let return_url = text(body, "returnUrl").ok_or_else(|| {
        IdealError::invalid("missing_return_url", "returnUrl", "returnUrl is required")
    })?;
    let description = text(body, "description").unwrap_or(reference);
    if description.chars().count() > 35 {
        return Err(IdealError::invalid(
            "description_too_long",
            "description",
            "description has more than 35 characters",
        ));
    }
    let id = json_api::mint(ledger, "tr");
    let metadata = BTreeMap::from([
        ("description".to_owned(), description.to_owned()),
        ("returnUrl".to_owned(), return_url.to_owned()),
    ]);
    let intent = Intent {
        charge: Charge {
            id,
            provider: ledger.provider().to_owned(),
            amount,
            currency: "eur".to_owned(),
            status: "requires_action".to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            merchant_reference: Some(reference.to_owned()),
            metadata,
        },
        manual_capture: false,
        card_manual_capture: false,
        payment_method_types: vec!["ideal".to_owned()],
        amount_refunded: 0,
    };
    let rendered = render(&intent, base);
    ledger.insert(intent);
    Ok(rendered)
}

/// The transaction as the API shows it.
fn render(intent: &Intent, base: &str) -> Value {
    let charge = &intent.charge;
    let status = ideal_status(&charge.status);
    let mut value = json!({
        "transactionId": charge.id,
        "status": status,
        "amount": currency::to_decimal(charge.amount, "EUR"),
        "currency": "EUR",
        "reference": charge.merchant_reference,
    });
    if status == "open" {
        value["issuerAuthenticationUrl"] =
            format!("{base}/ideal/v1/authenticate/{}", charge.id).into();
    }
    value
}

fn not_found(id: &str) -> IdealError {
    IdealError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no transaction {id}"),
    )
}

/// `GET /transactions/{id}`.
pub(super) fn status(ledger: &Ledger, id: &str, base: &str) -> Result<Value, IdealError> {
    ledger
        .intent(id)
        .map(|i| render(i, base))
        .ok_or_else(|| not_found(id))
}

/// `GET /authenticate/{id}?result=…`: the shopper finishes at the bank.
pub(super) fn authenticate(provider: &Provider, id: &str, call: &Call) -> SimResponse {
    let wanted = call.query("result").unwrap_or_else(|| "success".to_owned());
    let Some(next) = ledger_status(&wanted).filter(|s| *s != "requires_action") else {
        let message = "result must be success, failure, cancelled or expired";
        return IdealError::new(StatusCode::BAD_REQUEST, "invalid_result", message).response();
    };
    let (location, body, event) = {
        let mut ledger = provider.ledger();
        let Some(intent) = ledger.intent_mut(id) else {
            return not_found(id).response();
        };
        // Only the first finish is a change, and only a change is notified.
        let event = (intent.charge.status == "requires_action").then(|| {
            intent.charge.status = next.to_owned();
            notices::Event {
                transaction_id: id.to_owned(),
                refund_id: None,
                status: ideal_status(next),
                amount: intent.charge.amount,
                reference: intent.charge.merchant_reference.clone(),
            }
        });
        let return_url = intent
            .charge
            .metadata
            .get("returnUrl")
            .cloned()
            .unwrap_or_default();
        let separator = if return_url.contains('?') { '&' } else { '?' };
        let location = format!("{return_url}{separator}trxid={id}");
        let body = json!({
            "transactionId": id,
            "status": ideal_status(&intent.charge.status),
            "returnUrl": location,
        });
        (location, body, event)
    };
    if let Some(event) = event {
        notices::send(provider, &event);
    }
    let mut response = json(StatusCode::SEE_OTHER, &body);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// `POST /transactions/{id}/refunds`: the answer, and the notification to send once the
/// ledger's lock is released.
pub(super) fn refund(
    ledger: &mut Ledger,
    id: &str,
    body: &Value,
) -> Result<(Value, notices::Event), IdealError> {
    let requested = euros(body)?;
    euro_only(body, false)?;
    let intent = ledger.intent(id).ok_or_else(|| not_found(id))?;
    if intent.charge.status != "succeeded" {
        let message = format!(
            "transaction {id} is {}, not success",
            ideal_status(&intent.charge.status)
        );
        return Err(IdealError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_refundable",
            message,
        ));
    }
    let remaining = intent.charge.amount - intent.amount_refunded;
    let amount = requested.unwrap_or(remaining);
    if amount <= 0 || amount > remaining {
        return Err(IdealError::invalid(
            "amount_too_large",
            "amount",
            "more than what is left to refund",
        ));
    }
    let reference = intent.charge.merchant_reference.clone();
    let refund_id = json_api::mint_refund(ledger, "rf");
    if let Some(intent) = ledger.intent_mut(id) {
        intent.amount_refunded += amount;
    }
    ledger.add_refund(Refund {
        id: refund_id.clone(),
        payment_intent: id.to_owned(),
        amount,
        currency: "eur".to_owned(),
        status: "succeeded".to_owned(),
    });
    let answer = json!({
        "refundId": refund_id,
        "transactionId": id,
        "status": "success",
        "amount": currency::to_decimal(amount, "EUR"),
        "currency": "EUR",
        "reference": body.get("reference"),
    });
    let event = notices::Event {
        transaction_id: id.to_owned(),
        refund_id: Some(refund_id),
        status: "success",
        amount,
        reference,
    };
    Ok((answer, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(euros(&json!({"amount": "10.50"})), Ok(Some(1050)));
        assert_eq!(euros(&json!({})), Ok(None));
        let code = |v: Value| euros(&v).err().map(|e| e.code);
        assert_eq!(code(json!({"amount": "10.505"})), Some("invalid_amount"));
        assert_eq!(code(json!({"amount": 10.5})), Some("invalid_amount"));
        assert_eq!(code(json!({"amount": "0.00"})), Some("invalid_amount"));
    }

    #[test]
    fn statuses_map_both_ways() {
        for (ledger, ideal) in STATUSES {
            assert_eq!(ideal_status(ledger), *ideal);
            assert_eq!(ledger_status(ideal), Some(*ledger));
        }
    }
}
