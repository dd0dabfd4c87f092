//! The CRL loader: PEM/DER detection and the CRL parser, entries iterated to the end; and
//! the other parsers of the revocation index (certificate facts, names) on the same bytes.
#![no_main]

use std::path::Path;

use kube_crl_proxy::revocation::crl::ParsedCrl;
use libfuzzer_sys::fuzz_target;

fn parse_fully(der: &[u8]) {
    if let Ok(crl) = ParsedCrl::parse(der) {
        let _ = crl.entries_hint();
        // To the end: the iterator must stop by itself after a malformed entry.
        for entry in crl.entries() {
            let _ = std::hint::black_box(entry);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a DER CRL.
    parse_fully(data);
    // As a certificate (serial, names, distribution points) and as a Name.
    let _ = std::hint::black_box(kube_crl_proxy::revocation::CertFacts::parse(data));
    let _ = std::hint::black_box(kube_crl_proxy::revocation::name::NameKey::of(data));
    // The bytes as a --crl-file: every CRL found in it goes through the parser as well.
    if let Ok(crls) = kube_crl_proxy::pem::crls_in("--crl-file", Path::new("fuzz"), data) {
        for crl in &crls {
            parse_fully(crl.as_ref());
        }
    }
});
