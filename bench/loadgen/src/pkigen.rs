//! `loadgen gen-pki`: the benchmark PKI and its CRLs, written to a directory.
//!
//! Layout (mirrors the reference HAProxy setup):
//! - `ca.crt` root CA ("bench-root"; HAProxy `ca-verify-file`), `ca-int.crt` users
//!   intermediate ("bench-users"; HAProxy `ca-file`, the names sent to clients),
//!   `client-ca-bundle.crt` = both (kube-crl-proxy `--client-ca-file`).
//! - `apiserver.{crt,key,pem}`: serving certificate for 127.0.0.1, signed by the root
//!   (`.pem` = certificate + key, HAProxy's `crt`).
//! - `client.{crt,key}`: CN=bench, O=dev, issued by the intermediate (the load).
//! - `probe.{crt,key}`: CN=probe, O=dev, issued by the intermediate; revoked only in
//!   `crl-1m-next.pem` (detects when a reloaded CRL takes effect).
//! - `front-proxy-ca.crt`, `front-proxy-client.{crt,key,pem}` (CN=front-proxy-client).
//! - `upstream.{crt,key}`: the nginx upstream's serving certificate (127.0.0.1), signed by
//!   the root (HAProxy `default-server ... ca-file ca.crt`).
//! - `crl/crl-<size>.pem`: one CRL per client CA in one PEM file (root: empty; users
//!   intermediate: `<size>` random serials, never the client's or the probe's).
//!   `crl-revoked.pem`: 10k serials + the client's. `crl-1m-next.pem`: the same 1M serials
//!   + the probe's, CRL number + 1.
//! - `victim-{1,2,3}.{crt,key}`: CN=victim-N, O=dev, issued by the intermediate, each held by
//!   one connection of the `scale` scenario and revoked alone.
//! - `crl/scale-v1.pem` … `scale-v3.pem`: the 10k serials + victims 1..k (CRL numbers 101..103);
//!   `crl/scale-all.pem`: the 10k + the three victims + the client's (number 104). The scale
//!   scenario starts from `crl-10k.pem` (number 100) and renames these into place in turn.
//! - `manifest.json`: what was generated, with timings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory (created).
    #[arg(long)]
    pub dir: PathBuf,
    /// CRL sizes (revoked serials in the users intermediate's CRL), comma-separated.
    /// Suffixes k and m are accepted (10k, 1m).
    #[arg(long, value_delimiter = ',', default_value = "0,10k,100k,1m")]
    pub crl_sizes: Vec<String>,
    /// Size of the CRL that also lists the client's serial (crl-revoked.pem); none if empty.
    #[arg(long, default_value = "10k")]
    pub revoked_size: String,
    /// Also write crl-1m-next.pem (1M serials + the probe's, next CRL number).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub reload_crl: bool,
    /// Key type of every certificate: ecdsa-p256 (rcgen's default) or rsa2048 (kubeadm's
    /// default; keys generated with the openssl command).
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_type: String,
    /// Size in bytes of the static file for the throughput scenario (written as `big.bin`).
    #[arg(long, default_value_t = 1 << 20)]
    pub big_file: usize,
}

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    serial: Vec<u8>,
}

/// A deterministic generator for the bulk serials (splitmix64): fast, and the same CRL
/// contents on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A positive 16-byte serial without a leading zero octet (like the in-repo PKI's).
    fn serial(&mut self) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&self.next().to_be_bytes());
        s[8..].copy_from_slice(&self.next().to_be_bytes());
        s[0] = (s[0] & 0x7f) | 0x01;
        s
    }
}

fn random_serial() -> Vec<u8> {
    let mut s = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s).expect("random");
    s[0] = (s[0] & 0x7f) | 0x01;
    s.to_vec()
}

pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = if let Some(n) = t.strip_suffix('k') {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 1_000_000)
    } else {
        (t.as_str(), 1)
    };
    Ok(num.parse::<usize>().with_context(|| format!("bad size {s:?}"))? * mul)
}

