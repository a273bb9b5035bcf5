//! Evaluate a rule's conditions against the request view and the canonical payment.

use payproxy_plugin_sdk::payment::{Payment, PaymentMethod};
use payproxy_plugin_sdk::routing::RequestView;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Conditions;

/// The request body seen as JSON, parsed lazily and only as deep as the rules look: the
/// top-level object is split into borrowed raw values once, and only the values a rule
/// names are parsed. A body that is not a JSON object matches no body condition.
pub struct Body<'a> {
    text: Option<&'a str>,
    top: OnceCell<Option<BTreeMap<&'a str, &'a RawValue>>>,
}

impl<'a> Body<'a> {
    /// A lazy view of the request's body.
    pub fn new(request: &'a RequestView) -> Body<'a> {
        Body {
            text: request
                .body
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok()),
            top: OnceCell::new(),
        }
    }

    /// The value at a dotted path (`payment_method.type`, `items.0.sku`).
    pub fn lookup(&self, dotted: &str) -> Option<Value> {
        let top = self
            .top
            .get_or_init(|| serde_json::from_str(self.text?).ok())
            .as_ref()?;
        let mut keys = dotted.split('.');
        let mut raw: &RawValue = top.get(keys.next()?)?;
        for key in keys {
            raw = match raw.get().trim_start().as_bytes().first()? {
                b'{' => *serde_json::from_str::<BTreeMap<&str, &RawValue>>(raw.get())
                    .ok()?
                    .get(key)?,
                b'[' => *serde_json::from_str::<Vec<&RawValue>>(raw.get())
                    .ok()?
                    .get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        serde_json::from_str(raw.get()).ok()
    }
}

/// True when every present condition holds. Conditions on canonical fields never hold
/// without a payment (transparent routes) or when the payment lacks the field.
pub fn matches(
    c: &Conditions,
    request: &RequestView,
    body: &Body<'_>,
    payment: Option<&Payment>,
) -> bool {
    http_matches(c, request, body)
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
    operation_ok
        && method_ok
        && amount_ok
        && one_of(&c.country, p.country.as_deref())
        && one_of(&c.currency, p.amount.as_ref().map(|a| a.currency.as_str()))
}

/// The method's kind or its finer name (card network, wallet, scheme) is listed.
fn method_named(method: &PaymentMethod, listed: &[String]) -> bool {
    let (kind, finer) = match method {
        PaymentMethod::Card(c) => ("card", c.network.as_deref()),
        PaymentMethod::Ewallet(w) => ("ewallet", Some(w.wallet.as_str())),
        PaymentMethod::BankRedirect(b) => ("bank_redirect", Some(b.scheme.as_str())),
        PaymentMethod::InstantTransfer(t) => ("instant_transfer", Some(t.scheme.as_str())),
        PaymentMethod::CashVoucher(v) => ("cash_voucher", Some(v.scheme.as_str())),
    };
    listed
        .iter()
        .any(|l| l == kind || finer.is_some_and(|f| l.eq_ignore_ascii_case(f.trim())))
}

fn http_matches(c: &Conditions, request: &RequestView, body: &Body<'_>) -> bool {
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
        request
            .header(name)
            .is_some_and(|v| accepted.iter().any(|a| a.eq_ignore_ascii_case(v.trim())))
    });
    if !headers_ok {
        return false;
    }
    c.body.iter().all(|(path, accepted)| {
        body.lookup(path)
            .is_some_and(|v| accepted.iter().any(|a| same_value(a, &v)))
    })
}

fn same_value(accepted: &Value, actual: &Value) -> bool {
    match (accepted, actual) {
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}
