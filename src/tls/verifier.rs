//! The client-certificate verifier: chain validation is delegated to the standard verifier
//! (rustls-webpki, with client-auth EKU, at the current time, no revocation), then the
//! verified path goes to [`Revocation::decide`] (CRLs, then OCSP). Every refusal is logged
//! once, as a structured security event, here.

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
use crate::config::ClientCertMode;
use crate::error::RefusalReason;
pub use crate::revocation::Lookup;
use crate::revocation::ocsp::Ocsp;
use crate::revocation::{Denial, DenialKind, Issuer, Revocation, RevocationIndex, VerifiedPath, display_name, intern};

tokio::task_local! {
    /// The connection whose handshake is being driven: its remote address, so that refusal
    /// events name it (the verifier itself is shared by all connections), and where the
    /// verifier leaves the path it verified, for the connection's registration.
    pub static HANDSHAKE: Handshake;
}

/// See [`HANDSHAKE`].
#[derive(Debug, Clone)]
pub struct Handshake {
    pub peer: SocketAddr,
    pub verified: Arc<std::sync::Mutex<Option<Arc<VerifiedPath>>>>,
}

impl Handshake {
    pub fn new(peer: SocketAddr) -> Self {
        Self { peer, verified: Arc::default() }
    }

    /// The path the verifier accepted in this handshake, if any.
    pub fn take_verified(&self) -> Option<Arc<VerifiedPath>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Verifies client certificates against the CA bundle, then their revocation status.
#[derive(Debug)]
pub struct CrlVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    ca_intermediates: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    revocation: Revocation,
    algs: WebPkiSupportedAlgorithms,
    /// The anchors' keys ([`issuer_key`]): an open connection whose path ends at an anchor
    /// no longer here is closed.
    anchor_keys: std::collections::HashSet<Vec<u8>>,
    /// What the paths ending at each of `anchors` (same order) share of it.
    shared_anchors: Vec<SharedAnchor>,
}

/// A trust anchor's key and it as an issuer, made once per verifier so that the paths
/// ending at it share them instead of each holding copies.
#[derive(Debug)]
struct SharedAnchor {
    key: Arc<[u8]>,
    /// `Err` when its name cannot be read: then no path through it can be (every one has a
    /// certificate naming it as issuer).
    issuer: Result<Arc<Issuer>, crate::der::DerError>,
}

impl SharedAnchor {
    fn of(anchor: &TrustAnchor<'_>) -> Self {
        let spki = webpki::spki_for_anchor(anchor);
        Self {
            key: issuer_key(anchor.subject.as_ref(), spki.as_ref()).into(),
            issuer: Issuer::of_anchor(anchor).map(Arc::new),
        }
    }
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
            anchors: bundle.anchors.clone(),
            ca_intermediates: bundle.intermediates.clone(),
            hints: bundle.hint_names.clone(),
            mandatory: mode == ClientCertMode::Required,
            revocation: Revocation::new(index, ocsp),
            algs,
            anchor_keys: bundle.cas.iter().filter(|c| c.is_anchor).map(|c| c.key()).collect(),
            shared_anchors: bundle.anchors.iter().map(SharedAnchor::of).collect(),
        }
    }

    pub fn index(&self) -> &Arc<RevocationIndex> {
        self.revocation.index()
    }

    /// The OCSP checker, when `--ocsp` is not `off`.
    pub fn ocsp(&self) -> Option<&Arc<Ocsp>> {
        self.revocation.ocsp()
    }

    /// Validates the chain and its revocation status at `now`, as a handshake does (may wait
    /// for an OCSP responder).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Refusal> {
        self.verify(end_entity, intermediates, now, Lookup::Handshake).map(drop)
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
        self.keep(end_entity, &path)
    }

    /// What revocation needs of the path webpki verified (see [`crate::revocation::path`]):
    /// the client certificate's facts, its CA certificates' interned ones, the anchor's shared
    /// key and issuer.
    fn keep(&self, end_entity: &CertificateDer<'_>, path: &webpki::VerifiedPath<'_>) -> Result<VerifiedPath, Refusal> {
        let unreadable = |position: usize, e: crate::der::DerError| Refusal {
            reason: RefusalReason::BadEncoding,
            detail: format!("certificate #{position} of the path cannot be read for revocation: {e}"),
        };
        let cas = path
            .intermediate_certificates()
            .enumerate()
            .map(|(i, c)| intern::shared().intern(c.der().as_ref()).map_err(|e| unreadable(i + 2, e)))
            .collect::<Result<Vec<_>, _>>()?;
        // The anchor webpki found is one of `self.anchors`; made afresh if it ever is not.
        let anchor = path.anchor();
        let fresh;
        let shared = match self.anchors.iter().zip(&self.shared_anchors).find(|(a, _)| std::ptr::eq(*a, anchor)) {
            Some((_, s)) => s,
            None => {
                fresh = SharedAnchor::of(anchor);
                &fresh
            }
        };
        let top = shared.issuer.as_ref().map_err(|e| unreadable(cas.len() + 1, e.clone()))?;
        VerifiedPath::new(end_entity.as_ref(), cas, top, shared.key.clone()).map_err(|e| unreadable(1, e))
    }

    /// Validates the chain and its revocation status at `now`; returns the verified path.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        lookup: Lookup,
    ) -> Result<VerifiedPath, Refusal> {
        let path = self.verified_path(end_entity, intermediates, now)?;
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.revocation.decide(&path, now_secs, lookup).map_err(Refusal::from)?;
        Ok(path)
    }

    /// Re-checks an open connection's path, verified at its handshake: whether its trust
    /// anchor is still one, and its revocation status at `now`. Signatures and validity
    /// dates are not checked again (they cannot change; expiry is
    /// `--close-expired-connections`' business).
    /// Which open connections may no longer pass now that this verifier replaces `old`:
    /// every one if the trust anchors changed, else what the CRL index newly lists
    /// ([`crate::revocation::RevocationIndex::affected_since`]).
    pub fn affected_since(&self, old: &CrlVerifier) -> crate::revocation::Affected {
        if self.anchor_keys != old.anchor_keys {
            return crate::revocation::Affected::All;
        }
        self.index().affected_since(old.index())
    }

    pub fn recheck(&self, path: &VerifiedPath, now: UnixTime) -> Result<(), Refusal> {
        if !self.anchor_keys.contains(&path.anchor[..]) {
            return Err(Refusal {
                reason: RefusalReason::UnknownCa,
                detail: "the trust anchor of its path is no longer in --client-ca-file".into(),
            });
        }
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.revocation.decide(path, now_secs, Lookup::Recheck).map_err(Refusal::from)
    }
}

