//! Egress: a Stripe API answer → the canonical outcome.
//!
//! A 2xx body that is not a PaymentIntent or Refund we can read is **ambiguous**: the
//! provider may have charged. Error answers go through the tables in [`crate::codes`].

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Decline, DeclineKind, DeviceConfirmation, ErrorClass, HttpResponse, Money, NextAction,
    Operation, Outcome, OutcomeStatus, Payment,
};
use serde::Deserialize;
use serde_json::Value;

use crate::codes;
use crate::config::Config;

/// The fields of a PaymentIntent or Refund the decode reads; every other field is skipped
/// as it is parsed, never built. Each is a `Value` (`Null` when absent) so that a field of
/// an unexpected type reads as a `Value` index would, not as an unreadable answer.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer {
    object: Value,
    id: Value,
    status: Value,
    amount: Value,
    amount_received: Value,
    amount_capturable: Value,
    currency: Value,
    next_action: Value,
    last_payment_error: Value,
    failure_reason: Value,
}

impl Answer {
    /// A 2xx body: UTF-8 text holding a JSON object (an array would fill a struct by
    /// position), each field at most once. serde_json skips the fields not read without
    /// checking their UTF-8 (a `Value` checked it), so the whole body is checked first:
    /// bytes that are not text stay an unreadable, ambiguous answer.
    fn parse(body: &[u8]) -> Option<Answer> {
        let text = std::str::from_utf8(body).ok()?;
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// Decode the answer to the request [`crate::encode::request`] built for `payment`.
pub fn response(config: &Config, payment: &Payment, response: &HttpResponse) -> Outcome {
    if (200..300).contains(&response.status) {
        let answer = Answer::parse(&response.body);
        let decoded = answer.as_ref().and_then(|v| match v.object.as_str() {
            Some("payment_intent") if payment.operation != Operation::Refund => intent(payment, v),
            Some("refund") if payment.operation == Operation::Refund => refund(v),
            _ => None,
        });
        return decoded.unwrap_or_else(|| {
            Outcome::error(
                ErrorClass::Ambiguous,
                "provider_error",
                "undecodable_response",
                format!(
                    "stripe answered {} with a body that is not the expected object",
                    response.status
                ),
            )
        });
    }
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    error(config, response.status, body.as_ref())
}

fn money(amount: &Value, currency: &Value) -> Option<Money> {
    let minor = amount.as_i64()?;
    let currency = currency::normalise(currency.as_str()?)?;
    Some(Money { minor, currency })
}

/// A PaymentIntent, read against the operation it answers.
fn intent(payment: &Payment, v: &Answer) -> Option<Outcome> {
    let id = v.id.as_str()?.to_string();
    let status = v.status.as_str()?;
    let op = payment.operation;
    let declined = |provider_code: &str| {
        OutcomeStatus::Declined(hard_decline(
            provider_code,
            format!("payment intent is {status}"),
        ))
    };
    let outcome_status = match (op, status) {
        (Operation::Void, "canceled") => OutcomeStatus::Approved,
        (Operation::Void, other) => declined(other),
        (Operation::Capture, "succeeded") => OutcomeStatus::Approved,
        (Operation::Capture, "requires_capture" | "processing") => OutcomeStatus::Pending,
        (_, "succeeded" | "requires_capture") => OutcomeStatus::Approved,
        (_, "processing" | "requires_confirmation") => OutcomeStatus::Pending,
        (_, "requires_action") => OutcomeStatus::RequiresAction(next_action(&v.next_action)),
        (_, "canceled") => declined("canceled"),
        (_, "requires_payment_method") => {
            match Some(&v.last_payment_error).filter(|e| e.is_object()) {
                Some(e) => OutcomeStatus::Declined(decline(e)),
                None => declined("requires_payment_method"),
            }
        }
        _ => return None,
    };
    let amount = match status {
        "succeeded" if v.amount_received.as_i64().is_some_and(|a| a > 0) => &v.amount_received,
        "requires_capture" if v.amount_capturable.as_i64().is_some_and(|a| a > 0) => {
            &v.amount_capturable
        }
        _ => &v.amount,
    };
    Some(Outcome {
        status: outcome_status,
        provider_reference: Some(id),
        amount: money(amount, &v.currency),
    })
}

/// A final decline, `provider_code` the intent's state: `canceled` is what the host records
/// as a cancel (a status query's or a notification's).
pub(crate) fn hard_decline(provider_code: &str, message: String) -> Decline {
    Decline {
        code: "generic_decline".into(),
        provider_code: provider_code.into(),
        kind: DeclineKind::Hard,
        message,
    }
}

/// What the shopper must do: `redirect_to_url`, `oxxo_display_details` (voucher URL) and any
/// `*_display_qr_code` as they say; `use_stripe_sdk` (a card's 3-D Secure, which Stripe.js
/// runs: Stripe answers it to a confirm without a `return_url`) a redirect to its `stripe_js`
/// page when it names one; any other type Stripe has or adds (per method: Boleto, Konbini,
/// bank transfers …) a redirect to the `hosted_voucher_url`, `hosted_instructions_url` or
/// `url` it names. Otherwise the shopper confirms in what the storefront shows them
/// ([`NextAction::ConfirmOnDevice`]). Whatever the action, an intent that `requires_action`
/// has charged nothing and waits for the shopper: never an unreadable (ambiguous) answer,
/// which would lose the payment's record.
fn next_action(v: &Value) -> NextAction {
    let kind = v["type"].as_str().unwrap_or_default();
    let web = |s: Option<&str>| {
        s.filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| NextAction::Redirect(u.to_string()))
    };
    let hosted = |o: &Value| {
        ["hosted_voucher_url", "hosted_instructions_url", "url"]
            .iter()
            .find_map(|field| web(o[*field].as_str()))
    };
    let action = match kind {
        "redirect_to_url" => web(v["redirect_to_url"]["url"].as_str()),
        "use_stripe_sdk" => web(v["use_stripe_sdk"]["stripe_js"].as_str()),
        "" => None,
        // `<method>_display_qr_code`, and the `…_handle_redirect_or_display_qr_code` types,
        // whose QR is nested and whose page is a hosted one.
        k => v[k]["data"]
            .as_str()
            .filter(|_| k.ends_with("_display_qr_code"))
            .map(|data| NextAction::Qr(data.to_string()))
            .or_else(|| hosted(&v[k])),
    };
    action.unwrap_or_else(|| {
        NextAction::ConfirmOnDevice(DeviceConfirmation {
            message: "Complete the payment as your bank or payment provider asks.".into(),
            expires_at: None,
        })
    })
}

fn refund(v: &Answer) -> Option<Outcome> {
    let id = v.id.as_str()?.to_string();
    let status = match v.status.as_str()? {
        "succeeded" => OutcomeStatus::Approved,
        "pending" | "requires_action" => OutcomeStatus::Pending,
        s @ ("failed" | "canceled") => {
            let reason = v.failure_reason.as_str().unwrap_or(s);
            let code = match reason {
                "insufficient_funds" => "insufficient_funds",
                "expired_or_canceled_card" => "expired_card",
                "lost_or_stolen_card" => "fraud_suspected",
                _ => "generic_decline",
            };
            OutcomeStatus::Declined(Decline {
                code: code.into(),
                provider_code: reason.into(),
                kind: DeclineKind::Hard,
                message: format!("refund {s}"),
            })
        }
        _ => return None,
    };
    Some(Outcome {
        status,
        provider_reference: Some(id),
        amount: money(&v.amount, &v.currency),
    })
}

/// A card error object → decline through [`codes::decline`].
fn decline(e: &Value) -> Decline {
    let provider_code = e["decline_code"]
        .as_str()
        .or(e["code"].as_str())
        .unwrap_or("card_declined")
        .to_string();
    let (code, kind) = codes::decline(&provider_code);
    Decline {
        code: code.into(),
        provider_code,
        kind,
        message: scrub(e["message"].as_str().unwrap_or("card declined")),
    }
}

/// A non-2xx answer.
fn error(config: &Config, status: u16, body: Option<&Value>) -> Outcome {
    let e = body.map(|b| &b["error"]).filter(|e| e.is_object());
    let error_type = e.and_then(|e| e["type"].as_str());
    if error_type == Some("card_error") {
        let e = e.unwrap_or(&Value::Null);
        let mut outcome = Outcome::of(OutcomeStatus::Declined(decline(e)));
        outcome.provider_reference = e["payment_intent"]["id"].as_str().map(str::to_string);
        return outcome;
    }
    let (code, class) = codes::error(status, error_type, config.server_errors);
    let provider_code = e
        .and_then(|e| e["code"].as_str().or(e["type"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("http_{status}"));
    let detail = e
        .and_then(|e| e["message"].as_str())
        .map(scrub)
        .unwrap_or_else(|| "no Stripe error object".into());
    Outcome::error(
        class,
        code,
        &provider_code,
        format!("stripe answered {status}: {detail}"),
    )
}

/// A provider message fit for logs: at most 200 characters, digit runs of 8 or more (card
/// numbers, phones) masked.
fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 8 {
            out.push_str("[redacted]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in message.chars().take(200) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_masks_long_digit_runs() {
        assert_eq!(
            scrub("card 4242424242424242 declined"),
            "card [redacted] declined"
        );
        assert_eq!(scrub("amount 1050"), "amount 1050");
        assert_eq!(scrub(&"x".repeat(300)).len(), 200);
    }

    fn decode(body: &str) -> Outcome {
        decode_bytes(body.as_bytes().to_vec())
    }

    fn decode_bytes(body: Vec<u8>) -> Outcome {
        let config = Config::parse("{}").expect("config");
        let payment = Payment::new(Operation::Authorize);
        let answer = HttpResponse {
            status: 200,
            headers: Vec::new(),
            body,
        };
        response(&config, &payment, &answer)
    }

    fn ambiguous(outcome: &Outcome) -> bool {
        matches!(&outcome.status, OutcomeStatus::Error(f) if f.class == ErrorClass::Ambiguous)
    }

    /// Every `requires_action` waits for the shopper, whatever its `next_action`: before, a
    /// type the decode did not know (`use_stripe_sdk`, the 3-D Secure answer of a confirm
    /// without a `return_url`) made the answer ambiguous, and payproxy lost the payment.
    #[test]
    fn every_action_the_shopper_must_take_waits_for_them() {
        let waiting = |next_action: &str| {
            let outcome = decode(&format!(
                r#"{{"id":"pi_1","object":"payment_intent","status":"requires_action","amount":1000,
                   "currency":"eur","next_action":{next_action}}}"#
            ));
            assert_eq!(
                outcome.provider_reference.as_deref(),
                Some("pi_1"),
                "{next_action}"
            );
            match outcome.status {
                OutcomeStatus::RequiresAction(action) => action,
                other => panic!("{next_action}: {other:?}"),
            }
        };
        let redirect = |u: &str| NextAction::Redirect(u.into());
        assert_eq!(
            waiting(
                r#"{"type":"redirect_to_url","redirect_to_url":{"url":"https://hooks.stripe.com/3d_secure_2/x"}}"#
            ),
            redirect("https://hooks.stripe.com/3d_secure_2/x")
        );
        assert_eq!(
            waiting(
                r#"{"type":"use_stripe_sdk","use_stripe_sdk":{"type":"three_d_secure_redirect","stripe_js":"https://hooks.stripe.com/redirect/authenticate/src_1"}}"#
            ),
            redirect("https://hooks.stripe.com/redirect/authenticate/src_1")
        );
        assert_eq!(
            waiting(
                r#"{"type":"boleto_display_details","boleto_display_details":{"hosted_voucher_url":"https://payments.stripe.com/boleto/v1"}}"#
            ),
            redirect("https://payments.stripe.com/boleto/v1")
        );
        assert_eq!(
            waiting(r#"{"type":"pix_display_qr_code","pix_display_qr_code":{"data":"000201"}}"#),
            NextAction::Qr("000201".into())
        );
        assert_eq!(
            waiting(
                r#"{"type":"oxxo_display_details","oxxo_display_details":{"hosted_voucher_url":"https://payments.stripe.com/oxxo/v1"}}"#
            ),
            redirect("https://payments.stripe.com/oxxo/v1")
        );
        assert_eq!(
            waiting(
                r#"{"type":"cashapp_handle_redirect_or_display_qr_code","cashapp_handle_redirect_or_display_qr_code":{"hosted_instructions_url":"https://pay.stripe.com/cashapp/1","qr_code":{"image_url_png":"https://x"}}}"#
            ),
            redirect("https://pay.stripe.com/cashapp/1")
        );
        // Stripe.js runs it (3DS2 fingerprint, or localstripe's empty `stripe_js`), or it
        // names nothing usable: the shopper confirms in what the storefront shows.
        for opaque in [
            r#"{"type":"use_stripe_sdk","use_stripe_sdk":{"type":"stripe_3ds2_fingerprint","three_d_secure_2_source":"src_1"}}"#,
            r#"{"type":"use_stripe_sdk","use_stripe_sdk":{"type":"three_d_secure_redirect","stripe_js":""}}"#,
            r#"{"type":"use_stripe_sdk","use_stripe_sdk":{"stripe_js":"javascript:alert(1)"}}"#,
            r#"{"type":"redirect_to_url","redirect_to_url":{"url":"javascript:alert(1)"}}"#,
            r#"{"type":"verify_with_microdeposits","verify_with_microdeposits":{}}"#,
            r#"{"type":"redirect_to_url","redirect_to_url":{}}"#,
            r#"null"#,
        ] {
            assert!(
                matches!(waiting(opaque), NextAction::ConfirmOnDevice(_)),
                "{opaque}"
            );
        }
    }

    #[test]
    fn only_an_object_read_field_by_field_is_an_answer() {
        let ok = decode(
            r#"{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":1050,
               "amount_received":1050,"currency":"eur","charges":{"data":[{"id":"ch_1"}]},
               "metadata":{"a":"b"},"next_action":null}"#,
        );
        assert_eq!(ok.status, OutcomeStatus::Approved);
        assert_eq!(ok.provider_reference.as_deref(), Some("pi_1"));
        assert_eq!(ok.amount.as_ref().map(|m| m.minor), Some(1050));
        // A field of an unexpected type is as good as absent, as it was with a `Value`.
        let odd = decode(
            r#"{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":"1050","currency":"eur"}"#,
        );
        assert_eq!((odd.status, odd.amount), (OutcomeStatus::Approved, None));
        // The same fields in an array, a field given twice, a truncated object: ambiguous.
        for body in [
            r#"["payment_intent","pi_1","succeeded"]"#,
            r#"{"id":"pi_1","object":"payment_intent","status":"requires_payment_method","status":"succeeded"}"#,
            r#"{"id":"pi_1","object":"payment_intent","status":"succeeded""#,
        ] {
            assert!(ambiguous(&decode(body)), "{body}");
        }
        // Bytes that are not UTF-8 in a field the decode skips: not JSON, so ambiguous
        // (not a decline), as when the whole body was parsed into a `Value`.
        let mut bytes =
            br#"{"id":"pi_1","object":"payment_intent","status":"canceled","metadata":{"a":"x"}}"#
                .to_vec();
        let at = bytes.iter().position(|b| *b == b'x').unwrap();
        bytes[at] = 0xff;
        assert!(ambiguous(&decode_bytes(bytes)));
    }
}
