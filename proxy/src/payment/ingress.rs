//! Ingress: what the storefront request asks for, in the storefront dialect's words.

use super::*;

impl Payments {
    /// Parse the request with the storefront dialect. A refusal or a failing dialect is
    /// answered at once: nothing is sent anywhere.
    pub(super) fn ingress(&self, ctx: &Ctx<'_>) -> Result<Call, Answer> {
        match ctx.ingress.parse(&ctx.view) {
            Ok(Ok(call)) => Ok(call),
            Ok(Err(refusal)) => Err(self.refuse(ctx, refusal)),
            Err(failure) => Err(self.plugin_failed(ctx, &failure)),
        }
    }
}
