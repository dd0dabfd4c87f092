//! `loadgen hold`: the `scale` scenario's client. Opens N client-certificate connections
//! (HTTP/1.1 idle, HTTP/2 idle, or HTTP/2 with K watch streams each), plus one connection per
//! `--victim` certificate shaped the same way, holds them, and answers commands on stdin
//! with one JSON line each on stdout:
//!
//! - (at start) warms the proxy with 20 one-shot requests, prints `{"event":"warm"}`;
//! - `open`: opens the connections (bounded by `--open-budget` seconds and a failure cap),
//!   prints `{"event":"open",...}`;
//! - `stats`: connections still open, watch events received so far;
//! - `swap SRC DST TARGET TIMEOUT_S`: renames SRC onto DST (the CRL swap, done here so that
//!   the clock starts at the rename) and waits until TARGET is closed, at most TIMEOUT_S:
//!   TARGET `vI` = the I-th victim connection, `all` = every bulk connection, `none` = just
//!   wait. Reports the close times in ms after the rename;
//! - `quit`.
//!
//! "Closed" is what the client sees first: an HTTP/2 GOAWAY frame (found by scanning the
//! frame headers of the decrypted byte stream), or EOF / a read error. Each connection's
//! time is recorded when its bytes are read, so polling does not add to it; the load
//! generator's own single core does bound how fast it reads 15,000 closes.
//! The whole process exits after `--max-seconds` whatever happens.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::tls::{ClientTls, alert_of, client_config, error_label};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Proxy address.
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1")]
    pub server_name: String,
    /// Client certificate (PEM) and key of the bulk connections.
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// A victim connection: CERT,KEY (repeatable), opened like the bulk ones.
    #[arg(long = "victim")]
    pub victims: Vec<String>,
    /// 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub http: u8,
    /// HTTP/2 only: watch streams per connection (0 = one request, then idle).
    #[arg(long, default_value_t = 0)]
    pub watches: usize,
    #[arg(long, default_value = "/api")]
    pub path: String,
    #[arg(long, default_value = "/watch")]
    pub watch_path: String,
    /// Bulk connections.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Per-connection open timeout (handshake + first request or watches), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Stop opening after this many seconds, or after this many failures.
    #[arg(long, default_value_t = 180.0)]
    pub open_budget: f64,
    #[arg(long, default_value_t = 200)]
    pub max_failures: usize,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 900.0)]
    pub max_seconds: f64,
    #[arg(long, default_value = "")]
    pub label: String,
}

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's base instant, never 0 (0 = not set).
fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// One connection's fate.
struct Track {
    goaway_ns: AtomicU64,
    eof_ns: AtomicU64,
    ended: AtomicBool,
    /// Counts the group's ended connections (bulk or victims).
    group: Arc<AtomicUsize>,
    events: Arc<AtomicU64>,
}

impl Track {
    fn new(group: Arc<AtomicUsize>, events: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Self { goaway_ns: AtomicU64::new(0), eof_ns: AtomicU64::new(0), ended: AtomicBool::new(false), group, events })
    }
    fn mark(&self, which: &AtomicU64) {
        let _ = which.compare_exchange(0, now_ns(), Relaxed, Relaxed);
        if !self.ended.swap(true, Relaxed) {
            self.group.fetch_add(1, Relaxed);
        }
    }
    /// First sign of the end: GOAWAY or EOF/error.
    fn ended_ns(&self) -> Option<u64> {
        [self.goaway_ns.load(Relaxed), self.eof_ns.load(Relaxed)].into_iter().filter(|v| *v > 0).min()
    }
}

/// The TLS stream, watched: EOF / errors, and (HTTP/2) GOAWAY frames in what is read.
struct Watched<S> {
    inner: S,
    track: Arc<Track>,
    h2: bool,
    hdr: [u8; 9],
    hdr_len: usize,
    skip: usize,
}

