//! One owner of "what can end a client connection besides its client": shutdown, the
//! registry's close signal (revocation, certificate expiry: [`crate::conns::Live`]) and
//! `--idle-timeout`, plus the requests in flight that idleness is judged by ([`Activity`]).
//! Each protocol driver (HTTP/2 in `super::drive`, HTTP/1.1 in `super::h1`) asks
//! [`Life::next`] what happened and decides only how its protocol winds down.
//!
//! # How a connection ends
//! - **Shutdown, idle**: wound down politely. HTTP/2 sends GOAWAY and lets the requests in
//!   flight finish; HTTP/1.1 finishes the request in flight, a parked connection gets a TLS
//!   close_notify ([`CLOSE_LINGER`]).
//! - **Told to close** ([`End::Close`]: revoked, expired): **cut**. The connection is
//!   dropped at once, requests in flight, watches and tunnels included; nothing more is
//!   written to the client, neither an HTTP/2 GOAWAY nor a TLS close_notify; the socket
//!   is closed (FIN). The client's next handshake is refused with the alert that says why.
//!   A GOAWAY would tell the client nothing it can use, and writing one, with the client's
//!   PING answer to it, was most of the work of closing 15,000 HTTP/2 connections at once
//!   (a revoked intermediate, a CRL gone stale under deny): bench/README.md, "Scale".

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::conns::{CloseReason, Live};

/// How long an idle HTTP/2 connection asked to go (GOAWAY and PING) may take to finish
/// before it is cut: a client that never answers would otherwise keep it past
/// `--idle-timeout`.
pub const IDLE_CLOSE_BOUND: Duration = Duration::from_secs(5);

/// How long a parked HTTP/1.1 connection's TLS close_notify may take before it is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// What ended (or began to end) a connection.
#[derive(Debug)]
pub enum End {
    /// The proxy is shutting down: finish in-flight requests. Reported once.
    Shutdown,
    /// The registry closed it (revoked, expired): cut it now (see the module doc).
    Close(CloseReason),
    /// Idle for `--idle-timeout` (or the driver's own deadline). Reported once.
    Idle,
}

/// Which idle rule a driver wants while it waits.
#[derive(Debug, Clone, Copy)]
pub enum Idle {
    /// None: the driver's own timers apply (an HTTP/1.1 round, hyper's header timer).
    Off,
    /// At this instant (a parked HTTP/1.1 connection's deadline).
    At(Instant),
    /// `--idle-timeout` after the last request ended, judged by [`Activity`]: one deadline,
    /// re-armed when it finds the connection busy, not a periodic tick.
    Timeout,
}

/// The lifecycle of one connection.
pub struct Life {
    stop: watch::Receiver<bool>,
    live: Option<Live>,
    pub remote: SocketAddr,
    pub activity: Arc<Activity>,
    idle_timeout: Duration,
    stopping: bool,
    idle_reported: bool,
    /// The `Idle::Timeout` deadline, made on first use.
    idle_sleep: Option<Pin<Box<Sleep>>>,
}

impl Life {
    pub fn new(stop: watch::Receiver<bool>, live: Option<Live>, remote: SocketAddr, idle_timeout: Duration) -> Self {
        let activity = Arc::new(Activity::default());
        activity.mark_end();
        Self { stop, live, remote, activity, idle_timeout, stopping: false, idle_reported: false, idle_sleep: None }
    }

    /// The configured `--idle-timeout`.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Shutdown has begun (reported by [`Self::next`] or seen now).
    pub fn stopping(&self) -> bool {
        self.stopping || *self.stop.borrow()
    }

    /// Waits for what ends the connection next. Shutdown and idleness are reported once each;
    /// after shutdown, idleness no longer is (the connection is already finishing).
    pub async fn next(&mut self, idle: Idle) -> End {
        let Self { stop, live, activity, idle_timeout, stopping, idle_reported, idle_sleep, .. } = self;
        loop {
            let idle_armed = !*idle_reported && !*stopping;
            let ended = tokio::select! {
                // A closed sender (the accept loop is gone) is a shutdown too.
                _ = stop.wait_for(|s| *s), if !*stopping => {
                    *stopping = true;
                    Some(End::Shutdown)
                }
                reason = crate::conns::closed(live) => Some(End::Close(reason)),
                () = idle_wait(idle, idle_sleep, activity, *idle_timeout), if idle_armed => None,
            };
            if let Some(end) = ended {
                return end;
            }
            if let (Idle::Timeout, Some(sleep)) = (idle, idle_sleep.as_mut())
                && !activity.idle_for(*idle_timeout)
            {
                // Busy since: wait again from the last end (or a full timeout from now).
                let now = Instant::now();
                let next =
                    if activity.in_flight() > 0 { now + *idle_timeout } else { activity.last_end() + *idle_timeout };
                sleep.as_mut().reset(next.max(now + Duration::from_millis(10)));
                continue;
            }
            *idle_reported = true;
            return End::Idle;
        }
    }
}

async fn idle_wait(idle: Idle, sleep: &mut Option<Pin<Box<Sleep>>>, activity: &Activity, timeout: Duration) {
    match idle {
        Idle::Off => std::future::pending().await,
        Idle::At(at) => tokio::time::sleep_until(at).await,
        Idle::Timeout => {
            sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(activity.last_end() + timeout))).await
        }
    }
}

/// Requests in flight on a connection (until their response body ends), and when the last
/// one ended: for `--idle-timeout`, and for HTTP/1.1 parking (`super::h1`).
#[derive(Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// Requests whose response has ended.
    ended: AtomicU64,
    /// Milliseconds since `epoch` of the last request end (or the connection start).
    last_end_ms: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request starts; it ends when the returned guard is dropped (with its response body).
    pub fn start(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Records now as the last request end (done once at the connection start).
    pub fn mark_end(&self) {
        self.last_end_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests whose response has ended so far.
    pub fn requests_ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// When the last request ended (or the connection started).
    pub fn last_end(&self) -> Instant {
        let ago = self.now_ms().saturating_sub(self.last_end_ms.load(Ordering::Relaxed));
        Instant::now() - Duration::from_millis(ago)
    }

    /// Idle for at least `timeout`: nothing in flight since then.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.now_ms().saturating_sub(self.last_end_ms.load(Ordering::Relaxed)) >= timeout.as_millis() as u64
    }
}

/// One request in flight; ends when dropped (with its response body).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_end();
        self.0.ended.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
