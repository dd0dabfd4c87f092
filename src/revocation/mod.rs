//! Revocation: is a verified client path revoked? One entry point, [`Revocation::decide`],
//! takes the path (as the chain builder verified it) and a time and returns the decision with
//! its source (CRL or OCSP) and reason. CRLs are parsed and their signatures verified once, at
//! load, into a pre-verified index of sorted serial tables, so a handshake costs a hash lookup
//! and a binary search per applicable CRL whatever the CRLs' sizes.
//!
//! Layout (with [`crate::der`], the strict DER reader, beneath): [`name`] (RFC 5280 §7.1 name comparison), [`cert`]
//! (what revocation reads of a certificate), [`path`] (a verified path as open connections
//! keep it) and [`intern`] (the CA certificates' facts those paths share), [`crl`] (one CRL
//! parsed), [`table`] (one CRL's serials), [`index`] (the CRL index and RFC 5280 §6.3
//! processing), [`ocsp`] (answers, cache, queries). This file holds the policy:
//! `--revocation-check`, `--crl-missing`, `--crl-expired` and its grace
//! ([`RevocationIndex::check_path`]), `--ocsp` ([`Revocation::decide`]), and [`freshness`],
//! the one rule for "is this CRL stale". A third source would be one more module here and one
//! more step in `decide`. Nothing here falls back to a library default.

pub mod cert;
pub mod changes;
pub mod crl;
pub mod index;
pub mod intern;
pub mod name;
pub mod ocsp;
pub mod path;
pub mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use cert::CertFacts;
pub use changes::{Affected, cert_key};
pub use index::{Crl, Rejected, RevocationIndex, Scope, Status};
pub use name::NameKey;
pub use path::{CaCert, Issuer, LeafFacts, PathCert, VerifiedPath};
pub use table::RevokedEntry;

use crate::config::{OcspMode, Policy, RevocationCheck, RevocationPolicy};
use crate::error::ConfigError;
use ocsp::{CertRef, CertStatus, Ocsp, Query, QueryError, Verdict};

/// A non-fatal remark made while loading (logged by the caller).
pub type Warning = String;

/// Where CRL bytes came from: a `--crl-file`, or a fetched URL (`--crl-url`, distribution
/// points). Errors name the flag and the file or URL.
#[derive(Debug, Clone)]
pub struct CrlSource {
    pub flag: &'static str,
    pub name: PathBuf,
    pub bytes: Arc<Vec<u8>>,
    /// For a file: its length, modification time and inode when read, which tell a reload
    /// that it did not change without hashing 50 MB. `None` for fetched bytes (the fetcher
    /// keeps the same `bytes` until a download changes them).
    pub stamp: Option<(u64, Option<std::time::SystemTime>, u64)>,
}

impl CrlSource {
    /// Reads every `--crl-file`.
    pub fn files(paths: &[PathBuf]) -> Result<Vec<Self>, ConfigError> {
        paths
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).ok();
                let bytes =
                    std::fs::read(p).map_err(|e| ConfigError::file("--crl-file", p, format!("cannot read: {e}")))?;
                // The stamp is taken before the read: a write racing the read changes it.
                let stamp = meta.map(|m| (m.len(), m.modified().ok(), inode(&m)));
                Ok(Self { flag: "--crl-file", name: p.clone(), bytes: Arc::new(bytes), stamp })
            })
            .collect()
    }

    /// What tells two reads of this source apart: the file's stamp, or the fetched bytes'
    /// identity (the same allocation).
    fn identity(&self) -> SourceIdentity {
        match self.stamp {
            Some((len, modified, inode)) => SourceIdentity::File { len, modified, inode },
            None => SourceIdentity::Fetched(self.bytes.clone()),
        }
    }
}

/// See [`CrlSource::identity`].
#[derive(Debug, Clone)]
enum SourceIdentity {
    File { len: u64, modified: Option<std::time::SystemTime>, inode: u64 },
    Fetched(Arc<Vec<u8>>),
}

