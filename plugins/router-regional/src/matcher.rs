//! Evaluate a rule's conditions against the request view.

use payproxy_plugin_sdk::Request;
use serde_json::Value;

use crate::config::Conditions;

/// The body as JSON, when present and parseable; a non-JSON body matches no body condition.
pub fn parse_body(request: &Request) -> Option<Value> {
    serde_json::from_slice(request.body.as_deref()?).ok()
}

/// True when every present condition holds.
pub fn matches(c: &Conditions, request: &Request, body: Option<&Value>) -> bool {
    if let Some(methods) = &c.method {
        if !methods.iter().any(|m| m.eq_ignore_ascii_case(&request.method)) {
            return false;
        }
    }
    if let Some(prefixes) = &c.path_prefix {
        if !prefixes.iter().any(|p| request.path.starts_with(p.as_str())) {
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
        body.and_then(|b| lookup(b, path))
            .is_some_and(|v| accepted.iter().any(|a| same_value(a, v)))
    })
}

fn lookup<'a>(mut value: &'a Value, dotted: &str) -> Option<&'a Value> {
    for key in dotted.split('.') {
        value = match value {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn same_value(accepted: &Value, actual: &Value) -> bool {
    match (accepted, actual) {
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}
