//! Shared fixture for the integration tests: a PKI generated in the test (rcgen), the
//! kube-apiserver stand-in (`sim`) on an ephemeral loopback port, the real
//! `kube-crl-proxy` binary started on `127.0.0.1:0` and awaited through `--ready-file`,
//! and small rustls/hyper clients that can pick the TLS and HTTP versions.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use kube_crl_proxy_testkit::pki::{Authority, Issued, Spec, write};
use kube_crl_proxy_testkit::sim::{SimConfig, UserInfo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TOKEN: &str = "test-token-abc";

/// Bound for what should be prompt (a response head, an admin scrape): detects hangs, not speed.
const WAIT: Duration = Duration::from_secs(10);

/// Every certificate the tests use, written under `dir`.
pub struct Pki {
    pub dir: PathBuf,
    pub root: Authority,
    pub users_ca: Authority,
    pub front_proxy_ca: Authority,
    pub serving: Issued,
    pub front_proxy_client: Issued,
    pub alice: Issued,
    pub bob: Issued,
}

impl Pki {
    /// root → users intermediate → alice (O=dev, O=ops) and bob (revoked); a front-proxy CA;
    /// a serving certificate for 127.0.0.1/localhost. CRLs: root (empty), users CA (bob).
    pub fn new(dir: &Path) -> Self {
        let root = Authority::root("test-root-ca");
        let users_ca = root.intermediate("test-users-ca");
        let front_proxy_ca = Authority::root("test-front-proxy-ca");
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let serving = root.issue(&Spec::server("kube-apiserver", &["localhost"], &ips));
        let front_proxy_client = front_proxy_ca.issue(&Spec::client("front-proxy-client", &[]));
        let alice = users_ca.issue(&Spec::client("alice", &["dev", "ops"]));
        let bob = users_ca.issue(&Spec::client("bob", &["dev"]));
        let pki =
            Self { dir: dir.to_path_buf(), root, users_ca, front_proxy_ca, serving, front_proxy_client, alice, bob };
        write(&pki.path("ca.crt"), &pki.root.cert_pem);
        write(&pki.path("client-ca.crt"), format!("{}{}", pki.root.cert_pem, pki.users_ca.cert_pem));
        write(&pki.path("apiserver.crt"), &pki.serving.cert_pem);
        write(&pki.path("apiserver.key"), &pki.serving.key_pem);
        write(&pki.path("front-proxy-client.crt"), &pki.front_proxy_client.cert_pem);
        write(&pki.path("front-proxy-client.key"), &pki.front_proxy_client.key_pem);
        pki.write_crls(&[&pki.bob.serial.clone()], 1);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The content of `crl.pem`: the root's CRL (empty) and the users CA's listing `revoked`,
    /// both with CRL number `number`, valid for a week.
    pub fn crl_pem(&self, revoked: &[&[u8]], number: u64) -> String {
        format!(
            "{}{}",
            self.root.crl(&[], number, time::Duration::days(7)),
            self.users_ca.crl(revoked, number, time::Duration::days(7))
        )
    }

    /// Writes `crl.pem` in place (see [`Pki::crl_pem`]).
    pub fn write_crls(&self, revoked: &[&[u8]], number: u64) {
        write(&self.path("crl.pem"), self.crl_pem(revoked, number));
    }

    /// Replaces `crl.pem` atomically (written beside it, renamed over it), as most tools do.
    pub fn replace_crls(&self, revoked: &[&[u8]], number: u64) {
        replace_by_rename(&self.path("crl.pem"), self.crl_pem(revoked, number));
    }

    /// Writes a user's certificate chain (leaf + users CA) and key as `<name>.crt/.key`.
    pub fn write_user(&self, name: &str, cert: &Issued) -> (PathBuf, PathBuf) {
        let (c, k) = (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")));
        write(&c, format!("{}{}", cert.cert_pem, self.users_ca.cert_pem));
        write(&k, &cert.key_pem);
        (c, k)
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der.clone()
    }

    /// The standard flags pointing the proxy at this PKI and an upstream.
    pub fn proxy_args(&self, upstream: SocketAddr) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-cert-file".into(),
            p("apiserver.crt"),
            "--tls-private-key-file".into(),
            p("apiserver.key"),
            "--client-ca-file".into(),
            p("client-ca.crt"),
            "--crl-file".into(),
            p("crl.pem"),
            "--upstream".into(),
            format!("https://{upstream}"),
            "--upstream-ca-file".into(),
            p("ca.crt"),
            "--upstream-server-name".into(),
            "localhost".into(),
            "--proxy-client-cert-file".into(),
            p("front-proxy-client.crt"),
            "--proxy-client-key-file".into(),
            p("front-proxy-client.key"),
        ]
    }

    /// A TLS acceptor for a hand-made upstream: the serving certificate, no client
    /// certificate asked for, ALPN `alpn`.
    pub fn serving_acceptor(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let key = PrivateKeyDer::from_pem_slice(self.serving.key_pem.as_bytes()).expect("key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(kube_crl_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.serving.der.clone()], key)
            .expect("serving cert");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }

    /// The stand-in's configuration: x509 users from the root, front proxy from its CA.
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            serving_chain: vec![self.serving.der.clone()],
            serving_key: PrivateKeyDer::from_pem_slice(self.serving.key_pem.as_bytes()).expect("key"),
            client_ca: vec![self.root.der.clone()],
            requestheader_ca: vec![self.front_proxy_ca.der.clone()],
            requestheader_allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            uid_headers: vec!["X-Remote-Uid".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_header_prefixes: vec!["X-Remote-Extra-".into()],
            tokens: vec![(
                TOKEN.into(),
                UserInfo { username: "token-user".into(), groups: vec!["tokens".into()], ..Default::default() },
            )],
        }
    }
}

/// The stand-in upstream, stopped when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Upstream {
    pub async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let addr = listener.local_addr().expect("sim addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kube_crl_proxy_testkit::sim::serve(listener, Arc::new(config), async move {
            let _ = rx.await;
        }));
        Self { addr, stop: Some(tx), task: Some(task) }
    }

    /// Stops accepting and closes every connection (for "upstream killed" tests).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The real binary, started on an ephemeral port; killed (by its PID) when dropped.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin endpoint (`--admin-address 127.0.0.1:0`).
    pub admin: SocketAddr,
    pub log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kube-crl-proxy")
}

