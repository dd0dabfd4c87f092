//! The operator commands `check`, `check-apiserver` and `inspect`, run as the real binary on
//! PKIs generated in the test. None of them may listen or contact the upstream: every run is
//! bounded, and the "upstream" is a loopback listener that must see no connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Pki, binary, path_str, tempdir};
use kube_crl_proxy_testkit::pki::{Authority, Spec, write};

/// What a finished command printed.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn warnings(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.starts_with("warning:")).collect()
    }

    fn problems(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.starts_with("problem:")).collect()
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the binary to completion, bounded: these commands never serve, so one that is still
/// running after 30 s is killed and fails the test.
fn kcp(dir: &Path, args: &[String]) -> Out {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("out-{n}")), dir.join(format!("err-{n}")));
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn kube-crl-proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kube-crl-proxy {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// A PKI, and an "upstream" listener that nothing may connect to.
struct Env {
    tmp: tempfile::TempDir,
    pki: Pki,
    upstream: TcpListener,
}

impl Env {
    fn new() -> Self {
        let tmp = tempdir();
        let pki = Pki::new(tmp.path());
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
        upstream.set_nonblocking(true).expect("nonblocking");
        Self { tmp, pki, upstream }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn addr(&self) -> SocketAddr {
        self.upstream.local_addr().expect("addr")
    }

    /// `command`, then the standard proxy flags with `bind` as --bind-address, then `extra`.
    fn args(&self, command: &str, bind: &str, extra: &[&str]) -> Vec<String> {
        let mut a = vec![command.to_string()];
        a.extend(self.pki.proxy_args(self.addr()));
        a.extend(["--bind-address", bind, "--secure-port", "0", "--admin-address", "127.0.0.1:0"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn check(&self, extra: &[&str]) -> Out {
        kcp(self.dir(), &self.args("check", "127.0.0.1", extra))
    }

    fn inspect(&self, cert: &Path) -> Out {
        kcp(self.dir(), &self.args("inspect", "127.0.0.1", &[&cert.display().to_string()]))
    }

    fn assert_upstream_untouched(&self) {
        match self.upstream.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the upstream was contacted: {other:?}"),
        }
    }
}

/// The lines of the summary block of one CA (its subject line and the indented lines below).
fn ca_block<'a>(stdout: &'a str, subject: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start =
        lines.iter().position(|l| *l == format!("  {subject}")).unwrap_or_else(|| panic!("{subject}:\n{stdout}"));
    lines[start..].iter().skip(1).take_while(|l| l.starts_with("    ")).copied().collect()
}

// ---------------------------------------------------------------------------------------
// check

#[test]
fn check_summarises_a_good_config_without_contacting_the_upstream() {
    let env = Env::new();
    let out = env.check(&[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.warnings().is_empty(), "{out:?}");
    let root = ca_block(&out.stdout, "CN=test-root-ca");
    assert!(root.iter().any(|l| l.contains("trust anchor (self-signed)")), "{out:?}");
    assert!(root.iter().any(|l| l.contains("CRL:") && l.contains("CRL #1 (0 entries)")), "{out:?}");
    assert!(root.iter().any(|l| l.trim() == "number:     1"), "{out:?}");
    assert!(root.iter().any(|l| l.trim() == "scope:      all certificates"), "{out:?}");
    assert!(root.iter().any(|l| l.contains("nextUpdate:")), "{out:?}");
    let users = ca_block(&out.stdout, "CN=test-users-ca");
    assert!(users.iter().any(|l| l.contains("intermediate (issued by CN=test-root-ca")), "{out:?}");
    assert!(users.iter().any(|l| l.contains("CRL:") && l.contains("(1 entry)")), "{out:?}");
    assert!(users.iter().any(|l| l.contains("signer:     CN=test-users-ca (key ")), "{out:?}");
    assert!(out.stdout.contains("DNS:localhost, IP:127.0.0.1"), "{out:?}");
    assert!(out.stdout.contains("  CN:       front-proxy-client"), "{out:?}");
    assert!(out.stdout.contains(&format!("upstream: https://{}/ (server name localhost", env.addr())), "{out:?}");
    assert!(out.stdout.ends_with("result: loadable, no warnings\n"), "{out:?}");
    env.assert_upstream_untouched();
}

#[test]
fn check_reads_a_config_file_with_relative_paths() {
    let env = Env::new();
    let config = env.dir().join("config.yaml");
    write(
        &config,
        format!(
            "bind-address: 127.0.0.1\ntls-cert-file: apiserver.crt\ntls-private-key-file: apiserver.key\n\
             client-ca-file: client-ca.crt\ncrl-file: [crl.pem]\nupstream: https://{}\nupstream-ca-file: ca.crt\n\
             upstream-server-name: localhost\nproxy-client-cert-file: front-proxy-client.crt\n\
             proxy-client-key-file: front-proxy-client.key\n",
            env.addr()
        ),
    );
    let out = kcp(env.dir(), &["check".into(), "--config".into(), config.display().to_string()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("CN=test-users-ca"), "{out:?}");
    env.assert_upstream_untouched();
}

#[test]
fn check_warns_about_a_ca_without_crl() {
    let env = Env::new();
    write(&env.pki.path("crl.pem"), env.pki.root.crl(&[], 1, time::Duration::days(7)));
    let out = env.check(&["--crl-missing", "allow"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("test-users-ca") && w[0].contains("has no CRL"), "{out:?}");
    assert!(ca_block(&out.stdout, "CN=test-users-ca").iter().any(|l| l.contains("CRL:        none")), "{out:?}");
}

#[test]
fn check_warns_about_a_crl_close_to_its_next_update() {
    let env = Env::new();
    let pem = format!(
        "{}{}",
        env.pki.root.crl(&[], 1, time::Duration::days(7)),
        env.pki.users_ca.crl(&[], 1, time::Duration::hours(2))
    );
    write(&env.pki.path("crl.pem"), pem);
    let out = env.check(&[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("test-users-ca") && w[0].contains("within --crl-expiry-warning 1day"), "{out:?}");
    // A narrower window: no warning.
    let out = env.check(&["--crl-expiry-warning", "1h"]);
    assert!(out.warnings().is_empty(), "{out:?}");
}

#[test]
fn check_warns_about_a_crl_past_its_next_update() {
    let env = Env::new();
    let pem = format!(
        "{}{}",
        env.pki.root.crl(&[], 1, time::Duration::days(7)),
        env.pki.users_ca.crl(&[], 1, time::Duration::hours(-2))
    );
    write(&env.pki.path("crl.pem"), pem);
    let out = env.check(&[]);
    assert_eq!(out.code, Some(0), "loadable, the proxy would start: {out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("test-users-ca") && w[0].contains("passed its nextUpdate"), "{out:?}");
    assert!(w[0].contains("refused (--crl-expired=deny)"), "{out:?}");
}

#[test]
fn check_warns_when_the_serving_certificate_does_not_cover_the_bind_address() {
    let env = Env::new();
    let out = kcp(env.dir(), &env.args("check", "127.0.0.2", &[]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("no IP SAN 127.0.0.2 (--bind-address)"), "{out:?}");

    // 0.0.0.0: any IP SAN will do; none at all is warned about. (check never listens.)
    let out = kcp(env.dir(), &env.args("check", "0.0.0.0", &[]));
    assert!(out.warnings().is_empty(), "{out:?}");
    let dns_only = env.pki.root.issue(&Spec::server("kube-apiserver", &["localhost"], &[]));
    write(&env.pki.path("apiserver.crt"), &dns_only.cert_pem);
    write(&env.pki.path("apiserver.key"), &dns_only.key_pem);
    let out = kcp(env.dir(), &env.args("check", "0.0.0.0", &[]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("has no IP SAN"), "{out:?}");
    env.assert_upstream_untouched();
}

#[test]
fn check_warns_when_the_front_proxy_ca_is_a_client_ca() {
    let env = Env::new();
    let p = &env.pki;
    write(&p.path("client-ca.crt"), format!("{}{}{}", p.root.cert_pem, p.users_ca.cert_pem, p.front_proxy_ca.cert_pem));
    let crls = format!(
        "{}{}{}",
        p.root.crl(&[], 1, time::Duration::days(7)),
        p.users_ca.crl(&[], 1, time::Duration::days(7)),
        p.front_proxy_ca.crl(&[], 1, time::Duration::days(7))
    );
    write(&p.path("crl.pem"), crls);
    let out = env.check(&[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("chains to \"CN=test-front-proxy-ca\", a CA in --client-ca-file"), "{out:?}");
}

#[test]
fn check_warns_about_a_front_proxy_cn_other_than_front_proxy_client() {
    let env = Env::new();
    let other = env.pki.front_proxy_ca.issue(&Spec::client("aggregator", &[]));
    write(&env.pki.path("front-proxy-client.crt"), &other.cert_pem);
    write(&env.pki.path("front-proxy-client.key"), &other.key_pem);
    let out = env.check(&[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert_eq!(w.len(), 1, "{out:?}");
    assert!(w[0].contains("CN is \"aggregator\", not \"front-proxy-client\""), "{out:?}");
}

/// A plain-HTTP server on loopback answering every request with `body` (a CRL), in a thread.
fn serve_crl(body: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes()));
        }
    });
    addr
}

#[test]
fn check_and_inspect_fetch_crl_urls_as_run_does() {
    let env = Env::new();
    write(&env.pki.path("crl.pem"), env.pki.root.crl(&[], 1, time::Duration::days(7)));
    let crl = env.pki.users_ca.crl(&[&env.pki.bob.serial], 5, time::Duration::days(7));
    let url = format!("http://{}/users.crl", serve_crl(crl));
    let out = env.check(&["--crl-url", &url]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.warnings().is_empty(), "{out:?}");
    let users = ca_block(&out.stdout, "CN=test-users-ca");
    assert!(users.iter().any(|l| l.contains(&format!("{url} CRL #1 (1 entry)"))), "{out:?}");
    assert!(users.iter().any(|l| l.trim() == "number:     5"), "{out:?}");

    let (cert, _) = env.pki.write_user("bob", &env.pki.bob);
    let out = kcp(env.dir(), &env.args("inspect", "127.0.0.1", &[&cert.display().to_string(), "--crl-url", &url]));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains(&format!("is listed in --crl-url {url} CRL #1: revoked at")), "{out:?}");
    env.assert_upstream_untouched();
}

/// A file-descriptor limit too low for --max-connections is warned about (after raising the
/// soft limit as far as the hard limit allows), saying what to write.
#[test]
fn check_warns_about_a_descriptor_limit_too_low_for_max_connections() {
    let env = Env::new();
    let out = env.check(&["--max-connections", "100000000"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let w = out.warnings();
    assert!(w.iter().any(|l| l.contains("file-descriptor limit") && l.contains("LimitNOFILE=200001024")), "{out:?}");
}

#[test]
fn strict_fails_on_warnings_only() {
    let env = Env::new();
    let out = env.check(&["--strict"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = kcp(env.dir(), &env.args("check", "127.0.0.2", &["--strict"]));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.warnings().len(), 1, "{out:?}");
    assert!(out.stdout.contains("failing because of --strict"), "{out:?}");
}

#[test]
fn check_exits_64_with_the_message_run_gives() {
    let env = Env::new();
    write(&env.pki.path("client-ca.crt"), "not a certificate\n");
    let out = env.check(&[]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("--client-ca-file") && out.stderr.contains("client-ca.crt"), "{out:?}");
    // `run` with the same flags fails before listening, with the same message.
    let mut run_args = env.args("check", "127.0.0.1", &[]);
    run_args.remove(0);
    let run = kcp(env.dir(), &run_args);
    assert_eq!(run.code, Some(64), "{run:?}");
    assert_eq!(run.stderr.lines().last(), out.stderr.lines().last(), "{run:?}\n{out:?}");

    // A missing required flag.
    let out = kcp(env.dir(), &["check".into(), "--tls-cert-file".into(), "x.pem".into()]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("--client-ca-file") && out.stderr.contains("is required"), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// check-apiserver

/// kubeadm's flags, moved to loopback and set up for the proxy (README).
fn good_flags() -> Vec<String> {
    [
        "--advertise-address=10.0.0.10",
        "--bind-address=127.0.0.1",
        "--secure-port=6443",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt",
    ]
    .map(String::from)
    .to_vec()
}

/// A static pod manifest whose container runs `command` (first element the binary), image
/// kube-apiserver 1.33.
fn manifest(dir: &Path, name: &str, command: &[String], args: &[String]) -> std::path::PathBuf {
    manifest_with_image(dir, name, "k8s/kube-apiserver:v1.33.0", command, args)
}

fn manifest_with_image(dir: &Path, name: &str, image: &str, command: &[String], args: &[String]) -> std::path::PathBuf {
    let list = |items: &[String]| items.iter().map(|i| format!("    - '{i}'\n")).collect::<String>();
    let mut text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  \
         hostNetwork: true\n  containers:\n  - name: kube-apiserver\n    image: {image}\n",
    );
    text += &format!("    command:\n{}", list(command));
    if !args.is_empty() {
        text += &format!("    args:\n{}", list(args));
    }
    let path = dir.join(name);
    write(&path, text);
    path
}

fn kubeadm_manifest(dir: &Path, flags: &[String]) -> std::path::PathBuf {
    let mut command = vec!["kube-apiserver".to_string()];
    command.extend(flags.iter().cloned());
    manifest(dir, "kube-apiserver.yaml", &command, &[])
}

fn check_apiserver(dir: &Path, path: &Path, extra: &[&str]) -> Out {
    let mut a = vec!["check-apiserver".to_string(), path.display().to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    kcp(dir, &a)
}

#[test]
fn check_apiserver_accepts_a_good_manifest_in_command_or_args_form() {
    let tmp = tempdir();
    let out = check_apiserver(tmp.path(), &kubeadm_manifest(tmp.path(), &good_flags()), &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.problems().is_empty(), "{out:?}");
    assert!(out.stdout.contains("result: no problems found"), "{out:?}");

    // `command: [kube-apiserver]` + `args`, with `--flag value` pairs and lower-case names.
    let mut args = Vec::new();
    for f in good_flags() {
        let (k, v) = f.split_once('=').unwrap();
        args.push(k.to_string());
        args.push(v.to_ascii_lowercase());
    }
    let path = manifest(tmp.path(), "args.yaml", &["kube-apiserver".into()], &args);
    let out = check_apiserver(tmp.path(), &path, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn check_apiserver_reports_each_problem() {
    let tmp = tempdir();
    let without = |flag: &str| -> Vec<String> {
        good_flags().into_iter().filter(|f| !f.starts_with(&format!("{flag}="))).collect()
    };
    let with = |flag: &str, value: &str| -> Vec<String> {
        let mut f = without(flag);
        f.push(format!("{flag}={value}"));
        f
    };
    let cases: Vec<(&str, Vec<String>, &[&str])> = vec![
        ("no bind address", without("--bind-address"), &["--bind-address is missing"]),
        ("bind 0.0.0.0", with("--bind-address", "0.0.0.0"), &["--bind-address=0.0.0.0 is not a loopback address"]),
        ("bind node address", with("--bind-address", "10.0.0.10"), &["--bind-address=10.0.0.10 is not a loopback"]),
        (
            "no front-proxy CA",
            without("--requestheader-client-ca-file"),
            &["--requestheader-client-ca-file is missing"],
        ),
        (
            "front-proxy CA = client CA",
            with("--requestheader-client-ca-file", "/etc/kubernetes/pki/ca.crt"),
            &["--requestheader-client-ca-file is the same CA as --client-ca-file"],
        ),
        (
            "no allowed names",
            without("--requestheader-allowed-names"),
            &["--requestheader-allowed-names is missing or empty"],
        ),
        (
            "empty allowed names",
            with("--requestheader-allowed-names", ""),
            &["--requestheader-allowed-names is missing or empty"],
        ),
        (
            "no username headers",
            without("--requestheader-username-headers"),
            &["--requestheader-username-headers is missing"],
        ),
        (
            "other username header",
            with("--requestheader-username-headers", "X-User"),
            &["reads X-User, which the proxy does not strip", "the proxy sends user names in X-Remote-User"],
        ),
        ("no group headers", without("--requestheader-group-headers"), &["--requestheader-group-headers is missing"]),
        (
            "other group header",
            with("--requestheader-group-headers", "X-Remote-Group,X-Groups"),
            &["reads X-Groups, which the proxy does not strip"],
        ),
        (
            "no extra prefix",
            without("--requestheader-extra-headers-prefix"),
            &["--requestheader-extra-headers-prefix is missing"],
        ),
        (
            "other extra prefix",
            with("--requestheader-extra-headers-prefix", "X-Extra-"),
            &["includes X-Extra-, but the proxy strips only", "the proxy sends extras with the prefix X-Remote-Extra-"],
        ),
        (
            "uid header the proxy does not strip",
            with("--requestheader-uid-headers", "X-Remote-Uid"),
            &["--requestheader-uid-headers reads X-Remote-Uid, which the proxy does not strip"],
        ),
    ];
    for (name, flags, needles) in cases {
        let out = check_apiserver(tmp.path(), &kubeadm_manifest(tmp.path(), &flags), &[]);
        assert_eq!(out.code, Some(1), "{name}: {out:?}");
        let problems = out.problems();
        assert_eq!(problems.len(), needles.len(), "{name}: {out:?}");
        for (p, needle) in problems.iter().zip(needles) {
            assert!(p.contains(needle), "{name}: {needle:?} not in {p:?}\n{out:?}");
        }
    }
}

#[test]
fn check_apiserver_compares_with_the_proxys_configured_headers() {
    let tmp = tempdir();
    let good = kubeadm_manifest(tmp.path(), &good_flags());
    let out = check_apiserver(tmp.path(), &good, &["--requestheader-username-headers", "X-User"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.problems().iter().any(|p| p.contains("reads X-Remote-User, which the proxy does not strip")),
        "{out:?}"
    );

    // From the proxy's config file, compared case-insensitively.
    let config = tmp.path().join("proxy.yaml");
    write(&config, "requestheader-username-headers: x-user\nrequestheader-group-headers: [X-Groups]\n");
    let mut flags = good_flags();
    flags.retain(|f| {
        !f.starts_with("--requestheader-username-headers") && !f.starts_with("--requestheader-group-headers")
    });
    flags.push("--requestheader-username-headers=X-USER".into());
    flags.push("--requestheader-group-headers=x-groups".into());
    let command: Vec<String> = std::iter::once("kube-apiserver".to_string()).chain(flags).collect();
    let path = manifest(tmp.path(), "custom-headers.yaml", &command, &[]);
    let out = check_apiserver(tmp.path(), &path, &["--config", &config.display().to_string()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("user X-User, groups X-Groups"), "{out:?}");
    let out = check_apiserver(tmp.path(), &good, &["--config", &config.display().to_string()]);
    assert_eq!(out.code, Some(1), "{out:?}");

    // The proxy sending UIDs needs kube-apiserver to read them.
    let out = check_apiserver(tmp.path(), &good, &["--requestheader-uid-headers", "X-Remote-Uid"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.problems()[0].contains("the UIDs are silently dropped"), "{out:?}");
}

/// The version-dependent findings, with the version read from the manifest's image tag.
#[test]
fn check_apiserver_knows_what_each_kubernetes_version_does() {
    let tmp = tempdir();
    let run = |name: &str, image: &str, extra_flags: &[&str], proxy: &[&str]| {
        let mut flags: Vec<String> = good_flags();
        for f in extra_flags {
            let key = f.split('=').next().unwrap();
            flags.retain(|g| !g.starts_with(&format!("{key}=")));
            flags.push(f.to_string());
        }
        let command: Vec<String> = std::iter::once("kube-apiserver".to_string()).chain(flags).collect();
        let path = manifest_with_image(tmp.path(), name, image, &command, &[]);
        check_apiserver(tmp.path(), &path, proxy)
    };

    // The front-proxy CA shares a certificate with the client CA (by content, under another
    // path) and no allowed names: kube-apiserver 1.35 does not start at all.
    let pki = Pki::new(tmp.path());
    let (ca, copy) = (pki.path("ca.crt"), pki.path("front-proxy-ca-copy.crt"));
    std::fs::copy(&ca, &copy).unwrap();
    let shared = [
        format!("--client-ca-file={}", ca.display()),
        format!("--requestheader-client-ca-file={}", copy.display()),
        "--requestheader-allowed-names=".to_string(),
    ];
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let out = run("v135.yaml", "k8s/kube-apiserver:v1.35.0", &shared, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("image \"k8s/kube-apiserver:v1.35.0\", version 1.35"), "{out:?}");
    let p = out.problems();
    assert_eq!(p.len(), 2, "{out:?}");
    assert!(p[0].contains("is the same CA as --client-ca-file"), "{out:?}");
    assert!(p[1].contains("kube-apiserver refuses to start (this manifest runs 1.35: it does not start)"), "{out:?}");
    let out = run("v134.yaml", "kube-apiserver:v1.34.2", &shared, &[]);
    assert!(out.problems()[1].contains("fix it before upgrading to 1.35"), "{out:?}");

    // The proxy sends UIDs: 1.33 and later read them when listed; 1.32 needs the gate.
    let uid = ["--requestheader-uid-headers", "X-Remote-Uid"];
    let listed = ["--requestheader-uid-headers=X-Remote-Uid"];
    let out = run("uid133.yaml", "kube-apiserver:v1.33.1", &listed, &uid);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = run("uid132.yaml", "kube-apiserver:v1.32.4", &listed, &uid);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.problems()[0].contains("runs 1.32, where RemoteRequestHeaderUID is alpha and off by default"),
        "{out:?}"
    );
    let gated = ["--requestheader-uid-headers=X-Remote-Uid", "--feature-gates=RemoteRequestHeaderUID=true"];
    assert_eq!(run("uid132on.yaml", "kube-apiserver:v1.32.4", &gated, &uid).code, Some(0));
    let off = ["--requestheader-uid-headers=X-Remote-Uid", "--feature-gates=RemoteRequestHeaderUID=false"];
    let out = run("uid-off.yaml", "kube-apiserver:v1.34.0", &off, &uid);
    assert!(out.problems()[0].contains("sets RemoteRequestHeaderUID=false"), "{out:?}");
    // Not listed: silently dropped, and the message names the versions that honour the flag.
    let out = run("uid-missing.yaml", "kube-apiserver:v1.35.0", &[], &uid);
    assert_eq!(out.code, Some(1), "{out:?}");
    let p = out.problems();
    assert!(p[0].contains("silently dropped; set --requestheader-uid-headers=X-Remote-Uid"), "{out:?}");
    assert!(p[0].contains("1.32 with --feature-gates=RemoteRequestHeaderUID=true (alpha)"), "{out:?}");
    assert!(p[0].contains("by default from 1.33 (beta)"), "{out:?}");
}

#[test]
fn check_apiserver_exits_64_on_unreadable_manifests() {
    let tmp = tempdir();
    let out = check_apiserver(tmp.path(), &tmp.path().join("missing.yaml"), &[]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("missing.yaml") && out.stderr.contains("cannot read"), "{out:?}");
    for (name, text) in [("bad.yaml", "spec: [unclosed\n"), ("nopod.yaml", "kind: ConfigMap\ndata: {}\n")] {
        let path = tmp.path().join(name);
        write(&path, text);
        let out = check_apiserver(tmp.path(), &path, &[]);
        assert_eq!(out.code, Some(64), "{name}: {out:?}");
        assert!(out.stderr.contains(name), "{out:?}");
    }
    // A broken proxy config is a config error too.
    let config = tmp.path().join("proxy.yaml");
    write(&config, "no-such-key: 1\n");
    let good = kubeadm_manifest(tmp.path(), &good_flags());
    let out = check_apiserver(tmp.path(), &good, &["--config", &config.display().to_string()]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("no-such-key"), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_accepts_alice_and_shows_her_headers() {
    let env = Env::new();
    let (cert, _) = env.pki.write_user("alice", &env.pki.alice);
    let out = env.inspect(&cert);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("certificate: CN=alice"), "{out:?}");
    assert!(out.stdout.contains("intermediates in the file: CN=test-users-ca"), "{out:?}");
    assert!(out.stdout.contains("chain:       ok"), "{out:?}");
    assert!(out.stdout.contains("revocation:  ok\n"), "{out:?}");
    assert!(out.stdout.contains("  client certificate CN=alice, O=dev, O=ops (serial "), "{out:?}");
    assert!(out.stdout.contains("): not revoked\n    --crl-file "), "{out:?}");
    assert!(
        out.stdout.contains(
            "CRL #2 (all certificates; signed by CN=test-users-ca; number 1): not listed (decides all reasons)"
        ),
        "{out:?}"
    );
    assert!(out.stdout.contains("  intermediate CN=test-users-ca (serial "), "{out:?}");
    assert!(out.stdout.contains("\n  X-Remote-User: alice\n"), "{out:?}");
    let groups: Vec<&str> = out.stdout.lines().filter(|l| l.trim_start().starts_with("X-Remote-Group:")).collect();
    assert_eq!(groups, vec!["  X-Remote-Group: dev", "  X-Remote-Group: ops"], "{out:?}");
    assert!(out.stdout.contains("X-Remote-Extra-authentication.kubernetes.io%2fcredential-id: X509SHA256="), "{out:?}");
    assert!(out.stdout.contains("verdict:     ACCEPTED"), "{out:?}");
    env.assert_upstream_untouched();
}

/// inspect needs only the flags it uses: client CAs, CRLs, header names (the serving
/// certificate and upstream flags of `run` are neither required nor read).
#[test]
fn inspect_needs_only_the_client_ca_and_crl_flags() {
    let env = Env::new();
    let (alice, _) = env.pki.write_user("alice", &env.pki.alice);
    let (bob, _) = env.pki.write_user("bob", &env.pki.bob);
    let minimal = |cert: &Path, extra: &[&str]| {
        let mut a: Vec<String> = vec!["inspect".into(), cert.display().to_string()];
        a.extend(["--client-ca-file", &path_str(&env.pki.path("client-ca.crt"))].map(String::from));
        a.extend(["--crl-file", &path_str(&env.pki.path("crl.pem"))].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        kcp(env.dir(), &a)
    };
    let out = minimal(&alice, &["--requestheader-username-headers", "X-Proxy-User"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("\n  X-Proxy-User: alice\n"), "{out:?}");
    let out = minimal(&bob, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("verdict:     REFUSED: certificate is revoked"), "{out:?}");
    // The CRL flags are still required as run requires them: without a CRL, the CA is uncovered.
    let mut a: Vec<String> = vec!["inspect".into(), alice.display().to_string()];
    a.extend(["--client-ca-file", &path_str(&env.pki.path("client-ca.crt"))].map(String::from));
    let out = kcp(env.dir(), &a);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("has no CRL"), "{out:?}");
}

#[test]
fn inspect_refuses_bob_as_revoked_with_date_and_reason() {
    let env = Env::new();
    let (cert, _) = env.pki.write_user("bob", &env.pki.bob);
    let out = env.inspect(&cert);
    assert_eq!(out.code, Some(1), "{out:?}");
    let serial = hex::encode(&env.pki.bob.serial);
    let revocation = out.stdout.lines().find(|l| l.starts_with("revocation:")).unwrap_or_default();
    assert!(revocation.contains("refused: certificate is revoked"), "{out:?}");
    assert!(revocation.contains(&serial) && revocation.contains("crl.pem"), "{out:?}");
    assert!(revocation.contains("revoked at 20") && revocation.contains("(keyCompromise)"), "{out:?}");
    assert!(out.stdout.contains("identity headers (not sent: the certificate is refused):"), "{out:?}");
    assert!(out.stdout.contains("verdict:     REFUSED: certificate is revoked"), "{out:?}");
}

#[test]
fn inspect_refuses_an_expired_certificate() {
    let env = Env::new();
    let mut spec = Spec::client("carol", &["dev"]);
    spec.not_before = time::Duration::days(-30);
    spec.not_after = time::Duration::days(-1);
    let carol = env.pki.users_ca.issue(&spec);
    let (cert, _) = env.pki.write_user("carol", &carol);
    let out = env.inspect(&cert);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("validity:    expired 1d"), "{out:?}");
    assert!(out.stdout.contains("chain:       refused: certificate has expired"), "{out:?}");
    assert!(out.stdout.contains("verdict:     REFUSED: certificate has expired"), "{out:?}");
}

#[test]
fn inspect_refuses_a_certificate_from_an_unknown_ca() {
    let env = Env::new();
    let other = Authority::root("test-other-ca");
    let mallory = other.issue(&Spec::client("mallory", &["system:masters"]));
    let cert = env.dir().join("mallory.crt");
    write(&cert, &mallory.cert_pem);
    let out = env.inspect(&cert);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("chain:       refused: certificate does not chain to a CA in --client-ca-file"),
        "{out:?}"
    );
    assert!(out.stdout.contains("the certificate's issuer is not a CA in --client-ca-file"), "{out:?}");
    assert!(out.stdout.contains("verdict:     REFUSED"), "{out:?}");
}

#[test]
fn inspect_exits_64_on_bad_input() {
    let env = Env::new();
    let out = env.inspect(&env.dir().join("missing.crt"));
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("missing.crt") && out.stderr.contains("cannot read"), "{out:?}");
    let key = env.pki.path("apiserver.key");
    let out = env.inspect(&key);
    assert_eq!(out.code, Some(64), "a key is not a certificate: {out:?}");
    // A bad proxy configuration, as for `run`.
    let (cert, _) = env.pki.write_user("alice", &env.pki.alice);
    write(&env.pki.path("crl.pem"), "garbage");
    let out = env.inspect(&cert);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("--crl-file"), "{out:?}");
}
