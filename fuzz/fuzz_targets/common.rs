// Shared by the targets (included with `mod common;`).

use http::HeaderName;
use kube_crl_proxy::config::HeaderNames;

/// The default identity header names (kube-apiserver's usual --requestheader-* values).
pub fn header_names() -> HeaderNames {
    HeaderNames::new(
        vec![HeaderName::from_static("x-remote-user")],
        vec![HeaderName::from_static("x-remote-group")],
        vec![HeaderName::from_static("x-remote-uid")],
        "x-remote-extra-".into(),
    )
}
