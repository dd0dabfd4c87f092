//! Revocation that follows the CA while the proxy runs: CRL files replaced under the real
//! binary (rename, truncate + write, Kubernetes `..data` symlink swap, SIGHUP), open watches
//! and tunnels of a newly revoked user cut off while other users stay up, rollbacks and
//! corrupt files refused with the last good CRL kept.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube_crl_proxy_testkit::pki::Spec;

/// How long a revoked user's open connection may survive the new CRL landing (target: 1 s;
/// the bound here only detects "never").
const CUT_OFF_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn revoking_a_user_cuts_their_open_watches_and_keeps_others() {
    let env = Env::start(&[]).await;
    let carol = env.pki.users_ca.issue(&Spec::client("carol", &["dev"]));
    let mut alice_h1 = Watch::open(&env, &env.pki.alice, Http::H1).await;
    let mut alice_h2 = Watch::open(&env, &env.pki.alice, Http::H2).await;
    let mut carol_h2 = Watch::open(&env, &carol, Http::H2).await;

    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);

    let (a, b) = tokio::join!(alice_h1.until_closed(CUT_OFF_BOUND), alice_h2.until_closed(CUT_OFF_BOUND));
    eprintln!("alice's watches closed {a:?} (HTTP/1.1) and {b:?} (HTTP/2) after the CRL landed");
    // carol is unaffected: her watch keeps delivering events.
    for _ in 0..2 {
        let ev = carol_h2.next_event().await.expect("carol's watch must stay open");
        assert!(ev.contains("MODIFIED"), "{ev}");
    }
    let logs = env.proxy.wait_for_log("connection_closed");
    assert!(logs.contains(&hex::encode(&env.pki.alice.serial)), "closure log names alice's serial");
    // The reload re-checked only the connections holding a newly listed certificate:
    // alice's two (bob has none open), not carol's.
    let metrics = admin_get(env.proxy.admin, "/metrics").await.1;
    assert!(metrics.contains(r#"kube_crl_proxy_connections_rechecked_total{scope="changed"} 2"#), "{metrics}");
    // New connections of alice are refused at the handshake.
    let err = env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.unwrap_err();
    assert_eq!(err, "remote error: tls: revoked certificate");
    let info = user_info(&env.request(Some(&carol), Http::H1, whoami_request()).await.unwrap());
    assert_eq!(info.username, "carol");
}

/// A raw HTTP/2 connection as `user`, past the preface and the SETTINGS exchange.
async fn raw_h2(env: &Env, user: &kube_crl_proxy_testkit::pki::Issued) -> TlsStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = connect(env.proxy.addr, env.tls(Some(user), Http::H2)).await.expect("TLS handshake");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.expect("the proxy's SETTINGS");
    assert_eq!(head[3], 0x4, "SETTINGS first");
    let mut payload = vec![0u8; usize::from(head[2]) | usize::from(head[1]) << 8];
    s.read_exact(&mut payload).await.unwrap();
    s.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
    s
}

/// Reads until the connection ends, answering PINGs (if `pong`); returns the HTTP/2 frame
/// types read and whether it ended with a TLS close_notify (a clean EOF) rather than a bare
/// TCP close.
async fn h2_frames_until_closed(s: &mut TlsStream, bound: Duration, pong: bool) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PING: u8 = 0x6;
    let deadline = tokio::time::Instant::now() + bound;
    let (mut data, mut buf, mut types) = (Vec::new(), vec![0u8; 4096], Vec::new());
    loop {
        // Whole frames first.
        while data.len() >= 9 {
            let len = usize::from(data[0]) << 16 | usize::from(data[1]) << 8 | usize::from(data[2]);
            if data.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = data.drain(..9 + len).collect();
            types.push(frame[3]);
            if pong && frame[3] == PING && frame[4] & 0x1 == 0 {
                let mut ack = frame.clone();
                ack[4] = 0x1;
                let _ = s.write_all(&ack).await;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open {bound:?} later (frames {types:?})"),
            Ok(Ok(0)) => return (types, true),
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
                return (types, false);
            }
        }
    }
}

