#!/usr/bin/env bash
# Builds target/debian/kube-crl-proxy_<version>-1_<arch>.deb: the release binary, then the man
# pages and completions generated from its own flags, then `cargo deb` (metadata in
# Cargo.toml, [package.metadata.deb]). Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
rm -rf target/assets
target/release/kube-crl-proxy generate-assets target/assets >/dev/null
cargo deb --no-build --locked "$@"
