//! The router role: contract 0.1.0 (request view only), 0.2.0 (canonical payment and
//! provider health), 0.3.0 (the same inputs, packed: providers' static attributes once at
//! init, ids and health per call, headers as one block) and 0.4.0 (0.3.0's shape on 0.4.0's
//! types), behind one type. Output is checked:
//! only the route's providers, no more than 64 names, a rejection with a 4xx/5xx status and
//! a short code.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

use super::bindings::exports::{ROUTER_V1, ROUTER_V2, ROUTER_V3, ROUTER_V4};
use super::bindings::{router as v1, v2, v3, v4};
use super::convert;
use super::sandbox::{truncate, Binding, Sandbox, SandboxSettings};
use super::types::{Health, HttpRequest, Payment};
use super::{CallState, PluginHost};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

/// The removal notice of router contract 0.1.0 (load warning, status page, `payproxy check`).
pub const DEPRECATED_V1: &str = "will no longer load from payproxy 0.3.0";

/// Most providers a router may name in one answer.
const MAX_NAMES: usize = 64;
const MAX_CODE: usize = 64;
const MAX_MESSAGE: usize = 1024;

/// What a router decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Try these providers, in order (all known to the route, no duplicates).
    Providers(Vec<String>),
    /// Answer the storefront with this status, code and message.
    Reject {
        /// 400..=599.
        status: u16,
        /// Machine-readable code.
        code: String,
        /// Storefront-safe message.
        message: String,
    },
}

/// A provider of a route as the host keeps it; every router version's view is made from it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provider {
    /// Unique provider name from config.
    pub name: String,
    /// Free-form region label.
    pub region: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Relative cost (lower is cheaper).
    pub cost: f64,
    /// The dialect plugin the provider speaks (empty for transparent providers).
    pub dialect: String,
    /// Its health as the host measures it now.
    pub health: Health,
}

/// A router's "no", whatever its contract version calls it.
struct Rejection {
    status: u16,
    code: String,
    message: String,
}

/// A 0.1.0 router instance.
pub struct RouterV1(v1::RouterPlugin);

impl Binding for RouterV1 {
    type Pre = v1::RouterPluginPre<CallState>;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        v1::RouterPluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        pre.instantiate(store).map(RouterV1)
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0.payproxy_plugin_router().call_init(store, config)
    }
}

/// A 0.2.0 router instance.
pub struct RouterV2(v2::router::PaymentRouterPlugin);

impl Binding for RouterV2 {
    type Pre = v2::router::PaymentRouterPluginPre<CallState>;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        v2::router::PaymentRouterPluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        pre.instantiate(store).map(RouterV2)
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0.payproxy_plugin_router().call_init(store, config)
    }
}

use v3::router::exports::payproxy::plugin::router as v3r;
use v4::router::exports::payproxy::plugin::router::{Candidate, ProviderInfo, RequestView};

/// The instance and pre-instantiation of a packed router (0.3.0, 0.4.0): the bindings and the
/// configured providers its `init` gets (set by [`RouterPlugin::load`] before the first
/// instance; an instance made without them refuses to `init` rather than run with an empty
/// list).
macro_rules! packed_router {
    ($inst:ident, $pre:ident, $plugin:ty, $plugin_pre:ty, $info:ty) => {
        /// A packed router instance, with the provider list its `init` gets.
        pub struct $inst {
            plugin: $plugin,
            catalogue: Option<Arc<[$info]>>,
        }

        /// What a packed router is prepared with.
        pub struct $pre {
            pre: $plugin_pre,
            catalogue: Option<Arc<[$info]>>,
        }

        impl Binding for $inst {
            type Pre = $pre;
            fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
                Ok($pre {
                    pre: <$plugin_pre>::new(instance_pre)?,
                    catalogue: None,
                })
            }
            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<CallState>,
            ) -> wasmtime::Result<Self> {
                Ok($inst {
                    plugin: pre.pre.instantiate(store)?,
                    catalogue: pre.catalogue.clone(),
                })
            }
            fn init(
                &self,
                store: &mut Store<CallState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), String>> {
                let Some(catalogue) = &self.catalogue else {
                    return Ok(Err("loaded without the list of configured providers".into()));
                };
                self.plugin
                    .payproxy_plugin_router()
                    .call_init(store, config, catalogue)
            }
        }
    };
}

packed_router!(
    RouterV3,
    RouterV3Pre,
    v3::router::RoutingPlugin,
    v3::router::RoutingPluginPre<CallState>,
    v3r::ProviderInfo
);
packed_router!(
    RouterV4,
    RouterV4Pre,
    v4::router::RouterPlugin,
    v4::router::RouterPluginPre<CallState>,
    ProviderInfo
);

