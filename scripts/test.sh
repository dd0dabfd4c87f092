#!/usr/bin/env bash
# The whole test suite, set up first (README's quick start; .ci/run calls this same command).
#
# The integration tests run real clients and tools beside the Rust code. This script checks
# that each is on the PATH; what is missing it installs where it can (Debian or Ubuntu, as
# root, with apt-get), and otherwise it stops before building anything, naming exactly what
# to install. Then it runs `cargo test --locked`; arguments are passed on to it
# (`scripts/test.sh --test check`, `scripts/test.sh -- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."

# command  Debian/Ubuntu package  what needs it
required=(
  "cargo    -                  the Rust toolchain (rustup)"
  "kubectl  kubernetes-client  tests/revocation.rs: kubectl's own TLS client against the proxy"
  "openssl  openssl            tests/revocation.rs, tests/ocsp.rs: openssl s_client, openssl ocsp"
  "curl     curl               tests/forwarding.rs: curl as an HTTP/1.1 client"
  "promtool prometheus         tests/monitoring.rs: promtool check/test rules on docs/monitoring/"
  "taskset  util-linux         tests pinning the proxy to one core"
  "kill     procps             tests sending SIGHUP/SIGTERM to the proxy"
)

missing_cmds=() missing_pkgs=()
for line in "${required[@]}"; do
  read -r cmd pkg _ <<<"$line"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing_cmds+=("$cmd")
    [ "$pkg" = - ] || missing_pkgs+=("$pkg")
  fi
done

explain() {
  echo "scripts/test.sh: the tests need these commands, missing from PATH:" >&2
  for line in "${required[@]}"; do
    read -r cmd pkg why <<<"$line"
    for m in "${missing_cmds[@]}"; do
      if [ "$m" = "$cmd" ]; then
        if [ "$pkg" = - ]; then
          printf '  %-9s %s\n' "$cmd" "$why" >&2
        else
          printf '  %-9s (Debian/Ubuntu package %s) %s\n' "$cmd" "$pkg" "$why" >&2
        fi
      fi
    done
  done
}

if [ "${#missing_cmds[@]}" -gt 0 ]; then
  if [[ " ${missing_cmds[*]} " == *" cargo "* ]]; then
    explain
    echo "Install Rust (cargo) first, then run scripts/test.sh again." >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${missing_pkgs[*]} (apt-get)"
    case " ${missing_pkgs[*]} " in
      *" prometheus "*) echo "  (the package prometheus brings promtool; where systemd runs, Debian also starts a" \
        "Prometheus server on :9090: 'systemctl disable --now prometheus' if you do not want it)" ;;
    esac
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" ca-certificates; }; then
      explain
      echo "apt-get could not install them; install them another way, then run scripts/test.sh again." >&2
      exit 1
    fi
    missing_cmds=()
    for line in "${required[@]}"; do
      read -r cmd _ <<<"$line"
      command -v "$cmd" >/dev/null 2>&1 || missing_cmds+=("$cmd")
    done
    if [ "${#missing_cmds[@]}" -gt 0 ]; then
      explain
      echo "still missing after apt-get install; install them another way, then run scripts/test.sh again." >&2
      exit 1
    fi
  else
    explain
    if command -v apt-get >/dev/null 2>&1; then
      echo "Install them with: sudo apt-get install ${missing_pkgs[*]}" >&2
      echo "(or run scripts/test.sh as root, which does that), then run scripts/test.sh again." >&2
    else
      echo "Install them with your system's package manager, then run scripts/test.sh again." >&2
    fi
    exit 1
  fi
fi

echo "+ cargo test --locked $*"
exec cargo test --locked "$@"
