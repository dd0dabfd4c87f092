//! Where the proxy listens and the certificate it serves: `--bind-address`, `--secure-port`,
//! `--ready-file`, `--tls-cert-file`, `--tls-private-key-file`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::layers::{Layers, pick};
use super::value::with_default;
use crate::error::ConfigError;

const BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// kube-apiserver's port: the proxy takes its place.
const SECURE_PORT: u16 = 6443;

#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(next_help_heading = "Listening")]
#[serde(rename_all = "kebab-case")]
pub struct ListenFlags {
    #[arg(long, value_name = "IP", help = with_default("Address to listen on", BIND_ADDRESS))]
    pub bind_address: Option<IpAddr>,
    #[arg(long, value_name = "PORT",
        help = with_default("Port to listen on; 0 picks a free port (see --ready-file)", SECURE_PORT))]
    pub secure_port: Option<u16>,
    /// Once listening, write the bound address (ip:port) to this file.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Serving certificate chain (PEM). May also hold the key (HAProxy's combined .pem).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving private key (PEM). Default: read from --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
}

pub(super) struct Listen {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub ready_file: Option<PathBuf>,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: Option<PathBuf>,
}

pub(super) fn resolve(l: &Layers<'_, ListenFlags>) -> Result<Listen, ConfigError> {
    Ok(Listen {
        bind_address: pick!(l, bind_address).or(BIND_ADDRESS),
        secure_port: pick!(l, secure_port).or(SECURE_PORT),
        ready_file: pick!(l, ready_file).path().get(),
        tls_cert_file: pick!(l, tls_cert_file)
            .path()
            .required("the serving certificate clients see, e.g. /etc/kubernetes/pki/apiserver.crt")?,
        tls_private_key_file: pick!(l, tls_private_key_file).path().get(),
    })
}
