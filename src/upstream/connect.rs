//! Opening one upstream connection: TCP, then TLS with the client credentials current at that
//! moment (front-proxy certificate and key, upstream CA), the whole of it within
//! `--upstream-connect-timeout`; an open connection is counted in its upstream's gauge.
//!
//! The credentials live in a [`Credentials`] store: a reload validates new files and then
//! publishes them; a connection reads the store once, when it opens, and keeps what it read
//! (as linkerd2-proxy's credential store does). A reload therefore needs no new pools and
//! leaves open connections alone; the pools retire connections opened with credentials that
//! have since been replaced (see [`Credentials::generation`]).
//!
//! Connect errors are typed ([`ConnectFailure`]), decided from the error types where they
//! arise (our deadline, the TCP connector's `io::Error`, a `rustls::Error`), never from
//! their messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::{ProxyError, error_chain};

/// The upstream client credentials in use, replaced whole by a reload.
pub struct Credentials {
    current: ArcSwap<Generation>,
    next_id: AtomicU64,
}

/// One publication of the credentials, as TLS client configurations for both pools.
pub struct Generation {
    id: u64,
    /// ALPN `h2`, `http/1.1`: HTTP/2 connections (an upstream without h2 is then noticed).
    offers_h2: Arc<ClientConfig>,
    /// No ALPN: HTTP/1.1 connections (as the HAProxy set-up), upgrades included.
    http1: Arc<ClientConfig>,
}

impl Generation {
    fn new(id: u64, tls: ClientConfig) -> Self {
        let mut offers_h2 = tls.clone();
        offers_h2.alpn_protocols = crate::tls::ALPN.iter().map(|p| p.to_vec()).collect();
        let mut http1 = tls;
        http1.alpn_protocols.clear();
        Self { id, offers_h2: Arc::new(offers_h2), http1: Arc::new(http1) }
    }
}

impl Credentials {
    /// The credentials loaded at start (validated by `crate::tls`).
    pub fn new(tls: ClientConfig) -> Self {
        Self { current: ArcSwap::from_pointee(Generation::new(0, tls)), next_id: AtomicU64::new(1) }
    }

    /// Replaces the credentials (validated by the caller): new connections use them, open
    /// ones keep theirs until their pool retires them.
    pub fn publish(&self, tls: ClientConfig) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.current.store(Arc::new(Generation::new(id, tls)));
    }

    /// Which publication is current: a pool takes no new requests on a connection opened
    /// with an earlier one (kube-apiserver re-verifies the front-proxy certificate on every
    /// request, so one that expired or whose CA was replaced would make requests anonymous).
    pub fn generation(&self) -> u64 {
        self.current.load().id
    }
}

/// Why a connection could not be opened. Nothing of a request reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The deadline passed (`--upstream-connect-timeout`), or TCP itself timed out.
    TimedOut,
    /// TCP failed (refused, unreachable, name resolution), or the peer hung up during the
    /// TLS handshake: the upstream is not there.
    Unreachable,
    /// TLS refused the peer or was refused by it (certificate, alert, protocol).
    Tls,
}

/// A connection attempt that failed: its kind, and the error chain as text. Cloneable, so
/// that requests that waited for one attempt all get its failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ConnectError {
    pub kind: ConnectFailure,
    detail: String,
}

impl ConnectError {
    fn timed_out(limit: Duration) -> Self {
        let detail = format!("connect and TLS handshake timed out after {limit:?} (--upstream-connect-timeout)");
        Self { kind: ConnectFailure::TimedOut, detail }
    }

    /// The TCP connector's error: it wraps the `io::Error` of the connect.
    fn tcp(err: Box<dyn std::error::Error + Send + Sync>) -> Self {
        let timed_out =
            source_of::<std::io::Error>(err.as_ref()).is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let kind = if timed_out { ConnectFailure::TimedOut } else { ConnectFailure::Unreachable };
        Self { kind, detail: format!("TCP connect: {}", error_chain(err.as_ref())) }
    }

