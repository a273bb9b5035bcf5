//! `dialect-mpesa`: the provider side of M-Pesa's STK push (Safaricom's Daraja API), a payment
//! the shopper confirms on their phone. It adds a local method with no storefront change: a
//! Stripe-shaped storefront sends `payment_method_data[type]=mpesa` with
//! `payment_method_data[mpesa][phone]`, the Stripe dialect passes the method through as
//! `other`, a routing rule sends it here, and the storefront's answer is `requires_action`
//! with a `confirm_on_device` next action.
//!
//! # Config
//!
//! ```json
//! { "shortcode": "174379", "callback_url": "https://pay.example.com/webhooks/mpesa-ke",
//!   "transaction_type": "CustomerPayBillOnline", "party_b": "174379", "prompt_seconds": 60 }
//! ```
//!
//! `shortcode` (the paybill or till's business short code) and `callback_url` (where Daraja
//! posts the result: payproxy's `POST /webhooks/{provider}` on a storefront listener) are
//! required. `transaction_type` is `CustomerPayBillOnline` (default) or
//! `CustomerBuyGoodsOnline`; `party_b` is the till number for the latter (default:
//! `shortcode`); `prompt_seconds` is how long the prompt stays on the phone (default 60),
//! for the next action's expiry. Credentials (`Context.credentials`): `access_token` (a
//! `{"file": …}` or `{"env": …}` secret, re-read at every reload, kept fresh by whatever
//! fetches Daraja's token; the host's `providers.NAME.oauth2` sends RFC 6749's `POST`, while
//! Daraja documents a `GET` for its token endpoint), `passkey` (the Lipa na M-Pesa passkey)
//! and `callback_token` (a random secret this dialect appends to the callback URL as
//! `token=…`; Daraja does not sign its callbacks, so the URL is the proof).
//!
//! # Protocol
//!
//! | operation | request |
//! |-----------|---------|
//! | authorize | `POST /mpesa/stkpush/v1/processrequest` `{"BusinessShortCode","Password","Timestamp","TransactionType","Amount","PartyA","PartyB","PhoneNumber","CallBackURL","AccountReference","TransactionDesc"}` |
//! | status    | `POST /mpesa/stkpushquery/v1/query` `{"BusinessShortCode","Password","Timestamp","CheckoutRequestID"}` |
//!
//! `Password` is base64(shortcode + passkey + timestamp), `Timestamp` is `YYYYMMDDHHmmss` in
//! Kenya's time (UTC+3) from `Context.now_ms`. Amounts are whole shillings (KES only, 1 to
//! 250,000); phone numbers are `2547…`/`2541…` (from `+254…` or `07…`/`01…`). Capture,
//! refund and void are refused before anything is sent: STK push charges at once, and
//! reversals go through another Daraja API.
//!
//! An accepted push (`ResponseCode` `"0"`) is `requires-action` with `confirm-on-device`,
//! the provider reference being the `CheckoutRequestID`. The status query and the callback
//! give the result by `ResultCode`: `0` paid; `1032` cancelled on the phone
//! (`shopper_declined`), `1037` phone unreachable (`shopper_unreachable`), `1019` expired
//! (`confirmation_expired`), `1` insufficient balance, `2001` wrong PIN (`shopper_declined`); `4999` still processing; an unknown code on a
//! query is ambiguous (the payment may still complete), in a callback a hard decline. Daraja's errors
//! (`{"requestId","errorCode","errorMessage"}`) are classified by `errorCode` first
//! ([`ERRORS`]): `500.001.1001` on a push means the subscriber is busy with another
//! transaction and nothing was charged; on a status query it means still pending.
//!
//! # Notifications
//!
//! `decode-webhook` reads Daraja's STK callback (`{"Body":{"stkCallback":{
//! "MerchantRequestID","CheckoutRequestID","ResultCode","ResultDesc","CallbackMetadata"?}}}`)
//! as one `status` notification for the `CheckoutRequestID`, after checking the `token` in the
//! query against `callback_token` (401 otherwise), and answers `{"ResultCode":0,
//! "ResultDesc":"Accepted"}`.

