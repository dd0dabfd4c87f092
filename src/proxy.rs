//! The downstream side: accept loop, TLS handshake on the current snapshot (with the alert
//! flushed and the client's pending bytes drained on refusal, so the client reads the alert
//! instead of a reset), identity per connection, HTTP/1.1 or HTTP/2 by ALPN, live-connection
//! enforcement (close on revocation or certificate expiry) and graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::body::{ProxyBody, RequestBody};
use crate::conns::{CloseReason, CloseSignal, Registration, Registry};
use crate::forward::{ConnInfo, Forward};
use crate::metrics::Metrics;
use crate::reload::State;
use crate::revocation::VerifiedPath;
use crate::tls::stream::TlsStream;
use crate::tls::verifier::{HANDSHAKE, Handshake};

/// What every connection shares.
pub struct Shared {
    pub state: Arc<State>,
    /// Header rules and access log around the upstream (built once).
    pub forward: Arc<Forward>,
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
pub(crate) const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish for
/// up to `grace` and returns.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone; when all are dropped, `recv` returns None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(shared.state.config().limits.max_connections));
    let mut last_refusal_log = None::<tokio::time::Instant>;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Over --max-connections: close at once, before any TLS work.
                        shared.metrics.refused_connections.inc();
                        if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(peer = %remote, "refusing connections: --max-connections reached");
                            last_refusal_log = Some(tokio::time::Instant::now());
                        }
                        drop(tcp);
                        continue;
                    };
                    let shared = shared.clone();
                    let stop = stop_rx.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        connection(tcp, remote, shared, stop).await;
                        drop(permit);
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

// The connection task's own state is kept small: the handshake and the HTTP connection are
// separate boxed futures, so that an idle connection holds only the state it is in, not a
// slot as large as the largest state (handshake, or the drain after a refusal), which is
// what a task's future otherwise costs (see "What profiling found" in bench/README.md).
async fn connection(tcp: TcpStream, remote: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let _open = OpenGuard::new(&shared.metrics);
    let Some((tls, rechecks, verified)) = Box::pin(handshake(tcp, remote, &shared, &mut stop)).await else { return };
    serve_http(tls, rechecks, verified, remote, &shared, shared.state.config(), stop).await;
}

/// The TLS handshake on the current snapshot, returned with the number of open-connection
/// re-checks started before it began and the client's verified path (if it presented a
/// certificate); `None` when it failed (after the refused client has been given its alert),
/// timed out, or shutdown began.
async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TlsStream, u64, Option<Arc<VerifiedPath>>)> {
    let rechecks = shared.conns.rechecks();
    let snapshot = shared.state.snapshot();
    let timeout = shared.state.config().tls_handshake_timeout;
    let accept = TlsStream::accept(tcp, snapshot.server_tls.clone());
    let slot = Handshake::new(remote);
    let tls = tokio::select! {
        r = tokio::time::timeout(timeout, HANDSHAKE.scope(slot.clone(), accept)) => r,
        _ = stop.changed() => return None,
    };
    match tls {
        Err(_) => {
            shared.metrics.handshake("other");
            tracing::debug!(peer = %remote, "TLS handshake timed out");
            None
        }
        Ok(Err((err, tcp))) => {
            shared.metrics.handshake(crate::error::handshake_outcome(&err));
            tracing::debug!(peer = %remote, "TLS handshake failed: {err}");
            close_after_alert(tcp).await;
            None
        }
        Ok(Ok(tls)) => Some((tls, rechecks, slot.take_verified())),
    }
}

