//! Circuit-breaker settings: typed, `deny_unknown_fields`, every field defaulted.

use serde::Deserialize;

/// When a provider's breaker opens, how long it stays open and how it closes again.
///
/// Every field has a default, so `{}` is a complete configuration. Changing it on a reload
/// ([`super::HealthBook::set_config`]) keeps each provider's current state and samples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Length of the sliding window that success rate, latency percentiles and the
    /// failure-rate rule look at, in milliseconds. Default 30 000.
    pub window_ms: u64,
    /// At most this many of the newest samples are kept in the window, whatever their age.
    /// Default 200.
    pub window_max_samples: usize,
    /// Below this many request samples in the window the failure-rate rule does not open the
    /// breaker (one failure out of three is noise, not an outage); active checks never count
    /// toward it, so checks alone never make a window. Default 20.
    pub min_volume: u32,
    /// The breaker opens when failures / samples in the window is strictly above this
    /// (0.0–1.0), with at least `min_volume` request samples; active checks count in the
    /// rate. Default 0.05 (5 %).
    pub failure_rate: f64,
    /// The breaker opens after this many failures in a row, whatever the volume; 0 turns the
    /// rule off. Default 5.
    pub consecutive_failures: u32,
    /// How long an open breaker rejects everything before it lets probes through
    /// (half-open), in milliseconds. Each failed probe starts a new period. Default 5 000.
    pub open_ms: u64,
    /// How many probe requests may be in flight at once while half-open. Default 1.
    pub half_open_probes: u32,
    /// Successful probes in a row that close the breaker again. Default 3.
    pub close_after: u32,
    /// An attempt still waiting for its answer after this long counts as a failure at once,
    /// so a provider that hangs opens its breaker before the first timeout fires (its final
    /// result is recorded as well). 0 (default) turns the rule off.
    pub slow_call_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 30_000,
            window_max_samples: 200,
            min_volume: 20,
            failure_rate: 0.05,
            consecutive_failures: 5,
            open_ms: 5_000,
            half_open_probes: 1,
            close_after: 3,
            slow_call_ms: 0,
        }
    }
}

/// A breaker setting that cannot work, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BreakerConfigError {
    /// The field, as spelled in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl BreakerConfig {
    /// Checks values serde cannot: ranges and settings that would leave a breaker stuck.
    ///
    /// [`super::HealthBook`] still copes with an unchecked config (it treats zero probe
    /// slots, zero `close_after` and a zero-sample window as one), but a config file with
    /// such values is a mistake worth reporting.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        let err = |field, message: &str| {
            Err(BreakerConfigError {
                field,
                message: message.to_string(),
            })
        };
        if self.window_ms == 0 {
            return err("window_ms", "must be at least 1");
        }
        if self.window_max_samples == 0 {
            return err("window_max_samples", "must be at least 1");
        }
        if usize::try_from(self.min_volume).is_ok_and(|v| v > self.window_max_samples) {
            return err(
                "min_volume",
                "is larger than window_max_samples, so the failure-rate rule could never open the breaker",
            );
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return err("failure_rate", "must be between 0.0 and 1.0");
        }
        if self.half_open_probes == 0 {
            return err(
                "half_open_probes",
                "must be at least 1, or a half-open breaker could never close",
            );
        }
        if self.close_after == 0 {
            return err("close_after", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_defaults() {
        let config: BreakerConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(config, BreakerConfig::default());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<BreakerConfig>(r#"{"open_msec": 10}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("open_msec"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let bad = [
            (
                BreakerConfig {
                    failure_rate: 1.5,
                    ..Default::default()
                },
                "failure_rate",
            ),
            (
                BreakerConfig {
                    half_open_probes: 0,
                    ..Default::default()
                },
                "half_open_probes",
            ),
            (
                BreakerConfig {
                    close_after: 0,
                    ..Default::default()
                },
                "close_after",
            ),
            (
                BreakerConfig {
                    window_ms: 0,
                    ..Default::default()
                },
                "window_ms",
            ),
            (
                BreakerConfig {
                    window_max_samples: 0,
                    ..Default::default()
                },
                "window_max_samples",
            ),
            (
                BreakerConfig {
                    min_volume: 201,
                    ..Default::default()
                },
                "min_volume",
            ),
        ];
        for (config, field) in bad {
            assert_eq!(config.validate().map_err(|e| e.field), Err(field));
        }
    }
}