pub fn size_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}m", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn new_key(key_type: &str) -> Result<KeyPair> {
    match key_type {
        "ecdsa-p256" => Ok(KeyPair::generate()?),
        "rsa2048" => {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
                .output()
                .context("running openssl genpkey (needed for --key-type rsa2048)")?;
            if !out.status.success() {
                bail!("openssl genpkey failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(KeyPair::from_pem(std::str::from_utf8(&out.stdout)?)?)
        }
        other => bail!("unknown --key-type {other:?} (ecdsa-p256, rsa2048)"),
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(cn.into()));
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, DnValue::Utf8String(o.into()));
    }
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, None);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn root(cn: &str, kt: &str) -> Result<Ca> {
    let key = new_key(kt)?;
    let params = ca_params(cn);
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
}

fn intermediate(parent: &Ca, cn: &str, kt: &str) -> Result<Ca> {
    let key = new_key(kt)?;
    let params = ca_params(cn);
    let cert = params.signed_by(&key, &parent.issuer)?;
    Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
}

fn leaf(ca: &Ca, cn: &str, org: Option<&str>, server_ip: bool, kt: &str) -> Result<Leaf> {
    let key = new_key(kt)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, org);
    if server_ip {
        p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
        p.subject_alt_names.push(SanType::DnsName("localhost".try_into()?));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(365);
    let serial = random_serial();
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &ca.issuer)?;
    Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial })
}

