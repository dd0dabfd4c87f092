//! The client CA bundle (`--client-ca-file`): which certificates are trust anchors, which are
//! intermediates offered for path building, and the names hinted to clients.
//!
//! Rule (documented in README): a self-signed CA, or a CA whose issuer is not in the file, is
//! a trust anchor (as kube-apiserver treats every CA in its --client-ca-file); a CA whose
//! issuer is also in the file is an intermediate, so that in `--revocation-check=chain` mode
//! it is itself checked against its issuer's CRL.

use std::path::Path;

use rustls::DistinguishedName;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use x509_parser::prelude::*;

use crate::error::ConfigError;

/// One CA certificate of the bundle.
#[derive(Debug, Clone)]
pub struct Ca {
    pub der: CertificateDer<'static>,
    /// Human-readable subject, for logs and errors.
    pub subject: String,
    /// Subject Name contents (no outer header), as webpki exposes names.
    pub subject_value: Vec<u8>,
    /// Full subject Name encoding, as it appears as a CRL issuer.
    pub subject_der: Vec<u8>,
    /// Full SubjectPublicKeyInfo encoding.
    pub spki_der: Vec<u8>,
    /// False when a keyUsage extension is present without cRLSign.
    pub may_sign_crls: bool,
    pub is_anchor: bool,
    pub not_after: i64,
}

/// The parsed bundle.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub cas: Vec<Ca>,
    pub anchors: Vec<TrustAnchor<'static>>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub hint_names: Vec<DistinguishedName>,
    pub source: std::path::PathBuf,
}

/// The key under which a CA's CRL is indexed: its subject and its public key.
pub fn issuer_key(subject_value: &[u8], spki_der: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + subject_value.len() + spki_der.len());
    k.extend_from_slice(&(subject_value.len() as u32).to_be_bytes());
    k.extend_from_slice(subject_value);
    k.extend_from_slice(spki_der);
    k
}

impl Ca {
    pub fn key(&self) -> Vec<u8> {
        issuer_key(&self.subject_value, &self.spki_der)
    }
}

impl CaBundle {
    pub fn load(path: &Path, names_file: Option<&Path>) -> Result<Self, ConfigError> {
        let flag = "--client-ca-file";
        let ders = crate::pem::certificates(flag, path)?;
        let mut cas = Vec::new();
        for (i, der) in ders.into_iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der.as_ref())
                .map_err(|e| ConfigError::file(flag, path, format!("certificate #{}: {e}", i + 1)))?;
            let subject = cert.subject().to_string();
            if !cert.is_ca() && cert.version() == X509Version::V3 {
                return Err(ConfigError::file(
                    flag,
                    path,
                    format!("certificate #{} ({subject}) is not a CA (basicConstraints CA:TRUE missing)", i + 1),
                ));
            }
            let may_sign_crls = match cert.key_usage() {
                Ok(Some(ku)) => ku.value.crl_sign(),
                _ => true,
            };
            let subject_der = cert.subject().as_raw().to_vec();
            let subject_value = strip_header(&subject_der).to_vec();
            let issuer_der = cert.issuer().as_raw().to_vec();
            let self_issued = issuer_der == subject_der;
            cas.push((
                Ca {
                    subject,
                    subject_value,
                    subject_der,
                    spki_der: cert.public_key().raw.to_vec(),
                    may_sign_crls,
                    is_anchor: self_issued,
                    not_after: cert.validity().not_after.timestamp(),
                    der: der.clone(),
                },
                issuer_der,
            ));
        }
        // A CA whose issuer is not in the file is an anchor too (partial chain).
        let subjects: Vec<Vec<u8>> = cas.iter().map(|(c, _)| c.subject_der.clone()).collect();
        for (ca, issuer) in &mut cas {
            if !ca.is_anchor && !subjects.contains(issuer) {
                ca.is_anchor = true;
            }
        }
        let cas: Vec<Ca> = cas.into_iter().map(|(c, _)| c).collect();

        let mut anchors = Vec::new();
        let mut intermediates = Vec::new();
        for ca in &cas {
            if ca.is_anchor {
                let ta = webpki::anchor_from_trusted_cert(&ca.der).map_err(|e| {
                    ConfigError::file(flag, path, format!("{}: not usable as a trust anchor: {e}", ca.subject))
                })?;
                anchors.push(ta.to_owned());
            } else {
                intermediates.push(ca.der.clone());
            }
        }

        let hint_names = match names_file {
            None => cas.iter().map(|c| DistinguishedName::from(c.subject_der.clone())).collect(),
            Some(p) => crate::pem::certificates("--client-ca-names-file", p)?
                .iter()
                .map(|d| {
                    X509Certificate::from_der(d.as_ref())
                        .map(|(_, c)| DistinguishedName::from(c.subject().as_raw().to_vec()))
                        .map_err(|e| ConfigError::file("--client-ca-names-file", p, e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { cas, anchors, intermediates, hint_names, source: path.to_path_buf() })
    }

    /// The CAs whose subject is this (full) Name encoding.
    pub fn by_subject<'a>(&'a self, name_der: &'a [u8]) -> impl Iterator<Item = &'a Ca> + 'a {
        self.cas.iter().filter(move |c| c.subject_der == name_der)
    }
}

/// The contents of a DER TLV (drops tag and length). Input is already validated DER.
fn strip_header(tlv: &[u8]) -> &[u8] {
    crate::der::Reader::new(tlv).any("Name").map_or(tlv, |t| t.value)
}
