//! TLS material: the downstream `ServerConfig` (serving certificate, client verifier,
//! ALPN, resumption policy) and the upstream `ClientConfig` (front-proxy client
//! certificate, upstream CA). Everything is loaded and validated before it is used.
//!
//! Resumption policy: **off** for every downstream session (no session cache, no tickets).
//! A resumed session would restore a client identity without running the verifier, and so
//! could outlive a revocation; kubectl and client-go do not resume anyway.

pub mod stream;
pub mod verifier;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::CaBundle;
use crate::config::Config;
use crate::error::ConfigError;
use crate::revocation::{CrlSource, RevocationIndex, Warning};
use verifier::CrlVerifier;

/// ALPN protocols offered downstream and upstream, in preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub use crate::crypto::provider;

/// Everything loaded from the TLS-related files, validated.
pub struct TlsMaterial {
    pub server: Arc<ServerConfig>,
    pub upstream: ClientConfig,
    pub verifier: Arc<CrlVerifier>,
    pub bundle: CaBundle,
}

impl TlsMaterial {
    /// Loads every file the proxy needs, plus CRLs fetched from URLs; errors name the flag
    /// and the file (or URL).
    pub fn load(
        config: &Config,
        fetched: &[CrlSource],
        ocsp: Option<Arc<crate::revocation::ocsp::Ocsp>>,
        previous: Option<&RevocationIndex>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        let provider = provider();
        let (verifier, bundle, warnings) = load_verifier(config, fetched, ocsp, previous)?;
        let server = server_config(config, provider.clone(), verifier.clone())?;
        let upstream = upstream_config(config, provider)?;
        Ok((Self { server: Arc::new(server), upstream, verifier, bundle }, warnings))
    }
}

/// The client side alone: the CA bundle, the CRLs (files plus `fetched`) and the verifier
/// built on them. What `inspect` needs; [`TlsMaterial::load`] adds the serving and upstream
/// configurations. `previous` (the index in use, on a reload) lets unchanged CRL files and
/// URLs be reused instead of parsed and verified again.
pub fn load_verifier(
    config: &Config,
    fetched: &[CrlSource],
    ocsp: Option<Arc<crate::revocation::ocsp::Ocsp>>,
    previous: Option<&RevocationIndex>,
) -> Result<(Arc<CrlVerifier>, CaBundle, Vec<Warning>), ConfigError> {
    let algs = provider().signature_verification_algorithms;
    let bundle = CaBundle::load(&config.client_ca_file, config.client_ca_names_file.as_deref())?;
    let mut sources = CrlSource::files(&config.crl_files)?;
    sources.extend(fetched.iter().cloned());
    let (index, warnings) = RevocationIndex::load_after(&bundle, &sources, config.revocation, &algs, previous)?;
    let verifier = Arc::new(CrlVerifier::new(&bundle, Arc::new(index), config.client_cert_mode, algs, ocsp));
    Ok((verifier, bundle, warnings))
}

fn server_config(
    config: &Config,
    provider: Arc<CryptoProvider>,
    verifier: Arc<CrlVerifier>,
) -> Result<ServerConfig, ConfigError> {
    let (cert_flag, key_flag) = ("--tls-cert-file", "--tls-private-key-file");
    let (chain, key, key_flag, key_path) =
        cert_and_key(cert_flag, &config.tls_cert_file, key_flag, config.tls_private_key_file.as_deref())?;
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::Other(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError::file(key_flag, key_path, format!("does not match the certificate in {cert_flag}: {e}"))
        })?;
    sc.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Resumption off, explicitly (see the module doc).
    sc.session_storage = Arc::new(NoServerSessionStorage {});
    sc.send_tls13_tickets = 0;
    // No 0-RTT: early data could be replayed and would precede client authentication.
    sc.max_early_data_size = 0;
    sc.ignore_client_order = false;
    Ok(sc)
}

fn upstream_config(config: &Config, provider: Arc<CryptoProvider>) -> Result<ClientConfig, ConfigError> {
    let up = &config.upstream;
    let mut roots = RootCertStore::empty();
    for cert in crate::pem::certificates("--upstream-ca-file", &up.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| ConfigError::file("--upstream-ca-file", &up.ca_file, format!("not a usable CA: {e}")))?;
    }
    let (cert_flag, key_flag) = ("--proxy-client-cert-file", "--proxy-client-key-file");
    let (chain, key, key_flag, key_path) =
        cert_and_key(cert_flag, &up.client_cert_file, key_flag, up.client_key_file.as_deref())?;
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::Other(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            ConfigError::file(key_flag, key_path, format!("does not match the certificate in {cert_flag}: {e}"))
        })
}

/// A certificate chain and its key: the key from its own file if given, else from the
/// certificate file (HAProxy's combined `.pem`). Returns the flag and path the key came from.
fn cert_and_key<'a>(
    cert_flag: &'static str,
    cert_path: &'a Path,
    key_flag: &'static str,
    key_path: Option<&'a Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, &'static str, &'a Path), ConfigError> {
    let chain = crate::pem::certificates(cert_flag, cert_path)?;
    let (key_flag, key_path) = match key_path {
        Some(p) => (key_flag, p),
        None => (cert_flag, cert_path),
    };
    let key = crate::pem::private_key(key_flag, key_path)?;
    Ok((chain, key, key_flag, key_path))
}
