//! Every flag and config-file key, parsed in two stages: raw (clap flags and the serde
//! YAML file, all optional) then resolved into a validated [`Config`] whose errors name
//! the flag or key and where it came from. Flags win over the file.
//!
//! Security defaults are written out here, not inherited from a library:
//! `--client-cert-mode=optional`, `--revocation-check=chain`, `--crl-missing=deny`,
//! `--crl-expired=deny`, `--crl-expired-grace=0s`, `--ocsp=off`, TLS session resumption off.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use http::HeaderName;
use serde::Deserialize;

use crate::error::ConfigError;

/// The admin endpoint's default port (on 127.0.0.1). Chosen to collide with nothing that
/// runs on a control-plane node: not Prometheus (9090), Alertmanager (9093), the Pushgateway
/// (9091) or an exporter (Prometheus allocates 9100-9999 to exporters), and not kube-apiserver
/// (6443), etcd (2379-2381), the kubelet (10248, 10250, 10255), kube-proxy (10249, 10256),
/// kube-controller-manager (10257), cloud-controller-manager (10258) or kube-scheduler (10259).
pub const DEFAULT_ADMIN_PORT: u16 = 6442;

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertMode {
    /// Clients without a certificate are forwarded with no identity headers (tokens work).
    Optional,
    /// The handshake fails without a client certificate.
    Required,
}

/// Which certificates of a client's chain are checked against CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationCheck {
    /// The leaf and every intermediate (each against its issuer's CRL).
    Chain,
    /// Only the leaf.
    Leaf,
}

/// What to do with a CA that has no CRL, or a CRL past its nextUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Deny,
    Allow,
}

/// Whether client certificates are also checked with OCSP, and what "no answer" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OcspMode {
    /// No OCSP: CRLs only.
    Off,
    /// Revoked answers refuse; no answer (responder down, slow, unknown) lets the handshake go on.
    IfAvailable,
    /// Only a good answer lets the handshake go on.
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags of the `run` command. Every field is optional so that a value given
/// neither here nor in the file takes the default written out in [`Config::resolve`].
#[derive(Debug, Default, Clone, Args)]
pub struct RunFlags {
    /// YAML file with the same keys as the flags (without the leading dashes); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// Port to listen on; 0 picks a free port (see --ready-file) [default: 6443].
    #[arg(long, value_name = "PORT")]
    pub secure_port: Option<u16>,
    /// Once listening, write the bound address (ip:port) to this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Serving certificate chain (PEM). May also hold the key (HAProxy's combined .pem).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving private key (PEM). Default: read from --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CAs (roots and intermediates) that client certificates chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA names sent to clients in the CertificateRequest. Default: every CA in --client-ca-file.
    #[arg(long, value_name = "FILE")]
    pub client_ca_names_file: Option<PathBuf>,
    /// CRL file (PEM with one or more CRLs, or DER). Repeatable.
    #[arg(long = "crl-file", value_name = "FILE")]
    pub crl_files: Vec<PathBuf>,
    /// optional: clients without a certificate pass with no identity; required: they are refused [default: optional].
    #[arg(long, value_name = "MODE")]
    pub client_cert_mode: Option<ClientCertMode>,
    /// URL (http or https) to fetch a CRL from, refreshed before its nextUpdate. Repeatable.
    #[arg(long = "crl-url", value_name = "URL")]
    pub crl_urls: Vec<String>,
    /// CA bundle verifying https CRL URLs [default: the system roots].
    #[arg(long, value_name = "FILE")]
    pub crl_url_ca_file: Option<PathBuf>,
    /// Refresh fetched CRLs at least this often [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub crl_refresh_interval: Option<String>,
    /// Keep fetched CRLs here, so a restart while the CA's server is down still enforces them.
    #[arg(long, value_name = "DIR")]
    pub crl_cache_dir: Option<PathBuf>,
    /// Time limit of one CRL fetch attempt (connect, headers and body) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub crl_fetch_timeout: Option<String>,
    /// Largest CRL accepted from a URL, in bytes [default: 134217728 (128 MiB)].
    #[arg(long, value_name = "BYTES")]
    pub crl_max_bytes: Option<usize>,
    /// Also fetch the CRLs named in the CRL Distribution Points of the CA certificates and of
    /// verified client certificates [default: false].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub crl_from_distribution_points: Option<bool>,
    /// chain: leaf and intermediates are checked against CRLs; leaf: the leaf only [default: chain].
    #[arg(long, value_name = "MODE")]
    pub revocation_check: Option<RevocationCheck>,
    /// deny: a CA without a CRL is a start-up error; allow: its certificates pass unchecked [default: deny].
    #[arg(long, value_name = "POLICY")]
    pub crl_missing: Option<Policy>,
    /// deny: clients of a CA whose CRL is past nextUpdate (+grace) are refused; allow: warn [default: deny].
    #[arg(long, value_name = "POLICY")]
    pub crl_expired: Option<Policy>,
    /// Grace period after a CRL's nextUpdate before --crl-expired applies [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub crl_expired_grace: Option<String>,
    /// Also check client certificates with OCSP. off; if-available: a revoked answer refuses,
    /// no answer passes; required: only a good answer passes [default: off].
    #[arg(long, value_name = "MODE")]
    pub ocsp: Option<OcspMode>,
    /// Ask this OCSP responder (http://) instead of the one in each certificate's Authority
    /// Information Access extension.
    #[arg(long, value_name = "URL")]
    pub ocsp_responder_url: Option<String>,
    /// Longest wait for an OCSP responder, per query (a handshake waits at most this) [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub ocsp_timeout: Option<String>,
    /// Re-ask the responder after this long even if the answer's nextUpdate is later; also
    /// the freshness bound for answers without nextUpdate [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub ocsp_max_age: Option<String>,
    /// Certificates whose OCSP answers are cached [default: 10000].
    #[arg(long, value_name = "N")]
    pub ocsp_cache_size: Option<usize>,

