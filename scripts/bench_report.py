"""The bench's report: one line per phase, the summary numbers of a run, and
their medians over runs (scripts/bench imports it; kept apart so that the
measuring and the reporting can each be read on their own)."""

import os
import statistics

VIRTUAL, PHYSICAL = 40, 4    # proxy "40/4"
TLS_PATHS = ("directTLS", "1:1TLS")
PARTITIONS_A = 4             # the 1:1 topic of scenario A and the latency test
VALUE_BYTES = 100
NCPU = os.cpu_count() or 1

def limit(u):
    if u["py"] >= 0.85:
        return "python"
    if u["machine"] >= 0.85 * NCPU:
        return "cpu"
    return "wait"


SCENARIO = {"A": "A 1:1 4p", "lat": "latency", "B-none": "B 40/4 none", "B-lz4": "B 40/4 lz4",
            "TLS": "TLS 1:1 4p"}
HEADER = (f"{'scenario':<12} {'phase':<8} {'path':<9} {'records':>8} {'secs':>6} "
          f"{'rec/s':>9} {'MB/s':>7} {'join':>5} {'broker':>6} {'proxy':>6} {'client':>6} "
          f"{'py':>5} {'others':>6} {'limit':>6} {'brk ms/MB':>9} {'pxy ms/MB':>9}  notes")


def fmt_pct(x):
    return f"{x * 100:5.0f}%" if x == x else "    -"


