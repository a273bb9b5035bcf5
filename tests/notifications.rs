//! Provider notifications in (issue 10 points 1, 2 and 5): each provider's dialect verifies
//! its provider's signed notification at `POST /webhooks/{provider}`; payproxy moves the
//! payment forward once per notification, holds one that arrives before its payment is
//! known, voids a charge from a provider that had answered "not processed", and tells the
//! storefront with a signed Stripe event. The simulator signs notifications like the real
//! providers; the storefront's events are checked with the test's own HMAC here and with the
//! official Stripe SDK in `tests/stripe_sdk`.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use payproxy_e2e::chaos::{eventually, metric};
use payproxy_e2e::receiver::{types_for, with_webhooks, Receiver};
use payproxy_e2e::*;
use provider_sim::SentWebhook;
use serde_json::Value;

const SECRET: &str = "whsec_test_notifications";
/// Adyen's HMAC key (hex), as the Customer Area shows it.
const ADYEN_HMAC: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
/// The shared secret of the other simulated providers' notifications.
const PROVIDER_SECRET: &str = "sim-webhook-secret";

/// The payments demo with webhooks to `receiver`, each provider given its notification
/// credential, and every simulated provider notifying this payproxy.
async fn start(sim: &Simulator, receiver: &Receiver) -> Env {
    start_with(sim, receiver, |_| {}).await
}

/// [`start`], with the config changed by `change` first.
async fn start_with(sim: &Simulator, receiver: &Receiver, change: impl FnOnce(&mut Value)) -> Env {
    let mut config = with_webhooks(payments_config(sim), &receiver.url(), SECRET.into());
    change(&mut config);
    for (name, provider) in config["providers"].as_object_mut().unwrap() {
        let credentials = provider["credentials"].as_object_mut().unwrap();
        match name.as_str() {
            "adyen" => credentials.insert("hmac_key".into(), ADYEN_HMAC.into()),
            // GrabPay signs with its partner secret (already there).
            "grabpay" => None,
            _ => credentials.insert("webhook_secret".into(), PROVIDER_SECRET.into()),
        };
    }
    let env = Env::start(config).await;
    for name in PAYMENT_PROVIDERS {
        let secret = match *name {
            "adyen" => ADYEN_HMAC.to_string(),
            "grabpay" => "sim-secret-grabpay".to_string(),
            _ => PROVIDER_SECRET.to_string(),
        };
        sim.set_webhooks(name, Some(&env.url(&format!("/webhooks/{name}"))), &secret);
    }
    env
}

async fn metrics_of(client: &HttpClient, env: &Env) -> String {
    String::from_utf8_lossy(&client.get(&env.admin_url("/metrics")).await.body).into_owned()
}

/// Until `n` of `provider`'s notifications were applied or found stale (a held one counts
/// when it is applied, a moment after it was held).
async fn settled(client: &HttpClient, env: &Env, provider: &str, n: f64) {
    eventually(
        Duration::from_secs(20),
        &format!("{n} {provider} notification(s) applied or found stale"),
        || async {
            notices(client, env, provider, "applied").await
                + notices(client, env, provider, "stale").await
                >= n
        },
    )
    .await
}

