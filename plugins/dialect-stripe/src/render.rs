//! Storefront side: outcomes, records and refusals → Stripe PaymentIntent / Refund / list
//! objects and Stripe errors.

use payproxy_plugin_sdk::payment::{
    Annotation, ChallengeKind, Decline, ErrorClass, Failure, HttpResponse, NextAction, Operation,
    Outcome, OutcomeStatus, Payment, PaymentMethod, Refusal, RefusalKind,
};
use payproxy_plugin_sdk::storefront::{PaymentRecord, PaymentState};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::codes;
use crate::method::stripe_type;

/// Render an outcome: a Refund object for refunds, a PaymentIntent otherwise; declines and
/// errors as Stripe error objects.
pub fn outcome(
    payment: &Payment,
    outcome: &Outcome,
    payment_id: &str,
    annotations: &[Annotation],
) -> HttpResponse {
    if payment.operation == Operation::Refund {
        return refund(payment, outcome, payment_id, annotations);
    }
    let status = match &outcome.status {
        OutcomeStatus::Approved => match payment.operation {
            Operation::Void => "canceled",
            Operation::Capture => "succeeded",
            _ if payment.manual_capture => "requires_capture",
            _ => "succeeded",
        },
        OutcomeStatus::RequiresAction(_) => "requires_action",
        OutcomeStatus::Pending => "processing",
        // A retrieve answers the intent as it is; other operations answer a 402.
        OutcomeStatus::Declined(d) if payment.operation == Operation::Status => {
            if d.provider_code == "canceled" {
                "canceled"
            } else {
                "requires_payment_method"
            }
        }
        OutcomeStatus::Declined(d) => return declined(payment, outcome, payment_id, d),
        OutcomeStatus::Error(f) => return error(payment, outcome, payment_id, f),
    };
    let mut intent = intent(payment, outcome, payment_id, status);
    match &outcome.status {
        OutcomeStatus::RequiresAction(action) => intent.next_action = next_action(payment, action),
        OutcomeStatus::Declined(d) if status == "requires_payment_method" => {
            intent.last_payment_error = payment_error(payment, d);
        }
        _ => {}
    }
    intent.payproxy_annotations = annotations_json(annotations);
    HttpResponse::json(200, &intent)
}

/// The amount to show: the provider's when it says, else the request's; `None` when neither
/// knows the currency (follow-ups whose currency the host did not fill).
fn money(payment: &Payment, outcome: &Outcome) -> Option<(i64, String)> {
    let m = outcome
        .amount
        .as_ref()
        .filter(|m| !m.currency.is_empty())
        .or(payment.amount.as_ref())?;
    (!m.currency.is_empty()).then(|| (m.minor, m.currency.to_ascii_lowercase()))
}

/// `metadata` as Stripe shows it: an object, keys in order, the last of a repeated key.
pub(crate) fn metadata(payment: &Payment) -> BTreeMap<&str, &str> {
    payment
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A PaymentIntent object. Written straight from borrowed fields, not built as a `Value`
/// first (its map of owned keys and strings was most of a render's time); the fields are in
/// the order a `Value` writes them (sorted), so the bytes are the same.
#[derive(Serialize, Default)]
pub(crate) struct Intent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_capturable: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_received: Option<i64>,
    application: (),
    application_fee_amount: (),
    automatic_payment_methods: (),
    canceled_at: (),
    cancellation_reason: (),
    capture_method: &'static str,
    /// Always `null`: payproxy never hands out a client secret.
    client_secret: (),
    confirmation_method: &'static str,
    /// The record's creation time. Left out of an outcome's answer, which has no record (a
    /// plugin has no clock: the host passes time only with records): Stripe never sends it
    /// `null`, and typed SDKs that cannot read a `null` there skip a missing field.
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    customer: Option<&'a str>,
    description: Option<&'a str>,
    id: &'a str,
    invoice: (),
    last_payment_error: Value,
    /// Always `null`: payproxy keeps no charges (see the crate docs).
    latest_charge: (),
    livemode: bool,
    metadata: BTreeMap<&'a str, &'a str>,
    next_action: Value,
    object: &'static str,
    on_behalf_of: (),
    payment_method: Option<&'a str>,
    payment_method_configuration_details: (),
    payment_method_options: (),
    payment_method_types: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    payproxy_annotations: Vec<Value>,
    processing: (),
    receipt_email: Option<&'a str>,
    review: (),
    setup_future_usage: (),
    shipping: (),
    source: (),
    statement_descriptor: (),
    statement_descriptor_suffix: (),
    status: &'a str,
    transfer_data: (),
    transfer_group: (),
}