use base64::Engine;
use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::helpers::http_errors::Errors;
use payproxy_plugin_sdk::helpers::{config, decode, encode, time, webhook};
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Decline, DeclineKind, DeviceConfirmation, Egress, ErrorClass,
    HttpRequest, HttpResponse, Money, NextAction, Notification, Operation, Outcome, OutcomeStatus,
    Payment, PaymentMethod, Refusal, Webhook,
};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// Kenya's offset from UTC, for Daraja's timestamps.
const EAT: u64 = 3 * 3600;
/// Largest STK push, in shillings.
const MAX_SHILLINGS: i64 = 250_000;

/// Daraja's own error codes, read before the HTTP status.
pub const ERRORS: Errors<'static> = Errors {
    by_code: &[
        // "Unable to lock subscriber, a transaction is already in process": nothing charged.
        (
            "500.001.1001",
            "provider_unavailable",
            ErrorClass::AnsweredNotProcessed,
        ),
        (
            "404.001.03",
            "provider_auth_failed",
            ErrorClass::AnsweredNotProcessed,
        ),
        (
            "400.002.02",
            "invalid_request",
            ErrorClass::AnsweredNotProcessed,
        ),
        (
            "400.002.05",
            "invalid_request",
            ErrorClass::AnsweredNotProcessed,
        ),
    ],
    by_status: &[],
};

/// `ResultCode` → (normalized decline code, kind, shopper-safe message).
const RESULTS: &[(&str, &str, DeclineKind, &str)] = &[
    (
        "1032",
        "shopper_declined",
        DeclineKind::Hard,
        "The payment was cancelled on your phone.",
    ),
    (
        "1037",
        "shopper_unreachable",
        DeclineKind::Soft,
        "Your phone could not be reached. Check that it is on and try again.",
    ),
    (
        "1019",
        "confirmation_expired",
        DeclineKind::Soft,
        "The M-Pesa prompt expired before it was confirmed. Please try again.",
    ),
    (
        "1",
        "insufficient_funds",
        DeclineKind::Soft,
        "Your M-Pesa balance is too low for this payment.",
    ),
    (
        "2001",
        "shopper_declined",
        DeclineKind::Soft,
        "The M-Pesa PIN was wrong. Please try again.",
    ),
];

/// The plugin config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Business short code (paybill or store number).
    pub shortcode: String,
    /// Where Daraja posts the result (payproxy's webhook URL for this provider).
    pub callback_url: String,
    /// `CustomerPayBillOnline` or `CustomerBuyGoodsOnline`.
    #[serde(default = "default_transaction_type")]
    pub transaction_type: String,
    /// The receiving party (till number for buy goods); default: `shortcode`.
    #[serde(default)]
    pub party_b: Option<String>,
    /// How long the prompt stays on the phone, seconds.
    #[serde(default = "default_prompt_seconds")]
    pub prompt_seconds: u32,
}

fn default_transaction_type() -> String {
    "CustomerPayBillOnline".into()
}

fn default_prompt_seconds() -> u32 {
    60
}

impl Config {
    /// Parse and validate; errors read `dialect-mpesa config: <field>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse("dialect-mpesa", text)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(&config.shortcode) {
            return Err(config::error(
                "dialect-mpesa",
                "shortcode",
                "must be 1–10 digits",
            ));
        }
        if config.party_b.as_deref().is_some_and(|p| !digits(p)) {
            return Err(config::error(
                "dialect-mpesa",
                "party_b",
                "must be 1–10 digits",
            ));
        }
        if !matches!(
            config.transaction_type.as_str(),
            "CustomerPayBillOnline" | "CustomerBuyGoodsOnline"
        ) {
            return Err(config::error(
                "dialect-mpesa",
                "transaction_type",
                "must be CustomerPayBillOnline or CustomerBuyGoodsOnline",
            ));
        }
        // The URL carries the callback token: only loopback may go without TLS.
        let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
            .iter()
            .any(|p| {
                config
                    .callback_url
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/', '?']))
            });
        if !config.callback_url.starts_with("https://") && !loopback {
            return Err(config::error(
                "dialect-mpesa",
                "callback_url",
                "must be an https URL (http only on loopback)",
            ));
        }
        if !(10..=600).contains(&config.prompt_seconds) {
            return Err(config::error(
                "dialect-mpesa",
                "prompt_seconds",
                "must be 10–600",
            ));
        }
        Ok(config)
    }
}

