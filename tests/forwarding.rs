//! Forwarding end to end through the real binary: streaming (watch, 10 MiB both ways), upgrades,
//! hop-by-hop headers, upstream failures as `Status`, graceful shutdown, start-up errors (exit 64),
//! combined PEM files, the config file, and curl.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use kube_crl_proxy_testkit::pki::{Authority, Spec};
use kube_crl_proxy_testkit::sim::{pattern_byte, websocket_accept};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Bound for anything that should be prompt (a response head, an event, an echo).
const WAIT: Duration = Duration::from_secs(10);
/// Bound for 10 MiB transfers on a slow, shared debug build: detects hangs, not speed.
const BIG_WAIT: Duration = Duration::from_secs(180);
const TEN_MIB: usize = 10 * 1024 * 1024;
const WATCH: &str = "/api/v1/namespaces/default/pods?watch=1";
const WS_KEY: &str = "x3JJHMbDL1EzLkh9GBhXDw==";

// ---------------------------------------------------------------------------
// Bodies and responses

/// The rest of a body, bounded by `within`.
async fn collect(body: Incoming, within: Duration) -> Bytes {
    timeout(within, body.collect()).await.expect("body in time").expect("body").to_bytes()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A deterministic upload pattern, different from the stand-in's download pattern.
fn upload_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// The `[name, value]` pairs the stand-in reports in `/_sim/headers`.
fn seen_headers(v: &Value) -> Vec<(String, String)> {
    v["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|h| (h[0].as_str().expect("name").to_string(), h[1].as_str().expect("value").to_string()))
        .collect()
}

/// Polls `child` until it exits, bounded by `within`.
async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// A loopback address nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over TLS (for upgrades and exact request headers)

/// Sends a hand-written HTTP/1.1 request; reads a `Content-Length` response.
async fn raw_h1(addr: SocketAddr, tls: rustls::ClientConfig, req: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = connect(addr, tls).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write request");
    let (head, mut body) = read_head(&mut s).await;
    let (code, headers) = parse_head(&head);
    let len: usize = values(&headers, "content-length")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("expected a Content-Length response:\n{head}"));
    let mut rest = vec![0u8; len.checked_sub(body.len()).expect("no more than Content-Length")];
    timeout(WAIT, s.read_exact(&mut rest)).await.expect("body in time").expect("read body");
    body.extend_from_slice(&rest);
    (code, headers, body)
}

/// Bytes go through the tunnel both ways unchanged: interleaved round trips (every byte
/// value), then 256 KiB written while it is read back.
async fn echo_through(s: &mut TlsStream) {
    for round in 0..4u8 {
        let sent: Vec<u8> = (0..1024usize).map(|i| (i as u8) ^ round.wrapping_mul(0x5b)).collect();
        s.write_all(&sent).await.expect("write to tunnel");
        s.flush().await.expect("flush");
        let mut got = vec![0u8; sent.len()];
        timeout(WAIT, s.read_exact(&mut got)).await.expect("echo in time").expect("read echo");
        assert_eq!(got, sent, "round {round}");
    }
    let bulk: Vec<u8> = (0..256 * 1024).map(upload_byte).collect();
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        w.write_all(&bulk).await.expect("write bulk");
        w.flush().await.expect("flush bulk");
    };
    let read = async {
        let mut got = vec![0u8; bulk.len()];
        r.read_exact(&mut got).await.expect("read bulk echo");
        got
    };
    let ((), got) = timeout(BIG_WAIT, async { tokio::join!(write, read) }).await.expect("bulk echo in time");
    assert!(got == bulk, "bulk echo differs (sha256 {} vs {})", sha256(&got), sha256(&bulk));
}

fn websocket_request(extra: &str) -> String {
    format!(
        "GET {EXEC} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n{extra}\r\n"
    )
}

// ---------------------------------------------------------------------------
// Processes: start-up errors, curl

/// Runs the binary on a loopback ephemeral port until it exits; a config that wrongly starts
/// is killed and fails the test after 30 s. Returns (exit code, stderr).
fn exit_of(dir: &Path, args: &[String]) -> (Option<i32>, String) {
    let err_path = dir.join(format!("stderr-{}", std::process::id()));
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = std::process::Command::new(binary())
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0", "--admin-address", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("spawn kube-crl-proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("kube-crl-proxy {args:?} did not exit (it should refuse the configuration):\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).expect("read stderr");
    std::fs::remove_file(&err_path).expect("remove stderr file");
    (status.code(), stderr)
}

/// Expects exit status 64 and every one of `needles` on stderr.
fn assert_usage_error(dir: &Path, case: &str, args: &[String], needles: &[&str]) {
    let (code, stderr) = exit_of(dir, args);
    assert_eq!(code, Some(64), "{case}: exit status; stderr:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{case}: stderr should name {n:?}:\n{stderr}");
    }
}

