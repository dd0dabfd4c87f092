//! The upstream side: every `--upstream` (kube-apiserver) with its connection pools, built
//! once at start and kept across reloads (a reload publishes new client credentials into
//! [`Credentials`]; the next new connection uses them), the choice of upstream for each
//! request (round-robin over the healthy ones), the one retry policy, and the `/readyz`
//! probes behind health and readiness.
//!
//! - `connect`: credentials store, connector (TCP + TLS within the connect deadline),
//!   typed connect errors.
//! - `h2pool`: HTTP/2 connections with a stream budget each.
//! - `target`: one upstream: its pools and one attempt over them.
//! - `retry`: the retry policy.
//! - `health`: probe results and passive ejection.

mod connect;
mod h2pool;
mod health;
mod retry;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::metrics::histogram::Histogram;

pub use connect::Credentials;
use retry::{Next, Replay};
use target::Target;

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::metrics::{Metrics, UpstreamLabel};

/// Why a request is sent.
#[derive(Clone, Copy)]
enum Purpose<'a> {
    /// A client's: its time to the response head goes to this histogram, and an upstream
    /// that cannot be reached is skipped for a while.
    Request(&'a Histogram),
    /// A `/readyz` probe: its result is the upstream's health.
    Probe,
}

/// Every `--upstream`, in order.
pub struct Upstream {
    targets: Vec<Target>,
    next: AtomicUsize,
    credentials: Arc<Credentials>,
    /// `kube_crl_proxy_upstream_request_duration_seconds`.
    latency: Histogram,
}

impl Upstream {
    /// The upstreams of `cfg`, connecting with `credentials`.
    pub fn new(cfg: &UpstreamConfig, credentials: Credentials, metrics: &Metrics) -> Self {
        let credentials = Arc::new(credentials);
        let targets = cfg
            .targets
            .iter()
            .map(|t| {
                let open = metrics.upstream_connections.get_or_create(&UpstreamLabel { upstream: t.label() }).clone();
                Target::new(cfg, t, &credentials, open)
            })
            .collect();
        Self { targets, next: AtomicUsize::new(0), credentials, latency: metrics.upstream_latency.clone() }
    }

    /// Where reloads publish new client credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Some upstream's `/readyz` answered 200 at its last probe.
    pub fn any_up(&self) -> bool {
        self.targets.iter().any(|t| t.health.is_up())
    }

    /// Sends `req` (its URI: path and query) to an upstream, retrying as the policy allows.
    /// `served_by` names the upstream that was asked last.
    /// (Not an `async fn`: a layer of its own would keep a copy of `req` in every request's
    /// future.)
    pub fn send<'a>(
        &'a self,
        req: Request<ProxyBody>,
        upgrade: bool,
        served_by: &'a mut Option<String>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a {
        let replay = Replay::of(&req);
        self.send_on(self.order(), Some(req), replay, upgrade, served_by, Purpose::Request(&self.latency))
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

    /// The one loop that sends a request and applies the retry policy, over `targets` in
    /// order. `req` is the request, `replay` its head if it has no body ([`Replay::of`]);
    /// taken as arguments, since an `async fn` keeps its arguments for its whole life.
    async fn send_on(
        &self,
        targets: Vec<&Target>,
        mut req: Option<Request<ProxyBody>>,
        replay: Option<Replay>,
        upgrade: bool,
        served_by: &mut Option<String>,
        purpose: Purpose<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut last_err = None;
        let several = targets.len() > 1;
        'targets: for target in targets {
            let mut asked_again = false;
            loop {
                let Some(mut attempt) = req.take().or_else(|| replay.as_ref().map(Replay::request)) else {
                    break 'targets;
                };
                *attempt.uri_mut() = target.uri(attempt.uri())?;
                *served_by = Some(target.label.clone());
                let started = Instant::now();
                let failure = match target.attempt(attempt, upgrade).await {
                    Ok(resp) => {
                        if let Purpose::Request(latency) = purpose {
                            latency.observe(started.elapsed().as_secs_f64());
                        }
                        return Ok(resp);
                    }
                    Err(failure) => failure,
                };
                match retry::next(failure, &target.label, replay.as_ref(), &mut asked_again) {
                    Next::Again(unsent) => req = unsent,
                    Next::Elsewhere(e) => {
                        if let Purpose::Request(_) = purpose {
                            target.health.eject();
                        }
                        if several {
                            tracing::warn!(upstream = %target.label, "{e}; trying another upstream");
                        }
                        last_err = Some(e);
                        continue 'targets;
                    }
                    Next::Stop(e) => return Err(e),
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ProxyError::UpstreamUnavailable {
            upstream: "every upstream".into(),
            detail: "no upstream could be reached".into(),
        }))
    }

