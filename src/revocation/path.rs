//! A verified client-certificate path as an open connection keeps it for its re-checks.
//!
//! Every connection keeps its path until it closes, and thousands of them run through the
//! same one or two CA certificates. So what is the same across connections is shared, not
//! copied: each CA certificate's facts ([`CaCert`], one copy per distinct DER, see
//! [`super::intern`]), each issuer's name and key ([`Issuer`]), and the trust anchor's key.
//! What a connection owns is its client certificate's [`LeafFacts`]: only what re-checks
//! (CRLs, OCSP), the expiry deadline and the security events read of it.
//!
//! Sharing never mixes certificates up: a [`CaCert`] is a function of its DER alone, and
//! which key signed which certificate (the part that depends on the path) is kept per path.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor};
use sha2::{Digest, Sha256};

use super::cert::{CertFacts, CrlSubject, DistPoint};
use super::name::NameKey;
use crate::der::{self, DerError};

/// A CA as the issuer of the certificate below it in a path: what that certificate's
/// revocation checks need of it. Shared: a CA's is made once per [`CaCert`], an anchor's once
/// per verifier.
#[derive(Debug)]
pub struct Issuer {
    /// Its subject Name, canonical: the issuer name of the certificates it issued.
    pub name: NameKey,
    /// Its subject Name's full DER encoding (OCSP's issuerNameHash, messages).
    pub name_der: Box<[u8]>,
    /// Its full SubjectPublicKeyInfo DER: the key that signs the certificates it issued.
    pub spki: Arc<[u8]>,
    /// It as a trust anchor, to verify delegated OCSP responders; `None` when webpki
    /// cannot read it as one.
    pub anchor: Option<TrustAnchor<'static>>,
}

impl Issuer {
    /// A trust anchor as an issuer; fails when its name cannot be read as a [`NameKey`] (a
    /// client certificate naming it as issuer could not be read either).
    pub fn of_anchor(anchor: &TrustAnchor<'_>) -> Result<Self, DerError> {
        let name_der = der::tlv(der::SEQUENCE, anchor.subject.as_ref());
        Ok(Self {
            name: NameKey::of(&name_der)?,
            name_der: name_der.into(),
            spki: webpki::spki_for_anchor(anchor).as_ref().into(),
            anchor: Some(anchor.to_owned()),
        })
    }
}

/// A CA certificate of verified paths (an intermediate), read once and shared by every path
/// through it ([`super::intern`]). Everything here follows from `der` alone.
#[derive(Debug)]
pub struct CaCert {
    /// The certificate (interning compares it in full: two different certificates are never
    /// one entry).
    pub der: Box<[u8]>,
    pub facts: CertFacts,
    /// It as the issuer of the certificate below it.
    pub as_issuer: Arc<Issuer>,
}

impl CaCert {
    pub fn parse(der: &[u8]) -> Result<Self, DerError> {
        let facts = CertFacts::parse(der)?;
        let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(der)).ok().map(|a| a.to_owned());
        let as_issuer = Arc::new(Issuer {
            name: facts.subject.clone(),
            name_der: facts.subject_der.as_slice().into(),
            spki: facts.spki.as_slice().into(),
            anchor,
        });
        Ok(Self { der: der.into(), facts, as_issuer })
    }
}

/// What a connection keeps of its own client certificate: what the CRL check, OCSP, the
/// expiry deadline and the security events read. Its issuer's name is the [`Issuer`]'s (see
/// [`VerifiedPath::new`]); the rest of [`CertFacts`] (its own key, subject key id, key usage,
/// notBefore, canonical subject) is never read after the handshake and is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// serialNumber, minimal (CRL entries, OCSP CertID, connection index, events).
    pub serial: Vec<u8>,
    /// The subject Name's full encoding (events, `inspect`).
    pub subject_der: Box<[u8]>,
    /// basicConstraints cA (CRL scopes for user or CA certificates only).
    pub is_ca: bool,
    /// CRL distribution points.
    pub dps: Vec<DistPoint>,
    /// The OCSP responders of its Authority Information Access.
    pub ocsp_urls: Vec<String>,
    /// notAfter (`--close-expired-connections`).
    pub not_after: i64,
    /// SHA-256 of the certificate, for the security event when the connection is closed.
    pub sha256: [u8; 32],
}

/// The client certificate of a path and its issuer.
#[derive(Debug, Clone)]
pub struct LeafCert {
    pub facts: LeafFacts,
    /// The CA that issued it; `issuer.name` is the certificate's own issuer name.
    pub issuer: Arc<Issuer>,
}

/// A CA certificate of a path and the key that signed it in this path (the next one's, or
/// the anchor's).
#[derive(Debug, Clone)]
pub struct CaLink {
    pub cert: Arc<CaCert>,
    pub issuer_spki: Arc<[u8]>,
}

