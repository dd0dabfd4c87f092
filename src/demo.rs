//! `kube-crl-proxy demo`: a throwaway PKI, a kube-apiserver stand-in that applies the
//! request-header rules, and the real proxy in front of it; then the same request
//! `kubectl auth whoami` makes, for alice (O=dev, O=ops), bob (revoked) and a bearer token.
//! It writes a kubeconfig per user so the same can be tried with kubectl, and stays up
//! until Ctrl-C (or exits at once with `--once`).
//!
//! It is the binary's, not the library's: the PKI, the stand-in and the client come from the
//! testkit crate, and the proxy is the library's one entry point, [`kube_crl_proxy::run`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use kube_crl_proxy::cli::DemoArgs;
use kube_crl_proxy::config::{Config, RunFlags};
use kube_crl_proxy_testkit::client::whoami;
use kube_crl_proxy_testkit::pki::{Authority, Issued, Spec, write};
use kube_crl_proxy_testkit::sim::{SimConfig, UserInfo};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;

/// The demo's bearer token (it is printed; it protects nothing).
const DEMO_TOKEN: &str = "demo-token-0123456789";

/// Files of the demo PKI.
struct DemoPki {
    root: Authority,
    front_proxy_ca: Authority,
    serving: Issued,
}

fn build_pki(dir: &Path) -> DemoPki {
    let root = Authority::root("demo-root-ca");
    let users_ca = root.intermediate("demo-users-ca");
    let front_proxy_ca = Authority::root("demo-front-proxy-ca");
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
    let serving = root.issue(&Spec::server("kube-apiserver", &["localhost", "kubernetes"], &localhost));
    let fp_client = front_proxy_ca.issue(&Spec::client("front-proxy-client", &[]));
    let alice = users_ca.issue(&Spec::client("alice", &["dev", "ops"]));
    let bob = users_ca.issue(&Spec::client("bob", &["dev"]));

    write(&dir.join("ca.crt"), &root.cert_pem);
    write(&dir.join("client-ca.crt"), format!("{}{}", root.cert_pem, users_ca.cert_pem));
    // One CRL per CA: the root's (nothing revoked) and the users CA's (bob revoked).
    let crls = format!(
        "{}{}",
        root.crl(&[], 1, time::Duration::days(7)),
        users_ca.crl(&[&bob.serial], 1, time::Duration::days(7))
    );
    write(&dir.join("crl.pem"), crls);
    write(&dir.join("apiserver.crt"), &serving.cert_pem);
    write(&dir.join("apiserver.key"), &serving.key_pem);
    write(&dir.join("front-proxy-ca.crt"), &front_proxy_ca.cert_pem);
    write(&dir.join("front-proxy-client.crt"), &fp_client.cert_pem);
    write(&dir.join("front-proxy-client.key"), &fp_client.key_pem);
    for (name, cert) in [("alice", &alice), ("bob", &bob)] {
        write(&dir.join(format!("{name}.crt")), format!("{}{}", cert.cert_pem, users_ca.cert_pem));
        write(&dir.join(format!("{name}.key")), &cert.key_pem);
    }
    DemoPki { root, front_proxy_ca, serving }
}

fn kubeconfig(dir: &Path, name: &str, server: &str, user: &str) -> String {
    let ca = dir.join("ca.crt");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         contexts:\n- name: {name}\n  context:\n    cluster: demo\n    user: {name}\ncurrent-context: {name}\nusers:\n- name: {name}\n  user:\n{user}",
        ca = ca.display()
    )
}

fn cert_user(dir: &Path, name: &str) -> String {
    format!(
        "    client-certificate: {}\n    client-key: {}\n",
        dir.join(format!("{name}.crt")).display(),
        dir.join(format!("{name}.key")).display()
    )
}

