//! Adyen answer → canonical outcome. Never panics: anything unreadable is an error outcome,
//! `ambiguous` whenever the payment may exist.
//!
//! `resultCode` of `/payments`:
//!
//! | resultCode                               | outcome                                   |
//! |------------------------------------------|-------------------------------------------|
//! | `Authorised`                             | approved                                  |
//! | `Refused`                                | declined, `refusalReasonCode` via `codes` |
//! | `RedirectShopper` / `IdentifyShopper` / `ChallengeShopper` | requires-action redirect to `action.url` |
//! | `Pending` / `Received`                   | pending                                   |
//! | `Cancelled`                              | declined `generic_decline`, hard          |
//! | `Error`                                  | error `provider_error`, answered-not-processed (Adyen did not authorise) |
//! | missing / other                          | error `provider_error`, ambiguous         |
//!
//! Modifications (`captures`, `refunds`, `cancels`) answer `{"status": "received"}`: Adyen has
//! accepted them and executes them on an authorised payment, so they are approved (a refused
//! modification would come back as a 422). The outcome's reference is the payment's
//! `pspReference` for captures and cancels and the refund's own for refunds.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::decode::{self, ambiguous, text};
use payproxy_plugin_sdk::payment::{
    Decline, ErrorClass, HttpResponse, Money, NextAction, Operation, Outcome, OutcomeStatus,
    Payment,
};
use serde_json::Value;

use crate::codes;

/// Decode the answer to the request built for `payment`. A non-2xx answer is classified by
/// its HTTP status ([`codes::HTTP_ERRORS`]); Adyen's `errorCode` is kept as the provider code.
pub fn response(payment: &Payment, response: &HttpResponse) -> Outcome {
    let errorcode = |b: &Value| b.get("errorCode").and_then(code_text);
    decode::json_answer(
        response,
        codes::HTTP_ERRORS,
        errorcode,
        |body| match payment.operation {
            Operation::Authorize => payment_result(payment, body),
            _ => modification(payment, body),
        },
    )
}

/// A code Adyen sends as a string or as a number.
fn code_text(value: &Value) -> Option<String> {
    value
        .as_str()
        .map(str::to_string)
        .or_else(|| value.as_i64().map(|n| n.to_string()))
}

/// `amount` of an answer, if present and valid; else what was asked for. The error is the
/// ambiguous outcome's message.
fn answered_amount(payment: &Payment, body: &Value) -> Result<Option<Money>, &'static str> {
    let Some(amount) = body.get("amount") else {
        return Ok(payment.amount.clone());
    };
    let minor = amount.get("value").and_then(Value::as_i64);
    let code = amount
        .get("currency")
        .and_then(Value::as_str)
        .and_then(currency::normalise);
    match (minor, code) {
        (Some(minor), Some(currency)) if minor >= 0 => Ok(Some(Money { minor, currency })),
        _ => Err("the provider's answer has an unreadable amount"),
    }
}

fn payment_result(payment: &Payment, body: &Value) -> Outcome {
    let psp = text(body, "pspReference").map(str::to_string);
    let result_code = text(body, "resultCode").unwrap_or_default();
    let status = match result_code {
        "Authorised" => match answered_amount(payment, body) {
            Ok(amount) => {
                return Outcome {
                    status: OutcomeStatus::Approved,
                    provider_reference: psp,
                    amount,
                }
            }
            Err(message) => return with_reference(ambiguous("", message), psp),
        },
        "Refused" => {
            let reason = body
                .get("refusalReasonCode")
                .and_then(code_text)
                .unwrap_or_default();
            let row = codes::refusal(&reason);
            OutcomeStatus::Declined(Decline {
                code: row.code.into(),
                provider_code: reason,
                kind: row.kind,
                message: row.message.into(),
            })
        }
        "RedirectShopper" | "IdentifyShopper" | "ChallengeShopper" => {
            match body
                .pointer("/action/url")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
            {
                Some(url) => OutcomeStatus::RequiresAction(NextAction::Redirect(url.into())),
                None => {
                    let outcome = ambiguous(
                        result_code,
                        "the provider asked for a redirect without a URL",
                    );
                    return with_reference(outcome, psp);
                }
            }
        }
        "Pending" | "Received" => OutcomeStatus::Pending,
        "Cancelled" => OutcomeStatus::Declined(Decline {
            code: "generic_decline".into(),
            provider_code: "Cancelled".into(),
            kind: payproxy_plugin_sdk::payment::DeclineKind::Hard,
            message: "the payment was cancelled".into(),
        }),
        "Error" => {
            let outcome = Outcome::error(
                ErrorClass::AnsweredNotProcessed,
                "provider_error",
                "Error",
                "the provider could not process the payment",
            );
            return with_reference(outcome, psp);
        }
        "" => {
            return with_reference(
                ambiguous("", "the provider's answer has no resultCode"),
                psp,
            )
        }
        other => {
            return with_reference(
                ambiguous(other, "the provider answered an unknown resultCode"),
                psp,
            )
        }
    };
    Outcome {
        status,
        provider_reference: psp,
        amount: None,
    }
}

fn with_reference(mut outcome: Outcome, psp: Option<String>) -> Outcome {
    outcome.provider_reference = psp;
    outcome
}

fn modification(payment: &Payment, body: &Value) -> Outcome {
    let own = text(body, "pspReference").map(str::to_string);
    let reference = match payment.operation {
        Operation::Refund => own,
        _ => text(body, "paymentPspReference")
            .map(str::to_string)
            .or_else(|| payment.provider_reference.clone()),
    };
    if text(body, "status") != Some("received") {
        let status = text(body, "status").unwrap_or_default();
        return with_reference(
            ambiguous(
                status,
                "the provider's modification answer has no status received",
            ),
            reference,
        );
    }
    let amount = match payment.operation {
        Operation::Void => None,
        _ => match answered_amount(payment, body) {
            Ok(amount) => amount,
            Err(message) => return with_reference(ambiguous("", message), reference),
        },
    };
    Outcome {
        status: OutcomeStatus::Approved,
        provider_reference: reference,
        amount,
    }
}
