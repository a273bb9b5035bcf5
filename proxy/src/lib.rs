//! payproxy: a payment routing reverse proxy whose decisions are made by hot-swappable
//! WebAssembly plugins. The request phases: `docs/architecture.md`; the money-safety
//! invariants: `docs/money-safety.md`.
//!
//! Modules follow the request path: `listener` (accept, TLS) → `route` (match) →
//! `plugin` (sandboxed host) → `upstream` (providers) → `proxy` (the phases tied together);
//! `config`, `snapshot` and `reload` own the running configuration, `files` reads the files
//! it names within limits; `admin` and `metrics` make it observable.
// One reviewed exception: loading the compile cache (plugin/cache.rs).
#![deny(unsafe_code)]

pub mod admin;
pub mod cards;
pub mod config;
pub mod error;
pub mod failover;
pub mod files;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod oauth;
pub mod parse_errors;
pub mod payment;
pub mod plugin;
pub mod plugin_cli;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod webhooks;
