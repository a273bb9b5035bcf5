//! DANA's XML messages as serde types, written and read by quick-xml (which escapes and
//! unescapes text: no XML is ever built by concatenating user data).

use serde::{Deserialize, Serialize};

/// `<request><head>…</head><body>…</body></request>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "request")]
pub struct Request {
    /// Protocol, function and message id.
    pub head: RequestHead,
    /// The function's parameters.
    pub body: RequestBody,
}

/// `<head>` of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHead {
    /// Always `2.0`.
    pub version: String,
    /// `dana.acquiring.order.create|query|cancel|refund`.
    pub function: String,
    /// From the credentials.
    pub client_id: String,
    /// ISO-8601 at +07:00.
    pub req_time: String,
    /// DANA's idempotency key: the host's idempotency key.
    pub req_msg_id: String,
}

/// `<body>` of a request; each function uses its own subset, in this element order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBody {
    /// From the credentials.
    pub merchant_id: String,
    /// The merchant reference (create; query and cancel when DANA's id is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_trans_id: Option<String>,
    /// DANA's id (query, cancel, refund).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirement_id: Option<String>,
    /// Create: title and amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Create: the wallet's phone, E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopper_phone: Option<String>,
    /// Refund: amount; absent refunds what remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<Amount>,
}

/// `<order>` of a create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Shown to the shopper.
    pub order_title: String,
    /// What to charge.
    pub order_amount: Amount,
}

/// `<value>150000.00</value><currency>IDR</currency>`: a decimal string with the
/// currency's ISO 4217 exponent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amount {
    /// Decimal, e.g. `150000.00`.
    pub value: String,
    /// Upper-case ISO 4217.
    pub currency: String,
}

/// `<response><head>…</head><body>…</body></response>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Response {
    /// Echo of the request head.
    #[serde(default)]
    pub head: Option<ResponseHead>,
    /// Result and ids.
    #[serde(default)]
    pub body: Option<ResponseBody>,
}

/// `<head>` of a response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseHead {
    /// The function answered.
    #[serde(default)]
    pub function: Option<String>,
    /// Echo of the request's id.
    #[serde(default)]
    pub req_msg_id: Option<String>,
}

/// `<body>` of a response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseBody {
    /// The verdict; a body without it cannot be trusted.
    #[serde(default)]
    pub result_info: Option<ResultInfo>,
    /// DANA's id of the order.
    #[serde(default)]
    pub acquirement_id: Option<String>,
    /// Echo of the merchant reference.
    #[serde(default)]
    pub merchant_trans_id: Option<String>,
    /// Create: where the shopper pays.
    #[serde(default)]
    pub checkout_url: Option<String>,
    /// Query: `INIT`, `PAYING`, `SUCCESS`, `CLOSED`, `CANCELLED`.
    #[serde(default)]
    pub acquirement_status: Option<String>,
    /// Query: the order's amount.
    #[serde(default)]
    pub order_amount: Option<Amount>,
    /// Refund: DANA's id of the refund.
    #[serde(default)]
    pub refund_id: Option<String>,
}

/// `<resultInfo>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultInfo {
    /// `S` success, `F` failure, `U` unknown, `A` accepted (processing).
    pub result_status: String,
    /// Numeric code, informative.
    #[serde(default)]
    pub result_code_id: Option<String>,
    /// `SUCCESS`, `SYSTEM_ERROR`, `INSUFFICIENT_BALANCE` …
    pub result_code: String,
    /// Human text.
    #[serde(default)]
    pub result_msg: Option<String>,
}

/// Serialise a request, every special character escaped as an entity.
pub fn write(request: &Request) -> Result<String, quick_xml::SeError> {
    use serde::Serialize as _;
    let mut text = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let mut ser = quick_xml::se::Serializer::new(&mut text);
    ser.set_quote_level(quick_xml::se::QuoteLevel::Full);
    request.serialize(ser)?;
    Ok(text)
}

/// Parse a request (tests and tools; the simulator has its own strict parser).
pub fn read_request(text: &str) -> Result<Request, quick_xml::DeError> {
    quick_xml::de::from_str(text)
}

/// Parse a response; `None` for anything that is not well-formed UTF-8 XML of that shape.
pub fn read_response(bytes: &[u8]) -> Option<Response> {
    let text = std::str::from_utf8(bytes).ok()?;
    quick_xml::de::from_str(text).ok()
}

/// An optional text element, `None` when absent or empty.
pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
