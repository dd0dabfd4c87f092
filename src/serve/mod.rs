//! The downstream side: accept loop, TLS handshake on the current snapshot (with the alert
//! flushed and the client's pending bytes drained on refusal, so the client reads the alert
//! instead of a reset), identity per connection, HTTP/1.1 or HTTP/2 by ALPN, live-connection
//! enforcement (close on revocation or certificate expiry) and graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

mod h1;
mod life;

use crate::body::{ProxyBody, RequestBody};
use crate::conns::Registry;
use crate::forward::{ConnInfo, Forward};
use crate::metrics::Metrics;
use crate::reload::State;
use crate::revocation::VerifiedPath;
use crate::tls::stream::TlsStream;
use crate::tls::verifier::{HANDSHAKE, Handshake};
use life::{Activity, Busy, End, Idle, Life};

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
    // The leaf is parsed once for identity and distribution points. No certificate, or one
    // without CN: no identity (like a token client).
    let identity = match &chain {
        None => None,
        Some(c) => match x509_parser::parse_x509_certificate(c[0].as_ref()) {
            Ok((_, leaf)) => {
                shared.state.fetcher().discover_from(&leaf);
                crate::identity::from_parsed(&leaf, c[0].as_ref()).transpose()
            }
            Err(e) => Some(Err(crate::identity::IdentityError::Parse(e.to_string()))),
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
    let live = path.map(|path| {
        let live = shared.conns.register(path, remote);
        // A re-check that started during the handshake (a reload, an OCSP answer that
        // changed, the periodic one) ran before this connection was among them: check it
        // against what is current now.
        if shared.conns.rechecks() != rechecks {
            live.recheck(&shared.state.snapshot().verifier, rustls_pki_types::UnixTime::now());
        }
        live
    });

    // As header values: every request of the connection clones them. The strings passed the
    // control-character check, so the conversion cannot fail; if it ever did, the client is
    // refused rather than forwarded without its identity.
    let identity = identity
        .map(|r| r.and_then(|id| id.values().ok_or(crate::identity::IdentityError::ControlCharacter("subject"))));
    let info = Arc::new(ConnInfo {
        remote,
        identity,
        forwarded_for: crate::forward::forwarded_for(remote),
        live: live.clone(),
    });
    let forward = shared.forward.clone();
    let metrics = shared.metrics.clone();
    let limits = config.limits;
    let life = Life::new(stop, live, remote, limits.idle_timeout);
    let activity = life.activity.clone();
    if h2 {
        // Boxed: hyper spawns each request's future as a task (in `H2Stream`), and moving the
        // 4 kB future into the task's cell copied it twice, about 3k of the ~117k
        // instructions per request (callgrind, `bench/harness/instructions.py`); boxed, the
        // task moves a pointer, for one allocation.
        let svc = service_fn(move |req| Box::pin(respond(req, &forward, &info, &metrics, &activity)) as BoxedResponse);
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
        let park = Arc::new(h1::Park::default());
        let svc_park = park.clone();
        let svc = service_fn(move |req| {
            let req = h1::on_request(&svc_park, req);
            // Boxed: hyper's HTTP/1.1 server keeps a slot of the service future's size for
            // each connection; boxed, the slot is one pointer and the future (4 kB) lives only
            // while a request does.
            Box::pin(respond(req, &forward, &info, &metrics, &activity)) as BoxedResponse
        });
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(config.request_header_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size((limits.max_header_bytes + 64 * 1024).max(8192));
        Box::pin(h1::serve(Box::new(tls), svc, b, life, park, config.request_header_timeout))
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

/// The service's future, boxed (see `serve_http`).
type BoxedResponse =
    std::pin::Pin<Box<dyn Future<Output = Result<hyper::Response<ProxyBody>, std::convert::Infallible>> + Send>>;

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

/// Runs an HTTP/2 connection to completion. On shutdown or when idle it is asked to finish
/// in-flight requests (GOAWAY); when its certificate is revoked or expires it is cut: dropped
/// at once, long watches included (see [`life`]).
async fn drive<C, E>(conn: C, mut life: Life, graceful: impl Fn(std::pin::Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    // Once an idle connection was asked to go: when it is cut if it has not gone (its
    // client does not answer the GOAWAY's PING).
    let mut cut_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %life.remote, "connection ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep_until(cut_at.unwrap_or_else(tokio::time::Instant::now)), if cut_at.is_some() => {
                tracing::debug!(peer = %life.remote, "cutting idle connection: its client did not finish closing");
                return;
            }
            end = life.next(Idle::Timeout) => match end {
                End::Shutdown => graceful(conn.as_mut()),
                End::Idle => {
                    tracing::debug!(peer = %life.remote, "closing idle connection (--idle-timeout)");
                    graceful(conn.as_mut());
                    cut_at = Some(tokio::time::Instant::now() + life::IDLE_CLOSE_BOUND);
                }
                End::Close(reason) => {
                    // Cut (see `life`): the connection is dropped on return.
                    tracing::debug!(peer = %life.remote, reason = reason.label(), "cutting connection");
                    return;
                }
            }
        }
    }
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
