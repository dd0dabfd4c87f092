//! Client TLS configuration (rustls + ring) and error classification.

use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub struct ClientTls<'a> {
    pub ca: Option<&'a Path>,
    pub cert: &'a Path,
    pub key: &'a Path,
    /// "1.2", "1.3" or "any".
    pub version: &'a str,
    pub alpn: &'a [&'a [u8]],
}

/// A client configuration that presents a client certificate and never resumes a session,
/// so that every connection is a full handshake (HAProxy sends session tickets by default;
/// kube-crl-proxy does not).
pub fn client_config(c: &ClientTls<'_>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match c.version {
        "1.2" => vec![&rustls::version::TLS12],
        "1.3" => vec![&rustls::version::TLS13],
        "any" => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        v => bail!("--tls {v:?}: expected 1.2, 1.3 or any"),
    };
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match c.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoServerVerification(provider))),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(c.cert)
        .with_context(|| format!("reading {}", c.cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(c.key).with_context(|| format!("reading {}", c.key.display()))?;
    let mut cfg = builder.with_client_auth_cert(chain, key)?;
    cfg.resumption = Resumption::disabled();
    cfg.enable_early_data = false;
    cfg.alpn_protocols = c.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Skips verifying the server: the benchmark measures the proxy, and this takes two
/// signature verifications per handshake off the (shared) load-generator core. Used only
/// with `--no-verify-server`.
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS alert the server sent, if that is what ended the connection.
pub fn alert_of(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::AlertReceived(a)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{a:?}"));
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(a) = alert_of(inner)
        {
            return Some(a);
        }
        cur = err.source();
    }
    None
}

/// A short, stable label for an error (for the error counts in the report).
pub fn error_label(stage: &str, e: &(dyn StdError + 'static)) -> String {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return format!("{stage}: tls: {r}");
        }
        return format!("{stage}: {:?}", io.kind());
    }
    let mut s = e.to_string();
    s.truncate(80);
    format!("{stage}: {s}")
}
