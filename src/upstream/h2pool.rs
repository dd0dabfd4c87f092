//! The HTTP/2 upstream pool (`--upstream-http2`): as many HTTP/2 connections to one upstream
//! as its per-connection stream cap needs. hyper's pooled client keeps one HTTP/2 connection
//! per host and never opens a second, so requests beyond the upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (kube-apiserver: `--http2-max-streams-per-connection`)
//! would wait behind long watches for ever. Here every connection has a budget of
//! `--upstream-http2-max-streams` streams, counted by us (hyper exposes neither the peer's
//! setting nor the number of open streams); a request takes a stream on the first connection
//! with budget left, and a new connection is opened only when all are full. A stream is given
//! back when its response body is dropped (or the request failed).
//!
//! Connections that are closed (GOAWAY, error, the upstream's idle timeout) are dropped from
//! the pool; one idle for [`IDLE_LIMIT`] while another exists is closed by us. So is one
//! opened with upstream credentials that a reload has since replaced: it takes no new
//! streams, and goes once the streams in flight on it (watches) end. A connection on which
//! hyper handed a request back unsent (it was closing: a GOAWAY) takes no new streams either.
//! The pool sends each request once and reports how it failed
//! ([`Failure`](super::retry::Failure)); whether it goes again is the retry policy's call.
//! Connections are opened one at a time; requests that waited for an attempt that failed to
//! connect get its error at once instead of each waiting out a connect timeout in turn.
//! The TLS handshake offers `h2` and `http/1.1`; an upstream that picks HTTP/1.1 (or no ALPN)
//! gets every request back unsent, for the HTTP/1.1 pool, from then on ([`H2Pool::http1_only`]).
//!
//! Flow-control windows are fixed, [`STREAM_WINDOW`] per stream and [`CONNECTION_WINDOW`] per
//! connection: they bound what a slow client can make us buffer, and hyper's adaptive (BDP)
//! window, once it had sized itself on thousands of small responses, held 1 MiB downloads to
//! half the rate (140–166 against 290–303 MiB/s in `bench/`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connect::{ConnectError, Connector};
use super::retry::{Failure, Unsent};
use crate::body::ProxyBody;

/// An idle connection is closed after this long, unless it is the pool's last one
/// (kube-apiserver closes idle HTTP/2 connections after 90 s itself).
pub const IDLE_LIMIT: Duration = Duration::from_secs(90);

/// How much of one response the upstream may send ahead of the client reading it.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// How much of all responses on one connection the upstream may send ahead.
pub const CONNECTION_WINDOW: u32 = 8 << 20;

/// Why no stream could be taken.
enum NoStream {
    /// The upstream has no h2: the caller hands the request back.
    NotHttp2,
    Failed(Failure),
}

/// One HTTP/2 connection and the streams we have on it.
struct Conn {
    send: SendRequest<ProxyBody>,
    streams: AtomicUsize,
    /// Milliseconds since the pool's epoch when the last stream was given back.
    idle_since_ms: AtomicU64,
    /// hyper handed a request back unsent (GOAWAY received, closing): no new streams here.
    draining: AtomicBool,
    /// The credentials generation it was opened with.
    generation: u64,
}

/// HTTP/2 connections to one upstream.
pub struct H2Pool {
    connector: Connector,
    /// The upstream's base URI, handed to the connector.
    uri: Uri,
    max_streams: usize,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while a connection is being opened, so that a burst of requests opens one
    /// connection per `max_streams` of them, not one each. Holds the last attempt's failure.
    opening: tokio::sync::Mutex<Option<ConnectError>>,
    /// Connection attempts finished (success or failure), for requests that waited on one.
    attempts: AtomicU64,
    /// Set once the upstream answered ALPN without `h2`: every request goes to HTTP/1.1.
    http1_only: AtomicBool,
    epoch: Instant,
}

