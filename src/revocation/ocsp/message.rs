//! OCSP on the wire (RFC 6960): the nonce-less request for one certificate, and the strict
//! parsing and verification of a response — responder signature (the issuing CA itself, or a
//! delegated responder certificate issued by it with the OCSP-signing EKU), certificate ID,
//! thisUpdate/nextUpdate and freshness. Pure functions of bytes and time, fuzzed.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyUsage};

use crate::der::{
    self, BIT_STRING, CONTEXT_0, DerError, ENUMERATED, GENERALIZED_TIME, INTEGER, OCTET_STRING, OID, Reader, SEQUENCE,
    tlv,
};
use crate::revocation::crl::normalize_serial;

/// sha1 (1.3.14.3.2.26): the CertID hash CAs expect (RFC 5019).
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// sha256 (2.16.840.1.101.3.4.2.1), accepted in responses.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1).
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9).
const OID_KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// Clock skew tolerated on thisUpdate (a responder's clock slightly ahead of ours).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Why a response was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("{0}")]
    Der(#[from] DerError),
    #[error("the responder answered {0} instead of a status")]
    NotSuccessful(&'static str),
    #[error("the response is not a basic OCSP response")]
    NotBasic,
    #[error("the response does not answer for this certificate (certificate ID)")]
    NoMatchingResponse,
    #[error("the response signature does not verify against the issuing CA or an authorized responder")]
    BadSignature,
    #[error("the response is not fresh: {0}")]
    NotFresh(String),
}

impl ResponseError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotSuccessful(_) => "responder_error",
            Self::BadSignature => "bad_signature",
            Self::NotFresh(_) => "stale",
            Self::Der(_) | Self::NotBasic | Self::NoMatchingResponse => "invalid",
        }
    }
}

/// The certificate whose status is asked, with what identifies its issuer.
#[derive(Debug, Clone)]
pub struct CertRef {
    /// The certificate's serial number (INTEGER contents).
    pub serial: Vec<u8>,
    /// The full DER of the certificate's issuer Name (= the issuer's subject).
    pub issuer_name: Vec<u8>,
    /// The issuer's full SubjectPublicKeyInfo DER.
    pub issuer_spki: Vec<u8>,
    /// The issuer as a trust anchor, to verify delegated responder certificates.
    pub issuer_anchor: TrustAnchor<'static>,
}

impl CertRef {
    /// The DER CertID with SHA-1 hashes: the request's content and the cache key.
    pub fn cert_id(&self) -> Result<Vec<u8>, DerError> {
        let (name_hash, key_hash) = self.hashes(OID_SHA1)?;
        let alg = tlv(SEQUENCE, &[tlv(OID, OID_SHA1), vec![0x05, 0x00]].concat());
        Ok(tlv(
            SEQUENCE,
            &[alg, tlv(OCTET_STRING, &name_hash), tlv(OCTET_STRING, &key_hash), tlv(INTEGER, &self.serial)].concat(),
        ))
    }

    /// The reference of certificate `serial` issued by the CA certificate `issuer_der`.
    pub fn issued_by(serial: &[u8], issuer_der: &[u8]) -> Option<Self> {
        let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der).ok()?;
        let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(issuer_der)).ok()?.to_owned();
        Some(Self {
            serial: serial.to_vec(),
            issuer_name: issuer.subject().as_raw().to_vec(),
            issuer_spki: issuer.public_key().raw.to_vec(),
            issuer_anchor: anchor,
        })
    }

    /// issuerNameHash and issuerKeyHash with the hash named by `alg` (sha1 or sha256).
    fn hashes(&self, alg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DerError> {
        let (_, key) = der::spki(&self.issuer_spki)?;
        let hash = |data: &[u8]| -> Vec<u8> {
            if alg == OID_SHA1 {
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref().to_vec()
            } else {
                Sha256::digest(data).to_vec()
            }
        };
        Ok((hash(&self.issuer_name), hash(key)))
    }
}

/// An OCSPRequest for one certificate, without nonce (responders that pre-sign their
/// responses, as most CAs do, ignore or refuse nonces) and unsigned.
pub fn request(cert_id: &[u8]) -> Vec<u8> {
    let request = tlv(SEQUENCE, cert_id);
    let request_list = tlv(SEQUENCE, &request);
    let tbs_request = tlv(SEQUENCE, &request_list);
    tlv(SEQUENCE, &tbs_request)
}

/// A certificate's status as the responder states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked { at: i64, reason: Option<u8> },
    Unknown,
}

/// A verified answer for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub status: CertStatus,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// Who signed it: the issuing CA or a delegated responder.
    pub signer: Signer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Issuer,
    Delegated,
}

