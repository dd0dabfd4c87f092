#!/usr/bin/env bash
# Extracts the NIST PKITS certificates and CRLs that tests/pkits/cases.json
# names from the PyPI package cryptography-vectors (pyca/cryptography's test
# vectors, which ship the PKITS 2011 data set under
# cryptography_vectors/x509/PKITS_data/), into tests/pkits/data/{certs,crls}.
#
# The package is fetched with `pip download` by name and pinned version; the
# wheel's sha256 is checked before anything is extracted. Only the files that
# cases.json uses (plus the trust anchor) are copied, under their PKITS names.
# data/ is emptied first, so the result is exactly what cases.json needs.
#
# Usage: tests/pkits/fetch.sh        (needs bash, python3 and pip)
#        PIP="pip3" tests/pkits/fetch.sh
set -euo pipefail

VERSION=50.0.2
WHEEL=cryptography_vectors-${VERSION}-py3-none-any.whl
SHA256=51641f03a3eb4edbe9fb68e3a3574d25f86aa502d06391fffa886330d02778a0
PREFIX=cryptography_vectors/x509/PKITS_data
TRUST_ANCHOR=TrustAnchorRootCertificate.crt

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

python3 - "$tmp/$WHEEL" "$here" "$PREFIX" "$TRUST_ANCHOR" <<'PY'
import json, os, shutil, sys, zipfile

wheel, here, prefix, trust_anchor = sys.argv[1:]
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
print("fetch.sh: %d certificates and %d CRLs in %s" % (len(certs), len(crls), data))
PY
