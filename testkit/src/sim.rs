//! A small kube-apiserver stand-in used as the upstream behind the proxy (by the
//! `demo` command and by integration tests).
//!
//! This module owns: the simulator's TLS setup (optional client certificates
//! verified against the client CA and the front-proxy CA), per-connection
//! classification of the client certificate, kube-apiserver style
//! authentication (requestheader, x509, static bearer token, anonymous — in
//! that order), a handful of API endpoints (discovery, SelfSubjectReview,
//! pods list/watch, exec/attach/portforward upgrades echoing raw bytes) and
//! `/_sim/*` debug endpoints for tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

const ANONYMOUS_USER: &str = "system:anonymous";
const AUTHENTICATED_GROUP: &str = "system:authenticated";
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
const BYTES_CAP: u64 = 64 * 1024 * 1024;
const BYTES_CHUNK: u64 = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Kubernetes `UserInfo` as reported in a SelfSubjectReview.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Simulator configuration, mirroring the relevant kube-apiserver flags.
pub struct SimConfig {
    pub serving_chain: Vec<CertificateDer<'static>>,
    pub serving_key: PrivateKeyDer<'static>,
    /// CAs for direct x509 client-cert users (`--client-ca-file`); may be empty.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// `--requestheader-client-ca-file`.
    pub requestheader_ca: Vec<CertificateDer<'static>>,
    /// `--requestheader-allowed-names`; empty = any CN signed by `requestheader_ca`.
    pub requestheader_allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_header_prefixes: Vec<String>,
    /// Static bearer tokens.
    pub tokens: Vec<(String, UserInfo)>,
}

/// Errors building the simulator's TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid CA certificate: {0}")]
    CaCertificate(rustls::Error),
    #[error("building client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("building TLS server config: {0}")]
    Tls(#[from] rustls::Error),
}

/// Which authenticator accepted a request (reported in `x-sim-auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthMethod {
    RequestHeader,
    X509,
    Token,
    Anonymous,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::RequestHeader => "requestheader",
            AuthMethod::X509 => "x509",
            AuthMethod::Token => "token",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

/// What the connection's client certificate entitles it to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PeerIdentity {
    /// Subject CN of the presented leaf, if any.
    cn: Option<String>,
    /// Verified against `requestheader_ca` with an allowed CN.
    front_proxy: bool,
    /// Verified against `client_ca` and has a non-empty CN.
    x509_user: Option<UserInfo>,
}

struct ConnCtx {
    peer: PeerIdentity,
    local_addr: Option<SocketAddr>,
    /// The client's address: tells tests which upstream connection carried a request.
    remote_addr: Option<SocketAddr>,
    stop: watch::Receiver<()>,
    /// `/_sim/goaway`: shut this connection down gracefully (HTTP/2 GOAWAY), as a
    /// kube-apiserver does when it sheds load or restarts.
    goaway: Arc<tokio::sync::Notify>,
}

