//! Signed storefront events out of a durable outbox (issue 10 point 3): each payment state
//! change becomes a Stripe `Event` delivered to the merchant's endpoint, signed so that
//! Stripe's scheme verifies (checked here with the test's own HMAC), once per event id, in
//! order per payment, through a dead endpoint and a `kill -9`'d proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use payproxy_e2e::chaos::{eventually, metric, metrics_text, ChildProxy, ReservedPort};
use payproxy_e2e::receiver::{object, payment_of, types_for, with_webhooks, Delivery, Receiver};
use payproxy_e2e::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec_test_9f8e7d6c5b4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_events_arrive_signed_in_order_once_per_change() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let config = with_webhooks(payments_config(&sim), &receiver.url(), SECRET.into());
    let env = Env::start(config).await;
    let client = HttpClient::default();
    let url = env.url("/v1/payment_intents");

    // A card payment confirmed at once: created, then succeeded.
    let form = form_with(card_from("DE", "1000", "WH-1"), &[]);
    let paid = client
        .post_form(&url, &[("idempotency-key", "wh-1")], &form)
        .await;
    paid.assert_status(200);
    let intent = paid.json();
    assert_eq!(intent["status"], "succeeded", "{intent}");
    let pi = intent["id"].as_str().unwrap().to_string();
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "created + succeeded", |a| {
            types_for(a, &pi).len() >= 2
        })
        .await;
    assert_eq!(
        types_for(&accepted, &pi),
        ["payment_intent.created", "payment_intent.succeeded"]
    );
    let succeeded = accepted
        .iter()
        .find(|d| d.id_and_type().1 == "payment_intent.succeeded")
        .unwrap();
    assert!(
        succeeded.stripe_signature_ok(SECRET),
        "{:?}",
        succeeded.request
    );
    assert!(
        !succeeded.stripe_signature_ok("whsec_wrong"),
        "a wrong secret must not verify"
    );
    let event = succeeded.json();
    assert_eq!(event["object"], "event");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["data"]["object"]["id"], pi.as_str());
    assert_eq!(event["data"]["object"]["object"], "payment_intent");
    assert_eq!(event["data"]["object"]["status"], "succeeded");
    assert_eq!(event["data"]["object"]["amount"], 1000);
    assert!(event["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(
        succeeded.request.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    // The SDK's retry of the same request (same key) replays: no event of its own.
    let again = client
        .post_form(&url, &[("idempotency-key", "wh-1")], &form)
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // A partial refund: charge.refunded with the Charge of the intent.
    let refund = client
        .post_form(
            &env.url("/v1/refunds"),
            &[("idempotency-key", "wh-1-refund")],
            &format!("payment_intent={pi}&amount=400"),
        )
        .await;
    refund.assert_status(200);
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "charge.refunded", |a| {
            types_for(a, &pi).len() >= 3
        })
        .await;
    // Delivery is in order per payment: anything the replay had written would have come
    // before the refund's event.
    assert_eq!(
        types_for(&accepted, &pi),
        [
            "payment_intent.created",
            "payment_intent.succeeded",
            "charge.refunded"
        ]
    );
    let refunded = accepted.last().unwrap();
    assert!(refunded.stripe_signature_ok(SECRET));
    let charge = object(refunded);
    assert_eq!(charge["object"], "charge", "{charge}");
    assert_eq!(charge["payment_intent"], pi.as_str());
    assert_eq!(charge["amount_refunded"], 400);
    assert_eq!(charge["refunded"], false, "a partial refund");

    // A declined payment (GrabPay: insufficient balance): payment_intent.payment_failed.
    let declined = client
        .post_form(
            &url,
            &[("idempotency-key", "wh-2")],
            &grabpay_shopper("WH-2").replace("amount=4200", "amount=4213"),
        )
        .await;
    assert_eq!(declined.status.as_u16(), 402, "{:?}", declined.json());
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "payment_failed", |a| {
            a.iter().any(|d| {
                d.id_and_type().1 == "payment_intent.payment_failed"
                    && object(d)["metadata"]["order_id"] == "WH-2"
            })
        })
        .await;
    let failed = accepted
        .iter()
        .find(|d| {
            object(d)["metadata"]["order_id"] == "WH-2" && d.id_and_type().1.ends_with("failed")
        })
        .unwrap();
    assert!(failed.stripe_signature_ok(SECRET));
    assert!(
        object(failed)["last_payment_error"].is_object(),
        "{}",
        object(failed)
    );

    // Every event id once (nothing was retried: the endpoint answered 200 each time).
    let mut ids: Vec<String> = receiver
        .deliveries()
        .iter()
        .map(|d| d.id_and_type().0)
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "an event id was delivered twice");
}

