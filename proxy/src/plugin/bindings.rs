//! Host bindings for the plugin contract, generated once from `wit/`.
//!
//! Each role's world gets its own module; `types` of the package are shared.

/// The `router-plugin` world of `payproxy:plugin@0.1.0`.
pub mod router {
    wasmtime::component::bindgen!({
        world: "router-plugin",
        path: "../wit/payproxy-plugin@0.1.0",
    });
}

/// The interface name a router plugin must export.
pub const ROUTER_EXPORT: &str = "payproxy:plugin/router@0.1.0";