/// Runs the machine's curl (bounded); returns (body, the `-w` line).
async fn curl(args: &[String]) -> (String, String) {
    let out = timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("curl")
            .args(["-s", "-S", "--max-time", "30", "-o", "-", "-w", "\n%{http_code} %{http_version}"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("run curl");
    let stdout = String::from_utf8(out.stdout).expect("curl output is text");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl {args:?}: {}\n{stderr}\n{stdout}", out.status);
    let (body, w) = stdout.rsplit_once('\n').expect("-w line");
    (body.to_string(), w.to_string())
}

// ---------------------------------------------------------------------------
// 1. Watch

#[tokio::test]
async fn watch_events_stream_without_buffering_over_h1_and_h2() {
    let env = Env::start(&[]).await;
    for http in [Http::H1, Http::H2] {
        let sent = Instant::now();
        let resp = open(
            env.proxy.addr,
            env.tls(Some(&env.pki.alice), http),
            http,
            stream_request(Method::GET, WATCH, empty()),
        )
        .await;
        assert_eq!(resp.status(), 200, "{http:?}");
        assert_eq!(resp.headers()["x-sim-auth"], "requestheader", "{http:?}");
        let mut watch = WatchLines { body: resp.into_body(), buf: Vec::new() };
        let first = watch.next_event(Duration::from_secs(2)).await;
        assert!(sent.elapsed() <= Duration::from_secs(2), "{http:?}: ADDED took {:?}", sent.elapsed());
        assert_eq!(first["type"], "ADDED", "{http:?}: {first}");
        let second = watch.next_event(WAIT).await;
        assert_eq!(second["type"], "MODIFIED", "{http:?}: {second}");
        assert_eq!(second["object"]["metadata"]["resourceVersion"], "2", "{http:?}");
        drop(watch);
    }
}

/// Newline-delimited watch events read frame by frame.
struct WatchLines {
    body: Incoming,
    buf: Vec<u8>,
}

impl WatchLines {
    async fn next_event(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return serde_json::from_slice(&line).expect("watch event JSON");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = next_chunk(&mut self.body, left).await.expect("watch body").expect("watch ended early");
            self.buf.extend_from_slice(&chunk);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Large bodies

#[tokio::test]
async fn ten_mib_echo_round_trips_intact_over_h1_and_h2() {
    let env = Env::start(&[]).await;
    let sent: Bytes = (0..TEN_MIB).map(upload_byte).collect();
    let want = sha256(&sent);
    for http in [Http::H1, Http::H2] {
        let req = stream_request(Method::POST, "/_sim/echo", full(sent.clone()));
        let resp = open(env.proxy.addr, env.tls(Some(&env.pki.alice), http), http, req).await;
        assert_eq!(resp.status(), 200, "{http:?}");
        let got = collect(resp.into_body(), BIG_WAIT).await;
        assert_eq!(got.len(), TEN_MIB, "{http:?}");
        assert_eq!(sha256(&got), want, "{http:?}");
    }
}

#[tokio::test]
async fn ten_mib_download_has_the_right_length_and_pattern_over_h1_and_h2() {
    let env = Env::start(&[]).await;
    for http in [Http::H1, Http::H2] {
        let req = stream_request(Method::GET, &format!("/_sim/bytes?n={TEN_MIB}"), empty());
        let resp = open(env.proxy.addr, env.tls(Some(&env.pki.alice), http), http, req).await;
        assert_eq!(resp.status(), 200, "{http:?}");
        let got = collect(resp.into_body(), BIG_WAIT).await;
        assert_eq!(got.len(), TEN_MIB, "{http:?}");
        let bad = (0u64..).zip(got.iter()).find(|(i, b)| **b != pattern_byte(*i));
        assert!(bad.is_none(), "{http:?}: first wrong byte at {bad:?}");
    }
}

#[tokio::test]
async fn chunked_request_body_is_echoed_intact_over_h1() {
    let env = Env::start(&[]).await;
    // Chunks of varying sizes (1 B .. 64 KiB), about 3 MiB in all, sent as a stream.
    let sizes: Vec<usize> = (0..96).map(|i| [1, 7, 4096, 65536, 1000, 31337][i % 6]).collect();
    let total: usize = sizes.iter().sum();
    let data: Bytes = (0..total).map(upload_byte).collect();
    let mut chunks = Vec::new();
    let mut at = 0;
    for n in sizes {
        chunks.push(Ok::<_, BoxError>(Frame::data(data.slice(at..at + n))));
        at += n;
    }
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let req = stream_request(Method::POST, "/_sim/echo", body);
    let resp = open(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1), Http::H1, req).await;
    assert_eq!(resp.status(), 200);
    let got = collect(resp.into_body(), BIG_WAIT).await;
    assert_eq!(got.len(), total);
    assert_eq!(sha256(&got), sha256(&data));
}

// ---------------------------------------------------------------------------
// 3. Upgrades

#[tokio::test]
async fn spdy_upgrade_tunnels_bytes_both_ways() {
    let env = Env::start(&[]).await;
    let (mut s, headers) = upgrade(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1), &spdy_request("")).await;
    assert_eq!(values(&headers, "upgrade").iter().map(|v| v.to_ascii_lowercase()).collect::<Vec<_>>(), ["spdy/3.1"]);
    assert_eq!(values(&headers, "x-stream-protocol-version"), ["v4.channel.k8s.io"]);
    // The stand-in authenticated the upgrade request through the front-proxy headers.
    assert_eq!(values(&headers, "x-sim-auth"), ["requestheader"]);
    echo_through(&mut s).await;
}

#[tokio::test]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let env = Env::start(&[]).await;
    let (mut s, headers) =
        upgrade(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1), &websocket_request("")).await;
    assert_eq!(values(&headers, "upgrade").iter().map(|v| v.to_ascii_lowercase()).collect::<Vec<_>>(), ["websocket"]);
    assert_eq!(values(&headers, "sec-websocket-accept"), [websocket_accept(WS_KEY).as_str()]);
    assert_eq!(values(&headers, "sec-websocket-protocol"), ["v5.channel.k8s.io"]);
    assert_eq!(values(&headers, "x-sim-auth"), ["requestheader"]);
    echo_through(&mut s).await;
}

