//! `kube-crl-proxy check-apiserver`: reads kube-apiserver's static pod manifest and reports
//! every flag that lets clients bypass the proxy, lets them assert identities, or loses the
//! identities the proxy forwards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use clap::Args;
use http::HeaderName;
use serde_yaml_ng::Value;

use super::{FRONT_PROXY_CN, Report, title_case};
use crate::config::{ClientFlags, Config, HeaderNames, ListenFlags, RunFlags, UpstreamFlags, UpstreamUrl};
use crate::error::ConfigError;
use crate::identity;

/// `kube-crl-proxy check-apiserver MANIFEST`: the manifest, plus the proxy's request-header
/// settings to compare against (from its `--config` file and/or these flags; the proxy's
/// defaults otherwise).
#[derive(Debug, Clone, Args)]
pub struct CheckApiserverArgs {
    /// kube-apiserver's static pod manifest, e.g. /etc/kubernetes/manifests/kube-apiserver.yaml.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The proxy's YAML config file; only its requestheader-* keys are used (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The proxy's request-header names, to compare with kube-apiserver's.
    #[command(flatten)]
    pub requestheader: crate::config::RequestHeaderFlags,
}
/// Reads kube-apiserver's static pod manifest and reports every flag that lets clients
/// bypass the proxy, lets them assert identities, or loses the identities it forwards.
pub fn check_apiserver(args: CheckApiserverArgs) -> Result<Report, ConfigError> {
    let names = proxy_header_names(&args)?;
    let manifest = read_manifest(&args.manifest)?;
    let problems = apiserver_problems(&manifest.flags, &names, manifest.version);
    let version = manifest.version.map_or_else(|| "version unknown".into(), |v| format!("version {v}"));
    let mut lines = vec![
        format!(
            "kube-apiserver manifest {} (container {:?}, image {:?}, {version})",
            args.manifest.display(),
            manifest.container,
            manifest.image
        ),
        format!(
            "compared with the proxy's headers: user {}, groups {}, extra prefix {}, uid {}",
            list_names(&names.username),
            list_names(&names.group),
            title_case(&names.extra_prefix),
            if names.uid.is_empty() { "(off)".into() } else { list_names(&names.uid) }
        ),
    ];
    let passed = problems.is_empty();
    lines.extend(problems.into_iter().map(|p| format!("problem: {p}")));
    lines.push(if passed { "result: no problems found".into() } else { "result: problems found".into() });
    Ok(Report { lines, passed })
}

