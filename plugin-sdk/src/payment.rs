//! Contract version 0.2.0: the canonical payment and the payment roles.
//!
//! The types are the contract's own (generated from `wit/payproxy-plugin@0.2.0`), so they are
//! plain Rust data usable in native tests. Implement one role trait and call its export
//! macro: [`export_dialect!`](crate::export_dialect) (ingress + egress),
//! [`export_egress!`](crate::export_egress),
//! [`export_compliance!`](crate::export_compliance) or
//! [`export_payment_router!`](crate::export_payment_router).

pub use crate::bindings::v2::compliance::exports::payproxy::plugin::compliance::{
    Decision, Denial, Verdict,
};
pub use crate::bindings::v2::dialect::exports::payproxy::plugin::egress::{Capabilities, Context};
pub use crate::bindings::v2::types::payproxy::plugin::types::*;
/// Provider notifications (contract 0.4.0's `egress`): see [`Egress::decode_webhook`].
pub use crate::bindings::v4::egress::exports::payproxy::plugin::egress::{Notification, Webhook};

/// Storefront side of a dialect.
pub trait Ingress: Sized + 'static {
    /// Parse and validate the plugin's JSON config.
    fn init(config: &str) -> Result<Self, String>;
    /// Parse a storefront request into the canonical payment, or refuse it.
    fn parse_request(&self, request: &HttpRequest) -> Result<Payment, Refusal>;
    /// Render an outcome for the storefront.
    fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> HttpResponse;
    /// Render a refusal for the storefront.
    fn render_refusal(&self, refusal: &Refusal) -> HttpResponse;
    /// The payment id a request refers to (for requests forwarded unchanged). Default: none.
    fn request_id(&self, _request: &HttpRequest) -> Option<String> {
        None
    }
}

/// Provider side of a dialect.
pub trait Egress: Sized + 'static {
    /// Parse and validate the plugin's JSON config.
    fn init(config: &str) -> Result<Self, String>;
    /// What the protocol supports. Default: neither resend nor status query.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            idempotent_resend: false,
            status_query: false,
        }
    }
    /// Build the provider's request, or refuse invalid input before anything is sent.
    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal>;
    /// Decode the provider's answer.
    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome;
    /// Verify and decode a provider's notification request (contract 0.4.0: exported by
    /// [`export_egress_v4!`](crate::export_egress_v4) and
    /// [`export_storefront_dialect!`](crate::export_storefront_dialect)). Verify over the raw
    /// body and headers with `context.credentials`; refuse with status 401 what fails
    /// verification, 400 what cannot be read. Default: this provider sends no notifications
    /// (404).
    fn decode_webhook(
        &self,
        _request: &HttpRequest,
        _context: &Context,
    ) -> Result<Webhook, Refusal> {
        Err(Refusal {
            kind: RefusalKind::NotFound,
            status: 404,
            code: "no_webhooks".into(),
            message: "This provider's dialect reads no notifications.".into(),
        })
    }
}

/// Compliance role. [`export_compliance!`](crate::export_compliance) exports it as contract
/// 0.4.0, where the host also passes the card's details from the home provider (funding,
/// 3-D Secure support …) to [`Compliance::check_card`]; `export_compliance_v2!` as 0.2.0.
pub trait Compliance: Sized + 'static {
    /// Parse and validate the plugin's JSON config (the rules).
    fn init(config: &str) -> Result<Self, String>;
    /// Allow, deny or challenge the payment, with annotations.
    fn check(&self, payment: &Payment) -> Decision;
    /// The same, knowing what the home provider says about the payment's card token (none
    /// when the payment has no card token or the lookup found nothing). Default: `check`.
    fn check_card(
        &self,
        payment: &Payment,
        _card: Option<&crate::storefront::CardDetails>,
    ) -> Decision {
        self.check(payment)
    }
}

/// Router role, 0.2.0.
pub trait Router: Sized + 'static {
    /// Parse and validate the plugin's JSON config.
    fn init(config: &str) -> Result<Self, String>;
    /// Ordered provider names to try, or a rejection.
    fn route(
        &self,
        request: &HttpRequest,
        payment: Option<&Payment>,
        providers: &[Provider],
        seed: u64,
    ) -> Result<Vec<String>, Rejection>;
}

