//! Storefront side: a storefront's Stripe API request → what it asks of payproxy
//! ([`Call`]): a payment operation, a list of payments, or a request forwarded unchanged.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    HttpRequest, Money, Operation, Payment, PaymentMethod, Refusal,
};
use payproxy_plugin_sdk::payment_method;
use payproxy_plugin_sdk::storefront::{Call, ListQuery, PaymentCall, HELD_HEADER};

use crate::config::Config;
use crate::form::Form;
use crate::{method, refuse, validate};

/// The Stripe API calls the dialect understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/payment_intents`.
    Create,
    /// `GET /v1/payment_intents`.
    List,
    /// `GET /v1/payment_intents/{id}`.
    Retrieve(String),
    /// `POST /v1/payment_intents/{id}/confirm`.
    Confirm(String),
    /// `POST /v1/payment_intents/{id}`: an update of an intent not confirmed yet.
    Update(String),
    /// `POST /v1/payment_intents/{id}/capture`.
    Capture(String),
    /// `POST /v1/payment_intents/{id}/cancel`.
    Cancel(String),
    /// `POST /v1/refunds`.
    Refund,
    /// Anything else: forwarded unchanged, with the object id of the path when there is one.
    Forward(Option<String>),
}

/// The top-level parameters of Stripe's `POST /v1/payment_intents`.
const CREATE_PARAMETERS: &[&str] = &[
    "amount",
    "currency",
    "application_fee_amount",
    "automatic_payment_methods",
    "capture_method",
    "confirm",
    "confirmation_method",
    "confirmation_token",
    "customer",
    "description",
    "error_on_requires_action",
    "expand",
    "mandate",
    "mandate_data",
    "metadata",
    "off_session",
    "on_behalf_of",
    "payment_method",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shipping",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
    "use_stripe_sdk",
];

/// The top-level parameters of Stripe's `POST /v1/payment_intents/{id}` (update).
const UPDATE_PARAMETERS: &[&str] = &[
    "amount",
    "currency",
    "application_fee_amount",
    "capture_method",
    "customer",
    "description",
    "expand",
    "metadata",
    "payment_method",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "receipt_email",
    "setup_future_usage",
    "shipping",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
];

/// The top-level parameters of Stripe's `POST /v1/payment_intents/{id}/confirm`, and the
/// `description` and `metadata` payproxy's confirm of its own record also takes.
const CONFIRM_PARAMETERS: &[&str] = &[
    "capture_method",
    "confirmation_token",
    "description",
    "error_on_requires_action",
    "expand",
    "mandate",
    "mandate_data",
    "metadata",
    "off_session",
    "payment_method",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shipping",
    "use_stripe_sdk",
];

/// What an update payproxy applies to its record cannot express: a capture method set back
/// to automatic (the record keeps "manual" once asked), a currency without its amount.
fn updatable(form: &Form) -> Result<(), Refusal> {
    // Stripe clears the whole field with an empty value; payproxy's update applies keys
    // and values, so it would keep what the storefront asked to clear.
    for (field, how) in [
        ("metadata", "set each key to an empty value to remove it"),
        ("description", "set it to another text"),
    ] {
        if form.get(&[field]).is_some_and(str::is_empty) {
            return Err(Refusal::invalid(
                Some(field),
                "parameter_unsupported",
                format!("payproxy cannot clear {field} on an intent it keeps a record of: {how}."),
            ));
        }
    }
    let automatic = form
        .get(&["capture_method"])
        .is_some_and(|m| !m.is_empty() && m != "manual");
    if automatic {
        return Err(Refusal::invalid(
            Some("capture_method"),
            "parameter_unsupported",
            "payproxy cannot set an intent it holds back to automatic capture: cancel it and \
             create it again.",
        ));
    }
    let currency = form.get(&["currency"]).is_some_and(|c| !c.is_empty());
    let amount = form.get(&["amount"]).is_some_and(|a| !a.is_empty());
    if currency && !amount {
        let mut r = refuse::missing("amount");
        r.message
            .push_str(" payproxy changes an intent's currency with its amount.");
        return Err(r);
    }
    Ok(())
}

/// Parameters of a create or confirm that an intent payproxy holds cannot keep: the
/// canonical payment has no place for them, so the request payproxy sends at the confirm
/// would go without them (Connect's money movement, saving the card for later, the
/// statement text, a mandate …). A create with `confirm=true` reaches a Stripe provider
/// unchanged and keeps them.
const NOT_KEPT_WHEN_HELD: &[&str] = &[
    "application_fee_amount",
    "confirmation_token",
    "error_on_requires_action",
    "mandate",
    "mandate_data",
    "off_session",
    "on_behalf_of",
    "payment_method_configuration",
    "radar_options",
    "setup_future_usage",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
];

/// What a capture payproxy sends from its record cannot carry (it sends the amount only).
const NOT_KEPT_AT_CAPTURE: &[&str] = &[
    "application_fee_amount",
    "final_capture",
    "metadata",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
];

/// What a refund payproxy sends from its record cannot carry (it sends the intent, the
/// amount and the metadata; `reason` is checked, not sent on).
const NOT_KEPT_AT_REFUND: &[&str] = &[
    "instructions_email",
    "origin",
    "refund_application_fee",
    "reverse_transfer",
];