/// The proxy's header names, resolved exactly as `run` resolves them. Only the header names
/// are used: the required file and URL fields get placeholders (never read) so that a
/// command line without `--config` resolves; they override the file's values, unused here.
fn proxy_header_names(args: &CheckApiserverArgs) -> Result<HeaderNames, ConfigError> {
    let unused = || Some(PathBuf::from("unused-by-check-apiserver"));
    let flags = RunFlags {
        config: args.config.clone(),
        requestheader: args.requestheader.clone(),
        listen: ListenFlags { tls_cert_file: unused(), ..Default::default() },
        clients: ClientFlags { client_ca_file: unused(), ..Default::default() },
        upstream: UpstreamFlags {
            upstream: vec![UpstreamUrl::from_static("https://127.0.0.1:6443")],
            upstream_ca_file: unused(),
            proxy_client_cert_file: unused(),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(Config::resolve(flags)?.headers)
}

/// kube-apiserver's minor release (`1.33`), read from the container image's tag
/// (`kube-apiserver:v1.33.2`, also with a registry path, a `-rc.1` suffix or an `@sha256:` digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// From an image reference; `None` when the tag is not a version (`latest`, none, a digest only).
    pub fn from_image(image: &str) -> Option<Self> {
        let name = image.rsplit('/').next()?.split('@').next()?;
        let tag = name.split_once(':')?.1;
        let mut parts = tag.strip_prefix('v').unwrap_or(tag).split(|c: char| !c.is_ascii_digit());
        Some(Self::new(parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The Kubernetes release from which kube-apiserver refuses to start when the request-header
/// CA shares a certificate with `--client-ca-file` and `--requestheader-allowed-names` is empty.
const SHARED_CA_FATAL_SINCE: KubeVersion = KubeVersion::new(1, 35);
/// `--requestheader-uid-headers` appears, behind the alpha gate `RemoteRequestHeaderUID` (off).
const UID_HEADERS_ALPHA: KubeVersion = KubeVersion::new(1, 32);
/// `RemoteRequestHeaderUID` is beta and on by default.
const UID_HEADERS_BETA: KubeVersion = KubeVersion::new(1, 33);

/// What `check-apiserver` reads from the static pod manifest.
struct Manifest {
    container: String,
    image: String,
    version: Option<KubeVersion>,
    flags: HashMap<String, String>,
}

/// The kube-apiserver container's name, image and flags (`command` then `args`;
/// `--flag=value` or `--flag value`; the last occurrence wins, as with kube-apiserver's flag
/// parser; a flag without value maps to "").
fn read_manifest(path: &Path) -> Result<Manifest, ConfigError> {
    let err = |m: String| ConfigError::file("check-apiserver", path, m);
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| err(format!("not YAML: {e}")))?;
    let containers = doc
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("no spec.containers: not a pod manifest".into()))?;
    let strings = |c: &Value, key: &str| -> Vec<String> {
        c.get(key).and_then(Value::as_sequence).map_or_else(Vec::new, |s| s.iter().filter_map(scalar).collect())
    };
    let is_apiserver = |c: &Value| {
        c.get("name").and_then(Value::as_str) == Some("kube-apiserver")
            || strings(c, "command").first().is_some_and(|b| b.rsplit('/').next() == Some("kube-apiserver"))
    };
    let container = match containers.iter().find(|c| is_apiserver(c)) {
        Some(c) => c,
        None if containers.len() == 1 => &containers[0],
        None => return Err(err("no kube-apiserver container (by name or command) among several".into())),
    };
    let name = container.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let image = container.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let words: Vec<String> = strings(container, "command").into_iter().chain(strings(container, "args")).collect();
    Ok(Manifest { container: name, version: KubeVersion::from_image(&image), image, flags: parse_flags(&words) })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_flags(words: &[String]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].trim();
        i += 1;
        let Some(flag) = w.strip_prefix("--") else { continue };
        match flag.split_once('=') {
            Some((k, v)) => flags.insert(k.to_string(), v.to_string()),
            None => match words.get(i) {
                Some(next) if !next.starts_with('-') => {
                    i += 1;
                    flags.insert(flag.to_string(), next.trim().to_string())
                }
                _ => flags.insert(flag.to_string(), String::new()),
            },
        };
    }
    flags
}

/// Comma-separated, trimmed, lower-cased, empty items dropped.
fn list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

fn list_names(names: &[HeaderName]) -> String {
    names.iter().map(|n| title_case(n.as_str())).collect::<Vec<_>>().join(",")
}

/// The value kube-apiserver's `--feature-gates` (`A=true,B=false`) gives `gate`, if any.
fn feature_gate(flags: &HashMap<String, String>, gate: &str) -> Option<bool> {
    let gates = flags.get("feature-gates")?;
    gates.split(',').rev().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == gate).then(|| v.trim().parse().ok())?
    })
}

