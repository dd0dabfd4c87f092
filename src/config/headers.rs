//! The identity header names, kube-apiserver's `--requestheader-*` flags (shared by `run`
//! and `check-apiserver`) → [`HeaderNames`].

use std::str::FromStr;

use clap::Args;
use http::HeaderName;
use serde::Deserialize;

use super::layers::{Layers, Origin, pick};
use super::value::{deserialize_from_str, one_or_many, with_default};
use crate::error::ConfigError;
pub use crate::identity::HeaderNames;

const USERNAME_HEADER: &str = "x-remote-user";
const GROUP_HEADER: &str = "x-remote-group";
const EXTRA_HEADERS_PREFIX: &str = "x-remote-extra-";

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Identity headers")]
#[serde(rename_all = "kebab-case")]
pub struct RequestHeaderFlags {
    #[arg(long, value_name = "NAMES", value_delimiter = ',', help = with_default(
        "Header(s) carrying the user name, comma-separated; the first is set", title_case(USERNAME_HEADER)))]
    #[serde(default, deserialize_with = "one_or_many")]
    pub requestheader_username_headers: Vec<HeaderArg>,
    #[arg(long, value_name = "NAMES", value_delimiter = ',', help = with_default(
        "Header(s) carrying groups; the first is set, one line per group", title_case(GROUP_HEADER)))]
    #[serde(default, deserialize_with = "one_or_many")]
    pub requestheader_group_headers: Vec<HeaderArg>,
    #[arg(long, value_name = "PREFIX",
        help = with_default("Prefix of extra headers", title_case(EXTRA_HEADERS_PREFIX)))]
    pub requestheader_extra_headers_prefix: Option<HeaderPrefix>,
    #[arg(long, value_name = "NAMES", value_delimiter = ',', help = with_default(
        "Header(s) carrying the UID (from subject OID 1.3.6.1.4.1.57683.2); empty = off", "empty"))]
    #[serde(default, deserialize_with = "one_or_many")]
    pub requestheader_uid_headers: Vec<HeaderArg>,
}

/// One name of a header list; empty (`--requestheader-uid-headers ""`) names none, so that
/// a flag can turn off what the file sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderArg(Option<HeaderName>);

impl FromStr for HeaderArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Ok(Self(None)),
            n => HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map(|h| Self(Some(h)))
                .map_err(|_| format!("{n:?} is not a valid HTTP header name")),
        }
    }
}

/// `--requestheader-extra-headers-prefix`, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPrefix(String);

impl FromStr for HeaderPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let p = s.trim().to_ascii_lowercase();
        if p.is_empty() || HeaderName::from_bytes(p.as_bytes()).is_err() {
            return Err(format!("{s:?} is not a valid header-name prefix"));
        }
        Ok(Self(p))
    }
}

deserialize_from_str!(HeaderArg, HeaderPrefix);

/// Header names as kube-apiserver's flags write them: `X-Remote-User`.
fn title_case(name: &str) -> String {
    let word = |w: &str| w.get(..1).map_or(String::new(), |c| c.to_ascii_uppercase() + &w[1..]);
    name.split('-').map(word).collect::<Vec<_>>().join("-")
}

pub(super) fn resolve(l: &Layers<'_, RequestHeaderFlags>) -> Result<HeaderNames, ConfigError> {
    let names = |given: Vec<HeaderArg>, default: Option<&'static str>| {
        if given.is_empty() {
            default.map(HeaderName::from_static).into_iter().collect()
        } else {
            given.into_iter().filter_map(|h| h.0).collect()
        }
    };
    let headers = HeaderNames::new(
        names(pick!(l, requestheader_username_headers).list(), Some(USERNAME_HEADER)),
        names(pick!(l, requestheader_group_headers).list(), Some(GROUP_HEADER)),
        names(pick!(l, requestheader_uid_headers).list(), None),
        pick!(l, requestheader_extra_headers_prefix).get().map_or_else(|| EXTRA_HEADERS_PREFIX.to_string(), |p| p.0),
    );
    check_overlap(&headers)?;
    Ok(headers)
}

/// The identity headers must be distinct, and none may start with the extra prefix
/// (it would be stripped and set twice).
fn check_overlap(h: &HeaderNames) -> Result<(), ConfigError> {
    let all: Vec<&HeaderName> = h.username.iter().chain(&h.group).chain(&h.uid).collect();
    for (i, a) in all.iter().enumerate() {
        if all[..i].contains(a) {
            return Err(Origin::Flags.err("requestheader-*-headers", format!("header {a} is named twice")));
        }
        if a.as_str().starts_with(&h.extra_prefix) {
            return Err(Origin::Flags.err(
                "requestheader-extra-headers-prefix",
                format!("header {a} starts with the extra prefix {}", h.extra_prefix),
            ));
        }
    }
    Ok(())
}
