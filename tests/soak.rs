//! Soak: mixed traffic from concurrent clients through the real binary while every file it
//! reads changes under it. Bounded in time: 30 s in the normal suite, `KCP_SOAK_SECS`
//! seconds otherwise (`bench/soak.sh` runs it for ten minutes).
//!
//! Clients (each a task, each operation bounded): alice over fresh HTTP/1.1 and HTTP/2
//! connections, over one keep-alive HTTP/2 connection, in two watches and an exec tunnel held
//! for the whole run, and in exec tunnels opened and closed; a bearer-token client without a
//! certificate; bob, whose certificate is revoked throughout; three victims, revoked and
//! un-revoked in turn, each with fresh requests and with a watch or tunnel held open; and
//! clients whose certificates are issued during the run.
//!
//! Meanwhile the driver replaces `crl.pem` by rename with increasing CRL numbers (revoking a
//! victim, then un-revoking it), the serving certificate and the front-proxy client
//! certificate (combined cert+key files, so one rename each), and waits after each change
//! until the proxy demonstrably uses it.
//!
//! Every outcome is classified. A victim's refusal or cut connection is expected only while
//! that victim is, or is becoming, revoked; everything else must succeed, and bob must be
//! refused every time. At the end: no unexpected outcome, no failed reload, the proxy's RSS
//! flat after the warm-up, its file descriptors and open connections back where they were.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use http_body_util::BodyExt;
use kube_crl_proxy_testkit::pki::{Issued, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Length of the run in the normal suite.
const DEFAULT_SECS: u64 = 30;
const VICTIMS: usize = 3;
/// Bound for one client operation (a request, a watch event, an echo): detects hangs.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for a changed file to take effect, including cutting a revoked victim's connections.
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);
/// How long the driver holds each state of the files before the next change.
const HOLD: Duration = Duration::from_millis(800);
/// Pause between a client's operations: fifteen clients share two cores with the proxy.
const PACE: Duration = Duration::from_millis(25);
/// How long a victim holds a watch or tunnel open before replacing it.
const LIVE_FOR: Duration = Duration::from_secs(3);
/// Upper bound on any loop's iterations (time is the real bound).
const MAX_OPS: u64 = 1_000_000;
const FRONT_PROXY_NAMES: [&str; 2] = ["front-proxy-client", "front-proxy-client-b"];
const REVOKED: &str = "remote error: tls: revoked certificate";
const WATCH: &str = "/api/v1/namespaces/default/pods?watch=1";
/// Growth of the proxy's RSS (median of the third after the warm-up → median of the last
/// third) that still counts as flat. Measured on the 2-core machine (debug build): about
/// 22 MiB during the warm-up, then within 0.2 MiB for 30 s and for 150 s. The noise is the
/// allocator's: glibc gives threads their own arenas (tokio's blocking threads, which run
/// every reload, come and go), and memory freed into an arena is kept for reuse, in steps of
/// up to a MiB or so. 6 MiB is thirty times the drift seen and a quarter of the footprint.
/// With about 110 new connections a second (debug build), a leak of some 4 KiB per
/// connection exceeds it in the default 30 s, one of some 200 bytes in the ten-minute
/// `bench/soak.sh` run (the medians compared are 13 s and 270 s apart).
const RSS_SLACK_KIB: u64 = 6 * 1024;
/// More open descriptors after the traffic than before it that still count as none leaked:
/// the current upstream pools' connections (17 before and 18 after were seen), not one per
/// client connection or per reload (there are thousands and dozens of those).
const FD_SLACK: usize = 8;

fn soak_duration() -> Duration {
    let secs = match std::env::var("KCP_SOAK_SECS") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| panic!("KCP_SOAK_SECS={v:?}: a number of seconds")),
        Err(_) => DEFAULT_SECS,
    };
    Duration::from_secs(secs.clamp(10, 24 * 3600))
}

// ---------------------------------------------------------------------------
// The state of the CRL, as the driver publishes it, and the tally of outcomes

