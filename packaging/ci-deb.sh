#!/usr/bin/env bash
# CI for the Debian package (called by .ci/run; as root on Debian or Ubuntu; changes the
# system: installs the tools below, then installs and purges the package).
#
# Builds the .deb (packaging/build-deb.sh), runs lintian (no errors allowed), installs it with
# dpkg -i and checks what an operator meets: --version, `man kube-crl-proxy`, the completions,
# `systemd-analyze verify` on the installed unit, a service that is neither enabled nor started
# and refuses to run on the untouched config (exit 64, saying what to write), `check` on the
# demo PKI. Then dpkg --purge, and nothing may be left but what Debian policy keeps: the
# system group kube-crl-proxy (policy: never delete system users or groups on purge; files
# may still belong to them) and the shadow backups its creation wrote.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
tools=()
command -v lintian >/dev/null 2>&1 || tools+=(lintian)
command -v man >/dev/null 2>&1 || tools+=(man-db)
command -v systemd-analyze >/dev/null 2>&1 || tools+=(systemd)
command -v addgroup >/dev/null 2>&1 || tools+=(adduser)
if [ "${#tools[@]}" -gt 0 ]; then
  echo "installing ${tools[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked

fail() { echo "packaging/ci-deb.sh: $*" >&2; exit 1; }

echo "+ packaging/build-deb.sh"
packaging/build-deb.sh
version=$(cargo metadata --no-deps --format-version 1 --locked | sed -n 's/.*"name":"kube-crl-proxy","version":"\([^"]*\)".*/\1/p')
[ -n "$version" ] || fail "no version in cargo metadata"
deb=$(ls target/debian/kube-crl-proxy_"$version"-*_*.deb)
echo "+ lintian $deb"
lintian --fail-on error "$deb"

if dpkg-query -W kube-crl-proxy >/dev/null 2>&1; then
  fail "kube-crl-proxy is already installed here; purge it first (dpkg --purge kube-crl-proxy)"
fi
# Everything dpkg and the maintainer scripts may touch, before installing.
tree() {
  find /etc /usr /var/lib /opt -xdev \( -path /var/lib/apt -o -path /var/lib/dpkg \) -prune -o -print 2>/dev/null | sort
}
before=$(mktemp) after=$(mktemp) work=$(mktemp -d)
trap 'rm -rf "$before" "$after" "$work"' EXIT
tree >"$before"

echo "+ dpkg -i $deb"
dpkg -i "$deb"

echo "+ kube-crl-proxy --version"
[ "$(command -v kube-crl-proxy)" = /usr/bin/kube-crl-proxy ] || fail "kube-crl-proxy is not /usr/bin/kube-crl-proxy"
[ "$(kube-crl-proxy --version)" = "kube-crl-proxy $version" ] || fail "--version: $(kube-crl-proxy --version)"

echo "+ man kube-crl-proxy"
page=$(MANWIDTH=100 man kube-crl-proxy 2>"$work/man.err") || fail "man kube-crl-proxy: $(cat "$work/man.err")"
for needle in "--client-ca-file" "--admin-address" "EXIT STATUS" "/etc/kube-crl-proxy/config.yaml" "check-apiserver"; do
  grep -qF -- "$needle" <<<"$page" || fail "man kube-crl-proxy lacks $needle"
done
for sub in check check-apiserver inspect demo; do
  MANWIDTH=100 man "kube-crl-proxy-$sub" >/dev/null || fail "man kube-crl-proxy-$sub"
done
bash -c 'source /usr/share/bash-completion/completions/kube-crl-proxy && complete -p kube-crl-proxy' >/dev/null \
  || fail "the bash completion does not load"

echo "+ conffile"
dpkg-query -W -f='${Conffiles}\n' kube-crl-proxy | grep -q '^ /etc/kube-crl-proxy/config.yaml ' \
  || fail "/etc/kube-crl-proxy/config.yaml is not a conffile"
getent group kube-crl-proxy >/dev/null || fail "the group kube-crl-proxy was not created"

unit=/usr/lib/systemd/system/kube-crl-proxy.service
echo "+ systemd-analyze verify $unit"
systemd-analyze verify "$unit"
for wants in /etc/systemd/system/*.wants/kube-crl-proxy.service; do
  [ ! -e "$wants" ] || fail "the service was enabled on install: $wants"
done
if [ -d /run/systemd/system ] && systemctl is-active --quiet kube-crl-proxy; then
  fail "the service was started on install"
fi

# The unit's own command line on the untouched config: refused, exit 64, saying what to write.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
echo "+ $exec_start   (the packaged, still unconfigured config)"
set +e
$exec_start >/dev/null 2>"$work/unconfigured.err"
code=$?
set -e
[ "$code" = 64 ] || fail "ExecStart on the packaged config exited $code, not 64: $(cat "$work/unconfigured.err")"
grep -q "sets no keys yet" "$work/unconfigured.err" && grep -q "tls-cert-file" "$work/unconfigured.err" \
  || fail "the refusal does not say what to write: $(cat "$work/unconfigured.err")"
cat "$work/unconfigured.err"

echo "+ kube-crl-proxy demo --once, then check on its PKI"
kube-crl-proxy demo --once --dir "$work/demo" >"$work/demo.out" || { cat "$work/demo.out"; fail "demo --once"; }
grep -q "revoked certificate" "$work/demo.out" || fail "demo: bob was not refused: $(cat "$work/demo.out")"
kube-crl-proxy check --strict --config "$work/demo/kube-crl-proxy.yaml" || fail "check --strict on the demo PKI"

echo "+ dpkg --purge kube-crl-proxy"
dpkg --purge kube-crl-proxy
tree >"$after"
left=$(comm -13 "$before" "$after" | grep -Ev '^/etc/(group|gshadow|passwd|shadow)-$' || true)
if [ -n "$left" ]; then
  fail "left behind after dpkg --purge:"$'\n'"$left"
fi
getent group kube-crl-proxy >/dev/null && echo "kept after purge, as Debian policy wants: the system group kube-crl-proxy"
echo "Debian package: built, lintian clean, installed, checked, purged"