impl Intent<'_> {
    /// The intent as a `Value`, for the error objects that embed it.
    pub(crate) fn to_value(&self) -> Value {
        // Cannot fail: every key is a string.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A PaymentIntent object with `status`.
fn intent<'a>(payment: &'a Payment, outcome: &Outcome, id: &'a str, status: &'a str) -> Intent<'a> {
    let money = money(payment, outcome);
    let amounts = money.as_ref().map(|(minor, _)| {
        let capturable = if status == "requires_capture" {
            *minor
        } else {
            0
        };
        let received = if status == "succeeded" { *minor } else { 0 };
        (*minor, capturable, received)
    });
    // Stripe's fields payproxy keeps nothing for (the `()`s) are `null`.
    Intent {
        amount: amounts.map(|a| a.0),
        amount_capturable: amounts.map(|a| a.1),
        amount_received: amounts.map(|a| a.2),
        capture_method: if payment.manual_capture {
            "manual"
        } else {
            "automatic"
        },
        confirmation_method: "automatic",
        currency: money.map(|(_, currency)| currency),
        customer: payment.customer.id.as_deref(),
        description: payment.description.as_deref(),
        id,
        metadata: metadata(payment),
        object: "payment_intent",
        payment_method: card_token(payment),
        payment_method_types: payment.method.iter().map(stripe_type).collect(),
        receipt_email: payment.customer.email.as_deref(),
        status,
        ..Intent::default()
    }
}

/// The card token, Stripe's `payment_method`, when the method is a card.
fn card_token(payment: &Payment) -> Option<&str> {
    match &payment.method {
        Some(PaymentMethod::Card(c)) => Some(c.token.as_str()),
        _ => None,
    }
}

/// Stripe's status of a recorded payment (`failed` is `requires_payment_method`, with the
/// decline as `last_payment_error`).
fn state_status(state: PaymentState) -> &'static str {
    match state {
        PaymentState::RequiresPaymentMethod | PaymentState::Failed => "requires_payment_method",
        PaymentState::RequiresConfirmation => "requires_confirmation",
        PaymentState::RequiresAction => "requires_action",
        PaymentState::Processing => "processing",
        PaymentState::RequiresCapture => "requires_capture",
        PaymentState::Succeeded => "succeeded",
        PaymentState::Canceled => "canceled",
    }
}

/// The PaymentIntent object of a host record.
pub(crate) fn record_intent(r: &PaymentRecord) -> Intent<'_> {
    let status = state_status(r.state);
    let none = Outcome::of(OutcomeStatus::Pending);
    let mut v = intent(&r.payment, &none, &r.id, status);
    v.created = Some(r.created);
    if let Some(m) = &r.payment.amount {
        v.amount_capturable = Some(if r.state == PaymentState::RequiresCapture {
            (m.minor - r.amount_captured).max(0)
        } else {
            0
        });
        v.amount_received = Some(r.amount_captured);
    }
    let last = r.last_outcome.as_ref().map(|o| &o.status);
    match (r.state, last) {
        (PaymentState::RequiresAction, Some(OutcomeStatus::RequiresAction(action))) => {
            v.next_action = next_action(&r.payment, action);
        }
        (PaymentState::Failed, Some(OutcomeStatus::Declined(d))) => {
            v.last_payment_error = payment_error(&r.payment, d);
        }
        (PaymentState::Failed, _) => {
            v.last_payment_error = json!({
                "type": "api_error",
                "code": "payment_failed",
                "message": "The payment failed; confirm it again or use another payment method.",
            });
        }
        _ => {}
    }
    v
}

/// A recorded payment as a PaymentIntent (200).
pub fn record(r: &PaymentRecord) -> HttpResponse {
    HttpResponse::json(200, &record_intent(r))
}

/// A page of recorded payments as a Stripe list object (200).
pub fn list(records: &[PaymentRecord], has_more: bool, url: &str) -> HttpResponse {
    #[derive(Serialize)]
    struct List<'a> {
        data: Vec<Intent<'a>>,
        has_more: bool,
        object: &'static str,
        url: &'a str,
    }
    let data = records.iter().map(record_intent).collect();
    HttpResponse::json(
        200,
        &List {
            data,
            has_more,
            object: "list",
            url,
        },
    )
}

