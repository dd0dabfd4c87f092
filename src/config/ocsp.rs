//! OCSP checking of client certificates: `--ocsp` and its responder, timeout, answer age and
//! cache → [`OcspConfig`].

use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{Span, deserialize_from_str, enum_name, with_default};
use crate::error::ConfigError;

const OCSP: OcspMode = OcspMode::Off;
const OCSP_TIMEOUT: Span = Span(Duration::from_secs(2));
const OCSP_MAX_AGE: Span = Span(Duration::from_secs(3600));
const OCSP_CACHE_SIZE: usize = 10_000;

/// Whether client certificates are also checked with OCSP, and what "no answer" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OcspMode {
    /// No OCSP: CRLs only.
    Off,
    /// Revoked answers refuse; no answer (responder down, slow, unknown) lets the handshake go on.
    IfAvailable,
    /// Only a good answer lets the handshake go on.
    Required,
}

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "OCSP")]
#[serde(rename_all = "kebab-case")]
pub struct OcspFlags {
    #[arg(long, value_name = "MODE", help = with_default(
        "Also check client certificates with OCSP. off; if-available: a revoked answer refuses, no answer passes; \
         required: only a good answer passes",
        enum_name(&OCSP)))]
    pub ocsp: Option<OcspMode>,
    /// Ask this OCSP responder (http://) instead of the one in each certificate's Authority
    /// Information Access extension.
    #[arg(long, value_name = "URL")]
    pub ocsp_responder_url: Option<ResponderUrl>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Longest wait for an OCSP responder, per query (a handshake waits at most this)", OCSP_TIMEOUT))]
    pub ocsp_timeout: Option<Span>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Re-ask the responder after this long even if the answer's nextUpdate is later; also the freshness bound \
         for answers without nextUpdate",
        OCSP_MAX_AGE))]
    pub ocsp_max_age: Option<Span>,
    #[arg(long, value_name = "N", help = with_default("Certificates whose OCSP answers are cached", OCSP_CACHE_SIZE))]
    pub ocsp_cache_size: Option<usize>,
}

/// An http:// URL with a host (`--ocsp-responder-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderUrl(String);

impl FromStr for ResponderUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok =
            s.parse::<http::Uri>().ok().is_some_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(format!("{s:?} is not an http:// URL (OCSP answers are signed; responders serve plain HTTP)"))
        }
    }
}

deserialize_from_str!(ResponderUrl);

/// OCSP checking of client certificates.
#[derive(Debug, Clone)]
pub struct OcspConfig {
    pub mode: OcspMode,
    pub responder_url: Option<String>,
    pub timeout: Duration,
    pub max_age: Duration,
    pub cache_size: usize,
}

pub(super) fn resolve(l: &Layers<'_, OcspFlags>) -> Result<OcspConfig, ConfigError> {
    Ok(OcspConfig {
        mode: pick!(l, ocsp).or(OCSP),
        responder_url: pick!(l, ocsp_responder_url).get().map(|u| u.0),
        timeout: pick!(l, ocsp_timeout).check(|t| !t.0.is_zero(), "must be more than 0s")?.or(OCSP_TIMEOUT).0,
        max_age: pick!(l, ocsp_max_age)
            .check(|a| a.0 >= Duration::from_secs(1), "must be at least 1s")?
            .or(OCSP_MAX_AGE)
            .0,
        cache_size: pick!(l, ocsp_cache_size).or(OCSP_CACHE_SIZE),
    })
}
