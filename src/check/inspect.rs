//! `kube-crl-proxy inspect CERT`: would this client certificate be accepted now, why (which
//! CRLs, which OCSP answer), and as whom (the identity headers)?

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use http::{HeaderMap, HeaderName};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use super::{Report, approx, fetch_once, issued_by, parse, title_case};
use crate::ca::{Ca, CaBundle};
use crate::config::{Config, HeaderNames, OcspMode, RunFlags, UpstreamUrl};
use crate::error::{ConfigError, RefusalReason};
use crate::identity;
use crate::metrics::Metrics;
use crate::revocation::crl::reason_name;
use crate::revocation::ocsp::{CertStatus, Ocsp};
use crate::revocation::{CaCert, RevocationError, VerifiedPath, fmt_time};

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
            let Ok(issuer) = CaCert::parse(ca.der.as_ref()) else {
                return vec!["  not checked: the certificate's issuer cannot be read".into()];
            };
            match VerifiedPath::new(chain[0].as_ref(), Vec::new(), &issuer.as_issuer, anchor.into()) {
                Ok(p) => p,
                Err(_) => return vec!["  not checked: the certificate cannot be read".into()],
            }
        }
    };
    let checked = if index.policy().check == crate::config::RevocationCheck::Chain { path.len() } else { 1 };
    let mut lines = Vec::new();
    for (i, c) in path.certs().enumerate() {
        let role = if i == 0 { "client certificate" } else { "intermediate" };
        let subject = crate::revocation::display_name(c.subject_der);
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
        lines.push(format!("  {role} {subject} (serial {}): {verdict}", hex::encode(c.crl.serial)));
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

    #[test]
    fn display_header_keeps_the_extra_key() {
        let names = HeaderNames::new(vec![], vec![], vec![], "x-remote-extra-".into());
        let h = HeaderName::from_static("x-remote-extra-authentication.kubernetes.io%2fcredential-id");
        assert_eq!(display_header(&h, &names), "X-Remote-Extra-authentication.kubernetes.io%2fcredential-id");
    }
}
