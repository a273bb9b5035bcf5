//! Canonical payment → Adyen request. Everything is validated before a request exists.

use payproxy_plugin_sdk::helpers::encode;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, PaymentMethod, Refusal,
};
use payproxy_plugin_sdk::payment_method;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::config::Config;

/// Build the request for `payment`, or refuse it.
pub fn request(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    let merchant = merchant_account(config, context);
    let (path, body) = match payment.operation {
        Operation::Authorize => {
            let body = authorize(payment, context, merchant)?;
            let headers = headers(context);
            let path = format!("{}/payments", config.base_path);
            return encode::typed_json_request("POST", path, headers, &body);
        }
        Operation::Capture => modification(payment, context, merchant, "captures", true)?,
        Operation::Refund => modification(payment, context, merchant, "refunds", true)?,
        Operation::Void => modification(payment, context, merchant, "cancels", false)?,
        Operation::Status => {
            return Err(Refusal::invalid(
                None,
                "operation_unsupported",
                "Adyen has no payment status query; its outcome arrives by webhook",
            ))
        }
    };
    Ok(encode::json_request(
        "POST",
        format!("{}{path}", config.base_path),
        headers(context),
        Some(body),
    ))
}

/// JSON with the idempotency key, and the API key when there is one. Without a key the
/// request still goes out: Adyen answers 401 (answered, not processed), which lets the host
/// try another provider instead of refusing the shopper.
fn headers(context: &Context) -> Vec<(String, String)> {
    let mut headers = encode::json_headers(Some(&context.idempotency_key));
    if let Some(key) = context.credential("api_key") {
        headers.push(("x-api-key".to_string(), key.to_string()));
    }
    headers
}

/// The provider's `merchant_account` credential, else the config's. Absent: the field is left
/// out and Adyen answers 422 (answered, not processed).
fn merchant_account<'a>(config: &'a Config, context: &'a Context) -> Option<&'a str> {
    context
        .credential("merchant_account")
        .or(config.merchant_account.as_deref())
}

/// `{"currency": "EUR", "value": minor}` for a present, positive amount in a known currency.
fn amount(payment: &Payment) -> Result<Amount, Refusal> {
    let money = encode::required_amount(payment)?;
    Ok(Amount {
        currency: encode::checked_amount(money)?,
        value: money.minor,
    })
}

/// The body of `/payments`, written straight from borrowed fields (a `Value` built first
/// was most of an encode's time). Fields are in the order a `Value` writes them (sorted),
/// so the bytes are what they were.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authorisation<'a> {
    #[serde(skip_serializing_if = "AdditionalData::is_empty")]
    additional_data: AdditionalData,
    amount: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    country_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installments: Option<Installments>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_order_reference: Option<&'a str>,
    /// Sorted, the last value of a repeated key (as a JSON object keeps it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<&'a str, &'a str>,
    payment_method: Value,
    reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shopper_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shopper_reference: Option<&'a str>,
}

#[derive(Serialize)]
struct Amount {
    currency: String,
    value: i64,
}

#[derive(Serialize)]
struct Installments {
    value: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdditionalData {
    #[serde(skip_serializing_if = "Option::is_none")]
    manual_capture: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sca_exemption: Option<&'static str>,
}

impl AdditionalData {
    fn is_empty(&self) -> bool {
        self.manual_capture.is_none() && self.sca_exemption.is_none()
    }
}

fn authorize<'a>(
    payment: &'a Payment,
    context: &'a Context,
    merchant: Option<&'a str>,
) -> Result<Authorisation<'a>, Refusal> {
    let amount = amount(payment)?;
    let payment_method = payment_method(payment)?;
    Ok(Authorisation {
        additional_data: AdditionalData {
            manual_capture: payment.manual_capture.then_some("true"),
            sca_exemption: sca_exemption(payment),
        },
        amount,
        country_code: payment.country.as_deref(),
        installments: payment.installments.map(|value| Installments { value }),
        merchant_account: merchant,
        // The merchant's order reference, which several payments may share, goes in
        // `merchantOrderReference` (Adyen's field for linking attempts of one order).
        merchant_order_reference: payment.merchant_reference.as_deref(),
        metadata: payment
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        payment_method,
        // Adyen requires a `reference`, and reports it back in its notifications. It must
        // name this payment alone (a late charge is matched to its payment by it): the
        // payment id, else the idempotency key.
        reference: payment.id.as_deref().unwrap_or(&context.idempotency_key),
        return_url: payment.return_url.as_deref(),
        shopper_email: payment.customer.email.as_deref(),
        shopper_reference: payment.customer.id.as_deref(),
    })
}