/// The problems of a kube-apiserver flag set, one sentence each; `version` (from the image)
/// makes the version-dependent ones precise.
fn apiserver_problems(
    flags: &HashMap<String, String>,
    names: &HeaderNames,
    version: Option<KubeVersion>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |k: &str| flags.get(k).map(|v| v.trim());

    match get("bind-address") {
        None => problems.push(
            "--bind-address is missing: kube-apiserver listens on every address (0.0.0.0), so clients can reach it \
             directly and bypass the proxy; set --bind-address=127.0.0.1"
                .into(),
        ),
        Some(b) if !(b == "localhost" || b.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())) => problems.push(format!(
            "--bind-address={b} is not a loopback address: clients can reach kube-apiserver directly and bypass the \
             proxy; set --bind-address=127.0.0.1"
        )),
        Some(_) => {}
    }

    let front_ca = get("requestheader-client-ca-file").filter(|v| !v.is_empty());
    let mut shared_ca = false;
    match front_ca {
        None => problems.push(
            "--requestheader-client-ca-file is missing: kube-apiserver does not trust the proxy's front-proxy \
             certificate, so the identities the proxy forwards are ignored; set it to the front-proxy CA \
             (/etc/kubernetes/pki/front-proxy-ca.crt)"
                .into(),
        ),
        Some(f) => {
            if let Some(c) = get("client-ca-file").filter(|c| same_ca_file(c, f)) {
                shared_ca = true;
                problems.push(format!(
                    "--requestheader-client-ca-file is the same CA as --client-ca-file ({c}): the front-proxy CA \
                     must be separate from the client CAs, or certificates issued to ordinary clients could assert \
                     any identity to kube-apiserver"
                ));
            }
        }
    }

    if get("requestheader-allowed-names").is_none_or(|v| list(v).is_empty()) {
        let mut p = format!(
            "--requestheader-allowed-names is missing or empty: any certificate signed by the front-proxy CA could \
             assert identities; set --requestheader-allowed-names={FRONT_PROXY_CN}"
        );
        if shared_ca {
            p += &format!(
                ". Together with a --requestheader-client-ca-file that shares a certificate with --client-ca-file \
                 this is fatal from Kubernetes {SHARED_CA_FATAL_SINCE} on: kube-apiserver refuses to start"
            );
            p += &match version {
                Some(v) if v >= SHARED_CA_FATAL_SINCE => format!(" (this manifest runs {v}: it does not start)"),
                Some(v) => format!(" (this manifest runs {v}: fix it before upgrading to {SHARED_CA_FATAL_SINCE})"),
                None => String::new(),
            };
        }
        problems.push(p);
    }

    header_problems(
        &mut problems,
        get("requestheader-username-headers"),
        "username",
        "user names",
        &names.username,
        names,
    );
    header_problems(&mut problems, get("requestheader-group-headers"), "group", "groups", &names.group, names);
    uid_problems(
        &mut problems,
        get("requestheader-uid-headers"),
        names,
        feature_gate(flags, "RemoteRequestHeaderUID"),
        version,
    );
    extra_problems(&mut problems, get("requestheader-extra-headers-prefix"), names);
    problems
}

/// Every header kube-apiserver reads must be one the proxy strips (or clients could set
/// it), and the header the proxy sets (its first) must be one kube-apiserver reads.
fn header_problems(
    problems: &mut Vec<String>,
    value: Option<&str>,
    kind: &str,
    what: &str,
    ours: &[HeaderName],
    names: &HeaderNames,
) {
    let flag = format!("--requestheader-{kind}-headers");
    let theirs = value.map(list).unwrap_or_default();
    let first = ours.first().map_or_else(String::new, |h| title_case(h.as_str()));
    if theirs.is_empty() {
        problems.push(format!(
            "{flag} is missing or empty: kube-apiserver reads no {what} from the proxy's requests; set {flag}={first}"
        ));
        return;
    }
    not_stripped(problems, &flag, &theirs, names);
    if let Some(h) = ours.first()
        && !theirs.iter().any(|t| t == h.as_str())
    {
        problems.push(format!(
            "the proxy sends {what} in {first}, which kube-apiserver's {flag}={} does not read: the {what} are lost",
            value.unwrap_or("")
        ));
    }
}

