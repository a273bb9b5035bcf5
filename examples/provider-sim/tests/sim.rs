//! End-to-end tests of the simulator over real HTTP: Stripe routes, idempotency, echo,
//! faults, the control API and the binary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use provider_sim::{Faults, Simulator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer, with the body parsed as JSON.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    fn new(sim: &Simulator, name: &str) -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.base_url(name),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("valid request");
        let response = self.client.request(request).await.expect("answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes).expect("JSON body");
        Answer {
            status: parts.status,
            headers: parts.headers,
            json,
        }
    }

    async fn form(&self, path: &str, body: &str) -> Answer {
        self.keyed_form(path, None, body).await
    }

    async fn keyed_form(&self, path: &str, key: Option<&str>, body: &str) -> Answer {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        self.send(Method::POST, path, &headers, body.to_owned())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }
}

fn error_code(answer: &Answer) -> &str {
    answer.json["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn create_retrieve_capture_refund() {
    let sim = Simulator::start(&["sim-eu"]).await.expect("start");
    let http = Http::new(&sim, "sim-eu");

    let created = http
        .form(
            "/v1/payment_intents",
            "amount=1000&currency=EUR&capture_method=manual&metadata[order_id]=A1\
             &metadata%5Bnote%5D=hi&payment_method_types[]=card",
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.headers["x-sim-provider"], "sim-eu");
    assert_eq!(created.json["id"], "pi_simeu_1");
    assert_eq!(created.json["object"], "payment_intent");
    assert_eq!(created.json["currency"], "eur");
    assert_eq!(created.json["status"], "requires_capture");
    assert_eq!(
        created.json["metadata"],
        json!({"order_id": "A1", "note": "hi"})
    );
    assert_eq!(created.json["provider"], "sim-eu");

    let fetched = http.get("/v1/payment_intents/pi_simeu_1").await;
    assert_eq!(fetched.json, created.json);

    let refund_early = http.form("/v1/refunds", "payment_intent=pi_simeu_1").await;
    assert_eq!(error_code(&refund_early), "payment_intent_unexpected_state");

    let captured = http
        .form("/v1/payment_intents/pi_simeu_1/capture", "")
        .await;
    assert_eq!(captured.status, StatusCode::OK);
    assert_eq!(captured.json["status"], "succeeded");
    let again = http
        .form("/v1/payment_intents/pi_simeu_1/capture", "")
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    let partial = http
        .form("/v1/refunds", "payment_intent=pi_simeu_1&amount=300")
        .await;
    assert_eq!(partial.status, StatusCode::OK);
    assert_eq!(
        partial.json,
        json!({"id": "re_simeu_1", "object": "refund", "payment_intent": "pi_simeu_1",
               "amount": 300, "currency": "eur", "status": "succeeded", "provider": "sim-eu"})
    );
    let too_much = http
        .form("/v1/refunds", "payment_intent=pi_simeu_1&amount=701")
        .await;
    assert_eq!(error_code(&too_much), "amount_too_large");
    let rest = http.form("/v1/refunds", "payment_intent=pi_simeu_1").await;
    assert_eq!(rest.json["amount"], 700);

    let ledger = sim.ledger("sim-eu");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].status, "succeeded");
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("A1"));
    assert_eq!(ledger[0].amount, 1000);
    assert_eq!(sim.refunds("sim-eu").len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn intent_states_and_missing_objects() {
    let sim = Simulator::start(&["sim_us.1"]).await.expect("start");
    let http = Http::new(&sim, "sim_us.1");

    let paid = http
        .form("/v1/payment_intents", "amount=5&currency=usd")
        .await;
    assert_eq!(paid.json["id"], "pi_simus1_1");
    assert_eq!(paid.json["status"], "succeeded");
    let cancel = http
        .form("/v1/payment_intents/pi_simus1_1/cancel", "")
        .await;
    assert_eq!(error_code(&cancel), "payment_intent_unexpected_state");

    let pending = http
        .form("/v1/payment_intents", "amount=5&currency=usd&confirm=false")
        .await;
    assert_eq!(pending.json["status"], "requires_confirmation");
    let confirmed = http
        .form("/v1/payment_intents/pi_simus1_2/confirm", "")
        .await;
    assert_eq!(confirmed.json["status"], "succeeded");

    let unknown = http.get("/v1/payment_intents/pi_nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json["error"]["type"], "invalid_request_error");
    assert_eq!(error_code(&unknown), "resource_missing");
    let refund = http.form("/v1/refunds", "payment_intent=pi_nope").await;
    assert_eq!(refund.status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_errors_use_stripe_shape() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let http = Http::new(&sim, "p");
    let cases = [
        ("currency=eur", "parameter_missing", "amount"),
        (
            "amount=abc&currency=eur",
            "parameter_invalid_integer",
            "amount",
        ),
        ("amount=0&currency=eur", "amount_too_small", "amount"),
        ("amount=10", "parameter_missing", "currency"),
    ];
    for (body, code, param) in cases {
        let answer = http.form("/v1/payment_intents", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            answer.json["error"]["type"], "invalid_request_error",
            "{body}"
        );
        assert_eq!(error_code(&answer), code, "{body}");
        assert_eq!(answer.json["error"]["param"], param, "{body}");
    }
    let currency = http
        .form("/v1/payment_intents", "amount=10&currency=euro")
        .await;
    assert_eq!(currency.status, StatusCode::BAD_REQUEST);
    assert_eq!(currency.json["error"]["param"], "currency");
    let refund = http.form("/v1/refunds", "amount=1").await;
    assert_eq!(error_code(&refund), "parameter_missing");
    assert!(sim.ledger("p").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn idempotency_replays_and_refuses_mismatch() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let http = Http::new(&sim, "p");
    let body = "amount=250&currency=eur&metadata[merchant_reference]=M-9";

    // A failed attempt is not stored: the key stays usable.
    let failed = http
        .keyed_form("/v1/payment_intents", Some("k1"), "amount=250")
        .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);

    let first = http
        .keyed_form("/v1/payment_intents", Some("k1"), body)
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let replay = http
        .keyed_form("/v1/payment_intents", Some("k1"), body)
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["x-sim-provider"], "p");
    assert_eq!(replay.json, first.json);

    let mismatch = http
        .keyed_form("/v1/payment_intents", Some("k1"), "amount=251&currency=eur")
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(mismatch.json["error"]["type"], "idempotency_error");

    let other = http
        .keyed_form("/v1/payment_intents", Some("k2"), body)
        .await;
    assert_ne!(other.json["id"], first.json["id"]);

    let ledger = sim.ledger("p");
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].idempotency_key.as_deref(), Some("k1"));
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("M-9"));
    assert_eq!(sim.request_count("p"), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_describes_large_bodies_and_headers() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let http = Http::new(&sim, "p");
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    let answer = http
        .send(
            Method::PUT,
            "/some/path?x=1&y=%20",
            &[
                ("x-custom", "one"),
                ("x-custom", "two"),
                ("authorization", "Bearer t"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-sim-provider"], "p");
    let echo = &answer.json;
    assert_eq!(echo["provider"], "p");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/some/path");
    assert_eq!(echo["query"], "x=1&y=%20");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], digest);
    let headers = echo["headers"].as_array().expect("headers array");
    let custom: Vec<&Value> = headers
        .iter()
        .filter(|h| h[0] == "x-custom")
        .map(|h| &h[1])
        .collect();
    assert_eq!(custom, vec!["one", "two"]);
    assert!(headers
        .iter()
        .any(|h| h[0] == "authorization" && h[1] == "Bearer t"));
    assert_eq!(sim.request_count("p"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_over_h2c() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!("{}/echo", sim.base_url("p")))
        .body(Full::new(Bytes::from_static(b"abc")))
        .expect("request");
    let response = client.request(request).await.expect("answered");
    assert_eq!(response.headers()["x-sim-provider"], "p");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let echo: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["body_len"], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_errors_and_latency() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let http = Http::new(&sim, "p");

    sim.set_faults("p", Faults::error(503));
    let failed = http
        .form("/v1/payment_intents", "amount=1&currency=eur")
        .await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.headers["x-sim-provider"], "p");
    assert_eq!(
        failed.json,
        json!({"error": {"type": "api_error", "message": "simulated failure"}})
    );
    assert!(sim.ledger("p").is_empty());
    // The control API is exempt from faults and not counted.
    assert_eq!(http.get("/__sim/health").await.json, json!({"ok": true}));
    assert_eq!(sim.request_count("p"), 1);

    sim.set_faults(
        "p",
        Faults {
            error_rate: 0.5,
            ..Faults::default()
        },
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http.get("/echo").await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 500, 200, 500]);

    sim.set_faults("p", Faults::latency(150));
    let started = Instant::now();
    assert_eq!(http.get("/echo").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    sim.shutdown().await;
}

#[tokio::test]
async fn outage_drops_new_and_open_connections_without_answer() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let addr = sim.addr("p");

    // An open keep-alive connection: the first request is answered, then the outage starts.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let echo = || {
        Request::get("/echo")
            .header("host", "p")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let first = sender.send_request(echo()).await.expect("answered");
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.expect("body");

    // Ready first: a request sent before the connection task has taken the first answer's
    // end fails at once ("connection was not ready"), which would pass without an outage.
    sender.ready().await.expect("the connection is ready again");
    sim.set_faults("p", Faults::outage());
    assert!(sender.send_request(echo()).await.is_err());

    // A new connection is accepted and closed without a single byte of answer.
    let mut raw = tokio::net::TcpStream::connect(addr)
        .await
        .expect("accepted");
    let _ = raw
        .write_all(b"GET /echo HTTP/1.1\r\nhost: p\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = raw.read_to_end(&mut answer).await;
    assert!(
        read.is_err() || answer.is_empty(),
        "got an answer: {answer:?}"
    );
    assert_eq!(sim.request_count("p"), 1);
    assert!(sim.ledger("p").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_over_http() {
    let sim = Simulator::start(&["a", "b"]).await.expect("start");
    let a = Http::new(&sim, "a");
    let b = Http::new(&sim, "b");
    assert_eq!(
        a.form("/v1/payment_intents", "amount=7&currency=gbp")
            .await
            .status,
        StatusCode::OK
    );

    let ledger = a.get("/__sim/ledger").await;
    assert_eq!(ledger.json[0]["id"], "pi_a_1");
    assert_eq!(ledger.json[0]["amount"], 7);
    assert_eq!(b.get("/__sim/ledger").await.json, json!([]));

    let faults = a
        .send(
            Method::POST,
            "/__sim/faults",
            &[],
            r#"{"error_status":502}"#,
        )
        .await;
    assert_eq!(faults.status, StatusCode::OK);
    assert_eq!(a.get("/x").await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(b.get("/x").await.status, StatusCode::OK);
    let typo = a
        .send(Method::POST, "/__sim/faults", &[], r#"{"outgae":true}"#)
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);

    let reset = a
        .send(Method::POST, "/__sim/reset", &[], Bytes::new())
        .await;
    assert_eq!(reset.json, json!({"ok": true}));
    assert!(sim.ledger("a").is_empty());
    assert_eq!(sim.request_count("a"), 0);
    assert_eq!(a.get("/x").await.status, StatusCode::OK);
    assert_eq!(a.get("/__sim/nope").await.status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_listeners_and_names_must_be_unique() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let addr = sim.addr("p");
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let loopback = "127.0.0.1:0".parse().expect("addr");
    let twice = [("p".to_owned(), loopback), ("p".to_owned(), loopback)];
    assert!(Simulator::start_on(&twice).await.is_err());
}

/// Kills the child process when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_ready_line() {
    use std::io::BufRead;

    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_provider-sim"))
            .args([
                "--provider",
                "one=127.0.0.1:0",
                "--provider",
                "two=127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn provider-sim"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("reader task")
    .expect("ready line");
    let rest = line
        .trim()
        .strip_prefix("provider-sim ready: ")
        .expect("prefix");
    let entries: Vec<&str> = rest.split(' ').collect();
    assert_eq!(entries.len(), 2, "{line}");
    let (name, addr) = entries[1].split_once('=').expect("NAME=ADDR");
    assert_eq!(name, "two");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("listening");
    stream
        .write_all(b"GET /__sim/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-sim-provider: two"), "{answer}");
}
