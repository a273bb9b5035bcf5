//! Operability end to end, payproxy as a child process: spans exported over OTLP/HTTP to a
//! real receiver (decoded with the OpenTelemetry protobuf definitions), the `traceparent`
//! providers receive, JSON log lines with the trace id, and the audit trail, line by line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use payproxy_e2e::chaos::{eventually, ChildProxy, ReservedPort};
use payproxy_e2e::{audit_lines, write_config, Faults, HttpClient, Recorder, Simulator};
use payproxy_e2e::{
    card_from, dana_shopper, eea_card, form_with, ideal_shopper, payments_config, PAYMENT_PROVIDERS,
};
use prost::Message;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    /// Every attribute value of the span and its events, for the leak check.
    all_values: String,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP trace receiver on 127.0.0.1:0: decodes each export request with the
/// OpenTelemetry protobuf definitions and keeps the spans and the request headers.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (s, h) = (spans.clone(), headers.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (s, h) = (s.clone(), h.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let bytes = body.collect().await.unwrap().to_bytes();
                            let status = match ExportTraceServiceRequest::decode(bytes) {
                                Ok(export) if parts.uri.path() == "/v1/traces" => {
                                    h.lock().unwrap().push(parts.headers);
                                    s.lock().unwrap().extend(flatten(export));
                                    200
                                }
                                _ => 400,
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            headers,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in export.resource_spans {
        let resource_values: Vec<String> = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter().map(value_text))
            .collect();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes: HashMap<String, String> = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), value_text(kv)))
                    .collect();
                let mut all: Vec<String> = attributes.values().cloned().collect();
                for event in &span.events {
                    all.push(event.name.clone());
                    all.extend(event.attributes.iter().map(value_text));
                }
                all.extend(resource_values.iter().cloned());
                out.push(Span {
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    attributes,
                    all_values: all.join("\n"),
                });
            }
        }
    }
    out
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const STOREFRONT_SPAN: &str = "00f067aa0ba902b7";
const INTENT: &str = r#"{"id":"pi_home_1","object":"payment_intent","status":"succeeded","amount":1000,"currency":"eur"}"#;

/// The demo's payment config on reserved ports, with traces exported to `receiver`, JSON
/// logs and an audit file; `stripe-like` (the home account) answered by `home`.
fn observed_config(
    sim: &Simulator,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
    receiver: Option<&Receiver>,
    home: &Recorder,
) -> Value {
    let mut config = payments_config(sim);
    config["listeners"] = json!([{ "addr": listen.to_string() }]);
    config["admin"] = json!({ "addr": admin.to_string() });
    config["providers"]["stripe-like"]["url"] = home.url().into();
    config["routes"][0]["home"] = "stripe-like".into();
    config["log"] = json!({ "format": "json", "audit_path": dir.join("audit.jsonl") });
    if let Some(receiver) = receiver {
        config["telemetry"] = json!({ "otlp": {
            "endpoint": receiver.endpoint(),
            "headers": { "x-collector-key": "collector-secret" },
            "export_interval_ms": 100,
        }});
    }
    config
}