/// Build the rustls server config: ALPN h2 + http/1.1, optional client certs
/// verified against the union of `client_ca` and `requestheader_ca`.
pub fn server_tls_config(config: &SimConfig) -> Result<ServerConfig, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in config.client_ca.iter().chain(&config.requestheader_ca) {
        roots.add(ca.clone()).map_err(SimError::CaCertificate)?;
    }
    let verifier = if roots.is_empty() {
        WebPkiClientVerifier::no_client_auth()
    } else {
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?
    };
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(config.serving_chain.clone(), config.serving_key.clone_key())?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Serve until `shutdown` resolves; then stop accepting and return (open
/// connections and upgraded streams are dropped).
pub async fn serve(
    listener: TcpListener,
    config: Arc<SimConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = server_tls_config(&config).map_err(std::io::Error::other)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    // Dropping `_stop_tx` on return makes every `stop.changed()` resolve.
    let (_stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let conn = serve_connection(tcp, acceptor.clone(), config.clone(), stop_rx.clone());
                    tokio::spawn(conn);
                }
                Err(err) => {
                    tracing::warn!(%err, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    config: Arc<SimConfig>,
    mut stop: watch::Receiver<()>,
) {
    let local_addr = tcp.local_addr().ok();
    let remote_addr = tcp.peer_addr().ok();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return tracing::debug!(%err, "sim: TLS handshake failed"),
        Err(_) => return tracing::debug!("sim: TLS handshake timed out"),
    };
    let peer = match tls.get_ref().1.peer_certificates() {
        Some(chain) => identify_peer(&config, chain),
        None => PeerIdentity::default(),
    };
    let goaway = Arc::new(tokio::sync::Notify::new());
    let ctx = Arc::new(ConnCtx { peer, local_addr, remote_addr, stop: stop.clone(), goaway: goaway.clone() });
    let service = service_fn(move |req| handle(req, ctx.clone(), config.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(tls), service));
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(err) = res {
                    tracing::debug!(%err, "sim: connection error");
                }
                return;
            }
            () = goaway.notified(), if !closing => {
                // HTTP/2: GOAWAY, streams in flight finish, new ones are refused.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed() => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Client certificate classification

fn identify_peer(config: &SimConfig, chain: &[CertificateDer<'static>]) -> PeerIdentity {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return PeerIdentity::default();
    };
    let (cn, orgs) = subject_cn_and_orgs(leaf);
    let front_proxy = chain_verifies(leaf, intermediates, &config.requestheader_ca)
        && front_proxy_name_allowed(&config.requestheader_allowed_names, cn.as_deref());
    let x509_user = match &cn {
        Some(name) if !name.is_empty() && chain_verifies(leaf, intermediates, &config.client_ca) => {
            let credential_id = format!("X509SHA256={}", hex::encode(Sha256::digest(leaf)));
            Some(UserInfo {
                username: name.clone(),
                uid: String::new(),
                groups: orgs,
                extra: BTreeMap::from([(CREDENTIAL_ID_KEY.to_owned(), vec![credential_id])]),
            })
        }
        _ => None,
    };
    PeerIdentity { cn, front_proxy, x509_user }
}

fn front_proxy_name_allowed(allowed: &[String], cn: Option<&str>) -> bool {
    allowed.is_empty() || cn.is_some_and(|cn| allowed.iter().any(|a| a == cn))
}

/// Subject CN (first) and all O values, in order.
fn subject_cn_and_orgs(der: &CertificateDer<'_>) -> (Option<String>, Vec<String>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (None, Vec::new());
    };
    let subject = cert.subject();
    let cn = subject.iter_common_name().find_map(|a| a.as_str().ok()).map(str::to_owned);
    let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_owned);
    (cn, orgs.collect())
}

fn chain_verifies(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
) -> bool {
    let anchors: Vec<_> = roots.iter().filter_map(|c| webpki::anchor_from_trusted_cert(c).ok()).collect();
    if anchors.is_empty() {
        return false;
    }
    let Ok(end_entity) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let algs: &[&dyn SignatureVerificationAlgorithm] =
        rustls::crypto::ring::default_provider().signature_verification_algorithms.all;
    end_entity
        .verify_for_usage(algs, &anchors, intermediates, UnixTime::now(), webpki::KeyUsage::client_auth(), None, None)
        .is_ok()
}

// ---------------------------------------------------------------------------
// Authentication (union order of kube-apiserver)

fn authenticate(config: &SimConfig, peer: &PeerIdentity, headers: &HeaderMap) -> (AuthMethod, UserInfo) {
    let found = peer
        .front_proxy
        .then(|| user_from_request_headers(config, headers))
        .flatten()
        .map(|u| (AuthMethod::RequestHeader, u))
        .or_else(|| peer.x509_user.clone().map(|u| (AuthMethod::X509, u)))
        .or_else(|| user_from_bearer_token(config, headers).map(|u| (AuthMethod::Token, u)));
    match found {
        Some((method, user)) => (method, with_authenticated_group(user)),
        None => (AuthMethod::Anonymous, anonymous_user()),
    }
}

fn anonymous_user() -> UserInfo {
    UserInfo {
        username: ANONYMOUS_USER.to_owned(),
        groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
        ..UserInfo::default()
    }
}

/// Like k8s `AuthenticatedGroupAdder`: leave users that already carry
/// system:authenticated or system:unauthenticated alone.
fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    let marked = user.groups.iter().any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP);
    if !marked {
        user.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    user
}

