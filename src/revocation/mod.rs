//! Revocation: whether the certificates of a verified client path are revoked, per the CRLs
//! (and, in the verifier, OCSP). CRLs are parsed and their signatures verified once, at load,
//! into a pre-verified index of sorted serial tables, so a handshake costs a hash lookup and a
//! binary search per applicable CRL whatever the CRLs' sizes.
//!
//! Layout: [`der`] (strict DER reader), [`name`] (RFC 5280 §7.1 name comparison), [`cert`]
//! (what revocation reads of a certificate), [`crl`] (one CRL parsed), [`table`] (one CRL's
//! serials), [`index`] (the index and RFC 5280 §6.3 processing). This file holds the policy:
//! [`RevocationIndex::check_path`] applies `--revocation-check`, `--crl-missing`,
//! `--crl-expired` and its grace, and [`freshness`] is the one rule for "is this CRL stale".
//! Nothing here falls back to a library default.

pub mod cert;
pub mod crl;
pub mod der;
pub mod index;
pub mod name;
pub mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use cert::CertFacts;
pub use index::{Crl, Rejected, RevocationIndex, Scope, Status};
pub use table::Revocation;

use crate::config::{Policy, RevocationCheck, RevocationPolicy};
use crate::error::ConfigError;

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

/// One certificate of a verified path, as revocation needs it.
#[derive(Debug, Clone)]
pub struct PathCert {
    pub facts: CertFacts,
    /// The key that signed it (the next certificate's, or the anchor's).
    pub issuer_spki: Vec<u8>,
}

/// A path verified by the chain builder: the client certificate first, then each
/// intermediate, and the trust anchor it ends at ([`crate::ca::issuer_key`]).
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    pub certs: Vec<PathCert>,
    pub anchor: Vec<u8>,
}

/// Why a certificate of the path did not pass the revocation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationError {
    Revoked {
        revocation: Revocation,
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
        let n = if self.policy.check == RevocationCheck::Chain { path.certs.len() } else { 1 };
        for (i, c) in path.certs.iter().take(n).enumerate() {
            self.check_one(c, &path.anchor, now, None).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// One certificate, with an optional trace of the CRLs considered (for `inspect`).
    pub fn check_one(
        &self,
        c: &PathCert,
        anchor: &[u8],
        now: i64,
        trace: Option<&mut Vec<String>>,
    ) -> Result<(), RevocationError> {
        match self.status(&c.facts, &c.issuer_spki, anchor, now, trace) {
            Status::Good => Ok(()),
            Status::Revoked { revocation, crl } => Err(RevocationError::Revoked { revocation, crl }),
            Status::Stale { next_update, crl } => Err(RevocationError::Stale { next_update, crl }),
            Status::Undetermined { why, .. } => match self.policy.crl_missing {
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