/// The parts of a BasicOCSPResponse that verification needs.
struct Basic<'a> {
    tbs: &'a [u8],
    sig_alg: &'a [u8],
    signature: &'a [u8],
    certs: Vec<&'a [u8]>,
    responses: &'a [u8],
}

fn parse_basic(bytes: &[u8]) -> Result<Basic<'_>, ResponseError> {
    let outer = Reader::new(bytes).expect(SEQUENCE, "OCSPResponse")?;
    let mut r = Reader::new(outer.value);
    let status = r.expect(ENUMERATED, "responseStatus")?;
    match status.value {
        [0] => {}
        [1] => return Err(ResponseError::NotSuccessful("malformedRequest")),
        [2] => return Err(ResponseError::NotSuccessful("internalError")),
        [3] => return Err(ResponseError::NotSuccessful("tryLater")),
        [5] => return Err(ResponseError::NotSuccessful("sigRequired")),
        [6] => return Err(ResponseError::NotSuccessful("unauthorized")),
        _ => return Err(ResponseError::NotSuccessful("an unknown responseStatus")),
    }
    let wrapped = r.expect(CONTEXT_0, "responseBytes")?;
    let response_bytes = Reader::new(wrapped.value).expect(SEQUENCE, "ResponseBytes")?;
    let mut rb = Reader::new(response_bytes.value);
    if rb.expect(OID, "responseType")?.value != OID_OCSP_BASIC {
        return Err(ResponseError::NotBasic);
    }
    let basic_der = rb.expect(OCTET_STRING, "response")?.value;

    let basic = Reader::new(basic_der).expect(SEQUENCE, "BasicOCSPResponse")?;
    let mut b = Reader::new(basic.value);
    let tbs = b.expect(SEQUENCE, "tbsResponseData")?;
    let sig_alg = b.expect(SEQUENCE, "signatureAlgorithm")?;
    let sig = b.expect(BIT_STRING, "signature")?;
    let signature = match sig.value.split_first() {
        Some((0, s)) => s,
        _ => return Err(DerError("signature unused bits").into()),
    };
    let mut certs = Vec::new();
    if let Some(wrapped) = b.optional(CONTEXT_0, "certs")? {
        let list = Reader::new(wrapped.value).expect(SEQUENCE, "certs")?;
        let mut c = Reader::new(list.value);
        while !c.is_empty() {
            certs.push(c.expect(SEQUENCE, "certificate")?.full);
        }
    }

    let mut t = Reader::new(tbs.value);
    t.optional(CONTEXT_0, "version")?;
    let responder_id = t.any("responderID")?;
    if !matches!(responder_id.tag, 0xa1 | 0xa2) {
        return Err(DerError("responderID").into());
    }
    t.expect(GENERALIZED_TIME, "producedAt")?;
    let responses = t.expect(SEQUENCE, "responses")?.value;
    Ok(Basic { tbs: tbs.full, sig_alg: sig_alg.value, signature, certs, responses })
}

/// Whether `basic`'s signature verifies with the key of `spki_der`.
fn signed_by(basic: &Basic<'_>, spki_der: &[u8], algs: &WebPkiSupportedAlgorithms) -> bool {
    der::verify_signed(spki_der, basic.sig_alg, basic.tbs, basic.signature, algs).is_ok()
}

/// Full SubjectPublicKeyInfo DER of a certificate.
fn cert_spki(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Who signed the response: the issuer itself, or a certificate from `certs` that the issuer
/// issued for OCSP signing (EKU id-kp-OCSPSigning, valid now) — RFC 6960 §4.2.2.2.
fn signer(basic: &Basic<'_>, cert: &CertRef, now: i64, algs: &WebPkiSupportedAlgorithms) -> Option<Signer> {
    if signed_by(basic, &cert.issuer_spki, algs) {
        return Some(Signer::Issuer);
    }
    let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    let anchors = [cert.issuer_anchor.clone()];
    for der in &basic.certs {
        let der = CertificateDer::from(*der);
        let Ok(ee) = EndEntityCert::try_from(&der) else { continue };
        let delegated =
            ee.verify_for_usage(algs.all, &anchors, &[], when, KeyUsage::required(OID_KP_OCSP_SIGNING), None, None);
        if delegated.is_err() {
            continue;
        }
        if let Some(spki) = cert_spki(der.as_ref())
            && signed_by(basic, &spki, algs)
        {
            return Some(Signer::Delegated);
        }
    }
    None
}

/// One SingleResponse, parsed.
struct Single<'a> {
    /// CertID contents.
    id: &'a [u8],
    status: CertStatus,
    this_update: i64,
    next_update: Option<i64>,
}

