#!/usr/bin/env python3
"""The siam example's training step, written in PyTorch, for a side-by-side timing.

Same network (784-1024-ReLU-1024-ReLU-2, He init: normal with std sqrt(2 / fan_in),
zero biases), one stacked batch of 360 x 784 float32 (two halves of 180 pair members),
the same contrastive loss (sum reduction, margin 0.3) and Adam(1e-4, (0.9, 0.99), 1e-8).
Differences from siam's BM_TrainStep: the batch is fixed here, while siam samples new
pairs and gathers 360 rows every step (a copy of about 1 MB).

    python3 bench/compare_pytorch.py                 # JSON: ms per step, BLAS, allocator
    python3 bench/compare_pytorch.py --check         # losses of the first steps
    python3 bench/compare_pytorch.py --pairs 512 --hidden 2048   # another point of the sweep

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (see bench/README.md);
bench/compare.sh does, and alternates it with siam.
"""
import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time

import torch
from torch import nn

LAYERS = (784, 1024, 1024, 2)
PAIRS = 180
MARGIN = 0.3


def set_shape(pairs, hidden):
    """The batch (pairs per step) and the width of both hidden layers."""
    global LAYERS, PAIRS
    PAIRS = pairs
    LAYERS = (784, hidden, hidden, 2)


def make_net():
    mods = []
    for i, (n_in, n_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        lin = nn.Linear(n_in, n_out)
        nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i + 2 < len(LAYERS):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def contrastive_loss(f1, f2, y, margin=MARGIN):
    d = torch.sqrt(torch.sum((f1 - f2) ** 2, dim=1) + 1e-6)
    return 0.5 * torch.sum(y * d**2 + (1 - y) * torch.clamp(margin - d, min=0) ** 2)


def make_batch(gen):
    x = torch.rand(2 * PAIRS, LAYERS[0], generator=gen)
    y = torch.cat([torch.ones(PAIRS // 2), torch.zeros(PAIRS - PAIRS // 2)])
    y = y[torch.randperm(PAIRS, generator=gen)]
    return x, y


def blas_report():
    """Which BLAS this process really uses: the build's claim and the mapped libraries."""
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    loaded = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and re.search(
                r"(openblas|blis|mkl|libblas|libgomp|libiomp)", os.path.basename(parts[5])
            ):
                loaded.add(parts[5])
    report = {"torch_build_blas": m.group(1) if m else "unknown", "loaded": sorted(loaded)}
    for path in sorted(loaded):
        if "openblas" in os.path.basename(path):
            try:  # already mapped: dlopen returns the same library
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_get_config.restype = ctypes.c_char_p
                modes = {0: "sequential", 1: "pthreads", 2: "openmp"}
                report["openblas"] = {
                    "library": os.path.realpath(path),
                    "corename": lib.openblas_get_corename().decode(),
                    "config": lib.openblas_get_config().decode(),
                    "threading": modes.get(lib.openblas_get_parallel(), "?"),
                }
            except (OSError, AttributeError):
                pass
            break
    if "MKL" in cfg and torch.backends.mkl.is_available():
        report["mkl"] = True
    return report


def allocator_report():
    """The malloc this process really uses (a preloaded tcmalloc/jemalloc shows in its
    memory maps) and glibc's tuning variables."""
    with open("/proc/self/maps") as maps:
        libs = {os.path.basename(line.split()[5]) for line in maps if len(line.split()) >= 6}
    name = "glibc malloc"
    for lib in sorted(libs):
        if "tcmalloc" in lib:
            name = "tcmalloc (" + lib + ")"
        elif "jemalloc" in lib:
            name = "jemalloc (" + lib + ")"
    tuning = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") and k.endswith("_")}
    if name == "glibc malloc" and tuning:
        name += " tuned: " + " ".join(f"{k}={v}" for k, v in sorted(tuning.items()))
    return name


def train_step(net, opt, x, y):
    opt.zero_grad(set_to_none=True)
    f = net(x)
    loss = contrastive_loss(f[:PAIRS], f[PAIRS:], y)
    loss.backward()
    opt.step()
    return loss.item()  # siam's step() also hands the loss back


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=PAIRS, help="pairs per step (rows: twice that)")
    ap.add_argument("--hidden", type=int, default=LAYERS[1], help="width of both hidden layers")
    ap.add_argument("--foreach", action="store_true",
                    help="Adam's multi-tensor implementation (CPU default: per-tensor loop)")
    ap.add_argument("--check", action="store_true", help="print the losses of the first steps")
    ap.add_argument("--check-steps", type=int, default=5)
    args = ap.parse_args()

    set_shape(args.pairs, args.hidden)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = make_net()
    x, y = make_batch(gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8,
                           foreach=True if args.foreach else None)

    if args.check:
        losses = [train_step(net, opt, x, y) for _ in range(args.check_steps)]
        print(json.dumps({"framework": "pytorch", "seed": args.seed, "losses": losses}))
        return 0

    for _ in range(args.warmup):
        train_step(net, opt, x, y)
    times = []
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        train_step(net, opt, x, y)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    print(json.dumps({
        "framework": "pytorch",
        "torch": torch.__version__,
        "ms_per_step": 1e3 * total / args.steps,
        "ms_median": 1e3 * statistics.median(times),
        "ms_min": 1e3 * min(times),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "pairs": PAIRS,
        "hidden": LAYERS[1],
        "allocator": allocator_report(),
        "adam_foreach": args.foreach,
        "blas": blas_report(),
        "env": {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "LD_LIBRARY_PATH",
                 "LD_PRELOAD")},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
