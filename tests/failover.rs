//! Several upstreams: round-robin over the healthy ones, an upstream killed mid-run is
//! skipped at once for requests without a body (retried elsewhere, nothing was sent) and
//! after its failed health check for the rest; readiness holds while one upstream answers.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;

/// Which upstream answered: the stand-in reports its own address in `/api`.
async fn served_by(env_addr: std::net::SocketAddr, tls: rustls::ClientConfig) -> Result<String, String> {
    let reply = request(env_addr, tls, Http::H2, get("/api")).await?;
    if reply.status != 200 {
        return Err(format!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body)));
    }
    Ok(reply.json()["serverAddressByClientCIDRs"][0]["serverAddress"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_is_skipped_and_the_other_serves() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let a = Upstream::start(pki.sim_config()).await;
    let b = Upstream::start(pki.sim_config()).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut args = pki.proxy_args(a.addr);
    args.extend(["--upstream".to_string(), format!("https://{}", b.addr)]);
    // Both upstreams are verified as "localhost" (--upstream-server-name from the fixture).
    let proxy = ProxyProcess::start(tmp.path(), &args);
    let tls = || client_tls(&pki.root_der(), Some((&pki.alice, &pki.users_ca)), Http::H2);

    let mut seen = HashSet::new();
    for _ in 0..6 {
        seen.insert(served_by(proxy.addr, tls()).await.unwrap());
    }
    assert_eq!(seen, HashSet::from([a_addr.clone(), b_addr.clone()]), "round-robin over both");

    a.stop().await;
    // Requests without a body never fail: a refused connection is retried on the other.
    for i in 0..10 {
        assert_eq!(served_by(proxy.addr, tls()).await.unwrap(), b_addr, "request {i} after A died");
    }
    // Requests with a body are never replayed; once A is ejected or fails its health check,
    // they go to B.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 5 {
        let body = Bytes::from(vec![7u8; 4096]);
        let req = http::Request::post("https://localhost/_sim/echo").body(Full::new(body.clone())).unwrap();
        let reply = request(proxy.addr, tls(), Http::H2, req).await.unwrap();
        match reply.status.as_u16() {
            200 => {
                assert_eq!(reply.body, body);
                ok_in_a_row += 1;
            }
            503 => {
                assert_eq!(reply.json()["kind"], "Status");
                ok_in_a_row = 0;
            }
            other => panic!("unexpected {other}"),
        }
        assert!(Instant::now() < deadline, "POSTs never settled on the live upstream");
    }
    proxy.wait_for_log("trying another upstream");
}
