//! Contract version 0.4.0: the storefront side of a dialect.
//!
//! A storefront keeps its whole integration (say, a Stripe SDK) and changes one base URL. A
//! 0.4.0 dialect therefore says, for every storefront request, what it asks of payproxy
//! ([`Call`]): a payment operation payproxy orchestrates, a list of the payments made
//! through payproxy, or anything else, which the host forwards unchanged. Implement
//! [`Storefront`] (and [`Egress`](crate::payment::Egress) for the provider side, whose
//! contract is 0.2.0's, unchanged) and export it with
//! [`export_storefront_dialect!`](crate::export_storefront_dialect) (both sides) or
//! [`export_storefront!`](crate::export_storefront) (storefront only). The types are the
//! 0.2.0 ones ([`crate::payment`]) plus the few below: a payment is one Rust type for every
//! role and version.
//!
//! ```ignore
//! use payproxy_plugin_sdk::export_storefront_dialect;
//! use payproxy_plugin_sdk::payment::{Egress, HttpRequest, Refusal /* … */};
//! use payproxy_plugin_sdk::storefront::{Call, PaymentRecord, Storefront};
//!
//! struct Shop;
//! impl Storefront for Shop { /* init, parse, render_* */ }
//! impl Egress for Shop { /* init, encode_request, decode_response */ }
//! export_storefront_dialect!(Shop);
//! ```
//!
//! # What the host does with the answers
//!
//! - [`Call::Payment`]: the payment goes through idempotency, affinity, compliance, routing
//!   and the providers, as with 0.2.0. A follow-up (`id` set) is completed by the host from
//!   its record of that payment (amount, currency, method, customer …) before compliance and
//!   the router see it. For a new payment (`authorize` without `id`), `confirm: false` only
//!   creates it: nothing is sent to any provider, the host records it (state
//!   [`PaymentState::RequiresPaymentMethod`] without a method, else
//!   [`PaymentState::RequiresConfirmation`]) and answers with
//!   [`Storefront::render_payment`]. A later confirm is `authorize` with `id` and
//!   `confirm: true`; its parameters override the recorded ones. `authorize` with `id` and
//!   `confirm: false` is an update: applied to a payment the host holds while nothing was
//!   sent for it (afterwards metadata and description only), forwarded unchanged to a
//!   provider of the storefront's dialect that knows the payment by that id, refused
//!   otherwise. (Hosts before updates took it for a confirm: a dialect that means a confirm
//!   sends `true`.) `confirm` is ignored for other operations.
//! - [`Call::List`]: the host answers from its records with [`Storefront::render_list`]:
//!   payments of this route, newest first, at most `limit` of them, `has_more` when more
//!   match; `url` is the request's path.
//! - [`Call::Forward`]: the request is sent unchanged (path, query, body) with the provider's
//!   own credentials to the provider that owns the object id given (an intent or a refund
//!   made at another account of the same dialect), when the host knows that id, else to the
//!   route's home provider, authenticated with [`Storefront::forward_headers`] (the
//!   storefront's own `authorization` and `cookie` are removed); the provider's answer goes
//!   back unchanged. The host refuses raw card data in any request before `parse` runs;
//!   a dialect may refuse card-like values as well.
//! - [`Storefront::render_payment`] answers from a record: a create without confirm, a
//!   retrieve the host answers itself, a cancel of a payment nothing was sent for.
//!   `last_outcome` is the last provider outcome, when there was one (a decline of a
//!   [`PaymentState::Failed`] payment, the next action of
//!   [`PaymentState::RequiresAction`]).
//! - Refusals the host makes itself, rendered with [`Storefront::render_refusal`]: invalid
//!   request refusals (status 400 unless said otherwise) with code `unexpected_state` (the
//!   payment's state does not allow the operation; the message names the state),
//!   `already_refunded` (nothing left to refund) and `amount_too_large` (a capture or refund
//!   above what is left; param `amount`), plus the 0.2.0 ones (`idempotency_…`, not found,
//!   unavailable, compliance denials and challenges).
//! - A provider failure whose code is `invalid_request` ([`crate::helpers::codes`]) means the
//!   provider refused the merchant's request as malformed: the host does not fail over, does
//!   not count it against the provider's health, and renders it with
//!   [`Storefront::render_outcome`]; a dialect shows it as the storefront protocol's
//!   client error (not as a retryable server error).
//! - Events (webhooks): on a route with `webhooks`, each change the host records of a payment
//!   (created; moved to requires-action, processing, requires-capture, succeeded, failed or
//!   canceled, or a new outcome in failed / requires-action; an amount refunded) is a
//!   [`PaymentEvent`] with a host-minted id, rendered once by [`Storefront::render_event`]
//!   and stored with the record; the host delivers the stored body, in order per payment,
//!   with the headers [`Storefront::sign_event`] returns for each attempt (the time of the
//!   attempt, so receivers' timestamp tolerances hold on retries). Both default to nothing:
//!   a dialect that renders no events sends none.
//! - Card details: before compliance and routing, for a card payment on a route with a
//!   home provider, the host asks
//!   [`Storefront::card_lookup`] for the request that reads the token at the route's home
//!   provider, sends it with the home provider's credentials, caches the answer per token,
//!   and reads it with [`Storefront::card_details`]: `brand` fills `Card.network`,
//!   `country` fills `Card.issuer_country`, `last4` fills `Card.last4` (values the
//!   storefront sent are kept). A lookup that fails or answers nothing usable leaves the card
//!   as it was; the payment goes on.

