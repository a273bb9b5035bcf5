//! The PSD2 SCA rule: which payments must be strongly authenticated first.

use payproxy_plugin_sdk::payment::{
    Annotation, ChallengeKind, Decision, Operation, Payment, PaymentMethod, Verdict,
};
use payproxy_plugin_sdk::storefront::CardDetails;

use crate::config::Config;
use crate::convert::Euros;

/// Challenged: strong authentication required.
pub const RULE_SCA: &str = "psd2-sca";
/// Allowed: at or below the low-value threshold.
pub const RULE_LOW_VALUE: &str = "psd2-low-value";
/// Allowed: not an EEA card authorisation.
pub const RULE_OUT_OF_SCOPE: &str = "psd2-out-of-scope";
/// Allowed: the shopper is already strongly authenticated.
pub const RULE_AUTHENTICATED: &str = "psd2-authenticated";
/// Allowed: the merchant asked for an exemption (flagged for the acquirer).
pub const RULE_EXEMPTION: &str = "psd2-exemption";
/// Challenged (fail safe): the amount cannot be converted to EUR (no amount, unknown
/// currency or no rate), so low value cannot be shown.
pub const RULE_NO_RATE: &str = "psd2-no-rate";

/// Denied: strong authentication is required but the card cannot do it (no 3-D Secure).
pub const RULE_NO_3DS: &str = "psd2-no-3ds";

/// Decide one payment knowing what the home provider says about its card: a payment that
/// must be strongly authenticated with a card that does not support 3-D Secure cannot be
/// challenged, so it is refused with a shopper-safe reason instead of a challenge nobody can
/// pass.
pub fn decide_card(config: &Config, payment: &Payment, card: Option<&CardDetails>) -> Decision {
    let decision = decide(config, payment);
    let no_3ds = card.and_then(|c| c.three_d_secure_supported) == Some(false);
    match decision.verdict {
        Verdict::Challenge(ChallengeKind::StrongAuthentication) if no_3ds => Decision {
            verdict: Verdict::deny(
                "authentication_unavailable",
                "This card cannot be strongly authenticated. Please use another card.",
            ),
            rule: RULE_NO_3DS.into(),
            annotations: Vec::new(),
        },
        _ => decision,
    }
}

/// Decide one payment. Order: scope, authenticated, exemption, amount.
pub fn decide(config: &Config, payment: &Payment) -> Decision {
    if !in_scope(config, payment) {
        return Decision::allow(RULE_OUT_OF_SCOPE, Vec::new());
    }
    if payment.strong_auth.authenticated {
        return Decision::allow(RULE_AUTHENTICATED, Vec::new());
    }
    if let Some(exemption) = payment
        .strong_auth
        .exemption_requested
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        let flag = Annotation {
            kind: "flag".into(),
            name: "sca_exemption".into(),
            rate_bp: 0,
            amount: None,
            note: exemption.to_string(),
        };
        return Decision::allow(RULE_EXEMPTION, vec![flag]);
    }
    match euros(config, payment) {
        None => challenge(RULE_NO_RATE),
        Some(value) if value.exceeds(&config.threshold) => challenge(RULE_SCA),
        Some(_) => Decision::allow(RULE_LOW_VALUE, Vec::new()),
    }
}

/// An authorisation by card, with both the merchant and the issuer in the EEA.
///
/// The issuer country is the card's `issuer_country`; when the dialect could not tell it,
/// the shopper's `country` stands in; when neither is known the payment is treated as in
/// scope (fail safe: a challenge is recoverable, a missing SCA is a regulatory breach).
fn in_scope(config: &Config, payment: &Payment) -> bool {
    if payment.operation != Operation::Authorize || !config.in_eea(&config.merchant_country) {
        return false;
    }
    let Some(PaymentMethod::Card(card)) = &payment.method else {
        return false;
    };
    let issuer =
        known(card.issuer_country.as_deref()).or_else(|| known(payment.country.as_deref()));
    issuer.is_none_or(|c| config.in_eea(c))
}

/// A country code that says something (not absent, not blank).
fn known(code: Option<&str>) -> Option<&str> {
    code.map(str::trim).filter(|c| !c.is_empty())
}

/// The payment's amount in euros, exactly; `None` when it cannot be known.
fn euros(config: &Config, payment: &Payment) -> Option<Euros> {
    let amount = payment.amount.as_ref()?;
    let rate = config.rate(&amount.currency)?;
    Euros::of(amount.minor, &amount.currency, rate)
}

fn challenge(rule: &str) -> Decision {
    Decision::challenge(rule, ChallengeKind::StrongAuthentication)
}
