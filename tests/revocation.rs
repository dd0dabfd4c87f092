//! Revocation end to end: revoked, expired, unknown-CA and wrong-EKU client certificates get
//! their TLS alert (rustls/hyper, kubectl, openssl s_client); the revocation policies
//! (chain/leaf, missing CRL, stale CRL and grace, required client certificates); bad CRL
//! files at start-up; CRLs made by `openssl ca` (v1, DER); and no TLS session resumption.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use kube_crl_proxy_testkit::pki::{Authority, Issued, Spec, write};
use rustls::SupportedProtocolVersion;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName};
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
/// Each TLS version on its own, with a label for assertion messages.
static TLS_VERSIONS: [(&str, &[&SupportedProtocolVersion]); 2] = [("TLS 1.3", &TLS13_ONLY), ("TLS 1.2", &TLS12_ONLY)];

/// How long an external command (kubectl, openssl, the proxy expected to exit) may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// A PKI whose files may be changed before the stand-in upstream and the proxy start.
struct Staged {
    tmp: tempfile::TempDir,
    pki: Pki,
}

impl Staged {
    fn new() -> Self {
        let tmp = tempdir();
        let pki = Pki::new(tmp.path());
        Self { tmp, pki }
    }

    /// Starts the upstream stand-in and the proxy with the standard flags plus `extra`.
    async fn start(self, extra: &[&str]) -> Env {
        let upstream = Upstream::start(self.pki.sim_config()).await;
        let proxy = ProxyProcess::start(self.tmp.path(), &with(self.pki.proxy_args(upstream.addr), extra));
        Env { tmp: self.tmp, pki: self.pki, upstream, proxy }
    }
}

/// `args` followed by `extra`.
fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The proxy flags with `--crl-file crl.pem` replaced by these files.
fn with_crl_files(args: Vec<String>, files: &[&Path]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--crl-file" {
            it.next();
        } else {
            out.push(a);
        }
    }
    for f in files {
        out.push("--crl-file".into());
        out.push(f.display().to_string());
    }
    out
}

/// The serial of a certificate as its issuer's CRL lists it.
fn cert_serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.tbs_certificate.raw_serial().to_vec()
}

