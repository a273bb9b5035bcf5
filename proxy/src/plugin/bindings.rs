//! Host bindings for the plugin contract, generated once from `wit/`.
//!
//! 0.1.0 has the router world only. 0.2.0 generates its shared `types` once and its roles'
//! worlds (and 0.3.0's router, whose `types` are the same) reuse them (`with`). 0.4.0 does the
//! same with its own `types`, which are the host's canonical ones.

/// The `router-plugin` world of `payproxy:plugin@0.1.0`.
pub mod router {
    wasmtime::component::bindgen!({
        world: "router-plugin",
        path: "../wit/payproxy-plugin@0.1.0",
    });
}

/// `payproxy:plugin@0.2.0`.
pub mod v2 {
    /// The shared types (canonical payment, outcome, HTTP views).
    pub mod types {
        wasmtime::component::bindgen!({
            world: "types-only",
            path: "../wit/payproxy-plugin@0.2.0",
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Dialects: the `ingress` and `egress` interfaces (a component may export one or both).
    pub mod dialect {
        wasmtime::component::bindgen!({
            world: "dialect-plugin",
            path: "../wit/payproxy-plugin@0.2.0",
            with: { "payproxy:plugin/types@0.2.0": crate::plugin::bindings::v2::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Compliance.
    pub mod compliance {
        wasmtime::component::bindgen!({
            world: "compliance-plugin",
            path: "../wit/payproxy-plugin@0.2.0",
            with: { "payproxy:plugin/types@0.2.0": crate::plugin::bindings::v2::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Router, 0.2.0.
    pub mod router {
        wasmtime::component::bindgen!({
            world: "payment-router-plugin",
            path: "../wit/payproxy-plugin@0.2.0",
            with: { "payproxy:plugin/types@0.2.0": crate::plugin::bindings::v2::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }
}

/// `payproxy:plugin@0.3.0`: the router only; its `types` are mapped onto 0.2.0's, which
/// are the same, so a `Payment` stays one Rust type.
pub mod v3 {
    /// Router, 0.3.0.
    pub mod router {
        wasmtime::component::bindgen!({
            world: "routing-plugin",
            path: "../wit/payproxy-plugin@0.3.0",
            with: { "payproxy:plugin/types@0.3.0": crate::plugin::bindings::v2::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }
}

/// `payproxy:plugin@0.4.0`, every role; its `types` are the host's canonical ones (the
/// payment, outcome and HTTP views the host works with). Earlier versions' values are
/// converted at their plugins' boundary (`super::convert`).
pub mod v4 {
    /// The shared types.
    pub mod types {
        wasmtime::component::bindgen!({
            world: "types-only",
            path: "../wit/payproxy-plugin@0.4.0",
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Dialect, 0.4.0: `storefront` and/or `egress`.
    pub mod dialect {
        wasmtime::component::bindgen!({
            world: "dialect-plugin",
            path: "../wit/payproxy-plugin@0.4.0",
            with: { "payproxy:plugin/types@0.4.0": crate::plugin::bindings::v4::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Compliance, 0.4.0 (sees the card's details).
    pub mod compliance {
        wasmtime::component::bindgen!({
            world: "compliance-plugin",
            path: "../wit/payproxy-plugin@0.4.0",
            with: { "payproxy:plugin/types@0.4.0": crate::plugin::bindings::v4::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }

    /// Router, 0.4.0.
    pub mod router {
        wasmtime::component::bindgen!({
            world: "router-plugin",
            path: "../wit/payproxy-plugin@0.4.0",
            with: { "payproxy:plugin/types@0.4.0": crate::plugin::bindings::v4::types::payproxy::plugin::types },
            additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        });
    }
}

/// Export names the host looks for.
pub mod exports {
    /// Router, contract 0.1.0.
    pub const ROUTER_V1: &str = "payproxy:plugin/router@0.1.0";
    /// Router, contract 0.2.0.
    pub const ROUTER_V2: &str = "payproxy:plugin/router@0.2.0";
    /// Router, contract 0.3.0.
    pub const ROUTER_V3: &str = "payproxy:plugin/router@0.3.0";
    /// Router, contract 0.4.0.
    pub const ROUTER_V4: &str = "payproxy:plugin/router@0.4.0";
    /// Compliance, 0.2.0.
    pub const COMPLIANCE: &str = "payproxy:plugin/compliance@0.2.0";
    /// Compliance, 0.4.0.
    pub const COMPLIANCE_V4: &str = "payproxy:plugin/compliance@0.4.0";
    /// Dialect storefront side, 0.2.0.
    pub const INGRESS: &str = "payproxy:plugin/ingress@0.2.0";
    /// Dialect provider side, 0.2.0.
    pub const EGRESS: &str = "payproxy:plugin/egress@0.2.0";
    /// Dialect storefront side, 0.4.0.
    pub const STOREFRONT: &str = "payproxy:plugin/storefront@0.4.0";
    /// Dialect provider side, 0.4.0 (0.2.0's, restated).
    pub const EGRESS_V4: &str = "payproxy:plugin/egress@0.4.0";
}
