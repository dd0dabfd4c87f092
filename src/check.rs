//! The operator commands that never serve and never contact the upstream: `check` (load
//! the configuration exactly as `run` does, summarise it, warn), `check-apiserver` (does
//! kube-apiserver's static pod manifest fit the proxy?) and `inspect` (would this client
//! certificate be accepted now, why, and as whom?).
//!
//! `check` loads like `run` (see `load`); `inspect` loads only the client side (CAs, CRLs,
//! OCSP, header names) and does not need the serving or upstream flags. The only network use
//! is fetching the `--crl-url` CRLs once (and, for `inspect --ocsp`, asking the responder).
//!
//! Each command returns a [`Report`] (the lines to print and whether it passed) or the
//! [`ConfigError`] `run` would have exited with; `main` maps them to exit statuses 0, 1, 64.
//!
//! Serving-certificate rule of `check`: with a specific `--bind-address`, an IP SAN must
//! equal it (clients connecting by that address would otherwise fail verification); with
//! `0.0.0.0`/`::` the addresses clients use are unknown, so `check` only warns when the
//! certificate has no IP SAN at all. DNS names are listed but never judged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use http::{HeaderMap, HeaderName};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::ca::{Ca, CaBundle};
use crate::config::{
    ClientFlags, Config, HeaderNames, ListenFlags, OcspMode, Policy, RunFlags, UpstreamFlags, UpstreamUrl,
};
use crate::error::{ConfigError, RefusalReason};
use crate::identity;
use crate::metrics::Metrics;
use crate::reload::fetch::Fetcher;
use crate::revocation::cert::Signed;
use crate::revocation::crl::reason_name;
use crate::revocation::ocsp::{CertStatus, Ocsp};
use crate::revocation::{Crl, PathCert, RevocationError, VerifiedPath, fmt_time};
use crate::tls::TlsMaterial;

/// The CN kube-apiserver's `--requestheader-allowed-names` lists in a kubeadm cluster.
pub const FRONT_PROXY_CN: &str = "front-proxy-client";

/// `kube-crl-proxy check`: the flags of `run`, plus `--strict`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Exit with status 1 when there are warnings.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `kube-crl-proxy inspect CERT`: a certificate file, plus the flags of `run` it uses (client
/// CAs, CRLs, OCSP, header names; the serving and upstream flags may be left out).
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// PEM file: the client certificate, optionally followed by its intermediates.
    #[arg(value_name = "CERT")]
    pub cert: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `kube-crl-proxy check-apiserver MANIFEST`: the manifest, plus the proxy's request-header
/// settings to compare against (from its `--config` file and/or these flags; the proxy's
/// defaults otherwise).
#[derive(Debug, Clone, Args)]
pub struct CheckApiserverArgs {
    /// kube-apiserver's static pod manifest, e.g. /etc/kubernetes/manifests/kube-apiserver.yaml.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The proxy's YAML config file; only its requestheader-* keys are used (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The proxy's request-header names, to compare with kube-apiserver's.
    #[command(flatten)]
    pub requestheader: crate::config::RequestHeaderFlags,
}

/// What a command found: the lines to print (stdout) and whether it passed (exit 0) or not
/// (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
    pub passed: bool,
}

