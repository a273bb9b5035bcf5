//! Matching a payment method against the method names a plugin's config lists.
//!
//! Config names a method by its kind (`card`, `ewallet`, `bank_redirect`,
//! `instant_transfer`, `cash_voucher`, `other`), by a finer lower-case name (a card network,
//! wallet or scheme, or the name of a method the contract has no record for: `visa`, `dana`,
//! `ideal`, `pix`, `mpesa`), or `*` for any method. Compliance rules and
//! limits use the same vocabulary, so they share this matcher.
//!
//! ```
//! use payproxy_plugin_sdk::payment::{Ewallet, PaymentMethod};
//! use payproxy_plugin_sdk::payment_method;
//!
//! let dana = PaymentMethod::Ewallet(Ewallet { wallet: "DANA".into(), phone: None });
//! let listed = vec!["dana".to_string()];
//! assert!(payment_method::matches(&listed, Some(&dana)));
//! assert_eq!(payment_method::names(&dana), ("ewallet", Some("dana".into())));
//! ```

use crate::payment::PaymentMethod;

/// The method kinds of the canonical model, as config names them.
pub const KINDS: &[&str] = &[
    "card",
    "ewallet",
    "bank_redirect",
    "instant_transfer",
    "cash_voucher",
    "other",
];

/// Names providers and storefront APIs give to cards (and to wallets that carry a card, such
/// as Apple Pay): a card comes as `card`, scoped to its issuer and checked as one, so a
/// dialect never takes one of these as an `other` method.
pub const CARD_TYPE_NAMES: &[&str] = &[
    "card",
    "scheme",
    "bcmc",
    "card_present",
    "interac_present",
    "network_token",
    "networktoken",
    "giftcard",
    "apple_pay",
    "applepay",
    "google_pay",
    "googlepay",
    "paywithgoogle",
];

/// True when a field name only card data has: a security code, an expiry, a card number, an
/// encrypted or stored card (compared without case, `_` and `-`: `exp_month`, `expiryMonth`,
/// `encryptedCardNumber`, `storedPaymentMethodId`). An `other` method's fields never carry
/// these.
pub fn is_card_field(name: &str) -> bool {
    // A field name is short and ASCII almost always: normalised on the stack. (Every form
    // field of every payment goes through here.) Anything else takes the general path, which
    // lower-cases as Unicode does.
    let mut normal = [0u8; 48];
    let mut len = 0;
    for b in name.bytes() {
        if matches!(b, b'_' | b'-') {
            continue;
        }
        if !b.is_ascii() || len == normal.len() {
            return card_name(unicode_normal(name).as_bytes());
        }
        normal[len] = b.to_ascii_lowercase();
        len += 1;
    }
    card_name(&normal[..len])
}

