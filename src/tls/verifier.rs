//! The client-certificate verifier: chain validation is delegated to the standard verifier
//! (rustls-webpki, with client-auth EKU, at the current time, no revocation), then each
//! certificate of the verified path is looked up in the pre-verified [`RevocationIndex`],
//! then (with `--ocsp`) the client certificate's OCSP answer is consulted ([`crate::ocsp`]).
//! Every refusal is logged once, as a structured security event, here.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyUsage};

use crate::ca::{CaBundle, issuer_key};
use crate::config::{ClientCertMode, OcspMode};
use crate::error::RefusalReason;
use crate::ocsp::{CertRef, CertStatus, Ocsp, Query, QueryError, Verdict};
use crate::revocation::der::{INTEGER, Reader, SEQUENCE, tlv};
use crate::revocation::{
    CertFacts, PathCert, RevocationError, RevocationIndex, VerifiedPath, crl::reason_name, fmt_time,
};

tokio::task_local! {
    /// The remote address of the connection whose handshake is being driven, so that
    /// refusal events name it (the verifier itself is shared by all connections).
    pub static PEER: SocketAddr;
}

/// Verifies client certificates against the CA bundle and the revocation index.
#[derive(Debug)]
pub struct CrlVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    ca_intermediates: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    index: Arc<RevocationIndex>,
    algs: WebPkiSupportedAlgorithms,
    ocsp: Option<Arc<Ocsp>>,
}

/// Whether a lookup may wait for an OCSP responder (a handshake) or not (a re-check of an
/// open connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Handshake,
    Recheck,
}

impl CrlVerifier {
    pub fn new(
        bundle: &CaBundle,
        index: Arc<RevocationIndex>,
        mode: ClientCertMode,
        algs: WebPkiSupportedAlgorithms,
        ocsp: Option<Arc<Ocsp>>,
    ) -> Self {
        Self {
            ocsp: ocsp.filter(|o| o.mode() != OcspMode::Off),
            anchors: bundle.anchors.clone(),
            ca_intermediates: bundle.intermediates.clone(),
            hints: bundle.hint_names.clone(),
            mandatory: mode == ClientCertMode::Required,
            index,
            algs,
        }
    }

    pub fn index(&self) -> &Arc<RevocationIndex> {
        &self.index
    }

    /// The OCSP checker, when `--ocsp` is not `off`.
    pub fn ocsp(&self) -> Option<&Arc<Ocsp>> {
        self.ocsp.as_ref()
    }

    /// Validates the chain and its revocation status at `now`, as a handshake does (may wait
    /// for an OCSP responder).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Refusal> {
        self.check_with(end_entity, intermediates, now, Lookup::Handshake)
    }

    /// Validates the chain at `now` (no revocation) and returns what revocation needs of it.
    pub fn verified_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedPath, Refusal> {
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| Refusal::from(RefusalReason::from_webpki(&e)))?;
        let mut pool: Vec<CertificateDer<'_>> = Vec::with_capacity(intermediates.len() + self.ca_intermediates.len());
        pool.extend(intermediates.iter().cloned());
        pool.extend(self.ca_intermediates.iter().cloned());
        let path = ee
            .verify_for_usage(self.algs.all, &self.anchors, &pool, now, KeyUsage::client_auth(), None, None)
            .map_err(|e| Refusal::from(RefusalReason::from_webpki(&e)))?;
        verified_path(end_entity, &path)
    }

    /// Validates the chain and its revocation status at `now`.
    pub fn check_with(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        lookup: Lookup,
    ) -> Result<(), Refusal> {
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| Refusal::from(RefusalReason::from_webpki(&e)))?;
        let mut pool: Vec<CertificateDer<'_>> = Vec::with_capacity(intermediates.len() + self.ca_intermediates.len());
        pool.extend(intermediates.iter().cloned());
        pool.extend(self.ca_intermediates.iter().cloned());
        let path = ee
            .verify_for_usage(self.algs.all, &self.anchors, &pool, now, KeyUsage::client_auth(), None, None)
            .map_err(|e| Refusal::from(RefusalReason::from_webpki(&e)))?;

        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let verified = verified_path(end_entity, &path)?;
        if let Err((i, e)) = self.index.check_path(&verified, now_secs) {
            let what = if i == 0 { "client certificate" } else { "intermediate CA" };
            return Err(revocation_refusal(e, what, &verified.certs[i].facts.serial));
        }
        let chain: Vec<&webpki::Cert<'_>> = path.intermediate_certificates().collect();
        let anchor = path.anchor();
        let serial = ee_serial(end_entity);
        if let Some(ocsp) = &self.ocsp {
            let issuer_anchor = match chain.first() {
                Some(c) => webpki::anchor_from_trusted_cert(&c.der()).map(|a| a.to_owned()).ok(),
                None => Some(anchor.to_owned()),
            };
            let query = issuer_anchor.and_then(|issuer_anchor| {
                let cert = CertRef {
                    serial: serial.to_vec(),
                    issuer_name: tlv(SEQUENCE, x509_issuer(end_entity.as_ref())?),
                    issuer_spki: path.issuer_spki().as_ref().to_vec(),
                    issuer_anchor,
                };
                let aia = match ocsp.config().responder_url {
                    Some(_) => Vec::new(),
                    None => x509_parser::parse_x509_certificate(end_entity.as_ref())
                        .map(|(_, c)| crate::ocsp::message::responder_urls(&c))
                        .unwrap_or_default(),
                };
                Query::new(cert, &aia, ocsp.config().responder_url.as_deref()).ok()
            });
            let verdict = match (&query, lookup) {
                (None, _) => {
                    Verdict::NoAnswer(QueryError::NotAsked("cannot build an OCSP request for the certificate"))
                }
                (Some(q), Lookup::Handshake) => ocsp.for_handshake(q),
                (Some(q), Lookup::Recheck) => ocsp.for_recheck(q),
            };
            ocsp_policy(ocsp.mode(), verdict, serial)?;
        }
        Ok(())
    }
}