/// The plugin.
pub struct Mpesa {
    config: Config,
}

impl Egress for Mpesa {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Mpesa {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Daraja has no idempotency key: a resent push is a second prompt.
            idempotent_resend: false,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        let token = context.required_credential("access_token")?;
        let passkey = context.required_credential("passkey")?;
        let timestamp = timestamp(context.now_ms);
        let password = base64::engine::general_purpose::STANDARD
            .encode(format!("{}{passkey}{timestamp}", self.config.shortcode));
        let (path, body) = match payment.operation {
            Operation::Authorize => {
                // STK push charges at once: nothing could be captured or voided later.
                encode::refuse_manual_capture(payment, "M-Pesa")?;
                let phone = phone(payment)?;
                let shillings = shillings(payment)?;
                let callback_token = context.required_credential("callback_token")?;
                if !url_safe(callback_token) {
                    return Err(Refusal {
                        kind: payproxy_plugin_sdk::payment::RefusalKind::Unavailable,
                        status: 500,
                        code: "provider_misconfigured".into(),
                        message: format!(
                            "provider {}: credential callback_token must be 16–128 of A–Z a–z 0–9 - _",
                            context.provider
                        ),
                    });
                }
                let separator = if self.config.callback_url.contains('?') {
                    '&'
                } else {
                    '?'
                };
                let reference = account_reference(payment, context);
                (
                    "/mpesa/stkpush/v1/processrequest",
                    json!({
                        "BusinessShortCode": self.config.shortcode,
                        "Password": password,
                        "Timestamp": timestamp,
                        "TransactionType": self.config.transaction_type,
                        "Amount": shillings,
                        "PartyA": phone,
                        "PartyB": self.config.party_b.as_deref().unwrap_or(&self.config.shortcode),
                        "PhoneNumber": phone,
                        "CallBackURL": format!("{}{separator}token={callback_token}", self.config.callback_url),
                        "AccountReference": reference,
                        "TransactionDesc": description(payment),
                    }),
                )
            }
            Operation::Status => (
                "/mpesa/stkpushquery/v1/query",
                json!({
                    "BusinessShortCode": self.config.shortcode,
                    "Password": password,
                    "Timestamp": timestamp,
                    "CheckoutRequestID": encode::provider_reference(payment)?,
                }),
            ),
            Operation::Capture | Operation::Refund | Operation::Void => {
                return Err(Refusal::invalid(
                    None,
                    "operation_unsupported",
                    "M-Pesa STK push payments are charged at once and are not captured, \
                     refunded or voided through this provider",
                ))
            }
        };
        let mut headers = encode::json_headers(None);
        headers.push(encode::bearer(token));
        Ok(encode::json_request(
            "POST",
            path.into(),
            headers,
            Some(body),
        ))
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        let error_code = |b: &Value| decode::text(b, "errorCode").map(str::to_string);
        match payment.operation {
            Operation::Status => {
                let pending = (response.status == 500)
                    .then(|| serde_json::from_slice::<Value>(&response.body).ok())
                    .flatten()
                    .is_some_and(|b| decode::text(&b, "errorCode") == Some("500.001.1001"));
                if pending {
                    // "The transaction is being processed": the prompt is still on the phone,
                    // so the payment still waits for the shopper (not merely processing).
                    return self.waiting(payment, None, None);
                }
                decode::json_answer_with(response, &ERRORS, error_code, |body| {
                    let mut outcome = match result_code(body.get("ResultCode")).as_deref() {
                        // "Still under processing".
                        Some("4999") => return self.waiting(payment, None, None),
                        Some(code) if code != "0" && !RESULTS.iter().any(|r| r.0 == code) => {
                            // A result this dialect does not know is not taken as final on a
                            // query: the payment may still complete.
                            decode::ambiguous(
                                code,
                                "M-Pesa answered a result code this dialect does not know",
                            )
                        }
                        _ => result(body.get("ResultCode")),
                    };
                    outcome.provider_reference = payment.provider_reference.clone();
                    outcome
                })
            }
            _ => decode::json_answer_with(response, &ERRORS, error_code, |body| {
                let code = result_code(body.get("ResponseCode"));
                match (code.as_deref(), decode::text(body, "CheckoutRequestID")) {
                    (Some("0"), Some(reference)) => {
                        let expires_at = response
                            .header("date")
                            .and_then(time::parse_http_date)
                            .map(|now| now as i64 + i64::from(self.config.prompt_seconds));
                        self.waiting(payment, Some(reference), expires_at)
                    }
                    // Explicitly not accepted, and no request id: the prompt never went out.
                    (Some(code), None) if code != "0" => Outcome::error(
                        ErrorClass::AnsweredNotProcessed,
                        "provider_unavailable",
                        code,
                        "M-Pesa did not accept the push request",
                    ),
                    // A request id proves a prompt may be on the phone; anything else is
                    // unreadable. Neither is safe to send to another provider.
                    _ => decode::ambiguous(
                        code.as_deref().unwrap_or(""),
                        "M-Pesa's answer to the push is not one this dialect can trust",
                    ),
                }
            }),
        }
    }

