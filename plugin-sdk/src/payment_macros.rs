//! Export macros for the payment roles: 0.4.0's provider side and compliance, and the
//! 0.2.0 roles (whose values are converted from and to the SDK's 0.4.0 types).

/// Implementation detail shared by the export macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __ingress_impl {
    ($ty:ty, $guest:path) => {
        impl $guest for __PayproxyExport {
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::arena::during_init(|| {
                    let value = <$ty as $crate::payment::Ingress>::init(&config)?;
                    $crate::payment::__glue::store("ingress", value);
                    Ok(())
                })
            }
            fn parse_request(
                request: $crate::payment::__v2::HttpRequest,
            ) -> ::std::result::Result<$crate::payment::__v2::Payment, $crate::payment::__v2::Refusal>
            {
                use $crate::payment::Version;
                let request: $crate::payment::HttpRequest = request.version();
                let parsed = $crate::payment::__glue::with("ingress", |p: &$ty| {
                    $crate::payment::Ingress::parse_request(p, &request)
                })
                .unwrap_or_else(|| Err($crate::payment::__glue::not_initialised()));
                parsed
                    .and_then(|payment| $crate::payment::__glue::payment_to_v2(&payment))
                    .map_err(Version::version)
            }
            fn render_outcome(
                payment: $crate::payment::__v2::Payment,
                outcome: $crate::payment::__v2::Outcome,
                payment_id: ::std::string::String,
                annotations: ::std::vec::Vec<$crate::payment::__v2::Annotation>,
            ) -> $crate::payment::__v2::HttpResponse {
                use $crate::payment::Version;
                let payment: $crate::payment::Payment = payment.version();
                let outcome: $crate::payment::Outcome = outcome.version();
                let annotations: ::std::vec::Vec<$crate::payment::Annotation> =
                    annotations.version();
                $crate::payment::__glue::with("ingress", |p: &$ty| {
                    $crate::payment::Ingress::render_outcome(
                        p,
                        &payment,
                        &outcome,
                        &payment_id,
                        &annotations,
                    )
                })
                .unwrap_or_else($crate::payment::__glue::no_ingress_response)
                .version()
            }
            fn render_refusal(
                refusal: $crate::payment::__v2::Refusal,
            ) -> $crate::payment::__v2::HttpResponse {
                use $crate::payment::Version;
                let refusal: $crate::payment::Refusal = refusal.version();
                $crate::payment::__glue::with("ingress", |p: &$ty| {
                    $crate::payment::Ingress::render_refusal(p, &refusal)
                })
                .unwrap_or_else($crate::payment::__glue::no_ingress_response)
                .version()
            }
            fn request_id(
                request: $crate::payment::__v2::HttpRequest,
            ) -> ::std::option::Option<::std::string::String> {
                use $crate::payment::Version;
                let request: $crate::payment::HttpRequest = request.version();
                $crate::payment::__glue::with("ingress", |p: &$ty| {
                    $crate::payment::Ingress::request_id(p, &request)
                })
                .flatten()
            }
        }
    };
}

