//! `compliance-psd2-sca`: PSD2 strong customer authentication (SCA) for EEA card payments.
//!
//! A card authorisation where both the merchant and the card issuer are in the European
//! Economic Area, worth more than the low-value threshold, not yet strongly authenticated and
//! without an exemption, is challenged (`strong-authentication`) before any provider is
//! contacted.
//!
//! # Config
//!
//! ```json
//! {
//!   "merchant_country": "NL",
//!   "low_value_threshold": { "minor": 3000, "currency": "EUR" },
//!   "rates": { "GBP": "0.85", "USD": "1.08", "JPY": "161.5", "KWD": "0.333" },
//!   "eea": ["NL", "DE"]
//! }
//! ```
//!
//! - `merchant_country` (required): ISO 3166-1 alpha-2. A merchant outside the EEA list puts
//!   every payment out of scope.
//! - `low_value_threshold` (default €30.00): minor units of any currency that has a rate.
//! - `rates` (default: none but EUR): units of a currency per 1 EUR, as decimal **strings**
//!   (JSON numbers are refused: they would pass through binary floating point). At most 12
//!   decimal places and 18 significant digits; EUR is always `"1"`.
//! - `eea` (default: EU-27 + IS, LI, NO): replaces the built-in list, e.g. for tests or a
//!   change of membership before a plugin release.
//!
//! Conversion is exact: the amount and the threshold are compared as fractions of a euro
//! (see [`convert`]), so there is no rounding at all, and €30.00 is low value while €30.01 is
//! not, in any currency.
//!
//! # Decision (first that applies)
//!
//! | condition | verdict | rule |
//! |---|---|---|
//! | not `authorize`, not a card, merchant or issuer outside the EEA | allow | `psd2-out-of-scope` |
//! | `strong_auth.authenticated` | allow | `psd2-authenticated` |
//! | `strong_auth.exemption_requested` | allow + annotation `flag`/`sca_exemption` (note = the exemption) | `psd2-exemption` |
//! | no amount, unknown currency or no rate for it (fail safe) | challenge `strong-authentication` | `psd2-no-rate` |
//! | amount in EUR > threshold | challenge `strong-authentication` | `psd2-sca` |
//! | … and the home provider says the card has no 3-D Secure (contract 0.4.0 card details) | deny `authentication_unavailable` | `psd2-no-3ds` |
//! | otherwise (≤ threshold) | allow | `psd2-low-value` |
//!
//! Issuer country: the card's `issuer_country`, else the shopper's `country`; when neither is
//! known the payment counts as in scope (fail safe). A payment without a method (a storefront
//! that attaches the card later) is out of scope at that step: the card is checked when it is
//! attached and authorised.

mod config;
pub mod convert;
mod decide;
mod eea;

use payproxy_plugin_sdk::export_compliance;
use payproxy_plugin_sdk::payment::{Compliance, Decision, Payment};
use payproxy_plugin_sdk::storefront::CardDetails;

pub use config::{Config, DEFAULT_THRESHOLD_MINOR};
pub use decide::{
    RULE_AUTHENTICATED, RULE_EXEMPTION, RULE_LOW_VALUE, RULE_NO_3DS, RULE_NO_RATE,
    RULE_OUT_OF_SCOPE, RULE_SCA,
};
pub use eea::EEA;

/// The plugin: its validated config.
pub struct Psd2Sca {
    config: Config,
}

impl Compliance for Psd2Sca {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Psd2Sca {
            config: Config::parse(config)?,
        })
    }

    fn check(&self, payment: &Payment) -> Decision {
        decide::decide(&self.config, payment)
    }

    fn check_card(&self, payment: &Payment, card: Option<&CardDetails>) -> Decision {
        decide::decide_card(&self.config, payment, card)
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_compliance!(Psd2Sca);
