//! The faults that leave money in doubt: the provider charges, then the client hears
//! nothing in time (`timeout_after_charge_ms`) or gets a truncated answer
//! (`reset_mid_response`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use provider_sim::{Faults, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CREATE: &str = "amount=1234&currency=eur&metadata[order_id]=o-1";

fn create_request(base: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{base}/v1/payment_intents"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("idempotency-key", "k-1")
        .body(Full::new(Bytes::from_static(CREATE.as_bytes())))
        .expect("request")
}

#[tokio::test]
async fn timeout_after_charge_records_the_charge_then_answers_late() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = sim.base_url("p");

    sim.set_faults("p", Faults::timeout_after_charge(10_000));
    let attempt = tokio::time::timeout(
        Duration::from_millis(300),
        client.request(create_request(&base)),
    )
    .await;
    assert!(attempt.is_err(), "the client should have timed out");
    // The charge exists although the client never heard of it.
    let ledger = sim.ledger("p");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].amount, 1234);
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("o-1"));
    assert_eq!(ledger[0].idempotency_key.as_deref(), Some("k-1"));

    // A patient client gets the (stored, replayed) answer after the delay; no second charge.
    sim.set_faults("p", Faults::timeout_after_charge(150));
    let started = std::time::Instant::now();
    let response = client
        .request(create_request(&base))
        .await
        .expect("answered");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(sim.ledger("p").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_mid_response_sends_the_head_and_half_the_body() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    sim.set_faults("p", Faults::reset_mid_response());

    let mut raw = tokio::net::TcpStream::connect(sim.addr("p"))
        .await
        .expect("connect");
    let request = format!(
        "POST /v1/payment_intents HTTP/1.1\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\n\r\n{CREATE}",
        CREATE.len()
    );
    raw.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    // The server closes the connection: read to the end (or to a reset).
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("closed");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .parse()
        .expect("number");
    assert!(
        !body.is_empty() && body.len() < length,
        "{} of {length} bytes: {body}",
        body.len()
    );
    assert_eq!(
        sim.ledger("p").len(),
        1,
        "the charge was recorded before the reset"
    );

    // Through an HTTP client: the head arrives, reading the body fails.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(create_request(&sim.base_url("p")))
        .await
        .expect("head arrives");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "the body must fail"
    );
    assert_eq!(sim.ledger("p").len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_mid_response_over_h2_resets_the_stream() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    sim.set_faults("p", Faults::reset_mid_response());
    let stream = tokio::net::TcpStream::connect(sim.addr("p"))
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let response = sender
        .send_request(create_request("http://p"))
        .await
        .expect("head arrives");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "the stream must be reset"
    );
    assert_eq!(sim.ledger("p").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn after_charge_faults_are_set_through_the_control_api_and_skip_failed_requests() {
    let sim = Simulator::start(&["p"]).await.expect("start");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = sim.base_url("p");
    let set = Request::post(format!("{base}/__sim/faults"))
        .body(Full::new(Bytes::from_static(
            br#"{"reset_mid_response":true,"error_status":503}"#,
        )))
        .expect("request");
    let answer = client.request(set).await.expect("answered");
    let body = answer
        .into_body()
        .collect()
        .await
        .expect("control answers are whole")
        .to_bytes();
    let faults: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(faults["reset_mid_response"], true);
    assert_eq!(faults["timeout_after_charge_ms"], 0);
    // An injected error is not processed: answered whole, nothing recorded.
    let failed = client
        .request(create_request(&base))
        .await
        .expect("answered");
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.into_body().collect().await.is_ok());
    assert!(sim.ledger("p").is_empty());
    sim.shutdown().await;
}
