//! The registry of live connections that presented a client certificate, so revocation
//! reaches open connections too: after every change of the revocation state each registered
//! path (as verified at its handshake) is checked again with the new verifier, revocation
//! only, no signatures, and the connections that no longer pass are told to close (HTTP/1.1,
//! HTTP/2 with GOAWAY, upgraded tunnels, long watches).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::sync::watch;

use crate::metrics::{Metrics, ReasonLabel};
use crate::revocation::VerifiedPath;
use crate::tls::verifier::{CrlVerifier, Refusal};

/// Why a live connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The certificate (or its chain) no longer passes verification: revoked, CA removed, ...
    Refused(Refusal),
    /// The client certificate's notAfter has passed (`--close-expired-connections`).
    Expired,
}

impl CloseReason {
    /// A fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.reason.label(),
            Self::Expired => "expired",
        }
    }
}

/// The receiving end a connection (and its tunnels) watch; `Some` means close now.
pub type CloseSignal = watch::Receiver<Option<CloseReason>>;

#[derive(Clone)]
struct Entry {
    path: Arc<VerifiedPath>,
    /// The client certificate, for the security event when it is closed.
    leaf: CertificateDer<'static>,
    remote: SocketAddr,
    close: watch::Sender<Option<CloseReason>>,
}

/// All live client-certificate connections.
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Re-checks started so far: a connection whose handshake saw fewer when it began was
    /// verified before one of them and was not yet registered for it.
    rechecks: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    registry: Arc<Registry>,
}

impl Registration {
    /// Checks this connection now, as [`Registry::recheck`] does every registered one: for a
    /// connection that a re-check started during its handshake did not see.
    pub fn recheck(&self, verifier: &CrlVerifier, now: UnixTime) -> bool {
        let entry = self.registry.lock().get(&self.id).cloned();
        entry.is_some_and(|e| self.registry.check(&e, verifier, now))
    }

    /// Tells this connection (and its tunnels) to close.
    pub fn close(&self, reason: CloseReason) {
        if let Some(e) = self.registry.lock().get(&self.id).filter(|e| e.close.borrow().is_none()) {
            tracing::warn!(event = "connection_closed", reason = reason.label(), peer = %e.remote, "closing live connection: {}",
                match &reason { CloseReason::Expired => "client certificate expired".to_string(), CloseReason::Refused(r) => r.reason.to_string() });
            self.registry.count_closed(&reason);
            let _ = e.close.send(Some(reason));
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("connections", &self.len()).finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { entries: Mutex::default(), next_id: AtomicU64::new(0), rechecks: AtomicU64::new(0), metrics }
    }

    fn count_closed(&self, reason: &CloseReason) {
        self.metrics.connections_closed.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a verified connection: its path and client certificate.
    pub fn register(
        self: &Arc<Self>,
        path: Arc<VerifiedPath>,
        leaf: CertificateDer<'static>,
        remote: SocketAddr,
    ) -> (Registration, CloseSignal) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.lock().insert(id, Entry { path, leaf, remote, close: tx });
        (Registration { id, registry: self.clone() }, rx)
    }

    /// Re-checks started so far (see [`Registration::recheck`]).
    pub fn rechecks(&self) -> u64 {
        self.rechecks.load(Ordering::SeqCst)
    }

    /// Number of registered connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every registered path with `verifier` at `now` (revocation and trust anchor;
    /// see [`CrlVerifier::recheck`]); signals the ones that fail to close and returns how many
    /// were signalled. The checks run outside the lock.
    pub fn recheck(&self, verifier: &CrlVerifier, now: UnixTime) -> usize {
        // Counted before the entries are read: a connection registered after this reads a
        // changed count and checks itself (`Registration::recheck`).
        self.rechecks.fetch_add(1, Ordering::SeqCst);
        let snapshot: Vec<Entry> = self.lock().values().cloned().collect();
        snapshot.iter().filter(|entry| self.check(entry, verifier, now)).count()
    }

    /// Checks one connection's path; signals it to close (and says so) when it fails.
    fn check(&self, entry: &Entry, verifier: &CrlVerifier, now: UnixTime) -> bool {
        if entry.close.borrow().is_some() {
            return false;
        }
        let Err(refusal) = verifier.recheck(&entry.path, now) else { return false };
        crate::tls::verifier::log_connection_closed(&refusal, &entry.leaf, entry.remote);
        let reason = CloseReason::Refused(refusal);
        self.count_closed(&reason);
        let _ = entry.close.send(Some(reason));
        true
    }
}
