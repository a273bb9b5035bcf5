//! Payment methods, shopper and options in Stripe's shape, both ways.
//!
//! The convention (ingress parses it, egress sends it; see the crate docs for the table):
//! `payment_method_data[type]` names the method, its details sit under
//! `payment_method_data[<type>][…]`, the shopper under `payment_method_data[billing_details]`.

use std::borrow::Cow;

use payproxy_plugin_sdk::payment::{
    BankRedirect, Card, CashVoucher, Ewallet, InstantTransfer, OtherMethod, Payment, PaymentMethod,
    Refusal,
};

use payproxy_plugin_sdk::payment_method;

use crate::form::{Form, FormBuilder};
use crate::parse::{boolean_at, bracketed};
use crate::{refuse, validate};

/// Method types the dialect knows, and what each becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Card,
    BankRedirect,
    InstantTransfer,
    /// A named wallet type (`grabpay`, `dana`); `ewallet` is the generic one.
    Wallet,
    GenericWallet,
    CashVoucher,
}

/// `payment_method_data[type]` values → kind.
const TYPES: &[(&str, Kind)] = &[
    ("card", Kind::Card),
    ("ideal", Kind::BankRedirect),
    ("pix", Kind::InstantTransfer),
    ("grabpay", Kind::Wallet),
    ("dana", Kind::Wallet),
    ("ewallet", Kind::GenericWallet),
    ("oxxo", Kind::CashVoucher),
];

/// Stripe's iDEAL bank names → BIC, for `payment_method_data[ideal][bank]`.
const IDEAL_BANKS: &[(&str, &str)] = &[
    ("abn_amro", "ABNANL2A"),
    ("asn_bank", "ASNBNL21"),
    ("bunq", "BUNQNL2A"),
    ("handelsbanken", "HANDNL2A"),
    ("ing", "INGBNL2A"),
    ("knab", "KNABNL2H"),
    ("n26", "NTSBDEB1"),
    ("nn", "NNBANL2G"),
    ("rabobank", "RABONL2U"),
    ("regiobank", "RBRBNL21"),
    ("revolut", "REVOLT21"),
    ("sns_bank", "SNSBNL2A"),
    ("triodos_bank", "TRIONL2U"),
    ("van_lanschot", "FVLBNL22"),
    ("yoursafe", "BITSNL2A"),
];

/// Canonical exemption names ↔ Stripe-style parameter values.
const EXEMPTIONS: &[(&str, &str)] = &[
    ("low_value", "low-value"),
    ("tra", "tra"),
    ("recurring", "recurring"),
    ("moto", "moto"),
];

const PMD: &str = "payment_method_data";

/// A parameter under `payment_method_data`.
fn pmd<'a>(form: &'a Form, rest: &[&str]) -> Option<&'a str> {
    let path: Vec<&str> = std::iter::once(PMD).chain(rest.iter().copied()).collect();
    form.get(&path).filter(|v| !v.is_empty())
}

fn name(rest: &[&str]) -> String {
    let path: Vec<&str> = std::iter::once(PMD).chain(rest.iter().copied()).collect();
    bracketed(&path)
}

/// Fill method, country, customer, installments and strong authentication from the form.
pub fn apply(form: &Form, payment: &mut Payment) -> Result<(), Refusal> {
    let phone = match pmd(form, &["billing_details", "phone"]) {
        Some(raw) => Some(validate::phone(raw).ok_or_else(|| {
            refuse::bad_value(
                &name(&["billing_details", "phone"]),
                "an E.164 phone number such as +6281234567890",
            )
        })?),
        None => None,
    };
    payment.customer.phone = phone.clone();
    payment.customer.phone_verified =
        boolean_at(form, &[PMD, "billing_details", "phone_verified"])?.unwrap_or(false);
    let email_param = match form.get(&["receipt_email"]).filter(|e| !e.is_empty()) {
        Some(_) => "receipt_email".to_string(),
        None => name(&["billing_details", "email"]),
    };
    payment.customer.email = form
        .get(&["receipt_email"])
        .filter(|e| !e.is_empty())
        .or_else(|| pmd(form, &["billing_details", "email"]))
        .map(str::to_string);
    let bad_email = |e: &str| !e.contains('@') || e.len() > 512;
    if payment.customer.email.as_deref().is_some_and(bad_email) {
        return Err(refuse::bad_value(&email_param, "an email address"));
    }
    payment.customer.id = match form.get(&["customer"]).filter(|c| !c.is_empty()) {
        Some(id) if validate::object_id(id) => Some(id.to_string()),
        Some(_) => {
            return Err(refuse::bad_value(
                "customer",
                "a customer id such as cus_123",
            ))
        }
        None => None,
    };
    payment.country = shopper_country(form)?;
    payment.installments = installments(form)?;
    payment.strong_auth.authenticated = boolean_at(
        form,
        &[
            "payment_method_options",
            "card",
            "three_d_secure",
            "authenticated",
        ],
    )?
    .unwrap_or(false);
    payment.strong_auth.exemption_requested =
        match form.get(&["payment_method_options", "card", "exemption"]) {
            None | Some("") => None,
            Some(v) => Some(
                EXEMPTIONS
                    .iter()
                    .find(|(stripe, _)| *stripe == v)
                    .map(|(_, canonical)| canonical.to_string())
                    .ok_or_else(|| {
                        refuse::bad_value(
                            "payment_method_options[card][exemption]",
                            "one of low_value, tra, recurring, moto",
                        )
                    })?,
            ),
        };
    payment.method = method(form, phone)?;
    Ok(())
}

