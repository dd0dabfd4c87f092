//! `loadgen load`: one bounded measurement against a TLS proxy, reported as JSON.
//!
//! Modes:
//! - `handshake`: every request on a new TCP + TLS connection (full handshake, no
//!   resumption), one raw HTTP/1.1 GET, read the response, drop the connection.
//!   A TLS alert from the server counts as a rejection (the revoked-client scenario).
//! - `keepalive`: `--conns` persistent connections (hyper HTTP/1.1 or HTTP/2 client), one
//!   request in flight per connection, latency per request.
//! - `idle`: open `--conns` connections (handshake + one request each), keep them open,
//!   and report the proxy's VmRSS before and after.
//!
//! The run is bounded: `--warmup` + `--duration` seconds, at most `--max-ops` operations,
//! each with a `--op-timeout`. Only operations that complete inside the measured window
//! (after the warm-up) are counted. The proxy's CPU time (utime + stime of
//! every `--proxy-pid`, from /proc/<pid>/stat) is sampled at the window's start and end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::procfs;
use crate::tls::{ClientTls, alert_of, client_config, error_label};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Proxy address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// TLS server name (SNI / verification); an IP address sends no SNI.
    #[arg(long, default_value = "127.0.0.1")]
    pub server_name: String,
    /// CA bundle to verify the server with (ignored with --no-verify-server).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate (saves load-generator CPU; see README).
    #[arg(long)]
    pub no_verify_server: bool,
    /// Client certificate (PEM) and key.
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// TLS version: 1.2, 1.3 or any.
    #[arg(long, default_value = "1.3")]
    pub tls: String,
    /// HTTP version for keepalive/idle modes: 1 or 2 (handshake mode always uses HTTP/1.1).
    #[arg(long, default_value_t = 1)]
    pub http: u8,
    /// handshake | keepalive | idle
    #[arg(long, default_value = "handshake")]
    pub mode: String,
    /// Concurrent connections (handshake: concurrent workers).
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Warm-up seconds (load applied, not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Upper bound on operations (safety bound; the run stops early when reached).
    #[arg(long, default_value_t = 3_000_000)]
    pub max_ops: u64,
    /// Per-operation timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Request path.
    #[arg(long, default_value = "/api")]
    pub path: String,
    /// Pid(s) of the proxy under test (CPU time and memory are summed over them).
    #[arg(long = "proxy-pid")]
    pub proxy_pids: Vec<u32>,
    /// Other processes to report CPU for, NAME=PID (e.g. the upstream).
    #[arg(long = "aux-pid")]
    pub aux_pids: Vec<String>,
    /// Timeline bucket in ms (0 = no timeline).
    #[arg(long, default_value_t = 0)]
    pub timeline_ms: u64,
    /// Run `--trigger` (sh -c) this many seconds into the measured window.
    #[arg(long)]
    pub trigger_at: Option<f64>,
    #[arg(long)]
    pub trigger: Option<String>,
    /// Probe client: a handshake + request every --probe-interval-ms with this certificate
    /// (detects when a reloaded CRL that revokes it takes effect).
    #[arg(long)]
    pub probe_cert: Option<PathBuf>,
    #[arg(long)]
    pub probe_key: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub probe_interval_ms: u64,
    /// idle mode: seconds to hold the connections open after the last one is established.
    #[arg(long, default_value_t = 2.0)]
    pub idle_hold: f64,
    /// idle mode: connections being opened at once.
    #[arg(long, default_value_t = 32)]
    pub open_concurrency: usize,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Free text copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

pub fn run(args: Args) -> Result<()> {
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let report = rt.block_on(async move {
        match args.mode.as_str() {
            "handshake" | "keepalive" => run_load(args).await,
            "idle" => run_idle(args).await,
            m => bail!("--mode {m:?}: expected handshake, keepalive or idle"),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What one operation ended with.
enum Outcome {
    Ok { bytes: u64 },
    Rejected(String),
    Status(u16),
    Error(String),
}

/// Everything the workers share.
struct Ctx {
    addr: SocketAddr,
    name: ServerName<'static>,
    authority: String,
    path: String,
    http2: bool,
    connector: TlsConnector,
    measure_start: Instant,
    deadline: Instant,
    stop: AtomicBool,
    ops_started: AtomicU64,
    max_ops: u64,
    op_timeout: Duration,
    timeline_ms: u64,
    stopped: Notify,
}

impl Ctx {
    /// Claims the next operation, or says to stop.
    fn take_op(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        if self.ops_started.fetch_add(1, Ordering::Relaxed) >= self.max_ops {
            self.stop.store(true, Ordering::Relaxed);
            self.stopped.notify_waiters();
            return false;
        }
        true
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// Per-worker results, merged at the end.
#[derive(Default)]
struct Stats {
    ok: u64,
    rejected: u64,
    bytes: u64,
    alerts: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    lat_us: Vec<u32>,
    /// Per timeline bucket: successes (or rejections) and failures.
    tl_ok: Vec<u32>,
    tl_err: Vec<u32>,
    connections: u64,
}

impl Stats {
    fn record(&mut self, ctx: &Ctx, start: Instant, end: Instant, outcome: Outcome) {
        // Completions inside the window count (a rate of completions; an operation that
        // started during the warm-up but ends in the window counts, one that ends after does not).
        if end < ctx.measure_start || end > ctx.deadline {
            return;
        }
        let good = match outcome {
            Outcome::Ok { bytes } => {
                self.ok += 1;
                self.bytes += bytes;
                true
            }
            Outcome::Rejected(a) => {
                self.rejected += 1;
                *self.alerts.entry(a).or_default() += 1;
                true
            }
            Outcome::Status(s) => {
                *self.statuses.entry(s).or_default() += 1;
                false
            }
            Outcome::Error(e) => {
                *self.errors.entry(e).or_default() += 1;
                false
            }
        };
        if good {
            self.lat_us.push(u32::try_from((end - start).as_micros()).unwrap_or(u32::MAX));
        }
        if ctx.timeline_ms > 0 {
            let b = ((end - ctx.measure_start).as_millis() as u64 / ctx.timeline_ms) as usize;
            let tl = if good { &mut self.tl_ok } else { &mut self.tl_err };
            if tl.len() <= b {
                tl.resize(b + 1, 0);
            }
            tl[b] += 1;
        }
    }

    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.rejected += o.rejected;
        self.bytes += o.bytes;
        self.connections += o.connections;
        for (k, v) in o.alerts {
            *self.alerts.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.lat_us.extend(o.lat_us);
        for (dst, src) in [(&mut self.tl_ok, o.tl_ok), (&mut self.tl_err, o.tl_err)] {
            if dst.len() < src.len() {
                dst.resize(src.len(), 0);
            }
            for (i, v) in src.into_iter().enumerate() {
                dst[i] += v;
            }
        }
    }
}

fn classify(stage: &str, e: &(dyn std::error::Error + 'static)) -> Outcome {
    match alert_of(e) {
        Some(a) => Outcome::Rejected(a),
        None => Outcome::Error(error_label(stage, e)),
    }
}

fn connector(args: &Args, cert: &PathBuf, key: &PathBuf, alpn: &[&[u8]]) -> Result<TlsConnector> {
    let ca = if args.no_verify_server { None } else { args.ca.as_deref() };
    if ca.is_none() && !args.no_verify_server {
        bail!("--ca is required unless --no-verify-server");
    }
    let cfg = client_config(&ClientTls { ca, cert, key, version: &args.tls, alpn })?;
    Ok(TlsConnector::from(cfg))
}

fn make_ctx(args: &Args, start: Instant) -> Result<Arc<Ctx>> {
    let http2 = args.http == 2 && args.mode != "handshake";
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let name = ServerName::try_from(args.server_name.clone()).context("--server-name")?;
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    Ok(Arc::new(Ctx {
        addr: args.addr,
        name,
        authority: format!("{}:{}", args.server_name, args.addr.port()),
        path: args.path.clone(),
        http2,
        connector: connector(args, &args.cert, &args.key, alpn)?,
        measure_start,
        deadline: measure_start + Duration::from_secs_f64(args.duration),
        stop: AtomicBool::new(false),
        ops_started: AtomicU64::new(0),
        max_ops: args.max_ops,
        op_timeout: Duration::from_secs_f64(args.op_timeout),
        timeline_ms: args.timeline_ms,
        stopped: Notify::new(),
    }))
}

async fn connect(ctx: &Ctx, connector: &TlsConnector) -> Result<TlsStream<TcpStream>, Outcome> {
    let tcp = TcpStream::connect(ctx.addr).await.map_err(|e| Outcome::Error(error_label("connect", &e)))?;
    let _ = tcp.set_nodelay(true);
    connector.connect(ctx.name.clone(), tcp).await.map_err(|e| classify("handshake", &e))
}

/// New connection, full handshake, one HTTP/1.1 request, response read, connection dropped.
async fn one_shot(ctx: &Ctx, connector: &TlsConnector) -> Outcome {
    let mut tls = match connect(ctx, connector).await {
        Ok(t) => t,
        Err(o) => return o,
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bench-loadgen\r\nAccept: application/json\r\n\r\n",
        ctx.path, ctx.authority
    );
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        return classify("write", &e);
    }
    match read_http1_response(&mut tls).await {
        Ok((200, bytes)) => Outcome::Ok { bytes },
        Ok((s, _)) => Outcome::Status(s),
        Err(e) => classify("read", &e),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 response (Content-Length, chunked or until EOF); returns the status
/// and the body size.
async fn read_http1_response<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u16, u64)> {
    use std::io::{Error, ErrorKind};
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = vec![0u8; 16384];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 65536 {
            return Err(Error::new(ErrorKind::InvalidData, "response head too long"));
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "EOF before the response head"));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "bad status line"))?;
    let content_length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut have = (buf.len() - head_end) as u64;
    if let Some(cl) = content_length {
        while have < cl {
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "EOF in the body"));
            }
            have += n as u64;
        }
        Ok((status, cl))
    } else if chunked {
        // Small bodies only (handshake mode): the last-chunk marker ends the body.
        let mut tail: Vec<u8> = buf[head_end..].to_vec();
        while !tail.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "EOF in a chunked body"));
            }
            tail.extend_from_slice(&tmp[..n]);
            have += n as u64;
        }
        Ok((status, have))
    } else {
        loop {
            match s.read(&mut tmp).await {
                Ok(0) => break,
                Ok(n) => have += n as u64,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok((status, have))
    }
}

async fn handshake_worker(ctx: Arc<Ctx>) -> Stats {
    let mut st = Stats::default();
    while ctx.take_op() {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(ctx.op_timeout, one_shot(&ctx, &ctx.connector)).await {
            Ok(o) => o,
            Err(_) => Outcome::Error("timeout".into()),
        };
        st.connections += 1;
        let failed = matches!(outcome, Outcome::Error(_));
        st.record(&ctx, start, Instant::now(), outcome);
        if failed {
            // Do not spin on a refused port.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    st
}

/// An HTTP/1.1 or HTTP/2 client connection.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn open(ctx: &Ctx) -> Result<Self, Outcome> {
        let tls = connect(ctx, &ctx.connector).await?;
        let io = TokioIo::new(tls);
        if ctx.http2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| Outcome::Error(error_label("h2 handshake", &e)))?;
            tokio::spawn(conn);
            Ok(Self::H2(s))
        } else {
            let (s, conn) =
                http1::handshake(io).await.map_err(|e| Outcome::Error(error_label("h1 handshake", &e)))?;
            tokio::spawn(conn);
            Ok(Self::H1(s))
        }
    }

    /// One request, body read to the end. Err(outcome) means the connection is unusable.
    async fn request(&mut self, ctx: &Ctx) -> Result<Outcome, Outcome> {
        let resp = match self {
            Self::H1(s) => {
                s.ready().await.map_err(|e| classify("h1 ready", &e))?;
                let req = http::Request::get(ctx.path.as_str())
                    .header(http::header::HOST, ctx.authority.as_str())
                    .header(http::header::USER_AGENT, "bench-loadgen")
                    .body(Empty::new())
                    .expect("request");
                s.send_request(req).await
            }
            Self::H2(s) => {
                s.ready().await.map_err(|e| classify("h2 ready", &e))?;
                let uri = format!("https://{}{}", ctx.authority, ctx.path);
                let req = http::Request::get(uri)
                    .header(http::header::USER_AGENT, "bench-loadgen")
                    .body(Empty::new())
                    .expect("request");
                s.send_request(req).await
            }
        }
        .map_err(|e| classify("request", &e))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| classify("body", &e))?;
            if let Some(d) = frame.data_ref() {
                bytes += d.len() as u64;
            }
        }
        Ok(if status == 200 { Outcome::Ok { bytes } } else { Outcome::Status(status) })
    }
}

