//! Plain Rust views of the contract's shared types, usable natively in tests.

/// A read-only view of the storefront's HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Upper-case HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string without the leading `?`.
    pub query: Option<String>,
    /// Lower-case header names with their values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, present only when the route passes bodies to plugins.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name`, undecoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// A provider of the route with its static attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provider {
    /// Unique provider name.
    pub name: String,
    /// Region label from config.
    pub region: String,
    /// Tags from config.
    pub tags: Vec<String>,
    /// Relative cost (lower is cheaper).
    pub cost: f64,
}

/// A refusal answered to the storefront as JSON with the given status (routers of contract
/// 0.1.0 and 0.2.0; later roles say "no" with [`payment::Refusal`](crate::payment::Refusal)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// HTTP status, 400..=599.
    pub status: u16,
    /// Machine-readable code.
    pub code: String,
    /// Message safe to show to the storefront.
    pub message: String,
}

impl Rejection {
    /// A rejection with the given status, code and message.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}
