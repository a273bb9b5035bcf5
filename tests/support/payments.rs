//! The payments demo config (`examples/config/payments.json`) pointed at an in-process
//! simulator, so the end-to-end tests exercise the very rules the demo runs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::Simulator;

/// The providers of the payments demo; a simulator for [`payments_config`] serves these names.
pub const PAYMENT_PROVIDERS: &[&str] = &["stripe-like", "adyen", "grabpay", "dana", "ideal", "pix"];

/// `examples/config` of this repository.
pub fn example_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config")
}

/// A JSON file under `examples/config`, e.g. `rules/router.json`.
pub fn example_json(relative: &str) -> Value {
    let path = example_config_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `examples/config/payments.json` with: listeners and admin on port 0, no file watching,
/// every provider's URL pointing at the simulated provider of the same name, plugin paths
/// absolute (checked to exist) and each plugin's `config_file` inlined as `config`.
pub fn payments_config(sim: &Simulator) -> Value {
    let dir = example_config_dir();
    let mut config = example_json("payments.json");
    config["listeners"] = json!([{ "addr": "127.0.0.1:0" }]);
    config["admin"] = json!({ "addr": "127.0.0.1:0" });
    config["reload"] = json!({ "watch": false });
    for (name, plugin) in config["plugins"].as_object_mut().unwrap() {
        let path = dir.join(plugin["path"].as_str().unwrap());
        assert!(
            path.exists(),
            "plugin {name}: {} is missing: run scripts/build-plugins.sh",
            path.display()
        );
        plugin["path"] = path.to_string_lossy().into_owned().into();
        if let Some(file) = plugin
            .as_object_mut()
            .unwrap()
            .remove("config_file")
            .and_then(|f| f.as_str().map(str::to_string))
        {
            plugin["config"] = example_json(&file);
        }
    }
    for (name, provider) in config["providers"].as_object_mut().unwrap() {
        provider["url"] = sim.base_url(name).into();
    }
    // The demo scopes card tokens to its home Stripe account. These tests move card payments
    // between two acquirers to exercise failover, so their cards are unscoped tokens (like
    // network tokens, which any acquirer can charge): no home, and both card acquirers.
    let route = config["routes"][0].as_object_mut().unwrap();
    route.remove("home");
    // Storefront keys have their own tests (tests/hardening.rs); these send none.
    route.remove("storefront_keys");
    route.insert("allow_unauthenticated".into(), true.into());
    let rules = config["plugins"]["regional-router"]["config"]["rules"]
        .as_array_mut()
        .unwrap();
    let cards = rules.iter_mut().find(|r| r["name"] == "cards").unwrap();
    cards["providers"] = json!([{ "name": "adyen" }, { "name": "stripe-like" }]);
    config
}

// Storefront requests in Stripe's form convention (see plugins/dialect-stripe/src/lib.rs).
// Every payment is created with `confirm=true`: without it Stripe (and payproxy) only
// create the intent and charge nothing.

/// A Stripe form body with Stripe's bracketed keys left readable and everything else escaped.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'['
                | b']' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// An EEA card payment (issuer and shopper in DE) worth `amount` euro cents.
pub fn eea_card(amount: &str, order: &str) -> Vec<(&'static str, String)> {
    card_from("DE", amount, order)
}

/// A card payment in euros, card issued in and shopper from `country`.
pub fn card_from(country: &str, amount: &str, order: &str) -> Vec<(&'static str, String)> {
    vec![
        ("amount", amount.into()),
        ("currency", "eur".into()),
        ("confirm", "true".into()),
        ("payment_method_data[type]", "card".into()),
        ("payment_method_data[card][token]", "tok_visa".into()),
        ("payment_method_data[card][bin]", "424242".into()),
        ("payment_method_data[card][last4]", "4242".into()),
        ("payment_method_data[card][network]", "visa".into()),
        ("payment_method_data[card][country]", country.into()),
        (
            "payment_method_data[billing_details][address][country]",
            country.into(),
        ),
        ("metadata[order_id]", order.into()),
    ]
}

/// `pairs` plus `extra`, as a form body.
pub fn form_with(mut pairs: Vec<(&'static str, String)>, extra: &[(&'static str, &str)]) -> String {
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    form(&borrowed)
}

/// An Indonesian DANA wallet payment with a verified phone.
pub fn dana_shopper(amount: &str, order: &str) -> String {
    form(&[
        ("amount", amount),
        ("currency", "idr"),
        ("confirm", "true"),
        ("payment_method_data[type]", "dana"),
        (
            "payment_method_data[billing_details][phone]",
            "+6281234567890",
        ),
        (
            "payment_method_data[billing_details][phone_verified]",
            "true",
        ),
        (
            "payment_method_data[billing_details][address][country]",
            "ID",
        ),
        ("metadata[order_id]", order),
    ])
}

/// A Dutch iDEAL payment of €25.00 from the account `iban`.
pub fn ideal_shopper(iban: &str, order: &str) -> String {
    form(&[
        ("amount", "2500"),
        ("currency", "eur"),
        ("confirm", "true"),
        ("payment_method_data[type]", "ideal"),
        ("payment_method_data[ideal][bank]", "ing"),
        ("payment_method_data[ideal][iban]", iban),
        (
            "payment_method_data[billing_details][address][country]",
            "NL",
        ),
        ("return_url", "https://shop.example/return"),
        ("metadata[order_id]", order),
    ])
}

/// A Brazilian Pix payment of R$50.00 by the payer with CPF `cpf`.
pub fn pix_shopper(cpf: &str, order: &str) -> String {
    form(&[
        ("amount", "5000"),
        ("currency", "brl"),
        ("confirm", "true"),
        ("payment_method_data[type]", "pix"),
        ("payment_method_data[pix][tax_id]", cpf),
        (
            "payment_method_data[billing_details][address][country]",
            "BR",
        ),
        ("receipt_email", "joao@example.com.br"),
        ("metadata[order_id]", order),
    ])
}

/// A Singaporean GrabPay payment of S$42.00.
pub fn grabpay_shopper(order: &str) -> String {
    form(&[
        ("amount", "4200"),
        ("currency", "sgd"),
        ("confirm", "true"),
        ("payment_method_data[type]", "grabpay"),
        (
            "payment_method_data[billing_details][address][country]",
            "SG",
        ),
        ("metadata[order_id]", order),
    ])
}
