//! Request limits, malformed input, upstream failures and forwarding transparency, end to
//! end: each test checks the status and JSON error code the storefront sees and, where the
//! request must not be forwarded, that the simulated provider received nothing.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use payproxy_e2e::chaos::{eventually, Gate};
use payproxy_e2e::{base_config, unused_addr, Env, Faults, HttpClient, Reply, Simulator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One simulated provider `a` behind a catch-all streaming route, with `limits` merged in.
async fn start(limits: Value) -> (Simulator, Env) {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["a"]);
    config["limits"] = limits;
    let env = Env::start(config).await;
    (sim, env)
}

fn error_code(reply: &Reply) -> String {
    reply.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What came back on a raw connection.
#[derive(Debug)]
enum Raw {
    /// A complete response: status line and headers as text, and the body.
    Response { head: String, body: Vec<u8> },
    /// The connection closed or was reset before a complete response; what arrived.
    Closed(Vec<u8>),
}

impl Raw {
    fn status(&self) -> Option<u16> {
        match self {
            Raw::Response { head, .. } => head.split(' ').nth(1)?.parse().ok(),
            Raw::Closed(_) => None,
        }
    }

    fn json(&self) -> Value {
        match self {
            Raw::Response { body, .. } => serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body))),
            Raw::Closed(bytes) => {
                panic!("no complete response: {:?}", String::from_utf8_lossy(bytes))
            }
        }
    }
}

/// A response with a Content-Length body, once all of it is in `buf`.
fn complete_response(buf: &[u8]) -> Option<Raw> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| {
            value
                .trim()
                .parse::<usize>()
                .expect("numeric content-length")
        })
        .unwrap_or(0);
    (buf.len() >= end + length).then(|| Raw::Response {
        head,
        body: buf[end..end + length].to_vec(),
    })
}

