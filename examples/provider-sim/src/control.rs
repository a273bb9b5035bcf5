//! The `/__sim/` control API: ledger, faults, OAuth, webhooks, reset and health, for demos
//! and scripts.
//!
//! `POST /__sim/webhooks` `{"url": "http://127.0.0.1:P/webhooks/NAME" | null, "secret": "…",
//! "delay_ms": 0}` turns notifications on (or off with `url: null`) and answers the settings;
//! `GET /__sim/webhooks` lists every notice sent since the last reset:
//! `[{"dialect", "query", "headers": [[name, value]…], "body": "<UTF-8>", "attempts":
//! [{"status": 200} | {"error": "…"}]}]`.
//!
//! Control requests are neither counted nor subject to faults (except an outage that drops
//! the connection on accept, before any request is read).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::body::{read_capped, ReadError};
use crate::faults::Faults;
use crate::notify::WebhookSettings;
use crate::oauth::OAuthSettings;
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// Faults documents are tiny; anything bigger is a mistake.
const MAX_FAULTS_BODY: usize = 64 * 1024;

/// Whether `path` belongs to the control API.
pub(crate) fn is_control(path: &str) -> bool {
    path == "/__sim" || path.starts_with("/__sim/")
}

pub(crate) async fn handle(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let route = (req.method().clone(), req.uri().path().to_owned());
    let response = match (&route.0, route.1.as_str()) {
        (&Method::GET, "/__sim/health") => json(StatusCode::OK, &json!({ "ok": true })),
        (&Method::GET, "/__sim/ledger") => json(StatusCode::OK, &provider.ledger().charges()),
        (&Method::GET, "/__sim/refunds") => json(StatusCode::OK, &provider.ledger().refunds()),
        (&Method::GET, "/__sim/faults") => json(StatusCode::OK, provider.faults().faults()),
        (&Method::POST, "/__sim/faults") => set_faults(provider, req).await?,
        (&Method::GET, "/__sim/oauth") => json(StatusCode::OK, &provider.oauth().stats()),
        (&Method::POST, "/__sim/oauth") => set_oauth(provider, req).await?,
        (&Method::GET, "/__sim/webhooks") => json(StatusCode::OK, &provider.webhooks_sent()),
        (&Method::POST, "/__sim/webhooks") => set_webhooks(provider, req).await?,
        (&Method::POST, "/__sim/reset") => {
            provider.reset();
            json(StatusCode::OK, &json!({ "ok": true }))
        }
        (&Method::GET, "/__sim/stats") => {
            let ledger = provider.ledger();
            let stats = json!({
                "provider": provider.name(),
                "requests": provider.request_count(),
                "charges": ledger.charges().len(),
                "refunds": ledger.refunds().len(),
            });
            json(StatusCode::OK, &stats)
        }
        _ => control_error(StatusCode::NOT_FOUND, "unknown control route".to_owned()),
    };
    Ok(response)
}

/// `POST /__sim/faults`: the JSON body replaces the provider's faults.
async fn set_faults(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let body = match read_capped(req.into_body(), MAX_FAULTS_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let message = "faults body too large".to_owned();
            return Ok(control_error(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            provider.faults().set(faults.clone());
            Ok(json(StatusCode::OK, &faults))
        }
        Err(e) => Ok(control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid faults: {e}"),
        )),
    }
}

/// `POST /__sim/oauth`: the JSON body replaces the provider's token endpoint settings.
async fn set_oauth(provider: &Provider, req: Request<Incoming>) -> Result<SimResponse, ServeError> {
    let body = match read_capped(req.into_body(), MAX_FAULTS_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let message = "oauth settings body too large".to_owned();
            return Ok(control_error(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    match serde_json::from_slice::<OAuthSettings>(&body) {
        Ok(settings) => {
            provider.oauth().set(settings);
            Ok(json(StatusCode::OK, &json!({ "ok": true })))
        }
        Err(e) => Ok(control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid oauth settings: {e}"),
        )),
    }
}

/// `POST /__sim/webhooks`: the JSON body replaces the provider's webhook settings.
async fn set_webhooks(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let body = match read_capped(req.into_body(), MAX_FAULTS_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let message = "webhook settings body too large".to_owned();
            return Ok(control_error(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    let settings = match serde_json::from_slice::<WebhookSettings>(&body) {
        Ok(settings) => settings,
        Err(e) => {
            return Ok(control_error(
                StatusCode::BAD_REQUEST,
                format!("invalid webhook settings: {e}"),
            ))
        }
    };
    if let Some(url) = &settings.url {
        if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
            return Ok(control_error(
                StatusCode::BAD_REQUEST,
                format!("invalid webhook settings: url {url:?} is not an http:// URL"),
            ));
        }
    }
    provider.set_webhooks(settings);
    Ok(json(StatusCode::OK, &provider.webhook_settings()))
}

fn control_error(status: StatusCode, message: String) -> SimResponse {
    json(
        status,
        &json!({ "error": { "type": "invalid_request_error", "message": message } }),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::{json, Value};

    use crate::Simulator;

    async fn call(method: &str, url: String, body: Option<Value>) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("x-api-key", "k")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn webhooks_route_sets_lists_and_resets() {
        let sim = Simulator::start(&["p"]).await.unwrap();
        let base = sim.base_url("p");
        let hooks = format!("{base}/__sim/webhooks");
        assert_eq!(call("GET", hooks.clone(), None).await, (200, json!([])));
        let settings = json!({"url": "http://127.0.0.1:9/webhooks/p", "secret": "00ff"});
        let (status, answer) = call("POST", hooks.clone(), Some(settings)).await;
        assert_eq!(status, 200);
        assert_eq!(answer["delay_ms"], 0);
        let payment = json!({
            "merchantAccount": "M", "amount": {"value": 1000, "currency": "EUR"},
            "reference": "o-1",
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "tok"},
        });
        let pay = format!("{base}/adyen/v71/payments");
        assert_eq!(
            call("POST", pay.clone(), Some(payment.clone())).await.0,
            200
        );
        let (_, listed) = call("GET", hooks.clone(), None).await;
        assert_eq!(listed.as_array().unwrap().len(), 1);
        let sent = &listed[0];
        assert_eq!(sent["dialect"], "adyen");
        assert_eq!(sent["query"], Value::Null);
        let body: Value = serde_json::from_str(sent["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body["notificationItems"][0]["NotificationRequestItem"]["eventCode"],
            "AUTHORISATION"
        );
        assert!(sent["attempts"].is_array());

        // Bad settings are refused; `url: null` turns webhooks off.
        let bad = json!({"url": "ftp://x", "secret": ""});
        assert_eq!(call("POST", hooks.clone(), Some(bad)).await.0, 400);
        let typo = json!({"uri": "http://127.0.0.1:9/"});
        assert_eq!(call("POST", hooks.clone(), Some(typo)).await.0, 400);
        let off = json!({"url": null});
        assert_eq!(call("POST", hooks.clone(), Some(off)).await.0, 200);
        assert_eq!(call("POST", pay, Some(payment)).await.0, 200);
        let (_, listed) = call("GET", hooks.clone(), None).await;
        assert_eq!(
            listed.as_array().unwrap().len(),
            1,
            "nothing sent while off"
        );

        assert_eq!(
            call("POST", format!("{base}/__sim/reset"), None).await.0,
            200
        );
        assert_eq!(call("GET", hooks, None).await, (200, json!([])));
        sim.shutdown().await;
    }
}