/// The `amount_refunded` of each `charge.refunded` the merchant got for `pi`, in order, once
/// there are `n`.
async fn refunded_totals(receiver: &Receiver, pi: &str, n: usize) -> Vec<i64> {
    let totals = |a: &[payproxy_e2e::receiver::Delivery]| -> Vec<i64> {
        a.iter()
            .filter(|d| {
                payproxy_e2e::receiver::payment_of(d) == pi
                    && d.id_and_type().1 == "charge.refunded"
            })
            .map(|d| {
                payproxy_e2e::receiver::object(d)["amount_refunded"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    let what = format!("{n} charge.refunded of {pi}");
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), &what, |a| totals(a).len() >= n)
        .await;
    totals(&accepted)
}

/// `payproxy_webhook_notifications_total{provider, result}`.
async fn notices(client: &HttpClient, env: &Env, provider: &str, result: &str) -> f64 {
    let labels = [("provider", provider), ("result", result)];
    counter(client, env, "payproxy_webhook_notifications_total", &labels).await
}

/// `payproxy_webhooks_received_total{provider, result}`.
async fn received(client: &HttpClient, env: &Env, provider: &str, result: &str) -> f64 {
    let labels = [("provider", provider), ("result", result)];
    counter(client, env, "payproxy_webhooks_received_total", &labels).await
}

async fn counter(client: &HttpClient, env: &Env, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&metrics_of(client, env).await, name, labels).unwrap_or(0.0)
}

/// The notifications `provider` sent that its receiver accepted.
async fn delivered(sim: &Simulator, provider: &str, at_least: usize) -> Vec<SentWebhook> {
    let mut sent = Vec::new();
    eventually(
        Duration::from_secs(20),
        &format!("{at_least} notification(s) from {provider} delivered"),
        || {
            sent = sim.webhooks_sent(provider);
            let n = sent.iter().filter(|s| s.delivered()).count();
            async move { n >= at_least }
        },
    )
    .await;
    sent.into_iter().filter(|s| s.delivered()).collect()
}

/// The shopper pays the Pix QR code of order `order` at the bank.
async fn pay_pix(client: &HttpClient, sim: &Simulator, order: &str) {
    let txid = sim
        .ledger("pix")
        .into_iter()
        .find(|c| c.merchant_reference.as_deref() == Some(order))
        .unwrap_or_else(|| panic!("no Pix charge for {order}"))
        .id;
    let paid = client
        .send(
            Method::POST,
            &format!("{}/pix/v2/cob/{txid}/pay", sim.base_url("pix")),
            &[],
            Bytes::new(),
        )
        .await;
    assert!(paid.status.is_success(), "{:?}", paid.json());
}

/// POST a notification to payproxy as `provider` sent it (optionally altered).
async fn post_notice(
    client: &HttpClient,
    env: &Env,
    provider: &str,
    sent: &SentWebhook,
    body: Vec<u8>,
) -> Reply {
    let path = match &sent.query {
        Some(q) => format!("/webhooks/{provider}?{q}"),
        None => format!("/webhooks/{provider}"),
    };
    let headers: Vec<(&str, &str)> = sent
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    client
        .send(Method::POST, &env.url(&path), &headers, Bytes::from(body))
        .await
}

async fn intent(client: &HttpClient, env: &Env, id: &str) -> Value {
    client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await
        .json()
}

/// [`start`] with Adyen first for cards (the demo prefers the cheaper Stripe-like provider).
async fn start_adyen_first() -> (Simulator, Receiver, Env) {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start_with(&sim, &receiver, |config| {
        config["providers"]["adyen"]["cost"] = 1.0.into();
    })
    .await;
    (sim, receiver, env)
}

/// A Dutch card payment Adyen refuses (amounts ending in 02), answered 402; its id.
async fn refused_at_adyen(client: &HttpClient, env: &Env, key: &str, order: &str) -> String {
    let card = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", key)],
            &form_with(card_from("NL", "1002", order), &[]),
        )
        .await;
    assert_eq!(card.status.as_u16(), 402, "{:?}", card.json());
    assert_eq!(card.provider(), Some("adyen"));
    card.json()["error"]["payment_intent"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The config change that sends Dutch iDEAL payments to Adyen (a redirect there).
fn ideal_at_adyen(config: &mut Value) {
    let rules = config["plugins"]["regional-router"]["config"]["rules"]
        .as_array_mut()
        .unwrap();
    let ideal = rules.iter_mut().find(|r| r["name"] == "nl-ideal").unwrap();
    ideal["providers"] = serde_json::json!([{ "name": "adyen" }]);
}

/// `payproxy_late_charges_total{provider="adyen", result}`.
async fn adyen_late_charges(client: &HttpClient, env: &Env, result: &str) -> f64 {
    let labels = [("provider", "adyen"), ("result", result)];
    counter(client, env, "payproxy_late_charges_total", &labels).await
}

/// A late charge Adyen cannot undo now (it answers every cancel and refund 503) is counted
/// as failed once, held, and voided when Adyen is back, on the held notification's retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_charge_that_cannot_be_undone_now_is_tried_again() {
    let (sim, _receiver, env) = start_adyen_first().await;
    let client = HttpClient::default();
    // Adyen's notifications go nowhere for now (a closed loopback port): the test hands
    // the late charge's to payproxy itself, once Adyen refuses every undo.
    sim.set_webhooks("adyen", Some("http://127.0.0.1:9/closed"), ADYEN_HMAC);
    sim.set_faults("adyen", Faults::charge_then_unavailable(0));
    let paid = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "late-2")],
            &form_with(card_from("DE", "1000", "LATE-2"), &[]),
        )
        .await;
    paid.assert_status(200);
    assert_eq!(paid.json()["status"], "succeeded", "{}", paid.json());
    let adyen_charge = || {
        sim.ledger("adyen")
            .into_iter()
            .find(|c| c.merchant_reference.as_deref() == Some("LATE-2"))
            .expect("Adyen charged despite its 503")
    };
    let mut sent = Vec::new();
    eventually(
        Duration::from_secs(20),
        "Adyen's AUTHORISATION sent",
        || {
            sent = sim.webhooks_sent("adyen");
            let n = sent.len();
            async move { n >= 1 }
        },
    )
    .await;
    sim.set_faults("adyen", Faults::error(503));
    let late = &sent[0];
    post_notice(&client, &env, "adyen", late, late.body.clone())
        .await
        .assert_status(200);
    eventually(
        Duration::from_secs(20),
        "the failed undo counted",
        || async { adyen_late_charges(&client, &env, "failed").await == 1.0 },
    )
    .await;
    assert_eq!(
        adyen_charge().status,
        "succeeded",
        "not undone while Adyen refuses"
    );
    assert_eq!(notices(&client, &env, "adyen", "held").await, 1.0);

    // Adyen is back: the held notification's next try voids the charge.
    sim.set_faults("adyen", Faults::default());
    eventually(
        Duration::from_secs(20),
        "the late charge voided",
        || async { adyen_charge().status == "canceled" },
    )
    .await;
    eventually(Duration::from_secs(10), "counted as voided", || async {
        adyen_late_charges(&client, &env, "voided").await == 1.0
    })
    .await;
    assert_eq!(
        adyen_late_charges(&client, &env, "failed").await,
        1.0,
        "the failure counted once"
    );
    // Counted once the retry has written the record and let go of the payment, a moment
    // after the undo itself was counted.
    eventually(
        Duration::from_secs(10),
        "the notification counted",
        || async { notices(&client, &env, "adyen", "late_charge").await == 1.0 },
    )
    .await;
}

/// Refunds of a payment at a Stripe-dialect provider. Stripe's `charge.refunded` carries the
/// charge's cumulative `amount_refunded` and, since API version 2022-11-15, no `refunds` list:
/// the total before the refund is in `data.previous_attributes` (the simulator sends events
/// so). Two partial refunds through payproxy are each confirmed by their event, not counted
/// again; a refund made at the provider's dashboard counts once, by what it adds. The
/// merchant's `charge.refunded` events say 300, 500, then 600. (Read as the newest refund's
/// amount, the total counted the earlier refunds again: the second event took the record to
/// 1,000 refunded of 1,000.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_refund_events_count_each_refund_once() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start(&sim, &receiver).await;
    let client = HttpClient::default();
    // Its events come a moment after its answers, as Stripe's do: a refund's finds the
    // payment's lock free (one arriving meanwhile is held and applied a moment later).
    sim.set_faults(
        "stripe-like",
        Faults {
            notify_delay_ms: 200,
            ..Faults::default()
        },
    );
    let paid = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            &form_with(card_from("DE", "1000", "REF-1"), &[]),
        )
        .await;
    paid.assert_status(200);
    assert_eq!(paid.provider(), Some("stripe-like"));
    let pi = paid.json()["id"].as_str().unwrap().to_string();
    // One at a time: each event is applied under the payment's lock (a refund meanwhile
    // would be a 409 lock_timeout, as at Stripe). An event that came while the lock was
    // held is held and applied a moment later: counted then.
    settled(&client, &env, "stripe-like", 1.0).await;
    for (n, amount) in [(2.0, "300"), (3.0, "200")] {
        let refund = client
            .post_form(
                &env.url("/v1/refunds"),
                &[],
                &form(&[("payment_intent", pi.as_str()), ("amount", amount)]),
            )
            .await;
        refund.assert_status(200);
        // The refund's event, applied: it confirms the refund.
        settled(&client, &env, "stripe-like", n).await;
    }
    // The merchant refunds 100 more in the provider's dashboard.
    let direct = client
        .post_form(
            &format!("{}/v1/refunds", sim.base_url("stripe-like")),
            &[],
            &form(&[("payment_intent", pi.as_str()), ("amount", "100")]),
        )
        .await;
    direct.assert_status(200);
    assert_eq!(refunded_totals(&receiver, &pi, 3).await, [300, 500, 600]);
    assert_eq!(sim.refunds("stripe-like").len(), 3);
}

