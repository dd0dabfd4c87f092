//! Failing neighbours, against the real binary over real sockets: an upstream whose TCP
//! handshake never completes, one that accepts TCP but never speaks TLS, one killed in the
//! middle of a download or of a streaming request, one that dies after reading a request and
//! before answering, and CRL files that become unreadable during a reload (half-written, a
//! directory, a dangling symlink). Each test says what the proxy must do instead: answer with
//! a Kubernetes `Status` or end the stream with an error, within a bound, and never serve
//! without the last good CRL.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use kube_crl_proxy_testkit::pki::{Issued, Spec};
use kube_crl_proxy_testkit::sim::pattern_byte;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Bound for anything that should be prompt: detects hangs, not speed.
const WAIT: Duration = Duration::from_secs(10);
/// `--upstream-connect-timeout` in the slow-upstream tests.
const CONNECT_TIMEOUT: &str = "1s";
/// How long a client may wait for the proxy's answer when the upstream does not answer: the
/// connect timeout plus a generous margin for a busy machine.
const ANSWER_BOUND: Duration = Duration::from_secs(15);
const MIB: usize = 1024 * 1024;
/// What `/_sim/bytes` serves at most.
const SIXTY_FOUR_MIB: usize = 64 * MIB;
const CRL_RELOADS: &str = r#"kube_crl_proxy_reloads_total{kind="crl"}"#;
const CRL_RELOAD_FAILURES: &str = r#"kube_crl_proxy_reload_failures_total{kind="crl"}"#;

/// Aborts a background task (a fake upstream) when the test ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A proxy with the standard PKI in front of `upstream`, whatever answers there.
struct Front {
    _tmp: tempfile::TempDir,
    pki: Pki,
    proxy: ProxyProcess,
}

impl Front {
    fn start(tmp: tempfile::TempDir, pki: Pki, upstream: SocketAddr, extra: &[&str]) -> Self {
        let mut args = pki.proxy_args(upstream);
        args.extend(extra.iter().map(|s| s.to_string()));
        let proxy = ProxyProcess::start(tmp.path(), &args);
        Self { _tmp: tmp, pki, proxy }
    }

    fn alice(&self, http: Http) -> rustls::ClientConfig {
        client_tls(&self.pki.root_der(), Some((&self.pki.alice, &self.pki.users_ca)), http)
    }

    /// A GET as alice, bounded by [`ANSWER_BOUND`]: a hang fails the test with the proxy's log.
    async fn get_in_time(&self, http: Http, path: &str) -> (Result<Reply, String>, Duration) {
        let start = Instant::now();
        let reply = timeout(ANSWER_BOUND, request(self.proxy.addr, self.alice(http), http, get(path)))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{http:?}: no answer within {ANSWER_BOUND:?}: the proxy hangs on its upstream\n{}",
                    self.proxy.logs()
                )
            });
        (reply, start.elapsed())
    }
}

// ---------------------------------------------------------------------------
// 1. An upstream slow to accept

/// A loopback address whose TCP handshake never completes: a listener with backlog 0 whose
/// accept queue is full, so that Linux drops further SYNs and the client retransmits until
/// it gives up. Keep the listener and the queued connections alive. Panics if the kernel
/// completes handshakes anyway (then this test cannot prove anything here).
fn blackhole() -> (SocketAddr, TcpListener, Vec<std::net::TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(0).expect("listen with backlog 0");
    let addr = listener.local_addr().expect("addr");
    let mut queued = Vec::new();
    // Linux queues backlog + 1 connections; the next SYN must go unanswered.
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (addr, listener, queued),
            Err(e) => panic!("probing the full listener: {e}"),
        }
    }
    panic!("{} connections to a full backlog-0 listener completed: SYNs are not dropped here", queued.len());
}

/// A proxy with `--upstream-connect-timeout 1s` in front of a [`blackhole`].
fn blackholed() -> (Front, TcpListener, Vec<std::net::TcpStream>) {
    let (addr, listener, queued) = blackhole();
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    (Front::start(tmp, pki, addr, &["--upstream-connect-timeout", CONNECT_TIMEOUT]), listener, queued)
}