/// Reserved loopback ports for a child proxy, and its config.
fn child_config(
    sim: &Simulator,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: &std::path::Path,
    url: &str,
    secret: Value,
) -> Value {
    let mut config = with_webhooks(payments_config(sim), url, secret);
    config["listeners"] = json!([{ "addr": listen }]);
    config["admin"] = json!({ "addr": admin });
    config["state"] = json!({ "kind": "redb", "path": dir.join("state.redb") });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outlive_a_dead_endpoint_and_a_killed_proxy_delivered_once_in_order() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Inline secret: a test must not change its own environment while other threads run
    // (the `{"env": …}` form is exercised by tests/stripe_sdk, which starts payproxy with it).
    let mut receiver = Receiver::down_on(ReservedPort::new());
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let config = child_config(
        &sim,
        listen.addr(),
        admin.addr(),
        dir.path(),
        &receiver.url(),
        SECRET.into(),
    );
    let config_path = write_config(dir.path(), &config);
    let mut proxy =
        ChildProxy::start(&config_path, &dir.path().join("proxy.log"), listen, admin).await;
    let client = HttpClient::default();

    // Three payments, each paid and refunded twice: 4 events each, while the endpoint
    // refuses connections.
    let mut payments = Vec::new();
    for n in 0..3 {
        let order = format!("KILL-{n}");
        let paid = client
            .post_form(
                &proxy.url("/v1/payment_intents"),
                &[("idempotency-key", &format!("k-{order}"))],
                &form_with(card_from("DE", "1000", &order), &[]),
            )
            .await;
        paid.assert_status(200);
        let pi = paid.json()["id"].as_str().unwrap().to_string();
        for (m, amount) in ["300", "200"].iter().enumerate() {
            client
                .post_form(
                    &proxy.url("/v1/refunds"),
                    &[("idempotency-key", &format!("k-{order}-r{m}"))],
                    &format!("payment_intent={pi}&amount={amount}"),
                )
                .await
                .assert_status(200);
        }
        payments.push(pi);
    }
    eventually(
        Duration::from_secs(20),
        "refused deliveries counted",
        async || {
            let text = metrics_text(&client, proxy.admin).await;
            metric(
                &text,
                "payproxy_events_delivery_failures_total",
                &[("reason", "connect")],
            )
            .unwrap_or(0.0)
                >= 3.0
        },
    )
    .await;

    // Up, but failing: 500s are retried too.
    receiver.answer(500);
    receiver.up();
    eventually(Duration::from_secs(20), "500s answered", async || {
        receiver.deliveries().len() >= 6
    })
    .await;
    assert!(receiver.accepted().is_empty());

    // Killed while retrying; restarted on the same state file.
    proxy.kill9();
    let refused_so_far = receiver.deliveries().len();
    receiver.answer(200);
    proxy.restart().await;

    let accepted = receiver
        .wait_accepted(Duration::from_secs(30), "all 12 events", |a| a.len() >= 12)
        .await;
    // Nothing more trickles in (bounded look: a few delivery polls).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted_now = receiver.accepted();
    assert_eq!(
        accepted_now.len(),
        12,
        "{:#?}",
        accepted_now
            .iter()
            .map(Delivery::id_and_type)
            .collect::<Vec<_>>()
    );
    assert!(receiver.deliveries().len() > refused_so_far);
    let mut per_id = BTreeMap::new();
    for d in &accepted {
        assert!(d.stripe_signature_ok(SECRET), "{:?}", d.request);
        *per_id.entry(d.id_and_type().0).or_insert(0) += 1;
    }
    assert_eq!(per_id.len(), 12, "distinct event ids");
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    for pi in &payments {
        assert_eq!(
            types_for(&accepted, pi),
            [
                "payment_intent.created",
                "payment_intent.succeeded",
                "charge.refunded",
                "charge.refunded"
            ],
            "payment {pi}"
        );
        let refunds: Vec<i64> = accepted
            .iter()
            .filter(|d| payment_of(d) == *pi && d.id_and_type().1 == "charge.refunded")
            .map(|d| object(d)["amount_refunded"].as_i64().unwrap())
            .collect();
        assert_eq!(refunds, [300, 500], "in order: the totals grow");
    }
    let text = metrics_text(&client, proxy.admin).await;
    assert_eq!(
        metric(&text, "payproxy_events_delivered_total", &[]),
        Some(12.0),
        "the restarted process delivered all 12"
    );
}

