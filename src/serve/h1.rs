//! HTTP/1.1 connections that hold no HTTP buffers while idle. hyper keeps a connection's
//! read and write buffers (8 KiB each) and its state for the connection's whole life; here,
//! once hyper has been idle between requests for [`PARK_AFTER`], the TLS stream is taken
//! back from it (`into_parts`), the connection waits for the client's next bytes with
//! nothing but the stream ("parked"), and a fresh hyper connection serves them (a "round").
//!
//! Taking the stream back is safe only when hyper holds nothing that would be lost: no
//! request in flight or unread request body, every response byte flushed to the socket, no
//! upgrade under way, and hyper waiting on an empty socket. [`Park`] tracks those from the
//! stream ([`RoundIo`]), the request body ([`Watched`]) and the service. Bytes hyper had read
//! but not parsed (a pipelined request's start) come back with the stream and are served
//! first in the next round, so nothing a client sends is dropped or reordered.
//!
//! Deadlines while parked: before the first request `--request-header-timeout` (or
//! `--idle-timeout` if shorter), after a request `--idle-timeout`. Within a round hyper's own
//! request-head timer (`--request-header-timeout`) applies, also to a round that cannot park.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::life::{Activity, CLOSE_LINGER, End, Idle, Life};
use crate::body::ProxyBody;
use crate::tls::stream::TlsStream;

/// How long a connection stays idle in hyper before it is parked, and how often that is
/// checked: a busy keep-alive connection (a request every few milliseconds) never pays for
/// parking, an idle one is parked within twice this.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// What decides whether hyper may be parked; shared by the stream, the request body and the
/// connection. One task touches it at a time; atomics only make it `Sync`.
#[derive(Default)]
pub struct Park {
    /// Bytes were handed to hyper since the last request ended (or the round began): it may
    /// be in the middle of a request head. Read with `delivered_at`.
    delivered: AtomicBool,
    /// [`Activity::requests_ended`] when bytes were last handed over: a request that ended
    /// since then consumed them.
    delivered_at: AtomicU64,
    /// hyper's last read found the socket empty.
    read_waiting: AtomicBool,
    /// Bytes were written since the last completed flush.
    unflushed: AtomicBool,
    /// The current request's body has not been read to its end.
    body_open: AtomicBool,
    /// A request of this round asked for an upgrade: hyper hands the stream over itself.
    upgrading: AtomicBool,
}

impl Park {
    /// hyper is idle between requests and holds nothing that would be lost.
    fn ready(&self, activity: &Activity) -> bool {
        let delivered = self.delivered.load(Ordering::Relaxed)
            && self.delivered_at.load(Ordering::Relaxed) == activity.requests_ended();
        activity.in_flight() == 0
            && self.read_waiting.load(Ordering::Relaxed)
            && !delivered
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.body_open.load(Ordering::Relaxed)
            && !self.upgrading.load(Ordering::Relaxed)
    }

    /// Bytes were handed to hyper.
    fn deliver(&self, activity: &Activity) {
        self.delivered_at.store(activity.requests_ended(), Ordering::Relaxed);
        self.delivered.store(true, Ordering::Relaxed);
    }

    fn new_round(&self) {
        for flag in [&self.delivered, &self.read_waiting, &self.unflushed, &self.body_open, &self.upgrading] {
            flag.store(false, Ordering::Relaxed);
        }
    }
}

/// A request head was parsed: note its body and upgrade in the connection's [`Park`], and
/// watch the body's end.
pub(crate) fn on_request(park: &Arc<Park>, req: hyper::Request<Incoming>) -> hyper::Request<Watched> {
    park.body_open.store(!req.body().is_end_stream(), Ordering::Relaxed);
    if req.headers().contains_key(hyper::header::UPGRADE) {
        park.upgrading.store(true, Ordering::Relaxed);
    }
    req.map(|body| Watched { body, park: park.clone() })
}

/// A request body that tells [`Park`] when it has been read to its end.
pub struct Watched {
    body: Incoming,
    park: Arc<Park>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.body.is_end_stream() {
            self.park.body_open.store(false, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TLS stream as hyper sees it for one round: bytes left over from the last round
/// first, then the stream; records reads and flushes for [`Park`].
struct RoundIo {
    tls: Box<TlsStream>,
    prefix: Bytes,
    park: Arc<Park>,
    activity: Arc<Activity>,
}

impl AsyncRead for RoundIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.park.deliver(&this.activity);
            this.park.read_waiting.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tls).poll_read(cx, buf);
        match &r {
            Poll::Pending => this.park.read_waiting.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                this.park.read_waiting.store(false, Ordering::Relaxed);
                if buf.filled().len() > before {
                    this.park.deliver(&this.activity);
                }
            }
        }
        r
    }
}

