//! The idempotency record and the decisions over it, shared by every store so they cannot
//! disagree: each store reads the current record, calls one function here and writes the result,
//! all inside one atomic step of its own.

use serde::{Deserialize, Serialize};

use super::{Attempt, Begin, StoreError, StoredResponse};

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
    /// Executing (or its proxy died). `started_ms` is reset on takeover.
    InFlight {
        started_ms: u64,
        attempt: Option<Attempt>,
    },
    /// Answered; replayed until `expires_ms`.
    Finished {
        response: StoredResponse,
        expires_ms: u64,
    },
}

impl Record {
    /// A finished record past its TTL counts as absent.
    pub fn expired(&self, now_ms: u64) -> bool {
        matches!(self.state, State::Finished { expires_ms, .. } if now_ms >= expires_ms)
    }

    fn found(&self) -> &'static str {
        match self.state {
            State::InFlight { .. } => "in flight",
            State::Finished { .. } => "finished",
        }
    }
}

/// `begin`: the answer, and the record to write if the key is claimed (`None`: write nothing).
pub(super) fn begin(
    existing: Option<Record>,
    fingerprint: &str,
    now_ms: u64,
    stale_after_ms: u64,
) -> (Begin, Option<Record>) {
    let claim = |attempt| Record {
        fingerprint: fingerprint.to_string(),
        state: State::InFlight {
            started_ms: now_ms,
            attempt,
        },
    };
    let record = match existing {
        Some(record) if !record.expired(now_ms) => record,
        _ => return (Begin::Started, Some(claim(None))),
    };
    if record.fingerprint != fingerprint {
        return (Begin::Mismatch, None);
    }
    match record.state {
        State::Finished { response, .. } => (Begin::Replay(response), None),
        // A clock that went backwards (started_ms > now_ms) reads as fresh: refusing is safe,
        // taking over a live request is not.
        State::InFlight { started_ms, .. }
            if now_ms.saturating_sub(started_ms) < stale_after_ms =>
        {
            (Begin::InFlight, None)
        }
        State::InFlight { attempt, .. } => (
            Begin::Resume {
                attempt: attempt.clone(),
            },
            Some(claim(attempt)),
        ),
    }
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
        let (_, claimed) = begin(None, "fp", 10_000, 1_000);
        let (answer, write) = begin(claimed, "fp", 5_000, 1_000);
        assert_eq!(answer, Begin::InFlight);
        assert_eq!(write, None);
    }

    #[test]
    fn takeover_restarts_the_clock_and_keeps_the_attempt() {
        let attempt = Attempt {
            provider: "a".into(),
            provider_key: "k".into(),
        };
        let (_, claimed) = begin(None, "fp", 0, 1_000);
        let noted = note_attempt(claimed, "key", &attempt).unwrap();
        let (answer, write) = begin(Some(noted), "fp", 1_000, 1_000);
        assert_eq!(
            answer,
            Begin::Resume {
                attempt: Some(attempt.clone())
            }
        );
        let expected = State::InFlight {
            started_ms: 1_000,
            attempt: Some(attempt),
        };
        assert_eq!(write.map(|r| r.state), Some(expected));
    }

    #[test]
    fn ttl_saturates() {
        let (_, claimed) = begin(None, "fp", 0, 1_000);
        let done = finish(claimed, "key", &response(b""), u64::MAX - 1, 10).unwrap();
        assert!(!done.expired(u64::MAX - 1));
    }
}
