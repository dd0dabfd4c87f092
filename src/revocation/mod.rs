//! The pre-verified revocation index: every CRL's signature is checked once, at load, against
//! its issuing CA; its serials are then kept in a sorted, compact per-issuer table, so a
//! handshake costs one hash lookup and one binary search whatever the CRL's size.
//!
//! Policies (`--revocation-check`, `--crl-missing`, `--crl-expired`, grace) are applied in
//! [`RevocationIndex::check`]; nothing here falls back to a library default.

pub mod crl;
pub mod der;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rustls::crypto::WebPkiSupportedAlgorithms;

use crate::ca::CaBundle;
use crate::config::{Policy, RevocationPolicy};
use crate::error::ConfigError;
use crl::{CrlError, ParsedCrl};

/// Serials up to this many octets (after stripping leading zeros) are stored inline.
/// RFC 5280 caps serials at 20 octets; longer ones go to a small overflow list.
const INLINE_SERIAL: usize = 20;

/// A serial of up to 20 octets as integers: (length, then the big-endian octets zero-padded
/// on the right, split 8 + 8 + 4). Ordering these compares like the octets, without memcmp.
type SerialKey = (u8, u64, u64, u32);

/// One revoked serial, 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    a: u64,
    b: u64,
    c: u32,
    len: u8,
    /// CRLReason code, 0xff when absent.
    reason: u8,
    revoked_at: i64,
}

impl Entry {
    fn key(&self) -> SerialKey {
        (self.len, self.a, self.b, self.c)
    }
}

/// Sorts by [`Entry::key`]. A large list (a CRL of random serials) is first distributed
/// by its key's leading part (length, top byte) and each bucket is sorted on its own, in
/// the cache: faster than one sort of a million entries, time a reload spends while it
/// shares the core with handshakes (loading the 1M-entry CRL takes about 20 % less CPU;
/// bench/README.md).
fn sort_entries(entries: &mut [Entry]) {
    if entries.len() < 1 << 16 {
        entries.sort_unstable_by_key(Entry::key);
        return;
    }
    // Ordered like the key: length first, then the top byte of `a`.
    let bucket = |e: &Entry| usize::from(e.len) << 8 | (e.a >> 56) as usize;
    let mut ends = vec![0usize; (INLINE_SERIAL + 1) << 8];
    for e in entries.iter() {
        ends[bucket(e)] += 1;
    }
    let mut next = Vec::with_capacity(ends.len());
    let mut sum = 0;
    for n in ends.iter_mut() {
        next.push(sum);
        sum += *n;
        *n = sum;
    }
    // Distributed in place (each entry swapped into its bucket's next free slot until the
    // slot's own entry belongs there): no second copy of the list, which would raise a
    // reload's peak memory by its size (30 MiB for a million entries).
    for b in 0..ends.len() {
        while next[b] < ends[b] {
            let mut e = entries[next[b]];
            loop {
                let home = bucket(&e);
                if home == b {
                    break;
                }
                std::mem::swap(&mut e, &mut entries[next[home]]);
                next[home] += 1;
            }
            entries[next[b]] = e;
            next[b] += 1;
        }
    }
    let mut start = 0;
    for &end in &ends {
        entries[start..end].sort_unstable_by_key(Entry::key);
        start = end;
    }
}

fn inline_key(serial: &[u8]) -> Option<SerialKey> {
    if serial.len() > INLINE_SERIAL {
        return None;
    }
    let mut s = [0u8; INLINE_SERIAL];
    s[..serial.len()].copy_from_slice(serial);
    let (a, rest) = s.split_at(8);
    let (b, c) = rest.split_at(8);
    Some((
        serial.len() as u8,
        u64::from_be_bytes(a.try_into().ok()?),
        u64::from_be_bytes(b.try_into().ok()?),
        u32::from_be_bytes(c.try_into().ok()?),
    ))
}

/// Details of a revocation, for logs and `inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub revoked_at: i64,
    pub reason: Option<u8>,
}

