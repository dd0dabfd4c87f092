//! Client certificates and their CRLs: the client CAs, `--client-cert-mode`, the CRL files
//! and the revocation policy (`--revocation-check`, `--crl-missing`, `--crl-expired`,
//! `--crl-expired-grace`), and what happens as CRLs and certificates age.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::{Span, enum_name, one_or_many, with_default};
use crate::error::ConfigError;

const CLIENT_CERT_MODE: ClientCertMode = ClientCertMode::Optional;
const REVOCATION_CHECK: RevocationCheck = RevocationCheck::Chain;
const CRL_MISSING: Policy = Policy::Deny;
const CRL_EXPIRED: Policy = Policy::Deny;
const CRL_EXPIRED_GRACE: Span = Span(Duration::ZERO);
const CRL_EXPIRY_WARNING: Span = Span(Duration::from_secs(24 * 3600));
const CLOSE_EXPIRED_CONNECTIONS: bool = true;

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertMode {
    /// Clients without a certificate are forwarded with no identity headers (tokens work).
    Optional,
    /// The handshake fails without a client certificate.
    Required,
}

/// Which certificates of a client's chain are checked against CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationCheck {
    /// The leaf and every intermediate (each against its issuer's CRL).
    Chain,
    /// Only the leaf.
    Leaf,
}

/// What to do with a CA that has no CRL, or a CRL past its nextUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Deny,
    Allow,
}

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Client certificates and CRLs")]
#[serde(rename_all = "kebab-case")]
pub struct ClientFlags {
    /// CAs (roots and intermediates) that client certificates chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA names sent to clients in the CertificateRequest. Default: every CA in --client-ca-file.
    #[arg(long, value_name = "FILE")]
    pub client_ca_names_file: Option<PathBuf>,
    #[arg(long, value_name = "MODE", help = with_default(
        "optional: clients without a certificate pass with no identity; required: they are refused",
        enum_name(&CLIENT_CERT_MODE)))]
    pub client_cert_mode: Option<ClientCertMode>,
    /// CRL file (PEM with one or more CRLs, or DER). Repeatable.
    #[arg(long, value_name = "FILE")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub crl_file: Vec<PathBuf>,
    #[arg(long, value_name = "MODE", help = with_default(
        "chain: leaf and intermediates are checked against CRLs; leaf: the leaf only",
        enum_name(&REVOCATION_CHECK)))]
    pub revocation_check: Option<RevocationCheck>,
    #[arg(long, value_name = "POLICY", help = with_default(
        "deny: a CA without a CRL is a start-up error; allow: its certificates pass unchecked",
        enum_name(&CRL_MISSING)))]
    pub crl_missing: Option<Policy>,
    #[arg(long, value_name = "POLICY", help = with_default(
        "deny: clients of a CA whose CRL is past nextUpdate (+grace) are refused; allow: warn",
        enum_name(&CRL_EXPIRED)))]
    pub crl_expired: Option<Policy>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Grace period after a CRL's nextUpdate before --crl-expired applies", CRL_EXPIRED_GRACE))]
    pub crl_expired_grace: Option<Span>,
    #[arg(long, value_name = "DURATION",
        help = with_default("Warn when a CRL's nextUpdate is this close", CRL_EXPIRY_WARNING))]
    pub crl_expiry_warning: Option<Span>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, help = with_default(
        "Close a connection when its client certificate's notAfter passes", CLOSE_EXPIRED_CONNECTIONS))]
    pub close_expired_connections: Option<bool>,
}

/// Revocation policy, every choice spelled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    pub check: RevocationCheck,
    pub crl_missing: Policy,
    pub crl_expired: Policy,
    pub crl_expired_grace: Duration,
}

pub(super) struct Clients {
    pub ca_file: PathBuf,
    pub ca_names_file: Option<PathBuf>,
    pub cert_mode: ClientCertMode,
    pub crl_files: Vec<PathBuf>,
    pub revocation: RevocationPolicy,
    pub crl_expiry_warning: Duration,
    pub close_expired_connections: bool,
}

pub(super) fn resolve(l: &Layers<'_, ClientFlags>) -> Result<Clients, ConfigError> {
    Ok(Clients {
        ca_file: pick!(l, client_ca_file)
            .path()
            .required("the CAs that sign client certificates, e.g. /etc/kubernetes/pki/ca.crt")?,
        ca_names_file: pick!(l, client_ca_names_file).path().get(),
        cert_mode: pick!(l, client_cert_mode).or(CLIENT_CERT_MODE),
        crl_files: pick!(l, crl_file).paths(),
        revocation: RevocationPolicy {
            check: pick!(l, revocation_check).or(REVOCATION_CHECK),
            crl_missing: pick!(l, crl_missing).or(CRL_MISSING),
            crl_expired: pick!(l, crl_expired).or(CRL_EXPIRED),
            crl_expired_grace: pick!(l, crl_expired_grace).or(CRL_EXPIRED_GRACE).0,
        },
        crl_expiry_warning: pick!(l, crl_expiry_warning).or(CRL_EXPIRY_WARNING).0,
        close_expired_connections: pick!(l, close_expired_connections).or(CLOSE_EXPIRED_CONNECTIONS),
    })
}