/// Which victim the CRL file revokes. `generation` changes with every new file; `enforced`
/// turns true once the driver has seen the proxy apply it (the newly revoked victim refused
/// with its live connections gone, the previous one served again).
#[derive(Clone, Copy, Debug, Default)]
struct CrlView {
    generation: u64,
    revoked: Option<usize>,
    /// The victim revoked by the previous file (still refused until this one is applied).
    previous: Option<usize>,
    enforced: bool,
    /// How often each victim has been revoked so far.
    revocations: [u64; VICTIMS],
    /// When the driver began writing this file.
    changed_at: Option<Instant>,
}

impl CrlView {
    /// Nothing changed between `self` (before an operation) and `later` (after it), and the
    /// proxy had applied the file.
    fn stable_until(&self, later: &CrlView) -> bool {
        self.generation == later.generation && self.enforced
    }

    /// Victim `v` was revoked, or becoming revoked or un-revoked, at some time between `self`
    /// and `later`.
    fn involves(&self, later: &CrlView, v: usize) -> bool {
        let in_flux = |s: &CrlView| s.revoked == Some(v) || (!s.enforced && s.previous == Some(v));
        in_flux(self) || in_flux(later) || self.revocations[v] != later.revocations[v]
    }

    /// Victim `v` was revoked at some time between `self` and `later`.
    fn revoked_between(&self, later: &CrlView, v: usize) -> bool {
        self.revoked == Some(v) || later.revoked == Some(v) || self.revocations[v] != later.revocations[v]
    }
}

#[derive(Default)]
struct Board {
    crl: Mutex<CrlView>,
    stop: AtomicBool,
    /// Open watches and tunnels of each victim.
    live: [AtomicUsize; VICTIMS],
    counts: Mutex<BTreeMap<String, u64>>,
    unexpected: Mutex<Vec<String>>,
    unexpected_total: AtomicU64,
}

impl Board {
    fn view(&self) -> CrlView {
        *self.crl.lock().unwrap()
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, what: impl Into<String>) {
        *self.counts.lock().unwrap().entry(what.into()).or_default() += 1;
    }

    fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    fn unexpected(&self, what: String) {
        self.unexpected_total.fetch_add(1, Ordering::Relaxed);
        let mut list = self.unexpected.lock().unwrap();
        if list.len() < 40 {
            list.push(what);
        }
    }

    /// Judges an outcome that must be a success.
    fn must_succeed(&self, who: &str, ok: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.count(ok),
            Err(e) => self.unexpected(format!("{who}: {e}")),
        }
    }

    /// Judges a victim's request (or the opening of its watch or tunnel) made between the views
    /// `before` and `after`.
    fn judge_victim(&self, v: usize, before: CrlView, after: CrlView, result: Result<(), String>, what: &str) {
        let refused = matches!(&result, Err(e) if e == REVOKED);
        if before.stable_until(&after) {
            match (before.revoked == Some(v), &result) {
                (true, Err(_)) if refused => self.count("victim refused while revoked"),
                (false, Ok(())) => self.count("victim served while not revoked"),
                (revoked, _) => self.unexpected(format!(
                    "victim-{v} {what} while {} (CRL generation {}): {result:?}",
                    if revoked { "revoked" } else { "not revoked" },
                    before.generation
                )),
            }
        } else if before.involves(&after, v) {
            // Applied at some point during this operation: either outcome, or a request on a
            // connection cut by the revocation.
            match &result {
                Ok(()) => self.count("victim served while its CRL changed"),
                Err(_) if refused => self.count("victim refused while its CRL changed"),
                Err(_) => self.count("victim request cut while its CRL changed"),
            }
        } else {
            self.must_succeed(&format!("victim-{v} {what} (not revoked)"), "victim served while not revoked", result);
        }
    }
}

// ---------------------------------------------------------------------------
// The run's set-up, shared by every client

struct Soak {
    addr: SocketAddr,
    pki: Pki,
    victims: Vec<Issued>,
    board: Board,
}

