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
//! - `/__sim/…` — the control API (ledger, faults, reset, health); never counted, never faulted.
//! - anything else — echo: a JSON description of what arrived, for transparency tests.
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
mod ledger;
mod pix;
mod provider;
mod respond;
mod server;
mod service;
mod simulator;
mod stripe;

pub use faults::Faults;
pub use ledger::{Charge, Refund};
pub use simulator::{parse_provider_arg, Simulator, DEFAULT_PROVIDERS};
