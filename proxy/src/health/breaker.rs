//! One provider's health: its sample window and its breaker state machine. Pure: time comes
//! in as an argument and transitions come out as values, so the book can log them and update
//! metrics after letting go of the lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::window::Window;
use super::{Admission, BreakerConfig, BreakerState};

/// A breaker state change and why it happened (the `reason` field of the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transition {
    pub(super) from: BreakerState,
    pub(super) to: BreakerState,
    pub(super) reason: &'static str,
}

/// The breaker's state with the data only that state needs.
#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    HalfOpen {
        /// When each probe in flight was admitted, oldest first.
        probes: VecDeque<Instant>,
        /// Successful probes since this half-open period began.
        successes: u32,
    },
}

/// What a snapshot needs, copied out under the lock.
pub(super) struct View {
    pub(super) success_rate: f64,
    pub(super) latencies: Vec<u32>,
    pub(super) breaker: BreakerState,
    pub(super) consecutive_failures: u32,
    pub(super) samples: usize,
}

/// Health and breaker of one provider.
#[derive(Debug)]
pub(super) struct ProviderHealth {
    window: Window,
    phase: Phase,
    consecutive_failures: u32,
}

impl Default for ProviderHealth {
    fn default() -> Self {
        ProviderHealth {
            window: Window::default(),
            phase: Phase::Closed,
            consecutive_failures: 0,
        }
    }
}

impl ProviderHealth {
    pub(super) fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Applies what time alone changes: old samples expire, and an open breaker whose
    /// `open_ms` has passed becomes half-open. Every entry point calls this first, so a
    /// snapshot never shows `open` for a provider that would accept a probe.
    fn tick(&mut self, now: Instant, config: &BreakerConfig, out: &mut Vec<Transition>) {
        self.window
            .expire(now, Duration::from_millis(config.window_ms));
        if let Phase::Open { since } = self.phase {
            if now.saturating_duration_since(since) >= Duration::from_millis(config.open_ms) {
                out.push(self.half_open("open_elapsed"));
            }
        }
    }

    pub(super) fn admit(
        &mut self,
        now: Instant,
        config: &BreakerConfig,
        out: &mut Vec<Transition>,
    ) -> Admission {
        self.tick(now, config, out);
        match &mut self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { .. } => Admission::Rejected,
            Phase::HalfOpen { probes, .. } => {
                // A probe whose result never came back (its request was dropped) must not hold
                // its slot forever: after a whole window it is presumed lost.
                let lost_after = Duration::from_millis(config.window_ms);
                while probes
                    .front()
                    .is_some_and(|at| now.saturating_duration_since(*at) > lost_after)
                {
                    probes.pop_front();
                }
                if probes.len() < config.half_open_probes.max(1) as usize {
                    probes.push_back(now);
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
        }
    }

    /// A request's result. Only probe results move a half-open breaker; results of requests
    /// admitted before the breaker opened still count in the window but change no state.
    pub(super) fn record(
        &mut self,
        ok: bool,
        latency: Duration,
        probe: bool,
        now: Instant,
        config: &BreakerConfig,
        out: &mut Vec<Transition>,
    ) {
        self.tick(now, config, out);
        self.sample(ok, latency, now, config, false);
        match &mut self.phase {
            Phase::Closed => self.open_if_unhealthy(now, config, out),
            Phase::Open { .. } => {}
            Phase::HalfOpen { probes, successes } if probe => {
                probes.pop_front();
                if !ok {
                    out.push(self.open(now, "probe_failed"));
                } else {
                    *successes += 1;
                    if *successes >= config.close_after.max(1) {
                        out.push(self.close());
                    }
                }
            }
            Phase::HalfOpen { .. } => {}
        }
    }

    /// An active health check's result: like a request's, except that a success while open
    /// moves the breaker to half-open at once (the provider answers again, so real traffic may
    /// probe it without waiting out `open_ms`), and a failure while half-open reopens it.
    /// Only real probes close a breaker: a health endpoint can be up while payments fail.
    pub(super) fn record_active(
        &mut self,
        ok: bool,
        latency: Duration,
        now: Instant,
        config: &BreakerConfig,
        out: &mut Vec<Transition>,
    ) {
        self.tick(now, config, out);
        self.sample(ok, latency, now, config, true);
        match self.phase {
            Phase::Closed => self.open_if_unhealthy(now, config, out),
            Phase::Open { .. } if ok => out.push(self.half_open("active_check_ok")),
            Phase::HalfOpen { .. } if !ok => out.push(self.open(now, "active_check_failed")),
            Phase::Open { .. } | Phase::HalfOpen { .. } => {}
        }
    }

    pub(super) fn view(
        &mut self,
        now: Instant,
        config: &BreakerConfig,
        out: &mut Vec<Transition>,
    ) -> View {
        self.tick(now, config, out);
        View {
            success_rate: self.window.success_rate(),
            latencies: self.window.latencies(),
            breaker: self.state(),
            consecutive_failures: self.consecutive_failures,
            samples: self.window.len(),
        }
    }

    /// A request's (or, with `check`, an active check's) result into the window and the streak.
    fn sample(
        &mut self,
        ok: bool,
        latency: Duration,
        now: Instant,
        config: &BreakerConfig,
        check: bool,
    ) {
        self.window.push(
            ok,
            latency,
            now,
            Duration::from_millis(config.window_ms),
            config.window_max_samples,
            check,
        );
        self.consecutive_failures = if ok {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };
    }

    fn open_if_unhealthy(
        &mut self,
        now: Instant,
        config: &BreakerConfig,
        out: &mut Vec<Transition>,
    ) {
        let streak = config.consecutive_failures > 0
            && self.consecutive_failures >= config.consecutive_failures;
        let samples = self.window.len();
        // Active checks alone never make up a rate window: min_volume counts requests.
        let rate = samples > 0
            && self.window.requests() >= (config.min_volume as usize).max(1)
            && self.window.failures() as f64 / samples as f64 > config.failure_rate;
        if streak {
            out.push(self.open(now, "consecutive_failures"));
        } else if rate {
            out.push(self.open(now, "failure_rate"));
        }
    }

    fn open(&mut self, now: Instant, reason: &'static str) -> Transition {
        self.to(Phase::Open { since: now }, reason)
    }

    fn half_open(&mut self, reason: &'static str) -> Transition {
        let phase = Phase::HalfOpen {
            probes: VecDeque::new(),
            successes: 0,
        };
        self.to(phase, reason)
    }

    /// Closing starts afresh: the failures that opened the breaker are history, and keeping
    /// them would reopen it on the first new failure.
    fn close(&mut self) -> Transition {
        self.window.clear();
        self.consecutive_failures = 0;
        self.to(Phase::Closed, "probes_succeeded")
    }

    fn to(&mut self, phase: Phase, reason: &'static str) -> Transition {
        let from = self.state();
        self.phase = phase;
        Transition {
            from,
            to: self.state(),
            reason,
        }
    }
}
