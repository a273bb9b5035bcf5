//! Signed storefront events out (issue 10 point 3): each payment state change the storefront
//! dialect renders an event for is written to the outbox with the payment record (same
//! transaction, see `store::outbox` and `payment::events`), then delivered from there by a
//! background task (`deliver`) to the route's endpoints, signed by the dialect at each
//! attempt, retried with exponential backoff and jitter up to the give-up age, in order per
//! payment, by exactly one instance at a time (leased claims).

use std::time::Duration;

use crate::config::{WebhookRetryConfig, WebhooksConfig};

pub(crate) mod deliver;

/// A route's webhooks, with secrets resolved.
#[derive(Debug)]
pub struct Webhooks {
    /// Endpoints in config order.
    pub endpoints: Vec<Endpoint>,
    /// Retry schedule.
    pub retry: WebhookRetryConfig,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

/// A merchant endpoint.
pub struct Endpoint {
    /// Where events are POSTed.
    pub url: String,
    /// The signing secret (never logged: `Debug` hides it).
    secret: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The signing secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl Webhooks {
    /// The route's webhooks with each secret resolved. An error names the field under
    /// `webhooks` and says why (an unset variable is named, never a value).
    pub fn resolve(config: &WebhooksConfig) -> Result<Webhooks, (String, String)> {
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let field = || format!("endpoints[{j}].secret");
                let secret = e.secret.resolve().map_err(|m| (field(), m))?;
                if secret.is_empty() {
                    return Err((field(), "is empty".to_string()));
                }
                Ok(Endpoint {
                    url: e.url.clone(),
                    secret,
                })
            })
            .collect::<Result<_, (String, String)>>()?;
        Ok(Webhooks {
            endpoints,
            retry: config.retry.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    /// The endpoint with `url`, if still configured.
    pub fn endpoint(&self, url: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.url == url)
    }
}

/// The delay before the next attempt after `attempts` failed ones (1, 2, …): `initial_ms`
/// doubled per attempt, at most `max_ms`, then jittered to between half and all of it
/// (`jitter` in [0, 1)), so endpoints coming back are not hit by every event at once.
pub fn backoff_ms(retry: &WebhookRetryConfig, attempts: u32, jitter: f64) -> u64 {
    let exp = attempts.saturating_sub(1).min(40);
    let full = retry
        .initial_ms
        .saturating_mul(1u64 << exp)
        .min(retry.max_ms);
    let half = full / 2;
    half + ((full - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let retry = WebhookRetryConfig {
            initial_ms: 100,
            max_ms: 1_000,
            give_up_after_s: 10,
        };
        assert_eq!(backoff_ms(&retry, 1, 0.999_999), 99);
        assert_eq!(backoff_ms(&retry, 1, 0.0), 50);
        assert_eq!(backoff_ms(&retry, 3, 0.0), 200);
        assert_eq!(backoff_ms(&retry, 30, 0.0), 500);
        assert!(backoff_ms(&retry, 30, 0.999) <= 1_000);
    }
}