/// Each loaded plugin's sha256, as the status page shows it: a closure that fails naming a
/// plugin it does not know.
async fn plugin_digests(client: &HttpClient, admin: SocketAddr) -> impl Fn(&str) -> String {
    let status: Value = client
        .get(&format!("http://{admin}/admin/status"))
        .await
        .json();
    let digests: HashMap<String, String> = status["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.into(), p["sha256"].as_str()?.into())))
        .collect();
    move |plugin: &str| {
        digests
            .get(plugin)
            .cloned()
            .unwrap_or_else(|| panic!("{plugin} not on the status page: {status}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_one_trace_with_a_span_per_phase_plugin_and_attempt() {
    let receiver = Receiver::start().await;
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let home = Recorder::start(200, "application/json", INTENT).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let (listen_addr, admin_addr) = (listen.addr(), admin.addr());
    let config = observed_config(
        &sim,
        listen_addr,
        admin_addr,
        dir.path(),
        Some(&receiver),
        &home,
    );
    let config = write_config(dir.path(), &config);
    let log = dir.path().join("payproxy.log");
    let proxy = ChildProxy::start_logging(&config, &log, listen, admin, "info").await;
    let client = HttpClient::default();
    let traceparent = format!("00-{TRACE_ID}-{STOREFRONT_SPAN}-01");

    // An iDEAL payment: translated from Stripe's form into the iDEAL acquirer's protocol.
    let reply = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[
                ("traceparent", &traceparent),
                ("tracestate", "vendor=opaque"),
                ("idempotency-key", "trace-ideal-1"),
            ],
            &ideal_shopper("NL91ABNA0417164300", "order-trace-1"),
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("ideal"));

    let want = [
        "payproxy.request",
        "payment.ingress",
        "payment.idempotency",
        "payment.comply",
        "payment.route",
        "payment.attempt",
        "payment.respond",
        "provider ideal",
    ];
    eventually(Duration::from_secs(20), "the payment's spans", async || {
        let trace = receiver.trace(TRACE_ID);
        want.iter()
            .all(|name| trace.iter().any(|s| s.name == *name))
    })
    .await;
    let trace = receiver.trace(TRACE_ID);
    let named = |name: &str| -> Span {
        trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {trace:#?}"))
            .clone()
    };
    let root = named("payproxy.request");
    assert_eq!(
        root.parent, STOREFRONT_SPAN,
        "the storefront's span is the parent"
    );
    assert_eq!(root.attr("route"), Some("payments"));
    assert_eq!(root.attr("http.response.status_code"), Some("200"));
    assert_eq!(root.attr("trace_id"), Some(TRACE_ID));
    for phase in &want[1..7] {
        let spans: Vec<&Span> = trace.iter().filter(|s| s.name == *phase).collect();
        assert_eq!(spans.len(), 1, "exactly one {phase}: {spans:#?}");
        assert_eq!(
            spans[0].parent, root.span_id,
            "{phase} is a child of the request"
        );
    }
    assert_eq!(
        trace
            .iter()
            .filter(|s| s.name == "payproxy.request")
            .count(),
        1,
        "one request span"
    );
    let attempt_phase = named("payment.attempt");
    let attempt = named("provider ideal");
    assert_eq!(attempt.parent, attempt_phase.span_id);
    assert_eq!(attempt.attr("kind"), Some("send"));
    assert_eq!(attempt.attr("class"), Some("processed"));
    assert_eq!(attempt.attr("http.response.status_code"), Some("201"));

    // One span per plugin call, under the phase that made it, with its digest and outcome.
    let digest = plugin_digests(&client, proxy.admin).await;
    let plugins: Vec<&Span> = trace
        .iter()
        .filter(|s| s.name.starts_with("plugin "))
        .collect();
    let under = |phase: &str| -> Vec<String> {
        let id = named(phase).span_id;
        plugins
            .iter()
            .filter(|s| s.parent == id)
            .map(|s| s.attr("plugin.name").unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        under("payment.ingress").contains(&"stripe".to_string()),
        "{plugins:#?}"
    );
    assert!(
        under("payment.comply").len() >= 3,
        "every compliance plugin: {:?}",
        under("payment.comply")
    );
    assert_eq!(under("payment.route"), ["regional-router"]);
    let egress: Vec<&&Span> = plugins
        .iter()
        .filter(|s| s.parent == attempt.span_id)
        .collect();
    assert!(
        egress.len() >= 2
            && egress
                .iter()
                .all(|s| s.attr("plugin.name") == Some("ideal")),
        "the egress dialect's calls (encode, decode) are under the attempt: {egress:#?}"
    );
    for span in &plugins {
        let name = span.attr("plugin.name").unwrap();
        assert_eq!(
            span.attr("plugin.sha256"),
            Some(digest(name).as_str()),
            "{span:#?}"
        );
        assert_eq!(span.attr("outcome"), Some("ok"), "{span:#?}");
        assert!(span.attr("plugin.role").is_some() && span.attr("sandbox_us").is_some());
    }

    // Same dialect: the home account gets the storefront's request with a traceparent naming
    // payproxy's attempt span in the same trace, and the storefront's tracestate.
    let reply = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[
                ("traceparent", &traceparent),
                ("tracestate", "vendor=opaque"),
            ],
            &form_with(eea_card("1000", "order-trace-2"), &[]),
        )
        .await;
    reply.assert_status(200);
    let sent = home.requests();
    let forwarded = sent.last().expect("the home account got the payment");
    let propagated = forwarded
        .header("traceparent")
        .expect("a traceparent")
        .to_string();
    assert_eq!(forwarded.header("tracestate"), Some("vendor=opaque"));
    let fields: Vec<&str> = propagated.split('-').collect();
    assert_eq!(fields.len(), 4, "{propagated}");
    assert_eq!(fields[1], TRACE_ID, "{propagated}");
    eventually(
        Duration::from_secs(20),
        "the forward's attempt span",
        async || {
            receiver
                .trace(TRACE_ID)
                .iter()
                .any(|s| s.name == "provider stripe-like" && s.span_id == fields[2])
        },
    )
    .await;
    let forward = receiver
        .trace(TRACE_ID)
        .into_iter()
        .find(|s| s.span_id == fields[2])
        .unwrap();
    assert_eq!(forward.attr("kind"), Some("forward"));

    // Calls payproxy does not orchestrate (customers) and transparent routes: the same.
    let plain = Recorder::start(200, "application/json", r#"{"ok":true}"#).await;
    let mut with_plain = observed_config(
        &sim,
        listen_addr,
        admin_addr,
        dir.path(),
        Some(&receiver),
        &home,
    );
    with_plain["providers"]["plain"] = json!({ "url": plain.url() });
    with_plain["routes"].as_array_mut().unwrap().insert(
        0,
        json!({ "name": "plain", "path_prefix": "/plain/", "providers": ["plain"] }),
    );
    write_config(dir.path(), &with_plain);
    let reload = client
        .send(
            http::Method::POST,
            &format!("http://{}/admin/reload", proxy.admin),
            &[],
            Bytes::new(),
        )
        .await;
    reload.assert_status(200);
    for (path, recorder) in [("/v1/customers", &home), ("/plain/ping", &plain)] {
        client
            .post_form(
                &proxy.url(path),
                &[("traceparent", &traceparent)],
                "email=a%40b.example",
            )
            .await
            .assert_status(200);
        let got = recorder.requests();
        let propagated = got
            .last()
            .and_then(|r| r.header("traceparent"))
            .unwrap_or_else(|| panic!("{path}: no traceparent"))
            .to_string();
        let fields: Vec<&str> = propagated.split('-').collect();
        assert_eq!(fields[1], TRACE_ID, "{path}: {propagated}");
        assert_ne!(
            fields[2], STOREFRONT_SPAN,
            "{path}: payproxy's own span is the parent"
        );
        let span_id = fields[2].to_string();
        eventually(Duration::from_secs(20), "the forward's span", async || {
            receiver
                .trace(TRACE_ID)
                .iter()
                .any(|s| s.span_id == span_id && s.name.starts_with("provider "))
        })
        .await;
    }

    // A DANA wallet payment, with the shopper's phone number, through every phase.
    let dana_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[(
                "traceparent",
                &format!("00-{dana_trace}-5fb397be34d26b51-01"),
            )],
            &dana_shopper("150000", "order-trace-dana"),
        )
        .await
        .assert_status(200);
    eventually(
        Duration::from_secs(20),
        "the DANA payment's attempt span",
        async || {
            receiver
                .trace(dana_trace)
                .iter()
                .any(|s| s.name == "provider dana")
        },
    )
    .await;

    // A card number in the body: refused, and in no span, event or attribute.
    let pan = "4000056655665556";
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    let reply = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[("traceparent", &format!("00-{refused_trace}-b7ad6b7169203331-01"))],
            &format!("amount=1000&currency=eur&confirm=true&payment_method_data[card][number]={pan}&metadata[phone]=%2B6281234567899"),
        )
        .await;
    reply.assert_status(400);
    eventually(
        Duration::from_secs(20),
        "the refused request's span",
        async || !receiver.trace(refused_trace).is_empty(),
    )
    .await;
    let everything: String = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{}\n{}", s.name, s.all_values))
        .collect();
    for secret in [
        pan,
        "4242424242424242",
        "6281234567899",
        "6281234567890",
        "NL91ABNA0417164300",
        "sk_test_demo",
        "demo-adyen-key",
        "collector-secret",
    ] {
        assert!(!everything.contains(secret), "{secret} in an exported span");
    }
    // The collector's own header reached it.
    let seen = receiver.headers.lock().unwrap();
    assert!(seen.iter().all(|h| h
        .get("x-collector-key")
        .is_some_and(|v| v == "collector-secret")));
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("collector-secret"));
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_decision_has_one_audit_line_and_logs_are_json_with_the_trace_id() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let home = Recorder::start(200, "application/json", INTENT).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let config = observed_config(&sim, listen.addr(), admin.addr(), dir.path(), None, &home);
    let config = write_config(dir.path(), &config);
    let log = dir.path().join("payproxy.log");
    let proxy = ChildProxy::start_logging(&config, &log, listen, admin, "info").await;
    let client = HttpClient::default();
    let url = proxy.url("/v1/payment_intents");
    let digest = plugin_digests(&client, proxy.admin).await;
    let traced = |n: u32| format!("00-{TRACE_ID}-{:016x}-01", n + 1);

    // 1. translated: iDEAL to the iDEAL acquirer.
    let ideal = ideal_shopper("NL91ABNA0417164300", "order-audit-1");
    client
        .post_form(
            &url,
            &[("idempotency-key", "audit-1"), ("traceparent", &traced(1))],
            &ideal,
        )
        .await
        .assert_status(200);
    // 2. replayed: the same key and body again, naming the provider like the first answer.
    let reply = client
        .post_form(
            &url,
            &[("idempotency-key", "audit-1"), ("traceparent", &traced(2))],
            &ideal,
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    assert_eq!(reply.provider(), Some("ideal"));
    // 2b. refused in the attempt phase (before the iDEAL breaker opens below): the iDEAL dialect refuses to encode a bad IBAN.
    client
        .post_form(
            &url,
            &[("idempotency-key", "audit-8")],
            &ideal_shopper("NL91ABNA0417164301", "order-audit-8"),
        )
        .await
        .assert_status(400);
    // 3. failed over: the iDEAL acquirer answers 503 (nothing processed), adyen takes it.
    sim.set_faults("ideal", Faults::error(503));
    let reply = client
        .post_form(
            &url,
            &[("idempotency-key", "audit-3")],
            &ideal_shopper("NL91ABNA0417164300", "order-audit-3"),
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("adyen"));
    sim.reset("ideal");
    // 4. forwarded: a card to the home account, which speaks the storefront's dialect.
    let reply = client
        .post_form(
            &url,
            &[("idempotency-key", "audit-4")],
            &form_with(eea_card("1000", "order-audit-4"), &[]),
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("stripe-like"));
    // 5. refused by compliance: over the card limit (a US card: no SCA challenge first).
    client
        .post_form(
            &url,
            &[("idempotency-key", "audit-5")],
            &form_with(card_from("US", "2000000", "order-audit-5"), &[]),
        )
        .await;
    // 6. refused before the phases: a card number.
    client
        .post_form(
            &url,
            &[],
            "amount=1000&currency=eur&payment_method_data[card][number]=4000056655665556",
        )
        .await
        .assert_status(400);
    // 7. refused at ingress: not a payment the dialect can read.
    let reply = client
        .post_form(
            &url,
            &[("idempotency-key", "audit-7")],
            "amount=ten&currency=eur&confirm=true",
        )
        .await;
    assert_eq!(reply.status.as_u16() / 100, 4, "{:?}", reply.body);

    // 9. created without confirm (payproxy's record only), 10. read back from the record.
    let created = client
        .post_form(
            &url,
            &[("idempotency-key", "audit-9")],
            "amount=2500&currency=eur",
        )
        .await;
    created.assert_status(200);
    let created_id = created.json()["id"].as_str().unwrap().to_string();
    client
        .get(&format!("{url}/{created_id}"))
        .await
        .assert_status(200);
    // 11. capture and 12. refund of the forwarded payment: follow-ups at its owner.
    client
        .post_form(
            &format!("{url}/pi_home_1/capture"),
            &[("idempotency-key", "audit-11")],
            "",
        )
        .await
        .assert_status(200);
    client
        .post_form(
            &proxy.url("/v1/refunds"),
            &[("idempotency-key", "audit-12")],
            "payment_intent=pi_home_1&amount=500",
        )
        .await
        .assert_status(200);
    // Not audited: a request without a valid storefront key is not the merchant's decision.

    let mut lines = Vec::new();
    eventually(Duration::from_secs(10), "twelve audit lines", async || {
        lines = audit_lines(&dir.path().join("audit.jsonl"));
        lines.len() >= 12
    })
    .await;
    assert_eq!(lines.len(), 12, "{lines:#?}");
    let stripe = json!({ "plugin": "stripe", "sha256": digest("stripe") });
    for line in &lines {
        assert_eq!(line["event"], "payment");
        assert_eq!(line["route"], "payments");
        assert_eq!(line["ingress"], stripe, "{line}");
        assert!(line["ts"].as_str().is_some_and(|t| t.len() >= 20), "{line}");
        let text = line.to_string();
        for secret in ["4000056655665556", "sk_test_demo", "demo-adyen-key"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    let translated = &lines[0];
    assert_eq!(translated["operation"], "authorize");
    assert_eq!(translated["decision"], "requires_action", "{translated}");
    assert_eq!(translated["status"], 200);
    assert_eq!(translated["provider"], "ideal");
    assert_eq!(translated["path"], "translated");
    assert_eq!(translated["replay"], false);
    assert_eq!(translated["idempotency"], "new");
    assert_eq!(translated["trace_id"], TRACE_ID);
    assert_eq!(translated["refusal"], Value::Null);
    assert!(
        translated["payment"]
            .as_str()
            .is_some_and(|p| p.starts_with("pi_")),
        "{translated}"
    );
    assert!(
        translated["reference"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{translated}"
    );
    let compliance = translated["compliance"].as_array().unwrap();
    assert_eq!(compliance.len(), 3, "{translated}");
    for verdict in compliance {
        assert_eq!(verdict["verdict"], "allow", "{verdict}");
        assert_eq!(verdict["sha256"], digest(verdict["name"].as_str().unwrap()));
        assert!(verdict["rule"].is_string());
    }
    assert_eq!(translated["router"]["plugin"], "regional-router");
    assert_eq!(translated["router"]["sha256"], digest("regional-router"));
    assert_eq!(translated["router"]["decision"], "ordered");
    assert_eq!(translated["router"]["order"], json!(["ideal", "adyen"]));
    assert_eq!(
        translated["attempts"],
        json!([{ "provider": "ideal", "kind": "send", "class": "processed", "status": 201 }])
    );

    let replayed = &lines[1];
    assert_eq!(replayed["decision"], "replayed");
    assert_eq!(replayed["replay"], true);
    assert_eq!(replayed["idempotency"], "replay");
    assert_eq!(replayed["status"], 200);
    assert_eq!(replayed["attempts"], json!([]));
    assert_eq!(replayed["provider"], "ideal");
    assert_eq!(replayed["trace_id"], TRACE_ID);

    let failed_over = &lines[3];
    assert_eq!(failed_over["decision"], "requires_action", "{failed_over}");
    assert_eq!(failed_over["provider"], "adyen");
    assert_eq!(failed_over["path"], "translated");
    let attempts = failed_over["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{failed_over}");
    assert_eq!(attempts[0]["provider"], "ideal");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["class"], "answered_not_processed");
    assert_eq!(attempts[1]["provider"], "adyen");
    assert_eq!(attempts[1]["class"], "processed");
    assert!(failed_over["trace_id"]
        .as_str()
        .is_some_and(|t| t.len() == 32 && t != TRACE_ID));

    let forwarded = &lines[4];
    assert_eq!(forwarded["decision"], "approved", "{forwarded}");
    assert_eq!(forwarded["provider"], "stripe-like");
    assert_eq!(forwarded["path"], "forwarded");
    assert_eq!(forwarded["payment"], "pi_home_1");
    assert_eq!(forwarded["reference"], "pi_home_1");
    assert_eq!(
        forwarded["attempts"],
        json!([{ "provider": "stripe-like", "kind": "forward", "class": "processed", "status": 200 }])
    );

    let compliance_refusal = &lines[5];
    assert_eq!(
        compliance_refusal["decision"], "refused",
        "{compliance_refusal}"
    );
    assert_eq!(compliance_refusal["refusal"]["stage"], "comply");
    assert!(compliance_refusal["status"]
        .as_u64()
        .is_some_and(|s| s >= 400));
    let denied: Vec<&Value> = compliance_refusal["compliance"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["verdict"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{compliance_refusal}");
    assert_eq!(denied[0]["name"], "limits");
    assert_eq!(denied[0]["rule"], "eur-card-max");
    assert!(compliance_refusal["refusal"]["code"].is_string());
    assert_eq!(compliance_refusal["attempts"], json!([]));
    assert_eq!(compliance_refusal["provider"], Value::Null);

    let card_refusal = &lines[6];
    assert_eq!(card_refusal["decision"], "refused");
    assert_eq!(
        card_refusal["refusal"],
        json!({ "stage": "card_data", "code": "card_number_not_accepted" })
    );
    assert_eq!(card_refusal["status"], 400);

    let ingress_refusal = &lines[7];
    assert_eq!(ingress_refusal["decision"], "refused", "{ingress_refusal}");
    assert_eq!(ingress_refusal["refusal"]["stage"], "ingress");
    assert_eq!(ingress_refusal["operation"], Value::Null);

    let attempt_refusal = &lines[2];
    assert_eq!(attempt_refusal["decision"], "refused", "{attempt_refusal}");
    assert_eq!(
        attempt_refusal["refusal"],
        json!({ "stage": "attempt", "code": "invalid_iban" })
    );
    assert_eq!(attempt_refusal["status"], 400);
    assert_eq!(attempt_refusal["router"]["decision"], "ordered");
    assert_eq!(attempt_refusal["attempts"], json!([]));

    let created_line = &lines[8];
    assert_eq!(created_line["decision"], "created", "{created_line}");
    assert_eq!(created_line["payment"], created_id.as_str());
    assert_eq!(created_line["provider"], Value::Null);
    assert_eq!(created_line["attempts"], json!([]));
    let read = &lines[9];
    assert_eq!(read["operation"], "status");
    assert_eq!(read["decision"], "recorded", "{read}");
    assert_eq!(read["payment"], created_id.as_str());

    let capture = &lines[10];
    assert_eq!(capture["operation"], "capture");
    assert_eq!(capture["payment"], "pi_home_1", "{capture}");
    assert_eq!(capture["provider"], "stripe-like");
    assert_eq!(capture["path"], "forwarded");
    assert_eq!(capture["attempts"][0]["kind"], "forward");
    let refund = &lines[11];
    assert_eq!(refund["operation"], "refund");
    assert_eq!(
        refund["payment"], "pi_home_1",
        "the refunded payment: {refund}"
    );
    assert_eq!(refund["provider"], "stripe-like");
    assert_eq!(
        refund["reference"], "pi_home_1",
        "the payment's reference: {refund}"
    );
    assert_eq!(refund["path"], "forwarded");

    // JSON logs: every line is an object; the failover's warning carries its trace id.
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect();
    assert!(logged
        .iter()
        .all(|l| l["level"].is_string() && l["ts"].is_string()));
    let warning = logged
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("trying the next candidate"))
        })
        .unwrap_or_else(|| panic!("no failover warning in {text}"));
    assert_eq!(warning["trace_id"], failed_over["trace_id"], "{warning}");
    assert_eq!(warning["provider"], "ideal");
    drop(proxy);
}
