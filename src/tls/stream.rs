//! Server-side TLS for client connections, on rustls's unbuffered API: the connection's
//! buffers are ours, allocated while bytes are in them and freed as soon as they are empty,
//! so an idle connection holds no TLS buffer at all. (tokio-rustls's buffered
//! `ServerConnection` keeps a zero-filled 4 KiB receive buffer for the connection's whole
//! life: a third of what an idle, parked HTTP/1.1 connection cost; see "What profiling
//! found" in bench/README.md.)
//!
//! Received bytes are bounded: a handshake message may span records up to rustls's own
//! 64 KiB limit, after the handshake no more than one record (about 18 KiB) is held
//! unprocessed. Writes are encrypted into an output buffer that `poll_flush` (or the next
//! write, past [`OUTPUT_HIGH`]) sends, so a response head and its body go out in one
//! `write` and, with vectored writes, in one TLS record.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BufMut;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

/// The largest TLS record on the wire (16 KiB of payload plus header and expansion).
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// What may be held unprocessed during the handshake: rustls joins a handshake message of up
/// to 64 KiB from several records in the receive buffer.
const MAX_HANDSHAKE_INPUT: usize = 0xffff + MAX_RECORD;
/// How much room a read from the socket asks for at most.
const READ_SIZE: usize = 16 * 1024;
/// ... and at least. A read that found less than it had room for is followed by one with
/// room for about as much (a power of two, at least this), so that a connection trading
/// small requests allocates small receive buffers: glibc serves those (up to 1 KiB) from
/// its per-thread cache, while every larger one first consolidates its free lists.
const SMALL_READ: usize = 1024;
/// A write of at least this much plaintext reserves room for [`OUTPUT_HIGH`] at once
/// instead of growing the send buffer (and copying it) record by record.
const BULK_WRITE: usize = 4 * 1024;
/// Plaintext encrypted per record-building call: writes beyond it are taken in parts.
const WRITE_CHUNK: usize = 64 * 1024;
/// Encrypted bytes held before a write first sends what is pending.
const OUTPUT_HIGH: usize = 64 * 1024;
/// Small vectored writes are gathered into one record up to this size.
const GATHER: usize = 16 * 1024;

/// A server-side TLS connection over TCP (see the module doc).
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes; those before `consumed` are processed. What is not processed is at
    /// most a partial record once the handshake is done. Freed (no allocation) whenever
    /// everything received has been processed.
    incoming: Vec<u8>,
    /// Processed bytes at the front of `incoming`, removed before the next read: a read that
    /// brought many small records is not shifted once per record.
    consumed: usize,
    /// Room the next read asks for (see [`SMALL_READ`]).
    read_size: usize,
    /// Decrypted bytes the reader's buffer had no room for.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes not yet written to the socket, and how many of them were.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer's close_notify was received: reads end after `plain`.
    peer_closed: bool,
    /// The socket reached EOF.
    tcp_eof: bool,
    /// Our close_notify is queued; nothing more may be written.
    close_queued: bool,
}

/// What the caller of [`TlsStream::step`] wants from the connection's next state.
enum Job<'a, 'b> {
    /// Drive the handshake.
    Handshake,
    /// Decrypted application data goes here first (the rest to `plain`).
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt these bytes (and gather up to [`GATHER`] more of the following slices).
    Write(&'a [IoSlice<'a>]),
    /// Queue close_notify.
    Close,
}

/// The outcome of one [`TlsStream::step`].
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Something was processed; call again.
    Again,
    /// Nothing more to do without more bytes from the peer (or, for a write, the write is
    /// not possible: after close_notify).
    Blocked,
    /// The write job took this many plaintext bytes (0: the close_notify was queued).
    Wrote(usize),
    /// Both sides sent close_notify.
    Closed,
}

