//! Fetching CRLs over HTTP(S): `--crl-url` and, with `--crl-from-distribution-points`, the
//! CRL Distribution Points of the CA certificates and of verified client certificates.
//!
//! Each URL is fetched at start and then refreshed every `--crl-refresh-interval` or shortly
//! before the CRL's nextUpdate, whichever comes first, with conditional requests
//! (`If-None-Match`, `If-Modified-Since`), bounded retries with backoff, a size limit
//! (`--crl-max-bytes`) and a timeout (`--crl-fetch-timeout`). A fetched CRL is used only if it parses and its
//! signature verifies against a CA of `--client-ca-file`; otherwise the last good one stays.
//! With `--crl-cache-dir`, good CRLs are also written to disk, so a restart while the CA's
//! server is down still enforces the last CRL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::ca::CaBundle;
use crate::config::Config;
use crate::error::ConfigError;
use crate::metrics::{Metrics, ResultLabel};
use crate::revocation::CrlSource;

/// Attempts per fetch (the first try and its retries), and the first backoff.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Refresh this long before nextUpdate at the latest; never more often than the floor.
const BEFORE_NEXT_UPDATE: Duration = Duration::from_secs(60);
const REFRESH_FLOOR: Duration = Duration::from_secs(5);

/// The last good copy of one URL's CRL.
#[derive(Debug, Clone)]
struct Entry {
    bytes: Arc<Vec<u8>>,
    etag: Option<String>,
    last_modified: Option<String>,
    next_update: Option<i64>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("larger than --crl-max-bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("not a usable CRL: {0}")]
    Invalid(String),
}

impl FetchError {
    fn label(&self) -> &'static str {
        match self {
            Self::Http(_) | Self::Status(_) | Self::Timeout(_) => "error",
            Self::TooLarge(_) => "too_large",
            Self::Invalid(_) => "invalid",
        }
    }
}

enum Fetched {
    NotModified,
    New(Entry),
}

/// The CRL fetcher and its store of last good CRLs.
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    urls: Mutex<Vec<String>>,
    store: Mutex<BTreeMap<String, Entry>>,
    generation: AtomicU64,
    refresh: Duration,
    /// Time limit of one attempt (connect, headers and body).
    timeout: Duration,
    max_bytes: usize,
    cache_dir: Option<PathBuf>,
    from_distribution_points: bool,
    metrics: Arc<Metrics>,
    /// Set once serving: where to announce a new CRL (the reload trigger).
    trigger: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