fn header_names(names: &[String]) -> impl Iterator<Item = &str> {
    names.iter().map(|n| n.trim()).filter(|n| !n.is_empty())
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// First non-empty value among the first values of `names`, in order.
fn first_header_value(headers: &HeaderMap, names: &[String]) -> Option<String> {
    header_names(names).filter_map(|n| headers.get(n)).map(lossy).find(|v| !v.is_empty())
}

fn user_from_request_headers(config: &SimConfig, headers: &HeaderMap) -> Option<UserInfo> {
    let username = first_header_value(headers, &config.username_headers)?;
    let groups = header_names(&config.group_headers)
        .flat_map(|n| headers.get_all(n).iter().map(lossy))
        .filter(|v| !v.is_empty())
        .collect();
    let uid = first_header_value(headers, &config.uid_headers).unwrap_or_default();
    let extra = extras_from_headers(headers, &config.extra_header_prefixes);
    Some(UserInfo { username, uid, groups, extra })
}

fn extras_from_headers(headers: &HeaderMap, prefixes: &[String]) -> BTreeMap<String, Vec<String>> {
    let prefixes: Vec<String> = header_names(prefixes).map(str::to_ascii_lowercase).collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in headers.keys() {
        let lower = name.as_str().to_ascii_lowercase();
        for prefix in &prefixes {
            if let Some(rest) = lower.strip_prefix(prefix.as_str()) {
                let values = headers.get_all(name).iter().map(lossy);
                extra.entry(unescape_extra_key(rest)).or_default().extend(values);
            }
        }
    }
    extra
}

/// Percent-decode an extra key like Go's `url.PathUnescape`; on failure the
/// raw key is kept.
fn unescape_extra_key(raw: &str) -> String {
    percent_decode(raw).unwrap_or_else(|| raw.to_owned())
}

fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn user_from_bearer_token(config: &SimConfig, headers: &HeaderMap) -> Option<UserInfo> {
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = auth.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    config.tokens.iter().find(|(t, _)| t == token).map(|(_, u)| u.clone())
}

// ---------------------------------------------------------------------------
// Routing and endpoints

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
    config: Arc<SimConfig>,
) -> Result<Response<Body>, Infallible> {
    let (method, user) = authenticate(&config, &ctx.peer, req.headers());
    let mut resp = route(req, &ctx, method, &user).await;
    resp.headers_mut().insert("x-sim-auth", HeaderValue::from_static(method.as_str()));
    Ok(resp)
}

async fn route(req: Request<Incoming>, ctx: &ConnCtx, auth: AuthMethod, user: &UserInfo) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ok = StatusCode::OK;
    if let ["api", "v1", "namespaces", _, "pods", _, "exec" | "attach" | "portforward"] = segments[..] {
        return upgrade_and_echo(req, ctx);
    }
    match (req.method().clone(), &segments[..]) {
        (Method::GET, ["version"]) => json_text(ok, VERSION_JSON),
        (Method::GET, ["readyz" | "livez" | "healthz"]) => respond(ok, "text/plain; charset=utf-8", full_body("ok")),
        (Method::GET, ["api"]) => json_response(ok, &api_versions(ctx.local_addr)),
        (Method::GET, ["api", "v1"]) => json_text(ok, CORE_V1_JSON),
        (Method::GET, ["apis"]) => json_text(ok, API_GROUP_LIST_JSON),
        (Method::GET, ["apis", "authentication.k8s.io", "v1"]) => json_text(ok, AUTHENTICATION_V1_JSON),
        (Method::POST, ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"]) => {
            drain_body(req.into_body()).await;
            json_response(StatusCode::CREATED, &self_subject_review(user))
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => list_or_watch_pods(ns, query),
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", "demo"]) => json_response(ok, &pod(ns, 1)),
        (Method::GET, ["_sim", "headers"]) => json_response(ok, &debug_headers(&req, ctx, auth, user)),
        (Method::POST, ["_sim", "echo"]) => Response::new(req.into_body().map_err(BoxError::from).boxed_unsync()),
        (Method::GET, ["_sim", "bytes"]) => pattern_bytes(query),
        (Method::GET, ["_sim", "goaway"]) => {
            ctx.goaway.notify_one();
            json_response(ok, &serde_json::json!({ "goaway": ctx.remote_addr.map(|a| a.to_string()) }))
        }
        _ => {
            let message = format!("the server could not find the requested resource ({path})");
            status_response(StatusCode::NOT_FOUND, "NotFound", &message)
        }
    }
}

fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_text(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    respond(status, "application/json", full_body(text))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    json_text(status, value.to_string())
}

fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16(),
    });
    json_response(status, &body)
}

fn bad_request(message: &str) -> Response<Body> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

async fn drain_body(mut body: Incoming) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if pair == key => Some(""),
        _ => None,
    })
}

const VERSION_JSON: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0-sim","gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.24.0","compiler":"gc","platform":"linux/amd64"}"#;

const API_GROUP_LIST_JSON: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"authentication.k8s.io","versions":[{"groupVersion":"authentication.k8s.io/v1","version":"v1"}],"preferredVersion":{"groupVersion":"authentication.k8s.io/v1","version":"v1"}}]}"#;

const AUTHENTICATION_V1_JSON: &str = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"authentication.k8s.io/v1","resources":[{"name":"selfsubjectreviews","singularName":"selfsubjectreview","namespaced":false,"kind":"SelfSubjectReview","verbs":["create"]}]}"#;