/// Implementation detail shared by the export macros: the egress side of the
/// `dialect-plugin` world, and the world's export (the ingress side must be implemented).
#[doc(hidden)]
#[macro_export]
macro_rules! __egress_impl {
    ($ty:ty) => {
        $crate::__egress_impl!(
            $ty,
            __v2,
            $crate::bindings::v2::dialect::exports::payproxy::plugin::egress::Guest,
            $crate::bindings::v2::dialect::exports::payproxy::plugin::egress::Context,
            $crate::bindings::v2::dialect::exports::payproxy::plugin::egress::Capabilities
        );
        $crate::bindings::v2::dialect::__export_dialect_world!(__PayproxyExport with_types_in $crate::bindings::v2::dialect);
    };
    ($ty:ty, $t:ident, $guest:path, $ctx:path, $caps:path, webhooks) => {
        $crate::__egress_impl!($ty, $t, $guest, $ctx, $caps, {
            fn decode_webhook(
                request: $crate::payment::HttpRequest,
                context: $ctx,
            ) -> ::std::result::Result<$crate::payment::Webhook, $crate::payment::Refusal> {
                let context = $crate::payment::Context {
                    provider: context.provider,
                    credentials: context.credentials,
                    now_ms: context.now_ms,
                    idempotency_key: context.idempotency_key,
                };
                $crate::payment::__glue::with("egress", |p: &$ty| {
                    $crate::payment::Egress::decode_webhook(p, &request, &context)
                })
                .unwrap_or_else(|| Err($crate::payment::__glue::not_initialised()))
            }
        });
    };
    ($ty:ty, $t:ident, $guest:path, $ctx:path, $caps:path) => {
        $crate::__egress_impl!($ty, $t, $guest, $ctx, $caps, {});
    };
    ($ty:ty, $t:ident, $guest:path, $ctx:path, $caps:path, { $($extra:tt)* }) => {
        impl $guest for __PayproxyExport {
            $($extra)*
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::arena::during_init(|| {
                    let value = <$ty as $crate::payment::Egress>::init(&config)?;
                    $crate::payment::__glue::store("egress", value);
                    Ok(())
                })
            }
            fn describe() -> $caps {
                let caps = $crate::payment::__glue::with("egress", |p: &$ty| {
                    $crate::payment::Egress::capabilities(p)
                })
                .unwrap_or($crate::payment::Capabilities {
                    idempotent_resend: false,
                    status_query: false,
                });
                $caps {
                    idempotent_resend: caps.idempotent_resend,
                    status_query: caps.status_query,
                }
            }
            fn encode_request(
                payment: $crate::payment::$t::Payment,
                context: $ctx,
            ) -> ::std::result::Result<$crate::payment::$t::HttpRequest, $crate::payment::$t::Refusal> {
                use $crate::payment::Version;
                let payment: $crate::payment::Payment = payment.version();
                let context = $crate::payment::Context {
                    provider: context.provider,
                    credentials: context.credentials,
                    now_ms: context.now_ms,
                    idempotency_key: context.idempotency_key,
                };
                $crate::payment::__glue::with("egress", |p: &$ty| {
                    $crate::payment::Egress::encode_request(p, &payment, &context)
                })
                .unwrap_or_else(|| Err($crate::payment::__glue::not_initialised()))
                .map(Version::version)
                .map_err(Version::version)
            }
            fn decode_response(
                payment: $crate::payment::$t::Payment,
                response: $crate::payment::$t::HttpResponse,
            ) -> $crate::payment::$t::Outcome {
                use $crate::payment::Version;
                let payment: $crate::payment::Payment = payment.version();
                let response: $crate::payment::HttpResponse = response.version();
                $crate::payment::__glue::with("egress", |p: &$ty| {
                    $crate::payment::Egress::decode_response(p, &payment, &response)
                })
                .unwrap_or_else(|| {
                    $crate::payment::Outcome::error(
                        $crate::payment::ErrorClass::NotSent,
                        "plugin_not_initialised",
                        "",
                        "egress called before init",
                    )
                })
                .version()
            }
        }
    };
}

/// Export a type implementing [`Ingress`](crate::payment::Ingress) and
/// [`Egress`](crate::payment::Egress) as a `dialect-plugin` (both sides).
#[macro_export]
macro_rules! export_dialect {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            $crate::__ingress_impl!(
                $ty,
                $crate::bindings::v2::dialect::exports::payproxy::plugin::ingress::Guest
            );
            $crate::__egress_impl!($ty);
        };
    };
}

/// Export a type implementing only [`Egress`](crate::payment::Egress) (a provider-side
/// dialect). The storefront side refuses everything, so routes must not use it as ingress.
#[macro_export]
macro_rules! export_egress {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v2::dialect::exports::payproxy::plugin::ingress::Guest
                for __PayproxyExport
            {
                fn init(
                    _config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        Ok(())
                    })
                }
                fn parse_request(
                    _request: $crate::payment::__v2::HttpRequest,
                ) -> ::std::result::Result<$crate::payment::__v2::Payment, $crate::payment::__v2::Refusal>
                {
                    Err($crate::payment::Version::version($crate::payment::__glue::no_ingress()))
                }
                fn render_outcome(
                    _payment: $crate::payment::__v2::Payment,
                    _outcome: $crate::payment::__v2::Outcome,
                    _payment_id: ::std::string::String,
                    _annotations: ::std::vec::Vec<$crate::payment::__v2::Annotation>,
                ) -> $crate::payment::__v2::HttpResponse {
                    $crate::payment::Version::version($crate::payment::__glue::no_ingress_response())
                }
                fn render_refusal(
                    _refusal: $crate::payment::__v2::Refusal,
                ) -> $crate::payment::__v2::HttpResponse {
                    $crate::payment::Version::version($crate::payment::__glue::no_ingress_response())
                }
                fn request_id(
                    _request: $crate::payment::__v2::HttpRequest,
                ) -> ::std::option::Option<::std::string::String> {
                    None
                }
            }
            $crate::__egress_impl!($ty);
        };
    };
}

/// Export a type implementing [`Egress`](crate::payment::Egress) as a 0.4.0
/// `egress-plugin` (a provider-side dialect that also reads its provider's notifications:
/// [`Egress::decode_webhook`](crate::payment::Egress::decode_webhook)).
#[macro_export]
macro_rules! export_egress_v4 {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            $crate::__egress_impl!(
                $ty,
                __v4,
                $crate::bindings::v4::egress::exports::payproxy::plugin::egress::Guest,
                $crate::bindings::v4::egress::exports::payproxy::plugin::egress::Context,
                $crate::bindings::v4::egress::exports::payproxy::plugin::egress::Capabilities,
                webhooks
            );
            $crate::bindings::v4::egress::__export_egress_v4_world!(__PayproxyExport with_types_in $crate::bindings::v4::egress);
        };
    };
}

