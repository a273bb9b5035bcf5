//! Helpers for the end-to-end tests: a temp dir with a config, the proxy started
//! in-process on port 0, simulated providers, an HTTP client and certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub mod chaos;
mod payments;
pub mod postgres;
pub mod receiver;
mod recorder;

pub use payments::*;
pub use provider_sim::{Faults, Simulator};
pub use recorder::{Recorded, Recorder};

/// Path of a built plugin (`scripts/build-plugins.sh`, run by the test command).
pub fn wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

/// Route the proxy's logs to the test output (`PAYPROXY_LOG=debug` for more).
pub fn init_logs() {
    let filter = std::env::var("PAYPROXY_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A config in a temp dir, and the proxy serving it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub proxy: payproxy::server::Running,
}

/// Write `config` (JSON) to `dir/payproxy.json`.
pub fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("payproxy.json");
    write_atomic(&path, &serde_json::to_vec_pretty(config).unwrap());
    path
}

/// Replace a file by rename, as editors and deploy tools do.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A minimal config: one plain listener and admin on port 0, providers from the simulator,
/// no file watching unless the test turns it on.
pub fn base_config(sim: &Simulator, providers: &[&str]) -> Value {
    let mut p = serde_json::Map::new();
    for name in providers {
        p.insert(
            name.to_string(),
            json!({ "url": sim.base_url(name), "region": "test" }),
        );
    }
    json!({
        "listeners": [ { "addr": "127.0.0.1:0" } ],
        "admin": { "addr": "127.0.0.1:0" },
        "reload": { "watch": false },
        "providers": p,
        "routes": [ { "name": "all", "path_prefix": "/", "providers": providers } ],
    })
}

impl Env {
    /// Write `config` into a fresh temp dir and start the proxy on it.
    pub async fn start(config: Value) -> Env {
        Env::start_with_files(config, &[]).await
    }

    /// Like [`Env::start`], with extra files (name → JSON) written next to the config
    /// first, for plugins' `config_file`s.
    pub async fn start_with_files(config: Value, files: &[(&str, &Value)]) -> Env {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in files {
            write_atomic(
                &dir.path().join(name),
                &serde_json::to_vec_pretty(value).unwrap(),
            );
        }
        let config_path = write_config(dir.path(), &config);
        let proxy = payproxy::server::start(&config_path)
            .await
            .expect("proxy starts");
        Env {
            dir,
            config_path,
            proxy,
        }
    }

    /// `http://127.0.0.1:PORT` of the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.listen_addrs[0], path)
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.admin_addr, path)
    }

    /// Overwrite the config file.
    pub fn rewrite(&self, config: &Value) {
        write_config(self.dir.path(), config);
    }
}

/// An HTTP response with its body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-payproxy-provider` header.
    pub fn provider(&self) -> Option<&str> {
        self.header("x-payproxy-provider")
    }

    /// Assert the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

/// A plain-HTTP client with keep-alive.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }
}

impl HttpClient {
    /// Send and collect, failing on transport errors; 10 s overall bound.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_send(method, url, headers, body)
            .await
            .expect("request completes")
    }

    /// Send and collect; transport errors come back as `Err`.
    pub async fn try_send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    /// A Stripe-style form POST.
    pub async fn post_form(&self, url: &str, headers: &[(&str, &str)], form: &str) -> Reply {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(Method::POST, url, &all, form.to_string()).await
    }
}

/// A port on loopback with nothing listening (bound, then released).
pub fn unused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A test CA and a leaf certificate for `localhost`/127.0.0.1 signed by it, as PEM files.
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn generate(dir: &Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "payproxy test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let pki = TestPki {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca_cert, ca.pem()).unwrap();
        std::fs::write(&pki.cert, leaf.pem()).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }
}

/// The lines of the audit file at `path` (`log.audit_path`), parsed; none when it is absent.
pub fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}
