"""User-space instructions per proxied request, counted with callgrind: exact where wall-clock
A/B runs on a shared VM drift by more than the change being measured.

For each build: kube-crl-proxy runs under `valgrind --tool=callgrind` against the benchmark's
nginx upstream, takes a warm-up, its counters are zeroed (`callgrind_control -z`), it serves a
fixed number of keep-alive requests, and the counters are dumped (`callgrind_control -d`).
The count includes the load generator's handshakes of that run (one per connection), the
same for every build. Kernel time is not counted.

    bench/run.sh --only d --quick            # once: builds loadgen, generates bench/work/pki
    python3 bench/harness/instructions.py OLD_BINARY NEW_BINARY [--http 1,2] [--conns 16]

Needs valgrind (`apt-get install valgrind`). Prints one line per build and HTTP version,
and `--top N` lists the functions with the most instructions of their own.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs as P  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent
WORK = BENCH / "work"
PKI = WORK / "pki"
RUN = WORK / "instructions"
LOADGEN = BENCH / "loadgen/target/release/loadgen"


def own_costs(dump: Path) -> tuple[int, collections.Counter, dict]:
    """Total instructions and each function's own (exclusive) instructions in a callgrind dump."""
    names: dict[str, str] = {}
    own: collections.Counter = collections.Counter()
    fn, after_call = None, False

    def ident(token: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return m.group(1)

    for line in dump.open(errors="replace"):
        if line.startswith("fn="):
            fn, after_call = ident(line[3:].strip()), False
        elif line.startswith("cfn="):
            ident(line[4:].strip())  # names are defined where first seen, often in a call
        elif line.startswith("calls="):
            after_call = True
        elif fn and (line[:1].isdigit() or line[:1] in ("+", "-", "*")):
            parts = line.split()
            if len(parts) >= 2:
                if after_call:
                    after_call = False  # the cost line of a call: the callee's, not ours
                else:
                    own[fn] += int(parts[1])
    return sum(own.values()), own, names


def measure(binary: Path, up: P.Upstream, procs: P.Procs, http: str, conns: int, requests: int,
            tmp: Path, tag: str) -> tuple[float, dict]:
    wrapper = tmp / f"{tag}.sh"
    out = tmp / f"{tag}.out"
    wrapper.write_text(f'#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file={out}.%p '
                       f'"{binary.resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    k = P.start_kcp(procs, wrapper, PKI, RUN, PKI / "crl/crl-0.pem", up, "0", tag=f"cg-{tag}")
    try:
        def load(n: int) -> dict:
            argv = ["taskset", "-c", "1", str(LOADGEN), "load", "--addr", f"127.0.0.1:{k.port}",
                    "--cert", str(PKI / "client.crt"), "--key", str(PKI / "client.key"), "--ca", str(PKI / "ca.crt"),
                    "--label", tag, "--threads", "1", "--mode", "keepalive", "--http", http, "--conns", str(conns),
                    "--warmup", "0", "--duration", "300", "--max-ops", str(n), "--op-timeout", "60"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=400, check=True)
            return json.loads(r.stdout.strip().splitlines()[-1])

        load(300)
        for f in tmp.glob(f"{tag}.out.*"):
            f.unlink()
        subprocess.run(["callgrind_control", "-z", str(k.main_pid)], capture_output=True, check=True)
        r = load(requests)
        subprocess.run(["callgrind_control", "-d", str(k.main_pid)], capture_output=True, check=True)
        time.sleep(1)
        dumps = sorted(tmp.glob(f"{tag}.out.*"), key=lambda f: f.stat().st_size)
        if not dumps or r["ok"] == 0:
            raise RuntimeError(f"no dump or no successful request for {binary}")
        total, own, names = own_costs(dumps[-1])
        return total / r["ok"], {"ok": r["ok"], "failed": r["failed"], "own": own, "names": names}
    finally:
        P.stop_proxy(procs, k)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", type=Path, help="kube-crl-proxy builds to compare")
    ap.add_argument("--http", default="1,2", help="HTTP versions of the clients (default 1,2)")
    ap.add_argument("--conns", type=int, default=16, help="keep-alive connections (default 16)")
    ap.add_argument("--requests", type=int, default=3000, help="measured requests (default 3000)")
    ap.add_argument("--top", type=int, default=0, help="list the N functions with most own instructions")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "nginx", "taskset"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found")
    if not LOADGEN.exists() or not (PKI / "crl/crl-0.pem").exists():
        ap.error("run bench/run.sh once first (it builds the load generator and generates bench/work/pki)")
    RUN.mkdir(parents=True, exist_ok=True)
    procs = P.Procs(WORK)
    try:
        up = P.start_nginx(procs, PKI, RUN, "1")
        with tempfile.TemporaryDirectory(prefix="kcp-callgrind-") as d:
            for http in args.http.split(","):
                for i, binary in enumerate(args.binaries):
                    per_request, detail = measure(binary, up, procs, http, args.conns, args.requests, Path(d),
                                                  f"b{i}-h{http}")
                    print(f"HTTP/{'1.1' if http == '1' else '2'} {binary}: {per_request:,.0f} instructions/request "
                          f"({detail['ok']} requests, {detail['failed']} failed)", flush=True)
                    for fn, n in detail["own"].most_common(args.top):
                        print(f"    {n / detail['ok']:9,.0f}  {detail['names'].get(fn, fn)[:140]}")
    finally:
        for pid in list(procs.live):
            procs.stop(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
