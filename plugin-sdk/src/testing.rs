//! Golden-fixture runners for plugin tests (native builds only).
//!
//! A plugin keeps its fixtures in one JSON file (`fixtures/golden.json` by convention); its
//! native tests call the runner for its role here (`check_*`: panics at the first failing
//! case), and `payproxy plugin test` runs the same file through the wasm build in the host
//! ([`evaluate`]: every case reported, with the expected value and the answer for a diff).
//! Format (keys starting with `_` are comments):
//!
//! ```json
//! {
//!   "config":  { "...": "given to init" },
//!   "context": { "provider": "p", "credentials": [["key", "v"]], "now_ms": 0, "idempotency_key": "k" },
//!   "parse":    [ { "name": "…", "request": HTTP_REQUEST, "payment": PAYMENT } ,
//!                 { "name": "…", "request": HTTP_REQUEST, "call": CALL } ,
//!                 { "name": "…", "request": HTTP_REQUEST, "refusal": REFUSAL } ],
//!   "render":   [ { "name": "…", "payment": PAYMENT, "outcome": OUTCOME, "payment_id": "pi_1",
//!                   "annotations": [], "response": EXPECTED_RESPONSE } ],
//!   "refusals": [ { "name": "…", "refusal": REFUSAL, "response": EXPECTED_RESPONSE } ],
//!   "encode":   [ { "name": "…", "payment": PAYMENT, "request": EXPECTED_REQUEST } ,
//!                 { "name": "…", "payment": PAYMENT, "refusal": REFUSAL } ],
//!   "decode":   [ { "name": "…", "payment": PAYMENT, "response": HTTP_RESPONSE, "outcome": OUTCOME } ],
//!   "check":    [ { "name": "…", "payment": PAYMENT, "card": CARD_DETAILS?, "decision": DECISION } ],
//!   "route":    [ { "name": "…", "request": HTTP_REQUEST, "payment": PAYMENT_OR_NULL,
//!                   "providers": [PROVIDER], "seed": 0, "providers_out": ["a"] | "rejection": {…} } ],
//!   "elsewhere": [ PROVIDER_INFO ],
//!   "render_payment": [ { "name": "…", "record": PAYMENT_RECORD, "response": EXPECTED_RESPONSE } ],
//!   "render_list": [ { "name": "…", "records": [PAYMENT_RECORD], "has_more": false,
//!                      "url": "/v1/payment_intents", "response": EXPECTED_RESPONSE } ],
//!   "forward_headers": [ { "name": "…", "credentials": [["api_key", "sk"]],
//!                          "headers": [["authorization", "Bearer sk"]] } ],
//!   "card_lookup": [ { "name": "…", "token": "pm_1", "credentials": [["api_key", "sk"]],
//!                      "request": EXPECTED_REQUEST_OR_NULL } ],
//!   "card_details": [ { "name": "…", "response": HTTP_RESPONSE, "details": CARD_DETAILS_OR_NULL } ]
//! }
//! ```
//!
//! Contract 0.4.0 storefronts ([`check_storefront`]): `parse` runs through
//! [`Storefront::parse`](crate::storefront::Storefront::parse). A case gives the whole
//! `"call"` (`{"Payment": {"payment": …, "confirm": true}}`, `{"List": {"limit": 10, …}}`,
//! `{"Forward": "re_1"}` or `{"Forward": null}`), or `"payment"` (the call must be a payment
//! call with that payment; add `"confirm"` to check it too), or `"refusal"`. A 0.2.0 ingress
//! runs the `"payment"` cases and a `"call"` case only when it is a payment call. The
//! sections `render_payment`, `render_list`, `forward_headers` (compared exactly),
//! `card_lookup` (credentials default to the `context`'s) and `card_details` are 0.4.0
//! only.
//!
//! `elsewhere` lists providers that are configured but on no route of the cases: a 0.3.0
//! router gets them at `init` with the others (see [`provider_catalogue`]).
//!
//! Values are the contract types as serde JSON (`{"operation": "Authorize", "amount":
//! {"minor": 1000, "currency": "EUR"}, "method": {"Card": {…}}}`). Inputs must be complete
//! (absent `option` fields are `none`). Expected values are **subsets**: every key given must
//! match, keys left out are not checked. HTTP bodies are strings (`"body": "a=1"`) in inputs;
//! expected requests and responses give `"body"` (exact text) or `"body_json"` (compared as
//! JSON, subset semantics) and `"headers"` (each listed header must be present with that value).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::payment::{Compliance, Context, Egress, Ingress, Router};
use crate::storefront::Storefront;

/// Parse the fixture file text.
pub fn load(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture file is not JSON: {e}"))
}

/// The plugin config of a fixture file, as the JSON text `init` receives.
pub fn config_text(fixtures: &Value) -> String {
    fixtures
        .get("config")
        .cloned()
        .unwrap_or(Value::Object(Default::default()))
        .to_string()
}

/// Convert `"body": "text"` into the byte list the contract types use, recursively for
/// the objects that are HTTP messages.
pub fn input<T: DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(bytes_bodies(value.clone())).unwrap_or_else(|e| {
        panic!("fixture input does not match the contract type: {e}\n{value:#}")
    })
}