    /// tokio-rustls reports a `rustls::Error` inside the `io::Error`; anything else is the
    /// socket (the peer hung up).
    fn tls(err: std::io::Error) -> Self {
        let refused = err.get_ref().is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some());
        let kind = if refused { ConnectFailure::Tls } else { ConnectFailure::Unreachable };
        Self { kind, detail: format!("TLS handshake: {}", error_chain(&err)) }
    }

    /// A connect error of `kind` that reached us as another type.
    pub fn other(kind: ConnectFailure, err: &dyn std::error::Error) -> Self {
        Self { kind, detail: error_chain(err) }
    }

    /// The one mapping of connect failures to proxy errors (and so statuses).
    pub fn into_proxy_error(self, upstream: String) -> ProxyError {
        let detail = self.detail;
        match self.kind {
            ConnectFailure::TimedOut => ProxyError::UpstreamTimeout { upstream, detail },
            ConnectFailure::Unreachable => ProxyError::UpstreamUnavailable { upstream, detail },
            ConnectFailure::Tls => ProxyError::UpstreamFailed { upstream, detail },
        }
    }

    /// The connect error inside an error chain (hyper's pooled client wraps it).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        source_of::<Self>(err)
    }
}

/// The first error of type `E` in `err`'s chain, `err` included.
fn source_of<'a, E: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// What a connection offers in ALPN.
#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    /// `h2` and `http/1.1`, for the HTTP/2 pool.
    OffersH2,
    /// None: HTTP/1.1.
    Http1,
}

/// Opens connections to one upstream (a `tower` service, as hyper's pooled client wants).
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    credentials: Arc<Credentials>,
    server_name: ServerName<'static>,
    alpn: Alpn,
    limit: Duration,
    /// Open connections to this upstream (`kube_crl_proxy_upstream_connections`).
    open: Gauge,
}

impl Connector {
    pub fn new(
        credentials: Arc<Credentials>,
        server_name: ServerName<'static>,
        alpn: Alpn,
        limit: Duration,
        open: Gauge,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        // One deadline covers TCP and TLS (ours, below).
        tcp.set_connect_timeout(None);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        Self { tcp, credentials, server_name, alpn, limit, open }
    }

    /// The credentials' current generation (see [`Credentials::generation`]).
    pub fn generation(&self) -> u64 {
        self.credentials.generation()
    }

    /// Opens a connection with the credentials current now.
    pub async fn connect(&mut self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let credentials = self.credentials.current.load_full();
        let tls = match self.alpn {
            Alpn::OffersH2 => credentials.offers_h2.clone(),
            Alpn::Http1 => credentials.http1.clone(),
        };
        let tcp = tower_service::Service::call(&mut self.tcp, uri);
        let name = self.server_name.clone();
        let open = async move {
            let tcp: TcpStream = tcp.await.map_err(|e| ConnectError::tcp(Box::new(e)))?.into_inner();
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(ConnectError::tls)
        };
        match tokio::time::timeout(self.limit, open).await {
            Ok(Ok(tls)) => Ok(UpstreamIo::new(tls, self.open.clone(), credentials.id)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::timed_out(self.limit)),
        }
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = BoxFuture<Result<UpstreamIo, ConnectError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ConnectError>> {
        // HttpConnector is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

/// An upstream TLS connection, counted in its upstream's gauge while it is open.
pub struct UpstreamIo {
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    h2: bool,
    /// The credentials generation it was opened with.
    pub generation: u64,
    open: Gauge,
}

impl UpstreamIo {
    fn new(tls: tokio_rustls::client::TlsStream<TcpStream>, open: Gauge, generation: u64) -> Self {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        open.inc();
        Self { io: TokioIo::new(tls), h2, generation, open }
    }
}

impl UpstreamIo {
    /// The TLS handshake chose `h2` (ALPN).
    pub fn negotiated_h2(&self) -> bool {
        self.h2
    }
}

impl Drop for UpstreamIo {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_classified_by_type() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(ConnectError::tcp(Box::new(refused)).kind, ConnectFailure::Unreachable);
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(ConnectError::tcp(Box::new(timed_out)).kind, ConnectFailure::TimedOut);
        let bad_cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(ConnectError::tls(bad_cert).kind, ConnectFailure::Tls);
        let hung_up = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(ConnectError::tls(hung_up).kind, ConnectFailure::Unreachable);
        assert_eq!(ConnectError::timed_out(Duration::from_secs(1)).kind, ConnectFailure::TimedOut);
        let e = ConnectError::timed_out(Duration::from_secs(1));
        assert!(matches!(e.into_proxy_error("u".into()), ProxyError::UpstreamTimeout { .. }));
    }
}
