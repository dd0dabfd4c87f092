//! The downstream side: accept loop, TLS handshake (with the alert flushed and the client's
//! pending bytes drained on refusal, so the client reads the alert instead of a reset),
//! identity per connection, HTTP/1.1 or HTTP/2 by ALPN, and graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::forward::{ConnInfo, Upstream};
use crate::tls::verifier::PEER;

/// What every connection shares.
pub struct Shared {
    pub server_tls: Arc<rustls::ServerConfig>,
    pub upstream: Upstream,
    pub handshake_timeout: Duration,
    pub request_header_timeout: Duration,
}

/// Upper bounds for draining a refused client before closing its socket.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 256 * 1024;

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish for
/// up to `grace` and returns.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone; when all are dropped, `recv` returns None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let shared = shared.clone();
                    let stop = stop_rx.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        connection(tcp, remote, shared, stop).await;
                        drop(done);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?grace, "shutting down: no longer accepting, draining in-flight requests");
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

async fn connection(tcp: TcpStream, remote: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let accept = TlsAcceptor::from(shared.server_tls.clone()).accept(tcp).into_fallible();
    let tls = tokio::select! {
        r = tokio::time::timeout(shared.handshake_timeout, PEER.scope(remote, accept)) => r,
        _ = stop.changed() => return,
    };
    let tls = match tls {
        Err(_) => {
            tracing::debug!(peer = %remote, "TLS handshake timed out");
            return;
        }
        Ok(Err((err, tcp))) => {
            tracing::debug!(peer = %remote, "TLS handshake failed: {err}");
            close_after_alert(tcp).await;
            return;
        }
        Ok(Ok(tls)) => tls,
    };

    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    // No certificate, or a certificate without CN: no identity (like a token client).
    let identity = session
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| crate::identity::from_leaf(leaf.as_ref()).transpose());
    let info = Arc::new(ConnInfo { remote, identity });
    let header_timeout = shared.request_header_timeout;
    let io = TokioIo::new(tls);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let info = info.clone();
        async move { Ok::<_, std::convert::Infallible>(shared.upstream.handle(req, &info).await) }
    });

    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).serve_connection(io, svc);
        drive(conn, &mut stop, |c| c.graceful_shutdown()).await;
    } else {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(header_timeout);
        let conn = b.serve_connection(io, svc).with_upgrades();
        drive(conn, &mut stop, |c| c.graceful_shutdown()).await;
    }
}

/// Runs a connection to completion; on shutdown, asks it to finish in-flight requests.
async fn drive<C, E>(conn: C, stop: &mut watch::Receiver<bool>, graceful: impl FnOnce(std::pin::Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// After a refused handshake: the alert has been written; send FIN, then read and discard
/// what the client already sent (its Finished, early requests) for a bounded time, so the
/// kernel does not answer them with a reset that could destroy the alert before the client
/// reads it.
async fn close_after_alert(mut tcp: TcpStream) {
    let _ = tcp.flush().await;
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut total = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while total < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}