/// A stream taken on a connection; given back when dropped.
struct Lease {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.idle_since_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.conn.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its stream's [`Lease`] until it is dropped.
struct Leased {
    body: Incoming,
    _lease: Lease,
}

impl Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl H2Pool {
    /// `max_streams` (at least 1) is the budget per connection; `connector` offers h2.
    pub fn new(connector: Connector, uri: Uri, max_streams: u32) -> Self {
        Self {
            connector,
            uri,
            max_streams: max_streams.max(1) as usize,
            conns: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            http1_only: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// The upstream does not speak HTTP/2 (ALPN): requests should go over HTTP/1.1.
    pub fn http1_only(&self) -> bool {
        self.http1_only.load(Ordering::Relaxed)
    }

    /// Sends `req` (absolute URI) once, on a connection with a stream to spare, opening one if
    /// every connection is at its budget.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, Failure> {
        let lease = match self.lease().await {
            Ok(lease) => lease,
            Err(NoStream::NotHttp2) => return Err(Failure::Unsent(Box::new(req), Unsent::NotHttp2)),
            Err(NoStream::Failed(failure)) => return Err(failure),
        };
        let mut send = lease.conn.send.clone();
        match send.try_send_request(req).await {
            Ok(resp) => Ok(resp.map(|body| http_body_util::BodyExt::boxed(Leased { body, _lease: lease }))),
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    lease.conn.draining.store(true, Ordering::Relaxed);
                    Err(Failure::Unsent(Box::new(unsent), Unsent::Closing(e.into_error())))
                }
                None if went_away(e.error()) => {
                    lease.conn.draining.store(true, Ordering::Relaxed);
                    Err(Failure::WentAway(e.into_error()))
                }
                None => Err(Failure::Failed(Box::new(e.into_error()))),
            },
        }
    }

    /// Takes a stream on the first connection with budget left, opening one if none has.
    async fn lease(&self) -> Result<Lease, NoStream> {
        if let Some(lease) = self.take_stream() {
            return Ok(lease);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last_failure = self.opening.lock().await;
        // Another request may have opened one (or found HTTP/1.1) while this one waited.
        if let Some(lease) = self.take_stream() {
            return Ok(lease);
        }
        if self.http1_only() {
            return Err(NoStream::NotHttp2);
        }
        // The attempt this request waited for failed: share its failure instead of queueing
        // for a connect timeout of its own behind every other waiting request.
        if let (Some(failure), true) = (&*last_failure, self.attempts.load(Ordering::Acquire) != seen) {
            return Err(NoStream::Failed(Failure::Connect(failure.clone())));
        }
        // Boxed: the connect and HTTP/2 handshake future is 6.5 kB, and inline it would be
        // part of every request's future (allocated and copied per request), while it runs
        // only when a connection is opened.
        let opened = Box::pin(self.open()).await;
        *last_failure = match &opened {
            Err(NoStream::Failed(Failure::Connect(e))) => Some(e.clone()),
            _ => None,
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let conn = opened?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn.clone());
        Ok(Lease { conn, epoch: self.epoch })
    }

    fn take_stream(&self) -> Option<Lease> {
        let generation = self.connector.generation();
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // In-flight streams keep their connection through their lease.
        conns.retain(|c| !c.send.is_closed() && !c.draining.load(Ordering::Relaxed) && c.generation == generation);
        // Close connections idle for too long, keeping at least one (dropping our handle
        // lets hyper end the connection with a GOAWAY).
        if conns.len() > 1 {
            let now = self.epoch.elapsed().as_millis() as u64;
            let mut keep = conns.len();
            conns.retain(|c| {
                let idle = c.streams.load(Ordering::Acquire) == 0
                    && now.saturating_sub(c.idle_since_ms.load(Ordering::Relaxed)) > IDLE_LIMIT.as_millis() as u64;
                if idle && keep > 1 {
                    keep -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let conn = conns.iter().find(|c| c.streams.load(Ordering::Acquire) < self.max_streams)?.clone();
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some(Lease { conn, epoch: self.epoch })
    }

    async fn open(&self) -> Result<Arc<Conn>, NoStream> {
        let io = self
            .connector
            .clone()
            .connect(self.uri.clone())
            .await
            .map_err(|e| NoStream::Failed(Failure::Connect(e)))?;
        if !io.negotiated_h2() {
            if !self.http1_only.swap(true, Ordering::Relaxed) {
                tracing::warn!(upstream = %self.uri, "the upstream did not negotiate HTTP/2 (ALPN h2): using HTTP/1.1");
            }
            return Err(NoStream::NotHttp2);
        }
        let generation = io.generation;
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .adaptive_window(false)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(io)
            .await
            .map_err(|e| NoStream::Failed(Failure::Failed(format!("HTTP/2 handshake: {e}").into())))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "upstream HTTP/2 connection ended");
            }
        });
        tracing::debug!(upstream = %self.uri, "opened an upstream HTTP/2 connection");
        let now = self.epoch.elapsed().as_millis() as u64;
        Ok(Arc::new(Conn {
            send,
            streams: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now),
            draining: AtomicBool::new(false),
            generation,
        }))
    }
}

/// The upstream ended the stream before answering because it went away: a GOAWAY from the
/// upstream, or `REFUSED_STREAM`.
fn went_away(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_remote() && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = err.source();
    }
    false
}
