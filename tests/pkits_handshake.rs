//! A sample of NIST PKITS cases (data in `tests/pkits/`) through a real TLS handshake with the
//! binary, one case per mechanism: revoked end certificate, separate CRL-signing key (valid,
//! and with the CRL signer's certificate revoked), distribution points (valid, revoked, only
//! another partition's CRL), an indirect CRL, a circular cRLIssuer, a delta CRL (valid, and
//! revoked in the delta).
//!
//! Each group of cases with the same CAs and CRLs gets one proxy, started the way an operator
//! would: `--client-ca-file` = the trust anchor and the path's CAs, one `--crl-file` per CRL
//! as NIST ships it (DER), plus a PEM of the CRL signers' certificates NIST lists beside them,
//! default revocation policy; the serving certificate, upstream stand-in and front-proxy
//! credentials come from the harness PKI. Clients present the PKITS end certificate with its
//! key (NIST's public test key, `tests/pkits/data/keys/`): rustls over TLS 1.3 + HTTP/2 and
//! TLS 1.2 + HTTP/1.1, and `openssl s_client` for two cases.
//!
//! The proxy runs on the wall clock, so the sample holds only cases whose outcome does not
//! depend on the time: all their certificates and CRLs are valid from 2011 at the latest to
//! 2030-12-31T08:30:00Z (from then on this test fails: every certificate has expired). Each
//! outcome is also compared with the library verifier's
//! (`tests/pkits.rs`'s `CrlVerifier::check`) on the same files at the same time: same
//! acceptance, same refusal reason, same detail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kube_crl_proxy::ca::CaBundle;
use kube_crl_proxy::config::{ClientCertMode, Policy, RevocationCheck, RevocationPolicy};
use kube_crl_proxy::revocation::{CrlSource, RevocationIndex};
use kube_crl_proxy::tls::verifier::CrlVerifier;
use rustls::SupportedProtocolVersion;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// What the handshake must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The request reaches the upstream as the certificate's CN.
    Valid,
    /// TLS alert `certificate_revoked`, `handshake_refused` with reason `revoked`.
    Revoked,
    /// TLS alert `unknown_ca`, `handshake_refused` with reason `no_crl`, detail "undetermined".
    Undetermined,
}

/// The sample; `KEY_CASES` in `tests/pkits/fetch.sh` must name the same cases.
const SAMPLE: &[(&str, Expect)] = &[
    ("4.4.3", Expect::Revoked),       // EE on its CA's CRL
    ("4.4.19", Expect::Valid),        // CA signs its CRL with a second key (extra certificate)
    ("4.4.21", Expect::Undetermined), // that CRL-signing certificate is revoked
    ("4.14.1", Expect::Valid),        // EE's distribution point = the CRL's IDP
    ("4.14.2", Expect::Revoked),      // revoked on the matching-IDP CRL
    ("4.14.3", Expect::Undetermined), // the only CRL is for another distribution point
    ("4.14.24", Expect::Valid),       // indirect CRL by another CA (cRLIssuer)
    ("4.14.30", Expect::Valid),       // cRLIssuer certified by the CA, covered by its own CRL
    ("4.15.2", Expect::Valid),        // complete + delta CRL, EE on neither
    ("4.15.4", Expect::Revoked),      // EE revoked in the delta CRL only
];

static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
/// Each case is tried over both combinations.
static CLIENTS: [(&str, &[&SupportedProtocolVersion], Http); 2] =
    [("TLS 1.3 + HTTP/2", &TLS13, Http::H2), ("TLS 1.2 + HTTP/1.1", &TLS12, Http::H1)];

/// How long `openssl s_client` may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
struct Case {
    id: String,
    ee: String,
    path: Vec<String>,
    extra_certs: Vec<String>,
    crls: Vec<String>,
    expected: String,
}

fn pkits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pkits")
}