/// An anonymous client's upgrade works too, and identity headers it injects are not forwarded:
/// were `X-Remote-User` forwarded, the stand-in would authenticate the front proxy's request
/// as `requestheader` instead of `anonymous` (reported in its `X-Sim-Auth` on the 101).
#[tokio::test]
async fn anonymous_upgrade_works_and_injected_identity_is_dropped() {
    let env = Env::start(&[]).await;
    let injected = "X-Remote-User: admin\r\nX-Remote-Group: system:masters\r\n";
    for req in [spdy_request(injected), websocket_request(injected)] {
        let (mut s, headers) = upgrade(env.proxy.addr, env.tls(None, Http::H1), &req).await;
        assert_eq!(values(&headers, "x-sim-auth"), ["anonymous"], "{req}");
        echo_through(&mut s).await;
    }
}

// ---------------------------------------------------------------------------
// 4. Hop-by-hop headers

const HOP_BY_HOP_LINES: &str = "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic x\r\nTE: trailers\r\n\
     Authorization: Bearer test-token-abc\r\nImpersonate-User: bob\r\n";

fn assert_end_to_end_only(seen: &[(String, String)], ctx: &str) {
    for name in ["x-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(values(seen, name).is_empty(), "{ctx}: {name} reached the upstream: {seen:?}");
    }
    assert_eq!(values(seen, "authorization"), ["Bearer test-token-abc"], "{ctx}: {seen:?}");
    assert_eq!(values(seen, "impersonate-user"), ["bob"], "{ctx}: {seen:?}");
}

/// The proxy's upstream hop is HTTP/2 here, where hyper itself also drops `Connection`,
/// `Keep-Alive` and the headers `Connection` lists; `TE: trailers` and `Proxy-Authorization`
/// it would pass, so those two prove the proxy's own stripping.
#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_over_h1() {
    let env = Env::start(&[]).await;
    let req = format!(
        "GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nConnection: x-secret, keep-alive\r\n{HOP_BY_HOP_LINES}\r\n"
    );
    let (code, _, body) = raw_h1(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1), &req).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    let seen = seen_headers(&v);
    assert_end_to_end_only(&seen, "plain request");
    assert!(values(&seen, "connection").is_empty(), "{seen:?}");
}

/// The same headers on a request that asks for an upgrade: the proxy sends it over its
/// HTTP/1.1-only upgrade pool, where nothing but the proxy strips headers. The stand-in answers
/// `/_sim/headers` with 200 (no upgrade), showing exactly what arrived over HTTP/1.1.
#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_on_an_http11_upstream_hop() {
    let env = Env::start(&[]).await;
    let req = format!(
        "GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, x-secret, keep-alive\r\n\
         Upgrade: websocket\r\n{HOP_BY_HOP_LINES}\r\n"
    );
    let (code, _, body) = raw_h1(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1), &req).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["version"], "HTTP/1.1", "this case must exercise an HTTP/1.1 upstream hop: {v}");
    let seen = seen_headers(&v);
    assert_end_to_end_only(&seen, "upgrade-path request");
    // Only the proxy's own `Connection: upgrade` (for the Upgrade it forwards), no client token.
    let conn: Vec<String> = values(&seen, "connection").iter().map(|c| c.to_ascii_lowercase()).collect();
    assert_eq!(conn, ["upgrade"], "{seen:?}");
}

// ---------------------------------------------------------------------------
// 5-7. Upstream failures

#[tokio::test]
async fn upstream_down_at_start_gives_503_status_also_to_curl() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let proxy = ProxyProcess::start(tmp.path(), &pki.proxy_args(closed_port()));
    for http in [Http::H1, Http::H2] {
        let tls = client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let reply = common::request(proxy.addr, tls, http, get("/api/v1/namespaces/default/pods")).await.unwrap();
        let v = assert_status(reply.status, &reply.headers, &reply.body, 503, "ServiceUnavailable");
        assert!(v["message"].as_str().unwrap().contains("unreachable"), "{http:?}: {v}");
    }

    let (crt, key) = pki.write_user("alice", &pki.alice);
    let (body, w) = curl(&[
        "--cacert".into(),
        path_str(&pki.path("ca.crt")),
        "--cert".into(),
        path_str(&crt),
        "--key".into(),
        path_str(&key),
        format!("https://{}/api/v1/namespaces/default/pods", proxy.addr),
    ])
    .await;
    assert!(w.starts_with("503 "), "curl: {w}\n{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("curl body not JSON ({e}): {body}"));
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["code"], 503, "{v}");
    assert_eq!(v["reason"], "ServiceUnavailable", "{v}");
}