/// Sets up the HTTP side of a connection after its handshake (identity, registration,
/// service, hyper connection) and returns it as one boxed future, so that none of it is part
/// of the connection task's own state.
fn serve_http(
    tls: TlsStream,
    rechecks: u64,
    verified: Option<Arc<VerifiedPath>>,
    remote: SocketAddr,
    shared: &Shared,
    config: &crate::config::Config,
    stop: watch::Receiver<bool>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    let session = tls.session();
    let h2 = session.alpn_protocol() == Some(b"h2");
    shared.metrics.handshake(if session.peer_certificates().is_some_and(|c| !c.is_empty()) { "ok" } else { "no_cert" });
    let chain: Option<Arc<[CertificateDer<'static>]>> = session
        .peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
    // The leaf is parsed once for identity, expiry and distribution points. No certificate,
    // or one without CN: no identity (like a token client).
    let (identity, expires) = match &chain {
        None => (None, None),
        Some(c) => match x509_parser::parse_x509_certificate(c[0].as_ref()) {
            Ok((_, leaf)) => {
                shared.state.fetcher().discover_from(&leaf);
                let expires =
                    config.close_expired_connections.then(|| instant_of(leaf.validity().not_after.timestamp()));
                (crate::identity::from_parsed(&leaf, c[0].as_ref()).transpose(), expires.flatten())
            }
            Err(e) => (Some(Err(crate::identity::IdentityError::Parse(e.to_string()))), None),
        },
    };
    // The path the verifier accepted (kept for re-checks instead of the chain: they need no
    // signature checks). Always there when a certificate was accepted; verified again if not.
    let path = chain.as_ref().and_then(|c| {
        verified.or_else(|| {
            let now = rustls_pki_types::UnixTime::now();
            shared.state.snapshot().verifier.verified_path(&c[0], &c[1..], now).ok().map(Arc::new)
        })
    });
    let (registration, close) = match (chain, path) {
        (Some(chain), Some(path)) => {
            let (r, c) = shared.conns.register(path, chain[0].clone(), remote);
            // A re-check that started during the handshake (a reload, an OCSP answer that
            // changed, the periodic one) ran before this connection was among them: check it
            // against what is current now.
            if shared.conns.rechecks() != rechecks {
                r.recheck(&shared.state.snapshot().verifier, rustls_pki_types::UnixTime::now());
            }
            (Some(Arc::new(r)), Some(c))
        }
        _ => (None, None),
    };

    // As header values: every request of the connection clones them. The strings passed the
    // control-character check, so the conversion cannot fail; if it ever did, the client is
    // refused rather than forwarded without its identity.
    let identity = identity
        .map(|r| r.and_then(|id| id.values().ok_or(crate::identity::IdentityError::ControlCharacter("subject"))));
    let info = Arc::new(ConnInfo {
        remote,
        identity,
        forwarded_for: crate::forward::forwarded_for(remote),
        close: close.clone(),
        registration: registration.clone(),
        expires,
    });
    let forward = shared.forward.clone();
    let metrics = shared.metrics.clone();
    let activity = Arc::new(Activity::default());
    let svc_activity = activity.clone();
    let limits = config.limits;
    let life = Life { stop, close, expires, registration, remote, activity, idle_timeout: limits.idle_timeout };
    if h2 {
        let svc = service_fn(move |req| respond(req, &forward, &info, &metrics, &svc_activity));
        let io = TokioIo::new(tls);
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
            .serve_connection(io, svc);
        // Boxed on its own: `drive` keeps its argument's slot for its whole life besides the
        // pinned copy it polls, so the 2.7 kB connection passed by value was held twice.
        Box::pin(drive(Box::pin(conn), life, |c| c.get_mut().as_mut().graceful_shutdown()))
    } else {
        let svc = service_fn(move |req| {
            let req = crate::h1::on_request(&svc_activity, req);
            // Boxed: hyper's HTTP/1.1 server keeps a slot of the service future's size for
            // each connection; boxed, the slot is one pointer and the future (4 kB) lives only
            // while a request does. (HTTP/2 runs each request's future as its own task: boxing
            // it there would only add an allocation and a copy.)
            Box::pin(respond(req, &forward, &info, &metrics, &svc_activity)) as BoxedResponse
        });
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(config.request_header_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size((limits.max_header_bytes + 64 * 1024).max(8192));
        Box::pin(crate::h1::serve(Box::new(tls), svc, b, life, config.request_header_timeout))
    }
}

/// The service: one request, forwarded upstream; counted in flight until its response body
/// ends.
fn respond<B: RequestBody>(
    req: hyper::Request<B>,
    forward: &Arc<Forward>,
    info: &Arc<ConnInfo>,
    metrics: &Arc<Metrics>,
    activity: &Arc<Activity>,
) -> impl Future<Output = Result<hyper::Response<ProxyBody>, std::convert::Infallible>> + Send + use<B> {
    let (forward, info, metrics) = (forward.clone(), info.clone(), metrics.clone());
    let busy = activity.start();
    async move {
        let resp = forward.handle(req, &info, &metrics).await;
        Ok(resp.map(|body| Tracked { body, _busy: busy }.boxed()))
    }
}

/// The HTTP/1.1 service's future, boxed (see `connection`).
type BoxedResponse =
    std::pin::Pin<Box<dyn Future<Output = Result<hyper::Response<ProxyBody>, std::convert::Infallible>> + Send>>;

/// What can end a connection besides its client.
pub(crate) struct Life {
    pub stop: watch::Receiver<bool>,
    pub close: Option<CloseSignal>,
    pub expires: Option<tokio::time::Instant>,
    pub registration: Option<Arc<Registration>>,
    pub remote: SocketAddr,
    pub activity: Arc<Activity>,
    pub idle_timeout: Duration,
}

/// Requests in flight on a connection (until their response body ends) and when the last
/// one ended, for `--idle-timeout`; for HTTP/1.1 also what parking needs (`crate::h1`).
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// Milliseconds since `epoch` of the last request end (or the connection start).
    last_end_ms: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
    pub park: crate::h1::Park,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn start(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Records now as the last request end (done once at the connection start).
    pub fn mark_end(&self) {
        self.last_end_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// When the last request ended (or the connection started).
    pub fn last_end(&self) -> tokio::time::Instant {
        let ago = self.now_ms().saturating_sub(self.last_end_ms.load(Ordering::Relaxed));
        tokio::time::Instant::now() - Duration::from_millis(ago)
    }

    /// Idle for at least `timeout`: nothing in flight since then.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.now_ms().saturating_sub(self.last_end_ms.load(Ordering::Relaxed)) >= timeout.as_millis() as u64
    }
}

/// One request in flight; ends when dropped (with its response body).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_end();
        self.0.park.request_ended();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it ends or is dropped.
struct Tracked {
    body: ProxyBody,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Runs a connection to completion. On shutdown it is asked to finish in-flight requests;
/// when its certificate is revoked or expires it is asked to go away (HTTP/2 GOAWAY) and
/// dropped after [`CLOSE_LINGER`], long watches included.
async fn drive<C, E>(conn: C, life: Life, graceful: impl Fn(std::pin::Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Life { mut stop, mut close, expires, registration, remote, activity, idle_timeout } = life;
    activity.mark_end();
    // One deadline per connection for `--idle-timeout`, re-armed when it finds the connection
    // busy: a wake-up per timeout, not a periodic tick (which cost idle HTTP/2 connections
    // CPU in proportion to their number).
    let idle_deadline = tokio::time::sleep_until(activity.last_end() + idle_timeout);
    tokio::pin!(idle_deadline);
    let mut idle_closing = false;
    tokio::pin!(conn);
    let mut expiry = expires.map(|at| Box::pin(tokio::time::sleep_until(at)));
    let mut stopping = false;
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
            () = &mut idle_deadline, if !idle_closing && !stopping => {
                if activity.idle_for(idle_timeout) {
                    tracing::debug!(peer = %remote, "closing idle connection (--idle-timeout)");
                    idle_closing = true;
                    graceful(conn.as_mut());
                } else {
                    let now = tokio::time::Instant::now();
                    let next = if activity.in_flight() > 0 { now + idle_timeout } else { activity.last_end() + idle_timeout };
                    idle_deadline.as_mut().reset(next.max(now + Duration::from_millis(10)));
                }
            }
            _ = expired(&mut expiry, &registration) => {}
        }
    }
}

/// Resolves when the certificate has expired, after telling its registration (which fires
/// `close`); never without an expiry, nor again after it fired.
pub(crate) async fn expired(
    expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    registration: &Option<Arc<Registration>>,
) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
    *expiry = None;
    if let Some(r) = registration {
        r.close(CloseReason::Expired);
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

/// The tokio instant at which a certificate with this notAfter (Unix seconds) has expired:
/// it is valid through that second, as the verifier judges it, so one second later.
fn instant_of(not_after: i64) -> Option<tokio::time::Instant> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    let expired_at = Duration::from_secs(u64::try_from(not_after).ok()?.saturating_add(1));
    tokio::time::Instant::now().checked_add(expired_at.saturating_sub(now))
}

/// After a refused handshake: the alert has been written; send FIN, then read and discard
/// what the client already sent (its Finished, early requests) for a bounded time, so the
/// kernel does not answer them with a reset that could destroy the alert before the client
/// reads it.
async fn close_after_alert(mut tcp: TcpStream) {
    let _ = tcp.flush().await;
    let _ = tcp.shutdown().await;
    let mut buf = vec![0u8; 8192];
    let mut total = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while total < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}
