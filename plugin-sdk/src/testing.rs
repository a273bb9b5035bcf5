//! Golden-fixture runners for plugin tests (native builds only).
//!
//! A plugin keeps its fixtures in one JSON file; its native tests call the runner for its
//! role here, and payproxy's host tests run the same file through the wasm build. Format:
//!
//! ```json
//! {
//!   "config":  { "...": "given to init" },
//!   "context": { "provider": "p", "credentials": [["key", "v"]], "now_ms": 0, "idempotency_key": "k" },
//!   "parse":    [ { "name": "…", "request": HTTP_REQUEST, "payment": PAYMENT } ,
//!                 { "name": "…", "request": HTTP_REQUEST, "refusal": REFUSAL } ],
//!   "render":   [ { "name": "…", "payment": PAYMENT, "outcome": OUTCOME, "payment_id": "pi_1",
//!                   "annotations": [], "response": EXPECTED_RESPONSE } ],
//!   "refusals": [ { "name": "…", "refusal": REFUSAL, "response": EXPECTED_RESPONSE } ],
//!   "encode":   [ { "name": "…", "payment": PAYMENT, "request": EXPECTED_REQUEST } ,
//!                 { "name": "…", "payment": PAYMENT, "refusal": REFUSAL } ],
//!   "decode":   [ { "name": "…", "payment": PAYMENT, "response": HTTP_RESPONSE, "outcome": OUTCOME } ],
//!   "check":    [ { "name": "…", "payment": PAYMENT, "decision": DECISION } ],
//!   "route":    [ { "name": "…", "request": HTTP_REQUEST, "payment": PAYMENT_OR_NULL,
//!                   "providers": [PROVIDER], "seed": 0, "providers_out": ["a"] | "rejection": {…} } ]
//! }
//! ```
//!
//! Values are the contract types as serde JSON (`{"operation": "Authorize", "amount":
//! {"minor": 1000, "currency": "EUR"}, "method": {"Card": {…}}}`). Inputs must be complete
//! (absent `option` fields are `none`). Expected values are **subsets**: every key given must
//! match, keys left out are not checked. HTTP bodies are strings (`"body": "a=1"`) in inputs;
//! expected requests and responses give `"body"` (exact text) or `"body_json"` (compared as
//! JSON, subset semantics) and `"headers"` (each listed header must be present with that value).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::payment::{Compliance, Context, Egress, HttpRequest, HttpResponse, Ingress, Router};

/// Parse the fixture file text.
pub fn load(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture file is not JSON: {e}"))
}

/// The plugin config of a fixture file, as the JSON text `init` receives.
pub fn config_text(fixtures: &Value) -> String {
    fixtures.get("config").cloned().unwrap_or(Value::Object(Default::default())).to_string()
}

/// Convert `"body": "text"` into the byte list the contract types use, recursively for
/// the objects that are HTTP messages.
pub fn input<T: DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(bytes_bodies(value.clone()))
        .unwrap_or_else(|e| panic!("fixture input does not match the contract type: {e}\n{value:#}"))
}

fn bytes_bodies(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        if let Some(Value::String(text)) = map.get("body") {
            let bytes: Vec<Value> = text.bytes().map(|b| Value::from(b)).collect();
            map.insert("body".into(), Value::Array(bytes));
        }
        for v in map.values_mut() {
            *v = bytes_bodies(v.take());
        }
    } else if let Value::Array(items) = &mut value {
        for v in items.iter_mut() {
            *v = bytes_bodies(v.take());
        }
    }
    value
}

/// Assert that every key of `expected` matches `actual` (objects recursively, the rest exactly).
pub fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a.get(k).unwrap_or(&Value::Null);
                assert_subset(v, got, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(expected, actual, "mismatch at {at}"),
    }
}

