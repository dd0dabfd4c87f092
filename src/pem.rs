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
    let crls = crl_blocks(bytes).map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
    if crls.is_empty() {
        return Err(ConfigError::file(flag, path, "no X509 CRL block found"));
    }
    Ok(crls)
}

/// The CRLs and certificates (separate CRL-signing certificates, RFC 5280 §6.3.3 (f)) of a
/// `--crl-file` or fetched CRL: PEM with `X509 CRL` and `CERTIFICATE` blocks, or one DER CRL.
/// An error when there is neither.
pub fn crl_file_items(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<CertificateDer<'static>>), ConfigError> {
    if !looks_like_pem(bytes) {
        return Ok((crls_in(flag, path, bytes)?, Vec::new()));
    }
    let crls = crl_blocks(bytes).map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
    let certs = certificate_blocks(bytes).map_err(|e| ConfigError::file(flag, path, format!("bad PEM: {e}")))?;
    if crls.is_empty() && certs.is_empty() {
        return Err(ConfigError::file(flag, path, "no X509 CRL block found"));
    }
    Ok((crls, certs))
}

/// The blocks labelled `label` of a PEM text, in order: each as (the whole block, BEGIN to
/// END line included; its base64 body), found with memchr without decoding anything.
fn pem_blocks<'a>(text: &'a [u8], label: &str) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), String>> + 'a {
    let begin = format!("-----BEGIN {label}-----").into_bytes();
    let end = format!("-----END {label}-----").into_bytes();
    let label = label.to_string();
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = memchr::memmem::find(rest, &begin)?;
        let block = &rest[start..];
        let body = &block[begin.len()..];
        let Some(stop) = memchr::memmem::find(body, &end) else {
            rest = &[];
            return Some(Err(format!("{label} block without END line")));
        };
        let whole = &block[..begin.len() + stop + end.len()];
        rest = &block[whole.len()..];
        Some(Ok((whole, &body[..stop])))
    })
}

/// The `CERTIFICATE` blocks of a PEM text. Only those blocks are handed to the PEM parser:
/// given the whole text, it would decode every block, a 50 MB CRL included, to skip it.
fn certificate_blocks(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    pem_blocks(text, "CERTIFICATE")
        .map(|block| CertificateDer::from_pem_slice(block?.0).map_err(|e| e.to_string()))
        .collect()
}

/// The `X509 CRL` blocks of a PEM text. CRLs are public, so unlike keys they do not need
/// rustls-pki-types' constant-time base64 decoder, which is several times slower on the
/// 50 MB PEM of a 1,000,000-entry CRL.
fn crl_blocks(text: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    use base64::Engine;
    let mut out = Vec::new();
    for block in pem_blocks(text, "X509 CRL") {
        let (_, b64) = block?;
        // Lines of whole base64 quanta (64 characters in every PEM writer), found with memchr,
        // are each decoded straight into their place in an output sized once (whole quanta
        // decode to at most 3/4 of their length; a large zeroed allocation costs no writes).
        // Other wrappings are joined first.
        let mut der = vec![0u8; b64.len() / 4 * 3];
        let mut at = 0;
        let mut line_start = 0;
        let by_line = memchr::memchr_iter(b'\n', b64).chain(std::iter::once(b64.len())).try_for_each(|nl| {
            let line = b64[line_start..nl].trim_ascii();
            line_start = nl + 1;
            if !line.len().is_multiple_of(4) {
                return Err("line not a whole number of base64 quanta".to_string());
            }
            at += base64::engine::general_purpose::STANDARD
                .decode_slice(line, &mut der[at..])
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        der.truncate(at);
        if by_line.is_err() {
            let joined: Vec<u8> = b64.iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
            der = base64::engine::general_purpose::STANDARD
                .decode(&joined)
                .map_err(|e| format!("X509 CRL block #{}: {e}", out.len() + 1))?;
        }
        out.push(CertificateRevocationListDer::from(der));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_blocks_beside_crls_are_found() {
        let ca = kube_crl_proxy_testkit::pki::Authority::root("pem-ca");
        let other = kube_crl_proxy_testkit::pki::Authority::root("pem-other");
        let text = format!("{}{}junk{}", ca.cert_pem, ca.crl(&[&[1]], 1, time::Duration::days(1)), other.cert_pem);
        let certs = certificate_blocks(text.as_bytes()).unwrap();
        assert_eq!(certs, vec![ca.der.clone(), other.der.clone()]);
        let (crls, certs) = crl_file_items("--crl-file", Path::new("t"), text.as_bytes()).unwrap();
        assert_eq!((crls.len(), certs.len()), (1, 2));
        assert!(certificate_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA").is_err());
    }

    #[test]
    fn crl_blocks_match_the_pem_parser() {
        let ca = kube_crl_proxy_testkit::pki::Authority::root("pem-ca");
        let text = format!(
            "junk\n{}{}",
            ca.crl(&[&[1, 2, 3]], 1, time::Duration::days(1)),
            ca.crl(&[], 2, time::Duration::days(1))
        );
        let ours = crl_blocks(text.as_bytes()).unwrap();
        let theirs: Vec<_> =
            CertificateRevocationListDer::pem_slice_iter(text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(ours, theirs);
        // Other wrappings (76 columns, CRLF) decode to the same DER.
        let pem = ca.crl(&[&[4, 5]], 3, time::Duration::days(1));
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped: Vec<String> =
            b64.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let text = format!("-----BEGIN X509 CRL-----\r\n{}\r\n-----END X509 CRL-----\r\n", rewrapped.join("\r\n"));
        assert_eq!(crl_blocks(text.as_bytes()).unwrap(), crl_blocks(pem.as_bytes()).unwrap());
        assert!(crl_blocks(b"-----BEGIN X509 CRL-----\nAAAA").is_err());
        assert!(crl_blocks(b"-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----").is_err());
    }
}
