#!/usr/bin/env bash
# Lists, for every file in tests/pkits/data, the signature algorithm and (for
# certificates) the subject public key algorithm and size, as TSV on stdout.
# tests/pkits/algorithms.tsv is this script's output, committed.
#
# Usage: tests/pkits/algorithms.sh > tests/pkits/algorithms.tsv
set -euo pipefail

data=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/data

printf 'file\tsignature_algorithm\tkey_algorithm\tkey_bits\n'
for f in "$data"/certs/*.crt; do
    # DSA keys with inherited (absent) domain parameters make openssl print
    # "Unable to load Public Key"; their size is reported as "inherited".
    text=$(openssl x509 -inform DER -in "$f" -noout -text 2>/dev/null || true)
    sig=$(grep -m1 'Signature Algorithm:' <<<"$text" | awk '{print $3}')
    key=$(grep -m1 'Public Key Algorithm:' <<<"$text" | awk '{print $4}')
    bits=$(grep -m1 -oE 'Public-Key: \([0-9]+ bit\)' <<<"$text" | grep -oE '[0-9]+' || true)
    printf 'certs/%s\t%s\t%s\t%s\n' "$(basename "$f")" "$sig" "$key" "${bits:-inherited}"
done
for f in "$data"/crls/*.crl; do
    sig=$(openssl crl -inform DER -in "$f" -noout -text | grep -m1 'Signature Algorithm:' | awk '{print $3}')
    printf 'crls/%s\t%s\t-\t-\n' "$(basename "$f")" "$sig"
done