/// Defends: an upstream whose TCP connect hangs (a host that drops SYNs, a full accept queue)
/// costs a client `--upstream-connect-timeout`, then an error `Status` (503 or 504), over
/// HTTP/1.1 and HTTP/2; never a hang.
#[tokio::test]
async fn an_upstream_that_never_completes_tcp_is_answered_after_the_connect_timeout() {
    let (front, _listener, _queued) = blackholed();
    for http in [Http::H1, Http::H2] {
        let (reply, took) = front.get_in_time(http, "/api/v1/namespaces/default/pods").await;
        let reply = reply.unwrap_or_else(|e| panic!("{http:?}: {e}"));
        let (code, reason) = match reply.status.as_u16() {
            503 => (503, "ServiceUnavailable"),
            _ => (504, "Timeout"),
        };
        let v = assert_status(reply.status, &reply.headers, &reply.body, code, reason);
        assert!(took >= Duration::from_millis(900), "{http:?}: answered in {took:?}, before the connect timeout: {v}");
        eprintln!("{http:?}: {code} after {took:?}");
    }
}

/// Defends: requests that arrive together while the upstream's TCP connect hangs all get
/// their answer after about one `--upstream-connect-timeout`, not one timeout after another
/// (the HTTP/2 pool opens one connection at a time; waiting requests share its failure).
#[tokio::test]
async fn concurrent_requests_to_a_hanging_upstream_wait_one_connect_timeout_not_several() {
    let (front, _listener, _queued) = blackholed();
    let front = Arc::new(front);
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let front = front.clone();
            let http = if i % 2 == 0 { Http::H1 } else { Http::H2 };
            tokio::spawn(async move { front.get_in_time(http, &format!("/api/v1/namespaces/n{i}/pods")).await })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (reply, took) = client.await.expect("client task");
        let reply = reply.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(matches!(reply.status.as_u16(), 503 | 504), "client {i}: {}", reply.status);
        // One timeout is 1 s; six in a row would be 6 s.
        assert!(took < Duration::from_millis(2500), "client {i} waited {took:?}: connect timeouts queued up");
    }
}

/// README, "Failure behaviour": a connect timeout is a `504` (`Timeout`), told apart from a
/// refused connection (`503`).
#[tokio::test]
async fn a_connect_timeout_is_answered_504_timeout_as_documented() {
    let (front, _listener, _queued) = blackholed();
    for http in [Http::H1, Http::H2] {
        let reply = front.get_in_time(http, "/api/v1/namespaces/default/pods").await.0;
        let reply = reply.unwrap_or_else(|e| panic!("{http:?}: {e}"));
        assert_status(reply.status, &reply.headers, &reply.body, 504, "Timeout");
    }
    wait_log(&front.proxy, "did not answer in time", WAIT).await;
}

/// An upstream that accepts TCP connections and holds them without ever reading or writing:
/// a TLS client waits for the ServerHello forever.
async fn silent_upstream() -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: the proxy opens a few connections per request and health check.
        for _ in 0..10_000 {
            match listener.accept().await {
                Ok((tcp, _)) => held.push(tcp),
                Err(_) => return,
            }
        }
    });
    (addr, AbortOnDrop(task))
}

/// Defends: an upstream that accepts TCP but never completes the TLS handshake (a wedged
/// kube-apiserver, a port taken by something else) must not hold the client forever: the
/// handshake is bounded like the connect, and the client gets a 504 `Status`.
#[tokio::test]
async fn an_upstream_that_never_answers_tls_gives_504_within_a_bound() {
    let (addr, _upstream) = silent_upstream().await;
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let front = Front::start(tmp, pki, addr, &["--upstream-connect-timeout", CONNECT_TIMEOUT]);
    for http in [Http::H1, Http::H2] {
        let (reply, took) = front.get_in_time(http, "/api/v1/namespaces/default/pods").await;
        let reply = reply.unwrap_or_else(|e| panic!("{http:?}: {e}"));
        assert_status(reply.status, &reply.headers, &reply.body, 504, "Timeout");
        eprintln!("{http:?}: 504 after {took:?}");
    }
}

// ---------------------------------------------------------------------------
// 2. An upstream killed in the middle of a request