/// `next_action` in Stripe's shapes: `redirect_to_url`, `oxxo_display_details` for OXXO
/// vouchers, `<type>_display_qr_code` for QR payloads (`pix_display_qr_code` for Pix, and
/// when the method is unknown); and, for a method the shopper confirms on their own device
/// (M-Pesa, MB WAY, BLIK …), one shape whatever the method, so a storefront handles every
/// such method with one branch: `{"type": "confirm_on_device", "confirm_on_device":
/// {"message": …, "expires_at": <Unix seconds or null>}}`.
fn next_action(payment: &Payment, action: &NextAction) -> Value {
    let method_type = payment.method.as_ref().map(stripe_type);
    let safe_type = method_type
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    match action {
        NextAction::Redirect(url) if matches!(&payment.method, Some(PaymentMethod::CashVoucher(v)) if v.scheme == "oxxo") =>
        {
            json!({"type": "oxxo_display_details", "oxxo_display_details": {"hosted_voucher_url": url}})
        }
        NextAction::Redirect(url) => json!({
            "type": "redirect_to_url",
            "redirect_to_url": {"url": url, "return_url": payment.return_url},
        }),
        NextAction::Qr(data) => {
            let kind = format!(
                "{}_display_qr_code",
                safe_type.filter(|t| *t != "card").unwrap_or("pix")
            );
            let mut v = json!({ "type": kind });
            v[kind.as_str()] = json!({ "data": data });
            v
        }
        NextAction::ConfirmOnDevice(c) => json!({
            "type": "confirm_on_device",
            "confirm_on_device": {"message": c.message, "expires_at": c.expires_at},
        }),
    }
}

/// A decline as Stripe's `card_error`. Cards get Stripe's own codes and messages. Other
/// methods get Stripe's method-neutral `payment_method_provider_decline` (or
/// `payment_method_provider_timeout` when the shopper did not confirm in time), the
/// canonical code as `decline_code`, and the provider dialect's shopper-safe message, which
/// speaks of the method, not of a card.
fn payment_error(payment: &Payment, d: &Decline) -> Value {
    let (code, decline_code, message) = codes::storefront_decline(&d.code);
    if matches!(payment.method, None | Some(PaymentMethod::Card(_))) {
        return json!({"type": "card_error", "code": code, "decline_code": decline_code, "message": message});
    }
    let code = match code {
        "card_declined" | "expired_card" => "payment_method_provider_decline",
        other => other,
    };
    let message = match d.message.trim() {
        "" => "The payment was declined.",
        given => given,
    };
    json!({
        "type": "card_error",
        "code": code,
        "decline_code": decline_code,
        "message": message,
        "payment_method": {"type": payment.method.as_ref().map(stripe_type)},
    })
}

/// 402 `card_error` with the intent, as Stripe answers a declined confirmation.
fn declined(payment: &Payment, outcome: &Outcome, id: &str, d: &Decline) -> HttpResponse {
    let mut error = payment_error(payment, d);
    let mut intent = intent(payment, outcome, id, "requires_payment_method");
    intent.last_payment_error = error.clone();
    error["payment_intent"] = intent.to_value();
    HttpResponse::json(402, &json!({ "error": error }))
}

/// 503 `api_error` when nothing happened (retry is safe: `Stripe-Should-Retry: true`); 502
/// with the intent in `processing` when the payment may exist.
fn error(payment: &Payment, outcome: &Outcome, id: &str, f: &Failure) -> HttpResponse {
    let code = safe_code(&f.code, "provider_error");
    if code == "invalid_request" && f.class != ErrorClass::Ambiguous {
        // The provider refused the merchant's request as malformed: a client error, not
        // worth retrying as is. The provider's message is for logs, not for the shopper;
        // its code (a token such as `resource_missing`) tells the merchant what to look at.
        let said = safe_code(&f.provider_code, "");
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(" (its code: {said})")
        };
        let message = format!(
            "The payment provider refused the request as invalid{said}; nothing was charged. \
             Check the parameters (amount, currency, payment method) before retrying."
        );
        return HttpResponse::json(
            400,
            &json!({"error": {"type": "invalid_request_error", "code": "invalid_request", "message": message}}),
        );
    }
    match f.class {
        ErrorClass::Ambiguous => {
            let message = format!(
                "The payment provider gave no reliable answer ({code}); the payment may have been processed. \
                 Retrieve the PaymentIntent or retry with the same Idempotency-Key."
            );
            let mut body =
                json!({"error": {"type": "api_error", "code": code, "message": message}});
            if payment.operation != Operation::Refund {
                body["error"]["payment_intent"] =
                    intent(payment, outcome, id, "processing").to_value();
            }
            HttpResponse::json(502, &body)
        }
        ErrorClass::NotSent | ErrorClass::AnsweredNotProcessed => {
            let message = format!(
                "The payment provider could not process the request ({code}); nothing was charged."
            );
            let mut response = HttpResponse::json(
                503,
                &json!({"error": {"type": "api_error", "code": code, "message": message}}),
            );
            response
                .headers
                .push(("stripe-should-retry".into(), "true".into()));
            response
        }
    }
}