fn bytes_bodies(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        if let Some(Value::String(text)) = map.get("body") {
            let bytes: Vec<Value> = text.bytes().map(Value::from).collect();
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

/// Where `expected` and `actual` first differ (every key of `expected` must match `actual`,
/// objects recursively, the rest exactly), as `at.key…: expected X, got Y`.
pub fn subset_mismatch(expected: &Value, actual: &Value, at: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, v)| {
            let got = a.get(k).unwrap_or(&Value::Null);
            subset_mismatch(v, got, &format!("{at}.{k}"))
        }),
        _ if expected == actual => None,
        _ => Some(format!(
            "mismatch at {at}: expected {expected}, got {actual}"
        )),
    }
}

/// Assert that every key of `expected` matches `actual` (objects recursively, the rest exactly).
pub fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    if let Some(mismatch) = subset_mismatch(expected, actual, at) {
        panic!("{mismatch}\nexpected: {expected:#}\nactual: {actual:#}");
    }
}

/// `actual` cut down to the keys `expected` has (objects recursively), so that a line diff
/// of the two shows only what the fixture checks.
pub fn project(expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => Value::Object(
            e.iter()
                .map(|(k, v)| (k.clone(), project(v, a.get(k).unwrap_or(&Value::Null))))
                .collect(),
        ),
        _ => actual.clone(),
    }
}

