//! What a change of the CRL index can do to open connections: compared with the index it
//! replaces, which certificates became newly listed. Open connections are indexed by the
//! same (issuer, serial) keys ([`cert_key`]; `crate::conns`), so a CRL that adds one entry
//! re-checks the connections holding that certificate, not every connection.
//!
//! Anything that could make a certificate undetermined or stale rather than listed (a scope
//! or a CRL signer gone or changed, an earlier nextUpdate, a changed policy) or that reaches
//! certificates outside the connections' own paths (a CRL signer's certificate newly listed)
//! answers [`Affected::All`]: every connection is re-checked, as before this index existed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::RevocationIndex;
use super::index::Crl;
use super::name::NameKey;

/// Which open connections a change of the revocation state may concern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    /// Every one.
    All,
    /// Those with a certificate of these [`cert_key`]s in their path.
    Certs(Vec<u64>),
}

/// A certificate's key by its issuer's name and serial: how a CRL entry names it. A hash, so
/// two certificates may share one; that costs an extra check, never a missed one.
pub fn cert_key(issuer: &NameKey, serial: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    issuer.hash(&mut h);
    serial.hash(&mut h);
    h.finish()
}

impl RevocationIndex {
    /// The certificates this index lists that `old` did not, or [`Affected::All`] when the
    /// change may do more than list certificates (see the module doc).
    pub fn affected_since(&self, old: &RevocationIndex) -> Affected {
        if self.policy != old.policy {
            return Affected::All;
        }
        // Every scope of the old index is still there, once, with its signer and no earlier
        // nextUpdate; no scope appears twice (a delta not merged into a base).
        for (issuer, old_crls) in &old.by_issuer {
            let Some(new_crls) = self.by_issuer.get(issuer) else { return Affected::All };
            for o in old_crls {
                let mut same = new_crls.iter().filter(|n| n.same_scope(o));
                let (Some(n), None) = (same.next(), same.next()) else { return Affected::All };
                if !no_weaker(n, o) || old_crls.iter().filter(|x| x.same_scope(o)).count() > 1 {
                    return Affected::All;
                }
            }
        }
        let mut keys = Vec::new();
        for (issuer, new_crls) in &self.by_issuer {
            for n in new_crls {
                if new_crls.iter().filter(|x| x.same_scope(n)).count() > 1 {
                    return Affected::All;
                }
                let previous = old.by_issuer.get(issuer).and_then(|v| v.iter().find(|o| o.same_scope(n)));
                match previous {
                    Some(o) if n.shares_serials_with(o) => {}
                    Some(o) => added(n, Some(o), &mut keys),
                    // A new scope lists, and covers, more: it can only revoke.
                    None => added(n, None, &mut keys),
                }
            }
        }
        // A newly listed CRL signer (or a CA above one) that is not the certificates' own CA
        // (a dedicated signer, an indirect CRL's) leaves its CRLs unusable: that makes
        // certificates undetermined, and the signer is not in the connection index.
        let signer_keys: std::collections::HashSet<u64> = self
            .crls()
            .chain(old.crls())
            .filter(|c| c.signer.dedicated || c.scope.indirect)
            .flat_map(|c| c.signer.path.iter().map(|(facts, _)| cert_key(&facts.issuer, &facts.serial)))
            .collect();
        if keys.iter().any(|k| signer_keys.contains(k)) {
            return Affected::All;
        }
        keys.sort_unstable();
        keys.dedup();
        Affected::Certs(keys)
    }
}

/// Whether `new` is at least as usable as `old` of the same scope: the same signer, no
/// earlier nextUpdate.
fn no_weaker(new: &Crl, old: &Crl) -> bool {
    let (s, t) = (&new.signer, &old.signer);
    let same_signer = s.spki == t.spki
        && s.dedicated == t.dedicated
        && s.anchor == t.anchor
        && s.not_before == t.not_before
        && s.not_after == t.not_after
        && s.path.len() == t.path.len()
        && s.path
            .iter()
            .zip(&t.path)
            .all(|((a, ka), (b, kb))| a.serial == b.serial && a.issuer == b.issuer && ka == kb);
    let later = match (new.next_update, old.next_update) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    };
    same_signer && later && new.scope == old.scope
}

/// The keys of the certificates `new` lists and `old` (of the same scope) did not.
fn added(new: &Arc<Crl>, old: Option<&Arc<Crl>>, keys: &mut Vec<u64>) {
    for (group, serials) in new.groups.iter() {
        // A direct CRL's one group is its issuer's certificates; an indirect CRL's groups
        // name their certificate issuer.
        let issuer = if new.scope.indirect { group } else { &new.issuer_name };
        let before = old.and_then(|o| o.groups.iter().find(|(g, _)| g == group)).map(|(_, s)| s);
        let listed = match before {
            Some(b) => serials.added_since(b),
            None => serials.added_since(&Default::default()),
        };
        keys.extend(listed.iter().map(|serial| cert_key(issuer, serial)));
    }
}