/// The `payment_method_options[card][…]` a held intent keeps (see [`crate::method`]);
/// every other payment method option is sent only by an unchanged request.
const CARD_OPTIONS_KEPT: &[&str] = &["capture_method", "exemption", "installments"];

/// A value that asks for nothing: empty (Stripe's way to unset), `false`, or the default
/// `automatic` of `request_three_d_secure`. Such a parameter is not refused as not kept.
fn asks_nothing(key: &[std::borrow::Cow<'_, str>], value: &str) -> bool {
    value.is_empty()
        || value == "false"
        || (key.last().map(|k| k.as_ref()) == Some("request_three_d_secure")
            && value == "automatic")
}

/// Headers that put a request in another account's hands (Stripe Connect): only an
/// unchanged request carries them to the provider.
const ACCOUNT_HEADERS: &[&str] = &["stripe-account", "stripe-context"];

/// Refuse a parameter Stripe does not have, as Stripe does (`parameter_unknown`).
fn known_parameters(form: &Form, known: &[&str]) -> Result<(), Refusal> {
    for (key, _) in form.pairs() {
        let Some(top) = key.first() else { continue };
        if !known.contains(&top.as_ref()) {
            let shown: String = top.chars().take(64).collect();
            return Err(Refusal::invalid(
                Some(&shown),
                "parameter_unknown",
                format!("Received unknown parameter: {shown}"),
            ));
        }
    }
    Ok(())
}

/// Which request payproxy makes from its own record, for [`kept`].
#[derive(Clone, Copy)]
enum Held {
    /// A create without `confirm=true`: held until its confirm.
    Create,
    /// A confirm of a payment payproxy holds.
    Confirm,
    /// A capture, cancel or refund of one.
    FollowUp(&'static [&'static str]),
}

/// Refuse what a request payproxy makes from its own record of the payment could not
/// carry, instead of dropping it unseen (`parameter_unsupported`, naming it;
/// `header_unsupported` for a Connect account header).
fn kept(request: &HttpRequest, form: &Form, held: Held) -> Result<(), Refusal> {
    let advice = match held {
        Held::Create => {
            "An intent created without confirm=true stays in payproxy until its confirm, and \
             the request payproxy then sends cannot carry it. Create and confirm it in one \
             request (confirm=true): that request reaches Stripe unchanged."
        }
        Held::Confirm | Held::FollowUp(_) => {
            "payproxy makes the provider's request from its own record of the payment (an \
             intent created without confirm=true, made under another id, or routed to a \
             provider of another API), which has no place for it."
        }
    };
    if let Some(header) = ACCOUNT_HEADERS.iter().find(|h| request.header(h).is_some()) {
        return Err(Refusal::invalid(
            None,
            "header_unsupported",
            format!("payproxy cannot keep the {header} header on this PaymentIntent. {advice}"),
        ));
    }
    let (not_kept, options) = match held {
        Held::Create | Held::Confirm => (NOT_KEPT_WHEN_HELD, true),
        Held::FollowUp(not_kept) => (not_kept, false),
    };
    for (key, value) in form.pairs() {
        if asks_nothing(key, value) {
            continue;
        }
        let segment = |i: usize| key.get(i).map(|k| k.as_ref());
        let dropped = match (segment(0), segment(1), segment(2)) {
            (Some(top), _, _) if not_kept.contains(&top) => Some(bracketed(&key[..1])),
            // Of the card's 3-D Secure options only `authenticated` is kept (an external
            // authentication's cryptogram, version … are not).
            (Some("payment_method_options"), Some("card"), Some("three_d_secure")) if options => {
                (segment(3) != Some("authenticated")).then(|| bracketed(&key[..key.len().min(4)]))
            }
            (Some("payment_method_options"), Some("card"), Some(option))
                if options && !CARD_OPTIONS_KEPT.contains(&option) =>
            {
                Some(bracketed(&key[..3]))
            }
            (Some("payment_method_options"), Some(method), _) if options && method != "card" => {
                Some(bracketed(&key[..2]))
            }
            _ => None,
        };
        if let Some(param) = dropped {
            let shown: String = param.chars().take(100).collect();
            return Err(Refusal::invalid(
                Some(&shown),
                "parameter_unsupported",
                format!("payproxy cannot keep {shown} on this PaymentIntent. {advice}"),
            ));
        }
    }
    Ok(())
}

/// Stripe's limits on metadata.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;
const MAX_TEXT: usize = 1000;

/// Path segments under `/v1/` that group resources rather than name one
/// (`/v1/checkout/sessions/cs_1`): skipped before collection / id pairs.
const NAMESPACES: &[&str] = &[
    "apps",
    "billing",
    "billing_portal",
    "checkout",
    "climate",
    "entitlements",
    "financial_connections",
    "forwarding",
    "identity",
    "issuing",
    "radar",
    "reporting",
    "sigma",
    "tax",
    "terminal",
    "test_helpers",
    "treasury",
];

