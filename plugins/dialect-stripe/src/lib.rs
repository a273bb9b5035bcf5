//! `dialect-stripe`: Stripe's PaymentIntents and Refunds API, both sides.
//!
//! **Ingress** (storefront side): a storefront using a Stripe SDK points its base URL at
//! payproxy; this dialect parses its requests into the canonical payment and renders outcomes
//! and refusals back as Stripe objects and Stripe errors. **Egress** (provider side): it
//! speaks the same API to a Stripe-like provider (the simulator's `/v1/…` routes).
//!
//! # Config
//!
//! Every field is optional; `{}` takes the defaults.
//!
//! ```json
//! { "reference_keys": ["order_id", "merchant_reference"],
//!   "egress_reference_key": "order_id",
//!   "stripe_version": null,
//!   "server_errors": "answered_not_processed",
//!   "refuse_card_like_values": true }
//! ```
//!
//! - `reference_keys`: metadata keys read as the merchant reference, first present wins.
//! - `egress_reference_key`: the metadata key the merchant reference is sent under.
//! - `stripe_version`: a `Stripe-Version` header for egress requests.
//! - `server_errors`: class of a 5xx answer carrying a Stripe `api_error` object:
//!   `answered_not_processed` (the simulator answers its injected faults before doing
//!   anything, so failover is safe) or `ambiguous` (what Stripe documents for its own 500s).
//! - `refuse_card_like_values`: refuse any value containing what looks like a card number
//!   (13–19 digits in groups, starting 2–6, passing Luhn; not right after `+`, which is a
//!   phone), except the numeric parameters (`amount`, `tax_id`, `phone` …). Card tokens are
//!   always checked.
//!
//! # Routes (ingress)
//!
//! | request | operation |
//! |---|---|
//! | `POST /v1/payment_intents` | authorize (payproxy always confirms; `confirm` is checked, not used) |
//! | `POST /v1/payment_intents/{id}/confirm` | authorize, `id` set |
//! | `POST /v1/payment_intents/{id}/capture` | capture, optional `amount_to_capture` |
//! | `POST /v1/payment_intents/{id}/cancel` | void |
//! | `GET /v1/payment_intents/{id}` | status |
//! | `POST /v1/refunds` (`payment_intent`, optional `amount`) | refund, `id` = the intent |
//!
//! Bodies are forms with Stripe's nested keys. `amount` is a positive integer in minor units
//! (`10.50` → `parameter_invalid_integer`), `currency` a known ISO 4217 code (else
//! `invalid_currency`), upper-cased in the canonical payment. Captures and refunds carry no
//! currency on Stripe: their amount has currency `""` (or the optional `currency`
//! parameter) and the host fills it from the payment they refer to. `Idempotency-Key` →
//! idempotency key; all `metadata[…]` is kept, `metadata[order_id]` (or
//! `metadata[merchant_reference]`) is the merchant reference.
//!
//! # Payment methods (payproxy's convention within Stripe's shape; egress sends the same)
//!
//! | parameters | canonical |
//! |---|---|
//! | `payment_method_data[type]=card`, `[card][token]` (or `payment_method=pm_…`), `[card][bin]`, `[card][last4]`, `[card][network]`, `[card][country]` (issuer) | card |
//! | `type=ideal`, `[ideal][iban]`, `[ideal][bic]` or `[ideal][bank]` (BIC or Stripe bank name) | bank redirect `ideal` |
//! | `type=pix`, `[pix][tax_id]` (CPF/CNPJ, punctuation dropped) | instant transfer `pix` |
//! | `type=grabpay` / `dana`, or `type=ewallet` + `[ewallet][wallet]` | e-wallet |
//! | `type=oxxo` | cash voucher `oxxo` |
//! | `[billing_details][phone]` (E.164), `[billing_details][phone_verified]=true` | customer phone (and wallet phone) |
//! | `[billing_details][address][country]`, else `shipping[address][country]` | shopper country |
//! | `customer`, `receipt_email` | customer id, email |
//! | `payment_method_options[card][installments][plan][count]` | installments |
//! | `payment_method_options[card][three_d_secure][authenticated]=true` | strong auth done |
//! | `payment_method_options[card][exemption]=low_value\|tra\|recurring\|moto` | exemption asked |
//! | `capture_method=manual`, `return_url`, `description` | same |
//!
//! Without `payment_method_data[type]` the only `payment_method_types[]` entry names the
//! method. Raw card data (`…[card][number]`, `…[card][cvc]`) is refused with
//! `card_number_not_accepted` and never echoed.
//!
//! # Rendering (ingress)
//!
//! Approved → `succeeded` (`requires_capture` for manual capture; `canceled` for a void);
//! redirect → `requires_action` with `next_action.redirect_to_url` (`oxxo_display_details` for
//! OXXO); QR → `next_action.<type>_display_qr_code.data` (`pix_display_qr_code` for Pix);
//! pending → `processing`; declined → 402 `card_error` (`card_declined` with Stripe's
//! `decline_code`, the intent in `error.payment_intent`; a retrieve answers 200 with
//! `requires_payment_method` and `last_payment_error`); error → 503 `api_error` with
//! `Stripe-Should-Retry: true` when nothing was charged, 502 with the intent `processing`
//! when the payment may exist. Refunds render as Refund objects (`failed` +
//! `failure_reason` when declined). Compliance annotations are added as
//! `payproxy_annotations: [{kind, name, rate_bp, amount, currency, note}]` when present.
//!
//! Refusals: invalid request → 400 (or the host's 4xx) `invalid_request_error` with `code`
//! and `param` (`idempotency_error` for `idempotency…` codes); compliance denial → 402
//! `card_error` with the rule's code, since its message is meant for the shopper; strong
//! authentication → 402 `card_error` `authentication_required`; phone verification → 402
//! `card_error` `phone_verification_required`; unavailable → 503 (or the host's 5xx)
//! `api_error`; not found → 404 `resource_missing`.
//!
//! # Egress
//!
//! `POST /v1/payment_intents` (amount, lower-case currency, `confirm=true`,
//! `capture_method`, the method convention above, `metadata[…]` with the merchant reference
//! as `metadata[order_id]`), `…/{ref}/confirm|capture|cancel`, `GET …/{ref}`,
//! `POST /v1/refunds` (`payment_intent={ref}`). Headers: `Idempotency-Key` from the context
//! (POST), `Authorization: Bearer <credentials.api_key>` when given. Answers: PaymentIntent
//! `succeeded` / `requires_capture` → approved (`canceled` → approved for a void, a hard
//! decline with provider code `canceled` otherwise), `requires_action` → redirect or QR,
//! `processing` → pending, `requires_payment_method` → decline from `last_payment_error`;
//! Stripe errors: `card_error` → decline through [`codes::DECLINE_CODES`], 429 →
//! `rate_limited`, 5xx `api_error` → `provider_error` (500) or `provider_unavailable`
//! (502–504), answered-not-processed by default (`server_errors`), other errors per
//! [`codes::ERRORS`]; a 2xx that is not the expected object → ambiguous.