#[tokio::test]
async fn upstream_killed_mid_watch_ends_the_stream_then_503() {
    for http in [Http::H1, Http::H2] {
        let Env { tmp, pki, upstream, proxy } = Env::start(&[]).await;
        let tls = || client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let resp = open(proxy.addr, tls(), http, stream_request(Method::GET, WATCH, empty())).await;
        assert_eq!(resp.status(), 200);
        let mut watch = WatchLines { body: resp.into_body(), buf: Vec::new() };
        assert_eq!(watch.next_event(WAIT).await["type"], "ADDED", "{http:?}");

        timeout(WAIT, upstream.stop()).await.expect("stand-in stops");
        // The stream must end (cleanly or with an error), not hang: at most one MODIFIED per
        // 500 ms can still be in flight, so 100 frames within 10 s is a generous bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ended = false;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, watch.body.frame()).await {
                Err(_) => panic!("{http:?}: watch still open 10 s after the upstream went away"),
                Ok(None) | Ok(Some(Err(_))) => {
                    ended = true;
                    break;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        assert!(ended, "{http:?}: watch kept streaming after the upstream went away");

        let reply = common::request(proxy.addr, tls(), http, get("/_sim/headers")).await.unwrap();
        assert_status(reply.status, &reply.headers, &reply.body, 503, "ServiceUnavailable");
        drop((proxy, tmp));
    }
}

#[tokio::test]
async fn untrusted_upstream_certificate_gives_502_and_a_log_line() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    // The stand-in serves a certificate for the right names from a CA the proxy does not trust.
    let rogue = Authority::root("rogue-ca");
    let serving = rogue.issue(&Spec::server("kube-apiserver", &["localhost"], &["127.0.0.1".parse().unwrap()]));
    let mut sim = pki.sim_config();
    sim.serving_chain = vec![serving.der.clone()];
    sim.serving_key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key");
    let upstream = Upstream::start(sim).await;
    let proxy = ProxyProcess::start(tmp.path(), &pki.proxy_args(upstream.addr));
    for http in [Http::H1, Http::H2] {
        let tls = client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let reply = common::request(proxy.addr, tls, http, get("/_sim/headers")).await.unwrap();
        assert_status(reply.status, &reply.headers, &reply.body, 502, "InternalError");
    }
    let logs = wait_log(&proxy, "failed", WAIT).await;
    let line = logs.lines().find(|l| l.contains("upstream") && l.contains("failed") && l.contains("certificate"));
    assert!(line.is_some(), "no log line about the upstream certificate:\n{logs}");
}

// ---------------------------------------------------------------------------
// 8. Graceful shutdown

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_refuses_new_ones_and_exits_0() {
    let mut env = Env::start(&["--shutdown-grace", "10s"]).await;
    let (tx, body) = channel_body();
    let resp = open(
        env.proxy.addr,
        env.tls(Some(&env.pki.alice), Http::H1),
        Http::H1,
        stream_request(Method::POST, "/_sim/echo", body),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first: Bytes = (0..64 * 1024).map(upload_byte).collect();
    let second: Bytes = (64 * 1024..192 * 1024).map(upload_byte).collect();

    // The request is in flight end to end before the signal.
    tx.send(first.clone()).await.expect("send first part");
    let mut got = read_at_least(&mut body, first.len(), WAIT).await;

    sigterm(env.proxy.pid());
    wait_log(&env.proxy, "shutting down", WAIT).await;
    let refused = tokio::net::TcpStream::connect(env.proxy.addr).await;
    assert!(refused.is_err(), "a new connection was accepted after SIGTERM");

    tx.send(second.clone()).await.expect("request body still open after SIGTERM (in-flight request dropped?)");
    drop(tx);
    got.extend_from_slice(&collect(body, WAIT).await);
    let sent = [first, second].concat();
    assert_eq!(got.len(), sent.len());
    assert_eq!(sha256(&got), sha256(&sent));

    let status = wait_exit(&mut env.proxy.child, Duration::from_secs(12)).await;
    let logs = env.proxy.logs();
    let status = status.unwrap_or_else(|| panic!("proxy still running after the grace:\n{logs}"));
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains("grace period over"), "drain should finish with the request, not by timeout:\n{logs}");
}

// ---------------------------------------------------------------------------
// 9. Start-up errors: exit 64, culprit named

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let base = pki.proxy_args(closed_port());

    let mut args = base.clone();
    args.push("--no-such-flag".into());
    assert_usage_error(tmp.path(), "unknown flag", &args, &["--no-such-flag"]);

    let mut args = base.clone();
    set_flag(&mut args, "--client-cert-mode", Some("sometimes"));
    assert_usage_error(tmp.path(), "bad enum value", &args, &["--client-cert-mode", "sometimes"]);

    let mut args = base.clone();
    set_flag(&mut args, "--upstream", Some("http://127.0.0.1:8080"));
    assert_usage_error(tmp.path(), "plain-http upstream", &args, &["--upstream", "http://127.0.0.1:8080", "https"]);
}

