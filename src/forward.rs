//! Forwarding one request to kube-apiserver: header rules (identity, hop-by-hop per
//! RFC 9110 §7.6.1, X-Forwarded-For), the pooled upstream client (HTTP/1.1, or HTTP/2
//! connections from [`crate::h2pool`] with `--upstream-http2`), streaming bodies both ways,
//! HTTP/1.1 upgrades tunnelled over a dedicated HTTP/1.1 upstream connection, and upstream
//! failures as Kubernetes `Status` responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{HeaderNames, UpstreamConfig, UpstreamTarget};
use crate::error::ProxyError;
use crate::identity::{self, IdentityError, IdentityValues};
use crate::metrics::{Metrics, RequestLabels};

/// The body type flowing through the proxy, both ways.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A downstream request's body: hyper's, or hyper's seen through a wrapper (`crate::h1`).
pub trait RequestBody: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static {}
impl<B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static> RequestBody for B {}

type Connector = Deadline<HttpsConnector<HttpConnector>>;
type HttpsClient = Client<Connector, ProxyBody>;

/// A connector whose whole connect — TCP and the TLS handshake — must finish within
/// `--upstream-connect-timeout` (hyper-util's own connect timeout covers TCP only, so an
/// upstream that accepts and never answers the handshake would hold requests forever).
#[derive(Clone)]
pub struct Deadline<C> {
    inner: C,
    limit: Duration,
    /// Open connections to this upstream (`kube_crl_proxy_upstream_connections`).
    open: Gauge,
}

/// An upstream connection, counted in its upstream's gauge while it is open.
pub struct Counted<T> {
    inner: T,
    open: Gauge,
}

impl<T> Counted<T> {
    fn new(inner: T, open: Gauge) -> Self {
        open.inc();
        Self { inner, open }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

/// The connect deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("connect and TLS handshake timed out after {0:?} (--upstream-connect-timeout)")]
struct ConnectTimedOut(Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for Deadline<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Counted<C::Response>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (limit, open) = (self.limit, self.open.clone());
        let connect = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(limit, connect).await {
                Ok(r) => r.map(|io| Counted::new(io, open)).map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut(limit)) as BoxError),
            }
        })
    }
}

/// What the proxy knows about a downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `None` without a client certificate; `Some(Err)` when the certificate verified but
    /// its subject cannot be mapped safely (every request gets 403).
    /// Kept as the header values it becomes, built once for all the connection's requests.
    pub identity: Option<Result<IdentityValues, IdentityError>>,
    /// The client's address as an `X-Forwarded-For` entry.
    pub forwarded_for: HeaderValue,
    /// Fires when the connection must close (revoked, expired); upgraded tunnels watch it.
    pub close: Option<crate::conns::CloseSignal>,
    /// Keeps the connection registered for re-checks; upgraded tunnels hold a clone, since
    /// they outlive the HTTP connection that started them.
    pub registration: Option<Arc<crate::conns::Registration>>,
    /// The client certificate's notAfter, when `--close-expired-connections` is on.
    pub expires: Option<tokio::time::Instant>,
}

