//! Instrument: what the home provider knows about a card token (network, issuing country,
//! funding, 3-D Secure support), asked once per token and cached, so routing and compliance
//! rules see the card while the storefront sends only its own API's parameters.
//!
//! The storefront dialect builds the lookup request and reads the answer (`card-lookup`,
//! `card-details`); the host sends it to the route's home provider with that provider's
//! credentials. A failed lookup is logged and the payment goes on without the details: the
//! token still only goes to providers that can charge it.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::plugin::storefront::CardDetails;
use crate::plugin::types::PaymentMethod;

/// How long learned details are trusted.
const CARD_TTL: Duration = Duration::from_secs(600);
/// Tokens remembered at most; past that, expired entries go, then the oldest half.
const CARD_CACHE_MAX: usize = 10_000;
/// Time allowed for a lookup (it delays the payment).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What was learned about a token, and when.
type Learned = (Instant, Option<CardDetails>);

/// Card details by (home provider, token).
#[derive(Default)]
pub(super) struct CardCache {
    entries: Mutex<HashMap<(String, String), Learned>>,
}

impl CardCache {
    fn get(&self, home: &str, token: &str) -> Option<Option<CardDetails>> {
        let entries = self.entries.lock().ok()?;
        let (at, details) = entries.get(&(home.to_string(), token.to_string()))?;
        (at.elapsed() < CARD_TTL).then(|| details.clone())
    }

    fn put(&self, home: &str, token: &str, details: Option<CardDetails>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CARD_CACHE_MAX {
            entries.retain(|_, (at, _)| at.elapsed() < CARD_TTL);
            if entries.len() >= CARD_CACHE_MAX {
                let mut ages: Vec<Instant> = entries.values().map(|(at, _)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                entries.retain(|_, (at, _)| *at > cut);
            }
        }
        entries.insert(
            (home.to_string(), token.to_string()),
            (Instant::now(), details),
        );
    }
}

impl Payments {
    /// Fill a card payment's network, issuing country and last digits from the home
    /// provider, where the storefront did not send them. Returns what was learned.
    pub(super) async fn instrument(
        &self,
        ctx: &Ctx<'_>,
        payment: &mut Payment,
    ) -> Option<CardDetails> {
        let Some(PaymentMethod::Card(card)) = &mut payment.method else {
            return None;
        };
        let home = ctx.route.home.as_deref()?;
        let details = match self.cards.get(home, &card.token) {
            Some(cached) => cached,
            None => {
                let learned = self.look_up(ctx, home, &card.token).await;
                if let Ok(details) = &learned {
                    self.cards.put(home, &card.token, details.clone());
                }
                learned.ok().flatten()
            }
        }?;
        if card.network.is_none() {
            card.network = details.brand.clone();
        }
        if card.issuer_country.is_none() {
            card.issuer_country = details.country.clone();
        }
        if card.last4.is_none() {
            card.last4 = details.last4.clone();
        }
        Some(details)
    }

    /// Ask the home provider. `Err`: no answer worth caching (transport or plugin failure).
    async fn look_up(
        &self,
        ctx: &Ctx<'_>,
        home: &str,
        token: &str,
    ) -> Result<Option<CardDetails>, ()> {
        let Some(entry) = ctx.snapshot.providers.get(home) else {
            return Err(());
        };
        let Ok(credentials) = entry.credentials_now().await else {
            return Err(());
        };
        let request = match ctx.ingress.card_lookup(token, &credentials) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(None),
            Err(failure) => {
                tracing::warn!(route = %ctx.route.name, plugin = %failure.plugin, detail = %failure.detail, "card lookup: dialect failed");
                return Err(());
            }
        };
        let Some(outbound) = outbound_request(&entry.upstream, request) else {
            return Err(());
        };
        let started = Instant::now();
        let sent = tokio::time::timeout(LOOKUP_TIMEOUT, entry.upstream.send(outbound)).await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(failed)) => {
                tracing::warn!(route = %ctx.route.name, provider = %home, code = %failed.error.code, "card lookup at the home provider failed");
                return Err(());
            }
            Err(_) => {
                tracing::warn!(route = %ctx.route.name, provider = %home, "card lookup at the home provider timed out");
                return Err(());
            }
        };
        let (parts, body) = response.into_parts();
        let remaining = LOOKUP_TIMEOUT.saturating_sub(started.elapsed());
        let bytes =
            match tokio::time::timeout(remaining, Limited::new(body, MAX_PROVIDER_BODY).collect())
                .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => return Err(()),
            };
        let status = parts.status;
        match ctx.ingress.card_details(&response_view(&parts, &bytes)) {
            Ok(details) => {
                if details.is_none() {
                    tracing::debug!(route = %ctx.route.name, provider = %home, status = status.as_u16(), "card lookup: the home provider knows nothing usable about this token");
                }
                Ok(details)
            }
            Err(failure) => {
                tracing::warn!(route = %ctx.route.name, plugin = %failure.plugin, detail = %failure.detail, "card lookup: dialect failed to read the answer");
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(country: &str) -> Option<CardDetails> {
        Some(CardDetails {
            brand: Some("visa".into()),
            country: Some(country.into()),
            funding: Some("credit".into()),
            last4: Some("4242".into()),
            three_d_secure_supported: Some(true),
        })
    }

    #[test]
    fn cache_is_per_home_and_bounded() {
        let cache = CardCache::default();
        cache.put("a", "pm_1", details("FR"));
        cache.put("b", "pm_1", None);
        assert_eq!(cache.get("a", "pm_1"), Some(details("FR")));
        assert_eq!(
            cache.get("b", "pm_1"),
            Some(None),
            "a known 'nothing' is cached too"
        );
        assert_eq!(cache.get("a", "pm_2"), None);
        for i in 0..CARD_CACHE_MAX + 10 {
            cache.put("a", &format!("pm_x{i}"), None);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CARD_CACHE_MAX, "{len}");
    }
}