/// kube-apiserver reads a UID header only if its own `--requestheader-uid-headers` lists it
/// and the `RemoteRequestHeaderUID` gate is on (alpha, off by default in 1.32; beta, on by
/// default from 1.33); otherwise the UID the proxy sends is dropped without any error.
fn uid_problems(
    problems: &mut Vec<String>,
    value: Option<&str>,
    names: &HeaderNames,
    gate: Option<bool>,
    version: Option<KubeVersion>,
) {
    let flag = "--requestheader-uid-headers";
    let theirs = value.map(list).unwrap_or_default();
    not_stripped(problems, flag, &theirs, names);
    let Some(h) = names.uid.first() else { return };
    let header = title_case(h.as_str());
    let honoured = format!(
        "kube-apiserver honours {flag} from {UID_HEADERS_ALPHA} with --feature-gates=RemoteRequestHeaderUID=true \
         (alpha) and by default from {UID_HEADERS_BETA} (beta)"
    );
    if !theirs.iter().any(|t| t == h.as_str()) {
        let mut p = format!(
            "the proxy sends UIDs in {header}, which kube-apiserver does not read ({flag} {}): the UIDs are silently \
             dropped; set {flag}={header} ({honoured})",
            value.map_or("is missing".into(), |v| format!("={v}"))
        );
        if let Some(v) = version.filter(|v| *v < UID_HEADERS_ALPHA) {
            p += &format!(
                "; this manifest runs {v}, which has no {flag}: upgrade to {UID_HEADERS_BETA} or turn the proxy's \
                 --requestheader-uid-headers off"
            );
        }
        problems.push(p);
        return;
    }
    let lost = format!("the UIDs the proxy sends in {header} are silently dropped");
    match (gate, version) {
        (Some(false), _) => problems.push(format!(
            "--feature-gates sets RemoteRequestHeaderUID=false, so kube-apiserver does not honour {flag} and {lost}; \
             remove it ({honoured})"
        )),
        (_, Some(v)) if v < UID_HEADERS_ALPHA => problems.push(format!(
            "this manifest runs {v}, which has no {flag} ({honoured}): {lost}; upgrade to {UID_HEADERS_BETA} or turn \
             the proxy's --requestheader-uid-headers off"
        )),
        (None, Some(v)) if v < UID_HEADERS_BETA => problems.push(format!(
            "this manifest runs {v}, where RemoteRequestHeaderUID is alpha and off by default: without \
             --feature-gates=RemoteRequestHeaderUID=true {lost} ({honoured})"
        )),
        _ => {}
    }
}

fn not_stripped(problems: &mut Vec<String>, flag: &str, theirs: &[String], names: &HeaderNames) {
    for t in theirs {
        let stripped = HeaderName::from_bytes(t.as_bytes()).is_ok_and(|h| identity::is_identity_header(&h, names));
        if !stripped {
            problems.push(format!(
                "kube-apiserver's {flag} reads {}, which the proxy does not strip from client requests: clients \
                 could set it; configure the proxy with the same header names",
                title_case(t)
            ));
        }
    }
}

fn extra_problems(problems: &mut Vec<String>, value: Option<&str>, names: &HeaderNames) {
    let flag = "--requestheader-extra-headers-prefix";
    let ours = &names.extra_prefix;
    let theirs = value.map(list).unwrap_or_default();
    if theirs.is_empty() {
        problems.push(format!(
            "{flag} is missing or empty: kube-apiserver reads no extras from the proxy's requests (the \
             credential-id is lost); set {flag}={}",
            title_case(ours)
        ));
        return;
    }
    for t in theirs.iter().filter(|t| !t.starts_with(ours.as_str())) {
        problems.push(format!(
            "kube-apiserver's {flag} includes {}, but the proxy strips only headers starting with {}: clients could \
             add extras; configure the proxy with the same prefix",
            title_case(t),
            title_case(ours)
        ));
    }
    if !theirs.contains(ours) {
        problems.push(format!(
            "the proxy sends extras with the prefix {}, which kube-apiserver's {flag}={} does not read: the \
             credential-id is lost",
            title_case(ours),
            value.unwrap_or("")
        ));
    }
}