/// Reads `body` on after the upstream died: it must end with an error (never cleanly, since
/// the response is incomplete, and never hang). Returns the bytes that still arrived.
async fn rest_ends_with_an_error(body: &mut hyper::body::Incoming, ctx: &str) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    // Bounded: /_sim/bytes sends 64 KiB chunks, so at most 1024 of them.
    for _ in 0..SIXTY_FOUR_MIB / 1024 {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_chunk(body, left).await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => panic!("{ctx}: the response ended cleanly after the upstream died: it looks complete"),
            Err(e) => {
                eprintln!("{ctx}: the response ended with an error after {} more bytes: {e}", got.len());
                return got;
            }
        }
    }
    panic!("{ctx}: the response went on after the upstream died");
}

/// Defends: a download cut by the upstream's death reaches the client as an error, not as
/// a short body that looks complete, and not as a hang (HTTP/1.1: the connection is aborted
/// before `Content-Length` bytes; HTTP/2: the stream is reset). The proxy then answers 503.
#[tokio::test]
async fn upstream_killed_mid_download_ends_the_response_with_an_error() {
    for http in [Http::H1, Http::H2] {
        let Env { tmp, pki, upstream, proxy } = Env::start(&[]).await;
        let tls = || client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let req = stream_request(Method::GET, &format!("/_sim/bytes?n={SIXTY_FOUR_MIB}"), empty());
        let resp = open(proxy.addr, tls(), http, req).await;
        assert_eq!(resp.status(), 200, "{http:?}");
        assert_eq!(resp.headers()["content-length"], SIXTY_FOUR_MIB.to_string().as_str(), "{http:?}");
        let mut body = resp.into_body();
        let mut got = read_at_least(&mut body, MIB, WAIT).await;

        // The client stops reading while the upstream dies: the download is mid-way.
        timeout(WAIT, upstream.stop()).await.expect("stand-in stops");
        got.extend(rest_ends_with_an_error(&mut body, &format!("{http:?}")).await);
        assert!(got.len() < SIXTY_FOUR_MIB, "{http:?}: the whole download arrived: the kill came too late to test");
        let bad = (0u64..).zip(got.iter()).find(|(i, b)| **b != pattern_byte(*i));
        assert!(bad.is_none(), "{http:?}: what did arrive is corrupt, first wrong byte at {bad:?}");

        let reply = request(proxy.addr, tls(), http, get("/_sim/headers")).await.unwrap();
        assert_status(reply.status, &reply.headers, &reply.body, 503, "ServiceUnavailable");
        drop((proxy, tmp));
    }
}

/// Defends: a streaming request (body both ways, like `kubectl cp` or a long POST) cut by the
/// upstream's death ends with an error on the client side, over HTTP/1.1 (chunked) and HTTP/2:
/// a chunked response must not be terminated cleanly as if the upstream had finished.
#[tokio::test]
async fn upstream_killed_mid_request_ends_the_response_with_an_error() {
    for http in [Http::H1, Http::H2] {
        let Env { tmp, pki, upstream, proxy } = Env::start(&[]).await;
        let tls = client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let (tx, body) = channel_body();
        let resp = open(proxy.addr, tls, http, stream_request(Method::POST, "/_sim/echo", body)).await;
        assert_eq!(resp.status(), 200, "{http:?}");
        let mut body = resp.into_body();
        // The upstream is inside the request: what was sent comes back.
        let sent = Bytes::from(vec![0x5a; 64 * 1024]);
        tx.send(sent.clone()).await.expect("send the first part");
        let echoed = read_at_least(&mut body, sent.len(), WAIT).await;
        assert_eq!(echoed, sent, "{http:?}");

        timeout(WAIT, upstream.stop()).await.expect("stand-in stops");
        rest_ends_with_an_error(&mut body, &format!("{http:?}")).await;
        // The request side is not left hanging either: the client's body is dropped or
        // refused once its connection or stream is gone.
        let mut refused = false;
        for _ in 0..100 {
            match timeout(WAIT, tx.send(Bytes::from_static(b"more"))).await {
                Ok(Err(_)) => {
                    refused = true;
                    break;
                }
                Ok(Ok(())) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => panic!("{http:?}: the request body still blocks {WAIT:?} after the response failed"),
            }
        }
        assert!(refused, "{http:?}: the request body is still being read after the response failed");
        drop((proxy, tmp));
    }
}

