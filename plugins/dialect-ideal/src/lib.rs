//! `dialect-ideal`: the provider side of an iDEAL-like bank redirect API and its status
//! notifications (egress only).
//!
//! # Config
//!
//! ```json
//! { "base_path": "/ideal/v1", "default_description": "Webshop order" }
//! ```
//!
//! Both optional. `base_path` (default `/ideal/v1`) is put before every path;
//! `default_description` is the bank statement text when a payment has no description
//! (default: the merchant reference). Credentials: `api_key`, sent as `Authorization: Bearer`.
//!
//! # Protocol
//!
//! - authorize → `POST {base}/transactions` with `Idempotency-Key: <context key>`, JSON
//!   `{"amount": "10.00", "currency": "EUR", "iban"?, "bic"?, "reference", "returnUrl", "description"}`;
//!   answer `{"transactionId", "status": "open", "issuerAuthenticationUrl"}` → requires-action
//!   redirect, provider reference = `transactionId`. The method must be a bank redirect with
//!   scheme `ideal`, the currency EUR, a return URL present, and an IBAN (when given) must pass
//!   the ISO 13616 length and mod-97 checks ([`iban`]) — all refused before sending. Refusals
//!   never show more than the IBAN's last four characters. `reference` is the merchant
//!   reference, else the payment id, else the idempotency key; `description` ≤ 35 characters.
//! - status → `GET {base}/transactions/{id}` → `{"status": "open"|"success"|"failure"|"expired"|"cancelled"}`
//!   ([`codes`]: an `open` transaction is still requires-action, with the URL when the answer
//!   repeats it, else pending).
//! - refund → `POST {base}/transactions/{id}/refunds` `{"amount"?, "currency": "EUR", "reference"?}`
//!   (no amount: what is left) → `{"refundId", "status": "success"|"pending"|"failure"}`.
//! - capture, void → refused `operation_unsupported` (iDEAL pays at once); manual capture refused.
//!
//! Resending with the same `Idempotency-Key` replays the first answer, and the status query
//! settles an ambiguous attempt.
//!
//! # Notifications
//!
//! `decode-webhook` reads the provider's status notifications (`{"notificationId", "type":
//! "transaction.status"|"refund.status", "transactionId", "refundId"?, "status", "amount",
//! "currency", "reference"}`): final transaction statuses are `status` notifications
//! (success → approved; failure, expired, cancelled → declined), successful or failed refunds
//! `refund` ones, all for the `transactionId`, event id `notificationId`. Credential
//! `webhook_secret`: `x-ideal-signature` = hex HMAC-SHA256 of `<x-ideal-timestamp>.<raw body>`,
//! the timestamp (Unix seconds) within 300 s of the host's clock. See [`webhook`].

pub mod codes;
pub mod config;
pub mod decode;
pub mod encode;
pub mod iban;
pub mod webhook;

use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal, Webhook,
};

pub use config::Config;

/// The plugin: its parsed config.
pub struct Ideal {
    config: Config,
}

impl Egress for Ideal {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Ideal {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            idempotent_resend: true,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        encode::request(&self.config, payment, context)
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        decode::response(payment, response)
    }

    fn decode_webhook(&self, request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
        webhook::decode(request, context)
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_egress_v4!(Ideal);
