#!/usr/bin/env bash
# kube-crl-proxy vs HAProxy benchmark, one command (see bench/README.md):
#
#   bench/run.sh            full run  (3 repetitions, ≤ ~30 min)
#   bench/run.sh --quick    smoke run (1 repetition, short runs, ≤ ~5 min)
#
#   bench/run.sh --ref REV  benchmark a committed revision instead of the working tree: it is
#                           exported with `git archive REV` into bench/work/ and built there
#                           (the working tree and its target/ are not touched)
#   KCP_BIN=/path/to/kube-crl-proxy bench/run.sh ...   benchmark a prebuilt binary
#
# Other options are passed to bench/harness/bench.py (--only a,b,c,d,e,2core[,scale], --reps N,
# --duration S, --regen-pki, --out FILE, --note TEXT). Needs root for apt-get (only when
# haproxy or nginx is missing). Loopback only; every process started is stopped by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
WORK=$BENCH_DIR/work
PIDFILE=$WORK/pids
mkdir -p "$WORK"

# Backstop: bench.py stops its processes itself; if it dies hard, stop whatever it left in
# work/pids (PIDs it started), never anything by name.
cleanup() {
  local rc=$?
  if [[ -s $PIDFILE ]]; then
    local pid
    while read -r pid; do
      [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
    done <"$PIDFILE"
    sleep 1
    while read -r pid; do
      [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done <"$PIDFILE"
    : >"$PIDFILE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }

# 1. Packages (Debian): haproxy, nginx, taskset (util-linux), python3, openssl.
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  log "installing ${missing[*]} (apt-get; services are not started by the harness)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is needed (Rust toolchain)" >&2; exit 1; }

# 2. File descriptors: 5,000 idle connections need ~10k in the proxy and the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
if (($(ulimit -n) < 12000)); then
  log "warning: ulimit -n is $(ulimit -n); the 5,000-idle-connection scenario may fail"
fi

# 3. Builds: the product (release, repo root) and the load generator (its own workspace).
ref=""
args=()
while (($#)); do
  case $1 in
    --ref) ref=${2:?--ref needs a revision}; shift 2 ;;
    --ref=*) ref=${1#--ref=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ -n ${KCP_BIN:-} ]]; then
  [[ -x $KCP_BIN ]] || { echo "KCP_BIN=$KCP_BIN is not an executable" >&2; exit 1; }
  log "using the prebuilt kube-crl-proxy $KCP_BIN"
  export KCP_DESC=${KCP_DESC:-"prebuilt binary $KCP_BIN"}
elif [[ -n $ref ]]; then
  rev=$(git -C "$REPO" rev-parse --short "$ref^{commit}")
  src=$WORK/kcp-src-$rev
  log "building kube-crl-proxy $rev (git archive into $src, cargo build --release --locked)"
  if [[ ! -f $src/Cargo.toml ]]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$REPO" archive "$rev" | tar -x -C "$src"
  fi
  (cd "$src" && CARGO_TARGET_DIR=$WORK/kcp-target cargo build --release --locked --quiet)
  export KCP_BIN=$WORK/kcp-target/release/kube-crl-proxy
  export KCP_DESC="$rev (committed revision, built from git archive)"
else
  log "building kube-crl-proxy (cargo build --release)"
  if ! (cd "$REPO" && cargo build --release --quiet); then
    echo "the working tree does not build; benchmark a committed revision with: bench/run.sh --ref HEAD ${args[*]:-}" >&2
    exit 1
  fi
fi
log "building the load generator (bench/loadgen)"
(cd "$BENCH_DIR/loadgen" && cargo build --release --locked --quiet)

# 4. Run.
log "running the benchmark"
python3 "$BENCH_DIR/harness/bench.py" ${args[@]+"${args[@]}"}
