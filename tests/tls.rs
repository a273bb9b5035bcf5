//! TLS end to end: storefronts over HTTPS (HTTP/1.1 and HTTP/2 by ALPN), providers over
//! HTTPS with an extra CA, and listeners whose certificate cannot be used.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use payproxy_e2e::chaos::{eventually, status_health};
use payproxy_e2e::{base_config, write_config, Env, HttpClient, Reply, Simulator, TestPki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A rustls client config trusting only the CA certificate in `ca_file`.
fn trusting(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).unwrap();
    let (added, ignored) =
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).map(|c| c.unwrap()));
    assert_eq!(
        (added, ignored),
        (1, 0),
        "the test CA is one usable certificate"
    );
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS-only client offering HTTP/1.1 by ALPN.
fn h1_client(tls: rustls::ClientConfig) -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// An HTTPS-only client speaking HTTP/2 only (ALPN `h2`).
fn h2_client(tls: rustls::ClientConfig) -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// GET `url`; transport errors (handshake included) come back as `Err` with their debug text.
async fn https_get(client: &HttpsClient, url: &str) -> Result<(Version, Reply), String> {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let fut = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((
            parts.version,
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            },
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The value of header `name` as the simulator's echo saw it (`headers` is a list of pairs).
fn echoed_header(echo: &Value, name: &str) -> Option<String> {
    echo["headers"]
        .as_array()
        .expect("echo lists headers")
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str().map(str::to_string))
}

/// `base_config` with its listener terminating TLS with the test certificate.
fn tls_config(sim: &Simulator, providers: &[&str], pki: &TestPki) -> Value {
    let mut config = base_config(sim, providers);
    config["listeners"] =
        json!([{ "addr": "127.0.0.1:0", "tls": { "cert": pki.cert, "key": pki.key } }]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_https_over_http1_and_http2() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    let env = Env::start(tls_config(&sim, &["a"], &pki)).await;
    let port = env.proxy.listen_addrs[0].port();
    let url = format!("https://localhost:{port}/tls/echo");

    for (client, version) in [
        (h1_client(trusting(&pki.ca_cert)), Version::HTTP_11),
        (h2_client(trusting(&pki.ca_cert)), Version::HTTP_2),
    ] {
        let (got_version, reply) = https_get(&client, &url)
            .await
            .expect("HTTPS request completes");
        assert_eq!(reply.status, StatusCode::OK, "{version:?}: {reply:?}");
        assert_eq!(got_version, version, "negotiated protocol");
        assert_eq!(reply.provider(), Some("a"));
        let echo = reply.json();
        assert_eq!(echo["path"], "/tls/echo");
        assert_eq!(
            echoed_header(&echo, "x-forwarded-proto").as_deref(),
            Some("https"),
            "{version:?}"
        );
    }
    assert_eq!(sim.request_count("a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_fails_the_handshake_and_the_listener_keeps_serving() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    // A client with a real trust store that lacks our CA: another CA of its own.
    let other_certs = tempfile::tempdir().unwrap();
    let other = TestPki::generate(other_certs.path());
    let env = Env::start(tls_config(&sim, &["a"], &pki)).await;
    let url = format!(
        "https://localhost:{}/tls/echo",
        env.proxy.listen_addrs[0].port()
    );

    let error = https_get(&h1_client(trusting(&other.ca_cert)), &url)
        .await
        .expect_err("a client that does not trust the CA must not get an answer");
    assert!(
        error.contains("InvalidCertificate"),
        "the handshake fails on the certificate: {error}"
    );
    assert_eq!(sim.request_count("a"), 0, "nothing was forwarded");

    let (_, reply) = https_get(&h1_client(trusting(&pki.ca_cert)), &url)
        .await
        .expect("a trusting client is still served");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.provider(), Some("a"));
    assert_eq!(sim.request_count("a"), 1);
}

/// Proxy B terminates TLS in front of the simulator; proxy A reaches B as provider `b`
/// at `https://localhost:PORT`, trusting the test CA through `ca_file` when given.
fn chained_config(sim: &Simulator, b: &Env, ca_file: Option<&Path>) -> Value {
    let mut config = base_config(sim, &[]);
    let mut provider =
        json!({ "url": format!("https://localhost:{}", b.proxy.listen_addrs[0].port()) });
    if let Some(ca) = ca_file {
        provider["ca_file"] = json!(ca);
    }
    config["providers"] = json!({ "b": provider });
    config["routes"] = json!([{ "name": "all", "path_prefix": "/", "providers": ["b"] }]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_over_https_with_extra_ca() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    let b = Env::start(tls_config(&sim, &["a"], &pki)).await;
    let a = Env::start(chained_config(&sim, &b, Some(&pki.ca_cert))).await;

    let reply = HttpClient::default().get(&a.url("/through/b")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.provider(), Some("b"), "A names its own provider");
    let echo = reply.json();
    assert_eq!(echo["provider"], "a", "the simulator answered");
    assert_eq!(echo["path"], "/through/b");
    // B saw A's request arrive over TLS.
    assert_eq!(
        echoed_header(&echo, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(sim.request_count("a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_with_untrusted_certificate_is_unreachable() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    let b = Env::start(tls_config(&sim, &["a"], &pki)).await;
    // No ca_file: only the webpki roots, which do not include the test CA.
    let a = Env::start(chained_config(&sim, &b, None)).await;

    let reply = HttpClient::default().get(&a.url("/through/b")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "provider_error");
    assert_eq!(error["code"], "provider_unreachable");
    assert_eq!(error["provider"], "b");
    assert_eq!(reply.provider(), None, "no provider answered");
    assert_eq!(
        sim.request_count("a"),
        0,
        "nothing got past the failed handshake"
    );
}

/// Active health checks trust a provider's extra CA exactly as its requests do. Without the
/// CA every check fails the handshake and the breaker opens with no traffic at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_trust_the_provider_extra_ca() {
    let client = HttpClient::default();
    for trust_ca in [true, false] {
        // A simulator and B of its own per case: nothing from the other case can count here.
        let sim = Simulator::start(&["a"]).await.unwrap();
        let certs = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(certs.path());
        let b = Env::start(tls_config(&sim, &["a"], &pki)).await;
        let mut config = chained_config(&sim, &b, trust_ca.then_some(pki.ca_cert.as_path()));
        config["providers"]["b"]["health_check"] =
            json!({ "path": "/health", "interval_ms": 20, "timeout_ms": 1000 });
        config["breaker"] = json!({ "consecutive_failures": 3 });
        let a = Env::start(config).await;
        let admin = a.proxy.admin_addr;

        if trust_ca {
            eventually(Duration::from_secs(10), "three checks recorded", || async {
                status_health(&client, admin, "b").await["samples"].as_u64() >= Some(3)
            })
            .await;
            let health = status_health(&client, admin, "b").await;
            assert_eq!(health["success_rate"], 1.0, "{health}");
            assert_eq!(health["breaker"], "closed", "{health}");
            // The checks went through B to the simulator.
            assert!(sim.request_count("a") >= 3);
        } else {
            eventually(Duration::from_secs(10), "the breaker opens", || async {
                status_health(&client, admin, "b").await["breaker"] == "open"
            })
            .await;
            let health = status_health(&client, admin, "b").await;
            assert_eq!(health["success_rate"], 0.0, "{health}");
            assert_eq!(
                sim.request_count("a"),
                0,
                "nothing got past the failed handshakes"
            );
        }
        a.proxy.shutdown().await;
    }
}

/// Write `config` to a fresh dir and start the proxy, expecting it to refuse.
async fn start_error(config: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), config);
    match payproxy::server::start(&path).await {
        Ok(_) => panic!("the proxy started with an unusable listener certificate"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_with_unusable_certificate_does_not_start() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    let other_certs = tempfile::tempdir().unwrap();
    let other = TestPki::generate(other_certs.path());

    let missing_cert = certs.path().join("missing-cert.pem");
    let mut config = tls_config(&sim, &["a"], &pki);
    config["listeners"][0]["tls"]["cert"] = json!(missing_cert);
    let message = start_error(&config).await;
    assert!(
        message.contains(": listeners[0].tls: "),
        "names the field: {message}"
    );
    assert!(
        message.contains(&missing_cert.display().to_string()),
        "names the file: {message}"
    );

    let missing_key = certs.path().join("missing-key.pem");
    let mut config = tls_config(&sim, &["a"], &pki);
    config["listeners"][0]["tls"]["key"] = json!(missing_key);
    let message = start_error(&config).await;
    assert!(
        message.contains(": listeners[0].tls: "),
        "names the field: {message}"
    );
    assert!(
        message.contains(&missing_key.display().to_string()),
        "names the file: {message}"
    );

    // A key from another pair: both files parse, but they do not belong together.
    let mut config = tls_config(&sim, &["a"], &pki);
    config["listeners"][0]["tls"]["key"] = json!(other.key);
    let message = start_error(&config).await;
    assert!(
        message.contains(": listeners[0].tls: "),
        "names the field: {message}"
    );
    assert!(
        message.contains("do not match"),
        "says what is wrong: {message}"
    );
}
