//! The Pix-like API under `/pix/v2/`, modelled on the Central Bank's `cob` (immediate charge)
//! API.
//!
//! - `PUT /pix/v2/cob/{txid}` (txid: 26–35 alphanumerics) `{"calendario": {"expiracao"}?,
//!   "devedor"?: {"cpf"|"cnpj", "nome"?}, "valor": {"original": "10.00"}, "chave",
//!   "solicitacaoPagador"?, "infoAdicionais"?: [{"nome", "valor"}]}` → 201 with the charge:
//!   `{"txid", "revisao", "status": "ATIVA", "calendario", "location", "valor", "chave",
//!   "solicitacaoPagador", "pixCopiaECola": "000201…"}`. The same `PUT` again (same body)
//!   answers the charge as it is now (200, `idempotent-replayed: true`): the txid is the
//!   idempotency key. Another body for an existing txid → 409 `CobTxidDuplicado`.
//! - `GET /pix/v2/cob/{txid}` → the charge; `status` `ATIVA`, `CONCLUIDA` (with a `pix` list),
//!   `REMOVIDA_PELO_USUARIO_RECEBEDOR`.
//! - `PATCH /pix/v2/cob/{txid}` `{"status": "REMOVIDA_PELO_USUARIO_RECEBEDOR"}` → removes an
//!   active charge (repeating it is harmless; a paid one → 400).
//! - `POST /pix/v2/cob/{txid}/pay` — simulator control, no token: the payer pays (`CONCLUIDA`).
//!
//! With webhooks on (`POST /__sim/webhooks`), paying a charge posts a Pix callback
//! `{"pix": [{"endToEndId", "txid", "valor", "horario", "infoPagador"?}]}` signed with
//! `x-pix-signature` = hex HMAC-SHA256(secret, body), as `dialect-pix` verifies it (see
//! `callback`).
//!
//! API calls need `Authorization: Bearer <non-empty token>` (401 otherwise). Errors are RFC 7807
//! problem documents like the Central Bank's: `{"type": ".../error/CobOperacaoInvalida",
//! "title", "status", "detail", "violacoes"?: [{"razao", "propriedade"}]}`. The body is
//! validated as the plugin does: BRL decimal amount, CPF/CNPJ check digits, `chave` present.
//! Ledger: id and idempotency key are the txid, the merchant reference is `infoAdicionais`
//! `reference` (else `solicitacaoPagador`); statuses `requires_action`, `succeeded`,
//! `canceled`; metadata keeps `chave`, `expiracao` and `solicitacaoPagador`.

mod brcode;
mod callback;
mod cob;
mod taxid;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::json_api::Call;
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

const PREFIX: &str = "/pix/v2/cob/";

/// A route of this dialect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Create(String),
    Read(String),
    Revise(String),
    Pay(String),
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix(PREFIX)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let route = match (method, segments.as_slice()) {
            (&Method::PUT, [txid]) => Route::Create((*txid).to_owned()),
            (&Method::GET, [txid]) => Route::Read((*txid).to_owned()),
            (&Method::PATCH, [txid]) => Route::Revise((*txid).to_owned()),
            (&Method::POST, [txid, "pay"]) => Route::Pay((*txid).to_owned()),
            _ => return None,
        };
        Some(route)
    }
}

/// A problem document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    /// `(razao, propriedade)` pairs.
    pub(crate) violations: Vec<(String, &'static str)>,
}