/// The shopper's country: billing address first, then shipping address.
fn shopper_country(form: &Form) -> Result<Option<String>, Refusal> {
    let billing = [PMD, "billing_details", "address", "country"];
    let shipping = ["shipping", "address", "country"];
    for path in [&billing[..], &shipping[..]] {
        if let Some(raw) = form.get(path).filter(|v| !v.is_empty()) {
            return validate::country(raw)
                .map(Some)
                .ok_or_else(|| refuse::country(&bracketed(path)));
        }
    }
    Ok(None)
}

fn installments(form: &Form) -> Result<Option<u16>, Refusal> {
    let path = [
        "payment_method_options",
        "card",
        "installments",
        "plan",
        "count",
    ];
    match form.get(&path).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(raw) => match raw.parse::<u16>() {
            Ok(n) if n >= 1 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            Ok(_) => Err(refuse::too_small(&bracketed(&path))),
            Err(_) => Err(refuse::not_integer(&bracketed(&path))),
        },
    }
}

/// The method: `payment_method_data[type]`, else the only `payment_method_types[]` entry,
/// else a card when `payment_method` or card data is given, else none.
fn method(form: &Form, phone: Option<String>) -> Result<Option<PaymentMethod>, Refusal> {
    let declared = pmd(form, &["type"]);
    let types = form.list(&["payment_method_types"]);
    let saved = form.get(&["payment_method"]).is_some_and(|v| !v.is_empty());
    let type_name = match (declared, types.as_slice()) {
        (Some(t), _) => t,
        // A saved payment method of the storefront's account (card, SEPA debit …): the
        // token is what gets charged, whatever its type, so it is a token instrument.
        (None, _) if saved => "card",
        // `payment_method_types[]=card` alone says which kind of method the intent takes,
        // not which card: that comes with the confirm (Stripe answers
        // `requires_payment_method`), so there is no method yet.
        (None, ["card"]) if !form.has(&[PMD, "card"]) => return Ok(None),
        (None, [only]) => only,
        _ if form.has(&[PMD, "card"]) => "card",
        _ => return Ok(None),
    };
    if declared.is_some() && !types.is_empty() && !types.contains(&type_name) {
        return Err(refuse::bad_value(
            &name(&["type"]),
            "one of the payment_method_types",
        ));
    }
    let Some(&(_, kind)) = TYPES.iter().find(|(t, _)| *t == type_name) else {
        let param = if declared.is_some() {
            name(&["type"])
        } else {
            "payment_method_types".to_string()
        };
        return other(form, type_name, &param).map(Some);
    };
    let method = match kind {
        Kind::Card => PaymentMethod::Card(card(form)?),
        Kind::BankRedirect => PaymentMethod::BankRedirect(BankRedirect {
            scheme: type_name.to_string(),
            iban: pmd(form, &[type_name, "iban"]).map(|i| i.replace(' ', "").to_ascii_uppercase()),
            bic: bank(form, type_name)?,
        }),
        Kind::InstantTransfer => PaymentMethod::InstantTransfer(InstantTransfer {
            scheme: type_name.to_string(),
            tax_id: pmd(form, &[type_name, "tax_id"])
                .or_else(|| pmd(form, &["billing_details", "tax_id"]))
                .map(|t| {
                    t.chars()
                        .filter(|c| !matches!(c, '.' | '-' | '/' | ' '))
                        .collect()
                }),
        }),
        Kind::Wallet => PaymentMethod::Ewallet(Ewallet {
            wallet: type_name.to_string(),
            phone,
        }),
        Kind::GenericWallet => {
            let wallet = pmd(form, &["ewallet", "wallet"])
                .ok_or_else(|| refuse::missing(&name(&["ewallet", "wallet"])))?;
            if !wallet
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || wallet.len() > 40
            {
                return Err(refuse::bad_value(
                    &name(&["ewallet", "wallet"]),
                    "a wallet name such as gopay",
                ));
            }
            PaymentMethod::Ewallet(Ewallet {
                wallet: wallet.to_ascii_lowercase(),
                phone,
            })
        }
        Kind::CashVoucher => PaymentMethod::CashVoucher(CashVoucher {
            scheme: type_name.to_string(),
        }),
    };
    Ok(Some(method))
}

