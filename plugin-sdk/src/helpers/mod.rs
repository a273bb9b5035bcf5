//! Logic that several plugins share, so that each protocol's code says only what is its own.
//!
//! - [`config`]: JSON configs with the failing field's path in the error.
//! - [`encode`]: building a provider request (headers, references, amount checks).
//! - [`decode`]: reading a provider's JSON answer.
//! - [`http_errors`]: HTTP status of an error answer → normalized failure code and class.
//! - [`codes`]: the normalized decline and failure codes of the contract.
//! - [`country`]: ISO 3166-1 country codes.
//! - [`time`]: calendar dates from the host's Unix time (plugins have no clock).
//! - [`webhook`]: the refusals and acknowledgement of `decode-webhook`.
//!
//! Credentials are read with [`Context::credential`](crate::payment::Context::credential)
//! and [`Context::required_credential`](crate::payment::Context::required_credential).

pub mod codes;
pub mod config;
pub mod country;
pub mod decode;
pub mod encode;
pub mod http_errors;
pub mod time;
pub mod webhook;
