//! Card details from the home provider: the request that reads a card token
//! (`GET /v1/payment_methods/{pm_…}` or `GET /v1/tokens/{tok_…}`) and its answer.

use payproxy_plugin_sdk::payment::{HttpRequest, HttpResponse};
use payproxy_plugin_sdk::storefront::CardDetails;
use serde_json::Value;

use crate::config::Config;
use crate::validate;

/// The request that reads `token` at a Stripe account; `None` for tokens Stripe's API does
/// not read this way (or that are not URL-safe).
pub fn lookup(
    config: &Config,
    token: &str,
    credentials: &[(String, String)],
) -> Option<HttpRequest> {
    if !validate::object_id(token) {
        return None;
    }
    let path = if token.starts_with("pm_") {
        format!("/v1/payment_methods/{token}")
    } else if token.starts_with("tok_") {
        format!("/v1/tokens/{token}")
    } else {
        return None;
    };
    Some(HttpRequest {
        method: "GET".into(),
        path,
        query: None,
        headers: auth_headers(config, credentials),
        body: None,
    })
}

/// The headers that authenticate a request at a Stripe account: `authorization: Bearer
/// <api_key>` when the credentials have one, and the configured `stripe-version`. Used for
/// card lookups and for requests forwarded unchanged.
pub fn auth_headers(config: &Config, credentials: &[(String, String)]) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some((_, key)) = credentials
        .iter()
        .find(|(k, v)| k == "api_key" && !v.is_empty())
    {
        headers.push(("authorization".to_string(), format!("Bearer {key}")));
    }
    if let Some(version) = &config.stripe_version {
        headers.push(("stripe-version".to_string(), version.clone()));
    }
    headers
}

/// The card of a PaymentMethod or Token object (both carry it under `card`); `None` for a
/// non-2xx answer, a body that is not one of them, or a card with nothing usable.
pub fn details(response: &HttpResponse) -> Option<CardDetails> {
    if !(200..300).contains(&response.status) {
        return None;
    }
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    if !matches!(
        body["object"].as_str(),
        Some("payment_method" | "token") | None
    ) {
        return None;
    }
    let card = body.get("card").filter(|c| c.is_object())?;
    let text = |key: &str, ok: fn(&str) -> bool| {
        card[key]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 32 && ok(v))
    };
    let word = |v: &str| {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' ' | b'-'))
    };
    let details = CardDetails {
        brand: text("brand", word).map(brand),
        country: text("country", |_| true).and_then(validate::country),
        funding: text("funding", word).map(str::to_ascii_lowercase),
        last4: text("last4", |v| {
            v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit())
        })
        .map(str::to_string),
        three_d_secure_supported: card["three_d_secure_usage"]["supported"].as_bool(),
    };
    let empty = details.brand.is_none()
        && details.country.is_none()
        && details.funding.is_none()
        && details.last4.is_none()
        && details.three_d_secure_supported.is_none();
    (!empty).then_some(details)
}

/// A brand as PaymentMethods spell it (`visa`, `mastercard`, `amex` …); Tokens and Cards
/// use display names (`Visa`, `MasterCard`, `American Express`).
fn brand(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "american express" => "amex".into(),
        "diners club" => "diners".into(),
        "unionpay" | "union pay" => "unionpay".into(),
        _ => lower.replace([' ', '-'], "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lookups() {
        let creds = vec![("api_key".to_string(), "sk_test_1".to_string())];
        let config = Config::default();
        let r = lookup(&config, "pm_1Abc", &creds).expect("pm");
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v1/payment_methods/pm_1Abc")
        );
        assert_eq!(r.header("authorization"), Some("Bearer sk_test_1"));
        let r = lookup(&config, "tok_visa", &[]).expect("tok");
        assert_eq!(r.path, "/v1/tokens/tok_visa");
        assert!(r.headers.is_empty());
        assert!(lookup(&config, "card_1", &creds).is_none());
        assert!(lookup(&config, "pm_../x", &creds).is_none());
    }

    #[test]
    fn details_of_a_payment_method_and_a_token() {
        let pm = r#"{"id":"pm_1","object":"payment_method","type":"card","card":{"brand":"Visa","country":"de","funding":"credit","last4":"4242","exp_month":12,"exp_year":2030,"three_d_secure_usage":{"supported":true},"networks":{"available":["visa"],"preferred":null}}}"#;
        let d = details(&response(200, pm)).expect("details");
        assert_eq!(d.brand.as_deref(), Some("visa"));
        assert_eq!(d.country.as_deref(), Some("DE"));
        assert_eq!(d.funding.as_deref(), Some("credit"));
        assert_eq!(d.last4.as_deref(), Some("4242"));
        assert_eq!(d.three_d_secure_supported, Some(true));
        let tok = r#"{"id":"tok_1","object":"token","type":"card","card":{"id":"card_1","object":"card","brand":"American Express","country":"US","funding":"credit","last4":"8431"}}"#;
        let d = details(&response(200, tok)).expect("details");
        assert_eq!(d.brand.as_deref(), Some("amex"));
        assert_eq!(d.three_d_secure_supported, None);
        assert!(details(&response(404, pm)).is_none());
        assert!(details(&response(200, "{}")).is_none());
        assert!(details(&response(200, "<html>")).is_none());
        assert!(details(&response(
            200,
            r#"{"object":"customer","card":{"brand":"visa"}}"#
        ))
        .is_none());
    }
}
