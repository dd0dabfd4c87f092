//! The reloadable state: everything built from files (serving certificate, client CAs, CRLs,
//! upstream CA, front-proxy client certificate) is read, parsed and verified together; the
//! client side lives in one [`Snapshot`], swapped atomically, and the upstream credentials
//! are published into the long-lived [`Upstream`] (its pools and warm connections outlive
//! every reload; its next new connection uses what was published). A reload refuses a CRL
//! older than the one in use and swaps only when everything is valid; on any failure the
//! last good material keeps serving and the failure is logged (with the file) and counted.
//! New handshakes take the current snapshot; open connections are re-checked by the caller
//! after a swap.
//!
//! Triggers: inotify events in the directories of every input file (atomic rename, truncate +
//! write, Kubernetes `..data` symlink swaps), debounced, and SIGHUP.

pub mod fetch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::ca::CaBundle;
use crate::config::Config;
use crate::error::ConfigError;
use crate::metrics::{KindLabel, Metrics};
use crate::revocation::ocsp::Ocsp;
use crate::revocation::{Crl, RevocationIndex};
use crate::tls::TlsMaterial;
use crate::tls::verifier::CrlVerifier;
use crate::upstream::{Credentials, Upstream};
use fetch::Fetcher;

/// The client side built from the input files, validated.
pub struct Snapshot {
    pub server_tls: Arc<rustls::ServerConfig>,
    pub verifier: Arc<CrlVerifier>,
    /// The client CA bundle (fetched CRLs are verified against it before use).
    pub bundle: Arc<CaBundle>,
    /// Metadata of the input files this was built from (to skip no-op reloads).
    stamp: Vec<FileStamp>,
}