impl Fetcher {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let f = &config.fetch;
        let mut roots = rustls::RootCertStore::empty();
        match &f.ca_file {
            Some(path) => {
                for cert in crate::pem::certificates("--crl-url-ca-file", path)? {
                    roots.add(cert).map_err(|e| ConfigError::file("--crl-url-ca-file", path, e.to_string()))?;
                }
            }
            None if !f.urls.is_empty() || f.from_distribution_points => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    tracing::warn!("no system CA certificates found; https CRL URLs need --crl-url-ca-file");
                }
            }
            None => {}
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Other(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            urls: Mutex::new(f.urls.clone()),
            store: Mutex::default(),
            generation: AtomicU64::new(0),
            refresh: f.refresh_interval,
            timeout: f.timeout,
            max_bytes: f.max_bytes,
            cache_dir: f.cache_dir.clone(),
            from_distribution_points: f.from_distribution_points,
            metrics,
            trigger: Mutex::default(),
        })
    }

    /// The fetched CRLs, as sources for the revocation index.
    pub fn sources(&self) -> Vec<CrlSource> {
        lock(&self.store)
            .iter()
            .map(|(url, e)| CrlSource {
                flag: "--crl-url",
                name: PathBuf::from(url),
                bytes: e.bytes.clone(),
                stamp: None,
            })
            .collect()
    }

    /// Changes whenever a fetched CRL changes (part of the reload's no-op check).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Adds the distribution points of the CA certificates (when enabled), then fetches every
    /// URL once (falling back to the cache). Failures are logged; the revocation index's
    /// `--crl-missing` check decides whether start-up can go on without them.
    pub async fn initial(&self, bundle: &CaBundle) {
        if self.from_distribution_points {
            for ca in &bundle.cas {
                let Ok((_, cert)) = x509_parser::parse_x509_certificate(ca.der.as_ref()) else { continue };
                for url in cert_distribution_points(&cert) {
                    self.add_url(&url);
                }
            }
        }
        let urls = lock(&self.urls).clone();
        let fetches = urls.iter().map(|u| self.refresh_one(u, bundle));
        futures_util::future::join_all(fetches).await;
    }

    /// Runs the refresh loop of every URL (including ones discovered later) forever;
    /// `bundle` gives the CA bundle in use (downloads are verified against it), `trigger`
    /// is told when a download changed.
    pub async fn run(self: Arc<Self>, bundle: CurrentBundle, trigger: mpsc::UnboundedSender<()>) {
        *lock(&self.trigger) = Some(trigger);
        let mut running: Vec<String> = Vec::new();
        loop {
            let new: Vec<String> = lock(&self.urls).iter().filter(|u| !running.contains(u)).cloned().collect();
            for url in new {
                running.push(url.clone());
                tokio::spawn(self.clone().refresh_loop(url, bundle.clone()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Learns the distribution points of a verified client certificate (when enabled).
    pub fn discover_from(&self, cert: &x509_parser::certificate::X509Certificate<'_>) {
        if self.from_distribution_points {
            for url in cert_distribution_points(cert) {
                self.add_url(&url);
            }
        }
    }

    fn add_url(&self, url: &str) {
        let mut urls = lock(&self.urls);
        if !urls.iter().any(|u| u == url) {
            tracing::info!(url, "CRL distribution point discovered");
            urls.push(url.to_string());
        }
    }

    async fn refresh_loop(self: Arc<Self>, url: String, current: CurrentBundle) {
        // A URL discovered after start has nothing yet: fetch it at once.
        let mut first = !lock(&self.store).contains_key(&url);
        loop {
            if !first {
                tokio::time::sleep(self.next_refresh(&url)).await;
            }
            first = false;
            let bundle = current();
            if self.refresh_one(&url, &bundle).await
                && let Some(t) = lock(&self.trigger).as_ref()
            {
                let _ = t.send(());
            }
        }
    }

    /// The interval, or earlier if the CRL's nextUpdate comes first.
    fn next_refresh(&self, url: &str) -> Duration {
        let next_update = lock(&self.store).get(url).and_then(|e| e.next_update);
        let Some(next) = next_update else { return self.refresh };
        let left = u64::try_from(next - crate::revocation::now_secs()).unwrap_or(0);
        let before = Duration::from_secs(left).saturating_sub(BEFORE_NEXT_UPDATE);
        self.refresh.min(before.max(REFRESH_FLOOR))
    }

    /// Fetches one URL with retries; stores a new good CRL. Returns whether it changed.
    async fn refresh_one(&self, url: &str, bundle: &CaBundle) -> bool {
        let previous = lock(&self.store).get(url).cloned().or_else(|| self.read_cache(url));
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.fetch(url, previous.as_ref(), bundle).await {
                Ok(Fetched::NotModified) => {
                    self.count("not_modified");
                    // A cached copy validated by the server becomes the one in use.
                    return match previous {
                        Some(p) if !lock(&self.store).contains_key(url) => self.store(url, p),
                        _ => false,
                    };
                }
                Ok(Fetched::New(entry)) => {
                    self.count("ok");
                    tracing::info!(url, bytes = entry.bytes.len(), "CRL fetched");
                    self.write_cache(url, &entry);
                    return self.store(url, entry);
                }
                Err(e) => {
                    self.count(e.label());
                    let last = attempt == ATTEMPTS || matches!(e, FetchError::TooLarge(_) | FetchError::Invalid(_));
                    tracing::warn!(
                        url,
                        attempt,
                        "CRL fetch failed: {e}{}",
                        if last { "; keeping the last good CRL" } else { "" }
                    );
                    if last {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        // Nothing fetched: a cached copy is better than none (it is verified like any other).
        match previous {
            Some(p) if !lock(&self.store).contains_key(url) => {
                tracing::warn!(url, "using the cached CRL from --crl-cache-dir");
                self.store(url, p)
            }
            _ => false,
        }
    }

    fn store(&self, url: &str, entry: Entry) -> bool {
        let mut store = lock(&self.store);
        if store.get(url).is_some_and(|e| e.bytes == entry.bytes) {
            return false;
        }
        store.insert(url.to_string(), entry);
        self.generation.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn count(&self, result: &'static str) {
        self.metrics.crl_fetches.get_or_create(&ResultLabel { result }).inc();
    }

    async fn fetch(&self, url: &str, previous: Option<&Entry>, bundle: &CaBundle) -> Result<Fetched, FetchError> {
        let uri: Uri = url.parse().map_err(|e| FetchError::Http(format!("invalid URL: {e}")))?;
        let mut req = http::Request::get(uri);
        if let Some(p) = previous {
            if let Some(etag) = &p.etag {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &p.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let req = req.body(Empty::new()).map_err(|e| FetchError::Http(e.to_string()))?;
        let attempt = async {
            let resp = self.client.request(req).await.map_err(|e| FetchError::Http(crate::error::error_chain(&e)))?;
            match resp.status() {
                StatusCode::NOT_MODIFIED if previous.is_some() => return Ok(Fetched::NotModified),
                StatusCode::OK => {}
                other => return Err(FetchError::Status(other)),
            }
            let header_text = |h| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (etag, last_modified) = (header_text(header::ETAG), header_text(header::LAST_MODIFIED));
            if let Some(len) =
                resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                && len > self.max_bytes
            {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            let body = Limited::new(resp.into_body(), self.max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(self.max_bytes)
                    } else {
                        FetchError::Http(e.to_string())
                    }
                })?
                .to_bytes();
            let next_update = validate(url, &body, bundle).map_err(FetchError::Invalid)?;
            Ok(Fetched::New(Entry { bytes: Arc::new(body.to_vec()), etag, last_modified, next_update }))
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| FetchError::Timeout(self.timeout))?
    }

    fn cache_path(&self, url: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let name = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        Some(dir.join(format!("{name}.crl")))
    }

    fn write_cache(&self, url: &str, entry: &Entry) {
        let Some(path) = self.cache_path(url) else { return };
        let tmp = path.with_extension("tmp");
        let result = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .and_then(|_| std::fs::write(&tmp, entry.bytes.as_slice()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(url, path = %path.display(), "cannot write the CRL cache: {e}");
        }
    }

    /// The cached copy of a URL's CRL (no validators: it is re-fetched unconditionally).
    fn read_cache(&self, url: &str) -> Option<Entry> {
        let bytes = std::fs::read(self.cache_path(url)?).ok()?;
        Some(Entry { bytes: Arc::new(bytes), etag: None, last_modified: None, next_update: None })
    }
}

/// Every CRL in `bytes` must parse and verify against a CA of the bundle (or a signer
/// certificate shipped with it); returns the earliest nextUpdate.
fn validate(url: &str, bytes: &[u8], bundle: &CaBundle) -> Result<Option<i64>, String> {
    let algs = crate::tls::provider().signature_verification_algorithms;
    crate::revocation::index::verify_fetched(bundle, "--crl-url", url, bytes, &algs)
}

/// The CA bundle in use, read when a download is verified.
pub type CurrentBundle = Arc<dyn Fn() -> Arc<CaBundle> + Send + Sync>;

/// The http(s) URLs of a certificate's CRL Distribution Points extension.
pub fn cert_distribution_points(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n
                            && (u.starts_with("http://") || u.starts_with("https://"))
                        {
                            urls.push(u.to_string());
                        }
                    }
                }
            }
        }
    }
    urls
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