/// Most fields a method this dialect does not know may carry, and their sizes (Stripe's own
/// metadata limits).
const OTHER_FIELDS: usize = 50;
const OTHER_NAME: usize = 100;
const OTHER_VALUE: usize = 500;

/// A method type this dialect does not know (`mpesa`, `mbway` …), passed through with its
/// own fields: every `payment_method_data[<type>][…]` parameter, named below the type
/// (`[mpesa][phone]` → `phone`, `[mpesa][account][number]` → `account[number]`). The
/// provider dialect that supports the method reads them; the answer names the same type.
fn other(form: &Form, type_name: &str, param: &str) -> Result<PaymentMethod, Refusal> {
    // Stripe's own objects under `payment_method_data` are never a method's type, and a card
    // (by any provider's name for it) is a card: it comes as `card`, scoped and checked as one.
    let reserved = ["billing_details", "metadata", "type"].contains(&type_name)
        || payment_method::CARD_TYPE_NAMES.contains(&type_name);
    let valid = (1..=40).contains(&type_name.len())
        && !reserved
        && type_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(Refusal::invalid(
            Some(param),
            "payment_method_type_unsupported",
            "Invalid payment method type: lower-case letters, digits and _ (at most 40), such as mpesa.",
        ));
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    for (key, value) in form.pairs() {
        if key.len() < 3 || key[0] != PMD || key[1] != type_name {
            continue;
        }
        let field = format!("{}{}", key[2], bracketed_tail(&key[3..]));
        if field.len() > OTHER_NAME || value.len() > OTHER_VALUE {
            return Err(refuse::bad_value(
                &name(&[type_name, &field]),
                &format!("a value of at most {OTHER_VALUE} characters under a name of at most {OTHER_NAME}"),
            ));
        }
        // The host lets phone-like digits through its card scan because dialects check
        // phones: so do it here.
        let value = if field.to_ascii_lowercase().contains("phone") {
            validate::phone(value).ok_or_else(|| {
                refuse::bad_value(
                    &name(&[type_name, &field]),
                    "an E.164 phone number such as +254712345678",
                )
            })?
        } else {
            value.to_string()
        };
        // A list entry (`[items][]`, `[items][0]`) is its own field; a repeated named
        // parameter keeps its last value, as on Stripe.
        let list_entry = key
            .last()
            .is_some_and(|k| k.bytes().all(|b| b.is_ascii_digit()));
        let existing = fields
            .iter()
            .position(|(f, _)| *f == field)
            .filter(|_| !list_entry);
        match existing {
            Some(at) => fields[at].1 = value,
            None if fields.len() == OTHER_FIELDS => {
                return Err(refuse::bad_value(
                    &name(&[type_name]),
                    &format!("at most {OTHER_FIELDS} fields"),
                ))
            }
            None => fields.push((field, value)),
        }
    }
    Ok(PaymentMethod::Other(OtherMethod {
        name: type_name.to_string(),
        fields,
    }))
}

