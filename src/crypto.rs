//! The one crypto provider of the process (ring): TLS both ways, and every signature the
//! proxy verifies itself (CRLs, OCSP responses, CRL signers' certificates).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The provider (ring, with its default algorithms).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
