//! The crate a payproxy plugin author depends on.
//!
//! A plugin is a type that implements one role trait plus one export macro call. The WIT
//! bindings are generated here, once, and hidden: plugin code works with plain Rust types so
//! it can be unit-tested natively with `cargo test`, and the same code is built for
//! `wasm32-wasip2` to produce the component that payproxy loads.
//!
//! Contract 0.4.0 is the current one, for every role; its types (in [`payment`]) are what
//! every role trait takes, whichever version a macro exports:
//! - storefront dialects: [`storefront::Storefront`] (with [`payment::Egress`] for the
//!   provider side) and [`export_storefront_dialect!`], [`export_storefront!`];
//! - provider dialects: [`payment::Egress`] and [`export_egress_v4!`];
//! - compliance: [`payment::Compliance`] and [`export_compliance!`];
//! - routers: [`routing::Router`] and [`export_router_v4!`].
//!
//! Earlier versions stay exportable for hosts that predate 0.4.0 (the macros convert the
//! values; a payment method or next action the old version cannot express is refused or
//! shown as pending): [`export_router_v3!`] (0.3.0); [`export_dialect!`], [`export_egress!`],
//! [`export_compliance_v2!`] and [`export_payment_router!`] (0.2.0).
//! - Contract 0.1.0 routers (HTTP view only): [`Router`] and [`export_router!`], shown here:
//!
//! ```ignore
//! use payproxy_plugin_sdk::{export_router, Provider, Rejection, Request, Router};
//!
//! struct FirstProvider;
//!
//! impl Router for FirstProvider {
//!     fn init(_config: &str) -> Result<Self, String> { Ok(FirstProvider) }
//!     fn route(&self, _req: &Request, providers: &[Provider], _seed: u64)
//!         -> Result<Vec<String>, Rejection> {
//!         Ok(providers.iter().map(|p| p.name.clone()).collect())
//!     }
//! }
//!
//! export_router!(FirstProvider);
//! ```
#![deny(missing_docs)]

pub mod arena;
pub mod currency;
pub mod helpers;
pub mod payment;
mod payment_macros;
pub mod payment_method;
mod router;
pub mod routing;
pub mod storefront;
mod storefront_macros;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use router::Router;
pub use types::{Provider, Rejection, Request};

/// Generated bindings. Not part of the public API: used by the export macros only.
#[doc(hidden)]
pub mod bindings {
    /// Bindings for the `router-plugin` world of `payproxy:plugin@0.1.0`.
    #[allow(missing_docs)]
    pub mod router {
        wit_bindgen::generate!({
            world: "router-plugin",
            path: "../wit/payproxy-plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "__export_router_world",
            default_bindings_module: "payproxy_plugin_sdk::bindings::router",
        });
    }

    /// Bindings for `payproxy:plugin@0.2.0`; the shared `types` are generated once.
    #[allow(missing_docs)]
    pub mod v2 {
        pub mod types {
            wit_bindgen::generate!({
                world: "types-only",
                path: "../wit/payproxy-plugin@0.2.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
            });
        }
        pub mod dialect {
            wit_bindgen::generate!({
                world: "dialect-plugin",
                path: "../wit/payproxy-plugin@0.2.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.2.0": crate::bindings::v2::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_dialect_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v2::dialect",
            });
        }
        pub mod compliance {
            wit_bindgen::generate!({
                world: "compliance-plugin",
                path: "../wit/payproxy-plugin@0.2.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.2.0": crate::bindings::v2::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_compliance_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v2::compliance",
            });
        }
        pub mod router {
            wit_bindgen::generate!({
                world: "payment-router-plugin",
                path: "../wit/payproxy-plugin@0.2.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.2.0": crate::bindings::v2::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_payment_router_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v2::router",
            });
        }
    }

    /// Bindings for `payproxy:plugin@0.4.0`, every role; its `types` are the SDK's canonical
    /// ones (what the role traits take), generated once.
    ///
    /// Worlds are generated apart so that the generated export macros do not clash with
    /// earlier versions' (`dialect-plugin` is the name of a world in 0.2.0 too): the
    /// contract's `storefront-plugin` and `egress-plugin` (0.4.0's `egress` only). A two-sided
    /// dialect exports both; the component then exports exactly the interfaces of the
    /// contract's `dialect-plugin` (the world's name is not part of a component's type).
    #[allow(missing_docs)]
    pub mod v4 {
        pub mod types {
            wit_bindgen::generate!({
                world: "types-only",
                path: "../wit/payproxy-plugin@0.4.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
            });
        }
        pub mod compliance {
            // A world named apart from 0.2.0's `compliance-plugin`: wit-bindgen names its
            // export macros after the world, and both versions are generated in this crate.
            wit_bindgen::generate!({
                inline: "package payproxy:sdk-compliance@0.4.0; world compliance-v4 { export payproxy:plugin/compliance@0.4.0; }",
                path: "../wit/payproxy-plugin@0.4.0",
                world: "compliance-v4",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.4.0": crate::bindings::v4::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_compliance_v4_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v4::compliance",
            });
        }
        pub mod storefront {
            wit_bindgen::generate!({
                world: "storefront-plugin",
                path: "../wit/payproxy-plugin@0.4.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.4.0": crate::bindings::v4::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_storefront_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v4::storefront",
            });
        }
        pub mod egress {
            wit_bindgen::generate!({
                world: "egress-plugin",
                path: "../wit/payproxy-plugin@0.4.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.4.0": crate::bindings::v4::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_egress_v4_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v4::egress",
            });
        }
        pub mod router {
            // Named apart from 0.1.0's `router-plugin` world.
            wit_bindgen::generate!({
                inline: "package payproxy:sdk-router@0.4.0; world router-v4 { export payproxy:plugin/router@0.4.0; }",
                path: "../wit/payproxy-plugin@0.4.0",
                world: "router-v4",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.4.0": crate::bindings::v4::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_router_v4_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v4::router",
            });
        }
    }

    /// Bindings for `payproxy:plugin@0.3.0` (router only); its `types` are 0.2.0's, shared.
    #[allow(missing_docs)]
    pub mod v3 {
        pub mod router {
            wit_bindgen::generate!({
                world: "routing-plugin",
                path: "../wit/payproxy-plugin@0.3.0",
                additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
                with: { "payproxy:plugin/types@0.3.0": crate::bindings::v2::types::payproxy::plugin::types },
                pub_export_macro: true,
                export_macro_name: "__export_router_v3_world",
                default_bindings_module: "payproxy_plugin_sdk::bindings::v3::router",
            });
        }
    }
}

/// Re-exported for the export macros; not part of the public API.
#[doc(hidden)]
pub use router::__glue as __router_glue;
