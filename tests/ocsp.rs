//! OCSP for client certificates, against a real OCSP responder on loopback: the machine's
//! `openssl ocsp` answers every request (`-index … -rsigner … -reqin … -respout …`) behind a
//! small HTTP listener on 127.0.0.1 that can also be slow, corrupt the signature or be down.
//! (`openssl ocsp -port` cannot bind to loopback only, so it is driven per request instead.)
//! Good, revoked and unknown answers; `if-available` vs `required`; a responder that is down,
//! slow (other connections must not stall, even on a one-worker runtime), badly signed or
//! signed by an unauthorized certificate; a certificate flipped to revoked while its watch is
//! open; answers cached.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kube_crl_proxy_testkit::pki::{Issued, Spec, write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the responder behaves for the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Answer,
    /// Answer after this delay.
    Slow(Duration),
    /// Answer with the last byte of the response (inside the signature) flipped.
    CorruptSignature,
}

/// Who signs the responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    /// A delegated responder certificate (EKU OCSPSigning) issued by the users CA, included.
    Delegated,
    /// The users CA itself; no certificates in the response.
    Ca,
    /// A certificate of the users CA without the OCSP-signing EKU.
    Unauthorized,
}

struct Responder {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    queries: Arc<AtomicUsize>,
    index: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    async fn start(pki: &Pki, signer: Signer) -> Self {
        let dir = pki.path("ocsp");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = match signer {
            Signer::Ca => (pki.users_ca.cert_pem.clone(), pki.users_ca.key_pem.clone()),
            Signer::Delegated => {
                let r = pki.users_ca.issue(&Spec::ocsp_responder("test-ocsp-responder"));
                (r.cert_pem, r.key_pem)
            }
            Signer::Unauthorized => {
                let r = pki.users_ca.issue(&Spec::client("not-a-responder", &[]));
                (r.cert_pem, r.key_pem)
            }
        };
        write(&dir.join("signer.crt"), cert);
        write(&dir.join("signer.key"), key);
        write(&dir.join("ca.crt"), &pki.users_ca.cert_pem);
        let index = dir.join("index.txt");
        write(&index, "");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(Behaviour::Answer));
        let queries = Arc::new(AtomicUsize::new(0));
        let (b, q) = (behaviour.clone(), queries.clone());
        let no_certs = signer == Signer::Ca;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (dir, b, q) = (dir.clone(), b.clone(), q.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, &dir, no_certs, &b, &q).await;
                });
            }
        });
        Self { url, behaviour, queries, index, task }
    }

    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Writes the responder's index (openssl ca's index.txt format): `V` (valid) or `R`
    /// (revoked, keyCompromise) per certificate; certificates not listed are "unknown".
    fn write_index(&self, entries: &[(&Issued, &str, char)]) {
        let expiry = kube_crl_proxy_testkit::pki::utc_time(time::OffsetDateTime::now_utc() + time::Duration::days(365));
        let revoked_at =
            kube_crl_proxy_testkit::pki::utc_time(time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
        let mut text = String::new();
        for (cert, cn, state) in entries {
            let serial = hex::encode_upper(&cert.serial);
            let when = if *state == 'R' { format!("{revoked_at},keyCompromise") } else { String::new() };
            text.push_str(&format!("{state}\t{expiry}\t{when}\t{serial}\tunknown\t/CN={cn}\n"));
        }
        // Replace by rename, so a request never sees half a file.
        let tmp = self.index.with_extension("new");
        write(&tmp, text);
        std::fs::rename(&tmp, &self.index).unwrap();
    }
}