/// What revocation needs of the path webpki verified: each certificate's facts and the key
/// that signed it, and the anchor.
pub fn verified_path(
    end_entity: &CertificateDer<'_>,
    path: &webpki::VerifiedPath<'_>,
) -> Result<VerifiedPath, Refusal> {
    let anchor = path.anchor();
    let anchor_spki = webpki::spki_for_anchor(anchor);
    let anchor_key = issuer_key(anchor.subject.as_ref(), &anchor_spki);
    let intermediates: Vec<&webpki::Cert<'_>> = path.intermediate_certificates().collect();
    let mut certs = Vec::with_capacity(intermediates.len() + 1);
    let ders: Vec<CertificateDer<'_>> =
        std::iter::once(end_entity.clone()).chain(intermediates.iter().map(|c| c.der())).collect();
    for (i, der) in ders.iter().enumerate() {
        let facts = CertFacts::parse(der.as_ref()).map_err(|e| Refusal {
            reason: RefusalReason::BadEncoding,
            detail: format!("certificate #{} of the path cannot be read for revocation: {e}", i + 1),
        })?;
        let issuer_spki = match intermediates.get(i) {
            Some(c) => c.subject_public_key_info().as_ref().to_vec(),
            None => anchor_spki.as_ref().to_vec(),
        };
        certs.push(PathCert { facts, issuer_spki });
    }
    Ok(VerifiedPath { certs, anchor: anchor_key })
}

/// The refusal for a failed revocation check of the `what` with this serial.
fn revocation_refusal(e: RevocationError, what: &str, serial: &[u8]) -> Refusal {
    match e {
        RevocationError::Revoked { revocation, crl } => Refusal {
            reason: RefusalReason::Revoked,
            detail: format!(
                "{what} serial {} is listed in {crl}: revoked at {} ({})",
                hex::encode(serial),
                fmt_time(revocation.revoked_at),
                reason_name(revocation.reason)
            ),
        },
        RevocationError::Undetermined { why } => Refusal {
            reason: RefusalReason::NoCrl,
            detail: format!(
                "revocation status of the {what} is undetermined: {why}; intermediates must be in --client-ca-file and \
                 every CA needs CRLs that cover its certificates for every reason"
            ),
        },
        RevocationError::Stale { next_update, crl } => Refusal {
            reason: RefusalReason::StaleCrl,
            detail: format!(
                "the CRL covering the {what} ({crl}) is stale: its nextUpdate {} has passed (plus \
                 --crl-expired-grace); publish a fresh CRL. The client's certificate itself was not found invalid",
                fmt_time(next_update)
            ),
        },
    }
}

