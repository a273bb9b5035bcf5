//! The plugin value and its role traits: 0.4.0 storefront and the provider side.

use payproxy_plugin_sdk::payment::{
    Annotation, Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal,
};
use payproxy_plugin_sdk::storefront::{
    Call, CardDetails, PaymentEvent, PaymentRecord, RenderedEvent, Storefront,
};

use crate::config::Config;
use crate::{card, decode, encode, event, parse, render};

/// The plugin: its parsed config. One value serves both sides.
pub struct Stripe {
    config: Config,
}

impl Stripe {
    /// The plugin with the JSON `config`.
    pub fn new(config: &str) -> Result<Stripe, String> {
        Ok(Stripe {
            config: Config::parse(config)?,
        })
    }

    /// The parsed config.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Storefront for Stripe {
    fn init(config: &str) -> Result<Self, String> {
        Stripe::new(config)
    }

    fn parse(&self, request: &HttpRequest) -> Result<Call, Refusal> {
        parse::call(&self.config, request)
    }

    fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> HttpResponse {
        render::outcome(payment, outcome, payment_id, annotations)
    }

    fn render_payment(&self, record: &PaymentRecord) -> HttpResponse {
        render::record(record)
    }

    fn render_list(&self, records: &[PaymentRecord], has_more: bool, url: &str) -> HttpResponse {
        render::list(records, has_more, url)
    }

    fn render_refusal(&self, refusal: &Refusal) -> HttpResponse {
        render::refusal(refusal)
    }

    fn forward_headers(&self, credentials: &[(String, String)]) -> Vec<(String, String)> {
        card::auth_headers(&self.config, credentials)
    }

    fn card_lookup(&self, token: &str, credentials: &[(String, String)]) -> Option<HttpRequest> {
        card::lookup(&self.config, token, credentials)
    }

    fn card_details(&self, response: &HttpResponse) -> Option<CardDetails> {
        card::details(response)
    }

    fn render_event(&self, e: &PaymentEvent) -> Option<RenderedEvent> {
        event::render(e)
    }

    fn sign_event(&self, body: &[u8], secret: &str, now_s: i64) -> Vec<(String, String)> {
        event::sign(body, secret, now_s)
    }
}

impl Egress for Stripe {
    fn init(config: &str) -> Result<Self, String> {
        Stripe::new(config)
    }

    fn capabilities(&self) -> Capabilities {
        // Stripe replays a POST with the same Idempotency-Key; intents can be retrieved.
        Capabilities {
            idempotent_resend: true,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        encode::request(&self.config, payment, context)
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        decode::response(&self.config, payment, response)
    }

    fn decode_webhook(
        &self,
        request: &HttpRequest,
        context: &Context,
    ) -> Result<payproxy_plugin_sdk::payment::Webhook, Refusal> {
        crate::webhook::decode(&self.config, request, context)
    }
}
