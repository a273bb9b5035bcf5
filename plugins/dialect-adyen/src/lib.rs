//! `dialect-adyen`: the provider side of an Adyen-like Checkout API (egress only).
//!
//! # Config
//!
//! ```json
//! { "base_path": "/adyen/v71", "merchant_account": "PayproxyECOM" }
//! ```
//!
//! Both optional. `base_path` (default `/adyen/v71`, the simulator's) is put before every path;
//! `merchant_account` is used when the provider's credentials carry no `merchant_account`.
//! Credentials: `api_key` (sent as `X-API-Key`), optional `merchant_account`.
//!
//! # Protocol
//!
//! - authorize → `POST {base}/payments`, JSON
//!   `{"merchantAccount", "amount": {"value": <minor units>, "currency"}, "reference",
//!   "paymentMethod": {"type": "scheme", "storedPaymentMethodId": <card token>} | {"type": "ideal"} | {"type": <wallet>},
//!   "countryCode"?, "shopperEmail"?, "shopperReference"?, "returnUrl"?, "installments"?: {"value"},
//!   "metadata"?, "additionalData"?: {"manualCapture": "true", "scaExemption": "lowValue"|…}}`.
//!   `reference` is the merchant reference, else the payment id, else the idempotency key.
//!   A method the contract has no record for (`other`, e.g. `mbway`, `blik`) is sent as
//!   `{"type": <its name>, <its fields as given>}` (`telephoneNumber`, `blikCode`); nested
//!   fields, and card types or card fields (`scheme`, `encryptedCardNumber`, `cvc` …), are
//!   refused before anything is sent.
//! - capture / refund → `POST {base}/payments/{pspReference}/captures|refunds` with
//!   `{"merchantAccount", "amount", "reference"}` (the amount is required: Adyen has no
//!   "full amount" default); void → `…/cancels` with `{"merchantAccount", "reference"}`.
//!   Answer `{"pspReference", "paymentPspReference", "status": "received"}` (201/202).
//! - status → refused (`operation_unsupported`): Adyen reports by webhook, not by query.
//! - Headers: `X-API-Key`, `Idempotency-Key: <context idempotency key>` on every request;
//!   Adyen replays the first answer for a repeated key, so resending is safe.
//!
//! Answers are mapped in [`decode`] (resultCode) and [`codes`] (refusal reasons, HTTP errors).
//!
//! # Notifications (`decode-webhook`)
//!
//! Adyen's standard notification webhook, received by payproxy at `POST /webhooks/{provider}`:
//! credential `hmac_key` (the webhook's HMAC key, hex, as Adyen's Customer Area shows it).
//! Every `NotificationRequestItem` must carry a valid `additionalData.hmacSignature` (base64
//! HMAC-SHA256 over `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`),
//! else 401 `invalid_signature`; an unreadable body is 400. `AUTHORISATION` → status
//! (approved / declined), `CAPTURE` → capture, `REFUND` → refund, `CANCELLATION` → void,
//! each about the payment's `pspReference`; the answer is `[accepted]`. See [`webhook`].
//! Nothing with a secret or a card number reaches a refusal or an outcome message.

pub mod codes;
pub mod config;
pub mod decode;
pub mod encode;
pub mod webhook;

use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal, Webhook,
};

pub use config::Config;

/// The plugin: its parsed config.
pub struct Adyen {
    config: Config,
}

impl Egress for Adyen {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Adyen {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            idempotent_resend: true,
            status_query: false,
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

export_egress_v4!(Adyen);
