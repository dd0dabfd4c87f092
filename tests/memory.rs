//! What an idle connection costs, against the real binary: its resident memory growth per
//! idle HTTP/2 connection after one request each. The bound catches a return of the buffers
//! an HTTP/2 connection used to hold for its whole life (h2's 16 KiB write buffer,
//! tokio-util's 8 KiB read buffer, the 4 KiB HPACK decode buffer, the stream slabs): see
//! "HTTP/2 connection memory" in bench/README.md. Those buffers are released by
//! `patches/h2-0.4.20-release-idle-buffers.patch`, carried in `third_party/h2/`
//! (patches/README.md): this fails if that is lost, e.g. by a move to an h2 release without it.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::timeout;

/// Bound for each step: detects hangs, not speed.
const WAIT: Duration = Duration::from_secs(10);
/// Idle HTTP/2 connections held at once.
const CONNS: usize = 300;
/// Resident bytes per idle HTTP/2 connection: the debug build measured 15.3 kB with the
/// buffers released and 33.5 kB without them (unpatched h2); release builds 13 kB and 30 kB.
const LIMIT_BYTES: u64 = 24_000;

/// Defends: an idle HTTP/2 connection holds no codec buffers (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_hold_no_codec_buffers() {
    let env = Env::start(&["--idle-timeout", "600s"]).await;
    let pid = env.proxy.pid();
    // Warm up: pools, the upstream connection and the allocator's arenas exist before the
    // baseline.
    for _ in 0..20 {
        let r = env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.expect("warm-up request");
        assert_eq!(user_info(&r).username, "alice");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let mut held = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let stream = timeout(WAIT, connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H2)))
            .await
            .expect("TLS handshake in time")
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
        let driver = tokio::spawn(conn);
        let resp = timeout(WAIT, send.send_request(whoami_request())).await.expect("answer in time").unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let body = timeout(WAIT, http_body_util::BodyExt::collect(resp.into_body())).await.expect("body in time");
        body.expect("body");
        held.push((send, driver));
    }
    // Let the proxy's side settle (response bodies dropped, buffers flushed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per_conn = after.saturating_sub(before) * 1024 / CONNS as u64;
    eprintln!("{CONNS} idle HTTP/2 connections: RSS {before} KiB -> {after} KiB, {per_conn} bytes per connection");
    assert!(
        per_conn < LIMIT_BYTES,
        "{per_conn} bytes per idle HTTP/2 connection (limit {LIMIT_BYTES}): RSS {before} KiB -> {after} KiB"
    );
    for (send, driver) in held {
        drop(send);
        driver.abort();
    }
}
