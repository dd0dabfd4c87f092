#!/usr/bin/env python3
"""kube-crl-proxy vs HAProxy benchmark: runs every scenario and writes bench/results/<date>-<mode>.md.

Called by bench/run.sh (which installs the packages and builds the binaries first); see
bench/README.md. Python 3.11 standard library only.

Layout of a run (everything under bench/work/, git-ignored):
  work/pki/        PKI and CRLs (loadgen gen-pki), reused while its manifest matches
  work/run/        configs, logs and ready files of the current run
  work/reload/     per-proxy CRL directories of the reload scenario
  work/pids        PIDs of every live process the harness started (run.sh's trap backstop)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs as P  # noqa: E402
import report as R  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
WORK = BENCH / "work"
PKI = WORK / "pki"
RUN = WORK / "run"
LOADGEN = BENCH / "loadgen/target/release/loadgen"
KCP_BIN = Path(os.environ.get("KCP_BIN") or REPO / "target/release/kube-crl-proxy")

PROXY_CORE = "0"
LOAD_CORE = "1"
BOTH = "0,1"
CRL_LABEL = {0: "0", 10_000: "10k", 100_000: "100k", 1_000_000: "1m"}


@dataclass
class Mode:
    name: str
    reps: int
    duration: float  # measured seconds per run
    warmup: float
    # (a) handshakes: (tls, crl size) cases; rejection TLS versions
    handshake_cases: list[tuple[str, int]]
    reject_tls: list[str]
    handshake_conns: int
    # (b) keep-alive
    ka_http: list[int]
    ka_conns: list[int]
    # (c) 1 MiB responses
    tp_http: list[int]
    tp_conns: int
    # (d) memory
    idle_conns: int
    idle_http: list[int]
    # (e) reload under load
    reload_duration: float
    reload_trigger_at: float
    # both cores for the proxy
    two_core: bool = True


FULL = Mode(
    name="full", reps=3, duration=4.0, warmup=1.0,
    handshake_cases=[(t, n) for n in (0, 10_000, 100_000, 1_000_000) for t in ("1.3", "1.2")],
    reject_tls=["1.3", "1.2"], handshake_conns=16,
    ka_http=[1, 2], ka_conns=[1, 16, 128], tp_http=[1, 2], tp_conns=8,
    idle_conns=5000, idle_http=[1, 2], reload_duration=15.0, reload_trigger_at=3.0,
)
QUICK = Mode(
    name="quick", reps=1, duration=2.0, warmup=0.5,
    handshake_cases=[("1.3", 0), ("1.2", 0), ("1.3", 10_000), ("1.3", 100_000), ("1.3", 1_000_000),
                     ("1.2", 1_000_000)],
    reject_tls=["1.3"], handshake_conns=16,
    ka_http=[1, 2], ka_conns=[1, 16, 128], tp_http=[1, 2], tp_conns=8,
    idle_conns=5000, idle_http=[1, 2], reload_duration=12.0, reload_trigger_at=2.0,
)
ALL_SCENARIOS = ["a", "b", "c", "d", "e", "2core"]
# Run on demand only (`--only scale`, or added to a list): ~15 min, see bench/README.md "Scale".
EXTRA_SCENARIOS = ["scale"]


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


@dataclass
class Bench:
    mode: Mode
    scenarios: list[str]
    procs: P.Procs
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    upstream: P.Upstream | None = None
    upstream_h1: bool = False
    started: float = field(default_factory=time.monotonic)

    # ---------------------------------------------------------------- plumbing

    def record(self, scenario: str, case: str, proxy: str, rep: int, data: dict) -> None:
        self.rows.append({"scenario": scenario, "case": case, "proxy": proxy, "rep": rep, "data": data})
        (WORK / "raw.jsonl").open("a").write(json.dumps(self.rows[-1]) + "\n")

    def loadgen(self, proxy: P.Proxy, label: str, *, cpus: str = LOAD_CORE, threads: int = 1,
                cert: str = "client", **opts) -> dict:
        argv = [str(LOADGEN), "load", "--addr", f"127.0.0.1:{proxy.port}",
                "--cert", str(PKI / f"{cert}.crt"), "--key", str(PKI / f"{cert}.key"), "--ca", str(PKI / "ca.crt"),
                "--label", label, "--threads", str(threads)]
        for pid in proxy.pids:
            argv += ["--proxy-pid", str(pid)]
        if self.upstream:
            argv += ["--aux-pid", f"nginx={self.upstream.pid}"]
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                argv.append(flag)
            elif v is not None and v is not False:
                argv += [flag, str(v)]
        budget = float(opts.get("warmup", 1)) + float(opts.get("duration", 5)) + 90 + float(opts.get("idle_hold", 0))
        argv = ["taskset", "-c", cpus, *argv]
        errlog = RUN / "loadgen.log"
        with open(errlog, "ab") as err:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
            self.procs.adopt(p.pid)
            try:
                out, _ = p.communicate(timeout=budget)
            except subprocess.TimeoutExpired:
                self.procs.stop(p.pid)
                raise RuntimeError(f"loadgen ({label}) exceeded {budget:.0f}s")
            finally:
                self.procs.live.pop(p.pid, None)
                self.procs._save()
        if p.returncode != 0:
            raise RuntimeError(f"loadgen ({label}) failed with {p.returncode}; see {errlog}")
        return json.loads(out)

    def preflight(self, proxy: P.Proxy, expect_reject: bool = False, cert: str = "client") -> None:
        """One short run: the proxy must answer (or reject) before anything is measured."""
        r = self.loadgen(proxy, f"preflight {proxy.name}", mode="handshake", conns=1, warmup=0, duration=20,
                         max_ops=2, op_timeout=19, cert=cert)
        good = r["rejected"] if expect_reject else r["ok"]
        if good == 0 or r["failed"]:
            raise RuntimeError(f"preflight against {proxy.name} failed: {json.dumps(r)[:600]}")

    def crl(self, n: int | str) -> Path:
        return PKI / "crl" / f"crl-{CRL_LABEL.get(n, n)}.pem"

    def start(self, kind: str, crl: Path, cpus: str = PROXY_CORE, nbthread: int = 1, **kw) -> P.Proxy:
        assert self.upstream
        t = time.monotonic()
        if kind == "kcp":
            p = P.start_kcp(self.procs, KCP_BIN, PKI, RUN, crl, self.upstream, cpus, **kw)
        else:
            reuse = kind.split("-", 1)[1]
            p = P.start_haproxy(self.procs, PKI, RUN, crl, self.upstream, cpus, reuse, nbthread, **kw)
        p.extra["startup_s"] = time.monotonic() - t
        return p

    def start_set(self, crl: Path, cpus: str = PROXY_CORE, nbthread: int = 1,
                  kinds=("kcp", "haproxy-safe", "haproxy-always"), expect_reject: bool = False) -> list[P.Proxy]:
        ps = [self.start(k, crl, cpus, nbthread) for k in kinds]
        for p in ps:
            self.preflight(p, expect_reject)
        return ps

    def stop_set(self, ps: list[P.Proxy]) -> None:
        for p in ps:
            P.stop_proxy(self.procs, p)

    def alternate(self, proxies: list[P.Proxy], rep: int) -> list[P.Proxy]:
        """Rotates the order every repetition so that no proxy always runs first."""
        k = rep % len(proxies)
        return proxies[k:] + proxies[:k]

    # ---------------------------------------------------------------- scenarios

    def run(self) -> None:
        m = self.mode
        self.upstream = P.start_nginx(self.procs, PKI, RUN, LOAD_CORE, http2=not self.upstream_h1)
        if self.upstream_h1:
            self.notes.append("--upstream-h1: nginx offered only HTTP/1.1, so kube-crl-proxy used HTTP/1.1 upstream too")
        else:
            self.notes.append("Upstream hop: kube-crl-proxy → nginx over HTTP/2 (its default: pooled HTTP/2 "
                              "connections, up to 100 streams each); HAProxy → nginx over HTTP/1.1 (as in the "
                              "reference configuration).")
        log(f"nginx upstream pid {self.upstream.pid} on 127.0.0.1:{self.upstream.port} (core {LOAD_CORE})")
        sizes = []
        for _, n in m.handshake_cases:
            if n not in sizes:
                sizes.append(n)
        if "a" in self.scenarios or "b" in self.scenarios or "c" in self.scenarios:
            for n in sizes if "a" in self.scenarios else [0]:
                crl = self.crl(n)
                log(f"starting kube-crl-proxy and HAProxy (safe, always) with {crl.name}")
                ps = self.start_set(crl)
                for p in ps:
                    self.record("startup", f"CRL {CRL_LABEL[n]}", p.name, 0, {"startup_s": p.extra["startup_s"]})
                if "a" in self.scenarios:
                    for tls, size in m.handshake_cases:
                        if size == n:
                            self.handshake(ps, tls, n)
                if n == 0 and ("b" in self.scenarios or "c" in self.scenarios):
                    relay = P.start_relay(self.procs, RUN, self.upstream, PROXY_CORE)
                    self.preflight(relay, cert="front-proxy-client")
                    if "b" in self.scenarios:
                        self.keepalive(ps + [relay])
                    if "c" in self.scenarios:
                        self.throughput(ps + [relay])
                    P.stop_proxy(self.procs, relay)
                self.stop_set(ps)
            if "a" in self.scenarios and 1_000_000 in sizes:
                self.independence()
            if "a" in self.scenarios and m.reject_tls:
                ps = self.start_set(PKI / "crl/crl-revoked.pem", expect_reject=True)
                for tls in m.reject_tls:
                    self.handshake(ps, tls, None)
                self.stop_set(ps)
        if "d" in self.scenarios:
            self.memory()
        if "e" in self.scenarios:
            self.reload()
        if "2core" in self.scenarios and m.two_core:
            self.two_cores()
        if "scale" in self.scenarios:
            import scale as S  # noqa: PLC0415

            S.run_scale(self, PKI, WORK, RUN, LOADGEN, KCP_BIN, PROXY_CORE, LOAD_CORE, self.scale_ns,
                        self.scale_reps_for, self.scale_window, self.scale_watch_max_n)

    def handshake(self, ps: list[P.Proxy], tls: str, n: int | None, scenario: str = "a",
                  cpus: str = LOAD_CORE, threads: int = 1) -> None:
        m = self.mode
        case = f"TLS {tls}, CRL {CRL_LABEL[n]}" if n is not None else f"TLS {tls}, revoked client (CRL 10k+1)"
        log(f"({scenario}) handshakes: {case}")
        for rep in range(m.reps):
            for p in self.alternate(ps, rep):
                r = self.loadgen(p, f"{scenario} {case} {p.name}", mode="handshake", tls=tls,
                                 conns=m.handshake_conns, warmup=m.warmup, duration=m.duration,
                                 no_verify_server=True, cpus=cpus, threads=threads)
                self.record(scenario, case, p.name, rep, r)
                rate = r["rejected_per_s"] if n is None else r["ok_per_s"]
                log(f"    {p.name:15s} {rate:9.0f}/s  cpu {r['proxy_cpu_us_per_op']} µs/op  failed {r['failed']}")

    def independence(self) -> None:
        """The CRL-size target compares kube-crl-proxy with itself: one instance with the empty
        CRL and one with the 1M-entry CRL, side by side and alternated like a table row, so
        that the ratio is not two rows measured minutes apart on a machine whose speed drifts."""
        m = self.mode
        log("(a) CRL-size independence: kube-crl-proxy with CRL 0 and with CRL 1m, alternately")
        ps = [self.start("kcp", self.crl(n), tag=f"kcp-crl-{CRL_LABEL[n]}") for n in (0, 1_000_000)]
        names = {id(p): f"kcp-crl-{CRL_LABEL[n]}" for p, n in zip(ps, (0, 1_000_000))}
        for p in ps:
            self.preflight(p)
        for tls in ("1.3", "1.2"):
            for rep in range(2 * m.reps):
                for p in self.alternate(ps, rep):
                    name = names[id(p)]
                    r = self.loadgen(p, f"a-indep TLS {tls} {name}", mode="handshake", tls=tls,
                                     conns=m.handshake_conns, warmup=m.warmup, duration=m.duration,
                                     no_verify_server=True)
                    self.record("a-indep", f"TLS {tls}", name, rep, r)
                    log(f"    {name:15s} {r['ok_per_s']:9.0f}/s  cpu {r['proxy_cpu_us_per_op']} µs/op  "
                        f"failed {r['failed']}")
        self.stop_set(ps)

    def keepalive(self, ps: list[P.Proxy], scenario: str = "b", conns_list=None, cpus: str = LOAD_CORE,
                  threads: int = 1) -> None:
        m = self.mode
        for http in m.ka_http:
            for conns in conns_list or m.ka_conns:
                case = f"HTTP/{'1.1' if http == 1 else '2'}, {conns} conn{'s' if conns > 1 else ''}"
                log(f"({scenario}) keep-alive: {case}")
                for rep in range(m.reps):
                    for p in self.alternate(ps, rep):
                        r = self.loadgen(p, f"{scenario} {case} {p.name}", mode="keepalive", http=http, conns=conns,
                                         warmup=m.warmup, duration=m.duration, tls="1.3", cpus=cpus, threads=threads,
                                         cert=relay_cert(p))
                        self.record(scenario, case, p.name, rep, r)
                        log(f"    {p.name:15s} {r['ok_per_s']:9.0f}/s  p99 {r['p99_ms']} ms  "
                            f"cpu {r['proxy_cpu_us_per_op']} µs/op  failed {r['failed']}")

    def throughput(self, ps: list[P.Proxy]) -> None:
        m = self.mode
        for http in m.tp_http:
            case = f"1 MiB GET, HTTP/{'1.1' if http == 1 else '2'}, {m.tp_conns} conns"
            log(f"(c) throughput: {case}")
            for rep in range(m.reps):
                for p in self.alternate(ps, rep):
                    r = self.loadgen(p, f"c {case} {p.name}", mode="keepalive", http=http, conns=m.tp_conns,
                                     path="/big.bin", warmup=m.warmup, duration=m.duration, tls="1.3",
                                     cert=relay_cert(p))
                    self.record("c", case, p.name, rep, r)
                    log(f"    {p.name:15s} {r['mib_per_s']:9.1f} MiB/s  cpu {r['proxy_cpu_util']}  failed {r['failed']}")

    def memory(self) -> None:
        m = self.mode
        log(f"(d) memory: {m.idle_conns} idle TLS connections, 1M-entry CRL")
        for rep in range(m.reps):
            for kind in (["kcp", "haproxy-safe"] if rep % 2 == 0 else ["haproxy-safe", "kcp"]):
                name = "kcp" if kind == "kcp" else "haproxy"
                for http in m.idle_http:
                    p = self.start(kind, self.crl(0))
                    r = self.loadgen(p, f"d idle h{http} {kind}", mode="idle", http=http, conns=m.idle_conns,
                                     tls="1.3", idle_hold=1.0, open_concurrency=64)
                    P.stop_proxy(self.procs, p)
                    self.record("d", f"idle h{http}", name, rep, r)
                    log(f"    {kind:15s} HTTP/{http}: {r['open']} open, {r['bytes_per_conn']} B/conn, "
                        f"RSS {r['rss_before_kb']} → {r['rss_after_kb']} kB")
                p = self.start(kind, self.crl(1_000_000))
                r = self.loadgen(p, f"d crl-1m {kind}", mode="idle", conns=0, tls="1.3", idle_hold=0)
                r["startup_s"] = p.extra["startup_s"]
                P.stop_proxy(self.procs, p)
                self.record("d", "crl 1m", name, rep, r)
                log(f"    {kind:15s} 1M CRL: RSS {r['rss_before_kb']} kB (peak {r['proxy_hwm_kb']} kB), "
                    f"start-up {p.extra['startup_s']:.1f}s")

    def reload(self) -> None:
        """(e) Replace the 1M-entry CRL (rename) under a handshake load; a probe client whose
        certificate only the new CRL revokes tells when the new CRL is in effect."""
        m = self.mode
        log("(e) reload of the 1M-entry CRL under load")
        next_crl = PKI / "crl/crl-1m-next.pem"
        for rep in range(m.reps):
            for kind in (["kcp", "haproxy"] if rep % 2 == 0 else ["haproxy", "kcp"]):
                d = WORK / "reload" / kind
                stage = WORK / "reload" / f"{kind}-stage"
                shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(stage, ignore_errors=True)
                d.mkdir(parents=True)
                stage.mkdir(parents=True)
                live = d / "crl.pem"
                shutil.copyfile(self.crl(1_000_000), live)
                # Staged outside the watched directory, on the same file system: the rename is atomic.
                shutil.copyfile(next_crl, stage / "crl.pem")
                if kind == "kcp":
                    p = self.start("kcp", live, log_level="warn,kube_crl_proxy::reload=info", tag=f"kcp-reload-{rep}")
                    trigger = f"mv -f {stage / 'crl.pem'} {live}"
                else:
                    p = self.start("haproxy-safe", live, master_worker=True, tag=f"haproxy-reload-{rep}")
                    # What `systemctl reload haproxy` does on Debian: check the configuration, then
                    # SIGUSR2 to the master (master-worker mode, seamless: expose-fd listeners).
                    trigger = (f"mv -f {stage / 'crl.pem'} {live} && taskset -c {PROXY_CORE} haproxy -c -q -f "
                               f"{p.config} && kill -USR2 {p.main_pid}")
                self.preflight(p)
                # kube-crl-proxy logs "reload done" once the new material is in use; HAProxy's master
                # logs "Loading success." once the new worker is up.
                watch = LogWatch(p.log, "reload done" if kind == "kcp" else "Loading success")
                watch.start()
                r = self.loadgen(p, f"e reload {kind}", mode="handshake", tls="1.3", conns=m.handshake_conns,
                                 warmup=1.0, duration=m.reload_duration, no_verify_server=True, timeline_ms=100,
                                 trigger_at=m.reload_trigger_at, trigger=trigger,
                                 probe_cert=str(PKI / "probe.crt"), probe_key=str(PKI / "probe.key"),
                                 probe_interval_ms=10)
                r.update(reload_metrics(r))
                seen = watch.wait(timeout=30)  # the reload may finish after the load window
                r["log_reload_ms"] = None if seen is None else (seen - r["trigger"]["unix_s"]) * 1000
                if kind != "kcp":
                    for w in P.children(p.main_pid):
                        self.procs.adopt(w)
                P.stop_proxy(self.procs, p)
                if kind == "haproxy":
                    for w in list(self.procs.live):
                        if self.procs.live[w] is None:
                            self.procs.stop(w)
                self.record("e", "reload 1M", kind, rep, r)
                pr = r.get("probe", {})
                if pr.get("effective_after_trigger_ms") is None:
                    self.notes.append(f"(e) {kind}, repetition {rep + 1}: the new CRL was not in effect (probe not "
                                      f"refused for good) within the {m.reload_duration - m.reload_trigger_at:g} s "
                                      "after the trigger")
                if r["trigger"]["exit"] != 0:
                    self.notes.append(f"(e) {kind}, repetition {rep + 1}: the trigger command exited with "
                                      f"{r['trigger']['exit']}")
                log(f"    {kind:8s} effective after {pr.get('effective_after_trigger_ms')} ms, "
                    f"failed {r['failed']}, rate {r['rate_before']:.0f}/s before, {r['rate_during']:.0f}/s during")

    def two_cores(self) -> None:
        m = self.mode
        log("(2core) both cores for the proxy (HAProxy nbthread 2); load generator on both cores too")
        ps = self.start_set(self.crl(0), cpus=BOTH, nbthread=2)
        self.handshake(ps, "1.3", 0, scenario="2core-a", cpus=BOTH, threads=2)
        self.keepalive(ps, scenario="2core-b", conns_list=[128], cpus=BOTH, threads=2)
        self.stop_set(ps)


def relay_cert(p: P.Proxy) -> str:
    """Through the TCP relay the load generator's TLS peer is nginx, which admits only the
    front-proxy client certificate."""
    return "front-proxy-client" if p.name == "relay" else "client"


def reload_metrics(r: dict) -> dict:
    """Handshake rate before the trigger and during the reload (trigger → effective + 0.5 s)."""
    step = r["timeline_ms"] / 1000
    ok = r.get("timeline_ok", [])
    trig = r["trigger"]["at_ms"] / 1000
    eff = (r.get("probe") or {}).get("effective_after_trigger_ms")
    end = trig + (eff / 1000 if eff is not None else 1.0) + 0.5
    before = [v for i, v in enumerate(ok) if (i + 1) * step <= trig and i * step >= 0.5]
    during = [ok[i] if i < len(ok) else 0 for i in range(int(trig / step), int(end / step) + 1)]
    return {
        "rate_before": sum(before) / (len(before) * step) if before else 0.0,
        "rate_during": sum(during) / (len(during) * step) if during else 0.0,
        "rate_min_bucket": min(during) / step if during else 0.0,
    }


class LogWatch(threading.Thread):
    """Polls a log file (every 10 ms) from its current end and records the wall-clock time at
    which a line containing `needle` first appears."""

    def __init__(self, path: Path, needle: str):
        super().__init__(daemon=True)
        self.path, self.needle = path, needle
        self.offset = path.stat().st_size
        self.seen: float | None = None
        self.done = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        buf = b""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while not self.stop.is_set():
                chunk = f.read()
                if chunk:
                    buf = (buf + chunk)[-65536:]
                    if self.needle.encode() in buf:
                        self.seen = time.time()
                        break
                time.sleep(0.01)
        self.done.set()

    def wait(self, timeout: float) -> float | None:
        self.done.wait(timeout)
        self.stop.set()
        return self.seen


# -------------------------------------------------------------------------- machine


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except subprocess.TimeoutExpired:
        return "?"


def machine() -> dict:
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} status --porcelain -- src Cargo.toml Cargo.lock")
    hyper = sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'") or "no hypervisor reported"
    return {
        "cpu": f"{model} ({os.cpu_count()} cores, hypervisor: {hyper})",
        "memory": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "kernel": platform.release(),
        "haproxy": sh("haproxy -v | head -1"),
        "haproxy_openssl": sh("haproxy -vv | grep 'Running on OpenSSL'"),
        "nginx": sh("nginx -v 2>&1"),
        "kube_crl_proxy": os.environ.get("KCP_DESC")
        or (f"{commit}" + (" + uncommitted changes in src/ (working tree)" if dirty else "") + " (working tree)"),
        "kcp_version": sh(f"{KCP_BIN} --version"),
        "rustc": sh("rustc --version"),
        "loadavg_at_start": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "perf": sh("perf stat -e instructions true 2>&1 | grep -o '<not supported>' | head -1") or "available",
    }


# -------------------------------------------------------------------------- report


def write_report(b: Bench, mach: dict, out: Path, elapsed: float) -> None:
    from targets import targets_section  # noqa: PLC0415

    r = R.Results(b.rows)
    m = b.mode
    L: list[str] = []
    title = "SMOKE RUN — " if b.mode.name == "quick" or getattr(b, "smoke", False) else ""
    L += [f"# {title}kube-crl-proxy vs HAProxy — {dt.date.today().isoformat()} ({m.name} mode)", ""]
    if title:
        L += ["> **Smoke run**: produced with `bench/run.sh --quick` on a shared, busy machine (other engineers were "
              "compiling at the same time). Numbers are noisy and indicative only; they check that the harness "
              f"works end to end. Repetitions: {m.reps}, {m.duration:g} s measured per run after "
              f"{m.warmup:g} s warm-up (the full mode uses 3 × 4 s).", ""]
    L += ["## Machine", ""]
    for k, v in mach.items():
        L.append(f"- **{k}**: {v}")
    L += [f"- **run time**: {elapsed / 60:.1f} min; repetitions per cell: {m.reps}; measured window "
          f"{m.duration:g} s after {m.warmup:g} s warm-up", ""]
    L += ["## Set-up", "",
          "- Proxy under test pinned to core 0 (`taskset -c 0`; HAProxy `nbthread 1`; kube-crl-proxy's tokio "
          "runtime sees one core). Load generator and nginx upstream pinned to core 1. The proxies of a "
          "table row run side by side, idle while the other is measured, and are measured alternately "
          "(order rotated every repetition).",
          "- Numbers are `median [min–max]` over the repetitions. Ratios are kube-crl-proxy / the **better** "
          "HAProxy variant (`http-reuse safe` or `always`) of the row.",
          "- *CPU µs/op*: the proxy's utime+stime (all threads, /proc/<pid>/stat) over the measured window divided "
          "by the operations completed. *CPU-normalised ratio* = HAProxy CPU/op ÷ kube-crl-proxy CPU/op: the "
          "throughput ratio to expect if both proxies saturated their core. When *proxy CPU use* is well below "
          "100 %, the load generator's core (*load-gen core use* = loadgen + nginx) is the bottleneck, the rates "
          "of both proxies converge, and the CPU-normalised ratio is the one to read.",
          "- The client never resumes TLS sessions (every handshake is a full one); in the handshake scenarios "
          "it skips verifying the server's certificate to spare the load-generator core (the proxies still "
          "verify the client's).",
          ""]

    L += ["## (a) Full handshakes per second (new connection per request)", ""]
    L += R.rate_table(r, "a", "ops_per_s", "/s", False, [
        "Each operation: TCP connect, full TLS handshake with client certificate (ECDSA P-256 keys, "
        "chain leaf → users intermediate → root, both CRLs checked), one `GET /api` (HTTP/1.1), response read, "
        f"connection closed; {m.handshake_conns} concurrent clients. Revoked-client rows count rejections "
        "(the alert `certificate_revoked`) per second.", ""])
    if r.cases("a-indep"):
        L += ["### (a) Handshake rate and CRL size, measured side by side", "",
              "| case | kube-crl-proxy, CRL 0 /s | kube-crl-proxy, CRL 1M /s | ratio 1M / 0 | CPU µs/op CRL 0 | "
              "CPU µs/op CRL 1M | CPU-normalised ratio | failed |", "|---|---|---|---|---|---|---|---|"]
        for case in r.cases("a-indep"):
            z = r.agg("a-indep", case, "kcp-crl-0", "ops_per_s")
            o = r.agg("a-indep", case, "kcp-crl-1m", "ops_per_s")
            zc = r.agg("a-indep", case, "kcp-crl-0", "proxy_cpu_us_per_op")
            oc = r.agg("a-indep", case, "kcp-crl-1m", "proxy_cpu_us_per_op")
            failed = sum((f or 0) for n in ("kcp-crl-0", "kcp-crl-1m")
                         for f in r.values("a-indep", case, n, "failed"))
            L.append(f"| {case} | {R.fmt(z)} | {R.fmt(o)} | {R.fmt_ratio(R.ratio(o, z))} | {R.fmt(zc, 1)} | "
                     f"{R.fmt(oc, 1)} | {R.fmt_ratio(R.ratio(zc, oc))} | {failed} |")
        L += ["", f"Two kube-crl-proxy instances, one with the empty CRL and one with the 1,000,000-entry CRL, "
              f"run side by side and are measured alternately ({2 * m.reps} repetitions each), as the proxies "
              "of a table row are; the handshake rows above are measured minutes apart, so their ratio "
              "also carries the machine's drift. The target is judged on this table.", ""]
    L += ["## (b) Keep-alive requests per second and latency", ""]
    L += R.rate_table(r, "b", "ok_per_s", "req/s", True, [
        "One request in flight per connection, `GET /api` → 200 with a 55-byte JSON body from nginx; latency "
        "is per request, measured by the client.", "",
        "*TCP relay*: the reference for the hop itself. HAProxy in `mode tcp` on the proxy's core, between the "
        "load generator and nginx: no TLS termination and no HTTP, it only copies bytes (the load generator "
        "talks TLS to nginx through it, with the front-proxy client certificate). Its rate is what the two extra "
        "loopback hops and the second core in the path allow; at 1 connection that bounds every proxy.", ""])
    L += ["## (c) 1 MiB response throughput", ""]
    L += R.rate_table(r, "c", "mib_per_s", "MiB/s", False, [
        f"{m.tp_conns} keep-alive connections each downloading `/big.bin` (1 MiB, static file from nginx) in a "
        "loop. CPU µs/op is per 1 MiB response. *TCP relay*: as in (b).", ""])
    L += ["## (d) Resident memory", ""]
    mem = []
    for http in m.idle_http:
        mem.append((f"bytes per idle TLS connection (HTTP/{'1.1' if http == 1 else '2'}, {m.idle_conns} conns)",
                    f"idle h{http}", "bytes_per_conn", 0, " B"))
    mem += [
        ("RSS, CRL 0, no connections", "idle h1", lambda d: kb_mib(d.get("rss_before_kb")), 1, " MiB"),
        (f"RSS with {m.idle_conns} idle connections (HTTP/1.1)", "idle h1", lambda d: kb_mib(d.get("rss_after_kb")),
         1, " MiB"),
        ("RSS with the 1M-entry CRL loaded (idle)", "crl 1m", lambda d: kb_mib(d.get("rss_before_kb")), 1, " MiB"),
        ("peak RSS (VmHWM) with the 1M-entry CRL", "crl 1m", lambda d: kb_mib(d.get("proxy_hwm_kb")), 1, " MiB"),
        ("start-up time with the 1M-entry CRL (spawn → listening)", "crl 1m", "startup_s", 2, " s"),
    ]
    L += R.kv_table(r, "d", mem, ["kcp", "haproxy"])
    L += ["Each measurement uses a fresh proxy process (HAProxy: single process, `nbthread 1`, no master). Idle "
          "connections: TLS 1.3 handshake + one request each, then left open; bytes per connection = (VmRSS "
          "after opening them − VmRSS before) / connections.", ""]
    L += ["## (e) Reload of the 1M-entry CRL under load", ""]
    rel = [
        ("new CRL in effect after (ms; probe refused for good)", "reload 1M",
         lambda d: (d.get("probe") or {}).get("effective_after_trigger_ms"), 0, ""),
        ("reload logged as complete after (ms)", "reload 1M", "log_reload_ms", 0, ""),
        ("trigger command duration (ms)", "reload 1M", lambda d: d["trigger"]["cmd_ms"], 0, ""),
        ("failed requests (whole run)", "reload 1M", "failed", 0, ""),
        ("handshakes/s before the trigger", "reload 1M", "rate_before", 0, ""),
        ("handshakes/s during the reload", "reload 1M", "rate_during", 0, ""),
        ("slowest 100 ms during the reload (handshakes/s)", "reload 1M", "rate_min_bucket", 0, ""),
        ("probe accepted after its first refusal (flaps)", "reload 1M",
         lambda d: (d.get("probe") or {}).get("ok_after_first_rejection"), 0, ""),
    ]
    L += R.kv_table(r, "e", rel, ["kcp", "haproxy"], ratio_col=False)
    L += [f"Load: {m.handshake_conns} clients, new TLS 1.3 connection per request, for {m.reload_duration:g} s; at "
          f"{m.reload_trigger_at:g} s the live `crl.pem` (1,000,000 entries, CRL number 100) is replaced by rename "
          "with one listing 1,000,001 (number 101: + the probe certificate's serial). kube-crl-proxy reloads by "
          "itself (inotify). HAProxy: `haproxy -c` then `kill -USR2` to the master (what `systemctl reload "
          "haproxy` runs on Debian), master-worker mode with `expose-fd listeners` (seamless). A probe client "
          "with the probe certificate connects every 10 ms: *in effect after* = time from the rename to the "
          "first probe of the final run of refusals (not measurable when the proxy is saturated and the probe "
          "queues for seconds); *logged as complete* = rename → kube-crl-proxy's `reload done` line / HAProxy "
          "master's `Loading success.` line (new worker up), seen by polling the log every 10 ms.", ""]
    L += ["## Both cores for the proxy", ""]
    L += ["Proxy on cores 0–1 (HAProxy `nbthread 2`; kube-crl-proxy's runtime sees two cores), and the load "
          "generator on cores 0–1 too (two threads); nginx stays on core 1. The proxy shares its cores with the "
          "load generator, so read the CPU columns.", ""]
    L += R.rate_table(r, "2core-a", "ops_per_s", "/s", False, [])
    L += R.rate_table(r, "2core-b", "ok_per_s", "req/s", True, [])
    L += ["## Targets", ""]
    L += targets_section(r, m)
    if b.notes:
        L += ["## Notes from this run", ""] + [f"- {n}" for n in b.notes] + [""]
    L += ["Raw measurements (one JSON object per run, as printed by `loadgen load`): "
          f"`{out.with_suffix('.jsonl').name}` next to this file.", ""]
    out.write_text("\n".join(L))


def kb_mib(v):
    return None if v is None else v / 1024


# -------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run (≤ ~5 min)")
    ap.add_argument("--only", default=",".join(ALL_SCENARIOS),
                    help=f"comma-separated scenarios to run (default all: {','.join(ALL_SCENARIOS)})")
    ap.add_argument("--reps", type=int, help="override the repetitions per cell")
    ap.add_argument("--duration", type=float, help="override the measured seconds per run")
    ap.add_argument("--regen-pki", action="store_true", help="regenerate the PKI and CRLs")
    ap.add_argument("--out", help="results file (default bench/results/<date>-<mode>.md)")
    ap.add_argument("--upstream-h1", action="store_true",
                    help="nginx offers only HTTP/1.1 (default: h2 too, like kube-apiserver; HAProxy talks HTTP/1.1 "
                         "upstream either way)")
    ap.add_argument("--note", action="append", default=[], help="a note to add to the results file (repeatable)")
    ap.add_argument("--scale-n", default="1000,5000,15000", help="scale: connection counts (comma-separated)")
    ap.add_argument("--scale-reps", default="1000:3,5000:3,15000:1",
                    help="scale: repetitions per N, N:REPS,... (N not listed: 1)")
    ap.add_argument("--scale-window", type=float, default=60.0, help="scale: CPU window in seconds")
    ap.add_argument("--scale-watch-max-n", type=int, default=5000,
                    help="scale: largest N for the watch shape (5 events/s per connection)")
    a = ap.parse_args()

    mode = QUICK if a.quick else FULL
    if a.reps:
        mode.reps = a.reps
    if a.duration:
        mode.duration = a.duration
    scenarios = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in ALL_SCENARIOS + EXTRA_SCENARIOS]
    if bad:
        ap.error(f"unknown scenario(s) {bad}; choose from {ALL_SCENARIOS + EXTRA_SCENARIOS}")
    scale_ns = [int(x) for x in a.scale_n.split(",") if x.strip()]
    scale_reps = {int(k): int(v) for k, v in (x.split(":") for x in a.scale_reps.split(",") if x.strip())}
    for exe in (LOADGEN, KCP_BIN):
        if not exe.exists():
            ap.error(f"{exe} is missing: run bench/run.sh (it builds it)")

    WORK.mkdir(exist_ok=True)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    (WORK / "raw.jsonl").unlink(missing_ok=True)
    procs = P.Procs(WORK)

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping every process started")
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    mach = machine()
    try:
        manifest = PKI / "manifest.json"
        if (a.regen_pki or not manifest.exists() or not (PKI / "crl/crl-1m-next.pem").exists()
                or not (PKI / "crl/scale-all.pem").exists()):
            shutil.rmtree(PKI, ignore_errors=True)
            log("generating the PKI and CRLs (0, 10k, 100k, 1M entries)")
            subprocess.run([str(LOADGEN), "gen-pki", "--dir", str(PKI)], check=True)
        else:
            log(f"reusing the PKI in {PKI} (--regen-pki to regenerate)")
        b = Bench(mode, scenarios, procs)
        b.notes += a.note
        b.upstream_h1 = a.upstream_h1
        b.scale_ns = scale_ns
        b.scale_reps_for = lambda n: scale_reps.get(n, 1)
        b.scale_window = a.scale_window
        b.scale_watch_max_n = a.scale_watch_max_n
        if scenarios == ["scale"]:
            log(f"scenario scale: N = {a.scale_n}, repetitions {a.scale_reps}, {a.scale_window:g} s CPU window")
        else:
            log(f"mode {mode.name}: scenarios {','.join(scenarios)}, {mode.reps} repetition(s), "
                f"{mode.duration:g} s each")
        b.run()
    finally:
        procs.stop_all()
    elapsed = time.monotonic() - t0
    date = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    mach["loadavg_at_end"] = sh("cut -d' ' -f1-3 /proc/loadavg") + " (the harness itself keeps ~2 busy)"
    main_scen = [s for s in scenarios if s in ALL_SCENARIOS]
    if "scale" in scenarios:
        import scale as S  # noqa: PLC0415

        out = Path(a.out) if a.out and not main_scen else BENCH / "results" / f"{date}-scale.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [r for r in b.rows if r["scenario"] == "scale"]
        out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        reps_desc = ", ".join(f"N = {n:,}: {b.scale_reps_for(n)}" for n in scale_ns)
        S.write_report(rows, b.notes, mach, out, elapsed, scale_ns, a.scale_window, reps_desc)
        log(f"scale report: {out}")
    if main_scen:
        out = Path(a.out) if a.out else BENCH / "results" / f"{date}-{mode.name}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(WORK / "raw.jsonl", out.with_suffix(".jsonl"))
        write_report(b, mach, out, elapsed)
    log(f"done in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
