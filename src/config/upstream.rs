//! The upstream kube-apiservers and how the proxy reaches them: `--upstream`, its CA, server
//! name and front-proxy client certificate, connections and health checks → [`UpstreamConfig`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use rustls_pki_types::ServerName;
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{Span, deserialize_from_str, one_or_many, with_default};
use crate::error::ConfigError;

const UPSTREAM_CONNECT_TIMEOUT: Span = Span(Duration::from_secs(10));
const UPSTREAM_HTTP2: bool = true;
const UPSTREAM_HTTP2_MAX_STREAMS: u32 = 100;
const UPSTREAM_CHECK_INTERVAL: Span = Span(Duration::from_secs(5));

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Upstream")]
#[serde(rename_all = "kebab-case")]
pub struct UpstreamFlags {
    /// kube-apiserver URL, e.g. https://127.0.0.1:6443. Repeatable: requests go to a healthy one.
    #[arg(long, value_name = "URL")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub upstream: Vec<UpstreamUrl>,
    /// CA bundle that verifies the upstream's serving certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Name to send as SNI and to verify the upstream certificate against. Default: the URL's host.
    #[arg(long, value_name = "NAME")]
    pub upstream_server_name: Option<ServerNameArg>,
    /// Front-proxy client certificate (CN front-proxy-client), PEM; may also hold the key.
    #[arg(long, value_name = "FILE")]
    pub proxy_client_cert_file: Option<PathBuf>,
    /// Front-proxy client key (PEM). Default: read from --proxy-client-cert-file.
    #[arg(long, value_name = "FILE")]
    pub proxy_client_key_file: Option<PathBuf>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Maximum time to open a TCP connection to the upstream", UPSTREAM_CONNECT_TIMEOUT))]
    pub upstream_connect_timeout: Option<Span>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, help = with_default(
        "Send requests to the upstream over HTTP/2 connections when it offers h2, each carrying up to \
         --upstream-http2-max-streams requests at once; false: a pool of HTTP/1.1 connections, one per request in \
         flight. Upgrades (exec, attach, port-forward) are HTTP/1.1 either way",
        UPSTREAM_HTTP2))]
    pub upstream_http2: Option<bool>,
    #[arg(long, value_name = "N", help = with_default(
        "Requests in flight per upstream HTTP/2 connection before another is opened; keep it at or below \
         kube-apiserver's --http2-max-streams-per-connection",
        UPSTREAM_HTTP2_MAX_STREAMS))]
    pub upstream_http2_max_streams: Option<u32>,
    #[arg(long, value_name = "DURATION",
        help = with_default("How often the upstream's /readyz is checked", UPSTREAM_CHECK_INTERVAL))]
    pub upstream_check_interval: Option<Span>,
}

/// An `--upstream`: an https:// URL without a path, whose host is a valid server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    url: http::Uri,
    host: ServerName<'static>,
}

impl UpstreamUrl {
    /// A URL written in the code, as [`http::HeaderName::from_static`]: panics if it is not
    /// a valid `--upstream`.
    pub fn from_static(url: &'static str) -> Self {
        url.parse().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let url: http::Uri = raw.parse().map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
        if url.scheme_str() != Some("https") {
            return Err(format!("{raw:?} must be an https:// URL (kube-apiserver serves TLS)"));
        }
        let host = url.host().ok_or_else(|| format!("{raw:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if url.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(format!("{raw:?} must not have a path or query"));
        }
        let host = ServerName::try_from(host).map_err(|e| format!("{raw:?}: host is not a valid server name: {e}"))?;
        Ok(Self { url, host })
    }
}

/// `--upstream-server-name`: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNameArg(ServerName<'static>);

impl FromStr for ServerNameArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ServerName::try_from(s.to_string()).map(Self).map_err(|e| format!("{s:?}: {e}"))
    }
}

deserialize_from_str!(UpstreamUrl, ServerNameArg);

/// One kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub url: http::Uri,
    /// SNI and verification name (`--upstream-server-name`, else the URL's host).
    pub server_name: ServerName<'static>,
}

impl UpstreamTarget {
    /// How logs, errors and metrics name this upstream: its URL without a trailing `/`.
    pub fn label(&self) -> String {
        self.url.to_string().trim_end_matches('/').to_string()
    }
}

/// Upstream (kube-apiserver) settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Every `--upstream`, in order; never empty.
    pub targets: Vec<UpstreamTarget>,
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// HTTP/2 connections to each upstream that offers h2 (`--upstream-http2`, the default).
    pub http2: bool,
    /// Streams per upstream HTTP/2 connection before another is opened.
    pub http2_max_streams: u32,
}

impl UpstreamConfig {
    /// The first `--upstream`'s URL.
    pub fn url(&self) -> &http::Uri {
        &self.targets[0].url
    }

    /// The first `--upstream`'s server name.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.targets[0].server_name
    }
}

/// The upstream settings, and `--upstream-check-interval`.
pub(super) fn resolve(l: &Layers<'_, UpstreamFlags>) -> Result<(UpstreamConfig, Duration), ConfigError> {
    let name = pick!(l, upstream_server_name).get().map(|n| n.0);
    let urls = pick!(l, upstream)
        .required("kube-apiserver's URL, e.g. https://127.0.0.1:6443")?
        .check_all(|u, before| {
            if before.iter().any(|b| b.url == u.url) {
                Err(format!("{:?} is given twice", u.url.to_string().trim_end_matches('/')))
            } else {
                Ok(())
            }
        })?
        .list();
    let targets =
        urls.into_iter().map(|u| UpstreamTarget { url: u.url, server_name: name.clone().unwrap_or(u.host) }).collect();
    let config = UpstreamConfig {
        targets,
        ca_file: pick!(l, upstream_ca_file)
            .path()
            .required("the CA that signed kube-apiserver's serving certificate, e.g. /etc/kubernetes/pki/ca.crt")?,
        client_cert_file: pick!(l, proxy_client_cert_file)
            .path()
            .required("the front-proxy client certificate, e.g. /etc/kubernetes/pki/front-proxy-client.crt")?,
        client_key_file: pick!(l, proxy_client_key_file).path().get(),
        connect_timeout: pick!(l, upstream_connect_timeout).or(UPSTREAM_CONNECT_TIMEOUT).0,
        http2: pick!(l, upstream_http2).or(UPSTREAM_HTTP2),
        http2_max_streams: pick!(l, upstream_http2_max_streams)
            .check(|&n| n >= 1, "must be at least 1")?
            .or(UPSTREAM_HTTP2_MAX_STREAMS),
    };
    Ok((config, pick!(l, upstream_check_interval).or(UPSTREAM_CHECK_INTERVAL).0))
}
