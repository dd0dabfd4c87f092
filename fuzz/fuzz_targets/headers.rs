//! The header filter: whatever a client sends, no identity header survives
//! `apply(headers, None, names)`.
//!
//! Input format: lines `name: value` (split on the first ':'; a line without ':' is a
//! name with an empty value); pairs that are not a valid header are skipped.
#![no_main]

mod common;

use http::{HeaderMap, HeaderName, HeaderValue};
use kube_crl_proxy::identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let names = common::header_names();
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], line[i + 1..].trim_ascii_start()),
            None => (line, &b""[..]),
        };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        headers.append(name, value);
    }
    let before = headers.len();
    identity::apply(&mut headers, None, &names);
    for name in headers.keys() {
        assert!(!identity::is_identity_header(name, &names), "identity header {name} survived");
        let lower = name.as_str().to_ascii_lowercase();
        assert!(
            !["x-remote-user", "x-remote-group", "x-remote-uid"].contains(&lower.as_str())
                && !lower.starts_with("x-remote-extra-"),
            "identity header {name} survived"
        );
    }
    assert!(headers.len() <= before);
});