impl Soak {
    fn tls(&self, user: Option<&Issued>, http: Http) -> rustls::ClientConfig {
        client_tls(&self.pki.root_der(), user.map(|u| (u, &self.pki.users_ca)), http)
    }

    /// A SelfSubjectReview on a new connection: Ok(username), or the error as kubectl says it.
    async fn whoami(&self, user: Option<&Issued>, http: Http, token: bool) -> Result<String, String> {
        let mut req = whoami_request();
        if token {
            req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
        }
        let reply = timeout(OP_TIMEOUT, request(self.addr, self.tls(user, http), http, req))
            .await
            .map_err(|_| format!("no answer within {OP_TIMEOUT:?}"))??;
        if !reply.status.is_success() {
            return Err(format!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body)));
        }
        let name = reply.json()["status"]["userInfo"]["username"].as_str().unwrap_or_default().to_string();
        Ok(name)
    }
}

fn expect_user(result: Result<String, String>, want: &str) -> Result<(), String> {
    match result {
        Ok(name) if name == want => Ok(()),
        Ok(name) => Err(format!("served as {name:?} instead of {want:?}")),
        Err(e) => Err(e),
    }
}

fn http_of(i: u64) -> Http {
    if i.is_multiple_of(2) { Http::H1 } else { Http::H2 }
}

// ---------------------------------------------------------------------------
// Clients

/// alice (never revoked), or the bearer-token client without a certificate, over fresh
/// connections: always served, as themselves.
async fn fresh_client(s: Arc<Soak>, token: bool) {
    let (user, want, ok) =
        if token { (None, "token-user", "token request") } else { (Some(&s.pki.alice), "alice", "alice request") };
    for i in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let http = http_of(i);
        let result = expect_user(s.whoami(user, http, token).await, want);
        s.board.must_succeed(&format!("{want} over a fresh {http:?} connection"), ok, result);
        tokio::time::sleep(PACE).await;
    }
}

/// alice on one HTTP/2 connection, 50 requests before reconnecting.
async fn alice_keepalive(s: Arc<Soak>) {
    for _ in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let result = async {
            let stream = connect(s.addr, s.tls(Some(&s.pki.alice), Http::H2)).await.map_err(|e| e.to_string())?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(conn);
            for _ in 0..50 {
                if !s.board.running() {
                    break;
                }
                let req = get("/_sim/headers");
                let resp = timeout(OP_TIMEOUT, send.send_request(req)).await.map_err(|_| "no response")?;
                let resp = resp.map_err(|e| format!("request on the kept-alive connection: {e}"))?;
                let body = timeout(OP_TIMEOUT, resp.into_body().collect()).await.map_err(|_| "no body")?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body.map_err(|e| e.to_string())?.to_bytes()).map_err(|e| e.to_string())?;
                if v["auth"] != "requestheader" || v["user"]["username"] != "alice" {
                    return Err(format!("wrong identity upstream: {v}"));
                }
                s.board.count("alice keep-alive request");
                tokio::time::sleep(PACE).await;
            }
            driver.abort();
            Ok(())
        }
        .await;
        s.board.must_succeed("alice keep-alive HTTP/2", "alice keep-alive connection", result);
    }
}

