//! kube-crl-proxy: a TLS front proxy for kube-apiserver that enforces certificate
//! revocation (CRLs) for x509 client certificates and forwards the verified identity with
//! kube-apiserver's request-header authentication (`X-Remote-User`, `X-Remote-Group`, ...).
//!
//! # Layout
//! In the order a request flows, then what stands beside it (`docs/architecture.md` has the
//! layers and the rules):
//! - [`serve`]: accept loop, TLS handshake, one connection lifecycle (shutdown, close,
//!   `--idle-timeout`), HTTP/2 and HTTP/1.1 (parked between requests), graceful drain.
//! - [`tls`]: downstream `ServerConfig` + client verifier, the client TLS stream, upstream
//!   `ClientConfig`.
//! - [`identity`]: verified certificate → user, groups, UID, credential-id → headers.
//! - [`forward`]: header rules, streaming, upgrades, error responses, the access log.
//! - [`upstream`]: the upstreams, built once: credentials and connector, HTTP/2 and HTTP/1.1
//!   pools, target choice, the retry policy, `/readyz` probes.
//! - [`revocation`]: is a verified path revoked? RFC 5280 CRL processing over the
//!   pre-verified CRL index, OCSP ([`revocation::ocsp`]), the policies that combine them,
//!   and what a change of the index concerns ([`revocation::Affected`]).
//! - [`conns`]: live client-certificate connections: indexed by certificate, re-checked
//!   after each change, closed at expiry.
//! - [`reload`]: the reloadable snapshot: build, validate, swap; file watching; CRLs
//!   fetched from URLs and distribution points ([`reload::fetch`]).
//! - [`config`], [`cli`]: flags and the YAML file → a validated [`config::Config`]; the
//!   subcommands, man pages and completions.
//! - [`ca`], [`pem`], [`der`], [`crypto`]: the client CA bundle; reading certificate, key
//!   and CRL files; the strict DER reader (and the one DER writer); the one crypto provider.
//! - [`admin`], [`metrics`], [`limits`]: `/livez`, `/readyz`, `/metrics`, upstream health
//!   checks; the descriptor limit against `--max-connections`.
//! - [`error`], [`body`]: typed errors and the one table each that maps them to alerts /
//!   statuses; the body types both sides share.
//! - [`check`]: the `check`, `check-apiserver` and `inspect` commands (load, judge, never
//!   serve), one module each.
//!
//! [`run`] is the one entry point, shared by `main` (and so by the integration tests, which
//! start the binary) and by the binary's `demo`: it takes the configuration, a callback told
//! the bound addresses, and a shutdown future.
//!
//! Not here: the scaffolding. The throwaway PKI, the kube-apiserver stand-in and the test
//! client are the workspace crate `kube-crl-proxy-testkit` (`testkit/`), used by the
//! binary's `demo` (`src/demo.rs`, a module of `main.rs`) and by the tests; this library
//! never imports it.

#![forbid(unsafe_code)]
// The Layout above links every module, public or not: it is read by engineers
// (`cargo doc --document-private-items`), not only by users of the public surface.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod body;
pub mod ca;
pub mod check;
pub mod cli;
pub mod config;
mod conns;
mod crypto;
mod der;
pub mod error;
mod forward;
pub mod identity;
mod limits;
mod metrics;
pub mod pem;
mod reload;
pub mod revocation;
mod serve;
pub mod tls;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::conns::Registry;
use crate::error::ConfigError;
use crate::reload::{Outcome, State};
use crate::revocation::Affected;
use crate::serve::Shared;

/// How often every open connection is re-checked without any event, as a safety net against
/// a missed one. Changes trigger re-checks themselves: a reload (files, fetched CRLs) of the
/// connections holding what it newly lists ([`revocation::Affected`]), an OCSP answer that
/// changed or lapsed (of the connections holding that certificate), the next time-based
/// deadline of the CRLs in use (a CRL reaching nextUpdate under `--crl-expired=deny`;
/// [`revocation::RevocationIndex::next_deadline`]), and each connection's expiry
/// ([`conns::run_deadlines`]). A re-check looks up revocation only (no signatures).
const SAFETY_RECHECK: Duration = Duration::from_secs(300);

/// With OCSP, how often the answer cache is walked ([`revocation::ocsp::Ocsp::tick`]) to
/// refresh the answers open connections use before they lapse; at most this far apart.
const OCSP_TICK: Duration = Duration::from_secs(10);

/// A proxy whose configuration and files have been loaded and validated.
struct Proxy {
    shared: Arc<Shared>,
    grace: Duration,
}