/// Send `head` then each of `body` as its own write on a new connection to `addr`, reading
/// at the same time (the proxy may answer before the body is sent), until a complete
/// response, a close or a reset. Write errors end the writing quietly: a proxy that refuses
/// a body may close while the client is still sending.
async fn raw_exchange(addr: SocketAddr, head: String, body: Vec<Vec<u8>>) -> Raw {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Keep the write half open: closing it would end the request early.
        std::future::pending::<()>().await;
    });
    let reading = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(response) = complete_response(&buf) {
                return response;
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return Raw::Closed(buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the proxy answers or closes within 10 s");
    writing.abort();
    raw
}

/// `data` as HTTP/1.1 chunks of `size` bytes; `finish` adds the terminating chunk.
fn chunked(data: &[u8], size: usize, finish: bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = data
        .chunks(size)
        .map(|c| {
            let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
            frame.extend_from_slice(c);
            frame.extend_from_slice(b"\r\n");
            frame
        })
        .collect();
    if finish {
        out.push(b"0\r\n\r\n".to_vec());
    }
    out
}

const BODY_LIMIT: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_413_before_anything_is_forwarded() {
    let (sim, env) = start(json!({ "max_body_bytes": BODY_LIMIT })).await;
    // Only the head: the proxy must decide on Content-Length alone, without reading a byte.
    let head = format!(
        "POST /v1/payment_intents HTTP/1.1\r\nhost: shop.test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        BODY_LIMIT + 1
    );
    let raw = raw_exchange(env.proxy.listen_addrs[0], head, vec![]).await;
    assert_eq!(raw.status(), Some(413), "{raw:?}");
    assert_eq!(raw.json()["error"]["code"], "body_too_large");
    assert_eq!(sim.request_count("a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_on_a_plugin_body_route_is_413() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["a"]);
    config["limits"] = json!({ "max_body_bytes": BODY_LIMIT });
    config["routes"][0]["plugin_body"] = json!(true);
    let env = Env::start(config).await;
    // 16 KiB past the limit and no terminating chunk: the proxy must stop at the limit
    // instead of waiting for the end, and everything sent has been read when it answers
    // (so its close is a clean FIN, not a reset that could swallow the answer).
    let body = vec![b'x'; BODY_LIMIT as usize + 16 * 1024];
    let head = "POST /v1/payment_intents HTTP/1.1\r\nhost: shop.test\r\ntransfer-encoding: chunked\r\n\r\n";
    let raw = raw_exchange(
        env.proxy.listen_addrs[0],
        head.into(),
        chunked(&body, 8 * 1024, false),
    )
    .await;
    assert_eq!(raw.status(), Some(413), "{raw:?}");
    assert_eq!(raw.json()["error"]["code"], "body_too_large");
    assert_eq!(sim.request_count("a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_on_a_streaming_route_is_cut_off() {
    // The provider sits behind a gate that counts the bytes reaching it.
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let gate = Gate::start(sim.addr("a")).await;
    let mut config = base_config(&sim, &["a"]);
    config["providers"]["a"]["url"] = gate.url().into();
    config["limits"] = json!({ "max_body_bytes": BODY_LIMIT });
    // Streaming needs a route that does not read the body for card numbers first.
    config["routes"][0]["card_data"] = json!("allow");
    let env = Env::start(config).await;
    // A streaming route forwards the body as it arrives, so the provider has already seen
    // the head (and up to the limit) when the limit trips. The proxy then aborts the upstream
    // request — the provider never gets the end of the body and never answers — and answers
    // 413 JSON. That answer races the client still sending: if the proxy closes first, the
    // client sees the connection closed or reset instead, which alone proves nothing; so the
    // provider's side is checked too: no more than the limit of the 1 MiB sent reached it.
    let total = 16 * BODY_LIMIT as usize;
    let body = vec![b'y'; total];
    let head = "POST /echo HTTP/1.1\r\nhost: shop.test\r\ntransfer-encoding: chunked\r\n\r\n";
    let raw = raw_exchange(
        env.proxy.listen_addrs[0],
        head.into(),
        chunked(&body, 16 * 1024, true),
    )
    .await;
    // At most the limit reaches the provider, plus the request head and chunk framing (a
    // few hundred bytes): a sixteenth of what was sent. Everything that ever will has once
    // the proxy hung up on it; more than that fails at once.
    let most = BODY_LIMIT + 4096;
    eventually(
        Duration::from_secs(10),
        "the proxy streamed to the provider, then closed that connection",
        async || gate.connections() == (1, 0) || gate.bytes_forwarded() > most,
    )
    .await;
    let forwarded = gate.bytes_forwarded();
    assert!(
        forwarded <= most,
        "the provider received {forwarded} bytes of a {total}-byte body, more than the \
         {BODY_LIMIT}-byte limit lets through ({most} with head and framing); the client \
         got status {:?}",
        raw.status()
    );
    match &raw {
        Raw::Response { .. } => {
            assert_eq!(raw.status(), Some(413), "{raw:?}");
            assert_eq!(raw.json()["error"]["code"], "body_too_large");
        }
        Raw::Closed(partial) => assert!(
            !partial.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(partial)
        ),
    }
    // A consumed streamed body is never replayed: at most the one attempt.
    assert!(sim.request_count("a") <= 1);
    eprintln!("streamed over the limit: {forwarded} of {total} body bytes reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let (sim, env) = start(json!({ "max_headers": 10 })).await;
    let names: Vec<String> = (0..12).map(|i| format!("x-extra-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let reply = HttpClient::default()
        .send(Method::GET, &env.url("/echo"), &headers, "")
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(&reply), "too_many_headers");
    assert_eq!(sim.request_count("a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bytes_over_the_limit_is_431() {
    let (sim, env) = start(json!({ "max_header_bytes": 1024 })).await;
    let big = "a".repeat(1500);
    let reply = HttpClient::default()
        .send(
            Method::GET,
            &env.url("/echo"),
            &[("x-big", big.as_str())],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(&reply), "headers_too_large");
    assert_eq!(sim.request_count("a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let (sim, env) = start(json!({})).await;
    let addr = env.proxy.listen_addrs[0];
    for garbage in [
        "THIS IS NOT HTTP\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: shop.test\r\nbad header without a colon\r\n\r\n",
    ] {
        let raw = raw_exchange(addr, garbage.into(), vec![]).await;
        let bytes = match &raw {
            Raw::Response { head, .. } => head.as_bytes().to_vec(),
            Raw::Closed(bytes) => bytes.clone(),
        };
        assert!(bytes.starts_with(b"HTTP/1.1 400"), "{garbage:?}: {raw:?}");
    }
    assert_eq!(sim.request_count("a"), 0);
    let reply = HttpClient::default().get(&env.url("/echo")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_route_matches_is_404() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["a"]);
    config["routes"][0]["path_prefix"] = json!("/v1");
    let env = Env::start(config).await;
    let reply = HttpClient::default().get(&env.url("/other")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&reply), "no_route");
    assert_eq!(sim.request_count("a"), 0);
}

/// The values of header `name` in the request the simulator's `/echo` saw, in order.
fn echoed(echo: &serde_json::Value, name: &str) -> Vec<String> {
    let headers: Vec<(String, String)> =
        serde_json::from_value(echo["headers"].clone()).expect("header pairs");
    headers
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_502_naming_it() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["a"]);
    config["providers"]["down"] = json!({ "url": format!("http://{}", unused_addr()) });
    config["routes"][0]["providers"] = json!(["down"]);
    let env = Env::start(config).await;
    let reply = HttpClient::default().get(&env.url("/echo")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "provider_unreachable");
    assert_eq!(error["provider"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_reached_a_down_provider_fails_over_to_the_next() {
    let sim = Simulator::start(&["b"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["b"]);
    config["providers"]["down"] = json!({ "url": format!("http://{}", unused_addr()) });
    config["routes"][0]["providers"] = json!(["down", "b"]);
    let env = Env::start(config).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = HttpClient::default()
        .send(
            Method::GET,
            &env.url("/echo"),
            &[
                ("x-forwarded-for", "10.9.9.9"),
                ("traceparent", traceparent),
                ("keep-alive", "timeout=5"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.provider(), Some("b"));
    let echo = reply.json();
    assert_eq!(echo["provider"], "b");
    assert_eq!(sim.request_count("b"), 1);
    // The second attempt's head is the storefront's, prepared once: not the first
    // attempt's, prepared again.
    let get = |name: &str| echoed(&echo, name);
    assert_eq!(get("x-forwarded-for"), ["10.9.9.9, 127.0.0.1"]);
    assert_eq!(get("traceparent"), [traceparent]);
    assert!(get("keep-alive").is_empty(), "{echo}");
    assert_eq!(get("x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_its_timeout_is_504_naming_it() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = base_config(&sim, &["a"]);
    config["providers"]["a"]["timeout_ms"] = json!(200);
    let env = Env::start(config).await;
    sim.set_faults("a", Faults::latency(2_000));
    let reply = HttpClient::default().get(&env.url("/echo")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "provider_timeout");
    assert_eq!(error["provider"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_overall_timeout_is_504() {
    let (sim, env) = start(json!({ "request_timeout_ms": 200 })).await;
    sim.set_faults("a", Faults::latency(2_000));
    let reply = HttpClient::default().get(&env.url("/echo")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&reply), "request_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Checked for card numbers on the way (the route reads it whole), then sent on unchanged.
async fn a_5_mib_body_passes_through_intact() {
    let (_sim, env) = start(json!({ "max_body_bytes": 8 << 20 })).await;
    let body: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&body));
    let reply = HttpClient::default()
        .send(
            Method::POST,
            &env.url("/echo"),
            &[("content-type", "application/octet-stream")],
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    assert_eq!(echo["body_len"], 5_242_880);
    assert_eq!(echo["body_sha256"], sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_drops_hop_by_hop_headers_and_adds_forwarded_ones() {
    let (sim, env) = start(json!({})).await;
    let reply = HttpClient::default()
        .send(
            Method::GET,
            &env.url("/echo?x=1"),
            &[
                ("connection", "keep-alive, x-drop-me"),
                ("x-drop-me", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "secret"),
                ("x-forwarded-for", "10.9.9.9"),
                ("x-keep", "yes"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "x=1");
    let get = |name: &str| echoed(&echo, name);
    for gone in [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "x-drop-me",
        "te",
        "upgrade",
    ] {
        assert!(get(gone).is_empty(), "{gone} was forwarded: {echo}");
    }
    assert_eq!(get("host"), [sim.addr("a").to_string().as_str()]);
    assert_eq!(get("x-forwarded-for"), ["10.9.9.9, 127.0.0.1"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-keep"), ["yes"]);
}