pub use crate::bindings::v4::storefront::exports::payproxy::plugin::storefront::{
    Call, EventKind, ListQuery, PaymentCall, PaymentEvent, PaymentRecord, PaymentState,
    RenderedEvent,
};
pub use crate::payment::CardDetails;

/// A request header the host adds to a storefront request it asks the dialect to parse as
/// payproxy would act on it from the canonical [`Payment`] (an intent created without
/// confirm, a payment its provider knows by another id or in another dialect, a payment
/// routed to a provider of another dialect): what then reaches a provider is what the
/// canonical payment carries, never the request as sent. Marked, a dialect refuses what the
/// request carries that the canonical payment cannot. The host parses every request marked
/// first; when that is refused and the request as it is is not, the request may still go
/// unchanged to a provider of its own dialect, and wherever the host would make the
/// provider's request itself it answers the marked parse's refusal. The host never forwards
/// this header, and drops a storefront's own copy.
///
/// [`Payment`]: crate::payment::Payment
pub const HELD_HEADER: &str = "payproxy-held-payment";

use crate::payment::{Annotation, HttpRequest, HttpResponse, Outcome, Payment, Refusal};

/// Storefront side of a 0.4.0 dialect.
pub trait Storefront: Sized + 'static {
    /// Parse and validate the plugin's JSON config.
    fn init(config: &str) -> Result<Self, String>;
    /// What a storefront request asks for; a refusal is rendered with
    /// [`render_refusal`](Storefront::render_refusal) and nothing is sent anywhere.
    fn parse(&self, request: &HttpRequest) -> Result<Call, Refusal>;
    /// Render a provider's outcome for a payment operation (as 0.2.0's
    /// [`Ingress::render_outcome`](crate::payment::Ingress::render_outcome)).
    fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> HttpResponse;
    /// Render a payment from the host's record.
    fn render_payment(&self, record: &PaymentRecord) -> HttpResponse;
    /// Render a page of payments, newest first; `url` is the request's path.
    fn render_list(&self, records: &[PaymentRecord], has_more: bool, url: &str) -> HttpResponse;
    /// Render a refusal for the storefront.
    fn render_refusal(&self, refusal: &Refusal) -> HttpResponse;
    /// The headers that authenticate a request forwarded unchanged ([`Call::Forward`]) to a
    /// provider of this dialect, from that provider's `credentials` (e.g. `authorization:
    /// Bearer <api_key>`). The host first removes the storefront's own `authorization`,
    /// `cookie` and these headers from the forwarded request, so the provider only ever sees
    /// its own credentials. Default: none (the request is forwarded unauthenticated).
    fn forward_headers(&self, _credentials: &[(String, String)]) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The request that reads a card token's details at the home provider, sent by the host
    /// with the home provider's `credentials`; `None` (the default) when the token is not one
    /// the home provider issued.
    fn card_lookup(&self, _token: &str, _credentials: &[(String, String)]) -> Option<HttpRequest> {
        None
    }
    /// Read the home provider's answer to [`card_lookup`](Storefront::card_lookup) (the
    /// contract's `read-card`); `None` (the default) when it says nothing usable.
    fn card_details(&self, _response: &HttpResponse) -> Option<CardDetails> {
        None
    }
    /// The storefront's event for a state change of a payment (the contract's
    /// `render-event`), rendered once when the host records the change and delivered to the
    /// merchant's webhook endpoints as is. It should carry `event.id` (the host's event id,
    /// one per change). `None` (the default): this dialect sends no event for it.
    fn render_event(&self, _event: &PaymentEvent) -> Option<RenderedEvent> {
        None
    }
    /// The headers that sign one delivery of an event `body` with an endpoint's `secret`, at
    /// `now_s` (Unix seconds; called again at every delivery attempt). Default: none (the
    /// event is delivered unsigned).
    fn sign_event(&self, _body: &[u8], _secret: &str, _now_s: i64) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl PaymentCall {
    /// A payment operation; `confirm` matters for an authorization only: a new one is
    /// created (`false`) or charged (`true`), an existing one (`id` set) updated (`false`)
    /// or confirmed (`true`).
    pub fn new(payment: Payment, confirm: bool) -> PaymentCall {
        PaymentCall { payment, confirm }
    }
}

impl ListQuery {
    /// The first `limit` payments, no bounds.
    pub fn new(limit: u32) -> ListQuery {
        ListQuery {
            limit,
            starting_after: None,
            ending_before: None,
            created_gte: None,
            created_lte: None,
            customer: None,
        }
    }
}

/// Glue used by the export macros; not part of the public API.
#[doc(hidden)]
pub mod __glue {
    /// The refusal of a storefront called before `init`.
    pub fn not_initialised() -> crate::payment::Refusal {
        crate::payment::Refusal {
            kind: crate::payment::RefusalKind::Unavailable,
            status: 500,
            code: "plugin_not_initialised".into(),
            message: "storefront called before init".into(),
        }
    }

    /// The response of a storefront called before `init`.
    pub fn empty_500() -> crate::payment::HttpResponse {
        crate::payment::HttpResponse {
            status: 500,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}
