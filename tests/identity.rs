//! Identity end to end: the real binary between rustls/hyper clients and the kube-apiserver
//! stand-in, which trusts identity headers only from the front-proxy certificate.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

#[tokio::test]
async fn alice_gets_user_both_groups_and_credential_id_over_h1_and_h2() {
    let env = Env::start(&[]).await;
    for http in [Http::H1, Http::H2] {
        let reply = env.request(Some(&env.pki.alice), http, whoami_request()).await.unwrap();
        assert_eq!(reply.headers["x-sim-auth"], "requestheader", "{http:?}");
        let info = user_info(&reply);
        assert_eq!(info.username, "alice");
        assert_eq!(info.groups, vec!["dev", "ops", "system:authenticated"], "{http:?}");
        let fp = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(env.pki.alice.der.as_ref()))
        };
        assert_eq!(info.extra["authentication.kubernetes.io/credential-id"], vec![format!("X509SHA256={fp}")]);
    }
}

#[tokio::test]
async fn token_client_is_forwarded_without_identity_headers() {
    let env = Env::start(&[]).await;
    for http in [Http::H1, Http::H2] {
        let req = http::Request::get("https://localhost/_sim/headers")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = env.request(None, http, req).await.unwrap();
        let v = reply.json();
        assert_eq!(v["auth"], "token", "{v}");
        assert_eq!(v["user"]["username"], "token-user");
        let names: Vec<String> =
            v["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap().to_string()).collect();
        assert!(names.iter().all(|n| !n.starts_with("x-remote-")), "{names:?}");
        assert!(names.contains(&"authorization".to_string()), "Authorization passes untouched: {names:?}");
    }
}

/// Every spelling of every identity header, from a certificate user and from an anonymous
/// client, over both HTTP versions: none reaches the upstream.
#[tokio::test]
async fn injected_identity_headers_never_reach_the_upstream() {
    let env = Env::start(&["--requestheader-uid-headers", "X-Remote-Uid"]).await;
    let injected = [
        ("X-Remote-User", "admin"),
        ("x-remote-user", "root"),
        ("X-REMOTE-GROUP", "system:masters"),
        ("X-Remote-Group", "system:masters"),
        ("X-Remote-Uid", "0"),
        ("X-Remote-Extra-Scopes", "everything"),
        ("x-remote-extra-authentication.kubernetes.io%2Fcredential-id", "X509SHA256=forged"),
    ];
    for user in [Some(&env.pki.alice), None] {
        for http in [Http::H1, Http::H2] {
            let mut req = http::Request::post("https://localhost/apis/authentication.k8s.io/v1/selfsubjectreviews");
            for (k, v) in injected {
                req = req.header(k, v);
            }
            let reply = env.request(user, http, req.body(Full::new(Bytes::from_static(b"{}"))).unwrap()).await.unwrap();
            let info = user_info(&reply);
            let ctx = format!("{http:?} cert={}", user.is_some());
            assert!(!info.groups.contains(&"system:masters".to_string()), "{ctx}: {info:?}");
            assert!(!info.extra.contains_key("scopes"), "{ctx}: {info:?}");
            match user {
                Some(_) => {
                    assert_eq!(info.username, "alice", "{ctx}");
                    assert_eq!(info.uid, "", "{ctx}");
                    let cred = &info.extra["authentication.kubernetes.io/credential-id"];
                    assert_eq!(cred.len(), 1, "{ctx}");
                    assert_ne!(cred[0], "X509SHA256=forged", "{ctx}");
                }
                None => assert_eq!(info.username, "system:anonymous", "{ctx}: {info:?}"),
            }
        }
    }
}

#[tokio::test]
async fn injected_headers_in_trailers_are_stripped() {
    // Over an HTTP/2 upstream hop (the default, written out), so that trailers reach the
    // stand-in (hyper's HTTP/1.1 client sends only trailers a `Trailer` header declares).
    let env = Env::start(&["--upstream-http2", "true"]).await;
    // HTTP/2 request with trailers carrying identity headers.
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"{}"))),
        Ok(hyper::body::Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-remote-user", "admin".parse().unwrap());
            t.insert("x-remote-group", "system:masters".parse().unwrap());
            t.insert("x-checksum", "kept".parse().unwrap());
            t
        })),
    ]));
    let stream = connect(env.proxy.addr, env.tls(None, Http::H2)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("https://localhost/_sim/echo").header("te", "trailers").body(body).unwrap();
    let resp = send.send_request(req).await.unwrap();
    use http_body_util::BodyExt;
    let collected = resp.into_body().collect().await.unwrap();
    // The stand-in echoes the trailers it received.
    let t = collected.trailers().expect("trailers echoed").clone();
    assert_eq!(t.get("x-checksum").unwrap(), "kept");
    assert!(t.get("x-remote-user").is_none() && t.get("x-remote-group").is_none(), "{t:?}");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"{}"));
}

#[tokio::test]
async fn x_forwarded_for_carries_the_client_address_on_one_line() {
    let env = Env::start(&[]).await;
    let req = http::Request::get("https://localhost/_sim/headers")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let v = env.request(Some(&env.pki.alice), Http::H1, req).await.unwrap().json();
    let xff: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-forwarded-for")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(xff, vec!["203.0.113.9, 127.0.0.1"]);
}

#[tokio::test]
async fn control_characters_in_the_subject_get_403_and_a_log_line() {
    let env = Env::start(&[]).await;
    let eve = env
        .pki
        .users_ca
        .issue(&kube_crl_proxy_testkit::pki::Spec::client("eve\r\nX-Remote-Group: system:masters", &[]));
    let reply = env.request(Some(&eve), Http::H1, whoami_request()).await.unwrap();
    assert_eq!(reply.status, 403);
    let v = reply.json();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["reason"], "Forbidden");
    env.proxy.wait_for_log("control character");
}

#[tokio::test]
async fn utf8_names_pass_byte_exact() {
    let env = Env::start(&[]).await;
    let zoe = env.pki.users_ca.issue(&kube_crl_proxy_testkit::pki::Spec::client("zoë-日本", &["équipe"]));
    let info = user_info(&env.request(Some(&zoe), Http::H2, whoami_request()).await.unwrap());
    assert_eq!(info.username, "zoë-日本");
    assert_eq!(info.groups[0], "équipe");
}

#[tokio::test]
async fn certificate_without_cn_is_forwarded_without_identity() {
    let env = Env::start(&[]).await;
    let mut spec = kube_crl_proxy_testkit::pki::Spec::client("x", &["dev"]);
    spec.cn = None;
    let nocn = env.pki.users_ca.issue(&spec);
    let reply = env.request(Some(&nocn), Http::H1, whoami_request()).await.unwrap();
    assert_eq!(reply.headers["x-sim-auth"], "anonymous");
}