#[test]
fn bad_config_file_exits_64_naming_the_file_and_key() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let base = pki.proxy_args(closed_port());
    let cases = [
        ("unknown key", "unknown.yaml", "no-such-key: 1\n", "no-such-key"),
        ("bad duration", "grace.yaml", "crl-expired-grace: soon\n", "crl-expired-grace"),
    ];
    for (case, name, yaml, key) in cases {
        let file = pki.path(name);
        std::fs::write(&file, yaml).expect("write config");
        let mut args = base.clone();
        set_flag(&mut args, "--config", Some(&path_str(&file)));
        assert_usage_error(tmp.path(), case, &args, &[&path_str(&file), key]);
    }
}

#[test]
fn bad_certificate_files_exit_64_naming_the_flag_and_path() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let base = pki.proxy_args(closed_port());

    let missing = path_str(&pki.path("no-such-dir/apiserver.crt"));
    let mut args = base.clone();
    set_flag(&mut args, "--tls-cert-file", Some(&missing));
    assert_usage_error(tmp.path(), "missing cert", &args, &["--tls-cert-file", &missing]);

    let garbage = pki.path("garbage.crt");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let mut args = base.clone();
    set_flag(&mut args, "--tls-cert-file", Some(&path_str(&garbage)));
    assert_usage_error(tmp.path(), "garbage cert", &args, &["--tls-cert-file", &path_str(&garbage)]);

    // A valid key of the same type that belongs to another certificate.
    let other = pki.root.issue(&Spec::server("other", &["localhost"], &[]));
    let wrong_key = pki.path("wrong.key");
    std::fs::write(&wrong_key, &other.key_pem).expect("write");
    let mut args = base.clone();
    set_flag(&mut args, "--tls-private-key-file", Some(&path_str(&wrong_key)));
    assert_usage_error(tmp.path(), "serving key mismatch", &args, &["--tls-private-key-file", &path_str(&wrong_key)]);

    let mut args = base.clone();
    set_flag(&mut args, "--proxy-client-key-file", Some(&path_str(&wrong_key)));
    assert_usage_error(
        tmp.path(),
        "front-proxy key mismatch",
        &args,
        &["--proxy-client-key-file", &path_str(&wrong_key)],
    );
}

// ---------------------------------------------------------------------------
// 10-12. Combined PEM, config file, curl

/// Cert and key in one file, without the key flags: serving cert+key, and the front-proxy
/// client file written key first (order must not matter).
#[tokio::test]
async fn combined_pem_files_work_without_key_flags() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let upstream = Upstream::start(pki.sim_config()).await;
    let serving = pki.path("serving-combined.pem");
    std::fs::write(&serving, format!("{}{}", pki.serving.cert_pem, pki.serving.key_pem)).expect("write");
    let client = pki.path("front-proxy-combined.pem");
    let fp = &pki.front_proxy_client;
    std::fs::write(&client, format!("{}{}", fp.key_pem, fp.cert_pem)).expect("write");
    let mut args = pki.proxy_args(upstream.addr);
    set_flag(&mut args, "--tls-cert-file", Some(&path_str(&serving)));
    set_flag(&mut args, "--tls-private-key-file", None);
    set_flag(&mut args, "--proxy-client-cert-file", Some(&path_str(&client)));
    set_flag(&mut args, "--proxy-client-key-file", None);
    let proxy = ProxyProcess::start(tmp.path(), &args);
    for http in [Http::H1, Http::H2] {
        let tls = client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
        let reply = common::request(proxy.addr, tls, http, whoami_request()).await.unwrap();
        // requestheader: the stand-in accepted the front-proxy certificate from the combined file.
        assert_eq!(reply.headers["x-sim-auth"], "requestheader", "{http:?}");
        assert_eq!(user_info(&reply).username, "alice", "{http:?}");
    }
}

fn config_yaml(upstream: SocketAddr) -> String {
    format!(
        "# every setting; paths are relative to this file's directory\n\
         tls-cert-file: apiserver.crt\n\
         tls-private-key-file: apiserver.key\n\
         client-ca-file: client-ca.crt\n\
         client-ca-names-file: client-ca.crt\n\
         crl-file: [crl.pem]\n\
         client-cert-mode: required\n\
         revocation-check: chain\n\
         crl-missing: deny\n\
         crl-expired: deny\n\
         crl-expired-grace: 0s\n\
         upstream: https://{upstream}\n\
         upstream-ca-file: ca.crt\n\
         upstream-server-name: localhost\n\
         proxy-client-cert-file: front-proxy-client.crt\n\
         proxy-client-key-file: front-proxy-client.key\n\
         requestheader-username-headers: [X-Remote-User]\n\
         requestheader-group-headers: X-Remote-Group\n\
         requestheader-extra-headers-prefix: X-Remote-Extra-\n\
         requestheader-uid-headers: [X-Remote-Uid]\n\
         shutdown-grace: 5s\n\
         tls-handshake-timeout: 10s\n\
         request-header-timeout: 30s\n\
         upstream-connect-timeout: 5s\n\
         log-format: text\n"
    )
}