pub mod codes;
pub mod config;
pub mod decode;
pub mod encode;
pub mod form;
mod method;
pub mod parse;
mod refuse;
mod render;
mod validate;

use payproxy_plugin_sdk::export_dialect;
use payproxy_plugin_sdk::payment::{
    Annotation, Capabilities, Context, Egress, HttpRequest, HttpResponse, Ingress, Outcome,
    Payment, Refusal,
};

pub use config::Config;

/// The plugin: its parsed config. One value serves both sides.
pub struct Stripe {
    config: Config,
}

impl Ingress for Stripe {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Stripe {
            config: Config::parse(config)?,
        })
    }

    fn parse_request(&self, request: &HttpRequest) -> Result<Payment, Refusal> {
        parse::request(&self.config, request)
    }

    fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> HttpResponse {
        render::outcome(payment, outcome, payment_id, annotations)
    }

    fn render_refusal(&self, refusal: &Refusal) -> HttpResponse {
        render::refusal(refusal)
    }

    fn request_id(&self, request: &HttpRequest) -> Option<String> {
        parse::request_id(request)
    }
}

impl Egress for Stripe {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Stripe {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        // Stripe replays a POST with the same Idempotency-Key; intents can be retrieved.
        Capabilities {
            idempotent_resend: true,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        encode::request(&self.config, payment, context)
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        decode::response(&self.config, payment, response)
    }
}

export_dialect!(Stripe);