/// The CRL of one issuing CA, verified.
#[derive(Debug)]
pub struct IssuerCrl {
    /// The CA's subject, human-readable.
    pub issuer: String,
    /// The issuing CA's index key ([`crate::ca::issuer_key`]).
    key: Vec<u8>,
    pub source: PathBuf,
    pub version: u8,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// Normalised CRL number (big-endian), if present.
    pub crl_number: Option<Vec<u8>>,
    covers_end_entities: bool,
    covers_cas: bool,
    entries: Vec<Entry>,
    long_entries: Vec<(Vec<u8>, Revocation)>,
    /// Last time a stale-CRL warning was logged for it (rate limit).
    last_stale_warning: AtomicI64,
    /// Last time an expiring-soon warning was logged for it (rate limit).
    last_expiry_warning: AtomicI64,
}

impl IssuerCrl {
    /// Number of revoked serials.
    pub fn len(&self) -> usize {
        self.entries.len() + self.long_entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The issuing CA's index key ([`crate::ca::issuer_key`]).
    pub fn issuer_key(&self) -> &[u8] {
        &self.key
    }

    /// The revocation entry for a (normalised) serial, if listed.
    pub fn lookup(&self, serial: &[u8]) -> Option<Revocation> {
        match inline_key(serial) {
            Some(key) => self.entries.binary_search_by(|e| e.key().cmp(&key)).ok().map(|i| {
                let e = &self.entries[i];
                Revocation { revoked_at: e.revoked_at, reason: (e.reason != 0xff).then_some(e.reason) }
            }),
            None => self.long_entries.iter().find(|(s, _)| s == serial).map(|(_, r)| r.clone()),
        }
    }

    /// A delta CRL (RFC 5280 §5.2.4) applied on this base: its entries are added (or
    /// replace the base's), its `removeFromCRL` entries removed; validity and CRL number are
    /// the delta's. The base's CRL number must be at least the delta's BaseCRLNumber, and the
    /// delta must be newer than the base.
    pub fn apply_delta(&self, delta: &IssuerCrl, base_number: &[u8]) -> Result<IssuerCrl, String> {
        let num = |n: &[u8]| (n.len(), n.to_vec());
        let base_has = self.crl_number.as_deref().map(num);
        if base_has.as_ref().is_none_or(|b| *b < num(base_number)) {
            return Err(format!(
                "delta needs a base CRL numbered {} or later; the base in use is {}",
                hex::encode(base_number),
                self.crl_number.as_ref().map_or("unnumbered".into(), hex::encode)
            ));
        }
        if delta.crl_number.as_deref().map(num) <= base_has {
            return Err("delta is not newer than its base CRL".into());
        }
        const REMOVE_FROM_CRL: u8 = 8;
        let mut entries = Vec::with_capacity(self.entries.len() + delta.entries.len());
        let (mut b, mut d) = (self.entries.iter().peekable(), delta.entries.iter().peekable());
        loop {
            let next = match (b.peek(), d.peek()) {
                (None, None) => break,
                (Some(_), None) => b.next(),
                (None, Some(_)) => d.next(),
                (Some(x), Some(y)) => match x.key().cmp(&y.key()) {
                    std::cmp::Ordering::Less => b.next(),
                    std::cmp::Ordering::Greater => d.next(),
                    std::cmp::Ordering::Equal => {
                        b.next();
                        d.next()
                    }
                },
            };
            if let Some(e) = next.filter(|e| e.reason != REMOVE_FROM_CRL) {
                entries.push(*e);
            }
        }
        let mut long_entries = self.long_entries.clone();
        for (serial, r) in &delta.long_entries {
            long_entries.retain(|(s, _)| s != serial);
            if r.reason != Some(REMOVE_FROM_CRL) {
                long_entries.push((serial.clone(), r.clone()));
            }
        }
        Ok(IssuerCrl {
            issuer: self.issuer.clone(),
            key: self.key.clone(),
            source: delta.source.clone(),
            version: delta.version,
            this_update: delta.this_update,
            next_update: delta.next_update,
            crl_number: delta.crl_number.clone(),
            covers_end_entities: self.covers_end_entities,
            covers_cas: self.covers_cas,
            entries,
            long_entries,
            last_stale_warning: AtomicI64::new(i64::MIN),
            last_expiry_warning: AtomicI64::new(i64::MIN),
        })
    }

    fn newer_than(&self, other: &IssuerCrl) -> bool {
        match (&self.crl_number, &other.crl_number) {
            (Some(a), Some(b)) if a != b => (a.len(), a) > (b.len(), b),
            _ => self.this_update > other.this_update,
        }
    }

    /// Builds the index of one parsed, already signature-verified CRL.
    fn build(parsed: &ParsedCrl<'_>, issuer: String, key: Vec<u8>, source: &Path) -> Result<Self, CrlError> {
        let mut entries = Vec::with_capacity(parsed.entries_hint());
        let mut long_entries = Vec::new();
        for e in parsed.entries() {
            let e = e?;
            match inline_key(e.serial) {
                Some((len, a, b, c)) => {
                    entries.push(Entry { a, b, c, len, reason: e.reason.unwrap_or(0xff), revoked_at: e.revoked_at })
                }
                None => {
                    long_entries.push((e.serial.to_vec(), Revocation { revoked_at: e.revoked_at, reason: e.reason }))
                }
            }
        }
        // Most CRLs list serials in issuance order; sort only when needed.
        if !entries.is_sorted_by_key(Entry::key) {
            sort_entries(&mut entries);
        }
        entries.dedup_by(|a, b| a.key() == b.key());
        entries.shrink_to_fit();
        Ok(Self {
            issuer,
            key,
            source: source.to_path_buf(),
            version: parsed.version,
            this_update: parsed.this_update,
            next_update: parsed.next_update,
            crl_number: parsed.crl_number.map(<[u8]>::to_vec),
            covers_end_entities: parsed.covers_end_entities,
            covers_cas: parsed.covers_cas,
            entries,
            long_entries,
            last_stale_warning: AtomicI64::new(i64::MIN),
            last_expiry_warning: AtomicI64::new(i64::MIN),
        })
    }
}

/// Why a certificate did not pass the revocation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationError {
    Revoked {
        revocation: Revocation,
        crl_source: PathBuf,
    },
    /// No CRL covers this certificate's issuer (and `--crl-missing=deny`).
    NoCrl,
    /// The issuer's CRL is past nextUpdate + grace (and `--crl-expired=deny`).
    Stale {
        next_update: i64,
    },
}