#[tokio::test]
async fn config_file_starts_the_proxy_and_flags_override_it() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let upstream = Upstream::start(pki.sim_config()).await;
    let file = pki.path("kube-crl-proxy.yaml");
    std::fs::write(&file, config_yaml(upstream.addr)).expect("write config");
    let token_req = || {
        http::Request::get("https://localhost/_sim/headers")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let alice = |http| client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), http);
    let anonymous = |http| client_tls(&pki.root_der(), None, http);

    // The file alone (the binary's cwd is not the file's directory): alice works, and the
    // file's `client-cert-mode: required` refuses a client without a certificate.
    let proxy = ProxyProcess::start(tmp.path(), &["--config".into(), path_str(&file)]);
    let reply = common::request(proxy.addr, alice(Http::H1), Http::H1, whoami_request()).await.unwrap();
    assert_eq!(user_info(&reply).username, "alice");
    let refused = common::request(proxy.addr, anonymous(Http::H1), Http::H1, token_req()).await;
    assert!(refused.is_err(), "required by the file, yet a client without certificate got {refused:?}");
    drop(proxy);

    // A flag overrides the file.
    let args = ["--config".into(), path_str(&file), "--client-cert-mode".into(), "optional".into()];
    let proxy = ProxyProcess::start(tmp.path(), &args);
    for http in [Http::H1, Http::H2] {
        let reply = common::request(proxy.addr, anonymous(http), http, token_req()).await.unwrap();
        assert_eq!(reply.status, 200, "{http:?}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.json()["auth"], "token", "{http:?}");
    }
    let reply = common::request(proxy.addr, alice(Http::H2), Http::H2, whoami_request()).await.unwrap();
    assert_eq!(user_info(&reply).username, "alice");
}

#[tokio::test]
async fn curl_with_a_bearer_token_over_http2_reaches_the_upstream_as_token_user() {
    let env = Env::start(&[]).await;
    let (body, w) = curl(&[
        "--http2".into(),
        "--cacert".into(),
        path_str(&env.pki.path("ca.crt")),
        "-H".into(),
        format!("Authorization: Bearer {TOKEN}"),
        format!("https://{}/_sim/headers", env.proxy.addr),
    ])
    .await;
    assert_eq!(w, "200 2", "curl status and HTTP version\n{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["auth"], "token", "{v}");
    assert_eq!(v["user"]["username"], "token-user", "{v}");
    assert!(seen_headers(&v).iter().all(|(n, _)| !n.starts_with("x-remote-")), "{v}");
}

/// More long watches than an HTTP/2 upstream allows streams on one connection (the stand-in,
/// like any hyper server, allows 200; kube-apiserver 250–1000): every watch streams, and a
/// request sent after them is answered at once. Over one multiplexed HTTP/2 upstream
/// connection (hyper's pool) the requests beyond the cap would wait behind the watches for
/// ever; the HTTP/2 pool (the default) needs three connections of 100 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_watches_than_an_http2_connection_allows_streams_all_flow() {
    watches_beyond_the_stream_cap(&[]).await;
}

/// The same over the HTTP/1.1 upstream pool: a connection per watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_watches_than_an_http2_connection_allows_flow_over_http11_too() {
    watches_beyond_the_stream_cap(&["--upstream-http2", "false"]).await;
}

async fn watches_beyond_the_stream_cap(extra: &[&str]) {
    const WATCHES: usize = 230;
    let env = Env::start(extra).await;
    let io = hyper_util::rt::TokioIo::new(
        connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H2)).await.expect("TLS to the proxy"),
    );
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut heads = Vec::new();
    for _ in 0..WATCHES {
        let mut send = send.clone();
        heads.push(tokio::spawn(async move { send.send_request(get(WATCH)).await }));
    }
    let mut watches = Vec::new();
    for (i, head) in heads.into_iter().enumerate() {
        let resp = timeout(Duration::from_secs(30), head)
            .await
            .unwrap_or_else(|_| panic!("watch {i} got no response head"))
            .expect("join")
            .unwrap_or_else(|e| panic!("watch {i}: {e}"));
        assert_eq!(resp.status(), 200, "watch {i}");
        watches.push(resp.into_body());
    }
    // Each watch delivers an event.
    for (i, body) in watches.iter_mut().enumerate() {
        let frame = timeout(Duration::from_secs(10), body.frame()).await;
        assert!(matches!(frame, Ok(Some(Ok(_)))), "watch {i} delivered nothing: {frame:?}");
    }
    // With all of them open, a plain request on a new connection is answered.
    let reply = timeout(Duration::from_secs(10), env.request(Some(&env.pki.alice), Http::H1, whoami_request()))
        .await
        .expect("a request behind 230 watches was not answered in 10 s")
        .expect("request");
    assert_eq!(user_info(&reply).username, "alice");
}