/// A refund Adyen accepts (`received`) and then refuses (`REFUND`, `success: false`): payproxy
/// counted it when Adyen accepted it, and counts it out when the refusal arrives, so the
/// merchant can refund the payment in full afterwards. (Before, the refusal changed nothing:
/// the record kept 400 refunded, and a refund of the whole 1,000 was refused by payproxy as
/// more than what was left.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_adyen_refuses_after_accepting_it_is_counted_out() {
    let (sim, receiver, env) = start_adyen_first().await;
    let client = HttpClient::default();
    let paid = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            &form_with(card_from("DE", "1000", "REFUSED-1"), &[]),
        )
        .await;
    paid.assert_status(200);
    assert_eq!(paid.provider(), Some("adyen"));
    let pi = paid.json()["id"].as_str().unwrap().to_string();
    settled(&client, &env, "adyen", 1.0).await;

    sim.set_faults(
        "adyen",
        Faults {
            refunds_refused: true,
            ..Faults::default()
        },
    );
    let refund = |amount: &'static str| {
        let (client, env, pi) = (&client, &env, pi.clone());
        async move {
            client
                .post_form(
                    &env.url("/v1/refunds"),
                    &[],
                    &form(&[("payment_intent", pi.as_str()), ("amount", amount)]),
                )
                .await
        }
    };
    refund("400").await.assert_status(200);
    // Adyen's REFUND with success false: applied, the 400 counted out.
    settled(&client, &env, "adyen", 2.0).await;
    assert!(sim.refunds("adyen").is_empty(), "Adyen refunded nothing");

    sim.set_faults("adyen", Faults::default());
    let whole = refund("1000").await;
    whole.assert_status(200);
    assert_eq!(whole.json()["amount"], 1000, "{}", whole.json());
    let refunds = sim.refunds("adyen");
    assert_eq!(refunds.iter().map(|r| r.amount).collect::<Vec<_>>(), [1000]);
    // The merchant heard of 400 refunded, then of the whole 1,000.
    assert_eq!(refunded_totals(&receiver, &pi, 2).await, [400, 1000]);
}

/// A card payment's first acquirer (Adyen) answers 503 "not processed" yet charges, and
/// says so by notification after payproxy completed the payment at the second (the Stripe-
/// like provider): payproxy voids the late charge at Adyen, records it, counts it, and the
/// storefront hears of one success only. Both ledgers net one charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_from_a_provider_that_answered_not_processed_is_voided() {
    let (sim, receiver, env) = start_adyen_first().await;
    let client = HttpClient::default();
    sim.set_faults("adyen", Faults::charge_then_unavailable(1_000));

    let paid = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "late-1")],
            &form_with(card_from("DE", "1000", "LATE-1"), &[]),
        )
        .await;
    paid.assert_status(200);
    let pi = paid.json()["id"].as_str().unwrap().to_string();
    assert_eq!(paid.json()["status"], "succeeded", "{}", paid.json());
    assert_eq!(paid.provider(), Some("stripe-like"));
    let charged_at = |name: &str| {
        sim.ledger(name)
            .into_iter()
            .filter(|c| c.merchant_reference.as_deref() == Some("LATE-1"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        charged_at("adyen").len(),
        1,
        "Adyen charged despite its 503: {:?}",
        sim.ledger("adyen")
    );

    // Adyen's AUTHORISATION arrives a second later: the charge is voided there.
    eventually(Duration::from_secs(20), "the late charge voided", || {
        let adyen = charged_at("adyen");
        async move { adyen.iter().all(|c| c.status == "canceled") }
    })
    .await;
    eventually(Duration::from_secs(10), "counted", || async {
        adyen_late_charges(&client, &env, "voided").await == 1.0
    })
    .await;
    let stripe_like = charged_at("stripe-like");
    assert_eq!(stripe_like.len(), 1);
    assert_eq!(stripe_like[0].status, "succeeded");
    let net: i64 = ["adyen", "stripe-like"]
        .iter()
        .flat_map(|p| charged_at(p))
        .filter(|c| c.status == "succeeded")
        .map(|c| c.amount)
        .sum();
    assert_eq!(net, 1000, "one net charge");

    // Adyen redelivers its notification: nothing is voided twice.
    let sent = delivered(&sim, "adyen", 1).await;
    let again = post_notice(&client, &env, "adyen", &sent[0], sent[0].body.clone()).await;
    again.assert_status(200);
    assert_eq!(adyen_late_charges(&client, &env, "voided").await, 1.0);
    assert!(notices(&client, &env, "adyen", "duplicate").await >= 1.0);
    // Adyen's CANCELLATION of the voided charge (its word on payproxy's own undo) finds the
    // late charge, changes nothing and is not held for a payment that never comes.
    let sent = delivered(&sim, "adyen", 2).await;
    assert!(
        sent.iter()
            .any(|s| String::from_utf8_lossy(&s.body).contains("CANCELLATION")),
        "{sent:?}"
    );
    eventually(
        Duration::from_secs(10),
        "the cancellation taken as stale",
        || async { notices(&client, &env, "adyen", "stale").await >= 1.0 },
    )
    .await;

    // The storefront: one success, nothing about the voided charge.
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "succeeded", "{now}");
    assert_eq!(now["amount_received"], 1000, "{now}");
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "created + succeeded", |a| {
            types_for(a, &pi).len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        types_for(&receiver.accepted(), &pi),
        ["payment_intent.created", "payment_intent.succeeded"],
        "{accepted:?}"
    );
}

/// The shopper finishing at the provider: the storefront's `next_action` URL, opened.
async fn shopper_finishes(client: &HttpClient, intent: &Value, query: &str) {
    let url = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no redirect in {intent}"));
    let separator = if url.contains('?') { '&' } else { '?' };
    let finished = client
        .send(
            Method::GET,
            &format!("{url}{separator}{query}"),
            &[],
            Bytes::new(),
        )
        .await;
    assert!(
        finished.status.is_success() || finished.status.is_redirection(),
        "{} {:?}",
        finished.status,
        String::from_utf8_lossy(&finished.body)
    );
}

/// The shopper finishes the 3-D Secure challenge of `intent` at the Stripe simulator (its
/// page, as Stripe answers it: `redirect_to_url` when confirmed with a `return_url`, else
/// `use_stripe_sdk`'s `stripe_js`) with `query`.
async fn challenge_finished(client: &HttpClient, intent: &Value, query: &str) {
    let action = &intent["next_action"];
    let page = match action["type"].as_str() {
        Some("use_stripe_sdk") => action["use_stripe_sdk"]["stripe_js"].clone(),
        _ => action["redirect_to_url"]["url"].clone(),
    };
    let mut redirect = intent.clone();
    redirect["next_action"] = serde_json::json!({"redirect_to_url": {"url": page}});
    shopper_finishes(client, &redirect, query).await;
}

/// Create `form` with `key`; its intent, checked to wait for the shopper.
async fn create(client: &HttpClient, env: &Env, key: &str, form: &str) -> Value {
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", key)],
            form,
        )
        .await;
    reply.assert_status(200);
    let intent = reply.json();
    assert_eq!(intent["status"], "requires_action", "{intent}");
    intent
}