/// A revoked HTTP/2 connection is cut: nothing more is written to it (no GOAWAY, no TLS
/// close_notify), while an idle one is closed politely, with both.
#[tokio::test]
async fn a_revoked_connection_is_cut_and_an_idle_one_closed_politely() {
    const GOAWAY: u8 = 0x7;
    let env = Env::start(&[]).await;
    let mut alice = raw_h2(&env, &env.pki.alice).await;
    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    let (types, clean) = h2_frames_until_closed(&mut alice, CUT_OFF_BOUND, true).await;
    assert!(!types.contains(&GOAWAY), "no GOAWAY for a revoked connection: frames {types:?}");
    assert!(!clean, "no close_notify for a revoked connection");

    let idle = Env::start(&["--idle-timeout", "1s"]).await;
    let mut alice = raw_h2(&idle, &idle.pki.alice).await;
    let (types, clean) = h2_frames_until_closed(&mut alice, Duration::from_secs(10), true).await;
    assert!(types.contains(&GOAWAY), "an idle connection gets GOAWAY: frames {types:?}");
    assert!(clean, "and a close_notify");
    // A client that does not answer the GOAWAY's PING does not keep it open: it is cut 5 s
    // later (`IDLE_CLOSE_BOUND`).
    let mut silent = raw_h2(&idle, &idle.pki.alice).await;
    let started = Instant::now();
    let (types, clean) = h2_frames_until_closed(&mut silent, Duration::from_secs(15), false).await;
    assert!(types.contains(&GOAWAY) && !clean, "GOAWAY, then cut: frames {types:?}, clean {clean}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(12), "cut after {took:?}");
}

#[tokio::test]
async fn revoking_a_user_closes_their_exec_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(&[]).await;
    let mut s = connect(env.proxy.addr, env.tls(Some(&env.pki.alice), Http::H1)).await.unwrap();
    s.write_all(
        b"POST /api/v1/namespaces/default/pods/demo/exec?command=sh HTTP/1.1\r\nHost: localhost\r\n\
          Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "response head");
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);

    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(CUT_OFF_BOUND, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("tunnel still open {CUT_OFF_BOUND:?} after revocation"),
        }
    }
    eprintln!("alice's exec tunnel closed {:?} after the CRL landed", start.elapsed());
}

#[tokio::test]
async fn truncate_then_write_and_sighup_reload() {
    let env = Env::start(&[]).await;
    let mut w = Watch::open(&env, &env.pki.alice, Http::H2).await;
    // An editor-style rewrite in place: truncate, then write.
    let pem = env.pki.crl_pem(&[&env.pki.alice.serial], 2);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(env.pki.path("crl.pem")).unwrap();
        f.flush().unwrap();
        f.write_all(pem.as_bytes()).unwrap();
    }
    w.until_closed(CUT_OFF_BOUND).await;
    // bob is un-revoked in CRL 2: bob now gets in.
    let info = user_info(&env.request(Some(&env.pki.bob), Http::H1, whoami_request()).await.unwrap());
    assert_eq!(info.username, "bob");

    // SIGHUP after a change the watcher could not see is not needed here; check that SIGHUP
    // itself triggers a reload (logged) without disturbing anyone.
    let status = std::process::Command::new("kill").args(["-HUP", &env.proxy.pid().to_string()]).status().unwrap();
    assert!(status.success());
    env.proxy.wait_for_log("SIGHUP: reloading");
    let info = user_info(&env.request(Some(&env.pki.bob), Http::H2, whoami_request()).await.unwrap());
    assert_eq!(info.username, "bob");
}