/// `["a", "b"]` → `[a][b]`.
fn bracketed_tail(segments: &[Cow<'_, str>]) -> String {
    segments.iter().map(|s| format!("[{s}]")).collect()
}

fn card(form: &Form) -> Result<Card, Refusal> {
    let token = pmd(form, &["card", "token"])
        .or_else(|| form.get(&["payment_method"]).filter(|v| !v.is_empty()))
        .ok_or_else(|| refuse::missing(&name(&["card", "token"])))?;
    if token.len() > 255 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse::bad_value(
            &name(&["card", "token"]),
            "a card token such as tok_visa",
        ));
    }
    let digits = |field: &str,
                  lengths: std::ops::RangeInclusive<usize>|
     -> Result<Option<String>, Refusal> {
        match pmd(form, &["card", field]) {
            None => Ok(None),
            Some(v) if lengths.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Some(v.to_string()))
            }
            Some(_) => Err(refuse::bad_value(
                &name(&["card", field]),
                &format!("{lengths:?} digits"),
            )),
        }
    };
    let network = match pmd(form, &["card", "network"]) {
        Some(n) if n.len() <= 20 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Some(n.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(refuse::bad_value(
                &name(&["card", "network"]),
                "a card network such as visa",
            ))
        }
        None => None,
    };
    let issuer_country = match pmd(form, &["card", "country"]) {
        Some(raw) => Some(
            validate::country(raw).ok_or_else(|| refuse::country(&name(&["card", "country"])))?,
        ),
        None => None,
    };
    Ok(Card {
        token: token.to_string(),
        bin: digits("bin", 6..=8)?,
        last4: digits("last4", 4..=4)?,
        network,
        issuer_country,
    })
}

/// The BIC from `[bic]`, or `[bank]` given as a BIC or one of Stripe's iDEAL bank names.
fn bank(form: &Form, type_name: &str) -> Result<Option<String>, Refusal> {
    if let Some(raw) = pmd(form, &[type_name, "bic"]) {
        return validate::bic(raw)
            .map(Some)
            .ok_or_else(|| refuse::bad_value(&name(&[type_name, "bic"]), "a BIC"));
    }
    let Some(raw) = pmd(form, &[type_name, "bank"]) else {
        return Ok(None);
    };
    if let Some((_, bic)) = IDEAL_BANKS.iter().find(|(bank, _)| *bank == raw) {
        return Ok(Some(bic.to_string()));
    }
    validate::bic(raw).map(Some).ok_or_else(|| {
        refuse::bad_value(
            &name(&[type_name, "bank"]),
            "a BIC or an iDEAL bank name such as ing",
        )
    })
}

/// The Stripe `type` of a canonical method (`card`, `ideal`, `pix`, `grabpay`, `oxxo` …).
pub fn stripe_type(method: &PaymentMethod) -> &str {
    match method {
        PaymentMethod::Card(_) => "card",
        PaymentMethod::BankRedirect(b) => &b.scheme,
        PaymentMethod::InstantTransfer(t) => &t.scheme,
        PaymentMethod::Ewallet(w) => &w.wallet,
        PaymentMethod::CashVoucher(v) => &v.scheme,
        PaymentMethod::Other(o) => &o.name,
    }
}

/// Whether a card token is a Stripe payment method id, sent as `payment_method`.
pub fn stripe_payment_method_id(token: &str) -> bool {
    ["pm_", "card_", "src_"]
        .iter()
        .any(|p| token.starts_with(p))
}

/// Egress: the method, shopper and options as form fields. A card whose token is a Stripe
/// payment method id is `payment_method=<token>` (Stripe refuses `payment_method_data` next
/// to it); other methods follow the convention above, without the legacy card fields.
pub fn encode(payment: &Payment, out: &mut FormBuilder) {
    let Some(method) = &payment.method else {
        return;
    };
    if let PaymentMethod::Card(c) = method {
        if stripe_payment_method_id(&c.token) {
            out.push("payment_method", &c.token);
            options(payment, out);
            return;
        }
    }
    let mut phone = payment.customer.phone.as_deref();
    let type_name = match method {
        PaymentMethod::Ewallet(w)
            if !TYPES
                .iter()
                .any(|(t, k)| *t == w.wallet && *k == Kind::Wallet) =>
        {
            "ewallet"
        }
        other => stripe_type(other),
    };
    out.push("payment_method_types[]", type_name)
        .push("payment_method_data[type]", type_name);
    match method {
        PaymentMethod::Card(c) => {
            out.push("payment_method_data[card][token]", &c.token);
        }
        PaymentMethod::BankRedirect(b) => {
            out.push_opt(
                &format!("payment_method_data[{type_name}][iban]"),
                b.iban.as_deref(),
            )
            .push_opt(
                &format!("payment_method_data[{type_name}][bic]"),
                b.bic.as_deref(),
            );
        }
        PaymentMethod::InstantTransfer(t) => {
            out.push_opt(
                &format!("payment_method_data[{type_name}][tax_id]"),
                t.tax_id.as_deref(),
            );
        }
        PaymentMethod::Ewallet(w) => {
            if type_name == "ewallet" {
                out.push("payment_method_data[ewallet][wallet]", &w.wallet);
            }
            phone = w.phone.as_deref().or(phone);
        }
        PaymentMethod::CashVoucher(_) => {}
        PaymentMethod::Other(o) => {
            for (field, value) in &o.fields {
                // `account[number]` → `payment_method_data[mpesa][account][number]`.
                let (head, tail) = field.split_at(field.find('[').unwrap_or(field.len()));
                out.push(
                    &format!("payment_method_data[{type_name}][{head}]{tail}"),
                    value,
                );
            }
        }
    }
    out.push_opt("payment_method_data[billing_details][phone]", phone);
    if payment.customer.phone_verified {
        out.push(
            "payment_method_data[billing_details][phone_verified]",
            "true",
        );
    }
    out.push_opt(
        "payment_method_data[billing_details][address][country]",
        payment.country.as_deref(),
    );
    options(payment, out);
}

