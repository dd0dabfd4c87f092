//! CRLs fetched over HTTP by the real binary: start-up fetch, refresh with conditional
//! requests, a failing or oversized server (last good kept), the on-disk cache across a
//! restart while the server is down, and distribution points discovered from certificates.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use kube_crl_proxy_testkit::pki::Spec;

/// What the CRL server answers for a path.
#[derive(Clone)]
enum Answer {
    Crl { body: String, etag: String },
    Fail,
}

/// One request the CRL server got: path, the If-None-Match sent, the status answered.
type Seen = (String, Option<String>, u16);

/// A plain-HTTP CRL server on loopback that records the requests it gets.
#[derive(Clone, Default)]
struct CrlServer {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    log: Arc<Mutex<Vec<Seen>>>,
    /// Paths answered only after this delay (a slow CA server).
    delays: Arc<Mutex<HashMap<String, Duration>>>,
}

impl CrlServer {
    async fn start(&self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let me = me.clone();
                        async move {
                            let delay = me.delays.lock().unwrap().get(req.uri().path()).copied();
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            Ok::<_, std::convert::Infallible>(me.answer(&req))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }

    fn answer(&self, req: &http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let inm = req.headers().get("if-none-match").and_then(|v| v.to_str().ok()).map(str::to_string);
        let answer = self.answers.lock().unwrap().get(&path).cloned();
        let (status, resp) = match answer {
            Some(Answer::Crl { etag, .. }) if inm.as_deref() == Some(etag.as_str()) => {
                (304, http::Response::builder().status(304).body(Full::new(Bytes::new())).unwrap())
            }
            Some(Answer::Crl { body, etag }) => (
                200,
                http::Response::builder()
                    .header("etag", etag)
                    .header("content-type", "application/pkix-crl")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            ),
            Some(Answer::Fail) => (500, http::Response::builder().status(500).body(Full::new(Bytes::new())).unwrap()),
            None => (404, http::Response::builder().status(404).body(Full::new(Bytes::new())).unwrap()),
        };
        self.log.lock().unwrap().push((path, inm, status));
        resp
    }

    /// A server publishing the root's CRL (empty) and the users CA's (bob revoked), number 1.
    fn publishing_initial_crls(pki: &Pki) -> Self {
        let server = Self::default();
        server.set("/root.crl", pki.root.crl(&[], 1, time::Duration::days(7)), "\"r1\"");
        server.set("/users.crl", pki.users_ca.crl(&[&pki.bob.serial], 1, time::Duration::days(7)), "\"u1\"");
        server
    }

    fn set(&self, path: &str, body: String, etag: &str) {
        self.answers.lock().unwrap().insert(path.into(), Answer::Crl { body, etag: etag.into() });
    }

    fn slow(&self, path: &str, delay: Option<Duration>) {
        let mut delays = self.delays.lock().unwrap();
        match delay {
            Some(d) => delays.insert(path.into(), d),
            None => delays.remove(path),
        };
    }

    fn fail(&self, path: &str) {
        self.answers.lock().unwrap().insert(path.into(), Answer::Fail);
    }

    fn saw(&self, pred: impl Fn(&Seen) -> bool) -> bool {
        self.log.lock().unwrap().iter().any(pred)
    }
}

/// Proxy flags without `--crl-file`, with the given extra flags.
fn args_without_crl_file(pki: &Pki, upstream: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut args = pki.proxy_args(upstream);
    let i = args.iter().position(|a| a == "--crl-file").unwrap();
    args.drain(i..i + 2);
    args.extend(extra.iter().cloned());
    args
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn whoami(addr: SocketAddr, pki: &Pki, user: &kube_crl_proxy_testkit::pki::Issued) -> Result<Reply, String> {
    request(addr, client_tls(&pki.root_der(), Some((user, &pki.users_ca)), Http::H2), Http::H2, whoami_request()).await
}

/// A PKI, a CRL server publishing the root's CRL (empty) and the users CA's (bob revoked),
/// the stand-in upstream and the proxy fetching both URLs (no `--crl-file`), plus `extra`.
struct UrlEnv {
    _tmp: tempfile::TempDir,
    pki: Pki,
    server: CrlServer,
    _srv: tokio::task::JoinHandle<()>,
    _upstream: Upstream,
    proxy: ProxyProcess,
}

impl UrlEnv {
    async fn start(extra: &[&str]) -> Self {
        let tmp = tempdir();
        let pki = Pki::new(tmp.path());
        let server = CrlServer::publishing_initial_crls(&pki);
        let (crl_addr, srv) = server.start().await;
        let upstream = Upstream::start(pki.sim_config()).await;
        let mut flags = vec![
            "--crl-url".to_string(),
            format!("http://{crl_addr}/root.crl"),
            "--crl-url".to_string(),
            format!("http://{crl_addr}/users.crl"),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let proxy = ProxyProcess::start(tmp.path(), &args_without_crl_file(&pki, upstream.addr, &flags));
        Self { _tmp: tmp, pki, server, _srv: srv, _upstream: upstream, proxy }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_from_urls_are_enforced_and_refreshed_conditionally() {
    let UrlEnv { pki, server, proxy, .. } = &UrlEnv::start(&["--crl-refresh-interval", "1s"]).await;

    assert_eq!(user_info(&whoami(proxy.addr, pki, &pki.alice).await.unwrap()).username, "alice");
    assert_eq!(whoami(proxy.addr, pki, &pki.bob).await.unwrap_err(), "remote error: tls: revoked certificate");

    // Refreshes carry the ETag and get 304 Not Modified.
    wait_until("a conditional refresh answered 304", async || {
        server.saw(|(p, inm, s)| p == "/users.crl" && inm.as_deref() == Some("\"u1\"") && *s == 304)
    })
    .await;

    // The CA revokes alice: the next refresh picks it up.
    server.set(
        "/users.crl",
        pki.users_ca.crl(&[&pki.bob.serial, &pki.alice.serial], 2, time::Duration::days(7)),
        "\"u2\"",
    );
    wait_until("alice refused after the CRL changed at its URL", async || {
        whoami(proxy.addr, pki, &pki.alice).await.is_err_and(|e| e == "remote error: tls: revoked certificate")
    })
    .await;

    // The server fails from now on: the last good CRL stays in force.
    server.fail("/users.crl");
    proxy.wait_for_log("CRL fetch failed");
    assert!(whoami(proxy.addr, pki, &pki.alice).await.is_err());
    let carol = pki.users_ca.issue(&Spec::client("carol", &[]));
    assert_eq!(user_info(&whoami(proxy.addr, pki, &carol).await.unwrap()).username, "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_forged_crls_at_a_url_are_refused() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let server = CrlServer::default();
    server.set("/root.crl", pki.root.crl(&[], 1, time::Duration::days(7)), "\"r1\"");
    // A CRL for the users CA signed by somebody else.
    let forger = kube_crl_proxy_testkit::pki::Authority::root("test-users-ca");
    server.set("/users.crl", forger.crl(&[], 9, time::Duration::days(7)), "\"f\"");
    let (crl_addr, _srv) = server.start().await;
    let upstream = Upstream::start(pki.sim_config()).await;
    let urls = [format!("http://{crl_addr}/root.crl"), format!("http://{crl_addr}/users.crl")];

    // Forged: not usable, so the users CA has no CRL and start-up stops (--crl-missing=deny).
    let extra: Vec<String> = vec!["--crl-url".into(), urls[0].clone(), "--crl-url".into(), urls[1].clone()];
    let (code, stderr) = run_to_exit(&args_without_crl_file(&pki, upstream.addr, &extra));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("signature") || stderr.contains("not usable"), "{stderr}");
    assert!(stderr.contains("test-users-ca") && stderr.contains("has no CRL"), "{stderr}");

    // Oversized: refused by --crl-max-bytes.
    server.set("/users.crl", pki.users_ca.crl(&[&pki.bob.serial], 1, time::Duration::days(7)), "\"u1\"");
    let mut extra = extra.clone();
    extra.extend(["--crl-max-bytes".to_string(), "200".to_string()]);
    let (code, stderr) = run_to_exit(&args_without_crl_file(&pki, upstream.addr, &extra));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("larger than --crl-max-bytes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_cache_survives_a_restart_while_the_server_is_down() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let server = CrlServer::publishing_initial_crls(&pki);
    let (crl_addr, srv) = server.start().await;
    let upstream = Upstream::start(pki.sim_config()).await;
    let cache = tmp.path().join("crl-cache");
    let extra: Vec<String> = vec![
        "--crl-url".into(),
        format!("http://{crl_addr}/root.crl"),
        "--crl-url".into(),
        format!("http://{crl_addr}/users.crl"),
        "--crl-cache-dir".into(),
        cache.display().to_string(),
    ];
    let args = args_without_crl_file(&pki, upstream.addr, &extra);
    {
        let proxy = ProxyProcess::start(tmp.path(), &args);
        assert!(whoami(proxy.addr, &pki, &pki.bob).await.is_err());
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2, "two cached CRLs");

    // The CA's server goes away; a restarted proxy still enforces the cached CRL.
    srv.abort();
    let _ = srv.await;
    let proxy = ProxyProcess::start(tmp.path(), &args);
    proxy.wait_for_log("using the cached CRL");
    assert_eq!(whoami(proxy.addr, &pki, &pki.bob).await.unwrap_err(), "remote error: tls: revoked certificate");
    assert_eq!(user_info(&whoami(proxy.addr, &pki, &pki.alice).await.unwrap()).username, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_points_are_discovered_from_ca_and_client_certificates() {
    let tmp = tempdir();
    let server = CrlServer::default();
    let (crl_addr, _srv) = server.start().await;
    let root_url = format!("http://{crl_addr}/root.crl");
    let users_url = format!("http://{crl_addr}/users.crl");
    // root → users CA (its CDP: the root's CRL) → dave (his CDP: the users CA's CRL)
    let root = kube_crl_proxy_testkit::pki::Authority::root("dp-root");
    let users = root.intermediate_with_crl_urls("dp-users", &[&root_url]);
    let mut spec = Spec::client("dave", &["dev"]);
    spec.crl_urls = vec![users_url.clone()];
    let dave = users.issue(&spec);
    server.set("/root.crl", root.crl(&[], 1, time::Duration::days(7)), "\"r\"");
    server.set("/users.crl", users.crl(&[&dave.serial], 1, time::Duration::days(7)), "\"u\"");

    let pki = Pki::new(tmp.path());
    kube_crl_proxy_testkit::pki::write(&pki.path("dp-ca.crt"), format!("{}{}", root.cert_pem, users.cert_pem));
    let upstream = Upstream::start(pki.sim_config()).await;
    let mut args = args_without_crl_file(
        &pki,
        upstream.addr,
        &["--crl-from-distribution-points".into(), "true".into(), "--crl-missing".into(), "allow".into()],
    );
    let i = args.iter().position(|a| a == "--client-ca-file").unwrap();
    args[i + 1] = pki.path("dp-ca.crt").display().to_string();
    let proxy = ProxyProcess::start(tmp.path(), &args);
    // The users CA's own CDP (the root's CRL) is fetched at start.
    assert!(server.saw(|(p, _, s)| p == "/root.crl" && *s == 200));

    // dave's handshake teaches the proxy his CRL's URL; once fetched, he is refused.
    let tls = || client_tls(&pki.root_der(), Some((&dave, &users)), Http::H1);
    // Before discovery the users CA has no CRL (--crl-missing=allow): dave gets in once.
    let first = request(proxy.addr, tls(), Http::H1, whoami_request()).await;
    assert_eq!(user_info(&first.unwrap()).username, "dave");
    wait_until("dave refused once his CRL was discovered and fetched", async || {
        request(proxy.addr, tls(), Http::H1, whoami_request())
            .await
            .is_err_and(|e| e == "remote error: tls: revoked certificate")
    })
    .await;
    proxy.wait_for_log("CRL distribution point discovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_crl_server_times_out_and_the_last_good_crl_stays() {
    let UrlEnv { pki, server, proxy, .. } =
        &UrlEnv::start(&["--crl-refresh-interval", "1s", "--crl-fetch-timeout", "300ms"]).await;
    assert_eq!(user_info(&whoami(proxy.addr, pki, &pki.alice).await.unwrap()).username, "alice");

    // The CA revokes alice, but its server became slow: fetches time out, the proxy keeps
    // serving with the last good CRL (alice still accepted, bob still refused), unblocked.
    server.slow("/users.crl", Some(Duration::from_secs(5)));
    server.set(
        "/users.crl",
        pki.users_ca.crl(&[&pki.bob.serial, &pki.alice.serial], 2, time::Duration::days(7)),
        "\"u2\"",
    );
    proxy.wait_for_log("timed out after 300ms");
    assert_eq!(user_info(&whoami(proxy.addr, pki, &pki.alice).await.unwrap()).username, "alice");
    assert!(whoami(proxy.addr, pki, &pki.bob).await.is_err());

    // The server recovers: the new CRL is fetched and alice is refused.
    server.slow("/users.crl", None);
    wait_until("alice refused once the server answered again", async || {
        whoami(proxy.addr, pki, &pki.alice).await.is_err_and(|e| e == "remote error: tls: revoked certificate")
    })
    .await;
}
