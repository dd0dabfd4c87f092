//! The downstream side: accept loop, TLS handshake on the current snapshot (with the alert
//! flushed and the client's pending bytes drained on refusal, so the client reads the alert
//! instead of a reset), identity per connection, HTTP/1.1 or HTTP/2 by ALPN, live-connection
//! enforcement (close on revocation or certificate expiry) and graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::conns::{CloseReason, CloseSignal, Registration, Registry};
use crate::forward::ConnInfo;
use crate::metrics::Metrics;
use crate::reload::State;
use crate::tls::verifier::PEER;

/// What every connection shares.
pub struct Shared {
    pub state: Arc<State>,
    pub conns: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// Counts an open connection for as long as it lives.
struct OpenGuard(Arc<Metrics>);

impl OpenGuard {
    fn new(m: &Arc<Metrics>) -> Self {
        m.open_connections.inc();
        Self(m.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Upper bounds for draining a refused client before closing its socket.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 256 * 1024;
/// After GOAWAY / close is requested on a revoked connection, how long it may take to go.
const CLOSE_LINGER: Duration = Duration::from_millis(250);

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
    let _open = OpenGuard::new(&shared.metrics);
    let snapshot = shared.state.snapshot();
    let config = shared.state.config();
    let accept = TlsAcceptor::from(snapshot.server_tls.clone()).accept(tcp).into_fallible();
    let tls = tokio::select! {
        r = tokio::time::timeout(config.tls_handshake_timeout, PEER.scope(remote, accept)) => r,
        _ = stop.changed() => return,
    };
    let tls = match tls {
        Err(_) => {
            shared.metrics.handshake("other");
            tracing::debug!(peer = %remote, "TLS handshake timed out");
            return;
        }
        Ok(Err((err, tcp))) => {
            shared.metrics.handshake(crate::error::handshake_outcome(&err));
            tracing::debug!(peer = %remote, "TLS handshake failed: {err}");
            close_after_alert(tcp).await;
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    drop(snapshot);

    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    shared.metrics.handshake(if session.peer_certificates().is_some_and(|c| !c.is_empty()) { "ok" } else { "no_cert" });
    let chain: Option<Arc<[CertificateDer<'static>]>> = session
        .peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
    // No certificate, or a certificate without CN: no identity (like a token client).
    let identity = chain.as_ref().and_then(|c| crate::identity::from_leaf(c[0].as_ref()).transpose());
    if let Some(c) = &chain {
        shared.state.fetcher().discover_from(c[0].as_ref());
    }
    let expires = match (&chain, config.close_expired_connections) {
        (Some(c), true) => not_after(&c[0]),
        _ => None,
    };
    let (registration, close) = match chain {
        Some(chain) => {
            let (r, c) = shared.conns.register(chain, remote);
            (Some(Arc::new(r)), Some(c))
        }
        None => (None, None),
    };

    let info =
        Arc::new(ConnInfo { remote, identity, close: close.clone(), registration: registration.clone(), expires });
    let io = TokioIo::new(tls);
    let state = shared.state.clone();
    let metrics = shared.metrics.clone();
    let svc = service_fn(move |req| {
        // Per request, so that a rotated front-proxy certificate applies to open connections.
        let upstream = state.snapshot().upstream.clone();
        let (info, metrics) = (info.clone(), metrics.clone());
        async move { Ok::<_, std::convert::Infallible>(upstream.handle(req, &info, &metrics).await) }
    });

    let life = Life { stop: &mut stop, close, expires, registration: registration.as_deref(), remote };
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).serve_connection(io, svc);
        drive(conn, life, |c| c.graceful_shutdown()).await;
    } else {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(config.request_header_timeout);
        let conn = b.serve_connection(io, svc).with_upgrades();
        drive(conn, life, |c| c.graceful_shutdown()).await;
    }
}

/// What can end a connection besides its client.
struct Life<'a> {
    stop: &'a mut watch::Receiver<bool>,
    close: Option<CloseSignal>,
    expires: Option<tokio::time::Instant>,
    registration: Option<&'a Registration>,
    remote: SocketAddr,
}

/// Runs a connection to completion. On shutdown it is asked to finish in-flight requests;
/// when its certificate is revoked or expires it is asked to go away (HTTP/2 GOAWAY) and
/// dropped after [`CLOSE_LINGER`], long watches included.
async fn drive<C, E>(conn: C, life: Life<'_>, graceful: impl Fn(std::pin::Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Life { stop, mut close, expires, registration, remote } = life;
    tokio::pin!(conn);
    let expiry = sleep_until(expires);
    tokio::pin!(expiry);
    let mut stopping = false;
    let mut expiry_armed = expires.is_some();
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %remote, "connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                graceful(conn.as_mut());
            }
            reason = wait_close(&mut close) => {
                tracing::info!(peer = %remote, reason = reason.label(), "closing connection");
                graceful(conn.as_mut());
                let _ = tokio::time::timeout(CLOSE_LINGER, conn.as_mut()).await;
                return;
            }
            _ = &mut expiry, if expiry_armed => {
                expiry_armed = false;
                if let Some(r) = registration {
                    r.close(CloseReason::Expired);
                }
            }
        }
    }
}

/// Resolves with the reason once the connection is told to close; never without a signal.
pub async fn wait_close(close: &mut Option<CloseSignal>) -> CloseReason {
    let Some(rx) = close else { return std::future::pending().await };
    let reason = match rx.wait_for(Option::is_some).await {
        Ok(r) => r.clone(),
        Err(_) => None,
    };
    match reason {
        Some(r) => r,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without one.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The tokio instant of a certificate's notAfter.
fn not_after(cert: &CertificateDer<'_>) -> Option<tokio::time::Instant> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let not_after = c.validity().not_after.timestamp();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let left = u64::try_from(not_after).ok()?.saturating_sub(now);
    tokio::time::Instant::now().checked_add(Duration::from_secs(left))
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
