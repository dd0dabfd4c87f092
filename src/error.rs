//! Typed errors, and the one place where they become TLS alerts or HTTP statuses.
//!
//! Two tables live here and nowhere else:
//! - [`RefusalReason::certificate_error`]: why a client certificate was refused →
//!   the rustls `CertificateError` (and so the TLS alert the client sees).
//! - [`ProxyError::status`]: why a request could not be proxied → the HTTP status and
//!   Kubernetes `Status` reason that kubectl prints.

use std::path::PathBuf;

use bytes::Bytes;
use http::StatusCode;
use rustls::CertificateError;

/// Why a client certificate was refused during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    #[error("certificate is revoked (serial listed in the CRL of its issuer)")]
    Revoked,
    #[error("certificate has expired")]
    Expired,
    #[error("certificate is not valid yet")]
    NotValidYet,
    #[error("certificate does not chain to a CA in --client-ca-file")]
    UnknownCa,
    #[error("certificate is not valid for client authentication (extended key usage)")]
    BadEku,
    #[error("revocation status undetermined: no valid CRL decides it (--crl-missing=deny)")]
    NoCrl,
    #[error("the CRL of the issuing CA is stale (nextUpdate has passed), refusing per --crl-expired=deny")]
    StaleCrl,
    #[error("no usable OCSP answer for the certificate, refusing per --ocsp=required")]
    OcspNoAnswer,
    #[error("certificate signature is invalid")]
    BadSignature,
    #[error("certificate is malformed")]
    BadEncoding,
    #[error("certificate refused: {0}")]
    Other(String),
}

impl RefusalReason {
    /// The rustls error for this refusal. rustls maps it to the TLS alert
    /// (`certificate_revoked`, `certificate_expired`, `unknown_ca`, ...).
    pub fn certificate_error(&self) -> CertificateError {
        match self {
            Self::Revoked => CertificateError::Revoked,
            Self::Expired => CertificateError::Expired,
            Self::NotValidYet => CertificateError::NotValidYet,
            Self::UnknownCa => CertificateError::UnknownIssuer,
            Self::BadEku => CertificateError::InvalidPurpose,
            Self::NoCrl => CertificateError::UnknownRevocationStatus,
            Self::StaleCrl => CertificateError::ExpiredRevocationList,
            // bad_certificate_status_response (113): tells the client it is about OCSP.
            Self::OcspNoAnswer => CertificateError::InvalidOcspResponse,
            Self::BadSignature => CertificateError::BadSignature,
            Self::BadEncoding => CertificateError::BadEncoding,
            Self::Other(_) => CertificateError::ApplicationVerificationFailure,
        }
    }

    /// A short, fixed label for logs and metrics (never carries user input).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired | Self::NotValidYet => "expired",
            Self::UnknownCa => "unknown_ca",
            Self::BadEku => "bad_eku",
            Self::NoCrl => "no_crl",
            Self::StaleCrl => "stale_crl",
            Self::OcspNoAnswer => "ocsp_no_answer",
            Self::BadSignature | Self::BadEncoding | Self::Other(_) => "other",
        }
    }

    /// Classifies a chain-validation error of the standard (webpki) verifier.
    pub fn from_webpki(err: &webpki::Error) -> Self {
        use webpki::Error as E;
        match err {
            E::CertExpired { .. } => Self::Expired,
            E::CertNotValidYet { .. } => Self::NotValidYet,
            E::UnknownIssuer => Self::UnknownCa,
            E::CertRevoked => Self::Revoked,
            #[allow(deprecated)]
            E::RequiredEkuNotFound => Self::BadEku,
            E::RequiredEkuNotFoundContext(_) => Self::BadEku,
            #[allow(deprecated)]
            E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmForPublicKey => Self::BadSignature,
            E::InvalidSignatureForPublicKey
            | E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Self::BadSignature,
            E::BadDer | E::BadDerTime | E::TrailingData(_) => Self::BadEncoding,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

/// The metrics outcome of a failed handshake (what rustls reported for it).
pub fn handshake_outcome(err: &std::io::Error) -> &'static str {
    let tls = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::Revoked => "revoked",
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "expired",
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::UnknownRevocationStatus => "no_crl",
            CertificateError::InvalidOcspResponse => "ocsp_no_answer",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "bad_eku",
            CertificateError::ExpiredRevocationList | CertificateError::ExpiredRevocationListContext { .. } => {
                "stale_crl"
            }
            _ => "other",
        },
        Some(rustls::Error::NoCertificatesPresented) => "no_cert",
        _ => "other",
    }
}

