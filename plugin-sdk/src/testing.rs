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
pub fn assert_http(
    expected: &Value,
    status_or_method: Value,
    path_query: Option<(&str, Option<&str>)>,
    headers: &[(String, String)],
    body: &[u8],
    at: &str,
) {
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
            let got = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            assert_eq!(got, value, "{at}: header {name}");
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Some(Value::String(want)) = expected.get("body") {
        assert_eq!(text, want.as_str(), "{at}: body");
    }
    if let Some(want) = expected.get("body_json") {
        let got: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{at}: body is not JSON ({e}): {text}"));
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

fn assert_response_json(expected: &Value, response: &Value, at: &str) {
    let (headers, body) = http_parts(response);
    assert_http(
        expected,
        response["status"].clone(),
        None,
        &headers,
        &body,
        at,
    );
}

fn assert_request_json(expected: &Value, request: &Value, at: &str) {
    let (headers, body) = http_parts(request);
    let path = request["path"].as_str().unwrap_or_default().to_string();
    let query = request["query"].as_str().map(str::to_string);
    assert_http(
        expected,
        request["method"].clone(),
        Some((&path, query.as_deref())),
        &headers,
        &body,
        at,
    );
}

fn outcome_of(
    name: &str,
    what: &str,
    got: Result<Value, Value>,
    case: &Value,
    ok_key: &str,
    err_key: &str,
    check_ok: impl Fn(&Value, &Value, &str),
) {
    let at = format!("{what} {name}");
    match (got, case.get(ok_key), case.get(err_key)) {
        (Ok(v), Some(want), _) => check_ok(want, &v, &at),
        (Err(e), _, Some(want)) => assert_subset(want, &e, &at),
        (Ok(v), _, _) => panic!("{at}: expected {err_key}, got {ok_key} {v:#}"),
        (Err(e), _, _) => panic!("{at}: expected {ok_key}, got {err_key} {e:#}"),
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

/// Run every case of a fixture file through `plugin`; returns the number of cases run.
pub fn run(text: &str, plugin: &dyn Harness) -> usize {
    run_sections(text, plugin, ALL)
}

/// Run the cases of the given sections only.
pub fn run_sections(text: &str, plugin: &dyn Harness, sections: &[&str]) -> usize {
    let full = load(text);
    let mut f = full.clone();
    if let Value::Object(map) = &mut f {
        map.retain(|k, _| !ALL.contains(&k.as_str()) || sections.contains(&k.as_str()));
    }
    let mut n = 0;
    for (name, case) in cases(&f, "parse") {
        parse_case(plugin, name, case);
        n += 1;
    }
    for (name, case) in cases(&f, "render") {
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
        assert_response_json(&case["response"], &response, &format!("render {name}"));
        n += 1;
    }
    for (name, case) in cases(&f, "refusals") {
        let response = plugin.refusal(raw(&case["refusal"]));
        assert_response_json(&case["response"], &response, &format!("refusal {name}"));
        n += 1;
    }
    let context = context_json(&f);
    for (name, case) in cases(&f, "encode") {
        let got = plugin.encode(raw(&case["payment"]), context.clone());
        outcome_of(
            name,
            "encode",
            got,
            case,
            "request",
            "refusal",
            assert_request_json,
        );
        n += 1;
    }
    for (name, case) in cases(&f, "decode") {
        let outcome = plugin.decode(raw(&case["payment"]), raw(&case["response"]));
        assert_subset(&case["outcome"], &outcome, &format!("decode {name}"));
        n += 1;
    }
    for (name, case) in cases(&f, "check") {
        let card = case.get("card").cloned().unwrap_or(Value::Null);
        let decision = plugin.check(raw(&case["payment"]), raw(&card));
        assert_subset(&case["decision"], &decision, &format!("check {name}"));
        n += 1;
    }
    for (name, case) in cases(&f, "route") {
        let payment = case.get("payment").cloned().unwrap_or(Value::Null);
        let seed = case.get("seed").and_then(Value::as_u64).unwrap_or(0);
        let got = plugin.route(
            raw(&case["request"]),
            raw(&payment),
            raw(&case["providers"]),
            seed,
        );
        outcome_of(
            name,
            "route",
            got,
            case,
            "providers_out",
            "rejection",
            |want, got, at| assert_eq!(want, got, "{at}"),
        );
        n += 1;
    }
    for (name, case) in cases(&f, "render_payment") {
        let response = plugin.render_payment(raw(&case["record"]));
        assert_response_json(
            &case["response"],
            &response,
            &format!("render_payment {name}"),
        );
        n += 1;
    }
    for (name, case) in cases(&f, "render_list") {
        let response = plugin.render_list(
            raw(&case["records"]),
            case["has_more"].as_bool().unwrap_or(false),
            case["url"].as_str().unwrap_or("/"),
        );
        assert_response_json(&case["response"], &response, &format!("render_list {name}"));
        n += 1;
    }
    for (name, case) in cases(&f, "forward_headers") {
        let got = plugin.forward_headers(case["credentials"].clone());
        assert_eq!(case["headers"], got, "forward_headers {name}");
        n += 1;
    }
    for (name, case) in cases(&f, "card_lookup") {
        let credentials = case
            .get("credentials")
            .cloned()
            .unwrap_or_else(|| context_json(&f)["credentials"].clone());
        let got = plugin.card_lookup(case["token"].as_str().unwrap_or_default(), credentials);
        let at = format!("card_lookup {name}");
        match (&case["request"], &got) {
            (Value::Null, Value::Null) => {}
            (Value::Null, got) => panic!("{at}: expected no request, got {got:#}"),
            (_, Value::Null) => panic!("{at}: expected a request, got none"),
            (want, got) => assert_request_json(want, got, &at),
        }
        n += 1;
    }
    for (name, case) in cases(&f, "card_details") {
        let got = plugin.card_details(raw(&case["response"]));
        assert_subset(&case["details"], &got, &format!("card_details {name}"));
        n += 1;
    }
    n
}

/// One `parse` case: through the 0.4.0 storefront (`call`) or the 0.2.0 ingress (`payment`).
fn parse_case(plugin: &dyn Harness, name: &str, case: &Value) {
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
        outcome_of(
            name,
            "parse",
            got,
            &Value::Object(expected),
            "call",
            "refusal",
            assert_subset,
        );
        return;
    }
    // A 0.2.0 ingress parses into a payment: only payment calls apply.
    if let Some(call) = expected.get("call").cloned() {
        let payment = call
            .get("Payment")
            .and_then(|c| c.get("payment"))
            .cloned()
            .unwrap_or_else(|| {
                panic!("parse {name}: a 0.2.0 ingress parses payments only, not {call}")
            });
        expected.insert("payment".into(), payment);
    }
    outcome_of(
        name,
        "parse",
        plugin.parse(raw(&case["request"])),
        &Value::Object(expected),
        "payment",
        "refusal",
        assert_subset,
    );
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
            Some(known) => assert_eq!(
                known, &info,
                "provider {} has different attributes in different cases",
                info["name"]
            ),
            None => list.push(info),
        }
    }
    Value::Array(list)
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

/// Run the `route` cases natively through a 0.3.0 router, initialised with the
/// [`provider_catalogue`] of the file.
pub fn check_router_v3<T: crate::routing::Router>(text: &str) -> usize {
    let f = load(text);
    let catalogue: Vec<crate::routing::ProviderInfo> = typed(provider_catalogue(&f));
    let router =
        T::init(&config_text(&f), catalogue.clone()).unwrap_or_else(|e| panic!("init: {e}"));
    run_sections(text, &RouterV3 { router, catalogue }, &["route"])
}