/// Core v1 discovery, so that `kubectl get pods` / `kubectl exec` can map resources.
const CORE_V1_JSON: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
 {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list","watch"]},
 {"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},
 {"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
 {"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

fn api_versions(local_addr: Option<SocketAddr>) -> Value {
    let server_address = local_addr.map(|a| a.to_string()).unwrap_or_default();
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn self_subject_review(user: &UserInfo) -> Value {
    json!({
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "status": {"userInfo": user},
    })
}

fn pod(ns: &str, resource_version: u64) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": "demo", "namespace": ns, "uid": "00000000-0000-0000-0000-00000000d3e0",
            "resourceVersion": resource_version.to_string(), "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "demo", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": "Running"},
    })
}

fn list_or_watch_pods(ns: &str, query: Option<&str>) -> Response<Body> {
    if matches!(query_param(query, "watch"), Some("true" | "1")) {
        return watch_pods(ns);
    }
    let list = json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [pod(ns, 1)],
    });
    json_response(StatusCode::OK, &list)
}

fn watch_event(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch_pods(ns: &str) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(produce_watch_events(tx, ns.to_owned()));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(event)), rx))
    });
    respond(StatusCode::OK, "application/json", StreamBody::new(frames).boxed_unsync())
}

/// Sends ADDED, then MODIFIED every 500 ms until the receiver is gone.
async fn produce_watch_events(tx: mpsc::Sender<Bytes>, ns: String) {
    let mut resource_version = 1;
    let added = watch_event("ADDED", pod(&ns, resource_version));
    if tx.send(added).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        resource_version += 1;
        let event = watch_event("MODIFIED", pod(&ns, resource_version));
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

fn debug_headers(req: &Request<Incoming>, ctx: &ConnCtx, auth: AuthMethod, user: &UserInfo) -> Value {
    let headers: Vec<[String; 2]> =
        req.headers().iter().map(|(name, value)| [name.as_str().to_owned(), lossy(value)]).collect();
    json!({
        "auth": auth.as_str(), "user": user, "headers": headers,
        "version": format!("{:?}", req.version()), "peer_cert_cn": ctx.peer.cn,
        "remote_addr": ctx.remote_addr.map(|a| a.to_string()),
    })
}

fn pattern_bytes(query: Option<&str>) -> Response<Body> {
    let Some(total) = query_param(query, "n").and_then(|n| n.parse::<u64>().ok()) else {
        return bad_request("query parameter n must be a number");
    };
    let total = total.min(BYTES_CAP);
    let chunks = futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= total {
            return None;
        }
        let end = total.min(offset + BYTES_CHUNK);
        let chunk: Vec<u8> = (offset..end).map(pattern_byte).collect();
        Some((Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))), end))
    });
    let body = StreamBody::new(chunks).boxed_unsync();
    let mut resp = respond(StatusCode::OK, "application/octet-stream", body);
    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(total));
    resp
}

/// Byte `i` of the `/_sim/bytes` pattern.
pub fn pattern_byte(i: u64) -> u8 {
    // `i % 251` is always below 256.
    (i % 251) as u8
}

// ---------------------------------------------------------------------------
// exec / attach / portforward upgrades

fn header_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn upgrade_and_echo(mut req: Request<Incoming>, ctx: &ConnCtx) -> Response<Body> {
    let resp = match switch_protocols(req.headers()) {
        Ok(resp) => resp,
        Err(message) => return bad_request(message),
    };
    tokio::spawn(echo_upgraded(hyper::upgrade::on(&mut req), ctx.stop.clone()));
    resp
}

/// The 101 response for a WebSocket or SPDY/3.1 upgrade request.
fn switch_protocols(headers: &HeaderMap) -> Result<Response<Body>, &'static str> {
    let wants_upgrade = header_tokens(headers, CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    match header_tokens(headers, UPGRADE).next() {
        Some(p) if wants_upgrade && p.eq_ignore_ascii_case("websocket") => websocket_switch(headers),
        Some(p) if wants_upgrade && p.eq_ignore_ascii_case("spdy/3.1") => Ok(spdy_switch(headers)),
        _ => Err("upgrade request required"),
    }
}