    /// kube-apiserver URL, e.g. https://127.0.0.1:6443. Repeatable: requests go to a healthy one.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstream: Vec<String>,
    /// CA bundle that verifies the upstream's serving certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Name to send as SNI and to verify the upstream certificate against. Default: the URL's host.
    #[arg(long, value_name = "NAME")]
    pub upstream_server_name: Option<String>,
    /// Front-proxy client certificate (CN front-proxy-client), PEM; may also hold the key.
    #[arg(long, value_name = "FILE")]
    pub proxy_client_cert_file: Option<PathBuf>,
    /// Front-proxy client key (PEM). Default: read from --proxy-client-cert-file.
    #[arg(long, value_name = "FILE")]
    pub proxy_client_key_file: Option<PathBuf>,

    #[command(flatten)]
    pub requestheader: RequestHeaderFlags,

    /// Warn when a CRL's nextUpdate is this close [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub crl_expiry_warning: Option<String>,
    /// Close a connection when its client certificate's notAfter passes [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub close_expired_connections: Option<bool>,

    /// Time to let in-flight requests finish after SIGTERM/SIGINT [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Maximum time for a client's TLS handshake [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub tls_handshake_timeout: Option<String>,
    /// Maximum time for a client to send a request's headers (HTTP/1.1) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub request_header_timeout: Option<String>,
    /// Close client connections that carry no request for this long (never a live watch or
    /// tunnel) [default: 90s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Maximum open client connections; more are refused at accept [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Maximum size of a request's headers, HTTP/1.1 and HTTP/2 [default: 1048576 (1 MiB, as
    /// kube-apiserver)].
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Maximum concurrent HTTP/2 streams per client connection [default: 1000].
    #[arg(long, value_name = "N")]
    pub http2_max_concurrent_streams: Option<u32>,
    /// Maximum time to open a TCP connection to the upstream [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_connect_timeout: Option<String>,
    /// Send requests to the upstream over HTTP/2 connections when it offers h2, each carrying up
    /// to --upstream-http2-max-streams requests at once; false: a pool of HTTP/1.1 connections,
    /// one per request in flight. Upgrades (exec, attach, port-forward) are HTTP/1.1 either way
    /// [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub upstream_http2: Option<bool>,
    /// Requests in flight per upstream HTTP/2 connection before another is opened; keep it at or
    /// below kube-apiserver's --http2-max-streams-per-connection [default: 100].
    #[arg(long, value_name = "N")]
    pub upstream_http2_max_streams: Option<u32>,

    /// Admin endpoint (plain HTTP: /livez, /readyz, /metrics); keep it on loopback; port 0 picks a
    /// free one (see --ready-file) [default: 127.0.0.1:6442].
    #[arg(long, value_name = "IP:PORT")]
    pub admin_address: Option<std::net::SocketAddr>,
    /// How often the upstream's /readyz is checked [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_check_interval: Option<String>,

    /// Log one `access` event per finished request (user, groups, method, path, status,
    /// bytes, duration, upstream) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub access_log: Option<bool>,

