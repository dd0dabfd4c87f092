//! The pre-verified revocation index and RFC 5280 §6.3 CRL processing over it.
//!
//! Loading ([`RevocationIndex::load`]): every CRL is parsed, its signer found (a CA of
//! `--client-ca-file` of the CRL issuer's name, or a separate CRL-signing certificate shipped
//! in the bundle or beside the CRLs, whose own path must reach a trust anchor), its signature
//! verified once, and its serials put in a sorted table ([`Serials`]). Every valid CRL of a
//! distinct scope is kept; within one scope (issuer name, signing key, issuingDistributionPoint)
//! the newest complete CRL wins and the newest matching delta is merged into it. A CRL that
//! cannot be used (bad signature, unknown issuer, unsupported critical extension or key) is
//! left out, logged and counted, never treated as covering anything.
//!
//! Deciding ([`RevocationIndex::status`]): for one certificate of a verified path, the
//! applicable CRLs are those of each of its distribution points (or of its issuer, without
//! any): direct CRLs of its issuer signed by the key that issued it or by a dedicated CRL
//! signer, or indirect CRLs named by the point's cRLIssuer; whose issuingDistributionPoint
//! name matches the point; whose user/CA-only flags fit the certificate; signed under the
//! path's trust anchor. A certificate listed in any applicable CRL is revoked. Otherwise it is
//! good only when the applicable CRLs together cover every reason; else undetermined. Stale
//! CRLs are left out under `--crl-expired=deny`; `--crl-missing` is applied by the caller
//! ([`RevocationIndex::check_path`], in `mod.rs`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use rustls::crypto::WebPkiSupportedAlgorithms;

use super::cert::{CertFacts, CrlSubject, DistPoint, Signed, point_name};
use super::crl::{ALL_REASONS, CrlError, ParsedCrl, Reasons, reason_names};
use super::name::{GeneralNameKey, NameKey, display};
use super::table::{REMOVE_FROM_CRL, RevokedEntry, Serials};
use super::{CrlSource, RevocationPolicy, Warning};
use crate::ca::CaBundle;
use crate::error::ConfigError;

/// Deepest chain of CRL signers followed (a separate signer's certificate is itself checked
/// against CRLs, which may have separate signers of their own).
const MAX_SIGNER_DEPTH: usize = 4;

/// Which certificates a CRL covers, from its issuingDistributionPoint (RFC 5280 §5.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The extension's encoding (empty without one): a delta must have its base's.
    idp: Vec<u8>,
    /// The distribution point names it is the CRL of; empty: every point.
    pub names: Vec<GeneralNameKey>,
    pub only_user: bool,
    pub only_ca: bool,
    pub only_attribute: bool,
    pub reasons: Reasons,
    pub indirect: bool,
}

impl Scope {
    /// For `check` and logs: "all certificates", "end-entity certificates, distribution point
    /// http://…, reasons keyCompromise", ...
    pub fn describe(&self) -> String {
        let mut parts = vec![
            match (self.only_user, self.only_ca, self.only_attribute) {
                (_, _, true) => "attribute certificates only (covers nothing here)",
                (true, true, _) => "nothing (both onlyContainsUserCerts and onlyContainsCACerts)",
                (true, false, _) => "end-entity certificates only",
                (false, true, _) => "CA certificates only (an ARL)",
                (false, false, _) => "all certificates",
            }
            .to_string(),
        ];
        if !self.names.is_empty() {
            let names: Vec<String> = self.names.iter().map(GeneralNameKey::describe).collect();
            parts.push(format!("partition {}", names.join(" | ")));
        }
        if self.reasons != ALL_REASONS {
            parts.push(format!("reasons {}", reason_names(self.reasons)));
        }
        if self.indirect {
            parts.push("indirect".into());
        }
        parts.join(", ")
    }

    /// True when the CRL can decide nothing for client certificates.
    pub fn covers_nothing(&self) -> bool {
        self.only_attribute || (self.only_user && self.only_ca) || self.reasons == 0
    }
}

/// Certificates from a CRL signer up to (not including) its trust anchor, each with the key
/// that signed it.
type SignerPath = Vec<(CertFacts, Vec<u8>)>;

/// Who signed a CRL, and how that signer is trusted.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The signer certificate's subject, for messages.
    pub subject: String,
    pub spki: Vec<u8>,
    /// A key that signs CRLs but not certificates (keyUsage without keyCertSign): it speaks
    /// for every certificate of its name under the same trust anchor.
    pub dedicated: bool,
    /// The trust anchor its path ends at ([`crate::ca::issuer_key`]).
    pub(super) anchor: Vec<u8>,
    /// The signer's certificate and its CAs below the anchor, each with its issuer's key
    /// (empty when the signer is an anchor). When the signer is not the CA that issued the
    /// certificate being checked, these are checked for revocation too (RFC 5280 §6.3.3 (f)).
    pub(super) path: SignerPath,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

impl Signer {
    /// First 8 hex digits of the SHA-256 of the signing key, to tell keys apart in labels.
    pub fn key_id(&self) -> String {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(&self.spki)[..4])
    }
}