/// Export a type implementing [`Compliance`](crate::payment::Compliance) as contract 0.4.0.
#[macro_export]
macro_rules! export_compliance {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v4::compliance::exports::payproxy::plugin::compliance::Guest for __PayproxyExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        let value = <$ty as $crate::payment::Compliance>::init(&config)?;
                        $crate::payment::__glue::store("compliance", value);
                        Ok(())
                    })
                }
                fn check(
                    payment: $crate::payment::Payment,
                    card: ::std::option::Option<$crate::payment::CardDetails>,
                ) -> $crate::payment::Decision {
                    $crate::payment::__glue::with("compliance", |p: &$ty| {
                        $crate::payment::Compliance::check_card(p, &payment, card.as_ref())
                    })
                    .unwrap_or_else($crate::payment::__glue::compliance_not_initialised)
                }
            }
            $crate::bindings::v4::compliance::__export_compliance_v4_world!(__PayproxyExport with_types_in $crate::bindings::v4::compliance);
        };
    };
}

/// Export a type implementing [`Compliance`](crate::payment::Compliance) as contract 0.2.0
/// (the payment only, no card details). For hosts older than 0.4.0: a denial's status is
/// not carried (0.2.0 hosts answer 402).
#[macro_export]
macro_rules! export_compliance_v2 {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v2::compliance::exports::payproxy::plugin::compliance::Guest for __PayproxyExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        let value = <$ty as $crate::payment::Compliance>::init(&config)?;
                        $crate::payment::__glue::store("compliance", value);
                        Ok(())
                    })
                }
                fn check(
                    payment: $crate::payment::__v2::Payment,
                ) -> $crate::bindings::v2::compliance::exports::payproxy::plugin::compliance::Decision {
                    use $crate::bindings::v2::compliance::exports::payproxy::plugin::compliance as v2;
                    use $crate::payment::Version;
                    let payment: $crate::payment::Payment = payment.version();
                    let decision = $crate::payment::__glue::with("compliance", |p: &$ty| $crate::payment::Compliance::check(p, &payment))
                        .unwrap_or_else($crate::payment::__glue::compliance_not_initialised);
                    v2::Decision {
                        verdict: match decision.verdict {
                            $crate::payment::Verdict::Allow => v2::Verdict::Allow,
                            $crate::payment::Verdict::Deny(d) => v2::Verdict::Deny(v2::Denial { code: d.code, message: d.message }),
                            $crate::payment::Verdict::Challenge(kind) => v2::Verdict::Challenge(kind.version()),
                        },
                        rule: decision.rule,
                        annotations: decision.annotations.into_iter().map(Version::version).collect(),
                    }
                }
            }
            $crate::bindings::v2::compliance::__export_compliance_world!(__PayproxyExport with_types_in $crate::bindings::v2::compliance);
        };
    };
}

/// Export a type implementing the 0.2.0 [`Router`](crate::payment::Router).
#[macro_export]
macro_rules! export_payment_router {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v2::router::exports::payproxy::plugin::router::Guest for __PayproxyExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        let value = <$ty as $crate::payment::Router>::init(&config)?;
                        $crate::payment::__glue::store("router", value);
                        Ok(())
                    })
                }
                fn route(
                    request: $crate::payment::__v2::HttpRequest,
                    payment: ::std::option::Option<$crate::payment::__v2::Payment>,
                    providers: ::std::vec::Vec<$crate::payment::__v2::Provider>,
                    seed: u64,
                ) -> ::std::result::Result<::std::vec::Vec<::std::string::String>, $crate::payment::__v2::Rejection> {
                    use $crate::payment::Version;
                    let request: $crate::payment::HttpRequest = request.version();
                    let payment: ::std::option::Option<$crate::payment::Payment> = payment.map(Version::version);
                    let providers: ::std::vec::Vec<$crate::payment::Provider> = providers.into_iter().map(Version::version).collect();
                    $crate::payment::__glue::with("router", |p: &$ty| $crate::payment::Router::route(p, &request, payment.as_ref(), &providers, seed))
                        .unwrap_or_else(|| Err($crate::Rejection::new(500, "plugin_not_initialised", "router called before init")))
                        .map_err(|r| $crate::payment::__v2::Rejection { status: r.status, code: r.code, message: r.message })
                }
            }
            $crate::bindings::v2::router::__export_payment_router_world!(__PayproxyExport with_types_in $crate::bindings::v2::router);
        };
    };
}
