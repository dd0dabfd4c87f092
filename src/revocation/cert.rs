//! What revocation needs to know of one certificate, read once from its DER with the strict
//! reader: serial, issuer and subject (as [`NameKey`]s), basicConstraints, keyUsage, its CRL
//! distribution points (RFC 5280 §4.2.1.13, with relative names resolved) and its key. Also
//! the signed parts of a certificate, to verify a CRL signer's certificate against its CA.

use super::crl::{ALL_REASONS, Reasons, normalize_serial, reason_flags};
use super::name::{GeneralNameKey, NameKey, general_names};
use crate::der::{self, DerError, Reader};

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const OID_AUTHORITY_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
const OID_AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];

/// keyUsage bits (RFC 5280 §4.2.1.3), as read MSB first.
const KU_KEY_CERT_SIGN: u16 = 1 << 5;
const KU_CRL_SIGN: u16 = 1 << 6;

/// One CRL distribution point of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistPoint {
    /// The distribution point's names (fullName, or nameRelativeToCRLIssuer appended to the
    /// CRL issuer's name); empty when the point names only a cRLIssuer.
    pub names: Vec<GeneralNameKey>,
    /// The reasons this point covers ([`ALL_REASONS`] when it does not say).
    pub reasons: Reasons,
    /// `cRLIssuer`: who issues the CRL for this point, when not the certificate's issuer
    /// (an indirect CRL).
    pub crl_issuer: Vec<GeneralNameKey>,
}

/// What revocation checking reads of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// serialNumber, minimal two's complement ([`normalize_serial`]).
    pub serial: Vec<u8>,
    pub issuer: NameKey,
    /// The issuer Name's full encoding (for messages).
    pub issuer_der: Vec<u8>,
    pub subject: NameKey,
    pub subject_der: Vec<u8>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage absent, or with keyCertSign.
    pub may_sign_certs: bool,
    /// keyUsage absent, or with cRLSign.
    pub may_sign_crls: bool,
    /// The CRL distribution points; empty without the extension.
    pub dps: Vec<DistPoint>,
    pub subject_key_id: Option<Vec<u8>>,
    /// The OCSP responders of its Authority Information Access (URIs).
    pub ocsp_urls: Vec<String>,
    /// The full SubjectPublicKeyInfo encoding.
    pub spki: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

/// What CRL processing (RFC 5280 §6.3, [`super::RevocationIndex::status`]) reads of the
/// certificate being checked: borrowed, so that a client certificate's slim facts
/// ([`super::path::LeafFacts`]) and a CA's full [`CertFacts`] are checked alike.
#[derive(Debug, Clone, Copy)]
pub struct CrlSubject<'a> {
    /// The certificate's issuer Name (as the certificate itself names it).
    pub issuer: &'a NameKey,
    /// Its serialNumber, minimal ([`normalize_serial`]).
    pub serial: &'a [u8],
    /// basicConstraints cA (onlyContainsUserCerts / onlyContainsCACerts).
    pub is_ca: bool,
    /// Its CRL distribution points; empty without the extension.
    pub dps: &'a [DistPoint],
}

impl CertFacts {
    /// This certificate as CRL processing reads it.
    pub fn crl_subject(&self) -> CrlSubject<'_> {
        CrlSubject { issuer: &self.issuer, serial: &self.serial, is_ca: self.is_ca, dps: &self.dps }
    }

    pub fn parse(cert_der: &[u8]) -> Result<Self, DerError> {
        let signed = Signed::parse(cert_der)?;
        let mut r = Reader::new(signed.tbs_contents);
        r.optional(0xa0, "version")?;
        let serial = r.expect(der::INTEGER, "serialNumber")?.value;
        if serial.is_empty() {
            return Err(DerError("empty serialNumber"));
        }
        r.expect(der::SEQUENCE, "signature")?;
        let issuer = r.expect(der::SEQUENCE, "issuer")?;
        let validity = r.expect(der::SEQUENCE, "validity")?;
        let mut v = Reader::new(validity.value);
        let not_before = der::time(&v.any("notBefore")?)?;
        let not_after = der::time(&v.any("notAfter")?)?;
        let subject = r.expect(der::SEQUENCE, "subject")?;
        let spki = r.expect(der::SEQUENCE, "subjectPublicKeyInfo")?;
        r.optional(0x81, "issuerUniqueID")?;
        r.optional(0x82, "subjectUniqueID")?;
        let issuer_key = NameKey::of(issuer.full)?;
        let mut facts = CertFacts {
            serial: normalize_serial(serial).to_vec(),
            issuer: issuer_key,
            issuer_der: issuer.full.to_vec(),
            subject: NameKey::of(subject.full)?,
            subject_der: subject.full.to_vec(),
            is_ca: false,
            may_sign_certs: true,
            may_sign_crls: true,
            dps: Vec::new(),
            subject_key_id: None,
            ocsp_urls: Vec::new(),
            spki: spki.full.to_vec(),
            not_before,
            not_after,
        };
        if let Some(exts) = r.optional(0xa3, "extensions")? {
            let seq = Reader::new(exts.value).expect(der::SEQUENCE, "Extensions")?;
            let mut x = Reader::new(seq.value);
            while !x.is_empty() {
                let (oid, _critical, value) = der::extension(&mut x)?;
                match oid {
                    OID_BASIC_CONSTRAINTS => {
                        let bc = Reader::new(value).expect(der::SEQUENCE, "basicConstraints")?;
                        facts.is_ca =
                            Reader::new(bc.value).optional(der::BOOLEAN, "cA")?.is_some_and(|b| b.value == [0xff]);
                    }
                    OID_KEY_USAGE => {
                        let bits = Reader::new(value).expect(der::BIT_STRING, "keyUsage")?;
                        let ku = bit_mask(bits.value)?;
                        facts.may_sign_certs = ku & KU_KEY_CERT_SIGN != 0;
                        facts.may_sign_crls = ku & KU_CRL_SIGN != 0;
                    }
                    OID_CRL_DISTRIBUTION_POINTS => facts.dps = distribution_points(value, &facts.issuer)?,
                    OID_AUTHORITY_INFO_ACCESS => facts.ocsp_urls = ocsp_urls(value)?,
                    OID_SUBJECT_KEY_ID => {
                        facts.subject_key_id =
                            Some(Reader::new(value).expect(der::OCTET_STRING, "subjectKeyIdentifier")?.value.to_vec());
                    }
                    _ => {}
                }
            }
        }
        if !r.is_empty() {
            return Err(DerError("trailing data in tbsCertificate"));
        }
        Ok(facts)
    }
}

