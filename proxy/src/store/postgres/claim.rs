//! What `begin` does with an existing idempotency row on a shared store: the same answers as
//! `record::begin` on one instance, with leases deciding whether another holder is alive.

use crate::store::{Attempt, Begin, StoredResponse, Takeover};

/// The state of another holder's lease, on the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// Renewed recently: its holder is alive (or was, a lease ago).
    Live,
    /// Not renewed in time: its holder stopped, stalled or lost the database.
    Lapsed,
    /// Handed back by a holder that stopped cleanly.
    Dropped,
}

/// An existing idempotency row, as `begin` reads it under `FOR UPDATE`.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub fingerprint: String,
    /// The stored response and its expiry, when finished.
    pub finished: Option<(StoredResponse, u64)>,
    /// The holder's instance id; `None`: parked (or finished).
    pub holder: Option<String>,
    pub started_ms: u64,
    pub attempt: Option<Attempt>,
    pub lease: Lease,
}

/// The answer, and whether to claim the row (keeping `attempt` journaled).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Write nothing.
    Answer(Begin),
    /// Claim the row under a new token for this instance.
    Claim {
        answer: Begin,
        attempt: Option<Attempt>,
    },
}

pub(super) fn decide(
    found: Found,
    fingerprint: &str,
    now_ms: u64,
    stale_after_ms: u64,
    me: &str,
) -> Decision {
    if let Some((_, expires_ms)) = &found.finished {
        if now_ms >= *expires_ms {
            // Expired: absent, whatever request claims it now.
            return Decision::Claim {
                answer: Begin::Started,
                attempt: None,
            };
        }
    }
    if found.fingerprint != fingerprint {
        return Decision::Answer(Begin::Mismatch);
    }
    if let Some((response, _)) = found.finished {
        return Decision::Answer(Begin::Replay(response));
    }
    let reason = match (&found.holder, found.lease) {
        (None, _) => Takeover::Parked,
        // This instance's own request: the one-instance rule (a clock gone backwards reads
        // as fresh).
        (Some(holder), _) if holder == me => {
            if now_ms.saturating_sub(found.started_ms) < stale_after_ms {
                return Decision::Answer(Begin::InFlight);
            }
            Takeover::PastDeadline
        }
        (Some(_), Lease::Live) => return Decision::Answer(Begin::InFlight),
        (Some(_), Lease::Lapsed) => Takeover::LeaseExpired,
        (Some(_), Lease::Dropped) => Takeover::PreviousProcess,
    };
    Decision::Claim {
        answer: Begin::Resume {
            attempt: found.attempt.clone(),
            reason,
        },
        attempt: found.attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(holder: Option<&str>, lease: Lease) -> Found {
        Found {
            fingerprint: "fp".into(),
            finished: None,
            holder: holder.map(str::to_string),
            started_ms: 1_000,
            attempt: Some(Attempt {
                provider: "a".into(),
                provider_key: "k".into(),
            }),
            lease,
        }
    }

    fn reason(d: Decision) -> Option<Takeover> {
        match d {
            Decision::Claim {
                answer: Begin::Resume { reason, .. },
                ..
            } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn another_instance_is_waited_for_while_its_lease_lives() {
        let d = decide(found(Some("b"), Lease::Live), "fp", 999_999, 1, "a");
        assert_eq!(d, Decision::Answer(Begin::InFlight));
        let d = decide(found(Some("b"), Lease::Lapsed), "fp", 1_001, 30_000, "a");
        assert_eq!(reason(d), Some(Takeover::LeaseExpired));
        let d = decide(found(Some("b"), Lease::Dropped), "fp", 1_001, 30_000, "a");
        assert_eq!(reason(d), Some(Takeover::PreviousProcess));
        let d = decide(found(None, Lease::Dropped), "fp", 1_001, 30_000, "a");
        assert_eq!(reason(d), Some(Takeover::Parked));
    }

    #[test]
    fn own_records_follow_the_deadline_and_mismatch_comes_first() {
        let mine = found(Some("a"), Lease::Lapsed);
        let d = decide(mine.clone(), "fp", 2_000, 30_000, "a");
        assert_eq!(d, Decision::Answer(Begin::InFlight));
        let d = decide(mine.clone(), "fp", 31_000, 30_000, "a");
        assert_eq!(reason(d), Some(Takeover::PastDeadline));
        let d = decide(mine, "other", 31_000, 30_000, "a");
        assert_eq!(d, Decision::Answer(Begin::Mismatch));
    }
}
