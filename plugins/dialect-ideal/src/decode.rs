//! iDEAL answer → canonical outcome (statuses in [`crate::codes`]). Never panics: anything
//! unreadable is an error outcome, `ambiguous` whenever the payment may exist.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::decode::{self, ambiguous, text};
use payproxy_plugin_sdk::payment::{
    Decline, HttpResponse, Money, NextAction, Operation, Outcome, OutcomeStatus, Payment,
};
use serde_json::Value;

use crate::codes::{self, Meaning};

/// Decode the answer to the request built for `payment`. A non-2xx answer is classified by
/// its HTTP status (the SDK's standard table); the provider's `error.code` is kept.
pub fn response(payment: &Payment, response: &HttpResponse) -> Outcome {
    let error_code = |b: &Value| {
        b.pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    decode::json_answer(response, &[], error_code, |body| match payment.operation {
        Operation::Refund => refund(payment, body),
        _ => transaction(payment, body),
    })
}

/// `amount` + `currency` of an answer when present (must be exact for the currency); else
/// what was asked for. The error is the ambiguous outcome's message.
fn answered_amount(payment: &Payment, body: &Value) -> Result<Option<Money>, String> {
    let Some(amount) = body.get("amount").filter(|a| !a.is_null()) else {
        return Ok(payment.amount.clone());
    };
    let code = text(body, "currency").unwrap_or("EUR");
    match (
        decode::decimal_amount(amount, code),
        currency::normalise(code),
    ) {
        (Ok(minor), Some(currency)) => Ok(Some(Money { minor, currency })),
        (Err(message), _) => Err(message),
        (_, None) => Err("the provider's answer has an unknown currency".into()),
    }
}

/// Create and status answers: `{"transactionId", "status", "issuerAuthenticationUrl"?, "amount"?, "currency"?}`.
fn transaction(payment: &Payment, body: &Value) -> Outcome {
    let reference = text(body, "transactionId")
        .map(str::to_string)
        .or_else(|| payment.provider_reference.clone());
    let status = text(body, "status").unwrap_or_default();
    let outcome = match codes::meaning(codes::TRANSACTION_STATUSES, status) {
        Some(Meaning::Open) => match text(body, "issuerAuthenticationUrl") {
            Some(url) => Outcome::of(OutcomeStatus::RequiresAction(NextAction::Redirect(
                url.into(),
            ))),
            None => Outcome::of(OutcomeStatus::Pending),
        },
        Some(Meaning::Approved) => match answered_amount(payment, body) {
            Ok(amount) => Outcome {
                status: OutcomeStatus::Approved,
                provider_reference: None,
                amount,
            },
            Err(message) => ambiguous("", &message),
        },
        Some(Meaning::Pending) => Outcome::of(OutcomeStatus::Pending),
        Some(Meaning::Declined(code, kind)) => declined(code, status, kind),
        None if status.is_empty() => ambiguous("", "the provider's answer has no status"),
        None => ambiguous(status, "the provider answered an unknown status"),
    };
    Outcome {
        provider_reference: reference,
        ..outcome
    }
}

fn declined(code: &str, status: &str, kind: payproxy_plugin_sdk::payment::DeclineKind) -> Outcome {
    Outcome::of(OutcomeStatus::Declined(Decline {
        code: code.into(),
        provider_code: status.into(),
        kind,
        message: format!("the iDEAL payment ended with status {status}"),
    }))
}

/// Refund answers: `{"refundId", "status", "amount"?, "currency"?}`.
fn refund(payment: &Payment, body: &Value) -> Outcome {
    let reference = text(body, "refundId").map(str::to_string);
    let status = text(body, "status").unwrap_or_default();
    let outcome = match codes::meaning(codes::REFUND_STATUSES, status) {
        Some(Meaning::Approved) | Some(Meaning::Pending) => {
            let approved = status == "success";
            match answered_amount(payment, body) {
                Ok(amount) => Outcome {
                    status: if approved {
                        OutcomeStatus::Approved
                    } else {
                        OutcomeStatus::Pending
                    },
                    provider_reference: None,
                    amount,
                },
                Err(message) => ambiguous("", &message),
            }
        }
        Some(Meaning::Declined(code, kind)) => declined(code, status, kind),
        Some(Meaning::Open) | None => {
            ambiguous(status, "the provider's refund answer has an unknown status")
        }
    };
    Outcome {
        provider_reference: reference,
        ..outcome
    }
}
