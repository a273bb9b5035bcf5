//! Export macros for the 0.4.0 storefront role.

/// Implementation detail of the 0.4.0 export macros: the `storefront` interface and its
/// world's export.
#[doc(hidden)]
#[macro_export]
macro_rules! __storefront_impl {
    ($ty:ty) => {
        impl $crate::bindings::v4::storefront::exports::payproxy::plugin::storefront::Guest
            for __PayproxyExport
        {
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::arena::during_init(|| {
                    let value = <$ty as $crate::storefront::Storefront>::init(&config)?;
                    $crate::payment::__glue::store("storefront", value);
                    Ok(())
                })
            }
            fn parse(
                request: $crate::payment::HttpRequest,
            ) -> ::std::result::Result<$crate::storefront::Call, $crate::payment::Refusal> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::parse(p, &request)
                })
                .unwrap_or_else(|| Err($crate::storefront::__glue::not_initialised()))
            }
            fn render_outcome(
                payment: $crate::payment::Payment,
                outcome: $crate::payment::Outcome,
                payment_id: ::std::string::String,
                annotations: ::std::vec::Vec<$crate::payment::Annotation>,
            ) -> $crate::payment::HttpResponse {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::render_outcome(
                        p,
                        &payment,
                        &outcome,
                        &payment_id,
                        &annotations,
                    )
                })
                .unwrap_or_else($crate::storefront::__glue::empty_500)
            }
            fn render_payment(record: $crate::storefront::PaymentRecord) -> $crate::payment::HttpResponse {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::render_payment(p, &record)
                })
                .unwrap_or_else($crate::storefront::__glue::empty_500)
            }
            fn render_list(
                records: ::std::vec::Vec<$crate::storefront::PaymentRecord>,
                has_more: bool,
                url: ::std::string::String,
            ) -> $crate::payment::HttpResponse {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::render_list(p, &records, has_more, &url)
                })
                .unwrap_or_else($crate::storefront::__glue::empty_500)
            }
            fn render_refusal(refusal: $crate::payment::Refusal) -> $crate::payment::HttpResponse {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::render_refusal(p, &refusal)
                })
                .unwrap_or_else($crate::storefront::__glue::empty_500)
            }
            fn forward_headers(
                credentials: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::vec::Vec<(::std::string::String, ::std::string::String)> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::forward_headers(p, &credentials)
                })
                .unwrap_or_default()
            }
            fn card_lookup(
                token: ::std::string::String,
                credentials: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::option::Option<$crate::payment::HttpRequest> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::card_lookup(p, &token, &credentials)
                })
                .flatten()
            }
            fn read_card(
                response: $crate::payment::HttpResponse,
            ) -> ::std::option::Option<$crate::storefront::CardDetails> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::card_details(p, &response)
                })
                .flatten()
            }
            fn render_event(
                event: $crate::storefront::PaymentEvent,
            ) -> ::std::option::Option<$crate::storefront::RenderedEvent> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::render_event(p, &event)
                })
                .flatten()
            }
            fn sign_event(
                body: ::std::vec::Vec<u8>,
                secret: ::std::string::String,
                now_s: i64,
            ) -> ::std::vec::Vec<(::std::string::String, ::std::string::String)> {
                $crate::payment::__glue::with("storefront", |p: &$ty| {
                    $crate::storefront::Storefront::sign_event(p, &body, &secret, now_s)
                })
                .unwrap_or_default()
            }
        }
        $crate::bindings::v4::storefront::__export_storefront_world!(__PayproxyExport with_types_in $crate::bindings::v4::storefront);
    };
}

/// Export a type implementing [`Storefront`](crate::storefront::Storefront) and
/// [`Egress`](crate::payment::Egress) as a 0.4.0 `dialect-plugin` (both sides: the
/// component exports `storefront@0.4.0` and `egress@0.4.0`).
#[macro_export]
macro_rules! export_storefront_dialect {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            $crate::__storefront_impl!($ty);
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

/// Export a type implementing [`Storefront`](crate::storefront::Storefront) as a 0.4.0
/// `storefront-plugin` (storefront side only).
#[macro_export]
macro_rules! export_storefront {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            $crate::__storefront_impl!($ty);
        };
    };
}
