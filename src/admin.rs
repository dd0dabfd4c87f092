//! The admin endpoint (`--admin-address`, plain HTTP, meant for loopback) and the upstream
//! health check behind readiness.
//!
//! - `GET /livez`: 200 while the process serves.
//! - `GET /readyz`: 200 when the certificates and CRLs are loaded, no CRL is stale under
//!   `--crl-expired=deny`, and the upstream's `/readyz` answered 200 at the last check
//!   (every `--upstream-check-interval`); otherwise 503 with the failing checks listed.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::Policy;
use crate::reload::State;

/// The failing readiness checks (empty when ready).
pub fn readiness_problems(state: &State) -> Vec<String> {
    let mut problems = Vec::new();
    let snapshot = state.snapshot();
    let index = snapshot.verifier.index();
    let policy = index.policy();
    if policy.crl_expired == Policy::Deny {
        let now = crate::revocation::now_secs();
        for crl in index.crls() {
            if crate::revocation::is_stale(crl.next_update, now, &policy) {
                problems.push(format!("CRL of {} ({}) is stale (--crl-expired=deny)", crl.issuer, crl.source));
            }
        }
    }
    if !state.upstream().any_up() {
        let urls: Vec<String> = state.config().upstream.targets.iter().map(|t| t.url.to_string()).collect();
        problems.push(format!("no upstream's /readyz answered 200 at the last check ({})", urls.join(", ")));
    }
    problems
}

/// Serves the admin endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&req, &state)) }
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

fn route(req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), "text/plain");
    }
    match req.uri().path() {
        "/livez" | "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let problems = readiness_problems(state);
            if problems.is_empty() {
                text(StatusCode::OK, "ok\n".into(), "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", problems.join("\n")), "text/plain")
            }
        }
        "/metrics" => {
            let snapshot = state.snapshot();
            let index = snapshot.verifier.index();
            let body = state.metrics().encode(&index.samples(), index.rejected().len(), crate::revocation::now_secs());
            text(StatusCode::OK, body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /livez, /readyz, /metrics\n".into(), "text/plain"),
    }
}

/// Probes every upstream's `/readyz` every `interval` ([`crate::upstream::Upstream::check_all`]);
/// routing prefers the ones that answer 200, and readiness needs at least one.
pub async fn check_upstreams(state: Arc<State>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ready = None;
    loop {
        tick.tick().await;
        let up = state.upstream().check_all(interval.max(Duration::from_secs(1))).await;
        let ready = up > 0;
        if was_ready != Some(ready) {
            if ready {
                tracing::info!(healthy = up, "an upstream's /readyz answers 200: ready");
            } else {
                tracing::warn!("no upstream's /readyz answers 200: not ready");
            }
            was_ready = Some(ready);
        }
        state.metrics().upstream_up.set(i64::try_from(up).unwrap_or(i64::MAX));
    }
}
