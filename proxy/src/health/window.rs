//! The sliding window of recent attempt results for one provider: bounded by age and by
//! count, with the failure count kept up to date so the breaker rules are O(1).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One attempt result.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ok: bool,
    latency_ms: u32,
    /// From an active health check, not a request.
    check: bool,
}

/// Recent samples, oldest first.
#[derive(Debug, Default)]
pub(super) struct Window {
    samples: VecDeque<Sample>,
    failures: usize,
    /// Samples from requests (not active checks).
    requests: usize,
}

impl Window {
    /// Adds a sample (`check`: from an active health check, see [`Window::requests`]),
    /// then drops what is too old or beyond `max_samples`.
    pub(super) fn push(
        &mut self,
        ok: bool,
        latency: Duration,
        now: Instant,
        length: Duration,
        max_samples: usize,
        check: bool,
    ) {
        let latency_ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        self.samples.push_back(Sample {
            at: now,
            ok,
            latency_ms,
            check,
        });
        if !ok {
            self.failures += 1;
        }
        if !check {
            self.requests += 1;
        }
        while self.samples.len() > max_samples.max(1) {
            self.pop_front();
        }
        self.expire(now, length);
    }

    /// Drops samples older than `length` before `now`.
    ///
    /// Callers take `now` before the lock, so samples can be a hair out of order; the window
    /// is pruned from the front only, which at worst keeps a sample a few microseconds long.
    pub(super) fn expire(&mut self, now: Instant, length: Duration) {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > length)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.samples.pop_front() {
            if !old.ok {
                self.failures -= 1;
            }
            if !old.check {
                self.requests -= 1;
            }
        }
    }

    /// Forgets everything (the breaker just closed: old failures must not reopen it).
    pub(super) fn clear(&mut self) {
        self.samples.clear();
        self.failures = 0;
        self.requests = 0;
    }

    /// Samples from requests: the failure-rate rule needs `min_volume` of them, so active
    /// checks alone (a provider nobody sends payments to) never make up a rate window.
    pub(super) fn requests(&self) -> usize {
        self.requests
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(super) fn failures(&self) -> usize {
        self.failures
    }

    /// Successes / samples; 1.0 with no samples (no evidence against the provider).
    pub(super) fn success_rate(&self) -> f64 {
        if self.samples.is_empty() {
            return 1.0;
        }
        (self.samples.len() - self.failures) as f64 / self.samples.len() as f64
    }

    /// The latencies of every sample, successes and failures alike: a timeout is what the
    /// shopper waited. Copied out so sorting happens outside the provider's lock.
    pub(super) fn latencies(&self) -> Vec<u32> {
        self.samples.iter().map(|s| s.latency_ms).collect()
    }
}

/// The nearest-rank percentile (`p` in 0–100) of `values`, which must be sorted ascending:
/// the smallest value with at least `p` % of the values at or below it. 0 when empty.
pub(super) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn nearest_rank() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), 50);
        assert_eq!(percentile(&hundred, 99.0), 99);
        assert_eq!(percentile(&hundred, 100.0), 100);
        assert_eq!(percentile(&[1, 3, 5], 50.0), 3);
        assert_eq!(percentile(&[1, 3, 5], 99.0), 5);
        assert_eq!(percentile(&[7], 0.0), 7);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 4 values: p50 is rank 2, p99 is rank 4.
        assert_eq!(percentile(&[10, 20, 30, 40], 50.0), 20);
        assert_eq!(percentile(&[10, 20, 30, 40], 99.0), 40);
    }

    #[test]
    fn count_cap_keeps_newest_and_failure_count() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..10 {
            // The first five fail, the last five succeed.
            w.push(i >= 5, Duration::from_millis(i), t0, LONG, 4, false);
        }
        assert_eq!(w.len(), 4);
        assert_eq!(w.failures(), 0);
        assert_eq!(w.latencies(), vec![6, 7, 8, 9]);
    }

    #[test]
    fn age_limit_drops_old_samples() {
        let t0 = Instant::now();
        let length = Duration::from_millis(100);
        let mut w = Window::default();
        w.push(false, Duration::ZERO, t0, length, 10, false);
        w.push(
            true,
            Duration::ZERO,
            t0 + Duration::from_millis(50),
            length,
            10,
            false,
        );
        w.expire(t0 + Duration::from_millis(100), length);
        assert_eq!(
            (w.len(), w.failures()),
            (2, 1),
            "exactly window length is kept"
        );
        w.expire(t0 + Duration::from_millis(101), length);
        assert_eq!((w.len(), w.failures()), (1, 0));
        assert_eq!(w.success_rate(), 1.0);
    }

    #[test]
    fn checks_are_samples_but_not_requests() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(false, Duration::ZERO, t0, LONG, 3, true);
        w.push(true, Duration::ZERO, t0, LONG, 3, false);
        w.push(false, Duration::ZERO, t0, LONG, 3, true);
        assert_eq!((w.len(), w.requests(), w.failures()), (3, 1, 2));
        w.push(true, Duration::ZERO, t0, LONG, 3, true);
        assert_eq!((w.len(), w.requests(), w.failures()), (3, 1, 1));
        w.push(true, Duration::ZERO, t0, LONG, 3, true);
        assert_eq!(
            (w.len(), w.requests()),
            (3, 0),
            "the request sample aged out by count"
        );
    }

    #[test]
    fn huge_latency_saturates() {
        let mut w = Window::default();
        w.push(
            true,
            Duration::from_secs(u64::MAX / 2),
            Instant::now(),
            LONG,
            1,
            false,
        );
        assert_eq!(w.latencies(), vec![u32::MAX]);
    }
}
