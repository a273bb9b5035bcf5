//! `dialect-stripe`: Stripe's PaymentIntents and Refunds API, both sides (contract 0.4.0).
//!
//! **Storefront side**: a storefront using a Stripe SDK points its base URL at payproxy; this
//! dialect tells the host what each request asks for — a payment operation payproxy
//! orchestrates, a list of the payments made through payproxy, or anything else, which the
//! host forwards unchanged to the Stripe account that owns it — and renders outcomes, the
//! host's payment records and refusals back as Stripe objects and Stripe errors. **Egress**
//! (provider side): it speaks the same API to Stripe or a Stripe-like provider (the
//! simulator's `/v1/…` routes, `localstripe`). The same logic is kept loadable on contract
//! 0.2.0 by the test fixture `fixture-stripe-v2`.
//!
//! # Config
//!
//! Every field is optional; `{}` takes the defaults.
//!
//! ```json
//! { "reference_keys": ["order_id", "merchant_reference"],
//!   "egress_reference_key": "order_id",
//!   "stripe_version": null,
//!   "server_errors": "ambiguous",
//!   "refuse_card_like_values": true }
//! ```
//!
//! - `reference_keys`: metadata keys read as the merchant reference, first present wins.
//! - `egress_reference_key`: the metadata key the merchant reference is sent under.
//! - `stripe_version`: a `Stripe-Version` header for egress and card-lookup requests.
//! - `server_errors`: class of a 5xx answer carrying a Stripe `api_error` object:
//!   `ambiguous` (default: what Stripe documents for its own 500s; the payment stays with
//!   that provider) or `answered_not_processed` (for providers that answer faults before
//!   doing anything, like the simulator's injected ones, so failover is safe).
//! - `refuse_card_like_values`: refuse any value containing what looks like a card number
//!   (13–19 digits in groups, starting 2–6, passing Luhn; not right after `+`, which is a
//!   phone), except the numeric parameters (`amount`, `tax_id`, `phone` …). Card tokens are
//!   always checked.
//!
//! # Requests (storefront side)
//!
//! | request | call |
//! |---|---|
//! | `POST /v1/payment_intents` | payment: authorize, `confirm` = the form's `confirm` (default `false`, as on Stripe: the host only records the intent, and the parameters and headers that record cannot keep are refused: `parameter_unsupported`, `header_unsupported`, see `parse`) |
//! | `POST /v1/payment_intents/{pi_…}/confirm` | payment: authorize with `id`; the body may be empty (the recorded intent is confirmed) or carry `payment_method`, `return_url` … |
//! | `POST /v1/payment_intents/{pi_…}` (update) | payment: authorize with `id`, `confirm` `false`: the host applies it to an intent it holds, or forwards it to the provider that knows the intent by that id; `amount` alone keeps the currency (`""`), `currency` needs `amount`; a metadata key set to `""` is kept as such (the host removes it) |
//! | `POST /v1/payment_intents/{pi_…}/capture` | payment: capture, optional `amount_to_capture` |
//! | `POST /v1/payment_intents/{pi_…}/cancel` | payment: void |
//! | `GET /v1/payment_intents/{pi_…}` | payment: status |
//! | `POST /v1/refunds` (`payment_intent`, optional `amount`) | payment: refund, `id` = the intent |
//! | `GET /v1/payment_intents` | list: `limit` (1–100, default 10), `starting_after`, `ending_before`, `customer`, `created` (exact) or `created[gt\|gte\|lt\|lte]` (`gt` n → from n+1, `lt` n → up to n−1) |
//! | anything else | forward, with the object id of the path (`re_123` for `GET /v1/refunds/re_123`, `cus_…`, `pm_…` …) or none (`GET /v1/balance`, `/v1/events`) |
//!
//! Customers, payment methods, setup intents, tokens, events, webhook endpoints, refunds by
//! id, intent ids that are not `pi_…` and unknown paths are all forwarded.
//!
//! A request marked with [`HELD_HEADER`](payproxy_plugin_sdk::storefront::HELD_HEADER) (as
//! the host would act on it from the canonical payment) is refused where it carries what the
//! request the host then makes cannot:
//! a `Stripe-Account` or `Stripe-Context` header (`header_unsupported`), and at a confirm or
//! update the parameters a held create refuses, at a capture `application_fee_amount`,
//! `final_capture`, `metadata`, `statement_descriptor[_suffix]`, `transfer_data`, at a refund
//! `refund_application_fee`, `reverse_transfer`, `instructions_email`, `origin`
//! (`parameter_unsupported`); an update's unknown parameters are refused there too.
//! Raw card data is refused before anything else, on every path, forwarded ones included.
//!
//! Bodies are forms with Stripe's nested keys. `amount` is a positive integer in minor units
//! (`10.50` → `parameter_invalid_integer`), `currency` a known ISO 4217 code (else
//! `invalid_currency`), upper-cased in the canonical payment. A create with `confirm=true`
//! needs a payment method (`parameter_missing`, param `payment_method`). Captures and
//! refunds carry no currency on Stripe: their amount has currency `""` (or the optional
//! `currency` parameter) and the host fills it from the payment they refer to.
//! `Idempotency-Key` → idempotency key; all `metadata[…]` is kept, `metadata[order_id]` (or
//! `metadata[merchant_reference]`) is the merchant reference. A bad `limit` or `created…`
//! is a 400 `invalid_request_error` naming the parameter.
//!
//! # Payment methods
//!
//! A card is a token: `payment_method=pm_…` (what Stripe.js and the SDKs send), or
//! `payment_method_data[card][token]`. Its network and issuer country come from the home
//! provider ([`Storefront::card_details`](payproxy_plugin_sdk::storefront::Storefront::card_details)
//! below); the older payproxy-only `payment_method_data[card][bin|last4|network|country]` are
//! still read when sent, never required. Other methods use payproxy's convention within
//! Stripe's shape:
//!
//! | parameters | canonical |
//! |---|---|
//! | `payment_method=pm_…`, or `payment_method_data[type]=card` + `[card][token]` (optional legacy `[card][bin]`, `[last4]`, `[network]`, `[country]`) | card |
//! | `type=ideal`, `[ideal][iban]`, `[ideal][bic]` or `[ideal][bank]` (BIC or Stripe bank name) | bank redirect `ideal` |
//! | `type=pix`, `[pix][tax_id]` (CPF/CNPJ, punctuation dropped) | instant transfer `pix` |
//! | `type=grabpay` / `dana`, or `type=ewallet` + `[ewallet][wallet]` | e-wallet |
//! | `type=oxxo` | cash voucher `oxxo` |
//! | any other `type=<name>` (lower-case letters, digits, `_`; 1–40), `[<name>][…]` | `other`: `name`, and every `[<name>][…]` parameter as a field named below the type (`[mpesa][phone]` → `phone`, `[mpesa][account][number]` → `account[number]`; at most 50, names ≤ 100 and values ≤ 500 bytes, else `parameter_invalid_value`) |
//! | `[billing_details][phone]` (E.164), `[billing_details][phone_verified]=true` | customer phone (and wallet phone) |
//! | `[billing_details][address][country]`, else `shipping[address][country]` | shopper country |
//! | `customer`, `receipt_email` | customer id, email |
//! | `payment_method_options[card][installments][plan][count]` | installments |
//! | `payment_method_options[card][three_d_secure][authenticated]=true` | strong auth done |
//! | `payment_method_options[card][exemption]=low_value\|tra\|recurring\|moto` | exemption asked |
//! | `capture_method=manual`, `return_url`, `description` | same |
//! | `payment_method_options[card][capture_method]=manual` (a card payment) | manual capture |
//!
//! (`type` is `payment_method_data[type]`, the rest under `payment_method_data[…]`.) Without
//! `payment_method_data[type]` the only `payment_method_types[]` entry names the method
//! (`card` alone, with no card, names none: the card comes with the confirm). A
//! type this dialect has no row for is passed through as `other` rather than refused, so a
//! new local method needs only a provider dialect; answers name it in
//! `payment_method_types`. Card types by other names (`scheme`, `apple_pay` …) are not
//! passed through, and card-only fields (`cvc`, `exp_month`, `encrypted…` …) under any
//! method are refused as card data; `*phone*` fields must be E.164.
//! Raw card data (`…[card][number]`, `…[card][cvc]`) is refused with
//! `card_number_not_accepted` and never echoed.
//!
//! # Rendering (storefront side)
//!
//! Outcomes: approved → `succeeded` (`requires_capture` for manual capture; `canceled` for a
//! void); redirect → `requires_action` with `next_action.redirect_to_url`
//! (`oxxo_display_details` for OXXO); QR → `next_action.<type>_display_qr_code.data`
//! (`pix_display_qr_code` for Pix); confirm on device → `requires_action` with
//! `next_action: {"type": "confirm_on_device", "confirm_on_device": {"message", "expires_at"}}`
//! (one shape for every method); pending → `processing`; declined → 402 `card_error`
//! (`card_declined` with Stripe's `decline_code`, the intent in `error.payment_intent`; a
//! retrieve answers 200 with `requires_payment_method` and `last_payment_error`; a method
//! other than a card gets code `payment_method_provider_decline`, or
//! `payment_method_provider_timeout` for `confirmation_expired`, the decline's own
//! shopper-safe message and `payment_method.type`); error with
//! code `invalid_request` (the provider refused the merchant's request) → 400
//! `invalid_request_error`, no retry header; other errors → 503 `api_error` with
//! `Stripe-Should-Retry: true` when nothing was charged, 502 with the intent `processing`
//! when the payment may exist. Refunds render as Refund objects (`failed` +
//! `failure_reason` when declined). Compliance annotations are added as
//! `payproxy_annotations: [{kind, name, rate_bp, amount, currency, note}]` when present.
//!
//! Records (the host's own answers) render as PaymentIntents: `status` from the state
//! (`failed` → `requires_payment_method` with `last_payment_error` from the last decline),
//! `amount`, `currency` (lower case), `amount_capturable`, `amount_received` (= captured),
//! `capture_method`, `confirmation_method: "automatic"`, `created`, `customer`,
//! `description`, `metadata`, `payment_method` (the card token), `payment_method_types`,
//! `next_action` (from the last outcome, when `requires_action`), `receipt_email`,
//! `livemode: false`, `client_secret: null`. Lists: `{"object": "list", "data": [intents],
//! "has_more", "url"}`.
//!
//! Every PaymentIntent payproxy renders (records and outcomes) has Stripe's top-level fields
//! but `amount_details`, since an SDK reads them as attributes and a missing one is an error
//! there: what payproxy keeps nothing for is `null` (`latest_charge`, `shipping`,
//! `setup_future_usage`, `transfer_data`, `canceled_at`, `cancellation_reason`,
//! `payment_method_options` …). Left out: `created` in an outcome's answer (the host passes
//! time only with records, and Stripe never sends it `null`), and `amount`, `currency` and
//! the amounts when the currency is not known. Refunds have `charge`, `balance_transaction`, `reason`,
//! `receipt_number`, `destination_details`, `source_transfer_reversal`,
//! `transfer_reversal` and `failure_reason` as `null` unless known.
//!
//! Refusals: invalid request → 400 (or the host's 4xx) `invalid_request_error` with `code`
//! and `param` (`idempotency_error` for `idempotency…` codes); the host's
//! `unexpected_state` → 400 `payment_intent_unexpected_state`, `already_refunded` → 400
//! `charge_already_refunded`, `amount_too_large` → 400 `amount_too_large` (param `amount`),
//! with the host's message; compliance denial → 402 `card_error` with the rule's code, since
//! its message is meant for the shopper; strong authentication → 402 `card_error`
//! `authentication_required`; phone verification → 402 `card_error`
//! `phone_verification_required`; unavailable → 503 (or the host's 5xx) `api_error`; not
//! found → 404 `resource_missing`.
//!
//! # Forwarded requests and card details
//!
//! `forward_headers`: `Authorization: Bearer <credentials.api_key>` (and `Stripe-Version`
//! when configured) for the provider a request is forwarded to.
//!
//! `card_lookup`: `pm_…` → `GET /v1/payment_methods/{token}`, `tok_…` → `GET
//! /v1/tokens/{token}`, with `Authorization: Bearer <credentials.api_key>` when given; other
//! tokens → none. `card_details`: the `card` of a 2xx PaymentMethod or Token: `brand` lower
//! case (Token display names mapped: `American Express` → `amex`), `country` upper case,
//! `funding`, `last4`, `three_d_secure_usage.supported`; anything else → none.
//!
//! # Events (webhooks to the storefront)
//!
//! `render_event`: each payment event the host records becomes a Stripe `Event` (`id` = the
//! host's event id, `object: "event"`, `api_version` `2024-06-20`, `created`, `type`,
//! `data.object`, `livemode: false`, `pending_webhooks: 1`, `request`): `payment_intent.created`,
//! `.requires_action`, `.processing`, `.amount_capturable_updated` (requires capture),
//! `.succeeded`, `.payment_failed`, `.canceled` carry the PaymentIntent as retrieve renders
//! it; `charge.refunded` carries the intent's Charge (`ch_` + the intent id's suffix, stable
//! across events) with `amount_refunded` and `refunded`. Content type
//! `application/json; charset=utf-8`.
//!
//! `sign_event`: `Stripe-Signature: t=<time of the attempt>,v1=<hex HMAC-SHA256(endpoint
//! secret, "<t>.<body>")>` — what `stripe.Webhook.construct_event` verifies (its default
//! tolerance is 300 s; the host signs at every attempt, so retries stay within it).
//!
//! # Egress
//!
//! `POST /v1/payment_intents`: `amount`, lower-case `currency`, `confirm=true`,
//! `capture_method=manual` only for manual capture, the method, `customer` when known,
//! `description`, `receipt_email`, `return_url`, `payment_method_options[…]` only when set,
//! `metadata[…]` with the merchant reference as `metadata[order_id]`. A card whose token is
//! a Stripe payment method id (`pm_`, `card_`, `src_`) is sent as `payment_method=<token>`
//! and nothing else about the method (what Stripe and localstripe accept); other card tokens
//! and the other methods use the convention above (`payment_method_types[]`,
//! `payment_method_data[…]`, without the legacy card fields; an `other` method as its type
//! and its fields under `payment_method_data[<name>][…]`, as the storefront sent them). Follow-ups:
//! `…/{ref}/confirm|capture|cancel`, `GET …/{ref}`, `POST /v1/refunds`
//! (`payment_intent={ref}`, `amount` when partial, metadata). Headers: `Idempotency-Key`
//! from the context (POST), `Authorization: Bearer <credentials.api_key>` when given.
//! Answers: PaymentIntent `succeeded` / `requires_capture` → approved (`canceled` →
//! approved for a void, a hard decline with provider code `canceled` otherwise),
//! `requires_action` → waiting for the shopper whatever its `next_action` (a redirect, a
//! QR, the `stripe_js` page of `use_stripe_sdk`, the hosted page another type names, else a
//! confirmation in what the storefront shows), `processing` → pending, `requires_payment_method` →
//! decline from `last_payment_error`; Stripe errors: `card_error` → decline through
//! [`codes::DECLINE_CODES`], 429 → `rate_limited`, 4xx `invalid_request_error` (and a 402
//! that is not a card error) → `invalid_request`, answered-not-processed (the merchant's
//! mistake: the host neither fails over nor blames the provider), 5xx `api_error` →
//! `provider_error` (500) or `provider_unavailable` (502–504), ambiguous by default
//! (`server_errors`), other errors per [`codes::ERRORS`]; a 2xx that is not the
//! expected object → ambiguous.
//!
//! # Provider notifications (`decode_webhook`)
//!
//! The provider's events at payproxy's `POST /webhooks/{provider}`: credential
//! `webhook_secret` (the endpoint's `whsec_…` signing secret); `Stripe-Signature` verified
//! over the raw body with a 300 s tolerance (else 401), `payment_intent.succeeded` /
//! `.amount_capturable_updated` / `.payment_failed` / `.canceled` → status approved /
//! approved / declined / declined `canceled` (`succeeded` of an intent with
//! `capture_method: manual` or `payment_method_options.card.capture_method: manual` →
//! capture approved),
//! `charge.refunded` → refund of the newest refund's amount, all about the PaymentIntent id.
//! See [`webhook`].

mod card;
pub mod codes;
pub mod config;
pub mod decode;
pub mod encode;
mod event;
pub mod form;
mod method;
pub mod parse;
mod plugin;
mod refuse;
mod render;
mod validate;
pub mod webhook;

pub use config::Config;
pub use plugin::Stripe;

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

payproxy_plugin_sdk::export_storefront_dialect!(Stripe);
