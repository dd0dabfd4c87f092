//! Adversarial tests against the real binary: request smuggling, identity injection in every
//! spelling (HTTP/1.1, HTTP/2, trailers, pseudo-header tricks), control characters, oversized
//! heads, deep and huge client certificate chains, garbage instead of TLS, slowloris and idle
//! connections, `--max-connections`, HTTP/2 rapid reset and stream limits, and a client that
//! never reads its response. Each test says which defence it holds the proxy to.
//!
//! Raw HTTP/1.1 bytes are written on TLS streams; HTTP/2 is spoken either with hyper / the
//! `h2` client or frame by frame (HPACK literals, no Huffman) where a library would refuse
//! to send the malformed request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use kube_crl_proxy_testkit::pki::{Issued, Spec};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Bound for anything that should happen promptly: detects hangs, not speed.
const WAIT: Duration = Duration::from_secs(10);
const WATCH: &str = "/api/v1/namespaces/default/pods?watch=1";

// ---------------------------------------------------------------------------
// Admin endpoint

/// How many requests reached the proxy's forwarding service (every code, method, verb).
/// A request refused by the HTTP parser or the HTTP/2 layer never gets there.
async fn requests_forwarded(env: &Env) -> f64 {
    family_sum(&metrics(env).await, "kube_crl_proxy_requests_total")
}

// ---------------------------------------------------------------------------
// Raw streams

/// Reads until the peer closes (EOF, reset or TLS error: `true`) or `limit` passes (`false`).
async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..100_000 {
        match timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (out, false)
}

/// A TLS stream to the proxy with ALPN http/1.1 (or h2).
async fn tls_stream(env: &Env, user: Option<&Issued>, http: Http) -> TlsStream {
    let s = timeout(WAIT, connect(env.proxy.addr, env.tls(user, http)))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake with the proxy");
    let want: &[u8] = if http == Http::H2 { b"h2" } else { b"http/1.1" };
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(want), "ALPN");
    s
}

/// Writes `bytes` on a fresh HTTP/1.1 TLS connection and reads until the proxy closes it.
/// Write errors are ignored (the proxy may close before everything is written).
async fn raw_h1(env: &Env, user: Option<&Issued>, bytes: &[u8]) -> (Vec<H1Response>, Vec<u8>, bool) {
    let mut s = tls_stream(env, user, Http::H1).await;
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
    let (data, closed) = read_to_close(&mut s, WAIT).await;
    (parse_h1(&data), data, closed)
}

/// One HTTP/1.1 response parsed from raw bytes.
#[derive(Debug)]
struct H1Response {
    status: u16,
    body: Vec<u8>,
}

impl H1Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn field(line: &str) -> Option<(String, String)> {
    line.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
}

