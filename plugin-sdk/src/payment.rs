//! The canonical payment (contract 0.4.0's `types`) and the payment roles.
//!
//! The types are the contract's own (generated from `wit/payproxy-plugin@0.4.0`), so they are
//! plain Rust data usable in native tests. Implement one role trait and call its export
//! macro: [`export_egress_v4!`](crate::export_egress_v4) (provider side),
//! [`export_compliance!`](crate::export_compliance); for hosts older than 0.4.0,
//! [`export_dialect!`](crate::export_dialect) (0.2.0 ingress + egress),
//! [`export_egress!`](crate::export_egress),
//! [`export_compliance_v2!`](crate::export_compliance_v2) or
//! [`export_payment_router!`](crate::export_payment_router).

pub use crate::bindings::v4::compliance::exports::payproxy::plugin::compliance::{
    Decision, Verdict,
};
pub use crate::bindings::v4::egress::exports::payproxy::plugin::egress::{
    Capabilities, Context, Notification, Webhook,
};
pub use crate::bindings::v4::types::payproxy::plugin::types::*;
pub use crate::Rejection;

/// A provider of the route as 0.2.0 routers ([`Router`]) see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provider {
    /// Unique provider name from config.
    pub name: String,
    /// Free-form region label.
    pub region: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Relative cost (lower is cheaper).
    pub cost: f64,
    /// The dialect plugin the provider speaks.
    pub dialect: String,
    /// Its health as the host measures it.
    pub health: Health,
}

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
    fn check_card(&self, payment: &Payment, _card: Option<&CardDetails>) -> Decision {
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

    /// A JSON response: `value` (a [`serde_json::Value`] or any `Serialize` type) as JSON
    /// text. A value serde_json cannot write (a map whose keys are not strings, numbers,
    /// booleans or chars; a `Serialize` impl that fails) becomes a 500 with
    /// `{"error":{"message":…}}`, never a trap.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> HttpResponse {
        let (status, body) = match crate::helpers::encode::json_bytes(value) {
            Ok(body) => (status, body),
            Err(_) => (
                500,
                br#"{"error":{"message":"the plugin could not write its answer as JSON"}}"#
                    .to_vec(),
            ),
        };
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
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

impl Refusal {
    /// A router's "no": nothing can take the payment (`unavailable`), answered with
    /// `status` (400–599), `code` and `message`.
    pub fn unroutable(status: u16, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Unavailable,
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A compliance denial (402) with its code and the message shown to the shopper.
    pub fn denied(code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::ComplianceDenied,
            status: 402,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Verdict {
    /// A denial (402) with its code and the message shown to the shopper.
    pub fn deny(code: &str, message: impl Into<String>) -> Verdict {
        Verdict::Deny(Refusal::denied(code, message))
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

/// The SDK's own types, for the export macros (not part of the public API).
#[doc(hidden)]
pub mod __v4 {
    pub use crate::bindings::v4::types::payproxy::plugin::types::*;
}

/// 0.2.0's types (which 0.3.0 shares), for the export macros of earlier versions (not part
/// of the public API).
#[doc(hidden)]
pub mod __v2 {
    pub use crate::bindings::v2::types::payproxy::plugin::types::*;
}

/// A value as the same type (the SDK's own, 0.4.0) or as another contract version's type,
/// for the export macros: the identity for the SDK's own types, a conversion for 0.2.0's.
#[doc(hidden)]
pub trait Version<T> {
    /// The value as `T`.
    fn version(self) -> T;
}

impl<T> Version<T> for T {
    fn version(self) -> T {
        self
    }
}

macro_rules! versions {
    ($($from:ty => $to:ty),* $(,)?) => {
        $(impl Version<$to> for $from {
            fn version(self) -> $to {
                __glue::convert(&self)
            }
        })*
    };
}

// The HTTP views field by field: through serde a body would be one JSON number per byte.
impl Version<HttpRequest> for __v2::HttpRequest {
    fn version(self) -> HttpRequest {
        HttpRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            body: self.body,
        }
    }
}

impl Version<__v2::HttpRequest> for HttpRequest {
    fn version(self) -> __v2::HttpRequest {
        __v2::HttpRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            body: self.body,
        }
    }
}

impl Version<HttpResponse> for __v2::HttpResponse {
    fn version(self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }
}

impl Version<__v2::HttpResponse> for HttpResponse {
    fn version(self) -> __v2::HttpResponse {
        __v2::HttpResponse {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }
}

versions!(
    __v2::Payment => Payment,
    __v2::Outcome => Outcome,
    __v2::Refusal => Refusal,
    Refusal => __v2::Refusal,
    Vec<__v2::Annotation> => Vec<Annotation>,
    __v2::Provider => Provider,
    Annotation => __v2::Annotation,
    ChallengeKind => __v2::ChallengeKind,
);

impl Version<__v2::Outcome> for Outcome {
    fn version(self) -> __v2::Outcome {
        __glue::outcome_to_v2(&self)
    }
}

/// Glue used by the export macros; not part of the public API.
#[doc(hidden)]
pub mod __glue {
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        // One value per role trait, keyed by role; a component instance is single-threaded.
        // A list, not a map: it holds one or two roles and is read on every call, where
        // hashing the key cost more than comparing it.
        static PLUGINS: RefCell<Vec<(&'static str, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
    }

    /// Keep the plugin value for `role` (in place of an earlier one).
    pub fn store<T: 'static>(role: &'static str, value: T) {
        PLUGINS.with(|p| {
            let mut plugins = p.borrow_mut();
            plugins.retain(|(r, _)| *r != role);
            plugins.push((role, Box::new(value)));
        });
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

    /// The decision of a compliance plugin called before `init`: denied (fails closed).
    pub fn compliance_not_initialised() -> super::Decision {
        super::Decision::deny(
            "init",
            "plugin_not_initialised",
            "compliance called before init",
        )
    }

    /// The response of a dialect without a storefront side.
    pub fn no_ingress_response() -> super::HttpResponse {
        super::HttpResponse::json(500, &serde_json::json!({"error": {"code": "no_ingress"}}))
    }

    /// A value in another contract version's type with the same names and fields (0.2.0's
    /// and 0.3.0's against 0.4.0's), through serde's data model. Only the export macros of
    /// earlier versions use it, after [`payment_to_v2`] and [`outcome_to_v2`] have taken out
    /// what those versions cannot express; a value that still does not convert traps (the
    /// host sees a failed plugin call, never a wrong value).
    pub fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(value: &A) -> B {
        let json = serde_json::to_value(value).expect("contract value serializes");
        serde_json::from_value(json).expect("contract value converts between versions")
    }

    /// A payment for a 0.2.0 host, or the refusal of a method 0.2.0 cannot carry.
    pub fn payment_to_v2<B: serde::de::DeserializeOwned>(
        payment: &super::Payment,
    ) -> Result<B, super::Refusal> {
        match &payment.method {
            Some(super::PaymentMethod::Other(method)) => Err(super::Refusal::invalid(
                None,
                "payment_method_type_unsupported",
                format!(
                    "{} payments need payproxy 0.4.0 or later (contract 0.4.0).",
                    method.name
                ),
            )),
            _ => Ok(convert(payment)),
        }
    }

    /// An outcome for a 0.2.0 host: a confirm-on-device next action is pending.
    pub fn outcome_to_v2<B: serde::de::DeserializeOwned>(outcome: &super::Outcome) -> B {
        use super::{NextAction, Outcome, OutcomeStatus};
        if let OutcomeStatus::RequiresAction(NextAction::ConfirmOnDevice(_)) = outcome.status {
            return convert(&Outcome {
                status: OutcomeStatus::Pending,
                ..outcome.clone()
            });
        }
        convert(outcome)
    }

    /// Call `f` with the plugin value for `role`; `None` before `init`.
    pub fn with<T: 'static, R>(role: &'static str, f: impl FnOnce(&T) -> R) -> Option<R> {
        PLUGINS.with(|p| {
            p.borrow()
                .iter()
                .find(|(r, _)| *r == role)
                .and_then(|(_, v)| v.downcast_ref::<T>())
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
            Verdict::Deny(Refusal {
                kind: RefusalKind::ComplianceDenied,
                status: 402,
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