    /// Log format [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter, e.g. info, debug, kube_crl_proxy=debug [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// More verbose logs (-v debug, -vv trace).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The identity header names (kube-apiserver's `--requestheader-*` flags), shared by `run`
/// and `check-apiserver`.
#[derive(Debug, Default, Clone, Args)]
pub struct RequestHeaderFlags {
    /// Header(s) carrying the user name, comma-separated; the first is set [default: X-Remote-User].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub requestheader_username_headers: Vec<String>,
    /// Header(s) carrying groups; the first is set, one line per group [default: X-Remote-Group].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub requestheader_group_headers: Vec<String>,
    /// Prefix of extra headers [default: X-Remote-Extra-].
    #[arg(long, value_name = "PREFIX")]
    pub requestheader_extra_headers_prefix: Option<String>,
    /// Header(s) carrying the UID (from subject OID 1.3.6.1.4.1.57683.2); empty = off [default: empty].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub requestheader_uid_headers: Vec<String>,
}

/// The config file: the same keys as the flags. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    bind_address: Option<IpAddr>,
    secure_port: Option<u16>,
    ready_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_private_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_ca_names_file: Option<PathBuf>,
    #[serde(default)]
    crl_file: OneOrMany<PathBuf>,
    client_cert_mode: Option<ClientCertMode>,
    #[serde(default)]
    crl_url: OneOrMany<String>,
    crl_url_ca_file: Option<PathBuf>,
    crl_refresh_interval: Option<String>,
    crl_cache_dir: Option<PathBuf>,
    crl_fetch_timeout: Option<String>,
    crl_max_bytes: Option<usize>,
    crl_from_distribution_points: Option<bool>,
    revocation_check: Option<RevocationCheck>,
    crl_missing: Option<Policy>,
    crl_expired: Option<Policy>,
    crl_expired_grace: Option<String>,
    ocsp: Option<OcspMode>,
    ocsp_responder_url: Option<String>,
    ocsp_timeout: Option<String>,
    ocsp_max_age: Option<String>,
    ocsp_cache_size: Option<usize>,
    #[serde(default)]
    upstream: OneOrMany<String>,
    upstream_ca_file: Option<PathBuf>,
    upstream_server_name: Option<String>,
    proxy_client_cert_file: Option<PathBuf>,
    proxy_client_key_file: Option<PathBuf>,
    #[serde(default)]
    requestheader_username_headers: OneOrMany<String>,
    #[serde(default)]
    requestheader_group_headers: OneOrMany<String>,
    requestheader_extra_headers_prefix: Option<String>,
    #[serde(default)]
    requestheader_uid_headers: OneOrMany<String>,
    close_expired_connections: Option<bool>,
    crl_expiry_warning: Option<String>,
    shutdown_grace: Option<String>,
    tls_handshake_timeout: Option<String>,
    request_header_timeout: Option<String>,
    upstream_connect_timeout: Option<String>,
    upstream_http2: Option<bool>,
    upstream_http2_max_streams: Option<u32>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    http2_max_concurrent_streams: Option<u32>,
    admin_address: Option<std::net::SocketAddr>,
    upstream_check_interval: Option<String>,
    access_log: Option<bool>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
}

/// A YAML value that may be a scalar or a list (`crl-file: a.pem` or `crl-file: [a.pem, b.pem]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

/// One kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub url: http::Uri,
    /// SNI and verification name (`--upstream-server-name`, else the URL's host).
    pub server_name: String,
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
    /// Every `--upstream`, in order; `url` and `server_name` are the first one's.
    pub targets: Vec<UpstreamTarget>,
    pub url: http::Uri,
    pub ca_file: PathBuf,
    pub server_name: String,
    pub client_cert_file: PathBuf,
    pub client_key_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// HTTP/2 connections to each upstream that offers h2 (`--upstream-http2`, the default).
    pub http2: bool,
    /// Streams per upstream HTTP/2 connection before another is opened.
    pub http2_max_streams: u32,
}

/// Fetching CRLs from URLs.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub urls: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub refresh_interval: Duration,
    pub cache_dir: Option<PathBuf>,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub from_distribution_points: bool,
}

/// OCSP checking of client certificates.
#[derive(Debug, Clone)]
pub struct OcspConfig {
    pub mode: OcspMode,
    pub responder_url: Option<String>,
    pub timeout: Duration,
    pub max_age: Duration,
    pub cache_size: usize,
}

/// Limits on what one client may hold (explicit, see the README's "Security model").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 rapid reset (CVE-2023-44487): streams reset by the client before we accept them.
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams we reset because of client errors, before GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
}

/// Revocation policy, every choice spelled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    pub check: RevocationCheck,
    pub crl_missing: Policy,
    pub crl_expired: Policy,
    pub crl_expired_grace: Duration,
}

pub use crate::identity::HeaderNames;

/// The validated configuration of `run`.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub ready_file: Option<PathBuf>,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: PathBuf,
    pub client_ca_names_file: Option<PathBuf>,
    pub crl_files: Vec<PathBuf>,
    pub fetch: FetchConfig,
    pub client_cert_mode: ClientCertMode,
    pub revocation: RevocationPolicy,
    pub ocsp: OcspConfig,
    pub upstream: UpstreamConfig,
    pub headers: HeaderNames,
    pub close_expired_connections: bool,
    pub crl_expiry_warning: Duration,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
    pub request_header_timeout: Duration,
    pub limits: Limits,
    pub admin_address: std::net::SocketAddr,
    pub upstream_check_interval: Duration,
    pub access_log: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flags,
    File(&'a Path),
}