/// Opens `n` connections before the clock starts, so that the warm-up and the measured
/// window are not spent in connection set-up (128 handshakes, and HAProxy's upstream ones).
async fn preopen(ctx: &Arc<Ctx>, n: usize) -> Vec<Option<Sender>> {
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            tokio::time::timeout(ctx.op_timeout, Sender::open(&ctx)).await.ok()?.ok()
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.ok().flatten());
    }
    out
}

async fn keepalive_worker(ctx: Arc<Ctx>, mut preopened: Option<Sender>) -> Stats {
    let mut st = Stats::default();
    'connect: while !ctx.stopping() {
        let start = Instant::now();
        let opened = match preopened.take() {
            Some(s) => Ok(Ok(s)),
            None => tokio::time::timeout(ctx.op_timeout, Sender::open(&ctx)).await,
        };
        let mut sender = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(o)) => {
                st.record(&ctx, start, Instant::now(), o);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(_) => {
                st.record(&ctx, start, Instant::now(), Outcome::Error("connect timeout".into()));
                continue;
            }
        };
        st.connections += 1;
        while ctx.take_op() {
            let start = Instant::now();
            match tokio::time::timeout(ctx.op_timeout, sender.request(&ctx)).await {
                Ok(Ok(o)) => st.record(&ctx, start, Instant::now(), o),
                Ok(Err(o)) => {
                    st.record(&ctx, start, Instant::now(), o);
                    continue 'connect;
                }
                Err(_) => {
                    st.record(&ctx, start, Instant::now(), Outcome::Error("timeout".into()));
                    continue 'connect;
                }
            }
        }
    }
    st
}

