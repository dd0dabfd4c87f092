//! The OCSP response parser and verifier: arbitrary bytes as a responder's answer for a
//! certificate of the seed CA (`corpus/ocsp-issuer.der`, made by make-seeds.sh with the
//! responses of the seed corpus, so the seeds pass the signature check and mutations of them
//! reach every later step).
#![no_main]

use std::sync::OnceLock;

use kube_crl_proxy::revocation::ocsp::message::{CertRef, parse_only, verify};
use libfuzzer_sys::fuzz_target;

static ISSUER: &[u8] = include_bytes!("../corpus/ocsp-issuer.der");

fn cert() -> &'static CertRef {
    static CERT: OnceLock<CertRef> = OnceLock::new();
    CERT.get_or_init(|| CertRef::issued_by(&[0x0a, 0x1b], ISSUER).expect("seed issuer"))
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_only(data);
    let algs = kube_crl_proxy::tls::provider().signature_verification_algorithms;
    let now = kube_crl_proxy::revocation::now_secs();
    let _ = std::hint::black_box(verify(data, cert(), now, 3600, &algs));
});