/// AuthorityInfoAccessSyntax ::= SEQUENCE OF { accessMethod OID, accessLocation GeneralName }:
/// the URIs of the id-ad-ocsp entries.
fn ocsp_urls(value: &[u8]) -> Result<Vec<String>, DerError> {
    let seq = Reader::new(value).expect(der::SEQUENCE, "authorityInfoAccess")?;
    let mut urls = Vec::new();
    let mut r = Reader::new(seq.value);
    while !r.is_empty() {
        let desc = r.expect(der::SEQUENCE, "AccessDescription")?;
        let mut d = Reader::new(desc.value);
        let method = d.expect(der::OID, "accessMethod")?;
        let location = d.any("accessLocation")?;
        if method.value == OID_AD_OCSP
            && location.tag == 0x86
            && let Ok(u) = std::str::from_utf8(location.value)
        {
            urls.push(u.to_string());
        }
    }
    Ok(urls)
}

/// A BIT STRING's bits as a mask (bit 0 = the first octet's top bit), first 16 bits only.
fn bit_mask(bits: &[u8]) -> Result<u16, DerError> {
    let Some((&unused, bytes)) = bits.split_first() else { return Err(DerError("BIT STRING")) };
    if unused > 7 {
        return Err(DerError("BIT STRING"));
    }
    let mut mask = 0u16;
    for bit in 0..(bytes.len().min(2) * 8) {
        if bytes[bit / 8] & (0x80 >> (bit % 8)) != 0 {
            mask |= 1 << bit;
        }
    }
    Ok(mask)
}

/// CRLDistributionPoints ::= SEQUENCE OF DistributionPoint, with each relative name resolved
/// against the point's cRLIssuer (or else the certificate's issuer).
fn distribution_points(value: &[u8], cert_issuer: &NameKey) -> Result<Vec<DistPoint>, DerError> {
    let seq = Reader::new(value).expect(der::SEQUENCE, "cRLDistributionPoints")?;
    let mut points = Vec::new();
    let mut r = Reader::new(seq.value);
    while !r.is_empty() {
        let dp = r.expect(der::SEQUENCE, "DistributionPoint")?;
        let mut d = Reader::new(dp.value);
        let name = d.optional(0xa0, "distributionPoint")?;
        let reasons = match d.optional(0x81, "reasons")? {
            Some(bits) => reason_flags(bits.value)?,
            None => ALL_REASONS,
        };
        let crl_issuer = match d.optional(0xa2, "cRLIssuer")? {
            Some(names) => general_names(names.value)?,
            None => Vec::new(),
        };
        if !d.is_empty() {
            return Err(DerError("DistributionPoint field"));
        }
        let relative_to = crl_issuer.iter().find_map(GeneralNameKey::directory).unwrap_or(cert_issuer);
        let names = match name {
            Some(n) => point_name(Reader::new(n.value).any("DistributionPointName")?, relative_to)?,
            None => Vec::new(),
        };
        if names.is_empty() && crl_issuer.is_empty() {
            return Err(DerError("DistributionPoint without a name or cRLIssuer"));
        }
        points.push(DistPoint { names, reasons, crl_issuer });
    }
    Ok(points)
}

