//! Error types: config errors that point at the file and field, plugin failures by kind,
//! and request-path errors that know their source, their status and whether a retry
//! elsewhere is safe. Request-path errors render as JSON with no secret or payload data.

use std::borrow::Cow;
use std::path::PathBuf;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// A configuration (or reload) error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read: missing, not a regular file, too large, stalled.
    #[error(transparent)]
    Read(#[from] crate::files::FileError),
    /// The text is not JSON.
    #[error("{file}:{line}:{column}: JSON syntax error: {message}", file = file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field is missing, unknown, of the wrong type or has an invalid value.
    #[error("{file}: {field}: {message}", file = file.display())]
    Field {
        /// The file.
        file: PathBuf,
        /// Dotted path of the field, e.g. `routes[0].providers[1]`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin could not be loaded.
    #[error("{config}: plugins.{plugin}: {file}: {message}", config = config.display(), file = file.display())]
    Plugin {
        /// The config file.
        config: PathBuf,
        /// Plugin name from config.
        plugin: String,
        /// The component file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another resource named by the config could not be used (certificate, CA file).
    #[error("{file}: {field}: {message}", file = file.display())]
    Resource {
        /// The config file.
        file: PathBuf,
        /// Config field naming the resource.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// How a plugin call failed; also the `kind` label of the failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFailureKind {
    /// The plugin trapped (panic, unreachable, bad memory access, called `exit`).
    Trap,
    /// The plugin ran past its CPU deadline.
    Deadline,
    /// The plugin tried to grow memory past its cap.
    Memory,
    /// The plugin returned something the host does not accept.
    BadOutput,
    /// An instance could not be created (pool exhausted, `init` failed).
    Instantiate,
}

impl PluginFailureKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginFailureKind::Trap => "trap",
            PluginFailureKind::Deadline => "deadline",
            PluginFailureKind::Memory => "memory",
            PluginFailureKind::BadOutput => "bad_output",
            PluginFailureKind::Instantiate => "instantiate",
        }
    }
}

/// A failed plugin call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin}: {kind}: {detail}", kind = kind.as_str())]
pub struct PluginFailure {
    /// Plugin name.
    pub plugin: String,
    /// What went wrong.
    pub kind: PluginFailureKind,
    /// Detail for the log (never request data).
    pub detail: String,
}

/// Where a request-path error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The storefront's request.
    Downstream,
    /// The provider.
    Upstream,
    /// A plugin.
    Plugin,
    /// payproxy itself.
    Internal,
    /// A plugin's deliberate refusal (router rejection, later compliance denial).
    Policy,
}

/// An error answered to the storefront.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ProxyError {
    /// HTTP status to answer.
    pub status: StatusCode,
    /// Where it came from.
    pub origin: Source,
    /// Machine-readable code.
    pub code: Cow<'static, str>,
    /// Message for the storefront: never a secret, a card number or a stack trace.
    pub message: String,
    /// Whether sending the same request to another provider is known to be safe
    /// (nothing reached a provider, or the provider guaranteed it did nothing).
    pub retry_safe: bool,
    /// Provider involved, when there is one.
    pub provider: Option<String>,
}

impl ProxyError {
    /// A downstream (client) error.
    pub fn downstream(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            status,
            origin: Source::Downstream,
            code: code.into(),
            message: message.into(),
            retry_safe: false,
            provider: None,
        }
    }

    /// An upstream error for `provider`.
    pub fn upstream(
        status: StatusCode,
        code: &'static str,
        provider: &str,
        message: impl Into<String>,
        retry_safe: bool,
    ) -> Self {
        ProxyError {
            status,
            origin: Source::Upstream,
            code: code.into(),
            message: message.into(),
            retry_safe,
            provider: Some(provider.to_string()),
        }
    }

    /// A plugin-caused error.
    pub fn plugin(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            status,
            origin: Source::Plugin,
            code: code.into(),
            message: message.into(),
            retry_safe: true,
            provider: None,
        }
    }

    /// A plugin's deliberate refusal, with the plugin's own status and code.
    pub fn policy(status: StatusCode, code: String, message: String) -> Self {
        ProxyError {
            status,
            origin: Source::Policy,
            code: code.into(),
            message,
            retry_safe: false,
            provider: None,
        }
    }

    /// The JSON response: `{"error": {"type", "code", "message", "provider"?}}`.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let kind = match self.origin {
            Source::Downstream => "invalid_request_error",
            Source::Upstream => "provider_error",
            Source::Plugin => "plugin_error",
            Source::Internal => "api_error",
            Source::Policy => "payment_rejected",
        };
        let mut error = serde_json::json!({
            "type": kind,
            "code": self.code,
            "message": self.message,
        });
        if let Some(provider) = &self.provider {
            error["provider"] = serde_json::Value::String(provider.clone());
        }
        json_response(self.status, &serde_json::json!({ "error": error }))
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
