//! The storefront's whole API through a payment route: calls the Stripe dialect does not
//! orchestrate go unchanged to the home provider, with the provider's own credentials, and
//! payproxy's payment records answer Stripe's two-step flow, state errors and lists. The
//! official SDK against third-party fakes covers the same ground in `tests/stripe_sdk`; these
//! tests look at the bytes on the wire that the SDK suite cannot see.

use http::Method;
use payproxy_e2e::*;
use serde_json::Value;

async fn simulator() -> Simulator {
    Simulator::start(PAYMENT_PROVIDERS).await.unwrap()
}

/// The demo config with its home provider, `stripe-like` answered by `recorder`.
async fn with_recorded_home(sim: &Simulator, recorder: &Recorder) -> Env {
    let mut config = payments_config(sim);
    config["routes"][0]["home"] = "stripe-like".into();
    config["providers"]["stripe-like"]["url"] = recorder.url().into();
    Env::start(config).await
}

/// A Stripe provider that answers every request with the succeeded 2000 EUR intent `id`.
async fn succeeded_intent(id: &str) -> Recorder {
    let intent = format!(
        r#"{{"id":"{id}","object":"payment_intent","amount":2000,"currency":"eur","status":"succeeded"}}"#
    );
    Recorder::start(200, "application/json", intent).await
}