/// A watch as `user`, read event by event until `keep_going` says stop; Ok(events) when
/// stopped, Err when the stream failed or ended.
async fn hold_watch(s: &Soak, user: &Issued, http: Http, keep_going: impl Fn() -> bool) -> Result<u64, String> {
    let resp = try_open(s.addr, s.tls(Some(user), http), http, stream_request(Method::GET, WATCH, empty())).await?;
    if resp.status() != 200 {
        return Err(format!("watch answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events = 0;
    for _ in 0..MAX_OPS {
        if !keep_going() {
            return Ok(events);
        }
        let frame = timeout(OP_TIMEOUT, body.frame()).await.map_err(|_| format!("no event within {OP_TIMEOUT:?}"))?;
        let data = match frame {
            None => return Err(format!("watch ended after {events} events")),
            Some(Err(e)) => return Err(format!("watch failed after {events} events: {e}")),
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| format!("watch event: {e}"))?;
            let want = if events == 0 { "ADDED" } else { "MODIFIED" };
            if v["type"] != want {
                return Err(format!("event {events} is {}", v["type"]));
            }
            events += 1;
            s.board.count("watch event");
        }
    }
    Ok(events)
}

/// One exec tunnel as `user`: echo rounds of 1 KiB until `keep_going` says stop.
async fn hold_tunnel(s: &Soak, user: Option<&Issued>, keep_going: impl Fn() -> bool) -> Result<u64, String> {
    let (mut t, _) = timeout(OP_TIMEOUT, try_upgrade(s.addr, s.tls(user, Http::H1), &spdy_request("")))
        .await
        .map_err(|_| "no 101 in time".to_string())??;
    let mut rounds = 0u64;
    for round in 0..MAX_OPS {
        if !keep_going() {
            return Ok(rounds);
        }
        let sent: Vec<u8> = (0..1024u64).map(|i| (i ^ round.wrapping_mul(0x9e)) as u8).collect();
        let mut got = vec![0u8; sent.len()];
        let echo = async {
            t.write_all(&sent).await?;
            t.flush().await?;
            t.read_exact(&mut got).await
        };
        match timeout(OP_TIMEOUT, echo).await {
            Err(_) => return Err(format!("no echo within {OP_TIMEOUT:?}")),
            Ok(Err(e)) => return Err(format!("tunnel broke after {rounds} rounds: {e}")),
            Ok(Ok(_)) if got != sent => return Err("the echo differs".into()),
            Ok(Ok(_)) => {}
        }
        rounds += 1;
        s.board.count("tunnel echo");
        tokio::time::sleep(PACE * 4).await;
    }
    Ok(rounds)
}

/// alice's watch, held for the whole run.
async fn alice_watch(s: Arc<Soak>, http: Http) {
    let result = hold_watch(&s, &s.pki.alice, http, || s.board.running()).await.map(drop);
    s.board.must_succeed(&format!("alice's watch over {http:?}"), "alice watch held", result);
}

/// alice's exec tunnel, held for the whole run.
async fn alice_tunnel(s: Arc<Soak>) {
    let result = hold_tunnel(&s, Some(&s.pki.alice), || s.board.running()).await.map(drop);
    s.board.must_succeed("alice's long tunnel", "alice tunnel held", result);
}

/// alice's exec tunnels, three rounds each, opened and closed.
async fn alice_tunnels(s: Arc<Soak>) {
    for _ in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let rounds = AtomicU64::new(0);
        let result = hold_tunnel(&s, Some(&s.pki.alice), || rounds.fetch_add(1, Ordering::Relaxed) < 3).await;
        s.board.must_succeed("alice's short tunnel", "alice short tunnel", result.map(drop));
    }
}

/// bob, revoked throughout: every handshake must be refused with `certificate_revoked`.
async fn bob(s: Arc<Soak>) {
    for i in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let http = http_of(i);
        match s.whoami(Some(&s.pki.bob), http, false).await {
            Err(e) if e == REVOKED => s.board.count("bob refused"),
            other => s.board.unexpected(format!("bob (revoked) over {http:?}: {other:?}")),
        }
        tokio::time::sleep(PACE).await;
    }
}

/// A victim's requests over fresh connections.
async fn victim_fresh(s: Arc<Soak>, v: usize) {
    let name = format!("victim-{v}");
    for i in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let before = s.board.view();
        let result = expect_user(s.whoami(Some(&s.victims[v]), http_of(i), false).await, &name);
        let after = s.board.view();
        s.board.judge_victim(v, before, after, result, "request");
        tokio::time::sleep(PACE).await;
    }
}