const ADMIN_TOKEN: &str = "admin-token-webhooks-3b9d";

/// An admin request, with the bearer `token` when given.
async fn admin(
    client: &HttpClient,
    env: &Env,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client
        .send(method, &env.admin_url(path), &headers, Bytes::new())
        .await
}

async fn metrics_of(client: &HttpClient, env: &Env) -> String {
    String::from_utf8_lossy(&client.get(&env.admin_url("/metrics")).await.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_given_up_events_and_redelivers_them_with_the_token() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    receiver.answer(500);
    let mut config = with_webhooks(payments_config(&sim), &receiver.url(), SECRET.into());
    // Given up one second after the change: both events of the payment fail fast.
    config["routes"][0]["webhooks"]["retry"] =
        json!({ "initial_ms": 50, "max_ms": 100, "give_up_after_s": 1 });
    config["admin"] = json!({ "addr": "127.0.0.1:0", "token": ADMIN_TOKEN });
    let env = Env::start(config).await;
    let client = HttpClient::default();
    let paid = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "adm-1")],
            &form_with(card_from("DE", "1000", "ADM-1"), &[]),
        )
        .await;
    paid.assert_status(200);
    let pi = paid.json()["id"].as_str().unwrap().to_string();

    // Token required.
    for path in ["/admin/events", "/admin/events?state=failed"] {
        admin(&client, &env, Method::GET, path, None)
            .await
            .assert_status(401);
        admin(&client, &env, Method::GET, path, Some("wrong"))
            .await
            .assert_status(401);
    }
    admin(
        &client,
        &env,
        Method::POST,
        "/admin/events/evt_x/redeliver",
        None,
    )
    .await
    .assert_status(401);
    admin(
        &client,
        &env,
        Method::GET,
        "/admin/events?state=delivered",
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_status(400);

    let mut failed = Value::Null;
    eventually(
        Duration::from_secs(20),
        "both events given up",
        async || {
            let reply = admin(
                &client,
                &env,
                Method::GET,
                "/admin/events?state=failed",
                Some(ADMIN_TOKEN),
            )
            .await;
            reply.assert_status(200);
            failed = reply.json();
            failed["events"].as_array().unwrap().len() == 2
        },
    )
    .await;
    let text = failed.to_string();
    assert!(!text.contains(SECRET), "secret in {text}");
    assert!(!text.contains("\"body\""), "a body in {text}");
    let events = failed["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["payment_intent.created", "payment_intent.succeeded"]
    );
    let mut attempts = 0;
    for e in events {
        assert_eq!(e["payment"], pi.as_str(), "{e}");
        assert_eq!(e["route"], "payments");
        assert_eq!(e["state"], "failed");
        assert_eq!(e["endpoint"], receiver.url().as_str());
        assert_eq!(e["last_error"], "endpoint answered 500", "{e}");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        attempts += e["attempts"].as_u64().unwrap();
    }
    assert!(attempts >= 2);
    assert_eq!(failed["counts"]["payments"]["failed"], 2);
    assert_eq!(
        receiver.deliveries().len() as u64,
        attempts,
        "every attempt reached the endpoint"
    );
    let pending = admin(
        &client,
        &env,
        Method::GET,
        "/admin/events",
        Some(ADMIN_TOKEN),
    )
    .await
    .json();
    assert_eq!(pending["events"].as_array().unwrap().len(), 0, "{pending}");

    // Metrics, by value: each failed attempt, each event given up, the undelivered gauge.
    let failures = |text: &str, reason: &str| {
        metric(
            text,
            "payproxy_events_delivery_failures_total",
            &[("route", "payments"), ("reason", reason)],
        )
    };
    let text = metrics_of(&client, &env).await;
    assert_eq!(failures(&text, "status"), Some(attempts as f64));
    assert_eq!(failures(&text, "gave_up"), Some(2.0));
    assert_eq!(metric(&text, "payproxy_events_delivered_total", &[]), None);
    eventually(Duration::from_secs(10), "pending gauge at 2", async || {
        let text = metrics_of(&client, &env).await;
        metric(&text, "payproxy_events_pending", &[("route", "payments")]) == Some(2.0)
    })
    .await;

    // Redelivered on request, once the endpoint works: only the event asked for.
    receiver.answer(200);
    let succeeded = events[1]["id"].as_str().unwrap().to_string();
    let requeued = admin(
        &client,
        &env,
        Method::POST,
        &format!("/admin/events/{succeeded}/redeliver"),
        Some(ADMIN_TOKEN),
    )
    .await;
    requeued.assert_status(200);
    assert_eq!(requeued.json()["requeued"], 1);
    admin(
        &client,
        &env,
        Method::POST,
        "/admin/events/evt_nope/redeliver",
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_status(404);
    let accepted = receiver
        .wait_accepted(Duration::from_secs(20), "the redelivered event", |a| {
            !a.is_empty()
        })
        .await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].id_and_type(),
        (succeeded.clone(), "payment_intent.succeeded".into())
    );
    assert!(
        accepted[0].stripe_signature_ok(SECRET),
        "re-signed at redelivery"
    );
    eventually(
        Duration::from_secs(10),
        "delivered metrics and gauge",
        async || {
            let text = metrics_of(&client, &env).await;
            metric(
                &text,
                "payproxy_events_delivered_total",
                &[("route", "payments")],
            ) == Some(1.0)
                && metric(&text, "payproxy_event_delivery_seconds_count", &[]) == Some(1.0)
                && metric(&text, "payproxy_events_pending", &[("route", "payments")]) == Some(1.0)
        },
    )
    .await;
    let failed = admin(
        &client,
        &env,
        Method::GET,
        "/admin/events?state=failed",
        Some(ADMIN_TOKEN),
    )
    .await
    .json();
    let left: Vec<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["payment_intent.created"]);
}

