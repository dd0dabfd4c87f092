//! Forwarding one request to kube-apiserver: header rules (identity, hop-by-hop per
//! RFC 9110 §7.6.1, X-Forwarded-For), streaming bodies both ways, HTTP/1.1 upgrades tunnelled
//! over a dedicated HTTP/1.1 upstream connection, the access log, and upstream failures as
//! Kubernetes `Status` responses. Which upstream, over which connection, and whether to try
//! again is [`crate::upstream`]'s.

mod access;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::body::{ProxyBody, RequestBody};

use crate::config::HeaderNames;
use crate::error::ProxyError;
use crate::identity::{self, IdentityError, IdentityValues};
use crate::metrics::{Metrics, RequestLabels};
use crate::upstream::Upstream;

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
    /// With a client certificate: keeps the connection registered for re-checks and tells
    /// when it must close (revoked, expired). Upgraded tunnels hold a clone, since they
    /// outlive the HTTP connection that started them.
    pub live: Option<crate::conns::Live>,
}

/// Forwards requests: the header rules and access log around [`Upstream::send`]. Built once.
pub struct Forward {
    upstream: Arc<Upstream>,
    /// Shared with each request's trailer filter.
    headers: Arc<HeaderNames>,
    access_log: bool,
}

impl Forward {
    pub fn new(upstream: Arc<Upstream>, headers: HeaderNames, access_log: bool) -> Self {
        Self { upstream, headers: Arc::new(headers), access_log }
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
                let record = access::Record {
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
                resp.map(|body| access::Logged::new(body, record).boxed())
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

        // In a block: what is left of `parts` is dropped before the await, not kept in the future.
        let out = {
            let (mut parts, body) = req.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            identity::apply(&mut parts.headers, identity, &self.headers);
            append_forwarded_for(&mut parts.headers, &conn.forwarded_for);
            parts.headers.remove(header::HOST);
            if let Some(proto) = &upgrade {
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, proto.clone());
            }
            let names = self.headers.clone();
            let body = body.map_frame(move |frame| strip_trailer_identity(frame, &names)).boxed();
            // Method, target and headers only: the downstream request's extensions stay behind.
            let mut out = Request::new(body);
            *out.method_mut() = parts.method;
            *out.uri_mut() = parts.uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = parts.headers;
            out
        };
        let mut resp = self.upstream.send(out, upgrade.is_some(), served_by).await?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(down), Some(_)) = (downstream_upgrade, &upgrade) else {
                return Err(ProxyError::UpstreamFailed {
                    upstream: served_by.clone().unwrap_or_default(),
                    detail: "101 Switching Protocols to a request that did not ask for an upgrade".into(),
                });
            };
            let up = hyper::upgrade::on(&mut resp);
            let remote = conn.remote;
            let live = conn.live.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                metrics.open_tunnels.inc();
                tunnel(down, up, remote, live).await;
                metrics.open_tunnels.dec();
            });
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop_except_upgrade(&mut parts.headers);
            return Ok(Response::from_parts(parts, crate::body::empty()));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
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
/// The tunnel ends early when the connection is closed (its certificate revoked or expired).
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    remote: SocketAddr,
    mut live: Option<crate::conns::Live>,
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
        reason = crate::conns::closed(&mut live) => {
            tracing::info!(peer = %remote, reason = reason.label(), "closing tunnel");
        }
    }
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
