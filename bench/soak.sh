#!/usr/bin/env bash
# Soak test, long (bench/README.md, "Soak"): tests/soak.rs for SECONDS (default 600) against
# a release build, its summary (counts of every outcome, confirmation times, RSS samples,
# descriptors) printed at the end.
#
#   bench/soak.sh              ten minutes
#   bench/soak.sh 3600         an hour
#   bench/soak.sh 600 --debug  the debug build, as in the normal test suite
#
# Loopback only; the test stops every process it started (by PID) and fails on any
# unexpected outcome, a failed reload, RSS growth past its tolerance or leaked descriptors.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-600}
profile=(--release)
case "${2:-}" in
  "") ;;
  --debug) profile=() ;;
  *) echo "usage: bench/soak.sh [SECONDS] [--debug]" >&2; exit 64 ;;
esac
if ! [[ $secs =~ ^[0-9]+$ ]] || (( secs < 10 )); then
  echo "usage: bench/soak.sh [SECONDS] [--debug]   (SECONDS: a whole number, at least 10)" >&2
  exit 64
fi

echo "+ KCP_SOAK_SECS=$secs cargo test --locked ${profile[*]} --test soak -- --nocapture"
KCP_SOAK_SECS=$secs exec cargo test --locked "${profile[@]}" --test soak -- --nocapture