def show_phase(key, r):
    scen, op, path = key
    use = r.get("use")
    name = SCENARIO[scen]
    if use is None:
        print(f"{name:<12} {op:<8} {path:<9} FAILED: {'; '.join(r['problems'])}", flush=True)
        return
    if scen == "lat":
        line = (f"{name:<12} {'lat':<8} {path:<9} {r['n']:>8} {use['secs']:6.2f} "
                f"{r['achieved']:9.0f} {'':>7} {'':>5} {fmt_pct(use['broker'])} "
                f"{fmt_pct(use['proxy'])} {fmt_pct(use['client'])} {fmt_pct(use['py'])} "
                f"{fmt_pct(use['others'])} {limit(use):>6} {use['broker_ms_mb']:9.1f} "
                f"{use['proxy_ms_mb']:9.1f}  "
                f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms")
    else:
        join = f"{r['join']:5.2f}" if r.get("join") is not None else ""
        line = (f"{name:<12} {op:<8} {path:<9} {r['n']:>8} {use['secs']:6.2f} "
                f"{r['n'] / use['secs']:9.0f} {r['n'] * VALUE_BYTES / 1e6 / use['secs']:7.1f} "
                f"{join:>5} {fmt_pct(use['broker'])} {fmt_pct(use['proxy'])} "
                f"{fmt_pct(use['client'])} {fmt_pct(use['py'])} {fmt_pct(use['others'])} "
                f"{limit(use):>6} "
                f"{use['broker_ms_mb']:9.1f} {use['proxy_ms_mb']:9.1f}")
    if r["problems"]:
        line += "  RECORDS CHECK FAILED: " + "; ".join(r["problems"])
    print(line, flush=True)


def rate(r):
    if r is None or r.get("use") is None or r["problems"]:
        return float("nan")
    return r["n"] / r["use"]["secs"]


def summary(out):
    """{metric name: value}: what the summary lines and the medians show."""
    s = {}
    for scen, direct, proxy in (("A", "direct", "1:1"), ("B-none", "direct", "40/4"),
                                ("B-lz4", "direct", "40/4"), ("TLS", *TLS_PATHS)):
        for op in ("produce", "consume"):
            d, p = out.get((scen, op, direct)), out.get((scen, op, proxy))
            if d is None and p is None:
                continue
            s[f"{scen} {op} direct rec/s"] = rate(d)
            s[f"{scen} {op} proxy rec/s"] = rate(p)
            s[f"{scen} {op} ratio"] = rate(p) / rate(d)
            s[f"{scen} {op} proxy ms/MB"] = (p["use"]["proxy_ms_mb"] if p and p.get("use")
                                             else float("nan"))
            s[f"{scen} {op} broker ms/MB direct"] = (d["use"]["broker_ms_mb"]
                                                     if d and d.get("use") else float("nan"))
            s[f"{scen} {op} broker ms/MB proxy"] = (p["use"]["broker_ms_mb"]
                                                    if p and p.get("use") else float("nan"))
            d40 = out.get((scen, op, "direct40"))
            if d40 is not None:
                s[f"{scen} {op} direct40 rec/s"] = rate(d40)
                s[f"{scen} {op} ratio vs direct40"] = rate(p) / rate(d40)
            p40 = out.get((scen, op, "1:1x40"))
            if d40 is not None and p40 is not None:
                s[f"{scen} {op} 1:1x40 rec/s"] = rate(p40)
                s[f"{scen} {op} 1:1x40 ratio vs direct40"] = rate(p40) / rate(d40)
                s[f"{scen} {op} 1:1x40 proxy ms/MB"] = (p40["use"]["proxy_ms_mb"] if p40.get("use")
                                                       else float("nan"))
    for path in ("direct", "1:1", "40/4"):
        r = out.get(("lat", "produce", path))
        if r is not None and r.get("use") is not None:
            s[f"lat {path} p50 ms"] = r["p50"]
            s[f"lat {path} p99 ms"] = r["p99"]
    for path in ("1:1", "40/4"):
        if f"lat {path} p99 ms" in s and "lat direct p99 ms" in s:
            s[f"lat {path} added p99 ms"] = s[f"lat {path} p99 ms"] - s["lat direct p99 ms"]
            s[f"lat {path} added p50 ms"] = s[f"lat {path} p50 ms"] - s["lat direct p50 ms"]
    return s


def summary_lines(s, args, label):
    def g(k):
        return s.get(k, float("nan"))

    lines = []
    if "A produce ratio" in s or "A consume ratio" in s:
        lines.append(
            f"{label}A  (1:1 topic, {PARTITIONS_A} partitions, proxy without mapping): "
            f"proxy/direct produce {g('A produce ratio'):.2f} "
            f"({g('A produce proxy rec/s'):,.0f} vs {g('A produce direct rec/s'):,.0f} rec/s), "
            f"consume {g('A consume ratio'):.2f} "
            f"({g('A consume proxy rec/s'):,.0f} vs {g('A consume direct rec/s'):,.0f} rec/s); "
            f"CPU ms/MB produce/consume: proxy {g('A produce proxy ms/MB'):.1f}/"
            f"{g('A consume proxy ms/MB'):.1f}, broker direct "
            f"{g('A produce broker ms/MB direct'):.1f}/"
            f"{g('A consume broker ms/MB direct'):.1f}, broker via proxy "
            f"{g('A produce broker ms/MB proxy'):.1f}/{g('A consume broker ms/MB proxy'):.1f}")
    if "lat direct p99 ms" in s:
        lines.append(
            f"{label}lat ({args.rate:g} msg/s x {args.latency_seconds:g} s, acks=all, "
            f"linger.ms=0): p50/p99 direct {g('lat direct p50 ms'):.2f}/"
            f"{g('lat direct p99 ms'):.2f} ms, proxy 1:1 {g('lat 1:1 p50 ms'):.2f}/"
            f"{g('lat 1:1 p99 ms'):.2f} ms, proxy 40/4 {g('lat 40/4 p50 ms'):.2f}/"
            f"{g('lat 40/4 p99 ms'):.2f} ms; added p99: 1:1 {g('lat 1:1 added p99 ms'):+.2f} ms, "
            f"40/4 {g('lat 40/4 added p99 ms'):+.2f} ms")
    parts = []
    for codec in ("none", "lz4"):
        k = f"B-{codec}"
        if f"{k} produce ratio" in s:
            parts.append(
                f"{codec}: produce {g(k + ' produce ratio'):.2f} "
                f"({g(k + ' produce proxy rec/s'):,.0f} vs {g(k + ' produce direct rec/s'):,.0f}), "
                f"consume {g(k + ' consume ratio'):.2f} "
                f"({g(k + ' consume proxy rec/s'):,.0f} vs {g(k + ' consume direct rec/s'):,.0f}), "
                f"CPU ms/MB produce/consume: proxy {g(k + ' produce proxy ms/MB'):.1f}/"
                f"{g(k + ' consume proxy ms/MB'):.1f}, broker direct "
                f"{g(k + ' produce broker ms/MB direct'):.1f}/"
                f"{g(k + ' consume broker ms/MB direct'):.1f}"
                f", broker via proxy {g(k + ' produce broker ms/MB proxy'):.1f}/"
                f"{g(k + ' consume broker ms/MB proxy'):.1f}; "
                f"vs direct to {VIRTUAL} partitions: produce "
                f"{g(k + ' produce ratio vs direct40'):.2f}, consume "
                f"{g(k + ' consume ratio vs direct40'):.2f}; proxy 1:1 in front of "
                f"{VIRTUAL} partitions vs direct to them: produce "
                f"{g(k + ' produce 1:1x40 ratio vs direct40'):.2f} "
                f"(proxy {g(k + ' produce 1:1x40 proxy ms/MB'):.1f} ms/MB), consume "
                f"{g(k + ' consume 1:1x40 ratio vs direct40'):.2f} "
                f"(proxy {g(k + ' consume 1:1x40 proxy ms/MB'):.1f} ms/MB)")
    if parts:
        lines.append(f"{label}B  ({VIRTUAL} virtual over {PHYSICAL} physical vs direct "
                     f"{PHYSICAL}-partition topic, keyed), proxy/direct rec/s: " + "; ".join(parts))
    if "TLS produce ratio" in s or "TLS consume ratio" in s:
        lines.append(
            f"{label}TLS (A over SSL: client->proxy and proxy->stunnel4, vs client->stunnel4): "
            f"proxy/direct produce {g('TLS produce ratio'):.2f} "
            f"({g('TLS produce proxy rec/s'):,.0f} vs {g('TLS produce direct rec/s'):,.0f} rec/s), "
            f"consume {g('TLS consume ratio'):.2f} "
            f"({g('TLS consume proxy rec/s'):,.0f} vs {g('TLS consume direct rec/s'):,.0f} rec/s); "
            f"proxy CPU ms/MB produce/consume: with TLS {g('TLS produce proxy ms/MB'):.1f}/"
            f"{g('TLS consume proxy ms/MB'):.1f}, without (A) {g('A produce proxy ms/MB'):.1f}/"
            f"{g('A consume proxy ms/MB'):.1f}")
    return lines


def show_medians(runs):
    keys = []
    for s in runs:
        keys += [k for k in s if k not in keys]
    print(f"\nMedian over {len(runs)} runs (each run's value in brackets; a ratio's median is "
          "the median of the runs' ratios, not the ratio of the median rates):")
    for k in keys:
        vals = [s.get(k, float("nan")) for s in runs]
        good = [v for v in vals if v == v]
        med = statistics.median(good) if good else float("nan")
        fmt = "{:,.0f}" if "rec/s" in k else "{:.2f}"
        print(f"  {k:<34} {fmt.format(med):>12}   [" + ", ".join(fmt.format(v) for v in vals)
              + "]")
    return {k: statistics.median([s[k] for s in runs if k in s and s[k] == s[k]] or [float("nan")])
            for k in keys}