/// Every complete HTTP/1.1 response in `data` (Content-Length, chunked with trailers
/// skipped, or read-to-close bodies).
fn parse_h1(mut data: &[u8]) -> Vec<H1Response> {
    let mut out = Vec::new();
    for _ in 0..32 {
        let Some(end) = find(data, b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        data = &data[end + 4..];
        let mut lines = head.split("\r\n");
        let Some(status) = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 ").or_else(|| l.strip_prefix("HTTP/1.0 ")))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            break;
        };
        let headers: Vec<(String, String)> = lines.filter_map(field).collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            for _ in 0..100_000 {
                let Some(le) = find(data, b"\r\n") else { break };
                let size_text = String::from_utf8_lossy(&data[..le]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
                data = &data[le + 2..];
                if size == 0 {
                    for _ in 0..1000 {
                        let Some(le) = find(data, b"\r\n") else { break };
                        let line = String::from_utf8_lossy(&data[..le]).into_owned();
                        data = &data[le + 2..];
                        if line.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let take = size.min(data.len());
                body.extend_from_slice(&data[..take]);
                data = &data[take..];
                data = data.strip_prefix(b"\r\n").unwrap_or(data);
            }
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let take = n.min(data.len());
            body = data[..take].to_vec();
            data = &data[take..];
        } else if !(status < 200 || status == 204 || status == 304) {
            body = data.to_vec();
            data = &[];
        }
        out.push(H1Response { status, body });
    }
    out
}

// ---------------------------------------------------------------------------
// Raw HTTP/2: frames and HPACK literals (never indexed, never Huffman-coded)

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

#[derive(Debug)]
struct H2Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// How a raw HTTP/2 stream ended, as seen by the client.
#[derive(Debug, Default)]
struct StreamOutcome {
    /// HEADERS frames (response head, trailers) received on the stream.
    headers: usize,
    data: Vec<u8>,
    ended: bool,
    reset: Option<u32>,
    goaway: Option<u32>,
    closed: bool,
    timed_out: bool,
}

impl StreamOutcome {
    /// The request was refused: no response at all, and a reset, GOAWAY or close.
    fn refused(&self) -> bool {
        self.headers == 0 && self.data.is_empty() && (self.reset.is_some() || self.goaway.is_some() || self.closed)
    }
}

fn hpack_int(out: &mut Vec<u8>, prefix_bits: u32, flags: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    for _ in 0..10 {
        if v < 128 {
            break;
        }
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// HTTP/2 header fields, in order, as raw name and value bytes.
type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

/// A header block of "literal header field without indexing — new name" entries, in order.
fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// A GET request block for `path` with the usual pseudo-headers first, then `extra`.
fn get_block(path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", path.as_bytes())];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

/// What `RawH2::next` returns when there is no frame.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    TimedOut,
}

/// An HTTP/2 client that writes whatever frames it is told to.
struct RawH2 {
    s: TlsStream,
    buf: Vec<u8>,
}

impl RawH2 {
    /// Connection preface and an empty SETTINGS frame.
    async fn open(env: &Env, user: Option<&Issued>) -> Self {
        let mut s = tls_stream(env, user, Http::H2).await;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        let mut me = Self { s, buf: Vec::new() };
        me.send(SETTINGS, 0, 0, &[]).await.expect("settings");
        me
    }

    async fn send(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        self.s.write_all(&f).await?;
        self.s.flush().await
    }

    /// A header block as HEADERS + CONTINUATION frames of at most 16 KiB.
    async fn send_headers(&mut self, stream: u32, block: &[u8], end_stream: bool) -> std::io::Result<()> {
        let chunks: Vec<&[u8]> = if block.is_empty() { vec![&[]] } else { block.chunks(16 * 1024).collect() };
        for (i, chunk) in chunks.iter().enumerate() {
            let mut flags = if i + 1 == chunks.len() { END_HEADERS } else { 0 };
            if i == 0 && end_stream {
                flags |= END_STREAM;
            }
            self.send(if i == 0 { HEADERS } else { CONTINUATION }, flags, stream, chunk).await?;
        }
        Ok(())
    }

    /// The next frame; SETTINGS and PING are acknowledged on the way.
    async fn next(&mut self, deadline: Instant) -> Result<H2Frame, Ended> {
        for _ in 0..100_000 {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
                    let frame =
                        H2Frame { ty: self.buf[3], flags: self.buf[4], stream, payload: self.buf[9..9 + len].to_vec() };
                    self.buf.drain(..9 + len);
                    if frame.ty == SETTINGS && frame.flags & 1 == 0 {
                        let _ = self.send(SETTINGS, 1, 0, &[]).await;
                    }
                    if frame.ty == PING && frame.flags & 1 == 0 {
                        let _ = self.send(PING, 1, 0, &frame.payload).await;
                    }
                    return Ok(frame);
                }
            }
            let mut tmp = [0u8; 16 * 1024];
            match timeout_at(deadline, self.s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                Ok(_) => return Err(Ended::Closed),
                Err(_) => return Err(Ended::TimedOut),
            }
        }
        Err(Ended::TimedOut)
    }

    /// Reads until `stream` ends, is reset, the connection goes away, or [`WAIT`] passes.
    async fn outcome(&mut self, stream: u32) -> StreamOutcome {
        let deadline = Instant::now() + WAIT;
        let mut o = StreamOutcome::default();
        for _ in 0..100_000 {
            let f = match self.next(deadline).await {
                Ok(f) => f,
                Err(Ended::Closed) => {
                    o.closed = true;
                    return o;
                }
                Err(Ended::TimedOut) => {
                    o.timed_out = true;
                    return o;
                }
            };
            let u32_at = |p: &[u8], i: usize| p.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match f.ty {
                GOAWAY => {
                    o.goaway = u32_at(&f.payload, 4);
                    return o;
                }
                _ if f.stream != stream => {}
                HEADERS | CONTINUATION => {
                    o.headers += usize::from(f.ty == HEADERS);
                    if f.flags & END_STREAM != 0 {
                        o.ended = true;
                        return o;
                    }
                }
                DATA => {
                    o.data.extend_from_slice(&f.payload);
                    if f.flags & END_STREAM != 0 {
                        o.ended = true;
                        return o;
                    }
                }
                RST_STREAM => {
                    o.reset = u32_at(&f.payload, 0);
                    return o;
                }
                _ => {}
            }
        }
        o
    }
}

// ---------------------------------------------------------------------------
// Identity checks

/// Distinct markers put in every injected identity header; none may reach the upstream.
const INJECTED: [&str; 6] =
    ["admin-injected", "masters-injected", "extra-injected", "forged-injected", "uid-injected", "empty-key-injected"];

fn fingerprint(cert: &Issued) -> String {
    hex::encode(sha2::Sha256::digest(cert.der.as_ref()))
}

/// `/_sim/headers` JSON: the identity the upstream saw is exactly the proxy's for `user`
/// (nothing for anonymous clients), and none of the injected markers is anywhere in it.
fn assert_identity(v: &Value, user: Option<&Issued>, ctx: &str) {
    let text = v.to_string();
    for bad in INJECTED {
        assert!(!text.contains(bad), "{ctx}: injected {bad:?} reached the upstream: {text}");
    }
    let mut remote: Vec<(String, String)> = v["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: no headers in {text}"))
        .iter()
        .map(|h| (h[0].as_str().unwrap_or("").to_string(), h[1].as_str().unwrap_or("").to_string()))
        .filter(|(n, _)| n.starts_with("x-remote-"))
        .collect();
    remote.sort();
    match user {
        Some(cert) => {
            let mut want: Vec<(String, String)> = [
                ("x-remote-user", "alice".to_string()),
                ("x-remote-group", "dev".to_string()),
                ("x-remote-group", "ops".to_string()),
                (
                    "x-remote-extra-authentication.kubernetes.io%2fcredential-id",
                    format!("X509SHA256={}", fingerprint(cert)),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            want.sort();
            assert_eq!(remote, want, "{ctx}: {text}");
            assert_eq!(v["auth"], "requestheader", "{ctx}: {text}");
            assert_eq!(v["user"]["username"], "alice", "{ctx}: {text}");
            assert_eq!(v["user"]["groups"], serde_json::json!(["dev", "ops", "system:authenticated"]), "{ctx}");
        }
        None => {
            assert!(remote.is_empty(), "{ctx}: {remote:?}");
            assert_eq!(v["auth"], "anonymous", "{ctx}: {text}");
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Request smuggling over HTTP/1.1

/// The second request hidden in each attack: if the proxy ever answered it, its response
/// would list `x-smuggled` (`/_sim/headers` echoes every header line it received).
const SMUGGLED: &str = "GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nX-Smuggled: yes\r\n\
                        X-Remote-User: admin-injected\r\nX-Remote-Group: masters-injected\r\n\r\n";

fn smuggling_attacks() -> Vec<(&'static str, String)> {
    let s = SMUGGLED;
    // A GET whose head carries `bad`, with the smuggled request pipelined right behind it.
    let get = |bad: &str| format!("GET /version HTTP/1.1\r\nHost: localhost\r\n{bad}\r\n\r\n{s}");
    let chunked_then_smuggled = format!("0\r\n\r\n{s}");
    let n = chunked_then_smuggled.len();
    vec![
        (
            "Content-Length then Transfer-Encoding: chunked",
            format!(
                "POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {n}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding: chunked then Content-Length",
            format!(
                "POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: {n}\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "two different Content-Length lines",
            format!(
                "POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            ),
        ),
        (
            "Content-Length list with different values",
            format!("POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0, {}\r\n\r\n{s}", s.len()),
        ),
        (
            "Content-Length with a sign",
            format!("POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: +0\r\n\r\n{s}"),
        ),
        (
            "Transfer-Encoding chunked, then identity",
            format!(
                "POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                 Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n{s}"
            ),
        ),
        (
            "Transfer-Encoding xchunked",
            format!(
                "POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\
                 Content-Length: 0\r\n\r\n{s}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /_sim/echo HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\
                 Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        ("space before the colon of Transfer-Encoding", get("Transfer-Encoding : chunked")),
        ("obs-fold (space)", get("X-Note: a\r\n X-Remote-User: admin-injected")),
        ("obs-fold (tab)", get("X-Note: a\r\n\tfolded")),
        ("obs-fold on the first header line", "GET /version HTTP/1.1\r\n Host: localhost\r\n\r\n".to_string() + s),
        ("bare CR inside a value", get("X-Note: a\rX-Remote-User: admin-injected")),
        ("bare CR ending a line", get("X-Note: a\r\rX-Other: b")),
        ("space in a header name", get("X Bad: 1")),
        ("space before the colon", get("X-Remote-User : admin-injected")),
        ("tab before the colon", get("X-Remote-User\t: admin-injected")),
        ("empty header name", get(": admin-injected")),
        ("NUL in a header name", get("X-Remote-User\0: admin-injected")),
        ("non-token character in a header name", get("X-Remote-User(x): admin-injected")),
        ("header line without a colon", get("X-Remote-User admin-injected")),
    ]
}

/// Defends: hyper's strict HTTP/1.1 parser (README "Request smuggling and malformed
/// requests"). Each ambiguous or malformed head gets a 400 (or, for CL+TE, which RFC 9112
/// §6.1 allows to be processed by Transfer-Encoding, at most the one response) and the
/// connection is closed, so the request hidden behind it is never parsed, never forwarded
/// and never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_never_reach_the_upstream() {
    let env = Env::start(&[]).await;
    let mut answered = 0.0;
    for (what, attack) in smuggling_attacks() {
        let (responses, raw, closed) = raw_h1(&env, Some(&env.pki.alice), attack.as_bytes()).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(closed, "{what}: the connection stayed open after the attack: {text}");
        assert!(!text.to_ascii_lowercase().contains("x-smuggled"), "{what}: the smuggled request was answered: {text}");
        assert!(!text.contains("admin-injected") && !text.contains("masters-injected"), "{what}: {text}");
        assert!(responses.len() <= 1, "{what}: {} responses on one connection: {text}", responses.len());
        let cl_te = what.contains("Content-Length") && what.contains("Transfer-Encoding:");
        if let Some(r) = responses.first() {
            if cl_te {
                assert!(r.status == 400 || r.status == 200, "{what}: {text}");
                answered += f64::from(u8::from(r.status == 200));
            } else {
                assert_eq!(r.status, 400, "{what}: {text}");
            }
        }
    }
    // Nothing but the CL+TE requests processed by their chunked body reached the forwarding
    // service: no malformed request and no smuggled GET.
    let m = metrics(&env).await;
    assert!(
        !m.lines().any(|l| l.starts_with("kube_crl_proxy_requests_total{") && l.contains(r#"method="GET""#)),
        "{m}"
    );
    assert_eq!(requests_forwarded(&env).await, answered, "{m}");
    // Still serving.
    assert_still_serving(&env, Http::H1).await;
}

/// Defends: the same head safety for bare LF as it actually holds — whatever hyper makes
/// of a lone LF, an identity header hidden behind it is stripped like any other, and no
/// injected value reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_cannot_smuggle_identity() {
    let env = Env::start(&[]).await;
    let attack = "GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nX-Note: a\nX-Remote-User: admin-injected\r\n\
                  X-Note2: b\nX-Remote-Group: masters-injected\r\nConnection: close\r\n\r\n";
    for user in [Some(&env.pki.alice), None] {
        let (responses, raw, closed) = raw_h1(&env, user, attack.as_bytes()).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(closed, "{text}");
        assert!(responses.len() <= 1, "{text}");
        for r in &responses {
            if r.status == 200 {
                assert_identity(&r.json(), user, "bare LF");
            } else {
                assert_eq!(r.status, 400, "{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Identity headers in every spelling

/// Every identity header a client could try, in odd cases, duplicated and empty.
const INJECTED_LINES: &str = "X-REMOTE-USER: admin-injected\r\n\
    x-remote-user: admin-injected\r\n\
    X-Remote-User:\r\n\
    X-Remote-User:admin-injected\r\n\
    x-Remote-Group: masters-injected\r\n\
    X-REMOTE-GROUP: masters-injected\r\n\
    X-Remote-Group:\r\n\
    X-Remote-Extra-Foo: extra-injected\r\n\
    X-REMOTE-EXTRA-SCOPES: extra-injected\r\n\
    x-remote-extra-authentication.kubernetes.io%2Fcredential-id: X509SHA256=forged-injected\r\n\
    X-Remote-Extra-Authentication.Kubernetes.Io%2fCredential-Id: X509SHA256=forged-injected\r\n\
    X-Remote-Extra-: empty-key-injected\r\n\
    X-Remote-Uid: uid-injected\r\n\
    x-remote-uid:\r\n\
    X-REMOTE-UID: uid-injected\r\n";

/// Defends: identity stripping (`identity::apply`) for HTTP/1.1 heads written byte for byte:
/// every case, duplicate lines, empty values, `%2F`/`%2f` credential-id, the UID header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_identity_headers_in_any_spelling_over_http1() {
    let env = Env::start(&["--requestheader-uid-headers", "X-Remote-Uid"]).await;
    for user in [Some(&env.pki.alice), None] {
        let req = format!("GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\n{INJECTED_LINES}Connection: close\r\n\r\n");
        let (responses, raw, _) = raw_h1(&env, user, req.as_bytes()).await;
        assert_eq!(responses.len(), 1, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(responses[0].status, 200, "{}", String::from_utf8_lossy(&raw));
        assert_identity(&responses[0].json(), user, &format!("HTTP/1.1 cert={}", user.is_some()));
    }
}

/// The injected identity headers as HTTP/2 fields (lower-case, as HTTP/2 requires).
fn injected_fields() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b"x-remote-user", b"admin-injected"),
        (b"x-remote-user", b""),
        (b"x-remote-user", b"admin-injected"),
        (b"x-remote-group", b"masters-injected"),
        (b"x-remote-group", b""),
        (b"x-remote-group", b"masters-injected"),
        (b"x-remote-extra-foo", b"extra-injected"),
        (b"x-remote-extra-authentication.kubernetes.io%2fcredential-id", b"X509SHA256=forged-injected"),
        (b"x-remote-extra-authentication.kubernetes.io%2Fcredential-id", b"X509SHA256=forged-injected"),
        (b"x-remote-extra-", b"empty-key-injected"),
        (b"x-remote-uid", b"uid-injected"),
        (b"x-remote-uid", b""),
    ]
}

/// Defends: identity stripping over HTTP/2 (hyper client: duplicate fields, empty values)
/// and over raw HTTP/2 frames with upper-case names (malformed in HTTP/2: refused, or
/// lower-cased and stripped — never forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_identity_headers_over_http2() {
    let env = Env::start(&["--requestheader-uid-headers", "X-Remote-Uid"]).await;
    for user in [Some(&env.pki.alice), None] {
        let ctx = format!("HTTP/2 cert={}", user.is_some());
        let mut req = http::Request::get("https://localhost/_sim/headers");
        let h = req.headers_mut().expect("builder");
        for (k, v) in injected_fields() {
            h.append(http::HeaderName::from_bytes(k).expect("name"), http::HeaderValue::from_bytes(v).expect("value"));
        }
        let reply = env.request(user, Http::H2, req.body(Full::new(Bytes::new())).expect("req")).await.unwrap();
        assert_eq!(reply.status, 200, "{ctx}");
        assert_identity(&reply.json(), user, &ctx);

        // The same, frame by frame, with the names in upper and mixed case.
        let mut h2 = RawH2::open(&env, user).await;
        let upper: Vec<(Vec<u8>, &[u8])> = injected_fields()
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let k = if i % 2 == 0 { k.to_ascii_uppercase() } else { k.to_vec() };
                (k, v)
            })
            .collect();
        let extra: Vec<(&[u8], &[u8])> = upper.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
        h2.send_headers(1, &get_block("/_sim/headers", &extra), true).await.expect("send");
        let o = h2.outcome(1).await;
        assert!(!o.timed_out, "{ctx} upper-case: no answer: {o:?}");
        if !o.refused() {
            let v: Value = serde_json::from_slice(&o.data)
                .unwrap_or_else(|e| panic!("{ctx}: {e}: {}", String::from_utf8_lossy(&o.data)));
            assert_identity(&v, user, &format!("{ctx} upper-case"));
        }
    }
}

/// Defends: identity stripping in request trailers, HTTP/2 (hyper client) — every identity
/// name, duplicated, next to a trailer that must survive. The upstream hop is HTTP/2 here
/// (`--upstream-http2`, the default, written out), so that trailers reach the stand-in and it
/// echoes them; over an HTTP/1.1 hop hyper sends only trailers a `Trailer` header declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_identity_in_http2_trailers_is_stripped() {
    let env = Env::start(&["--requestheader-uid-headers", "X-Remote-Uid", "--upstream-http2", "true"]).await;
    for user in [Some(&env.pki.alice), None] {
        let mut trailers = http::HeaderMap::new();
        for (k, v) in injected_fields() {
            trailers.append(http::HeaderName::from_bytes(k).unwrap(), http::HeaderValue::from_bytes(v).unwrap());
        }
        trailers.insert("x-checksum", "kept".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"{}"))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ]));
        let stream = tls_stream(&env, user, Http::H2).await;
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("https://localhost/_sim/echo").header("te", "trailers").body(body).unwrap();
        let resp = timeout(WAIT, send.send_request(req)).await.expect("answer").expect("response");
        let collected = timeout(WAIT, resp.into_body().collect()).await.expect("body").expect("body");
        let t = collected.trailers().expect("trailers echoed").clone();
        assert_eq!(t.get("x-checksum").unwrap(), "kept");
        let leaked: Vec<_> = t.keys().filter(|k| k.as_str().starts_with("x-remote-")).collect();
        assert!(leaked.is_empty(), "cert={}: {t:?}", user.is_some());
    }
}

/// The header (or trailer) lines of a map, as `[name, value]` pairs.
fn lines(map: &http::HeaderMap) -> Vec<[String; 2]> {
    map.iter().map(|(k, v)| [k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()]).collect()
}

/// A TLS upstream (the PKI's serving certificate, no client-certificate check) that answers
/// every request with the JSON list of the header and trailer lines it received. The
/// stand-in cannot show request trailers to an HTTP/1.1 client: hyper only writes response
/// trailers that the response announces in `Trailer`.
async fn recording_upstream(pki: &Pki) -> SocketAddr {
    let acceptor = pki.serving_acceptor(&[b"h2", b"http/1.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = timeout(WAIT, acceptor.accept(tcp)).await else { return };
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let headers = lines(req.headers());
                    let collected = req.into_body().collect().await;
                    let trailers = collected.ok().and_then(|c| c.trailers().map(lines)).unwrap_or_default();
                    let body = serde_json::json!({"headers": headers, "trailers": trailers}).to_string();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// Defends: identity stripping in HTTP/1.1 chunked request trailers, names in odd cases,
/// duplicated and empty; a non-identity trailer next to them reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_identity_in_http1_trailers_is_stripped() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let recorder = recording_upstream(&pki).await;
    let mut args = pki.proxy_args(recorder);
    args.extend(["--requestheader-uid-headers".to_string(), "X-Remote-Uid".to_string()]);
    let proxy = ProxyProcess::start(tmp.path(), &args);
    // The stand-in is not used: the proxy points at the recorder.
    let upstream = Upstream::start(pki.sim_config()).await;
    let env = Env { tmp, pki, upstream, proxy };
    for user in [Some(&env.pki.alice), None] {
        let req = format!(
            "POST /anything HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
             Trailer: X-Remote-User, X-Remote-Group, X-Checksum\r\nConnection: close\r\n\r\n\
             2\r\n{{}}\r\n0\r\n{INJECTED_LINES}X-Checksum: kept\r\n\r\n"
        );
        let (responses, raw, _) = raw_h1(&env, user, req.as_bytes()).await;
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(responses.len(), 1, "{text}");
        assert_eq!(responses[0].status, 200, "{text}");
        let v = responses[0].json();
        for bad in INJECTED {
            assert!(!text.contains(bad), "{bad} reached the upstream: {text}");
        }
        let trailers = v["trailers"].as_array().expect("trailers");
        // The trailer section reached the upstream (so the check above saw it) ...
        assert!(trailers.iter().any(|t| t[0] == "x-checksum" && t[1] == "kept"), "{v}");
        // ... without any identity line.
        assert!(trailers.iter().all(|t| !t[0].as_str().unwrap_or("").starts_with("x-remote-")), "{v}");
        let remote: Vec<_> = v["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0].as_str().unwrap_or("").starts_with("x-remote-"))
            .collect();
        assert_eq!(remote.len(), if user.is_some() { 4 } else { 0 }, "{v}");
    }
}

/// Defends: HTTP/2 pseudo-header validation (RFC 9113 §8.3: duplicated, unknown, misplaced
/// or missing pseudo-headers, connection-specific fields and invalid names make the request
/// malformed) — each is refused with RST_STREAM / GOAWAY and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_header_blocks_are_refused() {
    let env = Env::start(&[]).await;
    let path: &[u8] = b"/_sim/headers";
    let cases: Vec<(&str, Fields)> = vec![
        (
            ":authority twice",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":authority", b"admin-injected"),
                (b":path", path),
            ],
        ),
        (":path twice", vec![(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/version"), (b":path", path)]),
        (
            "unknown pseudo-header",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":path", path),
                (b":x-remote-user", b"admin-injected"),
            ],
        ),
        (
            "pseudo-header after a regular field",
            vec![(b":method", b"GET"), (b":scheme", b"https"), (b"x-note", b"1"), (b":path", path)],
        ),
        ("no :path", vec![(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")]),
        (
            "response pseudo-header in a request",
            vec![(b":method", b"GET"), (b":scheme", b"https"), (b":path", path), (b":status", b"200")],
        ),
        (
            "connection-specific field",
            vec![(b":method", b"GET"), (b":scheme", b"https"), (b":path", path), (b"connection", b"x-remote-user")],
        ),
        (
            "transfer-encoding field",
            vec![(b":method", b"GET"), (b":scheme", b"https"), (b":path", path), (b"transfer-encoding", b"chunked")],
        ),
        (
            "te other than trailers",
            vec![(b":method", b"GET"), (b":scheme", b"https"), (b":path", path), (b"te", b"gzip")],
        ),
        (
            "colon inside a field name",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":path", path),
                (b"x-remote-user:x", b"admin-injected"),
            ],
        ),
        (
            "space inside a field name",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":path", path),
                (b"x-remote-user x", b"admin-injected"),
            ],
        ),
    ];
    for (what, fields) in cases {
        for user in [Some(&env.pki.alice), None] {
            let mut h2 = RawH2::open(&env, user).await;
            h2.send_headers(1, &hpack(&fields), true).await.expect("send");
            let o = h2.outcome(1).await;
            assert!(
                o.refused(),
                "{what} cert={}: not refused: {o:?} {}",
                user.is_some(),
                String::from_utf8_lossy(&o.data)
            );
            if let Some(code) = o.reset {
                assert_ne!(code, 0, "{what}: RST_STREAM NO_ERROR");
            }
        }
    }
    assert_eq!(requests_forwarded(&env).await, 0.0, "a malformed HTTP/2 request was forwarded");
    assert_still_serving(&env, Http::H2).await;
}

// ---------------------------------------------------------------------------
// 3. Control characters in header values

/// Defends: header-value validation. A value with NUL, other C0 controls, DEL, or a CR/LF
/// pair that would start a new line upstream is refused (400 / reset / close), over
/// HTTP/1.1 and HTTP/2, and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_header_values_are_refused() {
    let env = Env::start(&[]).await;
    let values: [&[u8]; 6] = [b"a\x00b", b"a\x01b", b"a\x7fb", b"a\x1bb", b"a\x0bb", b"a\x0cb"];
    for value in values {
        for name in [&b"X-Note"[..], b"X-Remote-User"] {
            let mut req = b"GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\n".to_vec();
            req.extend_from_slice(name);
            req.extend_from_slice(b": ");
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n\r\n");
            req.extend_from_slice(SMUGGLED.as_bytes());
            let (responses, raw, closed) = raw_h1(&env, Some(&env.pki.alice), &req).await;
            let text = String::from_utf8_lossy(&raw);
            assert!(closed, "{value:?}: {text}");
            assert!(responses.len() <= 1, "{value:?}: {text}");
            assert!(responses.iter().all(|r| r.status == 400), "HTTP/1.1 {value:?} was accepted: {text}");
        }
    }
    let h2_values: [&[u8]; 7] =
        [b"a\x00b", b"a\x01b", b"a\x7fb", b"a\rb", b"a\nb", b"a\r\nX-Remote-User: admin-injected", b"a\x0bb"];
    for value in h2_values {
        let mut h2 = RawH2::open(&env, Some(&env.pki.alice)).await;
        h2.send_headers(1, &get_block("/_sim/headers", &[(b"x-note", value)]), true).await.expect("send");
        let o = h2.outcome(1).await;
        assert!(o.refused(), "HTTP/2 {value:?} was accepted: {o:?} {}", String::from_utf8_lossy(&o.data));
    }
    assert_eq!(requests_forwarded(&env).await, 0.0, "a request with a control character was forwarded");
    assert_still_serving(&env, Http::H1).await;
}

// ---------------------------------------------------------------------------
// 4. Oversized heads

fn with_headers(path: &str, headers: &[(String, String)]) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::get(format!("https://localhost{path}"));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// Defends: `--max-header-bytes` over HTTP/1.1 (431/400 and close) and HTTP/2 (431, reset
/// or GOAWAY), for one huge field and for many small ones: refused by the proxy itself
/// (never forwarded — the stand-in's own 16 KiB HTTP/2 limit would also answer 431, so the
/// proxy's request counter is checked). Heads under the limit pass; the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_normal_ones_pass() {
    let env = Env::start(&["--max-header-bytes", "16384"]).await;
    let huge = vec![("x-big".to_string(), "a".repeat(32 * 1024))];
    let many: Vec<(String, String)> = (0..800).map(|i| (format!("x-m{i}"), "0123456789abcdef".to_string())).collect();
    for http in [Http::H1, Http::H2] {
        for (what, headers) in [("one 32 KiB field", &huge), ("800 fields, 24 KiB", &many)] {
            match env.request(Some(&env.pki.alice), http, with_headers("/_sim/headers", headers)).await {
                Ok(r) => assert!(
                    r.status == 431 || r.status == 400,
                    "{http:?} {what}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
                Err(e) => assert!(!e.is_empty(), "{http:?} {what}"),
            }
        }
    }
    // Raw HTTP/1.1: the 32 KiB head is answered with 431/400 and the connection closed.
    let req = format!("GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(32 * 1024));
    let (responses, raw, closed) = raw_h1(&env, Some(&env.pki.alice), req.as_bytes()).await;
    assert!(closed, "{}", String::from_utf8_lossy(&raw));
    assert!(responses.iter().all(|r| r.status == 431 || r.status == 400), "{}", String::from_utf8_lossy(&raw));
    // Raw HTTP/2: a 32 KiB header block in HEADERS + CONTINUATION is refused.
    let big = "a".repeat(32 * 1024);
    let mut h2 = RawH2::open(&env, Some(&env.pki.alice)).await;
    h2.send_headers(1, &get_block("/_sim/headers", &[(b"x-big", big.as_bytes())]), true).await.expect("send");
    let o = h2.outcome(1).await;
    assert!(!o.timed_out && !String::from_utf8_lossy(&o.data).contains("x-big"), "{o:?}");
    assert_eq!(requests_forwarded(&env).await, 0.0, "an oversized head was forwarded");

    let fine: Vec<(String, String)> = (0..12).map(|i| (format!("x-pad-{i}"), "p".repeat(1000))).collect();
    for http in [Http::H1, Http::H2] {
        let r = env.request(Some(&env.pki.alice), http, with_headers("/_sim/headers", &fine)).await.unwrap();
        assert_eq!(r.status, 200, "{http:?} 12 KiB: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let pads =
            v["headers"].as_array().unwrap().iter().filter(|h| h[0].as_str().unwrap().starts_with("x-pad-")).count();
        assert_eq!(pads, 12, "{http:?}");
        assert_identity(&v, Some(&env.pki.alice), &format!("{http:?} 12 KiB"));
        assert_still_serving(&env, http).await;
    }
}

// ---------------------------------------------------------------------------
// 5. Deep and huge client certificate chains

/// Presents a fixed chain, whatever the server asks and however large it is (rustls's own
/// `with_client_auth_cert` parses the leaf and refuses one over 64 KiB).
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn tls_with_chain(env: &Env, chain: Vec<CertificateDer<'static>>, key_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(env.pki.root_der()).expect("root");
    let provider = kube_crl_proxy::tls::provider();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let signer = provider.key_provider.load_private_key(key).expect("signing key");
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(FixedClientCert(certified)));
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

/// Defends: the chain depth limit of the verifier (rustls-webpki). With `--crl-missing
/// allow` the client-sent intermediates need no CRL, so depth is the only thing that stops a
/// root → 12 intermediates → leaf chain; a 2-intermediate chain under the same flags passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_intermediate_chain_is_refused() {
    let env = Env::start(&["--crl-missing", "allow"]).await;
    let chain_of = |depth: usize, cn: &str| {
        let mut cas = vec![env.pki.root.intermediate("deep-1")];
        for i in 2..=depth {
            let next = cas.last().expect("ca").intermediate(&format!("deep-{i}"));
            cas.push(next);
        }
        let leaf = cas.last().expect("ca").issue(&Spec::client(cn, &["dev"]));
        let mut chain = vec![leaf.der.clone()];
        chain.extend(cas.iter().rev().map(|c| c.der.clone()));
        (chain, leaf.key_pem)
    };

    let (short, key) = chain_of(2, "shallow");
    let ok = request(env.proxy.addr, tls_with_chain(&env, short, &key), Http::H1, whoami_request()).await.unwrap();
    assert_eq!(user_info(&ok).username, "shallow", "a 2-intermediate chain passes under these flags");

    let (deep, key) = chain_of(12, "deep");
    assert_eq!(deep.len(), 13);
    let refused = request(env.proxy.addr, tls_with_chain(&env, deep, &key), Http::H1, whoami_request()).await;
    assert!(refused.is_err(), "a 12-intermediate chain was accepted: {refused:?}");
    let logs = env.proxy.wait_for_log("handshake_refused");
    assert!(logs.contains("CN=deep"), "the refusal names the certificate: {logs}");
    assert_still_serving(&env, Http::H1).await;
}

/// Defends: the TLS message size limit (rustls: a handshake message is at most 64 KiB). A
/// CA-signed leaf bloated with SANs beyond that is refused without taking the proxy down;
/// one of ~50 KB (under the limit, signed by a trusted CA) is either refused or maps to the
/// normal identity — never more, never a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_client_certificates_do_not_hurt() {
    let env = Env::start(&[]).await;
    let bloated = |cn: &str, names: usize| {
        let mut spec = Spec::client(cn, &["dev"]);
        spec.dns = (0..names).map(|i| format!("san-{i:05}.{}.example.com", "x".repeat(40))).collect();
        env.pki.users_ca.issue(&spec)
    };
    let big = bloated("big", 700);
    assert!((40_000..64_000).contains(&big.der.len()), "{}", big.der.len());
    let tls = tls_with_chain(&env, vec![big.der.clone(), env.pki.users_ca.der.clone()], &big.key_pem);
    match request(env.proxy.addr, tls, Http::H1, whoami_request()).await {
        Ok(r) => {
            let info = user_info(&r);
            assert_eq!(info.username, "big");
            assert_eq!(info.groups, vec!["dev", "system:authenticated"]);
        }
        Err(e) => assert!(!e.is_empty()),
    }
    let huge = bloated("huge", 1500);
    assert!(huge.der.len() > 70_000, "{}", huge.der.len());
    let tls = tls_with_chain(&env, vec![huge.der.clone(), env.pki.users_ca.der.clone()], &huge.key_pem);
    let refused = request(env.proxy.addr, tls, Http::H1, whoami_request()).await;
    assert!(refused.is_err(), "a {} byte certificate was accepted: {refused:?}", huge.der.len());
    env.proxy.wait_for_log("HandshakePayloadTooLarge");
    assert_still_serving(&env, Http::H2).await;
}

// ---------------------------------------------------------------------------
// 6. Garbage instead of a ClientHello

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// Defends: TLS record parsing and `--tls-handshake-timeout`. Whatever arrives instead of a
/// ClientHello, the connection is closed (alert or timeout) and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_client_hello_is_closed() {
    let env = Env::start(&["--tls-handshake-timeout", "2s"]).await;
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("plaintext HTTP".into(), b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("plaintext HTTP/2 preface".into(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("handshake record with junk".into(), vec![0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ("SSLv2 hello".into(), vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]),
        ("alert record first".into(), vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
        ("a megabyte of zeros".into(), vec![0; 1 << 20]),
    ];
    for seed in 1..=4u64 {
        cases.push((format!("random bytes #{seed}"), noise(4096, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
    }
    for (what, bytes) in cases {
        let mut tcp = TcpStream::connect(env.proxy.addr).await.expect("connect");
        let _ = timeout(WAIT, tcp.write_all(&bytes)).await;
        let (_, closed) = read_to_close(&mut tcp, WAIT).await;
        assert!(closed, "{what}: still open after {WAIT:?}");
    }
    assert_still_serving(&env, Http::H1).await;
}

// ---------------------------------------------------------------------------
// 7. Slowloris and idle connections

/// The bytes of a real ClientHello for the proxy.
fn client_hello(env: &Env) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(env.tls(None, Http::H1)), name).expect("client");
    let mut out = Vec::new();
    for _ in 0..16 {
        if !conn.wants_write() {
            break;
        }
        conn.write_tls(&mut out).expect("write_tls");
    }
    assert!(out.len() > 100 && out[0] == 0x16, "{out:?}");
    out
}

/// Writes `pieces` one every 200 ms (the slowloris drip) while watching for the proxy to
/// close the connection; `true` once it is closed, `false` if it is still open after `limit`.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, pieces: &[Vec<u8>], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut next = pieces.iter();
    let mut buf = [0u8; 1024];
    for _ in 0..10_000 {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                return true;
            },
            _ = tick.tick() => {
                let Some(piece) = next.next() else { continue };
                if s.write_all(piece).await.is_err() || s.flush().await.is_err() {
                    return true;
                }
            }
        }
    }
    false
}

/// Defends: `--tls-handshake-timeout`. Half a ClientHello then silence, or a ClientHello
/// trickled a byte at a time, is disconnected (the default would be 10 s, the limit here 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_cut_by_the_handshake_timeout() {
    let env = Env::start(&["--tls-handshake-timeout", "1s"]).await;
    let hello = client_hello(&env);
    let mut tcp = TcpStream::connect(env.proxy.addr).await.expect("connect");
    tcp.write_all(&hello[..hello.len() / 2]).await.expect("half a hello");
    let (_, closed) = read_to_close(&mut tcp, WAIT).await;
    assert!(closed, "half a ClientHello kept the connection for {WAIT:?}");

    // Trickle: one byte every 200 ms; the whole hello would take far longer than 1 s.
    let mut tcp = TcpStream::connect(env.proxy.addr).await.expect("connect");
    let bytes: Vec<Vec<u8>> = hello.iter().map(|b| vec![*b]).collect();
    assert!(trickle(&mut tcp, &bytes, WAIT).await, "a trickled ClientHello kept the connection open");
    assert_still_serving(&env, Http::H1).await;
}

/// Defends: `--request-header-timeout`. A TLS client that sends part of a request head and
/// stops, or trickles it, is disconnected (default 30 s, here 1 s) without being answered 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_by_the_header_timeout() {
    let env = Env::start(&["--request-header-timeout", "1s"]).await;
    let mut s = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n").await.expect("partial head");
    s.flush().await.expect("flush");
    let (raw, closed) = read_to_close(&mut s, WAIT).await;
    assert!(closed, "a partial head kept the connection for {WAIT:?}");
    assert!(parse_h1(&raw).iter().all(|r| r.status >= 400), "{}", String::from_utf8_lossy(&raw));

    // Trickled head: a new header line every 200 ms, never the final empty line.
    let mut s = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n").await.expect("head");
    let lines: Vec<Vec<u8>> = (0..100).map(|i| format!("X-Drip-{i}: x\r\n").into_bytes()).collect();
    assert!(trickle(&mut s, &lines, WAIT).await, "a trickled head kept the connection open");
}

/// Reads a streaming watch until an event arrives at or after `until`; panics if the watch
/// ends, fails or stalls before then.
async fn watch_alive_at(body: &mut hyper::body::Incoming, until: Instant, what: &str) {
    for _ in 0..1000 {
        match timeout(WAIT, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if f.is_data() && Instant::now() >= until {
                    return;
                }
            }
            other => panic!("{what}: the watch ended early: {other:?}"),
        }
    }
    panic!("{what}: no event after the deadline");
}

/// Defends: `--idle-timeout`, which closes idle keep-alive connections (HTTP/1.1 and HTTP/2)
/// but never one with a live watch. The idle ones close well before the 30 s header timeout
/// would have closed them; watches on both versions keep streaming past 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_but_watches_stay() {
    let env = Env::start(&["--idle-timeout", "1s"]).await;
    let start = Instant::now();
    let mut watches = Vec::new();
    for http in [Http::H1, Http::H2] {
        let io = hyper_util::rt::TokioIo::new(tls_stream(&env, Some(&env.pki.alice), http).await);
        let resp = match http {
            Http::H1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                timeout(WAIT, send.send_request(get(WATCH))).await.expect("watch head").unwrap()
            }
            Http::H2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                timeout(WAIT, send.send_request(get(WATCH))).await.expect("watch head").unwrap()
            }
        };
        assert_eq!(resp.status(), 200);
        watches.push((http, resp.into_body()));
    }

    // HTTP/1.1 keep-alive: one request, then silence.
    let mut s = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    s.flush().await.unwrap();
    // HTTP/2: one request, then silence.
    let io = hyper_util::rt::TokioIo::new(tls_stream(&env, Some(&env.pki.alice), Http::H2).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    let h2_conn = tokio::spawn(conn);
    let r = timeout(WAIT, send.send_request(get("/version"))).await.expect("response").unwrap();
    assert_eq!(r.status(), 200);
    let _ = timeout(WAIT, r.into_body().collect()).await.expect("body");

    let (raw, closed) = read_to_close(&mut s, WAIT).await;
    assert!(closed, "an idle HTTP/1.1 keep-alive connection stayed open for {WAIT:?}");
    let responses = parse_h1(&raw);
    assert_eq!(responses.len(), 1, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(responses[0].status, 200);
    timeout(WAIT, h2_conn).await.expect("an idle HTTP/2 connection stayed open").expect("join").ok();

    let until = start + Duration::from_millis(3500);
    let [(_, h1_watch), (_, h2_watch)] = &mut watches[..] else { unreachable!() };
    tokio::join!(watch_alive_at(h1_watch, until, "HTTP/1.1"), watch_alive_at(h2_watch, until, "HTTP/2"));
    assert!(start.elapsed() >= Duration::from_secs(3));
}

/// Reads from `s` into `buf` until `done(buf)` holds; panics with what arrived if the
/// connection ends or `WAIT` passes first.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, what: &str, done: impl Fn(&[u8]) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut chunk = vec![0u8; 16 * 1024];
    while !done(buf) {
        match timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("{what}: {other:?} after {:?}", String::from_utf8_lossy(buf)),
        }
    }
}