/// The storefront's events for `pi` once `n` arrived (checked signed with the merchant's
/// secret).
/// A GrabPay payment pending in the app (an amount ending in 88), which the shopper then
/// finishes there with `result` (`success` or `failed`); its id.
async fn grabpay_in_the_app(
    client: &HttpClient,
    env: &Env,
    sim: &Simulator,
    key: &'static str,
    reference: &str,
    result: &str,
) -> String {
    let grab = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", key)],
            &grabpay_shopper(reference).replace("amount=4200", "amount=4288"),
        )
        .await;
    grab.assert_status(200);
    assert_eq!(grab.json()["status"], "processing", "{}", grab.json());
    let tx = sim
        .ledger("grabpay")
        .into_iter()
        .find(|c| c.merchant_reference.as_deref() == Some(reference))
        .unwrap()
        .id;
    let finished = client
        .send(
            Method::POST,
            &format!(
                "{}/grabpay/v2/charge/{tx}/complete?result={result}",
                sim.base_url("grabpay")
            ),
            &[],
            Bytes::new(),
        )
        .await;
    assert!(finished.status.is_success(), "{:?}", finished.json());
    grab.json()["id"].as_str().unwrap().to_string()
}

async fn events_for(receiver: &Receiver, pi: &str, n: usize) -> Vec<String> {
    let accepted = receiver
        .wait_accepted(
            Duration::from_secs(20),
            &format!("{n} events of {pi}"),
            |a| types_for(a, pi).len() >= n,
        )
        .await;
    for d in accepted
        .iter()
        .filter(|d| payproxy_e2e::receiver::payment_of(d) == pi)
    {
        assert!(d.stripe_signature_ok(SECRET), "{:?}", d.request);
    }
    types_for(&accepted, pi)
}

/// Pix, iDEAL and DANA payments wait for the shopper; the shopper pays (or fails) at the
/// provider, nobody retrieves anything, and the provider's signed notification moves each
/// payment: the merchant gets the Stripe event, a retrieve shows the new state. A refund made
/// at the provider (its dashboard) reaches the merchant as `charge.refunded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_method_payments_resolve_by_signed_provider_notifications() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start(&sim, &receiver).await;
    let client = HttpClient::default();

    // Pix: the QR code is paid at the bank.
    let pix = create(
        &client,
        &env,
        "n-pix",
        &pix_shopper("529.982.247-25", "N-PIX"),
    )
    .await;
    let pix_id = pix["id"].as_str().unwrap();
    assert_eq!(pix["next_action"]["type"], "pix_display_qr_code", "{pix}");
    pay_pix(&client, &sim, "N-PIX").await;
    assert_eq!(
        events_for(&receiver, pix_id, 3).await,
        [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );
    assert_eq!(intent(&client, &env, pix_id).await["status"], "succeeded");

    // iDEAL: approved at the bank; another one fails there.
    let ideal = create(
        &client,
        &env,
        "n-ideal",
        &ideal_shopper("NL91ABNA0417164300", "N-IDEAL"),
    )
    .await;
    let ideal_id = ideal["id"].as_str().unwrap();
    shopper_finishes(&client, &ideal, "result=success").await;
    assert_eq!(
        events_for(&receiver, ideal_id, 3).await.last().unwrap(),
        "payment_intent.succeeded"
    );
    let now = intent(&client, &env, ideal_id).await;
    assert_eq!(now["status"], "succeeded", "{now}");
    assert_eq!(now["amount_received"], 2500, "{now}");

    let failing = create(
        &client,
        &env,
        "n-ideal-f",
        &ideal_shopper("NL91ABNA0417164300", "N-IDEAL-F"),
    )
    .await;
    let failing_id = failing["id"].as_str().unwrap();
    shopper_finishes(&client, &failing, "result=failure").await;
    assert_eq!(
        events_for(&receiver, failing_id, 3).await.last().unwrap(),
        "payment_intent.payment_failed"
    );
    let now = intent(&client, &env, failing_id).await;
    assert_eq!(now["status"], "requires_payment_method", "{now}");
    assert!(now["last_payment_error"].is_object(), "{now}");

    // The merchant refunds €10 of the paid iDEAL payment in the provider's dashboard.
    let transaction = sim
        .ledger("ideal")
        .into_iter()
        .find(|c| c.merchant_reference.as_deref() == Some("N-IDEAL"))
        .unwrap()
        .id;
    let refunded = client
        .send(
            Method::POST,
            &format!(
                "{}/ideal/v1/transactions/{transaction}/refunds",
                sim.base_url("ideal")
            ),
            &[
                ("authorization", "Bearer demo-ideal-key"),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(br#"{"amount": "10.00", "currency": "EUR"}"#),
        )
        .await;
    assert!(refunded.status.is_success(), "{:?}", refunded.json());
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "charge.refunded", |a| {
            types_for(a, ideal_id).contains(&"charge.refunded".to_string())
        })
        .await;
    let refund_event = accepted
        .iter()
        .find(|d| {
            payproxy_e2e::receiver::payment_of(d) == ideal_id
                && d.id_and_type().1 == "charge.refunded"
        })
        .unwrap();
    assert!(refund_event.stripe_signature_ok(SECRET));
    assert_eq!(
        payproxy_e2e::receiver::object(refund_event)["amount_refunded"],
        1000
    );

    // DANA: the shopper pays in the app.
    let dana = create(&client, &env, "n-dana", &dana_shopper("150000", "N-DANA")).await;
    let dana_id = dana["id"].as_str().unwrap();
    shopper_finishes(&client, &dana, "").await;
    assert_eq!(
        events_for(&receiver, dana_id, 3).await.last().unwrap(),
        "payment_intent.succeeded"
    );
    assert_eq!(intent(&client, &env, dana_id).await["status"], "succeeded");

    // GrabPay: pending until the shopper confirms in the app (amounts ending in 88).
    let grab_id = grabpay_in_the_app(&client, &env, &sim, "n-grab", "N-GRAB", "success").await;
    assert_eq!(
        events_for(&receiver, &grab_id, 3).await,
        [
            "payment_intent.created",
            "payment_intent.processing",
            "payment_intent.succeeded"
        ]
    );
    assert_eq!(intent(&client, &env, &grab_id).await["status"], "succeeded");

    // Counted by provider; nothing refused.
    for provider in ["pix", "ideal", "dana", "grabpay"] {
        let verified = received(&client, &env, provider, "verified").await;
        assert!(verified >= 1.0, "{provider}: {verified}");
        assert_eq!(
            received(&client, &env, provider, "rejected").await,
            0.0,
            "{provider}"
        );
    }
}

/// An iDEAL payment routed to Adyen: the shopper finishes the redirect, Adyen's signed
/// AUTHORISATION notification (the only way Adyen reports it) makes it succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adyen_notification_completes_a_redirect_payment() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start_with(&sim, &receiver, ideal_at_adyen).await;
    let client = HttpClient::default();

    let payment = create(
        &client,
        &env,
        "n-adyen",
        &ideal_shopper("NL91ABNA0417164300", "N-ADYEN"),
    )
    .await;
    let pi = payment["id"].as_str().unwrap();
    // Adyen has no status query: a retrieve meanwhile answers from the record (it used to
    // ask Adyen, whose dialect refuses, and answer the storefront 400).
    let waiting = client
        .get(&env.url(&format!("/v1/payment_intents/{pi}")))
        .await;
    waiting.assert_status(200);
    assert_eq!(waiting.json()["status"], "requires_action");
    shopper_finishes(&client, &payment, "result=authorised").await;
    assert_eq!(
        events_for(&receiver, pi, 3).await.last().unwrap(),
        "payment_intent.succeeded"
    );
    let now = intent(&client, &env, pi).await;
    assert_eq!(now["status"], "succeeded", "{now}");
    let sent = delivered(&sim, "adyen", 1).await;
    assert_eq!(sent[0].dialect, "adyen");
    assert_eq!(notices(&client, &env, "adyen", "applied").await, 1.0);
}