impl Problem {
    /// A 400 `CobOperacaoInvalida` about one property.
    pub(crate) fn invalid(property: &'static str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Problem {
            status: StatusCode::BAD_REQUEST,
            kind: "CobOperacaoInvalida",
            title: "Cobrança inválida.",
            detail: format!("A requisição que busca alterar ou criar uma cobrança não respeita o schema: {reason}"),
            violations: vec![(reason, property)],
        }
    }

    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            violations: Vec::new(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut value = json!({
            "type": format!("https://pix.bcb.gov.br/api/v2/error/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.violations.is_empty() {
            let list: Vec<Value> = self
                .violations
                .iter()
                .map(|(r, p)| json!({ "razao": r, "propriedade": p }))
                .collect();
            value["violacoes"] = list.into();
        }
        value
    }

    pub(crate) fn response(&self) -> SimResponse {
        let mut response = json(self.status, &self.to_json());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Serve one request of this dialect.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let Some(call) = Call::read(req).await? else {
        let problem = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "CobOperacaoInvalida",
            "Cobrança inválida.",
            "body too large",
        );
        return Ok(problem.response());
    };
    if !matches!(route, Route::Pay(_)) && call.bearer().is_none() {
        let problem = Problem::new(
            StatusCode::UNAUTHORIZED,
            "AcessoNegado",
            "Acesso negado.",
            "missing bearer token",
        );
        return Ok(problem.response());
    }
    let result = match route {
        Route::Create(txid) => cob::create(provider, &txid, &call),
        Route::Read(txid) => cob::read(provider, &txid).map(Reply::Current),
        Route::Revise(txid) => cob::revise(provider, &txid, &call).map(Reply::Current),
        Route::Pay(txid) => cob::pay(provider, &txid).map(Reply::Current),
    };
    Ok(match result {
        Ok(Reply::Created(value)) => json(StatusCode::CREATED, &value),
        Ok(Reply::Current(value)) => json(StatusCode::OK, &value),
        Ok(Reply::Replayed(value)) => {
            let mut response = json(StatusCode::OK, &value);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Err(problem) => problem.response(),
    })
}

/// A successful answer: the charge, and how it came about.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Just created (201).
    Created(Value),
    /// The same `PUT` again: the charge as it is now (200, replayed).
    Replayed(Value),
    /// Read or changed (200).
    Current(Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = "73e18494c0807ea0b1a2d9041604ccef";
        let path = format!("/pix/v2/cob/{id}");
        assert_eq!(
            Route::parse(&Method::PUT, &path),
            Some(Route::Create(id.into()))
        );
        assert_eq!(
            Route::parse(&Method::GET, &path),
            Some(Route::Read(id.into()))
        );
        assert_eq!(
            Route::parse(&Method::PATCH, &path),
            Some(Route::Revise(id.into()))
        );
        assert_eq!(
            Route::parse(&Method::POST, &format!("{path}/pay")),
            Some(Route::Pay(id.into()))
        );
        assert_eq!(Route::parse(&Method::POST, &path), None);
        assert_eq!(Route::parse(&Method::GET, "/pix/v2/cobv/x"), None);
    }
}

#[cfg(test)]
mod webhook_tests {
    use serde_json::{json, Value};

    use super::callback::{signature, SIGNATURE_HEADER};
    use crate::test_client::call;
    use crate::Simulator;

    #[tokio::test]
    async fn paying_a_charge_sends_one_signed_callback() {
        let sim = Simulator::start(&["pix-br"]).await.unwrap();
        let base = sim.base_url("pix-br");
        let txid = "7978c0c97ea847e78e8849634473c1f1";
        let cob = format!("{base}/pix/v2/cob/{txid}");
        let body = json!({"valor": {"original": "10.00"}, "chave": "pix@shop.example"});
        let auth = [
            ("authorization", "Bearer t".to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        let (status, _) = call("PUT", cob.clone(), &auth, Some(body.to_string())).await;
        assert_eq!(status, 201);
        // Webhooks on only now: creating the charge sent nothing, paying it sends the callback.
        sim.set_webhooks(
            "pix-br",
            Some("http://127.0.0.1:9/webhooks/pix-br"),
            "pix-secret",
        );
        assert_eq!(call("POST", format!("{cob}/pay"), &[], None).await.0, 200);
        // Paying again changes nothing and sends nothing more.
        assert_eq!(call("POST", format!("{cob}/pay"), &[], None).await.0, 200);
        let sent = sim.webhooks_sent("pix-br");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].dialect, "pix");
        assert_eq!(
            sent[0].header(SIGNATURE_HEADER),
            Some(signature("pix-secret", &sent[0].body).as_str())
        );
        let pix = &sent[0].json().unwrap()["pix"][0];
        assert_eq!(pix["txid"], txid);
        assert_eq!(pix["valor"], "10.00");
        let (_, charge) = call("GET", cob, &auth, None).await;
        let charge: Value = serde_json::from_str(&charge).unwrap();
        assert_eq!(pix["endToEndId"], charge["pix"][0]["endToEndId"]);
        sim.shutdown().await;
    }
}
