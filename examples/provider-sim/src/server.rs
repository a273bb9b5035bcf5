//! Listeners: one accept loop per provider, HTTP/1.1 and h2c on every connection.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::provider::Provider;
use crate::service;

/// Serve `provider` on `listener` until `shutdown` fires or its sender is dropped. Open
/// connections are aborted with the loop: a stopped provider answers nothing at all.
pub(crate) fn spawn(
    listener: TcpListener,
    provider: Arc<Provider>,
    mut shutdown: watch::Receiver<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if provider.faults().outage() {
                            tracing::info!(provider = provider.name(), %peer, "outage: connection dropped");
                            drop(stream);
                            continue;
                        }
                        connections.spawn(serve_connection(stream, Arc::clone(&provider)));
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(provider = provider.name(), %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
    })
}

async fn serve_connection(stream: TcpStream, provider: Arc<Provider>) {
    // Small request/answer exchanges: do not let Nagle delay them.
    let _ = stream.set_nodelay(true);
    let name = provider.name().to_owned();
    let service = service_fn(move |req| service::serve(Arc::clone(&provider), req));
    let result = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = result {
        tracing::debug!(provider = name, %error, "connection ended with an error");
    }
}