/// iDEAL's signature as the provider makes it: hex HMAC-SHA256(secret, "<ts>.<body>").
fn ideal_signed(body: &[u8], ts: u64) -> Vec<(String, String)> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PROVIDER_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-ideal-timestamp".into(), ts.to_string()),
        (
            "x-ideal-signature".into(),
            hex::encode(mac.finalize().into_bytes()),
        ),
    ]
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Each notification is verified, applied once, only forward, and waits for its payment:
/// - forged (body changed, signature kept; no signature) → 401, nothing changes;
/// - replayed verbatim (a duplicate) → acknowledged, applied once, no second event;
/// - out of order (a failure after the success) → acknowledged, the payment stays paid;
/// - early (the provider notifies before its answer to the create arrived) → held, then
///   applied when the payment is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_out_of_order_and_early_notifications() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start(&sim, &receiver).await;
    let client = HttpClient::default();

    let ideal = create(
        &client,
        &env,
        "o-ideal",
        &ideal_shopper("NL91ABNA0417164300", "O-IDEAL"),
    )
    .await;
    let pi = ideal["id"].as_str().unwrap().to_string();
    shopper_finishes(&client, &ideal, "result=success").await;
    assert_eq!(
        events_for(&receiver, &pi, 3).await.last().unwrap(),
        "payment_intent.succeeded"
    );
    let sent = delivered(&sim, "ideal", 1).await;
    let success = sent[0].clone();

    // Forged: the amount changed under the provider's signature; and no signature at all.
    let forged = String::from_utf8(success.body.clone())
        .unwrap()
        .replace("\"25.00\"", "\"2.50\"");
    assert_ne!(
        forged.as_bytes(),
        &success.body[..],
        "the body names the amount"
    );
    let refused = post_notice(&client, &env, "ideal", &success, forged.into_bytes()).await;
    refused.assert_status(401);
    assert!(
        !String::from_utf8_lossy(&refused.body).contains("25.00"),
        "the refusal repeats nothing of the body"
    );
    let unsigned = client
        .send(
            Method::POST,
            &env.url("/webhooks/ideal"),
            &[("content-type", "application/json")],
            Bytes::from(success.body.clone()),
        )
        .await;
    unsigned.assert_status(401);
    assert_eq!(received(&client, &env, "ideal", "rejected").await, 2.0);

    // Replayed verbatim: a duplicate, acknowledged and ignored.
    assert_eq!(notices(&client, &env, "ideal", "duplicate").await, 0.0);
    let replayed = post_notice(&client, &env, "ideal", &success, success.body.clone()).await;
    replayed.assert_status(200);
    assert_eq!(notices(&client, &env, "ideal", "duplicate").await, 1.0);

    // Out of order: a (correctly signed) failure of the same transaction after its success.
    let mut late: Value = serde_json::from_slice(&success.body).unwrap();
    late["notificationId"] = format!("{}-late", late["notificationId"].as_str().unwrap()).into();
    late["status"] = "failure".into();
    let late = serde_json::to_vec(&late).unwrap();
    let headers = ideal_signed(&late, unix_s());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answered = client
        .send(
            Method::POST,
            &env.url("/webhooks/ideal"),
            &headers,
            Bytes::from(late),
        )
        .await;
    answered.assert_status(200);
    assert_eq!(notices(&client, &env, "ideal", "stale").await, 1.0);
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "succeeded", "{now}");

    // Nothing of that reached the merchant: still the three events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        types_for(&receiver.accepted(), &pi),
        [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );

    // Out of order the other way: a refund notified before the payment it refunds was
    // notified paid waits for it, then counts.
    let early_refund = create(
        &client,
        &env,
        "o-ideal-2",
        &ideal_shopper("NL91ABNA0417164300", "O-IDEAL-2"),
    )
    .await;
    let pi2 = early_refund["id"].as_str().unwrap().to_string();
    let transaction = sim
        .ledger("ideal")
        .into_iter()
        .find(|c| c.merchant_reference.as_deref() == Some("O-IDEAL-2"))
        .unwrap()
        .id;
    let refund = serde_json::to_vec(&serde_json::json!({
        "notificationId": "ntf_early_refund",
        "type": "refund.status",
        "createdAt": "2026-12-04T12:00:00Z",
        "transactionId": transaction,
        "refundId": "rf_early",
        "status": "success",
        "amount": "5.00",
        "currency": "EUR",
        "reference": "O-IDEAL-2"
    }))
    .unwrap();
    let headers = ideal_signed(&refund, unix_s());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    client
        .send(
            Method::POST,
            &env.url("/webhooks/ideal"),
            &headers,
            Bytes::from(refund),
        )
        .await
        .assert_status(200);
    assert_eq!(notices(&client, &env, "ideal", "held").await, 1.0);
    assert_eq!(
        intent(&client, &env, &pi2).await["status"],
        "requires_action"
    );
    shopper_finishes(&client, &early_refund, "result=success").await;
    assert_eq!(
        events_for(&receiver, &pi2, 4).await,
        [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.succeeded",
            "charge.refunded"
        ]
    );
    let refunded = receiver
        .accepted()
        .into_iter()
        .find(|d| {
            payproxy_e2e::receiver::payment_of(d) == pi2 && d.id_and_type().1 == "charge.refunded"
        })
        .unwrap();
    assert_eq!(
        payproxy_e2e::receiver::object(&refunded)["amount_refunded"],
        500
    );

    // Early: Pix answers its create 3 s late (and its other calls: the payment control
    // too), and the QR code is paid meanwhile: notified at once, before payproxy knows the
    // payment (a notification that came after the create's answer would be applied at once,
    // never held).
    sim.set_faults("pix", Faults::timeout_after_charge(3_000));
    let creating = {
        let (client, url) = (client.clone(), env.url("/v1/payment_intents"));
        tokio::spawn(async move {
            client
                .post_form(
                    &url,
                    &[("idempotency-key", "o-pix")],
                    &pix_shopper("529.982.247-25", "O-PIX"),
                )
                .await
        })
    };
    eventually(Duration::from_secs(10), "the cob at the provider", || {
        let found = sim
            .ledger("pix")
            .iter()
            .any(|c| c.merchant_reference.as_deref() == Some("O-PIX"));
        async move { found }
    })
    .await;
    pay_pix(&client, &sim, "O-PIX").await;
    eventually(Duration::from_secs(10), "the notification held", || async {
        notices(&client, &env, "pix", "held").await == 1.0
    })
    .await;
    let created = creating.await.unwrap();
    created.assert_status(200);
    sim.set_faults("pix", Faults::default());
    let pix = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        events_for(&receiver, &pix, 3).await,
        [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );
    assert_eq!(intent(&client, &env, &pix).await["status"], "succeeded");
    assert_eq!(notices(&client, &env, "pix", "applied").await, 1.0);
}

