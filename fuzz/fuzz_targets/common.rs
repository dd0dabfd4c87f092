// Shared by the targets (included with `mod common;`).

use http::HeaderName;
use kube_crl_proxy::config::HeaderNames;

/// The default identity header names (kube-apiserver's usual --requestheader-* values).
pub fn header_names() -> HeaderNames {
    HeaderNames {
        username: vec![HeaderName::from_static("x-remote-user")],
        group: vec![HeaderName::from_static("x-remote-group")],
        uid: vec![HeaderName::from_static("x-remote-uid")],
        extra_prefix: "x-remote-extra-".into(),
    }
}