/// The HTTP/2 upstream pool: requests go upstream as HTTP/2, one after another on the same
/// connection (a pool, not a connection per request), and concurrent ones beyond
/// `--upstream-http2-max-streams` open a second connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_upstream_pool_reuses_a_connection_and_opens_another_at_the_stream_budget() {
    let env = Env::start(&["--upstream-http2-max-streams", "2"]).await;
    let seen = |reply: &Reply| {
        let v = reply.json();
        assert_eq!(v["version"], "HTTP/2.0", "the upstream hop must be HTTP/2: {v}");
        v["remote_addr"].as_str().expect("remote_addr").to_string()
    };
    let mut sequential = std::collections::BTreeSet::new();
    for http in [Http::H1, Http::H2, Http::H1] {
        let reply = env.request(Some(&env.pki.alice), http, get("/_sim/headers")).await.expect("request");
        assert_eq!(reply.status, 200);
        sequential.insert(seen(&reply));
    }
    assert_eq!(sequential.len(), 1, "sequential requests must share one upstream connection: {sequential:?}");
    assert_eq!(upstream_connections(&env).await, 1, "kube_crl_proxy_upstream_connections");

    // Two watches take both streams of the first connection; the next request needs another.
    let io = hyper_util::rt::TokioIo::new(
        connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H2)).await.expect("TLS to the proxy"),
    );
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut watches = Vec::new();
    for i in 0..2 {
        let resp = timeout(WAIT, send.send_request(get(WATCH))).await.expect("watch head").expect("watch");
        assert_eq!(resp.status(), 200, "watch {i}");
        watches.push(resp.into_body());
    }
    let reply = env.request(Some(&env.pki.alice), Http::H1, get("/_sim/headers")).await.expect("request");
    let second = seen(&reply);
    assert!(!sequential.contains(&second), "a request beyond the budget must open a new connection");
    assert_eq!(upstream_connections(&env).await, 2, "kube_crl_proxy_upstream_connections");
    // Once the watches end, their streams are given back: the first connection serves again.
    drop(watches);
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = env.request(Some(&env.pki.alice), Http::H1, get("/_sim/headers")).await.expect("request");
        if sequential.contains(&seen(&reply)) {
            break;
        }
        assert!(Instant::now() < deadline, "the first connection's streams were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upstream that sheds a connection (HTTP/2 GOAWAY, as kube-apiserver does when it shuts
/// down or sheds load) loses no request: requests racing the GOAWAY are sent again on another
/// connection, and the connection that is going away takes no new streams even while a watch
/// still keeps it open.
#[tokio::test]
async fn an_upstream_goaway_loses_no_request_and_new_streams_go_to_another_connection() {
    let env = Env::start(&[]).await;
    let addr_of = |reply: &Reply| {
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let v = reply.json();
        assert_eq!(v["version"], "HTTP/2.0", "the upstream hop must be HTTP/2: {v}");
        v["remote_addr"].as_str().expect("remote_addr").to_string()
    };
    let first = env.request(Some(&env.pki.alice), Http::H2, get("/_sim/headers")).await.expect("request");
    let old = addr_of(&first);

    // A watch on that connection keeps it open after its GOAWAY (streams in flight finish).
    let io = hyper_util::rt::TokioIo::new(
        connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H2)).await.expect("TLS to the proxy"),
    );
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let watch = timeout(WAIT, send.send_request(get(WATCH))).await.expect("watch head").expect("watch");
    assert_eq!(watch.status(), 200);
    let shed = env.request(Some(&env.pki.alice), Http::H2, get("/_sim/goaway")).await.expect("goaway");
    assert_eq!(shed.json()["goaway"], old.as_str(), "the GOAWAY must hit the pooled connection");

    for i in 0..5 {
        let reply = env.request(Some(&env.pki.alice), Http::H1, get("/_sim/headers")).await.expect("request");
        assert_ne!(addr_of(&reply), old, "request {i} after the GOAWAY went to the connection going away");
    }
    drop(watch);

    // Bursts racing a GOAWAY each: every request is answered.
    for round in 0..3 {
        let requests = (0..30).map(|i| {
            let path = if i == 10 { "/_sim/goaway" } else { "/_sim/headers" };
            env.request(Some(&env.pki.alice), Http::H2, get(path))
        });
        for (i, reply) in futures_util::future::join_all(requests).await.into_iter().enumerate() {
            let reply = reply.unwrap_or_else(|e| panic!("round {round}, request {i}: {e}"));
            assert_eq!(reply.status, 200, "round {round}, request {i}: {}", String::from_utf8_lossy(&reply.body));
        }
    }
}

// ---------------------------------------------------------------------------
// Upstream connections across reloads

/// The upstream connection that carried `/_sim/headers`, and the front-proxy certificate
/// (its CN) that connection presented.
async fn upstream_hop(addr: SocketAddr, tls: rustls::ClientConfig) -> (String, String) {
    let reply = common::request(addr, tls, Http::H2, get("/_sim/headers")).await.expect("request");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["x-sim-auth"], "requestheader", "the stand-in must trust the front proxy");
    let v = reply.json();
    assert_eq!(v["user"]["username"], "alice", "{v}");
    let conn = v["remote_addr"].as_str().expect("remote_addr").to_string();
    (conn, v["peer_cert_cn"].as_str().expect("peer_cert_cn").to_string())
}

