//! The admin endpoint (`--admin-address`, plain HTTP, meant for loopback) and the upstream
//! health check behind readiness.
//!
//! - `GET /livez`: 200 while the process serves.
//! - `GET /readyz`: 200 when the certificates and CRLs are loaded, no CRL is stale under
//!   `--crl-expired=deny`, and the upstream's `/readyz` answered 200 at the last check
//!   (every `--upstream-check-interval`); otherwise 503 with the failing checks listed.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::Policy;
use crate::reload::State;

/// Shared health state.
#[derive(Default)]
pub struct Health {
    upstream_ok: AtomicBool,
}

impl Health {
    pub fn upstream_ok(&self) -> bool {
        self.upstream_ok.load(Ordering::Relaxed)
    }
}

/// The failing readiness checks (empty when ready).
pub fn readiness_problems(state: &State, health: &Health) -> Vec<String> {
    let mut problems = Vec::new();
    let snapshot = state.snapshot();
    let index = snapshot.verifier.index();
    let policy = index.policy();
    if policy.crl_expired == Policy::Deny {
        let now = crate::revocation::now_secs();
        let grace = i64::try_from(policy.crl_expired_grace.as_secs()).unwrap_or(i64::MAX);
        for crl in index.crls() {
            if crl.next_update.is_some_and(|n| now > n.saturating_add(grace)) {
                problems.push(format!("CRL of {} is stale (--crl-expired=deny)", crl.issuer));
            }
        }
    }
    if !health.upstream_ok() {
        problems.push(format!("upstream {} /readyz did not answer 200", state.config().upstream.url));
    }
    problems
}

/// Serves the admin endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>, health: Arc<Health>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (state, health) = (state.clone(), health.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (state, health) = (state.clone(), health.clone());
                async move { Ok::<_, std::convert::Infallible>(route(&req, &state, &health)) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

fn text(code: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn route(req: &Request<Incoming>, state: &State, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), "text/plain");
    }
    match req.uri().path() {
        "/livez" | "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let problems = readiness_problems(state, health);
            if problems.is_empty() {
                text(StatusCode::OK, "ok\n".into(), "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", problems.join("\n")), "text/plain")
            }
        }
        "/metrics" => {
            let snapshot = state.snapshot();
            let body = state.metrics().encode(snapshot.verifier.index(), crate::revocation::now_secs());
            text(StatusCode::OK, body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /livez, /readyz, /metrics\n".into(), "text/plain"),
    }
}

/// Checks the upstream's `/readyz` every `interval` (anonymously, with the front-proxy
/// certificate, as kube-apiserver allows for `system:public-info-viewer`).
pub async fn check_upstream(state: Arc<State>, health: Arc<Health>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let upstream = state.snapshot().upstream.clone();
        let req = Request::get("/readyz").body(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
        let ok = match req {
            Ok(req) => match tokio::time::timeout(interval.max(Duration::from_secs(1)), upstream.probe(req)).await {
                Ok(Ok(status)) => status == StatusCode::OK,
                Ok(Err(e)) => {
                    tracing::debug!("upstream health check failed: {e}");
                    false
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        let was = health.upstream_ok.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("upstream /readyz answers 200: ready");
            } else {
                tracing::warn!("upstream /readyz does not answer 200: not ready");
            }
        }
        state.metrics().upstream_up.set(i64::from(ok));
    }
}