/// Parses every SingleResponse (all of them, before any signature check, so that the
/// parser sees every input in fuzzing).
fn parse_singles<'a>(responses: &'a [u8]) -> Result<Vec<Single<'a>>, ResponseError> {
    let mut out = Vec::new();
    let mut responses = Reader::new(responses);
    while !responses.is_empty() {
        let single = responses.expect(SEQUENCE, "SingleResponse")?;
        let mut s = Reader::new(single.value);
        let id = s.expect(SEQUENCE, "certID")?.value;
        let status_tlv = s.any("certStatus")?;
        let this_update = der::time(&s.expect(GENERALIZED_TIME, "thisUpdate")?)?;
        let next_update = match s.optional(CONTEXT_0, "nextUpdate")? {
            Some(n) => Some(der::time(&Reader::new(n.value).expect(GENERALIZED_TIME, "nextUpdate")?)?),
            None => None,
        };
        let status = match (status_tlv.tag, status_tlv.value) {
            (0x80, []) => CertStatus::Good,
            (0x82, []) => CertStatus::Unknown,
            (0xa1, info) => {
                let mut i = Reader::new(info);
                let at = der::time(&i.expect(GENERALIZED_TIME, "revocationTime")?)?;
                let reason = match i.optional(CONTEXT_0, "revocationReason")? {
                    Some(r) => match Reader::new(r.value).expect(ENUMERATED, "CRLReason")?.value {
                        [code] => Some(*code),
                        _ => return Err(DerError("CRLReason").into()),
                    },
                    None => None,
                };
                CertStatus::Revoked { at, reason }
            }
            _ => return Err(DerError("certStatus").into()),
        };
        out.push(Single { id, status, this_update, next_update });
    }
    Ok(out)
}

/// Parses an OCSPResponse and verifies it as the answer for `cert` at time `now` (Unix
/// seconds). `max_age` bounds how old thisUpdate may be when the response has no nextUpdate.
pub fn verify(
    bytes: &[u8],
    cert: &CertRef,
    now: i64,
    max_age_secs: i64,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Verified, ResponseError> {
    let basic = parse_basic(bytes)?;
    let singles = parse_singles(basic.responses)?;
    let signer = signer(&basic, cert, now, algs).ok_or(ResponseError::BadSignature)?;
    for single in singles {
        if !matches_cert(single.id, cert)? {
            continue;
        }
        let Single { status, this_update, next_update, .. } = single;
        if this_update > now + CLOCK_SKEW_SECS {
            return Err(ResponseError::NotFresh(format!(
                "thisUpdate {} is in the future",
                crate::revocation::fmt_time(this_update)
            )));
        }
        match next_update {
            Some(next) if next < now => {
                return Err(ResponseError::NotFresh(format!(
                    "nextUpdate {} has passed",
                    crate::revocation::fmt_time(next)
                )));
            }
            None if this_update < now - max_age_secs => {
                return Err(ResponseError::NotFresh(format!(
                    "no nextUpdate, and thisUpdate {} is older than --ocsp-max-age",
                    crate::revocation::fmt_time(this_update)
                )));
            }
            _ => {}
        }
        return Ok(Verified { status, this_update, next_update, signer });
    }
    Err(ResponseError::NoMatchingResponse)
}

/// Whether a CertID (contents) names `cert`: same serial, and issuer hashes computed with
/// the CertID's own hash algorithm (SHA-1 or SHA-256).
fn matches_cert(id: &[u8], cert: &CertRef) -> Result<bool, ResponseError> {
    let mut r = Reader::new(id);
    let alg = r.expect(SEQUENCE, "hashAlgorithm")?;
    let oid = Reader::new(alg.value).expect(OID, "hashAlgorithm OID")?.value;
    let name_hash = r.expect(OCTET_STRING, "issuerNameHash")?.value;
    let key_hash = r.expect(OCTET_STRING, "issuerKeyHash")?.value;
    let serial = r.expect(INTEGER, "serialNumber")?.value;
    if oid != OID_SHA1 && oid != OID_SHA256 {
        return Ok(false);
    }
    let (want_name, want_key) = cert.hashes(oid)?;
    Ok(normalize_serial(serial) == normalize_serial(&cert.serial) && name_hash == want_name && key_hash == want_key)
}

/// The OCSP responder URLs of a certificate's Authority Information Access extension.
pub fn responder_urls(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for desc in &aia.accessdescs {
                if desc.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    && let GeneralName::URI(u) = desc.access_location
                {
                    urls.push(u.to_string());
                }
            }
        }
    }
    urls
}