/// Counts a victim's open watch or tunnel while it lives.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A victim's watch (HTTP/1.1, HTTP/2) or exec tunnel, in turn, each held for [`LIVE_FOR`]
/// unless the victim's revocation cuts it.
async fn victim_live(s: Arc<Soak>, v: usize) {
    for i in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let user = &s.victims[v];
        let before = s.board.view();
        let opened = std::sync::OnceLock::<(Live<'_>, CrlView)>::new();
        let survived = AtomicBool::new(false);
        let started = Instant::now();
        // Called between events or echo rounds once the connection is open (the first call
        // marks it live). Held for LIVE_FOR, or, once the victim is being revoked, until
        // the proxy cuts it; still open PROPAGATION_BOUND after the new CRL: a failure.
        let keep_going = || {
            opened.get_or_init(|| (Live::new(&s.board.live[v]), s.board.view()));
            let now = s.board.view();
            if !s.board.running() {
                return false;
            }
            if now.revoked == Some(v) {
                let late = now.changed_at.is_some_and(|t| t.elapsed() > PROPAGATION_BOUND);
                survived.store(late, Ordering::Relaxed);
                return !late;
            }
            started.elapsed() < LIVE_FOR
        };
        let (kind, result) = match i % 3 {
            0 => ("watch over H1", hold_watch(&s, user, Http::H1, keep_going).await),
            1 => ("watch over H2", hold_watch(&s, user, Http::H2, keep_going).await),
            _ => ("tunnel", hold_tunnel(&s, Some(user), keep_going).await),
        };
        let after = s.board.view();
        match (opened.get(), result) {
            // Never opened: judged like a request.
            (None, result) => s.board.judge_victim(v, before, after, result.map(drop), kind),
            (Some(_), Ok(_)) if survived.load(Ordering::Relaxed) => s.board.unexpected(format!(
                "victim-{v} {kind} still open {PROPAGATION_BOUND:?} after the CRL revoking it (generation {})",
                after.generation
            )),
            (Some(_), Ok(_)) => s.board.count("victim live connection held"),
            (Some((_, at_open)), Err(e)) => {
                if at_open.revoked_between(&after, v) {
                    s.board.count("victim live connection cut by its revocation");
                } else {
                    s.board.unexpected(format!("victim-{v} {kind} (not revoked) ended: {e}"));
                }
            }
        }
        drop(opened);
        tokio::time::sleep(if s.board.view().revoked == Some(v) { PACE * 8 } else { PACE }).await;
    }
}

/// New client certificates, issued during the run and used at once.
async fn new_clients(s: Arc<Soak>) {
    for n in 0..MAX_OPS {
        if !s.board.running() {
            break;
        }
        let name = format!("new-user-{n}");
        let cert = s.pki.users_ca.issue(&Spec::client(&name, &["dev"]));
        for http in [Http::H1, Http::H2] {
            let result = expect_user(s.whoami(Some(&cert), http, false).await, &name);
            s.board.must_succeed(&format!("{name} over {http:?}"), "new client request", result);
        }
        tokio::time::sleep(PACE * 8).await;
    }
}

// ---------------------------------------------------------------------------
// The driver: files replaced under the proxy, each change confirmed

/// Polls `check` until it returns Ok (bounded by [`PROPAGATION_BOUND`]); returns how long it took.
async fn until(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    for _ in 0..MAX_OPS {
        match check().await {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last = e,
        }
        if start.elapsed() > PROPAGATION_BOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what}: not within {PROPAGATION_BOUND:?}; last: {last}"))
}

struct Files {
    serving: PathBuf,
    front_proxy: PathBuf,
}