/// What a fake upstream reports for each request it holds: the request head and the trigger
/// that kills its connection (sent or dropped).
type Held = (String, oneshot::Sender<()>);

/// An upstream that speaks TLS and HTTP/1.1 only: it answers the proxy's `/readyz` checks,
/// reads any other request head, reports it, and when told to (or when the trigger is
/// dropped) dies: the connection is reset without a response (RST, as when the process is
/// killed with unread data in its socket).
async fn dying_upstream(pki: &Pki) -> (SocketAddr, mpsc::Receiver<Held>, AbortOnDrop) {
    let acceptor = pki.serving_acceptor(&[b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (held_tx, held_rx) = mpsc::channel::<Held>(8);
    let task = tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, held_tx) = (acceptor.clone(), held_tx.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = timeout(WAIT, acceptor.accept(tcp)).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // One request head per turn; bounded (health checks come every 500 ms).
                for _ in 0..1000 {
                    let head = loop {
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            let rest = buf.split_off(end + 4);
                            break String::from_utf8_lossy(&std::mem::replace(&mut buf, rest)).into_owned();
                        }
                        match tls.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    if head.starts_with("GET /readyz ") {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
                        if tls.write_all(ok).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let (kill_tx, kill_rx) = oneshot::channel();
                    if held_tx.send((head, kill_tx)).await.is_err() {
                        return;
                    }
                    let _ = kill_rx.await;
                    let _ = tls.get_ref().0.set_zero_linger();
                    return;
                }
            });
        }
    });
    (addr, held_rx, AbortOnDrop(task))
}

/// Defends: an upstream that dies after it has read a request and before it answers (a
/// kube-apiserver crash during a slow list) gives the client a 502 `Status` at once, over
/// HTTP/1.1 and HTTP/2, and the request is not replayed.
#[tokio::test]
async fn upstream_dying_before_its_answer_gives_502() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let (addr, mut held, _upstream) = dying_upstream(&pki).await;
    let front = Arc::new(Front::start(tmp, pki, addr, &[]));
    for http in [Http::H1, Http::H2] {
        let path = format!("/api/v1/namespaces/slow-{http:?}/pods");
        let client = {
            let (front, path) = (front.clone(), path.clone());
            tokio::spawn(async move { front.get_in_time(http, &path).await })
        };
        let (head, kill) = timeout(WAIT, held.recv()).await.expect("the request reached the upstream").unwrap();
        assert!(head.starts_with(&format!("GET {path} HTTP/1.1\r\n")), "{http:?}: {head}");
        assert!(head.to_ascii_lowercase().contains("x-remote-user: alice\r\n"), "{http:?}: {head}");
        drop(kill);

        let (reply, took) = client.await.expect("client task");
        let reply = reply.unwrap_or_else(|e| panic!("{http:?}: {e}"));
        assert_status(reply.status, &reply.headers, &reply.body, 502, "InternalError");
        eprintln!("{http:?}: 502 {took:?} after the request was sent");
        // Not replayed on another connection: nothing else arrives for this request.
        if let Ok(Some((again, _))) = timeout(Duration::from_millis(500), held.recv()).await {
            panic!("{http:?}: the request was sent again after the upstream died: {again}");
        }
    }
    // The upstream offers no h2: the HTTP/2 pool (the default) handed every request to HTTP/1.1,
    // and said so once.
    let logs = front.proxy.logs();
    assert_eq!(logs.matches("did not negotiate HTTP/2").count(), 1, "{logs}");
}

// ---------------------------------------------------------------------------
// 3. Unreadable CRL files during a reload

/// What the proxy should be enforcing: the users CA's CRL lists `revoked`.
struct Expect<'a> {
    served: Vec<(&'a str, &'a Issued)>,
    refused: Vec<(&'a str, &'a Issued)>,
    entries: usize,
}