impl PartialEq for SourceIdentity {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::File { len: a, modified: b, inode: c }, Self::File { len: x, modified: y, inode: z }) => {
                a == x && b == y && c == z && b.is_some()
            }
            (Self::Fetched(a), Self::Fetched(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// How fresh a CRL is, by its nextUpdate: the one rule used by the verifier, readiness,
/// `check` and the expiry warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No nextUpdate, or more than the warning window away.
    Fresh,
    /// nextUpdate within the warning window, not passed.
    Expiring { seconds_left: i64 },
    /// nextUpdate passed, but within `--crl-expired-grace`.
    InGrace { seconds_past: i64 },
    /// nextUpdate plus grace passed: `--crl-expired` decides.
    Stale { seconds_past: i64 },
}

/// The [`Freshness`] of a CRL with this nextUpdate at `now`.
pub fn freshness(
    next_update: Option<i64>,
    now: i64,
    policy: &RevocationPolicy,
    window: std::time::Duration,
) -> Freshness {
    let Some(next) = next_update else { return Freshness::Fresh };
    let grace = i64::try_from(policy.crl_expired_grace.as_secs()).unwrap_or(i64::MAX);
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if now > next.saturating_add(grace) {
        Freshness::Stale { seconds_past: now - next }
    } else if now > next {
        Freshness::InGrace { seconds_past: now - next }
    } else if next - now <= window {
        Freshness::Expiring { seconds_left: next - now }
    } else {
        Freshness::Fresh
    }
}

/// True when a CRL is past nextUpdate plus the grace (see [`freshness`]).
pub fn is_stale(next_update: Option<i64>, now: i64, policy: &RevocationPolicy) -> bool {
    matches!(freshness(next_update, now, policy, std::time::Duration::ZERO), Freshness::Stale { .. })
}

/// Whether a lookup may wait for an OCSP responder (a handshake) or not (a re-check of an
/// open connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Handshake,
    Recheck,
}

/// Which revocation source decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Crl,
    Ocsp,
}

/// What is wrong with the path's revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    Revoked,
    /// No CRL decides (`--crl-missing=deny`).
    Undetermined,
    /// Only a stale CRL could decide (`--crl-expired=deny`).
    StaleCrl,
    /// No usable OCSP answer (`--ocsp=required`).
    NoOcspAnswer,
}

/// A refused path: which source, which certificate (0 = the client's), what, and a detail
/// for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub source: Source,
    pub position: usize,
    pub kind: DenialKind,
    pub detail: String,
}

/// The revocation subsystem as a handshake sees it: the CRL index of the current snapshot
/// and, with `--ocsp`, the OCSP checker (whose cache outlives snapshots).
#[derive(Debug, Clone)]
pub struct Revocation {
    index: Arc<RevocationIndex>,
    ocsp: Option<Arc<Ocsp>>,
}

impl Revocation {
    pub fn new(index: Arc<RevocationIndex>, ocsp: Option<Arc<Ocsp>>) -> Self {
        Self { index, ocsp: ocsp.filter(|o| o.mode() != OcspMode::Off) }
    }

    pub fn index(&self) -> &Arc<RevocationIndex> {
        &self.index
    }

    /// The OCSP checker, when `--ocsp` is not `off`.
    pub fn ocsp(&self) -> Option<&Arc<Ocsp>> {
        self.ocsp.as_ref()
    }

    /// The decision for a verified path at `now`: the CRLs (every certificate the policy
    /// checks), then OCSP for the client certificate. `lookup` says whether OCSP may wait.
    pub fn decide(&self, path: &VerifiedPath, now: i64, lookup: Lookup) -> Result<(), Denial> {
        if let Err((position, e)) = self.index.check_path(path, now) {
            return Err(crl_denial(e, position, path.serial(position)));
        }
        let Some(ocsp) = &self.ocsp else { return Ok(()) };
        let leaf = &path.leaf;
        let query = leaf.issuer.anchor.clone().and_then(|issuer_anchor| {
            let cert = CertRef {
                serial: leaf.facts.serial.clone(),
                issuer_name: leaf.issuer.name_der.to_vec(),
                issuer_spki: leaf.issuer.spki.to_vec(),
                issuer_anchor,
            };
            let aia: &[String] = if ocsp.config().responder_url.is_some() { &[] } else { &leaf.facts.ocsp_urls };
            let key = cert_key(&leaf.issuer.name, &leaf.facts.serial);
            Query::new(cert, key, aia, ocsp.config().responder_url.as_deref()).ok()
        });
        let verdict = match (&query, lookup) {
            (None, _) => Verdict::NoAnswer(QueryError::NotAsked("cannot build an OCSP request for the certificate")),
            (Some(q), Lookup::Handshake) => ocsp.for_handshake(q),
            (Some(q), Lookup::Recheck) => ocsp.for_recheck(q),
        };
        ocsp_policy(ocsp.mode(), verdict, &leaf.facts.serial)
    }
}

/// The denial for a failed CRL check of the certificate at `position` of the path.
fn crl_denial(e: RevocationError, position: usize, serial: &[u8]) -> Denial {
    let what = if position == 0 { "client certificate" } else { "intermediate CA" };
    let (kind, detail) = match e {
        RevocationError::Revoked { revocation, crl } => (
            DenialKind::Revoked,
            format!(
                "{what} serial {} is listed in {crl}: revoked at {} ({})",
                hex::encode(serial),
                fmt_time(revocation.revoked_at),
                crl::reason_name(revocation.reason)
            ),
        ),
        RevocationError::Undetermined { why } => (
            DenialKind::Undetermined,
            format!(
                "revocation status of the {what} is undetermined: {why}; intermediates must be in --client-ca-file and \
                 every CA needs CRLs that cover its certificates for every reason"
            ),
        ),
        RevocationError::Stale { next_update, crl } => (
            DenialKind::StaleCrl,
            format!(
                "the CRL covering the {what} ({crl}) is stale: its nextUpdate {} has passed (plus \
                 --crl-expired-grace); publish a fresh CRL. The client's certificate itself was not found invalid",
                fmt_time(next_update)
            ),
        ),
    };
    Denial { source: Source::Crl, position, kind, detail }
}