/// Health of one upstream, kept across reloads (indexed like `--upstream`).
#[derive(Debug, Default)]
pub struct TargetHealth {
    /// Open connections to this upstream, as exported.
    connections: Gauge,
    /// Result of the last active `/readyz` check: 0 unknown, 1 up, 2 down.
    state: AtomicU8,
    /// Passively ejected (connection failures) until this Unix time in milliseconds.
    ejected_until_ms: AtomicU64,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;
/// How long a target that refused a connection is skipped.
const EJECTION: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl TargetHealth {
    /// Health that counts its upstream's open connections in `connections`.
    pub fn new(connections: Gauge) -> Self {
        Self { connections, ..Self::default() }
    }

    /// Routable: not ejected and not known to be down.
    fn preferred(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DOWN && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    fn eject(&self) {
        self.ejected_until_ms.store(now_ms() + EJECTION.as_millis() as u64, Ordering::Relaxed);
    }
}

/// One kube-apiserver: its HTTP/2 pool (unless `--upstream-http2 false`), and the HTTP/1.1
/// pool for upgrades, for an upstream without h2, and for every request with HTTP/2 off.
pub struct Target {
    base: Uri,
    label: String,
    h2: Option<crate::h2pool::H2Pool<Connector>>,
    h1: HttpsClient,
    health: Arc<TargetHealth>,
}

/// The upstream side: every `--upstream`, header rules and the access log.
pub struct Upstream {
    targets: Vec<Target>,
    next: AtomicUsize,
    /// Shared with each request's trailer filter.
    headers: Arc<HeaderNames>,
    access_log: bool,
}

impl Target {
    fn new(
        cfg: &UpstreamConfig,
        target: &UpstreamTarget,
        tls: &rustls::ClientConfig,
        health: Arc<TargetHealth>,
    ) -> Self {
        let server_name =
            rustls_pki_types::ServerName::try_from(target.server_name.clone()).expect("validated by config");
        let connector = |tls: rustls::ClientConfig, h2: bool| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(cfg.connect_timeout));
            http.set_keepalive(Some(Duration::from_secs(60)));
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name.clone()));
            // HTTP/2 connections offer h2 and http/1.1: an upstream without h2 is then noticed
            // (crate::h2pool falls back) instead of failing the handshake.
            let inner =
                if h2 { b.enable_all_versions().wrap_connector(http) } else { b.enable_http1().wrap_connector(http) };
            Deadline { inner, limit: cfg.connect_timeout, open: health.connections.clone() }
        };
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
        let mut h1_tls = tls.clone();
        h1_tls.alpn_protocols.clear();
        // HTTP/2 connections with a stream budget each (crate::h2pool; hyper's own pool would
        // keep one connection, and requests beyond kube-apiserver's per-connection stream cap
        // would wait behind watches for ever): batched frames cost less CPU per request than a
        // connection per request in flight. HTTP/1.1 (as the HAProxy set-up) with
        // --upstream-http2 false, for upgrades, and when the upstream does not offer h2.
        let h2 = cfg.http2.then(|| {
            crate::h2pool::H2Pool::new(connector(tls.clone(), true), target.url.clone(), cfg.http2_max_streams)
        });
        Self { base: target.url.clone(), label: target.label(), h2, h1: b.build(connector(h1_tls, false)), health }
    }

    /// Sends a request to this upstream (the URI's path and query are kept).
    async fn send(&self, mut req: Request<ProxyBody>, upgrade: bool) -> Result<Response<ProxyBody>, ProxyError> {
        *req.uri_mut() = self.upstream_uri(req.uri())?;
        if let Some(pool) = self.h2.as_ref().filter(|p| !upgrade && !p.http1_only()) {
            match pool.send(req).await {
                Ok(resp) => return Ok(resp),
                // No h2 in the upstream's ALPN answer: the request comes back unsent.
                Err(crate::h2pool::PoolError::NotHttp2(unsent)) => req = *unsent,
                Err(e) => return Err(self.classify_h2(e)),
            }
        }
        match self.h1.request(req).await {
            Ok(resp) => Ok(resp.map(|body| body.boxed())),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Checks `/readyz` and records the result.
    async fn check(&self, timeout: Duration) -> bool {
        let req = Request::get("/readyz").body(http_body_util::Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
        let ok = match req {
            Ok(req) => match tokio::time::timeout(timeout, self.send(req, false)).await {
                Ok(Ok(resp)) => {
                    let ok = resp.status() == StatusCode::OK;
                    let _ = resp.into_body().collect().await;
                    ok
                }
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %self.label, "upstream health check failed: {e}");
                    false
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        let was = self.health.state.swap(if ok { UP } else { DOWN }, Ordering::Relaxed);
        if was != UNKNOWN && (was == UP) != ok {
            if ok {
                tracing::info!(upstream = %self.label, "upstream /readyz answers 200 again");
            } else {
                tracing::warn!(upstream = %self.label, "upstream /readyz does not answer 200: not routing to it");
            }
        }
        ok
    }

    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadRequest("invalid request target".into()))?);
        Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target".into()))
    }

    fn classify(&self, err: hyper_util::client::legacy::Error) -> ProxyError {
        let detail = error_chain(&err);
        match err.is_connect() {
            true => self.classify_connect(detail),
            false => ProxyError::UpstreamFailed { upstream: self.label.clone(), detail },
        }
    }

    fn classify_h2(&self, err: crate::h2pool::PoolError) -> ProxyError {
        let detail = error_chain(&err);
        match err {
            crate::h2pool::PoolError::Connect(_) => self.classify_connect(detail),
            _ => ProxyError::UpstreamFailed { upstream: self.label.clone(), detail },
        }
    }

    /// A connect error: nothing reached the upstream unless TLS itself failed.
    fn classify_connect(&self, detail: String) -> ProxyError {
        let upstream = self.label.clone();
        // Our deadline says "timed out"; hyper-util's TCP connect timeout "deadline has elapsed".
        if detail.contains("timed out") || detail.contains("timeout") || detail.contains("deadline has elapsed") {
            ProxyError::UpstreamTimeout { upstream, detail }
        } else if detail.contains("certificate") || detail.contains("tls") || detail.contains("TLS") {
            ProxyError::UpstreamFailed { upstream, detail }
        } else {
            ProxyError::UpstreamUnavailable { upstream, detail }
        }
    }
}

