//! List: the payments made through payproxy on this route, from its records, newest first
//! with the storefront API's paging; the dialect renders the page.

use super::*;
use crate::plugin::storefront::{ListQuery, PaymentRecord};

impl Payments {
    /// Answer a list call.
    pub(super) async fn list(&self, ctx: &Ctx<'_>, query: &ListQuery) -> Answer {
        let route = ctx.route.name.clone();
        let q = query.clone();
        let (entries, has_more) = match self.scan(move |s| s.list_payments(&route, &q)).await {
            Ok(page) => page,
            Err(e) => return self.store_failed(ctx, &e).answer,
        };
        let records: Vec<PaymentRecord> = entries.into_iter().map(|e| e.record).collect();
        match ctx
            .ingress
            .render_list(&records, has_more, ctx.parts.uri.path())
        {
            Ok(response) => answer(ctx.route, "none", response),
            Err(failure) => self.plugin_failed(ctx, &failure),
        }
    }
}