/// One verified CRL (with its delta merged, if any) in the index.
#[derive(Debug)]
pub struct Crl {
    /// The issuer's name, human-readable.
    pub issuer: String,
    pub(super) issuer_name: NameKey,
    /// Where it came from: `--crl-file PATH CRL #n` or the URL.
    pub source: String,
    /// The file or URL alone, and the flag that named it.
    pub file: PathBuf,
    pub flag: &'static str,
    pub version: u8,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// Minimal CRL number (big-endian), if present.
    pub crl_number: Option<Vec<u8>>,
    /// The delta CRL merged into it: (its CRL number, where it came from).
    pub delta: Option<(Option<Vec<u8>>, String)>,
    pub scope: Scope,
    pub signer: Signer,
    /// For a delta CRL not merged yet: the BaseCRLNumber it applies to.
    pub(super) delta_base: Option<Vec<u8>>,
    /// For a base with a delta merged: the delta's own entries (to name it when it lists a
    /// serial).
    delta_groups: Option<Arc<Vec<(NameKey, Serials)>>>,
    /// Revoked serials per certificate issuer (one group, the CRL's issuer, unless indirect);
    /// shared with the previous index when its file did not change.
    pub(super) groups: Arc<Vec<(NameKey, Serials)>>,
    /// Last time a stale-CRL warning was logged for it (rate limit).
    pub(super) last_stale_warning: AtomicI64,
    /// Last time an expiring-soon warning was logged for it (rate limit).
    pub(super) last_expiry_warning: AtomicI64,
}

impl Crl {
    /// A copy sharing the serial tables (for a reload whose file did not change, and for a
    /// base a delta is merged into).
    fn reuse(&self) -> Crl {
        Crl {
            issuer: self.issuer.clone(),
            issuer_name: self.issuer_name.clone(),
            source: self.source.clone(),
            file: self.file.clone(),
            flag: self.flag,
            version: self.version,
            this_update: self.this_update,
            next_update: self.next_update,
            crl_number: self.crl_number.clone(),
            delta: self.delta.clone(),
            scope: self.scope.clone(),
            signer: self.signer.clone(),
            delta_base: self.delta_base.clone(),
            delta_groups: self.delta_groups.clone(),
            groups: self.groups.clone(),
            last_stale_warning: AtomicI64::new(i64::MIN),
            last_expiry_warning: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether this CRL's serial tables are the very ones of `other` (reused, not re-parsed).
    pub fn shares_serials_with(&self, other: &Crl) -> bool {
        Arc::ptr_eq(&self.groups, &other.groups)
    }

    /// Number of revoked serials.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scope a newer CRL supersedes this one in: same issuer, key, IDP.
    pub(super) fn scope_key(&self) -> (NameKey, Vec<u8>, Vec<u8>) {
        (self.issuer_name.clone(), self.signer.spki.clone(), self.scope.idp.clone())
    }

    /// True when this CRL is older than `other` (by CRL number, else thisUpdate).
    pub fn older_than(&self, other: &Crl) -> bool {
        match (&self.crl_number, &other.crl_number) {
            (Some(a), Some(b)) if a != b => (a.len(), a) < (b.len(), b),
            _ => self.this_update < other.this_update,
        }
    }

    /// Whether this CRL and `other` have the same scope (a reload may not roll it back).
    pub fn same_scope(&self, other: &Crl) -> bool {
        self.scope_key() == other.scope_key()
    }

    /// The revocation entry of a serial of a certificate issued by `cert_issuer`, and the
    /// CRL that lists it (the merged delta's source when the entry came from the delta).
    fn lookup(&self, cert_issuer: &NameKey, serial: &[u8]) -> Option<(RevokedEntry, &str)> {
        let find = |groups: &[(NameKey, Serials)]| {
            let group =
                if self.scope.indirect { groups.iter().find(|(n, _)| n == cert_issuer) } else { groups.first() };
            group.and_then(|(_, s)| s.lookup(serial))
        };
        let entry = find(&self.groups).filter(|r| r.reason != Some(REMOVE_FROM_CRL))?;
        let from_delta = self.delta_groups.as_deref().and_then(|d| find(d)).is_some_and(|d| d == entry);
        match (&self.delta, from_delta) {
            (Some((_, delta_source)), true) => Some((entry, delta_source)),
            _ => Some((entry, &self.source)),
        }
    }

    /// A short description for logs, `check` and `inspect`: source, scope, signer, number.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}; signed by {}{}; number {})",
            self.source,
            self.scope.describe(),
            self.signer.subject,
            if self.signer.dedicated { ", a dedicated CRL signer" } else { "" },
            self.number_text()
        )
    }

    /// The CRL number in decimal (hex beyond 128 bits), or `none`.
    pub fn number_text(&self) -> String {
        match self.crl_number.as_deref() {
            None => "none".into(),
            Some(b) if b.len() <= 16 => b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x)).to_string(),
            Some(b) => format!("0x{}", hex::encode(b)),
        }
    }

    /// Whether this CRL is (one of) the CRLs of this CA certificate: its issuer's name, and
    /// signed by the CA's key or a dedicated CRL signer of its name.
    pub fn speaks_for(&self, ca: &CertFacts) -> bool {
        self.issuer_name == ca.subject && (self.signer.spki == ca.spki || self.signer.dedicated)
    }
}

