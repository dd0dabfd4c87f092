//! kube-crl-proxy: a TLS front proxy for kube-apiserver that enforces certificate
//! revocation (CRLs) for x509 client certificates and forwards the verified identity with
//! kube-apiserver's request-header authentication (`X-Remote-User`, `X-Remote-Group`, ...).
//!
//! # Layout
//! - [`config`]: flags and the YAML file → a validated [`config::Config`].
//! - [`pem`]: reading certificates, keys and CRL files, errors naming the file.
//! - [`ca`]: the client CA bundle: trust anchors, intermediates, hinted names.
//! - [`revocation`]: the pre-verified, per-issuer revocation index and its policies.
//! - [`tls`]: downstream `ServerConfig` + client verifier, upstream `ClientConfig`.
//! - [`identity`]: verified certificate → user, groups, UID, credential-id → headers.
//! - [`proxy`]: accept loop, handshake, HTTP/1.1 and HTTP/2 serving, graceful drain.
//! - [`forward`]: upstream pools, header rules, streaming, upgrades, error responses.
//! - [`error`]: typed errors and the one table each that maps them to alerts / statuses.
//! - [`pki`], [`sim`], [`demo`]: the throwaway PKI, the kube-apiserver stand-in and the
//!   `demo` command built on them (also used by the tests).
//!
//! [`run`] is the one entry point shared by `main` and the tests: it takes a bound
//! listener and a shutdown future.

pub mod ca;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod identity;
pub mod pem;
pub mod pki;
pub mod proxy;
pub mod revocation;
pub mod sim;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::ConfigError;
use crate::forward::Upstream;
use crate::proxy::Shared;
use crate::tls::TlsMaterial;

/// A proxy whose configuration and files have been loaded and validated.
pub struct Proxy {
    shared: Arc<Shared>,
    grace: Duration,
}

impl Proxy {
    /// Loads every file named by the configuration. Errors name the flag and the file.
    pub fn build(config: &Config) -> Result<Self, ConfigError> {
        let (tls, warnings) = TlsMaterial::load(config)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        for crl in tls.verifier.index().crls() {
            tracing::info!(
                issuer = %crl.issuer,
                file = %crl.source.display(),
                entries = crl.len(),
                version = crl.version,
                this_update = %revocation::fmt_time(crl.this_update),
                next_update = %crl.next_update.map_or("none".into(), revocation::fmt_time),
                "CRL loaded (signature verified)"
            );
        }
        let upstream = Upstream::new(&config.upstream, tls.upstream, config.headers.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                server_tls: tls.server,
                upstream,
                handshake_timeout: config.tls_handshake_timeout,
                request_header_timeout: config.request_header_timeout,
            }),
            grace: config.shutdown_grace,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains for the grace period.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        proxy::serve(listener, self.shared, shutdown, self.grace).await;
    }
}

/// Loads `config` and serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    Proxy::build(config)?.serve(listener, shutdown).await;
    Ok(())
}