/// The CRL of step `cycle`: even steps revoke a victim in turn, odd steps revoke none.
async fn change_crl(s: &Soak, cycle: u64, number: u64) -> Result<Duration, String> {
    let victim = cycle.is_multiple_of(2).then_some((cycle / 2) as usize % VICTIMS);
    let previous = {
        let mut crl = s.board.crl.lock().unwrap();
        let previous = crl.revoked;
        crl.generation += 1;
        crl.previous = previous;
        crl.revoked = victim;
        crl.enforced = false;
        crl.changed_at = Some(Instant::now());
        if let Some(v) = victim {
            crl.revocations[v] += 1;
        }
        previous
    };
    let mut revoked: Vec<&[u8]> = vec![&s.pki.bob.serial];
    revoked.extend(victim.map(|v| s.victims[v].serial.as_slice()));
    s.pki.replace_crls(&revoked, number);

    let took = until(&format!("CRL {number}"), async || {
        if let Some(v) = victim {
            match s.whoami(Some(&s.victims[v]), Http::H1, false).await {
                Err(e) if e == REVOKED => {}
                other => return Err(format!("victim-{v} not refused yet: {other:?}")),
            }
            let live = s.board.live[v].load(Ordering::SeqCst);
            if live > 0 {
                return Err(format!("victim-{v} still has {live} open watch or tunnel"));
            }
        }
        if let Some(u) = previous {
            expect_user(s.whoami(Some(&s.victims[u]), Http::H1, false).await, &format!("victim-{u}"))
                .map_err(|e| format!("victim-{u} not served again yet: {e}"))?;
        }
        Ok(())
    })
    .await?;
    s.board.crl.lock().unwrap().enforced = true;
    Ok(took)
}

/// A new serving certificate; done when a new connection is served with it.
async fn rotate_serving(s: &Soak, files: &Files) -> Result<Duration, String> {
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let cert = s.pki.root.issue(&Spec::server("kube-apiserver", &["localhost"], &ips));
    replace_by_rename(&files.serving, format!("{}{}", cert.cert_pem, cert.key_pem));
    until("new serving certificate", async || {
        let tls = s.tls(Some(&s.pki.alice), Http::H2);
        let stream = timeout(OP_TIMEOUT, connect(s.addr, tls)).await.map_err(|_| "no handshake")?;
        let stream = stream.map_err(|e| e.to_string())?;
        match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) if *leaf == cert.der => Ok(()),
            _ => Err("still the old serving certificate".into()),
        }
    })
    .await
}

/// A new front-proxy client certificate (its CN alternating between two allowed names);
/// done when the stand-in sees it on a new request.
async fn rotate_front_proxy(s: &Soak, files: &Files, n: u64) -> Result<Duration, String> {
    let name = FRONT_PROXY_NAMES[(n % 2) as usize];
    let cert = s.pki.front_proxy_ca.issue(&Spec::client(name, &[]));
    replace_by_rename(&files.front_proxy, format!("{}{}", cert.key_pem, cert.cert_pem));
    until("new front-proxy certificate", async || {
        let reply =
            timeout(OP_TIMEOUT, request(s.addr, s.tls(Some(&s.pki.alice), Http::H2), Http::H2, get("/_sim/headers")))
                .await
                .map_err(|_| "no answer")??;
        let v = reply.json();
        if v["auth"] != "requestheader" || v["user"]["username"] != "alice" {
            return Err(format!("the stand-in did not take the front proxy's identity: {v}"));
        }
        match v["peer_cert_cn"].as_str() {
            Some(cn) if cn == name => Ok(()),
            other => Err(format!("upstream still sees {other:?}")),
        }
    })
    .await
}

