//! The HTTP server loop: accepts connections, bounds what a slow or hostile client can hold,
//! and serves the router over HTTP/1.1 (optionally inside TLS).
//!
//! - A client must send its request line and headers within `header_read_timeout_ms`
//!   (hyper's header-read timer), its body within `body_read_timeout_ms` (the body is read
//!   by the authentication middleware under that limit), and the whole request is bounded by
//!   `request_timeout_ms` (answered in the envelope by the `api` layer).
//! - One peer address may hold at most `connections_per_peer_max` connections; beyond it new
//!   connections are closed at once (and counted), so one client cannot take every slot.
//! - TLS handshakes run in each connection's own task under a timeout, never on the accept
//!   path.
//! - On shutdown the loop stops accepting and lets open connections finish their current
//!   request (hyper's graceful shutdown), bounded by the caller's deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What the loop bounds.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub connections_per_peer_max: usize,
    /// Longest a TLS handshake may take (it runs off the accept path).
    pub handshake_timeout: Duration,
    /// Longest shutdown waits for open connections to finish.
    pub drain_deadline: Duration,
}

/// Open connections per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// Counts one connection of a peer while it lives.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let peers = Arc::new(Peers::default());
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = peers.enter(peer.ip(), limits.connections_per_peer_max) else {
            metrics::counter!("ledger_connections_refused_total").increment(1);
            tracing::debug!(%peer, "too many connections from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            }
        });
        let http = http.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => return log_handshake(peer, &e),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    let conn = http.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain deadline");
    }
    Ok(())
}

fn log_handshake(peer: SocketAddr, e: &std::io::Error) {
    tracing::debug!(%peer, error = %e, "TLS handshake failed");
}
