//! The HTTP body types shared by both sides of the proxy: [`ProxyBody`], what flows through
//! it both ways, and [`RequestBody`], what a downstream request's body may be.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body type flowing through the proxy, both ways.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A downstream request's body: hyper's, or hyper's seen through a wrapper (`crate::h1`).
pub trait RequestBody: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static {}
impl<B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static> RequestBody for B {}

/// An empty body.
pub fn empty() -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|n| match n {}).boxed()
}