/// The median of `samples` (KiB).
fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_traffic_while_crls_and_certificates_rotate() {
    let run = soak_duration();
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let victims: Vec<Issued> =
        (0..VICTIMS).map(|v| pki.users_ca.issue(&Spec::client(&format!("victim-{v}"), &["dev"]))).collect();
    let mut sim = pki.sim_config();
    sim.requestheader_allowed_names = FRONT_PROXY_NAMES.iter().map(|n| n.to_string()).collect();
    let upstream = Upstream::start(sim).await;
    // Combined cert+key files: a rotation is one rename, never a cert without its key.
    let files = Files { serving: pki.path("serving.pem"), front_proxy: pki.path("front-proxy.pem") };
    std::fs::write(&files.serving, format!("{}{}", pki.serving.cert_pem, pki.serving.key_pem)).expect("write");
    let fp = &pki.front_proxy_client;
    std::fs::write(&files.front_proxy, format!("{}{}", fp.key_pem, fp.cert_pem)).expect("write");
    let mut args = pki.proxy_args(upstream.addr);
    set_flag(&mut args, "--tls-cert-file", Some(&path_str(&files.serving)));
    set_flag(&mut args, "--tls-private-key-file", None);
    set_flag(&mut args, "--proxy-client-cert-file", Some(&path_str(&files.front_proxy)));
    set_flag(&mut args, "--proxy-client-key-file", None);
    let proxy = ProxyProcess::start(tmp.path(), &args);
    let pid = proxy.pid();
    let fds_before = open_fds(pid);
    let s = Arc::new(Soak { addr: proxy.addr, pki, victims, board: Board::default() });
    s.board.crl.lock().unwrap().enforced = true;

    let mut workers: Vec<(String, tokio::task::JoinHandle<()>)> = vec![
        ("alice fresh".into(), tokio::spawn(fresh_client(s.clone(), false))),
        ("alice keep-alive".into(), tokio::spawn(alice_keepalive(s.clone()))),
        ("alice watch H1".into(), tokio::spawn(alice_watch(s.clone(), Http::H1))),
        ("alice watch H2".into(), tokio::spawn(alice_watch(s.clone(), Http::H2))),
        ("alice long tunnel".into(), tokio::spawn(alice_tunnel(s.clone()))),
        ("alice short tunnels".into(), tokio::spawn(alice_tunnels(s.clone()))),
        ("token client".into(), tokio::spawn(fresh_client(s.clone(), true))),
        ("bob".into(), tokio::spawn(bob(s.clone()))),
        ("new clients".into(), tokio::spawn(new_clients(s.clone()))),
    ];
    for v in 0..VICTIMS {
        workers.push((format!("victim-{v} fresh"), tokio::spawn(victim_fresh(s.clone(), v))));
        workers.push((format!("victim-{v} live"), tokio::spawn(victim_live(s.clone(), v))));
    }

    // The driver: one CRL change per step, a serving certificate every fourth step and a
    // front-proxy certificate every fourth step (offset by two), each confirmed; RSS sampled.
    let start = Instant::now();
    let warm_up = run / 3;
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let (mut crl_changes, mut serving_changes, mut fp_changes) = (0u64, 0u64, 0u64);
    let mut slowest: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut crl_number = 1;
    for step in 0..MAX_OPS {
        if start.elapsed() >= run {
            break;
        }
        crl_number += 1;
        let changes: [(&str, Option<Result<Duration, String>>); 3] = [
            ("CRL", Some(change_crl(&s, step, crl_number).await)),
            ("serving certificate", if step % 4 == 1 { Some(rotate_serving(&s, &files).await) } else { None }),
            (
                "front-proxy certificate",
                if step % 4 == 3 { Some(rotate_front_proxy(&s, &files, step / 4 + 1).await) } else { None },
            ),
        ];
        for (what, result) in changes {
            match result {
                None => {}
                Some(Ok(took)) => {
                    let max = slowest.entry(what).or_default();
                    *max = (*max).max(took);
                    match what {
                        "CRL" => crl_changes += 1,
                        "serving certificate" => serving_changes += 1,
                        _ => fp_changes += 1,
                    }
                }
                Some(Err(e)) => s.board.unexpected(format!("step {step}: {e}")),
            }
        }
        rss.push((start.elapsed(), rss_kib(pid)));
        tokio::time::sleep(HOLD).await;
    }
    s.board.stop.store(true, Ordering::Relaxed);
    for (name, task) in workers {
        match timeout(OP_TIMEOUT + Duration::from_secs(5), task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => s.board.unexpected(format!("{name} panicked: {e}")),
            Err(_) => s.board.unexpected(format!("{name} did not stop")),
        }
    }
    let elapsed = start.elapsed();

    // Everything closed: the proxy's connections and tunnels are gone, and so are the
    // descriptors they held.
    let m = wait_admin(proxy.admin, "/metrics", "back to no open connection", |_, b| {
        series(b, "kube_crl_proxy_open_connections") == Some(0.0)
            && series(b, "kube_crl_proxy_open_tunnels") == Some(0.0)
    })
    .await;
    let fds_after = open_fds(pid);

    // Memory: the median RSS of the third after the warm-up against that of the last third.
    let after_warm_up: Vec<_> = rss.iter().filter(|(t, _)| *t >= warm_up).collect();
    assert!(after_warm_up.len() >= 3, "too few RSS samples after the warm-up: {rss:?}");
    let third = after_warm_up.len() / 3;
    let early = median(after_warm_up[..third.max(1)].iter().map(|(_, k)| *k).collect());
    let late = median(after_warm_up[after_warm_up.len() - third.max(1)..].iter().map(|(_, k)| *k).collect());
    let peak = rss.iter().map(|(_, k)| *k).max().unwrap_or(0);

    let counts = s.board.counts.lock().unwrap().clone();
    eprintln!(
        "soak: {elapsed:?}, {crl_changes} CRL changes, {serving_changes} serving and {fp_changes} front-proxy certificate rotations"
    );
    eprintln!("soak: slowest confirmation of each change: {slowest:?}");
    eprintln!(
        "soak: RSS {early} KiB after the warm-up, {late} KiB at the end, peak {peak} KiB ({} samples)",
        rss.len()
    );
    let trace: Vec<String> = rss.iter().map(|(t, k)| format!("{}s:{:.1}", t.as_secs(), *k as f64 / 1024.0)).collect();
    eprintln!("soak: RSS samples (MiB): {}", trace.join(" "));
    eprintln!("soak: descriptors {fds_before} before, {fds_after} after");
    for (what, n) in &counts {
        eprintln!("soak: {n:>8}  {what}");
    }

    let unexpected = s.board.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{} unexpected outcomes; the first ones:\n{}",
        s.board.unexpected_total.load(Ordering::Relaxed),
        unexpected.join("\n")
    );
    // The run did what it says: every kind of traffic and change happened.
    let at_least = [
        ("alice request", 20),
        ("alice keep-alive request", 20),
        ("alice watch held", 2),
        ("alice tunnel held", 1),
        ("alice short tunnel", 5),
        ("token request", 20),
        ("bob refused", 20),
        ("new client request", 4),
        ("watch event", 20),
        ("tunnel echo", 20),
        ("victim refused while revoked", 3),
        ("victim served while not revoked", 20),
        ("victim live connection cut by its revocation", 2),
    ];
    for (what, n) in at_least {
        assert!(s.board.get(what) >= n, "only {} × {what:?} (want ≥ {n}): {counts:?}", s.board.get(what));
    }
    assert!(crl_changes >= 6 && serving_changes >= 2 && fp_changes >= 2, "too few changes");
    // The proxy's own account agrees.
    assert_eq!(family_sum(&m, "kube_crl_proxy_reload_failures_total"), 0.0, "no reload may fail:\n{m}");
    for (kind, n) in [("crl", crl_changes), ("serving_cert", serving_changes), ("proxy_client_cert", fp_changes)] {
        let reloads = series(&m, &format!(r#"kube_crl_proxy_reloads_total{{kind="{kind}"}}"#)).unwrap_or(0.0);
        assert!(reloads >= n as f64, "{kind}: {reloads} reloads for {n} changes\n{m}");
    }
    let refused = series(&m, r#"kube_crl_proxy_handshakes_total{outcome="revoked"}"#).unwrap_or(0.0);
    assert!(refused >= s.board.get("bob refused") as f64, "the proxy counted {refused} revoked handshakes\n{m}");
    assert!(
        late <= early + RSS_SLACK_KIB,
        "RSS grew from {early} KiB after the warm-up to {late} KiB at the end (peak {peak} KiB); samples: {rss:?}"
    );
    assert!(fds_after <= fds_before + FD_SLACK, "descriptors: {fds_before} before the traffic, {fds_after} after it");
    drop(upstream);
}
