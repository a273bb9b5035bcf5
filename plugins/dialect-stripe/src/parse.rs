//! Ingress: a storefront's Stripe API request → the canonical payment.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{HttpRequest, Money, Operation, Payment, Refusal};

use crate::config::Config;
use crate::form::Form;
use crate::{method, refuse, validate};

/// The Stripe API calls the dialect understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/payment_intents`.
    Create,
    /// `GET /v1/payment_intents/{id}`.
    Retrieve(String),
    /// `POST /v1/payment_intents/{id}/confirm`.
    Confirm(String),
    /// `POST /v1/payment_intents/{id}/capture`.
    Capture(String),
    /// `POST /v1/payment_intents/{id}/cancel`.
    Cancel(String),
    /// `POST /v1/refunds`.
    Refund,
}

/// Stripe's limits on metadata.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;
const MAX_TEXT: usize = 1000;

impl Route {
    /// The route of `method` `path`; an id that cannot be a payment intent's is not found.
    pub fn parse(method: &str, path: &str) -> Result<Route, Refusal> {
        let segments: Vec<&str> = match path.strip_prefix("/v1/") {
            Some(rest) => rest.split('/').collect(),
            None => return Err(refuse::unrecognized(method)),
        };
        let intent = |id: &str| -> Result<String, Refusal> {
            if id.starts_with("pi_") && validate::object_id(id) {
                Ok(id.to_string())
            } else {
                Err(refuse::no_such("payment_intent", "intent", id))
            }
        };
        match (method, segments.as_slice()) {
            ("POST", ["payment_intents"]) => Ok(Route::Create),
            ("POST", ["refunds"]) => Ok(Route::Refund),
            ("GET", ["payment_intents", id]) if !id.is_empty() => Ok(Route::Retrieve(intent(id)?)),
            ("POST", ["payment_intents", id, action]) if !id.is_empty() => {
                let id = intent(id)?;
                match *action {
                    "confirm" => Ok(Route::Confirm(id)),
                    "capture" => Ok(Route::Capture(id)),
                    "cancel" => Ok(Route::Cancel(id)),
                    _ => Err(refuse::unrecognized(method)),
                }
            }
            _ => Err(refuse::unrecognized(method)),
        }
    }
}

/// The body's form: the body for `POST`, the query for `GET`. JSON bodies are refused, the
/// Stripe API takes forms only.
fn form(request: &HttpRequest) -> Result<Form, Refusal> {
    if request.method == "GET" {
        return Ok(Form::parse(
            request.query.as_deref().unwrap_or_default().as_bytes(),
        ));
    }
    let content_type = request
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") || content_type.starts_with("multipart/") {
        return Err(Refusal::invalid(
            None,
            "invalid_content_type",
            "Send the parameters form-encoded (application/x-www-form-urlencoded), as Stripe's API takes them.",
        ));
    }
    Ok(Form::parse(request.body.as_deref().unwrap_or_default()))
}

/// Parse a storefront request into the canonical payment.
pub fn request(config: &Config, request: &HttpRequest) -> Result<Payment, Refusal> {
    let route = Route::parse(&request.method, &request.path)?;
    let form = form(request)?;
    // Card data first: a request carrying a card number is refused whatever else is wrong.
    refuse_card_data(config, &form)?;
    let operation = match route {
        Route::Create | Route::Confirm(_) => Operation::Authorize,
        Route::Retrieve(_) => Operation::Status,
        Route::Capture(_) => Operation::Capture,
        Route::Cancel(_) => Operation::Void,
        Route::Refund => Operation::Refund,
    };
    let mut payment = Payment::new(operation);
    payment.idempotency_key = idempotency_key(request)?;
    payment.metadata = metadata(&form)?;
    payment.merchant_reference = config
        .reference_keys
        .iter()
        .find_map(|key| payment.metadata.iter().find(|(k, _)| k == key))
        .map(|(_, v)| v.clone());
    match route {
        Route::Create => {
            let minor = amount(&form, "amount")?.ok_or_else(|| refuse::missing("amount"))?;
            let code = form
                .get(&["currency"])
                .filter(|c| !c.is_empty())
                .ok_or_else(|| refuse::missing("currency"))?;
            let currency =
                currency::normalise(code).ok_or_else(|| refuse::currency("currency", code))?;
            payment.amount = Some(Money { minor, currency });
            boolean(&form, "confirm")?;
            purchase(&form, &mut payment)?;
        }
        Route::Confirm(id) => {
            payment.id = Some(id);
            purchase(&form, &mut payment)?;
        }
        Route::Capture(id) => {
            payment.id = Some(id);
            payment.amount = follow_up_amount(&form, "amount_to_capture")?;
        }
        Route::Cancel(id) | Route::Retrieve(id) => payment.id = Some(id),
        Route::Refund => {
            let id = form
                .get(&["payment_intent"])
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    let mut r = refuse::missing("payment_intent");
                    r.message.push_str(" payproxy refunds by payment_intent.");
                    r
                })?;
            if !id.starts_with("pi_") || !validate::object_id(id) {
                return Err(refuse::no_such("payment_intent", "payment_intent", id));
            }
            payment.id = Some(id.to_string());
            payment.amount = follow_up_amount(&form, "amount")?;
            one_of(
                &form,
                "reason",
                &["duplicate", "fraudulent", "requested_by_customer"],
            )?;
        }
    }
    Ok(payment)
}