    /// Probes every upstream's `/readyz` (anonymously, with the front-proxy certificate, as
    /// kube-apiserver allows for `system:public-info-viewer`) and records the results;
    /// returns how many answered 200.
    pub async fn check_all(&self, timeout: Duration) -> usize {
        let checks = self.targets.iter().map(|t| self.probe(t, timeout));
        futures_util::future::join_all(checks).await.into_iter().filter(|ok| *ok).count()
    }

    async fn probe(&self, target: &Target, timeout: Duration) -> bool {
        let req = Request::get("/readyz").body(crate::body::empty()).expect("a valid request");
        let replay = Replay::of(&req);
        let mut served_by = None;
        let probe = self.send_on(vec![target], Some(req), replay, false, &mut served_by, Purpose::Probe);
        let ok = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(resp)) => {
                let ok = resp.status() == StatusCode::OK;
                let _ = resp.into_body().collect().await;
                ok
            }
            Ok(Err(e)) => {
                tracing::debug!(upstream = %target.label, "upstream health check failed: {e}");
                false
            }
            Err(_) => false,
        };
        target.health.record_probe(&target.label, ok);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTarget;

    fn upstream(addr: std::net::SocketAddr, http2: bool) -> Upstream {
        let url: http::Uri = format!("https://{addr}").parse().unwrap();
        let cfg = UpstreamConfig {
            targets: vec![UpstreamTarget { url, server_name: "localhost".try_into().unwrap() }],
            ca_file: "unused".into(),
            client_cert_file: "unused".into(),
            client_key_file: None,
            connect_timeout: Duration::from_millis(300),
            http2,
            http2_max_streams: 100,
        };
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Upstream::new(&cfg, Credentials::new(tls), &Metrics::new())
    }

    async fn get(upstream: &Upstream, upgrade: bool) -> ProxyError {
        let req = Request::get("/api").body(crate::body::empty()).unwrap();
        upstream.send(req, upgrade, &mut None).await.expect_err("no upstream there")
    }

    /// Both pools (HTTP/2, and hyper's HTTP/1.1 pool, which also carries upgrades) classify a
    /// connect failure the same way, by its type.
    #[tokio::test]
    async fn connect_failures_become_the_same_errors_from_both_pools() {
        // Refused: nothing listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // Accepts, never answers the TLS handshake.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        // Accepts and hangs up.
        let hangs_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hangs_up_addr = hangs_up.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut keep = Vec::new();
            loop {
                tokio::select! {
                    Ok((s, _)) = silent.accept() => keep.push(s),
                    Ok((s, _)) = hangs_up.accept() => drop(s),
                }
            }
        });
        for (http2, upgrade) in [(true, false), (false, false), (true, true)] {
            let ctx = format!("http2 {http2}, upgrade {upgrade}");
            let e = get(&upstream(closed, http2), upgrade).await;
            assert!(matches!(e, ProxyError::UpstreamUnavailable { .. }), "refused, {ctx}: {e}");
            let e = get(&upstream(silent_addr, http2), upgrade).await;
            assert!(matches!(e, ProxyError::UpstreamTimeout { .. }), "silent, {ctx}: {e}");
            let e = get(&upstream(hangs_up_addr, http2), upgrade).await;
            assert!(matches!(e, ProxyError::UpstreamUnavailable { .. }), "hangs up, {ctx}: {e}");
        }
        held.abort();
    }
}