/// A notification whose payment never appears is held for `state.notice_hold_ms`, then
/// reported (`expired`) and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_for_an_unknown_payment_is_held_then_reported() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start_with(&sim, &receiver, |config| {
        config["state"]["notice_hold_ms"] = 1_000.into();
    })
    .await;
    let client = HttpClient::default();
    let body = serde_json::to_vec(&serde_json::json!({
        "notificationId": "ntf_unknown_success",
        "type": "transaction.status",
        "createdAt": "2026-12-04T12:00:00Z",
        "transactionId": "tr_nobody_knows",
        "status": "success",
        "amount": "25.00",
        "currency": "EUR",
        "reference": "UNKNOWN-1"
    }))
    .unwrap();
    let headers = ideal_signed(&body, unix_s());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answered = client
        .send(
            Method::POST,
            &env.url("/webhooks/ideal"),
            &headers,
            Bytes::from(body),
        )
        .await;
    answered.assert_status(200);
    assert_eq!(notices(&client, &env, "ideal", "held").await, 1.0);
    eventually(
        Duration::from_secs(10),
        "reported after the hold",
        || async { notices(&client, &env, "ideal", "expired").await == 1.0 },
    )
    .await;
    assert_eq!(notices(&client, &env, "ideal", "applied").await, 0.0);
    // An unknown provider is not a notification endpoint.
    let unknown = client
        .send(
            Method::POST,
            &env.url("/webhooks/nobody"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_ne!(unknown.status.as_u16(), 200);
}

/// A decline is reported once: a GrabPay payment the shopper refuses in the app fails by
/// GrabPay's notification (`payment_intent.payment_failed`), and the storefront's retrieve
/// then reads the same refusal at GrabPay in other words (its status answer has no reason and
/// another code, but the amount), which is no new outcome: no second `payment_failed` (it
/// used to be sent). A confirm after a decline is a new attempt: its own decline, even in the
/// state the payment is already in, is reported (Adyen refuses a card twice: two events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_read_again_is_reported_once_and_a_new_confirms_decline_again() {
    let (sim, receiver, env) = start_adyen_first().await;
    let client = HttpClient::default();
    let confirm = |id: &str, key: &'static str| {
        let (client, url) = (
            client.clone(),
            env.url(&format!("/v1/payment_intents/{id}/confirm")),
        );
        async move {
            client
                .post_form(&url, &[("idempotency-key", key)], "")
                .await
        }
    };

    // GrabPay: pending in the app (amounts ending in 88), then refused there.
    let grab_id = grabpay_in_the_app(&client, &env, &sim, "n-once", "N-ONCE", "failed").await;
    assert_eq!(
        events_for(&receiver, &grab_id, 3).await,
        [
            "payment_intent.created",
            "payment_intent.processing",
            "payment_intent.payment_failed"
        ]
    );
    // The retrieve asks GrabPay (a failed payment may still be confirmed again: not settled).
    // The storefront's event is delivered from the notification's own write, before its
    // handler lets go of the payment's lock; a retrieve meanwhile finds the lock held and
    // answers from the record without asking. Counted once the lock is free.
    settled(&client, &env, "grabpay", 1.0).await;
    let asked = sim.request_count("grabpay");
    let now = intent(&client, &env, &grab_id).await;
    assert_eq!(now["status"], "requires_payment_method", "{now}");
    assert!(now["last_payment_error"].is_object(), "{now}");
    assert_eq!(sim.request_count("grabpay"), asked + 1, "GrabPay was asked");
    // A later event of the payment is the fence (delivery is in order per payment): anything
    // the retrieve had written would come before it. The confirm is a new GrabPay charge,
    // pending in the app again.
    let again = confirm(&grab_id, "n-once-2").await;
    again.assert_status(200);
    assert_eq!(again.json()["status"], "processing", "{}", again.json());
    assert_eq!(
        events_for(&receiver, &grab_id, 4).await,
        [
            "payment_intent.created",
            "payment_intent.processing",
            "payment_intent.payment_failed",
            "payment_intent.processing"
        ],
        "the retrieve reported the decline again"
    );

    // Adyen refuses the card (amounts ending in 02), and again when the storefront confirms
    // the payment again: a payment_failed for each attempt.
    let card_id = refused_at_adyen(&client, &env, "n-twice", "N-TWICE").await;
    assert_eq!(
        events_for(&receiver, &card_id, 2).await,
        ["payment_intent.created", "payment_intent.payment_failed"]
    );
    let again = confirm(&card_id, "n-twice-2").await;
    assert_eq!(again.status.as_u16(), 402, "{:?}", again.json());
    assert_eq!(
        events_for(&receiver, &card_id, 3).await,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.payment_failed"
        ]
    );
}