/// A path verified by the chain builder: the client certificate, its CA certificates (its
/// issuer first) and the trust anchor's key ([`crate::ca::issuer_key`]).
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    pub leaf: LeafCert,
    pub cas: Box<[CaLink]>,
    pub anchor: Arc<[u8]>,
}

/// One certificate of a path, whichever kind, as the readers of a path see it.
#[derive(Debug, Clone, Copy)]
pub struct PathCert<'a> {
    /// What its CRL check reads.
    pub crl: CrlSubject<'a>,
    /// The key that signed it.
    pub issuer_spki: &'a [u8],
    pub subject_der: &'a [u8],
    pub not_after: i64,
}

impl VerifiedPath {
    /// The path of the client certificate `leaf_der` under `cas` (its issuer's certificate
    /// first; empty when an anchor issued it), whose last one (or the client certificate) was
    /// issued by `top`, the trust anchor of key `anchor`. Each certificate's issuer key is the
    /// next one's. The client certificate's issuer name is taken from its issuer (shared)
    /// only when it is byte for byte the name the certificate gives, as the chain builder
    /// matched them; otherwise the path gets an issuer of its own under the certificate's name.
    pub fn new(leaf_der: &[u8], cas: Vec<Arc<CaCert>>, top: &Arc<Issuer>, anchor: Arc<[u8]>) -> Result<Self, DerError> {
        let f = CertFacts::parse(leaf_der)?;
        let issuer = cas.first().map_or(top, |c| &c.as_issuer);
        let issuer = if *f.issuer_der == *issuer.name_der {
            issuer.clone()
        } else {
            Arc::new(Issuer {
                name: f.issuer,
                name_der: f.issuer_der.into(),
                spki: issuer.spki.clone(),
                anchor: issuer.anchor.clone(),
            })
        };
        let links = cas
            .iter()
            .enumerate()
            .map(|(i, c)| CaLink {
                cert: c.clone(),
                issuer_spki: cas.get(i + 1).map_or(top, |next| &next.as_issuer).spki.clone(),
            })
            .collect();
        let facts = LeafFacts {
            serial: f.serial,
            subject_der: f.subject_der.into(),
            is_ca: f.is_ca,
            dps: f.dps,
            ocsp_urls: f.ocsp_urls,
            not_after: f.not_after,
            sha256: Sha256::digest(leaf_der).into(),
        };
        Ok(Self { leaf: LeafCert { facts, issuer }, cas: links, anchor })
    }

    /// Number of certificates (the client's and its CAs', not the anchor).
    pub fn len(&self) -> usize {
        1 + self.cas.len()
    }

