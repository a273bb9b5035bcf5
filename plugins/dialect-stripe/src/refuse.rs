//! The refusals the Stripe dialect makes itself, with Stripe's error codes where Stripe has
//! one. Messages name parameters, never echo a value that could be a card number or a phone.

use payproxy_plugin_sdk::payment::{Refusal, RefusalKind};

/// `parameter_missing`: a required parameter is absent or empty.
pub fn missing(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "parameter_missing",
        format!("Missing required param: {param}."),
    )
}

/// `parameter_invalid_integer`: not an integer (amounts are integers in minor units).
pub fn not_integer(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "parameter_invalid_integer",
        format!("Invalid integer for {param}: amounts are integers in the currency's smallest unit (10.50 EUR is 1050)."),
    )
}

/// `parameter_invalid_boolean`: not `true` or `false`.
pub fn not_boolean(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "parameter_invalid_boolean",
        format!("Invalid boolean for {param}: use true or false."),
    )
}

/// `parameter_invalid_value`: a value outside the parameter's set or shape.
pub fn bad_value(param: &str, expected: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "parameter_invalid_value",
        format!("Invalid {param}: {expected}."),
    )
}

/// `amount_too_small`: zero or negative.
pub fn too_small(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "amount_too_small",
        format!("{param} must be at least 1."),
    )
}

/// `invalid_currency`: not an ISO 4217 currency. The value is echoed only when it is short
/// and alphanumeric.
pub fn currency(param: &str, raw: &str) -> Refusal {
    let shown =
        if !raw.is_empty() && raw.len() <= 8 && raw.bytes().all(|b| b.is_ascii_alphanumeric()) {
            format!("Invalid currency: {raw}. ")
        } else {
            "Invalid currency. ".to_string()
        };
    Refusal::invalid(
        Some(param),
        "invalid_currency",
        format!("{shown}Use a three-letter ISO 4217 code such as eur."),
    )
}

/// `invalid_country`: not an ISO 3166-1 alpha-2 code.
pub fn country(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "invalid_country",
        format!("Invalid {param}: use a two-letter ISO 3166-1 country code such as NL."),
    )
}

/// `card_number_not_accepted`: raw card data in a request.
pub fn card_number(param: &str) -> Refusal {
    Refusal::invalid(
        Some(param),
        "card_number_not_accepted",
        format!(
            "Raw card data is not accepted ({param}): tokenize the card first and send the token as \
             payment_method_data[card][token] or payment_method."
        ),
    )
}

/// `resource_missing`: the object named in the path or `param` does not exist.
pub fn no_such(object: &str, param: &str, id: &str) -> Refusal {
    let id = if crate::validate::object_id(id) {
        id
    } else {
        "(invalid id)"
    };
    Refusal {
        kind: RefusalKind::NotFound,
        status: 404,
        code: "resource_missing".into(),
        message: format!("No such {object}: '{id}' ({param})"),
    }
}

/// An URL this API does not serve.
pub fn unrecognized(method: &str) -> Refusal {
    let method = if method.bytes().all(|b| b.is_ascii_uppercase()) {
        method
    } else {
        "?"
    };
    Refusal {
        kind: RefusalKind::InvalidRequest(None),
        status: 404,
        code: "unrecognized_request_url".into(),
        message: format!(
            "Unrecognized request URL ({method}). payproxy's Stripe API serves /v1/payment_intents \
             (create, retrieve, confirm, capture, cancel) and /v1/refunds (create)."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_not_echoed_unless_harmless() {
        assert!(currency("currency", "xyz").message.contains("xyz"));
        assert!(!currency("currency", "4242424242424242")
            .message
            .contains("4242"));
        assert!(!no_such("payment_intent", "id", "pi_1\"}")
            .message
            .contains('"'));
        assert_eq!(
            no_such("payment_intent", "id", "pi_1").kind,
            RefusalKind::NotFound
        );
    }
}