/// `paymentMethod`: a stored card by token, or a redirect / wallet method by its Adyen type.
fn payment_method(payment: &Payment) -> Result<Value, Refusal> {
    let unsupported = |what: &str| {
        encode::unsupported_method(format!(
            "{what} payments are not supported by this provider"
        ))
    };
    match &payment.method {
        None => Err(encode::missing_method()),
        Some(PaymentMethod::Card(card)) if card.token.trim().is_empty() => Err(Refusal::invalid(
            Some("payment_method"),
            "parameter_missing",
            "the card token is empty",
        )),
        Some(PaymentMethod::Card(card)) => {
            Ok(json!({ "type": "scheme", "storedPaymentMethodId": card.token }))
        }
        Some(PaymentMethod::BankRedirect(bank)) => Ok(json!({ "type": adyen_type(&bank.scheme)? })),
        Some(PaymentMethod::Ewallet(wallet)) => Ok(json!({ "type": adyen_type(&wallet.wallet)? })),
        Some(PaymentMethod::InstantTransfer(_)) => Err(unsupported("instant transfer")),
        Some(PaymentMethod::CashVoucher(_)) => Err(unsupported("cash voucher")),
        // A method the contract has no record for (`mbway`, `blik` …): Adyen's type of the
        // same name, with the storefront's fields as Adyen's `paymentMethod` fields
        // (`telephoneNumber`, `blikCode`); Adyen's fields are flat.
        Some(PaymentMethod::Other(other)) => {
            // Adyen's own card types are cards: they come as `card`, scoped and checked as one.
            let name = adyen_type(&other.name)?;
            if payment_method::CARD_TYPE_NAMES.contains(&name.as_str()) {
                return Err(unsupported(&format!("{name} (a card)")));
            }
            let mut method = Map::new();
            method.insert("type".into(), name.into());
            for (field, value) in &other.fields {
                // Card fields by any spelling, and Adyen's own raw-card names (`number`,
                // `holderName`); `telephoneNumber` (MB WAY) is not one.
                let lower = field.to_ascii_lowercase();
                let card_data = payment_method::is_card_field(field)
                    || lower.starts_with("stored")
                    || ["number", "holdername"].contains(&lower.as_str());
                if field.contains('[') || field == "type" || card_data {
                    return Err(unsupported(&format!("{} with field {field}", other.name)));
                }
                method.insert(field.clone(), value.clone().into());
            }
            Ok(Value::Object(method))
        }
    }
}

/// A scheme or wallet name as Adyen's `type` (lower case, `[a-z0-9_]`).
fn adyen_type(name: &str) -> Result<String, Refusal> {
    let name = name.trim().to_ascii_lowercase();
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(encode::unsupported_method(
            "the payment method scheme is not a valid name",
        ))
    }
}

/// Exemptions Adyen accepts as `additionalData.scaExemption`; others are not sent.
fn sca_exemption(payment: &Payment) -> Option<&'static str> {
    if !matches!(payment.method, Some(PaymentMethod::Card(_))) {
        return None;
    }
    match payment.strong_auth.exemption_requested.as_deref()? {
        "low-value" => Some("lowValue"),
        "tra" => Some("transactionRiskAnalysis"),
        "secure-corporate" => Some("secureCorporate"),
        "trusted-beneficiary" => Some("trustedBeneficiary"),
        _ => None,
    }
}