/// A refused certificate: the reason (one alert) and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Self {
        let reason = match d.kind {
            DenialKind::Revoked => RefusalReason::Revoked,
            DenialKind::Undetermined => RefusalReason::NoCrl,
            DenialKind::StaleCrl => RefusalReason::StaleCrl,
            DenialKind::NoOcspAnswer => RefusalReason::OcspNoAnswer,
        };
        Self { reason, detail: d.detail }
    }
}

impl From<RefusalReason> for Refusal {
    fn from(reason: RefusalReason) -> Self {
        Self { detail: String::new(), reason }
    }
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
        match self.verify(end_entity, intermediates, now, Lookup::Handshake) {
            Ok(path) => {
                let _ = HANDSHAKE
                    .try_with(|h| *h.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(path)));
                Ok(ClientCertVerified::assertion())
            }
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
    let peer = HANDSHAKE.try_with(|h| h.peer.to_string()).unwrap_or_else(|_| "unknown".into());
    let sha256: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
    let described = match x509_parser::parse_x509_certificate(end_entity.as_ref()) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string(), hex::encode(c.raw_serial())),
        Err(_) => ("<unparsable>".into(), "<unparsable>".into(), String::new()),
    };
    security_event("handshake_refused", "refused client certificate", refusal, &sha256, described, &peer);
}

/// One structured security event per live connection closed because its certificate no
/// longer passes (revoked after the handshake, CA removed, CRL stale under `deny`).
pub fn log_connection_closed(refusal: &Refusal, path: &VerifiedPath, peer: SocketAddr) {
    // From the facts read at the handshake: no certificate kept or parsed per closed
    // connection (a revoked intermediate closes thousands at once).
    let leaf = &path.leaf;
    let described =
        (display_name(&leaf.facts.subject_der), display_name(&leaf.issuer.name_der), hex::encode(&leaf.facts.serial));
    security_event(
        "connection_closed",
        "closing live connection",
        refusal,
        &leaf.facts.sha256,
        described,
        &peer.to_string(),
    );
}

/// One security event about the certificate of SHA-256 `sha256`, `described` as (subject,
/// issuer, serial).
fn security_event(
    event: &'static str,
    what: &str,
    refusal: &Refusal,
    sha256: &[u8; 32],
    (subject, issuer, serial): (String, String, String),
    peer: &str,
) {
    let fingerprint = hex::encode(sha256);
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