/// Whether a path segment is shaped like a Stripe object id: `prefix_rest` (`pi_3Mx9`,
/// `re_123`, `pm_card_visa`), URL-safe.
pub fn id_shaped(segment: &str) -> bool {
    validate::object_id(segment)
        && segment.starts_with(|c: char| c.is_ascii_lowercase())
        && segment
            .split_once('_')
            .is_some_and(|(prefix, rest)| !rest.is_empty() && prefix.len() <= 12)
}

/// A payment intent id payproxy can orchestrate: `pi_…`.
fn intent_id(segment: &str) -> bool {
    segment.starts_with("pi_") && segment.len() > 3 && validate::object_id(segment)
}

/// The object id of a path: Stripe paths alternate collection and id
/// (`/v1/customers/cus_1/sources/card_2`), after optional namespaces; the last id wins.
pub fn path_object_id(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/")?;
    let mut segments: Vec<&str> = rest.split('/').collect();
    while segments.len() > 1 && NAMESPACES.contains(&segments[0]) {
        segments.remove(0);
    }
    segments
        .iter()
        .skip(1)
        .step_by(2)
        .rfind(|s| id_shaped(s))
        .map(|s| s.to_string())
}

impl Route {
    /// The route of `method` `path`. Every request has one: what payproxy does not
    /// orchestrate is forwarded.
    pub fn parse(method: &str, path: &str) -> Route {
        let segments: Vec<&str> = match path.strip_prefix("/v1/") {
            Some(rest) => rest.split('/').collect(),
            None => return Route::Forward(None),
        };
        match (method, segments.as_slice()) {
            ("POST", ["payment_intents"]) => Route::Create,
            ("GET", ["payment_intents"]) => Route::List,
            ("POST", ["refunds"]) => Route::Refund,
            ("GET", ["payment_intents", id]) if intent_id(id) => Route::Retrieve(id.to_string()),
            ("POST", ["payment_intents", id]) if intent_id(id) => Route::Update(id.to_string()),
            ("POST", ["payment_intents", id, action]) if intent_id(id) => match *action {
                "confirm" => Route::Confirm(id.to_string()),
                "capture" => Route::Capture(id.to_string()),
                "cancel" => Route::Cancel(id.to_string()),
                _ => Route::Forward(Some(id.to_string())),
            },
            _ => Route::Forward(path_object_id(path)),
        }
    }
}

/// The body's form: the body for `POST`, the query for `GET`. JSON bodies are refused, the
/// Stripe API takes forms only.
fn form(request: &HttpRequest) -> Result<Form<'_>, Refusal> {
    if request.method == "GET" {
        return Ok(Form::parse(
            request.query.as_deref().unwrap_or_default().as_bytes(),
        ));
    }
    let content_type = request
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") || content_type.starts_with("multipart/") {
        return Err(Refusal::invalid(
            None,
            "invalid_content_type",
            "Send the parameters form-encoded (application/x-www-form-urlencoded), as Stripe's API takes them.",
        ));
    }
    Ok(Form::parse(request.body.as_deref().unwrap_or_default()))
}

/// What a storefront request asks of payproxy. Raw card data is refused first, on every
/// path, forwarded ones included.
pub fn call(config: &Config, request: &HttpRequest) -> Result<Call, Refusal> {
    let route = Route::parse(&request.method, &request.path);
    let form = form(request)?;
    // Card data first: a request carrying a card number is refused whatever else is wrong.
    refuse_card_data(config, &form)?;
    if request.method != "GET" {
        let query = Form::parse(request.query.as_deref().unwrap_or_default().as_bytes());
        refuse_card_data(config, &query)?;
    }
    match route {
        Route::Forward(id) => Ok(Call::Forward(id)),
        Route::List => list_query(&form).map(Call::List),
        route => {
            let confirm = match route {
                Route::Create => boolean(&form, "confirm")?.unwrap_or(false),
                Route::Update(_) => false,
                _ => true,
            };
            if matches!(route, Route::Create) && !confirm {
                // Nothing reaches a provider until the confirm, so the parameters are
                // checked here, as Stripe checks them at create.
                known_parameters(&form, CREATE_PARAMETERS)?;
                kept(request, &form, Held::Create)?;
            } else if request.header(HELD_HEADER).is_some() {
                // The host acts on this payment from its own record (see `HELD_HEADER`).
                let held = match route {
                    Route::Create => {
                        known_parameters(&form, CREATE_PARAMETERS)?;
                        Held::Confirm
                    }
                    Route::Confirm(_) => {
                        known_parameters(&form, CONFIRM_PARAMETERS)?;
                        Held::Confirm
                    }
                    Route::Update(_) => {
                        known_parameters(&form, UPDATE_PARAMETERS)?;
                        updatable(&form)?;
                        Held::Create
                    }
                    Route::Capture(_) => Held::FollowUp(NOT_KEPT_AT_CAPTURE),
                    Route::Refund => Held::FollowUp(NOT_KEPT_AT_REFUND),
                    // A cancel or a retrieve carries nothing but headers to check (a list
                    // and a forward were answered above).
                    _ => Held::FollowUp(&[]),
                };
                kept(request, &form, held)?;
            } else if let Route::Update(id) = route {
                // Unmarked, an update only names its intent: it goes unchanged to a provider
                // that knows it, which judges it (the marked parse checks what payproxy
                // applies itself).
                let mut payment = Payment::new(Operation::Authorize);
                payment.id = Some(id);
                return Ok(Call::Payment(PaymentCall {
                    payment,
                    confirm: false,
                }));
            }
            let payment = payment(config, request, &form, route)?;
            if matches!(payment.operation, Operation::Authorize)
                && payment.id.is_none()
                && confirm
                && payment.method.is_none()
            {
                return Err(Refusal::invalid(
                    Some("payment_method"),
                    "parameter_missing",
                    "You must provide a payment_method (or payment_method_data) to confirm this PaymentIntent.",
                ));
            }
            Ok(Call::Payment(PaymentCall { payment, confirm }))
        }
    }
}

