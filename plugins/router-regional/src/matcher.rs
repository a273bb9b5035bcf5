//! Evaluate a rule's conditions against the request view and the canonical payment.

use payproxy_plugin_sdk::payment::{Payment, PaymentMethod};
use payproxy_plugin_sdk::payment_method;
use payproxy_plugin_sdk::routing::RequestView;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Conditions;

/// The request body seen as JSON, parsed lazily and only as deep as the rules look: the
/// top-level object is walked once, keeping borrowed raw values for the keys the rules name
/// (the last one when a key repeats, as most JSON parsers do) and skipping the rest without
/// allocating; only the values a rule reads are parsed. A body that is not a JSON object
/// matches no body condition.
pub struct Body<'a> {
    bytes: Option<&'a [u8]>,
    keys: &'a [String],
    top: OnceCell<Option<Vec<Option<&'a RawValue>>>>,
}

impl<'a> Body<'a> {
    /// A lazy view of the request's body; `keys` are the top-level keys the rules read.
    pub fn new(request: &'a RequestView, keys: &'a [String]) -> Body<'a> {
        Body {
            bytes: request.body.as_deref(),
            keys,
            top: OnceCell::new(),
        }
    }

    /// The raw JSON at a dotted path (`payment_method.type`, `items.0.sku`) whose first
    /// segment is one of the keys given to [`Body::new`].
    pub fn lookup(&self, dotted: &str) -> Option<&'a RawValue> {
        // From the bytes: strings are checked for UTF-8 one by one as they are read, so the
        // body is not validated twice.
        let top = self
            .top
            .get_or_init(|| fields(serde_json::Deserializer::from_slice(self.bytes?), self.keys))
            .as_ref()?;
        let mut path = dotted.split('.');
        let first = path.next()?;
        let mut raw: &RawValue = (*top.get(self.keys.iter().position(|k| k == first)?)?)?;
        for key in path {
            raw = match raw.get().trim_start().as_bytes().first()? {
                b'{' => fields(serde_json::Deserializer::from_str(raw.get()), &[key])?.pop()??,
                b'[' => *serde_json::from_str::<Vec<&RawValue>>(raw.get())
                    .ok()?
                    .get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(raw)
    }
}

/// The raw values of the `wanted` keys of the JSON object `de` reads (the last of a repeated
/// key), or `None` when it is not one JSON object.
fn fields<'a, R: serde_json::de::Read<'a>, W: AsRef<str>>(
    mut de: serde_json::Deserializer<R>,
    wanted: &[W],
) -> Option<Vec<Option<&'a RawValue>>> {
    let found = serde::Deserializer::deserialize_map(&mut de, Fields { wanted }).ok()?;
    de.end().ok()?;
    Some(found)
}

/// Walks an object keeping only the wanted keys' values.
struct Fields<'w, W> {
    wanted: &'w [W],
}

impl<'de, W: AsRef<str>> Visitor<'de> for Fields<'_, W> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.wanted.len()];
        while let Some(Text(key)) = map.next_key()? {
            match self.wanted.iter().position(|w| w.as_ref() == key) {
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A JSON string (an object key, or a value a rule compares), borrowed from the input unless
/// it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// The headers the rules name, read in one pass over the request's header block the first
/// time a rule asks for one.
pub struct Headers<'a> {
    request: &'a RequestView,
    names: &'a [String],
    values: OnceCell<Vec<Option<&'a str>>>,
}

impl<'a> Headers<'a> {
    /// A lazy view of `request`'s headers named in `names` (lower case).
    pub fn new(request: &'a RequestView, names: &'a [String]) -> Headers<'a> {
        Headers {
            request,
            names,
            values: OnceCell::new(),
        }
    }

    /// The first value of `name`, which must be one of the names given to [`Headers::new`].
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let index = self.names.iter().position(|n| n == name)?;
        self.values
            .get_or_init(|| self.request.headers_named(self.names))
            .get(index)
            .copied()
            .flatten()
    }
}

/// True when every present condition holds. Conditions on canonical fields never hold
/// without a payment (transparent routes) or when the payment lacks the field.
pub fn matches(
    c: &Conditions,
    request: &RequestView,
    headers: &Headers<'_>,
    body: &Body<'_>,
    payment: Option<&Payment>,
) -> bool {
    http_matches(c, request, headers, body)
        && (!c.needs_payment() || payment.is_some_and(|p| payment_matches(c, p)))
}

fn payment_matches(c: &Conditions, p: &Payment) -> bool {
    let one_of = |list: &Option<Vec<String>>, value: Option<&str>| {
        list.as_ref().is_none_or(|list| {
            value.is_some_and(|v| list.iter().any(|a| a.eq_ignore_ascii_case(v.trim())))
        })
    };
    let operation_ok = c
        .operation
        .as_ref()
        .is_none_or(|ops| ops.iter().any(|o| o.is(p.operation)));
    let method_ok = c
        .payment_method
        .as_ref()
        .is_none_or(|list| p.method.as_ref().is_some_and(|m| method_named(m, list)));
    let amount_ok = match (c.amount_min, c.amount_max) {
        (None, None) => true,
        (min, max) => p.amount.as_ref().is_some_and(|a| {
            min.is_none_or(|min| a.minor >= min) && max.is_none_or(|max| a.minor <= max)
        }),
    };
    let card = match &p.method {
        Some(PaymentMethod::Card(card)) => Some(card),
        _ => None,
    };
    operation_ok
        && method_ok
        && amount_ok
        && one_of(
            &c.card_country,
            card.and_then(|card| card.issuer_country.as_deref()),
        )
        && one_of(
            &c.card_network,
            card.and_then(|card| card.network.as_deref()),
        )
        && one_of(&c.country, p.country.as_deref())
        && one_of(&c.currency, p.amount.as_ref().map(|a| a.currency.as_str()))
}

