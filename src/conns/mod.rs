//! The registry of live connections that presented a client certificate, so revocation
//! reaches open connections too. It owns what decides whether an open connection may stay:
//! the path verified at its handshake (re-checked for revocation only, no signatures), an
//! index of its certificates by (issuer, serial) so that a CRL change signals just the
//! connections it concerns ([`Affected`]), and the expiry policy
//! (`--close-expired-connections`) with one deadline per connection in one timer
//! (`deadlines`). A connection learns that it must close from its [`Live`] handle, which
//! every protocol driver and upgraded tunnel watches.

mod deadlines;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls_pki_types::UnixTime;
use tokio::sync::{Notify, watch};

use crate::metrics::{Metrics, ReasonLabel, ScopeLabel};
use crate::revocation::{Affected, VerifiedPath, cert_key};
use crate::tls::verifier::{CrlVerifier, Refusal};

pub use deadlines::run_deadlines;

/// Why a live connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The certificate (or its chain) no longer passes verification: revoked, CA removed, ...
    Refused(Refusal),
    /// A certificate of the path passed its notAfter (`--close-expired-connections`): the
    /// client's own (`leaf`), or a CA's.
    Expired { leaf: bool },
}

impl CloseReason {
    /// A fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.reason.label(),
            Self::Expired { .. } => "expired",
        }
    }
}

/// What a connection and its upgraded tunnels hold: keeps the connection registered while
/// any clone lives, and tells when it must close.
#[derive(Clone)]
pub struct Live {
    registration: Arc<Registration>,
    rx: watch::Receiver<Option<CloseReason>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("id", &self.registration.id).finish()
    }
}

impl Live {
    /// Resolves with the reason once the connection is told to close.
    pub async fn closed(&mut self) -> CloseReason {
        // The registry keeps the sender while the registration lives, and this handle holds
        // the registration: the channel cannot close under it.
        let reason = self.rx.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        match reason {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Checks this connection now, as [`Registry::recheck`] does: for a connection that a
    /// re-check started during its handshake did not see.
    pub fn recheck(&self, verifier: &CrlVerifier, now: UnixTime) -> bool {
        let registry = &self.registration.registry;
        let entry = registry.lock().entries.get(&self.registration.id).cloned();
        entry.is_some_and(|e| registry.check(&e, verifier, now))
    }
}

/// [`Live::closed`] for a connection that may have no client certificate: never without one.
pub async fn closed(live: &mut Option<Live>) -> CloseReason {
    match live {
        Some(l) => l.closed().await,
        None => std::future::pending().await,
    }
}

#[derive(Clone)]
struct Entry {
    /// What re-checks and its security event read (the client certificate itself is not
    /// kept: the path has its fingerprint).
    path: Arc<VerifiedPath>,
    remote: SocketAddr,
    close: watch::Sender<Option<CloseReason>>,
    /// When a certificate of the path expires (Unix seconds), if that closes it.
    expires: Option<i64>,
}

/// All live client-certificate connections.
pub struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Re-checks started so far: a connection whose handshake saw fewer when it began was
    /// verified before one of them and was not yet registered for it.
    rechecks: AtomicU64,
    /// `--close-expired-connections`.
    close_expired: bool,
    /// Woken when a deadline earlier than all others is added.
    earlier_deadline: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Connections by the (issuer, serial) keys of their path's certificates: (key, id)
    /// pairs, so that adding or removing one costs O(log n) even under a key that every
    /// connection shares (their intermediate CA's), and a key's connections are one range.
    by_cert: BTreeSet<(u64, u64)>,
    deadlines: deadlines::Deadlines,
}

/// What one re-check did, for its log line, and the security events it still owes.
pub struct Rechecked {
    pub checked: usize,
    pub closed: usize,
    /// From its start to the last close signal sent.
    pub signalled: std::time::Duration,
    /// The `connection_closed` events of the connections it signalled.
    pub events: Closures,
}

/// How long the security events of a re-check wait for their connections to be gone.
pub const EVENTS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The security events of the connections a re-check told to close, written once they are
/// gone ([`Closures::gone`], then [`Closures::write`]): the events (one line each) and the
/// closes compete for the same cores, and when a revoked intermediate closes thousands of
/// connections at once, the closes come first.
pub struct Closures {
    closed: Vec<(Entry, Refusal)>,
    started: std::time::Instant,
}

impl Closures {
    /// Resolves once every connection is gone, or after `bound`. A connection is gone when
    /// its `Live` handles are (connection and tunnels): its close channel has no receiver.
    pub async fn gone(&self, bound: std::time::Duration) {
        let all = async {
            for (entry, _) in &self.closed {
                entry.close.closed().await;
            }
        };
        let _ = tokio::time::timeout(bound, all).await;
    }

