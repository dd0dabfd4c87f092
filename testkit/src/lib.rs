//! kube-crl-proxy's scaffolding, for `kube-crl-proxy demo` and the tests; never part of the
//! library that serves traffic, which never imports it, and which this crate cannot use
//! (the package depends on this crate for its binary's `demo`: cargo forbids the cycle).
//!
//! - [`pki`]: a throwaway PKI (rcgen, plus CRLs encoded by hand).
//! - [`sim`]: the kube-apiserver stand-in behind the proxy, applying the request-header rules.
//! - [`client`]: the request `kubectl auth whoami` makes, and client errors worded as kubectl
//!   prints them.

#![forbid(unsafe_code)]

pub mod client;
pub mod pki;
pub mod sim;
