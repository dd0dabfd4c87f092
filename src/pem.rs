//! Reading certificates, private keys and CRL blobs from disk. Every error names the flag
//! and the file, and says what was expected.

use std::path::Path;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::ConfigError;

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::file(flag, path, format!("cannot read: {e}")))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// All certificates of a PEM file (or a single DER certificate), in file order.
pub fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(flag, path)?;
    if !looks_like_pem(&bytes) {
        if bytes.first() == Some(&0x30) {
            return Ok(vec![CertificateDer::from(bytes)]);
        }
        return Err(ConfigError::file(flag, path, "no PEM CERTIFICATE block and not a DER certificate"));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::file(flag, path, "no CERTIFICATE block found"));
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| ConfigError::file(flag, path, format!("certificate #{} does not parse: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1). Exactly one is expected.
pub fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(flag, path)?;
    let mut keys = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, der) = item.map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
            _ => continue,
        };
        keys.push(key);
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(ConfigError::file(
            flag,
            path,
            "no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block) found",
        )),
        n => Err(ConfigError::file(flag, path, format!("{n} private keys found, expected one"))),
    }
}

/// The CRLs of a file: a PEM file with one or more `X509 CRL` blocks, or one DER CRL.
pub fn crls(flag: &'static str, path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    crls_in(flag, path, &read(flag, path)?)
}

/// The CRLs in bytes read from `path` (a file or, for fetched CRLs, a URL).
pub fn crls_in(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    if !looks_like_pem(bytes) {
        if bytes.first() == Some(&0x30) {
            return Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())]);
        }
        return Err(ConfigError::file(flag, path, "neither PEM (X509 CRL blocks) nor a DER CRL"));
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
    if crls.is_empty() {
        return Err(ConfigError::file(flag, path, "no X509 CRL block found"));
    }
    Ok(crls)
}
