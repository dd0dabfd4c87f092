"""Turns the raw measurements into the Markdown results file.

Every number in a table is the median over the repetitions, followed by [min–max] when
there was more than one. Ratios are kube-crl-proxy / HAProxy, computed on medians, against
the better of the two HAProxy variants (http-reuse safe / always) for that row.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

KCP = "kcp"
HAPS = ("haproxy-safe", "haproxy-always")
RELAY = "relay"
NAMES = {"kcp": "kube-crl-proxy", "haproxy-safe": "HAProxy (reuse safe)", "haproxy-always": "HAProxy (reuse always)",
         "haproxy": "HAProxy", "relay": "TCP relay"}


@dataclass
class Agg:
    med: float
    lo: float
    hi: float
    n: int


def agg(values: list[float | None]) -> Agg | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return Agg(statistics.median(v), min(v), max(v), len(v))


def fmt(a: Agg | None, digits: int = 0, unit: str = "") -> str:
    if a is None:
        return "–"
    f = f"{{:,.{digits}f}}"
    s = f.format(a.med) + unit
    if a.n > 1:
        s += f" [{f.format(a.lo)}–{f.format(a.hi)}]"
    return s


def ratio(a: Agg | None, b: Agg | None) -> float | None:
    if a is None or b is None or b.med == 0:
        return None
    return a.med / b.med


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


class Results:
    """Raw rows: dict(scenario, case, proxy, rep, data=<loadgen JSON or dict>)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def values(self, scenario: str, case: str, proxy: str, key) -> list[float | None]:
        out = []
        for r in self.rows:
            if r["scenario"] == scenario and r["case"] == case and r["proxy"] == proxy:
                d = r["data"]
                out.append(key(d) if callable(key) else d.get(key))
        return out

    def agg(self, scenario, case, proxy, key) -> Agg | None:
        return agg(self.values(scenario, case, proxy, key))

    def cases(self, scenario: str) -> list[str]:
        seen = []
        for r in self.rows:
            if r["scenario"] == scenario and r["case"] not in seen:
                seen.append(r["case"])
        return seen

    def proxies(self, scenario: str, case: str) -> list[str]:
        return sorted({r["proxy"] for r in self.rows if r["scenario"] == scenario and r["case"] == case},
                      key=lambda p: (p != KCP, p))

    def best_haproxy(self, scenario: str, case: str, key, higher_better=True) -> str | None:
        best, best_v = None, None
        for p in self.proxies(scenario, case):
            if p == KCP or not p.startswith("haproxy"):
                continue
            a = self.agg(scenario, case, p, key)
            if a is None:
                continue
            if best_v is None or (a.med > best_v if higher_better else a.med < best_v):
                best, best_v = p, a.med
        return best


def failed_total(r: Results, scenario: str, case: str, proxy: str) -> int:
    return int(sum(v or 0 for v in r.values(scenario, case, proxy, "failed")))


def rate_table(r: Results, scenario: str, rate_key: str, unit: str, latency: bool, notes: list[str]) -> list[str]:
    """One row per case: each proxy's rate, the ratio against the better HAProxy, CPU per op."""
    out = []
    cases = r.cases(scenario)
    if not cases:
        return ["(not run)", ""]
    haps = [p for p in HAPS if any(p in r.proxies(scenario, c) for c in cases)]
    relay = any(RELAY in r.proxies(scenario, c) for c in cases)
    head = ["case", f"kube-crl-proxy {unit}"] + [f"{NAMES[p]} {unit}" for p in haps] + ["ratio kcp / best HAProxy"]
    if relay:
        head += [f"TCP relay {unit}", "ratio relay / best HAProxy"]
    if latency:
        head += ["kcp p50 / p99 ms", "best HAProxy p50 / p99 ms", "p99 ratio"]
    head += ["kcp CPU µs/op", "best HAProxy CPU µs/op", "CPU-normalised ratio", "proxy CPU use kcp / HAProxy",
             "load-gen core use", "failed kcp / HAProxy"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for c in cases:
        k = r.agg(scenario, c, KCP, rate_key)
        best = r.best_haproxy(scenario, c, rate_key)
        hb = r.agg(scenario, c, best, rate_key) if best else None
        row = [c, fmt(k, 1 if unit.startswith("MiB") else 0)]
        for p in haps:
            row.append(fmt(r.agg(scenario, c, p, rate_key), 1 if unit.startswith("MiB") else 0))
        row.append(fmt_ratio(ratio(k, hb)))
        if relay:
            ra = r.agg(scenario, c, RELAY, rate_key)
            row += [fmt(ra, 1 if unit.startswith("MiB") else 0), fmt_ratio(ratio(ra, hb))]
        if latency:
            kp50, kp99 = r.agg(scenario, c, KCP, "p50_ms"), r.agg(scenario, c, KCP, "p99_ms")
            hp50 = r.agg(scenario, c, best, "p50_ms") if best else None
            hp99 = r.agg(scenario, c, best, "p99_ms") if best else None
            row += [f"{fmt(kp50, 2)} / {fmt(kp99, 2)}", f"{fmt(hp50, 2)} / {fmt(hp99, 2)}", fmt_ratio(ratio(kp99, hp99))]
        kc = r.agg(scenario, c, KCP, "proxy_cpu_us_per_op")
        hc = r.agg(scenario, c, best, "proxy_cpu_us_per_op") if best else None
        cap = ratio(hc, kc)  # >1: kcp needs less CPU per operation
        ku = r.agg(scenario, c, KCP, "proxy_cpu_util")
        hu = r.agg(scenario, c, best, "proxy_cpu_util") if best else None
        lg = r.agg(scenario, c, KCP, lambda d: (d.get("loadgen_cpu_util") or 0)
                   + ((d.get("aux") or {}).get("nginx") or {}).get("cpu_util", 0))
        fk = failed_total(r, scenario, c, KCP)
        fh = failed_total(r, scenario, c, best) if best else 0
        row += [fmt(kc, 1), fmt(hc, 1), fmt_ratio(cap), f"{fmt_pct(ku)} / {fmt_pct(hu)}", fmt_pct(lg), f"{fk} / {fh}"]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out += notes
    return out


def fmt_pct(a: Agg | None) -> str:
    return "–" if a is None else f"{a.med * 100:.0f}%"


def kv_table(r: Results, scenario: str, metrics: list[tuple[str, str, object, int, str]], proxies: list[str],
             ratio_col: bool = True) -> list[str]:
    """Rows are metrics: (label, case, key, digits, unit)."""
    head = ["metric"] + [NAMES.get(p, p) for p in proxies] + (["ratio kcp / HAProxy"] if ratio_col else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, case, key, digits, unit in metrics:
        aggs = [r.agg(scenario, case, p, key) for p in proxies]
        row = [label] + [fmt(a, digits, unit) for a in aggs]
        if ratio_col:
            row.append(fmt_ratio(ratio(aggs[0], aggs[1])) if len(aggs) > 1 else "–")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out