/// `/payments/{pspReference}/{kind}` with `{merchantAccount, amount?, reference}`.
fn modification(
    payment: &Payment,
    context: &Context,
    merchant: Option<&str>,
    kind: &str,
    with_amount: bool,
) -> Result<(String, Value), Refusal> {
    let psp = encode::provider_reference(payment)?;
    let mut body = Map::new();
    if let Some(merchant) = merchant {
        body.insert("merchantAccount".into(), merchant.into());
    }
    if with_amount {
        // Adyen has no "the full amount" default for captures and refunds.
        if payment.amount.is_none() {
            return Err(Refusal::invalid(
                Some("amount"),
                "parameter_missing",
                format!("this provider needs the amount for {kind}"),
            ));
        }
        body.insert("amount".into(), json!(amount(payment)?));
    }
    body.insert(
        "reference".into(),
        encode::reference(payment, context).into(),
    );
    Ok((format!("/payments/{psp}/{kind}"), body.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::{Card, Money};
    use payproxy_plugin_sdk::testing;

    fn payment() -> Payment {
        let mut p = Payment::new(Operation::Authorize);
        p.amount = Some(Money {
            minor: 100,
            currency: "EUR".into(),
        });
        p.method = Some(PaymentMethod::Card(Card {
            token: "tok".into(),
            bin: None,
            last4: None,
            network: None,
            issuer_country: None,
        }));
        p
    }

    fn context(credentials: &[(&str, &str)]) -> Context {
        testing::egress_context("adyen", credentials, 0, "key-1")
    }

    #[test]
    fn credentials_override_config_and_a_missing_key_is_not_invented() {
        let config = Config {
            merchant_account: Some("FromConfig".into()),
            ..Config::default()
        };
        let request = request(
            &config,
            &payment(),
            &context(&[("merchant_account", "FromCreds")]),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["merchantAccount"], "FromCreds");
        assert_eq!(
            body["reference"], "key-1",
            "idempotency key is the last-resort reference"
        );
        assert!(request.header("x-api-key").is_none());
        assert_eq!(request.header("idempotency-key"), Some("key-1"));

        let request = request_without_merchant();
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert!(body.get("merchantAccount").is_none());
    }

    fn request_without_merchant() -> HttpRequest {
        request(
            &Config::default(),
            &payment(),
            &context(&[("api_key", "k")]),
        )
        .unwrap()
    }

    #[test]
    fn an_authorisation_is_written_as_its_value_would_be() {
        let mut p = payment();
        p.id = Some("pi_1".into());
        p.country = Some("NL".into());
        p.customer.email = Some("a@example.com".into());
        p.customer.id = Some("cus_1".into());
        p.return_url = Some("https://shop.example/back".into());
        p.merchant_reference = Some("order-7".into());
        p.installments = Some(3);
        p.manual_capture = true;
        p.strong_auth.exemption_requested = Some("low-value".into());
        p.metadata = vec![
            ("z".into(), "first".into()),
            ("a".into(), "1".into()),
            ("z".into(), "last".into()),
        ];
        let config = Config {
            merchant_account: Some("Shop".into()),
            ..Config::default()
        };
        let request = request(&config, &p, &context(&[("api_key", "k")])).unwrap();
        let bytes = request.body.as_deref().unwrap();
        let body: Value = serde_json::from_slice(bytes).unwrap();
        // What the dialect wrote when the body was a `Value`: keys sorted.
        assert_eq!(String::from_utf8_lossy(bytes), body.to_string());
        assert_eq!(
            body,
            json!({
                "additionalData": {"manualCapture": "true", "scaExemption": "lowValue"},
                "amount": {"currency": "EUR", "value": 100},
                "countryCode": "NL",
                "installments": {"value": 3},
                "merchantAccount": "Shop",
                "merchantOrderReference": "order-7",
                "metadata": {"a": "1", "z": "last"},
                "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "tok"},
                "reference": "pi_1",
                "returnUrl": "https://shop.example/back",
                "shopperEmail": "a@example.com",
                "shopperReference": "cus_1",
            })
        );
        assert_eq!(request.path, format!("{}/payments", config.base_path));
        assert_eq!(request.header("x-api-key"), Some("k"));
        // Nothing optional: no empty objects.
        let bare = request_without_merchant();
        let body: Value = serde_json::from_slice(bare.body.as_deref().unwrap()).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["amount", "paymentMethod", "reference"]);
    }

    #[test]
    fn unknown_exemptions_are_not_sent() {
        let mut p = payment();
        p.strong_auth.exemption_requested = Some("moto".into());
        assert_eq!(sca_exemption(&p), None);
        p.strong_auth.exemption_requested = Some("tra".into());
        assert_eq!(sca_exemption(&p), Some("transactionRiskAnalysis"));
    }
}