impl Report {
    /// The lines, each ending with a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

// ---------------------------------------------------------------------------------------
// check

/// Loads everything `run` loads (nothing is bound, the upstream is not contacted) and
/// summarises it. Fails (under `--strict`) only on warnings; load errors are `Err`.
pub fn check(args: CheckArgs) -> Result<Report, ConfigError> {
    let config = Config::resolve(args.run)?;
    let (tls, load_warnings) = load(&config)?;
    let algs = crate::tls::provider().signature_verification_algorithms;
    let now = crate::revocation::now_secs();
    let mut lines = Vec::new();
    let mut warnings: Vec<String> = load_warnings;

    lines.push(format!("client CAs (--client-ca-file {}):", config.client_ca_file.display()));
    let index = tls.verifier.index();
    for ca in &tls.bundle.cas {
        lines.push(format!("  {}", ca.subject));
        lines.push(format!("    role:       {}", role(ca)));
        lines.push(format!("    notAfter:   {}", fmt_time(ca.not_after)));
        let facts = crate::revocation::CertFacts::parse(ca.der.as_ref()).ok();
        let crls: Vec<&Arc<Crl>> = facts.as_ref().map(|f| index.crls_of(f).collect()).unwrap_or_default();
        if crls.is_empty() {
            // The loader has already warned about it (only possible with --crl-missing=allow,
            // or when indirect CRLs are loaded, or for a CRL-signing key that issues nothing).
            let why = if facts.as_ref().is_some_and(|f| !f.may_sign_certs) {
                "none needed: a CRL-signing key (keyUsage without keyCertSign) issues no certificates"
            } else if index.crls().any(|c| c.scope.indirect) {
                "none of its own: its certificates need an indirect CRL that names it, else they are refused"
            } else {
                "none: its certificates are accepted unchecked"
            };
            lines.push(format!("    CRL:        {why}"));
        }
        for crl in crls {
            lines.extend(describe_crl(crl, now));
            warnings.extend(crl_warning(crl, &config, now));
        }
    }
    let indirect: Vec<&Arc<Crl>> = index.crls().filter(|c| c.scope.indirect).collect();
    if !indirect.is_empty() {
        lines.push("indirect CRLs (for the certificates whose distribution point names their issuer):".into());
        for crl in indirect {
            lines.push(format!("  {}", crl.issuer));
            lines.extend(describe_crl(crl, now));
            warnings.extend(crl_warning(crl, &config, now));
        }
    }
    let p = config.revocation;
    lines.push(format!(
        "policy: --client-cert-mode {} --revocation-check {} --crl-missing {} --crl-expired {} --crl-expired-grace {}",
        name_of(config.client_cert_mode),
        name_of(p.check),
        name_of(p.crl_missing),
        name_of(p.crl_expired),
        humantime::format_duration(p.crl_expired_grace)
    ));

    let serving = leaf_of("--tls-cert-file", &config.tls_cert_file)?;
    let (_, cert) = parse("--tls-cert-file", &config.tls_cert_file, &serving)?;
    let sans = sans(&cert);
    lines.push(format!("serving certificate (--tls-cert-file {}):", config.tls_cert_file.display()));
    lines.push(format!("  subject:  {}", cert.subject()));
    lines.push(format!("  SANs:     {}", if sans.is_empty() { "none".into() } else { describe_sans(&sans) }));
    lines.push(format!("  notAfter: {}", fmt_time(cert.validity().not_after.timestamp())));
    warnings.extend(bind_warning(config.bind_address, &sans));
    lines.push(format!("listen: {}", std::net::SocketAddr::new(config.bind_address, config.secure_port)));

    let fp_path = &config.upstream.client_cert_file;
    let fp_chain = crate::pem::certificates("--proxy-client-cert-file", fp_path)?;
    let (_, fp) = parse("--proxy-client-cert-file", fp_path, &fp_chain[0])?;
    let cn = last_cn(fp.subject());
    lines.push(format!("front-proxy client certificate (--proxy-client-cert-file {}):", fp_path.display()));
    lines.push(format!("  CN:       {}", cn.as_deref().unwrap_or("(none)")));
    lines.push(format!("  issuer:   {}", fp.issuer()));
    lines.push(format!("  notAfter: {}", fmt_time(fp.validity().not_after.timestamp())));
    if cn.as_deref() != Some(FRONT_PROXY_CN) {
        warnings.push(format!(
            "the front-proxy client certificate's CN is {}, not {FRONT_PROXY_CN:?}: kube-apiserver ignores the \
             proxy's identity headers unless its --requestheader-allowed-names lists that CN",
            cn.as_deref().map_or("missing".into(), |c| format!("{c:?}"))
        ));
    }
    if let Some(ca) = fp_chain.iter().find_map(|c| tls.bundle.cas.iter().find(|ca| issued_by(c, ca, &algs))) {
        warnings.push(format!(
            "the front-proxy client certificate chains to {:?}, a CA in --client-ca-file: the front-proxy CA is also \
             a client CA, so the proxy accepts its certificates from clients and requests could reach \
             kube-apiserver as front-proxy-client (or any other name that CA signed); keep the front-proxy CA out \
             of --client-ca-file",
            ca.subject
        ));
    }

    lines.push(describe_ocsp(&config));
    lines.push(format!(
        "upstream: {} (server name {}; not contacted by check)",
        config.upstream.url(),
        config.upstream.server_name().to_str()
    ));

    // As `run` would find it: raised as far as the hard limit allows.
    let fds = crate::limits::raise_for(config.limits.max_connections);
    warnings.extend(crate::limits::warning(fds, config.limits.max_connections));
    let n = warnings.len();
    lines.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
    let passed = !(args.strict && n > 0);
    lines.push(match (n, passed) {
        (0, _) => "result: loadable, no warnings".into(),
        (n, true) => format!("result: loadable, {n} warning(s)"),
        (n, false) => format!("result: loadable, {n} warning(s): failing because of --strict"),
    });
    Ok(Report { lines, passed })
}

/// Loads the TLS material as `run` does ([`crate::Proxy::build`]): the files, plus the CRLs
/// of `--crl-url` (and distribution points, when enabled) fetched once, falling back to
/// `--crl-cache-dir`. That is the only network use; the upstream is never contacted.
fn load(config: &Config) -> Result<(TlsMaterial, Vec<String>), ConfigError> {
    load_with(config, None)
}

fn load_with(config: &Config, ocsp: Option<Arc<Ocsp>>) -> Result<(TlsMaterial, Vec<String>), ConfigError> {
    TlsMaterial::load(config, &fetch_once(config)?, ocsp, None)
}

/// The CRLs of `--crl-url` (and distribution points, when enabled), fetched once, falling
/// back to `--crl-cache-dir`.
fn fetch_once(config: &Config) -> Result<Vec<crate::revocation::CrlSource>, ConfigError> {
    let fetched = if config.fetch.urls.is_empty() && !config.fetch.from_distribution_points {
        Vec::new()
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConfigError::Other(format!("cannot start the runtime: {e}")))?;
        rt.block_on(async {
            let fetcher = Fetcher::new(config, Arc::new(Metrics::new()))?;
            let bundle = CaBundle::load(&config.client_ca_file, config.client_ca_names_file.as_deref())?;
            fetcher.initial(&bundle).await;
            Ok::<_, ConfigError>(fetcher.sources())
        })?
    };
    Ok(fetched)
}

/// `--ocsp` and its settings, in one line.
fn describe_ocsp(config: &Config) -> String {
    let o = &config.ocsp;
    match o.mode {
        OcspMode::Off => "OCSP: off (CRLs only)".into(),
        mode => format!(
            "OCSP: {} (responder: {}; timeout {}; answers reused up to {}; cache {} certificates)",
            if mode == OcspMode::Required { "required" } else { "if-available" },
            o.responder_url.as_deref().unwrap_or("from each certificate's Authority Information Access"),
            humantime::format_duration(o.timeout),
            humantime::format_duration(o.max_age),
            o.cache_size
        ),
    }
}

/// What the OCSP lookup of `inspect` found (one certificate, so at most one cache entry).
fn describe_ocsp_answer(ocsp: Option<&Arc<Ocsp>>) -> String {
    let Some(ocsp) = ocsp else { return "ocsp:        off".into() };
    let known = ocsp.known();
    let Some((url, answer, failure)) = known.first() else {
        return "ocsp:        not asked (the chain was refused before)".into();
    };
    let url = url.as_deref().unwrap_or("(no responder)");
    match (answer, failure) {
        (Some(a), _) => {
            let status = match a.status {
                CertStatus::Good => "good".to_string(),
                CertStatus::Revoked { at, reason } => format!("REVOKED at {} ({})", fmt_time(at), reason_name(reason)),
                CertStatus::Unknown => "unknown (the responder does not know the certificate)".into(),
            };
            format!(
                "ocsp:        {status}, answered by {url} (thisUpdate {}, nextUpdate {})",
                fmt_time(a.this_update),
                a.next_update.map_or_else(|| "none".into(), fmt_time)
            )
        }
        (None, Some(e)) => format!("ocsp:        no answer: {e}"),
        (None, None) => format!("ocsp:        no answer from {url}"),
    }
}

/// Trust anchor or intermediate, and why (the rule of [`CaBundle`]).
fn role(ca: &Ca) -> String {
    let issuer = X509Certificate::from_der(ca.der.as_ref()).map(|(_, c)| c.issuer().as_raw().to_vec());
    match issuer {
        Ok(i) if i == ca.subject_der => "trust anchor (self-signed)".into(),
        Ok(i) if ca.is_anchor => {
            format!("trust anchor (its issuer {} is not in the file)", crate::revocation::display_name(&i))
        }
        Ok(i) => format!("intermediate (issued by {})", crate::revocation::display_name(&i)),
        Err(_) if ca.is_anchor => "trust anchor".into(),
        Err(_) => "intermediate".into(),
    }
}

