//! A throwaway PKI built in memory with rcgen: CAs, intermediates, client and server
//! certificates, and CRLs (those rcgen cannot make are encoded by hand here). Used by
//! `kube-crl-proxy demo` and by the tests, so that no secret is ever checked in. Never use
//! it for a real cluster.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue certificates and CRLs.
pub struct Authority {
    pub name: String,
    pub cert_pem: String,
    /// The CA's private key (PKCS#8 PEM), for tests that drive `openssl ca` with it.
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate with its key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// The serial number's bytes, as the CRL will list them.
    pub serial: Vec<u8>,
}

/// What to put in an issued certificate.
#[derive(Clone, Debug)]
pub struct Spec {
    pub cn: Option<String>,
    pub orgs: Vec<String>,
    /// Subject attribute 1.3.6.1.4.1.57683.2 (Kubernetes UID).
    pub uid: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    /// CRL Distribution Points (URLs of the CRL covering this certificate).
    pub crl_urls: Vec<String>,
    /// OCSP responders, in the Authority Information Access extension.
    pub ocsp_urls: Vec<String>,
    /// Validity relative to now.
    pub not_before: Duration,
    pub not_after: Duration,
    /// Distribution points written by hand (names, reasons, cRLIssuer), after `crl_urls`'s.
    pub dps: Vec<DpSpec>,
    /// A fixed serial (INTEGER contents as encoded), instead of a random one.
    pub serial: Option<Vec<u8>>,
}

/// One CRL distribution point of an issued certificate (RFC 5280 §4.2.1.13).
#[derive(Clone, Debug, Default)]
pub struct DpSpec {
    /// fullName: one URI.
    pub uri: Option<String>,
    /// reasons, as ReasonFlags bits (bit 1 keyCompromise … bit 8 aACompromise).
    pub reasons: Option<u16>,
    /// cRLIssuer: a directory name (full Name DER).
    pub crl_issuer: Option<Vec<u8>>,
}

/// A CRL encoded by hand (rcgen cannot make indirect, reason-scoped or delta CRLs).
#[derive(Clone, Debug)]
pub struct CrlSpec {
    pub entries: Vec<CrlEntrySpec>,
    pub number: u64,
    /// A delta CRL for base CRLs numbered this or later.
    pub delta_base: Option<u64>,
    /// nextUpdate relative to now (thisUpdate is ten minutes ago).
    pub next_update: Duration,
    pub idp: Option<IdpSpec>,
}

impl Default for CrlSpec {
    fn default() -> Self {
        Self { entries: Vec::new(), number: 1, delta_base: None, next_update: Duration::days(1), idp: None }
    }
}

/// One revoked certificate of a [`CrlSpec`].
#[derive(Clone, Debug, Default)]
pub struct CrlEntrySpec {
    /// INTEGER contents exactly as written (so signs and padding can be tested).
    pub serial: Vec<u8>,
    /// CRLReason code (8 = removeFromCRL).
    pub reason: Option<u8>,
    /// certificateIssuer (indirect CRLs): a directory name (full Name DER).
    pub cert_issuer: Option<Vec<u8>>,
}

impl CrlEntrySpec {
    /// A positive serial as [`Issued::serial`] holds it.
    pub fn serial(serial: &[u8]) -> Self {
        let mut s = serial.to_vec();
        if s.first().is_none_or(|b| b & 0x80 != 0) {
            s.insert(0, 0);
        }
        Self { serial: s, ..Self::default() }
    }
}

/// An issuingDistributionPoint of a [`CrlSpec`].
#[derive(Clone, Debug, Default)]
pub struct IdpSpec {
    /// distributionPoint fullName: one URI.
    pub uri: Option<String>,
    pub only_user: bool,
    pub only_ca: bool,
    /// onlySomeReasons, as ReasonFlags bits.
    pub reasons: Option<u16>,
    pub indirect: bool,
}