/// Whether two CA file paths of the manifest name the same CA: the same path (lexically),
/// or, when both are readable here, files that share a certificate.
fn same_ca_file(a: &str, b: &str) -> bool {
    let norm = |p: &str| -> PathBuf { Path::new(p).components().filter(|c| *c != Component::CurDir).collect() };
    if norm(a) == norm(b) {
        return true;
    }
    let certs = |p: &str| crate::pem::certificates("check-apiserver", Path::new(p)).ok();
    match (certs(a), certs(b)) {
        (Some(x), Some(y)) => x.iter().any(|c| y.contains(c)),
        _ => false,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> HeaderNames {
        HeaderNames::new(
            vec![HeaderName::from_static("x-remote-user")],
            vec![HeaderName::from_static("x-remote-group")],
            vec![],
            "x-remote-extra-".into(),
        )
    }

    fn flags(words: &[&str]) -> HashMap<String, String> {
        parse_flags(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const GOOD: &[&str] = &[
        "kube-apiserver",
        "--bind-address=127.0.0.1",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    ];

    #[test]
    fn flags_in_both_forms_last_wins() {
        let f = flags(&["kube-apiserver", "--a=1", "--b", "2", "--c", "--d=", "--a=3", "--e", "--f=x=y"]);
        assert_eq!(f["a"], "3");
        assert_eq!(f["b"], "2");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
        assert_eq!(f["e"], "");
        assert_eq!(f["f"], "x=y");
        assert!(!f.contains_key("kube-apiserver"));
    }

    #[test]
    fn a_kubeadm_like_flag_set_has_no_problems() {
        assert_eq!(apiserver_problems(&flags(GOOD), &names(), None), Vec::<String>::new());
        let mut lower: Vec<&str> = GOOD.to_vec();
        lower[5] = "--requestheader-username-headers=x-remote-user";
        lower[1] = "--bind-address=::1";
        assert_eq!(apiserver_problems(&flags(&lower), &names(), None), Vec::<String>::new());
    }

    #[test]
    fn header_sets_must_be_stripped_and_read() {
        let mut f = flags(GOOD);
        f.insert("requestheader-username-headers".into(), "X-Remote-User, X-Other-User".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("X-Other-User") && p[0].contains("does not strip"), "{p:?}");

        let mut f = flags(GOOD);
        f.insert("requestheader-extra-headers-prefix".into(), "X-Remote-".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("could add extras") && p[1].contains("credential-id is lost"), "{p:?}");

        let mut f = flags(GOOD);
        f.insert("requestheader-uid-headers".into(), "X-Remote-Uid".into());
        let p = apiserver_problems(&f, &names(), None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("X-Remote-Uid") && p[0].contains("could set it"), "{p:?}");
        let mut with_uid = names();
        with_uid.uid = vec![HeaderName::from_static("x-remote-uid")];
        assert_eq!(apiserver_problems(&f, &with_uid, None), Vec::<String>::new());
        let p = apiserver_problems(&flags(GOOD), &with_uid, None);
        assert!(p.len() == 1 && p[0].contains("UIDs are silently dropped"), "{p:?}");
    }

    #[test]
    fn kube_versions_from_image_tags() {
        let v = |image: &str| KubeVersion::from_image(image).map(|v| v.to_string());
        assert_eq!(v("kube-apiserver:v1.33.2").as_deref(), Some("1.33"));
        assert_eq!(v("mirror.example:5000/k8s/kube-apiserver:v1.35.0-rc.1").as_deref(), Some("1.35"));
        assert_eq!(v("kube-apiserver:v1.32.1@sha256:0123").as_deref(), Some("1.32"));
        assert_eq!(v("kube-apiserver:1.31.4").as_deref(), Some("1.31"));
        assert_eq!(v("mirror.example:5000/kube-apiserver"), None, "a registry port is not a tag");
        assert_eq!(v("kube-apiserver:latest"), None);
        assert_eq!(v(""), None);
        assert!(KubeVersion::new(1, 9) < KubeVersion::new(1, 10));
    }

    #[test]
    fn feature_gates_last_value_wins() {
        let f = flags(&["--feature-gates=A=true, RemoteRequestHeaderUID=false,B=false"]);
        assert_eq!(feature_gate(&f, "RemoteRequestHeaderUID"), Some(false));
        assert_eq!(feature_gate(&f, "A"), Some(true));
        assert_eq!(feature_gate(&f, "C"), None);
        let f = flags(&["--feature-gates=RemoteRequestHeaderUID=false,RemoteRequestHeaderUID=true"]);
        assert_eq!(feature_gate(&f, "RemoteRequestHeaderUID"), Some(true));
        assert_eq!(feature_gate(&flags(GOOD), "RemoteRequestHeaderUID"), None);
    }

    #[test]
    fn a_shared_ca_without_allowed_names_is_fatal_from_1_35() {
        let mut f = flags(GOOD);
        f.insert("requestheader-client-ca-file".into(), "/etc/kubernetes/pki/ca.crt".into());
        f.insert("requestheader-allowed-names".into(), String::new());
        let fatal = |v: Option<KubeVersion>| {
            let p = apiserver_problems(&f, &names(), v);
            assert_eq!(p.len(), 2, "{p:?}");
            assert!(p[1].contains("fatal from Kubernetes 1.35 on: kube-apiserver refuses to start"), "{p:?}");
            p[1].clone()
        };
        assert!(fatal(Some(KubeVersion::new(1, 35))).ends_with("(this manifest runs 1.35: it does not start)"));
        assert!(fatal(Some(KubeVersion::new(1, 34))).ends_with("fix it before upgrading to 1.35)"));
        assert!(fatal(None).ends_with("refuses to start"));
        // Either alone is a problem, but not the fatal combination.
        f.insert("requestheader-allowed-names".into(), FRONT_PROXY_CN.into());
        let p = apiserver_problems(&f, &names(), Some(KubeVersion::new(1, 35)));
        assert!(p.len() == 1 && !p[0].contains("refuses to start"), "{p:?}");
        let mut f = flags(GOOD);
        f.insert("requestheader-allowed-names".into(), String::new());
        let p = apiserver_problems(&f, &names(), Some(KubeVersion::new(1, 35)));
        assert!(p.len() == 1 && !p[0].contains("refuses to start"), "{p:?}");
    }

    #[test]
    fn uid_headers_need_a_kube_apiserver_that_honours_them() {
        let mut with_uid = names();
        with_uid.uid = vec![HeaderName::from_static("x-remote-uid")];
        let mut f = flags(GOOD);
        f.insert("requestheader-uid-headers".into(), "X-Remote-Uid".into());
        let problems = |f: &HashMap<String, String>, v: Option<(u32, u32)>| {
            apiserver_problems(f, &with_uid, v.map(|(a, b)| KubeVersion::new(a, b)))
        };
        for v in [None, Some((1, 33)), Some((1, 35))] {
            assert_eq!(problems(&f, v), Vec::<String>::new(), "{v:?}");
        }
        let p = problems(&f, Some((1, 32)));
        assert!(
            p.len() == 1 && p[0].contains("alpha and off by default") && p[0].contains("silently dropped"),
            "{p:?}"
        );
        let p = problems(&f, Some((1, 31)));
        assert!(p.len() == 1 && p[0].contains("runs 1.31, which has no --requestheader-uid-headers"), "{p:?}");

        let mut on = f.clone();
        on.insert("feature-gates".into(), "RemoteRequestHeaderUID=true".into());
        assert_eq!(problems(&on, Some((1, 32))), Vec::<String>::new());
        let mut off = f.clone();
        off.insert("feature-gates".into(), "RemoteRequestHeaderUID=false".into());
        for v in [None, Some((1, 33)), Some((1, 35))] {
            let p = problems(&off, v);
            assert!(p.len() == 1 && p[0].contains("sets RemoteRequestHeaderUID=false"), "{v:?}: {p:?}");
        }

        // Not listed by kube-apiserver: dropped on every version, and the message says which honour it.
        let p = problems(&flags(GOOD), Some((1, 33)));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("silently dropped; set --requestheader-uid-headers=X-Remote-Uid"), "{p:?}");
        assert!(p[0].contains("from 1.32 with --feature-gates=RemoteRequestHeaderUID=true (alpha)"), "{p:?}");
        assert!(p[0].contains("by default from 1.33 (beta)"), "{p:?}");
        let p = problems(&flags(GOOD), Some((1, 30)));
        assert!(p.len() == 1 && p[0].contains("this manifest runs 1.30, which has no"), "{p:?}");
        // The proxy sends no UID: nothing to say whatever kube-apiserver's version.
        assert_eq!(apiserver_problems(&flags(GOOD), &names(), Some(KubeVersion::new(1, 31))), Vec::<String>::new());
    }

    #[test]
    fn same_ca_file_is_lexical_or_by_content() {
        assert!(same_ca_file("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/./ca.crt"));
        assert!(!same_ca_file("/nonexistent/ca.crt", "/nonexistent/front-proxy-ca.crt"));
    }
}