/// Every CRL, indexed by issuer, plus the policy that applies to lookups.
#[derive(Debug)]
pub struct RevocationIndex {
    policy: RevocationPolicy,
    by_issuer: HashMap<Vec<u8>, Arc<IssuerCrl>>,
}

/// A non-fatal remark made while loading (logged by the caller).
pub type Warning = String;

/// Where CRL bytes came from: a `--crl-file`, or a fetched URL (`--crl-url`, distribution
/// points). Errors name the flag and the file or URL.
#[derive(Debug, Clone)]
pub struct CrlSource {
    pub flag: &'static str,
    pub name: PathBuf,
    pub bytes: Arc<Vec<u8>>,
}

impl CrlSource {
    /// Reads every `--crl-file`.
    pub fn files(paths: &[PathBuf]) -> Result<Vec<Self>, ConfigError> {
        paths
            .iter()
            .map(|p| {
                let bytes =
                    std::fs::read(p).map_err(|e| ConfigError::file("--crl-file", p, format!("cannot read: {e}")))?;
                Ok(Self { flag: "--crl-file", name: p.clone(), bytes: Arc::new(bytes) })
            })
            .collect()
    }
}

impl RevocationIndex {
    /// Loads and verifies every CRL file against the CA bundle, then checks that each CA has
    /// a CRL unless `--crl-missing=allow`.
    pub fn load(
        bundle: &CaBundle,
        sources: &[CrlSource],
        policy: RevocationPolicy,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        let mut by_issuer: HashMap<Vec<u8>, Arc<IssuerCrl>> = HashMap::new();
        // Delta CRLs, applied once every base is known: (issuer key, delta, where from).
        let mut deltas: Vec<(Vec<u8>, IssuerCrl, Vec<u8>, String)> = Vec::new();
        let mut warnings = Vec::new();
        for source in sources {
            let (flag, path) = (source.flag, &source.name);
            for (i, der) in crate::pem::crls_in(flag, path, &source.bytes)?.iter().enumerate() {
                let which = |msg: String| ConfigError::file(flag, path, format!("CRL #{}: {msg}", i + 1));
                let parsed = ParsedCrl::parse(der.as_ref()).map_err(|e| which(e.to_string()))?;
                let ca = verify_against_bundle(&parsed, bundle, algs).map_err(which)?;
                let crl =
                    IssuerCrl::build(&parsed, ca.subject.clone(), ca.key(), path).map_err(|e| which(e.to_string()))?;
                if let Some(base) = parsed.delta_base {
                    let name = format!("{flag} {} CRL #{}", path.display(), i + 1);
                    deltas.push((ca.key(), crl, base.to_vec(), name));
                    continue;
                }
                match by_issuer.get(&ca.key()) {
                    Some(existing) if !crl.newer_than(existing) => {
                        warnings.push(format!(
                            "{flag} {}: CRL #{} for {} is not newer than the one from {}; ignored",
                            path.display(),
                            i + 1,
                            ca.subject,
                            existing.source.display()
                        ));
                    }
                    _ => {
                        by_issuer.insert(ca.key(), Arc::new(crl));
                    }
                }
            }
        }
        // Newest delta first per issuer; older ones are superseded.
        deltas.sort_by(|a, b| b.1.crl_number.cmp(&a.1.crl_number));
        let mut applied: Vec<Vec<u8>> = Vec::new();
        for (key, delta, base_number, name) in deltas {
            if applied.contains(&key) {
                continue;
            }
            let Some(base) = by_issuer.get(&key) else {
                return Err(ConfigError::Other(format!(
                    "{name}: delta CRL for {} but no base CRL of that CA is loaded",
                    delta.issuer
                )));
            };
            let merged =
                base.apply_delta(&delta, &base_number).map_err(|e| ConfigError::Other(format!("{name}: {e}")))?;
            by_issuer.insert(key.clone(), Arc::new(merged));
            applied.push(key);
        }
        for ca in &bundle.cas {
            if by_issuer.contains_key(&ca.key()) {
                continue;
            }
            match policy.crl_missing {
                Policy::Deny => {
                    return Err(ConfigError::MissingCrl { ca_file: bundle.source.clone(), subject: ca.subject.clone() });
                }
                Policy::Allow => warnings.push(format!(
                    "CA {:?} has no CRL; its certificates are accepted without a revocation check (--crl-missing=allow)",
                    ca.subject
                )),
            }
        }
        Ok((Self { policy, by_issuer }, warnings))
    }

