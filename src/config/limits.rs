//! What one client may hold and how long anything may take: the client-side timeouts,
//! `--idle-timeout`, `--max-connections`, header and stream limits → [`Limits`].

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{Span, with_default};
use crate::error::ConfigError;

const SHUTDOWN_GRACE: Span = Span(Duration::from_secs(30));
const TLS_HANDSHAKE_TIMEOUT: Span = Span(Duration::from_secs(10));
const REQUEST_HEADER_TIMEOUT: Span = Span(Duration::from_secs(30));
const IDLE_TIMEOUT: Span = Span(Duration::from_secs(90));
const MAX_CONNECTIONS: usize = 10_000;
/// kube-apiserver's limit.
const MAX_HEADER_BYTES: usize = 1 << 20;
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 1000;

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Limits and timeouts")]
#[serde(rename_all = "kebab-case")]
pub struct LimitFlags {
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time to let in-flight requests finish after SIGTERM/SIGINT", SHUTDOWN_GRACE))]
    pub shutdown_grace: Option<Span>,
    #[arg(long, value_name = "DURATION",
        help = with_default("Maximum time for a client's TLS handshake", TLS_HANDSHAKE_TIMEOUT))]
    pub tls_handshake_timeout: Option<Span>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Maximum time for a client to send a request's headers (HTTP/1.1)", REQUEST_HEADER_TIMEOUT))]
    pub request_header_timeout: Option<Span>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Close client connections that carry no request for this long (never a live watch or tunnel)",
        IDLE_TIMEOUT))]
    pub idle_timeout: Option<Span>,
    #[arg(long, value_name = "N", help = with_default(
        "Maximum open client connections; more are refused at accept", MAX_CONNECTIONS))]
    pub max_connections: Option<usize>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "Maximum size of a request's headers, HTTP/1.1 and HTTP/2",
        format!("{MAX_HEADER_BYTES} ({} MiB, as kube-apiserver)", MAX_HEADER_BYTES >> 20)))]
    pub max_header_bytes: Option<usize>,
    #[arg(long, value_name = "N", help = with_default(
        "Maximum concurrent HTTP/2 streams per client connection", HTTP2_MAX_CONCURRENT_STREAMS))]
    pub http2_max_concurrent_streams: Option<u32>,
}

/// Limits on what one client may hold (explicit, see the README's "Security model").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 rapid reset (CVE-2023-44487): streams reset by the client before we accept them.
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams we reset because of client errors, before GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
}

/// The client-side timeouts that are not [`Limits`].
pub(super) struct Timeouts {
    pub shutdown_grace: Duration,
    pub tls_handshake: Duration,
    pub request_header: Duration,
}

pub(super) fn resolve(l: &Layers<'_, LimitFlags>) -> Result<(Limits, Timeouts), ConfigError> {
    let limits = Limits {
        idle_timeout: pick!(l, idle_timeout).or(IDLE_TIMEOUT).0,
        max_connections: pick!(l, max_connections).check(|&n| n >= 1, "must be at least 1")?.or(MAX_CONNECTIONS),
        max_header_bytes: pick!(l, max_header_bytes)
            .check(|&n| n >= 4096, "must be at least 4096")?
            .or(MAX_HEADER_BYTES),
        http2_max_concurrent_streams: pick!(l, http2_max_concurrent_streams)
            .check(|&n| n >= 1, "must be at least 1")?
            .or(HTTP2_MAX_CONCURRENT_STREAMS),
        http2_max_pending_accept_reset_streams: 20,
        http2_max_local_error_reset_streams: 1024,
    };
    let timeouts = Timeouts {
        shutdown_grace: pick!(l, shutdown_grace).or(SHUTDOWN_GRACE).0,
        tls_handshake: pick!(l, tls_handshake_timeout).or(TLS_HANDSHAKE_TIMEOUT).0,
        request_header: pick!(l, request_header_timeout).or(REQUEST_HEADER_TIMEOUT).0,
    };
    Ok((limits, timeouts))
}
