#!/usr/bin/env bash
# Runs every case of tests/pkits/cases.json through `openssl verify` and
# compares OpenSSL's verdict with the NIST expected result. It checks the data
# and the manifest (paths, CRL lists), not kube-crl-proxy.
#
# For each case: -CAfile is the trust anchor only, -untrusted holds the path
# certificates and extra_certs, -CRLfile holds all of the case's CRLs (DER
# converted to PEM), the EE is the target, at a fixed time inside the data's
# validity window (see README.md). Two flag sets are run:
#   plain:    -crl_check_all
#   extended: -crl_check_all -extended_crl -use_deltas -x509_strict
#             (the flags of OpenSSL's own test/pkits-test.pl)
# Output: one TSV line per case and mode, then a summary per section.
# Exit status: non-zero if the manifest's structure check fails (a "path"
# that does not chain, an extra cert on the path) or the script fails; OpenSSL
# disagreeing with NIST does not fail it (it is known to on 2 cases; README.md).
#
# Usage: tests/pkits/openssl-check.sh [ATTIME_EPOCH_SECONDS]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data=$here/data
attime=${1:-1577836800}   # 2020-01-01T00:00:00Z
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pem_cert() { openssl x509 -inform DER -in "$data/certs/$1"; }
pem_crl() { openssl crl -inform DER -in "$data/crls/$1"; }

# id <TAB> expected <TAB> ee <TAB> space-separated untrusted <TAB> space-separated crls
python3 - "$here/cases.json" > "$tmp/cases.tsv" <<'PY'
import json, sys
for c in json.load(open(sys.argv[1])):
    print("\t".join([c["id"], c["expected"], c["ee"],
                     " ".join(c["path"] + c.get("extra_certs", [])),
                     " ".join(c["crls"])]))
PY

pem_cert TrustAnchorRootCertificate.crt > "$tmp/ta.pem"

# Structure of the manifest: each "path" must chain by key identifiers from
# the trust anchor down to the EE (AKI of each certificate = SKI of the one
# before it), and no extra_certs entry may be on that chain.
python3 - "$here/cases.json" "$data" <<'PY'
import json, re, subprocess, sys
cases, data = json.load(open(sys.argv[1])), sys.argv[2]
memo = {}
def ids(name):
    if name not in memo:
        text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text",
                               "-in", "%s/certs/%s" % (data, name)],
                              capture_output=True, text=True).stdout
        ski = re.search(r"Subject Key Identifier:\s*\n\s*([0-9A-F:]+)", text)
        aki = re.search(r"Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)", text)
        memo[name] = (ski and ski.group(1), aki and aki.group(1))
    return memo[name]
bad = 0
for c in cases:
    chain = ["TrustAnchorRootCertificate.crt"] + c["path"] + [c["ee"]]
    for up, down in zip(chain, chain[1:]):
        if ids(down)[1] != ids(up)[0]:
            print("manifest: %s: %s is not issued by %s" % (c["id"], down, up), file=sys.stderr); bad += 1
    for x in c.get("extra_certs", []):
        if x in chain:
            print("manifest: %s: extra cert %s is on the path" % (c["id"], x), file=sys.stderr); bad += 1
print("manifest: %d cases, %d structure problems" % (len(cases), bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY

printf 'mode\tid\texpected\topenssl\tagree\tdetail\n'
while IFS=$'\t' read -r id expected ee untrusted crls; do
    pem_cert "$ee" > "$tmp/ee.pem"
    : > "$tmp/untrusted.pem"
    for c in $untrusted; do pem_cert "$c" >> "$tmp/untrusted.pem"; done
    : > "$tmp/crls.pem"
    for c in $crls; do pem_crl "$c" >> "$tmp/crls.pem"; done
    untrusted_args=()
    [[ -s "$tmp/untrusted.pem" ]] && untrusted_args=(-untrusted "$tmp/untrusted.pem")
    for mode in plain extended; do
        flags=(-crl_check_all)
        [[ $mode == extended ]] && flags+=(-extended_crl -use_deltas -x509_strict)
        if out=$(openssl verify -attime "$attime" -CAfile "$tmp/ta.pem" \
                "${untrusted_args[@]}" -CRLfile "$tmp/crls.pem" "${flags[@]}" \
                "$tmp/ee.pem" 2>&1); then
            got=valid; detail=OK
        else
            got=invalid
            detail=$(grep -m1 -o 'error [0-9]* at [0-9]* depth lookup: .*' <<<"$out" || true)
            [[ -n $detail ]] || detail=$(tr '\n' ' ' <<<"$out" | cut -c1-160)
        fi
        agree=yes; [[ $got == "$expected" ]] || agree=NO
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$id" "$expected" "$got" "$agree" "$detail"
    done
done < "$tmp/cases.tsv" | tee "$tmp/results.tsv"

echo
echo "summary (agreeing / cases):"
python3 - "$tmp/results.tsv" <<'PY'
import sys, collections
agree = collections.defaultdict(lambda: [0, 0])
for line in open(sys.argv[1]):
    mode, tid, _exp, _got, ok, _detail = line.rstrip("\n").split("\t")
    sec = ".".join(tid.split(".")[:2])
    for key in ((mode, sec), (mode, "all")):
        agree[key][1] += 1
        agree[key][0] += ok == "yes"
secs = ["4.1", "4.2", "4.3", "4.4", "4.14", "4.15", "all"]
print("section\t" + "\t".join(secs))
for mode in ("plain", "extended"):
    print(mode + "\t" + "\t".join("%d/%d" % tuple(agree[(mode, s)]) for s in secs))
for mode in ("plain", "extended"):
    bad = [l.split("\t")[1] for l in open(sys.argv[1]) if l.startswith(mode + "\t") and "\tNO\t" in l]
    print("%s disagrees on: %s" % (mode, " ".join(bad) or "none"))
PY
