//! Properties: amounts and references survive encode → cob body → decode; txids are valid and
//! deterministic; CPFs/CNPJs with correct check digits are accepted and single-digit changes
//! are refused.

use dialect_pix::encode::{txid, valid_txid};
use dialect_pix::taxid::check_digits;
use dialect_pix::Pix;
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Context, Egress, HttpRequest, HttpResponse, InstantTransfer, Money, NextAction, Operation,
    OutcomeStatus, Payment, PaymentMethod, RefusalKind,
};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;
use serde_json::{json, Value};

fn plugin() -> Pix {
    Pix::init(r#"{"pix_key":"pix@shop.example"}"#).expect("config")
}

fn context(key: &str) -> Context {
    testing::egress_context("pix", &[("api_key", "secret-pix-token")], 0, key)
}

fn payment(minor: i64, reference: &str, tax_id: Option<String>) -> Payment {
    let mut p = Payment::new(Operation::Authorize);
    p.amount = Some(Money {
        minor,
        currency: "BRL".into(),
    });
    p.merchant_reference = Some(reference.into());
    p.method = Some(PaymentMethod::InstantTransfer(InstantTransfer {
        scheme: "pix".into(),
        tax_id,
    }));
    p
}

fn body(request: &HttpRequest) -> Value {
    serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("JSON body")
}

/// A tax id body (9 digits: CPF, 12: CNPJ) with its check digits, not all digits equal.
fn tax_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..10, len)
        .prop_map(|body| {
            let [a, b] = check_digits(&body);
            let mut digits = body;
            digits.extend([a, b]);
            digits
        })
        .prop_filter("all digits equal", |d| d.iter().any(|x| *x != d[0]))
}

fn text(digits: &[u8]) -> String {
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

fn formatted(digits: &[u8]) -> String {
    let t = text(digits);
    if t.len() == 11 {
        format!("{}.{}.{}-{}", &t[..3], &t[3..6], &t[6..9], &t[9..])
    } else {
        format!(
            "{}.{}.{}/{}-{}",
            &t[..2],
            &t[2..5],
            &t[5..8],
            &t[8..12],
            &t[12..]
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn amount_and_reference_round_trip(minor in 1i64..=99_999_999_999, reference in "[A-Za-z0-9 _./#:-]{1,40}|\\PC{1,20}") {
        let p = payment(minor, &reference, None);
        let request = plugin().encode_request(&p, &context("k")).expect("encodes");
        let sent = body(&request);
        let text = sent["valor"]["original"].as_str().expect("decimal string");
        prop_assert_eq!(currency::from_decimal(text, "BRL"), Ok(minor));
        prop_assert_eq!(sent["infoAdicionais"][0]["valor"].as_str(), Some(reference.as_str()));
        let cut: String = reference.chars().take(140).collect();
        prop_assert_eq!(sent["solicitacaoPagador"].as_str(), Some(cut.as_str()));
        // The PSP echoes the charge; decoding gives back the same money and the QR.
        let id = request.path.rsplit('/').next().unwrap_or_default().to_string();
        let answer = json!({"txid": id, "status": "ATIVA", "valor": sent["valor"], "pixCopiaECola": "000201"});
        let outcome = plugin().decode_response(&p, &HttpResponse::json(201, &answer));
        prop_assert_eq!(outcome.status, OutcomeStatus::RequiresAction(NextAction::Qr("000201".into())));
        prop_assert_eq!(outcome.amount, Some(Money { minor, currency: "BRL".into() }));
        prop_assert_eq!(outcome.provider_reference, Some(id));
    }

    #[test]
    fn txids_are_valid_and_deterministic(a in "\\PC{0,80}", b in "\\PC{0,80}") {
        prop_assert!(valid_txid(&txid(&a)));
        prop_assert_eq!(txid(&a), txid(&a));
        if a != b {
            prop_assert_ne!(txid(&a), txid(&b));
        }
        let request = plugin().encode_request(&payment(100, "r", None), &context(&a)).expect("encodes");
        let expected = format!("/pix/v2/cob/{}", txid(&a));
        prop_assert_eq!(request.path.as_str(), expected.as_str());
    }

    #[test]
    fn valid_tax_ids_are_accepted(digits in prop_oneof![tax_id(9), tax_id(12)], pretty in any::<bool>()) {
        let raw = if pretty { formatted(&digits) } else { text(&digits) };
        let sent = body(&plugin().encode_request(&payment(100, "r", Some(raw)), &context("k")).expect("accepted"));
        let field = if digits.len() == 11 { "cpf" } else { "cnpj" };
        let expected = text(&digits);
        prop_assert_eq!(sent["devedor"][field].as_str(), Some(expected.as_str()));
    }

    /// Mod 11 folds remainders 0 and 1 into the check digit 0, so an id whose first check
    /// digit is 0 can hide a change (see `taxid`); every other id detects any single-digit
    /// change.
    #[test]
    fn single_digit_changes_are_refused(
        digits in prop_oneof![tax_id(9), tax_id(12)]
            .prop_filter("first check digit 0", |d| d[d.len() - 2] != 0),
        position in any::<proptest::sample::Index>(),
        delta in 1u8..10,
    ) {
        let n = digits.len();
        let mut changed = digits.clone();
        let at = position.index(n);
        changed[at] = (changed[at] + delta) % 10;
        let raw = formatted(&changed);
        let refusal = plugin().encode_request(&payment(100, "r", Some(raw)), &context("k")).expect_err("refused");
        prop_assert_eq!(refusal.kind, RefusalKind::InvalidRequest(Some("tax_id".into())));
        prop_assert_eq!(refusal.code.as_str(), "invalid_tax_id");
        let digit_run = refusal.message.as_bytes().windows(3).any(|w| w.iter().all(u8::is_ascii_digit));
        prop_assert!(!digit_run, "message carries digits of the id: {}", refusal.message);
    }
}