/// The payment intent or refund a request refers to.
pub fn request_id(request: &HttpRequest) -> Option<String> {
    match Route::parse(&request.method, &request.path).ok()? {
        Route::Create => None,
        Route::Retrieve(id) | Route::Confirm(id) | Route::Capture(id) | Route::Cancel(id) => {
            Some(id)
        }
        Route::Refund => {
            let form = form(request).ok()?;
            let id = form.get(&["payment_intent"])?;
            (id.starts_with("pi_") && validate::object_id(id)).then(|| id.to_string())
        }
    }
}

/// What a create or confirm says about the purchase: capture, method, shopper, options.
fn purchase(form: &Form, payment: &mut Payment) -> Result<(), Refusal> {
    payment.manual_capture = one_of(
        form,
        "capture_method",
        &["automatic", "automatic_async", "manual"],
    )? == Some("manual");
    payment.description = text(form, "description")?;
    payment.return_url = text(form, "return_url")?;
    if payment
        .return_url
        .as_deref()
        .is_some_and(|u| !u.contains("://") || u.contains(char::is_whitespace))
    {
        return Err(refuse::bad_value("return_url", "an absolute URL"));
    }
    method::apply(form, payment)
}

/// `Idempotency-Key`: at most 255 characters, as on Stripe.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, Refusal> {
    let Some(key) = request
        .header("idempotency-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    if key.len() > 255 {
        return Err(Refusal::invalid(
            None,
            "idempotency_key_too_long",
            "Idempotency-Key must be at most 255 characters.",
        ));
    }
    Ok(Some(key.to_string()))
}

/// `metadata[k]=v` in body order; an empty value unsets the key, as on Stripe.
fn metadata(form: &Form) -> Result<Vec<(String, String)>, Refusal> {
    let pairs: Vec<(String, String)> = form
        .map(&["metadata"])
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let invalid = |message: String| Refusal::invalid(Some("metadata"), "invalid_metadata", message);
    if pairs.len() > MAX_METADATA_KEYS {
        return Err(invalid(format!(
            "metadata can have at most {MAX_METADATA_KEYS} keys."
        )));
    }
    for (key, value) in &pairs {
        if key.chars().count() > MAX_METADATA_KEY {
            return Err(invalid(format!(
                "metadata keys can have at most {MAX_METADATA_KEY} characters."
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(invalid(format!(
                "metadata values can have at most {MAX_METADATA_VALUE} characters."
            )));
        }
    }
    Ok(pairs)
}

/// A positive integer amount in minor units, `None` when absent or empty.
fn amount(form: &Form, param: &str) -> Result<Option<i64>, Refusal> {
    let Some(raw) = form.get(&[param]).map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse::not_integer(param));
    }
    let value: i64 = raw.parse().map_err(|_| refuse::not_integer(param))?;
    if value <= 0 {
        return Err(refuse::too_small(param));
    }
    Ok(Some(value))
}

/// The amount of a capture or refund. Stripe sends no currency with them: the currency is
/// empty unless the request names one (`currency`, optional), and the host fills it from
/// the payment it refers to.
fn follow_up_amount(form: &Form, param: &str) -> Result<Option<Money>, Refusal> {
    let Some(minor) = amount(form, param)? else {
        return Ok(None);
    };
    let currency = match form.get(&["currency"]).filter(|c| !c.is_empty()) {
        Some(code) => {
            currency::normalise(code).ok_or_else(|| refuse::currency("currency", code))?
        }
        None => String::new(),
    };
    Ok(Some(Money { minor, currency }))
}

/// `true` / `false`, `None` when absent.
pub fn boolean(form: &Form, param: &str) -> Result<Option<bool>, Refusal> {
    boolean_at(form, &[param])
}

/// A boolean at a nested path, refused by its bracketed name.
pub fn boolean_at(form: &Form, path: &[&str]) -> Result<Option<bool>, Refusal> {
    match form.get(path) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(refuse::not_boolean(&bracketed(path))),
    }
}

/// One of `allowed`, `None` when absent.
fn one_of<'a>(form: &'a Form, param: &str, allowed: &[&str]) -> Result<Option<&'a str>, Refusal> {
    match form.get(&[param]).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(_) => Err(refuse::bad_value(
            param,
            &format!("must be one of {}", allowed.join(", ")),
        )),
    }
}

/// A free-text parameter of at most 1000 characters.
fn text(form: &Form, param: &str) -> Result<Option<String>, Refusal> {
    match form.get(&[param]).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() <= MAX_TEXT => Ok(Some(v.to_string())),
        Some(_) => Err(refuse::bad_value(param, "at most 1000 characters")),
    }
}

/// `a[b][c]` from `["a", "b", "c"]`.
pub fn bracketed<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i == 0 {
            out.push_str(seg.as_ref());
        } else {
            out.push('[');
            out.push_str(seg.as_ref());
            out.push(']');
        }
    }
    out
}