/// `GET /v1/payment_intents`: `limit` (1–100, default 10), `starting_after`,
/// `ending_before`, `customer`, `created` or `created[gt|gte|lt|lte]`.
fn list_query(form: &Form) -> Result<ListQuery, Refusal> {
    let mut query = ListQuery::new(10);
    if let Some(limit) = integer(form, &["limit"])? {
        if !(1..=100).contains(&limit) {
            return Err(Refusal::invalid(
                Some("limit"),
                "parameter_invalid_integer",
                "Invalid limit: must be between 1 and 100.",
            ));
        }
        query.limit = limit as u32;
    }
    let id = |param: &str| -> Result<Option<String>, Refusal> {
        match form.get(&[param]).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if validate::object_id(v) => Ok(Some(v.to_string())),
            Some(_) => Err(refuse::bad_value(param, "an object id")),
        }
    };
    query.starting_after = id("starting_after")?;
    query.ending_before = id("ending_before")?;
    query.customer = id("customer")?;
    let bound = |key: &str, adjust: i64| -> Result<Option<i64>, Refusal> {
        let Some(v) = integer(form, &["created", key])? else {
            return Ok(None);
        };
        v.checked_add(adjust)
            .map(Some)
            .ok_or_else(|| refuse::not_integer(&bracketed(&["created", key])))
    };
    let exact = integer(form, &["created"])?;
    let lower = [exact, bound("gte", 0)?, bound("gt", 1)?];
    let upper = [exact, bound("lte", 0)?, bound("lt", -1)?];
    query.created_gte = lower.into_iter().flatten().max();
    query.created_lte = upper.into_iter().flatten().min();
    Ok(query)
}

/// An integer parameter (any sign), `None` when absent or empty.
fn integer(form: &Form, path: &[&str]) -> Result<Option<i64>, Refusal> {
    let Some(raw) = form.get(path).map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse::not_integer(&bracketed(path)));
    }
    raw.parse()
        .map(Some)
        .map_err(|_| refuse::not_integer(&bracketed(path)))
}

/// The canonical payment of a payment route.
fn payment(
    config: &Config,
    request: &HttpRequest,
    form: &Form,
    route: Route,
) -> Result<Payment, Refusal> {
    let operation = match route {
        Route::Create | Route::Confirm(_) | Route::Update(_) => Operation::Authorize,
        Route::Retrieve(_) => Operation::Status,
        Route::Capture(_) => Operation::Capture,
        Route::Cancel(_) => Operation::Void,
        Route::Refund => Operation::Refund,
        Route::List | Route::Forward(_) => {
            return Err(refuse::unrecognized(&request.method));
        }
    };
    let mut payment = Payment::new(operation);
    payment.idempotency_key = idempotency_key(request)?;
    payment.metadata = metadata(form, matches!(route, Route::Update(_)))?;
    payment.merchant_reference = config
        .reference_keys
        .iter()
        .find_map(|key| {
            payment
                .metadata
                .iter()
                .find(|(k, v)| k == key && !v.is_empty())
        })
        .map(|(_, v)| v.clone());
    match route {
        Route::Create => {
            let minor = amount(form, "amount")?.ok_or_else(|| refuse::missing("amount"))?;
            let code = form
                .get(&["currency"])
                .filter(|c| !c.is_empty())
                .ok_or_else(|| refuse::missing("currency"))?;
            let currency =
                currency::normalise(code).ok_or_else(|| refuse::currency("currency", code))?;
            payment.amount = Some(Money { minor, currency });
            purchase(form, &mut payment)?;
        }
        Route::Confirm(id) => {
            payment.id = Some(id);
            purchase(form, &mut payment)?;
        }
        Route::Update(id) => {
            payment.id = Some(id);
            // An amount alone keeps the intent's currency (`""`: the host fills it in).
            let currency = match form.get(&["currency"]).filter(|c| !c.is_empty()) {
                Some(code) => {
                    currency::normalise(code).ok_or_else(|| refuse::currency("currency", code))?
                }
                None => String::new(),
            };
            // A currency alone is refused by `updatable`.
            payment.amount = amount(form, "amount")?.map(|minor| Money { minor, currency });
            purchase(form, &mut payment)?;
        }
        Route::Capture(id) => {
            payment.id = Some(id);
            payment.amount = follow_up_amount(form, "amount_to_capture")?;
        }
        Route::Cancel(id) | Route::Retrieve(id) => payment.id = Some(id),
        Route::Refund => {
            let id = form
                .get(&["payment_intent"])
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    let mut r = refuse::missing("payment_intent");
                    r.message.push_str(" payproxy refunds by payment_intent.");
                    r
                })?;
            if !intent_id(id) {
                return Err(refuse::no_such("payment_intent", "payment_intent", id));
            }
            payment.id = Some(id.to_string());
            payment.amount = follow_up_amount(form, "amount")?;
            one_of(
                form,
                "reason",
                &["duplicate", "fraudulent", "requested_by_customer"],
            )?;
        }
        Route::List | Route::Forward(_) => {}
    }
    Ok(payment)
}