/// Every configured provider's name by id (its index in the list packed routers get at
/// `init`), and the reverse.
pub struct Catalogue {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Catalogue {
    fn new(providers: &[ProviderInfo]) -> Catalogue {
        Catalogue {
            names: providers.iter().map(|p| p.name.clone()).collect(),
            ids: providers
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i as u32))
                .collect(),
        }
    }

    /// The route's providers as candidates. The route's providers and the catalogue come
    /// from the same configuration (the snapshot builds both), so every provider has an id.
    fn candidates(&self, providers: &[Provider]) -> Vec<Candidate> {
        providers
            .iter()
            .filter_map(|p| {
                let id = self.ids.get(&p.name);
                debug_assert!(id.is_some(), "provider {} is not configured", p.name);
                Some(Candidate {
                    id: *id?,
                    health: p.health,
                })
            })
            .collect()
    }
}

/// A loaded router of any contract version.
pub enum RouterPlugin {
    /// `payproxy:plugin/router@0.1.0`.
    V1(Sandbox<RouterV1>),
    /// `payproxy:plugin/router@0.2.0`.
    V2(Sandbox<RouterV2>),
    /// `payproxy:plugin/router@0.3.0`, with the providers by id.
    V3(Sandbox<RouterV3>, Catalogue),
    /// `payproxy:plugin/router@0.4.0`, with the providers by id.
    V4(Sandbox<RouterV4>, Catalogue),
}