    fn decode_webhook(&self, request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
        let expected = context.required_credential("callback_token")?;
        let given = request
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(webhook::unauthorized(
                "invalid_callback_token",
                "the callback URL's token does not match",
            ));
        }
        let body: Value = request
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| webhook::unreadable("an M-Pesa STK callback"))?;
        let callback = &body["Body"]["stkCallback"];
        let reference = decode::text(callback, "CheckoutRequestID")
            .ok_or_else(|| webhook::unreadable("an M-Pesa STK callback"))?;
        let code = callback.get("ResultCode");
        let mut outcome = result(code);
        if matches!(outcome.status, OutcomeStatus::Error(_)) {
            return Err(webhook::unreadable("an M-Pesa STK callback with a result"));
        }
        outcome.provider_reference = Some(reference.to_string());
        outcome.amount = paid_amount(callback);
        let code_text = code.map(|c| c.to_string().trim_matches('"').to_string());
        Ok(Webhook {
            notifications: vec![Notification {
                // Daraja sends one result per push; redeliveries repeat it.
                event_id: format!("{reference}:{}", code_text.unwrap_or_default()),
                operation: Operation::Status,
                outcome,
                merchant_reference: None,
            }],
            response: HttpResponse::json(200, &json!({"ResultCode": 0, "ResultDesc": "Accepted"})),
        })
    }
}

