//! GrabPay answer → canonical outcome. Never panics: a 2xx body that cannot be read is an
//! ambiguous `provider_error` (the charge may exist), HTTP errors map through
//! [`crate::mapping`].

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Decline, ErrorClass, HttpResponse, Money, Outcome, OutcomeStatus, Payment,
};
use serde::Deserialize;

use crate::mapping;

/// Provider text copied into outcome messages is cut to this many characters.
const MAX_MESSAGE: usize = 200;

/// The answer to init, capture, refund, cancel and status.
#[derive(Debug, Deserialize)]
pub struct ChargeResponse {
    /// Echo of our `partnerTxID`.
    #[serde(rename = "partnerTxID", default)]
    pub partner_tx_id: Option<String>,
    /// GrabPay's id: of the charge, or of the refund for refunds.
    #[serde(rename = "txID", default)]
    pub tx_id: Option<String>,
    /// `success`, `failed`, `pending`, `authorised` (or `cancelled` on a status query).
    pub status: String,
    /// Human text for failures.
    #[serde(default)]
    pub reason: Option<String>,
    /// Decline code for failures.
    #[serde(default)]
    pub code: Option<String>,
    /// Minor units, when GrabPay says.
    #[serde(default)]
    pub amount: Option<i64>,
    /// With `amount`.
    #[serde(default)]
    pub currency: Option<String>,
}

/// Decode the answer to the request `encode` built for `payment`.
pub fn decode(_payment: &Payment, response: &HttpResponse) -> Outcome {
    if !(200..300).contains(&response.status) {
        return http_error(response);
    }
    let Ok(body) = serde_json::from_slice::<ChargeResponse>(&response.body) else {
        return Outcome::error(
            ErrorClass::Ambiguous,
            "provider_error",
            &format!("http_{}", response.status),
            "GrabPay answered with a body that is not a charge response",
        );
    };
    let status = match body.status.as_str() {
        "success" | "authorised" => OutcomeStatus::Approved,
        "pending" => OutcomeStatus::Pending,
        "failed" => {
            let provider_code = body.code.clone().unwrap_or_else(|| "failed".into());
            let mapping = mapping::decline_for(&provider_code);
            OutcomeStatus::Declined(Decline {
                code: mapping.code.into(),
                provider_code,
                kind: mapping.kind,
                message: cut(body.reason.as_deref().unwrap_or("declined by GrabPay")),
            })
        }
        // A status query of a cancelled charge: nothing was taken, and nothing will be.
        "cancelled" => OutcomeStatus::Declined(Decline {
            code: "generic_decline".into(),
            provider_code: "cancelled".into(),
            kind: payproxy_plugin_sdk::payment::DeclineKind::Hard,
            message: "the GrabPay charge was cancelled".into(),
        }),
        other => {
            return Outcome::error(
                ErrorClass::Ambiguous,
                "provider_error",
                &cut(other),
                "GrabPay answered with an unknown charge status",
            )
        }
    };
    let amount = match (
        body.amount,
        body.currency.as_deref().and_then(currency::normalise),
    ) {
        (Some(minor), Some(currency)) => Some(Money { minor, currency }),
        _ => None,
    };
    Outcome {
        status,
        provider_reference: body.tx_id,
        amount,
    }
}

/// A non-2xx answer, through the HTTP table; the body's `code` is the provider code.
fn http_error(response: &HttpResponse) -> Outcome {
    let mapping = mapping::http_for(response.status);
    let body: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let field = |name: &str| {
        body.as_ref()
            .and_then(|b| b.get(name))
            .and_then(serde_json::Value::as_str)
            .map(cut)
    };
    let provider_code = field("code").unwrap_or_else(|| format!("http_{}", response.status));
    let message = match field("reason") {
        Some(reason) => format!("GrabPay answered HTTP {}: {reason}", response.status),
        None => format!("GrabPay answered HTTP {}", response.status),
    };
    Outcome::error(mapping.class, mapping.code, &provider_code, message)
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_MESSAGE).collect()
}
