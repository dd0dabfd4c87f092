//! The one retry policy: what a failed attempt to send a request upstream says
//! ([`Failure`], as the pools report it), and whether the request goes again, to the same
//! upstream or to the next one ([`Next`]). The pools never retry on their own (hyper's
//! HTTP/1.1 pool excepted: it re-sends a request that a reused idle connection closed under
//! before any of it was written, the rule of [`Failure::Unsent`]).
//!
//! - Nothing reached the upstream because its connection could not be opened: the upstream
//!   is skipped for a while and a request without a body goes to the next one (a request
//!   with a body was consumed: it gets the error).
//! - The request came back unsent (its HTTP/2 connection was closing after a GOAWAY, or the
//!   upstream turned out not to speak HTTP/2): it goes again to the same upstream, on another
//!   connection.
//! - The upstream went away before answering (a GOAWAY above the stream, `REFUSED_STREAM`):
//!   unprocessed as far as HTTP/2 says, but hyper cannot tell which, so only a request that is
//!   safe to repeat (GET, HEAD, OPTIONS, TRACE without a body) goes again, on another
//!   connection.
//! - Anything else was (at least in part) sent: never repeated.
//!
//! An upstream is asked again at most once per request (a switch to HTTP/1.1 aside).

use http::{Method, Request};

use super::connect::{ConnectError, ConnectFailure};
use crate::body::ProxyBody;
use crate::error::{ProxyError, error_chain};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be opened.
    Connect(ConnectError),
    /// The request came back unsent.
    Unsent(Box<Request<ProxyBody>>, Unsent),
    /// The upstream went away before answering.
    WentAway(hyper::Error),
    /// The request was sent, at least in part, and failed (or the HTTP/2 handshake did).
    Failed(BoxError),
}

/// Why a request came back unsent.
#[derive(Debug)]
pub enum Unsent {
    /// The upstream answered ALPN without `h2`: its pool now sends HTTP/1.1.
    NotHttp2,
    /// Its HTTP/2 connection was closing (a GOAWAY was received).
    Closing(hyper::Error),
}

/// What to do after a failed attempt.
pub enum Next {
    /// Send it again to the same upstream: the request itself, or (`None`) a copy of its head.
    Again(Option<Request<ProxyBody>>),
    /// Skip this upstream for a while; a request without a body goes to the next one.
    Elsewhere(ProxyError),
    /// Answer with this error.
    Stop(ProxyError),
}

/// The head of a request without a body, to send it again.
pub struct Replay {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    /// A copy of `req`'s head if it has no body (a request with one is never repeated).
    pub fn of(req: &Request<ProxyBody>) -> Option<Self> {
        hyper::body::Body::is_end_stream(req.body()).then(|| Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    /// Safe to repeat even if the upstream may have processed it (RFC 9110 §9.2.1).
    fn safe(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
    }

    /// The request again, with an empty body.
    pub fn request(&self) -> Request<ProxyBody> {
        let mut req = Request::new(crate::body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The policy. `asked_again`: this upstream was already asked again for this request.
pub fn next(failure: Failure, upstream: &str, replay: Option<&Replay>, asked_again: &mut bool) -> Next {
    match failure {
        Failure::Connect(e) if e.kind != ConnectFailure::Tls => Next::Elsewhere(e.into_proxy_error(upstream.into())),
        Failure::Unsent(req, Unsent::NotHttp2) => Next::Again(Some(*req)),
        Failure::Unsent(req, Unsent::Closing(e)) if !std::mem::replace(asked_again, true) => {
            tracing::debug!(upstream, "upstream HTTP/2 connection closing ({e}); sending on another");
            Next::Again(Some(*req))
        }
        Failure::WentAway(e) if replay.is_some_and(Replay::safe) && !std::mem::replace(asked_again, true) => {
            tracing::debug!(upstream, "upstream HTTP/2 connection went away ({e}); sending again on another");
            Next::Again(None)
        }
        other => Next::Stop(other.into_proxy_error(upstream.into())),
    }
}

impl Failure {
    /// The error a client gets when the attempt is not repeated.
    pub fn into_proxy_error(self, upstream: String) -> ProxyError {
        let detail = match self {
            Failure::Connect(e) => return e.into_proxy_error(upstream),
            Failure::Unsent(_, Unsent::NotHttp2) => "the upstream did not negotiate HTTP/2 (ALPN h2)".into(),
            Failure::Unsent(_, Unsent::Closing(e)) => format!("HTTP/2 request: {}", error_chain(&e)),
            Failure::WentAway(e) => format!("HTTP/2 request: {}", error_chain(&e)),
            Failure::Failed(e) => error_chain(e.as_ref()),
        };
        ProxyError::UpstreamFailed { upstream, detail }
    }
}
