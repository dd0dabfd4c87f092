//! One upstream (`--upstream`): its pools, HTTP/2 ([`H2Pool`], unless `--upstream-http2
//! false`) and HTTP/1.1 (hyper's pooled client: for upgrades, for an upstream without h2, and
//! for every request with HTTP/2 off), and one attempt to send a request over them.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connect::{Alpn, ConnectError, ConnectFailure, Connector, Credentials};
use super::h2pool::H2Pool;
use super::health::Health;
use super::retry::Failure;
use crate::body::ProxyBody;
use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::error::ProxyError;

/// How long hyper's HTTP/1.1 pool keeps an idle connection.
const HTTP1_IDLE: Duration = Duration::from_secs(90);

/// hyper's HTTP/1.1 pool for one credentials generation.
struct Http1 {
    generation: u64,
    client: Client<Connector, ProxyBody>,
}

/// One upstream.
pub struct Target {
    base: Uri,
    pub label: String,
    pub health: Health,
    h2: Option<H2Pool>,
    http1_connector: Connector,
    /// Replaced (with its idle connections) when the credentials change; connections in use
    /// finish their request first.
    http1: ArcSwap<Http1>,
}

impl Target {
    pub fn new(
        cfg: &UpstreamConfig,
        target: &UpstreamTarget,
        credentials: &Arc<Credentials>,
        open: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        let connector = |alpn| {
            Connector::new(credentials.clone(), target.server_name.clone(), alpn, cfg.connect_timeout, open.clone())
        };
        // HTTP/2 connections with a stream budget each (see `H2Pool`): batched frames cost less
        // CPU per request than a connection per request in flight.
        let h2 = cfg.http2.then(|| H2Pool::new(connector(Alpn::OffersH2), target.url.clone(), cfg.http2_max_streams));
        let http1_connector = connector(Alpn::Http1);
        let http1 = ArcSwap::from_pointee(http1_pool(&http1_connector));
        Self { base: target.url.clone(), label: target.label(), health: Health::default(), h2, http1_connector, http1 }
    }

    /// Sends a request to this upstream once (its URI made absolute by [`Target::uri`]).
    /// (Not an `async fn`: a layer of its own would keep a copy of `req` in every request's
    /// future.)
    pub fn attempt(
        &self,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Failure>> + Send + '_ {
        match self.h2.as_ref().filter(|p| !upgrade && !p.http1_only()) {
            Some(pool) => Either::Left(pool.send(req)),
            None => {
                let sent = self.http1().client.request(req);
                Either::Right(async move {
                    match sent.await {
                        Ok(resp) => Ok(resp.map(|body| body.boxed())),
                        Err(e) if e.is_connect() => Err(Failure::Connect(match ConnectError::find(&e) {
                            Some(c) => c.clone(),
                            None => ConnectError::other(ConnectFailure::Unreachable, &e),
                        })),
                        Err(e) => Err(Failure::Failed(Box::new(e))),
                    }
                })
            }
        }
    }

    /// The HTTP/1.1 pool of the current credentials.
    fn http1(&self) -> Arc<Http1> {
        let pool = self.http1.load_full();
        if pool.generation == self.http1_connector.generation() {
            return pool;
        }
        // Dropping the last handle on the old pool closes its idle connections.
        let fresh = Arc::new(http1_pool(&self.http1_connector));
        self.http1.store(fresh.clone());
        fresh
    }

    /// `uri`'s path and query on this upstream.
    pub fn uri(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadRequest("invalid request target".into()))?);
        Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target".into()))
    }
}

/// hyper's pooled HTTP/1.1 client over `connector`, for the credentials current now.
fn http1_pool(connector: &Connector) -> Http1 {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(HTTP1_IDLE);
    Http1 { generation: connector.generation(), client: b.build(connector.clone()) }
}