impl Proxy {
    /// Loads every file named by the configuration and fetches the CRL URLs (falling back to
    /// `--crl-cache-dir`). Errors name the flag and the file.
    pub async fn build(config: &Config) -> Result<Self, ConfigError> {
        if let Some(w) =
            limits::warning(limits::raise_for(config.limits.max_connections), config.limits.max_connections)
        {
            tracing::warn!(event = "fd_limit_low", "{w}");
        }
        let metrics = Arc::new(metrics::Metrics::new());
        let fetcher = Arc::new(reload::fetch::Fetcher::new(config, metrics.clone())?);
        if !config.fetch.urls.is_empty() || config.fetch.from_distribution_points {
            let bundle = ca::CaBundle::load(&config.client_ca_file, config.client_ca_names_file.as_deref())?;
            fetcher.initial(&bundle).await;
        }
        let ocsp = (config.ocsp.mode != config::OcspMode::Off)
            .then(|| Arc::new(revocation::ocsp::Ocsp::new(&config.ocsp, metrics.clone())));
        let state = State::load(config.clone(), metrics.clone(), fetcher, ocsp)?;
        let forward = forward::Forward::new(state.upstream().clone(), config.headers.clone(), config.access_log);
        Ok(Self {
            shared: Arc::new(Shared {
                state: Arc::new(state),
                forward: Arc::new(forward),
                conns: Arc::new(Registry::new(metrics.clone(), config.close_expired_connections)),
                metrics,
            }),
            grace: config.shutdown_grace,
        })
    }

    /// Serves on `listener` (and the admin endpoint on `admin`, if given) until `shutdown`
    /// resolves, then drains for the grace period. Meanwhile, reloads on file changes and
    /// SIGHUP, re-checks open connections, and checks the upstream's health.
    pub async fn serve(self, listener: TcpListener, admin: Option<TcpListener>, shutdown: impl Future<Output = ()>) {
        let state = self.shared.state.clone();
        let (trigger, triggers) = mpsc::unbounded_channel::<()>();
        let mut background = vec![
            tokio::spawn(reload_loop(self.shared.clone(), trigger.clone(), triggers)),
            tokio::spawn(state.fetcher().clone().run(
                {
                    let state = state.clone();
                    Arc::new(move || state.snapshot().bundle.clone())
                },
                trigger,
            )),
            tokio::spawn(admin::check_upstreams(state.clone(), state.config().upstream_check_interval)),
            tokio::spawn(conns::run_deadlines(self.shared.conns.clone())),
        ];
        if let Some(ocsp) = state.ocsp().cloned() {
            background.push(tokio::spawn(ocsp_loop(self.shared.clone(), ocsp)));
        }
        if let Some(l) = admin {
            background.push(tokio::spawn(admin::serve(l, state)));
        }
        serve::serve(listener, self.shared, shutdown, self.grace).await;
        for task in background {
            task.abort();
        }
    }
}

/// Reload triggers (file events, SIGHUP, fetched CRLs) → debounced reload → re-check open
/// connections.
async fn reload_loop(shared: Arc<Shared>, tx: mpsc::UnboundedSender<()>, mut rx: mpsc::UnboundedReceiver<()>) {
    let _watcher = match reload::watch_files(&shared.state.input_files(), tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("cannot watch the input files ({e}); reload with SIGHUP");
            None
        }
    };
    #[cfg(unix)]
    {
        let tx = tx.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading");
                    let _ = tx.send(());
                }
            });
        }
    }
    // The next re-check without an event: the CRLs' next deadline, or the safety interval. Kept
    // across loop turns, so that a stream of unrelated file events cannot postpone it.
    let next_at = |shared: &Shared| {
        let now = revocation::now_secs();
        let deadline = shared.state.snapshot().verifier.index().next_deadline(now);
        let wait = deadline
            .map_or(SAFETY_RECHECK, |t| Duration::from_secs(u64::try_from(t - now).unwrap_or(0)).min(SAFETY_RECHECK));
        tokio::time::Instant::now() + wait
    };
    let mut at = next_at(&shared);
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    return;
                }
                // Debounce: let a burst of events (rename, truncate + write) settle.
                tokio::time::sleep(reload::DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let state = shared.state.clone();
                let before = state.snapshot().verifier.clone();
                let outcome = tokio::task::spawn_blocking(move || state.reload()).await;
                if let Ok(Ok(Outcome::Swapped)) = outcome {
                    // Only the connections the change concerns (what it newly lists), unless
                    // it may do more (a CA, a scope, a signer, a policy changed).
                    recheck(&shared, Cause::Reload { before }).await;
                    at = next_at(&shared);
                }
            }
            _ = tokio::time::sleep_until(at) => {
                recheck(&shared, Cause::Timer).await;
                at = next_at(&shared);
            }
        }
    }
}

