#!/usr/bin/env python3
"""siam's training step against PyTorch's over batch size, hidden width and threads.

For each point (pairs per step, width of both hidden layers, threads) siam's
BM_StepSweep (bench_train, SIAM_BENCH_SWEEP=1) and bench/compare_pytorch.py run in
alternating rounds; the point's ratio is median(siam) / median(PyTorch). PyTorch runs in
one configuration (PYTORCH_CONFIG: the fastest one bench/compare.sh found at the
example's shape; tcmalloc by default), with the OpenMP OpenBLAS first on the library path.

    /usr/bin/python3 bench/sweep.py BUILD/bench/bench_train [--full] [--rounds 3] \\
        [--json sweep.json] [--svg docs/images/sweep.svg]

By default a cross through the example's point (pairs 16..2048 at width 1024, widths
256..4096 at 180 pairs, threads 1 and 2: 14 points, a few minutes); --full runs the
whole grid (30 points, much longer: the largest step is about 0.5 TFLOP). The SVG is
drawn by bench/plot_sweep.py from the JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = (16, 64, 180, 512, 2048)
HIDDEN = (256, 1024, 4096)


def step_flop(pairs, hidden):
    """GEMM FLOPs of one step: forward, input gradients of layers 2-3, weight gradients."""
    rows = 2 * pairs
    fwd = 2 * rows * (784 * hidden + hidden * hidden + hidden * 2)
    bwd_in = 2 * rows * (hidden * hidden + hidden * 2)
    return fwd + bwd_in + fwd


def openblas_openmp_dir():
    try:
        out = subprocess.run(["dpkg", "-L", "libopenblas0-openmp"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            if line.endswith("/libopenblas.so.0"):
                return os.path.dirname(line)
    except OSError:
        pass
    return ""


def torch_env(config):
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    omp = openblas_openmp_dir()
    if omp:
        env["LD_LIBRARY_PATH"] = omp + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    libs = {"tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}
    if config in libs:
        if not os.path.exists(libs[config]):
            sys.exit(f"sweep.py: {libs[config]} not found for PYTORCH_CONFIG={config}")
        env["LD_PRELOAD"] = libs[config]
    elif config == "glibc-tuned":
        env.update(MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="1073741824",
                   MALLOC_TOP_PAD_="268435456")
    elif config != "glibc":
        sys.exit(f"sweep.py: unknown PYTORCH_CONFIG {config}")
    return env


def siam_ms(train, p, h, t, min_time):
    env = dict(os.environ, SIAM_BENCH_SWEEP="1")
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    name = f"BM_StepSweep/pairs:{p}/hidden:{h}/threads:{t}/manual_time"
    out = subprocess.run([train, f"--benchmark_filter=^{name}$", "--benchmark_format=json",
                          f"--benchmark_min_time={min_time}"], env=env, capture_output=True,
                         text=True, check=True).stdout
    j = json.loads(out)
    b = [b for b in j["benchmarks"] if b.get("run_type", "iteration") == "iteration"][0]
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * unit, j["context"].get("siam_gemm_provider", "?")


def torch_ms(py, env, p, h, t, budget_s):
    est = step_flop(p, h) / (200e9 * t)  # a rough guess of the step's time, in s
    steps = int(min(200, max(3, budget_s / est)))
    out = subprocess.run([py, os.path.join(HERE, "compare_pytorch.py"), "--threads", str(t),
                          "--pairs", str(p), "--hidden", str(h), "--steps", str(steps),
                          "--warmup", str(max(2, steps // 10))], env=env, capture_output=True,
                         text=True, check=True).stdout
    j = json.loads(out)
    return j["ms_per_step"], j


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", help="path to bench_train")
    ap.add_argument("--full", action="store_true", help="the whole grid, not the cross")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per side per round")
    ap.add_argument("--json", default="sweep.json")
    ap.add_argument("--svg", default="")
    ap.add_argument("--python", default=os.environ.get("PYTHON", "/usr/bin/python3"))
    args = ap.parse_args()

    config = os.environ.get("PYTORCH_CONFIG", "tcmalloc")
    env = torch_env(config)
    threads = [int(x) for x in args.threads.split(",")]
    if args.full:
        grid = [(p, h) for p in PAIRS for h in HIDDEN]
    else:
        grid = [(p, 1024) for p in PAIRS] + [(180, h) for h in HIDDEN if h != 1024]
    points = []
    start = time.time()
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for t in threads:
        for p, h in grid:
            s_runs, t_runs = [], []
            for _ in range(args.rounds):
                ms, provider = siam_ms(args.train, p, h, t, args.budget)
                s_runs.append(ms)
                ms, j = torch_ms(args.python, env, p, h, t, args.budget)
                t_runs.append(ms)
            s_med, t_med = statistics.median(s_runs), statistics.median(t_runs)
            points.append({"pairs": p, "hidden": h, "threads": t, "siam_ms": s_runs,
                           "torch_ms": t_runs, "ratio": s_med / t_med,
                           "gflop": step_flop(p, h) / 1e9})
            print(f"pairs {p:5d} hidden {h:5d} threads {t}: siam {s_med:9.2f} ms  "
                  f"pytorch {t_med:9.2f} ms  ratio {s_med / t_med:.2f}  "
                  f"(siam {min(s_runs):.2f}-{max(s_runs):.2f}, "
                  f"pytorch {min(t_runs):.2f}-{max(t_runs):.2f})", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}; "
          f"{time.time() - start:.0f} s")
    result = {"pytorch_config": config, "siam_gemm_provider": provider, "rounds": args.rounds,
              "torch": j["torch"], "pytorch_allocator": j["allocator"], "points": points}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    if args.svg:
        subprocess.run([sys.executable, os.path.join(HERE, "plot_sweep.py"), args.json, args.svg],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