impl RouterPlugin {
    /// Bind a compiled component to the router role (any contract version), validate it
    /// and its config. `catalogue` is every configured provider; 0.3.0 and 0.4.0 routers get
    /// it at `init`, and a provider's id is its index there.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        catalogue: &[ProviderInfo],
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
    ) -> Result<RouterPlugin, String> {
        let exports = host.export_names(component);
        if exports.iter().any(|e| e == ROUTER_V4) {
            let ids = Catalogue::new(catalogue);
            let catalogue: Arc<[ProviderInfo]> = Arc::from(catalogue);
            return Sandbox::load_with(
                host,
                name,
                component,
                config_json,
                settings,
                metrics,
                |pre: &mut RouterV4Pre| pre.catalogue = Some(catalogue),
            )
            .map(|sandbox| RouterPlugin::V4(sandbox, ids));
        }
        if exports.iter().any(|e| e == ROUTER_V3) {
            let ids = Catalogue::new(catalogue);
            let catalogue: Arc<[v3r::ProviderInfo]> = catalogue
                .iter()
                .map(|p| v3r::ProviderInfo {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    tags: p.tags.clone(),
                    cost: p.cost,
                    dialect: p.dialect.clone(),
                })
                .collect();
            return Sandbox::load_with(
                host,
                name,
                component,
                config_json,
                settings,
                metrics,
                |pre: &mut RouterV3Pre| pre.catalogue = Some(catalogue),
            )
            .map(|sandbox| RouterPlugin::V3(sandbox, ids));
        }
        if exports.iter().any(|e| e == ROUTER_V2) {
            return Sandbox::load(host, name, component, config_json, settings, metrics)
                .map(RouterPlugin::V2);
        }
        if exports.iter().any(|e| e == ROUTER_V1) {
            tracing::warn!(
                plugin = name,
                "router contract 0.1.0 is deprecated and {DEPRECATED_V1}: rebuild the plugin \
                 against 0.4.0 (world router-plugin, docs/contract.md)"
            );
            return Sandbox::load(host, name, component, config_json, settings, metrics)
                .map(RouterPlugin::V1);
        }
        Err(format!(
            "does not implement the router role: expected export {ROUTER_V4} (world router-plugin), \
             {ROUTER_V3} (world routing-plugin), {ROUTER_V2} (world payment-router-plugin) \
             or {ROUTER_V1} (deprecated), found [{}]",
            exports.join(", ")
        ))
    }

    /// Ask for the provider order. `payment` is the canonical payment on payment routes
    /// (0.1.0 routers never see it).
    pub fn route(
        &self,
        request: &HttpRequest,
        payment: Option<&Payment>,
        providers: &[Provider],
        seed: u64,
    ) -> Result<RouteDecision, PluginFailure> {
        let output = match self {
            RouterPlugin::V4(sandbox, catalogue) => {
                let candidates = catalogue.candidates(providers);
                let view = RequestView {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    query: request.query.clone(),
                    headers: pack_headers(&request.headers),
                    body: request.body.clone(),
                };
                let answer = sandbox.call("route", |b, store| {
                    b.plugin.payproxy_plugin_router().call_route(
                        store,
                        &view,
                        payment,
                        &candidates,
                        seed,
                    )
                })?;
                match answer {
                    Ok(chosen) => Ok(self.names(catalogue, &chosen, &candidates)?),
                    Err(refusal) => Err(Rejection {
                        status: refusal.status,
                        code: refusal.code,
                        message: refusal.message,
                    }),
                }
            }
            RouterPlugin::V3(sandbox, catalogue) => {
                let candidates = catalogue.candidates(providers);
                let packed: Vec<v3r::Candidate> = candidates
                    .iter()
                    .map(|c| v3r::Candidate {
                        id: c.id,
                        health: convert::health_to_v2(&c.health),
                    })
                    .collect();
                let view = v3r::RequestView {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    query: request.query.clone(),
                    headers: pack_headers(&request.headers),
                    body: request.body.clone(),
                };
                let answer = sandbox.call("route", |b, store| {
                    let payment = payment.map(convert::payment_to_v2).transpose()?;
                    b.plugin.payproxy_plugin_router().call_route(
                        store,
                        &view,
                        payment.as_ref(),
                        &packed,
                        seed,
                    )
                })?;
                match answer {
                    Ok(chosen) => Ok(self.names(catalogue, &chosen, &candidates)?),
                    Err(r) => Err(Rejection {
                        status: r.status,
                        code: r.code,
                        message: r.message,
                    }),
                }
            }
            RouterPlugin::V2(sandbox) => {
                let request = convert::request_to_v2(request);
                let providers: Vec<_> = providers
                    .iter()
                    .map(|p| v2::types::payproxy::plugin::types::Provider {
                        name: p.name.clone(),
                        region: p.region.clone(),
                        tags: p.tags.clone(),
                        cost: p.cost,
                        dialect: p.dialect.clone(),
                        health: convert::health_to_v2(&p.health),
                    })
                    .collect();
                sandbox
                    .call("route", |b, store| {
                        let payment = payment.map(convert::payment_to_v2).transpose()?;
                        b.0.payproxy_plugin_router().call_route(
                            store,
                            &request,
                            payment.as_ref(),
                            &providers,
                            seed,
                        )
                    })?
                    .map_err(|r| Rejection {
                        status: r.status,
                        code: r.code,
                        message: r.message,
                    })
            }
            RouterPlugin::V1(sandbox) => {
                let request = v1::payproxy::plugin::types::HttpRequest {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    query: request.query.clone(),
                    headers: request.headers.clone(),
                    body: request.body.clone(),
                };
                let providers: Vec<_> = providers
                    .iter()
                    .map(|p| v1::payproxy::plugin::types::Provider {
                        name: p.name.clone(),
                        region: p.region.clone(),
                        tags: p.tags.clone(),
                        cost: p.cost,
                    })
                    .collect();
                sandbox
                    .call("route", |b, store| {
                        b.0.payproxy_plugin_router()
                            .call_route(store, &request, &providers, seed)
                    })?
                    .map_err(|r| Rejection {
                        status: r.status,
                        code: r.code,
                        message: r.message,
                    })
            }
        };
        self.check(output, providers)
    }

    /// The names of the candidate ids a packed router chose; an id that is not a candidate
    /// is bad output.
    fn names(
        &self,
        catalogue: &Catalogue,
        chosen: &[u32],
        candidates: &[Candidate],
    ) -> Result<Vec<String>, PluginFailure> {
        if chosen.len() > MAX_NAMES {
            return Err(self.bad_output(format!("returned {} provider ids", chosen.len())));
        }
        chosen
            .iter()
            .map(|id| match catalogue.names.get(*id as usize) {
                Some(name) if candidates.iter().any(|c| c.id == *id) => Ok(name.clone()),
                _ => Err(self.bad_output(format!(
                    "returned provider id {id}, which is not a candidate of this route"
                ))),
            })
            .collect()
    }

    fn check(
        &self,
        output: Result<Vec<String>, Rejection>,
        providers: &[Provider],
    ) -> Result<RouteDecision, PluginFailure> {
        match output {
            Ok(names) => {
                if names.is_empty() || names.len() > MAX_NAMES {
                    return Err(self.bad_output(format!("returned {} provider names", names.len())));
                }
                let mut order: Vec<String> = Vec::with_capacity(names.len());
                for name in names {
                    if !providers.iter().any(|p| p.name == name) {
                        return Err(self.bad_output(format!(
                            "named provider {:?}, which this route does not have",
                            truncate(&name, 64)
                        )));
                    }
                    if !order.contains(&name) {
                        order.push(name);
                    }
                }
                Ok(RouteDecision::Providers(order))
            }
            Err(r) => {
                let code_ok = !r.code.is_empty()
                    && r.code.len() <= MAX_CODE
                    && r.code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !(400..=599).contains(&r.status) || !code_ok || r.message.len() > MAX_MESSAGE {
                    return Err(self.bad_output(format!(
                        "returned an invalid rejection (status {}, code of {} bytes, message of {} bytes)",
                        r.status,
                        r.code.len(),
                        r.message.len()
                    )));
                }
                Ok(RouteDecision::Reject {
                    status: r.status,
                    code: r.code,
                    message: r.message,
                })
            }
        }
    }

    fn bad_output(&self, detail: String) -> PluginFailure {
        match self {
            RouterPlugin::V1(s) => s.bad_output(detail),
            RouterPlugin::V2(s) => s.bad_output(detail),
            RouterPlugin::V3(s, _) => s.bad_output(detail),
            RouterPlugin::V4(s, _) => s.bad_output(detail),
        }
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        match self {
            RouterPlugin::V1(s) => s.name(),
            RouterPlugin::V2(s) => s.name(),
            RouterPlugin::V3(s, _) => s.name(),
            RouterPlugin::V4(s, _) => s.name(),
        }
    }

    /// Why the component's contract should be replaced, when it is deprecated.
    pub fn deprecation(&self) -> Option<&'static str> {
        match self {
            RouterPlugin::V1(_) => Some(DEPRECATED_V1),
            RouterPlugin::V2(_) | RouterPlugin::V3(..) | RouterPlugin::V4(..) => None,
        }
    }

    /// Contract version the component implements.
    pub fn contract(&self) -> &'static str {
        match self {
            RouterPlugin::V1(_) => "0.1.0",
            RouterPlugin::V2(_) => "0.2.0",
            RouterPlugin::V3(..) => "0.3.0",
            RouterPlugin::V4(..) => "0.4.0",
        }
    }

    /// Instances created so far.
    pub fn instances_created(&self) -> u64 {
        match self {
            RouterPlugin::V1(s) => s.instances_created(),
            RouterPlugin::V2(s) => s.instances_created(),
            RouterPlugin::V3(s, _) => s.instances_created(),
            RouterPlugin::V4(s, _) => s.instances_created(),
        }
    }
}