/// Waits until the proxy has counted `n` successful reloads of `kind`.
async fn wait_reloads(admin: SocketAddr, kind: &str, n: f64) {
    let series_name = format!(r#"kube_crl_proxy_reloads_total{{kind="{kind}"}}"#);
    wait_admin(admin, "/metrics", &format!("{n} {kind} reload(s)"), |_, b| series(b, &series_name) == Some(n)).await;
}

/// A reload that leaves the upstream credentials alone (here a new CRL: the most frequent
/// reload, every `--crl-refresh-interval` for a fetched CRL that changed) keeps the warm
/// upstream connections: requests before, during and after the swap all go over the one
/// connection, and none is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_reload_keeps_the_warm_upstream_connection() {
    let env = Env::start(&[]).await;
    let tls = || env.tls(Some(&env.pki.alice), Http::H2);
    let (first, _) = upstream_hop(env.proxy.addr, tls()).await;
    assert_eq!(upstream_connections(&env).await, 1, "kube_crl_proxy_upstream_connections");

    let done = std::sync::atomic::AtomicBool::new(false);
    let flowing = async {
        let mut seen = std::collections::BTreeSet::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            seen.insert(upstream_hop(env.proxy.addr, tls()).await.0);
        }
        seen
    };
    let reload = async {
        env.pki.replace_crls(&[&env.pki.bob.serial], 2);
        wait_reloads(env.proxy.admin, "crl", 1.0).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (mut seen, ()) = tokio::join!(flowing, reload);
    for _ in 0..3 {
        seen.insert(upstream_hop(env.proxy.addr, tls()).await.0);
    }
    assert_eq!(seen, [first].into(), "a CRL reload must not open upstream connections");
    assert_eq!(upstream_connections(&env).await, 1, "kube_crl_proxy_upstream_connections after the reload");
}

/// A rotated front-proxy certificate is presented by the next new upstream connection, while
/// streams already open on the old ones (a watch) go on. A reload that did not touch it (a CRL)
/// keeps the connection; one that changed the credentials retires it for new requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_front_proxy_certificate_is_used_by_the_next_upstream_connection() {
    rotate_front_proxy_certificate(&[]).await;
}

/// The same over HTTP/1.1 upstream connections (hyper's pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_front_proxy_certificate_is_used_by_the_next_http11_upstream_connection() {
    rotate_front_proxy_certificate(&["--upstream-http2", "false"]).await;
}

async fn rotate_front_proxy_certificate(extra: &[&str]) {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let mut sim = pki.sim_config();
    sim.requestheader_allowed_names = vec!["front-proxy-client".into(), "front-proxy-client-b".into()];
    let upstream = Upstream::start(sim).await;
    // One file for certificate and key: the rotation is one rename.
    let fp_file = pki.path("front-proxy.pem");
    let fp = &pki.front_proxy_client;
    std::fs::write(&fp_file, format!("{}{}", fp.key_pem, fp.cert_pem)).expect("write");
    let mut args = pki.proxy_args(upstream.addr);
    set_flag(&mut args, "--proxy-client-cert-file", Some(&path_str(&fp_file)));
    set_flag(&mut args, "--proxy-client-key-file", None);
    args.extend(extra.iter().map(|a| a.to_string()));
    let proxy = ProxyProcess::start(tmp.path(), &args);
    let tls = || client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), Http::H2);

    // A watch (on the pooled HTTP/2 connection, or on an HTTP/1.1 connection of its own).
    let io = hyper_util::rt::TokioIo::new(connect(proxy.addr, tls()).await.expect("TLS to the proxy"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let watch = timeout(WAIT, send.send_request(get(WATCH))).await.expect("watch head").expect("watch");
    assert_eq!(watch.status(), 200);
    let mut watch = watch.into_body();
    assert!(next_chunk(&mut watch, WAIT).await.expect("watch").is_some(), "the watch's first event");
    let (old, cn) = upstream_hop(proxy.addr, tls()).await;
    assert_eq!(cn, "front-proxy-client");

    // A CRL reload keeps the connection.
    pki.replace_crls(&[&pki.bob.serial], 2);
    wait_reloads(proxy.admin, "crl", 1.0).await;
    assert_eq!(upstream_hop(proxy.addr, tls()).await, (old.clone(), cn), "after a CRL reload");

    // The rotation: the next request goes over a new connection with the new certificate.
    let rotated = pki.front_proxy_ca.issue(&Spec::client("front-proxy-client-b", &[]));
    replace_by_rename(&fp_file, format!("{}{}", rotated.key_pem, rotated.cert_pem));
    wait_reloads(proxy.admin, "proxy_client_cert", 1.0).await;
    let (new, cn) = upstream_hop(proxy.addr, tls()).await;
    assert_ne!(new, old, "the rotated certificate needs a new upstream connection");
    assert_eq!(cn, "front-proxy-client-b", "the new upstream connection presents the rotated certificate");
    for _ in 0..3 {
        assert_eq!(upstream_hop(proxy.addr, tls()).await, (new.clone(), cn.clone()), "the new connection is pooled");
    }
    // The watch opened before the rotation still streams on its old connection.
    for i in 0..2 {
        assert!(next_chunk(&mut watch, WAIT).await.expect("watch").is_some(), "watch event {i} after the rotation");
    }
}

/// `kube_crl_proxy_upstream_connections` for the (one) upstream, from a scrape.
async fn upstream_connections(env: &Env) -> u64 {
    let scrape = metrics(env).await;
    let line = scrape
        .lines()
        .find(|l| l.starts_with("kube_crl_proxy_upstream_connections{"))
        .unwrap_or_else(|| panic!("no upstream_connections in the scrape:\n{scrape}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
}