fn read(kind: &str, name: &str) -> Vec<u8> {
    std::fs::read(pkits().join("data").join(kind).join(name)).unwrap_or_else(|e| panic!("{kind}/{name}: {e}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// `<EE>` of `<EE>.crt`: the name of the PKCS#12 and key files.
fn stem(ee: &str) -> &str {
    ee.strip_suffix(".crt").unwrap_or_else(|| panic!("{ee}: not a .crt"))
}

fn key_file(ee: &str) -> PathBuf {
    pkits().join("data/keys").join(format!("{}.key.pem", stem(ee)))
}

fn sample() -> Vec<(Case, Expect)> {
    let all: Vec<Case> =
        serde_json::from_slice(&std::fs::read(pkits().join("cases.json")).expect("cases.json")).expect("manifest");
    let mut by_id: BTreeMap<String, Case> = all.into_iter().map(|c| (c.id.clone(), c)).collect();
    SAMPLE
        .iter()
        .map(|&(id, expect)| {
            let case = by_id.remove(id).unwrap_or_else(|| panic!("{id} is not in cases.json"));
            let nist_valid = case.expected == "valid";
            assert_eq!(nist_valid, expect == Expect::Valid, "{id}: SAMPLE disagrees with NIST's {}", case.expected);
            (case, expect)
        })
        .collect()
}

/// The files one proxy is started with: `--client-ca-file` and the `--crl-file`s.
struct Material {
    ca_file: PathBuf,
    crl_files: Vec<PathBuf>,
}

/// Writes the CA bundle (trust anchor + path) and the CRL signers' PEM for `case` under `dir`.
fn material(case: &Case, dir: &Path) -> Material {
    let tag = case.id.replace('.', "_");
    let mut ca_pem = pem("CERTIFICATE", &read("certs", "TrustAnchorRootCertificate.crt"));
    for c in &case.path {
        ca_pem.push_str(&pem("CERTIFICATE", &read("certs", c)));
    }
    let ca_file = dir.join(format!("{tag}-client-ca.pem"));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut crl_files: Vec<PathBuf> = case.crls.iter().map(|c| pkits().join("data/crls").join(c)).collect();
    if !case.extra_certs.is_empty() {
        let signers: String = case.extra_certs.iter().map(|c| pem("CERTIFICATE", &read("certs", c))).collect();
        let f = dir.join(format!("{tag}-crl-signers.pem"));
        std::fs::write(&f, signers).unwrap();
        crl_files.push(f);
    }
    Material { ca_file, crl_files }
}

/// What the library verifier says of the EE with these files at `now`: `None` = accepted,
/// else (reason label, detail).
fn library_outcome(m: &Material, ee: &CertificateDer<'_>, now: UnixTime) -> Option<(String, String)> {
    let policy = RevocationPolicy {
        check: RevocationCheck::Chain,
        crl_missing: Policy::Deny,
        crl_expired: Policy::Deny,
        crl_expired_grace: Duration::ZERO,
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let bundle = CaBundle::load(&m.ca_file, None).expect("CA bundle");
    let sources = CrlSource::files(&m.crl_files).expect("CRL files");
    let (index, _warnings) = RevocationIndex::load(&bundle, &sources, policy, &algs).expect("revocation index");
    let verifier = CrlVerifier::new(&bundle, Arc::new(index), ClientCertMode::Required, algs, None);
    verifier.check(ee, &[], now).err().map(|r| (r.reason.label().to_string(), r.detail))
}

/// The proxy's flags: the harness PKI's serving/upstream/front-proxy files, the case's CAs
/// and CRLs, JSON logs.
fn proxy_args(pki: &Pki, upstream: std::net::SocketAddr, m: &Material) -> Vec<String> {
    let mut args = pki.proxy_args(upstream);
    set_flag(&mut args, "--client-ca-file", Some(&path_str(&m.ca_file)));
    set_flag(&mut args, "--crl-file", None);
    for f in &m.crl_files {
        args.extend(["--crl-file".to_string(), path_str(f)]);
    }
    args.extend(["--log-format".to_string(), "json".to_string()]);
    args
}

/// A rustls client trusting the harness root, presenting the PKITS end certificate (alone:
/// its CAs are in the proxy's `--client-ca-file`) with its key.
fn client(
    pki: &Pki,
    ee: &CertificateDer<'static>,
    key_pem: &str,
    versions: &[&'static SupportedProtocolVersion],
    http: Http,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root_der()).expect("root");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("PKITS key");
    let mut c = rustls::ClientConfig::builder_with_provider(kube_crl_proxy::tls::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![ee.clone()], key)
        .expect("client certificate and key");
    c.alpn_protocols = match http {
        Http::H1 => vec![b"http/1.1".to_vec()],
        Http::H2 => vec![b"h2".to_vec()],
    };
    c
}

/// The subject's CN and every O, as the proxy's identity mapping reads them.
fn cn_and_orgs(der: &[u8]) -> (String, Vec<String>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().expect("string attribute").to_string();
    let cn = cert.subject().iter_common_name().map(text).last().expect("CN");
    (cn, cert.subject().iter_organization().map(text).collect())
}

fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    hex::encode(cert.raw_serial())
}

/// The proxy's `handshake_refused` events (JSON log lines).
fn refusals(proxy: &ProxyProcess) -> Vec<serde_json::Value> {
    proxy
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "handshake_refused")
        .collect()
}

/// Waits (bounded) until the proxy has logged at least `n` `handshake_refused` events.
async fn wait_for_refusals(proxy: &ProxyProcess, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = refusals(proxy);
        if events.len() >= n {
            return events;
        }
        assert!(Instant::now() < deadline, "expected {n} handshake_refused events; log:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One case, both rustls clients; checks the result and, for a refusal, the new log events.
/// Returns how many handshakes were refused.
async fn run_case(pki: &Pki, proxy: &ProxyProcess, case: &Case, expect: Expect, m: &Material, seen: usize) -> usize {
    let ee = CertificateDer::from(read("certs", &case.ee));
    let key_pem = std::fs::read_to_string(key_file(&case.ee)).expect("key file (run tests/pkits/fetch.sh)");
    let (cn, orgs) = cn_and_orgs(&ee);
    let library = library_outcome(m, &ee, UnixTime::now());
    let mut refused = 0;
    for (label, versions, http) in CLIENTS {
        let ctx = format!("{} {} over {label}", case.id, case.ee);
        let result = request(proxy.addr, client(pki, &ee, &key_pem, versions, http), http, whoami_request()).await;
        match expect {
            Expect::Valid => {
                let reply = result.unwrap_or_else(|e| panic!("{ctx}: refused: {e}\n{}", proxy.logs()));
                let info = user_info(&reply);
                assert_eq!(info.username, cn, "{ctx}: {info:?}");
                let mut groups = orgs.clone();
                groups.push("system:authenticated".into());
                assert_eq!(info.groups, groups, "{ctx}");
            }
            Expect::Revoked | Expect::Undetermined => {
                let alert =
                    if expect == Expect::Revoked { "revoked certificate" } else { "unknown certificate authority" };
                match result {
                    Ok(r) => panic!("{ctx}: expected the alert {alert:?}, got HTTP {}: {:?}", r.status, r.body),
                    Err(e) => assert_eq!(e, format!("remote error: tls: {alert}"), "{ctx}"),
                }
                refused += 1;
            }
        }
    }
    let events = wait_for_refusals(proxy, seen + refused).await;
    assert_eq!(events.len(), seen + refused, "{}: one handshake_refused per refusal:\n{events:#?}", case.id);
    let ours = &events[seen..];
    let serial = serial_hex(&ee);
    for e in ours {
        let detail = e["detail"].as_str().unwrap_or_default();
        assert_eq!(e["serial"], serial.as_str(), "{}: {e}", case.id);
        match expect {
            Expect::Revoked => {
                assert_eq!(e["reason"], "revoked", "{}: {e}", case.id);
                assert!(
                    detail.starts_with(&format!("client certificate serial {serial} is listed")),
                    "{}: {e}",
                    case.id
                );
            }
            Expect::Undetermined => {
                assert_eq!(e["reason"], "no_crl", "{}: {e}", case.id);
                assert!(detail.contains("undetermined"), "{}: {e}", case.id);
            }
            Expect::Valid => unreachable!("{}: a valid case was refused: {e}", case.id),
        }
    }
    // The binary and the library verifier agree: same acceptance, reason and detail.
    let binary = ours.first().map(|e| {
        (e["reason"].as_str().unwrap_or_default().to_string(), e["detail"].as_str().unwrap_or_default().to_string())
    });
    assert_eq!(binary, library, "{}: the binary's outcome differs from the library verifier's", case.id);
    eprintln!("{} ({:?}): {}", case.id, expect, binary.map_or("accepted".into(), |(r, d)| format!("{r}: {d}")));
    refused
}

/// Proxies for the sample: one per distinct (path, extra certificates, CRLs).
struct Group<'a> {
    material: Material,
    cases: Vec<&'a (Case, Expect)>,
}

/// What a proxy is started with: a case's path, extra certificates and CRLs.
type Inputs = (Vec<String>, Vec<String>, Vec<String>);

fn groups<'a>(sample: &'a [(Case, Expect)], dir: &Path) -> Vec<Group<'a>> {
    let mut groups: BTreeMap<Inputs, Group<'a>> = BTreeMap::new();
    for entry in sample {
        let case = &entry.0;
        groups
            .entry((case.path.clone(), case.extra_certs.clone(), case.crls.clone()))
            .or_insert_with(|| Group { material: material(case, dir), cases: Vec::new() })
            .cases
            .push(entry);
    }
    groups.into_values().collect()
}

#[tokio::test]
async fn pkits_sample_through_a_real_tls_handshake_with_the_binary() {
    let started = Instant::now();
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let upstream = Upstream::start(pki.sim_config()).await;
    let sample = sample();
    let groups = groups(&sample, tmp.path());
    // All proxies first (each start waits for its ready file), then the handshakes.
    let proxies: Vec<ProxyProcess> =
        groups.iter().map(|g| ProxyProcess::start(tmp.path(), &proxy_args(&pki, upstream.addr, &g.material))).collect();
    eprintln!("{} proxies for {} cases started in {:?}", proxies.len(), sample.len(), started.elapsed());
    for (group, proxy) in groups.iter().zip(&proxies) {
        let mut seen = 0;
        for (case, expect) in group.cases.iter().map(|e| (&e.0, e.1)) {
            seen += run_case(&pki, proxy, case, expect, &group.material, seen).await;
        }
    }
    eprintln!("{} cases in {:?}", sample.len(), started.elapsed());
}

/// `openssl s_client` as a second client: 4.14.2 (revoked) gets the alert, 4.14.1 (valid,
/// same CA and CRLs) reaches the upstream as its CN.
#[tokio::test]
async fn openssl_s_client_sees_the_same_outcomes() {
    let tmp = tempdir();
    let pki = Pki::new(tmp.path());
    let upstream = Upstream::start(pki.sim_config()).await;
    let sample = sample();
    let find = |id: &str| &sample.iter().find(|(c, _)| c.id == id).unwrap_or_else(|| panic!("{id} not in SAMPLE")).0;
    let (valid, revoked) = (find("4.14.1"), find("4.14.2"));
    assert_eq!((&valid.path, &valid.crls), (&revoked.path, &revoked.crls), "one proxy serves both");
    let m = material(valid, tmp.path());
    let proxy = ProxyProcess::start(tmp.path(), &proxy_args(&pki, upstream.addr, &m));

    for flag in ["-tls1_3", "-tls1_2"] {
        let ran = s_client(&pki, &proxy, tmp.path(), revoked, flag).await;
        assert!(ran.to_lowercase().contains("certificate revoked"), "{} {flag}: {ran}", revoked.id);
        assert!(!ran.contains("HTTP/1.1 "), "{} {flag} got an HTTP response: {ran}", revoked.id);

        let ran = s_client(&pki, &proxy, tmp.path(), valid, flag).await;
        let (cn, _) = cn_and_orgs(&read("certs", &valid.ee));
        assert!(ran.contains("HTTP/1.1 201 "), "{} {flag}: {ran}", valid.id);
        assert!(ran.contains(&format!("\"username\":\"{cn}\"")), "{} {flag}: {ran}", valid.id);
    }
    let events = wait_for_refusals(&proxy, 2).await;
    assert!(events.iter().all(|e| e["reason"] == "revoked"), "{events:#?}");
}

/// `openssl s_client -connect` to the proxy as `case`'s EE, sending the SelfSubjectReview
/// request `kubectl auth whoami` makes and reading until the proxy closes; stdout and stderr.
async fn s_client(pki: &Pki, proxy: &ProxyProcess, dir: &Path, case: &Case, version_flag: &str) -> String {
    let cert = dir.join(format!("{}.crt.pem", stem(&case.ee)));
    std::fs::write(&cert, pem("CERTIFICATE", &read("certs", &case.ee))).unwrap();
    let body = r#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}"#;
    let request = format!(
        "POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.arg("s_client")
        .args(["-connect", &proxy.addr.to_string(), version_flag, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(pki.path("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(key_file(&case.ee))
        .arg("-ign_eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    let run = async move {
        use tokio::io::AsyncWriteExt;
        let write = async move {
            let _ = stdin.write_all(request.as_bytes()).await;
        };
        tokio::join!(write, child.wait_with_output()).1
    };
    // On a timeout the dropped future kills s_client (kill_on_drop).
    let out = tokio::time::timeout(COMMAND_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("openssl s_client {version_flag} did not finish within {COMMAND_LIMIT:?}"))
        .expect("openssl s_client");
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `tests/pkits/data/keys/` holds exactly the sample's keys (`KEY_CASES` of fetch.sh = SAMPLE).
#[test]
fn the_fetched_keys_are_exactly_the_samples() {
    let mut want: Vec<PathBuf> = sample().iter().map(|(c, _)| key_file(&c.ee)).collect();
    want.sort();
    let mut have: Vec<PathBuf> =
        std::fs::read_dir(pkits().join("data/keys")).expect("data/keys").map(|e| e.expect("entry").path()).collect();
    have.sort();
    assert_eq!(have, want, "tests/pkits/fetch.sh KEY_CASES and SAMPLE differ");
}