/// The payment intent or refund a request refers to (0.2.0's `request-id`).
pub fn request_id(request: &HttpRequest) -> Option<String> {
    match Route::parse(&request.method, &request.path) {
        Route::Create | Route::List | Route::Forward(_) => None,
        Route::Retrieve(id)
        | Route::Confirm(id)
        | Route::Update(id)
        | Route::Capture(id)
        | Route::Cancel(id) => Some(id),
        Route::Refund => {
            let form = form(request).ok()?;
            let id = form.get(&["payment_intent"])?;
            intent_id(id).then(|| id.to_string())
        }
    }
}

/// What a create or confirm says about the purchase: capture, method, shopper, options.
fn purchase(form: &Form, payment: &mut Payment) -> Result<(), Refusal> {
    payment.manual_capture = one_of(
        form,
        "capture_method",
        &["automatic", "automatic_async", "manual"],
    )? == Some("manual");
    payment.description = text(form, "description")?;
    payment.return_url = text(form, "return_url")?;
    if payment
        .return_url
        .as_deref()
        .is_some_and(|u| !u.contains("://") || u.contains(char::is_whitespace))
    {
        return Err(refuse::bad_value("return_url", "an absolute URL"));
    }
    method::apply(form, payment)?;
    // Stripe's per-method override: a card payment captured by hand whatever the top level
    // says. Also when no method is named yet (a create whose card comes with its confirm):
    // the record keeps it, and the confirm's card is captured by hand.
    let card_manual =
        form.get(&["payment_method_options", "card", "capture_method"]) == Some("manual");
    if card_manual && matches!(payment.method, None | Some(PaymentMethod::Card(_))) {
        payment.manual_capture = true;
    }
    Ok(())
}

/// `Idempotency-Key`: at most 255 characters, as on Stripe.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, Refusal> {
    let Some(key) = request
        .header("idempotency-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    if key.len() > 255 {
        return Err(Refusal::invalid(
            None,
            "idempotency_key_too_long",
            "Idempotency-Key must be at most 255 characters.",
        ));
    }
    Ok(Some(key.to_string()))
}

/// `metadata[k]=v` in body order; an empty value unsets the key, as on Stripe.
fn metadata(form: &Form, update: bool) -> Result<Vec<(String, String)>, Refusal> {
    // In an update an empty value removes its key, as on Stripe: the host sees it.
    let pairs: Vec<(String, String)> = form
        .map(&["metadata"])
        .into_iter()
        .filter(|(_, v)| update || !v.is_empty())
        .collect();
    let invalid = |message: String| Refusal::invalid(Some("metadata"), "invalid_metadata", message);
    if pairs.len() > MAX_METADATA_KEYS {
        return Err(invalid(format!(
            "metadata can have at most {MAX_METADATA_KEYS} keys."
        )));
    }
    for (key, value) in &pairs {
        if key.chars().count() > MAX_METADATA_KEY {
            return Err(invalid(format!(
                "metadata keys can have at most {MAX_METADATA_KEY} characters."
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(invalid(format!(
                "metadata values can have at most {MAX_METADATA_VALUE} characters."
            )));
        }
    }
    Ok(pairs)
}

/// A positive integer amount in minor units, `None` when absent or empty.
fn amount(form: &Form, param: &str) -> Result<Option<i64>, Refusal> {
    let Some(raw) = form.get(&[param]).map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse::not_integer(param));
    }
    let value: i64 = raw.parse().map_err(|_| refuse::not_integer(param))?;
    if value <= 0 {
        return Err(refuse::too_small(param));
    }
    Ok(Some(value))
}

/// The amount of a capture or refund. Stripe sends no currency with them: the currency is
/// empty unless the request names one (`currency`, optional), and the host fills it from
/// the payment it refers to.
fn follow_up_amount(form: &Form, param: &str) -> Result<Option<Money>, Refusal> {
    let Some(minor) = amount(form, param)? else {
        return Ok(None);
    };
    let currency = match form.get(&["currency"]).filter(|c| !c.is_empty()) {
        Some(code) => {
            currency::normalise(code).ok_or_else(|| refuse::currency("currency", code))?
        }
        None => String::new(),
    };
    Ok(Some(Money { minor, currency }))
}

/// `true` / `false`, `None` when absent.
pub fn boolean(form: &Form, param: &str) -> Result<Option<bool>, Refusal> {
    boolean_at(form, &[param])
}

/// A boolean at a nested path, refused by its bracketed name.
pub fn boolean_at(form: &Form, path: &[&str]) -> Result<Option<bool>, Refusal> {
    match form.get(path) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(refuse::not_boolean(&bracketed(path))),
    }
}

