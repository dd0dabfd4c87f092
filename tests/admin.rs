//! The admin endpoint of the real binary: `/livez`, `/readyz` (upstream health, CRL
//! freshness) and `/metrics` scraped after real traffic, refusals, reloads and closures.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;

#[tokio::test]
async fn livez_readyz_and_metrics_after_real_traffic() {
    let env = Env::start(&[]).await;
    assert_eq!(admin_get(env.proxy.admin, "/livez").await, (200, "ok\n".into()));
    wait_admin(env.proxy.admin, "/readyz", "ready", |s, _| s == 200).await;

    user_info(&env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.unwrap());
    assert!(env.request(Some(&env.pki.bob), Http::H1, whoami_request()).await.is_err());
    let expired = {
        let mut spec = kube_crl_proxy_testkit::pki::Spec::client("old", &[]);
        spec.not_before = time::Duration::days(-10);
        spec.not_after = time::Duration::days(-1);
        env.pki.users_ca.issue(&spec)
    };
    assert!(env.request(Some(&expired), Http::H1, whoami_request()).await.is_err());
    let req = http::Request::get("https://localhost/_sim/headers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(env.request(None, Http::H1, req).await.unwrap().status, 200);

    let m = wait_admin(env.proxy.admin, "/metrics", "counting the expired refusal", |_, b| {
        series(b, r#"kube_crl_proxy_handshakes_total{outcome="expired"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(series(&m, r#"kube_crl_proxy_handshakes_total{outcome="ok"}"#), Some(1.0), "{m}");
    assert_eq!(series(&m, r#"kube_crl_proxy_handshakes_total{outcome="revoked"}"#), Some(1.0), "{m}");
    assert_eq!(series(&m, r#"kube_crl_proxy_handshakes_total{outcome="no_cert"}"#), Some(1.0), "{m}");
    assert_eq!(series(&m, r#"kube_crl_proxy_requests_total{code="201",method="POST",verb="other"}"#), Some(1.0), "{m}");
    assert_eq!(series(&m, r#"kube_crl_proxy_requests_total{code="200",method="GET",verb="other"}"#), Some(1.0), "{m}");
    assert_eq!(crl_series(&m, "kube_crl_proxy_crl_entries", "CN=test-users-ca"), Some(1.0), "{m}");
    assert_eq!(crl_series(&m, "kube_crl_proxy_crl_entries", "CN=test-root-ca"), Some(0.0), "{m}");
    let left = crl_series(&m, "kube_crl_proxy_crl_seconds_to_next_update", "CN=test-users-ca").unwrap();
    assert!(left > 6.0 * 86_400.0 && left <= 7.0 * 86_400.0, "{left}");
    assert!(series(&m, "kube_crl_proxy_upstream_request_duration_seconds_count").unwrap() >= 2.0, "{m}");
    assert_eq!(series(&m, "kube_crl_proxy_upstream_up"), Some(1.0), "{m}");
    // No label carries client input: the injected-looking user name never appears.
    assert!(!m.contains("alice") && !m.contains("bob"), "{m}");
}

#[tokio::test]
async fn readyz_is_503_while_the_upstream_is_down() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = ProxyProcess::start(tmp.path(), &pki.proxy_args(dead));
    assert_eq!(admin_get(proxy.admin, "/livez").await.0, 200);
    // Give the health check (every 500 ms in tests) time to run at least twice.
    proxy.wait_for_log("upstream health check failed");
    let (status, body) = admin_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream"), "{body}");
    let m = admin_get(proxy.admin, "/metrics").await.1;
    assert_eq!(series(&m, "kube_crl_proxy_upstream_up"), Some(0.0), "{m}");
}

#[tokio::test]
async fn reloads_failures_and_closures_are_counted() {
    let env = Env::start(&[]).await;
    // Keep one of alice's connections open (HTTP/2), then revoke her.
    let stream = connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H2)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let resp = send.send_request(get_empty("/version")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let m = admin_get(env.proxy.admin, "/metrics").await.1;
    assert!(series(&m, "kube_crl_proxy_open_connections").unwrap() >= 1.0, "{m}");

    env.pki.write_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    let m = wait_admin(env.proxy.admin, "/metrics", "counting the closure", |_, b| {
        series(b, r#"kube_crl_proxy_connections_closed_total{reason="revoked"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(series(&m, r#"kube_crl_proxy_reloads_total{kind="crl"}"#), Some(1.0), "{m}");
    // The connection really went away.
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await.expect("connection closed");

    std::fs::write(env.pki.path("crl.pem"), b"garbage").unwrap();
    wait_admin(env.proxy.admin, "/metrics", "counting the failed reload", |_, b| {
        series(b, r#"kube_crl_proxy_reload_failures_total{kind="crl"}"#) == Some(1.0)
    })
    .await;
    // The last good CRL (2 entries) is still the one in use and reported.
    let m = admin_get(env.proxy.admin, "/metrics").await.1;
    assert_eq!(crl_series(&m, "kube_crl_proxy_crl_entries", "CN=test-users-ca"), Some(2.0), "{m}");
}

fn get_empty(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://localhost{path}")).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn access_log_records_finished_requests_without_secrets() {
    let env = Env::start(&["--access-log"]).await;
    user_info(&env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.unwrap());
    let req = http::Request::get("https://localhost/_sim/bytes?n=12345")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(env.request(None, Http::H1, req).await.unwrap().body.len(), 12345);
    let logs = env.proxy.wait_for_log("bytes=12345");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(" access ")).collect();
    assert_eq!(lines.len(), 2, "{logs}");
    let alice = lines.iter().find(|l| l.contains("user=alice")).expect("alice's line");
    for field in
        ["groups=dev,ops", "method=POST", "path=/apis/authentication.k8s.io/v1/selfsubjectreviews", "status=201"]
    {
        assert!(alice.contains(field), "{field} in {alice}");
    }
    let token = lines.iter().find(|l| l.contains("bytes=12345")).unwrap();
    assert!(token.contains("status=200") && token.contains("path=/_sim/bytes"), "{token}");
    assert!(!logs.contains(TOKEN), "the bearer token must never be logged");
    assert!(!logs.contains("n=12345"), "query strings are not logged");
}
