//! The operator commands that never serve and never contact the upstream, one module each:
//! [`check`] (load the configuration exactly as `run` does, summarise it, warn; `config.rs`),
//! [`check_apiserver`] (does kube-apiserver's static pod manifest fit the proxy?
//! `apiserver.rs`) and [`inspect`] (would this client certificate be accepted now, why, and
//! as whom? `inspect.rs`). This module owns what they share: the [`Report`], the one-time CRL
//! fetch, and a few readers and formatters.
//!
//! `check` loads like `run`; `inspect` loads only the client side (CAs, CRLs, OCSP, header
//! names) and does not need the serving or upstream flags. The only network use is fetching
//! the `--crl-url` CRLs once (and, for `inspect --ocsp`, asking the responder).
//!
//! Each command returns a [`Report`] (the lines to print and whether it passed) or the
//! [`ConfigError`] `run` would have exited with; `main` maps them to exit statuses 0, 1, 64.

mod apiserver;
mod config;
mod inspect;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

pub use apiserver::{CheckApiserverArgs, check_apiserver};
pub use config::{CheckArgs, check};
pub use inspect::{InspectArgs, inspect};

use crate::ca::{Ca, CaBundle};
use crate::config::Config;
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::reload::fetch::Fetcher;
use crate::revocation::cert::Signed;

/// The CN kube-apiserver's `--requestheader-allowed-names` lists in a kubeadm cluster.
pub const FRONT_PROXY_CN: &str = "front-proxy-client";

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
fn parse<'a>(
    flag: &'static str,
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<(&'a [u8], X509Certificate<'a>), ConfigError> {
    X509Certificate::from_der(der.as_ref()).map_err(|e| ConfigError::file(flag, path, format!("certificate: {e}")))
}
/// Whether `cert` names `ca` as its issuer and its signature verifies with `ca`'s key.
fn issued_by(cert: &[u8], ca: &Ca, algs: &WebPkiSupportedAlgorithms) -> bool {
    let Ok(s) = Signed::parse(cert) else { return false };
    s.issuer == ca.subject_der.as_slice() && s.signed_by(&ca.spki_der, algs)
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_helpers() {
        assert_eq!(title_case("x-remote-user"), "X-Remote-User");
        assert_eq!(title_case("x-remote-extra-"), "X-Remote-Extra-");
        assert_eq!(approx(59), "59s");
        assert_eq!(approx(3 * 3600 + 61), "3h 1m");
        assert_eq!(approx(7 * 86_400 + 59), "7d");
    }

    #[test]
    fn issued_by_checks_name_and_signature() {
        use kube_crl_proxy_testkit::pki::{Authority, Spec};
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
