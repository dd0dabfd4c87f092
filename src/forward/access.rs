//! The access log (`--access-log`): one `access` event per finished request, written when
//! the response body ends (so `bytes` and `duration` are the real ones, also for watches),
//! with user, groups, method, verb class, path, status, bytes, duration, upstream and peer.
//! Request headers, query strings and bodies are never logged (they may carry tokens).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::ProxyBody;

/// What is known of a request when its response starts.
#[derive(Debug)]
pub struct Record {
    pub peer: SocketAddr,
    pub user: String,
    pub groups: String,
    pub method: String,
    pub verb: &'static str,
    pub path: String,
    pub status: u16,
    pub upstream: String,
    pub start: Instant,
}

impl Record {
    fn log(&self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "access",
            peer = %self.peer,
            user = %self.user,
            groups = %self.groups,
            method = %self.method,
            verb = self.verb,
            path = %self.path,
            status = self.status,
            bytes,
            duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            upstream = %self.upstream,
            complete,
            "access"
        );
    }
}

/// A response body that writes the access record when it ends (or is dropped early).
pub struct Logged {
    inner: ProxyBody,
    bytes: u64,
    record: Option<Record>,
}

impl Logged {
    pub fn new(inner: ProxyBody, record: Record) -> Self {
        Self { inner, bytes: 0, record: Some(record) }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(r) = self.record.take() {
            r.log(self.bytes, complete);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
