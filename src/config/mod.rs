//! Every flag of `run` and every key of its YAML file (`--config`; a key is its flag's name
//! without the dashes), resolved into the validated [`Config`]: flags win over the file, the
//! file over the defaults, and errors name the flag, or the file and key.
//!
//! Each flag is written once, in the module of its section: its name (the field), help, and
//! default (a const the help shows), and its validation (the field's type, which clap parses
//! from the command line and serde from the file: a key takes what its flag takes), beside
//! the resolver that turns the section into settings. Sections: `listen`, `clients` (client
//! CAs, CRL files, revocation policy), `fetch` (CRL URLs), `ocsp`, `upstream`, `headers`
//! (identity headers), `limits` (and client timeouts), `logging` (and the admin endpoint).
//! `layers` picks a value from the layers, `file` reads the file, `value` holds shared types.
//!
//! Security defaults are written out here, not inherited from a library:
//! `--client-cert-mode=optional`, `--revocation-check=chain`, `--crl-missing=deny`,
//! `--crl-expired=deny`, `--crl-expired-grace=0s`, `--ocsp=off`, TLS session resumption off.

mod clients;
mod fetch;
mod file;
mod headers;
mod layers;
mod limits;
mod listen;
mod logging;
mod ocsp;
mod upstream;
mod value;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use clients::{ClientCertMode, ClientFlags, Policy, RevocationCheck, RevocationPolicy};
pub use fetch::{CrlUrl, FetchConfig, FetchFlags};
pub use headers::{HeaderArg, HeaderNames, HeaderPrefix, RequestHeaderFlags};
pub use limits::{LimitFlags, Limits};
pub use listen::ListenFlags;
pub use logging::{DEFAULT_ADMIN_PORT, LogFormat, LogLevel, LoggingFlags};
pub use ocsp::{OcspConfig, OcspFlags, OcspMode, ResponderUrl};
pub use upstream::{ServerNameArg, UpstreamConfig, UpstreamFlags, UpstreamTarget, UpstreamUrl};
pub use value::Span;

use crate::error::ConfigError;
use layers::Layers;

/// The flags of `run`, one section each; the config file has the same keys. Every value is
/// optional here, so that one given neither here nor in the file takes its default.
#[derive(Debug, Default, Clone, Args)]
pub struct RunFlags {
    /// YAML file with the same keys as the flags (without the leading dashes); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub listen: ListenFlags,
    #[command(flatten)]
    pub clients: ClientFlags,
    #[command(flatten)]
    pub fetch: FetchFlags,
    #[command(flatten)]
    pub ocsp: OcspFlags,
    #[command(flatten)]
    pub upstream: UpstreamFlags,
    #[command(flatten)]
    pub requestheader: RequestHeaderFlags,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub logging: LoggingFlags,
}