impl Mpesa {
    /// The shopper must confirm on the phone: the prompt's message, and its expiry when known.
    fn waiting(
        &self,
        payment: &Payment,
        reference: Option<&str>,
        expires_at: Option<i64>,
    ) -> Outcome {
        Outcome {
            status: OutcomeStatus::RequiresAction(NextAction::ConfirmOnDevice(
                DeviceConfirmation {
                    message: prompt_message(payment),
                    expires_at,
                },
            )),
            provider_reference: reference
                .map(str::to_string)
                .or_else(|| payment.provider_reference.clone()),
            amount: payment.amount.clone(),
        }
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_egress_v4!(Mpesa);

/// A Daraja code that may come as a string (`"0"`) or a number (`0`).
fn result_code(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A secret that can travel in a URL as is.
fn url_safe(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `YYYYMMDDHHmmss` in Kenya's time.
fn timestamp(now_ms: u64) -> String {
    let t = time::DateTime::from_unix_ms(now_ms, EAT);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The paying phone as Daraja wants it (`2547XXXXXXXX`): the method's `phone` field, else
/// the customer's phone.
fn phone(payment: &Payment) -> Result<String, Refusal> {
    let field = match &payment.method {
        Some(PaymentMethod::Other(m)) if m.name == "mpesa" => m
            .fields
            .iter()
            .find(|(name, _)| name == "phone")
            .map(|(_, v)| v.as_str()),
        Some(PaymentMethod::Ewallet(w)) if w.wallet == "mpesa" => w.phone.as_deref(),
        _ => {
            return Err(encode::unsupported_method(
                "this provider takes M-Pesa payments only",
            ))
        }
    };
    let raw = field.or(payment.customer.phone.as_deref()).ok_or_else(|| {
        Refusal::invalid(
            Some("phone"),
            "parameter_missing",
            "M-Pesa needs the shopper's phone number",
        )
    })?;
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '+'))
        .collect();
    let national = match digits.len() {
        12 if digits.starts_with("254") => &digits[3..],
        10 if digits.starts_with('0') => &digits[1..],
        9 => &digits[..],
        _ => "",
    };
    let mobile = national.len() == 9
        && (national.starts_with('7') || national.starts_with('1'))
        && national.bytes().all(|b| b.is_ascii_digit());
    if !mobile {
        return Err(Refusal::invalid(
            Some("phone"),
            "parameter_invalid_value",
            "Invalid phone: a Kenyan mobile number such as +254712345678",
        ));
    }
    Ok(format!("254{national}"))
}

/// Whole shillings: KES only, 1 to 250,000, no cents (Daraja takes integers).
fn shillings(payment: &Payment) -> Result<i64, Refusal> {
    let money = encode::required_amount(payment)?;
    encode::checked_amount_in(money, "KES", "M-Pesa")?;
    if money.minor % 100 != 0 {
        return Err(Refusal::invalid(
            Some("amount"),
            "amount_invalid",
            "M-Pesa takes whole shillings: the amount must be a multiple of 100 (cents)",
        ));
    }
    let shillings = money.minor / 100;
    if shillings < 1 {
        return Err(Refusal::invalid(
            Some("amount"),
            "amount_too_small",
            "M-Pesa takes at least KES 1",
        ));
    }
    if shillings > MAX_SHILLINGS {
        return Err(Refusal::invalid(
            Some("amount"),
            "amount_too_large",
            "M-Pesa takes at most KES 250,000 per payment",
        ));
    }
    Ok(shillings)
}

/// Daraja's `AccountReference`: at most 12 characters of the merchant's reference.
fn account_reference(payment: &Payment, context: &Context) -> String {
    encode::reference(payment, context)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// `TransactionDesc`: at most 13 characters.
fn description(payment: &Payment) -> String {
    let text = payment.description.as_deref().unwrap_or("Payment");
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .take(13)
        .collect();
    match clean.trim() {
        "" => "Payment".into(),
        t => t.to_string(),
    }
}

/// What the shopper is told while the prompt is on their phone.
fn prompt_message(payment: &Payment) -> String {
    let ending = phone(payment)
        .ok()
        .map(|p| format!(" ending {}", &p[p.len() - 4..]))
        .unwrap_or_default();
    let amount = payment
        .amount
        .as_ref()
        .map(|m| format!(" to pay KES {}", m.minor / 100))
        .unwrap_or_default();
    format!("Check your phone{ending} and enter your M-Pesa PIN{amount}.")
}

/// The outcome of a `ResultCode` (a string in query answers, a number in callbacks).
fn result(code: Option<&Value>) -> Outcome {
    let Some(code) = result_code(code) else {
        return decode::ambiguous("", "M-Pesa's answer has no ResultCode");
    };
    if code == "0" {
        return Outcome::of(OutcomeStatus::Approved);
    }
    let (normalized, kind, message) = RESULTS
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|(_, n, k, m)| (*n, *k, *m))
        // An unknown result is not retried: it may be final.
        .unwrap_or((
            "generic_decline",
            DeclineKind::Hard,
            "The M-Pesa payment was declined.",
        ));
    Outcome::of(OutcomeStatus::Declined(Decline {
        code: normalized.into(),
        provider_code: code,
        kind,
        message: message.into(),
    }))
}

/// The paid amount in a callback's metadata (`{"Name":"Amount","Value":1500}`), in cents.
fn paid_amount(callback: &Value) -> Option<Money> {
    let items = callback["CallbackMetadata"]["Item"].as_array()?;
    let value = items.iter().find(|i| i["Name"] == "Amount")?.get("Value")?;
    let minor = decode::decimal_amount(&Value::String(value.to_string()), "KES").ok()?;
    Some(Money {
        minor,
        currency: "KES".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::OtherMethod;

    fn plugin() -> Mpesa {
        Mpesa::init(
            r#"{"shortcode":"174379","callback_url":"https://pay.example/webhooks/mpesa-ke"}"#,
        )
        .unwrap()
    }

    fn context() -> Context {
        Context {
            provider: "mpesa-ke".into(),
            credentials: vec![
                ("access_token".into(), "tok".into()),
                ("passkey".into(), "pk".into()),
                ("callback_token".into(), "cbt-0123456789abcdef".into()),
            ],
            now_ms: 1_700_000_000_000,
            idempotency_key: "idem-1".into(),
        }
    }

    fn mpesa(phone: &str, minor: i64) -> Payment {
        let mut p = Payment::new(Operation::Authorize);
        p.amount = Some(Money {
            minor,
            currency: "KES".into(),
        });
        p.method = Some(PaymentMethod::Other(OtherMethod {
            name: "mpesa".into(),
            fields: vec![("phone".into(), phone.into())],
        }));
        p.merchant_reference = Some("order-42".into());
        p
    }

    #[test]
    fn a_push_carries_daraja_fields_and_its_acceptance_asks_for_the_pin() {
        let request = plugin()
            .encode_request(&mpesa("+254 712 345 678", 150_000), &context())
            .unwrap();
        assert_eq!(request.path, "/mpesa/stkpush/v1/processrequest");
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        // 1700000000 is 2023-11-14 22:13:20 UTC, 2023-11-15 01:13:20 in Nairobi.
        assert_eq!(body["Timestamp"], "20231115011320");
        let password = base64::engine::general_purpose::STANDARD.encode("174379pk20231115011320");
        assert_eq!(body["Password"], password);
        assert_eq!(body["Amount"], 1500);
        assert_eq!(body["PhoneNumber"], "254712345678");
        assert_eq!(body["PartyB"], "174379");
        assert_eq!(body["AccountReference"], "order42");
        assert_eq!(
            body["CallBackURL"],
            "https://pay.example/webhooks/mpesa-ke?token=cbt-0123456789abcdef"
        );
        assert!(request
            .headers
            .contains(&("authorization".into(), "Bearer tok".into())));

        let accepted = HttpResponse {
            status: 200,
            headers: vec![("date".into(), "Tue, 14 Nov 2023 22:13:21 GMT".into())],
            body: br#"{"MerchantRequestID":"29115-1","CheckoutRequestID":"ws_CO_1","ResponseCode":"0","ResponseDescription":"Success. Request accepted for processing","CustomerMessage":"Success. Request accepted for processing"}"#.to_vec(),
        };
        let outcome = plugin().decode_response(&mpesa("0712345678", 150_000), &accepted);
        assert_eq!(outcome.provider_reference.as_deref(), Some("ws_CO_1"));
        assert_eq!(
            outcome.status,
            OutcomeStatus::RequiresAction(NextAction::ConfirmOnDevice(DeviceConfirmation {
                message: "Check your phone ending 5678 and enter your M-Pesa PIN to pay KES 1500."
                    .into(),
                expires_at: Some(1_700_000_001 + 60),
            }))
        );
    }

    #[test]
    fn a_push_answer_is_not_processed_only_when_it_says_so_without_a_request_id() {
        let p = plugin();
        let push = mpesa("+254712345678", 1_000);
        let answer = |body: &str| HttpResponse {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        let class = |o: Outcome| match o.status {
            OutcomeStatus::Error(f) => Some(f.class),
            OutcomeStatus::RequiresAction(_) => None,
            other => panic!("{other:?}"),
        };
        // A numeric 0 is accepted as well as "0".
        let numeric = p.decode_response(
            &push,
            &answer(r#"{"CheckoutRequestID":"ws_CO_2","ResponseCode":0}"#),
        );
        assert_eq!(class(numeric), None);
        // Refused with no request id: the prompt never went out.
        let refused = p.decode_response(
            &push,
            &answer(r#"{"ResponseCode":"1","ResponseDescription":"no"}"#),
        );
        assert_eq!(class(refused), Some(ErrorClass::AnsweredNotProcessed));
        // A request id with an odd code, or no code at all: a prompt may be on the phone.
        for body in [
            r#"{"CheckoutRequestID":"ws_CO_3","ResponseCode":"1"}"#,
            r#"{"CheckoutRequestID":"ws_CO_4"}"#,
            r#"{"MerchantRequestID":"1"}"#,
        ] {
            assert_eq!(
                class(p.decode_response(&push, &answer(body))),
                Some(ErrorClass::Ambiguous),
                "{body}"
            );
        }
    }

    #[test]
    fn manual_capture_a_weak_callback_token_and_a_plain_http_callback_are_refused() {
        let p = plugin();
        let mut manual = mpesa("+254712345678", 1_000);
        manual.manual_capture = true;
        assert_eq!(
            p.encode_request(&manual, &context()).unwrap_err().code,
            "manual_capture_unsupported"
        );
        let weak = Context {
            credentials: vec![
                ("access_token".into(), "tok".into()),
                ("passkey".into(), "pk".into()),
                ("callback_token".into(), "a&b=c".into()),
            ],
            ..context()
        };
        assert_eq!(
            p.encode_request(&mpesa("+254712345678", 1_000), &weak)
                .unwrap_err()
                .code,
            "provider_misconfigured"
        );
        assert!(
            Mpesa::init(r#"{"shortcode":"1","callback_url":"http://pay.example/webhooks/m"}"#)
                .is_err()
        );
        assert!(
            Mpesa::init(r#"{"shortcode":"1","callback_url":"http://localhost.evil/x"}"#).is_err()
        );
        assert!(Mpesa::init(
            r#"{"shortcode":"1","callback_url":"http://127.0.0.1:8080/webhooks/m"}"#
        )
        .is_ok());
    }

    #[test]
    fn what_daraja_cannot_take_is_refused_before_anything_is_sent() {
        let p = plugin();
        let c = context();
        assert_eq!(
            p.encode_request(&mpesa("+254712345678", 150_050), &c)
                .unwrap_err()
                .code,
            "amount_invalid"
        );
        assert_eq!(
            p.encode_request(&mpesa("+254712345678", 25_000_100), &c)
                .unwrap_err()
                .code,
            "amount_too_large"
        );
        assert_eq!(
            p.encode_request(&mpesa("+255712345678", 1_000), &c)
                .unwrap_err()
                .code,
            "parameter_invalid_value"
        );
        let mut usd = mpesa("+254712345678", 1_000);
        usd.amount.as_mut().unwrap().currency = "USD".into();
        assert_eq!(
            p.encode_request(&usd, &c).unwrap_err().code,
            "currency_unsupported"
        );
        let mut refund = mpesa("+254712345678", 1_000);
        refund.operation = Operation::Refund;
        assert_eq!(
            p.encode_request(&refund, &c).unwrap_err().code,
            "operation_unsupported"
        );
        let no_token = Context {
            credentials: vec![],
            ..context()
        };
        assert_eq!(
            p.encode_request(&mpesa("+254712345678", 1_000), &no_token)
                .unwrap_err()
                .code,
            "provider_misconfigured"
        );
    }

    #[test]
    fn errors_and_results_by_daraja_codes() {
        let p = plugin();
        let answer = |status: u16, body: &str| HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        // The subscriber is busy with another push: nothing was charged.
        let busy = p.decode_response(
            &mpesa("+254712345678", 1_000),
            &answer(500, r#"{"requestId":"1","errorCode":"500.001.1001","errorMessage":"Unable to lock subscriber"}"#),
        );
        assert!(
            matches!(busy.status, OutcomeStatus::Error(ref f) if f.class == ErrorClass::AnsweredNotProcessed)
        );
        // A 500 with no code Daraja documents proves nothing.
        let unknown = p.decode_response(&mpesa("+254712345678", 1_000), &answer(500, "oops"));
        assert!(
            matches!(unknown.status, OutcomeStatus::Error(ref f) if f.class == ErrorClass::Ambiguous)
        );

        let mut status = mpesa("+254712345678", 1_000);
        status.operation = Operation::Status;
        status.provider_reference = Some("ws_CO_1".into());
        let query = p.encode_request(&status, &context()).unwrap();
        assert_eq!(query.path, "/mpesa/stkpushquery/v1/query");
        let pending = p.decode_response(&status, &answer(500, r#"{"errorCode":"500.001.1001","errorMessage":"The transaction is being processed"}"#));
        // Still on the phone: the payment keeps waiting for the shopper, with its message.
        assert!(matches!(
            pending.status,
            OutcomeStatus::RequiresAction(NextAction::ConfirmOnDevice(_))
        ));
        let still = p.decode_response(
            &status,
            &answer(
                200,
                r#"{"ResponseCode":"0","ResultCode":"4999","ResultDesc":"still under processing"}"#,
            ),
        );
        assert!(matches!(
            still.status,
            OutcomeStatus::RequiresAction(NextAction::ConfirmOnDevice(_))
        ));
        // A result this dialect does not know is not final on a query.
        let unknown = p.decode_response(
            &status,
            &answer(
                200,
                r#"{"ResponseCode":"0","ResultCode":"1234","ResultDesc":"?"}"#,
            ),
        );
        assert!(
            matches!(unknown.status, OutcomeStatus::Error(ref f) if f.class == ErrorClass::Ambiguous)
        );
        let paid = p.decode_response(
            &status,
            &answer(
                200,
                r#"{"ResponseCode":"0","ResultCode":"0","ResultDesc":"ok"}"#,
            ),
        );
        assert_eq!(paid.status, OutcomeStatus::Approved);
        let cancelled = p.decode_response(&status, &answer(200, r#"{"ResponseCode":"0","ResultCode":"1032","ResultDesc":"Request cancelled by user"}"#));
        assert!(
            matches!(cancelled.status, OutcomeStatus::Declined(ref d) if d.code == "shopper_declined" && d.kind == DeclineKind::Hard && !d.message.contains("card"))
        );
    }

    #[test]
    fn callbacks_need_the_url_token_and_report_the_result() {
        let body = br#"{"Body":{"stkCallback":{"MerchantRequestID":"29115-1","CheckoutRequestID":"ws_CO_1","ResultCode":0,"ResultDesc":"ok","CallbackMetadata":{"Item":[{"Name":"Amount","Value":1500.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"}]}}}}"#;
        let request = |query: &str| HttpRequest {
            method: "POST".into(),
            path: "/webhooks/mpesa-ke".into(),
            query: Some(query.into()),
            headers: vec![],
            body: Some(body.to_vec()),
        };
        let p = plugin();
        let refused = p
            .decode_webhook(&request("token=wrong"), &context())
            .unwrap_err();
        assert_eq!(refused.status, 401);
        let hook = p
            .decode_webhook(&request("token=cbt-0123456789abcdef"), &context())
            .unwrap();
        assert_eq!(hook.notifications.len(), 1);
        let n = &hook.notifications[0];
        assert_eq!(
            (n.event_id.as_str(), n.operation),
            ("ws_CO_1:0", Operation::Status)
        );
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.amount.as_ref().map(|m| m.minor), Some(150_000));
        assert_eq!(hook.response.status, 200);
    }
}
