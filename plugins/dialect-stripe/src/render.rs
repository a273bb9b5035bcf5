//! Storefront side: outcomes, records and refusals → Stripe PaymentIntent / Refund / list
//! objects and Stripe errors.

use payproxy_plugin_sdk::payment::{
    Annotation, ChallengeKind, Decline, ErrorClass, Failure, HttpResponse, NextAction, Operation,
    Outcome, OutcomeStatus, Payment, PaymentMethod, Refusal, RefusalKind,
};
use payproxy_plugin_sdk::storefront::{PaymentRecord, PaymentState};
use serde_json::{json, Map, Value};

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
        OutcomeStatus::RequiresAction(action) => {
            intent["next_action"] = next_action(payment, action)
        }
        OutcomeStatus::Declined(d) if status == "requires_payment_method" => {
            intent["last_payment_error"] = payment_error(payment, d);
        }
        _ => {}
    }
    with_annotations(&mut intent, annotations);
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

pub(crate) fn metadata(payment: &Payment) -> Value {
    let map: Map<String, Value> = payment
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    Value::Object(map)
}

/// A PaymentIntent object with `status`.
fn intent(payment: &Payment, outcome: &Outcome, id: &str, status: &str) -> Value {
    let mut v = json!({
        "id": id,
        "object": "payment_intent",
        "status": status,
        "capture_method": if payment.manual_capture { "manual" } else { "automatic" },
        "metadata": metadata(payment),
        "description": payment.description,
        "customer": payment.customer.id,
        "receipt_email": payment.customer.email,
        "payment_method": card_token(payment),
        "payment_method_types": payment.method.as_ref().map(|m| vec![stripe_type(m)]).unwrap_or_default(),
        "confirmation_method": "automatic",
        "client_secret": null,
        "next_action": null,
        "last_payment_error": null,
        "livemode": false,
    });
    if let Some((minor, currency)) = money(payment, outcome) {
        v["amount"] = minor.into();
        v["currency"] = currency.into();
        v["amount_capturable"] = if status == "requires_capture" {
            minor
        } else {
            0
        }
        .into();
        v["amount_received"] = if status == "succeeded" { minor } else { 0 }.into();
    }
    v
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
pub(crate) fn record_intent(r: &PaymentRecord) -> Value {
    let status = state_status(r.state);
    let none = Outcome::of(OutcomeStatus::Pending);
    let mut v = intent(&r.payment, &none, &r.id, status);
    v["created"] = r.created.into();
    if let Some(m) = &r.payment.amount {
        v["amount_capturable"] = if r.state == PaymentState::RequiresCapture {
            (m.minor - r.amount_captured).max(0)
        } else {
            0
        }
        .into();
        v["amount_received"] = r.amount_captured.into();
    }
    let last = r.last_outcome.as_ref().map(|o| &o.status);
    match (r.state, last) {
        (PaymentState::RequiresAction, Some(OutcomeStatus::RequiresAction(action))) => {
            v["next_action"] = next_action(&r.payment, action);
        }
        (PaymentState::Failed, Some(OutcomeStatus::Declined(d))) => {
            v["last_payment_error"] = payment_error(&r.payment, d);
        }
        (PaymentState::Failed, _) => {
            v["last_payment_error"] = json!({
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
    let data: Vec<Value> = records.iter().map(record_intent).collect();
    HttpResponse::json(
        200,
        &json!({"object": "list", "data": data, "has_more": has_more, "url": url}),
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
    intent["last_payment_error"] = error.clone();
    error["payment_intent"] = intent;
    HttpResponse::json(402, &json!({ "error": error }))
}

/// 503 `api_error` when nothing happened (retry is safe: `Stripe-Should-Retry: true`); 502
/// with the intent in `processing` when the payment may exist.
fn error(payment: &Payment, outcome: &Outcome, id: &str, f: &Failure) -> HttpResponse {
    let code = safe_code(&f.code, "provider_error");
    if code == "invalid_request" && f.class != ErrorClass::Ambiguous {
        // The provider refused the merchant's request as malformed: a client error, not
        // worth retrying as is. The provider's message is for logs, not for the shopper.
        let message = "The payment provider refused the request as invalid; nothing was charged. \
                       Check the parameters (amount, currency, payment method) before retrying.";
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
                body["error"]["payment_intent"] = intent(payment, outcome, id, "processing");
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
    let mut v = json!({
        "id": id,
        "object": "refund",
        "payment_intent": payment.id,
        "status": status,
        "metadata": metadata(payment),
    });
    if let Some((minor, currency)) = money(payment, outcome) {
        v["amount"] = minor.into();
        v["currency"] = currency.into();
    }
    if let Some(reason) = failure {
        v["failure_reason"] = reason.into();
    }
    with_annotations(&mut v, annotations);
    HttpResponse::json(200, &v)
}

/// Compliance annotations as `payproxy_annotations` (only when there are some).
fn with_annotations(object: &mut Value, annotations: &[Annotation]) {
    if annotations.is_empty() {
        return;
    }
    let list: Vec<Value> = annotations
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
        .collect();
    object["payproxy_annotations"] = Value::Array(list);
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
