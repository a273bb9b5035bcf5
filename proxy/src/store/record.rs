//! The idempotency record and the decisions over it, shared by every store so they cannot
//! disagree: each store reads the current record, calls one function here and writes the result,
//! all inside one atomic step of its own.

use serde::{Deserialize, Serialize};

use super::{Attempt, Begin, StoreError, StoredResponse, Takeover};

/// Table names, used in errors and as redb table names.
pub(super) const IDEMPOTENCY: &str = "idempotency";
pub(super) const OWNERS: &str = "owners";

/// What is stored under an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Record {
    /// Digest of the request that claimed the key; a different request with the key is refused.
    pub fingerprint: String,
    /// Where the request is.
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum State {
    /// Executing (or its proxy died, or it was parked). `started_ms` is reset on takeover.
    InFlight {
        started_ms: u64,
        attempt: Option<Attempt>,
        /// Who executes it. Absent in records written before holders were recorded: those
        /// were held by an earlier process, which is gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<Holder>,
    },
    /// Answered; replayed until `expires_ms`.
    Finished {
        response: StoredResponse,
        expires_ms: u64,
    },
}

/// Who executes an in-flight record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Holder {
    /// The store instance with this incarnation id (one per process for a durable store).
    Incarnation(u64),
    /// Nobody: its request ended with the outcome unknown ([`park`]).
    Parked,
}

/// A fresh incarnation id for a store instance. Random, so ids of earlier processes never
/// come back (the odds of a repeat among 2^64 values are negligible).
pub(super) fn incarnation() -> u64 {
    rand::random()
}

impl Record {
    /// A finished record past its TTL counts as absent.
    pub fn expired(&self, now_ms: u64) -> bool {
        matches!(self.state, State::Finished { expires_ms, .. } if now_ms >= expires_ms)
    }

    /// When a purge may delete it: finished records at their expiry; in-flight ones never.
    pub fn expires_ms(&self) -> Option<u64> {
        match self.state {
            State::Finished { expires_ms, .. } => Some(expires_ms),
            State::InFlight { .. } => None,
        }
    }

    fn found(&self) -> &'static str {
        match self.state {
            State::InFlight { .. } => "in flight",
            State::Finished { .. } => "finished",
        }
    }
}

/// `begin` for the store instance `me`: the answer, and the record to write if the key is
/// claimed (`None`: write nothing).
pub(super) fn begin(
    existing: Option<Record>,
    fingerprint: &str,
    now_ms: u64,
    stale_after_ms: u64,
    me: u64,
) -> (Begin, Option<Record>) {
    let claim = |attempt| Record {
        fingerprint: fingerprint.to_string(),
        state: State::InFlight {
            started_ms: now_ms,
            attempt,
            holder: Some(Holder::Incarnation(me)),
        },
    };
    let record = match existing {
        Some(record) if !record.expired(now_ms) => record,
        _ => return (Begin::Started, Some(claim(None))),
    };
    if record.fingerprint != fingerprint {
        return (Begin::Mismatch, None);
    }
    let (started_ms, attempt, holder) = match record.state {
        State::Finished { response, .. } => return (Begin::Replay(response), None),
        State::InFlight {
            started_ms,
            attempt,
            holder,
        } => (started_ms, attempt, holder),
    };
    let reason = match holder {
        Some(Holder::Parked) => Takeover::Parked,
        // This instance's own request: refused while it may still be running. A clock that
        // went backwards (started_ms > now_ms) reads as fresh: refusing is safe, taking over
        // a live request is not.
        Some(Holder::Incarnation(id)) if id == me => {
            if now_ms.saturating_sub(started_ms) < stale_after_ms {
                return (Begin::InFlight, None);
            }
            Takeover::PastDeadline
        }
        // Another incarnation holds it. A durable store's file is locked by one process at a
        // time, so that incarnation is a process that stopped: nothing can still be running.
        Some(Holder::Incarnation(_)) | None => Takeover::PreviousProcess,
    };
    (
        Begin::Resume {
            attempt: attempt.clone(),
            reason,
        },
        Some(claim(attempt)),
    )
}

/// `park`: the in-flight record with no holder, so the next request with the key resumes it
/// at once (with its journaled attempt).
pub(super) fn park(existing: Option<Record>, key: &str) -> Result<Record, StoreError> {
    let mut record = in_flight(existing, "park", key)?;
    if let State::InFlight { holder, .. } = &mut record.state {
        *holder = Some(Holder::Parked);
    }
    Ok(record)
}

/// `note_attempt`: the in-flight record with `attempt` as its last attempt.
pub(super) fn note_attempt(
    existing: Option<Record>,
    key: &str,
    attempt: &Attempt,
) -> Result<Record, StoreError> {
    let mut record = in_flight(existing, "note_attempt", key)?;
    if let State::InFlight { attempt: last, .. } = &mut record.state {
        *last = Some(attempt.clone());
    }
    Ok(record)
}