#[tokio::test]
async fn kubernetes_secret_volume_symlink_swap_is_followed() {
    // Lay the CRL out like a Secret volume: crl.pem -> ..data/crl.pem, ..data -> ..v1
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let vol = tmp.path().join("secret");
    std::fs::create_dir_all(vol.join("..v1")).unwrap();
    std::fs::copy(pki.path("crl.pem"), vol.join("..v1/crl.pem")).unwrap();
    std::os::unix::fs::symlink("..v1", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/crl.pem", vol.join("crl.pem")).unwrap();
    let upstream = Upstream::start(pki.sim_config()).await;
    let mut args = pki.proxy_args(upstream.addr);
    let i = args.iter().position(|a| a == "--crl-file").unwrap();
    args[i + 1] = vol.join("crl.pem").display().to_string();
    let proxy = ProxyProcess::start(tmp.path(), &args);
    let env = Env { tmp, pki, upstream, proxy };
    let alice_ok = env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.unwrap();
    assert_eq!(user_info(&alice_ok).username, "alice");

    // The kubelet's update: new timestamped dir, ..data_tmp symlink, renamed over ..data.
    std::fs::create_dir_all(vol.join("..v2")).unwrap();
    let pem = env.pki.crl_pem(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    std::fs::write(vol.join("..v2/crl.pem"), pem).unwrap();
    std::os::unix::fs::symlink("..v2", vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();

    let deadline = Instant::now() + CUT_OFF_BOUND;
    loop {
        match env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await {
            Err(e) if e == "remote error: tls: revoked certificate" => break,
            other => {
                assert!(Instant::now() < deadline, "alice still accepted after the swap: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn corrupt_crl_and_rollback_keep_the_last_good_one() {
    let env = Env::start(&[]).await;
    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 5);
    let deadline = Instant::now() + CUT_OFF_BOUND;
    while env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.is_ok() {
        assert!(Instant::now() < deadline, "CRL 5 never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Garbage: reload fails, the last good CRL (alice revoked) stays.
    replace_by_rename(&env.pki.path("crl.pem"), b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n");
    env.proxy.wait_for_log("reload_failed");
    assert_eq!(
        env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.unwrap_err(),
        "remote error: tls: revoked certificate"
    );

    // An older CRL (number 3 < 5) that would un-revoke alice: refused as a rollback.
    env.pki.replace_crls(&[&env.pki.bob.serial], 3);
    env.proxy.wait_for_log("refusing the rollback");
    assert_eq!(
        env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.unwrap_err(),
        "remote error: tls: revoked certificate"
    );
    // Everyone else is still served.
    let carol = env.pki.users_ca.issue(&Spec::client("carol", &[]));
    assert_eq!(user_info(&env.request(Some(&carol), Http::H1, whoami_request()).await.unwrap()).username, "carol");
}

#[tokio::test]
async fn delta_crls_revoke_and_unrevoke_without_a_new_base() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let delta = pki.path("delta.crl");
    // Base CRL 1 (bob revoked) plus an empty delta 2.
    std::fs::write(&delta, pki.users_ca.delta_crl(&[], 2, 1, time::Duration::days(1))).unwrap();
    let upstream = Upstream::start(pki.sim_config()).await;
    let mut args = pki.proxy_args(upstream.addr);
    args.extend(["--crl-file".to_string(), delta.display().to_string()]);
    let proxy = ProxyProcess::start(tmp.path(), &args);
    let env = Env { tmp, pki, upstream, proxy };
    let mut w = Watch::open(&env, &env.pki.alice, Http::H1).await;

    // Delta 3: alice revoked (keyCompromise), bob removed from the CRL (removeFromCRL).
    let tmp_delta = env.pki.path("delta.crl.new");
    std::fs::write(
        &tmp_delta,
        env.pki.users_ca.delta_crl(
            &[(&env.pki.alice.serial, 1), (&env.pki.bob.serial, 8)],
            3,
            1,
            time::Duration::days(1),
        ),
    )
    .unwrap();
    std::fs::rename(&tmp_delta, &delta).unwrap();
    w.until_closed(CUT_OFF_BOUND).await;
    assert_eq!(
        env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.unwrap_err(),
        "remote error: tls: revoked certificate"
    );
    assert_eq!(user_info(&env.request(Some(&env.pki.bob), Http::H2, whoami_request()).await.unwrap()).username, "bob");
}

/// A client that would resume its TLS session (rustls caches tickets and session IDs by
/// default) gets a full handshake every time, so a revocation reaches it at once.
#[tokio::test]
async fn a_resuming_client_is_refused_after_revocation() {
    let env = Env::start(&[]).await;
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let tls = std::sync::Arc::new(client_tls_versions(
            &env.pki.root_der(),
            Some((&env.pki.alice, &env.pki.users_ca)),
            Http::H1,
            versions,
        ));
        let reply = request(env.proxy.addr, (*tls).clone(), Http::H1, whoami_request()).await;
        assert_eq!(user_info(&reply.unwrap()).username, "alice");
        // The same config (same session cache) again: still a full handshake.
        let s = connect(env.proxy.addr, (*tls).clone()).await.unwrap();
        assert_eq!(s.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    let deadline = Instant::now() + CUT_OFF_BOUND;
    loop {
        let tls = client_tls(&env.pki.root_der(), Some((&env.pki.alice, &env.pki.users_ca)), Http::H1);
        match request(env.proxy.addr, tls, Http::H1, whoami_request()).await {
            Err(e) if e == "remote error: tls: revoked certificate" => break,
            other => {
                assert!(Instant::now() < deadline, "alice still accepted: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `--close-expired-connections` (default on): a watch of a certificate that expires while
/// the connection is open is closed at its notAfter; a fresh handshake is then refused.
#[tokio::test]
async fn a_connection_closes_when_its_certificate_expires() {
    let env = Env::start(&[]).await;
    let mut spec = Spec::client("ephemeral", &["dev"]);
    spec.not_after = time::Duration::seconds(3);
    let short = env.pki.users_ca.issue(&spec);
    let mut w = Watch::open(&env, &short, Http::H2).await;
    let start = Instant::now();
    w.until_closed(CUT_OFF_BOUND).await;
    assert!(start.elapsed() < CUT_OFF_BOUND);
    env.proxy.wait_for_log("client certificate expired");
    assert_eq!(
        env.request(Some(&short), Http::H1, whoami_request()).await.unwrap_err(),
        "remote error: tls: expired certificate"
    );
}

/// `--close-expired-connections=false` keeps that promise: an expired certificate's open
/// connection stays up through the re-checks that follow (a CRL reload after the expiry
/// re-checks it: revocation only, no validity dates), while a revoked one is still cut. (The
/// re-check used to re-run the whole chain verification at the current time and closed it
/// as expired.)
#[tokio::test]
async fn close_expired_connections_false_keeps_an_expired_connection_open_through_rechecks() {
    let env = Env::start(&["--close-expired-connections", "false"]).await;
    let mut spec = Spec::client("ephemeral", &["dev"]);
    spec.not_after = time::Duration::seconds(2);
    let short = env.pki.users_ca.issue(&spec);
    let mut w = Watch::open(&env, &short, Http::H2).await;
    let mut alice = Watch::open(&env, &env.pki.alice, Http::H2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Past notAfter: a reload (a new CRL revoking alice) re-checks every open connection.
    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    alice.until_closed(CUT_OFF_BOUND).await;
    env.proxy.wait_for_log("connection_closed");
    // The expired one is still served, events keep coming.
    assert!(w.next_event().await.is_some(), "the expired certificate's watch was closed");
    assert!(!env.proxy.logs().contains("client certificate expired"), "{}", env.proxy.logs());
    // A new handshake with the expired certificate is refused, as always.
    assert_eq!(
        env.request(Some(&short), Http::H1, whoami_request()).await.unwrap_err(),
        "remote error: tls: expired certificate"
    );
}

/// A client whose handshake began before a reload that revokes it is verified by the old CRL
/// (the handshake's snapshot), and the re-check after the reload ran before its connection
/// existed: it is checked against the new CRL when it registers, and closed at once rather
/// than at the next periodic re-check (10 s).
#[tokio::test]
async fn a_handshake_that_straddles_the_revoking_reload_is_closed_when_it_completes() {
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(&[]).await;
    let tls = std::sync::Arc::new(env.tls(Some(&env.pki.alice), Http::H1));
    let mut conn = rustls::ClientConnection::new(tls, "localhost".try_into().unwrap()).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(env.proxy.addr).await.unwrap();
    async fn send(conn: &mut rustls::ClientConnection, tcp: &mut tokio::net::TcpStream) {
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        tcp.write_all(&wire).await.unwrap();
    }
    // ClientHello out; the server's flight in, up to the point where alice's certificate,
    // CertificateVerify and Finished are ready to go, and held back.
    send(&mut conn, &mut tcp).await;
    let mut buf = vec![0u8; 16 * 1024];
    while !conn.wants_write() {
        let n = tokio::time::timeout(CUT_OFF_BOUND, tcp.read(&mut buf)).await.expect("server flight").unwrap();
        assert!(n > 0, "the proxy closed the handshake");
        conn.read_tls(&mut &buf[..n]).unwrap();
        conn.process_new_packets().unwrap();
    }

    // Alice is revoked and the reload is in effect: a fresh handshake of hers is refused.
    env.pki.replace_crls(&[&env.pki.bob.serial, &env.pki.alice.serial], 2);
    let deadline = Instant::now() + CUT_OFF_BOUND;
    while env.request(Some(&env.pki.alice), Http::H1, whoami_request()).await.is_ok() {
        assert!(Instant::now() < deadline, "the revoking CRL was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The held flight completes the handshake on the old CRL; a watch follows. The proxy
    // must close the connection well before its periodic re-check would.
    send(&mut conn, &mut tcp).await;
    conn.writer()
        .write_all(b"GET /api/v1/namespaces/default/pods?watch=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    send(&mut conn, &mut tcp).await;
    let start = Instant::now();
    let mut plain = Vec::new();
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(3).saturating_sub(start.elapsed()), tcp.read(&mut buf))
            .await
        {
            Err(_) => panic!(
                "the straddling connection is still open after 3 s; it read: {}",
                String::from_utf8_lossy(&plain)
            ),
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        conn.read_tls(&mut &buf[..n]).unwrap();
        if conn.process_new_packets().is_err() {
            break;
        }
        let _ = conn.reader().read_to_end(&mut plain);
    }
    eprintln!("closed {:?} after its handshake completed", start.elapsed());
    let logs = env.proxy.wait_for_log("connection_closed");
    assert!(logs.contains(&hex::encode(&env.pki.alice.serial)), "the closure is logged with alice's serial");
}