/// Three instances sharing one Postgres: payments spread over them, every event delivered
/// exactly once (the instances skip each other's claims), including the events an instance
/// held claims on when it was `kill -9`'d: retaken by the others once its leases lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_deliver_each_event_once_and_retake_a_dead_ones_claims() {
    init_logs();
    let Some(pg) = payproxy_e2e::postgres::PgCluster::start() else {
        return;
    };
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    const LEASE_MS: u64 = 4_000;
    let mut proxies = Vec::new();
    for i in 0..3 {
        let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
        let sub = dir.path().join(format!("i{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let mut config = with_webhooks(payments_config(&sim), &receiver.url(), SECRET.into());
        config["listeners"] = json!([{ "addr": listen.addr() }]);
        config["admin"] = json!({ "addr": admin.addr() });
        config["state"] = json!({
            "kind": "postgres",
            "postgres": { "url": pg.url(), "lease_ms": 1_500, "pool_size": 4,
                          "connect_timeout_ms": 2_000 },
        });
        config["routes"][0]["webhooks"]["timeout_ms"] = 3_000.into();
        config["webhook_delivery"] = json!({ "poll_ms": 20, "lease_ms": LEASE_MS });
        let path = write_config(&sub, &config);
        proxies.push(ChildProxy::start(&path, &sub.join("proxy.log"), listen, admin).await);
    }
    let client = HttpClient::default();
    let mut instance_ids = Vec::new();
    for proxy in &proxies {
        let status = client
            .get(&format!("http://{}/admin/status", proxy.admin))
            .await
            .json();
        instance_ids.push(status["state"]["instance"].as_str().unwrap().to_string());
    }
    let pay = async |proxy: &ChildProxy, order: &str| -> String {
        let paid = client
            .post_form(
                &proxy.url("/v1/payment_intents"),
                &[("idempotency-key", &format!("k-{order}"))],
                &form_with(card_from("DE", "1000", order), &[]),
            )
            .await;
        paid.assert_status(200);
        paid.json()["id"].as_str().unwrap().to_string()
    };

    // Payments spread over the instances; all three deliver.
    let mut payments = Vec::new();
    for n in 0..6 {
        payments.push(pay(&proxies[n % 3], &format!("PG-{n}")).await);
    }
    receiver
        .wait_accepted(Duration::from_secs(30), "12 events", |a| a.len() >= 12)
        .await;

    // The endpoint hangs: the instances claim events and wait for answers. One of them that
    // holds claims is killed.
    receiver.hold(true);
    for n in 6..9 {
        payments.push(pay(&proxies[n % 3], &format!("PG-{n}")).await);
    }
    let mut claims: Vec<(String, String, u64)> = Vec::new();
    eventually(
        Duration::from_secs(20),
        "a claim held by an instance",
        async || {
            let listed = client
                .get(&format!("http://{}/admin/events", proxies[0].admin))
                .await
                .json();
            claims = listed["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| {
                    Some((
                        e["id"].as_str()?.to_string(),
                        e["claimed_by"].as_str()?.to_string(),
                        e["lease_until_ms"].as_u64()?,
                    ))
                })
                .collect();
            !claims.is_empty()
        },
    )
    .await;
    let holder = claims[0].1.clone();
    let victim = instance_ids.iter().position(|id| *id == holder).unwrap();
    let victims_claims: Vec<(String, u64)> = claims
        .iter()
        .filter(|c| c.1 == holder)
        .map(|c| (c.0.clone(), c.2))
        .collect();
    proxies[victim].kill9();
    receiver.hold(false);

    let accepted = receiver
        .wait_accepted(Duration::from_secs(40), "all 18 events", |a| a.len() >= 18)
        .await;
    // Bounded look for a late duplicate: a few delivery polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = {
        let now = receiver.accepted();
        assert!(now.len() >= accepted.len());
        now
    };
    let mut per_id = BTreeMap::new();
    for d in &accepted {
        assert!(d.stripe_signature_ok(SECRET));
        *per_id.entry(d.id_and_type().0).or_insert(0) += 1;
    }
    assert_eq!(per_id.len(), 18, "distinct events: {per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "delivered twice: {per_id:?}"
    );
    for pi in &payments {
        assert_eq!(
            types_for(&accepted, pi),
            ["payment_intent.created", "payment_intent.succeeded"],
            "payment {pi}"
        );
    }
    // The dead instance's claims were retaken by the others, after its leases lapsed.
    for (id, lease_until_ms) in &victims_claims {
        let delivered = accepted
            .iter()
            .find(|d| d.id_and_type().0 == *id)
            .unwrap_or_else(|| panic!("{id}, claimed by the killed instance, was never delivered"));
        assert!(
            delivered.at_ms >= *lease_until_ms,
            "{id} delivered at {} before its lease lapsed at {lease_until_ms}",
            delivered.at_ms
        );
    }
}