/// `finish`: the in-flight record turned into a finished one, kept until `now_ms + ttl_ms`.
pub(super) fn finish(
    existing: Option<Record>,
    key: &str,
    response: &StoredResponse,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Record, StoreError> {
    let record = in_flight(existing, "finish", key)?;
    Ok(Record {
        fingerprint: record.fingerprint,
        state: State::Finished {
            response: response.clone(),
            expires_ms: now_ms.saturating_add(ttl_ms),
        },
    })
}

/// `release` deletes the record only while it is in flight.
pub(super) fn releasable(existing: &Record) -> bool {
    matches!(existing.state, State::InFlight { .. })
}

fn in_flight(existing: Option<Record>, op: &'static str, key: &str) -> Result<Record, StoreError> {
    let not_in_flight = |found| StoreError::NotInFlight {
        op,
        key: key.to_string(),
        found,
    };
    match existing {
        Some(record) if releasable(&record) => Ok(record),
        Some(record) => Err(not_in_flight(record.found())),
        None => Err(not_in_flight("absent")),
    }
}

pub(super) fn encode<T: Serialize>(
    table: &'static str,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        table,
        key: key.to_string(),
        source,
    })
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        table,
        key: key.to_string(),
        source,
    })
}

/// Serde for response bodies: a JSON string when the body is UTF-8 (nearly always: JSON, XML,
/// form answers), a byte array otherwise, instead of serde's default 3-4 bytes per byte.
pub(super) mod body {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Body<'a> {
        Text(std::borrow::Cow<'a, str>),
        Bytes(std::borrow::Cow<'a, [u8]>),
    }

    pub fn serialize<S: Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => Body::Text(text.into()),
            Err(_) => Body::Bytes(body.into()),
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Body::deserialize(deserializer)? {
            Body::Text(text) => text.into_owned().into_bytes(),
            Body::Bytes(bytes) => bytes.into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 7;

    fn response(body: &[u8]) -> StoredResponse {
        StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
        }
    }

    #[test]
    fn body_round_trips_as_text_or_bytes() {
        for body in [&b"{\"id\":\"pi_1\"}"[..], &[0xff, 0x00, 0x80][..], &b""[..]] {
            let json = serde_json::to_string(&response(body)).unwrap();
            let back: StoredResponse = serde_json::from_str(&json).unwrap();
            assert_eq!(back.body, body, "{json}");
        }
        let json = serde_json::to_string(&response(b"ok")).unwrap();
        assert!(json.contains("\"body\":\"ok\""), "{json}");
    }

    #[test]
    fn clock_going_backwards_reads_as_in_flight() {
        let (_, claimed) = begin(None, "fp", 10_000, 1_000, ME);
        let (answer, write) = begin(claimed, "fp", 5_000, 1_000, ME);
        assert_eq!(answer, Begin::InFlight);
        assert_eq!(write, None);
    }

    #[test]
    fn takeover_restarts_the_clock_and_keeps_the_attempt() {
        let attempt = Attempt {
            provider: "a".into(),
            provider_key: "k".into(),
        };
        let (_, claimed) = begin(None, "fp", 0, 1_000, ME);
        let noted = note_attempt(claimed, "key", &attempt).unwrap();
        let (answer, write) = begin(Some(noted), "fp", 1_000, 1_000, ME);
        assert_eq!(
            answer,
            Begin::Resume {
                attempt: Some(attempt.clone()),
                reason: Takeover::PastDeadline,
            }
        );
        let expected = State::InFlight {
            started_ms: 1_000,
            attempt: Some(attempt),
            holder: Some(Holder::Incarnation(ME)),
        };
        assert_eq!(write.map(|r| r.state), Some(expected));
    }

    #[test]
    fn ttl_saturates() {
        let (_, claimed) = begin(None, "fp", 0, 1_000, ME);
        let done = finish(claimed, "key", &response(b""), u64::MAX - 1, 10).unwrap();
        assert!(!done.expired(u64::MAX - 1));
    }

    #[test]
    fn a_record_written_before_holders_resumes_as_a_previous_process() {
        let old = r#"{"fingerprint":"fp","state":{"state":"in_flight","started_ms":5,
            "attempt":{"provider":"a","provider_key":"k"}}}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        let (answer, write) = begin(Some(record), "fp", 6, 1_000, ME);
        let attempt = Attempt {
            provider: "a".into(),
            provider_key: "k".into(),
        };
        assert_eq!(
            answer,
            Begin::Resume {
                attempt: Some(attempt),
                reason: Takeover::PreviousProcess,
            }
        );
        let holder = match write.map(|r| r.state) {
            Some(State::InFlight { holder, .. }) => holder,
            other => panic!("{other:?}"),
        };
        assert_eq!(holder, Some(Holder::Incarnation(ME)));
    }

    #[test]
    fn parked_and_foreign_records_resume_at_once_own_ones_wait() {
        let (_, mine) = begin(None, "fp", 0, 1_000, ME);
        let (answer, _) = begin(mine.clone(), "fp", 1, 1_000, ME);
        assert_eq!(answer, Begin::InFlight);
        let (answer, _) = begin(mine.clone(), "fp", 1, 1_000, ME + 1);
        assert!(matches!(
            answer,
            Begin::Resume {
                reason: Takeover::PreviousProcess,
                ..
            }
        ));
        let parked = park(mine, "key").unwrap();
        let (answer, taken) = begin(Some(parked), "fp", 1, 1_000, ME);
        assert!(matches!(
            answer,
            Begin::Resume {
                reason: Takeover::Parked,
                ..
            }
        ));
        // The takeover holds it again: the next request waits.
        let (answer, _) = begin(taken, "fp", 2, 1_000, ME);
        assert_eq!(answer, Begin::InFlight);
    }
}