impl Origin<'_> {
    fn err(self, key: &str, message: impl Into<String>) -> ConfigError {
        match self {
            Origin::Flags => ConfigError::Invalid {
                source_name: "command line".into(),
                field: format!("--{key}"),
                message: message.into(),
            },
            Origin::File(p) => ConfigError::Invalid {
                source_name: p.display().to_string(),
                field: key.to_string(),
                message: message.into(),
            },
        }
    }
}

/// A value and where it came from.
struct Sourced<'a, T> {
    value: T,
    origin: Origin<'a>,
}

/// Picks the flag if given, else the file's value (with its path made relative to the file).
fn pick<'a, T>(flag: Option<T>, file: Option<T>, file_path: Option<&'a Path>) -> Option<Sourced<'a, T>> {
    match (flag, file, file_path) {
        (Some(v), _, _) => Some(Sourced { value: v, origin: Origin::Flags }),
        (None, Some(v), Some(p)) => Some(Sourced { value: v, origin: Origin::File(p) }),
        _ => None,
    }
}

fn pick_vec<'a, T>(flag: Vec<T>, file: Vec<T>, file_path: Option<&'a Path>) -> Sourced<'a, Vec<T>> {
    match file_path {
        Some(p) if flag.is_empty() && !file.is_empty() => Sourced { value: file, origin: Origin::File(p) },
        _ => Sourced { value: flag, origin: Origin::Flags },
    }
}

/// Paths in the config file are relative to the file's directory.
fn relative_to(file: Option<&Path>, p: PathBuf) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

fn duration(v: Option<Sourced<'_, String>>, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.value.trim())
            .map_err(|e| s.origin.err(key, format!("invalid duration {:?}: {e} (examples: 0s, 30s, 5m, 1h)", s.value))),
    }
}

fn header_names(v: Sourced<'_, Vec<String>>, key: &str, default: &[&str]) -> Result<Vec<HeaderName>, ConfigError> {
    let raw: Vec<String> = if v.value.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        v.value.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    raw.iter()
        .map(|n| {
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| v.origin.err(key, format!("{n:?} is not a valid HTTP header name")))
        })
        .collect()
}

fn required<'a, T>(v: Option<Sourced<'a, T>>, key: &str, hint: &str) -> Result<Sourced<'a, T>, ConfigError> {
    v.ok_or_else(|| Origin::Flags.err(key, format!("is required ({hint})")))
}

impl Config {
    /// Reads the optional config file, merges the flags over it and validates the result.
    pub fn resolve(flags: RunFlags) -> Result<Self, ConfigError> {
        let (file, file_path) = match &flags.config {
            None => (FileConfig::default(), None),
            Some(p) => (read_file(p, &flags)?, Some(p.as_path())),
        };
        let fp = file_path;
        let rel = |o: Option<Sourced<'_, PathBuf>>| {
            o.map(|s| match s.origin {
                Origin::File(p) => relative_to(Some(p), s.value),
                Origin::Flags => s.value,
            })
        };

        let tls_cert_file = required(
            pick(flags.tls_cert_file, file.tls_cert_file, fp),
            "tls-cert-file",
            "the serving certificate clients see, e.g. /etc/kubernetes/pki/apiserver.crt",
        )?;
        let tls_cert_file = rel(Some(tls_cert_file)).unwrap_or_default();
        let client_ca_file = required(
            pick(flags.client_ca_file, file.client_ca_file, fp),
            "client-ca-file",
            "the CAs that sign client certificates, e.g. /etc/kubernetes/pki/ca.crt",
        )?;
        let client_ca_file = rel(Some(client_ca_file)).unwrap_or_default();

        let crl_files = pick_vec(flags.crl_files, file.crl_file.into_vec(), fp);
        let crl_files: Vec<PathBuf> = match crl_files.origin {
            Origin::File(p) => crl_files.value.into_iter().map(|c| relative_to(Some(p), c)).collect(),
            Origin::Flags => crl_files.value,
        };

