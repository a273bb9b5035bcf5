//! `dialect-dana`: the provider side of a DANA-like XML API (an egress-only dialect).
//!
//! # Config
//!
//! ```json
//! { "order_title": "Payment" }
//! ```
//!
//! `order_title` (optional, default `"Payment"`) is the `<orderTitle>` when the payment has
//! no description. Credentials come from the provider's config, per call, in
//! `Context.credentials`: `client_id` (`<clientId>`) and `merchant_id` (`<merchantId>`). A
//! missing one refuses the payment with `provider_misconfigured` (500, unavailable).
//!
//! # Protocol
//!
//! One endpoint, `POST /dana/v1/payment.xml` with `content-type: application/xml`; the
//! `<function>` in the head selects the call:
//!
//! ```xml
//! <request><head><version>2.0</version><function>dana.acquiring.order.create</function>
//!   <clientId>…</clientId><reqTime>2023-11-15T05:13:20+07:00</reqTime><reqMsgId>{idempotency key}</reqMsgId></head>
//! <body><merchantId>…</merchantId><merchantTransId>{merchant reference}</merchantTransId>
//!   <order><orderTitle>…</orderTitle><orderAmount><value>150000.00</value><currency>IDR</currency></orderAmount></order>
//!   <shopperPhone>+62…</shopperPhone></body></request>
//! ```
//!
//! | operation | `<function>` | body |
//! |-----------|--------------|------|
//! | authorize | `dana.acquiring.order.create` | merchantId, merchantTransId, order, shopperPhone |
//! | status    | `dana.acquiring.order.query`  | merchantId, acquirementId (or merchantTransId) |
//! | void      | `dana.acquiring.order.cancel` | merchantId, acquirementId (or merchantTransId) |
//! | refund    | `dana.acquiring.order.refund` | merchantId, acquirementId, refundAmount? (absent: what remains) |
//! | capture   | refused `operation_unsupported` (DANA captures on payment) |
//!
//! Only e-wallet `dana` payments with an E.164 phone (the wallet's, else the customer's), in
//! IDR, amounts as decimal strings with the ISO 4217 exponent (`to_decimal`). `reqMsgId` is
//! the host's idempotency key: DANA replays the first answer to a resend.
//! `reqTime` is ISO-8601 at +07:00 from `Context.now_ms`. Every text in a request is escaped
//! by quick-xml (references with `<&>"'` travel escaped), and answers are read with its pull
//! parser, which resolves references; see [`xml`].
//!
//! Answers: `<response><head>…</head><body><resultInfo><resultStatus>S|F|U|A</resultStatus>
//! <resultCodeId/><resultCode/><resultMsg/></resultInfo><acquirementId/><checkoutUrl/>…</body></response>`.
//! A successful create with a `checkoutUrl` is requires-action (redirect there), without one
//! approved; other codes map through [`mapping`] (`SYSTEM_ERROR` → retryable
//! `provider_unavailable`, like GrabPay's HTTP 500). A 2xx answer without a readable
//! `resultInfo` is an ambiguous `provider_error`.
//!
//! # Notifications
//!
//! `decode-webhook` reads DANA's JSON finish notifications (`{"request": {"head": {"function":
//! "dana.acquiring.order.finishNotify"|"dana.acquiring.refund.finishNotify", …}, "body":
//! {"acquirementId", "merchantTransId", "acquirementStatus"|"refundStatus", …}}}`): order
//! `SUCCESS` → `status` approved, `CLOSED`/`CANCELLED` → declined, refund `SUCCESS`/`FAIL` →
//! `refund`, all for the `acquirementId`, and answers DANA's `resultInfo` success. Credential
//! `webhook_secret`: SNAP-style headers `x-timestamp` (ISO-8601, within 300 s of the host's
//! clock) and `x-signature` = base64 HMAC-SHA256 of
//! `POST:<path>:<hex SHA-256(raw body)>:<x-timestamp>`. See [`webhook`].

pub mod config;
pub mod decode;
pub mod encode;
pub mod mapping;
pub mod time;
pub mod webhook;
pub mod xml;

use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal, Webhook,
};

pub use config::Config;

/// The plugin: its parsed config.
pub struct Dana {
    config: Config,
}

impl Egress for Dana {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Dana {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // reqMsgId is the host's key: a resend is answered from DANA's first answer.
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

export_egress_v4!(Dana);

#[cfg(test)]
mod tests;