    pub fn policy(&self) -> RevocationPolicy {
        self.policy
    }

    /// The CRLs in use, for summaries and metrics.
    pub fn crls(&self) -> impl Iterator<Item = &Arc<IssuerCrl>> {
        self.by_issuer.values()
    }

    /// The CRL of an issuer, by [`crate::ca::issuer_key`].
    pub fn crl_for(&self, issuer_key: &[u8]) -> Option<&Arc<IssuerCrl>> {
        self.by_issuer.get(issuer_key)
    }

    /// Checks one certificate (its raw serial) against its issuer's CRL at time `now`.
    /// `is_ca` says whether the certificate is an intermediate (for CRL scope).
    pub fn check(&self, serial: &[u8], issuer_key: &[u8], is_ca: bool, now: i64) -> Result<(), RevocationError> {
        let crl = match self.by_issuer.get(issuer_key) {
            Some(c) if (is_ca && c.covers_cas) || (!is_ca && c.covers_end_entities) => c,
            _ => {
                return match self.policy.crl_missing {
                    Policy::Deny => Err(RevocationError::NoCrl),
                    Policy::Allow => Ok(()),
                };
            }
        };
        if let Some(next) = crl.next_update {
            let grace = i64::try_from(self.policy.crl_expired_grace.as_secs()).unwrap_or(i64::MAX);
            if now > next.saturating_add(grace) {
                match self.policy.crl_expired {
                    Policy::Deny => return Err(RevocationError::Stale { next_update: next }),
                    Policy::Allow => warn_stale(crl, now),
                }
            }
        }
        match crl.lookup(crl::normalize_serial(serial)) {
            Some(revocation) => Err(RevocationError::Revoked { revocation, crl_source: crl.source.clone() }),
            None => Ok(()),
        }
    }
}

