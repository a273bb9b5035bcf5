//! The Pix-like `cob` API over real HTTP: charges with a copy-paste code, idempotent `PUT` by
//! txid, payment, removal, CPF/CNPJ and amount checks, the bearer token.

mod json_http;

use hyper::{Method, StatusCode};
use json_http::{Answer, Http};
use provider_sim::Simulator;
use serde_json::{json, Value};

/// An edit that breaks a valid body.
type Patch = fn(&mut Value);

const AUTH: (&str, &str) = ("authorization", "Bearer test_pix_token");
const TXID: &str = "73e18494c0807ea0b1a2d9041604ccef";

fn cob(amount: &str) -> Value {
    json!({
        "calendario": {"expiracao": 1800},
        "devedor": {"cpf": "52998224725", "nome": "Fulano de Tal"},
        "valor": {"original": amount},
        "chave": "pix@shop.example",
        "solicitacaoPagador": "Pedido 3001",
        "infoAdicionais": [{"nome": "reference", "valor": "order-3001"}]
    })
}

async fn put(http: &Http, txid: &str, body: &Value) -> Answer {
    http.send(
        Method::PUT,
        &format!("/pix/v2/cob/{txid}"),
        &[AUTH],
        &body.to_string(),
    )
    .await
}

async fn get(http: &Http, txid: &str) -> Answer {
    http.send(Method::GET, &format!("/pix/v2/cob/{txid}"), &[AUTH], "")
        .await
}

/// CRC16-CCITT as the test knows it, to check the simulator's codes independently.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[tokio::test]
async fn charge_is_created_with_a_checksummed_code_and_paid() {
    let sim = Simulator::start(&["pix-br"]).await.unwrap();
    let http = Http::new(&sim, "pix-br");
    let answer = put(&http, TXID, &cob("10.00")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json["txid"], TXID);
    assert_eq!(answer.json["status"], "ATIVA");
    assert_eq!(answer.json["valor"]["original"], "10.00");
    assert_eq!(answer.json["calendario"]["expiracao"], 1800);
    let code = answer.json["pixCopiaECola"].as_str().unwrap();
    assert!(code.starts_with("000201"));
    assert!(code.contains("br.gov.bcb.pix") && code.contains(TXID) && code.contains("5303986"));
    let (payload, crc) = code.split_at(code.len() - 4);
    assert!(payload.ends_with("6304"));
    assert_eq!(format!("{:04X}", crc16(payload.as_bytes())), crc);

    let ledger = sim.ledger("pix-br");
    assert_eq!(ledger.len(), 1);
    let charge = &ledger[0];
    assert_eq!(
        (charge.id.as_str(), charge.amount, charge.currency.as_str()),
        (TXID, 1000, "brl")
    );
    assert_eq!(charge.status, "requires_action");
    assert_eq!(charge.merchant_reference.as_deref(), Some("order-3001"));
    assert_eq!(charge.idempotency_key.as_deref(), Some(TXID));

    let paid = http
        .send(Method::POST, &format!("/pix/v2/cob/{TXID}/pay"), &[], "")
        .await;
    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.json["status"], "CONCLUIDA");
    let now = get(&http, TXID).await;
    assert_eq!(now.json["status"], "CONCLUIDA");
    assert_eq!(now.json["pix"][0]["valor"], "10.00");
    assert_eq!(sim.ledger("pix-br")[0].status, "succeeded");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_same_put_is_idempotent_and_shows_the_current_state() {
    let sim = Simulator::start(&["pix-br"]).await.unwrap();
    let http = Http::new(&sim, "pix-br");
    let first = put(&http, TXID, &cob("10.00")).await;
    let again = put(&http, TXID, &cob("10.00")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed());
    assert_eq!(first.json, again.json);
    http.send(Method::POST, &format!("/pix/v2/cob/{TXID}/pay"), &[], "")
        .await;
    let after_paying = put(&http, TXID, &cob("10.00")).await;
    assert_eq!(
        after_paying.json["status"], "CONCLUIDA",
        "a resend learns the payment happened"
    );
    assert_eq!(sim.ledger("pix-br").len(), 1);

    let other = put(&http, TXID, &cob("12.00")).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(
        other.json["type"],
        "https://pix.bcb.gov.br/api/v2/error/CobTxidDuplicado"
    );
    assert_eq!(other.headers["content-type"], "application/problem+json");
    sim.shutdown().await;
}