/// A start-up error: bad flag, config field or file. `main` exits with status 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// Where the value came from: `command line` or the config file path.
        source_name: String,
        /// The flag or config key, e.g. `--crl-file` / `crl-file`.
        field: String,
        message: String,
    },
    #[error("{flag} {}: {message}", path.display())]
    File { flag: &'static str, path: PathBuf, message: String },
    #[error(
        "--client-ca-file {}: CA {subject:?} has no CRL{rejected}. Add its CRL with --crl-file (e.g. `openssl ca -gencrl` or \
         your CA's CRL distribution point), or set --crl-missing=allow to accept its certificates without a \
         revocation check",
        ca_file.display()
    )]
    MissingCrl {
        ca_file: PathBuf,
        subject: String,
        /// The CRLs of that CA that were left out, and why (empty, or " (left out: …)").
        rejected: String,
    },
    #[error("{0}")]
    Other(String),
}

impl ConfigError {
    pub fn file(flag: &'static str, path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File { flag, path: path.into(), message: message.into() }
    }
}

/// An error and its sources, one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unreachable: {detail}")]
    UpstreamUnavailable { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer in time: {detail}")]
    UpstreamTimeout { upstream: String, detail: String },
    #[error("upstream {upstream} failed: {detail}")]
    UpstreamFailed { upstream: String, detail: String },
    #[error("client certificate identity refused: {0}")]
    IdentityRefused(String),
    #[error("method {0} is not supported by the proxy")]
    MethodNotAllowed(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    /// The one table from proxy errors to HTTP statuses and Kubernetes Status reasons.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UpstreamUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            Self::UpstreamFailed { .. } => (StatusCode::BAD_GATEWAY, "InternalError"),
            Self::IdentityRefused(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        }
    }

    /// A Kubernetes `Status` object (what kube-apiserver itself returns on errors),
    /// so kubectl prints a readable message.
    pub fn status_body(&self) -> (StatusCode, Bytes) {
        let (code, reason) = self.status();
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("kube-crl-proxy: {self}"),
            "reason": reason,
            "code": code.as_u16(),
        });
        (code, Bytes::from(body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;

    #[test]
    fn refusals_map_to_the_alerts_clients_expect() {
        let cases = [
            (RefusalReason::Revoked, AlertDescription::CertificateRevoked),
            (RefusalReason::Expired, AlertDescription::CertificateExpired),
            (RefusalReason::NotValidYet, AlertDescription::CertificateExpired),
            (RefusalReason::UnknownCa, AlertDescription::UnknownCA),
            (RefusalReason::BadEku, AlertDescription::UnsupportedCertificate),
            (RefusalReason::NoCrl, AlertDescription::UnknownCA),
            (RefusalReason::StaleCrl, AlertDescription::UnknownCA),
            (RefusalReason::BadSignature, AlertDescription::DecryptError),
            (RefusalReason::BadEncoding, AlertDescription::BadCertificate),
            (RefusalReason::Other("x".into()), AlertDescription::AccessDenied),
        ];
        for (reason, alert) in cases {
            assert_eq!(AlertDescription::from(reason.certificate_error()), alert, "{reason:?}");
        }
    }

    #[test]
    fn handshake_failures_map_to_metric_outcomes() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        for reason in [
            RefusalReason::Revoked,
            RefusalReason::Expired,
            RefusalReason::UnknownCa,
            RefusalReason::BadEku,
            RefusalReason::StaleCrl,
        ] {
            let e = io(rustls::Error::InvalidCertificate(reason.certificate_error()));
            assert_eq!(handshake_outcome(&e), reason.label(), "{reason:?}");
        }
        assert_eq!(handshake_outcome(&io(rustls::Error::NoCertificatesPresented)), "no_cert");
        assert_eq!(handshake_outcome(&std::io::Error::other("garbage")), "other");
    }

    #[test]
    fn webpki_errors_are_classified() {
        assert_eq!(RefusalReason::from_webpki(&webpki::Error::UnknownIssuer), RefusalReason::UnknownCa);
        assert_eq!(RefusalReason::from_webpki(&webpki::Error::CertRevoked), RefusalReason::Revoked);
        assert_eq!(RefusalReason::from_webpki(&webpki::Error::BadDer), RefusalReason::BadEncoding);
    }

    #[test]
    fn proxy_errors_map_to_statuses() {
        let u = || "https://127.0.0.1:6443".to_string();
        let d = || "x".to_string();
        let cases = [
            (ProxyError::UpstreamUnavailable { upstream: u(), detail: d() }, 503),
            (ProxyError::UpstreamTimeout { upstream: u(), detail: d() }, 504),
            (ProxyError::UpstreamFailed { upstream: u(), detail: d() }, 502),
            (ProxyError::IdentityRefused(d()), 403),
            (ProxyError::MethodNotAllowed("CONNECT".into()), 405),
            (ProxyError::BadRequest(d()), 400),
        ];
        for (err, code) in cases {
            let (status, body) = err.status_body();
            assert_eq!(status.as_u16(), code);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["kind"], "Status");
            assert_eq!(v["code"], code);
            assert!(v["reason"].is_string());
        }
    }
}
