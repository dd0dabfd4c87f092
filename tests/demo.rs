//! The README's first command: `kube-crl-proxy demo` shows a valid, a revoked and a token
//! request going through the real proxy (run here with `--once`, bounded in time).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_shows_alice_bob_and_the_token_user() {
    let dir = tempfile::Builder::new().prefix("kcp-demo-").tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-crl-proxy"))
        .args(["demo", "--once", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo --once did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    let sections: Vec<&str> = out.split("$ kubectl auth whoami").collect();
    assert_eq!(sections.len(), 4, "{out}");
    assert!(sections[1].contains("alice") && sections[1].contains("[dev ops system:authenticated]"), "{out}");
    assert!(sections[1].contains("X509SHA256="), "{out}");
    assert!(sections[2].contains("error: remote error: tls: revoked certificate"), "{out}");
    assert!(sections[3].contains("token-user") && sections[3].contains("[demo-tokens system:authenticated]"), "{out}");
    for f in ["alice.kubeconfig", "bob.kubeconfig", "token.kubeconfig", "kube-crl-proxy.yaml", "crl.pem"] {
        assert!(dir.path().join(f).exists(), "{f} not written");
    }
}
