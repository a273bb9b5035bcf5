//! Applying the rules to one payment.

use payproxy_plugin_sdk::payment::{
    ChallengeKind, Decision, Operation, Payment, PaymentMethod, Verdict,
};

use payproxy_plugin_sdk::payment_method;

use crate::config::{Config, Requirement, Rule};

/// Allowed: rules applied and every requirement is met.
pub const RULE_SATISFIED: &str = "kyc-satisfied";
/// Allowed: no rule applies (other country or method, or not an authorisation).
pub const RULE_NOT_REQUIRED: &str = "kyc-not-required";

/// Check every rule that applies; a failed requirement that denies wins over one that
/// challenges (a shopper should not verify a phone only to be refused afterwards), and
/// among equals the first rule in config order decides.
pub fn decide(config: &Config, payment: &Payment) -> Decision {
    if payment.operation != Operation::Authorize {
        return allow(RULE_NOT_REQUIRED);
    }
    let mut applied = false;
    let mut first_challenge: Option<(&Rule, Verdict)> = None;
    for rule in config.rules.iter().filter(|r| applies(r, payment)) {
        applied = true;
        match unmet(rule.require, payment) {
            None => {}
            Some(deny @ Verdict::Deny(_)) => return Decision::new(&rule.name, deny),
            Some(verdict) => {
                first_challenge.get_or_insert((rule, verdict));
            }
        }
    }
    match first_challenge {
        Some((rule, verdict)) => Decision::new(&rule.name, verdict),
        None if applied => allow(RULE_SATISFIED),
        None => allow(RULE_NOT_REQUIRED),
    }
}

/// A rule applies when its country and one of its methods match. A payment whose country
/// is unknown matches only `*` rules: the dialect is expected to give the country.
fn applies(rule: &Rule, payment: &Payment) -> bool {
    let country_ok = rule.country == "*"
        || payment
            .country
            .as_deref()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case(&rule.country));
    country_ok && payment_method::matches(&rule.methods, payment.method.as_ref())
}

/// The verdict when `require` is not met, `None` when it is.
fn unmet(require: Requirement, payment: &Payment) -> Option<Verdict> {
    let present = |s: Option<&str>| s.is_some_and(|s| !s.trim().is_empty());
    let customer = &payment.customer;
    match require {
        Requirement::VerifiedPhone => {
            let wallet_phone = match &payment.method {
                Some(PaymentMethod::Ewallet(w)) => w.phone.as_deref(),
                _ => None,
            };
            let has_phone = present(customer.phone.as_deref()) || present(wallet_phone);
            (!(has_phone && customer.phone_verified))
                .then_some(Verdict::Challenge(ChallengeKind::PhoneVerification))
        }
        Requirement::Email => {
            (!customer.email.as_deref().is_some_and(looks_like_email)).then(|| {
                Verdict::deny(
                    "email_required",
                    "An email address is required for this payment method.",
                )
            })
        }
        Requirement::CustomerId => (!present(customer.id.as_deref())).then(|| {
            Verdict::deny(
                "customer_id_required",
                "A customer account is required for this payment method.",
            )
        }),
        Requirement::IdentityDocuments => {
            let verified = payment
                .metadata
                .iter()
                .any(|(k, v)| k == "kyc_level" && v.trim().eq_ignore_ascii_case("verified"));
            (!verified).then_some(Verdict::Challenge(ChallengeKind::IdentityDocuments))
        }
    }
}

/// `local@domain` with both parts non-empty, one `@` and no whitespace: enough to tell an
/// address from a placeholder; the provider or the merchant verifies deliverability.
fn looks_like_email(text: &str) -> bool {
    let text = text.trim();
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn allow(rule: &str) -> Decision {
    Decision::allow(rule, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shape() {
        for ok in ["a@b", "shopper@example.co.id", " x@y.z "] {
            assert!(looks_like_email(ok), "{ok}");
        }
        for bad in ["", "@b", "a@", "ab", "a@b@c", "a b@c"] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }
}