/// A Refund object; a declined refund is `failed` with Stripe's `failure_reason`.
fn refund(
    payment: &Payment,
    outcome: &Outcome,
    id: &str,
    annotations: &[Annotation],
) -> HttpResponse {
    let (status, failure) = match &outcome.status {
        OutcomeStatus::Approved => ("succeeded", None),
        OutcomeStatus::Pending => ("pending", None),
        OutcomeStatus::RequiresAction(_) => ("requires_action", None),
        OutcomeStatus::Declined(d) => {
            let reason = match d.code.as_str() {
                "insufficient_funds" => "insufficient_funds",
                "expired_card" => "expired_or_canceled_card",
                _ => "declined",
            };
            ("failed", Some(reason))
        }
        OutcomeStatus::Error(f) => return error(payment, outcome, id, f),
    };
    // Stripe's Refund fields payproxy keeps nothing for are `null`: it keeps no charges or
    // balance transactions, and `reason` is checked, not sent on.
    let mut v = json!({
        "id": id,
        "object": "refund",
        "balance_transaction": null,
        "charge": null,
        "destination_details": null,
        "failure_reason": null,
        "payment_intent": payment.id,
        "reason": null,
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": status,
        "metadata": metadata(payment),
        "transfer_reversal": null,
    });
    if let Some((minor, currency)) = money(payment, outcome) {
        v["amount"] = minor.into();
        v["currency"] = currency.into();
    }
    if let Some(reason) = failure {
        v["failure_reason"] = reason.into();
    }
    let annotations = annotations_json(annotations);
    if !annotations.is_empty() {
        v["payproxy_annotations"] = Value::Array(annotations);
    }
    HttpResponse::json(200, &v)
}

/// Compliance annotations as `payproxy_annotations` (shown only when there are some).
fn annotations_json(annotations: &[Annotation]) -> Vec<Value> {
    annotations
        .iter()
        .map(|a| {
            let mut v =
                json!({"kind": a.kind, "name": a.name, "rate_bp": a.rate_bp, "note": a.note});
            if let Some(m) = &a.amount {
                v["amount"] = m.minor.into();
                v["currency"] = m.currency.to_ascii_lowercase().into();
            }
            v
        })
        .collect()
}

/// A code of at most 64 `[A-Za-z0-9_.-]`, else `fallback`: codes are shown verbatim.
fn safe_code<'a>(code: &'a str, fallback: &'a str) -> &'a str {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        code
    } else {
        fallback
    }
}

/// Refusal codes the host makes about a payment's state → Stripe's code, param and default
/// message.
const HOST_CODES: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "unexpected_state",
        "payment_intent_unexpected_state",
        None,
        "This PaymentIntent's status does not allow this operation.",
    ),
    (
        "already_refunded",
        "charge_already_refunded",
        None,
        "This PaymentIntent has already been refunded.",
    ),
    (
        "amount_too_large",
        "amount_too_large",
        Some("amount"),
        "The amount is more than what is left to capture or refund.",
    ),
];