/// A CRL that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `--crl-file PATH CRL #n` or the URL.
    pub source: String,
    pub file: PathBuf,
    pub flag: &'static str,
    /// Its position in the file (1-based).
    pub number: usize,
    pub reason: String,
    /// Hash of the CRL's bytes: a reload fails only on CRLs not already rejected before.
    pub digest: [u8; 32],
}

/// A certificate's revocation status from the CRLs alone (before time policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked {
        revocation: RevokedEntry,
        crl: String,
    },
    /// No usable CRL applies, or those that apply do not cover every reason.
    Undetermined {
        why: String,
    },
    /// Only a CRL past nextUpdate (+ grace) could decide, and `--crl-expired=deny`.
    Stale {
        next_update: i64,
        crl: String,
    },
}

/// Every CRL, indexed by issuer name, plus the policy that applies to lookups.
#[derive(Debug)]
pub struct RevocationIndex {
    pub(super) policy: RevocationPolicy,
    pub(super) by_issuer: HashMap<NameKey, Vec<Arc<Crl>>>,
    rejected: Vec<Rejected>,
    /// What each source (file or URL) gave, with its identity (a file's stamp, fetched bytes'
    /// allocation): the next load reuses it when that is unchanged (a changed fetched CRL
    /// does not re-parse a 1M-entry file CRL).
    sources: Vec<ParsedSource>,
}

/// One CRL source, parsed and verified.
#[derive(Debug)]
struct ParsedSource {
    flag: &'static str,
    name: PathBuf,
    identity: super::SourceIdentity,
    /// Its CRLs, verified, deltas not merged.
    crls: Vec<Arc<Crl>>,
    rejected: Vec<Rejected>,
    /// The CRL signer certificates it carries: (DER, where from).
    certs: Vec<(Vec<u8>, String)>,
}

/// A certificate that may sign CRLs: a CA of the bundle or a certificate shipped beside CRLs.
struct PoolCert {
    /// Its position in the bundle, for CAs of `--client-ca-file`.
    from_bundle: Option<usize>,
    facts: CertFacts,
    der: Vec<u8>,
    subject: String,
    /// Its anchor key, when it is a trust anchor itself.
    anchor: Option<Vec<u8>>,
    parent: Option<usize>,
}

/// The certificates CRL signers are looked for in, with each one's path to an anchor.
struct Pool {
    certs: Vec<PoolCert>,
}

impl Pool {
    fn new(
        bundle: &CaBundle,
        extras: Vec<(Vec<u8>, String)>,
        algs: &WebPkiSupportedAlgorithms,
    ) -> (Self, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut certs = Vec::new();
        for (i, ca) in bundle.cas.iter().enumerate() {
            match CertFacts::parse(ca.der.as_ref()) {
                Ok(facts) => certs.push(PoolCert {
                    from_bundle: Some(i),
                    facts,
                    der: ca.der.to_vec(),
                    subject: ca.subject.clone(),
                    anchor: ca.is_anchor.then(|| ca.key()),
                    parent: None,
                }),
                Err(e) => warnings.push(format!("CA {:?} cannot sign CRLs here: {e}", ca.subject)),
            }
        }
        for (der, source) in extras {
            match CertFacts::parse(&der) {
                Ok(facts) if !certs.iter().any(|c| c.der == der) => {
                    let subject = display(&facts.subject_der);
                    certs.push(PoolCert { from_bundle: None, facts, der, subject, anchor: None, parent: None });
                }
                Ok(_) => {}
                Err(e) => warnings.push(format!("{source}: certificate left out: {e}")),
            }
        }
        for i in 0..certs.len() {
            if certs[i].anchor.is_some() {
                continue;
            }
            let Ok(signed) = Signed::parse(&certs[i].der) else { continue };
            certs[i].parent = (0..certs.len()).find(|&j| {
                j != i
                    && certs[j].facts.subject == certs[i].facts.issuer
                    && signed.signed_by(&certs[j].facts.spki, algs)
            });
        }
        (Self { certs }, warnings)
    }

    /// The anchor key and the path (certificate, issuer key) from `i` up to, not including,
    /// its trust anchor; `None` when it reaches none.
    fn path(&self, i: usize) -> Option<(Vec<u8>, SignerPath)> {
        let mut path = Vec::new();
        let mut at = i;
        for _ in 0..=8 {
            let c = &self.certs[at];
            if let Some(anchor) = &c.anchor {
                return Some((anchor.clone(), path));
            }
            let parent = c.parent?;
            path.push((c.facts.clone(), self.certs[parent].facts.spki.clone()));
            at = parent;
        }
        None
    }