        let crl_urls = pick_vec(flags.crl_urls, file.crl_url.into_vec(), fp);
        for u in &crl_urls.value {
            let ok = u
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some());
            if !ok {
                return Err(crl_urls.origin.err("crl-url", format!("{u:?} is not an http:// or https:// URL")));
            }
        }
        let fetch = FetchConfig {
            urls: crl_urls.value,
            ca_file: rel(pick(flags.crl_url_ca_file, file.crl_url_ca_file, fp)),
            refresh_interval: duration(
                pick(flags.crl_refresh_interval, file.crl_refresh_interval, fp),
                "crl-refresh-interval",
                Duration::from_secs(300),
            )?,
            cache_dir: rel(pick(flags.crl_cache_dir, file.crl_cache_dir, fp)),
            timeout: duration(
                pick(flags.crl_fetch_timeout, file.crl_fetch_timeout, fp),
                "crl-fetch-timeout",
                Duration::from_secs(30),
            )?,
            max_bytes: pick(flags.crl_max_bytes, file.crl_max_bytes, fp).map_or(128 << 20, |s| s.value),
            from_distribution_points: pick(flags.crl_from_distribution_points, file.crl_from_distribution_points, fp)
                .is_some_and(|s| s.value),
        };

        let upstream_raw = pick_vec(flags.upstream, file.upstream.into_vec(), fp);
        if upstream_raw.value.is_empty() {
            return Err(
                Origin::Flags.err("upstream", "is required (kube-apiserver's URL, e.g. https://127.0.0.1:6443)")
            );
        }
        let name_flag = match pick(flags.upstream_server_name, file.upstream_server_name, fp) {
            Some(s) => {
                rustls_pki_types::ServerName::try_from(s.value.as_str())
                    .map_err(|e| s.origin.err("upstream-server-name", format!("{:?}: {e}", s.value)))?;
                Some(s.value)
            }
            None => None,
        };
        let mut targets = Vec::new();
        for raw in &upstream_raw.value {
            let err = |m: String| upstream_raw.origin.err("upstream", m);
            let url: http::Uri = raw.parse().map_err(|e| err(format!("invalid URL {raw:?}: {e}")))?;
            if url.scheme_str() != Some("https") {
                return Err(err(format!("{raw:?} must be an https:// URL (kube-apiserver serves TLS)")));
            }
            let host = url
                .host()
                .ok_or_else(|| err(format!("{raw:?} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            if url.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
                return Err(err(format!("{raw:?} must not have a path or query")));
            }
            if targets.iter().any(|t: &UpstreamTarget| t.url == url) {
                return Err(err(format!("{raw:?} is given twice")));
            }
            let server_name = name_flag.clone().unwrap_or(host);
            rustls_pki_types::ServerName::try_from(server_name.as_str())
                .map_err(|e| err(format!("{raw:?}: host is not a valid server name: {e}")))?;
            targets.push(UpstreamTarget { url, server_name });
        }
        let (url, server_name) = (targets[0].url.clone(), targets[0].server_name.clone());
        let upstream_ca_file = required(
            pick(flags.upstream_ca_file, file.upstream_ca_file, fp),
            "upstream-ca-file",
            "the CA that signed kube-apiserver's serving certificate, e.g. /etc/kubernetes/pki/ca.crt",
        )?;
        let proxy_client_cert_file = required(
            pick(flags.proxy_client_cert_file, file.proxy_client_cert_file, fp),
            "proxy-client-cert-file",
            "the front-proxy client certificate, e.g. /etc/kubernetes/pki/front-proxy-client.crt",
        )?;

        let username = header_names(
            pick_vec(
                flags.requestheader.requestheader_username_headers,
                file.requestheader_username_headers.into_vec(),
                fp,
            ),
            "requestheader-username-headers",
            &["X-Remote-User"],
        )?;
        let group = header_names(
            pick_vec(flags.requestheader.requestheader_group_headers, file.requestheader_group_headers.into_vec(), fp),
            "requestheader-group-headers",
            &["X-Remote-Group"],
        )?;
        let uid = header_names(
            pick_vec(flags.requestheader.requestheader_uid_headers, file.requestheader_uid_headers.into_vec(), fp),
            "requestheader-uid-headers",
            &[],
        )?;
        let extra_prefix = match pick(
            flags.requestheader.requestheader_extra_headers_prefix,
            file.requestheader_extra_headers_prefix,
            fp,
        ) {
            None => "x-remote-extra-".to_string(),
            Some(s) => {
                let p = s.value.trim().to_ascii_lowercase();
                if p.is_empty() || HeaderName::from_bytes(p.as_bytes()).is_err() {
                    return Err(s.origin.err(
                        "requestheader-extra-headers-prefix",
                        format!("{:?} is not a valid header-name prefix", s.value),
                    ));
                }
                p
            }
        };

        let log_level = match pick(flags.log_level, file.log_level, fp) {
            Some(s) => {
                tracing_subscriber::EnvFilter::try_new(&s.value)
                    .map_err(|e| s.origin.err("log-level", format!("{:?}: {e}", s.value)))?;
                s.value
            }
            None => match flags.verbose {
                0 => "info".into(),
                1 => "debug".into(),
                _ => "trace".into(),
            },
        };

        let ocsp_url = pick(flags.ocsp_responder_url, file.ocsp_responder_url, fp);
        if let Some(u) = &ocsp_url {
            let ok = u
                .value
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
            if !ok {
                return Err(u.origin.err(
                    "ocsp-responder-url",
                    format!(
                        "{:?} is not an http:// URL (OCSP answers are signed; responders serve plain HTTP)",
                        u.value
                    ),
                ));
            }
        }
        let raw = pick(flags.ocsp_timeout, file.ocsp_timeout, fp);
        let origin = raw.as_ref().map_or(Origin::Flags, |s| s.origin);
        let ocsp_timeout = duration(raw, "ocsp-timeout", Duration::from_secs(2))?;
        if ocsp_timeout.is_zero() {
            return Err(origin.err("ocsp-timeout", "must be more than 0s"));
        }
        let raw = pick(flags.ocsp_max_age, file.ocsp_max_age, fp);
        let max_age_origin = raw.as_ref().map_or(Origin::Flags, |s| s.origin);
        let ocsp_max_age = duration(raw, "ocsp-max-age", Duration::from_secs(3600))?;
        if ocsp_max_age < Duration::from_secs(1) {
            return Err(max_age_origin.err("ocsp-max-age", "must be at least 1s"));
        }
        let ocsp = OcspConfig {
            mode: pick(flags.ocsp, file.ocsp, fp).map_or(OcspMode::Off, |s| s.value),
            responder_url: ocsp_url.map(|s| s.value),
            timeout: ocsp_timeout,
            max_age: ocsp_max_age,
            cache_size: pick(flags.ocsp_cache_size, file.ocsp_cache_size, fp).map_or(10_000, |s| s.value),
        };

        let config = Config {
            ocsp,
            bind_address: pick(flags.bind_address, file.bind_address, fp)
                .map_or(IpAddr::from([0, 0, 0, 0]), |s| s.value),
            secure_port: pick(flags.secure_port, file.secure_port, fp).map_or(6443, |s| s.value),
            ready_file: rel(pick(flags.ready_file, file.ready_file, fp)),
            tls_cert_file,
            tls_private_key_file: rel(pick(flags.tls_private_key_file, file.tls_private_key_file, fp)),
            client_ca_file,
            client_ca_names_file: rel(pick(flags.client_ca_names_file, file.client_ca_names_file, fp)),
            crl_files,
            fetch,
            client_cert_mode: pick(flags.client_cert_mode, file.client_cert_mode, fp)
                .map_or(ClientCertMode::Optional, |s| s.value),
            revocation: RevocationPolicy {
                check: pick(flags.revocation_check, file.revocation_check, fp)
                    .map_or(RevocationCheck::Chain, |s| s.value),
                crl_missing: pick(flags.crl_missing, file.crl_missing, fp).map_or(Policy::Deny, |s| s.value),
                crl_expired: pick(flags.crl_expired, file.crl_expired, fp).map_or(Policy::Deny, |s| s.value),
                crl_expired_grace: duration(
                    pick(flags.crl_expired_grace, file.crl_expired_grace, fp),
                    "crl-expired-grace",
                    Duration::ZERO,
                )?,
            },
            upstream: UpstreamConfig {
                targets,
                url,
                ca_file: rel(Some(upstream_ca_file)).unwrap_or_default(),
                server_name,
                client_cert_file: rel(Some(proxy_client_cert_file)).unwrap_or_default(),
                client_key_file: rel(pick(flags.proxy_client_key_file, file.proxy_client_key_file, fp)),
                connect_timeout: duration(
                    pick(flags.upstream_connect_timeout, file.upstream_connect_timeout, fp),
                    "upstream-connect-timeout",
                    Duration::from_secs(10),
                )?,
                http2: pick(flags.upstream_http2, file.upstream_http2, fp).is_none_or(|s| s.value),
                http2_max_streams: match pick(flags.upstream_http2_max_streams, file.upstream_http2_max_streams, fp) {
                    Some(s) if s.value == 0 => {
                        return Err(s.origin.err("upstream-http2-max-streams", "must be at least 1"));
                    }
                    Some(s) => s.value,
                    None => 100,
                },
            },
            headers: HeaderNames::new(username, group, uid, extra_prefix),
            close_expired_connections: pick(flags.close_expired_connections, file.close_expired_connections, fp)
                .is_none_or(|s| s.value),
            crl_expiry_warning: duration(
                pick(flags.crl_expiry_warning, file.crl_expiry_warning, fp),
                "crl-expiry-warning",
                Duration::from_secs(24 * 3600),
            )?,
            shutdown_grace: duration(
                pick(flags.shutdown_grace, file.shutdown_grace, fp),
                "shutdown-grace",
                Duration::from_secs(30),
            )?,
            tls_handshake_timeout: duration(
                pick(flags.tls_handshake_timeout, file.tls_handshake_timeout, fp),
                "tls-handshake-timeout",
                Duration::from_secs(10),
            )?,
            request_header_timeout: duration(
                pick(flags.request_header_timeout, file.request_header_timeout, fp),
                "request-header-timeout",
                Duration::from_secs(30),
            )?,
            limits: Limits {
                idle_timeout: duration(
                    pick(flags.idle_timeout, file.idle_timeout, fp),
                    "idle-timeout",
                    Duration::from_secs(90),
                )?,
                max_connections: match pick(flags.max_connections, file.max_connections, fp) {
                    Some(s) if s.value == 0 => return Err(s.origin.err("max-connections", "must be at least 1")),
                    Some(s) => s.value,
                    None => 10_000,
                },
                max_header_bytes: match pick(flags.max_header_bytes, file.max_header_bytes, fp) {
                    Some(s) if s.value < 4096 => return Err(s.origin.err("max-header-bytes", "must be at least 4096")),
                    Some(s) => s.value,
                    None => 1 << 20,
                },
                http2_max_concurrent_streams: match pick(
                    flags.http2_max_concurrent_streams,
                    file.http2_max_concurrent_streams,
                    fp,
                ) {
                    Some(s) if s.value == 0 => {
                        return Err(s.origin.err("http2-max-concurrent-streams", "must be at least 1"));
                    }
                    Some(s) => s.value,
                    None => 1000,
                },
                http2_max_pending_accept_reset_streams: 20,
                http2_max_local_error_reset_streams: 1024,
            },
            admin_address: pick(flags.admin_address, file.admin_address, fp)
                .map_or(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)), |s| s.value),
            upstream_check_interval: duration(
                pick(flags.upstream_check_interval, file.upstream_check_interval, fp),
                "upstream-check-interval",
                Duration::from_secs(5),
            )?,
            access_log: pick(flags.access_log, file.access_log, fp).is_some_and(|s| s.value),
            log_format: pick(flags.log_format, file.log_format, fp).map_or(LogFormat::Text, |s| s.value),
            log_level,
        };
        config.check_header_overlap()?;
        Ok(config)
    }

    /// The identity headers must be distinct, and none may start with the extra prefix
    /// (it would be stripped and set twice).
    fn check_header_overlap(&self) -> Result<(), ConfigError> {
        let h = &self.headers;
        let all: Vec<&HeaderName> = h.username.iter().chain(&h.group).chain(&h.uid).collect();
        for (i, a) in all.iter().enumerate() {
            if all[..i].contains(a) {
                return Err(Origin::Flags.err("requestheader-*-headers", format!("header {a} is named twice")));
            }
            if a.as_str().starts_with(&h.extra_prefix) {
                return Err(Origin::Flags.err(
                    "requestheader-extra-headers-prefix",
                    format!("header {a} starts with the extra prefix {}", h.extra_prefix),
                ));
            }
        }
        Ok(())
    }
}

