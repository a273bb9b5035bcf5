//! `compliance-kyc`: per-country, per-method "know your customer" requirements.
//!
//! Regulators and wallet schemes ask for customer data before some payments: Indonesian
//! e-wallets need a verified phone number, some markets need identity documents above a
//! level. Each rule names a shopper country, the methods it covers and one requirement; a
//! payment that misses it is challenged or denied before any provider is contacted.
//!
//! # Config
//!
//! ```json
//! { "rules": [
//!     { "name": "id-ewallet-phone", "country": "ID", "methods": ["ewallet"], "require": "verified_phone" },
//!     { "country": "ID", "methods": ["dana"], "require": "email" },
//!     { "name": "br-docs", "country": "BR", "methods": ["instant_transfer"], "require": "identity_documents" }
//! ] }
//! ```
//!
//! - `name` (optional): the rule in metrics and the audit line; default
//!   `kyc-<country>-<require>` (`kyc-id-email`).
//! - `country`: ISO 3166-1 alpha-2 shopper country, or `"*"`. A payment without a country
//!   matches only `"*"` rules.
//! - `methods` (non-empty): `"*"`, a kind (`card`, `ewallet`, `bank_redirect`,
//!   `instant_transfer`, `cash_voucher`), or a finer name matched against the wallet, the
//!   scheme or the card network (`dana`, `ideal`, `pix`, `visa`). A payment without a method
//!   matches only `"*"`.
//! - `require`, and the verdict when it is not met:
//!
//! | require | met when | otherwise |
//! |---|---|---|
//! | `verified_phone` | a phone (`customer.phone`, or the e-wallet's) and `customer.phone_verified` | challenge `phone-verification` |
//! | `identity_documents` | `metadata["kyc_level"]` is `"verified"` (any case) | challenge `identity-documents` |
//! | `email` | `customer.email` looks like `local@domain` | deny `email_required` |
//! | `customer_id` | `customer.id` is non-empty | deny `customer_id_required` |
//!
//! Only `authorize` is checked; follow-ups concern a payment already checked. Every rule that
//! applies is checked: a denial wins over a challenge (no point verifying a phone to be
//! refused next), otherwise the first failing rule in config order decides and names the
//! verdict's rule. When all applying rules are met the rule is `kyc-satisfied`; when none
//! applies, `kyc-not-required`. Messages never repeat the customer's data.

mod check;
mod config;

use payproxy_plugin_sdk::export_compliance;
use payproxy_plugin_sdk::payment::{Compliance, Decision, Payment};

pub use check::{RULE_NOT_REQUIRED, RULE_SATISFIED};
pub use config::{Config, Requirement, Rule};

/// The plugin: its validated rules.
pub struct Kyc {
    config: Config,
}

impl Compliance for Kyc {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Kyc {
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

export_compliance!(Kyc);