/// The validated configuration of `run`.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub ready_file: Option<PathBuf>,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: PathBuf,
    pub client_ca_names_file: Option<PathBuf>,
    pub crl_files: Vec<PathBuf>,
    pub fetch: FetchConfig,
    pub client_cert_mode: ClientCertMode,
    pub revocation: RevocationPolicy,
    pub ocsp: OcspConfig,
    pub upstream: UpstreamConfig,
    pub headers: HeaderNames,
    pub close_expired_connections: bool,
    pub crl_expiry_warning: Duration,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
    pub request_header_timeout: Duration,
    pub limits: Limits,
    pub admin_address: SocketAddr,
    pub upstream_check_interval: Duration,
    pub access_log: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Config {
    /// Reads the optional config file, merges the flags over it and validates the result.
    pub fn resolve(flags: RunFlags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            None => None,
            Some(p) => Some((file::read(p, &flags)?, p.as_path())),
        };
        let all = Layers::new(&flags, file.as_ref().map(|(f, p)| (f, *p)));
        let listen = listen::resolve(&all.section(|f| &f.listen))?;
        let clients = clients::resolve(&all.section(|f| &f.clients))?;
        let (upstream, upstream_check_interval) = upstream::resolve(&all.section(|f| &f.upstream))?;
        let (limits, timeouts) = limits::resolve(&all.section(|f| &f.limits))?;
        let logging = logging::resolve(&all.section(|f| &f.logging));
        Ok(Config {
            bind_address: listen.bind_address,
            secure_port: listen.secure_port,
            ready_file: listen.ready_file,
            tls_cert_file: listen.tls_cert_file,
            tls_private_key_file: listen.tls_private_key_file,
            client_ca_file: clients.ca_file,
            client_ca_names_file: clients.ca_names_file,
            crl_files: clients.crl_files,
            fetch: fetch::resolve(&all.section(|f| &f.fetch)),
            client_cert_mode: clients.cert_mode,
            revocation: clients.revocation,
            ocsp: ocsp::resolve(&all.section(|f| &f.ocsp))?,
            upstream,
            headers: headers::resolve(&all.section(|f| &f.requestheader))?,
            close_expired_connections: clients.close_expired_connections,
            crl_expiry_warning: clients.crl_expiry_warning,
            shutdown_grace: timeouts.shutdown_grace,
            tls_handshake_timeout: timeouts.tls_handshake,
            request_header_timeout: timeouts.request_header,
            limits,
            admin_address: logging.admin_address,
            upstream_check_interval,
            access_log: logging.access_log,
            log_format: logging.log_format,
            log_level: logging.log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;
    use http::HeaderName;

    use super::*;

    /// The flags as `main` parses them.
    fn parse(args: &[&str]) -> Result<RunFlags, String> {
        let cmd = RunFlags::augment_args(clap::Command::new("kube-crl-proxy").no_binary_name(true));
        let matches = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
        RunFlags::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    /// What `run` requires, and `extra`.
    fn flags(extra: &[&str]) -> RunFlags {
        let mut args = vec![
            "--tls-cert-file=s.pem",
            "--client-ca-file=ca.pem",
            "--upstream=https://127.0.0.1:6443",
            "--upstream-ca-file=uca.pem",
            "--proxy-client-cert-file=fp.pem",
        ];
        args.extend(extra);
        parse(&args).unwrap()
    }

    fn resolve(extra: &[&str]) -> Result<Config, String> {
        Config::resolve(flags(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = resolve(&[]).unwrap();
        assert_eq!(c.bind_address.to_string(), "0.0.0.0");
        assert_eq!(c.secure_port, 6443);
        assert_eq!(c.client_cert_mode, ClientCertMode::Optional);
        assert_eq!(c.revocation.check, RevocationCheck::Chain);
        assert_eq!(c.revocation.crl_missing, Policy::Deny);
        assert_eq!(c.revocation.crl_expired, Policy::Deny);
        assert_eq!(c.revocation.crl_expired_grace, Duration::ZERO);
        assert_eq!(c.headers.username, vec![HeaderName::from_static("x-remote-user")]);
        assert_eq!(c.headers.group, vec![HeaderName::from_static("x-remote-group")]);
        assert!(c.headers.uid.is_empty());
        assert_eq!(c.headers.extra_prefix, "x-remote-extra-");
        assert_eq!(c.upstream.server_name().to_str(), "127.0.0.1");
        assert_eq!(c.upstream.url().to_string(), "https://127.0.0.1:6443/");
        assert!(c.close_expired_connections);
        assert_eq!(c.admin_address.to_string(), "127.0.0.1:6442");
        assert_eq!(c.upstream_check_interval, Duration::from_secs(5));
        assert!(c.upstream.http2);
        assert_eq!(c.upstream.http2_max_streams, 100);
        assert_eq!(c.fetch.refresh_interval, Duration::from_secs(300));
        assert_eq!(c.fetch.max_bytes, 128 << 20);
        assert_eq!(
            (c.ocsp.mode, c.ocsp.timeout, c.ocsp.max_age),
            (OcspMode::Off, Duration::from_secs(2), Duration::from_secs(3600))
        );
        assert_eq!(c.crl_expiry_warning, Duration::from_secs(24 * 3600));
        assert_eq!(
            (c.shutdown_grace, c.tls_handshake_timeout, c.request_header_timeout),
            (Duration::from_secs(30), Duration::from_secs(10), Duration::from_secs(30))
        );
        assert_eq!(
            (c.limits.idle_timeout, c.limits.max_connections, c.limits.max_header_bytes),
            (Duration::from_secs(90), 10_000, 1 << 20)
        );
        assert_eq!(c.limits.http2_max_concurrent_streams, 1000);
        assert!(!c.access_log);
        assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "info"));
        assert_eq!(resolve(&["-vv"]).unwrap().log_level, "trace");
    }

    /// Each default the help shows is the one `resolve` applies (both read the same const;
    /// this pins the text).
    #[test]
    fn help_shows_the_defaults() {
        let cmd = RunFlags::augment_args(clap::Command::new("kube-crl-proxy"));
        let help = |long: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long)).unwrap();
            arg.get_help().unwrap().to_string()
        };
        for (long, shown) in [
            ("bind-address", "0.0.0.0"),
            ("crl-expiry-warning", "24h"),
            ("crl-max-bytes", "134217728 (128 MiB)"),
            ("client-cert-mode", "optional"),
            ("ocsp", "off"),
            ("requestheader-username-headers", "X-Remote-User"),
            ("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
            ("max-header-bytes", "1048576 (1 MiB, as kube-apiserver)"),
            ("admin-address", "127.0.0.1:6442"),
            ("log-level", "info"),
        ] {
            assert!(help(long).ends_with(&format!(" [default: {shown}]")), "--{long}: {}", help(long));
        }
    }

    #[test]
    fn the_default_admin_port_collides_with_no_control_plane_or_prometheus_port() {
        let taken = [6443, 2379, 2380, 2381, 10248, 10249, 10250, 10255, 10256, 10257, 10258, 10259, 9090, 9091, 9093];
        assert!(!taken.contains(&DEFAULT_ADMIN_PORT), "{DEFAULT_ADMIN_PORT}");
        assert!(!(9100..=9999).contains(&DEFAULT_ADMIN_PORT), "Prometheus exporters' range: {DEFAULT_ADMIN_PORT}");
        // Port 0 stays a choice: the OS picks a free port, written to --ready-file.
        let c = resolve(&["--admin-address=127.0.0.1:0"]).unwrap();
        assert_eq!(c.admin_address.port(), 0);
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "secure-port: 7443\ncrl-file: [a.crl, /abs/b.crl]\nclient-cert-mode: required\nrequestheader-uid-headers: X-Remote-Uid\n\
             crl-expired-grace: 1h\nupstream-server-name: apiserver\nready-file: ready\nocsp-responder-url: http://ocsp.example\n\
             upstream: [https://10.0.0.1:6443, https://10.0.0.2:6443]\nupstream-http2-max-streams: 7\n",
        )
        .unwrap();
        let config = format!("--config={}", path.display());
        let c = resolve(&[&config, "--client-cert-mode=optional"]).unwrap();
        assert_eq!(c.secure_port, 7443);
        assert_eq!(c.crl_files, vec![dir.path().join("a.crl"), PathBuf::from("/abs/b.crl")]);
        assert_eq!(c.ready_file, Some(dir.path().join("ready")), "file paths are relative to the file");
        assert_eq!(c.tls_cert_file, PathBuf::from("s.pem"), "flag paths are not");
        assert_eq!(c.client_cert_mode, ClientCertMode::Optional, "flag wins over file");
        assert_eq!(c.headers.uid, vec![HeaderName::from_static("x-remote-uid")]);
        assert_eq!(c.revocation.crl_expired_grace, Duration::from_secs(3600));
        assert_eq!(c.ocsp.responder_url.as_deref(), Some("http://ocsp.example"));
        assert_eq!(c.upstream.http2_max_streams, 7);
        // The flag's --upstream replaces the file's list; the file's server name applies to it.
        assert_eq!(c.upstream.targets.len(), 1);
        assert_eq!(c.upstream.server_name().to_str(), "apiserver");
        // A repeatable flag not given leaves the file's list.
        let mut f = flags(&[&config]);
        f.upstream.upstream.clear();
        let c = Config::resolve(f).unwrap();
        let urls: Vec<String> = c.upstream.targets.iter().map(|t| t.label()).collect();
        assert_eq!(urls, ["https://10.0.0.1:6443", "https://10.0.0.2:6443"]);
    }

    /// Every flag of `run` but --config is a key, read by its section (a value no flag
    /// takes fails naming the key), and nothing else is.
    #[test]
    fn every_flag_is_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let config = format!("--config={}", path.display());
        let cmd = RunFlags::augment_args(clap::Command::new("kube-crl-proxy"));
        let keys: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").collect();
        assert_eq!(keys.len(), 51, "{keys:?}");
        for key in keys {
            std::fs::write(&path, format!("{key}: [[nested]]\n")).unwrap();
            let e = resolve(&[&config]).unwrap_err();
            assert!(e.contains("keys.yaml") && e.contains(key) && !e.contains("unknown key"), "{key}: {e}");
        }
        for key in ["config", "verbose", "v", "crl_file"] {
            std::fs::write(&path, format!("{key}: 1\n")).unwrap();
            let e = resolve(&[&config]).unwrap_err();
            assert!(e.contains(&format!("keys.yaml: {key}: unknown key")), "{key}: {e}");
        }
    }

    #[test]
    fn a_missing_or_keyless_config_file_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let flags = RunFlags { config: Some(path.clone()), ..Default::default() };
        let e = Config::resolve(flags.clone()).unwrap_err().to_string();
        assert!(e.contains("config.yaml: does not exist, so the proxy is not configured"), "{e}");
        assert!(e.contains("at least tls-cert-file, client-ca-file, crl-file (or crl-url), upstream"), "{e}");
        for text in
            ["", "\n", "# tls-cert-file: /etc/kubernetes/pki/apiserver.crt\n# upstream: https://127.0.0.1:6443\n"]
        {
            std::fs::write(&path, text).unwrap();
            let e = Config::resolve(flags.clone()).unwrap_err().to_string();
            assert!(e.contains("sets no keys yet (only comments)") && e.contains("proxy-client-cert-file"), "{e}");
        }
        // The flags may configure everything and the file nothing.
        let c = resolve(&[&format!("--config={}", path.display())]).unwrap();
        assert_eq!(c.secure_port, 6443);
        // A file that sets keys gets the usual per-key messages.
        std::fs::write(&path, "secure-port: 7443\n").unwrap();
        let e = Config::resolve(flags).unwrap_err().to_string();
        assert!(e.contains("tls-cert-file") && e.contains("is required"), "{e}");
        // A file that is not a mapping.
        std::fs::write(&path, "- tls-cert-file\n").unwrap();
        let e = resolve(&[&format!("--config={}", path.display())]).unwrap_err();
        assert!(e.contains("config.yaml") && e.contains("mapping"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let config = format!("--config={}", path.display());
        for (yaml, key, says) in [
            ("crl-expired-grace: soon\n", "crl-expired-grace", "invalid duration"),
            ("no-such-key: 1\n", "no-such-key", "unknown key"),
            ("client-cert-mode: sometimes\n", "client-cert-mode", "sometimes"),
            ("upstream-http2: false\nupstream-http2-max-streams: 0\n", "upstream-http2-max-streams", "at least 1"),
            ("max-header-bytes: 100\n", "max-header-bytes", "at least 4096"),
            ("ocsp-timeout: 0s\n", "ocsp-timeout", "more than 0s"),
            ("upstream: http://127.0.0.1:8080\n", "upstream", "must be an https:// URL"),
            ("upstream: [https://a:1, https://a:1]\n", "upstream", "given twice"),
            ("crl-url: [ftp://x]\n", "crl-url", "not an http:// or https:// URL"),
            ("ocsp-responder-url: https://x\n", "ocsp-responder-url", "not an http:// URL"),
            ("requestheader-group-headers: [bad header]\n", "requestheader-group-headers", "not a valid HTTP header"),
            ("log-level: \"a=b=c\"\n", "log-level", "a=b=c"),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let mut f = flags(&[&config]);
            if key == "upstream" {
                f.upstream.upstream.clear();
            }
            let e = Config::resolve(f).unwrap_err().to_string();
            assert!(e.contains("bad.yaml") && e.contains(key) && e.contains(says), "{yaml}: {e}");
        }
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let e = parse(&["--upstream=http://127.0.0.1:8080"]).unwrap_err();
        assert!(e.contains("--upstream") && e.contains("must be an https:// URL"), "{e}");
        let e = resolve(&["--upstream=https://127.0.0.1:6443"]).unwrap_err();
        assert!(e.contains("--upstream") && e.contains("given twice"), "{e}");
        let c = resolve(&["--upstream=https://[::1]:6443"]).unwrap();
        assert_eq!(c.upstream.targets.len(), 2);
        assert_eq!(c.upstream.targets[1].server_name.to_str(), "::1");
        let mut f = flags(&[]);
        f.listen.tls_cert_file = None;
        let e = Config::resolve(f).unwrap_err().to_string();
        assert!(e.contains("--tls-cert-file: is required"), "{e}");
        let e = resolve(&["--requestheader-group-headers=X-Remote-User"]).unwrap_err();
        assert!(e.contains("named twice"), "{e}");
        let e = resolve(&["--requestheader-extra-headers-prefix=X-Remote-"]).unwrap_err();
        assert!(
            e.contains("--requestheader-extra-headers-prefix") && e.contains("starts with the extra prefix"),
            "{e}"
        );
        for (arg, says) in [
            ("--requestheader-username-headers=bad header", "not a valid HTTP header name"),
            ("--crl-expired-grace=soon", "invalid duration"),
            ("--upstream-server-name=a b", "a b"),
        ] {
            let e = parse(&[arg]).unwrap_err();
            assert!(e.contains(arg.split('=').next().unwrap()) && e.contains(says), "{arg}: {e}");
        }
        for (arg, says) in [("--max-connections=0", "at least 1"), ("--ocsp-max-age=0s", "at least 1s")] {
            let e = resolve(&[arg]).unwrap_err();
            let flag = arg.split('=').next().unwrap();
            assert!(e.contains(&format!("command line: {flag}: must be {says}")), "{arg}: {e}");
        }
    }

    #[test]
    fn an_empty_header_flag_turns_the_files_headers_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "requestheader-uid-headers: X-Remote-Uid\n").unwrap();
        let config = format!("--config={}", path.display());
        assert_eq!(resolve(&[&config]).unwrap().headers.uid.len(), 1);
        assert!(resolve(&[&config, "--requestheader-uid-headers="]).unwrap().headers.uid.is_empty());
    }
}
