//! A throwaway PKI built in memory with rcgen: CAs, intermediates, client and server
//! certificates, and CRLs. Used by `kube-crl-proxy demo` and by the tests, so that no
//! secret is ever checked in. Never use it for a real cluster.

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
    /// Validity relative to now.
    pub not_before: Duration,
    pub not_after: Duration,
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
            not_before: Duration::hours(-1),
            not_after: Duration::days(365),
        }
    }

    /// A server certificate for these names and addresses, valid a year.
    pub fn server(cn: &str, dns: &[&str], ips: &[IpAddr]) -> Self {
        Self {
            cn: Some(cn.into()),
            orgs: Vec::new(),
            uid: None,
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.to_vec(),
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            crl_urls: Vec::new(),
            not_before: Duration::hours(-1),
            not_after: Duration::days(365),
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
        Self {
            name: cn.into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
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
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + spec.not_before;
        p.not_after = now + spec.not_after;
        let serial = random_serial();
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

/// Writes a file, creating its directory; panics with the path on failure (demo/tests only).
pub fn write(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
