//! Values of contracts 0.2.0 and 0.3.0 (whose `types` are 0.2.0's) to and from the host's
//! canonical 0.4.0 types, at an older plugin's boundary.
//!
//! The records and variants have the same names and fields in both versions, so the payment,
//! outcome and refusal go through serde's data model; the HTTP views (which carry bodies) are
//! copied field by field. What 0.2.0 cannot express is downgraded first, the same way for
//! every role:
//! - an `other` payment method (a method 0.2.0 has no record for) is seen as no method (the
//!   compliance role does not get that far: `compliance.rs` denies such a payment for a
//!   0.2.0 plugin, which could not check it);
//! - a `confirm-on-device` next action is `pending` (the storefront shows `processing`, as it
//!   did before 0.4.0).
//!
//! First-party plugins speak 0.4.0, so none of this is on their path.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::bindings::v2::types::payproxy::plugin::types as v2;
use super::types as v4;

/// The same value in the other version's type (same names, same fields).
fn same<A: Serialize, B: DeserializeOwned>(value: &A) -> wasmtime::Result<B> {
    let json = serde_json::to_value(value)?;
    serde_json::from_value(json)
        .map_err(|e| wasmtime::format_err!("contract 0.2.0 value does not convert: {e}"))
}

/// A payment as a 0.2.0 plugin sees it: an `other` method is no method.
pub fn payment_to_v2(payment: &v4::Payment) -> wasmtime::Result<v2::Payment> {
    if matches!(payment.method, Some(v4::PaymentMethod::Other(_))) {
        let without = v4::Payment {
            method: None,
            ..payment.clone()
        };
        return same(&without);
    }
    same(payment)
}

/// A payment a 0.2.0 plugin produced.
pub fn payment_from_v2(payment: &v2::Payment) -> wasmtime::Result<v4::Payment> {
    same(payment)
}

/// An outcome as a 0.2.0 plugin sees it: confirm-on-device is pending.
pub fn outcome_to_v2(outcome: &v4::Outcome) -> wasmtime::Result<v2::Outcome> {
    if let v4::OutcomeStatus::RequiresAction(v4::NextAction::ConfirmOnDevice(_)) = outcome.status {
        let pending = v4::Outcome {
            status: v4::OutcomeStatus::Pending,
            ..outcome.clone()
        };
        return same(&pending);
    }
    same(outcome)
}

/// An outcome a 0.2.0 plugin produced.
pub fn outcome_from_v2(outcome: &v2::Outcome) -> wasmtime::Result<v4::Outcome> {
    same(outcome)
}

/// A refusal, either way.
pub fn refusal_to_v2(refusal: &v4::Refusal) -> wasmtime::Result<v2::Refusal> {
    same(refusal)
}

/// A refusal a 0.2.0 plugin produced.
pub fn refusal_from_v2(refusal: &v2::Refusal) -> wasmtime::Result<v4::Refusal> {
    same(refusal)
}

/// Compliance annotations for a 0.2.0 storefront dialect.
pub fn annotations_to_v2(annotations: &[v4::Annotation]) -> wasmtime::Result<Vec<v2::Annotation>> {
    same(&annotations)
}

/// Annotations a 0.2.0 compliance plugin produced.
pub fn annotations_from_v2(
    annotations: &[v2::Annotation],
) -> wasmtime::Result<Vec<v4::Annotation>> {
    same(&annotations)
}

/// A challenge kind either way (the same three cases).
pub fn challenge_from_v2(kind: v2::ChallengeKind) -> v4::ChallengeKind {
    match kind {
        v2::ChallengeKind::StrongAuthentication => v4::ChallengeKind::StrongAuthentication,
        v2::ChallengeKind::PhoneVerification => v4::ChallengeKind::PhoneVerification,
        v2::ChallengeKind::IdentityDocuments => v4::ChallengeKind::IdentityDocuments,
    }
}