/// One DER element: tag, definite length, contents. (The library has its own writer,
/// `der::tlv`, which this crate cannot use: see the crate doc.)
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let n = contents.len();
    let long = n.to_be_bytes();
    let long = &long[(n.leading_zeros() / 8) as usize..];
    let head = if n < 0x80 { vec![tag, n as u8] } else { [&[tag, 0x80 | long.len() as u8][..], long].concat() };
    [head.as_slice(), contents].concat()
}

/// ReasonFlags bits as a DER BIT STRING's contents (unused-bits octet first).
fn reason_bits(mask: u16) -> Vec<u8> {
    let mut bytes = vec![(mask & 0xff) as u8, (mask >> 8) as u8];
    // Bit i is octet i / 8, bit 0x80 >> (i % 8).
    for b in bytes.iter_mut() {
        *b = b.reverse_bits();
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    let unused = bytes.last().map_or(0, |b| b.trailing_zeros() as u8);
    let mut out = vec![unused];
    out.extend(bytes);
    out
}

/// A one-URI GeneralNames' contents.
fn uri_names(uri: &str) -> Vec<u8> {
    tlv(0x86, uri.as_bytes())
}

/// A CRLDistributionPoints extension value.
fn dps_extension(dps: &[DpSpec]) -> Vec<u8> {
    let points: Vec<u8> = dps
        .iter()
        .flat_map(|dp| {
            let mut parts = Vec::new();
            if let Some(uri) = &dp.uri {
                parts.push(tlv(0xa0, &tlv(0xa0, &uri_names(uri))));
            }
            if let Some(r) = dp.reasons {
                parts.push(tlv(0x81, &reason_bits(r)));
            }
            if let Some(name) = &dp.crl_issuer {
                parts.push(tlv(0xa2, &tlv(0xa4, name)));
            }
            tlv(0x30, &parts.concat())
        })
        .collect();
    tlv(0x30, &points)
}

impl Spec {
    /// A client certificate (EKU clientAuth) for `cn` in groups `orgs`, valid a year.
    pub fn client(cn: &str, orgs: &[&str]) -> Self {
        Self {
            cn: Some(cn.into()),
            orgs: orgs.iter().map(|o| o.to_string()).collect(),
            uid: None,
            dns: Vec::new(),
            ips: Vec::new(),
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            not_before: Duration::hours(-1),
            not_after: Duration::days(365),
            dps: Vec::new(),
            serial: None,
        }
    }

    /// A delegated OCSP responder certificate (EKU id-kp-OCSPSigning), valid a year.
    pub fn ocsp_responder(cn: &str) -> Self {
        Self { eku: vec![ExtendedKeyUsagePurpose::OcspSigning], ..Self::client(cn, &[]) }
    }

    /// A server certificate for these names and addresses, valid a year.
    pub fn server(cn: &str, dns: &[&str], ips: &[IpAddr]) -> Self {
        Self {
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.to_vec(),
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Self::client(cn, &[])
        }
    }
}

fn random_serial() -> Vec<u8> {
    let mut s = [0u8; 16];
    // rcgen already depends on ring; use its CSPRNG rather than adding a crate.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s);
    s[0] = (s[0] & 0x7f) | 0x01;
    s.to_vec()
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

impl Authority {
    /// A self-signed root CA.
    pub fn root(cn: &str) -> Self {
        let key = KeyPair::generate().expect("generate key");
        let params = ca_params(cn);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self::from_parts(cn, &cert, params, key)
    }

    fn from_parts(cn: &str, cert: &rcgen::Certificate, params: CertificateParams, key: KeyPair) -> Self {
        Self {
            name: cn.into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Self {
        self.intermediate_with_crl_urls(cn, &[])
    }

    /// An intermediate CA whose CRL Distribution Points name these URLs (this CA's CRL).
    pub fn intermediate_with_crl_urls(&self, cn: &str, crl_urls: &[&str]) -> Self {
        let key = KeyPair::generate().expect("generate key");
        let mut params = ca_params(cn);
        if !crl_urls.is_empty() {
            params.crl_distribution_points =
                vec![rcgen::CrlDistributionPoint { uris: crl_urls.iter().map(|u| u.to_string()).collect() }];
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign intermediate");
        Self::from_parts(cn, &cert, params, key)
    }

    /// A CA certificate signed by this one with these key usages: e.g. a dedicated CRL
    /// signer (cRLSign without keyCertSign) under the name of another CA.
    pub fn ca_with_usages(&self, cn: &str, usages: &[KeyUsagePurpose]) -> Self {
        let key = KeyPair::generate().expect("generate key");
        let mut params = ca_params(cn);
        params.key_usages = usages.to_vec();
        let cert = params.signed_by(&key, &self.issuer).expect("sign CA");
        Self::from_parts(cn, &cert, params, key)
    }

    /// This CA's subject Name, full DER.
    pub fn subject_der(&self) -> Vec<u8> {
        x509_parser::parse_x509_certificate(self.der.as_ref()).expect("own CA").1.subject().as_raw().to_vec()
    }

    /// Issues a certificate.
    pub fn issue(&self, spec: &Spec) -> Issued {
        let key = KeyPair::generate().expect("generate key");
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &spec.cn {
            dn.push(DnType::CommonName, DnValue::Utf8String(cn.clone()));
        }
        // rcgen keeps one value per attribute type: the first O goes under its named type,
        // a second under the custom type with O's OID (2.5.4.10), which encodes the same.
        assert!(spec.orgs.len() <= 2, "the in-process PKI supports at most two O values; use openssl for more");
        for (i, o) in spec.orgs.iter().enumerate() {
            let ty = if i == 0 { DnType::OrganizationName } else { DnType::CustomDnType(vec![2, 5, 4, 10]) };
            dn.push(ty, DnValue::Utf8String(o.clone()));
        }
        if let Some(uid) = &spec.uid {
            dn.push(DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 57683, 2]), DnValue::Utf8String(uid.clone()));
        }
        p.distinguished_name = dn;
        for d in &spec.dns {
            p.subject_alt_names.push(SanType::DnsName(d.clone().try_into().expect("DNS name")));
        }
        for ip in &spec.ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.extended_key_usages = spec.eku.clone();
        if !spec.crl_urls.is_empty() {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: spec.crl_urls.clone() }];
        }
        if !spec.dps.is_empty() {
            p.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 31], dps_extension(&spec.dps)));
        }
        if !spec.ocsp_urls.is_empty() {
            // AuthorityInfoAccess: SEQUENCE OF { id-ad-ocsp, [6] uniformResourceIdentifier }.
            let descriptions: Vec<u8> = spec
                .ocsp_urls
                .iter()
                .flat_map(|u| {
                    tlv(
                        0x30,
                        &[tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]), tlv(0x86, u.as_bytes())]
                            .concat(),
                    )
                })
                .collect();
            p.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], tlv(0x30, &descriptions)));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + spec.not_before;
        p.not_after = now + spec.not_after;
        let serial = spec.serial.clone().unwrap_or_else(random_serial);
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).expect("sign certificate");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone(), serial }
    }

    /// A v2 CRL listing these serials, valid from an hour ago until `next_update` from now
    /// (negative = already stale).
    pub fn crl(&self, revoked: &[&[u8]], crl_number: u64, next_update: Duration) -> String {
        let now = OffsetDateTime::now_utc();
        let this_update = now - Duration::hours(1);
        let next = now + next_update;
        let params = CertificateRevocationListParams {
            this_update: if next <= this_update { next - Duration::hours(1) } else { this_update },
            next_update: next,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(30),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("sign CRL").pem().expect("CRL PEM")
    }
}