/// Responses complete in `data` whose last body is `last` (a streamed body can be parsed
/// early, partially).
fn responses_ending(data: &[u8], n: usize, last: &[u8]) -> bool {
    let r = parse_h1(data);
    r.len() >= n && r[n - 1].body.ends_with(last)
}

/// Defends: nothing is lost or reordered when an idle HTTP/1.1 connection gives its
/// buffers back between requests (`src/h1.rs`). On one connection: a request after a
/// pause, a request head split by a pause, two pipelined requests written together with
/// the start of a third whose rest comes later, and a body split by a pause. Every
/// request is answered, in order, with its own response, and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_http1_connections_lose_and_reorder_nothing() {
    let env = Env::start(&[]).await;
    let mut s = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    // Longer than it takes an idle connection to be parked (250–500 ms).
    let pause = || tokio::time::sleep(Duration::from_millis(700));
    let version = b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let marked = |m: &str| format!("GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\nX-Marker: {m}\r\n\r\n");
    let mut data = Vec::new();

    s.write_all(version).await.unwrap();
    read_until(&mut s, &mut data, "first request", |d| parse_h1(d).len() == 1).await;
    pause().await;

    // A head in two writes, with the connection idle in between.
    s.write_all(b"GET /_sim/headers HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    pause().await;
    s.write_all(b"X-Marker: split\r\n\r\n").await.unwrap();
    read_until(&mut s, &mut data, "split head", |d| responses_ending(d, 2, b"}")).await;
    pause().await;

    // Two whole requests and the start of a third in one write; the rest of it later.
    let third = marked("three");
    let (third_a, third_b) = third.split_at(20);
    let burst = [marked("one").as_bytes(), marked("two").as_bytes(), third_a.as_bytes()].concat();
    s.write_all(&burst).await.unwrap();
    read_until(&mut s, &mut data, "pipelined pair", |d| responses_ending(d, 4, b"}")).await;
    pause().await;
    s.write_all(third_b.as_bytes()).await.unwrap();
    read_until(&mut s, &mut data, "third, completed late", |d| responses_ending(d, 5, b"}")).await;
    pause().await;

    // A body in two writes, with a pause between.
    s.write_all(b"POST /_sim/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello").await.unwrap();
    pause().await;
    s.write_all(b"world").await.unwrap();
    read_until(&mut s, &mut data, "split body", |d| responses_ending(d, 6, b"helloworld")).await;
    pause().await;
    s.write_all(version).await.unwrap();
    read_until(&mut s, &mut data, "after the body", |d| parse_h1(d).len() == 7).await;

    let r = parse_h1(&data);
    assert_eq!(r.len(), 7, "{}", String::from_utf8_lossy(&data));
    assert!(r.iter().all(|r| r.status == 200), "{}", String::from_utf8_lossy(&data));
    let marker = |i: usize| -> String {
        let v = r[i].json();
        let headers = v["headers"].as_array().cloned().unwrap_or_default();
        let found = headers.iter().find(|h| h[0] == "x-marker").and_then(|h| h[1].as_str().map(str::to_string));
        found.unwrap_or_else(|| panic!("response {i} has no x-marker: {v}"))
    };
    assert_eq!([marker(1), marker(2), marker(3), marker(4)], ["split", "one", "two", "three"]);
    assert_eq!(r[5].body, b"helloworld");
    assert_eq!(r[0].body, r[6].body, "/version twice");
}

