#!/usr/bin/env python3
"""Google Benchmark JSON (--benchmark_out=FILE) -> markdown tables.

    python3 bench/to_table.py expr.json gemm.json gemm_openblas.json ...
    python3 bench/to_table.py gemm_openblas.json gemm_openblas_hsw.json=openblas-Haswell

FILE=LABEL names the GEMM backend column of that file's results (to put two runs of
the same binary, e.g. with different BLAS kernels, side by side).

For every file: its context (backend, BLAS kernel, environment) and a table of every
benchmark (time, GFLOP/s from the "flops" rate counter, items/s, bytes/s, and "cpu
util" = cpu_time / (real_time x threads), which falls well below 1 when the machine was
busy with something else). Then, across files:
  * GEMM: GFLOP/s per shape and thread count, one column per backend;
  * expression vs loop: every <case>/expr/... next to <case>/loop/..., with the ratio
    loop_time / expr_time (1.0 = as fast as the hand-written loop; goal >= 0.95).
With --benchmark_repetitions the median aggregate is used (else the single run).
"""
import argparse
import json
import re
import sys

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(b, key):
    return b[key] * UNIT[b.get("time_unit", "ns")]


def fmt_time(s):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_rate(x, unit):
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def threads_of(name):
    m = re.search(r"threads:(\d+)", name)
    return int(m.group(1)) if m else 1


def clean(b):
    """The benchmark's name without the aggregate suffix and timing-mode markers."""
    name = b.get("run_name", b["name"])
    return name.replace("/real_time", "").replace("/manual_time", "")


def pick(benchmarks):
    """One entry per benchmark: the median aggregate if there is one, else the run."""
    medians = {b["run_name"]: b for b in benchmarks
               if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"}
    out = {}
    for b in benchmarks:
        key = b.get("run_name", b["name"])
        if key in medians:
            out[key] = medians[key]
        elif b.get("run_type", "iteration") == "iteration" and key not in out:
            out[key] = b
    return list(out.values())


def load(path):
    with open(path) as f:
        data = json.load(f)
    return data.get("context", {}), pick(data.get("benchmarks", []))


def context_lines(path, ctx):
    keys = ["host_name", "num_cpus", "mhz_per_cpu", "load_avg", "library_build_type"]
    keys += sorted(k for k in ctx if k not in keys and k not in ("caches", "date", "executable",
                                                                  "cpu_scaling_enabled"))
    parts = []
    for k in keys:
        if k in ctx:
            v = ctx[k]
            if isinstance(v, list):
                v = ", ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in v)
            parts.append(f"{k}: {v}")
    return f"**{path}** ({ctx.get('date', '')}): " + "; ".join(parts)


def all_table(rows):
    rows = sorted(rows, key=lambda b: (b.get("family_index", 0),
                                       b.get("per_family_instance_index", 0)))
    out = ["| benchmark | time | GFLOP/s | items/s | bytes/s | cpu util |",
           "|---|---:|---:|---:|---:|---:|"]
    for b in rows:
        real = seconds(b, "real_time")
        cpu = seconds(b, "cpu_time")
        util = cpu / (real * threads_of(b["name"])) if real > 0 else 0
        flops = f"{b['flops'] / 1e9:.1f}" if "flops" in b else ""
        items = fmt_rate(b["items_per_second"], "/s") if "items_per_second" in b else ""
        byts = fmt_rate(b["bytes_per_second"], "B/s") if "bytes_per_second" in b else ""
        out.append(f"| {clean(b)} | {fmt_time(real)} | {flops} | {items} | {byts} | "
                   f"{util:.2f} |")
    return out


def gemm_table(rows, labels):
    # gemm_<backend>/<case>/m:../n:../k:../threads:N
    cells, backends, order, pos = {}, [], [], {}
    for b in rows:
        m = re.match(r"gemm_(\w+)/([^/]+)/m:(\d+)/n:(\d+)/k:(\d+)/threads:(\d+)", clean(b))
        if not m or "flops" not in b:
            continue
        backend, case, mm, nn, kk, t = m.groups()
        backend = labels.get(id(b), backend)
        key = (case, f"{mm}x{nn}x{kk}", int(t))
        if key not in cells:
            cells[key] = {}
            order.append(key)
        pos[key] = min(pos.get(key, 1 << 30), b.get("family_index", 0))
        if backend not in backends:
            backends.append(backend)
        cells[key][backend] = b["flops"] / 1e9
    if not order:
        return []
    order.sort(key=lambda k: (k[2], pos[k]))  # registration order within a thread count
    out = ["| GEMM | m x n x k | threads | " + " | ".join(backends) + " |",
           "|---|---|---:|" + "---:|" * len(backends)]
    for key in order:
        vals = [f"{cells[key][be]:.1f}" if be in cells[key] else "" for be in backends]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(vals) + " |")
    return out


def pair_table(rows, goal):
    by_name = {clean(b): b for b in rows}
    out = ["| case | threads | loop | expression | loop/expr | >= %.2f | loop/expr, cpu time |" % goal,
           "|---|---:|---:|---:|---:|:---:|---:|"]
    pairs = []  # (case, kind, rest, benchmark); kind "tape": the whole op on a tape
    for name, b in by_name.items():
        m = re.match(r"(.+)/(expr|tape)/(.+)$", name)
        if m and f"{m.group(1)}/loop/{m.group(3)}" in by_name:
            pairs.append((m.group(1), m.group(2), m.group(3), b))
    first = {}  # a case's position: its first family_index (registration order)
    for case, _, _, b in pairs:
        first[case] = min(first.get(case, 1 << 30), b.get("family_index", 0))
    pairs.sort(key=lambda p: (first[p[0]], p[0], p[1], threads_of(p[2])))
    for case, kind, rest, b in pairs:
        name = f"{case}/{kind}/{rest}"
        loop = by_name[f"{case}/loop/{rest}"]
        label = case + (" (whole tape op)" if kind == "tape" else "")
        te, tl = seconds(b, "real_time"), seconds(loop, "real_time")
        ratio = tl / te
        cpu_ratio = seconds(loop, "cpu_time") / seconds(b, "cpu_time")
        out.append(f"| {label} | {threads_of(name)} | {fmt_time(tl)} | {fmt_time(te)} | "
                   f"{ratio:.2f} | {'yes' if ratio >= goal else '**no**'} | {cpu_ratio:.2f} |")
    return out if pairs else []


def main():
    ap = argparse.ArgumentParser(description="Google Benchmark JSON -> markdown tables")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--goal", type=float, default=0.95, help="loop/expr ratio to meet")
    ap.add_argument("--no-detail", action="store_true", help="only the summary tables")
    args = ap.parse_args()

    everything, labels = [], {}
    for arg in args.files:
        path, _, label = arg.partition("=")
        ctx, rows = load(path)
        everything += rows
        if label:
            labels.update((id(b), label) for b in rows)
        print(context_lines(arg, ctx) + "\n")
        if not args.no_detail:
            print("\n".join(all_table(rows)) + "\n")
    gemm = gemm_table(everything, labels)
    if gemm:
        print("GEMM throughput, GFLOP/s (higher is better):\n")
        print("\n".join(gemm) + "\n")
    pairs = pair_table(everything, args.goal)
    if pairs:
        print("Expression vs hand-written loop (loop/expr > 1: the expression is faster):\n")
        print("\n".join(pairs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