/// The lines of `check` for one CRL: where from, scope, signer, number, entries, validity.
fn describe_crl(crl: &Crl, now: i64) -> Vec<String> {
    let mut lines = vec![
        format!("    CRL:        {} ({})", crl.source, entries(crl.len())),
        format!("      scope:      {}", crl.scope.describe()),
        format!(
            "      signer:     {}{} (key {})",
            crl.signer.subject,
            if crl.signer.dedicated { ", a dedicated CRL signer" } else { "" },
            crl.signer.key_id()
        ),
        format!("      number:     {}", crl.number_text()),
    ];
    if let Some((number, source)) = &crl.delta {
        lines.push(format!(
            "      delta:      {source} (number {}) merged",
            number.as_ref().map_or("none".into(), hex::encode)
        ));
    }
    lines.push(format!("      thisUpdate: {}", fmt_time(crl.this_update)));
    lines.push(format!("      nextUpdate: {}", next_update(crl, now)));
    lines
}

fn entries(n: usize) -> String {
    if n == 1 { "1 entry".into() } else { format!("{n} entries") }
}

fn next_update(crl: &Crl, now: i64) -> String {
    match crl.next_update {
        None => "none (the CRL never goes stale)".into(),
        Some(t) if t >= now => format!("{} (in {})", fmt_time(t), approx(t - now)),
        Some(t) => format!("{} ({} ago)", fmt_time(t), approx(now - t)),
    }
}