/// Parses a response fully without verifying it (for fuzzing: must never panic); returns
/// the number of single responses.
pub fn parse_only(bytes: &[u8]) -> Result<usize, ResponseError> {
    let basic = parse_basic(bytes)?;
    Ok(parse_singles(basic.responses)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_nonce_less_single_request() {
        let id = [0x30, 0x03, 0x02, 0x01, 0x07];
        let req = request(&id);
        // OCSPRequest { TBSRequest { requestList { Request { CertID } } } }, nothing else.
        assert_eq!(req, [0x30, 0x0b, 0x30, 0x09, 0x30, 0x07, 0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x07]);
    }

    // Responses made by `openssl ocsp` (fuzz/make-seeds.sh): serial 0A1B revoked, 0A1C good,
    // 0A1D unknown; `delegated-*` signed by a responder certificate (EKU OCSPSigning, valid
    // ten years, no nextUpdate), `ca-*` by the CA itself (nextUpdate a week after creation).
    const ISSUER: &[u8] = include_bytes!("../../../fuzz/corpus/ocsp-issuer.der");
    const DELEGATED_REVOKED: &[u8] = include_bytes!("../../../fuzz/corpus/ocsp/delegated-0x0A1B.der");
    const DELEGATED_GOOD: &[u8] = include_bytes!("../../../fuzz/corpus/ocsp/delegated-0x0A1C.der");
    const DELEGATED_UNKNOWN: &[u8] = include_bytes!("../../../fuzz/corpus/ocsp/delegated-0x0A1D.der");
    const CA_GOOD: &[u8] = include_bytes!("../../../fuzz/corpus/ocsp/ca-0x0A1C.der");

    fn check(resp: &[u8], serial: &[u8], now: i64) -> Result<Verified, ResponseError> {
        let cert = CertRef::issued_by(serial, ISSUER).unwrap();
        verify(resp, &cert, now, i64::MAX / 4, &crate::crypto::provider().signature_verification_algorithms)
    }

    #[test]
    fn openssl_responses_verify_with_their_status() {
        let now = crate::revocation::now_secs();
        let revoked = check(DELEGATED_REVOKED, &[0x0a, 0x1b], now).unwrap();
        assert!(matches!(revoked.status, CertStatus::Revoked { reason: Some(1), .. }), "{revoked:?}");
        assert_eq!(revoked.signer, Signer::Delegated);
        assert_eq!(check(DELEGATED_GOOD, &[0x0a, 0x1c], now).unwrap().status, CertStatus::Good);
        assert_eq!(check(DELEGATED_UNKNOWN, &[0x0a, 0x1d], now).unwrap().status, CertStatus::Unknown);
        // Signed by the CA: the signature is accepted (the error is the later freshness check
        // once the week is over; before, it verifies).
        match check(CA_GOOD, &[0x0a, 0x1c], now) {
            Ok(v) => assert_eq!((v.status, v.signer), (CertStatus::Good, Signer::Issuer)),
            Err(e) => assert!(matches!(e, ResponseError::NotFresh(_)), "{e:?}"),
        }
        assert!(matches!(check(CA_GOOD, &[0x0a, 0x1c], i64::MAX / 2), Err(ResponseError::NotFresh(_))));
    }

    #[test]
    fn a_response_for_another_certificate_or_tampered_is_refused() {
        let now = crate::revocation::now_secs();
        // The good answer for 0A1C is no answer for 0A1B.
        assert_eq!(check(DELEGATED_GOOD, &[0x0a, 0x1b], now).err(), Some(ResponseError::NoMatchingResponse));
        // One flipped bit anywhere in the signed data: the signature fails.
        let mut tampered = DELEGATED_GOOD.to_vec();
        let at = tampered.windows(3).position(|w| w == [0x02, 0x02, 0x0a]).expect("serial in the CertID");
        tampered[at + 3] ^= 0x01;
        assert_eq!(check(&tampered, &[0x0a, 0x1c], now).err(), Some(ResponseError::BadSignature));
        // Another CA's reference: neither the CA nor the responder verifies.
        let other = kube_crl_proxy_testkit::pki::Authority::root("other-ca");
        let cert = CertRef::issued_by(&[0x0a, 0x1c], other.der.as_ref()).unwrap();
        let algs = crate::crypto::provider().signature_verification_algorithms;
        assert_eq!(verify(DELEGATED_GOOD, &cert, now, 3600, &algs).err(), Some(ResponseError::BadSignature));
    }

    #[test]
    fn error_statuses_are_named() {
        // OCSPResponse { responseStatus tryLater(3) }
        let resp = [0x30, 0x03, 0x0a, 0x01, 0x03];
        assert_eq!(parse_basic(&resp).err(), Some(ResponseError::NotSuccessful("tryLater")));
        let resp = [0x30, 0x03, 0x0a, 0x01, 0x06];
        assert_eq!(parse_basic(&resp).err(), Some(ResponseError::NotSuccessful("unauthorized")));
        assert!(matches!(parse_basic(&[0x30, 0x00]), Err(ResponseError::Der(_))));
    }
}
