//! One request through a simulated provider: control API, then faults, then the routes.

use std::error::Error;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::faults::{self, Admission, ReplyBody};
use crate::provider::Provider;
use crate::respond::{SimResponse, StripeError};
use crate::{adyen, control, dana, echo, grabpay, ideal, oauth, pix, stripe};

/// Why a request got no answer; hyper then closes the connection (HTTP/1.1) or resets the
/// stream (h2) without sending a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The provider is in a simulated outage.
    #[error("simulated outage: request dropped without an answer")]
    Outage,
    /// The client went away while sending the body.
    #[error("reading request body: {0}")]
    Body(Box<dyn Error + Send + Sync>),
}

/// Serve `req`, stamp `x-sim-provider` on the answer and log one line about it.
pub(crate) async fn serve(
    provider: Arc<Provider>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, ServeError> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = dispatch(&provider, req).await;
    match &result {
        Ok(response) => tracing::info!(
            provider = provider.name(),
            %method,
            %path,
            status = response.status().as_u16(),
            "request"
        ),
        Err(error) => tracing::info!(
            provider = provider.name(),
            %method,
            %path,
            %error,
            "request not answered"
        ),
    }
    result.map(|mut response| {
        response
            .headers_mut()
            .insert("x-sim-provider", provider.header().clone());
        response
    })
}

async fn dispatch(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, ServeError> {
    if control::is_control(req.uri().path()) {
        return control::handle(provider, req).await.map(faults::whole);
    }
    if req.uri().path() == oauth::TOKEN_PATH {
        return oauth::token(provider, req).await.map(faults::whole);
    }
    // Bind the decision first so the faults lock is released before any await.
    let admission = provider.faults().admit();
    let (latency, fail, after) = match admission {
        Admission::Drop => return Err(ServeError::Outage),
        Admission::Serve {
            latency,
            fail,
            after,
        } => (latency, fail, after),
    };
    provider.count_request();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = fail {
        return Ok(faults::whole(StripeError::simulated(status).response()));
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !provider.oauth().admits(authorization) {
        return Ok(faults::whole(oauth::invalid_token()));
    }
    let response = route(provider, req).await?;
    // The request was processed (charges recorded): only now may its answer go astray.
    Ok(faults::after_processing(after, response).await)
}

/// Hand the request to the dialect that serves its path, else to the echo.
async fn route(provider: &Provider, req: Request<Incoming>) -> Result<SimResponse, ServeError> {
    // Every provider serves every dialect, each under its own paths.
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if let Some(route) = stripe::Route::parse(&method, &path) {
        return stripe::handle(provider, route, req).await;
    }
    if let Some(route) = adyen::Route::parse(&method, &path) {
        return adyen::handle(provider, route, req).await;
    }
    if let Some(route) = grabpay::Route::parse(&method, &path) {
        return grabpay::handle(provider, route, req).await;
    }
    if let Some(route) = dana::Route::parse(&method, &path) {
        return dana::handle(provider, route, req).await;
    }
    if let Some(route) = ideal::Route::parse(&method, &path) {
        return ideal::handle(provider, route, req).await;
    }
    if let Some(route) = pix::Route::parse(&method, &path) {
        return pix::handle(provider, route, req).await;
    }
    echo::handle(provider, req).await
}
