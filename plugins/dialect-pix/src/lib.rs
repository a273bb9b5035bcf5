//! `dialect-pix`: the provider side of a Pix PSP speaking the Central Bank's `cob` API
//! (immediate charges) and its Pix callbacks, egress only.
//!
//! # Config
//!
//! ```json
//! { "base_path": "/pix/v2", "expiration_seconds": 3600, "pix_key": "pix@shop.example" }
//! ```
//!
//! All optional. `base_path` (default `/pix/v2`) is put before every path;
//! `expiration_seconds` is `calendario.expiracao` (60..=604800, default 3600); `pix_key` is
//! the receiver's key when the provider's credentials carry no `pix_key`.
//! Credentials: `api_key` (sent as `Authorization: Bearer`), optional `pix_key`.
//!
//! # Protocol
//!
//! - authorize → `PUT {base}/cob/{txid}` with JSON
//!   `{"calendario": {"expiracao"}, "devedor"?: {"cpf"|"cnpj", "nome"?}, "valor": {"original": "10.00"},
//!   "chave", "solicitacaoPagador", "infoAdicionais": [{"nome": "reference", "valor": <merchant reference>}]}`.
//!   The txid is 32 hex characters of SHA-256(context idempotency key): a resend is the same
//!   `PUT` and finds the same charge, so it is idempotent without any header. Answer
//!   `{"txid", "status": "ATIVA", "pixCopiaECola": "000201…"}` → requires-action QR with the
//!   copy-paste code, provider reference = txid. Before sending: method instant transfer with
//!   scheme `pix`, currency BRL, amount present and positive, CPF/CNPJ check digits ([`taxid`];
//!   refusals never repeat the number). `nome` comes from metadata `payer_name`;
//!   `solicitacaoPagador` is the description, else the merchant reference (≤ 140 characters).
//! - status → `GET {base}/cob/{txid}`; void → `PATCH {base}/cob/{txid}`
//!   `{"status": "REMOVIDA_PELO_USUARIO_RECEBEDOR"}`. Statuses mapped in [`codes`].
//! - capture, refund → refused `operation_unsupported` (a Pix refund is a `devolucao` of the
//!   received transfer's end-to-end id, which this dialect does not track).
//!
//! # Notifications
//!
//! `decode-webhook` reads the Central Bank's Pix callback (`{"pix": [{"endToEndId", "txid",
//! "valor", "horario", "devolucoes"?}]}`): a paid charge is a `status` approved notification
//! for its txid (event id = `endToEndId`), a return (`devolucao`) a `refund`. Signed with the
//! credential `webhook_secret`: header `x-pix-signature` = hex HMAC-SHA256 of the raw body (no
//! timestamp: the real callbacks have none). See [`webhook`].

pub mod codes;
pub mod config;
pub mod decode;
pub mod encode;
pub mod taxid;
pub mod webhook;

use payproxy_plugin_sdk::export_egress_v4;
use payproxy_plugin_sdk::payment::{
    Capabilities, Context, Egress, HttpRequest, HttpResponse, Outcome, Payment, Refusal, Webhook,
};

pub use config::Config;

/// The plugin: its parsed config.
pub struct Pix {
    config: Config,
}

impl Egress for Pix {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Pix {
            config: Config::parse(config)?,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            idempotent_resend: true,
            status_query: true,
        }
    }

    fn encode_request(&self, payment: &Payment, context: &Context) -> Result<HttpRequest, Refusal> {
        encode::request(&self.config, payment, context)
    }

    fn decode_response(&self, payment: &Payment, response: &HttpResponse) -> Outcome {
        decode::response(payment, response)
    }

    fn decode_webhook(&self, request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
        webhook::decode(request, context)
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_egress_v4!(Pix);