/// What `--ocsp` makes of a lookup's verdict for the client certificate.
fn ocsp_policy(mode: OcspMode, verdict: Verdict, serial: &[u8]) -> Result<(), Denial> {
    let required = mode == OcspMode::Required;
    let deny = |kind, detail| Err(Denial { source: Source::Ocsp, position: 0, kind, detail });
    match verdict {
        Verdict::Answered(a) => match a.status {
            CertStatus::Good => Ok(()),
            CertStatus::Revoked { at, reason } => deny(
                DenialKind::Revoked,
                format!(
                    "client certificate serial {} is revoked per OCSP responder {}: revoked at {} ({}), answer of {}",
                    hex::encode(serial),
                    a.responder,
                    fmt_time(at),
                    crl::reason_name(reason),
                    fmt_time(a.this_update)
                ),
            ),
            CertStatus::Unknown if required => deny(
                DenialKind::NoOcspAnswer,
                format!(
                    "OCSP responder {} answers \"unknown\" for client certificate serial {}",
                    a.responder,
                    hex::encode(serial)
                ),
            ),
            CertStatus::Unknown => Ok(()),
        },
        Verdict::NoAnswer(e) if required => deny(DenialKind::NoOcspAnswer, e.to_string()),
        Verdict::NoAnswer(_) | Verdict::Pending => Ok(()),
    }
}

/// Why a certificate of the path did not pass the revocation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationError {
    Revoked {
        revocation: RevokedEntry,
        crl: String,
    },
    /// No CRL determines the status (none applies, or the reasons are not all covered), and
    /// `--crl-missing=deny`.
    Undetermined {
        why: String,
    },
    /// Only a CRL past nextUpdate + grace could decide, and `--crl-expired=deny`.
    Stale {
        next_update: i64,
        crl: String,
    },
}

impl RevocationIndex {
    /// Applies the policy to the path: the client certificate, and with
    /// `--revocation-check=chain` every intermediate. Returns the position of the first
    /// certificate that fails (0 = the client certificate) and why.
    pub fn check_path(&self, path: &VerifiedPath, now: i64) -> Result<(), (usize, RevocationError)> {
        let n = if self.policy.check == RevocationCheck::Chain { path.len() } else { 1 };
        for (i, c) in path.certs().take(n).enumerate() {
            self.check_one(c, &path.anchor, now, None).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// One certificate, with an optional trace of the CRLs considered (for `inspect`).
    pub fn check_one(
        &self,
        c: PathCert<'_>,
        anchor: &[u8],
        now: i64,
        trace: Option<&mut Vec<String>>,
    ) -> Result<(), RevocationError> {
        match self.status(c.crl, c.issuer_spki, anchor, now, trace) {
            Status::Good => Ok(()),
            Status::Revoked { revocation, crl } => Err(RevocationError::Revoked { revocation, crl }),
            Status::Stale { next_update, crl } => Err(RevocationError::Stale { next_update, crl }),
            Status::Undetermined { why } => match self.policy.crl_missing {
                Policy::Deny => Err(RevocationError::Undetermined { why }),
                Policy::Allow => Ok(()),
            },
        }
    }

    /// Warns (at most hourly per CRL) about CRLs whose nextUpdate is within `window` of `now`
    /// but not yet passed; returns how many are in that state.
    pub fn warn_expiring(&self, now: i64, window: std::time::Duration) -> usize {
        let mut expiring = 0;
        for crl in self.crls() {
            let Freshness::Expiring { seconds_left } = freshness(crl.next_update, now, &self.policy, window) else {
                continue;
            };
            expiring += 1;
            let last = crl.last_expiry_warning.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 3600
                && crl.last_expiry_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    event = "crl_expiring",
                    issuer = %crl.issuer,
                    crl = %crl.source,
                    next_update = %crl.next_update.map_or("none".into(), fmt_time),
                    seconds_left,
                    "CRL expires soon: publish a fresh one before nextUpdate (see --crl-expired)"
                );
            }
        }
        expiring
    }
}

/// Logs that a CRL is stale at most once a minute per CRL.
fn warn_stale(crl: &Crl, now: i64) {
    let last = crl.last_stale_warning.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && crl.last_stale_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(
            issuer = %crl.issuer,
            crl = %crl.source,
            next_update = crl.next_update,
            "CRL is stale (past nextUpdate); still enforcing its serials because --crl-expired=allow"
        );
    }
}

/// A Name encoding in RFC 4514-ish text, for messages.
pub fn display_name(name_der: &[u8]) -> String {
    name::display(name_der)
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
mod tests;
