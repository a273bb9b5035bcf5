//! `GET /v1/payment_methods/{id}`: test card payment methods, as Stripe's test mode has them
//! (`pm_card_visa`, `pm_card_mastercard`), plus `pm_card_<cc>` for a Visa credit card issued
//! in country `<cc>` (e.g. `pm_card_de`, `pm_card_br`), with optional suffixes `_debit`,
//! `_prepaid` (funding) and `_no3ds` (no 3-D Secure), e.g. `pm_card_de_debit_no3ds`, so demos
//! and tests can route and apply SCA rules with nothing but a token in the request.

use serde_json::{json, Value};

use crate::respond::StripeError;

/// The payment method object for a test id; 404 `resource_missing` for anything else.
pub(super) fn retrieve(id: &str) -> Result<Value, StripeError> {
    let missing = || StripeError::not_found("payment_method", "payment_method", id);
    let (brand, country, last4, funding, three_ds) = match id {
        "pm_card_visa" => ("visa", "US".to_owned(), "4242", "credit", true),
        "pm_card_mastercard" => ("mastercard", "US".to_owned(), "4444", "credit", true),
        _ => {
            let rest = id.strip_prefix("pm_card_").ok_or_else(missing)?;
            let mut parts = rest.split('_');
            let cc = parts.next().unwrap_or_default();
            if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(missing());
            }
            let (mut funding, mut three_ds) = ("credit", true);
            for part in parts {
                match part {
                    "debit" => funding = "debit",
                    "prepaid" => funding = "prepaid",
                    "no3ds" => three_ds = false,
                    _ => return Err(missing()),
                }
            }
            ("visa", cc.to_ascii_uppercase(), "4242", funding, three_ds)
        }
    };
    Ok(json!({
        "id": id,
        "object": "payment_method",
        "type": "card",
        "card": {
            "brand": brand,
            "country": country,
            "funding": funding,
            "last4": last4,
            "exp_month": 12,
            "exp_year": 2034,
            "three_d_secure_usage": { "supported": three_ds },
        },
        "livemode": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids() {
        let v = retrieve("pm_card_br").unwrap();
        assert_eq!(v["card"]["country"], "BR");
        assert_eq!(retrieve("pm_card_visa").unwrap()["card"]["country"], "US");
        assert!(retrieve("pm_card_zz9").is_err());
        let v = retrieve("pm_card_de_debit_no3ds").unwrap();
        assert_eq!(v["card"]["funding"], "debit");
        assert_eq!(v["card"]["three_d_secure_usage"]["supported"], false);
        assert!(retrieve("pm_card_de_gold").is_err());
        assert!(retrieve("pm_123").is_err());
    }
}