/// Reads one HTTP request (head + Content-Length body), answers it with `openssl ocsp`.
async fn serve_one(
    mut stream: tokio::net::TcpStream,
    dir: &std::path::Path,
    no_certs: bool,
    behaviour: &Mutex<Behaviour>,
    queries: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(buf.len() < 64 * 1024, "request head too large");
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("the proxy sends a Content-Length");
    while buf.len() < body_start + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(head.starts_with("post "), "OCSP requests are POSTed: {head}");
    assert!(head.contains("content-type: application/ocsp-request"), "{head}");
    let n = queries.fetch_add(1, Ordering::SeqCst);
    let b = *behaviour.lock().unwrap();
    if let Behaviour::Slow(d) = b {
        tokio::time::sleep(d).await;
    }
    let req = dir.join(format!("req-{n}.der"));
    let resp = dir.join(format!("resp-{n}.der"));
    std::fs::write(&req, &buf[body_start..body_start + len])?;
    let p = |name: &str| dir.join(name).display().to_string();
    let mut args = vec![
        "ocsp".to_string(),
        "-index".into(),
        p("index.txt"),
        "-CA".into(),
        p("ca.crt"),
        "-rsigner".into(),
        p("signer.crt"),
        "-rkey".into(),
        p("signer.key"),
        "-reqin".into(),
        req.display().to_string(),
        "-respout".into(),
        resp.display().to_string(),
    ];
    if no_certs {
        args.push("-resp_no_certs".into());
    }
    let out = tokio::process::Command::new("openssl").args(&args).output().await?;
    assert!(out.status.success(), "openssl ocsp failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut body = std::fs::read(&resp)?;
    if b == Behaviour::CorruptSignature {
        *body.last_mut().unwrap() ^= 0x01;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// Users of the OCSP tests: dave (good), carol (revoked by OCSP only), erin (not in the
/// responder's index: "unknown"); their certificates name the responder in their AIA.
struct Users {
    dave: Issued,
    carol: Issued,
    erin: Issued,
}

fn issue_users(pki: &Pki, url: &str) -> Users {
    let spec = |cn: &str| Spec { ocsp_urls: vec![url.to_string()], ..Spec::client(cn, &["dev"]) };
    Users {
        dave: pki.users_ca.issue(&spec("dave")),
        carol: pki.users_ca.issue(&spec("carol")),
        erin: pki.users_ca.issue(&spec("erin")),
    }
}

struct Setup {
    env: Env,
    responder: Responder,
    users: Users,
}

/// PKI, responder (index: dave V, carol R), stand-in upstream, and the proxy with `args`.
async fn setup(signer: Signer, args: &[&str], pinned: bool) -> Setup {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let responder = Responder::start(&pki, signer).await;
    let users = issue_users(&pki, &responder.url);
    responder.write_index(&[(&users.dave, "dave", 'V'), (&users.carol, "carol", 'R')]);
    let upstream = Upstream::start(pki.sim_config()).await;
    let mut all = pki.proxy_args(upstream.addr);
    all.extend(args.iter().map(|s| s.to_string()));
    let proxy =
        if pinned { ProxyProcess::start_pinned(tmp.path(), &all) } else { ProxyProcess::start(tmp.path(), &all) };
    Setup { env: Env { tmp, pki, upstream, proxy }, responder, users }
}

fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn whoami(env: &Env, user: &Issued, http: Http) -> Result<String, String> {
    env.request(Some(user), http, whoami_request()).await.map(|r| user_info(&r).username)
}

fn assert_refused(result: Result<String, String>, alert: &str, ctx: &str) {
    match result {
        Ok(user) => panic!("{ctx}: expected the TLS alert {alert:?}, got in as {user}"),
        Err(e) => assert_eq!(e, format!("remote error: tls: {alert}"), "{ctx}"),
    }
}

async fn ocsp_queries(env: &Env, result: &str) -> f64 {
    series(&metrics(env).await, &format!("kube_crl_proxy_ocsp_queries_total{{result=\"{result}\"}}")).unwrap_or(0.0)
}

#[tokio::test]
async fn good_passes_revoked_gets_the_crl_alert_and_answers_are_cached() {
    let s = setup(Signer::Delegated, &["--ocsp", "if-available"], false).await;
    let (env, u) = (&s.env, &s.users);

    for http in [Http::H1, Http::H2] {
        assert_eq!(whoami(env, &u.dave, http).await.unwrap(), "dave", "{http:?}");
        assert_refused(whoami(env, &u.carol, http).await, "revoked certificate", &format!("carol, {http:?}"));
    }
    // TLS 1.2 too: the alert is the CRL one.
    let tls12 = client_tls_versions(
        &env.pki.root_der(),
        Some((&u.carol, &env.pki.users_ca)),
        Http::H1,
        &[&rustls::version::TLS12],
    );
    let r = request(env.proxy.addr, tls12, Http::H1, whoami_request()).await.map(|r| user_info(&r).username);
    assert_refused(r, "revoked certificate", "carol, TLS 1.2");

    // One query per certificate: the other handshakes used the cached answers.
    assert_eq!(s.responder.queries(), 2, "dave and carol were each asked about once");
    assert_eq!(ocsp_queries(env, "good").await, 1.0);
    assert_eq!(ocsp_queries(env, "revoked").await, 1.0);

    // "unknown" under if-available: the handshake goes on (the CRL still applies).
    assert_eq!(whoami(env, &u.erin, Http::H2).await.unwrap(), "erin");
    assert_eq!(ocsp_queries(env, "unknown").await, 1.0);
    // A CRL hit needs no OCSP answer: bob is refused without a query.
    assert_refused(whoami(env, &env.pki.bob, Http::H2).await, "revoked certificate", "bob (CRL)");
    assert_eq!(s.responder.queries(), 3);
    // Alice's certificate names no responder: no answer, passes under if-available.
    assert_eq!(whoami(env, &env.pki.alice, Http::H2).await.unwrap(), "alice");
    assert_eq!(ocsp_queries(env, "no_responder").await, 1.0);

    let logs = env.proxy.logs();
    assert!(logs.contains("revoked per OCSP responder"), "{logs}");
    let scrape = metrics(env).await;
    assert!(scrape.contains("kube_crl_proxy_ocsp_query_duration_seconds_count"), "{scrape}");
}

#[tokio::test]
async fn required_refuses_unknown_and_unreachable_but_not_tokens() {
    let s = setup(Signer::Delegated, &["--ocsp", "required"], false).await;
    let (env, u) = (&s.env, &s.users);
    assert_eq!(whoami(env, &u.dave, Http::H2).await.unwrap(), "dave");
    assert_refused(whoami(env, &u.carol, Http::H2).await, "revoked certificate", "carol");
    assert_refused(whoami(env, &u.erin, Http::H2).await, "bad certificate status response", "erin (unknown)");
    assert_refused(whoami(env, &env.pki.alice, Http::H1).await, "bad certificate status response", "alice (no AIA)");
    let log = env.proxy.wait_for_log("ocsp_no_answer");
    assert!(log.contains("answers \\\"unknown\\\"") || log.contains("answers \"unknown\""), "{log}");

    // The responder is down: required refuses, token users are unaffected.
    let url = format!("http://{}/", closed_port());
    let down = setup(Signer::Delegated, &["--ocsp", "required", "--ocsp-responder-url", &url], false).await;
    let started = Instant::now();
    assert_refused(whoami(&down.env, &down.users.dave, Http::H2).await, "bad certificate status response", "down");
    assert!(started.elapsed() < Duration::from_secs(10), "a refused connection to the responder is fast");
    let token = down.env.request(None, Http::H2, bearer(whoami_request())).await.unwrap();
    assert_eq!(user_info(&token).username, "token-user");
    assert_eq!(ocsp_queries(&down.env, "error").await, 1.0);
    let logs = down.env.proxy.logs();
    assert!(logs.contains("ocsp_query_failed") && logs.contains(&url), "{logs}");
}

fn bearer(
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

#[tokio::test]
async fn if_available_passes_while_the_responder_is_down_and_backs_off() {
    let url = format!("http://{}/", closed_port());
    let s = setup(Signer::Delegated, &["--ocsp", "if-available", "--ocsp-responder-url", &url], false).await;
    for http in [Http::H1, Http::H2, Http::H1] {
        assert_eq!(whoami(&s.env, &s.users.dave, http).await.unwrap(), "dave");
    }
    // The CRL still applies.
    assert_refused(whoami(&s.env, &s.env.pki.bob, Http::H2).await, "revoked certificate", "bob");
    // One failed query, then the back-off answers "no answer" without asking again.
    assert_eq!(ocsp_queries(&s.env, "error").await, 1.0);
    assert_eq!(s.responder.queries(), 0, "the override URL is used, not the certificate's AIA");
}

#[tokio::test]
async fn a_slow_responder_is_bounded_and_stalls_no_other_connection() {
    // Pinned to one core: the runtime has a single worker, which the waiting handshake
    // must hand over (block_in_place) for the token requests to be served meanwhile.
    let s = setup(Signer::Delegated, &["--ocsp", "if-available", "--ocsp-timeout", "3s"], true).await;
    s.responder.set(Behaviour::Slow(Duration::from_secs(30)));
    let env = &s.env;
    let started = Instant::now();
    let dave = async {
        let r = whoami(env, &s.users.dave, Http::H2).await;
        (r, started.elapsed())
    };
    let others = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut done = Vec::new();
        for _ in 0..5 {
            let reply = env.request(None, Http::H1, bearer(whoami_request())).await.unwrap();
            assert_eq!(user_info(&reply).username, "token-user");
            done.push(started.elapsed());
        }
        done
    };
    let ((dave, dave_took), others_done) = tokio::join!(dave, others);
    assert_eq!(dave.unwrap(), "dave", "if-available lets the handshake go on after the timeout");
    assert!(dave_took >= Duration::from_millis(2900), "dave waited for the responder: {dave_took:?}");
    assert!(dave_took < Duration::from_secs(15), "the wait is bounded by --ocsp-timeout: {dave_took:?}");
    let last = *others_done.last().unwrap();
    assert!(
        last < dave_took,
        "the token requests finished ({others_done:?}) while dave's handshake waited ({dave_took:?})"
    );
    assert_eq!(ocsp_queries(env, "timeout").await, 1.0);

    // Under required, the same wait ends in a refusal.
    let r = setup(Signer::Delegated, &["--ocsp", "required", "--ocsp-timeout", "1s"], false).await;
    r.responder.set(Behaviour::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    assert_refused(whoami(&r.env, &r.users.dave, Http::H1).await, "bad certificate status response", "slow");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_signatures_and_unauthorized_signers_are_not_believed() {
    // Signed by the CA itself (no certificates in the response): believed.
    let ca = setup(Signer::Ca, &["--ocsp", "required"], false).await;
    assert_eq!(whoami(&ca.env, &ca.users.dave, Http::H2).await.unwrap(), "dave");
    assert_refused(whoami(&ca.env, &ca.users.carol, Http::H2).await, "revoked certificate", "carol, CA-signed");

    // The same responder with one bit of the signature flipped.
    let bad = setup(Signer::Ca, &["--ocsp", "required"], false).await;
    bad.responder.set(Behaviour::CorruptSignature);
    assert_refused(whoami(&bad.env, &bad.users.dave, Http::H2).await, "bad certificate status response", "bad sig");
    assert_eq!(ocsp_queries(&bad.env, "bad_signature").await, 1.0);

    // Signed by a certificate of the CA that lacks the OCSP-signing EKU: not authorized.
    let rogue = setup(Signer::Unauthorized, &["--ocsp", "required"], false).await;
    assert_refused(whoami(&rogue.env, &rogue.users.dave, Http::H2).await, "bad certificate status response", "rogue");
    // ... and under if-available its "revoked" is not believed either.
    let rogue = setup(Signer::Unauthorized, &["--ocsp", "if-available"], false).await;
    assert_eq!(whoami(&rogue.env, &rogue.users.carol, Http::H2).await.unwrap(), "carol");
    assert_eq!(ocsp_queries(&rogue.env, "bad_signature").await, 1.0);
    let logs = rogue.env.proxy.logs();
    assert!(logs.contains("signature does not verify"), "{logs}");
}

#[tokio::test]
async fn a_certificate_flipped_to_revoked_loses_its_open_watches() {
    let s = setup(Signer::Delegated, &["--ocsp", "if-available", "--ocsp-max-age", "2s"], false).await;
    let (env, u) = (&s.env, &s.users);
    let mut h1 = Watch::open(env, &u.dave, Http::H1).await;
    let mut h2 = Watch::open(env, &u.dave, Http::H2).await;
    let mut other = Watch::open(env, &env.pki.alice, Http::H2).await;

    s.responder.write_index(&[(&u.dave, "dave", 'R'), (&u.carol, "carol", 'R')]);
    let flipped = Instant::now();
    // The answer is due after 1.5 s; the cache's tick (every second) refreshes it, and the
    // revoked answer closes both watches.
    let bound = Duration::from_secs(20);
    let (a, b) = tokio::join!(h1.until_closed(bound), h2.until_closed(bound));
    eprintln!("watches closed {:?} / {:?} after the flip ({:?} total)", a, b, flipped.elapsed());
    assert_refused(whoami(env, &u.dave, Http::H2).await, "revoked certificate", "dave after the flip");
    let logs = env.proxy.wait_for_log("connection_closed");
    assert!(logs.contains("revoked per OCSP responder"), "{logs}");

    // Alice's watch is untouched.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(other.next_event().await.is_some(), "alice's watch is still open");
    // Only dave's connections were re-checked: nothing swept every connection.
    let (changed, all) = rechecked(env).await;
    assert!(changed >= 2.0, "dave's two connections were re-checked ({changed})");
    assert_eq!(all, 0.0, "no re-check of every connection");
}

/// `kube_crl_proxy_connections_rechecked_total` for scope `changed` and `all`.
async fn rechecked(env: &Env) -> (f64, f64) {
    let scrape = metrics(env).await;
    let scope = |s: &str| {
        series(&scrape, &format!("kube_crl_proxy_connections_rechecked_total{{scope=\"{s}\"}}")).unwrap_or(0.0)
    };
    (scope("changed"), scope("all"))
}

#[tokio::test]
async fn under_required_an_answer_that_lapses_unrefreshed_closes_its_connections() {
    let s = setup(Signer::Delegated, &["--ocsp", "required", "--ocsp-max-age", "2s"], false).await;
    let (env, u) = (&s.env, &s.users);
    let mut dave = Watch::open(env, &u.dave, Http::H2).await;
    // The responder's answers stop verifying: refreshes fail, and dave's answer lapses 2 s
    // after it was fetched.
    s.responder.set(Behaviour::CorruptSignature);
    let broke = Instant::now();
    let closed = dave.until_closed(Duration::from_secs(20)).await;
    eprintln!("closed {closed:?} after the responder broke ({:?})", broke.elapsed());
    let logs = env.proxy.wait_for_log("connection_closed");
    assert!(logs.contains("signature does not verify"), "{logs}");
    let (changed, all) = rechecked(env).await;
    assert!(changed >= 1.0, "dave's connection was re-checked ({changed})");
    assert_eq!(all, 0.0, "no re-check of every connection");
}

#[test]
fn bad_ocsp_flags_name_the_flag() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let base = pki.proxy_args("127.0.0.1:1".parse().unwrap());
    for (extra, needle) in [
        (vec!["--ocsp", "sometimes"], "--ocsp"),
        (vec!["--ocsp", "required", "--ocsp-responder-url", "https://ocsp.example/"], "--ocsp-responder-url"),
        (vec!["--ocsp", "required", "--ocsp-timeout", "0s"], "--ocsp-timeout"),
        (vec!["--ocsp", "required", "--ocsp-max-age", "soon"], "--ocsp-max-age"),
    ] {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(64), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
}

/// `inspect` and `check` with the proxy's flags (run as a child process, so the responder
/// in this test's runtime keeps answering).
async fn kcp(sub: &str, s: &Setup, extra: &[String]) -> (Option<i32>, String) {
    let mut args = vec![sub.to_string()];
    args.extend(extra.iter().cloned());
    args.extend(s.env.pki.proxy_args(s.env.upstream.addr));
    args.extend(["--ocsp".to_string(), "if-available".to_string()]);
    let out = tokio::process::Command::new(binary()).args(&args).output().await.unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn inspect_and_check_report_ocsp() {
    let s = setup(Signer::Delegated, &[], false).await;
    let cert = |name: &str, user: &Issued| s.env.pki.write_user(name, user).0.display().to_string();

    let (code, out) = kcp("inspect", &s, &[cert("dave", &s.users.dave)]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("ocsp:        good, answered by {}", s.responder.url)), "{out}");
    assert!(out.contains("verdict:     ACCEPTED"), "{out}");

    let (code, out) = kcp("inspect", &s, &[cert("carol", &s.users.carol)]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ocsp:        REVOKED at"), "{out}");
    assert!(out.contains("verdict:     REFUSED"), "{out}");
    assert!(out.contains("revoked per OCSP responder"), "{out}");

    let (code, out) = kcp("inspect", &s, &[cert("erin", &s.users.erin)]).await;
    assert_eq!(code, Some(0), "if-available accepts an unknown answer: {out}");
    assert!(out.contains("ocsp:        unknown"), "{out}");

    let (code, out) = kcp("check", &s, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("OCSP: if-available (responder: from each certificate's Authority Information Access"),
        "{out}"
    );
    assert_eq!(s.responder.queries(), 3, "check does not query; inspect asks once per certificate");
}
