//! Matching a payment method against the names a rule lists.

use payproxy_plugin_sdk::payment::PaymentMethod;

/// The method kinds of the canonical model, as config names them.
pub const KINDS: &[&str] = &[
    "card",
    "ewallet",
    "bank_redirect",
    "instant_transfer",
    "cash_voucher",
];

/// True when `name` is a usable method name: `*`, a kind, or a lower-case wallet / scheme /
/// card network name (`dana`, `ideal`, `pix`, `visa`: letters, digits, `_`, `-`).
pub fn is_valid_name(name: &str) -> bool {
    name == "*"
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
}

/// The kind of a method and its finer name (network, wallet or scheme), lower case.
pub fn names(method: &PaymentMethod) -> (&'static str, Option<String>) {
    let lower = |s: &str| Some(s.trim().to_ascii_lowercase());
    match method {
        PaymentMethod::Card(c) => ("card", c.network.as_deref().and_then(lower)),
        PaymentMethod::Ewallet(w) => ("ewallet", lower(&w.wallet)),
        PaymentMethod::BankRedirect(b) => ("bank_redirect", lower(&b.scheme)),
        PaymentMethod::InstantTransfer(t) => ("instant_transfer", lower(&t.scheme)),
        PaymentMethod::CashVoucher(v) => ("cash_voucher", lower(&v.scheme)),
    }
}

/// True when one of `listed` names the payment's method. No method matches only `*`.
pub fn matches(listed: &[String], method: Option<&PaymentMethod>) -> bool {
    let (kind, finer) = match method {
        Some(m) => names(m),
        None => return listed.iter().any(|l| l == "*"),
    };
    listed
        .iter()
        .any(|l| l == "*" || l == kind || finer.as_deref() == Some(l.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::{BankRedirect, Ewallet};

    #[test]
    fn kinds_and_finer_names_match() {
        let dana = PaymentMethod::Ewallet(Ewallet {
            wallet: "DANA".into(),
            phone: None,
        });
        let ideal = PaymentMethod::BankRedirect(BankRedirect {
            scheme: "ideal".into(),
            iban: None,
            bic: None,
        });
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&list(&["ewallet"]), Some(&dana)));
        assert!(matches(&list(&["dana"]), Some(&dana)));
        assert!(!matches(&list(&["grabpay", "card"]), Some(&dana)));
        assert!(matches(&list(&["bank_redirect"]), Some(&ideal)));
        assert!(matches(&list(&["*"]), None));
        assert!(!matches(&list(&["ewallet"]), None));
        assert!(is_valid_name("bank_redirect") && is_valid_name("*") && is_valid_name("go-pay"));
        assert!(!is_valid_name("") && !is_valid_name("Dana") && !is_valid_name("e wallet"));
        assert!(KINDS.iter().all(|k| is_valid_name(k)));
    }
}
