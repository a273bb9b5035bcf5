//! The dialect role: the storefront side (parse requests, render answers) and the provider
//! side (`egress`: encode requests, decode answers). A component may export one side or both;
//! the config says which side a route or provider uses.
//!
//! Two storefront contracts load side by side: 0.4.0's `storefront` (payment calls, lists,
//! forwarding, records, card lookups) and 0.2.0's `ingress` (payment calls only), which is
//! adapted here so the payment path sees one interface. The provider side is the same
//! `egress` in both versions.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

use super::bindings::exports::{EGRESS, EGRESS_V4, INGRESS, STOREFRONT};
use super::bindings::v2::dialect::exports::payproxy::plugin::{egress, ingress};
use super::bindings::v4::dialect::exports::payproxy::plugin::{egress as egress_v4, storefront};
use super::convert;
use super::sandbox::{Binding, Sandbox, SandboxSettings};
use super::types::{
    Annotation, ErrorClass, Failure, HttpRequest, HttpResponse, OtherMethod, Outcome,
    OutcomeStatus, Payment, PaymentMethod, Refusal, RefusalKind,
};
use super::{CallState, PluginHost};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

pub use super::types::CardDetails;
pub use egress_v4::{Capabilities, Context, Notification, Webhook};
pub use storefront::{
    Call, EventKind, ListQuery, PaymentCall, PaymentEvent, PaymentRecord, PaymentState,
    RenderedEvent,
};

/// Largest HTTP body a dialect may produce.
const MAX_BODY: usize = 1 << 20;
/// Most notifications one provider request may carry (Adyen batches up to 6).
const MAX_NOTIFICATIONS: usize = 100;

/// Export indices found in the component, with its pre-instantiation.
pub struct DialectPre {
    instance_pre: InstancePre<CallState>,
    storefront: Option<storefront::GuestIndices>,
    ingress: Option<ingress::GuestIndices>,
    egress: Option<egress::GuestIndices>,
    egress_v4: Option<egress_v4::GuestIndices>,
}

/// The storefront side of an instance, by contract version.
enum Front {
    V4(storefront::Guest),
    V2(ingress::Guest),
}

/// The provider side of an instance, by contract version (the same functions).
enum Back {
    V4(egress_v4::Guest),
    V2(egress::Guest),
}

/// A dialect instance: whichever sides the component exports.
pub struct DialectInst {
    front: Option<Front>,
    back: Option<Back>,
}