/// What `--ocsp` makes of a lookup's verdict.
fn ocsp_policy(mode: OcspMode, verdict: Verdict, serial: &[u8]) -> Result<(), Refusal> {
    let required = mode == OcspMode::Required;
    match verdict {
        Verdict::Answered(a) => match a.status {
            CertStatus::Good => Ok(()),
            CertStatus::Revoked { at, reason } => Err(Refusal {
                reason: RefusalReason::Revoked,
                detail: format!(
                    "client certificate serial {} is revoked per OCSP responder {}: revoked at {} ({}), answer of {}",
                    hex::encode(serial),
                    a.responder,
                    fmt_time(at),
                    reason_name(reason),
                    fmt_time(a.this_update)
                ),
            }),
            CertStatus::Unknown if required => Err(Refusal {
                reason: RefusalReason::OcspNoAnswer,
                detail: format!(
                    "OCSP responder {} answers \"unknown\" for client certificate serial {}",
                    a.responder,
                    hex::encode(serial)
                ),
            }),
            CertStatus::Unknown => Ok(()),
        },
        Verdict::NoAnswer(e) if required => Err(Refusal { reason: RefusalReason::OcspNoAnswer, detail: e.to_string() }),
        Verdict::NoAnswer(_) | Verdict::Pending => Ok(()),
    }
}

/// A refused certificate: the reason (one alert) and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

impl From<RefusalReason> for Refusal {
    fn from(reason: RefusalReason) -> Self {
        Self { detail: String::new(), reason }
    }
}

/// The serial of a certificate that webpki has already parsed successfully.
fn ee_serial<'a>(der: &'a CertificateDer<'_>) -> &'a [u8] {
    x509_serial(der.as_ref()).unwrap_or(&[])
}

/// A reader over TBSCertificate, positioned at serialNumber (read with the same strict DER
/// reader as CRLs).
fn tbs_from_serial(der: &[u8]) -> Option<Reader<'_>> {
    let cert = Reader::new(der).expect(SEQUENCE, "Certificate").ok()?;
    let tbs = Reader::new(cert.value).expect(SEQUENCE, "tbsCertificate").ok()?;
    let mut r = Reader::new(tbs.value);
    r.optional(0xa0, "version").ok()?;
    Some(r)
}

/// TBSCertificate.serialNumber contents.
fn x509_serial(der: &[u8]) -> Option<&[u8]> {
    Some(tbs_from_serial(der)?.expect(INTEGER, "serialNumber").ok()?.value)
}

/// TBSCertificate.issuer contents (the Name without its SEQUENCE header).
fn x509_issuer(der: &[u8]) -> Option<&[u8]> {
    let mut r = tbs_from_serial(der)?;
    r.expect(INTEGER, "serialNumber").ok()?;
    r.expect(SEQUENCE, "signature").ok()?;
    Some(r.expect(SEQUENCE, "issuer").ok()?.value)
}

impl ClientCertVerifier for CrlVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(refusal) => {
                log_refusal(&refusal, end_entity);
                Err(rustls::Error::InvalidCertificate(refusal.reason.certificate_error()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// One structured security event per refused handshake.
fn log_refusal(refusal: &Refusal, end_entity: &CertificateDer<'_>) {
    let peer = PEER.try_with(|p| p.to_string()).unwrap_or_else(|_| "unknown".into());
    security_event("handshake_refused", "refused client certificate", refusal, end_entity, &peer);
}

/// One structured security event per live connection closed because its certificate no
/// longer passes (revoked after the handshake, CA removed, CRL stale under `deny`).
pub fn log_connection_closed(refusal: &Refusal, end_entity: &CertificateDer<'_>, peer: SocketAddr) {
    security_event("connection_closed", "closing live connection", refusal, end_entity, &peer.to_string());
}

fn security_event(event: &'static str, what: &str, refusal: &Refusal, end_entity: &CertificateDer<'_>, peer: &str) {
    let fingerprint = hex::encode(Sha256::digest(end_entity.as_ref()));
    let (subject, issuer, serial) = match x509_parser::parse_x509_certificate(end_entity.as_ref()) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string(), hex::encode(c.raw_serial())),
        Err(_) => ("<unparsable>".into(), "<unparsable>".into(), String::new()),
    };
    tracing::warn!(
        event,
        reason = refusal.reason.label(),
        peer = %peer,
        subject = %subject,
        issuer = %issuer,
        serial = %serial,
        sha256 = %fingerprint,
        detail = %refusal.detail,
        "{what}: {}",
        refusal.reason
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_read_from_v3_and_v1_certificates() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 0x01 0x02 } }
        let v3 = [0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x07];
        assert_eq!(x509_serial(&v3), Some(&[0x07][..]));
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x09];
        assert_eq!(x509_serial(&v1), Some(&[0x09][..]));
        assert_eq!(x509_serial(&[0x30]), None);
    }
}
