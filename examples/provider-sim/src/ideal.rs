//! ideal-like provider API (to be implemented: see lib.rs for the route layout).

use hyper::body::Incoming;
use hyper::{Method, Request};

use crate::provider::Provider;
use crate::respond::SimResponse;
use crate::service::ServeError;

/// A route of this dialect.
#[derive(Debug, Clone)]
pub(crate) enum Route {}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(_method: &Method, _path: &str) -> Option<Route> {
        None
    }
}

/// Serve one request of this dialect.
pub(crate) async fn handle(
    _provider: &Provider,
    route: Route,
    _req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    match route {}
}
