//! Echo: answers with a description of the request it received, for transparency tests.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// Describe the request: method, path, query, version, every header in order, and the body's
/// length and SHA-256. The body is hashed frame by frame, so its size does not matter.
pub(crate) async fn handle(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ServeError::Body(e.into()))?;
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            hasher.update(&data);
        }
    }
    let headers: Vec<(&str, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str(), value)
        })
        .collect();
    let description = json!({
        "provider": provider.name(),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex::encode(hasher.finalize()),
    });
    Ok(json(StatusCode::OK, &description))
}
