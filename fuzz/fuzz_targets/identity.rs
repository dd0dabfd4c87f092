//! Certificate → identity → headers: any identity from_leaf returns must become header
//! values without control characters.
#![no_main]

mod common;

use http::HeaderMap;
use kube_crl_proxy::identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(id)) = identity::from_leaf(data) else { return };
    let names = common::header_names();
    let mut headers = HeaderMap::new();
    identity::apply(&mut headers, id.values().as_ref(), &names);
    for (name, value) in &headers {
        assert!(
            !value.as_bytes().iter().any(|b| b.is_ascii_control()),
            "header {name} has a control character: {value:?} (identity {id:?})"
        );
        if let Ok(s) = value.to_str() {
            assert!(!s.chars().any(char::is_control), "header {name}: {s:?}");
        }
    }
    assert!(headers.contains_key("x-remote-user"), "identity {id:?} set no username header");
});
