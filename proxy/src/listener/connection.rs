//! One client connection: HTTP/1.1 or HTTP/2 (hyper-util's auto builder tells them apart),
//! served until the client closes it, it has had no request in progress for the idle timeout,
//! or its listener drains.
//!
//! hyper closes none of the idle ones by itself: the auto builder waits with no timeout for the
//! bytes that tell HTTP/1 from HTTP/2, HTTP/2 has no idle timeout, and an HTTP/1 keep-alive
//! waits for the client's next request. So a watchdog runs beside each connection. It counts
//! the requests in progress (from the service call until the response body is sent or
//! dropped) and, once none has been for the idle timeout, asks the connection to close
//! gracefully: HTTP/1 closes when between requests, HTTP/2 sends GOAWAY, which tells the
//! client which requests were not processed, so it can retry them safely. A client that does
//! not let the close finish (never acknowledges the GOAWAY, never completes its headers) is
//! dropped [`CLOSE_GRACE`] later, unless a request is in progress again: requests in progress
//! are never cut here (`limits.request_timeout_ms` bounds them).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::priority::BehindPayments;
use super::{until_true, ConnLimits};
use crate::parse_errors::JsonErrors;
use crate::upstream::BoxError;

/// How long a connection asked to close may take, once no request is in progress, before it
/// is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The hyper connection builder for `limits`.
fn builder(limits: &ConnLimits) -> auto::Builder<BehindPayments> {
    let mut builder = auto::Builder::new(BehindPayments);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's own hard caps sit above ours so ours answer with JSON first; what hyper
        // still refuses by itself gets a JSON body from `JsonErrors`.
        .max_buf_size((limits.max_header_bytes * 2 + 4096).max(8192))
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes * 2 + 4096).unwrap_or(u32::MAX),
        );
    builder
}

/// Serve `handler` on `io` until the client closes the connection, it idles out, or `drain`
/// turns true. `Err` says why the connection ended abnormally (for debug logs).
pub async fn serve<I, H, F, B>(
    io: I,
    limits: &ConnLimits,
    handler: H,
    mut drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            let in_flight = activity.begin();
            // Boxed: hyper keeps room for one service future per connection for as long as
            // the connection lives, so an idle one would otherwise hold a whole request's
            // state machine.
            let handling = Box::pin(handler(request));
            async move {
                let response = handling.await;
                Ok::<_, Infallible>(response.map(|inner| Tracked {
                    inner,
                    in_flight: Some(in_flight),
                }))
            }
        })
    };
    let builder = builder(limits);
    let io = {
        let activity = activity.clone();
        JsonErrors::new(io, move || activity.in_flight.load(Ordering::SeqCst) > 0)
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut check_at = Instant::now() + limits.idle_timeout;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            () = until_true(&mut drain), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                check_at = Instant::now() + CLOSE_GRACE;
            }
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                let allowed = if closing { CLOSE_GRACE } else { limits.idle_timeout };
                match activity.idle_for(now) {
                    Some(idle) if idle >= allowed && closing => {
                        return Err("closed: the client did not finish a graceful close".into());
                    }
                    Some(idle) if idle >= allowed => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        check_at = now + CLOSE_GRACE;
                    }
                    Some(idle) => check_at = now + allowed.saturating_sub(idle),
                    None => check_at = now + allowed,
                }
            }
        }
    }
}

/// The requests in progress on one connection, and when the last one finished.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request (0: none yet).
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Count a request as in progress until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// How long no request has been in progress; `None` while one is.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(now.saturating_duration_since(since))
    }
}

/// One request in progress.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time before the count: a watchdog that sees no request in progress must never
        // see the end time of an earlier one, or it would close a connection just used.
        let now = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.fetch_max(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in progress until it has been sent
/// (or dropped, when the client goes away).
struct Tracked<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_counts_from_the_end_of_the_last_request() {
        let activity = Arc::new(Activity::new());
        let start = activity.opened;
        assert_eq!(
            activity.idle_for(start + Duration::from_secs(5)),
            Some(Duration::from_secs(5)),
            "a connection that never had a request is idle from its start"
        );
        let first = activity.begin();
        let second = activity.begin();
        drop(first);
        assert_eq!(
            activity.idle_for(start + Duration::from_secs(5)),
            None,
            "one request still in progress"
        );
        drop(second);
        let idle = activity
            .idle_for(Instant::now())
            .expect("no request in progress");
        assert!(idle < Duration::from_secs(1), "{idle:?}");
    }
}