/// OCSP upkeep: re-checks the connections holding a certificate whose answer changed, or
/// lapsed without a replacement; refreshes the answers open connections use before they
/// lapse. Never walks the open connections.
async fn ocsp_loop(shared: Arc<Shared>, ocsp: Arc<revocation::ocsp::Ocsp>) {
    let every = OCSP_TICK.min(ocsp.config().max_age / 2).max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let keys = tokio::select! {
            keys = ocsp.changed() => keys,
            _ = tick.tick() => ocsp.tick(|key| shared.conns.holds(key)),
        };
        if !keys.is_empty() {
            recheck(&shared, Cause::Ocsp(keys)).await;
        }
    }
}

/// What started a re-check, and so which connections it checks.
enum Cause {
    /// A reload swapped the CRLs in use: the connections its change concerns
    /// ([`revocation::RevocationIndex::affected_since`] against `before`).
    Reload { before: Arc<tls::verifier::CrlVerifier> },
    /// OCSP answers of these certificates ([`revocation::cert_key`]) changed or lapsed.
    Ocsp(Vec<u64>),
    /// A CRL deadline or the safety interval: every connection.
    Timer,
}

/// Re-checks the open client-certificate connections against the current snapshot, those
/// that `cause` concerns ([`revocation::Affected`]), off the runtime's threads (comparing two
/// 1M-entry CRLs takes milliseconds). Also warns about CRLs close to their nextUpdate.
async fn recheck(shared: &Arc<Shared>, cause: Cause) {
    let shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let verifier = shared.state.snapshot().verifier.clone();
        let affected = match cause {
            Cause::Reload { before } => verifier.affected_since(&before),
            Cause::Ocsp(keys) => Affected::Certs(keys),
            Cause::Timer => Affected::All,
        };
        verifier.index().warn_expiring(revocation::now_secs(), shared.state.config().crl_expiry_warning);
        let r = shared.conns.recheck(&verifier, rustls_pki_types::UnixTime::now(), &affected);
        tracing::debug!(
            connections = shared.conns.len(),
            checked = r.checked,
            closed = r.closed,
            "re-checked open connections"
        );
        if r.closed > 0 {
            // The events wait for the closes in a task of their own: the next re-check does
            // not wait for them.
            tokio::spawn(async move {
                r.events.gone(conns::EVENTS_WAIT).await;
                let _ = tokio::task::spawn_blocking(move || {
                    let logged = r.events.write();
                    tracing::warn!(
                        checked = r.checked,
                        closed = r.closed,
                        signalled_ms = r.signalled.as_millis() as u64,
                        logged_ms = logged.as_millis() as u64,
                        "closed live connections whose certificate no longer passes"
                    );
                })
                .await;
            });
        }
    })
    .await;
}

/// Where [`run`] listens, once bound (port 0 resolved).
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    /// `--bind-address`:`--secure-port`.
    pub addr: SocketAddr,
    /// `--admin-address`.
    pub admin: SocketAddr,
}

/// Why [`run`] stopped before serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bad flag, config field or file (`main` exits 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The proxy's address could not be bound (exit 1).
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// The admin address could not be bound (exit 1).
    #[error("cannot listen on --admin-address {addr}: {source}")]
    ListenAdmin { addr: SocketAddr, source: std::io::Error },
    /// `--ready-file` could not be written (exit 64).
    #[error("--ready-file {}: {source}", path.display())]
    ReadyFile { path: PathBuf, source: std::io::Error },
}

/// The one entry point, shared by `main` and the demo: loads every file `config` names
/// (fetching the CRL URLs), binds the proxy's and the admin address, writes `--ready-file`,
/// tells `listening` where it listens, then serves until `shutdown` resolves and drains for
/// `--shutdown-grace`. Nothing is bound before the configuration has loaded.
pub async fn run(
    config: &Config,
    listening: impl FnOnce(Listening),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let proxy = Proxy::build(config).await?;
    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr, source })?;
    let admin_addr = config.admin_address;
    let admin =
        TcpListener::bind(admin_addr).await.map_err(|source| RunError::ListenAdmin { addr: admin_addr, source })?;
    let bound =
        Listening { addr: listener.local_addr().unwrap_or(addr), admin: admin.local_addr().unwrap_or(admin_addr) };
    tracing::info!(address = %bound.addr, admin = %bound.admin, upstream = %config.upstream.url(), "listening");
    if let Some(path) = &config.ready_file {
        write_ready_file(path, &bound).map_err(|source| RunError::ReadyFile { path: path.clone(), source })?;
    }
    listening(bound);
    proxy.serve(listener, Some(admin), shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes the bound addresses atomically (temp file + rename), so a reader never sees half:
/// line 1 the proxy's `ip:port`, line 2 `admin ip:port`.
fn write_ready_file(path: &Path, bound: &Listening) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\nadmin {}\n", bound.addr, bound.admin))?;
    std::fs::rename(&tmp, path)
}
