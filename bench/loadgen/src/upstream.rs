//! `loadgen watch-upstream`: a tiny kube-apiserver stand-in for the `scale` scenario's
//! watch shape. TLS (requires a client certificate from `--client-ca`, like nginx with the
//! front-proxy CA), HTTP/1.1 and HTTP/2 (ALPN). `GET /watch...` answers 200 with a body that
//! never ends: one JSON line (a watch event, `--event-bytes` long) every `--interval-ms` per
//! request, chunked over HTTP/1.1. Any other path: a 55-byte JSON Status, as nginx does.
//! Exits after `--max-seconds`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// CA that client certificates must chain to (the front-proxy CA).
    #[arg(long)]
    pub client_ca: PathBuf,
    /// Written with "127.0.0.1:PORT" once listening.
    #[arg(long)]
    pub ready_file: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 200)]
    pub event_bytes: usize,
    #[arg(long, default_value_t = 3600.0)]
    pub max_seconds: f64,
}

/// A watch body: one event line per tick, forever.
struct Ticks {
    tick: tokio::time::Interval,
    line: Bytes,
    sent: Arc<AtomicU64>,
}

impl Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.tick.poll_tick(cx) {
            Poll::Ready(_) => {
                self.sent.fetch_add(1, Relaxed);
                Poll::Ready(Some(Ok(Frame::data(self.line.clone()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

enum Resp {
    Small(Option<Bytes>),
    Watch(Ticks),
}

impl Body for Resp {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Resp::Small(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Resp::Watch(t) => Pin::new(t).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        matches!(self, Resp::Small(None))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Resp::Small(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Resp::Small(None) => http_body::SizeHint::with_exact(0),
            Resp::Watch(_) => http_body::SizeHint::default(),
        }
    }
}

const STATUS: &[u8] = br#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#;

pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let max = Duration::from_secs_f64(args.max_seconds);
    rt.block_on(async move {
        tokio::select! {
            r = serve(args) => r,
            _ = tokio::time::sleep(max) => Ok(()),
        }
    })
}

async fn serve(args: Args) -> Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args.client_ca)? {
        roots.add(c?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&args.cert)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind(&args.listen).await.context("bind")?;
    let addr = listener.local_addr()?;
    let tmp = args.ready_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, &args.ready_file)?;

    let mut line = format!(
        r#"{{"type":"MODIFIED","object":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"bench","namespace":"default"}},"data":{{"k":""#
    );
    let pad = args.event_bytes.saturating_sub(line.len() + 5);
    line.push_str(&"x".repeat(pad));
    line.push_str("\"}}\n");
    let line = Bytes::from(line);
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let sent = Arc::new(AtomicU64::new(0));

    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("watch-upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, line, sent) = (acceptor.clone(), line.clone(), sent.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (line, sent) = (line.clone(), sent.clone());
                async move {
                    let body = if req.uri().path().starts_with("/watch") {
                        let mut tick = tokio::time::interval(interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        Resp::Watch(Ticks { tick, line, sent })
                    } else {
                        Resp::Small(Some(Bytes::from_static(STATUS)))
                    };
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(body)
                            .expect("response"),
                    )
                }
            });
            let io = TokioIo::new(tls);
            if h2 {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1000)
                    .serve_connection(io, svc)
                    .await;
            } else {
                let _ = http1::Builder::new().serve_connection(io, svc).await;
            }
        });
    }
}
