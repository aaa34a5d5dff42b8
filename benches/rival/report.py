#!/usr/bin/env python3
"""Charts and tables for BENCHMARKS.md, from the raw results of scripts/bench.sh.

    python3 benches/rival/report.py

Reads benches/results/{compare.json, machine.json, build.json, autogen/table.md}, writes
benches/results/*.svg and replaces the part of BENCHMARKS.md between the `generated` markers.
Reads benches/results/{pool.json, pool-rival.json} (issue 18's pool bench: the dockexec ways
from benches/executor.rs, the async rival's from benches/rival/benches/pool.rs), writes
benches/results/pool.svg and replaces the part of BENCHMARKS.md between the `generated:pool`
markers. Plain Python, no dependencies: the SVG is written by hand.
"""
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RES = os.path.join(ROOT, "benches", "results")
WHO = ["dockexec-exec", "dockexec-agent", "rival", "floor-raw", "floor-cli"]
LABEL = {
    "dockexec-exec": "dockexec (exec)",
    "dockexec-agent": "dockexec (agent)",
    "rival": "rival (bollard+tokio)",
    "floor-raw": "floor: raw exec",
    "floor-cli": "floor: docker CLI",
}
COLOR = {
    "dockexec-exec": "#1f77b4",
    "dockexec-agent": "#2ca02c",
    "rival": "#d62728",
    "floor-raw": "#7f7f7f",
    "floor-cli": "#bcbd22",
}
SCENARIOS = [
    ("start", "start"),
    ("stop-idle", "stop, idle"),
    ("stop-16", "stop, 16 running"),
    ("hello-python", 'python print("hello")'),
    ("true-sh", "sh true"),
    ("concurrent-16", "16 concurrent python"),
    ("concurrent-64", "64 concurrent python"),
    ("concurrent-256", "256 concurrent python"),
    ("concurrent-4", "4 concurrent python (smoke)"),
    ("cancel", "cancel -> wait returns"),
    ("bigout-10MB", "10 MB of stdout"),
]
BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"
# Issue 18's pool bench: its ways in table order, its own markers (it is not in the section above).
POOL_WAYS = ["pool-reset", "pool-restart", "pool-fresh", "executor-per-task", "rival-fresh"]
POOL_LABEL = {
    "pool-reset": "pool, Policy::Reset",
    "pool-restart": "pool, Policy::Restart (default)",
    "pool-fresh": "pool, Policy::Fresh",
    "executor-per-task": "fresh Executor per task",
    "rival-fresh": "rival (bollard+tokio): container per task",
}
POOL_MD = {
    "pool-reset": "pool, `Policy::Reset`",
    "pool-restart": "pool, `Policy::Restart` (the default)",
    "pool-fresh": "pool, `Policy::Fresh`",
    "executor-per-task": "fresh `Executor` per task",
    "rival-fresh": "rival (bollard+tokio), fresh container per task",
}
POOL_COLOR = {
    "pool-reset": "#2ca02c",
    "pool-restart": "#9467bd",
    "pool-fresh": "#17becf",
    "executor-per-task": "#1f77b4",
    "rival-fresh": "#d62728",
}
POOL_BEGIN, POOL_END = "<!-- generated:pool:begin -->", "<!-- generated:pool:end -->"
POOL_CMD = "DOCKEXEC_BENCH_POOL_TASKS=1000 DOCKEXEC_BENCH_POOL_THREADS=4 scripts/bench.sh pool"


def load(name, default=None):
    p = os.path.join(RES, name)
    if not os.path.exists(p):
        return default
    with open(p) as f:
        return f.read() if name.endswith(".md") else json.load(f)