impl Binding for DialectInst {
    type Pre = DialectPre;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        let exports: Vec<String> = instance_pre
            .component()
            .component_type()
            .exports(instance_pre.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        // An export that is there but does not type-check against its contract is an
        // error, not a missing side: say which and why.
        fn side<T>(
            exports: &[String],
            name: &str,
            indices: wasmtime::Result<T>,
        ) -> wasmtime::Result<Option<T>> {
            match indices {
                Ok(found) => Ok(Some(found)),
                Err(e) if exports.iter().any(|x| x == name) => {
                    Err(e.context(format!("export {name} does not match the contract")))
                }
                Err(_) => Ok(None),
            }
        }
        let pre = DialectPre {
            storefront: side(
                &exports,
                STOREFRONT,
                storefront::GuestIndices::new(&instance_pre),
            )?,
            ingress: side(&exports, INGRESS, ingress::GuestIndices::new(&instance_pre))?,
            egress: side(&exports, EGRESS, egress::GuestIndices::new(&instance_pre))?,
            egress_v4: side(
                &exports,
                EGRESS_V4,
                egress_v4::GuestIndices::new(&instance_pre),
            )?,
            instance_pre,
        };
        if pre.storefront.is_none()
            && pre.ingress.is_none()
            && pre.egress.is_none()
            && pre.egress_v4.is_none()
        {
            wasmtime::bail!("exports none of {STOREFRONT}, {INGRESS}, {EGRESS}, {EGRESS_V4}");
        }
        Ok(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        let instance = pre.instance_pre.instantiate(&mut *store)?;
        // The newest contract wins when a component exports both versions of a side.
        let front = match (&pre.storefront, &pre.ingress) {
            (Some(s), _) => Some(Front::V4(s.load(&mut *store, &instance)?)),
            (None, Some(i)) => Some(Front::V2(i.load(&mut *store, &instance)?)),
            (None, None) => None,
        };
        let back = match (&pre.egress_v4, &pre.egress) {
            (Some(e), _) => Some(Back::V4(e.load(&mut *store, &instance)?)),
            (None, Some(e)) => Some(Back::V2(e.load(&mut *store, &instance)?)),
            (None, None) => None,
        };
        Ok(DialectInst { front, back })
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        let front = match &self.front {
            Some(Front::V4(s)) => s.call_init(&mut *store, config)?,
            Some(Front::V2(i)) => i.call_init(&mut *store, config)?,
            None => Ok(()),
        };
        if front.is_err() {
            return Ok(front);
        }
        match &self.back {
            Some(Back::V4(e)) => e.call_init(&mut *store, config),
            Some(Back::V2(e)) => e.call_init(&mut *store, config),
            None => Ok(Ok(())),
        }
    }
}

/// A loaded dialect plugin.
pub struct DialectPlugin {
    sandbox: Sandbox<DialectInst>,
    /// Storefront contract: `Some("0.4.0")`, `Some("0.2.0")` or none.
    storefront: Option<&'static str>,
    egress: bool,
    capabilities: Capabilities,
}

fn missing(side: &str) -> wasmtime::Error {
    wasmtime::format_err!("this dialect has no {side} side")
}

impl DialectPlugin {
    /// Bind a compiled component to the dialect role and validate its config.
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
    ) -> Result<DialectPlugin, String> {
        let exports = host.export_names(component);
        let has = |export: &str| exports.iter().any(|e| e == export);
        let storefront = if has(STOREFRONT) {
            Some("0.4.0")
        } else if has(INGRESS) {
            Some("0.2.0")
        } else {
            None
        };
        let egress = has(EGRESS) || has(EGRESS_V4);
        if storefront.is_none() && !egress {
            return Err(format!(
                "does not implement the dialect role: expected export {STOREFRONT} or {INGRESS}, and/or {EGRESS_V4} or {EGRESS}, found [{}]",
                exports.join(", ")
            ));
        }
        let sandbox =
            Sandbox::<DialectInst>::load(host, name, component, config_json, settings, metrics)?;
        let capabilities = if egress {
            sandbox
                .call("describe", |b, store| match back(b)? {
                    Back::V4(e) => e.call_describe(store),
                    Back::V2(e) => e.call_describe(store).map(|c| Capabilities {
                        idempotent_resend: c.idempotent_resend,
                        status_query: c.status_query,
                    }),
                })
                .map_err(|f| f.to_string())?
        } else {
            Capabilities {
                idempotent_resend: false,
                status_query: false,
            }
        };
        Ok(DialectPlugin {
            sandbox,
            storefront,
            egress,
            capabilities,
        })
    }

    /// Whether the storefront side exists (contract 0.4.0 `storefront` or 0.2.0 `ingress`).
    pub fn has_ingress(&self) -> bool {
        self.storefront.is_some()
    }

