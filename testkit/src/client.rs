//! The client side of the demo and the tests: the request `kubectl auth whoami` makes, and
//! client errors worded as kubectl prints them (the TLS alert first).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::sim::UserInfo;

/// Makes the request `kubectl auth whoami` makes (HTTP/2, as kubectl negotiates it), with
/// an optional client certificate (chain file, key next to it) and an optional bearer token.
pub async fn whoami(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    cert_file: Option<&Path>,
    token: Option<&str>,
) -> Result<UserInfo, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut tls = match cert_file {
        Some(path) => {
            let read = |e: rustls_pki_types::pem::Error| format!("{}: {e}", path.display());
            let chain =
                CertificateDer::pem_file_iter(path).map_err(read)?.collect::<Result<Vec<_>, _>>().map_err(read)?;
            let key_file = path.with_extension("key");
            let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    // One connection, driven here, so that a TLS alert arriving after the handshake (TLS 1.3
    // checks the client certificate after the server's Finished) is reported, not retried.
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| describe_client_error(&e))?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| describe_client_error(&e))?;
    let driver = tokio::spawn(conn);
    let body = r#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}"#;
    let mut req = http::Request::post("https://localhost/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from_static(body.as_bytes()))).map_err(|e| e.to_string())?;
    let result = async {
        let resp = send.send_request(req).await.map_err(|e| describe_client_error(&e))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| describe_client_error(&e))?.to_bytes();
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        serde_json::from_value(v["status"]["userInfo"].clone()).map_err(|e| e.to_string())
    }
    .await;
    connection_error_first(result, driver).await
}

/// When a request fails because its connection failed, the connection's error (for example
/// the TLS alert) is the meaningful one; HTTP/2 reports only "connection closed" to requests.
pub async fn connection_error_first<T>(
    result: Result<T, String>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
) -> Result<T, String> {
    if result.is_ok() {
        driver.abort();
        return result;
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), driver).await {
        Ok(Ok(Err(conn_err))) => Err(describe_client_error(&conn_err)),
        _ => result,
    }
}

/// Turns a client error into what kubectl would print for it (the TLS alert if there was one).
pub fn describe_client_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut chain = Vec::new();
    while let Some(e) = src {
        if let Some(alert) = received_alert(e) {
            return format!("remote error: tls: {}", alert_text(alert));
        }
        // HTTP/2 keeps only the text of I/O errors; recognise rustls' wording there.
        let text = e.to_string();
        if let Some(name) = text.split("received fatal alert: ").nth(1) {
            let name = name.split(|c: char| !c.is_alphanumeric()).next().unwrap_or_default();
            if let Some(alert) = KNOWN_ALERTS.iter().find(|a| format!("{a:?}") == name) {
                return format!("remote error: tls: {}", alert_text(*alert));
            }
        }
        chain.push(text);
        src = e.source();
    }
    chain.join(": ")
}

/// The TLS alert inside an error, looking through `io::Error` wrappers (which hide their
/// inner error from `source()`).
fn received_alert(e: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
        return Some(*alert);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    received_alert(inner)
}

const KNOWN_ALERTS: [rustls::AlertDescription; 9] = [
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::CertificateRequired,
    rustls::AlertDescription::AccessDenied,
    rustls::AlertDescription::DecryptError,
    rustls::AlertDescription::BadCertificateStatusResponse,
];

/// Go's crypto/tls wording of the alerts this proxy sends (what kubectl prints).
pub fn alert_text(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateRevoked => "revoked certificate".into(),
        A::CertificateExpired => "expired certificate".into(),
        A::UnknownCA => "unknown certificate authority".into(),
        A::UnsupportedCertificate => "unsupported certificate".into(),
        A::BadCertificate => "bad certificate".into(),
        A::CertificateRequired => "certificate required".into(),
        A::AccessDenied => "access denied".into(),
        A::DecryptError => "error decrypting message".into(),
        A::BadCertificateStatusResponse => "bad certificate status response".into(),
        other => format!("{other:?}"),
    }
}
