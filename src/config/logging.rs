//! The admin endpoint and the logs: `--admin-address`, `--access-log`, `--log-format`,
//! `--log-level` and `-v`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{deserialize_from_str, enum_name, with_default};

/// The admin endpoint's default port (on 127.0.0.1). Chosen to collide with nothing that
/// runs on a control-plane node: not Prometheus (9090), Alertmanager (9093), the Pushgateway
/// (9091) or an exporter (Prometheus allocates 9100-9999 to exporters), and not kube-apiserver
/// (6443), etcd (2379-2381), the kubelet (10248, 10250, 10255), kube-proxy (10249, 10256),
/// kube-controller-manager (10257), cloud-controller-manager (10258) or kube-scheduler (10259).
pub const DEFAULT_ADMIN_PORT: u16 = 6442;
const ADMIN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_ADMIN_PORT);
const ACCESS_LOG: bool = false;
const LOG_FORMAT: LogFormat = LogFormat::Text;
/// `--log-level` without `-v`; `-v` is debug, `-vv` trace.
const LOG_LEVEL: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Admin endpoint and logs")]
#[serde(rename_all = "kebab-case")]
pub struct LoggingFlags {
    #[arg(long, value_name = "IP:PORT", help = with_default(
        "Admin endpoint (plain HTTP: /livez, /readyz, /metrics); keep it on loopback; port 0 picks a free one (see \
         --ready-file)",
        ADMIN_ADDRESS))]
    pub admin_address: Option<SocketAddr>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
        help = with_default(
            "Log one `access` event per finished request (user, groups, method, path, status, bytes, duration, \
             upstream)",
            ACCESS_LOG))]
    pub access_log: Option<bool>,
    #[arg(long, value_name = "FORMAT", help = with_default("Log format", enum_name(&LOG_FORMAT)))]
    pub log_format: Option<LogFormat>,
    #[arg(long, value_name = "LEVEL", help = with_default(
        "Log level or tracing filter, e.g. info, debug, kube_crl_proxy=debug", LOG_LEVEL))]
    pub log_level: Option<LogLevel>,
    /// More verbose logs (-v debug, -vv trace).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    #[serde(skip)]
    pub verbose: u8,
}

/// A `--log-level`: a level or a tracing filter (`tracing_subscriber::EnvFilter`'s syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        tracing_subscriber::EnvFilter::try_new(s).map(|_| Self(s.to_string())).map_err(|e| format!("{s:?}: {e}"))
    }
}

deserialize_from_str!(LogLevel);

pub(super) struct Logging {
    pub admin_address: SocketAddr,
    pub access_log: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

pub(super) fn resolve(l: &Layers<'_, LoggingFlags>) -> Logging {
    let by_verbosity = match l.flags().verbose {
        0 => LOG_LEVEL,
        1 => "debug",
        _ => "trace",
    };
    Logging {
        admin_address: pick!(l, admin_address).or(ADMIN_ADDRESS),
        access_log: pick!(l, access_log).or(ACCESS_LOG),
        log_format: pick!(l, log_format).or(LOG_FORMAT),
        log_level: pick!(l, log_level).get().map_or_else(|| by_verbosity.to_string(), |level| level.0),
    }
}