/// A decline of an attempt the payment has left fails nothing. Adyen refuses the card (its
/// answer fails the payment; its notification is late); the storefront confirms again with
/// iDEAL, which waits for the shopper at Adyen under a new pspReference. The first attempt's
/// `AUTHORISATION` `success=false` then arrives: it is not applied (held, as for a payment not
/// known yet, since only the last attempt's reference finds the payment), the payment still
/// waits for its shopper, and the storefront hears no second `payment_failed`. Applied, it
/// would fail the payment, and a storefront told so could charge the shopper another way
/// while the iDEAL payment still completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_decline_of_an_earlier_attempt_does_not_fail_the_one_under_way() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start_with(&sim, &receiver, |config| {
        config["providers"]["adyen"]["cost"] = 1.0.into();
        ideal_at_adyen(config);
    })
    .await;
    let client = HttpClient::default();
    // Adyen's notifications are late: logged now, delivered by the test when it chooses.
    sim.set_webhook_settings(
        "adyen",
        provider_sim::WebhookSettings {
            url: Some(env.url("/webhooks/adyen")),
            secret: ADYEN_HMAC.into(),
            delay_ms: 600_000,
        },
    );

    // Refused (amounts ending in 02).
    let pi = refused_at_adyen(&client, &env, "late-decline", "N-LATE").await;
    let first = sim.webhooks_sent("adyen");
    assert_eq!(first.len(), 1, "{first:?}");
    let refusal = first[0].json().unwrap();
    let item = &refusal["notificationItems"][0]["NotificationRequestItem"];
    assert_eq!(
        (item["eventCode"].as_str(), item["success"].as_str()),
        (Some("AUTHORISATION"), Some("false")),
        "{refusal}"
    );

    // Confirmed again with iDEAL: a redirect at Adyen, under a new pspReference.
    let ideal = ideal_shopper("NL91ABNA0417164300", "N-LATE");
    let confirm_form: String = ideal
        .split('&')
        .filter(|pair| !pair.starts_with("amount=") && !pair.starts_with("currency="))
        .filter(|pair| !pair.starts_with("confirm="))
        .collect::<Vec<_>>()
        .join("&");
    let again = client
        .post_form(
            &env.url(&format!("/v1/payment_intents/{pi}/confirm")),
            &[("idempotency-key", "late-decline-2")],
            &confirm_form,
        )
        .await;
    again.assert_status(200);
    let waiting = again.json();
    assert_eq!(waiting["status"], "requires_action", "{waiting}");
    assert_eq!(again.provider(), Some("adyen"));
    // The first attempt's refusal arrives now.
    let late = post_notice(&client, &env, "adyen", &first[0], first[0].body.clone()).await;
    late.assert_status(200);
    assert_eq!(String::from_utf8_lossy(&late.body), "[accepted]");
    // Not applied: the payment's provider-reference index names only its last attempt's
    // pspReference, so the first one's is held as a payment not known yet (and expires).
    let page = metrics_of(&client, &env).await;
    let counted: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("payproxy_webhook_notifications_total"))
        .collect();
    assert_eq!(
        notices(&client, &env, "adyen", "held").await,
        1.0,
        "{counted:?}"
    );
    assert_eq!(
        notices(&client, &env, "adyen", "applied").await,
        0.0,
        "{counted:?}"
    );
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "requires_action", "{now}");

    // The shopper pays at iDEAL: the payment succeeds; the one payment_failed is the card's.
    sim.set_webhooks("adyen", Some(&env.url("/webhooks/adyen")), ADYEN_HMAC);
    shopper_finishes(&client, &waiting, "result=authorised").await;
    assert_eq!(
        events_for(&receiver, &pi, 4).await,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "succeeded", "{now}");
}

/// A capture made at the provider's dashboard reaches the record when the card's own option
/// made the payment manual-capture on an intent offering other methods too (as automatic
/// payment methods do): `payment_method_options[card][capture_method]=manual` with
/// `payment_method_types` card and iDEAL. Stripe's `payment_intent.succeeded` of such an
/// intent says nothing of the method used; the Stripe dialect reports it as a capture, and
/// payproxy, which recorded the card payment as captured by hand, applies it: the storefront
/// hears `payment_intent.succeeded`. (Read as a status, as for card-only intents alone
/// before, it was the authorisation again: stale, and the record stayed `requires_capture`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_capture_of_a_card_captured_by_its_own_option_is_applied() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let env = start(&sim, &receiver).await;
    let client = HttpClient::default();
    let authorised = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "card-option")],
            &form_with(
                card_from("DE", "1000", "CARD-OPTION"),
                &[
                    ("payment_method_types[]", "card"),
                    ("payment_method_types[]", "ideal"),
                    ("payment_method_options[card][capture_method]", "manual"),
                ],
            ),
        )
        .await;
    authorised.assert_status(200);
    assert_eq!(authorised.provider(), Some("stripe-like"));
    assert_eq!(
        authorised.json()["status"],
        "requires_capture",
        "{}",
        authorised.json()
    );
    let pi = authorised.json()["id"].as_str().unwrap().to_string();

    // The merchant captures 600 in the provider's dashboard.
    let direct = client
        .post_form(
            &format!(
                "{}/v1/payment_intents/{pi}/capture",
                sim.base_url("stripe-like")
            ),
            &[],
            &form(&[("amount_to_capture", "600")]),
        )
        .await;
    direct.assert_status(200);
    settled(&client, &env, "stripe-like", 1.0).await;
    assert_eq!(notices(&client, &env, "stripe-like", "applied").await, 1.0);
    assert_eq!(
        events_for(&receiver, &pi, 3).await,
        [
            "payment_intent.created",
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded"
        ]
    );
}