/// The 0.3.0 header block: `name: value\n` per header, names lower-cased (the view is built
/// from `http` header names, which are already). A header that would break the format is
/// left out, though `http` does not let one through.
fn pack_headers(headers: &[(String, String)]) -> String {
    let (block, lines) = pack(headers, false);
    // One scan of the whole block instead of one per value: a value with a line break would
    // have added lines. Only a view not built from `http` headers can fail it.
    let clean = memchr::memchr(b'\r', block.as_bytes()).is_none()
        && memchr::memchr_iter(b'\n', block.as_bytes()).count() == lines;
    if clean {
        block
    } else {
        pack(headers, true).0
    }
}

/// The block and its number of lines; with `check_values`, values with a line break are
/// left out (names are always checked: they are short).
fn pack(headers: &[(String, String)], check_values: bool) -> (String, usize) {
    let mut block = String::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 3).sum());
    let mut lines = 0;
    for (name, value) in headers {
        // One look at each byte of the name: format-breaking bytes and upper case.
        let (mut bad, mut upper) = (name.is_empty(), false);
        for b in name.bytes() {
            bad |= matches!(b, b':' | b'\n' | b'\r');
            upper |= b.is_ascii_uppercase();
        }
        if bad || (check_values && value.bytes().any(|b| matches!(b, b'\n' | b'\r'))) {
            continue;
        }
        if upper {
            block.push_str(&name.to_ascii_lowercase());
        } else {
            block.push_str(name);
        }
        block.push_str(": ");
        block.push_str(value);
        block.push('\n');
        lines += 1;
    }
    (block, lines)
}

#[cfg(test)]
mod tests {
    use super::pack_headers;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_block_lower_cases_names_and_leaves_out_what_would_break_it() {
        assert_eq!(
            pack_headers(&pairs(&[
                ("Content-Type", "a/b"),
                ("x-a", "1: 2"),
                ("x-a", "")
            ])),
            "content-type: a/b\nx-a: 1: 2\nx-a: \n"
        );
        assert_eq!(
            pack_headers(&pairs(&[
                ("x-ok", "1"),
                ("x-nl", "a\nx-forged: yes"),
                ("x-cr", "a\rb"),
                ("bad:name", "v"),
                ("", "v"),
                ("x-last", "2"),
            ])),
            "x-ok: 1\nx-last: 2\n"
        );
    }
}