impl AsyncWrite for RoundIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.park.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut this.tls).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.park.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut this.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tls).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.park.unflushed.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// Serves an HTTP/1.1 connection, parking it whenever it is idle (see the module doc).
pub(crate) async fn serve<S>(
    tls: Box<TlsStream>,
    service: S,
    builder: http1::Builder,
    mut life: Life,
    park: Arc<Park>,
    header_timeout: Duration,
) where
    S: HttpService<Incoming, ResBody = ProxyBody> + Send + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first_deadline = tokio::time::Instant::now() + header_timeout.min(life.idle_timeout());
    // The stream is boxed (by the caller: an argument is part of the future too) and the
    // parked wait and each round are futures of their own, so that the connection's state
    // is only what the phase it is in needs (see "What profiling found" in bench/README.md).
    let (mut tls, mut prefix, mut service) = (tls, Bytes::new(), service);
    // The first round starts at once: the client's first request may have come with its
    // last handshake message, already read from the socket into rustls.
    let mut first = true;
    loop {
        if prefix.is_empty() && !std::mem::take(&mut first) {
            let deadline = match life.activity.requests_seen() {
                0 => first_deadline,
                _ => life.activity.last_end() + life.idle_timeout(),
            };
            match Box::pin(parked(&tls, &mut life, deadline)).await {
                Parked::Data => {}
                Parked::Close => return close_parked(tls).await,
                // Cut (see `life`): dropped without close_notify.
                Parked::Cut => return,
            }
        }
        park.new_round();
        let io = RoundIo { tls, prefix, park: park.clone(), activity: life.activity.clone() };
        let conn = Box::pin(builder.serve_connection(TokioIo::new(io), service).with_upgrades());
        match Box::pin(round(conn, &mut life, &park)).await {
            Some((t, p, s)) => (tls, prefix, service) = (t, p, s),
            None => return,
        }
    }
}

/// How a parked wait ended.
enum Parked {
    /// The client sent something (or its socket has an error to report): serve a round.
    Data,
    /// Shutdown or `deadline`: close politely (TLS close_notify).
    Close,
    /// Revoked or expired: cut (see `life`).
    Cut,
}

/// Parked: nothing but the stream until the client sends something or the connection is to
/// end (shutdown, revocation, expiry, `deadline`).
async fn parked(tls: &TlsStream, life: &mut Life, deadline: tokio::time::Instant) -> Parked {
    tracing::trace!(peer = %life.remote, "parked");
    if life.stopping() {
        return Parked::Close;
    }
    let remote = life.remote;
    tokio::select! {
        r = tls.tcp().readable() => if r.is_ok() { Parked::Data } else { Parked::Close },
        end = life.next(Idle::At(deadline)) => match end {
            End::Close(reason) => {
                tracing::debug!(peer = %remote, reason = reason.label(), "cutting connection");
                Parked::Cut
            }
            End::Idle => {
                tracing::debug!(peer = %remote, "closing idle connection (--idle-timeout / --request-header-timeout)");
                Parked::Close
            }
            End::Shutdown => Parked::Close,
        }
    }
}

/// One round: a fresh hyper connection until it goes idle (then the stream, hyper's
/// unparsed bytes and the service come back) or the connection is over (`None`: closed by
/// either side, an error, shutdown, revocation, or an upgrade took the stream). hyper's
/// request-head timer bounds a round that cannot park (a head trickling in, the rest of a
/// request body hyper drains).
type Conn<S> = http1::UpgradeableConnection<TokioIo<RoundIo>, S>;
async fn round<S>(mut conn: Pin<Box<Conn<S>>>, life: &mut Life, park: &Park) -> Option<(Box<TlsStream>, Bytes, S)>
where
    S: HttpService<Incoming, ResBody = ProxyBody> + Send + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let remote = life.remote;
    let activity = life.activity.clone();
    let mut park_check = tokio::time::interval_at(tokio::time::Instant::now() + PARK_AFTER, PARK_AFTER);
    park_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if life.stopping() {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %remote, "connection ended: {e}");
                }
                return None;
            }
            _ = park_check.tick(), if !life.stopping() => {
                if park.ready(&activity) && activity.idle_for(PARK_AFTER) {
                    let parts = Pin::into_inner(conn).into_parts()?;
                    let RoundIo { tls, prefix, .. } = parts.io.into_inner();
                    return Some((tls, join(prefix, parts.read_buf), parts.service));
                }
            }
            end = life.next(Idle::Off) => match end {
                End::Shutdown | End::Idle => conn.as_mut().graceful_shutdown(),
                End::Close(reason) => {
                    // Cut (see `life`): the connection is dropped on return.
                    tracing::debug!(peer = %remote, reason = reason.label(), "cutting connection");
                    return None;
                }
            }
        }
    }
}

/// Unparsed bytes: what was left of the last prefix (hyper reads all of it before it waits
/// on the socket, so normally nothing) and hyper's read buffer. Copied out: a `Bytes` from
/// hyper's buffer, even an empty one, would keep its whole 8 KiB allocation alive.
fn join(rest: Bytes, read_buf: Bytes) -> Bytes {
    if rest.is_empty() && read_buf.is_empty() {
        return Bytes::new();
    }
    Bytes::from([rest.as_ref(), read_buf.as_ref()].concat())
}

/// Closes a parked connection as hyper would an idle one: TLS close_notify, then FIN.
async fn close_parked(mut tls: Box<TlsStream>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, tls.shutdown()).await;
}