/// Where an HTTP message differs from an expected one (status/method/path/query, listed
/// headers, `body` exact or `body_json` subset), if it does.
fn http_mismatch(
    expected: &Value,
    status_or_method: Value,
    path_query: Option<(&str, Option<&str>)>,
    headers: &[(String, String)],
    body: &[u8],
    at: &str,
) -> Option<String> {
    let differs = |what: &str, want: &Value, got: &Value| {
        (want != got).then(|| format!("{at}: {what}: expected {want}, got {got}"))
    };
    let mut found = None;
    let mut check = |m: Option<String>| {
        if found.is_none() {
            found = m;
        }
    };
    if let Some(s) = expected.get("status") {
        check(differs("status", s, &status_or_method));
    }
    if let Some(m) = expected.get("method") {
        check(differs("method", m, &status_or_method));
    }
    if let Some((path, query)) = path_query {
        if let Some(p) = expected.get("path") {
            check(differs("path", p, &Value::from(path)));
        }
        if let Some(q) = expected.get("query") {
            check(differs("query", q, &json(&query)));
        }
    }
    if let Some(Value::Array(want)) = expected.get("headers") {
        for pair in want {
            let name = pair[0].as_str().unwrap_or_default();
            check(differs(
                &format!("header {name}"),
                &pair[1],
                &json(&header(headers, name)),
            ));
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Some(want @ Value::String(_)) = expected.get("body") {
        check(differs("body", want, &Value::from(text.as_ref())));
    }
    if let Some(want) = expected.get("body_json") {
        check(match serde_json::from_slice::<Value>(body) {
            Ok(got) => subset_mismatch(want, &got, &format!("{at}: body_json")),
            Err(e) => Some(format!("{at}: body is not JSON ({e}): {text}")),
        });
    }
    found
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Compare an HTTP message against an expected one (status/method/path/query, listed
/// headers, `body` exact or `body_json` subset).
pub fn assert_http(
    expected: &Value,
    status_or_method: Value,
    path_query: Option<(&str, Option<&str>)>,
    headers: &[(String, String)],
    body: &[u8],
    at: &str,
) {
    if let Some(mismatch) = http_mismatch(expected, status_or_method, path_query, headers, body, at)
    {
        panic!("{mismatch}");
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

/// A plugin under test, seen through JSON: inputs are contract types as serde JSON (bodies
/// already byte arrays), outputs likewise. The native runners below wrap the plugin's Rust
/// traits; payproxy's host tests wrap the wasm build, so both run the same fixture file.
pub trait Harness {
    /// `parse-request`: `Ok(payment)` or `Err(refusal)`.
    fn parse(&self, _request: Value) -> Result<Value, Value> {
        panic!("this plugin has no ingress side")
    }
    /// `render-outcome` → response.
    fn render(
        &self,
        _payment: Value,
        _outcome: Value,
        _payment_id: &str,
        _annotations: Value,
    ) -> Value {
        panic!("this plugin has no ingress side")
    }
    /// `render-refusal` → response.
    fn refusal(&self, _refusal: Value) -> Value {
        panic!("this plugin has no ingress side")
    }
    /// Whether `parse` cases go through [`Harness::parse_call`] (a 0.4.0 storefront).
    fn is_storefront(&self) -> bool {
        false
    }
    /// 0.4.0 `parse`: `Ok(call)` or `Err(refusal)`.
    fn parse_call(&self, _request: Value) -> Result<Value, Value> {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// 0.4.0 `render-payment` → response.
    fn render_payment(&self, _record: Value) -> Value {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// 0.4.0 `render-list` → response.
    fn render_list(&self, _records: Value, _has_more: bool, _url: &str) -> Value {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// 0.4.0 `forward-headers` → `[[name, value]]`.
    fn forward_headers(&self, _credentials: Value) -> Value {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// 0.4.0 `card-lookup` → request or `null`.
    fn card_lookup(&self, _token: &str, _credentials: Value) -> Value {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// 0.4.0 `card-details` → details or `null`.
    fn card_details(&self, _response: Value) -> Value {
        panic!("this plugin has no 0.4.0 storefront side")
    }
    /// `encode-request`: `Ok(request)` or `Err(refusal)`.
    fn encode(&self, _payment: Value, _context: Value) -> Result<Value, Value> {
        panic!("this plugin has no egress side")
    }
    /// `decode-response` → outcome.
    fn decode(&self, _payment: Value, _response: Value) -> Value {
        panic!("this plugin has no egress side")
    }
    /// `check` → decision; `card` is the case's card details (`null` when none).
    fn check(&self, _payment: Value, _card: Value) -> Value {
        panic!("this plugin is not a compliance plugin")
    }
    /// `route`: `Ok(names)` or `Err(rejection)`.
    fn route(
        &self,
        _request: Value,
        _payment: Value,
        _providers: Value,
        _seed: u64,
    ) -> Result<Value, Value> {
        panic!("this plugin is not a router")
    }
}

fn raw(value: &Value) -> Value {
    bytes_bodies(value.clone())
}

fn http_parts(v: &Value) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = serde_json::from_value(v["headers"].clone()).unwrap_or_default();
    let body: Vec<u8> = serde_json::from_value(v["body"].clone()).unwrap_or_default();
    (headers, body)
}

/// An HTTP message (bodies as bytes) shown the way the fixture `expected` writes it: listed
/// headers only, the body as text (`body`) or as JSON (`body_json`).
fn http_view(expected: &Value, message: &Value) -> Value {
    let (headers, body) = http_parts(message);
    let mut view = serde_json::Map::new();
    for key in ["status", "method", "path", "query"] {
        if let Some(v) = message.get(key) {
            view.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Array(want)) = expected.get("headers") {
        let listed = want
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().unwrap_or_default();
                serde_json::json!([name, header(&headers, name)])
            })
            .collect();
        view.insert("headers".into(), Value::Array(listed));
    }
    let text = String::from_utf8_lossy(&body);
    if expected.get("body").is_some() {
        view.insert("body".into(), Value::from(text.as_ref()));
    }
    if expected.get("body_json").is_some() {
        let parsed = serde_json::from_slice(&body).unwrap_or_else(|_| Value::from(text.as_ref()));
        view.insert("body_json".into(), parsed);
    }
    Value::Object(view)
}

fn response_mismatch(expected: &Value, response: &Value, at: &str) -> Option<String> {
    let (headers, body) = http_parts(response);
    http_mismatch(
        expected,
        response["status"].clone(),
        None,
        &headers,
        &body,
        at,
    )
}

fn request_mismatch(expected: &Value, request: &Value, at: &str) -> Option<String> {
    let (headers, body) = http_parts(request);
    let path = request["path"].as_str().unwrap_or_default().to_string();
    let query = request["query"].as_str().map(str::to_string);
    http_mismatch(
        expected,
        request["method"].clone(),
        Some((&path, query.as_deref())),
        &headers,
        &body,
        at,
    )
}

/// The key a [`Harness`] answers with when the call itself failed (a trap, a deadline, an
/// input the plugin's types cannot hold): `{"$error": "…"}`. Such a case fails with that
/// message, whatever the fixture expected.
pub const ERROR_KEY: &str = "$error";

/// A [`Harness`] answer saying the call failed.
pub fn call_error(message: impl std::fmt::Display) -> Value {
    serde_json::json!({ ERROR_KEY: message.to_string() })
}

fn call_failed(value: &Value) -> Option<&str> {
    value.get(ERROR_KEY)?.as_str()
}

/// Why a case failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFailure {
    /// The first difference (`encode card: status: expected 200, got 400`) or the failed call.
    pub message: String,
    /// What the fixture expects, when the plugin answered (for a diff).
    pub expected: Option<Value>,
    /// What the plugin answered, cut down to what the fixture checks.
    pub actual: Option<Value>,
}

/// One case of a fixture file and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    /// Its section (`encode`, `route` …).
    pub section: &'static str,
    /// Its `name`.
    pub name: String,
    /// `Ok` when the plugin answered what the fixture expects.
    pub result: Result<(), CaseFailure>,
}

impl std::fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let (Some(expected), Some(actual)) = (&self.expected, &self.actual) {
            write!(f, "\nexpected: {expected:#}\nactual: {actual:#}")?;
        }
        Ok(())
    }
}

/// Compare one answer: `mismatch` finds the first difference, `view` shows the answer the
/// way the fixture writes it.
fn compare(
    at: &str,
    want: &Value,
    got: &Value,
    mismatch: impl Fn(&Value, &Value, &str) -> Option<String>,
    view: impl Fn(&Value, &Value) -> Value,
) -> Result<(), CaseFailure> {
    if let Some(error) = call_failed(got) {
        return Err(CaseFailure {
            message: format!("{at}: the call failed: {error}"),
            expected: None,
            actual: None,
        });
    }
    match mismatch(want, got, at) {
        None => Ok(()),
        Some(message) => Err(CaseFailure {
            message,
            expected: Some(want.clone()),
            actual: Some(project(want, &view(want, got))),
        }),
    }
}

fn same(_expected: &Value, actual: &Value) -> Value {
    actual.clone()
}

fn exactly(want: &Value, got: &Value, at: &str) -> Option<String> {
    (want != got).then(|| format!("{at}: expected {want}, got {got}"))
}

/// An answer that is `Ok` (the `ok_key` of the case) or `Err` (its `err_key`).
fn outcome_of(
    at: &str,
    got: Result<Value, Value>,
    case: &Value,
    (ok_key, err_key): (&str, &str),
    mismatch: impl Fn(&Value, &Value, &str) -> Option<String>,
    view: impl Fn(&Value, &Value) -> Value,
) -> Result<(), CaseFailure> {
    match (got, case.get(ok_key), case.get(err_key)) {
        (Ok(v), Some(want), _) => compare(at, want, &v, mismatch, view),
        (Err(e), _, Some(want)) => compare(at, want, &e, subset_mismatch, same),
        (Ok(v) | Err(v), _, _) if call_failed(&v).is_some() => {
            compare(at, &Value::Null, &v, exactly, same)
        }
        (got, _, _) => {
            let (want_key, got_key, v) = match got {
                Ok(v) => (err_key, ok_key, v),
                Err(v) => (ok_key, err_key, v),
            };
            Err(CaseFailure {
                message: format!("{at}: expected {want_key}, got {got_key}"),
                expected: Some(serde_json::json!({ want_key: case.get(want_key) })),
                actual: Some(serde_json::json!({ got_key: v })),
            })
        }
    }
}

/// Every section of the fixture format.
pub const ALL: &[&str] = &[
    "parse",
    "render",
    "refusals",
    "encode",
    "decode",
    "check",
    "route",
    "render_payment",
    "render_list",
    "forward_headers",
    "card_lookup",
    "card_details",
];

/// The other keys a fixture file may have besides its sections (and keys starting with `_`,
/// which are comments).
pub const SETTINGS: &[&str] = &["config", "context", "elsewhere"];

/// Run every case of a fixture file through `plugin`; returns the number of cases run.
pub fn run(text: &str, plugin: &dyn Harness) -> usize {
    run_sections(text, plugin, ALL)
}

/// Run the cases of the given sections only; panics at the first case that fails.
pub fn run_sections(text: &str, plugin: &dyn Harness, sections: &[&str]) -> usize {
    let reports = evaluate(&load(text), plugin, sections).unwrap_or_else(|e| panic!("{e}"));
    if let Some(Err(failure)) = reports.iter().map(|r| &r.result).find(|r| r.is_err()) {
        panic!("{failure}");
    }
    reports.len()
}

/// Run the cases of the given sections of a parsed fixture file and report each, without
/// panicking: a case fails when the plugin's answer differs from the fixture or its call
/// failed. `Err` when the file itself is malformed (a section that is not a list).
pub fn evaluate(
    fixtures: &Value,
    plugin: &dyn Harness,
    sections: &[&str],
) -> Result<Vec<CaseReport>, String> {
    let Value::Object(map) = fixtures else {
        return Err("a fixture file is a JSON object".into());
    };
    for (key, value) in map {
        if ALL.contains(&key.as_str()) && !value.is_array() {
            return Err(format!("section `{key}` is not a list of cases"));
        }
    }
    let mut reports = Vec::new();
    for section in ALL.iter().filter(|s| sections.contains(s)) {
        for (name, case) in cases(fixtures, section) {
            let result = run_case(fixtures, plugin, section, name, case);
            reports.push(CaseReport {
                section,
                name: name.to_string(),
                result,
            });
        }
    }
    Ok(reports)
}

fn run_case(
    f: &Value,
    plugin: &dyn Harness,
    section: &str,
    name: &str,
    case: &Value,
) -> Result<(), CaseFailure> {
    let at = format!("{section} {name}");
    match section {
        "parse" => parse_case(plugin, &at, case),
        "render" => {
            let annotations = case
                .get("annotations")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let response = plugin.render(
                raw(&case["payment"]),
                raw(&case["outcome"]),
                case["payment_id"].as_str().unwrap_or_default(),
                annotations,
            );
            compare(
                &at,
                &case["response"],
                &response,
                response_mismatch,
                http_view,
            )
        }
        "refusals" => {
            let response = plugin.refusal(raw(&case["refusal"]));
            compare(
                &at,
                &case["response"],
                &response,
                response_mismatch,
                http_view,
            )
        }
        "encode" => {
            let got = plugin.encode(raw(&case["payment"]), context_json(f));
            outcome_of(
                &at,
                got,
                case,
                ("request", "refusal"),
                request_mismatch,
                http_view,
            )
        }
        "decode" => {
            let outcome = plugin.decode(raw(&case["payment"]), raw(&case["response"]));
            compare(&at, &case["outcome"], &outcome, subset_mismatch, same)
        }
        "check" => {
            let card = case.get("card").cloned().unwrap_or(Value::Null);
            let decision = plugin.check(raw(&case["payment"]), raw(&card));
            compare(&at, &case["decision"], &decision, subset_mismatch, same)
        }
        "route" => {
            let payment = case.get("payment").cloned().unwrap_or(Value::Null);
            let seed = case.get("seed").and_then(Value::as_u64).unwrap_or(0);
            let got = plugin.route(
                raw(&case["request"]),
                raw(&payment),
                raw(&case["providers"]),
                seed,
            );
            outcome_of(
                &at,
                got,
                case,
                ("providers_out", "rejection"),
                exactly,
                same,
            )
        }
        "render_payment" => {
            let response = plugin.render_payment(raw(&case["record"]));
            compare(
                &at,
                &case["response"],
                &response,
                response_mismatch,
                http_view,
            )
        }
        "render_list" => {
            let response = plugin.render_list(
                raw(&case["records"]),
                case["has_more"].as_bool().unwrap_or(false),
                case["url"].as_str().unwrap_or("/"),
            );
            compare(
                &at,
                &case["response"],
                &response,
                response_mismatch,
                http_view,
            )
        }
        "forward_headers" => {
            let got = plugin.forward_headers(case["credentials"].clone());
            compare(&at, &case["headers"], &got, exactly, same)
        }
        "card_lookup" => {
            let credentials = case
                .get("credentials")
                .cloned()
                .unwrap_or_else(|| context_json(f)["credentials"].clone());
            let got = plugin.card_lookup(case["token"].as_str().unwrap_or_default(), credentials);
            match (&case["request"], &got) {
                (Value::Null, Value::Null) => Ok(()),
                (Value::Null, _) | (_, Value::Null) => {
                    compare(&at, &case["request"], &got, exactly, same)
                }
                (want, got) => compare(&at, want, got, request_mismatch, http_view),
            }
        }
        "card_details" => {
            let got = plugin.card_details(raw(&case["response"]));
            compare(&at, &case["details"], &got, subset_mismatch, same)
        }
        _ => Ok(()),
    }
}

/// One `parse` case: through the 0.4.0 storefront (`call`) or the 0.2.0 ingress (`payment`).
fn parse_case(plugin: &dyn Harness, at: &str, case: &Value) -> Result<(), CaseFailure> {
    let want_payment = case.get("payment").map(|payment| {
        let mut call = serde_json::json!({ "payment": payment });
        if let Some(confirm) = case.get("confirm") {
            call["confirm"] = confirm.clone();
        }
        serde_json::json!({ "Payment": call })
    });
    let mut expected = serde_json::Map::new();
    if let Some(call) = case.get("call").cloned().or(want_payment) {
        expected.insert("call".into(), call);
    }
    if let Some(refusal) = case.get("refusal") {
        expected.insert("refusal".into(), refusal.clone());
    }
    if plugin.is_storefront() {
        let got = plugin.parse_call(raw(&case["request"]));
        return outcome_of(
            at,
            got,
            &Value::Object(expected),
            ("call", "refusal"),
            subset_mismatch,
            same,
        );
    }
    // A 0.2.0 ingress parses into a payment: only payment calls apply.
    if let Some(call) = expected.get("call").cloned() {
        let Some(payment) = call.get("Payment").and_then(|c| c.get("payment")).cloned() else {
            return Err(CaseFailure {
                message: format!("{at}: a 0.2.0 ingress parses payments only, not {call}"),
                expected: None,
                actual: None,
            });
        };
        expected.insert("payment".into(), payment);
    }
    outcome_of(
        at,
        plugin.parse(raw(&case["request"])),
        &Value::Object(expected),
        ("payment", "refusal"),
        subset_mismatch,
        same,
    )
}

/// The egress context of a fixture file as JSON (defaults filled in).
pub fn context_json(f: &Value) -> Value {
    json(&context(f))
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

/// An egress context for unit tests: `provider`'s `credentials`, the host's time and the
/// idempotency key of the attempt.
pub fn egress_context(
    provider: &str,
    credentials: &[(&str, &str)],
    now_ms: u64,
    idempotency_key: &str,
) -> Context {
    Context {
        provider: provider.into(),
        credentials: credentials
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        now_ms,
        idempotency_key: idempotency_key.into(),
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        panic!("fixture input does not match the contract type: {e}\n{value:#}")
    })
}

struct Native<T>(T);

impl<T: Ingress> Native<T> {
    fn parse(&self, request: Value) -> Result<Value, Value> {
        self.0
            .parse_request(&typed(request))
            .map(|p| json(&p))
            .map_err(|r| json(&r))
    }
    fn render(
        &self,
        payment: Value,
        outcome: Value,
        payment_id: &str,
        annotations: Value,
    ) -> Value {
        let annotations: Vec<crate::payment::Annotation> = typed(annotations);
        json(
            &self
                .0
                .render_outcome(&typed(payment), &typed(outcome), payment_id, &annotations),
        )
    }
    fn refusal(&self, refusal: Value) -> Value {
        json(&self.0.render_refusal(&typed(refusal)))
    }
}

struct IngressOnly<T>(Native<T>);
impl<T: Ingress> Harness for IngressOnly<T> {
    fn parse(&self, request: Value) -> Result<Value, Value> {
        self.0.parse(request)
    }
    fn render(
        &self,
        payment: Value,
        outcome: Value,
        payment_id: &str,
        annotations: Value,
    ) -> Value {
        self.0.render(payment, outcome, payment_id, annotations)
    }
    fn refusal(&self, refusal: Value) -> Value {
        self.0.refusal(refusal)
    }
}

struct EgressOnly<T>(T);
impl<T: Egress> Harness for EgressOnly<T> {
    fn encode(&self, payment: Value, context: Value) -> Result<Value, Value> {
        self.0
            .encode_request(&typed(payment), &typed(context))
            .map(|r| json(&r))
            .map_err(|r| json(&r))
    }
    fn decode(&self, payment: Value, response: Value) -> Value {
        json(&self.0.decode_response(&typed(payment), &typed(response)))
    }
}

struct ComplianceOnly<T>(T);
impl<T: Compliance> Harness for ComplianceOnly<T> {
    fn check(&self, payment: Value, card: Value) -> Value {
        let card: Option<crate::storefront::CardDetails> = typed(card);
        json(&self.0.check_card(&typed(payment), card.as_ref()))
    }
}

struct RouterOnly<T>(T);
impl<T: Router> Harness for RouterOnly<T> {
    fn route(
        &self,
        request: Value,
        payment: Value,
        providers: Value,
        seed: u64,
    ) -> Result<Value, Value> {
        let payment: Option<crate::payment::Payment> = typed(payment);
        let providers: Vec<crate::payment::Provider> = typed(providers);
        self.0
            .route(&typed(request), payment.as_ref(), &providers, seed)
            .map(|l| json(&l))
            .map_err(|r| json(&r))
    }
}

fn init<T>(f: &Value, init: impl Fn(&str) -> Result<T, String>) -> T {
    init(&config_text(f)).unwrap_or_else(|e| panic!("init: {e}"))
}

/// Run the `parse`, `render` and `refusals` cases natively (other sections must be absent).
pub fn check_ingress<T: Ingress>(text: &str) -> usize {
    let plugin = IngressOnly(Native(init(&load(text), T::init)));
    run_sections(text, &plugin, &["parse", "render", "refusals"])
}

/// Run the `encode` and `decode` cases natively.
pub fn check_egress<T: Egress>(text: &str) -> usize {
    run_sections(
        text,
        &EgressOnly(init(&load(text), T::init)),
        &["encode", "decode"],
    )
}

/// Run every section of a two-sided dialect's fixture file natively.
pub fn check_dialect<T: Ingress + Egress>(text: &str) -> usize {
    struct Both<I, E>(IngressOnly<I>, EgressOnly<E>);
    impl<I: Ingress, E: Egress> Harness for Both<I, E> {
        fn parse(&self, request: Value) -> Result<Value, Value> {
            self.0.parse(request)
        }
        fn render(
            &self,
            payment: Value,
            outcome: Value,
            payment_id: &str,
            annotations: Value,
        ) -> Value {
            self.0.render(payment, outcome, payment_id, annotations)
        }
        fn refusal(&self, refusal: Value) -> Value {
            self.0.refusal(refusal)
        }
        fn encode(&self, payment: Value, context: Value) -> Result<Value, Value> {
            self.1.encode(payment, context)
        }
        fn decode(&self, payment: Value, response: Value) -> Value {
            self.1.decode(payment, response)
        }
    }
    let f = load(text);
    let ingress: T = init(&f, <T as Ingress>::init);
    let egress: T = init(&f, <T as Egress>::init);
    run(
        text,
        &Both(IngressOnly(Native(ingress)), EgressOnly(egress)),
    )
}

/// A 0.4.0 storefront seen as a [`Harness`].
struct StorefrontNative<T>(T);

impl<T: Storefront> StorefrontNative<T> {
    fn parse_call(&self, request: Value) -> Result<Value, Value> {
        self.0
            .parse(&typed(request))
            .map(|c| json(&c))
            .map_err(|r| json(&r))
    }
    fn render(
        &self,
        payment: Value,
        outcome: Value,
        payment_id: &str,
        annotations: Value,
    ) -> Value {
        let annotations: Vec<crate::payment::Annotation> = typed(annotations);
        json(
            &self
                .0
                .render_outcome(&typed(payment), &typed(outcome), payment_id, &annotations),
        )
    }
    fn refusal(&self, refusal: Value) -> Value {
        json(&self.0.render_refusal(&typed(refusal)))
    }
    fn render_payment(&self, record: Value) -> Value {
        json(&self.0.render_payment(&typed(record)))
    }
    fn render_list(&self, records: Value, has_more: bool, url: &str) -> Value {
        let records: Vec<crate::storefront::PaymentRecord> = typed(records);
        json(&self.0.render_list(&records, has_more, url))
    }
    fn forward_headers(&self, credentials: Value) -> Value {
        let credentials: Vec<(String, String)> = typed(credentials);
        json(&self.0.forward_headers(&credentials))
    }
    fn card_lookup(&self, token: &str, credentials: Value) -> Value {
        let credentials: Vec<(String, String)> = typed(credentials);
        json(&self.0.card_lookup(token, &credentials))
    }
    fn card_details(&self, response: Value) -> Value {
        json(&self.0.card_details(&typed(response)))
    }
}

/// Forwards the storefront methods of [`Harness`] to a [`StorefrontNative`] field.
macro_rules! storefront_harness {
    ($field:tt) => {
        fn is_storefront(&self) -> bool {
            true
        }
        fn parse_call(&self, request: Value) -> Result<Value, Value> {
            self.$field.parse_call(request)
        }
        fn render(
            &self,
            payment: Value,
            outcome: Value,
            payment_id: &str,
            annotations: Value,
        ) -> Value {
            self.$field
                .render(payment, outcome, payment_id, annotations)
        }
        fn refusal(&self, refusal: Value) -> Value {
            self.$field.refusal(refusal)
        }
        fn render_payment(&self, record: Value) -> Value {
            self.$field.render_payment(record)
        }
        fn render_list(&self, records: Value, has_more: bool, url: &str) -> Value {
            self.$field.render_list(records, has_more, url)
        }
        fn forward_headers(&self, credentials: Value) -> Value {
            self.$field.forward_headers(credentials)
        }
        fn card_lookup(&self, token: &str, credentials: Value) -> Value {
            self.$field.card_lookup(token, credentials)
        }
        fn card_details(&self, response: Value) -> Value {
            self.$field.card_details(response)
        }
    };
}

/// The sections a 0.4.0 storefront runs.
const STOREFRONT_SECTIONS: &[&str] = &[
    "parse",
    "render",
    "refusals",
    "render_payment",
    "render_list",
    "forward_headers",
    "forward_headers",
    "card_lookup",
    "card_details",
];

/// Run the 0.4.0 storefront sections (`parse` as calls, `render`, `refusals`,
/// `render_payment`, `render_list`, `forward_headers`, `card_lookup`, `card_details`)
/// natively.
pub fn check_storefront_only<T: Storefront>(text: &str) -> usize {
    struct Only<S>(StorefrontNative<S>);
    impl<S: Storefront> Harness for Only<S> {
        storefront_harness!(0);
    }
    let plugin = Only(StorefrontNative(init(&load(text), T::init)));
    run_sections(text, &plugin, STOREFRONT_SECTIONS)
}

/// Run every section of a 0.4.0 two-sided dialect's fixture file natively: the storefront
/// sections through [`Storefront`], `encode` and `decode` through [`Egress`].
pub fn check_storefront<T: Storefront + Egress>(text: &str) -> usize {
    struct Both<S, E>(StorefrontNative<S>, EgressOnly<E>);
    impl<S: Storefront, E: Egress> Harness for Both<S, E> {
        storefront_harness!(0);
        fn encode(&self, payment: Value, context: Value) -> Result<Value, Value> {
            self.1.encode(payment, context)
        }
        fn decode(&self, payment: Value, response: Value) -> Value {
            self.1.decode(payment, response)
        }
    }
    let f = load(text);
    let storefront: T = init(&f, <T as Storefront>::init);
    let egress: T = init(&f, <T as Egress>::init);
    let mut sections = STOREFRONT_SECTIONS.to_vec();
    sections.extend(["encode", "decode"]);
    run_sections(
        text,
        &Both(StorefrontNative(storefront), EgressOnly(egress)),
        &sections,
    )
}

/// Run the `check` cases natively.
pub fn check_compliance<T: Compliance>(text: &str) -> usize {
    run_sections(
        text,
        &ComplianceOnly(init(&load(text), T::init)),
        &["check"],
    )
}

/// Run the `route` cases natively.
pub fn check_router<T: Router>(text: &str) -> usize {
    run_sections(text, &RouterOnly(init(&load(text), T::init)), &["route"])
}

/// The providers a 0.3.0 router gets at `init` for a fixture file, as JSON `provider-info`
/// values: every provider named in the `route` cases, once, in order of first appearance,
/// then those of the file's `elsewhere` list (configured, but on no route of the cases).
/// A provider's id is its index here.
pub fn provider_catalogue(f: &Value) -> Value {
    try_provider_catalogue(f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`provider_catalogue`], with an error instead of a panic when a provider has different
/// attributes in different cases.
pub fn try_provider_catalogue(f: &Value) -> Result<Value, String> {
    let in_cases =
        cases(f, "route").flat_map(|(_, case)| case["providers"].as_array().into_iter().flatten());
    let elsewhere = f["elsewhere"].as_array().into_iter().flatten();
    let mut list: Vec<Value> = Vec::new();
    for p in in_cases.chain(elsewhere) {
        let mut info = p.clone();
        if let Value::Object(map) = &mut info {
            map.remove("health");
            map.entry("dialect").or_insert(Value::String(String::new()));
        }
        match list.iter().find(|known| known["name"] == info["name"]) {
            // One configuration: a provider has the same attributes in every case.
            Some(known) if known != &info => {
                return Err(format!(
                    "provider {} has different attributes in different cases",
                    info["name"]
                ))
            }
            Some(_) => {}
            None => list.push(info),
        }
    }
    Ok(Value::Array(list))
}

/// A 0.3.0 router seen as a [`Harness`]: fixture providers become candidates (catalogue id
/// and health), the ids it answers become names again.
struct RouterV3<T> {
    router: T,
    catalogue: Vec<crate::routing::ProviderInfo>,
}

impl<T: crate::routing::Router> Harness for RouterV3<T> {
    fn route(
        &self,
        request: Value,
        payment: Value,
        providers: Value,
        seed: u64,
    ) -> Result<Value, Value> {
        let request: crate::payment::HttpRequest = typed(request);
        let payment: Option<crate::payment::Payment> = typed(payment);
        let providers: Vec<crate::payment::Provider> = typed(providers);
        let id_of = |name: &str| {
            self.catalogue
                .iter()
                .position(|p| p.name == name)
                .unwrap_or_else(|| panic!("provider {name} is not in the catalogue"))
                as u32
        };
        let candidates: Vec<crate::routing::Candidate> = providers
            .iter()
            .map(|p| crate::routing::Candidate {
                id: id_of(&p.name),
                health: p.health,
            })
            .collect();
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let view = crate::routing::RequestView::new(
            &request.method,
            &request.path,
            request.query.as_deref(),
            &headers,
            request.body.as_deref(),
        );
        self.router
            .route(&view, payment.as_ref(), &candidates, seed)
            .map(|ids| {
                // The host refuses these answers; a fixture must not pass with one.
                assert!(
                    !ids.is_empty() && ids.len() <= 64,
                    "answered {} ids",
                    ids.len()
                );
                let names: Vec<&str> = ids
                    .iter()
                    .map(|id| {
                        assert!(
                            candidates.iter().any(|c| c.id == *id),
                            "answered id {id}, which is not a candidate"
                        );
                        self.catalogue[*id as usize].name.as_str()
                    })
                    .collect();
                json(&names)
            })
            .map_err(|r| json(&r))
    }
}

/// Run the `route` cases natively through a packed router ([`crate::routing::Router`], exported
/// as 0.4.0 or 0.3.0), initialised with the [`provider_catalogue`] of the file.
pub fn check_router_v3<T: crate::routing::Router>(text: &str) -> usize {
    let f = load(text);
    let catalogue: Vec<crate::routing::ProviderInfo> = typed(provider_catalogue(&f));
    let router =
        T::init(&config_text(&f), catalogue.clone()).unwrap_or_else(|e| panic!("init: {e}"));
    run_sections(text, &RouterV3 { router, catalogue }, &["route"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compliance plugin that allows everything, or whose call fails.
    struct Fixed(Value);
    impl Harness for Fixed {
        fn check(&self, _payment: Value, _card: Value) -> Value {
            self.0.clone()
        }
    }

    const FILE: &str = r#"{"check": [
        {"name": "allowed", "payment": {}, "decision": {"verdict": "Allow"}},
        {"name": "denied", "payment": {}, "decision": {"verdict": {"Deny": {"code": "x"}}, "rule": "r"}}
    ]}"#;

    #[test]
    fn evaluate_reports_every_case_with_the_checked_part_of_the_answer() {
        let plugin = Fixed(serde_json::json!({"verdict": "Allow", "rule": "r", "annotations": []}));
        let reports = evaluate(&load(FILE), &plugin, ALL).expect("runs");
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].result, Ok(()));
        let failure = reports[1].result.clone().expect_err("fails");
        assert!(
            failure.message.contains("check denied.verdict"),
            "{failure}"
        );
        assert_eq!(
            failure.expected,
            Some(serde_json::json!({"verdict": {"Deny": {"code": "x"}}, "rule": "r"}))
        );
        // Cut down to the keys the fixture checks: no `annotations`.
        assert_eq!(
            failure.actual,
            Some(serde_json::json!({"verdict": "Allow", "rule": "r"}))
        );
    }

    #[test]
    fn a_failed_call_fails_its_case_whatever_was_expected() {
        let reports =
            evaluate(&load(FILE), &Fixed(call_error("trap: unreachable")), ALL).expect("runs");
        for report in reports {
            let failure = report.result.expect_err("fails");
            assert!(failure
                .message
                .ends_with("the call failed: trap: unreachable"));
            assert_eq!(failure.actual, None);
        }
    }

    #[test]
    fn malformed_files_are_errors_and_native_runs_still_panic() {
        assert!(evaluate(&load(r#"{"check": {}}"#), &Fixed(Value::Null), ALL).is_err());
        let panicked =
            std::panic::catch_unwind(|| run(FILE, &Fixed(serde_json::json!({"verdict": "Allow"}))));
        assert!(panicked.is_err());
    }
}