fn switching_protocols(upgrade: &'static str) -> Response<Body> {
    let mut resp = Response::new(full_body(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(UPGRADE, HeaderValue::from_static(upgrade));
    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    resp
}

fn websocket_switch(headers: &HeaderMap) -> Result<Response<Body>, &'static str> {
    let key = headers.get("sec-websocket-key").and_then(|k| k.to_str().ok());
    let key = key.map(str::trim).filter(|k| !k.is_empty()).ok_or("missing Sec-WebSocket-Key")?;
    let accept = HeaderValue::from_str(&websocket_accept(key)).map_err(|_| "bad Sec-WebSocket-Key")?;
    let mut resp = switching_protocols("websocket");
    resp.headers_mut().insert("sec-websocket-accept", accept);
    let offered = header_tokens(headers, SEC_WEBSOCKET_PROTOCOL).next();
    if let Some(protocol) = offered.and_then(|p| HeaderValue::from_str(p).ok()) {
        resp.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(resp)
}

fn spdy_switch(headers: &HeaderMap) -> Response<Body> {
    let mut resp = switching_protocols("SPDY/3.1");
    if let Some(version) = headers.get("x-stream-protocol-version") {
        resp.headers_mut().insert("x-stream-protocol-version", version.clone());
    }
    resp
}

async fn echo_upgraded(on_upgrade: hyper::upgrade::OnUpgrade, mut stop: watch::Receiver<()>) {
    let echo = async {
        let upgraded = on_upgrade.await?;
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        tokio::io::copy(&mut reader, &mut writer).await?;
        writer.shutdown().await?;
        Ok::<_, BoxError>(())
    };
    tokio::select! {
        res = echo => if let Err(err) = res { tracing::debug!(%err, "sim: upgraded echo ended") },
        _ = stop.changed() => {}
    }
}

/// RFC 6455 `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of the
/// key and the protocol's GUID.
pub fn websocket_accept(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls_pki_types::{PrivatePkcs8KeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    use tokio::sync::oneshot;
    use tokio::time::timeout;

    type TestResult = Result<(), BoxError>;
    /// (client identity, request headers, expected x-sim-auth, expected username)
    type Case<'a> = (Option<&'a Identity>, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    type Ca = CertifiedIssuer<'static, KeyPair>;
    const WAIT: Duration = Duration::from_secs(10);
    const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const EXEC: &str = "/api/v1/namespaces/default/pods/demo/exec?command=sh";

    struct Identity {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    struct Pki {
        server_ca: CertificateDer<'static>,
        client_ca: CertificateDer<'static>,
        front_proxy_ca: CertificateDer<'static>,
        serving: Identity,
        front_proxy: Identity,
        other_proxy: Identity,
        alice: Identity,
        stranger: Identity,
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn new_ca(name: &str) -> Result<Ca, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate()?)
    }

    fn leaf(ca: &Ca, cn: &str, orgs: &[&str], server: bool) -> Result<Identity, rcgen::Error> {
        let sans = if server { strs(&["127.0.0.1"]) } else { Vec::new() };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        // rcgen keys DN entries by type; spelling id-at-organizationName (2.5.4.10) as a
        // custom type lets a test certificate carry a second O attribute.
        let org_types = [DnType::OrganizationName, DnType::CustomDnType(vec![2, 5, 4, 10])];
        for (ty, org) in org_types.into_iter().zip(orgs) {
            params.distinguished_name.push(ty, *org);
        }
        params.extended_key_usages = vec![if server { ServerAuth } else { ClientAuth }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, ca)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Identity { chain: vec![cert.der().clone(), ca.der().clone()], key })
    }

    fn pki() -> Result<Pki, rcgen::Error> {
        let (server_ca, client_ca) = (new_ca("server-ca")?, new_ca("client-ca")?);
        let (fp_ca, rogue_ca) = (new_ca("front-proxy-ca")?, new_ca("rogue-ca")?);
        Ok(Pki {
            serving: leaf(&server_ca, "sim", &[], true)?,
            front_proxy: leaf(&fp_ca, "front-proxy-client", &[], false)?,
            other_proxy: leaf(&fp_ca, "other-proxy", &[], false)?,
            alice: leaf(&client_ca, "alice", &["dev", "ops"], false)?,
            stranger: leaf(&rogue_ca, "mallory", &[], false)?,
            server_ca: server_ca.der().clone(),
            client_ca: client_ca.der().clone(),
            front_proxy_ca: fp_ca.der().clone(),
        })
    }

    fn sim_config(pki: &Pki) -> SimConfig {
        let bob = UserInfo { username: "bob".into(), groups: strs(&["devs"]), ..Default::default() };
        SimConfig {
            serving_chain: pki.serving.chain.clone(),
            serving_key: pki.serving.key.clone_key(),
            client_ca: vec![pki.client_ca.clone()],
            requestheader_ca: vec![pki.front_proxy_ca.clone()],
            requestheader_allowed_names: strs(&["front-proxy-client"]),
            username_headers: strs(&["X-Remote-User"]),
            uid_headers: strs(&["X-Remote-Uid"]),
            group_headers: strs(&["X-Remote-Group"]),
            extra_header_prefixes: strs(&["X-Remote-Extra-"]),
            tokens: vec![("tok-bob".into(), bob)],
        }
    }

    /// A running simulator; dropping it stops `serve`.
    struct Sim {
        addr: SocketAddr,
        pki: Pki,
        _stop: oneshot::Sender<()>,
    }

    async fn start() -> Result<Sim, BoxError> {
        let pki = pki()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move { stopped.await.unwrap_or(()) };
        tokio::spawn(serve(listener, Arc::new(sim_config(&pki)), shutdown));
        Ok(Sim { addr, pki, _stop: stop })
    }

    impl Sim {
        async fn tls(
            &self,
            id: Option<&Identity>,
            alpn: &[u8],
        ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, BoxError> {
            let mut roots = RootCertStore::empty();
            roots.add(self.pki.server_ca.clone())?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
            let mut config = match id {
                Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![alpn.to_vec()];
            let tcp = TcpStream::connect(self.addr).await?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = connector.connect(ServerName::try_from("127.0.0.1")?, tcp).await?;
            Ok(TokioIo::new(tls))
        }

        /// One HTTP/1.1 request on a fresh connection (upgrades allowed).
        async fn send<B>(&self, id: Option<&Identity>, req: Request<B>) -> Result<Response<Incoming>, BoxError>
        where
            B: hyper::body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(self.tls(id, b"http/1.1").await?).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(sender.send_request(req).await?)
        }

        async fn get(
            &self,
            id: Option<&Identity>,
            path: &str,
            headers: &[(&str, &str)],
        ) -> Result<Response<Incoming>, BoxError> {
            let mut req = Request::get(path).header("host", "127.0.0.1");
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            self.send(id, req.body(Empty::<Bytes>::new())?).await
        }

        /// `/_sim/headers` → (auth method, user, whole JSON).
        async fn whoami(
            &self,
            id: Option<&Identity>,
            headers: &[(&str, &str)],
        ) -> Result<(String, UserInfo, Value), BoxError> {
            let resp = self.get(id, "/_sim/headers", headers).await?;
            let auth = resp.headers()["x-sim-auth"].to_str()?.to_owned();
            let body = read_json(resp).await?;
            assert_eq!(body["auth"], auth.as_str());
            Ok((auth, serde_json::from_value(body["user"].clone())?, body))
        }
    }

    async fn read_json(resp: Response<Incoming>) -> Result<Value, BoxError> {
        Ok(serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?)
    }

    async fn next_data(body: &mut Incoming) -> Result<Bytes, BoxError> {
        let frame = timeout(WAIT, body.frame()).await?.ok_or("body ended")??;
        Ok(frame.into_data().unwrap_or_default())
    }

    #[test]
    fn websocket_accept_of_the_rfc_6455_example() {
        assert_eq!(websocket_accept(WS_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        let cases = [("foo%2fbar", "foo/bar"), ("foo%2Fbar", "foo/bar"), ("%e2%9c%93", "\u{2713}")];
        let kept = [("a+b", "a+b"), ("bad%zz", "bad%zz"), ("end%2", "end%2"), ("x%ff", "x%ff")];
        for (raw, want) in cases.into_iter().chain(kept) {
            assert_eq!(unescape_extra_key(raw), want, "{raw}");
        }
    }

    #[test]
    fn requestheader_rules() -> TestResult {
        let mut config = sim_config(&pki()?);
        config.username_headers = strs(&["X-First-User", "X-Remote-User"]);
        config.extra_header_prefixes = strs(&["X-Remote-Extra-", "x-other-extra-"]);
        let mut headers = HeaderMap::new();
        let lines = [
            ("x-first-user", ""),
            ("x-remote-user", "carol"),
            ("x-remote-user", "ignored"),
            ("x-remote-group", "a,b"),
            ("x-remote-group", ""),
            ("x-remote-group", "c"),
            ("x-remote-extra-scopes", "s1"),
            ("x-other-extra-scopes", "s2"),
            ("x-remote-uid", "uid-1"),
        ];
        for (name, value) in lines {
            headers.append(name, HeaderValue::from_static(value));
        }
        let peer = PeerIdentity { front_proxy: true, ..Default::default() };
        let (method, user) = authenticate(&config, &peer, &headers);
        assert_eq!(method, AuthMethod::RequestHeader);
        assert_eq!((user.username.as_str(), user.uid.as_str()), ("carol", "uid-1"));
        assert_eq!(user.groups, strs(&["a,b", "c", AUTHENTICATED_GROUP]));
        assert_eq!(user.extra["scopes"], strs(&["s1", "s2"]));
        // Not the front proxy: the same headers mean nothing.
        let result = authenticate(&config, &PeerIdentity::default(), &headers);
        assert_eq!(result, (AuthMethod::Anonymous, anonymous_user()));
        Ok(())
    }

    #[tokio::test]
    async fn front_proxy_headers_become_user_info() -> TestResult {
        let sim = start().await?;
        let req = Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("host", "127.0.0.1")
            .header("x-remote-user", "jane")
            .header("x-remote-group", "team-a")
            .header("x-remote-group", "team-b,with-comma")
            .header("X-Remote-Extra-Foo%2Fbar", "v1")
            .header("x-remote-extra-foo%2fbar", "v2")
            .body(Full::new(Bytes::from_static(br#"{"kind":"SelfSubjectReview"}"#)))?;
        let resp = sim.send(Some(&sim.pki.front_proxy), req).await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["x-sim-auth"], "requestheader");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let review = read_json(resp).await?;
        assert_eq!(review["kind"], "SelfSubjectReview");
        let expected = UserInfo {
            username: "jane".into(),
            uid: String::new(),
            groups: strs(&["team-a", "team-b,with-comma", AUTHENTICATED_GROUP]),
            extra: BTreeMap::from([("foo/bar".to_owned(), strs(&["v1", "v2"]))]),
        };
        assert_eq!(review["status"]["userInfo"], serde_json::to_value(&expected)?);
        assert!(review["status"]["userInfo"].get("uid").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn headers_only_count_from_the_front_proxy() -> TestResult {
        let sim = start().await?;
        let (fp, other, alice) = (&sim.pki.front_proxy, &sim.pki.other_proxy, &sim.pki.alice);
        let inject = ("x-remote-user", "admin");
        let group = ("x-remote-group", "system:masters");
        let bob = ("authorization", "Bearer tok-bob");
        let cases: [Case; 7] = [
            (Some(fp), vec![("x-remote-user", ""), group], "anonymous", ANONYMOUS_USER),
            (Some(fp), vec![group, bob], "token", "bob"),
            (Some(alice), vec![inject, group], "x509", "alice"),
            (Some(other), vec![inject], "anonymous", ANONYMOUS_USER),
            (None, vec![inject, group], "anonymous", ANONYMOUS_USER),
            (None, vec![inject, ("authorization", "bearer tok-bob")], "token", "bob"),
            (None, vec![("authorization", "Bearer wrong")], "anonymous", ANONYMOUS_USER),
        ];
        for (id, headers, want_auth, want_user) in cases {
            let (auth, user, body) = sim.whoami(id, &headers).await?;
            assert_eq!((auth.as_str(), user.username.as_str()), (want_auth, want_user), "{headers:?}");
            assert!(!user.groups.contains(&"system:masters".to_owned()));
            let cn = id.and_then(|id| subject_cn_and_orgs(&id.chain[0]).0);
            assert_eq!(body["peer_cert_cn"], serde_json::to_value(cn)?);
        }
        let (_, user, body) = sim.whoami(Some(alice), &[inject]).await?;
        assert_eq!(user.groups, strs(&["dev", "ops", AUTHENTICATED_GROUP]));
        let fingerprint = hex::encode(Sha256::digest(&alice.chain[0]));
        assert_eq!(user.extra[CREDENTIAL_ID_KEY], [format!("X509SHA256={fingerprint}")]);
        assert_eq!(body["version"], "HTTP/1.1");
        assert_eq!(body["headers"].as_array().map(|h| h.contains(&json!(["x-remote-user", "admin"]))), Some(true));
        Ok(())
    }

    #[tokio::test]
    async fn unknown_ca_client_cert_is_refused() -> TestResult {
        let sim = start().await?;
        let refused = match sim.tls(Some(&sim.pki.stranger), b"http/1.1").await {
            Err(_) => true, // refused within the handshake
            Ok(io) => {
                // TLS 1.3: the client finishes first and sees the alert on its first read.
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                let req = Request::get("/version").header("host", "127.0.0.1").body(Empty::<Bytes>::new())?;
                sender.send_request(req).await.is_err()
            }
        };
        assert!(refused, "a certificate from an unknown CA must be refused");
        Ok(())
    }

    #[tokio::test]
    async fn http2_discovery_and_not_found() -> TestResult {
        let sim = start().await?;
        let io = sim.tls(None, b"h2").await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let mut get = async |path: &str| -> Result<Response<Incoming>, BoxError> {
            let req = Request::get(format!("https://{}{path}", sim.addr)).body(Empty::<Bytes>::new())?;
            Ok(sender.send_request(req).await?)
        };
        assert_eq!(read_json(get("/_sim/headers").await?).await?["version"], "HTTP/2.0");
        assert_eq!(read_json(get("/version").await?).await?["gitVersion"], "v1.33.0-sim");
        let api = read_json(get("/api").await?).await?;
        assert_eq!(api["serverAddressByClientCIDRs"][0]["serverAddress"], sim.addr.to_string());
        let apis = read_json(get("/apis").await?).await?;
        assert_eq!(apis["groups"][0]["preferredVersion"]["groupVersion"], "authentication.k8s.io/v1");
        let resources = read_json(get("/apis/authentication.k8s.io/v1").await?).await?;
        assert_eq!(resources["resources"][0]["name"], "selfsubjectreviews");
        let resp = get("/nope").await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["x-sim-auth"], "anonymous");
        let status = read_json(resp).await?;
        assert_eq!(
            (&status["kind"], &status["reason"], &status["code"]),
            (&json!("Status"), &json!("NotFound"), &json!(404))
        );
        Ok(())
    }

    #[tokio::test]
    async fn pods_list_and_watch() -> TestResult {
        let sim = start().await?;
        let list = read_json(sim.get(None, "/api/v1/namespaces/ns1/pods", &[]).await?).await?;
        assert_eq!((&list["kind"], &list["items"][0]["metadata"]["namespace"]), (&json!("PodList"), &json!("ns1")));
        let resp = sim.get(None, "/api/v1/namespaces/ns1/pods?watch=true", &[]).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let (mut buf, mut events) = (Vec::new(), Vec::new());
        while events.len() < 2 {
            buf.extend_from_slice(&next_data(&mut body).await?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                events.push(serde_json::from_slice::<Value>(&line)?);
            }
        }
        for (event, (kind, rv)) in events.iter().zip([("ADDED", "1"), ("MODIFIED", "2")]) {
            assert_eq!(event["type"], kind);
            assert_eq!(event["object"]["metadata"]["resourceVersion"], rv);
        }
        Ok(())
    }

    /// Upgrades an exec request and checks that bytes come back unchanged.
    async fn upgrade_roundtrip(sim: &Sim, headers: &[(&str, &str)]) -> Result<HeaderMap, BoxError> {
        let mut resp = sim.get(None, EXEC, headers).await?;
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await?);
        let mut echoed = [0u8; 11];
        for payload in [b"hello world", b"second\0\x01\xff\n!"] {
            io.write_all(payload).await?;
            timeout(WAIT, io.read_exact(&mut echoed)).await??;
            assert_eq!(&echoed, payload);
        }
        Ok(resp.headers().clone())
    }

    #[tokio::test]
    async fn websocket_and_spdy_upgrades_echo() -> TestResult {
        let sim = start().await?;
        let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13")];
        let offered = ("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io");
        let ws = [&upgrade[..], &[("sec-websocket-key", WS_KEY), offered]].concat();
        let headers = upgrade_roundtrip(&sim, &ws).await?;
        assert_eq!(headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(headers["sec-websocket-protocol"], "v5.channel.k8s.io");
        let spdy = [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ];
        let headers = upgrade_roundtrip(&sim, &spdy).await?;
        assert_eq!(headers["upgrade"], "SPDY/3.1");
        assert_eq!(headers["x-stream-protocol-version"], "v4.channel.k8s.io");
        assert_eq!(sim.get(None, EXEC, &[]).await?.status(), StatusCode::BAD_REQUEST);
        Ok(())
    }

    #[tokio::test]
    async fn echo_and_bytes_stream() -> TestResult {
        let sim = start().await?;
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            Some((Ok::<_, Infallible>(Frame::data(rx.recv().await?)), rx))
        });
        let req = Request::post("/_sim/echo").header("host", "127.0.0.1").body(StreamBody::new(chunks))?;
        let mut body = sim.send(None, req).await?.into_body();
        // The first chunk must come back while the request body is still open.
        tx.send(Bytes::from_static(b"ping")).await?;
        assert_eq!(next_data(&mut body).await?, "ping");
        let big: Bytes = (0..300_000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
        tx.send(big.clone()).await?;
        drop(tx);
        assert_eq!(body.collect().await?.to_bytes(), big);

        let resp = sim.get(None, "/_sim/bytes?n=200003", &[]).await?;
        let data = resp.into_body().collect().await?.to_bytes();
        assert_eq!(data.len(), 200_003);
        assert!((0u64..).zip(data.iter()).all(|(i, b)| *b == pattern_byte(i)));
        assert_eq!(sim.get(None, "/_sim/bytes?n=lots", &[]).await?.status(), StatusCode::BAD_REQUEST);
        Ok(())
    }

    #[tokio::test]
    async fn serve_returns_on_shutdown() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move { stopped.await.unwrap_or(()) };
        let server = tokio::spawn(serve(listener, Arc::new(sim_config(&pki()?)), shutdown));
        stop.send(()).map_err(|()| "server gone")?;
        timeout(WAIT, server).await???;
        Ok(())
    }
}
