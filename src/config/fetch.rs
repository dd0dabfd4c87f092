//! Fetching CRLs from URLs: `--crl-url` and how often, how long, how large, kept where →
//! [`FetchConfig`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{Span, deserialize_from_str, one_or_many, with_default};

const CRL_REFRESH_INTERVAL: Span = Span(Duration::from_secs(300));
const CRL_FETCH_TIMEOUT: Span = Span(Duration::from_secs(30));
const CRL_MAX_BYTES: usize = 128 << 20;
const CRL_FROM_DISTRIBUTION_POINTS: bool = false;

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Fetching CRLs")]
#[serde(rename_all = "kebab-case")]
pub struct FetchFlags {
    /// URL (http or https) to fetch a CRL from, refreshed before its nextUpdate. Repeatable.
    #[arg(long, value_name = "URL")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub crl_url: Vec<CrlUrl>,
    /// CA bundle verifying https CRL URLs [default: the system roots].
    #[arg(long, value_name = "FILE")]
    pub crl_url_ca_file: Option<PathBuf>,
    #[arg(long, value_name = "DURATION",
        help = with_default("Refresh fetched CRLs at least this often", CRL_REFRESH_INTERVAL))]
    pub crl_refresh_interval: Option<Span>,
    /// Keep fetched CRLs here, so a restart while the CA's server is down still enforces them.
    #[arg(long, value_name = "DIR")]
    pub crl_cache_dir: Option<PathBuf>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time limit of one CRL fetch attempt (connect, headers and body)", CRL_FETCH_TIMEOUT))]
    pub crl_fetch_timeout: Option<Span>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "Largest CRL accepted from a URL, in bytes", format!("{CRL_MAX_BYTES} ({} MiB)", CRL_MAX_BYTES >> 20)))]
    pub crl_max_bytes: Option<usize>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, help = with_default(
        "Also fetch the CRLs named in the CRL Distribution Points of the CA certificates and of verified client \
         certificates",
        CRL_FROM_DISTRIBUTION_POINTS))]
    pub crl_from_distribution_points: Option<bool>,
}

/// An http:// or https:// URL with a host (`--crl-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlUrl(String);

impl FromStr for CrlUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = s
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some());
        if ok { Ok(Self(s.to_string())) } else { Err(format!("{s:?} is not an http:// or https:// URL")) }
    }
}

deserialize_from_str!(CrlUrl);

/// Fetching CRLs from URLs.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub urls: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub refresh_interval: Duration,
    pub cache_dir: Option<PathBuf>,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub from_distribution_points: bool,
}

pub(super) fn resolve(l: &Layers<'_, FetchFlags>) -> FetchConfig {
    FetchConfig {
        urls: pick!(l, crl_url).list().into_iter().map(|u| u.0).collect(),
        ca_file: pick!(l, crl_url_ca_file).path().get(),
        refresh_interval: pick!(l, crl_refresh_interval).or(CRL_REFRESH_INTERVAL).0,
        cache_dir: pick!(l, crl_cache_dir).path().get(),
        timeout: pick!(l, crl_fetch_timeout).or(CRL_FETCH_TIMEOUT).0,
        max_bytes: pick!(l, crl_max_bytes).or(CRL_MAX_BYTES),
        from_distribution_points: pick!(l, crl_from_distribution_points).or(CRL_FROM_DISTRIBUTION_POINTS),
    }
}