impl RevocationIndex {
    /// Warns (at most hourly per CRL) about CRLs whose nextUpdate is within `window` of `now`
    /// but not yet passed; returns how many are in that state.
    pub fn warn_expiring(&self, now: i64, window: std::time::Duration) -> usize {
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let mut expiring = 0;
        for crl in self.by_issuer.values() {
            let Some(next) = crl.next_update else { continue };
            if next <= now || next.saturating_sub(now) > window {
                continue;
            }
            expiring += 1;
            let last = crl.last_expiry_warning.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 3600
                && crl.last_expiry_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    event = "crl_expiring",
                    issuer = %crl.issuer,
                    crl_file = %crl.source.display(),
                    next_update = %fmt_time(next),
                    seconds_left = next - now,
                    "CRL expires soon: publish a fresh one before nextUpdate (see --crl-expired)"
                );
            }
        }
        expiring
    }
}

/// Logs that a CRL is stale at most once a minute per CRL.
fn warn_stale(crl: &IssuerCrl, now: i64) {
    let last = crl.last_stale_warning.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && crl.last_stale_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(
            issuer = %crl.issuer,
            crl_file = %crl.source.display(),
            next_update = crl.next_update,
            "CRL is stale (past nextUpdate); still enforcing its serials because --crl-expired=allow"
        );
    }
}

/// Finds the CA that signed this CRL (same subject, signature verifies, may sign CRLs).
pub fn verify_against_bundle<'b>(
    parsed: &ParsedCrl<'b>,
    bundle: &'b CaBundle,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<&'b crate::ca::Ca, String> {
    let mut last_err = None;
    for ca in bundle.by_subject(parsed.issuer_der) {
        match parsed.verify_signature(&ca.spki_der, algs) {
            Ok(()) if !ca.may_sign_crls => {
                last_err = Some(format!("issuer {:?} has a keyUsage without cRLSign", ca.subject));
            }
            Ok(()) => return Ok(ca),
            Err(e) => last_err = Some(format!("{e} (issuer {:?})", ca.subject)),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        let issuer = display_name(parsed.issuer_der);
        format!("its issuer {issuer} is not a CA in --client-ca-file {}", bundle.source.display())
    }))
}

/// A Name encoding in RFC 4514-ish text, for messages.
pub fn display_name(name_der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::X509Name::from_der(name_der) {
        Ok((_, n)) => n.to_string(),
        Err(_) => format!("<undecodable name {}>", hex::encode(name_der)),
    }
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub fn fmt_time(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string()
        }
        Err(_) => format!("{secs} (before 1970)"),
    }
}

