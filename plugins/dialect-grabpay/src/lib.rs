//! `dialect-grabpay`: the provider side of a GrabPay-like JSON API with HMAC-SHA256 request
//! signing (an egress-only dialect).
//!
//! # Config
//!
//! ```json
//! { "description": "Payment", "currencies": ["SGD", "MYR", "PHP", "THB", "VND", "IDR"] }
//! ```
//!
//! Both fields are optional: `description` is sent when the payment has none (default
//! `"Payment"`); `currencies` narrows the accepted currencies (default: all six GrabPay
//! takes). Credentials come from the provider's config, per call, in `Context.credentials`:
//! `partner_id`, `partner_secret` (the HMAC key) and `merchant_id`. A missing one refuses
//! the payment with `provider_misconfigured` (500, unavailable), naming the key, never a value.
//!
//! # Protocol
//!
//! | operation | request |
//! |-----------|---------|
//! | authorize | `POST /grabpay/v2/charge/init` `{"partnerTxID","partnerGroupTxID","amount","currency","description","merchantID","authoriseOnly"}` |
//! | capture   | `POST /grabpay/v2/charge/{txID}/capture` `{"partnerTxID","merchantID","amount"?,"currency"?}` |
//! | refund    | `POST /grabpay/v2/charge/{txID}/refund` (same body) |
//! | void      | `POST /grabpay/v2/charge/{txID}/cancel` `{"partnerTxID","merchantID"}` |
//! | status    | `GET /grabpay/v2/charge/{txID or partnerTxID}/status` (no body) |
//!
//! Amounts are minor units, currencies upper-case ISO 4217. `partnerTxID` is GrabPay's
//! idempotency key: the first 32 hex digits of SHA-256(`Context.idempotency_key`), so a
//! resend with the same host key is the same GrabPay transaction. `partnerGroupTxID` is the
//! merchant reference (or `partnerTxID` when the payment has none). `txID` is the
//! provider reference the host keeps for follow-ups.
//!
//! Every request carries `date` (IMF-fixdate from `Context.now_ms`), `content-type:
//! application/json` when it has a body, and `authorization: <partner_id>:<signature>`, see
//! [`signing`]. Answers are `{"partnerTxID","txID","status","reason"?,"code"?}` with status
//! `success` / `authorised` (approved), `pending`, `failed` (declined, by `code`); HTTP
//! errors map through [`mapping`] (500 → retryable `provider_unavailable`, like DANA's
//! `SYSTEM_ERROR`).
//!
//! # Notifications
//!
//! `decode-webhook` reads GrabPay's transaction status webhooks (`{"txType":
//! "payment"|"capture"|"cancel"|"refund", "partnerTxID", "partnerGroupTxID", "txID",
//! "originTxID"?, "status", "amount", "currency", "code"?, "reason"?}`): payments become
//! `status` notifications (success/authorised → approved, failed/cancelled → declined),
//! follow-ups `capture`, `void` and `refund` ones, all for the charge's `txID`. No extra
//! credential: a notification is signed like GrabPay's requests ([`signing`]), with the same
//! `partner_id` and `partner_secret`, over `POST`, its content type, `date` (within 300 s of
//! the host's clock), the request path and the body hash. See [`webhook`].

pub mod config;
pub mod decode;
pub mod encode;
pub mod mapping;
pub mod signing;
pub mod webhook;

use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal, Webhook,
};

pub use config::Config;

/// The plugin: its parsed config.
pub struct GrabPay {
    config: Config,
}

impl Egress for GrabPay {
    fn init(config: &str) -> Result<Self, String> {
        Ok(GrabPay {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Same host key → same partnerTxID, which GrabPay deduplicates.
            idempotent_resend: true,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        encode::encode(&self.config, payment, context)
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        decode::decode(payment, response)
    }

    fn decode_webhook(&self, request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
        webhook::decode(request, context)
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_egress_v4!(GrabPay);

#[cfg(test)]
mod tests;
