//! Writes the rcgen-made part of the seed corpora (run by make-seeds.sh):
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/corpus`.

use std::path::{Path, PathBuf};

use kube_crl_proxy_testkit::pki::{self, Authority, Spec};
use time::Duration;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let put = |target: &str, name: &str, bytes: &[u8]| pki::write(&out.join(target).join(name), bytes);

    // crl: v2 CRLs (PEM and DER), empty and with entries, a bundle of two, a delta CRL.
    let ca = Authority::root("seed-ca");
    let der = |pem: &str| kube_crl_proxy::pem::crls_in("seed", Path::new("seed"), pem.as_bytes()).unwrap()[0].to_vec();
    let empty = ca.crl(&[], 1, Duration::days(7));
    let two = ca.crl(&[&[0x01, 0x02, 0x03], &[0x7f; 16]], 2, Duration::days(7));
    let stale = ca.crl(&[&[0x00, 0x80]], 3, Duration::days(-1));
    put("crl", "v2-empty.pem", empty.as_bytes());
    put("crl", "v2-empty.der", &der(&empty));
    put("crl", "v2-two-entries.der", &der(&two));
    put("crl", "v2-stale.der", &der(&stale));
    put(
        "crl",
        "v2-bundle.pem",
        format!("{two}{}", ca.intermediate("seed-int").crl(&[&[9]], 1, Duration::days(1))).as_bytes(),
    );
    put("crl", "delta.der", &ca.delta_crl(&[(&[1, 2, 3], 8), (&[4], 1)], 4, 2, Duration::days(1)));

    // identity: leaves with CN/O/UID, UTF-8, no CN, and control characters.
    let leaf = |spec: Spec| ca.issue(&spec).der.to_vec();
    put("identity", "cn-two-orgs.der", &leaf(Spec::client("alice", &["system:masters", "dev"])));
    let mut uid = Spec::client("bob", &["ops"]);
    uid.uid = Some("0f3c-uid".into());
    put("identity", "cn-uid.der", &leaf(uid));
    put("identity", "utf8.der", &leaf(Spec::client("Zoë 用户", &["grüppe"])));
    put("identity", "empty-org.der", &leaf(Spec::client("carol", &["", "team"])));
    let mut no_cn = Spec::client("x", &["orphans"]);
    no_cn.cn = None;
    put("identity", "no-cn.der", &leaf(no_cn));
    put("identity", "cn-newline.der", &leaf(Spec::client("eve\nx-remote-user: root", &[])));
    put("identity", "cn-del.der", &leaf(Spec::client("mallory\u{7f}", &["a\u{85}b"])));
    // The same CN under other DirectoryString tags (signature no longer matches, which
    // from_leaf does not check): T61, BMP, Universal.
    let base = leaf(Spec::client("dave", &[]));
    put("identity", "cn-t61.der", &retag(&base, b"dave", 0x14, b"dave"));
    put("identity", "cn-bmp.der", &retag(&base, b"dave", 0x1e, &[0, b'd', 0, b'a', 0, b'v', 0, b'e'][..4]));
    put("identity", "cn-universal.der", &retag(&base, b"dave", 0x1c, &[0, 0, 0, b'd']));
}

/// Replaces the first `tag len value` whose value is `value` by `new_tag` with `new_value`
/// (same length, so no enclosing length changes).
fn retag(der: &[u8], value: &[u8], new_tag: u8, new_value: &[u8]) -> Vec<u8> {
    assert_eq!(value.len(), new_value.len());
    let mut out = der.to_vec();
    let at =
        out.windows(value.len() + 2).position(|w| w[1] as usize == value.len() && &w[2..] == value).expect("value");
    out[at] = new_tag;
    out[at + 2..at + 2 + value.len()].copy_from_slice(new_value);
    out
}