/// One request over a new connection, as `user` (leaf + issuing CA sent as the chain).
async fn call(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    user: Option<(&Issued, &Authority)>,
    http: Http,
    versions: &[&'static SupportedProtocolVersion],
    req: http::Request<Full<Bytes>>,
) -> Result<Reply, String> {
    request(addr, client_tls_versions(ca, user, http, versions), http, req).await
}

/// The request must have been refused with this TLS alert (Go's wording, as kubectl prints it).
fn expect_alert(result: Result<Reply, String>, alert: &str, ctx: &str) {
    match result {
        Ok(r) => panic!(
            "{ctx}: expected the TLS alert {alert:?}, got HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
        Err(e) => assert_eq!(e, format!("remote error: tls: {alert}"), "{ctx}"),
    }
}

/// The request must have reached the upstream as `username`.
fn expect_user(result: Result<Reply, String>, username: &str, ctx: &str) -> kube_crl_proxy_testkit::sim::UserInfo {
    let reply = result.unwrap_or_else(|e| panic!("{ctx}: {username} was refused: {e}"));
    let info = user_info(&reply);
    assert_eq!(info.username, username, "{ctx}: {info:?}");
    info
}

/// `kubectl auth whoami`'s request with a bearer token.
fn token_whoami() -> http::Request<Full<Bytes>> {
    let mut req = whoami_request();
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
    req
}

/// Text without ANSI colour escapes (the text log format colours field names).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The proxy's log lines that contain `needle`, ANSI escapes removed.
fn log_lines(proxy: &ProxyProcess, needle: &str) -> Vec<String> {
    strip_ansi(&proxy.logs()).lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
}

/// Waits (bounded) until the log has at least `n` `handshake_refused` events; returns them all.
fn wait_for_refusals(proxy: &ProxyProcess, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = log_lines(proxy, "handshake_refused");
        if events.len() >= n {
            return events;
        }
        assert!(Instant::now() < deadline, "expected {n} handshake_refused events; log:\n{}", proxy.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a text log line has the field `key=value` (quoted or not).
fn has_field(line: &str, key: &str, value: &str) -> bool {
    let (quoted, bare) = (format!("{key}=\"{value}\""), format!("{key}={value}"));
    line.split_whitespace().any(|t| t == quoted || t == bare)
}

/// What an external command did.
struct Ran {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!("{} exited with {:?}\nstdout:\n{}\nstderr:\n{}", self.what, self.code, self.stdout, self.stderr)
    }
}

/// Runs a command with `stdin` as its input; killed and reported as a failure after `limit`.
/// Async, so that the stand-in upstream (a task of this runtime) keeps serving meanwhile.
async fn run_bounded(mut cmd: tokio::process::Command, stdin: &[u8], limit: Duration) -> Ran {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let what = format!("{:?}", cmd.as_std());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = async move {
        let _ = input.write_all(&data).await;
        // Dropping `input` closes stdin.
    };
    let run = async move { tokio::join!(writer, child.wait_with_output()).1 };
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) => Ran {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{what}: {e}"),
        // The child is killed when the dropped future drops it (kill_on_drop).
        Err(_) => panic!("{what} did not finish within {limit:?}; killed"),
    }
}

/// Runs the proxy with a configuration it must refuse; returns (exit status, stderr).
/// Like `common::run_to_exit`, but bounded: a proxy that wrongly starts fails the test
/// instead of hanging it.
async fn proxy_exit(args: &[String]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(["--bind-address", "127.0.0.1", "--secure-port", "0", "--admin-address", "127.0.0.1:0"]).args(args);
    let ran = run_bounded(cmd, b"", COMMAND_LIMIT).await;
    (ran.code, ran.stderr)
}

/// `openssl <args>` in `dir`; must succeed.
async fn openssl(dir: &Path, args: &[&str]) -> Ran {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let ran = run_bounded(cmd, b"", COMMAND_LIMIT).await;
    assert_eq!(ran.code, Some(0), "{}", ran.describe());
    ran
}

/// An HTTP/1.1 request for s_client's stdin; the proxy closes the connection after it.
const HTTP_GET_CLOSE: &[u8] = b"GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// `openssl s_client` to the proxy with a client certificate chain file and key, sending
/// [`HTTP_GET_CLOSE`] and reading until the server closes.
async fn s_client(env: &Env, version_flag: &str, cert: &Path, key: &Path, extra: &[&str]) -> Ran {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.arg("s_client")
        .args(["-connect", &env.proxy.addr.to_string(), version_flag, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(env.pki.path("ca.crt"))
        .arg("-cert")
        .arg(cert)
        .arg("-cert_chain")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg("-ign_eof")
        .args(extra);
    run_bounded(cmd, HTTP_GET_CLOSE, COMMAND_LIMIT).await
}

/// A kubeconfig for `name` (client certificate = leaf + users CA) pointing at the proxy.
fn kubeconfig(env: &Env, name: &str, user: &Issued) -> PathBuf {
    let (crt, key) = env.pki.write_user(name, user);
    let path = env.pki.path(&format!("{name}.kubeconfig"));
    write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: https://{addr}\n    \
             certificate-authority: {ca}\ncontexts:\n- name: {name}\n  context:\n    cluster: proxy\n    user: {name}\n\
             current-context: {name}\nusers:\n- name: {name}\n  user:\n    client-certificate: {crt}\n    \
             client-key: {key}\n",
            addr = env.proxy.addr,
            ca = env.pki.path("ca.crt").display(),
            crt = crt.display(),
            key = key.display(),
        ),
    );
    path
}

/// The machine's kubectl with this kubeconfig, its cache and HOME inside the test's directory.
async fn kubectl(env: &Env, kubeconfig: &Path, args: &[&str]) -> Ran {
    let kubectl = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|p| p.is_file()))
        .expect("kubectl not found on PATH: this test runs the real kubectl (.ci/run installs it; install it locally)");
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(env.pki.path("kube-cache"))
        .args(args)
        .env("HOME", env.tmp.path())
        .env_remove("KUBECONFIG");
    for proxy_var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(proxy_var);
    }
    run_bounded(cmd, b"", COMMAND_LIMIT).await
}

