//! Fault injection for one provider: added latency, a deterministic share of errors, outage.

use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

/// The faults a simulated provider injects. Setting new faults replaces the old ones.
///
/// Faults apply to every request except the `/__sim/` control API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Sleep this long before answering (default 0).
    pub latency_ms: u64,
    /// Status of injected errors (default 500 when only `error_rate` is set). Setting it with
    /// `error_rate` 0 fails every request: a status without a rate means "always".
    pub error_status: Option<u16>,
    /// Share of requests (0..=1) answered with an injected error. Deterministic: with rate
    /// 1/k exactly every k-th request fails, counting from when the faults were set.
    pub error_rate: f64,
    /// Accept, then drop the connection without answering (on accept, or on the next request
    /// of a connection already open). Requests dropped this way are not counted.
    pub outage: bool,
}

impl Faults {
    /// Every request fails with `status`.
    pub fn error(status: u16) -> Self {
        Faults {
            error_status: Some(status),
            error_rate: 1.0,
            ..Faults::default()
        }
    }

    /// Every connection is dropped without an answer.
    pub fn outage() -> Self {
        Faults {
            outage: true,
            ..Faults::default()
        }
    }

    /// Every answer is delayed by `ms` milliseconds.
    pub fn latency(ms: u64) -> Self {
        Faults {
            latency_ms: ms,
            ..Faults::default()
        }
    }

    /// The share of requests to fail, after applying the "status without rate" rule.
    fn effective_rate(&self) -> f64 {
        if self.error_rate.is_nan() {
            return 0.0;
        }
        if self.error_rate <= 0.0 && self.error_status.is_some() {
            return 1.0;
        }
        self.error_rate.clamp(0.0, 1.0)
    }

    /// The injected error status; out-of-range codes fall back to 500.
    fn status(&self) -> StatusCode {
        self.error_status
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// What the faults decide for one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Admission {
    /// Drop the connection without an answer.
    Drop,
    /// Serve it, after `latency`, answering `fail` instead when set.
    Serve {
        latency: Duration,
        fail: Option<StatusCode>,
    },
}

/// Current faults plus the counter that makes the error share deterministic.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    faults: Faults,
    seen: u64,
}

impl FaultState {
    /// Replace the faults and restart the error counter.
    pub(crate) fn set(&mut self, faults: Faults) {
        self.faults = faults;
        self.seen = 0;
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn outage(&self) -> bool {
        self.faults.outage
    }

    /// Decide the fate of the next request.
    pub(crate) fn admit(&mut self) -> Admission {
        if self.faults.outage {
            return Admission::Drop;
        }
        let rate = self.faults.effective_rate();
        let n = self.seen as f64;
        self.seen += 1;
        // Request n fails when the running quota floor(n * rate) steps up: exactly every
        // (1/rate)-th request, with no randomness for tests to fight.
        let fail = ((n + 1.0) * rate).floor() > (n * rate).floor();
        Admission::Serve {
            latency: Duration::from_millis(self.faults.latency_ms),
            fail: fail.then(|| self.faults.status()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(faults: Faults, requests: usize) -> Vec<bool> {
        let mut state = FaultState::default();
        state.set(faults);
        (0..requests)
            .map(|_| match state.admit() {
                Admission::Serve { fail, .. } => fail.is_some(),
                Admission::Drop => panic!("unexpected drop"),
            })
            .collect()
    }

    #[test]
    fn no_faults_never_fail() {
        assert_eq!(failures(Faults::default(), 5), vec![false; 5]);
    }

    #[test]
    fn rate_fails_every_kth_request() {
        let half = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        assert_eq!(failures(half, 4), vec![false, true, false, true]);
        let third = Faults {
            error_rate: 1.0 / 3.0,
            ..Faults::default()
        };
        assert_eq!(
            failures(third, 6),
            vec![false, false, true, false, false, true]
        );
    }

    #[test]
    fn status_without_rate_means_always() {
        let faults = Faults {
            error_status: Some(503),
            ..Faults::default()
        };
        let mut state = FaultState::default();
        state.set(faults);
        assert_eq!(
            state.admit(),
            Admission::Serve {
                latency: Duration::ZERO,
                fail: Some(StatusCode::SERVICE_UNAVAILABLE)
            }
        );
    }

    #[test]
    fn invalid_status_falls_back_to_500() {
        assert_eq!(
            Faults::error(42).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn outage_drops() {
        let mut state = FaultState::default();
        state.set(Faults::outage());
        assert_eq!(state.admit(), Admission::Drop);
    }

    #[test]
    fn partial_json_fills_defaults_and_rejects_typos() {
        let faults: Faults = serde_json::from_str(r#"{"outage":true}"#).expect("valid faults");
        assert_eq!(faults, Faults::outage());
        assert!(serde_json::from_str::<Faults>(r#"{"outgae":true}"#).is_err());
    }
}