/// Render a refusal as a Stripe error object.
pub fn refusal(r: &Refusal) -> HttpResponse {
    let host_code = HOST_CODES.iter().find(|(c, ..)| *c == r.code);
    if let (Some((_, code, param, default)), false) = (
        host_code,
        matches!(
            r.kind,
            RefusalKind::ComplianceDenied | RefusalKind::Challenge(_)
        ),
    ) {
        let message = if r.message.is_empty() {
            (*default).to_string()
        } else {
            r.message.clone()
        };
        let mut error = json!({"type": "invalid_request_error", "code": code, "message": message});
        let param = match &r.kind {
            RefusalKind::InvalidRequest(Some(p)) => Some(p.as_str()),
            _ => *param,
        };
        if let Some(param) = param {
            error["param"] = param.into();
        }
        return HttpResponse::json(400, &json!({ "error": error }));
    }
    let (status, kind, code, param) = match &r.kind {
        RefusalKind::InvalidRequest(param) => {
            let status = if (400..500).contains(&r.status) {
                r.status
            } else {
                400
            };
            let code = safe_code(&r.code, "invalid_request");
            let kind = if code.starts_with("idempotency") {
                "idempotency_error"
            } else {
                "invalid_request_error"
            };
            (status, kind, code, param.clone())
        }
        RefusalKind::ComplianceDenied => (
            402,
            "card_error",
            safe_code(&r.code, "payment_denied"),
            None,
        ),
        RefusalKind::Challenge(ChallengeKind::StrongAuthentication) => {
            (402, "card_error", "authentication_required", None)
        }
        RefusalKind::Challenge(ChallengeKind::PhoneVerification) => (
            402,
            "card_error",
            "phone_verification_required",
            Some("payment_method_data[billing_details][phone_verified]".to_string()),
        ),
        RefusalKind::Challenge(ChallengeKind::IdentityDocuments) => {
            (402, "card_error", "identity_verification_required", None)
        }
        RefusalKind::Unavailable => {
            let status = if (500..600).contains(&r.status) {
                r.status
            } else {
                503
            };
            (
                status,
                "api_error",
                safe_code(&r.code, "provider_unavailable"),
                None,
            )
        }
        RefusalKind::NotFound => (
            404,
            "invalid_request_error",
            "resource_missing",
            Some("intent".to_string()),
        ),
    };
    let message = if r.message.is_empty() {
        default_message(code)
    } else {
        r.message.clone()
    };
    let mut error = json!({"type": kind, "code": code, "message": message});
    if let Some(param) = param {
        error["param"] = param.into();
    }
    if code == "authentication_required" {
        error["decline_code"] = "authentication_required".into();
    }
    HttpResponse::json(status, &json!({ "error": error }))
}

