//! payproxy: a payment routing reverse proxy whose decisions are made by hot-swappable
//! WebAssembly plugins. See DESIGN.md for the request phases and the money-safety invariants.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod metrics;
pub mod plugin;
pub mod upstream;