/// Runs the demo; returns the process exit status.
pub(crate) fn main(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-crl-proxy demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-crl-proxy demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DemoArgs) -> Result<(), String> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("kube-crl-proxy-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    println!("Throwaway PKI, config and kubeconfigs in {}", dir.display());
    let pki = build_pki(&dir);

    // The kube-apiserver stand-in, on a free loopback port.
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let sim_addr = sim_listener.local_addr().map_err(|e| e.to_string())?;
    let token_user = UserInfo {
        username: "token-user".into(),
        uid: String::new(),
        groups: vec!["demo-tokens".into()],
        extra: Default::default(),
    };
    let sim = SimConfig {
        serving_chain: vec![pki.serving.der.clone()],
        serving_key: PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes()).map_err(|e| e.to_string())?,
        client_ca: vec![pki.root.der.clone()],
        requestheader_ca: vec![pki.front_proxy_ca.der.clone()],
        requestheader_allowed_names: vec!["front-proxy-client".into()],
        username_headers: vec!["X-Remote-User".into()],
        uid_headers: vec![],
        group_headers: vec!["X-Remote-Group".into()],
        extra_header_prefixes: vec!["X-Remote-Extra-".into()],
        tokens: vec![(DEMO_TOKEN.into(), token_user)],
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sim_stop = stop_rx.clone();
    let sim_task = tokio::spawn(kube_crl_proxy_testkit::sim::serve(sim_listener, Arc::new(sim), async move {
        while sim_stop.changed().await.is_ok() && !*sim_stop.borrow() {}
    }));

    // The proxy, configured through a YAML file as an operator would.
    let config_path = dir.join("kube-crl-proxy.yaml");
    write(
        &config_path,
        format!(
            "# kube-crl-proxy demo configuration (paths are relative to this file)\n\
             bind-address: 127.0.0.1\nsecure-port: {}\ntls-cert-file: apiserver.crt\ntls-private-key-file: apiserver.key\n\
             client-ca-file: client-ca.crt\ncrl-file: [crl.pem]\nupstream: https://{sim_addr}\nupstream-ca-file: ca.crt\n\
             proxy-client-cert-file: front-proxy-client.crt\nproxy-client-key-file: front-proxy-client.key\nshutdown-grace: 2s\n\
             admin-address: 127.0.0.1:0\n",
            args.port
        ),
    );
    let config = Config::resolve(RunFlags { config: Some(config_path.clone()), ..Default::default() })
        .map_err(|e| e.to_string())?;
    let (listening_tx, listening) = tokio::sync::oneshot::channel();
    let mut proxy_stop = stop_rx.clone();
    let proxy_task = tokio::spawn(async move {
        let stopped = async move { while proxy_stop.changed().await.is_ok() && !*proxy_stop.borrow() {} };
        kube_crl_proxy::run(
            &config,
            |l| {
                let _ = listening_tx.send(l);
            },
            stopped,
        )
        .await
    });
    let Ok(listening) = listening.await else {
        // `run` stopped before listening: its error says why.
        let _ = stop_tx.send(true);
        let _ = sim_task.await;
        return Err(match proxy_task.await {
            Ok(Err(e)) => e.to_string(),
            _ => "the proxy stopped before listening".into(),
        });
    };
    let (addr, admin_addr) = (listening.addr, listening.admin);
    let server = format!("https://{addr}");
    println!("kube-apiserver stand-in on https://{sim_addr}; kube-crl-proxy on {server}\n");

    for (name, user) in [
        ("alice", cert_user(&dir, "alice")),
        ("bob", cert_user(&dir, "bob")),
        ("token", format!("    token: {DEMO_TOKEN}\n")),
    ] {
        write(&dir.join(format!("{name}.kubeconfig")), kubeconfig(&dir, name, &server, &user));
    }

    let ca = pki.root.der.clone();
    let (alice, bob) = (dir.join("alice.crt"), dir.join("bob.crt"));
    let cases = [
        ("alice: client certificate CN=alice, O=dev, O=ops", Some(alice.as_path()), None),
        ("bob: client certificate CN=bob, O=dev, revoked in crl.pem", Some(bob.as_path()), None),
        ("token: no client certificate, Authorization: Bearer <token>", None, Some(DEMO_TOKEN)),
    ];
    for (title, cert, token) in cases {
        println!("$ kubectl auth whoami   # {title}");
        match whoami(addr, &ca, cert, token).await {
            Ok(info) => print_user(&info),
            Err(e) => println!("error: {e}"),
        }
        println!();
    }

    println!("Try it by hand (the kubeconfigs point at the proxy):");
    for name in ["alice", "bob", "token"] {
        println!("  kubectl --kubeconfig {} auth whoami", dir.join(format!("{name}.kubeconfig")).display());
    }
    println!(
        "  curl --cacert {d}/ca.crt --cert {d}/alice.crt --key {d}/alice.key -X POST -H 'Content-Type: application/json' \\\n    \
         -d '{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}}' {server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        d = dir.display()
    );
    println!("  curl http://{admin_addr}/metrics   # Prometheus metrics (also /readyz, /livez)");
    println!("The proxy's config is {}.", config_path.display());

    if !args.once {
        println!("\nServing until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(true);
    let _ = proxy_task.await;
    let _ = sim_task.await;
    if !args.once {
        println!("Stopped. The throwaway files stay in {} (delete them when done).", dir.display());
    }
    Ok(())
}

fn print_user(info: &UserInfo) {
    println!("ATTRIBUTE                                         VALUE");
    println!("{:<50}{}", "Username", info.username);
    if !info.uid.is_empty() {
        println!("{:<50}{}", "UID", info.uid);
    }
    println!("{:<50}[{}]", "Groups", info.groups.join(" "));
    for (k, v) in &info.extra {
        println!("{:<50}[{}]", format!("Extra: {k}"), v.join(" "));
    }
}