    /// Whether a signer found by an earlier load is still in this pool with the same key,
    /// name, right to sign CRLs and trust anchor.
    fn still_signs(&self, signer: &Signer, issuer: &NameKey) -> bool {
        (0..self.certs.len()).any(|i| {
            let c = &self.certs[i];
            c.facts.spki == signer.spki
                && c.facts.subject == *issuer
                && c.facts.may_sign_crls
                && self.path(i).is_some_and(|(anchor, path)| anchor == signer.anchor && path == signer.path)
        })
    }

    /// The certificate that signed this CRL: its issuer's name, may sign CRLs, signature
    /// verifies, path to an anchor. Candidates whose subjectKeyIdentifier matches the CRL's
    /// authorityKeyIdentifier are tried first; the signature is the proof.
    fn signer_of(
        &self,
        crl: &ParsedCrl<'_>,
        issuer: &NameKey,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<Signer, String> {
        let mut candidates: Vec<usize> =
            (0..self.certs.len()).filter(|&i| self.certs[i].facts.subject == *issuer).collect();
        if let Some(aki) = crl.authority_key_id {
            candidates.sort_by_key(|&i| self.certs[i].facts.subject_key_id.as_deref() != Some(aki));
        }
        let mut last_err = None;
        for i in candidates {
            let c = &self.certs[i];
            match crl.verify_signature(&c.facts.spki, algs) {
                Ok(()) if !c.facts.may_sign_crls => {
                    last_err = Some(format!("signer {:?} has a keyUsage without cRLSign", c.subject));
                }
                Ok(()) => match self.path(i) {
                    Some((anchor, path)) => {
                        return Ok(Signer {
                            subject: c.subject.clone(),
                            spki: c.facts.spki.clone(),
                            dedicated: !c.facts.may_sign_certs,
                            anchor,
                            path,
                            not_before: c.facts.not_before,
                            not_after: c.facts.not_after,
                        });
                    }
                    None => {
                        last_err =
                            Some(format!("signer {:?} does not chain to a trust anchor of --client-ca-file", c.subject))
                    }
                },
                Err(e @ (CrlError::UnsupportedKey(_) | CrlError::UnsupportedAlgorithm(_))) => {
                    last_err = Some(format!("unsupported: {e} (signer {:?})", c.subject));
                }
                Err(e) => last_err = Some(format!("{e} (issuer {:?})", c.subject)),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            format!(
                "its issuer {} is not a CA in --client-ca-file, nor a CRL signer certificate beside the CRLs",
                display(crl.issuer_der)
            )
        }))
    }
}

impl RevocationIndex {
    /// Loads every CRL (and CRL signer certificate) of `sources`, verifies them against the
    /// CA bundle, and checks that each CA has a CRL unless `--crl-missing=allow`. A CRL that
    /// cannot be used is left out and listed in [`Self::rejected`]; it stops the load only
    /// when its CA is then left without a CRL. A file that is not PEM or DER at all is an
    /// error.
    pub fn load(
        bundle: &CaBundle,
        sources: &[CrlSource],
        policy: RevocationPolicy,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        Self::load_after(bundle, sources, policy, algs, None)
    }

