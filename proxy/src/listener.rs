//! Listeners: the accept loop both the storefront and the admin listener run (connection cap,
//! open-connection gauge, graceful drain), and the storefront's own part: optional TLS
//! termination (rustls, ALPN h2/http1.1) in front of the proxy. Each connection is served by
//! [`connection`]: HTTP/1.1 and HTTP/2, header-read and idle timeouts. The storefront
//! listeners are served by [`workers`], threads with an event loop each.

pub mod connection;
pub mod priority;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::upstream::Downstream;

/// How long a draining listener waits for in-flight connections.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Shortest time between two log lines about refused connections or failed accepts.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// A listener's connection settings, read from the running config at each accept so that
/// reloads apply to new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections kept at once; new ones beyond it are closed at accept.
    pub max_connections: usize,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Time for a client's HTTP/1.1 request headers, and for the TLS handshake.
    pub header_read_timeout: Duration,
    /// `limits.max_header_bytes`: hyper's buffers are sized above it.
    pub max_header_bytes: usize,
    /// `limits.max_headers`: hyper's own header count limit sits above it.
    pub max_headers: usize,
}

impl ConnLimits {
    /// A storefront listener's: `limits`.
    pub fn storefront(config: &Config) -> ConnLimits {
        ConnLimits::with_cap(config, config.limits.max_connections)
    }

    /// The admin listener's: `limits`, with `admin.max_connections` as the cap.
    pub fn admin(config: &Config) -> ConnLimits {
        ConnLimits::with_cap(config, config.admin.max_connections)
    }

    fn with_cap(config: &Config, max_connections: usize) -> ConnLimits {
        let limits = &config.limits;
        ConnLimits {
            max_connections,
            idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
            header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
        }
    }
}

/// A connection the accept loop hands to a listener's server.
pub struct Accepted {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The settings when it was accepted.
    pub limits: ConnLimits,
    /// Turns true when the listener drains: the connection should close gracefully.
    pub drain: watch::Receiver<bool>,
}

/// Accept on `listener` until `shutdown` flips, then drain: every connection is asked to close,
/// requests in progress get [`DRAIN`] to finish, and whatever is left is dropped.
///
/// `name` (`storefront`, `admin`) labels the metrics and logs. With `max_connections` open, a
/// new connection is accepted and closed at once (left in the backlog it would only fill the
/// queue and fail later), counted in `payproxy_connections_refused_total` and logged at most
/// once a second; the open connections keep being served.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    metrics: Arc<Metrics>,
    limits: impl Fn() -> ConnLimits,
    mut shutdown: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let open = metrics.connections_open.with_label_values(&[name, &addr]);
    let refused = metrics
        .connections_refused
        .with_label_values(&[name, &addr]);
    let (drain, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusals = Throttle::new(WARN_EVERY);
    let mut accept_errors = Throttle::new(WARN_EVERY);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(held_back) = accept_errors.allow() {
                        tracing::warn!(listener = name, %addr, error = %e, held_back, "accept failed");
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = until_true(&mut shutdown) => break,
        };
        let limits = limits();
        if usize::try_from(open.get()).unwrap_or(0) >= limits.max_connections {
            drop(stream);
            refused.inc();
            if let Some(held_back) = refusals.allow() {
                tracing::warn!(
                    listener = name,
                    %addr,
                    max_connections = limits.max_connections,
                    refused_since_last_warning = held_back + 1,
                    "connection limit reached: closing new connections, serving open ones"
                );
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let guard = OpenConnection::new(open.clone());
        let work = serve(Accepted {
            stream,
            peer,
            limits,
            drain: drain_rx.clone(),
        });
        connections.spawn(priority::behind(async move {
            let _guard = guard;
            work.await;
        }));
    }
    drop(listener);
    drain.send_replace(true);
    let finished = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            listener = name,
            %addr,
            open = connections.len(),
            "connections still open after the drain period; closing them"
        );
        connections.shutdown().await;
    }
}

/// Wait until `flag` is true, or its sender is gone (which ends the wait as well: nothing can
/// set it any more, and it is only dropped on the way out).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here: it must not live across an await.
    let _ = flag.wait_for(|value| *value).await;
}

/// Counts a connection in the open gauge while it lives.
struct OpenConnection(IntGauge);

impl OpenConnection {
    fn new(gauge: IntGauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// At most one log line per period, so a flood cannot flood the log too.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Serve the storefront on `listener` until `shutdown` flips, then drain.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    limits: impl Fn() -> ConnLimits,
    shutdown: watch::Receiver<bool>,
) {
    let serve_one = move |accepted: Accepted| {
        let proxy = proxy.clone();
        let tls = tls.clone();
        async move {
            let Accepted {
                stream,
                peer,
                limits,
                drain,
            } = accepted;
            let downstream = Downstream {
                client_ip: peer.ip(),
                tls: tls.is_some(),
            };
            let handler = move |request| {
                let proxy = proxy.clone();
                async move { proxy.handle(request, downstream).await }
            };
            // Each kind of connection is its own boxed future, sized for what it holds: a
            // plain connection does not carry the room of a TLS stream and its handshake
            // (every idle keep-alive connection holds its future for as long as it is open).
            let result = match tls {
                None => Box::pin(connection::serve(stream, &limits, handler, drain)).await,
                Some(acceptor) => {
                    let served = Box::pin(async move {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                            Ok(Ok(tls_stream)) => {
                                Some(connection::serve(tls_stream, &limits, handler, drain).await)
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => None,
                        }
                    });
                    match served.await {
                        Some(result) => result,
                        None => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    };
    accept_loop(listener, "storefront", metrics, limits, shutdown, serve_one).await;
}

/// Bind a listener, with a clear error naming the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let mut throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(throttle.allow_at(at(0)), Some(0));
        assert_eq!(throttle.allow_at(at(10)), None);
        assert_eq!(throttle.allow_at(at(999)), None);
        assert_eq!(throttle.allow_at(at(1000)), Some(2), "two held back");
        assert_eq!(throttle.allow_at(at(1500)), None);
        assert_eq!(throttle.allow_at(at(2500)), Some(1));
    }
}