/// A duration in days, hours and minutes (seconds under a minute), e.g. `6d 23h 59m`.
fn approx(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    if secs < 60 {
        return format!("{secs}s");
    }
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let parts: Vec<String> =
        [(d, "d"), (h, "h"), (m, "m")].iter().filter(|(n, _)| *n > 0).map(|(n, u)| format!("{n}{u}")).collect();
    parts.join(" ")
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A CRL past its nextUpdate, or within `--crl-expiry-warning` of it.
fn crl_warning(crl: &Crl, config: &Config, now: i64) -> Option<String> {
    use crate::revocation::{Freshness, freshness};
    let next = crl.next_update?;
    let what = format!("the CRL of {:?} ({})", crl.issuer, crl.source);
    let effect = match freshness(crl.next_update, now, &config.revocation, config.crl_expiry_warning) {
        Freshness::Fresh => return None,
        Freshness::Expiring { seconds_left } => {
            return Some(format!(
                "{what} reaches its nextUpdate {} in {} (within --crl-expiry-warning {}): publish a fresh one before then",
                fmt_time(next),
                approx(seconds_left),
                humantime::format_duration(config.crl_expiry_warning)
            ));
        }
        Freshness::InGrace { .. } => format!(
            "still used within --crl-expired-grace until {}",
            fmt_time(next.saturating_add(secs(config.revocation.crl_expired_grace)))
        ),
        Freshness::Stale { .. } => match config.revocation.crl_expired {
            Policy::Deny => "the certificates it covers are refused (--crl-expired=deny)".into(),
            Policy::Allow => "its serials are still enforced (--crl-expired=allow)".to_string(),
        },
    };
    Some(format!(
        "{what} passed its nextUpdate {} ({} ago): {effect}; publish a fresh CRL",
        fmt_time(next),
        approx(now - next)
    ))
}

/// A subject alternative name of the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

fn sans(cert: &X509Certificate<'_>) -> Vec<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(San::Dns(d.to_string())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?))),
                16 => Some(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn describe_sans(sans: &[San]) -> String {
    let list: Vec<String> = sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => format!("DNS:{d}"),
            San::Ip(ip) => format!("IP:{ip}"),
        })
        .collect();
    list.join(", ")
}

/// The rule in the module doc.
fn bind_warning(bind: IpAddr, sans: &[San]) -> Option<String> {
    let has_ip = sans.iter().any(|s| matches!(s, San::Ip(_)));
    if bind.is_unspecified() {
        return (!has_ip).then(|| {
            format!(
                "the serving certificate has no IP SAN: clients that connect by IP address (--bind-address is \
                 {bind}, so any of this host's addresses) will fail to verify it"
            )
        });
    }
    (!sans.contains(&San::Ip(bind))).then(|| {
        format!(
            "the serving certificate has no IP SAN {bind} (--bind-address): clients that connect to that address \
             will fail to verify it; its SANs are {}",
            if sans.is_empty() { "none".into() } else { describe_sans(sans) }
        )
    })
}

fn name_of<T: ValueEnum>(v: T) -> String {
    v.to_possible_value().map_or_else(|| "?".into(), |p| p.get_name().to_string())
}

fn leaf_of(flag: &'static str, path: &Path) -> Result<CertificateDer<'static>, ConfigError> {
    Ok(crate::pem::certificates(flag, path)?.remove(0))
}

fn parse<'a>(
    flag: &'static str,
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<(&'a [u8], X509Certificate<'a>), ConfigError> {
    X509Certificate::from_der(der.as_ref()).map_err(|e| ConfigError::file(flag, path, format!("certificate: {e}")))
}

/// The last CN of a name (as Go and kube-apiserver take it).
fn last_cn(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name().last().map(|a| a.as_str().map_or_else(|_| "<undecodable>".into(), str::to_string))
}

/// Whether `cert` names `ca` as its issuer and its signature verifies with `ca`'s key.
fn issued_by(cert: &[u8], ca: &Ca, algs: &WebPkiSupportedAlgorithms) -> bool {
    let Ok(s) = Signed::parse(cert) else { return false };
    s.issuer == ca.subject_der.as_slice() && s.signed_by(&ca.spki_der, algs)
}

// ---------------------------------------------------------------------------------------
// check-apiserver

/// Reads kube-apiserver's static pod manifest and reports every flag that lets clients
/// bypass the proxy, lets them assert identities, or loses the identities it forwards.
pub fn check_apiserver(args: CheckApiserverArgs) -> Result<Report, ConfigError> {
    let names = proxy_header_names(&args)?;
    let manifest = read_manifest(&args.manifest)?;
    let problems = apiserver_problems(&manifest.flags, &names, manifest.version);
    let version = manifest.version.map_or_else(|| "version unknown".into(), |v| format!("version {v}"));
    let mut lines = vec![
        format!(
            "kube-apiserver manifest {} (container {:?}, image {:?}, {version})",
            args.manifest.display(),
            manifest.container,
            manifest.image
        ),
        format!(
            "compared with the proxy's headers: user {}, groups {}, extra prefix {}, uid {}",
            list_names(&names.username),
            list_names(&names.group),
            title_case(&names.extra_prefix),
            if names.uid.is_empty() { "(off)".into() } else { list_names(&names.uid) }
        ),
    ];
    let passed = problems.is_empty();
    lines.extend(problems.into_iter().map(|p| format!("problem: {p}")));
    lines.push(if passed { "result: no problems found".into() } else { "result: problems found".into() });
    Ok(Report { lines, passed })
}

/// The proxy's header names, resolved exactly as `run` resolves them. Only the header names
/// are used: the required file and URL fields get placeholders (never read) so that a
/// command line without `--config` resolves; they override the file's values, unused here.
fn proxy_header_names(args: &CheckApiserverArgs) -> Result<HeaderNames, ConfigError> {
    let unused = || Some(PathBuf::from("unused-by-check-apiserver"));
    let flags = RunFlags {
        config: args.config.clone(),
        requestheader: args.requestheader.clone(),
        listen: ListenFlags { tls_cert_file: unused(), ..Default::default() },
        clients: ClientFlags { client_ca_file: unused(), ..Default::default() },
        upstream: UpstreamFlags {
            upstream: vec![UpstreamUrl::from_static("https://127.0.0.1:6443")],
            upstream_ca_file: unused(),
            proxy_client_cert_file: unused(),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(Config::resolve(flags)?.headers)
}

/// kube-apiserver's minor release (`1.33`), read from the container image's tag
/// (`kube-apiserver:v1.33.2`, also with a registry path, a `-rc.1` suffix or an `@sha256:` digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// From an image reference; `None` when the tag is not a version (`latest`, none, a digest only).
    pub fn from_image(image: &str) -> Option<Self> {
        let name = image.rsplit('/').next()?.split('@').next()?;
        let tag = name.split_once(':')?.1;
        let mut parts = tag.strip_prefix('v').unwrap_or(tag).split(|c: char| !c.is_ascii_digit());
        Some(Self::new(parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The Kubernetes release from which kube-apiserver refuses to start when the request-header
/// CA shares a certificate with `--client-ca-file` and `--requestheader-allowed-names` is empty.
const SHARED_CA_FATAL_SINCE: KubeVersion = KubeVersion::new(1, 35);
/// `--requestheader-uid-headers` appears, behind the alpha gate `RemoteRequestHeaderUID` (off).
const UID_HEADERS_ALPHA: KubeVersion = KubeVersion::new(1, 32);
/// `RemoteRequestHeaderUID` is beta and on by default.
const UID_HEADERS_BETA: KubeVersion = KubeVersion::new(1, 33);

/// What `check-apiserver` reads from the static pod manifest.
struct Manifest {
    container: String,
    image: String,
    version: Option<KubeVersion>,
    flags: HashMap<String, String>,
}

/// The kube-apiserver container's name, image and flags (`command` then `args`;
/// `--flag=value` or `--flag value`; the last occurrence wins, as with kube-apiserver's flag
/// parser; a flag without value maps to "").
fn read_manifest(path: &Path) -> Result<Manifest, ConfigError> {
    let err = |m: String| ConfigError::file("check-apiserver", path, m);
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| err(format!("not YAML: {e}")))?;
    let containers = doc
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("no spec.containers: not a pod manifest".into()))?;
    let strings = |c: &Value, key: &str| -> Vec<String> {
        c.get(key).and_then(Value::as_sequence).map_or_else(Vec::new, |s| s.iter().filter_map(scalar).collect())
    };
    let is_apiserver = |c: &Value| {
        c.get("name").and_then(Value::as_str) == Some("kube-apiserver")
            || strings(c, "command").first().is_some_and(|b| b.rsplit('/').next() == Some("kube-apiserver"))
    };
    let container = match containers.iter().find(|c| is_apiserver(c)) {
        Some(c) => c,
        None if containers.len() == 1 => &containers[0],
        None => return Err(err("no kube-apiserver container (by name or command) among several".into())),
    };
    let name = container.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let image = container.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let words: Vec<String> = strings(container, "command").into_iter().chain(strings(container, "args")).collect();
    Ok(Manifest { container: name, version: KubeVersion::from_image(&image), image, flags: parse_flags(&words) })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_flags(words: &[String]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].trim();
        i += 1;
        let Some(flag) = w.strip_prefix("--") else { continue };
        match flag.split_once('=') {
            Some((k, v)) => flags.insert(k.to_string(), v.to_string()),
            None => match words.get(i) {
                Some(next) if !next.starts_with('-') => {
                    i += 1;
                    flags.insert(flag.to_string(), next.trim().to_string())
                }
                _ => flags.insert(flag.to_string(), String::new()),
            },
        };
    }
    flags
}

/// Comma-separated, trimmed, lower-cased, empty items dropped.
fn list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

fn list_names(names: &[HeaderName]) -> String {
    names.iter().map(|n| title_case(n.as_str())).collect::<Vec<_>>().join(",")
}

/// The value kube-apiserver's `--feature-gates` (`A=true,B=false`) gives `gate`, if any.
fn feature_gate(flags: &HashMap<String, String>, gate: &str) -> Option<bool> {
    let gates = flags.get("feature-gates")?;
    gates.split(',').rev().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == gate).then(|| v.trim().parse().ok())?
    })
}

/// The problems of a kube-apiserver flag set, one sentence each; `version` (from the image)
/// makes the version-dependent ones precise.
fn apiserver_problems(
    flags: &HashMap<String, String>,
    names: &HeaderNames,
    version: Option<KubeVersion>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |k: &str| flags.get(k).map(|v| v.trim());

    match get("bind-address") {
        None => problems.push(
            "--bind-address is missing: kube-apiserver listens on every address (0.0.0.0), so clients can reach it \
             directly and bypass the proxy; set --bind-address=127.0.0.1"
                .into(),
        ),
        Some(b) if !(b == "localhost" || b.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())) => problems.push(format!(
            "--bind-address={b} is not a loopback address: clients can reach kube-apiserver directly and bypass the \
             proxy; set --bind-address=127.0.0.1"
        )),
        Some(_) => {}
    }

    let front_ca = get("requestheader-client-ca-file").filter(|v| !v.is_empty());
    let mut shared_ca = false;
    match front_ca {
        None => problems.push(
            "--requestheader-client-ca-file is missing: kube-apiserver does not trust the proxy's front-proxy \
             certificate, so the identities the proxy forwards are ignored; set it to the front-proxy CA \
             (/etc/kubernetes/pki/front-proxy-ca.crt)"
                .into(),
        ),
        Some(f) => {
            if let Some(c) = get("client-ca-file").filter(|c| same_ca_file(c, f)) {
                shared_ca = true;
                problems.push(format!(
                    "--requestheader-client-ca-file is the same CA as --client-ca-file ({c}): the front-proxy CA \
                     must be separate from the client CAs, or certificates issued to ordinary clients could assert \
                     any identity to kube-apiserver"
                ));
            }
        }
    }

    if get("requestheader-allowed-names").is_none_or(|v| list(v).is_empty()) {
        let mut p = format!(
            "--requestheader-allowed-names is missing or empty: any certificate signed by the front-proxy CA could \
             assert identities; set --requestheader-allowed-names={FRONT_PROXY_CN}"
        );
        if shared_ca {
            p += &format!(
                ". Together with a --requestheader-client-ca-file that shares a certificate with --client-ca-file \
                 this is fatal from Kubernetes {SHARED_CA_FATAL_SINCE} on: kube-apiserver refuses to start"
            );
            p += &match version {
                Some(v) if v >= SHARED_CA_FATAL_SINCE => format!(" (this manifest runs {v}: it does not start)"),
                Some(v) => format!(" (this manifest runs {v}: fix it before upgrading to {SHARED_CA_FATAL_SINCE})"),
                None => String::new(),
            };
        }
        problems.push(p);
    }

    header_problems(
        &mut problems,
        get("requestheader-username-headers"),
        "username",
        "user names",
        &names.username,
        names,
    );
    header_problems(&mut problems, get("requestheader-group-headers"), "group", "groups", &names.group, names);
    uid_problems(
        &mut problems,
        get("requestheader-uid-headers"),
        names,
        feature_gate(flags, "RemoteRequestHeaderUID"),
        version,
    );
    extra_problems(&mut problems, get("requestheader-extra-headers-prefix"), names);
    problems
}