/// Every `refused` client gets `certificate_revoked` and every `served` one its identity, over
/// both HTTP versions; `/metrics` reports the expected entry count.
async fn assert_enforced(env: &Env, want: &Expect<'_>, ctx: &str) {
    for http in [Http::H1, Http::H2] {
        for (name, cert) in &want.refused {
            let err = env.request(Some(cert), http, whoami_request()).await.map(|r| r.status);
            assert_eq!(err, Err("remote error: tls: revoked certificate".into()), "{ctx}: {name} over {http:?}");
        }
        for (name, cert) in &want.served {
            let reply = env.request(Some(cert), http, whoami_request()).await;
            let reply = reply.unwrap_or_else(|e| panic!("{ctx}: {name} over {http:?}: {e}"));
            assert_eq!(user_info(&reply).username, *name, "{ctx}: {http:?}");
        }
    }
    let m = admin_get(env.proxy.admin, "/metrics").await.1;
    assert_eq!(
        crl_series(&m, "kube_crl_proxy_crl_entries", "CN=test-users-ca"),
        Some(want.entries as f64),
        "{ctx}: CRL in use\n{m}"
    );
}

/// Waits until a fresh handshake of `cert` gets `want` (`true`: refused as revoked).
async fn wait_revoked(env: &Env, cert: &Issued, want: bool, ctx: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let result = env.request(Some(cert), Http::H1, whoami_request()).await;
        let revoked = matches!(&result, Err(e) if e == "remote error: tls: revoked certificate");
        if revoked == want {
            return;
        }
        assert!(Instant::now() < deadline, "{ctx}: still {result:?} {WAIT:?} after the new CRL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ways a CRL file becomes unreadable; each leaves `crl.pem` in that state.
#[derive(Clone, Copy, Debug)]
enum Breakage {
    /// Truncated in place, nothing written yet (a full disk at the first write).
    Empty,
    /// Truncated in place, then half of the new file written (a full disk mid-way).
    HalfWritten,
    /// Truncated in place, only the first of the two CRL blocks written: valid PEM, but the
    /// users CA has no CRL at all.
    FirstBlockOnly,
    /// Replaced by a directory.
    Directory,
    /// Replaced (atomically) by a symlink to a file that does not exist.
    DanglingSymlink,
}

impl Breakage {
    /// Leaves `crl` in this state; `next` is the good PEM a writer was busy writing.
    fn apply(self, crl: &Path, next: &str) {
        use std::io::Write;
        let in_place = |bytes: &[u8]| {
            let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(crl).expect("open crl.pem");
            f.write_all(bytes).expect("write");
            f.sync_all().expect("sync");
        };
        match self {
            Self::Empty => in_place(b""),
            Self::HalfWritten => in_place(&next.as_bytes()[..next.len() / 2]),
            Self::FirstBlockOnly => {
                let end = next.find("-----END X509 CRL-----").expect("a CRL block") + "-----END X509 CRL-----\n".len();
                in_place(&next.as_bytes()[..end]);
            }
            Self::Directory => {
                std::fs::remove_file(crl).expect("remove crl.pem");
                std::fs::create_dir(crl).expect("mkdir crl.pem");
            }
            Self::DanglingSymlink => {
                let link = crl.with_extension("pem.link");
                std::os::unix::fs::symlink(crl.with_extension("pem.gone"), &link).expect("symlink");
                std::fs::rename(&link, crl).expect("rename the symlink over crl.pem");
            }
        }
    }

    /// Puts a good file back in place of whatever this left.
    fn repair(self, crl: &Path, good: &str) {
        if let Self::Directory = self {
            std::fs::remove_dir(crl).expect("rmdir crl.pem");
        }
        replace_by_rename(crl, good);
    }
}

/// Defends: a CRL file that cannot be read or parsed during a reload (half-written by a full
/// disk, a directory, a dangling symlink; root reads through `chmod 000`, so that is no test)
/// never leaves the proxy without revocation: the last good CRL stays in force (the revoked
/// user is refused, the others are served), the failure is logged naming the file and counted
/// in `/metrics`, the proxy stays ready, and the next good file is picked up.
#[tokio::test]
async fn unreadable_crl_files_keep_the_last_good_crl_until_a_good_one_returns() {
    let env = Env::start(&[]).await;
    let carol = env.pki.users_ca.issue(&Spec::client("carol", &["dev"]));
    let (alice, bob) = (&env.pki.alice, &env.pki.bob);
    let crl = env.pki.path("crl.pem");
    // CRL 1 (bob revoked) is in force; each repair toggles carol with the next CRL number.
    let mut number = 1;
    let mut carol_revoked = false;
    let cases = [
        Breakage::Empty,
        Breakage::HalfWritten,
        Breakage::FirstBlockOnly,
        Breakage::Directory,
        Breakage::DanglingSymlink,
    ];
    for case in cases {
        let ctx = format!("{case:?}");
        let before = admin_get(env.proxy.admin, "/metrics").await.1;
        let (failures, reloads) =
            (series(&before, CRL_RELOAD_FAILURES).unwrap_or(0.0), series(&before, CRL_RELOADS).unwrap_or(0.0));
        let logged = env.proxy.logs().matches("reload_failed").count();

        let revoked_then: Vec<&[u8]> = if carol_revoked { vec![&bob.serial, &carol.serial] } else { vec![&bob.serial] };
        let revoked_next: Vec<&[u8]> = if carol_revoked { vec![&bob.serial] } else { vec![&bob.serial, &carol.serial] };
        case.apply(&crl, &env.pki.crl_pem(&revoked_next, number + 1));

        // Counted, logged with the file named, nothing else changed.
        let m = wait_admin(env.proxy.admin, "/metrics", "counting the failed reload", |_, b| {
            series(b, CRL_RELOAD_FAILURES).unwrap_or(0.0) > failures
        })
        .await;
        assert_eq!(series(&m, CRL_RELOADS).unwrap_or(0.0), reloads, "{ctx}: a reload succeeded\n{m}");
        let culprit = match case {
            Breakage::FirstBlockOnly => r#"CA "CN=test-users-ca" has no CRL"#.to_string(),
            _ => format!("--crl-file {}", path_str(&crl)),
        };
        // The log is read from the proxy's stderr by another thread, so it can lag behind the
        // metric, and a breakage can take more than one failed reload (a write seen half done):
        // wait, bounded, for a new reload_failed line that names this case's culprit.
        let line = new_log_line(&env.proxy, logged, "reload_failed", &culprit, Duration::from_secs(10))
            .await
            .unwrap_or_else(|logs| panic!("{ctx}: no new reload_failed line naming {culprit:?}:\n{logs}"));
        assert!(line.contains("still serving the last good"), "{ctx}: says the last good CRL stays: {line}");
        eprintln!("{ctx}: {line}");
        let (status, body) = admin_get(env.proxy.admin, "/readyz").await;
        assert_eq!(status, 200, "{ctx}: still ready with the last good CRL: {body}");
        let then = |carol_revoked: bool, revoked: &[&[u8]]| {
            let mut e = Expect { served: vec![("alice", alice)], refused: vec![("bob", bob)], entries: revoked.len() };
            if carol_revoked {
                e.refused.push(("carol", &carol))
            } else {
                e.served.push(("carol", &carol))
            }
            e
        };
        assert_enforced(&env, &then(carol_revoked, &revoked_then), &format!("{ctx}, broken")).await;

        // A good file comes back: it is used at once.
        number += 1;
        carol_revoked = !carol_revoked;
        case.repair(&crl, &env.pki.crl_pem(&revoked_next, number));
        wait_revoked(&env, &carol, carol_revoked, &format!("{ctx}, repaired")).await;
        assert_enforced(&env, &then(carol_revoked, &revoked_next), &format!("{ctx}, repaired")).await;
        let m = admin_get(env.proxy.admin, "/metrics").await.1;
        assert!(series(&m, CRL_RELOADS).unwrap_or(0.0) > reloads, "{ctx}: the repair was not counted\n{m}");
    }
}

/// The first log line containing `kind` and `needle` among those containing `kind` after the
/// first `skip` of them, polled until `within` has passed; `Err` carries the whole log.
async fn new_log_line(
    proxy: &ProxyProcess,
    skip: usize,
    kind: &str,
    needle: &str,
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let logs = proxy.logs();
        let found = logs.lines().filter(|l| l.contains(kind)).skip(skip).find(|l| l.contains(needle));
        if let Some(line) = found {
            return Ok(line.to_string());
        }
        if Instant::now() >= deadline {
            return Err(logs);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