/// Probe results: (ms since the window started, "ok" | "rejected" | "error").
type Probes = Vec<(f64, &'static str)>;

async fn probe_task(ctx: Arc<Ctx>, connector: TlsConnector, interval: Duration) -> Probes {
    let mut out = Vec::new();
    tokio::time::sleep_until(ctx.measure_start.into()).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !ctx.stopping() {
        tick.tick().await;
        let start = Instant::now();
        let o = match tokio::time::timeout(ctx.op_timeout, one_shot(&ctx, &connector)).await {
            Ok(o) => o,
            Err(_) => Outcome::Error("timeout".into()),
        };
        let kind = match o {
            Outcome::Ok { .. } => "ok",
            Outcome::Rejected(_) => "rejected",
            _ => "error",
        };
        out.push(((start - ctx.measure_start).as_secs_f64() * 1e3, kind));
    }
    out
}

struct Trigger {
    at_ms: f64,
    unix_s: f64,
    cmd_ms: f64,
    exit: Option<i32>,
}

async fn trigger_task(ctx: Arc<Ctx>, at: f64, cmd: String) -> Result<Trigger> {
    tokio::time::sleep_until((ctx.measure_start + Duration::from_secs_f64(at)).into()).await;
    let unix_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let t = Instant::now();
    let status = tokio::process::Command::new("sh").arg("-c").arg(&cmd).status().await?;
    Ok(Trigger {
        at_ms: (t - ctx.measure_start).as_secs_f64() * 1e3,
        unix_s,
        cmd_ms: t.elapsed().as_secs_f64() * 1e3,
        exit: status.code(),
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn aux_pids(args: &Args) -> Result<Vec<(String, u32)>> {
    args.aux_pids
        .iter()
        .map(|s| {
            let (n, p) = s.split_once('=').with_context(|| format!("--aux-pid {s:?}: expected NAME=PID"))?;
            Ok((n.to_string(), p.parse()?))
        })
        .collect()
}

fn num(v: f64) -> Value {
    if v.is_finite() { json!((v * 1000.0).round() / 1000.0) } else { Value::Null }
}

async fn run_load(args: Args) -> Result<Value> {
    let mut preopened = Vec::new();
    let mut preopen_s = 0.0;
    if args.mode == "keepalive" {
        let t = Instant::now();
        let ctx = make_ctx(&args, t)?;
        preopened = preopen(&ctx, args.conns.max(1)).await;
        preopen_s = t.elapsed().as_secs_f64();
    }
    let t0 = Instant::now();
    let ctx = make_ctx(&args, t0)?;
    let aux = aux_pids(&args)?;
    let pids = args.proxy_pids.clone();

    // CPU samples at the window's start and end.
    let sampler = {
        let ctx = ctx.clone();
        let aux = aux.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(ctx.measure_start.into()).await;
            let sample = |pids: &[u32], aux: &[(String, u32)]| {
                (
                    procfs::cpu_sum(pids),
                    procfs::self_cpu_seconds(),
                    aux.iter().map(|(_, p)| procfs::cpu_seconds(*p)).collect::<Vec<_>>(),
                )
            };
            let a = sample(&pids, &aux);
            let a_t = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep_until(ctx.deadline.into()) => {},
                _ = ctx.stopped.notified() => {},
            }
            let b = sample(&pids, &aux);
            (a, a_t, b, Instant::now())
        })
    };

    let mut workers = Vec::new();
    let mut preopened = preopened.into_iter();
    for _ in 0..args.conns.max(1) {
        let ctx = ctx.clone();
        workers.push(if args.mode == "handshake" {
            tokio::spawn(handshake_worker(ctx))
        } else {
            tokio::spawn(keepalive_worker(ctx, preopened.next().flatten()))
        });
    }
    let probe = match (&args.probe_cert, &args.probe_key) {
        (Some(c), Some(k)) => {
            let conn = connector(&args, c, k, &[b"http/1.1"])?;
            Some(tokio::spawn(probe_task(ctx.clone(), conn, Duration::from_millis(args.probe_interval_ms))))
        }
        _ => None,
    };
    let trigger = match (args.trigger_at, &args.trigger) {
        (Some(at), Some(cmd)) => Some(tokio::spawn(trigger_task(ctx.clone(), at, cmd.clone()))),
        _ => None,
    };

    let mut st = Stats::default();
    for w in workers {
        st.merge(w.await?);
    }
    let ((cpu_a, self_a, aux_a), a_t, (cpu_b, self_b, aux_b), b_t) = sampler.await?;
    let window = (b_t - a_t).as_secs_f64().max(1e-9);
    st.lat_us.sort_unstable();
    let good = st.ok + st.rejected;
    let failed: u64 = st.errors.values().sum::<u64>() + st.statuses.values().sum::<u64>();
    let proxy_cpu = match (cpu_a, cpu_b) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let self_cpu = match (self_a, self_b) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut aux_json = serde_json::Map::new();
    for (i, (name, _)) in aux.iter().enumerate() {
        if let (Some(a), Some(b)) = (aux_a[i], aux_b[i]) {
            aux_json.insert(name.clone(), json!({"cpu_s": num(b - a), "cpu_util": num((b - a) / window)}));
        }
    }
    let mut report = json!({
        "label": args.label,
        "mode": args.mode,
        "tls": args.tls,
        "http": if ctx.http2 { 2 } else { 1 },
        "conns": args.conns,
        "window_s": num(window),
        "ok": st.ok,
        "rejected": st.rejected,
        "failed": failed,
        "alerts": st.alerts,
        "errors": st.errors,
        "statuses": st.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "connections": st.connections,
        "preopen_s": num(preopen_s),
        "ok_per_s": num(st.ok as f64 / window),
        "rejected_per_s": num(st.rejected as f64 / window),
        "ops_per_s": num(good as f64 / window),
        "p50_ms": num(percentile(&st.lat_us, 50.0)),
        "p90_ms": num(percentile(&st.lat_us, 90.0)),
        "p99_ms": num(percentile(&st.lat_us, 99.0)),
        "max_ms": num(st.lat_us.last().map_or(f64::NAN, |v| *v as f64 / 1000.0)),
        "bytes": st.bytes,
        "mib_per_s": num(st.bytes as f64 / window / 1048576.0),
        "proxy_cpu_s": proxy_cpu.map(num),
        "proxy_cpu_util": proxy_cpu.map(|c| num(c / window)),
        "proxy_cpu_us_per_op": proxy_cpu.map(|c| num(if good > 0 { c * 1e6 / good as f64 } else { f64::NAN })),
        "loadgen_cpu_util": self_cpu.map(|c| num(c / window)),
        "aux": aux_json,
        "proxy_rss_kb": procfs::rss_sum_kb(&pids),
        "proxy_hwm_kb": pids.iter().map(|p| procfs::status_kb(*p, "VmHWM")).sum::<Option<u64>>(),
    });
    if ctx.timeline_ms > 0 {
        report["timeline_ms"] = json!(ctx.timeline_ms);
        report["timeline_ok"] = json!(st.tl_ok);
        report["timeline_failed"] = json!(st.tl_err);
    }
    if let Some(t) = trigger {
        let t = t.await??;
        report["trigger"] = json!({"at_ms": num(t.at_ms), "unix_s": t.unix_s, "cmd_ms": num(t.cmd_ms), "exit": t.exit});
        if let Some(p) = probe {
            let probes = p.await?;
            report["probe"] = probe_summary(&probes, t.at_ms);
        }
    } else if let Some(p) = probe {
        let probes = p.await?;
        report["probe"] = probe_summary(&probes, 0.0);
    }
    Ok(report)
}

/// When the probe certificate started being refused for good after the trigger.
fn probe_summary(probes: &Probes, trigger_ms: f64) -> Value {
    let before: Vec<_> = probes.iter().filter(|(t, _)| *t < trigger_ms).collect();
    let after: Vec<_> = probes.iter().filter(|(t, _)| *t >= trigger_ms).collect();
    // Start of the final run of rejections.
    let mut effective: Option<f64> = None;
    for (t, k) in after.iter().rev() {
        if *k == "rejected" {
            effective = Some(*t);
        } else {
            break;
        }
    }
    let first_rejected = after.iter().find(|(_, k)| *k == "rejected").map(|(t, _)| *t);
    let ok_after_first_reject = match first_rejected {
        Some(f) => after.iter().filter(|(t, k)| *t > f && *k == "ok").count(),
        None => 0,
    };
    json!({
        "probes": probes.len(),
        "before_trigger": {
            "ok": before.iter().filter(|(_, k)| *k == "ok").count(),
            "rejected": before.iter().filter(|(_, k)| *k == "rejected").count(),
            "error": before.iter().filter(|(_, k)| *k == "error").count(),
        },
        "after_trigger": {
            "ok": after.iter().filter(|(_, k)| *k == "ok").count(),
            "rejected": after.iter().filter(|(_, k)| *k == "rejected").count(),
            "error": after.iter().filter(|(_, k)| *k == "error").count(),
        },
        "first_rejected_after_trigger_ms": first_rejected.map(|t| num(t - trigger_ms)),
        "effective_after_trigger_ms": effective.map(|t| num(t - trigger_ms)),
        "ok_after_first_rejection": ok_after_first_reject,
    })
}

async fn run_idle(args: Args) -> Result<Value> {
    // No warm-up window: the proxy was warmed by the caller; the deadline bounds opening.
    let mut a = args.clone();
    a.warmup = 0.0;
    a.duration = 600.0;
    let ctx = make_ctx(&a, Instant::now())?;
    let pids = args.proxy_pids.clone();
    let aux = aux_pids(&args)?;

    // A few requests on fresh connections so that lazily allocated state exists before
    // the baseline.
    for _ in 0..20 {
        let _ = one_shot(&ctx, &ctx.connector).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = procfs::rss_sum_kb(&pids);
    let aux_before: Vec<Option<u64>> = aux.iter().map(|(_, p)| procfs::status_kb(*p, "VmRSS")).collect();

    let t_open = Instant::now();
    let sem = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
    let held: Arc<Mutex<Vec<Sender>>> = Arc::new(Mutex::new(Vec::with_capacity(args.conns)));
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let permit = sem.clone().acquire_owned().await?;
        let (ctx, held, failures) = (ctx.clone(), held.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(ctx.op_timeout, async {
                let mut s = Sender::open(&ctx).await?;
                match s.request(&ctx).await? {
                    Outcome::Ok { .. } => Ok(s),
                    o => Err(o),
                }
            })
            .await;
            match r {
                Ok(Ok(s)) => held.lock().await.push(s),
                Ok(Err(o)) => {
                    let label = match o {
                        Outcome::Rejected(a) => format!("rejected: {a}"),
                        Outcome::Status(s) => format!("status {s}"),
                        Outcome::Error(e) => e,
                        Outcome::Ok { .. } => unreachable!(),
                    };
                    *failures.lock().await.entry(label).or_default() += 1;
                }
                Err(_) => *failures.lock().await.entry("timeout".into()).or_default() += 1,
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let open_s = t_open.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = held.lock().await.len();
    let rss_after = procfs::rss_sum_kb(&pids);
    let aux_after: Vec<Option<u64>> = aux.iter().map(|(_, p)| procfs::status_kb(*p, "VmRSS")).collect();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_hold)).await;
    let rss_end = procfs::rss_sum_kb(&pids);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if open > 0 => Some((a as f64 - b as f64) * 1024.0 / open as f64),
        _ => None,
    };
    let mut aux_json = serde_json::Map::new();
    for (i, (name, _)) in aux.iter().enumerate() {
        aux_json.insert(name.clone(), json!({"rss_before_kb": aux_before[i], "rss_after_kb": aux_after[i]}));
    }
    let report = json!({
        "label": args.label,
        "mode": "idle",
        "tls": args.tls,
        "http": if ctx.http2 { 2 } else { 1 },
        "requested": args.conns,
        "open": open,
        "failures": *failures.lock().await,
        "open_s": num(open_s),
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_end_kb": rss_end,
        "bytes_per_conn": per_conn.map(|v| v.round()),
        "proxy_hwm_kb": pids.iter().map(|p| procfs::status_kb(*p, "VmHWM")).sum::<Option<u64>>(),
        "aux": aux_json,
    });
    drop(held);
    Ok(report)
}