/// `name` without `_` and `-`, lower-cased.
fn unicode_normal(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a normalised field name ([`is_card_field`]) is a card field's.
fn card_name(n: &[u8]) -> bool {
    matches!(
        n,
        b"cvc"
            | b"cvv"
            | b"cvc2"
            | b"cvv2"
            | b"csc"
            | b"cid"
            | b"securitycode"
            | b"exp"
            | b"expiry"
            | b"expmonth"
            | b"expyear"
            | b"expirymonth"
            | b"expiryyear"
            | b"expirydate"
            | b"cardnumber"
            | b"pan"
    ) || n.windows(9).any(|w| w == b"encrypted")
        || n.starts_with(b"storedpaymentmethod")
}

/// True when `name` is a usable method name: `*`, a kind, or a lower-case wallet / scheme /
/// card network name (`dana`, `ideal`, `pix`, `visa`: letters, digits, `_`, `-`).
pub fn is_valid_name(name: &str) -> bool {
    name == "*"
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
}

/// A method name from config, trimmed and lower-cased, if [valid](is_valid_name); else why
/// not (the message for a config error about that field).
pub fn normalise_name(name: &str) -> Result<String, String> {
    let name = name.trim().to_ascii_lowercase();
    if !is_valid_name(&name) {
        return Err(format!(
            "must be \"*\", one of {} or a wallet/scheme/network name such as \"dana\"",
            KINDS.join(", ")
        ));
    }
    Ok(name)
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
        PaymentMethod::Other(o) => ("other", lower(&o.name)),
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
    use crate::payment::{BankRedirect, Card, CashVoucher, Ewallet, InstantTransfer};

    #[test]
    fn card_fields_by_any_spelling_and_nothing_else() {
        for name in [
            "cvc",
            "CVV",
            "exp_month",
            "expiryMonth",
            "encryptedCardNumber",
            "storedPaymentMethodId",
            "card-number",
        ] {
            assert!(is_card_field(name), "{name}");
        }
        for name in [
            "phone",
            "telephoneNumber",
            "account[number]",
            "blikCode",
            "email",
        ] {
            assert!(!is_card_field(name), "{name}");
        }
    }

    /// The stack path decides as the Unicode one does, for every spelling: short and long,
    /// separators anywhere, upper case, non-ASCII (the Kelvin sign lower-cases to `k`).
    #[test]
    fn the_ascii_path_agrees_with_the_unicode_one() {
        let long = format!("{}encrypted", "x".repeat(60));
        let (a47, a48, a49) = ("a".repeat(47), "a".repeat(48), "a".repeat(49));
        let names = [
            "",
            "_",
            "-_-",
            "cvc",
            "C_V-C",
            "cvc2",
            "Cvv_2",
            "pan",
            "PAN_",
            "exp",
            "eXp_MoNtH",
            "expiry-date",
            "card_number",
            "cardNumber1",
            "encryptedSecurityCode",
            "xx_encrypted_yy",
            "encrypte",
            "storedPaymentMethod",
            "stored_payment_methodX",
            "storedpaymentmetho",
            "phone",
            "account[number]",
            "\u{212A}ey",
            "c\u{0301}vc",
            "ÉNCRYPTED",
            "encrypted€",
            &long,
            &long[1..],
            &a47,
            &a48,
            &a49,
        ];
        for name in names {
            assert_eq!(
                is_card_field(name),
                card_name(unicode_normal(name).as_bytes()),
                "{name:?}"
            );
        }
        assert!(is_card_field(&long), "a long name is still read whole");
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

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
        assert!(matches(&list(&["ewallet"]), Some(&dana)));
        assert!(matches(&list(&["dana"]), Some(&dana)));
        assert!(!matches(&list(&["grabpay", "card"]), Some(&dana)));
        assert!(matches(&list(&["bank_redirect"]), Some(&ideal)));
        assert!(matches(&list(&["*"]), None));
        assert!(!matches(&list(&["ewallet"]), None));
        assert!(!matches(&[], Some(&dana)));
    }

    #[test]
    fn names_are_trimmed_lower_case() {
        let card = |network: Option<&str>| {
            PaymentMethod::Card(Card {
                token: "tok".into(),
                bin: None,
                last4: None,
                network: network.map(str::to_string),
                issuer_country: None,
            })
        };
        assert_eq!(names(&card(Some(" Visa "))), ("card", Some("visa".into())));
        assert_eq!(names(&card(None)), ("card", None));
        let pix = PaymentMethod::InstantTransfer(InstantTransfer {
            scheme: "PIX".into(),
            tax_id: None,
        });
        assert_eq!(names(&pix), ("instant_transfer", Some("pix".into())));
        let voucher = PaymentMethod::CashVoucher(CashVoucher {
            scheme: "Boleto".into(),
        });
        assert_eq!(names(&voucher), ("cash_voucher", Some("boleto".into())));
        assert!(matches(&list(&["visa"]), Some(&card(Some("VISA")))));
        assert!(!matches(&list(&["visa"]), Some(&card(None))));
    }

    #[test]
    fn valid_names() {
        assert!(is_valid_name("bank_redirect") && is_valid_name("*") && is_valid_name("go-pay"));
        assert!(!is_valid_name("") && !is_valid_name("Dana") && !is_valid_name("e wallet"));
        assert!(!is_valid_name("**"));
        assert!(KINDS.iter().all(|k| is_valid_name(k)));
    }

    #[test]
    fn config_names_are_normalised() {
        assert_eq!(normalise_name(" DANA "), Ok("dana".into()));
        assert_eq!(normalise_name("*"), Ok("*".into()));
        assert_eq!(
            normalise_name("e wallet"),
            Err(
                "must be \"*\", one of card, ewallet, bank_redirect, instant_transfer, \
                 cash_voucher, other or a wallet/scheme/network name such as \"dana\""
                    .into()
            )
        );
        assert!(normalise_name("  ").is_err());
    }
}