impl HttpRequest {
    /// First value of header `name`, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl HttpResponse {
    /// First value of header `name`, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Refusal {
    /// An invalid-request refusal (400) naming the parameter.
    pub fn invalid(param: Option<&str>, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::InvalidRequest(param.map(str::to_string)),
            status: 400,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Outcome {
    /// An outcome with only a status.
    pub fn of(status: OutcomeStatus) -> Outcome {
        Outcome {
            status,
            provider_reference: None,
            amount: None,
        }
    }

    /// An error outcome.
    pub fn error(
        class: ErrorClass,
        code: &str,
        provider_code: &str,
        message: impl Into<String>,
    ) -> Outcome {
        Outcome::of(OutcomeStatus::Error(Failure {
            class,
            code: code.into(),
            provider_code: provider_code.into(),
            message: message.into(),
        }))
    }
}

impl Context {
    /// The provider's credential `key`, when it is configured and not empty.
    pub fn credential(&self, key: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The provider's credential `key`, or the refusal of a misconfigured provider
    /// (`provider_misconfigured`, 500, unavailable) naming the key, never a value.
    pub fn required_credential(&self, key: &str) -> Result<&str, Refusal> {
        self.credential(key).ok_or_else(|| Refusal {
            kind: RefusalKind::Unavailable,
            status: 500,
            code: "provider_misconfigured".into(),
            message: format!(
                "provider {}: credential {key} is not configured",
                self.provider
            ),
        })
    }
}

impl Verdict {
    /// A denial with its code and the message shown to the shopper.
    pub fn deny(code: &str, message: impl Into<String>) -> Verdict {
        Verdict::Deny(Denial {
            code: code.into(),
            message: message.into(),
        })
    }
}

impl Decision {
    /// `verdict` under `rule`, without annotations.
    pub fn new(rule: &str, verdict: Verdict) -> Decision {
        Decision {
            verdict,
            rule: rule.into(),
            annotations: Vec::new(),
        }
    }

    /// Allowed under `rule`, with `annotations` (tax lines, flags …).
    pub fn allow(rule: &str, annotations: Vec<Annotation>) -> Decision {
        Decision {
            annotations,
            ..Decision::new(rule, Verdict::Allow)
        }
    }

    /// Denied under `rule` with a code and the message shown to the shopper.
    pub fn deny(rule: &str, code: &str, message: impl Into<String>) -> Decision {
        Decision::new(rule, Verdict::deny(code, message))
    }

    /// Challenged under `rule`: the shopper must complete `kind` first.
    pub fn challenge(rule: &str, kind: ChallengeKind) -> Decision {
        Decision::new(rule, Verdict::Challenge(kind))
    }
}

impl Payment {
    /// A payment with only the operation set; for tests and builders.
    pub fn new(operation: Operation) -> Payment {
        Payment {
            operation,
            id: None,
            provider_reference: None,
            amount: None,
            country: None,
            method: None,
            installments: None,
            customer: Customer {
                id: None,
                email: None,
                phone: None,
                phone_verified: false,
            },
            merchant_reference: None,
            idempotency_key: None,
            metadata: Vec::new(),
            strong_auth: StrongAuth {
                authenticated: false,
                exemption_requested: None,
            },
            return_url: None,
            manual_capture: false,
            description: None,
        }
    }
}

/// Glue used by the export macros; not part of the public API.
#[doc(hidden)]
pub mod __glue {
    use std::any::Any;
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        // One value per role trait, keyed by role; a component instance is single-threaded.
        static PLUGINS: RefCell<HashMap<&'static str, Box<dyn Any>>> = RefCell::new(HashMap::new());
    }

    /// Keep the plugin value for `role`.
    pub fn store<T: 'static>(role: &'static str, value: T) {
        PLUGINS.with(|p| p.borrow_mut().insert(role, Box::new(value)));
    }

    /// The refusal of a dialect without a storefront side.
    pub fn no_ingress() -> super::Refusal {
        super::Refusal {
            kind: super::RefusalKind::Unavailable,
            status: 500,
            code: "no_ingress".into(),
            message: "this dialect has no storefront side".into(),
        }
    }

    /// The refusal of an egress called before `init`.
    pub fn not_initialised() -> super::Refusal {
        super::Refusal {
            kind: super::RefusalKind::Unavailable,
            status: 500,
            code: "plugin_not_initialised".into(),
            message: "egress called before init".into(),
        }
    }

    /// The response of a dialect without a storefront side.
    pub fn no_ingress_response() -> super::HttpResponse {
        super::HttpResponse::json(500, &serde_json::json!({"error": {"code": "no_ingress"}}))
    }

    /// Call `f` with the plugin value for `role`; `None` before `init`.
    pub fn with<T: 'static, R>(role: &'static str, f: impl FnOnce(&T) -> R) -> Option<R> {
        PLUGINS.with(|p| {
            p.borrow()
                .get(role)
                .and_then(|v| v.downcast_ref::<T>())
                .map(f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(credentials: &[(&str, &str)]) -> Context {
        Context {
            provider: "acme".into(),
            credentials: credentials
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now_ms: 0,
            idempotency_key: "k".into(),
        }
    }

    #[test]
    fn credentials_are_read_by_key_and_empty_ones_do_not_count() {
        let c = context(&[("api_key", ""), ("api_key", "secret"), ("merchant", "m")]);
        assert_eq!(c.credential("api_key"), Some("secret"));
        assert_eq!(c.credential("merchant"), Some("m"));
        assert_eq!(c.credential("Merchant"), None);
        assert_eq!(c.required_credential("merchant"), Ok("m"));
        let c = context(&[("client_id", "")]);
        assert_eq!(c.credential("client_id"), None);
        let refusal = c.required_credential("client_id").unwrap_err();
        assert_eq!(
            refusal,
            Refusal {
                kind: RefusalKind::Unavailable,
                status: 500,
                code: "provider_misconfigured".into(),
                message: "provider acme: credential client_id is not configured".into(),
            }
        );
    }

    #[test]
    fn decisions() {
        let allowed = Decision::allow("r-ok", Vec::new());
        assert_eq!(
            (allowed.verdict, allowed.rule.as_str()),
            (Verdict::Allow, "r-ok")
        );
        let denied = Decision::deny("r-no", "country_blocked", "No.");
        assert_eq!(
            denied.verdict,
            Verdict::Deny(Denial {
                code: "country_blocked".into(),
                message: "No.".into()
            })
        );
        assert!(denied.annotations.is_empty());
        assert_eq!(Verdict::deny("country_blocked", "No."), denied.verdict);
        let challenged = Decision::challenge("r-sca", ChallengeKind::StrongAuthentication);
        assert_eq!(
            challenged,
            Decision::new(
                "r-sca",
                Verdict::Challenge(ChallengeKind::StrongAuthentication)
            )
        );
    }
}
