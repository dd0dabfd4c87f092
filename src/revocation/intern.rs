//! One shared copy of each CA certificate's facts for all the paths through it.
//!
//! **Why share.** Every open client-certificate connection keeps its verified path for
//! re-checks ([`super::path`]), and in a cluster thousands of them are issued by the same
//! intermediate CA. Parsing that intermediate at each handshake and keeping the result per
//! connection would hold thousands of identical copies of its names, distribution points and
//! key. The [`Interner`] hands out one [`Arc<CaCert>`] per distinct certificate instead.
//!
//! **Why it is correct.** An entry is found by the SHA-256 of the certificate's DER and then
//! compared with the full DER, so two different certificates are never one entry; and a
//! [`CaCert`] is a function of its DER alone (nothing of the path, trust anchors or CRLs in
//! it), so an entry made before a reload is as right after it. What does depend on the path
//! (which key signed each certificate, the anchor) stays with each path.
//!
//! **Why it is bounded.** The certificates come from clients: one holding a CA that can
//! issue CAs could send a new valid intermediate with every handshake. The table holds only
//! weak references (an entry lives as long as some path holds it), drops the dead ones when
//! it has grown to twice its live entries, and never holds more than its capacity: past it,
//! a certificate gets an unshared copy (correct, just not shared), and while it is full of
//! live entries each new certificate costs one sweep of the table.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use sha2::{Digest, Sha256};

use super::path::CaCert;
use crate::der::DerError;

/// Capacity of the process-wide table ([`shared`]): far more distinct CA certificates than
/// any deployment has in use at once; at most this many dead entries' 32-byte keys and
/// emptied allocations (a few hundred bytes each) wait for the next pruning.
pub const CAPACITY: usize = 4096;

/// Entries below which the table is not pruned (a few CAs coming and going cost nothing).
const MIN_PRUNE: usize = 64;

/// The table every handshake's path is interned in.
pub fn shared() -> &'static Interner {
    static SHARED: LazyLock<Interner> = LazyLock::new(|| Interner::new(CAPACITY));
    &SHARED
}

/// A bounded table of CA certificates by DER (see the module doc).
#[derive(Debug)]
pub struct Interner {
    table: Mutex<Table>,
    capacity: usize,
}

#[derive(Debug)]
struct Table {
    by_digest: HashMap<[u8; 32], Weak<CaCert>>,
    /// Size at which the dead entries are dropped next.
    prune_at: usize,
}

impl Interner {
    pub fn new(capacity: usize) -> Self {
        Self { table: Mutex::new(Table { by_digest: HashMap::new(), prune_at: MIN_PRUNE.min(capacity) }), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every operation leaves the map valid between statements: a poisoned lock is usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared facts of the CA certificate `der`, read now if no path holds them.
    pub fn intern(&self, der: &[u8]) -> Result<Arc<CaCert>, DerError> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        if let Some(c) = self.live(&self.lock(), &digest, der) {
            return Ok(c);
        }
        // Parsed outside the lock; another handshake may intern the same meanwhile.
        let fresh = Arc::new(CaCert::parse(der)?);
        let mut t = self.lock();
        if let Some(c) = self.live(&t, &digest, der) {
            return Ok(c);
        }
        if t.by_digest.len() >= t.prune_at {
            t.by_digest.retain(|_, w| w.strong_count() > 0);
            t.prune_at = (2 * t.by_digest.len()).max(MIN_PRUNE).min(self.capacity);
        }
        if t.by_digest.len() < self.capacity {
            t.by_digest.insert(digest, Arc::downgrade(&fresh));
        }
        Ok(fresh)
    }

    /// The live entry of `digest`, when it is this very certificate.
    fn live(&self, t: &Table, digest: &[u8; 32], der: &[u8]) -> Option<Arc<CaCert>> {
        t.by_digest.get(digest).and_then(Weak::upgrade).filter(|c| *c.der == *der)
    }

    /// Entries in the table, dead ones not yet pruned included.
    pub fn len(&self) -> usize {
        self.lock().by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_crl_proxy_testkit::pki::Authority;

    fn ca_der(name: &str) -> Vec<u8> {
        Authority::root(name).der.to_vec()
    }

    #[test]
    fn the_same_certificate_is_one_entry_and_different_ones_are_not() {
        let t = Interner::new(16);
        let (a, b) = (ca_der("intern-a"), ca_der("intern-b"));
        let a1 = t.intern(&a).unwrap();
        let a2 = t.intern(&a).unwrap();
        let b1 = t.intern(&b).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert_eq!(*a1.der, *a);
        assert_eq!(*b1.der, *b);
        assert_ne!(a1.facts.subject, b1.facts.subject);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bad_der_is_an_error_and_not_an_entry() {
        let t = Interner::new(16);
        assert!(t.intern(b"\x30\x03\x02\x01\x01").is_err());
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_stays_bounded_and_entries_live_as_long_as_their_paths() {
        let cap = 8;
        let t = Interner::new(cap);
        let ders: Vec<Vec<u8>> = (0..3 * cap).map(|i| ca_der(&format!("intern-{i}"))).collect();
        // More live certificates than the capacity: the table stops at it, and the ones past
        // it get correct but unshared copies.
        let held: Vec<Arc<CaCert>> = ders.iter().map(|d| t.intern(d).unwrap()).collect();
        assert_eq!(t.len(), cap);
        for (d, h) in ders.iter().zip(&held) {
            assert_eq!(*h.der, **d);
            assert_eq!(h.facts, crate::revocation::CertFacts::parse(d).unwrap());
        }
        let last = ders.last().unwrap();
        assert!(!Arc::ptr_eq(&t.intern(last).unwrap(), held.last().unwrap()), "past the capacity: not shared");
        assert!(Arc::ptr_eq(&t.intern(&ders[0]).unwrap(), &held[0]), "within it: shared");
        // Once no path holds them, a new certificate prunes the dead entries and is shared.
        drop(held);
        let fresh = ca_der("intern-fresh");
        let f1 = t.intern(&fresh).unwrap();
        assert_eq!(t.len(), 1);
        assert!(Arc::ptr_eq(&f1, &t.intern(&fresh).unwrap()));
        // And an entry pruned is read again, right, when it comes back.
        let again = t.intern(&ders[0]).unwrap();
        assert_eq!(again.facts, crate::revocation::CertFacts::parse(&ders[0]).unwrap());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn many_short_lived_certificates_never_grow_the_table_past_twice_the_live_ones() {
        let t = Interner::new(1000);
        let keep = t.intern(&ca_der("intern-kept")).unwrap();
        for i in 0..(3 * MIN_PRUNE) {
            drop(t.intern(&ca_der(&format!("intern-gone-{i}"))).unwrap());
            assert!(t.len() <= MIN_PRUNE, "{} entries", t.len());
        }
        assert!(Arc::ptr_eq(&keep, &t.intern(&keep.der).unwrap()));
    }
}