    /// Writes one `connection_closed` event each (blocking: call it off the runtime's
    /// threads). Returns the time from the re-check's start to the last event written.
    pub fn write(&self) -> std::time::Duration {
        for (entry, refusal) in &self.closed {
            crate::tls::verifier::log_connection_closed(refusal, &entry.path, entry.remote);
        }
        self.started.elapsed()
    }
}

/// Removes its connection from the registry when dropped (when the connection and all its
/// tunnels are gone).
#[derive(Debug)]
struct Registration {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.entries.remove(&self.id) {
            for key in cert_keys(&e.path) {
                inner.by_cert.remove(&(key, self.id));
            }
            if let Some(at) = e.expires {
                inner.deadlines.remove(at, self.id);
            }
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("connections", &self.len()).finish()
    }
}

fn cert_keys(path: &VerifiedPath) -> impl Iterator<Item = u64> + '_ {
    path.certs().map(|c| cert_key(c.crl.issuer, c.crl.serial))
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>, close_expired: bool) -> Self {
        Self {
            inner: Mutex::default(),
            next_id: AtomicU64::new(0),
            rechecks: AtomicU64::new(0),
            close_expired,
            earlier_deadline: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters (an index entry without its connection costs an extra lookup), so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a verified connection by its path. With
    /// `--close-expired-connections`, it is closed when the first certificate of its path
    /// expires (valid through its notAfter second, as the verifier judges it).
    pub fn register(self: &Arc<Self>, path: Arc<VerifiedPath>, remote: SocketAddr) -> Live {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let expires =
            self.close_expired.then(|| path.certs().map(|c| c.not_after).min()).flatten().map(|t| t.saturating_add(1));
        let mut inner = self.lock();
        for key in cert_keys(&path) {
            inner.by_cert.insert((key, id));
        }
        if let Some(at) = expires
            && inner.deadlines.insert(at, id)
        {
            self.earlier_deadline.notify_one();
        }
        inner.entries.insert(id, Entry { path, remote, close: tx, expires });
        drop(inner);
        Live { registration: Arc::new(Registration { id, registry: self.clone() }), rx }
    }

    /// Re-checks started so far (see [`Live::recheck`]).
    pub fn rechecks(&self) -> u64 {
        self.rechecks.load(Ordering::SeqCst)
    }

    /// Whether an open connection holds the certificate of this [`cert_key`] in its path.
    pub fn holds(&self, key: u64) -> bool {
        self.lock().by_cert.range((key, 0)..=(key, u64::MAX)).next().is_some()
    }

    /// Number of registered connections.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Checks the registered paths that `affected` names with `verifier` at `now`
    /// (revocation and trust anchor; see [`CrlVerifier::recheck`]): every one for
    /// [`Affected::All`], else only those holding a certificate whose (issuer, serial) is
    /// listed. Signals the ones that fail to close, then writes their security events. The
    /// checks run outside the lock.
    pub fn recheck(&self, verifier: &CrlVerifier, now: UnixTime, affected: &Affected) -> Rechecked {
        let started = std::time::Instant::now();
        // Counted before the entries are read: a connection registered after this reads a
        // changed count and checks itself (`Live::recheck`).
        self.rechecks.fetch_add(1, Ordering::SeqCst);
        let snapshot: Vec<Entry> = {
            let inner = self.lock();
            match affected {
                Affected::All => inner.entries.values().cloned().collect(),
                Affected::Certs(keys) => {
                    let mut ids: Vec<u64> = keys
                        .iter()
                        .flat_map(|&k| inner.by_cert.range((k, 0)..=(k, u64::MAX)))
                        .map(|&(_, id)| id)
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids.iter().filter_map(|id| inner.entries.get(id)).cloned().collect()
                }
            }
        };
        let scope = if let Affected::All = affected { "all" } else { "changed" };
        let checked = snapshot.len();
        self.metrics.connections_rechecked.get_or_create(&ScopeLabel { scope }).inc_by(checked as u64);
        // Every refused connection is told before any event is written (see `Closures`).
        let refused: Vec<(Entry, Refusal)> = snapshot
            .into_iter()
            .filter(|e| e.close.borrow().is_none())
            .filter_map(|e| verifier.recheck(&e.path, now).err().map(|r| (e, r)))
            .collect();
        for (entry, refusal) in &refused {
            self.signal(entry, CloseReason::Refused(refusal.clone()));
        }
        Rechecked {
            checked,
            closed: refused.len(),
            signalled: started.elapsed(),
            events: Closures { closed: refused, started },
        }
    }

    /// Checks one connection's path; signals it to close (and says so) when it fails.
    fn check(&self, entry: &Entry, verifier: &CrlVerifier, now: UnixTime) -> bool {
        if entry.close.borrow().is_some() {
            return false;
        }
        let Err(refusal) = verifier.recheck(&entry.path, now) else { return false };
        self.signal(entry, CloseReason::Refused(refusal.clone()));
        crate::tls::verifier::log_connection_closed(&refusal, &entry.path, entry.remote);
        true
    }

    /// Tells one connection (and its tunnels) to close, and counts it: the one way every
    /// close (revocation, expiry) goes.
    fn signal(&self, entry: &Entry, reason: CloseReason) {
        self.metrics.connections_closed.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
        let _ = entry.close.send(Some(reason));
    }

    /// Closes the connections whose expiry is at or before `now` (Unix seconds); returns the
    /// next deadline.
    fn expire(&self, now: i64) -> Option<i64> {
        let (due, next) = {
            let mut inner = self.lock();
            let due = inner.deadlines.take_due(now);
            let due: Vec<Entry> = due.iter().filter_map(|id| inner.entries.get(id)).cloned().collect();
            (due, inner.deadlines.first())
        };
        for e in due {
            if e.close.borrow().is_some() {
                continue;
            }
            let leaf = Some(e.path.leaf.facts.not_after.saturating_add(1)) == e.expires;
            let reason = CloseReason::Expired { leaf };
            tracing::warn!(event = "connection_closed", reason = reason.label(), peer = %e.remote,
                "closing live connection: {}", if leaf { "client certificate expired" } else { "a CA certificate of its path expired" });
            self.signal(&e, reason);
        }
        next
    }
}