/// Every header kube-apiserver reads must be one the proxy strips (or clients could set
/// it), and the header the proxy sets (its first) must be one kube-apiserver reads.
fn header_problems(
    problems: &mut Vec<String>,
    value: Option<&str>,
    kind: &str,
    what: &str,
    ours: &[HeaderName],
    names: &HeaderNames,
) {
    let flag = format!("--requestheader-{kind}-headers");
    let theirs = value.map(list).unwrap_or_default();
    let first = ours.first().map_or_else(String::new, |h| title_case(h.as_str()));
    if theirs.is_empty() {
        problems.push(format!(
            "{flag} is missing or empty: kube-apiserver reads no {what} from the proxy's requests; set {flag}={first}"
        ));
        return;
    }
    not_stripped(problems, &flag, &theirs, names);
    if let Some(h) = ours.first()
        && !theirs.iter().any(|t| t == h.as_str())
    {
        problems.push(format!(
            "the proxy sends {what} in {first}, which kube-apiserver's {flag}={} does not read: the {what} are lost",
            value.unwrap_or("")
        ));
    }
}

/// kube-apiserver reads a UID header only if its own `--requestheader-uid-headers` lists it
/// and the `RemoteRequestHeaderUID` gate is on (alpha, off by default in 1.32; beta, on by
/// default from 1.33); otherwise the UID the proxy sends is dropped without any error.
fn uid_problems(
    problems: &mut Vec<String>,
    value: Option<&str>,
    names: &HeaderNames,
    gate: Option<bool>,
    version: Option<KubeVersion>,
) {
    let flag = "--requestheader-uid-headers";
    let theirs = value.map(list).unwrap_or_default();
    not_stripped(problems, flag, &theirs, names);
    let Some(h) = names.uid.first() else { return };
    let header = title_case(h.as_str());
    let honoured = format!(
        "kube-apiserver honours {flag} from {UID_HEADERS_ALPHA} with --feature-gates=RemoteRequestHeaderUID=true \
         (alpha) and by default from {UID_HEADERS_BETA} (beta)"
    );
    if !theirs.iter().any(|t| t == h.as_str()) {
        let mut p = format!(
            "the proxy sends UIDs in {header}, which kube-apiserver does not read ({flag} {}): the UIDs are silently \
             dropped; set {flag}={header} ({honoured})",
            value.map_or("is missing".into(), |v| format!("={v}"))
        );
        if let Some(v) = version.filter(|v| *v < UID_HEADERS_ALPHA) {
            p += &format!(
                "; this manifest runs {v}, which has no {flag}: upgrade to {UID_HEADERS_BETA} or turn the proxy's \
                 --requestheader-uid-headers off"
            );
        }
        problems.push(p);
        return;
    }
    let lost = format!("the UIDs the proxy sends in {header} are silently dropped");
    match (gate, version) {
        (Some(false), _) => problems.push(format!(
            "--feature-gates sets RemoteRequestHeaderUID=false, so kube-apiserver does not honour {flag} and {lost}; \
             remove it ({honoured})"
        )),
        (_, Some(v)) if v < UID_HEADERS_ALPHA => problems.push(format!(
            "this manifest runs {v}, which has no {flag} ({honoured}): {lost}; upgrade to {UID_HEADERS_BETA} or turn \
             the proxy's --requestheader-uid-headers off"
        )),
        (None, Some(v)) if v < UID_HEADERS_BETA => problems.push(format!(
            "this manifest runs {v}, where RemoteRequestHeaderUID is alpha and off by default: without \
             --feature-gates=RemoteRequestHeaderUID=true {lost} ({honoured})"
        )),
        _ => {}
    }
}

fn not_stripped(problems: &mut Vec<String>, flag: &str, theirs: &[String], names: &HeaderNames) {
    for t in theirs {
        let stripped = HeaderName::from_bytes(t.as_bytes()).is_ok_and(|h| identity::is_identity_header(&h, names));
        if !stripped {
            problems.push(format!(
                "kube-apiserver's {flag} reads {}, which the proxy does not strip from client requests: clients \
                 could set it; configure the proxy with the same header names",
                title_case(t)
            ));
        }
    }
}

fn extra_problems(problems: &mut Vec<String>, value: Option<&str>, names: &HeaderNames) {
    let flag = "--requestheader-extra-headers-prefix";
    let ours = &names.extra_prefix;
    let theirs = value.map(list).unwrap_or_default();
    if theirs.is_empty() {
        problems.push(format!(
            "{flag} is missing or empty: kube-apiserver reads no extras from the proxy's requests (the \
             credential-id is lost); set {flag}={}",
            title_case(ours)
        ));
        return;
    }
    for t in theirs.iter().filter(|t| !t.starts_with(ours.as_str())) {
        problems.push(format!(
            "kube-apiserver's {flag} includes {}, but the proxy strips only headers starting with {}: clients could \
             add extras; configure the proxy with the same prefix",
            title_case(t),
            title_case(ours)
        ));
    }
    if !theirs.contains(ours) {
        problems.push(format!(
            "the proxy sends extras with the prefix {}, which kube-apiserver's {flag}={} does not read: the \
             credential-id is lost",
            title_case(ours),
            value.unwrap_or("")
        ));
    }
}

/// Whether two CA file paths of the manifest name the same CA: the same path (lexically),
/// or, when both are readable here, files that share a certificate.
fn same_ca_file(a: &str, b: &str) -> bool {
    let norm = |p: &str| -> PathBuf { Path::new(p).components().filter(|c| *c != Component::CurDir).collect() };
    if norm(a) == norm(b) {
        return true;
    }
    let certs = |p: &str| crate::pem::certificates("check-apiserver", Path::new(p)).ok();
    match (certs(a), certs(b)) {
        (Some(x), Some(y)) => x.iter().any(|c| y.contains(c)),
        _ => false,
    }
}