// ---------------------------------------------------------------------------------------
// 1. Revoked certificate → certificate_revoked, every TLS × HTTP version
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revoked_bob_gets_certificate_revoked_on_every_tls_and_http_version() {
    let env = Env::start(&[]).await;
    let ca = env.pki.root_der();
    let bob = Some((&env.pki.bob, &env.pki.users_ca));
    let alice = Some((&env.pki.alice, &env.pki.users_ca));
    let mut refused = 0;
    for (tls, versions) in TLS_VERSIONS {
        for http in [Http::H1, Http::H2] {
            let ctx = format!("{tls} {http:?}");
            let result = call(env.proxy.addr, &ca, bob, http, versions, whoami_request()).await;
            expect_alert(result, "revoked certificate", &format!("bob, {ctx}"));
            refused += 1;
            let info =
                expect_user(call(env.proxy.addr, &ca, alice, http, versions, whoami_request()).await, "alice", &ctx);
            assert_eq!(info.groups, vec!["dev", "ops", "system:authenticated"], "{ctx}");
        }
    }
    let events = wait_for_refusals(&env.proxy, refused);
    assert_eq!(events.len(), refused, "one handshake_refused event per refused handshake:\n{events:#?}");
    let serial = hex::encode(&env.pki.bob.serial);
    for e in &events {
        assert!(has_field(e, "reason", "revoked"), "{e}");
        assert!(has_field(e, "serial", &serial), "bob's serial {serial} in: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. kubectl (HTTP/2) prints the alert, every time
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn kubectl_prints_revoked_certificate_for_bob_every_time_and_alice_gets_her_groups() {
    let env = Env::start(&[]).await;
    let bob = kubeconfig(&env, "bob", &env.pki.bob);
    for attempt in 1..=5 {
        // Any request shows the alert; `get --raw` works with every kubectl version.
        let ran = kubectl(&env, &bob, &["get", "--raw", "/version"]).await;
        assert!(ran.code.is_some_and(|c| c != 0), "attempt {attempt}: {}", ran.describe());
        assert!(
            ran.stderr.contains("remote error: tls: revoked certificate"),
            "attempt {attempt}: the alert was lost: {}",
            ran.describe()
        );
    }

    let alice = kubeconfig(&env, "alice", &env.pki.alice);
    // What `kubectl auth whoami -o json` sends, spelled so that kubectl 1.19+ can send it.
    let body = env.pki.path("ssr.json");
    std::fs::write(&body, r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#).unwrap();
    let body = body.display().to_string();
    let ran =
        kubectl(&env, &alice, &["create", "--raw", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "-f", &body])
            .await;
    assert_eq!(ran.code, Some(0), "{}", ran.describe());
    let v: serde_json::Value =
        serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.describe()));
    let user = &v["status"]["userInfo"];
    assert_eq!(user["username"], "alice", "{v}");
    let groups: Vec<&str> = user["groups"].as_array().expect("groups").iter().filter_map(|g| g.as_str()).collect();
    assert!(groups.contains(&"dev") && groups.contains(&"ops"), "{groups:?}");
}

// ---------------------------------------------------------------------------------------
// 3. openssl s_client sees the alert
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn openssl_s_client_reports_certificate_revoked_on_tls13_and_tls12() {
    let env = Env::start(&[]).await;
    let (bob_crt, bob_key) = env.pki.write_user("bob", &env.pki.bob);
    let (alice_crt, alice_key) = env.pki.write_user("alice", &env.pki.alice);
    for flag in ["-tls1_3", "-tls1_2"] {
        let ran = s_client(&env, flag, &bob_crt, &bob_key, &[]).await;
        let out = ran.all();
        assert!(out.to_lowercase().contains("certificate revoked"), "bob {flag}: {}", ran.describe());
        assert!(!out.contains("HTTP/1.1 "), "bob {flag} got an HTTP response: {}", ran.describe());

        // The same invocation with alice reaches the upstream.
        let ran = s_client(&env, flag, &alice_crt, &alice_key, &[]).await;
        assert!(ran.stdout.contains("HTTP/1.1 "), "alice {flag}: {}", ran.describe());
    }
}

// ---------------------------------------------------------------------------------------
// 4. Other certificate failures get their own alert
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn expired_unknown_ca_and_server_only_certificates_get_their_own_alerts() {
    let env = Env::start(&[]).await;
    let users = &env.pki.users_ca;

    let mut expired = Spec::client("carol", &["dev"]);
    expired.not_before = days(-30);
    expired.not_after = days(-1);
    let carol = users.issue(&expired);

    let stranger = Authority::root("test-stranger-ca");
    let dave = stranger.issue(&Spec::client("dave", &["dev"]));

    let mut server_only = Spec::client("erin", &["dev"]);
    server_only.eku = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let erin = users.issue(&server_only);

    let cases = [
        ("expired", &carol, users, "expired certificate", "expired"),
        ("unknown CA", &dave, &stranger, "unknown certificate authority", "unknown_ca"),
        ("serverAuth only", &erin, users, "unsupported certificate", "bad_eku"),
    ];
    let ca = env.pki.root_der();
    for (tls, versions) in TLS_VERSIONS {
        for (what, cert, issuer, alert, _) in cases {
            let result = call(env.proxy.addr, &ca, Some((cert, issuer)), Http::H1, versions, whoami_request()).await;
            expect_alert(result, alert, &format!("{what}, {tls}"));
        }
    }
    let events = wait_for_refusals(&env.proxy, cases.len() * TLS_VERSIONS.len());
    for (what, cert, _, _, label) in cases {
        let serial = hex::encode(&cert.serial);
        let n = events.iter().filter(|e| has_field(e, "serial", &serial) && has_field(e, "reason", label)).count();
        assert_eq!(n, TLS_VERSIONS.len(), "{what}: events with reason={label}:\n{events:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// 5. --client-cert-mode
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn required_mode_refuses_clients_without_a_certificate_even_with_a_token() {
    let env = Env::start(&["--client-cert-mode", "required"]).await;
    let ca = env.pki.root_der();
    for (tls, versions) in TLS_VERSIONS {
        for http in [Http::H1, Http::H2] {
            let ctx = format!("{tls} {http:?}");
            match call(env.proxy.addr, &ca, None, http, versions, token_whoami()).await {
                Ok(r) => panic!("{ctx}: no certificate, yet HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => assert!(
                    e == "remote error: tls: certificate required" || e == "remote error: tls: HandshakeFailure",
                    "{ctx}: {e}"
                ),
            }
            let alice = Some((&env.pki.alice, &env.pki.users_ca));
            expect_user(call(env.proxy.addr, &ca, alice, http, versions, whoami_request()).await, "alice", &ctx);
        }
    }
}

#[tokio::test]
async fn optional_mode_is_the_default_and_lets_token_clients_through() {
    let env = Env::start(&[]).await;
    for http in [Http::H1, Http::H2] {
        let reply = env.request(None, http, token_whoami()).await.unwrap_or_else(|e| panic!("{http:?}: {e}"));
        assert_eq!(reply.headers["x-sim-auth"], "token", "{http:?}");
        assert_eq!(user_info(&reply).username, "token-user", "{http:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 6. --revocation-check chain|leaf
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revoked_intermediate_refuses_its_leaves_in_chain_mode_only() {
    let staged = Staged::new();
    let pki = &staged.pki;
    let revoked_ca = pki.root.intermediate("test-revoked-users-ca");
    let revoked_ca_serial = cert_serial(&revoked_ca.der);
    let carol = revoked_ca.issue(&Spec::client("carol", &["dev"]));
    write(&pki.path("client-ca.crt"), format!("{}{}", pki.root.cert_pem, revoked_ca.cert_pem));
    write(
        &pki.path("crl.pem"),
        format!("{}{}", pki.root.crl(&[&revoked_ca_serial], 2, days(7)), revoked_ca.crl(&[], 1, days(7))),
    );
    let upstream = Upstream::start(pki.sim_config()).await;
    let args = pki.proxy_args(upstream.addr);
    let dir = staged.tmp.path();
    let chain_default = ProxyProcess::start(dir, &args);
    let chain_explicit = ProxyProcess::start(dir, &with(args.clone(), &["--revocation-check", "chain"]));
    let leaf_only = ProxyProcess::start(dir, &with(args.clone(), &["--revocation-check", "leaf"]));

    let ca = pki.root_der();
    let user = Some((&carol, &revoked_ca));
    for (tls, versions) in TLS_VERSIONS {
        for (mode, proxy) in [("chain (default)", &chain_default), ("chain", &chain_explicit)] {
            let result = call(proxy.addr, &ca, user, Http::H2, versions, whoami_request()).await;
            expect_alert(result, "revoked certificate", &format!("{mode}, {tls}"));
        }
        let result = call(leaf_only.addr, &ca, user, Http::H2, versions, whoami_request()).await;
        expect_user(result, "carol", &format!("leaf, {tls}"));
    }

    let detail = format!("intermediate CA serial {}", hex::encode(&revoked_ca_serial));
    for proxy in [&chain_default, &chain_explicit] {
        let events = wait_for_refusals(proxy, TLS_VERSIONS.len());
        for e in &events {
            assert!(has_field(e, "reason", "revoked") && e.contains(&detail), "{detail:?} in: {e}");
        }
    }
    assert!(log_lines(&leaf_only, "handshake_refused").is_empty(), "{}", leaf_only.logs());
}

// ---------------------------------------------------------------------------------------
// 7. --crl-missing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_ca_without_a_crl_stops_start_up_unless_crl_missing_allow() {
    let staged = Staged::new();
    let pki = &staged.pki;
    // Only the root's CRL: the users CA has none.
    write(&pki.path("crl.pem"), pki.root.crl(&[], 1, days(7)));
    let upstream = Upstream::start(pki.sim_config()).await;
    let args = pki.proxy_args(upstream.addr);

    let (code, stderr) = proxy_exit(&args).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("test-users-ca"), "names the CA: {stderr}");
    assert!(stderr.contains("--crl-missing"), "mentions the flag: {stderr}");

    let proxy = ProxyProcess::start(staged.tmp.path(), &with(args, &["--crl-missing", "allow"]));
    let ca = pki.root_der();
    let tls = TLS_VERSIONS[0].1;
    let alice = Some((&pki.alice, &pki.users_ca));
    expect_user(call(proxy.addr, &ca, alice, Http::H2, tls, whoami_request()).await, "alice", "alice");
    // Nothing lists bob any more: the users CA's certificates pass unchecked.
    let bob = Some((&pki.bob, &pki.users_ca));
    expect_user(call(proxy.addr, &ca, bob, Http::H2, tls, whoami_request()).await, "bob", "bob");
}

// ---------------------------------------------------------------------------------------
// 8. Stale CRLs: --crl-expired and --crl-expired-grace
// ---------------------------------------------------------------------------------------

/// A setup whose users CA CRL (listing bob) passed its nextUpdate an hour ago.
fn staged_with_stale_users_crl() -> Staged {
    let staged = Staged::new();
    let pki = &staged.pki;
    write(
        &pki.path("crl.pem"),
        format!(
            "{}{}",
            pki.root.crl(&[], 1, days(7)),
            pki.users_ca.crl(&[&pki.bob.serial], 1, time::Duration::hours(-1))
        ),
    );
    staged
}

#[tokio::test]
async fn stale_crl_refuses_valid_certificates_by_default_and_says_why() {
    let env = staged_with_stale_users_crl().start(&[]).await;
    let alice = Some((&env.pki.alice, &env.pki.users_ca));
    let result = call(env.proxy.addr, &env.pki.root_der(), alice, Http::H2, TLS_VERSIONS[0].1, whoami_request()).await;
    expect_alert(result, "unknown certificate authority", "alice, stale CRL");
    let events = wait_for_refusals(&env.proxy, 1);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert!(has_field(e, "reason", "stale_crl") && e.contains("stale"), "says the CRL is stale: {e}");
    assert!(has_field(e, "serial", &hex::encode(&env.pki.alice.serial)), "{e}");
    assert!(!has_field(e, "reason", "expired") && !e.contains("certificate has expired"), "not an expiry: {e}");
}

/// With a stale users CRL that the policy still accepts: alice gets in, bob stays revoked.
async fn stale_crl_still_enforces_its_serials(env: &Env) {
    let ca = env.pki.root_der();
    let tls = TLS_VERSIONS[0].1;
    let alice = Some((&env.pki.alice, &env.pki.users_ca));
    expect_user(call(env.proxy.addr, &ca, alice, Http::H2, tls, whoami_request()).await, "alice", "alice");
    let bob = Some((&env.pki.bob, &env.pki.users_ca));
    expect_alert(call(env.proxy.addr, &ca, bob, Http::H2, tls, whoami_request()).await, "revoked certificate", "bob");
}

#[tokio::test]
async fn stale_crl_with_crl_expired_allow_still_enforces_its_serials() {
    let env = staged_with_stale_users_crl().start(&["--crl-expired", "allow"]).await;
    stale_crl_still_enforces_its_serials(&env).await;
}

#[tokio::test]
async fn stale_crl_within_crl_expired_grace_is_still_used() {
    let env = staged_with_stale_users_crl().start(&["--crl-expired", "deny", "--crl-expired-grace", "2h"]).await;
    stale_crl_still_enforces_its_serials(&env).await;
}

// ---------------------------------------------------------------------------------------
// 9. CRLs that cannot be used are left out and said so; a file that is no CRL at all, or a
//    CA left without any usable CRL, stops the start naming the file
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_crls_are_left_out_named_and_counted_and_stop_the_start_only_when_a_ca_is_uncovered() {
    let staged = Staged::new();
    let pki = &staged.pki;
    let upstream = Upstream::start(pki.sim_config()).await;

    // Signed by a CA that is not in --client-ca-file.
    let stranger = pki.path("stranger.crl");
    write(&stranger, Authority::root("test-stranger-ca").crl(&[], 1, days(7)));
    // The users CA's CRL with one bit of its signature flipped (last DER byte: inside the
    // signature value; lengths unchanged, so it still parses). It lists nobody: if it were
    // used as the users CA's newest CRL, bob would get in.
    let tampered = pki.path("tampered.crl");
    let pem = pki.users_ca.crl(&[], 9, days(7));
    let mut der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).expect("CRL PEM").as_ref().to_vec();
    *der.last_mut().expect("non-empty") ^= 0x01;
    write(&tampered, &der);

    // Beside the good crl.pem: the proxy starts, says which CRLs it left out and why, counts
    // them, and bob stays revoked.
    let args =
        with(pki.proxy_args(upstream.addr), &["--crl-file", &path_str(&stranger), "--crl-file", &path_str(&tampered)]);
    let proxy = ProxyProcess::start(staged.tmp.path(), &args);
    let line = proxy.wait_for_log("crl_rejected");
    let logs = proxy.logs();
    for (file, says) in [(&stranger, "test-stranger-ca"), (&tampered, "signature does not verify")] {
        let l = logs
            .lines()
            .find(|l| l.contains("crl_rejected") && l.contains(&path_str(file)))
            .unwrap_or_else(|| panic!("{line}\n{logs}"));
        assert!(l.contains(says), "{l}");
    }
    let m = admin_get(proxy.admin, "/metrics").await.1;
    assert_eq!(series(&m, "kube_crl_proxy_crls_rejected"), Some(2.0), "{m}");
    let (ca, tls) = (pki.root_der(), TLS_VERSIONS[0].1);
    expect_alert(
        call(proxy.addr, &ca, Some((&pki.bob, &pki.users_ca)), Http::H2, tls, whoami_request()).await,
        "revoked certificate",
        "bob",
    );
    expect_user(
        call(proxy.addr, &ca, Some((&pki.alice, &pki.users_ca)), Http::H2, tls, whoami_request()).await,
        "alice",
        "alice",
    );
    drop(proxy);

    // The tampered CRL as the users CA's only one: the CA is uncovered, the start refused,
    // and the message names the CA and why its CRL was left out.
    let root_only = pki.path("root-only.crl");
    write(&root_only, pki.root.crl(&[], 1, days(7)));
    let args = with_crl_files(pki.proxy_args(upstream.addr), &[&root_only, &tampered]);
    let (code, stderr) = proxy_exit(&args).await;
    assert_eq!(code, Some(64), "{stderr}");
    for needle in ["test-users-ca", "has no CRL", &path_str(&tampered), "signature does not verify"] {
        assert!(stderr.contains(needle), "says {needle:?}: {stderr}");
    }

    // A file that holds no CRL at all is a start-up error naming it.
    let garbage = pki.path("garbage.crl");
    write(&garbage, "this is not a certificate revocation list\n");
    let (code, stderr) = proxy_exit(&with(pki.proxy_args(upstream.addr), &["--crl-file", &path_str(&garbage)])).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&path_str(&garbage)), "names the file: {stderr}");
}

/// EJBCA-style partitioned CRLs (RFC 5280 issuingDistributionPoint with a distribution
/// point name): partition A revokes nobody, partition B revokes xavier, whose certificate
/// points at B. Both files given: xavier is refused, yolanda (in A) served. Only A given:
/// xavier's status is undetermined and he is refused too (he was served before: a partition
/// was taken for the CA's complete CRL).
#[tokio::test]
async fn partitioned_crls_refuse_a_certificate_revoked_in_its_partition_or_whose_partition_is_missing() {
    use kube_crl_proxy_testkit::pki::{CrlEntrySpec, CrlSpec, DpSpec, IdpSpec};
    let staged = Staged::new();
    let pki = &staged.pki;
    let upstream = Upstream::start(pki.sim_config()).await;
    let (a, b) = ("http://pki.example/users-a.crl", "http://pki.example/users-b.crl");
    let dp = |uri: &str| vec![DpSpec { uri: Some(uri.into()), ..DpSpec::default() }];
    let xavier = pki.users_ca.issue(&Spec { dps: dp(b), ..Spec::client("xavier", &["dev"]) });
    let yolanda = pki.users_ca.issue(&Spec { dps: dp(a), ..Spec::client("yolanda", &["dev"]) });
    let partition = |uri: &str| Some(IdpSpec { uri: Some(uri.into()), ..IdpSpec::default() });
    let (file_a, file_b, root) = (pki.path("users-a.crl"), pki.path("users-b.crl"), pki.path("root.crl"));
    write(&file_a, pki.users_ca.custom_crl(&CrlSpec { idp: partition(a), number: 3, ..CrlSpec::default() }));
    write(
        &file_b,
        pki.users_ca.custom_crl(&CrlSpec {
            idp: partition(b),
            entries: vec![CrlEntrySpec::serial(&xavier.serial)],
            number: 2,
            ..CrlSpec::default()
        }),
    );
    write(&root, pki.root.crl(&[], 1, days(7)));
    let (ca, tls) = (pki.root_der(), TLS_VERSIONS[0].1);

    let both = ProxyProcess::start(
        staged.tmp.path(),
        &with_crl_files(pki.proxy_args(upstream.addr), &[&root, &file_a, &file_b]),
    );
    expect_alert(
        call(both.addr, &ca, Some((&xavier, &pki.users_ca)), Http::H2, tls, whoami_request()).await,
        "revoked certificate",
        "xavier, both partitions",
    );
    expect_user(
        call(both.addr, &ca, Some((&yolanda, &pki.users_ca)), Http::H2, tls, whoami_request()).await,
        "yolanda",
        "yolanda",
    );
    drop(both);

    let only_a =
        ProxyProcess::start(staged.tmp.path(), &with_crl_files(pki.proxy_args(upstream.addr), &[&root, &file_a]));
    let refused = call(only_a.addr, &ca, Some((&xavier, &pki.users_ca)), Http::H2, tls, whoami_request()).await;
    assert!(refused.is_err(), "xavier must not be served without his partition: {refused:?}");
    let line = only_a.wait_for_log("handshake_refused");
    assert!(line.contains("undetermined") && line.contains("partitions for other distribution points"), "{line}");
    expect_user(
        call(only_a.addr, &ca, Some((&yolanda, &pki.users_ca)), Http::H2, tls, whoami_request()).await,
        "yolanda",
        "yolanda, only A",
    );
}

// ---------------------------------------------------------------------------------------
// 10. CRLs made by `openssl ca`: v1, PEM and DER
// ---------------------------------------------------------------------------------------

/// An ASN.1 UTCTime as `openssl ca`'s index.txt writes it (YYMMDDHHMMSSZ).
fn index_time(t: time::OffsetDateTime) -> String {
    kube_crl_proxy_testkit::pki::utc_time(t)
}

/// Has `openssl ca -gencrl` write the users CA's CRL (v1: no crlnumber file, no
/// extensions) revoking bob, as `users.crl` (PEM). Returns its path.
async fn openssl_ca_v1_crl(pki: &Pki) -> PathBuf {
    let dir = pki.path("openssl-ca");
    let p = |n: &str| dir.join(n).display().to_string();
    write(&dir.join("users-ca.crt"), &pki.users_ca.cert_pem);
    write(&dir.join("users-ca.key"), &pki.users_ca.key_pem);
    let now = time::OffsetDateTime::now_utc();
    write(
        &dir.join("index.txt"),
        format!(
            "R\t{}\t{}\t{}\tunknown\t/CN=bob\n",
            index_time(now + days(365)),
            index_time(now - time::Duration::minutes(30)),
            hex::encode_upper(&pki.bob.serial)
        ),
    );
    write(
        &dir.join("ca.cnf"),
        format!(
            "[ ca ]\ndefault_ca = users_ca\n\n[ users_ca ]\ndatabase = {}\ncertificate = {}\nprivate_key = {}\n\
             default_md = sha256\ndefault_crl_days = 7\n",
            p("index.txt"),
            p("users-ca.crt"),
            p("users-ca.key")
        ),
    );
    assert!(!dir.join("crlnumber").exists());
    let out = p("users.crl");
    let cnf = p("ca.cnf");
    openssl(&dir, &["ca", "-gencrl", "-config", &cnf, "-crldays", "7", "-md", "sha256", "-out", &out]).await;
    let text = openssl(&dir, &["crl", "-in", &out, "-noout", "-text"]).await.stdout;
    assert!(text.contains("Version 1 (0x0)"), "not a v1 CRL:\n{text}");
    assert!(text.contains(&hex::encode_upper(&pki.bob.serial)), "bob not listed:\n{text}");
    PathBuf::from(out)
}

#[tokio::test]
async fn v1_crl_from_openssl_ca_is_enforced_as_pem_and_as_der() {
    let staged = Staged::new();
    let pki = &staged.pki;
    let users_crl = openssl_ca_v1_crl(pki).await;
    let users_pem = std::fs::read_to_string(&users_crl).expect("read users.crl");
    write(&pki.path("crl.pem"), format!("{}{}", pki.root.crl(&[], 1, days(7)), users_pem));

    let root_only = pki.path("root-crl.pem");
    write(&root_only, pki.root.crl(&[], 1, days(7)));
    let users_der = pki.path("users-crl.der");
    let der_arg = users_der.display().to_string();
    openssl(&pki.dir, &["crl", "-in", &users_crl.display().to_string(), "-outform", "DER", "-out", &der_arg]).await;

    let upstream = Upstream::start(pki.sim_config()).await;
    let args = pki.proxy_args(upstream.addr);
    let dir = staged.tmp.path();
    let pem_proxy = ProxyProcess::start(dir, &args);
    let der_proxy = ProxyProcess::start(dir, &with_crl_files(args.clone(), &[&root_only, &users_der]));

    let ca = pki.root_der();
    let alice = Some((&pki.alice, &pki.users_ca));
    let bob = Some((&pki.bob, &pki.users_ca));
    for (what, proxy) in [("PEM crl.pem", &pem_proxy), ("DER --crl-file", &der_proxy)] {
        for (tls, versions) in TLS_VERSIONS {
            let ctx = format!("{what}, {tls}");
            expect_alert(
                call(proxy.addr, &ca, bob, Http::H1, versions, whoami_request()).await,
                "revoked certificate",
                &ctx,
            );
            expect_user(call(proxy.addr, &ca, alice, Http::H1, versions, whoami_request()).await, "alice", &ctx);
        }
        let loaded = log_lines(proxy, "CRL loaded");
        assert!(
            loaded.iter().any(|l| l.contains("test-users-ca") && has_field(l, "version", "1")),
            "{what}: the v1 CRL is reported as loaded:\n{loaded:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 11. No TLS session resumption
// ---------------------------------------------------------------------------------------

/// Connects with a shared client config (so its session cache is reused), notes the
/// handshake kind, then makes a whole HTTP/1.1 request so that any session ticket is read.
async fn connect_and_whoami(env: &Env, config: &Arc<rustls::ClientConfig>) -> Option<rustls::HandshakeKind> {
    let tcp = tokio::net::TcpStream::connect(env.proxy.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.expect("handshake");
    let kind = tls.get_ref().1.handshake_kind();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("HTTP/1.1");
    let conn = tokio::spawn(conn);
    let resp = send.send_request(whoami_request()).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
    drop(send);
    let _ = conn.await;
    kind
}

#[tokio::test]
async fn rustls_clients_never_resume_a_session() {
    let env = Env::start(&[]).await;
    for (tls, versions) in TLS_VERSIONS {
        // rustls clients keep a session cache by default (ClientConfig::resumption).
        let config = Arc::new(client_tls_versions(
            &env.pki.root_der(),
            Some((&env.pki.alice, &env.pki.users_ca)),
            Http::H1,
            versions,
        ));
        let first = connect_and_whoami(&env, &config).await;
        let second = connect_and_whoami(&env, &config).await;
        assert_eq!(first, Some(rustls::HandshakeKind::Full), "{tls}");
        assert_eq!(second, Some(rustls::HandshakeKind::Full), "{tls}: the second connection was resumed");
    }
}

#[tokio::test]
async fn openssl_clients_never_resume_a_session() {
    let env = Env::start(&[]).await;
    let (crt, key) = env.pki.write_user("alice", &env.pki.alice);
    for flag in ["-tls1_3", "-tls1_2"] {
        let sess = env.pki.path(&format!("session{flag}.pem"));
        let sess_arg = sess.display().to_string();
        let first = s_client(&env, flag, &crt, &key, &["-sess_out", &sess_arg]).await;
        assert!(first.stdout.contains("New,") && first.stdout.contains("HTTP/1.1 "), "{flag}: {}", first.describe());
        // s_client writes -sess_out only for a resumable session (a ticket or a session ID);
        // if it wrote one, offering it back must still get a full handshake.
        if sess.exists() {
            let second = s_client(&env, flag, &crt, &key, &["-sess_in", &sess_arg]).await;
            assert!(second.stdout.contains("HTTP/1.1 "), "{flag}: {}", second.describe());
            assert!(second.stdout.contains("New,"), "{flag}: {}", second.describe());
            assert!(!second.stdout.contains("Reused,"), "{flag}: resumed: {}", second.describe());
        }
    }
}