fn default_message(code: &str) -> String {
    match code {
        "authentication_required" => {
            "This payment requires strong customer authentication (3-D Secure).".into()
        }
        "phone_verification_required" => {
            "Verify the shopper's phone number, then retry with phone_verified=true.".into()
        }
        "identity_verification_required" => "Verify the shopper's identity, then retry.".into(),
        _ => format!("The request was refused ({code})."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::{Card, Money, PaymentMethod};

    fn card_payment() -> Payment {
        let mut p = Payment::new(Operation::Authorize);
        p.id = Some("pi_1".into());
        p.amount = Some(Money {
            minor: 1050,
            currency: "EUR".into(),
        });
        p.method = Some(PaymentMethod::Card(Card {
            token: "pm_card_visa".into(),
            bin: None,
            last4: None,
            network: None,
            issuer_country: None,
        }));
        p.customer.id = Some("cus_1".into());
        p.customer.email = Some("a@example.com".into());
        p.description = Some("order \"7\"".into());
        // Out of order and repeated: shown sorted, the last value of a key.
        p.metadata = vec![
            ("z".into(), "last".into()),
            ("order_id".into(), "1".into()),
            ("z".into(), "later".into()),
        ];
        p
    }

    /// The body as a `Value` writes it (keys sorted): what the dialect wrote before the
    /// intent became a struct, so a storefront sees the same bytes.
    fn assert_value_order(response: &HttpResponse) -> Value {
        let parsed: Value = serde_json::from_slice(&response.body).expect("JSON");
        assert_eq!(
            String::from_utf8_lossy(&response.body),
            parsed.to_string(),
            "fields out of a Value's order"
        );
        parsed
    }

    /// The top-level fields of Stripe's PaymentIntent object (API 2024-06-20) but
    /// `amount_details` (a breakdown payproxy has nothing for): an SDK reads any of them as
    /// an attribute, and one that is missing is an error there, not a `None`.
    const INTENT_FIELDS: &[&str] = &[
        "id",
        "object",
        "amount",
        "amount_capturable",
        "amount_received",
        "application",
        "application_fee_amount",
        "automatic_payment_methods",
        "canceled_at",
        "cancellation_reason",
        "capture_method",
        "client_secret",
        "confirmation_method",
        "created",
        "currency",
        "customer",
        "description",
        "invoice",
        "last_payment_error",
        "latest_charge",
        "livemode",
        "metadata",
        "next_action",
        "on_behalf_of",
        "payment_method",
        "payment_method_configuration_details",
        "payment_method_options",
        "payment_method_types",
        "processing",
        "receipt_email",
        "review",
        "setup_future_usage",
        "shipping",
        "source",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "status",
        "transfer_data",
        "transfer_group",
    ];

    /// The top-level fields of Stripe's Refund object (API 2024-06-20) payproxy renders.
    const REFUND_FIELDS: &[&str] = &[
        "id",
        "object",
        "amount",
        "balance_transaction",
        "charge",
        "currency",
        "destination_details",
        "failure_reason",
        "metadata",
        "payment_intent",
        "reason",
        "receipt_number",
        "source_transfer_reversal",
        "status",
        "transfer_reversal",
    ];

    /// Every one of `fields` is in `body`, but those in `but`.
    fn every_field(body: &Value, fields: &[&str], but: &[&str]) {
        let missing: Vec<_> = fields
            .iter()
            .filter(|f| !but.contains(f) && body.get(**f).is_none())
            .collect();
        assert!(missing.is_empty(), "missing {missing:?} in {body}");
    }

    #[test]
    fn a_refund_has_every_field_of_stripes() {
        let mut p = card_payment();
        p.operation = Operation::Refund;
        p.id = Some("pi_1".into());
        let approved = Outcome::of(OutcomeStatus::Approved);
        let body = assert_value_order(&outcome(&p, &approved, "re_1", &[]));
        every_field(&body, REFUND_FIELDS, &[]);
        assert_eq!(
            (
                &body["id"],
                &body["payment_intent"],
                &body["status"],
                &body["charge"]
            ),
            (
                &json!("re_1"),
                &json!("pi_1"),
                &json!("succeeded"),
                &Value::Null
            )
        );
    }

    #[test]
    fn an_intent_is_written_as_its_value_would_be() {
        let p = card_payment();
        let approved = Outcome::of(OutcomeStatus::Approved);
        let body = assert_value_order(&outcome(&p, &approved, "pi_1", &[]));
        assert_eq!(body["metadata"], json!({"order_id": "1", "z": "later"}));
        assert_eq!(body["client_secret"], Value::Null);
        assert_eq!(body["payment_method_types"], json!(["card"]));
        assert_eq!(
            (&body["amount"], &body["currency"], &body["amount_received"]),
            (&json!(1050), &json!("eur"), &json!(1050))
        );
        assert!(body.get("payproxy_annotations").is_none());
        assert!(body.get("created").is_none());
        every_field(&body, INTENT_FIELDS, &["created"]);

        let mut manual = card_payment();
        manual.manual_capture = true;
        manual.method = None;
        manual.metadata.clear();
        let vat = Annotation {
            kind: "tax".into(),
            name: "VAT".into(),
            rate_bp: 2100,
            amount: Some(Money {
                minor: 220,
                currency: "EUR".into(),
            }),
            note: "".into(),
        };
        let body = assert_value_order(&outcome(&manual, &approved, "pi_2", &[vat]));
        assert_eq!(body["status"], "requires_capture");
        assert_eq!(body["amount_capturable"], 1050);
        assert_eq!(body["payment_method_types"], json!([]));
        assert_eq!(body["payproxy_annotations"][0]["currency"], "eur");

        let redirect = Outcome::of(OutcomeStatus::RequiresAction(NextAction::Redirect(
            "https://bank.example/3ds".into(),
        )));
        let body = assert_value_order(&outcome(&p, &redirect, "pi_3", &[]));
        assert_eq!(body["next_action"]["type"], "redirect_to_url");

        let declined = Outcome::of(OutcomeStatus::Declined(Decline {
            code: "insufficient_funds".into(),
            provider_code: "insufficient_funds".into(),
            kind: payproxy_plugin_sdk::payment::DeclineKind::Hard,
            message: "".into(),
        }));
        let response = outcome(&p, &declined, "pi_4", &[]);
        assert_eq!(response.status, 402);
        let body = assert_value_order(&response);
        assert_eq!(body["error"]["payment_intent"]["id"], "pi_4");
        assert_eq!(
            body["error"]["payment_intent"]["last_payment_error"]["code"],
            "card_declined"
        );

        let record = PaymentRecord {
            id: "pi_5".into(),
            payment: card_payment(),
            state: PaymentState::Succeeded,
            created: 1_780_000_000,
            amount_captured: 1050,
            amount_refunded: 0,
            last_outcome: None,
        };
        let body = assert_value_order(&super::record(&record));
        assert_eq!(body["created"], 1_780_000_000);
        every_field(&body, INTENT_FIELDS, &[]);
        assert_eq!(body["latest_charge"], Value::Null);
        let body = assert_value_order(&list(
            &[record.clone(), record],
            true,
            "/v1/payment_intents",
        ));
        assert_eq!(body["data"][1]["id"], "pi_5");
    }
}