/// Parameters whose values are numbers by design, never scanned for card-like values.
const NUMERIC_PARAMS: &[&str] = &[
    "amount",
    "amount_to_capture",
    "count",
    "tax_id",
    "bin",
    "last4",
];

/// Refuse raw card data: a `number` or `cvc` under `card` (or `source`), anywhere; with
/// `refuse_card_like_values`, also any other value that looks like a card number.
fn refuse_card_data(config: &Config, form: &Form) -> Result<(), Refusal> {
    for (key, value) in form.pairs() {
        let Some(last) = key.last() else { continue };
        let under_card = key[..key.len() - 1]
            .iter()
            .any(|s| s == "card" || s == "source");
        if under_card && matches!(last.as_str(), "number" | "cvc" | "cvv") {
            return Err(refuse::card_number(&bracketed(key)));
        }
        let scanned = config.refuse_card_like_values || last == "token";
        if scanned && !NUMERIC_PARAMS.contains(&last.as_str()) && validate::card_like(value) {
            return Err(refuse::card_number(&bracketed(key)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("POST", "/v1/payment_intents"),
            Ok(Route::Create)
        );
        assert_eq!(
            Route::parse("GET", "/v1/payment_intents/pi_1"),
            Ok(Route::Retrieve("pi_1".into()))
        );
        assert_eq!(
            Route::parse("POST", "/v1/payment_intents/pi_1/cancel"),
            Ok(Route::Cancel("pi_1".into()))
        );
        assert_eq!(Route::parse("POST", "/v1/refunds"), Ok(Route::Refund));
        let code = |m: &str, p: &str| Route::parse(m, p).err().map(|r| r.code);
        assert_eq!(
            code("POST", "/v1/payment_intents/pi_1/zap").as_deref(),
            Some("unrecognized_request_url")
        );
        assert_eq!(
            code("GET", "/v1/refunds").as_deref(),
            Some("unrecognized_request_url")
        );
        assert_eq!(
            code("GET", "/v1/payment_intents/ch_1").as_deref(),
            Some("resource_missing")
        );
        assert_eq!(
            code("POST", "/v2/payment_intents").as_deref(),
            Some("unrecognized_request_url")
        );
    }

    #[test]
    fn amounts() {
        let form = Form::parse(b"a=12&b=10.50&c=0&d=-5&e=1e3&f=99999999999999999999&g=");
        assert_eq!(amount(&form, "a"), Ok(Some(12)));
        assert_eq!(amount(&form, "g"), Ok(None));
        let code = |p| amount(&form, p).err().map(|r| r.code);
        assert_eq!(code("b").as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(code("c").as_deref(), Some("amount_too_small"));
        assert_eq!(code("d").as_deref(), Some("amount_too_small"));
        assert_eq!(code("e").as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(code("f").as_deref(), Some("parameter_invalid_integer"));
    }

    #[test]
    fn card_data_is_refused_without_echo() {
        let config = Config::default();
        let refused = |body: &str| refuse_card_data(&config, &Form::parse(body.as_bytes())).err();
        let r = refused("payment_method_data[card][number]=4242424242424242").expect("refused");
        assert_eq!(r.code, "card_number_not_accepted");
        assert!(!r.message.contains("4242"));
        assert!(refused("card[cvc]=123").is_some());
        assert!(refused("metadata[note]=4242 4242 4242 4242").is_some());
        assert!(
            refused("amount=4242424242424242").is_none(),
            "numeric params are not scanned"
        );
        assert!(refused("payment_method_data[pix][tax_id]=42424242424242").is_none());
        let lax = Config {
            refuse_card_like_values: false,
            ..Config::default()
        };
        let form = Form::parse(b"metadata[note]=4242424242424242");
        assert!(refuse_card_data(&lax, &form).is_ok());
        let form = Form::parse(b"payment_method_data[card][token]=4242424242424242");
        assert!(
            refuse_card_data(&lax, &form).is_err(),
            "a token is always scanned"
        );
    }

    #[test]
    fn request_ids() {
        let req = |method: &str, path: &str, body: &str| HttpRequest {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: vec![],
            body: Some(body.as_bytes().to_vec()),
        };
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents/pi_9/capture", "")).as_deref(),
            Some("pi_9")
        );
        assert_eq!(
            request_id(&req("GET", "/v1/payment_intents/pi_9", "")).as_deref(),
            Some("pi_9")
        );
        assert_eq!(
            request_id(&req("POST", "/v1/refunds", "payment_intent=pi_8&amount=1")).as_deref(),
            Some("pi_8")
        );
        assert_eq!(
            request_id(&req("POST", "/v1/refunds", "payment_intent=ch_8")),
            None
        );
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents", "amount=1")),
            None
        );
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents/x%2F/capture", "")),
            None
        );
    }

    #[test]
    fn bracketed_names() {
        assert_eq!(bracketed(&["a", "b", ""]), "a[b][]");
        assert_eq!(bracketed(&["amount"]), "amount");
    }
}