/// A Stripe PaymentIntent declined, then confirmed again at the same provider with a card
/// that needs 3-D Secure: the same intent, the same id, now waiting for the shopper. The
/// first attempt's `payment_intent.payment_failed`, delivered late, names that id too, so
/// it cannot be told from a decline of the attempt under way. payproxy asks the provider:
/// the intent waits for the shopper, so the decline was the earlier attempt's and changes
/// nothing (stale). (Applied, it failed the payment the shopper was still paying: the
/// storefront heard `payment_intent.payment_failed` and might have asked them to pay
/// again.) The shopper then passes the challenge and the payment succeeds.
///
/// A second payment, the same way, whose shopper fails the challenge: that decline is the
/// attempt under way's, the provider says so, and it is applied. A third, confirmed again
/// while payproxy's record still waits for its first challenge (which failed): the first
/// challenge's decline, late, is checked too. A fourth, like the first, whose provider
/// cannot be asked: the decline is applied as notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_decline_of_an_intent_confirmed_again_is_checked_with_its_provider() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let env = start_with(&sim, &receiver, |config| {
        config["log"] = serde_json::json!({ "audit_path": audit_path });
    })
    .await;
    let client = HttpClient::default();
    let webhooks = env.url("/webhooks/stripe-like");
    let late = |delay_ms| provider_sim::WebhookSettings {
        url: Some(webhooks.clone()),
        secret: PROVIDER_SECRET.into(),
        delay_ms,
    };
    // Its notifications are late: logged now, delivered by the test when it chooses.
    sim.set_webhook_settings("stripe-like", late(600_000));
    let declined_then_challenged = |order: &'static str| {
        let client = &client;
        let env = &env;
        async move {
            let declined = client
                .post_form(
                    &env.url("/v1/payment_intents"),
                    &[("idempotency-key", &format!("{order}-1"))],
                    &format!(
                        "amount=1000&currency=eur&confirm=true\
                         &payment_method=pm_card_chargeDeclined&metadata[order_id]={order}"
                    ),
                )
                .await;
            assert_eq!(declined.status.as_u16(), 402, "{}", declined.json());
            assert_eq!(declined.provider(), Some("stripe-like"));
            let pi = declined.json()["error"]["payment_intent"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let again = client
                .post_form(
                    &env.url(&format!("/v1/payment_intents/{pi}/confirm")),
                    &[("idempotency-key", &format!("{order}-2"))],
                    "payment_method=pm_card_threeDSecure2Required",
                )
                .await;
            again.assert_status(200);
            let waiting = again.json();
            assert_eq!(
                (waiting["id"].as_str(), waiting["status"].as_str()),
                (Some(pi.as_str()), Some("requires_action")),
                "{waiting}"
            );
            // Confirmed without a return_url: Stripe.js's action, which payproxy reads as
            // waiting for the shopper.
            assert_eq!(waiting["next_action"]["type"], "use_stripe_sdk");
            (pi, waiting)
        }
    };
    // The one notification the simulator logged since it had logged `logged`: a decline.
    let logged_since = |logged: usize| {
        let sent = sim.webhooks_sent("stripe-like");
        assert_eq!(sent.len(), logged + 1, "{sent:?}");
        let decline = sent[logged].clone();
        assert_eq!(
            decline.json().unwrap()["type"],
            "payment_intent.payment_failed"
        );
        decline
    };
    let deliver = |notice: SentWebhook| {
        let (client, env) = (&client, &env);
        async move {
            post_notice(client, env, "stripe-like", &notice, notice.body.clone())
                .await
                .assert_status(200);
        }
    };
    let stale_and_applied = || async {
        (
            notices(&client, &env, "stripe-like", "stale").await,
            notices(&client, &env, "stripe-like", "applied").await,
        )
    };

    let (pi, waiting) = declined_then_challenged("AGAIN-1").await;
    let decline = logged_since(0);
    let asked = sim.request_count("stripe-like");
    deliver(decline).await;
    settled(&client, &env, "stripe-like", 1.0).await;
    assert_eq!(notices(&client, &env, "stripe-like", "stale").await, 1.0);
    assert_eq!(notices(&client, &env, "stripe-like", "applied").await, 0.0);
    // One status query, the check; its audit line says what the provider answered.
    assert_eq!(sim.request_count("stripe-like"), asked + 1);
    let audit = audit_lines(&audit_path);
    let checked: Vec<&Value> = audit
        .iter()
        .filter(|l| l["payment"] == pi.as_str() && l["operation"] == "status")
        .collect();
    assert_eq!(checked.len(), 1, "{audit:?}");
    assert_eq!(
        (
            checked[0]["decision"].as_str(),
            checked[0]["provider"].as_str()
        ),
        (Some("requires_action"), Some("stripe-like")),
        "{audit:?}"
    );
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "requires_action", "{now}");

    // The shopper passes the challenge; the provider's success is delivered at once.
    sim.set_webhook_settings("stripe-like", late(0));
    challenge_finished(&client, &waiting, "result=succeeded").await;
    assert_eq!(
        events_for(&receiver, &pi, 4).await,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "succeeded", "{now}");

    // The second payment's shopper fails the challenge: its decline is checked (one status
    // query), the provider says so, and it is applied.
    sim.set_webhook_settings("stripe-like", late(600_000));
    let (pi, waiting) = declined_then_challenged("AGAIN-2").await;
    let logged = sim.webhooks_sent("stripe-like").len();
    challenge_finished(&client, &waiting, "result=failed").await;
    let decline = logged_since(logged);
    let ((_, applied), asked) = (stale_and_applied().await, sim.request_count("stripe-like"));
    deliver(decline).await;
    assert_eq!(
        notices(&client, &env, "stripe-like", "applied").await,
        applied + 1.0
    );
    assert_eq!(sim.request_count("stripe-like"), asked + 1);
    assert_eq!(
        events_for(&receiver, &pi, 4).await,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.payment_failed"
        ]
    );
    let now = intent(&client, &env, &pi).await;
    assert_eq!(now["status"], "requires_payment_method", "{now}");

    // A third fails its first challenge, and the storefront (told by Stripe.js in the
    // shopper's browser) confirms it again before the provider's payment_failed arrives:
    // payproxy's record still waits for the first challenge. That decline is checked too.
    sim.set_webhook_settings("stripe-like", late(600_000));
    let challenged = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "AGAIN-3-1")],
            "amount=1000&currency=eur&confirm=true\
             &payment_method=pm_card_threeDSecure2Required&metadata[order_id]=AGAIN-3\
             &return_url=https://shop.example/back",
        )
        .await;
    challenged.assert_status(200);
    let first = challenged.json();
    assert_eq!(first["status"], "requires_action", "{first}");
    assert_eq!(first["next_action"]["type"], "redirect_to_url", "{first}");
    let pi = first["id"].as_str().unwrap().to_string();
    let logged = sim.webhooks_sent("stripe-like").len();
    challenge_finished(&client, &first, "result=failed").await;
    let again = client
        .post_form(
            &env.url(&format!("/v1/payment_intents/{pi}/confirm")),
            &[("idempotency-key", "AGAIN-3-2")],
            "payment_method=pm_card_threeDSecure2Required",
        )
        .await;
    again.assert_status(200);
    assert_eq!(
        again.json()["status"],
        "requires_action",
        "{}",
        again.json()
    );
    let decline = logged_since(logged);
    let (stale, applied) = stale_and_applied().await;
    deliver(decline).await;
    eventually(
        Duration::from_secs(20),
        "the late decline found stale",
        || async { notices(&client, &env, "stripe-like", "stale").await > stale },
    )
    .await;
    assert_eq!(
        notices(&client, &env, "stripe-like", "applied").await,
        applied
    );
    // The shopper passes the second challenge. The storefront's events (delivered in order,
    // the success last) hold no payment_failed: the late decline failed nothing. (Each
    // confirm waiting for a challenge is a requires_action.)
    sim.set_webhook_settings("stripe-like", late(0));
    challenge_finished(&client, &again.json(), "result=succeeded").await;
    assert_eq!(
        events_for(&receiver, &pi, 4).await,
        [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.requires_action",
            "payment_intent.succeeded"
        ]
    );

    // A fourth, like the first, but the provider cannot be asked (every request answered
    // 503): the late decline is applied as notified, as it was before the check.
    sim.set_webhook_settings("stripe-like", late(600_000));
    let logged = sim.webhooks_sent("stripe-like").len();
    let (pi, _) = declined_then_challenged("AGAIN-4").await;
    let decline = logged_since(logged);
    let (stale, applied) = stale_and_applied().await;
    sim.set_faults("stripe-like", provider_sim::Faults::error(503));
    deliver(decline).await;
    sim.set_faults("stripe-like", provider_sim::Faults::default());
    assert_eq!(
        notices(&client, &env, "stripe-like", "applied").await,
        applied + 1.0
    );
    assert_eq!(notices(&client, &env, "stripe-like", "stale").await, stale);
    assert_eq!(
        events_for(&receiver, &pi, 4).await,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.payment_failed"
        ]
    );
}