    /// The storefront side's contract version, if any.
    pub fn storefront_contract(&self) -> Option<&'static str> {
        self.storefront
    }

    /// Whether the provider side exists.
    pub fn has_egress(&self) -> bool {
        self.egress
    }

    /// What the provider protocol supports.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// What a storefront request asks for. A 0.2.0 ingress only knows payment calls, which
    /// always charge (it has no create-without-confirm).
    pub fn parse(&self, request: &HttpRequest) -> Result<Result<Call, Refusal>, PluginFailure> {
        let call = self
            .sandbox
            .call("parse-request", |b, store| match front(b)? {
                Front::V4(s) => s.call_parse(store, request),
                Front::V2(i) => {
                    match i.call_parse_request(store, &convert::request_to_v2(request))? {
                        Ok(payment) => Ok(Ok(Call::Payment(PaymentCall {
                            payment: convert::payment_from_v2(&payment)?,
                            confirm: true,
                        }))),
                        Err(refusal) => Ok(Err(convert::refusal_from_v2(&refusal)?)),
                    }
                }
            })?;
        if let Ok(Call::Payment(PaymentCall { payment, .. })) = &call {
            if let Some(PaymentMethod::Other(method)) = &payment.method {
                self.check_other(method)?;
            }
        }
        Ok(call)
    }

    /// Render an outcome for the storefront.
    pub fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> Result<HttpResponse, PluginFailure> {
        let response = self
            .sandbox
            .call("render-outcome", |b, store| match front(b)? {
                Front::V4(s) => {
                    s.call_render_outcome(store, payment, outcome, payment_id, annotations)
                }
                Front::V2(i) => i
                    .call_render_outcome(
                        store,
                        &convert::payment_to_v2(payment)?,
                        &convert::outcome_to_v2(outcome)?,
                        payment_id,
                        &convert::annotations_to_v2(annotations)?,
                    )
                    .map(convert::response_from_v2),
            })?;
        self.check_response(response)
    }

    /// Render a payment from the host's record. A 0.2.0 ingress has no such call: the record
    /// is rendered as the outcome it stands for.
    pub fn render_payment(&self, record: &PaymentRecord) -> Result<HttpResponse, PluginFailure> {
        let response = self
            .sandbox
            .call("render-payment", |b, store| match front(b)? {
                Front::V4(s) => s.call_render_payment(store, record),
                Front::V2(i) => {
                    // Rendered as a retrieve of the payment in the state it stands for.
                    let outcome = record_outcome(record);
                    let mut payment = record.payment.clone();
                    payment.operation = super::types::Operation::Status;
                    i.call_render_outcome(
                        store,
                        &convert::payment_to_v2(&payment)?,
                        &convert::outcome_to_v2(&outcome)?,
                        &record.id,
                        &[],
                    )
                    .map(convert::response_from_v2)
                }
            })?;
        self.check_response(response)
    }

    /// Render a page of payments (0.4.0 only; a 0.2.0 ingress never asks for a list).
    pub fn render_list(
        &self,
        records: &[PaymentRecord],
        has_more: bool,
        url: &str,
    ) -> Result<HttpResponse, PluginFailure> {
        let response = self
            .sandbox
            .call("render-list", |b, store| match front(b)? {
                Front::V4(s) => s.call_render_list(store, records, has_more, url),
                Front::V2(_) => Err(wasmtime::format_err!("a 0.2.0 ingress cannot render lists")),
            })?;
        self.check_response(response)
    }

    /// Render a refusal for the storefront.
    pub fn render_refusal(&self, refusal: &Refusal) -> Result<HttpResponse, PluginFailure> {
        let response = self
            .sandbox
            .call("render-refusal", |b, store| match front(b)? {
                Front::V4(s) => s.call_render_refusal(store, refusal),
                Front::V2(i) => i
                    .call_render_refusal(store, &convert::refusal_to_v2(refusal)?)
                    .map(convert::response_from_v2),
            })?;
        self.check_response(response)
    }

    /// Headers authenticating a forwarded request at a provider of this dialect.
    pub fn forward_headers(
        &self,
        credentials: &[(String, String)],
    ) -> Result<Vec<(String, String)>, PluginFailure> {
        self.sandbox
            .call("forward-headers", |b, store| match front(b)? {
                Front::V4(s) => s.call_forward_headers(store, credentials),
                Front::V2(_) => Ok(Vec::new()),
            })
    }

    /// The request asking the home provider about a card token, if the dialect has one.
    pub fn card_lookup(
        &self,
        token: &str,
        credentials: &[(String, String)],
    ) -> Result<Option<HttpRequest>, PluginFailure> {
        let request = self
            .sandbox
            .call("card-lookup", |b, store| match front(b)? {
                Front::V4(s) => s.call_card_lookup(store, token, credentials),
                Front::V2(_) => Ok(None),
            })?;
        match request {
            Some(r) => self.check_request(r).map(Some),
            None => Ok(None),
        }
    }

    /// The card details in the home provider's answer to `card_lookup`.
    pub fn card_details(
        &self,
        response: &HttpResponse,
    ) -> Result<Option<CardDetails>, PluginFailure> {
        self.sandbox.call("read-card", |b, store| match front(b)? {
            Front::V4(s) => s.call_read_card(store, response),
            Front::V2(_) => Ok(None),
        })
    }

    /// The storefront's event for a payment's state change (0.4.0 only; a 0.2.0 ingress
    /// sends none).
    pub fn render_event(
        &self,
        event: &PaymentEvent,
    ) -> Result<Option<RenderedEvent>, PluginFailure> {
        let rendered = self
            .sandbox
            .call("render-event", |b, store| match front(b)? {
                Front::V4(s) => s.call_render_event(store, event),
                Front::V2(_) => Ok(None),
            })?;
        match rendered {
            Some(r) if r.body.len() > MAX_BODY || r.event_type.len() > 256 => {
                Err(self.sandbox.bad_output(format!(
                    "rendered an invalid event ({} bytes, type of {} bytes)",
                    r.body.len(),
                    r.event_type.len()
                )))
            }
            other => Ok(other),
        }
    }

    /// The headers signing one delivery of an event body with an endpoint's secret.
    pub fn sign_event(
        &self,
        body: &[u8],
        secret: &str,
        now_s: i64,
    ) -> Result<Vec<(String, String)>, PluginFailure> {
        self.sandbox.call("sign-event", |b, store| match front(b)? {
            Front::V4(s) => s.call_sign_event(store, body, secret, now_s),
            Front::V2(_) => Ok(Vec::new()),
        })
    }

    /// Build a provider request. A 0.2.0 provider side cannot take a method it has no record
    /// for (`other`): that payment is refused before anything is sent.
    pub fn encode_request(
        &self,
        payment: &Payment,
        context: &Context,
    ) -> Result<Result<HttpRequest, Refusal>, PluginFailure> {
        let request = self
            .sandbox
            .call("encode-request", |b, store| match back(b)? {
                Back::V4(e) => e.call_encode_request(store, payment, context),
                Back::V2(e) => {
                    if let Some(PaymentMethod::Other(method)) = &payment.method {
                        return Ok(Err(Refusal {
                            kind: RefusalKind::InvalidRequest(None),
                            status: 400,
                            code: "payment_method_type_unsupported".into(),
                            message: format!(
                                "{} payments are not available with this provider.",
                                super::sandbox::truncate(&method.name, 40)
                            ),
                        }));
                    }
                    match e.call_encode_request(
                        store,
                        &convert::payment_to_v2(payment)?,
                        &v2_context(context),
                    )? {
                        Ok(request) => Ok(Ok(convert::request_from_v2(request))),
                        Err(refusal) => Ok(Err(convert::refusal_from_v2(&refusal)?)),
                    }
                }
            })?;
        match request {
            Ok(r) => self.check_request(r).map(Ok),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// Decode a provider's answer.
    pub fn decode_response(
        &self,
        payment: &Payment,
        response: &HttpResponse,
    ) -> Result<Outcome, PluginFailure> {
        self.sandbox
            .call("decode-response", |b, store| match back(b)? {
                Back::V4(e) => e.call_decode_response(store, payment, response),
                Back::V2(e) => e
                    .call_decode_response(
                        store,
                        &convert::payment_to_v2(payment)?,
                        &convert::response_to_v2(response),
                    )
                    .and_then(|outcome| convert::outcome_from_v2(&outcome)),
            })
    }

    /// Verify and decode a provider's notification request. A 0.2.0 provider side reads
    /// none: every request is refused 404.
    pub fn decode_webhook(
        &self,
        request: &HttpRequest,
        context: &Context,
    ) -> Result<Result<Webhook, Refusal>, PluginFailure> {
        let decoded = self
            .sandbox
            .call("decode-webhook", |b, store| match back(b)? {
                Back::V4(e) => e.call_decode_webhook(store, request, context),
                Back::V2(_) => Ok(Err(Refusal {
                    kind: RefusalKind::NotFound,
                    status: 404,
                    code: "no_webhooks".into(),
                    message: "This provider's dialect reads no notifications.".into(),
                })),
            })?;
        match decoded {
            Ok(webhook) => {
                if webhook.notifications.len() > MAX_NOTIFICATIONS {
                    return Err(self.sandbox.bad_output(format!(
                        "decoded {} notifications from one request (at most {MAX_NOTIFICATIONS})",
                        webhook.notifications.len()
                    )));
                }
                let response = self.check_response(webhook.response)?;
                Ok(Ok(Webhook {
                    response,
                    ..webhook
                }))
            }
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// A method passed through must keep to the contract (`other-method` in `types.wit`):
    /// provider dialects take its name and fields as they are.
    fn check_other(&self, method: &OtherMethod) -> Result<(), PluginFailure> {
        let name_ok = (1..=40).contains(&method.name.len())
            && method
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let fields_ok = method.fields.len() <= 50
            && method
                .fields
                .iter()
                .all(|(n, v)| !n.is_empty() && n.len() <= 100 && v.len() <= 500);
        if name_ok && fields_ok {
            return Ok(());
        }
        Err(self.sandbox.bad_output(format!(
            "parsed a payment method outside the contract (name of {} bytes, {} fields)",
            method.name.len(),
            method.fields.len()
        )))
    }

    fn check_request(&self, r: HttpRequest) -> Result<HttpRequest, PluginFailure> {
        let body = r.body.as_ref().map(Vec::len).unwrap_or(0);
        if !r.path.starts_with('/')
            || http::Method::from_bytes(r.method.as_bytes()).is_err()
            || body > MAX_BODY
        {
            return Err(self.sandbox.bad_output(format!(
                "encoded an invalid request (method {:?}, path starting {:?}, body of {body} bytes)",
                super::sandbox::truncate(&r.method, 16),
                super::sandbox::truncate(&r.path, 16)
            )));
        }
        Ok(r)
    }

    fn check_response(&self, response: HttpResponse) -> Result<HttpResponse, PluginFailure> {
        if !(100..=599).contains(&response.status) || response.body.len() > MAX_BODY {
            return Err(self.sandbox.bad_output(format!(
                "rendered an invalid response (status {}, body of {} bytes)",
                response.status,
                response.body.len()
            )));
        }
        Ok(response)
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        self.sandbox.name()
    }
}

/// The same context, as 0.2.0's `egress` types it.
fn v2_context(context: &Context) -> egress::Context {
    egress::Context {
        provider: context.provider.clone(),
        credentials: context.credentials.clone(),
        now_ms: context.now_ms,
        idempotency_key: context.idempotency_key.clone(),
    }
}

fn front(b: &DialectInst) -> wasmtime::Result<&Front> {
    b.front.as_ref().ok_or_else(|| missing("storefront"))
}

fn back(b: &DialectInst) -> wasmtime::Result<&Back> {
    b.back.as_ref().ok_or_else(|| missing("egress"))
}

/// The outcome a record stands for, for storefront dialects that render outcomes only.
fn record_outcome(record: &PaymentRecord) -> Outcome {
    let status = match record.state {
        PaymentState::RequiresCapture | PaymentState::Succeeded => OutcomeStatus::Approved,
        // How a retrieve of a canceled payment decodes (Stripe's convention).
        PaymentState::Canceled => OutcomeStatus::Declined(super::types::Decline {
            code: "generic_decline".into(),
            provider_code: "canceled".into(),
            kind: super::types::DeclineKind::Hard,
            message: "the payment was canceled".into(),
        }),
        PaymentState::Processing => OutcomeStatus::Pending,
        _ => match &record.last_outcome {
            Some(outcome) => outcome.status.clone(),
            None => OutcomeStatus::Error(Failure {
                class: ErrorClass::NotSent,
                code: "not_confirmed".into(),
                provider_code: String::new(),
                message: "the payment has not been confirmed".into(),
            }),
        },
    };
    Outcome {
        status,
        provider_reference: None,
        amount: record.payment.amount.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Money, Operation};

    fn record(state: PaymentState, last_outcome: Option<Outcome>) -> PaymentRecord {
        PaymentRecord {
            id: "pi_1".into(),
            payment: Payment {
                amount: Some(Money {
                    minor: 100,
                    currency: "EUR".into(),
                }),
                ..crate::plugin::blank_payment(Operation::Authorize)
            },
            state,
            created: 0,
            amount_captured: 0,
            amount_refunded: 0,
            last_outcome,
        }
    }

    #[test]
    fn a_record_reads_as_the_outcome_it_stands_for_in_a_0_2_0_dialect() {
        let status = |r: &PaymentRecord| record_outcome(r).status;
        assert_eq!(
            status(&record(PaymentState::Succeeded, None)),
            OutcomeStatus::Approved
        );
        assert_eq!(
            status(&record(PaymentState::Processing, None)),
            OutcomeStatus::Pending
        );
        assert!(
            matches!(status(&record(PaymentState::Canceled, None)), OutcomeStatus::Declined(d) if d.provider_code == "canceled"),
            "a canceled payment never reads as paid"
        );
        // Not confirmed yet: nothing happened anywhere, which a 0.2.0 dialect renders as an
        // error that charged nothing.
        assert!(matches!(
            status(&record(PaymentState::RequiresConfirmation, None)),
            OutcomeStatus::Error(Failure {
                class: ErrorClass::NotSent,
                ..
            })
        ));
        // A failed payment shows its decline.
        let declined = Outcome {
            status: OutcomeStatus::Declined(crate::plugin::types::Decline {
                code: "insufficient_funds".into(),
                provider_code: "51".into(),
                kind: crate::plugin::types::DeclineKind::Hard,
                message: String::new(),
            }),
            provider_reference: None,
            amount: None,
        };
        assert_eq!(
            status(&record(PaymentState::Failed, Some(declined.clone()))),
            declined.status
        );
        assert_eq!(
            record_outcome(&record(PaymentState::Failed, None))
                .amount
                .unwrap()
                .minor,
            100
        );
    }
}
