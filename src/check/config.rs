//! `kube-crl-proxy check`: loads the configuration exactly as `run` does (nothing is bound,
//! the upstream is not contacted), summarises it and warns.
//!
//! Serving-certificate rule of `check`: with a specific `--bind-address`, an IP SAN must
//! equal it (clients connecting by that address would otherwise fail verification); with
//! `0.0.0.0`/`::` the addresses clients use are unknown, so `check` only warns when the
//! certificate has no IP SAN at all. DNS names are listed but never judged.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

use super::{FRONT_PROXY_CN, Report, approx, fetch_once, issued_by, parse};
use crate::ca::Ca;
use crate::config::{Config, OcspMode, Policy, RunFlags};
use crate::error::ConfigError;
use crate::revocation::{Crl, fmt_time};
use crate::tls::TlsMaterial;

/// `kube-crl-proxy check`: the flags of `run`, plus `--strict`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Exit with status 1 when there are warnings.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub run: RunFlags,
}
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

/// Loads the TLS material as `run` does ([`crate::run`]): the files, plus the CRLs of
/// `--crl-url` (and distribution points, when enabled) fetched once, falling back to
/// `--crl-cache-dir`. That is the only network use; the upstream is never contacted.
fn load(config: &Config) -> Result<(TlsMaterial, Vec<String>), ConfigError> {
    TlsMaterial::load(config, &fetch_once(config)?, None, None)
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
/// The last CN of a name (as Go and kube-apiserver take it).
fn last_cn(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name().last().map(|a| a.as_str().map_or_else(|_| "<undecodable>".into(), str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