impl Authority {
    /// A delta CRL (RFC 5280 §5.2.4; rcgen cannot make one): `entries` are (serial, CRLReason
    /// code) pairs — reason 8 is removeFromCRL — applying to base CRLs numbered `base` or later.
    /// Returns DER.
    pub fn delta_crl(&self, entries: &[(&[u8], u8)], number: u64, base: u64, next_update: Duration) -> Vec<u8> {
        self.custom_crl(&CrlSpec {
            entries: entries
                .iter()
                .map(|(s, r)| CrlEntrySpec { reason: Some(*r), ..CrlEntrySpec::serial(s) })
                .collect(),
            number,
            delta_base: Some(base),
            next_update,
            idp: None,
        })
    }

    /// A CRL as `spec` says, encoded by hand and signed with this CA's key (ECDSA P-256 with
    /// SHA-256). Returns DER.
    pub fn custom_crl(&self, spec: &CrlSpec) -> Vec<u8> {
        use rcgen::SigningKey;
        let now = OffsetDateTime::now_utc();
        let utc = |t: OffsetDateTime| tlv(0x17, utc_time(t).as_bytes());
        let int = |n: u64| {
            let mut v: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            if v.first().is_none_or(|b| b & 0x80 != 0) {
                v.insert(0, 0);
            }
            tlv(0x02, &v)
        };
        let ext = |oid: &[u8], critical: bool, value: Vec<u8>| {
            let mut parts = vec![tlv(0x06, oid)];
            if critical {
                parts.push(tlv(0x01, &[0xff]));
            }
            parts.push(tlv(0x04, &value));
            tlv(0x30, &parts.concat())
        };
        let ecdsa_sha256 = tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        let revoked: Vec<u8> = spec
            .entries
            .iter()
            .flat_map(|e| {
                let mut exts = Vec::new();
                if let Some(r) = e.reason {
                    exts.push(ext(&[0x55, 0x1d, 0x15], false, tlv(0x0a, &[r])));
                }
                if let Some(name) = &e.cert_issuer {
                    exts.push(ext(&[0x55, 0x1d, 0x1d], true, tlv(0x30, &tlv(0xa4, name))));
                }
                let mut parts = vec![tlv(0x02, &e.serial), utc(now - Duration::minutes(5))];
                if !exts.is_empty() {
                    parts.push(tlv(0x30, &exts.concat()));
                }
                tlv(0x30, &parts.concat())
            })
            .collect();
        let mut exts = vec![ext(&[0x55, 0x1d, 0x14], false, int(spec.number))];
        if let Some(base) = spec.delta_base {
            exts.push(ext(&[0x55, 0x1d, 0x1b], true, int(base)));
        }
        if let Some(idp) = &spec.idp {
            let mut parts = Vec::new();
            if let Some(uri) = &idp.uri {
                parts.push(tlv(0xa0, &tlv(0xa0, &uri_names(uri))));
            }
            if idp.only_user {
                parts.push(tlv(0x81, &[0xff]));
            }
            if idp.only_ca {
                parts.push(tlv(0x82, &[0xff]));
            }
            if let Some(r) = idp.reasons {
                parts.push(tlv(0x83, &reason_bits(r)));
            }
            if idp.indirect {
                parts.push(tlv(0x84, &[0xff]));
            }
            exts.push(ext(&[0x55, 0x1d, 0x1c], true, tlv(0x30, &parts.concat())));
        }
        let mut tbs_parts = vec![
            tlv(0x02, &[1]),
            ecdsa_sha256.clone(),
            self.subject_der(),
            utc(now - Duration::minutes(10)),
            utc(now + spec.next_update),
        ];
        if !revoked.is_empty() {
            tbs_parts.push(tlv(0x30, &revoked));
        }
        tbs_parts.push(tlv(0xa0, &tlv(0x30, &exts.concat())));
        let tbs = tlv(0x30, &tbs_parts.concat());
        let sig = self.issuer.key().sign(&tbs).expect("sign CRL");
        let mut bits = vec![0u8];
        bits.extend(sig);
        tlv(0x30, &[tbs, ecdsa_sha256, tlv(0x03, &bits)].concat())
    }
}

/// An ASN.1 UTCTime string (`YYMMDDHHMMSSZ`), as CRLs and `openssl ca`'s index.txt use.
pub fn utc_time(t: OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Writes a file, creating its directory; panics with the path on failure (demo/tests only).
pub fn write(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