impl TlsStream {
    /// The server handshake on `tcp`. On failure the TCP stream comes back, after any alert
    /// rustls had for the peer (e.g. `certificate_revoked`) was sent on it; the error wraps
    /// the `rustls::Error`, as tokio-rustls's does.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<TlsStream, (io::Error, TcpStream)> {
        let conn = match UnbufferedServerConnection::new(config) {
            Ok(c) => c,
            Err(e) => return Err((io::Error::new(io::ErrorKind::InvalidData, e), tcp)),
        };
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            consumed: 0,
            read_size: READ_SIZE,
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            tcp_eof: false,
            close_queued: false,
        };
        loop {
            match s.step(&mut Job::Handshake) {
                Ok(Step::Again) => continue,
                Ok(Step::Blocked) => {
                    if let Err(e) = std::future::poll_fn(|cx| s.poll_send(cx)).await {
                        return Err((e, s.tcp));
                    }
                    if !s.conn.is_handshaking() {
                        return Ok(s);
                    }
                    match std::future::poll_fn(|cx| s.poll_receive(cx, MAX_HANDSHAKE_INPUT)).await {
                        Ok(0) => {
                            return Err((io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"), s.tcp));
                        }
                        Ok(_) => continue,
                        Err(e) => return Err((e, s.tcp)),
                    }
                }
                Ok(Step::Closed | Step::Wrote(_)) => {
                    return Err((io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"), s.tcp));
                }
                Err(e) => {
                    s.queue_alert();
                    let _ = std::future::poll_fn(|cx| s.poll_send(cx)).await;
                    return Err((e, s.tcp));
                }
            }
        }
    }

    /// The negotiated connection (ALPN protocol, peer certificates, version).
    pub fn session(&self) -> &CommonState {
        &self.conn
    }

    /// The TCP stream (to wait for readability while the connection is parked).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Processes the connection's next state for `job`; consumed input is counted in
    /// `consumed`. Errors are rustls's, as `io::Error`s.
    fn step(&mut self, job: &mut Job<'_, '_>) -> io::Result<Step> {
        let TlsStream { conn, incoming, consumed, plain, outgoing, peer_closed, close_queued, .. } = self;
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[*consumed..]);
        let step = match state {
            Err(e) => Err(tls_error(e)),
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut r = Ok(Step::Again);
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            let mut payload = record.payload;
                            if let Job::Read(buf) = job {
                                let n = payload.len().min(buf.remaining());
                                buf.put_slice(&payload[..n]);
                                payload = &payload[n..];
                            }
                            plain.extend_from_slice(payload);
                        }
                        Err(e) => {
                            r = Err(tls_error(e));
                            break;
                        }
                    }
                }
                r
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => encode_into(outgoing, &mut data).map(|()| Step::Again),
            // What was encoded is in `outgoing`, which is sent in order before anything
            // later: for rustls it is as good as transmitted.
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => Ok(Step::Closed),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match job {
                Job::Write(bufs) => {
                    let (data, taken) = gather(bufs);
                    encrypt_into(outgoing, data.len(), |out| traffic.encrypt(&data, out)).map(|_| Step::Wrote(taken))
                }
                Job::Close => {
                    *close_queued = true;
                    encrypt_into(outgoing, 0, |out| traffic.queue_close_notify(out)).map(|_| Step::Wrote(0))
                }
                Job::Handshake | Job::Read(_) => Ok(Step::Blocked),
            },
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::Blocked),
            // Early data is off (`max_early_data_size = 0`); rustls adds no other state for a
            // server without telling us in its version.
            Ok(other) => Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
        };
        *consumed += discard;
        if *consumed == incoming.len() {
            *incoming = Vec::new();
            *consumed = 0;
        }
        step
    }

    /// After an error: encodes the alert rustls queued for the peer, to be sent. One call:
    /// rustls hands out what it queued before it looks at the input again, and looking at
    /// the input again would fail again (and a second fatal alert is a rustls assertion).
    fn queue_alert(&mut self) {
        let TlsStream { conn, incoming, consumed, outgoing, .. } = self;
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut incoming[*consumed..]);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = encode_into(outgoing, &mut data);
        }
        *consumed += discard;
    }

    /// Reads from the socket into `incoming` (at most `limit` bytes held). `Ok(0)`: EOF.
    fn poll_receive(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<io::Result<usize>> {
        if self.consumed > 0 {
            self.incoming.drain(..self.consumed);
            self.consumed = 0;
        }
        let room = limit.saturating_sub(self.incoming.len());
        if room == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large")));
        }
        // Room is made only once the socket has something: a connection waiting for its
        // client holds no receive buffer.
        ready!(self.tcp.poll_read_ready(cx))?;
        self.incoming.reserve(self.read_size.min(room));
        let spare = (self.incoming.capacity() - self.incoming.len()).min(room);
        // tokio's `poll_read` (unlike `try_read`) takes a short read as proof that the
        // socket is drained and clears its readiness: the next wait goes straight to
        // epoll instead of first finding `EAGAIN` with one more `recvfrom`.
        match poll_read_buf(Pin::new(&mut self.tcp), cx, &mut (&mut self.incoming).limit(spare)) {
            Poll::Ready(Ok(n)) => {
                if n == 0 {
                    self.tcp_eof = true;
                }
                // The handshake's flights vary in size: it reads with full room.
                if !self.conn.is_handshaking() {
                    self.read_size =
                        if n == spare { READ_SIZE } else { n.next_power_of_two().clamp(SMALL_READ, READ_SIZE) };
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Writes `outgoing` to the socket; frees it once all is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if self.close_queued {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection closed for writing")));
        }
        if self.outgoing.len() - self.sent >= OUTPUT_HIGH {
            ready!(self.poll_send(cx))?;
        }
        let had_plain = self.plain.len();
        loop {
            match self.step(&mut Job::Write(bufs))? {
                Step::Again => continue,
                Step::Wrote(n) => {
                    // Reads process every whole record they receive, so a write finds none;
                    // if it ever did, the reader must not sleep on the socket past it.
                    if self.plain.len() > had_plain {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Blocked | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection not writable")));
                }
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = (this.plain.len() - this.plain_at).min(buf.remaining());
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match this.step(&mut Job::Read(buf)) {
                Ok(Step::Again) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Ok(Step::Again) => continue,
                Ok(Step::Closed) => return Poll::Ready(Ok(())),
                Ok(Step::Blocked | Step::Wrote(_)) => {
                    // Processing may have produced records for the peer (a KeyUpdate
                    // answer): send them now if the socket takes them; if it does not,
                    // this read is woken to try again.
                    if this.sent < this.outgoing.len()
                        && let Poll::Ready(Err(e)) = this.poll_send(cx)
                    {
                        return Poll::Ready(Err(e));
                    }
                    if this.tcp_eof {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed connection without sending TLS close_notify",
                        )));
                    }
                    ready!(this.poll_receive(cx, MAX_RECORD))?;
                }
                Err(e) => {
                    this.queue_alert();
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    /// close_notify, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            loop {
                match this.step(&mut Job::Close) {
                    Ok(Step::Again) => continue,
                    // Not writable (the peer's close already ended it): just FIN.
                    Ok(_) => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            this.close_queued = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// The plaintext of a write: the first slice as it is, or several small ones gathered into
/// one record (hyper writes a response head and a small body as two slices). Returns the
/// bytes and how many of the caller's bytes they are.
fn gather<'a>(bufs: &'a [IoSlice<'a>]) -> (std::borrow::Cow<'a, [u8]>, usize) {
    let mut slices = bufs.iter().filter(|b| !b.is_empty());
    let first: &'a [u8] = slices.next().map(|b| &b[..]).unwrap_or(&[]);
    if first.len() >= GATHER || bufs.len() == 1 {
        let n = first.len().min(WRITE_CHUNK);
        return (std::borrow::Cow::Borrowed(&first[..n]), n);
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut joined = Vec::with_capacity(total.min(GATHER));
    joined.extend_from_slice(first);
    for b in slices {
        let n = b.len().min(GATHER - joined.len());
        joined.extend_from_slice(&b[..n]);
        if joined.len() == GATHER {
            break;
        }
    }
    let n = joined.len();
    (std::borrow::Cow::Owned(joined), n)
}

/// Appends a record rustls has ready (handshake message, alert) to `out`.
fn encode_into<Data>(out: &mut Vec<u8>, data: &mut rustls::unbuffered::EncodeTlsData<'_, Data>) -> io::Result<()> {
    let too_small = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    };
    append_with(out, 1024, |o| data.encode(o), too_small).map(|_| ())
}

/// Appends the records an encrypting call produces (`plaintext` bytes in) to `out`.
fn encrypt_into(
    out: &mut Vec<u8>,
    plaintext: usize,
    encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<usize> {
    let too_small = |e: &EncryptError| match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    };
    if plaintext >= BULK_WRITE {
        out.reserve((OUTPUT_HIGH + MAX_RECORD).saturating_sub(out.len()));
    }
    // Per record: 5 header + up to 24 of nonce, tag and content type.
    append_with(out, plaintext + plaintext.div_ceil(16 * 1024).max(1) * 64, encrypt, too_small)
}

/// Runs `write` (rustls writing into a slice) at the end of `out`, growing it to what rustls
/// says it needs (`too_small`) until the output fits.
fn append_with<E: std::fmt::Display>(
    out: &mut Vec<u8>,
    mut need: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<usize>,
) -> io::Result<usize> {
    let start = out.len();
    loop {
        out.resize(start + need, 0);
        let r = write(&mut out[start..]);
        match r {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(n);
            }
            Err(e) => {
                out.truncate(start);
                match too_small(&e) {
                    Some(required) if required > need => need = required,
                    _ => return Err(io::Error::other(e.to_string())),
                }
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_crl_proxy_testkit::pki::{Authority, Spec};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore};
    use std::io::Write;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    struct Pki {
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    }

    /// A server requiring client certificates from a test root, and a client with one issued
    /// by that root (`refuse`: by another, to be refused).
    fn pki(refuse: bool) -> Pki {
        pki_versions(refuse, rustls::DEFAULT_VERSIONS)
    }

    /// [`pki`] with a client limited to `versions`.
    fn pki_versions(refuse: bool, versions: &[&'static rustls::SupportedProtocolVersion]) -> Pki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let root = Authority::root("stream-test-root");
        let other = Authority::root("stream-test-other");
        let serving = root.issue(&Spec::server("localhost", &["localhost"], &[]));
        let client = if refuse { &other } else { &root }.issue(&Spec::client("alice", &["dev"]));
        let mut roots = RootCertStore::empty();
        roots.add(root.der.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone()).build().unwrap();
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![serving.der.clone()],
                PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(client.der.to_vec())],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let mut server = server;
        server.send_tls13_tickets = 0; // as in production (`crate::tls`)
        Pki { server: Arc::new(server), client: Arc::new(client) }
    }

    /// A connected pair: our server stream and a tokio-rustls client over `wrap(tcp)`.
    async fn pair(
        p: &Pki,
    ) -> (Result<TlsStream, (io::Error, TcpStream)>, io::Result<tokio_rustls::client::TlsStream<TcpStream>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(p.client.clone());
        let client = async move {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
        };
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(tcp, p.server.clone()).await
        };
        tokio::join!(server, client)
    }

    /// A handshake that succeeds: our server stream and the client.
    async fn connected() -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let (server, client) = pair(&pki(false)).await;
        (server.map_err(|(e, _)| e).expect("server handshake"), client.expect("client handshake"))
    }

    fn holds_no_buffers(s: &TlsStream) -> bool {
        s.incoming.capacity() == 0 && s.plain.capacity() == 0 && s.outgoing.capacity() == 0
    }

    #[tokio::test]
    async fn data_both_ways_in_any_split_and_no_buffers_held_between_exchanges() {
        let (mut server, mut client) = connected().await;
        assert!(server.session().peer_certificates().is_some_and(|c| c.len() == 1));
        // 100 KiB each way: several records, reads into small buffers (the rest of a record
        // waits in `plain`), writes larger than a record.
        let data: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (mut got, d) = (Vec::new(), data.clone());
        let writer = async move {
            client.write_all(&d).await.unwrap();
            client.flush().await.unwrap();
            let mut back = vec![0u8; d.len()];
            client.read_exact(&mut back).await.unwrap();
            (client, back)
        };
        let reader = async {
            let mut buf = [0u8; 1000];
            while got.len() < data.len() {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF");
                got.extend_from_slice(&buf[..n]);
            }
            server.write_all(&got).await.unwrap();
            server.flush().await.unwrap();
        };
        let ((mut client, back), ()) = tokio::join!(writer, reader);
        assert_eq!(got, data);
        assert_eq!(back, data);
        // Between exchanges, with the reader waiting on the socket, nothing is allocated.
        let mut one = [0u8; 1];
        assert!(tokio::time::timeout(Duration::from_millis(50), server.read(&mut one)).await.is_err());
        assert!(holds_no_buffers(&server), "idle connection holds buffers");
        // Vectored writes of small slices are taken in one go (one record).
        let n = std::future::poll_fn(|cx| {
            Pin::new(&mut server).poll_write_vectored(cx, &[IoSlice::new(b"head "), IoSlice::new(b"body")])
        })
        .await
        .unwrap();
        assert_eq!(n, 9);
        server.flush().await.unwrap();
        let mut nine = [0u8; 9];
        client.read_exact(&mut nine).await.unwrap();
        assert_eq!(&nine, b"head body");
        // close_notify from the client: EOF, then our own on shutdown.
        client.shutdown().await.unwrap();
        assert_eq!(server.read(&mut one).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        assert_eq!(client.read(&mut one).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn small_requests_are_read_with_small_room_and_bulk_with_full_room() {
        let (mut server, mut client) = connected().await;
        let mut buf = vec![0u8; 64 * 1024];
        for round in 0..3u8 {
            client.write_all(&[round; 200]).await.unwrap();
            client.flush().await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[round; 200][..]);
            assert_eq!(server.read_size, SMALL_READ, "after a {n}-byte request");
        }
        // A bulk upload after small requests: the first read fills its small room, the next
        // ones ask for full room, and every byte arrives.
        let data: Vec<u8> = (0..50 * 1024u32).map(|i| (i % 253) as u8).collect();
        let d = data.clone();
        let writer = async move {
            client.write_all(&d).await.unwrap();
            client.flush().await.unwrap();
            client
        };
        let reader = async {
            let (mut got, mut largest) = (Vec::new(), 0);
            while got.len() < data.len() {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF");
                got.extend_from_slice(&buf[..n]);
                largest = largest.max(server.read_size);
            }
            (got, largest)
        };
        let (_client, (got, largest)) = tokio::join!(writer, reader);
        assert_eq!(got, data);
        assert_eq!(largest, READ_SIZE);
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_answered_and_traffic_goes_on() {
        let (mut server, mut client) = connected().await;
        for round in 0..3u8 {
            // The client asks for a KeyUpdate (and for ours in return) before its next record.
            client.get_mut().1.refresh_traffic_keys().expect("TLS 1.3");
            client.write_all(&[round; 100]).await.unwrap();
            client.flush().await.unwrap();
            let mut got = [0u8; 100];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 100]);
            server.write_all(&[round + 10; 100]).await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round + 10; 100], "round {round}");
        }
    }

    #[tokio::test]
    async fn tls12_carries_data_both_ways() {
        let p = pki_versions(false, &[&rustls::version::TLS12]);
        let (server, client) = pair(&p).await;
        let (mut server, mut client) = (server.map_err(|(e, _)| e).unwrap(), client.unwrap());
        assert_eq!(server.session().protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn records_trickling_in_byte_by_byte_are_reassembled() {
        let (mut server, client) = connected().await;
        // Encrypt on the client side, then deliver the records one byte per TCP write.
        let (tcp, mut conn) = client.into_inner();
        conn.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        let mut tcp = tcp;
        let trickle = async move {
            for b in wire {
                tcp.write_all(&[b]).await.unwrap();
                tcp.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            tcp
        };
        let read = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 18 {
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let (_tcp, got) = tokio::join!(trickle, read);
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn many_small_records_in_one_read_come_out_in_order() {
        let (mut server, client) = connected().await;
        let (mut tcp, mut conn) = client.into_inner();
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let piece = format!("{i},");
            conn.writer().write_all(piece.as_bytes()).unwrap(); // one record per write
            expected.extend_from_slice(piece.as_bytes());
        }
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        assert!(wire.len() > 500 * 22, "expected one record per piece");
        tcp.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < expected.len() {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, expected);
        assert!(holds_no_buffers(&server), "everything read, yet buffers are held");
    }

    #[tokio::test]
    async fn an_oversized_record_is_an_error_not_a_growing_buffer() {
        let (mut server, client) = connected().await;
        let (mut tcp, _) = client.into_inner();
        // An application-data record header announcing 65,000 bytes, then that many bytes.
        let mut wire = vec![0x17, 0x03, 0x03, 0xfd, 0xe8];
        wire.resize(5 + 65_000, 0);
        let send = async move {
            let _ = tcp.write_all(&wire).await;
            tcp
        };
        let read = async {
            let mut buf = [0u8; 64];
            tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await.expect("read hangs")
        };
        let (_tcp, r) = tokio::join!(send, read);
        assert!(r.is_err(), "an oversized record must fail the read: {r:?}");
        assert!(server.incoming.capacity() <= MAX_RECORD + READ_SIZE, "buffer grew to {}", server.incoming.capacity());
    }

    #[tokio::test]
    async fn a_refused_client_gets_the_alert_and_the_tcp_stream_comes_back() {
        let p = pki(true);
        let (server, client) = pair(&p).await;
        let (err, _tcp) = server.err().expect("the handshake must fail");
        let tls = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(tls, Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
            "{err:?}"
        );
        // TLS 1.3: the client learns of the refusal on its first read.
        let mut client = client.expect("TLS 1.3 client handshake completes before the server's verdict");
        let mut one = [0u8; 1];
        let e = client.read(&mut one).await.expect_err("the client must see the alert");
        assert!(e.to_string().contains("UnknownCA"), "{e}");
    }

    #[tokio::test]
    async fn eof_without_close_notify_is_an_error() {
        let (mut server, client) = connected().await;
        let (mut tcp, _) = client.into_inner();
        tcp.shutdown().await.unwrap();
        let mut one = [0u8; 1];
        let e = server.read(&mut one).await.expect_err("truncation must not look like a clean end");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