/// A provider's health as 0.2.0 and 0.3.0 routers see it.
pub fn health_to_v2(health: &v4::Health) -> v2::Health {
    v2::Health {
        success_rate: health.success_rate,
        latency_p50_ms: health.latency_p50_ms,
        latency_p99_ms: health.latency_p99_ms,
        breaker: match health.breaker {
            v4::BreakerState::Closed => v2::BreakerState::Closed,
            v4::BreakerState::Open => v2::BreakerState::Open,
            v4::BreakerState::HalfOpen => v2::BreakerState::HalfOpen,
        },
    }
}

/// An HTTP request for a 0.2.0 plugin.
pub fn request_to_v2(request: &v4::HttpRequest) -> v2::HttpRequest {
    v2::HttpRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    }
}

/// An HTTP request a 0.2.0 plugin built.
pub fn request_from_v2(request: v2::HttpRequest) -> v4::HttpRequest {
    v4::HttpRequest {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers,
        body: request.body,
    }
}

/// An HTTP response for a 0.2.0 plugin.
pub fn response_to_v2(response: &v4::HttpResponse) -> v2::HttpResponse {
    v2::HttpResponse {
        status: response.status,
        headers: response.headers.clone(),
        body: response.body.clone(),
    }
}

/// An HTTP response a 0.2.0 plugin rendered.
pub fn response_from_v2(response: v2::HttpResponse) -> v4::HttpResponse {
    v4::HttpResponse {
        status: response.status,
        headers: response.headers,
        body: response.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpesa() -> v4::Payment {
        let mut payment = crate::plugin::blank_payment(v4::Operation::Authorize);
        payment.amount = Some(v4::Money {
            minor: 1500,
            currency: "KES".into(),
        });
        payment.country = Some("KE".into());
        payment.method = Some(v4::PaymentMethod::Other(v4::OtherMethod {
            name: "mpesa".into(),
            fields: vec![("phone".into(), "+254712345678".into())],
        }));
        payment
    }

    #[test]
    fn a_payment_crosses_to_0_2_0_and_back_unchanged_except_a_method_it_cannot_express() {
        let mut card = mpesa();
        card.method = Some(v4::PaymentMethod::Card(v4::Card {
            token: "tok_visa".into(),
            bin: Some("424242".into()),
            last4: Some("4242".into()),
            network: Some("visa".into()),
            issuer_country: Some("DE".into()),
        }));
        card.metadata = vec![("order".into(), "42".into())];
        let back = payment_from_v2(&payment_to_v2(&card).unwrap()).unwrap();
        assert_eq!(back, card);

        let seen = payment_to_v2(&mpesa()).unwrap();
        assert_eq!(seen.method, None);
        assert_eq!(seen.amount.as_ref().map(|m| m.minor), Some(1500));
        assert_eq!(seen.country.as_deref(), Some("KE"));
    }

    #[test]
    fn confirm_on_device_is_pending_for_a_0_2_0_dialect_and_other_outcomes_are_unchanged() {
        let waiting = v4::Outcome {
            status: v4::OutcomeStatus::RequiresAction(v4::NextAction::ConfirmOnDevice(
                v4::DeviceConfirmation {
                    message: "Enter your PIN".into(),
                    expires_at: Some(1_800_000_000),
                },
            )),
            provider_reference: Some("ws_CO_1".into()),
            amount: None,
        };
        let seen = outcome_to_v2(&waiting).unwrap();
        assert_eq!(seen.status, v2::OutcomeStatus::Pending);
        assert_eq!(seen.provider_reference.as_deref(), Some("ws_CO_1"));

        let declined = v4::Outcome {
            status: v4::OutcomeStatus::Declined(v4::Decline {
                code: "shopper_declined".into(),
                provider_code: "1032".into(),
                kind: v4::DeclineKind::Hard,
                message: "The payment was declined on your phone.".into(),
            }),
            provider_reference: None,
            amount: None,
        };
        assert_eq!(
            outcome_from_v2(&outcome_to_v2(&declined).unwrap()).unwrap(),
            declined
        );
    }
}