/// Compare an HTTP message against an expected one (status/method/path/query, listed
/// headers, `body` exact or `body_json` subset).
pub fn assert_http(expected: &Value, status_or_method: Value, path_query: Option<(&str, Option<&str>)>, headers: &[(String, String)], body: &[u8], at: &str) {
    if let Some(s) = expected.get("status") {
        assert_eq!(s, &status_or_method, "{at}: status");
    }
    if let Some(m) = expected.get("method") {
        assert_eq!(m, &status_or_method, "{at}: method");
    }
    if let Some((path, query)) = path_query {
        if let Some(p) = expected.get("path") {
            assert_eq!(p.as_str(), Some(path), "{at}: path");
        }
        if let Some(q) = expected.get("query") {
            assert_eq!(q.as_str(), query, "{at}: query");
        }
    }
    if let Some(Value::Array(want)) = expected.get("headers") {
        for pair in want {
            let name = pair[0].as_str().unwrap_or_default();
            let value = pair[1].as_str();
            let got = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
            assert_eq!(got, value, "{at}: header {name}");
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Some(Value::String(want)) = expected.get("body") {
        assert_eq!(text, want.as_str(), "{at}: body");
    }
    if let Some(want) = expected.get("body_json") {
        let got: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{at}: body is not JSON ({e}): {text}"));
        assert_subset(want, &got, &format!("{at}: body_json"));
    }
}

fn cases<'a>(fixtures: &'a Value, key: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    fixtures
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| (c["name"].as_str().unwrap_or("unnamed"), c))
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Check a response against an expected one.
pub fn assert_response(expected: &Value, response: &HttpResponse, at: &str) {
    assert_http(expected, Value::from(response.status), None, &response.headers, &response.body, at);
}

/// Check a request against an expected one.
pub fn assert_request(expected: &Value, request: &HttpRequest, at: &str) {
    assert_http(
        expected,
        Value::from(request.method.clone()),
        Some((&request.path, request.query.as_deref())),
        &request.headers,
        request.body.as_deref().unwrap_or_default(),
        at,
    );
}

/// Run the `parse`, `render` and `refusals` cases of a fixture file natively.
pub fn check_ingress<T: Ingress>(text: &str) -> usize {
    let f = load(text);
    let plugin = T::init(&config_text(&f)).unwrap_or_else(|e| panic!("init: {e}"));
    let mut n = 0;
    for (name, case) in cases(&f, "parse") {
        let request: HttpRequest = input(&case["request"]);
        match (plugin.parse_request(&request), case.get("payment"), case.get("refusal")) {
            (Ok(p), Some(want), _) => assert_subset(want, &json(&p), &format!("parse {name}")),
            (Err(r), _, Some(want)) => assert_subset(want, &json(&r), &format!("parse {name}")),
            (got, _, _) => panic!("parse {name}: unexpected {:?}", got.map(|p| json(&p)).map_err(|r| json(&r))),
        }
        n += 1;
    }
    for (name, case) in cases(&f, "render") {
        let annotations: Vec<crate::payment::Annotation> = case.get("annotations").map(input).unwrap_or_default();
        let response = plugin.render_outcome(
            &input(&case["payment"]),
            &input(&case["outcome"]),
            case["payment_id"].as_str().unwrap_or_default(),
            &annotations,
        );
        assert_response(&case["response"], &response, &format!("render {name}"));
        n += 1;
    }
    for (name, case) in cases(&f, "refusals") {
        let response = plugin.render_refusal(&input(&case["refusal"]));
        assert_response(&case["response"], &response, &format!("refusal {name}"));
        n += 1;
    }
    n
}

/// The egress context of a fixture file.
pub fn context(f: &Value) -> Context {
    let c = f.get("context").cloned().unwrap_or(Value::Null);
    Context {
        provider: c["provider"].as_str().unwrap_or("provider").into(),
        credentials: serde_json::from_value(c["credentials"].clone()).unwrap_or_default(),
        now_ms: c["now_ms"].as_u64().unwrap_or(0),
        idempotency_key: c["idempotency_key"].as_str().unwrap_or("idem-1").into(),
    }
}

/// Run the `encode` and `decode` cases of a fixture file natively.
pub fn check_egress<T: Egress>(text: &str) -> usize {
    let f = load(text);
    let plugin = T::init(&config_text(&f)).unwrap_or_else(|e| panic!("init: {e}"));
    let ctx = context(&f);
    let mut n = 0;
    for (name, case) in cases(&f, "encode") {
        match (plugin.encode_request(&input(&case["payment"]), &ctx), case.get("request"), case.get("refusal")) {
            (Ok(r), Some(want), _) => assert_request(want, &r, &format!("encode {name}")),
            (Err(r), _, Some(want)) => assert_subset(want, &json(&r), &format!("encode {name}")),
            (got, _, _) => panic!("encode {name}: unexpected {:?}", got.map(|r| json(&r)).map_err(|r| json(&r))),
        }
        n += 1;
    }
    for (name, case) in cases(&f, "decode") {
        let outcome = plugin.decode_response(&input(&case["payment"]), &input(&case["response"]));
        assert_subset(&case["outcome"], &json(&outcome), &format!("decode {name}"));
        n += 1;
    }
    n
}

/// Run the `check` cases of a fixture file natively.
pub fn check_compliance<T: Compliance>(text: &str) -> usize {
    let f = load(text);
    let plugin = T::init(&config_text(&f)).unwrap_or_else(|e| panic!("init: {e}"));
    let mut n = 0;
    for (name, case) in cases(&f, "check") {
        let decision = plugin.check(&input(&case["payment"]));
        assert_subset(&case["decision"], &json(&decision), &format!("check {name}"));
        n += 1;
    }
    n
}

/// Run the `route` cases of a fixture file natively.
pub fn check_router<T: Router>(text: &str) -> usize {
    let f = load(text);
    let plugin = T::init(&config_text(&f)).unwrap_or_else(|e| panic!("init: {e}"));
    let mut n = 0;
    for (name, case) in cases(&f, "route") {
        let payment: Option<crate::payment::Payment> = case.get("payment").filter(|p| !p.is_null()).map(input);
        let providers: Vec<crate::payment::Provider> = input(&case["providers"]);
        let seed = case.get("seed").and_then(Value::as_u64).unwrap_or(0);
        let got = plugin.route(&input(&case["request"]), payment.as_ref(), &providers, seed);
        match (got, case.get("providers_out"), case.get("rejection")) {
            (Ok(list), Some(want), _) => assert_eq!(&json(&list), want, "route {name}"),
            (Err(r), _, Some(want)) => assert_subset(want, &json(&r), &format!("route {name}")),
            (got, _, _) => panic!("route {name}: unexpected {:?}", got.map(|l| json(&l)).map_err(|r| json(&r))),
        }
        n += 1;
    }
    n
}