    /// [`Self::load`], reusing what `previous` parsed and verified from sources whose bytes
    /// did not change, as long as their signers are still trusted.
    pub fn load_after(
        bundle: &CaBundle,
        sources: &[CrlSource],
        policy: RevocationPolicy,
        algs: &WebPkiSupportedAlgorithms,
        previous: Option<&RevocationIndex>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        use sha2::Digest;
        // Each source: unchanged (reused) or its CRLs and certificates read anew.
        let mut fresh = Vec::new();
        let mut reused: Vec<&ParsedSource> = Vec::new();
        let mut extras = Vec::new();
        for source in sources {
            let identity = source.identity();
            let old = previous.and_then(|p| {
                p.sources.iter().find(|ps| ps.flag == source.flag && ps.name == source.name && ps.identity == identity)
            });
            if let Some(old) = old {
                extras.extend(old.certs.iter().cloned());
                reused.push(old);
                continue;
            }
            let (crls, certs) = crate::pem::crl_file_items(source.flag, &source.name, &source.bytes)?;
            let certs: Vec<(Vec<u8>, String)> = certs
                .into_iter()
                .map(|c| (c.as_ref().to_vec(), format!("{} {}", source.flag, source.name.display())))
                .collect();
            extras.extend(certs.iter().cloned());
            fresh.push((source, identity, crls, certs));
        }
        let (pool, mut warnings) = Pool::new(bundle, extras, algs);

        let mut parsed = Vec::new();
        for old in reused {
            // Reused only while every signer is still trusted the same way; else read anew.
            if old.crls.iter().all(|c| pool.still_signs(&c.signer, &c.issuer_name)) {
                parsed.push(ParsedSource {
                    flag: old.flag,
                    name: old.name.clone(),
                    identity: old.identity.clone(),
                    crls: old.crls.clone(),
                    rejected: old.rejected.clone(),
                    certs: old.certs.clone(),
                });
                continue;
            }
            let source = sources.iter().find(|s| s.flag == old.flag && s.name == old.name).expect("a source");
            let (crls, _) = crate::pem::crl_file_items(source.flag, &source.name, &source.bytes)?;
            fresh.push((source, old.identity.clone(), crls, old.certs.clone()));
        }
        for (source, identity, crls, certs) in fresh {
            let mut done = ParsedSource {
                flag: source.flag,
                name: source.name.clone(),
                identity,
                crls: Vec::new(),
                rejected: Vec::new(),
                certs,
            };
            for (i, der) in crls.iter().enumerate() {
                let name = format!("{} {} CRL #{}", source.flag, source.name.display(), i + 1);
                match candidate(der.as_ref(), &name, source, &pool, algs) {
                    Ok(c) => done.crls.push(Arc::new(c)),
                    Err(reason) => done.rejected.push(Rejected {
                        source: name,
                        file: source.name.clone(),
                        flag: source.flag,
                        number: i + 1,
                        reason,
                        digest: sha2::Sha256::digest(der.as_ref()).into(),
                    }),
                }
            }
            parsed.push(done);
        }
        // In the order the sources were given (messages and ties stay stable).
        parsed.sort_by_key(|p| sources.iter().position(|s| s.flag == p.flag && s.name == p.name));
        let rejected: Vec<Rejected> = parsed.iter().flat_map(|p| p.rejected.iter().cloned()).collect();
        for r in &rejected {
            warnings.push(format!("{}: left out: {}", r.source, r.reason));
        }
        let candidates: Vec<Arc<Crl>> = parsed.iter().flat_map(|p| p.crls.iter().cloned()).collect();

        // Newest complete CRL per scope; then the newest delta that fits it.
        let (mut deltas, completes): (Vec<Arc<Crl>>, Vec<Arc<Crl>>) =
            candidates.into_iter().partition(|c| c.delta_base.is_some());
        let mut by_scope: HashMap<(NameKey, Vec<u8>, Vec<u8>), Arc<Crl>> = HashMap::new();
        for crl in completes {
            match by_scope.get(&crl.scope_key()) {
                Some(existing) if !existing.older_than(&crl) => {
                    warnings
                        .push(format!("{}: not newer than {} of the same scope; ignored", crl.source, existing.source));
                }
                _ => {
                    by_scope.insert(crl.scope_key(), crl);
                }
            }
        }
        deltas.sort_by(|a, b| {
            let n = |c: &Crl| c.crl_number.clone().map(|n| (n.len(), n));
            n(b).cmp(&n(a))
        });
        let mut merged: HashSet<(NameKey, Vec<u8>, Vec<u8>)> = HashSet::new();
        for delta in deltas {
            let key = delta.scope_key();
            if merged.contains(&key) {
                warnings.push(format!("{}: superseded by a newer delta CRL of the same scope; ignored", delta.source));
                continue;
            }
            let Some(base) = by_scope.get_mut(&key) else {
                warnings.push(format!(
                    "{}: delta CRL of {} left out: no complete CRL of the same scope and key is loaded",
                    delta.source, delta.issuer
                ));
                continue;
            };
            match merge_delta(base, &delta) {
                Ok(m) => {
                    *base = Arc::new(m);
                    merged.insert(key);
                }
                Err(e) => warnings.push(e),
            }
        }

        let mut by_issuer: HashMap<NameKey, Vec<Arc<Crl>>> = HashMap::new();
        for crl in by_scope.into_values() {
            if crl.scope.covers_nothing() {
                warnings.push(format!(
                    "{}: covers nothing a client certificate could need: {}",
                    crl.source,
                    crl.scope.describe()
                ));
            }
            by_issuer.entry(crl.issuer_name.clone()).or_default().push(crl);
        }
        for list in by_issuer.values_mut() {
            list.sort_by(|a, b| a.source.cmp(&b.source));
        }
        let index = Self { policy, by_issuer, rejected, sources: parsed };
        index.check_coverage(bundle, &pool, &mut warnings)?;
        Ok((index, warnings))
    }