impl<S> Watched<S> {
    fn scan(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
            self.hdr_len += n;
            data = &data[n..];
            if self.hdr_len == 9 {
                let len = (self.hdr[0] as usize) << 16 | (self.hdr[1] as usize) << 8 | self.hdr[2] as usize;
                if self.hdr[3] == 0x7 {
                    self.track.mark(&self.track.goaway_ns);
                }
                self.skip = len;
                self.hdr_len = 0;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskCx<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    this.track.mark(&this.track.eof_ns);
                } else if this.h2 {
                    this.scan(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.track.mark(&this.track.eof_ns);
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskCx<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

enum Sender {
    H1(#[allow(dead_code)] http1::SendRequest<Empty<Bytes>>),
    H2(#[allow(dead_code)] http2::SendRequest<Empty<Bytes>>),
}

struct Held {
    _sender: Sender,
    track: Arc<Track>,
}

struct Shared {
    args: Args,
    name: ServerName<'static>,
    authority: String,
}

fn label_err(stage: &str, e: &(dyn std::error::Error + 'static)) -> String {
    match alert_of(e) {
        Some(a) => format!("{stage}: alert {a}"),
        None => error_label(stage, e),
    }
}

async fn open_one(sh: &Shared, connector: &TlsConnector, track: Arc<Track>) -> Result<Held, String> {
    let a = &sh.args;
    let tcp = TcpStream::connect(a.addr).await.map_err(|e| error_label("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let tls = connector.connect(sh.name.clone(), tcp).await.map_err(|e| label_err("handshake", &e))?;
    let h2 = a.http == 2;
    let io = TokioIo::new(Watched { inner: tls, track: track.clone(), h2, hdr: [0; 9], hdr_len: 0, skip: 0 });
    let t2 = track.clone();
    if h2 {
        let (mut s, conn) =
            http2::handshake(TokioExecutor::new(), io).await.map_err(|e| label_err("h2 handshake", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
            t2.mark(&t2.eof_ns);
        });
        if a.watches == 0 {
            get(&mut s, &format!("https://{}{}", sh.authority, a.path), None).await?;
        } else {
            let mut pending = Vec::with_capacity(a.watches);
            for i in 0..a.watches {
                let mut s = s.clone();
                let uri = format!("https://{}{}?stream={i}", sh.authority, a.watch_path);
                let ev = track.events.clone();
                pending.push(tokio::spawn(async move { get(&mut s, &uri, Some(ev)).await }));
            }
            for p in pending {
                p.await.map_err(|e| format!("join: {e}"))??;
            }
        }
        Ok(Held { _sender: Sender::H2(s), track })
    } else {
        let (mut s, conn) = http1::handshake(io).await.map_err(|e| label_err("h1 handshake", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
            t2.mark(&t2.eof_ns);
        });
        s.ready().await.map_err(|e| label_err("h1 ready", &e))?;
        let req = http::Request::get(a.path.as_str())
            .header(http::header::HOST, sh.authority.as_str())
            .header(http::header::USER_AGENT, "bench-loadgen-hold")
            .body(Empty::new())
            .expect("request");
        let resp = s.send_request(req).await.map_err(|e| label_err("request", &e))?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.map_err(|e| label_err("body", &e))?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        Ok(Held { _sender: Sender::H1(s), track })
    }
}

/// HTTP/2 GET. Without `events`, reads the body to the end; with it, returns once the
/// response head is in and counts the body's lines in a task (a watch).
async fn get(s: &mut http2::SendRequest<Empty<Bytes>>, uri: &str, events: Option<Arc<AtomicU64>>) -> Result<(), String> {
    s.ready().await.map_err(|e| label_err("h2 ready", &e))?;
    let req = http::Request::get(uri)
        .header(http::header::USER_AGENT, "bench-loadgen-hold")
        .body(Empty::new())
        .expect("request");
    let resp = s.send_request(req).await.map_err(|e| label_err("request", &e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let mut body = resp.into_body();
    match events {
        None => {
            while let Some(f) = body.frame().await {
                f.map_err(|e| label_err("body", &e))?;
            }
        }
        Some(ev) => {
            tokio::spawn(async move {
                while let Some(Ok(f)) = body.frame().await {
                    if let Some(d) = f.data_ref() {
                        ev.fetch_add(d.iter().filter(|b| **b == b'\n').count() as u64, Relaxed);
                    }
                }
            });
        }
    }
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection (the warm-up).
async fn one_shot(sh: &Shared, connector: &TlsConnector) -> bool {
    let tcp = match TcpStream::connect(sh.args.addr).await {
        Ok(t) => t,
        Err(_) => return false,
    };
    let Ok(mut tls) = connector.connect(sh.name.clone(), tcp).await else { return false };
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", sh.args.path, sh.authority);
    if tls.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

fn ms(ns: u64, t0: u64) -> f64 {
    ((ns.saturating_sub(t0)) as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn pct(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    json!(sorted[i.min(sorted.len() - 1)])
}

fn emit(v: Value) {
    println!("{v}");
}

pub fn run(args: Args) -> Result<()> {
    let _ = BASE.get_or_init(Instant::now);
    if args.watches > 0 && args.http != 2 {
        bail!("--watches needs --http 2");
    }
    let max = Duration::from_secs_f64(args.max_seconds);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        tokio::select! {
            r = main_loop(args) => r,
            _ = tokio::time::sleep(max) => bail!("--max-seconds reached"),
        }
    })
}

async fn main_loop(args: Args) -> Result<()> {
    let alpn: &[&[u8]] = if args.http == 2 { &[b"h2"] } else { &[b"http/1.1"] };
    let mk = |cert: &PathBuf, key: &PathBuf, alpn: &[&[u8]]| -> Result<TlsConnector> {
        Ok(TlsConnector::from(client_config(&ClientTls { ca: None, cert, key, version: "1.3", alpn })?))
    };
    let bulk_conn = mk(&args.cert, &args.key, alpn)?;
    let warm_conn = mk(&args.cert, &args.key, &[b"http/1.1"])?;
    let mut victim_conns = Vec::new();
    for v in &args.victims {
        let (c, k) = v.split_once(',').context("--victim CERT,KEY")?;
        victim_conns.push(mk(&c.into(), &k.into(), alpn)?);
    }
    let sh = Arc::new(Shared {
        name: ServerName::try_from(args.server_name.clone()).context("--server-name")?,
        authority: format!("{}:{}", args.server_name, args.addr.port()),
        args: args.clone(),
    });

    let mut warm_ok = 0;
    for _ in 0..20 {
        if tokio::time::timeout(Duration::from_secs(10), one_shot(&sh, &warm_conn)).await.unwrap_or(false) {
            warm_ok += 1;
        }
    }
    emit(json!({"event": "warm", "ok": warm_ok, "label": args.label}));

    let bulk_ended = Arc::new(AtomicUsize::new(0));
    let victims_ended = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let mut bulk: Vec<Held> = Vec::new();
    let mut victims: Vec<Option<Held>> = Vec::new();

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["open"] => {
                let t = Instant::now();
                let budget = t + Duration::from_secs_f64(args.open_budget);
                let sem = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
                let failures = Arc::new(AtomicUsize::new(0));
                let errors: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
                let op_timeout = Duration::from_secs_f64(args.op_timeout);
                let mut tasks = Vec::with_capacity(args.conns);
                let mut stopped_early = None;
                for _ in 0..args.conns {
                    let permit = sem.clone().acquire_owned().await?;
                    if Instant::now() > budget {
                        stopped_early = Some("open budget");
                        break;
                    }
                    if failures.load(Relaxed) >= args.max_failures {
                        stopped_early = Some("failure cap");
                        break;
                    }
                    let (sh, c, f, er) = (sh.clone(), bulk_conn.clone(), failures.clone(), errors.clone());
                    let track = Track::new(bulk_ended.clone(), events.clone());
                    tasks.push(tokio::spawn(async move {
                        let r = tokio::time::timeout(op_timeout, open_one(&sh, &c, track)).await;
                        drop(permit);
                        let err = match r {
                            Ok(Ok(h)) => return Some(h),
                            Ok(Err(e)) => e,
                            Err(_) => "timeout".to_string(),
                        };
                        f.fetch_add(1, Relaxed);
                        *er.lock().unwrap().entry(err).or_default() += 1;
                        None
                    }));
                }
                for t in tasks {
                    if let Some(h) = t.await? {
                        bulk.push(h);
                    }
                }
                let mut victim_errors = Vec::new();
                for c in &victim_conns {
                    let track = Track::new(victims_ended.clone(), events.clone());
                    match tokio::time::timeout(op_timeout, open_one(&sh, c, track)).await {
                        Ok(Ok(h)) => victims.push(Some(h)),
                        Ok(Err(e)) => {
                            victim_errors.push(e);
                            victims.push(None)
                        }
                        Err(_) => {
                            victim_errors.push("timeout".into());
                            victims.push(None)
                        }
                    }
                }
                // A connection that ended while others were opening is not held.
                let ended = bulk_ended.load(Relaxed);
                emit(json!({
                    "event": "open", "requested": args.conns, "open": bulk.len() - ended.min(bulk.len()),
                    "ended_during_open": ended,
                    "failures": failures.load(Relaxed), "errors": *errors.lock().unwrap(),
                    "stopped_early": stopped_early, "open_s": t.elapsed().as_secs_f64(),
                    "victims_open": victims.iter().filter(|v| v.is_some()).count(), "victim_errors": victim_errors,
                    "watch_events": events.load(Relaxed),
                }));
            }
            ["stats"] => emit(json!({
                "event": "stats", "bulk_held": bulk.len(), "bulk_ended": bulk_ended.load(Relaxed),
                "victims_ended": victims_ended.load(Relaxed), "watch_events": events.load(Relaxed),
                "t_ns": now_ns(),
            })),
            ["swap", src, dst, target, timeout] => {
                let timeout: f64 = timeout.parse().context("swap timeout")?;
                let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 120.0));
                let bulk_before = bulk_ended.load(Relaxed);
                let victims_before = victims_ended.load(Relaxed);
                let t0 = now_ns();
                let t0i = Instant::now();
                if let Err(e) = std::fs::rename(src, dst) {
                    emit(json!({"event": "swap", "error": format!("rename {src} → {dst}: {e}")}));
                    continue;
                }
                let vi: Option<usize> = target.strip_prefix('v').and_then(|i| i.parse().ok());
                let done = || match (*target, vi) {
                    ("all", _) => bulk_ended.load(Relaxed) >= bulk.len(),
                    (_, Some(i)) => victims.get(i).and_then(|v| v.as_ref()).is_none_or(|h| h.track.ended_ns().is_some()),
                    _ => false,
                };
                while !done() && t0i.elapsed() < timeout {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let waited_ms = t0i.elapsed().as_secs_f64() * 1e3;
                // Let stragglers in flight land before counting collateral closes.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut out = json!({
                    "event": "swap", "target": target, "waited_ms": waited_ms, "timeout_s": timeout.as_secs_f64(),
                    "bulk_ended_before": bulk_before, "victims_ended_before": victims_before,
                });
                if let Some(i) = vi {
                    let h = victims.get(i).and_then(|v| v.as_ref());
                    out["victim_held"] = json!(h.is_some());
                    if let Some(h) = h {
                        let t = &h.track;
                        let g = t.goaway_ns.load(Relaxed);
                        let e = t.eof_ns.load(Relaxed);
                        out["close_ms"] = t.ended_ns().map(|n| json!(ms(n, t0))).unwrap_or(Value::Null);
                        out["goaway_ms"] = if g > 0 { json!(ms(g, t0)) } else { Value::Null };
                        out["eof_ms"] = if e > 0 { json!(ms(e, t0)) } else { Value::Null };
                    }
                    out["collateral_bulk_closed"] = json!(bulk_ended.load(Relaxed) - bulk_before);
                    out["victims_closed"] = json!(victims_ended.load(Relaxed) - victims_before);
                } else {
                    let mut closes: Vec<f64> = Vec::new();
                    let mut goaways = 0;
                    for h in &bulk {
                        if let Some(n) = h.track.ended_ns()
                            && n >= t0
                        {
                            closes.push(ms(n, t0));
                            if h.track.goaway_ns.load(Relaxed) > 0 {
                                goaways += 1;
                            }
                        }
                    }
                    closes.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    out["held"] = json!(bulk.len() - bulk_before.min(bulk.len()));
                    out["closed"] = json!(closes.len());
                    out["with_goaway"] = json!(goaways);
                    out["first_ms"] = pct(&closes, 0.0);
                    out["p50_ms"] = pct(&closes, 50.0);
                    out["p90_ms"] = pct(&closes, 90.0);
                    out["p99_ms"] = pct(&closes, 99.0);
                    out["last_ms"] = pct(&closes, 100.0);
                    out["victims_closed"] = json!(victims_ended.load(Relaxed) - victims_before);
                }
                emit(out);
            }
            ["quit"] => break,
            _ => emit(json!({"event": "error", "error": format!("unknown command {line:?}")})),
        }
    }
    Ok(())
}