/// The method's kind or its finer name (card network, wallet, scheme) is listed.
/// (`other` for a method the contract has no record for, whose finer name is its type:
/// `mpesa`.)
fn method_named(method: &PaymentMethod, listed: &[String]) -> bool {
    let (kind, finer) = payment_method::names(method);
    listed
        .iter()
        .any(|l| l == kind || finer.as_deref().is_some_and(|f| l.eq_ignore_ascii_case(f)))
}

fn http_matches(
    c: &Conditions,
    request: &RequestView,
    headers: &Headers<'_>,
    body: &Body<'_>,
) -> bool {
    if let Some(methods) = &c.method {
        if !methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&request.method))
        {
            return false;
        }
    }
    if let Some(prefixes) = &c.path_prefix {
        if !prefixes
            .iter()
            .any(|p| request.path.starts_with(p.as_str()))
        {
            return false;
        }
    }
    let headers_ok = c.headers.iter().all(|(name, accepted)| {
        headers
            .get(name)
            .is_some_and(|v| accepted.iter().any(|a| a.eq_ignore_ascii_case(v.trim())))
    });
    if !headers_ok {
        return false;
    }
    c.body.iter().all(|(path, accepted)| {
        body.lookup(path)
            .is_some_and(|raw| raw_matches(accepted, raw))
    })
}

/// One of `accepted` equals the JSON `raw`: strings ASCII case-insensitively, numbers by
/// value, anything else exactly. A string is read without allocating (unless it has escapes);
/// other values are parsed only when a non-string is accepted.
fn raw_matches(accepted: &[Value], raw: &RawValue) -> bool {
    let text = OnceCell::new();
    let value = OnceCell::new();
    accepted.iter().any(|a| match a {
        Value::String(a) => text
            .get_or_init(|| serde_json::from_str::<Text<'_>>(raw.get()).ok())
            .as_ref()
            .is_some_and(|Text(t)| a.eq_ignore_ascii_case(t)),
        a => value
            .get_or_init(|| serde_json::from_str::<Value>(raw.get()).ok())
            .as_ref()
            .is_some_and(|v| same_value(a, v)),
    })
}

fn same_value(accepted: &Value, actual: &Value) -> bool {
    match (accepted, actual) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(body: &str, path: &str) -> Option<Value> {
        let request = RequestView::new("POST", "/", None, &[], Some(body.as_bytes()));
        let first = path.split('.').next().unwrap().to_string();
        let keys = [first];
        let raw = Body::new(&request, &keys).lookup(path)?;
        Some(serde_json::from_str(raw.get()).unwrap())
    }

    #[test]
    fn values_compare_strings_without_case_and_numbers_by_value() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let accepted = [json!("EUR"), json!(100000), json!(true)];
        assert!(raw_matches(&accepted, &raw(r#""eur""#)));
        assert!(raw_matches(&accepted, &raw(r#""\u0045ur""#)));
        assert!(raw_matches(&accepted, &raw("100000.0")));
        assert!(raw_matches(&accepted, &raw("true")));
        assert!(!raw_matches(&accepted, &raw(r#""usd""#)));
        assert!(!raw_matches(&accepted, &raw(r#""100000""#)));
        assert!(!raw_matches(&accepted, &raw("false")));
        assert!(!raw_matches(&[json!("1")], &raw("1")));
    }

    #[test]
    fn body_values_are_found_at_any_depth_and_the_last_repeated_key_wins() {
        let body = r#"{"amount":1,"currency":"usd","pm":{"type":"card","n":[1,{"x":"y"}]},"currency":"eur"}"#;
        assert_eq!(lookup(body, "currency"), Some(json!("eur")));
        assert_eq!(lookup(body, "amount"), Some(json!(1)));
        assert_eq!(lookup(body, "pm.type"), Some(json!("card")));
        assert_eq!(lookup(body, "pm.n.1.x"), Some(json!("y")));
        assert_eq!(lookup(body, "pm.missing"), None);
        assert_eq!(lookup(body, "missing"), None);
    }

    #[test]
    fn escaped_keys_match_and_broken_bodies_match_nothing() {
        assert_eq!(
            lookup(r#"{"curr\u0065ncy":"eur"}"#, "currency"),
            Some(json!("eur"))
        );
        // An escaped key the rules do not read does not hide the others.
        assert_eq!(
            lookup(r#"{"descr\u0069ption":"x","currency":"eur"}"#, "currency"),
            Some(json!("eur"))
        );
        // Broken after the field a rule reads: still not a JSON object, so no match.
        assert_eq!(lookup(r#"{"currency":"eur", oops"#, "currency"), None);
        assert_eq!(lookup(r#"{"currency":"eur"} trailing"#, "currency"), None);
        assert_eq!(lookup(r#"["currency","eur"]"#, "currency"), None);
        assert_eq!(lookup("currency=eur", "currency"), None);
    }
}