def q(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def ms(x):
    return "-" if x is None or math.isnan(x) else (f"{x * 1e3:.0f}" if x >= 0.1 else f"{x * 1e3:.1f}")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def svg(w, h, body):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'font-family="sans-serif" font-size="12">\n<rect width="{w}" height="{h}" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def legend(who, x, y):
    out = []
    for i, w in enumerate(who):
        out.append(f'<rect x="{x}" y="{y + i * 16}" width="12" height="12" fill="{COLOR[w]}"/>')
        out.append(f'<text x="{x + 16}" y="{y + i * 16 + 10}">{esc(LABEL[w])}</text>')
    return out


def bars_chart(rows, title, unit_fmt, log=True, note=""):
    """rows: [(label, {who: (median, lo, hi)})] -> horizontal grouped bars on a log axis."""
    who = [w for w in WHO if any(w in r for _, r in rows)]
    left, right, top, bar, gap = 190, 40, 40, 11, 10
    width = 900
    plot_w = width - left - right
    h = top + sum(len([w for w in who if w in r]) * bar + gap for _, r in rows) + 60
    vals = [v for _, r in rows for m in r.values() for v in m if v and v > 0]
    lo_v, hi_v = min(vals), max(vals)
    lo_e, hi_e = math.floor(math.log10(lo_v)), math.ceil(math.log10(hi_v))
    if hi_e == lo_e:
        hi_e += 1

    def x(v):
        return left + plot_w * (math.log10(max(v, 10**lo_e)) - lo_e) / (hi_e - lo_e)

    body = [f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">{esc(title)}</text>']
    for e in range(lo_e, hi_e + 1):
        for m in (1, 2, 5):
            v = m * 10**e
            if v > 10**hi_e:
                break
            xx = x(v)
            body.append(
                f'<line x1="{xx:.1f}" y1="{top - 5}" x2="{xx:.1f}" y2="{h - 50}" '
                f'stroke="{"#bbb" if m == 1 else "#eee"}"/>'
            )
            if m == 1 or hi_e - lo_e <= 3:
                body.append(f'<text x="{xx:.1f}" y="{h - 36}" text-anchor="middle">{unit_fmt(v)}</text>')
    y = top
    for label, r in rows:
        ws = [w for w in who if w in r]
        body.append(f'<text x="{left - 8}" y="{y + len(ws) * bar / 2 + 4}" text-anchor="end">{esc(label)}</text>')
        for w in ws:
            med, lo, hi = r[w]
            body.append(
                f'<rect x="{left}" y="{y}" width="{max(x(med) - left, 1):.1f}" height="{bar - 2}" '
                f'fill="{COLOR[w]}"><title>{esc(LABEL[w])}: {unit_fmt(med)}</title></rect>'
            )
            if lo is not None and hi is not None:
                body.append(
                    f'<line x1="{x(lo):.1f}" y1="{y + bar / 2 - 1}" x2="{x(hi):.1f}" '
                    f'y2="{y + bar / 2 - 1}" stroke="black"/>'
                )
            y += bar
        y += gap
    if note:
        body.append(f'<text x="{left}" y="{h - 14}" fill="#555">{esc(note)}</text>')
    body += legend(who, width - 200, top)
    return svg(width, h, body)


def ratio_chart(rows, title):
    """rows: [(label, {series: ratio})]: dockexec / rival on a log axis, 1.0 marked."""
    left, right, top, bar, gap, width = 190, 40, 40, 12, 8, 900
    plot_w = width - left - right
    series = ["dockexec-exec", "dockexec-agent"]
    h = top + len(rows) * (2 * bar + gap) + 60
    lo_e, hi_e = -2, 1

    def x(v):
        v = min(max(v, 10**lo_e), 10**hi_e)
        return left + plot_w * (math.log10(v) - lo_e) / (hi_e - lo_e)

    body = [f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">{esc(title)}</text>']
    for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10):
        body.append(
            f'<line x1="{x(v):.1f}" y1="{top - 5}" x2="{x(v):.1f}" y2="{h - 50}" '
            f'stroke="{"black" if v == 1 else "#ddd"}" stroke-width="{2 if v == 1 else 1}"/>'
        )
        body.append(f'<text x="{x(v):.1f}" y="{h - 36}" text-anchor="middle">{v:g}x</text>')
    body.append(f'<text x="{x(0.05):.1f}" y="{top - 8}" text-anchor="middle" fill="#2ca02c">dockexec faster</text>')
    body.append(f'<text x="{x(3):.1f}" y="{top - 8}" text-anchor="middle" fill="#d62728">rival faster</text>')
    y = top
    for label, r in rows:
        body.append(f'<text x="{left - 8}" y="{y + bar + 4}" text-anchor="end">{esc(label)}</text>')
        for s in series:
            if s in r and r[s] is not None:
                v = r[s]
                x0, x1 = sorted((x(1), x(v)))
                body.append(
                    f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar - 2}" '
                    f'fill="{COLOR[s]}"><title>{esc(LABEL[s])}: {v:.2f}x</title></rect>'
                )
                tx = x1 + 4 if v >= 1 else x0 - 4
                anchor = "start" if v >= 1 else "end"
                body.append(f'<text x="{tx:.1f}" y="{y + bar - 3}" text-anchor="{anchor}" font-size="10">{v:.2f}</text>')
            y += bar
        y += gap
    body.append(f'<text x="{left}" y="{h - 14}" fill="#555">ratio of medians, dockexec / rival; below 1 = dockexec ahead</text>')
    body += legend(series, width - 200, h - 110)
    return svg(width, h, body)


def pool_chart(ways, title, note):
    """ways: [(key, {"tasks_per_s", "p50_s", "p99_s"})] -> three panels of horizontal bars on
    linear axes, one bar per way, its value written at its end."""
    left, top, bar, gap, width, pw, pgap = 300, 62, 18, 8, 900, 180, 20
    h = top + len(ways) * (bar + gap) + 40
    panels = [
        ("tasks/s (higher: better)", "tasks_per_s", lambda v: f"{v:.1f}"),
        ("p50 per task, ms (lower: better)", "p50_s", lambda v: f"{v * 1e3:.0f}"),
        ("p99 per task, ms (lower: better)", "p99_s", lambda v: f"{v * 1e3:.0f}"),
    ]
    body = [f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">{esc(title)}</text>']
    for i, (k, w) in enumerate(ways):
        y = top + i * (bar + gap)
        body.append(f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">{esc(POOL_LABEL[k])}</text>')
    for j, (ptitle, key, fmt) in enumerate(panels):
        x0 = left + j * (pw + pgap)
        vmax = max((w[key] or 0) for _, w in ways) or 1
        span = pw - 40  # room for the value after the longest bar
        body.append(f'<text x="{x0}" y="{top - 12}" font-size="11">{esc(ptitle)}</text>')
        body.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{h - 36}" stroke="#bbb"/>')
        for i, (k, w) in enumerate(ways):
            y = top + i * (bar + gap)
            v = w[key] or 0
            bw = max(span * v / vmax, 1)
            body.append(
                f'<rect x="{x0}" y="{y}" width="{bw:.1f}" height="{bar}" fill="{POOL_COLOR[k]}">'
                f"<title>{esc(POOL_LABEL[k])}: {fmt(v)}</title></rect>"
            )
            body.append(f'<text x="{x0 + bw + 4:.1f}" y="{y + bar / 2 + 4}" font-size="11">{fmt(v)}</text>')
    body.append(f'<text x="{left}" y="{h - 14}" fill="#555">{esc(note)}</text>')
    return svg(width, h, body)


def pool_report():
    """The pool chart and table, when pool.json or pool-rival.json exist."""
    ways, sources, images, cores = {}, [], set(), set()
    for name in ("pool.json", "pool-rival.json"):
        d = load(name)
        if d:
            images.add(d.get("image", "?"))
            cores.add(d.get("cores", "?"))
            sources.append(f"`benches/results/{name}` ({d.get('mode', '?')}: `{d.get('bench', '?')}`)")
            for w in d.get("ways", []):
                ways[w["way"]] = w
    order = [(k, ways[k]) for k in POOL_WAYS if k in ways]
    if not order:
        return
    sizes = sorted({(w["tasks"], w["threads"]) for _, w in order})
    size = "; ".join(f"{t} tasks on {n} threads" for t, n in sizes)
    t0 = min(w["started_unix"] for _, w in order)
    t1 = max(w["started_unix"] + w["wall_s"] for _, w in order)
    when = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(t0))}–{time.strftime('%H:%M', time.gmtime(t1))} UTC"
    loads = [float(x) for _, w in order for x in w.get("loadavg_start", [])[:1] + w.get("loadavg_end", [])[:1]]
    load_txt = f"1-minute load average {min(loads):.1f}–{max(loads):.1f}" if loads else "load average not recorded"
    with open(os.path.join(RES, "pool.svg"), "w") as f:
        f.write(pool_chart(order, f"A pool of warm sandboxes: {size}, one python print per task",
                           f"{when}, {load_txt} on {'/'.join(map(str, sorted(cores, key=str)))} cores"))

    rival = ways.get("rival-fresh")
    md = [POOL_BEGIN, "", "<!-- written by benches/rival/report.py from benches/results/pool*.json; do not edit -->", ""]
    ncores = max((c for c in cores if isinstance(c, int)), default=0)
    shared = (": more than the cores (the bench's own containers and the daemon's work count, and"
              " so do other jobs on the machine)"
              if loads and ncores and max(loads) > ncores else "")
    md.append(f"Run: {when}, {size}, image `{'`, `'.join(sorted(images))}`, {ncores or '?'} cores, "
              f"{load_txt}{shared}. The ways ran one after another in one session. "
              f"From {' and '.join(sources)}.")
    md += ["", "| way | tasks/s | p50 per task | p99 per task | **vs the rival** (tasks/s) | load average at start → end |",
           "|---|---|---|---|---|---|"]
    for k, w in order:
        vs = f"**{w['tasks_per_s'] / rival['tasks_per_s']:.2f}×**" if rival else "-"
        la = f"{' '.join(w.get('loadavg_start', []))} → {' '.join(w.get('loadavg_end', []))}"
        md.append(f"| {POOL_MD[k]} | {w['tasks_per_s']:.1f} | {ms(w['p50_s'])} ms | {ms(w['p99_s'])} ms | {vs} | {la} |")
    md += ["", "To measure it again (the dockexec ways, then the rival's, in one session; then this table and chart):", "",
           "```sh", POOL_CMD, "```", "", "![pool](benches/results/pool.svg)", "", POOL_END]

    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else ""
    if POOL_BEGIN not in text or POOL_END not in text:
        print(f"report.py: no {POOL_BEGIN} ... {POOL_END} in {path}; the pool table is not written")
        return
    head, rest = text.split(POOL_BEGIN, 1)
    _, tail = rest.split(POOL_END, 1)
    with open(path, "w") as f:
        f.write(head + "\n".join(md) + tail)
    print(f"report.py: wrote {RES}/pool.svg and the pool table of {path}")


def main():
    pool_report()
    cmp_ = load("compare.json")
    if cmp_ is None:
        sys.exit("report.py: no benches/results/compare.json; run scripts/bench.sh first")
    machine = load("machine.json", {})
    build = load("build.json")
    autogen = load(os.path.join("autogen", "table.md"))
    samples = cmp_["samples"]
    res = cmp_["resources"]

    def stat(sc, w):
        v = samples.get(sc, {}).get(w)
        if not v:
            return None
        return statistics.median(v), min(v), max(v), q(v, 0.25), q(v, 0.75), len(v)

    scen = [(k, l) for k, l in SCENARIOS if k in samples]

    # Chart 1: absolute medians with min-max whiskers.
    rows = []
    for k, l in scen:
        r = {}
        for w in WHO:
            s = stat(k, w)
            if s:
                r[w] = (s[0], s[1], s[2])
        rows.append((l, r))
    t_fmt = lambda v: f"{v * 1e3:g} ms" if v < 1 else f"{v:g} s"
    with open(os.path.join(RES, "latency.svg"), "w") as f:
        f.write(bars_chart(rows, "Wall time per scenario (median; whisker = min..max)", t_fmt,
                           note="log scale; lower is better"))

    # Chart 2: ratios against the rival.
    ratios = []
    for k, l in scen:
        rv = stat(k, "rival")
        r = {}
        for w in ("dockexec-exec", "dockexec-agent"):
            s = stat(k, w)
            if s and rv:
                r[w] = s[0] / rv[0]
        ratios.append((l, r))
    with open(os.path.join(RES, "ratios.svg"), "w") as f:
        f.write(ratio_chart(ratios, "dockexec / async rival (bollard + tokio), median wall time"))

    # Chart 3: resources in flight.
    rrows = []
    sizes = sorted({int(k.split("/")[0].split("-")[1]) for k in res if k.startswith("inflight-")})
    for n in sizes:
        for metric, key, fmt in (("peak RSS", "hwm_kb", None), ("threads", "threads", None)):
            r = {}
            for w in ("dockexec-exec", "dockexec-agent", "rival"):
                v = res.get(f"inflight-{n}/{w}", {}).get(key)
                if v:
                    r[w] = (float(v), None, None)
            rrows.append((f"{n} in flight: {metric}", r))
    if rrows:
        with open(os.path.join(RES, "resources.svg"), "w") as f:
            f.write(bars_chart(rrows, "Executions in flight: peak RSS (kB) and thread count",
                               lambda v: f"{v:g}", note="log scale; lower is better; one fresh process per bar"))
    if build:
        brow = []
        for metric, key in (("seconds", "seconds"), ("crates", "crates"), ("binary MB", "binary_bytes")):
            r = {}
            for b in build:
                w = "dockexec-exec" if b["name"].startswith("dockexec") else "rival"
                v = b[key] / 1e6 if key == "binary_bytes" else b[key]
                r[w] = (float(v), None, None)
            brow.append((metric, r))
        saved = dict(LABEL)
        LABEL["dockexec-exec"], LABEL["rival"] = "dockexec CLI", "bollard+tokio CLI"
        with open(os.path.join(RES, "build.svg"), "w") as f:
            f.write(bars_chart(brow, "Clean release build of the CLI", lambda v: f"{v:g}",
                               note="log scale; lower is better"))
        LABEL.update(saved)

    # The tables.
    md = [BEGIN, "", "<!-- written by benches/rival/report.py from benches/results/; do not edit -->", ""]
    md.append(
        f"Run: {machine.get('started_utc', '?')} UTC, mode `{cmp_.get('mode')}`, image `{cmp_.get('image')}`, "
        f"{cmp_.get('elapsed_s', 0) / 60:.1f} min for the scenarios. Machine: {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores, {machine.get('mem_gib', '?')} GiB, Linux {machine.get('kernel', '?')}, "
        f"Docker {machine.get('docker', '?')}, {machine.get('rustc', '?')}. Load average at start "
        f"{' '.join(machine.get('loadavg_at_start', []))}, after the scenarios "
        f"{' '.join(machine.get('loadavg_after_scenarios', []))}."
    )
    md += ["", "### Ratios against the rival (median wall time, ms; `[p25–p75]`, n runs)", ""]
    md.append("| scenario | dockexec exec | dockexec agent | rival | **exec / rival** | **agent / rival** | floor: raw exec | floor: docker CLI |")
    md.append("|---|---|---|---|---|---|---|---|")

    def cell(s):
        return "-" if not s else f"{ms(s[0])} [{ms(s[3])}–{ms(s[4])}] n={s[5]}"

    def rcell(a, b):
        if not a or not b:
            return "-"
        r = a[0] / b[0]
        spread = f" ({a[3] / b[4]:.2f}–{a[4] / b[3]:.2f})" if b[3] and b[4] else ""
        mark = "" if r <= 1.0 else " ✗"
        return f"**{r:.2f}**{spread}{mark}"

    for k, l in scen:
        e, a, r, fr, fc = (stat(k, w) for w in WHO)
        md.append(f"| {l} | {cell(e)} | {cell(a)} | {cell(r)} | {rcell(e, r)} | {rcell(a, r)} | {cell(fr)} | {cell(fc)} |")
    md += ["", "Ratio spread in parentheses: p25(dockexec)/p75(rival) – p75(dockexec)/p25(rival). ✗ = dockexec not ahead at the median.", ""]

    md += ["### 10 MB of stdout: peak RSS (VmHWM, fresh process, kB)", ""]
    md.append("| | before (after one warm-up block) | after the first 10 MB block | growth |")
    md.append("|---|---|---|---|")
    for w in ("dockexec-exec", "dockexec-agent", "rival", "floor-raw"):
        v = res.get(f"bigout-10MB/{w}")
        if v and "error" in v:
            md.append(f"| {LABEL[w]} | {v['error']} | | |")
        elif v:
            md.append(f"| {LABEL[w]} | {v['hwm_before_kb']} | {v['hwm_after_one_kb']} | {v['hwm_after_one_kb'] - v['hwm_before_kb']} |")
    md += ["", "### Executions in flight (fresh process each; `echo r; exec sleep 1000` blocks, measured once all said `r`)", ""]
    md.append("| in flight | contender | threads | RSS kB | peak RSS kB | time until all running (s) |")
    md.append("|---|---|---|---|---|---|")
    for n in sizes:
        for w in ("dockexec-exec", "dockexec-agent", "rival"):
            v = res.get(f"inflight-{n}/{w}")
            if v and "error" in v:
                md.append(f"| {n} | {LABEL[w]} | {v['error']} | | | |")
            elif v:
                md.append(f"| {n} | {LABEL[w]} | {v['threads']} | {v['rss_kb']} | {v['hwm_kb']} | {v['all_running_s']:.1f} |")
    if build:
        md += ["", "### Clean release build of the CLI (fresh target dir each)", ""]
        md.append("| CLI | build seconds | crates compiled | binary bytes | command |")
        md.append("|---|---|---|---|---|")
        for b in build:
            manifest = b.get("manifest") or ("benches/rival/cli/Cargo.toml" if b["name"].startswith("bollard") else "Cargo.toml")
            args = f" {b['args']}" if b["args"] else ""
            md.append(f"| {b['name']} | {b['seconds']} | {b['crates']} | {b['binary_bytes']:,} | `cargo build --release --manifest-path {manifest}{args}` |")
    md += ["", "### AutoGen 0.7.5 side by side (benches/autogen/run.sh, same session)", ""]
    md.append((autogen or "not run (DOCKEXEC_BENCH_AUTOGEN=0 or no results)").strip())
    md += ["", "![ratios](benches/results/ratios.svg)", "", "![wall times](benches/results/latency.svg)", ""]
    if rrows:
        md += ["![resources](benches/results/resources.svg)", ""]
    if build:
        md += ["![build](benches/results/build.svg)", ""]
    md.append(END)

    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + "\n".join(md) + tail)
    print(f"report.py: wrote {RES}/*.svg and the generated part of {path}")


if __name__ == "__main__":
    main()