    /// Every CA that issues certificates must have a CRL speaking for it (or an indirect CRL
    /// must be loaded), unless `--crl-missing=allow`.
    fn check_coverage(&self, bundle: &CaBundle, pool: &Pool, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
        let any_indirect = self.crls().any(|c| c.scope.indirect);
        for (i, ca) in bundle.cas.iter().enumerate() {
            let facts = pool.certs.iter().find(|p| p.from_bundle == Some(i)).map(|p| &p.facts);
            if facts.is_some_and(|f| !f.may_sign_certs) {
                continue; // a CRL-signing key: it issues no certificates.
            }
            let own = facts.is_some_and(|f| self.crls_of(f).any(|c| !c.scope.covers_nothing()));
            if own || any_indirect {
                continue;
            }
            let rejected: Vec<String> = self
                .rejected
                .iter()
                .filter(|r| r.reason.contains(&format!("{:?}", ca.subject)) || r.reason.contains(&ca.subject))
                .map(|r| format!("{}: {}", r.source, r.reason))
                .collect();
            match self.policy.crl_missing {
                crate::config::Policy::Deny => {
                    return Err(ConfigError::MissingCrl {
                        ca_file: bundle.source.clone(),
                        subject: ca.subject.clone(),
                        rejected: if rejected.is_empty() {
                            String::new()
                        } else {
                            format!(" (left out: {})", rejected.join("; "))
                        },
                    });
                }
                crate::config::Policy::Allow => warnings.push(format!(
                    "CA {:?} has no CRL; its certificates are accepted without a revocation check (--crl-missing=allow)",
                    ca.subject
                )),
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> RevocationPolicy {
        self.policy
    }

    /// The CRLs in use, for summaries and metrics.
    pub fn crls(&self) -> impl Iterator<Item = &Arc<Crl>> {
        self.by_issuer.values().flatten()
    }

    /// The CRLs speaking for a CA (its own, by name and key, or by a dedicated signer).
    pub fn crls_of<'a>(&'a self, ca: &'a CertFacts) -> impl Iterator<Item = &'a Arc<Crl>> + 'a {
        self.by_issuer.get(&ca.subject).into_iter().flatten().filter(move |c| c.speaks_for(ca))
    }

    /// When the CRLs' verdicts next change by themselves after `now` (Unix seconds): a CRL in
    /// use reaching nextUpdate plus grace under `--crl-expired=deny`, a CRL signer's
    /// certificate becoming valid or expiring. Open connections are re-checked then, instead
    /// of by polling.
    pub fn next_deadline(&self, now: i64) -> Option<i64> {
        let grace = i64::try_from(self.policy.crl_expired_grace.as_secs()).unwrap_or(i64::MAX);
        let deny = self.policy.crl_expired == crate::config::Policy::Deny;
        self.crls()
            .flat_map(|c| {
                let stale = c.next_update.filter(|_| deny).map(|n| n.saturating_add(grace).saturating_add(1));
                [stale, Some(c.signer.not_before), Some(c.signer.not_after.saturating_add(1))]
            })
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// What the metrics show of each CRL in use.
    pub fn samples(&self) -> Vec<crate::metrics::CrlSample> {
        self.crls()
            .map(|c| crate::metrics::CrlSample {
                label: crate::metrics::CrlLabel {
                    issuer: c.issuer.clone(),
                    scope: c.scope.describe(),
                    key: c.signer.key_id(),
                },
                entries: c.len(),
                this_update: c.this_update,
                next_update: c.next_update,
            })
            .collect()
    }

    /// The CRLs left out at load, and why.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// The revocation status of one certificate of a verified path from the CRLs: `issuer_spki`
    /// is the key that signed it, `anchor` the path's trust anchor ([`crate::ca::issuer_key`]).
    /// `trace`, when given, receives one line per CRL considered (for `inspect`).
    pub fn status(
        &self,
        cert: CrlSubject<'_>,
        issuer_spki: &[u8],
        anchor: &[u8],
        now: i64,
        trace: Option<&mut Vec<String>>,
    ) -> Status {
        self.status_within(cert, issuer_spki, anchor, now, &mut Vec::new(), trace)
    }

    /// `within`: the CRLs whose signers are being checked further up this call (a CRL
    /// signer's certificate may be covered by the CRL it signs itself, as in PKITS 4.14.30;
    /// that CRL is then used without checking its signer a second time).
    fn status_within(
        &self,
        cert: CrlSubject<'_>,
        issuer_spki: &[u8],
        anchor: &[u8],
        now: i64,
        within: &mut Vec<*const Crl>,
        mut trace: Option<&mut Vec<String>>,
    ) -> Status {
        let mut note = |s: String| {
            if let Some(t) = trace.as_deref_mut() {
                t.push(s);
            }
        };
        let implicit = [DistPoint { names: Vec::new(), reasons: ALL_REASONS, crl_issuer: Vec::new() }];
        let points: &[DistPoint] = if cert.dps.is_empty() { &implicit } else { cert.dps };
        let mut covered: Reasons = 0;
        let mut stale: Option<(i64, String)> = None;
        let mut applicable = 0usize;
        // Why applicable CRLs could not be used (only built on that rare path).
        let mut unusable: Vec<String> = Vec::new();
        for dp in points {
            let issuers: Vec<&NameKey> = if dp.crl_issuer.is_empty() {
                vec![cert.issuer]
            } else {
                dp.crl_issuer.iter().filter_map(GeneralNameKey::directory).collect()
            };
            for issuer in issuers {
                for crl in self.by_issuer.get(issuer).into_iter().flatten() {
                    let Some(interim) = applies(crl, cert, dp, issuer_spki, anchor) else { continue };
                    applicable += 1;
                    if crl.signer.not_before > now || crl.signer.not_after < now {
                        unusable.push(format!("{}: its signer's certificate is not valid now", crl.source));
                        note(format!("{}: not used: its signer's certificate is not valid now", crl.describe()));
                        continue;
                    }
                    if super::is_stale(crl.next_update, now, &self.policy) {
                        if self.policy.crl_expired == crate::config::Policy::Deny {
                            note(format!("{}: not used: stale (past nextUpdate)", crl.describe()));
                            stale.get_or_insert((crl.next_update.unwrap_or(0), crl.describe()));
                            continue;
                        }
                        super::warn_stale(crl, now);
                    }
                    let this: *const Crl = Arc::as_ptr(crl);
                    if crl.signer.spki != issuer_spki && !crl.signer.path.is_empty() && !within.contains(&this) {
                        // A separate signer: its own certificates must not be revoked.
                        let unusable_signer = if within.len() >= MAX_SIGNER_DEPTH {
                            Some("its signer's CRL signers nest too deep".to_string())
                        } else {
                            within.push(this);
                            let found = crl.signer.path.iter().find_map(|(facts, key)| {
                                match self.status_within(
                                    facts.crl_subject(),
                                    key,
                                    &crl.signer.anchor,
                                    now,
                                    within,
                                    None,
                                ) {
                                    Status::Good => None,
                                    other => Some(format!(
                                        "its signer {} is {}",
                                        display(&facts.subject_der),
                                        status_word(&other)
                                    )),
                                }
                            });
                            within.pop();
                            found
                        };
                        if let Some(why) = unusable_signer {
                            unusable.push(format!("{}: {why}", crl.source));
                            note(format!("{}: not used: {why}", crl.describe()));
                            continue;
                        }
                    }
                    if let Some((revocation, listed_in)) = crl.lookup(cert.issuer, cert.serial) {
                        note(format!("{}: LISTED in {listed_in}", crl.describe()));
                        return Status::Revoked { revocation, crl: listed_in.to_string() };
                    }
                    note(format!("{}: not listed (decides {})", crl.describe(), reason_names(interim)));
                    covered |= interim;
                }
            }
        }
        if covered == ALL_REASONS {
            return Status::Good;
        }
        if let Some((next_update, crl)) = stale {
            return Status::Stale { next_update, crl };
        }
        let why = if applicable == 0 {
            let partitions =
                self.by_issuer.get(cert.issuer).is_some_and(|l| l.iter().any(|c| !c.scope.names.is_empty()));
            if partitions {
                "no loaded CRL covers it: its issuer's CRLs are partitions for other distribution points".to_string()
            } else {
                "no loaded CRL covers it".to_string()
            }
        } else if covered == 0 && !unusable.is_empty() {
            format!("no applicable CRL could be used ({})", unusable.join("; "))
        } else {
            format!("no CRL covers reasons {}", reason_names(ALL_REASONS & !covered))
        };
        note(format!("undetermined: {why}"));
        Status::Undetermined { why }
    }
}

fn status_word(s: &Status) -> &'static str {
    match s {
        Status::Good => "good",
        Status::Revoked { .. } => "revoked",
        Status::Undetermined { .. } => "of undetermined status",
        Status::Stale { .. } => "only covered by a stale CRL",
    }
}

/// RFC 5280 §6.3.3 (b) and (d): whether `crl` applies to `cert` through distribution point
/// `dp`, and if so the reasons it covers for it (the interim reasons mask).
fn applies(crl: &Crl, cert: CrlSubject<'_>, dp: &DistPoint, issuer_spki: &[u8], anchor: &[u8]) -> Option<Reasons> {
    if crl.signer.anchor != anchor {
        return None;
    }
    if dp.crl_issuer.is_empty() {
        // Direct: the certificate's issuer, by the key that issued it or a dedicated signer.
        if crl.issuer_name != *cert.issuer || !(crl.signer.spki == issuer_spki || crl.signer.dedicated) {
            return None;
        }
    } else if !crl.scope.indirect {
        return None;
    }
    let s = &crl.scope;
    if !s.names.is_empty() {
        // A partition covers only the certificates whose distribution point names it.
        let theirs = if !dp.names.is_empty() { &dp.names } else { &dp.crl_issuer };
        if cert.dps.is_empty() || !theirs.iter().any(|n| s.names.contains(n)) {
            return None;
        }
    }
    if s.only_attribute || (s.only_user && cert.is_ca) || (s.only_ca && !cert.is_ca) {
        return None;
    }
    let interim = dp.reasons & s.reasons;
    (interim != 0).then_some(interim)
}

/// Parses and verifies one CRL; the error says why it is left out.
fn candidate(
    der: &[u8],
    name: &str,
    source: &CrlSource,
    pool: &Pool,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Crl, String> {
    let parsed = ParsedCrl::parse(der).map_err(|e| e.to_string())?;
    let issuer_name = NameKey::of(parsed.issuer_der).map_err(|e| e.to_string())?;
    let signer = pool.signer_of(&parsed, &issuer_name, algs)?;
    let scope = match &parsed.idp {
        None => Scope {
            idp: Vec::new(),
            names: Vec::new(),
            only_user: false,
            only_ca: false,
            only_attribute: false,
            reasons: ALL_REASONS,
            indirect: false,
        },
        Some(idp) => Scope {
            idp: idp.raw.to_vec(),
            names: match idp.name {
                Some(n) => point_name(n, &issuer_name).map_err(|e| e.to_string())?,
                None => Vec::new(),
            },
            only_user: idp.only_user,
            only_ca: idp.only_ca,
            only_attribute: idp.only_attribute,
            reasons: idp.reasons.unwrap_or(ALL_REASONS),
            indirect: idp.indirect,
        },
    };
    let mut groups: Vec<(NameKey, Serials)> =
        vec![(issuer_name.clone(), Serials::with_capacity(parsed.entries_hint()))];
    let mut last_issuer: Option<&[u8]> = None;
    let mut at = 0;
    for e in parsed.entries() {
        let e = e.map_err(|e| e.to_string())?;
        if e.issuer != last_issuer {
            last_issuer = e.issuer;
            let key = match e.issuer {
                None => issuer_name.clone(),
                Some(names) => {
                    let names = super::name::general_names(names).map_err(|e| e.to_string())?;
                    match names.iter().find_map(GeneralNameKey::directory) {
                        Some(n) => n.clone(),
                        // Not a directory name: can match no certificate's issuer.
                        None => NameKey::of_rdns(&[]).map_err(|e| e.to_string())?,
                    }
                }
            };
            at = match groups.iter().position(|(n, _)| *n == key) {
                Some(i) => i,
                None => {
                    groups.push((key, Serials::default()));
                    groups.len() - 1
                }
            };
        }
        groups[at].1.push(e.serial, e.revoked_at, e.reason);
    }
    for (_, s) in &mut groups {
        s.finish();
    }
    Ok(Crl {
        delta_base: parsed.delta_base.map(<[u8]>::to_vec),
        delta_groups: None,
        issuer: display(parsed.issuer_der),
        issuer_name,
        source: name.to_string(),
        file: source.name.clone(),
        flag: source.flag,
        version: parsed.version,
        this_update: parsed.this_update,
        next_update: parsed.next_update,
        crl_number: parsed.crl_number.map(<[u8]>::to_vec),
        delta: None,
        scope,
        signer,
        groups: Arc::new(groups),
        last_stale_warning: AtomicI64::new(i64::MIN),
        last_expiry_warning: AtomicI64::new(i64::MIN),
    })
}

/// Applies a delta CRL (RFC 5280 §5.2.4) to its base of the same scope and key: the base's
/// number must be at least the delta's BaseCRLNumber, the delta must be newer; validity and
/// number become the delta's.
fn merge_delta(base: &Crl, delta: &Crl) -> Result<Crl, String> {
    let base_number = delta.delta_base.clone().unwrap_or_default();
    let num = |n: &[u8]| (n.len(), n.to_vec());
    let base_has = base.crl_number.as_deref().map(num);
    if base_has.as_ref().is_none_or(|b| *b < num(&base_number)) {
        return Err(format!(
            "{}: delta CRL left out: it needs a base CRL numbered {} or later; the base in use ({}) is {}",
            delta.source,
            hex::encode(&base_number),
            base.source,
            base.crl_number.as_ref().map_or("unnumbered".into(), hex::encode)
        ));
    }
    if delta.crl_number.as_deref().map(num) <= base_has {
        return Err(format!("{}: delta CRL left out: it is not newer than its base {}", delta.source, base.source));
    }
    let mut groups = Vec::with_capacity(base.groups.len());
    for (name, serials) in base.groups.iter() {
        match delta.groups.iter().find(|(n, _)| n == name) {
            Some((_, d)) => groups.push((name.clone(), serials.merge(d))),
            None => groups.push((name.clone(), serials.clone())),
        }
    }
    for (name, d) in delta.groups.iter() {
        if !groups.iter().any(|(n, _)| n == name) {
            groups.push((name.clone(), Serials::default().merge(d)));
        }
    }
    let mut merged = base.reuse();
    merged.groups = Arc::new(groups);
    merged.delta_groups = Some(delta.groups.clone());
    merged.this_update = delta.this_update;
    merged.next_update = delta.next_update;
    merged.delta = Some((delta.crl_number.clone(), delta.source.clone()));
    merged.crl_number = delta.crl_number.clone();
    Ok(merged)
}

/// Parses and verifies every CRL of one fetched body against the bundle (and the signer
/// certificates shipped with it), as loading would; returns the earliest nextUpdate. Used
/// to refuse a bad download before it replaces a good cached one.
pub fn verify_fetched(
    bundle: &CaBundle,
    flag: &'static str,
    url: &str,
    bytes: &[u8],
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Option<i64>, String> {
    let name = PathBuf::from(url);
    let (crls, certs) = crate::pem::crl_file_items(flag, &name, bytes).map_err(|e| e.to_string())?;
    let (pool, _) =
        Pool::new(bundle, certs.into_iter().map(|c| (c.as_ref().to_vec(), url.to_string())).collect(), algs);
    let source = CrlSource { flag, name, bytes: Arc::new(Vec::new()), stamp: None };
    let mut earliest: Option<i64> = None;
    for (i, der) in crls.iter().enumerate() {
        let c = candidate(der.as_ref(), &format!("{url} CRL #{}", i + 1), &source, &pool, algs)
            .map_err(|e| format!("CRL #{}: {e}", i + 1))?;
        if let Some(n) = c.next_update {
            earliest = Some(earliest.map_or(n, |e| e.min(n)));
        }
    }
    Ok(earliest)
}