impl Upstream {
    /// `health` has one entry per `--upstream` and outlives reloads.
    pub fn new(
        cfg: &UpstreamConfig,
        tls: rustls::ClientConfig,
        headers: HeaderNames,
        access_log: bool,
        health: &[Arc<TargetHealth>],
    ) -> Self {
        let targets = cfg.targets.iter().zip(health).map(|(t, h)| Target::new(cfg, t, &tls, h.clone())).collect();
        Self { targets, next: AtomicUsize::new(0), headers: Arc::new(headers), access_log }
    }

    /// Checks every upstream's `/readyz`; returns how many answered 200.
    pub async fn check_all(&self, timeout: Duration) -> usize {
        let checks = self.targets.iter().map(|t| t.check(timeout));
        futures_util::future::join_all(checks).await.into_iter().filter(|ok| *ok).count()
    }

    /// The upstreams to try, in order: the routable ones starting round-robin, then the rest
    /// (a last resort when every one looks down).
    fn order(&self) -> Vec<&Target> {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let rotated = (0..n).map(|i| &self.targets[(start + i) % n]);
        let (mut good, bad): (Vec<&Target>, Vec<&Target>) = rotated.partition(|t| t.health.preferred());
        good.extend(bad);
        good
    }

    /// Proxies one request. Never fails: errors become Kubernetes `Status` responses.
    pub async fn handle<B: RequestBody>(
        &self,
        req: Request<B>,
        conn: &ConnInfo,
        metrics: &Arc<Metrics>,
    ) -> Response<ProxyBody> {
        let method = crate::metrics::method_label(req.method());
        let verb = crate::metrics::verb_class(&req);
        let access = self.access_log.then(|| (req.method().to_string(), req.uri().path().to_string(), Instant::now()));
        let (resp, served_by) = self.respond(req, conn, metrics).await;
        let status = resp.status().as_u16();
        metrics.requests.get_or_create(&RequestLabels { code: status, method, verb }).inc();
        match access {
            None => resp,
            Some((method, path, start)) => {
                let (user, groups) = match &conn.identity {
                    Some(Ok(id)) => (id.user().into_owned(), id.groups()),
                    Some(Err(_)) => ("<refused>".to_string(), String::new()),
                    None => ("<no certificate>".to_string(), String::new()),
                };
                let record = crate::access::Record {
                    peer: conn.remote,
                    user,
                    groups,
                    method,
                    verb,
                    path,
                    status,
                    upstream: served_by.unwrap_or_else(|| "-".into()),
                    start,
                };
                resp.map(|body| crate::access::Logged::new(body, record).boxed())
            }
        }
    }

