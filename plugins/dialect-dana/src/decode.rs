//! DANA answer → canonical outcome. Never panics: an HTTP 2xx answer without a readable
//! `resultInfo` (malformed XML, another shape) is an ambiguous `provider_error`, since the
//! order may exist.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Decline, DeclineKind, ErrorClass, HttpResponse, Money, NextAction, Operation, Outcome,
    OutcomeStatus, Payment,
};

use crate::mapping::{self, Meaning};
use crate::xml::{self, non_empty, ResponseBody, ResultInfo};

/// Provider text copied into outcome messages is cut to this many characters.
const MAX_MESSAGE: usize = 200;

/// Decode the answer to the request `encode` built for `payment`.
pub fn decode(payment: &Payment, response: &HttpResponse) -> Outcome {
    let body = xml::read_response(&response.body).and_then(|r| r.body);
    let Some((body, info)) = body.and_then(|b| b.result_info.clone().map(|i| (b, i))) else {
        return unreadable(response.status);
    };
    let reference = non_empty(&body.acquirement_id).map(str::to_string);
    if info.result_status == "S" {
        return success(payment, &body, reference);
    }
    let status = match mapping::for_result(&info.result_status, &info.result_code) {
        None => OutcomeStatus::Pending,
        Some(meaning) => failed(meaning, &info),
    };
    Outcome {
        status,
        provider_reference: reference,
        amount: None,
    }
}

/// `resultStatus` `S`, read according to the function that was called.
fn success(payment: &Payment, body: &ResponseBody, reference: Option<String>) -> Outcome {
    let checkout = non_empty(&body.checkout_url)
        .map(|u| OutcomeStatus::RequiresAction(NextAction::Redirect(u.into())));
    let (status, reference, amount) = match payment.operation {
        // DANA wallets pay on DANA's checkout page: with a checkoutUrl the shopper is sent
        // there; without one the order was paid directly (e.g. a bound wallet).
        Operation::Authorize => (checkout.unwrap_or(OutcomeStatus::Approved), reference, None),
        Operation::Status => {
            let status = match non_empty(&body.acquirement_status) {
                Some("SUCCESS") => OutcomeStatus::Approved,
                Some("INIT") | Some("PAYING") => checkout.unwrap_or(OutcomeStatus::Pending),
                Some(closed @ ("CLOSED" | "CANCELLED")) => OutcomeStatus::Declined(Decline {
                    code: "generic_decline".into(),
                    provider_code: closed.into(),
                    kind: DeclineKind::Hard,
                    message: "the DANA order was closed without payment".into(),
                }),
                other => {
                    let code = other
                        .map(cut)
                        .unwrap_or_else(|| "missing_acquirement_status".into());
                    return Outcome::error(
                        ErrorClass::Ambiguous,
                        "provider_error",
                        &code,
                        "DANA answered a query without a known order status",
                    );
                }
            };
            (
                status,
                reference,
                body.order_amount.as_ref().and_then(money),
            )
        }
        Operation::Refund => {
            let refund = non_empty(&body.refund_id).map(str::to_string);
            (OutcomeStatus::Approved, refund.or(reference), None)
        }
        Operation::Void | Operation::Capture => (OutcomeStatus::Approved, reference, None),
    };
    Outcome {
        status,
        provider_reference: reference,
        amount,
    }
}

fn failed(meaning: Meaning, info: &ResultInfo) -> OutcomeStatus {
    let message = cut(info
        .result_msg
        .as_deref()
        .unwrap_or("DANA refused the request"));
    let provider_code = cut(&info.result_code);
    match meaning {
        Meaning::Decline(code, kind) => OutcomeStatus::Declined(Decline {
            code: code.into(),
            provider_code,
            kind,
            message,
        }),
        Meaning::Error(class, code) => {
            OutcomeStatus::Error(payproxy_plugin_sdk::payment::Failure {
                class,
                code: code.into(),
                provider_code,
                message,
            })
        }
    }
}

/// No readable `resultInfo`: a 2xx is ambiguous, other statuses go through the HTTP table.
fn unreadable(status: u16) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::error(
            ErrorClass::Ambiguous,
            "provider_error",
            "malformed_response",
            "DANA answered without a readable resultInfo",
        );
    }
    let message = format!("DANA answered HTTP {status}");
    match mapping::http_for(status) {
        Meaning::Error(class, code) => {
            Outcome::error(class, code, &format!("http_{status}"), message)
        }
        // The HTTP table holds only errors; a decline there would be a table bug.
        Meaning::Decline(..) => Outcome::error(
            ErrorClass::Ambiguous,
            "provider_error",
            &format!("http_{status}"),
            message,
        ),
    }
}

fn money(amount: &xml::Amount) -> Option<Money> {
    let code = currency::normalise(amount.currency.trim())?;
    let minor = currency::from_decimal(&amount.value, &code).ok()?;
    Some(Money {
        minor,
        currency: code,
    })
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_MESSAGE).collect()
}