/// Defends: a client that completes the TLS handshake and never sends a request is closed
/// after `--request-header-timeout`; a keep-alive connection between requests is governed
/// by `--idle-timeout` instead (here longer), so it is still usable after the header
/// timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_get_the_header_timeout_and_keep_alive_the_idle_timeout() {
    let env = Env::start(&["--request-header-timeout", "1s", "--idle-timeout", "6s"]).await;
    let started = Instant::now();
    let mut silent = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    let mut kept = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    let mut data = Vec::new();
    kept.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    read_until(&mut kept, &mut data, "first request", |d| parse_h1(d).len() == 1).await;

    let (raw, closed) = read_to_close(&mut silent, WAIT).await;
    assert!(closed && raw.is_empty(), "a silent client was not closed: {raw:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}, not after the 1 s header timeout");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    kept.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    read_until(&mut kept, &mut data, "a request after the header timeout", |d| parse_h1(d).len() == 2).await;
    assert_eq!(parse_h1(&data)[1].status, 200);
}

// ---------------------------------------------------------------------------
// 8. --max-connections

/// Defends: `--max-connections`. With 5 idle TLS connections open, a 6th TCP connection is
/// closed at accept and counted in `kube_crl_proxy_refused_connections_total`; once one of
/// the 5 goes away, new connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_sixth() {
    let env = Env::start(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tls_stream(&env, Some(&env.pki.alice), Http::H1).await);
    }
    let mut sixth = TcpStream::connect(env.proxy.addr).await.expect("the kernel accepts the TCP connection");
    let (data, closed) = read_to_close(&mut sixth, WAIT).await;
    assert!(closed && data.is_empty(), "the 6th connection was not closed at once: {data:?}");
    // A TLS client is refused too.
    assert!(env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.is_err());
    let m = metrics(&env).await;
    let refused = series(&m, "kube_crl_proxy_refused_connections_total").unwrap_or(0.0);
    assert!(refused >= 1.0, "{m}");
    // The held connections still work.
    let mut s = held.pop().expect("held");
    s.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let (raw, _) = read_to_close(&mut s, WAIT).await;
    assert_eq!(parse_h1(&raw).first().map(|r| r.status), Some(200), "{}", String::from_utf8_lossy(&raw));
    drop(s);
    // That one is gone now: a new client gets in (polled: the slot frees when the proxy sees
    // the close).
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    for _ in 0..200 {
        match env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await {
            Ok(r) => {
                assert_eq!(user_info(&r).username, "alice");
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        assert!(Instant::now() < deadline, "no slot freed: {last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_none(), "{last:?}");
    drop(held);
}

// ---------------------------------------------------------------------------
// 9. HTTP/2 rapid reset and stream concurrency

/// Defends: HTTP/2 rapid-reset protection (CVE-2023-44487): streams opened and reset at once,
/// in batches, make the proxy send GOAWAY (ENHANCE_YOUR_CALM) long before 2,000 streams; a
/// new client is served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_gets_goaway() {
    let env = Env::start(&[]).await;
    let io = tls_stream(&env, Some(&env.pki.alice), Http::H2).await;
    let (mut client, mut conn) = h2::client::Builder::new().handshake::<_, Bytes>(io).await.expect("h2 handshake");
    let mut ping = conn.ping_pong().expect("ping_pong");
    let driver = tokio::spawn(conn);
    const TOTAL: usize = 2000;
    const BATCH: usize = 100;
    let mut failed_at = None;
    'outer: for batch in 0..TOTAL / BATCH {
        for i in 0..BATCH {
            let n = batch * BATCH + i;
            client = match timeout(WAIT, client.ready()).await.expect("ready") {
                Ok(c) => c,
                Err(_) => {
                    failed_at = Some(n);
                    break 'outer;
                }
            };
            let req = http::Request::get("https://localhost/_sim/headers").body(()).expect("req");
            match client.send_request(req, false) {
                Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => {
                    failed_at = Some(n);
                    break 'outer;
                }
            }
        }
        // A PING round trip: the proxy has processed the whole batch when the PONG is back.
        if timeout(WAIT, ping.ping(h2::Ping::opaque())).await.expect("PONG or error").is_err() {
            failed_at = Some((batch + 1) * BATCH);
            break;
        }
    }
    let n = failed_at.unwrap_or_else(|| panic!("{TOTAL} streams opened and reset without GOAWAY"));
    assert!(n < TOTAL, "{n}");
    let ended = timeout(WAIT, driver).await.expect("the connection ends").expect("join");
    let err = ended.expect_err("the connection ended with an error");
    // The client reads the GOAWAY, or, when the proxy closes while it is still writing, a
    // broken pipe; either way the proxy says why.
    if !err.is_io() {
        assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err} after {n} streams");
        assert!(err.is_go_away() && err.is_remote(), "{err}");
    }
    env.proxy.wait_for_log("remotely-reset pending-accept streams reached limit");
    assert_still_serving(&env, Http::H2).await;
}