    async fn respond<B: RequestBody>(
        &self,
        req: Request<B>,
        conn: &ConnInfo,
        metrics: &Arc<Metrics>,
    ) -> (Response<ProxyBody>, Option<String>) {
        let mut served_by = None;
        match self.forward(req, conn, metrics, &mut served_by).await {
            Ok(resp) => (resp, served_by),
            Err(err) => {
                match &err {
                    ProxyError::IdentityRefused(_) => tracing::warn!(
                        event = "request_refused",
                        peer = %conn.remote,
                        "{err}"
                    ),
                    _ => tracing::warn!(peer = %conn.remote, "{err}"),
                }
                (status_response(&err), served_by)
            }
        }
    }

    async fn forward<B: RequestBody>(
        &self,
        mut req: Request<B>,
        conn: &ConnInfo,
        metrics: &Arc<Metrics>,
        served_by: &mut Option<String>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let identity = match &conn.identity {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => return Err(ProxyError::IdentityRefused(e.to_string())),
        };
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed("CONNECT".into()));
        }
        let upgrade = upgrade_protocol(&req);
        let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        identity::apply(&mut parts.headers, identity, &self.headers);
        append_forwarded_for(&mut parts.headers, &conn.forwarded_for);
        parts.headers.remove(header::HOST);
        if let Some(proto) = &upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        // A request without a body can be sent again to another upstream when the first one
        // refuses the connection (nothing was sent). One with a body never is.
        let replayable = hyper::body::Body::is_end_stream(&body);
        let names = self.headers.clone();
        let mut body = Some(body.map_frame(move |frame| strip_trailer_identity(frame, &names)).boxed());

        let mut last_err = None;
        let mut resp = None;
        let order = self.order();
        let last = order.len().saturating_sub(1);
        for (i, target) in order.into_iter().enumerate() {
            let b = match body.take() {
                Some(b) => b,
                None if replayable => http_body_util::Empty::new().map_err(|n| match n {}).boxed(),
                None => break,
            };
            let mut out = Request::new(b);
            *out.method_mut() = parts.method.clone();
            *out.version_mut() = Version::HTTP_11;
            // Cloned only while another upstream may still need them (cloning copies each value).
            if i == last {
                *out.uri_mut() = std::mem::take(&mut parts.uri);
                *out.headers_mut() = std::mem::take(&mut parts.headers);
            } else {
                *out.uri_mut() = parts.uri.clone();
                *out.headers_mut() = parts.headers.clone();
            }
            let started = std::time::Instant::now();
            *served_by = Some(target.label.clone());
            match target.send(out, upgrade.is_some()).await {
                Ok(r) => {
                    metrics.upstream_latency.observe(started.elapsed().as_secs_f64());
                    resp = Some(r);
                    break;
                }
                Err(e @ (ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamTimeout { .. })) => {
                    // Nothing reached this upstream: skip it for a while, try the next.
                    target.health.eject();
                    if self.targets.len() > 1 {
                        tracing::warn!(upstream = %target.label, "{e}; trying another upstream");
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let Some(mut resp) = resp else {
            return Err(last_err.unwrap_or_else(|| ProxyError::UpstreamUnavailable {
                upstream: "every upstream".into(),
                detail: "no upstream could be reached".into(),
            }));
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(down), Some(_)) = (downstream_upgrade, &upgrade) else {
                return Err(ProxyError::UpstreamFailed {
                    upstream: served_by.clone().unwrap_or_default(),
                    detail: "101 Switching Protocols to a request that did not ask for an upgrade".into(),
                });
            };
            let up = hyper::upgrade::on(&mut resp);
            let remote = conn.remote;
            let (close, registration, expires) = (conn.close.clone(), conn.registration.clone(), conn.expires);
            let metrics = metrics.clone();
            tokio::spawn(async move {
                metrics.open_tunnels.inc();
                tunnel(down, up, remote, close, registration, expires).await;
                metrics.open_tunnels.dec();
            });
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop_except_upgrade(&mut parts.headers);
            return Ok(Response::from_parts(parts, http_body_util::Empty::new().map_err(|n| match n {}).boxed()));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// An error and its sources, one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// Builds the `Status` response for an error (the only place errors become responses).
pub fn status_response(err: &ProxyError) -> Response<ProxyBody> {
    let (code, body) = err.status_body();
    let mut resp = Response::new(Full::new(body).map_err(|n| match n {}).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Copies bytes both ways between the two upgraded connections until both sides close.
/// The tunnel ends early when the connection's certificate is revoked or expires.
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    remote: SocketAddr,
    mut close: Option<crate::conns::CloseSignal>,
    registration: Option<Arc<crate::conns::Registration>>,
    expires: Option<tokio::time::Instant>,
) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(peer = %remote, "upgrade failed: {e}");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => match r {
            Ok((to_up, to_down)) => tracing::debug!(peer = %remote, to_up, to_down, "tunnel closed"),
            Err(e) => tracing::debug!(peer = %remote, "tunnel ended: {e}"),
        },
        reason = crate::proxy::wait_close(&mut close) => {
            tracing::info!(peer = %remote, reason = reason.label(), "closing tunnel");
        }
        _ = crate::proxy::sleep_until(expires) => {
            if let Some(r) = &registration {
                r.close(crate::conns::CloseReason::Expired);
            }
            tracing::info!(peer = %remote, reason = "expired", "closing tunnel");
        }
    }
    drop(registration);
}

/// The protocol a request asks to upgrade to (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks { req.headers().get(header::UPGRADE).cloned() } else { None }
}

/// Headers that apply to one connection only (RFC 9110 §7.6.1), plus those named in
/// `Connection`. `Expect: 100-continue` is answered on the client's hop (hyper sends the
/// `100 Continue` when the body is first read), so it is not passed on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of a lookup per name.
    if !headers.keys().any(|k| k == header::UPGRADE || HOP_BY_HOP.contains(k)) {
        return;
    }
    strip_connection_listed(headers);
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
}

/// For a 101 response: keep `Connection: upgrade` and `Upgrade`, drop the rest.
fn strip_hop_by_hop_except_upgrade(headers: &mut HeaderMap) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

fn strip_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in listed {
        headers.remove(h);
    }
}