/// Issue 10 point 4 ("No webhook? Ask"): a Pix payment the shopper pays while the storefront
/// never retrieves it, and no notification comes, is queried at the provider by payproxy
/// itself and resolves; its `payment_intent.succeeded` reaches the merchant signed. A Pix
/// payment nobody pays is queried `max_queries` times at most, then reported once. Queries
/// the provider answers with errors meanwhile change nothing: both stay `requires_action`
/// with their QR code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_payments_are_queried_until_they_resolve_or_their_queries_run_out() {
    const MAX_QUERIES: u32 = 6;
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let receiver = Receiver::start();
    let mut config = with_webhooks(payments_config(&sim), &receiver.url(), SECRET.into());
    config["routes"][0]["pending_queries"] =
        json!({ "enabled": true, "after_ms": 1000, "every_ms": 1000, "max_queries": MAX_QUERIES });
    let env = Env::start(config).await;
    let client = HttpClient::default();
    let url = env.url("/v1/payment_intents");

    let create = |key: &'static str, order: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let reply = client
                .post_form(
                    &url,
                    &[("idempotency-key", key)],
                    &pix_shopper("529.982.247-25", order),
                )
                .await;
            reply.assert_status(200);
            let intent = reply.json();
            assert_eq!(intent["status"], "requires_action", "{intent}");
            intent["id"].as_str().unwrap().to_string()
        }
    };
    let paid = create("pq-1", "PQ-1").await;
    let unpaid = create("pq-2", "PQ-2").await;
    let txid = |order: &str| {
        sim.ledger("pix")
            .into_iter()
            .find(|c| c.merchant_reference.as_deref() == Some(order))
            .unwrap()
            .id
    };

    // The provider's status endpoint fails for a while (500: proves nothing): the queries
    // of that time learn nothing and change nothing.
    sim.set_faults("pix", Faults::error(500));
    let queried = |result: &'static str| {
        let (client, env) = (&client, &env);
        async move {
            metric(
                &metrics_of(client, env).await,
                "payproxy_pending_queries_total",
                &[("route", "payments"), ("result", result)],
            )
            .unwrap_or(0.0)
        }
    };
    eventually(
        Duration::from_secs(30),
        "queries during the fault",
        || async { queried("pending").await >= 2.0 },
    )
    .await;
    sim.set_faults("pix", Faults::default());
    for id in [&paid, &unpaid] {
        let intent = client
            .get(&env.url(&format!("/v1/payment_intents/{id}")))
            .await
            .json();
        assert_eq!(intent["status"], "requires_action", "{intent}");
        assert_eq!(
            intent["next_action"]["type"], "pix_display_qr_code",
            "{intent}"
        );
    }

    // The shopper pays PQ-1 at the bank; nobody tells payproxy.
    let pay = client
        .send(
            Method::POST,
            &format!("{}/pix/v2/cob/{}/pay", sim.base_url("pix"), txid("PQ-1")),
            &[],
            Bytes::new(),
        )
        .await;
    assert!(pay.status.is_success(), "{:?}", pay.json());
    let accepted = receiver
        .wait_accepted(Duration::from_secs(30), "payment_intent.succeeded", |a| {
            types_for(a, &paid).contains(&"payment_intent.succeeded".to_string())
        })
        .await;
    let succeeded = accepted
        .iter()
        .find(|d| payment_of(d) == paid && d.id_and_type().1 == "payment_intent.succeeded")
        .unwrap();
    assert!(succeeded.stripe_signature_ok(SECRET));
    assert_eq!(object(succeeded)["status"], "succeeded");
    assert_eq!(object(succeeded)["amount"], 5000);

    // PQ-2 runs out of queries: reported once, then left alone.
    let route = [("route", "payments"), ("result", "gave_up")];
    eventually(Duration::from_secs(30), "PQ-2 given up", || async {
        metric(
            &metrics_of(&client, &env).await,
            "payproxy_pending_queries_total",
            &route,
        ) == Some(1.0)
    })
    .await;
    let requests = sim.request_count("pix");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        sim.request_count("pix"),
        requests,
        "a settled or given-up payment was queried"
    );
    let metrics = metrics_of(&client, &env).await;
    let count = |result| {
        metric(
            &metrics,
            "payproxy_pending_queries_total",
            &[("route", "payments"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("gave_up"), 1.0);
    assert_eq!(count("resolved"), 1.0, "{metrics}");
    assert_eq!(count("failed"), 0.0, "{metrics}");
    // PQ-2's queries (all answered pending) plus PQ-1's before it was paid: each payment at
    // most MAX_QUERIES times, PQ-2 at least once per sweep of its window.
    let pending = count("pending");
    assert!(
        pending >= 2.0 && pending <= f64::from(2 * MAX_QUERIES - 1),
        "{pending} pending queries"
    );
    // Nothing was ever reported as processing: the failed queries did not move either.
    for id in [&paid, &unpaid] {
        assert!(
            !types_for(&receiver.deliveries(), id)
                .contains(&"payment_intent.processing".to_string()),
            "{:?}",
            types_for(&receiver.deliveries(), id)
        );
    }

    // The records say so; the unpaid one is still waiting for its shopper.
    let retrieved = |id: String| {
        let client = client.clone();
        let url = env.url(&format!("/v1/payment_intents/{id}"));
        async move { client.get(&url).await.json()["status"].clone() }
    };
    assert_eq!(retrieved(paid).await, "succeeded");
    assert_eq!(retrieved(unpaid.clone()).await, "requires_action");
    assert!(
        types_for(&receiver.deliveries(), &unpaid)
            .iter()
            .all(|t| t == "payment_intent.created" || t == "payment_intent.requires_action"),
        "{:?}",
        types_for(&receiver.deliveries(), &unpaid)
    );
}