/// `x-remote-user` → `X-Remote-User` (for display; header names are case-insensitive).
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

// ---------------------------------------------------------------------------------------
// inspect

/// Tells whether a client certificate would be accepted now, why, and as whom. Passes only
/// if the handshake would be accepted and requests would not be refused.
pub fn inspect(args: InspectArgs) -> Result<Report, ConfigError> {
    let chain = crate::pem::certificates("inspect", &args.cert)?;
    let (_, cert) = parse("inspect", &args.cert, &chain[0])?;
    // inspect reads the client CAs, CRLs, OCSP and header settings only: the serving and
    // upstream flags `run` requires are not needed (nor read) here.
    let mut run = args.run;
    let unused = || Some(PathBuf::from("unused-by-inspect"));
    run.listen.tls_cert_file = run.listen.tls_cert_file.or_else(unused);
    run.upstream.upstream_ca_file = run.upstream.upstream_ca_file.or_else(unused);
    run.upstream.proxy_client_cert_file = run.upstream.proxy_client_cert_file.or_else(unused);
    if run.upstream.upstream.is_empty() {
        run.upstream.upstream = vec![UpstreamUrl::from_static("https://127.0.0.1:6443")];
    }
    let config = Config::resolve(run)?;
    // With --ocsp, the responder is asked as a handshake would ask it: from a runtime (the
    // query is a task on it), waiting at most --ocsp-timeout.
    let runtime = match config.ocsp.mode {
        OcspMode::Off => None,
        _ => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| ConfigError::Other(format!("cannot start the runtime: {e}")))?,
        ),
    };
    let ocsp = runtime.as_ref().map(|rt| {
        let _entered = rt.enter();
        Arc::new(Ocsp::new(&config.ocsp, Arc::new(Metrics::new())))
    });
    let (verifier, bundle, load_warnings) =
        crate::tls::load_verifier(&config, &fetch_once(&config)?, ocsp.clone(), None)?;
    let algs = crate::tls::provider().signature_verification_algorithms;
    let now = UnixTime::now();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let (not_before, not_after) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
    let mut lines = vec![
        format!("certificate: {}", cert.subject()),
        format!("  issuer:    {}", cert.issuer()),
        format!("  serial:    {}", hex::encode(cert.raw_serial())),
        format!("  sha256:    {}", hex::encode(Sha256::digest(chain[0].as_ref()))),
        format!("  notBefore: {}", fmt_time(not_before)),
        format!("  notAfter:  {}", fmt_time(not_after)),
    ];
    lines.push(format!(
        "validity:    {}",
        if now_secs < not_before {
            format!("not valid yet (for another {})", approx(not_before - now_secs))
        } else if now_secs > not_after {
            format!("expired {} ago", approx(now_secs - not_after))
        } else {
            format!("valid for another {}", approx(not_after - now_secs))
        }
    ));
    if chain.len() > 1 {
        let subjects: Vec<String> = chain[1..]
            .iter()
            .map(|c| {
                X509Certificate::from_der(c.as_ref())
                    .map_or_else(|_| "<unparsable>".into(), |(_, c)| c.subject().to_string())
            })
            .collect();
        lines.push(format!("intermediates in the file: {}", subjects.join("; ")));
    }

    let entered = runtime.as_ref().map(tokio::runtime::Runtime::enter);
    let result = verifier.check(&chain[0], &chain[1..], now);
    drop(entered);
    let ocsp_refusal = matches!(&result, Err(r) if r.reason == RefusalReason::OcspNoAnswer
        || (r.reason == RefusalReason::Revoked && r.detail.contains("OCSP")));
    let revocation_refusal = !ocsp_refusal
        && matches!(
            &result,
            Err(r) if matches!(r.reason, RefusalReason::Revoked | RefusalReason::NoCrl | RefusalReason::StaleCrl)
        );
    lines.push(match &result {
        Err(r) if !revocation_refusal => format!("chain:       refused: {}", r.reason),
        _ => "chain:       ok (verified to a CA in --client-ca-file: signatures, validity, clientAuth)".into(),
    });
    lines.push(match &result {
        Err(r) if revocation_refusal => format!("revocation:  refused: {}: {}", r.reason, r.detail),
        Err(_) => "revocation:  (the chain is refused; the client certificate's own status follows)".into(),
        Ok(()) => "revocation:  ok".into(),
    });
    lines.extend(revocation_trace(&verifier, &bundle, &chain, now, &algs));
    lines.push(match &result {
        Err(r) if ocsp_refusal => format!("{}; refused: {}", describe_ocsp_answer(ocsp.as_ref()), r.reason),
        _ => describe_ocsp_answer(ocsp.as_ref()),
    });

    let heading = if result.is_ok() {
        "identity headers sent to kube-apiserver:"
    } else {
        "identity headers (not sent: the certificate is refused):"
    };
    let mut refusal = result
        .err()
        .map(|r| if r.detail.is_empty() { r.reason.to_string() } else { format!("{}: {}", r.reason, r.detail) });
    match identity::from_leaf(chain[0].as_ref()) {
        Ok(Some(id)) => {
            lines.push(heading.into());
            let mut headers = HeaderMap::new();
            identity::apply(&mut headers, id.values().as_ref(), &config.headers);
            for (name, value) in &headers {
                lines.push(format!(
                    "  {}: {}",
                    display_header(name, &config.headers),
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
        }
        Ok(None) => lines.push(
            "identity headers: none (no CN): requests are forwarded without identity (anonymous, or as their bearer \
             token)"
                .into(),
        ),
        Err(e) => {
            lines.push(format!("identity headers: refused: {e}: every request gets 403"));
            refusal.get_or_insert_with(|| format!("requests refused with 403: {e}"));
        }
    }
    lines.extend(load_warnings.into_iter().map(|w| format!("warning: {w}")));
    lines.push(match &refusal {
        None => "verdict:     ACCEPTED".into(),
        Some(why) => format!("verdict:     REFUSED: {why}"),
    });
    Ok(Report { lines, passed: refusal.is_none() })
}

/// Which CRLs decided each certificate of the path and why (one line per certificate, then
/// one per CRL considered). When the chain itself is refused (e.g. expired), the client
/// certificate alone is looked up under the CA of the bundle that issued it, so that its
/// own status is still shown.
fn revocation_trace(
    verifier: &crate::tls::verifier::CrlVerifier,
    bundle: &CaBundle,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
) -> Vec<String> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let index = verifier.index();
    let path = match verifier.verified_path(&chain[0], &chain[1..], now) {
        Ok(p) => p,
        Err(_) => {
            let Some((ca, anchor)) = issuing_ca(&chain[0], bundle, algs) else {
                return vec!["  not checked: the certificate's issuer is not a CA in --client-ca-file".into()];
            };
            let Ok(facts) = crate::revocation::CertFacts::parse(chain[0].as_ref()) else {
                return vec!["  not checked: the certificate cannot be read".into()];
            };
            VerifiedPath {
                certs: vec![PathCert { facts, issuer_spki: ca.spki_der.clone() }],
                anchor,
                leaf_issuer_anchor: None,
            }
        }
    };
    let checked = if index.policy().check == crate::config::RevocationCheck::Chain { path.certs.len() } else { 1 };
    let mut lines = Vec::new();
    for (i, c) in path.certs.iter().enumerate() {
        let role = if i == 0 { "client certificate" } else { "intermediate" };
        let subject = crate::revocation::display_name(&c.facts.subject_der);
        if i >= checked {
            lines.push(format!("  {role} {subject}: not checked (--revocation-check=leaf)"));
            continue;
        }
        let mut trace = Vec::new();
        let verdict = match index.check_one(c, &path.anchor, now_secs, Some(&mut trace)) {
            Ok(()) => "not revoked".to_string(),
            Err(RevocationError::Revoked { revocation, crl }) => {
                format!("REVOKED at {} ({}) per {crl}", fmt_time(revocation.revoked_at), reason_name(revocation.reason))
            }
            Err(RevocationError::Undetermined { why }) => format!("undetermined: {why}"),
            Err(RevocationError::Stale { next_update, crl }) => {
                format!("undetermined: {crl} passed its nextUpdate {}", fmt_time(next_update))
            }
        };
        lines.push(format!("  {role} {subject} (serial {}): {verdict}", hex::encode(&c.facts.serial)));
        lines.extend(trace.into_iter().map(|t| format!("    {t}")));
    }
    lines
}

/// The CA of the bundle that issued `cert`, and the trust anchor it reaches in the bundle.
fn issuing_ca<'b>(cert: &[u8], bundle: &'b CaBundle, algs: &WebPkiSupportedAlgorithms) -> Option<(&'b Ca, Vec<u8>)> {
    let ca = bundle.cas.iter().find(|ca| issued_by(cert, ca, algs))?;
    let mut at = ca;
    for _ in 0..8 {
        if at.is_anchor {
            return Some((ca, at.key()));
        }
        at = bundle.cas.iter().find(|p| !std::ptr::eq(*p, at) && issued_by(at.der.as_ref(), p, algs))?;
    }
    None
}