/// The client's address as an `X-Forwarded-For` entry (IPv4-mapped IPv6 as IPv4).
pub fn forwarded_for(remote: SocketAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(remote.ip().to_canonical().to_string()))
        .expect("an IP address is a valid header value")
}

/// Appends the client's address (`entry`, from [`forwarded_for`]) to `X-Forwarded-For`, as
/// one header line: kube-apiserver reads only the first line, so a second line would hide
/// our entry.
fn append_forwarded_for(headers: &mut HeaderMap, entry: &HeaderValue) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut values: Vec<&str> =
        headers.get_all(&xff).iter().filter_map(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        headers.insert(xff, entry.clone());
        return;
    }
    values.push(entry.to_str().unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&values.join(", ")) {
        headers.insert(xff, v);
    }
}

/// Request trailers never carry identity either.
fn strip_trailer_identity(frame: hyper::body::Frame<Bytes>, names: &HeaderNames) -> hyper::body::Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            identity::apply(&mut trailers, None, names);
            hyper::body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, vec!["accept", "authorization"]);
    }

    #[test]
    fn forwarded_for_is_one_line_with_ours_last() {
        let remote: SocketAddr = "[::ffff:10.0.0.7]:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &forwarded_for(remote));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.7");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        append_forwarded_for(&mut h, &forwarded_for(remote));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7");
    }

    #[test]
    fn upgrade_needs_connection_token_and_http11() {
        let req = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "SPDY/3.1")
            .body(())
            .unwrap();
        assert_eq!(upgrade_protocol(&req).unwrap(), "SPDY/3.1");
        let req = Request::builder().header("upgrade", "websocket").body(()).unwrap();
        assert!(upgrade_protocol(&req).is_none());
        let req = Request::builder()
            .version(Version::HTTP_2)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(upgrade_protocol(&req).is_none());
    }
}