/// One of `allowed`, `None` when absent.
fn one_of<'a>(form: &'a Form, param: &str, allowed: &[&str]) -> Result<Option<&'a str>, Refusal> {
    match form.get(&[param]).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(_) => Err(refuse::bad_value(
            param,
            &format!("must be one of {}", allowed.join(", ")),
        )),
    }
}

/// A free-text parameter of at most 1000 characters.
fn text(form: &Form, param: &str) -> Result<Option<String>, Refusal> {
    match form.get(&[param]).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() <= MAX_TEXT => Ok(Some(v.to_string())),
        Some(_) => Err(refuse::bad_value(param, "at most 1000 characters")),
    }
}

/// `a[b][c]` from `["a", "b", "c"]`.
pub fn bracketed<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i == 0 {
            out.push_str(seg.as_ref());
        } else {
            out.push('[');
            out.push_str(seg.as_ref());
            out.push(']');
        }
    }
    out
}

/// Parameters whose values are numbers by design, never scanned for card-like values.
const NUMERIC_PARAMS: &[&str] = &[
    "amount",
    "amount_to_capture",
    "count",
    "tax_id",
    "bin",
    "last4",
];

/// Refuse raw card data: a `number` or `cvc` under `card` (or `source`), anywhere; with
/// `refuse_card_like_values`, also any other value that looks like a card number.
fn refuse_card_data(config: &Config, form: &Form) -> Result<(), Refusal> {
    for (key, value) in form.pairs() {
        let Some(last) = key.last() else { continue };
        let under_card = key[..key.len() - 1]
            .iter()
            .any(|s| s == "card" || s == "source");
        if under_card && matches!(last.as_ref(), "number" | "cvc" | "cvv") {
            return Err(refuse::card_number(&bracketed(key)));
        }
        // A method passed through (`payment_method_data[<type>][…]`) never carries a card's
        // security code, expiry or encrypted number, whatever its type is called.
        if key.first().is_some_and(|k| k == "payment_method_data")
            && key.len() >= 3
            && payment_method::is_card_field(last)
        {
            return Err(refuse::card_number(&bracketed(key)));
        }
        let scanned = config.refuse_card_like_values || last == "token";
        if scanned && !NUMERIC_PARAMS.contains(&last.as_ref()) && validate::card_like(value) {
            return Err(refuse::card_number(&bracketed(key)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::RefusalKind;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("POST", "/v1/payment_intents"), Route::Create);
        assert_eq!(Route::parse("GET", "/v1/payment_intents"), Route::List);
        assert_eq!(
            Route::parse("GET", "/v1/payment_intents/pi_1"),
            Route::Retrieve("pi_1".into())
        );
        assert_eq!(
            Route::parse("POST", "/v1/payment_intents/pi_1/cancel"),
            Route::Cancel("pi_1".into())
        );
        assert_eq!(Route::parse("POST", "/v1/refunds"), Route::Refund);
        let forward = |m: &str, p: &str| match Route::parse(m, p) {
            Route::Forward(id) => id,
            other => panic!("{m} {p}: {other:?}"),
        };
        assert_eq!(
            forward("POST", "/v1/payment_intents/pi_1/zap").as_deref(),
            Some("pi_1")
        );
        assert_eq!(
            Route::parse("POST", "/v1/payment_intents/pi_1"),
            Route::Update("pi_1".into())
        );
        assert_eq!(
            forward("POST", "/v1/payment_intents/seti_1").as_deref(),
            Some("seti_1")
        );
        assert_eq!(forward("GET", "/v1/refunds"), None);
        assert_eq!(
            forward("GET", "/v1/refunds/re_123").as_deref(),
            Some("re_123")
        );
        assert_eq!(
            forward("GET", "/v1/payment_intents/ch_1").as_deref(),
            Some("ch_1")
        );
        assert_eq!(forward("GET", "/v1/payment_intents/search"), None);
        assert_eq!(forward("POST", "/v2/payment_intents"), None);
        assert_eq!(
            forward("GET", "/v1/customers/cus_1/sources/card_2").as_deref(),
            Some("card_2")
        );
        assert_eq!(
            forward("GET", "/v1/checkout/sessions/cs_test_1").as_deref(),
            Some("cs_test_1")
        );
        assert_eq!(
            forward("POST", "/v1/payment_methods/pm_card_visa/attach").as_deref(),
            Some("pm_card_visa")
        );
        assert_eq!(forward("GET", "/v1/balance"), None);
        assert_eq!(forward("POST", "/v1/payment_intents/x%2F/capture"), None);
    }

    #[test]
    fn manual_capture_at_the_top_or_in_the_cards_options() {
        let manual = |body: &str| {
            let mut payment = Payment::new(Operation::Authorize);
            purchase(&Form::parse(body.as_bytes()), &mut payment).expect("read");
            payment.manual_capture
        };
        assert!(manual("capture_method=manual&payment_method=pm_card_visa"));
        assert!(manual(
            "payment_method=pm_card_visa&payment_method_options[card][capture_method]=manual"
        ));
        assert!(!manual("payment_method=pm_card_visa"));
        // No method yet: the record keeps it for the confirm's card.
        assert!(manual(
            "payment_method_options[card][capture_method]=manual"
        ));
        // The card's options do not apply to another method.
        assert!(!manual(
            "payment_method_data[type]=ideal&payment_method_options[card][capture_method]=manual"
        ));
    }

    #[test]
    fn amounts() {
        let form = Form::parse(b"a=12&b=10.50&c=0&d=-5&e=1e3&f=99999999999999999999&g=");
        assert_eq!(amount(&form, "a"), Ok(Some(12)));
        assert_eq!(amount(&form, "g"), Ok(None));
        let code = |p| amount(&form, p).err().map(|r| r.code);
        assert_eq!(code("b").as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(code("c").as_deref(), Some("amount_too_small"));
        assert_eq!(code("d").as_deref(), Some("amount_too_small"));
        assert_eq!(code("e").as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(code("f").as_deref(), Some("parameter_invalid_integer"));
    }

    #[test]
    fn card_data_is_refused_without_echo() {
        let config = Config::default();
        let refused = |body: &str| refuse_card_data(&config, &Form::parse(body.as_bytes())).err();
        let r = refused("payment_method_data[card][number]=4242424242424242").expect("refused");
        assert_eq!(r.code, "card_number_not_accepted");
        assert!(!r.message.contains("4242"));
        assert!(refused("card[cvc]=123").is_some());
        assert!(refused("metadata[note]=4242 4242 4242 4242").is_some());
        assert!(
            refused("amount=4242424242424242").is_none(),
            "numeric params are not scanned"
        );
        assert!(refused("payment_method_data[pix][tax_id]=42424242424242").is_none());
        let lax = Config {
            refuse_card_like_values: false,
            ..Config::default()
        };
        let form = Form::parse(b"metadata[note]=4242424242424242");
        assert!(refuse_card_data(&lax, &form).is_ok());
        let form = Form::parse(b"payment_method_data[card][token]=4242424242424242");
        assert!(
            refuse_card_data(&lax, &form).is_err(),
            "a token is always scanned"
        );
    }

    #[test]
    fn request_ids() {
        let req = |method: &str, path: &str, body: &str| HttpRequest {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: vec![],
            body: Some(body.as_bytes().to_vec()),
        };
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents/pi_9/capture", "")).as_deref(),
            Some("pi_9")
        );
        assert_eq!(
            request_id(&req("GET", "/v1/payment_intents/pi_9", "")).as_deref(),
            Some("pi_9")
        );
        assert_eq!(
            request_id(&req("POST", "/v1/refunds", "payment_intent=pi_8&amount=1")).as_deref(),
            Some("pi_8")
        );
        assert_eq!(
            request_id(&req("POST", "/v1/refunds", "payment_intent=ch_8")),
            None
        );
        assert_eq!(request_id(&req("GET", "/v1/refunds/re_1", "")), None);
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents", "amount=1")),
            None
        );
        assert_eq!(
            request_id(&req("POST", "/v1/payment_intents/x%2F/capture", "")),
            None
        );
    }

    #[test]
    fn a_held_intent_refuses_what_its_confirm_could_not_carry() {
        let create = |body: &str, headers: &[(&str, &str)]| {
            let request = HttpRequest {
                method: "POST".into(),
                path: "/v1/payment_intents".into(),
                query: None,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: Some(body.as_bytes().to_vec()),
            };
            call(&Config::default(), &request)
        };
        let base = "amount=1000&currency=eur&payment_method=pm_card_visa";
        let refused = |extra: &str, headers: &[(&str, &str)]| match create(
            &format!("{base}&{extra}"),
            headers,
        ) {
            Err(r) => (r.code, r.kind, r.message),
            Ok(call) => panic!("{extra}: accepted as {call:?}"),
        };
        let param = |p: &str| RefusalKind::InvalidRequest(Some(p.to_string()));
        for (extra, named) in [
            ("transfer_data[destination]=acct_1", "transfer_data"),
            ("application_fee_amount=100", "application_fee_amount"),
            ("on_behalf_of=acct_1", "on_behalf_of"),
            ("setup_future_usage=off_session", "setup_future_usage"),
            ("statement_descriptor=SHOP", "statement_descriptor"),
            (
                "mandate_data[customer_acceptance][type]=online",
                "mandate_data",
            ),
            (
                "payment_method_options[card][request_three_d_secure]=any",
                "payment_method_options[card][request_three_d_secure]",
            ),
            (
                "payment_method_options[sepa_debit][mandate_options][x]=1",
                "payment_method_options[sepa_debit]",
            ),
        ] {
            let (code, kind, message) = refused(extra, &[]);
            assert_eq!(code, "parameter_unsupported", "{extra}");
            assert_eq!(kind, param(named), "{extra}");
            assert!(message.contains("confirm=true"), "{message}");
        }
        let (code, kind, _) = refused("metadata[a]=b", &[("Stripe-Account", "acct_1")]);
        assert_eq!(
            (code.as_str(), kind),
            ("header_unsupported", RefusalKind::InvalidRequest(None))
        );
        // What a held intent keeps is accepted.
        for kept in [
            "metadata[order_id]=A1&description=x&receipt_email=a%40b.co&customer=cus_1",
            "capture_method=manual&payment_method_options[card][capture_method]=manual",
            "payment_method_options[card][installments][plan][count]=3&return_url=https://s.example/r",
            "payment_method_options[card][exemption]=low_value&shipping[address][country]=DE",
            "expand[]=latest_charge&automatic_payment_methods[enabled]=true",
        ] {
            assert!(create(&format!("{base}&{kept}"), &[]).is_ok(), "{kept}");
        }
        // With confirm=true the request can reach a Stripe provider as it is: nothing refused.
        let confirmed = format!("{base}&confirm=true&transfer_data[destination]=acct_1");
        assert!(create(&confirmed, &[("Stripe-Account", "acct_1")]).is_ok());
    }

    #[test]
    fn a_request_the_host_makes_from_its_record_refuses_what_it_could_not_carry() {
        let request = |path: &str, body: &str, headers: &[(&str, &str)]| HttpRequest {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Some(body.as_bytes().to_vec()),
        };
        let held = [(HELD_HEADER, "true")];
        let code = |path: &str, body: &str, headers: &[(&str, &str)]| {
            call(&Config::default(), &request(path, body, headers))
                .err()
                .map(|r| r.code)
        };
        let confirm = "/v1/payment_intents/pi_1/confirm";
        let sfu = "payment_method=pm_card_visa&setup_future_usage=off_session";
        // Unmarked, the confirm may go unchanged to a provider that knows the intent.
        assert_eq!(code(confirm, sfu, &[]), None);
        assert_eq!(
            code(confirm, sfu, &held).as_deref(),
            Some("parameter_unsupported")
        );
        assert_eq!(code(confirm, "payment_method=pm_card_visa", &held), None);
        let capture = "/v1/payment_intents/pi_1/capture";
        assert_eq!(code(capture, "amount_to_capture=500", &held), None);
        assert_eq!(
            code(capture, "transfer_data[amount]=400", &held).as_deref(),
            Some("parameter_unsupported")
        );
        let refund = "/v1/refunds";
        assert_eq!(
            code(
                refund,
                "payment_intent=pi_1&amount=5&reason=duplicate&metadata[a]=b",
                &held
            ),
            None
        );
        assert_eq!(
            code(refund, "payment_intent=pi_1&reverse_transfer=true", &held).as_deref(),
            Some("parameter_unsupported")
        );
        // Values that ask for nothing are not refused; an external 3-D Secure result is.
        let defaults = "payment_method=pm_card_visa&off_session=false&setup_future_usage=\
                        &payment_method_options[card][request_three_d_secure]=automatic\
                        &payment_method_options[card][three_d_secure][authenticated]=true";
        assert_eq!(code(confirm, defaults, &held), None);
        assert_eq!(
            code(
                confirm,
                "payment_method_options[card][three_d_secure][cryptogram]=AAAB",
                &held
            )
            .as_deref(),
            Some("parameter_unsupported")
        );
        // Unknown parameters: a provider of the storefront's dialect refuses them itself,
        // payproxy's translation would drop them.
        assert_eq!(code(confirm, "foo=bar", &[]), None);
        assert_eq!(
            code(confirm, "foo=bar", &held).as_deref(),
            Some("parameter_unknown")
        );
        let create = "/v1/payment_intents";
        let paid = "amount=5&currency=eur&confirm=true&payment_method=pm_card_visa";
        assert_eq!(code(create, &format!("{paid}&foo=bar"), &[]), None);
        assert_eq!(
            code(create, &format!("{paid}&foo=bar"), &held).as_deref(),
            Some("parameter_unknown")
        );
        // An update is checked only where payproxy applies it: marked.
        let update = "/v1/payment_intents/pi_1";
        for body in [
            "capture_method=automatic",
            "currency=usd",
            "return_url=https://s.example",
            // Clearing a whole field: payproxy's update would keep it.
            "metadata=",
            "description=",
        ] {
            assert_eq!(code(update, body, &[]), None, "{body}");
            assert!(code(update, body, &held).is_some(), "{body}");
        }
        assert_eq!(
            code(update, "metadata[note]=&description=boxed", &held),
            None
        );
        assert_eq!(
            code(update, "capture_method=manual&amount=5&currency=usd", &held),
            None
        );
        let cancel = "/v1/payment_intents/pi_1/cancel";
        let connected = [(HELD_HEADER, "true"), ("stripe-account", "acct_1")];
        assert_eq!(code(cancel, "", &held), None);
        assert_eq!(
            code(cancel, "", &connected).as_deref(),
            Some("header_unsupported")
        );
        assert_eq!(code(cancel, "", &[("stripe-account", "acct_1")]), None);
    }

    #[test]
    fn bracketed_names() {
        assert_eq!(bracketed(&["a", "b", ""]), "a[b][]");
        assert_eq!(bracketed(&["amount"]), "amount");
    }
}