/// What a config file must set at least, for the "not configured yet" messages.
const WHAT_TO_WRITE: &str = "write YAML with the keys of the flags (`kube-crl-proxy --help` lists them), at least \
     tls-cert-file, client-ca-file, crl-file (or crl-url), upstream, upstream-ca-file and proxy-client-cert-file";

/// Reads the config file. A missing file, or one that sets nothing (empty, or only comments
/// as the packaged template) while the flags do not configure the proxy either, is refused
/// with a message saying what to write: the packaged service must not run unconfigured.
fn read_file(path: &Path, flags: &RunFlags) -> Result<FileConfig, ConfigError> {
    let not_configured = |what: &str| ConfigError::file("--config", path, format!("{what}: {WHAT_TO_WRITE}"));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_configured("does not exist, so the proxy is not configured"));
        }
        Err(e) => return Err(ConfigError::file("--config", path, e.to_string())),
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::file("--config", path, e.to_string()))?;
    if value.is_null() {
        if flags.tls_cert_file.is_none() {
            return Err(not_configured("sets no keys yet (only comments), so the proxy is not configured"));
        }
        return Ok(FileConfig::default());
    }
    // Parsed again from the text: its errors name the key and line, from_value's do not.
    serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::file("--config", path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunFlags {
        RunFlags {
            tls_cert_file: Some("s.pem".into()),
            client_ca_file: Some("ca.pem".into()),
            upstream: vec!["https://127.0.0.1:6443".into()],
            upstream_ca_file: Some("uca.pem".into()),
            proxy_client_cert_file: Some("fp.pem".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::resolve(base()).unwrap();
        assert_eq!(c.bind_address.to_string(), "0.0.0.0");
        assert_eq!(c.secure_port, 6443);
        assert_eq!(c.client_cert_mode, ClientCertMode::Optional);
        assert_eq!(c.revocation.check, RevocationCheck::Chain);
        assert_eq!(c.revocation.crl_missing, Policy::Deny);
        assert_eq!(c.revocation.crl_expired, Policy::Deny);
        assert_eq!(c.revocation.crl_expired_grace, Duration::ZERO);
        assert_eq!(c.headers.username, vec![HeaderName::from_static("x-remote-user")]);
        assert_eq!(c.headers.group, vec![HeaderName::from_static("x-remote-group")]);
        assert!(c.headers.uid.is_empty());
        assert_eq!(c.headers.extra_prefix, "x-remote-extra-");
        assert_eq!(c.upstream.server_name, "127.0.0.1");
        assert!(c.close_expired_connections);
        assert_eq!(c.admin_address.to_string(), "127.0.0.1:6442");
        assert_eq!(c.upstream_check_interval, Duration::from_secs(5));
        assert!(c.upstream.http2);
        assert_eq!(c.upstream.http2_max_streams, 100);
    }

    #[test]
    fn the_default_admin_port_collides_with_no_control_plane_or_prometheus_port() {
        let taken = [6443, 2379, 2380, 2381, 10248, 10249, 10250, 10255, 10256, 10257, 10258, 10259, 9090, 9091, 9093];
        assert!(!taken.contains(&DEFAULT_ADMIN_PORT), "{DEFAULT_ADMIN_PORT}");
        assert!(!(9100..=9999).contains(&DEFAULT_ADMIN_PORT), "Prometheus exporters' range: {DEFAULT_ADMIN_PORT}");
        // Port 0 stays a choice: the OS picks a free port, written to --ready-file.
        let c = Config::resolve(RunFlags { admin_address: Some("127.0.0.1:0".parse().unwrap()), ..base() }).unwrap();
        assert_eq!(c.admin_address.port(), 0);
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("kcp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "secure-port: 7443\ncrl-file: [a.crl, /abs/b.crl]\nclient-cert-mode: required\nrequestheader-uid-headers: X-Remote-Uid\ncrl-expired-grace: 1h\n",
        )
        .unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        f.client_cert_mode = Some(ClientCertMode::Optional);
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.secure_port, 7443);
        assert_eq!(c.crl_files, vec![dir.join("a.crl"), PathBuf::from("/abs/b.crl")]);
        assert_eq!(c.client_cert_mode, ClientCertMode::Optional, "flag wins over file");
        assert_eq!(c.headers.uid, vec![HeaderName::from_static("x-remote-uid")]);
        assert_eq!(c.revocation.crl_expired_grace, Duration::from_secs(3600));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_keyless_config_file_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let flags = RunFlags { config: Some(path.clone()), ..Default::default() };
        let e = Config::resolve(flags.clone()).unwrap_err().to_string();
        assert!(e.contains("config.yaml: does not exist, so the proxy is not configured"), "{e}");
        assert!(e.contains("at least tls-cert-file, client-ca-file, crl-file (or crl-url), upstream"), "{e}");
        for text in
            ["", "\n", "# tls-cert-file: /etc/kubernetes/pki/apiserver.crt\n# upstream: https://127.0.0.1:6443\n"]
        {
            std::fs::write(&path, text).unwrap();
            let e = Config::resolve(flags.clone()).unwrap_err().to_string();
            assert!(e.contains("sets no keys yet (only comments)") && e.contains("proxy-client-cert-file"), "{e}");
        }
        // The flags may configure everything and the file nothing.
        let c = Config::resolve(RunFlags { config: Some(path.clone()), ..base() }).unwrap();
        assert_eq!(c.secure_port, 6443);
        // A file that sets keys gets the usual per-key messages.
        std::fs::write(&path, "secure-port: 7443\n").unwrap();
        let e = Config::resolve(flags).unwrap_err().to_string();
        assert!(e.contains("tls-cert-file") && e.contains("is required"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = std::env::temp_dir().join(format!("kcp-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "crl-expired-grace: soon\n").unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        let e = Config::resolve(f).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("crl-expired-grace"), "{e}");

        std::fs::write(&path, "no-such-key: 1\n").unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        let e = Config::resolve(f).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("no-such-key"), "{e}");

        std::fs::write(&path, "client-cert-mode: sometimes\n").unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        let e = Config::resolve(f).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("client-cert-mode"), "{e}");

        std::fs::write(&path, "upstream-http2: false\nupstream-http2-max-streams: 0\n").unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        let e = Config::resolve(f).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("upstream-http2-max-streams"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let mut f = base();
        f.upstream = vec!["http://127.0.0.1:8080".into()];
        assert!(Config::resolve(f).unwrap_err().to_string().contains("--upstream"));
        let mut f = base();
        f.upstream.push("https://127.0.0.1:6443".into());
        assert!(Config::resolve(f).unwrap_err().to_string().contains("given twice"));
        let mut f = base();
        f.upstream.push("https://[::1]:6443".into());
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.upstream.targets.len(), 2);
        assert_eq!(c.upstream.targets[1].server_name, "::1");
        let mut f = base();
        f.tls_cert_file = None;
        assert!(Config::resolve(f).unwrap_err().to_string().contains("--tls-cert-file"));
        let mut f = base();
        f.requestheader.requestheader_group_headers = vec!["X-Remote-User".into()];
        assert!(Config::resolve(f).unwrap_err().to_string().contains("named twice"));
        let mut f = base();
        f.requestheader.requestheader_username_headers = vec!["bad header".into()];
        assert!(Config::resolve(f).unwrap_err().to_string().contains("--requestheader-username-headers"));
    }
}
