//! Host-managed OAuth access tokens (issue 13, point 5), end to end: the simulated Pix PSP
//! wants a bearer token from its own token endpoint (client credentials grant) that expires
//! in 4 s; payproxy fetches it once, reuses it, refreshes it ahead of its expiry, rides out a
//! failed refresh by retrying, takes a rotated client secret from its file on reload, and
//! never writes the secret or a token to its log.

use std::time::{Duration, Instant};

use payproxy_e2e::chaos::{eventually, metric, metrics_text, ChildProxy, ReservedPort};
use payproxy_e2e::*;
use provider_sim::OAuthSettings;
use serde_json::json;

const CLIENT_ID: &str = "payproxy-pix-client";
const SECRET: &str = "pix-client-secret-0f3a9c";
const ROTATED: &str = "pix-client-secret-rotated-77d1";

fn settings(secret: &str, fail_next: u32) -> OAuthSettings {
    OAuthSettings {
        require: true,
        client_id: CLIENT_ID.into(),
        client_secret: secret.into(),
        lifetime_s: 4,
        fail_next,
    }
}

/// A Pix payment through the proxy; its HTTP status.
async fn pay(client: &HttpClient, proxy: &ChildProxy, order: &str) -> u16 {
    let reply = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[],
            &pix_shopper("529.982.247-25", order),
        )
        .await;
    assert_eq!(
        reply.provider(),
        Some("pix"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.status.as_u16()
}

/// Pays every 250 ms for `span`; every payment must be taken.
async fn pay_for(client: &HttpClient, proxy: &ChildProxy, tag: &str, span: Duration) -> usize {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < span && n < 200 {
        let status = pay(client, proxy, &format!("{tag}-{n}")).await;
        assert_eq!(status, 200, "{tag}-{n}\n{}", proxy.log_tail());
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_are_fetched_once_reused_refreshed_ahead_and_never_logged() {
    init_logs();
    let sim = Simulator::start(&["stripe-like", "adyen", "grabpay", "dana", "ideal", "pix"])
        .await
        .unwrap();
    sim.set_oauth("pix", settings(SECRET, 0));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pix-client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();

    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let mut config = payments_config(&sim);
    config["listeners"] = json!([{ "addr": listen.addr() }]);
    config["admin"] = json!({ "addr": admin.addr() });
    config["state"] = json!({ "kind": "memory" });
    let pix = &mut config["providers"]["pix"];
    pix["credentials"]
        .as_object_mut()
        .unwrap()
        .remove("api_key");
    pix["oauth2"] = json!({
        "token_url": format!("{}/oauth/token", sim.base_url("pix")),
        "client_id": CLIENT_ID,
        "client_secret": { "file": secret_file },
        "credential": "api_key",
        "refresh_before_ms": 2_000,
    });
    let path = write_config(dir.path(), &config);
    let log = dir.path().join("proxy.log");
    // At debug, so "never logged" covers everything payproxy says.
    let proxy = ChildProxy::start_logging(&path, &log, listen, admin, "debug").await;
    let client = HttpClient::default();

    // Fetched once at start, then reused by every payment within its lifetime.
    eventually(Duration::from_secs(10), "the first token", || async {
        !sim.oauth_stats("pix").issued.is_empty()
    })
    .await;
    for n in 0..3 {
        assert_eq!(pay(&client, &proxy, &format!("BR-{n}")).await, 200);
    }
    let stats = sim.oauth_stats("pix");
    assert_eq!(stats.issued.len(), 1, "{stats:?}");
    assert_eq!(stats.rejected_calls, 0, "{stats:?}");

    // Across several lifetimes: refreshed ahead of expiry, so no call ever carries an
    // expired token (the simulator would refuse it with 401).
    let paid = pay_for(&client, &proxy, "BR-R", Duration::from_secs(9)).await;
    let stats = sim.oauth_stats("pix");
    assert!(stats.issued.len() >= 3, "refreshed: {stats:?}");
    // 4 s tokens refreshed 2 s ahead over ~9 s: not one per payment.
    assert!(
        stats.issued.len() <= 8,
        "{} tokens for {paid} payments",
        stats.issued.len()
    );
    assert_eq!(stats.rejected_calls, 0, "{stats:?}");

    // The token endpoint fails twice: the current token keeps serving, the refresh is
    // retried, and payments never notice.
    let before = sim.oauth_stats("pix").issued.len();
    sim.set_oauth("pix", settings(SECRET, 2));
    pay_for(&client, &proxy, "BR-F", Duration::from_secs(5)).await;
    let stats = sim.oauth_stats("pix");
    assert_eq!(stats.failed, 2, "{stats:?}");
    assert!(
        stats.issued.len() > before,
        "refreshed after the failures: {stats:?}"
    );
    assert_eq!(stats.rejected_calls, 0, "{stats:?}");
    let text = metrics_text(&client, proxy.admin).await;
    assert_eq!(
        metric(
            &text,
            "payproxy_oauth_token_fetches_total",
            &[("provider", "pix"), ("result", "refused")]
        ),
        Some(2.0)
    );
    // Every token the endpoint issued is counted once it arrived (one may be on its way
    // while the metrics are read: refreshes run every 2 s).
    let ok = metric(
        &text,
        "payproxy_oauth_token_fetches_total",
        &[("provider", "pix"), ("result", "ok")],
    )
    .expect("ok fetches counted") as usize;
    let issued_after = sim.oauth_stats("pix").issued.len();
    assert!(
        stats.issued.len() - 1 <= ok && ok <= issued_after,
        "{ok} counted, {} to {issued_after} issued",
        stats.issued.len()
    );

    // The client secret is rotated: the file is re-read on reload, and the new secret
    // fetches the tokens from then on.
    std::fs::write(&secret_file, format!("{ROTATED}\n")).unwrap();
    sim.set_oauth("pix", settings(ROTATED, 0));
    let before = sim.oauth_stats("pix").issued.len();
    let reloaded = client
        .post_form(&format!("http://{}/admin/reload", proxy.admin), &[], "")
        .await;
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
    eventually(
        Duration::from_secs(10),
        "a token for the rotated secret",
        || async { sim.oauth_stats("pix").issued.len() > before },
    )
    .await;
    pay_for(&client, &proxy, "BR-S", Duration::from_secs(2)).await;

    // Nothing secret in the log: not the client secrets, not one token.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("oauth token fetched"), "{logged}");
    for secret in [SECRET, ROTATED] {
        assert!(!logged.contains(secret), "client secret in the log");
    }
    for token in sim.oauth_stats("pix").issued {
        assert!(!logged.contains(&token), "a token in the log");
    }
}