/// A DistributionPointName (fullName `[0]` or nameRelativeToCRLIssuer `[1]`) as the names it
/// stands for; a relative name is appended to `relative_to` (RFC 5280 §4.2.1.13, §5.2.5).
pub fn point_name(name: der::Tlv<'_>, relative_to: &NameKey) -> Result<Vec<GeneralNameKey>, DerError> {
    match name.tag {
        0xa0 => general_names(name.value),
        0xa1 => Ok(vec![GeneralNameKey::Directory(relative_to.with_rdn(name.value)?)]),
        _ => Err(DerError("DistributionPointName")),
    }
}

/// What a certificate's signature covers and is made of.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The TBSCertificate, full encoding (the signed bytes).
    pub tbs: &'a [u8],
    tbs_contents: &'a [u8],
    /// The signature AlgorithmIdentifier's contents.
    pub sig_alg: &'a [u8],
    pub signature: &'a [u8],
    /// The issuer Name, full encoding.
    pub issuer: &'a [u8],
}

impl<'a> Signed<'a> {
    pub fn parse(cert_der: &'a [u8]) -> Result<Self, DerError> {
        let mut outer = Reader::new(cert_der);
        let cert = outer.expect(der::SEQUENCE, "Certificate")?;
        if !outer.is_empty() {
            return Err(DerError("trailing data after Certificate"));
        }
        let mut r = Reader::new(cert.value);
        let tbs = r.expect(der::SEQUENCE, "tbsCertificate")?;
        let sig_alg = r.expect(der::SEQUENCE, "signatureAlgorithm")?;
        let sig = r.expect(der::BIT_STRING, "signatureValue")?;
        let signature = match sig.value.split_first() {
            Some((0, bits)) => bits,
            _ => return Err(DerError("signatureValue unused bits")),
        };
        let mut t = Reader::new(tbs.value);
        t.optional(der::CONTEXT_0, "version")?;
        t.expect(der::INTEGER, "serialNumber")?;
        t.expect(der::SEQUENCE, "signature")?;
        let issuer = t.expect(der::SEQUENCE, "issuer")?.full;
        Ok(Self { tbs: tbs.full, tbs_contents: tbs.value, sig_alg: sig_alg.value, signature, issuer })
    }

    /// Whether the key of `issuer_spki` (full SubjectPublicKeyInfo) signed this certificate.
    pub fn signed_by(&self, issuer_spki: &[u8], algs: &rustls::crypto::WebPkiSupportedAlgorithms) -> bool {
        der::verify_signed(issuer_spki, self.sig_alg, self.tbs, self.signature, algs).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_crl_proxy_testkit::pki::{Authority, Spec};

    #[test]
    fn facts_of_a_generated_chain() {
        let root = Authority::root("facts-root");
        let int = root.intermediate_with_crl_urls("facts-int", &["http://crl.example/int.crl"]);
        let leaf = int.issue(&Spec::client("facts-leaf", &["dev"]));
        let int_der = rustls_pki_types::CertificateDer::from_pem_slice(int.cert_pem.as_bytes()).unwrap();
        use rustls_pki_types::pem::PemObject;
        let i = CertFacts::parse(int_der.as_ref()).unwrap();
        assert!(i.is_ca && i.may_sign_certs && i.may_sign_crls);
        assert_eq!(i.dps.len(), 1);
        assert_eq!(i.dps[0].reasons, ALL_REASONS);
        assert_eq!(i.dps[0].names, vec![GeneralNameKey::Other(0x86, b"http://crl.example/int.crl".to_vec())]);
        let l = CertFacts::parse(leaf.der.as_ref()).unwrap();
        assert!(!l.is_ca);
        assert_eq!(l.issuer, i.subject);
        assert_eq!(l.serial, normalize_serial(&leaf.serial));
        assert!(
            Signed::parse(leaf.der.as_ref())
                .unwrap()
                .signed_by(&i.spki, &crate::crypto::provider().signature_verification_algorithms)
        );
        assert!(
            !Signed::parse(leaf.der.as_ref())
                .unwrap()
                .signed_by(&l.spki, &crate::crypto::provider().signature_verification_algorithms)
        );
    }

    #[test]
    fn relative_point_names_resolve_against_the_issuer() {
        let issuer = NameKey::of(&der::tlv(der::SEQUENCE, &[])).unwrap();
        let rdn =
            der::tlv(der::SEQUENCE, &[der::tlv(der::OID, &[0x55, 0x04, 0x03]), der::tlv(0x0c, b"part1")].concat());
        let tlv = der::tlv(0xa1, &rdn);
        let name = Reader::new(&tlv).any("x").unwrap();
        let names = point_name(name, &issuer).unwrap();
        assert_eq!(names, vec![GeneralNameKey::Directory(issuer.with_rdn(&rdn).unwrap())]);
    }
}