/// A header as the proxy sends it, capitalised for reading; the part after the extra
/// prefix (the extra's key) is kept as is.
fn display_header(name: &HeaderName, names: &HeaderNames) -> String {
    match name.as_str().strip_prefix(names.extra_prefix.as_str()) {
        Some(key) => format!("{}{key}", title_case(&names.extra_prefix)),
        None => title_case(name.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> HeaderNames {
        HeaderNames::new(
            vec![HeaderName::from_static("x-remote-user")],
            vec![HeaderName::from_static("x-remote-group")],
            vec![],
            "x-remote-extra-".into(),
        )
    }

    fn flags(words: &[&str]) -> HashMap<String, String> {
        parse_flags(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const GOOD: &[&str] = &[
        "kube-apiserver",
        "--bind-address=127.0.0.1",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    ];

    #[test]
    fn flags_in_both_forms_last_wins() {
        let f = flags(&["kube-apiserver", "--a=1", "--b", "2", "--c", "--d=", "--a=3", "--e", "--f=x=y"]);
        assert_eq!(f["a"], "3");
        assert_eq!(f["b"], "2");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
        assert_eq!(f["e"], "");
        assert_eq!(f["f"], "x=y");
        assert!(!f.contains_key("kube-apiserver"));
    }

    #[test]
    fn a_kubeadm_like_flag_set_has_no_problems() {
        assert_eq!(apiserver_problems(&flags(GOOD), &names(), None), Vec::<String>::new());
        let mut lower: Vec<&str> = GOOD.to_vec();
        lower[5] = "--requestheader-username-headers=x-remote-user";
        lower[1] = "--bind-address=::1";
        assert_eq!(apiserver_problems(&flags(&lower), &names(), None), Vec::<String>::new());
    }

    #[test]
    fn header_sets_must_be_stripped_and_read() {
        let mut f = flags(GOOD);
        f.insert("requestheader-username-headers".into(), "X-Remote-User, X-Other-User".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("X-Other-User") && p[0].contains("does not strip"), "{p:?}");

        let mut f = flags(GOOD);
        f.insert("requestheader-extra-headers-prefix".into(), "X-Remote-".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("could add extras") && p[1].contains("credential-id is lost"), "{p:?}");

        let mut f = flags(GOOD);
        f.insert("requestheader-uid-headers".into(), "X-Remote-Uid".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("X-Remote-Uid") && p[0].contains("could set it"), "{p:?}");
        let mut with_uid = names();
        with_uid.uid = vec![HeaderName::from_static("x-remote-uid")];
        assert_eq!(apiserver_problems(&f, &with_uid, None), Vec::<String>::new());
        let p = apiserver_problems(&flags(GOOD), &with_uid, None);
        assert!(p.len() == 1 && p[0].contains("UIDs are silently dropped"), "{p:?}");
    }

    #[test]
    fn kube_versions_from_image_tags() {
        let v = |image: &str| KubeVersion::from_image(image).map(|v| v.to_string());
        assert_eq!(v("kube-apiserver:v1.33.2").as_deref(), Some("1.33"));
        assert_eq!(v("mirror.example:5000/k8s/kube-apiserver:v1.35.0-rc.1").as_deref(), Some("1.35"));
        assert_eq!(v("kube-apiserver:v1.32.1@sha256:0123").as_deref(), Some("1.32"));
        assert_eq!(v("kube-apiserver:1.31.4").as_deref(), Some("1.31"));
        assert_eq!(v("mirror.example:5000/kube-apiserver"), None, "a registry port is not a tag");
        assert_eq!(v("kube-apiserver:latest"), None);
        assert_eq!(v(""), None);
        assert!(KubeVersion::new(1, 9) < KubeVersion::new(1, 10));
    }

    #[test]
    fn feature_gates_last_value_wins() {
        let f = flags(&["--feature-gates=A=true, RemoteRequestHeaderUID=false,B=false"]);
        assert_eq!(feature_gate(&f, "RemoteRequestHeaderUID"), Some(false));
        assert_eq!(feature_gate(&f, "A"), Some(true));
        assert_eq!(feature_gate(&f, "C"), None);
        let f = flags(&["--feature-gates=RemoteRequestHeaderUID=false,RemoteRequestHeaderUID=true"]);
        assert_eq!(feature_gate(&f, "RemoteRequestHeaderUID"), Some(true));
        assert_eq!(feature_gate(&flags(GOOD), "RemoteRequestHeaderUID"), None);
    }

    #[test]
    fn a_shared_ca_without_allowed_names_is_fatal_from_1_35() {
        let mut f = flags(GOOD);
        f.insert("requestheader-client-ca-file".into(), "/etc/kubernetes/pki/ca.crt".into());
        f.insert("requestheader-allowed-names".into(), String::new());
        let fatal = |v: Option<KubeVersion>| {
            let p = apiserver_problems(&f, &names(), v);
            assert_eq!(p.len(), 2, "{p:?}");
            assert!(p[1].contains("fatal from Kubernetes 1.35 on: kube-apiserver refuses to start"), "{p:?}");
            p[1].clone()
        };
        assert!(fatal(Some(KubeVersion::new(1, 35))).ends_with("(this manifest runs 1.35: it does not start)"));
        assert!(fatal(Some(KubeVersion::new(1, 34))).ends_with("fix it before upgrading to 1.35)"));
        assert!(fatal(None).ends_with("refuses to start"));
        // Either alone is a problem, but not the fatal combination.
        f.insert("requestheader-allowed-names".into(), FRONT_PROXY_CN.into());
        let p = apiserver_problems(&f, &names(), Some(KubeVersion::new(1, 35)));
        assert!(p.len() == 1 && !p[0].contains("refuses to start"), "{p:?}");
        let mut f = flags(GOOD);
        f.insert("requestheader-allowed-names".into(), String::new());
        let p = apiserver_problems(&f, &names(), Some(KubeVersion::new(1, 35)));
        assert!(p.len() == 1 && !p[0].contains("refuses to start"), "{p:?}");
    }

    #[test]
    fn uid_headers_need_a_kube_apiserver_that_honours_them() {
        let mut with_uid = names();
        with_uid.uid = vec![HeaderName::from_static("x-remote-uid")];
        let mut f = flags(GOOD);
        f.insert("requestheader-uid-headers".into(), "X-Remote-Uid".into());
        let problems = |f: &HashMap<String, String>, v: Option<(u32, u32)>| {
            apiserver_problems(f, &with_uid, v.map(|(a, b)| KubeVersion::new(a, b)))
        };
        for v in [None, Some((1, 33)), Some((1, 35))] {
            assert_eq!(problems(&f, v), Vec::<String>::new(), "{v:?}");
        }
        let p = problems(&f, Some((1, 32)));
        assert!(
            p.len() == 1 && p[0].contains("alpha and off by default") && p[0].contains("silently dropped"),
            "{p:?}"
        );
        let p = problems(&f, Some((1, 31)));
        assert!(p.len() == 1 && p[0].contains("runs 1.31, which has no --requestheader-uid-headers"), "{p:?}");

        let mut on = f.clone();
        on.insert("feature-gates".into(), "RemoteRequestHeaderUID=true".into());
        assert_eq!(problems(&on, Some((1, 32))), Vec::<String>::new());
        let mut off = f.clone();
        off.insert("feature-gates".into(), "RemoteRequestHeaderUID=false".into());
        for v in [None, Some((1, 33)), Some((1, 35))] {
            let p = problems(&off, v);
            assert!(p.len() == 1 && p[0].contains("sets RemoteRequestHeaderUID=false"), "{v:?}: {p:?}");
        }

        // Not listed by kube-apiserver: dropped on every version, and the message says which honour it.
        let p = problems(&flags(GOOD), Some((1, 33)));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("silently dropped; set --requestheader-uid-headers=X-Remote-Uid"), "{p:?}");
        assert!(p[0].contains("from 1.32 with --feature-gates=RemoteRequestHeaderUID=true (alpha)"), "{p:?}");
        assert!(p[0].contains("by default from 1.33 (beta)"), "{p:?}");
        let p = problems(&flags(GOOD), Some((1, 30)));
        assert!(p.len() == 1 && p[0].contains("this manifest runs 1.30, which has no"), "{p:?}");
        // The proxy sends no UID: nothing to say whatever kube-apiserver's version.
        assert_eq!(apiserver_problems(&flags(GOOD), &names(), Some(KubeVersion::new(1, 31))), Vec::<String>::new());
    }

    #[test]
    fn same_ca_file_is_lexical_or_by_content() {
        assert!(same_ca_file("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/./ca.crt"));
        assert!(!same_ca_file("/nonexistent/ca.crt", "/nonexistent/front-proxy-ca.crt"));
    }

    #[test]
    fn display_helpers() {
        assert_eq!(title_case("x-remote-user"), "X-Remote-User");
        assert_eq!(title_case("x-remote-extra-"), "X-Remote-Extra-");
        let h = HeaderName::from_static("x-remote-extra-authentication.kubernetes.io%2fcredential-id");
        assert_eq!(display_header(&h, &names()), "X-Remote-Extra-authentication.kubernetes.io%2fcredential-id");
        assert_eq!(approx(59), "59s");
        assert_eq!(approx(3 * 3600 + 61), "3h 1m");
        assert_eq!(approx(7 * 86_400 + 59), "7d");
    }

    #[test]
    fn bind_address_rule() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let sans = vec![San::Dns("localhost".into()), San::Ip(lo)];
        assert_eq!(bind_warning(lo, &sans), None);
        assert!(bind_warning(IpAddr::from([10, 0, 0, 1]), &sans).is_some());
        assert_eq!(bind_warning(IpAddr::from([0, 0, 0, 0]), &sans), None);
        assert!(bind_warning(IpAddr::from([0, 0, 0, 0]), &sans[..1]).is_some());
        assert!(bind_warning("::".parse().unwrap(), &[]).is_some());
    }

    #[test]
    fn issued_by_checks_name_and_signature() {
        use crate::pki::{Authority, Spec};
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::root("check-unit-ca");
        let impostor = Authority::root("check-unit-ca"); // same name, other key
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, format!("{}{}", ca.cert_pem, impostor.cert_pem)).unwrap();
        let bundle = CaBundle::load(&path, None).unwrap();
        let algs = crate::tls::provider().signature_verification_algorithms;
        let leaf = ca.issue(&Spec::client("x", &[]));
        let by: Vec<bool> = bundle.cas.iter().map(|c| issued_by(&leaf.der, c, &algs)).collect();
        assert_eq!(by, vec![true, false]);
        assert!(!issued_by(b"not a certificate", &bundle.cas[0], &algs));
    }
}