/// Identity of a file's content as far as metadata tells: path, size, mtime, inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    kind: &'static str,
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// The stamps of the input files, plus one for the fetched CRLs (their generation).
fn stamp(files: &[(&'static str, PathBuf)], fetcher: &Fetcher) -> Vec<FileStamp> {
    let fetched = FileStamp {
        kind: "crl",
        path: PathBuf::from("<fetched CRLs>"),
        len: fetcher.generation(),
        modified: None,
        inode: 0,
    };
    files
        .iter()
        .map(|(kind, p)| {
            let m = std::fs::metadata(p).ok();
            FileStamp {
                kind,
                path: p.clone(),
                len: m.as_ref().map_or(0, |m| m.len()),
                modified: m.as_ref().and_then(|m| m.modified().ok()),
                inode: m.as_ref().map_or(0, inode),
            }
        })
        .chain(std::iter::once(fetched))
        .collect()
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No input file changed.
    Unchanged,
    /// A new snapshot is in use.
    Swapped,
}

/// The current snapshot and how to rebuild it.
pub struct State {
    config: Config,
    current: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    fetcher: Arc<Fetcher>,
    /// Built once; reloads publish its client credentials.
    upstream: Arc<Upstream>,
    /// The OCSP checker and its cache, kept across reloads (`None` with `--ocsp=off`).
    ocsp: Option<Arc<Ocsp>>,
}

impl State {
    /// Loads the first snapshot; errors are start-up errors.
    pub fn load(
        config: Config,
        metrics: Arc<Metrics>,
        fetcher: Arc<Fetcher>,
        ocsp: Option<Arc<Ocsp>>,
    ) -> Result<Self, ConfigError> {
        let (snapshot, upstream_tls) = build(&config, &fetcher, ocsp.clone(), None)?;
        log_crls(&snapshot.verifier, "CRL loaded (signature verified)");
        snapshot.verifier.index().warn_expiring(crate::revocation::now_secs(), config.crl_expiry_warning);
        let upstream = Arc::new(Upstream::new(&config.upstream, Credentials::new(upstream_tls), &metrics));
        Ok(Self { config, current: ArcSwap::from_pointee(snapshot), metrics, fetcher, upstream, ocsp })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The snapshot new handshakes and requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// The OCSP checker (`None` with `--ocsp=off`).
    pub fn ocsp(&self) -> Option<&Arc<Ocsp>> {
        self.ocsp.as_ref()
    }

    /// The upstreams, built once.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Every file the proxy reads.
    pub fn input_files(&self) -> Vec<PathBuf> {
        input_files(&self.config).into_iter().map(|(_, p)| p).collect()
    }

    /// Rebuilds from the files; swaps only if everything is valid and no CRL goes backwards.
    pub fn reload(&self) -> Result<Outcome, ConfigError> {
        let current = self.snapshot();
        let now = stamp(&input_files(&self.config), &self.fetcher);
        if now == current.stamp {
            return Ok(Outcome::Unchanged);
        }
        let mut changed: Vec<&'static str> =
            now.iter().zip(&current.stamp).filter(|(a, b)| a != b).map(|(a, _)| a.kind).collect();
        changed.dedup();
        let previous = Some(current.verifier.index().as_ref());
        let result = build(&self.config, &self.fetcher, self.ocsp.clone(), previous).and_then(|next| {
            refuse_rollback(current.verifier.index(), next.0.verifier.index())?;
            Ok(next)
        });
        match result {
            Ok((next, upstream_tls)) => {
                log_crls(&next.verifier, "CRL in use after reload");
                next.verifier.index().warn_expiring(crate::revocation::now_secs(), self.config.crl_expiry_warning);
                self.current.store(Arc::new(next));
                // Only when its files changed: unchanged credentials keep their TLS session
                // cache, and the pools keep their connections.
                if changed.iter().any(|k| UPSTREAM_KINDS.contains(k)) {
                    self.upstream.credentials().publish(upstream_tls);
                    tracing::info!("new upstream credentials: used by new upstream connections");
                }
                for kind in changed {
                    self.metrics.reloads.get_or_create(&KindLabel { kind }).inc();
                }
                tracing::info!("reload done: new material in use for new handshakes");
                Ok(Outcome::Swapped)
            }
            Err(e) => {
                self.metrics.reload_failures.get_or_create(&KindLabel { kind: failed_kind(&e) }).inc();
                tracing::error!(event = "reload_failed", "reload failed, still serving the last good material: {e}");
                Err(e)
            }
        }
    }
}

/// The file kinds the upstream credentials are built from.
const UPSTREAM_KINDS: [&str; 2] = ["upstream_ca", "proxy_client_cert"];

/// Loads and validates every file: the snapshot, and the upstream credentials to publish.
fn build(
    config: &Config,
    fetcher: &Fetcher,
    ocsp: Option<Arc<Ocsp>>,
    previous: Option<&RevocationIndex>,
) -> Result<(Snapshot, rustls::ClientConfig), ConfigError> {
    let stamp = stamp(&input_files(config), fetcher);
    let (tls, warnings) = TlsMaterial::load(config, &fetcher.sources(), ocsp, previous)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let snapshot = Snapshot { server_tls: tls.server, verifier: tls.verifier, bundle: Arc::new(tls.bundle), stamp };
    Ok((snapshot, tls.upstream))
}

/// Every input file with its kind (the `kind` label of the reload metrics).
fn input_files(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut files = vec![("serving_cert", config.tls_cert_file.clone()), ("client_ca", config.client_ca_file.clone())];
    files.extend(config.tls_private_key_file.clone().map(|p| ("serving_cert", p)));
    files.extend(config.client_ca_names_file.clone().map(|p| ("client_ca", p)));
    files.extend(config.crl_files.iter().map(|p| ("crl", p.clone())));
    files.push(("upstream_ca", config.upstream.ca_file.clone()));
    files.push(("proxy_client_cert", config.upstream.client_cert_file.clone()));
    files.extend(config.upstream.client_key_file.clone().map(|p| ("proxy_client_cert", p)));
    files
}

/// The file kind a reload error is about, from the flag it names.
fn failed_kind(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::File { flag, .. } => match *flag {
            "--tls-cert-file" | "--tls-private-key-file" => "serving_cert",
            "--client-ca-file" | "--client-ca-names-file" => "client_ca",
            "--crl-file" => "crl",
            "--upstream-ca-file" => "upstream_ca",
            "--proxy-client-cert-file" | "--proxy-client-key-file" => "proxy_client_cert",
            _ => "other",
        },
        ConfigError::MissingCrl { .. } => "crl",
        _ => "other",
    }
}

/// A CRL may not be replaced by an older one of the same scope (a replayed CRL could
/// un-revoke), and a CRL newly left out (bad signature, unknown issuer, unsupported) fails
/// the reload so that the last good material stays; CRLs already left out before (the same
/// bytes) do not block later reloads.
fn refuse_rollback(current: &RevocationIndex, next: &RevocationIndex) -> Result<(), ConfigError> {
    for r in next.rejected() {
        if !current.rejected().iter().any(|c| c.digest == r.digest) {
            return Err(ConfigError::file(r.flag, &r.file, format!("CRL #{}: {}", r.number, r.reason)));
        }
    }
    for new in next.crls() {
        let Some(old) = current.crls().find(|c| c.same_scope(new)) else { continue };
        if new.older_than(old) {
            return Err(ConfigError::file(
                new.flag,
                &new.file,
                format!(
                    "CRL for {} is older than the one in use (CRL number {} < {}, thisUpdate {} vs {}); refusing the rollback",
                    new.issuer,
                    number(new),
                    number(old),
                    crate::revocation::fmt_time(new.this_update),
                    crate::revocation::fmt_time(old.this_update)
                ),
            ));
        }
    }
    Ok(())
}

fn number(c: &Crl) -> String {
    c.crl_number.as_ref().map_or("none".into(), hex::encode)
}

fn log_crls(verifier: &CrlVerifier, what: &str) {
    for crl in verifier.index().crls() {
        tracing::info!(
            issuer = %crl.issuer,
            crl = %crl.source,
            scope = %crl.scope.describe(),
            signer = %crl.signer.subject,
            entries = crl.len(),
            version = crl.version,
            crl_number = %number(crl),
            delta = %crl.delta.as_ref().map_or("none".into(), |(_, s)| s.clone()),
            this_update = %crate::revocation::fmt_time(crl.this_update),
            next_update = %crl.next_update.map_or("none".into(), crate::revocation::fmt_time),
            "{what}"
        );
    }
    for r in verifier.index().rejected() {
        tracing::error!(event = "crl_rejected", crl = %r.source, "CRL left out, it decides nothing: {}", r.reason);
    }
}

/// How long to wait for a burst of file events to settle before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the directories of every input file; sends a unit on each relevant event.
/// Uses inotify; where that is unavailable (exhausted watch limits, some container
/// filesystems) falls back to polling the files every second. Keep the result alive.
pub fn watch_files(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| parent_dir(f)).collect();
    dirs.sort();
    dirs.dedup();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler.clone()).and_then(|w| watch_dirs(w, &dirs)) {
        Ok(w) => Ok(w),
        Err(e) => {
            tracing::warn!("inotify unavailable ({e}); polling the input files every second instead");
            let poll = notify::PollWatcher::new(
                handler,
                notify::Config::default().with_poll_interval(Duration::from_secs(1)),
            )?;
            watch_dirs(poll, &dirs)
        }
    }
}

fn watch_dirs<W: notify::Watcher + Send + 'static>(
    mut w: W,
    dirs: &[PathBuf],
) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    for d in dirs {
        w.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(Box::new(w))
}

fn parent_dir(f: &Path) -> PathBuf {
    match f.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