/// A CRL of `ca` listing `serials` (+ `extra`), PEM.
fn crl(ca: &Ca, serials: &[[u8; 16]], extra: &[&[u8]], number: u64) -> Result<String> {
    let now = OffsetDateTime::now_utc();
    let revoked_at = now - Duration::days(1);
    let mut revoked_certs = Vec::with_capacity(serials.len() + extra.len());
    for s in serials.iter().map(|s| &s[..]).chain(extra.iter().copied()) {
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(s),
            revocation_time: revoked_at,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(30),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&ca.issuer)?.pem()?)
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> Result<()> {
    let path = dir.join(name);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let kt = args.key_type.as_str();
    let dir = &args.dir;
    std::fs::create_dir_all(dir)?;

    let root_ca = root("bench-root", kt)?;
    let users = intermediate(&root_ca, "bench-users", kt)?;
    let fp_ca = root("bench-front-proxy-ca", kt)?;
    let apiserver = leaf(&root_ca, "kube-apiserver", None, true, kt)?;
    let upstream = leaf(&root_ca, "kube-apiserver-upstream", None, true, kt)?;
    let client = leaf(&users, "bench", Some("dev"), false, kt)?;
    let probe = leaf(&users, "probe", Some("dev"), false, kt)?;
    let fp_client = leaf(&fp_ca, "front-proxy-client", None, false, kt)?;
    let victims: Vec<Leaf> =
        (1..=3).map(|i| leaf(&users, &format!("victim-{i}"), Some("dev"), false, kt)).collect::<Result<_>>()?;

    write(dir, "ca.crt", &root_ca.cert_pem)?;
    write(dir, "ca-int.crt", &users.cert_pem)?;
    write(dir, "client-ca-bundle.crt", format!("{}{}", root_ca.cert_pem, users.cert_pem))?;
    write(dir, "apiserver.crt", &apiserver.cert_pem)?;
    write(dir, "apiserver.key", &apiserver.key_pem)?;
    write(dir, "apiserver.pem", format!("{}{}", apiserver.cert_pem, apiserver.key_pem))?;
    write(dir, "upstream.crt", &upstream.cert_pem)?;
    write(dir, "upstream.key", &upstream.key_pem)?;
    write(dir, "client.crt", &client.cert_pem)?;
    write(dir, "client.key", &client.key_pem)?;
    write(dir, "probe.crt", &probe.cert_pem)?;
    write(dir, "probe.key", &probe.key_pem)?;
    for (i, v) in victims.iter().enumerate() {
        write(dir, &format!("victim-{}.crt", i + 1), &v.cert_pem)?;
        write(dir, &format!("victim-{}.key", i + 1), &v.key_pem)?;
    }
    write(dir, "front-proxy-ca.crt", &fp_ca.cert_pem)?;
    write(dir, "front-proxy-client.crt", &fp_client.cert_pem)?;
    write(dir, "front-proxy-client.key", &fp_client.key_pem)?;
    write(dir, "front-proxy-client.pem", format!("{}{}", fp_client.cert_pem, fp_client.key_pem))?;
    let big: Vec<u8> = (0..args.big_file).map(|i| (i % 251) as u8).collect();
    write(dir, "www/big.bin", big)?;
    let pki_secs = started.elapsed().as_secs_f64();

    // Bulk serials: one sequence, each CRL a prefix of it (so crl-1m ⊇ crl-100k ⊇ ...).
    let mut sizes: Vec<usize> = args.crl_sizes.iter().map(|s| parse_size(s)).collect::<Result<_>>()?;
    let revoked_size = if args.revoked_size.trim().is_empty() { None } else { Some(parse_size(&args.revoked_size)?) };
    sizes.sort_unstable();
    sizes.dedup();
    let max = sizes.iter().copied().chain(revoked_size).max().unwrap_or(0).max(if args.reload_crl { 1_000_000 } else { 0 });
    let mut rng = SplitMix(0x6b75_6265_2d63_726c);
    let mut serials: Vec<[u8; 16]> = Vec::with_capacity(max);
    while serials.len() < max {
        let s = rng.serial();
        if s[..] != client.serial[..] && s[..] != probe.serial[..] && victims.iter().all(|v| s[..] != v.serial[..]) {
            serials.push(s);
        }
    }
    let root_crl = crl(&root_ca, &[], &[], 1)?;
    let mut timings = String::new();
    let mut crls = Vec::new();
    for &n in &sizes {
        let t = Instant::now();
        let pem = crl(&users, &serials[..n], &[], 100)?;
        let name = format!("crl/crl-{}.pem", size_label(n));
        write(dir, &name, format!("{root_crl}{pem}"))?;
        let _ = write!(timings, "{name}: {:.2}s; ", t.elapsed().as_secs_f64());
        crls.push(serde_json::json!({"file": name, "entries": n, "crl_number": 100, "bytes": root_crl.len() + pem.len()}));
    }
    if let Some(n) = revoked_size {
        let pem = crl(&users, &serials[..n], &[&client.serial], 100)?;
        write(dir, "crl/crl-revoked.pem", format!("{root_crl}{pem}"))?;
        crls.push(serde_json::json!({"file": "crl/crl-revoked.pem", "entries": n + 1, "crl_number": 100, "lists_client": true}));
    }
    // The scale scenario: from crl-10k.pem (number 100), each victim revoked alone in turn,
    // then everything (the client certificate that the bulk of the connections share).
    let scale_base = 10_000.min(serials.len());
    for k in 1..=victims.len() {
        let extra: Vec<&[u8]> = victims[..k].iter().map(|v| &v.serial[..]).collect();
        let pem = crl(&users, &serials[..scale_base], &extra, 100 + k as u64)?;
        write(dir, &format!("crl/scale-v{k}.pem"), format!("{root_crl}{pem}"))?;
    }
    {
        let mut extra: Vec<&[u8]> = victims.iter().map(|v| &v.serial[..]).collect();
        extra.push(&client.serial);
        let pem = crl(&users, &serials[..scale_base], &extra, 100 + victims.len() as u64 + 1)?;
        write(dir, "crl/scale-all.pem", format!("{root_crl}{pem}"))?;
        crls.push(serde_json::json!({"file": "crl/scale-*.pem", "entries": scale_base, "crl_number": "101..104",
            "lists": "victims 1..k (scale-vk), victims + client (scale-all)"}));
    }
    if args.reload_crl {
        let t = Instant::now();
        let pem = crl(&users, &serials[..1_000_000], &[&probe.serial], 101)?;
        write(dir, "crl/crl-1m-next.pem", format!("{root_crl}{pem}"))?;
        let _ = write!(timings, "crl/crl-1m-next.pem: {:.2}s; ", t.elapsed().as_secs_f64());
        crls.push(serde_json::json!({"file": "crl/crl-1m-next.pem", "entries": 1_000_001, "crl_number": 101, "lists_probe": true}));
    }
    let manifest = serde_json::json!({
        "key_type": kt,
        "client_serial": hex(&client.serial),
        "probe_serial": hex(&probe.serial),
        "victim_serials": victims.iter().map(|v| hex(&v.serial)).collect::<Vec<_>>(),
        "pki_seconds": pki_secs,
        "total_seconds": started.elapsed().as_secs_f64(),
        "crl_timings": timings,
        "crls": crls,
    });
    write(dir, "manifest.json", serde_json::to_string_pretty(&manifest)?)?;
    eprintln!("gen-pki: {} in {:.1}s ({timings})", dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