/// Defends: `--http2-max-concurrent-streams`: the proxy advertises 10, and a client that
/// ignores the setting gets its 11th concurrent stream refused (REFUSED_STREAM) while the 10
/// watches keep streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_concurrent_streams_is_advertised_and_enforced() {
    let env = Env::start(&["--http2-max-concurrent-streams", "10"]).await;
    let io = tls_stream(&env, Some(&env.pki.alice), Http::H2).await;
    let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = timeout(WAIT, client.ready()).await.expect("ready").expect("ready");
    let (resp, _) =
        client.send_request(http::Request::get("https://localhost/version").body(()).unwrap(), true).unwrap();
    let resp = timeout(WAIT, resp).await.expect("response").expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(client.current_max_send_streams(), 10);

    // A raw client opens 11 watches at once.
    let mut h2 = RawH2::open(&env, Some(&env.pki.alice)).await;
    for i in 0..11u32 {
        h2.send_headers(1 + 2 * i, &get_block(WATCH, &[]), true).await.expect("send");
    }
    let deadline = Instant::now() + WAIT;
    let mut refused = Vec::new();
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..10_000 {
        if answered.len() == 10 && !refused.is_empty() {
            break;
        }
        match h2.next(deadline).await {
            Ok(f) if f.ty == HEADERS => {
                answered.insert(f.stream);
            }
            Ok(f) if f.ty == RST_STREAM => {
                refused.push((f.stream, u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])))
            }
            Ok(f) if f.ty == GOAWAY => panic!("GOAWAY: {f:?}"),
            Ok(_) => {}
            Err(e) => panic!("{e:?}: answered {answered:?}, refused {refused:?}"),
        }
    }
    assert_eq!(refused, vec![(21, REFUSED_STREAM)], "answered {answered:?}");
    assert_eq!(answered.len(), 10, "{answered:?}");
}

