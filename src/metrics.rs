//! Prometheus metrics (prometheus-client). Every label value is a fixed enum or comes from
//! the operator's own configuration (a CA's subject, an `--upstream` URL); nothing a client
//! sends becomes a label.
//!
//! | metric | labels |
//! |---|---|
//! | `kube_crl_proxy_handshakes_total` | `outcome`: ok, no_cert, revoked, expired, unknown_ca, bad_eku, stale_crl, other |
//! | `kube_crl_proxy_requests_total` | `code`, `method` (GET, POST, …, other), `verb`: watch, exec, other |
//! | `kube_crl_proxy_upstream_request_duration_seconds` | histogram, time to response headers |
//! | `kube_crl_proxy_open_connections`, `kube_crl_proxy_open_tunnels` | — |
//! | `kube_crl_proxy_refused_connections_total` | — (over `--max-connections`) |
//! | `kube_crl_proxy_crl_entries`, `_crl_this_update_seconds`, `_crl_next_update_seconds`, `_crl_seconds_to_next_update` | `issuer`, `scope`, `key` (one series per CRL in use) |
//! | `kube_crl_proxy_crls_rejected` | — (CRLs left out of the index in use) |
//! | `kube_crl_proxy_reloads_total`, `kube_crl_proxy_reload_failures_total` | `kind`: serving_cert, client_ca, crl, upstream_ca, proxy_client_cert, other |
//! | `kube_crl_proxy_connections_closed_total` | `reason`: revoked, expired, unknown_ca, stale_crl, … |
//! | `kube_crl_proxy_connections_rechecked_total` | `scope`: all (a safety or time-driven re-check, a new trust anchor set, a change that is more than new listings), changed (only the connections holding a newly listed certificate) |
//! | `kube_crl_proxy_crl_fetches_total` | `result`: ok, not_modified, error, too_large, invalid |
//! | `kube_crl_proxy_upstream_up` | upstreams whose `/readyz` answered 200 at the last check |
//! | `kube_crl_proxy_upstream_connections` | `upstream` (an `--upstream` URL): open connections, HTTP/2 and HTTP/1.1 |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub code: u16,
    pub method: &'static str,
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// What the gauges show of one CRL in use.
#[derive(Clone, Debug)]
pub struct CrlSample {
    pub label: CrlLabel,
    pub entries: usize,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// One CRL in use: its issuer, its scope ([`crate::revocation::Scope::describe`]) and the
/// signing key (first 8 hex digits of the SHA-256 of its SubjectPublicKeyInfo), so that
/// partitions and the CRLs of a renewed CA key are told apart.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrlLabel {
    pub issuer: String,
    pub scope: String,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    pub handshakes: Family<OutcomeLabel, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_latency: Histogram,
    pub open_connections: Gauge,
    pub refused_connections: Counter,
    pub open_tunnels: Gauge,
    pub reloads: Family<KindLabel, Counter>,
    pub reload_failures: Family<KindLabel, Counter>,
    pub connections_closed: Family<ReasonLabel, Counter>,
    pub connections_rechecked: Family<ScopeLabel, Counter>,
    pub upstream_up: Gauge,
    pub upstream_connections: Family<UpstreamLabel, Gauge>,
    pub crl_fetches: Family<ResultLabel, Counter>,
    pub ocsp_queries: Family<ResultLabel, Counter>,
    pub ocsp_latency: Histogram,
    pub ocsp_cache_entries: Gauge,
    crl_entries: Family<CrlLabel, Gauge>,
    crls_rejected: Gauge,
    crl_this_update: Family<CrlLabel, Gauge>,
    crl_next_update: Family<CrlLabel, Gauge>,
    crl_seconds_left: Family<CrlLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_crl_proxy");
        let m = Self {
            handshakes: Family::default(),
            requests: Family::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            open_tunnels: Gauge::default(),
            reloads: Family::default(),
            reload_failures: Family::default(),
            connections_closed: Family::default(),
            connections_rechecked: Family::default(),
            upstream_up: Gauge::default(),
            upstream_connections: Family::default(),
            crl_fetches: Family::default(),
            ocsp_queries: Family::default(),
            ocsp_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            ocsp_cache_entries: Gauge::default(),
            crl_entries: Family::default(),
            crls_rejected: Gauge::default(),
            crl_this_update: Family::default(),
            crl_next_update: Family::default(),
            crl_seconds_left: Family::default(),
            registry: Registry::default(),
        };
        registry.register("handshakes", "TLS handshakes by outcome", m.handshakes.clone());
        registry.register("requests", "Requests by status code, method and verb class", m.requests.clone());
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request upstream to its response headers",
            m.upstream_latency.clone(),
        );
        registry.register("open_connections", "Open downstream connections", m.open_connections.clone());
        registry.register(
            "refused_connections",
            "Client connections refused at accept because --max-connections were open",
            m.refused_connections.clone(),
        );
        registry.register("open_tunnels", "Open upgraded tunnels (exec, attach, port-forward)", m.open_tunnels.clone());
        registry.register("reloads", "Successful reloads by changed file kind", m.reloads.clone());
        registry.register("reload_failures", "Failed reloads by file kind", m.reload_failures.clone());
        registry.register(
            "connections_closed",
            "Live connections closed because their certificate was revoked or expired",
            m.connections_closed.clone(),
        );
        registry.register(
            "connections_rechecked",
            "Open connections re-checked for revocation, by what the re-check covered",
            m.connections_rechecked.clone(),
        );
        registry.register(
            "upstream_up",
            "1 if the upstream's /readyz answered 200 at the last check",
            m.upstream_up.clone(),
        );
        registry.register(
            "upstream_connections",
            "Open connections to each upstream (pooled HTTP/2 and HTTP/1.1, upgraded tunnels)",
            m.upstream_connections.clone(),
        );
        registry.register("crl_fetches", "CRL fetches by result", m.crl_fetches.clone());
        registry.register(
            "ocsp_queries",
            "OCSP queries by result (good, revoked, unknown, timeout, error, bad_signature, stale, invalid, ...)",
            m.ocsp_queries.clone(),
        );
        registry.register(
            "ocsp_query_duration_seconds",
            "Time from sending an OCSP request to a verified answer or failure",
            m.ocsp_latency.clone(),
        );
        registry.register(
            "ocsp_cache_entries",
            "Certificates with a cached OCSP answer or query",
            m.ocsp_cache_entries.clone(),
        );
        registry.register("crl_entries", "Revoked serials in each CRL in use", m.crl_entries.clone());
        registry.register(
            "crls_rejected",
            "CRLs given that were left out (bad signature, unknown issuer, unsupported feature): see the logs",
            m.crls_rejected.clone(),
        );
        registry.register(
            "crl_this_update_seconds",
            "thisUpdate of each CA's CRL (Unix time)",
            m.crl_this_update.clone(),
        );
        registry.register(
            "crl_next_update_seconds",
            "nextUpdate of each CA's CRL (Unix time)",
            m.crl_next_update.clone(),
        );
        registry.register(
            "crl_seconds_to_next_update",
            "Seconds until each CA's CRL reaches nextUpdate (negative: stale)",
            m.crl_seconds_left.clone(),
        );
        // Every known label value starts at 0. A counter series born at 1 has no increase()
        // over its first sample, so alerting on `increase(...) > 0` would miss the first
        // failure, revocation or refusal (docs/monitoring/alerts.yaml relies on this).
        for kind in ["serving_cert", "client_ca", "crl", "upstream_ca", "proxy_client_cert", "other"] {
            m.reloads.get_or_create(&KindLabel { kind }).inc_by(0);
            m.reload_failures.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        for scope in ["all", "changed"] {
            m.connections_rechecked.get_or_create(&ScopeLabel { scope }).inc_by(0);
        }
        for result in ["ok", "not_modified", "error", "too_large", "invalid"] {
            m.crl_fetches.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        let refusals =
            ["revoked", "expired", "unknown_ca", "bad_eku", "no_crl", "stale_crl", "ocsp_no_answer", "other"];
        for reason in refusals {
            m.connections_closed.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        for outcome in refusals.into_iter().chain(["ok", "no_cert"]) {
            m.handshakes.get_or_create(&OutcomeLabel { outcome }).inc_by(0);
        }
        Self { registry, ..m }
    }

    /// Renders the text exposition, with the CRL gauges taken from the CRLs in use
    /// ([`crate::revocation::RevocationIndex::samples`]) and the number left out.
    pub fn encode(&self, crls: &[CrlSample], rejected: usize, now: i64) -> String {
        for f in [&self.crl_entries, &self.crl_this_update, &self.crl_next_update, &self.crl_seconds_left] {
            f.clear();
        }
        self.crls_rejected.set(i64::try_from(rejected).unwrap_or(i64::MAX));
        for crl in crls {
            let l = &crl.label;
            self.crl_entries.get_or_create(l).set(i64::try_from(crl.entries).unwrap_or(i64::MAX));
            self.crl_this_update.get_or_create(l).set(crl.this_update);
            if let Some(next) = crl.next_update {
                self.crl_next_update.get_or_create(l).set(next);
                self.crl_seconds_left.get_or_create(l).set(next - now);
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn handshake(&self, outcome: &'static str) {
        self.handshakes.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// The method as a bounded label value.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// kube verb class of a request: a watch, an exec-style upgrade, or anything else.
pub fn verb_class<B>(req: &http::Request<B>) -> &'static str {
    if req.headers().contains_key(http::header::UPGRADE) {
        return "exec";
    }
    let watch_query =
        req.uri().query().is_some_and(|q| q.split('&').any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch")));
    if watch_query || req.uri().path().contains("/watch/") {
        return "watch";
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_classes() {
        let r = |uri: &str| http::Request::get(uri).body(()).unwrap();
        assert_eq!(verb_class(&r("/api/v1/pods?watch=true")), "watch");
        assert_eq!(verb_class(&r("/api/v1/watch/namespaces/x/pods")), "watch");
        assert_eq!(verb_class(&r("/api/v1/pods?watcher=1")), "other");
        let up = http::Request::get("/api/v1/namespaces/x/pods/y/exec").header("upgrade", "SPDY/3.1").body(()).unwrap();
        assert_eq!(verb_class(&up), "exec");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "other");
    }

    /// The index of a root CA `cn` and its CRL listing `revoked`, valid another hour.
    fn index_of_one_crl(cn: &str, revoked: &[&[u8]]) -> crate::revocation::RevocationIndex {
        let dir = tempfile::tempdir().unwrap();
        let ca = kube_crl_proxy_testkit::pki::Authority::root(cn);
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("crl.pem"), ca.crl(revoked, 1, time::Duration::hours(1))).unwrap();
        let bundle = crate::ca::CaBundle::load(&dir.path().join("ca.pem"), None).unwrap();
        let policy = crate::config::RevocationPolicy {
            check: crate::config::RevocationCheck::Chain,
            crl_missing: crate::config::Policy::Deny,
            crl_expired: crate::config::Policy::Deny,
            crl_expired_grace: std::time::Duration::ZERO,
        };
        let algs = crate::crypto::provider().signature_verification_algorithms;
        let sources = crate::revocation::CrlSource::files(&[dir.path().join("crl.pem")]).unwrap();
        crate::revocation::RevocationIndex::load(&bundle, &sources, policy, &algs).unwrap().0
    }

    #[test]
    fn known_label_values_start_at_zero_and_match_the_code() {
        use crate::error::RefusalReason as R;
        let index = index_of_one_crl("zero-ca", &[]);
        let count = |text: &str, family: &str| text.lines().filter(|l| l.starts_with(&format!("{family}{{"))).count();

        let m = Metrics::new();
        let fresh = m.encode(&index.samples(), index.rejected().len(), crate::revocation::now_secs());
        assert_eq!(count(&fresh, "kube_crl_proxy_handshakes_total"), 10, "{fresh}");
        assert_eq!(count(&fresh, "kube_crl_proxy_connections_closed_total"), 8, "{fresh}");
        assert_eq!(count(&fresh, "kube_crl_proxy_reload_failures_total"), 6, "{fresh}");
        assert_eq!(count(&fresh, "kube_crl_proxy_crl_fetches_total"), 5, "{fresh}");
        assert!(fresh.contains(r#"kube_crl_proxy_reload_failures_total{kind="crl"} 0"#), "{fresh}");
        assert!(fresh.contains(r#"kube_crl_proxy_connections_closed_total{reason="revoked"} 0"#), "{fresh}");
        // Every label value the code produces was created up front: none adds a series.
        let reasons = [
            R::Revoked,
            R::Expired,
            R::NotValidYet,
            R::UnknownCa,
            R::BadEku,
            R::NoCrl,
            R::StaleCrl,
            R::OcspNoAnswer,
            R::BadSignature,
            R::BadEncoding,
            R::Other(String::new()),
        ];
        for r in &reasons {
            m.connections_closed.get_or_create(&ReasonLabel { reason: r.label() }).inc_by(0);
            m.handshakes.get_or_create(&OutcomeLabel { outcome: r.label() }).inc_by(0);
        }
        let after = m.encode(&index.samples(), index.rejected().len(), crate::revocation::now_secs());
        assert_eq!(count(&after, "kube_crl_proxy_handshakes_total"), 10, "{after}");
        assert_eq!(count(&after, "kube_crl_proxy_connections_closed_total"), 8, "{after}");
    }

    #[test]
    fn exposition_has_the_families() {
        let m = Metrics::new();
        m.handshake("revoked");
        m.requests.get_or_create(&RequestLabels { code: 200, method: "GET", verb: "watch" }).inc();
        let index = index_of_one_crl("metrics-ca", &[&[5]]);
        let text = m.encode(&index.samples(), index.rejected().len(), crate::revocation::now_secs());
        assert!(text.contains(r#"kube_crl_proxy_handshakes_total{outcome="revoked"} 1"#), "{text}");
        assert!(text.contains(r#"kube_crl_proxy_requests_total{code="200",method="GET",verb="watch"} 1"#), "{text}");
        let key = index.crls().next().unwrap().signer.key_id();
        let labels = format!(r#"issuer="CN=metrics-ca",scope="all certificates",key="{key}""#);
        assert!(text.contains(&format!("kube_crl_proxy_crl_entries{{{labels}}} 1")), "{text}");
        assert!(text.contains(&format!("kube_crl_proxy_crl_seconds_to_next_update{{{labels}}} 3")), "{text}");
        assert!(text.contains("kube_crl_proxy_crls_rejected 0"), "{text}");
    }
}