const CUSTOMER: &str = r#"{"id":"cus_rec_1","object":"customer","email":"jan@example.nl"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_payproxy_does_not_orchestrate_reach_home_unchanged_with_its_own_key() {
    let sim = simulator().await;
    let recorder = Recorder::start(200, "application/json", CUSTOMER).await;
    let env = with_recorded_home(&sim, &recorder).await;
    let client = HttpClient::default();

    let body = "email=jan%40example.nl&metadata[crm]=42";
    let reply = client
        .post_form(
            &env.url("/v1/customers?expand[]=sources"),
            &[
                ("authorization", "Bearer sk_live_storefront_secret"),
                ("cookie", "session=storefront-cookie"),
                ("idempotency-key", "cust-1"),
                ("stripe-version", "2024-06-20"),
            ],
            body,
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.body.as_ref(), CUSTOMER.as_bytes(), "answer unchanged");
    assert_eq!(reply.provider(), Some("stripe-like"));

    let unknown = client
        .send(
            Method::GET,
            &env.url("/v1/balance"),
            &[("authorization", "Bearer sk_live_storefront_secret")],
            "",
        )
        .await;
    unknown.assert_status(200);

    let seen = recorder.requests();
    assert_eq!(seen.len(), 2, "both calls reached the home provider");
    let create = &seen[0];
    assert_eq!(create.method, "POST");
    assert_eq!(
        create.path, "/v1/customers?expand[]=sources",
        "query unchanged"
    );
    assert_eq!(create.body.as_ref(), body.as_bytes(), "body unchanged");
    assert_eq!(create.header("idempotency-key"), Some("cust-1"));
    assert_eq!(create.header("stripe-version"), Some("2024-06-20"));
    for request in &seen {
        // The demo's stripe-like provider is configured with api_key sk_test_demo.
        assert_eq!(request.header("authorization"), Some("Bearer sk_test_demo"));
        assert_eq!(
            request.header("cookie"),
            None,
            "storefront cookie forwarded"
        );
        let all = format!("{:?}", request.headers);
        assert!(
            !all.contains("storefront"),
            "a storefront credential reached the provider: {all}"
        );
    }
    assert_eq!(seen[1].path, "/v1/balance");
    // Nothing reached any other provider.
    for name in PAYMENT_PROVIDERS {
        assert_eq!(sim.request_count(name), 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_forwarded_to_its_own_dialect_carries_the_providers_key_not_the_storefronts() {
    let sim = simulator().await;
    let recorder = Recorder::start(
        200,
        "application/json",
        r#"{"id":"pi_rec_9","object":"payment_intent","amount":2500,"currency":"eur","status":"succeeded"}"#,
    )
    .await;
    let env = with_recorded_home(&sim, &recorder).await;
    let client = HttpClient::default();
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[
                ("authorization", "Bearer sk_live_storefront_secret"),
                ("cookie", "session=storefront-cookie"),
            ],
            "amount=2500&currency=eur&payment_method=pm_card_de&confirm=true",
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["id"], "pi_rec_9");
    let seen = recorder.requests();
    // The card lookup (GET /v1/payment_methods/pm_card_de) and the payment itself.
    let payment = seen
        .iter()
        .find(|r| r.path == "/v1/payment_intents")
        .expect("the payment reached the home provider");
    for request in &seen {
        assert_eq!(request.header("authorization"), Some("Bearer sk_test_demo"));
        assert_eq!(request.header("cookie"), None);
    }
    assert_eq!(
        payment.body.as_ref(),
        b"amount=2500&currency=eur&payment_method=pm_card_de&confirm=true"
    );

    // A second confirm of that payment goes to the provider that has it, unchanged: it
    // judges (a real Stripe refuses or replays), and no other provider is ever asked.
    let before = recorder.requests().len();
    let again = client
        .post_form(&env.url("/v1/payment_intents/pi_rec_9/confirm"), &[], "")
        .await;
    again.assert_status(200);
    let seen = recorder.requests();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen[before].path, "/v1/payment_intents/pi_rec_9/confirm");
    for name in PAYMENT_PROVIDERS.iter().filter(|n| **n != "stripe-like") {
        assert_eq!(
            sim.request_count(name),
            0,
            "{name} was asked to charge again"
        );
    }

    // payproxy keeps the payment: it lists under the provider's id.
    let list = client.get(&env.url("/v1/payment_intents?limit=3")).await;
    list.assert_status(200);
    let list = list.json();
    assert_eq!(list["object"], "list");
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, [&Value::from("pi_rec_9")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_without_confirm_reaches_no_provider_and_its_confirm_charges_once() {
    let sim = simulator().await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();
    // A local method (iDEAL), created first, confirmed later with an empty body.
    let created = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            "amount=2500&currency=eur&payment_method_data[type]=ideal&payment_method_data[ideal][bank]=ing\
             &payment_method_data[billing_details][address][country]=NL\
             &return_url=https%3A%2F%2Fshop.example%2Freturn&metadata[order_id]=NL-TWO-STEP",
        )
        .await;
    created.assert_status(200);
    let intent = created.json();
    assert_eq!(intent["status"], "requires_confirmation", "{intent}");
    for name in PAYMENT_PROVIDERS {
        assert_eq!(
            sim.request_count(name),
            0,
            "{name} was contacted by a create"
        );
    }
    let id = intent["id"].as_str().unwrap().to_string();

    // Confirm with an empty body: the payment as created is charged.
    let confirm_url = env.url(&format!("/v1/payment_intents/{id}/confirm"));
    let confirmed = client
        .post_form(&confirm_url, &[("idempotency-key", "confirm-1")], "")
        .await;
    confirmed.assert_status(200);
    let confirmed = confirmed.json();
    assert_eq!(confirmed["id"], id.as_str());
    assert_eq!(confirmed["status"], "requires_action", "{confirmed}");
    let charged: u64 = PAYMENT_PROVIDERS.iter().map(|n| sim.request_count(n)).sum();
    assert_eq!(charged, 1, "one provider request for the confirm");

    // A second confirm of a payment that is no longer awaiting one: Stripe's state error.
    let again = client.post_form(&confirm_url, &[], "").await;
    again.assert_status(400);
    assert_eq!(
        again.json()["error"]["code"],
        "payment_intent_unexpected_state",
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let charged_after: u64 = PAYMENT_PROVIDERS.iter().map(|n| sim.request_count(n)).sum();
    assert_eq!(charged_after, 1, "a refused confirm contacts no provider");

    // The payment is listed with the state payproxy recorded.
    let list = client
        .get(&env.url("/v1/payment_intents?limit=1"))
        .await
        .json();
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["status"], "requires_action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_sees_the_cards_3ds_support_from_the_home_provider() {
    let sim = simulator().await;
    let mut config = payments_config(&sim);
    config["routes"][0]["home"] = "stripe-like".into();
    let env = Env::start(config).await;
    let client = HttpClient::default();
    // €250 from a German card without strong authentication: PSD2 SCA applies. The request
    // carries nothing but Stripe's own parameters; the simulator's payment method says
    // whether the card supports 3-D Secure.
    let pay = |token: &'static str| {
        let client = client.clone();
        let url = env.url("/v1/payment_intents");
        async move {
            client
                .post_form(
                    &url,
                    &[],
                    &format!(
                        "amount=25000&currency=eur&confirm=true&payment_method={token}\
                         &payment_method_data[billing_details][address][country]=DE"
                    ),
                )
                .await
        }
    };
    let challenged = pay("pm_card_de").await;
    assert_eq!(challenged.status, 402);
    assert_eq!(
        challenged.json()["error"]["code"],
        "authentication_required"
    );
    let refused = pay("pm_card_de_no3ds").await;
    assert_eq!(refused.status, 402);
    assert_eq!(
        refused.json()["error"]["code"],
        "authentication_unavailable"
    );
    // Only the two card lookups reached the home provider; no payment was sent anywhere.
    assert_eq!(sim.request_count("stripe-like"), 2);
    assert!(sim.ledger("stripe-like").is_empty());
    // The issuing country came from the lookup too: a card issued outside the EEA is out of
    // PSD2's scope, so the same payment goes through.
    let us = pay("pm_card_us").await;
    us.assert_status(200);
    assert_eq!(us.provider(), Some("stripe-like"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_confirms_racing_on_one_payment_charge_it_once() {
    let sim = simulator().await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();
    let created = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            "amount=4200&currency=sgd&payment_method_data[type]=grabpay\
             &payment_method_data[billing_details][address][country]=SG&metadata[order_id]=SG-RACE",
        )
        .await;
    created.assert_status(200);
    let id = created.json()["id"].as_str().unwrap().to_string();
    // The provider takes 800 ms: the second confirm arrives while the first is in flight.
    sim.set_faults("grabpay", Faults::latency(800));
    let url = env.url(&format!("/v1/payment_intents/{id}/confirm"));
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.post_form(&url, &[], "").await }
    });
    // The first holds the payment as soon as the provider has it.
    let t0 = std::time::Instant::now();
    while sim.request_count("grabpay") == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "first confirm never sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = client.post_form(&url, &[], "").await;
    assert_eq!(
        second.status,
        409,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(second.json()["error"]["code"], "lock_timeout");
    let first = first.await.unwrap();
    first.assert_status(200);
    assert_eq!(first.json()["status"], "succeeded");
    assert_eq!(sim.ledger("grabpay").len(), 1, "charged once");
    assert_eq!(sim.request_count("grabpay"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_carrying_more_than_payproxy_translates_goes_only_where_it_is_sent_unchanged() {
    let sim = simulator().await;
    let recorder = succeeded_intent("pi_rec_11").await;
    // The card rule tries Adyen (another dialect) first, then the Stripe provider: in the
    // order configured, not the cheaper first.
    let mut config = payments_config(&sim);
    config["plugins"]["regional-router"]["config"]
        .as_object_mut()
        .unwrap()
        .remove("prefer_cheaper_within");
    config["providers"]["stripe-like"]["url"] = recorder.url().into();
    let env = Env::start(config).await;
    let client = HttpClient::default();
    let url = env.url("/v1/payment_intents");

    // A plain card payment goes where the router says: Adyen.
    let plain = client
        .post_form(&url, &[], &form_with(eea_card("2000", "DE-PLAIN"), &[]))
        .await;
    plain.assert_status(200);
    assert_eq!(sim.request_count("adyen"), 1);
    assert!(recorder.requests().is_empty());

    // Saving the card for later (and a Connect account) have no place in an Adyen request:
    // the payment goes, unchanged, to the provider of the storefront's own dialect.
    let body = form_with(
        eea_card("2000", "DE-SAVE"),
        &[("setup_future_usage", "off_session")],
    );
    // (payproxy's own mark for its dialects, sent by a storefront, goes no further.)
    let headers = [
        ("stripe-account", "acct_1Connected"),
        ("payproxy-held-payment", "true"),
    ];
    let saved = client.post_form(&url, &headers, &body).await;
    saved.assert_status(200);
    assert_eq!(saved.json()["id"], "pi_rec_11");
    assert_eq!(sim.request_count("adyen"), 1, "Adyen was not asked");
    let seen = recorder.requests();
    let payment = seen
        .iter()
        .find(|r| r.path == "/v1/payment_intents")
        .expect("the payment reached the Stripe provider");
    assert_eq!(
        payment.body.as_ref(),
        body.as_bytes(),
        "sent as the storefront sent it"
    );
    assert_eq!(payment.header("stripe-account"), Some("acct_1Connected"));
    assert_eq!(payment.header("payproxy-held-payment"), None);

    // A method only providers of other dialects take is refused, and nothing is sent.
    let ideal = form(&[
        ("amount", "2500"),
        ("currency", "eur"),
        ("confirm", "true"),
        ("payment_method_data[type]", "ideal"),
        ("payment_method_data[ideal][bank]", "ing"),
        (
            "payment_method_data[billing_details][address][country]",
            "NL",
        ),
        ("return_url", "https://shop.example/return"),
        ("statement_descriptor_suffix", "ORDER 9"),
    ]);
    let refused = client.post_form(&url, &[], &ideal).await;
    refused.assert_status(400);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "parameter_unsupported", "{error}");
    assert_eq!(error["param"], "statement_descriptor_suffix", "{error}");
    let sent: u64 = PAYMENT_PROVIDERS.iter().map(|n| sim.request_count(n)).sum();
    assert_eq!(
        sent, 1,
        "only the plain payment reached a simulated provider"
    );
    assert_eq!(recorder.requests().len(), seen.len());
}

/// An update of a payment a Stripe provider owns under its own id goes there unchanged; the
/// metadata of one it applied reaches payproxy's record (the list is rendered from it), and
/// one it answers as a replay of an earlier request (`Idempotent-Replayed: true`: a retry
/// that changed nothing this time) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_its_owner_applied_reaches_the_record_and_a_replayed_one_does_not() {
    let sim = simulator().await;
    let recorder = succeeded_intent("pi_rec_31").await;
    let mut config = payments_config(&sim);
    config["providers"]["stripe-like"]["url"] = recorder.url().into();
    let env = Env::start(config).await;
    let client = HttpClient::default();
    // Saving the card has no place in a translated request: the payment goes unchanged to
    // the Stripe provider, which owns it under its own id.
    let body = form_with(
        eea_card("2000", "ORDER-31"),
        &[("setup_future_usage", "off_session")],
    );
    let paid = client
        .post_form(&env.url("/v1/payment_intents"), &[], &body)
        .await;
    paid.assert_status(200);
    assert_eq!(paid.json()["id"], "pi_rec_31");
    let listed_metadata = || async {
        let page = client.get(&env.url("/v1/payment_intents")).await;
        page.assert_status(200);
        let page = page.json();
        let entry = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "pi_rec_31")
            .cloned()
            .unwrap_or_else(|| panic!("pi_rec_31 not listed: {page}"));
        entry["metadata"].clone()
    };
    assert_eq!(listed_metadata().await["order_id"], "ORDER-31");

    let update = env.url("/v1/payment_intents/pi_rec_31");
    let shipped = client
        .post_form(&update, &[], "metadata[shipped]=yes&metadata[order_id]=")
        .await;
    shipped.assert_status(200);
    let forwarded = recorder.requests();
    let last = forwarded.last().unwrap();
    assert_eq!(
        last.path, "/v1/payment_intents/pi_rec_31",
        "relayed to its owner"
    );
    assert_eq!(
        last.body.as_ref(),
        b"metadata[shipped]=yes&metadata[order_id]=",
        "unchanged"
    );
    let metadata = listed_metadata().await;
    assert_eq!(metadata["shipped"], "yes", "{metadata}");
    assert!(
        metadata.get("order_id").is_none(),
        "an empty value removes the key: {metadata}"
    );

    // A retry the provider answers as a replay changed nothing there: nor here.
    recorder.mark_replays(true);
    let replayed = client.post_form(&update, &[], "metadata[shipped]=no").await;
    replayed.assert_status(200);
    assert_eq!(listed_metadata().await["shipped"], "yes");
    recorder.mark_replays(false);
    let again = client.post_form(&update, &[], "metadata[shipped]=no").await;
    again.assert_status(200);
    assert_eq!(listed_metadata().await["shipped"], "no");
}