/// The current time in Unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_sort_orders_like_a_plain_sort() {
        // Serials of mixed lengths (1 to 20 bytes), pseudo-random, with duplicates.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries: Vec<Entry> = (0..100_000)
            .map(|i| {
                let len = 1 + (next() % 20) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let (len, a, b, c) = inline_key(&bytes).unwrap();
                Entry { a, b, c, len, reason: (i % 11) as u8, revoked_at: i }
            })
            .collect();
        entries.extend_from_within(..1000);
        let mut plain = entries.clone();
        plain.sort_by_key(Entry::key);
        sort_entries(&mut entries);
        assert!(entries.len() >= 1 << 16, "the bucketed path ran");
        assert_eq!(
            entries.iter().map(Entry::key).collect::<Vec<_>>(),
            plain.iter().map(Entry::key).collect::<Vec<_>>()
        );
    }
    use crate::config::{RevocationCheck, RevocationPolicy};
    use crate::pki::{Authority, Spec};

    fn policy(missing: Policy, expired: Policy, grace: u64) -> RevocationPolicy {
        RevocationPolicy {
            check: RevocationCheck::Chain,
            crl_missing: missing,
            crl_expired: expired,
            crl_expired_grace: std::time::Duration::from_secs(grace),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        bundle: CaBundle,
        crl: PathBuf,
        ca: Authority,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::root("unit-ca");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        let bundle = CaBundle::load(&dir.path().join("ca.pem"), None).unwrap();
        let crl = dir.path().join("crl.pem");
        Fixture { _dir: dir, bundle, crl, ca }
    }

    fn algs() -> WebPkiSupportedAlgorithms {
        crate::tls::provider().signature_verification_algorithms
    }

    #[test]
    fn lookup_finds_listed_serials_only_and_normalises_padding() {
        let f = fixture();
        let a = f.ca.issue(&Spec::client("a", &[]));
        let b = f.ca.issue(&Spec::client("b", &[]));
        std::fs::write(&f.crl, f.ca.crl(&[&a.serial, &[0x00, 0x01, 0x02]], 7, time::Duration::days(1))).unwrap();
        let (index, warnings) = RevocationIndex::load(
            &f.bundle,
            &CrlSource::files(std::slice::from_ref(&f.crl)).unwrap(),
            policy(Policy::Deny, Policy::Deny, 0),
            &algs(),
        )
        .unwrap();
        assert!(warnings.is_empty());
        let key = f.bundle.cas[0].key();
        let now = now_secs();
        assert!(matches!(index.check(&a.serial, &key, false, now), Err(RevocationError::Revoked { .. })));
        assert_eq!(index.check(&b.serial, &key, false, now), Ok(()));
        // 0x0102 was listed with a leading zero; a certificate serial without it matches.
        assert!(index.check(&[0x01, 0x02], &key, false, now).is_err());
        assert_eq!(index.crl_for(&key).unwrap().crl_number.as_deref(), Some(&[7u8][..]));
    }

    #[test]
    fn serial_keys_order_like_their_octets() {
        let serials: [&[u8]; 7] =
            [&[1], &[2], &[0xff], &[1, 0], &[1, 0, 0, 0, 0, 0, 0, 0, 9], &[0x7f; 20], &[0x80; 20]];
        for w in serials.windows(2) {
            assert!(inline_key(w[0]).unwrap() < inline_key(w[1]).unwrap(), "{:?} < {:?}", w[0], w[1]);
        }
        assert!(inline_key(&[1; 21]).is_none());
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn stale_policy_and_grace() {
        let f = fixture();
        std::fs::write(&f.crl, f.ca.crl(&[], 1, time::Duration::hours(-2))).unwrap();
        let key = f.bundle.cas[0].key();
        let now = now_secs();
        let load = |p| {
            RevocationIndex::load(&f.bundle, &CrlSource::files(std::slice::from_ref(&f.crl)).unwrap(), p, &algs())
                .unwrap()
                .0
        };
        let deny = load(policy(Policy::Deny, Policy::Deny, 0));
        assert!(matches!(deny.check(&[1], &key, false, now), Err(RevocationError::Stale { .. })));
        let graced = load(policy(Policy::Deny, Policy::Deny, 3 * 3600));
        assert_eq!(graced.check(&[1], &key, false, now), Ok(()));
        let allow = load(policy(Policy::Deny, Policy::Allow, 0));
        assert_eq!(allow.check(&[1], &key, false, now), Ok(()));
    }

    #[test]
    fn missing_crl_is_a_start_up_error_unless_allowed() {
        let f = fixture();
        let err = RevocationIndex::load(&f.bundle, &[], policy(Policy::Deny, Policy::Deny, 0), &algs()).unwrap_err();
        assert!(err.to_string().contains("unit-ca") && err.to_string().contains("--crl-missing"), "{err}");
        let (index, warnings) =
            RevocationIndex::load(&f.bundle, &[], policy(Policy::Allow, Policy::Deny, 0), &algs()).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(index.check(&[1], &f.bundle.cas[0].key(), false, now_secs()), Ok(()));
    }

    #[test]
    fn delta_crls_add_and_remove_on_top_of_their_base() {
        let f = fixture();
        let (a, b, c) = ([0x0a_u8], [0x0b_u8], [0x0c_u8]);
        std::fs::write(&f.crl, f.ca.crl(&[&a, &b], 5, time::Duration::days(1))).unwrap();
        let delta_path = f.crl.with_file_name("delta.crl");
        std::fs::write(&delta_path, f.ca.delta_crl(&[(&c, 1), (&b, 8)], 6, 5, time::Duration::hours(2))).unwrap();
        let sources = CrlSource::files(&[f.crl.clone(), delta_path.clone()]).unwrap();
        let (index, _) =
            RevocationIndex::load(&f.bundle, &sources, policy(Policy::Deny, Policy::Deny, 0), &algs()).unwrap();
        let key = f.bundle.cas[0].key();
        let now = now_secs();
        assert!(index.check(&a, &key, false, now).is_err(), "a stays revoked");
        assert_eq!(index.check(&b, &key, false, now), Ok(()), "b removed by removeFromCRL");
        assert!(index.check(&c, &key, false, now).is_err(), "c added by the delta");
        let crl = index.crl_for(&key).unwrap();
        assert_eq!(crl.crl_number.as_deref(), Some(&[6u8][..]));
        assert_eq!(crl.len(), 2);
        assert!(crl.next_update.unwrap() - now < 3 * 3600, "freshness comes from the delta");

        // A delta for a newer base than the one loaded is refused.
        std::fs::write(&delta_path, f.ca.delta_crl(&[], 9, 7, time::Duration::hours(2))).unwrap();
        let sources = CrlSource::files(&[f.crl.clone(), delta_path.clone()]).unwrap();
        let err =
            RevocationIndex::load(&f.bundle, &sources, policy(Policy::Deny, Policy::Deny, 0), &algs()).unwrap_err();
        assert!(err.to_string().contains("base CRL numbered 07"), "{err}");
        // A delta alone has no base.
        let sources = CrlSource::files(std::slice::from_ref(&delta_path)).unwrap();
        let err =
            RevocationIndex::load(&f.bundle, &sources, policy(Policy::Deny, Policy::Deny, 0), &algs()).unwrap_err();
        assert!(err.to_string().contains("no base CRL"), "{err}");
    }

    #[test]
    fn expiring_crls_are_counted_within_the_window() {
        let f = fixture();
        std::fs::write(&f.crl, f.ca.crl(&[], 1, time::Duration::hours(2))).unwrap();
        let (index, _) = RevocationIndex::load(
            &f.bundle,
            &CrlSource::files(std::slice::from_ref(&f.crl)).unwrap(),
            policy(Policy::Deny, Policy::Deny, 0),
            &algs(),
        )
        .unwrap();
        let now = now_secs();
        assert_eq!(index.warn_expiring(now, std::time::Duration::from_secs(24 * 3600)), 1);
        assert_eq!(index.warn_expiring(now, std::time::Duration::from_secs(3600)), 0);
    }
}