/// `payment_method_options[…]`, each only when set.
fn options(payment: &Payment, out: &mut FormBuilder) {
    if let Some(n) = payment.installments {
        out.push(
            "payment_method_options[card][installments][plan][count]",
            &n.to_string(),
        );
    }
    if payment.strong_auth.authenticated {
        out.push(
            "payment_method_options[card][three_d_secure][authenticated]",
            "true",
        );
    }
    if let Some(exemption) = &payment.strong_auth.exemption_requested {
        let stripe = EXEMPTIONS
            .iter()
            .find(|(_, c)| c == exemption)
            .map(|(s, _)| *s)
            .unwrap_or(exemption);
        out.push("payment_method_options[card][exemption]", stripe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Result<Payment, Refusal> {
        let mut p = Payment::new(payproxy_plugin_sdk::payment::Operation::Authorize);
        apply(&Form::parse(body.as_bytes()), &mut p).map(|_| p)
    }

    #[test]
    fn card_as_the_only_type_without_a_card_leaves_the_method_to_the_confirm() {
        // The most common server-side create: the card comes with the confirm.
        let p = parsed("payment_method_types[]=card").expect("no card yet");
        assert_eq!(p.method, None);
        // With a card it is that card; a card's details without a token are still refused.
        let p = parsed("payment_method_types[]=card&payment_method=pm_card_visa").expect("card");
        assert!(matches!(p.method, Some(PaymentMethod::Card(ref c)) if c.token == "pm_card_visa"));
        let refused = parsed("payment_method_types[]=card&payment_method_data[card][network]=visa")
            .expect_err("a card without its token");
        assert_eq!(
            refused.message,
            "Missing required param: payment_method_data[card][token]."
        );
        // Another single type still names the method.
        let p = parsed("payment_method_types[]=oxxo").expect("oxxo");
        assert!(matches!(p.method, Some(PaymentMethod::CashVoucher(_))));
    }

    #[test]
    fn a_type_the_dialect_does_not_know_passes_through_with_its_fields() {
        let p = parsed(
            "payment_method_data[type]=mpesa&payment_method_data[mpesa][phone]=%2B254712345678\
             &payment_method_data[mpesa][account][number]=A1&payment_method_data[mpesa][phone]=%2B254700000001\
             &payment_method_data[billing_details][address][country]=KE",
        )
        .expect("mpesa");
        assert_eq!(
            p.method,
            Some(PaymentMethod::Other(OtherMethod {
                name: "mpesa".into(),
                fields: vec![
                    ("phone".into(), "+254700000001".into()),
                    ("account[number]".into(), "A1".into()),
                ],
            }))
        );
        assert_eq!(p.country.as_deref(), Some("KE"));
        // The only payment_method_types entry names it as well.
        let p = parsed("payment_method_types[]=mbway&payment_method_data[mbway][telephoneNumber]=%2B351911111111")
            .expect("mbway");
        assert!(
            matches!(p.method, Some(PaymentMethod::Other(ref o)) if o.name == "mbway" && o.fields.len() == 1)
        );
        // Sent on as the same parameters.
        let mut out = FormBuilder::new();
        let mut mpesa = Payment::new(payproxy_plugin_sdk::payment::Operation::Authorize);
        mpesa.method = Some(PaymentMethod::Other(OtherMethod {
            name: "mpesa".into(),
            fields: vec![
                ("phone".into(), "+254700000001".into()),
                ("account[number]".into(), "A1".into()),
            ],
        }));
        encode(&mpesa, &mut out);
        let body = out.finish();
        let form = Form::parse(body.as_bytes());
        assert_eq!(form.get(&[PMD, "type"]), Some("mpesa"));
        assert_eq!(form.get(&[PMD, "mpesa", "phone"]), Some("+254700000001"));
        assert_eq!(form.get(&[PMD, "mpesa", "account", "number"]), Some("A1"));
        assert_eq!(form.list(&["payment_method_types"]), vec!["mpesa"]);
        // Too many fields, an oversized value.
        let many: String = (0..51)
            .map(|i| format!("&payment_method_data[mpesa][f{i}]=x"))
            .collect();
        let r = parsed(&format!("payment_method_data[type]=mpesa{many}")).expect_err("51 fields");
        assert_eq!(r.code, "parameter_invalid_value");
        let long = "x".repeat(501);
        let r = parsed(&format!(
            "payment_method_data[type]=mpesa&payment_method_data[mpesa][phone]={long}"
        ))
        .expect_err("long value");
        assert_eq!(r.code, "parameter_invalid_value");
    }

    #[test]
    fn type_resolution() {
        let p = parsed("payment_method=pm_card_visa").expect("card");
        assert!(matches!(p.method, Some(PaymentMethod::Card(ref c)) if c.token == "pm_card_visa"));
        let p = parsed("payment_method_types[]=oxxo").expect("oxxo");
        assert_eq!(
            p.method,
            Some(PaymentMethod::CashVoucher(CashVoucher {
                scheme: "oxxo".into()
            }))
        );
        assert_eq!(
            parsed("payment_method_types[]=card&payment_method_types[]=ideal")
                .expect("none")
                .method,
            None
        );
        let r = parsed("payment_method_data[type]=Bit-Coin").expect_err("not a type name");
        assert_eq!(r.code, "payment_method_type_unsupported");
        let r = parsed("payment_method_data[type]=billing_details").expect_err("reserved");
        assert_eq!(r.code, "payment_method_type_unsupported");
        let r = parsed("payment_method_types[]=card&payment_method_data[type]=ideal")
            .expect_err("mismatch");
        assert_eq!(r.code, "parameter_invalid_value");
        let r = parsed("payment_method_data[type]=card").expect_err("token");
        assert_eq!(
            r.kind,
            payproxy_plugin_sdk::payment::RefusalKind::InvalidRequest(Some(
                "payment_method_data[card][token]".into()
            ))
        );
    }

    #[test]
    fn ideal_bank_names_become_bics() {
        let p = parsed("payment_method_data[type]=ideal&payment_method_data[ideal][bank]=ing&payment_method_data[ideal][iban]=nl91 abna 0417 1643 00").expect("ideal");
        let Some(PaymentMethod::BankRedirect(b)) = p.method else {
            panic!("bank redirect")
        };
        assert_eq!(b.bic.as_deref(), Some("INGBNL2A"));
        assert_eq!(b.iban.as_deref(), Some("NL91ABNA0417164300"));
        assert!(
            parsed("payment_method_data[type]=ideal&payment_method_data[ideal][bank]=nope")
                .is_err()
        );
    }

    #[test]
    fn bad_phone_is_not_echoed() {
        let r = parsed(
            "payment_method_data[type]=dana&payment_method_data[billing_details][phone]=0812345678",
        )
        .expect_err("phone");
        assert!(!r.message.contains("0812345678"));
    }

    #[test]
    fn encode_then_parse_keeps_the_method() {
        let p = parsed(
            "payment_method_data[type]=ewallet&payment_method_data[ewallet][wallet]=gopay\
             &payment_method_data[billing_details][phone]=%2B6281234567890&payment_method_data[billing_details][phone_verified]=true\
             &payment_method_data[billing_details][address][country]=id&payment_method_options[card][exemption]=low_value",
        )
        .expect("wallet");
        assert_eq!(
            p.strong_auth.exemption_requested.as_deref(),
            Some("low-value")
        );
        assert_eq!(p.country.as_deref(), Some("ID"));
        let mut out = FormBuilder::new();
        encode(&p, &mut out);
        let back = parsed(&out.finish()).expect("parses back");
        assert_eq!(back.method, p.method);
        assert_eq!(back.customer, p.customer);
        assert_eq!(back.country, p.country);
        assert_eq!(back.strong_auth, p.strong_auth);
    }
}