    /// Never: a path has its client certificate.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The certificates, the client's first.
    pub fn certs(&self) -> impl Iterator<Item = PathCert<'_>> {
        let leaf = &self.leaf;
        let first = PathCert {
            crl: CrlSubject {
                issuer: &leaf.issuer.name,
                serial: &leaf.facts.serial,
                is_ca: leaf.facts.is_ca,
                dps: &leaf.facts.dps,
            },
            issuer_spki: &leaf.issuer.spki,
            subject_der: &leaf.facts.subject_der,
            not_after: leaf.facts.not_after,
        };
        std::iter::once(first).chain(self.cas.iter().map(|c| PathCert {
            crl: c.cert.facts.crl_subject(),
            issuer_spki: &c.issuer_spki,
            subject_der: &c.cert.facts.subject_der,
            not_after: c.cert.facts.not_after,
        }))
    }

    /// The serial of the certificate at `position` (0 = the client's); empty past the end.
    pub fn serial(&self, position: usize) -> &[u8] {
        match position.checked_sub(1) {
            None => &self.leaf.facts.serial,
            Some(i) => self.cas.get(i).map_or(&[], |c| &c.cert.facts.serial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::intern::Interner;
    use kube_crl_proxy_testkit::pki::{Authority, Spec};

    /// What a reader sees of a path, written out, to compare paths built at different times.
    fn seen(p: &VerifiedPath) -> Vec<String> {
        p.certs().map(|c| format!("{c:?}")).collect()
    }

    /// root → users → `leaf`, each certificate's reading by [`CertFacts`] with its issuer's key.
    fn expected(root: &Authority, users: &Authority, leaf: &[u8]) -> Vec<(CertFacts, Vec<u8>)> {
        let (r, u, l) = (
            CertFacts::parse(&root.der).unwrap(),
            CertFacts::parse(&users.der).unwrap(),
            CertFacts::parse(leaf).unwrap(),
        );
        vec![(l, u.spki.clone()), (u, r.spki)]
    }

    fn path(t: &Interner, top: &Arc<Issuer>, users: &Authority, leaf: &[u8]) -> VerifiedPath {
        VerifiedPath::new(leaf, vec![t.intern(&users.der).unwrap()], top, Arc::from(&b"anchor"[..])).unwrap()
    }

    fn root_issuer(root: &Authority) -> Arc<Issuer> {
        let anchor = webpki::anchor_from_trusted_cert(&root.der).unwrap();
        Arc::new(Issuer::of_anchor(&anchor).unwrap())
    }

    #[test]
    fn paths_share_their_ca_and_keep_what_the_checks_read_of_their_own_certificate() {
        let root = Authority::root("path-root");
        let users = root.intermediate_with_crl_urls("path-users", &["http://crl.example/users.crl"]);
        let (alice, bob) = (users.issue(&Spec::client("alice", &["dev"])), users.issue(&Spec::client("bob", &[])));
        let t = Interner::new(16);
        let top = root_issuer(&root);
        let (a, b) = (path(&t, &top, &users, &alice.der), path(&t, &top, &users, &bob.der));
        assert!(Arc::ptr_eq(&a.cas[0].cert, &b.cas[0].cert));
        assert!(Arc::ptr_eq(&a.leaf.issuer, &a.cas[0].cert.as_issuer), "the leaf's issuer is its CA's");
        assert!(Arc::ptr_eq(&a.cas[0].issuer_spki, &top.spki));
        assert_ne!(a.leaf.facts.serial, b.leaf.facts.serial);
        // Every reader sees what the full facts say, with the right issuer keys.
        for (p, leaf) in [(&a, &alice), (&b, &bob)] {
            assert_eq!(p.len(), 2);
            let want = expected(&root, &users, &leaf.der);
            for (got, (f, key)) in p.certs().zip(&want) {
                assert_eq!(*got.crl.issuer, f.issuer);
                assert_eq!(got.crl.serial, f.serial);
                assert_eq!(got.crl.is_ca, f.is_ca);
                assert_eq!(got.crl.dps, f.dps);
                assert_eq!(got.issuer_spki, key);
                assert_eq!(got.subject_der, f.subject_der);
                assert_eq!(got.not_after, f.not_after);
            }
            assert_eq!(p.serial(0), want[0].0.serial);
            assert_eq!(p.serial(1), want[1].0.serial);
            assert!(p.serial(2).is_empty());
            assert_eq!(*p.leaf.issuer.name_der, *want[0].0.issuer_der);
            assert_eq!(p.leaf.facts.sha256, <[u8; 32]>::from(Sha256::digest(&leaf.der)));
        }
        // The OCSP issuer is the CA certificate as a trust anchor.
        let users_anchor = webpki::anchor_from_trusted_cert(&users.der).unwrap().to_owned();
        assert_eq!(a.leaf.issuer.anchor.as_ref().map(|x| x.subject.as_ref()), Some(users_anchor.subject.as_ref()));
    }

    #[test]
    fn a_path_built_after_its_ca_was_pruned_is_the_same() {
        let root = Authority::root("prune-root");
        let users = root.intermediate("prune-users");
        let alice = users.issue(&Spec::client("alice", &[]));
        let t = Interner::new(4);
        let top = root_issuer(&root);
        let before = seen(&path(&t, &top, &users, &alice.der));
        // No path holds it any more; others fill the table and prune it.
        let others: Vec<Authority> = (0..8).map(|i| Authority::root(&format!("prune-other-{i}"))).collect();
        for o in &others {
            drop(t.intern(&o.der).unwrap());
        }
        assert!(t.len() <= 4);
        let after = path(&t, &top, &users, &alice.der);
        assert_eq!(seen(&after), before);
        assert_eq!(seen(&after), seen(&path(&t, &top, &users, &alice.der)));
    }

    #[test]
    fn a_leaf_naming_its_issuer_otherwise_keeps_its_own_name() {
        // Not what the chain builder hands over (it matches names byte for byte), but if it
        // ever did, the CRL check must use the name the certificate gives.
        let root = Authority::root("own-root");
        let users = root.intermediate("own-users");
        let alice = users.issue(&Spec::client("alice", &[]));
        let other = root_issuer(&Authority::root("own-other"));
        let p = VerifiedPath::new(&alice.der, Vec::new(), &other, Arc::from(&b"anchor"[..])).unwrap();
        let f = CertFacts::parse(&alice.der).unwrap();
        assert!(!Arc::ptr_eq(&p.leaf.issuer, &other));
        assert_eq!(p.leaf.issuer.name, f.issuer);
        assert_eq!(*p.leaf.issuer.name_der, *f.issuer_der);
        assert!(Arc::ptr_eq(&p.leaf.issuer.spki, &other.spki), "the key is the issuer's");
        assert!(VerifiedPath::new(b"\x30\x00", Vec::new(), &other, Arc::from(&b"anchor"[..])).is_err());
    }
}
