//! `compliance-limits`: amount limits, blocked countries and tax lines.
//!
//! Payment methods and markets have amount ranges (a wallet's per-payment cap, a scheme's
//! minimum), some countries are not served at all, and some add a tax the storefront must
//! show (Vietnam's 3% VAT on cross-border digital sales). All of it is config; a payment
//! that breaks a limit is denied with a shopper-safe message before any provider is
//! contacted, and tax lines are rendered back to the storefront as annotations.
//!
//! # Config
//!
//! ```json
//! {
//!   "limits": [
//!     { "name": "id-wallet-range", "method": "ewallet", "currency": "IDR", "country": "ID",
//!       "min": 1000, "max": 2000000000 },
//!     { "method": "card", "currency": "EUR", "max": 1000000 }
//!   ],
//!   "blocked_countries": ["KP", "IR"],
//!   "taxes": [ { "country": "VN", "name": "VAT", "rate_bp": 300, "cross_border_only": true,
//!                "note": "3% VAT on cross-border digital sales (VN)" } ],
//!   "merchant_country": "SG"
//! }
//! ```
//!
//! - `limits[]`: `currency` (required, a concrete ISO 4217 code: `min` and `max` are minor
//!   units of it, so `"*"` is refused), `min` and/or `max` (inclusive, ≥ 0), `method`
//!   (default `"*"`: a kind `card` / `ewallet` / `bank_redirect` / `instant_transfer` /
//!   `cash_voucher`, or a wallet / scheme / network name such as `dana`, `ideal`, `visa`),
//!   `country` (default `"*"`; a payment without a country matches only `"*"`), `name`
//!   (default `limit-<method>-<currency>-<country>`, the rule of the denial).
//! - `blocked_countries`: ISO 3166-1 alpha-2 shopper countries to refuse.
//! - `taxes[]`: `country`, `name`, `rate_bp` (1..=10000, 300 = 3%), `cross_border_only`
//!   (default false: only when the shopper's country differs from `merchant_country`, which
//!   is then required), `note` (default `"3% VAT on cross-border sales (VN)"` style).
//!
//! # Decision (authorize only; capture, refund, void, status → allow `limits-not-applicable`)
//!
//! 1. Shopper country blocked → deny `country_blocked` (rule `country-blocked`).
//! 2. No amount → deny `amount_required`; negative → deny `invalid_amount`
//!    (rule `limits-invalid-amount`).
//! 3. Each applying limit in config order: below `min` → deny `amount_too_small`, above
//!    `max` → deny `amount_too_large` (rule: the limit's name). The message states the limit
//!    in major units ("… minimum of 10.00 IDR …"); the amounts at `min` and `max` are
//!    allowed.
//! 4. Allow (rule `limits-ok`) with one annotation per applying tax: kind `tax`, the tax's
//!    name and `rate_bp`, amount `round_half_up(amount × rate_bp / 10000)` in the payment's
//!    currency (never negative, never more than the amount), and the note.

mod check;
mod config;

use payproxy_plugin_sdk::export_compliance;
use payproxy_plugin_sdk::payment::{Compliance, Decision, Payment};

pub use check::{
    tax_amount, RULE_COUNTRY_BLOCKED, RULE_INVALID_AMOUNT, RULE_NOT_APPLICABLE, RULE_OK,
};
pub use config::{percent, Config, Limit, Tax, MAX_RATE_BP};

/// The plugin: its validated config.
pub struct Limits {
    config: Config,
}

impl Compliance for Limits {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Limits {
            config: Config::parse(config)?,
        })
    }

    fn check(&self, payment: &Payment) -> Decision {
        check::decide(&self.config, payment)
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_compliance!(Limits);
