//! Pix answer → canonical outcome (statuses in [`crate::codes`]). Never panics: anything
//! unreadable is an error outcome, `ambiguous` whenever the charge may exist.

use payproxy_plugin_sdk::helpers::decode::{self, ambiguous, text};
use payproxy_plugin_sdk::payment::{
    Decline, DeclineKind, ErrorClass, HttpResponse, Money, NextAction, Operation, Outcome,
    OutcomeStatus, Payment,
};
use serde_json::Value;

use crate::codes::{self, Meaning};

/// Decode the answer to the request built for `payment`. A non-2xx answer is classified by
/// its HTTP status (the SDK's standard table); the provider code is the last segment of the
/// problem document's `type` (`…/error/CobOperacaoInvalida` → `CobOperacaoInvalida`).
pub fn response(payment: &Payment, response: &HttpResponse) -> Outcome {
    let problem_type = |b: &Value| {
        text(b, "type")
            .and_then(|t| t.rsplit('/').next())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    decode::json_answer(response, &[], problem_type, |body| {
        let txid = text(body, "txid").map(str::to_string);
        // A follow-up already knows its txid; a new charge without one cannot be followed.
        let reference = match payment.operation {
            Operation::Authorize => txid,
            _ => txid.or_else(|| payment.provider_reference.clone()),
        };
        let Some(reference) = reference else {
            return ambiguous("", "the provider's answer has no txid");
        };
        Outcome {
            provider_reference: Some(reference),
            ..charge(payment, body)
        }
    })
}

/// `valor.original` as BRL minor units; exact or refused (the error is the ambiguous
/// outcome's message).
fn answered_amount(body: &Value) -> Result<Option<Money>, String> {
    let Some(original) = body.pointer("/valor/original") else {
        return Ok(None);
    };
    let minor = decode::decimal_amount(original, "BRL")?;
    Ok(Some(Money {
        minor,
        currency: "BRL".into(),
    }))
}

fn declined(status: &str, kind: DeclineKind, message: &str) -> Outcome {
    Outcome::of(OutcomeStatus::Declined(Decline {
        code: codes::REMOVED.0.into(),
        provider_code: status.into(),
        kind,
        message: message.into(),
    }))
}

/// A charge answer: `{"txid", "status", "pixCopiaECola"?, "valor": {"original"}}`.
fn charge(payment: &Payment, body: &Value) -> Outcome {
    let status = text(body, "status").unwrap_or_default();
    let amount = match answered_amount(body) {
        Ok(amount) => amount.or_else(|| payment.amount.clone()),
        Err(message) => return ambiguous("", &message),
    };
    let void = payment.operation == Operation::Void;
    match (codes::meaning(status), void) {
        (Some(Meaning::Active), false) => match text(body, "pixCopiaECola") {
            Some(code) => Outcome {
                status: OutcomeStatus::RequiresAction(NextAction::Qr(code.into())),
                provider_reference: None,
                amount,
            },
            None if payment.operation == Operation::Status => Outcome::of(OutcomeStatus::Pending),
            None => ambiguous(
                status,
                "the provider created a charge without a copy-paste code",
            ),
        },
        (Some(Meaning::Active), true) => Outcome::error(
            ErrorClass::AnsweredNotProcessed,
            "provider_error",
            status,
            "the provider kept the charge active",
        ),
        (Some(Meaning::Paid), false) => Outcome {
            status: OutcomeStatus::Approved,
            provider_reference: None,
            amount,
        },
        (Some(Meaning::Paid), true) => {
            declined(status, DeclineKind::Hard, "the charge is already paid")
        }
        (Some(Meaning::Removed), false) => declined(
            status,
            codes::REMOVED.1,
            "the charge was removed before payment",
        ),
        (Some(Meaning::Removed), true) => Outcome::of(OutcomeStatus::Approved),
        (None, _) if status.is_empty() => ambiguous("", "the provider's answer has no status"),
        (None, _) => ambiguous(status, "the provider answered an unknown status"),
    }
}
