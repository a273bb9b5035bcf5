//! Fault injection for one provider: added latency, a deterministic share of errors, outage,
//! and the faults that leave money in doubt: a timeout after charging, a connection reset
//! mid-response, and a charge answered "unavailable" (a late success).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::respond::SimResponse;

/// The faults a simulated provider injects. Setting new faults replaces the old ones.
///
/// Faults apply to every request except the `/__sim/` control API. `outage`, `latency_ms`
/// and injected errors act before the request is processed (nothing is recorded);
/// `timeout_after_charge_ms` and `reset_mid_response` act after it was processed in full
/// (the charge is in the ledger, the idempotent answer stored), on its answer only.
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
    /// Process the request in full (charge recorded), then wait this long before answering
    /// (default 0): a client with a shorter timeout gives up on a payment that exists.
    pub timeout_after_charge_ms: u64,
    /// Process the request in full (charge recorded), then send the answer's head (with
    /// its full `content-length`) and half of its body, and drop the connection (HTTP/1.1)
    /// or reset the stream (h2) (default false).
    pub reset_mid_response: bool,
    /// A late success (default false): the provider processes a new payment in full (charge
    /// in the ledger, idempotent answer stored, notification sent when webhooks are on), yet
    /// answers it 503 with the body its dialect classifies as `answered-not-processed`
    /// (Adyen `POST /adyen/v71/payments`: `{"status":503,"errorCode":"000",…}`; Stripe
    /// `POST /v1/payment_intents`: an `api_error`). The client fails over elsewhere while the
    /// money moved here; only the notification tells. Adyen and Stripe only; refused payments
    /// and follow-ups are answered normally.
    pub charge_then_unavailable: bool,
    /// Refunds refused after their acceptance (default false; Adyen only): a refund is
    /// answered `received` as usual, nothing is refunded, and its `REFUND` notification says
    /// `success: false` ("Insufficient balance on payment"), as Adyen refuses a refund it
    /// cannot execute.
    pub refunds_refused: bool,
    /// Delay the first delivery of every notification by this long (default 0), on top of
    /// the webhook settings' `delay_ms`: with `charge_then_unavailable`, the event can arrive
    /// after the failover completed at another provider.
    pub notify_delay_ms: u64,
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

    /// Every request is processed, then answered only after `ms` milliseconds.
    pub fn timeout_after_charge(ms: u64) -> Self {
        Faults {
            timeout_after_charge_ms: ms,
            ..Faults::default()
        }
    }

    /// Every request is processed, then its answer is cut off mid-body.
    pub fn reset_mid_response() -> Self {
        Faults {
            reset_mid_response: true,
            ..Faults::default()
        }
    }

    /// Every new payment is charged (and notified after `notify_delay_ms`), then answered
    /// 503 "not processed".
    pub fn charge_then_unavailable(notify_delay_ms: u64) -> Self {
        Faults {
            charge_then_unavailable: true,
            notify_delay_ms,
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
    /// Serve it, after `latency`, answering `fail` instead when set; a processed request's
    /// answer then goes through `after`.
    Serve {
        latency: Duration,
        fail: Option<StatusCode>,
        after: AfterProcessing,
    },
}

/// What happens to the answer of a request that was processed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct AfterProcessing {
    /// Wait this long before answering.
    pub(crate) delay: Duration,
    /// Cut the answer off after its head and half its body.
    pub(crate) reset: bool,
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
            after: AfterProcessing {
                delay: Duration::from_millis(self.faults.timeout_after_charge_ms),
                reset: self.faults.reset_mid_response,
            },
        }
    }
}

/// The body of every simulator answer: whole, or cut off by `reset_mid_response`.
pub(crate) type ReplyBody = Either<Full<Bytes>, CutBody>;

/// An answer sent whole.
pub(crate) fn whole(response: SimResponse) -> Response<ReplyBody> {
    response.map(Either::Left)
}

/// Apply the after-processing faults to the answer of a processed request.
pub(crate) async fn after_processing(
    after: AfterProcessing,
    response: SimResponse,
) -> Response<ReplyBody> {
    if !after.delay.is_zero() {
        tokio::time::sleep(after.delay).await;
    }
    if !after.reset {
        return whole(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    Response::from_parts(parts, Either::Right(CutBody::new(bytes)))
}

/// A body that announces its full length, yields the first half, lets the connection flush
/// it, then fails: hyper closes the HTTP/1.1 connection (or resets the h2 stream) with the
/// rest of the body never sent.
#[derive(Debug)]
pub(crate) struct CutBody {
    full_len: u64,
    step: CutStep,
}

#[derive(Debug)]
enum CutStep {
    /// The first half is still to be sent.
    Send(Bytes),
    /// Sent; yield once so the connection writes it out before the failure.
    Flush,
    /// Fail the body.
    Fail,
}

impl CutBody {
    fn new(full: Bytes) -> Self {
        CutBody {
            full_len: full.len() as u64,
            step: CutStep::Send(full.slice(..full.len() / 2)),
        }
    }
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match std::mem::replace(&mut self.step, CutStep::Fail) {
            CutStep::Send(half) => {
                self.step = CutStep::Flush;
                Poll::Ready(Some(Ok(Frame::data(half))))
            }
            CutStep::Flush => {
                // The connection flushes what it has buffered when the body is pending.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            CutStep::Fail => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated reset mid-response",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.full_len)
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
                fail: Some(StatusCode::SERVICE_UNAVAILABLE),
                after: AfterProcessing::default(),
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
        let faults: Faults =
            serde_json::from_str(r#"{"timeout_after_charge_ms":250,"reset_mid_response":true}"#)
                .expect("valid faults");
        assert_eq!(faults.timeout_after_charge_ms, 250);
        assert!(faults.reset_mid_response);
        assert_eq!(faults.error_rate, 0.0);
    }

    #[test]
    fn after_charge_faults_reach_the_admission() {
        let mut state = FaultState::default();
        state.set(Faults {
            timeout_after_charge_ms: 40,
            reset_mid_response: true,
            ..Faults::default()
        });
        assert_eq!(
            state.admit(),
            Admission::Serve {
                latency: Duration::ZERO,
                fail: None,
                after: AfterProcessing {
                    delay: Duration::from_millis(40),
                    reset: true
                },
            }
        );
    }

    #[tokio::test]
    async fn cut_body_sends_half_then_fails() {
        let response = after_processing(
            AfterProcessing {
                delay: Duration::ZERO,
                reset: true,
            },
            Response::new(Full::new(Bytes::from_static(b"0123456789"))),
        )
        .await;
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(10));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"01234")));
        assert!(body.frame().await.expect("an item").is_err());
    }
}
