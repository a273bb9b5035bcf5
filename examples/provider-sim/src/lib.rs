//! Simulated payment providers on loopback: a Stripe-like API, a ledger and fault injection.
//!
//! Each simulated provider has its own listener (HTTP/1.1 and h2c), its own ledger and its own
//! faults. End-to-end tests start them in-process with [`Simulator::start`]; the demo runs the
//! `provider-sim` binary. Every response carries `x-sim-provider: <name>`.
//!
//! Routes on every provider:
//! - `POST /v1/payment_intents`, `GET /v1/payment_intents/{id}`,
//!   `POST /v1/payment_intents/{id}/{capture,cancel,confirm}`, `POST /v1/refunds` — Stripe
//!   style (form bodies, `Idempotency-Key`, Stripe error shape).
//! - `POST /grabpay/v2/charge/init`, `POST /grabpay/v2/charge/{txID}/{capture,refund,cancel}`,
//!   `GET /grabpay/v2/charge/{id}/status` — GrabPay style: JSON, HMAC-SHA256 signed with the
//!   credentials of [`grabpay_credentials`] (bad or missing signature → 401, nothing recorded),
//!   `partnerTxID` as idempotency key.
//! - `POST /dana/v1/payment.xml` (`dana.acquiring.order.create|query|cancel|refund`),
//!   `GET /dana/v1/checkout/{acquirementId}` (the shopper pays) — DANA style: strict XML,
//!   `reqMsgId` as idempotency key.
//! - `POST /oauth/token` — an OAuth 2.0 client-credentials token endpoint; off until enabled
//!   ([`OAuthSettings`]), then API calls need a live token it issued.
//! - `/__sim/…` — the control API (ledger, faults, OAuth, webhooks, reset, health); never
//!   counted, never faulted.
//! - `POST /__sim/webhooks` `{"url": "http://127.0.0.1:P/webhooks/NAME", "secret": "…",
//!   "delay_ms": 0}` turns on the provider's notifications (`{"url": null}` off; off at start
//!   and after a reset), [`Simulator::set_webhooks`] from Rust. Dialects that notify send
//!   them in the background as `POST {url}` signed with the secret, retried on a connection
//!   error or a non-2xx answer (5 attempts, 100 ms backoff doubling); `GET /__sim/webhooks`
//!   ([`Simulator::webhooks_sent`]) lists every notice with its attempts. Adyen sends
//!   standard notifications (`AUTHORISATION`, `CAPTURE`, `CANCELLATION`, `REFUND`, HMAC in
//!   `additionalData.hmacSignature`, the secret being the hex key); Stripe sends events
//!   (`payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`) signed
//!   in `Stripe-Signature`.
//! - anything else — echo: a JSON description of what arrived, for transparency tests.
//!
//! [`Faults`] (per provider, `POST /__sim/faults` or [`Simulator::set_faults`]): latency,
//! a deterministic share of errors and outage act before a request is processed; a timeout
//! after charging (`timeout_after_charge_ms`) and a reset mid-response (`reset_mid_response`)
//! act after it was processed in full, so the ledger holds a charge the client never heard of;
//! `charge_then_unavailable` charges (and notifies, `notify_delay_ms` later) yet answers 503
//! "not processed" (Adyen and Stripe payments); `refunds_refused` accepts an Adyen refund,
//! refunds nothing and notifies `REFUND` with `success: false`.
#![forbid(unsafe_code)]

mod adyen;
mod body;
mod control;
mod dana;
mod echo;
mod faults;
mod form;
mod grabpay;
mod ideal;
mod json_api;
mod ledger;
mod notify;
mod oauth;
mod pix;
mod provider;
mod respond;
mod server;
mod service;
mod simulator;
mod stripe;
#[cfg(test)]
mod test_client;

pub use faults::Faults;
pub use grabpay::grabpay_credentials;
pub use ledger::{Charge, Refund};
pub use notify::{SentWebhook, WebhookAttempt, WebhookSettings};
pub use oauth::{OAuthSettings, OAuthStats};
pub use simulator::{parse_provider_arg, Simulator, DEFAULT_PROVIDERS};
