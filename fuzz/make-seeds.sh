#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/corpus/ (keys and serials are random,
# so every run gives different bytes; commit the result only when the seeds change).
# Needs cargo and openssl. Run from anywhere: fuzz/make-seeds.sh
set -euo pipefail
cd "$(dirname "$0")"
corpus=$PWD/corpus
rm -rf "$corpus"
mkdir -p "$corpus"/{crl,identity,headers,config,ocsp}

# rcgen-made CRLs and certificates, through kube_crl_proxy_testkit::pki.
cargo run --quiet --example make_seeds -- "$corpus"

# A v1 CRL (no extensions, one entry) made by `openssl ca -gencrl`, PEM and DER.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
    -subj /CN=seed-openssl-ca -days 3650 2>/dev/null
  printf 'R\t301231235959Z\t240101000000Z\t0A1B\tunknown\t/CN=revoked\n' >index.txt
  cat >ca.cnf <<CNF
[ ca ]
default_ca = seed
[ seed ]
database = index.txt
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = 7
CNF
  openssl ca -gencrl -config ca.cnf -out v1.pem 2>/dev/null
  openssl crl -in v1.pem -outform DER -out v1.der
)
cp "$tmp/v1.pem" "$corpus/crl/v1-openssl.pem"
cp "$tmp/v1.der" "$corpus/crl/v1-openssl.der"
printf 'not a CRL\n' >"$corpus/crl/garbage.txt"
printf -- '-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n' >"$corpus/crl/bad-base64.pem"

# ocsp: responses of `openssl ocsp` for serial 0A1B (revoked), 0A1C (good) and 0A1D (not in
# the index: unknown), signed by the CA itself and by a delegated responder (EKU
# OCSPSigning, certificate included). The CA's certificate (never its key) is kept as
# corpus/ocsp-issuer.der: fuzz_targets/ocsp.rs verifies against it.
(
  cd "$tmp"
  printf 'R\t301231235959Z\t240101000000Z,keyCompromise\t0A1B\tunknown\t/CN=revoked\nV\t301231235959Z\t\t0A1C\tunknown\t/CN=good\n' >ocsp-index.txt
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rsp.key -out rsp.csr \
    -subj /CN=seed-ocsp-responder 2>/dev/null
  printf 'extendedKeyUsage = OCSPSigning\n' >rsp.ext
  openssl x509 -req -in rsp.csr -CA ca.crt -CAkey ca.key -set_serial 0x77 -days 3650 -extfile rsp.ext -out rsp.crt \
    2>/dev/null
  for serial in 0x0A1B 0x0A1C 0x0A1D; do
    openssl ocsp -issuer ca.crt -serial "$serial" -no_nonce -reqout "req-$serial.der" 2>/dev/null
    openssl ocsp -index ocsp-index.txt -CA ca.crt -rsigner ca.crt -rkey ca.key -resp_no_certs -ndays 7 \
      -reqin "req-$serial.der" -respout "ca-$serial.der" 2>/dev/null
    openssl ocsp -index ocsp-index.txt -CA ca.crt -rsigner rsp.crt -rkey rsp.key \
      -reqin "req-$serial.der" -respout "delegated-$serial.der" 2>/dev/null
  done
  openssl x509 -in ca.crt -outform DER -out ocsp-issuer.der
)
cp "$tmp"/ca-0x0A1*.der "$tmp"/delegated-0x0A1*.der "$corpus/ocsp/"
cp "$tmp/ocsp-issuer.der" "$corpus/ocsp-issuer.der"
printf '0\003\n\001\003' >"$corpus/ocsp/try-later"

# headers: `name: value` lines (see fuzz_targets/headers.rs).
h=$corpus/headers
printf 'x-remote-user: root\nx-remote-group: system:masters\nx-remote-uid: 0\n' >"$h/identity"
printf 'X-Remote-User: root\nX-REMOTE-EXTRA-scopes: all\nx-remote-extra-: x\n' >"$h/mixed-case"
printf 'accept: application/json\nuser-agent: kubectl/v1.33\nx-remote-extra-foo%%2fbar: y\nx-remote-userx: keep\n' >"$h/benign"
printf 'x-remote-user: a\nx-remote-user: b\nx-remote-group: c\r\nimpersonate-user: d\n' >"$h/repeated"
printf 'bad name: v\nx-remote-user: \001\nx-remote-extra-\xff: v\n' >"$h/invalid"

# config: valid and broken YAML.
c=$corpus/config
cat >"$c/valid.yaml" <<'YAML'
bind-address: 0.0.0.0
secure-port: 6443
tls-cert-file: /etc/kubernetes/pki/apiserver.crt
tls-private-key-file: /etc/kubernetes/pki/apiserver.key
client-ca-file: /etc/kubernetes/pki/ca.crt
crl-file: [ca.crl, int.crl]
crl-url: https://pki.example/ca.crl
crl-refresh-interval: 5m
crl-missing: deny
crl-expired: allow
crl-expired-grace: 1h
upstream: [https://10.0.0.1:6443, https://10.0.0.2:6443]
upstream-ca-file: /etc/kubernetes/pki/ca.crt
proxy-client-cert-file: /etc/kubernetes/pki/front-proxy-client.crt
proxy-client-key-file: /etc/kubernetes/pki/front-proxy-client.key
requestheader-username-headers: X-Remote-User
requestheader-group-headers: [X-Remote-Group]
requestheader-extra-headers-prefix: X-Remote-Extra-
requestheader-uid-headers: X-Remote-Uid
max-connections: 10000
admin-address: 127.0.0.1:9443
log-format: json
log-level: info
YAML
printf 'tls-cert-file: s.pem\nclient-ca-file: ca.pem\nupstream: https://127.0.0.1:6443\nupstream-ca-file: u.pem\nproxy-client-cert-file: p.pem\n' >"$c/minimal.yaml"
printf '' >"$c/empty.yaml"
printf 'secure-port: 70000\nshutdown-grace: forever\n' >"$c/bad-values.yaml"
printf 'no-such-key: 1\n' >"$c/unknown-key.yaml"
printf 'upstream: [a, {b: c}\n  - :\n\t&x *y\n' >"$c/broken.yaml"
printf 'a: &a [*a, *a]\nrequestheader-username-headers: ["", "Bad Header", "x-remote-user"]\n' >"$c/anchors.yaml"

du -sh "$corpus"
for t in "$corpus"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) files, $(du -sb "$t" | cut -f1) bytes"; done
