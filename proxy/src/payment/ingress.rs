//! Ingress: what the storefront request asks for, in the storefront dialect's words.

use super::*;
use payproxy_plugin_sdk::storefront::HELD_HEADER;

impl Payments {
    /// What the request asks, from the dialect's parse of it as payproxy would make the
    /// provider's request from the canonical payment (`marked`, see [`parse_marked`]). When
    /// that parse refuses, the request is parsed again as it is: if that succeeds, the first
    /// refusal says what the request carries beyond the canonical payment
    /// ([`Ctx::beyond_canonical`]), which only a request sent on unchanged may carry. A
    /// refusal or a failing dialect is answered at once: nothing is sent anywhere.
    pub(super) fn ingress(
        &self,
        ctx: &mut Ctx<'_>,
        marked: Result<Result<Call, Refusal>, PluginFailure>,
    ) -> Result<Call, Answer> {
        let beyond = match marked {
            Ok(Ok(call)) => return Ok(call),
            Ok(Err(refusal)) => refusal,
            Err(failure) => return Err(self.plugin_failed(ctx, &failure)),
        };
        match ctx.ingress.parse(&ctx.view) {
            Ok(Ok(call)) => {
                ctx.beyond_canonical = Some(beyond);
                Ok(call)
            }
            Ok(Err(refusal)) => Err(self.refuse(ctx, refusal)),
            Err(failure) => Err(self.plugin_failed(ctx, &failure)),
        }
    }
}

/// The dialect's parse of `view` marked with [`HELD_HEADER`]: as a request payproxy may make
/// from the canonical payment. `view` is as it was afterwards.
pub(super) fn parse_marked(
    ingress: &DialectPlugin,
    view: &mut HttpRequest,
) -> Result<Result<Call, Refusal>, PluginFailure> {
    view.headers
        .push((HELD_HEADER.to_string(), "true".to_string()));
    let parsed = ingress.parse(view);
    view.headers.pop();
    parsed
}