impl ProxyProcess {
    /// Starts the proxy with `args` (plus bind/port/ready-file) and waits until it listens.
    pub fn start(dir: &Path, args: &[String]) -> Self {
        Self::start_under(dir, args, &[])
    }

    /// Like [`Self::start`], with the proxy pinned to one core (`taskset -c 0`): its runtime
    /// then has a single worker thread, so a blocked worker would stall every connection.
    pub fn start_pinned(dir: &Path, args: &[String]) -> Self {
        Self::start_under(dir, args, &["taskset", "-c", "0"])
    }

    fn start_under(dir: &Path, args: &[String], wrapper: &[&str]) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ready = dir.join(format!("ready-{n}"));
        let log = dir.join(format!("proxy-{n}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = command
            .args(["--bind-address", "127.0.0.1", "--secure-port", "0", "--admin-address", "127.0.0.1:0"])
            .args(["--upstream-check-interval", "500ms", "--ready-file"])
            .arg(&ready)
            .args(["--log-level", "debug"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn kube-crl-proxy");
        let unset: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut p = Self { child, addr: unset, admin: unset, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(&ready) {
                let mut lines = s.lines();
                let addr = lines.next().and_then(|l| l.trim().parse().ok());
                let admin = lines.next().and_then(|l| l.strip_prefix("admin ")).and_then(|a| a.trim().parse().ok());
                if let (Some(addr), Some(admin)) = (addr, admin) {
                    p.addr = addr;
                    p.admin = admin;
                    return p;
                }
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("kube-crl-proxy exited with {status} before listening:\n{}", p.logs());
            }
            assert!(Instant::now() < deadline, "kube-crl-proxy did not become ready:\n{}", p.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(Instant::now() < deadline, "log never contained {needle:?}:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` (for start-up errors); returns (status, stderr).
pub fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0", "--admin-address", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kube-crl-proxy");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Options of a test client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Http {
    H1,
    H2,
}

/// A rustls client config trusting the test root, with an optional client certificate.
pub fn client_tls(
    ca: &CertificateDer<'static>,
    cert: Option<(&Issued, &Authority)>,
    http: Http,
) -> rustls::ClientConfig {
    client_tls_versions(ca, cert, http, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

pub fn client_tls_versions(
    ca: &CertificateDer<'static>,
    cert: Option<(&Issued, &Authority)>,
    http: Http,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let b = rustls::ClientConfig::builder_with_provider(kube_crl_proxy::tls::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut c = match cert {
        Some((leaf, issuer)) => {
            let chain = vec![leaf.der.clone(), issuer.der.clone()];
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = match http {
        Http::H1 => vec![b"http/1.1".to_vec()],
        Http::H2 => vec![b"h2".to_vec()],
    };
    c
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects and completes the TLS handshake (TLS 1.3 reports a refused client certificate
/// only on the first read, so callers that expect an alert should send a request).
pub async fn connect(addr: SocketAddr, tls: rustls::ClientConfig) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request over a new connection with the given HTTP version and returns the
/// whole response. Errors are returned as text (with the TLS alert, if one was received).
/// Bounded: no answer within 30 s is an error too (a test must never hang).
pub async fn request(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    http: Http,
    req: http::Request<Full<Bytes>>,
) -> Result<Reply, String> {
    const BOUND: Duration = Duration::from_secs(30);
    match tokio::time::timeout(BOUND, request_unbounded(addr, tls, http, req)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {BOUND:?}")),
    }
}

async fn request_unbounded(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    http: Http,
    req: http::Request<Full<Bytes>>,
) -> Result<Reply, String> {
    use kube_crl_proxy_testkit::client::{connection_error_first, describe_client_error};
    let stream = connect(addr, tls).await.map_err(|e| describe_client_error(&e))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    match http {
        Http::H1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            let driver = tokio::spawn(conn);
            let result =
                async { collect(send.send_request(req).await.map_err(|e| describe_client_error(&e))?).await }.await;
            connection_error_first(result, driver).await
        }
        Http::H2 => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let driver = tokio::spawn(conn);
            let result =
                async { collect(send.send_request(req).await.map_err(|e| describe_client_error(&e))?).await }.await;
            connection_error_first(result, driver).await
        }
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = resp.status();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| kube_crl_proxy_testkit::client::describe_client_error(&e))?
        .to_bytes();
    Ok(Reply { status, headers, body, version })
}

/// A GET to `path` (with `localhost` as authority).
pub fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("https://localhost{path}")).body(Full::new(Bytes::new())).expect("request")
}

/// The SelfSubjectReview POST `kubectl auth whoami` makes.
pub fn whoami_request() -> http::Request<Full<Bytes>> {
    http::Request::post("https://localhost/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}"#)))
        .expect("request")
}

/// The userInfo of a SelfSubjectReview reply.
pub fn user_info(reply: &Reply) -> UserInfo {
    assert!(reply.status.is_success(), "{}: {}", reply.status, String::from_utf8_lossy(&reply.body));
    serde_json::from_value(reply.json()["status"]["userInfo"].clone()).expect("userInfo")
}

/// Replaces `path` atomically with `contents`: written to `<path>.new`, renamed over `path`.
pub fn replace_by_rename(path: &Path, contents: impl AsRef<[u8]>) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {tmp:?}: {e}"));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {tmp:?} over {}: {e}", path.display()));
}

/// Replaces (or appends) `flag value` in `args`; `None` removes the flag and its value.
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: Option<&str>) {
    let at = args.iter().position(|a| a == flag);
    match (at, value) {
        (Some(i), Some(v)) => args[i + 1] = v.to_string(),
        (Some(i), None) => {
            args.drain(i..i + 2);
        }
        (None, Some(v)) => args.extend([flag.to_string(), v.to_string()]),
        (None, None) => {}
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Checks a Kubernetes `Status` error response and returns its JSON.
pub fn assert_status(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
    code: u16,
    reason: &str,
) -> serde_json::Value {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status.as_u16(), code, "{text}");
    assert_eq!(headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]), "{headers:?}");
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "kubectl prints the message: {v}");
    v
}

/// Polls the proxy's log (async, so an in-process stand-in keeps running) until it has `needle`.
pub async fn wait_log(proxy: &ProxyProcess, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let logs = proxy.logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(Instant::now() < deadline, "log never contained {needle:?}:\n{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Admin endpoint and the proxy process

/// A plain-HTTP GET against the admin endpoint: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect admin");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("admin handshake");
    tokio::spawn(conn);
    let req =
        http::Request::get(path).header("host", "admin").body(http_body_util::Empty::<Bytes>::new()).expect("request");
    let resp =
        tokio::time::timeout(WAIT, send.send_request(req)).await.expect("admin answers").expect("admin response");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("admin body in time")
        .expect("admin body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `path` until `pred(status, body)` holds (bounded); returns the last body.
pub async fn wait_admin(addr: SocketAddr, path: &str, what: &str, pred: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = admin_get(addr, path).await;
        if pred(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: never {what}; last: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one exact series line (`name{labels}`) in a scrape, if present.
pub fn series(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// The value of a per-CRL series (labels `issuer`, `scope`, `key`) of the first CRL of
/// `issuer` in a scrape, e.g. `crl_series(m, "kube_crl_proxy_crl_entries", "CN=test-users-ca")`.
pub fn crl_series(scrape: &str, family: &str, issuer: &str) -> Option<f64> {
    let prefix = format!("{family}{{issuer=\"{issuer}\",");
    scrape.lines().find(|l| l.starts_with(&prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every series of a metric family (`name{...} value` lines) in a scrape.
pub fn family_sum(scrape: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    scrape.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// How many file descriptors a process has open (`/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count()
}

/// A temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kcp-test-").tempdir().expect("tempdir")
}

/// A standard environment: PKI, stand-in upstream and the proxy in front of it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub pki: Pki,
    pub upstream: Upstream,
    pub proxy: ProxyProcess,
}

impl Env {
    pub async fn start(extra: &[&str]) -> Self {
        let tmp = tempdir();
        let pki = Pki::new(tmp.path());
        let upstream = Upstream::start(pki.sim_config()).await;
        let mut args = pki.proxy_args(upstream.addr);
        args.extend(extra.iter().map(|s| s.to_string()));
        let proxy = ProxyProcess::start(tmp.path(), &args);
        Self { tmp, pki, upstream, proxy }
    }

    pub fn tls(&self, user: Option<&Issued>, http: Http) -> rustls::ClientConfig {
        client_tls(&self.pki.root_der(), user.map(|u| (u, &self.pki.users_ca)), http)
    }

    pub async fn request(
        &self,
        user: Option<&Issued>,
        http: Http,
        req: http::Request<Full<Bytes>>,
    ) -> Result<Reply, String> {
        request(self.proxy.addr, self.tls(user, http), http, req).await
    }
}

// ---------------------------------------------------------------------------
// Streaming requests and responses

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body of any kind: empty, whole, or fed chunk by chunk.
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn empty() -> ReqBody {
    http_body_util::Empty::new().map_err(|n| match n {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).map_err(|n| match n {}).boxed()
}

/// A body fed chunk by chunk through the sender; dropping the sender ends it (no length:
/// HTTP/1.1 sends it chunked).
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ReqBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, BoxError>(hyper::body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// A request to `path` (authority `localhost`) with a streaming-capable body.
pub fn stream_request(method: http::Method, path: &str, body: ReqBody) -> http::Request<ReqBody> {
    http::Request::builder().method(method).uri(format!("https://localhost{path}")).body(body).expect("request")
}

/// Sends `req` on a new connection; returns the response with its body still streaming.
pub async fn open(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    http: Http,
    req: http::Request<ReqBody>,
) -> http::Response<hyper::body::Incoming> {
    let resp = try_open(addr, tls, http, req).await.unwrap_or_else(|e| panic!("{http:?} request: {e}"));
    let want = if http == Http::H1 { http::Version::HTTP_11 } else { http::Version::HTTP_2 };
    assert_eq!(resp.version(), want, "negotiated HTTP version");
    resp
}

/// [`open`] for callers that expect failures (a refused certificate): the error as kubectl
/// would print it, the TLS alert if there was one. The response head is bounded by 10 s.
pub async fn try_open(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    http: Http,
    req: http::Request<ReqBody>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    use kube_crl_proxy_testkit::client::{connection_error_first, describe_client_error};
    let stream = connect(addr, tls).await.map_err(|e| describe_client_error(&e))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let sent = async {
        match http {
            Http::H1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
                let driver = tokio::spawn(conn);
                match send.send_request(req).await {
                    Ok(resp) => Ok(resp),
                    Err(e) => connection_error_first(Err(describe_client_error(&e)), driver).await,
                }
            }
            Http::H2 => {
                let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| describe_client_error(&e))?;
                let driver = tokio::spawn(conn);
                match send.send_request(req).await {
                    Ok(resp) => Ok(resp),
                    Err(e) => connection_error_first(Err(describe_client_error(&e)), driver).await,
                }
            }
        }
    };
    tokio::time::timeout(WAIT, sent).await.map_err(|_| format!("no response head within {WAIT:?}"))?
}

/// The next data chunk of `body` (trailers skipped); `Ok(None)` at its end. Panics after `within`.
pub async fn next_chunk(body: &mut hyper::body::Incoming, within: Duration) -> Result<Option<Bytes>, hyper::Error> {
    let deadline = tokio::time::Instant::now() + within;
    // A body has at most one trailers frame, so this loops at most twice per data frame.
    for _ in 0..3 {
        match tokio::time::timeout_at(deadline, body.frame()).await.expect("body frame in time") {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
    panic!("more than one trailers frame");
}

/// Reads from `body` until at least `n` bytes have arrived (bounded by `within`).
pub async fn read_at_least(body: &mut hyper::body::Incoming, n: usize, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_chunk(body, left).await.expect("body") {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => panic!("body ended after {} of {n} bytes", got.len()),
        }
    }
    got
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over TLS (upgrades, exact request heads)

/// An exec request the stand-in upgrades and answers by echoing bytes.
pub const EXEC: &str = "/api/v1/namespaces/default/pods/demo/exec?command=sh";

/// The values of header `name` (any case) among `(name, value)` pairs.
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a response head up to the blank line; returns it and the bytes after it.
pub async fn read_head(stream: &mut TlsStream) -> (String, Vec<u8>) {
    try_read_head(stream).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_head`] for callers that expect failures: the error as kubectl would print it.
pub async fn try_read_head(stream: &mut TlsStream) -> Result<(String, Vec<u8>), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8(buf).map_err(|_| "response head is not text")?, rest));
        }
        if buf.len() >= 64 * 1024 {
            return Err("response head too long".into());
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| format!("no response head within {WAIT:?}"))?
            .map_err(|e| kube_crl_proxy_testkit::client::describe_client_error(&e))?;
        if n == 0 {
            return Err(format!("connection closed before the end of the head: {:?}", String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Status code and headers (names lower-cased) of a response head.
pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status_line = lines.next().expect("status line");
    let code = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (code, headers)
}

/// Sends an upgrade request by hand and checks the 101; returns the stream and the 101's headers.
pub async fn upgrade(addr: SocketAddr, tls: rustls::ClientConfig, req: &str) -> (TlsStream, Vec<(String, String)>) {
    try_upgrade(addr, tls, req).await.unwrap_or_else(|e| panic!("upgrade: {e}"))
}

/// [`upgrade`] for callers that expect failures: the error as kubectl would print it.
pub async fn try_upgrade(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    req: &str,
) -> Result<(TlsStream, Vec<(String, String)>), String> {
    let describe = |e: std::io::Error| kube_crl_proxy_testkit::client::describe_client_error(&e);
    let mut s = connect(addr, tls).await.map_err(describe)?;
    s.write_all(req.as_bytes()).await.map_err(describe)?;
    let (head, rest) = try_read_head(&mut s).await?;
    let (code, headers) = parse_head(&head);
    if code != 101 || !values(&headers, "connection").iter().any(|v| v.eq_ignore_ascii_case("upgrade")) {
        return Err(format!("not an upgrade: {head}"));
    }
    if !rest.is_empty() {
        return Err(format!("bytes after the 101 before the client spoke: {rest:?}"));
    }
    Ok((s, headers))
}

/// A SPDY/3.1 exec upgrade request (kubectl exec before 1.30), `extra` header lines added.
pub fn spdy_request(extra: &str) -> String {
    format!(
        "POST {EXEC} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\n{extra}\r\n"
    )
}

/// An open watch through the proxy: the response body, read frame by frame.
pub struct Watch {
    body: hyper::body::Incoming,
    _send: Box<dyn std::any::Any + Send>,
}

impl Watch {
    pub async fn open(env: &Env, user: &kube_crl_proxy_testkit::pki::Issued, http: Http) -> Self {
        let stream = connect(env.proxy.addr, env.tls(Some(user), http)).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let req = http::Request::get("https://localhost/api/v1/namespaces/default/pods?watch=1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (resp, send): (_, Box<dyn std::any::Any + Send>) = match http {
            Http::H1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                (send.send_request(req).await.unwrap(), Box::new(send))
            }
            Http::H2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                (send.send_request(req).await.unwrap(), Box::new(send))
            }
        };
        assert_eq!(resp.status(), 200);
        let mut w = Self { body: resp.into_body(), _send: send };
        let first = w.next_event().await.expect("first event");
        assert!(first.contains("ADDED"), "{first}");
        w
    }

    /// The next data frame, or None when the stream ended (or failed).
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        return Some(String::from_utf8_lossy(&d).into_owned());
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("watch stalled: no event and no end in 10 s"),
            }
        }
    }

    /// Reads events until the stream ends; returns how long that took (at most `bound`).
    pub async fn until_closed(&mut self, bound: Duration) -> Duration {
        let start = Instant::now();
        while self.next_event().await.is_some() {
            assert!(start.elapsed() < bound, "connection still open {bound:?} after revocation");
        }
        start.elapsed()
    }
}

/// The proxy's current metrics scrape.
pub async fn metrics(env: &Env) -> String {
    admin_get(env.proxy.admin, "/metrics").await.1
}