// ---------------------------------------------------------------------------
// 10. A client that never reads

/// The largest RSS of the proxy over `window` (sampled), in KiB.
async fn peak_rss(pid: u32, window: Duration) -> u64 {
    let end = Instant::now() + window;
    let mut peak = rss_kib(pid);
    for _ in 0..1000 {
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid));
    }
    peak
}

async fn upstream_responses(env: &Env) -> f64 {
    series(&metrics(env).await, "kube_crl_proxy_upstream_request_duration_seconds_count").unwrap_or(0.0)
}

/// Defends: backpressure. A client that asks for 64 MiB and never reads must not make the
/// proxy buffer the body: its RSS grows by less than 32 MiB (HTTP/1.1 and HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_a_bounded_buffer() {
    const LIMIT_KIB: u64 = 32 * 1024;
    let env = Env::start(&[]).await;
    let pid = env.proxy.pid();
    // Warm up both paths so that pools and buffers exist before the baseline.
    for http in [Http::H1, Http::H2] {
        let r = env.request(Some(&env.pki.alice), http, get("/_sim/bytes?n=4194304")).await.unwrap();
        assert_eq!(r.body.len(), 4 << 20);
    }

    // HTTP/1.1: write the request, never read.
    let before = rss_kib(pid);
    let seen = upstream_responses(&env).await;
    let mut s = tls_stream(&env, Some(&env.pki.alice), Http::H1).await;
    s.write_all(b"GET /_sim/bytes?n=67108864 HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    s.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    for _ in 0..200 {
        if upstream_responses(&env).await > seen {
            break;
        }
        assert!(Instant::now() < deadline, "the upstream never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak_rss(pid, Duration::from_secs(5)).await;
    assert!(peak < before + LIMIT_KIB, "HTTP/1.1: RSS {before} KiB → {peak} KiB while the client did not read");
    drop(s);

    // HTTP/2: the response head is read, the body never.
    let before = rss_kib(pid);
    let io = hyper_util::rt::TokioIo::new(tls_stream(&env, Some(&env.pki.alice), Http::H2).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let resp = timeout(WAIT, send.send_request(get("/_sim/bytes?n=67108864"))).await.expect("head").unwrap();
    assert_eq!(resp.status(), 200);
    let peak = peak_rss(pid, Duration::from_secs(5)).await;
    assert!(peak < before + LIMIT_KIB, "HTTP/2: RSS {before} KiB → {peak} KiB while the client did not read");
    drop(resp);

    assert_still_serving(&env, Http::H1).await;
}

/// The proxy survived the attack: alice still gets her identity through it.
async fn assert_still_serving(env: &Env, http: Http) {
    let reply = env.request(Some(&env.pki.alice), http, whoami_request()).await.expect("proxy still serving");
    assert_eq!(user_info(&reply).username, "alice");
}