#[tokio::test]
async fn removal_by_the_receiver() {
    let sim = Simulator::start(&["pix-br"]).await.unwrap();
    let http = Http::new(&sim, "pix-br");
    put(&http, TXID, &cob("10.00")).await;
    let remove = json!({"status": "REMOVIDA_PELO_USUARIO_RECEBEDOR"}).to_string();
    let path = format!("/pix/v2/cob/{TXID}");
    let removed = http.send(Method::PATCH, &path, &[AUTH], &remove).await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.json["status"], "REMOVIDA_PELO_USUARIO_RECEBEDOR");
    assert_eq!(removed.json["revisao"], 1);
    let again = http.send(Method::PATCH, &path, &[AUTH], &remove).await;
    assert_eq!(again.status, StatusCode::OK, "removing twice is harmless");
    assert_eq!(sim.ledger("pix-br")[0].status, "canceled");
    let pay = http
        .send(Method::POST, &format!("{path}/pay"), &[], "")
        .await;
    assert_eq!(
        pay.status,
        StatusCode::BAD_REQUEST,
        "a removed charge cannot be paid"
    );
    let other = http
        .send(
            Method::PATCH,
            &path,
            &[AUTH],
            r#"{"valor":{"original":"1.00"}}"#,
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_charges_are_400_with_the_property_and_record_nothing() {
    let sim = Simulator::start(&["pix-br"]).await.unwrap();
    let http = Http::new(&sim, "pix-br");
    let cases: [(Patch, &str); 7] = [
        (
            |b| b["devedor"]["cpf"] = json!("52998224724"),
            "cob.devedor.cpf",
        ),
        (
            |b| b["devedor"]["cpf"] = json!("11111111111"),
            "cob.devedor.cpf",
        ),
        (
            |b| b["devedor"] = json!({"cnpj": "11222333000180"}),
            "cob.devedor.cnpj",
        ),
        (
            |b| b["valor"]["original"] = json!("10.001"),
            "cob.valor.original",
        ),
        (|b| b["valor"]["original"] = json!(10), "cob.valor.original"),
        (
            |b| {
                b.as_object_mut().unwrap().remove("chave");
            },
            "cob.chave",
        ),
        (
            |b| b["solicitacaoPagador"] = json!("x".repeat(141)),
            "cob.solicitacaoPagador",
        ),
    ];
    for (patch, property) in cases {
        let mut body = cob("10.00");
        patch(&mut body);
        let answer = put(&http, TXID, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{property}");
        assert_eq!(
            answer.json["type"],
            "https://pix.bcb.gov.br/api/v2/error/CobOperacaoInvalida"
        );
        assert_eq!(answer.json["violacoes"][0]["propriedade"], property);
    }
    let short = put(&http, "tooshort", &cob("10.00")).await;
    assert_eq!(short.json["violacoes"][0]["propriedade"], "cob.txid");
    assert!(sim.ledger("pix-br").is_empty());
    // Nothing was stored for the txid: a valid PUT with it still creates the charge.
    let mut cnpj = cob("10.00");
    cnpj["devedor"] = json!({"cnpj": "11222333000181", "nome": "Empresa"});
    assert_eq!(put(&http, TXID, &cnpj).await.status, StatusCode::CREATED);
    sim.shutdown().await;
}

#[tokio::test]
async fn bearer_token_required_and_unknown_charges_are_404() {
    let sim = Simulator::start(&["pix-br"]).await.unwrap();
    let http = Http::new(&sim, "pix-br");
    let path = format!("/pix/v2/cob/{TXID}");
    let answer = http
        .send(Method::PUT, &path, &[], &cob("10.00").to_string())
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json["type"],
        "https://pix.bcb.gov.br/api/v2/error/AcessoNegado"
    );
    assert!(sim.ledger("pix-br").is_empty());
    let missing = get(&http, TXID).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json["type"],
        "https://pix.bcb.gov.br/api/v2/error/CobNaoEncontrado"
    );
    sim.shutdown().await;
}
